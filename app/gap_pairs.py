"""`--mode=sweep` with `sweep.kind='gap_pairs'`: adaptation methods where a gap exists.

Reads a transfer-matrix sweep folder (`sweep.matrix`, written by configs/transfer_matrix.py),
takes its pairs whose target-oracle is significantly above source-only, largest gap first
and at most `sweep.max_pairs` of them (or the pairs `sweep.pairs` names, 'S->T'), and runs
every method spec of `sweep.methods` on each pair: one full run per (pair, method), and per
fold under data.split=kfold, in <workdir>/<source>/<spec>__<target>[__fold<k>]/. Finished
runs are read back, so an interrupted sweep resumes where it stopped, as a table's sweep.

After every pair, <workdir>/gap_closure.md and gap_closure.json hold, per pair and method,
the method's gain over the matrix's source-only and the share of the gap it closes, each
with the 95% interval of a paired bootstrap over seeds x test videos, and per method one
row pooled over its pairs (app/gap_closure.py; tools/gap_closure.py prints the same rows
from the same folders).

The runs are paired with the matrix's models video by video and seed by seed, so they must
see the matrix's data (every results-changing data.* key, the data root) and seeds it has:
both are checked before anything trains, with a one-line error naming the key.
"""
from __future__ import annotations

import json
import os
import sys

from app import experiment, gap_closure, sweep, transfer
from dlvhd_jax import checkpoint, files
from dlvhd_jax.errors import NonFiniteError, UserInputError

ARTIFACT = 'gap_closure'
# Data keys a pair's run sets for itself; every other results-changing data.* key must be the
# matrix's.
OWN_KEYS = ('data.source_category', 'data.target_category', 'data.fold')


def read_matrix(matrix_dir: str) -> dict:
  path = os.path.join(matrix_dir, 'matrix.json')
  if not matrix_dir or not os.path.isfile(path):
    raise UserInputError(f'config.sweep.matrix={matrix_dir!r} holds no matrix.json: name a '
                         'finished configs/transfer_matrix.py sweep folder')
  return gap_closure.read_json(path)


def parse_pair(text: str, categories) -> tuple[str, str]:
  """'S->T' -> (S, T), both categories of the matrix and distinct."""
  src, sep, tgt = str(text).partition('->')
  src, tgt = src.strip(), tgt.strip()
  if not sep or not src or not tgt or src == tgt:
    raise UserInputError(f"config.sweep.pairs entry {text!r} is not 'source->target' of two "
                         "categories, e.g. \"('VU->PK',)\"")
  for c in (src, tgt):
    if c not in categories:
      raise UserInputError(f'config.sweep.pairs entry {text!r} names {c!r}, which is not a '
                           f'category of the matrix: {list(categories)}')
  return src, tgt


def select_pairs(matrix: dict, named=(), max_pairs: int = 10) -> list[tuple[str, str, dict]]:
  """-> [(source, target, the matrix's gap record)]: the named pairs in their order, or the
  pairs with a significant positive gap, largest first, at most `max_pairs`."""
  gaps = matrix['map_gap']
  if named:
    out = []
    for text in named:
      s, t = parse_pair(text, matrix['categories'])
      if gaps.get(s, {}).get(t) is None:
        raise UserInputError(f'config.sweep.pairs entry {text!r}: the matrix has no gap for it '
                             '(one of its models has not finished): finish the matrix first')
      out.append((s, t, gaps[s][t]))
    if len(set((s, t) for s, t, _ in out)) != len(out):
      raise UserInputError(f'config.sweep.pairs={tuple(named)!r} names a pair twice')
    return out
  if int(max_pairs) < 1:
    raise UserInputError(f'config.sweep.max_pairs={max_pairs}: must be at least 1')
  above, _ = transfer.significant_by_sign(matrix)
  above = above[:int(max_pairs)]
  return [(g['source'], g['target'], gaps[g['source']][g['target']]) for g in above]


def cells(cfg, pairs) -> list[tuple]:
  """-> [(row key (the spec), target, sub-workdir name, method, overrides)] for every pair,
  method spec and fold: the layout app/sweep.py runs."""
  folds = transfer._folds(cfg)  # pylint: disable=protected-access
  out = []
  for src, tgt, _ in pairs:
    for spec in cfg.sweep.methods:
      method, ov = sweep.resolve_spec(spec, tgt)
      if 'data.source_category' in ov:
        raise UserInputError(f'config.sweep.methods entry {spec!r} sets its own source (an '
                             "oracle): the matrix's diagonal is the oracle already; drop it")
      name = os.path.join(sweep.slug(src), f'{sweep.slug(spec)}__{sweep.slug(tgt)}')
      for f in folds:
        out.append((spec, tgt, name + ('' if f is None else f'__fold{f}'), method,
                    {**ov, 'data.source_category': src, **({} if f is None else {'data.fold': f})}))
  return out


