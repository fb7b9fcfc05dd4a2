r"""Loss functions: optax's, under the same names, arguments and defaults.

``gradtx.losses.<name>`` takes the same arguments as ``optax.losses.<name>``
(and ``optax.<name>``) and returns the same values, so training code written
for optax keeps working when the import changes. Every function is a pure
function of arrays: it runs under ``jax.jit``, ``jax.vmap`` and ``jax.grad``,
and has no state and no hyperparameters to hold (a loss is not a stage).

Conventions shared by all losses:

* **Dtype.** The result has the floating dtype of the first argument
  (``logits``, ``predictions``, ``scores``, ...); labels and targets are cast
  to it. 16-bit inputs (bfloat16, float16) are computed in float32 and
  rounded once at the end wherever the loss takes an ``exp``, a ``log`` or a
  sum, so a bfloat16 model gets a float32-accurate loss (optax computes in
  bfloat16).
* **Reductions.** A loss reduces only over its class / feature axis
  (``axis``, default the last); the batch is never averaged unless the loss
  says so (``ntxent``, ``ranking_softmax_loss``, the dice losses), exactly
  as in optax. ``where`` masks elements out of that reduction.
* **Bad input** raises at once: a non-floating ``logits`` array or a
  non-integer integer-label array raises ``TypeError``; mismatched shapes
  raise ``ValueError``; an out-of-range hyperparameter given as a Python
  number raises :class:`gradtx.errors.HyperparameterError` naming the loss,
  the argument and its allowed range.
* **Zero times infinity.** A term :math:`0 \log 0` is 0, and so is its
  gradient, wherever the convention applies: a class masked with a ``-inf``
  logit and a zero label, a zero target in a KL divergence, a zero-norm
  vector in a cosine similarity. optax returns NaN for several of these
  (values or gradients); each function's docstring says which under
  *Differences from optax*.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp

from gradtx.core import NONNEGATIVE, POSITIVE, UNIT, Range, check_value
from gradtx.numerics import as_dtype
from gradtx.projections import projection_simplex

ArrayLike = jax.typing.ArrayLike
Axis = int | tuple[int, ...] | None

__all__ = [
    "l2_loss",
    "squared_error",
    "huber_loss",
    "log_cosh",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "smooth_labels",
    "cosine_similarity",
    "cosine_distance",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "generalized_kl_divergence",
    "convex_kl_divergence",
    "hinge_loss",
    "multiclass_hinge_loss",
    "perceptron_loss",
    "multiclass_perceptron_loss",
    "poly_loss_cross_entropy",
    "triplet_margin_loss",
    "ntxent",
    "sparsemax_loss",
    "multiclass_sparsemax_loss",
    "make_fenchel_young_loss",
    "ranking_softmax_loss",
    "dice_loss",
    "binary_dice_loss",
    "multiclass_generalized_dice_loss",
    "ctc_loss_with_forward_probs",
    "ctc_loss",
]


# ------------------------------------------------------------------ helpers


def _floating(loss: str, arg: str, x: ArrayLike) -> jax.Array:
  """``x`` as an array, checking that its dtype is floating."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{loss}: {arg} must have a floating dtype, got {x.dtype}")
  return x


def _integer(loss: str, arg: str, x: ArrayLike) -> jax.Array:
  """``x`` as an array, checking that its dtype is integer."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(f"{loss}: {arg} must have an integer dtype, got {x.dtype}")
  return x


def _wide(x: jax.Array) -> jax.Array:
  """``x`` in at least float32: 16-bit floats are computed in float32."""
  if jnp.finfo(x.dtype).bits < 32:
    return x.astype(jnp.float32)
  return x


def _same_shape(loss: str, a: str, x: jax.Array, b: str, y: jax.Array) -> None:
  if x.shape != y.shape:
    raise ValueError(
        f"{loss}: {a} and {b} must have the same shape, got {x.shape} and "
        f"{y.shape}")


def _rank(loss: str, arg: str, x: jax.Array, rank: int) -> None:
  if x.ndim != rank:
    raise ValueError(
        f"{loss}: {arg} must have rank {rank}, got shape {x.shape}")


def _check(loss: str, arg: str, value: Any, allowed: Range) -> None:
  """Checks a hyperparameter given as a Python number; arrays are taken as given.

  Arrays are not read back from the device (a loss may be called eagerly in a
  training loop), so only Python numbers are checked.
  """
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    check_value(loss, arg, value, allowed)


def _expand_where(where: ArrayLike | None, ndim: int, axis: Axis) -> jax.Array | None:
  """A ``where`` mask given per example gets the class axis back (as optax)."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.ndim != ndim:
    where = jnp.expand_dims(where, axis)
  return where


def _some(where: jax.Array | None, axis: Axis) -> jax.Array | None:
  """``where``, except that a row with nothing included includes everything.

  Such a row is masked out of the result anyway; including it keeps its
  normaliser finite, so no NaN reaches the gradient through the mask.
  """
  if where is None:
    return None
  return where | ~jnp.any(where, axis=axis, keepdims=True)


def _log_softmax(x: jax.Array, axis: Axis, where: jax.Array | None) -> jax.Array:
  """``x - logsumexp(x)`` over ``axis``, the normaliser summing only ``where``."""
  return x - jax.nn.logsumexp(x, axis=axis, where=_some(where, axis), keepdims=True)


def _times_log(y: jax.Array, log_p: jax.Array) -> jax.Array:
  r""":math:`y \log p` with :math:`0 \log 0 = 0`, finite gradients included.

  Only an exact ``log_p = -inf`` next to ``y = 0`` is replaced, so every other
  gradient (with respect to ``y`` too) is the plain one.
  """
  return y * jnp.where((y == 0) & (log_p == -jnp.inf), 0, log_p)


def _safe_log(v: jax.Array) -> jax.Array:
  """``log(v)`` with ``log(0) = -inf`` and no NaN in its gradient at 0."""
  positive = v > 0
  return jnp.where(positive, jnp.log(jnp.where(positive, v, 1)), -jnp.inf)


# --------------------------------------------------------------- regression


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
  p = _floating("squared_error", "predictions", predictions)
  if targets is None:
    return jnp.square(p)
  t = jnp.asarray(targets)
  _same_shape("squared_error", "predictions", p, "targets", t)
  return jnp.square(p - t.astype(p.dtype))


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

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.l2_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])))
    [0.5 2. ]
  """
  return 0.5 * squared_error(predictions, targets)


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

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.huber_loss(jnp.array([0.5, -3.0]), delta=1.0))
    [0.125 2.5  ]
  """
  p = _floating("huber_loss", "predictions", predictions)
  _check("huber_loss", "delta", delta, POSITIVE)
  e = p if targets is None else p - jnp.asarray(targets).astype(p.dtype)
  delta = as_dtype(delta, p.dtype)
  abs_e = jnp.abs(e)
  quadratic = jnp.minimum(abs_e, delta)
  linear = abs_e - quadratic  # max(|e| - delta, 0) without a doubled gradient at |e| = delta
  return 0.5 * quadratic**2 + delta * linear


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
    uses :math:`\operatorname{log1p}(2\sinh^2(e/2))` for :math:`|e| < 15`
    and :math:`|e| + \operatorname{log1p}(e^{-2|e|}) - \log 2` beyond, both
    accurate to rounding.

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
  small = abs_e < 15
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
    with anything, and a finite gradient; optax returns NaN for both.

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


