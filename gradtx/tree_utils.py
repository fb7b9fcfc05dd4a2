"""Tree math and state look-ups under optax's names: ``gtx.tree_utils.tree_add``, ...

A namespace, like ``optax.tree_utils``: the same names, argument names,
defaults and results, so code written against ``optax.tree_utils`` runs with a
change of import. Where gradtx already has the idea (:mod:`gradtx.tree`,
:mod:`gradtx.numerics`) these functions call it.

:func:`tree_get`, :func:`tree_set` and :func:`tree_get_all_with_path` search
a state by key. On a gradtx state they see what an optax user expects and
more: a field of a stage state (``"count"``, ``"mu"``), a stage state by its
class name (``"ScaleByAdamState"``), a stage by its name in a chain
(``"adam"``), and each hyperparameter held in an :class:`~gradtx.HParams`
(``"learning_rate"``, ``"b1"``), which optax holds only under
``inject_hyperparams``.

Example:
  >>> import gradtx as gtx
  >>> import jax.numpy as jnp
  >>> state = gtx.adam(learning_rate=1e-3).init(jnp.zeros(3))
  >>> gtx.tree_utils.tree_get(state, "count")
  Array(0, dtype=int32)
  >>> state = gtx.tree_utils.tree_set(state, learning_rate=0.25)
  >>> gtx.hparams(state)["lr.learning_rate"]
  Array(0.25, dtype=float32)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics
from gradtx import tree as _tree
from gradtx.chain import ChainState, set_hparams
from gradtx.core import HParams, check_value
from gradtx.errors import HyperparameterError, StructureError

PyTree = Any

__all__ = [
    "NamedTupleKey", "tree_add", "tree_add_scale", "tree_allclose", "tree_batch_shape",
    "tree_bias_correction", "tree_cast", "tree_cast_like", "tree_clip", "tree_conj",
    "tree_div", "tree_dtype", "tree_full_like", "tree_get", "tree_get_all_with_path",
    "tree_map_params", "tree_max", "tree_min", "tree_mul", "tree_norm", "tree_ones_like",
    "tree_random_like", "tree_real", "tree_scale", "tree_set", "tree_size",
    "tree_split_key_like", "tree_sub", "tree_sum", "tree_unwrap_random_key_data",
    "tree_update_infinity_moment", "tree_update_moment", "tree_update_moment_per_elem_norm",
    "tree_vdot", "tree_where", "tree_zeros_like",
]


def _is_none(x: Any) -> bool:
  return x is None


# ----------------------------------------------------------------------------
# Arithmetic.


def tree_add(tree_x: PyTree, tree_y: PyTree, *other_trees: PyTree) -> PyTree:
  """Leafwise sum of two or more trees: :math:`x + y + \\dots`.

  Each leaf of the result has the dtype of the leaf of ``tree_x``.

  Args:
    tree_x: first tree.
    tree_y: second tree, the structure of ``tree_x``.
    *other_trees: more trees to add.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_add({"a": jnp.ones(2)}, {"a": jnp.ones(2)}, {"a": jnp.ones(2)})
    {'a': Array([3., 3.], dtype=float32)}
  """
  return functools.reduce(_tree.add, other_trees, _tree.add(tree_x, tree_y))


def tree_sub(tree_x: PyTree, tree_y: PyTree) -> PyTree:
  """Leafwise difference :math:`x - y`.

  Args:
    tree_x: first tree.
    tree_y: second tree, the structure of ``tree_x``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_sub({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, 3.0])})
    {'a': Array([-2., -1.], dtype=float32)}
  """
  return _tree.tree_map(operator.sub, tree_x, tree_y)


def tree_mul(tree_x: PyTree, tree_y: PyTree) -> PyTree:
  """Leafwise product :math:`x \\odot y`.

  Args:
    tree_x: first tree.
    tree_y: second tree, the structure of ``tree_x``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_mul({"a": jnp.array([2.0, 1.0])}, {"a": jnp.array([3.0, 4.0])})
    {'a': Array([6., 4.], dtype=float32)}
  """
  return _tree.tree_map(operator.mul, tree_x, tree_y)


def tree_div(tree_x: PyTree, tree_y: PyTree) -> PyTree:
  """Leafwise quotient :math:`x / y`.

  Args:
    tree_x: first tree.
    tree_y: second tree, the structure of ``tree_x``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_div({"a": jnp.array([3.0, 1.0])}, {"a": jnp.array([2.0, 4.0])})
    {'a': Array([1.5 , 0.25], dtype=float32)}
  """
  return _tree.tree_map(operator.truediv, tree_x, tree_y)


def tree_scale(scalar: jax.typing.ArrayLike, tree: PyTree) -> PyTree:
  """:math:`s \\cdot x` leaf by leaf, ``scalar`` cast to each leaf's dtype.

  Args:
    scalar: the scalar :math:`s`.
    tree: the tree :math:`x`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_scale(0.5, {"a": jnp.ones(2, jnp.bfloat16)})
    {'a': Array([0.5, 0.5], dtype=bfloat16)}
  """
  return _tree.scale(tree, scalar)


def tree_add_scale(tree_x: PyTree, scalar: jax.typing.ArrayLike, tree_y: PyTree) -> PyTree:
  """:math:`x + s\\, y` leaf by leaf; a ``None`` leaf of ``tree_x`` stays ``None``.

  Args:
    tree_x: the tree :math:`x`.
    scalar: the scalar :math:`s`, cast to each leaf's dtype.
    tree_y: the tree :math:`y`, the structure of ``tree_x``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_add_scale({"a": jnp.ones(2)}, 2.0, {"a": jnp.ones(2)})
    {'a': Array([3., 3.], dtype=float32)}
  """
  return jax.tree.map(
      lambda x, y: None if x is None else x + numerics.as_dtype(scalar, x.dtype) * y,
      tree_x, tree_y, is_leaf=_is_none)


def _promoted(a: Any, b: Any) -> tuple[Any, Any]:
  """``a`` and ``b`` cast to the dtype they promote to (explicitly, so that a tree
  mixing bfloat16 and float32 leaves also reduces under strict dtype promotion)."""
  if not (hasattr(a, "dtype") and hasattr(b, "dtype")):
    return a, b  # a Python number (the initializer) is weakly typed: it takes the other's
  dtype = numerics.compute_dtype(a, b)
  return numerics.as_dtype(a, dtype), numerics.as_dtype(b, dtype)


def _add_promoted(a: Any, b: Any) -> Any:
  """``a + b`` in the dtype the two promote to, as optax's sums of leaves give it."""
  return operator.add(*_promoted(a, b))


