"""A vectorized axis over one scalar hyper-parameter (config.vary), beside the seeds.

`--config.vary.key=uda.dan.weight --config.vary.values="(0.1,1.0,10.0)"` trains, for every
value, the `num_seeds` seeds as replicas of the same vmapped step (value-major: replica
i = (values[i // R], seed + i % R)). Replica (v, s) is exactly the standalone run with
`key = v` and `seed = s`: same initialization, sampled sets and dropout, so values are
compared on paired seeds. Each replica carries its value in the train state; inside the step
the objective reads it through `overlay`, a read-only view of the config in which that one key
is the replica's traced value.

Only keys that enter the step as a scalar can vary (VECTORIZABLE). The learning rate does not
enter a loss: every schedule (step, cosine, constant, with warmup) and both optimizers (SGD's
and AdamW's updates, decoupled decay included) are linear in `train.learning_rate`, so a
replica's updates are the base optimizer's scaled by value / train.learning_rate.
"""
from __future__ import annotations

from typing import Any

import jax
import optax
import ml_collections

VECTORIZABLE = ('train.learning_rate', 'loss.distill_weight', 'loss.temperature',
                'uda.dan.weight', 'uda.coral.weight', 'uda.revgrad.weight', 'uda.mcd.weight',
                'uda.afn.weight')
LEARNING_RATE = 'train.learning_rate'


def key(cfg) -> str:
  """The varied key, or '' when the run has no hyper-parameter axis."""
  vary = cfg.get('vary', None)
  return str(vary.get('key', '') or '') if vary is not None else ''


def values(cfg) -> tuple[float, ...] | tuple[None]:
  """The varied values, or (None,) without an axis (one group of seeds)."""
  return tuple(float(v) for v in cfg.vary['values']) if key(cfg) else (None,)


class _Overlay:
  """Read-only view of a ConfigDict (sub)tree where one dotted key reads as `value`."""

  def __init__(self, node, dotted: str, value, prefix: str = ''):
    self._node, self._dotted, self._value, self._prefix = node, dotted, value, prefix

  def _wrap(self, name: str, child):
    full = self._prefix + name
    if full == self._dotted:
      return self._value
    if isinstance(child, (ml_collections.ConfigDict, dict)) and self._dotted.startswith(full + '.'):
      return _Overlay(child, self._dotted, self._value, full + '.')
    return child

  def __getattr__(self, name: str) -> Any:
    if name.startswith('_'):
      raise AttributeError(name)
    return self._wrap(name, getattr(self._node, name))

  def __getitem__(self, name: str) -> Any:
    return self._wrap(name, self._node[name])

  def get(self, name: str, default=None) -> Any:
    if name not in self._node:
      # A varied key (or a group on its path) that the config lacks still reads the value.
      full = self._prefix + name
      if full == self._dotted:
        return self._value
      return _Overlay({}, self._dotted, self._value, full + '.') if self._dotted.startswith(
          full + '.') else default
    return self._wrap(name, self._node[name])

  def __contains__(self, name: str) -> bool:
    return name in self._node


def overlay(cfg, value: jax.Array):
  """The config as the step of one replica sees it: key(cfg) reads `value` ([] float32)."""
  k = key(cfg)
  if not k or k == LEARNING_RATE:
    return cfg
  return _Overlay(cfg, k, value)


def scale_updates(tx: optax.GradientTransformation, factor) -> optax.GradientTransformation:
  """`tx` with its updates multiplied by `factor` (same state, so it replaces tx in place)."""
  def update(updates, state, params=None):
    updates, state = tx.update(updates, state, params)
    return jax.tree.map(lambda u: u * factor, updates), state
  return optax.GradientTransformation(tx.init, update)


def lr_factor(cfg, value):
  """Replica's learning rate over the base one (1 unless the learning rate varies)."""
  return value / float(cfg.train.learning_rate) if key(cfg) == LEARNING_RATE else 1.0
