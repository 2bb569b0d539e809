"""The data-parallel step: 1 device and 8 (fake CPU) devices compute the same training."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

PROBE = os.path.join(REPO, 'tests', 'step_probe.py')


def run_probe(tmp_path, devices, method, k):
  out = tmp_path / f'{method}_{devices}_{k}.npz'
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, PROBE, str(out), method, str(k)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(np.load(out))


@pytest.mark.parametrize('method', ['dlvhd', 'sl'])
def test_one_and_eight_devices_give_the_same_steps(tmp_path, method):
  one = run_probe(tmp_path, 1, method, 1)
  eight = run_probe(tmp_path, 8, method, 1)
  assert int(one['devices']) == 1 and int(eight['devices']) == 8
  assert len(one['losses']) == 6
  # Losses must move (the run trains), and agree across layouts up to summation order.
  assert np.ptp(one['losses']) > 1e-6
  np.testing.assert_allclose(eight['losses'], one['losses'], rtol=2e-5, atol=1e-7)
  params = [k for k in one if k.startswith('p')]
  assert params
  for k in params:
    np.testing.assert_allclose(eight[k], one[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_scanned_dispatch_equals_one_step_per_call(tmp_path):
  single = run_probe(tmp_path, 2, 'dlvhd', 1)
  scanned = run_probe(tmp_path, 2, 'dlvhd', 3)
  np.testing.assert_allclose(scanned['losses'], single['losses'], rtol=1e-5, atol=1e-7)
  for k in (k for k in single if k.startswith('p')):
    np.testing.assert_allclose(scanned[k], single[k], rtol=1e-5, atol=1e-6, err_msg=k)