def _matrix_config(matrix_dir: str, category: str, fold) -> dict:
  cell = os.path.join(matrix_dir, transfer.cell_name(category, fold))
  if not os.path.isfile(os.path.join(cell, 'results.json')):
    raise UserInputError(f'{cell} has no results.json: the matrix has no finished model of '
                         f"{category}{'' if fold is None else f' in fold {fold}'}: finish it first")
  saved = gap_closure.read_json(os.path.join(cell, 'config.json'))
  return checkpoint.flatten_config(saved['history'][-1]['config'])


def _matrix_seeds(matrix_dir: str, category: str, fold) -> list[int]:
  cell = os.path.join(matrix_dir, transfer.cell_name(category, fold))
  res = gap_closure.read_json(os.path.join(cell, 'results.json'))
  return [int(p['seed']) for p in res['per_seed']]


def matrix_data_root(matrix_dir: str, matrix: dict, data_root: str) -> str:
  """The data root the pairs run on: config.data.root, or the matrix's when it is empty; a
  root other than the matrix's is refused (other videos would be paired)."""
  first = matrix['categories'][0]
  fold = 0 if str(matrix.get('split', '')).startswith('kfold') else None
  theirs = _matrix_config(matrix_dir, first, fold).get('data.root', '')
  if not data_root:
    return theirs
  if os.path.realpath(data_root) != os.path.realpath(theirs):
    raise UserInputError(f'config.data.root={data_root!r} but the matrix {matrix_dir} ran on '
                         f'{theirs!r}: pass that root, or leave data.root empty')
  return data_root


def check_against_matrix(cfg, matrix_dir: str, matrix: dict, plan, data_root: str) -> None:
  """The matrix's dataset and split are the runs'; every run's data.* keys (those that change
  results) equal those of the matrix's model of its target in the same fold, and its seeds
  are among that model's."""
  ours = {'dataset': cfg.data.get('name', 'youtube_highlights'),
          'split': transfer.split_label(cfg)}
  for fact, key in (('dataset', 'data.name'), ('split', 'data.split')):
    if matrix.get(fact) != ours[fact]:
      raise UserInputError(f'{key}: the runs would use {fact} {ours[fact]!r} but the matrix '
                           f'{matrix_dir} ran {matrix.get(fact)!r}: pass the matrix\'s '
                           f'(--config.{key}=..., and data.num_folds for kfold)')
  seeds = list(range(int(cfg.seed), int(cfg.seed) + int(cfg.num_seeds)))
  seen = set()
  for _, tgt, name, method, ov in plan:
    fold = ov.get('data.fold')
    if (tgt, fold) in seen:
      continue
    seen.add((tgt, fold))
    theirs = {k: v for k, v in _matrix_config(matrix_dir, tgt, fold).items()
              if k.startswith('data.') and k not in OWN_KEYS}
    sub = sweep.cell_config(cfg, tgt, method, ov, data_root)
    ours = checkpoint.config_fingerprint(json.loads(sub.to_json_best_effort()))
    ours = {k: v for k, v in ours.items() if k.startswith('data.') and k not in OWN_KEYS}
    diff = checkpoint.first_difference({k: v for k, v in theirs.items() if k in ours}, ours)
    if diff:
      key, was, now = diff
      raise UserInputError(f'{name}: {key}={now} but the matrix {matrix_dir} ran with {key}={was}:'
                           f' pass --config.{key}={was} so that the runs pair with its models')
    have = _matrix_seeds(matrix_dir, tgt, fold)
    missing = [s for s in seeds if s not in have]
    if missing:
      raise UserInputError(f'config.seed={cfg.seed}, config.num_seeds={cfg.num_seeds} run seed '
                           f'{missing[0]}, which the matrix {matrix_dir} did not (its seeds: '
                           f'{have}): run a subset of those')


