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


def test_persistent_compile_cache_is_written_then_reused(tmp_path):
  """A second process compiling the same program finds it in the cache folder (no new entry,
  same result); '' turns the cache off."""
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from conftest import REPO  # pylint: disable=import-outside-toplevel
  from dlvhd_jax import compile_cache  # pylint: disable=import-outside-toplevel
  folder = tmp_path / 'cache'
  script = ('import jax, jax.numpy as jnp; from dlvhd_jax import compile_cache; '
            f'print(compile_cache.enable({str(folder)!r}, min_compile_seconds=0.0)); '
            'print(float(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 32)))))')
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  runs = []
  for _ in range(2):
    proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs.append((proc.stdout.split(), sorted(p.name for p in folder.iterdir())))
  (first_out, first_files), (second_out, second_files) = runs
  assert first_out[0] == str(folder) and first_files, 'nothing was cached'
  assert second_files == first_files and second_out == first_out
  assert compile_cache.resolve('~/x') == os.path.expanduser('~/x')
  assert compile_cache.resolve('') == ''
