"""config.num_seeds = R: R models in one compiled program, each equal to its standalone run,
and the statistics over seeds (t intervals, paired bootstrap)."""

import jax
import numpy as np
import pytest
from scipy import stats as scipy_stats

from dlvhd_jax import evaluation, stats

import step_probe


def _assert_same(got):
  vec, alone = got['losses']
  assert vec.shape == alone.shape == (4, 3)
  assert np.ptp(alone) > 1e-6  # the runs train, and the seeds differ
  np.testing.assert_allclose(vec, alone, rtol=2e-5, atol=1e-6)
  for v, a in got['params']:
    np.testing.assert_allclose(v, a, rtol=1e-4, atol=1e-5)
  vs, as_ = got['scores']
  assert vs.shape == as_.shape and vs.shape[0] == 3
  np.testing.assert_allclose(vs, as_, rtol=1e-4, atol=1e-5)


# sl and mcd: their seeds are checked the same way by the hyper-parameter test below (two
# seeds per value, each against its standalone run).
@pytest.mark.parametrize('method', ['dlvhd'])
def test_each_vectorized_seed_equals_its_standalone_run(method):
  """Same initialization, sampled sets and dropout: replica r is the run with seed + r."""
  _assert_same(step_probe.seeds_vs_standalone(method))


@pytest.mark.slow
def test_vectorized_seeds_on_eight_devices():
  """DL-VHD and MCD with the sets split over 8 (fake CPU) devices: each replica equals its
  standalone 1-device run. (DL-VHD's step holds every part of the SL-module's; MCD brings its
  own multi-phase update.)"""
  for method in ('dlvhd', 'mcd'):
    _assert_same(step_probe.seeds_vs_standalone(method, devices=8))


def test_t_quantiles_match_scipy():
  for df in (1, 2, 4, 9, 29, 30, 31, 50, 200, 10 ** 5):
    assert stats.t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-6)
  m = stats.mean_ci([0.6, 0.7, 0.65, 0.8, 0.55])
  want = scipy_stats.t.interval(0.95, 4, loc=np.mean([0.6, 0.7, 0.65, 0.8, 0.55]),
                                scale=scipy_stats.sem([0.6, 0.7, 0.65, 0.8, 0.55]))
  assert m['mean'] - m['ci95'] == pytest.approx(want[0]) and m['mean'] + m['ci95'] == pytest.approx(want[1])
  assert stats.mean_ci([0.5])['ci95'] is None


def test_paired_bootstrap_sees_a_real_difference_and_not_a_null_one():
  rng = np.random.RandomState(0)
  base = rng.rand(5, 40)
  better = base + 0.05 + 0.01 * rng.randn(5, 40)
  d = stats.paired_bootstrap([(better, base)])
  assert 0.04 < d['diff'] < 0.06 and d['lo'] > 0 and d['p_le_0'] == 0.0
  same = stats.paired_bootstrap([(base + 0.02 * rng.randn(5, 40), base)])
  assert same['lo'] < 0 < same['hi']
  # Two targets: the difference is the mean of the targets' differences.
  other = rng.rand(5, 30)
  two = stats.paired_bootstrap([(better, base), (other - 0.01, other)])
  assert two['diff'] == pytest.approx((np.mean(better - base) - 0.01) / 2)
  # NaN videos (no positive) are left out of both.
  nan = base.copy()
  nan[:, 0] = np.nan
  assert np.isfinite(stats.paired_bootstrap([(better, nan)])['diff'])


def test_summary_over_seeds():
  vids = ['a', 'b']
  labels = [np.array([1, -1, -1, 1]), np.array([-1, 1, -1])]
  per_seed = [[np.array([0.9, 0.1, 0.2, 0.8]), np.array([0.1, 0.9, 0.3])],
              [np.array([0.1, 0.9, 0.2, 0.8]), np.array([0.9, 0.1, 0.3])]]
  res = evaluation.summarize_seeds(vids, labels, per_seed, [3, 4])
  maps = [evaluation.summarize(vids, labels, s)['map'] for s in per_seed]
  assert res['map'] == pytest.approx(np.mean(maps)) and res['num_seeds'] == 2
  assert res['map_std'] == pytest.approx(np.std(maps, ddof=1))
  assert res['map_ci95'] == pytest.approx(12.706205 * np.std(maps, ddof=1) / np.sqrt(2))
  assert [p['seed'] for p in res['per_seed']] == [3, 4]
  assert res['per_seed'][1]['map'] == pytest.approx(maps[1])


