"""The published regime, for comparison: eager PyTorch, one set per step, the three sets one
after another. Run by hand (needs torch, a test-only dependency):

  python -m tools.torch_reference --width=4096 --steps=3

Prints one JSON line with the same fields as `--mode=benchmark` where they apply. The model
is SPEC's (pre-LN nn.TransformerEncoder, GELU, dropout 0.5, two scoring heads), the step
is the published code's: encode x^S, x^T and x^M in turn (batch 1 each), L_coarse + L_fine +
L_distill, backward, SGD with momentum and weight decay.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from dlvhd_jax.model import train_flops_per_set


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--width', type=int, default=4096)
  ap.add_argument('--depth', type=int, default=5)
  ap.add_argument('--set_size', type=int, default=20)
  ap.add_argument('--steps', type=int, default=3)
  ap.add_argument('--threads', type=int, default=0)
  args = ap.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  w, n = args.width, args.set_size

  def head():
    return nn.Sequential(nn.Linear(w, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 256),
                         nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 1))

  layer = nn.TransformerEncoderLayer(w, 8, 2 * w, 0.5, activation='gelu', batch_first=True,
                                     norm_first=True)
  encoder = nn.TransformerEncoder(layer, args.depth, enable_nested_tensor=False)
  coarse, fine = head(), head()
  params = [*encoder.parameters(), *coarse.parameters(), *fine.parameters()]
  opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4)

  def kl(y, p):
    return F.kl_div(F.log_softmax(p, -1), F.softmax(y, -1), reduction='mean')

  def score(h, c):
    return 2 * torch.sigmoid(c(h).squeeze(-1)) - 1

  def step():
    xs, xt = torch.randn(1, n, w), torch.randn(1, n, w)
    ys = torch.randint(0, 2, (1, n)).float() * 2 - 1
    xm = torch.cat([xt[:, :n // 2], xs[:, n // 2:]], 1)
    ym = torch.cat([torch.ones(1, n // 2), torch.zeros(1, n - n // 2)], 1)
    hs, ht, hm = encoder(xs), encoder(xt), encoder(xm)  # one after another, as published
    tc, tf = score(ht, coarse), score(ht, fine)
    avg = (tc + tf) / 2
    loss = kl(ym, score(hm, coarse)) + kl(ys, score(hs, fine)) + 0.5 * (kl(avg, tc) + kl(avg, tf))
    opt.zero_grad()
    loss.backward()
    opt.step()

  step()
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
  step_time = statistics.median(times)
  a = torch.randn(4096, 4096)
  a @ a
  mm = []
  for _ in range(5):
    t = time.perf_counter()
    a @ a
    mm.append(time.perf_counter() - t)
  peak = 2 * 4096 ** 3 / min(mm)
  flops = 3 * train_flops_per_set(n, w, w, args.depth, 2 * w, (1024, 256), 2, True)
  print(json.dumps({
      'regime': 'torch eager, 1 set per step, S/T/M encoded one after another',
      'torch': torch.__version__, 'threads': torch.get_num_threads(), 'width': w,
      'step_time_s': step_time, 'sets_per_s': 1 / step_time,
      'train_tflop_per_step': flops / 1e12, 'achieved_tflops': flops / step_time / 1e12,
      'torch_matmul_peak_tflops': peak / 1e12, 'mfu_vs_torch_peak': flops / step_time / peak}))


if __name__ == '__main__':
  main()
