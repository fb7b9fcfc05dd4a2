"""optax.contrib: ACProp, AdaBelief's centred second moment used one step late.

ACProp divides the current gradient by the root of the previous step's
centred second moment (the "asynchronous" update); its state is AdaBelief's.

The moments, bias corrections and dtypes are gradtx's shared numerics
(:mod:`gradtx.numerics`), as in :func:`gradtx.scale_by_adam`: the arithmetic
runs in the wider of the gradient's and the moment's dtypes, and a moment
held in a narrower ``mu_dtype`` is used as it is stored.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradtx import numerics, tree
from gradtx.chain import Chain, named_chain
from gradtx.core import (NONNEGATIVE, UNIT_HALF_OPEN, GradientTransformation, HParamSpec,
                         ScalarOrSchedule, check_state, names_its_arguments)
from gradtx.numerics import as_dtype, bias_correction, compute_dtype, safe_increment, safe_sqrt
from gradtx.transforms.adaptive import ScaleByBeliefState, belief_moments
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["acprop", "scale_by_acprop"]


def scale_by_acprop(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                    eps: ScalarOrSchedule = 1e-16, eps_root: ScalarOrSchedule = 1e-16, *,
                    nu_dtype: Any = None) -> GradientTransformation:
  """ACProp's step: the gradient over the root of the *previous* centred second moment.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    s_t = \\beta_2 s_{t-1} + (1-\\beta_2)(g_t - m_t)^2 + \\epsilon_\\text{root}, \\\\
    u_t = \\frac{g_t}{\\sqrt{s_{t-1} / (1-\\beta_2^{t-1})} + \\epsilon}

  for :math:`t \\ge 2`, and :math:`u_1 = g_1 / (1 + \\epsilon)` (there is no
  :math:`s_0` to divide by yet). The numerator is the current gradient and
  the denominator holds information up to step :math:`t-1` only (the
  "asynchronous" update); :math:`m_t` serves only to centre :math:`s_t`.

  Differs from optax 0.2.8: ``optax.contrib.scale_by_acprop`` centres with
  the previous mean, :math:`(g_t - m_{t-1})^2 = (g_t - m_t)^2 / \\beta_1^2`,
  against its own docstring and the paper. Its :math:`s` is then
  :math:`1/\\beta_1^2` times the paper's and its steps from the second on are
  about :math:`\\beta_1` times gradtx's (exactly, with both epsilons 0).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0` outside the root, default 1e-16.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0` added to :math:`s_t` (and
      kept in the state, as AdaBelief does), default 1e-16; keep it positive
      to differentiate through the step.
    nu_dtype: dtype of :math:`s` (the state's ``nu``); ``None`` uses the params'
      dtype. gradtx's addition to optax's arguments. On float16 params give
      ``jnp.float32``: both epsilons are 0 in float16, and so is :math:`s` of
      a small gradient, so the step is 0/0 or :math:`g/0`.

  References:
    Zhuang et al., *Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods*, NeurIPS 2021.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_acprop(eps=0.0, eps_root=0.0)
    >>> state = tx.init(jnp.zeros(2))
    >>> tx.update(jnp.array([2.0, -0.5]), state)[0]  # the first step divides by 1
    Array([ 2. , -0.5], dtype=float32)
  """
  spec = HParamSpec("scale_by_acprop", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    eps=(eps, NONNEGATIVE), eps_root=(eps_root, NONNEGATIVE))

  def init(params):
    return ScaleByBeliefState(numerics.zero_count(), tree.zeros_like(params),
                              tree.accumulator_like(params, dtype=nu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_acprop", state, ScaleByBeliefState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_acprop")
    h, hparams = spec.step(state.hparams)
    first = state.count == 0
    # s_{t-1} is debiased with t - 1 = state.count steps; at the first step, by nothing.
    previous = jnp.maximum(state.count, 1)

    take1, take2 = 1 - h["b1"], 1 - h["b2"]

    def leaf(g, m, s):
      m_new, s_new = belief_moments(g, m, s, take1, take2, h["eps_root"])
      s_hat = jnp.where(first, 1, bias_correction(s, h["b2"], previous))
      dtype = compute_dtype(g, s_hat)
      u = as_dtype(g, dtype) / (safe_sqrt(as_dtype(s_hat, dtype)) + as_dtype(h["eps"], dtype))
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(s_new, s.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByBeliefState(safe_increment(state.count), mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_acprop", spec=spec,
                                options=dict(nu_dtype=nu_dtype))


@names_its_arguments
def acprop(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
           b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-16,
           eps_root: ScalarOrSchedule = 1e-16, weight_decay: ScalarOrSchedule = 0.0,
           mask: Mask | None = None, *, nu_dtype: Any = None) -> Chain:
  """ACProp: AdaBelief's centred second moment, used one step late (asynchronous).

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta_t \\Big(
      \\frac{g_t}{\\sqrt{\\hat s_{t-1}} + \\epsilon} + \\lambda \\theta_t \\Big), \\quad
    s_t = \\beta_2 s_{t-1} + (1-\\beta_2)(g_t - m_t)^2 + \\epsilon_\\text{root}

  with :math:`m_t` the EMA of the gradients and :math:`\\hat s` the debiased
  :math:`s` (see :func:`scale_by_acprop`, which also says where optax 0.2.8
  differs).

  Args:
    learning_rate: :math:`\\eta \\ge 0`, a float or a schedule.
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0`, default 1e-16.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0`, default 1e-16.
    weight_decay: :math:`\\lambda \\ge 0`, decoupled and multiplied by the
      learning rate, default 0.
    mask: which leaves to decay.
    nu_dtype: dtype of :math:`s`, gradtx's addition (``jnp.float32`` for
      float16 params; see :func:`scale_by_acprop`).

  References:
    Zhuang et al., *Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods*, NeurIPS 2021.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.acprop(1e-3))
    acprop(
      acprop=scale_by_acprop(b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, nu_dtype=None),
      decay=add_decayed_weights(weight_decay=0),
      lr=scale_by_learning_rate(learning_rate=0.001, flip_sign=True),
    )
  """
  return named_chain("acprop", acprop=scale_by_acprop(b1, b2, eps, eps_root, nu_dtype=nu_dtype),
                     decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate))
