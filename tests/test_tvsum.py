"""TVSum: both annotation layouts, the splits, the top-5 mAP protocol, and a run end to end."""
import json
import os

import ml_collections
import numpy as np
import pytest

from conftest import SHARED_DATA, tiny_overrides
from data_pipelines import datasets, tvsum
from dlvhd_jax import evaluation
from dlvhd_jax.errors import UserInputError

TVSUM = os.path.join(SHARED_DATA, 'tvsum')


@pytest.fixture
def real_tvsum():
  if not os.path.isfile(os.path.join(TVSUM, tvsum.OFFICIAL_ANNO)):
    pytest.skip(f'TVSum annotation files not found at {TVSUM} (../shared is absent)')
  return TVSUM


def test_both_real_layouts_give_the_same_labels(real_tvsum):
  official, which_o = tvsum.read_annotations(real_tvsum, 'official')
  public, which_p = tvsum.read_annotations(real_tvsum, 'public')
  assert (which_o, which_p) == ('official', 'public') and len(official) == len(public) == 50
  assert sorted({e['category'] for e in official.values()}) == sorted(
      ['VT', 'VU', 'GA', 'MS', 'PK', 'PR', 'FM', 'BK', 'BT', 'DS'])
  for vid, e in official.items():
    assert public[vid]['category'] == e['category']
    t = public[vid]['clips'].shape[1]
    assert int(e['duration'] // 2) == t  # floor(duration / 2 s) clips, in both layouts
    a, b = (tvsum.segment_scores(x, t, 2.0) for x in (e, public[vid]))
    assert a.shape == b.shape == (20, t)
    np.testing.assert_allclose(a.mean(0), b.mean(0), atol=0.1, err_msg=vid)


def test_real_splits(real_tvsum):
  anno, _ = tvsum.read_annotations(real_tvsum, 'official')
  train, test = tvsum.split_ids(real_tvsum, anno, 'VT', 'paper')
  assert len(train) == 2 and len(test) == 3 and not set(train) & set(test)
  assert min(anno[v]['duration'] for v in train) >= max(anno[v]['duration'] for v in test)
  train, test = tvsum.split_ids(real_tvsum, anno, 'VT', 'umt')
  assert len(train) == 4 and len(test) == 1


def test_top5_ap_by_hand():
  # One annotator, 8 segments. Its scores' median is 2.5: positives are segments 0, 3, 5, 6.
  ann = np.array([[3, 1, 2, 4, 1, 5, 3, 2]], float)
  model = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
  # Top 5 by the model: segments 0..4 -> [1, 0, 0, 1, 0], 2 positives. UMT's trapezoid walks
  # every rank from (recall 0, precision 1): rank 1 (0.5, 1) adds 0.5 * (1 + 1) / 2 = 0.5;
  # ranks 2, 3 move precision to 1/2, 1/3 at the same recall (no area); rank 4 (1.0, 1/2) adds
  # 0.5 * (1/3 + 1/2) / 2 = 5/24. AP = 17/24.
  assert evaluation.top5_average_precision(ann, model) == pytest.approx(17 / 24)
  # The model's ranking decides which 5 count: the reverse ranking keeps segments 3..7.
  # [4, 1, 5, 3, 2] by the model's order 7, 6, 5, 4, 3 -> labels [0, 1, 1, 0, 1], 3 positives:
  # rank 1 (0, 0) adds 0; rank 2 (1/3, 1/2) adds 1/3 * (0 + 1/2) / 2 = 1/12; rank 3 (2/3, 2/3)
  # adds 1/3 * (1/2 + 2/3) / 2 = 7/36; rank 4 (2/3, 1/2) none; rank 5 (1, 3/5) adds
  # 1/3 * (1/2 + 3/5) / 2 = 11/60. AP = 1/12 + 7/36 + 11/60 = 83/180.
  assert evaluation.top5_average_precision(ann, -model) == pytest.approx(83 / 180)
  none = np.array([[5, 5, 5, 5, 5, 1, 1, 1]], float)  # median 5: nothing is > median -> AP 0
  assert evaluation.top5_average_precision(none, model) == 0.0
  two = np.concatenate([ann, none])  # annotators are averaged
  assert evaluation.top5_average_precision(two, model) == pytest.approx(17 / 48)
  res = evaluation.summarize(['a', 'b'], [ann, two], [model, model], 'top5_map')
  assert res['metric'] == 'top5_map' and res['map'] == pytest.approx((17 / 24 + 17 / 48) / 2)


def test_top5_ap_counts_a_tie_at_the_cut_in_expectation():
  ann = np.array([[3, 1, 2, 4, 1, 5, 3, 2]], float)  # positives: segments 0, 3, 5, 6
  # Segments 4, 5, 6 (labels 0, 1, 1) tie at the 5th place; one of them fits in the list.
  model = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.2])
  # With probability 1/3 the list is [1, 0, 0, 1, 0] (AP 17/24, above); with 2/3 it is
  # [1, 0, 0, 1, 1]: rank 1 (1/3, 1) adds 1/3; rank 4 (2/3, 1/2) adds 1/3 (1/3 + 1/2) / 2 =
  # 5/36; rank 5 (1, 3/5) adds 1/3 (1/2 + 3/5) / 2 = 11/60: 59/90. Expected: 727/1080.
  want = 727 / 1080
  assert evaluation.top5_average_precision(ann, model) == pytest.approx(want)
  # The video played backwards: the same segments, the same AP (breaking the tie by segment
  # index would give 17/24 one way and 59/90 the other).
  assert evaluation.top5_average_precision(ann[:, ::-1], model[::-1]) == pytest.approx(want)
  # Ties inside the list and a fully tied video: every order equally likely.
  flat = np.zeros(8)
  rng = np.random.RandomState(0)
  perms = [rng.permutation(8) for _ in range(4000)]
  mc = np.mean([evaluation.top5_average_precision(ann, -np.argsort(p).astype(float))
                for p in perms])
  assert evaluation.top5_average_precision(ann, flat) == pytest.approx(mc, abs=0.01)
  assert evaluation.top5_average_precision(ann, flat) == pytest.approx(
      evaluation.top5_average_precision(ann[:, ::-1], flat))


