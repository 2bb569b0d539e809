"""The embedded default dataset: synthetic cross-category highlight data in the UMT layout.

Each segment feature is generic background (shared by every category, with a per-video
offset) plus a weak category cue; a highlight segment adds a direction shared by all
categories and a stronger category-specific direction. A detector trained on one category
therefore transfers partly (the shared direction) but misses the target's own highlight
direction, which is exactly what target-category-aware training (DL-VHD's coarse learner,
which tells target segments from source ones) can recover without target labels.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

CATEGORIES = ('diving', 'climbing', 'cycling', 'rowing')


def _labels(rng: np.random.RandomState, length: int) -> np.ndarray:
  """Highlight runs (1), borderline edges (0), background (-1): [T] float."""
  lab = -np.ones(length)
  for _ in range(rng.randint(1, 1 + max(1, length // 12))):
    start, run = rng.randint(0, length), rng.randint(2, 7)
    lab[start:start + run] = 1
  edge = (np.roll(lab, 1) == 1) | (np.roll(lab, -1) == 1)
  lab[(lab < 0) & edge & (rng.rand(length) < 0.3)] = 0
  return lab


def _directions(rng: np.random.RandomState, categories, dim: int):
  """-> (shared [D], {category: specific [D]}, {category: cue [D]}): the generator's first draw."""
  if dim < 2 * len(categories) + 1:
    raise ValueError(f'dim={dim} is too small for {len(categories)} categories')
  # Orthonormal directions, so the shared part is exactly what transfers across categories.
  basis = np.linalg.qr(rng.randn(dim, dim))[0].T
  return (basis[0], {c: basis[1 + i] for i, c in enumerate(categories)},
          {c: basis[1 + len(categories) + i] for i, c in enumerate(categories)})


def directions(*, categories=CATEGORIES, dim: int = 64, seed: int = 0):
  """The directions a dataset written with these arguments was built from (for analyses
  that know the generator: tools/domain_bound.py)."""
  return _directions(np.random.RandomState(seed), categories, dim)


