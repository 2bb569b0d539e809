"""Losses against a numpy implementation written from SPEC's equations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlvhd_jax import losses


def np_softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def np_set_kl(t, p):
  """KL(softmax(t) || softmax(p)) / len(t) for one unpadded set (torch kl_div 'mean')."""
  a, b = np_softmax(t), np_softmax(p)
  return float(np.sum(a * (np.log(a) - np.log(b))) / len(t))


def random_sets(seed, b=6, n=9):
  rng = np.random.RandomState(seed)
  target = rng.choice([-1.0, 0.0, 1.0], size=(b, n))
  pred = np.tanh(rng.randn(b, n))
  lengths = rng.randint(1, n + 1, size=b)
  lengths[0] = n
  mask = np.arange(n)[None] < lengths[:, None]
  # Padding holds garbage that must not matter.
  target[~mask] = 37.0
  pred[~mask] = -55.0
  return target, pred, mask, lengths


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_set_kl_divergence_matches_numpy_on_valid_positions(seed):
  target, pred, mask, lengths = random_sets(seed)
  got = np.asarray(losses.set_kl_divergence(jnp.array(target), jnp.array(pred), jnp.array(mask)))
  want = [np_set_kl(target[i, :L], pred[i, :L]) for i, L in enumerate(lengths)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_set_kl_is_zero_for_equal_distributions_and_positive_otherwise():
  x = jnp.array([[0.1, -0.3, 0.7, 0.2]])
  m = jnp.ones_like(x, bool)
  assert abs(float(losses.set_kl_divergence(x, x, m)[0])) < 1e-7
  assert float(losses.set_kl_divergence(x, -x, m)[0]) > 1e-3


@pytest.mark.parametrize('seed', [0, 3])
def test_distillation_loss_matches_numpy(seed):
  _, coarse, mask, lengths = random_sets(seed)
  fine = np.tanh(np.random.RandomState(seed + 10).randn(*coarse.shape))
  got = np.asarray(losses.distillation_loss(jnp.array(coarse), jnp.array(fine), jnp.array(mask)))
  want = []
  for i, L in enumerate(lengths):
    c, f = coarse[i, :L], fine[i, :L]
    avg = (c + f) / 2
    want.append(0.5 * (np_set_kl(avg, c) + np_set_kl(avg, f)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_distillation_pulls_the_heads_together():
  coarse = jnp.array([[0.2, -0.5, 0.9, 0.0]])
  fine = jnp.array([[-0.1, 0.4, 0.3, 0.6]])
  m = jnp.array([[True, True, True, False]])
  loss = lambda cf: losses.distillation_loss(cf[0], cf[1], m).sum()
  cf = (coarse, fine)
  start = float(loss(cf))
  for _ in range(50):
    g = jax.grad(loss)(cf)
    cf = (cf[0] - 5.0 * g[0], cf[1] - 5.0 * g[1])
  assert float(loss(cf)) < 0.5 * start
  # Padding gets no gradient.
  assert float(jnp.abs(jax.grad(loss)((coarse, fine))[0][0, 3])) == 0.0


def test_gradient_through_the_average_vanishes():
  """With y_avg = (c + f) / 2 the two KLs' gradients w.r.t. y_avg cancel exactly, so a
  stop-gradient on y_avg would not change the update (why the config has no such switch)."""
  coarse = jnp.array([[0.2, -0.5, 0.9]])
  fine = jnp.array([[-0.1, 0.4, 0.3]])
  m = jnp.ones((1, 3), bool)
  g_flow = jax.grad(lambda c: losses.distillation_loss(c, fine, m).sum())(coarse)
  def stopped(c):
    avg = jax.lax.stop_gradient(0.5 * (c + fine))
    return 0.5 * (losses.set_kl_divergence(avg, c, m) + losses.set_kl_divergence(avg, fine, m)).sum()
  g_stop = jax.grad(stopped)(coarse)
  np.testing.assert_allclose(g_flow, g_stop, atol=1e-7)
  assert float(jnp.abs(g_flow).max()) > 1e-3


def test_dlvhd_objective_weights_and_excludes_sets_without_positive():
  rng = np.random.RandomState(5)
  b, n = 4, 6
  src_y = rng.choice([-1.0, 1.0], (b, n))
  src_y[1] = -1.0  # no positive: weight 0 in L_fine
  src_y[2, :] = [0, 0, -1, -1, 0, -1]  # borderline only: also no positive
  fine_s = np.tanh(rng.randn(b, n))
  mix_y = np.where(np.arange(n) < n // 2, 1.0, 0.0)[None].repeat(b, 0)
  coarse_m = np.tanh(rng.randn(b, n))
  coarse_t, fine_t = np.tanh(rng.randn(b, n)), np.tanh(rng.randn(b, n))
  m = np.ones((b, n), bool)
  lam = 0.7
  total, parts = losses.dlvhd_loss(*map(jnp.array, (src_y, fine_s, mix_y, coarse_m, coarse_t, fine_t)),
                                   jnp.array(m), jnp.array(m), jnp.array(m), distill_weight=lam)
  l_fine = np.mean([np_set_kl(src_y[i], fine_s[i]) for i in (0, 3)])
  l_coarse = np.mean([np_set_kl(mix_y[i], coarse_m[i]) for i in range(b)])
  l_dist = np.mean([0.5 * (np_set_kl((coarse_t[i] + fine_t[i]) / 2, coarse_t[i])
                           + np_set_kl((coarse_t[i] + fine_t[i]) / 2, fine_t[i])) for i in range(b)])
  np.testing.assert_allclose(float(parts['loss_fine']), l_fine, rtol=1e-5)
  np.testing.assert_allclose(float(parts['loss_coarse']), l_coarse, rtol=1e-5)
  np.testing.assert_allclose(float(parts['loss_distill']), l_dist, rtol=1e-5)
  np.testing.assert_allclose(float(total), l_coarse + l_fine + lam * l_dist, rtol=1e-5)


def test_set_prediction_loss_is_zero_when_no_set_has_a_positive():
  y = -jnp.ones((3, 5))
  assert float(losses.set_prediction_loss(y, jnp.zeros((3, 5)), jnp.ones((3, 5), bool))) == 0.0


@pytest.mark.parametrize('to', ['fine', 'coarse'])
def test_distillation_direction_keeps_one_heads_half_of_the_gradient(to):
  """loss.distill_to: the value is the paper's; the named head gets exactly the gradient the
  paper's L_distill gives it, the other none."""
  _, coarse, mask, _ = random_sets(1)
  fine = jnp.array(np.tanh(np.random.RandomState(11).randn(*coarse.shape)))
  coarse, mask = jnp.array(coarse), jnp.array(mask)
  loss = lambda c, f, d: losses.distillation_loss(c, f, mask, d).sum()
  np.testing.assert_allclose(loss(coarse, fine, to), loss(coarse, fine, 'both'), rtol=1e-6)
  paper = jax.grad(loss, argnums=(0, 1))(coarse, fine, 'both')
  got = jax.grad(loss, argnums=(0, 1))(coarse, fine, to)
  kept, stopped = (1, 0) if to == 'fine' else (0, 1)
  np.testing.assert_allclose(got[kept], paper[kept], rtol=1e-5, atol=1e-8)
  assert float(jnp.abs(paper[stopped]).max()) > 1e-3
  assert float(jnp.abs(got[stopped]).max()) == 0.0
