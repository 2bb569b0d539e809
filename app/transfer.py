"""`--mode=sweep` with `sweep.kind='matrix'`: the transfer-gap matrix of a dataset.

Per category c one category-specific SL-module (source c; all `num_seeds` seeds in one
vectorized program, checkpoint selection as configured: on c's source validation videos),
trained once in <workdir>/sl_specific__<c>/ and then evaluated on the test videos of every
category without retraining. Cell (c, t) is the model trained on c tested on t:

  diagonal (t, t)   the target-oracle of column t (the model trained on t's own labels)
  off-diagonal      source-only: trained on c, never saw t
  gap(c -> t)       oracle(t) - source-only(c -> t): what an adaptation method could gain at
                    most, with a paired bootstrap over seeds x t's test videos (seeds paired
                    by index); a pair whose 95% interval excludes 0 has a significant gap.

Each cell's scores per target are kept in <cell>/transfer.json (its summary) and
transfer_scores.npz, so a rerun evaluates only what is missing and trains nothing twice.

With data.split=kfold (TVSum, 5 videos per category; also the YouTube Highlights layout) each
category trains one model per fold (<workdir>/sl_specific__<c>__fold<k>/); the fold-k model
of c is tested on the fold-k
videos of every target, so over the folds every video of every target is tested once, by a
model that did not train on it, and oracle and source-only stay paired video by video.
Artifacts in the sweep folder (rewritten after every category): matrix.json, matrix.md and
gap.png (the heat map, significant pairs marked).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
import numpy as np

from app import experiment, sweep, tables
from dlvhd_jax import evaluation, files, methods, objectives, parallel, replica_axis, stats
from dlvhd_jax import train, train_step
from dlvhd_jax.errors import UserInputError

TRANSFER = 'transfer.json'
SCORES = 'transfer_scores.npz'
METRICS = ('map', 'map_umt')


def categories(cfg, data_root: str | None) -> tuple[str, ...]:
  """sweep.targets, or when it is empty every category of the dataset at `data_root`; each
  checked against the data there (not read when `data_root` is None)."""
  cats = tuple(cfg.sweep.get('targets', ()) or ())
  if data_root is not None:
    have = experiment.data_categories(cfg, data_root)
    unknown = experiment.unknown_categories(cfg, cats, have)
    if unknown:
      raise UserInputError(f'config.sweep.targets names {unknown[0]!r}, which is not a category '
                           f'of {data_root}; categories there: {list(have)} (or () for all)')
    cats = cats or have
  if len(cats) < 2:
    raise UserInputError(f'config.sweep.targets={cats!r}: a transfer matrix needs at least two '
                         'categories (e.g. --config.sweep.targets="(\'dog\',\'surfing\')", or '
                         '() for every category of the data)')
  if len(set(cats)) != len(cats):
    raise UserInputError(f'config.sweep.targets={cats!r} names a category twice: name each once')
  return cats


def cell_name(category: str, fold: int | None = None) -> str:
  return f'sl_specific__{sweep.slug(category)}' + ('' if fold is None else f'__fold{fold}')


@dataclasses.dataclass
class Restored:
  """A finished run, ready to score any category's test videos."""
  objective: objectives.Objective
  data: object  # its CrossCategoryData (normalized)
  mesh: object
  graphdef: object
  params: object  # eval parameters ([R, ...] when `replicas`)
  replicas: bool
  best_val: np.ndarray | None  # [R] source-validation mAP of the selected steps
  best_step: np.ndarray | None
  diverged: np.ndarray  # [R] bool

  def scores(self, cfg, videos, heads, logit_fn=None) -> list[np.ndarray]:
    """Test scores of `videos` under the mean of `heads`: [T_v] each ([R, T_v] with replicas)."""
    return evaluation.predict(self.graphdef, self.params, [v.features for v in videos],
                              tuple(heads), cfg, self.mesh, replicas=self.replicas,
                              logit_fn=logit_fn)


def restore(sub, cell_dir: str) -> Restored:
  """The latest checkpoint of the run in `cell_dir` (config `sub`)."""
  objective = methods.get_objective(sub.method)
  data = experiment.load_data(sub, cell_dir, objective.uses_target)
  mesh = parallel.make_mesh(fsdp=sub.get('mesh', {}).get('fsdp', 1))
  num_segments = sum(len(v.features) for v in data.source_train)  # = the source bank's
  graphdef, state = train.restore_for_eval(sub, cell_dir, data.feature_dim, objective, mesh,
                                           num_segments, data_facts=experiment.data_facts(data))
  selects = train_step.selects_best(sub)
  return Restored(
      objective, data, mesh, graphdef, train_step.eval_params(sub, state),
      replica_axis.num_replicas(sub) > 1,
      np.asarray(jax.device_get(state.best_val)) if selects else None,
      np.asarray(jax.device_get(state.best_step)) if selects else None,
      train_step.diverged_replicas(sub, state))


