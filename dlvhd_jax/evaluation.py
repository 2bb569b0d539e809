"""Windowed inference over every segment of every test video, and the AP metrics.

Inference (SPEC): segment s is scored inside a set made of s and its N-1 neighbours, half
before and half after ((N-1)//2 before, the rest after). At the ends of a video the paper
duplicates segments to fill the set (`duplicate`: indices clipped to the video); the
published code shrinks the window instead (`shrink`: out-of-video positions masked).
All windows of all test videos go through the model as large batched calls.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlvhd_jax import parallel


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


def make_score_fn(graphdef, eval_heads, mesh):
  """-> jitted fn(params, features [S, D], index [E, N], mask [E, N], own [E]) -> scores [E]."""
  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def score(params, features, index, mask, own):
    model = nnx.merge(graphdef, params)
    # Only the heads the objective scores with run (e.g. not RevGrad's domain head).
    out = model(features[index], mask, heads=eval_heads)
    s = jnp.mean(jnp.stack([out[h] for h in eval_heads]), axis=0)
    return jnp.take_along_axis(s, own[:, None], axis=1)[:, 0]

  return jax.jit(score, in_shardings=(rep, rep, shard, shard, shard), out_shardings=shard)


def predict(graphdef, params, videos_features: list[np.ndarray], eval_heads, cfg, mesh,
            score_fn=None) -> list[np.ndarray]:
  """Scores every segment of every video: list of [T_v, D] -> list of [T_v] float32."""
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
  dtype = np.float32
  features = jax.device_put(np.concatenate(videos_features).astype(dtype), parallel.replicated(mesh))
  score_fn = score_fn or make_score_fn(graphdef, tuple(eval_heads), mesh)
  shard = parallel.batch_sharded(mesh)
  outs = []
  for i in range(0, len(index), chunk):
    args = [jax.device_put(a[i:i + chunk], shard) for a in (index, mask, own)]
    outs.append(score_fn(params, features, *args))
  scores = np.concatenate(jax.device_get(outs))[:total]
  return [scores[s0:s0 + L] for s0, L in zip(starts, lengths)]


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
  recall 0), positives `labels > 0`, AP 0 when the video has no positive."""
  _check_finite(scores)
  y = np.asarray(labels) > 0
  if not y.any():
    return 0.0
  order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
  hits = np.cumsum(y[order])
  recall = np.r_[0.0, hits / y.sum()]
  precision = np.r_[1.0, hits / np.arange(1, len(y) + 1)]
  return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2))


def summarize(vids: list[str], labels: list[np.ndarray], scores: list[np.ndarray]) -> dict:
  """Per-video APs and both mAPs: `map` (published code; no-positive videos skipped) and `map_umt`."""
  ap = {v: average_precision(y, s) for v, y, s in zip(vids, labels, scores)}
  ap_umt = {v: average_precision_umt(y, s) for v, y, s in zip(vids, labels, scores)}
  valid = [a for a in ap.values() if not np.isnan(a)]
  return {
      'map': float(np.mean(valid)) if valid else float('nan'),
      'map_umt': float(np.mean(list(ap_umt.values()))),
      'num_test_videos': len(vids),
      'num_videos_with_positive': len(valid),
      'per_video_ap': {v: (None if np.isnan(a) else a) for v, a in ap.items()},
      'per_video_ap_umt': ap_umt,
  }
