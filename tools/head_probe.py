"""What each head of a trained DL-VHD run ranks: the coarse learner against the target's highlights.

  python -m tools.head_probe runs/gap_gymnastics/dlvhd__surfing [more runs or sweep folders]

L_coarse trains the coarse head to tell the mixed set's target segments (label 1) from its
source segments (label 0); it helps the target only if "looks like the target" ranks the
target's own highlights above its other segments. Per run (a finished run whose method has
the heads `coarse` and `fine`: dlvhd and its ablations), on the target's test videos and,
for the domain question, the source category's test videos, mean ± 95% t interval over seeds:

  mAP coarse / fine / both   test mAP of each head alone and of their mean (the run's score)
  domain AUC (coarse)        target test segments vs source test segments, pooled: 0.5 = the
                             coarse head cannot tell the categories apart, 1 = it always can
  highlight AUC              per target test video, highlight segments vs the rest, averaged
                             over videos (0.5 = the head's order ignores highlights); with
                             graded labels (TVSum) a highlight is a segment most annotators
                             score above their median, as the top-5 mAP binarizes them
  coarse score               mean 2·sigmoid − 1 of the coarse head on target highlights,
                             target non-highlights, source highlights, source non-highlights
  spread                     each head's score standard deviation within a target test video
                             (mean over videos): the run's score averages the two heads, so
                             the head with the wider spread sets most of the order
  top spread (--json)        each head's spread among the 20% of a video's segments the coarse
                             head ranks highest, and coarse_above_0.9 the share of target
                             segments the coarse head scores above 0.9: where the coarse head
                             saturates, the top of the heads' mean is the fine head's order
  mAP z-mean                 the heads averaged after standardizing each within its video
                             (eval.head_fusion=zmean, a named change: scale-free; the same
                             checkpoints, scored as `--config.eval.head_fusion=zmean`)
  mAP logit fusion           both heads under eval.head_fusion=logit, 2·sigmoid(mean logit) − 1:
                             a head saturated near ±1 keeps its order (a named change; the
                             same checkpoints, scored as `--config.eval.head_fusion=logit`)

A k-fold pair (TVSum's data.split=kfold: one run per --config.data.fold) is one row: its fold
runs' test videos are pooled per seed before the statistics, as tools/gap_closure merges them.

Prints a markdown table; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from app import experiment, transfer
from app.detector import recorded_config
from dlvhd_jax import evaluation, hparams, stats
from app.gap_closure import find_runs, fold_groups, label, run_fold, scored_variant
from tools import exit_on_user_error, report

HEADS = ('coarse', 'fine')


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
  """P(score of a positive > score of a negative) + 1/2 P(tie) (Mann-Whitney); NaN if a side
  is empty."""
  pos, neg = np.ravel(pos).astype(np.float64), np.ravel(neg).astype(np.float64)
  if not len(pos) or not len(neg):
    return float('nan')
  _, inv, cnt = np.unique(np.r_[pos, neg], return_inverse=True, return_counts=True)
  rank = (np.cumsum(cnt) - (cnt - 1) / 2.0)[inv]  # 1-based, ties share their mean rank
  return float((rank[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def highlights(video, metric: str) -> np.ndarray:
  """[T] bool: the segments the metric counts as highlights. Binary labels: label > 0.
  top5_map (graded annotator scores [A, T]): above the annotator's median for most
  annotators (evaluation.top5_average_precision binarizes each annotator that way)."""
  if metric == 'top5_map':
    a = np.atleast_2d(np.asarray(video.annotator_scores, np.float64))
    return (a > np.median(a, axis=1, keepdims=True)).mean(axis=0) > 0.5
  return np.asarray(video.labels) > 0


def _per_seed(cfg, run, videos, heads) -> list[list[np.ndarray]]:
  """-> per seed, per video: [T_v] scores under the mean of `heads`."""
  return experiment.split_replicas(cfg, run.scores(cfg, videos, heads))


def _ci(values) -> dict:
  m = stats.mean_ci([float(v) for v in values])
  return {'mean': m['mean'], 'ci95': m['ci95']}


def _scores(run_dir: str) -> dict:
  """A run's raw material: per seed and target test video, each head's scores (and the
  coarse head's on the source's test videos), with the videos' labels."""
  cfg = recorded_config(run_dir)
  run = transfer.restore(cfg, run_dir)
  if tuple(run.objective.heads)[:2] != HEADS:
    raise SystemExit(f'error: {run_dir} trained {cfg.method!r}, which has no coarse and fine '
                     'heads: probe a dlvhd run')
  if hparams.values(cfg) != (None,):
    raise SystemExit(f'error: {run_dir} trained several values of {hparams.key(cfg)}: probe '
                     'a run of one value (its seeds are averaged)')
  src, tgt = cfg.data.source_category, cfg.data.target_category
  metric = experiment.metric_of(cfg)
  target = run.data.target_test
  source = experiment.load_data(cfg, run_dir, False, target_category=src).target_test
  scores = {name: _per_seed(cfg, run, target, heads)
            for name, heads in (('coarse', ('coarse',)), ('fine', ('fine',)), ('both', HEADS))}
  for fusion in ('logit', 'zmean'):
    fused_cfg = cfg.copy_and_resolve_references()
    with fused_cfg.unlocked():
      fused_cfg.eval.head_fusion = fusion
    scores[fusion] = _per_seed(fused_cfg, run, target, HEADS)
  scores['coarse_source'] = _per_seed(cfg, run, source, ('coarse',))
  return {'run': run_dir, 'method': cfg.method, 'variant': scored_variant(run_dir, tgt),
          'source': src, 'target': tgt, 'metric': metric, 'vids': [v.vid for v in target],
          'labels': list(experiment.eval_labels(target, metric)),
          'hl_t': [highlights(v, metric) for v in target],
          'hl_s': [highlights(v, metric) for v in source], 'scores': scores}


