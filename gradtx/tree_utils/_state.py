"""Finding, setting and mapping over values in a state by key: ``tree_get``, ``tree_set``, ..."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree as _tree
from gradtx.chain import ChainState, set_hparams
from gradtx.core import HParams, check_callable, check_value, held_like
from gradtx.errors import HyperparameterError, StructureError, did_you_mean

PyTree = Any


# ----------------------------------------------------------------------------
# Finding and setting values by key.


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
  """A key path entry for a field of a NamedTuple, naming the tuple's class.

  :func:`tree_get_all_with_path` reports a NamedTuple's field as this instead
  of :class:`jax.tree_util.GetAttrKey`, so a ``filtering`` function can tell
  ``ScaleByAdamState.count`` from another state's ``count``.

  Attributes:
    tuple_name: the NamedTuple's class name (``"ScaleByAdamState"``).
    name: the field (``"count"``).
  """

  tuple_name: str
  name: str

  def __str__(self) -> str:
    return f"{self.tuple_name}.{self.name}"


KeyPath = tuple[Any, ...]


def _is_named_tuple(x: Any) -> bool:
  return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _entry_name(entry: Any) -> Any:
  for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def _children(node: Any) -> tuple[list[tuple[Any, Any, Any]], Any] | None:
  """``([(path entry, key, child), ...], treedef)`` one level down; ``None`` for a leaf.

  Every pytree node is descended into (lists, dataclasses, a framework's
  train state); keys are matched only in mappings (dicts, chain states,
  :class:`~gradtx.HParams`) and NamedTuples, as optax does.
  """
  if node is None:
    return None
  pairs, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
  if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # type: ignore[attr-defined]  # jax's PyTreeDef is untyped
    return None  # an array or another leaf
  named = _is_named_tuple(node)
  out = []
  for path, child in pairs:
    (entry,) = path
    key = _entry_name(entry)
    if named:
      entry = NamedTupleKey(type(node).__name__, node._fields[key] if isinstance(key, int)
                            else key)
      key = entry.name
    out.append((entry, key, child))
  return out, treedef


def _keys_match(node: Any) -> bool:
  return _is_named_tuple(node) or isinstance(node, Mapping)


def _keys_name_values(node: Any, field: Any) -> bool:
  """Whether the keys one level inside ``node``'s child ``field`` are matched.

  Not inside a field that a state class lists in its ``KEYS_NOT_NAMES``: a
  monitor's measure states (:class:`~gradtx.transforms.monitoring.MeasuresState`)
  are keyed by the measure's name, which names its measurement, as in optax,
  whose measure states are a tuple; matched there too, ``tree_get(state,
  "clipped_ema")`` found two values and raised.
  """
  return not (_is_named_tuple(node) and field in getattr(type(node), "KEYS_NOT_NAMES", ()))


def _same_key(a: Any, b: Any) -> bool:
  try:
    return bool(a == b)
  except Exception:  # an unhashable or array-valued key compares to nothing
    return False


def _find(node: Any, key: Any, path: KeyPath, out: list[tuple[KeyPath, Any]],
          keys_named: bool = True) -> None:
  if _is_named_tuple(node) and _same_key(type(node).__name__, key):
    out.append((path, node))
  found = _children(node)
  if found is None:
    return
  matchable = keys_named and _keys_match(node)
  for entry, name, child in found[0]:
    child_path = (*path, entry)
    if matchable and _same_key(name, key):
      out.append((child_path, child))
    _find(child, key, child_path, out, _keys_name_values(node, name))


def _all_keys(node: Any, state: set[str], plain: set[str], keys_named: bool = True) -> None:
  """Every key :func:`_find` can match in ``node`` (what a missing key's error lists):
  into ``state`` the names a state gives (NamedTuple classes and fields, stage and
  hyperparameter names), into ``plain`` the keys of other mappings (the params' names)."""
  if _is_named_tuple(node):
    state.add(type(node).__name__)
  found = _children(node)
  if found is None:
    return
  into = state if _is_named_tuple(node) or isinstance(node, (ChainState, HParams)) else plain
  for _, name, child in found[0]:
    if keys_named and _keys_match(node):
      into.add(str(name))
    _all_keys(child, state, plain, _keys_name_values(node, name))


# How many keys a missing key's error lists: a model's thousands of parameter names would
# bury the state's own; the did-you-mean hint searches them all.
_KEYS_SHOWN = 40


_FILTERING = "None or a function filtering(path, value) -> bool"


def _check_filtering(where: str, filtering: Any) -> None:
  """Raises a ``TypeError`` naming ``where`` unless ``filtering`` is None or a function: a
  number there (``tree_set(state, 3, count=1)``) failed with Python's "'int' object is not
  callable", naming neither the function nor the argument."""
  if filtering is not None:
    check_callable(where, "filtering", filtering, _FILTERING)


def tree_get_all_with_path(
    tree: PyTree, key: Any,
    filtering: Callable[[KeyPath, Any], bool] | None = None) -> list[tuple[KeyPath, Any]]:
  """Every value in ``tree`` under ``key``, with its key path, in pytree order.

  ``key`` matches a key of a mapping (a dict, a stage name in a
  :class:`~gradtx.ChainState`, a hyperparameter in an
  :class:`~gradtx.HParams`), a field of a NamedTuple (a stage state's
  ``count``, ``mu``), or a NamedTuple's class name (the whole stage state).
  A NamedTuple's field shows in the path as a :class:`NamedTupleKey`.

  Args:
    tree: the tree to search (a gradtx or optax state, or any pytree).
    key: the key, field or class name.
    filtering: ``filtering(path, value) -> bool`` keeps only the matches it
      accepts. Default ``None``: keep all.

  Returns:
    A list of ``(path, value)``; ``jax.tree_util.keystr(path)`` reads a path.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> state = gtx.adamw(learning_rate=1e-3, weight_decay=0.25).init(jnp.zeros(2))
    >>> for path, value in gtx.tree_utils.tree_get_all_with_path(state, "weight_decay"):
    ...   print(jax.tree_util.keystr(path), value)
    ['decay']EmptyState.hparams['weight_decay'] 0.25
  """
  _check_filtering("tree_get_all_with_path", filtering)
  return _found(tree, key, filtering)


def _found(tree: PyTree, key: Any,
           filtering: Callable[[KeyPath, Any], bool] | None) -> list[tuple[KeyPath, Any]]:
  """:func:`tree_get_all_with_path`, its arguments checked by the caller."""
  out: list[tuple[KeyPath, Any]] = []
  _find(tree, key, (), out)
  if filtering is not None:
    out = [(path, value) for path, value in out if filtering(path, value)]
  return out


def tree_get(tree: PyTree, key: Any, default: Any | None = None,
             filtering: Callable[[KeyPath, Any], bool] | None = None) -> Any:
  """The one value in ``tree`` under ``key`` (as :func:`tree_get_all_with_path` finds it).

  Args:
    tree: the tree to search.
    key: the key, field or class name.
    default: returned when nothing matches. Default ``None``.
    filtering: ``filtering(path, value) -> bool`` keeps only the matches it
      accepts. Default ``None``: keep all.

  Raises:
    KeyError: more than one value matches; the message lists their key paths.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> state = gtx.adam(learning_rate=1e-3).init(jnp.zeros(2))
    >>> gtx.tree_utils.tree_get(state, "learning_rate")
    Array(0.001, dtype=float32)
    >>> gtx.tree_utils.tree_get(state, "ScaleByAdamState").count
    Array(0, dtype=int32)
  """
  _check_filtering("tree_get", filtering)
  found = _found(tree, key, filtering)
  if len(found) > 1:
    paths = [jax.tree_util.keystr(p) for p, _ in found]
    raise KeyError(f"tree_get: found {len(found)} values for {key!r}, at {paths}; pass a "
                   "filtering function to choose one")
  return found[0][1] if found else default


def _as_like(old: Any, value: Any, where: str) -> Any:
  """``value`` in the dtype and shape of the array ``old`` it replaces; other values as given."""
  if not isinstance(old, (jax.Array, np.ndarray, np.generic)):
    return value
  if isinstance(value, (str, bytes)) or _tree.kind(value) in _tree.NOT_NUMBER_KINDS:
    raise ValueError(f"tree_set: {where} holds {old.dtype} values; got {value!r}, which is "
                     "not a number")  # it went in as given, and a jitted step failed on it
  if not isinstance(value, (jax.Array, np.ndarray, np.generic, int, float, complex, bool)):
    return value  # a subtree or another object: the caller's choice
  new = jnp.asarray(value)
  if (jnp.issubdtype(old.dtype, jnp.integer) and not jnp.issubdtype(new.dtype, jnp.integer)
      and not isinstance(new, jax.core.Tracer) and not np.all(np.asarray(new) % 1 == 0)):
    raise ValueError(f"tree_set: {where} holds {old.dtype} values; got {value!r}, "
                     "which is not a whole number")
  try:
    return held_like(new, old)
  except ValueError as error:
    raise StructureError(f"tree_set: {where} {error}") from None


def _replace(node: Any, path: KeyPath, stage: tuple[str, ...], values: dict[str, Any],
             filtering: Callable[[KeyPath, Any], bool] | None, keys_named: bool = True) -> Any:
  accepts = lambda p, v: filtering is None or filtering(p, v)  # noqa: E731
  if (_is_named_tuple(node) and type(node).__name__ in values and accepts(path, node)):
    return values[type(node).__name__]
  found = _children(node)
  if found is None:
    return node
  entries, treedef = found
  matchable = keys_named and _keys_match(node)
  hparams_set: dict[str, Any] = {}
  children = []
  for entry, name, child in entries:
    child_path = (*path, entry)
    hit = matchable and isinstance(name, (str, int)) and name in values and accepts(
        child_path, child)
    if not hit:
      inner = (*stage, name) if isinstance(node, ChainState) else stage
      children.append(_replace(child, child_path, inner, values, filtering,
                               _keys_name_values(node, name)))
    elif isinstance(node, HParams) and name in node:
      hparams_set[name] = values[name]  # set below, as set_hparams sets it
      children.append(child)
    else:
      children.append(_as_like(child, values[name], jax.tree_util.keystr(child_path)))
  new = treedef.unflatten(children)
  if hparams_set:
    where = ".".join(stage) or "tree_set"  # a stage's own state has no stage path
    for name, value in hparams_set.items():
      check_value(where, name, value, node.slot(name).allowed)
    try:
      new = set_hparams(new, hparams_set)
    except HyperparameterError as error:
      raise error.with_stage(where) from None
  return new


def tree_set(tree: PyTree, filtering: Callable[[KeyPath, Any], bool] | None = None, /,
             **kwargs: Any) -> PyTree:
  """A copy of ``tree`` with the values under the given keys replaced.

  Keys are matched as in :func:`tree_get_all_with_path`, and every match is
  replaced. A replaced array keeps its dtype and shape (the value is cast and
  broadcast, and must be a whole number for an integer array), so a jitted
  step that receives the new state does not retrace. A hyperparameter held
  in an :class:`~gradtx.HParams` is set as :func:`gradtx.set_hparams` sets it:
  its allowed range is checked, and one that a schedule drives cannot be set.
  Anything else (a subtree, a whole stage state) is replaced by the value given.

  Differs from optax, which puts the value in as given (``count=2.`` makes
  the count a Python float), so the next jitted step retraces or fails.

  Args:
    tree: the tree (a gradtx or optax state, or any pytree).
    filtering: ``filtering(path, value) -> bool`` replaces only the matches
      it accepts. Positional only. Default ``None``: replace all.
    **kwargs: ``key=value`` for each key to replace.

  Raises:
    KeyError: a key with no match (none the filter accepts); the message lists the
      keys the tree has, or the paths of the matches the filter turned down.
    HyperparameterError: a hyperparameter out of its range, or scheduled.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> state = gtx.adam(learning_rate=1e-3).init(jnp.zeros(2))
    >>> state = gtx.tree_utils.tree_set(state, count=2, b1=0.8)
    >>> state["adam"].count, gtx.hparams(state)["adam.b1"]
    (Array(2, dtype=int32), Array(0.8, dtype=float32))
  """
  _check_filtering("tree_set", filtering)
  for key in kwargs:
    if _found(tree, key, filtering):
      continue
    rejected = _found(tree, key, None)
    if rejected:
      paths = [jax.tree_util.keystr(path) for path, _ in rejected]
      raise KeyError(f"tree_set: found no value for {key!r} that the filtering function "
                     f"accepts; it rejected the values at {paths}")
    state: set[str] = set()
    plain: set[str] = set()
    _all_keys(tree, state, plain)
    keys = sorted(state) + sorted(plain - state)  # the state's own names first
    hint = did_you_mean(key, keys)
    more = f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else ""
    raise KeyError(f"tree_set: found no value for {key!r}{hint}; the keys in the tree "
                   f"are {keys[:_KEYS_SHOWN]}{more}")
  return _replace(tree, (), (), kwargs, filtering)


# ----------------------------------------------------------------------------
# Mapping over the parameter-shaped parts of a state.


def tree_map_params(initable: Any | Callable[[PyTree], PyTree],
                    f: Callable[..., Any], state: PyTree, /, *rest: PyTree,
                    transform_non_params: Callable[[Any], Any] | None = None,
                    is_leaf: Callable[[Any], bool] | None = None) -> PyTree:
  """Maps ``f`` over every copy of the params' tree inside a state (moments, traces, ...).

  .. math::
    \\text{state}' = \\text{state} \\text{ with each params-shaped subtree } m
      \\text{ replaced by } \\texttt{tree.map}(f, m, *\\text{rest})

  and every other leaf :math:`x` by ``transform_non_params(x)`` (kept when
  that is ``None``). A subtree is params-shaped when ``init`` puts a copy of
  the params' tree there: ``initable``'s ``init`` is called on a leafless
  placeholder, and wherever the placeholder comes back (through
  ``zeros_like`` of the params, as every moment does) the state holds such
  a subtree. Hyperparameters and step counts are not params-shaped. Chain
  states, nested chains and wrappers' states are walked like any pytree.
  Same arguments and semantics as ``optax.tree_map_params``: use it to build
  sharding or partition specs of a state from the params' ones.

  Args:
    initable: a transformation (anything with ``init``), or an
      ``init``-like callable of the params.
    f: called as ``f(leaf, *rest_leaves)`` on every leaf of each
      params-shaped subtree.
    state: the state to map over, made by ``initable.init``.
    *rest: trees with the params' structure, mapped along. A leaf that a
      mask or partition leaves out of a stage is a ``MaskedNode`` in that
      stage's state and stays one (optax's raises on it), unless ``is_leaf``
      picks it out.
    transform_non_params: called on every other leaf of the state, default
      ``None`` (keep them).
    is_leaf: passed to ``jax.tree.map`` over each params-shaped subtree. A
      ``MaskedNode`` it returns ``True`` for is given to ``f``, as in optax,
      whose docstring suggests it for ``masked``
      (``is_leaf=lambda x: isinstance(x, gtx.MaskedNode)``).

  Example: a state's moments as their shapes.

    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.adam(1e-3)
    >>> params = {"w": jnp.zeros((2, 3))}
    >>> shapes = gtx.tree_utils.tree_map_params(tx, lambda p: p.shape, tx.init(params),
    ...                                         transform_non_params=lambda _: None)
    >>> shapes["adam"].mu, shapes["adam"].nu, shapes["adam"].count
    ({'w': (2, 3)}, {'w': (2, 3)}, None)
  """
  init = getattr(initable, "init", None)  # a transformation's; an init function has none
  init = init if callable(init) else initable
  if not callable(init):
    raise TypeError("tree_map_params: initable must be a transformation or an init "
                    f"function of the params, got {type(initable).__name__}")
  check_callable("tree_map_params", "f", f, "a function f(leaf, *rest_leaves)")
  for name, given in (("transform_non_params", transform_non_params), ("is_leaf", is_leaf)):
    if given is not None:  # else Python's "'int' object is not callable" in jax's tree.map
      check_callable("tree_map_params", name, given, "None or a function of a leaf")
  try:
    with_placeholders = init(_tree.ParamsPlaceholder())
  except (StructureError, ValueError, TypeError) as error:
    raise StructureError(
        "tree_map_params: initable.init must accept a leafless placeholder for the params "
        "(it marks where init copies them), and this one failed on it; a wrapper that "
        "matches the params against a mask or labels at init (masked, partition) cannot "
        f"yet be mapped over ({type(error).__name__}: {error})") from None

  def leaf_or_masked(x: Any) -> bool:
    return _tree.is_masked(x) or (is_leaf is not None and is_leaf(x))

  def f_unless_masked(leaf: Any, *others: Any) -> Any:
    if _tree.is_masked(leaf) and not (is_leaf is not None and is_leaf(leaf)):
      return leaf
    return f(leaf, *others)

  def map_params(marker: Any, value: Any) -> Any:
    if not _tree.is_params_placeholder(marker):
      return value if transform_non_params is None else transform_non_params(value)
    # A leaf a mask or partition leaves out is a MaskedNode in the state and a leaf (a
    # PartitionSpec) in rest: it stays as it is, as it does with no rest, where it has no
    # leaves to map.
    try:
      return jax.tree.map(f_unless_masked, value, *rest, is_leaf=leaf_or_masked)
    except ValueError as error:
      raise _RestMismatch(error) from None

  try:
    return jax.tree.map(map_params, with_placeholders, state, is_leaf=_tree.is_params_placeholder)
  except _RestMismatch as error:
    raise StructureError(
        "tree_map_params: the trees passed after the state must have the params' structure "
        f"(a prefix of each params-shaped part of the state) ({error.args[0]})") from None
  except ValueError as error:
    raise StructureError(
        "tree_map_params: the state does not have the structure initable.init makes; "
        f"pass the state that init made ({error})") from None


class _RestMismatch(Exception):
  """A tree of ``rest`` that does not fit a params-shaped part of the state, told apart from
  a state that does not fit ``init``'s (both raise ``ValueError`` inside ``jax.tree.map``)."""
