"""ActivityNet v1.3 in its official layout, with the paper's five categories.

  <root>/activity_net.v1-3.min.json   {"taxonomy": [{nodeId, nodeName, parentId, parentName}],
                                       "database": {vid: {duration, subset,
                                                          annotations: [{segment: [s, e], label}]}}}
  <root>/video_features/<vid>_<stream>.npy  (or v_<vid>_<stream>.npy) [rows, d], row t
                                       covering seconds [t*c, (t+1)*c), c = data.clip_seconds
                                       (-1: 3.2 s, 16 frames sampled at 5 fps as SPEC says)

The categories are the first-level nodes under the taxonomy's root (eat & drink, personal
care, household, sport, social in v1.3), found by walking the tree. A video belongs to every
category one of its events' labels descends from. A segment's label for a category is its
coverage |segment ∩ event| / |segment| maximized over that category's events (SPEC), or with
`activitynet.label_rule=published` the published code's: the last event wins and the coverage
is cast to int (1 inside, 0 partial, -1 outside). Evaluation counts a label > 0 as positive.
Splits: `training` videos train, `validation` videos test.
"""
from __future__ import annotations

import json

import numpy as np
from absl import logging

from data_pipelines import datasets
from data_pipelines.store import open_store
from dlvhd_jax.errors import UserInputError

ANNOTATION = 'activity_net.v1-3.min.json'
DEFAULT_CLIP_SECONDS = 3.2  # 16 frames at 5 fps


def read(root) -> dict:
  store = datasets.as_store(root)
  path = store.where(ANNOTATION)
  if not store.isfile(ANNOTATION):
    raise UserInputError(f'{path} not found: point data.root at the folder with {ANNOTATION} '
                         'and video_features/')
  try:
    anno = json.loads(store.read_text(ANNOTATION))
  except (OSError, ValueError) as e:
    raise UserInputError(f'{path} is not readable JSON ({type(e).__name__}: {e})') from None
  if not isinstance(anno, dict) or not isinstance(anno.get('taxonomy'), list) or not isinstance(
      anno.get('database'), dict):
    raise UserInputError(f'{path} needs "taxonomy" (a list of nodes) and "database" (an object)')
  return anno


def first_level(taxonomy: list, where: str) -> dict[str, str]:
  """{node name: its first-level ancestor's name} for every node below the root."""
  try:
    by_id = {n['nodeId']: n for n in taxonomy}
    roots = [n for n in taxonomy if n.get('parentId') is None or n['parentId'] not in by_id]
  except (KeyError, TypeError):
    raise UserInputError(f'{where}: taxonomy nodes need nodeId, nodeName, parentId') from None
  if len(roots) != 1:
    raise UserInputError(f'{where}: the taxonomy must have exactly one root, found {len(roots)}')
  root_id = roots[0]['nodeId']
  out = {}
  for n in taxonomy:
    node, seen = n, set()
    while node['parentId'] in by_id and node['parentId'] != root_id:
      if node['nodeId'] in seen:
        raise UserInputError(f'{where}: the taxonomy has a cycle at {node["nodeName"]!r}')
      seen.add(node['nodeId'])
      node = by_id[node['parentId']]
    if n['nodeId'] != root_id:
      out[n['nodeName']] = node['nodeName']
  return out


def categories(anno: dict) -> list[str]:
  """The first-level taxonomy nodes (those that are their own first-level ancestor), in
  taxonomy order."""
  level = first_level(anno['taxonomy'], ANNOTATION)
  return [n['nodeName'] for n in anno['taxonomy'] if level.get(n['nodeName']) == n['nodeName']]


def list_categories(data_cfg) -> list[str]:
  return categories(read(open_store(data_cfg)))


def resolve_category(name: str, cats: list[str]) -> str | None:
  """A category by its full name or by a case-insensitive prefix naming one category only
  ('sport', 'household', 'eat', 'personal', 'social' in v1.3)."""
  if name in cats:
    return name
  hits = [c for c in cats if c.lower().startswith(name.strip().lower())]
  return hits[0] if len(hits) == 1 else None


def video_categories(entry: dict, level: dict) -> set[str]:
  return {level[a['label']] for a in entry.get('annotations', []) if a.get('label') in level}