def _cosine_similarity(loss: str, a: jax.Array, targets: ArrayLike, epsilon: ArrayLike,
                       axis: Axis, where: ArrayLike | None) -> jax.Array:
  """:func:`cosine_similarity`, left in the compute dtype (float32 for 16-bit ``a``)."""
  b = _floating(loss, "targets", targets)
  _check(loss, "epsilon", epsilon, NONNEGATIVE)
  a = _wide(a)
  b = b.astype(a.dtype)
  epsilon = as_dtype(epsilon, a.dtype)
  where = None if where is None else jnp.asarray(where)

  def norm(v: jax.Array) -> jax.Array:
    n2 = jnp.maximum(jnp.sum(jnp.square(v), axis=axis, where=where, keepdims=True), epsilon)
    return jnp.sqrt(jnp.where(n2 > 0, n2, 1))  # a zero vector stays zero

  return jnp.sum((a / norm(a)) * (b / norm(b)), axis=axis, where=where)


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
    A zero vector is at distance 1 from anything (optax: NaN).

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


# ----------------------------------------------------------------- smoothing


def smooth_labels(
    labels: ArrayLike,
    alpha: ArrayLike,
    *,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Label smoothing: mixes one-hot labels with the uniform distribution.

  .. math::
    \tilde y_i = (1 - \alpha)\, y_i + \frac{\alpha}{K}

  where :math:`K` is the number of classes along ``axis`` (the number of
  true entries of ``where`` along it, when given).

  Args:
    labels: one-hot (or soft) labels :math:`y`, floating.
    alpha: the smoothing factor :math:`\alpha \in [0, 1]`.
    axis: the class axis or axes (default -1).
    where: the classes that count in :math:`K` (default: all). As in optax,
      masked entries are smoothed too; mask them again downstream.

  Returns:
    the smoothed labels, with the shape and dtype of ``labels``.

  References:
    Szegedy et al, `Rethinking the Inception Architecture for Computer Vision
    <https://arxiv.org/abs/1512.00567>`_, 2016; Müller et al, `When does
    label smoothing help? <https://arxiv.org/abs/1906.02629>`_, 2019.

  Differences from optax:
    A row whose ``where`` is all false is returned as :math:`(1-\alpha)y`,
    with no uniform part; optax divides by zero and returns ``inf``.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.smooth_labels(jnp.array([0.0, 1.0, 0.0, 0.0]), 0.2))
    [0.05 0.85 0.05 0.05]
  """
  y = _floating("smooth_labels", "labels", labels)
  _check("smooth_labels", "alpha", alpha, UNIT)
  alpha = as_dtype(alpha, y.dtype)
  if where is None:
    return (1 - alpha) * y + alpha / jnp.asarray(jnp.size(y, axis), y.dtype)
  k = jnp.sum(jnp.asarray(where), axis=axis, keepdims=True)
  uniform = jnp.where(k > 0, alpha / jnp.maximum(k, 1).astype(y.dtype), 0)
  return (1 - alpha) * y + uniform


# ------------------------------------------------------------ classification


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Softmax cross entropy between logits and label distributions.

  .. math::
    \ell = -\sum_j y_j \log \frac{e^{x_j}}{\sum_k e^{x_k}}

  the sums running over ``axis`` and the classes ``where`` is true, with
  :math:`0 \log 0 = 0`.

  Args:
    logits: unnormalized log probabilities :math:`x`, shape
      ``[..., num_classes]``, floating. A class may be ruled out with a
      ``-inf`` logit.
    labels: label distributions :math:`y` (non-negative, summing to 1, e.g.
      one-hot), broadcastable to ``logits``; cast to its dtype.
    axis: the class axis or axes (default -1).
    where: the classes to include, shaped like ``logits`` or like the
      result (then it applies to whole rows); default all. A row with no
      class included has loss 0.

  Returns:
    the cross entropies, shape ``[...]``, in the dtype of ``logits``.

  References:
    `Cross entropy <https://en.wikipedia.org/wiki/Cross-entropy>`_,
    Wikipedia; Bishop, *Pattern Recognition and Machine Learning*, 2006,
    Sec. 4.3.4.

  Differences from optax:
    A ``-inf`` logit with a zero label contributes 0 (optax: NaN, its
    ``safe_softmax_cross_entropy`` exists for this); here the function is
    that safe version, with the same finite gradients.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> print(np.asarray(losses.softmax_cross_entropy(logits, labels)).round(4))
    [0.2761 2.9518]
  """
  x = _floating("softmax_cross_entropy", "logits", logits)
  dtype = x.dtype
  x = _wide(x)
  y = jnp.asarray(labels).astype(x.dtype)
  where = _expand_where(where, x.ndim, axis)
  terms = _times_log(y, _log_softmax(x, axis, where))
  if where is not None:
    terms = jnp.where(where, terms, 0)
  return (-jnp.sum(terms, axis=axis)).astype(dtype)


def safe_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
) -> jax.Array:
  r"""Softmax cross entropy over the last axis, with :math:`0 \log 0 = 0`.

  .. math::
    \ell = -\sum_j y_j \log \frac{e^{x_j}}{\sum_k e^{x_k}}

  In gradtx this is :func:`softmax_cross_entropy` with ``axis=-1``, which
  already treats a ``-inf`` logit with a zero label as contributing 0, in
  value and gradient. Kept for code written against optax.

  Args:
    logits: unnormalized log probabilities, shape ``[..., num_classes]``.
    labels: label distributions, broadcastable to ``logits``.

  Returns:
    the cross entropies, shape ``[...]``.

  References:
    `Cross entropy <https://en.wikipedia.org/wiki/Cross-entropy>`_,
    Wikipedia.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([0.0, -jnp.inf, 1.0])
    >>> labels = jnp.array([1.0, 0.0, 0.0])
    >>> print(np.asarray(losses.safe_softmax_cross_entropy(logits, labels)).round(4))
    1.3133
  """
  return softmax_cross_entropy(logits, labels, axis=-1)


def _class_axes(loss: str, axis: Any, ndim: int) -> tuple[int, ...]:
  """``axis`` (an int or a tuple of ints) as non-negative axes of an ``ndim`` array."""
  axes = axis if isinstance(axis, tuple) else (axis,)
  try:
    axes = tuple(operator.index(a) for a in axes)
  except TypeError:
    raise TypeError(
        f"{loss}: axis must be an int or a tuple of ints, got {axis!r}") from None
  if any(not -ndim <= a < ndim for a in axes):
    raise ValueError(
        f"{loss}: axis {axis!r} is out of bounds for logits of rank {ndim}")
  axes = tuple(a % ndim for a in axes)
  if len(set(axes)) != len(axes):
    raise ValueError(f"{loss}: axis {axis!r} repeats an axis")
  return axes


