"""Converts published PyTorch C3D weights to the .npz the extractor loads without PyTorch.

  python -m tools.convert_c3d --input c3d.pickle --output c3d_params.npz

Reads either published layout (c3d-pretrained.pth: `features.N.*` / `classifier.N.*`;
the Sports-1M c3d.pickle: `conv1.* ... fc7.*`). PyTorch is needed here only
(requirements-test.txt); it is imported lazily so the rest of the package never needs it.
"""
from __future__ import annotations

import argparse
import pickle
import sys

import numpy as np

from dlvhd_jax import c3d


def load_torch_state_dict(path: str, allow_pickle: bool = False) -> dict[str, np.ndarray]:
  """A torch.save'd state dict (or a checkpoint dict holding one) -> {name: numpy array}."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SystemExit('error: converting C3D weights needs PyTorch: pip install torch') from None
  # weights_only refuses arbitrary pickled code; --allow_pickle for trusted old files.
  obj = torch.load(path, map_location='cpu', weights_only=not allow_pickle)
  if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
    obj = obj['state_dict']
  if not isinstance(obj, dict):
    raise ValueError(f'{path}: expected a state dict, got {type(obj).__name__}')
  return {k: v.detach().cpu().float().numpy() if hasattr(v, 'detach') else np.asarray(v)
          for k, v in obj.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--input', required=True, help='PyTorch state dict (.pth / .pickle)')
  parser.add_argument('--output', required=True, help='parameter file to write (.npz)')
  parser.add_argument('--allow_pickle', action='store_true',
                      help='load with weights_only=False (only for files you trust)')
  args = parser.parse_args(argv)
  try:
    params = c3d.convert_torch_state_dict(load_torch_state_dict(args.input, args.allow_pickle))
  except (ValueError, OSError, RuntimeError, pickle.UnpicklingError) as e:
    print(f'error: {args.input}: {" ".join(str(e).split())}', file=sys.stderr)
    return 1
  c3d.save_params(args.output, params)
  count = sum(v.size for layer in params['params'].values() for v in layer.values())
  print(f'wrote {args.output}: {count:,} C3D parameters (conv1..fc7)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
