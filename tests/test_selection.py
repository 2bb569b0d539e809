"""Label-free model selection: source validation carved from the source training videos,
evaluated during training, and the best checkpoint per seed (train.select)."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_overrides
from data_pipelines import synthetic, youtube_highlights
from dlvhd_jax import train


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return synthetic.write_synthetic_dataset(str(tmp_path_factory.mktemp('data') / 'd'),
                                           videos_per_category=10, min_len=8, max_len=16, dim=16)


def test_keep_best_selects_per_seed():
  params = {'w': jnp.arange(6.0).reshape(3, 2)}
  state = train.TrainState(params, (), jnp.zeros(3, jnp.int32), jnp.zeros((3, 2), jnp.uint32),
                           jnp.zeros(3, jnp.int32), best_params={'w': jnp.zeros((3, 2))},
                           best_val=jnp.array([0.5, 0.7, -jnp.inf]), best_step=jnp.zeros(3, jnp.int32))
  new = train.keep_best(state, jnp.array([0.6, 0.7, 0.1]), jnp.int32(9))
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


def test_selection_without_validation_is_a_config_error(tmp_path, root, capfd):
  import launch  # pylint: disable=import-outside-toplevel
  code = launch.main(['launch.py', '--noprogress', '--config=configs/youtube_surfing.py',
                      f'--workdir={tmp_path / "wd"}', f'--config.data.root={root}',
                      '--config.train.select=best_source_val'])
  err = capfd.readouterr().err
  assert code == 2 and 'data.val_fraction' in err and len(err.strip().splitlines()) == 1
