"""Every user mistake in data or config gives a one-line error naming the file/field.

The malformed-input suite runs launch.py's `main(argv)` in this process (the code path of
a real launch minus interpreter start-up, so 60-odd cases stay cheap) and a few cases as
real subprocesses; each asserts exit code 2, exactly one stderr line that names the file
or field, no traceback, and nothing written into the workdir.
"""
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


def test_kfold_split_tests_every_video_of_a_category_once(root):
  anno = youtube_highlights.load_annotations(root)
  ids = sorted(v for v, e in anno.items() if e['domain'] == 'climbing')
  tested = []
  for fold in range(4):
    data = load(root, split='kfold', fold=fold, num_folds=4)
    test = [v.vid for v in data.target_test]
    assert test == ids[fold::4]  # video i tests in fold i mod K
    assert sorted(test + [v.vid for v in data.target_train]) == ids
    assert len(data.source_train) == 6 - len(ids[fold::4])
    tested += test
  assert sorted(tested) == ids
  for kw, words in (({'fold': 4, 'num_folds': 4}, 'data.fold=4'),
                    ({'fold': 0, 'num_folds': 7}, "'diving' has 6 videos"),
                    ({'fold': 0, 'num_folds': 1}, '2 <= num_folds <= 6')):
    expect(words, lambda kw=kw: load(root, split='kfold', **kw))


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


def test_skipped_videos_are_listed_in_one_warning(root, caplog):
  """Videos without features, with 0 clips, or listed in the split but not annotated."""
  for s in ('rgb', 'opt'):
    os.remove(os.path.join(root, 'video_features', f'diving_002_{s}.npy'))
  os.remove(os.path.join(root, 'video_features', 'climbing_005_rgb.npy'))
  path = os.path.join(root, 'youtube_anno.json')
  anno = json.load(open(path))
  anno['diving_003']['clip'], anno['diving_003']['match'] = [], []
  json.dump(anno, open(path, 'w'))
  split_path = os.path.join(root, 'splits', 'umt_splits.json')
  splits = json.load(open(split_path))
  splits['diving']['train'].append('gone_video')
  json.dump(splits, open(split_path, 'w'))
  with caplog.at_level('WARNING'):
    data = load(root)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert len(warnings) == 1 and '\n' not in warnings[0]
  for vid in ('diving_002', 'climbing_005', 'diving_003', 'gone_video'):
    assert vid in warnings[0]
  assert '0 clips' in warnings[0]
  kept = [v.vid for v in data.source_train + data.target_test]
  assert not {'diving_002', 'diving_003', 'climbing_005'} & set(kept)


def test_unknown_feature_stream_names_the_folder(root):
  expect('data.features', lambda: load(root, features='c3d'))


def test_a_stream_the_files_lack_names_the_streams_they_hold(root):
  for name in os.listdir(os.path.join(root, 'video_features')):
    if name.endswith('_opt.npy'):
      os.remove(os.path.join(root, 'video_features', name))
  with pytest.raises(UserInputError, match=r"hold the stream\(s\) \['rgb'\]: set "
                     r'--config.data.features=rgb \(or some of them\)'):
    load(root)
  assert len(load(root, features='rgb').source_train) > 0


def test_bad_split_name(root):
  expect('data.split', lambda: load(root, split='tvsum'))



# ------------------------------------------------------------------ the malformed-input suite
# Each case: (id, how it breaks the dataset or the command, text the error line must hold).


def _edit_anno(fn):
  def apply(root):
    path = os.path.join(root, 'youtube_anno.json')
    anno = json.load(open(path))
    fn(anno)
    json.dump(anno, open(path, 'w'))
    return path
  return apply


def _set(vid, key, value):
  return _edit_anno(lambda a: a[vid].__setitem__(key, value))


def _drop(vid, key):
  return _edit_anno(lambda a: a[vid].pop(key))


def _raw_anno(text_fn):
  def apply(root):
    path = os.path.join(root, 'youtube_anno.json')
    text = open(path).read()
    with open(path, 'w') as f:
      f.write(text_fn(text))
  return apply


