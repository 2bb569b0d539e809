"""UDA baselines of the paper (Tables 4, 5, 7): the objectives of `BASELINES`.

Each baseline is the SL-module (one scoring head 'score' trained with L_pred on the source
sets) plus its domain term on the encoder outputs of the step's source and target sets
(SPEC "Baselines"; paper supplement Sec. 8: the terms act on the "contextualized segment
embeddings"). The original methods align per-sample features, so a sample here is one
segment: the terms see every valid segment of the B source and B target sets, [B*N, W]
with a 0/1 weight per row instead of a gather, which keeps shapes static under jit.

Weights and hyper-parameters live under `config.uda.<method>.*`. A method's weight may vary
(config.vary), so objectives read it from the step's `ctx.hp`; the other settings are static
and `_static` reads them from the config, falling back to the defaults below.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dlvhd_jax import losses
from dlvhd_jax.objectives import Objective, SetBatch, StepContext, encode_sets, pred_loss_args

DEFAULTS = {
    'dan': {'num_kernels': 5, 'kernel_mul': 2.0},
    'revgrad': {'gamma': 10.0},
    'mcd': {'num_k': 1},
    'afn': {'delta_r': 1.0},
}


def _static(cfg, method: str, name: str):
  uda = cfg.get('uda', None) or {}
  group = uda.get(method, None) or {}
  return group.get(name, DEFAULTS[method][name])


# ----------------------------------------------------------------------------- pure losses


def flatten_segments(h: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[B, N, W] embeddings, [B, N] mask -> ([B*N, W] float32, [B*N] float32 0/1 weights)."""
  return h.reshape(-1, h.shape[-1]).astype(jnp.float32), mask.reshape(-1).astype(jnp.float32)


def _sq_distances(z: jax.Array) -> jax.Array:
  """[M, W] -> [M, M] squared Euclidean distances (clamped at 0 against round-off)."""
  sq = jnp.sum(z * z, axis=-1)
  return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)


