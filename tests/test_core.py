"""The protocol: apply_updates, identity, stateless, chains, repr, hyperparameter plumbing."""

import collections
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

import gradtx as gtx


def test_apply_updates_keeps_each_parameter_dtype():
  params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32), "c": None}
  updates = {"a": jnp.full(3, 0.5, jnp.float32), "b": jnp.full(2, -1.0), "c": None}
  new = gtx.apply_updates(params, updates)
  assert new["a"].dtype == jnp.bfloat16 and new["b"].dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(new["a"], np.float32), [1.5, 1.5, 1.5])
  np.testing.assert_array_equal(new["b"], [0.0, 0.0])
  assert new["c"] is None


def test_apply_updates_names_itself_the_mismatched_key_path_and_the_shapes():
  # The messages named neither apply_updates nor, for a user with several calls in a
  # step (apply_updates, incremental_update), which of them refused.
  with pytest.raises(gtx.StructureError, match=r"^apply_updates: updates and params differ in "
                     r"structure: key path \['b'\] is in params but not in updates$"):
    gtx.apply_updates({"a": jnp.ones(1), "b": jnp.ones(1)}, {"a": jnp.ones(1)})
  with pytest.raises(gtx.StructureError, match=r"^apply_updates: updates and params differ in "
                     r"shape at key path \['x'\]\['a'\]: \(2,\) in updates, \(1,\) in params$"):
    gtx.apply_updates({"x": {"a": jnp.ones(1)}}, {"x": {"a": jnp.ones(2)}})
  with pytest.raises(gtx.StructureError, match=r"^apply_updates: .* at key path \['a'\]: \(3,\) "
                     r"in updates, \(2, 3\) in params"):  # would broadcast
    jax.jit(gtx.apply_updates)({"a": jnp.ones((2, 3))}, {"a": jnp.ones(3)})


def test_identity_and_stateless():
  tx = gtx.identity()
  g = {"x": jnp.arange(3.0)}
  np.testing.assert_array_equal(tx.update(g, tx.init(g))[0]["x"], [0.0, 1.0, 2.0])

  def shift(updates, params, offset):
    return jax.tree.map(lambda u: u + offset.astype(u.dtype), updates)

  tx = gtx.stateless(shift, offset=(2.0, gtx.NONNEGATIVE))
  state = tx.init(g)
  np.testing.assert_array_equal(tx.update(g, state)[0]["x"], [2.0, 3.0, 4.0])
  assert float(gtx.hparams(state)["offset"]) == 2.0
  with pytest.raises(gtx.HyperparameterError, match=r"offset must be in \[0, inf\), got -1"):
    gtx.stateless(shift, offset=(-1.0, gtx.NONNEGATIVE))


def test_stateless_per_step_derives_the_scalars_fn_takes_and_keeps_the_hyperparameter():
  def shift(updates, params, minus_offset):
    return jax.tree.map(lambda u: u + minus_offset.astype(u.dtype), updates)

  tx = gtx.stateless(shift, per_step=lambda h: {"minus_offset": -h["offset"]},
                     offset=(2.0, gtx.NONNEGATIVE))
  g = {"x": jnp.arange(3.0)}
  state = tx.init(g)
  step = jax.jit(tx.update)
  np.testing.assert_array_equal(step(g, state)[0]["x"], [-2.0, -1.0, 0.0])
  state = gtx.set_hparams(state, {"offset": 0.5})
  updates, state = step(g, state)
  np.testing.assert_array_equal(updates["x"], [-0.5, 0.5, 1.5])
  assert gtx.hparams(state) == {"offset": 0.5}


def test_adam_hyperparameters_held_in_mixed_dtypes():
  # Adam derives its per-step scalars from all four hyperparameters at once;
  # arrays of different dtypes meet there in the widest, under strict promotion too.
  tx = gtx.scale_by_adam(b1=jnp.asarray(0.5, jnp.bfloat16), b2=0.75)
  g = jnp.array([1.0, -2.0])
  state = tx.init(g)
  for _ in range(2):
    u, state = jax.jit(tx.update)(g, state)
  # Constant gradients: m_hat = g and v_hat = g^2, so u = g / (|g| + eps).
  np.testing.assert_allclose(u, g / (jnp.abs(g) + 1e-8), rtol=1e-6)


def _buffers(tx, params):
  """How many of read_once's buffers (each behind an optimization barrier) the traced
  step of ``tx`` holds."""
  jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params), params)
  return str(jaxpr).count("optimization_barrier")


def test_step_reads_held_hyperparameters_directly_and_derived_scalars_once():
  params = {"a": jnp.ones(3), "b": jnp.ones(2)}
  # sgd with momentum uses its two hyperparameters as held: no buffer.
  assert _buffers(gtx.sgd(0.1, momentum=0.9), params) == 0
  # A schedule's value is computed once per step and read from one buffer.
  scheduled = gtx.schedules.linear_schedule(0.1, 0.0, 10)
  assert _buffers(gtx.sgd(scheduled, momentum=0.9), params) == 1
  # Adam's bias-corrected coefficients likewise, for any number of leaves.
  assert _buffers(gtx.adam(1e-3), params) == 1
  assert _buffers(gtx.adam(1e-3), {**params, "c": jnp.ones(4)}) == 1
  # A scheduled rate folded into Adam's coefficient is computed with them, not apart.
  assert _buffers(gtx.adam(scheduled), params) == 1


def test_chain_names_positional_stages_by_primitive_and_makes_them_unique():
  tx = gtx.chain(gtx.scale(2.0), gtx.scale(3.0), lr=gtx.scale_by_learning_rate(0.5))
  assert list(tx.stages) == ["scale", "scale_1", "lr"]
  state = tx.init(jnp.zeros(2))
  u, _ = tx.update(jnp.ones(2), state)
  np.testing.assert_allclose(u, [-3.0, -3.0])
  assert set(gtx.hparams(state)) == {"scale.step_size", "scale_1.step_size", "lr.learning_rate"}


@pytest.mark.parametrize("name", ["a.b", "1x", "class", "with space"])
def test_chain_rejects_bad_stage_names(name):
  with pytest.raises(ValueError, match="must be a Python identifier"):
    gtx.chain(**{name: gtx.identity()})


def test_nested_chains_are_addressed_by_dotted_names():
  inner = gtx.chain(adam=gtx.scale_by_adam(b1=0.8), lr=gtx.scale_by_learning_rate(0.1))
  tx = gtx.chain(clip=gtx.clip(1.0), opt=inner)
  params = {"w": jnp.ones((2, 2))}
  state = tx.init(params)
  assert state["opt.adam"].mu["w"].shape == (2, 2)
  assert state["opt"]["adam"] is state["opt.adam"]
  names = gtx.hparams(state)
  assert float(names["opt.adam.b1"]) == pytest.approx(0.8)
  assert list(names) == ["clip.max_delta", "opt.adam.b1", "opt.adam.b2", "opt.adam.eps",
                         "opt.adam.eps_root", "opt.lr.learning_rate"]
  with pytest.raises(KeyError, match=r"no stage 'nope'.*\['clip', 'opt'\]"):
    state["nope"]


def test_chain_matches_manual_composition():
  params = {"w": jnp.linspace(-1, 1, 6).reshape(2, 3)}
  grads = {"w": jnp.linspace(0.5, -2, 6).reshape(2, 3)}
  tx = gtx.chain(gtx.clip_by_global_norm(1.0), gtx.scale_by_rms(), gtx.scale(-0.1))
  clip, rms, scale = gtx.clip_by_global_norm(1.0), gtx.scale_by_rms(), gtx.scale(-0.1)
  u, _ = tx.update(grads, tx.init(params), params)
  v, _ = clip.update(grads, clip.init(params))
  v, _ = rms.update(v, rms.init(params))
  v, _ = scale.update(v, scale.init(params))
  np.testing.assert_array_equal(u["w"], v["w"])


