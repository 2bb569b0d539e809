"""One experiment: load a category pair, train an objective, evaluate on the target test videos.

Order matters for "nothing partially written": the config is checked, the workdir's
writability probed and the data loaded before anything is written; the run's fingerprint is
checked against the workdir's checkpoints before config.json grows; test_scores.npz is
written before results.json, both atomically, so "results.json exists" means "the run is
complete".
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from app import config_checks, detector
from data_pipelines import context, datasets, normalize, synthetic
from dlvhd_jax import distributed, evaluation, hparams, methods, parallel, sampling, train
from dlvhd_jax import optimizer, replica_axis, train_step
from dlvhd_jax import model as model_lib
from dlvhd_jax.checkpoint import video_digest
from dlvhd_jax.errors import NonFiniteError, UserInputError
from dlvhd_jax.files import is_primary, write_json, write_npz
from dlvhd_jax.metrics_log import MetricsWriter

_BANK_DTYPES = {'float32': np.float32, 'bfloat16': jnp.bfloat16, 'float16': np.float16}


def resolve_data_root(cfg, workdir: str) -> str:
  """The embedded synthetic dataset is written on first use into <workdir>/data."""
  if cfg.data.get('name', 'youtube_highlights') == 'synthetic':
    root = cfg.data.root or os.path.join(workdir, 'data')
    check_writable(root, 'config.data.root')
    # Process 0 writes it; the others read it once it is complete.
    if is_primary():
      synthetic.write_synthetic_dataset(root, seed=cfg.data.get('synthetic_seed', 0))
    distributed.barrier('synthetic dataset written')
    return root
  return cfg.data.root


def data_categories(cfg, data_root: str) -> tuple[str, ...]:
  """Every category of the dataset (config.data.name) at `data_root`, read from its
  annotations only: a wrong root or a missing annotation file fails here, in one line."""
  data_cfg = cfg.data.copy_and_resolve_references()
  data_cfg.root = data_root
  return tuple(datasets.get(cfg.data.get('name', 'youtube_highlights')).categories(data_cfg))


def unknown_categories(cfg, names, have) -> list[str]:
  """The `names` that are no category of `have`, as the dataset's loader reads a name (with
  Dataset.prefix_names a prefix passes here, and the loader decides whether it is unique)."""
  if datasets.get(cfg.data.get('name', 'youtube_highlights')).prefix_names:
    return [n for n in names if not any(h.lower().startswith(str(n).lower()) for h in have)]
  return [n for n in names if n not in have]


def check_writable(path: str, field: str = '--workdir') -> None:
  """One-line error unless `path` exists as a writable folder or can be created (nothing is
  created here)."""
  probe = os.path.abspath(path)
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    raise UserInputError(f'{field}={path}: {probe} is a file, not a folder; choose another path')
  if not os.access(probe, os.W_OK | os.X_OK):
    raise UserInputError(f'{field}={path}: {probe} is not writable; choose a writable folder')


def validate(cfg) -> None:
  """Config mistakes as one-line errors before anything is loaded or compiled."""
  config_checks.validate(cfg)


def load_data(cfg, workdir: str, need_target_train: bool, target_category: str | None = None):
  """The run's CrossCategoryData with the training videos of data.extra_sources added to its
  source, its temporal context (data.context), normalized (with the source statistics); with
  `target_category`, that category's videos as the target instead of the config's."""
  data_cfg = cfg.data.copy_and_resolve_references()
  data_cfg.root = resolve_data_root(cfg, workdir)
  with data_cfg.unlocked():
    data_cfg.activitynet_label_rule = cfg.get('activitynet', {}).get('label_rule', 'spec')
    if target_category is not None:
      data_cfg.target_category = target_category
  load = datasets.get(cfg.data.get('name', 'youtube_highlights')).load
  data = load(data_cfg, need_target_train=need_target_train)
  extra = tuple(cfg.data.get('extra_sources', ()))
  if extra:
    data = datasets.with_extra_sources(data, data_cfg, load, extra)
  data = context.add_context(data, int(cfg.data.get('context', 0)))
  return normalize.normalize(data, cfg.data.get('normalize', 'none'))


def load(cfg, workdir: str):
  """-> (objective, CrossCategoryData, source bank, target bank or None)."""
  validate(cfg)
  check_writable(workdir)
  objective = methods.get_objective(cfg.method)
  data = load_data(cfg, workdir, objective.uses_target)
  dtype = _BANK_DTYPES[cfg.data.bank_dtype]
  source = sampling.make_bank([v.features for v in data.source_train],
                              [v.labels for v in data.source_train], dtype)
  target = (sampling.make_bank([v.features for v in data.target_train], None, dtype)
            if objective.uses_target else None)
  return objective, data, source, target


def record_config(workdir: str, cfg, mode: str, start_step: int | None) -> None:
  """Appends this run's config to <workdir>/config.json's history (oldest first)."""
  path = os.path.join(workdir, 'config.json')
  history = []
  if os.path.isfile(path):
    try:
      with open(path) as f:
        old = json.load(f)
      history = old['history'] if isinstance(old, dict) and 'history' in old else [{'config': old}]
    except (OSError, ValueError):
      history = []
  history.append({'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                  'mode': mode, 'start_step': start_step,
                  'config': json.loads(cfg.to_json_best_effort())})
  write_json(path, {'history': history})


def data_facts(data) -> dict:
  """What the fingerprint records of the data: which videos the run trains on."""
  return {'source_train_videos': video_digest(v.vid for v in data.source_train),
          'target_train_videos': video_digest(v.vid for v in data.target_train)}


def check_scores(scores: list[np.ndarray], vids: list[str], workdir: str) -> None:
  bad = [v for v, s in zip(vids, scores) if not np.all(np.isfinite(s))]
  if bad:
    n = sum(int(np.sum(~np.isfinite(s))) for s in scores)
    raise NonFiniteError(f'the model in {workdir} gives {n} NaN/inf test scores ({len(bad)} '
                         f'video(s), first {bad[0]}): it diverged; retrain with a lower '
                         'train.learning_rate')


def metric_of(cfg) -> str:
  """The dataset's headline metric (data_pipelines/datasets.py)."""
  return datasets.get(cfg.data.get('name', 'youtube_highlights')).metric


