"""Tests for gradtx.losses.

Every loss is checked against a plain-numpy (or pure-Python) reference of its
formula, written here from the papers / optax's documented equations and
computed in float64, on random inputs, in float32 and float64, jitted and not.
Edge cases (masked and infinite logits, zero vectors, zero targets, ``where``
masks, several ``axis`` choices) and gradients (closed forms and finite
differences) have their own tests; agreement with optax is an extra check on
ordinary inputs. Bad input is a table of (call, error type, regex).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx import losses
from gradtx.errors import HyperparameterError

optax = pytest.importorskip("optax")

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def _strict_jax():
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    yield


# ------------------------------------------------------ numpy references


def np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def np_lse(x, axis=-1, where=None):
  xm = x if where is None else np.where(where, x, -np.inf)
  m = np.max(xm, axis=axis, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.0)
  with np.errstate(divide="ignore"):
    return m + np.log(np.sum(np.exp(xm - m), axis=axis, keepdims=True))


def np_log_softmax(x, axis=-1, where=None):
  return x - np_lse(x, axis, where)


def np_xlogp(y, log_p):
  """y * log_p with 0 * (-inf) = 0."""
  with np.errstate(invalid="ignore"):
    return np.where(y == 0, 0.0, y * log_p)


def ref_squared_error(p, t=None):
  return (p - (0 if t is None else t)) ** 2


def ref_l2(p, t=None):
  return 0.5 * ref_squared_error(p, t)


def ref_huber(p, t=None, delta=1.0):
  e = np.abs(p - (0 if t is None else t))
  return np.where(e <= delta, 0.5 * e**2, delta * (e - 0.5 * delta))


def ref_log_cosh(p, t=None):
  e = p - (0 if t is None else t)
  return np.vectorize(lambda v: math.log(math.cosh(v)))(e)


def ref_cosine(a, b, epsilon=0.0, axis=-1, where=None):
  w = np.ones(np.broadcast_shapes(a.shape, b.shape), bool) if where is None else where
  an = np.sqrt(np.maximum(np.sum(np.where(w, a * a, 0), axis, keepdims=True), epsilon))
  bn = np.sqrt(np.maximum(np.sum(np.where(w, b * b, 0), axis, keepdims=True), epsilon))
  an, bn = np.where(an > 0, an, 1), np.where(bn > 0, bn, 1)
  return np.sum(np.where(w, (a / an) * (b / bn), 0), axis)


def ref_smooth(y, alpha, axis=-1, where=None):
  if where is None:
    return (1 - alpha) * y + alpha / y.shape[axis]
  k = np.sum(where, axis, keepdims=True)
  return (1 - alpha) * y + np.where(k > 0, alpha / np.maximum(k, 1), 0)


def ref_softmax_ce(x, y, axis=-1, where=None):
  if where is not None and where.ndim != x.ndim:
    where = np.expand_dims(where, axis)
  terms = np_xlogp(y, np_log_softmax(x, axis, where))
  if where is not None:
    terms = np.where(where, terms, 0)
  return -np.sum(terms, axis)


def ref_int_ce(x, labels, axis=-1, where=None):
  """One-hot labels and ref_softmax_ce; a tuple axis is flattened row-major."""
  if isinstance(axis, tuple):
    batch = [d for d in range(x.ndim) if d not in axis]
    x = np.transpose(x, batch + list(axis)).reshape([x.shape[d] for d in batch] + [-1])
    if where is not None:
      where = np.transpose(where, batch + list(axis)).reshape(x.shape)
    axis = -1
  onehot = np.moveaxis(np.eye(x.shape[axis])[labels], -1, axis)
  xl = np.sum(np.where(onehot > 0, x, 0), axis)
  if where is not None and where.ndim != x.ndim:
    where = np.expand_dims(where, axis)
  out = np.squeeze(np_lse(x, axis, where), axis) - xl
  if where is not None:
    out = np.where(np.any(where, axis), out, 0)
  return out


def ref_bce(x, y):
  return -np_xlogp(y, np_log_sigmoid(x)) - np_xlogp(1 - y, np_log_sigmoid(-x))


def ref_focal(x, y, alpha=None, gamma=2.0):
  p = 1 / (1 + np.exp(-x))
  weight = ((1 - y) * p + y * (1 - p)) ** gamma
  loss = ref_bce(x, y) * weight
  if alpha is not None:
    loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
  return loss


def ref_poly(x, y, epsilon=2.0, axis=-1, where=None):
  p = np.exp(np_log_softmax(x, axis, where))
  w = True if where is None else where
  return ref_softmax_ce(x, y, axis, where) + epsilon * np.sum(np.where(w, y * (1 - p), 0), axis)


def ref_kl(lp, t, axis=-1, where=None):
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(t > 0, t * (np.log(np.where(t > 0, t, 1)) - lp), 0)
  return np.sum(np.where(True if where is None else where, terms, 0), axis)


def ref_kl_log(lp, lt, axis=-1, where=None):
  return ref_kl(lp, np.exp(lt), axis, where)


def ref_gkl(lp, t, axis=-1, where=None):
  w = True if where is None else where
  return ref_kl(lp, t, axis, where) + np.sum(np.where(w, np.exp(lp) - t, 0), axis)


def ref_hinge(s, y):
  return np.maximum(0, 1 - s * y)


def ref_perceptron(s, y):
  return np.maximum(0, -s * y)


def ref_mc_hinge(s, labels):
  out = np.zeros(s.shape[:-1])
  for idx in np.ndindex(*s.shape[:-1]):
    row, y = s[idx], labels[idx]
    out[idx] = max(row[j] + (0 if j == y else 1) for j in range(len(row))) - row[y]
  return out


def ref_mc_perceptron(s, labels):
  return np.max(s, -1) - np.take_along_axis(s, labels[..., None], -1)[..., 0]


def ref_triplet(a, p, n, axis=-1, norm_degree=2, margin=1.0, eps=1e-6):
  d = lambda u: (np.sum(np.abs(a - u) ** norm_degree, axis) + eps) ** (1 / norm_degree)
  return np.maximum(d(p) - d(n) + margin, 0)


def ref_ntxent(x, labels, temperature=0.07):
  b = len(labels)
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  s = unit @ unit.T / temperature
  total, count = 0.0, 0
  for i in range(b):
    negatives = [math.exp(s[i, k]) for k in range(b) if labels[k] != labels[i]]
    for j in range(b):
      if j != i and labels[j] == labels[i]:
        total -= s[i, j] - math.log(math.exp(s[i, j]) + sum(negatives))
        count += 1
  return total / max(count, 1)


def ref_sparse_plus(x):
  return np.where(x <= -1, 0, np.where(x >= 1, x, 0.25 * (x + 1) ** 2))


def ref_sparsemax_loss(x, y):
  return ref_sparse_plus(np.where(y != 0, -x, x))


def np_sparsemax(s):
  """Projection onto the simplex by bisection on tau: sum(max(s - tau, 0)) = 1."""
  lo, hi = s.max() - 1, s.max()
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if np.maximum(s - mid, 0).sum() > 1 else (lo, mid)
  return np.maximum(s - 0.5 * (lo + hi), 0)


def ref_mc_sparsemax(s, labels):
  out = np.zeros(s.shape[:-1])
  for idx in np.ndindex(*s.shape[:-1]):
    p = np_sparsemax(s[idx])
    out[idx] = p @ s[idx] + 0.5 * (1 - p @ p) - s[idx][labels[idx]]
  return out


def ref_ranking(x, y, where=None, weights=None, reduce_fn=jnp.mean):
  y = y if weights is None else y * weights
  w = np.ones(x.shape, bool) if where is None else where
  per_list = ref_softmax_ce(x, y, -1, w)
  valid = np.any(w, -1)
  if reduce_fn is None:
    return np.where(valid, per_list, 0)
  if reduce_fn is jnp.sum:
    return np.sum(np.where(valid, per_list, 0))
  return np.mean(per_list[valid]) if valid.any() else 0.0


def np_softmax(x, axis=-1):
  return np.exp(np_log_softmax(x, axis))


def ref_dice(p, t, class_weights=None, smooth=1.0, alpha=0.5, beta=0.5,
             apply_softmax=True, reduction="mean", ignore_background=False, axis=None):
  if apply_softmax:
    p = 1 / (1 + np.exp(-p)) if p.shape[-1] == 1 else np_softmax(p)
  axis = tuple(range(1, p.ndim - 1)) if axis is None else axis
  i, ps, ts = np.sum(p * t, axis), np.sum(p, axis), np.sum(t, axis)
  loss = 1 - (i + smooth) / (i + alpha * (ps - i) + beta * (ts - i) + smooth)
  if class_weights is not None:
    loss = loss * class_weights
  if ignore_background and p.shape[-1] > 1:
    loss = loss[..., 1:]
  return {"mean": np.mean, "sum": np.sum}[reduction](loss, -1) if reduction != "none" else loss


def ref_gen_dice(p, t, smooth=1.0):
  vol = np.sum(t, tuple(range(t.ndim - 1)))
  w = 1 / (vol**2 + 1e-7)
  w = w / w.sum() * len(w)
  return np.mean(ref_dice(p, t, class_weights=w, smooth=smooth, reduction="none"))


def ref_ctc(logits, logit_paddings, labels, label_paddings, blank_id=0):
  """Brute force: sum the probability of every alignment that collapses to the labels."""
  out = []
  for b in range(logits.shape[0]):
    T = int(round(logits.shape[1] - logit_paddings[b].sum()))
    target = [int(v) for v, pad in zip(labels[b], label_paddings[b]) if pad == 0]
    logp = np_log_softmax(logits[b, :T])
    total = -np.inf
    for path in itertools.product(range(logits.shape[2]), repeat=T):
      collapsed = [k for i, k in enumerate(path) if k != blank_id and (i == 0 or path[i - 1] != k)]
      if collapsed == target:
        total = np.logaddexp(total, sum(logp[t, k] for t, k in enumerate(path)))
    out.append(-total)
  return np.array(out)


# ---------------------------------------------------------- the case table


@dataclasses.dataclass(frozen=True)
class Case:
  id: str
  fn: Callable[..., Any]
  make: Callable[[np.random.Generator], tuple[tuple, dict]]
  ref: Callable[..., Any]
  optax_fn: Callable[..., Any] | None = None  # None: optax differs on these inputs


def _r(rng, *shape, scale=2.0):
  return rng.normal(size=shape) * scale


def _dist(rng, *shape):
  return np_softmax(_r(rng, *shape))


def _onehot(rng, *shape):
  return np.eye(shape[-1])[rng.integers(0, shape[-1], shape[:-1])]


def _mask(rng, *shape):
  m = rng.random(shape) < 0.7
  m[..., 0] = True
  return m


def _soft_or_binary(rng, *shape):
  y = rng.random(shape)
  y[..., :2] = np.array([0.0, 1.0])
  return y


CASES = [
    Case("squared_error", losses.squared_error,
         lambda g: ((_r(g, 3, 4), _r(g, 3, 4)), {}), ref_squared_error,
         optax.losses.squared_error),
    Case("squared_error_no_targets", losses.squared_error,
         lambda g: ((_r(g, 5),), {}), ref_squared_error, optax.losses.squared_error),
    Case("l2_loss", losses.l2_loss, lambda g: ((_r(g, 3, 4), _r(g, 3, 4)), {}), ref_l2,
         optax.losses.l2_loss),
    Case("huber_loss", losses.huber_loss,
         lambda g: ((_r(g, 4, 5), _r(g, 4, 5)), {"delta": 1.5}), ref_huber,
         optax.losses.huber_loss),
    Case("log_cosh", losses.log_cosh,
         lambda g: ((_r(g, 4, 5, scale=10.0), _r(g, 4, 5)), {}), ref_log_cosh,
         optax.losses.log_cosh),
    Case("cosine_similarity", losses.cosine_similarity,
         lambda g: ((_r(g, 3, 5), _r(g, 3, 5)), {}), ref_cosine,
         optax.losses.cosine_similarity),
    Case("cosine_similarity_axis0_where_eps", losses.cosine_similarity,
         lambda g: ((_r(g, 5, 3), _r(g, 5, 3)),
                    {"axis": 0, "where": _mask(g, 5, 3), "epsilon": 0.1}),
         ref_cosine, optax.losses.cosine_similarity),
    Case("cosine_similarity_axes", losses.cosine_similarity,
         lambda g: ((_r(g, 2, 3, 4), _r(g, 2, 3, 4)), {"axis": (1, 2)}),
         ref_cosine, optax.losses.cosine_similarity),
    Case("cosine_distance", losses.cosine_distance,
         lambda g: ((_r(g, 3, 5), _r(g, 3, 5)), {}),
         lambda a, b, **kw: 1 - ref_cosine(a, b, **kw), optax.losses.cosine_distance),
    Case("smooth_labels", losses.smooth_labels,
         lambda g: ((_onehot(g, 4, 5), 0.1), {}), ref_smooth, optax.losses.smooth_labels),
    Case("smooth_labels_where", losses.smooth_labels,
         lambda g: ((_onehot(g, 4, 5), 0.3), {"where": _mask(g, 4, 5)}), ref_smooth,
         optax.losses.smooth_labels),
    Case("softmax_cross_entropy", losses.softmax_cross_entropy,
         lambda g: ((_r(g, 4, 6), _dist(g, 4, 6)), {}), ref_softmax_ce,
         optax.losses.softmax_cross_entropy),
    Case("softmax_cross_entropy_large", losses.softmax_cross_entropy,
         lambda g: ((_r(g, 4, 6, scale=300.0), _onehot(g, 4, 6)), {}), ref_softmax_ce,
         optax.losses.softmax_cross_entropy),
    Case("softmax_cross_entropy_axis0_where", losses.softmax_cross_entropy,
         lambda g: ((_r(g, 6, 4), _onehot(g, 4, 6).T), {"axis": 0, "where": _mask(g, 4, 6).T}),
         ref_softmax_ce, optax.losses.softmax_cross_entropy),
    Case("softmax_cross_entropy_row_where", losses.softmax_cross_entropy,
         lambda g: ((_r(g, 4, 6), _dist(g, 4, 6)), {"where": np.array([True, False, True, True])}),
         ref_softmax_ce, optax.losses.softmax_cross_entropy),
    Case("softmax_cross_entropy_axes", losses.softmax_cross_entropy,
         lambda g: ((_r(g, 2, 3, 4), _dist(g, 2, 12).reshape(2, 3, 4)), {"axis": (1, 2)}),
         ref_softmax_ce, optax.losses.softmax_cross_entropy),
    Case("safe_softmax_cross_entropy", losses.safe_softmax_cross_entropy,
         lambda g: ((_r(g, 4, 6), _dist(g, 4, 6)), {}), ref_softmax_ce,
         optax.losses.safe_softmax_cross_entropy),
    Case("int_ce", losses.softmax_cross_entropy_with_integer_labels,
         lambda g: ((_r(g, 5, 7), g.integers(0, 7, 5)), {}), ref_int_ce,
         optax.losses.softmax_cross_entropy_with_integer_labels),
    Case("int_ce_large", losses.softmax_cross_entropy_with_integer_labels,
         lambda g: ((_r(g, 5, 7, scale=1e3), g.integers(0, 7, 5)), {}), ref_int_ce,
         optax.losses.softmax_cross_entropy_with_integer_labels),
    Case("int_ce_axis0_where", losses.softmax_cross_entropy_with_integer_labels,
         lambda g: ((_r(g, 7, 5), np.zeros(5, np.int64)), {"axis": 0, "where": _mask(g, 5, 7).T}),
         ref_int_ce, optax.losses.softmax_cross_entropy_with_integer_labels),
    Case("int_ce_axes", losses.softmax_cross_entropy_with_integer_labels,
         lambda g: ((_r(g, 2, 3, 4, 5), g.integers(0, 12, (2, 5))), {"axis": (1, 2)}),
         ref_int_ce, optax.losses.softmax_cross_entropy_with_integer_labels),
    Case("int_ce_row_where", losses.softmax_cross_entropy_with_integer_labels,
         lambda g: ((_r(g, 4, 6), g.integers(0, 6, 4)), {"where": np.array([True, False, True, True])}),
         ref_int_ce, optax.losses.softmax_cross_entropy_with_integer_labels),
    Case("sigmoid_binary_cross_entropy", losses.sigmoid_binary_cross_entropy,
         lambda g: ((_r(g, 4, 5, scale=5.0), _soft_or_binary(g, 4, 5)), {}), ref_bce,
         optax.losses.sigmoid_binary_cross_entropy),
    Case("sigmoid_focal_loss", losses.sigmoid_focal_loss,
         lambda g: ((_r(g, 4, 5, scale=5.0), _soft_or_binary(g, 4, 5)), {}), ref_focal,
         optax.losses.sigmoid_focal_loss),
    Case("sigmoid_focal_loss_alpha_gamma", losses.sigmoid_focal_loss,
         lambda g: ((_r(g, 4, 5, scale=5.0), (g.random((4, 5)) < 0.5) * 1.0),
                    {"alpha": 0.25, "gamma": 0.5}), ref_focal,
         optax.losses.sigmoid_focal_loss),
    Case("poly_loss_cross_entropy", losses.poly_loss_cross_entropy,
         lambda g: ((_r(g, 4, 6), _dist(g, 4, 6)), {"epsilon": -1.0}), ref_poly,
         optax.losses.poly_loss_cross_entropy),
    Case("poly_loss_cross_entropy_where", losses.poly_loss_cross_entropy,
         lambda g: ((_r(g, 4, 6), _onehot(g, 4, 6)), {"where": _mask(g, 4, 6)}), ref_poly,
         None),  # optax's softmax over a where-mask is its own (jax's) convention
    Case("kl_divergence", losses.kl_divergence,
         lambda g: ((np_log_softmax(_r(g, 4, 6)), _dist(g, 4, 6)), {}), ref_kl,
         optax.losses.kl_divergence),
    Case("kl_divergence_axis0_where", losses.kl_divergence,
         lambda g: ((np_log_softmax(_r(g, 6, 4), 0), _dist(g, 4, 6).T),
                    {"axis": 0, "where": _mask(g, 4, 6).T}), ref_kl,
         optax.losses.kl_divergence),
    Case("kl_divergence_with_log_targets", losses.kl_divergence_with_log_targets,
         lambda g: ((np_log_softmax(_r(g, 4, 6)), np_log_softmax(_r(g, 4, 6))), {}), ref_kl_log,
         optax.losses.kl_divergence_with_log_targets),
    Case("generalized_kl_divergence", losses.generalized_kl_divergence,
         lambda g: ((_r(g, 4, 6, scale=0.5), g.random((4, 6)) * 2), {"where": _mask(g, 4, 6)}),
         ref_gkl, optax.losses.generalized_kl_divergence),
    Case("hinge_loss", losses.hinge_loss,
         lambda g: ((_r(g, 8), np.sign(_r(g, 8))), {}), ref_hinge, optax.losses.hinge_loss),
    Case("perceptron_loss", losses.perceptron_loss,
         lambda g: ((_r(g, 8), np.sign(_r(g, 8))), {}), ref_perceptron,
         optax.losses.perceptron_loss),
    Case("multiclass_hinge_loss", losses.multiclass_hinge_loss,
         lambda g: ((_r(g, 2, 3, 5, scale=0.5), g.integers(0, 5, (2, 3))), {}), ref_mc_hinge,
         optax.losses.multiclass_hinge_loss),
    Case("multiclass_perceptron_loss", losses.multiclass_perceptron_loss,
         lambda g: ((_r(g, 6, 5), g.integers(0, 5, 6)), {}), ref_mc_perceptron,
         optax.losses.multiclass_perceptron_loss),
    Case("triplet_margin_loss", losses.triplet_margin_loss,
         lambda g: ((_r(g, 5, 3), _r(g, 5, 3), _r(g, 5, 3)), {"margin": 2.0}), ref_triplet,
         optax.losses.triplet_margin_loss),
    Case("triplet_margin_loss_l1", losses.triplet_margin_loss,
         lambda g: ((_r(g, 3, 5), _r(g, 3, 5), _r(g, 3, 5)), {"axis": 0, "norm_degree": 1}),
         ref_triplet, None),  # optax's signed (u - v)^1 is not a norm
    Case("ntxent", losses.ntxent,
         lambda g: ((_r(g, 6, 3), np.array([0, 0, 1, 1, 2, 2])), {"temperature": 0.5}), ref_ntxent,
         optax.losses.ntxent),
    Case("sparsemax_loss", losses.sparsemax_loss,
         lambda g: ((_r(g, 10), g.integers(0, 2, 10)), {}), ref_sparsemax_loss,
         optax.losses.sparsemax_loss),
    Case("multiclass_sparsemax_loss", losses.multiclass_sparsemax_loss,
         lambda g: ((_r(g, 6, 5, scale=0.7), g.integers(0, 5, 6)), {}), ref_mc_sparsemax,
         optax.losses.multiclass_sparsemax_loss),
    Case("multiclass_sparsemax_loss_3d", losses.multiclass_sparsemax_loss,
         lambda g: ((_r(g, 2, 3, 5, scale=0.7), g.integers(0, 5, (2, 3))), {}), ref_mc_sparsemax,
         None),  # optax takes one batch axis only
    Case("fenchel_young_logsumexp",
         losses.make_fenchel_young_loss(jax.scipy.special.logsumexp),
         lambda g: ((_r(g, 4, 6), _dist(g, 4, 6)), {}), ref_softmax_ce,
         optax.losses.make_fenchel_young_loss(jax.scipy.special.logsumexp)),
    Case("ranking_softmax_loss", losses.ranking_softmax_loss,
         lambda g: ((_r(g, 3, 5), (g.random((3, 5)) < 0.4) * 1.0), {}), ref_ranking,
         optax.losses.ranking_softmax_loss),
    Case("ranking_softmax_loss_where_weights_sum", losses.ranking_softmax_loss,
         lambda g: ((_r(g, 3, 5), g.integers(0, 3, (3, 5)) * 1.0),
                    {"where": np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool),
                     "weights": g.random((3, 5)), "reduce_fn": jnp.sum}),
         ref_ranking, optax.losses.ranking_softmax_loss),
    Case("ranking_softmax_loss_none", losses.ranking_softmax_loss,
         lambda g: ((_r(g, 3, 5), g.integers(0, 3, (3, 5)) * 1.0),
                    {"where": np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool),
                     "reduce_fn": None}),
         ref_ranking, optax.losses.ranking_softmax_loss),
    Case("dice_loss", losses.dice_loss,
         lambda g: ((_r(g, 2, 4, 4, 3), _onehot(g, 2, 4, 4, 3)), {}), ref_dice,
         optax.losses.dice_loss),
    Case("dice_loss_tversky_weights", losses.dice_loss,
         lambda g: ((_r(g, 2, 5, 3), _onehot(g, 2, 5, 3)),
                    {"alpha": 0.3, "beta": 0.7, "class_weights": g.random(3), "smooth": 0.5,
                     "reduction": "sum", "ignore_background": True}),
         ref_dice, None),  # optax's class_weights broadcast needs rank promotion
    Case("dice_loss_probabilities_none", losses.dice_loss,
         lambda g: ((_dist(g, 2, 5, 3), _onehot(g, 2, 5, 3)),
                    {"apply_softmax": False, "reduction": "none", "axis": 1}),
         ref_dice, None),  # optax's probability check fails under jit
    Case("binary_dice_loss", losses.binary_dice_loss,
         lambda g: ((_r(g, 3, 6), (g.random((3, 6)) < 0.5) * 1.0), {}),
         lambda p, t, **kw: ref_dice(p[..., None], t[..., None], **kw),
         optax.losses.binary_dice_loss),
    Case("multiclass_generalized_dice_loss", losses.multiclass_generalized_dice_loss,
         lambda g: ((_r(g, 2, 6, 3), _onehot(g, 2, 6, 3)), {}), ref_gen_dice, None),
    Case("ctc_loss", losses.ctc_loss,
         lambda g: ((_r(g, 3, 5, 3),
                     np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 1]], float),
                     np.array([[1, 2], [1, 1], [2, 0]]),
                     np.array([[0, 0], [0, 0], [0, 1]], float)), {}),
         ref_ctc, optax.losses.ctc_loss),
    Case("ctc_loss_blank_last", losses.ctc_loss,
         lambda g: ((_r(g, 2, 4, 3), np.zeros((2, 4)), np.array([[0, 1], [1, 1]]),
                     np.zeros((2, 2))), {"blank_id": 2}),
         functools.partial(ref_ctc, blank_id=2), optax.losses.ctc_loss),
]
BY_ID = {c.id: c for c in CASES}


def _is_array(v):
  return isinstance(v, np.ndarray)


def _convert(v, dtype):
  if _is_array(v) and np.issubdtype(v.dtype, np.floating):
    return jnp.asarray(v, dtype)
  return jnp.asarray(v) if _is_array(v) else v


# Compiling dominates this module's runtime; these options change how fast XLA
# compiles, not what it computes (as in test_reference.py).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
if jax.default_backend() == "cpu":
  _FAST_COMPILE["xla_cpu_use_fusion_emitters"] = False
_jit = functools.partial(jax.jit, compiler_options=_FAST_COMPILE)


def _call(fn, args, kwargs, jit):
  arrays = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array)}
  static = {k: v for k, v in kwargs.items() if k not in arrays}
  if not jit:
    return fn(*args, **arrays, **static)
  return _jit(lambda a, kw: fn(*a, **kw, **static))(args, arrays)


def _rounded(v, dtype):
  """What the loss sees: float inputs rounded to ``dtype``, then held in float64."""
  if _is_array(v) and np.issubdtype(v.dtype, np.floating):
    return np.asarray(v.astype(dtype), np.float64)
  return v


def check_case(case: Case, dtype, jit: bool, against_optax: bool = False):
  rng = np.random.default_rng(sum(map(ord, case.id)))
  args, kwargs = case.make(rng)
  want = case.ref(*[_rounded(a, dtype) for a in args],
                  **{k: _rounded(v, dtype) for k, v in kwargs.items()})
  args = tuple(_convert(a, dtype) for a in args)
  kwargs = {k: _convert(v, dtype) for k, v in kwargs.items()}
  got = _call(case.fn, args, kwargs, jit)
  assert got.dtype == dtype, (got.dtype, dtype)
  assert got.shape == np.shape(want)
  tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, **tol)
  if against_optax and case.optax_fn is not None:
    # An extra check on ordinary inputs; optax needs the default promotion rules.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
      theirs = _call(case.optax_fn, args, kwargs, jit)
    np.testing.assert_allclose(got, theirs, rtol=1e-5, atol=1e-5)


def check_mode(case: Case, dtype, jit: bool, against_optax: bool = False):
  if dtype == np.float64:
    with jax.enable_x64(True):
      check_case(case, dtype, jit)
  else:
    check_case(case, dtype, jit, against_optax)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_numpy_reference_and_optax(case):
  """float32 and float64, jitted, for every case; optax agrees in float32."""
  check_mode(case, np.float32, jit=True, against_optax=True)
  check_mode(case, np.float64, jit=True)


EAGER = ["softmax_cross_entropy_axis0_where", "int_ce_axes", "sigmoid_focal_loss_alpha_gamma",
         "dice_loss_probabilities_none"]  # ctc_loss: test_ctc_forward_probs_shapes_and_padding


@pytest.mark.parametrize("name", EAGER)
def test_matches_numpy_reference_not_jitted(name):
  """float32 and float64 not jitted, for a few cases (the edge-case tests below run eagerly too)."""
  check_mode(BY_ID[name], np.float32, jit=False)
  check_mode(BY_ID[name], np.float64, jit=False)


def test_names_are_optax_names():
  optax_names = {n for n in dir(optax.losses) if not n.startswith("_")}
  assert set(losses.__all__) == optax_names
  for name in losses.__all__:
    assert callable(getattr(losses, name))


# --------------------------------------------------------------- edge cases


def _finite_grad(f, *args):
  grads = _jit(jax.grad(f, argnums=tuple(range(len(args)))))(*args)
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g))), grads
  return grads


def test_softmax_cross_entropy_minus_inf_logits():
  logits = jnp.array([[0.0, -jnp.inf, 1.0], [2.0, 0.0, -jnp.inf]])
  labels = jnp.array([[1.0, 0.0, 0.0], [0.3, 0.7, 0.0]])
  want = ref_softmax_ce(np.asarray(logits, np.float64), np.asarray(labels, np.float64))
  for fn in (losses.softmax_cross_entropy, losses.safe_softmax_cross_entropy,
             jax.jit(losses.softmax_cross_entropy)):
    np.testing.assert_allclose(fn(logits, labels), want, rtol=1e-6)
  assert np.isnan(optax.losses.softmax_cross_entropy(logits, labels)).all()  # what gradtx fixes
  g_logits, g_labels = _finite_grad(lambda x, y: losses.softmax_cross_entropy(x, y).sum(),
                                    logits, labels)
  p = np.exp(np_log_softmax(np.asarray(logits, np.float64)))
  np.testing.assert_allclose(g_logits, p - np.asarray(labels), rtol=1e-6, atol=1e-7)
  # d/dy_j = -log p_j where p_j > 0; a ruled-out class gets 0, not NaN.
  lp = np_log_softmax(np.asarray(logits, np.float64))
  np.testing.assert_allclose(g_labels, np.where(np.isinf(lp), 0, -lp), rtol=1e-6)
  # A label on a ruled-out class costs +inf.
  assert losses.softmax_cross_entropy(logits[:1], jnp.array([[0.0, 1.0, 0.0]]))[0] == jnp.inf


def test_softmax_cross_entropy_row_of_minus_inf_logits():
  # Every class ruled out and no label: loss 0, as optax's safe_softmax_cross_entropy
  # (-inf - (-inf) was NaN), and finite gradients.
  x = jnp.array([[-jnp.inf, -jnp.inf, -jnp.inf], [0.0, 1.0, -jnp.inf]])
  y = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  want = [0.0, math.log(1 + math.e)]
  np.testing.assert_allclose(optax.losses.safe_softmax_cross_entropy(x, y), want, rtol=1e-6)
  for fn in (losses.softmax_cross_entropy, losses.safe_softmax_cross_entropy):
    np.testing.assert_allclose(fn(x, y), want, rtol=1e-6)
    g_x, g_y = jax.grad(lambda x, y: fn(x, y).sum(), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(g_x[0], [0, 0, 0])
    assert np.all(np.isfinite(g_x)) and np.all(np.isfinite(g_y[1, :2]))
  np.testing.assert_allclose(losses.ranking_softmax_loss(x, y, reduce_fn=None), want, rtol=1e-6)


def test_integer_labels_minus_inf_and_out_of_range():
  logits = jnp.array([[0.0, -jnp.inf, 1.0]])
  got = losses.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0]))
  np.testing.assert_allclose(got, [math.log(1 + math.e)], rtol=1e-6)
  g = _finite_grad(lambda x: losses.softmax_cross_entropy_with_integer_labels(x, jnp.array([0])).sum(),
                   logits)[0]
  np.testing.assert_allclose(g, [[1 / (1 + math.e) - 1, 0, math.e / (1 + math.e)]], rtol=1e-6)
  assert np.isnan(losses.softmax_cross_entropy_with_integer_labels(logits, jnp.array([3])))[0]
  # Every class ruled out: the label's probability is 0, a loss of inf as the one-hot
  # label's in softmax_cross_entropy (log 0 - (-inf) was NaN), and a gradient of 0.
  dead = jnp.array([[-jnp.inf] * 3, [0.0, 1.0, -jnp.inf]])
  onehot = jnp.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
  for f in (lambda x: losses.softmax_cross_entropy_with_integer_labels(x, jnp.array([1, 1])),
            lambda x: losses.softmax_cross_entropy(x, onehot)):
    np.testing.assert_allclose(f(dead), [np.inf, math.log(1 + 1 / math.e)], rtol=1e-6)
    g = _finite_grad(lambda x: f(x).sum(), dead)[0]
    np.testing.assert_allclose(g, [[0, 0, 0], [1 / (1 + math.e), -1 / (1 + math.e), 0]],
                               rtol=1e-6)
  # As documented (and as optax): a negative label counts from the end; below -3 it is NaN.
  x = jnp.array([[0.0, 1.0, 2.0]] * 3)
  got = losses.softmax_cross_entropy_with_integer_labels(x, jnp.array([-1, -3, -4]))
  lse = math.log(1 + math.e + math.e**2)
  np.testing.assert_allclose(got[:2], [lse - 2, lse], rtol=1e-6)
  assert np.isnan(got[2])


def test_integer_labels_that_name_no_class_are_nan_with_zero_gradient():
  """Past the last class or below -num_classes: NaN (as optax), and now gradient 0, where it
  was the softmax (a loss without its label's term; optax too). A row where leaves out
  whole is left out whatever its label (the per-class mask gave NaN, the row mask 0);
  a row still included keeps its NaN."""
  f = losses.softmax_cross_entropy_with_integer_labels
  x = jnp.array([[0.3, -0.2, 0.9]] * 4)
  fg = _jit(lambda x, y, w: (f(x, y, where=w), jax.grad(lambda x: f(x, y, where=w).sum())(x)))
  y = jnp.array([1, 3, -4, 5])
  got, g = map(np.asarray, fg(x, y, jnp.ones(4, bool)))
  want, g_want = map(np.asarray, fg(x, jnp.array([1, 0, 0, 0]), jnp.ones(4, bool)))
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(g[0], g_want[0])
  assert np.all(np.isnan(got[1:]))
  np.testing.assert_array_equal(g[1:], 0)
  # Row 3 left out whole (by a per-class mask and by a row mask): 0, gradient 0.
  per_class = jnp.array([[True] * 3, [True, False, True], [True] * 3, [False] * 3])
  for w in (per_class, jnp.array([True, True, True, False])):
    got, g = map(np.asarray, fg(x, y, w))
    np.testing.assert_array_equal(got[3], 0)
    assert np.all(np.isnan(got[1:3]))
    np.testing.assert_array_equal(g[1:], 0)


def test_all_masked_rows_give_zero_and_finite_grads():
  x = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
  w = jnp.array([[True, True, False], [False, False, False]])
  y = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  for f in (lambda x: losses.softmax_cross_entropy(x, y, where=w),
            lambda x: losses.softmax_cross_entropy_with_integer_labels(x, jnp.array([0, 1]), where=w),
            lambda x: losses.poly_loss_cross_entropy(x, y, where=w)):
    out = f(x)
    assert out[1] == 0 and np.isfinite(out[0])
    g = _finite_grad(lambda x: f(x).sum(), x)[0]
    assert np.all(g[1] == 0) and g[0, 2] == 0
  smoothed = losses.smooth_labels(y, 0.1, where=w)
  np.testing.assert_allclose(smoothed[1], 0.9 * y[1])


def test_integer_label_at_a_left_out_class_gives_zero():
  """A label at a class where leaves out has loss 0 and gradient 0, as its one-hot label in
  softmax_cross_entropy: the normaliser over the kept classes minus its logit was -0.69
  (optax too), a negative cross entropy."""
  x = jnp.array([[1.0, 2.0, 3.0], [1.0, 5.0, 0.0]])
  w = jnp.array([[True, True, False], [True, True, True]])
  f = lambda x: losses.softmax_cross_entropy_with_integer_labels(x, jnp.array([2, 1]), where=w)  # noqa: E731
  want = losses.softmax_cross_entropy(x, jnp.eye(3)[jnp.array([2, 1])], where=w)
  np.testing.assert_allclose(f(x), want, rtol=1e-6)
  assert f(x)[0] == 0
  g = jax.grad(lambda x: f(x).sum())(x)
  np.testing.assert_array_equal(g[0], [0, 0, 0])
  assert optax.losses.softmax_cross_entropy_with_integer_labels(x, jnp.array([2, 1]), where=w)[0] < 0


def test_poly_loss_where_with_a_large_left_out_logit_has_finite_grads():
  # The left-out class's log-probability, 1e4 - log(sum e^x over the others), has an
  # exp of inf: its zero cotangent times inf made every gradient of the row NaN.
  x = jnp.array([[1e4, 0.3, -0.2, 0.1, 0.5]])
  y = jnp.array([[0.0, 1.0, 0.0, 0.0, 0.0]])
  w = jnp.array([[False, True, True, True, True]])
  got = jax.grad(lambda x: losses.poly_loss_cross_entropy(x, y, where=w).sum())(x)
  want = jax.grad(lambda x: optax.losses.poly_loss_cross_entropy(x, y, where=w).sum())(x)
  assert np.all(np.isfinite(want))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_where_with_large_or_nan_left_out_logits_has_finite_grads():
  """Integer labels summed exp(x - max) with where applied after the exp: a left-out logit
  88 above the row's max (1e4, 300) or NaN had a derivative of inf or NaN there, times its
  zero cotangent NaN (optax: 0). Left-out logits do not reach the loss nor its gradient."""
  x = jnp.array([[1.0, 2.0, 1e4], [0.5, jnp.nan, -2.0]])
  w = jnp.array([[True, True, False], [True, False, True]])
  labels = jnp.array([0, 2])
  onehot = jax.nn.one_hot(labels, 3)
  clean = jnp.where(w, x, -jnp.inf)
  want = [np.logaddexp(1, 2) - 1, np.logaddexp(0.5, -2) + 2]
  want_g = jax.nn.softmax(clean) - onehot
  for f in (lambda x: losses.softmax_cross_entropy_with_integer_labels(x, labels, where=w),
            lambda x: losses.softmax_cross_entropy(x, onehot, where=w)):
    np.testing.assert_allclose(f(x), want, rtol=1e-6)
    g = _finite_grad(lambda x: f(x).sum(), x)[0]
    np.testing.assert_allclose(g, want_g, rtol=1e-6, atol=1e-7)


def test_where_left_out_minus_inf_or_nan_logit_with_a_label_has_finite_grads():
  """A class left out by where, its logit -inf (masked in the model too) or NaN and its
  label positive: the label's derivative, -log p = inf or NaN there, times its zero
  cotangent was NaN (optax too). Left out, it reaches neither the loss nor a gradient."""
  y = jnp.array([[0.0, 1.0, 1.0]])
  w = jnp.array([[True, False, True]])
  for bad in (-jnp.inf, jnp.nan):
    x = jnp.array([[0.0, bad, 1.0]])
    p = 1 / (1 + math.e)
    for f, want, want_gx, want_gy in (
        (losses.softmax_cross_entropy, [math.log(1 + 1 / math.e)], [[p, 0, -p]],
         [[math.log(1 + math.e), 0, math.log(1 + 1 / math.e)]]),
        (losses.ranking_softmax_loss, math.log(1 + 1 / math.e), [[p, 0, -p]],
         [[math.log(1 + math.e), 0, math.log(1 + 1 / math.e)]]),
        (losses.poly_loss_cross_entropy, [math.log(1 + 1 / math.e) + 2 * p],
         [[p + 2 * p * (1 - p), 0, -p - 2 * p * (1 - p)]],
         [[math.log(1 + math.e) + 2 * (1 - p), 0, math.log(1 + 1 / math.e) + 2 * p]])):
      np.testing.assert_allclose(f(x, y, where=w), want, rtol=1e-6)
      g_x, g_y = _finite_grad(lambda x, y: f(x, y, where=w).sum(), x, y)
      np.testing.assert_allclose(g_x, want_gx, rtol=1e-6, atol=1e-7)
      np.testing.assert_allclose(g_y, want_gy, rtol=1e-6)


def test_softmax_cross_entropy_where_equals_minus_inf_logits():
  rng = np.random.default_rng(0)
  x = jnp.asarray(_r(rng, 4, 6), jnp.float32)
  y = jnp.asarray(_onehot(rng, 4, 6), jnp.float32)
  w = jnp.asarray(_mask(rng, 4, 6)) | (y > 0)
  masked = jnp.where(w, x, -jnp.inf)
  np.testing.assert_allclose(losses.softmax_cross_entropy(x, y, where=w),
                             losses.softmax_cross_entropy(masked, y), rtol=1e-6)


def test_softmax_losses_are_accurate_for_large_logits():
  # logsumexp of four logits of 1e4 is 1e4 + log 4, rounded in float32 to a step
  # of 1e-3; log-probabilities taken on x - max(x) (as optax) keep log 4 exact.
  x = jnp.full((1, 4), 1e4, jnp.float32)
  y = jnp.array([[1.0, 0.0, 0.0, 0.0]])
  want = math.log(4)
  np.testing.assert_allclose(losses.softmax_cross_entropy(x, y), [want], rtol=1e-6)
  np.testing.assert_allclose(losses.poly_loss_cross_entropy(x, y), [want + 2 * 0.75], rtol=1e-6)
  np.testing.assert_allclose(losses.ranking_softmax_loss(x, y), want, rtol=1e-6)
  g = jax.grad(lambda y: losses.softmax_cross_entropy(x, y).sum())(y)
  np.testing.assert_allclose(g, np.full((1, 4), want), rtol=1e-6)
  # Integer labels too (they took logsumexp of the logits themselves, as optax: 1.3867
  # here); two logits at float32's max gave log 2 = 0.
  int_ce = losses.softmax_cross_entropy_with_integer_labels
  np.testing.assert_allclose(int_ce(x, jnp.array([0])), [want], rtol=1e-6)
  top = float(jnp.finfo(jnp.float32).max)
  np.testing.assert_allclose(int_ce(jnp.array([[top, top, 0.0]]), jnp.array([1])), [math.log(2)],
                             rtol=1e-6)
  x = jnp.array([[1e4, 1e4 - 1, 1e4 - 2], [1e4, 1e4, 1e4]])
  labels = jnp.array([1, 2])
  want = ref_int_ce(np.asarray(x, np.float64), np.asarray(labels))
  np.testing.assert_allclose(_jit(int_ce)(x, labels), want, rtol=1e-6)
  np.testing.assert_allclose(_jit(int_ce)(x, labels, where=jnp.array([[True, True, False],
                                                                     [True, False, True]])),
                             [math.log(1 + math.e), math.log(2)], rtol=1e-6)
  g = jax.grad(lambda x: int_ce(x, labels).sum())(x)
  p = np.exp(np_log_softmax(np.asarray(x, np.float64)))
  np.testing.assert_allclose(g, p - np.eye(3)[np.asarray(labels)], atol=1e-6)


def test_sigmoid_losses_infinite_logits():
  x = jnp.array([-jnp.inf, jnp.inf, 100.0, -100.0, 0.0, -jnp.inf])
  y = jnp.array([0.0, 1.0, 1.0, 0.0, 0.5, 1.0])
  bce = losses.sigmoid_binary_cross_entropy(x, y)
  np.testing.assert_allclose(bce[:5], [0, 0, 0, 0, math.log(2)], atol=1e-6)
  assert bce[5] == jnp.inf
  for gamma in (0.0, 0.5, 2.0):
    focal = losses.sigmoid_focal_loss(x[:5], y[:5], gamma=gamma)
    assert np.all(np.isfinite(focal))
    np.testing.assert_allclose(focal[4], math.log(2) * 0.5**gamma, rtol=1e-6)
    g = _finite_grad(lambda x: losses.sigmoid_focal_loss(x, y[:5], gamma=gamma).sum(), x[:5])[0]
    np.testing.assert_allclose(g[:4], 0, atol=1e-6)
  g = _finite_grad(lambda x: losses.sigmoid_binary_cross_entropy(x, y[:5]).sum(), x[:5])[0]
  np.testing.assert_allclose(g, [0, 0, 0, 0, 0], atol=1e-6)
  assert np.isnan(optax.losses.sigmoid_binary_cross_entropy(x[:2], y[:2])).all()
  # On the side the label rules out the loss is inf and the gradient is the limit, the
  # cross entropy's times the weight (1 - p_t)^gamma = y^gamma or (1 - y)^gamma: the
  # weight's derivative, 0 there, times the infinite cross entropy made it NaN.
  x = jnp.array([-jnp.inf, jnp.inf, -jnp.inf, jnp.inf])
  y = jnp.array([1.0, 0.0, 0.5, 0.25])
  for gamma in (0.0, 0.5, 2.0):
    assert np.all(losses.sigmoid_focal_loss(x, y, gamma=gamma) == np.inf)
    g = _finite_grad(lambda x: losses.sigmoid_focal_loss(x, y, gamma=gamma).sum(), x)[0]
    np.testing.assert_allclose(g, [-1, 1, -0.5 * 0.5**gamma, 0.75 * 0.75**gamma], rtol=1e-6)
  g = _finite_grad(lambda x: losses.sigmoid_focal_loss(x, y, alpha=0.25).sum(), x)[0]
  np.testing.assert_allclose(g, [-0.25, 0.75, -0.5 * 0.5**3, 0.75 * 0.75**2 * 0.625], rtol=1e-6)
  # alpha 0 (or 1) weighs the positive (negative) class by 0: its infinite losses count
  # for nothing, where 0 * inf was NaN (as in optax) and made the batch's mean NaN.
  x, y = jnp.array([-jnp.inf, jnp.inf, 2.0]), jnp.array([1.0, 0.0, 1.0])
  for alpha, want in ((0.0, [0, np.inf, 0]), (1.0, [np.inf, 0, None])):
    got = np.asarray(losses.sigmoid_focal_loss(x, y, alpha=alpha))
    assert not np.isnan(got).any(), (alpha, got)
    for k in (0, 1):
      assert got[k] == want[k], (alpha, got)
    g = _finite_grad(lambda x: losses.sigmoid_focal_loss(x, y, alpha=alpha).sum(), x)[0]
    np.testing.assert_array_equal(np.asarray(g)[:2] == 0, [alpha == 0, alpha == 1])


def test_focal_gamma_zero_is_cross_entropy():
  rng = np.random.default_rng(1)
  x = jnp.asarray(_r(rng, 20, scale=30.0), jnp.float32)
  y = jnp.asarray(rng.random(20), jnp.float32)
  np.testing.assert_allclose(losses.sigmoid_focal_loss(x, y, gamma=0.0),
                             losses.sigmoid_binary_cross_entropy(x, y), rtol=1e-6)


def test_focal_second_derivative_confident_logits():
  # A right answer held with a large logit (y = 1, x = 50): 1 - p_t = e^-50 was summed
  # shifted by max(log p, log q) = log p, so its log's second derivative divided by an
  # underflowed e^-100 and the Hessian was NaN, for every gamma (optax's is finite).
  # Closed form for y = 1, with q = sigmoid(-x), u = -log p: l = u q^g and
  # l'' = (2g + 1) p q^(g+1) - g u p q^(g+1) + g^2 u p^2 q^g; y = 0 at -x mirrors it.
  x = np.array([50.0, 44.0, 20.0, 3.0, -1.0])
  q, p = 1 / (1 + np.exp(x)), 1 / (1 + np.exp(-x))
  u = np.logaddexp(0.0, -x)
  xs, ys = jnp.asarray(np.concatenate([x, -x]), jnp.float32), jnp.repeat(jnp.array([1.0, 0.0]), 5)
  second = _jit(jax.vmap(jax.hessian(
      lambda x, y, gamma: losses.sigmoid_focal_loss(x, y, gamma=gamma)), (0, 0, None)))
  for gamma in (0.0, 0.5, 2.0):
    want = ((2 * gamma + 1) * p * q ** (gamma + 1) - gamma * u * p * q ** (gamma + 1)
            + gamma**2 * u * p**2 * q**gamma)
    got = second(xs, ys, jnp.float32(gamma))
    np.testing.assert_allclose(got, np.concatenate([want, want]), rtol=1e-4, atol=1e-37)


def test_cosine_zero_vectors():
  a = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
  b = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(losses.cosine_similarity(a, b), [0, 0])
  np.testing.assert_array_equal(losses.cosine_distance(a, b), [1, 1])
  _finite_grad(lambda a, b: losses.cosine_similarity(a, b).sum(), a, b)
  assert np.isnan(optax.losses.cosine_similarity(a, b)).all()


def test_cosine_where_leaves_out_inf_and_nan():
  """Entries left out by where reach neither the value nor the gradient: an inf or NaN
  there made the gradient of its whole row NaN, both arguments' (optax too)."""
  a = jnp.array([[1.0, 2.0, jnp.inf], [3.0, jnp.nan, 4.0]])
  b = jnp.array([[2.0, 1.0, 5.0], [1.0, 1.0, 1.0]])
  w = jnp.array([[True, True, False], [True, False, True]])
  an, bn = np.where(w, np.asarray(a), 0), np.where(w, np.asarray(b), 0)
  na, nb = np.linalg.norm(an, axis=1, keepdims=True), np.linalg.norm(bn, axis=1, keepdims=True)
  cos = np.sum(an * bn, axis=1, keepdims=True) / (na * nb)
  for f, sign in ((losses.cosine_similarity, 1), (losses.cosine_distance, -1)):
    np.testing.assert_allclose(f(a, b, where=w), (1 - sign) / 2 + sign * cos[:, 0], rtol=1e-6)
    g_a, g_b = _finite_grad(lambda a, b: f(a, b, where=w).sum(), a, b)
    np.testing.assert_allclose(g_a, sign * (bn / (na * nb) - cos * an / na**2), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_b, sign * (an / (na * nb) - cos * bn / nb**2), rtol=1e-5, atol=1e-7)


def test_kl_zero_targets():
  lp = jnp.log(jnp.array([0.5, 0.0, 0.5]))
  t = jnp.array([0.5, 0.0, 0.5])
  assert losses.kl_divergence(lp, t) == 0
  assert losses.kl_divergence_with_log_targets(lp, lp) == 0
  g = _finite_grad(lambda t: losses.kl_divergence(jnp.log(jnp.array([0.5, 0.2, 0.3])), t), t)[0]
  np.testing.assert_allclose(g[np.array([0, 2])], [1 + math.log(1), 1 + math.log(0.5 / 0.3)], rtol=1e-6)
  _finite_grad(lambda a, b: losses.kl_divergence_with_log_targets(a, b), lp.at[1].set(-2.0), lp)
  assert np.isnan(optax.losses.kl_divergence(lp, t))


def test_kl_of_one_hot_targets_makes_no_infinity_under_debug_infs():
  """0 log 0 was taken as 0 * (-inf) with the -inf replaced: an inf made at every zero
  target, so each eager call on a one-hot label raised under jax_debug_infs (optax's did
  not). Values and gradients (log t + 1 - log p; -log p at t = 0) against numpy."""
  lp = jax.nn.log_softmax(jnp.array([[2.0, -1.0, 0.5], [0.1, 0.2, -3.0]]))
  t = jnp.array([[0.0, 1.0, 0.0], [0.25, 0.0, 0.75]])
  lp_, t_ = np.asarray(lp, np.float64), np.asarray(t, np.float64)
  t_log_t = t_ * np.log(np.where(t_ > 0, t_, 1))
  kl = np.sum(t_log_t - t_ * lp_, axis=-1)
  d_t = np.where(t_ > 0, np.log(np.where(t_ > 0, t_, 1)) + 1, 0) - lp_
  with jax.debug_infs(True), jax.debug_nans(True):  # eagerly: each operation is checked
    for f, value, extra in ((losses.kl_divergence, kl, 0),
                            (losses.generalized_kl_divergence, kl + np.sum(np.exp(lp_) - t_, -1), -1)):
      np.testing.assert_allclose(f(lp, t), value, rtol=1e-6)
      np.testing.assert_allclose(jax.grad(lambda t: f(lp, t).sum())(t), d_t + extra, rtol=1e-6)


def test_focal_loss_of_binary_labels_makes_no_infinity_under_debug_infs():
  """The shift that keeps the focal weight's second derivative finite took log(1 - y)
  and log(y): -inf at every binary label, raised under jax_debug_infs at each eager call."""
  x, y = np.array([0.5, -1.0, 3.0, -2.0]), np.array([1.0, 0.0, 1.0, 1.0])
  p = 1 / (1 + np.exp(-x))
  p_t = np.where(y == 1, p, 1 - p)
  with jax.debug_infs(True), jax.debug_nans(True):  # eagerly: each operation is checked
    got = losses.sigmoid_focal_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
  np.testing.assert_allclose(got, -np.log(p_t) * (1 - p_t) ** 2, rtol=1e-6)


def test_kl_where_leaves_out_infinite_and_nan_log_predictions():
  """A log prediction of -inf or NaN left out by where (a class masked in the model too)
  reaches neither the value nor any gradient: its target's derivative, log t + 1 - log p,
  was inf or NaN there, times its zero cotangent NaN (optax too); in a symmetric KL the
  targets are a model's output, and the NaN reached its parameters."""
  lp = jnp.array([[np.log(0.5), np.log(0.5), -jnp.inf], [np.log(0.2), jnp.nan, np.log(0.8)]])
  t = jnp.array([[0.5, 0.25, 0.25], [0.1, 0.3, 0.6]])
  w = jnp.array([[True, True, False], [True, False, True]])
  clean = jnp.where(w, lp, -1.0)  # the same losses, as nothing left out is inf or NaN
  for f, targets in ((losses.kl_divergence, t), (losses.generalized_kl_divergence, t),
                     (losses.kl_divergence_with_log_targets, jnp.log(t))):
    np.testing.assert_allclose(f(lp, targets, where=w), f(clean, targets, where=w), rtol=1e-6)
    grads = _finite_grad(lambda a, b: f(a, b, where=w).sum(), lp, targets)
    want = jax.grad(lambda a, b: f(a, b, where=w).sum(), argnums=(0, 1))(clean, targets)
    for g, g_want in zip(grads, want):
      np.testing.assert_allclose(g, g_want, rtol=1e-6)
      np.testing.assert_array_equal(np.asarray(g)[~np.asarray(w)], 0)


def test_half_squares_do_not_overflow_before_halving():
  """0.5 * e^2 rounded e^2 first: float16 errors in [256, 362) gave inf for a loss that
  float16 holds (l2_loss(300) = 45000), and float32 ones from 1.9e19 on."""
  e16 = jnp.array([300.0, 361.0, -0.5], jnp.float16)
  want16 = (0.5 * np.asarray(e16, np.float64) ** 2).astype(np.float16)  # rounded once
  np.testing.assert_array_equal(losses.l2_loss(e16), want16)
  np.testing.assert_array_equal(losses.huber_loss(e16, delta=1000.0), want16)
  e32 = jnp.array([2e19, -2.5e19], jnp.float32)
  want32 = 0.5 * np.asarray(e32, np.float64) ** 2
  np.testing.assert_allclose(losses.l2_loss(e32, jnp.zeros(2)), want32, rtol=1e-7)
  np.testing.assert_allclose(losses.huber_loss(e32, delta=1e20), want32, rtol=1e-7)


def test_kl_with_log_targets_whose_exp_underflows():
  """A log target below float32's least exp (-104) next to a -inf log prediction gave
  0 * inf = NaN (optax too), value and gradient; it contributes 0, as the target it rounds
  to does in kl_divergence."""
  lp = jnp.array([0.0, -jnp.inf, -1.0])
  lt = jnp.array([0.0, -200.0, -120.0])
  got = losses.kl_divergence_with_log_targets(lp, lt)
  assert got == losses.kl_divergence(lp, jnp.exp(lt)) == 0
  g_lp, g_lt = _finite_grad(losses.kl_divergence_with_log_targets, lp, lt)
  np.testing.assert_array_equal(g_lp, [-1, 0, 0])
  np.testing.assert_array_equal(g_lt, [1, 0, 0])


def test_log_cosh_precision():
  x = jnp.array([1e-4, 1e-3, 0.1, 14.9, 15.1, 80.0, 1e4], jnp.float32)
  want = [5e-9 - 1e-16 / 12, 5e-7 - 1e-12 / 12, math.log(math.cosh(0.1)),
          math.log(math.cosh(14.9)), math.log(math.cosh(15.1)), 80 - math.log(2), 1e4 - math.log(2)]
  np.testing.assert_allclose(losses.log_cosh(x), want, rtol=1e-6)
  g = _finite_grad(lambda x: losses.log_cosh(x).sum(), x)[0]
  np.testing.assert_allclose(g, np.tanh(np.asarray(x, np.float64)), rtol=1e-6)
  assert optax.losses.log_cosh(x)[0] == 0  # optax loses it to cancellation
  # The second derivative, sech^2 e, relative to rounding: from |e| near 8 on, the form
  # log1p(2 sinh^2(e/2)) gave cancellation noise near 1e-7 (negative at 10).
  x = jnp.array([0.5, 0.99, 1.0, 1.01, 3.0, 8.0, 10.0, 14.0, 14.99, 15.01, 30.0], jnp.float32)
  h = _jit(jax.vmap(jax.grad(jax.grad(losses.log_cosh))))(x)
  np.testing.assert_allclose(h, 1 / np.cosh(np.asarray(x, np.float64)) ** 2, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_inputs_keep_dtype_and_float32_accuracy(dtype):
  rng = np.random.default_rng(2)
  x = jnp.asarray(_r(rng, 4, 50, scale=4.0), dtype)
  y = jnp.asarray(rng.integers(0, 50, 4))
  got = _jit(losses.softmax_cross_entropy_with_integer_labels)(x, y)
  assert got.dtype == dtype
  want = ref_int_ce(np.asarray(x, np.float64), np.asarray(y))
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=float(jnp.finfo(dtype).eps))
  # A Fenchel-Young loss is a difference of two large terms (logsumexp and <y, x>, near 100
  # here): computed in the 16-bit dtype it lost 0.2 of a loss of 2.7 in bfloat16.
  far = (x.astype(jnp.float32) + 100).astype(dtype)
  want = ref_int_ce(np.asarray(far, np.float64), np.asarray(y))
  fy_loss = losses.make_fenchel_young_loss(jax.nn.logsumexp)
  got = _jit(fy_loss)(far, jax.nn.one_hot(y, 50, dtype=dtype))
  assert got.dtype == dtype
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=float(jnp.finfo(dtype).eps))
  for fn, args in [(losses.softmax_cross_entropy, (x, jax.nn.one_hot(y, 50, dtype=dtype))),
                   (losses.sigmoid_binary_cross_entropy, (x, jnp.zeros_like(x))),
                   (losses.log_cosh, (x,)), (losses.cosine_similarity, (x, x)),
                   (losses.ctc_loss, (x[None], jnp.zeros((1, 4)), jnp.array([[1]]), jnp.zeros((1, 1))))]:
    assert jax.eval_shape(fn, *args).dtype == dtype


