"""The set model of SL-module / DL-VHD: a shared set Transformer encoder and scoring heads.

SPEC: pre-LN Transformer blocks without positional encoding (a set is permutation
invariant), padding positions masked in attention, dropout on both residual branches,
and MLP scoring heads FC -> ReLU -> Drop -> FC -> ReLU -> Drop -> FC(., 1) whose output is
mapped to (-1, 1) by 2*sigmoid(.) - 1. `config.model.position=learned` (a named change, off by
default) adds a learned vector per set slot, so that a set drawn as a window in time order
(`sampling.mode=window`, as inference's windows are) is read in order.

`config.model.variant` fixes what the paper leaves open. `published` follows the authors'
code (network/transformer.py, network/score_net.py): attention logits scaled by
width^-1/2 (not head_dim^-1/2), one bias-free query/key/value projection, feed-forward
dropout after the GELU and after the second linear, LayerNorm epsilon 1e-5, torch's default
initialization (every linear weight and bias uniform in +-1/sqrt(fan_in), LayerNorm 1 and 0)
and scoring heads W/4 -> W/16 -> 1 of their input width W. `v1` is this project's first
model (head_dim^-1/2, biased qkv, one feed-forward dropout, epsilon 1e-6, LeCun-normal
weights with zero biases, heads 1024 -> 256 -> 1), kept so that numbers measured with it
stay reproducible.

Dropout takes an explicit PRNG key (folded per layer) instead of an nnx.Rngs stream, so the
compiled train step stays a pure function of (params, optimizer state, step, key) and its
random draws do not depend on how the batch is sharded.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from dlvhd_jax.errors import UserInputError

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
VARIANTS = ('published', 'v1')
# How the encoder sees a segment's place in its set: none (the paper: a set is permutation
# invariant) | learned (a named change: slot j of a set in time order gets a learned vector).
POSITIONS = ('none', 'learned')
V1_HEAD_DIMS = (1024, 256)


def check_variant(variant: str) -> str:
  if variant not in VARIANTS:
    raise UserInputError(f'config.model.variant={variant!r} is not one of {list(VARIANTS)}')
  return variant


def head_dims(variant: str, head_in: int, dims: Sequence[int] = ()) -> tuple[int, ...]:
  """Hidden widths of a scoring head on [.., head_in] embeddings: `dims` if given, else the
  variant's (published: head_in/4, head_in/16 as the authors' ScoreFCN; v1: 1024, 256)."""
  if dims:
    return tuple(int(d) for d in dims)
  if variant == 'published':
    return (max(1, head_in // 4), max(1, head_in // 16))
  return V1_HEAD_DIMS


def _torch_uniform(fan_in: int):
  """torch.nn.Linear's default initializer for weights and biases: U(-1/sqrt(fan_in), +)."""
  bound = 1.0 / max(fan_in, 1) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def linear(fan_in: int, fan_out: int, variant: str, *, dtype, rngs: nnx.Rngs,
           use_bias: bool = True) -> nnx.Linear:
  """A float32-parameter linear layer initialized as the variant says."""
  init = {}
  if variant == 'published':
    init = dict(kernel_init=_torch_uniform(fan_in), bias_init=_torch_uniform(fan_in))
  return nnx.Linear(fan_in, fan_out, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                    rngs=rngs, **init)


