"""flax.serialization for gradtx's own pytree nodes.

flax's ``serialization.to_bytes`` (how a flax ``TrainState`` is checkpointed
with msgpack) walks a tree through a registry keyed by exact type: dicts,
lists, tuples and NamedTuples are known to it, any other node class must be
registered, or it raises ``can not serialize 'ChainState' object``. optax's
states are NamedTuples and need nothing; gradtx's states also hold mappings
(:class:`~gradtx.ChainState`, :class:`~gradtx.HParams`, the monitor's
statistics, packed buffers), which :func:`serializable` marks.

gradtx does not import flax (it is optional, and slow to import). Instead,
:func:`register_with_flax` registers the marked classes once flax is imported:
it is called where states and packed trees are made (a stage's
``HParamSpec.init``, ``Chain.init``, ``Layout.pack``), which in a flax program
is after ``import flax`` (``TrainState.create`` and ``nnx.Optimizer`` call
``init`` themselves). The check is one dictionary lookup.

A node's state dict maps its children's key names (a stage name, a
hyperparameter name, ``count``, a dtype) to theirs, so a msgpack checkpoint
reads like the state.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar, cast

import jax

_Node = TypeVar("_Node", bound=type)
_NODES: list[type] = []
_registered_with: Any = None  # the flax.serialization module the classes are registered with


def serializable(cls: _Node) -> _Node:
  """Marks a pytree node class for flax.serialization (see the module docstring)."""
  _NODES.append(cls)
  return cls


def register_with_flax() -> None:
  """Registers the marked classes with flax.serialization, if flax is imported."""
  global _registered_with  # pylint: disable=global-statement
  module = sys.modules.get("flax.serialization")
  if module is None or module is _registered_with:
    return
  for cls in _NODES:
    module.register_serialization_state(cls, _to_state_dict, _from_state_dict, override=True)
  _registered_with = module


def _children(node: Any) -> tuple[list[tuple[str, Any]], Any]:
  """``node``'s children one level down, by key name, and its one-level treedef."""
  # tree_utils' walk, which tree_get and tree_set use too; imported here, when a state is
  # saved, because gradtx.core imports this module before tree_utils can load.
  from gradtx.tree_utils._state import _children as one_level  # pylint: disable=C0415
  # Not None, which one_level returns for a leaf: node is a registered class's instance.
  entries, treedef = cast("tuple[list[Any], Any]", one_level(node))
  children = [(str(key), child) for _, key, child in entries]
  names = [name for name, _ in children]
  if len(set(names)) != len(names):
    raise ValueError(f"gradtx: {type(node).__name__} has two children named alike: {names}")
  return children, treedef


def _to_state_dict(node: Any) -> dict[str, Any]:
  from flax import serialization  # pylint: disable=import-outside-toplevel
  children, _ = _children(node)
  return {name: serialization.to_state_dict(child) for name, child in children}


def _from_state_dict(target: Any, state: dict[str, Any]) -> Any:
  from flax import serialization  # pylint: disable=import-outside-toplevel
  children, treedef = _children(target)
  names = [name for name, _ in children]
  if set(names) != set(state):
    missing = sorted(set(names) - set(state))
    extra = sorted(set(state) - set(names))
    raise ValueError(
        f"gradtx: the state dict at '{serialization.current_path()}' does not match the "
        f"target {type(target).__name__}: missing {missing}, unexpected {extra}")
  restored = [serialization.from_state_dict(child, state[name], name=name)
              for name, child in children]
  return jax.tree_util.tree_unflatten(treedef, restored)
