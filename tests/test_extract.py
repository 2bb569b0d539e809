"""The extraction run: videos -> youtube_anno.json + video_features/<vid>_c3d.npy."""
import json
import os

import av
import numpy as np
import pytest

from configs import extract_c3d
from data_pipelines import extract
from data_pipelines import video
from dlvhd_jax import c3d

SHARED_VIDEOS = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'videos')


def write_video(path, num_frames, seed=0, height=48, width=64):
  """A small H.264 file of random frames (so crops and views differ)."""
  rng = np.random.default_rng(seed)
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('libx264', rate=25, options={'preset': 'ultrafast'})
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    for _ in range(num_frames):
      img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
      for packet in stream.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return str(path)


def _cfg(video_dir, out_dir, **overrides):
  cfg = extract_c3d.get_config()
  cfg.video_dir, cfg.output_dir = str(video_dir), str(out_dir)
  cfg.allow_random_weights = True
  cfg.segmenter, cfg.segment_seconds = 'segment_seconds', 2.0  # one segment per toy video
  cfg.batch_size, cfg.decode_threads = 2, 1
  cfg.update(overrides)
  return cfg


def _load(out_dir):
  with open(os.path.join(out_dir, 'youtube_anno.json')) as f:
    anno = json.load(f)
  feats = {name[:-len('_c3d.npy')]: np.load(os.path.join(out_dir, 'video_features', name))
           for name in os.listdir(os.path.join(out_dir, 'video_features'))
           if name.endswith('_c3d.npy')}
  return anno, feats


def _no_temp_files(out_dir):
  for _, _, files in os.walk(out_dir):
    assert not [f for f in files if f.endswith('.tmp')], files


def test_refuses_without_weights(tmp_path, capsys):
  (tmp_path / 'v').mkdir()
  write_video(tmp_path / 'v' / 'a.mp4', 4)
  rc = extract.run_extraction(_cfg(tmp_path / 'v', tmp_path / 'out', allow_random_weights=False),
                              str(tmp_path))
  err = capsys.readouterr().err.strip()
  assert rc == 2 and '\n' not in err
  assert '--config.weights' in err and '--config.allow_random_weights=True' in err
  assert not os.path.exists(tmp_path / 'out' / 'video_features')


@pytest.mark.skipif(
    not os.path.isdir(SHARED_VIDEOS),
    reason='real test videos live in ../shared/data/videos (absent in this checkout)')