def _vdot(a: Any, b: Any) -> jax.Array:
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.dtype != b.dtype:  # a mixed pair, cast as the tree's reduction casts
    a, b = _promoted(a, b)
  if jnp.iscomplexobj(a):
    a = jnp.conj(a)
  # tensordot, not jnp.vdot: vdot ravels, which costs communication on sharded leaves.
  return jnp.tensordot(a, b, a.ndim, precision=jax.lax.Precision.HIGHEST)


def tree_vdot(tree_x: PyTree, tree_y: PyTree) -> jax.typing.ArrayLike:
  """The inner product :math:`\\langle x, y \\rangle = \\sum_\\text{leaves} \\sum_i \\bar x_i y_i`.

  Computed at the highest matmul precision; ``tree_x`` is conjugated when complex.
  Leaves of different dtypes (bfloat16 and float32) are summed in the dtype
  they promote to, as optax does, also under strict dtype promotion.

  Args:
    tree_x: first tree.
    tree_y: second tree, the structure of ``tree_x``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_vdot({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, 4.0])})
    Array(11., dtype=float32)
  """
  vdots = jax.tree.map(_vdot, tree_x, tree_y)
  return jax.tree.reduce(_add_promoted, vdots, initializer=0)


def tree_sum(tree: PyTree, associative_reduction: bool = False) -> jax.typing.ArrayLike:
  """:math:`\\sum_\\text{leaves} \\sum_i x_i`, the sum of every entry.

  Each leaf is summed in its dtype; the leaves' sums in the dtype they promote to.

  Args:
    tree: the tree.
    associative_reduction: sum the leaves' sums as a balanced tree
      (``jax.tree.reduce_associative``), which can compile faster for many
      leaves and may round differently. Default ``False``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_sum({"a": jnp.ones(3), "b": jnp.full(2, 2.0)})
    Array(7., dtype=float32)
  """
  sums = jax.tree.map(jnp.sum, tree)
  if associative_reduction:
    return jax.tree.reduce_associative(_add_promoted, sums, identity=0)
  return jax.tree.reduce(_add_promoted, sums, initializer=0)


