"""optax.contrib: D-Adaptation for AdamW.

A step size from a lower bound on the distance to the solution.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.chain import Chain, named_chain
from gradtx.contrib._whole_tree import (_adam_step_size, _betas, _current_estimate, _l1,
                                       _over_root, _real_zeros_like, _scalar_dtype)
from gradtx.core import (NONNEGATIVE, POSITIVE, GradientTransformation, HParams,
                         HParamSpec, ScalarOrSchedule, check_state, require_params_like,
                         names_its_arguments)
from gradtx.numerics import (as_dtype, compute_dtype, ema_moment, safe_divide,
                             safe_increment, zero_count)

__all__ = ["DAdaptAdamWState", "dadapt_adamw", "scale_by_dadapt_adamw"]


class DAdaptAdamWState(NamedTuple):
  """State of :func:`scale_by_dadapt_adamw`: optax's fields, then the hyperparameters.

  ``exp_avg`` (:math:`m`), ``exp_avg_sq`` (:math:`v`) and ``grad_sum``
  (:math:`s`) per entry; the scalars ``estim_lr`` (:math:`d`) and
  ``numerator_weighted`` (:math:`r`); ``count``.
  """
  exp_avg: Any
  exp_avg_sq: Any
  grad_sum: Any
  estim_lr: jax.Array
  numerator_weighted: jax.Array
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  hparams: HParams


def scale_by_dadapt_adamw(learning_rate: ScalarOrSchedule = 1.0,
                          betas: tuple[float, float] = (0.9, 0.999),
                          eps: ScalarOrSchedule = 1e-8, estim_lr0: ScalarOrSchedule = 1e-6,
                          weight_decay: ScalarOrSchedule = 0.0, *,
                          nu_dtype: Any = None) -> GradientTransformation:
  """D-Adapted AdamW's step: :math:`d` estimates the distance to the solution (sup norm).

  .. math::
    \\eta_t = \\gamma_t d_t \\frac{\\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t}, \\quad
    \\sigma = \\sqrt{\\beta_2}, \\quad
    r_t = \\sigma r_{t-1} + (1 - \\sigma)\\, \\eta_t
      \\left\\langle g_t, \\frac{s_{t-1}}{\\sqrt{v_{t-1}} + \\epsilon} \\right\\rangle, \\\\
    m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) \\eta_t g_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) |g_t|^2, \\quad
    s_t = \\sigma s_{t-1} + (1 - \\sigma) \\eta_t g_t, \\\\
    d_{t+1} = \\max\\left(d_t,\\ \\frac{r_t}{(1 - \\sigma) \\|s_t\\|_1}\\right), \\qquad
    u_t = -\\frac{m_t}{\\sqrt{v_t} + \\epsilon} - \\lambda \\eta_t \\theta_t

  with :math:`d_1 = d_0` and the inner product and l1 norm over the whole
  tree. The update is the step to add (the sign is flipped). Needs the params.

  Complex leaves: their gradients conjugated (as optax), the inner product
  :math:`\\operatorname{Re} \\sum \\bar a_i b_i`, :math:`\\|s\\|_1 = \\sum |s_i|`, :math:`v` real.

  Args:
    learning_rate: :math:`\\gamma_t \\ge 0`, default 1 (a schedule around 1).
    betas: :math:`(\\beta_1, \\beta_2)`, each in :math:`[0, 1)`, default
      ``(0.9, 0.999)``; held as one array ``betas``.
    eps: :math:`\\epsilon > 0`, default 1e-8. Not 0: the estimate's
      :math:`s / (\\sqrt{v} + \\epsilon)` is 0/0 at the first step, and every step
      from the second on is NaN (so in optax 0.2.8, which takes 0).
    estim_lr0: :math:`d_0 > 0`, default 1e-6. Read as :math:`d_1` at the
      first step only (a value set after init counts); later the estimate
      lives in the state's ``estim_lr``.
    weight_decay: :math:`\\lambda \\ge 0`, default 0 (decoupled).
    nu_dtype: dtype of :math:`v` (``exp_avg_sq``, real for a complex leaf);
      ``None`` uses the params' (real) dtype. gradtx's addition to optax's
      arguments. On float16 params give ``jnp.float32``: float16 rounds
      ``eps=1e-8`` and the small :math:`(1-\\beta_2) g^2` to 0, so the step and
      the estimate's :math:`s / (\\sqrt{v} + \\epsilon)` are 0/0 or
      :math:`m/0`. The moments' updates and the step are then computed in
      float32. :math:`m` and :math:`s` stay in the params' dtype: they hold
      :math:`\\eta_t g`, which underflows float16 too while :math:`d` is near
      the default :math:`d_0 = 10^{-6}`, so on float16 params start from a
      larger ``estim_lr0``.

  Differs from optax 0.2.8 only when every gradient so far is zero: optax's
  estimate is then 0/0 (NaN); gradtx keeps :math:`d`.

  References:
    Defazio & Mishchenko, *Learning-Rate-Free Learning by D-Adaptation*,
    ICML 2023 (arXiv:2301.07733), the Adam variant of its appendix.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_dadapt_adamw()
    >>> params = jnp.array([1.0, -2.0])
    >>> u, state = tx.update(jnp.array([0.5, -0.5]), tx.init(params), params)
    >>> u  # m / sqrt(v) = (1 - b1) eta sign(g) / sqrt(1 - b2) = d_0 sign(g)
    Array([-9.999994e-07,  9.999994e-07], dtype=float32)
  """
  stage = "scale_by_dadapt_adamw"
  spec = HParamSpec(stage, learning_rate=(learning_rate, NONNEGATIVE),
                    betas=_betas(stage, betas), eps=(eps, POSITIVE),
                    estim_lr0=(estim_lr0, POSITIVE), weight_decay=(weight_decay, NONNEGATIVE))

  def init(params):
    hparams = spec.init()
    dtype = _scalar_dtype(params)
    return DAdaptAdamWState(tree.zeros_like(params), _real_zeros_like(params, nu_dtype),
                            tree.zeros_like(params), tree.copy(hparams["estim_lr0"], dtype),
                            jnp.zeros((), dtype), zero_count(), hparams)

  def update(updates, state, params=None, **extra):
    check_state(stage, state, DAdaptAdamWState)
    del extra
    params = require_params_like(stage, updates, params, state, "exp_avg")
    h, hparams = spec.step(state.hparams)
    d = _current_estimate(state.estim_lr, h["estim_lr0"], state.count)
    dtype = d.dtype
    b1, b2 = h["betas"][0], h["betas"][1]  # the moments' decays, in the hyperparameters' dtype
    sigma = jnp.sqrt(as_dtype(b2, dtype))
    eps = as_dtype(h["eps"], dtype)
    count = safe_increment(state.count)
    eta = _adam_step_size(d, h["learning_rate"], b1, b2, count)

    over_root = tree.tree_map(lambda s, v: _over_root(s, v, eps), state.grad_sum,
                              state.exp_avg_sq)
    r = ema_moment(eta * tree.inner(updates, over_root, dtype),
                   state.numerator_weighted, sigma, order=1)

    def moments(g, m, v, s):
      c = compute_dtype(g, m, v)  # v's dtype: the params' real dtype unless nu_dtype widens it
      eg = as_dtype(eta, c) * as_dtype(g, c)
      m_new = ema_moment(eg, m, b1, order=1)
      v_new = ema_moment(g, v, b2, order=2)  # |g|^2, real also for complex g
      s_new = ema_moment(eg, s, sigma, order=1)
      return as_dtype(m_new, m.dtype), as_dtype(v_new, v.dtype), as_dtype(s_new, s.dtype)

    m, v, s = tree.map_multi(moments, 3, updates, state.exp_avg, state.exp_avg_sq,
                             state.grad_sum)
    d_new = jnp.maximum(d, safe_divide(r, (1 - sigma) * _l1(s, dtype)))
    decay = eta * as_dtype(h["weight_decay"], dtype)

    def step(m, v, p):
      c = compute_dtype(m, p, v)
      u = -(_over_root(as_dtype(m, c), v, eps) + as_dtype(decay, c) * as_dtype(p, c))
      return as_dtype(u, p.dtype)

    out = tree.tree_map(step, m, v, params)
    return out, DAdaptAdamWState(m, v, s, d_new, r, count, hparams)

  return GradientTransformation(init, update, name=stage, spec=spec,
                                options=dict(nu_dtype=nu_dtype))


@names_its_arguments
def dadapt_adamw(learning_rate: ScalarOrSchedule = 1.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: ScalarOrSchedule = 1e-8,
                 estim_lr0: ScalarOrSchedule = 1e-6, weight_decay: ScalarOrSchedule = 0.0, *,
                 nu_dtype: Any = None) -> Chain:
  """D-Adaptation AdamW: AdamW whose learning rate is estimated as it runs.

  .. math::
    \\theta_{t+1} = \\theta_t - \\frac{m_t}{\\sqrt{v_t} + \\epsilon}
      - \\lambda \\gamma_t d_t \\frac{\\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t} \\theta_t

  with :math:`m` an EMA of :math:`\\gamma_t d_t \\frac{\\sqrt{1 - \\beta_2^t}}
  {1 - \\beta_1^t} g_t` and :math:`d_t` estimated as
  :func:`scale_by_dadapt_adamw` says. One stage: the learning rate enters
  the estimate.

  ``optax.contrib.dadapt_adamw``'s rule; :func:`scale_by_dadapt_adamw` says where gradtx
  differs.

  Args:
    learning_rate: :math:`\\gamma_t`, default 1 (a schedule around 1).
    betas: default ``(0.9, 0.999)``.
    eps: default 1e-8.
    estim_lr0: :math:`d_0`, default 1e-6.
    weight_decay: :math:`\\lambda`, default 0.
    nu_dtype: dtype of :math:`v`, gradtx's addition (``jnp.float32`` for
      float16 params; see :func:`scale_by_dadapt_adamw`).

  References:
    Defazio & Mishchenko, *Learning-Rate-Free Learning by D-Adaptation*,
    ICML 2023 (arXiv:2301.07733).

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.dadapt_adamw(weight_decay=1e-4))
    dadapt_adamw(
      dadapt=scale_by_dadapt_adamw(learning_rate=1, betas=(0.9, 0.999), eps=1e-08, estim_lr0=1e-06, weight_decay=0.0001, nu_dtype=None),
    )
  """
  return named_chain("dadapt_adamw", dadapt=scale_by_dadapt_adamw(
      learning_rate, betas, eps, estim_lr0, weight_decay, nu_dtype=nu_dtype))
