"""What TVSum's top-5 mAP means on a split: chance, its own annotators, and a linear probe.

  python -m tools.tvsum_ceiling data/tvsum [--split=umt|kfold|paper] [--features=rgb+opt]
                                [--penalties=1,10,100,1000,10000] [--json=F]

TVSum's metric (dlvhd_jax/evaluation.py: per annotator, the segments above that annotator's
median are positives, and the AP of the model's 5 best-ranked segments is averaged over
annotators) has no fixed scale, so a detector's number needs references on the same videos:

  chance                  a constant score; the metric counts ties in expectation over every
                          order, so this is exactly a random ranking's expected top-5 mAP
  one annotator vs rest   each annotator scored by the mean of the other annotators' scores:
                          how well a new human, ranked by the others, agrees
  annotators' mean        the mean of all annotators' scores as the ranking (in-sample: the
                          scored annotator is part of it), the consensus's own number; an
                          upper reference, not the metric's maximum
  linear probe            ridge regression from the features to each training video's
                          standardized mean label, fitted per category on the split's training
                          videos; its penalty is chosen by leave-one-training-video-out top-5
                          mAP, so no test label is read

Rows are per category over the split's test videos (`kfold`: every video, each scored by the
probe fitted on the other folds) and their average over categories, as Table 2 reports.
Prints a markdown table; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from data_pipelines import datasets, tvsum
from dlvhd_jax.errors import UserInputError
from dlvhd_jax.evaluation import top5_average_precision
from tools import report

PENALTIES = (1.0, 10.0, 100.0, 1000.0, 10000.0)
ROWS = ('chance', 'one annotator vs rest', "annotators' mean", 'linear probe')


def chance(annotators: np.ndarray) -> float:
  """[A, T] -> a random ranking's expected top-5 AP (all segments tied)."""
  return top5_average_precision(annotators, np.zeros(annotators.shape[1]))


def one_vs_rest(annotators: np.ndarray) -> float:
  """[A, T] -> mean over annotators a of the top-5 AP against a alone of the others' mean."""
  a = np.asarray(annotators, np.float64)
  return float(np.mean([top5_average_precision(a[i:i + 1], np.delete(a, i, 0).mean(0))
                        for i in range(len(a))]))


def ridge(x: np.ndarray, y: np.ndarray, penalties) -> list[np.ndarray]:
  """min |x w + b - y|² + penalty |w|² (b unpenalized) for each penalty; x [S, D], y [S] ->
  [[D + 1] per penalty], b last. One SVD serves every penalty."""
  mx, my = x.mean(0), y.mean()
  u, s, vt = np.linalg.svd(x - mx, full_matrices=False)
  uy = u.T @ (y - my)
  out = []
  for p in penalties:
    w = vt.T @ (s / (s * s + p) * uy)
    out.append(np.r_[w, my - mx @ w])
  return out


def _fit(videos, penalties) -> list[np.ndarray]:
  x = np.concatenate([v.features for v in videos]).astype(np.float64)
  # Standardized per video: top-5 reads only the order within a video, and a video's
  # annotators differ in level and spread.
  y = np.concatenate([(v.labels - v.labels.mean()) / max(float(v.labels.std()), 1e-6)
                      for v in videos])
  return ridge(x, y, penalties)


def _score(w: np.ndarray, video) -> np.ndarray:
  return video.features.astype(np.float64) @ w[:-1] + w[-1]


def linear_probe(train, test, penalties=PENALTIES) -> tuple[float, list[np.ndarray]]:
  """-> (the penalty chosen by leave-one-training-video-out top-5 mAP, [scores [T] per test
  video]). Only the training videos' labels are read."""
  if len(train) < 2:
    raise UserInputError(f'the linear probe needs 2 or more training videos per category; '
                         f'{train[0].category if train else "a category"} has {len(train)}')

  # [held-out video][penalty] -> its top-5 AP under the model fitted on the others
  cv = np.array([[top5_average_precision(v.annotator_scores, _score(w, v))
                  for w in _fit(train[:i] + train[i + 1:], penalties)]
                 for i, v in enumerate(train)])
  k = int(np.argmax(cv.mean(0)))  # the first of equals: the grid is ordered
  best, w = penalties[k], _fit(train, [penalties[k]])[0]
  return best, [_score(w, v) for v in test]


