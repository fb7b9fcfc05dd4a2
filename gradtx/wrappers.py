"""Wrappers: transformations that run another transformation on some terms.

A wrapper's state holds the wrapped stage's state in a field named
``inner_state``; the hyperparameter walk passes through it, so a wrapped
stage's hyperparameters read under the wrapper's stage name.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from gradtx import tree
from gradtx.core import GradientTransformation, as_transformation
from gradtx.errors import StructureError
from gradtx.packed import Packed, masked_update
from gradtx.tree import MaskedNode

__all__ = ["MaskedState", "masked"]

PyTree = Any


class MaskedState(NamedTuple):
  """State of :func:`masked`: the wrapped stage's state, for the masked-in leaves."""
  inner_state: Any


def _is_masked(x: Any) -> bool:
  return isinstance(x, MaskedNode)


def _resolve_mask(mask: PyTree | Callable[[PyTree], PyTree], params: PyTree) -> PyTree:
  return mask(params) if callable(mask) else mask


def _apply_mask(mask_tree: PyTree, values: PyTree, what: str) -> PyTree:
  """``values`` with every subtree under a ``False`` mask leaf replaced by MaskedNode."""
  try:
    return jax.tree.map(lambda m, v: v if m else MaskedNode(), mask_tree, values,
                        is_leaf=_is_masked)
  except (ValueError, TypeError):
    # The mask must be a prefix of the values; report where it is not.
    tree.check_structure(mask_tree, jax.tree.map(lambda *_: 0, mask_tree, is_leaf=_is_masked),
                         "mask", "mask")
    mask_paths = {k for k in tree._leaves_by_path(mask_tree)}
    value_paths = list(tree._leaves_by_path(values))
    for key in mask_paths:
      if not any(v.startswith(key) for v in value_paths):
        raise StructureError(f"masked: the mask has key path {key}, which {what} lack") from None
    raise StructureError(f"masked: the mask is not a prefix of the {what}' tree structure: "
                         f"mask {jax.tree.structure(mask_tree)} vs {what} "
                         f"{jax.tree.structure(values)}") from None


def masked(inner: GradientTransformation, mask: PyTree | Callable[[PyTree], PyTree],
           ) -> GradientTransformation:
  """Applies ``inner`` only to the leaves where ``mask`` is ``True``.

  Masked-out leaves pass through unchanged and ``inner`` keeps no state for
  them (it sees :class:`~gradtx.tree.MaskedNode` in their place).

  Args:
    inner: the transformation to apply.
    mask: a tree of bools with the params' structure (or a prefix of it), or
      a callable of the params returning one.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
    >>> tx = gtx.masked(gtx.scale(0.0), {"w": True, "b": False})
    >>> tx.update(params, tx.init(params))[0]
    {'b': Array([1., 1.], dtype=float32), 'w': Array([0., 0.], dtype=float32)}
  """
  inner = as_transformation(inner, where="masked")

  def init(params):
    if isinstance(params, Packed):  # packed mode masks elements: see gradtx.packed
      return MaskedState(inner.init(params))
    mask_tree = _resolve_mask(mask, params)
    return MaskedState(inner.init(_apply_mask(mask_tree, params, "params")))

  def update(updates, state, params=None, **extra):
    if isinstance(updates, Packed):
      updates, inner_state = masked_update(inner, mask, updates, state.inner_state, params,
                                           **extra)
      return updates, MaskedState(inner_state)
    mask_tree = _resolve_mask(mask, updates if params is None else params)
    masked_updates = _apply_mask(mask_tree, updates, "updates")
    masked_params = None if params is None else _apply_mask(mask_tree, params, "params")
    new_masked, inner_state = inner.update(masked_updates, state.inner_state, masked_params,
                                           **extra)
    updates = jax.tree.map(lambda new, old: old if _is_masked(new) else new,
                           new_masked, updates, is_leaf=_is_masked)
    return updates, MaskedState(inner_state)

  return GradientTransformation(init, update, name=inner.name, spec=inner.spec,
                                options=dict(mask=mask))
