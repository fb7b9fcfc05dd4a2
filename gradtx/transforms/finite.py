"""Non-finite numbers: what a NaN or Inf in the gradients does is the user's choice.

A ready optimizer never pays for a finiteness check nobody asked for. To
decide what a NaN or Inf does, add a stage:

* :func:`zero_nans` replaces NaN entries by zero and records, per leaf, that it
  did (Inf entries pass through);
* :func:`gradtx.apply_if_finite` skips the whole step (params and inner state
  unchanged) and counts the skipped steps;
* :func:`skip_not_finite` and :func:`skip_large_updates` are predicates for
  :func:`gradtx.multi_steps`'s ``should_skip_update_fn``: a rejected
  mini-batch is as if it never happened.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import GradientTransformation, HParams, HParamSpec, check_state

__all__ = ["ZeroNansState", "skip_large_updates", "skip_not_finite", "zero_nans"]


class ZeroNansState(NamedTuple):
  """State of :func:`zero_nans`: per leaf, ``found_nan`` at the last step (a bool)."""
  found_nan: Any
  hparams: HParams


def zero_nans() -> GradientTransformation:
  """Replaces NaN entries of the updates by zero.

  .. math::
    u_i \\leftarrow \\begin{cases} 0 & g_i \\text{ is NaN} \\\\ g_i & \\text{otherwise}\\end{cases}

  The state holds, for each leaf, whether it had a NaN at the last step; the
  rule itself does not read it. Inf entries are kept (clip them, or skip the
  step with :func:`gradtx.apply_if_finite`). Same as ``optax.zero_nans``,
  except that a ``None`` gradient of a leaf given to ``init`` raises a
  :class:`~gradtx.StructureError` naming its key path, as for any stage with
  per-leaf state (optax's flag there became ``None``: the state changed
  structure, and a jitted step retraced).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.zero_nans()
    >>> grads = {"a": jnp.array([1.0, jnp.nan]), "b": jnp.array([2.0])}
    >>> updates, state = tx.update(grads, tx.init(grads))
    >>> updates["a"], bool(state.found_nan["a"]), bool(state.found_nan["b"])
    (Array([1., 0.], dtype=float32), True, False)
  """
  spec = HParamSpec("zero_nans")

  def init(params):
    found_nan, = tree.map_leaves(lambda p: (jnp.zeros([], jnp.bool_),), (False,), params)
    return ZeroNansState(found_nan, spec.init())

  def update(updates, state, params=None, **extra):
    check_state("zero_nans", state, ZeroNansState)
    del params, extra
    tree.check_structure(state.found_nan, updates, "state.found_nan", "updates",
                         check_shapes=False, stage="zero_nans")

    # The flags are per leaf (per segment of a packed buffer); the zeroing is elementwise.
    found_nan, = tree.map_leaves(lambda g: (jnp.any(jnp.isnan(g)),), (False,), updates)
    updates = tree.tree_map(lambda g: jnp.where(jnp.isnan(g), jnp.zeros_like(g), g), updates)
    return updates, ZeroNansState(found_nan, state.hparams)

  return GradientTransformation(init, update, name="zero_nans", spec=spec)


def skip_not_finite(updates: Any, gradient_step: jax.Array,
                    params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Skips a mini-batch whose updates hold a NaN or an Inf.

  A ``should_skip_update_fn`` for :func:`gradtx.multi_steps`, as
  ``optax.skip_not_finite``.

  Returns:
    ``(should_skip, info)``: a scalar bool, and ``{"should_skip": ...,
    "num_not_finite": ...}`` (kept in the state's ``skip_state``).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> skip, info = gtx.skip_not_finite({"w": jnp.array([1.0, jnp.inf])}, 0, None)
    >>> bool(skip), int(info["num_not_finite"])
    (True, 1)
  """
  del gradient_step, params
  num_not_finite = tree.count_nonfinite(updates)
  should_skip = num_not_finite > 0
  return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(updates: Any, gradient_step: jax.Array, params: Any,
                       max_squared_norm: float | jax.Array,
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Skips a mini-batch whose updates have :math:`\\|g\\|_2^2 \\ge` ``max_squared_norm``.

  A ``should_skip_update_fn`` for :func:`gradtx.multi_steps`, as
  ``optax.skip_large_updates``: bind the threshold with
  ``functools.partial(skip_large_updates, max_squared_norm=...)``. A NaN norm
  is skipped too. It reads only the updates; it needs no loss.

  Returns:
    ``(should_skip, info)``: a scalar bool, and ``{"should_skip": ...,
    "norm_squared": ...}`` (kept in the state's ``skip_state``).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> skip, info = gtx.skip_large_updates({"w": jnp.array([3.0, 4.0])}, 0, None, 20.0)
    >>> bool(skip), float(info["norm_squared"])
    (True, 25.0)
  """
  del gradient_step, params
  norm_squared = tree.sum_squares(updates)
  should_skip = jnp.logical_not(norm_squared < jnp.asarray(max_squared_norm, norm_squared.dtype))
  return should_skip, {"should_skip": should_skip, "norm_squared": norm_squared}
