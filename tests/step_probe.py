"""Runs a few DL-VHD train steps on every visible device and saves loss + params.

Used by test_parallel.py in subprocesses with different fake device counts
(XLA_FLAGS=--xla_force_host_platform_device_count=N must be set before jax starts).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import base  # noqa: E402
from dlvhd_jax import methods, parallel, sampling, train  # noqa: E402


def main(out_path: str, method: str, steps_per_dispatch: int):
  cfg = base.get_base_config()
  cfg.method = method
  cfg.model.width, cfg.model.depth, cfg.model.num_heads = 32, 2, 4
  cfg.model.head_dims = (16, 8)
  cfg.train.batch_size = 8
  cfg.train.learning_rate = 0.1
  cfg.sampling.set_size = 6
  rng = np.random.RandomState(0)
  lengths = [4, 9, 15, 7, 30]
  feats = [rng.randn(L, 12).astype(np.float32) for L in lengths]
  labels = [rng.choice([-1.0, 1.0], L) for L in lengths]
  source = sampling.make_bank(feats, labels)
  target = sampling.make_bank([f + 0.5 for f in feats], None)
  objective = methods.get_objective(method)
  mesh = parallel.make_mesh()
  schedule = train.make_schedule(cfg, source.num_segments)
  tx, lr_fn = train.make_optimizer(cfg, schedule)
  graphdef, state = train.init_state(cfg, 12, objective, tx, mesh)
  step = train.make_train_step(graphdef, tx, lr_fn, objective, cfg, mesh, 8, steps_per_dispatch)
  rep = parallel.replicated(mesh)
  src, tgt = jax.device_put(source, rep), jax.device_put(target, rep)
  losses = []
  for _ in range(6 // steps_per_dispatch):
    state, metrics = step(state, src, tgt)
    losses.extend(np.atleast_1d(jax.device_get(metrics['loss'])).tolist())
  leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]
  np.savez(out_path, losses=np.array(losses), devices=jax.device_count(),
           **{f'p{i}': x for i, x in enumerate(leaves)})


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
