"""Learning-rate and hyperparameter schedules.

A schedule is a plain function ``count -> value``: ``count`` is the number of
steps taken so far (a Python int or a JAX integer array, possibly traced under
``jax.jit``) and ``value`` is a JAX scalar array. Every factory here keeps
optax's name, argument names, defaults and values, so ``optax.<name>`` and
``gradtx.schedules.<name>`` are interchangeable.

Conventions shared by all schedules:

* **Validation.** Arguments are checked when the schedule is built; a bad one
  raises :class:`gradtx.errors.HyperparameterError` (a ``ValueError``) naming
  the schedule, the argument, its value and the allowed range. Step counts
  (``transition_steps``, ``decay_steps``, boundaries, ...) must be integers
  (an integral float such as ``1e5`` is accepted). Values that are traced
  arrays cannot be checked and are taken as given.
* **Dtype.** The value has the floating dtype of the value arguments
  (``init_value``, ``peak_value``, ...): float32 by default, float64 under
  ``jax.enable_x64`` when they are Python floats, and an array's own dtype
  when one is given. Nothing is forced to float32; 16-bit values are computed
  in float32 and rounded once at the end.
* **Counts.** Integer counts stay integers until the fraction of a phase is
  taken, so boundaries are exact. A count below 0 is treated as 0.

Where gradtx differs from optax (only on inputs optax accepts but cannot use
well), the factory's docstring says so under *Differences from optax*.
"""

from __future__ import annotations

import functools
import inspect
import operator
from typing import Any, Callable, Iterable, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp

from gradtx.errors import HyperparameterError

Schedule = Callable[[chex.Numeric], chex.Numeric]
"""A schedule: a function of the step count returning a scalar value."""
ScalarOrSchedule = float | jax.Array | Schedule
"""A hyperparameter given as a fixed value or as a :data:`Schedule`."""

__all__ = [
    "Schedule",
    "ScalarOrSchedule",
    "constant_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "join_schedules",
    "sgdr_schedule",
    "cosine_onecycle_schedule",
    "linear_onecycle_schedule",
]

_WARMUP_COSINE_KEYS = (
    "init_value", "peak_value", "warmup_steps", "decay_steps", "end_value",
    "exponent",
)
_WARMUP_COSINE_REQUIRED = _WARMUP_COSINE_KEYS[:4]


# ---------------------------------------------------------------- repr


class _Named:
  """A schedule that shows how it was built: ``repr`` gives the factory call."""

  __slots__ = ("_fn", "_text", "__weakref__")

  def __init__(self, fn: Schedule, text: str):
    self._fn = fn
    self._text = text

  def __call__(self, count: chex.Numeric) -> chex.Numeric:
    return self._fn(count)

  def __repr__(self) -> str:
    return self._text


def _shown(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, jax.core.Tracer):
    return "<traced>"
  if isinstance(value, jax.Array) and value.ndim == 0:
    return f"{float(value):g}"
  return repr(value)


def _named(factory: Callable[..., Schedule]) -> Callable[..., Schedule]:
  """Makes ``factory``'s schedules print as ``factory(arg=value, ...)``."""
  signature = inspect.signature(factory)

  @functools.wraps(factory)
  def make(*args: Any, **kwargs: Any) -> Schedule:
    schedule = factory(*args, **kwargs)
    bound = signature.bind(*args, **kwargs)
    shown = ", ".join(f"{k}={_shown(v)}" for k, v in bound.arguments.items())
    return _Named(schedule, f"{factory.__name__}({shown})")

  return make


# ---------------------------------------------------------------- validation


def _error(where: str, arg: str, rule: str, value: Any) -> HyperparameterError:
  return HyperparameterError(f"{where}: {arg} must be {rule}, got {value!r}")


def _steps(where: str, arg: str, value: Any, *, positive: bool = False) -> int:
  """Returns ``value`` as an int, checking it is an integer >= 0 (or > 0)."""
  rule = "an integer > 0" if positive else "an integer >= 0"
  if isinstance(value, (str, bytes, bool)):
    raise _error(where, arg, rule, value)
  try:
    steps = operator.index(value)
  except TypeError:
    try:
      number = float(value)
    except (TypeError, ValueError):
      raise _error(where, arg, rule, value) from None
    if not number.is_integer():
      raise _error(where, arg, rule, value) from None
    steps = int(number)
  if steps < (1 if positive else 0):
    raise _error(where, arg, "> 0" if positive else ">= 0", value)
  return steps


def _concrete(value: Any) -> float | None:
  """``value`` as a float, or None where it is traced or not a scalar."""
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def _check(where: str, arg: str, value: Any,
           ok: Callable[[float], bool], rule: str) -> None:
  number = _concrete(value)
  if number is not None and not ok(number):
    raise _error(where, arg, rule, value)


# ------------------------------------------------------------------ numerics


def _dtypes(*values: Any) -> tuple[Any, Any]:
  """(value dtype, compute dtype) for a schedule with these value arguments."""
  dtype = jnp.result_type(*values)
  if not jnp.issubdtype(dtype, jnp.inexact):
    dtype = jnp.result_type(float)  # default float: float64 under x64.
  if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
    return dtype, jnp.dtype(jnp.float32)
  return dtype, dtype


