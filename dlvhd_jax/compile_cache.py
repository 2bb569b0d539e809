"""JAX's persistent compilation cache, on by default (config.compile_cache_dir).

XLA compiles every program of a run again in each new process; on an accelerator GEMM
autotuning alone can take minutes per program. With the cache a second launch of the same
programs (a resumed run, an evaluation, the next sweep cell with the same shapes, a rerun of
a test) loads them from disk. Entries are keyed by the program, the devices and the flags,
so a cached executable is never used for another layout.
"""
from __future__ import annotations

import os

import jax

DEFAULT = '~/.cache/dlvhd-jax/jax-compile'


def resolve(path: str) -> str:
  """The folder a config value names ('' = off): `~` and $VARS expanded, made absolute."""
  return os.path.abspath(os.path.expanduser(os.path.expandvars(path))) if path else ''


def enable(path: str, min_compile_seconds: float | None = None) -> str:
  """Points JAX's persistent cache at `path` ('' turns it off); call before compiling.
  Programs that compile in under `min_compile_seconds` are not worth a disk write and read;
  None keeps JAX's threshold (1 s, or JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS: the test
  suite sets 0, where a program recurs in many short processes).
  Returns the folder used ('' when off). A folder that cannot be created turns it off
  rather than failing the run."""
  folder = resolve(path)
  if folder:
    try:
      os.makedirs(folder, exist_ok=True)
    except OSError:
      folder = ''
  jax.config.update('jax_compilation_cache_dir', folder or None)
  if folder and min_compile_seconds is not None:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', float(min_compile_seconds))
  return folder