def write_closure(workdir: str, matrix_dir: str, run_dirs: list[str]) -> list[dict]:
  """app/gap_closure's rows (and pooled rows) of the finished runs -> gap_closure.md/.json."""
  table = gap_closure.rows(matrix_dir, run_dirs)
  table += gap_closure.pooled(table)
  if files.is_primary():
    head = (f'# Gap closure on the gap pairs of {matrix_dir}\n\nShare of the gap = (method − '
            'source-only) / (oracle − source-only); source-only and oracle are the matrix\'s '
            'models on the same test videos and seeds; 95% intervals of a paired bootstrap over '
            'seeds × test videos; pooled rows put every pair\'s videos side by side.\n\n')
    files.write_atomic(os.path.join(workdir, ARTIFACT + '.md'),
                       head + gap_closure.to_markdown(table) + '\n')
    files.write_json(os.path.join(workdir, ARTIFACT + '.json'), table)
  return table


def run(cfg, workdir: str, progress: bool = True) -> int:
  s = cfg.sweep
  matrix_dir = str(s.get('matrix', '') or '')
  matrix = read_matrix(matrix_dir)
  pairs = select_pairs(matrix, tuple(s.get('pairs', ()) or ()), s.get('max_pairs', 10))
  experiment.check_writable(workdir)
  if not pairs:
    message = (f'{matrix_dir}: no pair has a significant gap (oracle above source-only): '
               'nothing for an adaptation method to close; the matrix is the evidence')
    if files.is_primary():
      os.makedirs(workdir, exist_ok=True)
      files.write_atomic(os.path.join(workdir, ARTIFACT + '.md'), message + '\n')
      files.write_json(os.path.join(workdir, ARTIFACT + '.json'), [])
      print(message, file=sys.stderr)
    return 0
  data_root = matrix_data_root(matrix_dir, matrix, cfg.data.root)
  plan = cells(cfg, pairs)
  sweep.distinct_folders(plan)
  sweep.check_categories(cfg, plan, data_root)
  check_against_matrix(cfg, matrix_dir, matrix, plan, data_root)
  os.makedirs(workdir, exist_ok=True)
  sweep._check_stale(cfg, workdir, plan, data_root)  # pylint: disable=protected-access
  finished, diverged = [], []
  for i, (spec, tgt, name, method, ov) in enumerate(plan):
    cell = os.path.join(workdir, name)
    res, skipped = sweep._run_cell(cfg, cell, data_root, tgt, method, ov, progress)  # pylint: disable=protected-access
    src, fold = ov['data.source_category'], ov.get('data.fold')
    where = f'{spec} {src} -> {tgt}' + ('' if fold is None else f' (fold {fold})')
    if res is None:
      outcome = 'not run yet (sweep.train_missing=False)'
    elif 'diverged' in res:
      outcome = 'diverged: ' + res['diverged']
      diverged.append(name)
    else:
      outcome = f"mAP {res['map']:.4f}" + (' (done before, skipped)' if skipped else '')
      finished.append(cell)
    if files.is_primary():
      print(f'[{i + 1}/{len(plan)}] {where}: {outcome}', file=sys.stderr)
    if i + 1 == len(plan) or _pair(plan[i + 1]) != (src, tgt):
      # The pairs every run of which finished (all folds of every method) enter the table.
      _closure_of_complete(workdir, matrix_dir, plan, finished)
  if files.is_primary():
    print(f'gap pairs of {matrix_dir}: {len(pairs)} pair(s) x {len(s.methods)} method(s), '
          f'{len(plan)} runs: {workdir}/{ARTIFACT}.md, {ARTIFACT}.json', file=sys.stderr)
  if diverged:
    raise NonFiniteError(f'{len(diverged)} of {len(plan)} gap-pair runs diverged '
                         f'({", ".join(diverged)}; see their {sweep.DIVERGED}): lower their '
                         'learning rate or weight, delete those sub-workdirs and rerun')
  return 0


def _pair(cell) -> tuple[str, str]:
  return cell[4]['data.source_category'], cell[1]


def _closure_of_complete(workdir, matrix_dir, plan, finished) -> None:
  """Writes the gap-closure table of the (pair, method)s all of whose fold runs finished."""
  done = set(finished)
  groups: dict = {}
  for spec, tgt, name, _, ov in plan:
    key = (spec, ov['data.source_category'], tgt)
    groups.setdefault(key, []).append(os.path.join(workdir, name))
  runs = [r for members in groups.values() if all(m in done for m in members) for r in members]
  if runs:
    write_closure(workdir, matrix_dir, runs)