def test_end_to_end_real_mp4(tmp_path):
  entry = {'fps': 25.0, 'frames': '250', 'domain': 'dog', 'info': [],
           'clip': [[0.0, 100.0], [50.0, 150.0], [100.0, 200.0], [150.0, 250.0]],
           'match': [1, -1, 0, 1], 'mturk': [0.0, 0.1, 0.2, 0.3]}
  anno_in = tmp_path / 'anno.json'
  anno_in.write_text(json.dumps({'bikes': entry}))
  out = tmp_path / 'features'
  cfg = _cfg(SHARED_VIDEOS, out, segmenter='annotation', annotation=str(anno_in))
  assert extract.run_extraction(cfg, str(tmp_path)) == 0
  # exactly the layout training reads, plus the metadata
  assert sorted(os.listdir(out)) == ['c3d_extraction.json', 'video_features', 'youtube_anno.json']
  assert os.listdir(out / 'video_features') == ['bikes_c3d.npy']
  anno, feats = _load(out)
  assert anno == {'bikes': entry}
  assert feats['bikes'].shape == (len(entry['clip']), 4096) and feats['bikes'].dtype == np.float16
  assert np.isfinite(feats['bikes']).all() and feats['bikes'].astype(np.float32).std() > 0
  meta = json.load(open(out / 'c3d_extraction.json'))
  assert meta['settings']['random_weights'] is True and meta['settings']['weights'] == ''
  assert meta['settings']['preprocessing']['mean_bgr'] == [90.0, 98.0, 102.0]
  # row 2 is C3D of segment [100, 200), computed directly
  _, idx = video.interval_segments(entry['clip'][2:3])
  clips = video.normalize(video.decode_clips(os.path.join(SHARED_VIDEOS, 'bikes.mp4'), idx)[:, 0])
  want = np.asarray(c3d.extract_fc7(c3d.init_random_params(cfg.seed), clips))[0]
  np.testing.assert_allclose(feats['bikes'][2], want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


def test_segment_seconds_layout_and_views(tmp_path):
  (tmp_path / 'v').mkdir()
  write_video(tmp_path / 'v' / 'toy.mp4', 36)
  out = tmp_path / 'out'
  cfg = _cfg(tmp_path / 'v', out, num_views=2, domain='toy', output_dtype='float32')
  assert extract.run_extraction(cfg, str(tmp_path)) == 0
  anno, feats = _load(out)
  assert anno == {'toy': {'fps': 25.0, 'frames': '36', 'domain': 'toy', 'info': [],
                          'clip': [[0.0, 36.0]], 'match': [-1], 'mturk': [0.0]}}
  views = np.load(out / 'video_features' / 'toy_c3d_views.npy')
  assert feats['toy'].shape == (1, 4096) and views.shape == (2, 1, 4096)
  assert views.dtype == np.float32 and not np.allclose(views[0], feats['toy'])
  _no_temp_files(out)


def test_sample_fps_segmenter(tmp_path):
  path = write_video(tmp_path / 'toy.mp4', 36)
  cfg = _cfg(tmp_path, tmp_path / 'out', segmenter='sample_fps', sample_fps=5.0)
  entry, iv, idx = extract._Job('toy', path, cfg).segments()
  assert iv.tolist() == [[0, 36]] and entry['clip'] == [[0.0, 36.0]]
  np.testing.assert_array_equal(idx[0], [0, 5, 10, 15, 20, 25, 30, 35] + [35] * 8)


def test_corrupt_video_is_reported_and_skipped_then_resumed(tmp_path, capsys, monkeypatch):
  vdir = tmp_path / 'v'
  vdir.mkdir()
  write_video(vdir / 'a.mp4', 20)
  (vdir / 'b.mp4').write_bytes(np.random.default_rng(0).bytes(20_000))
  out = tmp_path / 'out'
  assert extract.run_extraction(_cfg(vdir, out), str(tmp_path)) == 1
  err = capsys.readouterr().err
  assert '1 video(s) failed:' in err and f'  b: cannot decode video {vdir / "b.mp4"}:' in err
  anno, feats = _load(out)
  assert sorted(anno) == sorted(feats) == ['a']
  done_at = os.stat(out / 'video_features' / 'a_c3d.npy').st_mtime_ns

  write_video(vdir / 'b.mp4', 20, seed=1)  # the file is fixed; only b is decoded again
  decoded = []
  real = video.iter_segment_clips

  def counting(path, *args, **kwargs):
    decoded.append(os.path.basename(path))
    return real(path, *args, **kwargs)
  monkeypatch.setattr(video, 'iter_segment_clips', counting)
  assert extract.run_extraction(_cfg(vdir, out), str(tmp_path)) == 0
  assert decoded == ['b.mp4']
  assert os.stat(out / 'video_features' / 'a_c3d.npy').st_mtime_ns == done_at
  anno, feats = _load(out)
  assert sorted(anno) == sorted(feats) == ['a', 'b']
  _no_temp_files(out)
  # the same folder with other settings would mix features: refused
  capsys.readouterr()
  assert extract.run_extraction(_cfg(vdir, out, dtype='bfloat16'), str(tmp_path)) == 2
  assert 'other settings (dtype)' in capsys.readouterr().err


def test_interrupted_run_resumes(tmp_path, monkeypatch):
  vdir = tmp_path / 'v'
  vdir.mkdir()
  for i, name in enumerate('abc'):
    write_video(vdir / f'{name}.mp4', 20, seed=i)
  out = tmp_path / 'out'
  real_write = extract._Writer.__call__

  def write_then_crash(self, vid, *args):
    if vid == 'b':  # killed while the second video is being written
      raise KeyboardInterrupt
    real_write(self, vid, *args)
  monkeypatch.setattr(extract._Writer, '__call__', write_then_crash)
  with pytest.raises(KeyboardInterrupt):
    extract.run_extraction(_cfg(vdir, out, batch_size=1), str(tmp_path))
  anno, feats = _load(out)
  assert sorted(anno) == sorted(feats) == ['a']
  _no_temp_files(out)

  monkeypatch.setattr(extract._Writer, '__call__', real_write)
  decoded = []
  real = video.iter_segment_clips
  monkeypatch.setattr(video, 'iter_segment_clips',
                      lambda path, *a, **k: decoded.append(path[-5:]) or real(path, *a, **k))
  assert extract.run_extraction(_cfg(vdir, out, batch_size=1), str(tmp_path)) == 0
  assert decoded == ['b.mp4', 'c.mp4']
  anno, feats = _load(out)
  assert sorted(anno) == sorted(feats) == ['a', 'b', 'c']
  assert all(f.shape == (len(anno[v]['clip']), 4096) for v, f in feats.items())


def test_missing_annotated_video(tmp_path, capsys):
  (tmp_path / 'v').mkdir()
  (tmp_path / 'anno.json').write_text(json.dumps({'ghost': {'clip': [[0, 100]]}}))
  cfg = _cfg(tmp_path / 'v', tmp_path / 'out', segmenter='annotation',
             annotation=str(tmp_path / 'anno.json'))
  assert extract.run_extraction(cfg, str(tmp_path)) == 1
  assert 'ghost: video not found: no file named ghost.<ext>' in capsys.readouterr().err


def test_benchmark(tmp_path, capsys):
  (tmp_path / 'v').mkdir()
  write_video(tmp_path / 'v' / 'toy.mp4', 30)
  cfg = _cfg(tmp_path / 'v', tmp_path / 'out', batch_size=1)
  cfg.benchmark.num_clips, cfg.benchmark.matmul_size = 2, 256
  result = extract.run_extraction_benchmark(cfg, str(tmp_path))
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
  assert result['compute_clips'] == 2 and result['pipeline_clips'] >= 2
  assert result['clips_per_s'] > 0 and result['decode_clips_per_s'] > 0 and result['mfu'] > 0
  assert result['flops_per_clip'] == c3d.flops_per_clip() and result['dtype'] == 'float32'
  assert result['random_weights'] and not result['errors']


def test_weights_file_is_used_and_recorded(tmp_path):
  (tmp_path / 'v').mkdir()
  write_video(tmp_path / 'v' / 'toy.mp4', 20)
  weights = str(tmp_path / 'c3d_params.npz')
  c3d.save_params(weights, c3d.init_random_params(7))
  out = tmp_path / 'out'
  assert extract.run_extraction(_cfg(tmp_path / 'v', out, weights=weights,
                                     allow_random_weights=False), str(tmp_path)) == 0
  meta = json.load(open(out / 'c3d_extraction.json'))
  settings = meta['settings']
  assert settings['random_weights'] is False and settings['weights'] == weights
  # the decoder is recorded, but is not a setting: a run may resume with the other one
  assert meta['versions']['decoder'] == 'pyav' and 'decoder' not in settings
  assert len(settings['weights_sha256']) == 64
  _, feats = _load(out)
  _, idx = video.interval_segments([[0, 20]])
  clips = video.normalize(video.decode_clips(str(tmp_path / 'v' / 'toy.mp4'), idx)[:, 0])
  want = np.asarray(c3d.extract_fc7(c3d.load_params(weights), clips))[0]
  np.testing.assert_allclose(feats['toy'][0], want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
