"""Label-free model selection: source validation carved from the source training videos,
evaluated during training, and the best checkpoint per seed (train.select)."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_overrides
from data_pipelines import synthetic, youtube_highlights
from dlvhd_jax import train_step


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return synthetic.write_synthetic_dataset(str(tmp_path_factory.mktemp('data') / 'd'),
                                           videos_per_category=10, min_len=8, max_len=16, dim=16)


def test_keep_best_selects_per_seed():
  params = {'w': jnp.arange(6.0).reshape(3, 2)}
  state = train_step.TrainState(params, (), jnp.zeros(3, jnp.int32), jnp.zeros((3, 2), jnp.uint32),
                           jnp.zeros(3, jnp.int32), best_params={'w': jnp.zeros((3, 2))},
                           best_val=jnp.array([0.5, 0.7, -jnp.inf]), best_step=jnp.zeros(3, jnp.int32))
  new = train_step.keep_best(state, jnp.array([0.6, 0.7, 0.1]), jnp.int32(9))
  np.testing.assert_array_equal(new.best_params['w'], [[0, 1], [0, 0], [4, 5]])
  np.testing.assert_allclose(new.best_val, [0.6, 0.7, 0.1], rtol=1e-6)  # a tie keeps the earlier one
  np.testing.assert_array_equal(new.best_step, [9, 0, 9])


def test_validation_videos_are_carved_from_source_training_videos(root):
  import ml_collections  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict(dict(root=root, source_category='diving',
                                       target_category='climbing', features='rgb+opt',
                                       split='umt', split_seed=42, val_fraction=0.3))
  data = youtube_highlights.load_cross_category(cfg)
  full = youtube_highlights.load_cross_category(ml_collections.ConfigDict({**cfg, 'val_fraction': 0.0}))
  train_ids, val_ids = [v.vid for v in data.source_train], [v.vid for v in data.source_val]
  assert len(val_ids) == round(0.3 * len(full.source_train)) and not set(train_ids) & set(val_ids)
  assert sorted(train_ids + val_ids) == sorted(v.vid for v in full.source_train)
  # Deterministic, and validation labels are the annotated ones (for scoring, like test).
  again = youtube_highlights.load_cross_category(cfg)
  assert [v.vid for v in again.source_val] == val_ids
  assert all(set(np.unique(v.labels)) <= {-1.0, 0.0, 1.0} for v in data.source_val)


def test_best_source_val_selects_per_seed_and_logs_every_evaluation(tmp_path, root, capfd):
  import launch  # pylint: disable=import-outside-toplevel
  wd = tmp_path / 'wd'
  argv = ['launch.py', '--noprogress', '--config=configs/youtube_surfing.py', f'--workdir={wd}',
          f'--config.data.root={root}', '--config.data.source_category=diving',
          '--config.data.target_category=climbing', '--config.num_seeds=2',
          '--config.data.val_fraction=0.3', '--config.eval.every_steps=5',
          '--config.train.select=best_source_val',
          *tiny_overrides(**{'train.num_steps': 15, 'train.learning_rate': 0.5})]
  assert launch.main(argv) == 0, capfd.readouterr().err[-2000:]
  lines = [json.loads(x) for x in (wd / 'metrics.jsonl').read_text().splitlines()]
  evals = [x for x in lines if 'source_val_map' in x]
  assert [x['step'] for x in evals] == [5, 10, 15]
  vals = np.array([x['source_val_map_per_seed'] for x in evals])  # [evals, seeds]
  res = json.loads((wd / 'results.json').read_text())
  assert res['select'] == 'best_source_val' and res['num_source_val_videos'] == 2
  assert res['selected_steps'] == [[5, 10, 15][i] for i in np.argmax(vals, axis=0)]
  np.testing.assert_allclose(res['source_val_map'], vals.max(axis=0), rtol=1e-6)
  # tools/iw_validation rescores the selected parameters on the same validation videos: with
  # weights 1 it is the selection's own number; its density ratio averages 1 over the source.
  from tools import iw_validation  # pylint: disable=import-outside-toplevel
  row = iw_validation.group_row([str(wd)])
  np.testing.assert_allclose(row['val_map']['per_seed'], res['source_val_map'], rtol=1e-5)
  np.testing.assert_allclose(row['ap_plain']['per_seed'], res['source_val_map'], rtol=1e-5)
  assert row['num_val_videos'] == 2 and 0 < row['ess'] <= 1
  assert all(0 <= a <= 1 for a in row['ap_iw']['per_seed'])


def test_selection_without_validation_is_a_config_error(tmp_path, root, capfd):
  import launch  # pylint: disable=import-outside-toplevel
  code = launch.main(['launch.py', '--noprogress', '--config=configs/youtube_surfing.py',
                      f'--workdir={tmp_path / "wd"}', f'--config.data.root={root}',
                      '--config.train.select=best_source_val'])
  err = capfd.readouterr().err
  assert code == 2 and 'data.val_fraction' in err and len(err.strip().splitlines()) == 1


def test_a_vectorized_hyperparameter_is_chosen_on_source_validation(tmp_path, root, capfd):
  """config.vary: values x seeds in one run; a value that diverges (lr 1e12) drops out while the
  others train on; the value with the best mean source-validation mAP is the run's result,
  every value's numbers are kept, and predict uses its seeds."""
  import launch  # pylint: disable=import-outside-toplevel
  from app.detector import HighlightDetector  # pylint: disable=import-outside-toplevel
  wd = tmp_path / 'wd'
  argv = ['launch.py', '--noprogress', '--config=configs/youtube_surfing.py', f'--workdir={wd}',
          f'--config.data.root={root}', '--config.data.source_category=diving',
          '--config.data.target_category=climbing', '--config.num_seeds=2',
          '--config.data.val_fraction=0.3', '--config.eval.every_steps=5',
          '--config.train.select=best_source_val', '--config.vary.key=train.learning_rate',
          '--config.vary.values=(0.05,0.5,1e12)', *tiny_overrides(**{'train.num_steps': 10})]
  assert launch.main(argv) == 0, capfd.readouterr().err[-2000:]
  res = json.loads((wd / 'results.json').read_text())
  assert res['vary_key'] == 'train.learning_rate' and res['vary_values'] == [0.05, 0.5, 1e12]
  per_value = res['per_value']
  assert per_value[2]['diverged'] and per_value[2]['diverged_seeds'] == [0, 1]
  val = np.array([p['source_val_map'] for p in per_value[:2]])  # [values, seeds]
  pick = int(np.argmax(val.mean(axis=1)))
  assert res['selected_value'] == [0.05, 0.5][pick]
  assert res['map'] == per_value[pick]['map'] and res['source_val_map'] == per_value[pick]['source_val_map']
  assert [p['seed'] for p in res['per_seed']] == [0, 1] and res['num_seeds'] == 2
  evals = [json.loads(x) for x in (wd / 'metrics.jsonl').read_text().splitlines()]
  assert all(len(x['source_val_map_per_seed']) == 6 for x in evals if 'source_val_map' in x)
  # test_scores.npz rows are the replicas (value-major); predict averages the chosen value's.
  scores = np.load(wd / 'test_scores.npz')
  # The values trained differently (the same seeds, so any difference is the value's): seed 0
  # of value 0 against seed 0 of value 1 (APs of 3 short videos can tie; scores cannot).
  assert any(np.abs(scores[v][0] - scores[v][2]).max() > 1e-6 for v in scores.files)
  det = HighlightDetector.from_workdir(str(wd))
  vid = sorted(scores.files)[0]
  feats = np.load(f'{root}/video_features/{vid}_rgb.npy'), np.load(f'{root}/video_features/{vid}_opt.npy')
  np.testing.assert_allclose(det.scores(np.concatenate(feats, axis=1).astype(np.float32)),
                             scores[vid][2 * pick:2 * pick + 2].mean(axis=0), rtol=1e-5, atol=1e-6)