def evaluate_on(sub, cell_dir: str, targets) -> tuple[dict, dict]:
  """The trained run in `cell_dir` (config `sub`) on the test videos of each of `targets`:
  -> ({target: the summary results.json would hold}, {target: {vid: scores [R, T]}})."""
  run = restore(sub, cell_dir)
  heads = tuple(run.objective.eval_heads)
  logit_fn = evaluation.make_logit_fn(run.graphdef, heads, run.mesh, run.replicas)
  metric = experiment.metric_of(sub)
  summaries, scores_out = {}, {}
  for t in targets:
    test = experiment.load_data(sub, cell_dir, False, target_category=t).target_test
    vids = [v.vid for v in test]
    scores = run.scores(sub, test, heads, logit_fn)
    per_replica = experiment.split_replicas(sub, scores)
    for sc, out in zip(per_replica, run.diverged):
      if not out:
        experiment.check_scores(sc, vids, cell_dir)
    summaries[t] = experiment.summarize_replicas(
        sub, vids, experiment.eval_labels(test, metric), per_replica, metric, run.best_val,
        run.best_step, run.diverged)
    summaries[t].update({'source_category': sub.data.source_category, 'target_category': t})
    scores_out[t] = {v: np.asarray(s) for v, s in zip(vids, scores)}
  return summaries, scores_out


def _load_transfer(cell_dir: str) -> dict:
  path = os.path.join(cell_dir, TRANSFER)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _save_transfer(cell_dir: str, summaries: dict, scores: dict) -> None:
  old = {}
  path = os.path.join(cell_dir, SCORES)
  if os.path.isfile(path):
    with np.load(path) as z:
      old = {k: z[k] for k in z.files}
  for t, per_video in scores.items():
    for v, s in per_video.items():
      old[f'{t}/{v}'] = s
  files.write_npz(path, old)  # scores first: transfer.json lists only what is complete
  files.write_json(os.path.join(cell_dir, TRANSFER), summaries)


def _gap(oracle: dict, source_only: dict, metric: str):
  key = f'_videos_{metric}'
  if key not in oracle or key not in source_only:
    return None
  a, b = oracle[key], source_only[key]
  if a.shape != b.shape:
    return None
  return stats.paired_bootstrap([(a, b)])


def split_label(cfg) -> str:
  """'umt', 'kfold (5 folds)', ...: the split as matrix.json names it."""
  return cfg.data.split + (f' ({cfg.data.num_folds} folds)' if cfg.data.split == 'kfold' else '')


def build_matrix(cfg, cats, cells: dict) -> dict:
  """cells[c][t] = tables.cell_record -> the matrix as data (see the module docstring)."""
  out = {'categories': list(cats), 'features': cfg.data.features, 'split': split_label(cfg),
         'dataset': cfg.data.get('name', 'youtube_highlights'),
         'metric': experiment.metric_of(cfg), 'num_seeds': replica_axis.num_replicas(cfg),
         # Per target, how many test videos its column rests on (a bootstrap over one video
         # covers the seeds only).
         'num_test_videos': {t: cells.get(t, {}).get(t, {}).get('num_test_videos')
                             for t in cats}}
  for metric in METRICS:
    means = {c: {t: cells.get(c, {}).get(t, {}).get(metric) for t in cats} for c in cats}
    cis = {c: {t: cells.get(c, {}).get(t, {}).get(f'{metric}_ci95') for t in cats} for c in cats}
    gaps, significant = {}, []
    for c in cats:
      gaps[c] = {}
      for t in cats:
        if c == t:
          continue
        g = _gap(cells.get(t, {}).get(t, {}), cells.get(c, {}).get(t, {}), metric)
        gaps[c][t] = g
        if g is not None and (g['lo'] > 0 or g['hi'] < 0):
          significant.append({'source': c, 'target': t, **g})
    significant.sort(key=lambda g: -g['diff'])
    out[metric], out[f'{metric}_ci95'] = means, cis
    out[f'{metric}_gap'], out[f'{metric}_significant'] = gaps, significant
  return out


def _fmt(v, ci):
  return '–' if v is None else f'{v:.3f}' + (f' ± {ci:.3f}' if ci is not None else '')


