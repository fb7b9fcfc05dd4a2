"""Cycles: SGD with warm restarts and the one-cycle schedules."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import chex

from gradtx.errors import HyperparameterError
from gradtx.schedules._common import Schedule, _check, _error, _named, _number, _steps
from gradtx.schedules._piecewise import _interpolate, join_schedules
from gradtx.schedules._warmup import _warmup_cosine


_WARMUP_COSINE_KEYS = (
    "init_value", "peak_value", "warmup_steps", "decay_steps", "end_value",
    "exponent",
)
_WARMUP_COSINE_REQUIRED = _WARMUP_COSINE_KEYS[:4]


@_named
def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
  r"""SGD with warm restarts: warmup-cosine cycles, one after another.

  Cycle :math:`k` is a :func:`warmup_cosine_decay_schedule` built from
  ``cosine_kwargs[k]``; it starts at :math:`S_k = \sum_{j<k} D_j`, the sum of
  the earlier cycles' ``decay_steps``:

  .. math::
    v_t = f_k(t - S_k) \quad \text{for } S_k \le t < S_{k+1}

  The last cycle holds its ``end_value`` after it ends.

  Args:
    cosine_kwargs: one dict per cycle with the arguments of
      :func:`warmup_cosine_decay_schedule`: ``init_value``, ``peak_value``,
      ``warmup_steps``, ``decay_steps`` and optionally ``end_value`` and
      ``exponent``.

  Differences from optax:
    An empty list, a missing or unknown key raises ``ValueError`` naming the
    cycle.

  Example:
    >>> from gradtx import schedules
    >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=0,
    ...              decay_steps=10)
    >>> sched = schedules.sgdr_schedule([cycle, cycle])
    >>> print(round(float(sched(5)), 4), round(float(sched(10)), 4))
    0.5 1.0

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm
    Restarts <https://arxiv.org/abs/1608.03983>`_, ICLR 2017.
  """
  cycles, boundaries, start = [], [], 0
  # One cycle's dict (its keys would be taken as cycles), or a number ("'float' object is
  # not iterable").
  if isinstance(cosine_kwargs, (Mapping, str, bytes)) or not isinstance(cosine_kwargs, Iterable):
    raise _error("sgdr_schedule", "cosine_kwargs", "a list of dicts, one per cycle",
                 cosine_kwargs)
  for k, kwargs in enumerate(cosine_kwargs):
    where = f"sgdr_schedule (cycle {k})"
    if not isinstance(kwargs, Mapping):
      raise _error(where, "the cycle", "a dict of warmup_cosine_decay_schedule's arguments",
                   kwargs)
    unknown = sorted(set(kwargs) - set(_WARMUP_COSINE_KEYS))
    missing = [key for key in _WARMUP_COSINE_REQUIRED if key not in kwargs]
    if unknown or missing:
      raise HyperparameterError(
          f"{where}: unknown keys {unknown} and missing keys {missing}; the "
          f"keys are {list(_WARMUP_COSINE_KEYS)}, the last two optional")
    for key in ("init_value", "peak_value", "end_value"):  # as warmup_cosine_decay_schedule's
      if key in kwargs:
        _number(where, key, kwargs[key])
    cycles.append(_warmup_cosine(where, **kwargs))
    start += int(kwargs["decay_steps"])
    boundaries.append(start)
  if not cycles:
    raise _error("sgdr_schedule", "cosine_kwargs", "non-empty", cosine_kwargs)
  return join_schedules(cycles, boundaries[:-1])


def _check_onecycle(where, transition_steps, pct_start, div_factor,
                    final_div_factor) -> int:
  steps = _steps(where, "transition_steps", transition_steps, positive=True)
  _check(where, "pct_start", pct_start, lambda p: 0 <= p < 1, "in [0, 1)")
  _check(where, "div_factor", div_factor, lambda d: d > 0, "> 0")
  _check(where, "final_div_factor", final_div_factor, lambda d: d > 0, "> 0")
  return steps


@_named
def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: chex.Numeric,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
  r"""One cycle: cosine rise to ``peak_value``, then cosine fall.

  With :math:`T` = ``transition_steps``, :math:`a = \lfloor p_s T \rfloor`,
  :math:`v_0 = P / d` and :math:`v_T = v_0 / d_f`, and
  :math:`c(x, y, u) = y + \frac{x - y}{2} (1 + \cos \pi u)`:

  .. math::
    v_t = \begin{cases}
      c\left(v_0, P, \frac{t}{a}\right), & t < a \\
      c\left(P, v_T, \frac{t - a}{T - a}\right), & a \le t < T \\
      v_T, & t \ge T
    \end{cases}

  Args:
    transition_steps: length :math:`T` of the cycle, > 0.
    peak_value: the peak :math:`P`, reached at step :math:`a`.
    pct_start: fraction :math:`p_s` of the cycle spent rising, in [0, 1).
      Default 0.3.
    div_factor: :math:`d`, the start value is ``peak_value / div_factor``;
      > 0. Default 25.0.
    final_div_factor: :math:`d_f`, the end value is the start value divided
      by it; > 0. Default 1e4.

  Differences from optax:
    ``pct_start`` outside [0, 1) and non-positive divisors raise
    ``ValueError``.

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.cosine_onecycle_schedule(100, peak_value=1.0)
    >>> print(round(float(sched(0)), 4), round(float(sched(30)), 4))
    0.04 1.0

  References:
    Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates <https://arxiv.org/abs/1708.07120>`_, 2018.
  """
  where = "cosine_onecycle_schedule"
  steps = _check_onecycle(where, transition_steps, pct_start, div_factor,
                          final_div_factor)
  return _interpolate(
      where, "cosine", peak_value / div_factor,
      {int(pct_start * steps): div_factor,
       steps: 1.0 / (div_factor * final_div_factor)})


@_named
def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: chex.Numeric,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
  r"""One cycle in three linear phases: rise, fall, then annihilation.

  With :math:`T` = ``transition_steps``, :math:`a = \lfloor p_s T \rfloor`,
  :math:`b = \lfloor p_f T \rfloor`, :math:`v_0 = P / d`:

  .. math::
    v_t = \begin{cases}
      v_0 + (P - v_0) \frac{t}{a}, & t < a \\
      P + (v_0 - P) \frac{t - a}{b - a}, & a \le t < b \\
      v_0 + \left(\frac{v_0}{d_f} - v_0\right) \frac{t - b}{T - b},
        & b \le t < T \\
      v_0 / d_f, & t \ge T
    \end{cases}

  Args:
    transition_steps: length :math:`T` of the cycle, > 0.
    peak_value: the peak :math:`P`, reached at step :math:`a`.
    pct_start: fraction :math:`p_s` of the cycle spent rising, in [0, 1).
      Default 0.3.
    pct_final: fraction :math:`p_f` at which the fall back to :math:`v_0`
      ends, in (``pct_start``, 1). Default 0.85.
    div_factor: :math:`d`, the start value is ``peak_value / div_factor``;
      > 0. Default 25.0.
    final_div_factor: :math:`d_f`, the end value is the start value divided
      by it; > 0. Default 1e4.

  Differences from optax:
    Out-of-range fractions, non-positive divisors, and a cycle too short for
    :math:`a < b` raise ``ValueError`` (optax then silently merges phases).

  Example:
    >>> from gradtx import schedules
    >>> sched = schedules.linear_onecycle_schedule(100, peak_value=1.0)
    >>> print(round(float(sched(15)), 4), round(float(sched(30)), 4))
    0.52 1.0

  References:
    Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates <https://arxiv.org/abs/1708.07120>`_, 2018.
  """
  where = "linear_onecycle_schedule"
  steps = _check_onecycle(where, transition_steps, pct_start, div_factor,
                          final_div_factor)
  _check(where, "pct_final", pct_final, lambda p: pct_start < p < 1,
         f"in (pct_start={pct_start}, 1)")
  rise_end, fall_end = int(pct_start * steps), int(pct_final * steps)
  if rise_end == fall_end:
    raise _error(where, "transition_steps",
                 "large enough that pct_start and pct_final fall on "
                 f"different steps (both give step {rise_end})", steps)
  return _interpolate(
      where, "linear", peak_value / div_factor,
      {rise_end: div_factor, fall_end: 1.0 / div_factor,
       steps: 1.0 / final_div_factor})
