"""Segmentation losses: the dice family."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx.core import NONNEGATIVE, check_argument, check_axis, checks_flags
from gradtx.losses._common import (ArrayLike, _broadcastable, _floating, _wide,
                                   _same_shape, _rank)
from gradtx.numerics import as_dtype


_REDUCTIONS = ("mean", "sum", "none")


def _mean(x: jax.Array, axis: int | None = None) -> jax.Array:
  """``jnp.mean(x, axis)``, except that the mean over nothing (an empty batch, no classes)
  is 0, as a sum over nothing is, not 0 / 0 = NaN (optax's)."""
  count = x.size if axis is None else x.shape[axis]
  # Summed in float32 for 16-bit x, as jnp.mean does.
  return (jnp.sum(_wide(x), axis=axis) / max(count, 1)).astype(x.dtype)


def _check_probabilities(loss: str, option: str, p: jax.Array) -> None:
  """Raises unless concrete ``p`` holds probabilities over its last (class) axis.

  Several classes must sum to 1, to the precision of ``p``'s dtype; a single
  channel (binary, sigmoid) must lie in :math:`[0, 1]`. ``option`` is the name of
  the flag of ``loss`` set to False (``apply_softmax``, ``apply_sigmoid``).
  """
  if p.shape[-1] == 1:
    low, high = float(jnp.min(p)), float(jnp.max(p))
    if not 0 <= low <= high <= 1:
      raise ValueError(
          f"{loss}: with {option}=False, single-channel predictions must be "
          f"probabilities in [0, 1]; they range over [{low:.6f}, {high:.6f}]")
    return
  sums = jnp.sum(_wide(p), axis=-1)
  tolerance = max(1e-5, 2 * float(jnp.finfo(p.dtype).eps))
  if not bool(jnp.all(jnp.abs(sums - 1) <= tolerance)):
    raise ValueError(
        f"{loss}: with {option}=False, predictions must sum to 1 over the "
        f"class axis; sums range over [{float(jnp.min(sums)):.6f}, "
        f"{float(jnp.max(sums)):.6f}]")


@checks_flags
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
  Tversky loss. Where the denominator is 0 (``smooth=0`` and a class absent
  from both prediction and target) :math:`\ell_c = 0`, its limit as
  ``smooth`` goes to 0, with gradient 0.

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
    before any computation. With ``smooth=0`` a class absent from both
    prediction and target has loss 0 (optax: NaN, from 0/0), and so has
    the mean over no classes (optax: NaN).

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.array([[[2.0, -2.0], [-1.0, 1.0], [0.0, 0.0]]])  # [1, 3, 2]
    >>> targets = jnp.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    >>> print(np.asarray(losses.dice_loss(logits, targets)).round(4))
    [0.1293]
  """
  return _dice_loss("dice_loss", "apply_softmax", predictions, targets,
                    class_weights=class_weights, smooth=smooth, alpha=alpha, beta=beta,
                    apply_softmax=apply_softmax, reduction=reduction,
                    ignore_background=ignore_background, axis=axis)


def _dice_loss(name: str, option: str, predictions: ArrayLike, targets: ArrayLike, *,
               class_weights: ArrayLike | None = None, smooth: ArrayLike = 1.0,
               alpha: ArrayLike = 0.5, beta: ArrayLike = 0.5, apply_softmax: bool = True,
               reduction: str = "mean", ignore_background: bool = False,
               axis: int | tuple[int, ...] | None = None) -> jax.Array:
  """:func:`dice_loss`, its checks raising under the name of the loss called (``name``)
  and of its flag for probabilities (``option``: ``apply_sigmoid`` in
  :func:`binary_dice_loss`)."""
  if reduction not in _REDUCTIONS:
    raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
  # A NaN (or a sign slip) here made every loss of the batch NaN, silently.
  for arg, value in (("smooth", smooth), ("alpha", alpha), ("beta", beta)):
    check_argument(name, arg, value, NONNEGATIVE)
  check_axis(name, axis)
  p = _floating(name, "predictions", predictions)
  t = jnp.asarray(targets)
  if p.ndim == t.ndim - 1:
    p = p[..., None]
  if t.ndim == p.ndim - 1:
    t = t[..., None]
  _same_shape(name, "predictions", p, "targets", t)
  if not apply_softmax and not isinstance(p, jax.core.Tracer):
    _check_probabilities(name, option, p)
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
  # A denominator of 0 (smooth = 0, and no class in the prediction nor in the target, or
  # alpha = 0 and none in the target) is a perfect match, the limit as smooth goes to 0:
  # 0 / 0 made the loss NaN, and the batch's mean with it.
  empty = denominator == 0
  loss = jnp.where(empty, 0, 1 - (intersection + smooth) / jnp.where(empty, 1, denominator))
  if class_weights is not None:
    class_weights = jnp.asarray(class_weights)
    _rank(name, "class_weights", class_weights, 1)
    _broadcastable(name, "class_weights", class_weights, "the per-class losses", loss)
    loss = loss * jnp.broadcast_to(class_weights.astype(p.dtype), loss.shape)
  if ignore_background and p.shape[-1] > 1:
    loss = loss[..., 1:]
  if reduction == "mean":
    loss = _mean(loss, axis=-1)
  elif reduction == "sum":
    loss = jnp.sum(loss, axis=-1)
  return loss.astype(dtype)


@checks_flags
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
    ones; gradtx checks that the probabilities lie in :math:`[0, 1]`. With
    ``smooth=0`` an empty prediction of an empty target has loss 0 (optax:
    NaN, from 0/0).

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
  return _dice_loss("binary_dice_loss", "apply_sigmoid", p, t, smooth=smooth,
                    apply_softmax=apply_sigmoid, reduction="mean")


@checks_flags
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

  Differences from optax:
    An empty batch (or no classes) has loss 0, the mean over nothing taken
    as 0 as in :func:`ranking_softmax_loss` (optax: NaN, from 0/0). Otherwise
    as :func:`dice_loss`.

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
  per_class = _dice_loss(name, "apply_softmax", p, t, class_weights=weights, smooth=smooth,
                         apply_softmax=apply_softmax, reduction="none",
                         ignore_background=ignore_background)
  return _mean(per_class)
