"""Kullback-Leibler divergences between distributions given as log-probabilities."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from gradtx.core import check_axis
from gradtx.losses._common import (ArrayLike, Axis, _broadcastable, _floating, _wide, _times_log,
                                   _x_log_x, _leave_out)


def kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Kullback-Leibler divergence of the predictions from the targets.

  .. math::
    D_{\mathrm{KL}}(t \,\|\, p) = \sum_i t_i (\log t_i - \log p_i)

  with :math:`0 \log 0 = 0`, summed over ``axis`` where ``where`` is true.

  Args:
    log_predictions: :math:`\log p`, the predicted distribution in log space
      (e.g. ``jax.nn.log_softmax(logits)``), ``[..., dim]``.
    targets: the target distribution :math:`t \ge 0`, the same shape.
    axis: the axis or axes to sum over (default -1).
    where: the elements to include (default all).

  Returns:
    the divergences, shape ``[...]``.

  References:
    Kullback and Leibler, `On Information and Sufficiency
    <https://www.jstor.org/stable/2236703>`_, 1951.

  Differences from optax:
    A zero target next to a ``-inf`` log prediction contributes 0 (optax:
    NaN), and the gradient with respect to a zero target is finite (optax:
    NaN). A ``-inf`` or NaN log prediction left out by ``where`` reaches no
    gradient (optax: NaN for its target).

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> log_p = jnp.log(jnp.array([0.5, 0.25, 0.25]))
    >>> t = jnp.array([0.25, 0.25, 0.5])
    >>> print(np.asarray(losses.kl_divergence(log_p, t)).round(4))
    0.1733
  """
  name = "kl_divergence"
  lp = _floating(name, "log_predictions", log_predictions)
  _floating(name, "targets", targets)
  check_axis(name, axis)
  _broadcastable(name, "log_predictions", lp, "targets", targets)
  dtype = lp.dtype
  lp = _wide(lp)
  t = jnp.asarray(targets).astype(lp.dtype)
  lp, = _leave_out(where, lp)
  return jnp.sum(_kl_terms(lp, t), axis=axis, where=where).astype(dtype)


def _kl_terms(lp: jax.Array, t: jax.Array) -> jax.Array:
  r""":math:`t (\log t - \log p)` elementwise, with :math:`0 \log 0 = 0`."""
  return _x_log_x(t) - _times_log(t, lp)


