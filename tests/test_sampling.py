"""On-device set sampling: shapes, masks, mixed-set label shares, no cross-video leakage."""
import jax
import numpy as np
import pytest

from dlvhd_jax import sampling

LENGTHS = [5, 30, 12, 60, 1]


def make_bank(offset=0.0):
  # Feature = video id + offset, label = segment's position parity: leakage is visible.
  feats = [np.full((L, 2), v + offset, np.float32) for v, L in enumerate(LENGTHS)]
  labels = [np.where(np.arange(L) % 3 == 0, 1.0, -1.0) for L in LENGTHS]
  return sampling.make_bank(feats, labels)


@pytest.mark.parametrize('mode', ['random', 'window'])
def test_sets_stay_inside_one_video_with_masks_for_short_videos(mode):
  bank = make_bank()
  idx, mask = jax.device_get(sampling.sample_sets(jax.random.key(0), bank, 256, 20, mode))
  assert idx.shape == (256, 20) and mask.shape == (256, 20) and mask.dtype == bool
  video = bank.segment_video[idx]
  assert (video == video[:, :1]).all(), 'a set mixes videos'
  for i in range(256):
    v = video[i, 0]
    L = LENGTHS[v]
    valid = idx[i][mask[i]]
    assert len(np.unique(valid)) == len(valid), 'a segment was drawn twice'
    assert mask[i].sum() <= min(L, 20)
    if mode == 'random':
      assert mask[i].sum() == min(L, 20)
    else:
      assert valid.max() - valid.min() + 1 == len(valid), 'a window is not contiguous'
      assert 1 <= len(valid) <= 20
  # Valid positions come first (sets are left-aligned).
  assert (np.diff(mask.astype(int), axis=1) <= 0).all()


def test_videos_are_drawn_in_proportion_to_their_length():
  bank = make_bank()
  idx, _ = jax.device_get(sampling.sample_sets(jax.random.key(1), bank, 20000, 4, 'random'))
  freq = np.bincount(bank.segment_video[idx[:, 0]], minlength=len(LENGTHS)) / 20000
  np.testing.assert_allclose(freq, np.array(LENGTHS) / sum(LENGTHS), atol=0.015)


def test_random_mode_covers_the_whole_video():
  bank = make_bank()
  idx, mask = jax.device_get(sampling.sample_sets(jax.random.key(2), bank, 4000, 4, 'random'))
  seen = np.unique(idx[mask & (bank.segment_video[idx] == 3)])
  assert len(seen) == 60


@pytest.mark.parametrize('share,lo,hi', [('half', 10, 10), ('uniform', 6, 13)])
def test_mixed_sets_shares_labels_and_origins(share, lo, hi):
  source, target = make_bank(0.0), make_bank(100.0)
  k = jax.random.split(jax.random.key(3), 3)
  s_idx, s_mask = sampling.sample_sets(k[0], source, 512, 20, 'random')
  t_idx, t_mask = sampling.sample_sets(k[1], target, 512, 20, 'random')
  from_t, pos, mask, labels = jax.device_get(
      sampling.sample_mixed_sets(k[2], s_mask, t_mask, share, -1.0))
  s_x, t_x = source.features[np.asarray(s_idx)], target.features[np.asarray(t_idx)]
  x = np.asarray(sampling.gather_mixed(from_t, pos, s_x, t_x))[..., 0]
  s_mask, t_mask = np.asarray(s_mask), np.asarray(t_mask)
  for i in range(512):
    k_i = from_t[i].sum()
    assert lo <= k_i <= hi
    # Labels: 1 for target entries, the configured value for source entries.
    assert (labels[i][from_t[i]] == 1).all() and (labels[i][~from_t[i]] == -1).all()
    # Entries come from this step's own two sets (one target video, one source video).
    assert (x[i][from_t[i] & mask[i]] == t_x[i, 0, 0]).all()
    assert (x[i][~from_t[i] & mask[i]] == s_x[i, 0, 0]).all()
    # Only valid segments of the two sets, each at most once.
    tp = pos[i][from_t[i] & mask[i]]
    sp = pos[i][~from_t[i] & mask[i]]
    assert t_mask[i][tp].all() and s_mask[i][sp].all()
    assert len(set(tp)) == len(tp) and len(set(sp)) == len(sp)
    assert mask[i].sum() == min(k_i, t_mask[i].sum()) + min(20 - k_i, s_mask[i].sum())
  if share == 'uniform':
    ks = from_t.sum(1)
    assert 8 <= ks.mean() <= 12 and len(np.unique(ks)) >= 4


def test_sampling_is_deterministic_in_the_key():
  bank = make_bank()
  a = jax.device_get(sampling.sample_sets(jax.random.key(7), bank, 8, 6))
  b = jax.device_get(sampling.sample_sets(jax.random.key(7), bank, 8, 6))
  c = jax.device_get(sampling.sample_sets(jax.random.key(8), bank, 8, 6))
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