def _concat(parts: list[dict]) -> dict:
  """The k fold runs of one pair -> one run over all their test videos (per seed, the fold
  runs' videos side by side, as transfer.merge_folds merges their APs)."""
  seeds = {len(p['scores']['both']) for p in parts}
  if len(seeds) != 1:
    raise SystemExit(f'error: the fold runs {[p["run"] for p in parts]} differ in seeds '
                     f'({sorted(seeds)}): probe runs of one --config.num_seeds')
  out = {k: parts[0][k] for k in ('method', 'variant', 'source', 'target', 'metric')}
  out['run'] = os.path.commonpath([p['run'] for p in parts]) + f' ({len(parts)} folds)'
  for k in ('vids', 'labels', 'hl_t', 'hl_s'):
    out[k] = [x for p in parts for x in p[k]]
  num = seeds.pop()
  out['scores'] = {name: [[s for p in parts for s in p['scores'][name][i]] for i in range(num)]
                   for name in parts[0]['scores']}
  return out


def _statistics(c: dict) -> dict:
  """Raw material (_scores or _concat) -> the probe's numbers, mean ± 95% t interval over
  seeds of each seed's value over all the test videos."""
  vids, labels, metric, per_head = c['vids'], c['labels'], c['metric'], c['scores']
  out = {k: c[k] for k in ('run', 'method', 'variant', 'source', 'target')}
  for name in ('coarse', 'fine', 'both', 'logit', 'zmean'):
    out[f'map_{name}'] = _ci(evaluation.summarize(vids, labels, sc, metric)['map']
                             for sc in per_head[name])
  top = lambda c: c >= np.quantile(c, 0.8)  # noqa: E731  the coarse head's top 20% of a video
  for name in HEADS:
    out[f'spread_{name}'] = _ci(np.mean([np.std(s) for s in sc]) for sc in per_head[name])
    out[f'top_spread_{name}'] = _ci(np.mean([np.std(s[top(c)]) for s, c in zip(sc, cs)])
                                    for sc, cs in zip(per_head[name], per_head['coarse']))
  out['coarse_above_0.9'] = _ci(np.mean(np.concatenate(sc) > 0.9) for sc in per_head['coarse'])
  coarse_src, hl_t, hl_s = per_head['coarse_source'], c['hl_t'], c['hl_s']
  out['domain_auc'] = _ci(auc(np.concatenate(t), np.concatenate(s))
                          for t, s in zip(per_head['coarse'], coarse_src))
  for name in HEADS:
    out[f'highlight_auc_{name}'] = _ci(
        np.nanmean([auc(s[y], s[~y]) for s, y in zip(sc, hl_t)]) for sc in per_head[name])
  pick = lambda sc, ys, want: np.concatenate([s[y == want] for s, y in zip(sc, ys)])  # noqa: E731
  out['coarse_score'] = {
      key: _ci(np.mean(pick(sc, ys, want)) for sc in scores)
      for key, scores, ys, want in (('target_highlight', per_head['coarse'], hl_t, True),
                                    ('target_other', per_head['coarse'], hl_t, False),
                                    ('source_highlight', coarse_src, hl_s, True),
                                    ('source_other', coarse_src, hl_s, False))}
  out['num_seeds'] = len(per_head['both'])
  return out


