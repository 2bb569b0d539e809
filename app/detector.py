"""HighlightDetector: a trained run applied to new videos (the Python side of --mode=predict).

  det = HighlightDetector.from_workdir('runs/my_run')
  pred = det.score_video('match.mp4')            # or an .npy of features [T, D]
  det.render(pred, 'out/')                        # out/<vid>.json, <vid>.png, <vid>_highlights.mp4

What a run needs to score raw video is in its workdir: config.json (the model and method),
the latest checkpoint (all vectorized seeds, averaged as an ensemble) and features.json,
written at training time, which names the feature streams, their dimension and, for
features made by --mode=extract, the extraction record (extractor, weights file and its
sha256 or "random weights" with their seed, segmenting rule, frame sampling, dtypes). Video
is cut and featurized exactly as the training features were; an .npy input is scored as
given.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Iterable

import ml_collections
import numpy as np

from app.highlights import Prediction, merge_top, num_top
from data_pipelines import context, normalize, video
from dlvhd_jax import evaluation, files, methods, parallel
from dlvhd_jax import optimizer, replica_axis, train_step
from dlvhd_jax.checkpoint import Checkpointer, with_legacy_defaults
from dlvhd_jax.errors import UserInputError

FEATURE_RECORD = 'features.json'
NORMALIZATION = 'normalization.npz'
# Feature-file suffixes (<vid>_<stream>.npy) that name a stream: one the run was not trained
# on is a mismatch even when the dimensions agree.
KNOWN_STREAMS = ('rgb', 'opt', 'flow', 'c3d', 'i3d', 'clip', 'slowfast', 'vggish', 'audio')


# ----------------------------------------------------------------------------- the detector

def recorded_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  try:
    with open(path) as f:
      doc = json.load(f)
    cfg = doc['history'][-1]['config'] if 'history' in doc else doc
  except (OSError, ValueError, KeyError, IndexError) as e:
    raise UserInputError(f'{path}: no readable run config ({type(e).__name__}); pass '
                         '--workdir=<a folder that --mode=train wrote>') from None
  # A run recorded before a config key existed ran with that key's legacy value; the
  # restore check compares against the checkpoint's fingerprint filled the same way.
  return ml_collections.ConfigDict(with_legacy_defaults(cfg))


def write_feature_record(workdir: str, cfg, data) -> None:
  """At training time: <workdir>/features.json (what predict must feed the model: streams,
  their raw dimension, data.context, data.normalize) and, for data.normalize=standardize, the
  source statistics `data` was standardized with, in normalization.npz."""
  root = cfg.data.root
  streams = []
  for s in [x.strip() for x in cfg.data.features.split('+') if x.strip()]:
    rec_path = os.path.join(root, f'{s}_extraction.json') if root else ''
    extraction = None
    if rec_path and os.path.isfile(rec_path):
      with open(rec_path) as f:
        extraction = json.load(f)
    streams.append({'stream': s, 'extraction': extraction})
  mode = cfg.data.get('normalize', 'none')
  k = int(cfg.data.get('context', 0))
  files.write_json(os.path.join(workdir, FEATURE_RECORD), {
      'features': cfg.data.features, 'feature_dim': int(data.feature_dim) // (2 if k else 1),
      'context': k, 'normalize': mode, 'streams': streams})
  if mode == 'standardize':
    mean, std = data.standardizer
    files.write_npz(os.path.join(workdir, NORMALIZATION), {'mean': mean, 'std': std})


class HighlightDetector:
  """A trained run's model, ready to score features or videos (see the module docstring)."""

  def __init__(self, workdir: str, cfg, graphdef, params, step: int, in_dim: int,
               record: dict, normalizer: Callable[[np.ndarray], np.ndarray], weights: str = ''):
    self.workdir, self.cfg, self.step = workdir, cfg, step
    # The model's input is in_dim wide; with data.context the features given are half that.
    self.in_dim = in_dim // (2 if record.get('context', 0) else 1)
    self.record, self._normalize, self._weights = record, normalizer, weights
    self.objective = methods.get_objective(cfg.method)
    self.num_seeds = replica_axis.num_seeds(cfg)
    self._graphdef, self._params = graphdef, params
    self._mesh = parallel.make_mesh()
    self._logit_fn = evaluation.make_logit_fn(graphdef, tuple(self.objective.eval_heads),
                                              self._mesh, self.num_seeds > 1)
    self._extractor = None

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None, weights: str = '') -> 'HighlightDetector':
    """The run in `workdir` at checkpoint `step` (default: the latest). `weights`: where the
    extractor's weights file is now, if it moved since extraction (checked by sha256)."""
    cfg = recorded_config(workdir)
    objective = methods.get_objective(cfg.method)
    ckpt_dir = os.path.join(workdir, 'checkpoints')
    if not os.path.isdir(ckpt_dir):
      raise UserInputError(f'no checkpoint in {ckpt_dir}: train the run first (--mode=train)')
    ckpt = Checkpointer(workdir, cfg.train.max_checkpoints)
    try:
      step = ckpt.latest_step() if step is None else step
      if step is None:
        raise UserInputError(f'no checkpoint in {ckpt_dir}: train the run first (--mode=train)')
      in_dim = int(ckpt.saved_fingerprint(step)['resolved.feature_dim'])
      mesh = parallel.make_mesh()
      tx, _ = optimizer.make_optimizer(cfg, optimizer.make_schedule(cfg, 1))
      graphdef, like = train_step.init_state(cfg, in_dim, objective, tx, mesh, abstract=True)
      state = ckpt.restore(like, step)
    finally:
      ckpt.close()
    record = _read_record(workdir, cfg, in_dim)
    # A config.vary run predicts with the seeds of its value chosen on source validation.
    return cls(workdir, cfg, graphdef, train_step.chosen_params(cfg, state),
               int(step), in_dim, record, _normalizer(workdir, record), weights)

  # ------------------------------------------------------------------------- features

  @property
  def model_info(self) -> dict:
    return {'workdir': os.path.abspath(self.workdir), 'method': self.cfg.method,
            'step': self.step, 'num_seeds': self.num_seeds, 'features': self.record['features']}

  def check_features(self, features: np.ndarray, where: str) -> np.ndarray:
    """[T, D] float32, or a one-line error naming both sides of a mismatch."""
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[0] == 0:
      raise UserInputError(f'{where}: features must be [segments, dim] with at least one '
                           f'segment, got shape {f.shape}')
    if f.shape[1] != self.in_dim:
      raise UserInputError(
          f'{where} has {f.shape[1]} features per segment but the model in {self.workdir} was '
          f"trained on {self.in_dim} ({self.record['features']}): give features of that stream")
    if not np.issubdtype(f.dtype, np.number) or not np.isfinite(f).all():
      raise UserInputError(f'{where}: features must be finite numbers')
    return f.astype(np.float32)

  def scores(self, features: np.ndarray) -> np.ndarray:
    """[T, D] -> [T] float64: windowed scores, averaged over the run's seeds."""
    s = evaluation.predict(self._graphdef, self._params, [self._normalize(features)],
                           self.objective.eval_heads, self.cfg, self._mesh,
                           replicas=self.num_seeds > 1, logit_fn=self._logit_fn)[0]
    return np.asarray(s, np.float64).reshape(-1, len(features)).mean(0)

  def score_features(self, features: np.ndarray, *, vid: str = 'video', intervals_s=None,
                     duration_s: float | None = None, fps: float | None = None,
                     path: str | None = None, top_fraction: float = 0.2,
                     top_k: int = 0, class_logits: np.ndarray | None = None) -> Prediction:
    """Scores [T, D] features whose segments span `intervals_s` ([T, 2] seconds);
    `class_logits` [T, 400]: the extractor's Kinetics-400 logits of the same segments."""
    f = self.check_features(features, vid)
    iv = np.asarray(intervals_s, np.float64).reshape(-1, 2)
    if len(iv) != len(f):
      raise UserInputError(f'{vid}: {len(f)} feature rows but {len(iv)} segment intervals')
    duration = float(duration_s if duration_s is not None else iv[:, 1].max())
    sc = self.scores(f)
    probs = names = None
    if class_logits is not None:
      from dlvhd_jax import i3d  # pylint: disable=g-import-not-at-top
      z = np.asarray(class_logits, np.float64)
      probs = np.exp(z - z.max(-1, keepdims=True))
      probs /= probs.sum(-1, keepdims=True)
      names = i3d.class_names()
    return Prediction(vid, path, duration, fps, iv[:, 0], iv[:, 1], sc,
                      merge_top(iv[:, 0], iv[:, 1], sc, num_top(len(sc), top_fraction, top_k)),
                      self.model_info, probs, names)

  def load_npy(self, path: str) -> tuple[str, np.ndarray]:
    """-> (video id, [T, D]) from an .npy; `<vid>_<stream>.npy` of a multi-stream run takes
    the other streams from the files beside it."""
    name = os.path.basename(path)[:-4]
    streams = [s['stream'] for s in self.record['streams']]
    suffix = name.rsplit('_', 1)[-1] if '_' in name else ''
    if suffix in KNOWN_STREAMS and suffix not in streams:
      raise UserInputError(f"{path} holds {suffix!r} features but the model in {self.workdir} "
                           f"was trained on {self.record['features']!r}: give "
                           f'<vid>_{streams[0]}.npy')
    self._check_extractor(path, suffix)
    for s in streams:
      if name.endswith('_' + s) and len(streams) > 1:
        base = path[:-len(f'_{s}.npy')]
        parts = []
        for t in streams:
          p = f'{base}_{t}.npy'
          if not os.path.isfile(p):
            raise UserInputError(f'{path}: the model takes {"+".join(streams)} features; '
                                 f'{p} is missing')
          parts.append(_load(p))
        if len({len(x) for x in parts}) != 1:
          raise UserInputError(f'{base}_*.npy: the streams have different numbers of rows')
        return os.path.basename(base), np.concatenate(parts, axis=1)
    return (name[:-len(streams[0]) - 1] if len(streams) == 1 and name.endswith('_' + streams[0])
            else name), _load(path)

  def _check_extractor(self, path: str, stream: str) -> None:
    """Refuses an .npy whose extraction record (<stream>_extraction.json in its folder or the
    one above, as --mode=extract writes it) names another extractor or other weights than
    the features the run was trained on: such features share a shape, not a meaning."""
    folder = os.path.dirname(os.path.abspath(path))
    found = [os.path.join(d, f'{stream}_extraction.json') for d in (folder, os.path.dirname(folder))]
    found = [p for p in found if stream and os.path.isfile(p)]
    if not found:
      return
    try:
      with open(found[0]) as f:
        theirs = _extractor_of(json.load(f))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
      return
    run = [s for s in self.record['streams'] if s['stream'] == stream]
    ours = _extractor_of(run[0].get('extraction')) if run else None
    if theirs != ours:
      raise UserInputError(
          f'{path} holds features of {_describe(theirs)} ({found[0]}) but the model in '
          f'{self.workdir} was trained on features of {_describe(ours)}: features of '
          'different extractors or weights do not mix; extract with the run\'s extractor, or '
          'train on these features')

  def score_video(self, path_or_features, *, video_path: str | None = None,
                  segment_seconds: float = 0.0, top_fraction: float = 0.2,
                  top_k: int = 0, **pipeline) -> Prediction:
    """Scores one video file, one .npy file or a [T, D] array (timing: `segment_seconds`, or
    the features' extraction rule, or the length of `video_path` split evenly). `pipeline`:
    score_videos' batch_size, decode_threads, decoder."""
    if isinstance(path_or_features, str) and not path_or_features.endswith('.npy'):
      out = []
      errors = []
      self.score_videos([path_or_features], out.append,
                        lambda vid, msg: errors.append(msg), top_fraction=top_fraction,
                        top_k=top_k, **pipeline)
      if errors:
        raise video.VideoError(errors[0])
      return out[0]
    if isinstance(path_or_features, str):
      vid, feats = self.load_npy(path_or_features)
      where = path_or_features
    else:
      vid, feats, where = 'video', np.asarray(path_or_features), 'features'
    feats = self.check_features(feats, where)
    iv, duration, fps = self.npy_timing(len(feats), where, video_path, segment_seconds)
    return self.score_features(feats, vid=vid, intervals_s=iv, duration_s=duration, fps=fps,
                               path=video_path, top_fraction=top_fraction, top_k=top_k)

  def npy_timing(self, rows: int, where: str, video_path: str | None, segment_seconds: float):
    """-> (intervals [T, 2] s, duration s, fps) for features given without their video cut."""
    info = video.probe(video_path) if video_path else None
    seconds = float(segment_seconds or 0) or self.segment_seconds(required=False)
    if seconds:
      iv = np.stack([np.arange(rows) * seconds, (np.arange(rows) + 1) * seconds], 1)
    elif info is not None:
      edges = np.linspace(0.0, info.num_frames / info.fps, rows + 1)
      iv = np.stack([edges[:-1], edges[1:]], 1)
    else:
      raise UserInputError(f'{where}: how long is a segment? pass --config.predict.segment_seconds'
                           ' or the video with --config.predict.video')
    duration = info.num_frames / info.fps if info is not None else float(iv[-1, 1])
    iv = np.minimum(iv, max(duration, float(iv[0, 1])))
    return iv, duration, (info.fps if info is not None else None)

  # ------------------------------------------------------------------------- videos

  def extraction(self) -> dict:
    """The settings the run's features were extracted with, or a one-line error."""
    streams = self.record['streams']
    missing = [s['stream'] for s in streams if not s.get('extraction')]
    if len(streams) != 1 or missing:
      raise UserInputError(
          f"the model in {self.workdir} was trained on {self.record['features']!r} features "
          'that --mode=extract did not make (no <stream>_extraction.json beside them), so it '
          'cannot featurize a video: pass its features as --config.predict.inputs=<vid>.npy')
    return streams[0]['extraction']['settings']

  def segment_seconds(self, required: bool = True) -> float:
    """Segment length of the run's extraction rule (annotation rule: its median clip)."""
    try:
      st = self.extraction()
    except UserInputError:
      if required:
        raise
      return 0.0
    if st['segmenter'] == 'segment_seconds':
      return float(st['segment_seconds'])
    rec = self.record['streams'][0]['extraction']
    return float(rec.get('clip_seconds') or 0.0)

  def _extract_config(self, batch_size: int, decode_threads: int, decoder: str):
    from configs import extract_c3d, extract_i3d  # pylint: disable=g-import-not-at-top
    st = self.extraction()
    c = {'c3d': extract_c3d, 'i3d': extract_i3d}[st.get('extractor', 'c3d')].get_config()
    for k in ('frame_sampling', 'dtype', 'output_dtype', 'seed', 'segmenter', 'segment_seconds',
              'sample_fps', 'max_segment_frames'):
      if k in st:
        c[k] = st[k]
    if st['segmenter'] == 'annotation':
      c.segmenter, c.segment_seconds = 'segment_seconds', self.segment_seconds()
      if not c.segment_seconds:
        raise UserInputError(f'{self.workdir}: the extraction record has no clip length for '
                             'new videos; pass --config.predict.segment_seconds')
    # I3D clips are whole segments (tens of frames each, not C3D's 16): its extraction
    # config's batch bounds predict's, so memory stays that of --mode=extract.
    c.num_views, c.decode_threads = 0, int(decode_threads)
    c.batch_size = int(batch_size) if c.extractor == 'c3d' else min(int(batch_size), c.batch_size)
    c.decoder = decoder
    return c

  def _extractor_params(self):
    """The extractor's params, as the run's features were extracted (weights by sha256)."""
    if self._extractor is None:
      from data_pipelines import extractors  # pylint: disable=g-import-not-at-top
      st = self.extraction()
      self._extractor = extractors.get(st.get('extractor', 'c3d')).recorded_params(
          st, self._weights)
    return self._extractor

  def score_videos(self, paths: Iterable[str], on_result: Callable[[Prediction], None],
                   on_error: Callable[[str, str], None], *, top_fraction: float = 0.2,
                   top_k: int = 0, batch_size: int = 16, decode_threads: int = 2,
                   decoder: str = 'pyav', progress=None) -> dict:
    """Featurizes and scores video files with decoding overlapped with device compute (the
    extraction pipeline); on_result(prediction) per video, on_error(vid, message) per
    failure. Returns the pipeline's timing (clips, wall_s)."""
    from data_pipelines import extract  # pylint: disable=g-import-not-at-top
    ecfg = self._extract_config(batch_size, decode_threads, decoder)
    if decoder not in extract.DECODERS:
      raise UserInputError(f"config.predict.decoder={decoder!r} must be 'pyav' or 'nvdec'")
    if decoder == 'nvdec':
      from data_pipelines import nvdec  # pylint: disable=g-import-not-at-top
      nvdec.check_available()
    params = self._extractor_params()
    out_dtype = np.dtype(ecfg.output_dtype)
    jobs = [extract._Job(video_id(p), p, ecfg) for p in paths]  # pylint: disable=protected-access
    by_vid = {j.vid: j.path for j in jobs}

    def on_video(vid, entry, feats, stats, logits):
      del stats
      fps = float(entry['fps'])
      frames = int(entry['frames'])
      iv = np.asarray(entry['clip'], np.float64) / fps
      iv[-1, 1] = frames / fps  # a dropped short tail belongs to the last segment
      try:
        on_result(self.score_features(feats[:, 0].astype(out_dtype).astype(np.float32), vid=vid,
                                      intervals_s=iv, duration_s=frames / fps, fps=fps,
                                      path=by_vid[vid], top_fraction=top_fraction, top_k=top_k,
                                      class_logits=logits))
      except (UserInputError, OSError, video.VideoError) as e:
        on_error(vid, f'{vid}: {e}')

    return extract._run_pipeline(jobs, params, ecfg, on_video, on_error,  # pylint: disable=protected-access
                                 progress=progress)

  # ------------------------------------------------------------------------- outputs

  def render(self, prediction: Prediction, output_dir: str, *, video_path: str | None = None,
             reel_seconds: float = 30.0, thumbnails: int = 4) -> dict:
    """Writes <vid>.png, <vid>_highlights.mp4 (when there is a video) and <vid>.json (last:
    its presence means the video is done). Returns {'json', 'png', 'reel'} paths."""
    from app import report  # pylint: disable=g-import-not-at-top
    return report.write_video_outputs(prediction, output_dir, video_path or prediction.path,
                                      reel_seconds=reel_seconds, thumbnails=thumbnails)


