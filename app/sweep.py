"""`--mode=sweep`: the paper's tables (methods x targets) and sensitivity curves (Fig. 5).

Every cell is one full `experiment.run` in its own sub-workdir (all of its `num_seeds` seeds
in one vectorized program); a cell whose results.json exists is read back instead of rerun,
so an interrupted sweep resumes where it stopped (and a killed cell resumes from its own
checkpoint). After each cell the artifacts are rewritten (app/tables.py):
<workdir>/table.md, table.json and table.png. A finished cell whose config.json differs from
the cell's config now (in a key that changes results, e.g. a baseline's weight in
configs/table4.py) is refused before anything trains: delete it, or let
`sweep.redo_stale=True` move it aside to <cell>.stale and train it again.

config.sweep:
  kind     'methods' (a table) | 'sensitivity' (one parameter over values) | 'matrix' (the
           transfer-gap matrix over sweep.targets, app/transfer.py) | 'gap_pairs' (methods on
           a matrix's gap pairs, app/gap_pairs.py)
  methods  method specs: a registered method, a named variant of VARIANTS, and optionally
           ':key=value,...' config overrides, e.g. 'dan:uda.dan.weight=0.5'
  targets  target categories (the source is config.data.source_category)
  param, values   (sensitivity) the dotted config key and its values; runs config.method
  paper    (optional) {spec: {target: mAP}} printed beside ours
  title    (optional) the table's heading
  train_missing  (default True) False: train nothing, write the tables from the cells that
           finished so far (the others read "–"), e.g. beside a sweep that is still running
  redo_stale     (default False) True: a finished cell measured under another config is moved
           to <cell>.stale and trained again (False: a one-line error names it)
  all_folds      (default False) with data.split=kfold: every cell runs once per fold,
           in <cell>__fold<k>/, and the table's cell merges the folds' test videos (per seed),
           so it holds every target video once, tested by a model that did not train on it
"""
from __future__ import annotations

import ast
import json
import os
import re
import sys

import ml_collections

from app import config_checks, experiment, tables
from dlvhd_jax import checkpoint, distributed, files
from dlvhd_jax.errors import NonFiniteError, UserInputError

TARGET = '{target}'
# Named variants: the registered method they run and the overrides they imply.
VARIANTS = {
    'sl_oracle': ('sl', {'data.source_category': TARGET}),  # SL-module on the target's labels
    'sl_wo_encoder': ('sl', {'model.use_encoder': False}),
    'dlvhd_wo_encoder': ('dlvhd', {'model.use_encoder': False}),
    # Table 1: the category-specific SL-module, trained and tested on each category.
    'sl_specific': ('sl', {'data.source_category': TARGET}),
    'sl_specific_wo_encoder': ('sl', {'data.source_category': TARGET, 'model.use_encoder': False}),
}


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_spec(spec: str) -> tuple[str, dict]:
  """'name' or 'name:key=value,key2=value2' -> (name, {key: value}); values are literals."""
  name, _, rest = spec.partition(':')
  overrides = {}
  # Split on commas that start a new 'key=' so tuple values like (16,8) survive.
  for item in filter(None, re.split(r',(?=\s*[A-Za-z_][\w.]*\s*=)', rest)):
    key, eq, value = item.partition('=')
    if not eq:
      raise UserInputError(f'config.sweep.methods entry {spec!r}: {item!r} is not key=value')
    overrides[key.strip()] = _literal(value.strip())
  return name.strip(), overrides


def resolve_spec(spec: str, target: str) -> tuple[str, dict]:
  """-> (registered method, overrides with the variant's first and the spec's on top)."""
  name, extra = parse_spec(spec)
  method, implied = VARIANTS.get(name, (name, {}))
  overrides = {k: (target if v == TARGET else v) for k, v in {**implied, **extra}.items()}
  return method, overrides


def set_path(cfg: ml_collections.ConfigDict, dotted: str, value, where: str = 'override') -> None:
  """cfg.<dotted> = value for a key the config has (a typo is an error, not a new key)."""
  config_checks.check_key(cfg, dotted, f'{where} {dotted}={value!r}')
  *groups, leaf = dotted.split('.')
  node = cfg
  for g in groups:
    node = node[g]
  if isinstance(node[leaf], float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  try:
    with cfg.unlocked():
      node[leaf] = value
  except (TypeError, ValueError) as e:
    raise UserInputError(f'{where} {dotted}={value!r}: {e}') from None


def slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.=+-]+', '_', text.replace(':', '+'))


def _sweep(cfg):
  s = cfg.get('sweep', None)
  if s is None:
    raise UserInputError('--mode=sweep needs a config with a `sweep` group: configs/table4.py, '
                         'configs/table7.py or configs/sensitivity.py')
  return s


