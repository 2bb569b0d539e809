"""Video -> C3D clips: decoding, segmenting, frame sampling and the published preprocessing.

Decoder: PyAV (the `av` package). It is the maintained Python binding of FFmpeg (the same
libavcodec that OpenCV's video backend wraps), its pip wheels bundle FFmpeg so nothing has
to be installed system-wide, it decodes every frame in presentation order (frame-accurate,
unlike OpenCV's CAP_PROP_POS_FRAMES seeking) and it releases the GIL while decoding, so a
background thread overlaps decoding with device compute. Each video is decoded once,
sequentially, never seeking; only the frames some segment samples are converted to BGR
and resized.

Frame index i is the i-th frame the decoder outputs (0-based), as in the published code,
which counts `cv2.VideoCapture.read()` calls. A segment is a half-open frame interval
[start, end) and is represented by the 16 frame indices it samples:
  - 'published' (default): stride = max(1, (end - start) // 16),
    index_i = min(start + i * stride, end - 1), i = 0..15. For the 100-frame YouTube
    Highlights clips this is start + 0, 6, ..., 90, exactly the published loader's
    `i % floor(100 / 16) == 0` rule; shorter segments use a proportionally smaller stride
    instead of the published loader's uninitialized rows.
  - 'centered': index_i = start + ((end - start) * (2 i + 1)) // 32, the centres of 16 equal
    parts of the segment.
Frames a segment samples beyond the last decoded frame are replaced by the last frame.

Preprocessing (published): each sampled frame is converted to BGR, resized to 128x171
(H x W) with bilinear interpolation on half-pixel centres without antialiasing (the
geometry of cv2.INTER_LINEAR, rounded to uint8), cropped to 112x112 — centre crop
(top 8, left 29) for the test feature, uniformly random offsets (top 0..16, left 0..59,
the same for all 16 frames of a clip) for augmented views, optionally flipped
horizontally — and the BGR mean [90, 98, 102] is subtracted (`normalize`). The published
loader round-trips frames through JPEG files, which is not reproduced.
"""
from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Iterator

import av
import numpy as np

NUM_FRAMES = 16
RESIZE_HW = (128, 171)
CROP_SIZE = 112
CENTER_CROP = ((RESIZE_HW[0] - CROP_SIZE) // 2, (RESIZE_HW[1] - CROP_SIZE) // 2)  # (8, 29)
MEAN_BGR = np.array([90.0, 98.0, 102.0], np.float32)
SAMPLING_MODES = ('published', 'centered')
PREPROCESSING = {  # recorded in the extraction metadata
    'color': 'BGR', 'resize_hw': list(RESIZE_HW), 'resize': 'bilinear (cv2.INTER_LINEAR)',
    'crop': CROP_SIZE, 'center_crop_top_left': list(CENTER_CROP),
    'mean_bgr': MEAN_BGR.tolist(), 'frames_per_clip': NUM_FRAMES}
VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.m4v', '.flv', '.mpg',
                    '.mpeg', '.wmv', '.3gp', '.ts')


class VideoError(RuntimeError):
  """A video that cannot be used; str() is one line naming the file."""


class VideoNotFoundError(VideoError, FileNotFoundError):
  pass


class CorruptVideoError(VideoError):
  pass


def _corrupt(path: str, reason) -> CorruptVideoError:
  reason = ' '.join(str(reason).split())
  return CorruptVideoError(f'cannot decode video {path}: {reason}')


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  path: str
  fps: float
  num_frames: int  # the container's frame count (counted from packets if not declared)
  width: int
  height: int


@dataclasses.dataclass
class DecodeStats:
  decoded_frames: int = 0
  clamped_segments: int = 0  # segments that sampled frames past the last decoded one


def _open(path: str):
  if not os.path.isfile(path):
    raise VideoNotFoundError(f'video not found: {path}')
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
    raise _corrupt(path, e) from None
  if not container.streams.video:
    container.close()
    raise _corrupt(path, 'no video stream')
  return container


def upright(arr: np.ndarray, rotation) -> np.ndarray:
  """A decoded frame [H, W, C] turned as its display matrix says: phones store a portrait
  video as landscape frames plus a rotation (`frame.rotation`, degrees counterclockwise),
  which players apply and the decoder does not. Flips are not applied."""
  k = _quarter_turns(rotation)
  return np.rot90(arr, k) if k else arr


def _quarter_turns(rotation) -> int:
  return int(round((rotation or 0) / 90.0)) % 4


