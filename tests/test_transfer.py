"""The transfer-gap matrix (configs/transfer_matrix.py, app/transfer.py) on the embedded data:
a 3-category matrix with 2 seeds, each model trained once."""
import json
import os

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

import launch
from app import experiment, transfer
from conftest import tiny_overrides
from dlvhd_jax import stats
from dlvhd_jax.errors import UserInputError

CATS = ('diving', 'climbing', 'cycling')


def _main(*args):
  return launch.main(['launch.py', '--noprogress', *args])


@pytest.fixture(scope='module')
def matrix_run(tmp_path_factory):
  work = str(tmp_path_factory.mktemp('matrix') / 'sweep')
  args = ('--mode=sweep', '--config=configs/transfer_matrix.py', f'--workdir={work}',
          '--config.data.name=synthetic', f'--config.sweep.targets={CATS!r}',
          '--config.num_seeds=2', *tiny_overrides())
  assert _main(*args) == 0
  return work, args


def test_matrix_cells_and_gaps(matrix_run):
  work, _ = matrix_run
  matrix = json.load(open(os.path.join(work, 'matrix.json')))
  assert matrix['categories'] == list(CATS) and matrix['num_seeds'] == 2
  assert sorted(d for d in os.listdir(work) if os.path.isdir(os.path.join(work, d))) == sorted(
      ['data'] + [transfer.cell_name(c) for c in CATS])
  for c in CATS:
    cell = os.path.join(work, transfer.cell_name(c))
    res = json.load(open(os.path.join(cell, 'results.json')))
    # The diagonal is the category-specific run itself (trained and tested on c).
    assert res['source_category'] == res['target_category'] == c
    assert matrix['map'][c][c] == pytest.approx(res['map'])
    # Off-diagonal: the same model's scores on t's test videos, kept per seed; their AP
    # (sklearn, per video and seed, mean over videos then seeds) is the cell.
    z = np.load(os.path.join(cell, transfer.SCORES))
    data_root = os.path.join(work, 'data')
    for t in CATS:
      if t == c:
        continue
      anno = json.load(open(os.path.join(data_root, 'youtube_anno.json')))
      keys = [k for k in z.files if k.startswith(f'{t}/')]
      assert keys
      per_seed = []
      for seed in range(2):
        aps = []
        for k in keys:
          vid = k.split('/', 1)[1]
          labels = np.asarray(anno[vid]['match']) > 0
          if labels.any():
            aps.append(average_precision_score(labels, z[k][seed]))
        per_seed.append(np.mean(aps))
      assert matrix['map'][c][t] == pytest.approx(np.mean(per_seed), abs=1e-6), (c, t)
      assert matrix['map_ci95'][c][t] == pytest.approx(stats.mean_ci(per_seed)['ci95'], abs=1e-6)
      gap = matrix['map_gap'][c][t]
      assert gap['diff'] == pytest.approx(matrix['map'][t][t] - matrix['map'][c][t], abs=1e-6)
      assert gap['lo'] <= gap['diff'] <= gap['hi']
  significant = {(g['source'], g['target']) for g in matrix['map_significant']}
  assert significant == {(c, t) for c in CATS for t in CATS if c != t and (
      matrix['map_gap'][c][t]['lo'] > 0 or matrix['map_gap'][c][t]['hi'] < 0)}
  above, below = transfer.significant_by_sign(matrix)
  assert {(g['source'], g['target']) for g in above + below} == significant
  assert all(g['diff'] > 0 for g in above) and all(g['diff'] < 0 for g in below)
  assert matrix['num_test_videos'] == {t: json.load(open(os.path.join(
      work, transfer.cell_name(t), 'results.json')))['num_test_videos'] for t in CATS}
  md = open(os.path.join(work, 'matrix.md')).read()
  assert 'trained on ↓ / tested on →' in md
  assert f'target\'s own model better ({len(above)} of 6)' in md
  assert os.path.getsize(os.path.join(work, 'gap.png')) > 1000