def write_tvsum(root, layout: str, rng_seed=0, dim=8):
  """A small TVSum in the official or public layout: 2 categories x 5 videos with I3D-like
  rows (one per 2 s clip) whose first feature carries the annotators' mean score."""
  rng = np.random.RandomState(rng_seed)
  os.makedirs(os.path.join(root, 'video_features'), exist_ok=True)
  info, anno_lines, public = ['category\tvideo_id\ttitle\turl\tlength'], [], {}
  for c in ('VT', 'BK'):
    for i in range(5):
      vid, fps = f'{c}_{i}', 30.0
      seconds = 20 + 4 * i + int(rng.randint(0, 3))
      frames = int(seconds * fps)
      clips = seconds // 2
      shot = rng.randint(1, 6, size=clips).astype(float)
      per_ann = np.clip(shot[None] + rng.randint(-1, 2, size=(20, clips)), 1, 5)
      frame_scores = np.repeat(per_ann, int(2 * fps), axis=1)
      # An odd second at the end (no clip of its own) repeats the last clip's scores.
      frame_scores = np.pad(frame_scores, ((0, 0), (0, frames - frame_scores.shape[1])), 'edge')
      info.append(f'{c}\t{vid}\ttitle\thttp://x\t{seconds // 60}:{seconds % 60:02d}')
      anno_lines += [f'{vid}\t{c}\t' + ','.join(str(int(x)) for x in fs) for fs in frame_scores]
      public[vid] = {'fps': fps, 'frames': str(frames), 'domain': c, 'length': '',
                     'anno': per_ann.T.tolist()}
      feats = rng.randn(clips, dim).astype(np.float32)
      feats[:, 0] += per_ann.mean(0) - 3
      np.save(os.path.join(root, 'video_features', f'{vid}_rgb.npy'), feats)
      np.save(os.path.join(root, 'video_features', f'{vid}_opt.npy'), feats[:, ::-1].copy())
  if layout == 'official':
    with open(os.path.join(root, tvsum.OFFICIAL_INFO), 'w') as f:
      f.write('\n'.join(info) + '\n')
    with open(os.path.join(root, tvsum.OFFICIAL_ANNO), 'w') as f:
      f.write('\n'.join(anno_lines) + '\n')
  else:
    with open(os.path.join(root, tvsum.PUBLIC_ANNO), 'w') as f:
      json.dump(public, f)
  return root


