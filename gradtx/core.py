"""The protocol, hyperparameters in the state, and the smallest transformations.

Design note. A *gradient transformation* is a pair of pure functions,

    init(params) -> state
    update(updates, state, params=None, **extra) -> (updates, state)

with optax's signatures. Words used throughout gradtx:

* *stage*: one transformation inside a chain, under a name.
* *stage state*: the state of one stage, a small NamedTuple with stable field
  names whose last field, ``hparams``, holds the stage's numeric
  hyperparameters (:class:`HParams`).
* *chain state*: a mapping from stage names to stage states
  (:class:`gradtx.ChainState`).

Keeping hyperparameters in the stage state, as arrays, is what lets
:func:`hparams` read them and :func:`set_hparams` change them by dotted name
between steps without retracing: a jitted step sees new values of the same
shape and dtype. A hyperparameter given as a schedule is evaluated at the
stage's own step count and the state keeps the value it had at the last step.

Structural options (``nesterov``, dtypes, masks) are not in the state; they are
fixed when the transformation is built and show in its ``repr``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import math
import os
import sys
import types
from typing import (TYPE_CHECKING, Any, Callable, Iterator, Mapping, NamedTuple, ParamSpec,
                    Protocol, TypeVar, cast)

import chex
import jax
import jax.numpy as jnp
import numpy as np

from gradtx._flax_serialization import register_with_flax, serializable
from gradtx.errors import (ArgumentTypeError, HyperparameterError, MissingArgumentError,
                           StructureError)

PyTree = Any
Params = Any
"""The parameters: any pytree of arrays (optax's ``Params``)."""
Updates = Any
"""Gradients or updates: a pytree with the parameters' structure (optax's ``Updates``)."""
State = Any
OptState = State
"""A transformation's state: any pytree (optax's ``OptState``)."""
Schedule = Callable[[chex.Numeric], chex.Numeric]
"""A hyperparameter as a function of the step count (optax's ``Schedule``): what
:mod:`gradtx.schedules` make, callable with a Python int or an integer array."""
ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], chex.Numeric]
"""A hyperparameter given as a number, an array or a function of the step count: a
:data:`Schedule`, or any function of the count as a JAX integer array (which is what a
stage calls it with), returning a number or a scalar array."""


class InitFn(Protocol):
  def __call__(self, params: Params) -> State: ...


class UpdateFn(Protocol):
  def __call__(self, updates: Updates, state: State, params: Params | None = None,
               **extra: Any) -> tuple[Updates, State]: ...


class PlainUpdateFn(Protocol):
  """An ``update`` without ``**extra`` (optax's ``TransformUpdateFn``): what
  :class:`GradientTransformation` also takes, as optax's does."""

  def __call__(self, updates: Updates, state: State,
               params: Params | None = None) -> tuple[Updates, State]: ...


# ----------------------------------------------------------------------------
# Allowed ranges of hyperparameters.


@dataclasses.dataclass(frozen=True)
class Range:
  """The allowed values of a hyperparameter, an interval of the extended real line.

  ``Range(0, 1, high_open=True)`` is :math:`[0, 1)`. A ``None`` bound is
  unbounded and the interval is open there, as it prints: ``Range(0)`` is
  :math:`[0, \\infty)`, every finite number :math:`\\ge 0` but not ``inf``. A
  learning rate, a decay, a weight decay or an ``eps`` of ``inf`` steps by NaN or
  not at all, so ranges leave it out unless they say otherwise: a hyperparameter
  for which ``inf`` means "no bound" (a clip threshold, a cap on a step size)
  closes its range at an infinite bound, ``Range(0, math.inf)`` being
  :math:`[0, \\infty]` (:data:`NONNEGATIVE_OR_INF`, :data:`POSITIVE_OR_INF`).

  ``integer=True`` keeps the value as an int32 (never infinite). A value is a
  scalar, unless ``vector=True``: several numbers, each in the range, held as
  one array (``betas``).
  """
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  integer: bool = False
  vector: bool = False

  def _ends(self) -> tuple[float, bool, float, bool]:
    """``(low, low_open, high, high_open)``, an unbounded end as an open infinite one."""
    low = -math.inf if self.low is None else self.low
    high = math.inf if self.high is None else self.high
    return low, self.low_open or self.low is None, high, self.high_open or self.high is None

  def __str__(self) -> str:
    if self.integer:  # an int32: its bounds are the dtype's where the range has none
      least, greatest = self._int32_bounds()
      return f"[{least}, {greatest}] (an integer)"
    low, low_open, high, high_open = self._ends()
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

  def _int32_bounds(self) -> tuple[int, int]:
    """The least and greatest int32 in an integer range."""
    info = np.iinfo(np.int32)
    low, high = int(info.min), int(info.max)
    if self.low is not None and math.isfinite(self.low):
      low = max(low, math.floor(self.low) + 1 if self.low_open else math.ceil(self.low))
    if self.high is not None and math.isfinite(self.high):
      high = min(high, math.ceil(self.high) - 1 if self.high_open else math.floor(self.high))
    return low, high

  def contains(self, value: Any) -> bool:
    """Whether every entry of a concrete ``value`` lies in the range."""
    v = np.asarray(value, dtype=np.float64)
    if np.isnan(v).any():
      return False
    low, low_open, high, high_open = self._ends()
    ok = (v > low if low_open else v >= low) & (v < high if high_open else v <= high)
    if self.integer:  # a whole number that fits the int32 it is held as (not inf, not 1e10)
      least, greatest = self._int32_bounds()
      ok &= (v == np.round(v)) & (v >= least) & (v <= greatest)
    return bool(np.all(ok))

  def _refuses_only_infinity(self, value: Any) -> bool:
    """Whether a concrete ``value`` outside the range would be in it if the range held
    ``inf`` (and ``-inf``) at its unbounded ends: it is refused for being infinite."""
    if self.integer or not np.isinf(np.asarray(value, dtype=np.float64)).any():
      return False
    low, _, high, _ = self._ends()
    low_open = self.low_open and math.isfinite(low)
    high_open = self.high_open and math.isfinite(high)
    return dataclasses.replace(self, low=low, high=high, low_open=low_open,
                               high_open=high_open).contains(value)


ANY = Range()
"""Any finite real number: :math:`(-\\infty, \\infty)`."""
NONNEGATIVE = Range(0.0)
"""Zero or more, finite: :math:`[0, \\infty)`."""
POSITIVE = Range(0.0, low_open=True)
"""More than zero, finite: :math:`(0, \\infty)`."""
NONNEGATIVE_OR_INF = Range(0.0, math.inf)
"""Zero or more, or ``inf``: :math:`[0, \\infty]`. For a threshold or a cap that ``inf``
switches off (``clip(max_delta=math.inf)`` clips nothing)."""
POSITIVE_OR_INF = Range(0.0, math.inf, low_open=True)
"""More than zero, or ``inf``: :math:`(0, \\infty]`. For a threshold or a cap that ``inf``
switches off (``clip_by_global_norm(math.inf)`` clips nothing)."""
UNIT = Range(0.0, 1.0)                      # [0, 1]
"""The closed unit interval :math:`[0, 1]`."""
UNIT_HALF_OPEN = Range(0.0, 1.0, high_open=True)  # [0, 1)
"""The unit interval without 1, :math:`[0, 1)`: decay rates of moving averages."""
NONNEGATIVE_INT = Range(0, integer=True)
"""An integer, zero or more (held as int32)."""
POSITIVE_INT = Range(1, integer=True)
"""An integer, one or more (held as int32)."""


def is_concrete(value: Any) -> bool:
  """Whether ``value`` is known at trace time (holds no tracer), so Python may branch on it.

  A tuple or list is looked into: a pair such as ``betas=(b1, 0.999)`` whose ``b1`` is
  swept under ``vmap`` is traced, though the tuple itself is not a tracer.
  """
  return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def branch(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any],
            *operands: Any) -> Any:
  """``jax.lax.cond(pred, true_fn, false_fn, *operands)`` when ``pred`` is traced; when it
  is concrete (an eager call), only the branch taken runs, and nothing is compiled."""
  if is_concrete(pred):
    return true_fn(*operands) if bool(pred) else false_fn(*operands)
  return jax.lax.cond(pred, true_fn, false_fn, *operands)


_Kernel = TypeVar("_Kernel", bound=Callable[..., Any])


