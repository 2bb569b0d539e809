"""The vectorized replica axis: config.num_seeds seeds x the values of config.vary, and which
value source validation chooses. Replica i = (values[i // R], seed + i % R)."""
from __future__ import annotations

import numpy as np

from dlvhd_jax import hparams


def num_seeds(cfg) -> int:
  """R: how many independently seeded models one run trains (config.num_seeds)."""
  return max(1, int(cfg.get('num_seeds', 1) or 1))


def seeds(cfg) -> list[int]:
  return [int(cfg.seed) + r for r in range(num_seeds(cfg))]


def replicas(cfg) -> list[tuple[float | None, int]]:
  """(value of config.vary.key or None, seed) of every replica of the vectorized axis,
  value-major: each value trains the seeds seed .. seed+R-1."""
  return [(v, s) for v in hparams.values(cfg) for s in seeds(cfg)]


def num_replicas(cfg) -> int:
  """Length of the vectorized axis: values of the varied hyper-parameter x seeds."""
  return len(hparams.values(cfg)) * num_seeds(cfg)


def value_groups(cfg) -> list[list[int]]:
  """Replica indices of each value of config.vary.values (one group without an axis)."""
  r = num_seeds(cfg)
  return [list(range(i * r, (i + 1) * r)) for i in range(len(hparams.values(cfg)))]


def replica_name(cfg, i: int) -> str:
  value, seed = replicas(cfg)[i]
  return f'seed {seed}' if value is None else f'{hparams.key(cfg)}={value:g}, seed {seed}'


def selected_group(cfg, best_val) -> int:
  """The value whose seeds have the best mean source-validation mAP (`best_val` [replicas]);
  0 without an axis. Ties go to the earlier value."""
  vals = np.asarray(best_val, np.float64).reshape(-1)
  means = [float(np.mean(vals[g])) for g in value_groups(cfg)]
  return int(np.argmax(means))
