"""Schedules of one phase: constant, polynomial, linear, exponential and cosine decay."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from gradtx.schedules._common import (Schedule, _check, _count, _fraction, _half_cosine, _named,
                                      _schedule_dtypes, _steps)


@_named
def constant_schedule(value: chex.Numeric) -> Schedule:
  r"""A schedule that holds ``value`` at every step.

  .. math::
    v_t = v

  Matches ``optax.constant_schedule``.

  Args:
    value: the value to hold; returned as a JAX array of its own dtype.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.constant_schedule(0.1)
    >>> print(round(float(sched(1000)), 4))
    0.1
  """

  def schedule(count: chex.Numeric) -> jax.Array:
    del count
    return jnp.asarray(value)

  return schedule


def _polynomial(init_value, end_value, power, transition_steps,
                transition_begin) -> Schedule:
  """Builds a validated polynomial schedule."""
  if transition_steps == 0:
    return lambda count: jnp.asarray(init_value, _schedule_dtypes(init_value)[0])

  def schedule(count: chex.Numeric) -> jax.Array:
    dtype, ctype = _schedule_dtypes(init_value, end_value)
    frac = _fraction(jnp.asarray(count), transition_begin, transition_steps,
                     ctype)
    init, end = jnp.asarray(init_value, ctype), jnp.asarray(end_value, ctype)
    value = (init - end) * (1.0 - frac) ** jnp.asarray(power, ctype) + end
    return value.astype(dtype)

  return schedule


@_named
def polynomial_schedule(
    init_value: chex.Numeric,
    end_value: chex.Numeric,
    power: chex.Numeric,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
  r"""Polynomial transition from ``init_value`` to ``end_value``.

  .. math::
    v_t = \begin{cases}
      I, & t < B \\
      (I - E) \left(1 - \frac{t - B}{T}\right)^{P} + E, & B \le t < B + T \\
      E, & t \ge B + T
    \end{cases}

  with :math:`I` = ``init_value``, :math:`E` = ``end_value``, :math:`P` =
  ``power``, :math:`T` = ``transition_steps``, :math:`B` =
  ``transition_begin``.

  Args:
    init_value: value before and at the start of the transition.
    end_value: value at and after the end of the transition.
    power: exponent :math:`P` of the polynomial, > 0.
    transition_steps: length :math:`T` of the transition, >= 0. With 0 the
      schedule holds ``init_value`` for ever, as in optax.
    transition_begin: steps to hold ``init_value`` before the transition
      starts, >= 0. Default 0.

  Differences from optax:
    A negative ``transition_steps`` or ``transition_begin``, or a ``power``
    <= 0, raises ``ValueError`` (optax holds ``init_value``, clamps the begin
    to 0, or returns ``inf`` at the end of the transition).

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.polynomial_schedule(1.0, 0.0, power=2,
    ...                                       transition_steps=10)
    >>> print(round(float(sched(5)), 4))
    0.25
  """
  where = "polynomial_schedule"
  _check(where, "power", power, lambda p: p > 0, "> 0")
  return _polynomial(
      init_value, end_value, power,
      _steps(where, "transition_steps", transition_steps),
      _steps(where, "transition_begin", transition_begin))


@_named
def linear_schedule(
    init_value: chex.Numeric,
    end_value: chex.Numeric,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
  r"""Linear transition from ``init_value`` to ``end_value``.

  .. math::
    v_t = I + (E - I) \, \frac{\min(\max(t - B, 0), T)}{T}

  with :math:`I` = ``init_value``, :math:`E` = ``end_value``, :math:`T` =
  ``transition_steps``, :math:`B` = ``transition_begin``. This is
  :func:`polynomial_schedule` with ``power=1``.

  Args:
    init_value: value before and at the start of the transition.
    end_value: value at and after the end of the transition.
    transition_steps: length :math:`T` of the transition, >= 0. With 0 the
      schedule holds ``init_value`` for ever, as in optax.
    transition_begin: steps to hold ``init_value`` first, >= 0. Default 0.

  Differences from optax:
    A negative ``transition_steps`` or ``transition_begin`` raises
    ``ValueError``.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.linear_schedule(1.0, 0.0, transition_steps=10)
    >>> print(round(float(sched(3)), 4))
    0.7
  """
  where = "linear_schedule"
  return _polynomial(
      init_value, end_value, 1,
      _steps(where, "transition_steps", transition_steps),
      _steps(where, "transition_begin", transition_begin))


def _exponential(init_value, transition_steps, decay_rate, transition_begin,
                 staircase, end_value) -> Schedule:
  """Builds a validated exponential decay schedule."""

  def schedule(count: chex.Numeric) -> jax.Array:
    dtype, ctype = _schedule_dtypes(init_value)
    elapsed = _count(count, transition_begin, transition_steps) - transition_begin
    if staircase:
      exponent = jnp.floor_divide(elapsed, transition_steps).astype(ctype)
    else:
      exponent = elapsed.astype(ctype) / transition_steps
    init, rate = jnp.asarray(init_value, ctype), jnp.asarray(decay_rate, ctype)
    value = jnp.where(elapsed <= 0, init, init * rate ** exponent)
    if end_value is not None:
      end = jnp.asarray(end_value, ctype)
      value = jnp.where(rate < 1.0, jnp.maximum(value, end),
                        jnp.minimum(value, end))
    return value.astype(dtype)

  return schedule


@_named
def exponential_decay(
    init_value: chex.Numeric,
    transition_steps: int,
    decay_rate: chex.Numeric,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: chex.Numeric | None = None,
) -> Schedule:
  r"""Continuous or staircase exponential decay of ``init_value``.

  .. math::
    v_t = \operatorname{clip}_E \left( I \, r^{p_t} \right), \qquad
    p_t = \begin{cases}
      0, & t \le B \\
      \frac{t - B}{T} \;\; \text{or} \;\; \left\lfloor \frac{t - B}{T} \right\rfloor
      \text{ (staircase)}, & t > B
    \end{cases}

  with :math:`I` = ``init_value``, :math:`r` = ``decay_rate``, :math:`T` =
  ``transition_steps``, :math:`B` = ``transition_begin``. The clip to
  :math:`E` = ``end_value`` is a lower bound when :math:`r < 1` and an upper
  bound otherwise; as in optax it applies at every step, also before
  :math:`B` (where the value is :math:`\operatorname{clip}_E(I)`).

  Args:
    init_value: value before the decay starts.
    transition_steps: steps over which the value is multiplied by
      ``decay_rate`` once, > 0.
    decay_rate: factor per ``transition_steps`` steps, > 0.
    transition_begin: steps to hold ``init_value`` first, >= 0. Default 0.
    staircase: decay in whole steps of ``transition_steps``. Default False.
    end_value: bound at which the decay stops, or None. Default None.

  Differences from optax:
    ``transition_steps <= 0`` and ``decay_rate <= 0`` raise ``ValueError``:
    optax's docstring calls them invalid but its code silently returns a
    constant schedule (or NaN for a negative rate). A negative
    ``transition_begin`` raises instead of being clamped to 0.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.exponential_decay(1.0, transition_steps=10,
    ...                                     decay_rate=0.5)
    >>> print(round(float(sched(20)), 4))
    0.25
    >>> print(float(schedules.exponential_decay(1.0, 10, 0.5, 5, end_value=2.0)(0)))  # clip_E(I)
    2.0
  """
  where = "exponential_decay"
  _check(where, "decay_rate", decay_rate, lambda r: r > 0, "> 0")
  return _exponential(
      init_value,
      _steps(where, "transition_steps", transition_steps, positive=True),
      decay_rate,
      _steps(where, "transition_begin", transition_begin),
      staircase, end_value)


def _cosine(init_value, end_value, decay_steps, exponent) -> Schedule:
  """Decays ``init_value`` to ``end_value`` along a half cosine."""

  def schedule(count: chex.Numeric) -> jax.Array:
    dtype, ctype = _schedule_dtypes(init_value, end_value)
    frac = _fraction(jnp.asarray(count), 0, decay_steps, ctype)
    init, end = jnp.asarray(init_value, ctype), jnp.asarray(end_value, ctype)
    value = end + (init - end) * _half_cosine(frac) ** jnp.asarray(exponent,
                                                                   ctype)
    return value.astype(dtype)

  return schedule


@_named
def cosine_decay_schedule(
    init_value: chex.Numeric,
    decay_steps: int,
    alpha: chex.Numeric = 0.0,
    exponent: chex.Numeric = 1.0,
) -> Schedule:
  r"""Cosine decay from ``init_value`` to ``alpha * init_value``.

  .. math::
    v_t = I \left( \alpha + (1 - \alpha)
      \left[ \tfrac{1}{2} \left( 1 + \cos \frac{\pi \min(t, T)}{T} \right)
      \right]^{p} \right)

  with :math:`I` = ``init_value``, :math:`T` = ``decay_steps``,
  :math:`\alpha` = ``alpha``, :math:`p` = ``exponent``.

  Args:
    init_value: value at step 0.
    decay_steps: length :math:`T` of the decay, > 0.
    alpha: final value as a fraction of ``init_value``, >= 0. Default 0.0.
      Above 1 the value rises to ``alpha * init_value``, as in optax.
    exponent: power :math:`p` of the cosine factor, > 0. Default 1.0.

  Differences from optax:
    ``exponent <= 0`` raises ``ValueError``, and so does ``alpha < 0``: optax's
    value then crosses 0 and ends with the sign of ``init_value`` flipped (a
    learning rate that climbs the loss), where its docstring calls ``alpha``
    the minimum of the multiplier.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.cosine_decay_schedule(1.0, decay_steps=100,
    ...                                         alpha=0.1)
    >>> print(round(float(sched(50)), 4))
    0.55

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm
    Restarts <https://arxiv.org/abs/1608.03983>`_, ICLR 2017.
  """
  where = "cosine_decay_schedule"
  steps = _steps(where, "decay_steps", decay_steps, positive=True)
  _check(where, "alpha", alpha, lambda a: a >= 0, ">= 0")
  _check(where, "exponent", exponent, lambda p: p > 0, "> 0")

  def schedule(count: chex.Numeric) -> jax.Array:
    dtype, ctype = _schedule_dtypes(init_value)
    frac = _fraction(jnp.asarray(count), 0, steps, ctype)
    a = jnp.asarray(alpha, ctype)
    decayed = (1.0 - a) * _half_cosine(frac) ** jnp.asarray(exponent,
                                                            ctype) + a
    return (jnp.asarray(init_value, ctype) * decayed).astype(dtype)

  return schedule
