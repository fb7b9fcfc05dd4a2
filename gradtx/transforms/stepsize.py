"""Step sizes without a learning rate: the Polyak step (from the loss value) and DoG."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.core import (ANY, NONNEGATIVE, NONNEGATIVE_OR_INF, POSITIVE, EmptyState,
                         GradientTransformation, HParams, HParamSpec, ScalarOrSchedule,
                         check_state, require_params_like, scalar_loss)
from gradtx.errors import HyperparameterError, missing_extra_argument
from gradtx.numerics import as_dtype

__all__ = ["ScaleByDistanceOverGradientsState", "scale_by_distance_over_gradients",
           "scale_by_polyak"]

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

  Matches ``optax.scale_by_polyak``.

  Args:
    f_min: :math:`f^\\star`, a lower bound on the loss, default 0.
    max_learning_rate: :math:`\\gamma_\\max \\ge 0`, default 1; ``math.inf`` for
      Polyak's step without a cap.
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
    raise HyperparameterError.about("scale_by_polyak", "variant", variant,  # polyak_sgd's too
                                    f"must be one of {_VARIANTS}, got {variant!r}")
  spec = HParamSpec("scale_by_polyak", f_min=(f_min, ANY),
                    max_learning_rate=(max_learning_rate, NONNEGATIVE_OR_INF),
                    eps=(eps, NONNEGATIVE))

  def init(params):
    del params
    return EmptyState(spec.init())

  def update(updates, state, params=None, *, value=None, **extra):
    check_state("scale_by_polyak", state, EmptyState)
    del params, extra
    if value is None:
      raise missing_extra_argument(
          "scale_by_polyak needs the loss: call update(grads, state, params, value=loss)")
    value = scalar_loss(value, "scale_by_polyak", "value")
    h, hparams = spec.step(state.hparams)
    g_sq = tree.sum_squares(updates)
    dtype = g_sq.dtype
    gap = value.astype(dtype) - h["f_min"].astype(dtype)
    if variant == "sps+":
      gap = jnp.maximum(gap, 0)
    denominator = g_sq + h["eps"].astype(dtype)
    step = jnp.where(denominator <= _TINY, jnp.zeros((), dtype),
                     jnp.minimum(gap / denominator, h["max_learning_rate"].astype(dtype)))
    return tree.scale(step, updates), EmptyState(hparams)

  return GradientTransformation(init, update, name="scale_by_polyak", spec=spec,
                                options=dict(variant=variant))


class ScaleByDistanceOverGradientsState(NamedTuple):
  """State of :func:`scale_by_distance_over_gradients`.

  Per leaf: ``max_dist`` (:math:`\\bar r_t`) and ``grad_sum_of_squares``
  (:math:`G_t`), scalars in float32 (float64 for float64 leaves), and
  ``init_params`` (:math:`\\theta_0`, in ``param_dtype``).
  """
  max_dist: Any
  grad_sum_of_squares: Any
  init_params: Any
  hparams: HParams


def scale_by_distance_over_gradients(reps_rel: ScalarOrSchedule = 1e-6,
                                     eps: ScalarOrSchedule = 1e-8,
                                     param_dtype: Any = jnp.float32,
                                     global_scale: ScalarOrSchedule = 1.0
                                     ) -> GradientTransformation:
  """Distance over gradients (DoG), layer-wise: a step size with no learning rate to tune.

  .. math::
    \\bar r_t = \\max\\left(\\bar r_{t-1},\\ \\|\\theta_t - \\theta_0\\|\\right), \\quad
    \\bar r_0 = r_\\epsilon (1 + \\|\\theta_0\\|), \\qquad
    G_t = G_{t-1} + \\|g_t\\|^2, \\quad G_0 = 0, \\\\
    u_t = c\\, \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}}\\, g_t

  for each leaf (a layer) on its own: norms are the leaf's l2 norms
  (accumulated in float32, or float64 for float64 leaves), as in the
  paper's layer-wise variant LDoG and in optax. Needs the params.

  A primitive like :func:`scale_by_adam`: with the default
  :math:`c = 1` it returns :math:`+\\eta_t g_t`; descend by following it with
  ``scale_by_learning_rate(1.0)`` or by setting ``global_scale=-1.0``. The
  authors recommend averaging the iterates (see :func:`gradtx.ema`).

  Differences from optax: :math:`G_t` is a scalar per leaf; optax keeps an
  array of shape ``(1,)``, which turns a scalar parameter's update into shape
  ``(1,)`` and raises under ``jax_numpy_rank_promotion="raise"``. The
  updates keep each gradient's dtype (optax's come back in float32 for
  bfloat16 gradients).

  Args:
    reps_rel: :math:`r_\\epsilon > 0`, default 1e-6: the first distance
      relative to :math:`1 + \\|\\theta_0\\|` (the paper suggests 1e-4 for
      models with batch norm, 1e-6 otherwise). It enters at ``init`` only:
      setting it in a running state changes nothing.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    param_dtype: dtype in which :math:`\\theta_0` is stored, default float32
      (as optax; complex64 for a complex leaf, whose Im optax drops);
      ``None`` keeps each parameter's dtype. Structural.
    global_scale: :math:`c`, any real number, default 1.

  References:
    Ivgi, Hinder & Carmon, *DoG is SGD's Best Friend: A Parameter-Free
    Dynamic Step Size Schedule*, ICML 2023.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_distance_over_gradients(reps_rel=0.1, eps=0.0, global_scale=-1.0)
    >>> params = jnp.array([3.0, 4.0])       # r_0 = 0.1 * (1 + 5) = 0.6
    >>> tx.update(jnp.array([0.0, 2.0]), tx.init(params), params)[0]  # -0.6 / 2 * g
    Array([-0. , -0.6], dtype=float32)
  """
  spec = HParamSpec("scale_by_distance_over_gradients", reps_rel=(reps_rel, POSITIVE),
                    eps=(eps, NONNEGATIVE), global_scale=(global_scale, ANY))

  def init(params):
    hparams = spec.init()

    def first_distance(norm):
      return as_dtype(hparams["reps_rel"], norm.dtype) * (1 + norm)

    max_dist = tree.tree_map(first_distance, tree.block_norm(params))
    # A complex leaf's theta_0 is held complex of param_dtype's precision (a real
    # float32 copy, optax's, drops Im and with it the distance it adds).
    init_params = tree.copy(params, param_dtype)
    return ScaleByDistanceOverGradientsState(
        max_dist, tree.tree_map(jnp.zeros_like, max_dist), init_params, hparams)

  def update(updates, state, params=None, **extra):
    check_state("scale_by_distance_over_gradients", state, ScaleByDistanceOverGradientsState)
    del extra
    params = require_params_like("scale_by_distance_over_gradients", updates, params, state,
                                 "init_params")
    h, hparams = spec.step(state.hparams)

    distance = tree.block_norm(tree.sub(params, state.init_params))
    max_dist = tree.tree_map(lambda r, d: jnp.maximum(r, d.astype(r.dtype)), state.max_dist,
                             distance)
    g_sos = tree.tree_map(lambda s, q: s + q.astype(s.dtype), state.grad_sum_of_squares,
                          tree.block_sum_squares(updates))

    def step(g, r, s):
      eta = as_dtype(h["global_scale"], r.dtype) * (r / jnp.sqrt(s + as_dtype(h["eps"], s.dtype)))
      return as_dtype(eta, g.dtype) * g

    updates = tree.tree_map(step, updates, max_dist, g_sos)
    return updates, ScaleByDistanceOverGradientsState(max_dist, g_sos, state.init_params,
                                                      hparams)

  return GradientTransformation(init, update, name="scale_by_distance_over_gradients",
                                spec=spec, options=dict(param_dtype=param_dtype))