def one_kernel_when_eager(fn: _Kernel) -> _Kernel:
  """``fn``, a per-array function of a few operations, run as one compiled kernel
  (``jax.jit(fn)``) when called on concrete arrays, as in an eager step.

  Eagerly, each JAX operation is dispatched on its own, at about 5-10 us apiece on a
  CPU, more than the arithmetic on a layer's arrays; the kernel is compiled once per
  shape and dtype and then dispatched once. Traced (under ``jax.jit``, ``grad``,
  ``vmap``), the decorated function is ``fn`` itself: a staged step's program is
  unchanged.

  Fusion can change a bit where a product feeds a sum, which XLA contracts into one
  fused multiply-add rounded once (in a jitted step as well): the numerics helpers
  decorated keep to comparisons, selections and single roundings, and are checked bit
  for bit against the operations one by one; a caller whose kernel has products
  (NovoGrad's leaf rule) says that its eager last bits are the fused kernel's.
  """
  kernel = jax.jit(fn)

  @functools.wraps(fn)
  def call(*args: Any) -> Any:
    return (kernel if is_concrete(args) else fn)(*args)
  return cast(_Kernel, call)


# Programs (one per function and options) jit_per_static keeps for the next call.
JITS_KEPT = 8


def jit_per_static(fn: Callable[..., Any]) -> Callable[..., Callable[..., Any]]:
  """``lookup(*static)``: ``jax.jit(functools.partial(fn, *static))``, one per hashable
  ``static`` (a user's function, Python options), the last :data:`JITS_KEPT` kept.

  For a loop (``lax.while_loop``, ``scan``, ``cond``) whose body closes over a user's
  function: called eagerly, the body is a new closure, traced and compiled at every
  call; through ``lookup(value_fn, ...)(arrays)`` it is compiled once per function,
  looked up by its identity (as ``jax.jit`` looks up a static argument), and inlined
  under an outer ``jit``. Not ``jax.jit(fn, static_argnums=...)``, whose cache keeps
  every static argument it was given: a ``lambda`` made at each eager step, and the
  arrays it closes over (8 MB a step measured for a 1 MB batch), until jax evicts them.
  Where ``static`` cannot be hashed (an unhashable callable), ``lookup`` gives ``fn``
  unjitted: its loops are traced at every call, as they were.

  Called on traced arrays (under ``jit``, ``grad``, ``vmap``), ``fn`` runs as it is, traced
  into the caller's program as a nested jit would be inlined, and nothing is kept: the
  function there closes over the caller's tracers (``value_fn=lambda p: loss(p, batch)``
  in a jitted step), and kept here it leaked them past their trace, which
  ``jax.checking_leaks()`` reports as an error (optax's line searches leak nothing).
  """
  kept = _JitsKept(fn)

  def lookup(*static: Any) -> Callable[..., Any]:
    unjitted = functools.partial(fn, *static)
    try:
      hash(static)
    except TypeError:
      return unjitted
    return lambda *args: (kept.jitted(*static) if is_concrete(args) else unjitted)(*args)
  return lookup


def _jit_partial(fn: Callable[..., Any], *static: Any) -> Callable[..., Any]:
  return jax.jit(functools.partial(fn, *static))


class _JitsKept:
  """:func:`jit_per_static`'s programs for ``fn``: ``jitted(*static)``, the last
  :data:`JITS_KEPT` kept.

  Pickled as ``fn`` alone, and a copy compiles its own: cloudpickle (Ray, joblib) pickles a
  transformation's closures by value, down to this cache, and an ``lru_cache`` of a local
  function raised "Can't pickle local object" (``gtx.lbfgs()``, whose line search is
  looked up here; optax's pickles).
  """

  __slots__ = ("fn", "jitted")

  def __init__(self, fn: Callable[..., Any]):
    self.fn = fn
    self.jitted = functools.lru_cache(maxsize=JITS_KEPT)(functools.partial(_jit_partial, fn))

  def __reduce__(self) -> tuple[Any, ...]:
    return (_JitsKept, (self.fn,))


def check_value(stage: str, name: str, value: Any, allowed: Range, *,
                scalar: bool = False, held: Any = None) -> None:
  """Raises :class:`HyperparameterError` if a concrete ``value`` is outside ``allowed``,
  or is a string, a bool, None (which numpy would read as numbers) or complex; with ``scalar``,
  also if it is an array and the range is not a ``vector``. An infinite value
  refused for being infinite is named so ("must be a finite number in [0, inf)").

  A float value is also checked as it will be held, in ``held`` (default: the dtype a
  state holds it in), where ``1e40`` is inf in float32.

  Traced values (a hyperparameter swept under ``vmap``) cannot be checked and
  pass through, but for their shape and a complex dtype.
  """
  if scalar and not allowed.vector and np.ndim(value) != 0:
    # An array would broadcast against every leaf: a per-column rate on a matrix, a
    # (1,) update of a scalar leaf, a broadcasting error at the first step.
    raise HyperparameterError.about(
        stage, name, value, f"must be a scalar, got shape {np.shape(value)}. Values per "
        "parameter: gtx.partition (one stage per group of leaves); one per member of a "
        "vmapped ensemble: vmap over the optimizer's construction or init")
  check_numbers(stage, name, value, allowed)
  if not is_concrete(value):
    return
  try:
    ok = allowed.contains(value)
  except (TypeError, ValueError):
    raise HyperparameterError.about(
        stage, name, value, f"must be a number in {allowed}, got {value!r}") from None
  if not ok:
    scalar_value = np.ndim(value) == 0
    if allowed._refuses_only_infinity(value):
      # Name the reason: "must be in [0, inf), got inf" is right, and easy to misread.
      what = "a finite number" if scalar_value else "finite numbers"
      shown = value if scalar_value else "an array holding inf"
      raise HyperparameterError.about(stage, name, value,
                                      f"must be {what} in {allowed}, got {shown}")
    shown = value if scalar_value else f"an array with values outside {allowed}"
    raise HyperparameterError.about(stage, name, value, f"must be in {allowed}, got {shown}")
  if not allowed.integer:  # an int32 range already holds its bounds
    _check_held(stage, name, value, allowed, held)


def kind(x: Any) -> str | None:
  """numpy's dtype kind of ``x`` (``"f"``, ``"U"``, ...); None for what has no dtype."""
  return getattr(getattr(x, "dtype", None), "kind", None)


# numpy's dtype kinds of arrays that hold no numbers, by what they hold.
NOT_NUMBER_KINDS = {"U": "strings", "S": "bytes", "O": "Python objects"}


def check_numbers(stage: str, name: str, value: Any, allowed: Range) -> None:
  """Raises :class:`HyperparameterError` unless ``value`` is real numbers: if it is
  complex (also when traced), or, concrete, a string, a bool or None (which numpy would
  read as numbers), alone or as an entry of a tuple or an array. ``allowed`` is named in
  the message. :func:`check_value`'s first check, also for a value whose range is
  checked otherwise (a projection's bounds, which must hold ``lower <= upper``).
  """
  if any(isinstance(leaf, complex) or kind(leaf) == "c"
         for leaf in jax.tree.leaves(value)):
    # numpy casts a complex array to the real dtype it is held in with only a warning,
    # dropping the imaginary part. Its dtype is known when traced, so this holds under jit.
    raise HyperparameterError.about(
        stage, name, value, f"must be a real number in {allowed}, got {value!r}")
  if not is_concrete(value):
    return
  slips = _not_numbers(value)
  if slips:
    # numpy would read "1e-3" as a number, True as 1 and None as NaN: all slips (a value
    # left a string by a YAML or command-line parser; a flag in a number's place), also
    # as an entry of a tuple (betas=('0.9', 0.999)).
    convert = "int" if allowed.integer else "float"
    hint = (f" (convert it with {convert}())" if any(
        isinstance(s, (str, bytes)) or kind(s) in ("U", "S")
        for s in slips) else "")
    what = "numbers" if allowed.vector else "a number"
    raise HyperparameterError.about(stage, name, value,
                                    f"must be {what} in {allowed}, got {value!r}{hint}")


def check_argument(function: str, name: str, value: Any, allowed: Range, *,
                   scalar: bool = False) -> None:
  """:func:`check_value` for an argument of a function that may run at every step, eagerly
  (a loss, :func:`gradtx.incremental_update`), where a check must cost nothing on the
  device: a Python or numpy number (or a string, None, ...) is checked in full; an array
  (jax or numpy) is never read back to the host, so only what its type says is checked:
  its shape with ``scalar``, real numbers (not complex, bool or strings) and, for an
  integer range, an integer dtype.

  Without it, ``incremental_update(new, old, '0.5')`` failed in jax ("Value '0.5' with
  dtype <U3 is not a valid JAX array type") and ``step_size=1.5`` extrapolated without a
  word.
  """
  if scalar and not allowed.vector:
    try:
      shape = np.shape(value)
    except ValueError:  # a ragged list
      shape = None
    if shape != ():
      got = f"shape {shape}" if shape is not None else repr(value)
      raise HyperparameterError.about(function, name, value, f"must be a scalar, got {got}")
  if not isinstance(value, (jax.Array, np.ndarray)):
    check_value(function, name, value, allowed)
    return
  check_numbers(function, name, value, allowed)
  if allowed.integer and not jnp.issubdtype(value.dtype, jnp.integer):
    raise HyperparameterError.about(
        function, name, value, f"must be in {allowed}, got an array of dtype {value.dtype}")