def mk_mmd(x: jax.Array, y: jax.Array, wx: jax.Array, wy: jax.Array, *, num_kernels: int = 5,
           kernel_mul: float = 2.0) -> jax.Array:
  """Multi-kernel MMD^2 (biased V-statistic) between two weighted samples -> [].

  x [n, W], y [m, W]; wx [n], wy [m] 0/1 weights (0 = padding). The kernel is the SUM of
  `num_kernels` Gaussians exp(-d^2 / s_k) with s_k = s * kernel_mul^(k - num_kernels // 2),
  s = mean squared distance over distinct valid pairs of the pooled sample (no gradient
  through s). Summing (every kernel weight beta_u = 1) is what DAN's reference code and
  thuml's MK-MMD do; a mean would make the term 1/num_kernels of theirs at the same weight.
  """
  z = jnp.concatenate([x, y]).astype(jnp.float32)
  v = jnp.concatenate([wx, wy]).astype(jnp.float32)
  d2 = _sq_distances(z)
  pairs = jnp.maximum(jnp.sum(v) ** 2 - jnp.sum(v * v), 1.0)
  base = jax.lax.stop_gradient(jnp.sum(v[:, None] * v[None, :] * d2) / pairs)
  base = jnp.maximum(base, 1e-12)
  scales = base * kernel_mul ** (jnp.arange(num_kernels, dtype=jnp.float32) - num_kernels // 2)
  k = jnp.sum(jnp.exp(-d2[None] / scales[:, None, None]), axis=0)
  # a^T K a with a = (wx / sum wx, -wy / sum wy) is E k(x,x') + E k(y,y') - 2 E k(x,y).
  a = jnp.concatenate([wx / jnp.maximum(jnp.sum(wx), 1.0), -wy / jnp.maximum(jnp.sum(wy), 1.0)])
  return a @ k @ a


def weighted_covariance(x: jax.Array, w: jax.Array) -> jax.Array:
  """Unbiased covariance of the rows with weight 1: x [n, W], w [n] -> [W, W]."""
  x = x.astype(jnp.float32)
  n = jnp.sum(w)
  mean = jnp.sum(x * w[:, None], axis=0) / jnp.maximum(n, 1.0)
  xc = (x - mean) * w[:, None]
  return xc.T @ xc / jnp.maximum(n - 1.0, 1.0)


def coral_loss(x: jax.Array, y: jax.Array, wx: jax.Array, wy: jax.Array) -> jax.Array:
  """Deep CORAL: ||C_x - C_y||_F^2 / (4 W^2) for x [n, W], y [m, W] with 0/1 weights -> []."""
  d = x.shape[-1]
  diff = weighted_covariance(x, wx) - weighted_covariance(y, wy)
  return jnp.sum(diff * diff) / (4.0 * d * d)


@jax.custom_vjp
def grad_reverse(x: jax.Array, coeff: jax.Array) -> jax.Array:
  """Identity forward; the backward pass multiplies the cotangent by -coeff (any shape x)."""
  return x


def _grad_reverse_fwd(x, coeff):
  return x, coeff


def _grad_reverse_bwd(coeff, g):
  return (-coeff * g).astype(g.dtype), jnp.zeros_like(coeff)


grad_reverse.defvjp(_grad_reverse_fwd, _grad_reverse_bwd)


def grl_coefficient(step, total_steps, gamma: float = 10.0) -> jax.Array:
  """DANN's schedule 2 / (1 + exp(-gamma p)) - 1 with p = step / total_steps in [0, 1] -> []."""
  p = jnp.clip(jnp.asarray(step, jnp.float32) / jnp.maximum(total_steps, 1), 0.0, 1.0)
  return 2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0


def domain_bce(logits_s: jax.Array, logits_t: jax.Array, ws: jax.Array, wt: jax.Array) -> jax.Array:
  """Discriminator loss, source = 1 and target = 0: logits [n], [m] with 0/1 weights -> []."""
  ls = optax.sigmoid_binary_cross_entropy(logits_s, jnp.ones_like(logits_s))
  lt = optax.sigmoid_binary_cross_entropy(logits_t, jnp.zeros_like(logits_t))
  return (jnp.sum(ls * ws) + jnp.sum(lt * wt)) / jnp.maximum(jnp.sum(ws) + jnp.sum(wt), 1.0)


def set_discrepancy(s1: jax.Array, s2: jax.Array, mask: jax.Array) -> jax.Array:
  """MCD's discrepancy on sets: mean |softmax(s1) - softmax(s2)| over each set's valid positions.

  The two heads' scores [B, N] in (-1, 1) become set-level distributions exactly as L_pred
  sees them (softmax over the valid positions); mask [B, N] -> [] (mean over sets).
  """
  p1 = jnp.exp(losses.masked_log_softmax(s1, mask))
  p2 = jnp.exp(losses.masked_log_softmax(s2, mask))
  per_set = jnp.sum(jnp.where(mask, jnp.abs(p1 - p2), 0.0), axis=-1)
  return jnp.mean(per_set / jnp.maximum(jnp.sum(mask, axis=-1), 1))


def afn_loss(h: jax.Array, w: jax.Array, delta_r: float = 1.0) -> jax.Array:
  """Stepwise AFN: mean over weighted rows of (||h|| - (stop_grad(||h||) + delta_r))^2 -> [].

  h [n, W], w [n] 0/1. The value is always delta_r^2; the gradient moves each norm up by
  delta_r (a gradient step of size n_valid / 2 on h lands exactly on ||h|| + delta_r).
  """
  norm = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(h.astype(jnp.float32)), axis=-1), 1e-12))
  target = jax.lax.stop_gradient(norm) + delta_r
  return jnp.sum(w * jnp.square(norm - target)) / jnp.maximum(jnp.sum(w), 1.0)


# ------------------------------------------------------------------------------ objectives


def _encode_source_target(model, batch: SetBatch, key):
  """-> (source embeddings [B, N, W], target embeddings [B, N, W], head key)."""
  k_enc, k_head = jax.random.split(key)
  hs, ht = encode_sets(model, [batch.source_x, batch.target_x],
                       [batch.source_mask, batch.target_mask], k_enc)
  return hs, ht, k_head


def _source_pred_loss(model, batch: SetBatch, hs, key, ctx: StepContext, head: str = 'score'):
  return losses.set_prediction_loss(batch.source_y, model.heads[head](hs, key), batch.source_mask,
                                    **pred_loss_args(ctx))


def _domain_term_objective(name: str, term):
  """SL-module + weight * term(source segments, target segments)."""
  def loss_fn(model, batch: SetBatch, key, ctx: StepContext):
    hs, ht, k_head = _encode_source_target(model, batch, key)
    l_pred = _source_pred_loss(model, batch, hs, k_head, ctx)
    (xs, ws), (xt, wt) = flatten_segments(hs, batch.source_mask), flatten_segments(ht, batch.target_mask)
    l_dom = term(xs, xt, ws, wt, ctx.cfg)
    return (l_pred + ctx.hp[f'uda.{name}.weight'] * l_dom,
            {'loss_pred': l_pred, f'loss_{name}': l_dom})
  return loss_fn