def _flatten_class_axes(x: jax.Array, class_axes: tuple[int, ...]) -> jax.Array:
  """Moves ``class_axes`` (non-negative) to the end, in order, and flattens them into one."""
  batch_axes = tuple(a for a in range(x.ndim) if a not in class_axes)
  x = x.transpose(batch_axes + class_axes)
  return x.reshape(x.shape[:len(batch_axes)] + (-1,))


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Softmax cross entropy between logits and integer class labels.

  .. math::
    \ell = \log \sum_k e^{x_k} - x_{y}

  the sum running over ``axis`` and the classes ``where`` is true. Only the
  label's logit is gathered; the normaliser is not subtracted from the other
  classes.

  Args:
    logits: unnormalized log probabilities :math:`x`, shape
      ``[..., num_classes]``, floating.
    labels: integer labels :math:`y` in ``[0, num_classes)``, shape
      ``[...]``. An out-of-range label gives NaN.
    axis: the class axis (default -1), or a tuple of axes: then the label is
      a flat (row-major) index into the ``logits[axis]`` slice.
    where: the classes to include, shaped like ``logits`` or like the
      result; a row with no class included has loss 0.

  Returns:
    the cross entropies, shape ``[...]``, in the dtype of ``logits``.

  Raises:
    TypeError: ``logits`` is not floating, ``labels`` not integer, or
      ``axis`` not an int or a tuple of ints.
    ValueError: ``axis`` is out of bounds or repeats an axis, or ``labels``
      does not have the shape of ``logits`` without the class axes.

  References:
    `Multinomial logistic regression
    <https://en.wikipedia.org/wiki/Multinomial_logistic_regression>`_,
    Wikipedia.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([0, 1])
    >>> print(np.asarray(losses.softmax_cross_entropy_with_integer_labels(logits, labels)).round(4))
    [0.2761 2.9518]
  """
  name = "softmax_cross_entropy_with_integer_labels"
  x = _floating(name, "logits", logits)
  y = _integer(name, "labels", labels)
  axes = _class_axes(name, axis, x.ndim)
  dtype = x.dtype
  x = _wide(x)
  where = _expand_where(where, x.ndim, axes)
  if isinstance(axis, tuple):
    x = _flatten_class_axes(x, axes)
    if where is not None:
      where = _flatten_class_axes(jnp.broadcast_to(where, jnp.shape(logits)), axes)
    axis = x.ndim - 1
  else:
    axis, = axes
  batch_shape = x.shape[:axis] + x.shape[axis + 1:]
  if y.ndim != len(batch_shape) or any(d not in (1, b) for d, b in zip(y.shape, batch_shape)):
    raise ValueError(
        f"{name}: labels must have the shape of logits without the class "
        f"axis, {batch_shape}, got {y.shape}")
  label_logits = jnp.take_along_axis(x, jnp.expand_dims(y, axis), axis=axis).squeeze(axis)
  out = jax.nn.logsumexp(x, axis=axis, where=_some(where, axis)) - label_logits
  if where is not None:
    out = jnp.where(jnp.any(where, axis=axis), out, 0)
  return out.astype(dtype)


def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
) -> jax.Array:
  r"""Elementwise sigmoid (binary) cross entropy.

  .. math::
    \ell_i = -y_i \log \sigma(x_i) - (1 - y_i) \log \sigma(-x_i)

  with :math:`\log\sigma` computed stably and :math:`0 \log 0 = 0`. Each
  element is an independent binary prediction: use it for binary labels
  (``logits`` for class 1 only) or for multi-label targets (one logit per
  class).

  Args:
    logits: logits :math:`x`, floating.
    labels: labels :math:`y \in \{0, 1\}` or probabilities in
      :math:`[0, 1]`, broadcastable to ``logits``; cast to its dtype.

  Returns:
    the losses, shaped like ``logits``.

  References:
    Goodfellow et al, `Deep Learning
    <http://www.deeplearningbook.org/contents/prob.html>`_, 2016.

  Differences from optax:
    A logit of :math:`\pm\infty` on the side its label rules out
    (``x=-inf, y=0`` or ``x=+inf, y=1``) gives loss 0 and gradient 0; optax
    gives NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([2.0, -1.0, 0.0])
    >>> labels = jnp.array([1.0, 1.0, 0.5])
    >>> print(np.asarray(losses.sigmoid_binary_cross_entropy(logits, labels)).round(4))
    [0.1269 1.3133 0.6931]
  """
  x = _floating("sigmoid_binary_cross_entropy", "logits", logits)
  dtype = x.dtype
  x = _wide(x)
  y = jnp.asarray(labels).astype(x.dtype)
  loss = -_times_log(y, jax.nn.log_sigmoid(x)) - _times_log(1 - y, jax.nn.log_sigmoid(-x))
  return loss.astype(dtype)


def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
) -> jax.Array:
  r"""Sigmoid focal loss: cross entropy scaled down on easy examples.

  .. math::
    \ell_i = \alpha_{t,i}\,(1 - p_{t,i})^\gamma\,
             \operatorname{BCE}(x_i, y_i), \qquad
    1 - p_t = (1 - y)\,\sigma(x) + y\,(1 - \sigma(x))

  with :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)` (1 when ``alpha`` is
  None) and :math:`\operatorname{BCE}` the :func:`sigmoid_binary_cross_entropy`.
  For binary labels :math:`p_t` is the probability of the true class. The
  weight is computed in log space, :math:`\exp(\gamma \log(1 - p_t))`, so
  its gradient stays finite for :math:`\gamma < 1` and large logits.

  Args:
    logits: logits :math:`x`, floating.
    labels: labels in :math:`\{0, 1\}` or :math:`[0, 1]`, broadcastable to
      ``logits``.
    alpha: the weight :math:`\alpha \in [0, 1]` of the positive class, or
      None (default) for no weighting.
    gamma: the focusing exponent :math:`\gamma \ge 0` (default 2.0);
      :math:`\gamma = 0` is the cross entropy.

  Returns:
    the losses, shaped like ``logits``.

  References:
    Lin et al, `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, 2017.

  Differences from optax:
    Infinite logits give the limit values and finite gradients (optax: NaN
    for :math:`x=\pm\infty`, in value and gradient).

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([2.0, -1.0, 0.0])
    >>> labels = jnp.array([1.0, 1.0, 0.0])
    >>> print(np.asarray(losses.sigmoid_focal_loss(logits, labels, alpha=0.25)).round(4))
    [0.0005 0.1755 0.13  ]
  """
  name = "sigmoid_focal_loss"
  x = _floating(name, "logits", logits)
  _check(name, "gamma", gamma, NONNEGATIVE)
  if alpha is not None:
    _check(name, "alpha", alpha, UNIT)
  dtype = x.dtype
  x = _wide(x)
  y = jnp.asarray(labels).astype(x.dtype)
  gamma = as_dtype(gamma, x.dtype)
  log_p, log_q = jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
  ce = -_times_log(y, log_p) - _times_log(1 - y, log_q)
  a, b = _safe_log(1 - y) + log_p, _safe_log(y) + log_q
  top = jnp.maximum(a, b)
  top = jnp.where(jnp.isfinite(top), top, 0)
  total = jnp.exp(a - top) + jnp.exp(b - top)
  # p_t = 1 exactly (an infinite logit): log(1 - p_t) is -inf, held at the
  # least finite value so that exp(gamma * it) is 0, or 1 when gamma = 0.
  log_one_minus_pt = jnp.where(total > 0, top + jnp.log(jnp.where(total > 0, total, 1)),
                               jnp.finfo(x.dtype).min)
  loss = ce * jnp.exp(gamma * log_one_minus_pt)
  if alpha is not None:
    alpha = as_dtype(alpha, x.dtype)
    loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
  return loss.astype(dtype)


def poly_loss_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: ArrayLike = 2.0,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Poly-1 loss: cross entropy plus a weighted first polynomial term.

  .. math::
    \ell = \operatorname{CE}(x, y) + \epsilon \sum_j y_j (1 - p_j),
    \qquad p = \operatorname{softmax}(x)

  For one-hot labels the added term is :math:`\epsilon (1 - p_t)`, the
  first term of the cross entropy's expansion in :math:`(1 - p_t)^j`.

  Args:
    logits: unnormalized log probabilities :math:`x`, ``[..., num_classes]``.
    labels: label distributions :math:`y`, broadcastable to ``logits``.
    epsilon: the coefficient :math:`\epsilon` of the first polynomial term
      (default 2.0, the paper's choice for ImageNet; -1.0 for detection).
    axis: the class axis or axes (default -1).
    where: the classes to include (default all).

  Returns:
    the losses, shape ``[...]``.

  References:
    Leng et al, `PolyLoss: A Polynomial Expansion Perspective of
    Classification Loss Functions <https://arxiv.org/abs/2204.12511>`_, 2022.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> print(np.asarray(losses.poly_loss_cross_entropy(logits, labels)).round(4))
    [0.7587 4.8473]
  """
  name = "poly_loss_cross_entropy"
  x = _floating(name, "logits", logits)
  _floating(name, "labels", labels)
  dtype = x.dtype
  x = _wide(x)
  y = jnp.asarray(labels).astype(x.dtype)
  epsilon = as_dtype(epsilon, x.dtype)
  where = _expand_where(where, x.ndim, axis)
  log_p = _log_softmax(x, axis, where)
  one_minus_pt = jnp.sum(y * -jnp.expm1(log_p), axis=axis, where=where)
  ce = softmax_cross_entropy(x, y, axis=axis, where=where)
  return (ce + epsilon * one_minus_pt).astype(dtype)


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
    NaN).

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
  dtype = lp.dtype
  lp = _wide(lp)
  t = jnp.asarray(targets).astype(lp.dtype)
  return jnp.sum(_kl_terms(lp, t), axis=axis, where=where).astype(dtype)


