"""The training loop compiles its step once and never moves data implicitly between host and device."""
import logging

import jax
import numpy as np

from configs import base
from dlvhd_jax import methods, parallel, sampling, train


def test_fit_compiles_once_and_makes_no_implicit_transfers(tmp_path, caplog):
  cfg = base.get_base_config()
  cfg.model.width, cfg.model.depth, cfg.model.num_heads = 16, 1, 2
  cfg.model.head_dims = (8,)
  cfg.train.batch_size = 4
  cfg.train.num_steps = 40  # 8 dispatches over several "epochs" of a tiny bank
  cfg.train.steps_per_dispatch = 5
  cfg.train.log_every_steps = 10
  cfg.train.checkpoint_every_steps = 20
  cfg.sampling.set_size = 5
  cfg.train.transfer_guard = 'disallow'
  rng = np.random.RandomState(0)
  feats = [rng.randn(L, 6).astype(np.float32) for L in (7, 12, 3)]
  source = sampling.make_bank(feats, [rng.choice([-1.0, 1.0], len(f)) for f in feats])
  target = sampling.make_bank(feats, None)
  mesh = parallel.make_mesh()
  with caplog.at_level(logging.WARNING), jax.log_compiles(True):
    _, state = train.fit(cfg, str(tmp_path), source, target, methods.get_objective('dlvhd'),
                         mesh, in_dim=6, show_progress=False)
  assert int(jax.device_get(state.step)) == 40
  compiles = [r.getMessage() for r in caplog.records
              if 'Compiling' in r.getMessage() and 'multi_step' in r.getMessage()]
  assert len(compiles) == 1, compiles
