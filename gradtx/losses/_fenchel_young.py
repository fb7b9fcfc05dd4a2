"""Fenchel-Young losses: the general construction and the sparsemax losses."""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp

from gradtx.core import check_callable
from gradtx.losses._common import (ArrayLike, _broadcastable, _floating, _wide, _label_scores,
                                    _labels, _class_labels, _nan_unless)
from gradtx.projections import projection_simplex


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
    16-bit scores reach ``max_fun`` in float32, and the loss is rounded to
    their dtype once, at the end (as every loss here).

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
  check_callable("make_fenchel_young_loss", "max_fun", max_fun,
                 "a function of a score vector (jax.nn.logsumexp, ...)")
  vdot_last = jnp.vectorize(jnp.vdot, signature="(n),(n)->()")
  max_last = jnp.vectorize(max_fun, signature="(n)->()")

  def fenchel_young_loss(scores: ArrayLike, targets: ArrayLike, *args: Any,
                         **kwargs: Any) -> jax.Array:
    scores = jnp.asarray(scores)
    dtype = scores.dtype
    # 16-bit scores in float32, rounded once: the max and the inner product are large
    # and nearly cancel (bfloat16 scores near 100 lost 0.2 of a loss of 2.7).
    s = _wide(scores) if jnp.issubdtype(dtype, jnp.floating) else scores
    targets = jnp.asarray(targets).astype(s.dtype)
    loss = max_last(s, *args, **kwargs) - vdot_last(targets, s)
    return loss.astype(dtype) if s.dtype != dtype else loss

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

  Differences from optax:
    An infinite logit has a finite gradient: 0 for ``-inf`` with label 0
    (a ruled-out class) and ``+inf`` with label 1, :math:`\mp 1` on the side
    the label rules out (optax: NaN).

  Example:
    >>> import jax.numpy as jnp
    >>> from gradtx import losses
    >>> print(losses.sparsemax_loss(jnp.array([2.0, 0.0, -3.0]), jnp.array([1, 1, 1])))
    [0.   0.25 3.  ]
  """
  x = _floating("sparsemax_loss", "logits", logits)
  _broadcastable("sparsemax_loss", "logits", x, "labels", labels)
  z = jnp.where(jnp.asarray(labels).astype(bool), -x, x)
  # jax.nn.sparse_plus, its quadratic piece taken of z clipped to [-1, 1], where it
  # applies: of an infinite z it was inf, and its zero cotangent times inf made the
  # gradient NaN (a class ruled out with a -inf logit and label 0 included).
  quadratic = jnp.square(jnp.clip(z, -1, 1) + 1) / 4
  return jnp.where(z <= -1, 0, jnp.where(z >= 1, z, quadratic))


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
  all its mass on the label. It is computed on :math:`s - \max_j s_j` (the
  loss does not change when a constant is added to all scores), so large
  scores do not cancel.

  Args:
    scores: scores :math:`s`, ``[..., num_classes]``, floating.
    labels: integer labels :math:`y` in ``[0, num_classes)``, ``[...]``
      (whole-number floats are read as class indices; optax's raises on
      them). A label in ``[-num_classes, 0)`` counts from the end, as a
      numpy index (as optax, and
      :func:`softmax_cross_entropy_with_integer_labels`); one that names no
      class (outside ``[-num_classes, num_classes)``, or a fraction) gives
      NaN, its gradient 0.

  Returns:
    the losses, ``[...]``.

  References:
    Martins and Astudillo, `From Softmax to Sparsemax: A Sparse Model of
    Attention and Multi-Label Classification
    <https://arxiv.org/abs/1602.02068>`_, ICML 2016.

  Differences from optax:
    optax accepts exactly one batch axis (``[batch, num_classes]``); gradtx
    maps over any number of leading axes. optax clamps a label outside
    ``[-num_classes, num_classes)`` to the nearest class, a plausible loss
    for a label that names none; gradtx gives NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> scores = jnp.array([[2.0, 0.5, 0.0], [0.1, 0.2, 0.3]])
    >>> print(np.asarray(losses.multiclass_sparsemax_loss(scores, jnp.array([0, 0]))).round(4))
    [0.     0.4433]
  """
  s = _floating("multiclass_sparsemax_loss", "scores", scores)
  labels, valid = _class_labels(_labels("multiclass_sparsemax_loss", s, labels), s.shape[-1])
  dtype = s.dtype
  s = _wide(s)
  # The loss is unchanged when a constant is added to every score; measuring
  # the scores from their maximum keeps large scores from cancelling. (From the
  # label's score, a label far below the top put the support near 2e4 for
  # scores of +-1e4, and the projection lost its float32 precision there.)
  top = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
  z = s - top
  p = _sparsemax(z)
  # z is masked, not p * z: a -inf score would give p's gradient 0 * -inf.
  loss = (jnp.sum(p * jnp.where(p > 0, z, 0), axis=-1) + 0.5 * (1 - jnp.sum(jnp.square(p), axis=-1))
          + (top[..., 0] - _label_scores(s, labels)))
  return _nan_unless(valid, loss).astype(dtype)
