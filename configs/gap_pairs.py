"""DL-VHD and Table 4's best UDA baseline on a transfer matrix's gap pairs (app/gap_pairs.py).

After a transfer matrix (configs/transfer_matrix.py), one command runs the methods on every
pair whose target-oracle is significantly above source-only (the ten largest gaps at most)
and writes how much of each gap they close:

  python launch.py --mode=sweep --config=configs/gap_pairs.py:best,tvsum \
      --workdir=runs/gap_tvsum --config.sweep.matrix=runs/matrix_tvsum_kfold5 \
      --config.data.split=kfold
  python launch.py --mode=sweep --config=configs/gap_pairs.py:best \
      --workdir=runs/gap_yt --config.sweep.matrix=runs/matrix_yt

writes gap_closure.md and gap_closure.json beside one sub-workdir per source, pair and method
(<source>/<method>__<target>[__fold<k>]/). The data and seeds must be the matrix's (checked
first; data.root '' = the matrix's). Presets as configs/transfer_matrix.py: cpu, quick,
best (the recipe of the matrices in docs/results.md), tvsum, rgb.
"""
from configs import transfer_matrix
from configs.table4 import apply_presets, make_table_config


def get_config(preset: str = ''):
  c = make_table_config('gap_pairs', 'Gap closure on the transfer matrix\'s gap pairs', 'surfing',
                        transfer_matrix.YOUTUBE, ('dlvhd', 'coral'), ((None,) * 6,) * 2, '')
  c.sweep.kind = 'gap_pairs'
  # The transfer-matrix sweep folder whose models are source-only (off the diagonal) and
  # oracle (on it); required.
  c.sweep.matrix = ''
  # () = the matrix's pairs with a significant gap (oracle above source-only), largest first,
  # at most max_pairs; or 'S->T' pairs of the matrix, run in the order given.
  c.sweep.pairs = ()
  c.sweep.max_pairs = 10
  # The paper's full model and DeepCORAL, the UDA baseline that did best in Table 4 (its
  # weight from configs/table4.py's presets); any method spec of configs/table4.py.
  c.sweep.methods = ('dlvhd', 'coral')
  c.sweep.targets = ()  # unused: the pairs name the targets
  c.sweep.paper = {}
  c.sweep.paper_data = None
  # A pair's runs pair with the matrix's models fold by fold: under data.split=kfold every
  # pair runs every fold.
  c.data.root = ''  # '' = the matrix's data root
  return apply_presets(c, preset, allowed=('cpu', 'quick', 'best', 'tvsum', 'rgb'), extra=_extra)


def _extra(c, name):
  if name == 'tvsum':
    c.data.name = 'tvsum'
    c.data.source_category, c.data.target_category = transfer_matrix.TVSUM[:2]
    return True
  return transfer_matrix._extra(c, name) if name == 'rgb' else False  # pylint: disable=protected-access
