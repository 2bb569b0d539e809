"""AP against sklearn, the UMT protocol against its definition, and the window rules."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from dlvhd_jax import evaluation


@pytest.mark.parametrize('seed', range(6))
def test_average_precision_matches_sklearn_including_ties(seed):
  rng = np.random.RandomState(seed)
  n = rng.randint(5, 80)
  labels = rng.choice([-1, 0, 1], size=n)
  labels[0] = 1
  scores = np.round(rng.randn(n), 1)  # rounding creates ties
  want = average_precision_score(labels > 0, scores)
  assert evaluation.average_precision(labels, scores) == pytest.approx(want, abs=1e-12)


def test_average_precision_without_positive_is_skipped_in_map():
  res = evaluation.summarize(['a', 'b'], [np.array([1, -1, -1]), np.array([-1, 0, -1])],
                             [np.array([0.9, 0.1, 0.2]), np.array([0.1, 0.2, 0.3])])
  assert res['per_video_ap']['b'] is None
  assert res['map'] == pytest.approx(1.0)
  assert res['map_umt'] == pytest.approx(0.5)  # UMT counts the no-positive video as AP 0


def umt_reference(labels, scores):
  """UMT's loop, written from its definition: trapezoids between successive ranks."""
  order = np.argsort(-scores, kind='stable')
  gt = (labels[order] > 0).astype(float)
  if gt.sum() == 0:
    return 0.0
  hits = ap = rec = 0.0
  prc = 1.0
  for j, g in enumerate(gt):
    hits += g
    r, p = hits / gt.sum(), hits / (j + 1)
    ap += (r - rec) * (prc + p) / 2
    rec, prc = r, p
  return ap


@pytest.mark.parametrize('seed', range(4))
def test_umt_ap_matches_loop_definition(seed):
  rng = np.random.RandomState(seed)
  labels = rng.choice([-1, 0, 1], size=40)
  scores = rng.rand(40)
  assert evaluation.average_precision_umt(labels, scores) == pytest.approx(umt_reference(labels, scores))


def test_perfect_ranking_gives_ap_one_in_both_protocols():
  labels = np.array([1, 1, -1, -1, 0])
  scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
  assert evaluation.average_precision(labels, scores) == pytest.approx(1.0)
  assert evaluation.average_precision_umt(labels, scores) == pytest.approx(1.0)


def test_duplicate_windows_center_the_segment_and_clip_at_the_edges():
  idx, mask, own = evaluation.window_indices(30, 20, 'duplicate')
  assert idx.shape == (30, 20) and mask.all()
  assert (idx[np.arange(30), own] == np.arange(30)).all()
  np.testing.assert_array_equal(idx[15], np.arange(6, 26))  # 9 before, 10 after
  np.testing.assert_array_equal(idx[0], np.r_[np.zeros(9), np.arange(0, 11)])
  assert idx.min() == 0 and idx.max() == 29


def test_shrink_windows_mask_out_of_video_positions():
  idx, mask, own = evaluation.window_indices(30, 20, 'shrink')
  assert (idx[np.arange(30), own] == np.arange(30)).all()
  assert mask[15].all()
  assert mask[0].sum() == 11 and (idx[0][mask[0]] == np.arange(11)).all()
  assert mask[29].sum() == 10 and (idx[29][mask[29]] == np.arange(20, 30)).all()
  short_idx, short_mask, short_own = evaluation.window_indices(3, 20, 'shrink')
  assert short_mask.sum(1).tolist() == [3, 3, 3]
  assert short_own.tolist() == [0, 1, 2]


def _umt_expected_over_tie_orders(labels, scores, samples=None):
  """Mean of UMT's loop over every order of the tied segments (exhaustive for small videos)."""
  import itertools  # pylint: disable=import-outside-toplevel
  groups = {}
  for i, s in enumerate(scores):
    groups.setdefault(s, []).append(i)
  keys = sorted(groups, reverse=True)
  perms = [list(itertools.permutations(groups[k])) for k in keys]
  vals = []
  for combo in itertools.product(*perms):
    order = [i for block in combo for i in block]
    # Distinct, decreasing scores that realize this order exactly.
    fake = np.empty(len(scores))
    fake[order] = -np.arange(len(scores), dtype=float)
    vals.append(umt_reference(labels, fake))
  return float(np.mean(vals))


