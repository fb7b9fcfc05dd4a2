"""Hiding leaves: :func:`masked`, :func:`freeze`, :func:`set_to_zero`, and the mask machinery."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.chain import Chain
from gradtx.core import (GradientTransformation, as_transformation, check_state, checks_flags,
                         stateless)
from gradtx.errors import StructureError
from gradtx.packed import Packed, masked_init, masked_update
from gradtx.tree import UNMASKED as _UNMASKED
from gradtx.tree import MaskedNode
from gradtx.wrappers._common import Mask, PyTree


# ----------------------------------------------------------------------------
# Hiding leaves.


def _has_masked(values: PyTree) -> bool:
  return any(tree.is_masked(x) for x in jax.tree.leaves(values, is_leaf=tree.is_masked))


def _fills(values: PyTree, real: PyTree) -> bool:
  """Whether ``real`` is ``values`` with each MaskedNode replaced by a subtree."""
  try:
    same = jax.tree.map(lambda v, r: tree.is_masked(v) or np.shape(v) == np.shape(r),
                        values, real, is_leaf=tree.is_masked)
  except (ValueError, TypeError):
    return False
  return all(jax.tree.leaves(same))


def _filled(values: PyTree, real: PyTree) -> PyTree:
  """``values`` with each MaskedNode that stands for one leaf of ``real`` replaced by it.

  One for one, so the view has the leaves of ``values``: a masked-out array, an integer
  buffer or a key comes back; a ``None`` (no leaf) stays a MaskedNode.
  """
  def fill(v: Any, r: Any) -> Any:
    if not tree.is_masked(v):
      return v
    leaves = jax.tree.leaves(r, is_leaf=tree.is_masked)
    return r if len(leaves) == 1 and leaves[0] is r and not tree.is_masked(r) else v
  return jax.tree.map(fill, values, real, is_leaf=tree.is_masked)


@contextlib.contextmanager
def unmasked_view(values: PyTree) -> Iterator[PyTree]:
  """Yields the unmasked tree behind ``values``; nested masks see it while the block runs."""
  known = _UNMASKED.get()
  use_known = known is not None and _has_masked(values) and _fills(values, known)
  real = _filled(values, known) if use_known else values
  token = _UNMASKED.set(real)
  try:
    yield real
  finally:
    _UNMASKED.reset(token)


def _first_leaf_path(node: PyTree, path: tuple) -> str:
  """The key path of ``node``'s first leaf (``path`` itself for a leaf or an empty node)."""
  leaves = jax.tree_util.tree_flatten_with_path(node, is_leaf=tree.is_masked)[0]
  return tree.keystr((*path, *leaves[0][0]) if leaves else path)


def prefix_error(prefix: PyTree, real: PyTree, where: str, what: str,
                 is_leaf: Callable[[Any], bool] | None = None) -> str:
  """Names the first key path where ``prefix`` is not a prefix of ``real``; ``is_leaf``
  marks more of the prefix's nodes as leaves (a dimension numbers tuple, a ``None``).

  Both trees are walked once, together, down to where they part: comparing every key
  path of one with every key path of the other took seconds on a large model.
  """
  pending = [((), prefix, real)]
  while pending:  # depth first, in pytree order
    path, p, r = pending.pop()
    if is_leaf is not None and is_leaf(p):
      continue
    p_children, p_def = tree.one_level(p)
    if p_def.num_leaves == 1 and jax.tree_util.treedef_is_leaf(p_def):
      continue  # a leaf of the prefix (or a MaskedNode) covers whatever is below it
    r_children, r_def = tree.one_level(r)
    if p_def == r_def:  # type: ignore[operator]  # jax's PyTreeDef is untyped
      pending.extend(reversed([((*path, *entry), x, y)
                               for (entry, x), (_, y) in zip(p_children, r_children)]))
      continue
    r_keys = {jax.tree_util.keystr(entry): child for entry, child in r_children}
    p_keys = {jax.tree_util.keystr(entry): child for entry, child in p_children}
    for entry, child in p_children:
      if jax.tree_util.keystr(entry) not in r_keys:
        return (f"{where}: the {what} has key path {_first_leaf_path(child, (*path, *entry))}, "
                "which the params do not have")
    for entry, child in r_children:
      if jax.tree_util.keystr(entry) not in p_keys:
        return (f"{where}: the params have key path {_first_leaf_path(child, (*path, *entry))}, "
                f"which the {what} does not cover")
    if not p_children and r_def.num_leaves:  # a None (or an empty node) over leaves
      return (f"{where}: the params have key path {_first_leaf_path(r, path)}, which the "
              f"{what} does not cover")
    return (f"{where}: the {what} must have the params' tree structure or a prefix of it; at "
            f"key path {tree.keystr(path)} the {what} has {tree.short_container(p_def)}, the "
            f"params {tree.short_container(r_def)}")
  return (f"{where}: the {what} must have the params' tree structure or a prefix of it")


