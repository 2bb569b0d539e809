"""launch.py end to end: synthetic and real data, eval mode, exact resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, run_launch, tiny_overrides


def test_train_then_eval_on_synthetic_data(tmp_path):
  wd = tmp_path / 'run'
  proc = run_launch(['--config=configs/demo.py', f'--workdir={wd}', '--config.compare_methods=()',
                     *tiny_overrides()])
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads((wd / 'results.json').read_text())
  for key in ('method', 'source_category', 'target_category', 'map', 'map_umt',
              'num_test_videos', 'per_video_ap'):
    assert key in res
  assert res['method'] == 'dlvhd' and res['steps'] == 20
  assert 0.0 < res['map'] <= 1.0 and 0.0 <= res['map_umt'] <= 1.0
  assert len(res['per_video_ap']) == res['num_test_videos'] > 0
  lines = [json.loads(x) for x in (wd / 'metrics.jsonl').read_text().splitlines()]
  assert [x['step'] for x in lines] == [10, 20]
  assert {'loss', 'loss_coarse', 'loss_fine', 'loss_distill', 'lr', 'steps_per_s'} <= set(lines[0])
  # The synthetic dataset was written into the workdir, in the UMT layout.
  assert (wd / 'data' / 'youtube_anno.json').is_file()
  # eval mode restores the checkpoint and reproduces the same scores.
  scores = dict(np.load(wd / 'test_scores.npz'))
  proc = run_launch(['--config=configs/demo.py', f'--workdir={wd}', '--mode=eval',
                     '--config.compare_methods=()', *tiny_overrides()])
  assert proc.returncode == 0, proc.stderr[-3000:]
  again = dict(np.load(wd / 'test_scores.npz'))
  for vid in scores:
    np.testing.assert_allclose(again[vid], scores[vid], rtol=1e-6)


def test_real_features_tiny_run_both_methods(tmp_path, youtube_root):
  for method, extra in (('dlvhd', []), ('sl', ['--config.data.features=rgb'])):
    wd = tmp_path / method
    proc = run_launch(['--config=configs/youtube_surfing.py', f'--workdir={wd}',
                       f'--config.data.root={youtube_root}', f'--config.method={method}',
                       '--config.data.target_category=parkour', *extra,
                       *tiny_overrides(**{'train.num_steps': 10})])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((wd / 'results.json').read_text())
    assert res['source_category'] == 'surfing' and res['target_category'] == 'parkour'
    assert res['num_test_videos'] == len(json.load(open(os.path.join(
        youtube_root, 'splits', 'umt_splits.json')))['parkour']['val'])
    assert 0.0 < res['map'] <= 1.0



def test_killed_run_resumes_exactly(tmp_path):
  args = ['--config=configs/demo.py', '--config.compare_methods=()',
          *tiny_overrides(**{'train.num_steps': 400, 'train.checkpoint_every_steps': 20,
                             'train.steps_per_dispatch': 1})]
  data = tmp_path / 'data'
  full = tmp_path / 'full'
  proc = run_launch([*args, f'--workdir={full}', f'--config.data.root={data}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Same run again, SIGKILLed as soon as its first checkpoint is on disk.
  killed = tmp_path / 'killed'
  env = dict(os.environ, PYTHONPATH=REPO)
  p = subprocess.Popen([sys.executable, os.path.join(REPO, 'launch.py'), '--noprogress', *args,
                        f'--workdir={killed}', f'--config.data.root={data}'], cwd=REPO, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = killed / 'checkpoints'
  deadline = time.time() + 300
  while time.time() < deadline and p.poll() is None:
    if ckpt_dir.is_dir() and any(d.name.isdigit() for d in ckpt_dir.iterdir()):
      break
    time.sleep(0.05)
  p.send_signal(signal.SIGKILL)
  p.wait()
  steps_done = sorted(int(d.name) for d in ckpt_dir.iterdir() if d.name.isdigit())
  assert steps_done and steps_done[-1] < 400, 'the run was not interrupted before its end'
  proc = run_launch([*args, f'--workdir={killed}', f'--config.data.root={data}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  a = json.loads((full / 'results.json').read_text())
  b = json.loads((killed / 'results.json').read_text())
  assert b['steps'] == a['steps'] == 400
  assert b['per_video_ap'] == a['per_video_ap']
  sa, sb = dict(np.load(full / 'test_scores.npz')), dict(np.load(killed / 'test_scores.npz'))
  for vid in sa:
    np.testing.assert_array_equal(sb[vid], sa[vid])
  # The resumed run logged only the steps after its checkpoint.
  logged = [json.loads(x)['step'] for x in (killed / 'metrics.jsonl').read_text().splitlines()]
  assert logged[-1] == 400
