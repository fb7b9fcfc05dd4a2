"""Scaling: multiply the updates by a constant or a learning rate."""

from __future__ import annotations

import jax.numpy as jnp

from gradtx import tree
from gradtx.core import ANY, NONNEGATIVE, GradientTransformation, ScalarOrSchedule, stateless

__all__ = ["scale", "scale_by_learning_rate"]


def scale(step_size: ScalarOrSchedule) -> GradientTransformation:
  """Multiplies the updates by a fixed factor.

  .. math:: u \\leftarrow \\alpha\\, g

  Args:
    step_size: :math:`\\alpha`, any real number (or a schedule of the step).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale(-0.5)
    >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
    Array([-0.5, -0.5], dtype=float32)
  """

  def scale(updates, params, step_size):
    return tree.scale(updates, step_size)

  return stateless(scale, step_size=(step_size, ANY))


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *,
                           flip_sign: bool = True) -> GradientTransformation:
  """Scales the updates by the learning rate, flipping the sign to descend.

  .. math:: u \\leftarrow -\\eta_t\\, g

  Args:
    learning_rate: :math:`\\eta \\ge 0`, a float, or a schedule: any callable
      of the step count ``t`` (0 at the first step), such as those in
      :mod:`gradtx.schedules`. A schedule's last value reads as
      ``"<stage>.learning_rate"`` in :func:`gradtx.hparams`.
    flip_sign: multiply by :math:`-\\eta` (descent, the default) or :math:`+\\eta`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_learning_rate(0.1)
    >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
    Array([-0.1, -0.1], dtype=float32)
  """
  sign = -1 if flip_sign else 1

  def scale_by_learning_rate(updates, params, learning_rate):
    return tree.scale(updates, sign * learning_rate)

  tx = stateless(scale_by_learning_rate, learning_rate=(learning_rate, NONNEGATIVE))
  tx.options["flip_sign"] = flip_sign
  return tx
