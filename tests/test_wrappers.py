"""Wrappers and the numerics stages: each one's semantics, against optax and numpy references."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx as gtx
from gradtx.tree import MaskedNode

DTYPES = [jnp.float32, jnp.float64]
TOL = {jnp.float32: 1e-5, jnp.float64: 1e-12}
# gradtx's adam and optax's differ by optax's float32 rounding of 1 - b2**t (~1e-5
# relative); comparisons that route adam through a wrapper use this tolerance, those
# that must be bitwise use sgd (bitwise equal to optax's) inside the wrapper.
ADAM_VS_OPTAX = 3e-5


def _params(dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  return {"dense": {"w": jnp.asarray(rng.normal(size=(3, 2)), dtype),
                    "b": jnp.asarray(rng.normal(size=(2,)), dtype)},
          "norm": jnp.asarray(rng.normal(size=(2,)), dtype),
          "out": jnp.asarray(rng.normal(size=(2, 2)), dtype)}


def _grads(params, t, seed=1):
  """Deterministic gradients of a quadratic plus step-dependent noise."""
  rng = np.random.default_rng(seed + 1000 * t)
  return jax.tree.map(lambda p: p * 0.5 + jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def _assert_trees(a, b, rtol=0.0, atol=0.0):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if rtol == 0 and atol == 0:
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    else:
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _run(tx, params, steps, grads_fn=_grads, jit=False, **extra):
  """Steps ``tx``; optax's transformations run under standard dtype promotion (they
  do not run under the suite's strict one), gradtx's under strict."""
  with jax.numpy_dtype_promotion("strict" if isinstance(tx, gtx.GradientTransformation)
                                 else "standard"):
    return _run_steps(tx, params, steps, grads_fn, jit, **extra)


def _run_steps(tx, params, steps, grads_fn, jit, **extra):
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  history = []
  for t in range(steps):
    updates, state = update(grads_fn(params, t), state, params, **extra)
    params = gtx.apply_updates(params, updates)
    history.append((updates, params))
  return history, state


def _not_vector(p):
  return jax.tree.map(lambda x: x.ndim != 1, p)


# ---------------------------------------------------------------------------- masked


@pytest.mark.parametrize("callable_mask", [False, True])
def test_masked_matches_optax(callable_mask):
  params = _params()
  mask = _not_vector if callable_mask else _not_vector(params)
  ours, _ = _run(gtx.masked(gtx.adam(0.1), mask), params, 3)
  theirs, _ = _run(optax.masked(optax.adam(0.1), mask), params, 3)
  for (u, p), (ou, op) in zip(ours, theirs):
    _assert_trees(u, ou, rtol=ADAM_VS_OPTAX, atol=1e-7)
  # The masked-out leaves pass through untouched.
  np.testing.assert_array_equal(ours[0][0]["norm"], _grads(params, 0)["norm"])


def test_masked_keeps_no_state_for_masked_out_leaves():
  state = gtx.masked(gtx.adam(0.1), _not_vector).init(_params())
  mu = state.inner_state["adam"].mu
  assert isinstance(mu["norm"], MaskedNode) and isinstance(mu["dense"]["b"], MaskedNode)
  assert mu["out"].shape == (2, 2)


def test_nested_masks_see_real_params():
  seen = []

  def by_rank(p):  # touches leaves directly: would fail on MaskedNode
    seen.extend(jax.tree.leaves(p, is_leaf=lambda x: isinstance(x, MaskedNode)))
    return {"dense": {"w": p["dense"]["w"].ndim > 1, "b": p["dense"]["b"].ndim > 1},
            "norm": p["norm"].ndim > 1, "out": p["out"].ndim > 1}

  def not_out(p):
    seen.extend(jax.tree.leaves(p, is_leaf=lambda x: isinstance(x, MaskedNode)))
    return {"dense": p["dense"]["w"].size > 0, "norm": p["norm"].size > 0, "out": False}

  params = _params()
  inner = gtx.masked(gtx.scale(0.0), by_rank)
  for tx in [gtx.masked(inner, not_out), gtx.masked(gtx.masked(inner, not_out), not_out),
             gtx.partition({"a": inner, "b": gtx.identity()},
                           lambda p: {"dense": "a", "norm": "a", "out": "b"})]:
    for with_params in (True, False):
      state = tx.init(params)
      updates, _ = tx.update(params, state, params if with_params else None)
      # Only dense.w is in both masks: it alone is scaled to zero.
      np.testing.assert_array_equal(updates["dense"]["w"], np.zeros((3, 2)))
      for path in (("dense", "b"), ("norm",), ("out",)):
        leaf = functools.reduce(lambda t, k: t[k], path, updates)
        np.testing.assert_array_equal(leaf, functools.reduce(lambda t, k: t[k], path, params))
  assert seen and not any(isinstance(x, MaskedNode) for x in seen)


def test_masked_decay_inside_partition_group_sees_real_params():
  seen = []

  def decay_mask(p):
    seen.extend(jax.tree.leaves(p, is_leaf=lambda x: isinstance(x, MaskedNode)))
    return jax.tree.map(lambda x: x.ndim > 1, p)

  params = _params()
  tx = gtx.partition({"body": gtx.adamw(0.1, weight_decay=0.5, mask=decay_mask),
                      "head": gtx.sgd(0.1)}, {"dense": "body", "norm": "body", "out": "head"})
  jax.jit(tx.update)(params, tx.init(params), params)
  assert seen and not any(isinstance(x, MaskedNode) for x in seen)


def _check_mask_cases(cases, params, grads, jit, none_key):
  """Steps each ``(tx, w, b)`` case once: ``w`` and ``b`` are the updates expected of the
  leaves "w" and "b", and the leaf ``none_key`` (no gradient) is updated by None. Returns
  each case's updates with its ``b``."""
  stepped = []
  for tx, w, b in cases:
    update = jax.jit(tx.update) if jit else tx.update
    updates, _ = update(grads, tx.init(params), params)
    assert updates[none_key] is None
    np.testing.assert_array_equal(updates["w"], np.full((2, 2), w))
    np.testing.assert_array_equal(updates["b"], np.full(2, b))
    stepped.append((updates, b))
  return stepped


@pytest.mark.parametrize("jit", [False, True])
def test_a_mask_tree_made_by_tree_map_over_params_with_none_leaves(jit):
  # jax.tree.map(f, params) keeps a None param as None: optax takes that tree as the
  # mask (and as partition's labels), where gradtx raised "the mask does not cover ['n']".
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2), "n": None}
  grads = {"w": jnp.ones((2, 2)), "b": jnp.ones(2), "n": None}
  mask = jax.tree.map(lambda x: x.ndim > 1, params)
  labels = jax.tree.map(lambda x: "mat" if x.ndim > 1 else "other", params)
  assert mask["n"] is None and labels["n"] is None
  cases = [  # (tx, expected update of w, of b)
      (gtx.masked(gtx.sgd(0.5), mask), -0.5, 1.0),
      (gtx.add_decayed_weights(0.25, mask=mask), 1.25, 1.0),
      (gtx.partition({"mat": gtx.sgd(0.5), "other": gtx.set_to_zero()}, labels), -0.5, 0.0)]
  _check_mask_cases(cases, params, grads, jit, none_key="n")
  # A None over an array is still a mask that does not cover it.
  with pytest.raises(gtx.errors.StructureError,
                     match=r"key path \['b'\], which the mask does not cover"):
    gtx.masked(gtx.sgd(0.5), {**mask, "b": None}).init(params)


