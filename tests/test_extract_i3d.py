"""I3D extraction (configs/extract_i3d.py): every frame of a segment, batched in padded length
buckets, equal to the network run on each segment alone; the record; resume; bad settings."""
import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from configs import extract_i3d
from data_pipelines import extract, extractors, video
from dlvhd_jax import i3d
from test_extract import write_video


def _cfg(video_dir, out_dir, **overrides):
  cfg = extract_i3d.get_config()
  cfg.video_dir, cfg.output_dir = str(video_dir), str(out_dir)
  cfg.batch_size, cfg.decode_threads = 2, 1
  cfg.update(overrides)
  return cfg


def _frames(path):
  with av.open(path) as c:
    return np.stack([video.i3d_frame(f.to_ndarray(format='rgb24')) for f in c.decode(video=0)])


def test_features_are_the_network_on_each_whole_segment(tmp_path, capsys):
  """A real H.264 file (72x96: the short side is upscaled to 256) cut by an annotation into
  segments of 9, 13 and 25 frames: 9 and 13 share one padded batch (length 17), 25 has its
  own (33). Each row equals I3D on that segment's frames alone."""
  (tmp_path / 'v').mkdir()
  path = write_video(tmp_path / 'v' / 'toy.mp4', 30, height=72, width=96)
  clips = [[0, 9], [9, 22], [5, 30]]
  anno = {'toy': {'fps': 25.0, 'frames': '30', 'domain': 'x', 'info': [], 'clip': clips,
                  'match': [1, -1, 1], 'mturk': [0.0, 0.0, 0.0]}}
  (tmp_path / 'anno.json').write_text(json.dumps(anno))
  out = tmp_path / 'out'
  cfg = _cfg(tmp_path / 'v', out, annotation=str(tmp_path / 'anno.json'))
  assert extract.run_extraction(cfg, str(tmp_path)) == 0
  assert sorted(os.listdir(out)) == ['rgb_extraction.json', 'video_features', 'youtube_anno.json']
  feats = np.load(out / 'video_features' / 'toy_rgb.npy')
  assert feats.shape == (3, 1024) and feats.dtype == np.float32
  record = json.loads((out / 'rgb_extraction.json').read_text())
  assert record['extractor']['name'] == 'i3d' and record['extractor']['feature_dim'] == 1024
  assert record['settings']['extractor'] == 'i3d' and not record['settings']['random_weights']
  assert record['settings']['weights_sha256'] == i3d.CHECKPOINT_SHA256
  assert record['settings']['preprocessing'] == video.I3D_PREPROCESSING
  assert record['last_run']['frames'] == 9 + 13 + 25
  frames = _frames(path)
  params = i3d.load_params()
  for row, (s, e) in enumerate(clips):
    want = np.asarray(i3d.forward(params, frames[s:e][None] / 127.5 - 1.0,
                                  outputs=('mixed_5c',))['mixed_5c'][0])
    np.testing.assert_allclose(feats[row], want, rtol=0, atol=1e-4 * np.abs(want).max(),
                               err_msg=f'segment {row}: frames [{s}, {e})')
  # done videos are skipped on a rerun; other settings in the same folder are refused
  capsys.readouterr()
  assert extract.run_extraction(cfg, str(tmp_path)) == 0
  assert '1 already extracted, 0 to do' in capsys.readouterr().err
  cfg.max_segment_frames = 8
  assert extract.run_extraction(cfg, str(tmp_path)) == 2
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and 'max_segment_frames' in err and 'other settings' in err


def test_frame_indices_every_frame_strided_or_sampled():
  cfg = extract_i3d.get_config()
  cfg.segmenter, cfg.max_segment_frames = 'segment_seconds', 10
  idx = extractors.I3D.frame_indices(np.array([[0, 7], [7, 30]]), None, cfg)
  assert idx[0].tolist() == list(range(7))
  assert idx[1].tolist() == list(range(7, 30, 3))  # 23 frames > 10: every 3rd
  cfg.segmenter = 'sample_fps'
  sampled = np.arange(32).reshape(2, 16)
  assert extractors.I3D.frame_indices(np.array([[0, 16], [16, 32]]), sampled, cfg) is sampled


def test_i3d_frame_is_pil_bilinear_resize_and_centre_crop():
  frame = np.random.default_rng(0).integers(0, 256, (180, 320, 3), dtype=np.uint8)
  ours = video.i3d_frame(frame)
  img = Image.fromarray(frame).resize((455, 256), Image.BILINEAR)  # short side 180 -> 256
  left = (455 - 224) // 2
  pil = np.asarray(img.crop((left, 16, left + 224, 240)))
  assert ours.shape == (224, 224, 3)
  assert np.abs(ours.astype(int) - pil.astype(int)).max() <= 1


@pytest.mark.parametrize('override, says', [
    ({'num_views': 2}, 'num_views=2'),
    ({'bucket_frames': 6}, 'bucket_frames=6'),
    ({'dtype': 'float16'}, "dtype='float16'"),
])
def test_bad_settings_are_one_line(tmp_path, capsys, override, says):
  (tmp_path / 'v').mkdir()
  write_video(tmp_path / 'v' / 'a.mp4', 4)
  cfg = _cfg(tmp_path / 'v', tmp_path / 'out', segmenter='segment_seconds', **override)
  assert extract.run_extraction(cfg, str(tmp_path)) == 2
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and says in err
  assert not os.path.exists(tmp_path / 'out' / 'video_features')


def test_benchmark_reports_i3d_throughput(tmp_path):
  (tmp_path / 'v').mkdir()
  write_video(tmp_path / 'v' / 'a.mp4', 12)
  cfg = _cfg(tmp_path / 'v', '', segmenter='segment_seconds', segment_seconds=0.4,
             batch_size=1, allow_random_weights=True)
  cfg.benchmark.num_clips, cfg.benchmark.clip_frames, cfg.benchmark.matmul_size = 1, 9, 256
  result = extract.run_extraction_benchmark(cfg, str(tmp_path))
  assert result['extractor'] == 'i3d' and result['clip_frames'] == 9
  assert result['flops_per_clip'] == i3d.flops_per_clip(9) and result['mfu'] > 0
  assert result['pipeline_frames'] >= 10 and result['pipeline_frames_per_s'] > 0
  assert result['random_weights'] and not result['errors']
