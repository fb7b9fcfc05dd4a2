"""Regression losses: squared error, Huber, log-cosh, cosine similarity and distance."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx.core import POSITIVE, check_argument
from gradtx.losses._common import (
    ArrayLike, Axis, _floating, _wide, _same_shape, _cosine_similarity)
from gradtx.numerics import as_dtype


def squared_error(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
) -> jax.Array:
  r"""Elementwise squared error; ``squared_error(p, t).mean()`` is the MSE.

  .. math::
    \ell_i = (p_i - t_i)^2

  Args:
    predictions: predictions :math:`p`, any shape ``[...]``, floating.
    targets: targets :math:`t` of the same shape (cast to the dtype of
      ``predictions``); ``None`` (default) means zeros.

  Returns:
    the squared errors, with the shape and dtype of ``predictions``.

  Raises:
    TypeError: ``predictions`` is not floating.
    ValueError: ``targets`` has another shape (no broadcasting, as optax).

  References:
    `Mean squared error <https://en.wikipedia.org/wiki/Mean_squared_error>`_,
    Wikipedia.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.squared_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])))
    [1. 4.]
  """
  return jnp.square(_error("squared_error", predictions, targets))


def _error(loss: str, predictions: ArrayLike, targets: ArrayLike | None) -> jax.Array:
  """:math:`p - t`, its checks raising under the name of ``loss``, the function called."""
  p = _floating(loss, "predictions", predictions)
  if targets is None:
    return p
  t = jnp.asarray(targets)
  _same_shape(loss, "predictions", p, "targets", t)
  return p - t.astype(p.dtype)


def _half_square(e: jax.Array) -> jax.Array:
  r""":math:`\tfrac12 e^2` rounded once, as :math:`(\tfrac12 e) e`: halving is exact, and
  ``0.5 * e**2`` overflowed where :math:`e^2` does and its half does not (float16 from
  :math:`|e| = 256`, inf for a loss of 45000 at 300; float32 from 1.9e19)."""
  return (0.5 * e) * e


def l2_loss(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
) -> jax.Array:
  r"""Elementwise half squared error.

  .. math::
    \ell_i = \tfrac12 (p_i - t_i)^2

  The factor :math:`\tfrac12` is standard in Bishop's *Pattern Recognition
  and Machine Learning*, not in Hastie et al.'s *Elements of Statistical
  Learning*; :func:`squared_error` omits it.

  Args:
    predictions: predictions :math:`p`, any shape ``[...]``, floating.
    targets: targets :math:`t` of the same shape; ``None`` (default) means
      zeros.

  Returns:
    the losses, with the shape and dtype of ``predictions``.

  References:
    Bishop, *Pattern Recognition and Machine Learning*, 2006, Sec. 1.5.5.

  Differences from optax:
    The half square does not overflow before it is halved: optax's
    ``0.5 * (p - t)**2`` is inf for float16 errors from 256 on (a loss of
    45000 at 300, which float16 holds).

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.l2_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])))
    [0.5 2. ]
  """
  return _half_square(_error("l2_loss", predictions, targets))


def huber_loss(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
    *,
    delta: ArrayLike = 1.0,
) -> jax.Array:
  r"""Huber loss: quadratic near zero, linear away from it.

  With :math:`e = p - t`:

  .. math::
    \ell_i = \begin{cases}
      \tfrac12 e_i^2 & |e_i| \le \delta \\
      \delta (|e_i| - \tfrac12 \delta) & |e_i| > \delta
    \end{cases}

  Gradient descent on it equals gradient descent on :func:`l2_loss` with the
  gradient clipped to :math:`[-\delta, \delta]`.

  Args:
    predictions: predictions :math:`p`, any shape ``[...]``, floating.
    targets: targets :math:`t`, broadcastable to ``predictions``; ``None``
      (default) means zeros.
    delta: :math:`\delta > 0`, where the quadratic part ends (default 1.0).

  Returns:
    the losses, with the shape and dtype of ``predictions``.

  References:
    Huber, `Robust Estimation of a Location Parameter
    <https://doi.org/10.1214/aoms/1177703732>`_, 1964.

  Differences from optax:
    As :func:`l2_loss`, the quadratic part does not overflow before it is
    halved (float16 with ``delta`` above 256).

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.huber_loss(jnp.array([0.5, -3.0]), delta=1.0))
    [0.125 2.5  ]
  """
  p = _floating("huber_loss", "predictions", predictions)
  check_argument("huber_loss", "delta", delta, POSITIVE)
  e = p if targets is None else p - jnp.asarray(targets).astype(p.dtype)
  delta = as_dtype(delta, p.dtype)
  abs_e = jnp.abs(e)
  quadratic = jnp.minimum(abs_e, delta)
  linear = abs_e - quadratic  # max(|e| - delta, 0) without a doubled gradient at |e| = delta
  return _half_square(quadratic) + delta * linear


def log_cosh(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
) -> jax.Array:
  r"""Log-cosh loss: about :math:`e^2/2` near zero, :math:`|e| - \log 2` far away.

  .. math::
    \ell_i = \log\cosh(p_i - t_i)

  A twice-differentiable alternative to :func:`huber_loss`; its gradient is
  :math:`\tanh(p_i - t_i)`.

  Args:
    predictions: predictions :math:`p`, any shape ``[...]``, floating.
    targets: targets :math:`t`, broadcastable to ``predictions``; ``None``
      (default) means zeros.

  Returns:
    the losses, with the shape and dtype of ``predictions``.

  References:
    Chen et al, `Log Hyperbolic Cosine Loss Improves Variational
    Auto-Encoder <https://openreview.net/pdf?id=rkglvsC9Ym>`_, 2019.

  Differences from optax:
    optax computes :math:`\operatorname{logaddexp}(e, -e) - \log 2`, which
    cancels catastrophically for small :math:`e` (float32: ``log_cosh(1e-4)``
    is 0 instead of 5e-9, and its gradient is off by 2e-4 relative). gradtx
    uses :math:`\operatorname{log1p}(2\sinh^2(e/2))` for :math:`|e| < 1`
    and :math:`|e| + \operatorname{log1p}(e^{-2|e|}) - \log 2` beyond, both
    accurate to rounding, and so are their first two derivatives.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> print(np.asarray(losses.log_cosh(jnp.array([0.0, 1.0, 30.0]))).round(4))
    [ 0.      0.4338 29.3069]
  """
  p = _floating("log_cosh", "predictions", predictions)
  e = p if targets is None else p - jnp.asarray(targets).astype(p.dtype)
  dtype = e.dtype
  e = _wide(e)
  abs_e = jnp.abs(e)
  # The two forms meet at |e| = 1, where both are accurate: the first form's second
  # derivative, sech^2 e = (cosh^2 e - sinh^2 e) / cosh^2 e as autodiff takes it, cancels
  # (from |e| near 8 on, float32 gave -1.5e-7 for 8e-9 at 10: a negative curvature).
  small = abs_e < 1
  e_small = jnp.where(small, e, 0)  # keeps sinh finite in the branch not taken
  near = jnp.log1p(2 * jnp.square(jnp.sinh(0.5 * e_small)))
  far = abs_e + jnp.log1p(jnp.exp(-2 * abs_e)) - jnp.log(2.0).astype(e.dtype)
  return jnp.where(small, near, far).astype(dtype)


def cosine_similarity(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    epsilon: ArrayLike = 0.0,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Cosine similarity between predictions and targets, along ``axis``.

  .. math::
    s = \frac{\sum_i p_i t_i}
             {\sqrt{\max(\|p\|^2, \epsilon)}\,\sqrt{\max(\|t\|^2, \epsilon)}}

  the sums running over ``axis`` and the elements ``where`` is true.

  Args:
    predictions: predicted vectors :math:`p`, shape ``[..., dim]``.
    targets: target vectors :math:`t`, the same shape.
    epsilon: :math:`\epsilon \ge 0`, the least squared norm in the
      denominator (default 0.0).
    axis: the axis or axes the vectors lie along (default -1).
    where: elements to include (default: all).

  Returns:
    the similarities, shape ``[...]``, in the dtype of ``predictions``.

  References:
    `Cosine similarity <https://en.wikipedia.org/wiki/Cosine_similarity>`_,
    Wikipedia.

  Differences from optax:
    A vector of norm 0 (with ``epsilon=0``, the default) has similarity 0
    with anything, and a finite gradient; optax returns NaN for both. An
    ``inf`` or NaN left out by ``where`` reaches neither the value nor the
    gradient (optax: a NaN gradient for its whole vector).

  Range:
    The squared norms are summed unscaled, as optax's: in float32 (and
    16-bit inputs), a vector with an entry above about 1.8e19 in magnitude
    overflows its squared norm (similarity 0, or NaN), and one whose every
    entry is below about 1e-19 underflows it (similarity near 0, or far
    off). The similarity is scale-invariant, so scale such vectors (or
    compute in float64). Scaling each vector by its largest entry here
    would cost a further pass over both: on CPU, (4096, 768), 3-4x the
    forward time and 2x with the gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> p = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    >>> t = jnp.array([[2.0, 0.0], [-1.0, 0.0], [1.0, 1.0]])
    >>> print(np.asarray(losses.cosine_similarity(p, t)).round(4))
    [ 1.     -0.7071  0.    ]
  """
  a = _floating("cosine_similarity", "predictions", predictions)
  return _cosine_similarity("cosine_similarity", a, targets, epsilon, axis, where).astype(a.dtype)


