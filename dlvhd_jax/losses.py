"""The losses of SL-module and DL-VHD (SPEC: "SL-module", "DL-VHD").

All functions are per set: inputs [B, N] with a [B, N] bool mask of valid positions, output
[B]. Softmaxes and KLs run in float32 whatever the compute dtype of the model.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -1e30


def masked_log_softmax(x: jax.Array, mask: jax.Array) -> jax.Array:
  """log softmax over the valid positions of each set: [B, N] -> [B, N] (0 at padding)."""
  x = jnp.where(mask, x.astype(jnp.float32), _NEG)
  out = x - jax.nn.logsumexp(x, axis=-1, keepdims=True)
  return jnp.where(mask, out, 0.0)


def set_kl_divergence(target: jax.Array, pred: jax.Array, mask: jax.Array) -> jax.Array:
  """KL(softmax(target) || softmax(pred)) over the valid positions, / number of valid positions.

  target, pred: [B, N] float; mask: [B, N] bool -> [B]. The division matches torch's
  `kl_div(reduction='mean')` on an unpadded set of that size.
  """
  log_p = masked_log_softmax(target, mask)
  log_q = masked_log_softmax(pred, mask)
  p = jnp.where(mask, jnp.exp(log_p), 0.0)
  kl = jnp.sum(p * (log_p - log_q), axis=-1)
  return kl / jnp.maximum(jnp.sum(mask, axis=-1), 1)


DISTILL_TO = ('both', 'fine', 'coarse')


def distillation_loss(coarse: jax.Array, fine: jax.Array, mask: jax.Array,
                      to: str = 'both') -> jax.Array:
  """L_distill per set: 1/2 [KL(sm(y_avg) || sm(coarse)) + KL(sm(y_avg) || sm(fine))].

  coarse, fine: the two heads' scores in (-1, 1), [B, N]; mask [B, N] -> [B]. y_avg is the
  heads' mean; the gradient flows through it as in the published code, and stopping it
  would change nothing: with p = sm(y_avg), log q_coarse + log q_fine = 2 log p + const
  (y_avg is the mean of the two logits), so the derivative of the two KLs with respect to p,
  2 log p - log q_coarse - log q_fine + 2, is the same at every position, and the softmax
  Jacobian maps a constant vector to 0 (tests/test_losses.py checks this numerically).

  So each head gets its gradient from its own KL only, and `to` picks the direction (a
  named change; 'both' is the paper): 'fine' keeps the fine head's half of the gradient
  (the coarse head teaches, unmoved), 'coarse' the coarse head's half. The value is the
  paper's in every case; only the gradient of the other head is stopped.
  """
  coarse, fine = coarse.astype(jnp.float32), fine.astype(jnp.float32)
  if to == 'fine':
    coarse = jax.lax.stop_gradient(coarse)
  elif to == 'coarse':
    fine = jax.lax.stop_gradient(fine)
  avg = 0.5 * (coarse + fine)
  return 0.5 * (set_kl_divergence(avg, coarse, mask) + set_kl_divergence(avg, fine, mask))


def has_positive(labels: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, N] labels -> [B] float weight: 1 if the set has a valid label > 0, else 0."""
  return jnp.any((labels > 0) & mask, axis=-1).astype(jnp.float32)


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean of [B] values over the sets with weight 1 (0 if there is none)."""
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


SET_LOSSES = ('kl', 'rank')


def set_rank_loss(labels: jax.Array, scores: jax.Array, mask: jax.Array,
                  margin: float) -> jax.Array:
  """Graded pairwise hinge per set: sum_ij w_ij max(0, margin - (s_i - s_j)) / sum_ij w_ij over
  valid pairs, w_ij = max(y_i - y_j, 0), so a pair counts by how far apart its labels are
  (binary labels: every highlight against every non-highlight alike). [B, N] -> [B]; 0 for a
  set whose labels are all equal."""
  y, s = labels.astype(jnp.float32), scores.astype(jnp.float32)
  pair = mask[:, :, None] & mask[:, None, :]
  w = jnp.where(pair, jnp.maximum(y[:, :, None] - y[:, None, :], 0.0), 0.0)
  hinge = jnp.maximum(margin - (s[:, :, None] - s[:, None, :]), 0.0)
  total = jnp.sum(w, axis=(1, 2))
  return jnp.sum(w * hinge, axis=(1, 2)) / jnp.where(total > 0, total, 1.0)


def set_prediction_loss(labels: jax.Array, scores: jax.Array, mask: jax.Array,
                        temperature: float = 1.0, kind: str = 'kl',
                        margin: float = 0.5) -> jax.Array:
  """SL-module's L_pred, KL(softmax(y / tau) || softmax(s)), averaged over the sets that carry
  a positive label: [B, N] -> []. tau = 1 is the paper; tau < 1 sharpens the target toward
  the highlights (config.loss.temperature). kind='rank' (config.loss.set_loss, a named change)
  replaces the KL by set_rank_loss with `margin`; tau does not enter it."""
  if kind == 'rank':
    per_set = set_rank_loss(labels, scores, mask, margin)
  else:
    target = labels.astype(jnp.float32) / temperature  # exact at tau = 1
    per_set = set_kl_divergence(target, scores, mask)
  return weighted_mean(per_set, has_positive(labels, mask))


def dlvhd_loss(source_labels, source_fine, mixed_labels, mixed_coarse, target_coarse,
               target_fine, source_mask, mixed_mask, target_mask, *, distill_weight: float,
               use_coarse: bool = True, use_fine: bool = True,
               use_distill: bool = True, distill_to: str = 'both',
               temperature: float = 1.0, kind: str = 'kl',
               margin: float = 0.5) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_coarse + L_fine + lambda * L_distill (Eq. 6); each term averaged over its sets. [B, N] each.

  The flags give the ablations of Table 4 (coarse only, fine only, without L_distill);
  `temperature`, `kind` and `margin` are L_pred's (set_prediction_loss; the distillation
  target is the heads' own mean, unscaled); `distill_to` which head L_distill trains
  (distillation_loss's `to`).
  """
  l_coarse = set_prediction_loss(mixed_labels, mixed_coarse, mixed_mask, temperature, kind, margin)
  l_fine = set_prediction_loss(source_labels, source_fine, source_mask, temperature, kind, margin)
  l_distill = jnp.mean(distillation_loss(target_coarse, target_fine, target_mask, distill_to))
  total = (use_coarse * l_coarse + use_fine * l_fine
           + (distill_weight * use_distill) * l_distill)
  return total, {'loss_coarse': l_coarse, 'loss_fine': l_fine, 'loss_distill': l_distill}
