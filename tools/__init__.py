"""Command-line tools that are not the library, run from the repository root:
`python -m tools.convert_c3d` (published C3D weights -> .npz), `python -m tools.torch_reference`
(the published PyTorch regime's step time), `python -m tools.gen_config_docs` (docs/configs.md),
`python tools/memory_report.py` (peak bytes per device from XLA's memory analysis),
`python -m tools.gap_closure` (the share of a transfer gap a method closes) and
`bash tools/gpu_check.sh` (the prepared GPU check)."""
