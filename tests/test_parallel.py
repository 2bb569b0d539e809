"""The data-parallel step: 1 device and 8 (fake CPU) devices compute the same training."""
import numpy as np
import pytest

import step_probe


def run_probe(devices, method, k):
  """k: steps per dispatch, or 'fsdpK' for one step per dispatch with mesh.fsdp = K. Each
  probe runs once per session (several tests compare against the same 1-device run)."""
  if isinstance(k, str):
    return step_probe.run(method, devices, 1, int(k[4:]))
  return step_probe.run(method, devices, k)


# DL-VHD's step holds every part the SL-module's has (plus target and mixed sets, two heads);
# the SL-module's step on 8 devices also runs in tests/test_seeds.py (seeds vs standalone).
@pytest.mark.slow
@pytest.mark.parametrize('method', ['dlvhd'])
def test_one_and_eight_devices_give_the_same_steps(method):
  one = run_probe(1, method, 1)
  eight = run_probe(8, method, 1)
  assert int(one['devices']) == 1 and int(eight['devices']) == 8
  assert len(one['losses']) == 6
  # Losses must move (the run trains), and agree across layouts up to summation order.
  assert np.ptp(one['losses']) > 1e-6
  np.testing.assert_allclose(eight['losses'], one['losses'], rtol=2e-5, atol=1e-7)
  params = [k for k in one if k.startswith('p')]
  assert params
  for k in params:
    np.testing.assert_allclose(eight[k], one[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_scanned_dispatch_equals_one_step_per_call():
  single = run_probe(2, 'dlvhd', 1)
  scanned = run_probe(2, 'dlvhd', 3)
  np.testing.assert_allclose(scanned['losses'], single['losses'], rtol=1e-5, atol=1e-7)
  for k in (k for k in single if k.startswith('p')):
    np.testing.assert_allclose(scanned[k], single[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_fsdp_sharded_parameters_give_the_same_steps_with_less_state_per_device():
  """8 devices as a 2 (data) x 4 (fsdp) mesh train exactly as 1 device does, holding about a
  quarter of the parameters and optimizer state per device."""
  one = run_probe(1, 'dlvhd', 1)
  fsdp = run_probe(8, 'dlvhd', 'fsdp4')
  np.testing.assert_allclose(fsdp['losses'], one['losses'], rtol=2e-5, atol=1e-7)
  for k in (k for k in one if k.startswith('p')):
    np.testing.assert_allclose(fsdp[k], one[k], rtol=1e-4, atol=1e-6, err_msg=k)
  ratio = float(fsdp['state_bytes']) / float(one['state_bytes'])
  assert 0.25 <= ratio < 0.4, ratio  # biases and norms stay replicated


def test_fsdp_layout_rule():
  from dlvhd_jax import parallel  # pylint: disable=import-outside-toplevel
  P = parallel.P
  assert parallel.fsdp_spec((2048, 256), 4) == P('fsdp', None)
  assert parallel.fsdp_spec((256, 1024), 4) == P(None, 'fsdp')
  assert parallel.fsdp_spec((1024,), 4) == P()  # a bias stays replicated
  assert parallel.fsdp_spec((6, 9), 4) == P()  # nothing divisible
  assert parallel.fsdp_spec((6, 8), 4) == P(None, 'fsdp')  # the largest divisible one
  assert parallel.fsdp_spec((5, 2048, 256), 4, replica_axis=True) == P(None, 'fsdp', None)
  assert parallel.fsdp_spec((8, 256), 4, replica_axis=True) == P()  # a seed-stacked bias
  assert parallel.fsdp_spec((2048, 256), 1) == P()


@pytest.mark.slow
def test_fsdp_run_with_seeds_equals_the_replicated_run(tmp_path):
  """launch.py end to end on 4 devices: training, checkpoints, source validation and test
  scoring of 2 vectorized seeds with parameters sharded 4 ways equal the replicated run; a
  mesh that does not divide the devices is a one-line error."""
  import json  # pylint: disable=import-outside-toplevel
  from conftest import run_launch, tiny_overrides  # pylint: disable=import-outside-toplevel
  from data_pipelines import synthetic  # pylint: disable=import-outside-toplevel
  root = synthetic.write_synthetic_dataset(str(tmp_path / 'd'), videos_per_category=8, min_len=8,
                                           max_len=16, dim=16)
  args = ['--config=configs/youtube_surfing.py', f'--config.data.root={root}',
          '--config.data.source_category=diving', '--config.data.target_category=climbing',
          '--config.num_seeds=2', '--config.data.val_fraction=0.3', '--config.eval.every_steps=5',
          '--config.train.select=best_source_val', *tiny_overrides(**{'train.num_steps': 10})]
  scores = {}
  for fsdp in (1, 4):
    wd = tmp_path / f'fsdp{fsdp}'
    r = run_launch([*args, f'--workdir={wd}', f'--config.mesh.fsdp={fsdp}'], devices=4)
    assert r.returncode == 0, r.stderr[-3000:]
    scores[fsdp] = dict(np.load(wd / 'test_scores.npz'))
    res = json.loads((wd / 'results.json').read_text())
    assert res['num_seeds'] == 2
  for vid, s in scores[1].items():
    np.testing.assert_allclose(scores[4][vid], s, rtol=1e-4, atol=1e-5)


def test_fsdp_that_does_not_divide_the_devices_is_a_user_error():
  import jax  # pylint: disable=import-outside-toplevel
  from dlvhd_jax import parallel  # pylint: disable=import-outside-toplevel
  from dlvhd_jax.errors import UserInputError  # pylint: disable=import-outside-toplevel
  with pytest.raises(UserInputError, match='config.mesh.fsdp=3 does not divide the 2 devices'):
    parallel.make_mesh(jax.devices()[:1] * 2, fsdp=3)
