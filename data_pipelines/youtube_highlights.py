"""YouTube Highlights in the layout of the community's public feature release (UMT, UniVTG).

    <root>/youtube_anno.json                  {vid: {"domain", "clip", "match", ...}}
    <root>/video_features/<vid>_<name>.npy    [n_clips, d] per feature stream (rgb, opt, c3d, ...)
    <root>/splits/umt_splits.json             {domain: {"train": [...], "val": [...]}}
    <root>/splits/<domain>.json               the dataset authors' Trai*/Test* lists

Categories are whatever `domain` values the annotation holds. Labels are the `match` values
(1 highlight, -1 not, 0 borderline); evaluation counts `match > 0` as positive.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from absl import logging

from data_pipelines.errors import UserInputError

ANNOTATION = 'youtube_anno.json'


@dataclasses.dataclass
class Video:
  vid: str
  category: str
  features: np.ndarray  # [T, D] float32
  labels: np.ndarray  # [T] float32 (match values)


@dataclasses.dataclass
class CrossCategoryData:
  """What a run needs: labeled source train videos, unlabeled target train videos, target test videos."""
  source_train: list[Video]
  target_train: list[Video]
  target_test: list[Video]
  feature_dim: int


def load_annotations(root: str) -> dict:
  if not root:
    raise UserInputError('data.root is empty: pass --config.data.root=<folder holding '
                         f'{ANNOTATION} and video_features/>')
  if not os.path.isdir(root):
    raise UserInputError(f'data.root={root} does not exist: pass --config.data.root=<folder '
                         f'holding {ANNOTATION} and video_features/>')
  path = os.path.join(root, ANNOTATION)
  if not os.path.isfile(path):
    raise UserInputError(f'{path} not found: data.root must hold {ANNOTATION} (the UMT layout)')
  try:
    with open(path) as f:
      anno = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserInputError(f'{path} is not readable JSON ({type(e).__name__}: {e}); '
                         're-download or regenerate it') from None
  if not isinstance(anno, dict) or not anno:
    raise UserInputError(f'{path} must be a non-empty object {{video_id: {{"domain", "clip", '
                         '"match", ...}}}}')
  for vid, entry in anno.items():
    missing = [k for k in ('domain', 'clip', 'match') if not isinstance(entry, dict) or k not in entry]
    if missing:
      raise UserInputError(f'{path}: video {vid!r} lacks field(s) {missing}')
    if len(entry['clip']) != len(entry['match']):
      raise UserInputError(f'{path}: video {vid!r} has {len(entry["clip"])} clips but '
                           f'{len(entry["match"])} match labels')
  return anno


def categories(anno: dict) -> list[str]:
  return sorted({e['domain'] for e in anno.values()})


def check_category(anno: dict, category: str, field: str, root: str) -> None:
  if category not in categories(anno):
    raise UserInputError(f'data.{field}={category!r} is not a domain of '
                         f'{os.path.join(root, ANNOTATION)}; domains there: {categories(anno)}')


def split_videos(root: str, anno: dict, category: str, split: str, seed: int) -> tuple[list[str], list[str]]:
  """Train and test video ids of one category under `split` (umt | official | random)."""
  ids = sorted(v for v, e in anno.items() if e['domain'] == category)
  if split == 'random':
    # The paper's code: 70/30 per category at random with a seed.
    perm = np.random.RandomState(seed).permutation(len(ids))
    n_train = int(round(0.7 * len(ids)))
    return [ids[i] for i in sorted(perm[:n_train])], [ids[i] for i in sorted(perm[n_train:])]
  if split == 'umt':
    path = os.path.join(root, 'splits', 'umt_splits.json')
    table = _read_json(path, 'data.split=umt')
    if category not in table:
      raise UserInputError(f'{path} has no entry for {category!r}: use --config.data.split=random')
    train, test = table[category].get('train', []), table[category].get('val', [])
  elif split == 'official':
    path = os.path.join(root, 'splits', f'{category}.json')
    lists = _read_json(path, 'data.split=official')
    try:
      train = [v for ids_, name in lists if name.startswith('Trai') for v in ids_]
      test = [v for ids_, name in lists if name.startswith('Test') for v in ids_]
    except (TypeError, ValueError):
      raise UserInputError(f'{path} is not a list of [[ids], "Trai*"|"Test*"] pairs') from None
  else:
    raise UserInputError(f"data.split={split!r} is not one of 'umt', 'official', 'random'")
  known = set(ids)
  train = sorted(dict.fromkeys(v for v in train if v in known))
  test = sorted(dict.fromkeys(v for v in test if v in known and v not in train))
  if not test:
    raise UserInputError(f'split {split!r} has no test video of {category!r} in {root}')
  return train, test


def _read_json(path: str, why: str):
  if not os.path.isfile(path):
    raise UserInputError(f'{path} not found ({why}); use --config.data.split=random or add the file')
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserInputError(f'{path} is not readable JSON ({type(e).__name__}: {e})') from None


def feature_streams(features: str) -> list[str]:
  streams = [s.strip() for s in features.split('+') if s.strip()]
  if not streams:
    raise UserInputError(f"data.features={features!r} is empty: use 'rgb', 'opt' or 'rgb+opt'")
  return streams


def load_video(root: str, vid: str, entry: dict, streams: list[str]) -> Video | None:
  """Features of one video (streams concatenated), or None when a stream file is absent."""
  parts = []
  for s in streams:
    path = os.path.join(root, 'video_features', f'{vid}_{s}.npy')
    if not os.path.isfile(path):
      return None
    try:
      arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise UserInputError(f'{path} is not a readable .npy file ({e}); re-extract it') from None
    if arr.ndim == 1:
      arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != len(entry['clip']):
      raise UserInputError(f'{path} has shape {arr.shape} but {vid} has {len(entry["clip"])} '
                           f'clips in {ANNOTATION}: one row per clip is required; re-extract it')
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
      raise UserInputError(f'{path} contains NaN or inf values; re-extract it')
    parts.append(arr)
  labels = np.asarray(entry['match'], np.float32)
  return Video(vid, entry['domain'], np.concatenate(parts, axis=1), labels)


def load_split_videos(root: str, anno: dict, ids: list[str], streams: list[str]) -> tuple[list[Video], list[str]]:
  videos, missing = [], []
  for vid in ids:
    v = load_video(root, vid, anno[vid], streams)
    if v is None:
      missing.append(vid)
    elif len(v.labels):
      videos.append(v)
  return videos, missing


def load_cross_category(data_cfg, *, need_target_train: bool = True) -> CrossCategoryData:
  """Loads source train, target train (labels hidden) and target test videos of `data_cfg`."""
  root = data_cfg.root
  anno = load_annotations(root)
  check_category(anno, data_cfg.source_category, 'source_category', root)
  check_category(anno, data_cfg.target_category, 'target_category', root)
  streams = feature_streams(data_cfg.features)
  src_train, _ = split_videos(root, anno, data_cfg.source_category, data_cfg.split, data_cfg.split_seed)
  tgt_train, tgt_test = split_videos(root, anno, data_cfg.target_category, data_cfg.split,
                                     data_cfg.split_seed)
  missing = []
  source, m = load_split_videos(root, anno, src_train, streams)
  missing += m
  target, m = (load_split_videos(root, anno, tgt_train, streams) if need_target_train else ([], []))
  missing += m
  test, m = load_split_videos(root, anno, tgt_test, streams)
  missing += m
  if missing:
    logging.warning('Skipping %d video(s) without %s features in %s: %s', len(set(missing)),
                    '+'.join(streams), os.path.join(root, 'video_features'),
                    ' '.join(sorted(set(missing))))
  for name, vids, cat in (('source training', source, data_cfg.source_category),
                          ('target test', test, data_cfg.target_category),
                          *((('target training', target, data_cfg.target_category),)
                            if need_target_train else ())):
    if not vids:
      raise UserInputError(f'no {name} video of {cat!r} has {"+".join(streams)} features in '
                           f'{os.path.join(root, "video_features")} (data.features={data_cfg.features!r})')
  dims = {v.features.shape[1] for v in source + target + test}
  if len(dims) != 1:
    raise UserInputError(f'feature files in {os.path.join(root, "video_features")} disagree on '
                         f'the feature dimension: {sorted(dims)}')
  # Target training labels never reach the trainer: it learns from them only as unlabeled sets.
  for v in target:
    v.labels = np.zeros_like(v.labels)
  return CrossCategoryData(source, target, test, dims.pop())
