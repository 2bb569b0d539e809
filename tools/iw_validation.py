"""Importance-weighted source validation: a label-free criterion that looks at the target.

  python -m tools.iw_validation runs/a runs/b ... [--json=iw.json]

Source validation scores the source's highlights, so it cannot see whether an adaptation
helps the target. The textbook fix for choosing a model under domain shift without target
labels is importance weighting (Sugiyama et al.'s importance-weighted cross-validation; You
et al.'s Deep Embedded Validation weighs the same way): weight each source-validation segment
by the density ratio w(x) = p_target(x) / p_source(x), so the validation score estimates the
score on the target's distribution of inputs. It is exact when only the inputs shift and a
segment's highlight label depends on the segment alone, the same in both categories; across
categories the labels' meaning shifts too, which this tool measures.

Per run (finished, trained with source-validation videos: data.val_fraction > 0), with the
run's own data (its fold and normalization) and checkpoint (the selected parameters, its
own head fusion):
  the density ratio   a domain classifier, L2 logistic regression on the top 32 principal
                      components of the source's training segments (0) against the target's
                      unlabeled training segments (1), as tools/shift_vs_gap; w = P(1|x) /
                      P(0|x) · n_source / n_target on every source-validation segment
  source-val mAP      the run's own selection criterion (its metric, per seed, then the mean)
  AP, weights 1       per validation video the AP of its highlights (labels > 0; TVSum: most
                      annotators above their median, as tools/head_probe), mean over videos
  IW AP               the same with every segment weighted by w (weighted precision and
                      recall, as sklearn's sample_weight)
  ESS                 the weights' effective sample size (sum w)^2 / sum w^2 over all
                      validation segments, as a share of them: near 0 = a few segments decide
  test mAP            from results.json, only to check the criterion against (target labels;
                      left out with --target, where the run's own target is another)
The fold runs of a k-fold pair (data.split=kfold, one run per --config.data.fold) are one row:
their validation videos pooled per seed, each scored by its fold's model and weights, the
ESS averaged over the folds.
Nothing but the test mAP column reads a target label. Prints a markdown table (mean ± 95% t
interval over seeds); --json writes the numbers.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from app import experiment, transfer
from app.detector import recorded_config
from app.gap_closure import find_runs, fold_groups, label, read_json, scored_variant
from dlvhd_jax import evaluation, hparams, stats
from dlvhd_jax.errors import UserInputError
from tools import report
from tools.domain_bound import logistic_regression
from tools.head_probe import highlights

COMPONENTS = 32


def weighted_average_precision(labels: np.ndarray, scores: np.ndarray,
                               weights: np.ndarray) -> float:
  """AP with per-segment weights (sklearn's average_precision_score with sample_weight):
  thresholds at distinct scores, precision = weighted positives above / weight above, recall
  = weighted positives above / all weighted positives. NaN when no positive has weight."""
  y = np.asarray(labels) > 0
  w = np.asarray(weights, np.float64)
  if not (w * y).sum() > 0:
    return float('nan')
  order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
  s, y, w = np.asarray(scores, np.float64)[order], y[order], w[order]
  last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
  tp, seen = np.cumsum(w * y)[last], np.cumsum(w)[last]
  precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
  recall = tp / tp[-1]
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def density_ratio(source: np.ndarray, target: np.ndarray, query: np.ndarray) -> np.ndarray:
  """Segments [S, D] of the source and [T, D] of the target -> p_target / p_source at each
  query segment [Q, D], from a logistic domain classifier on their top principal components."""
  x = np.concatenate([source, target]).astype(np.float64)
  mean = x.mean(0)
  basis = np.linalg.svd(x - mean, full_matrices=False)[2][:min(COMPONENTS, *x.shape)].T
  z = (x - mean) @ basis
  scale = z.std(0) + 1e-12
  w = logistic_regression(z / scale, np.r_[np.zeros(len(source)), np.ones(len(target))])
  logit = ((np.asarray(query, np.float64) - mean) @ basis / scale) @ w[:-1] + w[-1]
  return np.exp(np.clip(logit, -30.0, 30.0)) * len(source) / len(target)


def _part(run_dir: str, target: str) -> dict:
  """One run's raw material: per seed, per source-validation video, the run's own AP and the
  highlight AP with weights 1 and with the density ratio; the weights; its results.json."""
  cfg = recorded_config(run_dir)
  if hparams.values(cfg) != (None,):
    raise UserInputError(f'{run_dir} trained several values of {hparams.key(cfg)}: pass a run '
                         'of one value')
  run = transfer.restore(cfg, run_dir)
  data = run.data
  if not data.source_val:
    raise UserInputError(f'{run_dir} has no source-validation videos: pass a run trained with '
                         '--config.data.val_fraction > 0')
  target = target or cfg.data.target_category
  if not data.target_train or target != cfg.data.target_category:
    # Methods that never see the target (source-only) load no target videos: load them here.
    data = experiment.load_data(cfg, run_dir, True, target_category=target)
  feats = lambda videos: np.concatenate([np.asarray(v.features, np.float64) for v in videos])  # noqa: E731
  val = data.source_val
  weights = density_ratio(feats(data.source_train), feats(data.target_train), feats(val))
  per_video_w = np.split(weights, np.cumsum([len(v.features) for v in val])[:-1])
  metric = experiment.metric_of(cfg)
  labels = experiment.eval_labels(val, metric)
  hl = [highlights(v, metric) for v in val]
  out = {'cfg': cfg, 'target': target, 'weights': weights, 'val_map': [], 'ap_plain': [],
         'ap_iw': [], 'results': read_json(os.path.join(run_dir, 'results.json'))}
  for sc in experiment.split_replicas(cfg, run.scores(cfg, val, tuple(run.objective.eval_heads))):
    own = evaluation.summarize([v.vid for v in val], labels, sc, metric)['per_video_ap']
    out['val_map'].append([np.nan if own[v.vid] is None else own[v.vid] for v in val])
    out['ap_plain'].append([weighted_average_precision(y, s, np.ones(len(s)))
                            for y, s in zip(hl, sc)])
    out['ap_iw'].append([weighted_average_precision(y, s, w)
                         for y, s, w in zip(hl, sc, per_video_w)])
  return out


def group_row(runs: list[str], target: str = '') -> dict:
  """One row: a run, or the k fold runs of one pair (data.split=kfold), whose validation
  videos are pooled per seed (each scored by its own fold's model and weights). `target`:
  weigh towards this category instead of the runs' target (a transfer matrix's model of c
  is c's source-only model for every target)."""
  parts = [_part(r, target) for r in runs]
  cfg, target = parts[0]['cfg'], parts[0]['target']
  seeds = {len(p['ap_iw']) for p in parts}
  if len(seeds) != 1:
    raise UserInputError(f'the fold runs {runs} differ in seeds ({sorted(seeds)}): pass runs '
                         'of one --config.num_seeds')
  ess = [float(p['weights'].sum() ** 2 / (p['weights'] ** 2).sum() / len(p['weights']))
         for p in parts]
  own_target = target == cfg.data.target_category
  res = (parts[0]['results'] if len(parts) == 1 else
         transfer.merge_folds([p['results'] for p in parts]))
  out = {'run': runs[0] if len(runs) == 1 else
                os.path.commonpath(runs) + f' ({len(runs)} folds)',
         'method': cfg.method, 'variant': scored_variant(runs[0], cfg.data.target_category),
         'source': cfg.data.source_category, 'target': target, 'num_seeds': seeds.pop(),
         'num_val_videos': sum(len(p['ap_iw'][0]) for p in parts),
         'ess': float(np.mean(ess)), 'ess_per_run': ess,
         'test_map': {'mean': res['map'], 'ci95': res.get('map_ci95')} if own_target else None}
  for key in ('val_map', 'ap_plain', 'ap_iw'):
    per_seed = [float(np.nanmean([a for p in parts for a in p[key][i]]))
                for i in range(out['num_seeds'])]
    m = stats.mean_ci(per_seed)
    out[key] = {'mean': m['mean'], 'ci95': m['ci95'], 'per_seed': per_seed}
  return out


def to_markdown(rows: list[dict]) -> str:
  f = lambda d: f"{d['mean']:.3f}" + (f" ± {d['ci95']:.3f}" if d.get('ci95') else '')  # noqa: E731
  lines = ['| run | pair | method | seeds | source-val mAP | AP, weights 1 | IW AP | ESS | '
           'test mAP (check only) |', '|---|---|---|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['run']} | {r['source']} → {r['target']} | "
                 f"{label(r['method'], r['variant'])} | {r['num_seeds']} | {f(r['val_map'])} | "
                 f"{f(r['ap_plain'])} | {f(r['ap_iw'])} | {r['ess']:.2f} | "
                 f"{f(r['test_map']) if r['test_map'] else '–'} |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('runs', nargs='+', help='finished runs or sweep folders')
  p.add_argument('--target', default='', help="weigh towards this category (e.g. a transfer "
                 "matrix's source models as source-only); default: each run's target")
  p.add_argument('--json', default='', help='also write the rows here')
  args = p.parse_args(argv)
  try:
    rows = [group_row(g, args.target) for g in fold_groups(find_runs(args.runs))]
  except UserInputError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  report(to_markdown(rows), rows, args.json)
  return 0


if __name__ == '__main__':
  sys.exit(main())
