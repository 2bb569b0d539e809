"""--mode=sweep end to end on the synthetic data: tables, sensitivity curves, resuming."""
import json
import os
import types

import pytest

from conftest import tiny_overrides

# A sweep config over the embedded synthetic data (configs/demo.py with a sweep group).
SWEEP_CONFIG = '''
import ml_collections
from configs import demo


def get_config(kind='methods'):
  c = demo.get_config()
  c.compare_methods = ()
  c.sweep = ml_collections.ConfigDict()
  c.sweep.kind = kind
  c.sweep.title = 'tiny sweep'
  c.sweep.methods = ('sl', 'coral:uda.coral.weight=2.0')
  c.sweep.targets = ('climbing', 'cycling')
  c.sweep.param = 'loss.distill_weight'
  c.sweep['values'] = (0.0, 2.0)
  c.sweep.paper = {'sl': {'climbing': 0.5, 'cycling': 0.25}}
  c.sweep.train_missing = True
  c.sweep.redo_stale = False
  return c
'''


@pytest.fixture
def sweep_config(tmp_path):
  path = tmp_path / 'tiny_sweep.py'
  path.write_text(SWEEP_CONFIG)
  return str(path)


def _launch(capfd, args):
  """launch.py in this process (a sweep's cells reuse its compiled programs) -> .returncode,
  .stderr; what a user sees from the command, fd-level (native code's lines too)."""
  import launch  # pylint: disable=import-outside-toplevel
  capfd.readouterr()
  code = launch.main(['launch.py', '--noprogress', *args])
  return types.SimpleNamespace(returncode=code, stderr=capfd.readouterr().err)


def _args(config, workdir, data):
  return [f'--config={config}', f'--workdir={workdir}', '--mode=sweep',
          f'--config.data.root={data}',
          *tiny_overrides(**{'train.num_steps': 10, 'train.checkpoint_every_steps': 10})]


