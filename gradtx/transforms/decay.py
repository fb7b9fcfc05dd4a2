"""Decay: L2 (coupled or decoupled) and L1 regularisation added to the updates."""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

from gradtx import tree
from gradtx.core import (NONNEGATIVE, GradientTransformation, ScalarOrSchedule, require_params,
                         stateless)
from gradtx.numerics import as_dtype

__all__ = ["add_decayed_weights", "add_l1_penalty"]

Mask = Any | Callable[[Any], Any]


def _maybe_masked(tx: GradientTransformation, mask: Mask | None) -> GradientTransformation:
  if mask is None:
    return tx
  from gradtx.wrappers import masked  # wrappers build on transforms, not the reverse
  return masked(tx, mask)


def add_decayed_weights(weight_decay: ScalarOrSchedule = 0.0,
                        mask: Mask | None = None) -> GradientTransformation:
  """Adds the parameters, scaled, to the updates: weight decay.

  .. math:: u \\leftarrow g + \\lambda\\, \\theta

  Placed before an adaptive stage this is L2 regularisation (the penalty
  :math:`\\tfrac{\\lambda}{2}\\|\\theta\\|^2` added to the loss, as torch's
  ``Adam(weight_decay=...)``); placed after it, just before the learning rate,
  it is decoupled weight decay (AdamW; torch's ``AdamW`` multiplies by the
  learning rate the same way).

  Matches ``optax.add_decayed_weights``.

  Args:
    weight_decay: :math:`\\lambda \\ge 0`, default 0.
    mask: a tree of bools shaped like (or a prefix of) the params, or a
      callable of the params returning one; ``True`` marks leaves to decay.
      Structural: fixed at construction.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.add_decayed_weights(0.1)
    >>> params = jnp.array([1.0, 2.0])
    >>> tx.update(jnp.zeros(2), tx.init(params), params)[0]
    Array([0.1, 0.2], dtype=float32)
  """

  def add_decayed_weights(updates, params, weight_decay):
    params = require_params("add_decayed_weights", params)
    return tree.tree_map(
        lambda g, p: g + as_dtype(weight_decay, g.dtype) * as_dtype(p, g.dtype), updates, params)

  tx = stateless(add_decayed_weights, weight_decay=(weight_decay, NONNEGATIVE))
  return _maybe_masked(tx, mask)


def add_l1_penalty(l1: ScalarOrSchedule = 0.0, mask: Mask | None = None) -> GradientTransformation:
  """Adds the subgradient of an L1 penalty: :math:`u \\leftarrow g + \\lambda_1 \\operatorname{sign}(\\theta)`.

  The gradient of :math:`\\lambda_1 \\|\\theta\\|_1` (with
  :math:`\\operatorname{sign}(0) = 0`); place it before the adaptive stage to
  regularise the loss, or after it to decay decoupled from the gradient scale.

  Not in optax (gradtx's addition).

  Args:
    l1: :math:`\\lambda_1 \\ge 0`, default 0.
    mask: as in :func:`add_decayed_weights`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.add_l1_penalty(0.1)
    >>> params = jnp.array([-3.0, 0.0, 2.0])
    >>> tx.update(jnp.zeros(3), tx.init(params), params)[0]
    Array([-0.1,  0. ,  0.1], dtype=float32)
  """

  def add_l1_penalty(updates, params, l1):
    params = require_params("add_l1_penalty", params)
    return tree.tree_map(
        lambda g, p: g + as_dtype(l1, g.dtype) * as_dtype(jnp.sign(p), g.dtype),
        updates, params)

  tx = stateless(add_l1_penalty, l1=(l1, NONNEGATIVE))
  return _maybe_masked(tx, mask)
