"""optax's top-level numeric helpers: norms that keep gradients finite, counters, averages.

``gtx.safe_norm``, ``gtx.incremental_update``, ``gtx.power_iteration``, ...
with optax's names, arguments and defaults. Where gradtx already has the idea
these call it: :func:`global_norm` is :func:`gradtx.tree.global_norm`, the
moment helpers are :mod:`gradtx.tree_utils`'s, and an integer
:func:`safe_increment` is the counter every stage advances.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, cast

import jax
import jax.numpy as jnp
from jax import lax

from gradtx import core, numerics, tree, tree_utils
from gradtx.errors import ArgumentTypeError, HyperparameterError, StructureError
from gradtx.numerics import abs_sq, as_dtype, as_float

PyTree = Any

__all__ = ["bias_correction", "global_norm", "incremental_update", "matrix_inverse_pth_root",
           "periodic_update", "power_iteration", "safe_increment", "safe_int32_increment",
           "safe_norm", "safe_root_mean_squares", "update_infinity_moment", "update_moment",
           "update_moment_per_elem_norm"]


def global_norm(updates: PyTree) -> jax.Array:
  """The l2 norm of a whole tree, its entries taken as one vector.

  .. math:: \\|g\\|_2 = \\sqrt{\\textstyle\\sum_\\text{leaves} \\sum_i |g_i|^2}

  :func:`gradtx.tree.global_norm`: bfloat16 leaves are summed in float32
  and the norm is float32 (float64 for float64 leaves). optax 0.2.8 warns
  that this name is deprecated in favour of ``optax.tree.norm``; gradtx
  keeps it without a warning (:func:`gradtx.tree_utils.tree_norm` is the same).

  Args:
    updates: a tree.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])})
    Array(5., dtype=float32)
  """
  return tree.global_norm(updates)


@core.checks_flags
def safe_norm(x: jax.typing.ArrayLike, min_norm: jax.typing.ArrayLike,
              ord: int | float | str | None = None,  # noqa: A002 (optax's name)
              axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> jax.Array:
  """:math:`\\max(\\|x\\|, \\text{min\\_norm})` with a finite gradient at :math:`x = 0`.

  .. math:: \\operatorname{safe\\_norm}(x) = \\max(\\|x\\|, c)

  ``jnp.maximum(jnp.linalg.norm(x), c)`` has a NaN gradient at zero: the
  norm's derivative :math:`x / \\|x\\|` is evaluated even where the maximum
  does not take it. Here the norm is taken of ones where :math:`\\|x\\| \\le c`,
  so the gradient there is 0, as the maximum says.

  Args:
    x: an array.
    min_norm: :math:`c`, the lower bound of the result, cast to the norm's dtype.
    ord: the order of the norm, as :func:`jax.numpy.linalg.norm`. Default
      ``None`` (l2, or Frobenius for a matrix).
    axis: the axes to take the norm over, as :func:`jax.numpy.linalg.norm`.
      Default ``None``.
    keepdims: keep the reduced axes with size one. Default ``False``.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> jax.grad(lambda x: gtx.safe_norm(x, 1e-6))(jnp.zeros(2))
    Array([0., 0.], dtype=float32)
  """
  x = jnp.asarray(x)
  norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
  c = as_dtype(min_norm, norm.dtype)
  small = norm <= c
  x = jnp.where(small, jnp.ones_like(x), x)
  norm = norm if keepdims else jnp.squeeze(norm, axis=axis)
  masked_norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
  return jnp.where(norm <= c, c, masked_norm)


def safe_root_mean_squares(x: jax.typing.ArrayLike, min_rms: jax.typing.ArrayLike) -> jax.Array:
  """:math:`\\max(\\operatorname{rms}(x), \\text{min\\_rms})` with a finite gradient at zero.

  .. math:: \\max\\left(\\sqrt{\\tfrac{1}{n}\\textstyle\\sum_i |x_i|^2},\\; c\\right)

  As :func:`safe_norm`: where the root mean square is at most :math:`c` it
  is taken of ones, so the gradient there is 0 instead of NaN.

  Args:
    x: an array.
    min_rms: :math:`c`, the lower bound of the result, cast to the result's dtype.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.safe_root_mean_squares(jnp.array([3.0, 4.0, 0.0, 0.0]), 0.1)
    Array(2.5, dtype=float32)
  """
  x = jnp.asarray(x)
  rms = jnp.sqrt(jnp.mean(abs_sq(x)))
  c = as_dtype(min_rms, rms.dtype)
  x = jnp.where(rms <= c, jnp.ones_like(x), x)
  return jnp.where(rms <= c, c, jnp.sqrt(jnp.mean(abs_sq(x))))


def safe_increment(count: jax.typing.ArrayLike) -> jax.Array:
  """:math:`t + 1`, staying at the dtype's largest value instead of overflowing.

  An integer count is advanced by the same function every gradtx stage uses
  for its step count; a float count stops at the largest finite float.

  Args:
    count: an integer or float scalar (or array).

  Raises:
    ValueError: a count that is neither integer nor float.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.safe_increment(jnp.asarray(2147483647, jnp.int32))
    Array(2147483647, dtype=int32)
  """
  count = jnp.asarray(count)
  if jnp.issubdtype(count.dtype, jnp.integer):
    return core.safe_increment(count)
  if jnp.issubdtype(count.dtype, jnp.floating):
    limit = jnp.asarray(jnp.finfo(count.dtype).max, count.dtype)
    return jnp.where(count < limit, count + jnp.ones_like(count), limit)
  raise ValueError(f"safe_increment: count must be an integer or float array, got dtype "
                   f"{count.dtype}")


def safe_int32_increment(count: jax.typing.ArrayLike) -> jax.Array:
  """optax's older name of :func:`safe_increment` (the same function).

  Args:
    count: an integer or float scalar.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.safe_int32_increment(jnp.asarray(1, jnp.int32))
    Array(2, dtype=int32)
  """
  return safe_increment(count)


def _same_shape(new: Any, old: Any, where: str) -> None:
  """Raises ``ValueError`` where a leaf of ``new_tensors`` and its ``old_tensors`` leaf
  differ in shape: jnp would broadcast them into an average, or a copy, of another shape
  than the one kept (optax's do). :func:`gradtx.tree.names_structure_mismatch` then names
  the key path and the two shapes. Python-side, at trace time: nothing in a step."""
  if not tree._same_shape(new, old):  # pylint: disable=protected-access
    raise ValueError(f"{where}: new_tensors and old_tensors differ in shape: "
                     f"{jnp.shape(new)} and {jnp.shape(old)}")


@tree.names_structure_mismatch("new_tensors", "old_tensors", same_shapes=True)
def incremental_update(new_tensors: PyTree, old_tensors: PyTree,
                       step_size: jax.typing.ArrayLike) -> PyTree:
  """Polyak averaging: an exponential moving average of the parameters.

  .. math:: \\bar\\theta \\leftarrow \\alpha\\, \\theta + (1 - \\alpha)\\, \\bar\\theta

  Each leaf in the dtype of ``new_tensors``' leaf (:math:`\\alpha` cast to
  it); a ``None`` leaf of ``new_tensors`` gives ``None``. Two leaves of
  different shapes raise :class:`~gradtx.StructureError` naming the key path
  (optax broadcasts them into an average of another shape).

  Args:
    new_tensors: the latest parameters :math:`\\theta`.
    old_tensors: the average :math:`\\bar\\theta`, the structure of ``new_tensors``.
    step_size: :math:`\\alpha \\in [0, 1]`.

  References:
    Polyak & Juditsky, *Acceleration of stochastic approximation by
    averaging*, SIAM J. Control and Optimization 1992.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.incremental_update(jnp.array([1.0]), jnp.array([0.0]), 0.25)
    Array([0.25], dtype=float32)
  """
  core.check_argument("incremental_update", "step_size", step_size, core.UNIT, scalar=True)

  def average(new, old):
    if new is None:
      return None
    _same_shape(new, old, "incremental_update")
    dtype = jnp.result_type(new)
    alpha = as_dtype(step_size, dtype)
    return alpha * new + (1 - alpha) * as_dtype(old, dtype)
  return jax.tree.map(average, new_tensors, old_tensors, is_leaf=lambda x: x is None)


@tree.names_structure_mismatch("new_tensors", "old_tensors", same_shapes=True)
def periodic_update(new_tensors: PyTree, old_tensors: PyTree, steps: jax.typing.ArrayLike,
                    update_period: jax.typing.ArrayLike) -> PyTree:
  """A slow copy of the parameters, refreshed every ``update_period`` steps.

  .. math:: \\bar\\theta \\leftarrow \\theta \\text{ if } t \\bmod K = 0
     \\text{ else } \\bar\\theta

  Args:
    new_tensors: the latest parameters :math:`\\theta`.
    old_tensors: the slow copy :math:`\\bar\\theta`, the structure of ``new_tensors``.
    steps: the step :math:`t` of the online parameters (an integer).
    update_period: :math:`K`, every how many steps to copy (an integer).

  References:
    Mnih et al., *Human-level control through deep reinforcement learning*,
    Nature 2015; Grill et al., *Bootstrap your own latent*, NeurIPS 2020.

  Two leaves of different shapes raise :class:`~gradtx.StructureError` naming
  the key path (optax broadcasts them into a copy of another shape).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.periodic_update(jnp.array([1.0]), jnp.array([0.0]), jnp.asarray(10), 5)
    Array([1.], dtype=float32)
  """
  core.check_argument("periodic_update", "steps", steps, core.NONNEGATIVE_INT, scalar=True)
  core.check_argument("periodic_update", "update_period", update_period, core.POSITIVE_INT,
                      scalar=True)
  copy = jnp.mod(steps, update_period) == 0

  def pick(new, old):
    _same_shape(new, old, "periodic_update")
    return jnp.where(copy, new, old)
  return tree.tree_map(pick, new_tensors, old_tensors)


def bias_correction(moment: PyTree, decay: jax.typing.ArrayLike,
                    count: jax.typing.ArrayLike) -> PyTree:
  """optax's top-level name of :func:`gradtx.tree_utils.tree_bias_correction`.

  .. math:: \\hat m = \\frac{m}{1 - \\beta^t}

  Args:
    moment: the moving averages :math:`m`.
    decay: :math:`\\beta`.
    count: the step :math:`t`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.bias_correction(jnp.array([0.75]), 0.5, jnp.asarray(2))
    Array([1.], dtype=float32)
  """
  return tree_utils.tree_bias_correction(moment, decay, count)


@tree.names_structure_mismatch("updates", "moments")
def update_moment(updates: PyTree, moments: PyTree, decay: jax.typing.ArrayLike,
                  order: int) -> PyTree:
  """optax's top-level name of :func:`gradtx.tree_utils.tree_update_moment`.

  .. math:: m \\leftarrow (1 - \\beta)\\, g^k + \\beta\\, m

  Args:
    updates: the tree :math:`g`.
    moments: the moving averages :math:`m`.
    decay: :math:`\\beta`.
    order: :math:`k`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.update_moment(jnp.array([2.0]), jnp.array([0.0]), 0.5, 1)
    Array([1.], dtype=float32)
  """
  return tree_utils.tree_update_moment(updates, moments, decay, order)


@tree.names_structure_mismatch("updates", "moments")
def update_infinity_moment(updates: PyTree, moments: PyTree, decay: jax.typing.ArrayLike,
                           eps: jax.typing.ArrayLike) -> PyTree:
  """optax's top-level name of :func:`gradtx.tree_utils.tree_update_infinity_moment`.

  .. math:: u \\leftarrow \\max(|g| + \\epsilon,\\; \\beta\\, u)

  Args:
    updates: the tree :math:`g`.
    moments: the running maxima :math:`u`.
    decay: :math:`\\beta`.
    eps: :math:`\\epsilon`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.update_infinity_moment(jnp.array([-3.0]), jnp.array([2.0]), 0.5, 0.0)
    Array([3.], dtype=float32)
  """
  return tree_utils.tree_update_infinity_moment(updates, moments, decay, eps)


@tree.names_structure_mismatch("updates", "moments")
def update_moment_per_elem_norm(updates: PyTree, moments: PyTree, decay: jax.typing.ArrayLike,
                                order: int) -> PyTree:
  """optax's top-level name of :func:`gradtx.tree_utils.tree_update_moment_per_elem_norm`.

  .. math:: m \\leftarrow (1 - \\beta)\\, |g|^k + \\beta\\, m

  Args:
    updates: the tree :math:`g`.
    moments: the moving averages :math:`m`.
    decay: :math:`\\beta`.
    order: :math:`k`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.update_moment_per_elem_norm(jnp.array([2.0]), jnp.array([0.0]), 0.5, 2)
    Array([2.], dtype=float32)
  """
  return tree_utils.tree_update_moment_per_elem_norm(updates, moments, decay, order)


# ----------------------------------------------------------------------------
# Linear algebra.


def _square(matrix: Any, where: str, *, real: bool) -> jax.Array:
  """``matrix`` as an array, checked to be square (n, n) with n >= 1; an integer or bool
  one as the default float dtype (:func:`gradtx.numerics.as_float`: optax's draw of
  ``v0`` in its dtype raised "dtype argument to `uniform` must be a float dtype"); with
  ``real``, a complex one refused. A string, None or another object raised jax's "Value
  'abc' with dtype <U3 is not a valid JAX array type", naming neither ``where`` nor the
  argument."""
  try:
    array = jnp.asarray(matrix)
  except (TypeError, ValueError):
    array = None
  if array is None or not (jnp.issubdtype(array.dtype, jnp.number) or array.dtype == bool):
    raise ArgumentTypeError.about(where, "matrix", matrix, "must be a square (n, n) array, "
                                  f"got {type(matrix).__name__}: {matrix!r}")
  if array.ndim != 2 or array.shape[0] != array.shape[1]:
    raise StructureError(f"{where}: matrix must be a square (n, n) array, got shape "
                         f"{array.shape}")
  if array.size == 0:  # numpy's "zero-size array to reduction operation max"
    raise StructureError(f"{where}: matrix must have entries (n >= 1), got shape {array.shape}")
  if real and array.dtype.kind == "c":
    raise ArgumentTypeError.about(where, "matrix", matrix, "must be real (symmetric positive "
                                  f"semi-definite), got {array.dtype}")
  return as_float(array)


def _check_iteration(where: str, num_iters: Any, error_tolerance: Any) -> None:
  """Refuses a ``num_iters`` that is not an integer >= 0 and an ``error_tolerance`` that is
  not a number >= 0 (traced ones pass): -1 or 2.5 steps ran 0 or 3 without a word, a
  string failed in the loop's ``<`` ("not supported between instances of
  'DynamicJaxprTracer' and 'str'"), and a NaN tolerance never stopped the loop early."""
  core.check_value(where, "num_iters", num_iters, core.NONNEGATIVE_INT, scalar=True)
  core.check_value(where, "error_tolerance", error_tolerance, core.NONNEGATIVE, scalar=True)


