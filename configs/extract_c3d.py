"""C3D feature extraction from raw videos (data_pipelines/extract.py).

  python launch.py --mode=extract --config=configs/extract_c3d.py \
      --config.video_dir=videos/ --config.annotation=youtube_anno.json \
      --config.weights=c3d_params.npz --config.output_dir=features/
  python launch.py --mode=benchmark --config=configs/extract_c3d.py [--config.video_dir=...]

The output folder is a dataset root for training: youtube_anno.json +
video_features/<vid>_c3d.npy, read with --config.data.features=c3d.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.extractor = 'c3d'  # c3d | i3d (configs/extract_i3d.py), data_pipelines/extractors.py
  c.video_dir = ''  # searched recursively; a video's id is its file name without extension
  c.output_dir = ''  # '' = the workdir
  c.weights = ''  # .npz from `python -m tools.convert_c3d`
  c.allow_random_weights = False  # random weights (tests, benchmarks); recorded in the metadata

  # How videos are cut into segments (one feature row each): annotation (the `clip` frame
  # intervals of a youtube_anno.json-style file) | segment_seconds (consecutive segments of
  # that many seconds, any video) | sample_fps (ActivityNet style: 16 frames sampled at
  # sample_fps per segment).
  c.segmenter = 'annotation'
  c.annotation = ''  # segmenter=annotation: the youtube_anno.json-style file to cut by
  c.segment_seconds = 4.0  # segmenter=segment_seconds: the segment length
  c.sample_fps = 5.0  # segmenter=sample_fps: frames per second sampled
  c.domain = 'unlabeled'  # `domain` of the written annotation when not from an annotation
  c.frame_sampling = 'published'  # published (stride floor(len/16)) | centered

  c.batch_size = 8  # clips per device call (rounded up to a multiple of the device count)
  c.dtype = 'float32'  # compute: float32 | bfloat16
  c.output_dtype = 'float16'  # float16 | float32
  c.num_views = 0  # K random-crop views per segment, stored as <vid>_c3d_views.npy [K, S, 4096]
  c.views_flip = False  # also flip views at random (the published loader's flip is a no-op)
  c.seed = 0  # the views' random crops and flips, and random weights
  c.feature_name = 'c3d'  # output <vid>_<feature_name>.npy, read with data.features=<feature_name>
  c.decoder = 'pyav'  # pyav (FFmpeg on the CPU) | nvdec (NVIDIA GPU, needs PyNvVideoCodec)
  c.decode_threads = 2  # videos decoded in parallel in background threads
  c.decoder_threads = 0  # FFmpeg threads per decoder (pyav), 0 = automatic
  c.queue_size = 32  # decoded segments buffered ahead of the device

  # --mode=benchmark: clips/s of C3D alone, of decoding alone and of the overlapped pipeline.
  c.benchmark = ml_collections.ConfigDict()
  c.benchmark.num_clips = 32  # clips timed (the videos' segments, repeated up to this many)
  c.benchmark.warmup = 1  # untimed extractor calls first
  c.benchmark.clip_frames = 32  # I3D: frames of the random clips timed (C3D's are 16)
  c.benchmark.matmul_size = 0  # 0 = 2048 on CPU, 8192 on accelerators
  return c
