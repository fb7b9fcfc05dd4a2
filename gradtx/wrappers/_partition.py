"""A different transformation per labelled group of parameters: :func:`partition`."""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import jax

from gradtx import tree
from gradtx.chain import ChainState, in_stage
from gradtx.core import (GradientTransformation, as_transformation, check_state, checks_flags,
                         format_value)
from gradtx.errors import StructureError
from gradtx.packed import Packed, masked_init, masked_update
from gradtx.wrappers._common import Mask, PyTree
from gradtx.wrappers._masking import (_hide, _hide_extra, _mask_per_leaf, _packed_view, _per_leaf,
                                      _unhide, unmasked_view, set_to_zero)


# ----------------------------------------------------------------------------
# Different transformations for labelled groups of parameters.


class PartitionState(NamedTuple):
  """State of :func:`partition`: each group's state, by label."""
  inner_states: ChainState


@checks_flags
def partition(transforms: Mapping[str, GradientTransformation],
              param_labels: PyTree | Callable[[PyTree], PyTree], *,
              mask_compatible_extra_args: bool = False) -> GradientTransformation:
  """Applies a different transformation to each labelled group of parameters.

  .. math:: u_i = \\text{transforms}[\\ell_i](g_{\\{j : \\ell_j = \\ell_i\\}})_i

  Each transformation sees only its group's leaves (the others are
  :class:`~gradtx.tree.MaskedNode`) and keeps state only for them. The state
  keeps each group's state under its label, so hyperparameters read as
  ``"<stage>.<label>.<name>"``. Same arguments and semantics as
  ``optax.partition`` (also named ``multi_transform``).

  Args:
    transforms: label -> transformation. Labels are strings that are Python
      identifiers (they become part of dotted names).
    param_labels: a tree of labels with the params' structure (or a prefix of
      it), or a callable of the params returning one. Every label must be a
      key of ``transforms``.
    mask_compatible_extra_args: as in :func:`masked`.

  Example: no weight decay for biases and norm scales.

    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> params = {"dense": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "norm": jnp.ones(2)}
    >>> labels = lambda p: jax.tree.map(lambda x: "decay" if x.ndim > 1 else "no_decay", p)
    >>> tx = gtx.partition({"decay": gtx.adamw(1e-3, weight_decay=0.1),
    ...                     "no_decay": gtx.adam(1e-3)}, labels)
    >>> state = tx.init(params)
    >>> sorted(k for k in gtx.hparams(state) if k.endswith("learning_rate"))
    ['decay.lr.learning_rate', 'no_decay.lr.learning_rate']
  """
  return _partition(transforms, param_labels, mask_compatible_extra_args,
                    "partition", "param_labels")


