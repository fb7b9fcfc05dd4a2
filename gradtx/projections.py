"""Euclidean projections of a tree onto convex sets: ``gtx.projections.projection_l2_ball``, ...

A namespace, like ``optax.projections``, with its names and arguments. A
radius (``scale``) outside its range raises at once, naming the function,
when it is a concrete value (under ``jit`` it is not checked). Each
function returns the point of the set closest to the input in the l2 norm of
the whole tree (its entries taken as one vector),

.. math:: \\operatorname{proj}_C(x) = \\operatorname*{argmin}_{p \\in C} \\|x - p\\|_2^2,

in the input's dtypes, and runs under ``jax.jit``. Use one after a step for
projected gradient descent:
``params = projection_non_negative(gtx.apply_updates(params, updates))``.

An integer or bool leaf is projected as the default float dtype (float32, or
float64 under ``jax_enable_x64``), the dtype optax's promotion gives it, and
comes back in it: the closest point of a set is seldom an integer one, and a
bound or radius cast to the leaf's dtype moved the set (``projection_box`` of
``[-2, 3, 5]`` to ``[0.5, 3.7]`` gave ``[0, 3, 3]``, the l2 ball of ``[3, 4]``
gave ``[0, 0]``). Every other leaf keeps its dtype.

A tree without entries (no leaf, or only leaves of size 0) is in every ball,
box and halfspace and comes back as it is; the simplex and the spheres have
no point of no entries, and raise :class:`~gradtx.StructureError`.

Where optax 0.2.8 differs: :func:`projection_box` and
:func:`projection_hypercube` accept scalar bounds for a tree with several
leaves (optax raises a pytree structure error); :func:`projection_l1_sphere`
keeps entries that are zero on the sphere (optax leaves them at zero, which
misses the sphere for a point inside it); :func:`projection_l2_sphere` of
zero is a point of the sphere (optax returns NaN); :func:`projection_l2_ball`
compares :math:`\\|x\\|_2` with the radius where optax compares their squares,
which overflow in float32 from a radius of 2e19 (optax returns 0 for every point)
and underflow below 1e-19 (NaN for zero).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import flatten_util

from gradtx.core import (ANY, NONNEGATIVE_OR_INF, POSITIVE, POSITIVE_OR_INF, Range,
                         check_numbers, check_value, is_concrete)
from gradtx.errors import HyperparameterError, StructureError
from gradtx.numerics import as_dtype, as_float, at_least_float32
from gradtx.tree import check_structure, keystr
from gradtx.tree_utils import (tree_add_scale, tree_cast_like, tree_full_like, tree_mul,
                               tree_norm, tree_scale, tree_size, tree_vdot, tree_where)

PyTree = Any

# A halfspace's offset: inf is the whole space (x comes back as it is), -inf no set at all.
_UP_TO_INF = Range(None, math.inf)
# A box's bound: -inf or inf leaves its side open.
_BOUND = Range(-math.inf, math.inf)

__all__ = ["projection_box", "projection_halfspace", "projection_hypercube",
           "projection_hyperplane", "projection_l1_ball", "projection_l1_sphere",
           "projection_l2_ball", "projection_l2_sphere", "projection_linf_ball",
           "projection_non_negative", "projection_simplex", "projection_vector"]


def _floating(tree: PyTree) -> PyTree:
  """``tree`` with each integer or bool leaf as the default float dtype, the others as
  they are (no work, traced or not, for a float tree): the module's rule for them."""
  return jax.tree.map(as_float, tree)


def projection_non_negative(tree: PyTree) -> PyTree:
  """Projection onto the non-negative orthant.

  .. math:: \\operatorname*{argmin}_{p} \\|x - p\\|_2^2 \\;\\text{ s.t. }\\; p \\ge 0
     \\quad\\Longrightarrow\\quad p = \\max(x, 0)

  Args:
    tree: the tree :math:`x`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_non_negative({"w": jnp.array([-1.0, 2.0])})
    {'w': Array([0., 2.], dtype=float32)}
  """
  return jax.tree.map(jax.nn.relu, _floating(tree))


