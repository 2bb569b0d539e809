"""The documentation stays true: links resolve, the config page is generated, and every
command the README shows is either run (reduced) by a named test or listed as long-running.

Reads files only (no jax, no subprocess), so the whole file runs in well under a second.
"""
import glob
import os
import re
import types

import ml_collections
import pytest

from tools import gen_config_docs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, 'README.md')
PAGES = sorted([README, *glob.glob(os.path.join(REPO, 'docs', '*.md'))])
README_MAX_LINES = 200

FENCE = re.compile(r'^\s*(```|~~~)')
LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')


def _rel(path):
  return os.path.relpath(path, REPO)


def _read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def _prose_lines(text):
  """The lines outside fenced code blocks (a link or heading inside one is an example)."""
  inside = False
  for line in text.splitlines():
    if FENCE.match(line):
      inside = not inside
      continue
    if not inside:
      yield line


def github_slug(heading: str) -> str:
  """GitHub's anchor of a heading: the rendered text lowercased, punctuation other than '-'
  and '_' dropped, spaces to '-'."""
  text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link reads as its text
  text = re.sub(r'<[^>]+>', '', text).replace('`', '')
  text = re.sub(r'[^\w\- ]', '', text.strip().lower())
  return text.replace(' ', '-')


def anchors(path) -> set:
  """Every heading's anchor in a Markdown file; repeated headings get -1, -2, ... as on GitHub."""
  seen, out = {}, set()
  for line in _prose_lines(_read(path)):
    m = HEADING.match(line)
    if not m:
      continue
    slug = github_slug(m.group(2))
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    out.add(slug if n == 0 else f'{slug}-{n}')
  return out


def links(path):
  """(line number, target) of every Markdown link and image outside code."""
  inside = False
  for i, line in enumerate(_read(path).splitlines(), 1):
    if FENCE.match(line):
      inside = not inside
      continue
    if inside:
      continue
    for m in LINK.finditer(re.sub(r'`[^`]*`', '', line)):
      yield i, m.group(1)


def test_slug_follows_github():
  assert github_slug("The paper's tables: `--mode=sweep`") == 'the-papers-tables---modesweep'
  assert github_slug('Table 4, all eleven rows') == 'table-4-all-eleven-rows'
  assert github_slug('DL-VHD (L_coarse only) → X') == 'dl-vhd-l_coarse-only--x'


def broken_links(page) -> list[str]:
  """'file:line: target (why)' for every relative link whose file or heading is missing."""
  broken = []
  for line, target in links(page):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    if not os.path.exists(dest):
      broken.append(f'{_rel(page)}:{line}: {target} (no file {_rel(dest)})')
    elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
      broken.append(f'{_rel(page)}:{line}: {target} (no heading #{anchor} in {_rel(dest)})')
  return broken


def test_link_checker_catches_missing_files_and_headings(tmp_path):
  (tmp_path / 'other.md').write_text('# Other page\n\n## A `code` heading: yes\n')
  page = tmp_path / 'page.md'
  page.write_text('# Page\n\n[ok](other.md#a-code-heading-yes) [self](#page) '
                  '[web](https://example.org/x) ![img](other.md)\n'
                  '[gone](missing.md) [bad anchor](other.md#nope) `[in code](missing.md)`\n'
                  '```\n[in a block](missing.md)\n```\n')
  assert [b.split(': ', 1)[1] for b in broken_links(str(page))] == [
      'missing.md (no file ' + _rel(str(tmp_path / 'missing.md')) + ')',
      'other.md#nope (no heading #nope in ' + _rel(str(tmp_path / 'other.md')) + ')']


@pytest.mark.parametrize('page', PAGES, ids=_rel)
def test_relative_links_and_anchors_resolve(page):
  broken = broken_links(page)
  assert not broken, '\n'.join(broken)


def test_readme_fits_its_budget():
  n = len(_read(README).splitlines())
  assert n <= README_MAX_LINES, (f'README.md has {n} lines (at most {README_MAX_LINES}): move '
                                 'detail into a page under docs/')


# Pages written for a reader who arrived today: no lab-notebook wording. The exemption names
# a page this rule does not cover yet and why; remove it once the page is reworded.
NOTEBOOK_WORDS = re.compile(r'\bsessions?\b|\b(this|previous|earlier) version\b', re.I)
WORDING_EXEMPT = {}


@pytest.mark.parametrize('page', [p for p in PAGES if _rel(p) not in WORDING_EXEMPT], ids=_rel)
def test_pages_do_not_read_as_a_lab_notebook(page):
  hits = [f'{_rel(page)}:{i}: {line.strip()}' for i, line in
          enumerate(_read(page).splitlines(), 1) if NOTEBOOK_WORDS.search(line)]
  assert not hits, 'name the machine class and commit instead:\n' + '\n'.join(hits)


