"""The recipe options of the study (docs/results.md, "Recipe study"): KL temperature, AdamW,
learning-rate schedules with warmup, feature normalization; each against numpy written from its
formula."""
import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import tiny_overrides
from app import detector, experiment
from data_pipelines import context, datasets, normalize, synthetic
from dlvhd_jax import losses
from dlvhd_jax import optimizer
from dlvhd_jax.errors import UserInputError
from test_losses import np_set_kl, random_sets


@pytest.mark.parametrize('tau', [0.5, 0.25])
def test_temperature_sharpens_the_kl_target(tau):
  labels, scores, mask, lengths = random_sets(4)
  got = float(losses.set_prediction_loss(jnp.array(labels), jnp.array(scores), jnp.array(mask), tau))
  per_set = [(np_set_kl(labels[i, :n] / tau, scores[i, :n]), float(np.any(labels[i, :n] > 0)))
             for i, n in enumerate(lengths)]
  want = sum(k * w for k, w in per_set) / max(sum(w for _, w in per_set), 1.0)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # tau = 1 is the paper's loss, unchanged.
  same = float(losses.set_prediction_loss(jnp.array(labels), jnp.array(scores), jnp.array(mask)))
  assert abs(same - got) > 1e-4


def np_rank_loss(y, s, margin):
  """The graded pairwise hinge of one unpadded set, as loops over its pairs."""
  num = den = 0.0
  for i in range(len(y)):
    for j in range(len(y)):
      w = max(y[i] - y[j], 0.0)
      num += w * max(margin - (s[i] - s[j]), 0.0)
      den += w
  return num / den if den > 0 else 0.0


@pytest.mark.parametrize('margin', [0.5, 0.1])
def test_rank_loss_is_the_graded_pairwise_hinge(margin):
  labels, scores, mask, lengths = random_sets(5)
  labels[1, :lengths[1]] = 1.0  # all equal: no pair, weight 0 in the mean over sets
  labels[2, :lengths[2]] = np.linspace(1, 5, lengths[2])  # graded, as TVSum's means
  got = float(losses.set_prediction_loss(jnp.array(labels), jnp.array(scores), jnp.array(mask),
                                         0.3, kind='rank', margin=margin))
  per_set = [(np_rank_loss(labels[i, :n], scores[i, :n], margin), float(np.any(labels[i, :n] > 0)))
             for i, n in enumerate(lengths)]
  want = sum(k * w for k, w in per_set) / max(sum(w for _, w in per_set), 1.0)
  assert per_set[1][0] == 0.0 and want > 0
  np.testing.assert_allclose(got, want, rtol=1e-5)


def _cfg(**train_kw):
  t = dict(learning_rate=0.2, momentum=0.9, weight_decay=0.01, lr_decay_epochs=20,
           lr_decay_factor=0.1, num_epochs=50, num_steps=100, batch_size=4)
  t.update(train_kw)
  return ml_collections.ConfigDict({'train': t})


@pytest.mark.parametrize('kind,warmup', [('step', 0), ('step', 10), ('cosine', 0), ('cosine', 10),
                                         ('constant', 5)])