def _check_scale(stage: str, scale: Any, allowed: Range = POSITIVE, *,
                 whole_tree: bool = True) -> None:
  """Raises :class:`~gradtx.HyperparameterError` for a concrete ``scale`` outside ``allowed``,
  or, with ``whole_tree`` (a set of the whole tree: a ball, a sphere, the simplex), for one
  that is not a scalar: a (3,) scale was broadcast into the result (the simplex's entries
  summed to no one number) or failed with a broadcasting error naming nothing."""
  if whole_tree and np.ndim(scale) != 0:
    raise HyperparameterError(
        f"{stage}: scale must be a scalar (the set is one of the whole tree, its entries "
        f"taken as one vector), got shape {np.shape(scale)}")
  check_value(stage, "scale", scale, allowed)


def _check_offset(stage: str, b: Any, allowed: Range) -> None:
  """Raises :class:`~gradtx.HyperparameterError` unless ``b`` is one number in ``allowed``:
  a string failed in ``jnp.asarray`` ("Value '1' with dtype <U1 is not a valid JAX array
  type"), and a (2,) ``b`` was broadcast into the result, a point of no hyperplane."""
  if np.ndim(b) != 0:
    raise HyperparameterError(f"{stage}: b must be a scalar, got shape {np.shape(b)}")
  check_value(stage, "b", b, allowed)


def _check_has_entries(stage: str, tree: PyTree, why: str) -> None:
  """Raises :class:`~gradtx.StructureError` for a tree without entries (no leaf, or only
  leaves of size 0), for a set that has no point of no entries (``why``): the simplex's
  sort raised numpy's "zero-size array to reduction operation max", naming nothing."""
  if tree_size(tree) == 0:
    raise StructureError(f"{stage}: the tree has no entries (no leaf, or only leaves of "
                         f"size 0), so the set has no point: {why}")


_EMPTY_NORM = "the norm of no entries is 0, not scale > 0"


def _is_bound_leaf(bound: Any) -> bool:
  """A single scalar or array bound for every leaf (as opposed to a tree of bounds)."""
  return jax.tree_util.treedef_is_leaf(jax.tree.structure(bound))


def _per_leaf(stage: str, name: str, bound: Any, tree: PyTree) -> PyTree:
  """``bound`` for each leaf of ``tree``: one scalar or array repeated, or a tree of
  bounds, checked to have ``tree``'s structure (:func:`gradtx.tree.check_structure`
  names the first key path where they differ; JAX's own error named neither the
  projection nor the argument)."""
  if _is_bound_leaf(bound):
    return jax.tree.map(lambda _: bound, tree)
  check_structure(tree, bound, "tree", name, check_shapes=False, stage=stage)
  return bound


