"""Feature normalization (`config.data.normalize`), applied to every video of a run before
its banks are built, so training, validation and test scoring see the same transform.

  none         the features as stored (the paper)
  l2           each segment's feature vector divided by its L2 norm
  standardize  per dimension: (x - mean) / std with the mean and std over every segment of
               the source training videos (never validation or test videos, never labels)
"""
from __future__ import annotations

import dataclasses

import numpy as np

MODES = ('none', 'l2', 'standardize')


def l2(x: np.ndarray) -> np.ndarray:
  """[T, D] -> [T, D] with unit-norm rows (zero rows stay zero)."""
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def fit_standardizer(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """[T_i, D] arrays -> (mean [D], std [D]) over all their rows, in float64; a constant
  dimension gets std 1 (it is only centered)."""
  stacked = np.concatenate([np.asarray(f, np.float64) for f in features], axis=0)
  mean, std = stacked.mean(axis=0), stacked.std(axis=0)
  return mean, np.where(std > 1e-8, std, 1.0)


def normalize(data, mode: str):
  """-> a copy of `data` (datasets.CrossCategoryData) with normalized features."""
  if mode == 'none':
    return data
  if mode == 'l2':
    fn = l2
  elif mode == 'standardize':
    mean, std = fit_standardizer([v.features for v in data.source_train])
    fn = lambda x: ((x - mean) / std).astype(np.float32)
  else:
    raise ValueError(f'data.normalize={mode!r}: use one of {MODES}')

  def apply(videos):
    return [dataclasses.replace(v, features=fn(v.features)) for v in videos]
  return dataclasses.replace(
      data, source_train=apply(data.source_train), target_train=apply(data.target_train),
      target_test=apply(data.target_test), source_val=apply(data.source_val),
      standardizer=(mean, std) if mode == 'standardize' else None)
