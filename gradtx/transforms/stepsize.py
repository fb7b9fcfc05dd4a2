"""Step sizes from the loss value: the Polyak step."""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.core import (ANY, NONNEGATIVE, GradientTransformation, HParamSpec,
                         ScalarOrSchedule, EmptyState)
from gradtx.errors import MissingArgumentError

__all__ = ["scale_by_polyak"]

# optax's threshold below which the squared norm counts as zero (float64 eps).
_TINY = float(np.finfo(np.float64).eps)
_VARIANTS = ("sps", "sps+")


def scale_by_polyak(f_min: ScalarOrSchedule = 0.0, max_learning_rate: ScalarOrSchedule = 1.0,
                    eps: ScalarOrSchedule = 0.0,
                    variant: Literal["sps", "sps+"] = "sps") -> GradientTransformation:
  """Scales the whole tree by the (stochastic) Polyak step size; needs ``value=f(params)``.

  .. math::
    \\gamma = \\min\\left(\\frac{f(\\theta) - f^\\star}{\\|g\\|^2 + \\epsilon},\\
      \\gamma_\\max\\right), \\qquad u = \\gamma\\, g

  with :math:`\\gamma = 0` when :math:`\\|g\\|^2 + \\epsilon` is below float64's
  machine epsilon, and the gap clipped at 0 for ``variant="sps+"``. The norm
  is over the whole tree. Pass the loss as ``update(grads, state, params, value=loss)``.

  Args:
    f_min: :math:`f^\\star`, a lower bound on the loss, default 0.
    max_learning_rate: :math:`\\gamma_\\max \\ge 0`, default 1.
    eps: :math:`\\epsilon \\ge 0`, default 0.
    variant: ``"sps"`` (Loizou et al.) or ``"sps+"`` (Garrigos et al.).

  References:
    Loizou et al., *Stochastic Polyak Step-size for SGD: An Adaptive Learning
    Rate for Fast Convergence*, AISTATS 2021; Garrigos et al., *Function Value
    Learning: Adaptive Learning Rates Based on the Polyak Stepsize and Function
    Splitting in ERM*, 2023.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_polyak()
    >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)), value=1.0)[0]  # (1 - 0) / 4 * 2
    Array([0.5], dtype=float32)
  """
  if variant not in _VARIANTS:
    raise ValueError(f"scale_by_polyak: variant must be one of {_VARIANTS}, got {variant!r}")
  spec = HParamSpec("scale_by_polyak", f_min=(f_min, ANY),
                    max_learning_rate=(max_learning_rate, NONNEGATIVE), eps=(eps, NONNEGATIVE))

  def init(params):
    del params
    return EmptyState(spec.init())

  def update(updates, state, params=None, *, value=None, **extra):
    del params, extra
    if value is None:
      raise MissingArgumentError(
          "scale_by_polyak needs the loss: call update(grads, state, params, value=loss)")
    h, hparams = spec.step(state.hparams)
    g_sq = tree.sum_squares(updates)
    dtype = g_sq.dtype
    gap = jnp.asarray(value).astype(dtype) - h["f_min"].astype(dtype)
    if variant == "sps+":
      gap = jnp.maximum(gap, 0)
    denominator = g_sq + h["eps"].astype(dtype)
    step = jnp.where(denominator <= _TINY, jnp.zeros((), dtype),
                     jnp.minimum(gap / denominator, h["max_learning_rate"].astype(dtype)))
    return tree.scale(updates, step), EmptyState(hparams)

  return GradientTransformation(init, update, name="scale_by_polyak", spec=spec,
                                options=dict(variant=variant))
