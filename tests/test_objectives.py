"""DL-VHD's objectives against each other: which parameters each loss term reaches.

`dlvhd_coarse_sg` (a named change, not the paper) stops the coarse learner's gradient at the
shared encoder. Its forward pass is DL-VHD's, its heads get DL-VHD's gradients, and its
encoder gets only what the fine head sends back: with lambda = 0 exactly the encoder gradient
of `dlvhd_fine_only` (L_fine alone).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import base
from dlvhd_jax import hparams, methods, objectives, optimizer, parallel, train_step

DIM = 12


def _setup(method, distill_weight, set_loss='kl'):
  """-> (loss of the parameters, the initial parameters) on one fixed batch."""
  cfg = base.get_base_config()
  cfg.method, cfg.loss.set_loss = method, set_loss
  cfg.model.width, cfg.model.depth, cfg.model.num_heads = 16, 1, 2
  cfg.model.head_dims = (8,)
  cfg.model.dropout = 0.1  # the same key draws the same masks in every objective
  cfg.loss.distill_weight = distill_weight
  objective = methods.get_objective(method)
  tx, _ = optimizer.make_optimizer(cfg, optimizer.make_schedule(cfg, 100))
  graphdef, state = train_step.init_state(cfg, DIM, objective, tx, parallel.make_mesh())
  rng = np.random.RandomState(3)
  mask = jnp.asarray(np.arange(6)[None, :] < np.array([[6], [4], [6], [5]]))
  x = lambda shift: jnp.asarray(rng.randn(4, 6, DIM) + shift, jnp.float32)
  labels = jnp.asarray(rng.choice([0.0, 1.0], (4, 6)))
  batch = objectives.SetBatch(x(0.0), labels, mask, x(1.0), mask, x(0.5),
                              jnp.asarray(np.tile([0.0, 1.0], (4, 3))), mask)
  ctx = objectives.StepContext(cfg, hparams.step_values(cfg), jnp.int32(0), 100)

  return (lambda p: objective.loss(nnx.merge(graphdef, p), batch, jax.random.key(7), ctx)[0],
          state.params)


def _grads(method, distill_weight):
  """-> (loss, {'encoder' | 'coarse' | 'fine': flat list of gradient arrays}) of one batch."""
  loss, params = _setup(method, distill_weight)
  value, grads = jax.value_and_grad(loss)(params)
  parts = {'encoder': [], 'coarse': [], 'fine': []}
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    keys = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
    part = 'encoder' if 'encoder' in keys else next(h for h in ('coarse', 'fine') if h in keys)
    parts[part].append(np.asarray(g))
  return float(value), parts


def _same(a, b):
  return all(np.allclose(x, y, rtol=1e-5, atol=1e-7) for x, y in zip(a, b))


@pytest.mark.parametrize('distill_weight', [0.0, 1.0])
def test_coarse_stop_gradient_reaches_the_heads_but_not_the_encoder(distill_weight):
  loss_sg, sg = _grads('dlvhd_coarse_sg', distill_weight)
  loss_full, full = _grads('dlvhd', distill_weight)
  assert loss_sg == pytest.approx(loss_full, rel=1e-6)
  assert _same(sg['coarse'], full['coarse']) and _same(sg['fine'], full['fine'])
  assert any(np.abs(g).max() > 0 for g in sg['coarse'])
  # The coarse learner does move DL-VHD's encoder; the change removes exactly that.
  assert not _same(sg['encoder'], full['encoder'])
  if distill_weight == 0.0:
    _, fine_only = _grads('dlvhd_fine_only', 0.0)
    assert _same(sg['encoder'], fine_only['encoder'])


@pytest.mark.parametrize('method', ['sl', 'dlvhd', 'coral', 'mcd'])
def test_rank_set_loss_reaches_every_methods_l_pred(method):
  # loss.set_loss=rank replaces L_pred wherever a method supervises a head on labeled sets.
  kl, params = _setup(method, 0.0)
  rank, _ = _setup(method, 0.0, 'rank')
  assert np.isfinite(float(rank(params))) and abs(float(rank(params)) - float(kl(params))) > 1e-3
