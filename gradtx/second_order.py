"""Curvature of a loss: Hessian-vector products and diagonals, ``gtx.second_order.hvp``, ...

A namespace, like ``optax.second_order``, with its names and signatures: the
loss is ``loss(params, inputs, targets) -> scalar`` and vectors are flat, of
the size of ``ravel_pytree(params)``. Flat vectors take the dtype that
``jax.flatten_util.ravel_pytree`` gives the parameters (the default float
dtype for params without leaves). optax 0.2.8 marks these deprecated (to be
removed in 0.2.9); gradtx keeps them, without the warning.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jax import flatten_util

from gradtx.core import check_callable, scalar_loss
from gradtx.errors import ArgumentTypeError, StructureError
from gradtx.numerics import abs_sq, as_dtype
from gradtx.tree import keystr

PyTree = Any

__all__ = ["LossFn", "fisher_diag", "hessian_diag", "hvp"]


class LossFn(Protocol):
  """A loss: ``loss(params, inputs, targets) -> scalar``."""

  def __call__(self, params: PyTree, inputs: jax.Array, targets: jax.Array) -> jax.Array: ...


def _ravel_pytree(tree: PyTree) -> tuple[jax.Array, Any]:
  """``jax.flatten_util.ravel_pytree(tree)``, but a tree without leaves gives an empty vector
  of the default float dtype (float64 under x64), where JAX's is float32 whatever the mode."""
  flat, unravel = flatten_util.ravel_pytree(tree)
  if not jax.tree.leaves(tree):
    flat = jnp.zeros(0)
  return flat, unravel


def _ravel(tree: PyTree) -> jax.Array:
  return _ravel_pytree(tree)[0]


_LOSS = "a function loss(params, inputs, targets) -> scalar"


def _scalar_loss(stage: str, name: str, loss: Any, params: PyTree, inputs: Any,
                 targets: Any) -> Any:
  """``params -> loss(params, inputs, targets)`` as a scalar (one of shape ``(1,)`` taken
  as one, :func:`gradtx.core.scalar_loss`), after checking that ``loss`` (the argument
  ``name``) is a function and that each leaf of ``params`` is floating point or complex.

  Checked in Python, once per trace: a loss that was not a function failed with "'int'
  object is not callable" or jax's "Expected a callable value", a loss of shape (2,) with
  "Gradient only defined for scalar-output functions", and an integer leaf with jax.jvp's
  "primal and tangent arguments to jax.jvp do not match" or jax.grad's "grad requires
  real- or complex-valued inputs", naming neither the function nor the leaf."""
  check_callable(stage, name, loss, _LOSS)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    try:
      dtype = jnp.result_type(leaf)
    except TypeError:  # not an array (a function left in a model)
      dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
      what = dtype.name if dtype is not None else f"a {type(leaf).__name__}"
      raise ArgumentTypeError(
          f"{stage}: the params at key path {keystr(path)} are {what}: the derivatives are "
          f"of floating-point params only; close over the others in {name}")
  return lambda p: scalar_loss(loss(p, inputs, targets), stage, f"{name}'s result")


def _hvp(stage: str, loss: LossFn, v: Any, params: PyTree, inputs: jax.Array,
         targets: jax.Array) -> PyTree:
  """:func:`hvp`, its errors naming ``stage``, which called it."""
  value = _scalar_loss(stage, "loss", loss, params, inputs, targets)
  flat, unravel = _ravel_pytree(params)
  try:
    array = jnp.asarray(v)
  except (TypeError, ValueError):  # jax's "Value 'ab' with dtype <U2 is not a valid JAX array type"
    array = None
  if array is None or not (jnp.issubdtype(array.dtype, jnp.number) or array.dtype == bool):
    raise ArgumentTypeError(f"{stage}: v must be a flat vector of numbers, got "
                            f"{type(v).__name__}: {v!r}")
  v = array
  if v.shape != flat.shape:  # else unravel fails with "Sum of sizes 4 must be equal to ..."
    raise StructureError(f"{stage}: v must be a flat vector of the size of "
                         f"ravel_pytree(params), shape {flat.shape}; got shape {v.shape}")
  if jnp.iscomplexobj(v) and not jnp.iscomplexobj(flat):  # the cast would drop Im v
    raise StructureError(f"{stage}: v is {v.dtype} and the params are real ({flat.dtype}); "
                         "pass the real and imaginary parts of v in two calls")
  # A probe drawn in another float dtype (a float64 numpy vector under x64 for float32
  # params) is the same direction: cast, where jax.jvp refused the mismatched tangent.
  v = as_dtype(v, flat.dtype)
  return jax.jvp(jax.grad(value), (params,), (unravel(v),))[1]