def eval_labels(videos, metric: str) -> list[np.ndarray]:
  """What the metric scores against: [A, T] annotator scores (top5_map) or [T] labels."""
  return [v.annotator_scores if metric == 'top5_map' else v.labels for v in videos]


def validator_factory(cfg, objective, mesh, videos):
  """-> make_validator(graphdef) for train.fit: source-validation mAP per seed (the
  published-code AP over the held-out source videos; -inf for a seed with NaN scores), or
  None without validation videos or evaluations."""
  if not videos or int(cfg.eval.get('every_steps', 0)) <= 0:
    return None
  replicas = replica_axis.num_replicas(cfg) > 1
  metric = metric_of(cfg)
  feats, labels = [v.features for v in videos], eval_labels(videos, metric)
  vids = [v.vid for v in videos]

  def make_validator(graphdef):
    logit_fn = evaluation.make_logit_fn(graphdef, tuple(objective.eval_heads), mesh, replicas)

    def validate(params):
      scores = evaluation.predict(graphdef, params, feats, objective.eval_heads, cfg, mesh,
                                  replicas=replicas, logit_fn=logit_fn)
      per_seed = split_replicas(cfg, scores)
      return np.array([evaluation.summarize(vids, labels, sc, metric)['map']
                       if all(np.isfinite(x).all() for x in sc) else -np.inf for sc in per_seed])
    return validate
  return make_validator


def split_replicas(cfg, scores: list[np.ndarray]) -> list[list[np.ndarray]]:
  """evaluation.predict's per-video [replicas, T] scores -> one list of [T] per replica."""
  if replica_axis.num_replicas(cfg) == 1:
    return [scores]
  return [[s[r] for s in scores] for r in range(replica_axis.num_replicas(cfg))]


