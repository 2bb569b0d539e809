"""The NVDEC decoder option (data_pipelines/nvdec.py) on a machine without a GPU: its errors,
and its frame logic against a stand-in PyNvVideoCodec that decodes with PyAV."""
import importlib.machinery
import queue
import sys
import threading
import types

import av
import numpy as np
import pytest

from data_pipelines import extract
from data_pipelines import nvdec
from data_pipelines import video
from test_extract import _cfg, write_video


def test_missing_pynvvideocodec_is_one_line_error(tmp_path, capsys, monkeypatch):
  monkeypatch.setitem(sys.modules, 'PyNvVideoCodec', None)  # not importable, on any machine
  monkeypatch.setattr(nvdec, '_nvc', None)
  (tmp_path / 'v').mkdir()
  cfg = _cfg(tmp_path / 'v', tmp_path / 'out', decoder='nvdec')
  assert extract.run_extraction(cfg, str(tmp_path)) == 2
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and err.startswith('error: decoder=nvdec: PyNvVideoCodec')
  assert err.endswith('--config.decoder=pyav')
  assert not (tmp_path / 'out').exists()
  with pytest.raises(extract.UserInputError, match='PyNvVideoCodec is not installed'):
    nvdec.check_available()
  with pytest.raises(extract.UserInputError, match='--config.decoder=pyav'):
    next(nvdec.iter_segment_clips(str(tmp_path / 'none.mp4'), np.zeros((1, 16))))


def test_unknown_decoder_names_the_field(tmp_path, capsys):
  (tmp_path / 'v').mkdir()
  assert extract.run_extraction(_cfg(tmp_path / 'v', tmp_path / 'out', decoder='ffmpeg'),
                                str(tmp_path)) == 2
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and "decoder='ffmpeg' must be 'pyav' or 'nvdec'" in err


class _FakeSimpleDecoder:
  """PyNvVideoCodec.SimpleDecoder's sequential API (len, get_batch_frames -> host RGB frames
  that DLPack exports), decoding with PyAV into a reused buffer pool as NVDEC does."""
  eos_raises = False  # at the end: [] or an exception

  def __init__(self, path, gpu_id=0, use_device_memory=True, output_color_type=None, **kwargs):
    assert output_color_type == 'RGB' and not use_device_memory and gpu_id == 0, kwargs
    self._container = av.open(path)
    self._frames = self._container.decode(video=0)
    self._pool = None

  def __len__(self):
    return self._container.streams.video[0].frames

  def get_batch_frames(self, n):
    if self._pool is not None:
      self._pool[:] = 0  # frames returned before are overwritten
    out = []
    for _ in range(n):
      frame = next(self._frames, None)
      if frame is None:
        if self.eos_raises and not out:
          raise RuntimeError('end of stream')
        break
      rgb = frame.to_ndarray(format='rgb24')
      if self._pool is None:
        self._pool = np.zeros((n,) + rgb.shape, np.uint8)
      self._pool[len(out)] = rgb
      out.append(self._pool[len(out)])
    return out


@pytest.fixture
def fake_nvc(monkeypatch):
  nvc = types.ModuleType('PyNvVideoCodec')
  nvc.__spec__ = importlib.machinery.ModuleSpec('PyNvVideoCodec', None)
  nvc.__version__ = 'fake'
  nvc.OutputColorType = types.SimpleNamespace(RGB='RGB')
  nvc.SimpleDecoder = _FakeSimpleDecoder
  monkeypatch.setitem(sys.modules, 'PyNvVideoCodec', nvc)
  monkeypatch.setattr(nvdec, '_nvc', nvc)
  monkeypatch.setattr(nvdec, 'BATCH_FRAMES', 4)  # several batches, reused buffers
  return nvc


@pytest.mark.parametrize('eos_raises', [False, True])
def test_same_clips_as_pyav(tmp_path, fake_nvc, monkeypatch, eos_raises):
  monkeypatch.setattr(_FakeSimpleDecoder, 'eos_raises', eos_raises)
  path = write_video(tmp_path / 'a.mp4', 30, height=36, width=52)
  # out of order, overlapping, and one segment sampling past the last frame (clamped)
  idx = np.stack([video.sample_indices(10, 26), video.sample_indices(0, 16),
                  video.sample_indices(0, 40), video.sample_indices(2, 18, 'centered')])
  crops = video.crop_plan(len(idx), 2, seed=1, key='a', flip=True)
  got_stats, want_stats = video.DecodeStats(), video.DecodeStats()
  got = list(nvdec.iter_segment_clips(path, idx, crops, stats=got_stats))
  want = list(video.iter_segment_clips(path, idx, crops, stats=want_stats))
  assert [s for s, _ in got] == [s for s, _ in want] == [1, 3, 0, 2]
  for (_, g), (_, w) in zip(got, want):
    assert g.shape == w.shape == (3, 16, 112, 112, 3) and g.dtype == np.uint8
    np.testing.assert_array_equal(g, w)
  assert got_stats == want_stats == video.DecodeStats(30, 1)
  # decoding stops after the last frame a segment needs
  stats = video.DecodeStats()
  list(nvdec.iter_segment_clips(path, idx[[1, 3]], stats=stats))
  assert stats.decoded_frames == 18
  with pytest.raises(video.VideoNotFoundError):
    list(nvdec.iter_segment_clips(str(tmp_path / 'b.mp4'), idx))


def test_same_i3d_clips_as_pyav(tmp_path, fake_nvc):
  """I3D segments (every frame, ragged lengths, one past the end) through NVDEC's RGB frames
  equal the PyAV path's."""
  path = write_video(tmp_path / 'a.mp4', 20, height=36, width=52)
  idx = [np.arange(5, 12), np.arange(0, 5), np.arange(15, 24)]
  got = list(nvdec.iter_segment_clips(path, idx, frames=video.I3DFrames))
  want = list(video.iter_segment_clips(path, idx, frames=video.I3DFrames))
  assert [s for s, _ in got] == [s for s, _ in want] == [1, 0, 2]
  for (s, g), (_, w) in zip(got, want):
    assert g.shape == w.shape == (1, len(idx[s]), 224, 224, 3)
    np.testing.assert_array_equal(g, w)


def test_decode_worker_uses_nvdec(tmp_path, fake_nvc, monkeypatch):
  monkeypatch.setattr(video, 'iter_segment_clips', None)  # the PyAV path must not run
  path = write_video(tmp_path / 'a.mp4', 20)
  cfg = _cfg(tmp_path, tmp_path / 'out', decoder='nvdec')
  assert nvdec.check_available() == 'fake'
  jobs, out = queue.Queue(), queue.Queue()
  jobs.put(extract._Job('a', path, cfg))
  extract._decode_worker(jobs, out, cfg, threading.Event())
  msgs = []
  while not out.empty():
    msgs.append(out.get_nowait())
  assert [m[0] for m in msgs] == ['start', 'clip', 'end', 'done'], msgs
  assert msgs[1][3].shape == (1, 16, 112, 112, 3) and msgs[2][2].decoded_frames == 16
