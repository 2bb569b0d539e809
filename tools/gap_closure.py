"""How much of a transfer gap each method closes, from a transfer matrix and method cells.

  python -m tools.gap_closure --matrix=runs/matrix_yt runs/gap_gymnastics runs/gap_dog

--matrix: a `configs/transfer_matrix.py` sweep folder (source-only and oracle per pair: the
model trained on the source tested on the target, and the target's own model). Positional:
folders of finished runs (a table sweep's folder, or single runs) with results.json of
another method on a (source, target) pair of the matrix; the same test videos and split,
seeds paired by value (replica r of a run is seed --config.seed + r, so a run over seeds 0..2
pairs with the first three seeds of a 5-seed matrix, and runs of one method on one pair over
disjoint seeds, say seeds 0..2 and then --config.seed=3 --config.num_seeds=2, merge into one
row over all five). Against a k-fold matrix (TVSum's data.split=kfold), one run per fold of a method on
a pair (one table sweep with --config.sweep.all_folds=True, or one per --config.data.fold=k)
pairs with that fold's models, and the folds merge as the matrix merges them: one row over
every target video. Prints a markdown table: the gap (oracle − source-only), the method's
gain over source-only (paired bootstrap over seeds × test videos) and the share of the gap
it closes (dlvhd_jax.stats.gap_closure), each with its 95% interval. --pool adds one row per method (and variant) run on two or more
pairs: every pair's test videos as columns of one target, seeds paired by index, so the
gain and the share of the gap closed are those of the pooled gap, with one interval.
"""
from __future__ import annotations

import argparse
import sys

from app.gap_closure import (LABELS, find_runs, fold_groups, label, matrix_pair, per_video,  # noqa: F401
                             pooled, rows, run_fold, scored_variant, to_markdown, variant)
from tools import exit_on_user_error, report


@exit_on_user_error
def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--matrix', required=True, help='a transfer-matrix sweep folder')
  p.add_argument('--json', default='', help='also write the rows here')
  p.add_argument('--pool', action='store_true',
                 help='add a row per method pooled over every pair it ran on')
  p.add_argument('runs', nargs='+', help='run folders or sweep folders of other methods')
  args = p.parse_args(argv)
  table = rows(args.matrix, args.runs)
  if args.pool:
    table += pooled(table)
  report(to_markdown(table), table, args.json)
  return 0


if __name__ == '__main__':
  sys.exit(main())
