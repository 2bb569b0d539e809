"""pyproject.toml: `pip install .` gives an importable distribution and the `dlvhd` command.

The fresh virtual environment sees this environment's dependencies through a .pth line, so
the test installs only the package itself (offline, no build isolation, seconds); the
dependencies' pins are requirements.txt's, which pyproject.toml reads.
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_pip_install_gives_the_packages_and_the_dlvhd_command(tmp_path):
  src = tmp_path / 'src'
  shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
      '.git', '.venv', 'runs', '__pycache__', '*.egg-info', 'build', '.pytest_cache'))
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
  py = str(venv / 'bin' / 'python')
  purelib = subprocess.check_output(
      [py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], text=True).strip()
  deps = [p for p in sys.path if p.endswith('site-packages') and os.path.isdir(p)]
  with open(os.path.join(purelib, 'dependencies.pth'), 'w') as f:
    f.write('\n'.join(deps) + '\n')
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'DLVHD_NUM_DEVICES')}
  pip = subprocess.run([sys.executable, '-m', 'pip', '--python', py, 'install', '--no-deps',
                        '--no-build-isolation', '--no-index', '-q', str(src)],
                       env=env, capture_output=True, text=True, timeout=300)
  assert pip.returncode == 0, pip.stderr[-3000:]
  away = tmp_path / 'elsewhere'  # not the checkout: everything comes from the install
  away.mkdir()
  where = subprocess.run([py, '-c', 'import app, configs, data_pipelines, dlvhd_jax, launch, tools; '
                          'print(dlvhd_jax.__file__)'], cwd=away, env=env, capture_output=True,
                         text=True, timeout=120)
  assert where.returncode == 0, where.stderr[-2000:]
  assert where.stdout.strip().startswith(str(venv)), where.stdout
  dlvhd = str(venv / 'bin' / 'dlvhd')
  helped = subprocess.run([dlvhd, '--help'], cwd=away, env=env, capture_output=True, text=True,
                          timeout=120)
  assert helped.returncode == 0, helped.stderr[-2000:]
  assert '--config' in helped.stdout + helped.stderr and '--mode' in helped.stdout + helped.stderr
  # `--config=configs/...` names the shipped config when the working directory has none: the
  # run gets as far as the data folder, a one-line user error.
  run = subprocess.run([dlvhd, '--config=configs/youtube_surfing.py', '--noprogress',
                        f'--workdir={away / "wd"}', f'--config.data.root={away / "missing"}'],
                       cwd=away, env=env, capture_output=True, text=True, timeout=120)
  assert run.returncode == 2, run.stderr[-2000:]
  (line,) = run.stderr.strip().splitlines()
  assert line.startswith('error:') and 'missing' in line
