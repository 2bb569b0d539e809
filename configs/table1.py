"""Table 1 of the paper: the category-specific SL-module on all six YouTube Highlights
categories (trained on a category's training videos, tested on its test videos), with and
without the set Transformer T.

  python launch.py --mode=sweep --config=configs/table1.py:cpu --workdir=runs/table1 \
      --config.data.root=../shared/data/youtube_highlights

Presets (comma-separated, as configs/table4.py): (none) the paper's model and schedule;
cpu the small CPU model; quick 500 steps; best the recipe chosen on source validation (the
docs/results.md's Table 1). Five seeds per cell by default (one vectorized
program per cell); the table reports mean ± 95% t interval.
"""
from configs.table4 import make_table_config

METHODS = ('sl_specific_wo_encoder', 'sl_specific')
TARGETS = ('dog', 'gymnastics', 'parkour', 'skating', 'skiing', 'surfing')
# Table 1 (mAP), rows in METHODS order, columns in TARGETS order.
PAPER = (
    (0.690, 0.506, 0.690, 0.687, 0.636, 0.695),  # SL-module (w/o T)
    (0.708, 0.532, 0.772, 0.725, 0.661, 0.762),  # SL-module
)


def get_config(preset: str = ''):
  c = make_table_config('table1', 'Table 1: category-specific highlight detection on YouTube '
                        'Highlights (SL-module)', 'dog', TARGETS, METHODS, PAPER, preset)
  c.method = 'sl'
  return c
