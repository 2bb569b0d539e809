"""What a run logs: one JSON line per log interval in <workdir>/metrics.jsonl and the same
scalars as TensorBoard event files in <workdir>/tensorboard (tensorboardX: no TensorFlow).

Only process 0 writes. Non-finite values are null in the JSON and skipped in TensorBoard; a
list value (one per seed) becomes one TensorBoard tag per seed (`source_val_map/seed_0`, ...).
A resumed run truncates metrics.jsonl to its checkpoint and starts a new event file, which
TensorBoard reads after the old one (the steps logged twice show the rerun's values last).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import sys

from dlvhd_jax.files import is_primary, write_atomic, writing

TENSORBOARD_DIR = 'tensorboard'
_WRITERS = itertools.count()


def _summary_writer(logdir: str):
  """tensorboardX's SummaryWriter, imported without PyTorch: tensorboardX imports torch when
  it is installed (4 s per process on a 2-core CPU) only to accept torch tensors, and this
  module logs Python floats. Where torch is already loaded it is used as it is."""
  if 'torch' in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  else:
    sys.modules['torch'] = None  # `import torch` raises ImportError: tensorboardX's fallback
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    finally:
      del sys.modules['torch']
  # tensorboardX names an event file by the second it opens and the host, and opens it with
  # 'wb': a second writer in the same second (a short run's training log, then its test mAP)
  # would truncate the first file. The process id and a counter keep each writer's own file.
  suffix = f'.{os.getpid()}.{next(_WRITERS):04d}'
  return SummaryWriter(logdir, flush_secs=5, filename_suffix=suffix)


def _finite(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class MetricsWriter:
  """metrics.jsonl and TensorBoard scalars of one run's workdir."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.tb_dir = os.path.join(workdir, TENSORBOARD_DIR)
    self._tb = None

  def truncate_after(self, step: int) -> None:
    """Drops the lines of steps past `step` (a resumed run logs them again)."""
    if not is_primary() or not os.path.isfile(self.path):
      return
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          if int(json.loads(line)['step']) <= step:
            kept.append(line if line.endswith('\n') else line + '\n')
        except (ValueError, KeyError, TypeError):
          continue  # a line cut short by a kill
    write_atomic(self.path, ''.join(kept))

  def write(self, record: dict) -> None:
    """One record with its 'step': a JSON line and its TensorBoard scalars."""
    if not is_primary():
      return
    clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
             for k, v in record.items()}
    with writing(self.path), open(self.path, 'a') as f:
      f.write(json.dumps(clean) + '\n')
    self.scalars(int(record['step']), {k: v for k, v in record.items() if k != 'step'})

  def scalars(self, step: int, values: dict) -> None:
    """TensorBoard only (e.g. the test mAP at the end, which is not a training interval)."""
    if not is_primary():
      return
    if self._tb is None:
      self._tb = _summary_writer(self.tb_dir)
    for name, v in values.items():
      if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
          if _finite(x):
            self._tb.add_scalar(f'{name}/seed_{i}', float(x), step)
      elif _finite(v):
        self._tb.add_scalar(name, float(v), step)
    # A run can be killed at any time: what was logged is on disk.
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