def test_learning_rate_schedules(kind, warmup):
  cfg = _cfg(lr_schedule=kind, warmup_steps=warmup)
  schedule = optimizer.make_schedule(cfg, num_source_segments=400)  # decay every 40 steps
  lr = optimizer.make_lr(cfg, schedule)
  for step in (0, 3, 9, 10, 11, 39, 45, 60, 99, 100):
    if step < warmup:
      want = 0.2 * step / warmup
    else:
      s = step - warmup
      want = {'step': 0.2 * 0.1 ** (s // 40),
              'cosine': 0.2 * 0.5 * (1 + np.cos(np.pi * min(s, 100 - warmup) / (100 - warmup))),
              'constant': 0.2}[kind]
    np.testing.assert_allclose(float(lr(step)), want, rtol=1e-5, atol=1e-8, err_msg=f'step {step}')


def test_adamw_steps_match_numpy():
  cfg = _cfg(optimizer='adamw', lr_schedule='constant', learning_rate=0.01, momentum=0.8)
  tx, _ = optimizer.make_optimizer(cfg, optimizer.make_schedule(cfg, 400))
  rng = np.random.RandomState(0)
  p = rng.randn(5).astype(np.float32)
  grads = [rng.randn(5).astype(np.float32) for _ in range(3)]
  params, state = jnp.array(p), tx.init(jnp.array(p))
  m = v = np.zeros(5)
  ref = p.astype(np.float64)
  for t, g in enumerate(grads, 1):
    updates, state = tx.update(jnp.array(g), state, params)
    params = params + updates
    m = 0.8 * m + 0.2 * g
    v = 0.999 * v + 0.001 * g.astype(np.float64) ** 2
    mhat, vhat = m / (1 - 0.8 ** t), v / (1 - 0.999 ** t)
    ref = ref - 0.01 * (mhat / (np.sqrt(vhat) + 1e-8) + 0.01 * ref)
  np.testing.assert_allclose(np.asarray(params), ref, rtol=1e-5, atol=1e-6)


def _video(vid, feats):
  return datasets.Video(vid, 'c', np.asarray(feats, np.float32),
                                  np.ones(len(feats), np.float32))


def test_standardize_uses_source_training_statistics_only():
  rng = np.random.RandomState(1)
  src = [_video(f's{i}', rng.randn(7, 3) * [1, 5, 0.1] + [2, -1, 4]) for i in range(3)]
  # Target and test videos far from the source must not move the statistics.
  others = [_video(f't{i}', rng.randn(5, 3) * 100 + 50) for i in range(2)]
  const = _video('c', np.ones((4, 3)))
  data = datasets.CrossCategoryData(src, others[:1], others[1:] + [const], 3,
                                              source_val=[others[0]])
  out = normalize.normalize(data, 'standardize')
  stacked = np.concatenate([v.features for v in src]).astype(np.float64)
  mean, std = stacked.mean(0), stacked.std(0)
  for before, after in [(v, w) for name in ('source_train', 'target_train', 'target_test', 'source_val')
                        for v, w in zip(getattr(data, name), getattr(out, name))]:
    np.testing.assert_allclose(after.features, (before.features - mean) / std, rtol=1e-5, atol=1e-5)
    assert after.vid == before.vid and after.features.dtype == np.float32
    np.testing.assert_array_equal(after.labels, before.labels)
  z = np.concatenate([v.features for v in out.source_train])
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
  assert normalize.normalize(data, 'none') is data


def test_l2_normalizes_each_segment():
  x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
  np.testing.assert_allclose(normalize.l2(x), [[0.6, 0.8], [0, 0], [1, 0]], atol=1e-7)


def test_context_appends_the_mean_of_the_window():
  rng = np.random.RandomState(2)
  x = rng.randn(6, 3).astype(np.float32)
  want = np.stack([x[max(0, t - 2):t + 3].mean(0) for t in range(6)])  # shrinks at the ends
  got = context.with_context(x, 2)
  assert got.shape == (6, 6) and got.dtype == np.float32
  np.testing.assert_array_equal(got[:, :3], x)
  np.testing.assert_allclose(got[:, 3:], want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(context.with_context(x[:1], 3), np.concatenate([x[:1]] * 2, 1))
  assert context.with_context(x, 0) is x
  data = datasets.CrossCategoryData([_video('s', x)], [], [_video('t', x[:4])], 3)
  out = context.add_context(data, 1)
  assert out.feature_dim == 6 and out.target_test[0].features.shape == (4, 6)
  np.testing.assert_array_equal(out.source_train[0].labels, data.source_train[0].labels)


def _train_tiny(tmp_path, target: str, flags: list[str], **overrides):
  """A tiny run on synthetic data from diving to `target` -> its workdir."""
  import launch  # pylint: disable=import-outside-toplevel
  root = synthetic.write_synthetic_dataset(str(tmp_path / 'd'), videos_per_category=6, min_len=8,
                                           max_len=16, dim=16)
  wd = tmp_path / 'wd'
  argv = ['launch.py', '--noprogress', '--config=configs/youtube_surfing.py', f'--workdir={wd}',
          f'--config.data.root={root}', '--config.data.source_category=diving',
          f'--config.data.target_category={target}', *flags, *tiny_overrides(**overrides)]
  assert launch.main(argv) == 0
  return wd


def test_recipe_options_train_end_to_end(tmp_path):
  wd = _train_tiny(tmp_path, 'climbing', [
      '--config.train.optimizer=adamw', '--config.train.lr_schedule=cosine',
      '--config.train.warmup_steps=10', '--config.data.normalize=standardize',
      '--config.loss.temperature=0.5', '--config.data.context=1'],
      **{'train.learning_rate': 0.01, 'train.log_every_steps': 5})
  lines = [json.loads(x) for x in (wd / 'metrics.jsonl').read_text().splitlines()]
  lrs = {x['step']: x['lr'] for x in lines if 'lr' in x}
  # The logged learning rate is the mean over the interval's steps (warmup, then cosine).
  want = lambda s: 0.01 * s / 10 if s < 10 else 0.01 * 0.5 * (1 + np.cos(np.pi * (s - 10) / 10))
  np.testing.assert_allclose(lrs[5], np.mean([want(s) for s in range(5)]), rtol=1e-5)
  np.testing.assert_allclose(lrs[20], np.mean([want(s) for s in range(15, 20)]), rtol=1e-4)
  res = json.loads((wd / 'results.json').read_text())
  assert np.isfinite(res['map']) and res['steps'] == 20
  # Predict feeds raw features through the run's context and its source statistics: it
  # reproduces the scores the run gave its own test videos.
  cfg = detector.recorded_config(str(wd))
  with cfg.unlocked():
    cfg.data.context, cfg.data.normalize = 0, 'none'
  raw = experiment.load_data(cfg, str(wd), need_target_train=False).target_test
  det = detector.HighlightDetector.from_workdir(str(wd))
  saved = np.load(wd / 'test_scores.npz')
  for v in raw[:3]:
    want = np.asarray(saved[v.vid], np.float64).reshape(-1, len(v.features)).mean(0)
    np.testing.assert_allclose(det.scores(v.features), want, rtol=1e-4, atol=1e-6)


def test_extra_sources_add_other_categories_training_videos(tmp_path):
  from configs import youtube_surfing  # pylint: disable=import-outside-toplevel
  root = synthetic.write_synthetic_dataset(str(tmp_path / 'd'), videos_per_category=6, min_len=8,
                                           max_len=16, dim=16)
  cfg = youtube_surfing.get_config()
  cfg.data.root, cfg.data.val_fraction = root, 0.2

  def load(source, target, extra=()):
    cfg.data.source_category, cfg.data.target_category = source, target
    cfg.data.extra_sources = extra
    return experiment.load_data(cfg, str(tmp_path / 'wd'), need_target_train=True)
  ids = lambda videos: [v.vid for v in videos]
  own = load('diving', 'diving')
  more = load('diving', 'diving', ('climbing', 'diving', 'rowing'))
  # Each extra category's training videos, labels included, after the source's own; the
  # source's validation and test videos are unchanged, so selection still reads it alone.
  cfg.data.val_fraction = 0.0
  extra = [load(c, c).source_train for c in ('climbing', 'rowing')]
  assert ids(more.source_train) == ids(own.source_train) + ids(extra[0]) + ids(extra[1])
  assert {v.category for v in more.source_train} == {'diving', 'climbing', 'rowing'}
  for got, want in zip(more.source_train[len(own.source_train):], extra[0] + extra[1]):
    np.testing.assert_array_equal(got.labels, want.labels)
  assert any(np.any(v.labels > 0) for v in extra[0])
  assert ids(more.source_val) == ids(own.source_val) and len(own.source_val) == 1
  assert ids(more.target_test) == ids(own.target_test)
  # The target of a cross-category run may not lend its labels.
  with pytest.raises(UserInputError, match="extra_sources names the target category 'climbing'"):
    load('diving', 'climbing', ('rowing', 'climbing'))
  assert ids(load('diving', 'climbing', ('rowing',)).source_train)[-len(extra[1]):] == ids(extra[1])
  with pytest.raises(UserInputError, match=r"data.extra_sources entry='skating' is not"):
    load('diving', 'diving', ('skating',))


def test_learned_positions_train_on_windows_and_predict_in_order(tmp_path):
  """model.position=learned end to end: trained on windows, its test scores are what predict
  gives (the slots' vectors reach inference); and the settings it cannot mean are refused."""
  from app import config_checks  # pylint: disable=import-outside-toplevel
  from configs import youtube_surfing  # pylint: disable=import-outside-toplevel
  wd = _train_tiny(tmp_path, 'diving', ['--config.method=sl', '--config.sampling.mode=window',
                                        '--config.model.position=learned'],
                   **{'sampling.set_size': 8})
  assert np.isfinite(json.loads((wd / 'results.json').read_text())['map'])
  det = detector.HighlightDetector.from_workdir(str(wd))
  assert det._params['encoder']['position'][...].shape == (8, 32)  # pylint: disable=protected-access
  saved = np.load(wd / 'test_scores.npz')
  for v in experiment.load_data(detector.recorded_config(str(wd)), str(wd),
                                need_target_train=False).target_test[:2]:
    want = np.asarray(saved[v.vid], np.float64).reshape(-1, len(v.features)).mean(0)
    np.testing.assert_allclose(det.scores(v.features), want, rtol=1e-4, atol=1e-6)

  cfg = youtube_surfing.get_config()
  cfg.model.position, cfg.sampling.mode = 'learned', 'window'
  for field, value, message in (('method', 'dlvhd', 'mixed sets put the target'),
                                ('sampling.mode', 'random', 'set sampling.mode=window'),
                                ('model.use_encoder', False, 'needs the set Transformer')):
    bad = cfg.copy_and_resolve_references()
    group, _, key = field.rpartition('.')
    (bad[group] if group else bad)[key] = value
    if field != 'method':
      bad.method = 'sl'
    with pytest.raises(UserInputError, match=message):
      config_checks.validate(bad)
  cfg.method = 'sl'
  config_checks.validate(cfg)