def _partition(transforms: Mapping[str, GradientTransformation],
               param_labels: PyTree | Callable[[PyTree], PyTree],
               mask_compatible_extra_args: bool, where: str, what: str) -> GradientTransformation:
  """:func:`partition`, its errors naming ``where`` and its labels ``what``: the function
  the user called and its argument (``"selective_transform"``, ``"freeze_mask"``)."""
  if not isinstance(transforms, Mapping) or not transforms:
    raise TypeError(f"{where}: transforms must be a non-empty mapping label -> "
                    f"transformation, got {transforms!r}")
  for label in transforms:
    if not isinstance(label, str) or not label.isidentifier():
      raise ValueError(f"{where}: label {label!r} must be a string that is a Python "
                       "identifier: labels are part of hyperparameter names "
                       "('<stage>.<label>.<name>')")
  groups = {label: as_transformation(tx, where=f"{where} group {label!r}")
            for label, tx in transforms.items()}

  def labels_per_leaf(real):
    labels = (param_labels(real) if tree.is_function_of_params(param_labels)
              else param_labels)
    per_leaf = _per_leaf(labels, real, where, what)
    for path, label in jax.tree_util.tree_flatten_with_path(per_leaf, is_leaf=tree.is_masked)[0]:
      if not tree.is_masked(label) and label not in groups:
        raise StructureError(
            f"{where}: the parameter at key path {tree.keystr(path)} has label "
            f"{label!r}, which has no transformation; the labels of transforms are "
            f"{list(groups)}")
    return per_leaf

  def in_group(labels, label):
    return jax.tree.map(lambda leaf_label: leaf_label == label, labels, is_leaf=tree.is_masked)

  def init(params):
    # Packed, every group's state spans the buffers: groups are masks of elements.
    # tree_map_params's placeholder has no leaves to label.
    placeholder = tree.is_params_placeholder(params)
    states = {}
    if isinstance(params, Packed):
      labels = labels_per_leaf(_packed_view(param_labels, params, None))
      for label, tx in groups.items():
        with in_stage(label):
          states[label] = masked_init(tx, in_group(labels, label), params)
      return PartitionState(ChainState(states))
    with unmasked_view(params) as real:
      labels = None if placeholder else labels_per_leaf(real)
      for label, tx in groups.items():
        with in_stage(label):
          states[label] = tx.init(params if placeholder else
                                  _hide(in_group(labels, label), params))
    return PartitionState(ChainState(states))

  def update(updates, state, params=None, **extra):
    check_state(where, state, PartitionState)
    if params is not None:
      tree.check_structure(params, updates, "params", "updates", stage=where)
    inner_states = state.inner_states
    if not isinstance(inner_states, ChainState) or list(inner_states) != list(groups):
      got = list(inner_states) if isinstance(inner_states, ChainState) else inner_states
      raise StructureError(f"{where}: the state has groups {got}, this partition has "
                           f"{list(groups)}")
    new_states = {}
    if isinstance(updates, Packed):
      # Packed mode: each group is a mask of elements (see gradtx.packed.masked_update).
      labels = labels_per_leaf(_packed_view(param_labels, updates, params))
      for label, tx in groups.items():
        with in_stage(label):
          updates, new_states[label] = masked_update(
              tx, in_group(labels, label), updates, inner_states[label], params,
              mask_extra=mask_compatible_extra_args, **extra)
      return updates, PartitionState(ChainState(new_states))
    with unmasked_view(updates if params is None else params) as real:
      labels = labels_per_leaf(real)
      for label, tx in groups.items():
        keep = in_group(labels, label)
        group_extra = _hide_extra(keep, extra, updates) if mask_compatible_extra_args else extra
        with in_stage(label):
          new_updates, new_states[label] = tx.update(
              _hide(keep, updates), inner_states[label],
              None if params is None else _hide(keep, params), **group_extra)
        updates = _unhide(new_updates, updates)
    return updates, PartitionState(ChainState(new_states))

  return GradientTransformation(init, update, name="partition",
                                options={**groups, "param_labels": param_labels})


#: optax's older name for :func:`partition`.
multi_transform = partition


def _freeze_label(frozen: bool) -> str:
  return "freeze" if frozen else "train"


def selective_transform(optimizer: GradientTransformation, *,
                        freeze_mask: Mask) -> GradientTransformation:
  """Runs ``optimizer`` on the leaves where ``freeze_mask`` is False; zeroes the rest.

  .. math::
    u_i = \\begin{cases} 0 & m_i \\\\ \\text{optimizer}(g_{\\{j : \\neg m_j\\}})_i
      & \\text{otherwise} \\end{cases}

  Unlike :func:`freeze` after an optimizer, the optimizer keeps no state for
  frozen leaves. Same as ``optax.selective_transform``; the groups are
  labelled ``"train"`` and ``"freeze"``. Unlike optax it also takes a
  callable of the params, as :func:`freeze` does (optax, given one, takes the
  function itself as a single ``True`` and freezes everything).

  Args:
    optimizer: the transformation for the trained leaves.
    freeze_mask: ``True`` marks frozen leaves: a bool or a tree of bools
      with the params' structure (or a prefix of it), or a callable of the
      params returning one.

  Raises:
    StructureError: the mask holds something other than bools (the message
      names the key path); a callable's result is checked when the step is
      traced.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> params = {"encoder": jnp.ones(2), "head": jnp.ones(2)}
    >>> tx = gtx.selective_transform(gtx.adam(0.1), freeze_mask={"encoder": True, "head": False})
    >>> state = tx.init(params)
    >>> state.inner_states["train"]["adam"].mu
    {'encoder': MaskedNode(), 'head': Array([0., 0.], dtype=float32)}
  """
  optimizer = as_transformation(optimizer, "selective_transform", "optimizer")
  if tree.is_function_of_params(freeze_mask):
    def freeze_labels(params):
      return jax.tree.map(_freeze_label, _mask_per_leaf(freeze_mask, params,
                                                        "selective_transform"))
    # repr shows the user's callable: param_labels=freeze_labels(<its name>).
    freeze_labels.__qualname__ = f"freeze_labels({format_value(freeze_mask)})"
    labels = freeze_labels
  else:
    # Checked now as masked checks a mask (the mask is its own structure): a leaf that is
    # not a bool would otherwise be taken by its truthiness.
    labels = jax.tree.map(_freeze_label, _mask_per_leaf(freeze_mask, freeze_mask,
                                                        "selective_transform"))
  return _partition({"train": optimizer, "freeze": set_to_zero()}, labels, False,
                    "selective_transform", "freeze_mask")
