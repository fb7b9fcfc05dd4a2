"""A linear warmup, then a constant, a cosine decay or an exponential decay."""

from __future__ import annotations

import chex
import jax.numpy as jnp

from gradtx.schedules._basic import _cosine, _exponential, _polynomial
from gradtx.schedules._common import Schedule, _check, _error, _named, _schedule_dtypes, _steps
from gradtx.schedules._piecewise import join_schedules


@_named
def warmup_constant_schedule(
    init_value: chex.Numeric,
    peak_value: chex.Numeric,
    warmup_steps: int,
) -> Schedule:
  r"""Linear warmup to ``peak_value``, then ``peak_value`` for ever (no decay).

  .. math::
    v_t = \begin{cases}
      I + (P - I) \frac{t}{W}, & t < W \\
      P, & t \ge W
    \end{cases}

  with :math:`I` = ``init_value``, :math:`P` = ``peak_value``, :math:`W` =
  ``warmup_steps``.

  Args:
    init_value: value at step 0.
    peak_value: value from the end of the warmup, step :math:`W`, on.
    warmup_steps: length :math:`W` of the linear warmup, >= 0.

  Differences from optax:
    With ``warmup_steps=0`` optax (a :func:`linear_schedule` of no steps)
    holds ``init_value`` for ever and never reaches ``peak_value``; gradtx
    follows the formula above and holds ``peak_value`` from step 0. A
    negative ``warmup_steps`` raises ``ValueError``.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.warmup_constant_schedule(0.0, 1.0, warmup_steps=10)
    >>> print(round(float(sched(5)), 4), round(float(sched(10)), 4), round(float(sched(1000)), 4))
    0.5 1.0 1.0
  """
  where = "warmup_constant_schedule"
  warmup_steps = _steps(where, "warmup_steps", warmup_steps)
  if warmup_steps == 0:
    dtype = _schedule_dtypes(init_value, peak_value)[0]
    return lambda count: jnp.asarray(peak_value).astype(dtype)
  return _polynomial(init_value, peak_value, 1, warmup_steps, 0)


def _warmup_cosine(where, init_value, peak_value, warmup_steps, decay_steps,
                   end_value=0.0, exponent=1.0) -> Schedule:
  """Validates and builds a warmup-cosine schedule; errors name ``where``."""
  decay_steps = _steps(where, "decay_steps", decay_steps, positive=True)
  warmup_steps = _steps(where, "warmup_steps", warmup_steps)
  if decay_steps <= warmup_steps:
    raise _error(where, "decay_steps", f"> warmup_steps ({warmup_steps})",
                 decay_steps)
  _check(where, "exponent", exponent, lambda p: p > 0, "> 0")
  return join_schedules(
      [_polynomial(init_value, peak_value, 1, warmup_steps, 0),
       _cosine(peak_value, end_value, decay_steps - warmup_steps, exponent)],
      [warmup_steps])


@_named
def warmup_cosine_decay_schedule(
    init_value: chex.Numeric,
    peak_value: chex.Numeric,
    warmup_steps: int,
    decay_steps: int,
    end_value: chex.Numeric = 0.0,
    exponent: chex.Numeric = 1.0,
) -> Schedule:
  r"""Linear warmup to ``peak_value``, then cosine decay to ``end_value``.

  .. math::
    v_t = \begin{cases}
      I + (P - I) \frac{t}{W}, & t < W \\
      E + (P - E) \left[ \tfrac{1}{2} \left( 1 + \cos \frac{\pi \min(t - W,
        D - W)}{D - W} \right) \right]^{p}, & t \ge W
    \end{cases}

  with :math:`I` = ``init_value``, :math:`P` = ``peak_value``, :math:`E` =
  ``end_value``, :math:`W` = ``warmup_steps``, :math:`D` = ``decay_steps``,
  :math:`p` = ``exponent``.

  Args:
    init_value: value at step 0.
    peak_value: value at the end of the warmup, step :math:`W`.
    warmup_steps: length :math:`W` of the linear warmup, >= 0.
    decay_steps: total length :math:`D` of the schedule, warmup included;
      > 0 and > ``warmup_steps``.
    end_value: value from step :math:`D` on. Default 0.0.
    exponent: power :math:`p` of the cosine factor, > 0. Default 1.0.

  Differences from optax:
    With ``peak_value == 0`` and a nonzero ``end_value`` optax holds 0 after
    the warmup; gradtx follows the formula above and decays to
    ``end_value``. ``exponent <= 0`` raises ``ValueError``.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.warmup_cosine_decay_schedule(
    ...     init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=110)
    >>> print(round(float(sched(5)), 4), round(float(sched(60)), 4))
    0.5 0.5

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm
    Restarts <https://arxiv.org/abs/1608.03983>`_, ICLR 2017.
  """
  return _warmup_cosine("warmup_cosine_decay_schedule", init_value,
                        peak_value, warmup_steps, decay_steps, end_value,
                        exponent)


@_named
def warmup_exponential_decay_schedule(
    init_value: chex.Numeric,
    peak_value: chex.Numeric,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: chex.Numeric,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: chex.Numeric | None = None,
) -> Schedule:
  r"""Linear warmup to ``peak_value``, then :func:`exponential_decay`.

  .. math::
    v_t = \begin{cases}
      I + (P - I) \frac{t}{W}, & t < W \\
      \operatorname{clip}_E \left( P \, r^{p_{t - W}} \right), & t \ge W
    \end{cases}

  where :math:`p_s` is 0 for :math:`s \le B` and otherwise
  :math:`(s - B) / T`, floored when ``staircase``.

  Args:
    init_value: value at step 0.
    peak_value: value at the end of the warmup, step :math:`W`.
    warmup_steps: length :math:`W` of the linear warmup, >= 0.
    transition_steps: steps :math:`T` per factor of ``decay_rate``, > 0.
    decay_rate: decay factor :math:`r`, > 0.
    transition_begin: steps to hold ``peak_value`` after the warmup, >= 0.
      Default 0.
    staircase: decay in whole steps of ``transition_steps``. Default False.
    end_value: bound :math:`E` at which the decay stops, or None. Default None.

  Differences from optax: as for :func:`exponential_decay`.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.warmup_exponential_decay_schedule(
    ...     init_value=0.0, peak_value=1.0, warmup_steps=10,
    ...     transition_steps=10, decay_rate=0.5)
    >>> print(round(float(sched(5)), 4), round(float(sched(30)), 4))
    0.5 0.25
  """
  where = "warmup_exponential_decay_schedule"
  warmup_steps = _steps(where, "warmup_steps", warmup_steps)
  transition_steps = _steps(where, "transition_steps", transition_steps,
                            positive=True)
  _check(where, "decay_rate", decay_rate, lambda r: r > 0, "> 0")
  transition_begin = _steps(where, "transition_begin", transition_begin)
  return join_schedules(
      [_polynomial(init_value, peak_value, 1, warmup_steps, 0),
       _exponential(peak_value, transition_steps, decay_rate,
                    transition_begin, staircase, end_value)],
      [warmup_steps])
