"""The transfer-gap matrix: which category pairs need adaptation (app/transfer.py).

One category-specific SL-module per category, trained once (num_seeds seeds, source-validation
selection at the `best` preset) and evaluated on every category's test videos: the diagonal
is each column's target-oracle, the rest source-only, and gap = oracle − source-only with a
paired bootstrap interval.

  python launch.py --mode=sweep --config=configs/transfer_matrix.py:best \
      --workdir=runs/matrix_yt --config.data.root=data/youtube_highlights
  python launch.py --mode=sweep --config=configs/transfer_matrix.py:best,tvsum \
      --workdir=runs/matrix_tvsum --config.data.root=data/tvsum

writes matrix.md, matrix.json and gap.png beside one sub-workdir per category: every category
of the data unless --config.sweep.targets names some (at least two). Presets
(comma-separated): cpu, quick, best as configs/table4.py; tvsum: TVSum's ten categories
(top-5 mAP, in the order of the paper's Table 2); rgb: the rgb stream only.
"""
from configs.table4 import apply_presets, make_table_config

YOUTUBE = ('dog', 'gymnastics', 'parkour', 'skating', 'skiing', 'surfing')
TVSUM = ('VT', 'VU', 'GA', 'MS', 'PK', 'PR', 'FM', 'BK', 'BT', 'DS')


def _extra(c, name):
  if name == 'tvsum':
    c.data.name = 'tvsum'
    c.sweep.targets = TVSUM
    c.data.source_category = c.data.target_category = TVSUM[0]
    return True
  if name == 'rgb':
    c.data.features = 'rgb'
    return True
  return False


def get_config(preset: str = ''):
  c = make_table_config('transfer_matrix', 'Transfer-gap matrix (SL-module)', YOUTUBE[0],
                        YOUTUBE, ('sl_specific',), ((None,) * len(YOUTUBE),), '')
  c.method = 'sl'
  c.data.target_category = YOUTUBE[0]
  # Empty: every category of the data at data.root (YouTube Highlights: YOUTUBE, in that
  # order); name some to span those only.
  c.sweep.targets = ()
  c.sweep.kind = 'matrix'  # one model per category in sweep.targets, tested on all of them
  c.sweep.paper = {}
  c.sweep.paper_data = None  # its title names no dataset, and it has no paper numbers
  return apply_presets(c, preset, allowed=('cpu', 'quick', 'best', 'tvsum', 'rgb'), extra=_extra)