def _kl_terms(lp: jax.Array, t: jax.Array) -> jax.Array:
  r""":math:`t (\log t - \log p)` elementwise, with :math:`0 \log 0 = 0`."""
  return _times_log(t, _safe_log(t)) - _times_log(t, lp)


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
    A ``-inf`` log target contributes 0 with finite gradients (optax: NaN).

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
  dtype = lp.dtype
  lp = _wide(lp)
  lt = lt.astype(lp.dtype)
  zero = lt == -jnp.inf
  lt_safe = jnp.where(zero, 0, lt)
  lp_safe = jnp.where(zero, 0, lp)
  loss = jnp.where(zero, 0, jnp.exp(lt_safe) * (lt_safe - lp_safe))
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
  dtype = lp.dtype
  lp = _wide(lp)
  t = jnp.asarray(targets).astype(lp.dtype)
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


def hinge_loss(
    predictor_outputs: ArrayLike,
    targets: ArrayLike,
) -> jax.Array:
  r"""Binary hinge loss.

  .. math::
    \ell_i = \max(0,\ 1 - s_i y_i)

  Args:
    predictor_outputs: scores :math:`s`, floating.
    targets: targets :math:`y \in \{-1, 1\}`, broadcastable to the scores;
      cast to their dtype.

  Returns:
    the losses, shaped like the scores.

  References:
    `Hinge loss <https://en.wikipedia.org/wiki/Hinge_loss>`_, Wikipedia.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.hinge_loss(jnp.array([2.0, 0.5, -1.0]), jnp.array([1, 1, 1])))
    [0.  0.5 2. ]
  """
  s = _floating("hinge_loss", "predictor_outputs", predictor_outputs)
  y = jnp.asarray(targets).astype(s.dtype)
  return jnp.maximum(0, 1 - s * y)


def perceptron_loss(
    predictor_outputs: ArrayLike,
    targets: ArrayLike,
) -> jax.Array:
  r"""Binary perceptron loss.

  .. math::
    \ell_i = \max(0,\ -s_i y_i)

  Args:
    predictor_outputs: scores :math:`s`, floating.
    targets: targets :math:`y \in \{-1, 1\}`, the same shape.

  Returns:
    the losses, shaped like the scores.

  Raises:
    ValueError: the shapes differ (as optax).

  References:
    `Perceptron <https://en.wikipedia.org/wiki/Perceptron>`_, Wikipedia.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.perceptron_loss(jnp.array([2.0, -0.5]), jnp.array([1, 1])))
    [0.  0.5]
  """
  s = _floating("perceptron_loss", "predictor_outputs", predictor_outputs)
  y = jnp.asarray(targets)
  _same_shape("perceptron_loss", "predictor_outputs", s, "targets", y)
  return jnp.maximum(0, -s * y.astype(s.dtype))


def _label_scores(s: jax.Array, labels: ArrayLike) -> jax.Array:
  """``s[..., y]``, the score of each label (0 for an out-of-range label, as optax)."""
  is_label = jax.nn.one_hot(labels, s.shape[-1], dtype=bool)
  return jnp.sum(jnp.where(is_label, s, 0), axis=-1)


def multiclass_hinge_loss(
    scores: ArrayLike,
    labels: ArrayLike,
) -> jax.Array:
  r"""Multiclass hinge loss (Crammer-Singer).

  .. math::
    \ell = \max_j \big(s_j + 1 - [j = y]\big) - s_y

  Args:
    scores: scores :math:`s`, ``[..., num_classes]``, floating.
    labels: integer labels :math:`y`, ``[...]``.

  Returns:
    the losses, shape ``[...]``.

  References:
    Crammer and Singer, `On the Algorithmic Implementation of Multiclass
    Kernel-based Vector Machines
    <https://www.jmlr.org/papers/v2/crammer01a.html>`_, 2001.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> scores = jnp.array([[2.0, 1.5, 0.0], [0.0, 3.0, 1.0]])
    >>> print(losses.multiclass_hinge_loss(scores, jnp.array([0, 0])))
    [0.5 4. ]
  """
  s = _floating("multiclass_hinge_loss", "scores", scores)
  one_hot = jax.nn.one_hot(labels, s.shape[-1], dtype=s.dtype)
  return jnp.max(s + 1 - one_hot, axis=-1) - _label_scores(s, labels)


def multiclass_perceptron_loss(
    scores: ArrayLike,
    labels: ArrayLike,
) -> jax.Array:
  r"""Multiclass perceptron loss.

  .. math::
    \ell = \max_j s_j - s_y

  Args:
    scores: scores :math:`s`, ``[..., num_classes]``, floating.
    labels: integer labels :math:`y`, ``[...]``.

  Returns:
    the losses, shape ``[...]``.

  References:
    Collins, `Discriminative Training Methods for Hidden Markov Models
    <https://aclanthology.org/W02-1001/>`_, EMNLP 2002.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> scores = jnp.array([[2.0, 1.5, 0.0], [0.0, 3.0, 1.0]])
    >>> print(losses.multiclass_perceptron_loss(scores, jnp.array([0, 0])))
    [0. 3.]
  """
  s = _floating("multiclass_perceptron_loss", "scores", scores)
  return jnp.max(s, axis=-1) - _label_scores(s, labels)


# ------------------------------------------------------------ self-supervised