@pytest.mark.parametrize("jit", [False, True])
def test_callable_masks_see_integer_buffers_as_given(jit):
  # The outermost init/update masks an integer buffer on admission (and a float leaf
  # whose gradient is None); a callable mask or label function must still be called on
  # the params as given: it raised AttributeError on the MaskedNode ('MaskedNode' object
  # has no attribute 'ndim'). A Python number is seen as the array the stages see.
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2), "step": jnp.array(3, jnp.int32), "t": 1.0}
  grads = {"w": jnp.ones((2, 2)), "b": jnp.ones(2), "step": None, "t": 1.0}
  seen = []

  def matrices(p):
    seen.extend(p.values())
    return {k: v.ndim > 1 for k, v in p.items()}

  def labels(p):
    return {k: "mat" if v.ndim > 1 else "other" for k, v in p.items()}

  cases = [  # (tx, expected update of w, of b and t)
      (gtx.masked(gtx.sgd(0.5), matrices), -0.5, 1.0),
      (gtx.chain(freeze=gtx.freeze(matrices), sgd=gtx.sgd(0.5)), 0.0, -0.5),
      (gtx.selective_transform(gtx.sgd(0.5), freeze_mask=lambda p: {
          k: not v for k, v in matrices(p).items()}), -0.5, 0.0),
      (gtx.partition({"mat": gtx.sgd(0.5), "other": gtx.set_to_zero()}, labels), -0.5, 0.0)]
  for updates, b in _check_mask_cases(cases, params, grads, jit, none_key="step"):
    np.testing.assert_array_equal(updates["t"], b)
  assert seen and not any(isinstance(x, MaskedNode) for x in seen)
  # A float leaf whose gradient is None: the mask sees its params, and its update is None.
  tx = gtx.masked(gtx.sgd(0.5), matrices)
  updates, _ = tx.update({**grads, "w": None}, tx.init(params), params)
  assert updates["w"] is None
  np.testing.assert_array_equal(updates["b"], np.ones(2))


def test_mask_or_labels_of_another_container_in_a_large_tree_name_the_key_path_briefly():
  # A mask that differed from the params only in a container (an OrderedDict for a dict)
  # raised a message printing both whole PyTreeDefs (186,000 characters for 3,000
  # layers), found by comparing every key path with every other (seconds, quadratic).
  params = {f"layer{i:04d}": {"b": jnp.ones(2), "w": jnp.ones(2)} for i in range(3000)}
  odict = lambda tree: {**tree, "layer1234": collections.OrderedDict(  # noqa: E731
      sorted(tree["layer1234"].items()))}
  detail = ("must have the params' tree structure or a prefix of it; at key path "
            "['layer1234'] the {} has PyTreeDef(CustomNode(OrderedDict[('b', 'w')], [*, *])), "
            "the params PyTreeDef({{'b': *, 'w': *}})")
  with pytest.raises(gtx.StructureError) as error:
    gtx.masked(gtx.sgd(0.1), odict(jax.tree.map(lambda _: True, params))).init(params)
  assert str(error.value) == "masked: the mask " + detail.format("mask")
  labels = odict(jax.tree.map(lambda _: "a", params))
  with pytest.raises(gtx.StructureError) as error:
    gtx.partition({"a": gtx.sgd(0.1)}, labels).init(params)
  assert str(error.value) == "partition: the param_labels " + detail.format("param_labels")
  # A key the mask lacks, or one the params lack, is named as before, in a subtree too.
  mask = jax.tree.map(lambda _: True, params)
  with pytest.raises(gtx.StructureError, match=r"^masked: the params have key path "
                     r"\['layer2999'\]\['b'\], which the mask does not cover$"):
    gtx.masked(gtx.sgd(0.1), {k: v for k, v in mask.items() if k != "layer2999"}).init(params)
  with pytest.raises(gtx.StructureError, match=r"^masked: the mask has key path "
                     r"\['layer0007'\]\['c'\], which the params do not have$"):
    gtx.masked(gtx.sgd(0.1), {**mask, "layer0007": {"b": True, "c": True, "w": True}}).init(params)


def test_mask_errors_name_the_key_path():
  params = _params()
  with pytest.raises(gtx.StructureError, match=r"mask has key path \['typo'\]"):
    gtx.masked(gtx.scale(0.0), {"typo": True, "dense": True, "norm": True, "out": True}).init(params)
  with pytest.raises(gtx.StructureError, match=r"params have key path \['out'\].*does not cover"):
    gtx.masked(gtx.scale(0.0), {"dense": True, "norm": True}).init(params)
  with pytest.raises(gtx.StructureError, match=r"must hold Python bools.*key path \['dense'\]\['b'\]"):
    gtx.masked(gtx.scale(0.0), lambda p: jax.tree.map(lambda x: x > 0, p)).init(params)


def test_mask_compatible_extra_args():
  def tagged():
    def update(updates, state, params=None, *, tags, **extra):
      return gtx.tree.tree_map(lambda g, t: g * t, updates, tags), state
    return gtx.GradientTransformation(lambda p: (), update, name="tagged")

  params = {"a": jnp.ones(2), "b": jnp.ones(2)}
  tags = {"a": jnp.full(2, 3.0), "b": jnp.full(2, 5.0)}
  tx = gtx.masked(tagged(), {"a": True, "b": False}, mask_compatible_extra_args=True)
  updates, _ = tx.update(params, tx.init(params), params, tags=tags)
  np.testing.assert_array_equal(updates["a"], [3.0, 3.0])
  np.testing.assert_array_equal(updates["b"], [1.0, 1.0])


# ---------------------------------------------------------------------------- partition


def _labels(p):
  return jax.tree.map(lambda x: "decay" if x.ndim > 1 else "no_decay", p)


@pytest.mark.parametrize("jit", [False, True])
def test_partition_routes_groups_like_optax(jit):
  params = _params()
  ours, state = _run(gtx.partition({"decay": gtx.adamw(0.1, weight_decay=0.5),
                                    "no_decay": gtx.sgd(0.1, momentum=0.9)}, _labels),
                     params, 6, jit=jit)
  theirs, _ = _run(optax.partition({"decay": optax.adamw(0.1, weight_decay=0.5),
                                    "no_decay": optax.sgd(0.1, momentum=0.9)}, _labels),
                   params, 6, jit=jit)
  for (u, _), (ou, _) in zip(ours, theirs):
    _assert_trees(u, ou, rtol=ADAM_VS_OPTAX, atol=1e-6)
  # Each group's state holds only its own leaves.
  decay_mu = state.inner_states["decay"]["adam"].mu
  assert isinstance(decay_mu["norm"], MaskedNode) and decay_mu["out"].shape == (2, 2)
  trace = state.inner_states["no_decay"]["momentum"].trace
  assert isinstance(trace["out"], MaskedNode) and trace["norm"].shape == (2,)


def _leafwise_grads(params, t):
  """Gradients where each leaf depends only on itself (so groups can be run apart)."""
  return jax.tree.map(
      lambda x: 0.5 * x + jnp.cos(t + jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)), params)


def test_partition_equals_each_optimizer_on_its_own_leaves():
  params = _params()
  labels = {"dense": {"w": "decay", "b": "no_decay"}, "norm": "no_decay", "out": "decay"}
  ours, _ = _run(gtx.partition({"decay": gtx.adamw(0.1, weight_decay=0.5),
                                "no_decay": gtx.adam(0.1)}, labels), params, 5, _leafwise_grads)
  decay, _ = _run(gtx.adamw(0.1, weight_decay=0.5),
                  {"w": params["dense"]["w"], "out": params["out"]}, 5, _leafwise_grads)
  no_decay, _ = _run(gtx.adam(0.1), {"b": params["dense"]["b"], "norm": params["norm"]}, 5,
                     _leafwise_grads)
  for (_, p), (_, pd), (_, pn) in zip(ours, decay, no_decay):
    _assert_trees({"dense": {"w": pd["w"], "b": pn["b"]}, "norm": pn["norm"], "out": pd["out"]}, p)