def cosine_distance(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    epsilon: ArrayLike = 0.0,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Cosine distance, one minus :func:`cosine_similarity`.

  .. math::
    d = 1 - \frac{\sum_i p_i t_i}
                 {\sqrt{\max(\|p\|^2, \epsilon)}\,\sqrt{\max(\|t\|^2, \epsilon)}}

  Args:
    predictions: predicted vectors :math:`p`, shape ``[..., dim]``.
    targets: target vectors :math:`t`, the same shape.
    epsilon: :math:`\epsilon \ge 0`, the least squared norm in the
      denominator (default 0.0).
    axis: the axis or axes the vectors lie along (default -1).
    where: elements to include (default: all).

  Returns:
    the distances, shape ``[...]``, in ``[0, 2]``.

  References:
    `Cosine distance
    <https://en.wikipedia.org/wiki/Cosine_similarity#Cosine_distance>`_,
    Wikipedia.

  Differences from optax:
    A zero vector is at distance 1 from anything (optax: NaN). An ``inf``
    or NaN left out by ``where`` reaches neither the value nor the gradient
    (optax: a NaN gradient for its whole vector).

  Range:
    As :func:`cosine_similarity`'s: float32 vectors with entries above
    about 1.8e19 or all below about 1e-19 in magnitude overflow or
    underflow their squared norms (as optax's); scale them first.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> p = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    >>> t = jnp.array([[2.0, 0.0], [-1.0, 0.0]])
    >>> print(np.asarray(losses.cosine_distance(p, t)).round(4))
    [0.     1.7071]
  """
  a = _floating("cosine_distance", "predictions", predictions)
  # 1 - s is taken before rounding to a 16-bit dtype: near-parallel vectors
  # keep their small distance instead of rounding s to 1 first.
  return (1 - _cosine_similarity("cosine_distance", a, targets, epsilon, axis, where)).astype(a.dtype)