def test_rerun_trains_and_evaluates_nothing(matrix_run, monkeypatch):
  work, args = matrix_run
  before = open(os.path.join(work, 'matrix.json')).read()

  def refuse(*a, **k):
    raise AssertionError('a finished matrix must not train or evaluate again')
  monkeypatch.setattr(experiment, 'run', refuse)
  monkeypatch.setattr(transfer, 'evaluate_on', refuse)
  assert _main(*args) == 0
  assert open(os.path.join(work, 'matrix.json')).read() == before


def test_one_category_is_a_one_line_error(tmp_path, capsys):
  assert _main('--mode=sweep', '--config=configs/transfer_matrix.py', f'--workdir={tmp_path}',
               '--config.data.name=synthetic', "--config.sweep.targets=('diving',)") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'at least two categories' in err[0]


def test_a_missing_data_root_is_one_line_and_writes_nothing(tmp_path, capsys):
  work = tmp_path / 'sweep'
  assert _main('--mode=sweep', '--config=configs/transfer_matrix.py:tvsum', f'--workdir={work}',
               f'--config.data.root={tmp_path / "absent"}', '--config.sweep.targets=()') == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'data.root=' in err[0] and 'does not exist' in err[0], err
  assert not work.exists()


def test_an_empty_target_list_spans_every_category_of_the_data(tmp_path):
  from test_activitynet import TOP, write_activitynet  # pylint: disable=g-import-not-at-top
  from test_tvsum import write_tvsum  # pylint: disable=g-import-not-at-top
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  from configs import transfer_matrix  # pylint: disable=g-import-not-at-top
  yt = str(tmp_path / 'yt')
  synthetic.write_synthetic_dataset(yt, categories=('rowing', 'diving', 'archery'),
                                    videos_per_category=4)
  roots = {'synthetic': yt, 'tvsum': write_tvsum(str(tmp_path / 'tv'), 'public'),
           'activitynet': write_activitynet(str(tmp_path / 'an'))[0]}
  want = {'synthetic': ('archery', 'diving', 'rowing'), 'tvsum': ('BK', 'VT'),
          'activitynet': tuple(TOP)}
  for name, root in roots.items():
    cfg = transfer_matrix.get_config()
    cfg.data.name = name
    if name == 'tvsum':
      cfg.data.annotation = 'public'
    assert transfer.categories(cfg, root) == want[name], name
  cfg.sweep.targets = ('household', 'sport')  # ActivityNet's loader takes unique prefixes
  assert transfer.categories(cfg, roots['activitynet']) == ('household', 'sport')
  cfg = transfer_matrix.get_config()
  cfg.data.name = 'synthetic'
  for targets, words in ((('diving', 'surfing'), "names 'surfing'"),
                         (('diving', 'diving'), 'twice')):
    cfg.sweep.targets = targets
    with pytest.raises(UserInputError, match=words):
      transfer.categories(cfg, yt)


def test_a_cell_of_another_config_is_refused(matrix_run, capsys):
  work, args = matrix_run
  assert _main(*args, '--config.train.num_steps=30') == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'train.num_steps=20' in err[0] and 'redo_stale' in err[0], err


def test_gap_closure_statistic():
  rng = np.random.RandomState(0)
  s = rng.uniform(0.3, 0.6, (5, 12))
  o = s + rng.uniform(0.1, 0.3, (5, 12))
  m = s + 0.5 * (o - s)  # closes half of every video's gap
  half = stats.gap_closure(m, s, o)
  assert half['share'] == pytest.approx(0.5) and half['lo'] < 0.5 < half['hi'] + 1e-9
  # The interval by hand: the same draws (seeds once per sample, then videos), the ratio of
  # the resampled means.
  m = s + rng.normal(0.05, 0.05, (5, 12))
  got = stats.gap_closure(m, s, o, num_samples=300, seed=3)
  r = np.random.RandomState(3)
  si, vi = r.randint(0, 5, (300, 5)), r.randint(0, 12, (300, 12))
  ratios = [(m[a][:, b].mean() - s[a][:, b].mean()) / (o[a][:, b].mean() - s[a][:, b].mean())
            for a, b in zip(si, vi)]
  assert got['lo'] == pytest.approx(np.percentile(ratios, 2.5))
  assert got['hi'] == pytest.approx(np.percentile(ratios, 97.5))
  assert got['share'] == pytest.approx((m.mean() - s.mean()) / (o.mean() - s.mean()))
  none = stats.gap_closure(s + 0.01, s, s)  # no gap: every sample is +inf
  assert np.isnan(none['share']) and none['lo'] == np.inf