def _cfg(root, **kw):
  c = dict(name='tvsum', root=root, source_category='VT', target_category='VT',
           features='rgb+opt', split='paper', split_seed=42, annotation='official',
           clip_seconds=2.0, val_fraction=0.0)
  c.update(kw)
  return ml_collections.ConfigDict(c)


def test_layouts_load_the_same_videos(tmp_path):
  a = datasets.get('tvsum').load(_cfg(write_tvsum(str(tmp_path / 'o'), 'official')))
  b = datasets.get('tvsum').load(_cfg(write_tvsum(str(tmp_path / 'p'), 'public')))
  assert [v.vid for v in a.target_test] == [v.vid for v in b.target_test]
  assert len(a.source_train) == 2 and len(a.target_test) == 3 and a.feature_dim == 16
  for x, y in zip(a.target_test + a.source_train, b.target_test + b.source_train):
    # Up to the clip boundaries: without the public file the official layout's fps is
    # estimated from the m:ss length (29.97 here, for 30).
    np.testing.assert_allclose(x.labels, y.labels, atol=0.1)
    np.testing.assert_array_equal(x.features, y.features)
  assert a.target_test[0].annotator_scores.shape == (20, len(a.target_test[0].labels))
  with pytest.raises(UserInputError, match='not a TVSum category'):
    datasets.get('tvsum').load(_cfg(str(tmp_path / 'o'), source_category='surfing'))


def test_official_files_are_parsed_once_until_they_change(tmp_path, monkeypatch):
  """A matrix reads the annotation hundreds of times in one process: parsed once, shared
  read-only, read again when the file changes."""
  root = write_tvsum(str(tmp_path / 'o'), 'official')
  parses = []
  parse = tvsum._parse_official  # pylint: disable=protected-access
  monkeypatch.setattr(tvsum, '_parse_official', lambda store: parses.append(1) or parse(store))
  first = tvsum.read_official(root)
  again = tvsum.read_official(root)
  assert len(parses) == 1 and again['VT_0']['frames'] is first['VT_0']['frames']
  again['VT_0']['fps'] = 1.0  # an entry is the caller's own; the frame scores are not writable
  assert tvsum.read_official(root)['VT_0']['fps'] == first['VT_0']['fps']
  with pytest.raises(ValueError, match='read-only'):
    first['VT_0']['frames'][0, 0] = 5
  path = os.path.join(root, tvsum.OFFICIAL_ANNO)
  text = open(path).read()
  with open(path, 'w') as f:
    f.write(text.replace('VT_0\tVT\t', 'VT_0\tVT\t5,', 20))  # one more frame per annotator
  changed = tvsum.read_official(root)
  assert len(parses) == 2
  assert changed['VT_0']['frames'].shape[1] == first['VT_0']['frames'].shape[1] + 1


def test_graded_label_rules(tmp_path):
  # Three annotators, four segments. Medians 2.5, 3, 3: above them are segments {0, 3}, {3}
  # and {2, 3}, so the above-median shares are [1/3, 0, 1/3, 1].
  ann = np.array([[3, 1, 2, 4], [3, 3, 3, 5], [2, 1, 4, 5]], float)
  ref = {'mean': [8 / 3, 5 / 3, 3, 14 / 3], 'above_median': [1 / 3, 0, 1 / 3, 1]}
  z = []
  for row in ann:  # each annotator standardized by its own mean and (population) std
    m = sum(row) / 4
    sd = (sum((x - m) ** 2 for x in row) / 4) ** 0.5
    z.append([(x - m) / sd for x in row])
  ref['zscore'] = [sum(col) / 3 for col in zip(*z)]
  for rule, want in ref.items():
    np.testing.assert_allclose(tvsum.training_label(ann, rule), want, rtol=1e-6, err_msg=rule)
  # float32 scores: the mean is the one every measured TVSum table trained on, bit for bit.
  a32 = np.random.RandomState(0).randint(1, 6, size=(20, 50)).astype(np.float32) / 3
  np.testing.assert_array_equal(tvsum.training_label(a32, 'mean'), a32.mean(axis=0))
  # An annotator who gives every segment the same score adds 0 to zscore (no division by 0).
  flat = np.vstack([ann[:1], np.full((1, 4), 3.0)])
  np.testing.assert_allclose(tvsum.training_label(flat, 'zscore'), np.array(z[0]) / 2, rtol=1e-6)
  # Through the loader: the training labels change, the annotator scores the metric reads do not.
  root = write_tvsum(str(tmp_path / 'd'), 'official')
  a = datasets.get('tvsum').load(_cfg(root))
  b = datasets.get('tvsum').load(_cfg(root, graded_label='above_median'))
  for x, y in zip(a.source_train + a.target_test, b.source_train + b.target_test):
    np.testing.assert_array_equal(x.annotator_scores, y.annotator_scores)
    np.testing.assert_allclose(y.labels, tvsum.training_label(x.annotator_scores, 'above_median'))
    assert not np.allclose(x.labels, y.labels)
  with pytest.raises(UserInputError, match='data.graded_label'):
    datasets.get('tvsum').load(_cfg(root, graded_label='max'))