# ---------------------------------------------------------------- gradients


def _fd_check(f, x, eps=1e-6, rtol=1e-6):
  """jax.grad of a scalar function against central differences, in float64."""
  x = np.asarray(x, np.float64)
  g = np.asarray(_jit(jax.grad(f))(jnp.asarray(x)))
  steps = eps * np.eye(x.size).reshape((x.size,) + x.shape)
  values = np.asarray(_jit(jax.vmap(f))(jnp.asarray(np.concatenate([x + steps, x - steps]))))
  fd = ((values[:x.size] - values[x.size:]) / (2 * eps)).reshape(x.shape)
  np.testing.assert_allclose(g, fd, rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("name", [
    "huber_loss", "log_cosh", "cosine_similarity", "softmax_cross_entropy_axis0_where",
    "int_ce_axes", "sigmoid_focal_loss_alpha_gamma", "poly_loss_cross_entropy",
    "generalized_kl_divergence", "triplet_margin_loss", "ntxent", "multiclass_sparsemax_loss",
    "dice_loss_tversky_weights", "ctc_loss"])
def test_gradient_matches_finite_differences(name):
  case = BY_ID[name]
  with jax.enable_x64(True):
    args, kwargs = case.make(np.random.default_rng(3))
    args = tuple(_convert(a, np.float64) for a in args)
    kwargs = {k: _convert(v, np.float64) for k, v in kwargs.items()}
    rest = args[1:]
    _fd_check(lambda x: jnp.sum(case.fn(x, *rest, **kwargs)), args[0])


def test_closed_form_gradients():
  rng = np.random.default_rng(4)
  x = jnp.asarray(_r(rng, 3, 5), jnp.float32)
  y = jnp.asarray(_dist(rng, 3, 5), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, 3))
  p = np.exp(np_log_softmax(np.asarray(x, np.float64)))
  g = _jit(jax.grad(lambda x: losses.softmax_cross_entropy(x, y).sum()))(x)
  np.testing.assert_allclose(g, p - np.asarray(y), atol=1e-6)
  g = _jit(jax.grad(lambda x: losses.softmax_cross_entropy_with_integer_labels(x, labels).sum()))(x)
  np.testing.assert_allclose(g, p - np.eye(5)[labels], atol=1e-6)
  g = _jit(jax.grad(lambda x: losses.sigmoid_binary_cross_entropy(x, y).sum()))(x)
  np.testing.assert_allclose(g, 1 / (1 + np.exp(-np.asarray(x, np.float64))) - np.asarray(y), atol=1e-6)
  # Focal loss, with respect to binary and soft labels: l = a_t ce u^gamma with
  # u = 1 - p_t = (1 - y) p + y (1 - p), so dl/dy = (2 alpha - 1) ce u^gamma
  # + a_t (-x u^gamma + ce gamma u^(gamma - 1) (1 - 2p)). (At y = 0 and 1 the last term
  # was lost, as optax loses it.)
  xf = np.array([-2.0, 0.3, 3.0] * 3)
  yf = np.repeat([0.0, 0.3, 1.0], 3)
  p = 1 / (1 + np.exp(-xf))
  ce, u = ref_bce(xf, yf), (1 - yf) * p + yf * (1 - p)
  for alpha, gamma in ((None, 2.0), (0.25, 0.5)):
    if alpha is None:
      a_t, da_t = 1.0, 0.0
    else:
      a_t, da_t = alpha * yf + (1 - alpha) * (1 - yf), 2 * alpha - 1
    want = (da_t * ce * u**gamma
            + a_t * (-xf * u**gamma + ce * gamma * u ** (gamma - 1) * (1 - 2 * p)))
    focal = lambda y: losses.sigmoid_focal_loss(  # noqa: E731
        jnp.asarray(xf, jnp.float32), y, alpha=alpha, gamma=gamma).sum()
    g = _jit(jax.grad(focal))(jnp.asarray(yf, jnp.float32))
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)
  # Sparsemax: the gradient is sparsemax(s) - e_y.
  g = _jit(jax.grad(lambda s: losses.multiclass_sparsemax_loss(s, labels).sum()))(x)
  want = np.stack([np_sparsemax(row) for row in np.asarray(x, np.float64)]) - np.eye(5)[labels]
  np.testing.assert_allclose(g, want, atol=1e-5)