def _not_numbers(value: Any) -> list[Any]:
  """The entries of ``value`` (itself, or those of a tuple or list, nested) that are not
  numbers: None, strings, bools, and bool and string arrays, which numpy would read as
  numbers (``np.asarray(np.array(['0.5']), float)`` is 0.5), and any other object that is
  neither an array nor a Python int or float (``object()``, an object array), which numpy
  and jax refused with "'<=' not supported between instances of 'object' and 'float'"."""
  if isinstance(value, (tuple, list)):
    return [slip for entry in value for slip in _not_numbers(entry)]
  value_kind = kind(value)
  if (value is None or isinstance(value, (str, bytes, bool)) or value_kind == "b"
      or value_kind in NOT_NUMBER_KINDS
      or (value_kind is None and not isinstance(value, (int, float)))):
    return [value]
  return []


def _check_held(stage: str, name: str, value: Any, allowed: Range, held: Any) -> None:
  """Raises :class:`HyperparameterError` if ``value``, in ``allowed``, leaves it once held
  in the float dtype ``held`` (``None``: the one a state holds it in): ``1e40`` is inf in
  float32, ``1e-50`` is 0."""
  if held is None:
    dtype = getattr(value, "dtype", None)
    held = (jax.dtypes.canonicalize_dtype(dtype)
            if dtype is not None and jnp.issubdtype(dtype, jnp.floating) else _float_dtype())
  with np.errstate(over="ignore", under="ignore"):  # the overflow is what is checked
    as_held = np.asarray(value, np.float64).astype(held)
  if not allowed.contains(as_held):
    shown = as_held if np.ndim(value) == 0 else "values outside it"
    raise HyperparameterError.about(
        stage, name, value, f"must be in {allowed} as a {np.dtype(held).name} (the dtype it is "
        f"held in; largest {jnp.finfo(held).max:.3g}), got {value!r}, held as {shown}")


def check_integer_option(stage: str, name: str, value: Any, allowed: Range) -> None:
  """Raises :class:`HyperparameterError` unless ``value`` is one number in the integer
  range ``allowed``: for a structural option, fixed when the transformation is built
  (lbfgs's ``memory_size``, muon's ``ns_steps``), which sets a shape or the length of a
  loop and so is never an array.

  :func:`check_value` alone takes ``[3]`` (every entry is in the range; a hyperparameter
  of a vmapped ensemble may be an array), and the option's ``int()`` or comparison then
  raised a TypeError naming neither the stage nor the option.
  """
  try:
    one = np.ndim(value) == 0
  except ValueError:  # a ragged list
    one = False
  if not one:
    raise HyperparameterError.about(stage, name, value,
                                    f"must be a number in {allowed}, got {value!r}")
  check_value(stage, name, value, allowed)


def check_dtype_option(stage: str, name: str, value: Any) -> None:
  """Raises :class:`HyperparameterError` unless ``value`` is ``None`` or names a floating
  or complex dtype: for a buffer's dtype option (``mu_dtype``, ``nu_dtype``,
  ``accumulator_dtype``), checked when the transformation is built.

  An integer or bool moment rounds every step's small change away (an int32 ``mu`` stays
  0), and a misspelt name failed at ``init`` with numpy's "data type not understood",
  naming neither the stage nor the option. :class:`GradientTransformation` checks every
  option whose name ends in ``dtype``.
  """
  if value is None:
    return
  try:
    dtype = np.dtype(value)
  except TypeError:
    raise HyperparameterError.about(
        stage, name, value, "must be a dtype (jnp.float32, jnp.bfloat16, ...) or None (the "
        f"params' dtype), got {value!r}") from None
  if not jnp.issubdtype(dtype, jnp.inexact):
    raise HyperparameterError.about(
        stage, name, value, "must be a floating dtype (jnp.float32, jnp.bfloat16, ...) or None "
        f"(the params' dtype), got {dtype.name}: an integer or bool buffer rounds each "
        "step's change away")


def check_flag(stage: str, name: str, value: Any) -> bool:
  """``value`` as a Python bool; raises :class:`HyperparameterError` unless it is ``True``
  or ``False`` (a Python or numpy bool): for a structural switch (``nesterov``,
  ``centered``, ``flip_sign``), which picks the code a step runs and so is never an array.

  Python takes any object as a condition: ``sgd(0.1, momentum=0.9, nesterov='no')`` ran
  Nesterov momentum (a non-empty string is true), ``nesterov=None`` plain momentum,
  without a word. :func:`checks_flags` calls this for every argument annotated ``bool``.
  """
  if value is True or value is False or isinstance(value, np.bool_):
    return bool(value)  # np.True_ would show in repr as np.True_, or as its dtype
  hint = " (a string: convert it where it is parsed)" if isinstance(value, (str, bytes)) else ""
  raise HyperparameterError.about(stage, name, value, f"must be True or False, got {value!r}{hint}")


def check_callable(stage: str, name: str, value: Any, what: str, hint: str = "") -> None:
  """Raises a ``TypeError`` (``"{stage}: {name} must be {what}, got {value!r}{hint}"``)
  unless ``value`` is callable: for a function argument, checked when the transformation
  is built, where calling it first at ``init`` or at the first step failed with Python's
  "'float' object is not callable", naming neither the stage nor the argument."""
  if not callable(value):
    raise TypeError(f"{stage}: {name} must be {what}, got {value!r}{hint}")


def check_axis(stage: str, axis: Any, *, none: bool = True) -> None:
  """Raises ``TypeError`` unless ``axis`` is an int, a tuple of ints or (with ``none``) None.

  For a loss's or a stage's ``axis``. ``operator.index`` and jax take ``True`` as axis 1,
  so ``softmax_cross_entropy(logits, labels, True)`` summed over axis 1 without a word;
  a float or a string failed in jax ("'float' object is not iterable", "unbound axis
  name"), naming neither the function nor ``axis``. An axis the array lacks is left to
  the reduction, which names it.
  """
  if type(axis) is int or (axis is None and none):  # the usual case, in a loss's hot path
    return
  entries = axis if isinstance(axis, tuple) else (axis,)
  if axis is None or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                             for a in entries):
    raise TypeError(f"{stage}: axis must be an int or a tuple of ints, got {axis!r}")


_Args = ParamSpec("_Args")
_Made = TypeVar("_Made")


def checks_flags(factory: Callable[_Args, _Made]) -> Callable[_Args, _Made]:
  """Makes ``factory`` check each of its arguments annotated ``bool`` with
  :func:`check_flag` before it runs (a numpy bool is passed on as a Python one); keeps
  its signature, name and docstring.

  The one place every public factory's switches are checked (a test walks the public
  namespace for factories with such an argument that skip it). It costs a lookup per
  switch given, when the factory is called: nothing in a step.
  """
  parameters = list(inspect.signature(factory).parameters.values())
  flags = [(i if p.kind == p.POSITIONAL_OR_KEYWORD else None, p.name)
           for i, p in enumerate(parameters) if p.annotation in ("bool", bool)]
  if not flags:
    raise TypeError(f"checks_flags: {factory.__name__} has no argument annotated bool")
  stage = factory.__name__

  @functools.wraps(factory)
  def checked(*args: _Args.args, **kwargs: _Args.kwargs) -> _Made:
    given: list[Any] = list(args)
    for position, name in flags:
      if name in kwargs:
        kwargs[name] = check_flag(stage, name, kwargs[name])
      elif position is not None and position < len(given):
        given[position] = check_flag(stage, name, given[position])
    return factory(*given, **kwargs)  # type: ignore[arg-type]

  return checked


# The errors that may be about one argument of a factory (their ``argument``).
_ArgumentError = HyperparameterError | ArgumentTypeError


