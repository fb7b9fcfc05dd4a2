"""Scaling: multiply the updates by a constant, a schedule, a learning rate or their norm.

Also :func:`scale_gradient`, which scales a gradient inside the backward pass
of a loss rather than in the optimizer.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.core import (ANY, NONNEGATIVE, EmptyState, GradientTransformation, Range, Schedule,
                         ScalarOrSchedule, check_callable, checks_flags, stateless)
from gradtx.numerics import as_dtype, safe_divide

__all__ = ["normalize_by_update_norm", "scale", "scale_by_learning_rate", "scale_by_schedule",
           "scale_gradient"]


def _scaling(name: str, factor_of: Callable[[Mapping[str, jax.Array]], jax.Array],
             **hyperparams: tuple[ScalarOrSchedule, Range]) -> GradientTransformation:
  """A :func:`~gradtx.stateless` stage that multiplies every update by one scalar.

  The stage exposes that scalar as ``factor``, so that a chain can fold it
  into the stage before when that stage takes it (see
  :class:`gradtx.GradientTransformation`): on a tree of many leaves, one
  multiplication fewer in every leaf's kernel is less for XLA to compile.
  """
  def multiply(updates, params, **now):
    return tree.scale(factor_of(now), updates)

  tx = stateless(multiply, name=name, per_step=None, **hyperparams)

  def factor(state: EmptyState) -> tuple[jax.Array, EmptyState]:
    # Not read once here: the stage it is folded into reads its scalars once, this one
    # among them.
    now, hparams = tx.spec.step(state.hparams, read=False)
    return factor_of(now), EmptyState(hparams)

  tx.factor = factor
  return tx


def scale(step_size: ScalarOrSchedule) -> GradientTransformation:
  """Multiplies the updates by a fixed factor.

  .. math:: u \\leftarrow \\alpha\\, g

  Matches ``optax.scale``.

  Args:
    step_size: :math:`\\alpha`, any real number (or a schedule of the step).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale(-0.5)
    >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
    Array([-0.5, -0.5], dtype=float32)
  """
  return _scaling("scale", lambda h: h["step_size"], step_size=(step_size, ANY))


@checks_flags
def scale_by_learning_rate(learning_rate: ScalarOrSchedule | None = None, *,
                           flip_sign: bool = True) -> GradientTransformation:
  """Scales the updates by the learning rate, flipping the sign to descend.

  .. math:: u \\leftarrow -\\eta_t\\, g

  Args:
    learning_rate: :math:`\\eta \\ge 0`, a float, or a schedule: any callable
      of the step count ``t`` (0 at the first step), such as those in
      :mod:`gradtx.schedules`. A schedule's last value reads as
      ``"<stage>.learning_rate"`` in :func:`gradtx.hparams`. ``None`` (the
      default, as in optax) scales nothing and flips no sign: the updates
      pass unchanged, for a chain whose step length comes from elsewhere (a
      line search); an optimizer that ends in this stage then returns its
      direction, uphill (``gtx.adam(None)``, as ``optax.adam(None)``).
    flip_sign: multiply by :math:`-\\eta` (descent, the default) or :math:`+\\eta`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_learning_rate(0.1)
    >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
    Array([-0.1, -0.1], dtype=float32)
  """
  if learning_rate is None:
    return stateless(lambda updates, params: updates, name="scale_by_learning_rate")
  sign = -1 if flip_sign else 1
  tx = _scaling("scale_by_learning_rate", lambda h: sign * h["learning_rate"],
                learning_rate=(learning_rate, NONNEGATIVE))
  tx.options["flip_sign"] = flip_sign
  return tx


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
  """Multiplies the updates by a schedule's value at the stage's step count.

  .. math:: u_t \\leftarrow \\alpha(t)\\, g_t

  with :math:`t` the number of steps taken before this one (0 at the first
  step). The same stage as :func:`scale` given a schedule; the value used at
  the last step reads as ``"<stage>.step_size"`` in :func:`gradtx.hparams`
  (the schedule's value at step 0 before the first step), and the count as
  ``state.hparams.count`` (optax keeps it as ``state.count``).

  Args:
    step_size_fn: :math:`\\alpha`, a callable of the step count (such as the
      schedules of :mod:`gradtx.schedules`); any real value. Use
      :func:`scale` for a fixed factor.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_schedule(gtx.schedules.linear_schedule(-0.1, -0.2, 1))
    >>> state = tx.init(jnp.zeros(2))
    >>> _, state = tx.update(jnp.ones(2), state)
    >>> u, state = tx.update(jnp.ones(2), state)
    >>> u, round(float(gtx.hparams(state)["step_size"]), 6)
    (Array([-0.2, -0.2], dtype=float32), -0.2)
  """
  check_callable("scale_by_schedule", "step_size_fn", step_size_fn,
                 "a callable of the step count", "; use gtx.scale(step_size) for a fixed factor")
  return _scaling("scale_by_schedule", lambda h: h["step_size"], step_size=(step_size_fn, ANY))


def normalize_by_update_norm(scale_factor: ScalarOrSchedule = 1.0,
                             eps: ScalarOrSchedule = 1e-6) -> GradientTransformation:
  """Divides the updates by their global l2 norm: a step of length about ``scale_factor``.

  .. math::
    u \\leftarrow \\frac{s\\, g}{\\|g\\|_2 + \\epsilon}, \\qquad
    \\|g\\|_2 = \\sqrt{\\textstyle\\sum_\\text{leaves} \\sum_i g_i^2}

  Normalised gradient descent when :math:`s < 0` (or followed by a learning
  rate). The norm is accumulated in float32 or wider.

  Differences from optax: a zero update with ``eps=0`` stays zero here;
  optax divides 0 by 0 and returns NaN.

  Args:
    scale_factor: :math:`s`, any real number, default 1.
    eps: :math:`\\epsilon \\ge 0`, default 1e-6.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.normalize_by_update_norm(scale_factor=-1.0, eps=0.0)
    >>> tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))[0]
    Array([-0.6, -0.8], dtype=float32)
  """

  def normalize_by_update_norm(updates, params, scale_factor, eps):
    norm = tree.global_norm(updates)
    # One factor for the whole tree (each leaf's kernel is one multiply); 0 for a
    # zero update with eps = 0.
    factor = safe_divide(as_dtype(scale_factor, norm.dtype), norm + as_dtype(eps, norm.dtype))
    return tree.scale(factor, updates)

  return stateless(normalize_by_update_norm, scale_factor=(scale_factor, ANY),
                   eps=(eps, NONNEGATIVE))


@jax.custom_vjp
def _scale_gradient(inputs: Any, scale: jax.Array) -> Any:
  del scale  # used by the backward pass only
  return inputs


def _scale_gradient_forward(inputs: Any, scale: jax.Array) -> tuple[Any, jax.Array]:
  return inputs, scale


def _scale_gradient_backward(scale: jax.Array, cotangents: Any) -> tuple[Any, jax.Array]:
  def scaled_leaf(c):  # an integer input's cotangent is float0: nothing to scale
    return c if c.dtype == jax.dtypes.float0 else c * as_dtype(scale, c.dtype)

  scaled = jax.tree.map(scaled_leaf, cotangents)
  return scaled, jnp.zeros_like(scale)  # the output does not depend on scale


_scale_gradient.defvjp(_scale_gradient_forward, _scale_gradient_backward)


def scale_gradient(inputs: Any, scale: Any) -> Any:
  """The identity on ``inputs``, whose gradient is multiplied by ``scale``.

  .. math::
    f(x) = x, \\qquad \\frac{\\partial L}{\\partial x} \\leftarrow
      s\\, \\frac{\\partial L}{\\partial f(x)}

  A function used inside a loss, not a transformation: it scales (with
  :math:`s < 0`, reverses) the gradient flowing back through one part of a
  model, as in gradient reversal for domain adaptation. :math:`s = 1`
  returns ``inputs`` and :math:`s = 0` stops the gradient
  (``jax.lax.stop_gradient``); a traced ``scale`` (under ``jit`` or
  ``vmap``) is taken as it is, where optax's test of it fails to trace. The
  scaled gradient keeps each cotangent's dtype; the gradient with respect to
  ``scale`` is 0.

  Args:
    inputs: a pytree of arrays.
    scale: :math:`s`, a real number or a scalar array.

  References:
    Ganin & Lempitsky, *Unsupervised Domain Adaptation by Backpropagation*,
    ICML 2015.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> jax.grad(lambda x: jnp.sum(gtx.scale_gradient(x, -0.5) ** 2))(jnp.array([1.0, 2.0]))
    Array([-1., -2.], dtype=float32)
  """
  bad = TypeError(f"scale_gradient: scale must be a real number or a scalar array, "
                  f"got {scale!r}")
  if isinstance(scale, jax.core.Tracer):
    if scale.ndim != 0 or not jnp.issubdtype(scale.dtype, jnp.number):
      raise bad
  else:
    held = np.asarray(scale)
    # jnp.issubdtype: numpy's own does not count bfloat16 (an ml_dtypes type) as a number.
    if held.ndim != 0 or not jnp.issubdtype(held.dtype, jnp.number) or np.iscomplexobj(held):
      raise bad
    if held == 1:
      return inputs
    if held == 0:
      return jax.lax.stop_gradient(inputs)
  return _scale_gradient(inputs, jnp.asarray(scale))