def _reduce_extreme(tree: PyTree, leaf_fn: Callable, combine: Callable, empty: float) -> jax.Array:
  values = [leaf_fn(x) for x in jax.tree.leaves(tree) if jnp.size(x) > 0]
  if not values:
    return jnp.asarray(empty)
  return functools.reduce(lambda a, b: combine(*_promoted(a, b)), values)


def tree_max(tree: PyTree) -> jax.typing.ArrayLike:
  """The largest entry of any leaf; ``-inf`` for a tree without entries.

  Args:
    tree: the tree.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_max({"a": jnp.array([1.0, 5.0]), "b": jnp.array(-2.0)})
    Array(5., dtype=float32)
  """
  return _reduce_extreme(tree, jnp.max, jnp.maximum, -float("inf"))


def tree_min(tree: PyTree) -> jax.typing.ArrayLike:
  """The smallest entry of any leaf; ``inf`` for a tree without entries.

  Args:
    tree: the tree.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_min({"a": jnp.array([1.0, 5.0]), "b": jnp.array(-2.0)})
    Array(-2., dtype=float32)
  """
  return _reduce_extreme(tree, jnp.min, jnp.minimum, float("inf"))


def tree_size(tree: PyTree) -> int:
  """The number of entries over all leaves (a Python int).

  Args:
    tree: the tree.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_size({"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)})
    10
  """
  return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(tree))


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


_ORDS = (None, 1, 2, "inf", "infinity", float("inf"))


def tree_norm(tree: PyTree, ord: int | str | float | None = None,  # noqa: A002 (optax's name)
              squared: bool = False) -> jax.Array:
  """The vector norm of the whole tree, as if its entries were one vector.

  .. math::
    \\|x\\|_2 = \\sqrt{\\textstyle\\sum_i |x_i|^2}, \\qquad
    \\|x\\|_1 = \\textstyle\\sum_i |x_i|, \\qquad
    \\|x\\|_\\infty = \\max_i |x_i|

  The l2 norm is :func:`gradtx.tree.global_norm`: it accumulates a bfloat16
  tree in float32 and returns float32 (optax returns bfloat16).

  Args:
    tree: the tree.
    ord: ``None`` or ``2`` (the l2 norm, default), ``1``, or ``inf`` (also
      ``"inf"``, ``"infinity"``).
    squared: return the norm squared. Default ``False``.

  Raises:
    ValueError: an unsupported ``ord``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> t = {"a": jnp.array([3.0]), "b": jnp.array([-4.0])}
    >>> gtx.tree_utils.tree_norm(t), gtx.tree_utils.tree_norm(t, ord=1)
    (Array(5., dtype=float32), Array(7., dtype=float32))
  """
  if ord is None or ord == 2:
    return _tree.sum_squares(tree) if squared else _tree.global_norm(tree)
  if ord == 1:
    norm = jnp.asarray(tree_sum(jax.tree.map(jnp.abs, tree)))
  elif ord in ("inf", "infinity") or ord == float("inf"):
    norm = jnp.asarray(tree_max(jax.tree.map(jnp.abs, tree)))
  else:
    raise ValueError(f"tree_norm: ord must be one of None, 1, 2, inf, got {ord!r}")
  return numerics.abs_sq(norm) if squared else norm


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


