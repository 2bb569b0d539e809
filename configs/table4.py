"""Table 4 of the paper: source surfing -> dog, gymnastics, parkour, skating, skiing.

Every method of the table (source-only, five UDA baselines, the DL-VHD ablations, the full
model and the target-oracle), each target in its own run:

  python launch.py --mode=sweep --config=configs/table4.py:cpu --workdir=runs/table4 \
      --config.data.root=../shared/data/youtube_highlights

writes runs/table4/{table.md,table.json,table.png} beside one sub-workdir per run
(<method>__<target>/); rerunning skips the runs that finished. The paper's numbers (C3D
features, its own split) are printed in parentheses next to ours.

Presets (comma-separated): (none) the paper's model and schedule; cpu the small model of
configs/youtube_surfing.py (1500 steps of 32 sets at lr 0.5) with the UDA weights of
CPU_UDA_WEIGHTS; quick 500 steps instead (about a third of the time, for a first look); best
the recipe chosen on source validation (configs/youtube_surfing.py: the cpu model, 500 steps,
the best source-validation checkpoint per seed) with BEST_UDA_WEIGHTS; docs/results.md's
tables use it.
"""
import ml_collections

from configs import base
from configs.youtube_surfing import apply_best_preset, apply_cpu_preset

METHODS = ('sl', 'dan', 'coral', 'revgrad', 'mcd', 'afn', 'dlvhd_coarse_only',
           'dlvhd_fine_only', 'dlvhd_no_distill', 'dlvhd', 'sl_oracle')

TARGETS = ('dog', 'gymnastics', 'parkour', 'skating', 'skiing')
# Table 4 (mAP), rows in METHODS order, columns in TARGETS order.
PAPER = (
    (0.485, 0.505, 0.547, 0.568, 0.545),  # Source-only
    (0.652, 0.487, 0.713, 0.638, 0.611),  # DAN
    (0.634, 0.513, 0.732, 0.659, 0.620),  # DeepCORAL
    (0.628, 0.493, 0.654, 0.640, 0.597),  # RevGrad
    (0.567, 0.529, 0.499, 0.642, 0.654),  # MCD
    (0.625, 0.517, 0.575, 0.653, 0.626),  # AFN
    (0.574, 0.498, 0.704, 0.635, 0.631),  # DL-VHD (L_coarse only)
    (0.485, 0.505, 0.547, 0.568, 0.545),  # DL-VHD (L_fine only)
    (0.630, 0.529, 0.718, 0.683, 0.658),  # DL-VHD (w/o L_distill)
    (0.649, 0.540, 0.748, 0.713, 0.686),  # DL-VHD (full model)
    (0.708, 0.532, 0.772, 0.725, 0.661),  # Target-oracle
)


# At the cpu preset's learning rate (0.5 with momentum 0.9, 500x the paper's) two domain
# terms diverge at their usual weights: SAFN's constant push on the feature norm grows the
# encoder's weight products exponentially (surfing -> skiing, 400 steps: encoder output norm
# 1e11 at weight 5e-4, 4e8 at 5e-5, 24 at 5e-6 against 13 source-only), and RevGrad at 1.0
# saturates every score. Each weight below is the largest of a x10 grid whose run keeps
# finite norms and non-constant scores (a label-free check: no target labels were used).
# DAN, CORAL and MCD train at 1.0.
CPU_UDA_WEIGHTS = {'afn': 5e-6, 'revgrad': 0.1}
# The `best` preset's weights: each chosen on source validation by configs/uda_weights.py
# (surfing -> skiing at this preset, 3 weights x 3 seeds, the best mean source-validation mAP;
# no target label read). DAN: 0.1 over 1 and 10 (0.567 / 0.459 / 0.380); AFN: 5e-7 over 5e-6
# and 5e-5 (0.549 / 0.455 / 0.380); RevGrad: 0.01 over 0.1 and 1 (0.580 / 0.477 / 0.468);
# CORAL: 1.0 over 0.1 and 10 (0.610 / 0.598 / 0.571); MCD: 1.0 over 0.1 and 10 (0.598 /
# 0.592 / 0.522).
BEST_UDA_WEIGHTS = {**CPU_UDA_WEIGHTS, 'dan': 0.1, 'afn': 5e-7, 'revgrad': 0.01, 'coral': 1.0,
                    'mcd': 1.0}


