"""Temporal context of a segment (`config.data.context`; a named change, not the paper's).

The SL-module scores a segment from its own feature: training sets are drawn at random from
the whole video and the set Transformer has no positions, so no part of the model sees what
comes just before or after a segment. With `data.context = k > 0` each segment's feature
[D] becomes [2D]: itself, then the mean feature of the segments t-k .. t+k of its video (the
window shrinks at the video's ends). Applied to every video of a run before normalization,
and by --mode=predict to new features, so training, validation, test and predict agree.
"""
from __future__ import annotations

import dataclasses

import numpy as np


def with_context(x: np.ndarray, k: int) -> np.ndarray:
  """[T, D] -> [T, 2D] float32 (k > 0): [x_t, mean(x_{t-k} .. x_{t+k}) within the video];
  k = 0 returns x unchanged."""
  if k == 0:
    return x
  x = np.asarray(x)
  t = len(x)
  # Window sums from one cumulative sum (float64, so long videos lose no precision).
  c = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0, dtype=np.float64)])
  idx = np.arange(t)
  lo, hi = np.maximum(idx - k, 0), np.minimum(idx + k + 1, t)
  mean = (c[hi] - c[lo]) / (hi - lo)[:, None]
  return np.concatenate([x, mean], axis=1).astype(np.float32)


def add_context(data, k: int):
  """-> a copy of `data` (datasets.CrossCategoryData) whose videos carry context features."""
  if k == 0:
    return data

  def apply(videos):
    return [dataclasses.replace(v, features=with_context(v.features, k)) for v in videos]
  return dataclasses.replace(
      data, source_train=apply(data.source_train), target_train=apply(data.target_train),
      target_test=apply(data.target_test), source_val=apply(data.source_val),
      feature_dim=2 * data.feature_dim)
