"""Orbax checkpoints that know their run: the train state by name, plus the run's fingerprint.

<workdir>/checkpoints/<step>/state   the train state as a nested dict keyed by pytree path
                                      (params/encoder/blocks/0/attn/qkv/kernel, ...), so a
                                      checkpoint is readable and a mismatch names the array
<workdir>/checkpoints/<step>/run     JSON: the fingerprint of everything that changes what
                                      the state means or how training continues

Resuming or evaluating with a config whose fingerprint differs is a one-line error naming
the first differing key; the keys in RESUME_SAFE may change between runs of one workdir.
Saves are atomic (orbax writes a temporary folder and renames it on commit).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from dlvhd_jax.errors import UserInputError

# Config keys (and groups) that may differ between the runs of one workdir: they change how a
# run logs, saves, dispatches or evaluates, not what the state means or how training goes on.
RESUME_SAFE = ('name', 'compare_methods', 'compile_cache_dir', 'data.root', 'data.source', 'data.tfds_data_dir', 'train.log_every_steps',
               'train.checkpoint_every_steps', 'train.max_checkpoints', 'train.transfer_guard',
               'train.steps_per_dispatch', 'model.remat', 'eval.edge_rule', 'eval.head_fusion',
               'eval.batch_size',
               'benchmark', 'sweep', 'uda', 'mesh', 'predict')


def _plain(value):
  """JSON-comparable form of a config value (tuples as lists)."""
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  return value


def flatten_config(d: dict, prefix: str = '') -> dict[str, Any]:
  """{'train': {'batch_size': 4}} -> {'train.batch_size': 4}."""
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict) and v:
      out.update(flatten_config(v, key + '.'))
    else:
      out[key] = _plain(v)
  return out


def _is_safe(key: str) -> bool:
  return any(key == s or key.startswith(s + '.') for s in RESUME_SAFE)


def video_digest(ids) -> str:
  """A short digest of a list of video ids: which videos a run trained on."""
  return hashlib.sha1('\n'.join(sorted(ids)).encode()).hexdigest()[:16]


def config_fingerprint(config: dict) -> dict[str, Any]:
  """{dotted key: value} of every key of a config (as a plain dict, e.g. read back from a
  run's config.json) that is not RESUME_SAFE, plus the method's own `uda.<method>.*` group,
  less the key that config.vary varies."""
  flat = flatten_config(config)
  fp = {k: v for k, v in flat.items() if not _is_safe(k)}
  own = f"uda.{config.get('method', '')}."
  fp.update({k: v for k, v in flat.items() if k.startswith(own)})
  # Under config.vary every replica reads its own value of the varied key (dlvhd_jax/hparams.py),
  # so the key's value in the config does not change what trains.
  fp.pop(str(flat.get('vary.key', '') or ''), None)
  return fp


# Keys added after runs were saved, with the value those runs had in effect: a finished sweep
# cell or a checkpoint written before `model.variant` existed was the v1 model.
LEGACY_DEFAULTS = {'model.variant': 'v1', 'data.num_folds': 5, 'data.fold': 0,
                   'data.graded_label': 'mean', 'loss.distill_to': 'both',
                   'data.context': 0, 'data.extra_sources': [], 'loss.set_loss': 'kl',
                   'loss.rank_margin': 0.5, 'model.position': 'none'}


def with_legacy_defaults(config: dict) -> dict:
  """A saved config (nested, as config.json holds it) with LEGACY_DEFAULTS filled in."""
  out = json.loads(json.dumps(config))
  for dotted, value in LEGACY_DEFAULTS.items():
    node = out
    *groups, last = dotted.split('.')
    for g in groups:
      node = node.setdefault(g, {})
    node.setdefault(last, value)
  return out


def run_fingerprint(cfg, **resolved) -> dict[str, Any]:
  """config_fingerprint of `cfg` and the resolved facts passed in (feature dim, schedule,
  videos)."""
  fp = config_fingerprint(cfg.to_dict())
  fp.update({f'resolved.{k}': _plain(v) for k, v in resolved.items()})
  return fp


def first_difference(saved: dict, current: dict) -> tuple[str, Any, Any] | None:
  """-> (key, saved value, current value) of the first differing key: config keys in sorted
  order first, then the resolved facts (a changed train.num_steps is named, not the schedule
  it implies)."""
  missing = object()
  for key in sorted(set(saved) | set(current), key=lambda k: (k.startswith('resolved.'), k)):
    a, b = saved.get(key, missing), current.get(key, missing)
    if a != b:
      show = lambda v: '(absent)' if v is missing else json.dumps(v)
      return key, show(a), show(b)
  return None


# ------------------------------------------------------------------------- state by name


def _key_name(k) -> str | None:
  if isinstance(k, jax.tree_util.DictKey):
    return str(k.key)
  if isinstance(k, jax.tree_util.GetAttrKey):
    return None if k.name == 'value' else k.name  # an nnx Variable's payload
  if isinstance(k, jax.tree_util.SequenceKey):
    return str(k.idx)
  if isinstance(k, jax.tree_util.FlattenedIndexKey):
    return str(k.key)
  return str(k)


def named_leaves(tree) -> dict[str, Any]:
  """{'params/encoder/proj/kernel': leaf, ...} for every leaf of `tree`."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = '/'.join(n for n in map(_key_name, path) if n is not None)
    if name in out:
      raise ValueError(f'two leaves of the train state are both named {name!r}')
    out[name] = leaf
  return out


def _nest(flat: dict[str, Any]) -> dict:
  nested: dict = {}
  for name, leaf in flat.items():
    node = nested
    *groups, last = name.split('/')
    for g in groups:
      node = node.setdefault(g, {})
    node[last] = leaf
  return nested


def _flat_metadata(tree, prefix='') -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat_metadata(v, f'{prefix}{k}/'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _no_space(e: BaseException | None) -> bool:
  """Whether `e` (or what caused it) is ENOSPC; tensorstore reports it as text in a ValueError."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(e)
    if 'No space left on device' in text or "os_error_code='28'" in text:
      return True
    e = e.__cause__ or e.__context__
  return False


class Checkpointer:
  """Saves / restores a train state under <workdir>/checkpoints/<step>, with its fingerprint."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    # Handlers named up front: a fresh manager (resume, eval) then reads either item alone.
    self.manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={'state': ocp.StandardCheckpointHandler(), 'run': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _writing(self, fn):
    """Runs an orbax write; a full disk becomes a one-line error (the half-written step stays
    in orbax's temporary folder and never counts as a checkpoint)."""
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except
      if _no_space(e):
        raise UserInputError(f'no space left on the device while writing a checkpoint in '
                             f'{self.directory}: free some space or pass another --workdir') from None
      raise

  def save(self, step: int, state, fingerprint: dict) -> None:
    # Checked up front: orbax's writer threads report a full disk noisily and late.
    need = sum(x.nbytes for x in jax.tree.leaves(state)) + (1 << 20)
    free = shutil.disk_usage(self.directory).free
    if free < need:
      raise UserInputError(f'no space left on the device for a checkpoint in {self.directory} '
                           f'({need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free): free some '
                           'space or pass another --workdir')
    self._writing(lambda: self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_nest(named_leaves(state))),
        run=ocp.args.JsonSave(fingerprint))))

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def saved_fingerprint(self, step: int) -> dict:
    if not os.path.isdir(os.path.join(self._step_dir(step), 'run')):
      raise UserInputError(f'checkpoint {self._step_dir(step)} has no run fingerprint (written by '
                           'an older dlvhd-jax): use a new --workdir')
    return self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore())).run

  def check_run(self, fingerprint: dict, step: int | None = None) -> None:
    """One-line error if the checkpoint at `step` (default latest) belongs to another run."""
    step = self.latest_step() if step is None else step
    saved = {**LEGACY_DEFAULTS, **self.saved_fingerprint(step)}
    diff = first_difference(saved, fingerprint)
    if diff:
      key, was, now = diff
      workdir = os.path.dirname(self.directory)
      raise UserInputError(f'{workdir} holds a run with {key}={was} but this command has '
                           f'{key}={now}: rerun with {key}={was} to resume it, or use a new --workdir')

  def restore(self, like, step: int | None = None):
    """The state at `step` (default latest) with the structure, shapes, dtypes and shardings
    of `like`; a missing or differently shaped array is a one-line error naming it."""
    step = self.latest_step() if step is None else step
    want = named_leaves(like)
    meta = self.manager.item_metadata(step)['state']
    have = _flat_metadata(dict(getattr(meta, 'tree', meta)))
    where = self._step_dir(step)
    for name, leaf in want.items():
      if name not in have:
        raise UserInputError(f'checkpoint {where} has no array {name}: it was written by another '
                             'method or model; use a new --workdir')
      if tuple(have[name].shape) != tuple(leaf.shape):
        raise UserInputError(f'checkpoint {where} holds {name} with shape {tuple(have[name].shape)}, '
                             f'this model needs {tuple(leaf.shape)}; use a new --workdir')
    abstract = _nest({n: ocp.utils.to_shape_dtype_struct(leaf) for n, leaf in want.items()})
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract))).state
    flat = _flat_metadata(restored)
    return jax.tree.unflatten(jax.tree.structure(like), [flat[n] for n in want])

  def wait(self) -> None:
    self._writing(self.manager.wait_until_finished)

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()
