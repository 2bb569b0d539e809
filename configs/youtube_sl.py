"""The category-specific SL-module on YouTube Highlights.

Trained on `data.source_category`'s labels and evaluated on `data.target_category`'s test
videos: source == target is the category-specific setting (and the target-oracle of the
cross-category tables); source != target is the source-only baseline. Presets as in
youtube_surfing.py (`:cpu`, `:best`).
"""
from configs import base
from configs.youtube_surfing import apply_best_preset, apply_cpu_preset


def get_config(preset: str = ''):
  c = base.get_base_config()
  c.name = 'youtube_sl'
  c.method = 'sl'
  c.data.source_category = 'surfing'
  c.data.target_category = 'surfing'
  if preset == 'cpu':
    apply_cpu_preset(c)
  elif preset == 'best':
    apply_best_preset(c)
  elif preset:
    raise ValueError(f'unknown preset {preset!r} for youtube_sl.py; presets: cpu, best')
  return c