def tree_where(condition: jax.typing.ArrayLike, tree_x: PyTree, tree_y: PyTree) -> PyTree:
  """``tree_x`` where ``condition`` holds, else ``tree_y``, leaf by leaf.

  Args:
    condition: a bool, broadcast against every leaf.
    tree_x: chosen where ``condition`` is true.
    tree_y: chosen elsewhere; the structure of ``tree_x``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_where(jnp.array(False), {"a": jnp.ones(2)}, {"a": jnp.zeros(2)})
    {'a': Array([0., 0.], dtype=float32)}
  """
  return _tree.where(condition, tree_x, tree_y)


def tree_clip(tree: PyTree, min_value: jax.typing.ArrayLike | None = None,
              max_value: jax.typing.ArrayLike | None = None) -> PyTree:
  """Every entry clipped to :math:`[\\text{min}, \\text{max}]`.

  Args:
    tree: the tree.
    min_value: the lower bound, cast to each leaf's dtype; ``None`` (default): none.
    max_value: the upper bound, cast to each leaf's dtype; ``None`` (default): none.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_clip({"a": jnp.array([-2.0, 0.5, 3.0])}, 0.0, 1.0)
    {'a': Array([0. , 0.5, 1. ], dtype=float32)}
  """
  def clip(x):
    low = None if min_value is None else numerics.as_dtype(min_value, x.dtype)
    high = None if max_value is None else numerics.as_dtype(max_value, x.dtype)
    return jnp.clip(x, low, high)
  return _tree.tree_map(clip, tree)


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
  return _tree.tree_map(lambda t, o: t.astype(o.dtype) if hasattr(o, "dtype") else t,
                       tree, other_tree)


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
      order; raises where two dtypes are not ordered (int32 and uint32).

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


def tree_allclose(a: PyTree, b: PyTree, rtol: jax.typing.ArrayLike = 1e-05,
                  atol: jax.typing.ArrayLike = 1e-08, equal_nan: bool = False) -> jax.Array:
  """Whether every leaf of ``a`` is close to the same leaf of ``b`` (:func:`jax.numpy.allclose`).

  .. math:: |a_i - b_i| \\le \\text{atol} + \\text{rtol}\\, |b_i| \\quad \\forall i

  Args:
    a: a tree.
    b: a tree, the structure of ``a``.
    rtol: relative tolerance. Default ``1e-5``.
    atol: absolute tolerance. Default ``1e-8``.
    equal_nan: whether NaNs in the same place count as equal. Default ``False``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_allclose({"a": jnp.ones(2)}, {"a": jnp.ones(2) + 1e-7})
    Array(True, dtype=bool)
  """
  close = jax.tree.leaves(jax.tree.map(
      lambda x, y: jnp.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan), a, b))
  return functools.reduce(jnp.logical_and, close, jnp.asarray(True))


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

  return jax.tree.map(draw, target_tree, keys)


# ----------------------------------------------------------------------------
# Moments.


def tree_update_moment(updates: PyTree, moments: PyTree, decay: jax.typing.ArrayLike,
                       order: int) -> PyTree:
  """The exponential moving average of the ``order``-th power of the updates.

  .. math:: m \\leftarrow (1 - \\beta)\\, g^k + \\beta\\, m

  :math:`g^k` is the plain power, signed for odd :math:`k` and complex for
  complex :math:`g` (see :func:`tree_update_moment_per_elem_norm` for
  :math:`|g|^k`). A ``None`` leaf of ``updates`` gives ``None``. Computed by
  :func:`gradtx.numerics.ema_moment`, in the wider of the two leaves' dtypes.

  Args:
    updates: the tree :math:`g`.
    moments: the moving averages :math:`m`.
    decay: :math:`\\beta`.
    order: :math:`k`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_update_moment(jnp.array([2.0]), jnp.array([1.0]), 0.9, 2)
    Array([1.3000001], dtype=float32)
  """
  return jax.tree.map(
      lambda g, m: None if g is None else numerics.ema_moment(g ** order, m, decay, 1,
                                                              store=False),
      updates, moments, is_leaf=_is_none)


