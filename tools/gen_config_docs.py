"""docs/configs.md from the configs themselves: every key, its default, whether it may change
when a run resumes, and what it means.

  python -m tools.gen_config_docs            # rewrite docs/configs.md
  python -m tools.gen_config_docs --check    # exit 1 (and say so) if docs/configs.md differs

The keys and their defaults come from calling the config functions, so a key cannot be left
out: a key that has no assignment of its own in the function's source is an error here. Each
key is paired with its assignment by walking the function's AST; its meaning is the comment on
that statement's lines plus the comment lines right above it. A comment above an empty
`ml_collections.ConfigDict()` introduces its group. Whether a key may change on resume is read
from `RESUME_SAFE` in dlvhd_jax/checkpoint.py (parsed, not imported: importing it would pull in
JAX and orbax, and the docs test must stay fast).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import os
import sys
import tokenize

from configs import base, extract_c3d, extract_i3d, sensitivity, table4

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, 'docs', 'configs.md')
CHECKPOINT = os.path.join(ROOT, 'dlvhd_jax', 'checkpoint.py')

# A computed default longer than this (a table's title, its tuple of methods, the paper's
# numbers) reads "per config" instead, so the table stays readable.
MAX_DEFAULT = 60


@dataclasses.dataclass
class Row:
  keys: list[str]
  defaults: list[str]
  meaning: str
  # The comment was only above the statement (not on its line): the next statement may join
  # the row, as a comment above a run of lines is written for all of them.
  open_group: bool = False
  end_line: int = 0


@dataclasses.dataclass
class Section:
  name: str
  intro: str
  rows: list[Row]


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
  """-> ({line: comment after code}, {line: comment alone on its line}), '#' stripped."""
  after, alone = {}, {}
  lines = source.splitlines()
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type != tokenize.COMMENT:
      continue
    line = tok.start[0]
    text = tok.string.lstrip('#').strip()
    (alone if not lines[line - 1][:tok.start[1]].strip() else after)[line] = text
  return after, alone


def _path(node) -> str | None:
  """'data.root' for `c.data.root` or `c.sweep['values']` (the config is the name `c`)."""
  if isinstance(node, ast.Name):
    return '' if node.id == 'c' else None
  if isinstance(node, ast.Attribute):
    parent = _path(node.value)
    return None if parent is None else f'{parent}.{node.attr}'.lstrip('.')
  if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
      and isinstance(node.slice.value, str)):
    parent = _path(node.value)
    return None if parent is None else f'{parent}.{node.slice.value}'.lstrip('.')
  return None


def _is_configdict(node) -> bool:
  return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == 'ConfigDict')


def _lookup(config: dict, key: str):
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def _format_default(source: str, node, value) -> str:
  """The literal as written in the source where there is one (1e-3, not 0.001), else the
  value's repr, else (a long computed value) '' for "per config"."""
  text = ast.get_source_segment(source, node) if node is not None else None
  if text is not None:
    try:
      if ast.literal_eval(text) == value:
        return ' '.join(text.split())
    except (ValueError, SyntaxError, TypeError):
      pass  # not a literal (a name, a call): show the value
  shown = repr(value)
  if len(shown) <= MAX_DEFAULT or text is None:
    return shown
  return ''  # set by each config (a title, the table's methods, the paper's numbers)


def document(module, function: str, config, prefix: str = '') -> tuple[list[Row], dict]:
  """Rows for every key that `module.function` assigns (only keys under `prefix`), and
  {group: intro} from the comments above its empty ConfigDicts. A statement without a comment
  of its own right below one whose comment is only above it joins that row (e.g.
  learning_rate, momentum and weight_decay under one comment)."""
  with open(module.__file__, encoding='utf-8') as f:
    source = f.read()
  after, alone = _comments(source)
  fn = next(n for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.FunctionDef) and n.name == function)
  values = config.to_dict()
  rows, intros = [], {}
  for stmt in fn.body:
    if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
      continue
    lines = range(stmt.lineno, stmt.end_lineno + 1)
    above, line = [], stmt.lineno - 1
    while line in alone:
      above.insert(0, alone[line])
      line -= 1
    trailing = [after[i] for i in lines if i in after]
    meaning = ' '.join([*above, *trailing]).strip()
    target = stmt.targets[0]
    targets = target.elts if isinstance(target, ast.Tuple) else [target]
    value_nodes = (stmt.value.elts if isinstance(target, ast.Tuple)
                   and isinstance(stmt.value, ast.Tuple) else [stmt.value] * len(targets))
    keys, nodes = [], []
    for t, v in zip(targets, value_nodes):
      key = _path(t)
      if not key or not key.startswith(prefix):
        continue
      if _is_configdict(v) and not v.args:
        intros[key] = meaning
        continue
      if _is_configdict(v) and isinstance(v.args[0], ast.Dict):
        for k, kv in zip(v.args[0].keys, v.args[0].values):
          keys.append(f'{key}.{k.value}')
          nodes.append(kv)
        continue
      keys.append(key)
      nodes.append(v if len(targets) == 1 or isinstance(stmt.value, ast.Tuple) else None)
    if not keys:
      continue
    defaults = [_format_default(source, n, _lookup(values, k)) for k, n in zip(keys, nodes)]
    prev = rows[-1] if rows else None
    if (not meaning and prev is not None and prev.open_group
        and prev.end_line == stmt.lineno - 1):
      prev.keys += keys
      prev.defaults += defaults
      prev.end_line = stmt.end_lineno
      continue
    rows.append(Row(keys, defaults, meaning, open_group=bool(above) and not trailing,
                    end_line=stmt.end_lineno))
  return rows, intros


