"""The scaling table of docs/performance.md: expected DL-VHD step time on 1 .. 256 GPUs, on paper.

  python -m app.scaling --step_time_s=0.1127 --per_device_batch=256 [--width=4096]

Inputs are measurements, the rest is arithmetic: the parameter bytes come from the real model
(its shapes, no allocation); the single-device step time and its batch are measured by
`--mode=benchmark` (docs/performance.md's H200 row at paper width, bf16, batch 256); the link speeds
are the published per-GPU numbers of an H100 SXM node (NVLink 4: 450 GB/s each way; one
400 Gb/s NDR InfiniBand NIC per GPU: 50 GB/s each way). Communication per step, per GPU:

  replicated (data parallel)  ring all-reduce of the f32 gradients: 2 (n-1)/n x P bytes
  FSDP inside a node (k = 8)  all-gather of the parameters for the forward and again for the
                              backward, reduce-scatter of the gradients: 3 (k-1)/k x P over
                              NVLink; across nodes the all-reduce of each 1/k shard over IB

where a ring is as slow as its slowest link (IB once the job spans nodes). The step time is
shown without overlap (compute + communication) and with perfect overlap (the larger of the
two); XLA overlaps part of the gradient all-reduce with the backward pass, so the truth lies
between.
"""
from __future__ import annotations

import argparse
import math

NVLINK_BPS = 450e9
IB_BPS = 50e9
GPUS_PER_NODE = 8


def parameter_bytes(width: int, depth: int = 5, method: str = 'dlvhd') -> int:
  """f32 bytes of the model's parameters at `width` (= feature dim, no projection)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from configs import base  # pylint: disable=g-import-not-at-top
  from dlvhd_jax import methods, model  # pylint: disable=g-import-not-at-top
  cfg = base.get_base_config()
  cfg.model.width, cfg.model.depth = width, depth
  heads = methods.get_objective(method).heads
  abstract = nnx.eval_shape(lambda: model.build_model(cfg, width, heads, 0))
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(abstract))))


def ring_seconds(bytes_: float, n: int, bandwidth: float, factor: float = 2.0) -> float:
  return factor * (n - 1) / n * bytes_ / bandwidth if n > 1 else 0.0


def table(param_bytes: int, step_s: float, per_device_batch: int, gpus=(1, 8, 64, 256)) -> str:
  p_gb = param_bytes / 1e9
  lines = [
      '| GPUs | global batch | replicated: all-reduce per GPU | comm s | step s (overlap … none) '
      '| sets/s | FSDP-8: params+SGD state per GPU | FSDP comm s | FSDP step s (overlap … none) |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for n in gpus:
    bw = NVLINK_BPS if n <= GPUS_PER_NODE else IB_BPS
    ar_bytes = 2 * (n - 1) / n * param_bytes if n > 1 else 0.0
    t_dp = ring_seconds(param_bytes, n, bw)
    k = min(n, GPUS_PER_NODE)
    nodes = math.ceil(n / GPUS_PER_NODE)
    t_fsdp = (ring_seconds(param_bytes, k, NVLINK_BPS, 3.0)
              + ring_seconds(param_bytes / k, nodes, IB_BPS))
    fsdp_state = 2 * param_bytes / k  # parameters + SGD momentum, f32
    best, worst = max(step_s, t_dp), step_s + t_dp
    lines.append(
        f'| {n} | {n * per_device_batch} | {ar_bytes / 1e9:.2f} GB | {t_dp:.3f} | '
        f'{best:.3f} … {worst:.3f} | {n * per_device_batch / worst:,.0f} … '
        f'{n * per_device_batch / best:,.0f} | {fsdp_state / 1e9:.2f} GB (vs {2 * p_gb:.2f}) | '
        f'{t_fsdp:.3f} | {max(step_s, t_fsdp):.3f} … {step_s + t_fsdp:.3f} |')
  return '\n'.join(lines)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  ap.add_argument('--width', type=int, default=4096)
  ap.add_argument('--step_time_s', type=float, required=True,
                  help='measured single-device step time (--mode=benchmark)')
  ap.add_argument('--per_device_batch', type=int, required=True,
                  help='the global batch of that measurement')
  args = ap.parse_args(argv)
  pb = parameter_bytes(args.width)
  print(f'parameters: {pb / 4 / 1e6:.0f} M ({pb / 1e9:.2f} GB f32); single-device step '
        f'{args.step_time_s} s at batch {args.per_device_batch}\n')
  print(table(pb, args.step_time_s, args.per_device_batch))


if __name__ == '__main__':
  main()