# ---------------------------------------------------------- other behaviour


def test_convex_kl_divergence_warns_and_equals_generalized():
  lp, t = jnp.log(jnp.array([0.2, 0.8])), jnp.array([0.5, 1.0])
  with pytest.warns(DeprecationWarning, match="generalized_kl_divergence"):
    got = losses.convex_kl_divergence(lp, t)
  assert got == losses.generalized_kl_divergence(lp, t)


def test_ctc_forward_probs_shapes_and_padding():
  rng = np.random.default_rng(5)
  logits = jnp.asarray(_r(rng, 2, 5, 4), jnp.float32)
  labels = jnp.array([[1, 2, 3], [3, 3, 0]])
  label_pad = jnp.array([[0.0, 0, 0], [0, 0, 1]])
  logit_pad = jnp.array([[0.0, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
  loss, phi, emit = losses.ctc_loss_with_forward_probs(logits, logit_pad, labels, label_pad)
  assert phi.shape == (5, 2, 4) and emit.shape == (5, 2, 3)
  np.testing.assert_allclose(loss, ref_ctc(np.asarray(logits, np.float64), np.asarray(logit_pad),
                                           np.asarray(labels), np.asarray(label_pad)), rtol=1e-5)
  # Padded frames change nothing: the loss equals the loss of the cut sequence.
  cut = losses.ctc_loss(logits[1:, :4], jnp.zeros((1, 4)), labels[1:, :2], jnp.zeros((1, 2)))
  np.testing.assert_allclose(loss[1], cut[0], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_ctc_16_bit_paddings(dtype):
  """Paddings in a 16-bit dtype (a batch cast as a whole) count exactly past 256 labels."""
  rng = np.random.default_rng(12)
  logits = jnp.asarray(_r(rng, 2, 4, 3), jnp.float32)
  labels = jnp.ones((2, 3001), jnp.int32).at[:, 1].set(2)
  label_pad = np.ones((2, 3001))
  label_pad[0, :1] = label_pad[1, :2] = 0  # 3000 and 2999 padded labels: "1" and "12"
  want = ref_ctc(np.asarray(logits, np.float64), np.zeros((2, 4)), np.asarray(labels[:, :2]),
                 label_pad[:, :2])
  got = losses.ctc_loss(logits, jnp.zeros((2, 4), dtype), labels, jnp.asarray(label_pad, dtype))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ctc_label_that_names_no_class_or_is_the_blank_is_nan():
  """A real (unpadded) label past the last class had a zero one-hot, log probability 0: it was
  emitted for free, a loss below the real labels' (optax too); the blank as a label gave a
  finite loss. Both are now NaN with gradient 0. Padding may hold anything; a negative label
  counts from the end, a repeat of its class included."""
  logits = jnp.broadcast_to(jnp.array([[0.3, -0.2, 0.9, 0.1]] * 5), (6, 5, 4))
  labels = jnp.array([[1, 3], [1, 4], [1, 0], [1, -5], [1, 7], [3, -1]])
  pad = jnp.array([[0, 0], [0, 0], [0, 0], [0, 0], [0, 1], [0, 0]], jnp.float32)
  f = _jit(lambda x, y, p: (losses.ctc_loss(x, jnp.zeros((6, 5)), y, p),
                            jax.grad(lambda x: losses.ctc_loss(x, jnp.zeros((6, 5)), y, p).sum())(x)))
  got, g = map(np.asarray, f(logits, labels, pad))
  want, g_want = map(np.asarray, f(logits, jnp.array([[1, 3], [1, 1], [1, 1], [1, 1], [1, 9],
                                                      [3, 3]]), pad))
  ok, bad = [0, 4, 5], [1, 2, 3]
  np.testing.assert_array_equal(got[ok], want[ok])
  np.testing.assert_array_equal(g[ok], g_want[ok])
  assert np.all(np.isnan(got[bad]))
  np.testing.assert_array_equal(g[bad], 0)
  # The forward probabilities of a bad sequence are NaN too (they were finite, for a label
  # of probability 1); the others' are those of the loss computed without it.
  _, *alphas = losses.ctc_loss_with_forward_probs(logits, jnp.zeros((6, 5)), labels, pad)
  rows = jnp.array(ok)
  _, *alphas_want = losses.ctc_loss_with_forward_probs(logits[rows], jnp.zeros((3, 5)),
                                                       labels[rows], pad[rows])
  for alpha, alpha_want in zip(map(np.asarray, alphas), alphas_want):
    assert np.isnan(alpha[:, bad]).all()
    np.testing.assert_allclose(alpha[:, ok], alpha_want, rtol=1e-6)


def test_ctc_minus_inf_logits():
  """A class ruled out with -inf logits: each sequence's loss and gradient as with a finite
  logit far below (optax and the one-hot product gave NaN for the whole batch)."""
  rng = np.random.default_rng(10)
  logits = jnp.asarray(_r(rng, 3, 4, 3), jnp.float32).at[:, :, 2].set(-jnp.inf)
  logit_pad = jnp.array([[0.0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
  labels = jnp.array([[1, 1], [1, 0], [1, 2]])  # the last uses the ruled-out class
  label_pad = jnp.array([[0.0, 0], [0, 1], [0, 0]])
  got = losses.ctc_loss(logits, logit_pad, labels, label_pad)
  want = ref_ctc(np.asarray(logits, np.float64), np.asarray(logit_pad), np.asarray(labels),
                 np.asarray(label_pad))
  np.testing.assert_allclose(got[:2], want[:2], rtol=1e-5)
  assert want[2] == np.inf and 5e4 < got[2] < np.inf  # an impossible alignment: -log_epsilon
  far = logits.at[:, :, 2].set(-1e9)
  np.testing.assert_allclose(got[:2], losses.ctc_loss(far, logit_pad, labels, label_pad)[:2],
                             rtol=1e-6)
  grad = lambda x: jax.grad(lambda x: losses.ctc_loss(x, logit_pad, labels, label_pad).sum())(x)
  g = _finite_grad(lambda x: losses.ctc_loss(x, logit_pad, labels, label_pad).sum(), logits)[0]
  np.testing.assert_allclose(g[:2], grad(far)[:2], atol=1e-6)  # the last: finite, no more
  np.testing.assert_array_equal(g[:, :, 2], 0)


def test_ntxent_small_loss_is_accurate():
  """Near-converged pairs: log p = s_ij - log(e^s_ij + sum e^s_ik) cancelled near s_ij ~ 14,
  leaving a relative error near 1e-4 in a loss near 3e-5."""
  rng = np.random.default_rng(11)
  x = _r(rng, 8, 16)
  x[4:] = x[:4] + 0.05 * _r(rng, 4, 16)
  labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
  want = ref_ntxent(np.asarray(jnp.asarray(x, jnp.float32), np.float64), labels)
  assert 1e-5 < want < 1e-4
  got = _jit(losses.ntxent)(jnp.asarray(x, jnp.float32), jnp.asarray(labels))
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_ntxent_16_bit_small_embeddings(dtype):
  """16-bit embeddings give the float32 loss and gradient of the same values: the least
  squared norm was the input dtype's eps, and bfloat16's (8e-3) shrank the similarities of
  embeddings with norms below 0.09 (5.97 for 8.06 at norm 0.07, the gradient off by 56%)."""
  rng = np.random.default_rng(13)
  x = jnp.asarray(_r(rng, 6, 8, scale=0.02), dtype)
  labels = jnp.array([0, 1, 2, 0, 1, 2])
  x32 = x.astype(jnp.float32)
  want = ref_ntxent(np.asarray(x32, np.float64), np.asarray(labels), temperature=0.5)
  got = losses.ntxent(x, labels, 0.5)
  assert got.dtype == dtype
  np.testing.assert_allclose(float(got), want, rtol=float(jnp.finfo(dtype).eps))
  grad = lambda x: jax.grad(lambda x: losses.ntxent(x, labels, 0.5).astype(jnp.float32))(x)  # noqa: E731
  np.testing.assert_allclose(np.asarray(grad(x), np.float64), grad(x32), rtol=0.02, atol=1e-3)


def test_triplet_zero_differences_have_finite_grads():
  """|u_i - v_i|^q with q < 1 has an infinite derivative at a zero difference, and the root
  (sum + eps)^(1/q) one at distance 0 with eps=0: times abs's 0 there, both gave NaN for
  the whole batch (a loss of 0 included). Each takes the subgradient 0 there."""
  a = jnp.array([[0.0, 1.0], [1.0, 2.0]])
  p = jnp.array([[0.0, 2.0], [1.0, 2.0]])
  n = jnp.array([[1.0, 3.0], [3.0, 2.0]])
  f = losses.triplet_margin_loss
  r2 = math.sqrt(2)
  want = [(1 + 1e-6) ** 2 - (1 + r2) ** 2 + 10, 1e-12 - (r2 + 1e-6) ** 2 + 10]
  np.testing.assert_allclose(f(a, p, n, norm_degree=0.5, margin=10.0), want, rtol=1e-6)
  ga, _, _ = _finite_grad(lambda a, p, n: f(a, p, n, norm_degree=0.5, margin=10.0).sum(), a, p, n)
  np.testing.assert_allclose(ga, [[1 + r2, (1 + r2) / r2 - 1], [1, 0]], rtol=1e-5)
  g = _finite_grad(lambda a, p, n: f(a, p, n, norm_degree=0.5).sum(), a, p, n)
  np.testing.assert_array_equal(np.asarray(g), 0)  # both losses are 0: flat there
  # Distance 0 with eps=0: the other terms' gradients are kept.
  ga, _, gn = _finite_grad(lambda a, p, n: f(a, p, n, eps=0.0, margin=3.0).sum(), a, p, n)
  np.testing.assert_allclose(ga[1], [1, 0], rtol=1e-6)
  np.testing.assert_allclose(gn[1], [-1, 0], rtol=1e-6)


def test_integer_labels_axis_forms():
  """An out-of-range axis raises instead of wrapping; NumPy integer axes are ints."""
  rng = np.random.default_rng(7)
  x = jnp.asarray(_r(rng, 3, 4, 5), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 15, 4))
  f = losses.softmax_cross_entropy_with_integer_labels
  want = ref_int_ce(np.asarray(x, np.float64), np.asarray(labels), axis=(2, 0))
  np.testing.assert_allclose(f(x, labels, axis=(-1, -3)), want, rtol=1e-5)
  np.testing.assert_allclose(f(x, labels, axis=(np.int64(2), 0)), want, rtol=1e-5)
  labels0 = jnp.asarray(rng.integers(0, 3, (4, 5)))
  np.testing.assert_allclose(f(x, labels0, axis=np.int64(-3)), f(x, labels0, axis=0))


def test_sparsemax_loss_boolean_labels():
  x = jnp.array([2.0, 0.0, -3.0, 0.5])
  labels = jnp.array([True, True, False, False])
  want = ref_sparsemax_loss(np.asarray(x, np.float64), np.asarray(labels))
  np.testing.assert_allclose(losses.sparsemax_loss(x, labels), want, rtol=1e-6)
  np.testing.assert_allclose(losses.sparsemax_loss(x, labels.astype(jnp.int32)), want, rtol=1e-6)


def test_sparsemax_loss_infinite_logits():
  """A -inf logit with label 0 (a ruled-out class): loss 0, gradient 0, not NaN (optax: NaN)."""
  x = jnp.array([-jnp.inf, jnp.inf, -jnp.inf, jnp.inf, -1.0, 1.0, 0.3])
  labels = jnp.array([0, 1, 1, 0, 0, 0, 1])
  got = losses.sparsemax_loss(x, labels)
  np.testing.assert_allclose(got, [0, 0, np.inf, np.inf, 0, 1, 0.1225], rtol=1e-6)
  g = _finite_grad(lambda x: losses.sparsemax_loss(x, labels).sum(), x)[0]
  np.testing.assert_allclose(g, [0, 0, -1, 1, 0, 1, -0.35], rtol=1e-6)
  assert np.isnan(jax.grad(lambda x: optax.losses.sparsemax_loss(x, labels).sum())(x)[:4]).all()
  assert np.isnan(losses.sparsemax_loss(jnp.array([jnp.nan]), jnp.array([1])))[0]


def test_multiclass_sparsemax_loss_large_scores():
  """The loss ignores a common offset; float32 scores near 1e4 must not cancel."""
  rng = np.random.default_rng(8)
  base = _r(rng, 4, 6, scale=0.5)
  labels = rng.integers(0, 6, 4)
  for offset in (1e3, 1e4, -1e5):
    s = jnp.asarray(base + offset, jnp.float32)
    want = ref_mc_sparsemax(np.asarray(s, np.float64), labels)
    got = _jit(losses.multiclass_sparsemax_loss)(s, jnp.asarray(labels))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_multiclass_hinge_loss_large_scores():
  """The margin of 1 survives 16-bit scores whose rounding step is near 1 (s + 1 rounded
  it away; optax too)."""
  labels = jnp.array([1, 0])
  for dtype, offset in ((jnp.bfloat16, 296.0), (jnp.float16, 2000.0)):
    step = float(jnp.finfo(dtype).eps) * 2 ** math.floor(math.log2(offset))  # the rounding step
    s = jnp.asarray(offset + step * np.array([[2.0, 1.0, 0.0], [0.0, 0.0, -1.0]]), dtype)
    want = ref_mc_hinge(np.asarray(s, np.float64), np.asarray(labels))
    np.testing.assert_allclose(want, [step + 1, 1])
    for fn in (losses.multiclass_hinge_loss, _jit(losses.multiclass_hinge_loss)):
      got = fn(s, labels)
      assert got.dtype == dtype
      np.testing.assert_array_equal(np.asarray(got, np.float64), want)
    g = jax.grad(lambda s: losses.multiclass_hinge_loss(s, labels).astype(jnp.float32).sum())(s)
    np.testing.assert_array_equal(np.asarray(g, np.float64), [[1, -1, 0], [-1, 1, 0]])
  # Classes ruled out with -inf scores: a label among them costs inf.
  s = jnp.array([[-jnp.inf, -jnp.inf, 1.0], [0.0, -jnp.inf, 1.0]])
  np.testing.assert_array_equal(losses.multiclass_hinge_loss(s, jnp.array([1, 0])), [np.inf, 2])


@pytest.mark.parametrize("name", ["multiclass_hinge_loss", "multiclass_perceptron_loss"])
def test_multiclass_margin_losses_label_that_names_no_class_is_nan(name):
  """A label past the last class, below -num_classes, or a fraction gives NaN and gradient 0
  (optax read it as no class: a finite loss that trained the top score down); a negative
  label counts from the end, as in the other integer-label losses (optax: no class)."""
  fn = getattr(losses, name)
  s = jnp.array([[0.3, -0.2, 0.9]] * 7)
  f = _jit(lambda s, y: (fn(s, y), jax.grad(lambda s: fn(s, y).sum())(s)))
  got, g = map(np.asarray, f(s, jnp.array([0, 1, 3, 7, -1, -3, -4])))
  want, g_want = map(np.asarray, f(s, jnp.array([0, 1, 0, 0, 2, 0, 0])))
  ok, bad = [0, 1, 4, 5], [2, 3, 6]
  np.testing.assert_array_equal(got[ok], want[ok])
  np.testing.assert_array_equal(g[ok], g_want[ok])
  assert np.all(np.isnan(got[bad]))
  np.testing.assert_array_equal(g[bad], 0)
  # Whole-number floats are class indices (as optax); a fraction names no class.
  got = np.asarray(_jit(fn)(s[:3], jnp.array([1.0, -1.0, 1.5])))
  np.testing.assert_array_equal(got[:2], want[[1, 4]])
  assert np.isnan(got[2])


def test_multiclass_sparsemax_loss_negative_labels_count_from_the_end():
  """As optax's (and integer-label cross entropy): label -1 is the last class, where the
  one-hot read it as no class, a label score of 0 and no -e_y in the gradient."""
  s = jnp.array([[0.3, -0.2, 0.9, 0.5], [1.0, 0.0, 2.0, -1.0]])
  f = jax.jit(losses.multiclass_sparsemax_loss)  # one compile a shape, not one an operation
  np.testing.assert_allclose(f(s, jnp.array([-1, -4])), f(s, jnp.array([3, 0])), rtol=1e-6)
  with jax.numpy_dtype_promotion("standard"):  # optax's projection mixes int and float
    want = jax.jit(optax.losses.multiclass_sparsemax_loss)(s, jnp.array([-1, -4]))
  np.testing.assert_allclose(f(s, jnp.array([-1, -4])), want, rtol=1e-6)
  # An int8 label with more classes than int8 holds.
  s200 = jnp.zeros((1, 200)).at[0, 199].set(1.0)
  np.testing.assert_array_equal(f(s200, jnp.array([-1], jnp.int8)), f(s200, jnp.array([199])))


def test_multiclass_sparsemax_loss_label_that_names_no_class_is_nan():
  """A label past the last class, below -num_classes, or a fraction gives NaN and gradient 0:
  it was read as no class (a label score of 0, a plausible loss; optax clamps it to the
  nearest class)."""
  s = jnp.array([[0.3, -0.2, 0.9]] * 5)
  f = _jit(lambda s, y: (losses.multiclass_sparsemax_loss(s, y),
                         jax.grad(lambda s: losses.multiclass_sparsemax_loss(s, y).sum())(s)))
  got, g = map(np.asarray, f(s, jnp.array([1, 3, 9, -4, -3])))
  want, g_want = map(np.asarray, f(s, jnp.array([1, 0, 0, 0, 0])))
  np.testing.assert_array_equal(got[[0, 4]], want[[0, 4]])
  np.testing.assert_array_equal(g[[0, 4]], g_want[[0, 4]])
  assert np.all(np.isnan(got[1:4]))
  np.testing.assert_array_equal(g[1:4], 0)
  got = np.asarray(_jit(losses.multiclass_sparsemax_loss)(s[:2], jnp.array([1.0, 0.5])))
  np.testing.assert_array_equal(got[0], want[0])
  assert np.isnan(got[1])


def test_multiclass_sparsemax_loss_spread_scores():
  """Scores of +-1e4 with the label at the bottom: sparsemax is exact thirds, the loss 2e4 + 1/3."""
  s = jnp.array([[1e4, 1e4, 1e4, -1e4, -1e4]], jnp.float32)
  labels = jnp.array([3])
  np.testing.assert_allclose(losses.multiclass_sparsemax_loss(s, labels), [2e4 + 1 / 3], rtol=1e-6)
  g = jax.grad(lambda s: losses.multiclass_sparsemax_loss(s, labels).sum())(s)
  np.testing.assert_allclose(g, [[1 / 3, 1 / 3, 1 / 3, -1, 0]], rtol=1e-6, atol=1e-7)


def test_multiclass_sparsemax_loss_minus_inf_score_has_finite_grads():
  # A class ruled out with a -inf score: p = 0 there, and 0 * -inf must not reach the gradient.
  s = jnp.array([[0.0, -jnp.inf, 1.0]])
  labels = jnp.array([0])
  np.testing.assert_allclose(losses.multiclass_sparsemax_loss(s, labels), [1.0])
  g = jax.grad(lambda s: losses.multiclass_sparsemax_loss(s, labels).sum())(s)
  with jax.numpy_dtype_promotion("standard"):  # optax is not strict-clean
    want = jax.grad(lambda s: optax.losses.multiclass_sparsemax_loss(s, labels).sum())(s)
  np.testing.assert_allclose(want, [[-1.0, 0.0, 1.0]])
  np.testing.assert_allclose(g, want)


def test_multiclass_sparsemax_loss_scores_masked_with_the_dtype_min():
  """A class masked with finfo.min, as with -inf: the projection's cumulative sum was -inf
  (a loss of 5.89 for 6.80, or NaN when the top score was near the max)."""
  low = float(jnp.finfo(jnp.float32).min)
  s = jnp.array([[1.25, low, low, -5.55, -100.0, -1.11], [0.6, 0.78, -0.73, -0.66, -0.79, -low]])
  labels = jnp.array([3, 2])
  want = [1.25 + 5.55, -low + 0.73]
  got = losses.multiclass_sparsemax_loss(s, labels)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  g = _finite_grad(lambda s: losses.multiclass_sparsemax_loss(s, labels).sum(), s)[0]
  np.testing.assert_array_equal(g, [[1, 0, 0, -1, 0, 0], [0, 0, -1, 0, 0, 1]])
  minus_inf = jnp.where(s == low, -jnp.inf, s)
  np.testing.assert_array_equal(got[0], losses.multiclass_sparsemax_loss(minus_inf, labels)[0])


def test_dice_probability_inputs():
  """apply_softmax/apply_sigmoid=False take probabilities: one sigmoid channel, or a 16-bit softmax."""
  rng = np.random.default_rng(9)
  probs = rng.random((2, 6))
  targets = (rng.random((2, 6)) < 0.5) * 1.0
  want = ref_dice(probs[..., None], targets[..., None], apply_softmax=False)
  got = losses.binary_dice_loss(jnp.asarray(probs, jnp.float32), jnp.asarray(targets, jnp.float32),
                                apply_sigmoid=False)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  logits = _r(rng, 2, 5, 7)
  onehot = _onehot(rng, 2, 5, 7)
  p16 = jax.nn.softmax(jnp.asarray(logits, jnp.float32)).astype(jnp.bfloat16)
  got = losses.dice_loss(p16, jnp.asarray(onehot, jnp.bfloat16), apply_softmax=False)
  want = ref_dice(np.asarray(p16, np.float64), onehot, apply_softmax=False)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2**-7)


def test_dice_smooth_zero_empty_class():
  """smooth=0 with a class in neither prediction nor target: loss 0 (the limit as smooth
  goes to 0) and gradient 0, where 0 / 0 was NaN (optax too) and made the batch's mean NaN."""
  p = jnp.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
  t = jnp.array([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
  f = lambda p: losses.dice_loss(p, t, smooth=0.0, apply_softmax=False, reduction="none")  # noqa: E731
  np.testing.assert_allclose(f(p), [[0.5, 1.0, 0.0]], rtol=1e-6)
  g = _finite_grad(lambda p: f(p).sum(), p)[0]
  np.testing.assert_array_equal(g[..., 2], 0)
  # alpha = 0: a false positive costs nothing, so a class absent from the target has loss 0.
  np.testing.assert_allclose(
      losses.dice_loss(p, t, smooth=0.0, alpha=0.0, beta=1.0, apply_softmax=False,
                       reduction="none"), [[0.5, 1.0, 0.0]], rtol=1e-6)
  # Binary: an empty prediction (probabilities, or -inf logits) of an empty target.
  zeros = jnp.zeros((2, 4))
  for x, sigmoid in ((zeros, False), (jnp.full((2, 4), -jnp.inf), True)):
    f = lambda x: losses.binary_dice_loss(x, zeros, smooth=0.0, apply_sigmoid=sigmoid)  # noqa: E731
    np.testing.assert_array_equal(f(x), [0, 0])
    np.testing.assert_array_equal(_finite_grad(lambda x: f(x).sum(), x)[0], 0)


def test_dice_mean_over_nothing_is_zero():
  """An empty batch, or no classes, has loss 0, where the mean over nothing was 0 / 0 =
  NaN (optax too); the generalized dice loss averages over the batch."""
  empty = jnp.zeros((0, 4, 3))
  assert losses.multiclass_generalized_dice_loss(empty, empty) == 0
  no_classes = jnp.zeros((2, 4, 0))
  assert losses.multiclass_generalized_dice_loss(no_classes, no_classes) == 0
  np.testing.assert_array_equal(losses.dice_loss(no_classes, no_classes), [0, 0])
  with jax.numpy_rank_promotion("allow"):  # optax's class weights take it
    assert np.isnan(optax.losses.multiclass_generalized_dice_loss(empty, empty))


def test_half_precision_results_are_rounded_once():
  """cosine_distance and generalized_kl_divergence take their difference before rounding."""
  a = jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], jnp.bfloat16)
  b = jnp.array([[1.0, 0.03125, 0.0], [1.0, 1.0, 0.0625]], jnp.bfloat16)
  want = 1 - ref_cosine(np.asarray(a, np.float64), np.asarray(b, np.float64))
  got = losses.cosine_distance(a, b)
  assert got.dtype == jnp.bfloat16 and np.all(want > 4e-4)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2**-8)
  # Terms of about 40 that nearly cancel to a divergence of about 0.05.
  lp = jnp.log(jnp.array([30.0, 12.0], jnp.bfloat16))
  t = jnp.array([32.0, 12.0], jnp.bfloat16)
  want = ref_gkl(np.asarray(lp, np.float64), np.asarray(t, np.float64))
  got = losses.generalized_kl_divergence(lp, t)
  assert got.dtype == jnp.bfloat16 and 0.05 < want < 1
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2**-8)


def test_dice_probabilities_check_is_eager_only():
  p = jnp.full((1, 4, 3), 0.5)
  t = jnp.zeros((1, 4, 3)).at[..., 0].set(1.0)
  with pytest.raises(ValueError, match="dice_loss: with apply_softmax=False, predictions must sum to 1"):
    losses.dice_loss(p, t, apply_softmax=False)
  jax.jit(functools.partial(losses.dice_loss, apply_softmax=False))(p, t)  # no check when traced


def test_where_of_lower_rank_applies_to_rows():
  """A where that broadcasts to the result masks whole rows; integer labels took it only
  with the result's full rank ("axis 2 is out of bounds for array of dimension 2")."""
  rng = np.random.default_rng(8)
  x = jnp.asarray(_r(rng, 2, 3, 4), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, (2, 3)))
  where = jnp.array([True, False, True])
  f = losses.softmax_cross_entropy_with_integer_labels
  want = np.where(where, ref_int_ce(np.asarray(x, np.float64), np.asarray(labels)), 0)
  np.testing.assert_allclose(f(x, labels, where=where), want, rtol=1e-5)
  np.testing.assert_allclose(f(x, labels, where=jnp.broadcast_to(where, (2, 3))), want, rtol=1e-5)


def test_vmap_and_grad_compose():
  rng = np.random.default_rng(6)
  x = jnp.asarray(_r(rng, 4, 3, 5), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, (4, 3)))
  f = losses.softmax_cross_entropy_with_integer_labels
  # Jitted, one program: a vmap is a trace, eager or not (run eagerly, some 40 kernels).
  per_batch, whole, grad = _jit(lambda x, y: (
      jax.vmap(f)(x, y), f(x, y), jax.grad(lambda x: jnp.sum(jax.vmap(f)(x, y)))(x)))(x, labels)
  np.testing.assert_allclose(per_batch, whole, rtol=1e-6)
  # The gradient through the vmap is each row's softmax minus its one-hot label.
  z = np.asarray(x, np.float64)
  softmax = np.exp(z - z.max(-1, keepdims=True))
  softmax /= softmax.sum(-1, keepdims=True)
  np.testing.assert_allclose(grad, softmax - np.eye(5)[np.asarray(labels)], rtol=1e-5, atol=1e-6)


ERRORS = [
    # Arguments that do not broadcast: the loss and both arguments are named (jax's own
    # error, "and got incompatible shapes", names neither).
    (lambda: losses.softmax_cross_entropy(jnp.zeros((4, 5)), jnp.zeros((4, 3))), ValueError,
     r"softmax_cross_entropy: logits and labels must broadcast together, got shapes "
     r"\(4, 5\) and \(4, 3\)"),
    (lambda: losses.kl_divergence(jnp.zeros((4, 5)), jnp.zeros((4, 3))), ValueError,
     r"kl_divergence: log_predictions and targets must broadcast together"),
    (lambda: losses.generalized_kl_divergence(jnp.zeros((4, 5)), jnp.zeros((4, 3))), ValueError,
     r"generalized_kl_divergence: log_predictions and targets must broadcast together"),
    (lambda: losses.ranking_softmax_loss(jnp.zeros((4, 5)), jnp.zeros((4, 3))), ValueError,
     r"ranking_softmax_loss: logits and labels must broadcast together"),
    (lambda: losses.cosine_distance(jnp.zeros((4, 5)), jnp.zeros((4, 3))), ValueError,
     r"cosine_distance: predictions and targets must broadcast together"),
    (lambda: losses.triplet_margin_loss(jnp.zeros((4, 5)), jnp.zeros((4, 5)), jnp.zeros((4, 3))),
     ValueError, r"triplet_margin_loss: anchors and negatives must broadcast together"),
    (lambda: losses.multiclass_hinge_loss(jnp.zeros((4, 5)), jnp.zeros(3, jnp.int32)), ValueError,
     r"multiclass_hinge_loss: labels must have the shape of scores without its class axis, "
     r"\(4,\), got \(3,\)"),
    (lambda: losses.multiclass_perceptron_loss(jnp.zeros((4, 5)), jnp.zeros(3, jnp.int32)),
     ValueError, r"multiclass_perceptron_loss: labels must have the shape of scores"),
    (lambda: losses.multiclass_sparsemax_loss(jnp.zeros((4, 5)), jnp.zeros(3, jnp.int32)),
     ValueError, r"multiclass_sparsemax_loss: labels must have the shape of scores"),
    # No class for a label to pick: jax's "zero-size array to reduction operation max which
    # has no identity" (optax too), or inf for integer cross entropy (optax: -inf).
    (lambda: losses.multiclass_hinge_loss(jnp.zeros((2, 0)), jnp.zeros(2, jnp.int32)), ValueError,
     r"^multiclass_hinge_loss: scores must have at least one class for a label to pick, got "
     r"shape \(2, 0\)"),
    (lambda: losses.multiclass_perceptron_loss(jnp.zeros((2, 0)), jnp.zeros(2, jnp.int32)),
     ValueError, r"^multiclass_perceptron_loss: scores must have at least one class"),
    (lambda: losses.multiclass_sparsemax_loss(jnp.zeros((2, 0)), jnp.zeros(2, jnp.int32)),
     ValueError, r"^multiclass_sparsemax_loss: scores must have at least one class"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(
        jnp.zeros((2, 3, 0)), jnp.zeros(2, jnp.int32), axis=(1, 2)), ValueError,
     r"^softmax_cross_entropy_with_integer_labels: logits must have at least one class for a "
     r"label to pick, got shape \(2, 3, 0\)"),
    (lambda: losses.dice_loss(jnp.zeros((2, 4, 5)), jnp.zeros((2, 4, 5)),
                              class_weights=jnp.ones(3)),
     ValueError, r"dice_loss: class_weights and the per-class losses must broadcast together"),
    (lambda: losses.softmax_cross_entropy(jnp.array([1, 2]), jnp.array([1.0, 0.0])), TypeError,
     r"softmax_cross_entropy: logits must have a floating dtype, got int32"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((2, 3)), jnp.array([0.0, 1.0])),
     TypeError, r"softmax_cross_entropy_with_integer_labels: labels must have an integer dtype"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((2, 3)), jnp.array([0, 1]),
                                                              axis=[1]),
     TypeError, r"axis must be an int or a tuple of ints"),
    (lambda: losses.squared_error(jnp.zeros(3), jnp.zeros(4)), ValueError,
     r"squared_error: predictions and targets must have the same shape, got \(3,\) and \(4,\)"),
    # jax's own errors ("and got incompatible shapes for broadcasting") named neither the
    # loss nor its arguments.
    (lambda: losses.sigmoid_binary_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((4, 5))),
     ValueError, r"^sigmoid_binary_cross_entropy: logits and labels must broadcast together, "
                 r"got shapes \(2, 3\) and \(4, 5\)"),
    (lambda: losses.sigmoid_focal_loss(jnp.zeros((2, 3)), jnp.zeros((4, 5))), ValueError,
     r"^sigmoid_focal_loss: logits and labels must broadcast together"),
    (lambda: losses.poly_loss_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((4, 5))), ValueError,
     r"^poly_loss_cross_entropy: logits and labels must broadcast together"),
    (lambda: losses.hinge_loss(jnp.zeros((2, 3)), jnp.zeros((4, 5))), ValueError,
     r"^hinge_loss: predictor_outputs and targets must broadcast together"),
    (lambda: losses.kl_divergence_with_log_targets(jnp.zeros((2, 3)), jnp.zeros((4, 5))),
     ValueError, r"^kl_divergence_with_log_targets: log_predictions and log_targets must "
                 r"broadcast together"),
    (lambda: losses.sparsemax_loss(jnp.zeros((2, 3)), jnp.zeros((4, 5))), ValueError,
     r"^sparsemax_loss: logits and labels must broadcast together"),
    # l2_loss's checks named squared_error, which it calls.
    (lambda: losses.l2_loss(jnp.zeros(3), jnp.zeros(4)), ValueError,
     r"^l2_loss: predictions and targets must have the same shape, got \(3,\) and \(4,\)"),
    (lambda: losses.l2_loss(jnp.zeros(3, jnp.int32)), TypeError,
     r"^l2_loss: predictions must have a floating dtype, got int32"),
    (lambda: losses.perceptron_loss(jnp.zeros(3), jnp.zeros((3, 1))), ValueError,
     r"perceptron_loss: predictor_outputs and targets must have the same shape"),
    # An axis that is not an int: True summed over axis 1 without a word; a float or a
    # string failed in jax ("'float' object is not iterable", "unbound axis name").
    (lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 3)), True), TypeError,
     r"^softmax_cross_entropy: axis must be an int or a tuple of ints, got True"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((2, 3)), jnp.zeros(3, int),
                                                              axis=True), TypeError,
     r"^softmax_cross_entropy_with_integer_labels: axis must be an int .*got True"),
    (lambda: losses.kl_divergence(jnp.zeros((2, 3)), jnp.zeros((2, 3)), axis=(0, True)), TypeError,
     r"^kl_divergence: axis must be an int or a tuple of ints, got \(0, True\)"),
    (lambda: losses.cosine_distance(jnp.zeros((2, 3)), jnp.ones((2, 3)), axis="1"), TypeError,
     r"^cosine_distance: axis must be an int or a tuple of ints, got '1'"),
    (lambda: losses.triplet_margin_loss(jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.zeros((2, 2)),
                                        axis=1.0), TypeError, r"^triplet_margin_loss: axis must be"),
    (lambda: losses.smooth_labels(jnp.zeros((2, 3)), 0.1, axis=True), TypeError,
     r"^smooth_labels: axis must be"),
    (lambda: losses.poly_loss_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 3)), axis=True),
     TypeError, r"^poly_loss_cross_entropy: axis must be"),
    (lambda: losses.dice_loss(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 3)), axis=True), TypeError,
     r"^dice_loss: axis must be"),
    (lambda: losses.huber_loss(jnp.zeros(3), delta=0.0), HyperparameterError,
     r"huber_loss: delta must be in \(0, inf\), got 0.0"),
    # A string (a config's '1e-3') failed in jax ("Value '1' with dtype <U1 is not a valid
    # JAX array type"), naming no loss; a bool ran as 0 or 1.
    (lambda: losses.huber_loss(jnp.zeros(3), delta="1"), HyperparameterError,
     r"^huber_loss: delta must be a number in \(0, inf\), got '1' \(convert it with float"),
    (lambda: losses.huber_loss(jnp.zeros(3), delta=True), HyperparameterError,
     r"^huber_loss: delta must be a number in \(0, inf\), got True"),
    (lambda: losses.ntxent(jnp.zeros((4, 2)), jnp.zeros(4), temperature="0.1"),
     HyperparameterError, r"^ntxent: temperature must be a number in \(0, inf\), got '0.1'"),
    (lambda: losses.sigmoid_focal_loss(jnp.zeros(3), jnp.zeros(3), gamma=np.float32(-1.0)),
     HyperparameterError, r"^sigmoid_focal_loss: gamma must be in \[0, inf\)"),
    (lambda: losses.smooth_labels(jnp.zeros(3), 1.5), HyperparameterError,
     r"smooth_labels: alpha must be in \[0, 1\], got 1.5"),
    # A mask for 3 classes of 5 was summed over, silently: K = 3.
    (lambda: losses.smooth_labels(jnp.zeros((4, 5)), 0.1, where=jnp.ones(3, bool)), ValueError,
     r"smooth_labels: where must broadcast to the shape of labels, \(4, 5\), got \(3,\)"),
    (lambda: losses.sigmoid_focal_loss(jnp.zeros(3), jnp.zeros(3), gamma=-1.0), HyperparameterError,
     r"sigmoid_focal_loss: gamma must be in \[0, inf\), got -1.0"),
    (lambda: losses.sigmoid_focal_loss(jnp.zeros(3), jnp.zeros(3), alpha=2.0), HyperparameterError,
     r"sigmoid_focal_loss: alpha must be in \[0, 1\], got 2.0"),
    (lambda: losses.cosine_similarity(jnp.zeros(3), jnp.zeros(3), epsilon=-1.0), HyperparameterError,
     r"cosine_similarity: epsilon must be in \[0, inf\), got -1.0"),
    (lambda: losses.ntxent(jnp.zeros((4, 2)), jnp.zeros(4), temperature=0.0), HyperparameterError,
     r"ntxent: temperature must be in \(0, inf\), got 0.0"),
    (lambda: losses.ntxent(jnp.zeros((4, 2)), jnp.zeros(3)), ValueError,
     r"ntxent: embeddings must be \[batch, feature_dim\] and labels \[batch\]"),
    (lambda: losses.triplet_margin_loss(jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.zeros((2, 2)),
                                        norm_degree=0), HyperparameterError,
     r"triplet_margin_loss: norm_degree must be in \(0, inf\), got 0"),
    (lambda: losses.cosine_distance(jnp.zeros(3), jnp.zeros(3), epsilon=-1.0), HyperparameterError,
     r"cosine_distance: epsilon must be in \[0, inf\), got -1.0"),
    (lambda: losses.triplet_margin_loss(jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.zeros((2, 2)),
                                        eps=-1e-6), HyperparameterError,
     r"triplet_margin_loss: eps must be in \[0, inf\), got -1e-06"),
    # Unchecked, a NaN (or a sign slip) made every loss of the batch NaN, silently.
    (lambda: losses.triplet_margin_loss(jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.zeros((2, 2)),
                                        margin=float("nan")), HyperparameterError,
     r"^triplet_margin_loss: margin must be in \(-inf, inf\), got nan"),
    (lambda: losses.poly_loss_cross_entropy(jnp.zeros((2, 3)), jnp.eye(3)[:2], epsilon=float("nan")),
     HyperparameterError, r"^poly_loss_cross_entropy: epsilon must be in \(-inf, inf\), got nan"),
    (lambda: losses.dice_loss(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 3)), smooth=-1.0),
     HyperparameterError, r"^dice_loss: smooth must be in \[0, inf\), got -1.0"),
    (lambda: losses.dice_loss(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 3)), beta=float("nan")),
     HyperparameterError, r"^dice_loss: beta must be in \[0, inf\), got nan"),
    (lambda: losses.binary_dice_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), smooth=float("inf")),
     HyperparameterError, r"^binary_dice_loss: smooth must be a finite number in \[0, inf\)"),
    (lambda: losses.multiclass_generalized_dice_loss(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)),
                                                     smooth=-0.5),
     HyperparameterError, r"^multiclass_generalized_dice_loss: smooth must be in \[0, inf\)"),
    (lambda: losses.ctc_loss(jnp.zeros((2, 5, 3)), jnp.zeros((2, 5)), jnp.ones((2, 1), int),
                             jnp.zeros((2, 1)), log_epsilon=-float("inf")), HyperparameterError,
     r"^ctc_loss: log_epsilon must be a finite number in \(-inf, inf\), got -inf"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((2, 3)), jnp.array([0, 1]),
                                                              axis=2),
     ValueError, r"softmax_cross_entropy_with_integer_labels: axis 2 is out of bounds for logits of rank 2"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((2, 3, 4)), jnp.array([0, 1]),
                                                              axis=(1, -4)),
     ValueError, r"axis \(1, -4\) is out of bounds for logits of rank 3"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((2, 3, 4)), jnp.array([0, 1]),
                                                              axis=(1, -2)),
     ValueError, r"axis \(1, -2\) repeats an axis"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((2, 3)), jnp.array([0, 1, 2])),
     ValueError, r"labels must have the shape of logits without the class axis, \(2,\), got \(3,\)"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), int),
                                                              axis=(1, 2)),
     ValueError, r"labels must have the shape of logits without the class axis, \(2,\), got \(2, 3\)"),
    (lambda: losses.binary_dice_loss(jnp.array([[0.5, 1.5]]), jnp.array([[1.0, 0.0]]), apply_sigmoid=False),
     ValueError, r"^binary_dice_loss: with apply_sigmoid=False, single-channel predictions must be "
                 r"probabilities in \[0, 1\]; they range over \[0.500000, 1.500000\]"),
    # binary_dice_loss's and multiclass_generalized_dice_loss's checks named dice_loss (and
    # its apply_softmax), which they call.
    (lambda: losses.binary_dice_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4))), ValueError,
     r"^binary_dice_loss: predictions and targets must have the same shape"),
    (lambda: losses.multiclass_generalized_dice_loss(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)),
                                                     apply_softmax=False), ValueError,
     r"^multiclass_generalized_dice_loss: with apply_softmax=False, predictions must sum to 1"),
    (lambda: losses.dice_loss(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 3)), reduction="avg"), ValueError,
     r"dice_loss: reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"),
    (lambda: losses.dice_loss(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 4))), ValueError,
     r"dice_loss: predictions and targets must have the same shape"),
    (lambda: losses.dice_loss(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 3)),
                              class_weights=jnp.ones((1, 3))),
     ValueError, r"dice_loss: class_weights must have rank 1"),
    (lambda: losses.ctc_loss(jnp.zeros((2, 5)), jnp.zeros((2, 5)), jnp.zeros((2, 1), int),
                             jnp.zeros((2, 1))), ValueError,
     r"^ctc_loss: logits must have rank 3, got shape \(2, 5\)"),
    (lambda: losses.ctc_loss_with_forward_probs(jnp.zeros((2, 5)), jnp.zeros((2, 5)),
                                                jnp.zeros((2, 1), int), jnp.zeros((2, 1))),
     ValueError, r"^ctc_loss_with_forward_probs: logits must have rank 3, got shape \(2, 5\)"),
    # ctc_loss's and safe_softmax_cross_entropy's checks named the function they call.
    (lambda: losses.safe_softmax_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((4, 5))), ValueError,
     r"^safe_softmax_cross_entropy: logits and labels must broadcast together"),
    (lambda: losses.safe_softmax_cross_entropy(jnp.zeros(3, int), jnp.zeros(3)), TypeError,
     r"^safe_softmax_cross_entropy: logits must have a floating dtype, got int32"),
    (lambda: losses.ctc_loss(jnp.zeros((2, 5, 3)), jnp.zeros((2, 4)), jnp.zeros((2, 1), int),
                             jnp.zeros((2, 1))), ValueError,
     r"logit_paddings must have shape \(2, 5\)"),
    (lambda: losses.ctc_loss(jnp.zeros((2, 5, 3)), jnp.zeros((2, 5)), jnp.zeros((3, 1), int),
                             jnp.zeros((3, 1))), ValueError,
     r"labels must have batch size 2 \(as logits\), got 3"),
    (lambda: losses.ctc_loss(jnp.zeros((2, 5, 3)), jnp.zeros((2, 5)), jnp.zeros((2, 1), int),
                             jnp.zeros((2, 1)), blank_id=3), ValueError,
     r"blank_id must be an int in \[0, 3\), got 3"),
    # True ran as blank 1; 1.0 failed with "'float' object cannot be interpreted as an integer".
    (lambda: losses.ctc_loss(jnp.zeros((2, 5, 3)), jnp.zeros((2, 5)), jnp.zeros((2, 1), int),
                             jnp.zeros((2, 1)), blank_id=True), ValueError,
     r"^ctc_loss: blank_id must be an int in \[0, 3\), got True"),
    (lambda: losses.ctc_loss(jnp.zeros((2, 5, 3)), jnp.zeros((2, 5)), jnp.zeros((2, 1), int),
                             jnp.zeros((2, 1)), blank_id=1.0), ValueError,
     r"^ctc_loss: blank_id must be an int in \[0, 3\), got 1.0"),
    # Failed with "'int' object is not callable" at the call.
    (lambda: losses.ranking_softmax_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), reduce_fn="mean"),
     TypeError, r"^ranking_softmax_loss: reduce_fn must be None or a reduction .*got 'mean'"),
    (lambda: losses.make_fenchel_young_loss(1.0), TypeError,
     r"^make_fenchel_young_loss: max_fun must be a function of a score vector"),
    (lambda: losses.ctc_loss(jnp.zeros((2, 0, 3)), jnp.zeros((2, 0)), jnp.zeros((2, 1), int),
                             jnp.zeros((2, 1))), ValueError,
     r"logits have no frames \(shape \(2, 0, 3\)\)"),
    # axis=None with a per-row where: expand_dims(where, None) raised "'NoneType' object is
    # not iterable" (so does optax 0.2.8).
    (lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 3)), axis=None,
                                          where=jnp.array([True, False])), ValueError,
     r"^softmax_cross_entropy: with axis=None every axis is a class axis, so where must have "
     r"the rank of logits \(2\), got shape \(2,\)"),
    (lambda: losses.poly_loss_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 3)), axis=None,
                                            where=jnp.array([True, False])), ValueError,
     r"^poly_loss_cross_entropy: with axis=None"),
    # A where that fits neither the logits nor the result: jax's "Incompatible shapes for
    # broadcasting: shapes=[(4, 1), (2, 3, 4), ()]", or for integer labels "axis 2 is out of
    # bounds for array of dimension 2", named neither the loss nor where.
    (lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4)),
                                          where=jnp.ones(4, bool)), ValueError,
     r"^softmax_cross_entropy: where must broadcast to the shape of logits, \(2, 3, 4\), or "
     r"of the result, \(2, 3\), got shape \(4,\)"),
    (lambda: losses.poly_loss_cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4)),
                                            where=jnp.ones((2, 3, 5), bool)), ValueError,
     r"^poly_loss_cross_entropy: where must broadcast .* got shape \(2, 3, 5\)"),
    (lambda: losses.softmax_cross_entropy_with_integer_labels(
        jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), int), where=jnp.ones(2, bool)), ValueError,
     r"^softmax_cross_entropy_with_integer_labels: where must broadcast .* got shape \(2,\)"),
]


@pytest.mark.parametrize("call, error, match", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_bad_input_raises(call, error, match):
  with pytest.raises(error, match=match):
    call()