def test_tvsum_run_reports_top5_map(tmp_path):
  import launch  # pylint: disable=import-outside-toplevel
  root = write_tvsum(str(tmp_path / 'd'), 'official')
  wd = tmp_path / 'wd'
  argv = ['launch.py', '--noprogress', '--config=configs/youtube_sl.py', f'--workdir={wd}',
          '--config.data.name=tvsum', f'--config.data.root={root}', '--config.data.split=paper',
          '--config.data.source_category=VT', '--config.data.target_category=VT',
          *tiny_overrides(**{'train.num_steps': 10})]
  assert launch.main(argv) == 0
  res = json.loads((wd / 'results.json').read_text())
  assert res['metric'] == 'top5_map' and 0.0 <= res['map'] <= 1.0 and res['num_test_videos'] == 3
  assert res['map'] == pytest.approx(np.mean(list(res['per_video_ap'].values())))


def test_kfold_split_tests_every_video_once(tmp_path):
  root = write_tvsum(str(tmp_path / 'd'), 'official')
  tested = []
  for fold in range(5):
    d = datasets.get('tvsum').load(_cfg(root, split='kfold', fold=fold, num_folds=5,
                                        target_category='BK'))
    test = [v.vid for v in d.target_test]
    assert len(test) == 1 and test[0] not in [v.vid for v in d.target_train]
    assert [v.vid for v in d.source_train] == [f'VT_{i}' for i in range(5) if i != fold]
    tested += test
  assert tested == [f'BK_{i}' for i in range(5)]
  with pytest.raises(UserInputError, match='fold=5'):
    datasets.get('tvsum').load(_cfg(root, split='kfold', fold=5, num_folds=5))