def write_synthetic_dataset(root: str, *, categories=CATEGORIES, videos_per_category: int = 40,
                            dim: int = 64, min_len: int = 20, max_len: int = 90,
                            shared_strength: float = 1.5, specific_strength: float = 2.5,
                            category_cue: float = 0.1, video_offset: float = 0.3, noise: float = 1.0,
                            seed: int = 0) -> str:
  """Writes youtube_anno.json, video_features/<vid>_{rgb,opt}.npy and splits/ under `root`.

  Each stream has dim/2 columns. Written into a temporary folder, then renamed, so an
  interrupted run never leaves a half dataset. Returns `root`.
  """
  if os.path.isfile(os.path.join(root, 'youtube_anno.json')):
    return root
  rng = np.random.RandomState(seed)
  shared, specific, cue = _directions(rng, categories, dim)
  parent = os.path.dirname(os.path.abspath(root))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.synthetic-', dir=parent)
  os.makedirs(os.path.join(tmp, 'video_features'))
  os.makedirs(os.path.join(tmp, 'splits'))
  anno, umt = {}, {}
  for ci, c in enumerate(categories):
    ids = []
    for i in range(videos_per_category):
      vid = f'{c}_{i:03d}'
      length = rng.randint(min_len, max_len + 1)
      lab = _labels(rng, length)
      hl = (lab > 0)[:, None].astype(np.float64)
      # Per-video style and background drift make within-video ranking the real task.
      offset = video_offset * rng.randn(dim)
      x = (noise * rng.randn(length, dim) + offset + category_cue * cue[c]
           + hl * (shared_strength * shared + specific_strength * specific[c]))
      np.save(os.path.join(tmp, 'video_features', f'{vid}_rgb.npy'), x[:, :dim // 2].astype(np.float16))
      np.save(os.path.join(tmp, 'video_features', f'{vid}_opt.npy'), x[:, dim // 2:].astype(np.float16))
      frames = 50 * length + 50
      anno[vid] = {'fps': 30.0, 'frames': str(frames), 'domain': c, 'info': [c, None, []],
                   'clip': [[50.0 * t, min(50.0 * t + 100.0, frames)] for t in range(length)],
                   'match': [int(v) for v in lab], 'mturk': [float(v > 0) for v in lab]}
      ids.append(vid)
    n_train = int(0.7 * len(ids))
    umt[c] = {'train': ids[:n_train], 'val': ids[n_train:]}
    with open(os.path.join(tmp, 'splits', f'{c}.json'), 'w') as f:
      json.dump([[ids[:n_train], 'TraiTightL'], [[], 'TraiLooseL'],
                 [ids[n_train:], 'TestTightL'], [[], 'TestLooseL']], f)
  with open(os.path.join(tmp, 'splits', 'umt_splits.json'), 'w') as f:
    json.dump(umt, f)
  with open(os.path.join(tmp, 'youtube_anno.json'), 'w') as f:
    json.dump(anno, f)
  try:
    os.rename(tmp, root)
  except OSError:  # another process wrote it first
    if not os.path.isfile(os.path.join(root, 'youtube_anno.json')):
      raise
  return root


def label_extracted(root: str, *, stream: str | None = None, categories=('demo_a', 'demo_b'),
                    copies: int = 4, highlight_fraction: float = 0.3, seed: int = 0) -> str:
  """Turns an extraction output (youtube_anno.json + video_features/<vid>_<stream>.npy of
  real videos, all unlabeled) into a small labeled dataset for trying the whole path
  (extract -> train -> predict) without an annotated dataset.

  Every extracted video becomes `copies` videos per category (`<vid>__<category><k>`, its
  features plus 1% noise) whose highlights are the `highlight_fraction` of its segments with
  the largest sum of unit-normalized features: a synthetic but learnable label. Written into `root` (its
  extraction record stays beside the features) with splits/umt_splits.json. `stream`: the
  features' name (default: the one <stream>_extraction.json in `root` names). Returns `root`.
  """
  if stream is None:
    records = sorted(f[:-len('_extraction.json')] for f in os.listdir(root)
                     if f.endswith('_extraction.json'))
    if len(records) != 1:
      raise ValueError(f'{root}: pass the stream to label (--stream), found extraction records '
                       f'{records or "none"}')
    stream = records[0]
  anno_path = os.path.join(root, 'youtube_anno.json')
  with open(anno_path) as f:
    anno = json.load(f)
  rng = np.random.RandomState(seed)
  originals = sorted(v for v, e in anno.items() if '__' not in v)
  if not originals:
    raise ValueError(f'{anno_path} lists no extracted videos')
  umt = {}
  for c in categories:
    ids = []
    for vid in originals:
      x = np.load(os.path.join(root, 'video_features', f'{vid}_{stream}.npy')).astype(np.float32)
      # A linear function of the unit-normalized features: learnable with or without l2.
      key = x.sum(1) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
      k = max(1, int(round(highlight_fraction * len(x))))
      match = np.where(np.argsort(np.argsort(-key, kind='stable')) < k, 1, -1)
      for i in range(copies):
        new = f'{vid}__{c}{i}'
        y = x + 0.01 * x.std() * rng.randn(*x.shape).astype(np.float32)
        np.save(os.path.join(root, 'video_features', f'{new}_{stream}.npy'),
                y.astype(np.load(os.path.join(root, 'video_features', f'{vid}_{stream}.npy'),
                                 mmap_mode='r').dtype))
        anno[new] = {**anno[vid], 'domain': c, 'match': [int(m) for m in match],
                     'mturk': [float(m > 0) for m in match]}
        ids.append(new)
    n_train = max(1, int(0.75 * len(ids)))
    umt[c] = {'train': ids[:n_train], 'val': ids[n_train:]}
  os.makedirs(os.path.join(root, 'splits'), exist_ok=True)
  with open(os.path.join(root, 'splits', 'umt_splits.json'), 'w') as f:
    json.dump(umt, f)
  with open(anno_path + '.tmp', 'w') as f:
    json.dump(anno, f)
  os.replace(anno_path + '.tmp', anno_path)
  return root



def write_test_video(path: str, seconds: float, *, width: int = 1920, height: int = 1080,
                     fps: int = 30, audio: bool = True, crf: int = 30) -> str:
  """An H.264 mp4 (with an AAC tone when `audio`) of a moving pattern whose brightness
  follows the frame number: long, large test videos for memory and speed measurements,
  written frame by frame (memory stays at a few frames)."""
  import av  # pylint: disable=g-import-not-at-top
  import fractions  # pylint: disable=g-import-not-at-top
  yy, xx = np.mgrid[0:height, 0:width]
  base = ((xx + yy) % 256).astype(np.uint8)
  n = int(round(seconds * fps))
  with av.open(path, 'w') as out:
    vs = out.add_stream('libx264', rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, 'yuv420p'
    vs.options = {'crf': str(crf), 'preset': 'ultrafast', 'g': str(4 * fps)}
    rate = 48000
    aus = out.add_stream('aac', rate=rate, layout='stereo') if audio else None
    samples = 0
    for i in range(n):
      shift = (7 * i) % width
      img = np.roll(base, shift, axis=1)
      img = np.stack([img, np.full_like(img, (i * 3) % 256), img[::-1]], axis=-1)
      frame = av.VideoFrame.from_ndarray(img, format='rgb24')
      frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
      out.mux(vs.encode(frame))
      while aus is not None and samples < (i + 1) * rate // fps:
        t = (samples + np.arange(1024)) / rate
        tone = (0.2 * np.sin(2 * np.pi * (220 + (i // fps) % 5 * 110) * t)).astype(np.float32)
        af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format='fltp', layout='stereo')
        af.sample_rate, af.pts, af.time_base = rate, samples, fractions.Fraction(1, rate)
        samples += 1024
        out.mux(aus.encode(af))
    out.mux(vs.encode(None))
    if aus is not None:
      out.mux(aus.encode(None))
  return path


if __name__ == '__main__':
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description='Synthetic labels for extracted features '
                                   '(label_extracted): python -m data_pipelines.synthetic --label <dir>')
  parser.add_argument('--label', required=True, help='an extraction output folder')
  parser.add_argument('--stream', default=None,
                      help='features to label (default: the stream of the extraction record)')
  parser.add_argument('--copies', type=int, default=4)
  args = parser.parse_args()
  print(label_extracted(args.label, stream=args.stream, copies=args.copies))
