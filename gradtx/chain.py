"""Named chains, state by name, and carrying state into an edited chain.

Design note. ``chain(*stages, **named_stages)`` runs its stages in order and
keeps a *chain state*: a :class:`ChainState`, an ordered mapping from each
stage's name to its stage state. Chains nest; a nested stage is addressed as
``"outer.inner"`` both in ``state["outer.inner"]`` and in hyperparameter
names (``"outer.inner.b1"``).

Names are found in the state alone, so :func:`hparams`, :func:`set_hparams`
and :func:`carry_state` need no transformation: the walk descends through
every pytree node, adds a name at each :class:`ChainState` level, and reads an
:class:`~gradtx.core.HParams` wherever it finds one. Wrappers (``masked``,
``apply_if_finite``) are transparent: the hyperparameters of the stage they
wrap appear under the wrapper's name.
"""

from __future__ import annotations

import contextlib
import keyword
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx._flax_serialization import register_with_flax, serializable
from gradtx.core import (GradientTransformation, HParams, as_transformation, check_value,
                         checks_flags, foreign_state_hint, held_like)
from gradtx.errors import GradtxError, HyperparameterError, StructureError, did_you_mean

PyTree = Any


@serializable
@jax.tree_util.register_pytree_with_keys_class
class ChainState(Mapping[str, Any]):
  """The state of a chain: stage name -> stage state, in the chain's order.

  ``state["adam"]`` is a stage's state; ``state["outer.inner"]`` reaches into
  a nested chain, and through a wrapper's state into the stages it wraps
  (``state["f.adam"]`` for a stage ``f=gtx.apply_if_finite(gtx.adam(lr), 3)``,
  as :func:`hparams` names them). It is a pytree (its key path entries are the stage names),
  so it saves, loads and maps like any other.
  """

  __slots__ = ("_stages",)

  def __init__(self, stages: Mapping[str, Any]):
    self._stages = dict(stages)

  def __getitem__(self, name: str) -> Any:
    if not isinstance(name, str):
      raise TypeError(f"a chain state is indexed by stage name ('adam', 'outer.inner'), "
                      f"got {name!r}; its stages are {list(self._stages)}")
    parts = name.split(".")
    node: Any = self
    for i, part in enumerate(parts):
      walked = ".".join(parts[:i])
      if not isinstance(node, Mapping):  # a stage's own state: its fields are attributes
        wrapped = _wrapped_stages(node, part)
        if wrapped is None:
          raise KeyError(_not_a_chain(node, walked, part))
        node = wrapped[1]  # a wrapper's state: on into the stages it wraps
      # A ChainState's own `in` would call this method again.
      children = node._stages if isinstance(node, ChainState) else node
      if part not in children:
        within = f" in {walked!r}" if walked else " in this chain state"
        raise KeyError(f"no stage {part!r}{within}; its stages are {list(children)}")
      node = children[part]
    return node

  def __iter__(self) -> Iterator[str]:
    return iter(self._stages)

  def __len__(self) -> int:
    return len(self._stages)

  def __getattr__(self, name: str) -> Any:
    # Called only for an attribute it lacks: optax code reads opt_state.hyperparams
    # (inject_hyperparams' state) or a field of a stage's state; say where those are.
    if name.startswith("_"):  # a protocol probe (copy, pickle) or _stages not yet set
      raise AttributeError(name)
    raise AttributeError(
        f"'ChainState' object has no attribute {name!r}: a chain state maps stage names to "
        f"stage states, state['adam'].mu (its stages are {list(self._stages)}), and every "
        "hyperparameter is read by dotted name from gtx.hparams(state)")

  def replace(self, **stages: Any) -> "ChainState":
    """A new chain state with some stage states replaced, by name.

    A nested stage is named as ``state["outer.inner"]`` reads it:
    ``state.replace(**{"outer.inner": new_inner_state})``.
    """
    return self._replaced(stages, "")

  def _replaced(self, stages: Mapping[str, Any], walked: str) -> "ChainState":
    out = dict(self._stages)
    nested: dict[str, dict[str, Any]] = {}
    for name, value in stages.items():
      head, _, rest = name.partition(".")
      if head not in self._stages:
        within = f" in {walked!r}" if walked else " in this chain state"
        raise KeyError(f"no stage {head!r}{within}; its stages are {list(self._stages)}")
      if rest:
        nested.setdefault(head, {})[rest] = value
      else:
        out[head] = value
    for head, inner in nested.items():
      path = f"{walked}.{head}" if walked else head
      if isinstance(out[head], ChainState):
        out[head] = out[head]._replaced(inner, path)
        continue
      part = next(iter(inner)).partition(".")[0]
      fields, stages = _wrapped_stages(out[head], part) or ((), {})
      if not isinstance(stages, ChainState):
        raise KeyError(_not_a_chain(out[head], path, part))
      # A wrapper's state (a NamedTuple): the field holding the stages it wraps, replaced.
      out[head] = _replaced_at(out[head], fields, stages._replaced(inner, path))
    return ChainState(out)

  def __repr__(self) -> str:
    inner = ",\n".join(f"  {k}: {v!r}".replace("\n", "\n  ") for k, v in self._stages.items())
    return "ChainState({\n" + inner + "\n})"

  def __eq__(self, other: object) -> bool:
    return self is other

  __hash__ = object.__hash__

  def tree_flatten_with_keys(self):
    children = [(jax.tree_util.DictKey(k), v) for k, v in self._stages.items()]
    return children, tuple(self._stages)

  def tree_flatten(self):
    return list(self._stages.values()), tuple(self._stages)

  @classmethod
  def tree_unflatten(cls, names, children):
    return cls(dict(zip(names, children)))