def test_kfold_transfer_matrix_pairs_every_video(tmp_path):
  """configs/transfer_matrix.py:tvsum with 2 folds: one model per category and fold; each
  cell holds every target video once (tested by the fold model that did not train on it)."""
  import launch  # pylint: disable=import-outside-toplevel
  root = write_tvsum(str(tmp_path / 'd'), 'official')
  wd = tmp_path / 'matrix'
  assert launch.main(['launch.py', '--noprogress', '--mode=sweep',
                      '--config=configs/transfer_matrix.py:tvsum', f'--workdir={wd}',
                      f'--config.data.root={root}', "--config.sweep.targets=('VT','BK')",
                      '--config.data.split=kfold', '--config.data.num_folds=2',
                      '--config.num_seeds=2',
                      *tiny_overrides(**{'train.num_steps': 10})]) == 0
  cells = sorted(p.name for p in wd.iterdir() if p.is_dir())
  assert cells == ['sl_specific__BK__fold0', 'sl_specific__BK__fold1',
                   'sl_specific__VT__fold0', 'sl_specific__VT__fold1']
  matrix = json.loads((wd / 'matrix.json').read_text())
  assert matrix['metric'] == 'top5_map' and matrix['split'] == 'kfold (2 folds)'
  for src in ('VT', 'BK'):
    for tgt in ('VT', 'BK'):
      per_seed = []
      for seed in range(2):
        aps = {}
        for fold in range(2):
          cell = wd / f'sl_specific__{src}__fold{fold}'
          res = json.loads(((cell / 'results.json') if src == tgt else
                            (cell / 'transfer.json')).read_text())
          res = res if src == tgt else res[tgt]
          aps.update(res['per_seed'][seed]['per_video_ap'])
        assert sorted(aps) == [f'{tgt}_{i}' for i in range(5)]
        per_seed.append(np.mean(list(aps.values())))
      assert matrix['map'][src][tgt] == pytest.approx(np.mean(per_seed), abs=1e-9)
  gap = matrix['map_gap']['VT']['BK']
  assert gap['diff'] == pytest.approx(matrix['map']['BK']['BK'] - matrix['map']['VT']['BK'])
  # DL-VHD on VT -> BK in one all-folds sweep (a run per fold, the table's cell over all five
  # BK videos): tools/gap_closure pairs its fold runs with the matrix fold by fold into one row.
  from tools import gap_closure  # pylint: disable=import-outside-toplevel
  sw = tmp_path / 'dlvhd'
  assert launch.main(['launch.py', '--noprogress', '--mode=sweep', '--config=configs/table4.py',
                      f'--workdir={sw}', '--config.data.name=tvsum', f'--config.data.root={root}',
                      '--config.data.source_category=VT', "--config.sweep.targets=('BK',)",
                      "--config.sweep.methods=('dlvhd',)", '--config.sweep.all_folds=True',
                      '--config.data.split=kfold', '--config.data.num_folds=2',
                      '--config.num_seeds=2', *tiny_overrides(**{'train.num_steps': 10})]) == 0
  assert sorted(p.name for p in sw.iterdir() if p.is_dir()) == ['dlvhd__BK__fold0',
                                                                'dlvhd__BK__fold1']
  runs = {f: sw / f'dlvhd__BK__fold{f}' for f in range(2)}
  (row,) = gap_closure.rows(str(wd), [str(sw)])
  assert (row['method'], row['source'], row['target']) == ('dlvhd', 'VT', 'BK')
  assert row['source_only'] == pytest.approx(matrix['map']['VT']['BK'], abs=1e-9)
  assert row['oracle'] == pytest.approx(matrix['map']['BK']['BK'], abs=1e-9)
  per_seed = [np.mean([a for f in range(2) for a in json.loads(
      (runs[f] / 'results.json').read_text())['per_seed'][seed]['per_video_ap'].values()])
      for seed in range(2)]
  assert row['map'] == pytest.approx(np.mean(per_seed), abs=1e-9)
  assert row['gap']['diff'] == pytest.approx(gap['diff'], abs=1e-9)
  table = json.loads((sw / 'table.json').read_text())
  assert table['map']['dlvhd']['BK'] == pytest.approx(row['map'], abs=1e-9)
  assert (table['split'], table['metric']) == ('kfold (2 folds)', 'top5_map')
  assert (sw / 'table.md').read_text().splitlines()[2].startswith('top-5 mAP on the target')
  with pytest.raises(UserInputError, match=r'folds \[1\]'):
    gap_closure.rows(str(wd), [str(runs[1])])
  # The head probe pools the fold runs' videos the same way: one row, whose both-heads mAP is
  # the runs' mAP over all five BK videos (not a mean of the folds' means: 3 and 2 videos).
  from tools import head_probe  # pylint: disable=import-outside-toplevel
  (probe,) = head_probe.probe_runs([str(runs[1]), str(runs[0])])
  assert (probe['num_folds'], probe['num_seeds'], probe['target']) == (2, 2, 'BK')
  assert probe['map_both']['mean'] == pytest.approx(row['map'], abs=1e-9)
  assert '| VT → BK | DL-VHD | 2 (2 folds) |' in head_probe.to_markdown([probe])
  with pytest.raises(UserInputError, match=r'folds \[1\]'):
    head_probe.probe_runs([str(runs[1])])
  with pytest.raises(UserInputError, match='more than one run of fold 0'):
    head_probe.probe_runs([str(runs[0]), str(runs[1]), str(runs[0])])
  # Seed agreement pools them too: one row over the five BK videos, the runs' mAP beside it.
  from tools import seed_agreement  # pylint: disable=import-outside-toplevel
  (agree,) = [r for g in gap_closure.fold_groups([str(runs[1]), str(runs[0])])
              for r in seed_agreement.group_rows(g)]
  assert (agree['seeds'], agree['test_map']) == (2, pytest.approx(row['map'], abs=1e-9))
  assert agree['videos'] <= 5 and agree['run'].endswith('dlvhd__BK (2 folds)')