def tree_update_infinity_moment(updates: PyTree, moments: PyTree, decay: jax.typing.ArrayLike,
                                eps: jax.typing.ArrayLike) -> PyTree:
  """The exponentially weighted infinity norm of the updates (Adamax's :math:`u`).

  .. math:: u \\leftarrow \\max(|g| + \\epsilon,\\; \\beta\\, u)

  A ``None`` leaf of ``updates`` gives ``None``.

  Args:
    updates: the tree :math:`g`.
    moments: the running maxima :math:`u`.
    decay: :math:`\\beta`.
    eps: :math:`\\epsilon`.

  References:
    Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015, section 7.1.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> g, u = jnp.array([1.0, -3.0]), jnp.array([2.0, 2.0])
    >>> gtx.tree_utils.tree_update_infinity_moment(g, u, 0.5, 0.0)
    Array([1., 3.], dtype=float32)
  """
  def leaf(g, u):
    if g is None:
      return None
    g_abs = jnp.abs(g)  # real, also for complex g
    dtype = numerics.compute_dtype(g_abs, u)
    return jnp.maximum(numerics.as_dtype(g_abs, dtype) + numerics.as_dtype(eps, dtype),
                       numerics.as_dtype(decay, dtype) * numerics.as_dtype(u, dtype))
  return jax.tree.map(leaf, updates, moments, is_leaf=_is_none)


def tree_update_moment_per_elem_norm(updates: PyTree, moments: PyTree,
                                     decay: jax.typing.ArrayLike, order: int) -> PyTree:
  """The exponential moving average of :math:`|g|^k`, real for complex updates.

  .. math:: m \\leftarrow (1 - \\beta)\\, |g|^k + \\beta\\, m

  For real :math:`g` it is :math:`g^k` (as optax, signed for odd :math:`k`);
  for complex :math:`g`, :math:`(g \\bar g)^{k/2}`. A ``None`` leaf of
  ``updates`` gives ``None``.

  Args:
    updates: the tree :math:`g`.
    moments: the moving averages :math:`m`.
    decay: :math:`\\beta`.
    order: :math:`k`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> g, m = jnp.array([3 + 4j]), jnp.array([0.0])
    >>> gtx.tree_utils.tree_update_moment_per_elem_norm(g, m, 0.5, 2)
    Array([12.5], dtype=float32)
  """
  def power(g):
    if not jnp.iscomplexobj(g):
      return g ** order
    half = order / 2
    return numerics.abs_sq(g) ** (int(half) if float(half).is_integer() else half)

  return jax.tree.map(
      lambda g, m: None if g is None else numerics.ema_moment(power(g), m, decay, 1, store=False),
      updates, moments, is_leaf=_is_none)


def tree_bias_correction(moment: PyTree, decay: jax.typing.ArrayLike,
                         count: jax.typing.ArrayLike) -> PyTree:
  """Undoes the bias of a zero-initialised moving average.

  .. math:: \\hat m = \\frac{m}{1 - \\beta^t}

  Computed by :func:`gradtx.numerics.bias_correction`: the power in the
  decay's float dtype, the division in each leaf's dtype.

  Args:
    moment: the moving averages :math:`m`.
    decay: :math:`\\beta`.
    count: the step :math:`t` (at least 1).

  References:
    Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015, section 3.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_bias_correction(jnp.array([0.75]), 0.5, jnp.asarray(2))
    Array([1.], dtype=float32)
  """
  return _tree.tree_map(lambda m: numerics.bias_correction(m, decay, count), moment)


# ----------------------------------------------------------------------------
# Finding and setting values by key.


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
  """A key path entry for a field of a NamedTuple, naming the tuple's class.

  :func:`tree_get_all_with_path` reports a NamedTuple's field as this instead
  of :class:`jax.tree_util.GetAttrKey`, so a ``filtering`` function can tell
  ``ScaleByAdamState.count`` from another state's ``count``.

  Attributes:
    tuple_name: the NamedTuple's class name (``"ScaleByAdamState"``).
    name: the field (``"count"``).
  """

  tuple_name: str
  name: str

  def __str__(self) -> str:
    return f"{self.tuple_name}.{self.name}"


KeyPath = tuple[Any, ...]


