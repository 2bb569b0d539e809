"""C3D (Tran et al. 2015) in Flax, inference only: the frozen feature extractor of DL-VHD.

Architecture (SPEC "C3D"): eight 3x3x3 convolutions (stride 1, padding 1, ReLU) with max
pools after conv1 (1,2,2), conv2, conv3b, conv4b (2,2,2) and conv5b ((2,2,2) with spatial
padding (0,1,1)), then fc6 (8192 -> 4096), ReLU, fc7 (4096 -> 4096). The feature is fc7
before its ReLU. Layout is channels-last throughout: clips are [B, T=16, H=112, W=112, C=3]
(BGR, mean [90, 98, 102] subtracted, as the published preprocessing) and pool5 is
[B, 1, 4, 4, 512].

Parameters are a plain nested dict `{'params': {'conv1': {'kernel', 'bias'}, ...}}` with
conv kernels [kt, kh, kw, in, out] and dense kernels [in, out], always float32; the
compute dtype (float32 | bfloat16) is a separate, static argument.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_FRAMES = 16
CROP_SIZE = 112
FEATURE_DIM = 4096
# (name, in channels, out channels, index in the `features.N` layout)
CONVS = (
    ('conv1', 3, 64, 0), ('conv2', 64, 128, 3),
    ('conv3a', 128, 256, 6), ('conv3b', 256, 256, 8),
    ('conv4a', 256, 512, 11), ('conv4b', 512, 512, 13),
    ('conv5a', 512, 512, 16), ('conv5b', 512, 512, 18),
)
# (name, in features, out features, index in the `classifier.N` layout)
DENSES = (('fc6', 8192, 4096, 0), ('fc7', 4096, 4096, 3))
POOLS = {'conv1': (1, 2, 2), 'conv2': (2, 2, 2), 'conv3b': (2, 2, 2),
         'conv4b': (2, 2, 2), 'conv5b': (2, 2, 2)}
POOL5_SHAPE = (1, 4, 4, 512)  # [T, H, W, C] for a 16x112x112 clip
OUTPUTS = ('pool5', 'fc6', 'fc7')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Head layers of the published checkpoints that the feature extractor does not use.
_IGNORED_PREFIXES = ('fc8.', 'classifier.6.')


class C3D(nn.Module):
  """C3D trunk up to fc7. Call: clips [B, 16, 112, 112, 3] -> {'pool5', 'fc6', 'fc7'}."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for name, _, features, _ in CONVS:
      x = nn.Conv(features, (3, 3, 3), padding=1, dtype=self.dtype, name=name)(x)
      x = nn.relu(x)
      if name in POOLS:
        window = POOLS[name]
        # PyTorch's MaxPool3d pads with -inf; reduce_window pads with the max identity
        # (-inf) too, so the padded border never wins.
        padding = ((0, 0), (1, 1), (1, 1)) if name == 'conv5b' else 'VALID'
        x = nn.max_pool(x, window, strides=window, padding=padding)
    pool5 = x
    fc6 = nn.Dense(4096, dtype=self.dtype, name='fc6')(x.reshape(x.shape[0], -1))
    fc7 = nn.Dense(4096, dtype=self.dtype, name='fc7')(nn.relu(fc6))
    return {'pool5': pool5, 'fc6': fc6, 'fc7': fc7}


def param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
  """Flax parameter shapes, {layer: {'kernel': shape, 'bias': shape}}."""
  shapes = {}
  for name, cin, cout, _ in CONVS:
    shapes[name] = {'kernel': (3, 3, 3, cin, cout), 'bias': (cout,)}
  for name, fin, fout, _ in DENSES:
    shapes[name] = {'kernel': (fin, fout), 'bias': (fout,)}
  return shapes


# ----------------------------------------------------------------------------- conversion

def _torch_names(layer: str, layout: str) -> str:
  if layout == 'named':
    return layer
  for name, _, _, index in CONVS:
    if name == layer:
      return f'features.{index}'
  for name, _, _, index in DENSES:
    if name == layer:
      return f'classifier.{index}'
  raise KeyError(layer)


def _torch_shape(layer: str, kind: str) -> tuple[int, ...]:
  shape = param_shapes()[layer][kind]
  if kind == 'bias':
    return shape
  if len(shape) == 5:  # Flax [kt, kh, kw, in, out] <- torch [out, in, kt, kh, kw]
    return (shape[4], shape[3], shape[0], shape[1], shape[2])
  return (shape[1], shape[0])  # torch Linear stores [out, in]