def segment_labels(entry: dict, category: str, level: dict, num_segments: int, clip: float,
                   rule: str = 'spec') -> np.ndarray:
  """[num_segments] labels of one video for `category` (see the module docstring)."""
  starts = np.arange(num_segments) * clip
  ends = starts + clip
  events = [a['segment'] for a in entry.get('annotations', [])
            if level.get(a.get('label')) == category]
  if rule == 'spec':
    out = np.zeros(num_segments, np.float32)
    for s, e in events:
      cover = np.clip(np.minimum(ends, e) - np.maximum(starts, s), 0, None) / clip
      out = np.maximum(out, cover)
    return out.astype(np.float32)
  if rule == 'published':
    out = -np.ones(num_segments, np.float32)
    for s, e in events:  # the last event wins where events overlap
      cover = np.clip(np.minimum(ends, e) - np.maximum(starts, s), 0, None) / clip
      touched = cover > 0
      out[touched] = np.floor(cover[touched]).astype(np.float32)  # 1 inside, 0 partial
    return out
  raise UserInputError(f"activitynet.label_rule={rule!r}: use 'spec' or 'published'")


def _feature_key(store, vid: str, stream: str) -> str | None:
  """The id the features of `vid` are stored under: the id itself or v_<id>."""
  for key in (vid, f'v_{vid}'):
    if store.has_features(key, stream):
      return key
  return None


def load_cross_category(data_cfg, *, need_target_train: bool = True) -> datasets.CrossCategoryData:
  if data_cfg.get('split') == 'kfold':
    # Its subsets are the split; folds over thousands of videos would retrain for nothing.
    raise UserInputError('data.split=kfold: ActivityNet trains on its training subset and tests '
                         'on its validation subset; drop --config.data.split=kfold')
  root = open_store(data_cfg)
  anno = read(root)
  level = first_level(anno['taxonomy'], root.where(ANNOTATION))
  cats = categories(anno)
  chosen = {}
  for field in ('source_category', 'target_category'):
    chosen[field] = resolve_category(data_cfg[field], cats)
    if chosen[field] is None:
      raise UserInputError(f'data.{field}={data_cfg[field]!r} is not a first-level ActivityNet '
                           f'category of {root.where(ANNOTATION)} (nor a prefix of one '
                           f'only); categories: {cats}')
  source_cat, target_cat = chosen['source_category'], chosen['target_category']
  clip = float(data_cfg.get('clip_seconds', -1))
  clip = DEFAULT_CLIP_SECONDS if clip <= 0 else clip
  rule = data_cfg.get('activitynet_label_rule', 'spec')
  streams = datasets.feature_streams(data_cfg.features)
  db = anno['database']
  dims, missing = {}, []

  def ids(category, subset):
    return sorted(v for v, e in db.items() if e.get('subset') == subset
                  and category in video_categories(e, level))

  def load(vids, category):
    out = []
    for vid in vids:
      keys = [_feature_key(root, vid, s) for s in streams]
      if any(k is None for k in keys):
        missing.append(vid)
        continue
      feats = datasets.load_timed_streams(root, dict(zip(streams, keys)), vid, db[vid]['duration'],
                                    clip, dims)
      labels = segment_labels(db[vid], category, level, len(feats), clip, rule)
      out.append(datasets.Video(vid, category, feats, labels))
    return out

  source = load(ids(source_cat, 'training'), source_cat)
  target = load(ids(target_cat, 'training'), target_cat) if need_target_train else []
  test = load(ids(target_cat, 'validation'), target_cat)
  if missing:
    logging.warning('Skipping videos: %d without %s features in %s: %s', len(missing),
                    '+'.join(streams), root.where('video_features'),
                    ' '.join(sorted(set(missing))[:50]))
  datasets.require_videos(root, data_cfg, streams, (source, source_cat), (test, target_cat),
                    (target, target_cat) if need_target_train else None)
  source, source_val = datasets.carve_validation(source, float(data_cfg.get('val_fraction', 0.0)),
                                           int(data_cfg.split_seed) + 1, source_cat)
  for v in target:
    v.labels = np.zeros_like(v.labels)
  return datasets.CrossCategoryData(source, target, test, sum(dims.values()), source_val)
