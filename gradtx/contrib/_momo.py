"""optax.contrib: MoMo and MoMo-Adam, Polyak steps from a model of the loss built with momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.chain import Chain, named_chain
from gradtx.contrib._whole_tree import (_count_as, _over_root, _real_zeros_like,
                                       _scalar_dtype)
from gradtx.core import (ANY, NONNEGATIVE, POSITIVE, UNIT_HALF_OPEN, GradientTransformation,
                         HParams, HParamSpec, ScalarOrSchedule, check_state, checks_flags,
                         require_params_like, names_its_arguments)
from gradtx.errors import StructureError, missing_extra_argument
from gradtx.numerics import (as_dtype, compute_dtype, ema_moment, safe_divide,
                             safe_increment, zero_count)

__all__ = ["MomoAdamState", "MomoState", "momo", "momo_adam", "scale_by_momo", "scale_by_momo_adam"]


class MomoState(NamedTuple):
  """State of :func:`scale_by_momo`: optax's fields, then the hyperparameters.

  ``exp_avg`` (:math:`d_t`) per entry; the scalars ``barf``
  (:math:`\\bar f_t`), ``gamma`` (:math:`\\gamma_t`) and ``lb`` (the lower
  bound :math:`f_*` in use); ``count``.
  """
  exp_avg: Any
  barf: jax.Array
  gamma: jax.Array
  lb: jax.Array
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  hparams: HParams


class MomoAdamState(NamedTuple):
  """State of :func:`scale_by_momo_adam`: :class:`MomoState`'s fields and ``exp_avg_sq``."""
  exp_avg: Any
  exp_avg_sq: Any
  barf: jax.Array
  gamma: jax.Array
  lb: jax.Array
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  hparams: HParams


_NEEDS_VALUE = ("{stage} needs the loss: call update(grads, state, params, value=loss), "
                "with the loss from jax.value_and_grad")


def _model_averages(stage: str, value: Any, updates: Any, params: Any, state: Any,
                    beta: jax.Array) -> tuple[jax.Array, jax.Array]:
  """:math:`\\bar f_t` and :math:`\\gamma_t`: the averages of the loss and of
  :math:`\\langle g_t, \\theta_t \\rangle` that MoMo's model of the loss is built from."""
  if value is None:
    raise missing_extra_argument(_NEEDS_VALUE.format(stage=stage))
  if jnp.ndim(value) != 0:  # broadcast into the averages and the step, it reshaped both
    raise StructureError(f"{stage}: value must be a scalar loss, got shape {jnp.shape(value)}")
  dtype = state.barf.dtype
  barf = ema_moment(jnp.asarray(value).astype(dtype), state.barf, beta, order=1)
  gamma = ema_moment(tree.inner(updates, params, dtype), state.gamma, beta, order=1)
  return barf, gamma


