"""Atomic file writes: a reader (or a crash) never sees half a file, a failed write names it.

In a multi-process run (dlvhd_jax/distributed.py) every process computes the same results
and only process 0 writes them: the writers here do nothing on the other processes.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os

import numpy as np


@contextlib.contextmanager
def writing(path: str):
  """Names `path` in an OSError that lacks a file name (a failed write or flush has none), so
  launch.py's one-line message says which file could not be written."""
  try:
    yield
  except OSError as e:
    if e.filename is None:
      raise OSError(e.errno, e.strerror, path) from e
    raise


def is_primary() -> bool:
  """False on every process of a multi-process run but process 0."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def write_atomic(path: str, data: bytes | str) -> None:
  """Writes a temporary file beside `path`, then renames it over `path`; on failure the
  temporary file is removed and `path` keeps its old content (or stays absent). Process 0
  only."""
  if not is_primary():
    return
  tmp = path + '.tmp'
  try:
    with writing(path), open(tmp, 'wb' if isinstance(data, bytes) else 'w') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_json(path: str, obj) -> None:
  write_atomic(path, json.dumps(obj, indent=1))


def write_npz(path: str, arrays: dict) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_atomic(path, buf.getvalue())


def sha256(path: str) -> str:
  """Hex sha256 of a file's bytes (weights, checkpoints and data files are identified by it)."""
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()
