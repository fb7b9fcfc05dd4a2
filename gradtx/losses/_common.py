"""Private helpers shared by the loss modules: argument checks, dtypes, masked log-softmax."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx.core import NONNEGATIVE, check_argument, check_axis
from gradtx.numerics import as_dtype

ArrayLike = jax.typing.ArrayLike
Axis = int | tuple[int, ...] | None


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


def _broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
  """The shape ``shapes`` broadcast to, or ``None`` where they do not broadcast together."""
  try:
    return jnp.broadcast_shapes(*shapes)
  except ValueError:
    return None


def _broadcastable(loss: str, a: str, x: ArrayLike, b: str, y: ArrayLike) -> None:
  """Raises, naming the loss and both arguments, unless ``x`` and ``y`` broadcast together
  (jax's own error names neither: "and got incompatible shapes")."""
  if _broadcast_shape(jnp.shape(x), jnp.shape(y)) is None:
    raise ValueError(f"{loss}: {a} and {b} must broadcast together, got shapes "
                     f"{jnp.shape(x)} and {jnp.shape(y)}")


def _some_classes(loss: str, arg: str, x: jax.Array, axes: tuple[int, ...]) -> None:
  """Raises, naming the loss, unless ``x`` has a class on its class ``axes``: an integer
  label picks one (with none, jax raised "zero-size array to reduction operation max
  which has no identity", or the loss was inf)."""
  if x.ndim == 0 or any(x.shape[a] == 0 for a in axes):
    raise ValueError(f"{loss}: {arg} must have at least one class for a label to pick, "
                     f"got shape {x.shape}")


def _labels(loss: str, s: jax.Array, labels: ArrayLike) -> jax.Array:
  """Integer ``labels`` as an array, checked to broadcast with the shape of the scores
  ``s`` without its class axis, which must hold a class."""
  _some_classes(loss, "scores", s, (-1,))
  labels = jnp.asarray(labels)
  if _broadcast_shape(labels.shape, s.shape[:-1]) is None:
    raise ValueError(f"{loss}: labels must have the shape of scores without its class axis, "
                     f"{s.shape[:-1]}, got {labels.shape}")
  return labels


def _rank(loss: str, arg: str, x: jax.Array, rank: int) -> None:
  if x.ndim != rank:
    raise ValueError(
        f"{loss}: {arg} must have rank {rank}, got shape {x.shape}")


def _expand_where(loss: str, where: ArrayLike | None, shape: tuple[int, ...],
                  axis: Axis) -> jax.Array | None:
  """``where`` for logits of ``shape``: as given when it has their rank, else taken per
  example (as optax) and given the class axes back.

  Checked to broadcast, so that a mask that fits neither raises naming the loss (jax's
  error named neither it nor ``where``; for a tuple of axes it was "axis 2 is out of
  bounds for array of dimension 2").
  """
  if where is None:
    return None
  where = jnp.asarray(where)
  ndim = len(shape)
  if where.ndim != ndim and axis is None:  # every axis is a class axis: no per-example shape
    raise ValueError(
        f"{loss}: with axis=None every axis is a class axis, so where must have the rank "
        f"of logits ({ndim}), got shape {where.shape}; pass where broadcast to the logits' "
        "shape, or the class axis as axis (optax 0.2.8 raises a TypeError here)")
  axes = tuple(range(ndim)) if axis is None else axis if isinstance(axis, tuple) else (axis,)
  if any(not -ndim <= a < ndim for a in axes):
    return where  # the loss's own reduction raises for the axis
  axes = tuple(a % ndim for a in axes)
  batch_shape = tuple(d for i, d in enumerate(shape) if i not in axes)
  fits = (_broadcast_shape(where.shape, shape) == shape if where.ndim == ndim else
          _broadcast_shape(where.shape, batch_shape) == batch_shape)
  if not fits:
    raise ValueError(
        f"{loss}: where must broadcast to the shape of logits, {shape}, or of the result, "
        f"{batch_shape}, got shape {where.shape}")
  if where.ndim != ndim:
    # Broadcast first (free under jit), so that a mask of lower rank than the result
    # lines up with its trailing axes, as numpy broadcasting would.
    where = jnp.expand_dims(jnp.broadcast_to(where, batch_shape), axes)
  return where


def _leave_out(where: ArrayLike | None, *arrays: jax.Array) -> tuple[jax.Array, ...]:
  """``arrays`` with the entries ``where`` leaves out set to 0, before any arithmetic.

  Summed out only (``jnp.sum``'s ``where``), an inf or NaN left out had a derivative of
  inf or NaN there, and its zero cotangent times that is NaN.
  """
  if where is None:
    return arrays
  where = jnp.asarray(where)
  return tuple(jnp.where(where, x, 0) for x in arrays)


def _some(where: jax.Array | None, axis: Axis) -> jax.Array | None:
  """``where``, except that a row with nothing included includes everything.

  Such a row is masked out of the result anyway; including it keeps its
  normaliser finite, so no NaN reaches the gradient through the mask.
  """
  if where is None:
    return None
  return where | ~jnp.any(where, axis=axis, keepdims=True)


def _log_softmax(x: jax.Array, axis: Axis,
                 where: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """``(x - logsumexp(x), dead)`` over ``axis``, the normaliser summing only ``where``; 0
  where ``where`` leaves a class out. ``dead`` (kept as an axis) marks the rows whose
  every logit is -inf: their log-probabilities are -inf, and a loss built from them
  passes them to :func:`_no_gradient_where`, so that their gradient is 0.

  Computed on ``x - max(x)``, as ``jax.nn.log_softmax``: subtracting a
  normaliser near 1e4 from a logit near 1e4 would leave float32 rounding of
  1e-3 in every log-probability.
  """
  some = _some(where, axis)
  top, shift = _max_shift(x, axis, some)
  # A row whose every logit is -inf has log-probabilities -inf, not -inf - (-inf) = NaN,
  # so that its zero labels contribute 0 (as optax's safe_softmax_cross_entropy): its
  # normaliser is taken as 0, and its sum of exponentials (0) as 1 inside the log, keeping
  # NaN out of its gradient. Both are selects per row: a select over every logit kept XLA
  # from fusing the shift into the reductions, a further write and read of the logits
  # (softmax_cross_entropy 1.44x optax's time on CPU, (512, 32000)).
  dead = top == -jnp.inf
  x = x - shift
  # Shifted, x is at most 0 where it is summed (or the row is dead, or holds +inf or NaN):
  # exp cannot overflow there, so the normaliser is log(sum(exp(x))) without
  # jax.nn.logsumexp's own max, a further pass over the logits.
  # A class left out is left out of the exp too (not only of the sum): a logit above the
  # row's max there, or NaN, had an exp' of inf or NaN, times its zero cotangent NaN.
  summed = x if some is None else jnp.where(some, x, -jnp.inf)
  total = jnp.sum(jnp.exp(summed), axis=axis, keepdims=True)
  log_p = x - jnp.where(dead, 0, jnp.log(jnp.where(dead, 1, total)))
  if where is not None:
    # A left-out class's log-probability, a -inf, NaN or large logit minus the normaliser,
    # gave its label (or exp of it) a derivative of inf or NaN, times its zero cotangent
    # NaN: masking the loss's terms after the fact does not keep it out of the gradient.
    log_p = jnp.where(where, log_p, 0)
  return log_p, dead


def _no_gradient_where(rows: jax.Array, out: jax.Array) -> jax.Array:
  """``out``, held constant for ``jax.grad`` in the ``rows`` marked (a select per row)."""
  return jnp.where(rows, jax.lax.stop_gradient(out), out)


def _max_shift(x: jax.Array, axis: Axis,
               where: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """``(max(x), shift)``: the max over ``axis`` and ``where``, kept as an axis, and the
  shift to measure ``x`` from, that max held constant for ``jax.grad`` (0 where it is
  not finite: such a row is not shifted).

  A log-normaliser taken of the shifted logits is exact to rounding near 0; taken of
  the logits themselves it is rounded near their magnitude, and subtracting a logit
  from it cancels (the losses do not change when every logit moves by one amount).
  """
  top = jnp.max(x, axis=axis, where=where, initial=-jnp.inf, keepdims=True)
  return top, jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0))


def _times_log(y: jax.Array, log_p: jax.Array) -> jax.Array:
  r""":math:`y \log p` with :math:`0 \log 0 = 0`, finite gradients included.

  Only an exact ``log_p = -inf`` next to ``y = 0`` is replaced, so every other
  gradient (with respect to ``y`` too) is the plain one.
  """
  return y * jnp.where((y == 0) & (log_p == -jnp.inf), 0, log_p)


def _x_log_x(v: jax.Array) -> jax.Array:
  r""":math:`v \log v` with :math:`0 \log 0 = 0`, its gradient :math:`\log v + 1`, and 0 at 0.

  No infinity is made on the way: as :math:`v \cdot \log(0) = -\infty` put into a
  :func:`_times_log`, the ``-inf`` made for every zero target (a one-hot label) raised
  ``FloatingPointError`` at each eager call under ``jax_debug_infs``, on finite inputs.
  """
  return v * jnp.log(jnp.where(v == 0, 1, v))


def _safe_power(v: jax.Array, q: jax.Array) -> jax.Array:
  """``v ** q`` for ``v >= 0`` and ``q > 0``, its gradient 0 at ``v = 0``.

  For ``q < 1`` the derivative :math:`q v^{q-1}` is infinite at 0, and a zero tangent
  from upstream (``abs`` at 0, a max that picked another term) times it is NaN; 0 is in
  the subdifferential of the norms built from it, and their gradient elsewhere is kept.
  """
  positive = v > 0
  return jnp.where(positive, jnp.where(positive, v, 1) ** q, 0)


def _cosine_similarity(loss: str, a: jax.Array, targets: ArrayLike, epsilon: ArrayLike,
                       axis: Axis, where: ArrayLike | None) -> jax.Array:
  """:func:`cosine_similarity`, left in the compute dtype (float32 for 16-bit ``a``)."""
  b = _floating(loss, "targets", targets)
  check_axis(loss, axis)
  _broadcastable(loss, "predictions", a, "targets", b)
  check_argument(loss, "epsilon", epsilon, NONNEGATIVE)
  a = _wide(a)
  b = b.astype(a.dtype)
  epsilon = as_dtype(epsilon, a.dtype)
  a, b = _leave_out(where, a, b)  # an inf left out made its whole vector's gradient NaN
  # The inner product divided by the norms, the three sums over the same elements (not
  # the sum of the normalised vectors' products, a further pass over them).
  return jnp.sum(a * b, axis=axis) / (_cosine_norm(a, axis, epsilon) *
                                      _cosine_norm(b, axis, epsilon))


def _cosine_norm(v: jax.Array, axis: Axis, epsilon: ArrayLike) -> jax.Array:
  """``sqrt(max(|v|^2, epsilon))`` over ``axis``, the norm a cosine similarity divides by;
  1 where that is 0 (``epsilon = 0``), so that a zero vector's similarities stay 0."""
  n2 = jnp.maximum(jnp.sum(jnp.square(v), axis=axis), epsilon)
  return jnp.sqrt(jnp.where(n2 > 0, n2, 1))


def _class_labels(labels: jax.Array, num_classes: int) -> tuple[jax.Array, jax.Array]:
  """``(index, valid)``: class ``labels`` read as numpy indices into ``num_classes``
  classes, the one policy of every loss that takes them (the losses' module docstring).

  ``index`` is the label in ``[0, num_classes)`` (a label in ``[-num_classes, 0)`` counts
  from the end); ``valid`` is False where a label names no class: outside
  ``[-num_classes, num_classes)``, or (for the whole-number floats the margin losses take)
  not a whole number. A loss gives NaN there (:func:`_nan_unless`). Narrow integers are
  taken in int32: an int8 label plus 200 classes overflowed; so are floats, once checked
  (``jax.nn.one_hot`` deprecates float input).
  """
  floating = jnp.issubdtype(labels.dtype, jnp.floating)
  if not floating and labels.dtype.itemsize < 4:
    labels = labels.astype(jnp.int32)
  index = jnp.where(labels < 0, labels + num_classes, labels)
  valid = (index >= 0) & (index < num_classes)
  if floating:
    valid = valid & (index == jnp.floor(index))
    index = jnp.where(valid, index, 0).astype(jnp.int32)
  return index, valid


def _nan_unless(valid: jax.Array, out: jax.Array) -> jax.Array:
  """``out``, NaN where ``valid`` (of a label, :func:`_class_labels`) is False, its gradient
  0 there: bad data shows in the loss, and trains nothing. One select per example."""
  return jnp.where(valid, out, jnp.nan)


def _label_scores(s: jax.Array, index: jax.Array) -> jax.Array:
  """``s[..., y]``, the score of each label ``index`` in ``[0, num_classes)`` (0 for one
  outside it: the loss is NaN there, :func:`_nan_unless`)."""
  is_label = jax.nn.one_hot(index, s.shape[-1], dtype=bool)
  return jnp.sum(jnp.where(is_label, s, 0), axis=-1)
