"""Whole-tree scalars that the optimizers which set their own step size share.

The dtype of those scalars, and the l1 norm over every leaf in it (the inner
product is :func:`gradtx.tree.inner`, squared norms
:func:`gradtx.tree.sum_squares`, both taking that dtype). Complex leaves
count as the real vectors of their (real, imaginary) parts:
:math:`\\langle a, b \\rangle = \\operatorname{Re} \\sum \\bar a_i b_i`,
:math:`\\|x\\|^2 = \\sum |x_i|^2`, and the l1 norm is :math:`\\sum |x_i|`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import Range
from gradtx.numerics import as_dtype, compute_dtype, real_dtype, safe_sqrt, state_dtype, widened
from gradtx.tree_utils import tree_norm

__all__: list[str] = []

_WIDE = (jnp.dtype(jnp.float64), jnp.dtype(jnp.complex128))


def _scalar_dtype(params: Any) -> jnp.dtype:
  """The dtype of the global scalars: float64 if some parameter is float64 or complex128,
  float32 otherwise."""
  wide = any(jnp.asarray(x).dtype in _WIDE
             for x in jax.tree.leaves(params, is_leaf=tree.is_masked) if not tree.is_masked(x))
  return jnp.dtype(jnp.float64 if wide else jnp.float32)


def _real_zeros_like(params: Any, dtype: Any = None) -> Any:
  """Zeros shaped like each leaf in its real dtype: the state of a statistic of :math:`|g|`.

  In the real ``dtype`` if given (a ``nu_dtype``; its precision for a complex leaf,
  see :func:`gradtx.numerics.state_dtype`), else the leaf's own real dtype.
  """
  return tree.tree_map(lambda x: jnp.zeros_like(x, real_dtype(state_dtype(x, dtype))), params)


def _over_root(x: jax.Array, v: jax.Array, eps: jax.Array) -> jax.Array:
  """:math:`x / (\\sqrt{v} + \\epsilon)` with the root taken in ``v``'s real dtype (``v`` holds
  :math:`|g|^2`), ``x`` complex or real."""
  c = compute_dtype(x, v)
  real = real_dtype(c)
  # safe_sqrt: a leaf whose gradients are all 0 has v = 0 (NaN gradients through jnp.sqrt).
  return as_dtype(x, c) / as_dtype(safe_sqrt(as_dtype(v, real)) + as_dtype(eps, real), c)


def _l1(x: Any, dtype: Any) -> jax.Array:
  """:math:`\\|x\\|_1 = \\sum |x_i|` over the whole tree, in ``dtype`` (leaves widened first)."""
  wide = tree.tree_map(lambda leaf: widened(leaf, dtype), x)
  return as_dtype(jnp.asarray(tree_norm(wide, ord=1)), dtype)


def _betas(stage: str, betas: Any) -> tuple[tuple[Any, Any], Range]:
  """``betas``' entry of a :class:`HParamSpec`: the pair (b1, b2), each in [0, 1)."""
  try:
    b1, b2 = betas
  except (TypeError, ValueError):
    raise ValueError(f"{stage}: betas must be a pair (b1, b2), got {betas!r}") from None
  # A tuple as given, not rebuilt: a ready optimizer that passed it on names its own
  # argument in a refusal by finding this very object (core.names_its_arguments).
  pair = betas if isinstance(betas, tuple) else (b1, b2)
  return pair, Range(0.0, 1.0, high_open=True, vector=True)


def _count_as(count: jax.Array, dtype: Any) -> jax.Array:
  return count.astype(dtype)


def _adam_step_size(d: jax.Array, learning_rate: Any, b1: Any, b2: Any,
                    count: jax.Array) -> jax.Array:
  """:math:`\\eta_t = \\gamma_t d_t \\sqrt{1 - \\beta_2^t} / (1 - \\beta_1^t)` in ``d``'s dtype,
  :math:`t` = ``count``: the step size of Prodigy and D-Adaptation, Adam's bias corrections
  folded in."""
  dtype = d.dtype
  t = _count_as(count, dtype)
  return (d * as_dtype(learning_rate, dtype) * jnp.sqrt(1 - as_dtype(b2, dtype)**t)
          / (1 - as_dtype(b1, dtype)**t))


def _current_estimate(estim_lr: jax.Array, estim_lr0: Any, count: jax.Array) -> jax.Array:
  """:math:`d_t`: the state's estimate, or the hyperparameter :math:`d_0` before the first step,
  so that an ``estim_lr0`` set after init (``set_hparams``) is the one the run starts from."""
  return jnp.where(count == 0, as_dtype(estim_lr0, estim_lr.dtype), estim_lr)
