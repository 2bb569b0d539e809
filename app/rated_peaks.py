"""Rated dense peak FLOP/s of the accelerators a user is likely to run on, for `mfu_rated`.

MFU against the rated peak is what MaxText and the scaling literature report; the benchmark's
`mfu` divides by a matmul peak it measures on the spot instead. Figures are the vendors'
dense numbers per device (NVIDIA: without structured sparsity; Google: per chip). A float32
step on these GPUs runs its matmuls as TF32 under XLA's default precision, so float32 uses
the dense TF32 peak; TPUs have no rated float32 matmul peak.
"""
from __future__ import annotations

TERA = 1e12

# (substring of jax's device_kind, {dtype: dense peak TFLOP/s per device}), most specific first.
RATED_TFLOPS = (
    ('H100 PCIe', {'bfloat16': 756.0, 'float16': 756.0, 'float32': 378.0}),
    ('H100', {'bfloat16': 989.4, 'float16': 989.4, 'float32': 494.7}),
    ('H200', {'bfloat16': 989.4, 'float16': 989.4, 'float32': 494.7}),
    ('A100', {'bfloat16': 312.0, 'float16': 312.0, 'float32': 156.0}),
    ('L40S', {'bfloat16': 362.0, 'float16': 362.0, 'float32': 183.0}),  # before 'L4'
    ('L4', {'bfloat16': 121.0, 'float16': 121.0, 'float32': 60.0}),
    ('TPU v4', {'bfloat16': 275.0}),
    ('TPU v5 lite', {'bfloat16': 197.0}),  # v5e
    ('TPU v5e', {'bfloat16': 197.0}),
    ('TPU v5p', {'bfloat16': 459.0}),
    ('TPU v5', {'bfloat16': 459.0}),  # v5p reports itself as "TPU v5"
    ('TPU v6 lite', {'bfloat16': 918.0}),  # v6e (Trillium)
    ('TPU v6e', {'bfloat16': 918.0}),
)


def rated_peak(platform: str, device_kind: str, dtype: str) -> tuple[float | None, str]:
  """-> (rated dense peak FLOP/s of one device for `dtype`, or None; what it is or why not)."""
  if platform == 'cpu':
    return None, 'no rated peak for CPUs (mfu is against the measured matmul peak)'
  for key, peaks in RATED_TFLOPS:
    if key.lower() in device_kind.lower():
      if dtype not in peaks:
        return None, f'no rated {dtype} peak for {device_kind}'
      return peaks[dtype] * TERA, f'{key} dense {dtype} ({peaks[dtype]:g} TFLOP/s per device)'
  return None, f'rated peak of {device_kind!r} unknown (app/rated_peaks.py)'