def test_partition_hparams_by_label_and_set_one_group():
  params = _params()
  tx = gtx.chain(clip=gtx.clip_by_global_norm(1.0),
                 opt=gtx.partition({"decay": gtx.adamw(0.1, weight_decay=0.5),
                                    "no_decay": gtx.adam(0.1)}, _labels))
  state = tx.init(params)
  names = gtx.hparams(state)
  assert {"opt.decay.lr.learning_rate", "opt.no_decay.lr.learning_rate",
          "opt.decay.decay.weight_decay", "opt.no_decay.adam.b1"} <= set(names)
  state = gtx.set_hparams(state, {"opt.no_decay.lr.learning_rate": 0.0})
  updates, _ = tx.update(_grads(params, 0), state, params)
  np.testing.assert_array_equal(updates["norm"], np.zeros(2))
  assert np.all(np.asarray(updates["out"]) != 0)


def test_partition_errors():
  params = _params()
  with pytest.raises(gtx.StructureError,
                     match=r"key path \['norm'\] has label 'nrm'.*\['decay', 'no_decay'\]"):
    gtx.partition({"decay": gtx.sgd(0.1), "no_decay": gtx.sgd(0.1)},
                  {"dense": "decay", "norm": "nrm", "out": "decay"}).init(params)
  with pytest.raises(ValueError, match="label 'no decay' must be a string that is a Python"):
    gtx.partition({"no decay": gtx.sgd(0.1)}, lambda p: "no decay")
  assert gtx.multi_transform is gtx.partition


def test_selective_transform_and_freeze_match_optax():
  params = _params()
  freeze_mask = {"dense": True, "norm": False, "out": False}
  ours, state = _run(gtx.selective_transform(gtx.adam(0.1), freeze_mask=freeze_mask), params, 3)
  theirs, _ = _run(optax.selective_transform(optax.adam(0.1), freeze_mask=freeze_mask), params, 3)
  for (u, _), (ou, _) in zip(ours, theirs):
    _assert_trees(u, ou, rtol=ADAM_VS_OPTAX, atol=1e-7)
  assert isinstance(state.inner_states["train"]["adam"].mu["dense"]["w"], MaskedNode)

  for mask in (freeze_mask, True):
    ours, _ = _run(gtx.chain(gtx.freeze(mask), gtx.sgd(0.1)), params, 2)
    theirs, _ = _run(optax.chain(optax.freeze(mask), optax.sgd(0.1)), params, 2)
    for (u, _), (ou, _) in zip(ours, theirs):
      _assert_trees(u, ou)
  assert not jax.tree.leaves(gtx.freeze(freeze_mask).init(params))  # no state at all


def test_freeze_and_selective_transform_errors_name_them_and_their_arguments():
  """They are built from masked and partition, whose names and argument names the
  errors said ('masked: the mask', 'partition: the param_labels'): not what was called."""
  params = {"a": jnp.ones(2), "b": jnp.ones(2)}
  wrong = {"a": True, "c": False}
  cases = [
      (gtx.freeze(wrong), r"^freeze: the mask has key path \['c'\]"),
      (gtx.freeze(lambda p: {"a": True}), r"^freeze: the params have key path \['b'\]"),
      (gtx.selective_transform(gtx.adam(0.1), freeze_mask=wrong),
       r"^selective_transform: the freeze_mask has key path \['c'\]"),
      (gtx.selective_transform(gtx.adam(0.1), freeze_mask=lambda p: {"a": True}),
       r"^selective_transform: the params have key path \['b'\]"),
      # What they are built from keeps its names.
      (gtx.masked(gtx.sgd(0.1), wrong), r"^masked: the mask has key path \['c'\]"),
      (gtx.partition({"x": gtx.sgd(0.1)}, {"a": "x", "c": "x"}),
       r"^partition: the param_labels has key path \['c'\]"),
  ]
  for tx, message in cases:
    with pytest.raises(gtx.StructureError, match=message):
      tx.init(params)
  with pytest.raises(gtx.StructureError, match=r"^freeze: .*MaskedState"):
    gtx.freeze({"a": True, "b": False}).update(params, gtx.adam(0.1).init(params))
  with pytest.raises(TypeError, match=r"^selective_transform: optimizer must be a gradient"):
    gtx.selective_transform(None, freeze_mask=wrong)
  # Still stage names a chain gives by default, as before.
  assert gtx.freeze(wrong).name == "freeze"
  assert gtx.selective_transform(gtx.sgd(0.1), freeze_mask=wrong).name == "partition"


# ---------------------------------------------------------------------------- multi_steps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jit", [False, True])
def test_multi_steps_equals_one_step_on_the_mean_gradient(dtype, jit):
  with jax.enable_x64(dtype == jnp.float64):
    k = 3
    params = _params(dtype)
    acc_dtype = dtype
    tx = gtx.multi_steps(gtx.adam(0.1), every_k_schedule=k, accumulator_dtype=acc_dtype)
    ref = gtx.adam(0.1)
    state, ref_state = tx.init(params), ref.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    ref_params = params
    for round_ in range(2):
      batch = [_grads(params, 10 * round_ + i) for i in range(k)]
      for i, g in enumerate(batch):
        inner_before = state.inner_state
        updates, state = update(g, state, params)
        if i < k - 1:  # accumulation steps: zero updates, inner state untouched
          _assert_trees(updates, jax.tree.map(jnp.zeros_like, updates))
          _assert_trees(state.inner_state, inner_before)
          assert not state.has_updated()
        params = gtx.apply_updates(params, updates)
      assert state.has_updated()
      mean = jax.tree.map(lambda *g: sum(g[1:], g[0]) / k, *batch)
      ref_updates, ref_state = ref.update(mean, ref_state, ref_params)
      ref_params = gtx.apply_updates(ref_params, ref_updates)
      _assert_trees(params, ref_params, rtol=TOL[dtype], atol=TOL[dtype])
    assert int(state.gradient_step) == 2


