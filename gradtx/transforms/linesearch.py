"""Quasi-Newton directions and line searches: L-BFGS and the zoom (strong Wolfe) line search.

:func:`scale_by_lbfgs` turns gradients into an approximate Newton direction
from the last few parameter and gradient differences; a later
:func:`scale_by_zoom_linesearch` stage picks the step length along that
direction by evaluating the loss. The line search reads the extra keyword
arguments ``value`` (the loss at the params), ``grad`` (its gradient) and
``value_fn`` (the loss as a function of the params) that the caller passes to
``update``, as optax's does.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics, tree
from gradtx.core import (NONNEGATIVE, POSITIVE, POSITIVE_INT, GradientTransformation,
                         HParams, HParamSpec, Range, check_value, require_params)
from gradtx.errors import MissingArgumentError
from gradtx.numerics import safe_increment

__all__ = ["ScaleByLBFGSState", "ScaleByZoomLinesearchState", "ZoomLinesearchInfo",
           "scale_by_lbfgs", "scale_by_zoom_linesearch"]


def _vdot(a: Any, b: Any) -> jax.Array:
  """:math:`\\langle a, b \\rangle` over the whole tree (real part)."""
  terms = [jnp.vdot(x, y).real for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
  return sum(terms[1:], terms[0])


def _add_scaled(x: Any, alpha: jax.Array, y: Any) -> Any:
  """Leafwise ``x + alpha * y`` in ``x``'s dtypes."""
  return tree.tree_map(lambda a, b: (a + alpha.astype(a.dtype) * b.astype(a.dtype)), x, y)


def _value_dtype(params: Any) -> jnp.dtype:
  return jnp.real(jnp.zeros((), jax.tree.leaves(params)[0].dtype)).dtype


# ----------------------------------------------------------------------------
# L-BFGS.


def _newest_to_oldest(q: Any, pair: tuple) -> tuple[Any, jax.Array]:
  """The first loop of the two-loop recursion: :math:`\\alpha_i = \\rho_i \\langle s_i, q\\rangle`,
  :math:`q \\leftarrow q - \\alpha_i y_i`."""
  s_i, y_i, rho_i = pair
  alpha = rho_i * _vdot(s_i, q).astype(rho_i.dtype)
  return _add_scaled(q, -alpha, y_i), alpha


def _oldest_to_newest(r: Any, pair_alpha: tuple) -> tuple[Any, None]:
  """The second loop: :math:`\\beta = \\rho_i \\langle y_i, r\\rangle`,
  :math:`r \\leftarrow r + (\\alpha_i - \\beta) s_i`."""
  s_i, y_i, rho_i, alpha = pair_alpha
  beta = rho_i * _vdot(y_i, r).astype(rho_i.dtype)
  return _add_scaled(r, alpha - beta, s_i), None


