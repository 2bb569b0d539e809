"""model.variant=published against a PyTorch module written from the published equations.

The reference below is written from the authors' network/transformer.py and score_net.py as
equations (pre-LN residual blocks; attention softmax(q k^T * width^-1/2) v with one bias-free
qkv projection; feed-forward Linear -> GELU -> Dropout -> Linear -> Dropout; LayerNorm eps
1e-5; heads Linear(W, W/4) -> ReLU -> Dropout -> Linear(W/4, W/16) -> ReLU -> Dropout ->
Linear(W/16, 1); score 2 sigmoid - 1), at a tiny width. The Flax model's parameters are
copied into it; forward scores and the gradient of every parameter must agree, with dropout
off and with the dropout masks the Flax model drew.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import base
from dlvhd_jax import losses, model as model_lib
from dlvhd_jax import optimizer

torch = pytest.importorskip('torch')
nn = torch.nn
F = torch.nn.functional

WIDTH, DEPTH, HEADS, N, B = 32, 2, 4, 6, 3
RATE = 0.5


def config(variant='published'):
  cfg = base.get_base_config()
  cfg.model.variant = variant
  cfg.model.width, cfg.model.depth, cfg.model.num_heads = WIDTH, DEPTH, HEADS
  return cfg


class Masks:
  """Dropout masks in the order the model draws them; `take(x)` applies the next one."""

  def __init__(self, masks=None):
    self.masks = list(masks) if masks is not None else None

  def __call__(self, x):
    if self.masks is None:
      return x
    keep = torch.from_numpy(np.array(self.masks.pop(0), np.float32))
    assert keep.shape == x.shape, (keep.shape, x.shape)
    return x * keep / (1.0 - RATE)


class Attention(nn.Module):
  def __init__(self, w, h):
    super().__init__()
    self.h, self.scale = h, w ** -0.5
    self.qkv = nn.Linear(w, 3 * w, bias=False)
    self.out = nn.Linear(w, w)

  def forward(self, x, drop):
    b, n, w = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.h, w // self.h).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
    return drop(self.out((attn @ v).transpose(1, 2).reshape(b, n, w)))


class Block(nn.Module):
  def __init__(self, w, h, mlp):
    super().__init__()
    self.ln1, self.ln2 = nn.LayerNorm(w, eps=1e-5), nn.LayerNorm(w, eps=1e-5)
    self.attn = Attention(w, h)
    self.fc1, self.fc2 = nn.Linear(w, mlp), nn.Linear(mlp, w)

  def forward(self, x, drop):
    x = x + self.attn(self.ln1(x), drop)
    return x + drop(self.fc2(drop(F.gelu(self.fc1(self.ln2(x))))))


class Head(nn.Module):
  def __init__(self, w):
    super().__init__()
    self.layers = nn.ModuleList([nn.Linear(w, w // 4), nn.Linear(w // 4, w // 16),
                                 nn.Linear(w // 16, 1)])

  def forward(self, x, drop):
    for layer in self.layers[:-1]:
      x = drop(F.relu(layer(x)))
    return 2 * torch.sigmoid(self.layers[-1](x).squeeze(-1)) - 1


class Published(nn.Module):
  def __init__(self):
    super().__init__()
    self.blocks = nn.ModuleList([Block(WIDTH, HEADS, 2 * WIDTH) for _ in range(DEPTH)])
    self.heads = nn.ModuleDict({'coarse': Head(WIDTH), 'fine': Head(WIDTH)})

  def forward(self, x, drop):
    for blk in self.blocks:
      x = blk(x, drop)
    return {name: self.heads[name](x, drop) for name in ('coarse', 'fine')}


def torch_name(path) -> str:
  """Flax parameter path -> the reference's parameter name."""
  parts = [str(p) for p in path if p != 'encoder']
  return '.'.join(parts[:-1] + [{'kernel': 'weight', 'scale': 'weight'}.get(parts[-1], parts[-1])])


def copy_into_torch(params, ref):
  named = dict(ref.named_parameters())
  for path, v in params.flat_state():
    name = torch_name(path)
    arr = np.array(v.value if hasattr(v, 'value') else v, np.float32)
    if path[-1] == 'kernel':
      arr = arr.T
    assert named[name].shape == arr.shape, (name, named[name].shape, arr.shape)
    with torch.no_grad():
      named[name].copy_(torch.from_numpy(arr))
  assert len(named) == len(list(params.flat_state()))


def inputs():
  rng = np.random.RandomState(0)
  x = rng.randn(B, N, WIDTH).astype(np.float32)
  y = np.where(rng.rand(B, N) > 0.5, 1.0, -1.0).astype(np.float32)
  y[:, 0] = 1.0
  return x, y


def jax_loss(model, x, y, key):
  out = model(jnp.asarray(x), jnp.ones((B, N), bool), key)
  mask = jnp.ones((B, N), bool)
  return sum(jnp.mean(losses.set_kl_divergence(jnp.asarray(y), out[h], mask))
             for h in ('coarse', 'fine')), out


def torch_loss(ref, x, y, drop):
  out = ref(torch.from_numpy(x), drop)
  t = torch.from_numpy(y)
  loss = sum(F.kl_div(F.log_softmax(out[h], -1), F.softmax(t, -1), reduction='none').sum(-1).mean()
             / N for h in ('coarse', 'fine'))
  return loss, out


