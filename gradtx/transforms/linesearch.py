"""Quasi-Newton directions and line searches: L-BFGS, the zoom (strong Wolfe) and the
backtracking (Armijo) line searches.

:func:`scale_by_lbfgs` turns gradients into an approximate Newton direction
from the last few parameter and gradient differences; a later
:func:`scale_by_zoom_linesearch` or :func:`scale_by_backtracking_linesearch`
stage picks the step length along that direction by evaluating the loss. A
line search reads the extra keyword arguments ``value`` (the loss at the
params), ``grad`` (its gradient) and ``value_fn`` (the loss as a function of
the params) that the caller passes to ``update``, as optax's do, and keeps the
loss (and gradient) at the params it moves to in its state, where
:func:`value_and_grad_from_state` finds them for the next step.

The params must be floating point (or complex): ``value_fn`` is evaluated on all
of them, and an integer buffer or a key cannot be stepped along the line, so
they raise at ``init``. A ``None`` among them (``eqx.filter(model,
eqx.is_inexact_array)`` gives one for each leaf that is not a float array) is
no leaf: it has no step and no state, ``grad`` holds ``None`` there too, and
``value_fn`` is called on the tree as given, ``None`` included.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics, packed, tree
from gradtx.core import (NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, POSITIVE_INT, POSITIVE_OR_INF,
                         GradientTransformation, HParams, HParamSpec, Range, ScalarOrSchedule,
                         branch, check_callable, check_integer_option, check_state, checks_flags,
                         jit_per_static, require_params, require_params_like, scalar_loss)
from gradtx.errors import StructureError, missing_extra_argument
from gradtx.numerics import over_norm, safe_increment

__all__ = ["BacktrackingLinesearchInfo", "ScaleByBacktrackingLinesearchState",
           "ScaleByLBFGSState", "ScaleByZoomLinesearchState", "ZoomLinesearchInfo",
           "scale_by_backtracking_linesearch", "scale_by_lbfgs", "scale_by_zoom_linesearch",
           "value_and_grad_from_state"]


def _add_scaled(x: Any, alpha: jax.Array, y: Any) -> Any:
  """Leafwise ``x + alpha * y`` in ``x``'s dtypes."""
  return tree.tree_map(lambda a, b: (a + alpha.astype(a.dtype) * b.astype(a.dtype)), x, y)


def _value_dtype(params: Any) -> jnp.dtype:
  """The real dtype of the loss: the widest of the params' leaves.

  float32 (float64 under ``jax_enable_x64``) for a tree without leaves, such as
  :func:`gradtx.tree_utils.tree_map_params`'s placeholder. optax takes the first
  leaf's, so a tree that starts with a bfloat16 leaf would compare float32 losses in
  bfloat16.
  """
  leaves = jax.tree.leaves(params)
  dtype = numerics.compute_dtype(*leaves) if leaves else jnp.result_type(float)
  return numerics.real_dtype(dtype)


def _slope(updates: Any, grad: Any) -> jax.Array:
  """:math:`\\frac{d}{d\\eta} f(\\theta + \\eta u)` at 0, :math:`\\mathrm{Re} \\sum_i u_i g_i`.

  JAX's gradient of a real function of complex parameters is the conjugate of
  the steepest-ascent direction, so no conjugate is taken (for real trees this
  is :math:`\\langle u, g \\rangle`). Computed in at least float32 and in one dtype across
  leaves (bfloat16 leaves or leaves of mixed precision), as optax's ``tree.vdot`` upcasts.
  """
  pairs = list(zip(jax.tree.leaves(updates), jax.tree.leaves(grad)))
  if not pairs:  # a tree without leaves: the loss does not change along the line
    return jnp.zeros((), jnp.result_type(float))
  dtype = numerics.at_least_float32(*[x for pair in pairs for x in pair])
  terms = [jnp.sum(u.astype(dtype) * g.astype(dtype)).real for u, g in pairs]
  return sum(terms[1:], terms[0])


def _check_inexact_params(stage: str, params: Any) -> None:
  """Raises :class:`StructureError` naming the first leaf of ``params`` that the stage
  cannot step: one masked out (an integer or key leaf, which a transformation masks as
  it starts, or a leaf outside a mask's or partition's group), since ``value_fn`` is
  evaluated on the whole params; or one not floating point or complex, since the stage
  steps the params by fractions of a direction and holds the loss and step lengths in
  their dtype (an integer one cannot hold the first, infinite, loss; optax 0.2.8 fails
  there with an ``OverflowError``). A ``None`` (``eqx.filter(model,
  eqx.is_inexact_array)``'s for a non-array leaf) is no leaf, and passes: ``value_fn``
  gets it back (:func:`_of_stepped`)."""
  hidden = packed.hidden_leaf(params)  # packed mode zeroes the leaves a mask hides
  given = tree.as_given(params)
  # Where the tree behind the params is unknown (inside lookahead), a None is masked too.
  maybe_none = "" if given is not None else " a None inside a wrapper,"

  def check(path: tuple, p: Any, g: Any) -> None:
    if tree.is_masked(p) and given is not None and g is None:
      return  # a None param: no leaf
    if tree.is_masked(p) or hidden is not None:
      raise StructureError(
          f"{stage}: params at key path {hidden or tree.keystr(path)} are left out of the "
          f"step (an integer or key leaf,{maybe_none} or a leaf outside this stage's mask), and "
          f"{stage} evaluates value_fn on the whole params: pass the float leaves only as the "
          "params (None elsewhere, as eqx.filter(model, eqx.is_inexact_array) gives them), "
          "and let value_fn close over the others")
    dtype = jnp.result_type(p)
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise StructureError(
          f"{stage}: params at key path {tree.keystr(path)} are {dtype}; {stage} needs "
          "floating-point (or complex) params: pass the float leaves only as the params, "
          "and let value_fn close over the others")

  jax.tree_util.tree_map_with_path(check, params, params if given is None else given,
                                   is_leaf=tree.is_masked)


def _given(params: Any) -> Any:
  """The tree the user built behind the stepped ``params``, which hold a
  :class:`gradtx.tree.MaskedNode` for each ``None`` (or other leaf without a gradient);
  ``None`` in the common case where nothing is masked (``value_fn`` takes the params
  as they are)."""
  given = tree.as_given(params)
  if given is params:
    return None
  return tree.thaw(params) if given is None else given  # unknown: a None for each node


