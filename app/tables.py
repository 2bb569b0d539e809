"""A sweep's artifacts: table.json, table.md and table.png, with statistics over seeds.

Each cell is the mean over the run's seeds with its 95% t interval; the Average column
averages the targets per seed, then takes the interval over seeds. Every method is compared
with source-only (row `sl`) by a paired bootstrap over seeds x test videos (difference of
means and its 95% interval). A cell is bold only where its row is significantly best: the
paired bootstrap against every other row of the column excludes 0.
"""
from __future__ import annotations

import ast
import math
import os

import numpy as np

from app import experiment
from dlvhd_jax import files, stats

LABELS = {
    'sl': 'Source-only', 'dan': 'DAN', 'coral': 'DeepCORAL', 'revgrad': 'RevGrad',
    'mcd': 'MCD', 'afn': 'AFN', 'dlvhd_coarse_only': 'DL-VHD (L_coarse only)',
    'dlvhd_fine_only': 'DL-VHD (L_fine only)', 'dlvhd_no_distill': 'DL-VHD (w/o L_distill)',
    'dlvhd_coarse_sg': 'DL-VHD (coarse stop-gradient)',
    'dlvhd': 'DL-VHD (full model)', 'sl_oracle': 'Target-oracle',
    'sl_wo_encoder': 'SL-module (w/o T)', 'dlvhd_wo_encoder': 'DL-VHD (w/o T)',
    'sl_specific': 'SL-module', 'sl_specific_wo_encoder': 'SL-module (w/o T)',
}
DATASETS = {'youtube_highlights': 'YouTube Highlights', 'tvsum': 'TVSum',
            'activitynet': 'ActivityNet', 'synthetic': 'synthetic data'}
PARAM_LABELS = {'sampling.set_size': 'set size N', 'loss.distill_weight': 'trade-off λ'}
REFERENCE = 'sl'  # the row every method is compared with
METRICS = ('map', 'map_umt')
AVERAGE = 'Average'


def cell_record(res: dict, workdir: str) -> dict:
  """What a table keeps of one run's results.json: summary numbers, and (under '_', kept out
  of table.json) each seed's per-video APs for the paired comparisons."""
  cell = {k: res.get(k) for k in ('map', 'map_umt', 'map_ci95', 'map_umt_ci95', 'num_seeds',
                                  'steps', 'wall_s', 'num_test_videos')}
  if 'selected_value' in res:  # a config.vary cell: the value source validation chose
    cell['selected_value'] = res['selected_value']
  cell['workdir'] = workdir
  val = res.get('source_val_map')
  # The label-free selection criterion: the seeds' best source-validation mAP.
  ok = bool(val) and all(np.isfinite(v) for v in val)
  cell['source_val_map'] = float(np.mean(val)) if ok else None
  if ok:
    cell['_seeds_source_val_map'] = list(val)
  if 'diverged' in res:
    cell['diverged'] = res['diverged']
  per_seed = res.get('per_seed') or []
  if per_seed:
    vids = sorted(per_seed[0]['per_video_ap'])
    for metric, key in (('map', 'per_video_ap'), ('map_umt', 'per_video_ap_umt')):
      cell[f'_seeds_{metric}'] = [p[metric] for p in per_seed]
      cell[f'_videos_{metric}'] = np.array(
          [[np.nan if p[key][v] is None else p[key][v] for v in vids] for p in per_seed])
  return cell


def _rows_for(kind, cfg):
  """-> row keys in display order and their labels."""
  s = cfg.sweep
  if kind == 'methods':
    rows = list(s.methods)
    return rows, {r: LABELS.get(r, r) for r in rows}
  rows = [f'{s.param}={v}' for v in s['values']]
  return rows, {r: r.split('=', 1)[1] for r in rows}


def _complete(results, row, targets, metric):
  """The row's per-target cells if every target has per-video APs with one seed count."""
  cells = [results.get(row, {}).get(t, {}) for t in targets]
  if not all(f'_videos_{metric}' in c for c in cells):
    return None
  if len({c[f'_videos_{metric}'].shape[0] for c in cells}) != 1:
    return None
  return cells