def _not_a_chain(node: Any, walked: str, part: str) -> str:
  """Why ``state[...]`` cannot go on from the stage state ``node`` to ``part``, and what
  reads it: a field of ``node``, or a stage of the chain a wrapper's state holds."""
  what = f"{walked!r} is a stage's state ({type(node).__name__}), not a chain"
  held = getattr(node, "hparams", None)
  if isinstance(held, HParams) and part in held:  # state["lr.learning_rate"], as hparams names it
    return (f"{what}: {part!r} is one of its hyperparameters, read by dotted name from "
            f"gtx.hparams(state)[{walked + '.' + part!r}]")
  fields = list(getattr(type(node), "_fields", ()))
  if part in fields or not fields:
    return f"{what}: read {part!r} as an attribute, state[{walked!r}].{part}"
  wrapped = [name for _, stages in _wrapped(node) for name in stages]
  stages = f", and it wraps the stages {wrapped}" if wrapped else ""
  return f"{what}, and has no field {part!r}; its fields are {fields}{stages}"


def _wrapped(node: Any, fields: tuple[str, ...] = ()
             ) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
  """``(fields, stages)`` for each place where a wrapper's state ``node`` holds the stages
  it wraps: a field (apply_if_finite's ``inner_state``, partition's ``inner_states``), or
  such a field of the state of a wrapper it wraps (``apply_if_finite(masked(adam))``),
  which adds no name, as :func:`hparams` names them; ``fields`` lead there."""
  for field in (*_WRAPPED_FIELDS, "inner_states"):
    inner = getattr(node, field, None)
    if isinstance(inner, Mapping):
      yield (*fields, field), inner
    elif hasattr(type(inner), "_fields"):  # a wrapper's state in a wrapper's state
      yield from _wrapped(inner, (*fields, field))


def _wrapped_stages(node: Any, part: str) -> tuple[tuple[str, ...], Mapping[str, Any]] | None:
  """The ``(fields, stages)`` of :func:`_wrapped` whose stages include ``part``, or None."""
  return next(((f, stages) for f, stages in _wrapped(node) if part in tuple(stages)), None)


def _replaced_at(node: Any, fields: tuple[str, ...], value: Any) -> Any:
  """The wrapper's state ``node`` with ``value`` where ``fields`` (of :func:`_wrapped`) lead."""
  head, *rest = fields
  return node._replace(**{head: _replaced_at(getattr(node, head), tuple(rest), value)
                          if rest else value})


@contextlib.contextmanager
def in_stage(name: str) -> Iterator[None]:
  """Names the stage ``name`` in any error raised inside the block.

  A :class:`~gradtx.errors.GradtxError` gets ``name`` prefixed to its stage
  path (``stage 'outer.adam': ...``). Any other error (one JAX raises from
  inside a ``tree_map``, or an optax stage's) keeps its type and gets a note
  ``gradtx: raised in stage 'outer.adam'``, so the traceback says where.
  Chains and wrappers that run named inner transformations (``partition``)
  run each one inside this block.
  """
  try:
    yield
  except GradtxError as error:
    raise error.with_stage(name) from None
  except Exception as error:
    _note_stage(error, name)
    raise


