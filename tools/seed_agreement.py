"""How much a run's seeds agree on the order of each test video's segments: a label-free reading.

  python -m tools.seed_agreement runs/gap_gymnastics/dlvhd__surfing [more runs or sweep folders]

Choosing an adaptation's recipe (say the heads' fusion) on source validation scores the
source's highlights, not the target's; a criterion that sees the target without its labels
is what a selection would need. One candidate: if a recipe's target ranking carries signal,
independently seeded models should agree on it; noise does not replicate. Per run, from its
test_scores.npz ([replicas, T] per test video) and nothing else: per test video the mean
Spearman rank correlation over every pair of seeds (ties at mean rank; a seed that scores
all of a video's segments alike is left out of that video's pairs), then the mean over
videos with a 95% t interval over videos. A run with config.vary has one row per value (its
seeds only); the fold runs of a k-fold pair (data.split=kfold) are one row over all their
videos.

The mAP column (its seeds' mean test mAP from results.json, when there) reads the test labels
and is there only to check the criterion against; the agreement never sees them.
Prints a markdown table; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import sys

import numpy as np

from app.detector import recorded_config
from app.gap_closure import find_runs, fold_groups, per_video, read_json
from dlvhd_jax import hparams, replica_axis, stats
from dlvhd_jax.errors import UserInputError
from tools import report


def ranks(x: np.ndarray) -> np.ndarray:
  """[T] -> 1-based ranks, tied values sharing the mean of their positions."""
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def seed_agreement(scores: np.ndarray) -> float:
  """[seeds, T] scores of one video -> mean pairwise Spearman correlation of the seeds; NaN
  when fewer than two seeds vary over the video."""
  varying = [ranks(s) for s in scores if np.ptp(s) > 0]
  rhos = [np.corrcoef(a, b)[0, 1] for a, b in itertools.combinations(varying, 2)]
  return float(np.mean(rhos)) if rhos else float('nan')


def _scores(run_dir: str):
  """A finished run -> (config, {video: [replicas, T] scores}, results.json or {})."""
  path = os.path.join(run_dir, 'test_scores.npz')
  if not os.path.isfile(path):
    raise UserInputError(f'{path} not found: pass the folder of a finished run (launch.py '
                         '--mode=train or a sweep cell)')
  cfg = recorded_config(run_dir)
  with np.load(path) as z:
    videos = {k: np.asarray(z[k], np.float64) for k in z.files}
  r = replica_axis.num_replicas(cfg)
  if any(v.ndim != 2 or v.shape[0] != r for v in videos.values()):
    raise UserInputError(f'{path}: expected [replicas={r}, T] scores per video; was it written '
                         'by this run?')
  if replica_axis.num_seeds(cfg) < 2:
    raise UserInputError(f'{run_dir}: one seed per value; agreement needs a run with '
                         '--config.num_seeds >= 2')
  res = os.path.join(run_dir, 'results.json')
  return cfg, videos, (read_json(res) if os.path.isfile(res) else {})


def _test_map(summaries: list[dict]) -> float | None:
  """The seeds' mean test mAP over every video of the (fold) summaries; None without one."""
  if not summaries or any('per_seed' not in s for s in summaries):
    return None
  aps = np.concatenate([per_video(s)[1] for s in summaries], axis=1)
  return float(np.mean(np.nanmean(aps, axis=1)))


def group_rows(group: list[str]) -> list[dict]:
  """One run, or the fold runs of one k-fold pair (their test videos pooled) -> one row per
  value of config.vary: the per-video agreements' mean and t interval over videos, and the
  test mAP results.json reports (None when absent)."""
  runs = [_scores(r) for r in group]
  cfg = runs[0][0]
  label = os.path.relpath(group[0]) if len(group) == 1 else (
      re.sub(r'__fold\d+$', '', os.path.relpath(group[0])) + f' ({len(group)} folds)')
  rows = []
  for value, g in zip(hparams.values(cfg), replica_axis.value_groups(cfg)):
    agree = np.array([seed_agreement(s[g]) for _, videos, _ in runs for s in videos.values()])
    ci = stats.mean_ci(agree[np.isfinite(agree)])
    picked = [res if value is None else next(
        (p for p in res.get('per_value', []) if p['value'] == value), {}) for _, _, res in runs]
    rows.append({'run': label if value is None else f'{label} ({hparams.key(cfg)}={value:g})',
                 'agreement': ci['mean'], 'ci95': ci['ci95'], 'videos': ci['n'],
                 'seeds': len(g), 'test_map': _test_map(picked)})
  return rows


def table(rows: list[dict]) -> str:
  out = ['| run | seeds | videos | seed agreement (Spearman) | test mAP (labels, for checking) |',
         '|---|---:|---:|---:|---:|']
  for r in rows:
    agree = 'n/a' if r['agreement'] is None else (
        f"{r['agreement']:.3f}" + (f" ± {r['ci95']:.3f}" if r['ci95'] is not None else ''))
    test_map = '–' if r['test_map'] is None else f"{r['test_map']:.3f}"
    out.append(f"| {r['run']} | {r['seeds']} | {r['videos']} | {agree} | {test_map} |")
  return '\n'.join(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('runs', nargs='+', help='finished runs or sweep folders')
  p.add_argument('--json', default='', help='also write the numbers here')
  a = p.parse_args(argv)
  try:
    rows = [r for g in fold_groups(find_runs(a.runs)) for r in group_rows(g)]
  except UserInputError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  report(table(rows), rows, a.json)
  return 0


if __name__ == '__main__':
  sys.exit(main())