def to_markdown(matrix: dict, title: str) -> str:
  cats = matrix['categories']
  metric_name = 'top-5 mAP' if matrix['metric'] == 'top5_map' else 'mAP'
  lines = [f'# {title}', '',
           f"{matrix['dataset']}, features {matrix['features']}, split {matrix['split']}, "
           f"{matrix['num_seeds']} seed(s) per model; {metric_name}, mean ± 95% t interval over "
           'seeds. Row = the category the SL-module was trained on, column = the category it '
           'was tested on; the diagonal is each column\'s target-oracle.', '',
           '| trained on ↓ / tested on → | ' + ' | '.join(cats) + ' |',
           '|---|' + '---:|' * len(cats)]
  for c in cats:
    cells = [_fmt(matrix['map'][c][t], matrix['map_ci95'][c][t]) for t in cats]
    cells = [f'**{x}**' if c == t else x for x, t in zip(cells, cats)]
    lines.append(f'| {c} | ' + ' | '.join(cells) + ' |')
  lines += ['', 'Gap = oracle(t) − source-only(c → t), with the 95% interval of a paired '
            'bootstrap over seeds × the test videos of t; * = the interval excludes 0.', '',
            '| source ↓ / target → | ' + ' | '.join(cats) + ' |', '|---|' + '---:|' * len(cats)]
  for c in cats:
    row = []
    for t in cats:
      g = matrix['map_gap'].get(c, {}).get(t)
      if c == t or g is None:
        row.append('·' if c == t else '–')
      else:
        star = '*' if g['lo'] > 0 or g['hi'] < 0 else ''
        row.append(f"{g['diff']:+.3f}{star} [{g['lo']:+.3f}, {g['hi']:+.3f}]")
    lines.append(f'| {c} | ' + ' | '.join(row) + ' |')
  above, below = significant_by_sign(matrix)
  pairs = lambda gs: ', '.join(f"{g['source']} → {g['target']} {g['diff']:+.3f}"  # noqa: E731
                               for g in gs) if gs else 'none'
  n = len(cats) * (len(cats) - 1)
  lines += ['', f'Pairs with a significant gap, the target\'s own model better ({len(above)} '
            f'of {n}), largest first: {pairs(above)}.', '',
            f'Pairs where the source\'s model is significantly better than the target\'s own '
            f'({len(below)} of {n}): {pairs(below[::-1])}.', '']
  few = [t for t in cats if (matrix.get('num_test_videos') or {}).get(t) == 1]
  if few:
    lines += [f'Tested on one video: {", ".join(few)}. Their intervals cover the seeds only, '
              'not other videos of the category; `--config.data.split=kfold` tests every '
              'video once.', '']
  return '\n'.join(lines)


def significant_by_sign(matrix: dict, metric: str = 'map') -> tuple[list, list]:
  """(pairs whose oracle is significantly above source-only: a gap adaptation could close,
  largest first; pairs significantly below it, most negative last)."""
  sig = matrix[f'{metric}_significant']
  return [g for g in sig if g['diff'] > 0], [g for g in sig if g['diff'] < 0]


def plot(matrix: dict, path: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cats = matrix['categories']
  n = len(cats)
  gap = np.full((n, n), np.nan)
  for i, c in enumerate(cats):
    for j, t in enumerate(cats):
      g = matrix['map_gap'].get(c, {}).get(t)
      if g is not None:
        gap[i, j] = g['diff']
  lim = max(0.05, float(np.nanmax(np.abs(gap))) if np.isfinite(gap).any() else 0.05)
  fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.65 * n))
  im = ax.imshow(gap, cmap='RdBu_r', vmin=-lim, vmax=lim)
  for i, c in enumerate(cats):
    for j, t in enumerate(cats):
      g = matrix['map_gap'].get(c, {}).get(t)
      if i == j:
        ax.text(j, i, f"{matrix['map'][c][t]:.2f}" if matrix['map'][c][t] is not None else '',
                ha='center', va='center', fontsize=7, color='0.4')
      elif g is not None:
        star = '*' if g['lo'] > 0 or g['hi'] < 0 else ''
        ax.text(j, i, f"{g['diff']:+.2f}{star}", ha='center', va='center', fontsize=7,
                fontweight='bold' if star else 'normal',
                color='white' if abs(g['diff']) > 0.6 * lim else 'black')
  ax.set_xticks(range(n), cats, rotation=45, ha='right', fontsize=8)
  ax.set_yticks(range(n), cats, fontsize=8)
  ax.set_xlabel('target (tested on); diagonal: the target-oracle\'s mAP')
  ax.set_ylabel('source (trained on)')
  ax.set_title(title, fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
               label='oracle − source-only (* : 95% interval excludes 0)')
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)


