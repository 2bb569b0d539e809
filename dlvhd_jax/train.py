"""Train state, the compiled data-parallel train step, and the training loop.

The step is a pure function (state, source_bank, target_bank) -> (state, metrics): it draws
this step's source / target / mixed sets on device from the PRNG key, runs one encoder pass
over all of them, and applies the optimizer (the paper's SGD with momentum and weight decay,
or AdamW). `steps_per_dispatch` steps run in one compiled call through `lax.scan`.

Reliability lives here too: the step refuses an update whose loss or gradient norm is not
finite (the state is kept and counted); the loop stops a run with a refused update (a
non-finite loss, or a finite loss with a non-finite gradient) at the next log or checkpoint
interval (NonFiniteError, exit code 3) before any checkpoint of it is written; SIGTERM /
SIGINT save a checkpoint and end the run (Preempted); a checkpoint carries the run's
fingerprint, and resuming it with another config is refused.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from tqdm import tqdm

from dlvhd_jax import model as model_lib
from dlvhd_jax import distributed, hparams, keys, objectives, parallel, sampling
from dlvhd_jax.checkpoint import Checkpointer, run_fingerprint
from dlvhd_jax.errors import NonFiniteError, Preempted, UserInputError
from dlvhd_jax.files import is_primary, write_atomic, writing


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


def init_state(cfg, in_dim: int, objective: objectives.Objective, tx, mesh):
  """-> (graphdef, replicated TrainState).

  With config.num_seeds = R > 1 every leaf gets a leading axis of R: replica r holds exactly
  the state a standalone run with seed + r starts from (its parameters and its PRNG key).
  With config.vary, the axis is values x seeds (`replicas`) and each state holds its value.
  """
  variant = model_lib.variant_of(cfg)

  def one(value, seed):
    init_key, train_key = keys.seed_keys(variant, seed)
    graphdef, params = nnx.split(model_lib.build_model(cfg, in_dim, objective.heads, init_key))
    state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32),
                       jax.random.key_data(train_key), jnp.zeros((), jnp.int32))
    if selects_best(cfg):
      state = state.replace(best_params=jax.tree.map(jnp.copy, params),
                            best_val=jnp.full((), -jnp.inf, jnp.float32),
                            best_step=jnp.zeros((), jnp.int32))
    if value is not None:
      state = state.replace(hparam=jnp.asarray(value, jnp.float32))
    return graphdef, state
  parts = [one(v, s) for v, s in replicas(cfg)]
  graphdef, state = parts[0]
  if len(parts) > 1:
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *[p[1] for p in parts])
  return graphdef, jax.device_put(state, parallel.state_sharding(mesh, state, len(parts) > 1))


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

  def one_step(state: TrainState, banks):
    source, target = banks
    k_batch, k_loss = keys.step_keys(jax.random.wrap_key_data(state.key), state.step)
    sets = draw_batch(k_batch, source, target, cfg, batch, objective.uses_target, mesh)
    # config.vary: the objective sees this replica's value; a varied learning rate scales the
    # updates instead (every schedule and optimizer here is linear in it).
    c, step_tx, lr_scale = cfg, tx, 1.0
    if state.hparam is not None:
      c = hparams.overlay(cfg, state.hparam)
      lr_scale = hparams.lr_factor(cfg, state.hparam)
      step_tx = hparams.scale_updates(tx, lr_scale) if hparams.key(cfg) == hparams.LEARNING_RATE else tx
    if objective.update is not None:
      params, opt_state, metrics = objective.update(graphdef, step_tx, state.params,
                                                    state.opt_state, sets, k_loss, c, state.step,
                                                    total_steps=total_steps)
    else:
      def loss_fn(params):
        return objective.loss(nnx.merge(graphdef, params), sets, k_loss, c)
      (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
      updates, opt_state = step_tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      metrics = {'loss': loss, 'grad_norm': optax.global_norm(grads), **metrics}
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



class MetricsWriter:
  """One JSON line per log interval in <workdir>/metrics.jsonl (non-finite values as null)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')

  def truncate_after(self, step: int) -> None:
    """Drops the lines of steps past `step` (a resumed run logs them again)."""
    if not is_primary() or not os.path.isfile(self.path):
      return
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          if int(json.loads(line)['step']) <= step:
            kept.append(line if line.endswith('\n') else line + '\n')
        except (ValueError, KeyError, TypeError):
          continue  # a line cut short by a kill
    write_atomic(self.path, ''.join(kept))

  def write(self, record: dict) -> None:
    clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
             for k, v in record.items()}
    if not is_primary():
      return
    with writing(self.path), open(self.path, 'a') as f:
      f.write(json.dumps(clean) + '\n')