def test_config_page_is_generated_from_the_configs():
  with open(gen_config_docs.PAGE, encoding='utf-8') as f:
    committed = f.read()
  assert committed == gen_config_docs.render(), (
      'docs/configs.md differs from the configs: run python -m tools.gen_config_docs')


def test_config_generator_pairs_comments_and_refuses_an_undocumented_key(tmp_path):
  """Comments above a run of lines cover the run; a key set without an assignment of its own
  (here through update()) cannot be documented, so the generator stops instead of skipping."""
  src = tmp_path / 'cfg.py'
  src.write_text(
      'import ml_collections\n\n\ndef get_config():\n'
      '  c = ml_collections.ConfigDict()\n'
      '  # The group.\n'
      '  c.g = ml_collections.ConfigDict()\n'
      '  # Both of these.\n'
      '  c.g.a = 1e-3\n'
      '  c.g.b = 2\n'
      '  c.g.c = (1, 2)  # its own\n'
      '  c.update({"d": 4})\n'
      '  return c\n')
  module = types.ModuleType('cfg')
  module.__file__ = str(src)
  exec(compile(src.read_text(), str(src), 'exec'), module.__dict__)  # pylint: disable=exec-used
  cfg = module.get_config()
  assert isinstance(cfg, ml_collections.ConfigDict)
  rows, intros = gen_config_docs.document(module, 'get_config', cfg)
  assert intros == {'g': 'The group.'}
  assert [(r.keys, r.defaults, r.meaning) for r in rows] == [
      (['g.a', 'g.b'], ['1e-3', '2'], 'Both of these.'), (['g.c'], ['(1, 2)'], 'its own')]
  with pytest.raises(SystemExit, match="'d'"):
    gen_config_docs.check_complete(rows, cfg, '', 'cfg.py')


# ------------------------------------------------------------------ the README's commands

# Every command of README.md's bash / sh / console blocks (continuations joined, comments and
# prompts dropped, whitespace collapsed) is in exactly one of these two lists. A command that
# a test runs in a reduced form names that test (file::function, checked to exist) and how it
# is reduced; a command that no test can afford says why. The lists must match the README both
# ways: a new command needs an entry, and an entry whose command left the README must go.
RUN_BY_TESTS = {
    'python3 -m venv .venv && . .venv/bin/activate && pip install -q -r requirements.txt && '
    'python launch.py --config=configs/demo.py --workdir=runs/demo': (
        ['tests/test_launch.py::test_train_then_eval_on_synthetic_data',
         'tests/test_install.py::test_pip_install_gives_the_packages_and_the_dlvhd_command'],
        'configs/demo.py with 20 steps and one method (the install itself: .ci/run does it, '
        'and the install test puts the package into a fresh virtual environment)'),
    'python launch.py --config=configs/youtube_surfing.py:cpu --workdir=runs/surf2ski '
    '--config.data.root=data/youtube_highlights --config.data.target_category=skiing': (
        ['tests/test_launch.py::test_real_features_tiny_run_both_methods'],
        'configs/youtube_surfing.py on the real features, target parkour, 10 steps of a tiny '
        'model (skipped without ../shared/data)'),
    'python launch.py --config=configs/youtube_sl.py:cpu --workdir=runs/src_only '
    '--config.data.root=data/youtube_highlights --config.data.target_category=skiing': (
        ['tests/test_launch.py::test_real_features_tiny_run_both_methods',
         'tests/test_tvsum.py::test_tvsum_run_reports_top5_map'],
        'the SL-module source-only on the real features (method sl, 10 steps); '
        'configs/youtube_sl.py itself on a synthetic TVSum folder'),
    'python launch.py --config=configs/youtube_surfing.py:cpu --workdir=runs/surf2ski '
    '--mode=eval --config.data.root=data/youtube_highlights --config.eval.edge_rule=shrink': (
        ['tests/test_launch.py::test_train_then_eval_on_synthetic_data',
         'tests/test_reliability.py::'
         'test_resume_with_another_config_is_refused_and_safe_keys_may_change'],
        '--mode=eval of a tiny run reproduces its scores; eval.edge_rule=shrink is accepted '
        'on the same workdir'),
    'python launch.py --mode=extract --config=configs/extract_i3d.py '
    '--workdir=runs/own/features --config.video_dir=my_videos --config.segmenter=segment_seconds '
    '--config.segment_seconds=1.0': (
        ['tests/test_predict.py::test_predict_real_videos',
         'tests/test_extract_i3d.py::test_features_are_the_network_on_each_whole_segment'],
        'the fixture extracts the two sample mp4s with 2-s segments (skipped without '
        '../shared/data/videos); configs/extract_i3d.py on a generated H.264 file'),
    'python -m data_pipelines.synthetic --label runs/own/features': (
        ['tests/test_predict.py::test_predict_real_videos'],
        'its fixture calls synthetic.label_extracted, what --label runs'),
    'python launch.py --config=configs/own_videos.py --workdir=runs/own/run '
    '--config.data.root=runs/own/features': (
        ['tests/test_predict.py::test_predict_real_videos'],
        'its fixture trains configs/own_videos.py for 20 steps with 2 seeds'),
    'python launch.py --mode=predict --config=configs/own_videos.py --workdir=runs/own/run '
    '--config.predict.inputs=my_videos --config.predict.output_dir=runs/own/out': (
        ['tests/test_predict.py::test_predict_real_videos',
         'tests/test_predict.py::test_index_renders_in_a_browser'],
        'predict on the sample mp4s and a broken one, with a 2.5-s reel; index.html in '
        'headless Chromium where it is installed'),
}

