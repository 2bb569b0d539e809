"""NVDEC (NVIDIA GPU hardware) video decoding: `--config.decoder=nvdec` of the extraction.

The same contract and output as `video.iter_segment_clips` (frame indices, BGR, the 128x171
bilinear `video.resize`, `video.crop_views`), with decoding done by the GPU's NVDEC engines
through NVIDIA's PyNvVideoCodec (`pip install PyNvVideoCodec`, 2.x; needs an NVIDIA driver
that exposes libnvcuvid, e.g. a container with NVIDIA_DRIVER_CAPABILITIES=...,video).

Each video is decoded once, sequentially and in presentation order with
`SimpleDecoder.get_batch_frames`, which converts every frame to interleaved RGB on the GPU;
frame i is the i-th frame it outputs, as in the PyAV path. Decoding stops after the last frame
a segment needs. Only sampled frames are resized (on the host) and kept, so memory stays
bounded as in the PyAV path. NVDEC's YUV->RGB conversion (colour matrix, chroma upsampling)
is not FFmpeg's, so pixels may differ by a few levels from the PyAV path.

PyNvVideoCodec is imported lazily: this module imports without it, and `check_available`
raises a one-line UserInputError naming what is missing.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
from typing import Iterator

import numpy as np

from data_pipelines import video
from dlvhd_jax.errors import UserInputError

# How decoded RGB frames reach the host: 'host' = the decoder copies every frame to host
# memory (use_device_memory=False); 'cupy' = frames stay on the GPU and only sampled ones
# are copied, via DLPack and CuPy.
FRAME_TRANSFER = 'host'
BATCH_FRAMES = 16  # frames per get_batch_frames call
_FIX = 'or use --config.decoder=pyav'
_corrupt = video._corrupt  # pylint: disable=protected-access
_lock = threading.Lock()
_nvc = None  # the PyNvVideoCodec module once it imported


def _missing(what: str) -> UserInputError:
  return UserInputError(' '.join(f'decoder=nvdec: {what}; {_FIX}'.split()))


def _first_line(e: BaseException) -> str:
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  return f'{type(e).__name__}: {lines[0] if lines else ""}'.rstrip(': ')


def _check_driver(gpu_id: int) -> None:
  try:
    cuda = ctypes.CDLL('libcuda.so.1')
  except OSError:
    raise _missing('no NVIDIA driver (libcuda.so.1 not found); NVDEC needs an NVIDIA GPU'
                   ) from None
  err = cuda.cuInit(0)
  count = ctypes.c_int(0)
  if err == 0:
    err = cuda.cuDeviceGetCount(ctypes.byref(count))
  if err != 0 or count.value <= gpu_id:
    raise _missing(f'no CUDA GPU {gpu_id} (cuInit/cuDeviceGetCount error {err}, '
                   f'{count.value} device(s))')
  try:
    ctypes.CDLL('libnvcuvid.so.1')
  except OSError:
    raise _missing('libnvcuvid.so.1 (the NVIDIA video decode library) not found; in a '
                   'container set NVIDIA_DRIVER_CAPABILITIES=compute,utility,video') from None


def _installed() -> bool:
  try:
    return importlib.util.find_spec('PyNvVideoCodec') is not None
  except (ImportError, ValueError):  # ValueError: sys.modules entry without a spec
    return False


def _import():
  """PyNvVideoCodec, imported once; a failure is a one-line UserInputError."""
  global _nvc
  with _lock:
    if _nvc is not None:
      return _nvc
    if not _installed():
      raise _missing('PyNvVideoCodec is not installed: pip install PyNvVideoCodec')
    # Its __init__ logs several error lines on failure; the error we raise says it in one.
    logger = logging.getLogger('PyNvVideoCodec')
    propagate, handler = logger.propagate, logging.NullHandler()
    logger.propagate = False
    logger.addHandler(handler)
    try:
      import PyNvVideoCodec as nvc  # pylint: disable=g-import-not-at-top
    except Exception as e:  # pylint: disable=broad-except
      raise _missing(f'PyNvVideoCodec failed to import ({_first_line(e)})') from None
    finally:
      logger.removeHandler(handler)
      logger.propagate = propagate
    _nvc = nvc
    return nvc


def check_available(gpu_id: int = 0) -> str:
  """Raises a one-line UserInputError unless NVDEC decoding can run here (PyNvVideoCodec,
  a CUDA GPU `gpu_id`, libnvcuvid); returns the PyNvVideoCodec version."""
  if _nvc is None:
    if not _installed():
      raise _missing('PyNvVideoCodec is not installed: pip install PyNvVideoCodec')
    _check_driver(gpu_id)
  if FRAME_TRANSFER == 'cupy' and importlib.util.find_spec('cupy') is None:
    raise _missing("FRAME_TRANSFER='cupy' needs CuPy (pip install cupy-cuda13x, or the "
                   'build for your CUDA)')
  return str(getattr(_import(), '__version__', 'unknown'))


# --------------------------------------------------------------------------- frame access

def _ctypes_view(frame) -> np.ndarray:
  """A host frame's buffer as uint8 [H, W, 3], through its plane pointer."""
  shape = tuple(int(s) for s in frame.shape)
  size = int(frame.framesize())
  raw = np.ctypeslib.as_array(ctypes.cast(frame.GetPtrToPlane(0),
                                          ctypes.POINTER(ctypes.c_uint8)), shape=(size,))
  if int(np.prod(shape)) == size:
    return raw.reshape(shape)
  strides = tuple(int(s) for s in frame.strides)
  return np.ndarray(shape, np.uint8, buffer=raw, strides=strides)