class StopSignals:
  """Records SIGTERM / SIGINT instead of dying, so the loop can save and exit cleanly.

  With several processes SIGTERM stays with JAX's preemption notifier, which tells every
  process (distributed.stop_agreed); a SIGINT is recorded and passed on as a SIGTERM to
  this process, so it reaches the others the same way. Only the main thread can own signal
  handlers; elsewhere this records nothing.
  """

  def __init__(self, multi_process: bool = False):
    self.multi_process = multi_process
    self.signums = (signal.SIGINT,) if multi_process else (signal.SIGTERM, signal.SIGINT)
    self.received: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is None:
      self.received = signum
      if self.multi_process:
        os.kill(os.getpid(), signal.SIGTERM)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.signums:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False


FAULT_ENV = 'DLVHD_INJECT_FAULT'


def injected_fault() -> tuple[int, int] | None:
  """(signal, step) from DLVHD_INJECT_FAULT=SIGKILL@25 or SIGTERM@25: the loop sends itself
  that signal once the dispatch that reaches the step returns (tests kill runs at an exact
  step instead of on a timer). None when unset."""
  text = os.environ.get(FAULT_ENV, '')
  if not text:
    return None
  name, _, at = text.partition('@')
  if name not in ('SIGKILL', 'SIGTERM', 'SIGINT') or not at.isdigit():
    raise UserInputError(f'{FAULT_ENV}={text!r}: use SIGKILL@<step>, SIGTERM@<step> or '
                         'SIGINT@<step>')
  return int(getattr(signal, name)), int(at)


@jax.jit
def _tree_is_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _per_step(host_metrics: list[dict], name: str) -> np.ndarray:
  """[steps, R] (R = 1 without seeds) of one metric over the interval's dispatches."""
  return np.concatenate([np.reshape(m[name], (np.shape(m[name])[0], -1)) for m in host_metrics])


def first_refused_update(host_metrics: list[dict],
                         ignore: np.ndarray | None = None) -> tuple[int, int, str] | None:
  """(step index in the interval, replica, 'loss' | 'gradient') of the first update the step
  refused, or None: 'loss' when a loss term was not finite, 'gradient' when the loss was and
  the gradient was not. Replicas where `ignore` ([replicas] bool) is True are not looked at."""
  names = [k for k in host_metrics[0] if k.startswith('loss')]
  finite = np.all(np.stack([np.isfinite(_per_step(host_metrics, k)) for k in names]), axis=0)
  refused = ~finite | (_per_step(host_metrics, 'skipped_updates') > 0)
  if ignore is not None:
    refused = refused & ~ignore[None, :]
  bad = np.argwhere(refused)
  if not len(bad):
    return None
  i, r = int(bad[0][0]), int(bad[0][1])
  return i, r, 'loss' if not finite[i, r] else 'gradient'


def diverged_replicas(cfg, state: TrainState) -> np.ndarray:
  """[replicas] bool: replicas whose update was ever refused for a non-finite loss or
  gradient. Only a config.vary run keeps training past one (its value is then out of the
  choice); any other run stops at the first."""
  return np.asarray(jax.device_get(state.skipped_updates)).reshape(-1) > 0


def interval_record(host_metrics: list[dict]) -> dict:
  """Means over the interval's steps (and seeds); `skipped_updates` is a count (sum)."""
  record = {}
  for name in host_metrics[0]:
    vals = _per_step(host_metrics, name)
    record[name] = int(vals.sum()) if name == 'skipped_updates' else float(np.mean(vals))
  return record


