"""The layering rule, read from the source: each package imports only the layers below it.

  configs          ml_collections only (configs are data)
  dlvhd_jax        the method and its training core: no data formats, no application
  data_pipelines   files -> feature banks: may use dlvhd_jax
  app              modes, tables, predict: may use all three
  tools            command-line tools: may use all of the above
Nothing imports tests/ or launch.py. A new module that needs a layer above it belongs in
that layer (or the shared piece moves down).
"""
import ast
import os

import pytest

from conftest import REPO

OURS = ('configs', 'dlvhd_jax', 'data_pipelines', 'app', 'tools', 'tests', 'launch')
ALLOWED = {
    'configs': {'configs'},
    'dlvhd_jax': {'dlvhd_jax'},
    'data_pipelines': {'data_pipelines', 'dlvhd_jax'},
    'app': {'app', 'configs', 'data_pipelines', 'dlvhd_jax'},
    'tools': {'tools', 'app', 'configs', 'data_pipelines', 'dlvhd_jax'},
}


def imported_packages(path: str) -> set[str]:
  """Our top-level packages that a file imports, at any depth (lazy imports included)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name.split('.')[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module.split('.')[0])
  return names & set(OURS)


@pytest.mark.parametrize('package', sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package):
  folder = os.path.join(REPO, package)
  bad = {}
  for name in sorted(os.listdir(folder)):
    if name.endswith('.py'):
      extra = imported_packages(os.path.join(folder, name)) - ALLOWED[package]
      if extra:
        bad[name] = sorted(extra)
  assert not bad, f'{package}/ imports a layer above it: {bad}'


def test_the_rule_sees_lazy_imports(tmp_path):
  f = tmp_path / 'm.py'
  f.write_text('import os\n\ndef g():\n  from app import cli\n  import data_pipelines.video\n')
  assert imported_packages(str(f)) == {'app', 'data_pipelines'}