@pytest.mark.parametrize("lr", [0.1, gtx.schedules.linear_schedule(0.0, 0.2, 4)],
                         ids=["constant", "schedule"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["adam", "nadam"])
def test_chain_folds_the_learning_rate_into_adam(lr, nesterov):
  params = {"w": jnp.linspace(-1, 1, 6).reshape(2, 3), "b": jnp.ones(2)}
  tx = gtx.chain(adam=gtx.scale_by_adam(nesterov=nesterov), lr=gtx.scale_by_learning_rate(lr))
  adam, rate = gtx.scale_by_adam(nesterov=nesterov), gtx.scale_by_learning_rate(lr)
  state, adam_state, rate_state = tx.init(params), adam.init(params), rate.init(params)
  for t in range(6):
    grads = jax.tree.map(lambda p: jnp.cos(p * (t + 1)), params)
    u, state = tx.update(grads, state, params)
    v, adam_state = adam.update(grads, adam_state)
    v, rate_state = rate.update(v, rate_state)
    # One multiplication by c * (-lr) instead of c, then -lr: equal up to rounding.
    for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=0)
    # The learning rate's state advances as it does apart (its schedule's value).
    np.testing.assert_array_equal(state["lr"].hparams["learning_rate"],
                                  rate_state.hparams["learning_rate"])

  def leaf_products(fn, *args):
    # A rule staged for a leaf's shape is a nested jaxpr: counted once per call of it.
    def count(jaxpr):
      total = 0
      for e in jaxpr.eqns:
        inner = [getattr(v, "jaxpr", v) for v in e.params.values() if hasattr(v, "jaxpr")]
        total += (sum(count(j) for j in inner) if inner
                  else e.primitive.name == "mul" and e.outvars[0].aval.ndim > 0)
      return total
    return count(jax.make_jaxpr(fn)(*args).jaxpr)

  # The rate adds no multiplication of a leaf to Adam's; kept apart, one per leaf.
  assert leaf_products(tx.update, grads, state, params) == leaf_products(
      adam.update, grads, adam_state)
  nadam = gtx.chain(adam=gtx.scale_by_adam(nesterov=True), lr=gtx.scale_by_learning_rate(lr))
  alone = gtx.scale_by_adam(nesterov=True)
  # NAdam too: the rate is folded into both of its coefficients.
  assert leaf_products(nadam.update, grads, nadam.init(params), params) == leaf_products(
      alone.update, grads, alone.init(params))
  assert gtx.scale_by_adam().takes_factor and gtx.scale_by_learning_rate(lr).factor


def test_repr_shows_stages_and_hyperparameters():
  tx = gtx.chain(clip=gtx.clip_by_global_norm(1.0), opt=gtx.adam(1e-3, nesterov=True))
  text = repr(tx)
  assert "clip=clip_by_global_norm(max_norm=1)" in text
  assert "opt=nadam(" in text and "nesterov=True" in text
  assert "learning_rate=0.001" in text
  assert "0x" not in text  # no function addresses


def test_mismatched_grads_name_the_stage_and_key_path():
  tx = gtx.chain(clip=gtx.clip(1.0), opt=gtx.adam(1e-3))
  state = tx.init({"w": jnp.ones(2), "b": jnp.ones(1)})
  message = re.escape("stage 'opt.adam': scale_by_adam: updates and state.mu differ in "
                      "structure: key path ['b'] is in state.mu but not in updates")
  with pytest.raises(gtx.StructureError, match=message):
    tx.update({"w": jnp.ones(2)}, state)
  with pytest.raises(gtx.StructureError, match=r"stage 'opt.adam'.*shape at key path \['w'\]"):
    tx.update({"w": jnp.ones(3), "b": jnp.ones(1)}, state)


def test_grads_whose_containers_differ_deep_in_a_large_tree_name_the_key_path_briefly():
  # The same key paths in another container (an OrderedDict or a defaultdict for a dict,
  # a tuple for a list, a static field changed) printed both whole trees' PyTreeDefs:
  # 270,000 characters for 5,000 layers, without saying where they differ.
  params = {f"layer{i:04d}": {"b": jnp.ones(2), "w": jnp.ones(2)} for i in range(5000)}
  tx = gtx.sgd(0.1, momentum=0.9)
  state = tx.init(params)
  prefix = ("stage 'momentum': trace: updates and state.trace differ in structure: the "
            "containers differ at key path ['layer1234']: state.trace has ")
  for other, printed in [
      (collections.OrderedDict(sorted(params["layer1234"].items())),
       "PyTreeDef(CustomNode(OrderedDict[('b', 'w')], [*, *]))"),
      (collections.defaultdict(list, params["layer1234"]),
       "PyTreeDef(CustomNode(defaultdict[(<class 'list'>, ('b', 'w'))], [*, *]))")]:
    with pytest.raises(gtx.StructureError) as error:
      tx.update({**params, "layer1234": other}, state, params)
    assert str(error.value) == (prefix + "PyTreeDef({'b': *, 'w': *}) there, updates has "
                                f"{printed}")
  # A root container of thousands of entries is printed one level deep, and cut short.
  with pytest.raises(gtx.StructureError) as error:
    tx.update(collections.OrderedDict(sorted(params.items())), state, params)
  message = str(error.value)
  assert message.startswith("stage 'momentum': trace: updates and state.trace differ in "
                            "structure: the containers differ: state.trace is PyTreeDef({"
                            "'layer0000': *, 'layer0001': *,")
  assert "{'b': *" not in message and "5000 children" in message and len(message) < 700
  np.testing.assert_array_equal(state["momentum"].trace["layer1234"]["w"], np.zeros(2))


def test_grads_with_a_leaf_where_the_state_has_a_subtree_name_both():
  # Read as a key path only one tree has, the leaf's: "key path ['w'] is in state.mu but
  # not in updates", where the updates do have ['w'] (a subtree), and a None gradient
  # standing for a whole subtree was not named as one.
  params = {"w": jnp.ones(2), "b": jnp.ones(1)}
  tx = gtx.chain(opt=gtx.adam(0.1))
  state = tx.init(params)
  stage = "stage 'opt.adam': scale_by_adam: updates and state.mu differ in structure: "
  with pytest.raises(gtx.StructureError) as error:
    tx.update({"w": {"x": jnp.ones(2)}, "b": jnp.ones(1)}, state, params)
  assert str(error.value) == (stage + "at key path ['w'] state.mu has a leaf of shape (2,) "
                              "and updates a subtree PyTreeDef({'x': *})")
  nested = {"w": {"x": jnp.ones(2), "y": jnp.ones(2)}, "b": jnp.ones(1)}
  with pytest.raises(gtx.StructureError) as error:
    tx.update({"w": jnp.ones(2), "b": jnp.ones(1)}, tx.init(nested), nested)
  assert str(error.value) == (stage + "at key path ['w'] updates has a leaf of shape (2,) "
                              "and state.mu a subtree PyTreeDef({'x': *, 'y': *})")
  with pytest.raises(gtx.StructureError) as error:
    tx.update({"w": None, "b": jnp.ones(1)}, tx.init(nested), nested)
  assert str(error.value) == (
      stage + "at key path ['w'] updates has no array (a None gradient, or a leaf a mask "
      "leaves out) and state.mu a subtree PyTreeDef({'x': *, 'y': *}); "
      + gtx.tree.NO_ARRAY_HERE)


def test_init_of_shape_dtype_structs_is_init_of_zeros_as_in_optax():
  # optax's init takes jax.ShapeDtypeStruct params (its zeros_like does); gradtx's raised
  # TypeError: float() argument must be ... not 'ShapeDtypeStruct'.
  import optax  # pylint: disable=import-outside-toplevel
  structs = {"w": jax.ShapeDtypeStruct((2, 3), jnp.bfloat16),
             "b": jax.ShapeDtypeStruct((3,), jnp.float32),
             "n": jax.ShapeDtypeStruct((2,), jnp.int32)}  # untrainable, as an int array is
  zeros = jax.tree.map(jnp.zeros_like, structs)
  for tx in (gtx.adam(0.1), gtx.adafactor(min_dim_size_to_factor=1), gtx.sgd(0.1, 0.9)):
    got, want = tx.init(structs), tx.init(zeros)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert not isinstance(a, jax.ShapeDtypeStruct) and a.dtype == b.dtype
      np.testing.assert_array_equal(a, b)
  mu = gtx.adam(0.1).init(structs)["adam"].mu
  optax_mu = optax.adam(0.1).init(structs)[0].mu
  for k in ("w", "b"):
    assert mu[k].shape == optax_mu[k].shape and mu[k].dtype == optax_mu[k].dtype


def test_a_numpy_array_of_strings_or_objects_is_named_where_numbers_are_expected():
  # jax refused it inside a jitted helper: "Error interpreting argument to stage as a JAX
  # value ... passed to stage at position 0", naming neither the leaf nor the array's dtype.
  fix = re.escape(gtx.tree.ARRAYS_ONLY)
  floats = {"w": jnp.ones(2)}
  for leaf, held in [(np.array(["0.5", "1"]), r"<U3 \(strings\)"),
                     (np.array([object()]), r"object \(Python objects\)")]:
    with pytest.raises(gtx.StructureError, match=rf"^adam: the params at key path \['s'\] "
                       rf"hold an array of {held}, not numbers: {fix}$"):
      gtx.adam(0.1).init({**floats, "s": leaf})
    with pytest.raises(gtx.StructureError, match=rf"^adam: the updates at key path \['w'\] "
                       rf"hold an array of {held}, not numbers"):
      gtx.adam(0.1).update({"w": leaf}, gtx.adam(0.1).init(floats), floats)
    with pytest.raises(gtx.StructureError, match=rf"^sum_squares: the leaves at key path "
                       rf"\['s'\] hold an array of {held}, not numbers"):
      gtx.tree.global_norm({**floats, "s": leaf})
    # numpy's "could not convert string to float", or cast's of an array of objects.
    with pytest.raises(gtx.StructureError, match=rf"^cast: the leaves at key path \['s'\] "
                       rf"hold an array of {held}, not numbers"):
      gtx.tree.cast({**floats, "s": leaf}, jnp.float32)
  # "AttributeError: 'str' object has no attribute 'astype'"
  with pytest.raises(gtx.StructureError, match=r"^cast: the leaves at key path \['s'\] hold "
                     rf"a str, not an array: {fix}$"):
    gtx.tree.cast({**floats, "s": "x"}, jnp.float32)


