"""Monitor stages: each statistic against its numpy definition, updates unchanged, no retrace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx

DTYPES = [jnp.float32, jnp.float64]
RTOL = {jnp.float32: 2e-6, jnp.float64: 1e-13}
ALL = gtx.MONITOR_STATISTICS
STEP_SIZES = ("step_size_mean", "leaf_step_sizes", "step_size_max")  # these need inner
PLAIN = tuple(s for s in ALL if s not in STEP_SIZES)


def _params(dtype, seed=0):
  rng = np.random.default_rng(seed)
  return {"dense": {"w": jnp.asarray(rng.normal(size=(4, 3)), dtype),
                    "b": jnp.asarray(rng.normal(size=(3,)), dtype)},
          "out": jnp.asarray(rng.normal(size=(3, 2)), dtype)}


def _grads(params, t):
  """Gradients that change every step; a few non-finite and zero entries on some steps."""
  rng = np.random.default_rng(100 + t)
  grads = jax.tree.map(lambda p: np.asarray(rng.normal(size=p.shape), p.dtype), params)
  if t % 3 == 1:
    grads["out"][0, 1] = np.inf
    grads["dense"]["b"][2] = np.nan
  if t % 4 == 2:
    grads["dense"]["w"][1] = 0.0  # excluded from the step-size statistics
  return jax.tree.map(jnp.asarray, grads)


# ----------------------------------------------------------------------------
# The numpy definitions, written from the docstring.


def _np_leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _np_norm(tree):
  return np.sqrt(sum(np.sum(x ** 2) for x in _np_leaves(tree)))


def _np_seen(u, g):
  """|u_i| and |g_i| over S = {i : g_i finite and nonzero}."""
  u, g = np.ravel(np.asarray(u, np.float64)), np.ravel(np.asarray(g, np.float64))
  seen = np.isfinite(g) & (g != 0)
  return np.abs(u[seen]), np.abs(g[seen])


def _np_weighted_step_size(u, g):
  abs_u, abs_g = _np_seen(u, g)
  return np.sum(abs_u) / np.sum(abs_g) if abs_g.size else 0.0


def _np_stat(name, u, g, p):
  if name == "norm":
    return _np_norm(u)
  if name == "leaf_norms":
    return jax.tree.map(lambda x: np.sqrt(np.sum(np.asarray(x, np.float64) ** 2)), u)
  if name == "param_ratio":
    return _np_norm(u) / _np_norm(p)
  if name == "leaf_param_ratios":
    return jax.tree.map(lambda x, y: np.sqrt(np.sum(np.asarray(x, np.float64) ** 2))
                        / np.sqrt(np.sum(np.asarray(y, np.float64) ** 2)), u, p)
  if name == "nonfinite_fraction":
    flat = np.concatenate([x.ravel() for x in _np_leaves(u)])
    return np.mean(~np.isfinite(flat))
  flat_u = np.concatenate([x.ravel() for x in _np_leaves(u)])
  flat_g = np.concatenate([x.ravel() for x in _np_leaves(g)])
  if name == "step_size_mean":
    return _np_weighted_step_size(flat_u, flat_g)
  if name == "leaf_step_sizes":
    return jax.tree.map(_np_weighted_step_size, u, g)
  if name == "step_size_max":
    abs_u, abs_g = _np_seen(flat_u, flat_g)
    return np.max(abs_u / abs_g)
  raise AssertionError(name)


def _assert_close(got, want, rtol):
  assert jax.tree.structure(jax.tree.map(np.asarray, got)) == jax.tree.structure(want)
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(x, np.float64), y, rtol=rtol, atol=0)


# ----------------------------------------------------------------------------
# Values.


# Eager float64 is left out only for time: eager compiles every op once (seconds).
@pytest.mark.parametrize("dtype,jit", [(jnp.float32, False), (jnp.float32, True),
                                       (jnp.float64, True)],
                         ids=["float32-eager", "float32-jit", "float64-jit"])
def test_every_statistic_equals_its_numpy_definition_over_many_steps(dtype, jit):
  with jax.enable_x64(dtype == jnp.float64):
    params = _params(dtype)
    # Momentum makes u differ from g entry by entry, so the step sizes vary.
    tx = gtx.chain(grads=gtx.monitor(*PLAIN), opt=gtx.monitor(*ALL, inner=gtx.adam(0.05)))
    state = tx.init(params)
    zeros = gtx.stats(state)
    assert all(float(x) == 0 for x in jax.tree.leaves(zeros))
    update = jax.jit(tx.update) if jit else tx.update
    for t in range(9 if jit else 4):  # eager runs op by op: fewer steps
      grads = _grads(params, t)
      updates, state = update(grads, state, params)
      found = gtx.stats(state)
      for name in ALL:
        if name in PLAIN:
          _assert_close(found[f"grads.{name}"], _np_stat(name, grads, grads, params), RTOL[dtype])
        with np.errstate(invalid="ignore"):
          want = _np_stat(name, updates, grads, params)
        _assert_close(found[f"opt.{name}"], want, RTOL[dtype])
      held = {x.dtype for x in jax.tree.leaves(found)}
      assert held == {jnp.dtype(dtype)}  # float32, or float64 under x64, as hyperparameters
      # Keep the params finite: step on the finite part of the updates only.
      params = gtx.apply_updates(params, jax.tree.map(jnp.nan_to_num, updates))
    assert float(found["grads.nonfinite_fraction"]) == 0  # the last step is all finite
    assert 0 < float(found["opt.nonfinite_fraction"])  # adam carries the NaN on


def test_every_statistic_of_a_tree_mixing_bfloat16_and_float32_leaves():
  # Sums across leaves of two dtypes (step_size_mean raised under strict promotion).
  params = _params(jnp.float32)
  params["dense"]["b"] = params["dense"]["b"].astype(jnp.bfloat16)
  tx = gtx.monitor(*ALL, inner=gtx.adam(0.05))
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t in range(3):
    grads = _grads(params, t)
    updates, state = update(grads, state, params)
    for name in ALL:
      with np.errstate(invalid="ignore"):
        want = _np_stat(name, updates, grads, params)
      _assert_close(gtx.stats(state)[name], want, 1e-2)  # bfloat16's sums: 2^-8
    params = gtx.apply_updates(params, jax.tree.map(jnp.nan_to_num, updates))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_step_size_of_rmsprop_is_its_effective_rate(dtype):
  """For RMSProp the effective per-parameter rate is eta / sqrt(nu_i + eps), in numpy;
  the mean weights it by |g_i|."""
  with jax.enable_x64(dtype == jnp.float64):
    lr, decay, eps = 0.01, 0.9, 1e-8
    params = _params(dtype)
    tx = gtx.monitor("step_size_mean", "step_size_max", inner=gtx.rmsprop(lr, decay, eps))
    state = tx.init(params)
    nu = [np.zeros_like(x) for x in _np_leaves(params)]
    update = jax.jit(tx.update)
    for t in range(10):
      grads = jax.tree.map(lambda x: x + 0.5, _params(dtype, seed=t + 1))  # finite, nonzero
      _, state = update(grads, state, params)
      nu = [decay * n + (1 - decay) * g ** 2 for n, g in zip(nu, _np_leaves(grads))]
      rates = np.concatenate([(lr / np.sqrt(n + eps)).ravel() for n in nu])
      weights = np.concatenate([np.abs(g).ravel() for g in _np_leaves(grads)])
      np.testing.assert_allclose(float(state.stats["step_size_mean"]),
                                 np.sum(weights * rates) / np.sum(weights), rtol=10 * RTOL[dtype])
      np.testing.assert_allclose(float(state.stats["step_size_max"]), rates.max(),
                                 rtol=10 * RTOL[dtype])


# ----------------------------------------------------------------------------
# What a monitor must not do: change the updates, retrace, sync with the host.


def _bare_and_monitored():
  bare = gtx.chain(clip=gtx.clip_by_global_norm(1.0), adam=gtx.scale_by_adam(),
                   lr=gtx.scale_by_learning_rate(0.01))
  monitored = gtx.chain(
      grads=gtx.monitor("norm", "leaf_norms", "nonfinite_fraction"),
      clip=gtx.clip_by_global_norm(1.0),
      opt=gtx.monitor(*STEP_SIZES, inner=gtx.chain(adam=gtx.scale_by_adam(),
                                                   lr=gtx.scale_by_learning_rate(0.01))),
      steps=gtx.monitor("norm", "param_ratio", "leaf_param_ratios"))
  return bare, monitored


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_monitors_leave_the_updates_bitwise_unchanged(dtype):
  with jax.enable_x64(dtype == jnp.float64):
    bare, monitored = _bare_and_monitored()
    params = _params(dtype)
    runs = []
    for tx in (bare, monitored):
      p, state, update = params, tx.init(params), jax.jit(tx.update)
      trajectory = []
      for t in range(8):
        grads = jax.tree.map(lambda x: x * 3.0, _params(dtype, seed=t + 7))
        updates, state = update(grads, state, p)
        p = gtx.apply_updates(p, updates)
        trajectory.append(updates)
      runs.append((trajectory, state))
    for a, b in zip(runs[0][0], runs[1][0]):
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # The adam moments are the same too, wrapped or not.
    for x, y in zip(jax.tree.leaves(runs[0][1]["adam"]),
                    jax.tree.leaves(runs[1][1]["opt"].inner_state["adam"])):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_monitor_around_adam_alone_keeps_the_learning_rate_apart():
  # The chain folds lr into an adjacent Adam stage; a monitor wrapping the Adam
  # stage alone keeps the two apart, which differs only by rounding.
  params = _params(jnp.float32)
  bare = gtx.chain(adam=gtx.scale_by_adam(), lr=gtx.scale_by_learning_rate(0.01))
  monitored = gtx.chain(adam=gtx.monitor(*STEP_SIZES, inner=gtx.scale_by_adam()),
                        lr=gtx.scale_by_learning_rate(0.01))
  states = [bare.init(params), monitored.init(params)]
  for t in range(8):
    grads = _params(jnp.float32, seed=t + 7)
    (u, states[0]), (v, states[1]) = (tx.update(grads, s, params)
                                      for tx, s in zip((bare, monitored), states))
    for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=0)
  stats = gtx.stats(states[1])
  assert float(stats["adam.step_size_max"]) > 0


def test_a_monitor_returns_the_very_arrays_it_received():
  params = _params(jnp.float32)
  tx = gtx.monitor(*PLAIN)
  grads = _grads(params, 0)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert all(a is b for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)))


def test_monitors_add_no_retrace_after_the_first_call():
  _, monitored = _bare_and_monitored()
  params = _params(jnp.float32)
  traces = []

  def step(grads, state, params):
    traces.append(1)
    return monitored.update(grads, state, params)

  step = jax.jit(step)
  state = monitored.init(params)
  for t in range(5):
    _, state = step(_grads(params, t), state, params)
  assert len(traces) == 1


def test_update_has_no_host_callback():
  _, monitored = _bare_and_monitored()
  params = _params(jnp.float32)
  jaxpr = jax.make_jaxpr(monitored.update)(_grads(params, 0), monitored.init(params), params)
  assert "callback" not in str(jaxpr)
  assert "reduce_sum" in str(jaxpr)  # the statistics are in the step


# ----------------------------------------------------------------------------
# Reading by name, in nested chains, wrappers and packed mode.


def test_stats_are_read_by_dotted_name_like_hyperparameters():
  params = _params(jnp.float32)
  inner = gtx.chain(watch=gtx.monitor("norm"), sgd=gtx.sgd(0.1))
  tx = gtx.chain(outer=inner, opt=gtx.monitor("step_size_max", inner=gtx.sgd(0.5)),
                 some=gtx.masked(gtx.monitor("leaf_norms"), {"dense": True, "out": False}))
  state = tx.init(params)
  _, state = tx.update(_grads(params, 0), state, params)
  found = gtx.stats(state)
  assert list(found) == ["outer.watch.norm", "opt.step_size_max", "some.leaf_norms"]
  assert list(gtx.hparams(state)) == ["outer.sgd.lr.learning_rate", "opt.lr.learning_rate"]
  assert float(found["opt.step_size_max"]) == pytest.approx(0.5)  # its own sgd(0.5) only
  assert isinstance(found["some.leaf_norms"]["out"], gtx.MaskedNode)
  # After outer's sgd(0.1) and opt's sgd(0.5): the gradient norm times 0.05.
  assert float(found["some.leaf_norms"]["dense"]["w"]) == pytest.approx(
      0.05 * np.linalg.norm(np.asarray(_grads(params, 0)["dense"]["w"])), rel=1e-6)
  assert "norm=" in repr(state["outer.watch"].stats)


def test_adding_a_monitor_carries_the_optimizer_state():
  params = _params(jnp.float32)
  old_tx = gtx.adam(0.01)
  state = old_tx.init(params)
  for t in range(3):
    _, state = old_tx.update(_params(jnp.float32, seed=t), state, params)
  new_tx = gtx.chain(grads=gtx.monitor("norm"), **gtx.adam(0.01).stages)
  carried, report = gtx.carry_state(state, new_tx.init(params))
  assert report["fresh"] == ["grads"] and report["carried"] == ["adam", "lr"]
  np.testing.assert_array_equal(carried["adam"].mu["out"], state["adam"].mu["out"])


def test_packed_mode_gives_the_same_statistics():
  params = _params(jnp.float32)
  layout = gtx.packed.Layout.from_tree(params)
  tx = gtx.monitor("norm", "leaf_norms", "param_ratio", "nonfinite_fraction")
  grads = _grads(params, 0)
  _, tree_state = tx.update(grads, tx.init(params), params)
  packed_params = layout.pack(params)
  _, packed_state = jax.jit(tx.update)(layout.pack(grads), tx.init(packed_params), packed_params)
  for name in ("norm", "param_ratio", "nonfinite_fraction"):
    np.testing.assert_allclose(packed_state.stats[name], tree_state.stats[name], rtol=1e-6)
  # Per leaf, a packed tree answers with each leaf's value spread over its entries.
  spread = layout.unpack(packed_state.stats["leaf_norms"])
  for got, want in zip(jax.tree.leaves(spread), jax.tree.leaves(tree_state.stats["leaf_norms"])):
    np.testing.assert_allclose(np.asarray(got), np.full(got.shape, want), rtol=1e-6)


def test_repr_shows_the_statistics_and_the_wrapped_transformation():
  tx = gtx.monitor("step_size_mean", inner=gtx.sgd(0.1))
  assert repr(tx) == ("monitor(\n  statistics=('step_size_mean',),\n"
                      "  inner=sgd(\n    lr=scale_by_learning_rate(learning_rate=0.1, "
                      "flip_sign=True),\n  ),\n)")


# ----------------------------------------------------------------------------
# Errors, as a table: (what, call, type, regex).

ERRORS = [
    ("no statistic", lambda: gtx.monitor(), ValueError, r"monitor: name at least one statistic"),
    ("unknown", lambda: gtx.monitor("grad_norm"), ValueError,
     r"unknown statistic 'grad_norm' \(did you mean .*'norm'"),
    ("twice", lambda: gtx.monitor("norm", "norm"), ValueError, r"'norm' is named twice"),
    ("names and measures", lambda: gtx.monitor("norm", {"n": gtx.tree_utils.tree_norm}),
     TypeError, r"monitor: statistics are named by strings, got \{'n': .*chain two monitors"),
    ("step size alone", lambda: gtx.monitor("step_size_mean"), ValueError,
     r"step_size_mean compares .* inner=gtx.adam"),
    ("no params", lambda: gtx.monitor("param_ratio").update(
        jnp.ones(2), gtx.monitor("param_ratio").init(jnp.ones(2))),
     gtx.MissingArgumentError, r"monitor needs the parameters"),
    ("wrong tree", lambda: gtx.chain(m=gtx.monitor("leaf_norms")).update(
        {"a": jnp.ones(2)}, gtx.chain(m=gtx.monitor("leaf_norms")).init({"b": jnp.ones(2)})),
     gtx.StructureError, r"stage 'm': .*key path \['b'\]"),
    ("same name twice", lambda: gtx.stats(gtx.chain(m=gtx.monitor("norm", inner=gtx.monitor(
        "norm"))).init(jnp.ones(2))), gtx.HyperparameterError,
     r"two Stats entries are both named 'm.norm'"),
    # The message asked for "distinct names in the chain", which cannot separate a wrapper's
    # names from those of the stage it wraps.
    ("wrapper twice", lambda: gtx.hparams(gtx.apply_if_finite(gtx.apply_if_finite(
        gtx.scale_by_adam(), 3), 2).init(jnp.ones(2))), gtx.HyperparameterError,
     r"both named 'max_consecutive_errors': a wrapper's and those of a stage it wraps, .*"
     r"a chain of its own \(apply_if_finite\(gtx.chain\(inner=...\), ...\)\)"),
]


@pytest.mark.parametrize("call,error,match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors(call, error, match):
  with pytest.raises(error, match=match):
    call()


# ----------------------------------------------------------------------------
# optax's form: monitor({name: measure}) and measure_with_ema.


def _ema_reference(values, decay, debias):
  m, out = 0.0, []
  for t, v in enumerate(values, start=1):
    m = decay * m + (1 - decay) * v
    out.append(m / (1 - decay**t) if debias else m)
  return out


@pytest.mark.parametrize("debias", [True, False])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_measures_match_numpy_and_pass_the_updates_unchanged(debias, jit, x64):
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    tx = gtx.chain(sgd=gtx.sgd(0.5), watch=gtx.monitor({
        "norm": gtx.tree_utils.tree_norm,
        "big": gtx.measure_with_ema(lambda u: gtx.tree_utils.tree_norm(u) > 1.0, 0.8,
                                    debias=debias),
        "leaf_max": gtx.measure_with_ema(lambda u: jax.tree.map(jnp.max, u), 0.5,
                                         debias=debias)}))
    bare = gtx.sgd(0.5)
    params = {"a": jnp.zeros(3, dtype), "b": jnp.zeros((), dtype)}
    rng = np.random.default_rng(0)
    grads = [{"a": jnp.asarray(rng.normal(size=3) * s, dtype), "b": jnp.asarray(s, dtype)}
             for s in (3.0, 0.1, 2.5, 0.2, 4.0, 0.05)]
    update = jax.jit(tx.update) if jit else tx.update
    state, bare_state = tx.init(params), bare.init(params)
    steps = []
    for g in grads:
      u, state = update(g, state, params)
      want, bare_state = bare.update(g, bare_state, params)
      for k in u:  # the same updates as without the monitor, bit for bit
        np.testing.assert_array_equal(u[k], want[k])
      steps.append({k: np.asarray(v) for k, v in want.items()})
      assert u["a"].dtype == dtype
    norms = [np.sqrt(sum(np.sum(s[k] ** 2) for k in s)) for s in steps]
    rtol = 1e-12 if x64 else 1e-6
    got = gtx.stats(state)
    np.testing.assert_allclose(got["watch.norm"], norms[-1], rtol=rtol)
    np.testing.assert_allclose(got["watch.big"],
                               _ema_reference([float(n > 1) for n in norms], 0.8, debias)[-1],
                               rtol=rtol)
    for k in ("a", "b"):
      np.testing.assert_allclose(
          got["watch.leaf_max"][k],
          _ema_reference([float(np.max(s[k])) for s in steps], 0.5, debias)[-1], rtol=rtol)
    assert set(gtx.hparams(state)) == {"sgd.lr.learning_rate", "watch.big.decay",
                                       "watch.leaf_max.decay"}


def test_measures_agree_with_optax_monitor():
  optax = pytest.importorskip("optax")
  measures = lambda lib, tree_norm: {  # noqa: E731
      "norm": tree_norm,
      "clipped": lib.measure_with_ema(lambda u: tree_norm(u) > 1.0, decay=0.9)}
  ours = gtx.chain(gtx.sgd(0.1, momentum=0.9), gtx.monitor(measures(gtx, gtx.tree_utils.tree_norm)))
  theirs = optax.chain(optax.sgd(0.1, momentum=0.9),
                       optax.monitor(measures(optax, optax.tree.norm)))
  params = jnp.array([1.0, 2.0, 3.0])
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  for _ in range(4):
    g = 2 * params
    u, s_ours = ours.update(g, s_ours, params)
    with jax.numpy_dtype_promotion("standard"):  # optax averages the bool as an int
      _, s_theirs = theirs.update(g, s_theirs, params)
    params = params + u
    for name in ("norm", "clipped"):
      np.testing.assert_allclose(gtx.stats(s_ours)[f"monitor.{name}"],
                                 optax.tree.get(s_theirs, name), rtol=1e-6)
      # optax's way to read one, in its docstring: a measure's name finds the measurement
      # alone, not also the state of a stateful measure kept under that name.
      np.testing.assert_allclose(gtx.tree_utils.tree_get(s_ours, name),
                                 optax.tree.get(s_theirs, name), rtol=1e-6)


def test_measures_by_keyword_is_the_positional_dict():
  # optax.monitor(measures={...}) runs unchanged.
  measures = {"sum": jnp.sum, "ema": gtx.measure_with_ema(jnp.max, 0.5)}
  by_keyword, positional = gtx.monitor(measures=measures), gtx.monitor(measures)
  s_kw, s_pos = by_keyword.init(jnp.zeros(3)), positional.init(jnp.zeros(3))
  for g in (jnp.array([1.0, -2.0, 4.0]), jnp.array([3.0, 0.5, -1.0])):
    u, s_kw = by_keyword.update(g, s_kw)
    _, s_pos = positional.update(g, s_pos)
    np.testing.assert_array_equal(u, g)
  assert gtx.stats(s_kw).keys() == gtx.stats(s_pos).keys()
  for name, value in gtx.stats(s_kw).items():
    np.testing.assert_array_equal(value, gtx.stats(s_pos)[name])
  np.testing.assert_allclose(gtx.stats(s_kw)["sum"], 2.5)
  np.testing.assert_allclose(gtx.stats(s_kw)["ema"], _ema_reference([4.0, 3.0], 0.5, True)[-1])


def test_measures_state_keeps_its_structure_from_init_on_so_it_scans():
  tx = gtx.monitor({"mean": lambda u: jnp.mean(u),
                    "ema": gtx.measure_with_ema(lambda u: u[:2], 0.5)})
  state = tx.init(jnp.zeros(4))
  np.testing.assert_array_equal(gtx.stats(state)["ema"], [0.0, 0.0])

  def step(state, g):
    return tx.update(g, state)[1], None

  state, _ = jax.lax.scan(step, state, jnp.arange(12.0).reshape(3, 4))
  np.testing.assert_allclose(gtx.stats(state)["mean"], 9.5)
  np.testing.assert_allclose(gtx.stats(state)["ema"],
                             [_ema_reference([0.0, 4.0, 8.0], 0.5, True)[-1],
                              _ema_reference([1.0, 5.0, 9.0], 0.5, True)[-1]], rtol=1e-6)


def test_measures_refuse_a_measurement_that_would_change_the_state_structure():
  # A leaf given to init whose gradient is None: a tree-valued measurement loses its
  # array there (the state's structure would change at the first step).
  tx = gtx.monitor({"same": lambda u: u})
  params = {"w": jnp.ones(2), "b": jnp.ones(3)}
  with pytest.raises(gtx.StructureError, match=r"monitor: measure 'same' of the updates and "
                     r"the state's 'same' differ in shape at key path \['b'\]: no array"):
    tx.update({"w": jnp.ones(2), "b": None}, tx.init(params), params)
  # With None there at init too, the structure stays.
  params = {"w": jnp.ones(2), "b": None}
  state = tx.init(params)
  _, new = tx.update({"w": jnp.array([2.0, 3.0]), "b": None}, state, params)
  assert jax.tree.structure(new) == jax.tree.structure(state)
  np.testing.assert_array_equal(gtx.stats(new)["same"]["w"], [2.0, 3.0])


def test_measure_decay_is_set_by_name_without_retracing():
  tx = gtx.monitor({"ema": gtx.measure_with_ema(jnp.sum, 0.5)})
  traces = []

  @jax.jit
  def update(g, state):
    traces.append(1)
    return tx.update(g, state)[1]

  state = update(jnp.ones(2), tx.init(jnp.zeros(2)))
  state = gtx.set_hparams(state, {"ema.decay": 0.0})
  state = update(jnp.full(2, 3.0, jnp.float32), state)  # not weakly typed: no retrace
  assert len(traces) == 1
  # With decay 0 the debiased average is the last measurement.
  np.testing.assert_allclose(gtx.stats(state)["ema"], 6.0)


@pytest.mark.parametrize("call, error, message", [
    (lambda: gtx.monitor({}), ValueError, "empty"),
    (lambda: gtx.monitor({"a.b": jnp.sum}), ValueError, "without dots"),
    (lambda: gtx.monitor({"n": 3.0}), TypeError, "measure 'n' must be a callable"),
    (lambda: gtx.monitor({"n": jnp.sum}, inner=gtx.sgd(0.1)), ValueError, "takes no inner"),
    (lambda: gtx.monitor("norm", measures={"n": jnp.sum}), ValueError, "not both"),
    # Named ema, a stage the caller never wrote.
    (lambda: gtx.measure_with_ema(jnp.sum, 1.5), gtx.HyperparameterError,
     r"^measure_with_ema: decay must be in \[0, 1\), got 1.5 \(checked by ema\)$"),
    (lambda: gtx.measure_with_ema(jnp.sum, 0.9, accumulator_dtype="x"), gtx.HyperparameterError,
     r"^measure_with_ema: accumulator_dtype must be a dtype .*got 'x' \(checked by ema\)$"),
])
def test_measures_errors(call, error, message):
  with pytest.raises(error, match=message):
    call()