def write_artifacts(cfg, workdir: str, cats, cells: dict) -> dict:
  matrix = build_matrix(cfg, cats, cells)
  if files.is_primary():
    title = cfg.sweep.get('title', '') or 'Transfer-gap matrix'
    files.write_json(os.path.join(workdir, 'matrix.json'), matrix)
    files.write_atomic(os.path.join(workdir, 'matrix.md'), to_markdown(matrix, title))
    plot(matrix, os.path.join(workdir, 'gap.png'),
         f"{title}: {matrix['dataset']}, {matrix['features']}, split {matrix['split']}, "
         f"{matrix['num_seeds']} seeds")
  return matrix


def _with_stats(per_seed: list[dict], **extra) -> dict:
  """Per-seed summaries -> a summary: per metric the mean and the 95% t interval over seeds,
  as evaluation.summarize_seeds."""
  out = {'per_seed': per_seed, 'num_seeds': len(per_seed), **extra}
  for metric in METRICS:
    m = stats.mean_ci([s[metric] for s in per_seed])
    out.update({metric: m['mean'], f'{metric}_std': m['std'], f'{metric}_ci95': m['ci95']})
  return out


def merge_folds(parts: list[dict]) -> dict:
  """Summaries of one (source, target) cell over the k folds (each tested other videos of
  the target) -> one summary over all of them: per seed, the per-video APs of every fold;
  mAP = their mean; the interval over seeds as evaluation.summarize_seeds."""
  seeds = [p['seed'] for p in parts[0]['per_seed']]
  if any([p['seed'] for p in part['per_seed']] != seeds for part in parts):
    raise UserInputError(f'the folds of one cell ran different seeds ({seeds} and others): run '
                         'every fold with the same --config.seed and --config.num_seeds')
  per_seed = []
  for i, seed in enumerate(seeds):
    merged = {'seed': seed}
    for key, metric in (('per_video_ap', 'map'), ('per_video_ap_umt', 'map_umt')):
      aps = {v: a for p in parts for v, a in p['per_seed'][i][key].items()}
      merged[key] = aps
      valid = [a for a in aps.values() if a is not None]
      merged[metric] = float(np.mean(valid)) if valid else float('nan')
    per_seed.append(merged)
  out = _with_stats(per_seed, num_folds=len(parts),
                    num_test_videos=sum(p.get('num_test_videos', 0) for p in parts),
                    steps=parts[0].get('steps'), wall_s=sum(p.get('wall_s') or 0 for p in parts))
  vals = [p.get('source_val_map') for p in parts]
  if all(v for v in vals):
    out['source_val_map'] = np.mean(np.array(vals, np.float64), axis=0).tolist()
  return out


# results.json lists with one entry per seed, kept beside per_seed when seeds are regrouped.
_PER_SEED_LISTS = ('source_val_map', 'selected_steps')


def _seed_rows(summary: dict) -> dict:
  """-> {seed: (its per_seed entry, {key: its entry of each per-seed list})}."""
  n = len(summary['per_seed'])
  return {p['seed']: (p, {k: summary[k][i] for k in _PER_SEED_LISTS
                          if isinstance(summary.get(k), list) and len(summary[k]) == n})
          for i, p in enumerate(summary['per_seed'])}


def _of_seeds(template: dict, rows: list) -> dict:
  """The scalar fields of `template` (method, categories, steps, ...) and the statistics of
  `rows` ([(per_seed entry, per-seed list entries)], in order)."""
  scalars = {k: v for k, v in template.items()
             if not isinstance(v, (list, dict)) and not k.startswith(METRICS)}
  lists = {k: [r[1][k] for r in rows] for k in _PER_SEED_LISTS if all(k in r[1] for r in rows)}
  return {**scalars, **_with_stats([r[0] for r in rows], seeds=[r[0]['seed'] for r in rows],
                                   **lists)}


def merge_seeds(parts: list[dict]) -> dict:
  """Summaries of one cell from runs over disjoint seeds (say --config.seed=0
  --config.num_seeds=3, then --config.seed=3 --config.num_seeds=2) -> one summary over all
  of their seeds, in seed order. Replica r of a run is the standalone run with seed + r
  (tests/test_seeds.py), so the merge is the run those seeds would have made together."""
  rows = sorted((item for part in parts for item in _seed_rows(part).items()),
                key=lambda item: item[0])
  seeds = [s for s, _ in rows]
  if len(set(seeds)) != len(seeds):
    raise UserInputError(f'runs of one cell share seeds ({seeds}): pass each seed once')
  if len({tuple(sorted(p['per_seed'][0]['per_video_ap'])) for p in parts}) != 1:
    raise UserInputError('runs of one cell tested different videos: merge only runs of one '
                         'split and fold')
  return {**_of_seeds(parts[0], [r for _, r in rows]),
          'wall_s': sum(p.get('wall_s') or 0 for p in parts)}


