"""Video out: frames at given times (thumbnails) and highlight reels cut from a video.

Both seek to the key frame before each wanted time and decode forward from there, so the
cost and the memory follow the length of what is cut, not the length of the video. The reel
is re-encoded (H.264 in yuv420p, +faststart, so browsers play it while it downloads); the
first audio track, when the input has one, is cut to the same intervals and encoded as AAC.
"""
from __future__ import annotations

import dataclasses
import fractions
import math
import os
from typing import Iterator, Sequence

import av
import numpy as np

from data_pipelines import video

THUMB_WIDTH = 192


@dataclasses.dataclass(frozen=True)
class ReelClip:
  """One interval of the source placed in the reel: source [start_s, end_s) plays at
  reel time reel_start_s (times of the first frame taken and one frame after the last)."""
  start_s: float
  end_s: float
  reel_start_s: float


def _origin(container) -> float:
  """Source time 0, in seconds of the container's clock: the first video frame (segment
  times count frames from it), so audio is cut in sync with the video."""
  v = container.streams.video[0]
  return float((v.start_time or 0) * v.time_base)


def _frame_time(frame, stream, origin: float) -> float | None:
  if frame.pts is None:
    return None
  return float(frame.pts * stream.time_base) - origin


def _seek(container, stream, t: float, origin: float) -> None:
  """To the key frame at or before source time `t`."""
  target = int((t + origin) / stream.time_base)
  container.seek(max(0, target), stream=stream, backward=True, any_frame=False)


def _frames_between(container, stream, start: float, end: float) -> Iterator[tuple[float, object]]:
  """(time, frame) of the frames of video `stream` with start <= time < end, in order."""
  origin = _origin(container)
  _seek(container, stream, start, origin)
  half = 0.5 / float(stream.average_rate or stream.guessed_rate or 25)
  for frame in container.decode(stream):
    t = _frame_time(frame, stream, origin)
    if t is None or t < start - half:
      continue
    if t >= end - half:
      return
    yield t, frame


def frames_at(path: str, times: Sequence[float], width: int = THUMB_WIDTH) -> list[np.ndarray]:
  """RGB uint8 [H, width, 3] frames at the given source times (the first frame at or after
  each; the last frame for a time past the end)."""
  out: dict[float, np.ndarray] = {}
  rotation = video.display_rotation(path)
  with video._open(path) as container:  # pylint: disable=protected-access
    stream = container.streams.video[0]
    sw, sh = stream.width, stream.height
    if rotation % 180:  # a quarter turn: the stored height becomes the shown width
      sw, sh = sh, sw
    height = max(2, int(round(sh * width / sw / 2)) * 2)
    size = (height, width) if rotation % 180 else (width, height)  # stored (width, height)
    for t in sorted(set(float(x) for x in times)):
      last = None
      for _, frame in _frames_between(container, stream, t, math.inf):
        last = frame
        break
      if last is None:  # past the end: the last decodable frame
        _seek(container, stream, max(0.0, t - 2.0), _origin(container))
        for last in container.decode(stream):
          pass
      if last is not None:
        out[t] = np.ascontiguousarray(video.upright(
            last.to_ndarray(width=size[0], height=size[1], format='rgb24'), rotation))
  return [out[float(t)] for t in times if float(t) in out]


def _audio_chunk(frame, t0: float, lo: float, hi: float):
  """The part of an audio frame starting at time t0 inside [lo, hi), as a new frame (or None)."""
  rate = frame.sample_rate
  a = max(0, int(round((lo - t0) * rate)))
  b = min(frame.samples, int(round((hi - t0) * rate)))
  if b <= a:
    return None
  if a == 0 and b == frame.samples:
    return frame
  data = frame.to_ndarray()
  data = data[:, a:b] if frame.format.is_planar else data[:, a * len(frame.layout.channels):
                                                           b * len(frame.layout.channels)]
  chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name,
                                     layout=frame.layout.name)
  chunk.sample_rate = rate
  return chunk