def _note_stage(error: Exception, name: str) -> None:
  """Adds (or, one level further out, rewrites) a note naming the stage path."""
  path = (name, *getattr(error, "_gradtx_stage_path", ()))
  note = f"gradtx: raised in stage '{'.'.join(path)}'"
  notes = getattr(error, "__notes__", None)
  previous = getattr(error, "_gradtx_note", None)
  try:
    if notes is not None and previous in notes:
      notes.remove(previous)
    error.add_note(note)
    error._gradtx_note = note  # type: ignore[attr-defined]
    error._gradtx_stage_path = path  # type: ignore[attr-defined]
  except (AttributeError, TypeError):  # an exception type that takes no attributes
    pass


def _is_stage_name(name: str) -> bool:
  """Whether ``name`` can name a stage: an identifier, so never split at a dot."""
  return name.isidentifier() and not keyword.iskeyword(name)


def _check_name(name: str) -> None:
  if not _is_stage_name(name):
    raise ValueError(f"chain: stage name {name!r} must be a Python identifier (no dots); "
                     "nested stages are addressed as 'outer.inner' automatically")


def _unique_names(stages: tuple[GradientTransformation, ...], taken: set[str]) -> list[str]:
  names = []
  for tx in stages:
    base = tx.name
    if not _is_stage_name(base):
      # A dotted name made a stage that state[...] and hparams' dotted names split apart.
      raise ValueError(f"chain: a positional stage is named {base!r} (its name), which is not "
                       "a Python identifier; pass it by keyword: gtx.chain(my_stage=tx)")
    name, i = base, 1
    while name in taken:
      name, i = f"{base}_{i}", i + 1
    taken.add(name)
    names.append(name)
  return names


class Chain(GradientTransformation):
  """A named chain of stages; its state is a :class:`ChainState`.

  A stage that takes a factor (:attr:`GradientTransformation.takes_factor`:
  Adam) followed by one that only multiplies by a scalar (the learning rate)
  run as one: the scalar is folded into the first stage's per-step scalars,
  so that each leaf's kernel multiplies once instead of twice, which XLA
  compiles with fewer instructions on trees of many leaves. The result equals
  the two stages run one after the other up to rounding (the product of the
  two scalars is rounded once more: relative differences near 1e-7 in
  float32), and is the same, bitwise, for a ready optimizer and the chain it
  is spelled as.
  """

  __slots__ = ("stages", "label")

  def __init__(self, stages: Mapping[str, GradientTransformation], label: str = "chain"):
    self.stages = dict(stages)
    self.label = label
    stage_items = tuple(self.stages.items())
    # (name, stage, the (name, stage) of a scaling stage folded into it or None), in order.
    plan, folded = [], set()
    for (name, tx), (next_name, next_tx) in zip(stage_items, stage_items[1:] + ((None, None),)):
      if name in folded:
        continue
      fold = tx.takes_factor and next_tx is not None and next_tx.factor is not None
      plan.append((name, tx, (next_name, next_tx) if fold else None))
      if fold:
        folded.add(next_name)

    def init(params):
      register_with_flax()  # a state is being made: see gradtx._flax_serialization
      stage_states = {}
      for name, tx in stage_items:
        with in_stage(name):
          stage_states[name] = tx.init(params)
      return ChainState(stage_states)

    def update(updates, state, params=None, **extra):
      if not isinstance(state, ChainState) or tuple(state) != tuple(self.stages):
        got = list(state) if isinstance(state, ChainState) else type(state).__name__
        hint = (foreign_state_hint(state) or "to move a state into an edited chain use "
                "gradtx.carry_state(old_state, new_tx.init(params))")
        raise StructureError(
            f"{label}: the state does not belong to this chain: expected stages "
            f"{list(self.stages)}, got {got}; {hint}")
      new_state = {}
      for name, tx, scaling in plan:
        if scaling is None:
          with in_stage(name):
            updates, new_state[name] = tx.update(updates, state[name], params, **extra)
        else:
          scaling_name, scaling_tx = scaling
          with in_stage(scaling_name):
            factor, new_state[scaling_name] = scaling_tx.factor(state[scaling_name])
          with in_stage(name):
            updates, new_state[name] = tx.update(updates, state[name], params, factor=factor,
                                                 **extra)
      return updates, ChainState({name: new_state[name] for name, _ in stage_items})

    super().__init__(init, update, name=label)

  def format(self, indent: int = 0) -> str:
    pad = "  " * (indent + 1)
    lines = [f"{pad}{name}={stage.format(indent + 1)}," for name, stage in self.stages.items()]
    return f"{self.label}(\n" + "\n".join(lines) + "\n" + "  " * indent + ")"