def convert_torch_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """Published PyTorch C3D state dict (names -> numpy arrays) -> Flax params.

  Accepts `features.{0,3,6,8,11,13,16,18}.*` + `classifier.{0,3}.*` (c3d-pretrained.pth)
  or `conv1.* ... conv5b.*, fc6.*, fc7.*` (Sports-1M c3d.pickle), with an optional
  `module.` prefix (DataParallel); fc8 / classifier.6 are ignored. Raises a one-line
  ValueError naming missing or unexpected keys and wrong shapes.
  """
  sd = {}
  for key, value in state_dict.items():
    key = key[len('module.'):] if key.startswith('module.') else key
    if key.startswith(_IGNORED_PREFIXES):
      continue
    sd[key] = np.asarray(value)
  layout = 'features' if any(k.startswith(('features.', 'classifier.')) for k in sd) else 'named'
  expected = {}
  for layer in param_shapes():
    for kind, torch_kind in (('kernel', 'weight'), ('bias', 'bias')):
      expected[f'{_torch_names(layer, layout)}.{torch_kind}'] = (layer, kind)
  missing = sorted(set(expected) - set(sd))
  unexpected = sorted(set(sd) - set(expected))
  wrong = [f'{k} {tuple(sd[k].shape)} (expected {_torch_shape(*expected[k])})'
           for k in sorted(set(expected) & set(sd))
           if tuple(sd[k].shape) != _torch_shape(*expected[k])]
  if missing or unexpected or wrong:
    parts = []
    if missing:
      parts.append(f'missing keys {missing}')
    if unexpected:
      parts.append(f'unexpected keys {unexpected}')
    if wrong:
      parts.append(f'wrong shapes {wrong}')
    raise ValueError(f'not a C3D state dict ({layout} layout): ' + '; '.join(parts))

  params = {}
  for key, (layer, kind) in expected.items():
    value = sd[key].astype(np.float32)
    if kind == 'kernel' and value.ndim == 5:
      value = value.transpose(2, 3, 4, 1, 0)
    elif kind == 'kernel' and layer == 'fc6':
      # torch flattens pool5 as [C, T, H, W]; Flax flattens [T, H, W, C]. Reorder the input
      # rows so that the same activations meet the same weights.
      c_t_h_w = value.T.reshape(POOL5_SHAPE[3], *POOL5_SHAPE[:3], -1)
      value = c_t_h_w.transpose(1, 2, 3, 0, 4).reshape(8192, -1)
    elif kind == 'kernel':
      value = value.T
    params.setdefault(layer, {})[kind] = np.ascontiguousarray(value)
  return {'params': params}


def _check_params(params: Mapping[str, Any], source: str) -> None:
  got = params.get('params', {})
  problems = []
  for layer, kinds in param_shapes().items():
    for kind, shape in kinds.items():
      value = got.get(layer, {}).get(kind)
      if value is None:
        problems.append(f'{layer}/{kind} missing')
      elif tuple(value.shape) != shape:
        problems.append(f'{layer}/{kind} has shape {tuple(value.shape)}, expected {shape}')
  if problems:
    raise ValueError(f'{source}: not C3D parameters: ' + '; '.join(problems))


def save_params(path: str, params: Mapping[str, Any]) -> None:
  """Writes params as a flat .npz ('conv1/kernel', ...); atomic (temp file, then rename)."""
  _check_params(params, 'save_params')
  flat = {f'{layer}/{kind}': np.asarray(v, np.float32)
          for layer, kinds in params['params'].items() for kind, v in kinds.items()}
  tmp = f'{path}.tmp.npz'  # np.savez appends .npz to names without it
  np.savez(tmp, **flat)
  os.replace(tmp, path)