def _momo_step(h: Any, dtype: Any, adapt_lower_bound: bool, lb: jax.Array, barf: jax.Array,
               gamma: jax.Array, iprod: jax.Array, norm_sq: jax.Array,
               bc1: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """MoMo's step size :math:`\\tau_t`, :math:`\\alpha\\lambda` and the next lower bound.

  ``bc1`` is Adam's :math:`1 - \\beta_1^t` for MoMo-Adam, whose averages
  start at zero, and 1 for MoMo.
  """
  alpha = as_dtype(h["learning_rate"], dtype)
  floor = as_dtype(h["lower_bound"], dtype)
  decay = alpha * as_dtype(h["weight_decay"], dtype)
  shrink = 1 + decay
  if adapt_lower_bound:
    # Reset an estimate that the model already lies below.
    cap = shrink * (barf - gamma) + iprod
    lb = jnp.where(cap < shrink * bc1 * lb, jnp.maximum(cap / (2 * bc1 * shrink), floor), lb)
  else:
    # A copy: the state's lb and its hyperparameter must not share a buffer (both may
    # be donated; as_dtype returns the held array itself when the dtype matches).
    lb = jnp.copy(floor)
  # 0 where the norm is 0 (d_t = 0): no Polyak step, only the weight decay's shrink.
  polyak = safe_divide(jnp.maximum(shrink * (barf - bc1 * lb - gamma) + iprod, 0), norm_sq)
  tau = jnp.minimum(alpha / bc1, polyak)
  if adapt_lower_bound:
    lb = jnp.maximum((barf + iprod - gamma - tau * norm_sq / 2) / bc1, floor)
  return tau, decay, lb


def _proximal_step(tau: jax.Array, decay: jax.Array, direction: Any, params: Any) -> Any:
  """:math:`\\frac{\\theta_t - \\tau_t d_t}{1 + \\alpha_t\\lambda} - \\theta_t` per leaf, with
  ``decay`` :math:`= \\alpha_t\\lambda`: MoMo's step, or MoMo-Adam's with its direction.
  ``decay`` is passed rather than the shrink :math:`1 + \\alpha_t\\lambda`: in float32
  :math:`(1 + \\alpha_t\\lambda) - 1` is 0 below :math:`\\alpha_t\\lambda = 6 \\cdot 10^{-8}`.
  """
  shrink = 1 + decay

  def step(d, p):
    c = compute_dtype(d, p)
    # -(tau d + a l theta) / (1 + a l): the same, without the cancellation.
    u = -(as_dtype(tau, c) * as_dtype(d, c) + as_dtype(decay, c) * as_dtype(p, c))
    return (u / as_dtype(shrink, c)).astype(p.dtype)

  return tree.tree_map(step, direction, params)


def _momo_spec(stage: str, learning_rate: ScalarOrSchedule, **more: Any) -> HParamSpec:
  return HParamSpec(stage, learning_rate=(learning_rate, NONNEGATIVE), **more)


@checks_flags
def scale_by_momo(learning_rate: ScalarOrSchedule = 1.0, beta: ScalarOrSchedule = 0.9,
                  lower_bound: ScalarOrSchedule = 0.0, weight_decay: ScalarOrSchedule = 0.0,
                  adapt_lower_bound: bool = False) -> GradientTransformation:
  """MoMo's step: SGD with momentum and a Polyak step size capped at the learning rate.

  .. math::
    d_t = \\beta d_{t-1} + (1 - \\beta) g_t, \\quad
    \\bar f_t = \\beta \\bar f_{t-1} + (1 - \\beta) f(\\theta_t), \\quad
    \\gamma_t = \\beta \\gamma_{t-1} + (1 - \\beta) \\langle g_t, \\theta_t \\rangle, \\\\
    \\tau_t = \\min\\left(\\alpha_t,\\ \\frac{\\left((1 + \\alpha_t\\lambda)(\\bar f_t - f_*
      - \\gamma_t) + \\langle d_t, \\theta_t \\rangle\\right)_+}{\\|d_t\\|^2}\\right), \\qquad
    \\theta_{t+1} = \\frac{\\theta_t - \\tau_t d_t}{1 + \\alpha_t \\lambda}

  with the averages started at the first step's values (:math:`d_1 = g_1`,
  ...), :math:`\\tau_t = 0` when :math:`d_t = 0` (no Polyak step: only the decay), and
  inner products and norms over the whole tree. The update is the step to
  add. Pass the loss: ``update(grads, state, params, value=loss)``. With
  ``adapt_lower_bound`` :math:`f_*` is estimated as the paper's MoMo* does
  (reset to half the model's value when the model drops below it, never
  under ``lower_bound``).

  Args:
    learning_rate: :math:`\\alpha_t \\ge 0`, default 1.
    beta: :math:`\\beta \\in [0, 1)`, default 0.9.
    lower_bound: :math:`f_*`, a lower bound on the loss, default 0.
    weight_decay: :math:`\\lambda \\ge 0`, default 0.
    adapt_lower_bound: default False. Structural.

  Differs from optax 0.2.8 when ``weight_decay > 0``: optax's step is
  :math:`\\theta_t/(1 + \\alpha\\lambda) - \\tau_t d_t`, which drops the
  division of :math:`\\tau_t d_t` that the paper's proximal step (and the
  authors' code) has and that its own :math:`\\tau_t` is derived for. And
  where :math:`0 < \\|d_t\\|^2 \\le 2^{-52}`: optax's :math:`\\tau_t` is 0 there,
  gradtx's the capped Polyak step, which does not depend on the loss's scale.

  Complex leaves: their gradients conjugated (as optax), the inner product
  :math:`\\operatorname{Re} \\sum \\bar a_i b_i`, :math:`\\|d\\|^2 = \\sum |d_i|^2`.

  References:
    Schaipp, Ohana, Eickenberg, Defazio & Gower, *MoMo: Momentum Models for
    Adaptive Learning Rates*, ICML 2024 (arXiv:2305.07583).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_momo()
    >>> params = jnp.array([1.0, 2.0])   # f = |x|^2 / 2 = 2.5, g = x
    >>> tx.update(params, tx.init(params), params, value=2.5)[0]  # tau = min(1, 2.5 / 5)
    Array([-0.5, -1. ], dtype=float32)
  """
  stage = "scale_by_momo"
  spec = _momo_spec(stage, learning_rate, beta=(beta, UNIT_HALF_OPEN),
                    lower_bound=(lower_bound, ANY), weight_decay=(weight_decay, NONNEGATIVE))

  def init(params):
    hparams = spec.init()
    dtype = _scalar_dtype(params)
    return MomoState(tree.zeros_like(params), jnp.zeros((), dtype), jnp.zeros((), dtype),
                     tree.copy(hparams["lower_bound"], dtype), zero_count(), hparams)

  def update(updates, state, params=None, *, value=None, **extra):
    check_state(stage, state, MomoState)
    del extra
    params = require_params_like(stage, updates, params, state, "exp_avg")
    h, hparams = spec.step(state.hparams)
    dtype = state.barf.dtype
    # The averages start at the first step's values: no bias to correct.
    beta = jnp.where(state.count == 0, 0, h["beta"])
    barf, gamma = _model_averages(stage, value, updates, params, state, beta)

    def average(g, d):
      return ema_moment(g, d, beta, order=1).astype(d.dtype)

    d = tree.tree_map(average, updates, state.exp_avg)
    tau, decay, lb = _momo_step(h, dtype, adapt_lower_bound, state.lb, barf, gamma,
                                tree.inner(d, params, dtype), tree.sum_squares(d, dtype),
                                jnp.ones((), dtype))
    out = _proximal_step(tau, decay, d, params)
    return out, MomoState(d, barf, gamma, lb, safe_increment(state.count), hparams)

  return GradientTransformation(init, update, name=stage, spec=spec,
                                options=dict(adapt_lower_bound=adapt_lower_bound))


@checks_flags
@names_its_arguments
def momo(learning_rate: ScalarOrSchedule = 1.0, beta: ScalarOrSchedule = 0.9,
         lower_bound: ScalarOrSchedule = 0.0, weight_decay: ScalarOrSchedule = 0.0,
         adapt_lower_bound: bool = False) -> Chain:
  """MoMo: SGD with momentum whose step size is a Polyak step, capped at the learning rate.

  .. math::
    \\theta_{t+1} = \\frac{\\theta_t - \\tau_t d_t}{1 + \\alpha_t \\lambda}, \\qquad
    \\tau_t = \\min\\left(\\alpha_t,\\ \\frac{\\left((1 + \\alpha_t\\lambda)(\\bar f_t - f_*
      - \\gamma_t) + \\langle d_t, \\theta_t \\rangle\\right)_+}{\\|d_t\\|^2}\\right)

  with :math:`d_t, \\bar f_t, \\gamma_t` averages of the gradients, the
  losses and :math:`\\langle g_t, \\theta_t \\rangle` (see
  :func:`scale_by_momo`). Pass the loss: ``update(grads, state, params,
  value=loss)``. One stage: the learning rate and the weight decay enter
  :math:`\\tau_t`.

  Args:
    learning_rate: :math:`\\alpha_t`, default 1 (choose it large).
    beta: default 0.9.
    lower_bound: :math:`f_*`, default 0.
    weight_decay: :math:`\\lambda`, default 0.
    adapt_lower_bound: estimate :math:`f_*` as it runs, default False.

  Differs from optax 0.2.8 when ``weight_decay > 0`` and when the Polyak step's
  denominator is in :math:`(0, 2^{-52}]` (see :func:`scale_by_momo`).

  References:
    Schaipp et al., *MoMo: Momentum Models for Adaptive Learning Rates*,
    ICML 2024 (arXiv:2305.07583).

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.momo())
    momo(
      momo=scale_by_momo(learning_rate=1, beta=0.9, lower_bound=0, weight_decay=0, adapt_lower_bound=False),
    )
  """
  return named_chain("momo", momo=scale_by_momo(learning_rate, beta, lower_bound, weight_decay,
                                                adapt_lower_bound))


@checks_flags
def scale_by_momo_adam(learning_rate: ScalarOrSchedule = 1e-2, b1: ScalarOrSchedule = 0.9,
                       b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8,
                       lower_bound: ScalarOrSchedule = 0.0, weight_decay: ScalarOrSchedule = 0.0,
                       adapt_lower_bound: bool = False, *,
                       nu_dtype: Any = None) -> GradientTransformation:
  """MoMo-Adam's step: Adam's direction with a Polyak step size in Adam's metric.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) |g_t|^2, \\quad
    D_t = \\epsilon + \\sqrt{v_t / (1 - \\beta_2^t)}, \\\\
    \\bar f_t = \\beta_1 \\bar f_{t-1} + (1 - \\beta_1) f(\\theta_t), \\quad
    \\gamma_t = \\beta_1 \\gamma_{t-1} + (1 - \\beta_1) \\langle g_t, \\theta_t \\rangle, \\\\
    \\tau_t = \\min\\left(\\frac{\\alpha_t}{1 - \\beta_1^t},\\
      \\frac{\\left((1 + \\alpha_t\\lambda)(\\bar f_t - (1 - \\beta_1^t) f_* - \\gamma_t)
      + \\langle m_t, \\theta_t \\rangle\\right)_+}{\\langle m_t, m_t / D_t \\rangle}\\right),
    \\qquad
    \\theta_{t+1} = \\frac{\\theta_t - \\tau_t m_t / D_t}{1 + \\alpha_t \\lambda}

  with the averages started at zero (hence the :math:`1 - \\beta_1^t`),
  :math:`\\tau_t = 0` when :math:`m_t = 0`, and inner products over the
  whole tree. The update is the step to add. Pass the loss:
  ``update(grads, state, params, value=loss)``.

  Args:
    learning_rate: :math:`\\alpha_t \\ge 0`, default 1e-2.
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon > 0`, default 1e-8.
    lower_bound: :math:`f_*`, default 0.
    weight_decay: :math:`\\lambda \\ge 0`, default 0.
    adapt_lower_bound: default False. Structural.
    nu_dtype: dtype of :math:`v` (``exp_avg_sq``, real for a complex leaf);
      ``None`` uses the params' (real) dtype. gradtx's addition to optax's
      arguments. On float16 params give ``jnp.float32``: float16 rounds
      ``eps=1e-8`` and the small :math:`(1-\\beta_2) |g|^2` to 0, so
      :math:`m_t / D_t` is 0/0 or :math:`m/0` there: those entries step by
      NaN, and the others not at all (:math:`\\langle m_t, m_t / D_t \\rangle`
      is NaN, so :math:`\\tau_t = 0`). Adam's direction is then computed in
      float32.

  Differs from optax 0.2.8 when ``weight_decay > 0``, and where the
  denominator is in :math:`(0, 2^{-52}]`, as :func:`scale_by_momo`.

  Complex leaves: their gradients conjugated (as optax), the inner product
  :math:`\\operatorname{Re} \\sum \\bar a_i b_i`, :math:`v` real: the EMA of
  :math:`|g|^2`, where optax 0.2.8 averages the complex :math:`g \\cdot g`.

  References:
    Schaipp et al., *MoMo: Momentum Models for Adaptive Learning Rates*,
    ICML 2024 (arXiv:2305.07583).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_momo_adam(learning_rate=1.0)
    >>> params = jnp.array([1.0, 2.0])
    >>> u, _ = tx.update(params, tx.init(params), params, value=2.5)
    >>> u  # m / D = 0.1 sign(g), tau = (0.25 - 0.5 + 0.5) / 0.03 < 1 / (1 - b1)
    Array([-0.8333333, -0.8333333], dtype=float32)
  """
  stage = "scale_by_momo_adam"
  spec = _momo_spec(stage, learning_rate, b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    eps=(eps, POSITIVE), lower_bound=(lower_bound, ANY),
                    weight_decay=(weight_decay, NONNEGATIVE))

  def init(params):
    hparams = spec.init()
    dtype = _scalar_dtype(params)
    return MomoAdamState(tree.zeros_like(params), _real_zeros_like(params, nu_dtype),
                         jnp.zeros((), dtype),
                         jnp.zeros((), dtype), tree.copy(hparams["lower_bound"], dtype),
                         zero_count(), hparams)

  def update(updates, state, params=None, *, value=None, **extra):
    check_state(stage, state, MomoAdamState)
    del extra
    params = require_params_like(stage, updates, params, state, "exp_avg")
    h, hparams = spec.step(state.hparams)
    dtype = state.barf.dtype
    b1, b2 = h["b1"], h["b2"]
    count = safe_increment(state.count)
    t = _count_as(count, dtype)
    bc1, bc2 = 1 - as_dtype(b1, dtype)**t, 1 - as_dtype(b2, dtype)**t
    barf, gamma = _model_averages(stage, value, updates, params, state, b1)
    eps = as_dtype(h["eps"], dtype)

    def moments(g, m, v):
      m_new = ema_moment(g, m, b1, order=1)
      v_new = ema_moment(g, v, b2, order=2)  # |g|^2, real also for complex g
      return m_new.astype(m.dtype), v_new.astype(v.dtype)

    m, v = tree.map_multi(moments, 2, updates, state.exp_avg, state.exp_avg_sq)
    # m / D: Adam's direction, v bias-corrected under the root (v holds |g|^2, real).
    md = tree.tree_map(lambda m, v: _over_root(m, v / as_dtype(bc2, v.dtype), eps), m, v)
    tau, decay, lb = _momo_step(h, dtype, adapt_lower_bound, state.lb, barf, gamma,
                                tree.inner(m, params, dtype), tree.inner(m, md, dtype), bc1)
    out = _proximal_step(tau, decay, md, params)
    return out, MomoAdamState(m, v, barf, gamma, lb, count, hparams)

  return GradientTransformation(init, update, name=stage, spec=spec,
                                options=dict(adapt_lower_bound=adapt_lower_bound,
                                             nu_dtype=nu_dtype))


@checks_flags
@names_its_arguments
def momo_adam(learning_rate: ScalarOrSchedule = 1e-2, b1: ScalarOrSchedule = 0.9,
              b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8,
              lower_bound: ScalarOrSchedule = 0.0, weight_decay: ScalarOrSchedule = 0.0,
              adapt_lower_bound: bool = False, *, nu_dtype: Any = None) -> Chain:
  """MoMo-Adam: Adam(W) whose step size is a Polyak step, capped at the learning rate.

  .. math::
    \\theta_{t+1} = \\frac{\\theta_t - \\tau_t m_t / D_t}{1 + \\alpha_t \\lambda}

  with :math:`m_t / D_t` Adam's direction and :math:`\\tau_t` as
  :func:`scale_by_momo_adam` says. Pass the loss: ``update(grads, state,
  params, value=loss)``.

  Args:
    learning_rate: :math:`\\alpha_t`, default 1e-2.
    b1: default 0.9.
    b2: default 0.999.
    eps: default 1e-8.
    lower_bound: :math:`f_*`, default 0.
    weight_decay: :math:`\\lambda`, default 0.
    adapt_lower_bound: default False.
    nu_dtype: dtype of :math:`v`, gradtx's addition (``jnp.float32`` for
      float16 params; see :func:`scale_by_momo_adam`).

  Differs from optax 0.2.8 when ``weight_decay > 0`` and when the Polyak step's
  denominator is in :math:`(0, 2^{-52}]` (see :func:`scale_by_momo`).

  References:
    Schaipp et al., *MoMo: Momentum Models for Adaptive Learning Rates*,
    ICML 2024 (arXiv:2305.07583).

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.momo_adam())
    momo_adam(
      momo_adam=scale_by_momo_adam(learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-08, lower_bound=0, weight_decay=0, adapt_lower_bound=False, nu_dtype=None),
    )
  """
  return named_chain("momo_adam", momo_adam=scale_by_momo_adam(
      learning_rate, b1, b2, eps, lower_bound, weight_decay, adapt_lower_bound,
      nu_dtype=nu_dtype))