@pytest.mark.parametrize("kwargs", [
    dict(every_k_schedule=3),
    dict(every_k_schedule=lambda step: jnp.where(step < 2, 2, 3), use_grad_mean=False),
    dict(every_k_schedule=2, should_skip_update_fn=optax.skip_not_finite),
])
def test_multi_steps_matches_optax_multisteps(kwargs):
  params = _params()
  ours_kwargs = dict(kwargs)
  if "should_skip_update_fn" in ours_kwargs:
    ours_kwargs["should_skip_update_fn"] = gtx.skip_not_finite

  def grads(p, t):
    g = _grads(params, t)
    return {**g, "norm": g["norm"] * jnp.nan} if t in (3, 4) and "should_skip_update_fn" in kwargs else g

  ours, state = _run(gtx.multi_steps(gtx.sgd(0.1, momentum=0.9), **ours_kwargs), params, 10,
                     grads, jit=True)
  theirs, their_state = _run(
      optax.MultiSteps(optax.sgd(0.1, momentum=0.9), **kwargs).gradient_transformation(),
      params, 10, grads, jit=True)
  for (u, _), (ou, _) in zip(ours, theirs):
    _assert_trees(u, ou)
  assert int(state.mini_step) == int(their_state.mini_step)
  assert int(state.gradient_step) == int(their_state.gradient_step)
  _assert_trees(state.acc_grads, their_state.acc_grads)
  if "should_skip_update_fn" in kwargs:
    assert int(state.skip_state["num_not_finite"]) == int(their_state.skip_state["num_not_finite"])


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("use_grad_mean", [True, False])
def test_multi_steps_adds_float64_grads_to_its_float32_accumulator_in_float64(k, use_grad_mean):
  # The default float32 accumulator under x64: each mini-batch is added in float64, as
  # optax's is, so k = 1 steps on the gradient itself (it rounded it to float32).
  with jax.enable_x64(True):
    params = _params(jnp.float64)
    grads = lambda p, t: jax.tree.map(lambda g: g / 3, _grads(params, t))  # noqa: E731
    kwargs = dict(every_k_schedule=k, use_grad_mean=use_grad_mean)
    ours, state = _run(gtx.multi_steps(gtx.sgd(0.1), **kwargs), params, 2 * k, grads)
    # optax's side jitted: its lax.cond of a fresh closure compiles again at every eager
    # step (0.25 s each); ours stays eager.
    theirs, their_state = _run(optax.MultiSteps(optax.sgd(0.1), **kwargs).gradient_transformation(),
                               params, 2 * k, grads, jit=True)
    for (u, _), (ou, _) in zip(ours, theirs):  # float32 rounding was ~1e-8 off
      _assert_trees(u, ou, rtol=1e-15)
    _assert_trees(state.acc_grads, their_state.acc_grads)
    assert jax.tree.leaves(state.acc_grads)[0].dtype == jnp.float32
    if k == 1:
      plain, _ = _run(gtx.sgd(0.1), params, 2, grads)
      for (u, _), (pu, _) in zip(ours, plain):
        _assert_trees(u, pu)


def test_multi_steps_with_a_bfloat16_accumulator_adds_float32_grads_as_optax_does():
  # The mini-batch that ends a window is added in float32: updates were up to 9e-3 off.
  params = _params()
  kwargs = dict(every_k_schedule=3, accumulator_dtype=jnp.bfloat16)
  ours, state = _run(gtx.multi_steps(gtx.sgd(1.0), **kwargs), params, 9, jit=True)
  theirs, their_state = _run(optax.MultiSteps(optax.sgd(1.0), **kwargs).gradient_transformation(),
                             params, 9, jit=True)
  for (u, _), (ou, _) in zip(ours, theirs):
    _assert_trees(u, ou)
  _assert_trees(state.acc_grads, their_state.acc_grads)
  assert jax.tree.leaves(state.acc_grads)[0].dtype == jnp.bfloat16


def test_multi_steps_starts_the_window_after_a_nan_from_zeros():
  # The docstring's one difference from optax.MultiSteps: the NaN reaches the step its
  # window ends in, and the next window starts from zeros (optax's accumulator stays NaN,
  # reset by multiplying it by 0, so every later update of optax's is NaN).
  tx = gtx.multi_steps(gtx.sgd(1.0), every_k_schedule=2)
  state = tx.init(jnp.zeros(1))
  seen = []
  for g in (1.0, jnp.nan, 1.0, 3.0):
    updates, state = tx.update(jnp.array([g]), state, jnp.zeros(1))
    seen.append(float(updates[0]))
  assert seen[0] == 0.0 and np.isnan(seen[1]) and seen[2:] == [0.0, -2.0]
  reference = optax.MultiSteps(optax.sgd(1.0), 2).gradient_transformation()
  with jax.numpy_dtype_promotion("standard"):  # optax's MultiSteps mixes int32 and float32
    state = reference.init(jnp.zeros(1))
    update = jax.jit(reference.update)  # eagerly, its lax.cond compiled again at each step
    for g in (1.0, jnp.nan, 1.0, 3.0):
      updates, state = update(jnp.array([g]), state, jnp.zeros(1))
  assert np.isnan(updates[0])


def test_multi_steps_hparams_report_k_and_set_it():
  params = _params()
  schedule = lambda step: jnp.where(step < 1, 2, 5)  # noqa: E731
  tx = gtx.chain(acc=gtx.multi_steps(gtx.sgd(0.1), every_k_schedule=schedule))
  state = tx.init(params)
  assert int(gtx.hparams(state)["acc.every_k_schedule"]) == 2
  for t in range(2):
    _, state = tx.update(_grads(params, t), state, params)
  assert int(gtx.hparams(state)["acc.every_k_schedule"]) == 2  # the value used at the last step
  _, state = tx.update(_grads(params, 2), state, params)
  assert int(gtx.hparams(state)["acc.every_k_schedule"]) == 5

  fixed = gtx.multi_steps(gtx.sgd(0.1), every_k_schedule=4)
  state = fixed.init(params)
  _, state = fixed.update(_grads(params, 0), state, params)
  state = gtx.set_hparams(state, {"every_k_schedule": 2})
  updates, state = fixed.update(_grads(params, 1), state, params)
  assert state.has_updated() and np.any(np.asarray(updates["out"]) != 0)


# ---------------------------------------------------------------------------- apply_if_finite


@pytest.mark.parametrize("jit", [False, True])
def test_apply_if_finite_skips_bad_steps_bitwise(jit):
  params = _params()
  tx = gtx.apply_if_finite(gtx.adam(0.1), max_consecutive_errors=2)
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(params)
  updates, state = update(_grads(params, 0), state, params)
  params = gtx.apply_updates(params, updates)
  for bad in (jnp.nan, jnp.inf):
    g = _grads(params, 1)
    g["dense"]["b"] = g["dense"]["b"].at[0].set(bad)
    new_updates, new_state = update(g, state, params)
    _assert_trees(gtx.apply_updates(params, new_updates), params)   # params bitwise unchanged
    _assert_trees(new_state.inner_state, state.inner_state)       # inner state too
    assert not bool(new_state.last_finite)
    state = new_state
  assert int(state.notfinite_count) == 2 and int(state.total_notfinite) == 2
  # The third bad step in a row is more than max_consecutive_errors=2: applied anyway.
  g = jax.tree.map(lambda x: x * jnp.nan, _grads(params, 2))
  updates, state = update(g, state, params)
  assert np.isnan(np.asarray(updates["out"])).all() and int(state.inner_state["adam"].count) == 2
  updates, state = update(_grads(params, 3), state, params)
  assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 3


def test_apply_if_finite_matches_optax():
  params = _params()
  bad_steps = {2, 3, 5, 6, 7, 8}

  def grads(p, t):
    g = _grads(params, t)
    return jax.tree.map(lambda x: x * jnp.inf, g) if t in bad_steps else g

  ours, state = _run(gtx.apply_if_finite(gtx.sgd(0.1, momentum=0.9), 2), params, 10, grads,
                     jit=True)
  theirs, their_state = _run(optax.apply_if_finite(optax.sgd(0.1, momentum=0.9), 2), params, 10,
                             grads, jit=True)
  for (u, _), (ou, _) in zip(ours, theirs):
    _assert_trees(u, ou)
  for field in ("notfinite_count", "last_finite", "total_notfinite"):
    assert int(getattr(state, field)) == int(getattr(their_state, field))


# ---------------------------------------------------------------------------- finite


def test_zero_nans_matches_optax():
  g = {"a": jnp.array([1.0, jnp.nan, jnp.inf]), "b": jnp.array([2.0])}
  ours, state = gtx.zero_nans().update(g, gtx.zero_nans().init(g))
  with jax.numpy_dtype_promotion("standard"):
    theirs, their_state = optax.zero_nans().update(g, optax.zero_nans().init(g))
  _assert_trees(ours, theirs)
  _assert_trees(state.found_nan, their_state.found_nan)
  np.testing.assert_array_equal(ours["a"], [1.0, 0.0, np.inf])


