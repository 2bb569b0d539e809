"""The set model: permutation invariance, padding mask, shapes, remat, bf16, "w/o T"."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import base
from dlvhd_jax import model as model_lib


def make(width=32, in_dim=24, **kw):
  cfg = base.get_base_config()
  cfg.model.width, cfg.model.depth, cfg.model.num_heads = width, 2, 4
  cfg.model.head_dims = (16, 8)
  for k, v in kw.items():
    cfg.model[k] = v
  return model_lib.build_model(cfg, in_dim, ('coarse', 'fine'), seed=0)


@nnx.jit(static_argnames='heads')
def fwd(m, x, mask, key=None, heads=None):
  """The model's forward, compiled once per shape: called op by op it compiles every
  primitive separately (tens of small programs per call)."""
  return m(x, mask, key) if heads is None else m(x, mask, heads=heads)


def inputs(b=3, n=7, d=24, seed=0):
  rng = np.random.RandomState(seed)
  x = jnp.array(rng.randn(b, n, d), jnp.float32)
  mask = jnp.array(np.arange(n)[None] < np.array([[7], [4], [1]]))
  return x, mask


def test_scores_in_range_and_shapes():
  m = make()
  x, mask = inputs()
  out = fwd(m, x, mask)
  assert set(out) == {'coarse', 'fine'}
  for s in out.values():
    assert s.shape == (3, 7) and s.dtype == jnp.float32
    assert (jnp.abs(s) < 1).all()


def test_permutation_equivariance_no_positional_encoding():
  m = make()
  x, mask = inputs()
  x, mask = x[:1], jnp.ones((1, 7), bool)
  perm = np.random.RandomState(1).permutation(7)
  a = fwd(m, x, mask)['fine']
  b = fwd(m, x[:, perm], mask)['fine']
  np.testing.assert_allclose(b, a[:, perm], rtol=1e-5, atol=1e-6)


def test_learned_positions_add_one_vector_per_slot():
  """model.position=learned: the encoder reads x_j + p_j (slot j's vector), so order matters;
  with p = 0 it is the permutation-equivariant set model again."""
  m = make(width=24, position='learned')  # width = features: no projection before p is added
  x, mask = inputs()
  x, mask = x[:1], jnp.ones((1, 7), bool)
  p = np.asarray(m.encoder.position[...])
  assert p.shape == (20, 24) and 0 < p.std() < 0.05  # sampling.set_size slots, small init
  got = fwd(m, x, mask)['fine']
  m.encoder.position[...] = jnp.zeros_like(m.encoder.position[...])
  np.testing.assert_allclose(fwd(m, x + p[None, :7], mask)['fine'], got, rtol=1e-5, atol=1e-6)
  perm = np.random.RandomState(1).permutation(7)
  np.testing.assert_allclose(fwd(m, x[:, perm], mask)['fine'], fwd(m, x, mask)['fine'][:, perm],
                             rtol=1e-5, atol=1e-6)
  m.encoder.position[...] = jnp.asarray(p)
  assert not np.allclose(fwd(m, x[:, perm], mask)['fine'], got[:, perm], atol=1e-4)


def test_padding_positions_do_not_affect_valid_ones():
  m = make()
  x, mask = inputs()
  noise = jnp.where(mask[..., None], 0.0, 100.0)
  a, b = fwd(m, x, mask)['coarse'], fwd(m, x + noise, mask)['coarse']
  np.testing.assert_allclose(np.where(mask, b, 0), np.where(mask, a, 0), rtol=1e-5, atol=1e-6)


def test_dropout_only_with_a_key():
  m = make()
  x, mask = inputs()
  np.testing.assert_array_equal(fwd(m, x, mask)['fine'], fwd(m, x, mask)['fine'])
  assert not np.allclose(fwd(m, x, mask, jax.random.key(0))['fine'], fwd(m, x, mask)['fine'])


def test_remat_gives_the_same_gradients():
  x, mask = inputs()
  grads = []
  for remat in (False, True):
    m = make(remat=remat)
    g, p = nnx.split(m)
    loss = lambda p_: jnp.sum(nnx.merge(g, p_)(x, mask, jax.random.key(3))['fine'] * mask)
    grads.append(jax.jit(jax.grad(loss))(p))
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_is_close():
  x, mask = inputs()
  m32, m16 = make(), make(dtype='bfloat16')
  _, p = nnx.split(m16)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(p))
  a, b = fwd(m32, x, mask)['fine'], fwd(m16, x, mask)['fine']
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(np.where(mask, b, 0), np.where(mask, a, 0), atol=0.05)


def test_width_equal_to_features_has_no_projection_and_without_encoder_heads_see_features():
  assert make(width=24).encoder.proj is None
  assert make(width=32).encoder.proj is not None
  m = make(use_encoder=False)
  assert m.encoder is None
  assert m.heads['fine'].layers[0].kernel.value.shape == (24, 16)
  x, mask = inputs()
  # Without the encoder a segment's score depends on its own features only.
  a = fwd(m, x, mask)['fine']
  b = fwd(m, x.at[:, 1:].set(0.0), mask)['fine']
  np.testing.assert_allclose(a[:, 0], b[:, 0], rtol=1e-6)


def test_width_not_divisible_by_heads_is_a_clear_error():
  from dlvhd_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserInputError, match='num_heads'):
    make(width=30)


def test_evaluation_runs_only_the_heads_an_objective_scores_with():
  """RevGrad's domain discriminator is a head of its model but never runs at test time."""
  from dlvhd_jax import evaluation, methods, parallel  # pylint: disable=import-outside-toplevel
  objective = methods.get_objective('revgrad')
  cfg = base.get_base_config()
  cfg.model.width, cfg.model.depth, cfg.model.num_heads, cfg.model.head_dims = 16, 1, 2, (8,)
  model = model_lib.build_model(cfg, 24, objective.heads, seed=0)
  graphdef, params = nnx.split(model)
  mesh = parallel.make_mesh()
  x, mask = inputs()
  args = (params, x[0], jnp.zeros((4, 7), jnp.int32), jnp.ones((4, 7), bool), jnp.zeros(4, jnp.int32))

  def dots(heads):
    fn = evaluation.make_logit_fn(graphdef, heads, mesh)
    return str(jax.make_jaxpr(lambda p, x, *a: fn.logits(p, fn.embed(p, x), *a))(*args)).count(
        'dot_general')
  assert objective.eval_heads == ('score',)
  # Each head is 2 dense layers; the domain head would add its 2.
  assert dots(('score', 'domain')) - dots(objective.eval_heads) == 2
  out = fwd(model, x, mask, heads=('score',))
  assert set(out) == {'score'}
  np.testing.assert_array_equal(out['score'], fwd(model, x, mask)['score'])


@pytest.mark.parametrize('model', [
    dict(width=32),
    dict(width=32, remat=True, variant='v1'),
    dict(width=24, position='learned'),  # 24 = the feature dim: no projection, a cast
    dict(width=32, use_encoder=False)])
def test_windowed_scoring_equals_the_full_forward_of_each_window(model):
  """evaluation.predict projects the bank once, gathers windows of embeddings and runs the
  last block for the own segment only; each score must equal the model run on that window's
  raw features (its own slot), per replica too."""
  from dlvhd_jax import evaluation, parallel  # pylint: disable=import-outside-toplevel
  cfg = base.get_base_config()
  cfg.model.depth, cfg.model.num_heads, cfg.model.head_dims = 2, 4, (16, 8)
  cfg.model.update(model)
  width = model['width']
  cfg.sampling.set_size, cfg.eval.batch_size = 5, 8
  models = [model_lib.build_model(cfg, 24, ('coarse', 'fine'), seed=s) for s in (0, 1)]
  graphdef, p0 = nnx.split(models[0])
  p1 = nnx.split(models[1])[1]
  mesh = parallel.make_mesh()
  videos = [np.random.RandomState(v).randn(t, 24).astype(np.float32) for v, t in ((0, 9), (1, 3))]
  heads = ('coarse', 'fine')
  fn = evaluation.make_logit_fn(graphdef, heads, mesh)
  assert (str(jax.make_jaxpr(fn.embed)(p0, jnp.asarray(videos[0]))).count('dot_general')
          == (1 if width != 24 and cfg.model.use_encoder else 0))
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), p0, p1)
  both = evaluation.predict(graphdef, stacked, videos, heads, cfg, mesh, replicas=True)
  for r, m in enumerate(models):
    got = evaluation.predict(graphdef, nnx.split(m)[1], videos, heads, cfg, mesh, logit_fn=fn)
    for v, feats in enumerate(videos):
      idx, mask, own = evaluation.window_indices(len(feats), 5)
      out = fwd(m, jnp.asarray(feats[idx]), jnp.asarray(mask))
      ref = np.mean([np.asarray(out[h])[np.arange(len(feats)), own] for h in heads], axis=0)
      np.testing.assert_allclose(got[v], ref, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(both[v][r], got[v], rtol=1e-6, atol=1e-7)