def test_float64_numpy_input_without_x64_steps_as_under_jit_and_does_not_warn():
  # jit makes a float64 numpy array float32; an eager step took its float64 for the dtype
  # to compute in, and each cast to it warned that float64 is not available (an error
  # under this suite's filterwarnings). optax's steps on it neither warn nor fail.
  params = {"w": np.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": np.ones(2),
            "step": np.arange(2)}  # an int64 buffer, masked as an int32 one is
  grads = {"w": np.full((2, 3), 0.25), "b": np.array([0.5, -2.0]), "step": None}
  with jax.enable_x64(False):
    for tx in (gtx.sgd(0.1, momentum=0.9), gtx.adamw(0.1)):
      eager, _ = tx.update(grads, tx.init(params), params)
      traced, _ = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
      assert eager["step"] is None
      for k in ("w", "b"):
        assert eager[k].dtype == jnp.float32
        np.testing.assert_array_equal(eager[k], traced[k])


def test_a_none_gradient_of_a_float_param_with_state_is_refused_by_the_stage_holding_it():
  # The moment for 'b' was silently replaced by a MaskedNode (the state changed structure;
  # a later step with a gradient for 'b' failed in jnp with "incompatible shapes").
  params = {"w": jnp.ones(2), "b": jnp.ones(1)}
  grads = {"w": jnp.ones(2), "b": None}
  message = r"stage 'opt.adam': scale_by_adam: .*key path \['b'\]: no array \(a None gradient"
  for tx, stage in [(gtx.chain(opt=gtx.adam(0.1)), "opt.adam"),
                    (gtx.chain(opt=gtx.multi_steps(gtx.sgd(0.1), 2)), "opt"),
                    (gtx.chain(opt=gtx.apply_if_finite(gtx.adam(0.1), 1)), "opt.adam"),
                    # Adafactor's statistics were replaced by MaskedNodes; the next step
                    # with a gradient for 'b' failed with "'MaskedNode' object has no
                    # attribute 'shape'".
                    (gtx.chain(opt=gtx.adafactor(0.1)), "opt.factored_rms")]:
    with pytest.raises(gtx.StructureError, match=rf"stage '{stage}'.*key path \['b'\]: no array"
                       r".*; to keep that leaf fixed, freeze it \(gtx.selective_transform\) or "
                       "give init the params with None there$"):
      tx.update(grads, tx.init(params), params)
    # The other way round: a gradient for a leaf that was None at init.
    with pytest.raises(gtx.StructureError, match=rf"stage '{stage}'.*key path \['b'\]: \(1,\) "
                       r"in updates, no array .*; init was given no array there"):
      tx.update({"w": jnp.ones(2), "b": jnp.ones(1)}, tx.init({**params, "b": None}), params)
  with pytest.raises(gtx.StructureError, match=message):
    jax.jit(gtx.chain(opt=gtx.adam(0.1)).update)(grads, gtx.chain(opt=gtx.adam(0.1)).init(params))
  # A stage that keeps nothing for 'b' leaves it alone, as before: its update is None.
  tx = gtx.sgd(0.1)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert updates["b"] is None
  np.testing.assert_allclose(updates["w"], np.full(2, -0.1))
  tx, pair = gtx.lookahead(gtx.sgd(0.1), 2, 0.5), gtx.LookaheadParams.init_synced(params)
  updates, _ = tx.update(grads, tx.init(pair), pair)
  assert updates.fast["b"] is None and updates.slow["b"] is None
  np.testing.assert_allclose(updates.fast["w"], np.full(2, -0.1))  # the first of 2 fast steps
  np.testing.assert_allclose(updates.slow["w"], np.zeros(2))


def test_state_of_another_chain_is_rejected_with_advice():
  state = gtx.adam(1e-3).init(jnp.ones(2))
  with pytest.raises(gtx.StructureError, match="carry_state"):
    gtx.adamw(1e-3).update(jnp.ones(2), state, jnp.ones(2))


def test_missing_params_is_reported_with_the_stage():
  tx = gtx.adamw(1e-3)
  with pytest.raises(gtx.MissingArgumentError, match=r"stage 'decay'.*needs the parameters"):
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_scheduled_hyperparameter_reads_last_value_and_cannot_be_set():
  schedule = lambda count: 0.1 * (count + 1).astype(jnp.float32)  # noqa: E731
  tx = gtx.sgd(schedule)
  state = tx.init(jnp.zeros(1))
  assert float(gtx.hparams(state)["lr.learning_rate"]) == pytest.approx(0.1)
  for expected in (0.1, 0.2, 0.3):
    u, state = tx.update(jnp.ones(1), state)
    np.testing.assert_allclose(u, [-expected], rtol=1e-6)
    assert float(gtx.hparams(state)["lr.learning_rate"]) == pytest.approx(expected)
  with pytest.raises(gtx.HyperparameterError, match="follows a schedule"):
    gtx.set_hparams(state, {"lr.learning_rate": 1.0})


def test_set_hparams_validates_names_and_ranges():
  state = gtx.adam(1e-3).init(jnp.zeros(2))
  with pytest.raises(gtx.HyperparameterError, match=r"unknown hyperparameter 'adam.beta1'.*'adam.b1'"):
    gtx.set_hparams(state, {"adam.beta1": 0.5})
  with pytest.raises(gtx.HyperparameterError, match=r"adam: b1 must be in \[0, 1\), got 1.5"):
    gtx.set_hparams(state, {"adam.b1": 1.5})


def test_hyperparameters_are_held_in_float64_under_x64_and_results_keep_float32():
  with enable_x64(True):
    tx = gtx.adam(0.1)
    params = jnp.ones(3, jnp.float32)
    state = tx.init(params)
    assert gtx.hparams(state)["adam.b1"].dtype == jnp.float64
    u, state = jax.jit(tx.update)(jnp.ones(3, jnp.float32), state)
    assert u.dtype == jnp.float32 and state["adam"].mu.dtype == jnp.float32
    np.testing.assert_allclose(u, -0.1, rtol=1e-6)


def test_optax_transformation_is_a_stage():
  optax = pytest.importorskip("optax")
  tx = gtx.chain(clip=optax.clip_by_global_norm(1.0), lr=gtx.scale_by_learning_rate(1.0))
  u, _ = tx.update({"a": jnp.array([3.0, 4.0])}, tx.init({"a": jnp.zeros(2)}))
  np.testing.assert_allclose(u["a"], [-0.6, -0.8], rtol=1e-6)


def test_transformation_unpacks_like_optax():
  init, update = gtx.sgd(0.1)
  u, _ = update(jnp.ones(1), init(jnp.zeros(1)))
  np.testing.assert_allclose(u, [-0.1])
  # and indexes like optax's NamedTuple (optax's own tests write masked(...)[0]).
  tx = gtx.masked(gtx.sgd(0.1), {"w": True, "b": False})
  assert len(tx) == 2 and tx[0] is tx.init and tx[1] is tx[-1] is tx.update
  u, _ = tx[1]({"w": jnp.ones(1), "b": jnp.ones(1)}, tx[0]({"w": jnp.zeros(1), "b": jnp.zeros(1)}))
  np.testing.assert_allclose(u["w"], [-0.1])
  np.testing.assert_allclose(u["b"], [1.0])


def test_a_hand_written_stage_in_optax_style_runs_in_a_chain():
  # optax's way to write a stage: GradientTransformation(init_empty_state, update)
  # with an update that takes no extra arguments.
  def double(updates, state, params=None):
    return jax.tree.map(lambda g: 2 * g, updates), state

  stage = gtx.GradientTransformation(gtx.init_empty_state, double)
  with pytest.raises(TypeError):
    stage.update(jnp.ones(2), stage.init(None), loss=1.0)
  tx = gtx.chain(double=gtx.with_extra_args_support(stage), lr=gtx.scale_by_learning_rate(0.5))
  params = {"w": jnp.ones(2)}
  u, state = jax.jit(tx.update)({"w": jnp.array([1.0, -2.0])}, tx.init(params), params)
  np.testing.assert_array_equal(u["w"], [-1.0, 2.0])
  assert gtx.hparams(state) == {"lr.learning_rate": 0.5}
  adam = gtx.adam(0.1)
  assert gtx.with_extra_args_support(adam) is adam  # takes extra arguments already


