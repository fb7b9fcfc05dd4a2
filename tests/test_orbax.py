"""Checkpoints of gradtx states with orbax-checkpoint, and training resumed bit for bit.

A chain state is an ordinary pytree (named stages, hyperparameters and
schedule counts as arrays), so orbax saves it as is and restores it into the
abstract target ``jax.eval_shape(tx.init, params)``. A state saved from one
chain is moved into an edited chain with :func:`gradtx.carry_state`. The
sharded version of these checks runs on 8 devices in tests/sharding_worker.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import gradtx as gtx

SCHEDULE = gtx.schedules.warmup_cosine_decay_schedule(
    init_value=0.0, peak_value=0.05, warmup_steps=3, decay_steps=12, end_value=1e-3)


def make_tx() -> gtx.Chain:
  """A nested named chain: clip, then adamw with a warmup-cosine learning rate."""
  return gtx.chain(clip=gtx.clip_by_global_norm(1.0),
                   adamw=gtx.adamw(SCHEDULE, weight_decay=0.05))


def init_params() -> dict:
  k1, k2 = jax.random.split(jax.random.key(0))
  return {"dense": {"w": jax.random.normal(k1, (5, 3)), "b": jnp.zeros(3)},
          "scale": jax.random.normal(k2, (3,))}


def _batch(step: int):
  # A different batch at every step, a pure function of the step number.
  kx, ky = jax.random.split(jax.random.fold_in(jax.random.key(1), step))
  return jax.random.normal(kx, (8, 5)), jax.random.normal(ky, (8, 3))


def _loss(params, x, y):
  pred = (x @ params["dense"]["w"] + params["dense"]["b"][None, :]) * params["scale"][None, :]
  return jnp.mean((pred - y) ** 2)


def make_step(tx):

  @jax.jit
  def step(params, state, x, y):
    grads = jax.grad(_loss)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return gtx.apply_updates(params, updates), state

  return step


def train(tx, params, state, start: int, stop: int) -> tuple[dict, gtx.ChainState, list]:
  """Steps ``start .. stop-1``; returns the params after each."""
  step = make_step(tx)
  history = []
  for t in range(start, stop):
    params, state = step(params, state, *_batch(t))
    history.append(params)
  return params, state, history


def abstract_target(tx, params) -> dict:
  return jax.eval_shape(lambda p: {"params": p, "opt_state": tx.init(p)}, params)


def save_and_restore(path, tree, target):
  """Saves ``tree`` with a StandardCheckpointer and restores it into ``target``'s shapes."""
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, tree)
    checkpointer.wait_until_finished()
    return checkpointer.restore(path, target)


def _signature(tree) -> tuple:
  avals = [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(tree)]
  return jax.tree.structure(tree), avals


def assert_trees_equal(actual, expected) -> None:
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  jax.tree.map_with_path(
      lambda path, a, b: np.testing.assert_array_equal(
          a, b, err_msg=jax.tree_util.keystr(path)), actual, expected)


@pytest.fixture(scope="module")
def uninterrupted():
  tx = make_tx()
  params = init_params()
  return train(tx, params, tx.init(params), 0, 8)


def test_standard_checkpointer_resumes_bit_for_bit(tmp_path, uninterrupted):
  tx = make_tx()
  params = init_params()
  params, state, first = train(tx, params, tx.init(params), 0, 4)
  restored = save_and_restore(tmp_path / "step4", {"params": params, "opt_state": state},
                              abstract_target(tx, init_params()))
  # Everything comes back as it was: names, hyperparameters, schedule count, moments.
  assert isinstance(restored["opt_state"], gtx.ChainState)
  assert list(restored["opt_state"]) == ["clip", "adamw"]
  assert_trees_equal(restored, {"params": params, "opt_state": state})
  assert int(restored["opt_state"]["adamw.lr"].hparams.count) == 4
  assert int(restored["opt_state"]["adamw.adam"].count) == 4
  np.testing.assert_array_equal(gtx.hparams(restored["opt_state"])["adamw.lr.learning_rate"],
                                SCHEDULE(3))
  # A fresh process would start from here: new jitted step, restored arrays.
  _, final, rest = train(make_tx(), restored["params"], restored["opt_state"], 4, 8)
  expected_params, expected_state, expected_history = uninterrupted
  for resumed, expected in zip(first + rest, expected_history):
    assert_trees_equal(resumed, expected)
  assert_trees_equal(final, expected_state)


