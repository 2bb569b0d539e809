"""The data schema every dataset loads into, the helpers the loaders share, and the
registry (`config.data.name`).

Each dataset is one module that turns its files into the same in-memory description
(`CrossCategoryData`: videos with segment features, training labels, category and split)
and names its evaluation protocol. Training, sampling, sweeps and evaluation never ask which
dataset they run on; adding one is a module and a line in DATASETS.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import re
from typing import Callable

import numpy as np

from data_pipelines.store import FileStore
from dlvhd_jax.errors import UserInputError


@dataclasses.dataclass
class Video:
  vid: str
  category: str
  features: np.ndarray  # [T, D] float32
  labels: np.ndarray  # [T] float32 (match values)
  # [A, T] per-annotator segment scores where the evaluation protocol needs them (TVSum).
  annotator_scores: np.ndarray | None = None


@dataclasses.dataclass
class CrossCategoryData:
  """What a run needs: labeled source train videos, unlabeled target train videos, target
  test videos, and the source validation videos carved out of the source train videos
  (data.val_fraction; empty when 0) for label-free model selection."""
  source_train: list[Video]
  target_train: list[Video]
  target_test: list[Video]
  feature_dim: int
  source_val: list[Video] = dataclasses.field(default_factory=list)
  # data.normalize=standardize: (mean [D], std [D]) of the source training segments, which
  # normalize.normalize applied; --mode=predict applies the same to new features.
  standardizer: tuple[np.ndarray, np.ndarray] | None = None


def kfold_split(ids: list[str], category: str, fold: int,
                num_folds: int) -> tuple[list[str], list[str]]:
  """-> (train, test) of one category under data.split=kfold: its video ids sorted, video i
  tests in fold i mod num_folds and trains in every other fold, so over the folds every video
  is tested once, by models that did not train on it."""
  ids = sorted(ids)
  if not 2 <= num_folds <= len(ids) or not 0 <= fold < num_folds:
    raise UserInputError(f'data.fold={fold} with data.num_folds={num_folds}: {category!r} has '
                         f'{len(ids)} videos; use 0 <= fold < num_folds and '
                         f'2 <= num_folds <= {len(ids)}')
  return ([v for i, v in enumerate(ids) if i % num_folds != fold],
          [v for i, v in enumerate(ids) if i % num_folds == fold])


def carve_validation(videos: list[Video], fraction: float, seed: int,
                     category: str) -> tuple[list[Video], list[Video]]:
  """-> (train, val): round(fraction * n) of the videos (at least 1, leaving at least 1 to
  train on) drawn at random with `seed`, in their original order."""
  if fraction <= 0:
    return videos, []
  if len(videos) < 2:
    raise UserInputError(f'data.val_fraction={fraction} needs at least 2 source training videos '
                         f'of {category!r}, found {len(videos)}: use data.val_fraction=0')
  k = min(max(1, int(round(fraction * len(videos)))), len(videos) - 1)
  val = set(np.random.RandomState(seed).permutation(len(videos))[:k].tolist())
  return ([v for i, v in enumerate(videos) if i not in val],
          [v for i, v in enumerate(videos) if i in val])


def with_extra_sources(data: CrossCategoryData, data_cfg, load: Callable,
                       extra: tuple[str, ...]) -> CrossCategoryData:
  """`data` with the training videos of the categories `extra` (data.extra_sources) added to
  its source training videos, labels included. Source validation stays the source category's
  own held-out videos, so selection still reads that category alone; the source category in
  `extra` is skipped, so one tuple serves every category of a category-specific sweep."""
  src, tgt = data_cfg.source_category, data_cfg.target_category
  extra = [c for c in dict.fromkeys(extra) if c != src]
  if tgt != src and tgt in extra:
    raise UserInputError(f'data.extra_sources names the target category {tgt!r}: its labels '
                         'would train the model; remove it (or set data.target_category to the '
                         'source for a category-specific run)')
  added = []
  for cat in extra:
    sub = data_cfg.copy_and_resolve_references()
    with sub.unlocked():
      sub.source_category = sub.target_category = cat
      sub.val_fraction = 0.0
    try:
      added += load(sub, need_target_train=False).source_train
    except UserInputError as e:  # the loaders name the field they read: say which one it was
      raise UserInputError(re.sub(r'data\.(source|target)_category', 'data.extra_sources entry',
                                  str(e))) from None
  return dataclasses.replace(data, source_train=list(data.source_train) + added)


def as_store(root_or_store):
  """A dataset root (str) or a store (data_pipelines/store.py) -> a store."""
  return root_or_store if hasattr(root_or_store, 'read_text') else FileStore(root_or_store)



def read_json(store, rel: str, why: str):
  path = store.where(rel)
  if not store.isfile(rel):
    raise UserInputError(f'{path} not found ({why}); use --config.data.split=random or add the file')
  try:
    return json.loads(store.read_text(rel))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserInputError(f'{path} is not readable JSON ({type(e).__name__}: {e})') from None


def feature_streams(features: str) -> list[str]:
  streams = [s.strip() for s in features.split('+') if s.strip()]
  if not streams:
    raise UserInputError(f"data.features={features!r} is empty: use 'rgb', 'opt' or 'rgb+opt'")
  return streams


def check_feature_array(arr, path: str, vid: str, num_clips: int,
                        where: str) -> np.ndarray:
  """One stream of one video -> [num_clips, d] float32, or a one-line error naming the file.
  `where` says where the clip count comes from (e.g. the annotation file)."""
  if not isinstance(arr, np.ndarray) or arr.dtype.kind not in 'fiu':
    raise UserInputError(f'{path} holds {getattr(arr, "dtype", type(arr).__name__)} values; '
                         'features must be real numbers (float or int): re-extract it')
  if arr.ndim == 1:
    arr = arr[:, None]
  if arr.ndim != 2 or arr.shape[0] != num_clips or arr.shape[1] == 0:
    raise UserInputError(f'{path} has shape {arr.shape} but {vid} has {num_clips} clips in '
                         f'{where}: one row per clip is required; re-extract it')
  arr = arr.astype(np.float32)
  if not np.all(np.isfinite(arr)):
    raise UserInputError(f'{path} contains NaN or inf values; re-extract it')
  return arr


def load_features(store, vid: str, stream: str, num_clips: int, where: str):
  """The checked [num_clips, d] float32 features of one stream of one video."""
  return check_feature_array(store.load_features(vid, stream), store.feature_where(vid, stream),
                             vid, num_clips, where)


def require_videos(store, data_cfg, streams, source, test, target=None) -> None:
  """One-line error if the (videos, category) of source training, target test or (when
  drawn) target training holds no video with features."""
  for name, part in (('source training', source), ('target test', test),
                     *((('target training', target),) if target is not None else ())):
    vids, cat = part
    if not vids:
      there = sorted(store.streams())
      hint = (f'; the files there hold the stream(s) {there}: set '
              f'--config.data.features={"+".join(there)} (or some of them)'
              if there and set(streams) - set(there) else '')
      raise UserInputError(f'no {name} video of {cat!r} has {"+".join(streams)} features in '
                           f'{store.where("video_features")} (data.features={data_cfg.features!r})'
                           + hint)


def load_timed_streams(store, keys: dict, vid: str, duration: float, clip: float,
                       dims: dict) -> np.ndarray:
  """Features of datasets whose row t covers seconds [t*clip, (t+1)*clip) (TVSum, ActivityNet):
  the streams' arrays ({stream: the id it is stored under}), each floor(duration / clip) +- 1
  rows, cut to the shortest and concatenated -> [T, D]."""
  expected = int(float(duration) // clip)
  parts = []
  for s, key in keys.items():
    path = store.feature_where(key, s)
    rows = store.feature_rows(key, s)
    rows = expected if rows is None else rows  # unreadable: load_features names the problem
    if abs(rows - expected) > 1:
      raise UserInputError(f'{path} has {rows} rows but {vid} lasts {float(duration):.1f} s, '
                           f'i.e. {expected} clips of data.clip_seconds={clip}: set '
                           "data.clip_seconds to the features' clip length or re-extract them")
    arr = load_features(store, key, s, rows, where=f'its {rows} rows')
    want = dims.setdefault(s, arr.shape[1])
    if arr.shape[1] != want:
      raise UserInputError(f'{path} has {arr.shape[1]} features per clip but the other {s!r} '
                           f'files have {want}; re-extract it')
    parts.append(arr)
  t = min(len(p) for p in parts)
  return np.concatenate([p[:t] for p in parts], axis=1)



# ------------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Dataset:
  module: str  # the loader's module: it defines load_cross_category
  # The headline metric results.json reports as `map` (dlvhd_jax/evaluation.py): 'map' =
  # per-video AP against binary labels (YouTube Highlights), 'top5_map' = TVSum's top-5 mAP
  # over every annotator's scores (Video.annotator_scores).
  metric: str
  # The loader also takes a unique case-insensitive prefix of a category's name ('sport').
  prefix_names: bool = False

  @property
  def load(self) -> Callable:
    """load(data_cfg, need_target_train=bool) -> CrossCategoryData. Imported on use: the
    loaders import this module's schema."""
    return importlib.import_module(self.module).load_cross_category

  @property
  def categories(self) -> Callable:
    """categories(data_cfg) -> every category of the dataset at data_cfg.root, in the order
    its loader names them (what a transfer matrix spans when sweep.targets is empty)."""
    return importlib.import_module(self.module).list_categories


DATASETS = {
    'youtube_highlights': Dataset('data_pipelines.youtube_highlights', 'map'),
    'synthetic': Dataset('data_pipelines.youtube_highlights', 'map'),  # same layout, generated
    'tvsum': Dataset('data_pipelines.tvsum', 'top5_map'),  # tvsum.METRIC
    'activitynet': Dataset('data_pipelines.activitynet', 'map', prefix_names=True),
}


def get(name: str) -> Dataset:
  if name not in DATASETS:
    raise UserInputError(f'config.data.name={name!r} is not one of {sorted(DATASETS)}')
  return DATASETS[name]
