"""The recipe study of the README (issue 9): which training choices raise the category-specific
SL-module's mAP on YouTube Highlights, chosen on source validation only.

  python launch.py --mode=sweep --config=configs/recipe_study.py --workdir=runs/recipe_study \
      --config.data.root=../shared/data/youtube_highlights

Each row is one recipe (a method spec with overrides on top of the `cpu,quick` preset), run on
all six categories (train and test on the category, as Table 1) with 3 seeds. 20% of each
category's training videos are held out as source validation and evaluated every 50 steps;
each seed keeps its best evaluation. table.md's source-validation grid is the selection
criterion (its Average column picks the recipe); the test mAP grids are for reporting only.
"""
from configs.table1 import TARGETS
from configs.table4 import make_table_config
from configs.youtube_surfing import selection_protocol

BASE = 'sl_specific_wo_encoder'
# Round 1: one change at a time against the cpu,quick recipe.
ROUND1 = (
    BASE,
    f'{BASE}:data.normalize=standardize',
    f'{BASE}:data.normalize=l2',
    f'{BASE}:loss.temperature=0.5',
    f'{BASE}:train.optimizer=adamw,train.learning_rate=0.001,train.lr_schedule=cosine,'
    'train.warmup_steps=50,train.weight_decay=0.01',
    f'{BASE}:data.features=rgb',
    f'{BASE}:train.learning_rate=0.1',
)


def get_config(preset: str = 'round1'):
  rows = {'round1': ROUND1}[preset or 'round1']
  c = make_table_config('recipe_study', 'Recipe study: category-specific SL-module, one change '
                        'at a time (selection on source validation)', 'dog', TARGETS, rows, (),
                        'cpu,quick')
  c.method = 'sl'
  c.num_seeds = 3
  return selection_protocol(c)
