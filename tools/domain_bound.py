"""What each DL-VHD head could reach on the embedded synthetic data, from the generator itself.

  python -m tools.domain_bound runs/demo/data [--source=diving --target=climbing --seed=0]

The embedded data (data_pipelines/synthetic.py) is a known model: a segment is noise plus a
per-video offset and a weak category cue, and a highlight adds 1.5·shared + 2.5·specific[c].
Knowing it, every learner's optimum on a (source, target) pair can be scored on the
target's test videos with the project's AP, without training anything:

  target highlight posterior   P(highlight | x, target): the target-oracle's optimum
  source highlight posterior   P(highlight | x, source) applied to the target: the optimum of
                               a detector trained on source labels (source-only, the fine head)
  domain posterior             P(target | x) for a segment of the mixed sets: the optimum of
                               the coarse learner, which tells target segments from source
  both optima, as DL-VHD fuses the mean of 2·P − 1 of the two above (the method's score
                               if both heads reached their optimum)
  linear domain direction      x·(specific[target] − specific[source]): the best a domain
                               classifier linear in x can order segments by
  logistic domain classifier   L2-regularized logistic regression (Newton) fitted to tell the
                               training segments of the two categories apart: a learned one

The posteriors use the generator's segment model with the highlight share of the source's
training labels (no target label is read) and leave out the per-video offset and the cue,
which are constant within a video. --seed is the generator's (config.data.synthetic_seed);
a dataset written with another seed or generator is refused in one line. Prints a markdown
table (mAP and, against the two first rows, the share of the gap); --json writes it.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys

import numpy as np

from data_pipelines import synthetic
from dlvhd_jax.evaluation import average_precision
from tools import report


def highlight_logodds(x: np.ndarray, mu: np.ndarray, prior: float) -> np.ndarray:
  """log P(highlight | x) / P(other | x) of one category: x [S, D] = unit noise, plus mu [D]
  on a highlight; prior = the highlights' log-odds. -> [S] (linear in x: equal covariances)."""
  return prior + x @ mu - mu @ mu / 2


def domain_llr(x: np.ndarray, mu_t: np.ndarray, mu_s: np.ndarray, prior: float) -> np.ndarray:
  """log p(x | target) − log p(x | source), each category a mixture of unit noise and, with
  the prior's share, its highlights around mu_c. -> [S]."""
  # p(x | c) = φ(x)·[(1 − π) + π·exp(x·μ_c − |μ_c|²/2)]: φ cancels, and so does log(1 − π)
  # once each bracket is written as (1 − π)·(1 + exp(log-odds)).
  return np.logaddexp(0.0, highlight_logodds(x, mu_t, prior)) - np.logaddexp(
      0.0, highlight_logodds(x, mu_s, prior))


def logistic_regression(x: np.ndarray, y: np.ndarray, l2: float = 1.0,
                        iters: int = 25) -> np.ndarray:
  """Newton's method on the L2-penalized log-loss; x [S, D], y [S] in {0, 1} -> w [D + 1]
  (bias last, unpenalized)."""
  xb = np.c_[x, np.ones(len(x))]
  w = np.zeros(xb.shape[1])
  pen = np.full(xb.shape[1], l2)
  pen[-1] = 0.0
  for _ in range(iters):
    p = 1.0 / (1.0 + np.exp(-(xb @ w)))
    grad = xb.T @ (p - y) + pen * w
    hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(pen)
    w -= np.linalg.solve(hess, grad)
  return w


def _read(root: str):
  try:
    with open(os.path.join(root, 'youtube_anno.json')) as f:
      anno = json.load(f)
    with open(os.path.join(root, 'splits', 'umt_splits.json')) as f:
      splits = json.load(f)
  except (OSError, ValueError) as e:
    raise SystemExit(f'domain_bound: {root} is not a synthetic dataset folder '
                     f'(youtube_anno.json, splits/umt_splits.json): {e}') from None

  def features(vid):
    return np.concatenate([np.load(os.path.join(root, 'video_features', f'{vid}_{s}.npy'))
                           for s in ('rgb', 'opt')], axis=1).astype(np.float64)

  return anno, splits, features


