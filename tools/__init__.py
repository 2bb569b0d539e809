"""Command-line tools that are not the library, run from the repository root:
`python -m tools.convert_c3d` (published C3D weights -> .npz), `python -m tools.torch_reference`
(the published PyTorch regime's step time), `python -m tools.gen_config_docs` (docs/configs.md),
`python tools/memory_report.py` (peak bytes per device from XLA's memory analysis),
`python -m tools.gap_closure` (the share of a transfer gap a method closes),
`python -m tools.head_probe` (what each DL-VHD head ranks), `python -m tools.seed_agreement`
(how far a run's seeds agree on each target video's order), `python -m tools.iw_validation`
(source validation weighted towards the target's inputs), `python -m tools.domain_bound`
(each head's optimum on the embedded generator), `python -m tools.shift_vs_gap` (whether
label-free readings of a matrix's pairs follow its gaps), `python -m tools.tvsum_ceiling` (TVSum's
chance, human-agreement and linear-probe references) and `bash tools/gpu_check.sh` (the
prepared GPU check)."""
import functools
import json
import sys

from dlvhd_jax.errors import UserInputError


def exit_on_user_error(main):
  """A tool's main(argv): the library's one-line UserInputError (app/gap_closure.py's, say)
  is printed as `error: <message>` and returned as exit code 2, without a traceback."""
  @functools.wraps(main)
  def wrapped(argv=None):
    try:
      return main(argv)
    except UserInputError as e:
      print(f'error: {e}', file=sys.stderr)
      return e.exit_code
  return wrapped


def report(table: str, numbers, json_path: str = '') -> None:
  """Prints a tool's markdown table and, when asked, writes its numbers as JSON."""
  print(table)
  if json_path:
    with open(json_path, 'w') as f:
      json.dump(numbers, f, indent=1)