def _compare(results, a, b, targets, metric):
  """Paired bootstrap of row a against row b over `targets`, or None if data is missing."""
  ca, cb = _complete(results, a, targets, metric), _complete(results, b, targets, metric)
  if ca is None or cb is None:
    return None
  pairs = [(x[f'_videos_{metric}'], y[f'_videos_{metric}']) for x, y in zip(ca, cb)]
  if any(p[0].shape != p[1].shape for p in pairs):
    return None
  return stats.paired_bootstrap(pairs)


def _average(results, row, targets, metric):
  """Mean over targets, and its interval over the per-seed target averages."""
  cells = [results.get(row, {}).get(t, {}) for t in targets]
  means = [c.get(metric) for c in cells]
  if not means or any(m is None for m in means):
    return None, None
  per_seed = [c.get(f'_seeds_{metric}') for c in cells]
  ci = None
  if all(p is not None for p in per_seed) and len({len(p) for p in per_seed}) == 1:
    ci = stats.mean_ci(np.mean(np.array(per_seed, np.float64), axis=0))['ci95']
  return float(np.mean(means)), ci


def _split(cfg) -> str:
  if cfg.data.split != 'kfold':
    return cfg.data.split
  n = int(cfg.data.num_folds)
  # As the transfer matrix names its split; one fold's table says which.
  return (f'kfold ({n} folds)' if cfg.sweep.get('all_folds', False) else
          f'kfold (fold {cfg.data.fold} of {n})')


def build_table(cfg, kind, targets, results) -> dict:
  """The table as data. Per metric ('map', 'map_umt'): table[metric][row][col] = mean,
  table[metric + '_ci95'][row][col] = half-width of the 95% interval (None for one seed),
  table[metric + '_vs_source_only'][row][col] = {diff, lo, hi, p_le_0} and
  table[metric + '_best'][col] = the significantly best row or None; col = target or
  'Average'. table['paper'][row][col] = the paper's number."""
  s = cfg.sweep
  rows, labels = _rows_for(kind, cfg)
  cols = [*targets, AVERAGE]
  paper_cfg = (s.get('paper', None) or {}) if written_for(cfg) else {}
  table = {'kind': kind, 'source': cfg.data.source_category, 'targets': list(targets),
           'rows': rows, 'labels': labels, 'param': s.get('param', None) if kind != 'methods' else None,
           'features': cfg.data.features, 'split': _split(cfg), 'reference': None,
           'metric': experiment.metric_of(cfg),
           'paper': {},
           'runs': {r: {t: {k: v for k, v in c.items() if not k.startswith('_')}
                        for t, c in results.get(r, {}).items()} for r in rows}}
  reference = REFERENCE if kind == 'methods' and REFERENCE in rows else None
  table['reference'] = reference
  for metric in METRICS:
    means, cis, diffs, best = {}, {}, {}, {}
    for r in rows:
      got = results.get(r, {})
      means[r] = {t: got.get(t, {}).get(metric) for t in targets}
      cis[r] = {t: got.get(t, {}).get(f'{metric}_ci95') for t in targets}
      means[r][AVERAGE], cis[r][AVERAGE] = _average(results, r, targets, metric)
      if reference and r != reference:
        diffs[r] = {t: _compare(results, r, reference, [t], metric) for t in targets}
        diffs[r][AVERAGE] = _compare(results, r, reference, list(targets), metric)
    for c in cols:
      scope = list(targets) if c == AVERAGE else [c]
      ranked = sorted((r for r in rows if means[r][c] is not None), key=lambda r: -means[r][c])
      best[c] = None
      if len(ranked) >= 2:
        tests = [_compare(results, ranked[0], other, scope, metric) for other in ranked[1:]]
        if all(t is not None and t['lo'] > 0 for t in tests):
          best[c] = ranked[0]
    table[metric], table[f'{metric}_ci95'] = means, cis
    table[f'{metric}_vs_source_only'], table[f'{metric}_best'] = diffs, best
  table['source_val_map'], table['source_val_map_ci95'] = {}, {}
  for r in rows:
    vals = {t: results.get(r, {}).get(t, {}).get('source_val_map') for t in targets}
    vals[AVERAGE], ci = _average(results, r, targets, 'source_val_map')
    table['source_val_map'][r] = vals
    table['source_val_map_ci95'][r] = {AVERAGE: ci}
  for r in rows:
    paper_row = paper_cfg.get(r, None) or {}
    if paper_row:
      pv = {t: paper_row.get(t, None) for t in targets}
      pv[AVERAGE] = (float(np.mean([pv[t] for t in targets]))
                     if all(pv[t] is not None for t in targets) else None)
      table['paper'][r] = pv
  return table


