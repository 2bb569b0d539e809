"""The learning-rate schedule and the optimizer: the paper's SGD with momentum, weight decay
and step decay (as its published code times it for the published variant), or AdamW."""
from __future__ import annotations

import dataclasses
import math

import optax

from dlvhd_jax import model as model_lib
from dlvhd_jax.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Step counts: epochs as in the published code (one set per source segment per epoch).

  `decay_offset`: steps by which every step decay comes early. The published code calls its
  StepLR at the start of each epoch, so epoch e trains at lr * factor^((e + 1) // 20): the
  decays come one epoch early (after epochs 19 and 39 of 50). The published variant does the
  same (one epoch = decay_steps / lr_decay_epochs steps); v1 decays at the epoch boundary.
  """
  steps_per_epoch: int
  total_steps: int
  decay_steps: int
  decay_offset: int = 0


def make_schedule(cfg, num_source_segments: int) -> Schedule:
  t = cfg.train
  steps_per_epoch = max(1, math.ceil(num_source_segments / t.batch_size))
  if t.num_steps > 0:
    total = int(t.num_steps)
    decay = max(1, round(total * t.lr_decay_epochs / max(t.num_epochs, 1)))
  else:
    total = int(t.num_epochs * steps_per_epoch)
    decay = int(t.lr_decay_epochs * steps_per_epoch)
  offset = 0
  if model_lib.variant_of(cfg) == 'published' and t.get('lr_schedule', 'step') == 'step':
    offset = min(decay - 1, max(0, round(decay / max(t.lr_decay_epochs, 1))))
  return Schedule(steps_per_epoch, total, decay, offset)


def make_lr(cfg, schedule: Schedule):
  """step -> learning rate: `train.lr_schedule` (step = the paper's staircase decay by
  lr_decay_factor every decay_steps; cosine = to 0 at the last step; constant) after a linear
  warmup of `train.warmup_steps` from 0 (the decay counts from the warmup's end)."""
  t = cfg.train
  kind = t.get('lr_schedule', 'step')
  warmup = int(t.get('warmup_steps', 0))
  if kind == 'step':
    decay = optax.exponential_decay(t.learning_rate, schedule.decay_steps, t.lr_decay_factor,
                                    staircase=True)
    main = (decay if not schedule.decay_offset else
            (lambda step, _o=schedule.decay_offset: decay(step + _o)))
  elif kind == 'cosine':
    main = optax.cosine_decay_schedule(t.learning_rate, max(1, schedule.total_steps - warmup))
  elif kind == 'constant':
    main = optax.constant_schedule(t.learning_rate)
  else:
    raise UserInputError(f'config.train.lr_schedule={kind!r}: use step, cosine or constant')
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, t.learning_rate, warmup), main],
                              [warmup])


def make_optimizer(cfg, schedule: Schedule):
  """-> (optax transform, lr schedule). `train.optimizer`: sgd (the paper; torch semantics:
  weight decay added to the gradient before momentum) or adamw (decoupled weight decay,
  scaled by the learning rate as in optax/torch AdamW; betas (momentum, 0.999))."""
  t = cfg.train
  lr = make_lr(cfg, schedule)
  kind = t.get('optimizer', 'sgd')
  if kind == 'sgd':
    tx = optax.chain(optax.add_decayed_weights(t.weight_decay),
                     optax.sgd(lr, momentum=t.momentum or None))
  elif kind == 'adamw':
    tx = optax.adamw(lr, b1=t.momentum, b2=0.999, weight_decay=t.weight_decay)
  else:
    raise UserInputError(f'config.train.optimizer={kind!r}: use sgd or adamw')
  return tx, lr