def set_uda_weights(c, weights):
  # Works before and after configs/base.py carries the `uda` group.
  if 'uda' not in c:
    c.uda = ml_collections.ConfigDict()
  for method, w in weights.items():
    if method not in c.uda:
      c.uda[method] = ml_collections.ConfigDict()
    c.uda[method].weight = float(w)


def apply_presets(c, preset: str, allowed=('cpu', 'quick', 'best'), extra=None):
  """Applies comma-separated presets; `extra(c, name)` handles config-specific ones."""
  for name in filter(None, (p.strip() for p in preset.split(','))):
    if name == 'cpu':
      apply_cpu_preset(c)
      set_uda_weights(c, CPU_UDA_WEIGHTS)
    elif name == 'best':
      apply_best_preset(c)
      set_uda_weights(c, BEST_UDA_WEIGHTS)
    elif name == 'quick':
      c.train.num_steps = 500
      c.train.checkpoint_every_steps = 250
    elif extra is None or not extra(c, name):
      raise ValueError(f'unknown preset {name!r}; presets: {", ".join(allowed)}')
  return c


def make_table_config(name: str, title: str, source: str, targets, methods, paper,
                      preset: str, dataset: str = 'youtube_highlights') -> ml_collections.ConfigDict:
  """A `--mode=sweep` config of `methods` x `targets` on `dataset` with the paper's numbers
  embedded."""
  c = base.get_base_config()
  c.name = name
  c.data.name = dataset
  c.method = methods[-2] if len(methods) > 1 else methods[0]  # unused by the sweep
  c.data.source_category = source
  c.data.target_category = targets[0]
  # --mode=sweep (app/sweep.py): one cell per method x target, each a full run in its own
  # sub-workdir `<method>__<target>/`; table.md, table.json and table.png after every cell.
  c.sweep = ml_collections.ConfigDict()
  c.sweep.kind = 'methods'  # methods (a table) | sensitivity (one parameter over values)
  c.sweep.title = title  # the table's heading
  # The dataset and source the title and the paper's numbers are about: a sweep run on
  # another (--config.data.name / data.source_category) gets a heading naming its own and
  # no paper numbers beside it.
  c.sweep.paper_data = ml_collections.ConfigDict({'name': c.data.name, 'source': source})
  # Method specs: a registered method, a named variant (sl_oracle, sl_wo_encoder,
  # dlvhd_wo_encoder) and optionally ':key=value,...' overrides, e.g. 'dan:uda.dan.weight=0.5'.
  c.sweep.methods = tuple(methods)
  c.sweep.targets = tuple(targets)  # target categories; the source is data.source_category
  # {spec: {target: mAP}}: the paper's numbers, printed in parentheses beside ours.
  c.sweep.paper = {m: dict(zip(targets, row)) for m, row in zip(methods, paper)}
  # False: train nothing, write the tables from the cells that finished so far (the others
  # read "-"), e.g. beside a sweep that is still running.
  c.sweep.train_missing = True
  # True: a finished cell measured under another config (in a key that changes results) is
  # moved to <cell>.stale and trained again; False: a one-line error names it.
  c.sweep.redo_stale = False
  # True with --config.data.split=kfold: every cell once per fold (<cell>__fold<k>/),
  # the table's cell over every fold's test videos; False: the one fold of data.fold. (A
  # transfer matrix always runs every fold.)
  c.sweep.all_folds = False
  # Five seeds per cell, trained as one vectorized program: every cell is a mean with a 95%
  # interval, and methods are compared by a paired bootstrap (app/tables.py).
  c.num_seeds = 5
  return apply_presets(c, preset)


def get_config(preset: str = ''):
  return make_table_config(
      'table4', 'Table 4: cross-category highlight detection on YouTube Highlights, source surfing',
      'surfing', TARGETS, METHODS, PAPER, preset)
