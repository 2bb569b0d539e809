"""Shared test helpers: repo on sys.path, the ../shared data folder, launch.py in a subprocess."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, '..', 'shared', 'data')
YOUTUBE = os.path.join(SHARED_DATA, 'youtube_highlights')
sys.path.insert(0, REPO)


@pytest.fixture
def youtube_root():
  if not os.path.isfile(os.path.join(YOUTUBE, 'youtube_anno.json')):
    pytest.skip(f'real YouTube Highlights features not found at {YOUTUBE} (../shared is absent)')
  return YOUTUBE


def run_launch(args, *, devices: int | None = None, timeout: float = 600, env=None):
  """Runs launch.py in a fresh interpreter (optionally with N fake CPU devices)."""
  e = dict(os.environ, **(env or {}))
  e['PYTHONPATH'] = REPO
  if devices:
    e['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch.py'), '--noprogress', *args],
                        cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)


def tiny_overrides(**kw):
  """Config overrides for a small, fast model on the synthetic data."""
  base = {'model.width': 32, 'model.depth': 1, 'model.num_heads': 2, 'model.head_dims': '(16,8)',
          'train.batch_size': 8, 'train.num_steps': 20, 'train.steps_per_dispatch': 5,
          'train.log_every_steps': 10, 'train.checkpoint_every_steps': 10, 'eval.batch_size': 256}
  base.update(kw)
  return [f'--config.{k}={v}' for k, v in base.items()]
