"""The train state and the compiled data-parallel train step.

The step is a pure function (state, source_bank, target_bank) -> (state, metrics): it draws
this step's source / target / mixed sets on device from the PRNG key, runs one encoder pass
over all of them, and applies the optimizer. `steps_per_dispatch` steps run in one compiled
call through `lax.scan`; R replicas (seeds x values of config.vary) run as one vmapped step.
It refuses an update whose loss or gradient norm is not finite (the state is kept and the
refusal counted in `skipped_updates`); the loop (train.py) stops on it.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from dlvhd_jax import model as model_lib
from dlvhd_jax import hparams, keys, objectives, parallel, sampling
from dlvhd_jax.replica_axis import num_replicas, replicas, selected_group, value_groups


@struct.dataclass
class TrainState:
  params: Any  # nnx.State of the model's parameters (float32)
  opt_state: Any
  step: jax.Array  # [] int32
  key: jax.Array  # [2] uint32 raw PRNG key
  skipped_updates: jax.Array  # [] int32: updates refused for a non-finite loss or gradient
  # train.select = best_source_val: the parameters of the best source-validation evaluation
  # so far, its mAP and its step (None otherwise). Part of the state, so a resumed run
  # selects exactly as an uninterrupted one.
  best_params: Any = None
  best_val: jax.Array | None = None  # [] float32, -inf before the first evaluation
  best_step: jax.Array | None = None  # [] int32
  # config.vary: this replica's value of the varied hyper-parameter ([] float32; None without).
  hparam: jax.Array | None = None


def init_state(cfg, in_dim: int, objective: objectives.Objective, tx, mesh,
               abstract: bool = False):
  """-> (graphdef, TrainState laid out by parallel.state_sharding).

  With config.num_seeds = R > 1 every leaf gets a leading axis of R: replica r holds exactly
  the state a standalone run with seed + r starts from (its parameters and its PRNG key).
  With config.vary, the axis is values x seeds (`replicas`) and each state holds its value.
  The state is born sharded: one jitted program builds every replica, its optimizer state
  and best parameters straight into their layout (FSDP shards included), so no device ever
  holds an unsharded copy. `abstract`: only the state's shapes, dtypes and shardings
  (jax.ShapeDtypeStruct leaves), e.g. as the target of a checkpoint restore.
  """
  variant = model_lib.variant_of(cfg)
  pairs = replicas(cfg)

  def one(value, seed):
    init_key, train_key = keys.seed_keys(variant, seed)
    params = nnx.state(model_lib.build_model(cfg, in_dim, objective.heads, init_key))
    state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32),
                       jax.random.key_data(train_key), jnp.zeros((), jnp.int32))
    if selects_best(cfg):
      state = state.replace(best_params=jax.tree.map(jnp.copy, params),
                            best_val=jnp.full((), -jnp.inf, jnp.float32),
                            best_step=jnp.zeros((), jnp.int32))
    if value is not None:
      state = state.replace(hparam=jnp.asarray(value, jnp.float32))
    return state

  def build():
    if len(pairs) == 1:
      return one(*pairs[0])
    # One vmap over the replicas' seeds (and values) writes each leaf straight into its
    # stacked [R, ...] output; a list of replicas then jnp.stack kept a second copy of the
    # state as temporaries. Random draws under vmap are the per-key draws, bit for bit.
    seeds = jnp.asarray([s for _, s in pairs], jnp.int32)
    if pairs[0][0] is None:
      return jax.vmap(lambda s: one(None, s))(seeds)
    return jax.vmap(one)(jnp.asarray([v for v, _ in pairs], jnp.float32), seeds)

  graphdef = nnx.graphdef(nnx.eval_shape(
      lambda: model_lib.build_model(cfg, in_dim, objective.heads, 0)))
  shapes = jax.eval_shape(build)
  layout = parallel.state_sharding(mesh, shapes, len(pairs) > 1)
  if abstract:
    return graphdef, jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), shapes, layout)
  return graphdef, jax.jit(build, out_shardings=layout)()


def selects_best(cfg) -> bool:
  return cfg.train.get('select', 'last') == 'best_source_val'


@jax.jit
def keep_best(state: TrainState, vals: jax.Array, step: jax.Array) -> TrainState:
  """Where a seed's source-validation mAP `vals` ([] or [R]) beats its best so far, its
  current parameters become its best."""
  better = vals > state.best_val
  pick = lambda new, old: jnp.where(better.reshape(better.shape + (1,) * (new.ndim - better.ndim)),
                                    new, old)
  return state.replace(best_params=jax.tree.map(pick, state.params, state.best_params),
                       best_val=jnp.where(better, vals, state.best_val),
                       best_step=jnp.where(better, step, state.best_step))


def eval_params(cfg, state: TrainState):
  """The parameters a run is evaluated with: the last ones, or per seed the best on source
  validation (train.select)."""
  return state.best_params if selects_best(cfg) else state.params


def chosen_params(cfg, state: TrainState):
  """eval_params of the replicas of the value chosen on source validation, laid out as a
  run without config.vary would hold them ([R, ...] leaves, or unbatched for one seed)."""
  params = eval_params(cfg, state)
  if not hparams.key(cfg):
    return params
  val = np.asarray(jax.device_get(state.best_val), np.float64).reshape(-1)
  group = value_groups(cfg)[selected_group(cfg, np.where(diverged_replicas(cfg, state), -np.inf,
                                                         val))]
  take = (lambda x: x[group[0]]) if len(group) == 1 else (lambda x: x[np.asarray(group)])
  return jax.tree.map(take, params)


def current_step(state: TrainState) -> int:
  """The state's step (replicas advance together)."""
  return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


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
                    batch: int, steps_per_dispatch: int = 1, total_steps: int | None = None,
                    state_sharding=None):
  """-> jitted fn(state, source_bank, target_bank) -> (state, metrics {name: [K]} or
  [K, R] for R seeds). `state_sharding`: the state's layout (parallel.state_sharding; the
  default replicates it); the new state keeps it."""
  parallel.check_batch(batch, mesh, 'train.batch_size')
  # The schedule's length, for objectives that follow it (RevGrad's reversal coefficient);
  # without it only an explicit train.num_steps is known.
  total = int(total_steps or max(int(cfg.train.num_steps), 0))

  def one_step(state: TrainState, banks):
    source, target = banks
    k_batch, k_loss = keys.step_keys(jax.random.wrap_key_data(state.key), state.step)
    sets = draw_batch(k_batch, source, target, cfg, batch, objective.uses_target, mesh)
    # The objective receives this replica's loss hyper-parameters (config.vary: its value of
    # the varied key); a varied learning rate scales the updates instead (every schedule and
    # optimizer here is linear in it).
    ctx = objectives.StepContext(cfg, hparams.step_values(cfg, state.hparam), state.step, total)
    step_tx, lr_scale = tx, 1.0
    if state.hparam is not None and hparams.key(cfg) == hparams.LEARNING_RATE:
      lr_scale = hparams.lr_factor(cfg, state.hparam)
      step_tx = hparams.scale_updates(tx, lr_scale)
    params, opt_state, metrics = objective.apply_update(graphdef, step_tx, state.params,
                                                        state.opt_state, sets, k_loss, ctx)
    # Refuse an update computed from a non-finite loss or gradient: keep the state (an
    # elementwise select on the new state, no host round trip).
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for k, v in metrics.items()
                            if k.startswith('loss') or k == 'grad_norm']))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
    skipped = 1 - ok.astype(jnp.int32)
    metrics['skipped_updates'] = skipped
    metrics['lr'] = jnp.asarray(lr_fn(state.step) * lr_scale, jnp.float32)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1,
                         skipped_updates=state.skipped_updates + skipped), metrics

  # R seeds (x the values of config.vary): the same step vmapped over the replicas' states;
  # the banks are shared.
  step_fn = jax.vmap(one_step, in_axes=(0, None)) if num_replicas(cfg) > 1 else one_step

  def multi_step(state, source, target):
    return jax.lax.scan(lambda s, _: step_fn(s, (source, target)), state, None,
                        length=steps_per_dispatch)

  rep = parallel.replicated(mesh)
  state_sh = rep if state_sharding is None else state_sharding
  return jax.jit(multi_step, in_shardings=(state_sh, rep, rep), out_shardings=(state_sh, rep),
                 donate_argnums=0)


def diverged_replicas(cfg, state: TrainState) -> np.ndarray:
  """[replicas] bool: replicas whose update was ever refused for a non-finite loss or
  gradient. Only a config.vary run keeps training past one (its value is then out of the
  choice); any other run stops at the first."""
  return np.asarray(jax.device_get(state.skipped_updates)).reshape(-1) > 0
