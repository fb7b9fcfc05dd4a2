"""Optimism: extrapolate with the last gradient (optimistic gradient descent, OGDA)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics, tree
from gradtx.core import (ANY, GradientTransformation, HParams, HParamSpec, ScalarOrSchedule,
                         check_state, read_once)
from gradtx.numerics import as_dtype, compute_dtype, safe_increment

__all__ = ["ScaleByOptimisticGradientState", "scale_by_optimistic_gradient"]


class ScaleByOptimisticGradientState(NamedTuple):
  """State of :func:`scale_by_optimistic_gradient`: ``count`` and the ``previous_gradient``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  previous_gradient: Any
  hparams: HParams


def scale_by_optimistic_gradient(alpha: ScalarOrSchedule = 1.0,
                                 beta: ScalarOrSchedule = 1.0) -> GradientTransformation:
  """The optimistic step: the gradient plus a correction by its last change.

  .. math:: u_t = (\\alpha + \\beta)\\, g_t - \\beta\\, g_{t-1}, \\qquad g_0 := g_1

  :math:`\\alpha = \\beta = 1` gives :math:`2 g_t - g_{t-1}`, the optimistic
  gradient step for min-max games.

  Matches ``optax.scale_by_optimistic_gradient``.

  Args:
    alpha: :math:`\\alpha`, default 1.
    beta: :math:`\\beta`, default 1.

  References:
    Daskalakis et al., *Training GANs with Optimism*, ICLR 2018; Mokhtari,
    Ozdaglar & Pattathil, *A Unified Analysis of Extra-gradient and Optimistic
    Gradient Methods for Saddle Point Problems*, AISTATS 2020.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_optimistic_gradient()
    >>> state = tx.init(jnp.zeros(1))
    >>> u, state = tx.update(jnp.array([1.0]), state)
    >>> tx.update(jnp.array([3.0]), state)[0]
    Array([5.], dtype=float32)
  """
  spec = HParamSpec("scale_by_optimistic_gradient", alpha=(alpha, ANY), beta=(beta, ANY))

  def init(params):
    return ScaleByOptimisticGradientState(numerics.zero_count(), tree.zeros_like(params),
                                          spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_optimistic_gradient", state, ScaleByOptimisticGradientState)
    del params, extra
    tree.check_structure(state.previous_gradient, updates, "state.previous_gradient",
                         "updates", stage="scale_by_optimistic_gradient")
    h, hparams = spec.step(state.hparams, read=False)  # the leaves read k, derived below
    # There is no previous gradient at the first step: the current one stands for it, so
    # the step is alpha g. Decided once per step, not in every leaf's kernel.
    beta = jnp.where(state.count == 0, 0, h["beta"])
    k = read_once({"a+b": h["alpha"] + beta, "b": beta})

    def leaf(g, g_prev):
      dtype = compute_dtype(g, g_prev)
      a_b, b = as_dtype(k["a+b"], dtype), as_dtype(k["b"], dtype)
      u = a_b * g.astype(dtype) - b * g_prev.astype(dtype)
      return u.astype(g.dtype), g.astype(g_prev.dtype)

    updates, previous = tree.map_multi(leaf, 2, updates, state.previous_gradient)
    return updates, ScaleByOptimisticGradientState(safe_increment(state.count), previous,
                                                   hparams)

  return GradientTransformation(init, update, name="scale_by_optimistic_gradient", spec=spec)