def summarize_replicas(cfg, vids, labels, per_replica, metric, best_val=None, best_step=None,
                       diverged=None):
  """Test results of every replica -> the run's numbers. Without config.vary: the seeds'
  summary. With it: `per_value` holds every value's summary (the whole curve), the value with
  the best mean source-validation mAP (`best_val`, label-free) among those none of whose seeds
  diverged (`diverged` [replicas] bool) is `selected_value`, and its seeds' numbers are the
  run's own (`map`, `per_seed`, ...)."""
  groups = replica_axis.value_groups(cfg)
  values = hparams.values(cfg)
  seeds = replica_axis.seeds(cfg)
  diverged = np.zeros(len(per_replica), bool) if diverged is None else np.asarray(diverged)
  summaries = []
  for g, value in zip(groups, values):
    if diverged[g].any():
      summaries.append({'diverged': True, 'diverged_seeds': [seeds[i] for i, r in
                                                             enumerate(g) if diverged[r]]})
      continue
    summary = evaluation.summarize_seeds(vids, labels, [per_replica[i] for i in g], seeds, metric)
    if best_val is not None:
      summary['source_val_map'] = np.asarray(best_val).reshape(-1)[g].tolist()
      summary['selected_steps'] = np.asarray(best_step).reshape(-1)[g].tolist()
    summaries.append(summary)
  if values == (None,):
    return summaries[0]
  pick = replica_axis.selected_group(
      cfg, np.where(diverged, -np.inf, np.asarray(best_val).reshape(-1)))
  out = dict(summaries[pick])
  out.update({
      'vary_key': hparams.key(cfg),
      'vary_values': list(values),
      'selected_value': values[pick],
      'per_value': [{'value': v, **({k: sm[k] for k in (
          'map', 'map_std', 'map_ci95', 'map_umt', 'map_umt_std', 'map_umt_ci95',
          'source_val_map', 'selected_steps', 'tied_test_segments', 'per_seed')}
                                    if 'diverged' not in sm else sm)}
                    for v, sm in zip(values, summaries)],
  })
  return out


def vary_note(results: dict) -> str:
  if 'selected_value' not in results:
    return ''
  curve = ', '.join(f"{p['value']:g}: " + ('diverged' if p.get('diverged') else f"{p['map']:.4f}")
                    for p in results['per_value'])
  return (f"; {results['vary_key']}={results['selected_value']:g} chosen on source validation "
          f"(test mAP per value {curve})")