def _widest(dtypes: Sequence[Any]) -> Any:
  """The dtype that holds all of ``dtypes``, promoted on purpose."""
  with jax.numpy_dtype_promotion("standard"):
    return functools.reduce(jnp.promote_types, dtypes)


def _fraction(count: jax.Array, begin: int, steps: int,
              ctype: Any) -> jax.Array:
  """How far ``count`` is through ``[begin, begin + steps]``, in [0, 1]."""
  return jnp.clip(count - begin, 0, steps).astype(ctype) / steps


def _half_cosine(frac: jax.Array) -> jax.Array:
  """``(1 + cos(pi * frac)) / 2``: 1 at frac = 0, 0 at frac = 1."""
  return 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


# ----------------------------------------------------------------- schedules


@_named
def constant_schedule(value: chex.Numeric) -> Schedule:
  r"""A schedule that holds ``value`` at every step.

  .. math::
    v_t = v

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
    return lambda count: jnp.asarray(init_value, _dtypes(init_value)[0])

  def schedule(count: chex.Numeric) -> jax.Array:
    dtype, ctype = _dtypes(init_value, end_value)
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
    dtype, ctype = _dtypes(init_value)
    elapsed = jnp.asarray(count) - transition_begin
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
    v_t = \begin{cases}
      I, & t \le B \\
      \operatorname{clip}_E \left( I \, r^{p_t} \right), & t > B
    \end{cases}
    \qquad p_t = \frac{t - B}{T}
    \;\; \text{or} \;\; \left\lfloor \frac{t - B}{T} \right\rfloor
    \text{ (staircase)}

  with :math:`I` = ``init_value``, :math:`r` = ``decay_rate``, :math:`T` =
  ``transition_steps``, :math:`B` = ``transition_begin``. The clip to
  :math:`E` = ``end_value`` is a lower bound when :math:`r < 1` and an upper
  bound otherwise; as in optax it applies at every step, also before
  :math:`B`.

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
    dtype, ctype = _dtypes(init_value, end_value)
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
    alpha: final value as a fraction of ``init_value``. Default 0.0.
    exponent: power :math:`p` of the cosine factor, > 0. Default 1.0.

  Differences from optax:
    ``exponent <= 0`` raises ``ValueError``.

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
  _check(where, "exponent", exponent, lambda p: p > 0, "> 0")
  def schedule(count: chex.Numeric) -> jax.Array:
    dtype, ctype = _dtypes(init_value)
    frac = _fraction(jnp.asarray(count), 0, steps, ctype)
    a = jnp.asarray(alpha, ctype)
    decayed = (1.0 - a) * _half_cosine(frac) ** jnp.asarray(exponent,
                                                            ctype) + a
    return (jnp.asarray(init_value, ctype) * decayed).astype(dtype)

  return schedule


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
    dtype = _dtypes(init_value, peak_value)[0]
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


def _boundaries(where: str, boundaries_and_scales: Mapping[int, Any] | None
                ) -> tuple[tuple[int, ...], tuple[Any, ...]]:
  """Sorted, validated boundaries and their scales."""
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
    dtype, ctype = _dtypes(init_value)
    count = jnp.asarray(count)
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
  if interpolate_type not in _INTERPOLATE:
    raise _error(where, "interpolate_type", "'linear' or 'cosine'",
                 interpolate_type)
  interpolate = _INTERPOLATE[interpolate_type]
  boundaries, scales = _boundaries(where, boundaries_and_scales)
  bounds = (0,) + boundaries

  def schedule(count: chex.Numeric) -> jax.Array:
    dtype, ctype = _dtypes(init_value)
    count = jnp.maximum(jnp.asarray(count), 0)
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
  schedules = tuple(schedules)
  if not schedules:
    raise _error(where, "schedules", "a non-empty sequence", schedules)
  boundaries = tuple(_steps(where, "boundary", b) for b in boundaries)
  if len(boundaries) != len(schedules) - 1:
    raise _error(where, "boundaries",
                 f"{len(schedules) - 1} steps, one fewer than the schedules",
                 boundaries)
  if list(boundaries) != sorted(boundaries):
    raise _error(where, "boundaries", "in non-decreasing order", boundaries)

  def schedule(count: chex.Numeric) -> jax.Array:
    count = jnp.asarray(count)
    pieces = [jnp.asarray(schedules[0](count))]
    pieces += [jnp.asarray(later(count - boundary))
               for boundary, later in zip(boundaries, schedules[1:])]
    # Pieces may differ in dtype (a float32 array init_value under x64):
    # the joined value takes the widest one, explicitly.
    dtype = _widest([v.dtype for v in pieces])
    pieces = [v if v.dtype == dtype else v.astype(dtype) for v in pieces]
    value = pieces[0]
    for boundary, piece in zip(boundaries, pieces[1:]):
      value = jnp.where(count < boundary, value, piece)
    return value

  return schedule


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
  for k, kwargs in enumerate(cosine_kwargs):
    where = f"sgdr_schedule (cycle {k})"
    unknown = sorted(set(kwargs) - set(_WARMUP_COSINE_KEYS))
    missing = [key for key in _WARMUP_COSINE_REQUIRED if key not in kwargs]
    if unknown or missing:
      raise HyperparameterError(
          f"{where}: unknown keys {unknown} and missing keys {missing}; the "
          f"keys are {list(_WARMUP_COSINE_KEYS)}, the last two optional")
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
