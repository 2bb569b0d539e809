"""`--mode=sweep`: the paper's tables (methods x targets) and sensitivity curves (Fig. 5).

Every cell is one full `experiment.run` in its own sub-workdir; a cell whose results.json
exists is read back instead of rerun, so an interrupted sweep resumes where it stopped (and a
killed cell resumes from its own checkpoint). After each cell the artifacts are rewritten:
<workdir>/table.md, table.json and table.png. A finished cell is never redone, even if the
config changed since: delete its sub-workdir (<spec>__<target>/) to redo it.

config.sweep:
  kind     'methods' (a table) | 'sensitivity' (one parameter over values)
  methods  method specs: a registered method, a named variant of VARIANTS, and optionally
           ':key=value,...' config overrides, e.g. 'dan:uda.dan.weight=0.5'
  targets  target categories (the source is config.data.source_category)
  param, values   (sensitivity) the dotted config key and its values; runs config.method
  paper    (optional) {spec: {target: mAP}} printed beside ours
  title    (optional) the table's heading
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import sys

import ml_collections

from app import config_checks, experiment
from dlvhd_jax import files
from dlvhd_jax.errors import NonFiniteError, UserInputError

TARGET = '{target}'
# Named variants: the registered method they run and the overrides they imply.
VARIANTS = {
    'sl_oracle': ('sl', {'data.source_category': TARGET}),  # SL-module on the target's labels
    'sl_wo_encoder': ('sl', {'model.use_encoder': False}),
    'dlvhd_wo_encoder': ('dlvhd', {'model.use_encoder': False}),
}
LABELS = {
    'sl': 'Source-only', 'dan': 'DAN', 'coral': 'DeepCORAL', 'revgrad': 'RevGrad',
    'mcd': 'MCD', 'afn': 'AFN', 'dlvhd_coarse_only': 'DL-VHD (L_coarse only)',
    'dlvhd_fine_only': 'DL-VHD (L_fine only)', 'dlvhd_no_distill': 'DL-VHD (w/o L_distill)',
    'dlvhd': 'DL-VHD (full model)', 'sl_oracle': 'Target-oracle',
    'sl_wo_encoder': 'SL-module (w/o T)', 'dlvhd_wo_encoder': 'DL-VHD (w/o T)',
}
PARAM_LABELS = {'sampling.set_size': 'set size N', 'loss.distill_weight': 'trade-off λ'}


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_spec(spec: str) -> tuple[str, dict]:
  """'name' or 'name:key=value,key2=value2' -> (name, {key: value}); values are literals."""
  name, _, rest = spec.partition(':')
  overrides = {}
  # Split on commas that start a new 'key=' so tuple values like (16,8) survive.
  for item in filter(None, re.split(r',(?=\s*[A-Za-z_][\w.]*\s*=)', rest)):
    key, eq, value = item.partition('=')
    if not eq:
      raise UserInputError(f'config.sweep.methods entry {spec!r}: {item!r} is not key=value')
    overrides[key.strip()] = _literal(value.strip())
  return name.strip(), overrides


def resolve_spec(spec: str, target: str) -> tuple[str, dict]:
  """-> (registered method, overrides with the variant's first and the spec's on top)."""
  name, extra = parse_spec(spec)
  method, implied = VARIANTS.get(name, (name, {}))
  overrides = {k: (target if v == TARGET else v) for k, v in {**implied, **extra}.items()}
  return method, overrides


def set_path(cfg: ml_collections.ConfigDict, dotted: str, value, where: str = 'override') -> None:
  """cfg.<dotted> = value for a key the config has (a typo is an error, not a new key)."""
  config_checks.check_key(cfg, dotted, f'{where} {dotted}={value!r}')
  *groups, leaf = dotted.split('.')
  node = cfg
  for g in groups:
    node = node[g]
  if isinstance(node[leaf], float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  try:
    with cfg.unlocked():
      node[leaf] = value
  except (TypeError, ValueError) as e:
    raise UserInputError(f'{where} {dotted}={value!r}: {e}') from None


def slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.=+-]+', '_', text.replace(':', '+'))


def _sweep(cfg):
  s = cfg.get('sweep', None)
  if s is None:
    raise UserInputError('--mode=sweep needs a config with a `sweep` group: configs/table4.py, '
                         'configs/table7.py or configs/sensitivity.py')
  return s


def _cells(cfg):
  """-> list of (row key, target, sub-workdir name, method, overrides)."""
  s = _sweep(cfg)
  kind = s.get('kind', 'methods')
  targets = tuple(s.get('targets', ()) or (cfg.data.target_category,))
  cells = []
  if kind == 'methods':
    for spec in s.methods:
      for t in targets:
        method, ov = resolve_spec(spec, t)
        cells.append((spec, t, f'{slug(spec)}__{t}', method, ov))
  elif kind == 'sensitivity':
    if not s.get('param', ''):
      raise UserInputError('config.sweep.param is empty: e.g. sampling.set_size or loss.distill_weight')
    for t in targets:
      for v in s['values']:
        key = f'{s.param}={v}'
        cells.append((key, t, f'{slug(cfg.method)}__{slug(key)}__{t}', cfg.method, {s.param: v}))
  else:
    raise UserInputError(f"config.sweep.kind={kind!r} is invalid: use 'methods' or 'sensitivity'")
  # Every cell's config is built and checked now, not hours into the sweep.
  for _, t, _, method, ov in cells:
    cell_config(cfg, t, method, ov, cfg.data.root)
  return kind, targets, cells


def cell_config(cfg, target, method, overrides, data_root):
  """The config of one run: `cfg` with the method, target, data root and overrides."""
  sub = cfg.copy_and_resolve_references()
  with sub.unlocked():
    sub.method = method
    sub.data.target_category = target
    sub.data.root = data_root
    sub.compare_methods = ()
  for k, v in overrides.items():
    set_path(sub, k, v, where=f'config.sweep override for {method}:')
  experiment.validate(sub)
  return sub


DIVERGED = 'diverged.json'


def _run_cell(cfg, workdir, data_root, target, method, overrides, progress):
  """-> (results or {'diverged': message}, done before). A cell whose training diverged is
  recorded in <cell>/diverged.json and, like a finished one, not redone."""
  for name in ('results.json', DIVERGED):
    path = os.path.join(workdir, name)
    if os.path.isfile(path):
      with open(path) as f:
        return json.load(f), True
  sub = cell_config(cfg, target, method, overrides, data_root)
  try:
    return experiment.run(sub, workdir, 'train', progress), False
  except NonFiniteError as e:
    record = {'diverged': str(e)}
    files.write_json(os.path.join(workdir, DIVERGED), record)
    return record, False


def run(cfg, workdir: str, progress: bool = True) -> int:
  kind, targets, cells = _cells(cfg)
  experiment.check_writable(workdir)
  os.makedirs(workdir, exist_ok=True)
  data_root = experiment.resolve_data_root(cfg, workdir)
  results, diverged = {}, []
  for i, (row, target, name, method, overrides) in enumerate(cells):
    res, skipped = _run_cell(cfg, os.path.join(workdir, name), data_root, target, method,
                             overrides, progress)
    cell = {k: res.get(k) for k in ('map', 'map_umt', 'steps', 'wall_s', 'num_test_videos')}
    cell['workdir'] = name
    if 'diverged' in res:
      cell['diverged'] = res['diverged']
      diverged.append(name)
    results.setdefault(row, {})[target] = cell
    outcome = ('diverged: ' + res['diverged']) if 'diverged' in res else f"mAP {res['map']:.4f}"
    print(f"[{i + 1}/{len(cells)}] {row} {cfg.data.source_category} -> {target}: "
          f"{outcome}{' (done before, skipped)' if skipped else ''}", file=sys.stderr)
    write_artifacts(cfg, workdir, kind, targets, results)
  print(f'sweep of {len(cells)} runs: {workdir}/table.md, table.json, table.png', file=sys.stderr)
  if diverged:
    raise NonFiniteError(f'{len(diverged)} of {len(cells)} sweep runs diverged ({", ".join(diverged)}; '
                         f'see their {DIVERGED}): their cells read "diverged"; lower their '
                         'learning rate or weight, delete those sub-workdirs and rerun')
  return 0


# ----------------------------------------------------------------------------- artifacts


def _mean(values):
  return sum(values) / len(values) if values and all(v is not None for v in values) else None


def _fmt(v, paper=None, bold=False):
  if v is None:
    return '–'
  s = f'**{v:.3f}**' if bold else f'{v:.3f}'
  return s if paper is None else f'{s} ({paper:.3f})'


def _rows_for(kind, cfg):
  """-> row keys in display order and their labels."""
  s = _sweep(cfg)
  if kind == 'methods':
    rows = list(s.methods)
    return rows, {r: LABELS.get(r, r) for r in rows}
  rows = [f'{s.param}={v}' for v in s['values']]
  return rows, {r: r.split('=', 1)[1] for r in rows}


def build_table(cfg, kind, targets, results) -> dict:
  """The table as data: per row, per target and 'Average': ours (mAP, UMT mAP) and the paper's."""
  s = _sweep(cfg)
  rows, labels = _rows_for(kind, cfg)
  paper_cfg = s.get('paper', None) or {}
  table = {'kind': kind, 'source': cfg.data.source_category, 'targets': list(targets),
           'rows': rows, 'labels': labels, 'param': s.get('param', None) if kind != 'methods' else None,
           'features': cfg.data.features, 'split': cfg.data.split,
           'map': {}, 'map_umt': {}, 'paper': {}, 'runs': results}
  for r in rows:
    got = results.get(r, {})
    for metric in ('map', 'map_umt'):
      vals = {t: got.get(t, {}).get(metric) for t in targets}
      vals['Average'] = _mean([vals[t] for t in targets])
      table[metric][r] = vals
    paper_row = paper_cfg.get(r, None) or {}
    if paper_row:
      pv = {t: paper_row.get(t, None) for t in targets}
      pv['Average'] = _mean([pv[t] for t in targets])
      table['paper'][r] = pv
  return table