def test_a_hand_written_stage_returning_optax_style_empty_state_runs_in_a_chain():
  # optax's custom stages return EmptyState() from init; gradtx's EmptyState required
  # its hparams (TypeError: missing 1 required positional argument).
  def init(params):
    return gtx.EmptyState()

  def double(updates, state, params=None):
    return jax.tree.map(lambda g: 2 * g, updates), state

  # (HParams compare by identity, so the states are compared by their tree structure.)
  assert (jax.tree.structure(gtx.EmptyState())
          == jax.tree.structure(gtx.init_empty_state(None))
          == jax.tree.structure(gtx.set_to_zero().init(None)))
  assert gtx.hparams(gtx.EmptyState()) == {}
  stage = gtx.GradientTransformation(init, double)
  tx = gtx.chain(double=stage, lr=gtx.scale_by_learning_rate(0.5))
  params = {"w": jnp.ones(2)}
  u, state = jax.jit(tx.update)({"w": jnp.array([1.0, -2.0])}, tx.init(params), params)
  np.testing.assert_array_equal(u["w"], [-1.0, 2.0])
  assert gtx.hparams(state) == {"lr.learning_rate": 0.5}


def test_a_hand_written_stage_in_optax_style_is_called_without_the_extra_arguments():
  # optax's chain and wrappers adapt such a stage (with_extra_args_support); gradtx's
  # passed it the chain's extra arguments: TypeError, unexpected keyword argument 'loss'.
  def double(updates, state, params=None):
    return jax.tree.map(lambda g: 2 * g, updates), state

  stage = gtx.GradientTransformation(gtx.init_empty_state, double)
  params = {"w": jnp.ones(2)}
  grads = {"w": jnp.array([1.0, -2.0])}
  for tx, expected in [(gtx.chain(double=stage, lr=gtx.scale_by_learning_rate(0.5)), [-1.0, 2.0]),
                       (gtx.named_chain("doubled", double=stage), [2.0, -4.0]),
                       (gtx.masked(stage, {"w": True}), [2.0, -4.0]),
                       (gtx.apply_if_finite(stage, 1), [2.0, -4.0]),
                       (gtx.partition({"all": stage}, "all"), [2.0, -4.0])]:
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params, loss=jnp.float32(1.0))
    np.testing.assert_array_equal(u["w"], expected)


def test_stateless_with_tree_map_maps_grads_and_params_leaf_by_leaf():
  tx = gtx.stateless_with_tree_map(lambda g, p: g + (0 if p is None else p))
  g = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
  p = {"a": jnp.array([10.0, 20.0]), "b": jnp.array(30.0)}
  for update in (tx.update, jax.jit(tx.update)):
    u, _ = update(g, tx.init(p), p)
    np.testing.assert_array_equal(u["a"], [11.0, 22.0])
    np.testing.assert_array_equal(u["b"], 33.0)
  np.testing.assert_array_equal(tx.update(g, tx.init(p))[0]["a"], [1.0, 2.0])  # no params
  with pytest.raises(gtx.StructureError, match=r"\['b'\]"):
    tx.update(g, tx.init(p), {"a": p["a"]})


def _three_adam_steps(learning_rate):
  """Loss after three Adam steps on sum(w^2), the rate set by name in the state."""
  tx = gtx.adam(0.1)
  params = {"w": jnp.ones(3)}
  state = gtx.set_hparams(tx.init(params), {"lr.learning_rate": learning_rate})
  for _ in range(3):
    grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
    updates, state = tx.update(grads, state, params)
    params = gtx.apply_updates(params, updates)
  return jnp.sum(params["w"] ** 2)


def test_hyperparameters_sweep_under_vmap_and_differentiate_under_grad():
  rates = jnp.array([0.01, 0.1, 0.5])
  swept = jax.jit(jax.vmap(_three_adam_steps))(rates)
  # Compiled: one program for the five runs one by one and one for the gradient (run
  # eagerly, they cost 2.3 s of CPU against 1.0 s, mostly per-op kernels).
  three_adam_steps = jax.jit(_three_adam_steps)
  one_by_one = [float(three_adam_steps(r)) for r in rates]
  np.testing.assert_allclose(swept, one_by_one, rtol=1e-6)
  h = 1e-2
  central_difference = (three_adam_steps(0.1 + h) - three_adam_steps(0.1 - h)) / (2 * h)
  np.testing.assert_allclose(jax.jit(jax.grad(_three_adam_steps))(0.1), central_difference,
                             rtol=2e-3)


# Differentiating through optimizer steps (meta-learning): a norm or root of 0 has an
# infinite derivative, which the chain rule met with a zero and made NaN (in optax too).
# DoG's distance travelled and Mechanic's v are 0 at the first step; a leaf the loss does
# not use has v = 0 in prodigy; a zero tree has global norm 0.
THROUGH_STEPS = {
    "dog": lambda: gtx.contrib.dog(),
    "mechanize": lambda: gtx.contrib.mechanize(gtx.sgd(1.0)),
    "prodigy": lambda: gtx.contrib.prodigy(),
    "clip-zero-grads": lambda: gtx.chain(clip=gtx.clip_by_global_norm(1.0), sgd=gtx.sgd(0.1)),
}


def _params_after_steps(tx, loss, p, steps):
  """``p`` after ``steps`` steps of ``tx`` on ``loss``'s gradients: what a meta-gradient or
  a Hessian through the steps differentiates."""
  state = tx.init(p)
  for _ in range(steps):
    updates, state = tx.update(jax.grad(loss)(p), state, p)
    p = gtx.apply_updates(p, updates)
  return p


@pytest.mark.parametrize("name", list(THROUGH_STEPS))
def test_gradients_through_steps_are_finite_and_match_finite_differences(name):
  with enable_x64(True):
    rng = np.random.default_rng(0)
    a, y = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 4)))
    # Every gradient 0 (of the zero leaf "unused", as 2 * unused): the global norm is 0.
    frozen = name == "clip-zero-grads"

    def loss(p):
      if frozen:
        return jnp.sum(p["unused"] ** 2)
      return jnp.sum((a @ p["w"] + p["b"][None] - y) ** 2)

    def after_steps(p):
      p = _params_after_steps(THROUGH_STEPS[name](), loss, p, 4)
      return jnp.sum(p["w"] ** 2) + jnp.sum(p["unused"]) if frozen else loss(p)

    params = {"w": jnp.asarray(rng.normal(size=(3, 4))), "b": jnp.asarray(rng.normal(size=4)),
              # unused has b's shape (its size is not what is tested): fewer eager kernels.
              "unused": jnp.zeros(4)}
    grads = jax.grad(after_steps)(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    direction = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
    h = 1e-6
    shifted = [after_steps(jax.tree.map(lambda p, d: p + s * h * d, params, direction))
               for s in (1, -1)]
    along = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    np.testing.assert_allclose(along, (shifted[0] - shifted[1]) / (2 * h), rtol=1e-6)


def test_gradients_through_adaptive_grad_clip_at_zero_initialised_params_match_differences():
  # AGC's floor max(|theta_i|, eps) is flat at a zero unit (a zero-initialised bias), but
  # the unit's norm was jnp.sqrt's, whose infinite slope at 0 times the zero that the max
  # sends back made the gradient with respect to that unit NaN (optax's too).
  with enable_x64(True):
    def loss(p):
      return jnp.sum((p["w"] - 0.3) ** 2 + jnp.sin(3 * p["w"])) + jnp.sum((p["b"] - 0.3) ** 2)

    def after_steps(p):
      tx = gtx.chain(clip=gtx.adaptive_grad_clip(0.05), sgd=gtx.sgd(0.1))
      return loss(_params_after_steps(tx, loss, p, 2))

    params = {"w": jnp.array([[0.5, -1.0], [2.0, 0.3]]), "b": jnp.zeros(3)}
    direction = {"w": jnp.array([[0.3, 1.0], [-0.6, 0.2]]), "b": jnp.array([1.0, -0.5, 0.7])}
    grads = jax.jit(jax.grad(after_steps))(params)
    along = sum(jnp.vdot(grads[k], direction[k]) for k in params)
    h = 1e-6
    shifted = [jax.jit(after_steps)(jax.tree.map(lambda p, d: p + s * h * d, params, direction))
               for s in (1, -1)]
    assert np.isfinite(along)  # assert_allclose takes NaN for NaN
    np.testing.assert_allclose(along, (shifted[0] - shifted[1]) / (2 * h), rtol=1e-7)


@pytest.mark.parametrize("name", ["clip_by_global_norm", "scale_by_lbfgs"])
def test_forward_mode_through_a_first_step_at_zero_gradients_is_the_identity(name):
  # min(1, c / |g|) (the clip's factor, L-BFGS's first scale with c = 1) divided by a zero
  # norm: the quotient's tangent, -c / 0^2 times the norm's zero tangent, was NaN, and the
  # minimum's 0/1 mask times it kept it, so jax.jvp (jacfwd, hessian) of the step was NaN
  # where its reverse mode and optax's jvp give the identity (the factor is 1 near zero).
  import optax  # pylint: disable=import-outside-toplevel
  grads = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}
  direction = {"a": jnp.array([1.0, -0.5]), "b": jnp.array([[0.25, 2.0], [-3.0, 0.0]])}
  args = (1.0,) if name == "clip_by_global_norm" else ()
  for tx in (getattr(gtx, name)(*args), getattr(optax, name)(*args)):
    _, along = jax.jvp(lambda g, tx=tx: tx.update(g, tx.init(g), g)[0], (grads,), (direction,))
    for key in grads:
      np.testing.assert_array_equal(along[key], direction[key])


