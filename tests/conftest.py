"""Shared test helpers: repo on sys.path, the ../shared data folder, launch.py in a subprocess.

This process sees 8 fake CPU devices (set before any test touches jax), and its meshes use
only the first one unless a test asks for more (parallel.make_mesh(jax.devices()[:n]) or
DLVHD_NUM_DEVICES): the 1-, 2-, 4- and 8-device comparisons run in one process instead of
one interpreter per device count. Subprocesses get their own device count (run_launch).
"""
import os
import subprocess
import sys

# Tests check what programs compute, not how fast: XLA's CPU backend compiles without LLVM's
# expensive optimizations (compiling is most of the suite's time; these flags cut it by about
# a third) and with its older loop emitters for fusions (the MLIR fusion emitters take twice
# as long to compile a tiny train step: 2.7 s against 1.45 s). Set before jax starts;
# launch.py subprocesses inherit them (subprocess_env).
TEST_XLA_FLAGS = ('--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true '
                  '--xla_cpu_use_fusion_emitters=false')
os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
# ...and at -O0 most programs compile in under JAX's 1 s threshold for the persistent cache:
# the suite caches every program instead, so that the many launch.py subprocesses of one tiny
# config load what the first compiled (-13% CPU time of test_launch, test_reliability and
# test_seeds on a cold cache). Subprocesses inherit it; runs outside the suite keep 1 s.
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'

import jax  # noqa: E402  pylint: disable=wrong-import-position
import pytest  # noqa: E402  pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from dlvhd_jax import compile_cache  # noqa: E402  pylint: disable=wrong-import-position

FAKE_DEVICES = 8
jax.config.update('jax_num_cpu_devices', FAKE_DEVICES)
os.environ['DLVHD_NUM_DEVICES'] = '1'
# Every test (and every launch.py it starts, through the config's default) shares one
# persistent compilation cache: the same tiny programs compile once per machine.
compile_cache.enable(compile_cache.DEFAULT)

SHARED_DATA = os.path.join(REPO, '..', 'shared', 'data')
YOUTUBE = os.path.join(SHARED_DATA, 'youtube_highlights')


@pytest.fixture
def youtube_root():
  if not os.path.isfile(os.path.join(YOUTUBE, 'youtube_anno.json')):
    pytest.skip(f'real YouTube Highlights features not found at {YOUTUBE} (../shared is absent)')
  return YOUTUBE


def subprocess_env(devices: int | None = None, **extra) -> dict:
  """The environment of a launch.py subprocess: the repo on PYTHONPATH, and `devices` fake
  CPU devices, every one of them in its meshes (default: 1 device)."""
  e = dict(os.environ, PYTHONPATH=REPO, **extra)
  e.pop('DLVHD_NUM_DEVICES', None)
  if devices:
    e['XLA_FLAGS'] = f'{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}'
  return e


def run_launch(args, *, devices: int | None = None, timeout: float = 600, env=None):
  """Runs launch.py in a fresh interpreter (optionally with N fake CPU devices)."""
  e = subprocess_env(devices, **(env or {}))
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch.py'), '--noprogress', *args],
                        cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)


def tiny_overrides(**kw):
  """Config overrides for a small, fast model on the synthetic data."""
  base = {'model.width': 32, 'model.depth': 1, 'model.num_heads': 2, 'model.head_dims': '(16,8)',
          'train.batch_size': 8, 'train.num_steps': 20, 'train.steps_per_dispatch': 5,
          'train.log_every_steps': 10, 'train.checkpoint_every_steps': 10, 'eval.batch_size': 256}
  base.update(kw)
  return [f'--config.{k}={v}' for k, v in base.items()]
