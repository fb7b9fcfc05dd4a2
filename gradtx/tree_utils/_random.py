"""Random trees: a key per leaf, random draws shaped like a tree, raw key data."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax

from gradtx import tree as _tree

PyTree = Any


# ----------------------------------------------------------------------------
# Random trees.


def tree_split_key_like(rng_key: jax.Array, target_tree: PyTree) -> PyTree:
  """One sub-key per leaf of ``target_tree``, split in leaf order.

  :func:`gradtx.tree.split_key_per_leaf`: the keys are
  ``jax.random.split(rng_key, n_leaves)``, one per leaf in leaf order.

  Args:
    rng_key: the key to split.
    target_tree: the tree whose structure to take.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> keys = gtx.tree_utils.tree_split_key_like(jax.random.key(0), {"a": 0.0, "b": 0.0})
    >>> sorted(keys)
    ['a', 'b']
  """
  return _tree.split_key_per_leaf(rng_key, target_tree)


def tree_random_like(rng_key: jax.Array, target_tree: PyTree,
                     sampler: Callable[..., jax.typing.ArrayLike] = jax.random.normal,
                     dtype: jax.typing.DTypeLike | None = None) -> PyTree:
  """A tree of random draws shaped like ``target_tree``, one key per leaf.

  Args:
    rng_key: the key; split with :func:`tree_split_key_like`.
    target_tree: the tree whose structure and shapes to take; leaves must be arrays.
      A packed tree (:class:`gradtx.packed.Packed`) gets packed draws, those of
      the tree it packs.
    sampler: ``sampler(key, shape, dtype)`` (with ``out_sharding=`` when it
      takes one). Default :func:`jax.random.normal`.
    dtype: the dtype passed to ``sampler``. Default ``None``: each leaf's own.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> draws = gtx.tree_utils.tree_random_like(jax.random.key(0), {"a": jnp.zeros((2, 3))})
    >>> draws["a"].shape, draws["a"].dtype
    ((2, 3), dtype('float32'))
  """
  keys = tree_split_key_like(rng_key, target_tree)
  with_sharding = "out_sharding" in inspect.signature(sampler).parameters

  def draw(leaf, key):
    if with_sharding:
      return sampler(key, leaf.shape, dtype or leaf.dtype, out_sharding=jax.typeof(leaf).sharding)
    return sampler(key, leaf.shape, dtype or leaf.dtype)

  # Per leaf also inside a packed buffer: unpacked, the draws are the unpacked tree's.
  draws, = _tree.map_leaves(lambda leaf, key: (draw(leaf, key),), (True,), target_tree, keys)
  return draws


def tree_unwrap_random_key_data(input_tree: PyTree) -> PyTree:
  """Replaces each typed random key in a tree by its raw key data (for comparing trees).

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> gtx.tree_utils.tree_unwrap_random_key_data({"k": jax.random.key(0)})["k"].dtype
    dtype('uint32')
  """
  def unwrap(x: Any) -> Any:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.key_data(x)
    return x

  return jax.tree.map(unwrap, input_tree)
