"""Where every random key of a seed comes from.

`published` (the default variant) derives all of seed s's keys from one root, key(s), by
splitting: the parameter initialization and the training stream (sampled sets and dropout)
never share a key, within a seed or between seeds. `v1` keeps the first derivation
(parameters from key(s), training from key(s + 1)), so that its numbers stay reproducible;
there seed s's training stream starts from seed s + 1's initialization key.

In the step, the key of step t is fold_in(train key, t), split into the key of the sampled
sets and the key of the loss (dropout, and the objective's own draws).
"""
from __future__ import annotations

import jax


def seed_keys(variant: str, seed: int) -> tuple[jax.Array, jax.Array]:
  """-> (initialization key, training key) of `seed`, both typed PRNG keys."""
  if variant == 'v1':
    return jax.random.key(seed), jax.random.key(seed + 1)
  init, train = jax.random.split(jax.random.key(seed))
  return init, train


def step_keys(train_key: jax.Array, step) -> tuple[jax.Array, jax.Array]:
  """-> (key of the step's sampled sets, key of its loss) for step `step` ([] int)."""
  k_batch, k_loss = jax.random.split(jax.random.fold_in(train_key, step))
  return k_batch, k_loss
