"""Video decoding, segmenting, frame sampling and preprocessing (data_pipelines/video.py)."""
import os
import re
import shutil

import av
import numpy as np
import pytest

from data_pipelines import video

SHARED_VIDEOS = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'videos')
needs_shared = pytest.mark.skipif(
    not os.path.isdir(SHARED_VIDEOS),
    reason='real test videos live in ../shared/data/videos (absent in this checkout)')


def write_index_video(path, num_frames, *, height=48, width=64, faststart=False, image=None,
                      rotation=0):
  """Lossless H.264 whose frame i is flat gray 10 + 7 i, so decoded values name the frame;
  with `image` (gray, [H, W, 3]: neutral chroma, which 4:2:0 keeps exactly) every frame is
  that image, stored with a display rotation as a phone stores a portrait video."""
  options = {'movflags': 'faststart'} if faststart else {}
  if image is not None:
    height, width = image.shape[:2]
  with av.open(str(path), 'w', options=options) as container:
    stream = container.add_stream('libx264', rate=25, options={'qp': '0', 'preset': 'ultrafast'})
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    if rotation:
      stream.set_display_rotation(rotation)
    for i in range(num_frames):
      img = np.full((height, width, 3), 10 + 7 * i, np.uint8) if image is None else image
      for packet in stream.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return str(path)


def _frame_ids(clip):
  """[T, H, W, 3] gray frames of write_index_video -> the frame index each one shows."""
  return np.rint((clip.reshape(len(clip), -1).mean(1) - 10) / 7).astype(int)


def test_sample_indices():
  np.testing.assert_array_equal(video.sample_indices(0, 100), np.arange(0, 96, 6))
  np.testing.assert_array_equal(video.sample_indices(50, 150), 50 + np.arange(0, 96, 6))
  np.testing.assert_array_equal(video.sample_indices(800, 842), 800 + np.arange(0, 32, 2))
  np.testing.assert_array_equal(video.sample_indices(10, 20), [*range(10, 20)] + [19] * 6)
  np.testing.assert_array_equal(video.sample_indices(0, 100, 'centered'),
                                (100 * (2 * np.arange(16) + 1)) // 32)
  with pytest.raises(ValueError, match='empty segment'):
    video.sample_indices(5, 5)


def test_segmenters():
  iv, idx = video.interval_segments([[0.0, 100.0], [50.0, 150.0]])
  assert iv.tolist() == [[0, 100], [50, 150]] and idx.shape == (2, 16)
  iv, _ = video.fixed_segments(250, 25.0, 4.0)
  assert iv.tolist() == [[0, 100], [100, 200], [200, 250]]
  iv, _ = video.fixed_segments(230, 25.0, 4.0)  # a 30-frame tail is under half a segment
  assert iv.tolist() == [[0, 100], [100, 200]]
  assert video.fixed_segments(30, 25.0, 4.0)[0].tolist() == [[0, 30]]
  iv, idx = video.sampled_fps_segments(300, 30.0, 5.0)  # 60 samples, every 6th frame
  assert iv.tolist() == [[0, 96], [96, 192], [192, 288]]
  np.testing.assert_array_equal(idx[1], 96 + 6 * np.arange(16))
  iv, idx = video.sampled_fps_segments(150, 30.0, 5.0)  # 25 samples: a 9-sample tail
  assert iv.tolist() == [[0, 96], [96, 150]] and idx[1, -1] == idx[1, 8] == 144


def test_resize_matches_inter_linear_geometry():
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (256, 342, 3), dtype=np.uint8)
  # an exact 2x reduction on half-pixel centres averages 2x2 blocks
  blocks = frame.reshape(128, 2, 171, 2, 3).astype(np.float64).mean((1, 3))
  np.testing.assert_array_equal(video.resize(frame), np.floor(blocks + 0.5).astype(np.uint8))
  flat = np.full((720, 1280, 3), 77, np.uint8)
  assert video.resize(flat).shape == (128, 171, 3) and (video.resize(flat) == 77).all()


