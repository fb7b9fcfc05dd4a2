"""What the wrappers share: type names, a step that may not run, and a reset that keeps the
hyperparameters."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import GradientTransformation, HParams, branch

PyTree = Any
Mask = PyTree | Callable[[PyTree], PyTree]


def _run_if(run: jax.Array, inner: GradientTransformation, updates: PyTree, state: PyTree,
            params: PyTree, extra: dict[str, Any], *,
            pass_through: bool = False) -> tuple[PyTree, PyTree]:
  """``inner.update(...)`` where ``run``; else zero updates (the updates unchanged, with
  ``pass_through``) and ``state`` unchanged.

  A ``lax.cond``, so a skipped step costs no inner work and leaves the inner
  state bitwise as it was.
  """

  def step(operands):
    u, s, p = operands
    return inner.update(u, s, p, **extra)

  def skip(operands):
    out_updates = jax.eval_shape(step, operands)[0]
    if pass_through:  # in the dtypes inner would return, as lax.cond needs
      return tree.cast_like(operands[0], out_updates), operands[1]
    # zeros_like of the abstract value keeps its sharding, as lax.cond needs of both branches.
    return tree.tree_map(jnp.zeros_like, out_updates), operands[1]

  return branch(run, step, skip, (updates, state, params))


def reset_keeping_hparams(reset: jax.Array, current: PyTree, fresh: PyTree) -> PyTree:
  """``fresh`` where ``reset``, else ``current``; hyperparameters always stay ``current``'s
  (so values set by name survive a reset)."""
  is_hparams = lambda x: isinstance(x, HParams)  # noqa: E731
  return jax.tree.map(
      lambda c, f: c if is_hparams(c) else tree.tree_map(lambda a, b: jnp.where(reset, b, a), c, f),
      current, fresh, is_leaf=is_hparams)