def fit(cfg, workdir: str, source: sampling.SegmentBank, target: sampling.SegmentBank | None,
        objective: objectives.Objective, mesh, *, in_dim: int, show_progress: bool = True,
        data_facts: dict | None = None, on_start=None, make_validator=None):
  """Trains from the latest checkpoint in `workdir` (or from scratch) to the schedule's end.

  source/target are host (numpy) banks; they are put on the devices once. `data_facts`
  (e.g. digests of the training videos) join the run's fingerprint. `on_start(step)` runs
  once the workdir is known to hold this run (or none), before the first step.
  `make_validator(graphdef)` -> fn(params) -> source-validation mAP per seed ([R] numpy), run
  every eval.every_steps and at the end (logged; drives train.select). Returns
  (graphdef, final state). Raises UserInputError when the workdir holds another run,
  NonFiniteError when the loss stops being finite, Preempted on SIGTERM / SIGINT.
  """
  schedule = make_schedule(cfg, source.num_segments)
  tx, lr_fn = make_optimizer(cfg, schedule)
  graphdef, state = init_state(cfg, in_dim, objective, tx, mesh)
  fingerprint = _fingerprint(cfg, in_dim, schedule, data_facts)
  ckpt = Checkpointer(workdir, cfg.train.max_checkpoints)
  try:
    if ckpt.latest_step() is not None:
      ckpt.check_run(fingerprint)
      state = ckpt.restore(state)
    start = current_step(state)
    writer = MetricsWriter(workdir)
    writer.truncate_after(start)
    if on_start is not None:
      on_start(start)
    validate = make_validator(graphdef) if make_validator is not None else None
    state = _train_loop(cfg, state, source, target, objective, mesh, graphdef, tx, lr_fn,
                        schedule, ckpt, fingerprint, writer, show_progress, validate)
  finally:
    ckpt.close()
  return graphdef, state


def _fingerprint(cfg, in_dim: int, schedule: Schedule, data_facts: dict | None) -> dict:
  return run_fingerprint(cfg, feature_dim=in_dim, total_steps=schedule.total_steps,
                         decay_steps=schedule.decay_steps, steps_per_epoch=schedule.steps_per_epoch,
                         **(data_facts or {}))


