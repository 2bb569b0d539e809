"""TFDS builds of the datasets, and the store that trains from them (`--config.data.source=tfds`).

  python -m data_pipelines.build_tfds --dataset=<youtube_highlights|tvsum|activitynet> \
      --manual_dir=<the dataset's folder> --data_dir=<out>

A build is a TFDS `GeneratorBasedBuilder` (`dlvhd_<dataset>`, one per dataset) that reads the
user's files from `manual_dir` and writes them as `array_record`: one record per feature file
(`key` = '<vid>_<stream>', `npy` = the file's bytes, so the arrays come back bit for bit), and
the annotation and split files (their text and sha256) in the build's metadata. Reading back
uses `tfds.data_source` (random access, numpy out; TensorFlow is neither needed nor
installed). The dataset modules read a build through `TfdsStore` exactly as they read the
folder, so categories, splits and feature streams come from the build, a TFDS run needs no
`data.root`, and its numbers equal the files' (tests/test_tfds.py).
"""
from __future__ import annotations

import argparse
import fnmatch
import io
import os
import tempfile
import types

import numpy as np

from dlvhd_jax.files import sha256
from dlvhd_jax.errors import UserInputError

# The annotation / split files each dataset reads (relative to its root; glob patterns).
FILES = {
    'youtube_highlights': ('youtube_anno.json', 'splits/*.json'),
    'tvsum': ('ydata-tvsum50-anno.tsv', 'ydata-tvsum50-info.tsv', 'tvsum_anno.json',
              'splits/*.json'),
    'activitynet': ('activity_net.v1-3.min.json',),
}
FEATURES = 'video_features'


def builder_name(dataset: str) -> str:
  return f'dlvhd_{dataset}'


def _source_files(root: str, dataset: str) -> list[str]:
  out = []
  for dirpath, _, names in os.walk(root):
    for n in names:
      rel = os.path.relpath(os.path.join(dirpath, n), root).replace(os.sep, '/')
      if any(fnmatch.fnmatch(rel, p) for p in FILES[dataset]):
        out.append(rel)
  return sorted(out)


def _feature_files(root: str) -> list[str]:
  folder = os.path.join(root, FEATURES)
  if not os.path.isdir(folder):
    return []
  return sorted(n for n in os.listdir(folder) if n.endswith('.npy'))


def _builder_class(dataset: str):
  """The TFDS builder class of `dataset` (created on first use: importing TFDS is slow)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = builder_name(dataset)
  if name in _CLASSES:
    return _CLASSES[name]

  class DlvhdFeatureBank(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Annotation files as metadata, one record per feature file.'}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (f'Pass --manual_dir=<the {dataset} folder in the layout '
                                    'docs/data.md describes>.')

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          description=f'{dataset} for dlvhd-jax: annotation files and feature arrays.',
          features=tfds.features.FeaturesDict({
              'key': tfds.features.Text(),
              'npy': tfds.features.Tensor(shape=(), dtype=np.object_),
          }),
          metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
      root = dl_manager.manual_dir
      files = _source_files(os.fspath(root), dataset)
      if not files:
        raise UserInputError(f'--manual_dir={root} holds none of {", ".join(FILES[dataset])}: '
                             f'point it at the {dataset} folder')
      self.info.metadata['files'] = {
          rel: open(os.path.join(root, rel), encoding='utf-8').read() for rel in files}
      self.info.metadata['sha256'] = {
          rel: sha256(os.path.join(root, rel)) for rel in files}
      self.info.metadata['dataset'] = dataset
      return {'videos': self._generate_examples(os.fspath(root))}

    def _generate_examples(self, root):
      for name in _feature_files(root):
        with open(os.path.join(root, FEATURES, name), 'rb') as f:
          data = f.read()
        key = name[:-len('.npy')]
        yield key, {'key': key, 'npy': data}

  # Named dlvhd_<dataset> (TFDS derives the build's folder name from the class name).
  camel = ''.join(p.capitalize() for p in name.split('_'))
  cls = types.new_class(camel, (DlvhdFeatureBank,), {'skip_registration': True})
  _CLASSES[name] = cls
  return cls


_CLASSES: dict = {}


def build(dataset: str, manual_dir: str, data_dir: str) -> str:
  """Builds (or finds) the TFDS copy of `manual_dir`; -> the build's folder."""
  if dataset not in FILES:
    raise UserInputError(f'--dataset={dataset!r}: use one of {sorted(FILES)}')
  if not os.path.isdir(manual_dir):
    raise UserInputError(f'--manual_dir={manual_dir} is not a folder')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # A builder without a finished build makes an empty mkdtemp('tfds') folder for metadata it
  # would fetch from GCS (disabled) and never removes it: keep it in a folder we remove.
  with tempfile.TemporaryDirectory(prefix='dlvhd_tfds_') as scratch:
    before, tempfile.tempdir = tempfile.tempdir, scratch
    try:
      builder = _builder_class(dataset)(data_dir=data_dir, file_format='array_record')
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir))
    finally:
      tempfile.tempdir = before
  return builder.data_dir