def ceiling(root: str, split: str = 'umt', features: str = 'rgb+opt',
            annotation: str = 'official', penalties_grid=PENALTIES) -> dict:
  """-> {'per_video': {vid: {category, row: AP}}, 'per_category': {row: {cat: mean}},
  'average': {row: mean over categories}, 'penalties': {cat: [chosen per fold]}}."""
  if isinstance(root, str) and not os.path.isdir(root):
    raise UserInputError(f'{root} is not a folder: pass the TVSum folder (its annotation files '
                         'and video_features/)')
  store = datasets.as_store(root)
  anno, layout = tvsum.read_annotations(store, annotation)
  streams = datasets.feature_streams(features)
  dims, loaded = {}, {}

  def load(vid):
    if vid not in loaded:
      loaded[vid] = tvsum.load_video(store, vid, anno[vid], streams, tvsum.DEFAULT_CLIP_SECONDS,
                                     dims)
    return loaded[vid]
  cats = tvsum._categories(anno)  # pylint: disable=protected-access
  per_video, chosen = {}, {}
  for c in cats:
    n = sum(e['category'] == c for e in anno.values())
    folds = range(min(5, n)) if split == 'kfold' else [0]
    for fold in folds:
      train_ids, test_ids = tvsum.split_ids(store, anno, c, split, fold, len(folds))
      train = [v for v in map(load, train_ids) if v is not None]
      test = [v for v in map(load, test_ids) if v is not None]
      if not test:
        raise UserInputError(f'{store.where("video_features")} has no {"+".join(streams)} '
                             f'features of a {c} test video of data.split={split} ({layout} '
                             'annotation); add them or pick --features')
      penalty, probe = linear_probe(train, test, tuple(penalties_grid))
      chosen.setdefault(c, []).append(penalty)
      for v, scores in zip(test, probe):
        a = v.annotator_scores
        if len(a) < 2:
          raise UserInputError(f'{v.vid} has {len(a)} annotator in the {layout} annotation of '
                               f'{store.where("")}: the agreement rows need 2 or more')
        per_video[v.vid] = {'category': c, ROWS[0]: chance(a), ROWS[1]: one_vs_rest(a),
                            ROWS[2]: top5_average_precision(a, a.mean(0)),
                            ROWS[3]: top5_average_precision(a, scores)}
  per_cat = {r: {c: float(np.mean([p[r] for p in per_video.values() if p['category'] == c]))
                 for c in cats} for r in ROWS}
  return {'split': split, 'features': features, 'annotation': layout,
          'per_video': per_video, 'per_category': per_cat,
          'average': {r: float(np.mean(list(per_cat[r].values()))) for r in ROWS},
          'penalties': chosen, 'penalty_grid': [float(p) for p in penalties_grid]}


def markdown(res: dict) -> str:
  cats = list(res['per_category'][ROWS[0]])
  n = len(res['per_video'])
  lines = [f'TVSum top-5 mAP, split {res["split"]} ({n} test videos), features '
           f'{res["features"]}, probe penalties {res["penalty_grid"]}', '',
           '| reference | ' + ' | '.join(cats) + ' | Average |',
           '|---|' + '---:|' * (len(cats) + 1)]
  for r in ROWS:
    lines.append(f'| {r} | ' + ' | '.join(f'{res["per_category"][r][c]:.3f}' for c in cats)
                 + f' | {res["average"][r]:.3f} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('data', help='the TVSum folder (annotations and video_features/)')
  p.add_argument('--split', default='umt', choices=('umt', 'kfold', 'paper'))
  p.add_argument('--features', default='rgb+opt', help='rgb+opt, rgb or opt')
  p.add_argument('--annotation', default='official', choices=('official', 'public'))
  p.add_argument('--penalties', default=','.join(f'{x:g}' for x in PENALTIES),
                 help='the ridge penalties the probe chooses among (one: no choice)')
  p.add_argument('--json', default='', help='also write the numbers here')
  a = p.parse_args(argv)
  try:
    penalties = [float(x) for x in a.penalties.split(',')]
  except ValueError:
    raise SystemExit(f'tvsum_ceiling: --penalties={a.penalties!r}: give comma-separated '
                     'numbers, e.g. 10,100,1000') from None
  if not penalties or min(penalties) <= 0:
    raise SystemExit(f'tvsum_ceiling: --penalties={a.penalties!r}: every penalty must be > 0')
  try:
    res = ceiling(a.data, a.split, a.features, a.annotation, penalties)
  except UserInputError as e:
    raise SystemExit(f'tvsum_ceiling: {e}') from None
  report(markdown(res), res, a.json)
  return 0


if __name__ == '__main__':
  sys.exit(main())