def _fmt(v, ci=None, paper=None, bold=False):
  if v is None:
    return '–'
  s = f'{v:.3f}' + (f' ± {ci:.3f}' if ci is not None else '')
  s = f'**{s}**' if bold else s
  return s if paper is None else f'{s} ({paper:.3f})'


def _fmt_diff(d):
  if d is None:
    return '–'
  return f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def _header(table, head):
  cols = [*table['targets'], AVERAGE]
  return [f'| {head} | ' + ' | '.join(f'→{c}' if c != AVERAGE else c for c in cols) + ' |',
          '|---|' + '---:|' * len(cols)]


def _markdown_grid(table, metric, with_paper):
  cols = [*table['targets'], AVERAGE]
  head = ('Method' if table['kind'] == 'methods'
          else PARAM_LABELS.get(table['param'], table['param']))
  lines = _header(table, head)
  for r in table['rows']:
    cells = []
    for c in cols:
      v = table[metric][r][c]
      if v is None and table['runs'].get(r, {}).get(c, {}).get('diverged'):
        cells.append('diverged')
        continue
      p = table['paper'].get(r, {}).get(c) if with_paper else None
      cells.append(_fmt(v, table[f'{metric}_ci95'][r][c], p, bold=table[f'{metric}_best'][c] == r))
    lines.append(f"| {table['labels'][r]} | " + ' | '.join(cells) + ' |')
  return lines


def _diff_grid(table, metric):
  cols = [*table['targets'], AVERAGE]
  lines = _header(table, f"Method − {table['labels'][table['reference']]}")
  for r, diffs in table[f'{metric}_vs_source_only'].items():
    lines.append(f"| {table['labels'][r]} | " + ' | '.join(_fmt_diff(diffs[c]) for c in cols) + ' |')
  return lines


def written_for(cfg) -> bool:
  """Whether the sweep's title and paper numbers are about the data it runs on (not when
  --config.data.name or data.source_category moved it to another dataset or source)."""
  made = cfg.sweep.get('paper_data', None)
  return made is None or (made.name == cfg.data.name
                          and made.source == cfg.data.source_category)


