"""A real mp4 -> C3D features -> a tiny DL-VHD run that reads them (--config.data.features=c3d)."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import SHARED_DATA, run_launch, tiny_overrides
from configs import extract_c3d
from data_pipelines import extract

VIDEOS = os.path.join(SHARED_DATA, 'videos')


def test_extracted_features_train_and_evaluate(tmp_path):
  if not os.path.isfile(os.path.join(VIDEOS, 'bikes.mp4')):
    pytest.skip(f'real videos not found at {VIDEOS} (../shared is absent)')
  videos = tmp_path / 'videos'
  videos.mkdir()
  for name in ('bikes.mp4', 'bigbuckbunny.mp4'):
    shutil.copy(os.path.join(VIDEOS, name), videos / name)
  cfg = extract_c3d.get_config()
  cfg.video_dir = str(videos)
  cfg.output_dir = str(tmp_path / 'extracted')
  cfg.segmenter = 'segment_seconds'
  cfg.segment_seconds = 1.5
  cfg.allow_random_weights = True
  cfg.batch_size = 4
  assert extract.run_extraction(cfg, str(tmp_path / 'wd'), progress=False) == 0
  anno = json.loads((tmp_path / 'extracted' / 'youtube_anno.json').read_text())
  assert set(anno) == {'bikes', 'bigbuckbunny'}

  # A two-category dataset from those features: category 'street' = bikes, 'cartoon' = bunny,
  # several videos each (the same features with a little noise), labels alternating.
  root = tmp_path / 'dataset'
  (root / 'video_features').mkdir(parents=True)
  (root / 'splits').mkdir()
  rng = np.random.RandomState(0)
  new_anno, splits = {}, {}
  for src, cat in (('bikes', 'street'), ('bigbuckbunny', 'cartoon')):
    feats = np.load(tmp_path / 'extracted' / 'video_features' / f'{src}_c3d.npy')
    assert feats.shape == (len(anno[src]['clip']), 4096) and np.isfinite(feats).all()
    ids = []
    for i in range(4):
      vid = f'{cat}{i}'
      noisy = feats.astype(np.float32) + 0.01 * rng.randn(*feats.shape).astype(np.float32)
      np.save(root / 'video_features' / f'{vid}_c3d.npy', noisy.astype(np.float16))
      entry = dict(anno[src], domain=cat)
      entry['match'] = [1 if (t + i) % 3 == 0 else -1 for t in range(len(entry['clip']))]
      new_anno[vid] = entry
      ids.append(vid)
    splits[cat] = {'train': ids[:3], 'val': ids[3:]}
  (root / 'youtube_anno.json').write_text(json.dumps(new_anno))
  (root / 'splits' / 'umt_splits.json').write_text(json.dumps(splits))

  wd = tmp_path / 'train'
  proc = run_launch(['--config=configs/youtube_surfing.py', f'--workdir={wd}',
                     f'--config.data.root={root}', '--config.data.features=c3d',
                     '--config.data.source_category=street', '--config.data.target_category=cartoon',
                     *tiny_overrides(**{'train.num_steps': 10, 'sampling.set_size': 4})])
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads((wd / 'results.json').read_text())
  assert res['features'] == 'c3d' and res['num_test_videos'] == 1
  assert 0.0 < res['map'] <= 1.0