def names_its_arguments(factory: Callable[_Args, _Made]) -> Callable[_Args, _Made]:
  """Makes ``factory``, which builds its stages from its own arguments (a ready optimizer),
  name itself and its own argument in a :class:`HyperparameterError` (or an
  :class:`~gradtx.errors.ArgumentTypeError`: a string where a transformation goes) a stage
  raises about a value it passed on; keeps its signature, name and docstring.

  ``sgd(0.1, momentum=-0.9)`` was refused as ``trace: decay must be in [0, inf), got
  -0.9``, naming a function and an argument the caller never wrote; it reads
  ``sgd: momentum must be in [0, inf), got -0.9 (checked by trace, as its decay)``.
  The argument is the one given the refused value itself (``is``); where several were
  (one object passed twice), the one named as the stage's; else, or where the factory
  derived the value, the stage's error is raised as it is. A factory that passes its
  argument on to another such factory is named last, with the stage that checked it.
  It costs a ``try`` per call, and a signature bind when an error is raised.
  """
  signature = inspect.signature(factory)
  name = factory.__name__

  @functools.wraps(factory)
  def naming(*args: _Args.args, **kwargs: _Args.kwargs) -> _Made:
    try:
      return factory(*args, **kwargs)
    except (HyperparameterError, ArgumentTypeError) as error:
      renamed = _as_own_argument(error, name, signature, args, kwargs)
      if renamed is None:
        raise
      raise renamed.with_traceback(error.__traceback__) from None

  return naming


def _as_own_argument(error: _ArgumentError, factory: str, signature: inspect.Signature,
                     args: tuple[Any, ...], kwargs: dict[str, Any]) -> _ArgumentError | None:
  """``error`` about the argument of ``factory`` (called with ``args`` and ``kwargs``) that
  was given its refused value, or None where it is not about one such argument."""
  refused = error.argument
  if refused is None or refused.factory == factory or error.stage_path:
    return None
  try:
    bound = signature.bind(*args, **kwargs)
  except TypeError:  # the factory's own call failed; that is not this error
    return None
  given: dict[str, Any] = {}
  for argument, value in bound.arguments.items():
    kind = signature.parameters[argument].kind
    if kind is inspect.Parameter.VAR_KEYWORD:
      given.update(value)
    elif kind is not inspect.Parameter.VAR_POSITIONAL:
      given[argument] = value
  mine = [argument for argument, value in given.items() if value is refused.value]
  if len(mine) > 1:
    mine = [argument for argument in mine if argument == refused.name]
  if len(mine) != 1:
    return None
  moved = refused.passed_on_by(factory, mine[0])
  return type(error)(moved.message(), argument=moved)


# ----------------------------------------------------------------------------
# Hyperparameters in the state.


@dataclasses.dataclass(frozen=True)
class _Slot:
  """Static facts about one hyperparameter: its range and whether a schedule drives it."""
  allowed: Range
  scheduled: bool


def safe_increment(count: jax.Array) -> jax.Array:
  """``count + 1``, saturating at the dtype's maximum instead of wrapping."""
  limit: Any = jnp.iinfo(count.dtype).max
  if count.dtype.kind == "u" and limit > 2**31 - 1:
    # uint32's (uint64's) maximum is past what a weakly typed int may hold (OverflowError):
    # a numpy scalar of count's dtype. Not always: an eager step would transfer it.
    limit = np.array(limit, count.dtype)
  return jnp.where(count < limit, count + 1, limit).astype(count.dtype)


@serializable
@jax.tree_util.register_pytree_with_keys_class
class HParams(Mapping[str, jax.Array]):
  """The numeric hyperparameters of one stage, as arrays in its state.

  A read-only mapping ``name -> value``. Values of scheduled hyperparameters
  are the ones used at the last step; ``count`` is the stage's schedule step
  (present only when some hyperparameter is scheduled).
  """

  __slots__ = ("_values", "_slots", "count", "_has_count")

  def __init__(self, values: Mapping[str, jax.Array], slots: Mapping[str, _Slot],
               count: jax.Array | None = None, *, has_count: bool | None = None):
    self._values = dict(values)
    self._slots = dict(slots)
    self.count = count
    # Whether the count is a child is structure, fixed at init: a tree of
    # placeholders (jax.tree.map(lambda x: None, state), as orbax builds) must
    # keep the state's tree structure even where the count leaf became None.
    self._has_count = count is not None if has_count is None else has_count

  def __getitem__(self, name: str) -> jax.Array:
    return self._values[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._values)

  def __len__(self) -> int:
    return len(self._values)

  def slot(self, name: str) -> _Slot:
    return self._slots[name]

  def replace(self, **values: jax.Array) -> "HParams":
    return HParams({**self._values, **values}, self._slots, self.count,
                   has_count=self._has_count)

  def __repr__(self) -> str:
    def show(v: Any) -> str:
      try:
        return f"{float(v):.6g}" if np.ndim(v) == 0 else f"array{np.shape(v)}"
      except Exception:  # a tracer
        return repr(v)
    inner = ", ".join(f"{k}={show(v)}" for k, v in self._values.items())
    return f"HParams({inner})"

  def tree_flatten_with_keys(self):
    names = tuple(self._values)
    children = [(jax.tree_util.DictKey(n), self._values[n]) for n in names]
    if self._has_count:
      children.append((jax.tree_util.GetAttrKey("count"), self.count))
    aux = (names, tuple(self._slots[n] for n in names), self._has_count)
    return children, aux

  def tree_flatten(self):
    children, aux = self.tree_flatten_with_keys()
    return [c for _, c in children], aux

  @classmethod
  def tree_unflatten(cls, aux, children):
    names, slots, has_count = aux
    children = list(children)
    count = children.pop() if has_count else None
    return cls(dict(zip(names, children)), dict(zip(names, slots)), count, has_count=has_count)

  def __eq__(self, other: object) -> bool:
    return self is other

  __hash__ = object.__hash__


def _float_dtype() -> Any:
  # float64 when jax_enable_x64 is on, float32 otherwise.
  return jnp.result_type(float)


def placed_like(value: jax.Array, like: Any) -> jax.Array:
  """``value`` on the devices and sharding of ``like``, the state's array it replaces.

  For a value put into a state between steps (:func:`gradtx.set_hparams`,
  :func:`gradtx.tree_utils.tree_set`): a jitted step is compiled for its inputs'
  shardings, and a new array is uncommitted, on the default device. Where the old one
  was committed (replicated over a mesh, or restored by orbax) the step would otherwise
  compile again.
  """
  if (isinstance(like, jax.Array) and not isinstance(like, jax.core.Tracer)
      and not isinstance(value, jax.core.Tracer) and like.committed):
    return jax.device_put(value, like.sharding)
  return value  # a value set inside a jitted function: its output shardings place it


def held_like(value: Any, old: jax.Array | np.ndarray | np.generic) -> jax.Array:
  """``value`` as a state holds it in place of its array ``old``: a copy in ``old``'s
  dtype, broadcast to its shape, on its devices (:func:`placed_like`).

  For :func:`gradtx.set_hparams` and :func:`gradtx.tree_utils.tree_set`. A copy
  (``jnp.asarray`` would hand back an array of that dtype as it is): the state must not
  share a buffer with the caller, nor two of its entries one buffer, or donating it
  deletes the caller's array or fails. Raises ``ValueError`` (``"has shape (3,); got a
  value of shape (2,)"``) where ``value`` does not broadcast to ``old``'s shape.
  """
  new = jnp.array(value, old.dtype, copy=True)
  if new.shape != old.shape:
    try:
      new = jnp.broadcast_to(new, old.shape)
    except ValueError:
      raise ValueError(f"has shape {tuple(old.shape)}; got a value of shape "
                       f"{tuple(new.shape)}") from None
  return placed_like(new, old)


def _as_state_value(value: Any, allowed: Range) -> jax.Array:
  # Always a copy (jnp.array, not jnp.asarray, which hands back an array of the
  # dtype asked for as it is): a state holding the caller's array would share its
  # buffer with it, and with each other stage given the same array (muon's eps,
  # optimistic_adam's learning rate, schedule_free's), so donating the state
  # deleted the caller's array or failed with "donate the same buffer twice".
  if allowed.integer:
    return jnp.array(value, jnp.int32, copy=True)
  if isinstance(value, (jax.Array, np.ndarray)) and jnp.issubdtype(value.dtype, jnp.floating):
    # An array keeps the dtype its owner chose, as a strong type: a weak one
    # (jnp.asarray(1e-3)) would turn strong on a restore or a set_hparams,
    # and the step that receives it would trace again.
    # canonicalize: float64 is float32 without jax_enable_x64, as for any jax array.
    dtype = jax.dtypes.canonicalize_dtype(value.dtype)
  else:
    dtype = _float_dtype()
  # check_value let a value through that overflows here only where its range holds inf
  # (clip_by_global_norm(1e40), a cap inf switches off): held as inf, as meant.
  with np.errstate(over="ignore"):
    return jnp.array(value, dtype, copy=True)