def _host_view(frame) -> np.ndarray:
  """uint8 RGB [H, W, 3] on the host; may alias the decoder's buffers (valid until the next
  decode call)."""
  if FRAME_TRANSFER == 'cupy':
    import cupy as cp  # pylint: disable=g-import-not-at-top
    try:
      arr = cp.from_dlpack(frame)
    except Exception:  # pylint: disable=broad-except
      try:
        arr = cp.asarray(frame)  # __cuda_array_interface__
      except Exception:  # pylint: disable=broad-except
        arr = cp.asarray(frame.cuda()[0])  # the frame's CUDA-array-interface views
    arr = cp.asnumpy(arr)
  else:
    try:
      arr = np.from_dlpack(frame)
    except Exception:  # pylint: disable=broad-except
      arr = _ctypes_view(frame)
  if arr.ndim == 2 and arr.shape[1] % 3 == 0:  # (H, W * 3)
    arr = arr.reshape(arr.shape[0], -1, 3)
  if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
    raise RuntimeError(f'unexpected NVDEC RGB frame {arr.shape} {arr.dtype}')
  return arr


def _open(nvc, path: str, gpu_id: int):
  kwargs = dict(gpu_id=gpu_id, use_device_memory=FRAME_TRANSFER != 'host',
                output_color_type=nvc.OutputColorType.RGB, decoder_cache_size=1)
  try:
    return nvc.SimpleDecoder(path, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    first = e
  try:  # containers that declare no frame count (mkv, webm): count the packets
    return nvc.SimpleDecoder(path, need_scanned_stream_metadata=True, **kwargs)
  except Exception:  # pylint: disable=broad-except
    raise _corrupt(path, f'NVDEC: {_first_line(first)}') from None


def iter_segment_clips(path: str, indices: np.ndarray, crops: np.ndarray | None = None, *,
                       stats: video.DecodeStats | None = None,
                       gpu_id: int = 0, frames=video.C3DFrames) -> Iterator[tuple[int, np.ndarray]]:
  """`video.iter_segment_clips` with NVDEC: yields (segment, clips uint8 [V, 16, 112, 112, 3],
  BGR) in order of each segment's last frame. Raises VideoNotFoundError / CorruptVideoError
  as the PyAV version does, and UserInputError when NVDEC is unavailable. frames=I3DFrames:
  (segment, [1, T, 224, 224, 3] RGB), as the PyAV version."""
  plan = video.SegmentSchedule(indices, crops, frames)
  stats = stats if stats is not None else video.DecodeStats()
  if not plan.num:
    return
  nvc = _import()
  if not os.path.isfile(path):
    raise video.VideoNotFoundError(f'video not found: {path}')
  decoder = _open(nvc, path, gpu_id)
  rotation = video.display_rotation(path)  # NVDEC does not read the display matrix
  try:
    try:
      declared = int(len(decoder))
    except Exception:  # pylint: disable=broad-except
      declared = 0
    stop_after = plan.last_needed + 1  # frames to decode: up to the last one needed
    count, last_kept, last_rgb = 0, None, None
    while not plan.finished:
      want = max(1, min(BATCH_FRAMES, stop_after - count))
      try:
        batch = decoder.get_batch_frames(want)
      except Exception as e:  # pylint: disable=broad-except
        if declared and count + max(2, declared // 100) >= declared:  # asked past the end
          batch = []
        else:
          raise _corrupt(path, f'NVDEC: {_first_line(e)}') from None
      batch = list(batch or [])
      if not batch:
        break
      for frame in batch:
        i, count = count, count + 1
        if i in plan.needed:
          plan.cache[i] = frames.from_rgb(video.upright(_host_view(frame), rotation))
        yield from plan.completed(i)
      if not plan.finished:  # the frame to repeat if the video ends here (buffers get reused)
        last_kept = plan.cache.get(count - 1)
        last_rgb = (None if last_kept is not None
                    else np.array(video.upright(_host_view(batch[-1]), rotation)))
    stats.decoded_frames = count
    if plan.finished:
      return
    video.check_frame_count(path, count, declared)
    last_img = last_kept if last_kept is not None else frames.from_rgb(last_rgb)
    yield from plan.clamped(count, last_img, stats)
  finally:
    del decoder
