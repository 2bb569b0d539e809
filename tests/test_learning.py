"""Training learns: a short SL-module run on the embedded synthetic data ranks highlights far
above chance and far above the same run trained on inverted labels, and a run scored by a
head the loss never trained (a wiring error every layout would share) sits at chance.

Why inverted labels and not shuffled ones: on this data a highlight segment carries two
extra feature directions (data_pipelines/synthetic.py), which makes it an outlier that an
untrained network already ranks high (1 step at lr 1e-6: mAP 0.69 against a chance level of
0.25; 60 steps on labels shuffled within each video: 0.74). A test against chance alone would
pass without any learning; here 120 steps on inverted labels pull the ranking down (0.57) and
on the real labels up (0.84).
"""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import tiny_overrides
from data_pipelines import synthetic
from dlvhd_jax import methods


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
  base = tmp_path_factory.mktemp('learn')
  real = synthetic.write_synthetic_dataset(str(base / 'real'), videos_per_category=12, min_len=20,
                                           max_len=40, dim=16)
  inverted = str(base / 'inverted')
  shutil.copytree(real, inverted)
  path = os.path.join(inverted, 'youtube_anno.json')
  with open(path) as f:
    anno = json.load(f)
  for a in anno.values():
    if a['domain'] == 'diving':  # the source category's labels only; the test keeps its own
      a['match'] = [-m for m in a['match']]
  with open(path, 'w') as f:
    json.dump(anno, f)
  return real, inverted, anno


def _run(root, workdir, capfd):
  import launch  # pylint: disable=import-outside-toplevel
  capfd.readouterr()
  code = launch.main(['launch.py', '--noprogress', '--config=configs/youtube_surfing.py',
                      f'--workdir={workdir}', f'--config.data.root={root}', '--config.method=sl',
                      '--config.data.source_category=diving',
                      '--config.data.target_category=climbing',
                      *tiny_overrides(**{'train.num_steps': 120, 'train.steps_per_dispatch': 40,
                                         'train.learning_rate': 0.1,
                                         'train.log_every_steps': 120,
                                         'train.checkpoint_every_steps': 120,
                                         'model.dropout': 0.1})])
  assert code == 0, capfd.readouterr().err[-2000:]
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def _chance(results, anno):
  """Expected AP of a random ranking: each test video's share of highlight segments."""
  return float(np.mean([np.mean(np.asarray(anno[v]['match']) > 0)
                        for v in results['per_video_ap']]))


def test_sl_learns_and_a_broken_run_does_not(roots, tmp_path, capfd, monkeypatch):
  real, inverted, anno = roots
  good = _run(real, tmp_path / 'good', capfd)
  chance = _chance(good, anno)
  assert chance < 0.35
  assert good['map'] > chance + 0.45, (good['map'], chance)
  # The source category's labels inverted (highlights -1, background +1).
  against = _run(inverted, tmp_path / 'inverted', capfd)
  assert good['map'] > against['map'] + 0.15, (good['map'], against['map'])
  # Scored by a head the loss never trains.
  sl = methods.get_objective('sl')
  wired_wrong = sl.__class__(**{**sl.__dict__, 'heads': ('score', 'zz_untrained'),
                                'eval_heads': ('zz_untrained',)})
  monkeypatch.setitem(methods.OBJECTIVES, 'sl', wired_wrong)
  wrong = _run(real, tmp_path / 'wrong', capfd)
  assert wrong['map'] < chance + 0.12, (wrong['map'], chance)