def _cells(cfg):
  """-> list of (row key, target, sub-workdir name, method, overrides)."""
  s = _sweep(cfg)
  kind = s.get('kind', 'methods')
  targets = tuple(s.get('targets', ()) or (cfg.data.target_category,))
  cells = []
  if kind == 'methods':
    for spec in s.methods:
      for t in targets:
        method, ov = resolve_spec(spec, t)
        cells.append((spec, t, f'{slug(spec)}__{slug(t)}', method, ov))
  elif kind == 'sensitivity':
    if not s.get('param', ''):
      raise UserInputError('config.sweep.param is empty: e.g. sampling.set_size or loss.distill_weight')
    for t in targets:
      for v in s['values']:
        key = f'{s.param}={v}'
        cells.append((key, t, f'{slug(cfg.method)}__{slug(key)}__{slug(t)}', cfg.method,
                      {s.param: v}))
  else:
    raise UserInputError(f"config.sweep.kind={kind!r} is invalid: use 'methods', 'sensitivity', "
                         "'matrix' or 'gap_pairs'")
  if s.get('all_folds', False):
    if cfg.data.split != 'kfold':
      raise UserInputError(f'config.sweep.all_folds=True needs --config.data.split=kfold (now '
                           f'{cfg.data.split!r}): set it, or drop all_folds')
    cells = [(row, t, f'{name}__fold{f}', method, {**ov, 'data.fold': f})
             for row, t, name, method, ov in cells for f in range(int(cfg.data.num_folds))]
  distinct_folders(cells)
  # Every cell's config is built and checked now, not hours into the sweep.
  for _, t, _, method, ov in cells:
    cell_config(cfg, t, method, ov, cfg.data.root)
  return kind, targets, cells


def distinct_folders(cells) -> None:
  """Two cells whose names differ only in characters that `slug` turns into _ (a category
  named 'a/b' must not make a folder a/) would share one sub-workdir: refused."""
  seen = {}
  for row, t, name, _, _ in cells:
    if name in seen and seen[name] != (row, t):
      raise UserInputError(f'sweep cells {seen[name]} and {(row, t)} would share the folder '
                           f'{name!r}: rename a category or method so that they differ in a '
                           'letter, digit or one of _.=+-')
    seen[name] = (row, t)


def cell_config(cfg, target, method, overrides, data_root):
  """The config of one run: `cfg` with the method, target, data root and overrides."""
  sub = cfg.copy_and_resolve_references()
  with sub.unlocked():
    sub.method = method
    sub.data.target_category = target
    sub.data.root = data_root
    sub.compare_methods = ()
  for k, v in overrides.items():
    set_path(sub, k, v, where=f'config.sweep override for {method}:')
  experiment.validate(sub)
  return sub


DIVERGED = 'diverged.json'
STALE_SUFFIX = '.stale'


def _finished(workdir: str) -> str | None:
  """The path of a cell's results.json or diverged.json, None while it is unfinished."""
  for name in ('results.json', DIVERGED):
    path = os.path.join(workdir, name)
    if os.path.isfile(path):
      return path
  return None