@pytest.mark.parametrize("name", ["dog", "mechanize"])
def test_second_derivatives_through_steps_are_finite_and_match_finite_differences(name):
  # DoG's distance travelled and Mechanic's v are 0 at the first step, from any params:
  # the root of 0 there had its first derivative 0 (safe_sqrt's rule), but the rule took
  # the root with jnp.sqrt, whose slope at 0 a Hessian (or any derivative of a
  # meta-gradient) differentiated: every entry of it NaN.
  with enable_x64(True):
    def loss(p):
      return jnp.sum(jnp.linspace(1.0, 2.0, 3) * (p - 0.3) ** 2 + 0.1 * jnp.sin(3 * p))

    def after_steps(p):
      return loss(_params_after_steps(THROUGH_STEPS[name](), loss, p, 2))

    params, direction = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.3, 1.0, -0.6])
    gradient = jax.jit(jax.grad(after_steps))
    along = jax.jit(lambda p, d: jax.jvp(jax.grad(after_steps), (p,), (d,))[1])(params, direction)
    assert np.isfinite(along).all(), along  # assert_allclose takes NaN for NaN
    if name == "dog":
      h = 1e-5
      central_difference = (gradient(params + h * direction)
                            - gradient(params - h * direction)) / (2 * h)
      np.testing.assert_allclose(along, central_difference, rtol=1e-6)
    else:
      # Mechanic's gradient here varies by about 1e-8 under steps of 1e-6 (its scale s
      # starts at 1e-6, eps is 1e-8), too rough for a central difference: the Hessian
      # reverse over reverse instead, equal to rounding (5e-9 apart).
      hessian = jax.jit(jax.jacrev(jax.grad(after_steps)))(params)
      np.testing.assert_allclose(along, hessian @ direction, rtol=1e-7)


def test_safe_roots_second_derivatives_are_0_at_0_and_the_roots_elsewhere():
  # At 0 the rule's derivative is 0 in every mode (grad of grad took jnp.sqrt's infinite
  # slope times the zero cotangent the rule's where gives it: NaN); elsewhere the root's own.
  for root, second in [(gtx.numerics.safe_sqrt, lambda x: -x ** -1.5 / 4),
                       (gtx.numerics.safe_cbrt, lambda x: -2 / 9 * x ** (-5 / 3))]:
    for twice in (jax.grad(jax.grad(root)), jax.jacfwd(jax.jacfwd(root)), jax.hessian(root)):
      np.testing.assert_allclose(jax.vmap(twice)(jnp.array([0.0, 4.0])), [0.0, second(4.0)],
                                 rtol=1e-6)


def test_safe_sqrt_is_jnp_sqrt_with_derivative_zero_at_zero():
  x = jnp.array([0.0, 1e-30, 2.0, 4.0])
  np.testing.assert_array_equal(gtx.numerics.safe_sqrt(x), jnp.sqrt(x))
  slopes = jax.vmap(jax.grad(gtx.numerics.safe_sqrt))(x)
  np.testing.assert_allclose(slopes, [0.0, 0.5e15, 0.5 / np.sqrt(2.0), 0.25], rtol=1e-6)
  assert float(jax.grad(lambda v: gtx.tree.global_norm({"a": v}))(jnp.zeros(3))[0]) == 0.0


def test_ema_moment_of_squares_squares_the_gradient_once():
  # ema_moment took the square for its dtype and lerp_moment took it again: dead in a
  # jitted step, but an operation dispatched twice per leaf of an eager one.
  x = jnp.ones(3)
  jaxpr = jax.make_jaxpr(lambda g, m: gtx.numerics.ema_moment(g, m, jnp.float32(0.9), 2))(x, x)
  assert [e.primitive.name for e in jaxpr.eqns].count("square") == 1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_an_eager_moment_of_squares_is_the_traced_one_bit_for_bit(dtype):
  # Eagerly, the Inf-keeping sum is one compiled kernel (core.one_kernel_when_eager): it
  # must round as the separate operations do, Inf, NaN and subnormals included.
  rng = np.random.default_rng(0)
  g = rng.normal(size=64) * 10.0 ** rng.integers(-30, 30, 64)
  m = np.abs(rng.normal(size=64)) * 10.0 ** rng.integers(-30, 30, 64)
  g[:6], m[:6] = [0.0, np.inf, np.nan, 1e-40, 3e38, 1.0], [np.inf, np.inf, 1.0, 1e-41, 0.0, np.nan]
  with np.errstate(over="ignore"):
    g, m = jnp.asarray(g, dtype), jnp.asarray(m, dtype)
  take = jnp.asarray(0.1, dtype)
  for order, squares in ((2, False), (1, True)):
    def moment(g, m, take, order=order, squares=squares):
      return gtx.numerics.lerp_moment(g, m, take, order, squares=squares)
    eager = moment(g, m, take)
    with jax.disable_jit():  # each operation on its own, the kernel's included
      op_by_op = moment(g, m, take)
    assert eager.dtype == op_by_op.dtype == dtype
    np.testing.assert_array_equal(np.asarray(eager).view(np.uint8),
                                  np.asarray(op_by_op).view(np.uint8))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64])
def test_an_eager_adam_denominator_is_the_traced_one_bit_for_bit(dtype):
  # Eagerly, sqrt(v + eps_root) + eps is one compiled kernel (core.one_kernel_when_eager):
  # it must round as the three operations do, Inf, NaN and subnormals included.
  rng = np.random.default_rng(1)
  v = np.abs(rng.normal(size=64)) * 10.0 ** rng.integers(-40, 38, 64)
  v[:6] = [0.0, np.inf, np.nan, 1e-41, 3e38, 1e-45]
  with enable_x64(dtype == jnp.float64):
    for eps, eps_root in ((1e-8, 2.0 ** -126), (1e-6, 1e-8), (0.0, 0.5)):
      with np.errstate(over="ignore"):
        args = tuple(jnp.asarray(x, dtype) for x in (v, eps, eps_root))
      eager = gtx.numerics.adam_denominator(*args)
      with jax.disable_jit():  # each operation on its own, the kernel's included
        op_by_op = gtx.numerics.adam_denominator(*args)
      assert eager.dtype == op_by_op.dtype == dtype
      np.testing.assert_array_equal(np.asarray(eager).view(np.uint8),
                                    np.asarray(op_by_op).view(np.uint8))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_an_eager_novograd_step_compiles_its_leaf_kernels_once_and_keeps_its_values(dtype, compiles):
  # Eagerly each leaf's rule is one compiled kernel (its operations one by one made an
  # eager step 1.3x optax's): compiled at the first step, none after, and the values
  # those of the operations one by one but for the fused products' last bits.
  rng = np.random.default_rng(2)
  params = {"w": jnp.asarray(rng.normal(size=(5, 3)), dtype), "b": jnp.asarray(rng.normal(size=3), dtype)}
  tx = gtx.novograd(0.1, weight_decay=0.01)
  eager_params, eager_state = params, tx.init(params)
  with jax.disable_jit():  # each operation on its own
    op_params, op_state = params, tx.init(params)
  for step in range(8):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), dtype), params)
    n, (updates, eager_state) = compiles(tx.update, grads, eager_state, eager_params)
    if step > 0:
      assert n == 0, step
    eager_params = gtx.apply_updates(eager_params, updates)
    with jax.disable_jit():
      updates, op_state = tx.update(grads, op_state, op_params)
      op_params = gtx.apply_updates(op_params, updates)
  tol = 1e-5 if dtype == jnp.float32 else 1e-2
  for got, want in zip(jax.tree.leaves(eager_params), jax.tree.leaves(op_params)):
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol)


# A value for each required argument of the constructors that take a buffer dtype.
_DTYPE_CASE_ARGS = {"learning_rate": 0.1, "decay": 0.9, "every_k_schedule": 2,
                    "opt": gtx.identity(), "base_optimizer": gtx.identity(),
                    "measure": gtx.tree_utils.tree_norm}


def _dtype_options():
  """(name, constructor, option) for every public constructor with a buffer dtype option."""
  found = {}
  for module in (gtx, gtx.contrib):
    for name in dir(module):
      make = getattr(module, name)
      if name.startswith("_") or not callable(make) or isinstance(make, type):
        continue
      for option in inspect.signature(make).parameters:
        if "dtype" in option:  # mu_dtype, ..., adafactor's dtype_momentum
          found[(make.__module__, name, option)] = (f"{name}({option})", make, option)
  return sorted(found.values(), key=lambda case: case[0])


