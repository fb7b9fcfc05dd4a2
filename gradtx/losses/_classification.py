"""Classification losses: cross entropies, label smoothing, focal, poly, hinge and perceptron."""

from __future__ import annotations

import math
import operator
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.core import ANY, NONNEGATIVE, UNIT, check_argument, check_axis
from gradtx.losses._common import (
    ArrayLike, Axis, _floating, _integer, _wide, _same_shape, _expand_where, _some,
    _log_softmax, _max_shift, _no_gradient_where, _times_log, _label_scores, _broadcast_shape,
    _broadcastable, _labels, _some_classes, _class_labels, _nan_unless)
from gradtx.numerics import as_dtype


# ------------------------------------------------------------------- smoothing


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
  check_axis("smooth_labels", axis)
  check_argument("smooth_labels", "alpha", alpha, UNIT)
  alpha = as_dtype(alpha, y.dtype)
  if where is None:
    return (1 - alpha) * y + alpha / jnp.asarray(jnp.size(y, axis), y.dtype)
  where = jnp.asarray(where)
  if _broadcast_shape(where.shape, y.shape) != y.shape:  # else other classes count silently
    raise ValueError(f"smooth_labels: where must broadcast to the shape of labels, {y.shape}, "
                     f"got {where.shape}")
  k = jnp.sum(where, axis=axis, keepdims=True)
  uniform = jnp.where(k > 0, alpha / jnp.maximum(k, 1).astype(y.dtype), 0)
  return (1 - alpha) * y + uniform