def hvp(loss: LossFn, v: jax.Array, params: PyTree, inputs: jax.Array,
        targets: jax.Array) -> PyTree:
  """The product of the Hessian of ``loss`` with a vector, by forward-over-reverse.

  .. math:: H v, \\qquad H = \\nabla^2_\\theta\\, \\ell(\\theta, x, y)

  One gradient's cost (twice), never forming :math:`H`.

  Args:
    loss: :math:`\\ell`, ``loss(params, inputs, targets) -> scalar``.
    v: a flat vector of the size of ``ravel_pytree(params)``, cast to its dtype
      (complex only for complex params).
    params: :math:`\\theta`, any pytree.
    inputs: :math:`x`.
    targets: :math:`y`.

  Returns:
    :math:`Hv` as a tree the structure of ``params`` (what optax returns,
    though its docstring says a flat array; ``ravel_pytree`` flattens it).

  References:
    Pearlmutter, *Fast exact multiplication by the Hessian*, Neural
    Computation 1994.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> loss = lambda w, x, y: jnp.sum((x @ w - y) ** 2)   # H = 2 x^T x
    >>> x, y = jnp.array([[1.0, 2.0], [0.0, 1.0]]), jnp.zeros(2)
    >>> gtx.second_order.hvp(loss, jnp.array([1.0, 0.0]), jnp.zeros(2), x, y)
    Array([2., 4.], dtype=float32)
  """
  return _hvp("hvp", loss, v, params, inputs, targets)


def hessian_diag(loss: LossFn, params: PyTree, inputs: jax.Array,
                 targets: jax.Array) -> jax.Array:
  """The diagonal of the Hessian of ``loss``, as a flat vector.

  .. math:: \\operatorname{diag}(H)_i = e_i^\\top H e_i

  Exact: one :func:`hvp` per parameter (batched with ``vmap``), so its cost
  grows with the square of the number of parameters. For small models.

  Args:
    loss: :math:`\\ell`, ``loss(params, inputs, targets) -> scalar``.
    params: :math:`\\theta`, any pytree.
    inputs: :math:`x`.
    targets: :math:`y`.

  Returns:
    A flat vector of the size of ``ravel_pytree(params)``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> loss = lambda w, x, y: jnp.sum((x @ w - y) ** 2)
    >>> x, y = jnp.array([[1.0, 2.0], [0.0, 1.0]]), jnp.zeros(2)
    >>> gtx.second_order.hessian_diag(loss, jnp.zeros(2), x, y)
    Array([ 2., 10.], dtype=float32)
  """
  _scalar_loss("hessian_diag", "loss", loss, params, inputs, targets)  # named here, not as hvp
  flat = _ravel(params)
  basis = jnp.eye(flat.size, dtype=flat.dtype)
  return jax.vmap(lambda e: jnp.vdot(
      e, _ravel(_hvp("hessian_diag", loss, e, params, inputs, targets))))(basis)


def fisher_diag(negative_log_likelihood: LossFn, params: PyTree, inputs: jax.Array,
                targets: jax.Array) -> jax.Array:
  """The diagonal of the observed (empirical) Fisher information, as a flat vector.

  .. math:: \\operatorname{diag}(F) = \\left|\\nabla_\\theta\\, \\ell(\\theta, x, y)\\right|^2

  with :math:`\\ell` the negative log-likelihood of the batch, squared
  entrywise: :math:`|g|^2`, real, for complex parameters (as
  :math:`\\mathbb{E}[g \\bar g]` is; optax's :math:`g^2` is complex there).
  (Squaring the gradient of the summed loss, as optax does; the per-example
  Fisher would square each example's gradient before summing.)

  Args:
    negative_log_likelihood: :math:`\\ell`, ``fn(params, inputs, targets) -> scalar``.
    params: :math:`\\theta`, any pytree.
    inputs: :math:`x`.
    targets: :math:`y`.

  Returns:
    A flat vector of the size of ``ravel_pytree(params)``.

  References:
    Martens, *New insights and perspectives on the natural gradient method*,
    JMLR 2020 (the empirical Fisher).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> nll = lambda w, x, y: jnp.sum((x @ w - y) ** 2) / 2
    >>> gtx.second_order.fisher_diag(nll, jnp.zeros(2), jnp.eye(2), jnp.array([1.0, -3.0]))
    Array([1., 9.], dtype=float32)
  """
  value = _scalar_loss("fisher_diag", "negative_log_likelihood", negative_log_likelihood, params,
                       inputs, targets)
  return abs_sq(_ravel(jax.grad(value)(params)))