def chain(*stages: Any, **named_stages: Any) -> Chain:
  """Runs stages one after another; each stage's state is kept under its name.

  Positional stages take their primitive's name (``scale_by_adam``), made
  unique with a suffix (``scale_by_adam_1``); keyword stages take the keyword.
  An optax transformation is accepted as a stage.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.chain(clip=gtx.clip_by_global_norm(1.0),
    ...                adam=gtx.scale_by_adam(), lr=gtx.scale_by_learning_rate(0.1))
    >>> state = tx.init({"w": jnp.zeros(3)})
    >>> list(state)
    ['clip', 'adam', 'lr']
    >>> state["adam"].mu["w"].shape
    (3,)
  """
  positional = tuple(as_transformation(tx) for tx in stages)
  named = {k: as_transformation(v, "chain", f"stage {k!r}") for k, v in named_stages.items()}
  for name in named:
    _check_name(name)
  names = _unique_names(positional, set(named))
  return Chain({**dict(zip(names, positional)), **named})


def named_chain(label: str, *positional: Any, **stages: GradientTransformation) -> Chain:
  """A chain that shows as ``label`` in ``repr``: how ready optimizers are built.

  Unlike ``optax.named_chain``, which takes ``(name, transformation)`` pairs,
  the stages are keywords after a label; optax's form is
  ``gtx.chain(**dict(pairs))``, and passing it here raises a ``TypeError``.
  """
  # optax's form, (name, transformation) pairs: a first pair is taken as the label; two
  # or more failed in Python's call ("takes 1 positional argument but 2 were given").
  if not isinstance(label, str) or positional:
    got = f"{1 + len(positional)} positional arguments" if positional else repr(label)
    raise TypeError(f"named_chain: label must be a string (the chain's name in repr), "
                    f"and the stages keywords; got {got}; for optax's "
                    "named_chain(('name', tx), ...) write gtx.chain(name=tx, ...), or "
                    "gtx.chain(**dict(pairs))")
  for name in stages:
    _check_name(name)
  return Chain({k: as_transformation(v, "named_chain", f"stage {k!r}")
                for k, v in stages.items()}, label=label)


# ----------------------------------------------------------------------------
# Hyperparameters by dotted name.


def _children(node: Any) -> list[Any]:
  return jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)[0]


def _is_array(x: Any) -> bool:
  return isinstance(x, (jax.Array, np.ndarray, np.generic, float, int, complex))


def _find_hparams(node: Any, prefix: tuple[str, ...] = (), kind: type[Mapping[str, Any]] = HParams
                  ) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
  """Every HParams in ``node``, with the stage path leading to it, in pytree order.

  ``kind`` picks another mapping held in stage states the same way (a
  monitor's :class:`~gradtx.transforms.monitoring.Stats`): one walk, one naming.
  """
  if isinstance(node, kind):
    yield prefix, node
  elif isinstance(node, ChainState):
    for name, sub in node.items():
      yield from _find_hparams(sub, prefix + (name,), kind)
  elif node is not None and not _is_array(node):
    children = _children(node)
    if len(children) == 1 and children[0] is node:  # a leaf of another kind: a string, a spec
      return
    for child in children:
      yield from _find_hparams(child, prefix, kind)


def _named_slots(state: PyTree, kind: type = HParams) -> dict[str, tuple[int, str]]:
  """dotted name -> (index of its HParams in pytree order, name inside it)."""
  named: dict[str, tuple[int, str]] = {}
  for index, (path, hp) in enumerate(_find_hparams(state, kind=kind)):
    for key in hp:
      dotted = ".".join(path + (key,))
      if dotted in named:
        raise _same_name_error(state, kind, dotted, named[dotted][0], index)
      named[dotted] = (index, key)
  return named


