"""Entry point: python launch.py --config=configs/<task>.py[:preset] --workdir=runs/x [--mode=...].

Modes: train (train, then evaluate; resumes from the latest checkpoint), eval (evaluate the
latest checkpoint), benchmark (throughput JSON), extract (C3D features from videos),
sweep (a table of methods x targets).
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:preset]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (checkpoints, metrics, results).')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'benchmark', 'extract', 'sweep'],
                          'What to run.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar.')
flags.mark_flags_as_required(['config'])


def _default_workdir(cfg) -> str:
  return os.path.join('runs', cfg.get('name', 'run'))


def _main(argv):
  del argv
  # Imported here so that --help and flag errors never pay for (or trip over) jax start-up.
  from data_pipelines.errors import UserInputError  # pylint: disable=g-import-not-at-top
  from dlvhd_jax import cli  # pylint: disable=g-import-not-at-top
  cfg = _CONFIG.value
  workdir = _WORKDIR.value or _default_workdir(cfg)
  try:
    return cli.dispatch(cfg, workdir, _MODE.value, _PROGRESS.value)
  except UserInputError as e:
    # A user mistake: one line naming the file/field and the fix, no traceback.
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(_main(argv)))