def probe(run_dir: str) -> dict:
  return _statistics(_scores(run_dir))


def probe_runs(run_dirs: list[str]) -> list[dict]:
  """One row per run; the k fold runs of one method on one pair (data.split=kfold, one run
  per --config.data.fold) merge into one row over every fold's test videos."""
  out = []
  for group in fold_groups(run_dirs):
    if len(group) == 1 and run_fold(group[0]) is None:
      out.append(probe(group[0]))
    else:
      out.append({**_statistics(_concat([_scores(r) for r in group])), 'num_folds': len(group)})
  return out


def to_markdown(rows: list[dict]) -> str:
  f = lambda d: f"{d['mean']:.3f}" + (f" ± {d['ci95']:.3f}" if d['ci95'] is not None else '')  # noqa: E731
  lines = ['| pair | method | seeds | mAP coarse | mAP fine | mAP both | domain AUC (coarse) | '
           'highlight AUC coarse | highlight AUC fine | spread coarse / fine | mAP z-mean | '
           'mAP logit fusion | coarse score: target hl / other, source hl / other |',
           '|---|---|---:|' + '---:|' * 10]
  for r in rows:
    cs = r['coarse_score']
    scores = ' / '.join(f"{cs[k]['mean']:+.2f}" for k in (
        'target_highlight', 'target_other', 'source_highlight', 'source_other'))
    folds = f" ({r['num_folds']} folds)" if r.get('num_folds') else ''
    lines.append(f"| {r['source']} → {r['target']} | {label(r['method'], r['variant'])} | "
                 f"{r['num_seeds']}{folds} | "
                 f"{f(r['map_coarse'])} | {f(r['map_fine'])} | {f(r['map_both'])} | "
                 f"{f(r['domain_auc'])} | {f(r['highlight_auc_coarse'])} | "
                 f"{f(r['highlight_auc_fine'])} | {r['spread_coarse']['mean']:.3f} / "
                 f"{r['spread_fine']['mean']:.3f} | {f(r['map_zmean'])} | {f(r['map_logit'])} | "
                 f"{scores} |")
  return '\n'.join(lines)


@exit_on_user_error
def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--json', default='', help='also write the rows here')
  p.add_argument('runs', nargs='+', help='run folders, or sweep folders holding them')
  args = p.parse_args(argv)
  rows = probe_runs([r for r in find_runs(args.runs)
                     if recorded_config(r).method.startswith('dlvhd')])
  if not rows:
    raise SystemExit(f'error: no dlvhd run in {args.runs}')
  report(to_markdown(rows), rows, args.json)
  return 0


if __name__ == '__main__':
  sys.exit(main())
