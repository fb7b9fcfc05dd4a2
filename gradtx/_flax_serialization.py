"""flax.serialization for gradtx's own pytree nodes.

flax's ``serialization.to_bytes`` (how a flax ``TrainState`` is checkpointed
with msgpack) walks a tree through a registry keyed by exact type: dicts,
lists, tuples and NamedTuples are known to it, any other node class must be
registered, or it raises ``can not serialize 'ChainState' object``. optax's
states are NamedTuples and need nothing; gradtx's states also hold mappings
(:class:`~gradtx.ChainState`, :class:`~gradtx.HParams`, the monitor's
statistics, packed buffers), which :func:`serializable` marks.

gradtx does not import flax (it is optional, and slow to import). Instead,
:func:`register_with_flax` registers the marked classes with
``flax.serialization`` whichever is imported first: at once where flax is
(a class marked later is registered as it is marked), else as soon as
``flax.serialization`` is (an import hook, :class:`_AfterFlaxImport`), so a
state made before ``import flax`` saves and restores as one made after. (A
state made after it registered them at its ``init`` only: saving one made
before raised ``can not serialize 'ChainState' object``, and restoring into
it gave back the raw state dict.) The places that make states and packed
trees (a stage's ``HParamSpec.init``, ``Chain.init``, ``Layout.pack``) still
call it, one dictionary lookup, should another import hook load flax past
this one.

A node's state dict maps its children's key names (a stage name, a
hyperparameter name, ``count``, a dtype) to theirs, so a msgpack checkpoint
reads like the state.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any, Sequence, TypeVar, cast

import jax

_Node = TypeVar("_Node", bound=type)
_NODES: list[type] = []
_registered_with: Any = None  # the flax.serialization module the classes are registered with
_FLAX_SERIALIZATION = "flax.serialization"


def serializable(cls: _Node) -> _Node:
  """Marks a pytree node class for flax.serialization (see the module docstring), and
  pickles it at every protocol as its children and aux data (:func:`_unflatten`)."""
  # The nodes hold __slots__, which pickle's protocols 0 and 1 refused ("a class that
  # defines __slots__ without defining __getstate__ cannot be pickled"), where optax's
  # NamedTuple states pickle at all of them.
  cls.__reduce__ = _reduce_node  # type: ignore[assignment]
  _NODES.append(cls)
  if _registered_with is not None:  # flax was imported before this class was marked
    _register(_registered_with, cls)
  else:
    register_with_flax()
  return cls


def _reduce_node(node: Any) -> tuple[Any, ...]:
  children, aux = node.tree_flatten()
  return _unflatten, (type(node), aux, list(children))


def _unflatten(cls: Any, aux: Any, children: list[Any]) -> Any:
  """A pickled node, made again by its class's ``tree_unflatten``."""
  return cls.tree_unflatten(aux, children)


def _register(module: Any, cls: type) -> None:
  module.register_serialization_state(cls, _to_state_dict, _from_state_dict, override=True)


def register_with_flax() -> None:
  """Registers the marked classes with flax.serialization, if flax is imported."""
  global _registered_with  # pylint: disable=global-statement
  module = sys.modules.get(_FLAX_SERIALIZATION)
  # Registered once its module has run: an import hook's loader calls this after it.
  if module is None or module is _registered_with or not hasattr(
      module, "register_serialization_state"):
    return
  for cls in _NODES:
    _register(module, cls)
  _registered_with = module


class _RegisteringLoader(importlib.abc.Loader):
  """flax.serialization's own loader, which registers gradtx's classes once it has run."""

  def __init__(self, loader: Any):
    self._loader = loader

  def create_module(self, spec: Any) -> Any:
    return self._loader.create_module(spec)

  def exec_module(self, module: Any) -> None:
    self._loader.exec_module(module)
    register_with_flax()

  def __getattr__(self, name: str) -> Any:  # get_code, get_resource_reader, ...: the loader's
    return getattr(self._loader, name)


class _AfterFlaxImport(importlib.abc.MetaPathFinder):
  """An import hook: where ``flax.serialization`` is imported, its module is loaded by
  the finder that would load it, and gradtx's classes are registered once it has run.
  Every other import is one string comparison here."""

  def find_spec(self, fullname: str, path: Sequence[str] | None,
                target: Any = None) -> Any:
    if fullname != _FLAX_SERIALIZATION:
      return None
    for finder in sys.meta_path:
      find = getattr(finder, "find_spec", None)
      if finder is self or find is None:
        continue
      spec = find(fullname, path, target)
      if spec is not None:
        if hasattr(spec.loader, "exec_module"):
          spec.loader = _RegisteringLoader(spec.loader)
        return spec
    return None


if _FLAX_SERIALIZATION not in sys.modules and not any(
    isinstance(finder, _AfterFlaxImport) for finder in sys.meta_path):
  sys.meta_path.insert(0, _AfterFlaxImport())


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