def _per_leaf(prefix: PyTree, real: PyTree, where: str, what: str) -> PyTree:
  """``prefix`` (a prefix of ``real``'s structure) broadcast to one entry per leaf of ``real``.

  A ``None`` in ``prefix`` where ``real`` holds a MaskedNode (a ``None`` param,
  masked on admission) covers it: the tree ``jax.tree.map(f, params)`` gives for
  params with ``None`` leaves, as optax takes it.
  """
  leaves = jax.tree_util.tree_flatten_with_path(real, is_leaf=tree.is_masked)[0]
  absent = {path for path, x in leaves if tree.is_masked(x)}
  if absent:
    prefix = jax.tree_util.tree_map_with_path(
        lambda path, x: MaskedNode() if x is None and path in absent else x, prefix,
        is_leaf=lambda x: x is None)
  try:
    return jax.tree.map(lambda entry, sub: jax.tree.map(lambda _: entry, sub, is_leaf=tree.is_masked),
                        prefix, real, is_leaf=tree.is_masked)
  except (ValueError, TypeError):
    raise StructureError(prefix_error(prefix, real, where, what)) from None


def _is_static_bool(m: Any) -> bool:
  if isinstance(m, (bool, np.bool_)):
    return True
  return (isinstance(m, (np.ndarray, jax.Array)) and not isinstance(m, jax.core.Tracer)
          and m.shape == () and m.dtype == np.bool_)


def _mask_per_leaf(mask: Mask, real: PyTree, where: str) -> PyTree:
  """A bool per leaf of ``real``: the mask (called on ``real`` if callable), broadcast."""
  mask_tree = mask(real) if tree.is_function_of_params(mask) else mask
  per_leaf = _per_leaf(mask_tree, real, where, "mask")
  for path, m in jax.tree_util.tree_flatten_with_path(per_leaf, is_leaf=tree.is_masked)[0]:
    if not tree.is_masked(m) and not _is_static_bool(m):
      raise StructureError(
          f"{where}: the mask must hold Python bools (it is fixed when the step is "
          f"traced); at key path {tree.keystr(path)} it holds {type(m).__name__} {m!r}")
  return per_leaf


def _packed_view(mask: Any, updates: Packed, params: Packed | None) -> PyTree:
  """The tree a mask (or labels) of a packed step is resolved on: the user's tree for a
  callable; for a tree, the layout's template (only the shapes: no slices traced)."""
  layout = updates.layout
  if not tree.is_function_of_params(mask):
    return layout.template()
  return layout.unpack(updates if params is None else params)


def _hide(keep: PyTree, values: PyTree) -> PyTree:
  """``values`` with every leaf whose ``keep`` entry is False replaced by MaskedNode."""
  return jax.tree.map(lambda v, k: v if tree.is_masked(v) or bool(k) else MaskedNode(),
                      values, keep, is_leaf=tree.is_masked)


def _unhide(new: PyTree, old: PyTree) -> PyTree:
  """``new`` with each MaskedNode filled back in from ``old``."""
  return jax.tree.map(lambda n, o: o if tree.is_masked(n) else n, new, old, is_leaf=tree.is_masked)


def _hide_extra(keep: PyTree, extra: dict[str, Any], updates: PyTree) -> dict[str, Any]:
  """Extra arguments shaped like the updates (per-parameter tags), hidden like them."""
  structure = jax.tree.structure(updates, is_leaf=tree.is_masked)
  return {k: _hide(keep, v) if jax.tree.structure(v, is_leaf=tree.is_masked) == structure else v  # type: ignore[operator]  # jax's PyTreeDef is untyped
          for k, v in extra.items()}


class MaskedState(NamedTuple):
  """State of :func:`masked`: the wrapped stage's state, for the masked-in leaves."""
  inner_state: Any