# -------------------------------------------------------------- classification


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
      class included has loss 0; a class left out reaches no gradient, its
      label's included, whatever its logit (``-inf`` or NaN too).

  Returns:
    the cross entropies, shape ``[...]``, in the dtype of ``logits``.

  References:
    `Cross entropy <https://en.wikipedia.org/wiki/Cross-entropy>`_,
    Wikipedia; Bishop, *Pattern Recognition and Machine Learning*, 2006,
    Sec. 4.3.4.

  Differences from optax:
    A ``-inf`` logit with a zero label contributes 0 (optax: NaN, its
    ``safe_softmax_cross_entropy`` exists for this); here the function is
    that safe version, with the same finite gradients. A class left out by
    ``where`` with a ``-inf`` or NaN logit and a positive label has label
    gradient 0 (optax: NaN).

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> print(np.asarray(losses.softmax_cross_entropy(logits, labels)).round(4))
    [0.2761 2.9518]
  """
  return _softmax_cross_entropy("softmax_cross_entropy", logits, labels, axis, where)


def _softmax_cross_entropy(loss: str, logits: ArrayLike, labels: ArrayLike, axis: Axis,
                           where: ArrayLike | None) -> jax.Array:
  """:func:`softmax_cross_entropy`, its checks raising under the name of ``loss``, the
  function called."""
  x = _floating(loss, "logits", logits)
  check_axis(loss, axis)
  _broadcastable(loss, "logits", x, "labels", labels)
  dtype = x.dtype
  x = _wide(x)
  y = jnp.asarray(labels).astype(x.dtype)
  where = _expand_where(loss, where, x.shape, axis)
  log_p, dead = _log_softmax(x, axis, where)
  terms = _times_log(y, log_p)
  if where is not None:
    terms = jnp.where(where, terms, 0)
  # A row whose every class is ruled out: inf (or 0 without a label), its gradient 0.
  return _no_gradient_where(jnp.squeeze(dead, axis), -jnp.sum(terms, axis=axis)).astype(dtype)


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
  return _softmax_cross_entropy("safe_softmax_cross_entropy", logits, labels, -1, None)


def _class_axes(loss: str, axis: Any, ndim: int) -> tuple[int, ...]:
  """``axis`` (an int or a tuple of ints) as non-negative axes of an ``ndim`` array."""
  check_axis(loss, axis, none=False)
  axes = tuple(operator.index(a) for a in (axis if isinstance(axis, tuple) else (axis,)))
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
      ``[...]``. A label in ``[-num_classes, 0)`` counts from the end, as a
      numpy index (as optax); one outside ``[-num_classes, num_classes)``
      gives NaN (as optax), its gradient 0.
    axis: the class axis (default -1), or a tuple of axes: then the label is
      a flat (row-major) index into the ``logits[axis]`` slice.
    where: the classes to include, shaped like ``logits`` or like the
      result; a row whose label's class is left out has loss 0, as in
      :func:`softmax_cross_entropy` with the one-hot labels, and so has a
      row with no class included, whatever its label: mask padding
      examples (torch's ``ignore_index``) here, e.g. ``where=labels >= 0``.

  Returns:
    the cross entropies, shape ``[...]``, in the dtype of ``logits``.

  Raises:
    TypeError: ``logits`` is not floating, ``labels`` not integer, or
      ``axis`` not an int or a tuple of ints.
    ValueError: ``axis`` is out of bounds or repeats an axis, ``logits``
      have no class, or ``labels`` does not have the shape of ``logits``
      without the class axes.

  References:
    `Multinomial logistic regression
    <https://en.wikipedia.org/wiki/Multinomial_logistic_regression>`_,
    Wikipedia.

  Differences from optax:
    A label at a class ``where`` leaves out has loss 0 and gradient 0;
    optax returns the normaliser over the included classes minus the
    label's logit, which can be negative. A label outside
    ``[-num_classes, num_classes)`` has gradient 0 (optax: the softmax, the
    gradient of a loss without its label's term), and loss 0 in a row
    ``where`` leaves out (optax: NaN).

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
  _some_classes(name, "logits", x, axes)
  dtype = x.dtype
  x = _wide(x)
  where = _expand_where(name, where, x.shape, axes)
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
  some = _some(where, axis)
  # Both terms from the row's largest logit: four logits of 1e4 lost log 4 to float32's
  # steps of 1e-3 near 1e4, and two at float32's max gave log 2 = 0. The shift is fused
  # into the sum and the gather, not applied to the logits (a pass over them).
  top, shift = _max_shift(x, axis, some)
  label_logits = jnp.take_along_axis(x, jnp.expand_dims(y, axis), axis=axis)
  z = x - shift
  if some is not None:
    # Left out before the exp too, not only after it (jnp.sum's where): a left-out logit 88
    # above the max, or NaN, had an exp' of inf or NaN, times its zero cotangent NaN. Set
    # to 0, not -inf: exp(-inf) made the forward pass 10% slower on CPU.
    z = jnp.where(some, z, 0)
  total = jnp.sum(jnp.exp(z), axis=axis, where=some, keepdims=True)
  # A row whose every logit is -inf: the label's probability is 0, so its loss is inf,
  # as softmax_cross_entropy's, not log 0 - (-inf) = NaN; its sum is taken as 1 (per
  # row, not a pass over the logits) so that its gradient is 0, not 0 / 0.
  dead = top == -jnp.inf
  out = jnp.where(dead, jnp.inf,
                  jnp.log(jnp.where(dead, 1, total)) - (label_logits - shift)).squeeze(axis)
  # A label that names no class: NaN (the gather's fill), and gradient 0, not the
  # softmax's, a loss without its label's term.
  _, valid = _class_labels(y, x.shape[axis])
  if where is not None:
    # A label at a class where leaves out (so in a row with none included too) has loss 0
    # and gradient 0, as its one-hot label's in softmax_cross_entropy: the normaliser
    # over the included classes minus the label's logit was negative.
    kept = (where if where.shape[axis] == 1 else
            jnp.take_along_axis(where, jnp.expand_dims(y, axis), axis=axis, mode="fill",
                                fill_value=False))
    out = jnp.where(kept.squeeze(axis), out, 0)
    # A row with no class included is left out whatever its label (padding, with any
    # label), where a label that names no class in a row still included stays NaN.
    valid = valid | ~jnp.any(where, axis=axis)
  return _nan_unless(valid, out).astype(dtype)


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
  _broadcastable("sigmoid_binary_cross_entropy", "logits", x, "labels", labels)
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
  its gradient stays finite for :math:`\gamma < 1` and large logits, and so
  does its second derivative where :math:`1 - p_t` is tiny (:math:`y = 1`,
  :math:`x = 50`).

  Args:
    logits: logits :math:`x`, floating.
    labels: labels in :math:`\{0, 1\}` or :math:`[0, 1]`, broadcastable to
      ``logits``.
    alpha: the weight :math:`\alpha \in [0, 1]` of the positive class, or
      None (default) for no weighting. Where :math:`\alpha_t = 0` the loss is
      0, an infinite cross entropy's too (optax's is NaN there).
    gamma: the focusing exponent :math:`\gamma \ge 0` (default 2.0);
      :math:`\gamma = 0` is the cross entropy.

  Returns:
    the losses, shaped like ``logits``.

  References:
    Lin et al, `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, 2017.

  Differences from optax:
    Infinite logits give the limit values and finite gradients (optax: NaN
    for :math:`x=\pm\infty`, in value and gradient). The gradient with
    respect to labels of exactly 0 or 1 is exact (optax drops the weight's
    part of it there).

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
  _broadcastable(name, "logits", x, "labels", labels)
  check_argument(name, "gamma", gamma, NONNEGATIVE)
  if alpha is not None:
    check_argument(name, "alpha", alpha, UNIT)
  dtype = x.dtype
  x = _wide(x)
  y = jnp.asarray(labels).astype(x.dtype)
  gamma = as_dtype(gamma, x.dtype)
  log_p, log_q = jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
  ce = -_times_log(y, log_p) - _times_log(1 - y, log_q)
  # 1 - p_t = (1 - y) p + y q, summed from exp(log p - shift) and exp(log q - shift) times
  # the labels themselves: added as log(1 - y) and log(y), a binary label's log 0 had a
  # zero derivative, which dropped a term of the gradient with respect to the labels.
  # The shift is the log of the larger of the two weighted terms, so the sum is in [1, 2]:
  # shifted by max(log p, log q) instead, a confident right answer (y = 1, x = 50) summed
  # to e^-50, whose square underflows, and the second derivative of its log was NaN. A
  # term weighed 0 can lie far above the shift: its exponent is capped so that it stays
  # finite (0 * inf was NaN); with a positive weight it is at most -log(weight) anyway.
  # Where neither weighted log is finite (a label outside [0, 1]; p_t = 1 exactly, at an
  # infinite logit) the shift is the larger log, max(log p, log q) >= log(1/2). A weight
  # of 0 (a binary label) gives the least finite log, not log 0: an infinity made on the
  # way raised FloatingPointError at each eager call under jax_debug_infs.
  ys, lps, lqs = (jax.lax.stop_gradient(v) for v in (y, log_p, log_q))
  least = jnp.finfo(x.dtype).min

  def weighted_log(w, log_v):
    return jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1)) + log_v, least)

  weighted = jnp.maximum(weighted_log(1 - ys, lps), weighted_log(ys, lqs))
  shift = jnp.where(jnp.isfinite(weighted) & (weighted > least), weighted,
                    jnp.maximum(lps, lqs))
  cap = math.log(jnp.finfo(x.dtype).max) - 2  # e^cap times the weights' sum (<= 2), finite
  total = ((1 - y) * jnp.exp(jnp.minimum(log_p - shift, cap))
           + y * jnp.exp(jnp.minimum(log_q - shift, cap)))
  # p_t = 1 exactly (an infinite logit): log(1 - p_t) is -inf, held at the
  # least finite value so that exp(gamma * it) is 0, or 1 when gamma = 0.
  log_one_minus_pt = jnp.where(total > 0, shift + jnp.log(jnp.where(total > 0, total, 1)),
                               jnp.finfo(x.dtype).min)
  weight = jnp.exp(gamma * log_one_minus_pt)
  # An infinite logit on the side the label rules out: the cross entropy is inf and the
  # weight's derivative exactly 0, so the weight is held constant there, giving the limit
  # gradient (the cross entropy's times the weight) instead of inf * 0 = NaN.
  infinite = jnp.isinf(ce)
  loss = jnp.where(infinite, ce * jax.lax.stop_gradient(weight),
                   jnp.where(infinite, 0, ce) * weight)
  if alpha is not None:
    alpha = as_dtype(alpha, x.dtype)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    # A class weighed 0 (alpha 0 or 1) counts for nothing, its infinite losses too:
    # 0 * inf was NaN, as in optax, and made the batch's mean NaN.
    loss = jnp.where(alpha_t == 0, 0, alpha_t * loss)
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
  check_axis(name, axis)
  _floating(name, "labels", labels)
  _broadcastable(name, "logits", x, "labels", labels)
  dtype = x.dtype
  x = _wide(x)
  y = jnp.asarray(labels).astype(x.dtype)
  check_argument(name, "epsilon", epsilon, ANY)  # the paper's epsilon >= -1 is advice, not a bound
  epsilon = as_dtype(epsilon, x.dtype)
  where = _expand_where(name, where, x.shape, axis)
  log_p, dead = _log_softmax(x, axis, where)  # 0 for a left-out class: its exp is finite
  # softmax_cross_entropy's sum, on the log-softmax computed once for both terms.
  ce = -jnp.sum(_times_log(y, log_p), axis=axis, where=where)
  one_minus_pt = jnp.sum(y * -jnp.expm1(log_p), axis=axis, where=where)
  return _no_gradient_where(jnp.squeeze(dead, axis), ce + epsilon * one_minus_pt).astype(dtype)


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
  _broadcastable("hinge_loss", "predictor_outputs", s, "targets", targets)
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


def multiclass_hinge_loss(
    scores: ArrayLike,
    labels: ArrayLike,
) -> jax.Array:
  r"""Multiclass hinge loss (Crammer-Singer).

  .. math::
    \ell = \max_j \big(s_j + 1 - [j = y]\big) - s_y

  Args:
    scores: scores :math:`s`, ``[..., num_classes]``, floating.
    labels: integer labels :math:`y` in ``[0, num_classes)``, ``[...]``
      (whole-number floats are read as class indices, as optax reads them).
      A label in ``[-num_classes, 0)`` counts from the end, as a numpy
      index; one that names no class (outside ``[-num_classes,
      num_classes)``, or a fraction) gives NaN, its gradient 0.

  Returns:
    the losses, shape ``[...]``.

  References:
    Crammer and Singer, `On the Algorithmic Implementation of Multiclass
    Kernel-based Vector Machines
    <https://www.jmlr.org/papers/v2/crammer01a.html>`_, 2001.

  Differences from optax:
    optax reads a label that is negative, past the last class or a
    fraction as no class, a finite loss :math:`\max_j s_j + 1` that
    trains the top score down; here a negative label counts from the end (as
    in :func:`softmax_cross_entropy_with_integer_labels`) and the others
    give NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> scores = jnp.array([[2.0, 1.5, 0.0], [0.0, 3.0, 1.0]])
    >>> print(losses.multiclass_hinge_loss(scores, jnp.array([0, 0])))
    [0.5 4. ]
  """
  s = _floating("multiclass_hinge_loss", "scores", scores)
  labels, valid = _class_labels(_labels("multiclass_hinge_loss", s, labels), s.shape[-1])
  dtype = s.dtype
  # In float32 for 16-bit scores: s + 1 rounded the margin away where the scores' rounding
  # step is near 1 (bfloat16 near 300, float16 near 2000 gave 0 for 1).
  s = _wide(s)
  one_hot = jax.nn.one_hot(labels, s.shape[-1], dtype=s.dtype)
  loss = jnp.max(s + 1 - one_hot, axis=-1) - _label_scores(s, labels)
  return _nan_unless(valid, loss).astype(dtype)


def multiclass_perceptron_loss(
    scores: ArrayLike,
    labels: ArrayLike,
) -> jax.Array:
  r"""Multiclass perceptron loss.

  .. math::
    \ell = \max_j s_j - s_y

  Args:
    scores: scores :math:`s`, ``[..., num_classes]``, floating.
    labels: integer labels :math:`y` in ``[0, num_classes)``, ``[...]``
      (whole-number floats are read as class indices, as optax reads them).
      A label in ``[-num_classes, 0)`` counts from the end, as a numpy
      index; one that names no class (outside ``[-num_classes,
      num_classes)``, or a fraction) gives NaN, its gradient 0.

  Returns:
    the losses, shape ``[...]``.

  References:
    Collins, `Discriminative Training Methods for Hidden Markov Models
    <https://aclanthology.org/W02-1001/>`_, EMNLP 2002.

  Differences from optax:
    optax reads a label that is negative, past the last class or a
    fraction as no class, a finite loss :math:`\max_j s_j` that trains the
    top score down; here a negative label counts from the end (as in
    :func:`softmax_cross_entropy_with_integer_labels`) and the others give
    NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> scores = jnp.array([[2.0, 1.5, 0.0], [0.0, 3.0, 1.0]])
    >>> print(losses.multiclass_perceptron_loss(scores, jnp.array([0, 0])))
    [0. 3.]
  """
  s = _floating("multiclass_perceptron_loss", "scores", scores)
  labels, valid = _class_labels(_labels("multiclass_perceptron_loss", s, labels), s.shape[-1])
  return _nan_unless(valid, jnp.max(s, axis=-1) - _label_scores(s, labels))
