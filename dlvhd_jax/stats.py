"""Statistics over seeds for results and tables: mean, spread, 95% intervals, paired tests.

numpy only (scipy is not a runtime dependency): Student's t quantile from a table for small
degrees of freedom and its Cornish-Fisher expansion above (error < 1e-7).
"""
from __future__ import annotations

import math

import numpy as np

# t_{0.975, df} for df = 1..30.
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
         2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
         2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
         2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
  """The 97.5% quantile of Student's t with `df` degrees of freedom."""
  if df < 1:
    raise ValueError(f'df={df}: a t interval needs at least 2 values')
  if df <= len(_T975):
    return _T975[df - 1]
  z = _Z975
  g1 = (z ** 3 + z) / 4
  g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
  g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
  g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
  return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


def mean_ci(values) -> dict:
  """{'mean', 'std' (ddof 1), 'ci95' (half-width of the t interval), 'n'}; std and ci95 are
  None for a single value."""
  v = np.asarray(values, np.float64)
  n = len(v)
  if n == 0:
    return {'mean': None, 'std': None, 'ci95': None, 'n': 0}
  if n == 1:
    return {'mean': float(v[0]), 'std': None, 'ci95': None, 'n': 1}
  std = float(np.std(v, ddof=1))
  return {'mean': float(np.mean(v)), 'std': std, 'ci95': t975(n - 1) * std / math.sqrt(n), 'n': n}


def paired_bootstrap(pairs, *, num_samples: int = 2000, seed: int = 0) -> dict:
  """Difference of means a - b and its 95% percentile interval, resampling seeds and test
  videos (a two-way paired bootstrap).

  pairs: one (a, b) per target, each [seeds, videos] per-video APs of two methods on that
  target's test videos (seeds paired by index and shared across targets, videos by
  position; a video where either is NaN, e.g. without a positive, is left out). The
  difference is the mean over targets of the mean over seeds and videos. Each bootstrap
  sample draws the seeds with replacement once, and each target's videos with replacement.
  -> {'diff', 'lo', 'hi', 'p_le_0' (share of samples with a difference <= 0)}.
  """
  diffs = []
  for a, b in pairs:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
      raise ValueError(f'paired_bootstrap needs [seeds, videos] arrays of one shape, got '
                       f'{a.shape} and {b.shape}')
    d = a - b
    diffs.append(d[:, ~np.isnan(d).any(axis=0)])
  num_seeds = {d.shape[0] for d in diffs}
  if len(num_seeds) != 1:
    raise ValueError(f'paired_bootstrap: targets have different seed counts {sorted(num_seeds)}')
  s = num_seeds.pop()
  rng = np.random.RandomState(seed)
  s_idx = rng.randint(0, s, size=(num_samples, s))
  boots = np.zeros(num_samples)
  for d in diffs:
    v_idx = rng.randint(0, d.shape[1], size=(num_samples, d.shape[1]))
    boots += d[s_idx[:, :, None], v_idx[:, None, :]].mean(axis=(1, 2))
  boots /= len(diffs)
  lo, hi = np.percentile(boots, [2.5, 97.5])
  return {'diff': float(np.mean([d.mean() for d in diffs])), 'lo': float(lo), 'hi': float(hi),
          'p_le_0': float(np.mean(boots <= 0))}


def gap_closure(method, source_only, oracle, *, num_samples: int = 2000, seed: int = 0) -> dict:
  """The share of a transfer gap a method closes, (method − source-only) / (oracle −
  source-only), with a 95% percentile interval from the same two-way paired bootstrap as
  `paired_bootstrap` (seeds drawn once per sample, shared by the three; videos likewise).

  Each argument: [seeds, videos] per-video APs on one target's test videos (videos by
  position; a video where any is NaN is left out). -> {'share', 'lo', 'hi', 'gap',
  'gain'}: gap = oracle − source-only and gain = method − source-only (means). A bootstrap
  sample whose gap is <= 0 has no gap to close: it counts as a share of -inf or +inf by the
  sign of its gain, so a gap that is not clearly positive gives a wide interval.
  """
  m, s, o = (np.asarray(x, np.float64) for x in (method, source_only, oracle))
  if not m.shape == s.shape == o.shape or m.ndim != 2:
    raise ValueError(f'gap_closure needs [seeds, videos] arrays of one shape, got {m.shape}, '
                     f'{s.shape} and {o.shape}')
  keep = ~(np.isnan(m) | np.isnan(s) | np.isnan(o)).any(axis=0)
  m, s, o = m[:, keep], s[:, keep], o[:, keep]
  rng = np.random.RandomState(seed)
  s_idx = rng.randint(0, m.shape[0], size=(num_samples, m.shape[0]))
  v_idx = rng.randint(0, m.shape[1], size=(num_samples, m.shape[1]))
  pick = lambda x: x[s_idx[:, :, None], v_idx[:, None, :]].mean(axis=(1, 2))  # noqa: E731
  gain, gap = pick(m) - pick(s), pick(o) - pick(s)
  with np.errstate(divide='ignore', invalid='ignore'):
    share = np.where(gap > 0, gain / gap, np.where(gain >= 0, np.inf, -np.inf))
  # Interpolating between an infinite and a finite share is undefined: with any, the nearest
  # order statistic.
  lo, hi = np.percentile(share, [2.5, 97.5],
                         method='linear' if np.isfinite(share).all() else 'nearest')
  g, d = float(o.mean() - s.mean()), float(m.mean() - s.mean())
  return {'share': d / g if g > 0 else float('nan'), 'lo': float(lo), 'hi': float(hi),
          'gap': g, 'gain': d}
