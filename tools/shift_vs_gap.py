"""Can a pair's transfer gap be seen without the target's labels? Two label-free readings of
every pair of a transfer-gap matrix, against its gap (oracle − source-only):

  python -m tools.shift_vs_gap runs/matrix_tvsum_kfold5 [--json=shift.json]

feature shift   how well a linear classifier (L2 logistic regression on the pair's top
                principal components) tells the source's training segments from the
                target's unlabeled training segments, scored on videos it was not fit on
                (videos in up to 5 groups per side, each held out once): domain AUC, 0.5 =
                alike, 1 = apart. The data is what an adaptation method would see, loaded as
                the matrix's source model loaded it (its normalization, its fold); a k-fold
                matrix averages the folds.
seed agreement  how alike the source model's seeds order each target test video (Spearman,
                tools/seed_agreement.py), from the scores the matrix kept; no labels read.

Per reading, Spearman's correlation with the gap over all pairs and within targets (each
target's mean removed from both: does it tell which sources a target needs adaptation
from?), each with a 95% bootstrap interval over pairs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from app import experiment, transfer
from app.detector import recorded_config
from dlvhd_jax.errors import UserInputError
from tools import report
from tools.domain_bound import logistic_regression
from tools.head_probe import auc
from tools.seed_agreement import ranks, seed_agreement

COMPONENTS = 32
GROUPS = 5


def _cells(matrix_dir: str, category: str) -> list[str]:
  """The matrix's model folders of `category`: one, or one per fold."""
  one = os.path.join(matrix_dir, transfer.cell_name(category))
  if os.path.isdir(one):
    return [one]
  folds, k = [], 0
  while os.path.isdir(os.path.join(matrix_dir, transfer.cell_name(category, k))):
    folds.append(os.path.join(matrix_dir, transfer.cell_name(category, k)))
    k += 1
  if not folds:
    raise UserInputError(f'{matrix_dir} has no model of {category!r} '
                         f'({transfer.cell_name(category)}[__fold<k>]): pass a finished '
                         'configs/transfer_matrix.py sweep folder')
  return folds


def domain_auc(source: list[np.ndarray], target: list[np.ndarray], seed: int = 0) -> float:
  """Videos' features ([T_v, D] each) of two domains -> the held-out domain AUC of a
  logistic regression on their top principal components (NaN when a side has one video)."""
  groups = min(GROUPS, len(source), len(target))
  if groups < 2:
    return float('nan')
  x = np.concatenate(source + target).astype(np.float64)
  x -= x.mean(0)
  z = x @ np.linalg.svd(x, full_matrices=False)[2][:min(COMPONENTS, *x.shape)].T
  z /= z.std(0) + 1e-12
  y = np.r_[np.zeros(sum(map(len, source))), np.ones(sum(map(len, target)))]
  rng = np.random.RandomState(seed)
  group = np.concatenate([np.full(len(v), g) for side in (source, target)
                          for v, g in zip(side, rng.permutation(len(side)) % groups)])
  score = np.zeros(len(y))
  for g in range(groups):
    held = group == g
    w = logistic_regression(z[~held], y[~held])
    score[held] = z[held] @ w[:-1] + w[-1]
  return auc(score[y == 1], score[y == 0])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def correlation(x: np.ndarray, gap: np.ndarray, targets: np.ndarray, within: bool,
                num_samples: int = 2000, seed: int = 0) -> dict:
  """Spearman(x, gap) over the pairs (NaN pairs left out), with each target's mean removed
  from both when `within`; 95% percentile interval of a bootstrap over pairs."""
  keep = ~(np.isnan(x) | np.isnan(gap))
  x, gap, targets = x[keep], gap[keep], targets[keep]

  def rho(idx):
    a, b = x[idx], gap[idx]
    if within:
      a, b = a.copy(), b.copy()
      for t in np.unique(targets[idx]):
        m = targets[idx] == t
        a[m] -= a[m].mean()
        b[m] -= b[m].mean()
    return spearman(a, b) if np.ptp(a) > 0 and np.ptp(b) > 0 else float('nan')
  rng = np.random.RandomState(seed)
  boots = np.array([rho(rng.randint(0, len(x), len(x))) for _ in range(num_samples)])
  lo, hi = np.nanpercentile(boots, [2.5, 97.5])
  return {'rho': rho(np.arange(len(x))), 'lo': float(lo), 'hi': float(hi), 'pairs': int(len(x))}


