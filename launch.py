"""Entry point: python launch.py --config=configs/<task>.py[:preset] --workdir=runs/x [--mode=...].

Modes: train (train, then evaluate; resumes from the latest checkpoint), eval (evaluate the
latest checkpoint), benchmark (throughput JSON), extract (C3D or I3D features from videos),
sweep (a table of methods x targets), predict (a trained run's highlights of new videos: JSON,
curve, reel and index.html).

Exit codes: 0 done; 1 some videos failed to extract or predict; 2 a user mistake (one `error:` line
naming the file or config field and the fix); 3 training diverged or the model gives
non-finite scores; 130 / 143 interrupted by SIGINT / SIGTERM after saving a checkpoint.
"""
from __future__ import annotations

import errno
import os
import sys

from absl import flags
from ml_collections import config_flags

MODES = ['train', 'eval', 'benchmark', 'extract', 'sweep', 'predict']
HELP_ARGS = ('-h', '--help', '--helpshort', '--helpfull', '-?')


def _define_flags(argv) -> flags.FlagValues:
  """A fresh flag set per call: main() can run many times in one process (tests)."""
  fv = flags.FlagValues()
  # sys_argv: config overrides are read from this argv, not from sys.argv.
  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:preset]).',
                                  flag_values=fv, lock_config=True, sys_argv=list(argv))
  flags.DEFINE_string('workdir', None, 'Output folder (checkpoints, metrics, results).',
                      flag_values=fv)
  flags.DEFINE_enum('mode', 'train', MODES, 'What to run.', flag_values=fv)
  flags.DEFINE_bool('progress', True, 'Show a progress bar.', flag_values=fv)
  # Multi-process runs (jax.distributed): all three, or none (single process, or a cluster
  # JAX detects by itself: SLURM, multi-host Cloud TPU, Open MPI).
  flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0.', flag_values=fv)
  flags.DEFINE_integer('num_processes', None, 'Number of processes of the run.', flag_values=fv)
  flags.DEFINE_integer('process_id', None, 'This process: 0 .. num_processes-1.', flag_values=fv)
  return fv


def _lines(text: str) -> list[str]:
  return [line.strip() for line in str(text).splitlines() if line.strip()]


def _override_key_error(argv) -> str | None:
  """The message for a `--config.<key>=...` whose key the config lacks, with the closest key."""
  from app import config_checks  # pylint: disable=g-import-not-at-top
  from dlvhd_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  base_argv = [argv[0], *(a for a in argv[1:] if a.startswith('--config='))]
  try:
    fv = _define_flags(base_argv)
    fv(base_argv)
    cfg = fv.config
  except Exception:  # pylint: disable=broad-except
    return None
  if cfg is None:
    return None
  for arg in argv[1:]:
    if arg.startswith('--config.'):
      key = arg[len('--config.'):].split('=', 1)[0]
      try:
        config_checks.check_key(cfg, key, f'--config.{key}')
      except UserInputError as e:
        return str(e)
  return None


def _flag_error(e: Exception, argv) -> str:
  """One line for a flag / config-file error."""
  typo = _override_key_error(argv)
  if typo:
    return typo
  lines = _lines(e)
  if 'Failed loading config file' in str(e):
    given = next((a for a in argv[1:] if a.startswith('--config=')), '--config')
    return f'{given}: cannot load the config file ({lines[-1]}); pass --config=configs/<task>.py'
  if not lines:
    return f'bad command line ({type(e).__name__}); see python launch.py --help'
  if len(lines) == 1:
    return lines[0]
  # ml_collections' config-file errors: the first line names the flag, the last the cause.
  return f'{lines[0].rstrip(":")}: {lines[-1]}'


def _os_error(e: BaseException) -> OSError | None:
  """The OSError behind `e` (orbax wraps them), if any."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError):
      return e
    e = e.__cause__ or e.__context__
  return None


def _describe_os_error(e: OSError, workdir: str) -> str:
  path = e.filename or workdir
  if e.errno in (errno.ENOSPC, errno.EDQUOT):
    return f'no space left on the device while writing {path}: free some space or pass another --workdir'
  if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return f'cannot write {path} ({e.strerror}): pass a writable --workdir'
  return f'cannot write {path} ({e.strerror or e}): check the path or pass another --workdir'


def main(argv) -> int:
  if any(a in HELP_ARGS for a in argv[1:]):
    print(__doc__)
    print(_define_flags(argv).get_help())
    return 0
  fv = _define_flags(argv)
  try:
    fv(argv)
    cfg = fv.config
    if cfg is not None:
      cfg.get('name')  # a config file that failed to load raises on first use, not in fv(argv)
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {_flag_error(e, argv)}', file=sys.stderr)
    return 2
  if cfg is None:
    print('error: --config is required: e.g. --config=configs/demo.py', file=sys.stderr)
    return 2
  # Imported here so that --help and flag errors never pay for (or trip over) jax start-up.
  from dlvhd_jax.errors import Preempted, RunError  # pylint: disable=g-import-not-at-top
  try:
    # Before any other JAX call.
    from dlvhd_jax import distributed, files  # pylint: disable=g-import-not-at-top
    if distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id) and (
        not files.is_primary()):
      # Results and summaries come from process 0 (also what native code prints).
      sys.stdout.flush()
      os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
  except RunError as e:
    print(f'error: {e}', file=sys.stderr)
    return e.exit_code
  from app import cli  # pylint: disable=g-import-not-at-top
  from dlvhd_jax import compile_cache  # pylint: disable=g-import-not-at-top
  compile_cache.enable(cfg.get('compile_cache_dir', compile_cache.DEFAULT))
  workdir = fv.workdir or cli.default_workdir(cfg)
  try:
    return cli.dispatch(cfg, workdir, fv.mode, fv.progress)
  except Preempted as e:
    print(str(e), file=sys.stderr)
    return e.exit_code
  except RunError as e:
    print(f'error: {e}', file=sys.stderr)
    return e.exit_code
  except KeyboardInterrupt:
    print('interrupted', file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    os_error = _os_error(e)
    if os_error is None:
      raise
    print(f'error: {_describe_os_error(os_error, workdir)}', file=sys.stderr)
    return 2


def _installed_config(arg: str) -> str:
  """`--config=configs/x.py[:preset]` names the shipped config when no such file is in the
  working directory (the `dlvhd` command run from anywhere after `pip install`)."""
  if not arg.startswith('--config='):
    return arg
  path, sep, preset = arg[len('--config='):].partition(':')
  if os.path.exists(path) or not path.startswith('configs/'):
    return arg
  import configs  # pylint: disable=g-import-not-at-top
  shipped = os.path.join(os.path.dirname(configs.__file__), path[len('configs/'):])
  return f'--config={shipped}{sep}{preset}' if os.path.exists(shipped) else arg


def run():
  """The `dlvhd` command (pyproject.toml) and `python launch.py`."""
  # absl logging (used by orbax and our loaders) expects parsed global flags.
  flags.FLAGS.mark_as_parsed()
  sys.exit(main([sys.argv[0], *map(_installed_config, sys.argv[1:])]))


if __name__ == '__main__':
  run()
