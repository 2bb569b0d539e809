"""Windowed inference over every segment of every test video, and the AP metrics.

Inference (SPEC): segment s is scored inside a set made of s and its N-1 neighbours, half
before and half after ((N-1)//2 before, the rest after). At the ends of a video the paper
duplicates segments to fill the set (`duplicate`: indices clipped to the video); the
published code shrinks the window instead (`shrink`: out-of-video positions masked).
All windows of all test videos go through the model as large batched calls.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


from dlvhd_jax import distributed, parallel, stats


def window_indices(length: int, set_size: int, edge_rule: str = 'duplicate'):
  """-> (index [L, N] int32 into the video, mask [L, N] bool, own position [L] int32)."""
  before = (set_size - 1) // 2
  s = np.arange(length)[:, None]
  offsets = np.arange(set_size)[None, :]
  if edge_rule == 'duplicate':
    idx = np.clip(s - before + offsets, 0, length - 1)
    mask = np.ones_like(idx, bool)
    own = np.full(length, before)
  elif edge_rule == 'shrink':
    lo = np.maximum(s - before, 0)
    hi = np.minimum(s + (set_size - 1 - before) + 1, length)
    idx = lo + offsets
    mask = idx < hi
    idx = np.where(mask, idx, lo)
    own = (s - lo)[:, 0]
  else:
    raise ValueError(f"config.eval.edge_rule={edge_rule!r} is not 'duplicate' or 'shrink'")
  return idx.astype(np.int32), mask, own.astype(np.int32)


class LogitFn(NamedTuple):
  """Windowed scoring in two jitted parts: `embed(params, features [S, D]) -> [S, W]` runs the
  encoder's per-segment input projection once per segment (not once per window holding it:
  N times fewer FLOPs for it); `logits(params, embedded [S, W], index [E, N], mask [E, N],
  own [E]) -> [E, H]` scores each window's own segment under the H eval heads, running the
  last block (past its keys and values) and the heads for that segment only. With
  `replicas`, params carry a leading axis of R independently trained models and the outputs
  one too: [R, E, H], and [R, S, W] where the models project their inputs ([S, W] where
  embedding is a cast, which all R share)."""
  embed: Callable
  logits: Callable


def make_logit_fn(graphdef, eval_heads, mesh, replicas: bool = False) -> LogitFn:
  """-> the LogitFn of a model (`graphdef`) scoring with `eval_heads`."""
  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def embed(params, features):
    return nnx.merge(graphdef, params).embed(features)

  def logits(params, embedded, index, mask, own):
    model = nnx.merge(graphdef, params)
    # Only the own segment's embedding leaves the encoder: [E, 1, W].
    h = model.encode_embedded(embedded[index], mask, None, own)
    # Only the heads the objective scores with run (e.g. not RevGrad's domain head).
    out = model.logits(h, None, eval_heads)
    return jnp.stack([out[name][:, 0] for name in eval_heads], axis=-1)  # [E, H]

  if replicas:
    embed_one, logits_one = embed, logits

    def embed(params, features):
      model = nnx.merge(graphdef, params)
      if model.encoder is None or model.encoder.proj is None:
        # A cast only: one copy shared by the R models, not R copies of the bank.
        return features.astype(model.dtype)
      return jax.vmap(embed_one, in_axes=(0, None))(params, features)

    def logits(params, embedded, index, mask, own):
      shared = None if embedded.ndim == 2 else 0
      return jax.vmap(logits_one, in_axes=(0, shared, None, None, None))(
          params, embedded, index, mask, own)
    out = parallel.replica_batch_sharded(mesh)
  else:
    out = shard
  # Parameters keep the layout they come with (replicated, or FSDP-sharded: XLA gathers them).
  return LogitFn(
      embed=jax.jit(embed, in_shardings=(None, rep), out_shardings=rep),
      logits=jax.jit(logits, in_shardings=(None, rep, shard, shard, shard),
                     out_shardings=out))


def predict(graphdef, params, videos_features: list[np.ndarray], eval_heads, cfg, mesh,
            replicas: bool = False, logit_fn=None) -> list[np.ndarray]:
  """Scores every segment of every video: list of [T_v, D] -> list of [T_v] float64 scores
  in (-1, 1), z-scores under eval.head_fusion=zmean ([R, T_v] when `replicas`)."""
  n = cfg.sampling.set_size
  lengths = [len(f) for f in videos_features]
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  parts = [window_indices(L, n, cfg.eval.edge_rule) for L in lengths]
  index = np.concatenate([p[0] + s0 for p, s0 in zip(parts, starts)])
  mask = np.concatenate([p[1] for p in parts])
  own = np.concatenate([p[2] for p in parts])
  ndev = mesh.devices.size
  chunk = max(ndev, (int(cfg.eval.batch_size) // ndev) * ndev)
  total = len(index)
  pad = (-total) % chunk
  # Padding windows repeat window 0 (always valid) and are dropped afterwards.
  index = np.concatenate([index, np.repeat(index[:1], pad, 0)])
  mask = np.concatenate([mask, np.repeat(mask[:1], pad, 0)])
  own = np.concatenate([own, np.repeat(own[:1], pad, 0)])
  features = jax.device_put(np.concatenate(videos_features).astype(np.float32),
                            parallel.replicated(mesh))
  logit_fn = logit_fn or make_logit_fn(graphdef, tuple(eval_heads), mesh, replicas)
  embedded = logit_fn.embed(params, features)
  shard = parallel.batch_sharded(mesh)
  outs = []
  for i in range(0, len(index), chunk):
    args = [jax.device_put(a[i:i + chunk], shard) for a in (index, mask, own)]
    outs.append(logit_fn.logits(params, embedded, *args))
  logits = np.concatenate(distributed.fetch(outs), axis=-2)[..., :total, :]  # [(R,) E, H]
  # .get: configs recorded before eval.head_fusion existed score as the paper does.
  fusion = cfg.eval.get('head_fusion', 'score')
  return [scores_from_logits(logits[..., s0:s0 + L, :], fusion) for s0, L in zip(starts, lengths)]


def _check_finite(scores) -> None:
  # NaN scores tie with each other and fall back to input order: a plausible AP from garbage.
  if not np.all(np.isfinite(np.asarray(scores, np.float64))):
    raise ValueError('scores contain NaN or inf: AP is undefined')


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
  """The published code's per-video AP (= sklearn's average_precision_score): step-wise,
  thresholds at distinct scores, positives `labels > 0`. NaN when there is no positive."""
  _check_finite(scores)
  y = np.asarray(labels) > 0
  if not y.any():
    return float('nan')
  order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
  s, y = np.asarray(scores, np.float64)[order], y[order]
  # Last index of each group of tied scores: one threshold per distinct score.
  last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
  tp = np.cumsum(y)[last]
  precision = tp / (last + 1)
  recall = tp / y.sum()
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precision_umt(labels: np.ndarray, scores: np.ndarray) -> float:
  """UMT's YouTube Highlights protocol: trapezoid rule over the ranking (precision 1 at
  recall 0), positives `labels > 0`, AP 0 when the video has no positive.

  UMT's loop walks a sorted list, so tied scores would be ranked by their position in the
  video (a constant-score model would score differently on a video and on its reverse).
  Here tied segments count in expectation over every order of the tie: within a group of m
  tied segments holding a positives, the segment at the group's i-th place is positive with
  probability a/m and, given that, has h0 + (i-1)(a-1)/(m-1) positives ranked before it.
  Without ties this is exactly UMT's number.
  """
  _check_finite(scores)
  y = np.asarray(labels) > 0
  num_pos = int(y.sum())
  if not num_pos:
    return 0.0
  order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
  s, y = np.asarray(scores, np.float64)[order], y[order].astype(np.float64)
  n = len(s)
  group = np.r_[0, np.cumsum(np.diff(s) != 0)]  # [n] tie-group id of each rank
  start = np.r_[0, np.nonzero(np.diff(s))[0] + 1]  # [G] first rank of each group
  size = np.diff(np.r_[start, n])  # m
  pos = np.add.reduceat(y, start)  # a
  before = np.r_[0, np.cumsum(pos)[:-1]]  # h0: positives in the groups ranked above
  g = group
  i = np.arange(n) - start[g] + 1  # place within the group, 1-based
  j = np.arange(1, n + 1)  # rank, 1-based
  hits_before = before[g] + (i - 1) * (pos[g] - 1) / np.maximum(size[g] - 1, 1)
  prec_before = np.where(j == 1, 1.0, hits_before / np.maximum(j - 1, 1))
  # Each positive adds recall 1/P times the mean of the precisions at its rank and the rank above.
  return float(np.sum(pos[g] / size[g] * ((hits_before + 1) / j + prec_before)) / (2 * num_pos))


FUSIONS = ('score', 'logit', 'zmean')


def scores_from_logits(logits: np.ndarray, fusion: str = 'score') -> np.ndarray:
  """[..., T, H] one video's heads' logits (float32) -> [..., T] test scores (config
  eval.head_fusion): `score` the heads' mean of 2*sigmoid - 1 (the paper's), `logit`
  2*sigmoid(mean logit) - 1, `zmean` the heads' mean after standardizing each head's
  2*sigmoid - 1 over the video's segments (scale-free: a flat head keeps its say in the order;
  scores are then z-scores, not in (-1, 1)). Computed in float64 so that large logits keep
  their order (in float32 2*sigmoid(x) - 1 rounds to exactly 1 for x > 17 and whole videos
  would tie)."""
  x = np.asarray(logits, np.float64)
  if fusion == 'logit':
    return np.tanh(0.5 * np.mean(x, axis=-1))
  if fusion not in FUSIONS:
    raise ValueError(f'fusion={fusion!r}: use one of {FUSIONS}')
  s = np.tanh(0.5 * x)
  if fusion == 'zmean':
    # A head constant over the video adds nothing to the order (its z-score is 0).
    s = (s - s.mean(axis=-2, keepdims=True)) / np.maximum(s.std(axis=-2, keepdims=True), 1e-12)
  return np.mean(s, axis=-1)


def count_ties(scores: list[np.ndarray]) -> int:
  """Segments whose score equals another segment's score in the same video: [T_v] each."""
  total = 0
  for s in scores:
    _, counts = np.unique(np.asarray(s), return_counts=True)
    total += int(counts[counts > 1].sum())
  return total