LONG_RUNNING = {
    'python3 -m venv .venv && . .venv/bin/activate && pip install -q -r requirements-test.txt && '
    'python -m pytest -q':
        'it is the test suite itself; .ci/run runs this line verbatim on every submission',
    'python launch.py --mode=sweep --config=configs/table4.py:best --workdir=runs/table4 '
    '--config.data.root=data/youtube_highlights':
        '55 cells of 5 seeds, about 6.5 h on a 2-core CPU (docs/results.md); the sweep '
        'machinery runs on a tiny config in tests/test_sweep.py',
}

SHELL_BLOCK = re.compile(r'^\s*```\s*(bash|sh|shell|console)\s*$')


def _strip_comment(line: str) -> str:
  """The line without a trailing `# comment` (a '#' inside quotes is kept)."""
  quote = None
  for i, ch in enumerate(line):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch == '#' and (i == 0 or line[i - 1].isspace()):
      return line[:i]
  return line


def readme_commands(text: str) -> list[str]:
  commands, block, kind = [], None, None
  for line in text.splitlines():
    if block is None:
      m = SHELL_BLOCK.match(line)
      if m:
        block, kind = [], m.group(1)
      elif FENCE.match(line):
        block, kind = [], None  # another language: skipped
      continue
    if FENCE.match(line):
      if kind:
        commands += _commands_of(block, kind)
      block = None
      continue
    block.append(line)
  return commands


def _commands_of(lines: list[str], kind: str) -> list[str]:
  out, current = [], ''
  for line in lines:
    if kind == 'console':
      if not line.lstrip().startswith('$ ') and not current:
        continue  # output
      line = line.lstrip()[2:] if not current else line
    text = _strip_comment(line).rstrip()
    if text.endswith('\\'):
      current += text[:-1] + ' '
      continue
    current += text
    command = ' '.join(current.split())
    current = ''
    if command:
      out.append(command)
  return out


def test_command_extraction():
  text = ('```bash\n# a comment\npython a.py --x=1 \\\n    --y=2   # why\n\nls "#not" # c\n```\n'
          '```python\nprint(1)\n```\n```console\n$ echo hi\nhi\n```\n')
  assert readme_commands(text) == ['python a.py --x=1 --y=2', 'ls "#not"', 'echo hi']


def _test_exists(spec: str) -> bool:
  path, _, name = spec.partition('::')
  full = os.path.join(REPO, path)
  return os.path.isfile(full) and re.search(rf'^def {re.escape(name)}\(', _read(full), re.M)


def test_every_readme_command_is_run_by_a_test_or_listed_as_long_running():
  commands = readme_commands(_read(README))
  assert commands, 'no shell block found in README.md'
  both = set(RUN_BY_TESTS) & set(LONG_RUNNING)
  assert not both, f'listed as run by a test and as long-running: {both}'
  listed = {**RUN_BY_TESTS, **LONG_RUNNING}
  missing = [c for c in commands if c not in listed]
  assert not missing, ('README commands with no entry in RUN_BY_TESTS or LONG_RUNNING '
                       '(tests/test_docs.py):\n' + '\n'.join(missing))
  gone = [c for c in listed if c not in commands]
  assert not gone, 'entries whose command is no longer in README.md:\n' + '\n'.join(gone)
  for command, (tests, how) in RUN_BY_TESTS.items():
    assert tests and how, command
    absent = [t for t in tests if not _test_exists(t)]
    assert not absent, f'{command}: no such test {absent}'
  for command, reason in LONG_RUNNING.items():
    assert reason.strip(), command
