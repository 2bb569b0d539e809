"""UDA baselines: each domain term against numpy from its definition, MCD's phases, and a
few real train steps of every baseline through train_step.make_train_step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from dlvhd_jax import baselines, hparams, methods, objectives, parallel, sampling
from dlvhd_jax import optimizer, train_step


def _np_mmd(x, y, num_kernels=5, kernel_mul=2.0):
  """From DAN's definition (Long et al. 2015, Eq. 3 with every beta_u = 1, as its reference
  code): MMD^2 = 1/n^2 sum_ij k(x_i, x_j) + 1/m^2 sum_ij k(y_i, y_j) - 2/(nm) sum_ij k(x_i, y_j)
  with k(a, b) = sum_u exp(-|a - b|^2 / s_u), s_u = s * kernel_mul^(u - num_kernels // 2) and
  s the mean squared distance over distinct pairs of the pooled sample. Plain loops."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  pooled = np.concatenate([x, y])
  total, pairs = 0.0, 0
  for i in range(len(pooled)):
    for j in range(len(pooled)):
      if i != j:
        total += np.sum((pooled[i] - pooled[j]) ** 2)
        pairs += 1
  s = total / pairs
  scales = [s * kernel_mul ** (u - num_kernels // 2) for u in range(num_kernels)]

  def k(a, b):
    return sum(np.exp(-np.sum((a - b) ** 2) / sc) for sc in scales)

  def mean_k(a, b):
    return sum(k(p, q) for p in a for q in b) / (len(a) * len(b))
  return mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)


def _with_padding(x, n_pad, rng):
  """Appends junk rows with weight 0: -> (x [n + n_pad, d], w [n + n_pad])."""
  junk = rng.randn(n_pad, x.shape[1]) * 50
  return (np.concatenate([x, junk]).astype(np.float32),
          np.concatenate([np.ones(len(x)), np.zeros(n_pad)]).astype(np.float32))


def test_mmd_matches_numpy_ignores_padding_and_grows_with_shift():
  rng = np.random.RandomState(0)
  x, y = rng.randn(12, 6), rng.randn(9, 6) + 0.7
  xp, wx = _with_padding(x, 5, rng)
  yp, wy = _with_padding(y, 9, rng)
  got = float(baselines.mk_mmd(jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(wx), jnp.asarray(wy)))
  np.testing.assert_allclose(got, _np_mmd(x, y), rtol=1e-4)
  ones = jnp.ones(12)
  same = float(baselines.mk_mmd(jnp.asarray(x, jnp.float32), jnp.asarray(x, jnp.float32), ones, ones))
  assert abs(same) < 1e-6
  vals = [float(baselines.mk_mmd(jnp.asarray(x, jnp.float32), jnp.asarray(x + d, jnp.float32),
                                 ones, ones)) for d in (0.25, 0.5, 1.0, 2.0)]
  assert abs(same) < vals[0] < vals[1] < vals[2] < vals[3]


def test_coral_matches_numpy_and_vanishes_for_equal_covariances():
  rng = np.random.RandomState(1)
  x, y = rng.randn(40, 5), rng.randn(30, 5) @ rng.randn(5, 5)
  xp, wx = _with_padding(x, 4, rng)
  yp, wy = _with_padding(y, 7, rng)
  want = ((np.cov(x, rowvar=False) - np.cov(y, rowvar=False)) ** 2).sum() / (4 * 5 * 5)
  got = float(baselines.coral_loss(jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(wx), jnp.asarray(wy)))
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # A shifted copy has the same covariance.
  ones = jnp.ones(40)
  shifted = float(baselines.coral_loss(jnp.asarray(x, jnp.float32), jnp.asarray(x + 3.0, jnp.float32),
                                       ones, ones))
  assert abs(shifted) < 1e-7


def test_gradient_reversal_flips_and_scales_the_gradient():
  x = jnp.asarray(np.random.RandomState(2).randn(4, 3), jnp.float32)
  f = lambda v: jnp.sum(jnp.sin(v) * v)
  plain = jax.grad(f)(x)
  for c in (0.0, 0.3, 1.0):
    rev = jax.grad(lambda v: f(baselines.grad_reverse(v, jnp.float32(c))))(x)
    np.testing.assert_allclose(rev, -c * plain, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(baselines.grad_reverse(x, jnp.float32(0.5)), x)
  # DANN's schedule: 0 at the start, 2/(1+e^-5)-1 halfway, ~1 at the end.
  assert float(baselines.grl_coefficient(0, 100)) == 0.0
  np.testing.assert_allclose(float(baselines.grl_coefficient(50, 100)), 2 / (1 + np.exp(-5)) - 1,
                             rtol=1e-6)
  assert float(baselines.grl_coefficient(100, 100)) > 0.9999


def test_afn_gradient_moves_each_norm_up_by_delta_r():
  rng = np.random.RandomState(3)
  h = jnp.asarray(rng.randn(7, 5), jnp.float32)
  w = jnp.asarray([1, 1, 0, 1, 1, 0, 1], jnp.float32)
  value, g = jax.value_and_grad(baselines.afn_loss)(h, w, 1.0)
  np.testing.assert_allclose(float(value), 1.0, rtol=1e-6)
  stepped = h - (float(w.sum()) / 2) * g
  norms, new = np.linalg.norm(h, axis=1), np.linalg.norm(stepped, axis=1)
  np.testing.assert_allclose(new, np.where(w > 0, norms + 1.0, norms), rtol=1e-5)


def test_set_discrepancy_matches_numpy():
  rng = np.random.RandomState(4)
  s1, s2 = np.tanh(rng.randn(3, 6)), np.tanh(rng.randn(3, 6))
  mask = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], bool)
  want = []
  for a, b, m in zip(s1, s2, mask):
    p, q = np.exp(a[m]) / np.exp(a[m]).sum(), np.exp(b[m]) / np.exp(b[m]).sum()
    want.append(np.abs(p - q).mean())
  got = float(baselines.set_discrepancy(jnp.asarray(s1), jnp.asarray(s2), jnp.asarray(mask)))
  np.testing.assert_allclose(got, np.mean(want), rtol=1e-5)
  assert float(baselines.set_discrepancy(jnp.asarray(s1), jnp.asarray(s1), jnp.asarray(mask))) == 0


# --------------------------------------------------------------- train steps on a tiny model

DIM = 12


def _tiny_cfg(method):
  cfg = base.get_base_config()
  cfg.method = method
  cfg.model.width, cfg.model.depth, cfg.model.num_heads = 16, 1, 2
  cfg.model.head_dims = (8,)
  cfg.model.dropout = 0.1
  cfg.train.batch_size = 4
  cfg.train.num_steps = 6
  cfg.train.learning_rate = 0.1
  cfg.sampling.set_size = 6
  return cfg


@pytest.fixture(scope='module')
def banks():
  rng = np.random.RandomState(0)
  lengths = [9, 15, 7, 30]
  feats = [rng.randn(L, DIM).astype(np.float32) for L in lengths]
  labels = [rng.choice([-1.0, 1.0], L) for L in lengths]
  return (sampling.make_bank(feats, labels),
          sampling.make_bank([2.0 * f + 1.0 for f in feats], None))


def _setup(method, banks):
  cfg = _tiny_cfg(method)
  objective = methods.get_objective(method)
  mesh = parallel.make_mesh()
  schedule = optimizer.make_schedule(cfg, banks[0].num_segments)
  tx, lr_fn = optimizer.make_optimizer(cfg, schedule)
  graphdef, state = train_step.init_state(cfg, DIM, objective, tx, mesh)
  return cfg, objective, mesh, tx, lr_fn, graphdef, state


@pytest.mark.parametrize('method', ['dan', 'coral', 'revgrad', 'mcd', 'afn'])
def test_baseline_trains_through_the_core_step(method, banks):
  cfg, objective, mesh, tx, lr_fn, graphdef, state = _setup(method, banks)
  assert objective.uses_target and 'score' in objective.heads
  before = jax.device_get(state.params)
  step = train_step.make_train_step(graphdef, tx, lr_fn, objective, cfg, mesh, 4, steps_per_dispatch=3)
  metrics = []
  for _ in range(2):
    state, m = step(state, *banks)
    metrics.append(jax.device_get(m))
  for name in metrics[0]:
    vals = np.concatenate([np.atleast_1d(m[name]) for m in metrics])
    assert np.all(np.isfinite(vals)), (method, name, vals)
  assert int(state.step) == 6
  after = jax.device_get(state.params)
  assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(after))
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before))]
  assert all(changed), f'{method}: {changed.count(False)} parameter arrays never moved'
  if method == 'revgrad':
    coeffs = np.concatenate([m['grl_coeff'] for m in metrics])
    want = [float(baselines.grl_coefficient(i, 6)) for i in range(6)]
    np.testing.assert_allclose(coeffs, want, rtol=1e-5, atol=1e-7)