def _dan_term(xs, xt, ws, wt, cfg):
  """DAN (Long et al., "Learning Transferable Features with Deep Adaptation Networks", ICML 2015)."""
  return mk_mmd(xs, xt, ws, wt, num_kernels=int(_static(cfg, 'dan', 'num_kernels')),
                kernel_mul=float(_static(cfg, 'dan', 'kernel_mul')))


def _coral_term(xs, xt, ws, wt, cfg):
  """Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation",
  ECCV Workshops 2016)."""
  del cfg
  return coral_loss(xs, xt, ws, wt)


def _afn_loss(model, batch: SetBatch, key, ctx: StepContext):
  """Stepwise AFN (Xu et al., "Larger Norm More Transferable: An Adaptive Feature Norm Approach
  for Unsupervised Domain Adaptation", ICCV 2019) on source and target segments."""
  hs, ht, k_head = _encode_source_target(model, batch, key)
  l_pred = _source_pred_loss(model, batch, hs, k_head, ctx)
  dr = float(_static(ctx.cfg, 'afn', 'delta_r'))
  l_afn = (afn_loss(*flatten_segments(hs, batch.source_mask), dr)
           + afn_loss(*flatten_segments(ht, batch.target_mask), dr))
  return l_pred + ctx.hp['uda.afn.weight'] * l_afn, {'loss_pred': l_pred, 'loss_afn': l_afn}


def _revgrad_loss(model, batch: SetBatch, key, ctx: StepContext):
  """RevGrad / DANN (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
  ICML 2015): a segment-level domain discriminator (the extra head 'domain', whose logit is
  unbounded) behind a gradient reversal layer whose coefficient follows the step
  (grl_coefficient; 1 when the schedule's length is unknown)."""
  hs, ht, k_head = _encode_source_target(model, batch, key)
  k_pred, k_dom = jax.random.split(k_head)
  l_pred = _source_pred_loss(model, batch, hs, k_pred, ctx)
  coeff = (grl_coefficient(ctx.step, ctx.total_steps, float(_static(ctx.cfg, 'revgrad', 'gamma')))
           if ctx.total_steps else jnp.float32(1.0))
  # One discriminator pass over both domains: [2B, N].
  logits = model.heads['domain'].logits(grad_reverse(jnp.concatenate([hs, ht]), coeff), k_dom)
  ls, lt = jnp.split(logits, 2)
  l_dom = domain_bce(ls.reshape(-1), lt.reshape(-1), *(m.reshape(-1).astype(jnp.float32) for m in
                                                       (batch.source_mask, batch.target_mask)))
  total = l_pred + ctx.hp['uda.revgrad.weight'] * l_dom
  return total, {'loss_pred': l_pred, 'loss_domain': l_dom, 'grl_coeff': coeff}


# --- MCD (Saito et al., "Maximum Classifier Discrepancy for Unsupervised Domain Adaptation",
# CVPR 2018). The original keeps two optimizers (generator / classifiers); here the core's one
# optimizer state is updated only at the parameters a phase trains, which is the same thing:
# each parameter's momentum moves exactly when it does, and the lr schedule advances once a step.


