"""Shared per-array numerics: moment updates, bias correction, counters.

Every primitive calls these instead of writing them again. They take one
array at a time, so the same code serves a tree of leaves and a packed buffer.
Hyperparameters arrive as arrays held in the state (float32, or float64 under
``jax_enable_x64``); each function casts them to the dtype it computes in, so a
float32 model computes in float32 exactly as with Python-float constants.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, TypeVar

import jax
import jax.numpy as jnp

from gradtx.core import is_concrete, one_kernel_when_eager, safe_increment

__all__ = ["abs_sq", "adam_denominator", "as_array", "as_dtype", "as_float", "at_least_float32",
           "bias_correction", "clip_modulus", "complex_dtype", "compute_dtype", "ema_moment",
           "floor_eps_root", "over_norm", "real_dtype", "safe_cbrt", "safe_divide",
           "safe_increment", "safe_rsqrt", "safe_sqrt", "scaling_dtype", "shared", "shared_scalars", "state_dtype",
           "stored", "wide_abs_sq", "widened", "zero_count"]


# Per-step scalars shared by all leaves. A per-array rule computes coefficients
# such as 1 - beta or 1 - beta^t from the same hyperparameter and count arrays at
# every leaf; XLA merges the copies, but tracing 2000 copies is what makes a
# many-leaf step slow to compile. While `shared_scalars()` is active (the tree
# mappers open it), each such coefficient is traced once per step and reused.
_local = threading.local()
_T = TypeVar("_T")


@contextlib.contextmanager
def shared_scalars() -> Iterator[None]:
  """Within this block, :func:`shared` computes each keyed scalar once."""
  outer = getattr(_local, "cache", None)
  _local.cache = {}
  try:
    yield
  finally:
    _local.cache = outer


def shared(name: str, inputs: tuple[Any, ...], compute: Callable[[], _T]) -> _T:
  """``compute()``, reused for the same ``name`` and input objects inside :func:`shared_scalars`."""
  cache = getattr(_local, "cache", None)
  if cache is None:
    return compute()
  key = (name, *(id(x) for x in inputs))
  if key not in cache:
    cache[key] = (compute(), inputs)  # holding the inputs keeps their ids unique
  return cache[key][0]


def compute_dtype(*arrays: jax.typing.ArrayLike) -> jnp.dtype:
  """The dtype to compute in: the widest of the arrays' dtypes.

  Decided by JAX's standard promotion even when the user runs with strict
  promotion: mixing a bfloat16 moment with float32 gradients is gradtx's
  deliberate choice, made explicit by the casts that follow.
  """
  return _widest(_dtypes(arrays))


def _dtypes(arrays: tuple[jax.typing.ArrayLike, ...]) -> set[jnp.dtype]:
  return {a.dtype if isinstance(a, jax.Array) else jnp.asarray(a).dtype for a in arrays}


def _widest(dtypes: set[jnp.dtype]) -> jnp.dtype:
  if len(dtypes) == 1:  # the common case, kept cheap: this runs per leaf at trace time
    return dtypes.pop()
  with jax.numpy_dtype_promotion("standard"):
    return jnp.result_type(*dtypes)


_FLOAT32 = jnp.dtype(jnp.float32)


def at_least_float32(*arrays: jax.Array) -> jnp.dtype:
  """:func:`compute_dtype` of the arrays and float32: float32 for bfloat16, float16 and
  float32 arrays, the arrays' own for float64 or complex ones. For what half precision
  cannot hold or has no kernel for: per-step scalars, random draws, an SVD."""
  # float32 joins as a dtype, not as an array: making jnp.float32(0) was an operation
  # dispatched at every call, at every leaf of an eager step.
  return _widest(_dtypes(arrays) | {_FLOAT32})


_FLOAT16 = jnp.dtype(jnp.float16)


def scaling_dtype(dtype: Any) -> jnp.dtype:
  """The dtype to multiply a leaf of ``dtype`` by a small per-step scalar in (a learning
  rate, or a step's coefficient with one folded in): float32 for float16, ``dtype``
  otherwise; the product is rounded to the leaf's dtype once.

  float16 is normal only from 6.1e-5, where learning rates live: cast to it, 1e-6 is
  1.013e-6, 1e-7 is 1.19e-7 and 1e-8 is 0, though their products with the leaf may be
  normal numbers. bfloat16 has float32's exponents: a scalar cast to it loses digits
  only, as optax's does, and its programs stay as they are (in float32, Adam's step made
  XLA:CPU copy the 16 donated moment buffers of a 1.3M-parameter MLP).
  """
  dtype = jnp.dtype(dtype)
  return _FLOAT32 if dtype == _FLOAT16 else dtype


def as_array(x: jax.typing.ArrayLike) -> jax.Array:
  """``jnp.asarray(x)``, and ``x`` itself when it is an array already: then
  ``jnp.asarray`` is a no-op that costs an eager step about what an operation does."""
  return x if isinstance(x, jax.Array) else jnp.asarray(x)


def as_dtype(x: jax.typing.ArrayLike, dtype: jnp.dtype) -> jax.Array:
  """``x`` as an array of ``dtype`` (a no-op when it already is)."""
  if isinstance(x, jax.Array) and x.dtype == dtype:
    return x
  return jnp.asarray(x).astype(dtype)


def as_float(x: Any) -> jax.Array:
  """``x`` as an array, itself when its dtype is floating or complex; an integer or bool
  ``x`` as the default float dtype (float32, float64 under ``jax_enable_x64``), the dtype JAX's
  promotion gives it in ``x / 2`` and optax's results on integer input. For math that
  is defined on real numbers and would otherwise be done, and rounded, in the integer
  dtype (a bound or a radius cast to it)."""
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


def real_dtype(dtype: Any) -> jnp.dtype:
  """The dtype of :math:`|x|` for ``x`` of ``dtype``: float32 for complex64, float64 for
  complex128, ``dtype`` itself for a real dtype."""
  dtype = jnp.dtype(dtype)
  return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def complex_dtype(dtype: Any) -> jnp.dtype:
  """The complex dtype whose parts are at least as wide as the real ``dtype``: complex128
  for float64, complex64 otherwise (there is no complex bfloat16 or float16)."""
  return jnp.dtype(jnp.complex128 if jnp.dtype(dtype).itemsize >= 8 else jnp.complex64)


def widened(x: jax.Array, dtype: Any) -> jax.Array:
  """``x`` as the real ``dtype``, or as its complex counterpart (:func:`complex_dtype`)
  when ``x`` is complex, so that widening never drops an imaginary part."""
  return as_dtype(x, complex_dtype(dtype) if jnp.iscomplexobj(x) else jnp.dtype(dtype))


def state_dtype(x: Any, dtype: Any = None) -> jnp.dtype:
  """The dtype of a state that holds values of leaf ``x`` (a momentum, an average).

  ``dtype`` if given, else ``x``'s own; for a complex ``x`` and a real ``dtype``, a
  complex dtype (:func:`complex_dtype`), since a real accumulator would drop the
  imaginary part: a narrow ``dtype`` saves no memory on a complex leaf.
  """
  x_dtype = jnp.asarray(x).dtype
  if dtype is None:
    return x_dtype
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(x_dtype, jnp.complexfloating) and not jnp.issubdtype(
      dtype, jnp.complexfloating):
    return complex_dtype(dtype)
  return dtype


def abs_sq(x: jax.Array, dtype: Any = None) -> jax.Array:
  """:math:`|x|^2`, real for complex ``x``; as ``dtype`` if given.

  A complex ``dtype`` (an accumulator laid out like optax's, ``zeros_like``
  a complex leaf) takes the real square with a zero imaginary part, the
  explicit cast strict dtype promotion asks for.
  """
  sq = (x * x.conj()).real if jnp.iscomplexobj(x) else jnp.square(x)
  return sq if dtype is None else as_dtype(sq, dtype)


def wide_abs_sq(x: jax.Array, dtype: Any = None) -> jax.Array:
  """:math:`|x_i|^2` in float32, or float64 for float64 and complex128 ``x`` (or in ``dtype``
  where that is wider).

  Widened before squaring, so a bfloat16 leaf's squares are not rounded to 8 bits: the
  terms of a norm (:func:`gradtx.tree.sum_squares`, the per-unit and per-example norms
  of clipping).
  """
  x = jnp.abs(x) if jnp.iscomplexobj(x) else x
  acc = jnp.dtype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32)
  if dtype is not None and jnp.dtype(dtype).itemsize > acc.itemsize:
    acc = jnp.dtype(dtype)
  return jnp.square(as_dtype(x, acc))


def clip_modulus(x: jax.Array, c: jax.Array | float) -> jax.Array:
  """:math:`\\operatorname{clip}(x, -c, c)` for real ``x``; for complex ``x``, each entry with
  its modulus clipped to :math:`c \\ge 0` and its phase kept.

  Complex numbers have no order to clip by, but :math:`|x|` does: an entry with
  :math:`|x| > c` becomes :math:`c\\,x/|x|`. ``c`` is cast to ``x``'s (real) dtype.
  """
  if not jnp.iscomplexobj(x):
    c = as_dtype(c, x.dtype)
    return jnp.clip(x, -c, c)
  modulus = jnp.abs(x)
  c = as_dtype(c, modulus.dtype)
  over = modulus > c
  # Where |x| <= c the entry is kept as it is; the inner where keeps 0 / 0 out of it.
  return jnp.where(over, x * as_dtype(c / jnp.where(over, modulus, 1), x.dtype), x)


def stored(x: jax.Array, dtype: Any) -> jax.Array:
  """``x`` rounded to ``dtype``'s precision, kept in ``x``'s dtype.

  A moment held in a narrower dtype than it is computed in (``mu_dtype=
  jnp.bfloat16``) is used by the step as it is stored. Using the unrounded
  value instead would make the step read the old moment after the new one
  is written, and XLA then copies every donated moment buffer to keep the
  old one alive (two extra passes over memory for Adam).
  """
  dtype = jnp.dtype(dtype)
  if dtype == x.dtype:
    return x
  return x.astype(dtype).astype(x.dtype)


def ema_moment(g: jax.Array, m: jax.Array, decay: jax.typing.ArrayLike, order: int, *,
               store: bool = True, squares: bool = False) -> jax.Array:
  """:math:`m \\leftarrow (1 - \\beta) g^k + \\beta m`, computed in the wider dtype as
  :math:`m + (1 - \\beta)(g^k - m)` (:func:`lerp_moment`).

  ``order=2`` uses :math:`|g|^2`. The result is in the wider of ``g`` and
  ``m``'s dtypes, rounded to ``m``'s precision (see :func:`stored`) unless
  ``store=False`` (an interpolation that is not kept, such as Lion's);
  callers cast it to the state's dtype; a 16-bit one takes its change in
  float32 (see :func:`lerp_moment`). ``squares=True`` says that ``g`` is already a
  square (``order=1``), so that an overflowed mean stays Inf as
  ``order=2``'s does (see :func:`lerp_moment`).
  """
  return lerp_moment(g, m, ema_take(g, m, decay, order), order, store=store, squares=squares)


def ema_take(g: jax.Array, m: jax.Array, decay: jax.typing.ArrayLike, order: int) -> jax.Array:
  """:math:`1 - \\beta`, the weight :func:`ema_moment` gives :math:`g^k`, in the dtype it
  updates ``m`` in; computed once per step and dtype inside :func:`shared_scalars`."""
  work, _ = _moment_dtypes(g, m, order)
  # 1 - decay in the hyperparameter's own precision, as optax's Python floats do.
  return shared(f"ema {work}", (decay,), lambda: as_dtype(1 - jnp.asarray(decay), work))


def lerp_moment(g: jax.Array, m: jax.Array, take: jax.Array, order: int, *,
                store: bool = True, squares: bool = False) -> jax.Array:
  """:math:`m \\leftarrow m + (1 - \\beta)(g^k - m)`: :func:`ema_moment` from one scalar.

  The moment in the interpolation form torch's Adam uses
  (``exp_avg.lerp_(grad, 1 - beta1)``), equal to optax's weighted sum
  :math:`(1 - \\beta) g^k + \\beta m` up to rounding; ``take`` is
  :math:`1 - \\beta`. Why this form: each leaf's kernel multiplies by one
  runtime scalar where the weighted sum multiplies by two, and XLA:CPU
  compiles a kernel with two markedly more slowly (a Signum step written in
  plain JAX, on GPT-2 small's tree: 0.59 s as the sum, 0.48 s in this form,
  0.48 s with constants). It also keeps more of a float16 moment's digits
  (Adadelta's: 1% off at step 5, the sum 5%). Not
  :math:`g^k + \\beta(m - g^k)`, which reads :math:`\\beta` alone but cancels
  at the first step (:math:`m = 0`, :math:`\\beta` near 1). Dtypes as in
  :func:`ema_moment`.

  A mean of squares (``order=2``, or ``squares=True``) that has overflowed to
  Inf (:math:`g^2` past the dtype's largest value: :math:`|g|` above about
  1.8e19 in float32; in float16, :math:`(1 - \\beta) g^2` past 65504, :math:`|g|`
  above about 8100 with :math:`\\beta = 0.999`) stays Inf, as optax's weighted sum keeps
  it, so that a step dividing by its root is 0 on that entry, as optax's: in
  this form :math:`g^2 - m` would be :math:`\\infty - \\infty`, NaN, and so
  would the params.

  For 16-bit ``g`` and ``m`` the change :math:`(1 - \\beta)(g^k - m)` is
  formed in float32, rounded once and added in the 16-bit dtype. In 16-bit
  arithmetic, :math:`g - m` overflowed float16 where neither does (a gradient
  of 4e4 against a moment of -4e4: the moment went Inf, the step -Inf and then
  NaN, where optax's weighted sum is finite), and :math:`g^2` overflowed for
  :math:`|g|` past 256 where the mean does not (optax's mean is Inf there, and
  its step 0). Two roundings where that made three. Not the whole update in
  float32, rounded once: its final cast made XLA:CPU recompute the new moment
  inside the parameters' kernel from the old one, and copy both donated moment
  buffers to keep the old ones (Adam on a 1M-parameter float16 MLP: 1.4-1.8x
  the step time; this form 1.05-1.1x, and 0.8x on bfloat16). Float32 and wider
  dtypes compute as they did.
  """
  work, dtype = _moment_dtypes(g, m, order)
  g_k = _powered(as_dtype(g, _widest({jnp.dtype(g.dtype), work})), order)
  wide = as_dtype(m, work)
  change = as_dtype(take, work) * (as_dtype(g_k, work) - wide)
  # For 16-bit g and m: the change in float32, rounded once, added in 16 bits (docstring).
  base = wide if work == dtype else as_dtype(m, dtype)
  change = as_dtype(change, dtype)
  new = _add_keeping_inf(base, change) if order == 2 or squares else base + change
  return stored(new, m.dtype) if store else new


# One operation, not three, at each leaf of an eager step. The product stays outside: in
# one kernel with the sum, XLA contracts the two into a fused multiply-add, rounded once,
# and an eager moment differed from the one computed op by op in the last bit (3 of 64
# float32 entries of tests/test_core.py's case).
@one_kernel_when_eager
def _add_keeping_inf(wide: jax.Array, change: jax.Array) -> jax.Array:
  """``wide + change``, and ``wide`` where it is Inf: a mean of squares that has overflowed."""
  new = wide + change
  # Inf - Inf is NaN, where optax's beta m + (1 - beta) g^2 keeps the Inf; the step then
  # divides by Inf and is 0 there. Rules whose step does not read m yet (RAdam's first
  # steps, ADOPT's first) stepped by NaN too, through the 0 / NaN of the unused branch.
  return jnp.where(wide == jnp.inf, wide, new)


def _moment_dtypes(g: jax.Array, m: jax.Array, order: int) -> tuple[jnp.dtype, jnp.dtype]:
  """The dtype to update ``m`` in (float32 at least), and that of the result: the wider
  of :math:`g^k`'s and ``m``'s.

  :math:`|g|^k` (``order > 1``) of a complex gradient is real: a real moment is
  updated in the real dtype, a complex one (optax's layout,
  ``zeros_like(params)``) takes it cast explicitly, as strict dtype promotion
  requires.
  """
  dtype = compute_dtype(g, m)
  dtype = _widest({dtype if order == 1 else real_dtype(dtype), jnp.dtype(m.dtype)})
  return _widest({dtype, _FLOAT32}), dtype


def _powered(g: jax.Array, order: int) -> jax.Array:
  """:math:`g^k` (:math:`|g|^k` for ``k > 1``, real for complex ``g``) in ``g``'s dtype:
  the power is taken after widening (a bfloat16 gradient is squared in float32)."""
  return g if order == 1 else abs_sq(g) if order == 2 else jnp.abs(g) ** order


def bias_correction(m: jax.Array, decay: jax.typing.ArrayLike,
                    count: jax.typing.ArrayLike) -> jax.Array:
  """:math:`\\hat m = m / (1 - \\beta^t)`, undoing a zero-initialised moment's bias."""
  def correction() -> jax.Array:
    beta = jnp.asarray(decay)
    # The power in the hyperparameter's float dtype, as optax's float ** int32 count.
    return (1 - beta ** jnp.asarray(count).astype(beta.dtype)).astype(m.dtype)

  return m / shared(f"debias {m.dtype}", (decay, count), correction)


def zero_count() -> jax.Array:
  """A fresh step counter: int32 zero, advanced by :func:`safe_increment`."""
  return jnp.zeros([], jnp.int32)


def safe_divide(x: jax.Array, d: jax.Array) -> jax.Array:
  """:math:`x / d` where ``d != 0`` and 0 where ``d = 0`` (no NaN from 0 / 0); ``x`` may
  be complex, ``d`` is real (a norm, so ``d >= 0``). A NaN ``d`` (a norm of a NaN
  gradient) gives NaN, as the plain division does: a zero there would hide it."""
  nonzero = d != 0
  d = jnp.where(nonzero, d, 1)
  if jnp.iscomplexobj(x) and not jnp.iscomplexobj(d):
    d = as_dtype(d, x.dtype)  # the explicit cast strict promotion asks for; Im 0
  return jnp.where(nonzero, x / d, 0)


def over_norm(c: jax.Array, norm: jax.Array) -> jax.Array:
  """:math:`c / \\|g\\|` for a threshold :math:`c > 0` (``inf`` where the norm is 0), with
  tangent 0 there.

  The division's tangent at a zero norm, :math:`-c / 0^2` times the norm's zero
  tangent, is NaN, and ``jnp.minimum(1, c / norm)`` multiplies tangents by its 0/1 mask,
  so ``jax.jvp`` of a clipped step at zero gradients was NaN (reverse mode and optax's
  jvp give the identity). A rule for the derivative only: a select in the value is
  computed again in every leaf's kernel that XLA fuses the factor into (3% more HLO for
  2000 clipped leaves).
  """
  # Concrete: nothing differentiates through it (see safe_sqrt: an eager custom_jvp call
  # traces its rule every time).
  return c / norm if is_concrete((c, norm)) else _over_norm(c, norm)


@jax.custom_jvp
def _over_norm(c: jax.Array, norm: jax.Array) -> jax.Array:
  return c / norm


@_over_norm.defjvp
def _over_norm_jvp(primals: tuple[jax.Array, jax.Array],
                   tangents: tuple[jax.Array, jax.Array]) -> tuple:
  c, norm = primals
  dc, dnorm = tangents
  nonzero = norm != 0
  safe = jnp.where(nonzero, norm, 1)
  return _over_norm(c, norm), jnp.where(nonzero, (dc - c / safe * dnorm) / safe, 0)


def safe_sqrt(x: jax.Array) -> jax.Array:
  """:math:`\\sqrt{x}`, bit for bit, with derivative 0 at :math:`x = 0`.

  ``jnp.sqrt``'s derivative there is infinite, and the chain rule meets it
  with a zero (the derivative of a sum of squares at zero): NaN in every
  gradient taken through an optimizer step, as when meta-learning its
  hyperparameters. 0 is the norm's subgradient at the origin. Derivatives of
  higher order are 0 there too (a Hessian through a step, a root of a
  quantity that is 0 whatever the params, as DoG's first distance).
  """
  # A value, not a tracer: nothing differentiates through it, so the primal is computed
  # directly. An eager call of a custom_jvp function traces its rule at every call: about
  # 80 times jnp.sqrt's cost on a small array (0.3 ms), at each leaf of a step that takes
  # norms (LARS, LAMB, clipping) when it runs without jax.jit.
  return jnp.sqrt(x) if is_concrete(x) else _safe_sqrt(x)


@jax.custom_jvp
def _safe_sqrt(x: jax.Array) -> jax.Array:
  return jnp.sqrt(x)


@_safe_sqrt.defjvp
def _safe_sqrt_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple:
  x, = primals
  dx, = tangents
  # The root through this rule again, not jnp.sqrt: a second derivative (a Hessian, a
  # meta-gradient's gradient) differentiates the rule, and jnp.sqrt's infinite slope at 0
  # met the zero cotangent or tangent the where below leaves it: NaN at x = 0.
  root = _safe_sqrt(x)
  positive = x > 0
  return root, jnp.where(positive, dx / (2 * jnp.where(positive, root, 1)), 0)


def floor_eps_root(eps_root: jax.Array) -> jax.Array:
  """:math:`\\max(\\epsilon_\\text{root}, 2^{-126})`, once per step, for :math:`\\sqrt{v +
  \\epsilon_\\text{root}}`.

  Where :math:`v` is exactly 0 (a gradient entry 0 at every step so far),
  ``jnp.sqrt``'s derivative at :math:`v + \\epsilon_\\text{root}` is infinite with
  the default :math:`\\epsilon_\\text{root} = 0`, and a gradient taken through the
  step (meta-learning) is NaN (as in optax). With the least normal float32 as a
  floor it is finite, and the step changes below float32's rounding wherever
  an :math:`\\epsilon \\ge 10^{-12}` follows the root (about :math:`10^{-19}`
  against it; float64 steps move by as much where :math:`v < 10^{-22}`). A
  per-leaf :func:`safe_sqrt` would do it exactly, but a ``custom_jvp`` per
  leaf made tracing 2000 leaves 30-50% slower; this is one scalar per step.
  A float16 moment rounds the floor to 0.

  The floor lifts the value only: the derivative with respect to
  :math:`\\epsilon_\\text{root}` stays 1, that of the rule without the floor. A
  ``jnp.maximum`` made it 0 at the default 0, so a meta-gradient of the loss
  with respect to ``eps_root`` was 0 there (optax's is not).
  """
  floor = jnp.asarray(_LEAST_NORMAL_FLOAT32, jnp.result_type(eps_root))
  return eps_root + jax.lax.stop_gradient(jnp.maximum(floor - eps_root, 0))


_LEAST_NORMAL_FLOAT32 = float(jnp.finfo(jnp.float32).tiny)  # 2**-126, about 1.2e-38


# One operation, not three, at each leaf of an eager step: two sums and a root, each rounded
# once as op by op (no product feeding a sum for XLA to contract into a multiply-add).
@one_kernel_when_eager
def adam_denominator(v: jax.Array, eps: jax.Array, eps_root: jax.Array) -> jax.Array:
  """:math:`\\sqrt{v + \\epsilon_\\text{root}} + \\epsilon`, what Adam and its family (AMSGrad,
  RAdam, Yogi, AdaBelief, Adan, NovoGrad, AdEMAMix) divide their step by.

  ``v`` is the (debiased) second moment; ``eps`` and ``eps_root`` are arrays of its dtype,
  ``eps_root`` floored once per step (:func:`floor_eps_root`) so that the root's
  derivative is finite where :math:`v = 0`.
  """
  return jnp.sqrt(v + eps_root) + eps


def safe_cbrt(x: jax.Array) -> jax.Array:
  """:math:`\\sqrt[3]{x}`, bit for bit, with derivative 0 at :math:`x = 0`.

  As :func:`safe_sqrt`: ``jnp.cbrt``'s derivative :math:`1 / (3 x^{2/3})` is
  infinite at 0, where a sum of squares (MADGRAD's :math:`\\nu`) meets it with
  a zero derivative, and the product is NaN.
  """
  return jnp.cbrt(x) if is_concrete(x) else _safe_cbrt(x)  # as safe_sqrt's


@jax.custom_jvp
def _safe_cbrt(x: jax.Array) -> jax.Array:
  return jnp.cbrt(x)


@_safe_cbrt.defjvp
def _safe_cbrt_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple:
  x, = primals
  dx, = tangents
  root = _safe_cbrt(x)  # through this rule again, as _safe_sqrt_jvp's root
  nonzero = x != 0
  return root, jnp.where(nonzero, dx / (3 * jnp.where(nonzero, root, 1) ** 2), 0)


def safe_rsqrt(x: jax.Array) -> jax.Array:
  """:math:`1/\\sqrt{x}` where ``x > 0`` and 0 elsewhere (no Inf from a zero)."""
  return jnp.where(x > 0, jax.lax.rsqrt(jnp.where(x > 0, x, 1)), 0)
