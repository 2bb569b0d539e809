"""One experiment: load a category pair, train an objective, evaluate on the target test videos."""
from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import synthetic, youtube_highlights
from data_pipelines.errors import UserInputError
from dlvhd_jax import evaluation, objectives, parallel, sampling, train

_BANK_DTYPES = {'float32': np.float32, 'bfloat16': jnp.bfloat16, 'float16': np.float16}


def resolve_data_root(cfg, workdir: str) -> str:
  """The embedded synthetic dataset is written on first use into <workdir>/data."""
  if cfg.data.get('name', 'youtube_highlights') == 'synthetic':
    root = cfg.data.root or os.path.join(workdir, 'data')
    return synthetic.write_synthetic_dataset(root, seed=cfg.data.get('synthetic_seed', 0))
  return cfg.data.root


def validate(cfg) -> None:
  """Config mistakes as one-line errors before anything is loaded or compiled."""
  objectives.get_objective(cfg.method)
  checks = [
      (cfg.sampling.mode in ('random', 'window'), 'sampling.mode', "'random' or 'window'"),
      (cfg.sampling.mixed_share in ('half', 'uniform'), 'sampling.mixed_share', "'half' or 'uniform'"),
      (cfg.eval.edge_rule in ('duplicate', 'shrink'), 'eval.edge_rule', "'duplicate' or 'shrink'"),
      (cfg.model.dtype in ('float32', 'bfloat16'), 'model.dtype', "'float32' or 'bfloat16'"),
      (cfg.data.bank_dtype in _BANK_DTYPES, 'data.bank_dtype', str(sorted(_BANK_DTYPES))),
      (cfg.sampling.set_size >= 2, 'sampling.set_size', 'an integer >= 2'),
      (cfg.train.batch_size >= 1, 'train.batch_size', 'an integer >= 1'),
  ]
  for ok, field, allowed in checks:
    if not ok:
      raise UserInputError(f'config.{field}={cfg[field.split(".")[0]][field.split(".")[1]]!r} '
                           f'is invalid: use {allowed}')


def load(cfg, workdir: str):
  """-> (objective, CrossCategoryData, source bank, target bank or None)."""
  validate(cfg)
  objective = objectives.get_objective(cfg.method)
  data_cfg = cfg.data.copy_and_resolve_references()
  data_cfg.root = resolve_data_root(cfg, workdir)
  data = youtube_highlights.load_cross_category(data_cfg, need_target_train=objective.uses_target)
  dtype = _BANK_DTYPES[cfg.data.bank_dtype]
  source = sampling.make_bank([v.features for v in data.source_train],
                              [v.labels for v in data.source_train], dtype)
  target = (sampling.make_bank([v.features for v in data.target_train], None, dtype)
            if objective.uses_target else None)
  return objective, data, source, target


def write_json(path: str, obj) -> None:
  """Atomic: a reader never sees a half-written file."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def run(cfg, workdir: str, mode: str = 'train', show_progress: bool = True) -> dict:
  """Trains (mode 'train', resuming from the latest checkpoint) or restores (mode 'eval'),
  then evaluates on the target test videos and writes <workdir>/results.json."""
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  objective, data, source, target = load(cfg, workdir)
  mesh = parallel.make_mesh()
  if mode == 'train':
    write_json(os.path.join(workdir, 'config.json'), json.loads(cfg.to_json_best_effort()))
    graphdef, state = train.fit(cfg, workdir, source, target, objective, mesh,
                                in_dim=data.feature_dim, show_progress=show_progress)
  else:
    graphdef, state = train.restore_for_eval(cfg, workdir, data.feature_dim, objective, mesh,
                                             source.num_segments)
  t_train = time.perf_counter() - t0
  scores = evaluation.predict(graphdef, state.params, [v.features for v in data.target_test],
                              objective.eval_heads, cfg, mesh)
  results = evaluation.summarize([v.vid for v in data.target_test],
                                 [v.labels for v in data.target_test], scores)
  schedule = train.make_schedule(cfg, source.num_segments)
  results.update({
      'method': cfg.method,
      'source_category': cfg.data.source_category,
      'target_category': cfg.data.target_category,
      'features': cfg.data.features,
      'split': cfg.data.split,
      'edge_rule': cfg.eval.edge_rule,
      'steps': int(jax.device_get(state.step)),
      'total_steps': schedule.total_steps,
      'steps_per_epoch': schedule.steps_per_epoch,
      'num_source_train_videos': len(data.source_train),
      'num_target_train_videos': len(data.target_train),
      'devices': jax.device_count(),
      'train_wall_s': round(t_train, 2) if mode == 'train' else None,
      'wall_s': round(time.perf_counter() - t0, 2),
  })
  write_json(os.path.join(workdir, 'results.json'), results)
  np.savez(os.path.join(workdir, 'test_scores.npz'),
           **{v.vid: s for v, s in zip(data.target_test, scores)})
  print(f"{cfg.method} {cfg.data.source_category} -> {cfg.data.target_category}: "
        f"mAP {results['map']:.4f} (UMT protocol {results['map_umt']:.4f}) over "
        f"{results['num_test_videos']} test videos; results in {workdir}/results.json",
        file=sys.stderr)
  return results