@pytest.mark.parametrize('method,key,values', [
    ('sl', 'train.learning_rate', (0.05, 0.3)),  # the updates are scaled, not the loss
    ('mcd', 'uda.mcd.weight', (0.3, 3.0)),  # a UDA weight, in MCD's own three-phase update
])
def test_each_value_of_a_vectorized_hyperparameter_equals_its_standalone_run(method, key, values):
  """config.vary: replica (value v, seed s) is the run with key = v and seed = s."""
  got = step_probe.vary_vs_standalone(method, key, values)
  vec, alone = got['losses']
  assert vec.shape == alone.shape == (4, 4)
  # The values change training (else the test could not fail on a value that is ignored).
  assert np.abs(alone[:, 0] - alone[:, 2]).max() > 1e-4
  np.testing.assert_allclose(vec, alone, rtol=2e-5, atol=1e-6)
  for v, a in got['params']:
    np.testing.assert_allclose(v, a, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(*got['scores'], rtol=1e-4, atol=1e-5)


def test_the_objective_receives_the_replica_value_of_the_varied_key_and_the_config_elsewhere():
  """hparams.step_values: the varied key reads the replica's value, every other loss key the
  config (or its default where the config lacks the group); a varied learning rate never
  reaches the objective (it scales the updates)."""
  from configs import base  # pylint: disable=import-outside-toplevel
  from dlvhd_jax import hparams  # pylint: disable=import-outside-toplevel
  cfg = base.get_base_config()
  cfg.loss.distill_weight = 0.3
  assert hparams.step_values(cfg) == {k: (0.3 if k == 'loss.distill_weight' else
                                          float(cfg[k.split('.')[0]][k.split('.')[1]] if
                                                k.startswith('loss') else
                                                cfg.uda[k.split('.')[1]].weight))
                                      for k in hparams.LOSS_KEYS}
  for key in hparams.LOSS_KEYS:
    cfg.vary.key = key
    value = jax.numpy.float32(0.125)
    got = hparams.step_values(cfg, value)
    assert got[key] is value
    assert all(isinstance(v, float) for k, v in got.items() if k != key)
  del cfg.uda['afn']  # a config without the group reads the default
  cfg.vary.key = ''
  assert hparams.step_values(cfg)['uda.afn.weight'] == hparams.VECTORIZABLE['uda.afn.weight']
  cfg.vary.key = 'train.learning_rate'
  assert hparams.LEARNING_RATE not in hparams.step_values(cfg, jax.numpy.float32(9.0))
  assert all(isinstance(v, float) for v in hparams.step_values(cfg, jax.numpy.float32(9.0)).values())


def _keys_of_a_three_seed_run(variant, monkeypatch, steps=3):
  """Every key a 3-seed dlvhd run draws in its first `steps` steps, as it draws them: the
  parameter initializers' keys (nnx's stream over each seed's init key), and the step's set
  and loss keys recorded at run time from inside the compiled, vmapped step."""
  from configs import base  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from dlvhd_jax import keys, methods, model as model_lib, parallel, sampling  # pylint: disable=import-outside-toplevel
  from dlvhd_jax import optimizer, train_step
  cfg = base.get_base_config()
  cfg.model.variant = variant
  cfg.model.width, cfg.model.depth, cfg.model.num_heads, cfg.model.head_dims = 8, 1, 2, (8,)
  cfg.train.batch_size, cfg.sampling.set_size, cfg.num_seeds = 2, 4, 3
  # Seed s's keys; that the run really starts from them is checked below (its training key
  # and its initial parameters).
  init_keys, drawn = {s: keys.seed_keys(variant, s) for s in range(3)}, []
  real_step_keys = keys.step_keys

  def step_keys(train_key, step):
    out = real_step_keys(train_key, step)
    # The step's root too (what both are split from).
    every = (jax.random.fold_in(train_key, step), *out)
    jax.debug.callback(lambda *ks: drawn.extend(np.asarray(k) for k in ks),
                       *(jax.random.key_data(k) for k in every))
    return out
  monkeypatch.setattr(keys, 'step_keys', step_keys)
  rng = np.random.RandomState(0)
  bank = sampling.make_bank([rng.randn(6, 4).astype(np.float32) for _ in range(3)],
                            [np.array([1, -1, 1, -1, 1, -1], np.float32)] * 3)
  objective = methods.get_objective('dlvhd')
  mesh = parallel.make_mesh()
  schedule = optimizer.make_schedule(cfg, bank.num_segments)
  tx, lr_fn = optimizer.make_optimizer(cfg, schedule)
  graphdef, state = train_step.init_state(cfg, 4, objective, tx, mesh)
  initial = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]
  step = train_step.make_train_step(graphdef, tx, lr_fn, objective, cfg, mesh, 2)
  for _ in range(steps):
    state, _ = step(state, bank, bank)
  jax.effects_barrier()
  assert len(drawn) == 3 * 3 * steps
  # The run really starts from these keys: each replica's training key and parameters.
  for r, (init_key, train_key) in init_keys.items():
    np.testing.assert_array_equal(np.asarray(jax.device_get(state.key))[r],
                                  np.asarray(jax.random.key_data(train_key)))
    want = jax.tree.leaves(nnx.split(model_lib.build_model(cfg, 4, objective.heads, init_key))[1])
    assert len(want) == len(initial)
    for w, got in zip(want, initial):
      np.testing.assert_array_equal(np.asarray(w), got[r])
  used = list(drawn)
  for init_key, train_key in init_keys.values():
    stream = nnx.Rngs(params=init_key)  # the keys the initializers receive, in order
    used += [np.asarray(jax.random.key_data(stream.params())) for _ in range(16)]
    used += [np.asarray(jax.random.key_data(k)) for k in (init_key, train_key)]
  return [tuple(k.reshape(-1).tolist()) for k in used]


@pytest.mark.slow
def test_no_key_is_shared_between_seeds_or_purposes(monkeypatch):
  """Initialization, sampled sets and dropout of seeds 0, 1, 2: all keys distinct. v1's
  derivation is kept for its old numbers, and this test sees its overlap: seed s's training
  root is seed s + 1's initialization root, and seed s's first step key, fold_in(key(s + 1),
  0), is the first key seed s + 1's initializers receive."""
  used = _keys_of_a_three_seed_run('published', monkeypatch)
  assert len(set(used)) == len(used)
  old = _keys_of_a_three_seed_run('v1', monkeypatch)
  assert len(set(old)) < len(old)
