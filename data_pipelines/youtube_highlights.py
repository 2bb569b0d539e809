"""YouTube Highlights in the layout of the community's public feature release (UMT, UniVTG).

    <root>/youtube_anno.json                  {vid: {"domain", "clip", "match", ...}}
    <root>/video_features/<vid>_<name>.npy    [n_clips, d] per feature stream (rgb, opt, c3d, ...)
    <root>/splits/umt_splits.json             {domain: {"train": [...], "val": [...]}}
    <root>/splits/<domain>.json               the dataset authors' Trai*/Test* lists

Categories are whatever `domain` values the annotation holds. Labels are the `match` values
(1 highlight, -1 not, 0 borderline); training reads a borderline clip as
`data.borderline_label` (default -1, SPEC: non-highlight), evaluation counts `match > 0` as
positive.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from absl import logging

from data_pipelines.datasets import (  # pylint: disable=unused-import (re-exported)
    CrossCategoryData, Video, as_store, carve_validation, feature_streams, kfold_split,
    load_features, read_json, require_videos)
from data_pipelines.store import FileStore, open_store
from dlvhd_jax.errors import UserInputError

ANNOTATION = 'youtube_anno.json'


def _no_duplicate_keys(pairs):
  keys = [k for k, _ in pairs]
  dup = sorted({k for k in keys if keys.count(k) > 1})
  if dup:
    raise _DuplicateKey(dup[0])
  return dict(pairs)


class _DuplicateKey(ValueError):
  pass


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _check_entry(path: str, vid: str, entry) -> None:
  """One-line error unless `entry` is {"domain": str, "clip": [[f0, f1], ...], "match": [num, ...]}."""
  if not isinstance(entry, dict):
    raise UserInputError(f'{path}: video {vid!r} must map to an object with "domain", "clip" and '
                         f'"match", not {type(entry).__name__}')
  missing = [k for k in ('domain', 'clip', 'match') if k not in entry]
  if missing:
    raise UserInputError(f'{path}: video {vid!r} lacks field(s) {missing}')
  if not isinstance(entry['domain'], str) or not entry['domain'].strip():
    raise UserInputError(f'{path}: video {vid!r} has "domain" {entry["domain"]!r}; it must be a '
                         'non-empty category name')
  clips, match = entry['clip'], entry['match']
  if not isinstance(clips, list) or not all(
      isinstance(c, (list, tuple)) and len(c) == 2 and all(_is_number(x) for x in c) for c in clips):
    raise UserInputError(f'{path}: video {vid!r} has a "clip" that is not a list of '
                         '[start_frame, end_frame] number pairs')
  if not isinstance(match, list):
    raise UserInputError(f'{path}: video {vid!r} has "match" of type {type(match).__name__}; '
                         'it must be a list with one number (1, 0 or -1) per clip')
  bad = [m for m in match if not _is_number(m)]
  if bad:
    raise UserInputError(f'{path}: video {vid!r} has non-numeric "match" entries such as '
                         f'{bad[0]!r}; use 1 (highlight), 0 (borderline) or -1 per clip')
  if len(clips) != len(match):
    raise UserInputError(f'{path}: video {vid!r} has {len(clips)} clips but {len(match)} '
                         'match labels; there must be one label per clip')


def load_annotations(root) -> dict:
  store = as_store(root)
  if isinstance(store, FileStore):
    if not store.root:
      raise UserInputError('data.root is empty: pass --config.data.root=<folder holding '
                           f'{ANNOTATION} and video_features/>')
    if not store.exists():
      raise UserInputError(f'data.root={store.root} does not exist: pass --config.data.root=<folder '
                           f'holding {ANNOTATION} and video_features/>')
  path = store.where(ANNOTATION)
  if not store.isfile(ANNOTATION):
    raise UserInputError(f'{path} not found: data.root must hold {ANNOTATION} (the UMT layout)')
  try:
    anno = json.loads(store.read_text(ANNOTATION), object_pairs_hook=_no_duplicate_keys)
  except _DuplicateKey as e:
    raise UserInputError(f'{path} lists the key {e} twice; each video id (and field) must '
                         'appear once') from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserInputError(f'{path} is not readable JSON ({type(e).__name__}: {e}); '
                         're-download or regenerate it') from None
  if not isinstance(anno, dict) or not anno:
    raise UserInputError(f'{path} must be a non-empty object {{video_id: {{"domain", "clip", '
                         '"match", ...}}')
  for vid, entry in anno.items():
    _check_entry(path, vid, entry)
  return anno


def categories(anno: dict) -> list[str]:
  return sorted({e['domain'] for e in anno.values()})


def list_categories(data_cfg) -> list[str]:
  return categories(load_annotations(open_store(data_cfg)))


def check_category(anno: dict, category: str, field: str, root) -> None:
  if category not in categories(anno):
    raise UserInputError(f'data.{field}={category!r} is not a domain of '
                         f'{as_store(root).where(ANNOTATION)}; domains there: {categories(anno)}')


def split_videos(root, anno: dict, category: str, split: str, seed: int,
                 unknown: set | None = None, fold: int = 0,
                 num_folds: int = 5) -> tuple[list[str], list[str]]:
  """Train and test video ids of one category under `split` (umt | official | random | kfold:
  fold `fold` of `num_folds` over the category's annotated videos, datasets.kfold_split).

  Ids a split file lists but the annotation lacks (the public files have a few) are left
  out and added to `unknown`; an id of another category is an error.
  """
  store = as_store(root)
  ids = sorted(v for v, e in anno.items() if e['domain'] == category)
  path = store.where(ANNOTATION)
  if split == 'random':
    # The paper's code: 70/30 per category at random with a seed.
    perm = np.random.RandomState(seed).permutation(len(ids))
    n_train = int(round(0.7 * len(ids)))
    train, test = [ids[i] for i in sorted(perm[:n_train])], [ids[i] for i in sorted(perm[n_train:])]
  elif split == 'kfold':
    train, test = kfold_split(ids, category, fold, num_folds)
  else:
    if split == 'umt':
      path = store.where(os.path.join('splits', 'umt_splits.json'))
      table = read_json(store, os.path.join('splits', 'umt_splits.json'), 'data.split=umt')
      entry = table.get(category) if isinstance(table, dict) else None
      if not isinstance(entry, dict):
        raise UserInputError(f'{path} has no entry {{"train": [...], "val": [...]}} for '
                             f'{category!r}: add one or use --config.data.split=random')
      train, test = entry.get('train', []), entry.get('val', [])
    elif split == 'official':
      path = store.where(os.path.join('splits', f'{category}.json'))
      lists = read_json(store, os.path.join('splits', f'{category}.json'), 'data.split=official')
      try:
        train = [v for ids_, name in lists if name.startswith('Trai') for v in ids_]
        test = [v for ids_, name in lists if name.startswith('Test') for v in ids_]
      except (TypeError, ValueError, AttributeError):
        raise UserInputError(f'{path} is not a list of [[ids], "Trai*"|"Test*"] pairs') from None
    else:
      raise UserInputError(f"data.split={split!r} is not one of 'umt', 'official', 'random', "
                           "'kfold'")
    if not all(isinstance(v, str) for v in [*train, *test]):
      raise UserInputError(f'{path}: the video ids of {category!r} must be strings')
    foreign = [v for v in [*train, *test] if v in anno and anno[v]['domain'] != category]
    if foreign:
      raise UserInputError(f'{path} lists {foreign[0]!r} under {category!r} but {ANNOTATION} '
                           f'says its domain is {anno[foreign[0]]["domain"]!r}; fix the split file')
    if unknown is not None:
      unknown.update(v for v in [*train, *test] if v not in anno)
    known = set(ids)
    train = sorted(dict.fromkeys(v for v in train if v in known))
    test = sorted(dict.fromkeys(v for v in test if v in known and v not in train))
  for name, part in (('training', train), ('test', test)):
    if not part:
      raise UserInputError(f'{path} gives no {name} video of {category!r} that {ANNOTATION} '
                           f'annotates (split {split!r}); add videos or use another data.split')
  return train, test


def load_video(root, vid: str, entry: dict, streams: list[str],
               stream_dims: dict | None = None) -> Video | None:
  """Features of one video (streams concatenated), or None when a stream file is absent.

  `stream_dims` ({stream: dim}, filled by the first video read) makes a file whose width
  differs from the other videos' files of its stream a one-line error naming it.
  """
  store = as_store(root)
  parts = []
  for s in streams:
    if not store.has_features(vid, s):
      return None
    path = store.feature_where(vid, s)
    arr = load_features(store, vid, s, len(entry['clip']), ANNOTATION)
    if stream_dims is not None:
      want = stream_dims.setdefault(s, arr.shape[1])
      if arr.shape[1] != want:
        raise UserInputError(f'{path} has {arr.shape[1]} features per clip but the other '
                             f'{s!r} files have {want}; re-extract it')
    parts.append(arr)
  labels = np.asarray(entry['match'], np.float32)
  return Video(vid, entry['domain'], np.concatenate(parts, axis=1), labels)


@dataclasses.dataclass
class Skipped:
  """Videos a run leaves out, reported together in one warning line."""
  no_features: set = dataclasses.field(default_factory=set)
  empty: set = dataclasses.field(default_factory=set)
  unknown: set = dataclasses.field(default_factory=set)

  def warn(self, streams: list[str], root) -> None:
    parts = []
    if self.no_features:
      parts.append(f'{len(self.no_features)} without {"+".join(streams)} features in '
                   f'{as_store(root).where("video_features")}: {" ".join(sorted(self.no_features))}')
    if self.empty:
      parts.append(f'{len(self.empty)} with 0 clips in {ANNOTATION}: {" ".join(sorted(self.empty))}')
    if self.unknown:
      parts.append(f'{len(self.unknown)} listed in the split but not in {ANNOTATION}: '
                   f'{" ".join(sorted(self.unknown))}')
    if parts:
      logging.warning('Skipping videos: %s', '; '.join(parts))


def load_split_videos(root, anno: dict, ids: list[str], streams: list[str],
                      skipped: Skipped, stream_dims: dict | None = None) -> list[Video]:
  videos = []
  for vid in ids:
    if not anno[vid]['clip']:
      skipped.empty.add(vid)
      continue
    v = load_video(root, vid, anno[vid], streams, stream_dims)
    if v is None:
      skipped.no_features.add(vid)
    else:
      videos.append(v)
  return videos


def load_cross_category(data_cfg, *, need_target_train: bool = True) -> CrossCategoryData:
  """Loads source train, target train (labels hidden) and target test videos of `data_cfg`."""
  root = open_store(data_cfg)
  anno = load_annotations(root)
  check_category(anno, data_cfg.source_category, 'source_category', root)
  check_category(anno, data_cfg.target_category, 'target_category', root)
  streams = feature_streams(data_cfg.features)
  skipped, dims = Skipped(), {}
  folds = {'fold': int(data_cfg.get('fold', 0)), 'num_folds': int(data_cfg.get('num_folds', 5))}
  src_train, _ = split_videos(root, anno, data_cfg.source_category, data_cfg.split,
                              data_cfg.split_seed, skipped.unknown, **folds)
  tgt_train, tgt_test = split_videos(root, anno, data_cfg.target_category, data_cfg.split,
                                     data_cfg.split_seed, skipped.unknown, **folds)
  source = load_split_videos(root, anno, src_train, streams, skipped, dims)
  target = (load_split_videos(root, anno, tgt_train, streams, skipped, dims)
            if need_target_train else [])
  test = load_split_videos(root, anno, tgt_test, streams, skipped, dims)
  skipped.warn(streams, root)
  require_videos(root, data_cfg, streams, (source, data_cfg.source_category),
                 (test, data_cfg.target_category),
                 (target, data_cfg.target_category) if need_target_train else None)
  # Borderline clips (match 0) are trained on as data.borderline_label (SPEC: non-highlight,
  # -1); test labels stay as annotated (evaluation counts match > 0 as positive).
  borderline = float(data_cfg.get('borderline_label', -1.0))
  for v in source:
    v.labels = np.where(v.labels == 0, borderline, v.labels).astype(np.float32)
  # Validation videos keep their annotated labels: they are scored like test videos.
  source, source_val = carve_validation(source, float(data_cfg.get('val_fraction', 0.0)),
                                        int(data_cfg.split_seed) + 1, data_cfg.source_category)
  for v in source_val:
    v.labels = np.asarray(anno[v.vid]['match'], np.float32)
  # Target training labels never reach the trainer: it learns from them only as unlabeled sets.
  for v in target:
    v.labels = np.zeros_like(v.labels)
  return CrossCategoryData(source, target, test, sum(dims.values()), source_val)