def _features(videos) -> list[np.ndarray]:
  return [np.asarray(v.features, np.float64) for v in videos]


def pair_rows(matrix_dir: str, data_root: str = '') -> tuple[dict, list[dict]]:
  with open(os.path.join(matrix_dir, 'matrix.json')) as f:
    matrix = json.load(f)
  cats = matrix['categories']
  rows = []
  for c in cats:
    cells = _cells(matrix_dir, c)
    for t in cats:
      if t == c:
        continue
      aucs, agree = [], []
      for cell in cells:
        cfg = recorded_config(cell)
        if data_root:
          cfg.data.root = data_root
        data = experiment.load_data(cfg, cell, True, target_category=t)
        aucs.append(domain_auc(_features(data.source_train + data.source_val),
                               _features(data.target_train)))
        with np.load(os.path.join(cell, transfer.SCORES)) as z:
          agree += [seed_agreement(np.atleast_2d(z[k])) for k in z.files
                    if k.startswith(t + '/')]
      gap = matrix['map_gap'][c][t] or {}
      rows.append({'source': c, 'target': t, 'domain_auc': float(np.nanmean(aucs)),
                   'seed_agreement': float(np.nanmean(agree)) if agree else float('nan'),
                   'gap': gap.get('diff', float('nan')),
                   'significant': bool(gap) and (gap['lo'] > 0 or gap['hi'] < 0)})
  return matrix, rows


def summarize(rows: list[dict]) -> dict:
  gap = np.array([r['gap'] for r in rows], np.float64)
  targets = np.array([r['target'] for r in rows])
  return {name: {scope: correlation(np.array([r[name] for r in rows], np.float64), gap,
                                    targets, scope == 'within_targets')
                 for scope in ('all_pairs', 'within_targets')}
          for name in ('domain_auc', 'seed_agreement')}


def _signed(x: float, digits: int = 2) -> str:
  return f'{x:+.{digits}f}'.replace('-', '−')


def _mean(rows: list[dict], name: str) -> float:
  return float(np.nanmean([r[name] for r in rows])) if rows else float('nan')


def markdown(matrix: dict, rows: list[dict], summary: dict) -> str:
  sig = [r for r in rows if r['significant'] and r['gap'] > 0]
  rest = [r for r in rows if not (r['significant'] and r['gap'] > 0)]
  lines = [f"{matrix['dataset']}, features {matrix['features']}, split {matrix['split']}, "
           f"{len(rows)} pairs.", '',
           '| reading | pairs with a significant gap (mean) | other pairs (mean) | '
           'Spearman with the gap, all pairs | within targets |', '|---|---:|---:|---:|---:|']
  for name, label in (('domain_auc', 'feature shift (domain AUC)'),
                      ('seed_agreement', "source seeds' agreement")):
    cols = [f'{_mean(sig, name):.3f} ({len(sig)})', f'{_mean(rest, name):.3f} ({len(rest)})']
    for scope in ('all_pairs', 'within_targets'):
      c = summary[name][scope]
      cols.append(f"{_signed(c['rho'])} [{_signed(c['lo'])}, {_signed(c['hi'])}]")
    lines.append(f"| {label} | {' | '.join(cols)} |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('matrix', help='a finished configs/transfer_matrix.py sweep folder')
  p.add_argument('--data_root', default='', help='where the data is now, if it moved')
  p.add_argument('--json', default='', help='also write the rows and correlations here')
  args = p.parse_args(argv)
  try:
    if not os.path.isfile(os.path.join(args.matrix, 'matrix.json')):
      raise UserInputError(f'{args.matrix}/matrix.json not found: pass a finished '
                           'configs/transfer_matrix.py sweep folder')
    matrix, rows = pair_rows(args.matrix, args.data_root)
  except UserInputError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  summary = summarize(rows)
  report(markdown(matrix, rows, summary), {'rows': rows, 'correlations': summary}, args.json)
  return 0


if __name__ == '__main__':
  sys.exit(main())
