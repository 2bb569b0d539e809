"""On-device sampling of source / target / mixed segment sets from a device-resident bank.

The bank holds every segment of a category split as one flat array (no per-video padding);
a set is N segment indices of one video plus a validity mask (videos shorter than N give
masked positions). Everything here is traced inside the compiled train step: the host only
passes a PRNG key.

Epochs follow the published code: one set per source segment per epoch, so a set's video is
drawn with probability proportional to its length (an anchor segment is drawn uniformly).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class SegmentBank:
  """All segments of a list of videos, flat.

  features: [S, D]; labels: [S] float32 (0 for unlabeled videos); segment_video: [S] int32
  video of each segment; video_start, video_length: [V] int32; max_length: static int.
  """
  features: jax.Array
  labels: jax.Array
  segment_video: jax.Array
  video_start: jax.Array
  video_length: jax.Array
  max_length: int = struct.field(pytree_node=False)

  @property
  def num_segments(self) -> int:
    return self.features.shape[0]


def make_bank(features: list[np.ndarray], labels: list[np.ndarray] | None,
              dtype=np.float32) -> SegmentBank:
  """Host arrays of the videos ([T_v, D] features, [T_v] labels or None) -> a numpy bank."""
  lengths = np.array([len(f) for f in features], np.int32)
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
  feats = np.concatenate(features, axis=0).astype(dtype)
  labs = (np.concatenate(labels).astype(np.float32) if labels is not None
          else np.zeros(len(feats), np.float32))
  seg_video = np.repeat(np.arange(len(features), dtype=np.int32), lengths)
  return SegmentBank(feats, labs, seg_video, starts, lengths, int(lengths.max()))


def sample_sets(key: jax.Array, bank: SegmentBank, batch: int, set_size: int,
                mode: str = 'random') -> tuple[jax.Array, jax.Array]:
  """Draws `batch` sets of `set_size` segments, each from one video.

  mode 'random' (paper): N distinct random segments of the video (all of them, masked to N,
  when it is shorter). mode 'window' (published code): the contiguous window
  [c - h, c + h) clipped to the video, c the anchor segment and h ~ U{1..N/2}.
  Returns global segment indices [B, N] int32 and the validity mask [B, N] bool; invalid
  positions hold an index of the same video (so gathers never leave it).
  """
  k_anchor, k_pick = jax.random.split(key)
  anchor = jax.random.randint(k_anchor, (batch,), 0, bank.num_segments)
  video = bank.segment_video[anchor]
  start = bank.video_start[video][:, None]
  length = bank.video_length[video][:, None]
  pos = jnp.arange(set_size)[None, :]
  if mode == 'random':
    # top_k of uniform keys over the video's positions = a random subset without replacement.
    width = max(bank.max_length, set_size)
    u = jax.random.uniform(k_pick, (batch, width))
    u = jnp.where(jnp.arange(width)[None, :] < length, u, -1.0)
    _, local = jax.lax.top_k(u, set_size)
    mask = pos < jnp.minimum(length, set_size)
  elif mode == 'window':
    center = (anchor - bank.video_start[video])[:, None]
    half = jax.random.randint(k_pick, (batch, 1), 1, set_size // 2 + 1)
    lo = jnp.maximum(center - half, 0)
    hi = jnp.minimum(center + half, length)
    local = lo + pos
    mask = local < hi
  else:
    raise ValueError(f"config.sampling.mode={mode!r} is not 'random' or 'window'")
  local = jnp.where(mask, local, 0)
  return (start + local).astype(jnp.int32), mask


def mixed_set_sizes(key: jax.Array, batch: int, set_size: int, share: str) -> jax.Array:
  """Number k of target segments in each mixed set: [B] int32.

  'half' (paper): k = N/2. 'uniform' (published code): k = floor(N * r), r ~ U(0.3, 0.7).
  """
  if share == 'half':
    return jnp.full((batch,), set_size // 2, jnp.int32)
  if share == 'uniform':
    r = jax.random.uniform(key, (batch,), minval=0.3, maxval=0.7)
    return jnp.floor(set_size * r).astype(jnp.int32)
  raise ValueError(f"config.sampling.mixed_share={share!r} is not 'half' or 'uniform'")


def _valid_first_order(key: jax.Array, mask: jax.Array) -> jax.Array:
  """A random order of each row's positions with the valid ones first: [B, N] -> [B, N]."""
  u = jax.random.uniform(key, mask.shape)
  return jnp.argsort(jnp.where(mask, u, 2.0 + u), axis=-1)


def sample_mixed_sets(key: jax.Array, source_mask: jax.Array, target_mask: jax.Array,
                      share: str, source_label: float):
  """Mixed sets x^M: k random segments of x^T then N - k random segments of x^S.

  source_mask, target_mask: [B, N] validity of this step's source and target sets.
  Returns (from_target [B, N] bool, position [B, N] int32: the entry's position in x^T where
  from_target else in x^S, mask [B, N] bool, labels [B, N] float32: 1 for target segments,
  `source_label` for source ones).
  """
  batch, n = source_mask.shape
  k_share, k_s, k_t = jax.random.split(key, 3)
  k = mixed_set_sizes(k_share, batch, n, share)[:, None]
  order_s = _valid_first_order(k_s, source_mask)
  order_t = _valid_first_order(k_t, target_mask)
  j = jnp.arange(n)[None, :]
  from_target = j < k
  # Entry j < k takes the target set's j-th shuffled segment, entry j >= k the source's (j-k)-th.
  t_pos = jnp.take_along_axis(order_t, jnp.broadcast_to(j, order_t.shape), axis=-1)
  s_pos = jnp.take_along_axis(order_s, jnp.clip(j - k, 0, n - 1), axis=-1)
  position = jnp.where(from_target, t_pos, s_pos).astype(jnp.int32)
  n_t = jnp.sum(target_mask, axis=-1, keepdims=True)
  n_s = jnp.sum(source_mask, axis=-1, keepdims=True)
  mask = jnp.where(from_target, j < n_t, (j - k) < n_s)
  labels = jnp.where(from_target, 1.0, source_label).astype(jnp.float32)
  return from_target, position, mask, labels


def gather_mixed(from_target, position, source_values, target_values):
  """Picks the mixed set's entries out of this step's source / target sets.

  from_target, position: [B, N]; source_values, target_values: [B, N, ...] -> [B, N, ...].
  """
  def take(v):
    idx = position.reshape(position.shape + (1,) * (v.ndim - 2))
    return jnp.take_along_axis(v, idx, axis=1)
  sel = from_target.reshape(from_target.shape + (1,) * (source_values.ndim - 2))
  return jnp.where(sel, take(target_values), take(source_values))