def test_skip_predicates_match_optax():
  for g in ({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([1.0, jnp.nan]), "b": jnp.ones(2)}):
    ours = gtx.skip_not_finite(g, 0, None)
    with jax.numpy_dtype_promotion("standard"):
      theirs = optax.skip_not_finite(g, 0, None)
    assert bool(ours[0]) == bool(theirs[0])
    assert int(ours[1]["num_not_finite"]) == int(theirs[1]["num_not_finite"])
    for limit in (4.0, 5.0, 6.0):
      ours = gtx.skip_large_updates(g, 0, None, limit)
      with jax.numpy_dtype_promotion("standard"):
        theirs = optax.skip_large_updates(g, 0, None, limit)
      assert bool(ours[0]) == bool(theirs[0])
      np.testing.assert_array_equal(ours[1]["norm_squared"], theirs[1]["norm_squared"])


# ---------------------------------------------------------------------------- lookahead


def _lookahead_reference(params, grads_fn, steps, lr, momentum, k, alpha, reset):
  """The paper's two loops in numpy: k fast SGD-momentum steps, then theta += alpha (phi - theta)."""
  phi = {key: np.asarray(v, np.float64) for key, v in params.items()}
  theta = {key: v.copy() for key, v in phi.items()}
  m = {key: np.zeros_like(v) for key, v in phi.items()}
  out = []
  for t in range(steps):
    g = {key: np.asarray(v, np.float64) for key, v in grads_fn(phi, t).items()}
    for key in phi:
      m[key] = g[key] + momentum * m[key]
      phi[key] = phi[key] - lr * m[key]
    if (t + 1) % k == 0:
      for key in phi:
        theta[key] = theta[key] + alpha * (phi[key] - theta[key])
        phi[key] = theta[key].copy()
        if reset:
          m[key] = np.zeros_like(m[key])
    out.append(({key: v.copy() for key, v in phi.items()},
                {key: v.copy() for key, v in theta.items()}))
  return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("reset", [False, True])
def test_lookahead_against_numpy(dtype, jit, reset):
  with jax.enable_x64(dtype == jnp.float64):
    rng = np.random.default_rng(0)
    curv = {"w": rng.uniform(0.5, 2.0, (3, 2)), "b": rng.uniform(0.5, 2.0, (2,))}
    noise = [{key: rng.normal(size=c.shape) for key, c in curv.items()} for _ in range(20)]
    grads_np = lambda p, t: {key: curv[key] * p[key] + noise[t][key] for key in p}  # noqa: E731
    start = {key: rng.normal(size=c.shape) for key, c in curv.items()}
    expected = _lookahead_reference(start, grads_np, 20, 0.1, 0.9, 3, 0.4, reset)

    tx = gtx.lookahead(gtx.sgd(0.1, momentum=0.9), sync_period=3, slow_step_size=0.4,
                       reset_state=reset)
    params = gtx.LookaheadParams.init_synced({key: jnp.asarray(v, dtype) for key, v in start.items()})
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for t in range(20):
      g = {key: jnp.asarray(v, dtype) for key, v in grads_np(
          {key: np.asarray(x, np.float64) for key, x in params.fast.items()}, t).items()}
      updates, state = update(g, state, params)
      params = gtx.apply_updates(params, updates)
      phi, theta = expected[t]
      for key in phi:
        np.testing.assert_allclose(params.fast[key], phi[key], rtol=TOL[dtype] * 10, atol=TOL[dtype])
        np.testing.assert_allclose(params.slow[key], theta[key], rtol=TOL[dtype] * 10, atol=TOL[dtype])


def test_lookahead_matches_optax_and_reports_hparams():
  params = gtx.LookaheadParams.init_synced(_params())
  grads = lambda p, t: _grads(p.fast, t)  # noqa: E731
  tx = gtx.lookahead(gtx.sgd(0.1, momentum=0.9), sync_period=4, slow_step_size=0.5,
                     reset_state=True)
  ours, state = _run(tx, params, 9, grads, jit=True)
  theirs, _ = _run(optax.lookahead(optax.sgd(0.1, momentum=0.9), 4, 0.5, reset_state=True),
                   optax.LookaheadParams(*params), 9, grads, jit=True)
  for (u, _), (ou, _) in zip(ours, theirs):
    _assert_trees(tuple(u), tuple(ou))
  names = gtx.hparams(state)
  assert float(names["slow_step_size"]) == 0.5 and int(names["sync_period"]) == 4
  assert "momentum.decay" in names
  with pytest.raises(gtx.StructureError, match="params must be LookaheadParams"):
    tx.update(_params(), tx.init(_params()), _params())


def test_lookahead_params_from_init_synced_can_be_donated():
  # init_synced held the params twice (fast=params, slow=params, as optax's does): a step
  # jitted with donate_argnums on them raised "Attempt to donate the same buffer twice".
  tx = gtx.lookahead(gtx.sgd(0.5), sync_period=2, slow_step_size=0.5)
  start = {"w": jnp.array([1.0, -2.0])}
  params = gtx.LookaheadParams.init_synced(start)
  assert params.slow["w"].unsafe_buffer_pointer() != params.fast["w"].unsafe_buffer_pointer()

  def step(p, s):
    updates, s = tx.update({"w": jnp.ones(2)}, s, p)
    return gtx.apply_updates(p, updates), s

  step = jax.jit(step, donate_argnums=(0, 1))
  params, _ = step(*step(params, tx.init(params)))
  # Two fast steps of -0.5, then the slow weights move half way: -0.5 each.
  np.testing.assert_allclose(params.slow["w"], [0.5, -2.5])
  np.testing.assert_allclose(params.fast["w"], [0.5, -2.5])


# ---------------------------------------------------------------------------- reduce_on_plateau


class _PlateauReference:
  """reduce_on_plateau's rule in plain Python (the docstring's, written independently)."""

  def __init__(self, factor, patience, rtol, atol, cooldown, accumulation_size, min_scale):
    self.__dict__.update(factor=factor, patience=patience, rtol=rtol, atol=atol,
                         cooldown=cooldown, accumulation_size=accumulation_size,
                         min_scale=min_scale)
    self.scale, self.best, self.plateau, self.cooling, self.losses = 1.0, np.inf, 0, 0, []

  def step(self, loss):
    self.losses.append(loss)
    if len(self.losses) < self.accumulation_size:
      return self.scale
    mean, self.losses = np.mean(self.losses), []
    improved = mean < (1 - self.rtol) * self.best - self.atol
    if improved:
      self.best, self.plateau = mean, 0
    else:
      self.plateau += 1
    if self.cooling > 0:
      self.cooling -= 1
      self.plateau = 0
    elif not improved and self.plateau >= self.patience:
      self.scale = max(self.scale * self.factor, self.min_scale)
      self.plateau, self.cooling = 0, self.cooldown
    return self.scale


PLATEAU_CASES = [
    dict(factor=0.5, patience=2, rtol=1e-4, atol=0.0, cooldown=0, accumulation_size=1,
         min_scale=0.0),
    dict(factor=0.5, patience=1, rtol=0.0, atol=0.05, cooldown=2, accumulation_size=1,
         min_scale=0.1),
    dict(factor=0.25, patience=1, rtol=1e-3, atol=0.0, cooldown=1, accumulation_size=3,
         min_scale=0.0),
]
LOSSES = [5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 3.99, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0, 2.0,
          2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]


