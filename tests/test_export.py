"""jax.export of a jitted step whose inputs and outputs hold gradtx states.

Every gradtx pytree node is registered for jax.export's serialization
(gradtx/_export_serialization.py); a step is exported, serialized, deserialized and
called, and gives what the jitted step gives.
"""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx
from gradtx import _export_serialization

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.1, -0.2])}
GRADS = {"w": jnp.array([[0.3, -0.1], [0.2, 0.4]]), "b": jnp.array([-0.5, 0.25])}


def _node_classes() -> set[type]:
  """Every class gradtx defines that is a pytree node: a NamedTuple, or a class
  registered with jax.tree_util (its tree_flatten / tree_unflatten methods)."""
  found = set()
  for info in pkgutil.walk_packages(gtx.__path__, "gradtx."):
    module = importlib.import_module(info.name)
    for cls in vars(module).values():
      if not inspect.isclass(cls) or cls.__module__ != module.__name__:
        continue
      is_namedtuple = issubclass(cls, tuple) and hasattr(cls, "_fields")
      if is_namedtuple or hasattr(cls, "tree_unflatten"):
        found.add(cls)
  return found


def test_every_node_class_is_registered_under_a_stable_name():
  names = _export_serialization.serialized_names()
  missing = sorted(c.__qualname__ for c in _node_classes() - set(names))
  assert not missing, (f"pytree node classes not registered for jax.export: {missing}; add "
                       f"them to gradtx/_export_serialization.py")
  assert all(name == f"gradtx.{cls.__name__}" for cls, name in names.items())
  assert len(set(names.values())) == len(names)
  assert names[gtx.ScaleByAdamState] == "gradtx.ScaleByAdamState"


def test_no_node_registered_another_way():
  # _node_classes finds register_pytree_node_class's classes by their methods; a class
  # registered with a function call would be missed, so none may be.
  other = re.compile(r"register_pytree_node\(|register_pytree_with_keys\(|register_dataclass|"
                     r"register_static")
  hits = [str(p) for p in Path(gtx.__file__).parent.rglob("*.py")
          if other.search(p.read_text())]
  assert not hits, f"extend _node_classes in this test to the classes registered in {hits}"


def _assert_roundtrip(step, *args):
  """``step`` exported, serialized, deserialized and called gives the jitted step's result."""
  pytest.importorskip("flatbuffers", reason="jax.export's serialize() needs flatbuffers")
  exported = jax.export.export(jax.jit(step))(*args)
  restored = jax.export.deserialize(exported.serialize())
  assert restored.in_tree == exported.in_tree and restored.out_tree == exported.out_tree
  got, want = restored.call(*args), jax.jit(step)(*args)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  return got


def _step(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return gtx.apply_updates(params, updates), state
  return step


def test_adam_step_exports():
  tx = gtx.adam(1e-2)
  state = tx.init(PARAMS)
  _, new_state = _assert_roundtrip(_step(tx), PARAMS, state, GRADS)
  assert int(new_state["adam"].count) == 1


def test_named_chain_with_schedule_and_mask_exports():
  tx = gtx.chain(
      clip=gtx.clip_by_global_norm(1.0),
      adam=gtx.masked(gtx.scale_by_adam(b1=0.8), {"w": True, "b": False}),
      mon=gtx.monitor("norm"),
      lr=gtx.scale_by_learning_rate(gtx.schedules.warmup_cosine_decay_schedule(
          0.0, 1e-2, 5, 50)))
  state = tx.init(PARAMS)
  params, state = _assert_roundtrip(_step(tx), PARAMS, state, GRADS)
  # The restored step's outputs are inputs to it again: a second step, same structure.
  _assert_roundtrip(_step(tx), params, state, GRADS)
  assert isinstance(state["adam"].inner_state.nu["b"], gtx.MaskedNode)


def test_packed_step_exports():
  layout = gtx.packed.Layout.from_tree(PARAMS)
  flat = layout.pack(PARAMS)
  tx = gtx.adafactor(1e-2, min_dim_size_to_factor=1)  # PackedLeaves in its state
  state = tx.init(flat)
  params, _ = _assert_roundtrip(_step(tx), flat, state, layout.pack(GRADS))
  assert isinstance(params, gtx.packed.Packed) and params.layout == layout


def test_contrib_optimizer_step_exports():
  for tx in [gtx.contrib.prodigy(1.0), gtx.contrib.schedule_free_adamw(1e-2)]:
    _assert_roundtrip(_step(tx), PARAMS, tx.init(PARAMS), GRADS)


def test_a_packed_tree_of_other_containers_says_why_it_cannot_be_serialized():
  params = gtx.LookaheadParams(PARAMS, PARAMS)  # a NamedTuple as the params' container
  layout = gtx.packed.Layout.from_tree(params)
  tx = gtx.sgd(0.1)
  flat = layout.pack(params)
  exported = jax.export.export(jax.jit(_step(tx)))(flat, tx.init(flat), flat)
  pytest.importorskip("flatbuffers", reason="jax.export's serialize() needs flatbuffers")
  with pytest.raises(ValueError, match="packed tree's layout cannot be serialized"):
    exported.serialize()