def test_gap_pairs_sweep_runs_named_pairs_against_the_matrix(matrix_run, tmp_path, capsys):
  """configs/gap_pairs.py over the matrix: each pair's run pairs with the matrix's models (its
  rows are tools/gap_closure's on the same folders, plus the pooled row), a rerun trains
  nothing, and runs that would not pair with the matrix are refused before anything trains."""
  from tools import gap_closure  # pylint: disable=import-outside-toplevel
  work, _ = matrix_run
  gp = tmp_path / 'gp'
  args = ['--mode=sweep', '--config=configs/gap_pairs.py', f'--workdir={gp}',
          f'--config.sweep.matrix={work}', '--config.data.name=synthetic',
          "--config.sweep.pairs=('cycling->climbing','diving->climbing')",
          "--config.sweep.methods=('dlvhd',)", '--config.num_seeds=2',
          *tiny_overrides(**{'train.num_steps': 10})]
  assert _main(*args) == 0
  runs = [str(gp / src / 'dlvhd__climbing') for src in ('cycling', 'diving')]
  got = json.load(open(gp / 'gap_closure.json'))
  want = gap_closure.rows(work, runs)
  want += gap_closure.pooled(want)
  assert [(r['source'], r['target']) for r in got] == [
      ('cycling', 'climbing'), ('diving', 'climbing'), ('pooled', '2 pairs')]
  for g, w in zip(got, want):
    assert g['gain']['diff'] == pytest.approx(w['gain']['diff'], abs=1e-9)
    assert g['closure']['share'] == pytest.approx(w['closure']['share'], abs=1e-9, nan_ok=True)
  matrix = json.load(open(os.path.join(work, 'matrix.json')))
  assert got[1]['source_only'] == pytest.approx(matrix['map']['diving']['climbing'])
  assert got[1]['oracle'] == pytest.approx(matrix['map']['climbing']['climbing'])
  assert 'pooled: cycling → climbing, diving → climbing' in (gp / 'gap_closure.md').read_text()
  capsys.readouterr()
  assert _main(*args) == 0
  assert capsys.readouterr().err.count('(done before, skipped)') == 2
  # Runs that would not pair with the matrix's models: one line, nothing written.
  for extra, match in ((['--config.data.features=rgb'], 'data.features="rgb" but the matrix'),
                       (['--config.num_seeds=3'], 'seed 2, which the matrix'),
                       (['--config.data.split=kfold', '--config.data.num_folds=2'],
                        "split 'kfold (2 folds)' but the matrix"),
                       (["--config.sweep.pairs=('diving->diving',)"], "not 'source->target'"),
                       (["--config.sweep.pairs=('diving->skiing',)"], "'skiing', which is not"),
                       (['--config.sweep.matrix=' + str(tmp_path)], 'holds no matrix.json')):
    bad = tmp_path / 'bad'
    assert _main(*args[:2], f'--workdir={bad}', *args[3:], *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not bad.exists()


def test_gap_pairs_takes_the_largest_significant_gaps(tmp_path):
  from app import gap_pairs  # pylint: disable=import-outside-toplevel
  g = lambda d, lo: {'diff': d, 'lo': lo, 'hi': d + 0.1}  # noqa: E731
  gaps = {'A': {'B': g(0.1, 0.01), 'C': g(0.3, 0.05)}, 'B': {'A': g(-0.2, -0.3), 'C': g(0.2, -0.1)},
          'C': {'A': g(0.2, 0.02), 'B': None}}
  matrix = {'categories': ['A', 'B', 'C'], 'map_gap': gaps,
            'map_significant': sorted(
                [{'source': s, 'target': t, **v} for s, row in gaps.items() for t, v in row.items()
                 if v and (v['lo'] > 0 or v['hi'] < 0)], key=lambda x: -x['diff'])}
  assert [(s, t) for s, t, _ in gap_pairs.select_pairs(matrix)] == [('A', 'C'), ('C', 'A'), ('A', 'B')]
  assert [(s, t) for s, t, _ in gap_pairs.select_pairs(matrix, max_pairs=2)] == [('A', 'C'), ('C', 'A')]
  # Named pairs run in the order given, significant or not; a pair without a gap is refused.
  assert [(s, t) for s, t, _ in gap_pairs.select_pairs(matrix, ('B->C', 'A->B'))] == [('B', 'C'), ('A', 'B')]
  for named, match in ((('C->B',), 'has no gap'), (('A->B', 'A->B'), 'twice'), (('A-B',), 'source->target')):
    with pytest.raises(UserInputError, match=match):
      gap_pairs.select_pairs(matrix, named)
  none = {**matrix, 'map_significant': [x for x in matrix['map_significant'] if x['diff'] < 0]}
  assert gap_pairs.select_pairs(none) == []
  # A matrix without a gap pair: the sweep says so in its artifacts and trains nothing.
  (tmp_path / 'm').mkdir()
  (tmp_path / 'm' / 'matrix.json').write_text(json.dumps(none))
  assert _main('--mode=sweep', '--config=configs/gap_pairs.py', f'--workdir={tmp_path}/gp',
               f'--config.sweep.matrix={tmp_path}/m') == 0
  assert 'no pair has a significant gap' in (tmp_path / 'gp' / 'gap_closure.md').read_text()
  assert sorted(os.listdir(tmp_path / 'gp')) == ['gap_closure.json', 'gap_closure.md']


def test_gap_closure_tool_reads_the_matrix(matrix_run, tmp_path, capsys):
  """DL-VHD on one pair of the matrix (same data, seeds and test videos), then the tool."""
  from tools import gap_closure  # pylint: disable=import-outside-toplevel
  work, _ = matrix_run
  run = tmp_path / 'dlvhd'
  assert _main('--config=configs/demo.py', f'--workdir={run}', '--config.method=dlvhd',
               '--config.compare_methods=()', '--config.data.source_category=diving',
               '--config.data.target_category=climbing', f'--config.data.root={work}/data',
               '--config.num_seeds=2', *tiny_overrides()) == 0
  (row,) = gap_closure.rows(work, [str(run)])
  matrix = json.load(open(os.path.join(work, 'matrix.json')))
  assert (row['source'], row['target'], row['method'], row['variant']) == (
      'diving', 'climbing', 'dlvhd', '')
  assert row['source_only'] == pytest.approx(matrix['map']['diving']['climbing'])
  assert row['oracle'] == pytest.approx(matrix['map']['climbing']['climbing'])
  res = json.load(open(run / 'results.json'))
  assert row['gain']['diff'] == pytest.approx(res['map'] - row['source_only'], abs=1e-9)
  assert row['closure']['share'] == pytest.approx(
      row['gain']['diff'] / row['gap']['diff'] if row['gap']['diff'] > 0 else np.nan,
      nan_ok=True)
  assert 'diving → climbing' in gap_closure.to_markdown([row])
  assert np.mean(row['per_video']['method'], axis=1).mean() == pytest.approx(res['map'], abs=1e-9)
  # Seeds pair by value: a run of seed 1 alone pairs with the matrix's seed 1, and runs of
  # seed 0 and of seed 1 together make the 2-seed run's row.
  single = {s: tmp_path / f'dlvhd_seed{s}' for s in (0, 1)}
  for s, path in single.items():
    assert _main('--config=configs/demo.py', f'--workdir={path}', '--config.method=dlvhd',
                 '--config.compare_methods=()', '--config.data.source_category=diving',
                 '--config.data.target_category=climbing', f'--config.data.root={work}/data',
                 f'--config.seed={s}', *tiny_overrides()) == 0
  (one,) = gap_closure.rows(work, [str(single[1])])
  (two,) = gap_closure.rows(work, [str(single[1]), str(single[0])])
  for key in ('method', 'source_only', 'oracle'):
    np.testing.assert_allclose(one['per_video'][key], row['per_video'][key][1:], atol=1e-5)
    np.testing.assert_allclose(two['per_video'][key], row['per_video'][key], atol=1e-5)
  assert two['gap'] == row['gap'] and two['map'] == pytest.approx(row['map'], abs=1e-5)
  assert two['run'].endswith('(2 runs)')
  with pytest.raises(UserInputError, match=r'share seeds \(\[0, 1, 1\]\)'):
    gap_closure.rows(work, [str(run), str(single[1])])
  capsys.readouterr()
  assert gap_closure.main([f'--matrix={work}', str(run), str(single[1])]) == 2  # one line
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and 'share seeds' in err[0], err
  cell = json.load(open(os.path.join(work, transfer.cell_name('diving'), 'transfer.json')))
  with pytest.raises(UserInputError, match='has no seed 2'):
    transfer.pick_seeds(cell['climbing'], [0, 2], 'the cell')
  # The head probe on the same run: both heads together are the run's own test score.
  from tools import head_probe  # pylint: disable=import-outside-toplevel
  probe = head_probe.probe(str(run))
  assert probe['num_seeds'] == 2 and (probe['source'], probe['target']) == ('diving', 'climbing')
  assert probe['map_both']['mean'] == pytest.approx(res['map'], abs=1e-9)
  for key in ('map_coarse', 'map_fine', 'map_logit', 'domain_auc', 'highlight_auc_coarse',
              'coarse_above_0.9', 'top_spread_fine'):
    assert 0.0 <= probe[key]['mean'] <= 1.0
  assert '| diving → climbing | DL-VHD | 2 |' in head_probe.to_markdown([probe])
  # Its logit-fusion column is what --mode=eval scores the run's checkpoints with under
  # eval.head_fusion=logit.
  before = dict(np.load(run / 'test_scores.npz'))
  assert _main('--config=configs/demo.py', f'--workdir={run}', '--config.method=dlvhd',
               '--config.compare_methods=()', '--config.data.source_category=diving',
               '--config.data.target_category=climbing', f'--config.data.root={work}/data',
               '--config.num_seeds=2', *tiny_overrides(), '--mode=eval',
               '--config.eval.head_fusion=logit') == 0
  relogit = json.load(open(run / 'results.json'))
  assert relogit['map'] == pytest.approx(probe['map_logit']['mean'], abs=1e-9)
  after = dict(np.load(run / 'test_scores.npz'))
  assert not any(np.allclose(before[v], after[v]) for v in before)  # the fusion was applied
  (rescored,) = gap_closure.rows(work, [str(run)])  # a row of its own, not the paper's fusion
  assert rescored['variant'] == 'eval.head_fusion=logit'
  assert rescored['map'] == pytest.approx(relogit['map'], abs=1e-9)
  with pytest.raises(SystemExit, match='no coarse and fine heads'):
    head_probe.probe(os.path.join(work, transfer.cell_name('diving')))
  # Seed agreement reads the (rescored) run's test_scores.npz and nothing else.
  from tools import seed_agreement  # pylint: disable=import-outside-toplevel
  (agree,) = seed_agreement.group_rows([str(run)])
  rho = [spearmanr(s[0], s[1])[0] for s in after.values()
         if np.ptp(s[0]) > 0 and np.ptp(s[1]) > 0]
  assert (agree['seeds'], agree['videos']) == (2, len(rho))
  assert agree['agreement'] == pytest.approx(np.mean(rho), abs=1e-9)
  assert agree['test_map'] == pytest.approx(relogit['map'], abs=1e-9)


def test_seed_agreement_of_one_video(tmp_path, capsys):
  """Identical seeds agree (1), an opposite seed disagrees (-1), a seed that scores every
  segment alike is left out; three seeds average their three pairs; no pair left: NaN."""
  from tools import seed_agreement  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = rng.normal(size=12)
  assert seed_agreement.seed_agreement(np.stack([x, x])) == pytest.approx(1.0)
  assert seed_agreement.seed_agreement(np.stack([x, -x])) == pytest.approx(-1.0)
  assert seed_agreement.seed_agreement(np.stack([x, -x, np.ones(12)])) == pytest.approx(-1.0)
  three = np.round(rng.normal(size=(3, 12)), 1)  # with ties
  want = np.mean([spearmanr(three[i], three[j])[0] for i, j in ((0, 1), (0, 2), (1, 2))])
  assert seed_agreement.seed_agreement(three) == pytest.approx(want, abs=1e-12)
  assert np.isnan(seed_agreement.seed_agreement(np.stack([x, np.zeros(12)])))
  (tmp_path / 'results.json').write_text('{}')  # a run folder without its scores
  assert seed_agreement.main([str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count('\n') == 0 and 'test_scores.npz not found' in err


def test_gap_closure_pools_pairs():
  """--pool: a method's pairs as one target, [seeds, pairs x videos]; one-pair methods and
  differing seed counts are not pooled."""
  from tools import gap_closure  # pylint: disable=import-outside-toplevel
  rng = np.random.RandomState(1)

  def row(src, tgt, method, videos, gain, seeds=3):
    s = rng.uniform(0.3, 0.6, (seeds, videos))
    o = s + rng.uniform(0.05, 0.3, (seeds, videos))
    m = s + gain * (o - s) + rng.normal(0, 0.01, (seeds, videos))
    return {'method': method, 'variant': '', 'source': src, 'target': tgt,
            'per_video': {'videos': [f'{tgt}{i}' for i in range(videos)], 'method': m.tolist(),
                          'source_only': s.tolist(), 'oracle': o.tolist()}}
  table = [row('A', 'B', 'dlvhd', 5, 0.2), row('C', 'B', 'dlvhd', 4, 0.8),
           row('A', 'B', 'coral', 5, 0.1)]
  (p,) = gap_closure.pooled(table)
  assert (p['method'], p['pairs'], p['target']) == ('dlvhd', ['A → B', 'C → B'], '2 pairs')
  m, s, o = (np.hstack([np.array(r['per_video'][k]) for r in table[:2]])
             for k in ('method', 'source_only', 'oracle'))
  assert m.shape == (3, 9)
  assert p['gain']['diff'] == pytest.approx((m - s).mean())
  assert p['gap']['diff'] == pytest.approx((o - s).mean())
  assert p['closure']['share'] == pytest.approx((m - s).mean() / (o - s).mean())
  assert 0.2 < p['closure']['share'] < 0.8 and p['closure']['lo'] < p['closure']['share'] < p['closure']['hi']
  assert p['map'] == pytest.approx(m.mean())
  assert '| pooled: A → B, C → B |' in gap_closure.to_markdown([p])
  (q,) = gap_closure.pooled(table[::-1])  # the runs named in another order: the same row
  assert q['pairs'] == p['pairs']
  assert all(q[k] == p[k] for k in ('gap', 'gain', 'closure'))
  with pytest.raises(UserInputError, match='seeds'):
    gap_closure.pooled([row('A', 'B', 'dlvhd', 5, 0.2), row('C', 'B', 'dlvhd', 5, 0.2, seeds=2)])


def test_gap_tools_label_a_sweep_cells_overrides():
  """Two DL-VHD variants of one pair must not print as the same row."""
  from app import sweep  # pylint: disable=import-outside-toplevel
  from tools import gap_closure  # pylint: disable=import-outside-toplevel
  spec = 'dlvhd:sampling.source_label_in_mixed=-1.0'
  cell = os.path.join('runs', 'gap', f'{sweep.slug(spec)}__PK')
  got = gap_closure.variant(cell + os.sep, 'PK')
  assert got == 'sampling.source_label_in_mixed=-1.0'
  assert gap_closure.label('dlvhd', got) == 'DL-VHD (sampling.source_label_in_mixed=-1.0)'
  assert gap_closure.variant(cell + '__fold3', 'PK') == got  # an all-folds sweep's fold cell
  assert gap_closure.variant(os.path.join('runs', 'gap', f'{sweep.slug("dlvhd")}__PK'), 'PK') == ''
  assert gap_closure.variant(os.path.join('runs', 'dlvhd+x=1'), 'PK') == ''  # not a sweep cell
  assert gap_closure.label('coral', '') == 'DeepCORAL'
  assert gap_closure.label('dlvhd_no_distill', '') == 'DL-VHD (w/o L_distill)'


def test_head_probe_auc_is_mann_whitney():
  from tools import head_probe  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 60).astype(float)  # ties
  want = roc_auc_score(np.r_[np.ones(40), np.zeros(60)], np.r_[pos, neg])
  assert head_probe.auc(pos, neg) == pytest.approx(want, abs=1e-12)
  assert np.isnan(head_probe.auc(pos, []))


def test_head_probe_highlights_of_graded_labels_follow_the_top5_metric():
  """TVSum: a highlight is above the annotator's median for most annotators, the binarization
  top5_average_precision applies per annotator; binary labels: label > 0."""
  import types  # pylint: disable=import-outside-toplevel
  from tools import head_probe  # pylint: disable=import-outside-toplevel
  scores = np.array([[1, 5, 3, 4, 2, 2],    # median 2.5: segments 1, 2, 3
                     [2, 4, 1, 5, 3, 1],    # median 2.5: 1, 3, 4
                     [1, 1, 5, 5, 5, 1]])   # median 3:   2, 3, 4
  v = types.SimpleNamespace(annotator_scores=scores, labels=scores.mean(0))
  want = [False, True, True, True, True, False]  # 2 of 3 annotators, or all 3
  assert head_probe.highlights(v, 'top5_map').tolist() == want
  assert head_probe.highlights(v, 'map').tolist() == [True] * 6  # graded means are all > 0
  binary = types.SimpleNamespace(labels=np.array([1.0, -1.0, 1.0]))
  assert head_probe.highlights(binary, 'map').tolist() == [True, False, True]


def test_domain_bound_logistic_regression_is_sklearns():
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from tools import domain_bound  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 5))
  y = (x @ [1.0, -2.0, 0.5, 0.0, 0.0] + 0.3 + rng.normal(size=300) > 0).astype(float)
  ref = LogisticRegression(C=1 / 2.0, tol=1e-10, max_iter=10000).fit(x, y)
  w = domain_bound.logistic_regression(x, y, l2=2.0)
  np.testing.assert_allclose(w, np.r_[ref.coef_[0], ref.intercept_], atol=1e-5)


