"""Where a dataset's files come from (`config.data.source`): a folder (`files`, the default) or
a TFDS build of that folder (`tfds`, data_pipelines/build_tfds.py). The dataset modules read
annotation files and feature arrays only through a store, so both give the same videos,
labels and numbers.

A store speaks in paths relative to the dataset root: 'youtube_anno.json',
'splits/umt_splits.json', and features by (video id, stream) for 'video_features/<vid>_<stream>.npy'.
"""
from __future__ import annotations

import os

import numpy as np

from dlvhd_jax.errors import UserInputError

FEATURES = 'video_features'


def feature_name(vid: str, stream: str) -> str:
  return f'{vid}_{stream}'


class FileStore:
  """The dataset's own folder."""

  def __init__(self, root: str):
    self.root = root

  def where(self, rel: str) -> str:
    """How a message names the file."""
    return os.path.join(self.root, rel)

  def exists(self) -> bool:
    return bool(self.root) and os.path.isdir(self.root)

  def isfile(self, rel: str) -> bool:
    return os.path.isfile(os.path.join(self.root, rel))

  def read_text(self, rel: str) -> str:
    """The file's text; OSError / UnicodeDecodeError as the file system gives them."""
    with open(os.path.join(self.root, rel), encoding='utf-8') as f:
      return f.read()

  def feature_where(self, vid: str, stream: str) -> str:
    return os.path.join(self.root, FEATURES, feature_name(vid, stream) + '.npy')

  def has_features(self, vid: str, stream: str) -> bool:
    return os.path.isfile(self.feature_where(vid, stream))

  def streams(self) -> set[str]:
    """The stream names the feature files carry (`<vid>_<stream>.npy`)."""
    try:
      names = os.listdir(os.path.join(self.root, FEATURES))
    except OSError:
      return set()
    return {n[:-4].rpartition('_')[2] for n in names if n.endswith('.npy') and '_' in n}

  def feature_rows(self, vid: str, stream: str) -> int | None:
    """Rows of the feature array without reading it (None if unreadable)."""
    try:
      return int(np.load(self.feature_where(vid, stream), mmap_mode='r').shape[0])
    except (OSError, ValueError, EOFError, IndexError):
      return None

  def load_features(self, vid: str, stream: str):
    """The stored array (unchecked); a file that is not .npy raises a one-line error."""
    path = self.feature_where(vid, stream)
    try:
      return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      why = 'it is empty' if os.path.getsize(path) == 0 else f'{type(e).__name__}: {e}'
      raise UserInputError(f'{path} is not a readable .npy file ({why}); re-extract it') from None


def open_store(data_cfg):
  """The store of `data_cfg` (data.source: files | tfds)."""
  source = data_cfg.get('source', 'files')
  if source == 'files':
    return FileStore(data_cfg.root)
  if source == 'tfds':
    from data_pipelines import build_tfds  # pylint: disable=g-import-not-at-top
    return build_tfds.TfdsStore(data_cfg.name, data_cfg.get('tfds_data_dir', ''))
  raise UserInputError(f"config.data.source={source!r}: use 'files' or 'tfds'")
