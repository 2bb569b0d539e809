"""A vectorized axis over one scalar hyper-parameter (config.vary), beside the seeds.

`--config.vary.key=uda.dan.weight --config.vary.values="(0.1,1.0,10.0)"` trains, for every
value, the `num_seeds` seeds as replicas of the same vmapped step (value-major: replica
i = (values[i // R], seed + i % R)). Replica (v, s) is exactly the standalone run with
`key = v` and `seed = s`: same initialization, sampled sets and dropout, so values are
compared on paired seeds. Each replica carries its value in the train state; inside the step
the objective receives every loss hyper-parameter explicitly (`step_values`, in its
`objectives.StepContext`), the varied one as the replica's traced value.

Only keys that enter the step as a scalar can vary (VECTORIZABLE). The learning rate does not
enter a loss: every schedule (step, cosine, constant, with warmup) and both optimizers (SGD's
and AdamW's updates, decoupled decay included) are linear in `train.learning_rate`, so a
replica's updates are the base optimizer's scaled by value / train.learning_rate.
"""
from __future__ import annotations

import jax
import optax

LEARNING_RATE = 'train.learning_rate'
# Each key that can vary, with the value a config without it means (configs/base.py's).
VECTORIZABLE = {LEARNING_RATE: None, 'loss.distill_weight': 1.0, 'loss.temperature': 1.0,
                'uda.dan.weight': 1.0, 'uda.coral.weight': 1.0, 'uda.revgrad.weight': 1.0,
                'uda.mcd.weight': 1.0, 'uda.afn.weight': 0.05}
# The ones an objective reads (the learning rate enters through the updates: lr_factor).
LOSS_KEYS = tuple(k for k in VECTORIZABLE if k != LEARNING_RATE)


def key(cfg) -> str:
  """The varied key, or '' when the run has no hyper-parameter axis."""
  vary = cfg.get('vary', None)
  return str(vary.get('key', '') or '') if vary is not None else ''


def values(cfg) -> tuple[float, ...] | tuple[None]:
  """The varied values, or (None,) without an axis (one group of seeds)."""
  return tuple(float(v) for v in cfg.vary['values']) if key(cfg) else (None,)


def _read(cfg, dotted: str, default):
  node = cfg
  for part in dotted.split('.'):
    if node is None or part not in node:
      return default
    node = node[part]
  return node


def step_values(cfg, value=None) -> dict[str, float | jax.Array]:
  """The loss hyper-parameters one replica's step uses, passed to the objective explicitly:
  every key of LOSS_KEYS -> the config's value (a float; VECTORIZABLE's default where the
  config lacks it), except the varied key, which reads this replica's `value` ([] float32)."""
  varied = key(cfg)
  return {k: value if (k == varied and value is not None) else float(_read(cfg, k, VECTORIZABLE[k]))
          for k in LOSS_KEYS}


def scale_updates(tx: optax.GradientTransformation, factor) -> optax.GradientTransformation:
  """`tx` with its updates multiplied by `factor` (same state, so it replaces tx in place)."""
  def update(updates, state, params=None):
    updates, state = tx.update(updates, state, params)
    return jax.tree.map(lambda u: u * factor, updates), state
  return optax.GradientTransformation(tx.init, update)


def lr_factor(cfg, value):
  """Replica's learning rate over the base one (1 unless the learning rate varies)."""
  return value / float(cfg.train.learning_rate) if key(cfg) == LEARNING_RATE else 1.0