def test_domain_bound_posteriors_are_the_mixtures_densities():
  """Against the full Gaussian densities: p(x | c) = (1 − π) N(x; 0, I) + π N(x; μ_c, I)."""
  from tools import domain_bound  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  x, mu_t, mu_s, pi = rng.normal(size=(50, 6)), rng.normal(size=6), rng.normal(size=6), 0.2
  log_n = lambda m: -0.5 * ((x - m) ** 2).sum(1) - 3 * np.log(2 * np.pi)  # noqa: E731
  mix = lambda m: np.logaddexp(np.log(1 - pi) + log_n(0.0), np.log(pi) + log_n(m))  # noqa: E731
  prior = np.log(pi / (1 - pi))
  np.testing.assert_allclose(domain_bound.domain_llr(x, mu_t, mu_s, prior), mix(mu_t) - mix(mu_s),
                             atol=1e-10)
  post = np.log(pi) + log_n(mu_t) - (np.log(1 - pi) + log_n(0.0))
  np.testing.assert_allclose(domain_bound.highlight_logodds(x, mu_t, prior), post, atol=1e-10)


def test_domain_bound_orders_the_generators_optima(tmp_path):
  """On the embedded data's generator: the oracle's optimum bounds the domain posterior, which
  sees the target's highlights far better than source labels or a linear direction do."""
  from data_pipelines import synthetic  # pylint: disable=import-outside-toplevel
  from tools import domain_bound  # pylint: disable=import-outside-toplevel
  root = synthetic.write_synthetic_dataset(str(tmp_path / 'data'), videos_per_category=20)
  m = domain_bound.bounds(root, 'diving', 'climbing')['map']
  oracle, source, domain, fused, linear, _ = m.values()
  assert oracle > domain > linear > source + 0.1
  assert domain > fused > source
  with pytest.raises(SystemExit, match='seed=3'):
    domain_bound.bounds(root, 'diving', 'climbing', seed=3)
  with pytest.raises(SystemExit, match="no category 'dog'"):
    domain_bound.bounds(root, 'dog', 'climbing')


