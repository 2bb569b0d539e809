"""TFDS round trip: a build of a dataset folder gives the same videos and the same training
numbers as the folder itself (array_record, tfds.data_source, no TensorFlow)."""
import json
import subprocess
import sys
import tempfile

import ml_collections
import numpy as np

from conftest import REPO, tiny_overrides
from data_pipelines import build_tfds, datasets, synthetic
from test_tvsum import write_tvsum


def test_youtube_highlights_build_trains_like_the_files(tmp_path):
  import launch  # pylint: disable=import-outside-toplevel
  root = synthetic.write_synthetic_dataset(str(tmp_path / 'yt'), videos_per_category=6,
                                           min_len=8, max_len=16, dim=16)
  out = tmp_path / 'tfds'
  proc = subprocess.run([sys.executable, '-m', 'data_pipelines.build_tfds',
                         '--dataset=youtube_highlights', f'--manual_dir={root}',
                         f'--data_dir={out}'], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'tensorflow' not in sys.modules  # nor needed here
  args = ['--config=configs/youtube_surfing.py', '--config.data.source_category=diving',
          '--config.data.target_category=climbing', *tiny_overrides(**{'train.num_steps': 10})]
  res = {}
  for how, extra in (('files', [f'--config.data.root={root}']),
                     ('tfds', ['--config.data.source=tfds', f'--config.data.tfds_data_dir={out}'])):
    wd = tmp_path / how
    assert launch.main(['launch.py', '--noprogress', f'--workdir={wd}', *args, *extra]) == 0
    res[how] = json.loads((wd / 'results.json').read_text())
  assert res['tfds']['per_video_ap'] == res['files']['per_video_ap']
  assert res['tfds']['map'] == res['files']['map']


def test_tvsum_build_loads_the_same_videos(tmp_path, monkeypatch):
  root = write_tvsum(str(tmp_path / 'tv'), 'official')
  out = str(tmp_path / 'tfds')
  scratch = tmp_path / 'tmp'
  scratch.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
  build_tfds.build('tvsum', root, out)
  assert not list(scratch.iterdir())  # the builder's scratch folders are gone
  cfg = dict(name='tvsum', root=root, source_category='VT', target_category='BK',
             features='rgb+opt', split='paper', split_seed=42, annotation='official',
             clip_seconds=-1.0, val_fraction=0.0)
  a = datasets.get('tvsum').load(ml_collections.ConfigDict(cfg))
  b = datasets.get('tvsum').load(ml_collections.ConfigDict(
      {**cfg, 'root': '', 'source': 'tfds', 'tfds_data_dir': out}))
  tfds_cfg = ml_collections.ConfigDict({**cfg, 'root': '', 'source': 'tfds', 'tfds_data_dir': out})
  assert datasets.get('tvsum').categories(tfds_cfg) == ['BK', 'VT']  # what a matrix spans
  for x, y in zip(a.source_train + a.target_test, b.source_train + b.target_test):
    assert x.vid == y.vid
    np.testing.assert_array_equal(x.features, y.features)
    np.testing.assert_array_equal(x.annotator_scores, y.annotator_scores)