def _normalize(v: PyTree) -> PyTree:
  return tree_utils.tree_scale(1 / tree_utils.tree_norm(v), v)


def power_iteration(matrix: jax.typing.ArrayLike | Callable[[PyTree], PyTree], *,
                    v0: PyTree | None = None, num_iters: jax.typing.ArrayLike = 100,
                    error_tolerance: jax.typing.ArrayLike = 1e-6,
                    precision: lax.Precision = lax.Precision.HIGHEST,
                    key: jax.Array | None = None) -> tuple[jax.Array, PyTree]:
  """The dominant eigenvalue of a matrix and its eigenvector, by power iteration.

  .. math::
    v_{k+1} = \\frac{A v_k}{\\|A v_k\\|_2}, \\qquad
    \\lambda_k = \\langle v_k, A v_k \\rangle

  stopping after ``num_iters`` steps or once
  :math:`\\|A v_k - \\lambda_k v_k\\| / |\\lambda_k| <` ``error_tolerance``.

  Args:
    matrix: a square array :math:`A`, or a function computing :math:`v \\mapsto
      Av` on a tree (a Hessian-vector product, say).
    v0: the first vector: shape ``(n,)`` for an array, a tree the function
      takes for a callable (required then). Default ``None``: uniform in
      :math:`[-1, 1]`, drawn with ``key``.
    num_iters: the most steps. Default ``100``.
    error_tolerance: the relative residual to stop at. Default ``1e-6``.
    precision: the matmul precision for an array. Default ``HIGHEST``.
    key: the key for ``v0``. Default ``None``: ``jax.random.PRNGKey(0)``.

  Returns:
    ``(eigenvalue, eigenvector)``, the eigenvector of unit l2 norm.

  An integer matrix is taken as the default float dtype; for a complex
  (Hermitian) one, ``v0`` is drawn real.

  Run eagerly, the iteration is one compiled program per shape, dtype and
  ``precision``; for a function ``matrix``, also per function, looked up by its
  identity as ``jax.jit`` looks up a static argument: pass the same function to
  reuse it (one made anew at each call compiles at each call; values it reads
  from outside are those of the call that compiled it).

  Raises:
    ValueError: a callable ``matrix`` without ``v0``;
      :class:`~gradtx.StructureError`: an array ``matrix`` that is not square,
      a ``v0`` that is not ``(n,)``; :class:`~gradtx.HyperparameterError`:
      ``num_iters`` not an integer ``>= 0``, ``error_tolerance`` not a number
      ``>= 0``; :class:`~gradtx.ArgumentTypeError`: a ``matrix`` that is not
      an array of numbers, a ``key`` that is not a PRNG key.

  References:
    Golub & Van Loan, *Matrix Computations*, 4th ed., section 7.3.1.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> value, vector = gtx.power_iteration(jnp.diag(jnp.array([1.0, 3.0])))
    >>> round(float(value), 4)
    3.0
  """
  _check_iteration("power_iteration", num_iters, error_tolerance)
  mvp: Callable[[PyTree], PyTree] | None = None  # None: the matrix's own product
  if callable(matrix):
    mvp = matrix
    if v0 is None:
      raise ValueError("power_iteration: v0 is required when matrix is a function; pass a "
                       "tree of the shape the function takes")
  else:
    matrix = _square(matrix, "power_iteration", real=False)
    n = matrix.shape[0]
    if v0 is None:
      try:
        v0 = jax.random.uniform(jax.random.PRNGKey(0) if key is None else key, (n,),
                                numerics.real_dtype(matrix.dtype), minval=-1.0, maxval=1.0)
      except (TypeError, ValueError):  # jax's "JAX encountered invalid PRNG key data"
        raise tree.not_a_prng_key("power_iteration", key, or_none=True) from None
      v0 = v0.astype(matrix.dtype)
    elif jnp.shape(v0)[:1] != (n,):  # jnp.matmul's "dot_general requires contracting ..."
      raise StructureError(f"power_iteration: v0 must be a vector of shape (n,) = ({n},) for "
                           f"a matrix of shape {matrix.shape}, got shape {jnp.shape(v0)}")
  array = None if mvp is not None else cast(jax.Array, matrix)
  return _power_iterations(mvp, precision)(array, v0, num_iters, error_tolerance)


