"""A diverged, misconfigured or interrupted run never produces a believable number and never
loses a good checkpoint: the non-finite guard, run fingerprints, disk-full errors, the
import direction. (SIGTERM / SIGKILL resume: tests/test_launch.py.)"""
import glob
import json
import os
import re
import subprocess

import jax
import numpy as np
import pytest

from configs import base
from conftest import REPO, tiny_overrides
from data_pipelines import synthetic
from dlvhd_jax import evaluation, methods, parallel, sampling, train
from dlvhd_jax import optimizer, train_step
from dlvhd_jax.errors import NonFiniteError


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return synthetic.write_synthetic_dataset(str(tmp_path_factory.mktemp('data') / 'd'),
                                           videos_per_category=6, min_len=6, max_len=14, dim=16)


def _main(argv, capfd):
  import launch  # pylint: disable=import-outside-toplevel
  capfd.readouterr()
  code = launch.main(['launch.py', '--noprogress', *argv])
  return code, capfd.readouterr().err


def _args(root, workdir, **overrides):
  return ['--config=configs/youtube_surfing.py', f'--workdir={workdir}',
          f'--config.data.root={root}', '--config.data.source_category=diving',
          '--config.data.target_category=climbing',
          *tiny_overrides(**{'train.num_steps': 4, 'train.steps_per_dispatch': 1,
                             'train.log_every_steps': 2, 'train.checkpoint_every_steps': 2,
                             **overrides})]


def _error_lines(err):
  return [l for l in err.splitlines() if l.startswith('error:')]


# ------------------------------------------------------------------------ non-finite guard


def test_step_refuses_a_nonfinite_update_and_counts_it():
  cfg = base.get_base_config()
  cfg.method = 'sl'
  cfg.model.width, cfg.model.depth, cfg.model.num_heads, cfg.model.head_dims = 8, 1, 2, (8,)
  cfg.train.batch_size, cfg.train.num_steps, cfg.sampling.set_size = 2, 4, 4
  rng = np.random.RandomState(0)
  feats = [rng.randn(6, 4).astype(np.float32) for _ in range(3)]
  labels = [np.array([1, -1, 1, -1, 1, -1], np.float32)] * 3
  good = sampling.make_bank(feats, labels)
  bad = sampling.make_bank([np.full_like(f, np.nan) for f in feats], labels)
  objective = methods.get_objective('sl')
  mesh = parallel.make_mesh()
  schedule = optimizer.make_schedule(cfg, good.num_segments)
  tx, lr_fn = optimizer.make_optimizer(cfg, schedule)
  graphdef, state = train_step.init_state(cfg, 4, objective, tx, mesh)
  step = train_step.make_train_step(graphdef, tx, lr_fn, objective, cfg, mesh, 2)
  before = jax.device_get(state)
  state, m = step(state, bad, bad)
  after = jax.device_get(state)
  assert not np.isfinite(m['loss']).any() and int(m['skipped_updates'][0]) == 1
  assert int(after.step) == 1 and int(after.skipped_updates) == 1
  for a, b in zip(jax.tree.leaves((after.params, after.opt_state)),
                  jax.tree.leaves((before.params, before.opt_state))):
    np.testing.assert_array_equal(a, b)
  state, m = step(state, good, good)  # a finite step still trains
  assert np.isfinite(m['loss']).all() and int(m['skipped_updates'][0]) == 0
  assert int(state.skipped_updates) == 1
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                      jax.tree.leaves(before.params)))


def test_divergent_run_stops_with_exit_3_and_keeps_its_last_good_checkpoint(tmp_path, root, capfd):
  """A real divergence (lr 3e4): good for six steps, NaN at the seventh; one checkpoint kept.
  (The v1 model: the published one diverges here too, but its last good checkpoint at this lr
  already scores NaN, which --mode=eval refuses with exit code 3, so the eval check below
  could not show a usable checkpoint.)"""
  wd = tmp_path / 'wd'
  code, err = _main(_args(root, wd, **{'train.learning_rate': 3e4, 'train.num_steps': 60,
                                       'train.log_every_steps': 1,
                                       'train.checkpoint_every_steps': 1,
                                       'train.max_checkpoints': 1, 'model.variant': 'v1'}), capfd)
  assert code == 3, err[-2000:]
  (line,) = _error_lines(err)
  m = re.fullmatch(r'error: non-finite loss at step (\d+) \(last good checkpoint: step (\d+) in '
                   r'(\S+)\); lower train\.learning_rate or loss\.distill_weight', line)
  assert m, line
  bad, good, where = int(m[1]), int(m[2]), m[3]
  assert good == bad - 1 and where == str(wd / 'checkpoints')
  # Rotation kept the last good checkpoint; nothing was saved from the diverged state.
  assert sorted(int(p) for p in os.listdir(where) if p.isdigit()) == [good]
  assert not (wd / 'results.json').exists() and not (wd / 'test_scores.npz').exists()
  text = (wd / 'metrics.jsonl').read_text()
  assert 'NaN' not in text and 'Infinity' not in text
  assert [json.loads(l)['step'] for l in text.splitlines()] == list(range(1, good + 1))
  # The good checkpoint is usable: eval restores it and scores with finite numbers.
  code, err = _main([*_args(root, wd, **{'train.learning_rate': 3e4, 'train.num_steps': 60,
                                         'train.log_every_steps': 1,
                                         'train.checkpoint_every_steps': 1,
                                         'train.max_checkpoints': 1, 'model.variant': 'v1'}),
                     '--mode=eval'], capfd)
  assert code == 0, err[-2000:]