def test_shift_vs_gap_reads_every_pair_of_the_matrix(matrix_run, tmp_path, capsys):
  from tools import shift_vs_gap  # pylint: disable=import-outside-toplevel
  work, _ = matrix_run
  out = tmp_path / 'shift.json'
  assert shift_vs_gap.main([work, f'--json={out}']) == 0
  res = json.loads(out.read_text())
  matrix = json.load(open(os.path.join(work, 'matrix.json')))
  assert [(r['source'], r['target']) for r in res['rows']] == [
      (c, t) for c in CATS for t in CATS if c != t]
  for r in res['rows']:
    assert 0.0 <= r['domain_auc'] <= 1.0 and -1.0 <= r['seed_agreement'] <= 1.0
    assert r['gap'] == matrix['map_gap'][r['source']][r['target']]['diff']
  assert set(res['correlations']) == {'domain_auc', 'seed_agreement'}
  assert 'Spearman with the gap' in capsys.readouterr().out
  assert shift_vs_gap.main([str(tmp_path)]) == 2  # no matrix.json: one line
  err = capsys.readouterr().err.strip()
  assert err.count('\n') == 0 and 'matrix.json not found' in err


def test_shift_vs_gap_domain_auc_and_correlations():
  from tools import shift_vs_gap  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  videos = lambda shift: [rng.normal(size=(30, 40)) + shift for _ in range(5)]  # noqa: E731
  assert abs(shift_vs_gap.domain_auc(videos(0.0), videos(0.0)) - 0.5) < 0.1
  assert shift_vs_gap.domain_auc(videos(0.0), videos(1.0)) > 0.99
  assert np.isnan(shift_vs_gap.domain_auc(videos(0.0)[:1], videos(1.0)))  # nothing to hold out
  x, gap = rng.normal(size=12), np.round(rng.normal(size=12), 1)  # ties in the gap
  targets = np.repeat(['a', 'b', 'c'], 4)
  got = shift_vs_gap.correlation(x, gap, targets, within=False, num_samples=50)
  assert got['rho'] == pytest.approx(spearmanr(x, gap)[0], abs=1e-12) and got['pairs'] == 12
  assert got['lo'] <= got['rho'] <= got['hi']
  demean = lambda v: v - np.array([v[targets == t].mean() for t in targets])  # noqa: E731
  within = shift_vs_gap.correlation(x, gap, targets, within=True, num_samples=50)
  assert within['rho'] == pytest.approx(spearmanr(demean(x), demean(gap))[0], abs=1e-12)
  x[0] = np.nan  # a pair without a reading is left out
  assert shift_vs_gap.correlation(x, gap, targets, within=False, num_samples=10)['pairs'] == 11