def top5_average_precision(annotator_scores: np.ndarray, scores: np.ndarray, k: int = 5) -> float:
  """TVSum's top-5 AP of one video (UMT / UniVTG / lighthouse protocol), mean over annotators.

  annotator_scores [A, T] (each annotator's segment scores), scores [T] (the model's). Per
  annotator: binarize its scores as `> median`, take the k segments the model ranks highest,
  and compute the UMT-protocol AP of that ranked list (trapezoid, precision 1 at recall 0;
  0 if none of the k is positive). Ties count in expectation over every order of the tied
  segments, inside the list (average_precision_umt) and at the cut: when m segments tie at
  the k-th place and c of them fit in the list, each c-subset is equally likely, so the list
  holds b of the tie's a positives with hypergeometric probability C(a,b) C(m-a,c-b) / C(m,c).
  """
  _check_finite(scores)
  s = np.asarray(scores, np.float64)
  k = min(k, len(s))
  cut = np.sort(s)[::-1][k - 1]
  above = np.nonzero(s > cut)[0]
  above = above[np.argsort(-s[above], kind='stable')]
  tied = np.nonzero(s == cut)[0]
  m, c = len(tied), k - len(above)
  list_scores = np.r_[s[above], np.full(c, cut)]
  aps = []
  for a_scores in np.atleast_2d(np.asarray(annotator_scores, np.float64)):
    y = (a_scores > np.median(a_scores)).astype(np.float64)
    a = int(y[tied].sum())
    ap = 0.0
    for b in range(max(0, c - (m - a)), min(a, c) + 1):
      p = math.comb(a, b) * math.comb(m - a, c - b) / math.comb(m, c)
      labels = np.r_[y[above], np.ones(b), np.zeros(c - b)]
      ap += p * average_precision_umt(labels, list_scores)
    aps.append(ap)
  return float(np.mean(aps))


