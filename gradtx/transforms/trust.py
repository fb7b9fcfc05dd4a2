"""Layer-wise scaling by parameter norms: trust ratios (LARS, LAMB), parameter scale, Fromage.

Every per-leaf statistic here (a leaf's norm or root mean square) comes from
the ``block_*`` reductions of :mod:`gradtx.tree`, never from a norm computed
inside a leaf function, so a packed buffer can answer them per segment.
"""

from __future__ import annotations

import jax.numpy as jnp

from gradtx import tree
from gradtx.core import (ANY, NONNEGATIVE, GradientTransformation, ScalarOrSchedule,
                         require_params, stateless)
from gradtx.numerics import as_dtype

__all__ = ["scale_by_fromage", "scale_by_param_block_norm", "scale_by_param_block_rms",
           "scale_by_trust_ratio"]


def scale_by_trust_ratio(min_norm: ScalarOrSchedule = 0.0,
                         trust_coefficient: ScalarOrSchedule = 1.0,
                         eps: ScalarOrSchedule = 0.0) -> GradientTransformation:
  """Scales each leaf by the ratio of its parameter norm to its update norm.

  .. math::
    u = g \\cdot \\frac{c\\, \\max(\\|\\theta\\|, n_\\min)}{\\max(\\|g\\|, n_\\min) + \\epsilon}

  per leaf (a layer), with the ratio taken as 1 when either clipped norm is 0
  (a zero-initialised layer still moves).

  Matches ``optax.scale_by_trust_ratio``.

  Args:
    min_norm: :math:`n_\\min \\ge 0`, default 0.
    trust_coefficient: :math:`c`, default 1.
    eps: :math:`\\epsilon \\ge 0`, default 0.

  References:
    You, Gitman & Ginsburg, *Large Batch Training of Convolutional Networks*, 2017.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_trust_ratio()
    >>> params = jnp.array([3.0, 4.0])
    >>> tx.update(jnp.array([0.1, 0.0]), tx.init(params), params)[0]
    Array([5., 0.], dtype=float32)
  """

  def scale_by_trust_ratio(updates, params, min_norm, trust_coefficient, eps):
    params = require_params("scale_by_trust_ratio", params)

    def scale_leaf(g, param_norm, update_norm):
      dtype = g.dtype
      floor = as_dtype(min_norm, dtype)
      param_norm = jnp.maximum(param_norm.astype(dtype), floor)
      update_norm = jnp.maximum(update_norm.astype(dtype), floor)
      # The denominator is 1 where the ratio is not taken: jnp.where differentiates both
      # branches, and 0 / 0 in the dropped one made every gradient through it NaN.
      taken = (param_norm != 0) & (update_norm != 0)
      ratio = (as_dtype(trust_coefficient, dtype) * param_norm
               / jnp.where(taken, update_norm + as_dtype(eps, dtype), 1))
      ratio = jnp.where(taken, ratio, jnp.ones_like(ratio))
      return g * ratio

    return tree.tree_map(scale_leaf, updates, tree.block_norm(params), tree.block_norm(updates))

  return stateless(scale_by_trust_ratio, min_norm=(min_norm, NONNEGATIVE),
                   trust_coefficient=(trust_coefficient, ANY), eps=(eps, NONNEGATIVE))


def scale_by_param_block_norm(min_scale: ScalarOrSchedule = 1e-3) -> GradientTransformation:
  """Scales each leaf by its parameter's l2 norm: :math:`u = g \\max(\\|\\theta\\|, s_\\min)`.

  Matches ``optax.scale_by_param_block_norm``.

  Args:
    min_scale: :math:`s_\\min \\ge 0`, default 1e-3.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_param_block_norm()
    >>> params = jnp.array([3.0, 4.0])
    >>> tx.update(jnp.ones(2), tx.init(params), params)[0]
    Array([5., 5.], dtype=float32)
  """

  def scale_by_param_block_norm(updates, params, min_scale):
    params = require_params("scale_by_param_block_norm", params)
    return tree.tree_map(
        lambda g, n: g * jnp.maximum(n.astype(g.dtype), as_dtype(min_scale, g.dtype)),
        updates, tree.block_norm(params))

  return stateless(scale_by_param_block_norm, min_scale=(min_scale, NONNEGATIVE))


def scale_by_param_block_rms(min_scale: ScalarOrSchedule = 1e-3) -> GradientTransformation:
  """Scales each leaf by its parameter's root mean square: :math:`u = g \\max(\\operatorname{rms}(\\theta), s_\\min)`.

  Adafactor's ``multiply_by_parameter_scale``: steps relative to the size of
  the weights.

  Matches ``optax.scale_by_param_block_rms``.

  Args:
    min_scale: :math:`s_\\min \\ge 0`, default 1e-3.

  References:
    Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost*, ICML 2018.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_param_block_rms()
    >>> params = jnp.array([3.0, -3.0])
    >>> tx.update(jnp.ones(2), tx.init(params), params)[0]
    Array([3., 3.], dtype=float32)
  """

  def scale_by_param_block_rms(updates, params, min_scale):
    params = require_params("scale_by_param_block_rms", params)
    return tree.tree_map(
        lambda g, r: g * jnp.maximum(r.astype(g.dtype), as_dtype(min_scale, g.dtype)),
        updates, tree.block_rms(params))

  return stateless(scale_by_param_block_rms, min_scale=(min_scale, NONNEGATIVE))


def scale_by_fromage(learning_rate: ScalarOrSchedule) -> GradientTransformation:
  """Fromage's step: descend, then shrink the parameters back toward the origin.

  .. math::
    u = \\frac{\\theta - \\eta\\, g}{\\sqrt{1 + \\eta^2}} - \\theta

  so that :math:`\\theta + u = (\\theta - \\eta g) / \\sqrt{1+\\eta^2}`. With ``g``
  the trust-ratio-scaled gradient (:func:`scale_by_trust_ratio`), this is the
  learning-rate stage of :func:`gradtx.fromage`; holding :math:`\\eta` once
  keeps it settable by one name.

  Not in optax, whose ``fromage`` chains a learning rate and a weight decay for this stage.

  Args:
    learning_rate: :math:`\\eta \\ge 0`, a float or a schedule.

  References:
    Bernstein et al., *On the distance between two neural networks and the
    stability of learning*, NeurIPS 2020.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_fromage(1.0)
    >>> params = jnp.array([1.0])
    >>> tx.update(jnp.array([1.0]), tx.init(params), params)[0]
    Array([-1.], dtype=float32)
  """

  def coefficients(h):
    # Once per step, in the hyperparameter's dtype (float32 or wider): in a bfloat16
    # leaf's dtype, contraction - 1 (about -eta^2 / 2) rounds to 0 or to -2^-8.
    eta = h["learning_rate"]
    log_contraction = -0.5 * jnp.log1p(eta * eta)
    # contraction - 1 = expm1(-log1p(eta^2) / 2): 1 / sqrt(1 + eta^2) - 1 would cancel
    # (exactly 0 in float32 for eta below 2.4e-4, 5% off at eta = 1e-3).
    return {"along_g": -eta * jnp.exp(log_contraction), "shrink": jnp.expm1(log_contraction)}

  def scale_by_fromage(updates, params, along_g, shrink):
    params = require_params("scale_by_fromage", params)

    def step(g, theta):
      return as_dtype(along_g, g.dtype) * g + as_dtype(shrink, g.dtype) * theta.astype(g.dtype)

    return tree.tree_map(step, updates, params)

  return stateless(scale_by_fromage, per_step=coefficients,
                   learning_rate=(learning_rate, NONNEGATIVE))