def display_rotation(path: str) -> int:
  """The rotation (degrees counterclockwise, 0/90/180/270) of the video's first frame."""
  with _open(path) as container:
    for frame in _decoded_frames(container, container.streams.video[0], path):
      return _quarter_turns(frame.rotation) * 90
  return 0


def probe(path: str) -> VideoInfo:
  """Frame rate and frame count without decoding."""
  with _open(path) as container:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
      raise _corrupt(path, 'unknown frame rate')
    frames = stream.frames
    if frames <= 0:  # e.g. mkv/webm do not declare it; packets are one frame each
      try:
        frames = sum(1 for p in container.demux(stream) if p.size)
      except (av.FFmpegError, OSError) as e:
        raise _corrupt(path, e) from None
    if frames <= 0:
      raise _corrupt(path, 'no video frames')
    return VideoInfo(path, float(rate), int(frames), stream.width, stream.height)


# ----------------------------------------------------------------------------- segmenting

def sample_indices(start: int, end: int, mode: str = 'published',
                   num: int = NUM_FRAMES) -> np.ndarray:
  """The `num` frame indices a segment [start, end) samples (see module docstring)."""
  start, end = int(start), int(end)
  if end <= start:
    raise ValueError(f'empty segment [{start}, {end})')
  i = np.arange(num, dtype=np.int64)
  if mode == 'published':
    stride = max(1, (end - start) // num)
    return np.minimum(start + i * stride, end - 1)
  if mode == 'centered':
    return start + ((end - start) * (2 * i + 1)) // (2 * num)
  raise ValueError(f'frame sampling must be one of {SAMPLING_MODES}, got {mode!r}')


def interval_segments(intervals, mode: str = 'published'):
  """Annotation `clip` lists [[start, end), ...] (frames, maybe floats) ->
  (intervals int [S, 2], indices int [S, 16])."""
  iv = np.asarray([[int(round(float(s))), int(round(float(e)))] for s, e in intervals],
                  np.int64).reshape(-1, 2)
  idx = np.stack([sample_indices(s, e, mode) for s, e in iv]) if len(iv) else \
      np.zeros((0, NUM_FRAMES), np.int64)
  return iv, idx


def fixed_segments(num_frames: int, fps: float, seconds: float, mode: str = 'published'):
  """Consecutive segments of `seconds` (round(seconds * fps) frames). A shorter tail is
  kept when it has at least half that length (or is the only segment).
  Returns (intervals [S, 2], indices [S, 16])."""
  if seconds <= 0:
    raise ValueError(f'segment_seconds must be > 0, got {seconds}')
  length = max(1, int(round(seconds * fps)))
  starts = range(0, num_frames, length)
  iv = [[s, min(s + length, num_frames)] for s in starts
        if s == 0 or min(s + length, num_frames) - s >= (length + 1) // 2]
  return interval_segments(iv, mode)


def sampled_fps_segments(num_frames: int, fps: float, sample_fps: float,
                         num: int = NUM_FRAMES):
  """ActivityNet style: the video is sampled at `sample_fps` (sample j is frame
  floor(j * fps / sample_fps)) and every `num` consecutive samples form a segment
  [first sample, first sample of the next segment). A shorter tail of at least num / 2
  samples is kept, repeating its last sample. Returns (intervals [S, 2], indices [S, num])."""
  if sample_fps <= 0:
    raise ValueError(f'sample_fps must be > 0, got {sample_fps}')
  frames = []
  j = 0
  while True:
    f = int(np.floor(j * fps / sample_fps + 1e-9))
    if f >= num_frames:
      break
    frames.append(f)
    j += 1
  iv, idx = [], []
  for g in range(0, len(frames), num):
    group = frames[g:g + num]
    if g and len(group) < (num + 1) // 2:
      break
    nxt = frames[g + num] if g + num < len(frames) else num_frames
    iv.append([group[0], max(nxt, group[-1] + 1)])
    idx.append(group + [group[-1]] * (num - len(group)))
  return (np.asarray(iv, np.int64).reshape(-1, 2),
          np.asarray(idx, np.int64).reshape(-1, num))


# ------------------------------------------------------------------------- preprocessing

def _linear_taps(src: int, dst: int):
  # cv2.INTER_LINEAR: half-pixel centres, borders clamped, no antialiasing filter.
  x = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
  x0 = np.floor(x).astype(np.int64)
  w = (x - x0).astype(np.float32)
  w[x0 < 0] = 0.0
  x0 = np.clip(x0, 0, src - 1)
  w[x0 >= src - 1] = 0.0
  return x0, np.minimum(x0 + 1, src - 1), w


_TAPS: dict = {}


def resize(frame: np.ndarray, size=RESIZE_HW) -> np.ndarray:
  """[H, W, 3] uint8 -> [128, 171, 3] uint8, bilinear (cv2.INTER_LINEAR geometry)."""
  h, w = frame.shape[:2]
  key = (h, w, tuple(size))
  if key not in _TAPS:
    _TAPS[key] = (_linear_taps(h, size[0]), _linear_taps(w, size[1]))
  (y0, y1, wy), (x0, x1, wx) = _TAPS[key]
  rows0 = frame[y0].astype(np.float32)
  rows = rows0 + (frame[y1].astype(np.float32) - rows0) * wy[:, None, None]
  cols0 = rows[:, x0]
  out = cols0 + (rows[:, x1] - cols0) * wx[None, :, None]
  return np.floor(out + 0.5).astype(np.uint8)


def crop_plan(num_segments: int, num_views: int = 0, *, seed: int = 0, key: str = '',
              flip: bool = False) -> np.ndarray:
  """Crops per segment, int32 [S, 1 + K, 3] of (top, left, flip). View 0 is the centre crop
  (the test feature); views 1..K are random crops, reproducible from (seed, key)."""
  plan = np.zeros((num_segments, 1 + num_views, 3), np.int32)
  plan[:, 0, :2] = CENTER_CROP
  if num_views:
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    plan[:, 1:, 0] = rng.integers(0, RESIZE_HW[0] - CROP_SIZE + 1, (num_segments, num_views))
    plan[:, 1:, 1] = rng.integers(0, RESIZE_HW[1] - CROP_SIZE + 1, (num_segments, num_views))
    if flip:
      plan[:, 1:, 2] = rng.integers(0, 2, (num_segments, num_views))
  return plan


def crop_views(frames: np.ndarray, crops: np.ndarray) -> np.ndarray:
  """frames [T, 128, 171, 3], crops [V, 3] (top, left, flip) -> [V, T, 112, 112, 3]."""
  out = np.empty((len(crops), frames.shape[0], CROP_SIZE, CROP_SIZE, 3), frames.dtype)
  for v, (top, left, flip) in enumerate(crops):
    view = frames[:, top:top + CROP_SIZE, left:left + CROP_SIZE]
    out[v] = view[:, :, ::-1] if flip else view
  return out


def normalize(clips: np.ndarray) -> np.ndarray:
  """uint8 BGR clips [..., 3] -> float32 with the BGR mean [90, 98, 102] subtracted."""
  return np.asarray(clips, np.float32) - MEAN_BGR


# I3D (DeepMind's preprocessing): RGB, the short side resized to 256 (aspect kept), a 224x224
# centre crop; the network maps [0, 255] to [-1, 1] itself (data_pipelines/extractors.py).
I3D_SHORT_SIDE = 256
I3D_CROP = 224
I3D_PREPROCESSING = {
    'color': 'RGB', 'resize_short_side': I3D_SHORT_SIDE,
    'resize': 'bilinear, antialiased when shrinking (the geometry of PIL BILINEAR)',
    'crop': I3D_CROP, 'crop_position': 'centre', 'range': [-1, 1]}


def _filter_taps(src: int, dst: int, first: int, count: int):
  """Rows `first .. first+count-1` of a src -> dst bilinear resize whose triangle filter is
  stretched by the shrink factor (PIL's BILINEAR): (indices int [count, K], weights
  float32 [count, K]), the weights of each row summing to 1."""
  scale = src / dst
  support = max(scale, 1.0)
  centre = (np.arange(first, first + count, dtype=np.float64) + 0.5) * scale
  lo = np.clip(np.floor(centre - support + 0.5).astype(np.int64), 0, src - 1)
  k = int(np.ceil(2 * support)) + 2
  idx = lo[:, None] + np.arange(k)[None, :]
  w = np.maximum(0.0, 1.0 - np.abs((idx + 0.5 - centre[:, None]) / support))
  w[idx >= src] = 0.0
  w /= w.sum(1, keepdims=True)
  return np.minimum(idx, src - 1), w.astype(np.float32)


def i3d_frame(frame: np.ndarray) -> np.ndarray:
  """RGB [H, W, 3] uint8 -> [224, 224, 3] uint8: the centre 224x224 of the frame resized so
  that its short side is 256 (only the cropped part is computed)."""
  h, w = frame.shape[:2]
  key = ('i3d', h, w)
  if key not in _TAPS:
    scale = I3D_SHORT_SIDE / min(h, w)
    rh, rw = max(I3D_CROP, round(h * scale)), max(I3D_CROP, round(w * scale))
    _TAPS[key] = (_filter_taps(h, rh, (rh - I3D_CROP) // 2, I3D_CROP),
                  _filter_taps(w, rw, (rw - I3D_CROP) // 2, I3D_CROP))
  (iy, wy), (ix, wx) = _TAPS[key]
  rows = np.zeros((I3D_CROP, w, 3), np.float32)
  for k in range(iy.shape[1]):
    rows += wy[:, k, None, None] * frame[iy[:, k]]
  out = np.zeros((I3D_CROP, I3D_CROP, 3), np.float32)
  for k in range(ix.shape[1]):
    out += wx[None, :, k, None] * rows[:, ix[:, k]]
  return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


class C3DFrames:
  """C3D clips: 16 sampled frames, BGR 128x171, cropped views [V, 16, 112, 112, 3]."""
  pix_fmt = 'bgr24'  # what PyAV decodes to for `decoded`

  @staticmethod
  def decoded(arr: np.ndarray) -> np.ndarray:
    return resize(arr)

  @staticmethod
  def from_rgb(rgb: np.ndarray) -> np.ndarray:
    # resize is per channel, so resizing RGB and then swapping channels equals the BGR order
    return np.ascontiguousarray(resize(rgb)[..., ::-1])

  @staticmethod
  def clips(frames: np.ndarray, crops: np.ndarray) -> np.ndarray:
    return crop_views(frames, crops)


class I3DFrames:
  """I3D clips: the segment's frames, RGB, centre 224x224 of the 256-short-side resize,
  one view [1, T, 224, 224, 3]."""
  pix_fmt = 'rgb24'

  @staticmethod
  def decoded(arr: np.ndarray) -> np.ndarray:
    return i3d_frame(arr)

  from_rgb = decoded

  @staticmethod
  def clips(frames: np.ndarray, crops: np.ndarray) -> np.ndarray:
    del crops  # the centre crop is the frame
    return frames[None]


# ------------------------------------------------------------------------------ decoding

def _decoded_frames(container, stream, path):
  frames = container.decode(stream)
  while True:
    try:
      frame = next(frames)
    except StopIteration:
      return
    except (av.FFmpegError, OSError, ValueError) as e:
      raise _corrupt(path, e) from None
    yield frame


class SegmentSchedule:
  """What a sequential decoder keeps and when each segment is complete, for any decoder.

  indices: int [S, 16] frame indices per segment, or a list of S index arrays of any
  lengths (I3D); crops: [S, V, 3] from `crop_plan`; frames: how a decoded frame is kept and
  clips are made (C3DFrames | I3DFrames). Segments complete in order of their last frame; a
  decoded frame is kept (in `cache`, as `frames` makes it) only while a pending segment
  still needs it.
  """

  def __init__(self, indices, crops: np.ndarray | None = None, frames=C3DFrames):
    if isinstance(indices, np.ndarray) and indices.ndim == 1:
      indices = indices.reshape(-1, NUM_FRAMES)
    self.indices = [np.asarray(ix, np.int64).ravel() for ix in indices]
    self.num = len(self.indices)
    self.frames = frames
    self.crops = crop_plan(self.num) if crops is None else np.asarray(crops)
    last = np.array([ix.max() for ix in self.indices], np.int64)
    first = np.array([ix.min() for ix in self.indices], np.int64)
    self.order = np.argsort(last, kind='stable')
    self.ready_at = last[self.order]
    # keep_from[k]: the smallest frame any of the segments order[k:] still needs.
    self.keep_from = (np.minimum.accumulate(first[self.order][::-1])[::-1]
                      if self.num else [])
    self.needed = set(np.concatenate(self.indices).tolist()) if self.num else set()
    self.last_needed = int(self.ready_at[-1]) if self.num else -1
    self.cache: dict[int, np.ndarray] = {}
    self.done = 0

  @property
  def finished(self) -> bool:
    return self.done == self.num

  def completed(self, i: int) -> Iterator[tuple[int, np.ndarray]]:
    """After frame `i` was decoded: (segment, clips [V, T, h, w, 3]) of every segment now
    complete, dropping the frames no pending segment needs."""
    while self.done < self.num and self.ready_at[self.done] <= i:
      s = self.order[self.done]
      yield int(s), self.frames.clips(np.stack([self.cache[k] for k in self.indices[s]]),
                                      self.crops[s])
      self.done += 1
      floor_ = self.keep_from[self.done] if self.done < self.num else np.inf
      for k in [k for k in self.cache if k < floor_]:
        del self.cache[k]

  def clamped(self, count: int, last_img: np.ndarray,
              stats: DecodeStats) -> Iterator[tuple[int, np.ndarray]]:
    """The segments left when the video ended after `count` frames: frames past the end are
    the last decoded one (`last_img`, as `frames` keeps it)."""
    while self.done < self.num:
      s = self.order[self.done]
      stats.clamped_segments += 1
      frames = np.stack([self.cache.get(k, last_img) if k < count else last_img
                         for k in self.indices[s]])
      yield int(s), self.frames.clips(frames, self.crops[s])
      self.done += 1


def check_frame_count(path: str, count: int, declared: int) -> None:
  """CorruptVideoError for a video with no frames or fewer than its container declares."""
  if count == 0:
    raise _corrupt(path, 'no decodable video frames')
  if declared > 0 and count + max(2, declared // 100) < declared:
    raise _corrupt(path, f'truncated: decoded {count} of {declared} frames')


def _array(frame, pix_fmt: str) -> np.ndarray:
  return np.ascontiguousarray(upright(frame.to_ndarray(format=pix_fmt), frame.rotation))


def iter_segment_clips(path: str, indices: np.ndarray, crops: np.ndarray | None = None, *,
                       stats: DecodeStats | None = None, decoder_threads: int = 0,
                       frames=C3DFrames) -> Iterator[tuple[int, np.ndarray]]:
  """Decodes `path` once and yields (segment, clips uint8 [V, 16, 112, 112, 3], BGR) as soon
  as a segment's frames are decoded (in order of each segment's last frame); with
  frames=I3DFrames, (segment, [1, T, 224, 224, 3] RGB).

  indices: int [S, 16] frame indices per segment (or S index arrays, see SegmentSchedule);
  crops: [S, V, 3] from `crop_plan` (default: centre crop only). Frames are turned upright
  (`upright`). Only frames still needed by pending segments are kept.
  Raises VideoNotFoundError / CorruptVideoError (also for a file that decodes to fewer frames
  than its container declares, i.e. a truncated one; decoding stops after the last frame a
  segment needs, so a cut after that frame goes unnoticed and costs nothing).
  """
  plan = SegmentSchedule(indices, crops, frames)
  stats = stats if stats is not None else DecodeStats()
  if not plan.num:
    return
  with _open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    stream.thread_count = decoder_threads
    count, last = 0, None
    for frame in _decoded_frames(container, stream, path):
      i, count, last = count, count + 1, frame
      if i in plan.needed:
        plan.cache[i] = frames.decoded(_array(frame, frames.pix_fmt))
      yield from plan.completed(i)
      if plan.finished:
        stats.decoded_frames = count
        return
    stats.decoded_frames = count
    check_frame_count(path, count, stream.frames)
    yield from plan.clamped(count, frames.decoded(_array(last, frames.pix_fmt)), stats)


def decode_clips(path: str, indices: np.ndarray, crops: np.ndarray | None = None,
                 **kwargs) -> np.ndarray:
  """All clips of a video at once: uint8 [S, V, 16, 112, 112, 3] (BGR, not normalized)."""
  indices = np.asarray(indices, np.int64).reshape(-1, NUM_FRAMES)
  crops = crop_plan(len(indices)) if crops is None else np.asarray(crops)
  out = np.empty((len(indices), crops.shape[1], NUM_FRAMES, CROP_SIZE, CROP_SIZE, 3), np.uint8)
  for s, clips in iter_segment_clips(path, indices, crops, **kwargs):
    out[s] = clips
  return out


def find_videos(video_dir: str) -> dict[str, str]:
  """{video id (file stem): path} for every video file under `video_dir` (recursive)."""
  if not os.path.isdir(video_dir):
    raise FileNotFoundError(f'video_dir not found: {video_dir!r}')
  found: dict[str, str] = {}
  for root, dirs, files in os.walk(video_dir):
    dirs.sort()
    for name in sorted(files):
      stem, ext = os.path.splitext(name)
      if ext.lower() not in VIDEO_EXTENSIONS:
        continue
      path = os.path.join(root, name)
      if stem in found:
        raise ValueError(f'two videos with id {stem!r}: {found[stem]} and {path}')
      found[stem] = path
  return found