def summarize(vids: list[str], labels: list[np.ndarray], scores: list[np.ndarray],
              metric: str = 'map') -> dict:
  """Per-video APs and the mAPs. metric 'map' (YouTube Highlights): `map` = published-code AP
  (no-positive videos skipped) and `map_umt` = UMT's protocol, labels [T]. metric 'top5_map'
  (TVSum): labels are [A, T] annotator scores and both `map` and `map_umt` are the top-5 mAP
  (that protocol is UMT's); `metric` names the headline number."""
  if metric == 'top5_map':
    ap = {v: top5_average_precision(y, s) for v, y, s in zip(vids, labels, scores)}
    value = float(np.mean(list(ap.values())))
    return {'metric': metric, 'map': value, 'map_umt': value, 'num_test_videos': len(vids),
            'num_videos_with_positive': len(vids), 'per_video_ap': dict(ap),
            'per_video_ap_umt': dict(ap)}
  if metric != 'map':
    raise ValueError(f'unknown metric {metric!r}')
  ap = {v: average_precision(y, s) for v, y, s in zip(vids, labels, scores)}
  ap_umt = {v: average_precision_umt(y, s) for v, y, s in zip(vids, labels, scores)}
  valid = [a for a in ap.values() if not np.isnan(a)]
  return {
      'metric': metric,
      'map': float(np.mean(valid)) if valid else float('nan'),
      'map_umt': float(np.mean(list(ap_umt.values()))),
      'num_test_videos': len(vids),
      'num_videos_with_positive': len(valid),
      'per_video_ap': {v: (None if np.isnan(a) else a) for v, a in ap.items()},
      'per_video_ap_umt': ap_umt,
  }