def _power_iterate(mvp: Callable[[PyTree], PyTree] | None, precision: Any,
                   matrix: jax.Array | None, v0: PyTree, num_iters: Any,
                   error_tolerance: Any) -> tuple[jax.Array, PyTree]:
  """:func:`power_iteration` of checked arguments: ``mvp``, or ``matrix`` (``mvp`` None)."""
  if mvp is None:
    array = cast(jax.Array, matrix)
    mvp = lambda v: jnp.matmul(array, v, precision=precision)  # noqa: E731
  v0 = _normalize(v0)
  z0 = mvp(v0)
  eig0 = jnp.zeros_like(jnp.asarray(tree_utils.tree_vdot(v0, z0)))

  def cond(loop):
    v, z, eig, i = loop
    residual = tree_utils.tree_norm(tree_utils.tree_add_scale(z, -eig, v))
    # The residual is a norm (float32 for a bfloat16 matrix, real for a complex one): |eig|
    # cast to it, as strict promotion asks.
    converged = (jnp.abs(residual / as_dtype(jnp.abs(eig), residual.dtype))
                 < as_dtype(error_tolerance, residual.dtype))
    return ~converged & (i < num_iters)

  def body(loop):
    _, z, _, i = loop
    v = _normalize(z)
    z = mvp(v)
    return v, z, jnp.asarray(tree_utils.tree_vdot(v, z)).astype(eig0.dtype), i + 1

  _, z, eig, _ = lax.while_loop(cond, body, (v0, z0, eig0, jnp.asarray(0)))
  return eig, _normalize(z)