def load_params(path: str) -> dict:
  """Reads a parameter file written by save_params (no PyTorch needed)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'C3D weights not found: {path}')
  try:
    with np.load(path) as f:
      flat = {k: f[k] for k in f.files}
  except Exception as e:  # zipfile / pickle / format errors all mean the same to the user
    raise ValueError(f'{path}: cannot read C3D parameter file ({type(e).__name__}: {e})') from None
  params = {}
  for key, value in flat.items():
    layer, _, kind = key.partition('/')
    params.setdefault(layer, {})[kind] = value
  _check_params({'params': params}, path)
  return {'params': params}


def init_random_params(seed: int = 0) -> dict:
  """Random float32 params: N(0, 1/fan_in) kernels, zero biases (tests and benchmarks).

  Fan-in scaling keeps activations of the [-102, 165] input range at a few hundred at most,
  so fc7 fits float16 output files.
  """
  rng = np.random.default_rng(seed)
  params = {}
  for layer, kinds in param_shapes().items():
    kshape = kinds['kernel']
    fan_in = int(np.prod(kshape[:-1]))
    kernel = rng.standard_normal(kshape, dtype=np.float32) * np.float32(fan_in ** -0.5)
    params[layer] = {'kernel': kernel, 'bias': np.zeros(kinds['bias'], np.float32)}
  return {'params': params}


# ------------------------------------------------------------------------------ inference

@functools.partial(jax.jit, static_argnames=('dtype', 'outputs'))
def extract_features(params, clips, dtype: str = 'float32',
                     outputs: Sequence[str] = ('fc7',)) -> dict[str, jax.Array]:
  """clips [B, 16, 112, 112, 3] float32 (preprocessed) -> {name: float32 activation}.

  `outputs` is a tuple of 'fc7' [B, 4096], 'fc6' [B, 4096] (before ReLU) and
  'pool5' [B, 1, 4, 4, 512]; `dtype` is the compute dtype, 'float32' or 'bfloat16'.
  """
  if dtype not in DTYPES:
    raise ValueError(f'dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
  bad = [o for o in outputs if o not in OUTPUTS]
  if bad:
    raise ValueError(f'unknown C3D outputs {bad}; choose from {OUTPUTS}')
  if clips.shape[1:] != (NUM_FRAMES, CROP_SIZE, CROP_SIZE, 3):
    raise ValueError(f'clips must be [B, 16, 112, 112, 3], got {tuple(clips.shape)}')
  result = C3D(dtype=DTYPES[dtype]).apply(params, clips)
  return {name: result[name].astype(jnp.float32) for name in outputs}


def extract_fc7(params, clips, dtype: str = 'float32') -> jax.Array:
  """clips [B, 16, 112, 112, 3] float32, preprocessed -> fc7 before ReLU, [B, 4096] f32."""
  return extract_features(params, clips, dtype=dtype, outputs=('fc7',))['fc7']


def flops_per_clip(num_frames: int = NUM_FRAMES, size: int = CROP_SIZE) -> int:
  """Forward FLOPs of one clip up to fc7, counting a multiply-add as 2 FLOPs.

  Convolutions and dense layers only (ReLU, pooling and biases are < 0.1%). For the
  standard 16x112x112 clip: 77.0e9 FLOPs (38.5e9 multiply-adds).
  """
  t, h, w = num_frames, size, size
  total = 0
  for name, cin, cout, _ in CONVS:
    total += 2 * 27 * cin * cout * t * h * w
    if name in POOLS:
      kt, kh, kw = POOLS[name]
      pad = 2 if name == 'conv5b' else 0
      t, h, w = (t - kt) // kt + 1, (h + pad - kh) // kh + 1, (w + pad - kw) // kw + 1
  fin = t * h * w * CONVS[-1][2]
  for _, _, fout, _ in DENSES:
    total += 2 * fin * fout
    fin = fout
  return total


def matmul_peak_flops(dtype: str = 'float32', size: int = 4096, sharding=None) -> float:
  """Measured FLOP/s of a square [size, size] matmul in `dtype`, one per device at once
  (`sharding`: a 1-D batch sharding over the devices; None = the default device)."""
  n = 1 if sharding is None else sharding.mesh.size
  a = jax.device_put(jnp.ones((n, size, size), DTYPES[dtype]), sharding)
  f = jax.jit(lambda x: jnp.einsum('bij,bjk->bik', x, x))
  f(a).block_until_ready()
  reps, t0 = 0, time.perf_counter()
  while reps < 3 or time.perf_counter() - t0 < 1.0:
    f(a).block_until_ready()
    reps += 1
  return 2 * size ** 3 * n * reps / (time.perf_counter() - t0)