def _check_takes_the_count(stage: str, name: str, schedule: Callable[..., Any]) -> None:
  """Raises :class:`HyperparameterError` if ``schedule`` cannot be called with the count."""
  try:
    signature = inspect.signature(schedule)
  except (TypeError, ValueError):  # a builtin without a signature: its call will tell
    return
  try:
    signature.bind(0)
  except TypeError:
    raise HyperparameterError.about(
        stage, name, schedule, "is a function, so it is a schedule, called with the step "
        f"count as schedule(count); the function given takes {signature}") from None


_OPTAX_INJECT = os.path.join("optax", "schedules", "_inject.py")


def _refuse_optax_injection(stage: str) -> None:
  """Raises if this stage is being built by ``optax.inject_hyperparams``.

  That wrapper rebuilds its inner transformation at every step with the values of
  the step and runs the rebuilt ``update`` on the state its first ``init`` made. A
  gradtx stage reads its hyperparameters from that state, so the rebuilt values
  (a schedule's among them) would be dropped without a word. Construction is the
  one moment the wrapper can be seen: it is on the call stack.
  """
  frame: types.FrameType | None = sys._getframe(2)  # pylint: disable=protected-access
  while frame is not None:
    if frame.f_code.co_filename.endswith(_OPTAX_INJECT):
      raise HyperparameterError(
          f"{stage}: built inside optax.inject_hyperparams, whose values would never "
          "be used: a gradtx stage reads its hyperparameters from its state, made once "
          "by init, so the values inject_hyperparams rebuilds it with at each step "
          "(a schedule's included) would not reach the update. Build the optimizer "
          "directly (gtx.adam(schedule) for a schedule) and read or set its values "
          "by name with gtx.hparams and gtx.set_hparams.")
    frame = frame.f_back


class HParamSpec:
  """The numeric hyperparameters a transformation was built with.

  Built once per transformation; validates every concrete value against its
  range at construction, makes the :class:`HParams` of a fresh state, and at
  each step returns the values to use (evaluating schedules).

  Args:
    stage: the primitive's name, used in error messages (``"scale_by_adam"``).
    **entries: ``name=(value, allowed_range)``; a value may be a float, a 0-d
      array, a tuple of numbers (where the range is a ``vector``), or a
      schedule (a callable of the step count).
  """

  def __init__(self, stage: str, **entries: tuple[ScalarOrSchedule | tuple[Any, ...], Range]):
    if entries:
      _refuse_optax_injection(stage)
    self.stage = stage
    self.values: dict[str, ScalarOrSchedule | tuple[Any, ...]] = {}
    self.slots: dict[str, _Slot] = {}
    for name, (value, allowed) in entries.items():
      scheduled = callable(value)
      if callable(value):
        _check_takes_the_count(stage, name, value)
      else:
        check_value(stage, name, value, allowed, scalar=True)
      self.values[name] = value
      self.slots[name] = _Slot(allowed, scheduled)
    self.scheduled = any(s.scheduled for s in self.slots.values())

  def __bool__(self) -> bool:
    return bool(self.values)

  def init(self) -> HParams:
    """The hyperparameters of a fresh state (schedules at step 0)."""
    register_with_flax()  # a state is being made: see gradtx._flax_serialization
    count = jnp.zeros((), jnp.int32) if self.scheduled else None
    values = {}
    for name, value in self.values.items():
      slot = self.slots[name]
      if slot.scheduled:  # for checkers: then value is a callable, and count an array
        schedule = cast("Callable[[jax.Array], chex.Numeric]", value)
        first = schedule(cast(jax.Array, count))
        try:  # concrete unless init is traced: a schedule's slip shows before any step
          check_value(self.stage, name, first, slot.allowed, scalar=True)
        except HyperparameterError as error:
          raise HyperparameterError(f"{error} (its schedule's value at step 0)") from None
        # A copy, as _as_state_value's: a schedule may return an array it holds.
        values[name] = jnp.array(first, jnp.int32 if slot.allowed.integer else _float_dtype(),
                                 copy=True)
      else:
        values[name] = _as_state_value(value, slot.allowed)
    return HParams(values, self.slots, count)

  def step(self, hparams: HParams, *, read: bool = True) -> tuple[HParams, HParams]:
    """Returns ``(values for this step, hyperparameters for the next state)``.

    A value held in the state is used as it is; a scheduled one is computed
    from the count and passed through :func:`read_once`, unless
    ``read=False``: for a stage that derives its per-step coefficients from
    the values and reads those once instead.
    """
    if not isinstance(hparams, HParams):
      raise HyperparameterError(
          f"{self.stage}: the state's hparams field is a {type(hparams).__name__}, "
          "not HParams; was this state made by this transformation's init?")
    if hparams.keys() != self.slots.keys():  # another stage's state, of the same shape
      raise HyperparameterError(
          f"{self.stage}: the state holds the hyperparameters {list(hparams)}, this stage "
          f"has {list(self.slots)}; was this state made by this transformation's init?")
    if not self.scheduled:
      return hparams, hparams
    # For checkers: a scheduled value is a callable, and a state with one holds a count.
    schedules = cast("dict[str, Callable[[jax.Array], chex.Numeric]]", self.values)
    count = cast(jax.Array, hparams.count)
    values = {
        # asarray, not astype: a schedule may return a Python number.
        name: (jnp.asarray(schedules[name](count), hparams[name].dtype)
               if slot.scheduled else hparams[name])
        for name, slot in self.slots.items()
    }
    scheduled = {name: values[name] for name, slot in self.slots.items() if slot.scheduled}
    now = HParams({**values, **(read_once(scheduled) if read else scheduled)},
                  self.slots, hparams.count)
    return now, HParams(values, self.slots, safe_increment(count))


def read_once(values: dict[str, Any]) -> dict[str, Any]:
  """Scalars the step derives, copied into one small buffer per dtype.

  For scalars computed from the hyperparameters and the count: a schedule's
  value (:meth:`HParamSpec.step`), Adam's bias-corrected coefficients, a
  ``per_step`` of :func:`stateless`. Without the copy, XLA either repeats the
  arithmetic in every leaf's kernel (cheap operations such as ``1 - b``) or
  gives each expensive one (a power, a division) a small kernel of its own;
  with it, the arithmetic runs once, in one kernel, and every leaf's kernel
  reads the results.

  A hyperparameter used as it is held in the state is not copied: a leaf's
  kernel reads it straight from the step's arguments, which XLA:CPU compiles
  with fewer instructions than reading it from a buffer, and without the
  buffer's kernel. Counted by callgrind over one XLA compile of sgd with
  momentum on 1024-float leaves: 4.6 M instructions per leaf reading the
  arguments, 4.9 M when each stage read its own buffer, 4.2 M for optax's
  constants; and those two buffers' kernels (reductions) cost 125 M more
  than a step without them. (Adam's kernels read only derived scalars: see
  :func:`gradtx.transforms.moments.adam_step_scalars`.)

  The buffer passes through an optimization barrier, which XLA neither fuses
  into its readers nor removes, so the values reach every leaf's kernel as
  computed, bit for bit. (An earlier form summed the values with zeros, a
  reduction kernel that XLA:CPU compiles more slowly: Adam on one leaf of 4 M
  floats compiled its XLA part in 1.05x optax's time with it and 0.97x with
  the barrier, in a paired run of 8.)
  """
  scalars: dict[Any, list[str]] = {}
  for name, value in values.items():
    # Only traced values: a step run eagerly compiles no fused kernels.
    if (isinstance(value, jax.core.Tracer) and value.ndim == 0
        and jnp.issubdtype(value.dtype, jnp.inexact)):
      scalars.setdefault(value.dtype, []).append(name)
  if not scalars:
    return values
  out = dict(values)
  for names in scalars.values():
    held = jax.lax.optimization_barrier(jnp.stack([values[n] for n in names]))
    for i, name in enumerate(names):
      out[name] = held[i]
  return out


# ----------------------------------------------------------------------------
# The transformation object.


def _accepts_extra(update: Callable[..., Any]) -> bool:
  try:
    parameters = inspect.signature(update).parameters.values()
  except (TypeError, ValueError):
    return True
  return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


if TYPE_CHECKING:
  # Seen by type checkers only: code annotated with optax's type (flax.nnx.Optimizer's
  # tx, optax.chain's stages) takes a gradtx transformation, as it does at run time.
  # The cost: where the base is unknown (optax not installed, or mypy, for which optax
  # ships no py.typed and is Any), a transformation passes for any annotated type. A
  # false error on flax's own API seemed worse than a missed one (tests/test_typing.py).
  # Ignored here, not in pyproject's mypy overrides: those would also reach the user script
  # of tests/test_typing.py, whose own ignore of optax would then fail --strict as unused.
  from optax import GradientTransformationExtraArgs as _OptaxTransformation  # type: ignore[import-untyped]
