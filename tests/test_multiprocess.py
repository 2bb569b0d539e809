"""Multi-process runs on 127.0.0.1 (jax.distributed, gloo CPU collectives): P processes x D
fake devices compute what 1 process x P*D devices computes."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_launch, tiny_overrides
from data_pipelines import synthetic


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch_processes(args, num_processes: int, devices_each: int, timeout: float = 300):
  """Starts `num_processes` launch.py processes of one run; -> their CompletedProcess-like
  (returncode, stdout, stderr) in process order."""
  port = free_port()
  env = dict(os.environ, PYTHONPATH=REPO,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices_each}')
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'launch.py'), '--noprogress', *args,
       f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={num_processes}',
       f'--process_id={i}'], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(num_processes)]
  out = []
  try:
    for p in procs:
      so, se = p.communicate(timeout=timeout)
      out.append((p.returncode, so, se))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return out


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return synthetic.write_synthetic_dataset(str(tmp_path_factory.mktemp('data') / 'd'),
                                           videos_per_category=8, min_len=8, max_len=16, dim=16)


def _args(root, wd, **kw):
  return ['--config=configs/youtube_surfing.py', f'--workdir={wd}', f'--config.data.root={root}',
          '--config.data.source_category=diving', '--config.data.target_category=climbing',
          *tiny_overrides(**{'train.num_steps': 10, **kw})]


def test_two_processes_equal_one_process_with_all_devices(tmp_path, root):
  one = run_launch(_args(root, tmp_path / 'one'), devices=4)
  assert one.returncode == 0, one.stderr[-3000:]
  runs = launch_processes(_args(root, tmp_path / 'two'), num_processes=2, devices_each=2)
  for code, _, err in runs:
    assert code == 0, err[-3000:]
  a = json.loads((tmp_path / 'one' / 'results.json').read_text())
  b = json.loads((tmp_path / 'two' / 'results.json').read_text())
  assert b['devices'] == 4 and a['devices'] == 4
  np.testing.assert_allclose(b['map'], a['map'], rtol=1e-6)
  np.testing.assert_allclose(b['map_umt'], a['map_umt'], rtol=1e-6)
  sa, sb = np.load(tmp_path / 'one' / 'test_scores.npz'), np.load(tmp_path / 'two' / 'test_scores.npz')
  for vid in sa.files:
    np.testing.assert_allclose(sb[vid], sa[vid], rtol=1e-5, atol=1e-6)
  la = [json.loads(x) for x in (tmp_path / 'one' / 'metrics.jsonl').read_text().splitlines()]
  lb = [json.loads(x) for x in (tmp_path / 'two' / 'metrics.jsonl').read_text().splitlines()]
  assert [x['step'] for x in la] == [x['step'] for x in lb]  # one writer, no duplicate lines
  np.testing.assert_allclose([x['loss'] for x in lb], [x['loss'] for x in la], rtol=1e-5)
  # Only process 0 prints the summary.
  assert json.loads(runs[0][1].strip().splitlines()[-1])['map'] == b['map']
  assert not runs[1][1].strip()


def test_partial_distributed_flags_are_one_line(tmp_path, root):
  r = run_launch([*_args(root, tmp_path / 'x'), '--num_processes=2'])
  assert r.returncode == 2 and r.stderr.strip().startswith('error: --coordinator_address')


def test_checkpoint_of_two_processes_resumes_on_other_layouts(tmp_path, root):
  """Saved by 2 processes x 2 devices at step 10, resumed by 1 x 4 and by 1 x 1: all finish
  where the uninterrupted 2 x 2 run does (orbax reshards on restore)."""
  import shutil  # pylint: disable=import-outside-toplevel
  kw = {'train.num_steps': 20}
  for code, _, err in launch_processes(_args(root, tmp_path / 'two', **kw), 2, 2):
    assert code == 0, err[-3000:]
  full = json.loads((tmp_path / 'two' / 'results.json').read_text())
  for devices in (4, 1):
    wd = tmp_path / f'resume{devices}'
    shutil.copytree(tmp_path / 'two', wd)
    shutil.rmtree(wd / 'checkpoints' / '20')
    for name in ('results.json', 'test_scores.npz'):
      (wd / name).unlink()
    r = run_launch(_args(root, wd, **kw), devices=devices)
    assert r.returncode == 0, r.stderr[-3000:]
    history = json.loads((wd / 'config.json').read_text())['history']
    assert history[-1]['start_step'] == 10
    res = json.loads((wd / 'results.json').read_text())
    assert res['devices'] == devices and res['steps'] == 20
    np.testing.assert_allclose(res['map'], full['map'], rtol=1e-4)
    sa, sb = np.load(tmp_path / 'two' / 'test_scores.npz'), np.load(wd / 'test_scores.npz')
    for vid in sa.files:
      np.testing.assert_allclose(sb[vid], sa[vid], rtol=1e-4, atol=1e-5)
