"""Multi-process runs on 127.0.0.1 (jax.distributed, gloo CPU collectives): P processes x D
fake devices compute what 1 process x P*D devices computes."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, run_launch, subprocess_env, tiny_overrides
from data_pipelines import synthetic


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_processes(args, num_processes: int, devices_each: int, env=None, env_of=None):
  """Starts `num_processes` launch.py processes of one run on 127.0.0.1 -> their Popens.
  `env_of`: {process id: extra environment of that process only}."""
  port = free_port()
  e = subprocess_env(devices_each, **(env or {}))
  return [subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'launch.py'), '--noprogress', *args,
       f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={num_processes}',
       f'--process_id={i}'], cwd=REPO, env={**e, **(env_of or {}).get(i, {})},
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(num_processes)]


def finish(procs, timeout: float = 300):
  """-> [(returncode, stdout, stderr)] in process order; kills what outlives `timeout`."""
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


def launch_processes(args, num_processes: int, devices_each: int, timeout: float = 300):
  return finish(start_processes(args, num_processes, devices_each), timeout)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return synthetic.write_synthetic_dataset(str(tmp_path_factory.mktemp('data') / 'd'),
                                           videos_per_category=8, min_len=8, max_len=16, dim=16)


def _args(root, wd, **kw):
  return ['--config=configs/youtube_surfing.py', f'--workdir={wd}', f'--config.data.root={root}',
          '--config.data.source_category=diving', '--config.data.target_category=climbing',
          *tiny_overrides(**{'train.num_steps': 10, **kw})]


# One schedule for the 1 x 4 reference and the runs held against it: 60 steps, two per
# dispatch, a log line every 2 (the SIGTERM notice needs steps to travel), no checkpoint but
# the preemption's and the last. FSDP does not change what a run computes.
KW = {'train.num_steps': 60, 'train.steps_per_dispatch': 2, 'train.log_every_steps': 2,
      'train.checkpoint_every_steps': 1000}


@pytest.fixture(scope='module')
def reference(root, tmp_path_factory):
  """The 1 process x 4 devices run -> its workdir."""
  wd = tmp_path_factory.mktemp('ref') / 'one'
  one = run_launch(_args(root, wd, **KW), devices=4)
  assert one.returncode == 0, one.stderr[-3000:]
  return wd


@pytest.mark.slow
def test_two_processes_equal_one_process_stop_together_and_resume_anywhere(tmp_path, root,
                                                                         reference):
  """2 processes x 2 devices, the parameters sharded 4 ways across them (mesh.fsdp=4), compute
  what the replicated 1 process x 4 devices run computes (losses, scores, mAP), through a
  preemption: process 1 sends itself SIGTERM after step 4 (DLVHD_INJECT_FAULT); the notice
  reaches the other process through the coordination service some steps later (the run
  leaves room for it), both stop after the same step with one checkpoint, and rerunning the
  command resumes exactly. That 2-process, FSDP-sharded checkpoint, resumed by 1 process x 1
  device (orbax reshards on restore), ends where the 2 x 2 run ends."""
  import shutil  # pylint: disable=import-outside-toplevel
  kw = {**KW, 'mesh.fsdp': 4}
  wd = tmp_path / 'term'
  procs = start_processes(_args(root, wd, **kw), 2, 2,
                          env_of={1: {'DLVHD_INJECT_FAULT': 'SIGTERM@4'}})
  steps = set()
  for code, _, err in finish(procs, 120):
    assert code == 143, err[-3000:]
    line = [l for l in err.splitlines() if l.startswith('preempted')][-1]
    steps.add(int(re.fullmatch(r'preempted at step (\d+); rerun the same command to resume', line)[1]))
  (step,) = steps  # both processes stopped after the same step
  assert 4 <= step < 60 and sorted(os.listdir(wd / 'checkpoints')) == [str(step)]
  assert not (wd / 'results.json').exists()
  one = tmp_path / 'one_device'
  shutil.copytree(wd, one)

  runs = launch_processes(_args(root, wd, **kw), 2, 2)
  for code, _, err in runs:
    assert code == 0, err[-3000:]
  a, b = (json.loads((d / 'results.json').read_text()) for d in (reference, wd))
  assert b['steps'] == 60 and a['devices'] == b['devices'] == 4
  np.testing.assert_allclose(b['map'], a['map'], rtol=1e-4)
  np.testing.assert_allclose(b['map_umt'], a['map_umt'], rtol=1e-4)
  sa, sb = np.load(reference / 'test_scores.npz'), np.load(wd / 'test_scores.npz')
  for vid in sa.files:
    np.testing.assert_allclose(sb[vid], sa[vid], rtol=1e-4, atol=1e-5)
  la = [json.loads(x) for x in (reference / 'metrics.jsonl').read_text().splitlines()]
  lb = [json.loads(x) for x in (wd / 'metrics.jsonl').read_text().splitlines()]
  # One writer, and the resumed run continues the log: no step twice, none missing.
  assert [x['step'] for x in lb] == [x['step'] for x in la]
  np.testing.assert_allclose([x['loss'] for x in lb], [x['loss'] for x in la], rtol=1e-4)
  # Only process 0 prints the summary.
  assert json.loads(runs[0][1].strip().splitlines()[-1])['map'] == b['map']
  assert not runs[1][1].strip()

  r = run_launch(_args(root, one, **KW), devices=1)  # mesh.fsdp may change on resume
  assert r.returncode == 0, r.stderr[-3000:]
  history = json.loads((one / 'config.json').read_text())['history']
  assert history[-1]['start_step'] == step
  res = json.loads((one / 'results.json').read_text())
  assert res['devices'] == 1 and res['steps'] == 60
  np.testing.assert_allclose(res['map'], b['map'], rtol=1e-4)
  sc = np.load(one / 'test_scores.npz')
  for vid in sb.files:
    np.testing.assert_allclose(sc[vid], sb[vid], rtol=1e-4, atol=1e-5)


def test_partial_distributed_flags_are_one_line(tmp_path, root):
  r = run_launch([*_args(root, tmp_path / 'x'), '--num_processes=2'])
  assert r.returncode == 2 and r.stderr.strip().startswith('error: --coordinator_address')


@pytest.mark.slow
def test_a_process_that_dies_stops_the_others_within_the_heartbeat_timeout(tmp_path, root):
  wd = tmp_path / 'dies'
  procs = start_processes(_args(root, wd, **{'train.num_steps': 5000, 'train.steps_per_dispatch': 1,
                                             'train.log_every_steps': 2}), 2, 2,
                          env={'DLVHD_HEARTBEAT_TIMEOUT_S': '3'},
                          env_of={1: {'DLVHD_INJECT_FAULT': 'SIGKILL@4'}})
  assert procs[1].wait(timeout=300) == -signal.SIGKILL
  t0 = time.time()  # process 1 is gone from here on
  (code, _, err), _ = finish(procs, 60)
  assert code != 0 and time.time() - t0 < 60
  assert 'stopped sending heartbeats' in err, err[-2000:]


def test_cluster_detection(monkeypatch):
  from dlvhd_jax import distributed  # pylint: disable=import-outside-toplevel
  for var in ('SLURM_JOB_ID', 'SLURM_PROCID', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(var, raising=False)
  assert distributed.detected_cluster() is None
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_PROCID', '0')
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert distributed.detected_cluster() is None  # an interactive one-task job stays single
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed.detected_cluster() == 'slurm'
  for var in ('SLURM_JOB_ID', 'SLURM_PROCID', 'SLURM_NTASKS'):
    monkeypatch.delenv(var)
  monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '2')
  assert distributed.detected_cluster() == 'mpi'


def test_scaling_table_arithmetic():
  from app import scaling  # pylint: disable=import-outside-toplevel
  # width 64, depth 1, DL-VHD's two heads (published: bias-free qkv, heads W/4, W/16): the
  # model's parameter count written out.
  w, m = 64, 128
  block = 2 * w + w * 3 * w + (w * w + w) + 2 * w + (w * m + m) + (m * w + w)
  head = (w * 16 + 16) + (16 * 4 + 4) + (4 + 1)
  assert scaling.parameter_bytes(w, depth=1) == 4 * (block + 2 * head)
  assert scaling.ring_seconds(8e9, 1, 1e9) == 0.0
  np.testing.assert_allclose(scaling.ring_seconds(8e9, 4, 1e9), 2 * 3 / 4 * 8)
  text = scaling.table(4e9, 0.1, 256, gpus=(1, 8))
  assert '| 8 | 2048 |' in text and text.count('\n') == 3
