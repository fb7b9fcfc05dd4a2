"""Steps chosen by a condition on the step count: :func:`conditionally_transform` and
:func:`conditionally_mask`."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import (GradientTransformation, as_transformation, check_callable, check_state,
                         checks_flags)
from gradtx.errors import StructureError
from gradtx.numerics import safe_increment
from gradtx.wrappers._common import _run_if


# ----------------------------------------------------------------------------
# Steps chosen by a condition on the step count.


class ConditionallyTransformState(NamedTuple):
  """State of :func:`conditionally_transform` (optax's field names and order).

  Attributes:
    inner_state: the wrapped transformation's state.
    step: calls so far (the counter ``should_transform_fn`` is given).
  """
  inner_state: Any
  step: jax.Array


class ConditionallyMaskState(NamedTuple):
  """State of :func:`conditionally_mask` (optax's field names and order).

  Attributes:
    step: calls so far (the counter ``should_transform_fn`` is given).
    inner_state: the wrapped transformation's state.
  """
  step: jax.Array
  inner_state: Any


def _condition(where: str, should_transform_fn: Callable[..., Any], step: jax.Array,
               forward_extra_args: bool, extra: dict[str, Any]) -> jax.Array:
  """``should_transform_fn(step, **extra?)`` checked to be a scalar bool (or integer)."""
  run = jnp.asarray(should_transform_fn(step, **(extra if forward_extra_args else {})))
  if run.shape != () or not (run.dtype == jnp.bool_ or jnp.issubdtype(run.dtype, jnp.integer)):
    raise StructureError(f"{where}: should_transform_fn must return a scalar bool, got dtype "
                         f"{run.dtype} and shape {run.shape}")
  return run if run.dtype == jnp.bool_ else run != 0


def _conditional(where: str, inner: GradientTransformation,
                 should_transform_fn: Callable[..., Any], forward_extra_args: bool,
                 state_type: type, pass_through: bool) -> GradientTransformation:
  """The transformation behind :func:`conditionally_transform` and :func:`conditionally_mask`."""
  inner = as_transformation(inner, where, "inner")
  check_callable(where, "should_transform_fn", should_transform_fn,
                 "a function of the step count")

  def make_state(step, inner_state):
    return state_type(step=step, inner_state=inner_state)

  def init(params):
    return make_state(jnp.zeros([], jnp.int32), inner.init(params))

  def update(updates, state, params=None, **extra):
    check_state(where, state, state_type)
    run = _condition(where, should_transform_fn, state.step, forward_extra_args, extra)
    updates, inner_state = _run_if(run, inner, updates, state.inner_state, params, extra,
                                   pass_through=pass_through)
    return updates, make_state(safe_increment(state.step), inner_state)

  return GradientTransformation(init, update, name=where, options=dict(
      inner=inner, should_transform_fn=should_transform_fn,
      forward_extra_args=forward_extra_args))


@checks_flags
def conditionally_transform(inner: GradientTransformation,
                            should_transform_fn: Callable[..., Any],
                            forward_extra_args: bool = False) -> GradientTransformation:
  """Runs ``inner`` only at the steps ``should_transform_fn`` picks; else passes updates through.

  .. math::
    (u_t, s_t) = \\begin{cases} \\text{inner}(g_t, s_{t-1}) & \\text{cond}(t) \\\\
      (g_t, s_{t-1}) & \\text{otherwise} \\end{cases}

  where :math:`t` counts the calls so far (0 at the first) and is kept in the
  state. A step without ``inner`` costs no inner work and leaves its state
  bitwise unchanged. Same arguments and semantics as
  ``optax.conditionally_transform``; to get zero updates instead, use
  :func:`conditionally_mask`.

  Args:
    inner: the transformation to run at some steps.
    should_transform_fn: ``cond(step) -> bool`` (a scalar array); with
      ``forward_extra_args``, ``cond(step, **extra_args)``.
    forward_extra_args: also pass ``update``'s extra keyword arguments to
      ``should_transform_fn``, default ``False``.

  Example: clip only after a warm-up of 2 steps.

    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.conditionally_transform(gtx.clip(1.0), lambda step: step >= 2)
    >>> state = tx.init(jnp.zeros(1))
    >>> for _ in range(3):
    ...   updates, state = tx.update(jnp.array([5.0]), state)
    ...   print(updates)
    [5.]
    [5.]
    [1.]
  """
  return _conditional("conditionally_transform", inner, should_transform_fn,
                      forward_extra_args, ConditionallyTransformState, pass_through=True)


@checks_flags
def conditionally_mask(inner: GradientTransformation,
                       should_transform_fn: Callable[..., Any],
                       forward_extra_args: bool = False) -> GradientTransformation:
  """Runs ``inner`` only at the steps ``should_transform_fn`` picks; else zero updates.

  .. math::
    (u_t, s_t) = \\begin{cases} \\text{inner}(g_t, s_{t-1}) & \\text{cond}(t) \\\\
      (0, s_{t-1}) & \\text{otherwise} \\end{cases}

  where :math:`t` counts the calls so far (0 at the first) and is kept in the
  state. A masked step costs no inner work and leaves its state bitwise
  unchanged. Same arguments and semantics as ``optax.conditionally_mask``;
  to pass the updates through instead, use :func:`conditionally_transform`.

  Args:
    inner: the transformation to run at some steps.
    should_transform_fn: ``cond(step) -> bool`` (a scalar array); with
      ``forward_extra_args``, ``cond(step, **extra_args)``.
    forward_extra_args: also pass ``update``'s extra keyword arguments to
      ``should_transform_fn``, default ``False``.

  Example: no steps at all for the first 2 calls.

    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.conditionally_mask(gtx.sgd(0.1), lambda step: step >= 2)
    >>> state = tx.init(jnp.zeros(1))
    >>> for _ in range(3):
    ...   updates, state = tx.update(jnp.array([1.0]), state)
    ...   print(updates)
    [0.]
    [0.]
    [-0.1]
  """
  return _conditional("conditionally_mask", inner, should_transform_fn, forward_extra_args,
                      ConditionallyMaskState, pass_through=False)