def test_dtype_options_refuse_integer_and_unknown_dtypes_when_built():
  """An int32 moment rounds each step's change away (adam's mu stays 0) and a misspelt
  dtype failed at init with numpy's message: both are refused when the transformation is
  built, naming the stage and the option; a float dtype and None are taken."""
  cases = _dtype_options()
  assert len(cases) >= 90, [case[0] for case in cases]  # the whole family, not a few
  for label, make, option in cases:
    required = {p.name: _DTYPE_CASE_ARGS[p.name]
                for p in inspect.signature(make).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}
    for bad, shown in ((jnp.int32, "got int32"), (bool, "got bool"),
                       ("flaot32", "got 'flaot32'")):
      # Each names the argument as the constructor calls it, and a stage.
      with pytest.raises(gtx.HyperparameterError, match=rf"\w+: {option} must be .*{shown}"):
        make(**required, **{option: bad})
        pytest.fail(f"{label} took {option}={bad!r}")
    for good in (None, jnp.bfloat16, "float32"):
      make(**required, **{option: good})


# The required arguments of the schedules that take a switch: gtx.schedules binds its
# arguments before it checks them.
_SCHEDULE_ARGS = {"init_value": 1.0, "peak_value": 1.0, "warmup_steps": 1,
                  "transition_steps": 10, "decay_rate": 0.5}


def _switches():
  """(name, function, switch) for every public function with an argument annotated bool."""
  found = {}
  for module in (gtx, gtx.schedules, gtx.contrib, gtx.losses, gtx.projections,
                 gtx.second_order, gtx.lr_finder, gtx.tree_utils):
    for name in module.__all__:
      make = getattr(module, name)
      if not inspect.isfunction(make):
        continue
      for parameter in inspect.signature(make).parameters.values():
        if parameter.annotation in ("bool", bool):
          found[(make.__module__, make.__name__, parameter.name)] = (
              f"{make.__name__}({parameter.name})", make, parameter.name)
  return sorted(found.values(), key=lambda case: case[0])


def test_switches_refuse_anything_but_a_bool_when_called():
  """A non-empty string is true in Python, so sgd(..., nesterov='no') ran Nesterov
  momentum, and None or 0 meant False, without a word. Every public function's argument
  annotated bool is checked before the function runs (by position or by name), naming
  the function and the argument; a numpy bool is taken, and passed on as a Python one."""
  cases = _switches()
  assert len(cases) >= 75, [case[0] for case in cases]  # the whole family, not a few
  for label, make, switch in cases:
    required = {p.name: _SCHEDULE_ARGS[p.name] for p in inspect.signature(make).parameters.values()
                if make.__name__ in gtx.schedules.__all__ and p.default is inspect.Parameter.empty}
    for bad, shown in (("no", "'no'"), ("False", "'False'"), (None, "None"), (0, "0"),
                       (1.0, "1.0"), (jnp.array(True), "Array"), (np.array([True]), "array")):
      with pytest.raises(gtx.HyperparameterError,
                         match=rf"^{make.__name__}: {switch} must be True or False, got "
                               rf"{re.escape(shown)}"):
        make(**required, **{switch: bad})
        pytest.fail(f"{label} took {switch}={bad!r}")
  with pytest.raises(gtx.HyperparameterError, match="sgd: nesterov must be True or False, "
                                                    r"got 'no' \(a string"):
    gtx.sgd(0.1, 0.9, "no")  # by position
  with pytest.raises(gtx.HyperparameterError, match="exponential_decay: staircase must be"):
    gtx.schedules.exponential_decay(1.0, 10, 0.5, staircase="no")
  params, grads = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.25])
  for flag in (np.True_, np.False_):
    steps = []
    for given in (flag, bool(flag)):
      tx = gtx.sgd(0.1, 0.9, given)
      assert f"nesterov={bool(flag)}," in repr(tx)
      state = tx.init(params)
      for _ in range(2):
        u, state = tx.update(grads, state, params)
      steps.append(u)
    np.testing.assert_array_equal(steps[0], steps[1])
  nesterov = gtx.sgd(0.1, 0.9, np.True_).update(grads, gtx.sgd(0.1, 0.9).init(params))[0]
  np.testing.assert_allclose(nesterov, [-0.095, -0.0475])  # -0.1 * (1 + 0.9) * g
  schedule = gtx.schedules.exponential_decay(1.0, 10, 0.5, staircase=np.True_)
  assert "staircase=True" in repr(schedule) and float(schedule(15)) == 0.5