def pick_seeds(summary: dict, seeds: list[int], what: str) -> dict:
  """`summary` restricted to `seeds`, in that order: e.g. the cells of a 5-seed matrix paired
  with a method run over seeds 0..2."""
  have = _seed_rows(summary)
  missing = [s for s in seeds if s not in have]
  if missing:
    raise UserInputError(f'{what} has no seed {missing[0]} (it ran seeds {sorted(have)}): '
                         'run the method over seeds the matrix has (--config.seed, '
                         '--config.num_seeds)')
  return _of_seeds(summary, [have[s] for s in seeds])


def _folds(cfg) -> list[int | None]:
  return list(range(int(cfg.data.num_folds))) if cfg.data.split == 'kfold' else [None]


def _overrides(c: str, fold: int | None) -> dict:
  return {'data.source_category': c, **({} if fold is None else {'data.fold': fold})}


def _train_and_evaluate(cfg, workdir, data_root, cats, c, fold, progress):
  """-> ({target: summary} of the model trained on `c` (in fold `fold`), done before) or
  (None, message) when it is not trained or diverged."""
  sub = sweep.cell_config(cfg, c, 'sl', _overrides(c, fold), data_root)
  cell_dir = os.path.join(workdir, cell_name(c, fold))
  res, done_before = sweep._run_cell(cfg, cell_dir, data_root, c, 'sl',  # pylint: disable=protected-access
                                     _overrides(c, fold), progress)
  if res is None or 'diverged' in res:
    return None, 'not trained yet' if res is None else 'diverged: ' + res['diverged']
  summaries = _load_transfer(cell_dir)
  missing = [t for t in cats if t != c and t not in summaries]
  if missing:
    new, scores = evaluate_on(sub, cell_dir, missing)
    summaries.update(new)
    if files.is_primary():
      _save_transfer(cell_dir, summaries, scores)
  summaries[c] = res  # the diagonal: the run's own results
  return summaries, done_before


def run(cfg, workdir: str, progress: bool = True) -> int:
  experiment.check_writable(workdir)
  if cfg.sweep.get('targets', ()):
    categories(cfg, None)  # named categories are checked before anything is written
  data_root = experiment.resolve_data_root(cfg, workdir)
  cats = categories(cfg, data_root)  # a data root without annotations fails here, before mkdir
  folds = _folds(cfg)
  # Every cell's config and the categories it names are checked before anything is written,
  # and a finished cell measured under another config is refused (or moved aside:
  # sweep.redo_stale), as in a table's sweep.
  plan = [(c, c, cell_name(c, f), 'sl', _overrides(c, f)) for c in cats for f in folds]
  sweep.distinct_folders(plan)
  sweep.check_categories(cfg, plan, data_root)
  os.makedirs(workdir, exist_ok=True)
  sweep._check_stale(cfg, workdir, plan, data_root)  # pylint: disable=protected-access
  cells = {}
  for i, c in enumerate(cats):
    parts, done_before, problem = [], True, None
    for f in folds:
      got, how = _train_and_evaluate(cfg, workdir, data_root, cats, c, f, progress)
      if got is None:
        problem = how
        break
      parts.append(got)
      done_before = done_before and how
    if problem:
      print(f'[{i + 1}/{len(cats)}] {c}: {problem}', file=sys.stderr)
      continue
    summaries = parts[0] if len(parts) == 1 else {
        t: merge_folds([p[t] for p in parts]) for t in cats}
    cell_dir = os.path.join(workdir, cell_name(c, folds[0]))
    cells[c] = {t: tables.cell_record(summaries[t], cell_dir) for t in cats if t in summaries}
    if files.is_primary():
      row = ', '.join(f"{t} {cells[c][t]['map']:.3f}" for t in cats if t in cells[c])
      print(f"[{i + 1}/{len(cats)}] SL trained on {c}{' (done before)' if done_before else ''}: "
            f'{row}', file=sys.stderr)
    write_artifacts(cfg, workdir, cats, cells)
  matrix = write_artifacts(cfg, workdir, cats, cells)
  if files.is_primary():
    above, below = significant_by_sign(matrix)
    print(f'transfer matrix of {len(cats)} categories: {workdir}/matrix.md, matrix.json, gap.png; '
          f'{len(above)} pair(s) with a significant gap (oracle above source-only), '
          f'{len(below)} with the source\'s model significantly better', file=sys.stderr)
  return 0
