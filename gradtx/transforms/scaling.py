"""Scaling: multiply the updates by a constant or a learning rate."""

from __future__ import annotations

from typing import Callable

import jax

from gradtx import tree
from gradtx.core import (ANY, NONNEGATIVE, EmptyState, GradientTransformation, Range,
                         ScalarOrSchedule, stateless)

__all__ = ["scale", "scale_by_learning_rate"]


def _scaling(name: str, factor_of: Callable[[dict[str, jax.Array]], jax.Array],
             **hyperparams: tuple[ScalarOrSchedule, Range]) -> GradientTransformation:
  """A :func:`~gradtx.stateless` stage that multiplies every update by one scalar.

  The stage exposes that scalar as ``factor``, so that a chain can fold it
  into the stage before when that stage takes it (see
  :class:`gradtx.GradientTransformation`): on a tree of many leaves, one
  multiplication fewer in every leaf's kernel is less for XLA to compile.
  """
  def multiply(updates, params, **now):
    return tree.scale(updates, factor_of(now))

  tx = stateless(multiply, name=name, **hyperparams)

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
  tx = _scaling("scale_by_learning_rate", lambda h: sign * h["learning_rate"],
                learning_rate=(learning_rate, NONNEGATIVE))
  tx.options["flip_sign"] = flip_sign
  return tx