def _check_bound_numbers(stage: str, name: str, bound: PyTree, allowed: Range = _BOUND) -> None:
  """Raises :class:`~gradtx.HyperparameterError` for a leaf of ``bound`` that is not real
  numbers (:func:`gradtx.core.check_numbers`): a string (``lower='0'``, as a YAML or
  command-line parser leaves it) failed in numpy's ``<=`` ("ufunc 'less_equal' did not
  contain a loop"), None in ``jnp.asarray``; a bool was taken as 0 or 1 and a complex
  bound lost its imaginary part. Its range, ``lower <= upper``, is checked after."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(bound, is_leaf=lambda b: b is None):
    where = f" at {jax.tree_util.keystr(path)}" if path else ""
    check_numbers(stage, f"{name}{where}", leaf, allowed)


def _first_misordered(lower: PyTree, upper: PyTree) -> tuple[Any, float, float] | None:
  """``(key path, low, high)`` of the first concrete entry where ``low <= high`` fails
  (a NaN bound too: it gave NaN entries), or None."""
  for (path, low), high in zip(jax.tree_util.tree_leaves_with_path(lower),
                               jax.tree.leaves(upper)):
    if is_concrete(low) and is_concrete(high):
      low, high = np.broadcast_arrays(np.asarray(low), np.asarray(high))
      bad = ~(low <= high)
      if bad.any():
        i = int(np.argmax(bad))
        return path, float(low.flat[i]), float(high.flat[i])
  return None


def projection_box(tree: PyTree, lower: Any, upper: Any) -> PyTree:
  """Projection onto the box :math:`[l, u]`.

  .. math:: \\operatorname*{argmin}_{p} \\|x - p\\|_2^2 \\;\\text{ s.t. }\\; l \\le p \\le u
     \\quad\\Longrightarrow\\quad p = \\min(\\max(x, l), u)

  Args:
    tree: the tree :math:`x`.
    lower: :math:`l`, a scalar (for every leaf) or a tree the structure of
      ``tree``; cast to each leaf's dtype.
    upper: :math:`u`, likewise; :math:`l \\le u` (a concrete bound with
      :math:`l > u` or a NaN somewhere raises :class:`~gradtx.HyperparameterError`
      naming the leaf and the values; optax returns :math:`u`, or NaN, there).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_box({"w": jnp.array([-2.0, 0.5, 3.0])}, -1.0, 1.0)
    {'w': Array([-1. ,  0.5,  1. ], dtype=float32)}
  """
  _check_bound_numbers("projection_box", "lower", lower)
  _check_bound_numbers("projection_box", "upper", upper)
  both_scalar = _is_bound_leaf(lower) and _is_bound_leaf(upper)  # then no leaf to name
  lower = _per_leaf("projection_box", "lower", lower, tree)
  upper = _per_leaf("projection_box", "upper", upper, tree)
  misordered = _first_misordered(lower, upper)
  if misordered is not None:
    path, low, high = misordered
    where = "" if both_scalar else f" at {jax.tree_util.keystr(path)}"
    raise HyperparameterError(f"projection_box: lower must be <= upper{where}, got "
                              f"lower={low:g} and upper={high:g}")
  return _clip(tree, lower, upper, "projection_box", ("lower", "upper"))


def _clip(tree: PyTree, lower: PyTree, upper: PyTree, stage: str,
          names: tuple[str, str]) -> PyTree:
  """Each leaf clipped to its bounds (trees of ``tree``'s structure), checking first that
  a bound broadcasts to its leaf's shape: a (3,) bound turned a scalar leaf into a (3,)
  one, silently, and a (2,) one on a (3,) leaf raised jnp's "max got incompatible
  shapes" naming neither the projection nor the leaf."""

  def fitted(path, name, bound, x):
    shape = np.shape(bound)
    if shape == () or shape == x.shape:  # the common cases, checked first: this runs per leaf
      return as_dtype(bound, x.dtype)
    # Broadcasts to x.shape, leaving it as it is: each axis, from the right, 1 or x's.
    if len(shape) > x.ndim or any(b not in (1, d) for b, d in zip(shape[::-1], x.shape[::-1])):
      raise HyperparameterError(
          f"{stage}: {name} has shape {shape}, which does not broadcast to the leaf at "
          f"{keystr(path)}, of shape {x.shape}; give a scalar, or a bound for each leaf")
    # Broadcast by name: a (2,) bound on a (1, 2) leaf is a rank promotion, which a
    # caller running with jax_numpy_rank_promotion='raise' has not asked for.
    return jnp.broadcast_to(as_dtype(bound, x.dtype), x.shape)

  def clip(path, x, low, high):
    x = jnp.asarray(x)
    return jnp.clip(x, fitted(path, names[0], low, x), fitted(path, names[1], high, x))

  return jax.tree_util.tree_map_with_path(clip, _floating(tree), lower, upper)


def projection_hypercube(tree: PyTree, scale: Any = 1) -> PyTree:
  """Projection onto the hypercube :math:`[0, s]^n`: :func:`projection_box` with ``lower=0``.

  .. math:: \\operatorname*{argmin}_{p} \\|x - p\\|_2^2 \\;\\text{ s.t. }\\; 0 \\le p \\le s

  Args:
    tree: the tree :math:`x`.
    scale: :math:`s \\ge 0`, a scalar or a tree. Default ``1`` (the unit hypercube);
      ``inf``, as a bound of :func:`projection_box` may be, leaves no upper bound.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_hypercube({"w": jnp.array([-2.0, 0.5, 3.0])})
    {'w': Array([0. , 0.5, 1. ], dtype=float32)}
  """
  if _is_bound_leaf(scale):
    _check_scale("projection_hypercube", scale, NONNEGATIVE_OR_INF, whole_tree=False)
  else:  # a tree of scales: the box's check would name projection_box's lower and upper
    _check_bound_numbers("projection_hypercube", "scale", scale, NONNEGATIVE_OR_INF)
    misordered = _first_misordered(jax.tree.map(lambda _: 0, scale), scale)
    if misordered is not None:
      path, _, high = misordered
      raise HyperparameterError(f"projection_hypercube: scale must be in [0, inf] at "
                                f"{jax.tree_util.keystr(path)}, got {high:g}")
  scale = _per_leaf("projection_hypercube", "scale", scale, tree)
  return _clip(tree, jax.tree.map(lambda _: 0, tree), scale, "projection_hypercube",
               ("lower", "scale"))


@jax.custom_jvp
def _projection_unit_simplex(values: jax.Array) -> jax.Array:
  """The sort-based projection of a vector onto :math:`\\{p \\ge 0, \\sum p = 1\\}`."""
  dtype = values.dtype
  n = values.shape[0]
  # Measured from the largest entry and raised to at least 2 below it, which changes
  # no entry of the projection (its threshold is at least max - 1, so those entries
  # stay 0; 2, not 1, keeps them off that threshold, where rounding could keep them)
  # and keeps the sums below finite: entries near the dtype's max (a class masked with
  # finfo.min) made the cumulative sum -inf, and the result 1e38s.
  values = jnp.maximum(values - jnp.max(values), -2)
  u = jnp.sort(values)[::-1]
  cumsum_u = jnp.cumsum(u)
  ind = jnp.arange(1, n + 1, dtype=dtype)
  # rho: the number of entries kept, the largest j with 1 / j + (u_j - sum_{i<=j} u_i / j) > 0.
  # Written as optax writes it: the j = 1 term is 1 + (u_1 - u_1) = 1 exactly, so rho >= 1
  # (``u_j + (1 - sum) / j`` cancels to 0 when 1 is below the rounding of the sum: rho = 0).
  rho = jnp.count_nonzero(1 / ind + (u - cumsum_u / ind) > 0)
  rho_f = rho.astype(dtype)
  return jax.nn.relu(1 / rho_f + (values - cumsum_u[rho - 1] / rho_f))


@_projection_unit_simplex.defjvp
def _projection_unit_simplex_jvp(primals, tangents):
  (values,), (values_dot,) = primals, tangents
  p = _projection_unit_simplex(values)
  support = (p > 0).astype(values.dtype)
  card = jnp.sum(support)
  # The projection is affine on its support: d p = S (I - 1 1^T / |S|) d x.
  return p, support * values_dot - (jnp.dot(support, values_dot) / card) * support


def projection_simplex(tree: PyTree, scale: jax.typing.ArrayLike = 1) -> PyTree:
  """Projection onto the simplex of entries that are non-negative and sum to ``scale``.

  .. math::
    \\operatorname*{argmin}_{p} \\|x - p\\|_2^2 \\;\\text{ s.t. }\\; p \\ge 0,\\;
    \\textstyle\\sum_i p_i = s
    \\quad\\Longrightarrow\\quad p_i = \\max(x_i - \\tau, 0)

  with :math:`\\tau` the threshold that makes the entries sum to :math:`s`,
  found by sorting (:math:`O(n \\log n)`). The whole tree is one vector: the
  sum runs over every leaf. Differentiable (its Jacobian is the one of the
  affine map on the support).

  Args:
    tree: the tree :math:`x`.
    scale: :math:`s > 0`. Default ``1`` (the probability simplex).

  References:
    Held, Wolfe & Crowder, *Validation of subgradient optimization*,
    Mathematical Programming 1974; Condat, *Fast projection onto the simplex
    and the l1 ball*, Mathematical Programming 2016.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_simplex({"w": jnp.array([2.0, 2.5]), "b": jnp.array(0.5)})
    {'b': Array(0., dtype=float32), 'w': Array([0.25, 0.75], dtype=float32)}
  """
  _check_scale("projection_simplex", scale)
  _check_has_entries("projection_simplex", tree, "no entries sum to scale > 0")
  return _simplex(_floating(tree), scale)


# Jitted, as _l1_ball below: one program per shape and dtype when called eagerly, not
# one kernel per operation (about 15 here); inlined as before under an outer jit.
@jax.jit
def _simplex(tree: PyTree, scale: Any) -> PyTree:
  """:func:`projection_simplex`, ``scale`` unchecked: for the l1 ball's branch that
  projects onto its sphere, traced also where the ball is the whole space (an infinite
  ``scale``, or one that is infinite as held)."""
  # A tree mixing dtypes (bfloat16 and float32 leaves) is solved in the dtype
  # they promote to, as optax does; asked explicitly, so strict promotion allows it.
  with jax.numpy_dtype_promotion("standard"):
    values, unravel = flatten_util.ravel_pytree(tree)
  # A 16-bit vector is solved in float32 and rounded once: solved in bfloat16 its entries
  # came out about 1.5 ulp off, and in float16 a scale of 1e5 was held as inf (every
  # entry inf, for [1, 1, 1], though 33333 fits).
  wide = _at_least_float32(values)
  s = as_dtype(scale, wide.dtype)
  return unravel(as_dtype(s * _projection_unit_simplex(wide / s), values.dtype))


def _at_least_float32(x: jax.Array) -> jax.Array:
  """A bfloat16 or float16 ``x`` as float32; any other as it is (no work traced)."""
  return as_dtype(x, at_least_float32(x))


def _sign_of_projection(x: jax.Array) -> jax.Array:
  """The sign to give :math:`|p|`: that of ``x`` (its phase :math:`x / |x|` when complex),
  and +1 where ``x`` is zero."""
  if jnp.iscomplexobj(x):
    # x < 0 orders complex numbers lexicographically, which is no sign: 1 + 2j came back
    # as 1, off the ray of x (and farther from it than x / |x| times the same modulus).
    modulus = jnp.abs(x)
    nonzero = modulus != 0
    return jnp.where(nonzero, x / jnp.where(nonzero, modulus, 1).astype(x.dtype),
                     jnp.ones_like(x))
  return jnp.where(x < 0, -jnp.ones_like(x), jnp.ones_like(x))


def projection_l1_sphere(tree: PyTree, scale: jax.typing.ArrayLike = 1) -> PyTree:
  """Projection onto the l1 sphere :math:`\\{\\|p\\|_1 = s\\}`.

  .. math::
    \\operatorname*{argmin}_{p} \\|x - p\\|_2^2 \\;\\text{ s.t. }\\; \\|p\\|_1 = s
    \\quad\\Longrightarrow\\quad p = \\operatorname{sign}(x) \\odot
    \\operatorname{proj}_{\\Delta_s}(|x|)

  where :math:`\\Delta_s` is the simplex of :func:`projection_simplex`,
  :math:`\\operatorname{sign}(x) = x / |x|` (the phase, for a complex entry) and
  :math:`\\operatorname{sign}(0) = +1`. Differs from optax 0.2.8, which takes
  :math:`\\operatorname{sign}(0) = 0`: for a point inside the sphere with a
  zero entry (``[1, 0]`` and :math:`s = 2`) optax returns ``[1.5, 0]``, off
  the sphere; the projection is ``[1.5, 0.5]``.

  Args:
    tree: the tree :math:`x`.
    scale: :math:`s > 0`. Default ``1``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_l1_sphere({"w": jnp.array([1.0, 0.0])}, 2.0)
    {'w': Array([1.5, 0.5], dtype=float32)}
  """
  _check_scale("projection_l1_sphere", scale)
  _check_has_entries("projection_l1_sphere", tree, _EMPTY_NORM)
  return _l1_sphere(_floating(tree), scale)


def _l1_sphere(tree: PyTree, scale: Any) -> PyTree:
  """:func:`projection_l1_sphere`, ``scale`` unchecked (see :func:`_simplex`)."""
  magnitude = _simplex(jax.tree.map(jnp.abs, tree), scale)
  # |x| of a complex leaf is real: cast back so the product is the leaf's dtype (also
  # under strict dtype promotion).
  return tree_mul(jax.tree.map(_sign_of_projection, tree), tree_cast_like(magnitude, tree))


def projection_l1_ball(tree: PyTree, scale: jax.typing.ArrayLike = 1) -> PyTree:
  """Projection onto the l1 ball :math:`\\{\\|p\\|_1 \\le s\\}`.

  .. math::
    \\operatorname*{argmin}_{p} \\|x - p\\|_2^2 \\;\\text{ s.t. }\\; \\|p\\|_1 \\le s

  :math:`x` itself inside the ball, else :func:`projection_l1_sphere`.

  Args:
    tree: the tree :math:`x`.
    scale: :math:`s > 0`. Default ``1``; ``inf`` (the whole space) returns
      :math:`x`.

  References:
    Duchi, Shalev-Shwartz, Singer & Chandra, *Efficient projections onto the
    l1-ball for learning in high dimensions*, ICML 2008.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_l1_ball({"w": jnp.array([2.0, -1.0])})
    {'w': Array([ 1., -0.], dtype=float32)}
  """
  _check_scale("projection_l1_ball", scale, POSITIVE_OR_INF)
  tree = _floating(tree)
  if (is_concrete(scale) and np.all(np.isinf(scale))) or tree_size(tree) == 0:
    # The ball that is the whole space; or a tree without entries, inside every ball (the
    # sphere's branch, traced though not taken, raised for it).
    return tree
  # In float32 for 16-bit leaves, as the sphere is solved: a float16 norm overflowed to inf
  # (and inf <= scale held for a scale of 1e5, also held as inf: x came back unprojected).
  return _l1_ball(tree, scale)


# Run eagerly, the cond (its branches new jaxprs at each call) was compiled again at every
# call; jitted, once per shape and dtype.
@jax.jit
def _l1_ball(tree: PyTree, scale: Any) -> PyTree:
  """:func:`projection_l1_ball` of a checked, floating, non-empty ``tree`` and finite
  ``scale``."""
  l1_norm = tree_norm(jax.tree.map(_at_least_float32, tree), ord=1)
  return jax.lax.cond(l1_norm <= as_dtype(scale, l1_norm.dtype), lambda t: t,
                      lambda t: _l1_sphere(t, scale), tree)


def projection_l2_sphere(tree: PyTree, scale: jax.typing.ArrayLike = 1) -> PyTree:
  """Projection onto the l2 sphere :math:`\\{\\|p\\|_2 = s\\}`.

  .. math::
    \\operatorname*{argmin}_{p} \\|x - p\\|_2^2 \\;\\text{ s.t. }\\; \\|p\\|_2 = s
    \\quad\\Longrightarrow\\quad p = \\frac{s}{\\|x\\|_2}\\, x

  Every point of the sphere is closest to :math:`x = 0`; this returns
  :math:`s / \\sqrt{n}` in every entry (optax 0.2.8 returns NaN).

  Args:
    tree: the tree :math:`x`.
    scale: :math:`s > 0`. Default ``1``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_l2_sphere({"w": jnp.array([3.0, 4.0])})
    {'w': Array([0.6, 0.8], dtype=float32)}
  """
  _check_scale("projection_l2_sphere", scale)
  _check_has_entries("projection_l2_sphere", tree, _EMPTY_NORM)
  tree = _floating(tree)
  norm = tree_norm(tree)
  is_zero = norm == 0
  base = tree_where(is_zero, tree_full_like(tree, 1), tree)
  base_norm = jnp.where(is_zero, jnp.sqrt(jnp.asarray(tree_size(tree), norm.dtype)), norm)
  return tree_scale(as_dtype(scale, norm.dtype) / base_norm, base)


def projection_l2_ball(tree: PyTree, scale: jax.typing.ArrayLike = 1) -> PyTree:
  """Projection onto the l2 ball :math:`\\{\\|p\\|_2 \\le s\\}`.

  .. math::
    \\operatorname*{argmin}_{p} \\|x - p\\|_2^2 \\;\\text{ s.t. }\\; \\|p\\|_2 \\le s
    \\quad\\Longrightarrow\\quad p = \\frac{s}{\\max(\\|x\\|_2, s)}\\, x

  Args:
    tree: the tree :math:`x`.
    scale: :math:`s > 0`. Default ``1``; ``inf`` (the whole space) returns
      :math:`x`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_l2_ball({"w": jnp.array([3.0, 4.0])})
    {'w': Array([0.6, 0.8], dtype=float32)}
  """
  _check_scale("projection_l2_ball", scale, POSITIVE_OR_INF)
  tree = _floating(tree)
  # s / ||x|| outside the ball, not s / sqrt(max(||x||^2, s^2)) as optax takes it: s^2
  # overflows float32 from s = 2e19 (every point came back as 0, inside the ball too) and
  # underflows below 1e-19 (0 came back NaN, a small point inf); inside, 1 exactly (an
  # infinite s, the ball that is the whole space, gave inf / inf = NaN).
  norm = tree_norm(tree)
  s = as_dtype(scale, norm.dtype)
  return tree_scale(jnp.where(norm <= s, 1, s / norm), tree)


def projection_linf_ball(tree: PyTree, scale: jax.typing.ArrayLike = 1) -> PyTree:
  """Projection onto the l-infinity ball :math:`\\{\\|p\\|_\\infty \\le s\\}`: a box.

  .. math::
    \\operatorname*{argmin}_{p} \\|x - p\\|_2^2 \\;\\text{ s.t. }\\; \\|p\\|_\\infty \\le s
    \\quad\\Longrightarrow\\quad p = \\min(\\max(x, -s), s)

  Args:
    tree: the tree :math:`x`.
    scale: :math:`s \\ge 0`. Default ``1``; ``inf``, as a bound of
      :func:`projection_box` may be, leaves ``tree`` as it is.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_linf_ball({"w": jnp.array([-3.0, 0.5])})
    {'w': Array([-1. ,  0.5], dtype=float32)}
  """
  _check_scale("projection_linf_ball", scale, NONNEGATIVE_OR_INF, whole_tree=False)
  s = jnp.asarray(scale)
  return _clip(tree, jax.tree.map(lambda _: -s, tree), jax.tree.map(lambda _: s, tree),
               "projection_linf_ball", ("scale", "scale"))


def projection_vector(x: PyTree, a: PyTree) -> PyTree:
  """Projection onto the line spanned by the tree ``a``.

  .. math:: \\operatorname{proj}_a x = \\frac{\\langle x, a \\rangle}{\\langle a, a \\rangle}\\, a

  Args:
    x: the tree to project.
    a: the direction, a tree the structure of ``x`` (not zero).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_vector(jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0]))
    Array([1., 0.], dtype=float32)
  """
  check_structure(x, a, "x", "a", stage="projection_vector")  # JAX's error named neither
  x, a = _floating(x), _floating(a)
  if tree_size(a) == 0:
    return x  # the only point of no entries (tree_vdot's 0 / 0 raised ZeroDivisionError)
  return tree_scale(tree_vdot(x, a) / tree_vdot(a, a), a)


def projection_hyperplane(x: PyTree, a: PyTree, b: jax.typing.ArrayLike) -> PyTree:
  """Projection onto the hyperplane :math:`\\{\\langle a, y \\rangle = b\\}`.

  .. math::
    \\operatorname*{argmin}_{y} \\|x - y\\|_2^2 \\;\\text{ s.t. }\\; \\langle a, y \\rangle = b
    \\quad\\Longrightarrow\\quad
    y = x + \\frac{b - \\langle a, x \\rangle}{\\langle a, a \\rangle}\\, a

  Args:
    x: the tree to project.
    a: the normal, a tree the structure of ``x`` (not zero).
    b: the offset, a finite scalar.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_hyperplane(jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0]), 1.0)
    Array([0., 1.], dtype=float32)
  """
  _check_offset("projection_hyperplane", b, ANY)
  check_structure(x, a, "x", "a", stage="projection_hyperplane")
  x, a = _floating(x), _floating(a)
  ax = tree_vdot(x, a)
  return tree_add_scale(x, (as_dtype(b, jnp.result_type(ax)) - ax) / tree_vdot(a, a), a)


def projection_halfspace(x: PyTree, a: PyTree, b: jax.typing.ArrayLike) -> PyTree:
  """Projection onto the halfspace :math:`\\{\\langle a, y \\rangle \\le b\\}`.

  .. math::
    \\operatorname*{argmin}_{y} \\|x - y\\|_2^2 \\;\\text{ s.t. }\\; \\langle a, y \\rangle \\le b
    \\quad\\Longrightarrow\\quad
    y = x + \\frac{\\min(b - \\langle a, x \\rangle, 0)}{\\langle a, a \\rangle}\\, a

  Args:
    x: the tree to project.
    a: the normal, a tree the structure of ``x`` (not zero).
    b: the offset, a scalar; ``inf`` (the whole space) returns :math:`x`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.projections.projection_halfspace(jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0]), 1.0)
    Array([0., 1.], dtype=float32)
  """
  _check_offset("projection_halfspace", b, _UP_TO_INF)
  check_structure(x, a, "x", "a", stage="projection_halfspace")
  x, a = _floating(x), _floating(a)
  ax = tree_vdot(x, a)
  gap = jnp.minimum(as_dtype(b, jnp.result_type(ax)) - ax, 0)
  return tree_add_scale(x, gap / tree_vdot(a, a), a)