def _of_stepped(value_fn: Callable[..., Any], given: Any) -> Callable[..., Any]:
  """``value_fn`` as a function of the params the stage steps: it is called on the tree
  as the user built it (``given``, from :func:`_given`), so that its gradient has the
  stepped params' structure."""
  if given is None:
    return value_fn  # the common case: nothing masked

  def of_stepped(p: Any, **kwargs: Any) -> Any:
    as_built = jax.tree.map(lambda x, g: g if tree.is_masked(x) else x, p, given,
                            is_leaf=tree.is_masked)
    return value_fn(as_built, **kwargs)

  return of_stepped


def _search_once_per_signature(search: Callable[..., Any]) -> Callable[..., Any]:
  """``search(value_fn, fn_kwargs, given, *args, **options)`` jitted
  (:func:`gradtx.core.jit_per_static`): run eagerly, its ``while_loop`` (a new jaxpr at
  every call, its body a new closure) was compiled again at every step, 0.1-0.5 s on a
  CPU; jitted, it is compiled once per ``value_fn``, options and shapes. Under an outer
  jit it is inlined.

  ``value_fn``, the ``options`` and the leaves of ``fn_kwargs`` and ``given`` that are no
  arrays (a Python flag for the loss) are static: the program is looked up by
  ``value_fn``'s identity, as :func:`jax.lax.while_loop` looks up a body's trace, so a
  function created anew at each step (a ``lambda``) is traced and compiled at each step,
  as it was. Where one of them cannot be hashed, ``search`` runs unjitted, as it did.
  """
  def run(value_fn, loose_static, options, arrays, args):
    treedef, others = loose_static
    leaves = iter(arrays)
    fn_kwargs, given = jax.tree.unflatten(
        treedef, [next(leaves) if x is _ARRAY else x for x in others])
    return search(value_fn, fn_kwargs, given, *args, **dict(options))

  jitted = jit_per_static(run)

  def call(value_fn: Callable[..., Any], fn_kwargs: dict[str, Any], given: Any, *args: Any,
           **options: Any) -> Any:
    leaves, treedef = jax.tree.flatten((fn_kwargs, given))
    is_array = [isinstance(x, (jax.Array, np.ndarray, np.generic)) for x in leaves]
    loose_static = (treedef, tuple(_ARRAY if a else x for a, x in zip(is_array, leaves)))
    static = (value_fn, loose_static, tuple(sorted(options.items())))
    return jitted(*static)([x for a, x in zip(is_array, leaves) if a], args)

  return call


class _ArrayPlaceholder:
  """Where :func:`_search_once_per_signature`'s static part had an array."""


_ARRAY = _ArrayPlaceholder()


def _value_fn_kwargs(value_fn: Any, extra: dict[str, Any]) -> dict[str, Any]:
  """The extra ``update`` arguments that ``value_fn`` accepts (all of them if it takes
  ``**kwargs``); the others are for other stages of the chain."""
  parameters = inspect.signature(value_fn).parameters
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
    return dict(extra)
  return {k: v for k, v in extra.items() if k in parameters}


# ----------------------------------------------------------------------------
# L-BFGS.


def _newest_to_oldest(q: Any, pair: tuple) -> tuple[Any, jax.Array]:
  """The first loop of the two-loop recursion: :math:`\\alpha_i = \\rho_i \\langle s_i, q\\rangle`,
  :math:`q \\leftarrow q - \\alpha_i y_i`."""
  s_i, y_i, rho_i = pair
  alpha = rho_i * tree.inner(s_i, q).astype(rho_i.dtype)
  return _add_scaled(q, -alpha, y_i), alpha


def _oldest_to_newest(r: Any, pair_alpha: tuple) -> tuple[Any, None]:
  """The second loop: :math:`\\beta = \\rho_i \\langle y_i, r\\rangle`,
  :math:`r \\leftarrow r + (\\alpha_i - \\beta) s_i`."""
  s_i, y_i, rho_i, alpha = pair_alpha
  beta = rho_i * tree.inner(y_i, r).astype(rho_i.dtype)
  return _add_scaled(r, alpha - beta, s_i), None


class ScaleByLBFGSState(NamedTuple):
  """State of :func:`scale_by_lbfgs`.

  ``params`` and ``updates`` are those of the last step; ``diff_params_memory``
  (:math:`s_i`) and ``diff_updates_memory`` (:math:`y_i`) stack the last
  ``memory_size`` differences along a leading axis, ``weights_memory`` holds
  :math:`\\rho_i = 1 / \\langle s_i, y_i \\rangle`.
  """
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  params: Any
  updates: Any
  diff_params_memory: Any
  diff_updates_memory: Any
  weights_memory: jax.Array
  hparams: HParams


