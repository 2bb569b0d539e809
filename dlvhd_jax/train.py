"""Train state, the compiled data-parallel train step, and the training loop.

The step is a pure function (state, source_bank, target_bank) -> (state, metrics): it draws
this step's source / target / mixed sets on device from the PRNG key, runs one encoder pass
over all of them, and applies SGD with momentum and weight decay. `steps_per_dispatch` steps
run in one compiled call through `lax.scan`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from tqdm import tqdm

from dlvhd_jax import model as model_lib
from dlvhd_jax import objectives, parallel, sampling
from dlvhd_jax.checkpoint import Checkpointer


@struct.dataclass
class TrainState:
  params: Any  # nnx.State of the model's parameters (float32)
  opt_state: Any
  step: jax.Array  # [] int32
  key: jax.Array  # [2] uint32 raw PRNG key


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Step counts: epochs as in the published code (one set per source segment per epoch)."""
  steps_per_epoch: int
  total_steps: int
  decay_steps: int


def make_schedule(cfg, num_source_segments: int) -> Schedule:
  t = cfg.train
  steps_per_epoch = max(1, math.ceil(num_source_segments / t.batch_size))
  if t.num_steps > 0:
    total = int(t.num_steps)
    decay = max(1, round(total * t.lr_decay_epochs / max(t.num_epochs, 1)))
  else:
    total = int(t.num_epochs * steps_per_epoch)
    decay = int(t.lr_decay_epochs * steps_per_epoch)
  return Schedule(steps_per_epoch, total, decay)


def make_optimizer(cfg, schedule: Schedule):
  t = cfg.train
  lr = optax.exponential_decay(t.learning_rate, schedule.decay_steps, t.lr_decay_factor,
                               staircase=True)
  # torch SGD semantics: weight decay is added to the gradient before momentum.
  tx = optax.chain(optax.add_decayed_weights(t.weight_decay),
                   optax.sgd(lr, momentum=t.momentum or None))
  return tx, lr


def init_state(cfg, in_dim: int, objective: objectives.Objective, tx, mesh):
  """-> (graphdef, replicated TrainState)."""
  model = model_lib.build_model(cfg, in_dim, objective.heads, cfg.seed)
  graphdef, params = nnx.split(model)
  state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32),
                     jax.random.key_data(jax.random.key(cfg.seed + 1)))
  return graphdef, jax.device_put(state, parallel.replicated(mesh))


def draw_batch(key, source: sampling.SegmentBank, target: sampling.SegmentBank | None, cfg,
               batch: int, uses_target: bool, mesh) -> objectives.SetBatch:
  """This step's B source sets (+ B target and B mixed sets), laid out along the data axis."""
  s = cfg.sampling
  k_s, k_t, k_m = jax.random.split(key, 3)
  shard = lambda x: parallel.shard_sets(x, mesh)
  s_idx, s_mask = map(shard, sampling.sample_sets(k_s, source, batch, s.set_size, s.mode))
  s_x, s_y = source.features[s_idx], source.labels[s_idx]
  if not uses_target:
    return objectives.SetBatch(s_x, s_y, s_mask)
  t_idx, t_mask = map(shard, sampling.sample_sets(k_t, target, batch, s.set_size, s.mode))
  t_x = target.features[t_idx]
  from_t, pos, m_mask, m_y = map(shard, sampling.sample_mixed_sets(
      k_m, s_mask, t_mask, s.mixed_share, s.source_label_in_mixed))
  m_x = sampling.gather_mixed(from_t, pos, s_x, t_x)
  return objectives.SetBatch(s_x, s_y, s_mask, t_x, t_mask, m_x, m_y, m_mask)