@checks_flags
def masked(inner: GradientTransformation, mask: Mask, *,
           mask_compatible_extra_args: bool = False) -> GradientTransformation:
  """Applies ``inner`` only to the leaves where ``mask`` is ``True``.

  .. math::
    u_i = \\begin{cases} \\text{inner}(g)_i & m_i \\\\ g_i & \\text{otherwise} \\end{cases}

  Masked-out leaves pass through unchanged and ``inner`` keeps no state for
  them (it sees :class:`~gradtx.tree.MaskedNode` in their place). Same
  arguments and semantics as ``optax.masked``; unlike optax, masks nest: in
  ``masked(masked(tx, m1), m2)`` a callable ``m1`` is called on the real
  params, not on a tree holding ``MaskedNode``.

  Args:
    inner: the transformation to apply.
    mask: a tree of bools with the params' structure (or a prefix of it), or
      a callable of the params (of the updates when ``update`` gets no params)
      returning one. Fixed when the step is traced.
    mask_compatible_extra_args: also hide the masked-out leaves of extra
      ``update`` arguments that have the updates' tree structure.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    >>> not_bias = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    >>> tx = gtx.masked(gtx.add_decayed_weights(0.1), not_bias)
    >>> updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    >>> updates["b"], updates["w"][0]
    (Array([0., 0.], dtype=float32), Array([0.1, 0.1], dtype=float32))
  """
  return _masked(inner, mask, mask_compatible_extra_args, "masked")


def _masked(inner: GradientTransformation, mask: Mask, mask_compatible_extra_args: bool,
            where: str) -> GradientTransformation:
  """:func:`masked`, its errors naming ``where``: the function the user called
  (``"freeze"``)."""
  inner = as_transformation(inner, where, "inner")

  def init(params):
    # Packed mode masks elements, not leaves (see gradtx.packed); tree_map_params's
    # placeholder has no leaves to mask.
    if isinstance(params, Packed):
      keep = _mask_per_leaf(mask, _packed_view(mask, params, None), where)
      return MaskedState(masked_init(inner, keep, params))
    if tree.is_params_placeholder(params):
      return MaskedState(inner.init(params))
    with unmasked_view(params) as real:
      keep = _mask_per_leaf(mask, real, where)
      return MaskedState(inner.init(_hide(keep, params)))

  def update(updates, state, params=None, **extra):
    check_state(where, state, MaskedState)
    if params is not None:
      tree.check_structure(params, updates, "params", "updates", stage=where)
    if isinstance(updates, Packed):
      # Checked here as in tree mode, so a mask that is not bools raises the same error
      # (the element mask alone would take it by truthiness).
      keep = _mask_per_leaf(mask, _packed_view(mask, updates, params), where)
      updates, inner_state = masked_update(inner, keep, updates, state.inner_state, params,
                                           mask_extra=mask_compatible_extra_args, **extra)
      return updates, MaskedState(inner_state)
    with unmasked_view(updates if params is None else params) as real:
      keep = _mask_per_leaf(mask, real, where)
      if mask_compatible_extra_args:
        extra = _hide_extra(keep, extra, updates)
      new_updates, inner_state = inner.update(
          _hide(keep, updates), state.inner_state,
          None if params is None else _hide(keep, params), **extra)
    return _unhide(new_updates, updates), MaskedState(inner_state)

  # A masked stage inside shows both masks; a chain shows its stages (it has no options).
  if "mask" in inner.options or isinstance(inner, Chain):
    return GradientTransformation(init, update, name="masked",
                                  options=dict(inner=inner, mask=mask))
  return GradientTransformation(init, update, name=inner.name, spec=inner.spec,
                                options={**inner.options, "mask": mask})


def _zeros(updates: PyTree, params: PyTree) -> PyTree:
  del params
  return tree.tree_map(jnp.zeros_like, updates)


def set_to_zero() -> GradientTransformation:
  """Sets every update to zero: :math:`u \\leftarrow 0`.

  With :func:`partition`, the parameters of a group that maps to it never
  move (and no optimizer keeps state for them). Same as
  ``optax.set_to_zero``; no state is kept but an empty
  :class:`~gradtx.EmptyState`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.set_to_zero()
    >>> tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))[0]
    Array([0., 0.], dtype=float32)
  """
  return stateless(_zeros, name="set_to_zero")


def freeze(mask: Mask) -> GradientTransformation:
  """Zeroes the updates of the leaves where ``mask`` is ``True``: those stay fixed.

  .. math:: u_i = \\begin{cases} 0 & m_i \\\\ g_i & \\text{otherwise} \\end{cases}

  No state is kept. Same as ``optax.freeze``. To also keep an optimizer from
  holding moments for the frozen leaves, use :func:`selective_transform`.

  Args:
    mask: ``True`` marks frozen leaves: a bool (everything or nothing), a tree
      of bools with the params' structure or a prefix of it, or a callable of
      the params returning one.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> grads = {"encoder": jnp.ones(2), "head": jnp.ones(2)}
    >>> tx = gtx.chain(freeze=gtx.freeze({"encoder": True, "head": False}), sgd=gtx.sgd(0.1))
    >>> tx.update(grads, tx.init(grads))[0]
    {'encoder': Array([-0., -0.], dtype=float32), 'head': Array([-0.1, -0.1], dtype=float32)}
  """
  tx = _masked(set_to_zero(), mask, False, "freeze")
  tx.name = "freeze"
  return tx
