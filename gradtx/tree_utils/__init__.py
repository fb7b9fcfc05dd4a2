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

# One private module per role; this namespace re-exports their public names. The
# imports follow the roles' order, which is the order of the namespace page in the docs.
from gradtx.tree_utils._math import (
    tree_add, tree_sub, tree_mul, tree_div, tree_scale, tree_add_scale, tree_vdot, tree_sum,
    tree_max, tree_min, tree_size, tree_norm, tree_where, tree_clip, tree_allclose,
    tree_update_moment, tree_update_infinity_moment, tree_update_moment_per_elem_norm,
    tree_bias_correction)
from gradtx.tree_utils._casting import (
    tree_conj, tree_real, tree_zeros_like, tree_ones_like, tree_full_like, tree_batch_shape,
    tree_cast, tree_cast_like, tree_dtype)
from gradtx.tree_utils._random import (
    tree_split_key_like, tree_random_like, tree_unwrap_random_key_data)
from gradtx.tree_utils._state import (
    NamedTupleKey, tree_get_all_with_path, tree_get, tree_set, tree_map_params)

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
