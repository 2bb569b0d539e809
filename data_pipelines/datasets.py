"""The dataset registry (`config.data.name`): each dataset is one module that turns its files
into the same in-memory description (youtube_highlights.CrossCategoryData: videos with
segment features, training labels, category and split) and names its evaluation protocol.
Training, sampling, sweeps and evaluation never ask which dataset they run on; adding one is
a module and a line here.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from data_pipelines import activitynet, tvsum, youtube_highlights
from dlvhd_jax.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class Dataset:
  # load(data_cfg, need_target_train=bool) -> CrossCategoryData
  load: Callable
  # The headline metric results.json reports as `map` (dlvhd_jax/evaluation.py): 'map' =
  # per-video AP against binary labels (YouTube Highlights), 'top5_map' = TVSum's top-5 mAP
  # over every annotator's scores (Video.annotator_scores).
  metric: str


DATASETS = {
    'youtube_highlights': Dataset(youtube_highlights.load_cross_category, 'map'),
    'synthetic': Dataset(youtube_highlights.load_cross_category, 'map'),  # same layout, generated
    'tvsum': Dataset(tvsum.load_cross_category, tvsum.METRIC),
    'activitynet': Dataset(activitynet.load_cross_category, 'map'),
}


def get(name: str) -> Dataset:
  if name not in DATASETS:
    raise UserInputError(f'config.data.name={name!r} is not one of {sorted(DATASETS)}')
  return DATASETS[name]