@pytest.mark.slow
def test_methods_table_and_resume(tmp_path, sweep_config, capfd):
  """Two seeds per cell (one vectorized program each): intervals, the paired comparison
  with source-only, and bold only where a row is significantly best."""
  wd, data = tmp_path / 'sweep', tmp_path / 'data'
  args = [*_args(sweep_config, wd, data), '--config.num_seeds=2']
  proc = _launch(capfd, args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ('table.md', 'table.json', 'table.png'):
    assert (wd / name).is_file() and (wd / name).stat().st_size > 0, name
  runs = sorted(p.name for p in wd.iterdir() if (p / 'results.json').is_file())
  assert runs == ['coral+uda.coral.weight=2.0__climbing', 'coral+uda.coral.weight=2.0__cycling',
                  'sl__climbing', 'sl__cycling']
  # The override reached the run's config.
  cfg = json.loads((wd / 'coral+uda.coral.weight=2.0__climbing' / 'config.json').read_text())
  cfg = cfg['history'][-1]['config']
  assert cfg['method'] == 'coral' and cfg['uda']['coral']['weight'] == 2.0
  assert cfg['data']['target_category'] == 'climbing' and cfg['train']['num_steps'] == 10

  table = json.loads((wd / 'table.json').read_text())
  assert table['rows'] == ['sl', 'coral:uda.coral.weight=2.0']
  assert table['targets'] == ['climbing', 'cycling']
  for row in table['rows']:
    vals = table['map'][row]
    assert all(0.0 < vals[t] <= 1.0 for t in table['targets'])
    assert abs(vals['Average'] - (vals['climbing'] + vals['cycling']) / 2) < 1e-12
    for t in table['targets']:
      res = json.loads((wd / table['runs'][row][t]['workdir'] / 'results.json').read_text())
      assert res['num_seeds'] == 2 and [p['seed'] for p in res['per_seed']] == [0, 1]
      assert table['map_ci95'][row][t] == pytest.approx(res['map_ci95']) and res['map_ci95'] > 0
    assert table['map_ci95'][row]['Average'] is not None
  assert table['paper']['sl']['Average'] == 0.375
  assert table['reference'] == 'sl'
  diff = table['map_vs_source_only']['coral:uda.coral.weight=2.0']
  for c in ('climbing', 'cycling', 'Average'):
    d = diff[c]
    assert d['lo'] <= d['diff'] <= d['hi']
  assert diff['climbing']['diff'] == pytest.approx(
      table['map']['coral:uda.coral.weight=2.0']['climbing'] - table['map']['sl']['climbing'],
      abs=0.05)
  md = (wd / 'table.md').read_text()
  assert '# tiny sweep' in md and '| Source-only |' in md and '(0.500)' in md and ' ± ' in md
  assert '→climbing' in md and 'Average' in md and 'Difference to Source-only' in md
  # Bold exactly where table.json names a significantly best row.
  best = [b for b in table['map_best'].values() if b] + [b for b in table['map_umt_best'].values() if b]
  assert md.count('**') == 2 * len(best)

  # Rerun (a logging change only): every cell is read back, nothing trains again.
  stamps = {p: os.path.getmtime(wd / p / 'results.json') for p in runs}
  proc = _launch(capfd, [*args, '--config.train.log_every_steps=5'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.count('skipped') == 4
  assert stamps == {p: os.path.getmtime(wd / p / 'results.json') for p in runs}
  assert json.loads((wd / 'table.json').read_text())['map'] == table['map']

  # Tabulating only what finished: a row not run yet reads "–", nothing trains.
  proc = _launch(capfd, [*args, '--config.sweep.train_missing=False',
                     '--config.sweep.methods=("sl", "coral:uda.coral.weight=2.0", "dan")'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.count('not run yet') == 2 and not (wd / 'dan__climbing').exists()
  partial = json.loads((wd / 'table.json').read_text())
  assert partial['rows'][:2] == table['rows'] and partial['map']['dan']['climbing'] is None
  assert partial['map']['sl'] == table['map']['sl']
  assert '2 run(s) not finished yet' in (wd / 'table.md').read_text()

  # A finished cell measured under another config is refused, not tabulated as this sweep's;
  # redo_stale moves it aside and trains it again.
  one = ['--config.sweep.methods=("sl",)', '--config.sweep.targets=("climbing",)']
  proc = _launch(capfd, [*args, *one, '--config.train.learning_rate=0.01'])
  assert proc.returncode != 0
  assert 'sl__climbing finished with train.learning_rate=' in proc.stderr
  assert 'redo_stale' in proc.stderr and 'Traceback' not in proc.stderr
  assert os.path.getmtime(wd / 'sl__climbing' / 'results.json') == stamps['sl__climbing']
  proc = _launch(capfd, [*args, *one, '--config.train.learning_rate=0.01',
                     '--config.sweep.redo_stale=True'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (wd / 'sl__climbing.stale' / 'results.json').is_file()
  redone = json.loads((wd / 'sl__climbing' / 'config.json').read_text())['history']
  assert len(redone) == 1 and redone[0]['config']['train']['learning_rate'] == 0.01
  # A second redo would overwrite the kept copy: refused, nothing moved.
  proc = _launch(capfd, [*args, *one, '--config.train.learning_rate=0.02',
                     '--config.sweep.redo_stale=True'])
  assert proc.returncode != 0 and 'sl__climbing.stale exists already' in proc.stderr
  assert (wd / 'sl__climbing' / 'results.json').is_file()


def test_sensitivity_sweep(tmp_path, sweep_config, capfd):
  wd, data = tmp_path / 'sens', tmp_path / 'data'
  proc = _launch(capfd, [*_args(f'{sweep_config}:sensitivity', wd, data),
                     '--config.sweep.targets=("climbing",)'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = json.loads((wd / 'table.json').read_text())
  assert table['kind'] == 'sensitivity' and table['param'] == 'loss.distill_weight'
  assert table['rows'] == ['loss.distill_weight=0.0', 'loss.distill_weight=2.0']
  for row in table['rows']:
    assert 0.0 < table['map'][row]['climbing'] <= 1.0
  cfg = json.loads((wd / 'dlvhd__loss.distill_weight=2.0__climbing' / 'config.json').read_text())
  cfg = cfg['history'][-1]['config']
  assert cfg['loss']['distill_weight'] == 2.0 and cfg['method'] == 'dlvhd'
  assert (wd / 'table.png').stat().st_size > 0 and 'trade-off λ' in (wd / 'table.md').read_text()


def test_bad_method_is_a_one_line_error(tmp_path, sweep_config, capfd):
  proc = _launch(capfd, ['--config=configs/table4.py', f'--workdir={tmp_path}', '--mode=sweep',
                     '--config.sweep.methods=("sl", "nosuch")'])
  assert proc.returncode == 2 and "config.method='nosuch' is invalid" in proc.stderr
  assert 'Traceback' not in proc.stderr
  # A bad override of any cell fails before the first run trains.
  proc = _launch(capfd, ['--config=configs/table4.py', f'--workdir={tmp_path}', '--mode=sweep',
                     '--config.sweep.methods=("sl", "dlvhd:sampling.mode=bogus")'])
  assert proc.returncode == 2 and 'sampling.mode' in proc.stderr, proc.stderr[-2000:]
  assert not any(p.name.startswith('sl__') for p in tmp_path.iterdir())
  # Every fold of a split that has none.
  from app import sweep  # pylint: disable=import-outside-toplevel
  from configs import table4  # pylint: disable=import-outside-toplevel
  from dlvhd_jax.errors import UserInputError  # pylint: disable=import-outside-toplevel
  c = table4.get_config()
  c.sweep.all_folds = True
  with pytest.raises(UserInputError, match=r"all_folds=True needs --config.data.split=kfold \(now 'umt'\)"):
    sweep._cells(c)  # pylint: disable=protected-access


def test_a_category_the_data_lacks_fails_before_anything_is_written(tmp_path, sweep_config, capfd):
  data, work = tmp_path / 'data', tmp_path / 'sweep'
  for override, says in (('--config.sweep.targets=("climbing", "surfing")',
                          "config.sweep.targets names 'surfing'"),
                         ('--config.data.source_category=divin',
                          "config.data.source_category names 'divin'"),
                         ('--config.data.extra_sources=("rowing", "dog")',
                          "config.data.extra_sources names 'dog'")):
    proc = _launch(capfd, [*_args(sweep_config, work, data), override])
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and says in err[0], proc.stderr[-2000:]
    assert "categories there: ['climbing', 'cycling', 'diving', 'rowing']" in err[0]
    assert not work.exists()


def test_any_category_name_makes_one_folder_per_cell():
  from app import sweep, transfer  # pylint: disable=import-outside-toplevel
  from configs import table4  # pylint: disable=import-outside-toplevel
  from dlvhd_jax.errors import UserInputError  # pylint: disable=import-outside-toplevel
  c = table4.get_config()
  c.sweep.methods = ('sl',)
  c.sweep.targets = ('cats/dogs', '../up')
  names = [name for _, _, name, _, _ in sweep._cells(c)[2]]  # pylint: disable=protected-access
  assert names == ['sl__cats_dogs', 'sl__.._up'] and not any('/' in n for n in names)
  assert transfer.cell_name('cats/dogs', 1) == 'sl_specific__cats_dogs__fold1'
  c.sweep.targets = ('cats/dogs', 'cats dogs')
  with pytest.raises(UserInputError, match="would share the folder 'sl__cats_dogs'"):
    sweep._cells(c)  # pylint: disable=protected-access


def test_specs_and_shipped_configs():
  from configs import sensitivity, table4, table7
  from app import sweep
  assert sweep.parse_spec('dan:uda.dan.weight=0.5,model.head_dims=(16,8),data.split=umt') == (
      'dan', {'uda.dan.weight': 0.5, 'model.head_dims': (16, 8), 'data.split': 'umt'})
  assert sweep.resolve_spec('sl_oracle', 'dog') == ('sl', {'data.source_category': 'dog'})
  assert sweep.resolve_spec('dlvhd_wo_encoder:train.num_steps=5', 'dog') == (
      'dlvhd', {'model.use_encoder': False, 'train.num_steps': 5})
  for module, source in ((table4, 'surfing'), (table7, 'dog')):
    cfg = module.get_config('cpu')
    kind, targets, cells = sweep._cells(cfg)
    assert kind == 'methods' and len(cells) == 11 * 5 and source not in targets
    assert cfg.data.source_category == source and cfg.train.num_steps == 1500
    assert cfg.uda.afn.weight < 0.05  # the cpu preset's stable weight, see configs/table4.py
    # The paper's number of every cell is embedded.
    assert all(cfg.sweep.paper[m][t] > 0.4 for m in cfg.sweep.methods for t in targets)
    assert module.get_config('cpu,quick').train.num_steps == 500
    best = module.get_config('best')  # the study's recipe: label-free early stopping
    assert best.train.num_steps == 500 and best.train.select == 'best_source_val'
    assert best.data.val_fraction > 0 and best.eval.every_steps > 0
  for preset, param, n in (('cpu', 'sampling.set_size', 6), ('cpu,lambda', 'loss.distill_weight', 6),
                           ('n', 'sampling.set_size', 6)):
    cfg = sensitivity.get_config(preset)
    kind, targets, cells = sweep._cells(cfg)
    assert kind == 'sensitivity' and cfg.sweep.param == param and len(cells) == n * len(targets)
  from configs import recipe_study, table2, table3, table5
  cfg = table2.get_config('cpu')
  kind, targets, cells = sweep._cells(cfg)
  assert len(cells) == 2 * 10 and cfg.data.name == 'tvsum' and cfg.sweep.paper['sl_specific']['VT'] == 0.865
  assert len(sweep._cells(table3.get_config('cpu'))[2]) == 2 * 5
  cfg = table5.get_config('cpu')
  assert len(sweep._cells(cfg)[2]) == 11 * 4 and cfg.data.name == 'activitynet'
  assert cfg.sweep.paper['dlvhd']['household'] == 0.793
  cfg = recipe_study.get_config()
  kind, targets, cells = sweep._cells(cfg)
  assert len(cells) == len(recipe_study.ROUND1) * 6 and cfg.train.select == 'best_source_val'
  cfg = recipe_study.get_config('tvsum')
  kind, targets, cells = sweep._cells(cfg)
  assert cfg.data.name == 'tvsum' and len(targets) == 10
  assert len(cells) == len(recipe_study.TVSUM_ROUND) * 10 and cfg.data.val_fraction > 0
  cfg = recipe_study.get_config('tvsum_context')
  kind, targets, cells = sweep._cells(cfg)
  assert cfg.data.name == 'tvsum' and len(cells) == 5 * 10
  assert [ov.get('data.context', 0) for _, _, _, _, ov in cells[::10]] == [0, 1, 2, 4, 8]
  kind, targets, cells = sweep._cells(recipe_study.get_config('tvsum_more_data'))
  assert [ov.get('data.extra_sources') for _, _, _, _, ov in cells[::10]] == [None, targets]
  kind, targets, cells = sweep._cells(recipe_study.get_config('tvsum_rank'))
  assert [ov.get('loss.set_loss', 'kl') for _, _, _, _, ov in cells[::10]] == ['kl', 'rank', 'rank']
  kind, targets, cells = sweep._cells(recipe_study.get_config('tvsum_order'))
  assert [(ov.get('model.use_encoder', True), ov.get('sampling.mode', 'random'),
           ov.get('model.position', 'none')) for _, _, _, _, ov in cells[::10]] == [
               (False, 'random', 'none'), (True, 'window', 'none'), (True, 'window', 'learned')]
  # Every shipped table's title and paper numbers are about its own data; moved to another
  # dataset or source, a table names that one and shows no paper numbers.
  from app import tables
  from configs import table1, transfer_matrix
  for module in (table1, table2, table3, table4, table5, table7, recipe_study, transfer_matrix):
    assert tables.written_for(module.get_config('round1' if module is recipe_study else 'cpu'))
  cfg = table4.get_config('best')
  cfg.data.name, cfg.data.source_category = 'tvsum', 'MS'
  kind, targets, _ = sweep._cells(cfg)
  table = tables.build_table(cfg, kind, ['PK'], {})
  assert not tables.written_for(cfg) and table['paper'] == {}
  assert tables.to_markdown(cfg, table).startswith(
      '# Cross-category highlight detection on TVSum, source MS\n')
  with pytest.raises(ValueError):
    table4.get_config('gpu')
  # A sweep override may only set a key the config has.
  from dlvhd_jax.errors import UserInputError
  cfg = table4.get_config('cpu')
  cfg.sweep.methods = ('dan:uda.dan.wieght=0.5',)
  with pytest.raises(UserInputError, match='did you mean uda.dan.weight'):
    sweep._cells(cfg)


def test_a_diverged_cell_is_reported_not_scored(tmp_path, sweep_config, capfd):
  """A cell whose training diverges gets no number: 'diverged' in the table, its reason in
  <cell>/diverged.json, exit code 3 after the other cells ran; a rerun does not redo it."""
  import launch  # pylint: disable=import-outside-toplevel
  wd, data = tmp_path / 'sweep', tmp_path / 'data'
  argv = ['launch.py', '--noprogress', *_args(sweep_config, wd, data),
          '--config.sweep.methods=("sl", "sl:train.learning_rate=1e6")',
          '--config.sweep.targets=("climbing",)']
  for rerun in (False, True):
    capfd.readouterr()
    assert launch.main(argv) == 3
    err = capfd.readouterr().err
    errors = [l for l in err.splitlines() if l.startswith('error:')]
    assert len(errors) == 1 and '1 of 2 sweep runs diverged' in errors[0], err[-2000:]
    assert ('done before, skipped' in err) == rerun
  cell = wd / 'sl+train.learning_rate=1e6__climbing'
  assert 'non-finite loss at step' in json.loads((cell / 'diverged.json').read_text())['diverged']
  assert not (cell / 'results.json').exists() and (wd / 'sl__climbing' / 'results.json').exists()
  table = (wd / 'table.md').read_text()
  assert 'diverged' in table and '1 run(s) diverged' in table
  assert json.loads((wd / 'table.json').read_text())['map']['sl:train.learning_rate=1e6'][
      'climbing'] is None


def test_stale_difference_compares_what_changes_results(tmp_path):
  """Which config changes make a finished cell stale: the method's own weight and training
  keys do; logging, another method's weight and the base value of a varied key do not."""
  from app import experiment, sweep
  from configs import table4
  cfg = table4.get_config('best')
  cell = sweep.cell_config(cfg, 'dog', 'dan', {}, '/data')
  experiment.record_config(str(tmp_path), cell, 'train', 0)

  def diff(**changes):
    now = cell.copy_and_resolve_references()
    for k, v in changes.items():
      sweep.set_path(now, k.replace('__', '.'), v)
    return sweep.stale_difference(str(tmp_path), now)

  assert diff() is None
  assert diff(uda__dan__weight=10.0) == ('uda.dan.weight', json.dumps(cell.uda.dan.weight), '10.0')
  assert diff(num_seeds=3)[0] == 'num_seeds'
  assert diff(train__log_every_steps=7, uda__afn__weight=1.0, data__root='/elsewhere') is None
  varied = cell.copy_and_resolve_references()
  sweep.set_path(varied, 'vary.key', 'uda.dan.weight')
  sweep.set_path(varied, 'vary.values', (0.1, 1.0))
  experiment.record_config(str(tmp_path), varied, 'train', 0)
  sweep.set_path(varied, 'uda.dan.weight', 10.0)
  assert sweep.stale_difference(str(tmp_path), varied) is None
  sweep.set_path(varied, 'vary.values', (0.1, 10.0))
  assert sweep.stale_difference(str(tmp_path), varied)[0] == 'vary.values'
  assert sweep.stale_difference(str(tmp_path / 'missing'), varied) is None