class TfdsStore:
  """A dataset read from its TFDS build (data_pipelines/store.py's interface)."""

  def __init__(self, dataset: str, data_dir: str):
    if dataset not in FILES:
      raise UserInputError(f'config.data.source=tfds: data.name={dataset!r} has no TFDS build; '
                           f'builds exist for {sorted(FILES)}')
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    name = builder_name(dataset)
    data_dir = data_dir or os.path.expanduser('~/tensorflow_datasets')
    folder = os.path.join(data_dir, name)
    versions = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    if not versions:
      raise UserInputError(f'no TFDS build of {dataset} in {data_dir}: run python -m '
                           f'data_pipelines.build_tfds --dataset={dataset} --manual_dir=<files> '
                           f'--data_dir={data_dir}, or set data.tfds_data_dir')
    self.builder = tfds.builder_from_directory(os.path.join(folder, versions[-1]))
    self.label = f'tfds:{name}/{versions[-1]}'
    meta = self.builder.info.metadata
    self.files = dict(meta['files'])
    source = self.builder.as_data_source()['videos']
    # Features by key, decoded on demand (one pass over the records reads the keys).
    self._records = {}
    for i in range(len(source)):
      rec = source[i]
      key = rec['key'].decode() if isinstance(rec['key'], bytes) else str(rec['key'])
      self._records[key] = rec['npy']

  def where(self, rel: str) -> str:
    return f'{self.label}/{rel}'

  def exists(self) -> bool:
    return True

  def isfile(self, rel: str) -> bool:
    return rel.replace(os.sep, '/') in self.files

  def read_text(self, rel: str) -> str:
    try:
      return self.files[rel.replace(os.sep, '/')]
    except KeyError:
      raise OSError(2, 'not in the TFDS build', self.where(rel)) from None

  def feature_where(self, vid: str, stream: str) -> str:
    return self.where(f'{FEATURES}/{vid}_{stream}.npy')

  def has_features(self, vid: str, stream: str) -> bool:
    return f'{vid}_{stream}' in self._records

  def streams(self) -> set[str]:
    return {k.rpartition('_')[2] for k in self._records if '_' in k}

  def load_features(self, vid: str, stream: str):
    data = self._records[f'{vid}_{stream}']
    try:
      return np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      raise UserInputError(f'{self.feature_where(vid, stream)} is not a readable .npy array '
                           f'({type(e).__name__}: {e}); rebuild it') from None

  def feature_rows(self, vid: str, stream: str) -> int | None:
    try:
      return int(self.load_features(vid, stream).shape[0])
    except (UserInputError, IndexError):
      return None


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description='Build the TFDS copy of a dataset folder.')
  ap.add_argument('--dataset', required=True, choices=sorted(FILES))
  ap.add_argument('--manual_dir', required=True, help='the dataset folder (annotation files and '
                  'video_features/)')
  ap.add_argument('--data_dir', required=True, help='where TFDS writes the build')
  args = ap.parse_args(argv)
  try:
    path = build(args.dataset, args.manual_dir, args.data_dir)
  except UserInputError as e:
    print(f'error: {e}')
    return 2
  print(f'built {builder_name(args.dataset)} in {path}; train from it with '
        f'--config.data.name={args.dataset} --config.data.source=tfds '
        f'--config.data.tfds_data_dir={args.data_dir}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
