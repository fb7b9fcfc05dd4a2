"""Dtypes and shapes of trees: casts, ``tree_dtype``, conjugates and real parts, trees like others."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import tree as _tree

PyTree = Any


# ----------------------------------------------------------------------------
# Complex parts.


def tree_conj(tree: PyTree) -> PyTree:
  """The complex conjugate :math:`\\bar x` of every leaf.

  Args:
    tree: the tree.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_conj({"a": jnp.array([1 + 2j])})
    {'a': Array([1.-2.j], dtype=complex64)}
  """
  return _tree.tree_map(jnp.conj, tree)


def tree_real(tree: PyTree) -> PyTree:
  """The real part of every leaf.

  Args:
    tree: the tree.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_real({"a": jnp.array([1 + 2j])})
    {'a': Array([1.], dtype=float32)}
  """
  return _tree.tree_map(jnp.real, tree)


# ----------------------------------------------------------------------------
# Making trees like others.


def tree_zeros_like(tree: PyTree, dtype: jax.typing.DTypeLike | None = None) -> PyTree:
  """Zeros shaped like each leaf, in ``dtype`` or the leaf's own dtype.

  Args:
    tree: the tree.
    dtype: the dtype of every leaf of the result. Default ``None``: each leaf's own.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_zeros_like({"a": jnp.ones(2)})
    {'a': Array([0., 0.], dtype=float32)}
  """
  return _tree.zeros_like(tree, dtype)


def tree_ones_like(tree: PyTree, dtype: jax.typing.DTypeLike | None = None) -> PyTree:
  """Ones shaped like each leaf, in ``dtype`` or the leaf's own dtype.

  Args:
    tree: the tree.
    dtype: the dtype of every leaf of the result. Default ``None``: each leaf's own.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_ones_like({"a": jnp.zeros(2)}, jnp.int32)
    {'a': Array([1, 1], dtype=int32)}
  """
  return _tree.full_like(tree, 1, dtype)


def tree_full_like(tree: PyTree, fill_value: jax.typing.ArrayLike,
                   dtype: jax.typing.DTypeLike | None = None) -> PyTree:
  """``fill_value`` shaped like each leaf, in ``dtype`` or the leaf's own dtype.

  Args:
    tree: the tree.
    fill_value: the value of every entry.
    dtype: the dtype of every leaf of the result. Default ``None``: each leaf's own.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_full_like({"a": jnp.zeros(2)}, 7.0)
    {'a': Array([7., 7.], dtype=float32)}
  """
  return _tree.full_like(tree, fill_value, dtype)


def tree_batch_shape(tree: PyTree, shape: tuple[int, ...] = ()) -> PyTree:
  """Each leaf broadcast to leading batch dimensions ``shape``.

  Args:
    tree: the tree.
    shape: the leading dimensions to add. Default ``()``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_batch_shape({"a": jnp.zeros(3)}, (2,))["a"].shape
    (2, 3)
  """
  return _tree.tree_map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), tree)


# ----------------------------------------------------------------------------
# Dtypes.


def tree_cast(tree: PyTree, dtype: jax.typing.DTypeLike | None) -> PyTree:
  """Every leaf cast to ``dtype``; ``None`` returns the tree unchanged.

  Args:
    tree: the tree.
    dtype: the dtype, or ``None``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_cast({"a": jnp.ones(2)}, jnp.bfloat16)
    {'a': Array([1, 1], dtype=bfloat16)}
  """
  return _tree.cast(tree, dtype)


@_tree.names_structure_mismatch("tree", "other_tree")
def tree_cast_like(tree: PyTree, other_tree: PyTree) -> PyTree:
  """Each leaf cast to the dtype of the same leaf of ``other_tree``.

  A leaf of ``other_tree`` without a dtype (a Python number) leaves its leaf as it is.

  Args:
    tree: the tree to cast.
    other_tree: the tree whose dtypes to take; the structure of ``tree``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_cast_like({"a": jnp.ones(2)}, {"a": jnp.zeros(2, jnp.float16)})
    {'a': Array([1., 1.], dtype=float16)}
  """
  return _tree.cast_like(tree, other_tree)


def _lower_dtype(a: Any, b: Any) -> Any:
  promoted = jnp.promote_types(a, b)
  if promoted == a:
    return b
  if promoted == b:
    return a
  raise ValueError(f"tree_dtype: cannot order {a} and {b}: neither promotes to the other")


def _higher_dtype(a: Any, b: Any) -> Any:
  return b if _lower_dtype(a, b) == a else a


def tree_dtype(tree: PyTree, mixed_dtype_handler: str | None = None) -> jax.typing.DTypeLike:
  """The dtype of the tree's leaves.

  Args:
    tree: the tree; an empty tree has JAX's default float dtype.
    mixed_dtype_handler: what to do when leaves differ in dtype. ``None``
      (default): raise, naming the key paths that differ. ``"promote"``: the
      dtype all promote to (:func:`jax.numpy.promote_types`). ``"highest"``,
      ``"lowest"``: the highest or lowest dtype under promotion's partial
      order; raises where two dtypes are not ordered (float16 and bfloat16).

  Raises:
    ValueError: mixed dtypes with ``mixed_dtype_handler=None``, unordered
      dtypes, or an unknown ``mixed_dtype_handler``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> t = {"a": jnp.ones(2, jnp.float16), "b": jnp.ones(2)}
    >>> gtx.tree_utils.tree_dtype(t, "lowest"), gtx.tree_utils.tree_dtype(t, "highest")
    (dtype('float16'), dtype('float32'))
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.asarray(leaves).dtype
  dtypes = [jnp.asarray(x).dtype for x in leaves]
  if mixed_dtype_handler is None:
    paths = [(_tree.keystr(p), jnp.asarray(x).dtype)
             for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]
    wrong = [f"{p}: {d}" for p, d in paths if d != dtypes[0]]
    if wrong:
      raise ValueError(f"tree_dtype: expected every leaf in {dtypes[0]} (the first leaf's); "
                       f"got {', '.join(wrong)}. Pass mixed_dtype_handler='promote', "
                       "'highest' or 'lowest' to accept mixed dtypes")
    return dtypes[0]
  combine = {"promote": jnp.promote_types, "highest": _higher_dtype,
             "lowest": _lower_dtype}.get(mixed_dtype_handler)
  if combine is None:
    raise ValueError(f"tree_dtype: mixed_dtype_handler must be None, 'promote', 'highest' "
                     f"or 'lowest', got {mixed_dtype_handler!r}")
  # JAX's promotion lattice, asked a question: strict promotion would refuse to answer.
  with jax.numpy_dtype_promotion("standard"):
    return functools.reduce(combine, dtypes)
