"""Table 2 of the paper: the category-specific SL-module on TVSum's ten categories (top-5 mAP),
with and without the set Transformer T.

  python launch.py --mode=sweep --config=configs/table2.py:cpu --workdir=runs/table2 \
      --config.data.root=<folder with the TVSum annotation files and video_features/>

Presets as configs/table1.py (cpu, quick). Split `umt` (4 train / 1 test video per category,
<root>/splits/umt_splits.json) by default; `--config.data.split=paper` is the paper's (the 2
longest videos train, the other 3 test). Five seeds per cell.
"""
from configs.table4 import make_table_config

METHODS = ('sl_specific_wo_encoder', 'sl_specific')
TARGETS = ('VT', 'VU', 'GA', 'MS', 'PK', 'PR', 'FM', 'BK', 'BT', 'DS')
# Table 2 (top-5 mAP), rows in METHODS order, columns in TARGETS order.
PAPER = (
    (0.837, 0.663, 0.724, 0.851, 0.767, 0.594, 0.580, 0.708, 0.779, 0.612),  # SL-module (w/o T)
    (0.865, 0.687, 0.749, 0.862, 0.790, 0.632, 0.589, 0.726, 0.789, 0.640),  # SL-module
)


def get_config(preset: str = ''):
  c = make_table_config('table2', 'Table 2: category-specific highlight detection on TVSum '
                        '(SL-module, top-5 mAP)', 'VT', TARGETS, METHODS, PAPER, preset,
                        dataset='tvsum')
  c.method = 'sl'
  return c
