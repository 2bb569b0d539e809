"""`--mode=benchmark`: step time, throughput and MFU of training and evaluation.

Needs no dataset: random features of the configured dimension fill the device banks, so
the real on-device sampling runs inside the timed step. FLOPs are analytic
(`model.train_flops_per_set`, fwd + bwd = 3 x fwd, attention included, remat excluded):

  per set of N segments, forward:
    N * [ 2*D*W (projection, if W != D)
          + L * (2*4*W^2 (qkv, out) + 2*2*W*M (MLP) + 2*2*N*W (attention scores, weighted sum))
          + 2*(W*1024 + 1024*256 + 256) per head ]
  train step = 3 x forward of the objective's `passes`: B-set groups through the encoder and
  through one head (DL-VHD: 3B sets encoded, 4B sets scored by a head).

`mfu` = achieved FLOP/s / peak, with the peak measured on the spot: a large matmul in the
compute dtype on the same devices. `mfu_rated` = achieved FLOP/s / the device's rated dense
peak for the compute dtype (app/rated_peaks.py; null with `rated_peak_note` saying why, e.g.
on CPUs), the number MaxText and the scaling literature report.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from app import rated_peaks
from dlvhd_jax.errors import UserInputError
from dlvhd_jax import evaluation, files, methods, model as model_lib, parallel, sampling
from dlvhd_jax import optimizer, replica_axis, train_step


def measure_matmul_peak(dtype, mesh, size: int | None = None, reps: int = 10) -> float:
  """FLOP/s of a [n, n] @ [n, n] matmul per device, times the device count (all devices at once).

  The best of `reps` runs: a peak is what the hardware reaches, and on a shared CPU the
  median moves with whatever else runs.
  """
  ndev = mesh.devices.size
  on_cpu = jax.devices()[0].platform == 'cpu'
  n = size or (4096 if on_cpu else 16384)
  a = jax.device_put(jnp.ones((ndev, n, n), dtype) * 0.01, parallel.batch_sharded(mesh))
  f = jax.jit(lambda x: jnp.einsum('bij,bjk->bik', x, x, preferred_element_type=dtype))
  f(a).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2.0 * n ** 3 * ndev / float(np.min(times))


def _config_for(cfg):
  c = cfg.copy_and_resolve_references()
  b = cfg.benchmark
  with c.unlocked():
    if b.batch_size > 0:
      c.train.batch_size = int(b.batch_size)
    if b.dtype:
      c.model.dtype = b.dtype
  return c


def _feature_dim(cfg) -> int:
  if cfg.benchmark.feature_dim > 0:
    return int(cfg.benchmark.feature_dim)
  return int(cfg.model.width) if cfg.model.width > 0 else 2048


def _random_bank(rng, num_videos, seg_per_video, dim, labeled):
  feats = [rng.randn(seg_per_video, dim).astype(np.float32) for _ in range(num_videos)]
  labels = [rng.choice([-1.0, 1.0], seg_per_video) for _ in range(num_videos)] if labeled else None
  return sampling.make_bank(feats, labels)


def _peak_memory(compiled) -> tuple[int | None, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device.memory_stats'
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes), 'compiled.memory_analysis'
  except Exception:  # pylint: disable=broad-except
    return None, 'unavailable'


def run(cfg, workdir: str) -> dict:
  cfg = _config_for(cfg)
  objective = methods.get_objective(cfg.method)
  mesh = parallel.make_mesh(fsdp=cfg.get('mesh', {}).get('fsdp', 1))
  dim = _feature_dim(cfg)
  b = cfg.benchmark
  rng = np.random.RandomState(cfg.seed)
  source = _random_bank(rng, b.num_videos, b.segments_per_video, dim, True)
  target = _random_bank(rng, b.num_videos, b.segments_per_video, dim, False)
  dtype = model_lib.canonical_dtype(cfg.model.dtype)
  batch = int(cfg.train.batch_size)
  k = max(1, int(cfg.train.steps_per_dispatch))
  if b.num_steps < k:
    raise UserInputError(f'benchmark.num_steps={b.num_steps} is below train.steps_per_dispatch={k}')

  schedule = optimizer.make_schedule(cfg, source.num_segments)
  tx, lr_fn = optimizer.make_optimizer(cfg, schedule)
  graphdef, state = train_step.init_state(cfg, dim, objective, tx, mesh)
  state_bytes = parallel.bytes_per_device((state.params, state.opt_state))
  step = train_step.make_train_step(graphdef, tx, lr_fn, objective, cfg, mesh, batch, k,
                               state_sharding=jax.tree.map(lambda x: x.sharding, state))
  rep = parallel.replicated(mesh)
  src, tgt = jax.device_put(source, rep), jax.device_put(target, rep)

  t0 = time.perf_counter()
  compiled = step.lower(state, src, tgt).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(max(1, b.warmup_steps // k)):
    state, _ = compiled(state, src, tgt)
  jax.block_until_ready(state)
  times = []
  for _ in range(max(1, b.num_steps // k)):
    t = time.perf_counter()
    state, metrics = compiled(state, src, tgt)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - t) / k)
  step_time = float(np.median(times))
  if not np.isfinite(np.asarray(jax.device_get(metrics['loss']))).all():
    raise RuntimeError('benchmark step produced a non-finite loss')

  m = cfg.model
  width = dim if m.width <= 0 else int(m.width)
  n = cfg.sampling.set_size
  hidden = model_lib.resolved_head_dims(cfg, dim)
  flops = lambda heads: model_lib.train_flops_per_set(
      n, dim, width, m.depth, m.mlp_ratio * width, hidden, heads, m.use_encoder)
  encoder_passes, head_passes = objective.passes
  r = replica_axis.num_seeds(cfg)
  step_flops = (flops(0) * encoder_passes + (flops(1) - flops(0)) * head_passes) * batch * r
  peak = measure_matmul_peak(dtype, mesh, int(cfg.benchmark.get('matmul_size', 0)) or None)
  params = int(sum(x.size for x in jax.tree.leaves(state.params))) // r
  peak_mem, mem_src = _peak_memory(compiled)

  # Evaluation: windows of N segments, scored by the objective's eval heads.
  ndev = mesh.devices.size
  e = max(ndev, (int(cfg.eval.batch_size) // ndev) * ndev)
  n_windows = max(e, (int(b.eval_windows) // e) * e)
  score_fn = evaluation.make_logit_fn(graphdef, objective.eval_heads, mesh, replicas=r > 1)
  feats = jax.device_put(source.features, rep)
  shard = parallel.batch_sharded(mesh)
  idx, mask, own = evaluation.window_indices(source.num_segments, n, cfg.eval.edge_rule)
  # As many windows as asked for, cycling over the bank's segments.
  reps = -(-n_windows // len(idx))
  idx, mask, own = (np.concatenate([a] * reps)[:n_windows] for a in (idx, mask, own))
  chunks = [[jax.device_put(a[i:i + e], shard) for a in (idx, mask, own)]
            for i in range(0, n_windows, e)]
  jax.block_until_ready(score_fn.logits(state.params, score_fn.embed(state.params, feats),
                                        *chunks[0]))
  t = time.perf_counter()  # as evaluation.predict: the bank embedded once, then every window
  embedded = score_fn.embed(state.params, feats)
  outs = [score_fn.logits(state.params, embedded, *c) for c in chunks]
  jax.block_until_ready(outs)
  eval_time = time.perf_counter() - t
  eval_flops = model_lib.eval_flops(n_windows, source.num_segments, n, dim, width, m.depth,
                                    m.mlp_ratio * width, hidden, len(objective.eval_heads),
                                    m.use_encoder) * r
  rated, rated_note = rated_peaks.rated_peak(jax.devices()[0].platform,
                                             jax.devices()[0].device_kind, cfg.model.dtype)
  rated = None if rated is None else rated * ndev
  result = {
      'method': cfg.method,
      'step_time_s': step_time,
      'num_seeds': r,
      # Summed over the R vectorized seeds: source sets trained per second, all models.
      'sets_per_s': batch * r / step_time,
      # Segments through the encoder per second (DL-VHD: source, target and mixed sets).
      'segments_per_s': encoder_passes * batch * n * r / step_time,
      'train_tflop_per_step': step_flops / 1e12,
      'achieved_tflops': step_flops / step_time / 1e12,
      'peak_tflops': peak / 1e12,
      'mfu': step_flops / step_time / peak,
      'rated_peak_tflops': None if rated is None else rated / 1e12,
      'mfu_rated': None if rated is None else step_flops / step_time / rated,
      'rated_peak_note': rated_note,
      'compile_s': compile_s,
      'eval_windows_per_s': n_windows * r / eval_time,
      'eval_mfu': eval_flops / eval_time / peak,
      'eval_mfu_rated': None if rated is None else eval_flops / eval_time / rated,
      'devices': ndev,
      'fsdp': mesh.shape[parallel.FSDP_AXIS],
      # Parameters + optimizer state held by one device (all seeds): 1/fsdp of the
      # matrices, plus what stays replicated.
      'state_bytes_per_device': state_bytes,
      'platform': jax.devices()[0].platform,
      'device_kind': jax.devices()[0].device_kind,
      'dtype': cfg.model.dtype,
      'global_batch': batch,
      'steps_per_dispatch': k,
      'width': width,
      'feature_dim': dim,
      'depth': m.depth,
      'set_size': n,
      'remat': bool(m.remat),
      'params': params,
      'peak_memory_bytes': peak_mem,
      'peak_memory_source': mem_src,
  }
  os.makedirs(workdir, exist_ok=True)
  files.write_json(os.path.join(workdir, 'benchmark.json'), result)
  return result
