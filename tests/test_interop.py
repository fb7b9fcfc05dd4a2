"""gradtx inside real training code: flax.nnx, flax's TrainState, equinox, optax.

Each test trains a small model twice, once with a gradtx optimizer and once
with the optax optimizer of the same name and arguments (``lib.adamw(...)``
with ``lib`` either module), through the framework's own training API, and
asserts the parameters agree after every step.

Tolerance. SGD-like rules and schedules agree bit for bit. The adaptive ones
differ by a few float32 ulps of the update: gradtx keeps ``b2`` in the state
as a float32 array and computes ``1 - b2`` from it (0.00099998713 for
``b2=0.999``), where optax computes ``1 - 0.999`` in Python double precision;
through the square root that is ~7e-6 relative on each update. ``RTOL`` and
``ATOL`` allow that and nothing more.

optax itself does not run under the strict dtype promotion of the test suite
(``0.9 ** count`` mixes a Python float with an int32 count), so the optax side
of each comparison runs under ``jax.numpy_dtype_promotion("standard")``; the
gradtx side stays strict.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import gradtx as gtx

RTOL = 2e-5
ATOL = 1e-6
STEPS = 8


def _warmup_cosine(lib):
  return lib.schedules.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=0.02, warmup_steps=3, decay_steps=STEPS, end_value=1e-3)


# The same call on either library: name -> lib -> optimizer.
OPTIMIZERS: dict[str, Callable] = {
    "sgd_momentum": lambda lib: lib.sgd(0.05, momentum=0.9),
    "adam": lambda lib: lib.adam(1e-2),
    "adamw_schedule": lambda lib: lib.adamw(_warmup_cosine(lib), weight_decay=0.1),
    "adamw_masked": lambda lib: lib.adamw(1e-2, weight_decay=0.1, mask=_matrices_only),
    "rmsprop": lambda lib: lib.rmsprop(1e-2),
}


def _matrices_only(params):
  """Weight-decay mask: decay weight matrices, not biases."""
  return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def _promotion(lib) -> contextlib.AbstractContextManager:
  return jax.numpy_dtype_promotion("standard" if lib is optax else "strict")


def _data():
  x = jax.random.normal(jax.random.key(1), (16, 4))
  y = jax.random.normal(jax.random.key(2), (16, 2))
  return x, y


def _assert_trajectories_equal(gradtx_run: list, optax_run: list) -> None:
  assert len(gradtx_run) == len(optax_run) == STEPS
  for step, (ours, theirs) in enumerate(zip(gradtx_run, optax_run)):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(theirs)):
      np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL,
                                 err_msg=f"step {step}, {jax.tree_util.keystr(path)}")


# ----------------------------------------------------------------------------
# flax.nnx.Optimizer


class _NnxMLP(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(4, 8, rngs=rngs)
    self.out = nnx.Linear(8, 2, rngs=rngs)

  def __call__(self, x):
    return self.out(jnp.tanh(self.hidden(x)))


@nnx.jit
def _nnx_step(model, optimizer, x, y):
  loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
  optimizer.update(model, grads)
  return loss


def _nnx_run(lib, name, make_tx=None, promotion=None):
  make_tx = make_tx or OPTIMIZERS[name]
  with jax.numpy_dtype_promotion(promotion) if promotion else _promotion(lib):
    model = _NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, make_tx(lib), wrt=nnx.Param)
    x, y = _data()
    run = []
    for _ in range(STEPS):
      _nnx_step(model, optimizer, x, y)
      run.append(jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    return run, optimizer


@functools.cache
def _nnx_gradtx_run(name):
  return _nnx_run(gtx, name)


@pytest.mark.parametrize("name", ["adam", "adamw_masked", "adamw_schedule", "sgd_momentum"])
def test_nnx_optimizer_matches_optax(name):
  ours, optimizer = _nnx_gradtx_run(name)
  theirs, _ = _nnx_run(optax, name)
  _assert_trajectories_equal(ours, theirs)
  assert int(optimizer.step[...]) == STEPS


def test_nnx_optimizer_state_reads_hyperparameters_by_name():
  _, optimizer = _nnx_gradtx_run("adamw_schedule")
  values = gtx.hparams(optimizer.opt_state)
  assert sorted(values) == ["adam.b1", "adam.b2", "adam.eps", "adam.eps_root",
                            "decay.weight_decay", "lr.learning_rate"]
  # The schedule's value at the last step taken (count STEPS - 1).
  expected = gtx.schedules.warmup_cosine_decay_schedule(0.0, 0.02, 3, STEPS, 1e-3)(STEPS - 1)
  np.testing.assert_allclose(float(values["lr.learning_rate"][...]), float(expected), rtol=1e-6)
  np.testing.assert_allclose(float(values["decay.weight_decay"][...]), 0.1, rtol=1e-7)
  assert int(optimizer.opt_state["adam"].count[...]) == STEPS


def test_nnx_optimizer_hyperparameters_set_by_name_between_steps():
  model = _NnxMLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, gtx.sgd(0.05), wrt=nnx.Param)
  x, y = _data()
  _nnx_step(model, optimizer, x, y)
  # nnx keeps the state's arrays in OptArray variables; set_hparams keeps them so.
  optimizer.opt_state = gtx.set_hparams(optimizer.opt_state, {"lr.learning_rate": 0.0})
  frozen = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  _nnx_step(model, optimizer, x, y)
  after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  jax.tree.map(np.testing.assert_array_equal, after, frozen)
  assert float(gtx.hparams(optimizer.opt_state)["lr.learning_rate"][...]) == 0.0
  assert int(optimizer.step[...]) == 2


def test_nnx_hyperparameter_set_in_a_committed_state_keeps_its_placement():
  # As a bare array does (test_hparams): over a mesh an uncommitted value recompiles the step.
  optimizer = nnx.Optimizer(_NnxMLP(nnx.Rngs(0)), gtx.sgd(0.05), wrt=nnx.Param)
  state = jax.device_put(optimizer.opt_state, jax.devices()[0])
  state = gtx.set_hparams(state, {"lr.learning_rate": 0.25})
  held = state["lr"].hparams["learning_rate"]
  assert type(held) is type(optimizer.opt_state["lr"].hparams["learning_rate"])  # still boxed
  assert float(held[...]) == 0.25 and jax.tree.leaves(held)[0].committed


# ----------------------------------------------------------------------------
# flax.training.train_state.TrainState


def _linen_style_apply(params, x):
  hidden = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"][None, :])
  return hidden @ params["out"]["w"] + params["out"]["b"][None, :]


@jax.jit
def _train_state_step(state, x, y):
  grads = jax.grad(lambda p: jnp.mean((state.apply_fn(p, x) - y) ** 2))(state.params)
  return state.apply_gradients(grads=grads)


def _linen_style_params():
  keys = jax.random.split(jax.random.key(3), 2)
  return {"hidden": {"w": jax.random.normal(keys[0], (4, 8)) * 0.5, "b": jnp.zeros(8)},
          "out": {"w": jax.random.normal(keys[1], (8, 2)) * 0.5, "b": jnp.zeros(2)}}


def _train_state_run(lib, name):
  with _promotion(lib):
    state = train_state.TrainState.create(apply_fn=_linen_style_apply,
                                          params=_linen_style_params(), tx=OPTIMIZERS[name](lib))
    x, y = _data()
    run = []
    for _ in range(STEPS):
      state = _train_state_step(state, x, y)
      run.append(jax.tree.map(np.asarray, state.params))
    return run, state


@pytest.mark.parametrize("name", ["adamw_schedule", "sgd_momentum"])
def test_flax_train_state_matches_optax(name):
  ours, state = _train_state_run(gtx, name)
  theirs, _ = _train_state_run(optax, name)
  _assert_trajectories_equal(ours, theirs)
  assert int(state.step) == STEPS
  assert isinstance(state.opt_state, gtx.ChainState)


def test_a_train_state_given_as_the_optimizer_state_is_named_with_its_opt_state():
  # flax's examples name the TrainState `state`: tx.update(grads, state, params) told the
  # user to move the state into an edited chain with carry_state.
  params = _linen_style_params()
  tx = gtx.adam(0.1)
  state = train_state.TrainState.create(apply_fn=_linen_style_apply, params=params, tx=tx)
  optimizer = nnx.Optimizer(_NnxMLP(nnx.Rngs(0)), tx, wrt=nnx.Param)
  for holder, stage in [(state, tx), (optimizer, tx), (state, gtx.scale_by_adam())]:
    kind = type(holder).__name__
    with pytest.raises(gtx.StructureError,
                       match=rf"got {kind}|the state is an? {kind}") as info:
      stage.update(params, holder, params)
    assert str(info.value).endswith(
        f"; the {kind} given holds the optimizer's state: pass its .opt_state, not the {kind}")
  updates, _ = tx.update(params, state.opt_state, params)
  np.testing.assert_allclose(updates["out"]["w"], -0.1 * np.sign(params["out"]["w"]), rtol=1e-6)


def test_a_train_state_given_to_init_as_the_params_is_named():
  # tx.init(state) made a state with moments for the TrainState's step, params and
  # opt_state, without a word, and the first update then failed on the params' structure.
  params = _linen_style_params()
  tx = gtx.adam(0.1)
  state = train_state.TrainState.create(apply_fn=_linen_style_apply, params=params, tx=tx)
  optimizer = nnx.Optimizer(_NnxMLP(nnx.Rngs(0)), tx, wrt=nnx.Param)
  for holder, stage, its in [(state, tx, " (its .params)"), (optimizer, tx, ""),
                             (state, gtx.scale_by_adam(), " (its .params)")]:
    kind = type(holder).__name__
    with pytest.raises(gtx.StructureError) as info:
      stage.init(holder)
    assert str(info.value) == (
        f"{stage.name}: init was given a {kind}, which holds the optimizer's state: pass the "
        f"parameters{its}, not the {kind}")
  assert jax.tree.structure(tx.init(state.params)) == jax.tree.structure(state.opt_state)


def test_flax_train_state_checkpoint_with_msgpack_resumes_bit_for_bit():
  # flax.serialization.to_bytes / from_bytes, how a TrainState is saved with msgpack:
  # it raised "can not serialize 'ChainState' object" for every gradtx optimizer.
  from flax import serialization  # pylint: disable=import-outside-toplevel
  x, y = _data()
  tx = OPTIMIZERS["adamw_schedule"](gtx)
  state = train_state.TrainState.create(apply_fn=_linen_style_apply,
                                        params=_linen_style_params(), tx=tx)
  for _ in range(3):
    state = _train_state_step(state, x, y)
  fresh = train_state.TrainState.create(apply_fn=_linen_style_apply,
                                        params=_linen_style_params(), tx=tx)
  restored = serialization.from_bytes(fresh, serialization.to_bytes(state))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  assert int(restored.step) == 3
  assert float(gtx.hparams(restored.opt_state)["lr.learning_rate"]) == float(
      gtx.hparams(state.opt_state)["lr.learning_rate"])
  for _ in range(3):
    state, restored = _train_state_step(state, x, y), _train_state_step(restored, x, y)
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
  jax.tree.map(np.testing.assert_array_equal, restored.opt_state, state.opt_state)


# Every kind of node a gradtx state holds: chains, hyperparameters with a schedule's
# count, a monitor's statistics, masks, packed buffers and per-leaf packed statistics.
SERIALIZED = {
    "chain_with_schedule": lambda: gtx.chain(clip=gtx.clip_by_global_norm(1.0),
                                             opt=gtx.adam(gtx.schedules.linear_schedule(
                                                 1e-2, 1e-3, 10))),
    "monitor": lambda: gtx.monitor("norm", "leaf_norms", inner=gtx.sgd(0.1, momentum=0.9)),
    "masked_multi_steps": lambda: gtx.MultiSteps(gtx.masked(gtx.adam(1e-2), _matrices_only), 2),
    "adafactor": lambda: gtx.adafactor(1e-2, min_dim_size_to_factor=2),
}


@pytest.mark.parametrize("packed", [False, True], ids=["tree", "packed"])
@pytest.mark.parametrize("name", list(SERIALIZED))
def test_flax_serialization_round_trips_every_kind_of_state(name, packed):
  from flax import serialization  # pylint: disable=import-outside-toplevel
  params = {"w": jnp.arange(12.0).reshape(4, 3) / 10, "b": jnp.ones(3),
            "v": jnp.full((4, 3), 0.5)}
  if packed:
    params = gtx.packed.Layout.from_tree(params).pack(params)
  tx = SERIALIZED[name]()
  state = tx.init(params)
  for step in range(3):
    grads = jax.tree.map(lambda p, step=step: jnp.sin(p + step), params)
    _, state = tx.update(grads, state, params)
  data = serialization.to_bytes({"params": params, "state": state})
  restored = serialization.from_bytes({"params": params, "state": tx.init(params)}, data)
  assert jax.tree.structure(restored["state"]) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, restored, {"params": params, "state": state})


def test_a_flax_state_dict_reads_like_the_state():
  from flax import serialization  # pylint: disable=import-outside-toplevel
  params = {"w": jnp.ones(2)}
  state = gtx.adam(gtx.schedules.linear_schedule(1e-2, 1e-3, 10)).init(params)
  state_dict = serialization.to_state_dict(state)
  assert list(state_dict) == ["adam", "lr"]
  assert set(state_dict["adam"]) == {"count", "mu", "nu", "hparams"}
  assert set(state_dict["adam"]["hparams"]) == {"b1", "b2", "eps", "eps_root"}
  assert set(state_dict["lr"]["hparams"]) == {"learning_rate", "count"}  # a schedule's count
  packed = gtx.packed.Layout.from_tree(params).pack(params)
  assert list(serialization.to_state_dict(gtx.adam(1e-2).init(packed))["adam"]["mu"]) == [
      "float32"]


def test_flax_serialization_names_a_state_dict_that_does_not_fit():
  from flax import serialization  # pylint: disable=import-outside-toplevel
  params = {"w": jnp.ones(2)}
  saved = serialization.to_bytes(gtx.adam(1e-2).init(params))
  with pytest.raises(ValueError, match=r"does not match the target ChainState: missing "
                                       r"\['decay'\], unexpected \[\]"):
    serialization.from_bytes(gtx.adamw(1e-2).init(params), saved)


def test_a_state_made_before_flax_serialization_is_imported_saves(monkeypatch):
  # The classes were registered with flax where a state was made: a state made before
  # the import raised "can not serialize 'ChainState' object", and restoring into it gave
  # back the raw state dict. Here flax.serialization is imported anew, after both states.
  import flax  # pylint: disable=import-outside-toplevel
  from gradtx import _flax_serialization as registration  # pylint: disable=import-outside-toplevel
  params = {"w": jnp.ones(2)}
  tx = gtx.adam(gtx.schedules.linear_schedule(1e-2, 1e-3, 10))
  target = tx.init(params)
  _, state = tx.update(params, target, params)
  before = flax.serialization
  monkeypatch.delitem(sys.modules, "flax.serialization")
  monkeypatch.setattr(flax, "serialization", before)  # put back after the test
  monkeypatch.setattr(registration, "_registered_with", registration._registered_with)
  if not any(isinstance(f, registration._AfterFlaxImport) for f in sys.meta_path):
    # flax was imported before gradtx in this process, so gradtx put no hook in place.
    monkeypatch.setattr(sys, "meta_path", [registration._AfterFlaxImport(), *sys.meta_path])
  fresh = importlib.import_module("flax.serialization")
  assert fresh is not before
  restored = fresh.from_bytes(target, fresh.to_bytes(state))
  assert isinstance(restored, gtx.ChainState)
  assert int(restored["lr"].hparams.count) == 1
  jax.tree.map(np.testing.assert_array_equal, restored, state)


# ----------------------------------------------------------------------------
# equinox: eqx.filter_jit, eqx.filter_value_and_grad, eqx.apply_updates


def _equinox_run(lib, name):
  with _promotion(lib):
    model = eqx.nn.MLP(4, 2, width_size=8, depth=2, key=jax.random.key(4))
    tx = OPTIMIZERS[name](lib)
    opt_state = tx.init(eqx.filter(model, eqx.is_array))
    x, y = _data()

    @eqx.filter_jit
    def step(model, opt_state):
      def loss(m):
        return jnp.mean((jax.vmap(m)(x) - y) ** 2)
      grads = eqx.filter_grad(loss)(model)
      updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
      return eqx.apply_updates(model, updates), opt_state

    run = []
    for _ in range(STEPS):
      model, opt_state = step(model, opt_state)
      run.append(jax.tree.map(np.asarray, eqx.filter(model, eqx.is_array)))
    return run


@pytest.mark.parametrize("name", ["adamw_masked", "rmsprop"])
def test_equinox_filter_jit_matches_optax(name):
  _assert_trajectories_equal(_equinox_run(gtx, name), _equinox_run(optax, name))


def test_an_unfiltered_equinox_model_is_named_with_the_filter():
  # tx.init(model) without eqx.filter failed inside jnp ("Value '<custom_jvp object>' with
  # dtype object is not a valid JAX array type"), and the model given as the gradients
  # raised an AttributeError without a message; neither named the leaf or the fix.
  model = eqx.nn.MLP(2, 1, width_size=3, depth=1, key=jax.random.key(0))
  tx = gtx.adamw(0.1)
  fix = r"not an array: give init and update the arrays only.*eqx.filter\(model, eqx.is_array\)"
  with pytest.raises(gtx.StructureError,
                     match=r"^adamw: the params at key path .activation hold a custom_jvp, " + fix):
    tx.init(model)
  params = eqx.filter(model, eqx.is_array)
  with pytest.raises(gtx.StructureError, match=r"^adamw: the updates at key path .activation "
                                               r"hold a custom_jvp, " + fix):
    tx.update(model, tx.init(params), params)
  # The unfiltered model as the params of update is fine: its gradient there is None.
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), model)
  np.testing.assert_allclose(updates.layers[0].bias, -0.1 * (1 + 1e-4 * params.layers[0].bias),
                             rtol=1e-6)
  assert updates.activation is None


class _Indexed(eqx.Module):
  """A model with an integer buffer and a key beside its weights, as eqx.nn layers have."""
  w: jax.Array
  index: jax.Array
  key: jax.Array

  def __call__(self, x):
    return jnp.sum((self.w[self.index] * x - 1.0) ** 2)


_WITH_BUFFERS = {
    "sgd+momentum": lambda: gtx.sgd(0.1, 0.9), "adamw": lambda: gtx.adamw(0.1),
    "lamb": lambda: gtx.lamb(0.1), "adafactor": lambda: gtx.adafactor(0.1),
    "clip+adam": lambda: gtx.chain(clip=gtx.clip_by_global_norm(1.0), adam=gtx.adam(0.1)),
    "muon": lambda: gtx.contrib.muon(0.1),
}


@pytest.mark.parametrize("name", list(_WITH_BUFFERS))
def test_integer_buffers_and_keys_of_an_equinox_model_are_left_alone(name):
  # eqx.filter(model, eqx.is_array) keeps the buffer and the key, eqx.filter_grad gives
  # them None: the state had integer moments for them and every stage refused the None
  # (optax's adam does too). Now they get no state and no step, and the weights train
  # exactly as they do without them.
  x = jnp.linspace(0.5, 2.0, 4)
  model = _Indexed(jnp.linspace(-1.0, 1.0, 4), jnp.array([3, 2, 1, 0]), jax.random.key(0))
  alone = {"w": model.w}

  def run(make_grads, params, steps=4):
    tx = _WITH_BUFFERS[name]()
    state = tx.init(params)
    step = jax.jit(lambda p, s: (lambda u, s: (gtx.apply_updates(p, u), s, u))(
        *tx.update(make_grads(p), s, p)))
    for _ in range(steps):
      params, state, updates = step(params, state)
    return params, state, updates

  params, state, updates = run(lambda m: eqx.filter_grad(lambda m: m(x))(m),
                               eqx.filter(model, eqx.is_array))
  def weights_only(p):
    return jax.grad(lambda p: _Indexed(p["w"], model.index, model.key)(x))(p)

  reference, _, _ = run(weights_only, alone)
  np.testing.assert_array_equal(params.w, reference["w"])
  np.testing.assert_array_equal(params.index, model.index)
  np.testing.assert_array_equal(jax.random.key_data(params.key), jax.random.key_data(model.key))
  assert updates.index is None and updates.key is None
  integer_state = [leaf for leaf in jax.tree.leaves(state)
                   if leaf.ndim and not jnp.issubdtype(leaf.dtype, jnp.inexact)]
  assert integer_state == [], "a moment was kept for the buffer"


def test_lbfgs_steps_an_equinox_model_filtered_to_its_float_leaves():
  # eqx.filter(model, eqx.is_inexact_array) gives None for the buffer and the key: lbfgs
  # refused the None ("left out of the step"). It now takes the steps it takes on the
  # weights alone, and value_fn gets the filtered tree, None included.
  x = jnp.linspace(0.5, 2.0, 4)
  model = _Indexed(jnp.linspace(-1.0, 1.0, 4), jnp.array([3, 2, 1, 0]), jax.random.key(0))

  def loss(m):
    return m(x) + jnp.sum(m.w ** 4)

  def run(params, value_fn, steps=3):
    tx = gtx.lbfgs()
    state = tx.init(params)

    @jax.jit
    def step(params, state):
      value, grad = jax.value_and_grad(value_fn)(params)
      updates, state = tx.update(grad, state, params, value=value, grad=grad,
                                 value_fn=value_fn)
      return gtx.apply_updates(params, updates), state, updates

    for _ in range(steps):
      params, state, updates = step(params, state)
    return params, updates

  params, updates = run(eqx.filter(model, eqx.is_inexact_array),
                        lambda p: loss(eqx.combine(p, model)))
  reference, _ = run({"w": model.w},
                     lambda p: loss(_Indexed(p["w"], model.index, model.key)))
  assert params.index is None and params.key is None
  assert updates.index is None and updates.key is None
  np.testing.assert_array_equal(params.w, reference["w"])
  assert not np.array_equal(params.w, model.w)


_ON_THEIR_OWN = {
    "multi_steps": lambda: gtx.multi_steps(gtx.adam(0.1), 2),
    "masked": lambda: gtx.masked(gtx.scale_by_adam(), lambda p: jax.tree.map(lambda _: True, p)),
    "apply_if_finite": lambda: gtx.apply_if_finite(gtx.adam(0.1), 3),
    "lookahead": lambda: gtx.lookahead(gtx.adam(0.1), 2, 0.5),
    "scale_by_adam": gtx.scale_by_adam,
}


@pytest.mark.parametrize("name", list(_ON_THEIR_OWN))
def test_a_wrapper_or_primitive_on_its_own_leaves_integer_buffers_alone(name):
  # Only a chain masked them: a wrapper or primitive used on its own kept integer moments
  # for the buffer and the key, and refused their None gradients. Each now steps the
  # weights as it does without them, and the whole model as its chain does.
  x = jnp.linspace(0.5, 2.0, 4)
  model = _Indexed(jnp.linspace(-1.0, 1.0, 4), jnp.array([3, 2, 1, 0]), jax.random.key(0))
  def grad(p):
    if isinstance(p, gtx.LookaheadParams):  # lookahead's params: a (fast, slow) pair
      p = p.fast  # whose gradient it takes
    return eqx.filter_grad(lambda m: m(x))(eqx.combine(p, model))

  def run(tx, params, steps=4):  # multi_steps applies at every 2nd
    state, updates = tx.init(params), None
    for _ in range(steps):
      updates, state = tx.update(grad(params), state, params)
    return updates, state

  params = eqx.filter(model, eqx.is_array)
  if name == "lookahead":
    params = gtx.LookaheadParams(params, params)
  updates, state = run(_ON_THEIR_OWN[name](), params)
  in_a_chain, _ = run(gtx.chain(opt=_ON_THEIR_OWN[name]()), params)
  models = [updates] if name != "lookahead" else [updates.fast, updates.slow]
  for m in models:
    assert m.index is None and m.key is None
    assert m.w.shape == (4,) and np.all(np.asarray(m.w) != 0)
  chained = [in_a_chain] if name != "lookahead" else [in_a_chain.fast, in_a_chain.slow]
  for m, c in zip(models, chained):
    np.testing.assert_array_equal(m.w, c.w)
  integer_state = [leaf for leaf in jax.tree.leaves(state)
                   if leaf.ndim and not jnp.issubdtype(leaf.dtype, jnp.inexact)]
  assert integer_state == [], "a moment was kept for the buffer"


def test_float0_gradients_of_integer_params_step_nothing():
  # jax.grad(..., allow_int=True) gives an integer input a float0 cotangent.
  params = {"w": jnp.ones(3), "n": jnp.array([1, 2])}
  grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2) * jnp.sum(p["n"]).astype(jnp.float32),
                   allow_int=True)(params)
  tx = gtx.adam(0.1)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert updates["n"] is None
  np.testing.assert_allclose(updates["w"], -0.1 * jnp.ones(3), rtol=1e-6)
  new = gtx.apply_updates(params, updates)
  np.testing.assert_array_equal(new["n"], params["n"])
  np.testing.assert_array_equal(gtx.apply_updates(params, grads)["n"], params["n"])


# ----------------------------------------------------------------------------
# Stages across libraries.


def _quadratic_run(tx, promotion: str):
  """STEPS steps on a fixed quadratic whose gradient norm exceeds the clip."""
  target = {"a": jnp.linspace(-3.0, 3.0, 6), "b": jnp.full((2, 3), 2.5)}
  params = jax.tree.map(jnp.zeros_like, target)
  with jax.numpy_dtype_promotion(promotion):
    state = tx.init(params)

    @jax.jit
    def step(params, state):
      grads = jax.tree.map(lambda p, t: 2.0 * (p - t), params, target)
      updates, state = tx.update(grads, state, params)
      return gtx.apply_updates(params, updates), state

    run = []
    for _ in range(STEPS):
      params, state = step(params, state)
      run.append(jax.tree.map(np.asarray, params))
  return run, state


def _optax_reference():
  return _quadratic_run(optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(),
                                    optax.scale_by_learning_rate(0.1)), "standard")[0]


def test_optax_transformation_as_a_gradtx_stage():
  tx = gtx.chain(clip=optax.clip_by_global_norm(1.0), adam=gtx.scale_by_adam(),
                 lr=gtx.scale_by_learning_rate(0.1))
  run, state = _quadratic_run(tx, "standard")
  _assert_trajectories_equal(run, _optax_reference())
  # The optax stage keeps optax's own state under its name; gradtx stages read by name.
  assert isinstance(state["clip"], optax.EmptyState)
  assert sorted(gtx.hparams(state)) == ["adam.b1", "adam.b2", "adam.eps", "adam.eps_root",
                                        "lr.learning_rate"]
  assert "clip=" in repr(tx)


def test_gradtx_transformation_as_an_optax_stage():
  tx = optax.chain(optax.clip_by_global_norm(1.0), gtx.scale_by_adam(),
                   optax.scale_by_learning_rate(0.1))
  run, state = _quadratic_run(tx, "standard")
  _assert_trajectories_equal(run, _optax_reference())
  assert isinstance(state[1], gtx.ScaleByAdamState)
  assert int(state[1].count) == STEPS


def test_gradtx_chain_with_optax_stage_drives_nnx_optimizer():
  """A mixed chain (optax clip inside a gradtx chain) inside nnx.Optimizer."""

  def mixed(lib):
    if lib is optax:
      return optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(1e-2, weight_decay=0.1))
    return gtx.chain(clip=optax.clip_by_global_norm(0.5),
                     adamw=gtx.adamw(1e-2, weight_decay=0.1))

  # optax's clip runs inside the gradtx chain, so this side needs optax's promotion too.
  ours, optimizer = _nnx_run(gtx, "mixed", mixed, promotion="standard")
  theirs, _ = _nnx_run(optax, "mixed", mixed)
  _assert_trajectories_equal(ours, theirs)
  assert sorted(gtx.hparams(optimizer.opt_state))[0] == "adamw.adam.b1"


class _WithNone(eqx.Module):
  """A model whose leaf without a gradient (None, a Python int) sits before a weight."""
  w: jax.Array
  n: int
  v: jax.Array


@pytest.mark.parametrize("case", ["none_gradient", "masked", "masked_packed"])
def test_noise_after_a_leaf_without_a_gradient_draws_what_optax_draws(case):
  # The key is split once per leaf, as optax does; a masked-out leaf (a None gradient, or one
  # gtx.masked leaves out, in tree or packed mode) took a sub-key of its own, where optax's
  # tree has no leaf, so every leaf after it drew other noise than optax's.
  params = _WithNone(jnp.ones(2), 3, jnp.full(3, 2.0))
  grads = _WithNone(jnp.full(2, 0.5), None, jnp.full(3, -1.0))
  mask = _WithNone(False, False, True)
  if case == "masked_packed":  # packed mode has no None: a dict of the two weights
    params, grads = ({"w": tree.w, "v": tree.v} for tree in (params, grads))
    mask = {"w": True, "v": False}  # w ("v" < "w" in leaf order) is after the masked leaf
  def make(lib):
    noise = lib.add_noise(0.1, 0.55, key=0)
    return noise if case == "none_gradient" else lib.masked(noise, mask)

  def run(lib, params, grads):
    with _promotion(lib):
      tx = make(lib)
      state = tx.init(params)
      for _ in range(2):
        updates, state = tx.update(grads, state, params)
    return updates

  theirs = run(optax, params, grads)
  if case == "masked_packed":
    layout = gtx.packed.Layout.from_tree(params)
    ours = layout.unpack(run(gtx, layout.pack(params), layout.pack(grads)))
    np.testing.assert_array_equal(ours["w"], theirs["w"])
    np.testing.assert_array_equal(ours["v"], grads["v"])
    return
  ours = run(gtx, params, grads)
  np.testing.assert_array_equal(ours.v, theirs.v)
  np.testing.assert_array_equal(ours.w, theirs.w)
  assert ours.n is None


def test_an_extra_argument_optax_drops_before_a_gradtx_stage_is_named_with_the_fix():
  # optax.chain passes value= only to optax's own GradientTransformationExtraArgs type: the
  # gradtx stage was told to pass the loss it had been given. The error now says why, and the
  # fix it gives steps as optax's own reduce_on_plateau does.
  params = {"w": jnp.array([1.0, -2.0])}
  grads = {"w": jnp.ones(2)}
  plateau = gtx.reduce_on_plateau(factor=0.5, patience=1)
  tx = optax.chain(gtx.sgd(0.1), plateau)
  with pytest.raises(gtx.MissingArgumentError,
                     match=r"reduce_on_plateau needs the loss.*Passed it, and still told so\? "
                           r"optax.chain and optax's wrappers .* "
                           r"optax.GradientTransformationExtraArgs\(\*tx\)"):
    tx.update(grads, tx.init(params), params, value=jnp.float32(1.0))
  # flax's TrainState.apply_gradients passes none: its keywords replace the state's fields.
  state = train_state.TrainState.create(apply_fn=None, params=params,
                                        tx=gtx.chain(sgd=gtx.sgd(0.1), plateau=plateau))
  with pytest.raises(gtx.MissingArgumentError,
                     match=r"flax's TrainState.apply_gradients passes none .*call "
                           r"state.tx.update\(grads, state.opt_state, state.params, value=loss\) "
                           r"yourself"):
    state.apply_gradients(grads=grads, value=jnp.float32(1.0))

  def run(stage):
    tx = optax.chain(gtx.sgd(0.1), stage)
    state = tx.init(params)
    update = jax.jit(tx.update)  # eagerly, optax's lax.cond compiled again at each step
    for loss in [3.0, 2.0, 2.0, 2.0]:
      updates, state = update(grads, state, params, value=jnp.float32(loss))
    return updates

  ours = run(optax.GradientTransformationExtraArgs(*plateau))
  with _promotion(optax):
    theirs = run(optax.contrib.reduce_on_plateau(factor=0.5, patience=1))
  np.testing.assert_array_equal(ours["w"], theirs["w"])
  np.testing.assert_array_equal(ours["w"], jnp.full(2, -0.025))


def test_a_transformation_survives_cloudpickle_as_optax_s_does():
  # cloudpickle (Ray, joblib, a notebook's worker pool) pickles closures by value with the
  # globals they name: every gradtx transformation named the ContextVar that marks the
  # outermost update, and raised "cannot pickle '_contextvars.ContextVar' object".
  cloudpickle = pytest.importorskip("cloudpickle")
  params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.5, 0.1])}
  grads = jax.tree.map(lambda p: jnp.sin(p) + 0.1, params)
  tx = OPTIMIZERS["adamw_masked"](gtx)
  copied = cloudpickle.loads(cloudpickle.dumps(tx))
  ours, _ = copied.update(grads, copied.init(params), params)
  with _promotion(optax):
    reference = OPTIMIZERS["adamw_masked"](optax)
    theirs, _ = reference.update(grads, reference.init(params), params)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
  jax.tree.map(np.testing.assert_array_equal, ours, tx.update(grads, tx.init(params), params)[0])


@pytest.mark.parametrize("name", ["lbfgs", "backtracking"])
def test_a_line_search_survives_cloudpickle_as_optax_s_does(name):
  # A line search's programs are kept per value_fn (gradtx.core.jit_per_static), in an
  # lru_cache of a local function, which cloudpickle reached through the transformation's
  # closures and refused: "Can't pickle local object 'jit_per_static.<locals>.jitted'".
  cloudpickle = pytest.importorskip("cloudpickle")
  params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.5, 0.1])}

  def value_fn(p):
    return sum(jnp.sum(jnp.cosh(x)) for x in jax.tree.leaves(p))

  def run(lib, tx, steps=3):
    p, state = params, tx.init(params)
    for _ in range(steps):
      value, grads = jax.value_and_grad(value_fn)(p)
      updates, state = tx.update(grads, state, p, value=value, grad=grads, value_fn=value_fn)
      p = lib.apply_updates(p, updates)
    return p

  def build(lib):
    if name == "lbfgs":
      return lib.lbfgs()
    return lib.chain(lib.sgd(1.0), lib.scale_by_backtracking_linesearch(max_backtracking_steps=15))

  tx = build(gtx)
  copied = cloudpickle.loads(cloudpickle.dumps(tx))
  ours = run(gtx, copied)
  jax.tree.map(np.testing.assert_array_equal, ours, run(gtx, tx))
  with _promotion(optax):
    reference = build(optax)
    theirs = run(optax, cloudpickle.loads(cloudpickle.dumps(reference)))
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("where", ["nnx_state", "state_dict", "optax"])
def test_setting_a_hyperparameter_on_a_state_that_holds_none_says_why(where):
  # It said "the valid names are []": nnx.state(optimizer) and flax's state dict turn the
  # HParams into plain mappings, and an optax state never had them.
  from flax import serialization  # pylint: disable=import-outside-toplevel
  params = {"w": jnp.ones(2)}
  if where == "nnx_state":
    state = nnx.state(nnx.Optimizer(_NnxMLP(nnx.Rngs(0)), gtx.adam(0.1), wrt=nnx.Param))
    state = state["opt_state"]
  elif where == "state_dict":
    state = serialization.to_state_dict(gtx.adam(0.1).init(params))
  else:
    state = gtx.chain(adam=optax.adam(0.1)).init(params)
  with pytest.raises(gtx.HyperparameterError,
                     match=r"unknown hyperparameter 'lr.learning_rate': this state holds no "
                           r"gradtx hyperparameters.*nnx.state\(optimizer\).*optimizer.opt_state"):
    gtx.set_hparams(state, {"lr.learning_rate": 0.5})
  # A gradtx state keeps listing its names, even one whose stages hold no numeric ones.
  with pytest.raises(gtx.HyperparameterError, match=r"the valid names are \[\]"):
    gtx.set_hparams(gtx.scale_by_sign().init(params), {"lr.learning_rate": 0.5})
  assert gtx.hparams(gtx.adam(0.1).init(params))["lr.learning_rate"] == np.float32(0.1)


@pytest.mark.parametrize("where", ["nnx_state", "state_dict"])
def test_reading_hyperparameters_of_a_state_turned_into_plain_mappings_says_why(where):
  # hparams and stats gave {}: nnx.state(optimizer) and flax's state dict keep the values but
  # turn every node into a dict of its children and drop empty ones, so stage names and a
  # stage state's fields read alike ({'inner_state': {'lr': ...}} is a masked stage, or a
  # stage named inner_state) and the ranges are gone; a logger of gtx.hparams logged nothing.
  from flax import serialization  # pylint: disable=import-outside-toplevel
  tx = gtx.chain(m=gtx.monitor("norm"), opt=gtx.masked(gtx.adam(0.1), {"w": True, "b": False}))
  if where == "nnx_state":
    model = _NnxMLP(nnx.Rngs(0))
    tx = gtx.chain(m=gtx.monitor("norm"), opt=gtx.adam(0.1))
    state = nnx.state(nnx.Optimizer(model, tx, wrt=nnx.Param))
  else:
    state = serialization.to_state_dict(tx.init({"w": jnp.ones(2), "b": jnp.ones(())}))
  for read in (gtx.hparams, gtx.stats):
    with pytest.raises(gtx.HyperparameterError,
                       match=r"gradtx state turned into plain mappings.*nnx.state\(optimizer\)"
                             r".*optimizer.opt_state"):
      read(state)
  # A state that never held any (an optax stage's) has none to read.
  assert gtx.hparams(gtx.chain(adam=optax.adam(0.1)).init({"w": jnp.ones(2)})) == {}


_MAPPED_BY_OPTAX = {
    "masked": lambda: gtx.masked(gtx.adam(0.1), {"w": True, "b": False}),
    "partition": lambda: gtx.partition({"a": gtx.adam(0.1), "s": gtx.sgd(0.1, 0.9)},
                                       {"w": "a", "b": "s"}),
    "adamw_mask_tree": lambda: gtx.adamw(0.1, mask={"w": True, "b": False}),
    "muon": lambda: gtx.contrib.muon(0.1),
}


def _shape_text(p):
  return "x".join(map(str, p.shape))


@pytest.mark.parametrize("name", list(_MAPPED_BY_OPTAX))
def test_optax_tree_map_params_maps_a_gradtx_state_as_gradtx_s_does(name):
  # optax.tree_map_params calls init on a leafless placeholder of its own: a gradtx wrapper
  # matched its mask or labels against it and raised "the mask has key path ['b'], which the
  # params do not have" (optax's own masked and partition pass it through).
  params = {"w": jnp.ones((4, 2)), "b": jnp.ones(2)}
  tx = _MAPPED_BY_OPTAX[name]()
  state = tx.init(params)
  theirs = optax.tree_map_params(tx, _shape_text, state,
                                 transform_non_params=lambda _: "other")
  ours = gtx.tree_utils.tree_map_params(tx, _shape_text, state,
                                        transform_non_params=lambda _: "other")
  assert jax.tree.structure(theirs) == jax.tree.structure(ours)
  assert jax.tree.leaves(theirs) == jax.tree.leaves(ours)
  assert "4x2" in jax.tree.leaves(theirs)  # the moments were mapped


def test_an_equinox_module_of_bools_is_a_mask_tree_not_a_mask_function():
  # jax.tree.map over eqx.filter(model, eqx.is_array) gives a mask or labels tree that is an
  # eqx.nn.MLP, which is callable: gradtx called it on the params, and it failed in the MLP's
  # __call__ ("unsupported operand type(s) for @"). optax's masked takes it as a tree.
  model = eqx.nn.MLP(3, 2, width_size=4, depth=1, key=jax.random.key(0))
  params = eqx.filter(model, eqx.is_array)
  grads = jax.tree.map(lambda p: 0.5 * p + 0.1, params)
  matrices = jax.tree.map(lambda p: p.ndim > 1, params)
  labels = jax.tree.map(lambda p: "adam" if p.ndim > 1 else "sgd", params)
  assert callable(matrices) and callable(labels)

  def run(tx):
    state = tx.init(params)
    p = params
    for _ in range(2):
      updates, state = tx.update(grads, state, p)
      p = eqx.apply_updates(p, updates)
    return p

  cases = [
      (lambda lib: lib.adamw(0.1, weight_decay=0.5, mask=matrices), None),
      (lambda lib: lib.partition({"adam": lib.adam(0.1), "sgd": lib.sgd(0.1)}, labels),
       lambda lib: lib.partition({"adam": lib.adam(0.1), "sgd": lib.sgd(0.1)},
                                 lambda p: jax.tree.map(lambda x: "adam" if x.ndim > 1 else "sgd",
                                                        p))),
      (lambda lib: lib.selective_transform(lib.sgd(0.1), freeze_mask=matrices),
       lambda lib: lib.selective_transform(
           lib.sgd(0.1), freeze_mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))),
  ]
  for make, as_function in cases:
    ours = run(make(gtx))
    if as_function is None:  # optax's adamw takes the module as a tree too
      with _promotion(optax):
        theirs = run(make(optax))
    else:  # the same mask or labels as a function of the params
      theirs = run(as_function(gtx))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
      np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert any(not np.allclose(a, b) for a, b in
               zip(jax.tree.leaves(ours), jax.tree.leaves(params)))


def test_two_gradtx_stages_side_by_side_in_an_optax_chain_are_named_where_they_clash():
  # gtx.hparams of optax.chain(gtx.sgd(...), gtx.adam(...)) found lr.learning_rate twice and
  # said "a wrapper's and those of a stage it wraps", which neither is.
  params = {"w": jnp.ones(3)}
  state = optax.chain(gtx.sgd(0.1), gtx.adam(0.2)).init(params)
  with pytest.raises(gtx.HyperparameterError,
                     match=r"two hyperparameters are both named 'lr.learning_rate', at "
                           r"\[0\]\['lr'\].hparams and \[1\]\['lr'\].hparams of the state: "
                           r"stages side by side .*compose them with gtx.chain"):
    gtx.hparams(state)
  named = gtx.hparams(gtx.chain(sgd=gtx.sgd(0.1), adam=gtx.adam(0.2)).init(params))
  assert float(named["sgd.lr.learning_rate"]) == np.float32(0.1)
  assert float(named["adam.lr.learning_rate"]) == np.float32(0.2)
  # One gradtx stage in an optax chain reads and sets by its own names, as before.
  one = optax.chain(optax.clip(1.0), gtx.adam(0.2)).init(params)
  one = gtx.set_hparams(one, {"lr.learning_rate": 0.5})
  assert float(gtx.hparams(one)["lr.learning_rate"]) == 0.5


def _forward(w, b, x):
  return x @ w + b


def test_a_jax_partial_of_bools_or_labels_is_a_mask_tree_and_one_of_a_threshold_a_function():
  # Params held in a jax.tree_util.Partial (a model's apply with its weights bound) give
  # a Partial mask or labels tree under jax.tree.map; gradtx called it as the mask
  # function, and it failed in the model ("_forward() takes 3 positional arguments but 4
  # were given"). optax's masked takes it as a tree. A Partial binding a threshold to a
  # mask function is still called.
  params = jax.tree_util.Partial(_forward, jnp.ones((2, 3)), jnp.ones(3))
  grads = jax.tree_util.Partial(_forward, jnp.full((2, 3), 0.5), jnp.full(3, -0.5))
  matrices = jax.tree.map(lambda p: p.ndim > 1, params)
  labels = jax.tree.map(lambda p: "sgd" if p.ndim > 1 else "zero", params)
  bigger_than = jax.tree_util.Partial(lambda n, p: jax.tree.map(lambda x: x.size > n, p), 3)
  assert not jax.tree.leaves(bigger_than(params))[1]  # the bias, 3 entries, is left out
  with _promotion(optax):
    theirs, _ = optax.masked(optax.sgd(0.5), matrices).update(
        grads, optax.masked(optax.sgd(0.5), matrices).init(params), params)
  # (transformation, its update of the bias: passed through where masked out, or zeroed)
  for tx, bias in [(gtx.masked(gtx.sgd(0.5), matrices), -0.5),
                   (gtx.masked(gtx.sgd(0.5), bigger_than), -0.5),
                   (gtx.partition({"sgd": gtx.sgd(0.5), "zero": gtx.set_to_zero()}, labels), 0.0)]:
    for update in (tx.update, jax.jit(tx.update)):
      ours, _ = update(grads, tx.init(params), params)
      assert isinstance(ours, jax.tree_util.Partial) and ours.func is _forward
      np.testing.assert_array_equal(ours.args[0], np.full((2, 3), -0.25))
      np.testing.assert_array_equal(ours.args[1], np.full(3, bias))
  np.testing.assert_array_equal(theirs.args[0], np.full((2, 3), -0.25))
  np.testing.assert_array_equal(theirs.args[1], np.full(3, -0.5))
