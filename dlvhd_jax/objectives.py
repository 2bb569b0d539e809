"""Training objectives, one registry for every method (`config.method`).

An objective names the heads its model needs, which heads score at test time, whether it
draws unlabeled target sets, and its loss on one step's sets. The train step, sampling and
evaluation are shared; a new method (e.g. a UDA baseline) is one more `Objective` in
`dlvhd_jax/methods.py`'s registry instead of a copy of the loop. This module holds the
SL-module, DL-VHD and DL-VHD's ablations (`CORE`); `baselines.py` the UDA baselines.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dlvhd_jax import losses


@dataclasses.dataclass(frozen=True)
class SetBatch:
  """One step's sets: x [B, N, D], y [B, N] float, mask [B, N] bool; target/mixed may be None."""
  source_x: jax.Array
  source_y: jax.Array
  source_mask: jax.Array
  target_x: jax.Array | None = None
  target_mask: jax.Array | None = None
  mixed_x: jax.Array | None = None
  mixed_y: jax.Array | None = None
  mixed_mask: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What an objective reads besides its sets and key. Built inside the step, per replica."""
  cfg: Any  # the run's config: static settings only (uda.dan.num_kernels, ...)
  # hparams.LOSS_KEYS -> value: floats, or this replica's traced [] float32 for the key that
  # config.vary varies. Objectives read loss weights and tau here, never from cfg.
  hp: Mapping[str, Any]
  step: jax.Array  # [] int32, the step being taken (0-based)
  total_steps: int  # the schedule's length (0: unknown)


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  heads: tuple[str, ...]
  eval_heads: tuple[str, ...]  # test-time score = mean of these heads
  uses_target: bool  # draws unlabeled target (and mixed) sets
  # loss(model, batch, key, ctx: StepContext) -> (scalar loss, {name: scalar metric})
  loss: Callable
  # update(graphdef, tx, params, opt_state, batch, key, ctx: StepContext)
  #   -> (params, opt_state, metrics with 'loss' and 'grad_norm').
  # None: one gradient step on `loss` (gradient_update). A method with several optimizer
  # phases per step (MCD) brings its own.
  update: Callable | None = None
  # The config key of the method's own loss weight: what a user lowers when training diverges.
  weight_key: str | None = None
  # (encoder, head): how many groups of B sets one step runs through the encoder and through
  # one scoring head, for the benchmark's analytic FLOPs (DL-VHD: source, target and mixed
  # sets encoded; fine on source + target, coarse on mixed + target).
  passes: tuple[int, int] = (1, 1)

  @property
  def reads_mixed_sets(self) -> bool:
    """Whether a head trains on mixed sets (DL-VHD's coarse learner), whose first k slots
    hold the target's segments."""
    return self.uses_target and 'coarse' in self.heads

  def apply_update(self, graphdef, tx, params, opt_state, batch: SetBatch, key,
                   ctx: StepContext):
    """The objective's update, the same signature for every method."""
    update = self.update or functools.partial(gradient_update, self.loss)
    return update(graphdef, tx, params, opt_state, batch, key, ctx)


def gradient_update(loss, graphdef, tx, params, opt_state, batch: SetBatch, key,
                    ctx: StepContext):
  """One optimizer step on `loss` -> (params, opt_state, metrics with 'loss' and 'grad_norm')."""
  def loss_fn(p):
    return loss(nnx.merge(graphdef, p), batch, key, ctx)
  (value, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state,
          {'loss': value, 'grad_norm': optax.global_norm(grads), **metrics})


def encode_sets(model, xs, masks, key):
  """One encoder pass over several groups of sets: lists of [B_i, N, D] / [B_i, N] -> list of [B_i, N, W]."""
  sizes = [x.shape[0] for x in xs]
  h = model.encode(jnp.concatenate(xs, axis=0), jnp.concatenate(masks, axis=0), key)
  return jnp.split(h, _offsets(sizes), axis=0)


def _offsets(sizes):
  out, acc = [], 0
  for s in sizes[:-1]:
    acc += s
    out.append(acc)
  return out


def score_head(model, head: str, hs, key):
  """One head on several groups of embeddings in one call -> list of [B_i, N] scores. The
  head's dropout key is the one `model.score` gives it."""
  sizes = [h.shape[0] for h in hs]
  scores = model.score(jnp.concatenate(hs, axis=0), key, (head,))[head]
  return jnp.split(scores, _offsets(sizes), axis=0)


def pred_loss_args(ctx: StepContext) -> dict:
  """set_prediction_loss's settings for this run: tau (this replica's), loss.set_loss and
  loss.rank_margin."""
  return {'temperature': ctx.hp['loss.temperature'], 'kind': ctx.cfg.loss.get('set_loss', 'kl'),
          'margin': float(ctx.cfg.loss.get('rank_margin', 0.5))}


def _sl_loss(model, batch: SetBatch, key, ctx: StepContext):
  k_enc, k_head = jax.random.split(key)
  (h,) = encode_sets(model, [batch.source_x], [batch.source_mask], k_enc)
  (s,) = score_head(model, 'score', [h], k_head)
  loss = losses.set_prediction_loss(batch.source_y, s, batch.source_mask, **pred_loss_args(ctx))
  return loss, {'loss_pred': loss}


def _dlvhd_loss_fn(use_coarse=True, use_fine=True, use_distill=True, coarse_stop_gradient=False):
  def loss_fn(model, batch: SetBatch, key, ctx: StepContext):
    k_enc, k_head = jax.random.split(key)
    hs, ht, hm = encode_sets(model, [batch.source_x, batch.target_x, batch.mixed_x],
                             [batch.source_mask, batch.target_mask, batch.mixed_mask], k_enc)
    # Only the four (head, sets) pairs the loss reads: fine on source and target, coarse on
    # mixed and target (a third fewer head FLOPs than every head on every set).
    fs, ft = score_head(model, 'fine', [hs, ht], k_head)
    if coarse_stop_gradient:
      # The named change (not the paper): the coarse learner trains its own head only, so
      # telling target from source segments cannot reshape the shared encoder the fine head
      # reads; the coarse head still reaches the fine head through L_distill.
      hm, ht = jax.lax.stop_gradient(hm), jax.lax.stop_gradient(ht)
    cm, ct = score_head(model, 'coarse', [hm, ht], k_head)
    return losses.dlvhd_loss(
        batch.source_y, fs, batch.mixed_y, cm, ct, ft,
        batch.source_mask, batch.mixed_mask, batch.target_mask,
        distill_weight=ctx.hp['loss.distill_weight'], use_coarse=use_coarse,
        use_fine=use_fine, use_distill=use_distill,
        distill_to=ctx.cfg.loss.get('distill_to', 'both'), **pred_loss_args(ctx))
  return loss_fn


# The SL-module, DL-VHD and the ablations of Table 4 (coarse-only / fine-only score with the
# head they train).
CORE = (
    Objective('sl', heads=('score',), eval_heads=('score',), uses_target=False, loss=_sl_loss),
    Objective('dlvhd', heads=('coarse', 'fine'), eval_heads=('coarse', 'fine'), uses_target=True,
              loss=_dlvhd_loss_fn(), weight_key='loss.distill_weight', passes=(3, 4)),
    Objective('dlvhd_coarse_only', heads=('coarse', 'fine'), eval_heads=('coarse',),
              uses_target=True, loss=_dlvhd_loss_fn(use_fine=False, use_distill=False), passes=(3, 4)),
    Objective('dlvhd_fine_only', heads=('coarse', 'fine'), eval_heads=('fine',),
              uses_target=True, loss=_dlvhd_loss_fn(use_coarse=False, use_distill=False), passes=(3, 4)),
    Objective('dlvhd_no_distill', heads=('coarse', 'fine'), eval_heads=('coarse', 'fine'),
              uses_target=True, loss=_dlvhd_loss_fn(use_distill=False), passes=(3, 4)),
    # A change to the method, reported apart from it: the coarse learner's gradient stops
    # at the shared encoder (L_coarse and L_distill's coarse term train the coarse head only).
    Objective('dlvhd_coarse_sg', heads=('coarse', 'fine'), eval_heads=('coarse', 'fine'),
              uses_target=True, loss=_dlvhd_loss_fn(coarse_stop_gradient=True),
              weight_key='loss.distill_weight', passes=(3, 4)),
)