def test_crops_and_normalize():
  plan = video.crop_plan(5, 3, seed=1, key='v', flip=True)
  assert plan.shape == (5, 4, 3) and (plan[:, 0] == [8, 29, 0]).all()
  assert plan[:, 1:, 0].max() <= 16 and plan[:, 1:, 1].max() <= 59
  np.testing.assert_array_equal(plan, video.crop_plan(5, 3, seed=1, key='v', flip=True))
  frames = np.random.default_rng(0).integers(0, 256, (16, 128, 171, 3), dtype=np.uint8)
  views = video.crop_views(frames, np.array([[8, 29, 0], [3, 40, 1]]))
  assert views.shape == (2, 16, 112, 112, 3)
  np.testing.assert_array_equal(views[0], frames[:, 8:120, 29:141])
  np.testing.assert_array_equal(views[1], frames[:, 3:115, 40:152][:, :, ::-1])
  x = video.normalize(np.full((1, 2, 3), [90, 98, 102], np.uint8))
  assert x.dtype == np.float32 and not x.any()


@pytest.mark.parametrize('mode', ['published', 'centered'])
def test_decoded_frames_are_the_documented_ones(tmp_path, mode):
  path = write_index_video(tmp_path / 'idx.mp4', 36)
  assert video.probe(path).num_frames == 36
  iv, idx = video.interval_segments([[0, 32], [5, 21], [3, 36]], mode)
  clips = video.decode_clips(path, idx)
  assert clips.shape == (3, 1, 16, 112, 112, 3) and clips.dtype == np.uint8
  for s in range(3):
    np.testing.assert_array_equal(_frame_ids(clips[s, 0]), idx[s])


def test_frames_past_the_end_repeat_the_last(tmp_path):
  path = write_index_video(tmp_path / 'short.mp4', 20)
  stats = video.DecodeStats()
  clips = video.decode_clips(path, video.interval_segments([[0, 16], [10, 42]])[1], stats=stats)
  assert stats.decoded_frames == 20 and stats.clamped_segments == 1
  np.testing.assert_array_equal(_frame_ids(clips[1, 0]), [10, 12, 14, 16, 18] + [19] * 11)


@needs_shared
@pytest.mark.parametrize('name, frames, segments', [('bikes', 250, 5), ('bigbuckbunny', 132, 3)])
def test_real_video(name, frames, segments):
  path = os.path.join(SHARED_VIDEOS, f'{name}.mp4')
  info = video.probe(path)
  assert (info.fps, info.num_frames) == (25.0, frames)
  iv, idx = video.fixed_segments(info.num_frames, info.fps, 2.0)
  assert len(iv) == segments  # 2 s = 50 frames; bigbuckbunny keeps a 32-frame tail
  crops = video.crop_plan(len(iv), 1, seed=0, key=name)
  clips = video.decode_clips(path, idx, crops)
  assert clips.shape == (len(iv), 2, 16, 112, 112, 3) and clips.dtype == np.uint8
  x = video.normalize(clips)
  assert x.min() >= -102 and x.max() <= 165 and x.std() > 10
  assert not np.array_equal(clips[0, 0, 0], clips[0, 0, -1])  # real motion across the clip
  # Segment 1 is [50, 100): stride 50 // 16 = 3, so its 4th sample is frame 50 + 3 * 3,
  # the 60th frame the decoder outputs (single-threaded here, frame-threaded there).
  np.testing.assert_array_equal(idx[1], 50 + 3 * np.arange(16))
  with av.open(path) as container:
    for i, frame in enumerate(container.decode(video=0)):
      if i == 59:
        break
  expected = video.resize(frame.to_ndarray(format='bgr24'))[8:120, 29:141]
  np.testing.assert_array_equal(clips[1, 0, 3], expected)


def test_missing_file_error(tmp_path):
  missing = str(tmp_path / 'nope.mp4')
  for call in (lambda: video.probe(missing),
               lambda: video.decode_clips(missing, video.sample_indices(0, 16)[None])):
    with pytest.raises(video.VideoNotFoundError) as info:
      call()
    assert str(info.value) == f'video not found: {missing}'