else:
  _OptaxTransformation = object


# Whether a transformation's init or update is running: the one a user calls admits its
# input for every stage it runs (gradtx.tree.admit_params, admit_updates), once.
_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("gradtx_inside", default=False)


# The closures below name these module-level functions, never the ContextVars themselves:
# cloudpickle (Ray, joblib) pickles a closure by value with the globals it names, and a
# ContextVar cannot be pickled, where a module-level function is pickled by reference.
def _inside() -> bool:
  """Whether a transformation's ``init`` or ``update`` is running."""
  return _INSIDE.get()


@contextlib.contextmanager
def _outermost(given: Any) -> Iterator[None]:
  """Marks the outermost ``init`` or ``update`` as running, with ``given`` the tree a
  callable mask is called on."""
  from gradtx.tree import UNMASKED  # pylint: disable=import-outside-toplevel
  token, shown = _INSIDE.set(True), UNMASKED.set(given)
  try:
    yield
  finally:
    UNMASKED.reset(shown)
    _INSIDE.reset(token)


def _outermost_init(init: InitFn, name: str) -> InitFn:
  """``init``, which when called from outside any transformation gets admitted params
  (``name`` in its errors)."""
  @functools.wraps(init)
  def admitting_init(params: Params) -> State:
    if _inside():
      return init(params)
    if _holds_opt_state(params):  # else a state with moments for its step and opt_state
      raise StructureError(f"{name}: {_params_hint(params)}")
    from gradtx.tree import admit_params  # pylint: disable=import-outside-toplevel
    with _outermost(params):  # a callable mask sees the params given
      return init(admit_params(params, name))

  return admitting_init


def _outermost_update(update: Callable[..., tuple[Updates, State]],
                      name: str) -> Callable[..., tuple[Updates, State]]:
  """``update``, which when called from outside any transformation gets admitted input
  (``name`` in its errors), and gives ``None`` back where the updates had no gradient."""
  @functools.wraps(update)
  def admitting_update(updates: Updates, state: State, *args: Any,
                       **kwargs: Any) -> tuple[Updates, State]:
    if _inside():
      return update(updates, state, *args, **kwargs)
    from gradtx.tree import admit_updates, thaw  # pylint: disable=import-outside-toplevel
    params = args[0] if args else kwargs.get("params")
    given = updates if params is None else params  # what a callable mask is called on
    updates, params, masked = admit_updates(updates, params, name)
    if args:  # passed on as given: optax's form of update may take params positionally only
      args = (params, *args[1:])
    elif "params" in kwargs:
      kwargs["params"] = params
    with _outermost(given):
      updates, state = update(updates, state, *args, **kwargs)
    return (thaw(updates) if masked else updates), state

  return admitting_update


class GradientTransformation(_OptaxTransformation):
  """A pair of pure functions with optax's signatures, plus what it was built from.

  Attributes:
    init: ``init(params) -> state``.
    update: ``update(updates, state, params=None, **extra) -> (updates, state)``.
    name: the default stage name in a chain (``"scale_by_adam"``).
    spec: the numeric hyperparameters (:class:`HParamSpec`), shown by ``repr``
      and held in the state.
    options: structural options (dtypes, flags, masks, inner
      transformations), shown by ``repr``.
    factor: for a stage that multiplies every update by one scalar
      (:func:`gradtx.scale_by_learning_rate`, :func:`gradtx.scale`),
      ``factor(state) -> (scalar, new_state)``: this step's scalar and the
      state its ``update`` would return; otherwise ``None``.
    takes_factor: whether ``update`` accepts ``factor=s`` and returns its
      updates multiplied by ``s``, folded into scalars it computes anyway
      (:func:`gradtx.scale_by_adam`). A chain passes the next stage's
      ``factor`` to such a stage, so that no leaf's kernel multiplies twice.

  The ``init`` and ``update`` a user calls (not those a chain or wrapper calls
  inside its own) prepare their input once for every stage inside: Python
  numbers become arrays, integer updates are refused, and integer buffers,
  keys and leaves without a gradient are masked, their updates ``None``
  (:func:`gradtx.tree.admit_params`, :func:`gradtx.tree.admit_updates`).
  """

  __slots__ = ("init", "update", "name", "spec", "options", "factor", "takes_factor")
  init: InitFn
  update: UpdateFn

  def __new__(cls, *args: Any, **kwargs: Any) -> GradientTransformation:
    # For type checkers, which read optax's NamedTuple __new__ otherwise; __init__ builds.
    del args, kwargs
    return object.__new__(cls)

  def __init__(self, init: InitFn, update: UpdateFn | PlainUpdateFn, *,
               name: str = "transformation",
               spec: HParamSpec | None = None, options: Mapping[str, Any] | None = None,
               factor: Callable[[State], tuple[jax.Array, State]] | None = None,
               takes_factor: bool = False):
    self.init = _outermost_init(init, name)
    # An update without **extra (optax's form) is called without extra arguments unless
    # a caller passes them; with_extra_args_support adapts it.
    self.update = _outermost_update(update, name)  # type: ignore[assignment]
    self.name = name
    self.spec = spec if spec is not None else HParamSpec(name)
    self.options = dict(options or {})
    for key, value in self.options.items():
      if key.endswith("dtype"):
        check_dtype_option(name, key, value)
    self.factor = factor
    self.takes_factor = takes_factor

  # `init, update = tx`, `tx[0]`, `len(tx)`, as with optax's NamedTuple, which type
  # checkers take this class for.
  def __iter__(self):
    return iter((self.init, self.update))

  def __getitem__(self, index: int) -> Callable[..., Any]:
    return (self.init, self.update)[index]

  def __len__(self) -> int:
    return 2

  # Equal where init and update are the same functions, as optax's NamedTuples compare:
  # a copy (copy.copy; copy.deepcopy, which copies no function, as of a flax TrainState
  # holding it as static data) is the same transformation, and a jitted step taking it
  # as a static argument is not traced again. Two built alike have their own functions.
  def __eq__(self, other: object) -> bool:
    if not isinstance(other, GradientTransformation):
      return NotImplemented
    return self.init is other.init and self.update is other.update

  def __hash__(self) -> int:
    return hash((self.init, self.update))

  def format(self, indent: int = 0) -> str:
    """This transformation as text, nested ones indented by ``indent`` levels."""
    return format_transformation(self, indent)

  def __repr__(self) -> str:
    return self.format()


def as_transformation(tx: Any, where: str = "chain",
                      argument: str | None = None) -> GradientTransformation:
  """Wraps anything with optax's ``init``/``update`` (an optax transformation) as a stage.

  A stage's ``update`` is given the extra arguments its chain or wrapper receives; one
  written without ``**extra`` (optax's form) is called without them, as optax's
  ``chain`` and wrappers do (:func:`with_extra_args_support`).

  Anything else raises :class:`~gradtx.errors.ArgumentTypeError` (a ``TypeError``)
  naming ``where``, the function checking, and ``argument``, the argument of it that
  ``tx`` was given, where it has one: a factory that passed its own argument on
  (:func:`names_its_arguments`) then names itself and that argument.
  """
  if isinstance(tx, GradientTransformation):
    return with_extra_args_support(tx)
  if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
    kind = "a gradient transformation (an object with init and update)"
    got = f"got {type(tx).__name__}: {tx!r}"
    if argument is None:  # a positional stage of a chain, a group of a partition
      raise ArgumentTypeError(f"{where}: expected {kind}, {got}")
    raise ArgumentTypeError.about(where, argument, tx, f"must be {kind}, {got}")
  passes_extra = _accepts_extra(tx.update)

  def update(updates, state, params=None, **extra):
    if passes_extra:
      return tx.update(updates, state, params, **extra)
    return tx.update(updates, state, params)

  return GradientTransformation(tx.init, update, name=_built_by(tx)[1].lower(),
                                options={"wrapped": tx})


def _built_by(tx: Any) -> tuple[str, str]:
  """(package, factory) of a foreign transformation: ``("optax", "clip")`` for optax.clip(1.0).

  optax's transformations are NamedTuples of two closures, alike but for the function
  that made them, which the update's qualified name gives (``clip.<locals>.update_fn``,
  ``MultiSteps.update``). Without one (a lambda, a module-level function), the type's.
  """
  update = getattr(tx, "update", None)
  qualname = getattr(update, "__qualname__", "")
  factory = qualname.split(".<locals>", 1)[0] if ".<locals>" in qualname else (
      qualname.rpartition(".")[0])
  if not factory.isidentifier():
    factory = type(tx).__name__
  package = (getattr(update, "__module__", None) or type(tx).__module__).partition(".")[0]
  return package, factory