def to_markdown(cfg, table) -> str:
  s = cfg.sweep
  own = s.get('title', '') if written_for(cfg) else ''
  dataset = DATASETS.get(cfg.data.name, cfg.data.name)
  title = own or (f"Cross-category highlight detection on {dataset}, source {table['source']}"
                  if table['kind'] == 'methods' else
                  f"Sensitivity of {cfg.method} to {table['param']} on {dataset}, "
                  f"source {table['source']}")
  has_paper = bool(table['paper'])
  seeds = sorted({c.get('num_seeds') or 1 for row in table['runs'].values() for c in row.values()
                  if c.get('map') is not None})
  seed_text = (f"mean ± 95% t interval over {'/'.join(map(str, seeds))} seeds"
               if seeds and max(seeds) > 1 else 'one seed per cell, no interval')
  metric_name = 'top-5 mAP' if table.get('metric') == 'top5_map' else 'mAP'
  out = [f'# {title}', '',
         f"{metric_name} on the target test videos (features {table['features']}, split {table['split']}; "
         f"{seed_text}; Average = mean over the targets, its interval over the seeds' "
         'averages; bold = significantly best in its column (paired bootstrap over seeds x '
         'test videos against every other row, 95%)'
         + ('; the paper\'s number in parentheses' if has_paper else '') + ').', '']
  out += _markdown_grid(table, 'map', has_paper)
  if table['reference']:
    out += ['', f"Difference to {table['labels'][table['reference']]} (mAP; mean and 95% "
            'interval of a paired bootstrap over seeds x test videos):', '']
    out += _diff_grid(table, 'map')
  out += ['', "The same runs under the UMT protocol's AP (`map_umt`):", '']
  out += _markdown_grid(table, 'map_umt', False)
  if table['reference']:
    out += ['']
    out += _diff_grid(table, 'map_umt')
  if any(v is not None for row in table['source_val_map'].values() for v in row.values()):
    out += ['', 'Source-validation mAP (the label-free selection criterion: per seed the best '
            "evaluation on the source category's held-out training videos, mean over seeds; "
            'no target label enters it):', '']
    out += _header(table, 'Method')
    for r in table['rows']:
      row, ci = table['source_val_map'][r], table['source_val_map_ci95'][r]
      out.append(f"| {table['labels'][r]} | "
                 + ' | '.join(_fmt(row[c], ci.get(c)) for c in [*table['targets'], AVERAGE]) + ' |')
  diverged = [(r, t) for r in table['rows'] for t in table['targets']
              if table['runs'].get(r, {}).get(t, {}).get('diverged')]
  missing = sum(table['map'][r][t] is None for r in table['rows'] for t in table['targets'])
  if missing - len(diverged):
    out += ['', f'{missing - len(diverged)} run(s) not finished yet (–).']
  if diverged:
    out += ['', f'{len(diverged)} run(s) diverged (non-finite loss; no number is reported for '
            'them): ' + ', '.join(f"{table['labels'][r]} → {t}" for r, t in diverged) + '.']
  return '\n'.join(out) + '\n'


def plot(table, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  targets, rows = table['targets'], table['rows']
  err = lambda r, g: table['map_ci95'][r][g] or 0.0
  if table['kind'] == 'methods':
    groups = [*targets, AVERAGE]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.0 + 0.25 * len(rows) * len(groups)), 4.5))
    cmap = plt.get_cmap('tab20')
    paper_label = 'paper'  # one legend entry for all the paper's markers
    for i, r in enumerate(rows):
      xs = [g + (i - (len(rows) - 1) / 2) * width for g in range(len(groups))]
      ys = [table['map'][r][g] for g in groups]
      ax.bar(xs, [y if y is not None else 0 for y in ys], width, label=table['labels'][r],
             color=cmap(i % 20), yerr=[err(r, g) for g in groups], capsize=1.5,
             error_kw={'elinewidth': 0.8})
      paper = table['paper'].get(r)
      if paper:
        pts = [(x, paper[g]) for x, g in zip(xs, groups) if paper[g] is not None]
        if pts:
          ax.scatter(*zip(*pts), marker='_', color='black', s=60, zorder=3, label=paper_label)
          paper_label = None
    ax.set_xticks(range(len(groups)), [f'→{g}' if g != AVERAGE else g for g in groups])
    vals = [v for r in rows for v in table['map'][r].values() if v is not None]
    ax.set_ylim(max(0.0, min(vals, default=0.0) - 0.1), 1.0)
    ax.set_ylabel('mAP (error bars: 95% interval over seeds)')
    ax.set_title(f"source {table['source']}")
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))
  else:
    xs = [ast.literal_eval(r.split('=', 1)[1]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for t in targets:
      ys = [table['map'][r][t] for r in rows]
      ax.errorbar(xs, [y if y is not None else math.nan for y in ys],
                  yerr=[err(r, t) for r in rows], marker='o', capsize=3,
                  label=f"{table['source']} → {t}")
    ax.set_xlabel(PARAM_LABELS.get(table['param'], table['param']))
    ax.set_xticks(xs)
    ax.set_ylabel('mAP')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)


def write_artifacts(cfg, workdir, kind, targets, results) -> dict:
  table = build_table(cfg, kind, targets, results)
  if not files.is_primary():
    return table
  files.write_json(os.path.join(workdir, 'table.json'), table)
  files.write_atomic(os.path.join(workdir, 'table.md'), to_markdown(cfg, table))
  plot(table, os.path.join(workdir, 'table.png'))
  return table
