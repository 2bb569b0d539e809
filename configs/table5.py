"""Table 5 of the paper: cross-category highlight detection on ActivityNet v1.3, source sport
(prefix of "Sports, Exercise, and Recreation") -> the other four first-level categories, every
method of Table 4.

  python launch.py --mode=sweep --config=configs/table5.py:cpu --workdir=runs/table5 \
      --config.data.root=<folder with activity_net.v1-3.min.json and video_features/>
"""
from configs.table4 import METHODS, make_table_config

TARGETS = ('eat', 'personal', 'household', 'social')
PAPER = (
    (0.674, 0.667, 0.707, 0.722),  # Source-only
    (0.656, 0.678, 0.694, 0.735),  # DAN
    (0.708, 0.705, 0.765, 0.744),  # DeepCORAL
    (0.687, 0.701, 0.722, 0.731),  # RevGrad
    (0.712, 0.713, 0.761, 0.756),  # MCD
    (0.718, 0.704, 0.750, 0.749),  # AFN
    (0.689, 0.694, 0.742, 0.741),  # DL-VHD (L_coarse only)
    (0.674, 0.667, 0.707, 0.722),  # DL-VHD (L_fine only)
    (0.713, 0.715, 0.778, 0.754),  # DL-VHD (w/o L_distill)
    (0.730, 0.728, 0.793, 0.766),  # DL-VHD (full model)
    (0.736, 0.744, 0.787, 0.779),  # Target-oracle
)


def get_config(preset: str = ''):
  c = make_table_config('table5', 'Table 5: cross-category highlight detection on ActivityNet, '
                        'source sport', 'sport', TARGETS, METHODS, PAPER, preset,
                        dataset='activitynet')
  return c