def _flat_keys(d: dict, prefix: str = '') -> list[str]:
  out = []
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out += _flat_keys(v, f'{prefix}{k}.')
    else:
      out.append(f'{prefix}{k}')
  return out


def check_complete(rows: list[Row], config, prefix: str, where: str) -> None:
  """Every key of `config` under `prefix` has a row (a row for a dict-valued key such as
  sweep.paper covers what is inside it)."""
  documented = [k for r in rows for k in r.keys]
  missing = [k for k in _flat_keys(config.to_dict()) if k.startswith(prefix) and not any(
      k == d or k.startswith(d + '.') for d in documented)]
  if missing:
    raise SystemExit(f'error: {where}: no assignment of its own found for {missing}; assign '
                     'each key on its own line (or in a ConfigDict({...}) literal)')


def resume_safe() -> tuple[str, ...]:
  with open(CHECKPOINT, encoding='utf-8') as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == 'RESUME_SAFE'):
      return tuple(ast.literal_eval(node.value))
  raise SystemExit(f'error: {CHECKPOINT}: RESUME_SAFE not found')


def _resume(key: str, safe: tuple[str, ...]) -> str:
  if not any(key == s or key.startswith(s + '.') for s in safe):
    return ''
  # checkpoint.config_fingerprint puts the run's own method's uda.<method>.* group back in.
  return "other methods'" if key.startswith('uda.') else 'yes'


def _text(text: str, in_table: bool = False) -> str:
  """Markdown text: '<' escaped outside code spans so that <workdir> is not read as an HTML
  tag; in a table cell, pipes escaped everywhere (GitHub needs it inside code spans too)."""
  parts = text.split('`')
  for i, part in enumerate(parts):
    if in_table:
      part = part.replace('|', '\\|')
    parts[i] = part if i % 2 else part.replace('<', '&lt;')
  return '`'.join(parts)


def _cell(text: str) -> str:
  return _text(text, in_table=True)


def sections(rows: list[Row], intros: dict) -> list[Section]:
  out: dict[str, Section] = {}
  for row in rows:
    group = row.keys[0].split('.')[0] if '.' in row.keys[0] else ''
    if group not in out:
      out[group] = Section(group, intros.get(group, ''), [])
    out[group].rows.append(row)
  return list(out.values())


def table(rows: list[Row], safe: tuple[str, ...] | None) -> list[str]:
  head = ['key', 'default', *(['resume'] if safe is not None else []), 'meaning']
  out = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    cells = [', '.join(f'`{k}`' for k in r.keys),
             ', '.join(f'`{d}`' if d else 'per config' for d in r.defaults)]
    if safe is not None:
      marks = sorted({_resume(k, safe) for k in r.keys})
      cells.append(' / '.join(m or 'no' for m in marks))
    cells.append(r.meaning)
    out.append('| ' + ' | '.join(_cell(c) for c in cells) + ' |')
  return out


def task_configs() -> list[str]:
  """One row per configs/*.py: its docstring's first paragraph."""
  out = ['| config | what |', '|---|---|']
  folder = os.path.join(ROOT, 'configs')
  for name in sorted(os.listdir(folder)):
    if not name.endswith('.py') or name in ('__init__.py', 'base.py'):
      continue
    with open(os.path.join(folder, name), encoding='utf-8') as f:
      doc = ast.get_docstring(ast.parse(f.read())) or ''
    first = ' '.join(doc.split('\n\n')[0].split())
    out.append(f'| `configs/{name}` | {_cell(first)} |')
  return out


