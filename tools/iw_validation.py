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
from dlvhd_jax import evaluation, hparams, stats
from dlvhd_jax.errors import UserInputError
from tools import report
from tools.domain_bound import logistic_regression
from tools.gap_closure import _read, find_runs, label, scored_variant
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


def run_row(run_dir: str, target: str = '') -> dict:
  """One run's row; `target`: weigh towards this category instead of the run's target (a
  transfer matrix's model of c is c's source-only model for every target)."""
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
  per_seed = experiment.split_replicas(cfg, run.scores(cfg, val, tuple(run.objective.eval_heads)))
  rows = {'val_map': [], 'ap_plain': [], 'ap_iw': []}
  for sc in per_seed:
    rows['val_map'].append(evaluation.summarize([v.vid for v in val], labels, sc, metric)['map'])
    rows['ap_plain'].append(np.nanmean([weighted_average_precision(y, s, np.ones(len(s)))
                                        for y, s in zip(hl, sc)]))
    rows['ap_iw'].append(np.nanmean([weighted_average_precision(y, s, w)
                                     for y, s, w in zip(hl, sc, per_video_w)]))
  res = _read(os.path.join(run_dir, 'results.json'))
  out = {'run': run_dir, 'method': cfg.method,
         'variant': scored_variant(run_dir, cfg.data.target_category),
         'source': cfg.data.source_category, 'target': target,
         'num_seeds': len(per_seed), 'num_val_videos': len(val),
         'ess': float(weights.sum() ** 2 / (weights ** 2).sum() / len(weights)),
         'test_map': ({'mean': res['map'], 'ci95': res.get('map_ci95')}
                      if target == cfg.data.target_category else None)}
  for k, v in rows.items():
    m = stats.mean_ci([float(x) for x in v])
    out[k] = {'mean': m['mean'], 'ci95': m['ci95'], 'per_seed': [float(x) for x in v]}
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
    rows = [run_row(r, args.target) for r in find_runs(args.runs)]
  except UserInputError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  report(to_markdown(rows), rows, args.json)
  return 0


if __name__ == '__main__':
  sys.exit(main())