def test_a_refused_update_with_a_finite_loss_stops_the_run(tmp_path, root, capfd, monkeypatch):
  """A non-finite gradient under a finite loss (injected at the third step, once): the step
  refuses the update, and the run stops at the next interval with exit code 3, no results,
  and the checkpoint before it kept, instead of finishing with a replica counted diverged."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  sl = methods.get_objective('sl')

  def update(graphdef, tx, params, opt_state, batch, key, ctx):
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: sl.loss(nnx.merge(graphdef, p), batch, key, ctx), has_aux=True)(params)
    grads = jax.tree.map(lambda g: jnp.where(ctx.step == 2, jnp.nan, g), grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state,
            {'loss': loss, 'grad_norm': optax.global_norm(grads), **metrics})
  monkeypatch.setitem(methods.OBJECTIVES, 'sl', sl.__class__(**{**sl.__dict__, 'update': update}))
  wd = tmp_path / 'wd'
  code, err = _main(_args(root, wd, **{'train.num_steps': 6}) + ['--config.method=sl'], capfd)
  assert code == 3, err[-2000:]
  (line,) = _error_lines(err)
  assert line == (f'error: non-finite gradient at step 3 (last good checkpoint: step 2 in '
                  f'{wd / "checkpoints"}); lower train.learning_rate'), line
  assert sorted(int(p) for p in os.listdir(wd / 'checkpoints') if p.isdigit()) == [2]
  assert not (wd / 'results.json').exists() and not (wd / 'test_scores.npz').exists()


def test_nonfinite_scores_are_refused():
  labels = np.array([1, -1, 1, -1])
  for ap in (evaluation.average_precision, evaluation.average_precision_umt):
    with pytest.raises(ValueError, match='NaN'):
      ap(labels, np.full(4, np.nan))
  from app import experiment  # pylint: disable=import-outside-toplevel
  with pytest.raises(NonFiniteError) as e:
    experiment.check_scores([np.ones(3), np.array([0.1, np.inf])], ['a', 'b'], '/w')
  assert '\n' not in str(e.value) and 'b' in str(e.value) and 'learning_rate' in str(e.value)


# --------------------------------------------------------------------- a checkpoint knows its run


def test_resume_with_another_config_is_refused_and_safe_keys_may_change(tmp_path, root, capfd):
  wd = tmp_path / 'wd'
  code, err = _main(_args(root, wd), capfd)
  assert code == 0, err[-2000:]
  history = lambda: json.loads((wd / 'config.json').read_text())['history']
  assert len(history()) == 1 and history()[0]['start_step'] == 0
  for override, key, was, now in (
      ({'train.learning_rate': 0.1}, 'train.learning_rate', '0.001', '0.1'),
      ({'model.width': 16}, 'model.width', '32', '16'),
      ({'sampling.set_size': 10}, 'sampling.set_size', '20', '10'),
      ({'train.num_steps': 8}, 'train.num_steps', '4', '8')):
    code, err = _main(_args(root, wd, **override), capfd)
    assert code == 2, err[-2000:]
    (line,) = _error_lines(err)
    assert f'{key}={was}' in line and f'{key}={now}' in line and str(wd) in line, line
  code, err = _main([*_args(root, wd), '--config.method=mcd'], capfd)
  assert code == 2 and 'method="dlvhd"' in err and 'method="mcd"' in err, err[-2000:]
  code, err = _main([*_args(root, wd), '--config.method=sl', '--mode=eval'], capfd)
  assert code == 2 and 'method="sl"' in err, err[-2000:]
  assert len(history()) == 1, 'a refused run must not touch config.json'
  # Logging, checkpointing and evaluation settings may change on resume.
  code, err = _main(_args(root, wd, **{'train.log_every_steps': 1, 'eval.edge_rule': 'shrink',
                                       'eval.head_fusion': 'logit', 'eval.batch_size': 64}), capfd)
  assert code == 0, err[-2000:]
  assert [h['start_step'] for h in history()] == [0, 4]
  assert history()[1]['config']['eval']['edge_rule'] == 'shrink'
  assert history()[1]['config']['eval']['head_fusion'] == 'logit'


def test_checkpoint_state_is_saved_by_name(tmp_path, root, capfd):
  wd = tmp_path / 'wd'
  assert _main(_args(root, wd, **{'train.num_steps': 2}), capfd)[0] == 0
  from dlvhd_jax.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  ckpt = Checkpointer(str(wd))
  meta = ckpt.manager.item_metadata(2)['state'].tree
  assert 'kernel' in meta['params']['encoder']['proj']
  assert set(meta) == {'params', 'opt_state', 'step', 'key', 'skipped_updates'}
  assert ckpt.saved_fingerprint(2)['method'] == 'dlvhd'
  ckpt.close()


# ---------------------------------------------------------------------------- disk full


def test_full_disk_is_one_line(tmp_path, root, capfd):
  """A real ENOSPC from the kernel: a checkpoint on a 96 KiB tmpfs, metrics into /dev/full."""
  # Our own writers: metrics.jsonl is /dev/full, where every write fails with ENOSPC.
  wd = tmp_path / 'devfull'
  wd.mkdir()
  os.symlink('/dev/full', wd / 'metrics.jsonl')
  code, err = _main(_args(root, wd), capfd)
  assert code == 2, err[-3000:]
  (line,) = _error_lines(err)
  assert 'no space left on the device while writing' in line and 'metrics.jsonl' in line, line
  assert 'Traceback' not in err and not (wd / 'results.json').exists()
  # Orbax's checkpoint: a filesystem too small for it.
  mnt = tmp_path / 'small'
  mnt.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=96k', 'tmpfs', str(mnt)],
                    capture_output=True).returncode:
    pytest.skip('cannot mount a small tmpfs here (needs root): no small filesystem to fill')
  try:
    wd = mnt / 'wd'
    code, err = _main(_args(root, wd, **{'model.width': 64}), capfd)
    assert code == 2, err[-3000:]
    (line,) = _error_lines(err)
    assert 'no space left on the device' in line and str(mnt) in line, line
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err[-3000:]
    assert not (wd / 'results.json').exists()
    assert not [p for p in os.listdir(wd / 'checkpoints') if p.isdigit()]
  finally:
    subprocess.run(['umount', '-l', str(mnt)], check=False)


# ------------------------------------------------------------------------- import direction


def _imports(path):
  """Modules named by the file's import statements (any indentation: lazy imports count)."""
  for line in open(path):
    m = re.match(r'\s*(?:from\s+([\w.]+)\s+import\s+([\w., ]+)|import\s+([\w., ]+))', line)
    if m and m[1]:
      yield m[1]
      yield from (f'{m[1]}.{n.strip().split(" ")[0]}' for n in m[2].split(',') if n.strip())
    elif m:
      yield from (n.strip().split(' ')[0] for n in m[3].split(',') if n.strip())