def _is_named_tuple(x: Any) -> bool:
  return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _entry_name(entry: Any) -> Any:
  for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def _children(node: Any) -> tuple[list[tuple[Any, Any, Any]], Any] | None:
  """``([(path entry, key, child), ...], treedef)`` one level down; ``None`` for a leaf.

  Every pytree node is descended into (lists, dataclasses, a framework's
  train state); keys are matched only in mappings (dicts, chain states,
  :class:`~gradtx.HParams`) and NamedTuples, as optax does.
  """
  if node is None:
    return None
  pairs, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
  if treedef.num_nodes == 1 and treedef.num_leaves == 1:
    return None  # an array or another leaf
  named = _is_named_tuple(node)
  out = []
  for path, child in pairs:
    (entry,) = path
    key = _entry_name(entry)
    if named:
      entry = NamedTupleKey(type(node).__name__, node._fields[key] if isinstance(key, int)
                            else key)
      key = entry.name
    out.append((entry, key, child))
  return out, treedef


def _keys_match(node: Any) -> bool:
  return _is_named_tuple(node) or isinstance(node, Mapping)


def _same_key(a: Any, b: Any) -> bool:
  try:
    return bool(a == b)
  except Exception:  # an unhashable or array-valued key compares to nothing
    return False


def _find(node: Any, key: Any, path: KeyPath, out: list[tuple[KeyPath, Any]]) -> None:
  if _is_named_tuple(node) and _same_key(type(node).__name__, key):
    out.append((path, node))
  found = _children(node)
  if found is None:
    return
  matchable = _keys_match(node)
  for entry, name, child in found[0]:
    child_path = (*path, entry)
    if matchable and _same_key(name, key):
      out.append((child_path, child))
    _find(child, key, child_path, out)


def tree_get_all_with_path(
    tree: PyTree, key: Any,
    filtering: Callable[[KeyPath, Any], bool] | None = None) -> list[tuple[KeyPath, Any]]:
  """Every value in ``tree`` under ``key``, with its key path, in pytree order.

  ``key`` matches a key of a mapping (a dict, a stage name in a
  :class:`~gradtx.ChainState`, a hyperparameter in an
  :class:`~gradtx.HParams`), a field of a NamedTuple (a stage state's
  ``count``, ``mu``), or a NamedTuple's class name (the whole stage state).
  A NamedTuple's field shows in the path as a :class:`NamedTupleKey`.

  Args:
    tree: the tree to search (a gradtx or optax state, or any pytree).
    key: the key, field or class name.
    filtering: ``filtering(path, value) -> bool`` keeps only the matches it
      accepts. Default ``None``: keep all.

  Returns:
    A list of ``(path, value)``; ``jax.tree_util.keystr(path)`` reads a path.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> state = gtx.adamw(learning_rate=1e-3, weight_decay=0.25).init(jnp.zeros(2))
    >>> for path, value in gtx.tree_utils.tree_get_all_with_path(state, "weight_decay"):
    ...   print(jax.tree_util.keystr(path), value)
    ['decay']EmptyState.hparams['weight_decay'] 0.25
  """
  out: list[tuple[KeyPath, Any]] = []
  _find(tree, key, (), out)
  if filtering is not None:
    out = [(path, value) for path, value in out if filtering(path, value)]
  return out


def tree_get(tree: PyTree, key: Any, default: Any | None = None,
             filtering: Callable[[KeyPath, Any], bool] | None = None) -> Any:
  """The one value in ``tree`` under ``key`` (as :func:`tree_get_all_with_path` finds it).

  Args:
    tree: the tree to search.
    key: the key, field or class name.
    default: returned when nothing matches. Default ``None``.
    filtering: ``filtering(path, value) -> bool`` keeps only the matches it
      accepts. Default ``None``: keep all.

  Raises:
    KeyError: more than one value matches; the message lists their key paths.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> state = gtx.adam(learning_rate=1e-3).init(jnp.zeros(2))
    >>> gtx.tree_utils.tree_get(state, "learning_rate")
    Array(0.001, dtype=float32)
    >>> gtx.tree_utils.tree_get(state, "ScaleByAdamState").count
    Array(0, dtype=int32)
  """
  found = tree_get_all_with_path(tree, key, filtering)
  if len(found) > 1:
    paths = [jax.tree_util.keystr(p) for p, _ in found]
    raise KeyError(f"tree_get: found {len(found)} values for {key!r}, at {paths}; pass a "
                   "filtering function to choose one")
  return found[0][1] if found else default


