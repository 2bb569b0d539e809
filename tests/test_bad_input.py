"""Every user mistake in data or config gives a one-line error naming the file/field."""
import json
import os

import ml_collections
import numpy as np
import pytest

from conftest import run_launch, tiny_overrides
from data_pipelines import synthetic, youtube_highlights
from dlvhd_jax.errors import UserInputError


@pytest.fixture
def root(tmp_path):
  return synthetic.write_synthetic_dataset(str(tmp_path / 'data'), videos_per_category=6,
                                           min_len=4, max_len=12, dim=16)


def data_cfg(root, **kw):
  c = dict(root=root, source_category='diving', target_category='climbing', features='rgb+opt',
           split='umt', split_seed=42)
  c.update(kw)
  return ml_collections.ConfigDict(c)


def load(root, **kw):
  return youtube_highlights.load_cross_category(data_cfg(root, **kw))


def test_valid_dataset_loads(root):
  data = load(root)
  assert data.feature_dim == 16
  assert len(data.source_train) == 4 and len(data.target_test) == 2
  # Target training labels are hidden from the trainer.
  assert all((v.labels == 0).all() for v in data.target_train)
  assert any((v.labels > 0).any() for v in data.target_test)


@pytest.mark.parametrize('split', ['umt', 'official', 'random'])
def test_splits_are_disjoint_and_cover_the_category(root, split):
  anno = youtube_highlights.load_annotations(root)
  train, test = youtube_highlights.split_videos(root, anno, 'diving', split, 42)
  assert not set(train) & set(test)
  assert len(train) + len(test) == 6


def expect(match, fn):
  with pytest.raises(UserInputError) as e:
    fn()
  msg = str(e.value)
  assert '\n' not in msg
  assert match in msg, msg
  return msg


def test_missing_root(tmp_path):
  expect(str(tmp_path / 'nope'), lambda: load(str(tmp_path / 'nope')))


def test_unknown_category_lists_the_domains(root):
  msg = expect('data.target_category', lambda: load(root, target_category='curling'))
  assert 'climbing' in msg and 'youtube_anno.json' in msg


def test_feature_rows_differ_from_clip_count(root):
  path = os.path.join(root, 'video_features', 'diving_000_rgb.npy')
  np.save(path, np.load(path)[:-1])
  expect('diving_000_rgb.npy', lambda: load(root))


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_nan_or_inf_features(root, bad):
  path = os.path.join(root, 'video_features', 'climbing_005_opt.npy')
  arr = np.load(path)
  arr[1, 2] = bad
  np.save(path, arr)
  expect('climbing_005_opt.npy', lambda: load(root))


def test_unreadable_json(root):
  with open(os.path.join(root, 'youtube_anno.json'), 'w') as f:
    f.write('{"diving_000": {"domain": ')
  expect('youtube_anno.json', lambda: load(root))


def test_unreadable_feature_file(root):
  with open(os.path.join(root, 'video_features', 'diving_001_rgb.npy'), 'wb') as f:
    f.write(b'not numpy')
  expect('diving_001_rgb.npy', lambda: load(root))


def test_videos_without_features_are_skipped_with_one_warning(root, caplog):
  for s in ('rgb', 'opt'):
    os.remove(os.path.join(root, 'video_features', f'diving_002_{s}.npy'))
  os.remove(os.path.join(root, 'video_features', 'climbing_005_rgb.npy'))
  with caplog.at_level('WARNING'):
    data = load(root)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert len(warnings) == 1
  assert 'diving_002' in warnings[0] and 'climbing_005' in warnings[0]
  assert 'diving_002' not in [v.vid for v in data.source_train]
  assert 'climbing_005' not in [v.vid for v in data.target_test]


def test_unknown_feature_stream_names_the_folder(root):
  expect('data.features', lambda: load(root, features='c3d'))


def test_bad_split_name(root):
  expect('data.split', lambda: load(root, split='tvsum'))


@pytest.mark.parametrize('override,field', [
    ('--config.data.root=/nonexistent/folder', '/nonexistent/folder'),
    ('--config.method=bogus', 'config.method'),
    ('--config.sampling.mode=everything', 'sampling.mode'),
    ('--config.train.batch_size=3', 'train.batch_size'),
])
def test_launch_prints_one_line_and_exits_2(tmp_path, root, override, field):
  args = ['--config=configs/youtube_surfing.py', f'--workdir={tmp_path / "wd"}',
          f'--config.data.root={root}', '--config.data.source_category=diving',
          '--config.data.target_category=climbing', *tiny_overrides(), override]
  proc = run_launch(args, devices=2 if 'batch_size' in override else None)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and field in lines[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'wd' / 'results.json').exists()
