"""Whole-tree scalars that the optimizers which set their own step size share.

Sums and inner products over every leaf in one dtype, a ratio safe at 0/0, the
distance moved.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.numerics import as_dtype

__all__: list[str] = []


def _scalar_dtype(params: Any) -> jnp.dtype:
  """float64 if some parameter is float64, float32 otherwise: the dtype of the global scalars."""
  wide = any(jnp.asarray(x).dtype == jnp.float64
             for x in jax.tree.leaves(params, is_leaf=tree._is_masked) if not tree._is_masked(x))
  return jnp.dtype(jnp.float64 if wide else jnp.float32)


def _total(fn: Callable[..., jax.Array], dtype: Any, first: Any, *rest: Any) -> jax.Array:
  """:math:`\\sum_\\text{leaves} \\sum_i fn(x_i, \\dots)`, each leaf cast to ``dtype`` first.

  ``dtype`` is float32 or wider, so bfloat16 leaves do not lose the sum (as
  :func:`gradtx.tree.sum_squares`). A packed tree's buffers are its leaves.
  """
  leaves = jax.tree.leaves(first, is_leaf=tree._is_masked)
  others = [jax.tree.leaves(r, is_leaf=tree._is_masked) for r in rest]
  total = jnp.zeros((), dtype)
  for i, x in enumerate(leaves):
    if tree._is_masked(x):
      continue
    total = total + jnp.sum(fn(*(as_dtype(y, dtype) for y in [x] + [o[i] for o in others])))
  return total


def _inner(a: Any, b: Any, dtype: Any) -> jax.Array:
  """:math:`\\langle a, b \\rangle` over the whole tree (real leaves), in ``dtype``."""
  return _total(jnp.multiply, dtype, a, b)


def _betas(stage: str, betas: Any) -> tuple[Any, Any]:
  try:
    b1, b2 = betas
  except (TypeError, ValueError):
    raise ValueError(f"{stage}: betas must be a pair (b1, b2), got {betas!r}") from None
  return b1, b2


def _count_as(count: jax.Array, dtype: Any) -> jax.Array:
  return count.astype(dtype)
