"""Named chains: state by name, stage paths in errors, carrying state into an edited chain,
and the table of errors a user can act on."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx
from gradtx.tree import MaskedNode


def _params():
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(2,)), jnp.float32)}


def _grads(t):
  rng = np.random.default_rng(100 + t)
  return {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(2,)), jnp.float32)}


def _steps(tx, state, params, ts, **extra):
  for t in ts:
    updates, state = tx.update(_grads(t), state, params, **extra)
    params = gtx.apply_updates(params, updates)
  return params, state


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------- chains


def test_names_state_by_name_and_nesting():
  tx = gtx.chain(gtx.scale(2.0), gtx.scale(3.0),
                 inner=gtx.chain(adam=gtx.scale_by_adam(), lr=gtx.scale_by_learning_rate(0.1)))
  state = tx.init(_params())
  assert list(state) == ["scale", "scale_1", "inner"]
  assert state["inner.adam"].mu["w"].shape == (3, 2)
  assert state["inner"]["adam"] is state["inner.adam"]
  assert set(gtx.hparams(state)) == {"scale.step_size", "scale_1.step_size", "inner.adam.b1",
                                     "inner.adam.b2", "inner.adam.eps", "inner.adam.eps_root",
                                     "inner.lr.learning_rate"}
  updates, _ = tx.update({"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, state)
  # 6 g through Adam's first step is sign(g): -0.1 after the learning rate.
  np.testing.assert_allclose(updates["b"], [-0.1, -0.1], rtol=1e-6)


def test_replace_reaches_a_nested_stage_by_its_dotted_name():
  """state["inner.adam"] reads a nested stage; replace took only the top-level names
  ("no stage 'inner.adam'"), so resetting one nested stage meant rebuilding each level."""
  tx = gtx.chain(clip=gtx.clip(1.0),
                 inner=gtx.chain(adam=gtx.scale_by_adam(), lr=gtx.scale_by_learning_rate(0.1)))
  params = _params()
  state = tx.init(params)
  for _ in range(2):
    _, state = tx.update(params, state, params)
  reset = state.replace(**{"inner.adam": gtx.scale_by_adam().init(params)})
  assert int(reset["inner.adam"].count) == 0 and int(state["inner.adam"].count) == 2
  assert reset["inner.lr"] is state["inner.lr"] and reset["clip"] is state["clip"]
  # The next step is the first of a fresh Adam: sign(g) after the learning rate.
  updates, reset = tx.update(params, reset, params)
  np.testing.assert_allclose(updates["b"], [-0.1, -0.1], rtol=1e-6)
  assert int(reset["inner.adam"].count) == 1
  with pytest.raises(KeyError, match=r"no stage 'adam_1' in 'inner'; its stages are "
                                     r"\['adam', 'lr'\]"):
    state.replace(**{"inner.adam_1": None})
  with pytest.raises(KeyError, match=r"'clip' is a stage's state \(EmptyState\), not a chain"):
    state.replace(**{"clip.x": None})


def test_stages_inside_a_wrapper_are_read_and_replaced_by_the_names_hparams_gives():
  # hparams named them "safe.adam.b1", "groups.mat.adam.b1"; state["safe.adam"] raised
  # (pointing to state['safe'].inner_state['adam']), and replace could not reach them.
  params = _params()
  tx = gtx.chain(safe=gtx.apply_if_finite(gtx.adam(0.1), 3),
                 groups=gtx.partition({"mat": gtx.adam(0.1), "vec": gtx.sgd(0.1)},
                                      {"w": "mat", "b": "vec"}),
                 every=gtx.multi_steps(gtx.adam(0.1), 1))
  state = tx.init(params)
  for _ in range(2):
    _, state = tx.update(params, state, params)
  assert {"safe.adam.b1", "groups.mat.adam.b1", "every.adam.b1"} <= set(gtx.hparams(state))
  for name, field in (("safe", "inner_state"), ("groups", "inner_states"),
                      ("every", "inner_state")):
    inner = "mat.adam" if name == "groups" else "adam"
    stages = getattr(state[name], field)
    assert state[f"{name}.{inner}"] is stages[inner]
    fresh = tx.init(params)[f"{name}.{inner}"]
    reset = state.replace(**{f"{name}.{inner}": fresh})
    assert type(reset[name]) is type(state[name])
    assert reset[f"{name}.{inner}"] is fresh and int(state[f"{name}.{inner}"].count) == 2
    others = [k for k in ("safe", "groups", "every") if k != name]
    assert all(reset[k] is state[k] for k in others)
    _, stepped = tx.update(params, reset, params)  # the replaced state steps
    assert int(stepped[f"{name}.{inner}"].count) == 1


def test_stages_inside_a_wrapper_inside_a_wrapper_are_read_and_replaced_by_hparams_names():
  # hparams named them "safe.adam.b1" through both wrappers; state["safe.adam"] raised
  # "'safe' is a stage's state (ApplyIfFiniteState), not a chain, and has no field 'adam'".
  params = _params()
  tx = gtx.chain(safe=gtx.apply_if_finite(gtx.masked(gtx.adam(0.1), {"w": True, "b": False}), 3),
                 every=gtx.multi_steps(gtx.apply_if_finite(gtx.adam(0.1), 3), 1))
  state = tx.init(params)
  for _ in range(2):
    _, state = tx.update(params, state, params)
  assert {"safe.adam.b1", "every.adam.b1", "every.max_consecutive_errors"} <= set(gtx.hparams(state))
  for name in ("safe", "every"):
    stages = state[name].inner_state.inner_state
    assert state[f"{name}.adam"] is stages["adam"] and state[f"{name}.lr"] is stages["lr"]
    fresh = tx.init(params)[f"{name}.adam"]
    reset = state.replace(**{f"{name}.adam": fresh})
    assert type(reset[name]) is type(state[name])
    assert type(reset[name].inner_state) is type(state[name].inner_state)
    assert reset[name].inner_state.inner_state["lr"] is stages["lr"]
    assert reset[f"{name}.adam"] is fresh and int(state[f"{name}.adam"].count) == 2
    _, stepped = tx.update(params, reset, params)
    assert int(stepped[f"{name}.adam"].count) == 1
  with pytest.raises(KeyError, match=r"'safe' is a stage's state \(ApplyIfFiniteState\), not a "
                     r"chain, and has no field 'adma'; .* it wraps the stages \['adam', 'lr'\]"):
    state["safe.adma"]


def test_chain_matches_optax_chain():
  params = _params()
  ours = gtx.chain(clip=gtx.clip_by_global_norm(1.0), momentum=gtx.trace(0.9),
                   lr=gtx.scale_by_learning_rate(0.1))
  theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.trace(0.9), optax.scale(-0.1))
  state = ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    their_state = theirs.init(params)
  for t in range(4):
    u, state = ours.update(_grads(t), state, params)
    with jax.numpy_dtype_promotion("standard"):
      ou, their_state = theirs.update(_grads(t), their_state, params)
    # Bitwise at jax 0.10; at 0.8 and 0.9 some entries are a few units in the last place
    # apart (up to 6e-9 on entries near 0.05): those versions' XLA rounds differently
    # (test_zoo's numpy references, within their tolerances, hold at 0.8 and 0.9 too).
    assert jax.tree.structure(u) == jax.tree.structure(ou)
    for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(ou)):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)


def test_optax_stage_error_gets_a_note_naming_the_stage():
  tx = gtx.chain(outer=gtx.chain(opt=optax.scale_by_adam()))
  state = tx.init(_params())
  with pytest.raises(ValueError) as info:
    tx.update({"w": jnp.ones((3, 2))}, state)
  assert not isinstance(info.value, gtx.GradtxError)  # keeps its own type
  assert "gradtx: raised in stage 'outer.opt'" in info.value.__notes__


def test_positional_optax_stages_are_named_after_the_function_that_built_them():
  # Every optax transformation is one NamedTuple type: positional stages were all named
  # 'gradienttransformation' (then _1, _2), and repr showed two function addresses each.
  tx = gtx.chain(optax.clip(1.0), gtx.adam(0.1), optax.zero_nans(), optax.clip(2.0),
                 optax.MultiSteps(optax.sgd(0.1), 2).gradient_transformation())
  assert list(tx.init(_params())) == ["clip", "adam", "zero_nans", "clip_1", "multisteps"]
  assert "  clip=clip(wrapped=optax.clip),\n" in repr(tx)
  assert "  multisteps=multisteps(wrapped=optax.MultiSteps),\n" in repr(tx)
  assert " at 0x" not in repr(tx)


def test_positional_stage_names_are_identifiers():
  # A lambda's stage was named '<lambda>', and a dotted name made a stage that state[...]
  # and hparams split at the dot ("no stage 'my' in this chain state").
  tx = gtx.chain(gtx.stateless(lambda u, p: u), gtx.stateless_with_tree_map(lambda g, p: g))
  assert list(tx.init(_params())) == ["stateless", "stateless_with_tree_map"]
  adam = gtx.adam(0.1)
  dotted = gtx.GradientTransformation(adam.init, adam.update, name="my.stage")
  with pytest.raises(ValueError, match=r"^chain: a positional stage is named 'my.stage' .* "
                     r"pass it by keyword: gtx.chain\(my_stage=tx\)"):
    gtx.chain(dotted)
  assert list(gtx.hparams(gtx.chain(my_stage=dotted).init(_params()))) == [
      "my_stage.adam.b1", "my_stage.adam.b2", "my_stage.adam.eps", "my_stage.adam.eps_root",
      "my_stage.lr.learning_rate"]


def test_error_in_init_names_the_stage():
  tx = gtx.chain(decay=gtx.add_decayed_weights(0.1, mask={"typo": True}))
  with pytest.raises(gtx.StructureError, match=r"stage 'decay': masked: .*\['typo'\]"):
    tx.init(_params())


# ---------------------------------------------------------------------------- carry_state


def test_adding_clip_in_front_of_adam_keeps_the_moments():
  params = _params()
  old_tx = gtx.adam(0.1)
  params_old, old = _steps(old_tx, old_tx.init(params), params, range(3))

  edited = gtx.chain(clip=gtx.clip_by_global_norm(1e6), adam=gtx.scale_by_adam(),
                     lr=gtx.scale_by_learning_rate(0.1))
  state, report = gtx.carry_state(old, edited.init(params))
  assert report == {"carried": ["adam", "lr"], "fresh": ["clip"], "mismatched": [],
                    "dropped": [], "hparams_differ": []}
  for field in ("count", "mu", "nu"):
    _assert_same(getattr(state["adam"], field), getattr(old["adam"], field))
  # With a clip that never clips, the edited chain continues exactly where adam was.
  expected, _ = _steps(old_tx, old, params_old, range(3, 6))
  got, _ = _steps(edited, state, params_old, range(3, 6))
  _assert_same(got, expected)


def test_removed_renamed_and_mismatched_stages_are_reported():
  params = _params()
  old = gtx.chain(clip=gtx.clip(1.0), adam=gtx.scale_by_adam(),
                  lr=gtx.scale_by_learning_rate(0.1)).init(params)
  new = gtx.chain(adam=gtx.scale_by_adam(mu_dtype=jnp.bfloat16), momentum=gtx.trace(0.9),
                  lr=gtx.scale_by_learning_rate(0.1)).init(params)
  state, report = gtx.carry_state(old, new)
  assert report["carried"] == ["lr"]
  assert report["mismatched"] == ["adam"] and report["fresh"] == ["adam", "momentum"]
  assert report["dropped"] == ["clip"]
  assert state["adam"].mu["w"].dtype == jnp.bfloat16   # the fresh state, not the old one
  with pytest.raises(gtx.StructureError, match=r"fresh \['adam', 'momentum'\].*dropped \['clip'\]"):
    gtx.carry_state(old, new, strict=True)


def test_nested_chains_and_wrapped_chains_are_matched_by_name():
  params = _params()
  old_tx = gtx.chain(safe=gtx.apply_if_finite(
      gtx.chain(pre=gtx.chain(adam=gtx.scale_by_adam()), lr=gtx.scale_by_learning_rate(0.1)), 3))
  _, old = _steps(old_tx, old_tx.init(params), params, range(2))
  bad = jax.tree.map(lambda g: g * jnp.nan, _grads(9))
  _, old = old_tx.update(bad, old, params)   # one skipped step in the wrapper's own counters

  new_tx = gtx.chain(safe=gtx.apply_if_finite(
      gtx.chain(pre=gtx.chain(clip=gtx.clip(1.0), adam=gtx.scale_by_adam()),
                lr=gtx.scale_by_learning_rate(0.1)), 3))
  state, report = gtx.carry_state(old, new_tx.init(params), strict=False)
  assert report["carried"] == ["safe.pre.adam", "safe.lr", "safe"]
  assert report["fresh"] == ["safe.pre.clip"] and not report["dropped"]
  assert int(state["safe"].total_notfinite) == 1
  _assert_same(state["safe"].inner_state["pre.adam"].mu, old["safe"].inner_state["pre.adam"].mu)


def test_partition_groups_are_carried_by_label():
  params = _params()
  labels = {"w": "decay", "b": "no_decay"}
  old_tx = gtx.partition({"decay": gtx.adamw(0.1, weight_decay=0.1), "no_decay": gtx.adam(0.1)},
                         labels)
  _, old = _steps(old_tx, old_tx.init(params), params, range(2))
  new_tx = gtx.partition({"decay": gtx.chain(clip=gtx.clip(1.0), opt=gtx.adamw(0.1)),
                          "no_decay": gtx.adam(0.1)}, labels)
  state, report = gtx.carry_state(old, new_tx.init(params))
  assert report["carried"] == ["no_decay.adam", "no_decay.lr"]
  assert report["fresh"] == ["decay.clip", "decay.opt"]
  assert report["dropped"] == ["decay.adam", "decay.decay", "decay.lr"]
  _assert_same(state.inner_states["no_decay.adam"].nu, old.inner_states["no_decay.adam"].nu)


def test_hyperparameters_are_carried_or_taken_from_the_edit():
  params = _params()
  schedule = gtx.schedules.linear_schedule(1.0, 0.0, 10)
  old_tx = gtx.chain(adam=gtx.scale_by_adam(b1=0.9), lr=gtx.scale_by_learning_rate(schedule))
  _, old = _steps(old_tx, old_tx.init(params), params, range(4))
  old = gtx.set_hparams(old, {"adam.b1": 0.5})

  new_tx = gtx.chain(clip=gtx.clip(1.0), adam=gtx.scale_by_adam(b1=0.8),
                     lr=gtx.scale_by_learning_rate(schedule))
  kept, report = gtx.carry_state(old, new_tx.init(params))
  assert report["hparams_differ"] == ["adam.b1", "lr.learning_rate"]
  np.testing.assert_allclose(float(gtx.hparams(kept)["adam.b1"]), 0.5)  # the value set by name
  assert int(kept["lr"].hparams.count) == 4                             # the schedule goes on

  taken, _ = gtx.carry_state(old, new_tx.init(params), hparams="new")
  np.testing.assert_allclose(float(gtx.hparams(taken)["adam.b1"]), 0.8)
  assert int(taken["lr"].hparams.count) == 4
  _assert_same(taken["adam"].mu, old["adam"].mu)
  # A float that became a schedule cannot keep the old value: the edit's is used.
  sched_tx = gtx.chain(adam=gtx.scale_by_adam(b1=gtx.schedules.constant_schedule(0.7)),
                       lr=gtx.scale_by_learning_rate(schedule))
  moved, report = gtx.carry_state(old, sched_tx.init(params))
  assert report["carried"] == ["adam", "lr"]
  np.testing.assert_allclose(float(gtx.hparams(moved)["adam.b1"]), 0.7, rtol=1e-6)


def test_carry_state_into_an_unnamed_wrapper_at_the_root():
  params = _params()
  tx = gtx.apply_if_finite(gtx.adam(0.1), 2)
  _, old = _steps(tx, tx.init(params), params, range(2))
  state, report = gtx.carry_state(old, tx.init(params), strict=True)
  assert report["carried"] == ["adam", "lr", "<root>"]
  _assert_same(state, old)


# ---------------------------------------------------------------------------- the error table


def _state_of(tx):
  return tx.init(_params())


def _update(tx, grads=None, params=None, state=None, **extra):
  params_ = _params()
  state = tx.init(params_) if state is None else state
  return tx.update(_params() if grads is None else grads, state, params, **extra)


def _bad_skip_fn(updates, step, params):
  return jnp.zeros(2, bool), ()


ADAM = functools.partial(gtx.adam, 0.1)
ERRORS = [
    # Bad hyperparameters at construction: the stage, the argument, the range, the value.
    (lambda: gtx.adam(-0.1), gtx.HyperparameterError,
     r"adam: learning_rate must be in \[0, inf\), got -0\.1"),
    (lambda: gtx.scale_by_adam(b1=1.0), gtx.HyperparameterError,
     r"scale_by_adam: b1 must be in \[0, 1\), got 1\.0"),
    # A string (a YAML or command-line value left unparsed) and a bool (a flag in a
    # number's place: sgd(0.1, True)) were read as numbers.
    (lambda: gtx.adam("1e-3"), gtx.HyperparameterError,
     r"adam: learning_rate must be a number in \[0, inf\), got '1e-3' "
     r"\(convert it with float\(\)\) \(checked by scale_by_learning_rate\)"),
    (lambda: gtx.sgd(0.1, True), gtx.HyperparameterError,
     r"sgd: momentum must be a number in \[0, inf\), got True"),
    # numpy reads a string array as the number it spells: np.array('1e-3') was 0.001.
    (lambda: gtx.adam(np.array("1e-3")), gtx.HyperparameterError,
     r"adam: learning_rate must be a number in \[0, inf\), got array\('1e-3', dtype='<U4'\) "
     r"\(convert it with float\(\)\)"),
    (lambda: gtx.set_hparams(_state_of(ADAM()), {"adam.b1": jnp.asarray(False)}),
     gtx.HyperparameterError, r"adam: b1 must be a number in \[0, 1\), got Array\(False"),
    # A complex number: numpy kept its real part with only a warning (0.1 for 0.1+0.2j).
    (lambda: gtx.set_hparams(_state_of(ADAM()), {"lr.learning_rate": np.complex64(0.1 + 0.2j)}),
     gtx.HyperparameterError,
     r"lr: learning_rate must be a real number in \[0, inf\), got np\.complex64\(0\.1\+0\.2j\)"),
    (lambda: gtx.scale_by_adam(b1=jnp.asarray(0.9 + 0.1j)), gtx.HyperparameterError,
     r"scale_by_adam: b1 must be a real number in \[0, 1\), got Array\(0\.9\+0\.1j"),
    (lambda: jax.jit(lambda v: gtx.set_hparams(_state_of(ADAM()), {"adam.b2": v}))(
        jnp.asarray(0.9 + 0.1j)), gtx.HyperparameterError,
     r"adam: b2 must be a real number in \[0, 1\), got JitTracer"),
    (lambda: gtx.apply_if_finite(ADAM(), max_consecutive_errors=-1), gtx.HyperparameterError,
     r"apply_if_finite: max_consecutive_errors must be in \[0, 2147483647\] \(an integer\)"),
    (lambda: gtx.apply_if_finite(ADAM(), max_consecutive_errors=1.5), gtx.HyperparameterError,
     r"max_consecutive_errors must be in \[0, 2147483647\] \(an integer\), got 1\.5"),
    # Set on a wrapper's state (no chain around it): the message named the hyperparameter
    # as its stage, "max_consecutive_errors: max_consecutive_errors must be ...".
    (lambda: gtx.set_hparams(_state_of(gtx.apply_if_finite(ADAM(), 2)),
                             {"max_consecutive_errors": -1}), gtx.HyperparameterError,
     r"^set_hparams: max_consecutive_errors must be in \[0, 2147483647\] \(an integer\), got -1$"),
    (lambda: gtx.set_hparams(_state_of(gtx.apply_if_finite(ADAM(), 2)),
                             {"adam.b1": 1.5}), gtx.HyperparameterError,
     r"^adam: b1 must be in \[0, 1\), got 1\.5$"),
    # An integer held as an int32: inf and 1e10 raised OverflowError.
    (lambda: gtx.apply_every(k=float("inf")), gtx.HyperparameterError,
     r"apply_every: k must be in \[1, 2147483647\] \(an integer\), got inf"),
    (lambda: gtx.set_hparams(_state_of(gtx.chain(every=gtx.apply_every(2))), {"every.k": 1e10}),
     gtx.HyperparameterError,
     r"every: k must be in \[1, 2147483647\] \(an integer\), got 10000000000\.0"),
    # An array broadcasts against every leaf: a per-column rate, a (1,) step of a scalar.
    (lambda: gtx.adam((0.1, 0.2)), gtx.HyperparameterError,
     r"adam: learning_rate must be a scalar, got shape \(2,\)\. Values per "
     r"parameter: gtx\.partition"),
    (lambda: gtx.sgd(0.1, momentum=jnp.array([0.9])), gtx.HyperparameterError,
     r"sgd: momentum must be a scalar, got shape \(1,\)"),
    # A schedule's value at step 0 is checked as a value is; one that cannot take the count.
    (lambda: _state_of(gtx.sgd(lambda count: -0.1)), gtx.HyperparameterError,
     r"stage 'lr': scale_by_learning_rate: learning_rate must be in \[0, inf\), got -0\.1 "
     r"\(its schedule's value at step 0\)"),
    (lambda: _state_of(gtx.sgd(lambda count: jnp.nan)), gtx.HyperparameterError,
     r"learning_rate must be in \[0, inf\), got nan \(its schedule's value at step 0\)"),
    (lambda: _state_of(gtx.sgd(lambda count: jnp.inf)), gtx.HyperparameterError,
     r"learning_rate must be a finite number in \[0, inf\), got inf \(its schedule's value "
     r"at step 0\)"),
    (lambda: _state_of(gtx.sgd(lambda count: "0.1")), gtx.HyperparameterError,
     r"learning_rate must be a number in \[0, inf\), got '0\.1'"),
    (lambda: _state_of(gtx.sgd(lambda count: jnp.full(2, 0.1))), gtx.HyperparameterError,
     r"learning_rate must be a scalar, got shape \(2,\)\. Values per parameter: .* \(its "
     r"schedule's value at step 0\)"),
    (lambda: gtx.sgd(lambda: 0.1), gtx.HyperparameterError,
     r"sgd: learning_rate is a function, so it is a schedule, called with the step count as "
     r"schedule\(count\); the function given takes \(\) \(checked by scale_by_learning_rate\)"),
    (lambda: gtx.multi_steps(ADAM(), every_k_schedule=0), gtx.HyperparameterError,
     r"multi_steps: every_k_schedule must be in \[1, 2147483647\] \(an integer\), got 0"),
    (lambda: gtx.lookahead(ADAM(), sync_period=2, slow_step_size=1.5), gtx.HyperparameterError,
     r"lookahead: slow_step_size must be in \[0, 1\], got 1\.5"),
    (lambda: gtx.reduce_on_plateau(factor=0.0), gtx.HyperparameterError,
     r"reduce_on_plateau: factor must be in \(0, 1\), got 0\.0"),
    (lambda: gtx.reduce_on_plateau(rtol=0.0, atol=0.0), gtx.HyperparameterError,
     r"rtol and atol cannot both be 0"),
    # Hyperparameters by name.
    (lambda: gtx.set_hparams(_state_of(ADAM()), {"lr.learning_rat": 0.1}),
     gtx.HyperparameterError,
     r"unknown hyperparameter 'lr\.learning_rat' \(did you mean 'lr\.learning_rate'\?\); "
     r"the valid names are \['adam\.b1', .*'lr\.learning_rate'\]"),
    (lambda: gtx.set_hparams(_state_of(ADAM()), {"adam.b2": 1.5}), gtx.HyperparameterError,
     r"adam: b2 must be in \[0, 1\), got 1\.5"),
    # inf was taken (an unbounded range took it) and stepped by NaN.
    (lambda: gtx.set_hparams(_state_of(ADAM()), {"lr.learning_rate": float("inf")}),
     gtx.HyperparameterError, r"lr: learning_rate must be a finite number in \[0, inf\), got inf"),
    (lambda: gtx.set_hparams(_state_of(ADAM()), {"adam.eps": jnp.asarray(jnp.inf)}),
     gtx.HyperparameterError, r"adam: eps must be a finite number in \[0, inf\), got inf"),
    (lambda: gtx.set_hparams(_state_of(gtx.adam(gtx.schedules.constant_schedule(0.1))),
                             {"lr.learning_rate": 0.1}),
     gtx.HyperparameterError, r"lr\.learning_rate follows a schedule"),
    (lambda: gtx.set_hparams(_state_of(ADAM()), {"lr.learning_rate": jnp.ones(3)}),
     gtx.HyperparameterError, r"lr\.learning_rate has shape \(\); got a value of shape \(3,\)"),
    # Grads, params and state that disagree: the stage path and the key path.
    (lambda: _update(gtx.chain(outer=ADAM()), grads={"w": jnp.ones((3, 2))}),
     gtx.StructureError,
     r"stage 'outer\.adam': scale_by_adam: updates and state\.mu differ in structure: key "
     r"path \['b'\]"),
    # The same for a primitive outside any chain (optax.chain's stages are unnamed).
    (lambda: _update(gtx.scale_by_adam(), grads={"w": jnp.ones((3, 2))}), gtx.StructureError,
     r"^scale_by_adam: updates and state\.mu differ in structure: key path \['b'\]"),
    (lambda: _update(ADAM(), grads={"w": jnp.ones((2, 3)), "b": jnp.ones(2)}),
     gtx.StructureError, r"stage 'adam': .*differ in shape at key path \['w'\]: \(2, 3\)"),
    # Adafactor's state holds statistics of another shape than the leaf's (its rows and
    # columns when factored): jax's broadcasting error from inside the step before.
    (lambda: _update(gtx.chain(f=gtx.scale_by_factored_rms(min_dim_size_to_factor=2)),
                     grads={"w": jnp.ones((4, 2)), "b": jnp.ones(2)}),
     gtx.StructureError, r"stage 'f': scale_by_factored_rms: updates and state differ in "
     r"shape at key path "
     r"\['w'\]: \(4, 2\) in updates, while state holds the statistics of another shape "
     r"\(v_row \(2,\), v_col \(3,\), v \(1,\)\)"),
    (lambda: _update(gtx.chain(f=gtx.scale_by_factored_rms()),
                     grads={"w": jnp.ones((3, 2)), "b": jnp.ones(3)}),
     gtx.StructureError, r"stage 'f': .*key path \['b'\]: \(3,\) in updates"),
    (lambda: _update(gtx.chain(opt=gtx.partition({"a": ADAM()}, lambda p: jax.tree.map(
        lambda _: "a", p))), grads={"w": jnp.ones((3, 2))}),
     gtx.StructureError, r"stage 'opt\.a\.adam': .*key path \['b'\]"),
    # Integer gradients: every rule would round its steps (Adam's to 0), before silently.
    (lambda: _update(gtx.chain(outer=ADAM()), grads={"w": jnp.ones((3, 2)),
                                                     "b": jnp.ones(2, jnp.int32)}),
     gtx.StructureError, r"chain: the updates at key path \['b'\] are int32; gradients must "
                         r"be floating point or complex"),
    # The same outside a chain: a primitive or wrapper used on its own rounded silently.
    (lambda: _update(gtx.scale_by_adam(), grads={"w": jnp.ones((3, 2)),
                                                "b": jnp.ones(2, jnp.int32)}),
     gtx.StructureError, r"^scale_by_adam: the updates at key path \['b'\] are int32"),
    (lambda: _update(gtx.multi_steps(ADAM(), 2), grads={"w": jnp.ones((3, 2)),
                                                       "b": jnp.ones(2, jnp.int32)}),
     gtx.StructureError, r"^multi_steps: the updates at key path \['b'\] are int32"),
    # A complex gradient of a real param: its real moments dropped the imaginary part,
    # silently, and only apply_updates refused the complex step.
    (lambda: _update(ADAM(), grads={"w": jnp.full((3, 2), 1 + 1j), "b": jnp.ones(2)},
                     params=_params()),
     gtx.StructureError, r"^adam: the updates at key path \['w'\] are complex64 and the params "
                         r"there are float32: a real parameter takes a real gradient"),
    (lambda: _update(gtx.scale_by_rprop(0.1), grads={"w": jnp.full((3, 2), 1j),
                                                     "b": jnp.ones(2)}, params=_params()),
     gtx.StructureError, r"^scale_by_rprop: the updates at key path \['w'\] are complex64"),
    # A stage without state given params checks them against the updates (sgd returned
    # a (2, 3) step for a (3, 2) parameter; clipping measured the norm of other leaves).
    (lambda: _update(gtx.sgd(0.1), grads={"w": jnp.ones((2, 3)), "b": jnp.ones(2)},
                     params=_params()),
     gtx.StructureError, r"stage 'lr': scale_by_learning_rate: params and updates differ in "
                         r"shape at key path \['w'\]"),
    (lambda: _update(gtx.chain(clip=gtx.clip_by_global_norm(1.0)),
                     grads={"w": jnp.ones((3, 2))}, params=_params()),
     gtx.StructureError, r"stage 'clip': clip_by_global_norm: params and updates differ in "
                         r"structure: key path "
                         r"\['b'\] is in params but not in updates"),
    # Another stage's state: named, where it was an AttributeError or a KeyError.
    (lambda: _update(gtx.chain(opt=gtx.scale(0.1)), state=gtx.chain(
        opt=gtx.trace(0.9)).init(_params())), gtx.StructureError,
     r"stage 'opt': scale: the state is a TraceState, where this stage's init makes an "
     r"EmptyState; pass the state this transformation's init made .*carry_state"),
    # The same in a bare primitive: an AttributeError before ('ChainState' object has no
    # attribute 'mu'); and a state of the same fields and hyperparameter names, which ran.
    (lambda: _update(gtx.scale_by_adam(), state=_state_of(gtx.sgd(0.1))), gtx.StructureError,
     r"^scale_by_adam: the state is a ChainState, where this stage's init makes a "
     r"ScaleByAdamState"),
    (lambda: _update(gtx.scale_by_belief(), state=_state_of(gtx.scale_by_adam())),
     gtx.StructureError, r"^scale_by_belief: the state is a ScaleByAdamState, where this "
                         r"stage's init makes a ScaleByBeliefState"),
    (lambda: _update(gtx.scale_by_adam(), state=_state_of(gtx.scale_by_adam())._asdict()),
     gtx.StructureError, r"the state is a dict, .*a checkpoint restored without a target gives "
                         r"plain containers: restore into the structure of tx\.init\(params\)"),
    (lambda: _update(gtx.scale(-0.5), state=_state_of(gtx.scale_by_learning_rate(0.1))),
     gtx.HyperparameterError, r"scale: the state holds the hyperparameters \['learning_rate'\], "
                              r"this stage has \['step_size'\]"),
    (lambda: _update(ADAM(), state=_state_of(gtx.sgd(0.1))), gtx.StructureError,
     r"the state does not belong to this chain: expected stages \['adam', 'lr'\], got \['lr'\]"
     r".*carry_state"),
    (lambda: _update(gtx.adamw(0.1)), gtx.MissingArgumentError,
     r"stage 'decay': add_decayed_weights needs the parameters"),
    (lambda: _update(gtx.chain(p=gtx.reduce_on_plateau())), gtx.MissingArgumentError,
     r"stage 'p': reduce_on_plateau needs the loss: call update\(grads, state, params, value=loss\)"),
    (lambda: _update(gtx.reduce_on_plateau(), value=jnp.ones(2)), gtx.StructureError,
     r"value must be a scalar loss, got shape \(2,\)"),
    # Masks, labels and wrappers.
    (lambda: _state_of(gtx.masked(ADAM(), {"w": True})), gtx.StructureError,
     r"masked: the params have key path \['b'\], which the mask does not cover"),
    (lambda: _state_of(gtx.masked(ADAM(), {"w": True, "b": True, "c": False})),
     gtx.StructureError, r"masked: the mask has key path \['c'\], which the params do not have"),
    (lambda: _state_of(gtx.masked(ADAM(), {"w": jnp.ones(2, bool), "b": True})),
     gtx.StructureError, r"the mask must hold Python bools .*key path \['w'\]"),
    (lambda: _state_of(gtx.partition({"a": ADAM()}, {"w": "a", "b": "c"})), gtx.StructureError,
     r"partition: the parameter at key path \['b'\] has label 'c', which has no "
     r"transformation; the labels of transforms are \['a'\]"),
    (lambda: gtx.partition({"a.b": ADAM()}, {"w": "a.b", "b": "a.b"}), ValueError,
     r"partition: label 'a\.b' must be a string that is a Python identifier"),
    (lambda: _update(gtx.lookahead(ADAM(), 2, 0.5), params=_params()), gtx.StructureError,
     r"lookahead: params must be LookaheadParams\(fast=\.\.\., slow=\.\.\.\)"),
    (lambda: _update(gtx.lookahead(ADAM(), 2, 0.5)), gtx.MissingArgumentError,
     r"lookahead needs the parameters"),
    (lambda: _update(gtx.multi_steps(ADAM(), 2, should_skip_update_fn=_bad_skip_fn)),
     gtx.StructureError, r"should_skip_update_fn must return a scalar bool first, got dtype "
                         r"bool and shape \(2,\)"),
    (lambda: gtx.chain(**{"not valid": ADAM()}), ValueError,
     r"chain: stage name 'not valid' must be a Python identifier"),
    (lambda: gtx.chain(3), TypeError, r"chain: expected a gradient transformation"),
    # optax's named_chain form, (name, transformation) pairs: one pair was taken as the
    # label, and the chain built without stages passed every update through.
    (lambda: gtx.named_chain(("clip", gtx.clip(1.0))), TypeError,
     r"named_chain: label must be a string .*got \('clip', clip\(max_delta=1\)\); for "
     r"optax's named_chain\(\('name', tx\), \.\.\.\) write gtx\.chain\(name=tx, \.\.\.\)"),
    # Two pairs, as optax's named_chain test writes them: Python's "takes 1 positional
    # argument but 2 were given" named neither form.
    (lambda: gtx.named_chain(("clip", gtx.clip(1.0)), ("sgd", gtx.sgd(0.1))), TypeError,
     r"^named_chain: label must be a string .*and the stages keywords; got 2 positional "
     r"arguments; for optax's named_chain\(\('name', tx\), \.\.\.\) write "
     r"gtx\.chain\(name=tx, \.\.\.\), or gtx\.chain\(\*\*dict\(pairs\)\)$"),
    (lambda: gtx.named_chain("opt", lr=3), TypeError,
     r"^named_chain: stage 'lr' must be a gradient transformation .*got int: 3$"),
    (lambda: gtx.set_hparams(_state_of(ADAM()), [("lr.learning_rate", 0.1)]), TypeError,
     r"set_hparams: values must be a mapping of dotted names to values .*got a list"),
    # Indexing a chain state: a stage's field, a number, a trailing dot.
    (lambda: _state_of(gtx.chain(opt=ADAM()))["opt.adam.mu"], KeyError,
     r"'opt\.adam' is a stage's state \(ScaleByAdamState\), not a chain: read 'mu' as an "
     r"attribute, state\['opt\.adam'\]\.mu"),
    # Through a wrapper's state, as hparams names it ("safe.adam.b1"), to a field.
    (lambda: _state_of(gtx.chain(safe=gtx.apply_if_finite(ADAM(), 2)))["safe.adam.mu"], KeyError,
     r"'safe\.adam' is a stage's state \(ScaleByAdamState\), not a chain: read 'mu' as an "
     r"attribute, state\['safe\.adam'\]\.mu"),
    (lambda: _state_of(gtx.chain(safe=gtx.apply_if_finite(ADAM(), 2)))["safe.adma"], KeyError,
     r"'safe' is a stage's state \(ApplyIfFiniteState\), not a chain, and has no field 'adma'; "
     r"its fields are \[.*\], and it wraps the stages \['adam', 'lr'\]"),
    # A hyperparameter, by the dotted name hparams gives it: the message listed the
    # stage's fields ("has no field 'learning_rate'; its fields are ['hparams']").
    (lambda: _state_of(gtx.chain(opt=ADAM()))["opt.lr.learning_rate"], KeyError,
     r"'opt\.lr' is a stage's state \(EmptyState\), not a chain: 'learning_rate' is one of "
     r"its hyperparameters, read by dotted name from "
     r"gtx\.hparams\(state\)\['opt\.lr\.learning_rate'\]"),
    (lambda: _state_of(gtx.chain(safe=gtx.apply_if_finite(ADAM(), 2)))[
        "safe.max_consecutive_errors"], KeyError,
     r"'max_consecutive_errors' is one of its hyperparameters, read by dotted name from "
     r"gtx\.hparams\(state\)\['safe\.max_consecutive_errors'\]"),
    (lambda: _state_of(gtx.chain(opt=ADAM()))["opt.adam.m"], KeyError,
     r"'opt\.adam' is a stage's state \(ScaleByAdamState\), not a chain, and has no field 'm'; "
     r"its fields are \['count', 'mu', 'nu', 'hparams'\]"),
    # optax's inject_hyperparams state holds them in .hyperparams: say where gradtx's are.
    (lambda: _state_of(ADAM()).hyperparams, AttributeError,
     r"'ChainState' object has no attribute 'hyperparams': a chain state maps stage names to "
     r"stage states, state\['adam'\]\.mu \(its stages are \['adam', 'lr'\]\), and every "
     r"hyperparameter is read by dotted name from gtx\.hparams\(state\)"),
    (lambda: _state_of(ADAM())[0], TypeError,
     r"a chain state is indexed by stage name \('adam', 'outer\.inner'\), got 0"),
    (lambda: _state_of(gtx.chain(opt=ADAM()))["opt."], KeyError,
     r"no stage '' in 'opt'; its stages are \['adam', 'lr'\]"),
    (lambda: gtx.stateless(0.1), TypeError,
     r"stateless: f must be a function f\(updates, params, \*\*hparams\), got 0\.1"),
    (lambda: _update(gtx.chain(acc=gtx.multi_steps(ADAM(), 2)), state=gtx.chain(
        acc=gtx.apply_if_finite(ADAM(), 2)).init(_params())), gtx.StructureError,
     r"stage 'acc': multi_steps: the state is an ApplyIfFiniteState, where this stage's init "
     r"makes a MultiStepsState"),
    # A state restored without a target (plain dicts): the hint says how to restore it;
    # carry_state would have carried nothing, silently.
    (lambda: _update(ADAM(), state=dict(_state_of(ADAM()))), gtx.StructureError,
     r"adam: the state does not belong to this chain: expected stages \['adam', 'lr'\], got "
     r"dict; a checkpoint restored without a target gives plain containers: restore into the "
     r"structure of tx\.init\(params\)"),
    (lambda: gtx.carry_state(dict(_state_of(ADAM())), _state_of(ADAM())), gtx.StructureError,
     r"carry_state: the old state is a dict, not a ChainState; a checkpoint restored without "
     r"a target"),
    # An integer param with a float update: its moments would be integers, its step garbage.
    (lambda: _update(ADAM(), grads={"w": jnp.ones((3, 2)), "b": jnp.ones(2)},
                     params={"w": jnp.ones((3, 2)), "b": jnp.ones(2, jnp.int32)}),
     gtx.StructureError,
     r"adam: the params at key path \['b'\] are int32, and their update is float32: only "
     r"floating-point params are stepped"),
    # apply_updates: a step the parameter's dtype cannot hold.
    (lambda: gtx.apply_updates({"w": jnp.ones(2)}, {"w": jnp.array([0.1 + 1j, 0.1])}),
     gtx.StructureError, r"apply_updates: the update at key path \['w'\] is complex64 and the "
                         r"parameter is float32, which cannot hold it"),
    (lambda: gtx.apply_updates({"w": jnp.array([1, 2])}, {"w": jnp.array([0.6, -0.6])}),
     gtx.StructureError, r"the update at key path \['w'\] is float32 and the parameter is int32"),
    (lambda: gtx.apply_updates({"w": jnp.ones(2)}, {"w": jnp.ones(())}), gtx.StructureError,
     r"updates and params differ in shape at key path \['w'\]: \(\) in updates, \(2,\) in "
     r"params"),
    (lambda: gtx.apply_updates({"w": jnp.ones(2)}, {"v": jnp.ones(2)}), gtx.StructureError,
     r"updates and params differ in structure: key path \['w'\] is in params but not in "
     r"updates"),
    # An optax state where a gradtx one belongs: the hint was about checkpoints restored
    # without a target, and a class of the same name read "the state is an
    # ApplyIfFiniteState, where this stage's init makes an ApplyIfFiniteState".
    (lambda: _update(ADAM(), state=optax.adam(0.1).init(_params())), gtx.StructureError,
     r"adam: the state does not belong to this chain: expected stages \['adam', 'lr'\], got "
     r"tuple; optax's states are not gradtx's, .*tx\.init\(params\)$"),
    (lambda: _update(gtx.apply_if_finite(ADAM(), 2),
                     state=optax.apply_if_finite(optax.adam(0.1), 2).init(_params())),
     gtx.StructureError,
     r"apply_if_finite: the state is an optax\.[\w.]+\.ApplyIfFiniteState, where this stage's "
     r"init makes a gradtx\.wrappers\._steps\.ApplyIfFiniteState; optax's states are not "
     r"gradtx's"),
    (lambda: gtx.carry_state(optax.adam(0.1).init(_params()), _state_of(ADAM())),
     gtx.StructureError,
     r"carry_state: the old state is a tuple, not a ChainState; optax's states are not "
     r"gradtx's"),
    # A transformation where its state belongs: hparams gave {}, set_hparams said the valid
    # names are [], and carry_state returned the transformation as the state.
    (lambda: gtx.hparams(ADAM()), TypeError,
     r"hparams: the state given is the transformation Chain, not a state; pass the state its "
     r"init makes, tx\.init\(params\)"),
    (lambda: gtx.set_hparams(optax.adam(0.1), {"lr.learning_rate": 0.1}), TypeError,
     r"set_hparams: the state given is the transformation GradientTransformationExtraArgs, "
     r"not a state"),
    (lambda: gtx.stats(gtx.monitor("norm")), TypeError,
     r"stats: the state given is the transformation GradientTransformation, not a state"),
    (lambda: gtx.carry_state(_state_of(ADAM()), gtx.adamw(0.1)), TypeError,
     r"carry_state: new is the transformation Chain, not a state; pass the state its init "
     r"makes, tx\.init\(params\)"),
    # carry_state.
    (lambda: gtx.carry_state(_state_of(ADAM()), _state_of(gtx.sgd(0.1)), strict=True),
     gtx.StructureError, r"could not carry every stage: fresh \[\].*dropped \['adam'\]"),
    (lambda: gtx.carry_state(_state_of(ADAM()), _state_of(ADAM()), hparams="newest"),
     ValueError, r"carry_state: hparams must be 'old' or 'new', got 'newest'"),
]


@pytest.mark.parametrize("make_error,kind,pattern", ERRORS,
                         ids=[f"{i}" for i in range(len(ERRORS))])
def test_error_table(make_error, kind, pattern):
  with pytest.raises(kind) as info:
    make_error()
  assert re.search(pattern, str(info.value)), f"{pattern!r} not in {str(info.value)!r}"


# Every stateful stage, small: each checks that its state is the one its init makes.
_MATRIX = {"w": jnp.ones((3, 2))}  # leaves every rule takes (muon and galore want matrices)
_ADAM = gtx.adam(0.1)
STATEFUL = [
    gtx.trace(0.9), gtx.ema(0.9), gtx.scale_by_rms(), gtx.scale_by_stddev(), gtx.scale_by_rss(),
    gtx.scale_by_adadelta(), gtx.scale_by_adam(), gtx.scale_by_amsgrad(), gtx.scale_by_adamax(),
    gtx.scale_by_radam(), gtx.scale_by_belief(), gtx.scale_by_yogi(), gtx.scale_by_novograd(),
    gtx.scale_by_adan(), gtx.scale_by_nadam(), gtx.scale_by_factored_rms(), gtx.scale_by_sm3(),
    gtx.zero_nans(), gtx.scale_by_lbfgs(), gtx.scale_by_zoom_linesearch(3),
    gtx.scale_by_backtracking_linesearch(3), gtx.monitor("norm", inner=_ADAM),
    gtx.monitor({"n": gtx.tree_utils.tree_norm}), gtx.add_noise(0.1, 0.5, seed=0),
    gtx.measure_with_ema(gtx.tree_utils.tree_norm, 0.9),
    gtx.scale_by_optimistic_gradient(), gtx.reduce_on_plateau(), gtx.scale_by_lion(),
    gtx.scale_by_rprop(0.1), gtx.scale_by_distance_over_gradients(), gtx.scale_by_polyak(),
    gtx.contrib.scale_by_acprop(), gtx.contrib.scale_by_ademamix(),
    gtx.contrib.scale_by_simplified_ademamix(), gtx.contrib.scale_by_adopt(),
    gtx.contrib.scale_by_cocob(), gtx.contrib.split_real_and_imaginary(_ADAM),
    gtx.contrib.scale_by_dadapt_adamw(), gtx.contrib.scale_by_dog(("heuristic", 1e-6)),
    gtx.contrib.scale_by_dowg(),
    gtx.contrib.scale_by_galore(rank=1), gtx.contrib.scale_by_madgrad(0.1),
    gtx.contrib.mechanize(_ADAM), gtx.contrib.scale_by_momo(), gtx.contrib.scale_by_momo_adam(),
    gtx.contrib.scale_by_muon(), gtx.contrib.scale_by_prodigy(),
    gtx.contrib.sam(_ADAM, gtx.sgd(0.1)), gtx.contrib.schedule_free(gtx.sgd(1.0), 0.1),
    gtx.contrib.differentially_private_aggregate(1.0, 0.1, seed=0),
    gtx.contrib.hutchinson_estimator_diag_hessian(0), gtx.contrib.scale_by_sophia(),
    # Wrappers (checked since they were written; here so that the list is complete).
    gtx.masked(_ADAM, {"w": True}), gtx.partition({"a": _ADAM}, {"w": "a"}),
    gtx.multi_steps(_ADAM, 2), gtx.apply_if_finite(_ADAM, 2),
    gtx.snapshot("n", gtx.tree_utils.tree_norm),
    gtx.conditionally_mask(_ADAM, lambda step: step > 0),
    gtx.conditionally_transform(_ADAM, lambda step: step > 0), gtx.apply_every(2),
]
# Exported NamedTuples that are no stage's state, or whose stages other tests cover.
_NOT_STAGE_STATES = {"BacktrackingLinesearchInfo", "ZoomLinesearchInfo", "GaLoreDimensionNumbers",
                     "MuonDimensionNumbers", "LookaheadParams", "MaskedNode",
                     "EmptyState",      # stateless: the error table's 'scale' case
                     "LookaheadState"}  # lookahead's params are LookaheadParams: test_wrappers


@pytest.mark.parametrize("tx", STATEFUL, ids=[f"{tx.name}-{i}" for i, tx in enumerate(STATEFUL)])
@pytest.mark.parametrize("other", ["chain", "another_stage", "restored_without_types"])
def test_a_stage_given_a_state_its_init_did_not_make_names_both(tx, other):
  own = tx.init(_MATRIX)
  wrong = {"chain": lambda: gtx.sgd(0.1, momentum=0.9).init(_MATRIX),
           "another_stage": lambda: (gtx.scale_by_belief() if isinstance(own, gtx.ScaleByAdamState)
                                     else gtx.scale_by_adam()).init(_MATRIX),
           "restored_without_types": lambda: list(own)}[other]()
  with pytest.raises(gtx.StructureError) as info:
    tx.update(_MATRIX, wrong, _MATRIX, value=jnp.ones(()), value_fn=lambda p: jnp.ones(()),
              grad=_MATRIX, obj_fn=lambda p: jnp.ones(()))
  assert re.match(f"{tx.name}: the state is an? {type(wrong).__name__}, where this stage's "
                  f"init makes an? {type(own).__name__}; ", str(info.value)), str(info.value)


def test_every_exported_stage_state_is_in_the_wrong_state_test():
  exported = {kind.__name__ for module in (gtx, gtx.transforms, gtx.contrib) for name in dir(module)
              if isinstance(kind := getattr(module, name), type) and issubclass(kind, tuple)
              and hasattr(kind, "_fields")}  # by class: optax's aliases name the same classes
  covered = {type(tx.init(_MATRIX)).__name__ for tx in STATEFUL}
  assert exported - _NOT_STAGE_STATES == covered - {"EmptyState"}  # scale_by_polyak's


def test_wrapping_or_unwrapping_a_stage_keeps_its_state():
  params = _params()
  plain = gtx.chain(clip=gtx.clip(1.0), opt=gtx.adam(0.1))
  _, old = _steps(plain, plain.init(params), params, range(3))
  wrapped = gtx.chain(clip=gtx.clip(1.0), opt=gtx.apply_if_finite(gtx.adam(0.1), 2))
  state, report = gtx.carry_state(old, wrapped.init(params))
  assert report["carried"] == ["clip", "opt.adam", "opt.lr"]
  assert report["fresh"] == ["opt (ApplyIfFiniteState)"] and not report["mismatched"]
  _assert_same(state["opt"].inner_state, old["opt"])
  assert int(state["opt"].notfinite_count) == 0
  back, report = gtx.carry_state(state, plain.init(params))
  assert report["dropped"] == ["opt (ApplyIfFiniteState)"]
  _assert_same(back, old)


def test_masking_a_stage_keeps_its_state_for_the_leaves_it_still_sees():
  # adam -> masked(adam): every moment was dropped (reported as mismatched), as if the
  # masked-out leaves' MaskedNode made the kept ones' state unusable.
  params = _params()
  plain = gtx.chain(clip=gtx.clip(1.0), opt=gtx.adam(0.1))
  _, old = _steps(plain, plain.init(params), params, range(3))
  half = gtx.chain(clip=gtx.clip(1.0), opt=gtx.masked(gtx.adam(0.1), {"w": True, "b": False}))
  state, report = gtx.carry_state(old, half.init(params))
  assert report["carried"] == ["clip", "opt.adam", "opt.lr"] and not report["mismatched"]
  assert report["fresh"] == ["opt (MaskedState)"]
  inner = state["opt"].inner_state
  assert isinstance(inner["adam"].mu["b"], MaskedNode)
  _assert_same(inner["adam"].count, old["opt"]["adam"].count)
  _assert_same(inner["adam"].mu["w"], old["opt"]["adam"].mu["w"])
  # The masked stage continues where adam was on the leaves it still sees.
  ours, _ = half.update(_grads(3), state, params)
  theirs, _ = plain.update(_grads(3), old, params)
  _assert_same(ours["w"], theirs["w"])
  # A mask narrowed again carries too; one that shows a leaf newly has no state for it.
  none = gtx.chain(clip=gtx.clip(1.0), opt=gtx.masked(gtx.adam(0.1), {"w": False, "b": False}))
  narrowed, report = gtx.carry_state(state, none.init(params), strict=True)
  assert isinstance(narrowed["opt"].inner_state["adam"].mu["w"], MaskedNode)
  _assert_same(narrowed["opt.adam"].count, old["opt"]["adam"].count)
  back, report = gtx.carry_state(state, plain.init(params))
  assert report["mismatched"] == ["opt"] and report["carried"] == ["clip"]
  _assert_same(back["opt"], plain.init(params)["opt"])


def test_hparams_reads_a_state_shaped_tree_of_other_leaves():
  # A tree shaped like the state but holding strings or sharding specs (what
  # tree_map_params and orbax build) is walked without recursing into the leaves.
  state = gtx.chain(clip=gtx.clip_by_global_norm(1.0), adam=gtx.adam(0.1)).init(
      {"w": jnp.zeros(2)})
  specs = jax.tree.map(lambda x: "replicated", state)
  assert gtx.hparams(specs) == dict.fromkeys(gtx.hparams(state), "replicated")