def _as_like(old: Any, value: Any, where: str) -> Any:
  """``value`` in the dtype and shape of the array ``old`` it replaces; other values as given."""
  if not isinstance(old, (jax.Array, np.ndarray, np.generic)):
    return value
  if not isinstance(value, (jax.Array, np.ndarray, np.generic, int, float, complex, bool)):
    return value  # a subtree or another object: the caller's choice
  new = jnp.asarray(value)
  if (jnp.issubdtype(old.dtype, jnp.integer) and not jnp.issubdtype(new.dtype, jnp.integer)
      and not isinstance(new, jax.core.Tracer) and not np.all(np.asarray(new) % 1 == 0)):
    raise ValueError(f"tree_set: {where} holds {old.dtype} values; got {value!r}, "
                     "which is not a whole number")
  new = new.astype(old.dtype)
  if new.shape != old.shape:
    try:
      new = jnp.broadcast_to(new, old.shape)
    except ValueError:
      raise StructureError(f"tree_set: {where} has shape {tuple(old.shape)}; got a value "
                           f"of shape {tuple(new.shape)}") from None
  return new


def _replace(node: Any, path: KeyPath, stage: tuple[str, ...], values: dict[str, Any],
             filtering: Callable[[KeyPath, Any], bool] | None) -> Any:
  accepts = lambda p, v: filtering is None or filtering(p, v)  # noqa: E731
  if (_is_named_tuple(node) and type(node).__name__ in values and accepts(path, node)):
    return values[type(node).__name__]
  found = _children(node)
  if found is None:
    return node
  entries, treedef = found
  matchable = _keys_match(node)
  hparams_set: dict[str, Any] = {}
  children = []
  for entry, name, child in entries:
    child_path = (*path, entry)
    hit = matchable and isinstance(name, (str, int)) and name in values and accepts(
        child_path, child)
    if not hit:
      inner = (*stage, name) if isinstance(node, ChainState) else stage
      children.append(_replace(child, child_path, inner, values, filtering))
    elif isinstance(node, HParams) and name in node:
      hparams_set[name] = values[name]  # set below, as set_hparams sets it
      children.append(child)
    else:
      children.append(_as_like(child, values[name], jax.tree_util.keystr(child_path)))
  new = treedef.unflatten(children)
  if hparams_set:
    where = ".".join(stage) or "<root>"
    for name, value in hparams_set.items():
      check_value(where, name, value, node.slot(name).allowed)
    try:
      new = set_hparams(new, hparams_set)
    except HyperparameterError as error:
      raise error.with_stage(where) from None
  return new


def tree_set(tree: PyTree, filtering: Callable[[KeyPath, Any], bool] | None = None, /,
             **kwargs: Any) -> PyTree:
  """A copy of ``tree`` with the values under the given keys replaced.

  Keys are matched as in :func:`tree_get_all_with_path`, and every match is
  replaced. A replaced array keeps its dtype and shape (the value is cast and
  broadcast, and must be a whole number for an integer array), so a jitted
  step that receives the new state does not retrace. A hyperparameter held
  in an :class:`~gradtx.HParams` is set as :func:`gradtx.set_hparams` sets it:
  its allowed range is checked, and one that a schedule drives cannot be set.
  Anything else (a subtree, a whole stage state) is replaced by the value given.

  Differs from optax, which puts the value in as given (``count=2.`` makes
  the count a Python float), so the next jitted step retraces or fails.

  Args:
    tree: the tree (a gradtx or optax state, or any pytree).
    filtering: ``filtering(path, value) -> bool`` replaces only the matches
      it accepts. Positional only. Default ``None``: replace all.
    **kwargs: ``key=value`` for each key to replace.

  Raises:
    KeyError: a key with no match (none the filter accepts).
    HyperparameterError: a hyperparameter out of its range, or scheduled.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> state = gtx.adam(learning_rate=1e-3).init(jnp.zeros(2))
    >>> state = gtx.tree_utils.tree_set(state, count=2, b1=0.8)
    >>> state["adam"].count, gtx.hparams(state)["adam.b1"]
    (Array(2, dtype=int32), Array(0.8, dtype=float32))
  """
  for key in kwargs:
    if not tree_get_all_with_path(tree, key, filtering):
      accepted = " that the filtering function accepts" if filtering is not None else ""
      raise KeyError(f"tree_set: found no value for {key!r}{accepted}")
  return _replace(tree, (), (), kwargs, filtering)