def bounds(root: str, source: str, target: str, seed: int = 0) -> dict:
  """-> {row name: target test mAP} and the pair's facts (see the module docstring)."""
  anno, splits, features = _read(root)
  for c in (source, target):
    if c not in splits:
      raise SystemExit(f'domain_bound: {root} has no category {c!r} (it has '
                       f'{", ".join(sorted(splits))})')
  categories = tuple(dict.fromkeys(a['domain'] for a in anno.values()))
  dim = features(splits[target]['train'][0]).shape[1]
  gen = inspect.signature(synthetic.write_synthetic_dataset).parameters
  k_sh, k_sp = gen['shared_strength'].default, gen['specific_strength'].default
  shared, specific, _ = synthetic.directions(categories=categories, dim=dim, seed=seed)
  labels = lambda v: np.asarray(anno[v]['match']) > 0  # noqa: E731

  # The directions must be the ones the data was written with: a source highlight lies
  # k_sp further along its category's direction than the rest of its video.
  src_x = [features(v) for v in splits[source]['train']]
  src_y = [labels(v) for v in splits[source]['train']]
  xs, ys = np.concatenate(src_x), np.concatenate(src_y)
  lift = (xs[ys] @ specific[source]).mean() - (xs[~ys] @ specific[source]).mean()
  if not abs(lift - k_sp) < 0.5:
    raise SystemExit(f'domain_bound: the data at {root} was not written by '
                     f'synthetic.write_synthetic_dataset with seed={seed} and its default '
                     f'strengths (highlight lift {lift:.2f}, expected {k_sp}); pass --seed')
  prior = np.log(ys.mean() / (1 - ys.mean()))

  mu = {c: k_sh * shared + k_sp * specific[c] for c in (source, target)}  # a highlight's mean
  logodds = lambda x, c: highlight_logodds(x, mu[c], prior)  # noqa: E731

  tgt_x = np.concatenate([features(v) for v in splits[target]['train']])
  w = logistic_regression(np.r_[xs, tgt_x], np.r_[np.zeros(len(xs)), np.ones(len(tgt_x))])
  sym = lambda z: np.tanh(0.5 * z)  # noqa: E731  a head's 2·sigmoid − 1
  domain = lambda x: domain_llr(x, mu[target], mu[source], prior)  # noqa: E731
  rows = {
      'target highlight posterior (oracle optimum)': lambda x: logodds(x, target),
      'source highlight posterior (source-only optimum)': lambda x: logodds(x, source),
      'domain posterior (coarse learner optimum)': domain,
      'both optima, as DL-VHD fuses': lambda x: 0.5 * (sym(domain(x)) + sym(logodds(x, source))),
      'linear domain direction': lambda x: x @ (specific[target] - specific[source]),
      'logistic domain classifier': lambda x: np.c_[x, np.ones(len(x))] @ w,
  }
  tests = [v for v in splits[target]['val'] if labels(v).any()]
  xt = {v: features(v) for v in tests}
  maps = {name: float(np.mean([average_precision(labels(v), f(xt[v])) for v in tests]))
          for name, f in rows.items()}
  return {'source': source, 'target': target, 'test_videos': len(tests),
          'highlight_share_source': float(ys.mean()), 'map': maps}


def markdown(res: dict) -> str:
  names = list(res['map'])
  oracle, so = res['map'][names[0]], res['map'][names[1]]
  out = [f'{res["source"]} → {res["target"]}, {res["test_videos"]} test videos',
         '', '| optimum of | target test mAP | share of the gap (source-only → oracle) |',
         '|---|---:|---:|']
  for n in names:
    out.append(f'| {n} | {res["map"][n]:.3f} | {(res["map"][n] - so) / (oracle - so):.0%} |')
  return '\n'.join(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('data', help='a synthetic dataset folder (a demo run writes <workdir>/data)')
  p.add_argument('--source', default='diving')
  p.add_argument('--target', default='climbing')
  p.add_argument('--seed', type=int, default=0, help='config.data.synthetic_seed of the data')
  p.add_argument('--json', default='', help='also write the numbers here')
  a = p.parse_args(argv)
  res = bounds(a.data, a.source, a.target, a.seed)
  report(markdown(res), res, a.json)
  return 0


if __name__ == '__main__':
  sys.exit(main())