def test_library_does_not_import_the_application_or_the_pipelines():
  for path in glob.glob(os.path.join(REPO, 'dlvhd_jax', '**', '*.py'), recursive=True):
    bad = [m for m in _imports(path) if m.split('.')[0] in ('data_pipelines', 'app')]
    assert not bad, f'{path} imports {bad}'
  # No objectives <-> baselines cycle: the registry (methods.py) imports both.
  assert not [m for m in _imports(os.path.join(REPO, 'dlvhd_jax', 'objectives.py'))
              if 'baselines' in m or 'methods' in m]


def test_fault_injection_setting_is_parsed_or_refused(monkeypatch):
  import signal  # pylint: disable=import-outside-toplevel
  from dlvhd_jax.errors import UserInputError  # pylint: disable=import-outside-toplevel
  monkeypatch.delenv(train.FAULT_ENV, raising=False)
  assert train.injected_fault() is None
  monkeypatch.setenv(train.FAULT_ENV, 'SIGTERM@15')
  assert train.injected_fault() == (int(signal.SIGTERM), 15)
  for bad in ('SIGTERM', 'SIGHUP@3', 'SIGKILL@x'):
    monkeypatch.setenv(train.FAULT_ENV, bad)
    with pytest.raises(UserInputError, match='DLVHD_INJECT_FAULT'):
      train.injected_fault()