def _train_loop(cfg, state, source, target, objective, mesh, graphdef, tx, lr_fn, schedule,
                ckpt, fingerprint, writer, show_progress, validate):
  rep = parallel.replicated(mesh)
  source_dev = jax.device_put(source, rep)
  target_dev = jax.device_put(target if target is not None else source, rep)
  k = max(1, int(cfg.train.steps_per_dispatch))
  layout = jax.tree.map(lambda x: x.sharding, state)
  make_step = lambda n: make_train_step(graphdef, tx, lr_fn, objective, cfg, mesh,
                                        cfg.train.batch_size, n, schedule.total_steps, layout)
  steps = {k: make_step(k)}
  step = current_step(state)
  total = schedule.total_steps
  log_every = max(1, int(cfg.train.log_every_steps))
  ckpt_every = max(1, int(cfg.train.checkpoint_every_steps))
  eval_every = int(cfg.eval.get('every_steps', 0))
  if selects_best(cfg) and validate is None:
    raise UserInputError('config.train.select=best_source_val needs source validation videos: '
                         'set data.val_fraction > 0')
  bar = tqdm(total=total, initial=step, desc=f'train {cfg.method}', unit='step',
             disable=not (show_progress and is_primary()), dynamic_ncols=True)
  pending, t_last, step_last = [], time.perf_counter(), step
  fault = injected_fault()

  def diverged(what: str) -> NonFiniteError:
    ckpt.wait()
    good = ckpt.latest_step()
    where = f'step {good} in {ckpt.directory}' if good is not None else f'none in {ckpt.directory}'
    fix = 'train.learning_rate' + (f' or {objective.weight_key}' if objective.weight_key else '')
    return NonFiniteError(f'{what} (last good checkpoint: {where}); lower {fix}')

  # 'disallow' (tests) proves the loop moves data between host and device only explicitly.
  with StopSignals(jax.process_count() > 1) as stop, jax.transfer_guard(cfg.train.get('transfer_guard', 'allow')):
    while step < total:
      n = k if total - step >= k else 1
      if n not in steps:
        steps[n] = make_step(n)
      state, metrics = steps[n](state, source_dev, target_dev)
      pending.append(metrics)
      prev, step = step, step + n
      bar.update(n)
      if fault is not None and prev < fault[1] <= step:
        os.kill(os.getpid(), fault[0])
      # A signal to any process stops all of them at this same step (each saves its part of
      # the checkpoint), so the same command resumes exactly.
      stopping = distributed.stop_agreed(prev, step, stop.received is not None)
      log_due = step // log_every > prev // log_every or step == total or stopping
      ckpt_due = step // ckpt_every > prev // ckpt_every or step == total or stopping
      if log_due or ckpt_due:
        # Host syncs happen only at intervals: the metrics of the interval (checked before
        # any checkpoint of these steps is written), the source-validation scores, and the
        # state's finiteness at a save.
        host = jax.device_get(pending)
        # A hyper-parameter axis keeps going while some value still trains: a value whose
        # replica diverges (its updates are refused from then on) drops out of the choice.
        tolerated = diverged_replicas(cfg, state) if hparams.key(cfg) else None
        if tolerated is not None and tolerated.all():
          tolerated = None
        bad = first_refused_update(host, tolerated)
        if bad is not None:
          where = f' ({replica_name(cfg, bad[1])})' if num_replicas(cfg) > 1 else ''
          raise diverged(f'non-finite {bad[2]} at step {step_last + bad[0] + 1}{where}')
      if log_due:
        now = time.perf_counter()
        record = interval_record(host)
        record.update(step=step, epoch=step / schedule.steps_per_epoch,
                      steps_per_s=(step - step_last) / max(now - t_last, 1e-9))
        writer.write(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        pending, t_last, step_last = [], now, step
      if validate is not None and eval_every > 0 and (
          step // eval_every > prev // eval_every or step == total):
        vals = np.asarray(validate(state.params), np.float32).reshape(-1)
        writer.write({'step': step, 'source_val_map': float(np.mean(vals)),
                      'source_val_map_per_seed': [float(v) for v in vals]})
        if selects_best(cfg):
          state = keep_best(state, jax.device_put(vals.reshape(np.shape(state.best_val)),
                                                  parallel.replicated(mesh)),
                            jax.device_put(np.int32(step), parallel.replicated(mesh)))
      if ckpt_due:
        if not bool(jax.device_get(_tree_is_finite((state.params, state.opt_state)))):
          raise diverged(f'non-finite parameters after step {step}')
        ckpt.save(step, state, fingerprint)
      if stopping:
        bar.close()
        ckpt.wait()
        raise Preempted(step, stop.received or signal.SIGTERM)
  bar.close()
  return state


def restore_for_eval(cfg, workdir: str, in_dim: int, objective, mesh, num_source_segments: int,
                     data_facts: dict | None = None):
  """-> (graphdef, state) of the latest checkpoint in `workdir`, refused if it belongs to
  another run (a different method, model, data or schedule)."""
  schedule = make_schedule(cfg, num_source_segments)
  tx, _ = make_optimizer(cfg, schedule)
  graphdef, state = init_state(cfg, in_dim, objective, tx, mesh)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise UserInputError(f'no checkpoint in {os.path.join(workdir, "checkpoints")}: run '
                         '--mode=train first')
  ckpt = Checkpointer(workdir, cfg.train.max_checkpoints)
  try:
    if ckpt.latest_step() is None:
      raise UserInputError(f'no checkpoint in {ckpt.directory}: run --mode=train first')
    ckpt.check_run(_fingerprint(cfg, in_dim, schedule, data_facts))
    state = ckpt.restore(state)
  finally:
    ckpt.close()
  return graphdef, state