def _same_name_error(state: PyTree, kind: type, dotted: str, first: int,
                     second: int) -> HyperparameterError:
  """Two ``kind`` mappings of ``state`` (by index in pytree order) that give ``dotted``."""
  what = "hyperparameters" if kind is HParams else f"{kind.__name__} entries"
  holders = [path for path, x in jax.tree_util.tree_flatten_with_path(
      state, is_leaf=lambda x: isinstance(x, kind))[0] if isinstance(x, kind)]
  a, b = holders[first], holders[second]
  if a[:len(b) - 1] == b[:-1] or b[:len(a) - 1] == a[:-1]:  # one in the other's stage state
    # A chain's stage names are unique, so the two come from a wrapper and a stage it
    # wraps (apply_if_finite(apply_if_finite(adam))), which "distinct names in the
    # chain" cannot separate: naming the inner stage in a chain of its own does.
    return HyperparameterError(
        f"two {what} are both named {dotted!r}: a wrapper's and those of a stage it "
        "wraps, which add no name of their own; give the inner stage a name with a "
        "chain of its own (apply_if_finite(gtx.chain(inner=...), ...))")
  # Side by side in a container that names nothing: optax.chain(gtx.sgd(...), gtx.adam(...))
  # is a tuple of two chain states that each have lr.learning_rate.
  return HyperparameterError(
      f"two {what} are both named {dotted!r}, at {jax.tree_util.keystr(a)} and "
      f"{jax.tree_util.keystr(b)} of the state: stages side by side in a container that "
      "gives them no names (optax.chain's tuple, optax.partition's dict); compose them with "
      "gtx.chain or gtx.partition, which name their stages")


def hparams(state: PyTree) -> dict[str, jax.Array]:
  """Every numeric hyperparameter in a state, by dotted name.

  A scheduled hyperparameter reads as the value it had at the last step (its
  step-0 value before the first step).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> state = gtx.adam(learning_rate=0.01).init(jnp.zeros(2))
    >>> {k: float(f"{float(v):.6g}") for k, v in gtx.hparams(state).items()}
    {'adam.b1': 0.9, 'adam.b2': 0.999, 'adam.eps': 1e-08, 'adam.eps_root': 0.0, 'lr.learning_rate': 0.01}
  """
  return values_by_name(state)


def _check_is_state(where: str, state: Any, what: str = "the state given") -> None:
  """Raises a TypeError if ``state`` is a transformation, given where its state belongs:
  read as a state it holds no hyperparameters and no stages, so hparams gave {} and
  carry_state returned the transformation as the state."""
  if isinstance(state, Mapping):  # a state (a ChainState's lookups fail, never raise here)
    return
  if callable(getattr(state, "init", None)) and callable(getattr(state, "update", None)):
    raise TypeError(f"{where}: {what} is the transformation {type(state).__name__}, not a "
                    "state; pass the state its init makes, tx.init(params)")


def values_by_name(state: PyTree, kind: type = HParams) -> dict[str, Any]:
  """Every entry of every ``kind`` mapping in a state, by dotted name (behind :func:`hparams`
  and :func:`gradtx.stats`)."""
  where = "hparams" if kind is HParams else kind.__name__.lower()
  _check_is_state(where, state)
  found = list(_find_hparams(state, kind=kind))
  if not found and _turned_into_mappings(state):
    what = "hyperparameters" if kind is HParams else "statistics"
    raise HyperparameterError(_PLAIN_MAPPINGS.format(where=where, what=what))
  return {name: found[index][1][key]
          for name, (index, key) in _named_slots(state, kind).items()}


# Said where hparams or stats would read nothing from such a state: nnx.state and flax's
# state dict turn every node into a dict of its children (and nnx drops the empty ones), so
# a stage's name and a field of its state read alike, and the ranges are gone.
_PLAIN_MAPPINGS = (
    "{where}: this state holds no gradtx {what}: it is a gradtx state turned into plain "
    "mappings (nnx.state(optimizer), flax.serialization.to_state_dict, a checkpoint restored "
    "without a target), which keep the values but not the stage names. Read them from the "
    "state that init made (optimizer.opt_state for flax.nnx.Optimizer), or restore into the "
    "structure of tx.init(params)")


def _turned_into_mappings(state: PyTree) -> bool:
  """Whether ``state`` is a gradtx state whose nodes became plain mappings: one holds, in
  place of a stage state's :class:`~gradtx.core.HParams`, a mapping under ``"hparams"``."""
  if not isinstance(state, Mapping) or isinstance(state, (ChainState, HParams)):
    return False
  return any(key == "hparams" and isinstance(value, Mapping) and not isinstance(value, HParams)
             or _turned_into_mappings(value) for key, value in state.items())


