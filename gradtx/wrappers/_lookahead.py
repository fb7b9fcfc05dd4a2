"""Lookahead: slow weights that follow a fast optimizer."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import (POSITIVE_INT, UNIT, GradientTransformation, HParams, HParamSpec,
                         ScalarOrSchedule, as_transformation, check_state, checks_flags,
                         require_params)
from gradtx.errors import StructureError
from gradtx.numerics import as_dtype, safe_increment
from gradtx.wrappers._common import PyTree, reset_keeping_hparams


# ----------------------------------------------------------------------------
# Lookahead.


class LookaheadParams(NamedTuple):
  """The parameters :func:`lookahead` works on: ``fast`` (take gradients here) and
  ``slow`` (evaluate and deploy these)."""
  fast: Any
  slow: Any

  @classmethod
  def init_synced(cls, params: PyTree) -> "LookaheadParams":
    """Fast and slow parameters both equal to ``params``.

    ``slow`` is a copy, so that a step may donate both (optax's holds ``params``
    twice, one buffer that ``donate_argnums`` refuses to donate twice).
    """
    return cls(fast=params, slow=tree.copy(params))


class LookaheadState(NamedTuple):
  """State of :func:`lookahead`: the fast optimizer's state and the steps since the last sync."""
  fast_state: Any
  steps_since_sync: jax.Array
  hparams: HParams


@checks_flags
def lookahead(fast_optimizer: GradientTransformation, sync_period: int,
              slow_step_size: ScalarOrSchedule,
              reset_state: bool = False) -> GradientTransformation:
  """Lookahead: ``k`` steps of a fast optimizer, then one step of the slow weights towards them.

  .. math::
    \\phi_{t+1} = \\phi_t + \\text{fast}(g_t), \\qquad
    \\text{every } k \\text{ steps: } \\theta \\leftarrow \\theta + \\alpha(\\phi - \\theta),
    \\ \\phi \\leftarrow \\theta

  where :math:`\\phi` are the fast and :math:`\\theta` the slow parameters.
  Params and updates are :class:`LookaheadParams` ``(fast, slow)``; take
  gradients at ``params.fast``, evaluate at ``params.slow``, and apply the
  updates unchanged (with :func:`gradtx.apply_updates`). Same arguments and
  semantics as ``optax.lookahead``.

  Args:
    fast_optimizer: the inner optimizer.
    sync_period: :math:`k \\ge 1`, fast steps per sync.
    slow_step_size: :math:`\\alpha \\in [0, 1]`.
    reset_state: re-initialise the fast optimizer's state at each sync (its
      hyperparameters, including values set by name, are kept, and so are its
      schedules' step counts: a schedule follows the training step; optax's
      restarts it at each sync).

  References:
    Zhang, Lucas, Hinton & Ba, *Lookahead Optimizer: k steps forward, 1 step
    back*, NeurIPS 2019.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.lookahead(gtx.sgd(0.5), sync_period=2, slow_step_size=0.5)
    >>> params = gtx.LookaheadParams.init_synced(jnp.zeros(1))
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(jnp.ones(1), state, params)
    ...   params = gtx.apply_updates(params, updates)
    >>> params.slow, params.fast
    (Array([-0.5], dtype=float32), Array([-0.5], dtype=float32))
  """
  fast_optimizer = as_transformation(fast_optimizer, "lookahead", "fast_optimizer")
  spec = HParamSpec("lookahead", sync_period=(sync_period, POSITIVE_INT),
                    slow_step_size=(slow_step_size, UNIT))

  def fast_params(params):
    return params.fast if hasattr(params, "fast") else params

  def init(params):
    # Plain params are taken as the fast ones, as optax does.
    return LookaheadState(fast_optimizer.init(fast_params(params)), jnp.zeros([], jnp.int32),
                          spec.init())

  def update(updates, state, params=None, **extra):
    check_state("lookahead", state, LookaheadState)
    params = require_params("lookahead", params)
    if not (hasattr(params, "fast") and hasattr(params, "slow")):
      raise StructureError("lookahead: params must be LookaheadParams(fast=..., slow=...) "
                           f"(start from LookaheadParams.init_synced(params)), got "
                           f"{type(params).__name__}")
    tree.check_structure(params.fast, params.slow, "params.fast", "params.slow", stage="lookahead")
    # Admission masked the updates without a gradient (None), but not the (fast, slow)
    # pair, which is not shaped as the updates: the fast params are masked here alike.
    try:
      fast = jax.tree.map(lambda u, p: u if tree.is_masked(u) else p, updates, params.fast,
                          is_leaf=tree.is_masked)
    except ValueError:  # of another structure: the check below names where
      fast = params.fast
    tree.check_structure(fast, updates, "params.fast", "updates", stage="lookahead")
    h, hparams = spec.step(state.hparams)
    updates, fast_state = fast_optimizer.update(updates, state.fast_state, fast, **extra)
    sync = state.steps_since_sync >= h["sync_period"] - 1

    def leaf(u, phi, theta):
      alpha, on = as_dtype(h["slow_step_size"], u.dtype), sync.astype(u.dtype)
      last_difference = phi.astype(u.dtype) + u - theta.astype(u.dtype)
      return u - on * (1 - alpha) * last_difference, on * alpha * last_difference

    fast_updates, slow_updates = tree.map_multi(leaf, 2, updates, params.fast, params.slow)
    if reset_state:
      fast_state = reset_keeping_hparams(sync, fast_state, fast_optimizer.init(params.fast))
    steps = jnp.where(sync, jnp.zeros([], jnp.int32), safe_increment(state.steps_since_sync))
    return (LookaheadParams(fast=fast_updates, slow=slow_updates),
            LookaheadState(fast_state, steps, hparams))

  return GradientTransformation(init, update, name="lookahead", spec=spec, options=dict(
      fast_optimizer=fast_optimizer, reset_state=reset_state))