@pytest.mark.parametrize("case", PLATEAU_CASES)
@pytest.mark.parametrize("jit", [False, True])
def test_reduce_on_plateau_against_reference_and_optax(case, jit):
  params = {"w": jnp.ones(3)}
  ours = gtx.chain(sgd=gtx.sgd(1.0), plateau=gtx.reduce_on_plateau(**case))
  theirs = optax.chain(optax.sgd(1.0), optax.contrib.reduce_on_plateau(**case))
  ref = _PlateauReference(**case)
  state = ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    their_state = theirs.init(params)
    their_update = jax.jit(functools.partial(theirs.update, params=params))
  update = jax.jit(ours.update) if jit else ours.update
  grads = {"w": jnp.full(3, 2.0)}
  for loss in LOSSES:
    updates, state = update(grads, state, params, value=jnp.float32(loss))
    with jax.numpy_dtype_promotion("standard"):
      their_updates, their_state = their_update(grads, their_state, value=loss)
    expected = ref.step(loss)
    np.testing.assert_allclose(float(state["plateau"].scale), expected, rtol=1e-6)
    np.testing.assert_allclose(updates["w"], -2.0 * expected, rtol=1e-6)
    _assert_trees(updates, their_updates)
    np.testing.assert_array_equal(state["plateau"].best_value, their_state[1].best_value)
  assert float(state["plateau"].scale) < 1.0


def test_reduce_on_plateau_patience_0_drops_at_each_evaluation_without_improvement():
  # torch's ReduceLROnPlateau(patience=0): an improving loss keeps the scale, each other
  # one drops it (the count reached patience after an improvement too, and dropped it).
  case = dict(factor=0.5, patience=0, rtol=1e-4, atol=0.0, cooldown=0, accumulation_size=1,
              min_scale=0.0)
  tx = gtx.reduce_on_plateau(**case)
  ref = _PlateauReference(**case)
  params = {"w": jnp.ones(())}
  state = tx.init(params)
  scales = []
  for loss in [3.0, 2.0, 1.0, 1.0, 1.0, 0.5]:
    _, state = tx.update(params, state, params, value=loss)
    scales.append(float(state.scale))
    assert scales[-1] == ref.step(loss)
  assert scales == [1.0, 1.0, 1.0, 0.5, 0.25, 0.25]


def test_reduce_on_plateau_hparams_state_and_errors():
  params = {"w": jnp.ones(2)}
  tx = gtx.chain(adam=gtx.adam(0.1), plateau=gtx.reduce_on_plateau(patience=5))
  state = tx.init(params)
  assert int(gtx.hparams(state)["plateau.patience"]) == 5
  assert set(gtx.hparams(state)) >= {"plateau.factor", "plateau.rtol", "plateau.atol",
                                     "plateau.cooldown", "plateau.accumulation_size",
                                     "plateau.min_scale"}
  for loss in (1.0, 1.0):
    _, state = tx.update(params, state, params, value=loss)
  assert float(state["plateau"].scale) == 1.0
  # Lowering patience below the running plateau count takes effect at the next evaluation.
  state = gtx.set_hparams(state, {"plateau.patience": 1})
  _, state = tx.update(params, state, params, value=1.0)
  np.testing.assert_allclose(float(state["plateau"].scale), 0.1, rtol=1e-6)
  with pytest.raises(gtx.MissingArgumentError, match=r"stage 'plateau': .*value=loss"):
    tx.update(params, state, params)
  with pytest.raises(gtx.HyperparameterError, match=r"factor must be in \(0, 1\), got 1"):
    gtx.reduce_on_plateau(factor=1.0)
  with pytest.raises(gtx.HyperparameterError, match="rtol and atol cannot both be 0"):
    gtx.reduce_on_plateau(rtol=0.0, atol=0.0)


@pytest.mark.parametrize("name, value", [("rtol", [0.1]), ("rtol", jnp.array([0.1])),
                                         ("factor", np.array([0.5]))])
def test_reduce_on_plateau_takes_scalars_only(name, value):
  # rtol raised float()'s TypeError at construction, without the stage; a factor array made
  # the state's scale an array.
  with pytest.raises(gtx.HyperparameterError,
                     match=rf"^reduce_on_plateau: {name} must be a scalar, got shape \(1,\)"):
    gtx.contrib.reduce_on_plateau(**{name: value})


def test_wrapper_reprs_show_inner_stages():
  text = repr(gtx.apply_if_finite(gtx.multi_steps(gtx.sgd(0.1), 4), 3))
  assert "apply_if_finite(" in text and "max_consecutive_errors=3" in text
  assert "multi_steps(" in text and "every_k_schedule=4" in text and "sgd(" in text
  text = repr(gtx.partition({"a": gtx.adam(0.1), "b": gtx.sgd(0.1)}, {"w": "a", "b": "b"}))
  assert "a=adam(" in text and "b=sgd(" in text
  # A masked chain shows its stages, a masked stage its hyperparameters beside the mask.
  text = repr(gtx.masked(gtx.chain(clip=gtx.clip_by_global_norm(1.0), adam=gtx.adam(0.1)),
                         {"w": True}))
  assert text.startswith("masked(") and "mask={'w': True}" in text
  assert "clip=clip_by_global_norm(max_norm=1)" in text and "b1=0.9" in text
  assert repr(gtx.masked(gtx.scale(2.0), {"w": True})) == "scale(step_size=2, mask={'w': True})"


def test_a_mask_or_labels_of_a_big_tree_show_as_their_size_in_a_repr():
  # A model's whole mask was printed: 11 kB of repr for 600 leaves, the stages lost in it.
  mask = {f"layer{i}": {"w": True, "b": False} for i in range(50)}
  assert repr(gtx.masked(gtx.scale(2.0), mask)) == "scale(step_size=2, mask=<dict of 100 leaves>)"
  labels = jax.tree.map(lambda m: "a" if m else "s", mask)
  text = repr(gtx.partition({"a": gtx.adam(0.1), "s": gtx.sgd(0.1)}, labels))
  assert "  param_labels=<dict of 100 leaves>,\n" in text and "a=adam(" in text
  assert len(text) < 600


# ---------------------------------------------------------------------------- set_to_zero


def test_set_to_zero_zeroes_every_leaf_in_its_dtype():
  params = _params()
  params["half"] = jnp.ones(2, jnp.bfloat16)
  tx = gtx.set_to_zero()
  updates, state = tx.update(_grads(params, 0), tx.init(params))
  for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
    assert u.dtype == p.dtype
    np.testing.assert_array_equal(np.asarray(u, np.float32), np.zeros(p.shape))
  assert gtx.hparams(state) == {}
  ours, _ = _run(gtx.chain(gtx.sgd(0.1), gtx.set_to_zero()), _params(), 2)
  theirs, _ = _run(optax.chain(optax.sgd(0.1), optax.set_to_zero()), _params(), 2)
  for (u, p), (ou, op) in zip(ours, theirs):
    _assert_trees(u, ou)
    _assert_trees(p, op)


# ---------------------------------------------------------------------------- apply_every


