"""jax.export serialization for gradtx's pytree nodes: every one, in one place.

``jax.export.export(jax.jit(step))(...).serialize()`` writes the step's input and
output tree structures, and raises ``Cannot serialize PyTreeDef containing an
unregistered type`` for any node type not registered with
``jax.export.register_namedtuple_serialization`` (a NamedTuple) or
``jax.export.register_pytree_node_serialization`` (a class registered with
``jax.tree_util``) -- optax's states among them. This module registers every node
class gradtx defines, under the stable name ``"gradtx.<ClassName>"`` that a
serialized step stores: the stage states (NamedTuples), ``EmptyState``,
``MaskedNode``, and the classes registered with ``jax.tree_util`` (``ChainState``,
``HParams``, ``Stats``, ``Packed``, ``PackedLeaves``, ``ParamsPlaceholder``), whose
aux data is written as JSON. ``tests/test_export.py`` lists gradtx's node classes
mechanically, so a new one left out of these tables fails there.

It runs once, at the end of ``import gradtx`` (jax imports ``jax.export`` itself):
72 dictionary insertions. flax's checkpoint format is registered separately
(``gradtx._flax_serialization``): it needs only the mapping nodes, and flax is optional.

Not everything can be written: a :class:`~gradtx.packed.Layout` (the aux data of
``Packed`` and ``PackedLeaves``) holds the params' tree structure, which is written
with ``PyTreeDef.serialize_using_proto``, so it must be made of dicts (string keys),
lists, tuples and ``None``; a layout of any other params tree (a NamedTuple, a flax
``nnx.State``) raises a ValueError that says so when the step is serialized.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from typing import Any

import jax

# The NamedTuples, by the module that defines them; each serialized as "gradtx.<name>".
_NAMEDTUPLES: dict[str, tuple[str, ...]] = {
    "gradtx.core": ("EmptyState",),
    "gradtx.tree": ("MaskedNode",),
    "gradtx.transforms.adaptive": ("ScaleByBeliefState", "ScaleByNovogradState",
                                   "ScaleByAdanState", "ScaleByNadamState"),
    "gradtx.transforms.factored": ("FactoredState", "ScaleBySM3State"),
    "gradtx.transforms.finite": ("ZeroNansState",),
    "gradtx.transforms.linesearch": (
        "ScaleByLBFGSState", "ZoomLinesearchInfo", "ScaleByZoomLinesearchState", "_Search",
        "BacktrackingLinesearchInfo", "ScaleByBacktrackingLinesearchState", "_Backtrack"),
    "gradtx.transforms.moments": ("ScaleByRmsState", "ScaleByStddevState", "ScaleByRssState",
                                  "ScaleByAdaDeltaState", "ScaleByAdamState",
                                  "ScaleByAmsgradState"),
    "gradtx.transforms.momentum": ("TraceState", "EmaState"),
    "gradtx.transforms.monitoring": ("MonitorState", "_Statistic", "MeasuresState"),
    "gradtx.transforms.noise": ("AddNoiseState",),
    "gradtx.transforms.optimism": ("ScaleByOptimisticGradientState",),
    "gradtx.transforms.plateau": ("ReduceOnPlateauState",),
    "gradtx.transforms.sign": ("ScaleByLionState", "ScaleByRpropState"),
    "gradtx.transforms.stepsize": ("ScaleByDistanceOverGradientsState",),
    "gradtx.wrappers._conditional": ("ConditionallyTransformState", "ConditionallyMaskState"),
    "gradtx.wrappers._lookahead": ("LookaheadParams", "LookaheadState"),
    "gradtx.wrappers._masking": ("MaskedState",),
    "gradtx.wrappers._partition": ("PartitionState",),
    "gradtx.wrappers._snapshot": ("SnapshotState",),
    "gradtx.wrappers._steps": ("ApplyIfFiniteState", "MultiStepsState", "ApplyEvery"),
    "gradtx.contrib._ademamix": ("ScaleByAdemamixState", "ScaleBySimplifiedAdEMAMixState"),
    "gradtx.contrib._cocob": ("COCOBState",),
    "gradtx.contrib._common": ("MuonDimensionNumbers", "GaLoreDimensionNumbers"),
    "gradtx.contrib._complex_valued": ("SplitRealAndImaginaryArrays",
                                       "SplitRealAndImaginaryState"),
    "gradtx.contrib._dadapt_adamw": ("DAdaptAdamWState",),
    "gradtx.contrib._dog": ("DoGState", "DoWGState"),
    "gradtx.contrib._galore": ("GaLoreState", "_Plan"),
    "gradtx.contrib._madgrad": ("MadgradState",),
    "gradtx.contrib._mechanic": ("MechanicState",),
    "gradtx.contrib._momo": ("MomoState", "MomoAdamState"),
    "gradtx.contrib._muon": ("MuonState",),
    "gradtx.contrib._prodigy": ("ProdigyState",),
    "gradtx.contrib._sam": ("SAMState",),
    "gradtx.contrib._schedule_free": ("ScheduleFreeState", "DifferentiallyPrivateAggregateState"),
    "gradtx.contrib._sophia": ("HutchinsonState", "SophiaState"),
}


# -- aux data of the classes registered with jax.tree_util, as JSON ---------------------

def _dumps(value: Any) -> bytes:
  return json.dumps(value).encode("utf-8")  # inf and nan as JSON's Infinity and NaN


def _names_to_bytes(names: tuple[str, ...]) -> bytes:  # ChainState's and Stats' aux
  return _dumps(list(names))


def _names_from_bytes(data: bytes) -> tuple[str, ...]:
  return tuple(json.loads(data))


def _hparams_aux_to_bytes(aux: tuple[Any, ...]) -> bytes:
  names, slots, has_count = aux
  return _dumps([list(names), [{"allowed": dataclasses.asdict(s.allowed), "scheduled": s.scheduled}
                               for s in slots], has_count])


def _hparams_aux_from_bytes(data: bytes) -> tuple[Any, ...]:
  from gradtx.core import Range, _Slot  # pylint: disable=import-outside-toplevel
  names, slots, has_count = json.loads(data)
  return (tuple(names), tuple(_Slot(Range(**s["allowed"]), s["scheduled"]) for s in slots),
          has_count)


def _layout_to_bytes(layout: Any) -> bytes:  # Packed's and PackedLeaves' aux
  try:
    treedef = layout.treedef.serialize_using_proto()
  except ValueError as e:
    raise ValueError(
        f"gradtx: a packed tree's layout cannot be serialized by jax.export: its params' "
        f"structure {layout.treedef} holds a node other than dict (string keys), list, "
        f"tuple or None ({e}). Pack a tree of those (convert it first), or export a step "
        f"whose inputs and outputs are not packed.") from None
  return _dumps({"treedef": base64.b64encode(treedef).decode("ascii"),
                 "shapes": [list(s) for s in layout.shapes], "dtypes": list(layout.dtypes)})


def _layout_from_bytes(data: bytes) -> Any:
  from gradtx.packed import Layout  # pylint: disable=import-outside-toplevel
  fields = json.loads(data)
  treedef = jax.tree_util.PyTreeDef.deserialize_using_proto(
      jax.tree_util.default_registry, base64.b64decode(fields["treedef"]))
  return Layout(treedef, tuple(tuple(s) for s in fields["shapes"]), tuple(fields["dtypes"]))


def _none_to_bytes(aux: None) -> bytes:
  del aux
  return b""


def _none_from_bytes(data: bytes) -> None:
  del data


# The classes registered with jax.tree_util: module, name, how their aux data is written.
_NODES: tuple[tuple[str, str, Any, Any], ...] = (
    ("gradtx.chain", "ChainState", _names_to_bytes, _names_from_bytes),
    ("gradtx.core", "HParams", _hparams_aux_to_bytes, _hparams_aux_from_bytes),
    ("gradtx.transforms.monitoring", "Stats", _names_to_bytes, _names_from_bytes),
    ("gradtx.packed", "Packed", _layout_to_bytes, _layout_from_bytes),
    ("gradtx.packed", "PackedLeaves", _layout_to_bytes, _layout_from_bytes),
    ("gradtx.tree", "ParamsPlaceholder", _none_to_bytes, _none_from_bytes),
)


def serialized_names() -> dict[type, str]:
  """Every registered class and the name a serialized step stores for it."""
  named = {getattr(sys.modules[module], name): f"gradtx.{name}"
           for module, names in _NAMEDTUPLES.items() for name in names}
  named.update({getattr(sys.modules[module], name): f"gradtx.{name}"
                for module, name, _, _ in _NODES})
  return named


_registered = False


def register() -> None:
  """Registers every class above with jax.export, once: ``import gradtx`` calls it (again
  after ``importlib.reload(gradtx)``, where jax would refuse a second registration)."""
  global _registered  # pylint: disable=global-statement
  if _registered:
    return
  _registered = True
  for module, names in _NAMEDTUPLES.items():
    for name in names:
      jax.export.register_namedtuple_serialization(
          getattr(sys.modules[module], name), serialized_name=f"gradtx.{name}")
  for module, name, to_bytes, from_bytes in _NODES:
    jax.export.register_pytree_node_serialization(
        getattr(sys.modules[module], name), serialized_name=f"gradtx.{name}",
        serialize_auxdata=to_bytes, deserialize_auxdata=from_bytes)