# Said instead of "the valid names are []" for a state that holds no HParams at all: one from
# elsewhere, or a gradtx state whose HParams became plain dicts on its way through a framework.
_NO_HPARAMS = (
    "unknown hyperparameter {name!r}: this state holds no gradtx hyperparameters, as the state "
    "of an optax transformation does not, nor a gradtx state turned into plain mappings "
    "(nnx.state(optimizer), flax.serialization.to_state_dict, a checkpoint restored without "
    "a target). Set them on the state that init made (optimizer.opt_state for "
    "flax.nnx.Optimizer)")


def set_hparams(state: PyTree, values: Mapping[str, Any]) -> PyTree:
  """A new state with hyperparameters replaced by dotted name.

  The new values take each hyperparameter's dtype, shape and placement (the
  sharding of a state put on devices), so a jitted step that receives the new
  state does not retrace. Values are checked against the hyperparameter's
  allowed range.

  Raises:
    HyperparameterError: an unknown name (the message lists the valid ones),
      a value out of range, or a hyperparameter that a schedule drives.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> state = gtx.sgd(learning_rate=0.1).init(jnp.zeros(2))
    >>> state = gtx.set_hparams(state, {"lr.learning_rate": 0.01})
    >>> round(float(gtx.hparams(state)["lr.learning_rate"]), 6)
    0.01
  """
  _check_is_state("set_hparams", state)
  if not isinstance(values, Mapping):
    raise TypeError(f"set_hparams: values must be a mapping of dotted names to values "
                    f"({{'lr.learning_rate': 1e-4}}), got a {type(values).__name__}")
  named = _named_slots(state)
  unknown = [k for k in values if k not in named]
  if unknown and next(_find_hparams(state), None) is None:  # every gradtx stage state has one
    raise HyperparameterError(_NO_HPARAMS.format(name=unknown[0]))
  if unknown:
    raise HyperparameterError(f"unknown hyperparameter {unknown[0]!r}"
                              f"{did_you_mean(unknown[0], named)}; the valid names are "
                              f"{sorted(named)}")
  leaves, treedef = jax.tree_util.tree_flatten(state, is_leaf=lambda x: isinstance(x, HParams))
  holders = [i for i, leaf in enumerate(leaves) if isinstance(leaf, HParams)]
  for dotted, value in values.items():
    index, key = named[dotted]
    hp: HParams = leaves[holders[index]]
    slot = hp.slot(key)
    if slot.scheduled:
      raise HyperparameterError(
          f"{dotted} follows a schedule, which sets it at every step; build the "
          "stage with a float or an array to set it by name, or change the schedule")
    # The stage's path names where it is; a stage's own state (no chain around it) has
    # none, and its name alone read "b1: b1 must be in [0, 1), got 2.0".
    old = hp[key]
    check_value(dotted[:-len(key) - 1] or "set_hparams", key, value, slot.allowed,
                held=old.dtype)
    # A framework's box around the array (flax.nnx.Optimizer holds its state in
    # OptArray variables) keeps its type, so the framework can update it.
    boxed = not isinstance(old, (jax.Array, np.ndarray, np.generic))
    array = jax.tree.leaves(old)[0] if boxed else old
    try:
      # A value past the dtype's range got here only where the range holds inf: as inf.
      with np.errstate(over="ignore"):
        new = held_like(value, array)
    except ValueError as error:
      raise HyperparameterError(f"{dotted} {error}") from None
    if boxed:
      new = jax.tree.unflatten(jax.tree.structure(old), [new])
    leaves[holders[index]] = hp.replace(**{key: new})
  return jax.tree_util.tree_unflatten(treedef, leaves)


# ----------------------------------------------------------------------------
# Carrying state into an edited chain.


def _join(prefix: str, name: str) -> str:
  return f"{prefix}.{name}" if prefix else name


def _same_array(a: Any, b: Any) -> bool:
  return np.shape(a) == np.shape(b) and jnp.result_type(a) == jnp.result_type(b)


def _hparams_compatible(old: HParams, new: HParams) -> bool:
  """Same names, ranges, schedule flags and shapes: old values can stand in for new."""
  return (list(old) == list(new) and (old.count is None) == (new.count is None)
          and all(old.slot(k) == new.slot(k) and _same_array(old[k], new[k]) for k in old))


def _differs(a: Any, b: Any) -> bool:
  try:
    return not np.array_equal(np.asarray(a), np.asarray(b))
  except Exception:  # traced values: cannot tell, so say nothing
    return False