def test_a_refused_value_is_named_as_the_argument_the_caller_gave_it_to():
  """sgd(0.1, momentum=-0.9) was refused as "trace: decay must be ...", naming a stage
  and an argument the caller never wrote, or the stage's name for the function called
  (about 220 arguments of 50 ready optimizers).
  Every public factory that passes its arguments on names itself and the argument, and
  the stage that checked it (core.names_its_arguments)."""
  checked = 0
  for module in (gtx, gtx.contrib, gtx.projections):
    for name in module.__all__:
      make = getattr(module, name)
      if not inspect.isfunction(make):
        continue
      parameters = inspect.signature(make).parameters.values()
      required = {p.name: 0.1 for p in parameters
                  if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
      for p in parameters:
        if p.name not in required and (type(p.default) not in (int, float)):
          continue  # a numeric argument, or a required one (most often learning_rate)
        for bad in (-1.0, "x", 1e50):
          try:
            make(**{**required, p.name: bad})
          except gtx.HyperparameterError as error:
            if error.argument is None or error.argument.value is not bad:
              continue  # about another argument, or not about one argument
            checked += 1
            assert str(error).startswith(f"{make.__name__}: {p.name} "), str(error)
          except Exception:  # noqa: BLE001 - another argument's placeholder 0.1 refused
            pass
  assert checked >= 1000, checked  # the whole family, not a few
  with pytest.raises(gtx.HyperparameterError, match=r"^sgd: momentum must be in \[0, inf\), "
                     r"got -0\.9 \(checked by trace, as its decay\)$"):
    gtx.sgd(0.1, momentum=-0.9)
  # Passed on twice over: muon passes adam_b1 to adam's stage as b1.
  with pytest.raises(gtx.HyperparameterError, match=r"^muon: adam_b1 must be in \[0, 1\), got "
                     r"2\.0 \(checked by scale_by_adam, as its b1\)$"):
    gtx.contrib.muon(0.1, adam_b1=2.0)
  # One object given to two arguments: the one named as the stage's.
  bad = 1.5
  with pytest.raises(gtx.HyperparameterError, match=r"^adamw: b1 must be in \[0, 1\), got 1\.5 "
                     r"\(checked by scale_by_adam\)$"):
    gtx.adamw(1e-3, b1=bad, b2=bad)

  @gtx.core.names_its_arguments
  def doubled(rate):
    return gtx.chain(lr=gtx.scale_by_learning_rate(2 * rate))

  @gtx.core.names_its_arguments
  def passed_on(rate, **others):
    return gtx.chain(lr=gtx.scale_by_learning_rate(rate), adam=gtx.scale_by_adam(**others))

  # A value the factory derived is not the caller's: the stage's own error.
  with pytest.raises(gtx.HyperparameterError, match=r"^scale_by_learning_rate: learning_rate "
                     r"must be in \[0, inf\), got -1\.0$"):
    doubled(-0.5)
  with pytest.raises(gtx.HyperparameterError, match=r"^passed_on: rate must be in \[0, inf\), "
                     r"got -1\.0 \(checked by scale_by_learning_rate, as its learning_rate\)$"):
    passed_on(-1.0)
  with pytest.raises(gtx.HyperparameterError, match=r"^passed_on: b2 must be in \[0, 1\), got 2 "
                     r"\(checked by scale_by_adam\)$"):
    passed_on(0.1, b2=2)



def test_a_transformation_argument_of_another_kind_is_named_by_the_factory_called():
  # The check where a transformation goes named the stage that made it: "named_chain stage
  # 'linesearch': expected a gradient transformation ..." for lbfgs(linesearch='x'), and
  # "scale_by_galore base_optimizer: ..." for galore. It is a TypeError still.
  kind = "must be a gradient transformation (an object with init and update), got str: 'x'"
  cases = [
      (lambda: gtx.lbfgs(linesearch="x"),
       f"lbfgs: linesearch {kind} (checked by named_chain, as its stage 'linesearch')"),
      (lambda: gtx.contrib.galore(0.1, base_optimizer="x"),
       f"galore: base_optimizer {kind} (checked by scale_by_galore)"),
      (lambda: gtx.contrib.scale_by_galore(base_optimizer="x"),
       f"scale_by_galore: base_optimizer {kind}"),
      (lambda: gtx.chain(adam="x"), f"chain: stage 'adam' {kind}"),
      (lambda: gtx.lookahead("x", 2, 0.5), f"lookahead: fast_optimizer {kind}"),
  ]
  for call, message in cases:
    with pytest.raises(TypeError) as error:
      call()
    assert isinstance(error.value, gtx.ArgumentTypeError)
    assert str(error.value) == message


# (function, its other arguments, the function argument): each is checked when built.
_FUNCTION_ARGS = [
    (gtx.measure_with_ema, {"decay": 0.9}, "measure"),
    (gtx.multi_steps, {"opt": gtx.sgd(0.1), "every_k_schedule": 2}, "should_skip_update_fn"),
    (gtx.scale_by_factored_rms, {}, "decay_rate_fn"),
    (gtx.stateless_with_tree_map, {}, "f"),
    (gtx.stateless, {}, "f"),
    (gtx.snapshot, {"measure_name": "m"}, "measure"),
    (gtx.conditionally_mask, {"inner": gtx.sgd(0.1)}, "should_transform_fn"),
    (gtx.scale_by_schedule, {}, "step_size_fn"),
    (gtx.value_and_grad_from_state, {}, "value_fn"),
]


@pytest.mark.parametrize("make, others, arg", _FUNCTION_ARGS,
                         ids=[f"{m.__name__}({a})" for m, _, a in _FUNCTION_ARGS])
def test_a_function_argument_that_is_not_callable_is_refused_when_built(make, others, arg):
  """measure_with_ema, multi_steps' should_skip_update_fn, the factored decay_rate_fn and
  stateless_with_tree_map took a number and failed at init or at the first step with
  Python's "'float' object is not callable", naming no stage: each function argument
  is checked when built (core.check_callable), naming the stage and the argument."""
  with pytest.raises(TypeError, match=rf"^{make.__name__}: {arg} must be .*, got 0.5"):
    make(**others, **{arg: 0.5})


def test_a_string_or_bool_inside_a_tuple_hyperparameter_is_refused():
  """numpy reads '0.9' as 0.9 and True as 1: a string or bool was refused as a
  hyperparameter but taken as an entry of one given as a tuple (prodigy's betas, muon's
  ns_coeffs), where a config parser had left it. Refused when built and by set_hparams,
  naming the stage and the argument; numbers, arrays and presets are taken."""
  for make, match in (
      (lambda: gtx.contrib.prodigy(betas=("0.9", 0.999)),
       r"^prodigy: betas must be numbers in \[0, 1\), got \('0.9', 0.999\) "
       r"\(convert it with float\(\)\)"),
      (lambda: gtx.contrib.dadapt_adamw(betas=(0.9, None)),
       r"^dadapt_adamw: betas must be numbers in \[0, 1\), got \(0.9, None\) "
       r"\(checked by scale_by_dadapt_adamw\)$"),
      (lambda: gtx.contrib.muon(0.1, ns_coeffs=(True, -4.775, 2.0315)),
       r"^muon: ns_coeffs must be numbers in \(-inf, inf\), got \(True, "),
      (lambda: gtx.contrib.muon(0.1, ns_coeffs=[(3.4445, -4.775, "2.0315")]),
       r"^muon: ns_coeffs must be numbers .*\(convert it with float\(\)\)"),
  ):
    with pytest.raises(gtx.HyperparameterError, match=match):
      make()
  state = gtx.contrib.prodigy(betas=np.array([0.9, 0.999])).init(jnp.zeros(2))
  with pytest.raises(gtx.HyperparameterError, match=r"betas must be numbers in \[0, 1\)"):
    gtx.set_hparams(state, {"prodigy.betas": ("0.5", 0.9)})
  np.testing.assert_allclose(gtx.hparams(state)["prodigy.betas"], [0.9, 0.999])
  coeffs = gtx.hparams(gtx.contrib.muon(0.1, ns_coeffs="standard").init(jnp.zeros((2, 2))))
  np.testing.assert_allclose(coeffs["muon.ns_coeffs"], [3.4445, -4.775, 2.0315], rtol=1e-6)


def test_a_hyperparameter_that_its_float_dtype_cannot_hold_is_refused():
  """1e40 is inf in float32 and 1e-50 is 0: the state would hold a value its range
  refuses, so the step's rate was inf (or DoG's positive reps_rel 0). Named at
  construction and in set_hparams; under x64 (float64) both fit."""
  with pytest.raises(gtx.HyperparameterError,
                     match=r"adam: learning_rate must be in \[0, inf\) as a float32 .*got "
                           r"1e\+40, held as inf \(checked by scale_by_learning_rate\)"):
    gtx.adam(1e40)
  with pytest.raises(gtx.HyperparameterError, match=r"reps_rel must be in \(0, inf\) as a "
                                                    r"float32 .*got 1e-50, held as 0"):
    gtx.scale_by_distance_over_gradients(reps_rel=1e-50)
  with pytest.raises(gtx.HyperparameterError, match=r"got np.float64\(1e\+40\), held as inf"):
    gtx.sgd(np.float64(1e40))
  state = gtx.adam(0.1).init(jnp.zeros(2))
  with pytest.raises(gtx.HyperparameterError, match="learning_rate must be in .* as a float32"):
    gtx.set_hparams(state, {"lr.learning_rate": 1e40})
  assert float(gtx.hparams(state)["lr.learning_rate"]) == pytest.approx(0.1)
  # A threshold that inf switches off takes it (without numpy's overflow warning, an
  # error in this suite): the value means the same.
  clip = gtx.chain(clip=gtx.clip_by_global_norm(1e40)).init(jnp.zeros(2))
  assert float(gtx.hparams(clip)["clip.max_norm"]) == np.inf
  clip = gtx.set_hparams(gtx.chain(clip=gtx.clip_by_global_norm(1.0)).init(jnp.zeros(2)),
                         {"clip.max_norm": 1e40})
  assert float(gtx.hparams(clip)["clip.max_norm"]) == np.inf
  assert float(gtx.hparams(gtx.adam(1e-30).init(jnp.zeros(2)))["lr.learning_rate"]) > 0
  with enable_x64(True):
    lr = gtx.hparams(gtx.adam(1e40).init(jnp.zeros(2)))["lr.learning_rate"]
    assert lr.dtype == jnp.float64 and float(lr) == 1e40
    # A rate given as a float32 array stays float32 under x64: set_hparams checks it so.
    state = gtx.adam(jnp.float32(0.1)).init(jnp.zeros(2))
    with pytest.raises(gtx.HyperparameterError, match="as a float32 .*held as inf"):
      gtx.set_hparams(state, {"lr.learning_rate": 1e40})


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_clip_by_global_norm_of_a_norm_that_is_not_finite_is_as_documented(jit):
  # As optax: NaN spreads to every entry; an infinite entry gives a factor 0 (its own
  # update inf * 0 = NaN); a float32 sum of squares past 3.4e38 is an infinite norm of
  # finite entries, so the step is 0 (skipped, not clipped). float16 squares in float32.
  tx = gtx.clip_by_global_norm(1.0)
  update = jax.jit(tx.update) if jit else tx.update

  def clipped(*entries, dtype=jnp.float32):
    g = {"w": jnp.asarray(entries[:1], dtype), "b": jnp.asarray(entries[1:], dtype)}
    u, _ = update(g, tx.init(g))
    return np.concatenate([np.asarray(u["w"], np.float64), np.asarray(u["b"], np.float64)])

  np.testing.assert_array_equal(clipped(np.nan, 1.0, 2.0), [np.nan] * 3)
  np.testing.assert_array_equal(clipped(np.inf, 1.0, 2.0), [np.nan, 0.0, 0.0])
  np.testing.assert_array_equal(clipped(2e19, 1.0, 2.0), [0.0, 0.0, 0.0])
  # Just below the overflow the norm is finite, and the step is clipped.
  np.testing.assert_allclose(clipped(1e19, 1.0, 2.0), [1.0, 1e-19, 2e-19], rtol=1e-6)
  np.testing.assert_allclose(clipped(3e4, 4e4, 0.0, dtype=jnp.float16), [0.6, 0.8, 0.0],
                             rtol=1e-3)


# ----------------------------------------------------------------------------
# A None gradient, every public stage: the table below covers each factory of gradtx,
# gradtx.optimizers and gradtx.contrib (a new one fails the test until it is added).

def _none_stage_loss(p):
  return sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))


_C = gtx.contrib
# Public callables that are not stages (functions of trees, schedules, plumbing).
_NOT_STAGES = {
    "apply_updates", "bias_correction", "carry_state", "chain", "global_norm", "hparams",
    "incremental_update", "init_empty_state", "matrix_inverse_pth_root", "named_chain",
    "periodic_update", "power_iteration", "safe_increment", "safe_int32_increment",
    "safe_norm", "safe_root_mean_squares", "set_hparams", "skip_large_updates",
    "skip_not_finite", "stateless", "stateless_with_tree_map", "stats", "unitwise_clip",
    "unitwise_norm", "update_infinity_moment", "update_moment", "update_moment_per_elem_norm",
    "value_and_grad_from_state", "with_extra_args_support", "scale_gradient",
    "per_example_global_norm_clip", "per_example_layer_norm_clip",
    "hutchinson_estimator_diag_hessian", "schedule_free_eval_params",
    "split_real_and_imaginary"}