@checks_flags
def scale_by_lbfgs(memory_size: int = 10, scale_init_precond: bool = True
                   ) -> GradientTransformation:
  """L-BFGS's direction: the gradient times a limited-memory inverse Hessian estimate.

  With :math:`s_i = \\theta_{i+1} - \\theta_i`, :math:`y_i = g_{i+1} - g_i`,
  :math:`\\rho_i = 1/\\langle s_i, y_i\\rangle` over the last :math:`m` steps,

  .. math::
    H_k = V_{k-1}^\\top H_{k-1} V_{k-1} + \\rho_{k-1} s_{k-1} s_{k-1}^\\top, \\quad
    V_i = I - \\rho_i y_i s_i^\\top, \\quad H^0_k = \\gamma_k I, \\quad
    u_k = H_k g_k

  computed by the two-loop recursion, with
  :math:`\\gamma_k = \\langle s_{k-1}, y_{k-1}\\rangle / \\|y_{k-1}\\|^2`
  (``scale_init_precond``; at the first step :math:`\\min(1, 1/\\|g_0\\|)`)
  or 1. The memory is updated before the direction is computed, so a line
  search stage after this one sees the pair from the step just taken.

  Matches ``optax.scale_by_lbfgs``.

  Args:
    memory_size: :math:`m \\ge 1`, the number of pairs kept, default 10.
    scale_init_precond: scale the initial inverse Hessian by :math:`\\gamma_k`.

  References:
    Nocedal & Wright, *Numerical Optimization*, 1999, Algorithms 7.4 and 7.5.
  """
  check_integer_option("scale_by_lbfgs", "memory_size", memory_size, POSITIVE_INT)
  memory_size = int(memory_size)  # the length of the memories' leading axis: 10.0 is 10
  spec = HParamSpec("scale_by_lbfgs")

  def init(params):
    _check_inexact_params("scale_by_lbfgs", params)

    def stacked():  # called once per memory: two memories sharing buffers cannot be donated
      return tree.tree_map(lambda p: jnp.zeros((memory_size,) + jnp.shape(p),
                                               jnp.asarray(p).dtype), params)

    return ScaleByLBFGSState(numerics.zero_count(), tree.zeros_like(params),
                             tree.zeros_like(params), stacked(), stacked(),
                             jnp.zeros((memory_size,), _value_dtype(params)), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_lbfgs", state, ScaleByLBFGSState)
    del extra
    params = require_params_like("scale_by_lbfgs", updates, params, state, "params")
    h, hparams = spec.step(state.hparams)
    del h
    k = state.count
    first = k == 0
    weight_dtype = state.weights_memory.dtype

    # 1. Store the newest pair (s, y, rho); there is none before the first step.
    s = tree.tree_map(lambda p, q: jnp.where(first, jnp.zeros_like(p), p - q.astype(p.dtype)),
                      params, state.params)
    y = tree.tree_map(lambda g, q: jnp.where(first, jnp.zeros_like(g), g - q.astype(g.dtype)),
                      updates, state.updates)
    sy = tree.inner(s, y).astype(weight_dtype)
    rho = jnp.where(sy == 0, jnp.zeros_like(sy), 1 / jnp.where(sy == 0, 1, sy))
    newest = (k - 1) % memory_size
    s_memory = tree.tree_map(lambda M, x: M.at[newest].set(x.astype(M.dtype)),
                             state.diff_params_memory, s)
    y_memory = tree.tree_map(lambda M, x: M.at[newest].set(x.astype(M.dtype)),
                             state.diff_updates_memory, y)
    rho_memory = state.weights_memory.at[newest].set(rho)

    # 2. The scale of the initial inverse Hessian.
    if scale_init_precond:
      yy = tree.inner(y, y).astype(weight_dtype)
      gamma = jnp.where(yy > 0, sy / jnp.where(yy > 0, yy, 1), 1)
      g_norm = tree.global_norm(updates).astype(weight_dtype)
      # over_norm: at zero gradients 1 / 0 made jax.jvp of the first step NaN.
      gamma = jnp.where(first, jnp.minimum(1, over_norm(jnp.ones_like(g_norm), g_norm)), gamma)
    else:
      gamma = jnp.ones((), weight_dtype)

    # 3. The two-loop recursion over the pairs, oldest to newest (empty slots have rho = 0).
    order = (k % memory_size + jnp.arange(memory_size, dtype=k.dtype)) % memory_size
    pairs = (tree.tree_map(lambda M: M[order], s_memory),
             tree.tree_map(lambda M: M[order], y_memory), rho_memory[order])
    q, alphas = jax.lax.scan(_newest_to_oldest, updates, pairs, reverse=True)
    r = tree.scale(gamma, q)
    direction, _ = jax.lax.scan(_oldest_to_newest, r, (*pairs, alphas))
    direction = tree.cast_like(direction, updates)
    # Stored in the init's dtypes: a weak-typed param would otherwise make the
    # next step's state a different type, and the step trace again.
    return direction, ScaleByLBFGSState(
        safe_increment(k), tree.cast_like(params, state.params),
        tree.cast_like(updates, state.updates), s_memory, y_memory, rho_memory, hparams)

  return GradientTransformation(init, update, name="scale_by_lbfgs", spec=spec, options=dict(
      memory_size=memory_size, scale_init_precond=scale_init_precond))


# ----------------------------------------------------------------------------
# The zoom line search.


class ZoomLinesearchInfo(NamedTuple):
  """What the last line search did: its number of evaluations and final errors.

  A positive ``decrease_error`` means no step with sufficient decrease was
  found; a positive ``curvature_error`` alone is milder (the step may be short).
  """
  num_linesearch_steps: jax.Array
  decrease_error: jax.Array
  curvature_error: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
  """State of :func:`scale_by_zoom_linesearch`.

  ``learning_rate`` is the step length chosen at the last step; ``value`` and
  ``grad`` are the loss and its gradient at the new parameters (reusable for
  the next step's ``value`` and ``grad``).
  """
  learning_rate: jax.Array
  value: jax.Array
  grad: Any
  info: ZoomLinesearchInfo
  hparams: HParams


class _Search(NamedTuple):
  """The line search's loop variables (step lengths are multiples of the direction)."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  stepsize: jax.Array
  value: jax.Array
  grad: Any
  slope: jax.Array
  decrease_error: jax.Array
  curvature_error: jax.Array
  interval_found: jax.Array
  done: jax.Array
  failed: jax.Array
  low: jax.Array
  value_low: jax.Array
  slope_low: jax.Array
  high: jax.Array
  value_high: jax.Array
  slope_high: jax.Array
  cubic_ref: jax.Array
  value_cubic_ref: jax.Array
  safe_stepsize: jax.Array
  safe_value: jax.Array
  safe_grad: Any


def _cubic_minimizer(a, fa, fpa, b, fb, c, fc):
  """The critical point of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a.

  NaN when the cubic has none; the caller then ignores it.
  """
  C = fpa
  db, dc = b - a, c - a
  denom = (db * dc) ** 2 * (db - dc)
  rb, rc = fb - fa - C * db, fc - fa - C * dc
  A = (dc**2 * rb - db**2 * rc) / denom
  B = (-(dc**3) * rb + db**3 * rc) / denom
  return a + (-B + jnp.sqrt(B * B - 3 * A * C)) / (3 * A)


def _quadratic_minimizer(a, fa, fpa, b, fb):
  """The critical point of the parabola through (a, fa), (b, fb) with slope fpa at a."""
  db = b - a
  B = (fb - fa - fpa * db) / db**2
  return a - fpa / (2 * B)


def _zoom(value_fn: Callable[..., Any], fn_kwargs: dict[str, Any], given: Any, updates: Any,
          params: Any, grad: Any, value_init: jax.Array, slope_init: jax.Array,
          learning_rate: jax.Array, hp: dict[str, jax.Array], *, initial_guess_strategy: str,
          verbose: bool) -> tuple[Any, ...]:
  """:func:`scale_by_zoom_linesearch`'s search of checked arguments (``grad`` in the
  state's dtypes, ``hp`` in the loss's): the step length, the loss and gradient there,
  and the search's count and errors."""
  dtype = learning_rate.dtype
  loss = _of_stepped(value_fn, given)
  value_and_grad = jax.value_and_grad(lambda p, **kw: scalar_loss(
      loss(p, **kw), "scale_by_zoom_linesearch", "value_fn's result"))

  def on_line(stepsize):
    """phi(eta), grad f and phi'(eta) at theta + eta u."""
    value_step, grad_step = value_and_grad(_add_scaled(params, stepsize, updates), **fn_kwargs)
    return (jnp.asarray(value_step).astype(dtype), tree.cast_like(grad_step, grad),
            _slope(updates, grad_step).astype(dtype))

  def decrease_error(stepsize, value_step, slope_step):
    error = value_step - value_init - hp["slope_rtol"] * stepsize * slope_init
    if "approx_dec_rtol" in hp:  # else the Armijo condition alone
      approx = jnp.maximum(slope_step - (2 * hp["slope_rtol"] - 1) * slope_init,
                           value_step - value_init - hp["approx_dec_rtol"] * jnp.abs(value_init))
      error = jnp.minimum(error, approx)
    error = jnp.maximum(error, 0)
    return jnp.where(jnp.isnan(error), jnp.inf, error)  # NaN: outside the domain

  def curvature_error(slope_step):
    error = jnp.maximum(jnp.abs(slope_step) - hp["curv_rtol"] * jnp.abs(slope_init), 0)
    return jnp.where(jnp.isnan(error), jnp.inf, error)

  def evaluate(s, stepsize):
    value_step, grad_step, slope_step = on_line(stepsize)
    dec = decrease_error(stepsize, value_step, slope_step)
    curv = curvature_error(slope_step)
    return value_step, grad_step, slope_step, dec, curv

  def choose(cond, a, b):
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)

  def search_interval(s: _Search) -> _Search:
    """Algorithm 3.5: grow the step until an interval brackets an acceptable one."""
    guess = learning_rate if initial_guess_strategy == "keep" else jnp.ones((), dtype)
    stepsize = jnp.where(s.count == 0, guess, hp["increase_factor"] * s.stepsize)
    max_reached = stepsize >= hp["max_learning_rate"]
    stepsize = jnp.minimum(stepsize, hp["max_learning_rate"])
    value_step, grad_step, slope_step, dec, curv = evaluate(s, stepsize)
    ok = jnp.maximum(dec, curv) <= hp["tol"]
    safe = choose(dec <= hp["tol"], (stepsize, value_step, grad_step),
                  (s.safe_stepsize, s.safe_value, s.safe_grad))
    high_is_new = (dec > 0) | ((value_step >= s.value) & (s.count > 0))
    low_is_new = (slope_step >= 0) & ~high_is_new
    previous = (s.stepsize, s.value, s.slope)
    new = (stepsize, value_step, slope_step)
    low, high = choose(low_is_new, (new, previous), (previous, new))
    interval_found = high_is_new | low_is_new | ok
    done = ok | (max_reached & ~interval_found)
    failed = (s.count + 1 >= hp["max_linesearch_steps"]) & ~done
    return _Search(safe_increment(s.count), stepsize, value_step, grad_step, slope_step, dec,
                   curv, interval_found, done, failed, *low, *high, *low[:2], *safe)

  def zoom(s: _Search) -> _Search:
    """Algorithm 3.6: shrink the bracket [low, high] around an acceptable step."""
    delta = jnp.abs(s.high - s.low)
    left, right = jnp.minimum(s.high, s.low), jnp.maximum(s.high, s.low)
    cubic = _cubic_minimizer(s.low, s.value_low, s.slope_low, s.high, s.value_high,
                             s.cubic_ref, s.value_cubic_ref)
    use_cubic = (cubic > left + 0.2 * delta) & (cubic < right - 0.2 * delta)
    quadratic = _quadratic_minimizer(s.low, s.value_low, s.slope_low, s.high, s.value_high)
    use_quadratic = ~use_cubic & (quadratic > left + 0.1 * delta) & (
        quadratic < right - 0.1 * delta)
    middle = jnp.where(use_cubic, cubic,
                       jnp.where(use_quadratic, quadratic, (s.low + s.high) / 2))
    value_mid, grad_mid, slope_mid, dec, curv = evaluate(s, middle)
    done = jnp.maximum(dec, curv) <= hp["tol"]
    safe = choose((dec <= hp["tol"]) & (value_mid < s.safe_value),
                  (middle, value_mid, grad_mid), (s.safe_stepsize, s.safe_value, s.safe_grad))
    high_to_middle = (dec > 0) | (value_mid >= s.value_low)
    high_to_low = (slope_mid * (s.high - s.low) >= 0) & ~high_to_middle
    mid, low, high = ((middle, value_mid, slope_mid), (s.low, s.value_low, s.slope_low),
                      (s.high, s.value_high, s.slope_high))
    new_high = choose(high_to_middle, mid, choose(high_to_low, low, high))
    new_low = choose(~high_to_middle, mid, low)
    cubic_ref = choose(high_to_middle | high_to_low, high[:2], low[:2])
    too_short = delta <= hp["stepsize_precision"]
    failed = ((s.count + 1 >= hp["max_linesearch_steps"]) | (too_short & (safe[0] > 0))) & ~done
    return _Search(safe_increment(s.count), middle, value_mid, grad_mid, slope_mid, dec, curv,
                   s.interval_found, done, failed, *new_low, *new_high, *cubic_ref, *safe)

  def fall_back_to_safe_step(s: _Search) -> _Search:
    """Out of steps: take the best sufficient-decrease step seen, if there is one."""
    use_safe = (s.safe_stepsize > 0) | jnp.isinf(s.decrease_error)
    stepsize, value_step, grad_step = choose(use_safe, (s.safe_stepsize, s.safe_value,
                                                        s.safe_grad),
                                             (s.stepsize, s.value, s.grad))
    if verbose:
      jax.debug.print("scale_by_zoom_linesearch: no step met both conditions; decrease "
                      "error {d}, curvature error {c}, taking step {s}",
                      d=s.decrease_error, c=s.curvature_error, s=stepsize)
    return s._replace(stepsize=stepsize, value=value_step, grad=grad_step)

  def body(s: _Search) -> _Search:
    s = jax.lax.cond(s.interval_found, zoom, search_interval, s)
    return jax.lax.cond(s.failed, fall_back_to_safe_step, lambda x: x, s)

  zero, inf, false = jnp.zeros((), dtype), jnp.asarray(jnp.inf, dtype), jnp.asarray(False)
  start = _Search(jnp.zeros([], jnp.int32), zero, value_init, grad, slope_init, inf, inf,
                  false, false, false, zero, value_init, slope_init, zero, value_init,
                  slope_init, zero, value_init, zero, value_init, grad)
  final = jax.lax.while_loop(lambda s: ~(s.done | s.failed), body, start)
  if verbose:  # done with an error left: the search grew to max_learning_rate, bracketing none
    capped = final.done & (jnp.maximum(final.decrease_error, final.curvature_error) > hp["tol"])
    jax.lax.cond(capped, lambda: jax.debug.print(
        "scale_by_zoom_linesearch: reached max_learning_rate with no interval holding a step "
        "that meets both conditions; decrease error {d}, curvature error {c}, taking step {s}",
        d=final.decrease_error, c=final.curvature_error, s=final.stepsize, ordered=True),
        lambda: None)
  return final.stepsize, final.value, final.grad, final.count, final.decrease_error, \
      final.curvature_error