def _masked_like(old: Any, new: Any) -> Any:
  """``old`` with a MaskedNode wherever ``new``, of the same structure otherwise, has one.

  So a stage newly masked (``adam`` became ``masked(adam, mask)``), or masked to fewer
  leaves, carries its state for the leaves it still sees: what it kept for the others is
  dropped. A leaf it newly sees has no old state: ``old`` is returned as it is, and the
  stage does not fit.
  """
  is_part = lambda x: isinstance(x, (ChainState, HParams)) or tree.is_masked(x)  # noqa: E731
  new_parts, new_def = jax.tree_util.tree_flatten(new, is_leaf=is_part)
  if not any(tree.is_masked(n) for n in new_parts):
    return old
  try:
    old_parts = new_def.flatten_up_to(old)  # type: ignore[attr-defined]  # jax's PyTreeDef is untyped
  except (ValueError, TypeError):
    return old
  return jax.tree_util.tree_unflatten(
      new_def, [n if tree.is_masked(n) else o for n, o in zip(new_parts, old_parts)])


# The fields where wrappers keep the state of the transformation they wrap.
_WRAPPED_FIELDS = ("inner_state", "fast_state")


class _Carry:
  """One walk of :func:`carry_state`, filling its report."""

  def __init__(self, keep_hparams: bool):
    self.keep_hparams = keep_hparams
    self.report: dict[str, list[str]] = {
        "carried": [], "fresh": [], "mismatched": [], "dropped": [], "hparams_differ": []}

  def chain(self, old: ChainState, new: ChainState, prefix: str) -> ChainState:
    out = {}
    for name, fresh in new.items():
      dotted = _join(prefix, name)
      if name in old:
        out[name] = self.stage(old[name], fresh, dotted)
      else:
        self.report["fresh"].append(dotted)
        out[name] = fresh
    self.report["dropped"].extend(_join(prefix, k) for k in old if k not in new)
    return ChainState(out)

  def stage(self, old: Any, new: Any, dotted: str) -> Any:
    if isinstance(old, ChainState) and isinstance(new, ChainState):
      return self.chain(old, new, dotted)
    old = _masked_like(old, new)
    # A stage state is its own arrays, its HParams, and the chain states of
    # the transformations it wraps (apply_if_finite(chain(...)), partition):
    # its own part must match exactly; wrapped chains are matched by name.
    is_part = lambda x: isinstance(x, (ChainState, HParams))  # noqa: E731
    old_parts, old_def = jax.tree_util.tree_flatten(old, is_leaf=is_part)
    new_parts, new_def = jax.tree_util.tree_flatten(new, is_leaf=is_part)
    fits = old_def == new_def and all(  # type: ignore[operator]  # jax's PyTreeDef is untyped
        is_part(o) and type(o) is type(n) or not is_part(o) and not is_part(n)
        and _same_array(o, n) for o, n in zip(old_parts, new_parts))
    if not fits:
      rewrapped = self.rewrap(old, new, dotted)
      if rewrapped is not None:
        return rewrapped
      name = dotted or "<root>"
      self.report["fresh"].append(name)
      self.report["mismatched"].append(name)
      return new
    merged: list[Any] = []  # chain states, HParams, arrays
    own = False
    for o, n in zip(old_parts, new_parts):
      if isinstance(o, ChainState):
        merged.append(self.chain(o, n, dotted))
      elif isinstance(o, HParams):
        merged.append(self.hparams(o, n, dotted))
        own = own or bool(len(n))
      else:
        merged.append(o)
        own = True
    if own or not new_parts:
      self.report["carried"].append(dotted or "<root>")
    return jax.tree_util.tree_unflatten(old_def, merged)

  def rewrap(self, old: Any, new: Any, dotted: str) -> Any | None:
    """A stage newly wrapped (``adam`` -> ``apply_if_finite(adam)``), or unwrapped:
    the wrapped state is carried and the wrapper's own state is fresh (or dropped)."""
    for outer, inner, wrapping in ((new, old, True), (old, new, False)):
      field = next((f for f in _WRAPPED_FIELDS if f in getattr(type(outer), "_fields", ())), None)
      if field is None:
        continue
      probe = _Carry(self.keep_hparams)
      merged = (probe.stage(inner, getattr(outer, field), dotted) if wrapping
                else probe.stage(getattr(outer, field), inner, dotted))
      if probe.report["mismatched"] or not probe.report["carried"]:
        continue
      for key, names in probe.report.items():
        self.report[key].extend(names)
      self.report["fresh" if wrapping else "dropped"].append(
          f"{dotted or '<root>'} ({type(outer).__name__})")
      return outer._replace(**{field: merged}) if wrapping else merged
    return None

  def hparams(self, old: HParams, new: HParams, dotted: str) -> HParams:
    self.report["hparams_differ"].extend(
        _join(dotted, k) for k in new if k in old and _differs(old[k], new[k]))
    if self.keep_hparams and _hparams_compatible(old, new):
      return old
    # The edited chain's values, but a schedule continues from the old step.
    count = old.count if old.count is not None and new.count is not None else new.count
    return HParams(dict(new.items()), {k: new.slot(k) for k in new}, count)


