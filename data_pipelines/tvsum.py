"""TVSum (Song et al., CVPR 2015): 50 videos, 10 categories, 20 annotators' importance scores.

Either annotation layout a user has (`data.annotation`; default official, the other one is
used when only it is present):

  official  <root>/ydata-tvsum50-anno.tsv   vid \\t category \\t frame scores 1..5 (one line
                                            per annotator, 20 per video)
            <root>/ydata-tvsum50-info.tsv   header `category video_id title url length`
                                            (length m:ss)
  public    <root>/tvsum_anno.json          {vid: {"fps", "frames", "domain", "length",
                                            "anno": [[20 scores] per clip], ...}}

and the features `<root>/video_features/<vid>_<stream>.npy`, one row per clip of
`data.clip_seconds` (2 s in the public I3D release: row t covers seconds [2t, 2t+2); there are
floor(duration / 2) rows; fps = frames / duration).

A segment's label for annotator a is the mean of a's frame scores inside the segment
(official) or a's score of the clip (public); the training label is the mean over
annotators. Test videos keep every annotator's scores [A, T] for the top-5 mAP protocol
(dlvhd_jax/evaluation.py). Splits: `paper` (per category the 2 longest videos train, the
other 3 test), `umt` (<root>/splits/umt_splits.json: {category: {"train", "val"}}) and
`kfold` (data.fold of data.num_folds: video i of a category, by id, tests in fold i mod K).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os

import numpy as np
from absl import logging

from data_pipelines import datasets
from data_pipelines.store import FileStore, open_store
from dlvhd_jax.errors import UserInputError

OFFICIAL_ANNO = 'ydata-tvsum50-anno.tsv'
OFFICIAL_INFO = 'ydata-tvsum50-info.tsv'
PUBLIC_ANNO = 'tvsum_anno.json'
METRIC = 'top5_map'
DEFAULT_CLIP_SECONDS = 2.0  # the public I3D release


def _seconds(length: str, where: str) -> float:
  """'m:ss' (or 'h:mm:ss') -> seconds."""
  try:
    parts = [float(p) for p in str(length).strip().split(':')]
    total = 0.0
    for p in parts:
      total = total * 60 + p
    if not parts or total <= 0:
      raise ValueError
    return total
  except ValueError:
    raise UserInputError(f'{where}: length {length!r} is not m:ss') from None


# Common video frame rates, the NTSC ones first: most "30 fps" web video is 29.97.
STANDARD_FPS = (29.97, 23.976, 25.0, 59.94, 30.0, 24.0, 50.0, 60.0)


def frame_rate(num_frames: int, length_s: float) -> float:
  """The frame rate of a video of `num_frames` frames whose info-file length (m:ss) is
  `length_s`. That length is whole seconds, rounded for some videos and cut for others, so
  the duration lies in [length - 0.5, length + 1); the first common rate in the matching fps
  range (NTSC first) is taken, else frames / (length + 0.25). frames / length itself moves
  clip boundaries by up to a second over a long video. Used only when the public release's
  file (which stores each video's true fps) is not beside the official files: against it,
  this estimate is the true rate for 41 of the 50 videos and the labels agree within 0.1
  for 44 (0.4 at worst)."""
  lo, hi = num_frames / (length_s + 1.0), num_frames / max(length_s - 0.5, 1e-6)
  fits = [f for f in STANDARD_FPS if lo < f <= hi]
  return fits[0] if fits else num_frames / (length_s + 0.25)


# The last parse of the official files, keyed by their identity (path, mtime, size): a
# transfer matrix reads them once per model and per target category, hundreds of times in one
# process, and each parse of the 7 million frame scores takes about 1.5 s.
_OFFICIAL_CACHE: dict = {}


def _official_stamp(store) -> tuple | None:
  """-> the identity of the files read_official reads, None when `store` is not a folder."""
  if not isinstance(store, FileStore):
    return None
  out = []
  for rel in (OFFICIAL_INFO, OFFICIAL_ANNO, PUBLIC_ANNO):
    path = os.path.abspath(store.where(rel))
    try:
      st = os.stat(path)
      out.append((path, st.st_mtime_ns, st.st_size))
    except OSError:
      out.append((path, None, None))
  return tuple(out)


def read_official(root) -> dict:
  """-> {vid: {'category', 'duration', 'fps', 'frames' [A, F] float32, read-only}} from the
  authors' two files (parsed once per process while the files stay the same)."""
  store = datasets.as_store(root)
  stamp = _official_stamp(store)
  if stamp is None or stamp not in _OFFICIAL_CACHE:
    parsed = _parse_official(store)
    for entry in parsed.values():
      entry['frames'].setflags(write=False)  # shared by every later read
    _OFFICIAL_CACHE.clear()
    if stamp is not None:
      _OFFICIAL_CACHE[stamp] = parsed
  else:
    parsed = _OFFICIAL_CACHE[stamp]
  return {vid: dict(entry) for vid, entry in parsed.items()}


def _parse_official(store) -> dict:
  info_path, anno_path = store.where(OFFICIAL_INFO), store.where(OFFICIAL_ANNO)
  info = {}
  try:
    rows = list(csv.reader(io.StringIO(store.read_text(OFFICIAL_INFO)), delimiter='\t'))
  except (OSError, UnicodeDecodeError) as e:
    raise UserInputError(f'{info_path} is not readable ({e}); check data.root') from None
  if not rows or [h.strip().lower() for h in rows[0][:2]] != ['category', 'video_id']:
    raise UserInputError(f'{info_path}: the first line must be the header '
                         '"category video_id title url length"')
  for i, row in enumerate(rows[1:], 2):
    if not row:
      continue
    if len(row) < 5:
      raise UserInputError(f'{info_path} line {i}: expected 5 tab-separated fields '
                           '(category, video_id, title, url, length)')
    info[row[1].strip()] = (row[0].strip(), _seconds(row[4], f'{info_path} line {i}'))
  try:
    lines = store.read_text(OFFICIAL_ANNO).splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise UserInputError(f'{anno_path} is not readable ({e}); check data.root') from None
  scores: dict[str, list] = {}
  for i, line in enumerate(lines, 1):
    if not line.strip():
      continue
    parts = line.split('\t')
    if len(parts) != 3:
      raise UserInputError(f'{anno_path} line {i}: expected video_id, category and '
                           'comma-separated frame scores, tab-separated')
    try:
      frames = np.array([float(x) for x in parts[2].split(',')], np.float32)
    except ValueError:
      raise UserInputError(f'{anno_path} line {i}: frame scores must be numbers') from None
    scores.setdefault(parts[0].strip(), []).append(frames)
  # The public release beside the official files knows each video's exact fps.
  known_fps = {}
  if store.isfile(PUBLIC_ANNO):
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
      known_fps = {v: float(e['fps']) for v, e in json.loads(store.read_text(PUBLIC_ANNO)).items()
                   if 'fps' in e}
  out = {}
  for vid, per_annotator in scores.items():
    if vid not in info:
      raise UserInputError(f'{anno_path} has video {vid!r}, which {info_path} does not list')
    if len({len(s) for s in per_annotator}) != 1:
      raise UserInputError(f'{anno_path}: the annotators of {vid!r} scored different numbers '
                           'of frames')
    category, length = info[vid]
    frames = np.stack(per_annotator)
    fps = known_fps.get(vid) or frame_rate(frames.shape[1], length)
    out[vid] = {'category': category, 'duration': frames.shape[1] / fps, 'fps': fps,
                'frames': frames}
  return out


def read_public(root) -> dict:
  """-> {vid: {'category', 'duration', 'clips' [A, T] float32}} from the public release."""
  store = datasets.as_store(root)
  path = store.where(PUBLIC_ANNO)
  try:
    anno = json.loads(store.read_text(PUBLIC_ANNO))
  except (OSError, ValueError) as e:
    raise UserInputError(f'{path} is not readable JSON ({type(e).__name__}: {e})') from None
  if not isinstance(anno, dict) or not anno:
    raise UserInputError(f'{path} must be a non-empty object {{vid: {{...}}}}')
  out = {}
  for vid, e in anno.items():
    missing = [k for k in ('domain', 'anno') if not isinstance(e, dict) or k not in e]
    if missing:
      raise UserInputError(f'{path}: video {vid!r} lacks field(s) {missing}')
    try:
      clips = np.asarray(e['anno'], np.float32)
    except (TypeError, ValueError):
      raise UserInputError(f'{path}: video {vid!r} has an "anno" that is not a list of '
                           'per-clip score lists') from None
    if clips.ndim != 2 or not np.all(np.isfinite(clips)):
      raise UserInputError(f'{path}: video {vid!r} needs "anno" as [[score per annotator] per clip]')
    try:
      duration = float(e['frames']) / float(e['fps'])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
      if 'length' not in e:
        raise UserInputError(f'{path}: video {vid!r} needs "frames" and "fps" (or "length")') from None
      duration = _seconds(e['length'], f'{path} video {vid!r}')
    out[vid] = {'category': e['domain'], 'duration': duration, 'clips': clips.T}
  return out


def read_annotations(root, which: str) -> tuple[dict, str]:
  """-> ({vid: entry}, the layout read)."""
  store = datasets.as_store(root)
  if isinstance(store, FileStore) and not store.exists():
    raise UserInputError(f'data.root={store.root!r} does not exist: pass --config.data.root=<folder '
                         f'with {OFFICIAL_ANNO} + {OFFICIAL_INFO} or {PUBLIC_ANNO}, and video_features/>')
  have_official = all(store.isfile(n) for n in (OFFICIAL_ANNO, OFFICIAL_INFO))
  have_public = store.isfile(PUBLIC_ANNO)
  if which not in ('official', 'public'):
    raise UserInputError(f"data.annotation={which!r}: use 'official' or 'public'")
  if not (have_official or have_public):
    raise UserInputError(f'{store.where("")} holds neither {OFFICIAL_ANNO} + {OFFICIAL_INFO} nor '
                         f'{PUBLIC_ANNO}: point data.root at the TVSum annotation files')
  if which == 'official' and not have_official:
    which = 'public'
  elif which == 'public' and not have_public:
    which = 'official'
  return (read_official(store) if which == 'official' else read_public(store)), which


def segment_scores(entry: dict, num_segments: int, clip_seconds: float) -> np.ndarray:
  """Per annotator, the mean of its frame scores inside each segment [t*c, (t+1)*c) seconds
  (official layout) or its clip scores (public layout): -> [A, num_segments]."""
  if 'clips' in entry:
    clips = entry['clips']
    if clips.shape[1] < num_segments:
      raise ValueError(f'{clips.shape[1]} annotated clips for {num_segments} feature rows')
    return clips[:, :num_segments]
  frames = entry['frames']
  n = frames.shape[1]
  fps = entry['fps']
  out = np.empty((frames.shape[0], num_segments), np.float32)
  for t in range(num_segments):
    lo = min(int(round(t * clip_seconds * fps)), n - 1)
    hi = max(min(int(round((t + 1) * clip_seconds * fps)), n), lo + 1)
    out[:, t] = frames[:, lo:hi].mean(axis=1)
  return out


def split_ids(root, anno: dict, category: str, split: str, fold: int = 0,
              num_folds: int = 5) -> tuple[list[str], list[str]]:
  ids = sorted(v for v, e in anno.items() if e['category'] == category)
  if split == 'kfold':
    return datasets.kfold_split(ids, category, fold, num_folds)
  if split == 'paper':
    # Per category the 2 longest videos train, the other 3 test (the paper).
    longest = sorted(ids, key=lambda v: (-anno[v]['duration'], v))
    return sorted(longest[:2]), sorted(longest[2:])
  if split == 'umt':
    store = datasets.as_store(root)
    rel = os.path.join('splits', 'umt_splits.json')
    path = store.where(rel)
    table = datasets.read_json(store, rel, 'data.split=umt')
    entry = table.get(category) if isinstance(table, dict) else None
    if not isinstance(entry, dict):
      raise UserInputError(f'{path} has no entry {{"train": [...], "val": [...]}} for '
                           f'{category!r}: add one or use --config.data.split=paper')
    train, test = list(entry.get('train', [])), list(entry.get('val', []))
    foreign = [v for v in [*train, *test] if v in anno and anno[v]['category'] != category]
    if foreign:
      raise UserInputError(f'{path} lists {foreign[0]!r} under {category!r} but its category '
                           f'is {anno[foreign[0]]["category"]!r}; fix the split file')
    return [v for v in train if v in anno], [v for v in test if v in anno]
  raise UserInputError(f"data.split={split!r} is not one of 'paper', 'umt', 'kfold' for TVSum")


def load_video(store, vid: str, entry: dict, streams: list[str], clip_seconds: float,
               stream_dims: dict, graded_label: str = 'mean') -> datasets.Video | None:
  if not all(store.has_features(vid, s) for s in streams):
    return None
  feats = datasets.load_timed_streams(store, {s: vid for s in streams}, vid, entry['duration'],
                                clip_seconds, stream_dims)
  try:
    per_annotator = segment_scores(entry, len(feats), clip_seconds)
  except ValueError as e:
    raise UserInputError(f'{vid}: {e} in {store.where("video_features")}; the annotation '
                         'and the features disagree') from None
  v = datasets.Video(vid, entry['category'], feats, training_label(per_annotator, graded_label))
  v.annotator_scores = per_annotator
  return v


def training_label(per_annotator: np.ndarray, rule: str = 'mean') -> np.ndarray:
  """[A, T] annotator scores (1-5) -> the [T] training label y of softmax(y / tau).

  mean: the annotators' mean score (the paper, UMT). above_median: the share of annotators who
  score the segment above their own median in the video, which is the label the top-5 protocol
  binarizes each annotator to (evaluation.top5_average_precision), so training sees what the
  metric reads. zscore: the mean of each annotator's standardized scores, which removes
  annotators' offsets and spreads (an annotator who scores everything 3 contributes 0).
  """
  if rule == 'mean':  # in the scores' own dtype: bit for bit the labels the tables trained on
    return np.asarray(per_annotator).mean(axis=0).astype(np.float32)
  a = np.asarray(per_annotator, np.float64)
  if rule == 'above_median':
    y = (a > np.median(a, axis=1, keepdims=True)).mean(axis=0)
  elif rule == 'zscore':
    sd = a.std(axis=1, keepdims=True)
    y = ((a - a.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)).mean(axis=0)
  else:
    raise UserInputError(f"data.graded_label={rule!r}: use 'mean', 'above_median' or 'zscore'")
  return y.astype(np.float32)


def _categories(anno: dict) -> list[str]:
  return sorted({e['category'] for e in anno.values()})


def list_categories(data_cfg) -> list[str]:
  anno, _ = read_annotations(open_store(data_cfg), data_cfg.get('annotation', 'official'))
  return _categories(anno)


def load_cross_category(data_cfg, *, need_target_train: bool = True) -> datasets.CrossCategoryData:
  """Source train, target train (labels hidden) and target test videos of TVSum."""
  root = open_store(data_cfg)
  anno, layout = read_annotations(root, data_cfg.get('annotation', 'official'))
  cats = _categories(anno)
  for field in ('source_category', 'target_category'):
    if data_cfg[field] not in cats:
      raise UserInputError(f'data.{field}={data_cfg[field]!r} is not a TVSum category of '
                           f'{root.where("")} ({layout} annotation); categories there: {cats}')
  streams = datasets.feature_streams(data_cfg.features)
  clip = float(data_cfg.get('clip_seconds', -1))
  clip = DEFAULT_CLIP_SECONDS if clip <= 0 else clip
  split = data_cfg.split
  graded = data_cfg.get('graded_label', 'mean')
  folds = (int(data_cfg.get('fold', 0)), int(data_cfg.get('num_folds', 5)))
  src_train, _ = split_ids(root, anno, data_cfg.source_category, split, *folds)
  tgt_train, tgt_test = split_ids(root, anno, data_cfg.target_category, split, *folds)
  dims, missing = {}, []

  def load(ids):
    out = []
    for vid in ids:
      v = load_video(root, vid, anno[vid], streams, clip, dims, graded)
      (missing.append(vid) if v is None else out.append(v))
    return out
  source = load(src_train)
  target = load(tgt_train) if need_target_train else []
  test = load(tgt_test)
  if missing:
    logging.warning('Skipping videos: %d without %s features in %s: %s', len(missing),
                    '+'.join(streams), root.where('video_features'), ' '.join(missing))
  datasets.require_videos(root, data_cfg, streams, (source, data_cfg.source_category),
                    (test, data_cfg.target_category),
                    (target, data_cfg.target_category) if need_target_train else None)
  source, source_val = datasets.carve_validation(source, float(data_cfg.get('val_fraction', 0.0)),
                                           int(data_cfg.split_seed) + 1, data_cfg.source_category)
  for v in target:
    v.labels = np.zeros_like(v.labels)
    v.annotator_scores = None
  return datasets.CrossCategoryData(source, target, test, sum(dims.values()), source_val)