def triplet_margin_loss(
    anchors: ArrayLike,
    positives: ArrayLike,
    negatives: ArrayLike,
    axis: int = -1,
    norm_degree: ArrayLike = 2,
    margin: ArrayLike = 1.0,
    eps: ArrayLike = 1e-6,
) -> jax.Array:
  r"""Triplet margin loss: the positive must be nearer than the negative by a margin.

  .. math::
    d(u, v) = \Big(\sum_i |u_i - v_i|^q + \varepsilon\Big)^{1/q}, \qquad
    \ell = \max\big(d(a, p) - d(a, n) + m,\ 0\big)

  Args:
    anchors: anchor embeddings :math:`a`, ``[batch, feature_dim]``.
    positives: embeddings :math:`p` similar to the anchors, the same shape.
    negatives: embeddings :math:`n` dissimilar to them, the same shape.
    axis: the feature axis the distances sum over (default -1).
    norm_degree: the degree :math:`q > 0` of the norm (default 2).
    margin: the margin :math:`m` (default 1.0).
    eps: :math:`\varepsilon \ge 0`, added inside the root so its gradient
      stays finite at distance 0 (default 1e-6).

  Returns:
    the losses, ``[batch]``.

  References:
    Balntas et al, `Learning local feature descriptors with triplets and
    shallow convolutional neural networks
    <https://bmva-archive.org.uk/bmvc/2016/papers/paper119/abstract119.pdf>`_,
    BMVC 2016.

  Differences from optax:
    optax raises the signed difference :math:`(u_i - v_i)^q`, which is not a
    norm for odd :math:`q` (with ``norm_degree=1`` a distance can be
    negative); gradtx takes :math:`|u_i - v_i|^q`. The two agree for even
    :math:`q`, the default included.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> anchors = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> positives = jnp.array([[0.1, 0.1], [1.1, 1.1]])
    >>> negatives = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(np.asarray(losses.triplet_margin_loss(anchors, positives, negatives)).round(4))
    [0.1414 0.1414]
  """
  name = "triplet_margin_loss"
  a = _floating(name, "anchors", anchors)
  p = _floating(name, "positives", positives)
  n = _floating(name, "negatives", negatives)
  _check(name, "norm_degree", norm_degree, POSITIVE)
  _check(name, "eps", eps, NONNEGATIVE)
  dtype = a.dtype
  a = _wide(a)
  q = as_dtype(norm_degree, a.dtype)
  margin, eps = as_dtype(margin, a.dtype), as_dtype(eps, a.dtype)

  def distance(v: jax.Array) -> jax.Array:
    return (jnp.sum(jnp.abs(a - v.astype(a.dtype)) ** q, axis=axis) + eps) ** (1 / q)

  return jnp.maximum(distance(p) - distance(n) + margin, 0).astype(dtype)


def ntxent(
    embeddings: ArrayLike,
    labels: ArrayLike,
    temperature: ArrayLike = 0.07,
) -> jax.Array:
  r"""Normalized temperature-scaled cross entropy (NT-Xent, SimCLR's loss).

  With :math:`s_{ij}` the cosine similarity of embeddings :math:`i, j`
  divided by the temperature :math:`\tau`, :math:`P` the positive pairs
  (same label, :math:`i \ne j`) and :math:`N_i` the embeddings with another
  label than :math:`i`:

  .. math::
    \ell = -\frac{1}{|P|} \sum_{(i, j) \in P}
      \log \frac{e^{s_{ij}}}{e^{s_{ij}} + \sum_{k \in N_i} e^{s_{ik}}}

  Args:
    embeddings: the embeddings, ``[batch, feature_dim]``, floating.
    labels: group labels, ``[batch]``: embeddings with the same label form
      positive pairs (e.g. ``[0, 0, 1, 1]`` for two pairs).
    temperature: :math:`\tau > 0` (default 0.07).

  Returns:
    the scalar loss, averaged over the positive pairs.

  References:
    Chen et al, `A Simple Framework for Contrastive Learning of Visual
    Representations <https://arxiv.org/abs/2002.05709>`_, 2020.

  Differences from optax:
    A batch with no positive pair has loss 0 (optax: NaN, from 0/0).

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> emb = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> print(np.asarray(losses.ntxent(emb, jnp.array([0, 0, 1, 1]), 1.0)).round(4))
    0.6034
  """
  name = "ntxent"
  x = _floating(name, "embeddings", embeddings)
  labels = jnp.asarray(labels)
  _check(name, "temperature", temperature, POSITIVE)
  if x.ndim != 2 or labels.shape != x.shape[:1]:
    raise ValueError(
        f"{name}: embeddings must be [batch, feature_dim] and labels [batch], "
        f"got shapes {x.shape} and {labels.shape}")
  dtype = x.dtype
  x = _wide(x)
  eps = jnp.finfo(dtype).eps
  temperature = as_dtype(temperature, x.dtype)
  sim = _cosine_similarity(name, x[None, :, :], x[:, None, :], eps, -1, None) / temperature
  same = labels[:, None] == labels[None, :]
  positive = same & ~jnp.eye(x.shape[0], dtype=bool)
  negative_lse = jax.nn.logsumexp(sim, axis=1, where=~same, keepdims=True)  # -inf when none
  log_prob = sim - jnp.logaddexp(sim, negative_lse)
  count = jnp.maximum(jnp.sum(positive), 1).astype(x.dtype)
  return (-jnp.sum(jnp.where(positive, log_prob, 0)) / count).astype(dtype)


# --------------------------------------------------------- Fenchel-Young


class MaxFun(Protocol):
  """A convex "max" function of scores, such as ``logsumexp``."""

  def __call__(self, scores: jax.Array, *args: Any, **kwargs: Any) -> ArrayLike:
    ...


def make_fenchel_young_loss(max_fun: MaxFun) -> Callable[..., jax.Array]:
  r"""Builds the Fenchel-Young loss of a convex "max" function.

  .. math::
    \ell(s, y) = \Omega^*(s) - \langle y, s \rangle

  with :math:`\Omega^*` = ``max_fun`` applied over the last axis. With
  ``logsumexp`` this is the softmax cross entropy; with a sparsemax
  cumulant, the sparsemax loss.

  Args:
    max_fun: a function of a 1-D score vector (and optional extra
      arguments) returning a scalar.

  Returns:
    ``loss(scores, targets, *args, **kwargs)``, mapping over all leading
    axes (``[..., n]`` to ``[...]``); extra arguments go to ``max_fun``.

  References:
    Blondel et al, `Learning with Fenchel-Young Losses
    <https://arxiv.org/abs/1901.02324>`_, JMLR 2020.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from jax.scipy.special import logsumexp
    >>> from gradtx import losses
    >>> fy_loss = losses.make_fenchel_young_loss(logsumexp)
    >>> scores = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> targets = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> print(np.asarray(fy_loss(scores, targets)).round(4))
    [0.2761 2.9518]
  """
  vdot_last = jnp.vectorize(jnp.vdot, signature="(n),(n)->()")
  max_last = jnp.vectorize(max_fun, signature="(n)->()")

  def fenchel_young_loss(scores: ArrayLike, targets: ArrayLike, *args: Any,
                         **kwargs: Any) -> jax.Array:
    scores = jnp.asarray(scores)
    targets = jnp.asarray(targets).astype(scores.dtype)
    return max_last(scores, *args, **kwargs) - vdot_last(targets, scores)

  return fenchel_young_loss


