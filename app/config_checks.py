"""Config mistakes as one-line errors before anything is loaded, compiled or written.

`validate(cfg)` checks every field a training run reads against RULES (allowed values,
ranges); `check_key(cfg, dotted, where)` refuses a key the config does not have and names
the closest one that it does.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Callable

from dlvhd_jax import evaluation, hparams, losses, methods, model
from dlvhd_jax.checkpoint import flatten_config
from dlvhd_jax.errors import UserInputError

Rule = tuple[Callable[[Any], bool], str]


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_of(*values) -> Rule:
  return (lambda v: v in values), 'one of ' + ', '.join(repr(x) for x in values)


def int_at_least(lo: int) -> Rule:
  return (lambda v: _is_int(v) and v >= lo), f'an integer >= {lo}'


def number_in(lo: float, hi: float = math.inf, *, lo_open=False, hi_open=False) -> Rule:
  def ok(v):
    return (_is_number(v) and (v > lo if lo_open else v >= lo)
            and (v < hi if hi_open else v <= hi))
  left, right = '(' if lo_open else '[', ')' if hi_open else ']'
  return ok, f'a number in {left}{lo}, {hi}{right}'


NON_NEGATIVE = number_in(0.0)
POSITIVE = number_in(0.0, lo_open=True)
BANK_DTYPES = ('float32', 'bfloat16', 'float16')

RULES: dict[str, Rule] = {
    'method': one_of(*sorted(methods.OBJECTIVES)),
    'seed': int_at_least(0),
    'num_seeds': int_at_least(1),
    'data.name': one_of('youtube_highlights', 'synthetic', 'tvsum', 'activitynet'),
    'data.annotation': one_of('official', 'public'),
    'data.source': one_of('files', 'tfds'),
    'data.clip_seconds': ((lambda v: _is_number(v) and (v > 0 or v == -1)),
                          "a positive number of seconds, or -1 for the dataset's own"),
    'activitynet.label_rule': one_of('spec', 'published'),
    'data.features': ((lambda v: isinstance(v, str) and any(p.strip() for p in v.split('+'))),
                      "a feature stream name such as 'rgb', 'opt' or 'rgb+opt'"),
    'data.split': one_of('umt', 'official', 'random', 'paper', 'kfold'),
    'data.num_folds': int_at_least(2),
    'data.fold': int_at_least(0),
    'data.split_seed': int_at_least(0),
    'data.bank_dtype': one_of(*BANK_DTYPES),
    'data.borderline_label': number_in(-1.0, 1.0),
    'data.normalize': one_of('none', 'l2', 'standardize'),
    'data.context': int_at_least(0),
    'data.extra_sources': ((lambda v: isinstance(v, (tuple, list))
                            and all(isinstance(x, str) and x for x in v)),
                           "a tuple of category names, e.g. ('BK','BT'), or () for none"),
    'data.graded_label': one_of('mean', 'above_median', 'zscore'),
    'data.val_fraction': number_in(0.0, 1.0, hi_open=True),
    'model.width': ((lambda v: _is_int(v) and (v == -1 or v >= 1)),
                    'an integer >= 1, or -1 for the feature dimension'),
    'model.depth': int_at_least(1),
    'model.num_heads': int_at_least(1),
    'model.mlp_ratio': int_at_least(1),
    'model.head_dims': ((lambda v: isinstance(v, (tuple, list)) and all(_is_int(x) and x >= 1
                                                                        for x in v)),
                        'a tuple of integers >= 1, e.g. (1024, 256), or () for the variant\'s'),
    'model.variant': one_of('published', 'v1'),
    'model.position': one_of(*model.POSITIONS),
    'model.dropout': number_in(0.0, 1.0, hi_open=True),
    'model.dtype': one_of('float32', 'bfloat16'),
    'sampling.set_size': int_at_least(2),
    'sampling.mode': one_of('random', 'window'),
    'sampling.mixed_share': one_of('half', 'uniform'),
    'sampling.source_label_in_mixed': number_in(-1.0, 0.0),
    'loss.distill_weight': NON_NEGATIVE,
    'loss.temperature': POSITIVE,
    'loss.set_loss': one_of(*losses.SET_LOSSES),
    'loss.rank_margin': POSITIVE,
    'loss.distill_to': one_of(*losses.DISTILL_TO),
    'uda.dan.weight': NON_NEGATIVE,
    'uda.dan.num_kernels': int_at_least(1),
    'uda.dan.kernel_mul': POSITIVE,
    'uda.coral.weight': NON_NEGATIVE,
    'uda.revgrad.weight': NON_NEGATIVE,
    'uda.revgrad.gamma': NON_NEGATIVE,
    'uda.mcd.weight': NON_NEGATIVE,
    'uda.mcd.num_k': int_at_least(1),
    'uda.afn.weight': NON_NEGATIVE,
    'uda.afn.delta_r': NON_NEGATIVE,
    'train.batch_size': int_at_least(1),
    'train.num_epochs': int_at_least(0),
    'train.num_steps': int_at_least(0),
    'train.optimizer': one_of('sgd', 'adamw'),
    'train.learning_rate': POSITIVE,
    'train.lr_schedule': one_of('step', 'cosine', 'constant'),
    'train.warmup_steps': int_at_least(0),
    'train.momentum': number_in(0.0, 1.0, hi_open=True),
    'train.weight_decay': NON_NEGATIVE,
    'train.lr_decay_epochs': POSITIVE,
    'train.lr_decay_factor': number_in(0.0, 1.0, lo_open=True),
    'train.steps_per_dispatch': int_at_least(1),
    'train.log_every_steps': int_at_least(1),
    'train.checkpoint_every_steps': int_at_least(1),
    'train.max_checkpoints': int_at_least(1),
    'train.transfer_guard': one_of('allow', 'log', 'disallow', 'log_explicit',
                                   'disallow_explicit'),
    'mesh.fsdp': int_at_least(1),
    'eval.edge_rule': one_of('duplicate', 'shrink'),
    'eval.head_fusion': one_of(*evaluation.FUSIONS),
    'eval.batch_size': int_at_least(1),
    'eval.every_steps': int_at_least(0),
    'train.select': one_of('last', 'best_source_val'),
}


def validate(cfg) -> None:
  """Raises UserInputError naming the first invalid field and what it accepts."""
  flat = flatten_config(cfg.to_dict())
  for key, (ok, allowed) in RULES.items():
    if key in flat and not ok(flat[key]):
      raise UserInputError(f'config.{key}={flat[key]!r} is invalid: use {allowed}')
  if flat.get('train.num_steps', 0) == 0 and flat.get('train.num_epochs', 1) == 0:
    raise UserInputError('config.train.num_epochs=0 with train.num_steps=0 trains nothing: set '
                         'one of them > 0')
  if flat.get('train.select') == 'best_source_val' and not (
      flat.get('data.val_fraction', 0) > 0 and flat.get('eval.every_steps', 0) > 0):
    raise UserInputError('config.train.select=best_source_val needs source validation videos '
                         'and evaluations: set data.val_fraction > 0 (e.g. 0.2) and '
                         'eval.every_steps > 0')
  _check_vary(flat)
  _check_position(flat)
  width, heads = flat.get('model.width', -1), flat.get('model.num_heads', 1)
  if width > 0 and width % heads:
    raise UserInputError(f'config.model.width={width} is not divisible by '
                         f'model.num_heads={heads}: use a multiple of {heads}')


def _check_position(flat: dict) -> None:
  """model.position=learned: the slots must mean places in time, and nothing else."""
  position = flat.get('model.position', 'none')
  if position == 'none':
    return
  if not flat.get('model.use_encoder', True):
    raise UserInputError(f'config.model.position={position!r} needs the set Transformer: set '
                         'model.use_encoder=True (or model.position=none)')
  if flat.get('sampling.mode') != 'window':
    raise UserInputError(f'config.model.position={position!r} reads sets in time order, and '
                         'random sets have none: set sampling.mode=window')
  method = flat.get('method', '')
  if method in methods.OBJECTIVES and methods.OBJECTIVES[method].reads_mixed_sets:
    raise UserInputError(f'config.model.position={position!r} with method={method!r}: its mixed '
                         "sets put the target's segments in the first slots, which positions "
                         'would give away; use model.position=none')


def _check_vary(flat: dict) -> None:
  """config.vary: a vectorizable key, distinct values that its own rule accepts, and source
  validation to choose among them."""
  key, values = flat.get('vary.key', ''), flat.get('vary.values', [])
  if not key:
    if values:
      raise UserInputError(f'config.vary.values={tuple(values)!r} without vary.key: name the '
                           f'hyper-parameter, one of {", ".join(hparams.VECTORIZABLE)}')
    return
  if key not in hparams.VECTORIZABLE:
    raise UserInputError(f'config.vary.key={key!r} cannot vary inside one program: use one of '
                         f'{", ".join(hparams.VECTORIZABLE)} (or --mode=sweep for others)')
  if not isinstance(values, (list, tuple)) or len(values) < 2:
    raise UserInputError(f'config.vary.values={values!r} is invalid: give at least two values of '
                         f'{key}, e.g. "(0.1,1.0,10.0)"')
  ok, allowed = RULES[key]
  for v in values:
    if not ok(v):
      raise UserInputError(f'config.vary.values has {key}={v!r}: use {allowed}')
  if len(set(values)) != len(values):
    raise UserInputError(f'config.vary.values={tuple(values)!r} repeats a value: list each once')
  if flat.get('train.select') != 'best_source_val':
    raise UserInputError('config.vary chooses its value on source validation: set '
                         'train.select=best_source_val (with data.val_fraction > 0 and '
                         'eval.every_steps > 0)')


def check_key(cfg, dotted: str, where: str) -> None:
  """Refuses `dotted` unless the config has it; suggests the closest existing key."""
  keys = flatten_config(cfg.to_dict())
  if dotted in keys:
    return
  close = difflib.get_close_matches(dotted, list(keys), n=1, cutoff=0.6)
  hint = f'; did you mean {close[0]}?' if close else ''
  raise UserInputError(f'{where}: config has no key {dotted}{hint}')