def layer_norm(width: int, variant: str, *, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(width, epsilon=1e-5 if variant == 'published' else 1e-6, dtype=dtype,
                       param_dtype=jnp.float32, rngs=rngs)


def canonical_dtype(name: str):
  if name not in DTYPES:
    raise UserInputError(f'config.model.dtype={name!r} is not one of {sorted(DTYPES)}')
  return DTYPES[name]


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when `key` is None (evaluation) or rate == 0."""
  if key is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x)).astype(x.dtype)


def _fold(key: jax.Array | None, i: int) -> jax.Array | None:
  return None if key is None else jax.random.fold_in(key, i)


class SelfAttention(nnx.Module):
  """Multi-head self-attention over a set with a key padding mask."""

  def __init__(self, width: int, num_heads: int, *, variant: str, dtype, rngs: nnx.Rngs):
    if width % num_heads:
      raise UserInputError(f'config.model.width={width} is not divisible by model.num_heads={num_heads}')
    self.num_heads = num_heads
    published = variant == 'published'
    # The published code scales by the whole width (its `dim ** -0.5`), v1 by the head's.
    self.scale = width ** -0.5 if published else None
    self.qkv = linear(width, 3 * width, variant, use_bias=not published, dtype=dtype, rngs=rngs)
    self.out = linear(width, width, variant, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, query: jax.Array | None = None) -> jax.Array:
    """x: [B, N, W], mask: [B, N] bool (True = valid) -> [B, N, W]; with `query` [B] int,
    only the output at position query[b] of each set: [B, 1, W]."""
    b, n, w = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, w // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if query is not None:
      q = jnp.take_along_axis(q, query[:, None, None, None], axis=1)
    # Keys at padding positions are masked; the softmax itself runs in f32 inside XLA's
    # attention for bf16 inputs.
    y = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :], scale=self.scale)
    return self.out(y.reshape(b, q.shape[1], w))


class EncoderBlock(nnx.Module):
  """x = x + Drop(Attn(LN(x))); x = x + Drop(FC(Drop'(GELU(FC(LN(x)))))), Drop' published only."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, dropout_rate: float, *,
               variant: str, dtype, rngs: nnx.Rngs):
    self.dropout_rate = dropout_rate
    self.inner_dropout = variant == 'published'
    self.ln1 = layer_norm(width, variant, dtype=dtype, rngs=rngs)
    self.attn = SelfAttention(width, num_heads, variant=variant, dtype=dtype, rngs=rngs)
    self.ln2 = layer_norm(width, variant, dtype=dtype, rngs=rngs)
    self.fc1 = linear(width, mlp_dim, variant, dtype=dtype, rngs=rngs)
    self.fc2 = linear(mlp_dim, width, variant, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, key: jax.Array | None,
               query: jax.Array | None = None) -> jax.Array:
    """x: [B, N, W] -> [B, N, W]; with `query` [B] int only position query[b]: [B, 1, W]."""
    a = self.attn(self.ln1(x), mask, query)
    if query is not None:
      x = jnp.take_along_axis(x, query[:, None, None], axis=1)
    x = x + dropout(a, self.dropout_rate, _fold(key, 0))
    h = jax.nn.gelu(self.fc1(self.ln2(x)), approximate=False)
    if self.inner_dropout:
      h = dropout(h, self.dropout_rate, _fold(key, 2))
    return x + dropout(self.fc2(h), self.dropout_rate, _fold(key, 1))


class SetEncoder(nnx.Module):
  """Shared set Transformer T: [B, N, D] features -> [B, N, W] contextual embeddings."""

  def __init__(self, in_dim: int, width: int, depth: int, num_heads: int, mlp_dim: int,
               dropout_rate: float, *, variant: str, dtype, remat: bool, rngs: nnx.Rngs,
               position: str = 'none', set_size: int = 0):
    self.dtype = dtype
    self.remat = remat
    # The paper has no input projection (width = feature dim); a different width adds one.
    self.proj = (linear(in_dim, width, variant, dtype=dtype, rngs=rngs)
                 if width != in_dim else None)
    if position not in POSITIONS:
      raise UserInputError(f'config.model.position={position!r} is not one of {list(POSITIONS)}')
    # One vector per slot of an N-segment window, ViT's initialization (N(0, 0.02^2)): small
    # against the features, so training starts from the permutation-invariant model.
    self.position = (nnx.Param(0.02 * jax.random.normal(rngs.params(), (set_size, width)))
                     if position == 'learned' else None)
    self.blocks = nnx.List([
        EncoderBlock(width, num_heads, mlp_dim, dropout_rate, variant=variant, dtype=dtype,
                     rngs=rngs)
        for _ in range(depth)])

  def embed(self, x: jax.Array) -> jax.Array:
    """[..., D] features -> [..., W] token inputs. Per segment, so windowed inference embeds
    each segment once, not once per window that holds it."""
    x = x.astype(self.dtype)
    return x if self.proj is None else self.proj(x)

  def __call__(self, x: jax.Array, mask: jax.Array, key: jax.Array | None) -> jax.Array:
    return self.contextualize(self.embed(x), mask, key)

  def contextualize(self, x: jax.Array, mask: jax.Array, key: jax.Array | None,
                    query: jax.Array | None = None) -> jax.Array:
    """[B, N, W] embedded sets -> [B, N, W] contextual embeddings; with `query` [B] int, the
    embedding at position query[b] only, [B, 1, W]: the last block then computes nothing
    else (windowed inference keeps one segment per window)."""
    if self.position is not None:
      n = x.shape[1]
      if n > self.position.shape[0]:
        raise ValueError(f'a set of {n} segments is longer than the {self.position.shape[0]} '
                         'learned positions (sampling.set_size)')
      x = x + self.position[...][:n].astype(self.dtype)
    last = len(self.blocks) - 1  # config.model.depth >= 1
    for i, block in enumerate(self.blocks):
      if query is not None and i == last:
        x = block(x, mask, _fold(key, i), query)
      elif self.remat:
        x = nnx.remat(lambda blk, x_, m_, k_: blk(x_, m_, k_))(block, x, mask, _fold(key, i))
      else:
        x = block(x, mask, _fold(key, i))
    return x


class ScoringHead(nnx.Module):
  """C: [B, N, W] -> highlight scores [B, N] in (-1, 1), float32."""

  def __init__(self, width: int, hidden: Sequence[int], dropout_rate: float, *, variant: str,
               dtype, rngs: nnx.Rngs):
    self.dropout_rate = dropout_rate
    dims = [width, *hidden, 1]
    self.layers = nnx.List([linear(a, b, variant, dtype=dtype, rngs=rngs)
                            for a, b in zip(dims[:-1], dims[1:])])

  def logits(self, h: jax.Array, key: jax.Array | None) -> jax.Array:
    for i, layer in enumerate(self.layers[:-1]):
      h = dropout(jax.nn.relu(layer(h)), self.dropout_rate, _fold(key, i))
    return self.layers[-1](h)[..., 0].astype(jnp.float32)

  def __call__(self, h: jax.Array, key: jax.Array | None) -> jax.Array:
    return 2.0 * jax.nn.sigmoid(self.logits(h, key)) - 1.0


class HighlightModel(nnx.Module):
  """One shared encoder (or none: the "w/o T" ablation) and the named heads of an objective."""

  def __init__(self, in_dim: int, *, width: int, depth: int, num_heads: int, mlp_dim: int,
               head_dims: Sequence[int], heads: Sequence[str], dropout_rate: float,
               use_encoder: bool, dtype, remat: bool, rngs: nnx.Rngs, variant: str = 'v1',
               position: str = 'none', set_size: int = 0):
    self.dtype = dtype
    self.encoder = (SetEncoder(in_dim, width, depth, num_heads, mlp_dim, dropout_rate,
                               variant=variant, dtype=dtype, remat=remat, rngs=rngs,
                               position=position, set_size=set_size)
                    if use_encoder else None)
    head_in = width if use_encoder else in_dim
    self.heads = nnx.Dict({name: ScoringHead(head_in, head_dims, dropout_rate, variant=variant,
                                             dtype=dtype, rngs=rngs) for name in heads})

  def encode(self, x: jax.Array, mask: jax.Array, key: jax.Array | None) -> jax.Array:
    """x: [B, N, D], mask: [B, N] -> embeddings [B, N, W] (x itself without encoder)."""
    return self.encode_embedded(self.embed(x), mask, key)

  def embed(self, x: jax.Array) -> jax.Array:
    """[..., D] features -> [..., W] the encoder's per-segment input (its projection)."""
    return x.astype(self.dtype) if self.encoder is None else self.encoder.embed(x)

  def encode_embedded(self, e: jax.Array, mask: jax.Array, key: jax.Array | None,
                      query: jax.Array | None = None) -> jax.Array:
    """e: [B, N, W] from `embed`, mask: [B, N] -> embeddings [B, N, W]; with `query` [B]
    int only those at position query[b]: [B, 1, W]."""
    if self.encoder is not None:
      return self.encoder.contextualize(e, mask, key, query)
    return e if query is None else jnp.take_along_axis(e, query[:, None, None], axis=1)

  def logits(self, h: jax.Array, key: jax.Array | None,
             heads: Sequence[str] | None = None) -> dict[str, jax.Array]:
    """h: [B, N, W] -> {head name: logits [B, N] float32} for `heads` (default: all).

    A head's dropout key depends on its place among all heads, not among those asked for.
    """
    names = sorted(self.heads.keys())
    wanted = names if heads is None else heads
    return {name: self.heads[name].logits(h, _fold(key, names.index(name))) for name in wanted}

  def score(self, h: jax.Array, key: jax.Array | None,
            heads: Sequence[str] | None = None) -> dict[str, jax.Array]:
    """h: [B, N, W] -> {head name: scores 2 sigmoid(logit) - 1 in (-1, 1), [B, N]}."""
    return {name: 2.0 * jax.nn.sigmoid(x) - 1.0 for name, x in self.logits(h, key, heads).items()}

  def __call__(self, x, mask, key=None, heads: Sequence[str] | None = None):
    k_enc, k_head = (None, None) if key is None else tuple(jax.random.split(key))
    return self.score(self.encode(x, mask, k_enc), k_head, heads)


def variant_of(cfg) -> str:
  """config.model.variant; a config without the key predates it and was v1."""
  m = cfg.get('model', None)
  return check_variant(m.get('variant', 'v1') if m is not None else 'v1')


def model_width(cfg, in_dim: int) -> int:
  w = cfg.model.width
  return in_dim if w in (-1, 0, None) else int(w)


def resolved_head_dims(cfg, in_dim: int) -> tuple[int, ...]:
  """The scoring heads' hidden widths this config builds for `in_dim`-d features."""
  head_in = model_width(cfg, in_dim) if cfg.model.use_encoder else in_dim
  return head_dims(variant_of(cfg), head_in, cfg.model.head_dims)


def build_model(cfg, in_dim: int, heads: Sequence[str], seed) -> HighlightModel:
  """Builds the model of `cfg.model` for features of dimension `in_dim`; `seed` (an int or a
  PRNG key) seeds its parameters."""
  m = cfg.model
  width = model_width(cfg, in_dim)
  return HighlightModel(
      in_dim, width=width, depth=m.depth, num_heads=m.num_heads, mlp_dim=m.mlp_ratio * width,
      head_dims=resolved_head_dims(cfg, in_dim), heads=heads, dropout_rate=m.dropout,
      use_encoder=m.use_encoder, dtype=canonical_dtype(m.dtype), remat=m.remat,
      rngs=nnx.Rngs(params=seed), variant=variant_of(cfg),
      # .get: a config saved before model.position existed had none.
      position=m.get('position', 'none'), set_size=int(cfg.sampling.set_size))


def eval_flops(windows: int, segments: int, n: int, in_dim: int, width: int, depth: int,
               mlp_dim: int, head_dims: Sequence[int], num_heads_scored: int,
               use_encoder: bool) -> float:
  """Analytic forward FLOPs of windowed inference (evaluation.LogitFn): `segments` segments
  projected once (2*D*W each, if W != D), `windows` sets of N through all blocks but the last
  (per token as in train_flops_per_set), the last block's qkv for all N tokens and its
  attention, out projection and MLP for the own segment only, the heads on it alone."""
  flops = 0.0
  head_in = in_dim
  if use_encoder:
    head_in = width
    if width != in_dim:
      flops += segments * 2 * in_dim * width
    full = 2 * 4 * width * width + 2 * 2 * width * mlp_dim + 2 * 2 * n * width
    last = n * 2 * 3 * width * width + 2 * 2 * n * width + 2 * width * width + 2 * 2 * width * mlp_dim
    flops += windows * ((depth - 1) * n * full + last)
  dims = [head_in, *head_dims, 1]
  flops += windows * num_heads_scored * sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
  return flops


def train_flops_per_set(n: int, in_dim: int, width: int, depth: int, mlp_dim: int,
                        head_dims: Sequence[int], num_heads_scored: int, use_encoder: bool) -> float:
  """Analytic training FLOPs of one set of N segments through encoder + heads (fwd + bwd = 3x fwd).

  Per token: projection 2*D*W (if any); per block 2*(3W^2 + W^2) (qkv + out) + 2*2*W*M (MLP)
  and attention 2*2*N*W (scores + weighted sum); per head 2*sum(a*b) over its FC layers.
  """
  fwd = 0.0
  if use_encoder:
    if width != in_dim:
      fwd += 2 * in_dim * width
    fwd += depth * (2 * 4 * width * width + 2 * 2 * width * mlp_dim + 2 * 2 * n * width)
  head_in = width if use_encoder else in_dim
  dims = [head_in, *head_dims, 1]
  fwd += num_heads_scored * sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
  return 3.0 * fwd * n