# Run eagerly, the while_loop above (its cond and body new closures at each call) was
# compiled again at every call; jitted, once per shape, dtype, precision and function (a
# callable ``matrix``: looked up by identity, as lax.while_loop looks up a body).
# Under an outer jit it is inlined.
_power_iterations = core.jit_per_static(_power_iterate)


def _mat_power(mat: jax.Array, p: jax.typing.ArrayLike, precision: lax.Precision) -> jax.Array:
  """:math:`M^p` for :math:`p` in 1, 2, 4, 8, by repeated squaring."""
  def square_times(k: int) -> Callable[[jax.Array], jax.Array]:
    def power(m):
      for _ in range(k):
        m = jnp.matmul(m, m, precision=precision)
      return m
    return power
  exponent = jnp.round(jnp.log2(jnp.asarray(p, jnp.float32))).astype(jnp.int32)
  return lax.switch(exponent, [square_times(k) for k in range(4)], mat)


def matrix_inverse_pth_root(matrix: jax.typing.ArrayLike, p: jax.typing.ArrayLike,
                            num_iters: jax.typing.ArrayLike = 100,
                            ridge_epsilon: jax.typing.ArrayLike = 1e-6,
                            error_tolerance: jax.typing.ArrayLike = 1e-6,
                            precision: lax.Precision = lax.Precision.HIGHEST
                            ) -> tuple[jax.Array, jax.Array]:
  """:math:`(A + \\epsilon\\lambda_{\\max} I)^{-1/p}` of a symmetric PSD matrix, by Newton iterations.

  Coupled Newton iterations:

  .. math::
    M_0 = z A_\\epsilon,\\; H_0 = z^{1/p} I,\\; z = \\frac{1 + p}{2\\|A_\\epsilon\\|_F};
    \\quad
    T_k = \\tfrac{p + 1}{p} I - \\tfrac{1}{p} M_k,\\;
    M_{k+1} = T_k^p M_k,\\; H_{k+1} = H_k T_k

  until :math:`\\max |M_k - I| <` ``error_tolerance`` (or the error grows by
  more than 1.2x, when the previous :math:`H` is returned), with
  :math:`A_\\epsilon = A + \\epsilon \\lambda_{\\max}(A) I` (the ridge scaled by
  the largest eigenvalue, from :func:`power_iteration`). Computed in the
  matrix's dtype (optax always builds its identity in float32).

  Args:
    matrix: :math:`A`, symmetric positive semi-definite, ``(n, n)``.
    p: the root, 1, 2, 4 or 8.
    num_iters: the most iterations. Default ``100``.
    ridge_epsilon: :math:`\\epsilon`. Default ``1e-6``.
    error_tolerance: the error to stop at. Default ``1e-6``.
    precision: the matmul precision. Default ``HIGHEST``.

  Returns:
    ``(root, error)``: :math:`A_\\epsilon^{-1/p}` and :math:`\\max |M - I|`.

  An integer matrix is taken as the default float dtype.

  Raises:
    HyperparameterError: a concrete ``p`` other than 1, 2, 4 or 8 (the
      iteration takes :math:`T_k^p` by repeated squaring, so another root
      would be wrong, silently); ``num_iters`` not an integer ``>= 0``;
      ``ridge_epsilon`` or ``error_tolerance`` not a number ``>= 0`` (a NaN
      ridge gave a root of NaN).
    StructureError: a ``matrix`` that is not square.
    ArgumentTypeError: a ``matrix`` that is not an array of real numbers.

  References:
    Higham, *Functions of Matrices: Theory and Computation*, SIAM 2008,
    eq. 7.18; Gupta, Koren & Singer, *Shampoo*, ICML 2018.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> root, error = gtx.matrix_inverse_pth_root(jnp.diag(jnp.array([4.0, 16.0])), 2)
    >>> [round(float(r), 3) for r in jnp.diag(root)]
    [0.5, 0.25]
  """
  where = "matrix_inverse_pth_root"
  roots = "must be 1, 2, 4 or 8"
  core.check_numbers(where, "p", p, core.POSITIVE_INT)  # True, '2': not a root
  if core.is_concrete(p) and (jnp.ndim(p) != 0 or p not in (1, 2, 4, 8)):
    raise HyperparameterError.about(where, "p", p, f"{roots}, got {p!r}")
  _check_iteration(where, num_iters, error_tolerance)
  core.check_value(where, "ridge_epsilon", ridge_epsilon, core.NONNEGATIVE, scalar=True)
  matrix = _square(matrix, where, real=True)
  return _inverse_pth_root(matrix, p, num_iters, ridge_epsilon, error_tolerance,
                           precision=precision)


