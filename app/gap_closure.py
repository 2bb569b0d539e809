"""How much of a transfer gap a method closes: a method's runs on a (source, target) pair beside
a transfer matrix's source-only and oracle models of that pair.

The rows tools/gap_closure.py prints and configs/gap_pairs.py writes (app/gap_pairs.py).
Runs pair with the matrix by test video and seed value (replica r of a run is seed
--config.seed + r), runs of one pair over disjoint seeds merge, and under data.split=kfold
one run per fold pairs with that fold's models and the folds merge over every target video.
Per row: the gap (oracle − source-only), the method's gain over source-only (paired
bootstrap over seeds × test videos) and the share of the gap it closes
(dlvhd_jax.stats.gap_closure), each with its 95% interval; `pooled` puts several pairs'
videos side by side as one target. Bad input raises UserInputError, one line.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from app import tables, transfer
from dlvhd_jax import stats
from dlvhd_jax.errors import UserInputError

# The tables' names (the ablations' included), shorter for the full model and source-only.
LABELS = {**tables.LABELS, 'dlvhd': 'DL-VHD', 'sl': 'source-only'}


def read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def per_video(summary: dict, vids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
  """A results summary -> (video ids, [seeds, videos] per-video APs; NaN for None)."""
  seeds = summary['per_seed']
  vids = sorted(seeds[0]['per_video_ap']) if vids is None else vids
  return vids, np.array([[np.nan if p['per_video_ap'].get(v) is None else p['per_video_ap'][v]
                          for v in vids] for p in seeds], np.float64)


def matrix_pair(matrix_dir: str, source: str, target: str,
                fold: int | None = None) -> tuple[dict, dict]:
  """-> (source-only summary, oracle summary) of a pair from a transfer-matrix folder (of
  fold `fold`'s models in a k-fold matrix)."""
  src = os.path.join(matrix_dir, transfer.cell_name(source, fold), 'transfer.json')
  orc = os.path.join(matrix_dir, transfer.cell_name(target, fold), 'results.json')
  for p in (src, orc):
    if not os.path.isfile(p):
      raise UserInputError(f'{p} not found: run the transfer matrix over {source} and {target}')
  evaluated = read_json(src)
  if target not in evaluated:
    raise UserInputError(f'{src} has no evaluation on {target}')
  return evaluated[target], read_json(orc)


def variant(run_dir: str, target: str) -> str:
  """The overrides a sweep cell ran its method with, from its folder name (app/sweep.py names
  a cell '<method>+<key>=<value>,...__<target>'): 'dlvhd+sampling.x=-1.0__PK' ->
  'sampling.x=-1.0'; '' for a plain method or a run outside a sweep."""
  # An all-folds sweep's fold cell (<cell>__fold<k>) ran the overrides of <cell>.
  name = re.sub(r'__fold\d+$', '', os.path.basename(os.path.normpath(run_dir)))
  suffix = f'__{target}'
  return name[:-len(suffix)].partition('+')[2] if name.endswith(suffix) else ''


def label(method: str, overrides: str) -> str:
  name = LABELS.get(method, method)
  return f'{name} ({overrides})' if overrides else name


def find_runs(paths) -> list[str]:
  out = []
  for p in paths:
    if os.path.isfile(os.path.join(p, 'results.json')):
      out.append(p)
    elif os.path.isdir(p):
      out += sorted(os.path.join(p, d) for d in os.listdir(p)
                    if os.path.isfile(os.path.join(p, d, 'results.json')))
  if not out:
    raise UserInputError(f'no results.json in {paths}')
  return out


def _last_config(run_dir: str) -> dict | None:
  """The config of a run folder's last launch (its config.json), None outside a run."""
  path = os.path.join(run_dir, 'config.json')
  return read_json(path)['history'][-1]['config'] if os.path.isfile(path) else None


def run_fold(run_dir: str) -> tuple[int, int] | None:
  """-> (fold, num_folds) a run trained and tested under data.split=kfold (its config.json),
  else None."""
  data = (_last_config(run_dir) or {}).get('data', {})
  return (int(data['fold']), int(data['num_folds'])) if data.get('split') == 'kfold' else None


def scored_variant(run_dir: str, target: str) -> str:
  """variant() plus how the last --mode=eval fused the heads when not the paper's way: the
  same checkpoints rescored with eval.head_fusion=logit are a row of their own."""
  fusion = (_last_config(run_dir) or {}).get('eval', {}).get('head_fusion', 'score')
  extra = '' if fusion == 'score' else f'eval.head_fusion={fusion}'
  return ', '.join(filter(None, (variant(run_dir, target), extra)))


def fold_groups(run_dirs: list[str]) -> list[list[str]]:
  """Finished runs -> groups to read as one row each: a run alone, or the k fold runs of one
  method (and variant) on one pair (data.split=kfold, one run per --config.data.fold), in
  fold order; folds 0..k-1 must all be there."""
  out, kfold = [], {}
  for run in run_dirs:
    fold = run_fold(run)
    if fold is None:
      out.append([run])
      continue
    res = read_json(os.path.join(run, 'results.json'))
    key = (res['method'], scored_variant(run, res['target_category']),
           res['source_category'], res['target_category'])
    kfold.setdefault(key, []).append((fold, run))
  for (_, _, src, tgt), members in kfold.items():
    members.sort()
    folds, num = [f for (f, _), _ in members], members[0][0][1]
    twice = sorted({f for f in folds if folds.count(f) > 1})
    if twice:
      raise UserInputError(f'{src} -> {tgt} has more than one run of fold {twice[0]} (runs '
                       'over disjoint seeds merge in tools.gap_closure only): pass one run per '
                       'fold, each with every seed')
    if folds != list(range(num)):
      raise UserInputError(f'the k-fold runs of {src} -> {tgt} cover folds {folds}: pass '
                       f'one run per fold 0..{num - 1} together')
    out.append([r for _, r in members])
  return out


def _cell(matrix_dir: str, key: tuple, by_fold: dict) -> tuple:
  """One method on one pair: {fold or None: [(run folder, results)]} -> (label, the method's,
  source-only and oracle summaries over the same seeds and test videos). Runs of one fold
  over disjoint seeds merge into one (transfer.merge_seeds); the matrix's cells are taken at
  the method's seeds, so a method run over seeds 0..2 pairs with a 5-seed matrix; k folds
  merge over every fold's test videos, as the matrix merges them."""
  src, tgt = key[2], key[3]
  folds = list(by_fold)
  if folds != [None]:
    if None in folds:
      raise UserInputError(f'{src} -> {tgt} has runs with and without data.split=kfold: '
                       'pass the runs of one split')
    folds.sort()
    covered, num = [f for f, _ in folds], folds[0][1]
    if covered != list(range(num)):
      runs = ', '.join(r for f in folds for r, _ in by_fold[f])
      raise UserInputError(f'the k-fold runs of {src} -> {tgt} ({runs}) cover folds '
                       f'{covered}: run one per fold 0..{num - 1} (--config.data.fold=k)')
  parts = []
  for fold in folds:
    members = by_fold[fold]
    names = ', '.join(r for r, _ in members)
    try:
      res = transfer.merge_seeds([r for _, r in members]) if len(members) > 1 else members[0][1]
      seeds = [p['seed'] for p in res['per_seed']]
      so, orc = matrix_pair(matrix_dir, src, tgt, None if fold is None else fold[0])
      parts.append((res, transfer.pick_seeds(so, seeds, f"the matrix's source-only {src} -> {tgt}"),
                    transfer.pick_seeds(orc, seeds, f"the matrix's oracle of {tgt}")))
    except UserInputError as e:
      raise UserInputError(f'{names}: {e}') from None
  runs = [r for f in folds for r, _ in by_fold[f]]
  if folds == [None]:
    return (runs[0] if len(runs) == 1 else f'{os.path.commonpath(runs)} ({len(runs)} runs)',
            *parts[0])
  label = f'{os.path.commonpath(runs)} ({len(folds)} folds)'
  try:
    return (label, *(transfer.merge_folds([p[i] for p in parts]) for i in range(3)))
  except UserInputError as e:
    raise UserInputError(f'{label}: {e}') from None


def rows(matrix_dir: str, run_dirs) -> list[dict]:
  groups: dict = {}
  for run in find_runs(run_dirs):
    res = read_json(os.path.join(run, 'results.json'))
    src, tgt = res['source_category'], res['target_category']
    key = (res['method'], scored_variant(run, tgt), src, tgt)
    groups.setdefault(key, {}).setdefault(run_fold(run), []).append((run, res))
  out = []
  for key, by_fold in groups.items():
    run, res, so, orc = _cell(matrix_dir, key, by_fold)
    method, var, src, tgt = key
    vids, m = per_video(res)
    for other, name in ((so, 'source-only'), (orc, 'oracle')):
      if sorted(other['per_seed'][0]['per_video_ap']) != vids:
        raise UserInputError(f'{run} and the matrix\'s {name} of {src} -> {tgt} differ in '
                         'test videos')
    s, o = per_video(so, vids)[1], per_video(orc, vids)[1]
    out.append({'run': run, 'method': method, 'variant': var, 'source': src, 'target': tgt,
                'source_only': float(np.nanmean(s.mean(0))), 'oracle': float(np.nanmean(o.mean(0))),
                'map': res['map'], 'map_ci95': res.get('map_ci95'),
                'gap': stats.paired_bootstrap([(o, s)]), 'gain': stats.paired_bootstrap([(m, s)]),
                'closure': stats.gap_closure(m, s, o),
                'per_video': {'videos': vids, 'method': m.tolist(), 'source_only': s.tolist(),
                              'oracle': o.tolist()}})
  return out


def pooled(table: list[dict]) -> list[dict]:
  """One row per (method, variant) over the pairs it ran on (two or more): each pair's
  [seeds, videos] APs side by side as [seeds, pairs x videos], so a target in several pairs
  enters once per pair, and the statistics are those of one pooled target. Seeds pair by
  index across pairs (the same seed list per run); differing seed counts are refused. The
  pairs are put in (source, target) order, so the bootstrap's intervals do not depend on
  the order the runs were named in."""
  groups: dict = {}
  for r in sorted(table, key=lambda r: (r['source'], r['target'])):
    groups.setdefault((r['method'], r['variant']), []).append(r)
  out = []
  for (method, var), members in groups.items():
    if len(members) < 2:
      continue
    seeds = {len(r['per_video']['method']) for r in members}
    if len(seeds) != 1:
      raise UserInputError(f'cannot pool {label(method, var)}: its pairs ran '
                       f'{sorted(seeds)} seeds; rerun them with one --config.num_seeds')
    m, s, o = (np.concatenate([np.array(r['per_video'][k], np.float64) for r in members], axis=1)
               for k in ('method', 'source_only', 'oracle'))
    pairs = [f"{r['source']} → {r['target']}" for r in members]
    per_seed = np.nanmean(m, axis=1)
    out.append({'run': None, 'method': method, 'variant': var, 'source': 'pooled',
                'target': f'{len(members)} pairs', 'pairs': pairs,
                'source_only': float(np.nanmean(s)), 'oracle': float(np.nanmean(o)),
                'map': float(per_seed.mean()), 'map_ci95': stats.mean_ci(per_seed)['ci95'],
                'gap': stats.paired_bootstrap([(o, s)]), 'gain': stats.paired_bootstrap([(m, s)]),
                'closure': stats.gap_closure(m, s, o)})
  return out


def to_markdown(table: list[dict]) -> str:
  f = lambda d: f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"  # noqa: E731
  lines = ['| pair | oracle − source-only | method | mAP | method − source-only | share of the gap closed |',
           '|---|---:|---|---:|---:|---:|']
  for r in sorted(table, key=lambda r: (-r['gap']['diff'], r['method'], r['variant'])):
    c = r['closure']
    share = f"{c['share']:+.0%} [{c['lo']:+.0%}, {c['hi']:+.0%}]".replace('inf%', 'inf')
    ci = f" ± {r['map_ci95']:.3f}" if r['map_ci95'] is not None else ''
    pair = (f"pooled: {', '.join(r['pairs'])}" if r['source'] == 'pooled'
            else f"{r['source']} → {r['target']}")
    lines.append(f"| {pair} | {f(r['gap'])} | "
                 f"{label(r['method'], r['variant'])} | {r['map']:.3f}{ci} | {f(r['gain'])} | {share} |")
  return '\n'.join(lines)
