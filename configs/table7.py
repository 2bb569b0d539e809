"""Table 7 of the paper (supplement): source dog -> gymnastics, parkour, skating, skiing,
surfing, with the same methods as configs/table4.py (and the same presets: cpu, quick).

  python launch.py --mode=sweep --config=configs/table7.py:cpu --workdir=runs/table7 \
      --config.data.root=../shared/data/youtube_highlights
"""
from configs.table4 import METHODS, make_table_config

TARGETS = ('gymnastics', 'parkour', 'skating', 'skiing', 'surfing')
# Table 7 (mAP), rows in METHODS order, columns in TARGETS order.
PAPER = (
    (0.486, 0.480, 0.535, 0.564, 0.531),  # Source-only
    (0.520, 0.674, 0.632, 0.613, 0.575),  # DAN
    (0.518, 0.615, 0.615, 0.609, 0.517),  # DeepCORAL
    (0.514, 0.630, 0.629, 0.618, 0.587),  # RevGrad
    (0.479, 0.587, 0.658, 0.614, 0.625),  # MCD
    (0.498, 0.594, 0.607, 0.620, 0.589),  # AFN
    (0.489, 0.495, 0.571, 0.608, 0.559),  # DL-VHD (L_coarse only)
    (0.486, 0.480, 0.535, 0.564, 0.531),  # DL-VHD (L_fine only)
    (0.525, 0.686, 0.654, 0.630, 0.649),  # DL-VHD (w/o L_distill)
    (0.556, 0.734, 0.692, 0.653, 0.676),  # DL-VHD (full model)
    (0.532, 0.772, 0.725, 0.661, 0.762),  # Target-oracle
)


def get_config(preset: str = ''):
  return make_table_config(
      'table7', 'Table 7: cross-category highlight detection on YouTube Highlights, source dog',
      'dog', TARGETS, METHODS, PAPER, preset)