def test_mcd_phases_update_only_their_parameters(banks):
  cfg, objective, mesh, tx, _, graphdef, state = _setup('mcd', banks)
  rng = np.random.RandomState(5)
  mask = jnp.asarray(np.arange(6)[None, :] < np.array([[6], [4], [6], [3]]))
  sets = objectives.SetBatch(
      jnp.asarray(rng.randn(4, 6, DIM), jnp.float32), jnp.asarray(np.tile([1.0, -1.0], (4, 3))),
      mask, jnp.asarray(rng.randn(4, 6, DIM) + 1.0, jnp.float32), mask)
  params, opt_state = state.params, state.opt_state
  is_head = jax.tree.leaves(baselines.head_mask(params))
  assert any(is_head) and not all(is_head)
  count = lambda s: [x for x in jax.tree.leaves(s) if x.ndim == 0][0]

  def run(phase, p, s, advance=False):
    p2, s2, loss, gnorm = jax.jit(lambda p_, s_: baselines.mcd_phase(
        phase, graphdef, tx, p_, s_, sets, jax.random.key(1), 1.0, advance))(p, s)
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(p))]
    assert np.isfinite(float(loss)) and float(gnorm) > 0
    return p2, s2, moved

  params, opt_state, moved = run('A', params, opt_state)
  assert all(moved) and int(count(opt_state)) == 0
  params, opt_state_b, moved = run('B', params, opt_state)
  assert moved == is_head, 'phase B must update the heads and leave the encoder unchanged'
  assert int(count(opt_state_b)) == 0
  # The encoder's momentum slots are untouched by B, the heads' ones are not.
  slots = lambda s: jax.tree.leaves(s)[:len(is_head)]
  slot_moved = [not np.array_equal(a, b) for a, b in zip(slots(opt_state_b), slots(opt_state))]
  assert slot_moved == is_head
  params, opt_state, moved = run('C', params, opt_state_b, advance=True)
  assert moved == [not h for h in is_head], 'phase C must update the encoder only'
  assert int(count(opt_state)) == 1


