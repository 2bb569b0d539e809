"""Feature extraction (C3D or I3D, data_pipelines/extractors.py): videos ->
<output_dir>/video_features/<vid>_<feature_name>.npy + youtube_anno.json.

Output layout (what training reads with `--config.data.features=<feature_name>`):
  youtube_anno.json                    {vid: {"fps", "frames", "domain", "info", "clip",
                                        "match", "mturk"}}, one `clip` interval per row
  video_features/<vid>_c3d.npy         C3D: [S, 4096] fc7 (before ReLU), centre crop
  video_features/<vid>_c3d_views.npy   C3D: [K, S, 4096] K random-crop views (num_views > 0)
  video_features/<vid>_rgb.npy         I3D: [S, 1024] Mixed_5c averaged over time and space
  <feature_name>_extraction.json       extractor, weights and their sha256, dtype,
                                       preprocessing, segmenting rule, ...

Decoding runs in `decode_threads` background threads feeding a bounded queue, so it
overlaps device compute; batches of clips are sharded over all local devices. A video is
done when its npy exists (written under a temporary name, then renamed), so an interrupted
run resumes where it stopped. Corrupt or missing videos are reported and skipped, and the
run returns 1 with the list of failures.
"""
from __future__ import annotations

import copy
import json
import os
import queue
import sys
import threading
import time

import jax
import numpy as np
from tqdm import tqdm

from data_pipelines import extractors
from data_pipelines import nvdec
from data_pipelines import video
from dlvhd_jax import c3d, files, parallel
from dlvhd_jax.errors import UserInputError

ExtractionError = extractors.ExtractionError
DECODERS = ('pyav', 'nvdec')


def _extractor(cfg):
  return extractors.get(cfg.get('extractor', 'c3d'))


def _settings(cfg, params_source: dict) -> dict:
  """What the features depend on; a resumed run must match it."""
  ex = _extractor(cfg)
  keys = ['segmenter', 'dtype', 'output_dtype', 'seed', {
      'segment_seconds': 'segment_seconds', 'sample_fps': 'sample_fps'}.get(
          cfg.segmenter, 'annotation')]
  return {**params_source, 'extractor': ex.name, **{k: cfg[k] for k in keys},
          **ex.settings(cfg)}


class _Job:
  """One video: where it is and how to cut it."""

  def __init__(self, vid, path, cfg, entry=None):
    self.vid, self.path, self.cfg, self.entry = vid, path, cfg, entry

  def segments(self):
    """-> (annotation entry, intervals int [S, 2], 16 sampled frame indices int [S, 16])."""
    cfg = self.cfg
    if self.path is None:
      raise video.VideoNotFoundError(
          f'video not found: no file named {self.vid}.<ext> under {cfg.video_dir}')
    if cfg.segmenter == 'annotation':
      return (self.entry, *video.interval_segments(self.entry['clip'], cfg.frame_sampling))
    info = video.probe(self.path)
    if cfg.segmenter == 'segment_seconds':
      iv, idx = video.fixed_segments(info.num_frames, info.fps, cfg.segment_seconds,
                                     cfg.frame_sampling)
    else:
      iv, idx = video.sampled_fps_segments(info.num_frames, info.fps, cfg.sample_fps)
    entry = {'fps': info.fps, 'frames': str(info.num_frames), 'domain': cfg.domain,
             'info': [], 'clip': iv.astype(float).tolist(), 'match': [-1] * len(iv),
             'mturk': [0.0] * len(iv)}
    return entry, iv, idx