def _duplicate_id(text):
  entry = json.dumps(json.loads(text)['diving_000'])
  return text.replace('{', '{"diving_000": ' + entry + ', ', 1)


def _feature(vid, stream, fn):
  def apply(root):
    path = os.path.join(root, 'video_features', f'{vid}_{stream}.npy')
    fn(path)
  return apply


def _save(make):
  return lambda path: np.save(path, make(np.load(path)), allow_pickle=True)


def _write_bytes(make):
  def apply(path):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
      f.write(make(data))
  return apply


def _nan(a):
  a = a.astype(np.float32)
  a[1, 0] = np.nan
  return a


def _inf(a):
  a = a.astype(np.float32)
  a[0, 3] = np.inf
  return a


def _split(fn):
  def apply(root):
    path = os.path.join(root, 'splits', 'umt_splits.json')
    table = json.load(open(path))
    fn(table)
    json.dump(table, open(path, 'w'))
  return apply


def _put(d, key, value):
  d[key] = value


DATA_CASES = [
    ('anno-missing-match', _drop('diving_001', 'match'), 'youtube_anno.json'),
    ('anno-missing-domain', _drop('climbing_004', 'domain'), 'youtube_anno.json'),
    ('anno-missing-clip', _drop('diving_001', 'clip'), 'youtube_anno.json'),
    ('anno-match-is-string', _set('diving_001', 'match', '1,0,-1'), 'youtube_anno.json'),
    ('anno-clip-is-object', _set('diving_001', 'clip', {'a': 1}), 'youtube_anno.json'),
    ('anno-clip-not-pairs', _set('diving_001', 'clip', [1, 2, 3]), 'youtube_anno.json'),
    ('anno-entry-is-list', _edit_anno(lambda a: _put(a, 'diving_001', [1, 2])), 'youtube_anno.json'),
    ('anno-non-numeric-match', _edit_anno(lambda a: a['diving_001']['match'].__setitem__(0, 'yes')),
     'youtube_anno.json'),
    ('anno-clip-label-mismatch', _edit_anno(lambda a: a['diving_001']['match'].pop()),
     'youtube_anno.json'),
    ('anno-domain-not-string', _set('diving_001', 'domain', 7), 'youtube_anno.json'),
    ('anno-duplicate-id', _raw_anno(_duplicate_id), 'youtube_anno.json'),
    ('anno-truncated-json', _raw_anno(lambda t: t[:len(t) // 2]), 'youtube_anno.json'),
    ('anno-top-level-list', _raw_anno(lambda t: '[1, 2]'), 'youtube_anno.json'),
    ('anno-missing-file', lambda r: os.remove(os.path.join(r, 'youtube_anno.json')),
     'youtube_anno.json'),
    ('features-wrong-row-count', _feature('diving_000', 'rgb', _save(lambda a: a[:-1])),
     'diving_000_rgb.npy'),
    ('features-wrong-dim-between-videos', _feature('diving_001', 'opt', _save(lambda a: a[:, :3])),
     'diving_001_opt.npy'),
    ('features-nan', _feature('climbing_005', 'opt', _save(_nan)), 'climbing_005_opt.npy'),
    ('features-inf', _feature('diving_000', 'rgb', _save(_inf)), 'diving_000_rgb.npy'),
    ('features-zero-bytes', _feature('diving_001', 'rgb', _write_bytes(lambda d: b'')),
     'diving_001_rgb.npy'),
    ('features-truncated', _feature('diving_001', 'rgb', _write_bytes(lambda d: d[:len(d) - 9])),
     'diving_001_rgb.npy'),
    ('features-not-npy', _feature('diving_001', 'rgb', _write_bytes(lambda d: b'not numpy')),
     'diving_001_rgb.npy'),
    ('features-object-array', _feature('diving_001', 'rgb', _save(
        lambda a: np.array([list(r) for r in a] + [None], dtype=object)[:-1])), 'diving_001_rgb.npy'),
    ('features-string-dtype', _feature('diving_001', 'rgb', _save(lambda a: a.astype(str))),
     'diving_001_rgb.npy'),
    ('features-complex-dtype', _feature('diving_001', 'rgb', _save(lambda a: a.astype(np.complex64))),
     'diving_001_rgb.npy'),
    ('features-3d', _feature('diving_001', 'rgb', _save(lambda a: a[:, :, None])),
     'diving_001_rgb.npy'),
    ('split-only-unknown-test-ids', _split(lambda t: t['climbing'].__setitem__('val', ['x1', 'x2'])),
     'umt_splits.json'),
    ('split-video-of-another-domain', _split(lambda t: t['diving']['train'].append('climbing_000')),
     'umt_splits.json'),
    ('split-empty-category', _split(lambda t: t['diving'].__setitem__('train', [])),
     'umt_splits.json'),
    ('split-category-missing', _split(lambda t: t.pop('climbing')), 'umt_splits.json'),
    ('split-not-json', lambda r: open(os.path.join(r, 'splits', 'umt_splits.json'), 'w').write('{'),
     'umt_splits.json'),
]

CONFIG_CASES = [
    # Every enum field with a value it does not accept.
    ('method', 'bogus'), ('data.name', 'tvsum2'), ('data.split', 'tvsum'),
    ('data.bank_dtype', 'int8'), ('model.dtype', 'float8'), ('sampling.mode', 'everything'),
    ('sampling.mixed_share', 'most'), ('eval.edge_rule', 'wrap'), ('eval.head_fusion', 'max'),
    ('data.graded_label', 'max'), ('train.transfer_guard', 'maybe'),
    ('train.optimizer', 'adam'), ('train.lr_schedule', 'linear'), ('data.normalize', 'zscore'),
    ('loss.temperature', '0.0'), ('train.warmup_steps', '-5'),
    # Negative or zero sizes, out-of-range values.
    ('train.batch_size', '-4'), ('sampling.set_size', '1'), ('model.depth', '0'),
    ('model.width', '-5'), ('model.num_heads', '0'), ('model.head_dims', '(16,-1)'),
    ('train.num_steps', '-1'), ('eval.batch_size', '0'), ('train.learning_rate', '-0.1'),
    ('model.dropout', '1.0'), ('train.momentum', '1.5'), ('uda.dan.weight', '-1.0'),
    ('train.checkpoint_every_steps', '0'), ('data.features', '+'),
    # A width the heads cannot split, an unknown category.
    ('model.width', '31'), ('data.target_category', 'curling'),
    # A hyper-parameter axis over a key that cannot vary in one program, values without a key.
    ('vary.key', 'model.depth'), ('vary.values', '(0.5,1.0)'),
]

TYPO_CASES = [('trian.batch_size', 'train.batch_size'), ('train.batchsize', 'train.batch_size'),
              ('model.widht', 'model.width'), ('uda.dan.wieght', 'uda.dan.weight')]


def _main(argv, capfd):
  import launch  # pylint: disable=import-outside-toplevel
  capfd.readouterr()
  code = launch.main(['launch.py', '--noprogress', *argv])
  out = capfd.readouterr()
  return code, out.err


def _base_args(root, workdir, **overrides):
  return ['--config=configs/youtube_surfing.py', f'--workdir={workdir}',
          f'--config.data.root={root}', '--config.data.source_category=diving',
          '--config.data.target_category=climbing',
          *tiny_overrides(**{'train.num_steps': 2, **overrides})]


def _assert_one_line_error(code, err, names, workdir):
  lines = [l for l in err.splitlines() if l.strip()]
  assert code == 2, err[-2000:]
  assert len(lines) == 1 and lines[0].startswith('error: '), err[-2000:]
  assert names in lines[0], lines[0]
  assert 'Traceback' not in err
  assert not os.path.exists(workdir) or not os.listdir(workdir), os.listdir(workdir)


@pytest.mark.parametrize('case', DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_malformed_data_is_one_line(tmp_path, root, capfd, case):
  _, corrupt, names = case
  corrupt(root)
  wd = str(tmp_path / 'wd')
  code, err = _main(_base_args(root, wd), capfd)
  _assert_one_line_error(code, err, names, wd)


@pytest.mark.parametrize('key,value', CONFIG_CASES, ids=[f'{k}={v}' for k, v in CONFIG_CASES])
def test_bad_config_value_is_one_line(tmp_path, root, capfd, key, value):
  wd = str(tmp_path / 'wd')
  code, err = _main([*_base_args(root, wd), f'--config.{key}={value}'], capfd)
  _assert_one_line_error(code, err, key, wd)


SELECTS = ('--config.train.select=best_source_val', '--config.data.val_fraction=0.3',
           '--config.eval.every_steps=1')


@pytest.mark.parametrize('values,extra,names', [
    ('(1.0,2.0)', (), 'train.select'),  # nothing to choose the value with
    ('(1.0,-1.0)', SELECTS, 'uda.dan.weight=-1.0'),  # a value its own rule refuses
    ('(1.0,1.0)', SELECTS, 'vary.values'),
])
def test_bad_hyperparameter_axis_is_one_line(tmp_path, root, capfd, values, extra, names):
  wd = str(tmp_path / 'wd')
  code, err = _main([*_base_args(root, wd), '--config.vary.key=uda.dan.weight',
                     f'--config.vary.values={values}', *extra], capfd)
  _assert_one_line_error(code, err, names, wd)


@pytest.mark.parametrize('typo,valid', TYPO_CASES, ids=[t for t, _ in TYPO_CASES])
def test_config_key_typo_names_the_closest_key(tmp_path, root, capfd, typo, valid):
  wd = str(tmp_path / 'wd')
  code, err = _main([*_base_args(root, wd), f'--config.{typo}=4'], capfd)
  _assert_one_line_error(code, err, typo, wd)
  assert f'did you mean {valid}' in err


@pytest.mark.parametrize('argv,names', [
    (['--config=configs/nosuch.py'], 'configs/nosuch.py'),
    (['--config=configs/table4.py:gpu'], 'gpu'),
    (['--config=configs/demo.py', '--mode=fly'], '--mode'),
    (['--config=configs/demo.py', '--config.train.batch_size=lots'], 'train.batch_size'),
    (['--workdir=x'], '--config'),
])
def test_bad_command_line_is_one_line(tmp_path, capfd, argv, names):
  code, err = _main(argv, capfd)
  _assert_one_line_error(code, err, names, str(tmp_path / 'none'))


def test_workdir_under_a_file_is_one_line(tmp_path, root, capfd):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  code, err = _main(_base_args(root, str(blocker / 'wd')), capfd)
  _assert_one_line_error(code, err, '--workdir', str(blocker / 'wd'))


def test_sweep_override_typo_names_the_closest_key(tmp_path, root, capfd):
  wd = str(tmp_path / 'wd')
  code, err = _main(['--config=configs/table4.py', f'--workdir={wd}', '--mode=sweep',
                     f'--config.data.root={root}', '--config.data.source_category=diving',
                     '--config.sweep.targets=("climbing",)',
                     '--config.sweep.methods=("sl", "dan:uda.dan.wieght=0.5")'], capfd)
  _assert_one_line_error(code, err, 'uda.dan.wieght', wd)
  assert 'did you mean uda.dan.weight' in err


@pytest.mark.parametrize('override,field', [
    ('--config.data.root=/nonexistent/folder', '/nonexistent/folder'),
    ('--config.trian.batch_size=4', 'train.batch_size'),
    ('--config.sampling.mode=everything', 'sampling.mode'),
    ('--config.train.batch_size=3', 'train.batch_size'),
])
def test_launch_prints_one_line_and_exits_2(tmp_path, root, override, field):
  """Real subprocesses: nothing else reaches stderr (no warnings, no log lines)."""
  wd = tmp_path / 'wd'
  args = [*_base_args(root, wd), override]
  proc = run_launch(args, devices=2 if 'batch_size=3' in override else None)
  _assert_one_line_error(proc.returncode, proc.stderr, field, str(wd))