def sparsemax_loss(
    logits: ArrayLike,
    labels: ArrayLike,
) -> jax.Array:
  r"""Binary sparsemax loss.

  .. math::
    \ell = \operatorname{sparseplus}(\pm x), \qquad
    \operatorname{sparseplus}(z) = \begin{cases}
      0 & z \le -1 \\ \tfrac14 (z + 1)^2 & |z| < 1 \\ z & z \ge 1
    \end{cases}

  with :math:`-x` for label 1 and :math:`+x` for label 0. It is zero
  exactly when ``jax.nn.sparse_sigmoid(logits) == labels``.

  Args:
    logits: logits :math:`x`, floating.
    labels: labels in :math:`\{0, 1\}` (any dtype, bool included; a
      nonzero label counts as 1), broadcastable to ``logits``.

  Returns:
    the losses, shaped like ``logits``.

  References:
    Blondel et al, `Learning with Fenchel-Young Losses
    <https://arxiv.org/abs/1901.02324>`_, JMLR 2020, Sec. 4.4.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.sparsemax_loss(jnp.array([2.0, 0.0, -3.0]), jnp.array([1, 1, 1])))
    [0.   0.25 3.  ]
  """
  x = _floating("sparsemax_loss", "logits", logits)
  return jax.nn.sparse_plus(jnp.where(jnp.asarray(labels).astype(bool), -x, x))


# sparsemax(s): the projection of each row (last axis) onto the probability simplex.
_sparsemax = jnp.vectorize(projection_simplex, signature="(n)->(n)")


def multiclass_sparsemax_loss(
    scores: ArrayLike,
    labels: ArrayLike,
) -> jax.Array:
  r"""Multiclass sparsemax loss.

  With :math:`p = \operatorname{sparsemax}(s)`, the Euclidean projection of
  :math:`s` onto the probability simplex:

  .. math::
    \ell = \langle p, s \rangle + \tfrac12 (1 - \|p\|^2) - s_y

  Its gradient is :math:`p - e_y`; it is zero exactly when sparsemax puts
  all its mass on the label. It is computed on :math:`s - s_y` (the loss
  does not change when a constant is added to all scores), so large scores
  do not cancel.

  Args:
    scores: scores :math:`s`, ``[..., num_classes]``, floating.
    labels: integer labels :math:`y`, ``[...]``.

  Returns:
    the losses, ``[...]``.

  References:
    Martins and Astudillo, `From Softmax to Sparsemax: A Sparse Model of
    Attention and Multi-Label Classification
    <https://arxiv.org/abs/1602.02068>`_, ICML 2016.

  Differences from optax:
    optax accepts exactly one batch axis (``[batch, num_classes]``); gradtx
    maps over any number of leading axes.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> scores = jnp.array([[2.0, 0.5, 0.0], [0.1, 0.2, 0.3]])
    >>> print(np.asarray(losses.multiclass_sparsemax_loss(scores, jnp.array([0, 0]))).round(4))
    [0.     0.4433]
  """
  s = _floating("multiclass_sparsemax_loss", "scores", scores)
  dtype = s.dtype
  s = _wide(s)
  # The loss is unchanged when a constant is added to every score; measuring
  # the scores from the label's first keeps large scores from cancelling.
  z = s - _label_scores(s, labels)[..., None]
  p = _sparsemax(z)
  loss = jnp.sum(jnp.where(p > 0, p * z, 0), axis=-1) + 0.5 * (1 - jnp.sum(jnp.square(p), axis=-1))
  return loss.astype(dtype)


# ------------------------------------------------------------------- ranking


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
    where: valid items (default all); invalid ones are left out of both sums.
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
  dtype = x.dtype
  x = _wide(x)
  y = jnp.asarray(labels).astype(x.dtype)
  if weights is not None:
    y = y * jnp.asarray(weights).astype(x.dtype)
  where = None if where is None else jnp.asarray(where)
  terms = _times_log(y, _log_softmax(x, -1, where))
  if where is not None:
    terms = jnp.where(where, terms, 0)
  loss = -jnp.sum(terms, axis=-1)
  lists = None if where is None else jnp.any(where, axis=-1)
  return _safe_reduce(loss, lists, reduce_fn).astype(dtype)


# -------------------------------------------------------------- segmentation


_REDUCTIONS = ("mean", "sum", "none")


def _check_probabilities(loss: str, p: jax.Array) -> None:
  """Raises unless concrete ``p`` holds probabilities over its last (class) axis.

  Several classes must sum to 1, to the precision of ``p``'s dtype; a single
  channel (binary, sigmoid) must lie in :math:`[0, 1]`.
  """
  if p.shape[-1] == 1:
    low, high = float(jnp.min(p)), float(jnp.max(p))
    if not 0 <= low <= high <= 1:
      raise ValueError(
          f"{loss}: with apply_softmax=False, single-channel predictions must be "
          f"probabilities in [0, 1]; they range over [{low:.6f}, {high:.6f}]")
    return
  sums = jnp.sum(_wide(p), axis=-1)
  tolerance = max(1e-5, 2 * float(jnp.finfo(p.dtype).eps))
  if not bool(jnp.all(jnp.abs(sums - 1) <= tolerance)):
    raise ValueError(
        f"{loss}: with apply_softmax=False, predictions must sum to 1 over the "
        f"class axis; sums range over [{float(jnp.min(sums)):.6f}, "
        f"{float(jnp.max(sums)):.6f}]")


def dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    class_weights: ArrayLike | None = None,
    smooth: ArrayLike = 1.0,
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.5,
    apply_softmax: bool = True,
    reduction: str = "mean",
    ignore_background: bool = False,
    axis: int | tuple[int, ...] | None = None,
) -> jax.Array:
  r"""Soft Dice (Tversky) loss for segmentation, per class then reduced.

  With :math:`p` the probabilities (softmax over classes, or a sigmoid for a
  single channel) and :math:`t` the one-hot targets, summing over ``axis``:

  .. math::
    I_c = \sum_i p_{ic} t_{ic}, \quad P_c = \sum_i p_{ic}, \quad
    T_c = \sum_i t_{ic}, \\
    \ell_c = 1 - \frac{I_c + \text{smooth}}
      {I_c + \alpha (P_c - I_c) + \beta (T_c - I_c) + \text{smooth}}

  :math:`\alpha = \beta = 1/2` is the Dice loss; other values weigh false
  positives (:math:`\alpha`) against false negatives (:math:`\beta`), the
  Tversky loss.

  Args:
    predictions: logits (or probabilities, see ``apply_softmax``),
      ``[..., num_classes]``, or ``[..., 1]`` / ``[...]`` for binary.
    targets: one-hot targets of the same shape (or ``[...]`` for binary).
    class_weights: per-class weights, ``[num_classes]`` (default equal).
    smooth: the smoothing term (default 1.0).
    alpha: the false-positive weight :math:`\alpha` (default 0.5).
    beta: the false-negative weight :math:`\beta` (default 0.5).
    apply_softmax: turn logits into probabilities first (default True); if
      False, ``predictions`` must sum to 1 over classes, or lie in
      :math:`[0, 1]` for a single channel (checked when not traced).
    reduction: over classes, ``"mean"`` (default), ``"sum"`` or ``"none"``.
    ignore_background: leave class 0 out (default False).
    axis: the axes to sum over; default all but the first and the last.

  Returns:
    ``[batch]`` losses, or ``[batch, num_classes]`` for ``reduction="none"``.

  References:
    Milletari et al, `V-Net: Fully Convolutional Neural Networks for
    Volumetric Medical Image Segmentation
    <https://arxiv.org/abs/1606.04797>`_, 2016; Salehi et al, `Tversky loss
    function for image segmentation <https://arxiv.org/abs/1706.05721>`_,
    2017.

  Differences from optax:
    optax's check that probabilities sum to 1 (``apply_softmax=False``)
    fails under ``jax.jit``; gradtx checks only concrete arrays, so the
    loss jits. optax also applies that check to a single (sigmoid) channel,
    so it rejects every binary probability map but all ones; gradtx checks
    that a single channel lies in :math:`[0, 1]`. The sum's tolerance is
    ``max(1e-5, 2 eps)`` of the dtype (optax: ``rtol=1e-5`` for all dtypes,
    which rejects a bfloat16 softmax). An unknown ``reduction`` raises
    before any computation.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([[[2.0, -2.0], [-1.0, 1.0], [0.0, 0.0]]])  # [1, 3, 2]
    >>> targets = jnp.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    >>> print(np.asarray(losses.dice_loss(logits, targets)).round(4))
    [0.1293]
  """
  name = "dice_loss"
  if reduction not in _REDUCTIONS:
    raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
  p = _floating(name, "predictions", predictions)
  t = jnp.asarray(targets)
  if p.ndim == t.ndim - 1:
    p = p[..., None]
  if t.ndim == p.ndim - 1:
    t = t[..., None]
  _same_shape(name, "predictions", p, "targets", t)
  if not apply_softmax and not isinstance(p, jax.core.Tracer):
    _check_probabilities(name, p)
  dtype = p.dtype
  p = _wide(p)
  t = t.astype(p.dtype)
  if apply_softmax:
    p = jax.nn.sigmoid(p) if p.shape[-1] == 1 else jax.nn.softmax(p, axis=-1)
  axis = tuple(range(1, p.ndim - 1)) if axis is None else axis
  intersection = jnp.sum(p * t, axis=axis)
  p_sum = jnp.sum(p, axis=axis)
  t_sum = jnp.sum(t, axis=axis)
  smooth, alpha, beta = (as_dtype(v, p.dtype) for v in (smooth, alpha, beta))
  denominator = (intersection + alpha * (p_sum - intersection)
                 + beta * (t_sum - intersection) + smooth)
  loss = 1 - (intersection + smooth) / denominator
  if class_weights is not None:
    class_weights = jnp.asarray(class_weights)
    _rank(name, "class_weights", class_weights, 1)
    loss = loss * jnp.broadcast_to(class_weights.astype(p.dtype), loss.shape)
  if ignore_background and p.shape[-1] > 1:
    loss = loss[..., 1:]
  if reduction == "mean":
    loss = jnp.mean(loss, axis=-1)
  elif reduction == "sum":
    loss = jnp.sum(loss, axis=-1)
  return loss.astype(dtype)


def binary_dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    apply_sigmoid: bool = True,
) -> jax.Array:
  r"""Dice loss for binary segmentation (one channel, sigmoid).

  .. math::
    \ell = 1 - \frac{2 \sum_i p_i t_i + 2\,\text{smooth}}
                    {\sum_i p_i + \sum_i t_i + 2\,\text{smooth}},
    \qquad p = \sigma(x)

  which is :func:`dice_loss` with :math:`\alpha = \beta = 1/2` on one
  channel, summed over all axes but the first.

  Args:
    predictions: logits (or probabilities), ``[...]`` or ``[..., 1]``.
    targets: binary targets, the same shape.
    smooth: the smoothing term (default 1.0).
    apply_sigmoid: apply a sigmoid first (default True); if False,
      ``predictions`` are probabilities in :math:`[0, 1]` (checked when not
      traced).

  Returns:
    ``[batch]`` losses.

  References:
    Milletari et al, `V-Net <https://arxiv.org/abs/1606.04797>`_, 2016.

  Differences from optax:
    With ``apply_sigmoid=False`` optax checks that the single channel sums
    to 1 over classes, so it raises for any probability map that is not all
    ones; gradtx checks that the probabilities lie in :math:`[0, 1]`.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([[3.0, -3.0, 0.0, 2.0]])
    >>> targets = jnp.array([[1.0, 0.0, 0.0, 1.0]])
    >>> print(np.asarray(losses.binary_dice_loss(logits, targets)).round(4))
    [0.1119]
  """
  p = _floating("binary_dice_loss", "predictions", predictions)
  t = jnp.asarray(targets)
  if p.ndim == t.ndim and p.shape[-1] != 1:
    p, t = p[..., None], t[..., None]
  return dice_loss(p, t, smooth=smooth, apply_softmax=apply_sigmoid, reduction="mean")


def multiclass_generalized_dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    apply_softmax: bool = True,
    ignore_background: bool = False,
) -> jax.Array:
  r"""Generalized Dice loss: Dice per class, weighted by inverse squared class volume.

  .. math::
    w_c \propto \frac{1}{T_c^2 + 10^{-7}}, \quad \sum_c w_c = C, \qquad
    \ell = \operatorname{mean}_{b, c}\ w_c\, \ell^{\text{dice}}_{bc}

  with :math:`T_c` the target volume of class :math:`c` over the whole batch
  and :math:`\ell^{\text{dice}}` the per-class :func:`dice_loss`.

  Args:
    predictions: logits, ``[..., num_classes]``.
    targets: one-hot targets, the same shape.
    smooth: the smoothing term (default 1.0).
    apply_softmax: apply a softmax first (default True).
    ignore_background: leave class 0 out (default False).

  Returns:
    the scalar loss.

  References:
    Sudre et al, `Generalised Dice overlap as a deep learning loss function
    for highly unbalanced segmentations <https://arxiv.org/abs/1707.03237>`_,
    2017.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([[[2.0, -2.0], [-1.0, 1.0], [0.0, 0.0]]])
    >>> targets = jnp.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    >>> print(np.asarray(losses.multiclass_generalized_dice_loss(logits, targets)).round(4))
    0.1386
  """
  name = "multiclass_generalized_dice_loss"
  p = _floating(name, "predictions", predictions)
  t = jnp.asarray(targets)
  _same_shape(name, "predictions", p, "targets", t)
  volumes = jnp.sum(_wide(t.astype(p.dtype)), axis=tuple(range(t.ndim - 1)))
  weights = 1 / (volumes**2 + 1e-7)
  weights = weights / jnp.sum(weights) * weights.shape[0]
  per_class = dice_loss(p, t, class_weights=weights, smooth=smooth,
                        apply_softmax=apply_softmax, reduction="none",
                        ignore_background=ignore_background)
  return jnp.mean(per_class)


# ----------------------------------------------------------------------- CTC