def summarize_seeds(vids: list[str], labels: list[np.ndarray], scores_per_seed, seeds,
                    metric: str = 'map') -> dict:
  """Results of R independently seeded models on the same test videos.

  scores_per_seed: R lists of [T_v] scores. `map` / `map_umt` are means over seeds, with
  `*_std` (ddof 1) and `*_ci95` (half-width of the 95% t interval; None for one seed);
  `per_video_ap(_umt)` are per-video means over seeds; `per_seed` keeps each seed's numbers.
  """
  runs = [summarize(vids, labels, sc, metric) for sc in scores_per_seed]
  out = {'metric': metric}
  for metric in ('map', 'map_umt'):
    m = stats.mean_ci([r[metric] for r in runs])
    out.update({metric: m['mean'], f'{metric}_std': m['std'], f'{metric}_ci95': m['ci95']})
  per_video = {}
  for key in ('per_video_ap', 'per_video_ap_umt'):
    per_video[key] = {}
    for v in vids:
      vals = [r[key][v] for r in runs if r[key][v] is not None]
      per_video[key][v] = float(np.mean(vals)) if vals else None
  ties = [count_ties(sc) for sc in scores_per_seed]
  out.update({
      'num_seeds': len(runs),
      'num_test_videos': len(vids),
      'num_videos_with_positive': runs[0]['num_videos_with_positive'],
      'num_test_segments': int(sum(np.shape(y)[-1] for y in labels)),
      'tied_test_segments': max(ties),
      **per_video,
      'per_seed': [{'seed': int(seed), 'map': r['map'], 'map_umt': r['map_umt'],
                    'tied_test_segments': t, 'per_video_ap': r['per_video_ap'],
                    'per_video_ap_umt': r['per_video_ap_umt']}
                   for seed, r, t in zip(seeds, runs, ties)],
  })
  return out