# ----------------------------------------------------------------------------
# Mapping over the parameter-shaped parts of a state.


def tree_map_params(initable: Any | Callable[[PyTree], PyTree],
                    f: Callable[..., Any], state: PyTree, /, *rest: PyTree,
                    transform_non_params: Callable[[Any], Any] | None = None,
                    is_leaf: Callable[[Any], bool] | None = None) -> PyTree:
  """Maps ``f`` over every copy of the params' tree inside a state (moments, traces, ...).

  .. math::
    \\text{state}' = \\text{state} \\text{ with each params-shaped subtree } m
      \\text{ replaced by } \\texttt{tree.map}(f, m, *\\text{rest})

  and every other leaf :math:`x` by ``transform_non_params(x)`` (kept when
  that is ``None``). A subtree is params-shaped when ``init`` puts a copy of
  the params' tree there: ``initable``'s ``init`` is called on a leafless
  placeholder, and wherever the placeholder comes back (through
  ``zeros_like`` of the params, as every moment does) the state holds such
  a subtree. Hyperparameters and step counts are not params-shaped. Chain
  states, nested chains and wrappers' states are walked like any pytree.
  Same arguments and semantics as ``optax.tree_map_params``: use it to build
  sharding or partition specs of a state from the params' ones.

  Args:
    initable: a transformation (anything with ``init``), or an
      ``init``-like callable of the params.
    f: called as ``f(leaf, *rest_leaves)`` on every leaf of each
      params-shaped subtree.
    state: the state to map over, made by ``initable.init``.
    *rest: trees with the params' structure, mapped along.
    transform_non_params: called on every other leaf of the state, default
      ``None`` (keep them).
    is_leaf: passed to ``jax.tree.map`` over each params-shaped subtree.

  Example: a state's moments as their shapes.

    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.adam(1e-3)
    >>> params = {"w": jnp.zeros((2, 3))}
    >>> shapes = gtx.tree_utils.tree_map_params(tx, lambda p: p.shape, tx.init(params),
    ...                                         transform_non_params=lambda _: None)
    >>> shapes["adam"].mu, shapes["adam"].nu, shapes["adam"].count
    ({'w': (2, 3)}, {'w': (2, 3)}, None)
  """
  init = initable.init if callable(getattr(initable, "init", None)) else initable
  if not callable(init):
    raise TypeError("tree_map_params: initable must be a transformation or an init "
                    f"function of the params, got {type(initable).__name__}")
  try:
    with_placeholders = init(_tree.ParamsPlaceholder())
  except (StructureError, ValueError, TypeError) as error:
    raise StructureError(
        "tree_map_params: initable.init must accept a leafless placeholder for the params "
        "(it marks where init copies them), and this one failed on it; a wrapper that "
        "matches the params against a mask or labels at init (masked, partition) cannot "
        f"yet be mapped over ({type(error).__name__}: {error})") from None

  def map_params(marker: Any, value: Any) -> Any:
    if _tree.is_params_placeholder(marker):
      return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
    return value if transform_non_params is None else transform_non_params(value)

  try:
    return jax.tree.map(map_params, with_placeholders, state, is_leaf=_tree.is_params_placeholder)
  except ValueError as error:
    raise StructureError(
        "tree_map_params: the state does not have the structure initable.init makes; "
        f"pass the state that init made ({error})") from None


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
