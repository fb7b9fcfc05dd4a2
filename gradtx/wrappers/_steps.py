"""Steps that may not happen: skipped when not finite, accumulated over mini-batches."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import (NONNEGATIVE_INT, POSITIVE_INT, GradientTransformation, HParams,
                         HParamSpec, as_transformation, check_callable, check_state, checks_flags)
from gradtx.errors import StructureError
from gradtx.numerics import compute_dtype, safe_increment
from gradtx.wrappers._common import PyTree, _run_if


# ----------------------------------------------------------------------------
# Steps that may not happen.


class ApplyIfFiniteState(NamedTuple):
  """State of :func:`apply_if_finite` (optax's field names).

  Attributes:
    notfinite_count: consecutive steps with a NaN or Inf so far (0 after a finite one).
    last_finite: whether the last step's updates were finite.
    total_notfinite: all steps with a NaN or Inf since ``init``.
    inner_state: the wrapped transformation's state.
    hparams: ``max_consecutive_errors``.
  """
  notfinite_count: jax.Array
  last_finite: jax.Array
  total_notfinite: jax.Array
  inner_state: Any
  hparams: HParams


def apply_if_finite(inner: GradientTransformation,
                    max_consecutive_errors: int) -> GradientTransformation:
  """Skips a step whose updates hold a NaN or an Inf.

  .. math::
    (u, s) = \\begin{cases} \\text{inner}(g, s) & g \\text{ finite, or } n > N \\\\
      (0, s) & \\text{otherwise} \\end{cases}

  where :math:`n` counts consecutive non-finite steps, this one included. A
  skipped step returns zero updates and leaves the inner state bitwise
  unchanged, so the params do not move; after more than
  :math:`N` = ``max_consecutive_errors`` bad steps in a row it gives up and
  applies the update (NaN and all), as ``optax.apply_if_finite`` does, so a
  run that is broken for good does not fail silently.

  Args:
    inner: the transformation to protect (usually the whole optimizer).
    max_consecutive_errors: :math:`N`, an integer :math:`\\ge 0`; a
      hyperparameter, settable by name.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.apply_if_finite(gtx.sgd(0.1), max_consecutive_errors=2)
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = tx.update(jnp.array([1.0, jnp.nan]), state)
    >>> updates, int(state.notfinite_count), bool(state.last_finite)
    (Array([0., 0.], dtype=float32), 1, False)
  """
  inner = as_transformation(inner, "apply_if_finite", "inner")
  spec = HParamSpec("apply_if_finite",
                    max_consecutive_errors=(max_consecutive_errors, NONNEGATIVE_INT))

  def init(params):
    # Two counters, two buffers: a state that holds one array twice cannot be donated.
    return ApplyIfFiniteState(jnp.zeros([], jnp.int32), jnp.array(True), jnp.zeros([], jnp.int32),
                              inner.init(params), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("apply_if_finite", state, ApplyIfFiniteState)
    h, hparams = spec.step(state.hparams)
    finite = tree.all_finite(updates)
    notfinite_count = jnp.where(finite, jnp.zeros([], jnp.int32),
                                safe_increment(state.notfinite_count))
    run = finite | (notfinite_count > h["max_consecutive_errors"])
    updates, inner_state = _run_if(run, inner, updates, state.inner_state, params, extra)
    total = jnp.where(finite, state.total_notfinite, safe_increment(state.total_notfinite))
    return updates, ApplyIfFiniteState(notfinite_count, finite, total, inner_state, hparams)

  return GradientTransformation(init, update, name="apply_if_finite", spec=spec,
                                options=dict(inner=inner))


class MultiStepsState(NamedTuple):
  """State of :func:`multi_steps` (optax's ``MultiStepsState``; ``inner_state`` is
  optax's ``inner_opt_state``).

  Attributes:
    mini_step: mini-batches accumulated since the last inner step.
    gradient_step: inner steps taken.
    inner_state: the wrapped transformation's state.
    acc_grads: the accumulated gradients (their mean, or sum).
    skip_state: what ``should_skip_update_fn`` returned last, for monitoring.
    hparams: ``every_k_schedule``, the number of mini-batches per step used last.
  """
  mini_step: jax.Array
  gradient_step: jax.Array
  inner_state: Any
  acc_grads: Any
  skip_state: Any
  hparams: HParams

  def has_updated(self) -> jax.Array:
    """Whether the last call took an inner step (optax's ``MultiSteps.has_updated``)."""
    return jnp.logical_and(self.mini_step == 0, self.gradient_step > 0)


def _never_skip(updates: PyTree, gradient_step: jax.Array, params: PyTree):
  del updates, gradient_step, params
  return jnp.array(False), ()


@checks_flags
def multi_steps(opt: GradientTransformation, every_k_schedule: int | Callable[[jax.Array], Any],
                use_grad_mean: bool = True,
                should_skip_update_fn: Callable[..., tuple[jax.Array, Any]] | None = None,
                accumulator_dtype: Any = jnp.float32) -> GradientTransformation:
  """Gradient accumulation: one step of ``opt`` per ``k`` mini-batches.

  .. math::
    a_j = a_{j-1} + \\frac{g_j - a_{j-1}}{j}, \\qquad
    u_j = \\begin{cases} \\text{opt}(a_k) & j = k \\\\ 0 & j < k \\end{cases}

  The mini-batch gradients are averaged (Welford's running mean, stable in
  low precision; summed with ``use_grad_mean=False``); every ``k``-th call
  passes the mean to ``opt`` and returns its update, the calls in between
  return zeros and leave ``opt``'s state untouched. So ``k`` calls on ``k``
  mini-batches equal one call on their mean gradient. Same arguments and
  semantics as ``optax.MultiSteps``, as a transformation, except after a
  NaN or infinite mini-batch that is not skipped: the step it ends passes
  the NaN on, as optax's does, and the next window starts from zeros, where
  optax's accumulator (reset by multiplying it by 0) stays NaN for good.
  Pass ``should_skip_update_fn=gradtx.skip_not_finite`` to leave such a
  mini-batch out instead.

  Args:
    opt: the transformation that takes the accumulated steps.
    every_k_schedule: :math:`k`, an integer :math:`\\ge 1` (a hyperparameter,
      settable by name) or a callable of the inner step count returning one
      (to grow the batch during training).
    use_grad_mean: average the gradients (default) or sum them.
    should_skip_update_fn: ``fn(updates, gradient_step, params) -> (skip,
      info)``, such as :func:`gradtx.skip_not_finite`; a skipped mini-batch is
      as if it never happened, and ``info`` is kept in ``skip_state``.
    accumulator_dtype: dtype of the accumulated gradients between calls, default
      float32. Each call adds its mini-batch in the wider of this and the
      gradients' dtype, as optax does, so the step takes the last mini-batch
      (with :math:`k = 1`, the gradient itself) at the gradients' precision.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.multi_steps(gtx.sgd(1.0), every_k_schedule=2)
    >>> state = tx.init(jnp.zeros(1))
    >>> u1, state = tx.update(jnp.array([1.0]), state)
    >>> u2, state = tx.update(jnp.array([3.0]), state)
    >>> u1, u2, bool(state.has_updated())
    (Array([0.], dtype=float32), Array([-2.], dtype=float32), True)
  """
  opt = as_transformation(opt, "multi_steps", "opt")
  spec = HParamSpec("multi_steps", every_k_schedule=(every_k_schedule, POSITIVE_INT))
  if should_skip_update_fn is not None:
    check_callable("multi_steps", "should_skip_update_fn", should_skip_update_fn,
                   "None or a function fn(updates, gradient_step, params) -> (skip, state)",
                   " (gtx.skip_not_finite skips a step whose gradients are not finite)")
  skip_fn = should_skip_update_fn or _never_skip

  def hparams_at(k: jax.Array, hparams: HParams, gradient_step: jax.Array) -> HParams:
    # A schedule of k follows the inner step count, not the call count.
    return HParams({"every_k_schedule": k},
                   {"every_k_schedule": hparams.slot("every_k_schedule")}, gradient_step)

  def init(params):
    gradient_step = jnp.zeros([], jnp.int32)
    _, skip_state = skip_fn(tree.zeros_like(params), gradient_step, params)
    hparams = spec.init()
    if spec.scheduled:
      hparams = hparams_at(hparams["every_k_schedule"], hparams, gradient_step)
    return MultiStepsState(jnp.zeros([], jnp.int32), gradient_step, opt.init(params),
                           tree.accumulator_like(params, dtype=accumulator_dtype), skip_state,
                           hparams)

  def update(updates, state, params=None, **extra):
    check_state("multi_steps", state, MultiStepsState)
    tree.check_structure(state.acc_grads, updates, "state.acc_grads", "updates",
                         stage="multi_steps")
    if spec.scheduled:
      k = jnp.asarray(every_k_schedule(state.gradient_step)).astype(jnp.int32)
    else:
      k = state.hparams["every_k_schedule"]
    skip, skip_state = skip_fn(updates, state.gradient_step, params)
    skip = jnp.asarray(skip)
    if skip.dtype != jnp.bool_ or skip.shape != ():
      raise StructureError("multi_steps: should_skip_update_fn must return a scalar bool "
                           f"first, got dtype {skip.dtype} and shape {skip.shape}")
    accept = ~skip
    j = state.mini_step

    def accumulate(g, a):
      # In the wider of the two dtypes, as optax's: the step takes this mini-batch at the
      # gradients' precision where the accumulator holds less (float64 grads under x64,
      # float32 by default), and with k = 1 the gradient itself.
      wide = compute_dtype(g, a)
      g, a = g.astype(wide), a.astype(wide)
      if use_grad_mean:
        return a + (g - a) / (j + 1).astype(wide)
      return a + g

    acc = tree.tree_map(accumulate, updates, state.acc_grads)
    emit = accept & (j >= k - 1)
    updates, inner_state = _run_if(emit, opt, tree.cast_like(acc, updates), state.inner_state,
                                   params, extra)
    acc = tree.where(accept, tree.cast_like(acc, state.acc_grads), state.acc_grads)
    acc_grads = tree.tree_map(lambda a: jnp.where(emit, jnp.zeros_like(a), a), acc)
    mini_step = jnp.where(emit, jnp.zeros([], jnp.int32), jnp.where(accept, safe_increment(j), j))
    gradient_step = jnp.where(emit, safe_increment(state.gradient_step), state.gradient_step)
    hparams = hparams_at(k, state.hparams, gradient_step) if spec.scheduled else state.hparams
    return updates, MultiStepsState(mini_step, gradient_step, inner_state, acc_grads,
                                    skip_state, hparams)

  return GradientTransformation(init, update, name="multi_steps", spec=spec, options=dict(
      opt=opt, use_grad_mean=use_grad_mean, should_skip_update_fn=should_skip_update_fn,
      accumulator_dtype=accumulator_dtype))


class MultiSteps:
  """Gradient accumulation as optax's class: :func:`multi_steps` behind ``optax.MultiSteps``'s API.

  The same rule, state and arguments as :func:`multi_steps` (which this
  class calls; it holds no second implementation): one step of ``opt`` per
  :math:`k` mini-batches, on their mean (or sum) gradient, zero updates in
  between. For code written against ``optax.MultiSteps``: ``init``,
  ``update``, :meth:`has_updated`, :meth:`gradient_transformation` and
  ``inner_opt``. Prefer :func:`multi_steps` in new code: it is a
  transformation, so it is a stage of a chain and shows its
  hyperparameters by name.

  Args:
    opt: the transformation that takes the accumulated steps.
    every_k_schedule: :math:`k`, an integer :math:`\\ge 1` or a callable of
      the inner step count returning one.
    use_grad_mean: average the gradients (default) or sum them.
    should_skip_update_fn: ``fn(updates, gradient_step, params) -> (skip,
      info)``, such as :func:`gradtx.skip_not_finite`, default ``None``.
    accumulator_dtype: dtype of the accumulated gradients, default float32.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> opt = gtx.MultiSteps(gtx.sgd(1.0), every_k_schedule=2)
    >>> state = opt.init(jnp.zeros(1))
    >>> u1, state = opt.update(jnp.array([1.0]), state)
    >>> u2, state = opt.update(jnp.array([3.0]), state)
    >>> u1, u2, bool(opt.has_updated(state))
    (Array([0.], dtype=float32), Array([-2.], dtype=float32), True)
  """

  def __init__(self, opt: GradientTransformation,
               every_k_schedule: int | Callable[[jax.Array], Any],
               use_grad_mean: bool = True,
               should_skip_update_fn: Callable[..., tuple[jax.Array, Any]] | None = None,
               accumulator_dtype: Any = jnp.float32):
    self._tx = multi_steps(opt, every_k_schedule, use_grad_mean, should_skip_update_fn,
                           accumulator_dtype)

  @property
  def inner_opt(self) -> GradientTransformation:
    """The wrapped transformation."""
    return self._tx.options["opt"]

  def init(self, params: PyTree) -> MultiStepsState:
    """The state of :func:`multi_steps` for ``params``."""
    return self._tx.init(params)

  def update(self, updates: PyTree, state: MultiStepsState, params: PyTree | None = None,
             **extra_args: Any) -> tuple[PyTree, MultiStepsState]:
    """Accumulates ``updates``; every :math:`k`-th call returns ``opt``'s update, else zeros."""
    return self._tx.update(updates, state, params, **extra_args)

  def has_updated(self, state: MultiStepsState) -> jax.Array:
    """Whether the last call took an inner step (see :meth:`MultiStepsState.has_updated`)."""
    check_state("MultiSteps.has_updated", state, MultiStepsState)
    return state.has_updated()

  def gradient_transformation(self) -> GradientTransformation:
    """The transformation itself, as :func:`multi_steps` builds it."""
    return self._tx

  def __repr__(self) -> str:
    return f"MultiSteps({self._tx!r})"

  # Equal as its transformation is (GradientTransformation.__eq__): a copy is the same
  # optimizer, and a jitted step taking it as static data is not traced again.
  def __eq__(self, other: object) -> bool:
    if not isinstance(other, MultiSteps):
      return NotImplemented
    return self._tx == other._tx

  def __hash__(self) -> int:
    return hash(self._tx)


class ApplyEvery(NamedTuple):
  """State of :func:`apply_every` (optax's ``ApplyEvery``).

  Attributes:
    count: calls since the last emitted sum, modulo :math:`k`.
    grad_acc: the sum of the updates since the last emitted one.
    hparams: ``k``.
  """
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  grad_acc: Any
  hparams: HParams


def apply_every(k: int = 1) -> GradientTransformation:
  """Sums the updates and emits the sum every ``k`` calls, zeros in between.

  With :math:`c = t \\bmod k` at call :math:`t = 0, 1, \\ldots`,

  .. math::
    a_t = \\begin{cases} g_t & c = 0 \\\\ a_{t-1} + g_t & c > 0 \\end{cases}, \\qquad
    u_t = \\begin{cases} a_t & c = k - 1 \\\\ 0 & \\text{otherwise} \\end{cases}

  Same argument and semantics as ``optax.apply_every``. Unlike
  :func:`multi_steps` it is a stage like any other: stages before it in a
  chain still update their state at every call, so it is not the same as
  one step on a :math:`k`-times larger batch (use :func:`multi_steps` for
  that). Unlike optax, an accumulated NaN does not outlive its period
  (optax multiplies the discarded sum by 0, which keeps a NaN).

  Args:
    k: :math:`k`, an integer :math:`\\ge 1`, default 1; a hyperparameter,
      settable by name.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.apply_every(k=2)
    >>> state = tx.init(jnp.zeros(1))
    >>> u1, state = tx.update(jnp.array([1.0]), state)
    >>> u2, state = tx.update(jnp.array([3.0]), state)
    >>> u1, u2
    (Array([0.], dtype=float32), Array([4.], dtype=float32))
  """
  spec = HParamSpec("apply_every", k=(k, POSITIVE_INT))

  def init(params):
    return ApplyEvery(jnp.zeros([], jnp.int32), tree.zeros_like(params), spec.init())

  def update(updates, state, params=None, **extra):
    del params, extra
    check_state("apply_every", state, ApplyEvery)
    tree.check_structure(state.grad_acc, updates, "state.grad_acc", "updates", stage="apply_every")
    h, hparams = spec.step(state.hparams)
    c = state.count % h["k"]
    restart, emit = c == 0, c == h["k"] - 1

    def accumulate(g, a):
      g = g.astype(a.dtype)
      return jnp.where(restart, g, a + g)

    grad_acc = tree.tree_map(accumulate, updates, state.grad_acc)
    new_updates = tree.tree_map(lambda a, g: jnp.where(emit, a, jnp.zeros_like(a)).astype(g.dtype),
                                grad_acc, updates)
    count = safe_increment(state.count) % h["k"]
    return new_updates, ApplyEvery(count, grad_acc, hparams)

  return GradientTransformation(init, update, name="apply_every", spec=spec)