def record_masks(monkeypatch):
  """Makes the Flax model's dropout keep the masks it draws, in draw order."""
  drawn = []
  real = model_lib.dropout

  def recording(x, rate, key):
    if key is not None and rate > 0:
      drawn.append(np.asarray(jax.random.bernoulli(key, 1.0 - rate, x.shape)))
    return real(x, rate, key)
  monkeypatch.setattr(model_lib, 'dropout', recording)
  return drawn


@pytest.mark.parametrize('with_dropout', [False, True], ids=['no_dropout', 'shared_masks'])
def test_forward_and_gradients_match_the_published_equations(with_dropout, monkeypatch):
  model = model_lib.build_model(config(), WIDTH, ('coarse', 'fine'), 0)
  graphdef, params = nnx.split(model)
  ref = Published()
  copy_into_torch(params, ref)
  x, y = inputs()
  key = jax.random.key(7) if with_dropout else None
  drawn = record_masks(monkeypatch)

  def loss_fn(p):
    return jax_loss(nnx.merge(graphdef, p), x, y, key)
  (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  # Published draw order: per block attention output, GELU, feed-forward output; then the
  # coarse head's two ReLUs and the fine head's two.
  assert len(drawn) == (3 * DEPTH + 4 if with_dropout else 0)
  t_loss, t_out = torch_loss(ref, x, y, Masks(drawn if with_dropout else None))
  t_loss.backward()
  for h in ('coarse', 'fine'):
    np.testing.assert_allclose(np.asarray(out[h]), t_out[h].detach().numpy(), rtol=1e-5,
                               atol=2e-6)
  np.testing.assert_allclose(float(loss), float(t_loss.detach()), rtol=1e-5)
  named = dict(ref.named_parameters())
  for path, g in grads.flat_state():
    g = np.asarray(g.value if hasattr(g, 'value') else g)
    want = named[torch_name(path)].grad.numpy()
    want = want.T if path[-1] == 'kernel' else want
    np.testing.assert_allclose(g, want, rtol=2e-4, atol=1e-7, err_msg=str(path))


def test_v1_is_not_the_published_model():
  """v1 keeps its qkv bias and fixed head widths; published heads follow the width."""
  pub = model_lib.build_model(config(), WIDTH, ('coarse', 'fine'), 0)
  v1 = model_lib.build_model(config('v1'), WIDTH, ('coarse', 'fine'), 0)
  _, p_pub = nnx.split(pub)
  _, p_v1 = nnx.split(v1)
  names = lambda p: {path for path, _ in p.flat_state()}
  assert ('encoder', 'blocks', 0, 'attn', 'qkv', 'bias') in names(p_v1) - names(p_pub)
  assert model_lib.resolved_head_dims(config('v1'), WIDTH) == (1024, 256)
  assert model_lib.resolved_head_dims(config(), WIDTH) == (8, 2)
  paper = config()
  paper.model.width = -1
  assert model_lib.resolved_head_dims(paper, 4096) == (1024, 256)
  paper.model.use_encoder = False  # "w/o T": the heads read the features
  assert model_lib.resolved_head_dims(paper, 2048) == (512, 128)


def test_published_initialization_is_torchs_default():
  """Every linear weight and bias uniform in +-1/sqrt(fan_in) (not zero biases), LayerNorm 1/0."""
  cfg = config()
  cfg.model.width = 256
  model = model_lib.build_model(cfg, 256, ('coarse', 'fine'), 0)
  _, params = nnx.split(model)
  fan_in = {}
  for path, v in params.flat_state():
    if path[-1] == 'kernel':
      fan_in[path[:-1]] = v.value.shape[0]
  for path, v in params.flat_state():
    a = np.asarray(v.value)
    if str(path[-2]).startswith('ln'):
      np.testing.assert_array_equal(a, np.ones_like(a) if path[-1] == 'scale' else 0 * a)
      continue
    bound = 1 / math.sqrt(fan_in[path[:-1]])
    assert np.abs(a).max() <= bound and np.abs(a).min() > 0, path
    if a.size >= 64:
      assert np.abs(a).max() > 0.9 * bound, path
    if a.size >= 4096:  # a uniform's std is bound / sqrt(3)
      assert abs(a.std() - bound / math.sqrt(3)) < 0.05 * bound, path


def test_published_step_decay_comes_one_epoch_early():
  """torch's StepLR stepped at each epoch's start: epoch e trains at 0.1^((e + 1) // 20)."""
  for variant, first_decay_epoch in (('published', 19), ('v1', 20)):
    cfg = config(variant)
    schedule = optimizer.make_schedule(cfg, num_source_segments=10)  # 10 steps per epoch
    _, lr = optimizer.make_optimizer(cfg, schedule)
    epochs = np.array([float(lr(e * 10)) for e in range(50)])
    assert np.argmax(epochs < 1e-3 * 0.5) == first_decay_epoch, variant
    assert np.isclose(epochs[-1], 1e-5)
    assert float(lr(first_decay_epoch * 10 - 1)) == pytest.approx(1e-3)
