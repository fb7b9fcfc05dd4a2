"""Tree arithmetic, inner products, sums and norms, where/clip, allclose, and moving-average moments."""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradtx import numerics
from gradtx import tree as _tree
from gradtx.core import checks_flags

PyTree = Any


def _is_none(x: Any) -> bool:
  return x is None


# ----------------------------------------------------------------------------
# Arithmetic.


@_tree.names_structure_mismatch("tree_x", "tree_y", "other_trees")
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
  return _tree.add(tree_x, tree_y, *other_trees)


@_tree.names_structure_mismatch("tree_x", "tree_y")
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
  return _tree.sub(tree_x, tree_y)


@_tree.names_structure_mismatch("tree_x", "tree_y")
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


@_tree.names_structure_mismatch("tree_x", "tree_y")
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

  Where a leaf's dtype cannot hold ``scalar`` (an integer or bool leaf and a
  floating ``scalar``, a real leaf and a complex one), :math:`s \\cdot x` is in
  the dtype they promote to, as optax's: ``tree_scale(0.5, int32 leaf)`` is
  float32 (it was 0, the scalar cast to int32). Where it can, the leaf's dtype is
  kept, where optax promotes: a float32 array ``scalar`` leaves a bfloat16
  leaf bfloat16 (optax's is float32). A float16 leaf is multiplied in float32
  and rounded once (:func:`gradtx.numerics.scaling_dtype`): cast to float16, a
  scalar below 6.1e-5 is subnormal (1e-8 is 0).

  Args:
    scalar: the scalar :math:`s`.
    tree: the tree :math:`x`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_scale(0.5, {"a": jnp.ones(2, jnp.bfloat16)})
    {'a': Array([0.5, 0.5], dtype=bfloat16)}
  """
  return _tree.scale(scalar, tree)


@_tree.names_structure_mismatch("tree_x", "tree_y")
def tree_add_scale(tree_x: PyTree, scalar: jax.typing.ArrayLike, tree_y: PyTree) -> PyTree:
  """:math:`x + s\\, y` leaf by leaf; a ``None`` leaf of ``tree_x`` stays ``None``.

  Args:
    tree_x: the tree :math:`x`.
    scalar: the scalar :math:`s`, cast to each leaf's dtype; where ``tree_x``'s
      leaf cannot hold it (as in :func:`tree_scale`), the leaves and :math:`s`
      in the dtype they promote to, as optax's.
    tree_y: the tree :math:`y`, the structure of ``tree_x``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.tree_utils.tree_add_scale({"a": jnp.ones(2)}, 2.0, {"a": jnp.ones(2)})
    {'a': Array([3., 3.], dtype=float32)}
  """
  apart, of_scalar = _tree.kinds_scaled_apart(scalar)
  as_dtype = numerics.as_dtype

  def add_scaled(x, y):
    if x is None:
      return None
    if x.dtype.kind in apart:  # rare: an integer leaf, a complex scalar
      dtype = _tree.scaled_dtype(of_scalar, x, y)
      return as_dtype(x, dtype) + as_dtype(scalar, dtype) * as_dtype(y, dtype)
    return x + as_dtype(scalar, x.dtype) * y
  return jax.tree.map(add_scaled, _tree.numbers_as_arrays(tree_x), tree_y, is_leaf=_is_none)


# ----------------------------------------------------------------------------
# Inner products, sums, extremes and norms.


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
  return _tree.leaf_vdot(a, b)


@_tree.names_structure_mismatch("tree_x", "tree_y")
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


@checks_flags
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


@checks_flags
def tree_norm(tree: PyTree, ord: int | str | float | None = None,  # noqa: A002 (optax's name)
              squared: bool = False) -> jax.Array:
  """The vector norm of the whole tree, as if its entries were one vector.

  .. math::
    \\|x\\|_2 = \\sqrt{\\textstyle\\sum_i |x_i|^2}, \\qquad
    \\|x\\|_1 = \\textstyle\\sum_i |x_i|, \\qquad
    \\|x\\|_\\infty = \\max_i |x_i|

  The l2 norm is :func:`gradtx.tree.global_norm`: it accumulates a bfloat16
  tree in float32 and returns float32 (optax returns bfloat16). A tree
  without entries has norm 0 in every ``ord`` (optax's l-infinity norm is
  ``-inf`` there, and its square ``inf``).

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
    # The largest |x_i|, and 0 for no entries (as the other norms give): tree_max's -inf
    # made the norm of an empty tree -inf, and its square +inf (optax's too).
    norm = _reduce_extreme(jax.tree.map(jnp.abs, tree), jnp.max, jnp.maximum, 0.0)
  else:
    raise ValueError(f"tree_norm: ord must be one of None, 1, 2, inf, got {ord!r}")
  return numerics.abs_sq(norm) if squared else norm


# ----------------------------------------------------------------------------
# Selecting, clipping and comparing.


@_tree.names_structure_mismatch("tree_x", "tree_y")
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
  return _tree.tree_map(clip, _tree.numbers_as_arrays(tree))


@_tree.names_structure_mismatch("a", "b")
@checks_flags
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
# Moments.


@_tree.names_structure_mismatch("updates", "moments")
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
  # A real leaf's even power is a square: its mean, overflowed to Inf, stays Inf (optax's
  # does; m + (1 - b)(g^k - m) would be Inf - Inf).
  even = isinstance(order, (int, float)) and order % 2 == 0
  # As arrays JAX holds: a float64 numpy array without x64 was taken for float64, and
  # each cast to it warned that float64 is not available (optax computes in numpy).
  return jax.tree.map(
      lambda g, m: None if g is None else numerics.ema_moment(
          g ** order, m, decay, 1, store=False, squares=even and not jnp.iscomplexobj(g)),
      _tree.numbers_as_arrays(updates), _tree.numbers_as_arrays(moments), is_leaf=_is_none)


@_tree.names_structure_mismatch("updates", "moments")
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
  return jax.tree.map(leaf, _tree.numbers_as_arrays(updates), _tree.numbers_as_arrays(moments),
                      is_leaf=_is_none)


@_tree.names_structure_mismatch("updates", "moments")
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
      lambda g, m: None if g is None else numerics.ema_moment(power(g), m, decay, 1, store=False,
                                                              squares=True),  # |g|^k >= 0
      _tree.numbers_as_arrays(updates), _tree.numbers_as_arrays(moments), is_leaf=_is_none)


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
  return _tree.tree_map(lambda m: numerics.bias_correction(m, decay, count),
                        _tree.numbers_as_arrays(moment))