# The most leaves of a tree (a mask, labels) that repr shows; a bigger one shows its size.
SHOWN_LEAVES = 16


def format_value(value: Any) -> str:
  """A hyperparameter or option as ``repr`` shows it: ``0.001``, ``bfloat16``, a function's name,
  ``<dict of 600 leaves>`` for a tree of more than :data:`SHOWN_LEAVES` leaves."""
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (jax.Array, np.ndarray)):
    return f"{float(value):g}" if np.ndim(value) == 0 else f"array{np.shape(value)}"
  if isinstance(value, (Mapping, list, tuple)):
    # A model's mask or labels: printed whole, 600 leaves made 11 kB, the stages lost in it.
    size = len(jax.tree.leaves(value))
    if size > SHOWN_LEAVES:
      return f"<{type(value).__name__} of {size} leaves>"
  try:
    if not isinstance(value, (bool, int, str)) and value is not None:
      return np.dtype(value).name  # a dtype, such as jnp.bfloat16
  except (TypeError, ValueError):  # np.dtype({...}) raises ValueError: a mask, not a dtype
    pass
  if callable(getattr(value, "init", None)) and callable(getattr(value, "update", None)):
    return ".".join(_built_by(value))  # a foreign transformation: optax.clip, not addresses
  if callable(value) and not hasattr(value, "init") and "<" in repr(value):
    return getattr(value, "__qualname__", getattr(value, "__name__", repr(value)))
  return repr(value)


def format_transformation(tx: GradientTransformation, indent: int = 0) -> str:
  """``name(hparam=value, ..., option=value)``, nested transformations indented."""
  parts = [f"{k}={format_value(v)}" for k, v in tx.spec.values.items()]
  nested = []
  for key, value in tx.options.items():
    if isinstance(value, GradientTransformation):
      nested.append((key, value))
    else:
      parts.append(f"{key}={format_value(value)}")
  if not nested:
    return f"{tx.name}({', '.join(parts)})"
  pad = "  " * (indent + 1)
  lines = [f"{pad}{p}," for p in parts]
  lines += [f"{pad}{k}={v.format(indent + 1)}," for k, v in nested]
  return f"{tx.name}(\n" + "\n".join(lines) + "\n" + "  " * indent + ")"


# ----------------------------------------------------------------------------
# The smallest transformations and applying updates.


class EmptyState(NamedTuple):
  """The state of a stage with nothing to keep but its hyperparameters.

  ``EmptyState()``, with no argument as ``optax.EmptyState()``, holds no
  hyperparameters: what a hand-written stage's ``init`` returns (the same
  state as :func:`init_empty_state`'s).
  """
  # A shared default is safe: an HParams is never changed in place (replace makes a new one).
  hparams: HParams = HParams({}, {})


def _function_name(f: Callable[..., Any], default: str) -> str:
  """``f``'s name as a stage's, or ``default`` where a chain cannot use it (``<lambda>``)."""
  name = getattr(f, "__name__", "")
  return name if isinstance(name, str) and name.isidentifier() else default


def stateless(f: Callable[..., Updates], *, name: str | None = None,
              per_step: Callable[[dict[str, jax.Array]], dict[str, jax.Array]] | None = None,
              **hyperparams: tuple[ScalarOrSchedule, Range]) -> GradientTransformation:
  """A transformation without moments: ``updates <- f(updates, params, **hparams)``.

  Args:
    f: ``f(updates, params, **values)`` returning the new updates; ``values``
      are this step's hyperparameters (arrays).
    name: the default stage name; ``f.__name__`` if not given (``"stateless"``
      for a lambda).
    per_step: maps this step's hyperparameters to the scalars ``f`` takes
      instead (such as :math:`-\\eta` for :math:`\\eta`); computed once per
      step and passed through :func:`read_once`, so no leaf's kernel repeats
      the arithmetic.
    **hyperparams: ``name=(value, allowed_range)`` for each numeric
      hyperparameter, held in the state and readable by :func:`hparams`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> def flip(updates, params):
    ...   return -updates
    >>> tx = gtx.stateless(flip)
    >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
    Array([-1., -1.], dtype=float32)
  """
  from gradtx.tree import check_structure  # pylint: disable=import-outside-toplevel
  check_callable("stateless", "f", f, "a function f(updates, params, **hparams)",
                 "; to multiply the updates by a number use gtx.scale")
  name = name or _function_name(f, "stateless")
  spec = HParamSpec(name, **hyperparams)

  def init(params):
    del params
    return EmptyState(spec.init())

  def update(updates, state, params=None, **extra):
    del extra
    check_state(name, state, EmptyState)
    if params is not None:  # a rule of the params must see the same tree as the updates
      check_structure(updates, params, "updates", "params", stage=name)
    now, hparams = spec.step(state.hparams, read=per_step is None)
    if per_step is not None:
      now = read_once(per_step(dict(now)))
    return f(updates, params, **now), EmptyState(hparams)

  return GradientTransformation(init, update, name=name, spec=spec)


def stateless_with_tree_map(f: Callable[[jax.Array, jax.Array | None], jax.Array], *,
                            name: str | None = None) -> GradientTransformation:
  """A transformation without state that maps ``f(g, p)`` over the leaves.

  .. math:: u_i \\leftarrow f(g_i, p_i) \\quad \\text{for each leaf } i

  ``p`` is ``None`` when ``update`` is called without ``params``. optax's
  ``stateless_with_tree_map``; for a rule that needs the whole tree, or
  numeric hyperparameters held in the state, use :func:`stateless`.

  Args:
    f: ``f(update_leaf, param_leaf_or_None) -> new_update_leaf``.
    name: the default stage name; ``f.__name__`` if not given
      (``"stateless_with_tree_map"`` for a lambda).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.stateless_with_tree_map(lambda g, p: g * p)
    >>> tx.update(jnp.ones(2), tx.init(None), jnp.array([2.0, 3.0]))[0]
    Array([2., 3.], dtype=float32)
  """
  check_callable("stateless_with_tree_map", "f", f,
                 "a function f(update_leaf, param_leaf_or_None)")
  def map_leaves(updates, params):  # stateless has checked that the trees match
    if params is None:
      return jax.tree.map(lambda g: f(g, None), updates)
    return jax.tree.map(f, updates, params)

  return stateless(map_leaves, name=name or _function_name(f, "stateless_with_tree_map"))


def identity() -> GradientTransformation:
  """Returns the updates unchanged: :math:`u \\leftarrow g`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.identity()
    >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
    Array([1., 1.], dtype=float32)
  """
  return stateless(lambda updates, params: updates, name="identity")


def apply_updates(params: Params, updates: Updates) -> Params:
  """``params + updates`` leaf by leaf, each result in its parameter's dtype.

  Where ``updates`` has no step (``None``, or a ``float0`` cotangent: a
  chain's update for an integer buffer or a key), the parameter stays as it
  is, as in optax and equinox. ``updates`` must otherwise match ``params``
  leaf for leaf (:class:`~gradtx.errors.StructureError` names the key path),
  and a step that the parameter's dtype cannot hold is refused: a
  floating-point step of an integer or bool parameter, or a complex step of
  a real one (which would drop its imaginary part).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.apply_updates({"w": jnp.ones(2, jnp.bfloat16)}, {"w": jnp.full(2, 0.5)})
    {'w': Array([1.5, 1.5], dtype=bfloat16)}
  """
  from gradtx.numerics import as_dtype, compute_dtype
  from gradtx.tree import check_structure, keystr, no_gradient

  def refusal(u: Any, p: jax.Array) -> str | None:
    """Why ``p + u`` cannot be stored in ``p``'s place, or None."""
    u_shape, u_dtype = (u.shape, u.dtype) if hasattr(u, "dtype") else (
        jnp.shape(u), jnp.result_type(u))  # a Python number
    if u_shape != p.shape:  # would broadcast
      return (f"apply_updates: updates and params differ in shape at key path {{}}: "
              f"{u_shape} in updates, {p.shape} in params")
    u_kind, p_kind = u_dtype.kind, p.dtype.kind
    if (p_kind in "iub" and u_kind not in "iub") or (u_kind == "c" and p_kind != "c"):
      return (f"apply_updates: the update at key path {{}} is {u_dtype} and the parameter is "
              f"{p.dtype}, which cannot hold it (a float step of an integer is truncated, a "
              "complex step of a real number loses its imaginary part)")
    return None

  def add(u, p):
    if no_gradient(u):
      return p
    p = p if isinstance(p, jax.Array) else jnp.asarray(p)  # for its dtype; as_dtype takes u as is
    if refusal(u, p) is not None:
      raise _Refused
    # Add in the wider of the two types, then return to the parameter's dtype.
    wide = compute_dtype(p, u)
    return as_dtype(as_dtype(p, wide) + as_dtype(u, wide), p.dtype)

  def explain(path, u, p):  # on the way to an error only: key paths cost at every leaf
    why = None if no_gradient(u) else refusal(u, jnp.asarray(p))
    if why is not None:
      raise StructureError(why.format(keystr(path)))

  try:  # updates' structure is a prefix of params': a step of None leaves a subtree as it is
    return jax.tree.map(add, updates, params, is_leaf=no_gradient)
  except ValueError:
    check_structure(params, updates, "params", "updates", stage="apply_updates")  # the key path
    raise
  except _Refused:
    jax.tree_util.tree_map_with_path(explain, updates, params, is_leaf=no_gradient)
    raise