# Stages that need arguments beyond a learning rate; wrappers wrap adam.
_NONE_STAGES = {
    "adaptive_grad_clip": lambda: gtx.adaptive_grad_clip(0.1),
    "add_noise": lambda: gtx.add_noise(0.1, 0.5, 0),
    "apply_every": lambda: gtx.apply_every(2),
    "apply_if_finite": lambda: gtx.apply_if_finite(gtx.adam(0.1), 2),
    "clip": lambda: gtx.clip(1.0),
    "clip_by_block_rms": lambda: gtx.clip_by_block_rms(1.0),
    "clip_by_global_norm": lambda: gtx.clip_by_global_norm(1.0),
    "conditionally_mask": lambda: gtx.conditionally_mask(gtx.adam(0.1), lambda c: c >= 0),
    "conditionally_transform": lambda: gtx.conditionally_transform(gtx.adam(0.1),
                                                                   lambda c: c >= 0),
    "ema": lambda: gtx.ema(0.9),
    "freeze": lambda: gtx.freeze({"w": False, "b": True}),
    "lookahead": lambda: gtx.lookahead(gtx.adam(0.1), 2, 0.5),
    "masked": lambda: gtx.masked(gtx.adam(0.1), {"w": True, "b": True}),
    "masked-out": lambda: gtx.masked(gtx.chain(gtx.zero_nans(), gtx.adam(0.1)),
                                     {"w": True, "b": False}),
    "measure_with_ema": lambda: gtx.monitor(
        {"norm": gtx.measure_with_ema(gtx.tree.global_norm, 0.9)}),
    "monitor": lambda: gtx.monitor(*gtx.MONITOR_STATISTICS, inner=gtx.sgd(0.1)),
    "monitor-leaf_norms": lambda: gtx.monitor("leaf_norms", "leaf_param_ratios"),
    "multi_steps": lambda: gtx.multi_steps(gtx.adam(0.1), 2),
    "multi_transform": lambda: gtx.multi_transform({"a": gtx.adam(0.1), "s": gtx.sgd(0.1)},
                                                   {"w": "s", "b": "a"}),
    "partition": lambda: gtx.partition({"a": gtx.adam(0.1), "s": gtx.sgd(0.1)},
                                       {"w": "a", "b": "s"}),
    "reduce_on_plateau": lambda: gtx.chain(gtx.sgd(0.1), gtx.reduce_on_plateau()),
    "scale": lambda: gtx.scale(0.1),
    "scale_by_backtracking_linesearch": lambda: gtx.scale_by_backtracking_linesearch(3),
    "scale_by_fromage": lambda: gtx.scale_by_fromage(0.1),
    "scale_by_learning_rate": lambda: gtx.scale_by_learning_rate(0.1),
    "scale_by_rprop": lambda: gtx.scale_by_rprop(0.1),
    "scale_by_schedule": lambda: gtx.scale_by_schedule(lambda count: 0.1),
    "scale_by_zoom_linesearch": lambda: gtx.scale_by_zoom_linesearch(3),
    "selective_transform": lambda: gtx.selective_transform(
        gtx.adam(0.1), freeze_mask={"w": False, "b": False}),
    "snapshot": lambda: gtx.snapshot("norm", gtx.tree.global_norm),
    "trace": lambda: gtx.trace(0.9),
    "contrib.differentially_private_aggregate":
        lambda: _C.differentially_private_aggregate(1.0, 0.1, 0),
    "contrib.dpsgd": lambda: _C.dpsgd(0.1, 1.0, 0.1, 0),
    "contrib.mechanize": lambda: _C.mechanize(gtx.adam(0.1)),
    "contrib.sam": lambda: _C.sam(gtx.adam(0.1), gtx.sgd(0.05)),
    "contrib.scale_by_dog": lambda: _C.scale_by_dog(("heuristic", 1e-4)),
    "contrib.scale_by_madgrad": lambda: _C.scale_by_madgrad(0.1),
    "contrib.schedule_free": lambda: _C.schedule_free(gtx.adam(0.1), 0.1),
}


def _default_stage(module, name):
  """``name`` built with its defaults, or with a learning rate of 0.1; None if it needs more."""
  fn = getattr(module, name)
  required = [p.name for p in inspect.signature(fn).parameters.values()
              if p.default is inspect.Parameter.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  if not required:
    return fn
  if required == ["learning_rate"]:
    return lambda: fn(0.1)
  return None


def _none_gradient_stages():
  stages = {}
  for module, prefix in ((gtx, ""), (gtx.optimizers, ""), (_C, "contrib.")):
    for name in module.__all__:
      obj = getattr(module, name)
      if not inspect.isfunction(obj) or name in _NOT_STAGES:
        continue
      make = _NONE_STAGES.get(prefix + name) or _default_stage(module, name)
      assert make is not None, f"{prefix}{name}: add how to build it to _NONE_STAGES"
      stages[prefix + name] = make
  return {**stages, **_NONE_STAGES}



def test_every_stage_refuses_a_none_gradient_it_holds_state_for_or_passes_it_through():
  # Before: zero_nans's per-leaf flag and monitor's per-leaf statistics were replaced by
  # the None gradient's MaskedNode: the state changed structure (a jitted step retraced,
  # lax.scan failed), and the flag came back when the gradient did.
  w = jnp.asarray([[0.5, -1.0], [2.0, 0.25]])  # a matrix: muon and galore take only those
  # b has w's shape (what is tested does not depend on it): 133 stages run eagerly share
  # one set of kernels instead of compiling each op for a second shape.
  both = {"w": w, "b": jnp.asarray([[0.5, -0.5], [1.0, 0.25]])}
  none = {"w": w, "b": None}
  grads = {"w": jnp.asarray([[0.1, -0.2], [0.3, 0.4]]), "b": None}
  failures = []
  for name, make in _none_gradient_stages().items():
    # (params given to init, params and grads given to update)
    cases = {"None gradient of an array": (both, both, grads),
             "None everywhere": (none, none, grads),
             "a gradient where init had None": (none, both, {**grads, "b": jnp.ones((2, 2))})}
    for case, (init_params, params, g) in cases.items():
      tx = make()
      if name == "lookahead":
        init_params, params = (gtx.LookaheadParams.init_synced(p) for p in (init_params, params))
      if name in ("contrib.dpsgd", "contrib.differentially_private_aggregate"):
        g = {**g, "w": g["w"][None]}  # per-example gradients: a batch of one
      extra = dict(value=_none_stage_loss(params), value_fn=_none_stage_loss, obj_fn=_none_stage_loss,
                   grad=jax.tree.map(lambda u: u, g))
      try:
        state = tx.init(init_params)
        updates, new_state = tx.update(g, state, params, **extra)
      except gtx.StructureError as e:
        if case == "None everywhere" or "['b']" not in str(e):
          failures.append(f"{name}, {case}: {e}")
        continue
      except Exception as e:  # pylint: disable=broad-except  # listed with the others
        failures.append(f"{name}, {case}: {type(e).__name__}: {e}")
        continue
      if jax.tree.structure(new_state) != jax.tree.structure(state):
        failures.append(f"{name}, {case}: the state changed structure")
      fast = updates.fast if name == "lookahead" else updates
      if (g["b"] is None) != (fast["b"] is None):
        failures.append(f"{name}, {case}: the update at ['b'] is {fast['b']}")
  assert not failures, "\n".join(failures)


@pytest.mark.parametrize("make", [
    lambda: gtx.adamw(1e-2, weight_decay=0.1),
    lambda: gtx.chain(clip=gtx.clip_by_global_norm(1.0), sgd=gtx.sgd(0.1, momentum=0.9)),
    lambda: gtx.MultiSteps(gtx.adam(1e-2), 2),
], ids=["adamw", "chain", "MultiSteps"])
def test_a_copied_transformation_is_equal_and_a_static_jit_argument_is_not_traced_again(make):
  # A copy (copy.deepcopy of a flax TrainState, whose tx is static data of the pytree)
  # compared unequal, identity being a transformation's equality, so a jitted step taking
  # it was traced and compiled again; optax's NamedTuples compare their functions, which
  # no copy copies.
  import copy  # pylint: disable=import-outside-toplevel
  tx = make()
  params = {"w": jnp.array([1.0, -2.0])}
  grads = {"w": jnp.array([0.5, 0.25])}
  traces = []

  def step(tx, grads, state, params):
    traces.append(None)
    return tx.update(grads, state, params)

  jitted = jax.jit(step, static_argnums=0)
  state = tx.init(params)
  steps = {}
  for name, copied in [("tx", tx), ("copy", copy.copy(tx)), ("deepcopy", copy.deepcopy(tx))]:
    assert copied == tx and hash(copied) == hash(tx), name
    steps[name] = jitted(copied, grads, state, params)
  assert len(traces) == 1
  for name in ("copy", "deepcopy"):
    jax.tree.map(np.testing.assert_array_equal, steps[name], steps["tx"])
  assert make() != tx  # another one built alike: other functions, as optax's