def make_train_step(graphdef, tx, lr_fn, objective: objectives.Objective, cfg, mesh,
                    batch: int, steps_per_dispatch: int = 1, total_steps: int | None = None):
  """-> jitted fn(state, source_bank, target_bank) -> (state, metrics {name: [K]})."""
  parallel.check_batch(batch, mesh, 'train.batch_size')

  def one_step(state: TrainState, banks):
    source, target = banks
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    k_batch, k_loss = jax.random.split(key)
    sets = draw_batch(k_batch, source, target, cfg, batch, objective.uses_target, mesh)
    if objective.update is not None:
      params, opt_state, metrics = objective.update(graphdef, tx, state.params, state.opt_state,
                                                    sets, k_loss, cfg, state.step,
                                                    total_steps=total_steps)
    else:
      def loss_fn(params):
        return objective.loss(nnx.merge(graphdef, params), sets, k_loss, cfg)
      (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      metrics = {'loss': loss, **metrics}
    metrics['lr'] = jnp.asarray(lr_fn(state.step), jnp.float32)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics

  def multi_step(state, source, target):
    return jax.lax.scan(lambda s, _: one_step(s, (source, target)), state, None,
                        length=steps_per_dispatch)

  rep = parallel.replicated(mesh)
  return jax.jit(multi_step, in_shardings=(rep, rep, rep), out_shardings=(rep, rep),
                 donate_argnums=0)


def flatten_state(state: TrainState) -> dict[str, jax.Array]:
  """A plain {index: array} view of the state for checkpointing (robust to pytree node types)."""
  return {f'{i:05d}': leaf for i, leaf in enumerate(jax.tree.leaves(state))}


def unflatten_state(flat: dict, like: TrainState) -> TrainState:
  return jax.tree.unflatten(jax.tree.structure(like), [flat[k] for k in sorted(flat)])


class MetricsWriter:
  """Appends one JSON line per log interval to <workdir>/metrics.jsonl."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')

  def write(self, record: dict) -> None:
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')


def fit(cfg, workdir: str, source: sampling.SegmentBank, target: sampling.SegmentBank | None,
        objective: objectives.Objective, mesh, *, in_dim: int, show_progress: bool = True):
  """Trains from the latest checkpoint in `workdir` (or from scratch) to the schedule's end.

  source/target are host (numpy) banks; they are put on the devices once. Returns
  (graphdef, final state).
  """
  schedule = make_schedule(cfg, source.num_segments)
  tx, lr_fn = make_optimizer(cfg, schedule)
  graphdef, state = init_state(cfg, in_dim, objective, tx, mesh)
  ckpt = Checkpointer(workdir, cfg.train.max_checkpoints)
  if ckpt.latest_step() is not None:
    state = unflatten_state(ckpt.restore(flatten_state(state)), state)
  rep = parallel.replicated(mesh)
  source_dev = jax.device_put(source, rep)
  target_dev = jax.device_put(target if target is not None else source, rep)

  k = max(1, int(cfg.train.steps_per_dispatch))
  make_step = lambda n: make_train_step(graphdef, tx, lr_fn, objective, cfg, mesh,
                                        cfg.train.batch_size, n, schedule.total_steps)
  steps = {k: make_step(k)}
  writer = MetricsWriter(workdir)
  step = int(jax.device_get(state.step))
  total = schedule.total_steps
  log_every = max(1, int(cfg.train.log_every_steps))
  ckpt_every = max(1, int(cfg.train.checkpoint_every_steps))
  bar = tqdm(total=total, initial=step, desc=f'train {cfg.method}', unit='step',
             disable=not show_progress, dynamic_ncols=True)
  pending, t_last, step_last = [], time.perf_counter(), step
  # 'disallow' (tests) proves the loop moves data between host and device only explicitly.
  with jax.transfer_guard(cfg.train.get('transfer_guard', 'allow')):
    while step < total:
      n = k if total - step >= k else 1
      if n not in steps:
        steps[n] = make_step(n)
      state, metrics = steps[n](state, source_dev, target_dev)
      pending.append(metrics)
      prev, step = step, step + n
      bar.update(n)
      if step // log_every > prev // log_every or step == total:
        # The only host sync of the loop: fetch the metrics of the interval.
        host = jax.device_get(pending)
        now = time.perf_counter()
        record = {name: float(np.mean(np.concatenate([np.atleast_1d(m[name]) for m in host])))
                  for name in host[0]}
        record.update(step=step, epoch=step / schedule.steps_per_epoch,
                      steps_per_s=(step - step_last) / max(now - t_last, 1e-9))
        writer.write(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        pending, t_last, step_last = [], now, step
      if step // ckpt_every > prev // ckpt_every or step == total:
        ckpt.save(step, flatten_state(state))
  bar.close()
  ckpt.close()
  return graphdef, state


def restore_for_eval(cfg, workdir: str, in_dim: int, objective, mesh, num_source_segments: int):
  """-> (graphdef, state) of the latest checkpoint in `workdir`."""
  schedule = make_schedule(cfg, num_source_segments)
  tx, _ = make_optimizer(cfg, schedule)
  graphdef, state = init_state(cfg, in_dim, objective, tx, mesh)
  ckpt = Checkpointer(workdir, cfg.train.max_checkpoints)
  if ckpt.latest_step() is None:
    from data_pipelines.errors import UserInputError  # pylint: disable=g-import-not-at-top
    raise UserInputError(f'no checkpoint in {ckpt.directory}: run --mode=train first')
  state = unflatten_state(ckpt.restore(flatten_state(state)), state)
  ckpt.close()
  return graphdef, state
