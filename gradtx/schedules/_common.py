"""What the schedules share: the type names, ``repr``, validation and numerics."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import operator
from typing import Any, Callable, ParamSpec

import chex
import jax
import jax.numpy as jnp
import numpy as np

from gradtx.core import NOT_NUMBER_KINDS, Schedule, check_flag, kind
from gradtx.errors import HyperparameterError



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

  # A copy is the schedule itself, as copying a function is (optax's schedules are
  # functions): copy.deepcopy of a flax TrainState holding one as static data made another,
  # compared unequal (identity), and a jitted step taking it was traced again. Nothing of
  # a schedule changes after it is made.
  def __copy__(self) -> "_Named":
    return self

  def __deepcopy__(self, memo: dict[int, Any]) -> "_Named":
    return self


def _shown(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, jax.core.Tracer):
    return "<traced>"
  if isinstance(value, jax.Array) and value.ndim == 0:
    return f"{float(value):g}"
  return repr(value)


_Args = ParamSpec("_Args")


def _named(factory: Callable[_Args, Schedule]) -> Callable[_Args, Schedule]:
  """Makes ``factory``'s schedules print as ``factory(arg=value, ...)``, and checks first
  that its value arguments are numbers (:func:`_number`) and its switches bools
  (:func:`gradtx.core.check_flag`); keeps its signature for type checkers."""
  signature = inspect.signature(factory)
  flags = [name for name, parameter in signature.parameters.items()
           if parameter.annotation in ("bool", bool)]

  numbers = {name: parameter.annotation.endswith("| None")
             for name, parameter in signature.parameters.items()
             if parameter.annotation in _NUMBER_ANNOTATIONS}

  @functools.wraps(factory)
  def make(*args: _Args.args, **kwargs: _Args.kwargs) -> Schedule:
    bound = signature.bind(*args, **kwargs)
    for name, optional in numbers.items():
      if name in bound.arguments:
        _number(factory.__name__, name, bound.arguments[name], optional=optional)
    for name in flags:
      if name in bound.arguments:
        bound.arguments[name] = check_flag(factory.__name__, name, bound.arguments[name])
    schedule = factory(*bound.args, **bound.kwargs)
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


# The annotations of the arguments that are values (``init_value``, ``decay_rate``): each
# is checked to be a number before the factory runs (:func:`_number`).
_NUMBER_ANNOTATIONS = ("chex.Numeric", "chex.Numeric | None", "float")


def _number(where: str, arg: str, value: Any, *, optional: bool = False) -> None:
  """Raises unless ``value`` is a number or an array of numbers (or None, if ``optional``).

  A string is a slip (PyYAML loads ``1e-3`` as ``'1e-3'``), which ``jnp.asarray(value,
  dtype)`` would parse: ``exponential_decay(1.0, 10, '0.5')`` decayed by 0.5, where
  optax raises, and an ``init_value`` of ``'1e-3'`` failed at the first step with
  numpy's "format number 1 of '1e-3' is not recognized". A bool is a flag in a
  number's place, as for any hyperparameter (:func:`gradtx.core.check_value`).
  """
  if value is None and optional:
    return
  value_kind = kind(value)
  rule = "a number or None" if optional else "a number"
  if (value is None or isinstance(value, (str, bytes, bool)) or value_kind == "b"
      or value_kind in NOT_NUMBER_KINDS):
    hint = " (convert it with float())" if isinstance(value, (str, bytes)) else ""
    raise HyperparameterError(f"{where}: {arg} must be {rule}, got {value!r}{hint}")
  # A complex value failed at the first step (float() of a complex, or its imaginary part
  # dropped with a warning), and a NaN one was NaN at every step: a slip, never a value.
  if isinstance(value, complex) or value_kind == "c":
    raise HyperparameterError(f"{where}: {arg} must be a real number, got {value!r}")
  if not isinstance(value, (numbers.Real, np.ndarray, np.generic, jax.Array)):
    # A list, a dict, ...: Python arithmetic on it failed, naming nothing ("unsupported
    # operand type(s) for /: 'list' and 'float'" in the one-cycle schedules). Values per
    # member of an ensemble are an array.
    hint = " (several values: pass jnp.asarray of them)" if isinstance(value, (list, tuple)) else ""
    raise HyperparameterError(f"{where}: {arg} must be {rule} or an array, got {value!r}{hint}")
  if not isinstance(value, jax.core.Tracer):
    try:
      held = np.asarray(value, np.float64)
    except (TypeError, ValueError):
      return
    if np.isnan(held).any():
      shown = value if held.ndim == 0 else "an array holding NaN"
      raise HyperparameterError(f"{where}: {arg} must be {rule}, got {shown}")


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
  """Raises unless a concrete ``value`` is a finite number for which ``ok`` holds.

  ``inf`` is refused whatever ``ok`` says, as :class:`gradtx.core.Range` leaves it out:
  a ``decay_rate`` of inf gave inf from step 1 on, a ``div_factor`` of inf NaN at every
  step, and a piecewise scale of inf inf (NaN at step 0 once interpolated)."""
  _number(where, arg, value)
  number = _concrete(value)
  if number is None:
    return
  if not ok(number):
    raise _error(where, arg, rule, value)
  if not math.isfinite(number):
    raise _error(where, arg, f"a finite number {rule}", value)


# ------------------------------------------------------------------ numerics


def _schedule_dtypes(*values: Any) -> tuple[Any, Any]:
  """(value dtype, compute dtype) for a schedule with these value arguments."""
  dtype = jnp.result_type(*values)
  if not jnp.issubdtype(dtype, jnp.inexact):
    dtype = jnp.result_type(float)  # default float: float64 under x64.
  if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
    return dtype, jnp.dtype(jnp.float32)
  return dtype, dtype


def _count(count: chex.Numeric, *steps: int) -> jax.Array:
  """``count`` as an array of a signed integer dtype that holds every one of ``steps``
  (a float count as it is).

  An unsigned count wrapped around below a step (``uint32(4) - 5``), so a linear
  schedule that begins at step 5 gave its end value at step 4; it is taken as signed,
  saturating where the signed dtype ends, as gradtx's own counters do. A step beyond
  an int32 count's range (a placeholder boundary such as ``10**10``) overflowed where
  it met the count: under x64, where gradtx's counts are still int32, JAX wrapped it
  silently (``piecewise_constant_schedule(1.0, {10**10: 0.1})`` gave 0.1 from step
  0), and without x64 it raised an OverflowError naming no schedule. Such a count is
  widened to int64 where x64 allows it; otherwise the error says what to do.
  """
  count = jnp.asarray(count)
  if not jnp.issubdtype(count.dtype, jnp.integer):
    return count
  if jnp.issubdtype(count.dtype, jnp.unsignedinteger):
    bits = min(2 * 8 * count.dtype.itemsize, 64)
    signed = jax.dtypes.canonicalize_dtype(jnp.dtype(f"int{bits}"))  # int32 without x64
    if jnp.iinfo(signed).max < jnp.iinfo(count.dtype).max:
      count = jnp.minimum(count, jnp.iinfo(signed).max)
    count = count.astype(signed)
  top = max(steps, default=0)
  if top <= jnp.iinfo(count.dtype).max:
    return count
  wide = jax.dtypes.canonicalize_dtype(jnp.int64)  # int32 without x64
  if top <= jnp.iinfo(wide).max:
    return count.astype(wide)
  raise OverflowError(
      f"schedule: a step of {top} is beyond the largest {count.dtype} count, "
      f"{jnp.iinfo(count.dtype).max}; give steps up to that, or enable x64 "
      "(jax.config.update('jax_enable_x64', True)) to count in int64")


def _fraction(count: jax.Array, begin: int, steps: int,
              ctype: Any) -> jax.Array:
  """How far ``count`` is through ``[begin, begin + steps]``, in [0, 1], exactly 0
  and 1 at its ends."""
  try:
    count = _count(count, begin, steps)
  except OverflowError:
    # The transition ends past the last count of count's dtype (decay_steps=10**10 with
    # an int32 count), so no count reaches its end, which then need not come out exactly
    # 1: the fraction is taken in ctype, as optax's cosine_decay_schedule takes it.
    begin_, steps_ = jnp.asarray(begin, ctype), jnp.asarray(steps, ctype)
    return jnp.clip(count.astype(ctype) - begin_, 0, steps_) / steps_
  elapsed = jnp.clip(count - begin, 0, steps)
  left = steps - elapsed
  # Under jit, x / steps compiles to x * (1 / steps), which can miss 1 at the end
  # (7 * float32(1/7) > 1, 41 * float32(1/41) < 1): 1 - frac was then below 0
  # (NaN for a fractional power) or above it (polynomial_schedule(1, 0.01, 0.1, 41)
  # ended at 0.19). The second half is taken from the steps left, exactly 0 at
  # the end. (A select on elapsed == steps is not enough: the compiler folds it
  # away.) elapsed < left, not 2 * elapsed < steps, which overflows past 2**30 steps.
  return jnp.where(elapsed < left, elapsed.astype(ctype) / steps,
                   1 - left.astype(ctype) / steps)


def _half_cosine(frac: jax.Array) -> jax.Array:
  """``(1 + cos(pi * frac)) / 2``: 1 at frac = 0, 0 at frac = 1."""
  return 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