def kl_divergence_with_log_targets(
    log_predictions: ArrayLike,
    log_targets: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Kullback-Leibler divergence, with the targets given in log space.

  .. math::
    D_{\mathrm{KL}}(t \,\|\, p) = \sum_i e^{\log t_i} (\log t_i - \log p_i)

  a ``-inf`` log target (a zero target) contributing 0.

  Args:
    log_predictions: :math:`\log p`, ``[..., dim]``.
    log_targets: :math:`\log t`, the same shape.
    axis: the axis or axes to sum over (default -1).
    where: the elements to include (default all).

  Returns:
    the divergences, shape ``[...]``.

  References:
    Kullback and Leibler, `On Information and Sufficiency
    <https://www.jstor.org/stable/2236703>`_, 1951.

  Differences from optax:
    A ``-inf`` log target, or one whose exponential underflows to 0,
    contributes 0 with finite gradients (optax: NaN for the first, and for
    the second next to a ``-inf`` log prediction). A ``-inf`` or NaN log
    prediction left out by ``where`` reaches no gradient (optax: NaN for
    its log target).

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> log_p = jnp.log(jnp.array([0.5, 0.25, 0.25]))
    >>> log_t = jnp.log(jnp.array([0.25, 0.25, 0.5]))
    >>> print(np.asarray(losses.kl_divergence_with_log_targets(log_p, log_t)).round(4))
    0.1733
  """
  name = "kl_divergence_with_log_targets"
  lp = _floating(name, "log_predictions", log_predictions)
  lt = _floating(name, "log_targets", log_targets)
  check_axis(name, axis)
  _broadcastable(name, "log_predictions", lp, "log_targets", lt)
  dtype = lp.dtype
  lp = _wide(lp)
  lt = lt.astype(lp.dtype)
  lp, = _leave_out(where, lp)
  t = jnp.exp(lt)
  # A zero target: a -inf log target, or one whose exp underflows (below -104 in float32),
  # which next to a -inf log prediction gave 0 * inf = NaN; as in kl_divergence, it adds 0.
  zero = t == 0
  lt_safe = jnp.where(zero, 0, lt)
  lp_safe = jnp.where(zero, 0, lp)
  loss = jnp.where(zero, 0, t * (lt_safe - lp_safe))
  return jnp.sum(loss, axis=axis, where=where).astype(dtype)


def generalized_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Generalized KL divergence, for unnormalized distributions.

  .. math::
    D(t \,\|\, p) = \sum_i \big(t_i (\log t_i - \log p_i) - t_i + p_i\big)

  the Bregman divergence of :math:`f(x) = x \log x - x`; it equals
  :func:`kl_divergence` when both sum to 1.

  Args:
    log_predictions: :math:`\log p`, ``[..., dim]``.
    targets: :math:`t \ge 0`, the same shape.
    axis: the axis or axes to sum over (default -1).
    where: the elements to include (default all).

  Returns:
    the divergences, shape ``[...]``.

  References:
    Boyd and Vandenberghe, `Convex Optimization
    <https://stanford.edu/~boyd/cvxbook/bv_cvxbook.pdf>`_, 2004, p. 90;
    Bregman, `The relaxation method of finding the common point of convex
    sets <https://doi.org/10.1016/0041-5553(67)90040-7>`_, 1967.

  Differences from optax:
    A ``-inf`` or NaN log prediction left out by ``where`` reaches no
    gradient (optax: NaN for its target, and for itself when NaN).

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> log_p = jnp.log(jnp.array([1.0, 2.0]))
    >>> t = jnp.array([2.0, 2.0])
    >>> print(np.asarray(losses.generalized_kl_divergence(log_p, t)).round(4))
    0.3863
  """
  name = "generalized_kl_divergence"
  lp = _floating(name, "log_predictions", log_predictions)
  _floating(name, "targets", targets)
  check_axis(name, axis)
  _broadcastable(name, "log_predictions", lp, "targets", targets)
  dtype = lp.dtype
  lp = _wide(lp)
  t = jnp.asarray(targets).astype(lp.dtype)
  lp, = _leave_out(where, lp)
  # One sum, rounded once: the two parts may nearly cancel.
  terms = _kl_terms(lp, t) + jnp.exp(lp) - t
  return jnp.sum(terms, axis=axis, where=where).astype(dtype)


def convex_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Deprecated name of :func:`generalized_kl_divergence` (as in optax).

  .. math::
    D(t \,\|\, p) = \sum_i \big(t_i (\log t_i - \log p_i) - t_i + p_i\big)

  Kept so that code written for optax runs; it warns with a
  ``DeprecationWarning``, as optax does.

  Args:
    log_predictions: :math:`\log p`, ``[..., dim]``.
    targets: :math:`t \ge 0`, the same shape.
    axis: the axis or axes to sum over (default -1).
    where: the elements to include (default all).

  Returns:
    the divergences, shape ``[...]``.

  References:
    Boyd and Vandenberghe, `Convex Optimization
    <https://stanford.edu/~boyd/cvxbook/bv_cvxbook.pdf>`_, 2004, p. 90.

  Example:
    >>> import warnings
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> with warnings.catch_warnings():
    ...   warnings.simplefilter("ignore", DeprecationWarning)
    ...   d = losses.convex_kl_divergence(jnp.log(jnp.array([1.0, 2.0])),
    ...                                   jnp.array([2.0, 2.0]))
    >>> print(np.asarray(d).round(4))
    0.3863
  """
  warnings.warn(
      "convex_kl_divergence is deprecated (as in optax); use "
      "generalized_kl_divergence", DeprecationWarning, stacklevel=2)
  return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)