def _assert_one_line_corrupt(path, call):
  with pytest.raises(video.CorruptVideoError) as info:
    call()
  message = str(info.value)
  assert message.startswith(f'cannot decode video {path}:') and '\n' not in message
  return message


def test_corrupt_and_truncated_files(tmp_path):
  junk = tmp_path / 'junk.mp4'
  junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
  _assert_one_line_corrupt(str(junk), lambda: video.probe(str(junk)))
  # index at the end (as most recorders write): cut short, the container cannot be opened
  good = write_index_video(tmp_path / 'good.mp4', 36)
  data = open(good, 'rb').read()
  assert data.find(b'moov') > data.find(b'mdat')
  cut = tmp_path / 'cut.mp4'
  cut.write_bytes(data[:len(data) // 2])
  _assert_one_line_corrupt(str(cut), lambda: video.probe(str(cut)))
  # index first (faststart): it opens, then the frames run out or break mid-packet. (Decoding
  # stops after the last frame a segment needs, so only a cut before that frame is noticed.)
  fast = open(write_index_video(tmp_path / 'fast.mp4', 36, faststart=True), 'rb').read()
  last_needed = video.interval_segments([[0, 36]], 'centered')[1]
  assert last_needed.max() == 34
  messages = []
  for n, keep in enumerate((len(fast) // 2, len(fast) - 400)):
    path = tmp_path / f'fast_cut{n}.mp4'
    path.write_bytes(fast[:keep])
    messages.append(_assert_one_line_corrupt(
        str(path), lambda p=str(path): video.decode_clips(p, last_needed)))
  assert re.search(r'truncated: decoded \d\d of 36 frames$', messages[1])


@needs_shared
def test_truncated_real_file(tmp_path):
  path = tmp_path / 'bikes.mp4'
  shutil.copy(os.path.join(SHARED_VIDEOS, 'bikes.mp4'), path)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 3)
  _assert_one_line_corrupt(str(path), lambda: video.decode_clips(
      str(path), video.interval_segments([[0, 100]])[1]))


def test_find_videos(tmp_path):
  (tmp_path / 'a').mkdir()
  write_index_video(tmp_path / 'a' / 'v1.mp4', 2)
  write_index_video(tmp_path / 'v2.mkv', 2)
  (tmp_path / 'notes.txt').write_text('x')
  found = video.find_videos(str(tmp_path))
  assert sorted(found) == ['v1', 'v2'] and found['v1'].endswith(os.path.join('a', 'v1.mp4'))
  write_index_video(tmp_path / 'v1.mp4', 2)
  with pytest.raises(ValueError, match='two videos'):
    video.find_videos(str(tmp_path))


def test_a_rotated_video_is_decoded_upright(tmp_path):
  from data_pipelines import reel  # pylint: disable=import-outside-toplevel
  stored = np.full((48, 64, 3), 60, np.uint8)
  stored[:, :8] = 200  # a bright band on the stored frame's left edge
  shown = np.ascontiguousarray(np.rot90(stored, 1))  # 90° counterclockwise: the band at the bottom
  phone = write_index_video(tmp_path / 'phone.mp4', 6, image=stored, rotation=90)
  plain = write_index_video(tmp_path / 'plain.mp4', 6, image=shown)
  assert video.display_rotation(phone) == 90 and video.display_rotation(plain) == 0
  for frames in (video.I3DFrames, video.C3DFrames):
    got = [dict(video.iter_segment_clips(p, [np.arange(4)], frames=frames))[0]
           for p in (phone, plain)]
    np.testing.assert_array_equal(got[0], got[1])
  thumbs = [reel.frames_at(p, [0.0], width=32)[0] for p in (phone, plain)]
  assert thumbs[0].shape == thumbs[1].shape == (42, 32, 3)
  np.testing.assert_array_equal(thumbs[0], thumbs[1])
  assert thumbs[0][-2:].mean() > 150 and thumbs[0][:4].mean() < 100  # the band is at the bottom
  out = str(tmp_path / 'reel.mp4')
  reel.write_reel(phone, [(0.0, 0.2)], out)
  assert video.display_rotation(out) == 90  # players turn the reel as they turn its source
