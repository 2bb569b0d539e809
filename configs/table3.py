"""Table 3 of the paper: the category-specific SL-module on ActivityNet v1.3's five
first-level categories, with and without the set Transformer T.

  python launch.py --mode=sweep --config=configs/table3.py:cpu --workdir=runs/table3 \
      --config.data.root=<folder with activity_net.v1-3.min.json and video_features/>

Categories are named by a prefix of the taxonomy's own names (data_pipelines/activitynet.py).
Presets as configs/table1.py; five seeds per cell.
"""
from configs.table4 import make_table_config

METHODS = ('sl_specific_wo_encoder', 'sl_specific')
TARGETS = ('eat', 'personal', 'household', 'sport', 'social')
PAPER = (
    (0.716, 0.725, 0.763, 0.835, 0.758),  # SL-module (w/o T)
    (0.736, 0.744, 0.787, 0.849, 0.779),  # SL-module
)


def get_config(preset: str = ''):
  c = make_table_config('table3', 'Table 3: category-specific highlight detection on '
                        'ActivityNet (SL-module)', 'sport', TARGETS, METHODS, PAPER, preset,
                        dataset='activitynet')
  c.method = 'sl'
  return c