def ctc_loss_with_forward_probs(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""CTC loss, with the forward (alpha) log probabilities.

  The loss of a sequence is the negative log probability of its label
  sequence :math:`y_{1:N}` summed over all alignments :math:`\pi` of length
  :math:`T` that reduce to it after merging repeats and dropping blanks
  :math:`\phi`:

  .. math::
    \ell = -\log \sum_{\pi \in \mathcal{B}^{-1}(y)} \prod_{t=1}^T
      p_t(\pi_t)

  computed by the forward recursion over the two states "last emitted
  :math:`y_n`" and "blank after :math:`y_n`":

  .. math::
    \alpha_{\mathrm{BLANK}}(t, n) =
      \sum_{\pi_{1:t}:\ \pi_t = \phi,\ \mathcal{B}(\pi_{1:t}) = y_{1:n}}
        \prod_{\tau \le t} p_\tau(\pi_\tau), \qquad
    \alpha_{\mathrm{LABEL}}(t, n) =
      \sum_{\pi_{1:t}:\ \pi_t = y_n,\ \mathcal{B}(\pi_{1:t}) = y_{1:n}}
        \prod_{\tau \le t} p_\tau(\pi_\tau)

  Args:
    logits: ``[B, T, K]`` logits, ``K`` classes including the blank.
    logit_paddings: ``[B, T]``, 1.0 where a frame is padding, else 0.0.
    labels: ``[B, N]`` integer labels.
    label_paddings: ``[B, N]``, 1.0 where a label is padding; labels must
      be right-padded (zeros then ones in each row).
    blank_id: the class of the blank symbol (default 0).
    log_epsilon: the stand-in for :math:`\log 0` (default -1e5).

  Returns:
    ``(loss, logalpha_blank, logalpha_nonblank)``: ``[B]`` losses and two
    ``[T, B, N+1]`` / ``[T, B, N]`` arrays of
    :math:`\log\alpha_{\mathrm{BLANK}}` and :math:`\log\alpha_{\mathrm{LABEL}}`.

  References:
    Graves et al, `Connectionist Temporal Classification: Labelling
    Unsegmented Sequence Data with Recurrent Neural Networks
    <https://doi.org/10.1145/1143844.1143891>`_, ICML 2006.

  Differences from optax:
    The recursion runs in the dtype of ``logits`` (optax mixes in float32
    constants, which fails under strict dtype promotion for float64 logits)
    and in float32 for 16-bit logits.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.zeros((1, 3, 2))  # uniform over {blank, a}
    >>> loss, _, _ = losses.ctc_loss_with_forward_probs(
    ...     logits, jnp.zeros((1, 3)), jnp.array([[1]]), jnp.zeros((1, 1)))
    >>> print(np.asarray(loss).round(4))  # 6 of 8 alignments give "a"
    [0.2877]
  """
  name = "ctc_loss_with_forward_probs"
  x = _floating(name, "logits", logits)
  labels = _integer(name, "labels", labels)
  logit_paddings = jnp.asarray(logit_paddings)
  label_paddings = jnp.asarray(label_paddings)
  _rank(name, "logits", x, 3)
  _rank(name, "labels", labels, 2)
  _same_shape(name, "labels", labels, "label_paddings", label_paddings)
  if logit_paddings.shape != x.shape[:2]:
    raise ValueError(
        f"{name}: logit_paddings must have shape {x.shape[:2]} (logits' [B, T]), "
        f"got {logit_paddings.shape}")
  batch, _, num_classes = x.shape
  if labels.shape[0] != batch:
    raise ValueError(
        f"{name}: labels must have batch size {batch} (as logits), got {labels.shape[0]}")
  if not 0 <= operator.index(blank_id) < num_classes:
    raise ValueError(f"{name}: blank_id must be in [0, {num_classes}), got {blank_id!r}")
  max_label_len = labels.shape[1]
  dtype = x.dtype
  x = _wide(x)
  ctype = x.dtype
  log_eps = as_dtype(log_epsilon, ctype)

  logprobs = jax.nn.log_softmax(x)
  label_lens = max_label_len - jnp.sum(label_paddings, axis=1).astype(jnp.int32)
  # repeat[b, n] = 1 when labels[b, n] == labels[b, n + 1].
  repeat = (labels[:, :-1] == labels[:, 1:]).astype(ctype)
  repeat = jnp.pad(repeat, ((0, 0), (0, 1)))

  logprobs_phi = jnp.transpose(logprobs[:, :, blank_id:blank_id + 1], (1, 0, 2))  # [T, B, 1]
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=ctype)  # [B, N, K]
  logprobs_emit = jnp.transpose(jnp.einsum("btk,bnk->btn", logprobs, one_hot), (1, 0, 2))

  phi_init = jnp.full((batch, max_label_len + 1), log_eps, ctype).at[:, 0].set(0)
  emit_init = jnp.full((batch, max_label_len), log_eps, ctype)

  def add_to_phi(phi: jax.Array, score: jax.Array) -> jax.Array:
    # phi[:, 1:] += score, in log space.
    return jnp.concatenate([phi[:, :1], jnp.logaddexp(phi[:, 1:], score)], axis=-1)

  def step(carry: tuple[jax.Array, jax.Array], xs: tuple[jax.Array, ...]):
    prev_phi, prev_emit = carry
    logprob_emit, logprob_phi, pad = xs
    # emit -> blank epsilon transition, except before a repeated label.
    phi_eps = add_to_phi(prev_phi, prev_emit + log_eps * repeat)
    next_emit = jnp.logaddexp(phi_eps[:, :-1] + logprob_emit, prev_emit + logprob_emit)
    next_phi = add_to_phi(phi_eps + logprob_phi,
                          prev_emit + logprob_phi + log_eps * (1 - repeat))
    pad = pad.reshape((batch, 1)).astype(ctype)
    next_emit = pad * prev_emit + (1 - pad) * next_emit
    next_phi = pad * prev_phi + (1 - pad) * next_phi
    return (next_phi, next_emit), (next_phi, next_emit)

  xs = (logprobs_emit, logprobs_phi, jnp.transpose(logit_paddings, (1, 0)))
  _, (logalpha_phi, logalpha_emit) = jax.lax.scan(step, (phi_init, emit_init), xs)

  # The last frame still takes its final epsilon transition.
  last_phi = add_to_phi(logalpha_phi[-1], logalpha_emit[-1])
  logalpha_phi = logalpha_phi.at[-1].set(last_phi)
  loss = -jnp.take_along_axis(last_phi, label_lens[:, None], axis=1)[:, 0]
  return loss.astype(dtype), logalpha_phi.astype(dtype), logalpha_emit.astype(dtype)


def ctc_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
) -> jax.Array:
  r"""CTC loss of each sequence in a batch.

  .. math::
    \ell = -\log \sum_{\pi \in \mathcal{B}^{-1}(y)} \prod_{t=1}^T p_t(\pi_t)

  See :func:`ctc_loss_with_forward_probs` for the recursion and the
  arguments.

  Args:
    logits: ``[B, T, K]`` logits, ``K`` classes including the blank.
    logit_paddings: ``[B, T]``, 1.0 where a frame is padding.
    labels: ``[B, N]`` integer labels, right-padded.
    label_paddings: ``[B, N]``, 1.0 where a label is padding.
    blank_id: the class of the blank symbol (default 0).
    log_epsilon: the stand-in for :math:`\log 0` (default -1e5).

  Returns:
    ``[B]`` losses.

  References:
    Graves et al, `Connectionist Temporal Classification
    <https://doi.org/10.1145/1143844.1143891>`_, ICML 2006.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.zeros((1, 3, 3))  # uniform over {blank, a, b}
    >>> labels = jnp.array([[1, 2]])  # "ab"
    >>> loss = losses.ctc_loss(logits, jnp.zeros((1, 3)), labels, jnp.zeros((1, 2)))
    >>> print(np.asarray(loss).round(4))  # 5 of 27 alignments: log(27/5)
    [1.6864]
  """
  loss, _, _ = ctc_loss_with_forward_probs(
      logits, logit_paddings, labels, label_paddings,
      blank_id=blank_id, log_epsilon=log_epsilon)
  return loss