def test_tvsum_ceiling_chance_and_agreement_by_hand():
  """chance = the mean over all 720 orders of 6 segments; an annotator who ranks opposite to
  the others gets 0 from them, and a tie (the others' mean is flat) gets chance."""
  import itertools  # pylint: disable=import-outside-toplevel
  from tools import tvsum_ceiling  # pylint: disable=import-outside-toplevel
  a = np.array([[1., 2, 5, 3, 4, 6], [2., 1, 4, 5, 3, 6]])
  orders = [evaluation.top5_average_precision(a, np.array(p, float))
            for p in itertools.permutations(range(6))]
  assert tvsum_ceiling.chance(a) == pytest.approx(np.mean(orders), abs=1e-12)
  up = np.arange(1., 11.)
  assert tvsum_ceiling.one_vs_rest(np.stack([up, up[::-1]])) == 0.0
  three = np.stack([up, up, up[::-1]])  # the third's others agree with the first two
  expect = (2 * tvsum_ceiling.chance(up[None]) + 0.0) / 3
  assert tvsum_ceiling.one_vs_rest(three) == pytest.approx(expect, abs=1e-12)
  assert tvsum_ceiling.one_vs_rest(np.stack([up, up])) == 1.0


def test_tvsum_ceiling_ridge_is_sklearns():
  from sklearn.linear_model import Ridge  # pylint: disable=import-outside-toplevel
  from tools import tvsum_ceiling  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(40, 60)), rng.normal(size=40)  # more dimensions than rows
  for p, w in zip((0.5, 30.0), tvsum_ceiling.ridge(x, y, (0.5, 30.0))):
    ref = Ridge(alpha=p, solver='svd').fit(x, y)
    np.testing.assert_allclose(w, np.r_[ref.coef_, ref.intercept_], atol=1e-8)


def test_tvsum_ceiling_probe_reads_no_test_label(tmp_path):
  """The probe's penalty and test scores are the same with the test videos' labels gone, and
  on the small TVSum (feature 0 carries the label) it ranks far above chance, every video of
  the k-fold split tested once."""
  from tools import tvsum_ceiling  # pylint: disable=import-outside-toplevel
  root = write_tvsum(str(tmp_path / 'tv'), 'official')
  anno, _ = tvsum.read_annotations(root, 'official')
  videos = [tvsum.load_video(datasets.as_store(root), v, anno[v], ['rgb', 'opt'], 2.0, {})
            for v in sorted(anno) if anno[v]['category'] == 'VT']
  train, test = videos[:4], videos[4:]
  blind = [datasets.Video(v.vid, v.category, v.features, np.full_like(v.labels, np.nan))
           for v in test]
  p, scores = tvsum_ceiling.linear_probe(train, test)
  p_blind, scores_blind = tvsum_ceiling.linear_probe(train, blind)
  assert p == p_blind and np.array_equal(scores[0], scores_blind[0])
  res = tvsum_ceiling.ceiling(root, 'kfold')
  assert sorted(res['per_video']) == sorted(anno) and len(res['penalties']['BK']) == 5
  avg = res['average']
  assert avg['linear probe'] > avg['chance'] + 0.2 and avg["annotators' mean"] > avg['chance']
  with pytest.raises(SystemExit, match='tvsum_ceiling: .*nowhere is not a folder'):
    tvsum_ceiling.main([str(tmp_path / 'nowhere')])
  with pytest.raises(SystemExit, match='--penalties=.*comma-separated'):
    tvsum_ceiling.main([root, '--penalties=ten'])
  fixed = tvsum_ceiling.ceiling(root, 'kfold', penalties_grid=(10.0,))
  assert {p for ps in fixed['penalties'].values() for p in ps} == {10.0}
