"""launch.py end to end: synthetic and real data, eval mode, exact resume after a kill."""
import json
import os
import signal

import numpy as np
import pytest

from conftest import run_launch, tiny_overrides


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



def _checkpoints(workdir):
  d = workdir / 'checkpoints'
  return sorted(int(x.name) for x in d.iterdir() if x.name.isdigit()) if d.is_dir() else []


@pytest.mark.slow
def test_killed_and_preempted_runs_resume_exactly(tmp_path):
  """SIGKILL (resume from the last periodic checkpoint) and SIGTERM (save now, exit 143, one
  line) both end in exactly the uninterrupted run's results, with no duplicate log lines.
  The runs signal themselves at an exact step (DLVHD_INJECT_FAULT), not on a timer."""
  data = tmp_path / 'data'
  args = ['--config=configs/demo.py', '--config.compare_methods=()', f'--config.data.root={data}',
          *tiny_overrides(**{'train.num_steps': 40, 'train.checkpoint_every_steps': 10,
                             'train.steps_per_dispatch': 1})]
  full = tmp_path / 'full'
  proc = run_launch([*args, f'--workdir={full}'])
  assert proc.returncode == 0, proc.stderr[-3000:]

  killed = tmp_path / 'killed'
  proc = run_launch([*args, f'--workdir={killed}'], env={'DLVHD_INJECT_FAULT': 'SIGKILL@25'})
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert _checkpoints(killed) and _checkpoints(killed)[-1] <= 20, 'not interrupted before its end'

  term = tmp_path / 'term'
  proc = run_launch([*args, '--config.train.checkpoint_every_steps=1000', f'--workdir={term}'],
                    env={'DLVHD_INJECT_FAULT': 'SIGTERM@15'})
  assert proc.returncode == 143, proc.stderr[-3000:]
  (line,) = [l for l in proc.stderr.splitlines() if l.strip()]
  assert line == 'preempted at step 15; rerun the same command to resume'
  assert _checkpoints(term) == [15], 'SIGTERM must save a checkpoint now'
  assert not (term / 'results.json').exists()

  a = json.loads((full / 'results.json').read_text())
  sa = dict(np.load(full / 'test_scores.npz'))
  for wd, extra in ((killed, []), (term, ['--config.train.checkpoint_every_steps=1000'])):
    proc = run_launch([*args, *extra, f'--workdir={wd}'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = json.loads((wd / 'results.json').read_text())
    assert b['steps'] == a['steps'] == 40
    assert b['per_video_ap'] == a['per_video_ap']
    sb = dict(np.load(wd / 'test_scores.npz'))
    for vid in sa:
      np.testing.assert_array_equal(sb[vid], sa[vid])
    # Lines past the restored step were dropped before the resumed run logged them again.
    logged = [json.loads(x)['step'] for x in (wd / 'metrics.jsonl').read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == 40
