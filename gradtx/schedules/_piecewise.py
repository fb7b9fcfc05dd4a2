"""Schedules by pieces: piecewise constant, piecewise interpolated, and joined schedules."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp

from gradtx.numerics import as_dtype, compute_dtype
from gradtx.schedules._common import (Schedule, _check, _count, _error, _named, _schedule_dtypes,
                                      _steps)


def _boundaries(where: str, boundaries_and_scales: Mapping[int, Any] | None
                ) -> tuple[tuple[int, ...], tuple[Any, ...]]:
  """Sorted, validated boundaries and their scales."""
  if boundaries_and_scales is not None and not isinstance(boundaries_and_scales, Mapping):
    # else "'list' object has no attribute 'items'" for [(step, scale), ...]
    raise _error(where, "boundaries_and_scales", "a mapping {step: scale} or None",
                 boundaries_and_scales)
  pairs = []
  for boundary, scale in (boundaries_and_scales or {}).items():
    step = _steps(where, "boundaries_and_scales key", boundary)
    _check(where, f"boundaries_and_scales[{step}]", scale, lambda s: s >= 0,
           ">= 0")
    pairs.append((step, scale))
  pairs.sort(key=lambda pair: pair[0])
  return tuple(b for b, _ in pairs), tuple(s for _, s in pairs)


@_named
def piecewise_constant_schedule(
    init_value: chex.Numeric,
    boundaries_and_scales: Mapping[int, chex.Numeric] | None = None,
) -> Schedule:
  r"""``init_value`` multiplied by each scale from its boundary step on.

  .. math::
    v_t = I \prod_{i \,:\, t \ge b_i} s_i

  for the pairs :math:`(b_i, s_i)` of ``boundaries_and_scales``.

  Args:
    init_value: value before the first boundary.
    boundaries_and_scales: ``{step: scale}``; from ``step`` on (inclusive) the
      value is multiplied by ``scale``. Steps are integers >= 0 and scales
      are >= 0. Default None: a constant schedule.

  Differences from optax:
    A negative boundary raises ``ValueError``.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.piecewise_constant_schedule(
    ...     1.0, {100: 0.1, 200: 0.1})
    >>> print(round(float(sched(99)), 4), round(float(sched(200)), 4))
    1.0 0.01
  """
  boundaries, scales = _boundaries("piecewise_constant_schedule",
                                   boundaries_and_scales)

  def schedule(count: chex.Numeric) -> jax.Array:
    dtype, ctype = _schedule_dtypes(init_value)
    count = _count(count, *boundaries)
    value = jnp.asarray(init_value, ctype)
    for boundary, scale in zip(boundaries, scales):
      value = jnp.where(count >= boundary, value * jnp.asarray(scale, ctype),
                        value)
    return value.astype(dtype)

  return schedule


def _linear_interpolate(start, end, frac):
  return (end - start) * frac + start


def _cosine_interpolate(start, end, frac):
  return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * frac) + 1.0)


_INTERPOLATE = {"linear": _linear_interpolate, "cosine": _cosine_interpolate}


def _interpolate(where, interpolate_type, init_value,
                 boundaries_and_scales) -> Schedule:
  """Validates and builds a piecewise interpolated schedule."""
  # A list here raised "unhashable type: 'list'" from the lookup.
  if not isinstance(interpolate_type, str) or interpolate_type not in _INTERPOLATE:
    raise _error(where, "interpolate_type", "'linear' or 'cosine'",
                 interpolate_type)
  interpolate = _INTERPOLATE[interpolate_type]
  boundaries, scales = _boundaries(where, boundaries_and_scales)
  bounds = (0,) + boundaries

  def schedule(count: chex.Numeric) -> jax.Array:
    dtype, ctype = _schedule_dtypes(init_value)
    count = jnp.maximum(_count(count, *boundaries), 0)
    values = [jnp.asarray(init_value, ctype)]
    for scale in scales:
      values.append(values[-1] * jnp.asarray(scale, ctype))
    value = values[-1]
    # The segment of a count is the first one that ends after it.
    for i in reversed(range(len(boundaries))):
      start, stop = bounds[i], bounds[i + 1]
      frac = (count - start).astype(ctype) / max(stop - start, 1)
      value = jnp.where(count < stop,
                        interpolate(values[i], values[i + 1], frac), value)
    return value.astype(dtype)

  return schedule


@_named
def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: chex.Numeric,
    boundaries_and_scales: Mapping[int, chex.Numeric] | None = None,
) -> Schedule:
  r"""Interpolates between values that scale by steps at given boundaries.

  With boundaries :math:`0 = b_0 < b_1 < \dots < b_n`, scales :math:`s_i`
  and the accumulated values :math:`v_0 = I`, :math:`v_i = v_{i-1} s_i`:

  .. math::
    v_t = \begin{cases}
      f\left(v_{i}, v_{i+1}, \frac{t - b_i}{b_{i+1} - b_i}\right),
        & b_i \le t < b_{i+1} \\
      v_n, & t \ge b_n
    \end{cases}

  where :math:`f(a, b, x) = a + (b - a) x` (``'linear'``) or
  :math:`f(a, b, x) = b + \frac{a - b}{2} (1 + \cos \pi x)` (``'cosine'``).

  Args:
    interpolate_type: ``'linear'`` or ``'cosine'``.
    init_value: value at step 0.
    boundaries_and_scales: ``{step: scale}``; the value reaches the previous
      value times ``scale`` at ``step``. Steps are integers >= 0 and scales
      are >= 0. Default None: a constant schedule.

  Differences from optax:
    A negative count gives ``init_value`` (optax gives 0) and a negative
    boundary raises ``ValueError``.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.piecewise_interpolate_schedule(
    ...     "linear", 1.0, {4: 0.1, 8: 0.1})
    >>> print(round(float(sched(2)), 4), round(float(sched(6)), 4))
    0.55 0.055
  """
  return _interpolate("piecewise_interpolate_schedule", interpolate_type,
                      init_value, boundaries_and_scales)


@_named
def join_schedules(schedules: Sequence[Schedule],
                   boundaries: Sequence[int]) -> Schedule:
  r"""Runs ``schedules`` one after another, switching at ``boundaries``.

  .. math::
    v_t = f_i(t - b_i) \quad \text{for } b_i \le t < b_{i+1},
    \qquad b_0 = 0

  Each schedule counts steps from its own boundary.

  Args:
    schedules: one or more schedules :math:`f_0, \dots, f_n`.
    boundaries: the :math:`n` steps :math:`b_1 \le \dots \le b_n` at which the
      next schedule takes over; integers >= 0.

  Differences from optax:
    A wrong number of boundaries, or boundaries out of order, raises
    ``ValueError`` (optax ignores the extra ones or lets a later schedule win).

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.join_schedules(
    ...     [schedules.constant_schedule(1.0),
    ...      schedules.linear_schedule(1.0, 0.0, transition_steps=10)], [5])
    >>> print(round(float(sched(4)), 4), round(float(sched(10)), 4))
    1.0 0.5
  """
  where = "join_schedules"
  if callable(schedules) or not isinstance(schedules, Iterable):  # one where the list goes
    raise _error(where, "schedules", "a non-empty sequence of schedules", schedules)
  schedules = tuple(schedules)
  if not schedules:
    raise _error(where, "schedules", "a non-empty sequence", schedules)
  for i, piece in enumerate(schedules):
    if not callable(piece):  # else "'float' object is not callable" at the first step
      raise _error(where, f"schedules[{i}]", "a schedule, a function of the count "
                   "(constant_schedule(value) holds a value)", piece)
  if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Iterable):
    # else "'int' object is not iterable" for the one boundary of two schedules
    raise _error(where, "boundaries", "a sequence of steps", boundaries)
  boundaries = tuple(_steps(where, "boundary", b) for b in boundaries)
  if len(boundaries) != len(schedules) - 1:
    raise _error(where, "boundaries",
                 f"{len(schedules) - 1} steps, one fewer than the schedules",
                 boundaries)
  if list(boundaries) != sorted(boundaries):
    raise _error(where, "boundaries", "in non-decreasing order", boundaries)

  def schedule(count: chex.Numeric) -> jax.Array:
    count = _count(count, *boundaries)
    pieces = [jnp.asarray(schedules[0](count))]
    pieces += [jnp.asarray(later(count - boundary))
               for boundary, later in zip(boundaries, schedules[1:])]
    # Pieces may differ in dtype (a float32 array init_value under x64):
    # the joined value takes the widest one, explicitly.
    dtype = compute_dtype(*pieces)
    pieces = [as_dtype(v, dtype) for v in pieces]
    value = pieces[0]
    for boundary, piece in zip(boundaries, pieces[1:]):
      value = jnp.where(count < boundary, value, piece)
    return value

  return schedule
