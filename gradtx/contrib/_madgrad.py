"""optax.contrib: MADGRAD, momentumized dual averaging with a cube-root scaling.

MADGRAD dual-averages the gradients from the initial parameters and divides
by the cube root of a weighted sum of their squares; its update already
descends, so the stage needs the parameters. The sums run in gradtx's shared
numerics (:mod:`gradtx.numerics`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics, tree
from gradtx.chain import Chain, named_chain
from gradtx.contrib._whole_tree import _real_zeros_like
from gradtx.core import (NONNEGATIVE, POSITIVE, UNIT_HALF_OPEN, GradientTransformation, HParams,
                         HParamSpec, ScalarOrSchedule, check_state, read_once, require_params_like,
                         names_its_arguments)
from gradtx.numerics import (abs_sq, as_dtype, compute_dtype, real_dtype, safe_cbrt,
                             safe_increment)
from gradtx.transforms.decay import add_decayed_weights

__all__ = ["MadgradState", "madgrad", "scale_by_madgrad"]


class MadgradState(NamedTuple):
  """State of :func:`scale_by_madgrad`.

  ``count`` steps taken; ``grad_sum_sq`` the weighted sum :math:`\\nu_k` of
  squared gradients; ``s`` the weighted sum :math:`s_k` of gradients; ``x0``
  the initial parameters :math:`x_0`.
  """
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  grad_sum_sq: Any
  s: Any
  x0: Any
  hparams: HParams


def scale_by_madgrad(learning_rate: ScalarOrSchedule, momentum: ScalarOrSchedule = 0.9,
                     eps: ScalarOrSchedule = 1e-6, *,
                     nu_dtype: Any = None) -> GradientTransformation:
  """MADGRAD's step: momentumized dual averaging with a cube-root scaling.

  .. math::
    \\lambda_k = (\\gamma_k + \\epsilon)\\sqrt{k + 1}, \\quad
    s_{k+1} = s_k + \\lambda_k g_k, \\quad
    \\nu_{k+1} = \\nu_k + \\lambda_k |g_k|^2, \\\\
    z_{k+1} = x_0 - \\frac{s_{k+1}}{\\nu_{k+1}^{1/3} + \\epsilon}, \\quad
    u_k = x_{k+1} - x_k = (1 - \\beta)(z_{k+1} - x_k)

  for :math:`k = 0, 1, \\dots` (the steps taken before this one), with
  :math:`s_0 = \\nu_0 = 0`, :math:`x_0` the parameters given to ``init``,
  :math:`\\gamma_k` the learning rate and :math:`\\beta` the momentum. The
  update already descends (no learning-rate stage follows), so the stage
  needs the parameters. Adding :math:`\\epsilon` to the rate follows the
  authors' PyTorch code (and optax).

  Args:
    learning_rate: :math:`\\gamma \\ge 0`, a float or a schedule of the step.
    momentum: :math:`\\beta \\in [0, 1)`, default 0.9 (the paper's
      :math:`c_{k+1} = 1 - \\beta`).
    eps: :math:`\\epsilon > 0`, default 1e-6. It must be positive: a gradient
      entry that has been zero so far has :math:`\\nu = 0`.
    nu_dtype: dtype of :math:`\\nu` (``grad_sum_sq``, real for a complex leaf);
      ``None`` uses the params' (real) dtype. gradtx's addition to optax's
      arguments. On float16 params give ``jnp.float32``: float16 rounds
      ``eps`` and the small :math:`\\lambda_k g_k^2` to 0 (or to a few bits), and dividing by the
      cube root of what is left makes those entries' steps thousands of times
      too large.

  References:
    Defazio & Jelassi, *Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization*,
    JMLR 2022 (arXiv:2101.11075).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_madgrad(learning_rate=0.1, momentum=0.0, eps=1e-6)
    >>> params = jnp.zeros(2)
    >>> u, _ = tx.update(jnp.array([8.0, -1.0]), tx.init(params), params)
    >>> [round(float(x), 4) for x in u]  # -(l g) / (l g^2)^(1/3) = -l^(2/3) g^(1/3), l ~ 0.1
    [-0.4309, 0.2154]
  """
  spec = HParamSpec("scale_by_madgrad", learning_rate=(learning_rate, NONNEGATIVE),
                    momentum=(momentum, UNIT_HALF_OPEN), eps=(eps, POSITIVE))

  def init(params):
    # nu sums |g|^2: real, also for a complex leaf (its cube root divides the step).
    return MadgradState(numerics.zero_count(), _real_zeros_like(params, nu_dtype),
                        tree.zeros_like(params), tree.copy(params), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_madgrad", state, MadgradState)
    del extra
    params = require_params_like("scale_by_madgrad", updates, params, state, "s")
    h, hparams = spec.step(state.hparams, read=False)
    # The per-step scalars, computed once (in the hyperparameters' dtype) for every leaf.
    dtype = compute_dtype(h["learning_rate"], h["eps"], h["momentum"])
    k = as_dtype(state.count, dtype)
    lam = (as_dtype(h["learning_rate"], dtype) + as_dtype(h["eps"], dtype)) * jnp.sqrt(k + 1)
    scalars = read_once({"lambda": lam, "1-momentum": 1 - as_dtype(h["momentum"], dtype)})

    def leaf(g, nu, s, x0, x):
      dtype = compute_dtype(g, nu, s)
      real = real_dtype(dtype)  # dtype itself for a real leaf
      lam, c = (as_dtype(scalars[n], dtype) for n in ("lambda", "1-momentum"))
      g_ = as_dtype(g, dtype)
      nu_new = as_dtype(nu, real) + as_dtype(scalars["lambda"], real) * abs_sq(g_)
      s_new = as_dtype(s, dtype) + lam * g_
      sigma = as_dtype(safe_cbrt(nu_new) + as_dtype(h["eps"], real), dtype)
      # (1 - beta) z + beta x - x as (1 - beta)((x_0 - x) - s / sigma): forming z first
      # would round a step much smaller than x to x's last digits.
      u = c * ((as_dtype(x0, dtype) - as_dtype(x, dtype)) - s_new / sigma)
      return as_dtype(u, g.dtype), as_dtype(nu_new, nu.dtype), as_dtype(s_new, s.dtype)

    updates, grad_sum_sq, s = tree.map_multi(leaf, 3, updates, state.grad_sum_sq, state.s,
                                             state.x0, params)
    return updates, MadgradState(safe_increment(state.count), grad_sum_sq, s, state.x0, hparams)

  return GradientTransformation(init, update, name="scale_by_madgrad", spec=spec,
                                options=dict(nu_dtype=nu_dtype))


@names_its_arguments
def madgrad(learning_rate: ScalarOrSchedule, momentum: ScalarOrSchedule = 0.9,
            weight_decay: ScalarOrSchedule = 0.0, eps: ScalarOrSchedule = 1e-6, *,
            nu_dtype: Any = None) -> Chain:
  """MADGRAD: momentumized, adaptive, dual-averaged gradient descent.

  .. math::
    z_{k+1} = x_0 - \\frac{\\sum_{i \\le k} \\lambda_i g_i}
      {(\\sum_{i \\le k} \\lambda_i g_i^2)^{1/3} + \\epsilon}, \\quad
    x_{k+1} = \\beta x_k + (1 - \\beta) z_{k+1}

  with :math:`\\lambda_i = (\\gamma_i + \\epsilon)\\sqrt{i + 1}` and
  :math:`g_i` the gradient plus :math:`\\lambda_\\text{wd} x_i` (L2 weight
  decay, coupled as in the authors' code); see :func:`scale_by_madgrad`.

  Matches ``optax.contrib.madgrad`` (``nu_dtype`` is gradtx's addition).

  Args:
    learning_rate: :math:`\\gamma \\ge 0`, a float or a schedule.
    momentum: :math:`\\beta \\in [0, 1)`, default 0.9.
    weight_decay: :math:`\\lambda_\\text{wd} \\ge 0`, added to the gradient, default 0.
    eps: :math:`\\epsilon > 0`, default 1e-6.
    nu_dtype: dtype of :math:`\\nu`, gradtx's addition (``jnp.float32`` for
      float16 params; see :func:`scale_by_madgrad`).

  References:
    Defazio & Jelassi, *Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization*,
    JMLR 2022 (arXiv:2101.11075).

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.madgrad(1e-2))
    madgrad(
      decay=add_decayed_weights(weight_decay=0),
      madgrad=scale_by_madgrad(learning_rate=0.01, momentum=0.9, eps=1e-06, nu_dtype=None),
    )
  """
  return named_chain("madgrad", decay=add_decayed_weights(weight_decay),
                     madgrad=scale_by_madgrad(learning_rate, momentum, eps, nu_dtype=nu_dtype))
