"""Ranking losses: the softmax (listwise) ranking loss."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gradtx.core import check_callable
from gradtx.losses._common import (ArrayLike, _broadcastable, _floating, _wide, _log_softmax,
                                   _no_gradient_where, _times_log)


def _safe_reduce(a: jax.Array, where: jax.Array | None,
                 reduce_fn: Callable[..., ArrayLike] | None) -> jax.Array:
  """Reduces ``a`` over ``where``; a masked mean over nothing is 0, not NaN."""
  out = reduce_fn(a, where=where) if reduce_fn is not None else a
  if reduce_fn is jnp.mean:
    # Only the NaN of an empty mean is hidden, never a NaN of the input.
    out = jnp.where(jnp.isnan(out) & ~jnp.any(jnp.isnan(a)), 0, out)
  if reduce_fn is None and where is not None:
    out = jnp.where(where, out, 0)
  return jnp.asarray(out)


def ranking_softmax_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    reduce_fn: Callable[..., ArrayLike] | None = jnp.mean,
) -> jax.Array:
  r"""Ranking softmax loss (ListNet-style listwise cross entropy).

  .. math::
    \ell(s, y) = -\sum_i w_i y_i \log \frac{e^{s_i}}{\sum_j e^{s_j}}

  over the items of each list (last axis) that ``where`` marks valid, then
  ``reduce_fn`` over the lists that have any valid item.

  Args:
    logits: item scores :math:`s`, ``[..., list_size]``, floating.
    labels: relevance labels :math:`y`, the same shape.
    where: valid items (default all); invalid ones are left out of both sums
      and reach no gradient, whatever their scores (``-inf`` or NaN too).
    weights: per-item weights :math:`w` (default 1).
    reduce_fn: ``jnp.mean`` (default), ``jnp.sum``, or None for the loss
      of each list (0 for a list with no valid item).

  Returns:
    the reduced loss, or ``[...]`` losses when ``reduce_fn`` is None.

  References:
    Cao et al, `Learning to Rank: From Pairwise Approach to Listwise
    Approach <https://doi.org/10.1145/1273496.1273513>`_, ICML 2007;
    Bruch et al, `An Analysis of the Softmax Cross Entropy Loss for
    Learning-to-Rank with Binary Relevance
    <https://doi.org/10.1145/3341981.3344221>`_, ICTIR 2019.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> scores = jnp.array([[2.0, 1.0, 0.0], [1.0, 0.5, 1.5]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    >>> where = jnp.array([[True, True, False], [True, True, True]])
    >>> print(np.asarray(losses.ranking_softmax_loss(scores, labels, where=where)).round(3))
    0.497
  """
  x = _floating("ranking_softmax_loss", "logits", logits)
  if reduce_fn is not None:
    check_callable("ranking_softmax_loss", "reduce_fn", reduce_fn,
                   "None or a reduction such as jnp.mean or jnp.sum")
  _broadcastable("ranking_softmax_loss", "logits", x, "labels", labels)
  dtype = x.dtype
  x = _wide(x)
  y = jnp.asarray(labels).astype(x.dtype)
  if weights is not None:
    y = y * jnp.asarray(weights).astype(x.dtype)
  where = None if where is None else jnp.asarray(where)
  log_p, dead = _log_softmax(x, -1, where)
  terms = _times_log(y, log_p)
  if where is not None:
    terms = jnp.where(where, terms, 0)
  loss = _no_gradient_where(dead[..., 0], -jnp.sum(terms, axis=-1))
  lists = None if where is None else jnp.any(where, axis=-1)
  return _safe_reduce(loss, lists, reduce_fn).astype(dtype)