def _apply_every_reference(grads, k):
  """optax's documented rule: sum the updates, emit the sum every k-th call, else zeros."""
  acc, out = None, []
  for t, g in enumerate(grads):
    acc = g if t % k == 0 else acc + g
    out.append(acc if t % k == k - 1 else np.zeros_like(g))
  return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_apply_every_against_numpy(dtype, jit, k):
  with jax.enable_x64(dtype == jnp.float64):
    params = _params(dtype)
    grads = [_grads(params, t) for t in range(3 * k)]
    tx = gtx.apply_every(k)
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    outs = []
    for g in grads:
      updates, state = update(g, state)
      assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
      outs.append(updates)
    for name in ("norm", "out"):
      ref = _apply_every_reference([np.asarray(g[name], np.float64) for g in grads], k)
      for ours, theirs in zip(outs, ref):
        np.testing.assert_allclose(np.asarray(ours[name]), theirs, rtol=TOL[dtype])
    assert int(state.count) == 0


def test_apply_every_matches_optax_and_sets_k_by_name():
  params = _params()
  ours, _ = _run(gtx.chain(gtx.apply_every(2), gtx.sgd(0.1)), params, 6, jit=True)
  theirs, _ = _run(optax.chain(optax.apply_every(2), optax.sgd(0.1)), params, 6, jit=True)
  for (u, _), (ou, _) in zip(ours, theirs):
    _assert_trees(u, ou, rtol=1e-6)
  tx = gtx.chain(every=gtx.apply_every(4))
  state = tx.init(params)
  assert {k: int(v) for k, v in gtx.hparams(state).items()} == {"every.k": 4}
  step = jax.jit(tx.update)
  _, state = step(_grads(params, 0), state)
  state = gtx.set_hparams(state, {"every.k": 2})  # no retrace: k is an array in the state
  updates, state = step(_grads(params, 1), state)
  expected = jax.tree.map(lambda a, b: a + b, _grads(params, 0), _grads(params, 1))
  _assert_trees(updates, expected, rtol=1e-6)
  assert step._cache_size() == 1
  with pytest.raises(gtx.HyperparameterError, match=r"apply_every: k must be in \[1, 2147483647\] \(an integer\)"):
    gtx.apply_every(0)


def test_apply_every_drops_a_nan_with_its_period_and_checks_its_state():
  # optax keeps grad_acc * 0 for the discarded sum, so one NaN poisons every later sum;
  # gradtx restarts the sum from the new update (the docstring says so).
  grads = [jnp.asarray([jnp.nan, 1.0]), jnp.asarray([1.0, 1.0]), jnp.asarray([2.0, 3.0]),
           jnp.asarray([4.0, 5.0])]
  ours, theirs = gtx.apply_every(2), optax.apply_every(2)
  state, their_state = ours.init(jnp.zeros(2)), theirs.init(jnp.zeros(2))
  for g in grads:
    updates, state = ours.update(g, state)
    with jax.numpy_dtype_promotion("standard"):
      their_updates, their_state = theirs.update(g, their_state)
  np.testing.assert_array_equal(np.asarray(updates), [6.0, 8.0])
  assert np.isnan(np.asarray(their_updates)[0])
  with pytest.raises(gtx.StructureError,
                     match="apply_every: the state is a .*, where this stage's init makes an "
                           "ApplyEvery"):
    ours.update(grads[0], gtx.sgd(0.1).init(jnp.zeros(2)))
  with pytest.raises(gtx.StructureError, match="MultiSteps.has_updated: the state is a"):
    gtx.MultiSteps(gtx.sgd(0.1), 2).has_updated(state)


# ---------------------------------------------------------------------------- conditionally_*


def _momentum_reference(grads, lr, beta, on):
  """sgd with momentum run at the steps ``on(t)``; elsewhere the updates pass through
  (``mask=False``) or are zero (``mask=True``), and the trace is untouched."""
  def run(mask):
    m, out = np.zeros_like(grads[0]), []
    for t, g in enumerate(grads):
      if on(t):
        m = g + beta * m
        out.append(-lr * m)
      else:
        out.append(np.zeros_like(g) if mask else g)
    return out
  return run


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jit", [False, True])
def test_conditionally_transform_and_mask_against_numpy(mask, dtype, jit):
  with jax.enable_x64(dtype == jnp.float64):
    start = 3
    on = lambda t: t >= start  # noqa: E731
    wrap = gtx.conditionally_mask if mask else gtx.conditionally_transform
    tx = wrap(gtx.sgd(0.1, momentum=0.9), lambda step: step >= start)
    params = _params(dtype)
    grads = [_grads(params, t) for t in range(6)]
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    outs = []
    for t, g in enumerate(grads):
      inner_before = state.inner_state
      updates, state = update(g, state, params)
      if not on(t):
        _assert_trees(state.inner_state, inner_before)  # bitwise untouched
      outs.append(updates)
      assert int(state.step) == t + 1
    ref = _momentum_reference([np.asarray(g["out"], np.float64) for g in grads], 0.1, 0.9, on)
    for ours, theirs in zip(outs, ref(mask)):
      assert ours["out"].dtype == dtype
      np.testing.assert_allclose(np.asarray(ours["out"]), theirs, rtol=TOL[dtype],
                                 atol=TOL[dtype])
    assert type(state).__name__ == ("ConditionallyMaskState" if mask else
                                    "ConditionallyTransformState")


@pytest.mark.parametrize("mask", [False, True])
def test_conditionally_matches_optax_and_forwards_extra_args(mask):
  params = _params()
  ours_fn = gtx.conditionally_mask if mask else gtx.conditionally_transform
  theirs_fn = optax.conditionally_mask if mask else optax.conditionally_transform
  every_other = lambda step: step % 2 == 1  # noqa: E731
  ours, state = _run(ours_fn(gtx.sgd(0.1, momentum=0.9), every_other), params, 5, jit=True)
  theirs, their_state = _run(theirs_fn(optax.sgd(0.1, momentum=0.9), every_other), params, 5,
                             jit=True)
  for (u, _), (ou, _) in zip(ours, theirs):
    _assert_trees(u, ou)
  assert int(state.step) == int(their_state.step) == 5
  # Extra arguments reach the condition only with forward_extra_args.
  tx = ours_fn(gtx.sgd(1.0), lambda step, loss: loss < 1.0, forward_extra_args=True)
  g = {"w": jnp.ones(2)}
  state = tx.init(g)
  high, state = tx.update(g, state, loss=jnp.float32(2.0))
  low, state = tx.update(g, state, loss=jnp.float32(0.5))
  np.testing.assert_array_equal(np.asarray(high["w"]), [0.0, 0.0] if mask else [1.0, 1.0])
  np.testing.assert_array_equal(np.asarray(low["w"]), [-1.0, -1.0])


def test_conditionally_hparams_reprs_and_errors():
  tx = gtx.chain(warm=gtx.conditionally_mask(gtx.adam(0.1), lambda step: step > 2))
  state = tx.init(_params())
  assert "warm.lr.learning_rate" in gtx.hparams(state)
  state = gtx.set_hparams(state, {"warm.lr.learning_rate": 0.5})
  assert float(gtx.hparams(state)["warm.lr.learning_rate"]) == 0.5
  assert "conditionally_mask(" in repr(tx) and "forward_extra_args=False" in repr(tx)
  bad = gtx.conditionally_transform(gtx.sgd(0.1), lambda step: jnp.ones(2, bool))
  with pytest.raises(gtx.StructureError, match=r"conditionally_transform: should_transform_fn "
                     r"must return a scalar bool, got dtype bool and shape \(2,\)"):
    bad.update(_params(), bad.init(_params()))
  with pytest.raises(TypeError, match="conditionally_mask: should_transform_fn must be a "
                     "function of the step count"):
    gtx.conditionally_mask(gtx.sgd(0.1), 3)
  with pytest.raises(gtx.StructureError, match="makes a ConditionallyMaskState"):
    gtx.conditionally_mask(gtx.sgd(0.1), lambda s: s > 0).update(
        _params(), gtx.sgd(0.1).init(_params()))