def _make_jobs(cfg) -> list[_Job]:
  if not cfg.video_dir or not os.path.isdir(cfg.video_dir):
    raise ExtractionError(f'video_dir={cfg.video_dir!r} is not a folder: pass '
                          '--config.video_dir=<folder of videos>')
  ex = _extractor(cfg)
  ex.check(cfg)
  if cfg.dtype not in ex.dtypes or cfg.output_dtype not in ('float16', 'float32'):
    raise ExtractionError(f'dtype={cfg.dtype!r} must be float32 | bfloat16 and '
                          f'output_dtype={cfg.output_dtype!r} float16 | float32')
  decoder = cfg.get('decoder', 'pyav')
  if decoder not in DECODERS:
    raise ExtractionError(f"decoder={decoder!r} must be 'pyav' or 'nvdec' "
                          "(--config.decoder=pyav|nvdec)")
  if decoder == 'nvdec':
    nvdec.check_available()  # a one-line UserInputError when NVDEC cannot run here
  videos = video.find_videos(cfg.video_dir)
  if cfg.segmenter == 'annotation':
    if not cfg.annotation:
      raise ExtractionError("segmenter='annotation' needs --config.annotation=<youtube_anno.json>")
    with open(cfg.annotation) as f:
      anno = json.load(f)
    return [_Job(vid, videos.get(vid), cfg, anno[vid]) for vid in sorted(anno)]
  if cfg.segmenter not in ('segment_seconds', 'sample_fps'):
    raise ExtractionError(f"segmenter={cfg.segmenter!r} must be 'annotation', "
                          "'segment_seconds' or 'sample_fps'")
  return [_Job(vid, path, cfg) for vid, path in sorted(videos.items())]


def _put(q, item, stop) -> bool:
  while not stop.is_set():
    try:
      q.put(item, timeout=0.1)
      return True
    except queue.Full:
      pass
  return False


def _decode_worker(jobs: queue.Queue, out: queue.Queue, cfg, stop: threading.Event):
  """Puts ('start', vid, entry, (S, V)), ('clip', vid, s, [V, T, H, W, 3] uint8)...,
  ('end', vid, stats) or ('error', vid, message) per video, then ('done', busy seconds)."""
  ex = _extractor(cfg)
  busy = 0.0
  while not stop.is_set():
    try:
      job = jobs.get_nowait()
    except queue.Empty:
      break
    t0 = time.perf_counter()
    try:
      entry, iv, idx = job.segments()
      idx = ex.frame_indices(iv, idx, cfg)
      crops = video.crop_plan(len(idx), cfg.num_views, seed=cfg.seed, key=job.vid,
                              flip=cfg.views_flip)
      ok = _put(out, ('start', job.vid, entry, crops.shape[:2]), stop)
      stats = video.DecodeStats()
      if cfg.get('decoder', 'pyav') == 'nvdec':
        clips = nvdec.iter_segment_clips(job.path, idx, crops, stats=stats, frames=ex.frames)
      else:
        clips = video.iter_segment_clips(job.path, idx, crops, stats=stats, frames=ex.frames,
                                         decoder_threads=cfg.decoder_threads)
      for s, views in clips:
        busy += time.perf_counter() - t0  # time blocked on a full queue is not decoding
        ok = ok and _put(out, ('clip', job.vid, s, views), stop)
        t0 = time.perf_counter()
        if not ok:
          break
      _put(out, ('end', job.vid, stats), stop)
    except Exception as e:  # a bad video must not end the run; report it in one line
      msg = str(e) if isinstance(e, video.VideoError) else f'{job.vid}: {type(e).__name__}: {e}'
      _put(out, ('error', job.vid, ' '.join(msg.split())), stop)
    busy += time.perf_counter() - t0
  out.put(('done', busy))