@pytest.mark.parametrize('seed', range(3))
def test_umt_ap_counts_ties_in_expectation_and_ignores_segment_order(seed):
  rng = np.random.RandomState(seed)
  labels = rng.choice([-1, 0, 1], size=7)
  labels[rng.randint(7)] = 1
  scores = rng.choice([0.1, 0.5, 0.9], size=7)  # many ties
  got = evaluation.average_precision_umt(labels, scores)
  assert got == pytest.approx(_umt_expected_over_tie_orders(labels, scores), abs=1e-12)
  # A video and its reverse give the same AP in both protocols.
  assert evaluation.average_precision_umt(labels[::-1], scores[::-1]) == pytest.approx(got)
  assert evaluation.average_precision(labels[::-1], scores[::-1]) == pytest.approx(
      evaluation.average_precision(labels, scores))


def test_constant_scores_get_the_random_ranking_expectation():
  labels = np.array([1, 1, -1, -1, -1, 0, -1, -1])
  const = np.zeros(8)
  want = _umt_expected_over_tie_orders(labels, const)
  assert evaluation.average_precision_umt(labels, const) == pytest.approx(want)
  assert evaluation.average_precision_umt(labels[::-1], const) == pytest.approx(want)


def test_scores_keep_their_order_where_float32_saturates():
  logits = np.array([[20.0], [25.0], [30.0], [-21.0], [-26.0]], np.float32)
  f32 = 2.0 * (1.0 / (1.0 + np.exp(-logits[:, 0]))) - 1.0
  assert len(np.unique(f32.astype(np.float32))) < 5  # the float32 form ties
  s = evaluation.scores_from_logits(logits)
  assert len(np.unique(s)) == 5 and (np.argsort(s) == np.argsort(logits[:, 0])).all()
  assert evaluation.count_ties([np.array([0.1, 0.1, 0.3]), np.array([1.0, 2.0])]) == 2


def test_head_fusion_reference():
  """eval.head_fusion against the equations: score = mean_h (2 sigmoid(x_h) - 1), logit =
  2 sigmoid(mean_h x_h) - 1, zmean = mean_h of each head's score standardized over the video;
  one head ranks the same under all three."""
  rng = np.random.default_rng(0)
  x = rng.normal(0, 3, (4, 7, 2)).astype(np.float32)
  sig = lambda v: 1.0 / (1.0 + np.exp(-v.astype(np.float64)))  # noqa: E731
  np.testing.assert_allclose(evaluation.scores_from_logits(x), (2 * sig(x) - 1).mean(-1), atol=1e-12)
  np.testing.assert_allclose(evaluation.scores_from_logits(x, 'logit'), 2 * sig(x.mean(-1)) - 1,
                             atol=1e-12)
  np.testing.assert_allclose(evaluation.scores_from_logits(x[..., :1], 'logit'),
                             evaluation.scores_from_logits(x[..., :1]), atol=1e-12)
  # A saturated head (coarse: 20 vs 25) and an unsaturated one (fine: 1 vs 0): the mean of the
  # scores follows the fine head, the mean of the logits the coarse head's larger margin.
  two = np.array([[20.0, 1.0], [25.0, 0.0]], np.float32)
  assert np.argmax(evaluation.scores_from_logits(two)) == 0
  assert np.argmax(evaluation.scores_from_logits(two, 'logit')) == 1
  # zmean: per video (axis -2: its 7 segments) each head's score as a z-score, then the mean.
  z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
  want = [[np.mean([z(2 * sig(x[i, :, h]) - 1)[t] for h in range(2)]) for t in range(7)]
          for i in range(4)]
  np.testing.assert_allclose(evaluation.scores_from_logits(x, 'zmean'), want, atol=1e-12)
  # A flat head (coarse: 0.01 apart) and a wide one (fine): the mean of the scores follows the
  # wide head, the z-mean gives the flat head an equal say.
  flat = np.array([[0.02, 3.0], [0.01, -3.0], [0.00, -2.9]], np.float32)
  assert np.argmax(evaluation.scores_from_logits(flat)) == 0
  assert np.argmin(evaluation.scores_from_logits(flat)) == 1
  assert np.argmin(evaluation.scores_from_logits(flat, 'zmean')) == 2
  # One head: the z-score keeps its order, so its AP is the mean of scores' AP.
  one = x[0, :, :1]
  assert (np.argsort(evaluation.scores_from_logits(one, 'zmean'))
          == np.argsort(evaluation.scores_from_logits(one))).all()
  with pytest.raises(ValueError, match='fusion'):
    evaluation.scores_from_logits(x, 'max')