class _Refused(Exception):
  """apply_updates found a leaf it refuses; it walks again, with key paths, to name it."""


# optax's names for the protocol's parts. Every gradtx update takes ``**extra``, so
# optax's split between transformations with and without extra arguments is one class
# here; the two update types stay apart for annotations of hand-written updates.
TransformInitFn = InitFn
"""``init(params) -> state`` (optax's ``TransformInitFn``)."""
TransformUpdateFn = PlainUpdateFn
"""``update(updates, state, params=None) -> (updates, state)`` (optax's name)."""
TransformUpdateExtraArgsFn = UpdateFn
"""``update(updates, state, params=None, **extra) -> (updates, state)``: every gradtx
``update`` takes extra arguments (optax's name)."""
GradientTransformationExtraArgs = GradientTransformation
"""optax's name for a transformation whose ``update`` takes extra arguments (all do here)."""


def with_extra_args_support(tx: Any) -> GradientTransformation:
  """A transformation whose ``update`` accepts extra keyword arguments.

  optax's adapter for transformations written without ``**extra``. A gradtx
  transformation already takes them and is returned as it is; anything else
  with optax's ``init``/``update`` is wrapped so that extra arguments are
  passed on when its ``update`` accepts them and dropped otherwise.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> def update(updates, state, params=None):
    ...   return updates, state
    >>> tx = gtx.with_extra_args_support(gtx.GradientTransformation(gtx.init_empty_state, update))
    >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), loss=jnp.float32(1.0))[0]
    Array([1., 1.], dtype=float32)
  """
  if isinstance(tx, GradientTransformation):
    if _accepts_extra(tx.update):
      return tx
    inner = tx.update
    return GradientTransformation(
        tx.init, lambda updates, state, params=None, **extra: inner(updates, state, params),
        name=tx.name, spec=tx.spec, options=tx.options)
  return as_transformation(tx, "with_extra_args_support", "tx")


def init_empty_state(params: Params) -> EmptyState:
  """The state of a stage with no state and no hyperparameters (optax's ``init_empty_state``).

  For a hand-written stage: ``GradientTransformation(init_empty_state, update)``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.init_empty_state(jnp.zeros(2))
    EmptyState(hparams=HParams())
  """
  del params
  return EmptyState(HParamSpec("init_empty_state").init())


RESTORED_WITHOUT_TARGET = ("a checkpoint restored without a target gives plain containers: "
                           "restore into the structure of tx.init(params)")
OPTAX_STATE = ("optax's states are not gradtx's, which keep each stage's state under its "
               "name (state['adam'].mu) with its hyperparameters: make the state with this "
               "transformation's init, tx.init(params)")


def _from_optax(x: Any) -> bool:
  return type(x).__module__.partition(".")[0] == "optax"


def _holds_opt_state(x: Any) -> bool:
  """Whether ``x`` holds an optimizer's state as ``opt_state``: flax's ``TrainState``,
  ``flax.nnx.Optimizer`` (known by the attribute: gradtx does not import flax)."""
  return hasattr(x, "opt_state")


def _params_hint(params: Any) -> str:
  """What to do with an object that holds an optimizer's state, given to ``init`` as the
  params (:func:`_holds_opt_state`)."""
  kind = type(params).__name__
  its = " (its .params)" if hasattr(params, "params") else ""
  return (f"init was given a {kind}, which holds the optimizer's state: pass the "
          f"parameters{its}, not the {kind}")


def foreign_state_hint(state: Any) -> str | None:
  """What to do with a state that no gradtx init made, or ``None`` if it is not one: an
  optax state (one of optax's stage states, or an optax chain's tuple of them, which no
  restored checkpoint holds), an object that holds the state as ``opt_state`` (flax's
  ``TrainState``, often named ``state``; ``flax.nnx.Optimizer``), or a plain dict, list or
  tuple: a checkpoint restored without a target."""
  if _from_optax(state) or type(state) is tuple and any(_from_optax(s) for s in state):
    return OPTAX_STATE
  if _holds_opt_state(state):
    kind = type(state).__name__
    return f"the {kind} given holds the optimizer's state: pass its .opt_state, not the {kind}"
  return RESTORED_WITHOUT_TARGET if type(state) in (dict, list, tuple) else None


def check_state(stage: str, state: Any, kind: type) -> None:
  """Raises :class:`~gradtx.errors.StructureError` unless ``state`` is a ``kind``.

  A stateful stage calls it first in ``update``, so that another stage's state
  (or one restored without its types) is named, where reading its fields would
  raise an ``AttributeError``, or, for a state of the same fields, run wrong.
  """
  if isinstance(state, kind):
    return
  hint = "; " + (foreign_state_hint(state) or
                "pass the state this transformation's init made (to carry a state into an "
                "edited chain, use gradtx.carry_state)")
  got, wanted = type(state).__name__, kind.__name__
  if got == wanted:  # another library's class of the same name (optax's ApplyIfFiniteState)
    got, wanted = (f"{t.__module__}.{t.__qualname__}" for t in (type(state), kind))

  def a(name: str) -> str:
    return ("an " if name[0] in "AEIOUaeiou" else "a ") + name

  raise StructureError(f"{stage}: the state is {a(got)}, where this stage's init makes "
                       f"{a(wanted)}{hint}")


def require_params(stage: str, params: Params | None) -> Params:
  """Returns ``params``, or raises if a stage that needs them did not get them."""
  if params is None:
    raise MissingArgumentError(
        f"{stage} needs the parameters: call update(grads, state, params)")
  return params


def require_params_like(stage: str, updates: Updates, params: Params | None, state: Any,
                        field: str) -> Params:
  """:func:`require_params`, and a check that ``updates`` and ``params`` have the
  structure of ``state.<field>``, a tree the stage keeps like the params (the
  error names it)."""
  from gradtx.tree import check_structure  # pylint: disable=import-outside-toplevel
  params = require_params(stage, params)
  like = getattr(state, field)
  check_structure(like, updates, f"state.{field}", "updates", stage=stage)
  check_structure(like, params, f"state.{field}", "params", stage=stage)
  return params


def scalar_loss(value: Any, stage: str, what: str) -> jax.Array:
  """A loss given to ``update`` (``value=``, or a ``value_fn``'s result) as a scalar array:
  one of shape ``(1,)`` is taken as a scalar (optax's line searches and Polyak step allow
  it). Any other shape raises, naming ``stage`` and what gave it (``what``: ``"value"``,
  or ``"value_fn's result"``), where the line searches' reshape raised numpy's "cannot
  reshape array of shape (2,) into shape ()" and the Polyak step broadcast it against
  the leaves (jax's "incompatible shapes", or a step of another shape). A tuple (a loss
  with auxiliary outputs) raises so, where jnp.size raised jax's TracerArrayConversionError."""
  if isinstance(value, (tuple, list, dict)):
    raise StructureError(f"{stage}: {what} must be a scalar loss, got a {type(value).__name__} "
                         f"of {len(value)} (a loss with auxiliary outputs? return the loss alone)")
  if jnp.size(value) != 1:
    raise StructureError(f"{stage}: {what} must be a scalar loss (or of shape (1,)), got "
                         f"shape {jnp.shape(value)}")
  value = jnp.asarray(value)
  return value if value.ndim == 0 else jnp.reshape(value, ())  # no reshape op for a scalar


__all__ = ["ANY", "EmptyState", "GradientTransformation", "HParamSpec", "HParams",
           "NONNEGATIVE", "NONNEGATIVE_INT", "NONNEGATIVE_OR_INF", "POSITIVE", "POSITIVE_INT",
           "POSITIVE_OR_INF", "Range",
           "ScalarOrSchedule", "Schedule", "UNIT", "UNIT_HALF_OPEN", "apply_updates", "identity",
           "init_empty_state", "stateless", "stateless_with_tree_map", "with_extra_args_support"]
