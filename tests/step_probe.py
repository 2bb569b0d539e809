"""Runs a few train steps on the first n devices and returns loss + params, in this process.

Used by test_parallel.py / test_seeds.py, which compare meshes of 1, 2 and 8 of the fake CPU
devices tests/conftest.py gives the test process:
  run(method, devices, steps_per_dispatch, fsdp)   one run
  seeds_vs_standalone(method, devices=...)         R = 3 vectorized seeds vs 3 standalone runs
  vary_vs_standalone(method, key, values)          config.vary replicas vs standalone runs
"""
import functools

import jax
import numpy as np

from configs import base
from dlvhd_jax import methods, parallel, sampling
from dlvhd_jax import optimizer, replica_axis, train_step


def setup(method: str, width: int, depth: int, num_heads: int, head_dims: tuple, fsdp: int = 1,
          devices: int = 1):
  """A tiny config and five random videos -> (cfg, features, device banks, objective, mesh
  over the first `devices` devices)."""
  cfg = base.get_base_config()
  cfg.method = method
  cfg.model.width, cfg.model.depth, cfg.model.num_heads = width, depth, num_heads
  cfg.model.head_dims = head_dims
  cfg.train.batch_size = 8
  cfg.train.learning_rate = 0.1
  cfg.sampling.set_size = 6
  rng = np.random.RandomState(0)
  lengths = [4, 9, 15, 7, 30]
  feats = [rng.randn(L, 12).astype(np.float32) for L in lengths]
  labels = [rng.choice([-1.0, 1.0], L) for L in lengths]
  source = sampling.make_bank(feats, labels)
  target = sampling.make_bank([f + 0.5 for f in feats], None)
  mesh = parallel.make_mesh(jax.devices()[:devices], fsdp=fsdp)
  rep = parallel.replicated(mesh)
  banks = (jax.device_put(source, rep), jax.device_put(target, rep))
  return cfg, feats, banks, methods.get_objective(method), mesh


@functools.lru_cache(maxsize=None)  # several tests compare against the same run
def run(method: str, devices: int, steps_per_dispatch: int = 1, fsdp: int = 1) -> dict:
  """6 steps of a width-32 model -> {'losses': [6], 'devices', 'state_bytes' (parameters and
  optimizer state on one device), 'p0', 'p1', ...: parameter leaves}."""
  cfg, _, (src, tgt), objective, mesh = setup(method, 32, 2, 4, (16, 8), fsdp, devices)
  schedule = optimizer.make_schedule(cfg, src.num_segments)
  tx, lr_fn = optimizer.make_optimizer(cfg, schedule)
  graphdef, state = train_step.init_state(cfg, 12, objective, tx, mesh)
  layout = jax.tree.map(lambda x: x.sharding, state)
  step = train_step.make_train_step(graphdef, tx, lr_fn, objective, cfg, mesh, 8, steps_per_dispatch,
                                    state_sharding=layout)
  state_bytes = parallel.bytes_per_device((state.params, state.opt_state))
  losses = []
  for _ in range(6 // steps_per_dispatch):
    state, metrics = step(state, src, tgt)
    losses.extend(np.atleast_1d(jax.device_get(metrics['loss'])).tolist())
  leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]
  # The layout survives the steps.
  assert jax.tree.map(lambda x: x.sharding, state) == layout
  return {'losses': np.array(losses), 'devices': mesh.devices.size, 'state_bytes': state_bytes,
          **{f'p{i}': x for i, x in enumerate(leaves)}}


def _probe_runs(cfg, feats, src, tgt, objective, mesh, seed_list):
  """Trains config `cfg` from each seed of `seed_list` for 4 steps (one compiled step and one
  compiled scorer, reused for every initial state), then scores two videos -> per seed
  (losses [4, replicas], parameter leaves, scores [(replicas,) T])."""
  from dlvhd_jax import evaluation  # pylint: disable=import-outside-toplevel
  c = cfg.copy_and_resolve_references()
  replicas = replica_axis.num_replicas(c) > 1
  schedule = optimizer.make_schedule(c, src.num_segments)
  tx, lr_fn = optimizer.make_optimizer(c, schedule)
  step, logit_fn, out = None, None, []
  for seed_ in seed_list:
    c.seed = seed_
    graphdef, state = train_step.init_state(c, 12, objective, tx, mesh)
    if step is None:
      step = train_step.make_train_step(graphdef, tx, lr_fn, objective, c, mesh, 8, 2, 4)
      logit_fn = evaluation.make_logit_fn(graphdef, objective.eval_heads, mesh, replicas)
    losses = []
    for _ in range(2):
      state, metrics = step(state, src, tgt)
      losses.append(np.reshape(jax.device_get(metrics['loss']), (2, -1)))
    scores = evaluation.predict(graphdef, state.params, feats[2:4], objective.eval_heads, c,
                                mesh, replicas=replicas, logit_fn=logit_fn)
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]
    out.append((np.concatenate(losses), leaves, np.concatenate(scores, axis=-1)))
  return out


def _probe_setup(method, devices=1):
  cfg, feats, (src, tgt), objective, mesh = setup(method, 16, 1, 2, (8,), devices=devices)
  cfg.model.dropout = 0.2
  cfg.eval.batch_size = 16
  return cfg, feats, src, tgt, objective, mesh


def _paired(vec, alone) -> dict:
  (vec_losses, vec_params, vec_scores), = vec
  return {'losses': (vec_losses, np.concatenate([a[0] for a in alone], axis=1)),
          'params': [(v, np.stack([a[1][i] for a in alone])) for i, v in enumerate(vec_params)],
          'scores': (vec_scores, np.stack([a[2] for a in alone]))}


@functools.lru_cache(maxsize=None)
def standalone(method: str, seeds: tuple) -> list:
  """One 1-device run per seed (_probe_runs' layout); shared by the tests that compare
  vectorized seeds on 1 and on 8 devices against them."""
  cfg, *rest = _probe_setup(method)
  cfg.num_seeds = 1
  return _probe_runs(cfg, *rest, list(seeds))


def seeds_vs_standalone(method: str, num_seeds: int = 3, seed: int = 5, devices: int = 1) -> dict:
  """Trains R vectorized seeds with the sets split over `devices` devices and R standalone
  1-device runs (seed + r) for 4 steps, then scores a few videos with both; -> {'losses':
  ([4, R], [4, R]), 'params': [(vec, alone), ...], 'scores': ([R, T], [R, T])}."""
  cfg, *rest = _probe_setup(method, devices)
  cfg.num_seeds = num_seeds
  vec = _probe_runs(cfg, *rest, [seed])
  return _paired(vec, standalone(method, tuple(seed + r for r in range(num_seeds))))


def vary_vs_standalone(method: str, key: str, values, num_seeds: int = 2, seed: int = 5) -> dict:
  """config.vary: values x seeds vectorized vs one standalone run per (value, seed), each with
  `key` = value; same return layout as seeds_vs_standalone (replicas value-major)."""
  from app import sweep  # pylint: disable=import-outside-toplevel
  cfg, *rest = _probe_setup(method)
  cfg.num_seeds = num_seeds
  cfg.vary.key, cfg.vary.values = key, tuple(values)
  vec = _probe_runs(cfg, *rest, [seed])
  cfg.num_seeds, cfg.vary.key, cfg.vary.values = 1, '', ()
  alone = []
  for v in values:
    sweep.set_path(cfg, key, v)
    alone += _probe_runs(cfg, *rest, [seed + r for r in range(num_seeds)])
  return _paired(vec, alone)