def test_iw_validation_weighted_ap_is_sklearns_and_the_density_ratio_is_recovered():
  from tools import iw_validation  # pylint: disable=import-outside-toplevel
  rng = np.random.RandomState(0)
  for _ in range(20):
    n = rng.randint(2, 40)
    y = rng.rand(n) < 0.4
    y[0] = True
    s = np.round(rng.randn(n), 1)  # ties
    w = rng.exponential(size=n)
    assert iw_validation.weighted_average_precision(y, s, w) == pytest.approx(
        average_precision_score(y, s, sample_weight=w), abs=1e-12)
    assert iw_validation.weighted_average_precision(y, s, np.ones(n)) == pytest.approx(
        average_precision_score(y, s), abs=1e-12)
  # N(0, I) against N(mu, I): the log density ratio is mu.x - |mu|^2 / 2, linear in x.
  d, mu = 6, np.r_[0.8, -0.5, 0.0, 0.0, 0.3, 0.0]
  source, target = rng.randn(4000, d), rng.randn(2000, d) + mu
  query = rng.randn(500, d)
  w = iw_validation.density_ratio(source, target, query)
  true = np.exp(query @ mu - mu @ mu / 2)
  assert np.corrcoef(np.log(w), np.log(true))[0, 1] > 0.99
  assert np.mean(w) == pytest.approx(1.0, abs=0.1)  # E_source[p_t / p_s] = 1
