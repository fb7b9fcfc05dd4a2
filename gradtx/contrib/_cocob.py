"""optax.contrib: COCOB, coin betting without a learning rate."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradtx import tree
from gradtx.chain import Chain, named_chain
from gradtx.contrib._whole_tree import _real_zeros_like
from gradtx.core import (POSITIVE, GradientTransformation, HParams, HParamSpec, ScalarOrSchedule,
                         check_state, require_params_like, names_its_arguments)
from gradtx.numerics import as_dtype, compute_dtype, real_dtype
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["COCOBState", "cocob", "scale_by_cocob"]


class COCOBState(NamedTuple):
  """State of :func:`scale_by_cocob`: optax's fields, then the hyperparameters.

  Per entry: ``init_particles`` (:math:`w_1`), ``cumulative_gradients``
  (:math:`\\theta_t`), ``scale`` (:math:`L_t`), ``subgradients``
  (:math:`G_t`) and ``reward`` (:math:`R_t`).
  """
  init_particles: Any
  cumulative_gradients: Any
  scale: Any
  subgradients: Any
  reward: Any
  hparams: HParams


def scale_by_cocob(alpha: ScalarOrSchedule = 100.0,
                   eps: ScalarOrSchedule = 1e-8) -> GradientTransformation:
  """COCOB-Backprop: each entry bets a fraction of its winnings on the gradient's sign.

  .. math::
    L_t = \\max(L_{t-1}, |g_t|), \\quad G_t = G_{t-1} + |g_t|, \\quad
    R_t = \\max\\left(R_{t-1} - g_t (w_t - w_1),\\ 0\\right), \\quad
    \\theta_t = \\theta_{t-1} - g_t, \\\\
    w_{t+1} = w_1 + \\frac{\\theta_t}{L_t \\max(G_t + L_t,\\ \\alpha L_t)} (L_t + R_t),
    \\qquad u_t = w_{t+1} - w_t

  entry by entry, with :math:`L_0 = \\epsilon` and :math:`G_0 = R_0 =
  \\theta_0 = 0`. The update is the step to add. Needs the params.
  A complex entry (its gradient conjugated, as optax) bets as a 2-D coin, with
  :math:`\\operatorname{Re}(\\bar g_t (w_t - w_1))` for :math:`g_t (w_t - w_1)`; L, G, R real.

  Args:
    alpha: :math:`\\alpha > 0`, default 100: bounds the bet of the first steps.
    eps: :math:`\\epsilon > 0`, default 1e-8: the initial :math:`L`, so an
      entry whose gradients are all zero stays put. It enters at ``init`` only.

  References:
    Orabona & Tommasi, *Training Deep Networks without Learning Rates Through
    Coin Betting*, NeurIPS 2017, Algorithm 2.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_cocob()
    >>> params = jnp.zeros(2)
    >>> tx.update(jnp.array([2.0, -4.0]), tx.init(params), params)[0]  # -sign(g) / alpha
    Array([-0.01,  0.01], dtype=float32)
  """
  stage = "scale_by_cocob"
  spec = HParamSpec(stage, alpha=(alpha, POSITIVE), eps=(eps, POSITIVE))

  def init(params):
    hparams = spec.init()
    real_zeros = _real_zeros_like(params)
    scale = tree.full_like(real_zeros, hparams["eps"])
    return COCOBState(tree.copy(params), tree.zeros_like(params), scale, real_zeros,
                      _real_zeros_like(params), hparams)

  def update(updates, state, params=None, **extra):
    check_state(stage, state, COCOBState)
    del extra
    params = require_params_like(stage, updates, params, state, "init_particles")
    h, hparams = spec.step(state.hparams)

    def leaf(g, p, w1, theta, big_l, big_g, reward):
      c = compute_dtype(g, p, w1)
      real = real_dtype(c)
      g, p, w1 = as_dtype(g, c), as_dtype(p, c), as_dtype(w1, c)
      big_l_new = jnp.maximum(as_dtype(big_l, real), jnp.abs(g))
      big_g_new = as_dtype(big_g, real) + jnp.abs(g)
      # The coin's outcome <g, w_t - w_1>: Re(conj(g) (w_t - w_1)) for a complex entry.
      reward_new = jnp.maximum(as_dtype(reward, real) - jnp.real(jnp.conj(g) * (p - w1)), 0)
      theta_new = as_dtype(theta, c) - g
      denominator = big_l_new * jnp.maximum(big_g_new + big_l_new,
                                            as_dtype(h["alpha"], real) * big_l_new)
      bet = theta_new / as_dtype(denominator, c)
      # (w_1 - w_t) first: exact for nearby values, so a small bet keeps its digits.
      u = (w1 - p) + bet * as_dtype(big_l_new + reward_new, c)
      # as_dtype, not astype: a cast to the dtype an array has already is then Python's
      # work alone, where astype costs an eager step about what an operation does.
      return (as_dtype(u, p.dtype), as_dtype(theta_new, theta.dtype),
              as_dtype(big_l_new, big_l.dtype), as_dtype(big_g_new, big_g.dtype),
              as_dtype(reward_new, reward.dtype))

    u, theta, big_l, big_g, reward = tree.map_multi(
        leaf, 5, updates, params, state.init_particles, state.cumulative_gradients, state.scale,
        state.subgradients, state.reward)
    return u, COCOBState(state.init_particles, theta, big_l, big_g, reward, hparams)

  return GradientTransformation(init, update, name=stage, spec=spec)


@names_its_arguments
def cocob(learning_rate: ScalarOrSchedule = 1.0, alpha: ScalarOrSchedule = 100.0,
          eps: ScalarOrSchedule = 1e-8, weight_decay: ScalarOrSchedule = 0.0,
          mask: Mask | None = None) -> Chain:
  """COCOB: coin betting instead of a learning rate, entry by entry.

  .. math::
    \\tilde g_t = \\gamma_t (g_t + \\lambda w_t), \\qquad
    w_{t+1} = w_1 + \\frac{\\theta_t}{L_t \\max(G_t + L_t,\\ \\alpha L_t)} (L_t + R_t)

  with :math:`\\theta, L, G, R` the sums, maxima and rewards of
  :math:`\\tilde g` (see :func:`scale_by_cocob`). ``learning_rate`` scales
  the gradients before the bet (no sign flip): it is a schedule's hook,
  1 by default.

  Matches ``optax.contrib.cocob``.

  Args:
    learning_rate: :math:`\\gamma_t`, default 1.
    alpha: default 100.
    eps: default 1e-8.
    weight_decay: :math:`\\lambda \\ge 0`, default 0 (an L2 penalty).
    mask: which leaves to decay.

  References:
    Orabona & Tommasi, *Training Deep Networks without Learning Rates Through
    Coin Betting*, NeurIPS 2017.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.cocob())
    cocob(
      decay=add_decayed_weights(weight_decay=0),
      lr=scale_by_learning_rate(learning_rate=1, flip_sign=False),
      cocob=scale_by_cocob(alpha=100, eps=1e-08),
    )
  """
  return named_chain("cocob", decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate, flip_sign=False),
                     cocob=scale_by_cocob(alpha, eps))