# Run eagerly, the while_loop (its cond and body new closures at each call) and power
# iteration's were compiled again at every call; jitted, once per shape, dtype and precision
# (p is an argument: the roots share the program, picking their power with a switch).
# Under an outer jit it is inlined.
@functools.partial(jax.jit, static_argnames="precision")
def _inverse_pth_root(matrix: jax.Array, p: Any, num_iters: Any, ridge_epsilon: Any,
                      error_tolerance: Any, *, precision: Any) -> tuple[jax.Array, jax.Array]:
  """:func:`matrix_inverse_pth_root` of checked arguments."""
  dtype = matrix.dtype
  n = matrix.shape[0]
  alpha = -1 / jnp.asarray(p, dtype)
  identity = jnp.eye(n, dtype=dtype)
  max_ev, _ = power_iteration(matrix, num_iters=100, error_tolerance=1e-6, precision=precision)
  ridge = as_dtype(ridge_epsilon, dtype) * jnp.maximum(max_ev, as_dtype(1e-16, dtype))
  tolerance = as_dtype(error_tolerance, dtype)

  if n == 1:
    return (matrix + ridge) ** alpha, jnp.zeros((), dtype)

  def cond(state):
    i, _, _, _, error, run = state
    return (i < num_iters) & (error > tolerance) & run

  def body(state):
    i, mat_m, mat_h, _, error, _ = state
    mat_t = (1 - alpha) * identity + alpha * mat_m
    new_m = jnp.matmul(_mat_power(mat_t, p, precision), mat_m, precision=precision)
    new_h = jnp.matmul(mat_h, mat_t, precision=precision)
    new_error = jnp.max(jnp.abs(new_m - identity))
    # The error may grow for a step before it falls; more than 1.2x is divergence.
    return i + 1, new_m, new_h, mat_h, new_error, new_error < error * as_dtype(1.2, dtype)

  damped = matrix + ridge * identity
  z = (1 + jnp.asarray(p, dtype)) / (2 * jnp.linalg.norm(damped))
  mat_m0 = damped * z
  mat_h0 = identity * jnp.power(z, -alpha)
  state = (jnp.asarray(0), mat_m0, mat_h0, mat_h0, jnp.max(jnp.abs(mat_m0 - identity)),
           jnp.asarray(True))
  _, mat_m, mat_h, old_h, _, converged = lax.while_loop(cond, body, state)
  error = jnp.max(jnp.abs(mat_m - identity))
  return jnp.where(converged, mat_h, old_h), error

