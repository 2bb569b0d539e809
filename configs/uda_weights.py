"""Label-free choice of every UDA baseline's weight for Tables 4 and 7, on source validation.

  python launch.py --mode=sweep --config=configs/uda_weights.py --workdir=runs/uda_weights \
      --config.data.root=../shared/data/youtube_highlights

One cell per baseline on the default pair surfing -> skiing at the `best` preset: its three
weights x 3 seeds train as one vectorized program (config.vary); each value's seeds are
scored on the held-out 20% of the surfing training videos every 50 steps, and the weight with
the best mean source-validation mAP is chosen (`selected_value` in each cell's results.json;
no target label is read). A weight whose training diverges drops out of the choice.
Its outcome is adopted by writing it into configs/table4.py's BEST_UDA_WEIGHTS (the `best`
preset of Tables 4 and 7). A finished Table 4 cell measured at the old weight is then refused
by the sweep until it is retrained (`--config.sweep.redo_stale=True`).
"""
from configs.table4 import make_table_config

# Two decades around the weight each method trains stably with at the cpu learning rate
# (configs/table4.py: CPU_UDA_WEIGHTS for AFN and RevGrad, 1.0 for the others).
GRIDS = {
    'dan': (0.1, 1.0, 10.0),
    'coral': (0.1, 1.0, 10.0),
    'revgrad': (0.01, 0.1, 1.0),
    'mcd': (0.1, 1.0, 10.0),
    'afn': (5e-7, 5e-6, 5e-5),
}


def methods():
  return tuple(f'{m}:vary.key=uda.{m}.weight,vary.values={grid!r}' for m, grid in GRIDS.items())


def get_config(preset: str = ''):
  if preset:
    raise ValueError(f'unknown preset {preset!r} for uda_weights.py: it has none')
  c = make_table_config('uda_weights', 'UDA weights chosen on source validation (surfing -> '
                        'skiing, 3 seeds per weight)', 'surfing', ('skiing',), methods(), (),
                        'best')
  c.method = 'dan'  # unused by the sweep (each cell names its method), but validated
  c.num_seeds = 3
  return c