def _shardings(batch_size: int):
  """(replicated, batch-sharded) over this process's devices (each process extracts its own
  videos), and the batch rounded up to them."""
  mesh = parallel.make_mesh(parallel.default_devices(local=True))
  n = mesh.devices.size
  return parallel.replicated(mesh), parallel.batch_sharded(mesh), -(-max(1, batch_size) // n) * n


def _run_pipeline(jobs, params, cfg, on_video, on_error, progress=None, max_clips=None):
  """Decodes `jobs` in background threads and runs the extractor on full batches.

  on_video(vid, entry, feats float32 [S, V, D], stats, logits float32 [S, 400] or None) for
  every finished video, on_error(vid, message) for failures; params=None only decodes (and
  drops the clips). Clips are batched by their padded length (`batch_length`), one buffer
  per length. Stops early after `max_clips` clips. Returns timing stats.
  """
  ex = _extractor(cfg)
  replicated, sharded, batch = _shardings(cfg.batch_size)
  params = None if params is None else jax.device_put(params, replicated)
  step = ex.make_step(cfg.dtype)
  videos = {}  # vid -> [entry, feats [S, V, D], rows still missing, ended, stats, logits]
  buffers = {}  # padded length -> (clips uint8 [batch, L, H, W, 3], lengths [batch], rows)
  pending = None
  timing = {'clips': 0, 'frames': 0, 'decode_s': 0.0, 'compute_wait_s': 0.0}

  def finish(vid):
    v = videos.get(vid)
    if v is not None and v[3] and v[2] == 0:
      del videos[vid]
      on_video(vid, v[0], v[1], v[4], v[5])

  def collect(out, out_rows):
    t0 = time.perf_counter()
    out = {k: np.asarray(a) for k, a in out.items()}
    timing['compute_wait_s'] += time.perf_counter() - t0
    for i, (vid, s, v) in enumerate(out_rows):
      if vid in videos:  # else the video failed after some of its clips were queued
        videos[vid][1][s, v] = out['feature'][i]
        if v == 0 and 'logits' in out:
          videos[vid][5][s] = out['logits'][i]
        videos[vid][2] -= 1
    for vid in dict.fromkeys(r[0] for r in out_rows):
      finish(vid)
    if progress is not None:
      progress.update(len(out_rows))

  def flush(length):
    nonlocal pending
    buf, lengths, rows = buffers.pop(length)
    out = step(params, jax.device_put(buf, sharded),  # async: decoding continues meanwhile
               jax.device_put(lengths, sharded))
    if pending is not None:
      collect(*pending)
    pending = (out, rows)

  t_start = time.perf_counter()
  job_q, out_q, stop = queue.Queue(), queue.Queue(maxsize=max(1, cfg.queue_size)), threading.Event()
  for job in jobs:
    job_q.put(job)
  workers = [threading.Thread(target=_decode_worker, args=(job_q, out_q, cfg, stop), daemon=True)
             for _ in range(max(1, cfg.decode_threads))]
  for w in workers:
    w.start()
  done = 0
  try:
    while done < len(workers):
      kind, vid, *msg = out_q.get()
      if kind == 'done':
        done += 1
        timing['decode_s'] += vid
      elif kind == 'start' and params is not None:
        (num_seg, num_views), entry = msg[1], msg[0]
        videos[vid] = [entry, np.zeros((num_seg, num_views, ex.feature_dim), np.float32),
                       num_seg * num_views, False, None,
                       np.zeros((num_seg, 400), np.float32) if ex.has_logits else None]
      elif kind == 'clip':
        timing['clips'] += len(msg[1])
        timing['frames'] += len(msg[1]) * msg[1].shape[1]
        for v, clip in enumerate(msg[1] if params is not None else []):
          n = len(clip)
          length = ex.batch_length(n, cfg)
          if length not in buffers:  # a fresh buffer: the one in flight may alias device memory
            buffers[length] = (np.zeros((batch, length, *clip.shape[1:]), np.uint8),
                               np.full((batch,), length, np.int32), [])
          buf, lengths, rows = buffers[length]
          buf[len(rows), :n] = clip
          lengths[len(rows)] = n
          rows.append((vid, msg[0], v))
          if len(rows) == batch:
            flush(length)
        if max_clips and timing['clips'] >= max_clips:
          stop.set()
      elif kind == 'end' and vid in videos:
        videos[vid][3], videos[vid][4] = True, msg[0]
        finish(vid)
      elif kind == 'error':
        videos.pop(vid, None)
        on_error(vid, msg[0])
    for length in sorted(buffers):
      flush(length)
    if pending is not None:
      collect(*pending)
  finally:
    stop.set()
  timing['wall_s'] = time.perf_counter() - t_start
  return timing


def _write_json(path, obj, indent=None):
  files.write_atomic(path, json.dumps(obj, indent=indent))


class _Writer:
  """Writes finished videos atomically and keeps youtube_anno.json in step with them."""

  def __init__(self, cfg, out_dir, anno):
    self.cfg, self.out_dir, self.anno, self.warnings = cfg, out_dir, anno, []
    os.makedirs(os.path.join(out_dir, 'video_features'), exist_ok=True)

  def path(self, vid, suffix=''):
    return os.path.join(self.out_dir, 'video_features',
                        f'{vid}_{self.cfg.feature_name}{suffix}.npy')

  def is_done(self, job) -> bool:
    entry = job.entry if job.entry is not None else self.anno.get(job.vid)
    if (entry is None or not os.path.exists(self.path(job.vid)) or
        (self.cfg.num_views and not os.path.exists(self.path(job.vid, '_views'))) or
        np.load(self.path(job.vid), mmap_mode='r').shape[0] != len(entry['clip'])):
      return False
    self.anno[job.vid] = entry
    return True

  def _save(self, path, arr):
    with open(path + '.tmp', 'wb') as f:
      np.save(f, np.ascontiguousarray(arr))
    os.replace(path + '.tmp', path)

  def write_anno(self):
    _write_json(os.path.join(self.out_dir, 'youtube_anno.json'),
                {k: self.anno[k] for k in sorted(self.anno)})

  def __call__(self, vid, entry, feats, stats, logits=None):
    del logits  # class tags are predict's (app/detector.py)
    dtype = np.dtype(self.cfg.output_dtype)
    out = feats.astype(dtype)
    if not np.isfinite(out).all():
      raise ExtractionError(f'{vid}: features overflow {dtype}; use --config.output_dtype=float32')
    if feats.shape[1] > 1:  # views first: the main file marks the video as done
      self._save(self.path(vid, '_views'), out[:, 1:].transpose(1, 0, 2))
    self._save(self.path(vid), out[:, 0])
    if stats is not None and stats.clamped_segments:
      self.warnings.append(f'{vid}: {stats.clamped_segments} segments sample frames past the '
                           f'last decoded frame ({stats.decoded_frames}); used the last frame')
      tqdm.write('warning: ' + self.warnings[-1])
    self.anno[vid] = copy.deepcopy(entry)
    self.write_anno()


def _clip_seconds(cfg, jobs) -> float | None:
  """The segment length predict uses on new videos: segment_seconds, or the median
  annotated clip (annotation segmenter); None for sample_fps."""
  if cfg.segmenter == 'segment_seconds':
    return float(cfg.segment_seconds)
  if cfg.segmenter != 'annotation':
    return None
  lengths = [(float(e) - float(s)) / float(j.entry['fps']) for j in jobs
             for s, e in j.entry['clip'] if float(j.entry.get('fps') or 0) > 0]
  return round(float(np.median(lengths)), 4) if lengths else None


def run_extraction(cfg, workdir: str, progress: bool = True) -> int:
  """Extracts features of every video; returns 0, 1 (some videos failed) or 2 (bad config).

  Output goes to cfg.output_dir, or to `workdir` when that is empty."""
  out_dir = cfg.output_dir or workdir
  meta_path = os.path.join(out_dir, f'{cfg.feature_name}_extraction.json')
  try:
    jobs = _make_jobs(cfg)
    ex = _extractor(cfg)
    params, source = ex.load_params(cfg)
    settings = _settings(cfg, source)
    if os.path.exists(meta_path):
      with open(meta_path) as f:
        old = json.load(f).get('settings', {})
      old.setdefault('extractor', 'c3d')  # records from before I3D
      changed = sorted(k for k in set(old) | set(settings)  # a moved file keeps its hash
                       if k != 'weights' and old.get(k) != settings.get(k))
      if changed:
        raise ExtractionError(f'{out_dir} holds features extracted with other settings '
                              f'({", ".join(changed)}); choose another output_dir')
  except (FileNotFoundError, ValueError, UserInputError) as e:  # ExtractionError is one
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    return 2
  os.makedirs(out_dir, exist_ok=True)
  # The decoder is not a setting: NVDEC and PyAV give near-identical features, and a run may
  # resume with the other one.
  versions = {'jax': jax.__version__, 'av': video.av.__version__,
              'decoder': cfg.get('decoder', 'pyav')}
  if versions['decoder'] == 'nvdec':
    versions['PyNvVideoCodec'] = nvdec.check_available()
  record = {'settings': settings, 'versions': versions, 'extractor': {
      'name': ex.name, 'layer': ex.layer, 'stream': cfg.feature_name,
      'feature_dim': ex.feature_dim, 'weights_sha256': source.get('weights_sha256', '')},
      'clip_seconds': _clip_seconds(cfg, jobs)}
  # Written now too, so that resuming a crashed run with other settings is refused.
  _write_json(meta_path, record, indent=1)
  anno_path = os.path.join(out_dir, 'youtube_anno.json')
  anno = {}
  if cfg.segmenter != 'annotation' and os.path.exists(anno_path):
    with open(anno_path) as f:
      anno = json.load(f)
  writer = _Writer(cfg, out_dir, anno)
  todo = [j for j in jobs if not writer.is_done(j)]
  writer.anno = {k: v for k, v in writer.anno.items() if os.path.exists(writer.path(k))}
  writer.write_anno()
  if source['random_weights']:
    print(f'warning: RANDOM {ex.name.upper()} weights (allow_random_weights=True): features '
          'are for tests and benchmarks only', file=sys.stderr)
  print(f'{len(jobs)} videos, {len(jobs) - len(todo)} already extracted, {len(todo)} to do; '
        f'{len(parallel.default_devices(local=True))} {jax.default_backend()} device(s), {cfg.dtype}',
        file=sys.stderr)
  failures = []

  def on_error(vid, message):
    failures.append((vid, message))
    tqdm.write(f'failed: {message}')

  def on_video(vid, entry, feats, stats, logits):
    try:
      writer(vid, entry, feats, stats, logits)
    except (ExtractionError, OSError) as e:
      on_error(vid, str(e))

  total = (sum(len(j.entry['clip']) for j in todo) * (1 + cfg.num_views)
           if cfg.segmenter == 'annotation' else None)
  # rate_noinv: always clips/s, never s/clip (CPU runs are slower than one clip a second)
  fmt = ('{desc}: {n_fmt}/{total_fmt} clips [{elapsed}<{remaining}, {rate_noinv_fmt}]' if total
         else '{desc}: {n_fmt} clips [{elapsed}, {rate_noinv_fmt}]')
  with tqdm(total=total, unit='clip', desc=ex.name.upper(), bar_format=fmt,
            disable=not (todo and progress)) as bar:
    timing = _run_pipeline(todo, params, cfg, on_video, on_error, progress=bar)
  _write_json(meta_path, {**record, 'last_run': {
      'clips': timing['clips'], 'frames': timing['frames'],
      'wall_s': round(timing['wall_s'], 2),
      'failures': dict(failures), 'warnings': writer.warnings}}, indent=1)
  print(f'extracted {timing["clips"]} clips in {timing["wall_s"]:.1f}s into {out_dir}',
        file=sys.stderr)
  if failures:
    print(f'{len(failures)} video(s) failed:\n' + '\n'.join(
        f'  {vid}: {message}' for vid, message in failures), file=sys.stderr)
  return 1 if failures else 0


def run_extraction_benchmark(cfg, workdir: str) -> dict:
  """Clips/s of the extractor's compute alone, of decoding alone and of the overlapped
  pipeline, and MFU.

  Compute runs on random clips (no video needed; I3D clips of benchmark.clip_frames frames);
  with `video_dir` set, its videos (cut by the configured segmenter, repeated up to
  `benchmark.num_clips` clips) are decoded too. MFU = analytic FLOPs (`flops_per_clip`) x
  compute clips/s / measured matmul peak. Prints and returns one JSON dict.
  """
  del workdir  # nothing is written
  ex = _extractor(cfg)
  ex.check(cfg)
  params, source = ex.load_params(cfg, for_benchmark=True)
  replicated, sharded, batch = _shardings(cfg.batch_size)
  step = ex.make_step(cfg.dtype)
  p = jax.device_put(params, replicated)
  shape = ex.clip_shape(int(cfg.benchmark.get('clip_frames', 32)))
  clips = jax.device_put(np.random.default_rng(0).integers(
      0, 256, (batch, *shape), dtype=np.uint8), sharded)
  lengths = jax.device_put(np.full((batch,), shape[0], np.int32), sharded)
  for _ in range(max(1, cfg.benchmark.warmup)):
    jax.block_until_ready(step(p, clips, lengths))
  n_batches = max(1, -(-cfg.benchmark.num_clips // batch))
  t0 = time.perf_counter()
  for _ in range(n_batches):  # one call at a time: queued CPU calls would compete
    jax.block_until_ready(step(p, clips, lengths))
  compute_s = time.perf_counter() - t0
  rate = n_batches * batch / compute_s
  size = cfg.benchmark.matmul_size or (2048 if jax.default_backend() == 'cpu' else 8192)
  peak = c3d.matmul_peak_flops(cfg.dtype, size, sharded)
  flops = ex.flops_per_clip(shape[0])
  result = {
      'extractor': ex.name, 'devices': [str(d) for d in sharded.mesh.devices.flat],
      'backend': jax.default_backend(), 'dtype': cfg.dtype, 'batch_size': batch,
      'clip_frames': shape[0], 'random_weights': source['random_weights'],
      'compute_clips': n_batches * batch, 'compute_s': round(compute_s, 3),
      'compute_clips_per_s': round(rate, 2), 'compute_frames_per_s': round(rate * shape[0], 1),
      'clips_per_s': round(rate, 2),
      'flops_per_clip': flops, 'achieved_tflops': round(flops * rate / 1e12, 3),
      'peak_matmul_tflops': round(peak / 1e12, 3), 'mfu': round(flops * rate / peak, 4)}
  if cfg.video_dir:
    jobs = _make_jobs(cfg)
    one_pass = sum(len(j.segments()[2]) for j in jobs if j.path) * (1 + cfg.num_views)
    if not one_pass:
      raise ExtractionError(f'no clips in the videos of video_dir={cfg.video_dir}')
    repeat = -(-cfg.benchmark.num_clips // one_pass)
    jobs = [_Job(f'{j.vid}#{r}', j.path, cfg, j.entry) for r in range(repeat) for j in jobs]
    errors = []
    dec = _run_pipeline(jobs, None, cfg, None, lambda v, m: errors.append(m),
                        max_clips=cfg.benchmark.num_clips)
    e2e = _run_pipeline(jobs, params, cfg, lambda *a: None, lambda v, m: errors.append(m),
                        max_clips=cfg.benchmark.num_clips)
    result.update({
        'decoder': cfg.get('decoder', 'pyav'), 'decode_threads': cfg.decode_threads,
        'decode_clips': dec['clips'],
        'decode_s': round(dec['wall_s'], 3),
        'decode_clips_per_s': round(dec['clips'] / dec['wall_s'], 2),
        'decode_frames_per_s': round(dec['frames'] / dec['wall_s'], 1),
        'pipeline_clips': e2e['clips'], 'pipeline_frames': e2e['frames'],
        'pipeline_s': round(e2e['wall_s'], 3),
        'pipeline_decode_busy_s': round(e2e['decode_s'], 3),
        'pipeline_compute_wait_s': round(e2e['compute_wait_s'], 3),
        'pipeline_frames_per_s': round(e2e['frames'] / e2e['wall_s'], 1),
        'clips_per_s': round(e2e['clips'] / e2e['wall_s'], 2), 'errors': errors})
  print(json.dumps(result))
  return result