def test_checkpoint_manager_keeps_the_latest_and_resumes(tmp_path, uninterrupted):
  tx = make_tx()
  params = init_params()
  state = tx.init(params)
  options = ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=2)
  with ocp.CheckpointManager(tmp_path / "run", options=options) as manager:
    step = make_step(tx)
    for t in range(5):  # interrupted after step 5; checkpoints at 2 and 4 (0 dropped)
      params, state = step(params, state, *_batch(t))
      manager.save(t + 1, args=ocp.args.StandardSave({"params": params, "opt_state": state}))
    manager.wait_until_finished()
    assert manager.all_steps() == [2, 4]
    latest = manager.latest_step()
    restored = manager.restore(latest, args=ocp.args.StandardRestore(
        abstract_target(tx, init_params())))
  _, final, _ = train(tx, restored["params"], restored["opt_state"], latest, 8)
  assert_trees_equal(final, uninterrupted[1])


def test_hyperparameters_set_by_name_survive_a_checkpoint(tmp_path):
  tx = make_tx()
  params = init_params()
  params, state, _ = train(tx, params, tx.init(params), 0, 2)
  state = gtx.set_hparams(state, {"clip.max_norm": 0.25, "adamw.decay.weight_decay": 0.2,
                                  "adamw.adam.b2": 0.99})
  restored = save_and_restore(tmp_path / "ckpt", state, jax.eval_shape(tx.init, params))
  values = gtx.hparams(restored)
  assert values.keys() == gtx.hparams(state).keys()
  np.testing.assert_array_equal(values["clip.max_norm"], np.float32(0.25))
  np.testing.assert_array_equal(values["adamw.decay.weight_decay"], np.float32(0.2))
  np.testing.assert_array_equal(values["adamw.adam.b2"], np.float32(0.99))
  for name, value in gtx.hparams(state).items():
    assert value.dtype == values[name].dtype, name
  # Same tree, shapes, dtypes and weak types: a jitted step traced for the
  # original state is not traced again for the restored one.
  assert _signature(restored) == _signature(state)


def test_restore_into_an_edited_chain_with_carry_state(tmp_path, uninterrupted):
  """Save from adamw; restore; add a stage in front; keep the moments and the schedule."""
  old_tx = gtx.adamw(SCHEDULE, weight_decay=0.05)
  params = init_params()
  params, state, _ = train(old_tx, params, old_tx.init(params), 0, 4)
  restored = save_and_restore(tmp_path / "old", {"params": params, "opt_state": state},
                              abstract_target(old_tx, init_params()))

  # The edit: a clip stage in front, with a bound the gradients never reach, so
  # the edited chain must continue exactly as the old one would have.
  new_tx = gtx.chain(clip=gtx.clip_by_global_norm(1e6), **old_tx.stages)
  carried, report = gtx.carry_state(restored["opt_state"], new_tx.init(restored["params"]))
  assert report["carried"] == ["adam", "decay", "lr"]
  assert report["fresh"] == ["clip"]
  assert report["dropped"] == []
  assert int(carried["lr"].hparams.count) == 4
  assert_trees_equal(carried["adam"], state["adam"])

  _, edited_final, edited = train(new_tx, restored["params"], carried, 4, 8)
  _, old_final, continued = train(old_tx, params, state, 4, 8)
  # The same arithmetic, but another compiled program (XLA fuses the extra
  # stage differently), so equal to float32 rounding rather than bit for bit.
  for a, b in zip(edited, continued):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9),
               edited_final["adam"], old_final["adam"])
  assert int(edited_final["lr"].hparams.count) == 8


def test_restore_into_a_chain_without_a_stage_drops_it(tmp_path):
  tx = make_tx()
  params = init_params()
  params, state, _ = train(tx, params, tx.init(params), 0, 3)
  restored = save_and_restore(tmp_path / "ckpt", state, jax.eval_shape(tx.init, params))
  without_clip = gtx.chain(adamw=gtx.adamw(SCHEDULE, weight_decay=0.05))
  carried, report = gtx.carry_state(restored, without_clip.init(params))
  assert report["dropped"] == ["clip"]
  assert report["carried"] == ["adamw.adam", "adamw.decay", "adamw.lr"]
  assert_trees_equal(carried["adamw"], state["adamw"])
  with pytest.raises(gtx.StructureError, match="clip"):
    gtx.carry_state(restored, without_clip.init(params), strict=True)