def write_reel(path: str, intervals: Sequence[tuple[float, float]], out_path: str, *,
               max_seconds: float | None = None, crf: int = 23,
               max_height: int = 720) -> list[ReelClip]:
  """Cuts `intervals` (source seconds, in the order given) out of `path` into `out_path`.

  Video is scaled down to at most `max_height` rows, at the source frame rate, and stops
  after `max_seconds` of frames; audio (first track, if any) follows the same cuts. Written
  under a temporary name, then renamed. Returns where each interval landed in the reel.
  """
  tmp = out_path + '.tmp.mp4'
  try:
    clips = _write_reel(path, intervals, tmp, max_seconds, crf, max_height)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  os.replace(tmp, out_path)
  return clips


def _write_reel(path, intervals, tmp, max_seconds, crf, max_height) -> list[ReelClip]:
  clips: list[ReelClip] = []
  with video._open(path) as src:  # pylint: disable=protected-access
    vin = src.streams.video[0]
    ain = src.streams.audio[0] if src.streams.audio else None
    rate = fractions.Fraction(vin.average_rate or vin.guessed_rate or 25).limit_denominator(100000)
    scale = min(1.0, max_height / vin.height)
    w = max(2, int(round(vin.width * scale / 2)) * 2)
    h = max(2, int(round(vin.height * scale / 2)) * 2)
    with av.open(tmp, 'w', format='mp4', options={'movflags': '+faststart'}) as out:
      vout = out.add_stream('libx264', rate=rate)
      vout.width, vout.height, vout.pix_fmt = w, h, 'yuv420p'
      vout.options = {'crf': str(crf), 'preset': 'veryfast'}
      rotation = video.display_rotation(path)
      if rotation:  # players turn the reel as they turn its source
        vout.set_display_rotation(rotation)
      audio = _AudioCutter(src, ain, out) if ain is not None else None
      tb = 1 / rate
      budget = math.inf if max_seconds is None else math.floor(max_seconds * rate + 1e-6)
      n = 0
      for start, end in intervals:
        n0, first = n, None
        for t, frame in _frames_between(src, vin, start, end):
          if n >= budget:
            break
          first = t if first is None else first
          f = frame.reformat(width=w, height=h, format='yuv420p')
          f.pts, f.time_base = n, tb
          n += 1
          out.mux(vout.encode(f))
        if first is not None:
          clips.append(ReelClip(first, first + float((n - n0) * tb), float(n0 * tb)))
          if audio is not None:
            audio.cut(clips[-1])
      out.mux(vout.encode(None))
      if audio is not None:
        audio.close()
  return clips


class _AudioCutter:
  """Appends the audio of source spans to an output's AAC stream, back to back."""

  def __init__(self, src, ain, out):
    self.src, self.ain, self.out, self.origin = src, ain, out, _origin(src)
    self.rate = ain.codec_context.sample_rate or ain.rate
    layout = ain.codec_context.layout.name if ain.codec_context.layout else 'stereo'
    self.stream = out.add_stream('aac', rate=self.rate, layout=layout)
    self.resampler = av.AudioResampler(format='fltp', layout=layout, rate=self.rate)
    self.written = 0

  def cut(self, clip: ReelClip) -> None:
    rate, want, got = self.rate, int(round((clip.end_s - clip.start_s) * self.rate)), 0
    _seek(self.src, self.ain, max(0.0, clip.start_s - 0.5), self.origin)
    for frame in self.src.decode(self.ain):
      t0 = _frame_time(frame, self.ain, self.origin)
      if t0 is None or t0 + frame.samples / frame.sample_rate <= clip.start_s:
        continue
      if t0 >= clip.end_s or got >= want:
        break
      chunk = _audio_chunk(frame, t0, clip.start_s, clip.end_s)
      for r in self.resampler.resample(chunk) if chunk is not None else ():
        r = r if got + r.samples <= want else _audio_chunk(r, 0.0, 0.0, (want - got) / rate)
        if r is None:
          break
        r.pts, r.time_base = self.written, fractions.Fraction(1, rate)
        self.written += r.samples
        got += r.samples
        self.out.mux(self.stream.encode(r))

  def close(self) -> None:
    self.out.mux(self.stream.encode(None))
