"""What each `launch.py --mode` does, given a resolved config and a workdir."""
from __future__ import annotations

import json
import logging as py_logging
import os

from absl import logging

from dlvhd_jax import files
from dlvhd_jax.errors import UserInputError


def default_workdir(cfg) -> str:
  return os.path.join('runs', cfg.get('name', 'run'))


def _train_or_eval(cfg, workdir: str, mode: str, progress: bool) -> int:
  from app import experiment  # pylint: disable=g-import-not-at-top
  methods = tuple(cfg.get('compare_methods', ()) or ())
  if not methods:
    res = experiment.run(cfg, workdir, mode, progress)
    print(json.dumps({k: res[k] for k in ('method', 'source_category', 'target_category',
                                           'metric', 'map', 'map_ci95', 'map_umt', 'map_umt_ci95',
                                           'num_seeds', 'num_test_videos', 'wall_s',
                                           'vary_key', 'selected_value') if k in res}))
    return 0
  # Several methods on the same data (configs/demo.py): one sub-workdir each, one summary.
  subs = {}
  for method in methods:
    sub = cfg.copy_and_resolve_references()
    with sub.unlocked():
      sub.method = method
      sub.compare_methods = ()
    experiment.validate(sub)  # every method's config before the first one trains
    subs[method] = sub
  experiment.check_writable(workdir)
  data_root = experiment.resolve_data_root(cfg, workdir)
  runs = {}
  for method, sub in subs.items():
    with sub.unlocked():
      sub.data.root = data_root
    runs[method] = experiment.run(sub, os.path.join(workdir, method), mode, progress)
  first = runs[methods[0]]
  summary = {**first, 'runs': {m: {k: r[k] for k in ('map', 'map_umt', 'wall_s', 'steps')}
                               for m, r in runs.items()}}
  files.write_json(os.path.join(workdir, 'results.json'), summary)
  print(f'{"method":<20} {"mAP":>8} {"mAP(UMT)":>9} {"wall s":>8}   '
        f'({first["source_category"]} -> {first["target_category"]}, '
        f'{first["num_test_videos"]} test videos)')
  for m, r in runs.items():
    print(f'{m:<20} {r["map"]:>8.4f} {r["map_umt"]:>9.4f} {r["wall_s"]:>8.1f}')
  return 0


class _OrbaxErrorsRaised(py_logging.Filter):
  """Drops orbax's ERROR log lines: the same failure reaches us as an exception, which
  launch.py prints as one line (e.g. a full disk during a save)."""

  def filter(self, record):
    return not (record.levelno >= py_logging.ERROR and f'{os.sep}orbax{os.sep}' in record.pathname)


def dispatch(cfg, workdir: str, mode: str, progress: bool) -> int:
  # Orbax logs every save at INFO; keep the console for the progress bar and results.
  logging.set_verbosity(logging.WARNING)
  absl_logger = logging.get_absl_logger()
  if not any(isinstance(f, _OrbaxErrorsRaised) for f in absl_logger.filters):
    absl_logger.addFilter(_OrbaxErrorsRaised())
  if mode in ('train', 'eval', 'sweep') and 'data' in cfg:
    from app import config_checks  # pylint: disable=g-import-not-at-top
    config_checks.validate(cfg)
  if mode in ('train', 'eval'):
    return _train_or_eval(cfg, workdir, mode, progress)
  if mode == 'benchmark':
    if 'video_dir' in cfg:
      from data_pipelines import extract  # pylint: disable=g-import-not-at-top
      extract.run_extraction_benchmark(cfg, workdir)  # prints its JSON line
      return 0
    from app import benchmark  # pylint: disable=g-import-not-at-top
    print(json.dumps(benchmark.run(cfg, workdir)))
    return 0
  if mode == 'extract':
    if 'video_dir' not in cfg:
      raise UserInputError('--mode=extract needs an extraction config: '
                           '--config=configs/extract_i3d.py or configs/extract_c3d.py')
    from data_pipelines import extract  # pylint: disable=g-import-not-at-top
    return extract.run_extraction(cfg, workdir, progress)
  if mode == 'predict':
    from app import predict  # pylint: disable=g-import-not-at-top
    return predict.run(cfg, workdir, progress)
  if mode == 'sweep':
    from app import sweep  # pylint: disable=g-import-not-at-top
    return sweep.run(cfg, workdir, progress)
  raise UserInputError(f'--mode={mode} is unknown')