_zoom_search = _search_once_per_signature(_zoom)


@checks_flags
def scale_by_zoom_linesearch(max_linesearch_steps: int,
                             max_learning_rate: ScalarOrSchedule | None = None,
                             tol: ScalarOrSchedule = 0.0, increase_factor: ScalarOrSchedule = 2.0,
                             slope_rtol: ScalarOrSchedule = 1e-4, curv_rtol: ScalarOrSchedule = 0.9,
                             approx_dec_rtol: ScalarOrSchedule | None = 1e-6,
                             stepsize_precision: ScalarOrSchedule = 1e-5,
                             initial_guess_strategy: Literal["one", "keep"] = "keep",
                             verbose: bool = False) -> GradientTransformation:
  """Scales the direction by a step length meeting the strong Wolfe conditions.

  Along :math:`\\theta + \\eta u` with :math:`\\phi(\\eta) = f(\\theta + \\eta u)`, find
  :math:`\\eta` with sufficient decrease and small curvature,

  .. math::
    \\phi(\\eta) \\le \\phi(0) + c_1 \\eta \\phi'(0) + \\delta, \\qquad
    |\\phi'(\\eta)| \\le c_2 |\\phi'(0)| + \\delta,

  where, with ``approx_dec_rtol`` :math:`= \\epsilon_f` not ``None``, the
  decrease may instead be the approximate Wolfe condition of Hager & Zhang,
  :math:`\\phi'(\\eta) \\le (2c_1 - 1)\\phi'(0)` and
  :math:`\\phi(\\eta) \\le \\phi(0) + \\epsilon_f |\\phi(0)|`. The search grows
  :math:`\\eta` by ``increase_factor`` until an interval holding such a step
  is found, then zooms into it by cubic, quadratic or bisection steps
  (Nocedal & Wright, Algorithms 3.5 and 3.6); :math:`u \\leftarrow \\eta u`.
  If it runs out of steps it takes the best step with sufficient decrease it
  saw, if any.

  Call ``update(updates, state, params, value=f(params), grad=grad_f(params),
  value_fn=f, **fn_kwargs)``; keyword arguments that ``value_fn`` accepts are
  passed to it (other stages of a chain may take the rest).

  Run eagerly (outside ``jax.jit``), the search is one compiled program, looked up as
  ``jax.jit`` looks up a static argument: by ``value_fn``'s identity, the arrays'
  shapes and dtypes and the value of any other keyword argument (a Python flag). Pass
  the same function at every step, with what changes (the batch) as keyword
  arguments: a function made anew at each step (a ``lambda``) is compiled at each
  step, and values it reads from outside (a global) are those of the step that
  compiled it, as in a ``jax.jit``-ed step.

  Complex parameters: pass ``grad`` as ``jax.grad`` gives it (the conjugate of
  the steepest ascent, :math:`\\partial_x f - i \\partial_y f`), and feed the
  chain the conjugated gradient :math:`\\bar g`, optax's convention (so the
  direction this stage scales is, say, :math:`-\\bar g`). The slopes are
  :math:`\\phi'(\\eta) = \\mathrm{Re} \\sum_i u_i g_i(\\theta + \\eta u)`,
  the derivative along :math:`u` of the loss of the real and imaginary parts,
  so :func:`gradtx.lbfgs` on a complex tree takes the steps it takes on
  :math:`(\\mathrm{Re}\\,\\theta, \\mathrm{Im}\\,\\theta)`. optax 0.2.8 takes
  the first slope as :math:`\\mathrm{Re} \\langle u, g \\rangle`, conjugating
  :math:`u`, and leaves that path.

  Args:
    max_linesearch_steps: evaluations of ``value_fn`` at most, per step.
    max_learning_rate: the largest step length, or ``None`` (or ``math.inf``)
      for no bound.
    tol: :math:`\\delta \\ge 0`, slack on both conditions, default 0.
    increase_factor: growth of the trial step while searching, :math:`> 1` and
      finite, default 2.
    slope_rtol: :math:`c_1 \\in (0, 1)`, default 1e-4.
    curv_rtol: :math:`c_2 \\in (0, 1]`, default 0.9.
    approx_dec_rtol: :math:`\\epsilon_f \\ge 0`, default 1e-6, or ``None`` for
      the Armijo condition alone.
    stepsize_precision: stop zooming when the interval is shorter than this
      and a step with sufficient decrease is known, default 1e-5.
    initial_guess_strategy: first trial step ``"one"`` (quasi-Newton
      directions) or ``"keep"`` the last accepted one.
    verbose: print the errors when the search fails, or when it stops at
      ``max_learning_rate`` before bracketing a step that meets both
      conditions (optax reports both).

  References:
    Nocedal & Wright, *Numerical Optimization*, 1999, Algorithms 3.5 and 3.6;
    Hager & Zhang, *Algorithm 851: CG_DESCENT*, ACM TOMS 2006.
  """
  if initial_guess_strategy not in ("one", "keep"):
    raise ValueError("scale_by_zoom_linesearch: initial_guess_strategy must be 'one' or "
                     f"'keep', got {initial_guess_strategy!r}")
  entries = dict(
      max_linesearch_steps=(max_linesearch_steps, POSITIVE_INT),
      max_learning_rate=(math.inf if max_learning_rate is None else max_learning_rate,
                         POSITIVE_OR_INF),
      # Finite, as max_learning_rate may be inf (the default): a trial step must be finite.
      tol=(tol, NONNEGATIVE), increase_factor=(increase_factor, Range(1.0, low_open=True)),
      slope_rtol=(slope_rtol, Range(0.0, 1.0, low_open=True, high_open=True)),
      curv_rtol=(curv_rtol, Range(0.0, 1.0, low_open=True)),
      stepsize_precision=(stepsize_precision, NONNEGATIVE))
  if approx_dec_rtol is not None:
    entries["approx_dec_rtol"] = (approx_dec_rtol, NONNEGATIVE)
  spec = HParamSpec("scale_by_zoom_linesearch", **entries)

  def init(params):
    _check_inexact_params("scale_by_zoom_linesearch", params)
    dtype = _value_dtype(params)
    info = ZoomLinesearchInfo(jnp.zeros([], jnp.int32), jnp.asarray(jnp.inf, dtype),
                              jnp.asarray(jnp.inf, dtype))
    return ScaleByZoomLinesearchState(jnp.ones((), dtype), jnp.asarray(jnp.inf, dtype),
                                      tree.zeros_like(params), info, spec.init())

  def update(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
    check_state("scale_by_zoom_linesearch", state, ScaleByZoomLinesearchState)
    params = require_params("scale_by_zoom_linesearch", params)
    missing = [n for n, v in (("value", value), ("grad", grad), ("value_fn", value_fn))
               if v is None]
    if missing:
      raise missing_extra_argument(
          f"scale_by_zoom_linesearch needs {', '.join(missing)}: call update(updates, state, "
          "params, value=f(params), grad=grad_f(params), value_fn=f)")
    grad = tree.mask_no_gradient(grad)  # a None as the updates' (given as jax.grad gives it)
    for name, got in (("updates", updates), ("params", params), ("grad", grad)):
      tree.check_structure(state.grad, got, "state.grad", name, stage="scale_by_zoom_linesearch")
    h, hparams = spec.step(state.hparams)
    dtype = state.learning_rate.dtype
    hp = {k: v.astype(dtype) if k != "max_linesearch_steps" else v for k, v in h.items()}
    fn_kwargs = _value_fn_kwargs(value_fn, extra)
    value_init = scalar_loss(value, "scale_by_zoom_linesearch", "value").astype(dtype)
    slope_init = _slope(updates, grad).astype(dtype)
    stepsize, new_value, new_grad, count, dec, curv = _zoom_search(
        value_fn, fn_kwargs, _given(params), updates, params, tree.cast_like(grad, state.grad),
        value_init, slope_init, state.learning_rate, hp,
        initial_guess_strategy=initial_guess_strategy, verbose=verbose)
    info = ZoomLinesearchInfo(count, dec, curv)
    scaled = tree.tree_map(lambda u: stepsize.astype(u.dtype) * u, updates)
    return scaled, ScaleByZoomLinesearchState(stepsize, new_value, new_grad, info, hparams)

  options: dict[str, Any] = dict(initial_guess_strategy=initial_guess_strategy, verbose=verbose)
  if approx_dec_rtol is None:
    options["approx_dec_rtol"] = None  # the Armijo condition alone; shown in repr
  return GradientTransformation(init, update, name="scale_by_zoom_linesearch", spec=spec,
                                options=options)


# ----------------------------------------------------------------------------
# The backtracking (Armijo) line search.


class BacktrackingLinesearchInfo(NamedTuple):
  """What the last backtracking line search did.

  Attributes:
    num_linesearch_steps: evaluations of ``value_fn``.
    decrease_error: :math:`\\max(0, f(\\theta + \\eta u) - (1 + \\delta) f(\\theta) - c \\eta
      \\langle u, \\nabla f \\rangle)` at the step taken: at most ``atol`` when the search
      found a step with sufficient decrease.
  """
  num_linesearch_steps: jax.Array
  decrease_error: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
  """State of :func:`scale_by_backtracking_linesearch` (optax's field names).

  Attributes:
    learning_rate: the step length :math:`\\eta` of the last step.
    value: the loss at the new parameters :math:`\\theta + \\eta u`, reusable
      as the next step's ``value`` (:func:`value_and_grad_from_state`).
    grad: the gradient there with ``store_grad=True``, else ``None``.
    info: :class:`BacktrackingLinesearchInfo`.
    hparams: the numeric arguments.
  """
  learning_rate: jax.Array
  value: jax.Array
  grad: Any
  info: BacktrackingLinesearchInfo
  hparams: HParams


class _Backtrack(NamedTuple):
  """The backtracking loop's variables."""
  learning_rate: jax.Array
  new_value: jax.Array
  new_grad: Any
  decrease_error: jax.Array
  iter_num: jax.Array


def _backtrack(value_fn: Callable[..., Any], fn_kwargs: dict[str, Any], given: Any,
               updates: Any, params: Any, grad: Any, value: jax.Array, slope: jax.Array,
               previous: jax.Array, hp: dict[str, jax.Array], *, store_grad: bool,
               verbose: bool) -> tuple[Any, ...]:
  """:func:`scale_by_backtracking_linesearch`'s search of checked arguments (``hp`` in
  the loss's dtype, ``previous`` the last step length): the step length, the loss (and
  gradient, with ``store_grad``) there, and the search's count and decrease error."""
  stage = "scale_by_backtracking_linesearch"
  dtype = previous.dtype
  loss = _of_stepped(value_fn, given)

  def f(p):
    return scalar_loss(loss(p, **fn_kwargs), stage, "value_fn's result").astype(dtype)

  grad_like = tree.zeros_like(params) if store_grad else None

  def decrease_error(learning_rate, new_value):
    error = new_value - (1 + hp["rtol"]) * value - learning_rate * hp["slope_rtol"] * slope
    return jnp.maximum(jnp.where(jnp.isnan(error), jnp.inf, error), 0)

  def keep_going(s: _Backtrack) -> jax.Array:
    return ~(s.decrease_error <= hp["atol"]) & (s.iter_num <= hp["max_backtracking_steps"])

  def backtrack(s: _Backtrack) -> _Backtrack:
    learning_rate = jnp.where(s.iter_num > 0, hp["decrease_factor"] * s.learning_rate,
                              s.learning_rate)
    new_params = _add_scaled(params, learning_rate, updates)
    if store_grad:
      new_value, pullback = jax.vjp(f, new_params)
      error = decrease_error(learning_rate, new_value)
      last = (error <= hp["atol"]) | (s.iter_num == hp["max_backtracking_steps"])
      # The gradient only where the search ends: one backward pass per step.
      new_grad = jax.lax.cond(last, lambda: tree.cast_like(pullback(jnp.ones((), dtype))[0],
                                                           s.new_grad),
                              lambda: s.new_grad)
    else:
      new_value = f(new_params)
      error = decrease_error(learning_rate, new_value)
      new_grad = s.new_grad
    return _Backtrack(learning_rate, new_value, new_grad, error, s.iter_num + 1)

  first = jnp.where(previous > 0,
                    jnp.minimum(hp["increase_factor"] * previous, hp["max_learning_rate"]),
                    hp["max_learning_rate"])
  start = _Backtrack(first, value, grad_like, jnp.asarray(jnp.inf, dtype),
                     jnp.zeros([], jnp.int32))
  final = jax.lax.while_loop(keep_going, backtrack, start)

  no_step = jnp.isinf(final.decrease_error)  # NaN or inf at every trial: do not move
  learning_rate = jnp.where(no_step, jnp.zeros((), dtype), final.learning_rate)
  new_value = jnp.where(no_step, value, final.new_value)
  new_grad = (tree.where(no_step, tree.cast_like(grad, grad_like), final.new_grad)
              if store_grad else None)
  if verbose:
    jax.lax.cond(final.decrease_error > hp["atol"], lambda: jax.debug.print(
        "scale_by_backtracking_linesearch: no step length with sufficient decrease: "
        "value {value}, slope {slope}, step length {eta}, decrease error {error}",
        value=value, slope=slope, eta=learning_rate, error=final.decrease_error,
        ordered=True), lambda: None)
  return learning_rate, new_value, new_grad, final.iter_num, final.decrease_error


_backtracking_search = _search_once_per_signature(_backtrack)


@checks_flags
def scale_by_backtracking_linesearch(max_backtracking_steps: int,
                                     slope_rtol: ScalarOrSchedule = 1e-4,
                                     decrease_factor: ScalarOrSchedule = 0.8,
                                     increase_factor: ScalarOrSchedule = 1.5,
                                     max_learning_rate: ScalarOrSchedule = 1.0,
                                     atol: ScalarOrSchedule = 0.0, rtol: ScalarOrSchedule = 0.0,
                                     store_grad: bool = False,
                                     verbose: bool = False) -> GradientTransformation:
  """Scales the direction by a step length with sufficient decrease (the Armijo condition).

  Along :math:`\\theta + \\eta u`, find :math:`\\eta` with

  .. math::
    f(\\theta + \\eta u) \\le (1 + \\delta) f(\\theta) + c\\, \\eta \\langle u, \\nabla f(\\theta)
      \\rangle + \\epsilon

  starting from :math:`\\eta_0 = \\min(\\gamma \\eta_{t-1}, \\eta_\\max)` and
  multiplying by :math:`\\beta` until it holds, for at most
  ``max_backtracking_steps`` reductions; :math:`u \\leftarrow \\eta u`. The
  direction must be a descent direction (:math:`\\langle u, \\nabla f \\rangle
  < 0`): chain it after ``sgd(1.0)`` or another stage whose output is one.
  Same arguments, defaults and semantics as
  ``optax.scale_by_backtracking_linesearch``: if no step passes, the last
  (smallest) one tried is taken all the same, and if the loss was NaN or
  infinite there, none is (:math:`\\eta = 0`).

  Call ``update(updates, state, params, value=f(params), grad=grad_f(params),
  value_fn=f, **fn_kwargs)``; keyword arguments that ``value_fn`` accepts
  (the batch) are passed to it, the others are left to other stages of the
  chain (optax raises on them; in a gradtx chain every stage gets them).

  Run eagerly (outside ``jax.jit``), the search is one compiled program per
  ``value_fn`` (by its identity), as :func:`scale_by_zoom_linesearch`'s: pass the same
  function at every step, with what changes (the batch) as keyword arguments.

  Args:
    max_backtracking_steps: reductions of :math:`\\eta` at most per step
      (evaluations of ``value_fn``: one more), an integer :math:`\\ge 0`.
    slope_rtol: :math:`c \\in [0, 1)`, default 1e-4.
    decrease_factor: :math:`\\beta \\in (0, 1)`, default 0.8.
    increase_factor: :math:`\\gamma \\ge 1`, default 1.5: the first trial is
      the last step length times :math:`\\gamma` (``math.inf``: always
      :math:`\\eta_\\max`; 1: the last step length).
    max_learning_rate: :math:`\\eta_\\max > 0`, finite, default 1.
    atol: :math:`\\epsilon \\ge 0`, default 0.
    rtol: :math:`\\delta \\ge 0`, default 0.
    store_grad: also compute the gradient at the new parameters and keep it
      in the state (with the loss there), for :func:`value_and_grad_from_state`.
    verbose: print the errors when no step with sufficient decrease is found.

  Conventions: after a step with :math:`\\eta = 0` (the loss NaN or infinite
  at every trial) optax starts the next search from
  :math:`\\gamma \\cdot 0 = 0` and never moves again; gradtx starts it from
  :math:`\\eta_\\max`. The state's ``value`` (and ``grad``) after such a step
  are those at the unmoved parameters, not optax's NaN. The loss, slope and
  step length are in the widest real dtype of the params' leaves (optax:
  the first leaf's, so a bfloat16 leaf first rounds a float32 loss).

  References:
    Armijo, *Minimization of functions having Lipschitz continuous first
    partial derivatives*, Pacific J. Math. 1966; Vaswani et al., *Painless
    Stochastic Gradient: Interpolation, Line-Search, and Convergence Rates*,
    NeurIPS 2019; Nocedal & Wright, *Numerical Optimization*, 1999, Algorithm 3.1.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> def f(params): return jnp.sum(params ** 2)
    >>> tx = gtx.chain(sgd=gtx.sgd(1.0),
    ...                ls=gtx.scale_by_backtracking_linesearch(max_backtracking_steps=15))
    >>> params = jnp.array([1.0, 2.0, 3.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   value, grad = jax.value_and_grad(f)(params)
    ...   updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)
    ...   params = gtx.apply_updates(params, updates)
    ...   print(f"{f(params):.2e}")
    5.04e+00
    1.81e+00
    6.53e-01
    >>> round(float(gtx.hparams(state)["ls.decrease_factor"]), 6)
    0.8
  """
  stage = "scale_by_backtracking_linesearch"
  spec = HParamSpec(
      stage, max_backtracking_steps=(max_backtracking_steps, NONNEGATIVE_INT),
      slope_rtol=(slope_rtol, Range(0.0, 1.0, high_open=True)),
      decrease_factor=(decrease_factor, Range(0.0, 1.0, low_open=True, high_open=True)),
      # increase_factor may be inf (every search starts from max_learning_rate), so
      # max_learning_rate is finite: the first trial step, min(gamma * eta, eta_max), or
      # eta_max after a step with eta = 0, must be.
      increase_factor=(increase_factor, Range(1.0, math.inf)),
      max_learning_rate=(max_learning_rate, POSITIVE),
      atol=(atol, NONNEGATIVE), rtol=(rtol, NONNEGATIVE))

  def init(params):
    _check_inexact_params(stage, params)
    dtype = _value_dtype(params)
    info = BacktrackingLinesearchInfo(jnp.zeros([], jnp.int32), jnp.asarray(jnp.inf, dtype))
    return ScaleByBacktrackingLinesearchState(
        jnp.ones((), dtype), jnp.asarray(jnp.inf, dtype),
        tree.zeros_like(params) if store_grad else None, info, spec.init())

  def update(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
    check_state(stage, state, ScaleByBacktrackingLinesearchState)
    params = require_params(stage, params)
    missing = [n for n, v in (("value", value), ("grad", grad), ("value_fn", value_fn))
               if v is None]
    if missing:
      raise missing_extra_argument(
          f"{stage} needs {', '.join(missing)}: call update(updates, state, params, "
          "value=f(params), grad=grad_f(params), value_fn=f)")
    grad = tree.mask_no_gradient(grad)  # a None as the updates' (given as jax.grad gives it)
    tree.check_structure(params, updates, "params", "updates", stage=stage)
    tree.check_structure(params, grad, "params", "grad", stage=stage)
    h, hparams = spec.step(state.hparams)
    dtype = state.learning_rate.dtype
    hp = {k: v if k == "max_backtracking_steps" else v.astype(dtype) for k, v in h.items()}
    fn_kwargs = _value_fn_kwargs(value_fn, extra)
    value = scalar_loss(value, stage, "value").astype(dtype)
    slope = _slope(updates, grad).astype(dtype)
    learning_rate, new_value, new_grad, count, error = _backtracking_search(
        value_fn, fn_kwargs, _given(params), updates, params, grad, value, slope,
        state.learning_rate, hp, store_grad=store_grad, verbose=verbose)
    info = BacktrackingLinesearchInfo(count, error)
    scaled = tree.tree_map(lambda u: learning_rate.astype(u.dtype) * u, updates)
    return scaled, ScaleByBacktrackingLinesearchState(learning_rate, new_value, new_grad, info,
                                                      hparams)

  return GradientTransformation(init, update, name=stage, spec=spec, options=dict(
      store_grad=store_grad, verbose=verbose))


# ----------------------------------------------------------------------------
# Reusing the loss and gradient a line search computed.


_LINESEARCH_STATES = (ScaleByBacktrackingLinesearchState, ScaleByZoomLinesearchState)


def _linesearch_state(state: Any) -> Any:
  """The one line search stage state inside ``state``, wherever it sits."""
  is_linesearch = lambda x: isinstance(x, _LINESEARCH_STATES)  # noqa: E731
  found = [(path, x) for path, x in
           jax.tree_util.tree_flatten_with_path(state, is_leaf=is_linesearch)[0]
           if is_linesearch(x)]
  if not found:
    raise StructureError(
        "value_and_grad_from_state: the state holds no line search state; pass the state "
        "of a chain with scale_by_backtracking_linesearch(..., store_grad=True) or "
        "scale_by_zoom_linesearch (lbfgs)")
  if len(found) > 1:
    where = ", ".join(tree.keystr(path) for path, _ in found)
    raise StructureError(
        f"value_and_grad_from_state: the state holds {len(found)} line search states (at "
        f"{where}); pass the state of the one whose value and gradient to reuse")
  return found[0][1]


def value_and_grad_from_state(value_fn: Callable[..., Any]) -> Callable[..., tuple[Any, Any]]:
  """:func:`jax.value_and_grad` that reuses the loss and gradient a line search stored.

  .. math::
    (f(\\theta), \\nabla f(\\theta)) = \\begin{cases}
      (\\text{state.value}, \\text{state.grad}) & \\text{state.value finite} \\\\
      \\texttt{jax.value\\_and\\_grad}(f)(\\theta) & \\text{otherwise (the first step)}
    \\end{cases}

  A line search evaluates the loss (and, with ``store_grad``, the gradient)
  at the parameters it moves to; for a deterministic loss these are the next
  step's ``value`` and ``grad``. The returned function
  ``value_and_grad(params, *args, state=state, **kwargs)`` finds the line
  search stage's state by type wherever it sits in ``state`` (a named chain,
  a nested chain, a wrapper): a :func:`scale_by_backtracking_linesearch` with
  ``store_grad=True`` or a :func:`scale_by_zoom_linesearch` (as in
  :func:`gradtx.lbfgs`). Same as ``optax.value_and_grad_from_state``. The
  reused values are those at the parameters the line search moved to: apply
  the updates unchanged (no stage after the line search that changes them).
  Where the params hold ``None``, so does the gradient, as
  :func:`jax.value_and_grad` gives it.

  Args:
    value_fn: the loss, a function of the params (and ``*args``,
      ``**kwargs``) returning a scalar.

  Raises:
    StructureError: when the state holds no line search state or more than one.
    ValueError: when the backtracking line search was built without ``store_grad``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> def f(params): return jnp.sum(params ** 2)
    >>> tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(
    ...     max_backtracking_steps=15, store_grad=True))
    >>> value_and_grad = gtx.value_and_grad_from_state(f)
    >>> params = jnp.array([1.0, 2.0, 3.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   value, grad = value_and_grad(params, state=state)
    ...   updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)
    ...   params = gtx.apply_updates(params, updates)
    ...   print(f"{f(params):.2e}")
    5.04e+00
    1.81e+00
    6.53e-01
  """
  check_callable("value_and_grad_from_state", "value_fn", value_fn,
                 "the loss, a function of the params")

  def value_and_grad(params: Any, *fn_args: Any, state: Any, **fn_kwargs: Any
                     ) -> tuple[Any, Any]:
    stage_state = _linesearch_state(state)
    value, grad = stage_state.value, stage_state.grad
    if grad is None:
      raise ValueError("value_and_grad_from_state: the line search keeps no gradient; build "
                       "it with scale_by_backtracking_linesearch(..., store_grad=True)")
    grad = tree.thaw(grad)  # None where the params hold None, as jax.value_and_grad gives it
    tree.check_structure(grad, params, "the line search's state.grad", "params")

    def stored(*_):
      return value, grad

    def compute(p, args, kwargs):
      new_value, new_grad = jax.value_and_grad(value_fn)(p, *args, **kwargs)
      return (jnp.reshape(jnp.asarray(new_value), value.shape).astype(value.dtype),
              tree.cast_like(new_grad, grad))

    reuse = jnp.isfinite(value)
    return branch(reuse, stored, compute, params, fn_args, fn_kwargs)

  return value_and_grad