@checks_flags
def carry_state(old: PyTree, new: PyTree, *, strict: bool = False,
                hparams: str = "old") -> tuple[PyTree, dict]:
  """Moves stage states from an old chain state into a fresh state of an edited chain.

  Stages are matched by dotted name. A stage of ``new`` whose name exists in
  ``old`` takes the old stage's state (moments, counts) when its arrays have
  the same tree structure, shapes and dtypes; otherwise, or if the name is
  new, it keeps its fresh state and the report says so. Nested chains are
  matched stage by stage, also inside wrappers (``apply_if_finite(chain(...))``,
  ``partition``), whose own state (counters, accumulators) must match to be
  carried. A stage newly put inside a wrapper (``adam`` became
  ``apply_if_finite(adam)``) keeps its state inside the fresh wrapper, and the
  reverse: the report lists the wrapper's own state as ``"fresh"`` (or
  ``"dropped"``) under the stage name and the wrapper's state class. A stage
  newly masked (``masked(adam, mask)``, or a mask that hides more leaves than
  before) keeps its state for the leaves it still sees; one whose mask shows a
  leaf it did not see before has no state for it, and is fresh (``"mismatched"``).

  Hyperparameters: with ``hparams="old"`` (the default) a carried stage keeps
  the values the old state held, including any set by :func:`set_hparams`,
  unless the edit changed their kind (a new name, a float became a schedule),
  where the edited chain's values are used. With ``hparams="new"`` the edited
  chain's values are used (a schedule still continues from the old step
  count). Either way ``report["hparams_differ"]`` lists the names whose old
  and new values differ.

  Args:
    old: the state of the chain before the edit.
    new: ``edited_tx.init(params)``, a fresh state of the edited chain.
    strict: raise :class:`StructureError` unless every stage is carried over
      and none is dropped.
    hparams: ``"old"`` or ``"new"``, as above.

  Returns:
    ``(state, report)``; ``report`` has lists of dotted stage names:
    ``"carried"``, ``"fresh"`` (new, or in ``old`` with another structure,
    which are listed under ``"mismatched"`` too), ``"dropped"`` (in ``old``
    only), and ``"hparams_differ"`` (hyperparameter names). A stage that
    wraps a chain is listed by its nested stages, and under its own name when
    it has state of its own.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> params = {"w": jnp.zeros(2)}
    >>> old = gtx.adam(0.1).init(params)
    >>> edited = gtx.chain(clip=gtx.clip_by_global_norm(1.0), adam=gtx.scale_by_adam(),
    ...                    lr=gtx.scale_by_learning_rate(0.1))
    >>> state, report = gtx.carry_state(old, edited.init(params))
    >>> report
    {'carried': ['adam', 'lr'], 'fresh': ['clip'], 'mismatched': [], 'dropped': [], 'hparams_differ': []}
  """
  _check_is_state("carry_state", old, "old")
  _check_is_state("carry_state", new, "new")
  if hparams not in ("old", "new"):
    raise ValueError(f"carry_state: hparams must be 'old' or 'new', got {hparams!r}")
  plain = (dict, list, tuple)
  if type(old) in plain and type(new) not in plain:  # nothing would match: all fresh
    raise StructureError(f"carry_state: the old state is a {type(old).__name__}, not a "
                         f"{type(new).__name__}; {foreign_state_hint(old)}")
  walk = _Carry(keep_hparams=hparams == "old")
  state = walk.stage(old, new, "")
  report = walk.report
  if strict and (report["fresh"] or report["dropped"]):
    raise StructureError(
        "carry_state(strict=True) could not carry every stage: "
        f"fresh {report['fresh']} (of which mismatched {report['mismatched']}), "
        f"dropped {report['dropped']}")
  return state, report


__all__ = ["Chain", "ChainState", "carry_state", "chain", "hparams", "named_chain", "set_hparams"]