def _markdown_grid(table, metric, with_paper):
  targets = table['targets']
  rows = table['rows']
  cols = [*targets, 'Average']
  best = {c: max((table[metric][r][c] for r in rows if table[metric][r][c] is not None),
                 default=None) for c in cols}
  head = 'Method' if table['kind'] == 'methods' else PARAM_LABELS.get(table['param'], table['param'])
  lines = [f"| {head} | " + ' | '.join(f'→{c}' if c != 'Average' else c for c in cols) + ' |',
           '|---|' + '---:|' * len(cols)]
  for r in rows:
    cells = []
    for c in cols:
      v = table[metric][r][c]
      p = table['paper'].get(r, {}).get(c) if with_paper else None
      if v is None and table['runs'].get(r, {}).get(c, {}).get('diverged'):
        cells.append('diverged')
        continue
      cells.append(_fmt(v, p, bold=v is not None and v == best[c]))
    lines.append(f"| {table['labels'][r]} | " + ' | '.join(cells) + ' |')
  return lines


def to_markdown(cfg, table) -> str:
  s = _sweep(cfg)
  title = s.get('title', '') or (f"Cross-category highlight detection, source {table['source']}"
                                 if table['kind'] == 'methods' else
                                 f"Sensitivity of {cfg.method} to {table['param']}, "
                                 f"source {table['source']}")
  has_paper = bool(table['paper'])
  out = [f'# {title}', '',
         f"mAP on the target test videos (features {table['features']}, split {table['split']}; "
         'best per column in bold' + ('; the paper\'s number in parentheses' if has_paper else '')
         + '). Average = mean over the targets.', '']
  out += _markdown_grid(table, 'map', has_paper)
  out += ['', "The same runs under the UMT protocol's AP (`map_umt`):", '']
  out += _markdown_grid(table, 'map_umt', False)
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
  if table['kind'] == 'methods':
    groups = [*targets, 'Average']
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.0 + 0.25 * len(rows) * len(groups)), 4.5))
    cmap = plt.get_cmap('tab20')
    paper_label = 'paper'  # one legend entry for all the paper's markers
    for i, r in enumerate(rows):
      xs = [g + (i - (len(rows) - 1) / 2) * width for g in range(len(groups))]
      ys = [table['map'][r][g] for g in groups]
      ax.bar(xs, [y if y is not None else 0 for y in ys], width, label=table['labels'][r],
             color=cmap(i % 20))
      paper = table['paper'].get(r)
      if paper:
        pts = [(x, paper[g]) for x, g in zip(xs, groups) if paper[g] is not None]
        if pts:
          ax.scatter(*zip(*pts), marker='_', color='black', s=60, zorder=3, label=paper_label)
          paper_label = None
    ax.set_xticks(range(len(groups)), [f'→{g}' if g != 'Average' else g for g in groups])
    vals = [v for r in rows for v in table['map'][r].values() if v is not None]
    ax.set_ylim(max(0.0, min(vals, default=0.0) - 0.1), 1.0)
    ax.set_ylabel('mAP')
    ax.set_title(f"source {table['source']}")
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))
  else:
    xs = [_literal(r.split('=', 1)[1]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for t in targets:
      ys = [table['map'][r][t] for r in rows]
      ax.plot(xs, [y if y is not None else math.nan for y in ys], marker='o',
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
  files.write_json(os.path.join(workdir, 'table.json'), table)
  files.write_atomic(os.path.join(workdir, 'table.md'), to_markdown(cfg, table))
  plot(table, os.path.join(workdir, 'table.png'))
  return table