def _extractor_of(record: dict | None):
  """(extractor, weights) of an extraction record, None for features it did not make."""
  if not record:
    return None
  st = record['settings']
  weights = (f"random weights (seed {st.get('seed', 0)})" if st.get('random_weights')
             else f"weights sha256 {str(st.get('weights_sha256', ''))[:12]}")
  return (st.get('extractor', record.get('extractor', {}).get('name', 'c3d')), weights)


def _describe(extractor) -> str:
  return ('no extraction record (not made by --mode=extract, e.g. a public release)'
          if extractor is None else f'{extractor[0].upper()} with {extractor[1]}')


def video_id(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _load(path: str) -> np.ndarray:
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise UserInputError(f'{path}: not a readable .npy file ({" ".join(str(e).split())})') from None


def _read_record(workdir: str, cfg, in_dim: int) -> dict:
  path = os.path.join(workdir, FEATURE_RECORD)
  if os.path.isfile(path):
    with open(path) as f:
      rec = json.load(f)
  else:  # a run trained before features.json existed: its features, no extraction record
    rec = {'features': cfg.data.features, 'feature_dim': in_dim,
           'context': 0, 'normalize': cfg.data.get('normalize', 'none'),
           'streams': [{'stream': s.strip(), 'extraction': None}
                       for s in cfg.data.features.split('+') if s.strip()]}
  return rec


def _normalizer(workdir: str, record: dict):
  """-> the run's transform of raw features [T, D] to the model's input: data.context, then
  data.normalize (as experiment.load_data applies them at training time)."""
  k = int(record.get('context', 0))
  mode = record.get('normalize', 'none')
  if mode == 'none':
    norm = lambda x: x
  elif mode == 'l2':
    norm = normalize.l2
  else:
    path = os.path.join(workdir, NORMALIZATION)
    if not os.path.isfile(path):
      raise UserInputError(f'{path} is missing: the run standardizes its features with the '
                           'source statistics saved there at training time; retrain it')
    with np.load(path) as z:
      mean, std = z['mean'], z['std']
    norm = lambda x: ((x - mean) / std).astype(np.float32)
  return lambda x: norm(context.with_context(x, k))