def head_mask(params):
  """params (nnx.State) -> same tree of Python bools: True for scoring-head parameters."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path[0].key == 'heads', params)


def masked_apply(tx, params, opt_state, grads, mask, advance_count: bool):
  """One optimizer update applied only where `mask` (a params-shaped tree of bools) is True.

  Elsewhere parameters and their optimizer slots keep their values; the non-parameter
  state (the schedule's step count) advances only if `advance_count`.
  """
  updates, new_state = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  params = jax.tree.map(lambda m, n, o: n if m else o, mask, new_params, params)
  marks = optax.tree_utils.tree_map_params(tx, lambda _, m: m, new_state, mask,
                                           transform_non_params=lambda _: advance_count)
  opt_state = jax.tree.map(lambda m, n, o: n if m else o, marks, new_state, opt_state)
  return params, opt_state


def _mcd_scores(model, x, mask, key, stop_encoder=False):
  """-> (score [B, N], score2 [B, N]) of sets x [B, N, D]."""
  k_enc, k1, k2 = jax.random.split(key, 3)
  h = model.encode(x, mask, k_enc)
  if stop_encoder:
    h = jax.lax.stop_gradient(h)
  return model.heads['score'](h, k1), model.heads['score2'](h, k2)


def _mcd_supervised(model, sets: SetBatch, key, stop_encoder=False, pred: dict | None = None):
  s1, s2 = _mcd_scores(model, sets.source_x, sets.source_mask, key, stop_encoder)
  pred = pred or {}  # set_prediction_loss's settings (pred_loss_args); {} = the paper's
  return (losses.set_prediction_loss(sets.source_y, s1, sets.source_mask, **pred)
          + losses.set_prediction_loss(sets.source_y, s2, sets.source_mask, **pred))


def _mcd_target_discrepancy(model, sets: SetBatch, key, stop_encoder=False):
  t1, t2 = _mcd_scores(model, sets.target_x, sets.target_mask, key, stop_encoder)
  return set_discrepancy(t1, t2, sets.target_mask)


def _mcd_loss(model, batch: SetBatch, key, ctx: StepContext):
  """Phase A alone (both heads supervised on source); the step itself runs `_mcd_update`."""
  loss = _mcd_supervised(model, batch, key, pred=pred_loss_args(ctx))
  return loss, {'loss_pred': loss}


def mcd_phase(phase: str, graphdef, tx, params, opt_state, sets: SetBatch, key, weight,
              advance_count: bool = False, pred: dict | None = None):
  """One MCD phase -> (params, opt_state, phase loss [], gradient norm []).

  'A': encoder + both heads, source L_pred of both heads;
  'B': heads only, source L_pred - weight * target discrepancy (encoder fixed);
  'C': encoder only, weight * target discrepancy (heads fixed).
  The lr schedule's count advances only where `advance_count` (the step's last phase), so
  every phase of a step uses that step's learning rate.
  """
  heads = head_mask(params)
  if phase == 'A':
    mask = jax.tree.map(lambda _: True, heads)
    f = lambda m: _mcd_supervised(m, sets, key, pred=pred)
  elif phase == 'B':
    mask = heads
    ks, kt = jax.random.split(key)
    f = lambda m: (_mcd_supervised(m, sets, ks, stop_encoder=True, pred=pred)
                   - weight * _mcd_target_discrepancy(m, sets, kt, stop_encoder=True))
  elif phase == 'C':
    mask = jax.tree.map(lambda m: not m, heads)
    f = lambda m: weight * _mcd_target_discrepancy(m, sets, key)
  else:
    raise ValueError(f'MCD phase {phase!r} is not A, B or C')
  loss, grads = jax.value_and_grad(lambda p: f(nnx.merge(graphdef, p)))(params)
  params, opt_state = masked_apply(tx, params, opt_state, grads, mask, advance_count)
  return params, opt_state, loss, optax.global_norm(grads)


def _mcd_update(graphdef, tx, params, opt_state, sets, key, ctx: StepContext):
  """Phases A, B, then C `num_k` times (the original's generator steps per batch)."""
  w = ctx.hp['uda.mcd.weight']
  num_k = max(1, int(_static(ctx.cfg, 'mcd', 'num_k')))
  pred = pred_loss_args(ctx)
  k_a, k_b, k_c = jax.random.split(key, 3)
  params, opt_state, l_a, g_a = mcd_phase('A', graphdef, tx, params, opt_state, sets, k_a, w,
                                          pred=pred)
  params, opt_state, l_b, g_b = mcd_phase('B', graphdef, tx, params, opt_state, sets, k_b, w,
                                          pred=pred)
  sq_norms = [g_a ** 2, g_b ** 2]
  l_c = jnp.float32(0.0)
  for i in range(num_k):
    params, opt_state, l_c, g_c = mcd_phase('C', graphdef, tx, params, opt_state, sets,
                                            jax.random.fold_in(k_c, i), w,
                                            advance_count=i == num_k - 1)
    sq_norms.append(g_c ** 2)
  # One norm over every phase's gradient: non-finite if any phase's is.
  grad_norm = jnp.sqrt(sum(sq_norms))
  return params, opt_state, {'loss': l_a, 'loss_pred': l_a, 'loss_mcd_b': l_b, 'loss_mcd_c': l_c,
                             'grad_norm': grad_norm}


BASELINES = (
    Objective('dan', heads=('score',), eval_heads=('score',), uses_target=True,
              loss=_domain_term_objective('dan', _dan_term), weight_key='uda.dan.weight',
              passes=(2, 1)),
    Objective('coral', heads=('score',), eval_heads=('score',), uses_target=True,
              loss=_domain_term_objective('coral', _coral_term), weight_key='uda.coral.weight',
              passes=(2, 1)),
    Objective('revgrad', heads=('score', 'domain'), eval_heads=('score',), uses_target=True,
              loss=_revgrad_loss, weight_key='uda.revgrad.weight',
              passes=(2, 3)),
    Objective('mcd', heads=('score', 'score2'), eval_heads=('score', 'score2'), uses_target=True,
              loss=_mcd_loss, update=_mcd_update, weight_key='uda.mcd.weight',
              passes=(4, 8)),
    Objective('afn', heads=('score',), eval_heads=('score',), uses_target=True, loss=_afn_loss,
              weight_key='uda.afn.weight', passes=(2, 1)),
)
