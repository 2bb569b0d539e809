"""What counts as a highlight: ranks, top segments merged into intervals, the reel's plan,
and the Prediction of one video (its JSON form). Pure numpy, no model."""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np


def ranks(scores: np.ndarray) -> np.ndarray:
  """1 = the highest score; ties go to the earlier segment."""
  order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, np.float64)))
  r = np.empty(len(scores), np.int64)
  r[order] = np.arange(1, len(scores) + 1)
  return r


def relative(scores: np.ndarray) -> np.ndarray:
  """Scores min-max scaled within the video: 1 = its best segment, 0 = its worst (all 0.5
  when they tie). The model ranks segments within a set, so only the order within a video
  means something; a trained model's raw scores often sit near one end of (-1, 1)."""
  s = np.asarray(scores, np.float64)
  span = float(s.max() - s.min()) if len(s) else 0.0
  return (s - s.min()) / span if span > 0 else np.full(len(s), 0.5)


def num_top(num_segments: int, top_fraction: float, top_k: int) -> int:
  """How many segments are highlights: top_k if > 0, else ceil(top_fraction * T) (>= 1)."""
  if num_segments == 0:
    return 0
  k = int(top_k) if top_k and top_k > 0 else math.ceil(float(top_fraction) * num_segments)
  return int(min(num_segments, max(1, k)))


def merge_top(starts, ends, scores, k: int) -> list[dict]:
  """The `k` best segments merged into intervals where they touch or overlap, in time order:
  [{start_s, end_s, score}] with score = the mean of the merged segments' scores."""
  top = np.flatnonzero(ranks(scores) <= k)
  top = top[np.argsort(np.asarray(starts)[top], kind='stable')]
  out: list[dict] = []
  members: list[float] = []
  for i in top:
    s, e, x = float(starts[i]), float(ends[i]), float(scores[i])
    if out and s <= out[-1]['end_s'] + 1e-6:
      out[-1]['end_s'] = max(out[-1]['end_s'], e)
      members.append(x)
      out[-1]['score'] = float(np.mean(members))
    else:
      out.append({'start_s': s, 'end_s': e, 'score': x})
      members = [x]
  return out


def reel_plan(highlights: Sequence[dict], reel_seconds: float) -> list[tuple[float, float]]:
  """Intervals for a reel of at most `reel_seconds`: the best-scoring highlights first (the
  last one taken is shortened to fit), played in time order."""
  left, chosen = float(reel_seconds), []
  for h in sorted(highlights, key=lambda h: (-h['score'], h['start_s'])):
    if left <= 1e-6:
      break
    length = min(h['end_s'] - h['start_s'], left)
    chosen.append((h['start_s'], h['start_s'] + length))
    left -= length
  return sorted(chosen)


@dataclasses.dataclass
class Prediction:
  """Scores of one video. starts_s, ends_s, scores: [T]; scores in (-1, 1), the mean over the
  run's seeds (float64: their order is the ranking); highlights: merged top segments
  (merge_top)."""
  video: str
  path: str | None
  duration_s: float
  fps: float | None
  starts_s: np.ndarray
  ends_s: np.ndarray
  scores: np.ndarray
  highlights: list[dict]
  model: dict
  # [T, C] class probabilities per segment from the extractor's own head (I3D: Kinetics-400),
  # with their names; None when the features came without them.
  class_probs: np.ndarray | None = None
  class_names: Sequence[str] | None = None

  def top_classes(self, rows, k: int = 3) -> list[dict]:
    """The k most probable classes of the mean probabilities of segments `rows`."""
    p = np.asarray(self.class_probs, np.float64)[rows].reshape(-1, len(self.class_names))
    p = p.mean(0)
    return [{'class': self.class_names[j], 'p': round(float(p[j]), 4)}
            for j in np.argsort(-p, kind='stable')[:k]]

  def to_json(self) -> dict:
    rank, rel = ranks(self.scores), relative(self.scores)
    segments = [{'start_s': round(float(s), 4), 'end_s': round(float(e), 4),
                 'score': float(x), 'relative': round(float(q), 4), 'rank': int(r)}
                for s, e, x, q, r in zip(self.starts_s, self.ends_s, self.scores, rel, rank)]
    intervals = [{k: round(v, 4) if k != 'score' else v for k, v in h.items()}
                 for h in self.highlights]
    if self.class_probs is not None:
      for i, seg in enumerate(segments):
        seg['classes'] = self.top_classes([i])
      mid = (np.asarray(self.starts_s) + np.asarray(self.ends_s)) / 2
      for h in intervals:  # the segments an interval merged: their mean probabilities
        inside = np.flatnonzero((mid >= h['start_s']) & (mid <= h['end_s']))
        h['classes'] = self.top_classes(inside)
    return {
        'video': self.video, 'path': self.path, 'duration_s': round(self.duration_s, 4),
        'fps': self.fps, 'model': self.model, 'segments': segments, 'highlights': intervals}