def stale_difference(workdir: str, sub) -> tuple[str, str, str] | None:
  """-> (key, its value in the finished cell, its value now) when the finished cell in
  `workdir` ran another config than `sub` (a key that changes results: not RESUME_SAFE).
  Keys the cell's config.json does not know (added to the project after it ran) are not
  compared; a cell without config.json is taken as it is."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)['history'][-1]['config']
  except (OSError, ValueError, KeyError, IndexError, TypeError):
    return None
  was = checkpoint.config_fingerprint(checkpoint.with_legacy_defaults(saved))
  now = checkpoint.config_fingerprint(json.loads(sub.to_json_best_effort()))
  return checkpoint.first_difference({k: v for k, v in was.items() if k in now},
                                     {k: v for k, v in now.items() if k in was})


def check_categories(cfg, cells, data_root: str) -> None:
  """Every category a cell names is one of the data's, checked before anything is written
  or trained (a misspelt target would otherwise fail hours into a sweep)."""
  have = experiment.data_categories(cfg, data_root)
  for _, t, _, method, ov in cells:
    sub = cell_config(cfg, t, method, ov, data_root)
    for field in ('source_category', 'target_category', 'extra_sources'):
      names = sub.data.get(field, ())
      names = (names,) if isinstance(names, str) else names
      unknown = experiment.unknown_categories(cfg, names, have)
      if unknown:
        named = field == 'target_category' and _sweep(cfg).get('targets')
        where = 'config.sweep.targets' if named else f'config.data.{field}'
        raise UserInputError(f'{where} names {unknown[0]!r}, which is not a category of '
                             f'{data_root}; categories there: {list(have)}')


def _check_stale(cfg, workdir: str, cells, data_root: str) -> None:
  """A finished cell measured under another config would be tabulated as this sweep's: refuse
  before anything trains, or with `sweep.redo_stale=True` move such cells aside to
  <cell>.stale (kept, not deleted) so that they are trained again."""
  stale = []
  for _, t, name, method, ov in cells:
    cell = os.path.join(workdir, name)
    if _finished(cell):
      diff = stale_difference(cell, cell_config(cfg, t, method, ov, data_root))
      if diff:
        stale.append((cell, diff))
  if not stale:
    return
  if not _sweep(cfg).get('redo_stale', False):
    (cell, (key, was, now)), more = stale[0], len(stale) - 1
    others = f' (and {more} more cell(s) differ)' if more else ''
    raise UserInputError(
        f'{cell} finished with {key}={was} but this sweep has {key}={now}{others}: delete '
        'such cells or rerun with --config.sweep.redo_stale=True to move them aside to '
        f'<cell>{STALE_SUFFIX} and train them again')
  taken = [cell + STALE_SUFFIX for cell, _ in stale if os.path.exists(cell + STALE_SUFFIX)]
  if taken:  # checked for all before any is moved: nothing half done
    raise UserInputError(f'{taken[0]} exists already (an older stale copy): delete or rename '
                         'it, then rerun')
  if files.is_primary():
    for cell, (key, was, now) in stale:
      dest = cell + STALE_SUFFIX
      os.rename(cell, dest)
      print(f'{cell}: measured with {key}={was}, this sweep has {now}; moved to {dest}, '
            'training it again', file=sys.stderr)
  distributed.barrier('stale sweep cells moved aside')


def _run_cell(cfg, workdir, data_root, target, method, overrides, progress):
  """-> (results or {'diverged': message} or None, done before). A cell whose training
  diverged is recorded in <cell>/diverged.json and, like a finished one, not redone; with
  `sweep.train_missing=False` an unfinished cell is not trained either (None)."""
  path = _finished(workdir)
  if path:
    with open(path) as f:
      return json.load(f), True
  if not _sweep(cfg).get('train_missing', True):
    return None, False
  sub = cell_config(cfg, target, method, overrides, data_root)
  try:
    return experiment.run(sub, workdir, 'train', progress), False
  except NonFiniteError as e:
    record = {'diverged': str(e)}
    files.write_json(os.path.join(workdir, DIVERGED), record)
    return record, False


def run(cfg, workdir: str, progress: bool = True) -> int:
  if _sweep(cfg).get('kind', 'methods') == 'matrix':
    from app import transfer  # pylint: disable=g-import-not-at-top
    return transfer.run(cfg, workdir, progress)
  if _sweep(cfg).get('kind', 'methods') == 'gap_pairs':
    from app import gap_pairs  # pylint: disable=g-import-not-at-top
    return gap_pairs.run(cfg, workdir, progress)
  kind, targets, cells = _cells(cfg)
  experiment.check_writable(workdir)
  data_root = experiment.resolve_data_root(cfg, workdir)
  check_categories(cfg, cells, data_root)
  os.makedirs(workdir, exist_ok=True)
  _check_stale(cfg, workdir, cells, data_root)
  all_folds, num_folds = _sweep(cfg).get('all_folds', False), int(cfg.data.num_folds)
  # All-folds sweeps: (row, target) -> the results of its folds so far; None once a fold
  # diverged or is missing (the merged cell then reads "diverged" or "-").
  folds: dict = {}
  results, diverged = {}, []
  for i, (row, target, name, method, overrides) in enumerate(cells):
    res, skipped = _run_cell(cfg, os.path.join(workdir, name), data_root, target, method,
                             overrides, progress)
    fold = f" (fold {overrides['data.fold']})" if all_folds else ''
    if res is None:
      folds[(row, target)] = None
      if files.is_primary():
        print(f'[{i + 1}/{len(cells)}] {row} -> {target}{fold}: not run yet '
              '(sweep.train_missing=False)', file=sys.stderr)
      results.setdefault(row, {})
      continue
    if 'diverged' in res:
      diverged.append(name)
    ci = f" ± {res['map_ci95']:.4f}" if res.get('map_ci95') is not None else ''
    outcome = ('diverged: ' + res['diverged']) if 'diverged' in res else f"mAP {res['map']:.4f}{ci}"
    source = overrides.get('data.source_category', cfg.data.source_category)
    if files.is_primary():
      print(f"[{i + 1}/{len(cells)}] {row} {source} -> {target}{fold}: "
            f"{outcome}{' (done before, skipped)' if skipped else ''}", file=sys.stderr)
    if all_folds:
      done = folds.setdefault((row, target), [])
      if done is None:
        continue
      if 'diverged' in res:
        folds[(row, target)] = None
      else:
        done.append(res)
        if len(done) < num_folds:
          continue
        from app import transfer  # pylint: disable=g-import-not-at-top
        res, name = transfer.merge_folds(done), f"{name.rpartition('__fold')[0]}__fold{{0..{num_folds - 1}}}"
    results.setdefault(row, {})[target] = tables.cell_record(res, name)
    tables.write_artifacts(cfg, workdir, kind, targets, results)
  tables.write_artifacts(cfg, workdir, kind, targets, results)
  if files.is_primary():
    print(f'sweep of {len(cells)} runs: {workdir}/table.md, table.json, table.png', file=sys.stderr)
  if diverged:
    raise NonFiniteError(f'{len(diverged)} of {len(cells)} sweep runs diverged ({", ".join(diverged)}; '
                         f'see their {DIVERGED}): their cells read "diverged"; lower their '
                         'learning rate or weight, delete those sub-workdirs and rerun')
  return 0