def test_mcd_phases_of_a_step_use_that_steps_learning_rate(banks):
  """A schedule whose lr jumps 1000x after step 0: step 0's three phases must all run at the
  step-0 lr, i.e. give exactly what a constant lr gives."""
  import optax  # pylint: disable=import-outside-toplevel
  cfg, objective, mesh, _, _, graphdef, state = _setup('mcd', banks)
  rng = np.random.RandomState(6)
  mask = jnp.ones((4, 6), bool)
  sets = objectives.SetBatch(
      jnp.asarray(rng.randn(4, 6, DIM), jnp.float32), jnp.asarray(np.tile([1.0, -1.0], (4, 3))),
      mask, jnp.asarray(rng.randn(4, 6, DIM) + 1.0, jnp.float32), mask)
  outs = []
  for lr in (optax.piecewise_constant_schedule(0.05, {1: 1000.0}), 0.05):
    tx = optax.sgd(lr, momentum=0.9)
    ctx = objectives.StepContext(cfg, hparams.step_values(cfg), jnp.int32(0), 0)
    p, _, m = jax.jit(lambda p_, s_, tx=tx: objective.apply_update(
        graphdef, tx, p_, s_, sets, jax.random.key(2), ctx))(state.params, tx.init(state.params))
    assert np.isfinite(float(m['grad_norm']))
    outs.append(jax.device_get(p))
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