class ScaleByLBFGSState(NamedTuple):
  """State of :func:`scale_by_lbfgs`.

  ``params`` and ``updates`` are those of the last step; ``diff_params_memory``
  (:math:`s_i`) and ``diff_updates_memory`` (:math:`y_i`) stack the last
  ``memory_size`` differences along a leading axis, ``weights_memory`` holds
  :math:`\\rho_i = 1 / \\langle s_i, y_i \\rangle`.
  """
  count: jax.Array
  params: Any
  updates: Any
  diff_params_memory: Any
  diff_updates_memory: Any
  weights_memory: jax.Array
  hparams: HParams


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

  Args:
    memory_size: :math:`m \\ge 1`, the number of pairs kept, default 10.
    scale_init_precond: scale the initial inverse Hessian by :math:`\\gamma_k`.

  References:
    Nocedal & Wright, *Numerical Optimization*, 1999, Algorithms 7.4 and 7.5.
  """
  check_value("scale_by_lbfgs", "memory_size", memory_size, POSITIVE_INT)
  spec = HParamSpec("scale_by_lbfgs")

  def init(params):
    stacked = tree.tree_map(lambda p: jnp.zeros((memory_size,) + jnp.shape(p),
                                                jnp.asarray(p).dtype), params)
    return ScaleByLBFGSState(numerics.zero_count(), tree.zeros_like(params),
                             tree.zeros_like(params), stacked, stacked,
                             jnp.zeros((memory_size,), _value_dtype(params)), spec.init())

  def update(updates, state, params=None, **extra):
    del extra
    params = require_params("scale_by_lbfgs", params)
    tree.check_structure(state.params, updates, "state.params", "updates")
    tree.check_structure(state.params, params, "state.params", "params")
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
    sy = _vdot(s, y).astype(weight_dtype)
    rho = jnp.where(sy == 0, jnp.zeros_like(sy), 1 / jnp.where(sy == 0, 1, sy))
    newest = (k - 1) % memory_size
    s_memory = tree.tree_map(lambda M, x: M.at[newest].set(x.astype(M.dtype)),
                             state.diff_params_memory, s)
    y_memory = tree.tree_map(lambda M, x: M.at[newest].set(x.astype(M.dtype)),
                             state.diff_updates_memory, y)
    rho_memory = state.weights_memory.at[newest].set(rho)

    # 2. The scale of the initial inverse Hessian.
    if scale_init_precond:
      yy = _vdot(y, y).astype(weight_dtype)
      gamma = jnp.where(yy > 0, sy / jnp.where(yy > 0, yy, 1), 1)
      g_norm = jnp.sqrt(_vdot(updates, updates)).astype(weight_dtype)
      gamma = jnp.where(first, jnp.minimum(1, 1 / g_norm), gamma)
    else:
      gamma = jnp.ones((), weight_dtype)

    # 3. The two-loop recursion over the pairs, oldest to newest (empty slots have rho = 0).
    order = (k % memory_size + jnp.arange(memory_size, dtype=k.dtype)) % memory_size
    pairs = (tree.tree_map(lambda M: M[order], s_memory),
             tree.tree_map(lambda M: M[order], y_memory), rho_memory[order])
    q, alphas = jax.lax.scan(_newest_to_oldest, updates, pairs, reverse=True)
    r = tree.scale(q, gamma)
    direction, _ = jax.lax.scan(_oldest_to_newest, r, (*pairs, alphas))
    direction = tree.cast_like(direction, updates)
    return direction, ScaleByLBFGSState(safe_increment(k), params, updates, s_memory, y_memory,
                                        rho_memory, hparams)

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
  count: jax.Array
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


def scale_by_zoom_linesearch(
    max_linesearch_steps: int, max_learning_rate: float | None = None, tol: float = 0.0,
    increase_factor: float = 2.0, slope_rtol: float = 1e-4, curv_rtol: float = 0.9,
    approx_dec_rtol: float | None = 1e-6, stepsize_precision: float = 1e-5,
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

  Args:
    max_linesearch_steps: evaluations of ``value_fn`` at most, per step.
    max_learning_rate: the largest step length, or ``None`` for no bound.
    tol: :math:`\\delta \\ge 0`, slack on both conditions, default 0.
    increase_factor: growth of the trial step while searching, default 2.
    slope_rtol: :math:`c_1 \\in (0, 1)`, default 1e-4.
    curv_rtol: :math:`c_2 \\in (0, 1]`, default 0.9.
    approx_dec_rtol: :math:`\\epsilon_f \\ge 0`, default 1e-6, or ``None`` for
      the Armijo condition alone.
    stepsize_precision: stop zooming when the interval is shorter than this
      and a step with sufficient decrease is known, default 1e-5.
    initial_guess_strategy: first trial step ``"one"`` (quasi-Newton
      directions) or ``"keep"`` the last accepted one.
    verbose: print the errors when the search fails.

  References:
    Nocedal & Wright, *Numerical Optimization*, 1999, Algorithms 3.5 and 3.6;
    Hager & Zhang, *Algorithm 851: CG_DESCENT*, ACM TOMS 2006.
  """
  if initial_guess_strategy not in ("one", "keep"):
    raise ValueError("scale_by_zoom_linesearch: initial_guess_strategy must be 'one' or "
                     f"'keep', got {initial_guess_strategy!r}")
  entries = dict(
      max_linesearch_steps=(max_linesearch_steps, POSITIVE_INT),
      max_learning_rate=(float("inf") if max_learning_rate is None else max_learning_rate,
                         POSITIVE),
      tol=(tol, NONNEGATIVE), increase_factor=(increase_factor, Range(1.0, low_open=True)),
      slope_rtol=(slope_rtol, Range(0.0, 1.0, low_open=True, high_open=True)),
      curv_rtol=(curv_rtol, Range(0.0, 1.0, low_open=True)),
      stepsize_precision=(stepsize_precision, NONNEGATIVE))
  if approx_dec_rtol is not None:
    entries["approx_dec_rtol"] = (approx_dec_rtol, NONNEGATIVE)
  spec = HParamSpec("scale_by_zoom_linesearch", **entries)

  def init(params):
    dtype = _value_dtype(params)
    info = ZoomLinesearchInfo(jnp.zeros([], jnp.int32), jnp.asarray(jnp.inf, dtype),
                              jnp.asarray(jnp.inf, dtype))
    return ScaleByZoomLinesearchState(jnp.ones((), dtype), jnp.asarray(jnp.inf, dtype),
                                      tree.zeros_like(params), info, spec.init())

  def update(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
    params = require_params("scale_by_zoom_linesearch", params)
    missing = [n for n, v in (("value", value), ("grad", grad), ("value_fn", value_fn))
               if v is None]
    if missing:
      raise MissingArgumentError(
          f"scale_by_zoom_linesearch needs {', '.join(missing)}: call update(updates, state, "
          "params, value=f(params), grad=grad_f(params), value_fn=f)")
    tree.check_structure(state.grad, updates, "state.grad", "updates")
    h, hparams = spec.step(state.hparams)
    dtype = state.learning_rate.dtype
    hp = {k: v.astype(dtype) if k != "max_linesearch_steps" else v for k, v in h.items()}
    accepted = inspect.signature(value_fn).parameters
    fn_kwargs = {k: v for k, v in extra.items() if k in accepted}
    value_and_grad = jax.value_and_grad(value_fn)

    value_init = jnp.asarray(value).astype(dtype)
    slope_init = _vdot(updates, grad).astype(dtype)

    def on_line(stepsize):
      """phi(eta), grad f and phi'(eta) at theta + eta u."""
      value_step, grad_step = value_and_grad(_add_scaled(params, stepsize, updates), **fn_kwargs)
      return (jnp.asarray(value_step).astype(dtype), tree.cast_like(grad_step, grad),
              _vdot(grad_step, updates).astype(dtype))

    def decrease_error(stepsize, value_step, slope_step):
      error = value_step - value_init - hp["slope_rtol"] * stepsize * slope_init
      if approx_dec_rtol is not None:
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
      guess = state.learning_rate if initial_guess_strategy == "keep" else jnp.ones((), dtype)
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
                     curv, interval_found, done, failed, *low, *high, low[0], low[1], *safe)

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
    grad = tree.cast_like(grad, state.grad)
    start = _Search(jnp.zeros([], jnp.int32), zero, value_init, grad, slope_init, inf, inf,
                    false, false, false, zero, value_init, slope_init, zero, value_init,
                    slope_init, zero, value_init, zero, value_init, grad)
    final = jax.lax.while_loop(lambda s: ~(s.done | s.failed), body, start)
    info = ZoomLinesearchInfo(final.count, final.decrease_error, final.curvature_error)
    scaled = tree.tree_map(lambda u: final.stepsize.astype(u.dtype) * u, updates)
    return scaled, ScaleByZoomLinesearchState(final.stepsize, final.value, final.grad, info,
                                              hparams)

  options = dict(initial_guess_strategy=initial_guess_strategy, verbose=verbose)
  if approx_dec_rtol is None:
    options["approx_dec_rtol"] = None  # the Armijo condition alone; shown in repr
  return GradientTransformation(init, update, name="scale_by_zoom_linesearch", spec=spec,
                                options=options)