def run(cfg, workdir: str, mode: str = 'train', show_progress: bool = True) -> dict:
  """Trains (mode 'train', resuming from the latest checkpoint) or restores (mode 'eval'),
  then evaluates on the target test videos and writes <workdir>/results.json."""
  t0 = time.perf_counter()
  objective, data, source, target = load(cfg, workdir)
  mesh = parallel.make_mesh(fsdp=cfg.get('mesh', {}).get('fsdp', 1))
  parallel.check_batch(cfg.train.batch_size, mesh, 'train.batch_size')
  facts = data_facts(data)
  if mode == 'train':
    os.makedirs(workdir, exist_ok=True)
    # What --mode=predict must feed this model (features, extraction record, normalization).
    detector.write_feature_record(workdir, cfg, data)
    graphdef, state = train.fit(
        cfg, workdir, source, target, objective, mesh, in_dim=data.feature_dim,
        show_progress=show_progress, data_facts=facts,
        on_start=lambda step: record_config(workdir, cfg, mode, step),
        make_validator=validator_factory(cfg, objective, mesh, data.source_val))
  else:
    graphdef, state = train.restore_for_eval(cfg, workdir, data.feature_dim, objective, mesh,
                                             source.num_segments, data_facts=facts)
    record_config(workdir, cfg, mode, train_step.current_step(state))
  t_train = time.perf_counter() - t0
  vids = [v.vid for v in data.target_test]
  seeds = replica_axis.seeds(cfg)
  replicas = replica_axis.num_replicas(cfg) > 1
  scores = evaluation.predict(graphdef, train_step.eval_params(cfg, state),
                              [v.features for v in data.target_test], objective.eval_heads, cfg,
                              mesh, replicas=replicas)
  per_replica = split_replicas(cfg, scores)
  # Only a config.vary run gets here with diverged replicas (their value is left out).
  diverged = train_step.diverged_replicas(cfg, state)
  for sc, out in zip(per_replica, diverged):
    if not out:
      check_scores(sc, vids, workdir)
  metric = metric_of(cfg)
  test_labels = eval_labels(data.target_test, metric)
  selects = train_step.selects_best(cfg)
  best_val = np.asarray(jax.device_get(state.best_val)) if selects else None
  best_step = np.asarray(jax.device_get(state.best_step)) if selects else None
  results = summarize_replicas(cfg, vids, test_labels, per_replica, metric, best_val, best_step,
                               diverged)
  schedule = optimizer.make_schedule(cfg, source.num_segments)
  results.update({
      'method': cfg.method,
      'source_category': cfg.data.source_category,
      'target_category': cfg.data.target_category,
      'features': cfg.data.features,
      'model_variant': model_lib.variant_of(cfg),
      'head_dims': list(model_lib.resolved_head_dims(cfg, data.feature_dim)),
      'split': cfg.data.split,
      'edge_rule': cfg.eval.edge_rule,
      'seeds': seeds,
      'steps': train_step.current_step(state),
      'total_steps': schedule.total_steps,
      'steps_per_epoch': schedule.steps_per_epoch,
      'skipped_updates': int(np.sum(jax.device_get(state.skipped_updates))),
      'select': cfg.train.get('select', 'last'),
      'selected_steps': results.get('selected_steps'),
      'source_val_map': results.get('source_val_map'),
      'num_source_val_videos': len(data.source_val),
      'num_source_train_videos': len(data.source_train),
      'num_target_train_videos': len(data.target_train),
      'devices': int(mesh.devices.size),
      'train_wall_s': round(t_train, 2) if mode == 'train' else None,
      'wall_s': round(time.perf_counter() - t0, 2),
  })
  if train_step.selects_best(cfg):
    # The final parameters too, for the record (never used to choose anything).
    last = evaluation.predict(graphdef, state.params, [v.features for v in data.target_test],
                              objective.eval_heads, cfg, mesh, replicas=replicas)
    last = split_replicas(cfg, last)
    chosen = replica_axis.value_groups(cfg)[replica_axis.selected_group(
        cfg, np.where(diverged, -np.inf, best_val.reshape(-1)))]
    summary = evaluation.summarize_seeds(vids, test_labels, [last[i] for i in chosen], seeds,
                                         metric)
    results['last_step'] = {k: summary[k] for k in ('map', 'map_ci95', 'map_umt', 'map_umt_ci95')}
  write_npz(os.path.join(workdir, 'test_scores.npz'), dict(zip(vids, scores)))
  write_json(os.path.join(workdir, 'results.json'), results)
  # The test mAP beside the training curves in TensorBoard (mean and one tag per seed).
  tb = MetricsWriter(workdir)
  tb.scalars(results['steps'], {'test_map': results['map'],
                                'test_map_per_seed': [r['map'] for r in results.get('per_seed', [])]})
  tb.close()
  ci = lambda k: f" ± {results[k + '_ci95']:.4f}" if results[k + '_ci95'] is not None else ''
  if is_primary():
    headline = (f"top-5 mAP {results['map']:.4f}{ci('map')}" if metric == 'top5_map' else
                f"mAP {results['map']:.4f}{ci('map')} (UMT protocol {results['map_umt']:.4f}"
                f"{ci('map_umt')})")
    print(f"{cfg.method} {cfg.data.source_category} -> {cfg.data.target_category}: "
          f"{headline} over {results['num_test_videos']} test videos"
          f"{f', {len(seeds)} seeds (95% t interval)' if len(seeds) > 1 else ''}"
          f"{vary_note(results)}; "
          f"results in {workdir}/results.json", file=sys.stderr)
  return results
