"""The accelerator tools at tiny sizes on the CPU: tools/gpu_check.sh (the prepared GPU check)
and tools/memory_report.py (peak bytes per device from XLA's memory analysis).

Both run for real only on the day an accelerator is lent, with minutes to spare; these tests
run the same code paths every time, so neither can rot in between.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_DATA, TEST_XLA_FLAGS

VIDEOS = os.path.join(SHARED_DATA, 'videos')
# What the tiny lines are checked for: each key present and a positive number.
POSITIVE = {
    'paper_step': ('step_time_s', 'sets_per_s', 'mfu', 'peak_tflops', 'compile_s',
                   'eval_windows_per_s', 'peak_memory_bytes', 'params'),
    'compile': ('cold_compile_s', 'warm_compile_s', 'warm_over_cold', 'cold_wall_s',
                'warm_wall_s', 'warm_step_time_s'),
    'seeds': ('step_time_s_1', 'step_time_s_2', 'ratio_2_over_1', 'sets_per_s_1', 'sets_per_s_2',
              'mfu_1', 'mfu_2'),
    'extract_c3d': ('compute_clips_per_s', 'clips_per_s', 'mfu', 'flops_per_clip', 'wall_s'),
}


def _env(**extra):
  # A subprocess sees all its devices (the suite's DLVHD_NUM_DEVICES is for this process).
  # The script runs `python`: this interpreter, whatever is first on PATH.
  env = {**os.environ, 'PYTHONPATH': REPO, 'PYTHON': sys.executable, **extra}
  env.pop('DLVHD_NUM_DEVICES', None)
  return env


def _positive(line, keys):
  for k in keys:
    assert isinstance(line.get(k), (int, float)) and line[k] > 0, (line['check'], k, line.get(k))


@pytest.fixture(scope='module')
def gpu_check(tmp_path_factory):
  out = tmp_path_factory.mktemp('gpu_check')
  proc = subprocess.run(['bash', os.path.join(REPO, 'tools', 'gpu_check.sh'), '--tiny',
                         f'--out={out}'], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]
  return lines


def test_gpu_check_tiny_prints_every_measurement(gpu_check):
  checks = [l['check'] for l in gpu_check]
  assert checks == ['paper_step', 'compile', 'seeds', 'extract_c3d', 'extract_c3d',
                    'extract_i3d', 'extract_i3d', 'summary']
  by = {l['check']: l for l in gpu_check if not l['check'].startswith('extract_')}
  assert not any('error' in l for l in gpu_check), gpu_check
  paper = by['paper_step']
  _positive(paper, POSITIVE['paper_step'])
  # MFU both ways: mfu_rated is null on a CPU, with the reason.
  assert 'mfu_rated' in paper and paper['mfu_rated'] is None and paper['rated_peak_note']
  assert paper['dtype'] == 'bfloat16' and paper['platform'] == 'cpu'
  _positive(by['compile'], POSITIVE['compile'])
  assert by['compile']['cold_compile_s'] == paper['compile_s']
  seeds = by['seeds']
  _positive(seeds, POSITIVE['seeds'])
  assert seeds['num_seeds'] == [1, 2]
  assert seeds['ratio_2_over_1'] == pytest.approx(seeds['step_time_s_2'] / seeds['step_time_s_1'])
  pyav, nvdec = [l for l in gpu_check if l['check'] == 'extract_c3d']
  assert pyav['decoder'] == 'pyav' and nvdec['decoder'] == 'nvdec'
  _positive(pyav, POSITIVE['extract_c3d'])
  assert 'PyNvVideoCodec' in nvdec['skipped'] or 'no videos' in nvdec['skipped']
  i3d_pyav, i3d_nvdec = [l for l in gpu_check if l['check'] == 'extract_i3d']
  assert i3d_pyav['decoder'] == 'pyav' and i3d_pyav['extractor'] == 'i3d'
  assert not i3d_pyav['random_weights'] and i3d_pyav['clip_frames'] == 9
  _positive(i3d_pyav, POSITIVE['extract_c3d'])
  assert 'skipped' in i3d_nvdec
  summary = by['summary']
  assert summary['tiny'] is True and summary['failed'] == [] and summary['wall_s'] > 0
  assert set(summary['launch_wall_s']) == {'paper_step', 'compile', 'seeds_1', 'seeds_2',
                                            'extract_pyav', 'extract_i3d_pyav'}


def test_gpu_check_tiny_decodes_real_video(gpu_check):
  if not os.path.isdir(VIDEOS):
    pytest.skip(f'sample videos not found at {VIDEOS} (../shared is absent): the extraction '
                'line measures compute only')
  pyav = next(l for l in gpu_check if l['check'] == 'extract_c3d' and l['decoder'] == 'pyav')
  assert os.path.samefile(pyav['video_dir'], VIDEOS)
  _positive(pyav, ('decode_clips_per_s', 'decode_clips', 'pipeline_clips', 'pipeline_s'))
  assert pyav['errors'] == []


def test_memory_report_tiny_fsdp_shards_the_state(tmp_path):
  # LLVM's optimization level changes compile time, not XLA's buffer sizes (checked: the same
  # bytes at level 0 and the default), so the test compiles with the suite's flags (the loop
  # emitters may change temp bytes, which nothing below compares across runs).
  env = _env(XLA_FLAGS=TEST_XLA_FLAGS)
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'memory_report.py'),
                         '--width=32', '--depth=1', '--heads=2', '--feature_dim=32',
                         '--devices=4', '--fsdp=1,4', '--num_seeds=2'],
                        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]
  assert [(l['program'], l['fsdp']) for l in lines] == [('init', 1), ('step', 1), ('init', 4),
                                                        ('step', 4)]
  for l in lines:
    assert l['version'] == 'after' and l['source'] == 'xla_memory_analysis'
    assert l['num_seeds'] == 2 and l['devices'] == 4 and l['width'] == 32
    assert l['peak_bytes_per_device'] == (l['argument_bytes'] + l['output_bytes'] +
                                          l['temp_bytes'] - l['alias_bytes']) > 0
  init1, step1, init4, step4 = lines
  # The step's state arrives sharded: a quarter of the matrices per device with fsdp = 4.
  assert step4['argument_bytes'] < step1['argument_bytes']
  # Born sharded: the init program writes each device's shard, not the whole state.
  assert init1['argument_bytes'] == 0 and init4['output_bytes'] < init1['output_bytes']
  # fsdp = 1 replicates the state: every device holds all of it (+ the step's donated copy).
  assert init1['output_bytes'] >= init1['state_bytes_all_replicas']
  assert step1['alias_bytes'] >= step1['state_bytes_all_replicas'] > 0
