"""optax.contrib: Mechanic, a learned scale of any base optimizer's steps."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.contrib._common import _as_base
from gradtx.contrib._whole_tree import _scalar_dtype
from gradtx.core import (NONNEGATIVE, POSITIVE, GradientTransformation, HParams, HParamSpec,
                         ScalarOrSchedule, check_state, require_params_like)
from gradtx.numerics import (as_dtype, compute_dtype, safe_increment, safe_sqrt, widened,
                             zero_count)

__all__ = ["MechanicState", "mechanize"]


class MechanicState(NamedTuple):
  """State of :func:`mechanize`: optax's fields, then the hyperparameters.

  ``base_optimizer_state``; ``count``; the arrays ``r``, ``m``, ``v`` and
  ``s`` (one entry per :math:`\\beta_j`); ``x0`` (the reference point
  :math:`x_\\text{ref}`, the params at the first step).
  """
  base_optimizer_state: Any
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  r: jax.Array
  m: jax.Array
  v: jax.Array
  s: jax.Array
  x0: Any
  hparams: HParams


def mechanize(base_optimizer: Any, weight_decay: ScalarOrSchedule = 1e-2,
              eps: ScalarOrSchedule = 1e-8, s_init: ScalarOrSchedule = 1e-6,
              num_betas: int = 6) -> GradientTransformation:
  """Mechanic: learns the scale of a base optimizer's updates (a learning-rate tuner).

  With :math:`u_t` the base optimizer's update, :math:`\\Delta_t =
  -\\sum_{k < t} u_k` (recomputed as :math:`(x_\\text{ref} - \\theta_t) /
  (\\sum_j s_{t,j} + \\epsilon)`), and one accumulator per
  :math:`\\beta_j = 1 - 10^{-j}`, :math:`j = 1 \\dots n`:

  .. math::
    \\tilde g_t = g_t + \\lambda \\textstyle\\sum_j s_{t,j}
      \\frac{\\|g_t\\|}{\\|\\theta_t\\| + \\epsilon} \\theta_t, \\quad
    h_t = \\langle \\tilde g_t, \\Delta_t \\rangle, \\\\
    m_{t,j} = \\max(\\beta_j m_{t-1,j},\\ |h_t| + \\epsilon), \\quad
    v_{t,j} = \\beta_j^2 v_{t-1,j} + h_t^2, \\quad
    r_{t,j} = \\beta_j r_{t-1,j} + \\operatorname{clip}(h_t, \\pm m_{t-1,j})\\, s_{t,j}, \\\\
    s_{t+1,j} = \\frac{\\frac{s_\\text{init}}{n} m_{t,j} + \\max(0, r_{t,j})}
      {\\sqrt{v_{t,j}} + \\epsilon}, \\qquad
    \\theta_{t+1} = x_\\text{ref} + \\textstyle\\sum_j s_{t+1,j}\\, (u_t - \\Delta_t)

  with :math:`s_{1,j} = s_\\text{init}` and norms and inner products over
  the whole tree. The clip of :math:`h_t` is the authors' later addition
  (optax's too). The update returned is :math:`\\theta_{t+1} - \\theta_t`.
  Needs the params; extra arguments (``value=...``) pass to the base optimizer.
  Complex leaves: their gradients conjugated (as optax), the inner product
  :math:`\\operatorname{Re} \\sum \\bar a_i b_i`, :math:`\\|x\\|^2 = \\sum |x_i|^2`.

  Give the base optimizer a learning rate (or schedule) peaking at 1:
  Mechanic learns the scale.

  Args:
    base_optimizer: a gradtx or optax transformation. A gradtx stage that
      is not a chain is held as a one-stage chain, so its hyperparameters
      read as ``"<its name>.<hyperparameter>"`` next to Mechanic's own.
    weight_decay: :math:`\\lambda \\ge 0`, default 1e-2 (Mechanic's own,
      not the base optimizer's).
    eps: :math:`\\epsilon > 0`, default 1e-8.
    s_init: :math:`s_\\text{init} > 0`, default 1e-6. Mechanic reads its
      cumulative step back from the params, :math:`x_\\text{ref} - \\theta_t`
      (as optax): its first steps, about :math:`s_\\text{init}` times the base
      optimizer's, must move them. On float16 params give 1e-2, on bfloat16
      1e-1; with the default they stay where they are.
    num_betas: :math:`n \\ge 1`, default 6 (an int). Structural: it fixes the
      accumulators' shapes.

  References:
    Cutkosky, Defazio & Mehta, *Mechanic: A Learning Rate Tuner*, NeurIPS
    2023 (arXiv:2306.00144), Algorithm 1.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.mechanize(gtx.sgd(1.0))
    >>> sorted(gtx.hparams(tx.init(jnp.zeros(2))))
    ['eps', 'lr.learning_rate', 's_init', 'weight_decay']
  """
  stage = "mechanize"
  if (not isinstance(num_betas, (int, np.integer)) or isinstance(num_betas, bool)
      or num_betas < 1):
    raise ValueError(f"{stage}: num_betas must be an int >= 1, got {num_betas!r}")
  num_betas = int(num_betas)  # a NumPy integer is not weakly typed: a Python int is
  base = _as_base(base_optimizer, stage)
  spec = HParamSpec(stage, weight_decay=(weight_decay, NONNEGATIVE), eps=(eps, POSITIVE),
                    s_init=(s_init, POSITIVE))

  def init(params):
    hparams = spec.init()
    dtype = _scalar_dtype(params)
    s = jnp.full((num_betas,), as_dtype(hparams["s_init"], dtype))
    r, m, v = (jnp.zeros((num_betas,), dtype) for _ in range(3))  # three buffers
    return MechanicState(base.init(params), zero_count(), r, m, v, s, tree.copy(params), hparams)

  def update(updates, state, params=None, **extra):
    check_state(stage, state, MechanicState)
    params = require_params_like(stage, updates, params, state, "x0")
    h, hparams = spec.step(state.hparams)
    base_updates, base_state = base.update(updates, state.base_optimizer_state, params, **extra)
    dtype = state.s.dtype
    eps = as_dtype(h["eps"], dtype)
    # The reference point is the params of the first step, not of init: training loops
    # often load pretrained weights between the two.
    x_ref = tree.where(state.count == 0, params, state.x0)
    s_sum = jnp.sum(state.s)
    shrink = (as_dtype(h["weight_decay"], dtype) * s_sum
              * safe_sqrt(tree.sum_squares(updates, dtype))
              / (safe_sqrt(tree.sum_squares(params, dtype)) + eps))
    decayed = tree.tree_map(lambda g, p: g + as_dtype(shrink, g.dtype) * p.astype(g.dtype),
                            updates, params)

    def over_scale(d):
      # In the scalars' dtype at least: s starts at s_init = 1e-6, a float16 subnormal
      # that XLA's CPU flushes to 0 (0 / 0 = NaN on the first step).
      wide = widened(d, dtype)
      return (wide / as_dtype(s_sum + eps, wide.dtype)).astype(d.dtype)

    delta_prev = tree.tree_map(over_scale, tree.sub(x_ref, params))
    h_t = tree.inner(decayed, delta_prev, dtype)
    betas = jnp.asarray([1 - 0.1**j for j in range(1, num_betas + 1)], dtype)
    m = jnp.maximum(betas * state.m, jnp.abs(h_t) + eps)
    v = betas**2 * state.v + h_t**2
    r = betas * state.r + jnp.clip(h_t, -state.m, state.m) * state.s
    wealth = as_dtype(h["s_init"], dtype) / num_betas * m + jnp.maximum(r, 0)
    s = wealth / (safe_sqrt(v) + eps)  # v = 0 at the first step, where h_t = 0
    s_new = jnp.sum(s)

    def step(p, x0, d, u):
      c = compute_dtype(p, x0, u, s_new)
      # (x_ref - theta_t) first: exact for nearby values, so a small step keeps its digits
      # (optax forms x_ref - s (Delta - u) and subtracts theta_t, losing them). Formed here
      # again, not taken from delta_prev's tree.sub: in the base updates' or the scalars'
      # dtype, which can be wider than the params' (float32 steps or scale of float16 ones;
      # the scale, ~1e-6 at first, is 0 in float16 on XLA's CPU).
      moved = as_dtype(x0, c) - as_dtype(p, c)
      return (moved - as_dtype(s_new, c) * (as_dtype(d, c) - as_dtype(u, c))).astype(p.dtype)

    out = tree.tree_map(step, params, x_ref, delta_prev, base_updates)
    return out, MechanicState(base_state, safe_increment(state.count), r, m, v, s, x_ref,
                              hparams)

  return GradientTransformation(init, update, name=stage, spec=spec,
                                options=dict(num_betas=num_betas, base_optimizer=base))
