"""The training loop: checkpoints, logging, source-validation selection, signals.

Reliability lives here: the loop stops a run with a refused update (a non-finite loss, or a
finite loss with a non-finite gradient: see train_step.py) at the next log or checkpoint interval
(NonFiniteError, exit code 3) before any checkpoint of it is written; SIGTERM / SIGINT save
a checkpoint and end the run (Preempted); a checkpoint carries the run's fingerprint, and
resuming it with another config is refused.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dlvhd_jax import distributed, hparams, parallel, sampling
from dlvhd_jax import objectives
from dlvhd_jax.checkpoint import Checkpointer, run_fingerprint
from dlvhd_jax.errors import NonFiniteError, Preempted, UserInputError
from dlvhd_jax.files import is_primary
from dlvhd_jax.metrics_log import MetricsWriter
from dlvhd_jax.replica_axis import num_replicas, replica_name
from dlvhd_jax.optimizer import Schedule, make_optimizer, make_schedule
from dlvhd_jax.train_step import (current_step, diverged_replicas, init_state, keep_best,
                            make_train_step, selects_best)


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
  fingerprint = _fingerprint(cfg, in_dim, schedule, data_facts)
  ckpt = Checkpointer(workdir, cfg.train.max_checkpoints)
  try:
    resuming = ckpt.latest_step() is not None
    # A resumed run restores into the state's abstract layout; only a new one initializes.
    graphdef, state = init_state(cfg, in_dim, objective, tx, mesh, abstract=resuming)
    if resuming:
      ckpt.check_run(fingerprint)
      state = ckpt.restore(state)
    start = current_step(state)
    writer = MetricsWriter(workdir)
    writer.truncate_after(start)
    if on_start is not None:
      on_start(start)
    validate = make_validator(graphdef) if make_validator is not None else None
    try:
      state = _train_loop(cfg, state, source, target, objective, mesh, graphdef, tx, lr_fn,
                          schedule, ckpt, fingerprint, writer, show_progress, validate)
    finally:
      writer.close()
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
  graphdef, state = init_state(cfg, in_dim, objective, tx, mesh, abstract=True)
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