# ---------------------------------------------------------------------------- MultiSteps


@pytest.mark.parametrize("jit", [False, True])
def test_multisteps_class_equals_multi_steps_and_optax(jit):
  params = _params()
  kwargs = dict(every_k_schedule=3, use_grad_mean=False)
  opt = gtx.MultiSteps(gtx.sgd(0.1, momentum=0.9), **kwargs)
  ref = gtx.multi_steps(gtx.sgd(0.1, momentum=0.9), **kwargs)
  theirs = optax.MultiSteps(optax.sgd(0.1, momentum=0.9), **kwargs)
  state, ref_state = opt.init(params), ref.init(params)
  with jax.numpy_dtype_promotion("standard"):
    their_state = theirs.init(params)
  update = jax.jit(opt.update) if jit else opt.update
  ref_update = jax.jit(ref.update) if jit else ref.update
  their_update = jax.jit(theirs.update)
  for t in range(7):
    g = _grads(params, t)
    updates, state = update(g, state, params)
    ref_updates, ref_state = ref_update(g, ref_state, params)
    with jax.numpy_dtype_promotion("standard"):
      their_updates, their_state = their_update(g, their_state, params)
    _assert_trees(updates, ref_updates)
    _assert_trees(state, ref_state)
    _assert_trees(updates, their_updates, rtol=1e-6)
    assert bool(opt.has_updated(state)) == bool(theirs.has_updated(their_state)) == (t % 3 == 2)
  tx = opt.gradient_transformation()
  assert isinstance(tx, gtx.GradientTransformation) and opt.inner_opt.name == "sgd"
  assert int(gtx.hparams(gtx.chain(acc=tx).init(params))["acc.every_k_schedule"]) == 3
  assert isinstance(tx.init(params), gtx.MultiStepsState)


# ---------------------------------------------------------------------------- tree_map_params


def test_tree_map_params_on_adam_matches_optax():
  params = _params()
  ours, theirs = gtx.adam(0.1), optax.adam(0.1)
  state = _run(ours, params, 2)[1]
  their_state = _run(theirs, params, 2)[1]
  doubled = gtx.tree_utils.tree_map_params(ours, lambda p: 2 * p, state)
  their_doubled = optax.tree_map_params(theirs, lambda p: 2 * p, their_state)
  _assert_trees(doubled["adam"].mu, jax.tree.map(lambda m: 2 * m, state["adam"].mu))
  _assert_trees(doubled["adam"].mu, their_doubled[0].mu, rtol=ADAM_VS_OPTAX)
  _assert_trees(doubled["adam"].nu, their_doubled[0].nu, rtol=ADAM_VS_OPTAX)
  # Counts and hyperparameters are not params-shaped: kept, or transformed apart.
  assert doubled["adam"].count is state["adam"].count
  assert float(gtx.hparams(doubled)["lr.learning_rate"]) == pytest.approx(0.1)
  specs = jax.tree.map(lambda p: f"spec{p.ndim}", params)
  mapped = gtx.tree_utils.tree_map_params(ours, lambda _, spec: spec, state, specs,
                               transform_non_params=lambda _: "replicated")
  assert mapped["adam"].mu == specs and mapped["adam"].nu == specs
  assert mapped["adam"].count == "replicated"
  assert mapped["adam"].hparams["b1"] == mapped["lr"].hparams["learning_rate"] == "replicated"


def test_tree_map_params_on_a_named_chain():
  params = _params()
  tx = gtx.chain(clip=gtx.clip_by_global_norm(1.0),
                 opt=gtx.chain(momentum=gtx.trace(0.9), adam=gtx.scale_by_adam()),
                 decay=gtx.add_decayed_weights(1e-4), lr=gtx.scale_by_learning_rate(0.1))
  state = tx.init(params)
  shapes = gtx.tree_utils.tree_map_params(tx, lambda p: p.shape, state, transform_non_params=lambda _: None)
  expected = jax.tree.map(lambda p: p.shape, params)
  assert shapes["opt.momentum"].trace == expected
  assert shapes["opt.adam"].mu == expected and shapes["opt.adam"].nu == expected
  assert shapes["opt.adam"].count is None
  assert set(gtx.hparams(shapes).values()) == {None}
  assert list(shapes) == list(state)  # the chain's stage names survive
  # An init function works as well as a transformation; a foreign state is an error.
  same = gtx.tree_utils.tree_map_params(tx.init, lambda p: p.shape, state,
                             transform_non_params=lambda _: None)
  assert same["opt.adam"].mu == expected
  with pytest.raises(gtx.StructureError, match="tree_map_params: the state does not have"):
    gtx.tree_utils.tree_map_params(tx, lambda p: p, gtx.adam(0.1).init(params))


# ---------------------------------------------------------------------------- snapshot


@pytest.mark.parametrize("jit", [False, True])
def test_snapshot_records_updates_where_it_stands(jit):
  params = _params()
  tx = gtx.chain(sgd=gtx.sgd(0.1, momentum=0.9),
                 before=gtx.snapshot("norm", gtx.tree.global_norm),
                 clip=gtx.clip_by_global_norm(0.05),
                 after=gtx.snapshot("norm", gtx.tree.global_norm))
  history, state = _run(tx, params, 3, jit=jit)
  plain, _ = _run(gtx.chain(gtx.sgd(0.1, momentum=0.9), gtx.clip_by_global_norm(0.05)),
                  params, 3, jit=jit)
  for (u, _), (pu, _) in zip(history, plain):
    _assert_trees(u, pu)  # a snapshot never changes the updates
  # The norms at the last step, against numpy: momentum of the gradients, then the clip.
  grads = [_grads(p, t) for t, p in enumerate([params] + [p for _, p in history[:-1]])]
  m = None
  for g in grads:
    flat = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(g)])
    m = flat if m is None else flat + 0.9 * m
  norm = 0.1 * np.linalg.norm(m)
  values = gtx.stats(state)
  np.testing.assert_allclose(float(values["before.norm"]), norm, rtol=1e-5)
  np.testing.assert_allclose(float(values["after.norm"]), min(norm, 0.05), rtol=1e-5)
  assert state["before"].measurement["norm"] is values["before.norm"]
  with pytest.raises(ValueError, match="snapshot: measure_name must be a string"):
    gtx.snapshot("a.b", gtx.tree.global_norm)


def test_snapshot_keeps_its_state_structure_or_names_the_leaf_that_lost_its_array():
  # A tree-valued measure of a leaf None at init and None in the updates: its
  # measurement stays a MaskedNode, and the state keeps its structure.
  tx = gtx.snapshot("abs", lambda u: jax.tree.map(jnp.abs, u))
  params = {"w": jnp.ones(2), "b": None}
  state = tx.init(params)
  _, new = tx.update({"w": jnp.array([-3.0, 4.0]), "b": None}, state, params)
  assert jax.tree.structure(new) == jax.tree.structure(state)
  np.testing.assert_array_equal(gtx.stats(new)["abs"]["w"], [3.0, 4.0])
  # A leaf given to init whose gradient is None would lose its array (a retrace,
  # a lax.scan error): refused, naming its key path, as a stage's moment is.
  params = {"w": jnp.ones(2), "b": jnp.ones(3)}
  with pytest.raises(gtx.StructureError, match=r"snapshot: measure 'abs' of the updates and "
                     r"the state's 'abs' differ in shape at key path \['b'\]: no array"):
    tx.update({"w": jnp.ones(2), "b": None}, tx.init(params), params)