INTRO = """\
# Config keys

<!-- Generated by `python -m tools.gen_config_docs`: do not edit this page by hand. -->

This page is generated from the comments in `configs/base.py`, `configs/table4.py`,
`configs/sensitivity.py`, `configs/extract_c3d.py` and `configs/extract_i3d.py`, and from `RESUME_SAFE` in
`dlvhd_jax/checkpoint.py`: edit those and run `python -m tools.gen_config_docs`
(`tests/test_docs.py` fails while this page differs from the tool's output).

A run is `python launch.py --config=configs/<file>.py[:<preset>,...] [--config.<key>=<value> ...]`.
`configs/base.py` holds the paper's values; each task config below changes a few of them, and
its presets (each config's docstring names them; mostly `cpu`: a small model that a 2-core
CPU trains in minutes, `quick`: 500 steps, `best`: the recipe chosen on source validation)
change a few more. Values are checked against one table of allowed values and ranges
(`app/config_checks.py`) before anything is loaded or written, and a misspelt key is a
one-line error naming the closest existing one.

**resume**: `yes` = the key may differ between the runs of one workdir (logging, saving,
dispatch, evaluation, paths). Every other key is part of the checkpoint's fingerprint:
resuming, or `--mode=eval`, with another value is refused with one line naming the key
([reliability.md](reliability.md#a-checkpoint-knows-its-run)). `uda.*` keys are free except
those of the run's own method, and the key that `vary.key` varies is left out (each replica
reads its own value).
"""


def render() -> str:
  safe = resume_safe()

  lines = INTRO.splitlines()
  lines += ['', '## Task configs', '']
  lines += task_configs()

  cfg = base.get_base_config()
  rows, intros = document(base, 'get_base_config', cfg)
  check_complete(rows, cfg, '', 'configs/base.py:get_base_config')
  lines += ['', '## Keys of every run (`configs/base.py`)']
  for sec in sections(rows, intros):
    lines += ['', f'### {sec.name or "top level"}', '']
    if sec.intro:
      lines += [_text(sec.intro), '']
    lines += table(sec.rows, safe)

  t4, sens = table4.get_config(), sensitivity.get_config()
  rows, intros = document(table4, 'make_table_config', t4, prefix='sweep')
  more, _ = document(sensitivity, 'get_config', sens, prefix='sweep')
  seen = {k for r in rows for k in r.keys}
  rows += [r for r in more if not set(r.keys) <= seen]
  check_complete(rows, t4, 'sweep.', 'configs/table4.py:make_table_config')
  check_complete(rows, sens, 'sweep.', 'configs/sensitivity.py:get_config')
  lines += ['', '## Sweep keys (`--mode=sweep`; defaults of `configs/table4.py`, '
            '`configs/sensitivity.py`)', '']
  if intros.get('sweep'):
    lines += [_text(intros['sweep']), '']
  lines += table(rows, None)

  ext = extract_c3d.get_config()
  rows, intros = document(extract_c3d, 'get_config', ext)
  check_complete(rows, ext, '', 'configs/extract_c3d.py:get_config')
  lines += ['', '## Extraction keys (`--mode=extract`; `configs/extract_c3d.py`)', '',
            'The extraction config is a config of its own, not a task config: '
            '[data.md](data.md#c3d-features-from-raw-video).', '']
  lines += table(rows, None)

  # I3D: the C3D keys, with the ones its config sets or adds (each must have its row).
  i3 = extract_i3d.get_config()
  rows, _ = document(extract_i3d, 'get_config', i3)
  added = set(_flat_keys(i3.to_dict())) - set(_flat_keys(ext.to_dict()))
  check_complete(rows, type(i3)({k: i3[k] for k in added}), '',
                 'configs/extract_i3d.py:get_config')
  lines += ['', '### `configs/extract_i3d.py`', '',
            'The keys above, with these set or added for I3D '
            '([data.md](data.md#i3d-features-from-raw-video)):', '']
  lines += table(rows, None)
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--check', action='store_true',
                      help='exit 1 if docs/configs.md differs from what would be written')
  parser.add_argument('--output', default=PAGE)
  args = parser.parse_args(argv)
  page = render()
  if args.check:
    with open(args.output, encoding='utf-8') as f:
      if f.read() != page:
        print(f'{args.output} is stale: run python -m tools.gen_config_docs', file=sys.stderr)
        return 1
    return 0
  with open(args.output, 'w', encoding='utf-8') as f:
    f.write(page)
  return 0


if __name__ == '__main__':
  sys.exit(main())
