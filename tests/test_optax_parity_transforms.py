"""optax names added for migration, where the registry's generic tests do not reach.

The registry (``registry.PRIMITIVES``) already runs ``adaptive_grad_clip``,
``normalize_by_update_norm``, ``scale_by_schedule``, ``keep_params_nonnegative``
and ``scale_by_distance_over_gradients`` against their numpy references for
60 steps (float32/float64, jitted or not). This file checks what that table
does not: optax's unit-wise norms for every rank, the edges (zero params, zero
updates, a leaf of rank 6), the hyperparameters by name, the differences from
optax the docstrings state, and the three functions that are not
transformations (``per_example_global_norm_clip``,
``per_example_layer_norm_clip``, ``scale_gradient``), whose values and
gradients are compared with numpy.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx
import reference_zoo as RZ

JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
DTYPES = pytest.mark.parametrize("dtype", ["float32", "float64"])
# For the slower checks: each dtype and each mode, in three runs rather than four.
VARIANTS = pytest.mark.parametrize("dtype, jit", [("float32", False), ("float32", True),
                                                  ("float64", True)],
                                   ids=["float32-eager", "float32-jit", "float64-jit"])


def _tol(dtype):
  return dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-14)


def _maybe_jit(fn, jit):
  return jax.jit(fn) if jit else fn


def _x64(dtype):
  return jax.enable_x64(dtype == "float64")


def _with_optax(fn):
  """optax's code under standard promotion (it is not strict-clean)."""
  with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
    return fn()


def _optax_jitted(fn):
  """``fn`` (optax's code) jitted, and traced under standard promotion when called.

  Where the claim is gradtx == optax, optax is the reference, not what is tested in eager
  mode: run op by op, its code compiled each op once per leaf shape and dtype (~70 kernels,
  ~1.8 s, for adaptive_grad_clip's 7 leaves), where one program compiles once.
  """
  jitted = jax.jit(fn)
  return lambda *args: _with_optax(lambda: jitted(*args))


# ----------------------------------------------------------------------------
# adaptive_grad_clip: unit-wise norms exactly as optax's unitwise_norm.

# One leaf per default unit rule, including a matrix with one long axis (one unit).
AGC_SHAPES = {"scalar": (), "vector": (5,), "row": (1, 6), "matrix": (4, 3),
              "heads": (3, 2, 4), "conv": (2, 2, 3, 4), "conv3d": (2, 1, 2, 3, 2)}


def _agc_problem(seed, dtype, shapes=AGC_SHAPES):
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in shapes.items()}
  grads = {k: rng.normal(size=s) * rng.choice([0.01, 1.0], size=s) for k, s in shapes.items()}
  if "vector" in params:
    params["vector"][:] = 0.0  # a zero-initialised leaf: the eps floor decides
  as_jax = lambda tree: {k: jnp.asarray(v, dtype) for k, v in tree.items()}
  return params, grads, as_jax(params), as_jax(grads)


@VARIANTS
def test_adaptive_grad_clip_units_of_every_rank(dtype, jit):
  with _x64(dtype):
    params, grads, p, g = _agc_problem(0, dtype)
    tx = gtx.adaptive_grad_clip(0.2, eps=0.05)
    updates, _ = _maybe_jit(tx.update, jit)(g, tx.init(p), p)
    ref = RZ.adaptive_grad_clip(0.2, eps=0.05)
    ref.init(params)
    want = ref.step(grads, params)
    clipped = 0
    for k in AGC_SHAPES:
      assert updates[k].dtype == jnp.dtype(dtype) and updates[k].shape == AGC_SHAPES[k]
      np.testing.assert_allclose(np.asarray(updates[k], np.float64), want[k], err_msg=k,
                                 **_tol(dtype))
      clipped += int(not np.allclose(want[k], grads[k]))
    assert clipped >= 5  # most leaves are clipped somewhere: the test sees the rule act


def test_adaptive_grad_clip_matches_optax():
  _, _, p, g = _agc_problem(1, "float32")
  tx = gtx.adaptive_grad_clip(0.1)
  ours, _ = tx.update(g, tx.init(p), p)
  expected = _optax_jitted(lambda g, p: optax.adaptive_grad_clip(0.1).update(g, None, p)[0])(
      g, p)
  for k in AGC_SHAPES:
    np.testing.assert_allclose(ours[k], expected[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_adaptive_grad_clip_with_axis_clips_a_rank_6_leaf():
  shapes = {"big": (2, 1, 2, 1, 3, 2)}
  params, grads, p, g = _agc_problem(2, "float32", shapes)
  tx = gtx.adaptive_grad_clip(0.1, axis=(0, 1, 2))
  ours, _ = jax.jit(tx.update)(g, tx.init(p), p)
  ref = RZ.adaptive_grad_clip(0.1, axis=(0, 1, 2))
  ref.init(params)
  np.testing.assert_allclose(ours["big"], ref.step(grads, params)["big"], rtol=1e-5, atol=1e-6)
  assert "axis=(0, 1, 2)" in repr(tx)
  with pytest.raises(ValueError, match=r"adaptive_grad_clip: at key path \['big'\]: a leaf of "
                     r"shape \(2, 1, 2, 1, 3, 2\) has no default unit.*pass axis="):
    gtx.adaptive_grad_clip(0.1).update(g, tx.init(p), p)


def test_adaptive_grad_clip_and_unitwise_norm_refuse_an_axis_that_is_not_one():
  """axis=True ran as axis 1 (jax takes a bool as an int); a float or a string failed at
  the first step inside jax ("'float' object is not iterable"; '1' as an "unbound axis
  name ... psum"), naming no stage. Refused when built, naming the stage and axis."""
  for bad in (True, 1.0, "1", [0]):
    with pytest.raises(TypeError, match=r"^adaptive_grad_clip: axis must be an int or a tuple "
                                        rf"of ints, got {re.escape(repr(bad))}$"):
      gtx.adaptive_grad_clip(0.1, axis=bad)
    with pytest.raises(TypeError, match=r"^unitwise_norm: axis must be an int or a tuple"):
      gtx.transforms.unitwise_norm(jnp.ones((2, 3)), axis=bad)
  x = jnp.array([[3.0, 0.0], [4.0, 1.0]])
  np.testing.assert_allclose(gtx.transforms.unitwise_norm(x, axis=np.int64(0)),
                             [[5.0, 1.0], [5.0, 1.0]])


def test_adaptive_grad_clip_bfloat16_keeps_dtype_with_float32_norms():
  _, grads, _, _ = _agc_problem(3, "float32")
  p = {k: jnp.ones(s, jnp.bfloat16) for k, s in AGC_SHAPES.items()}
  g = {k: jnp.asarray(v, jnp.bfloat16) for k, v in grads.items()}
  tx = gtx.adaptive_grad_clip(0.01)
  updates, _ = tx.update(g, tx.init(p), p)
  ref = RZ.adaptive_grad_clip(0.01)
  ref.init({k: np.ones(s) for k, s in AGC_SHAPES.items()})
  want = ref.step({k: np.asarray(v, np.float64) for k, v in g.items()},
                  {k: np.ones(s) for k, s in AGC_SHAPES.items()})
  for k in AGC_SHAPES:
    assert updates[k].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(updates[k], np.float64), want[k], rtol=1e-2, atol=1e-4)


def test_adaptive_grad_clip_hparams_by_name_without_retracing():
  tx = gtx.chain(agc=gtx.adaptive_grad_clip(0.5), lr=gtx.scale_by_learning_rate(1.0))
  p = {"w": jnp.array([3.0, 4.0])}
  state = tx.init(p)
  assert {k: float(v) for k, v in gtx.hparams(state).items()} == pytest.approx(
      {"agc.clipping": 0.5, "agc.eps": 1e-3, "lr.learning_rate": 1.0})
  traces = []

  @jax.jit
  def step(state):
    traces.append(1)
    return tx.update({"w": jnp.array([0.0, 10.0])}, state, p)[0]["w"]

  np.testing.assert_allclose(step(state), [0.0, -2.5])  # 0.5 * 5
  np.testing.assert_allclose(step(gtx.set_hparams(state, {"agc.clipping": 0.1})), [0.0, -0.5])
  assert len(traces) == 1


# ----------------------------------------------------------------------------
# normalize_by_update_norm, scale_by_schedule, keep_params_nonnegative.


@JIT
@DTYPES
def test_normalize_by_update_norm_against_numpy_and_optax(jit, dtype):
  with _x64(dtype):
    rng = np.random.default_rng(4)
    grads = {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=())}
    g = {k: jnp.asarray(v, dtype) for k, v in grads.items()}
    tx = gtx.normalize_by_update_norm(scale_factor=-2.0, eps=0.5)
    ours, _ = _maybe_jit(tx.update, jit)(g, tx.init(g))
    ref = RZ.normalize_by_update_norm(-2.0, 0.5)
    ref.init(grads)
    want = ref.step(grads, None)
    for k in grads:
      assert ours[k].dtype == jnp.dtype(dtype)
      np.testing.assert_allclose(np.asarray(ours[k], np.float64), want[k], **_tol(dtype))
    theirs = optax.normalize_by_update_norm(-2.0, 0.5)
    expected = _optax_jitted(lambda g: theirs.update(g, None)[0])(g)
    for k in grads:
      np.testing.assert_allclose(ours[k], expected[k], rtol=1e-6)


def test_normalize_by_update_norm_zero_update_stays_zero_with_eps_zero():
  # Documented difference: optax divides 0 by 0.
  tx = gtx.normalize_by_update_norm(eps=0.0)
  zeros = {"a": jnp.zeros(3), "b": jnp.zeros(())}
  ours, state = jax.jit(tx.update)(zeros, tx.init(zeros))
  assert all(np.array_equal(v, np.zeros_like(v)) for v in ours.values())
  theirs = _optax_jitted(lambda u: optax.normalize_by_update_norm(eps=0.0).update(u, None)[0])(
      zeros)
  assert np.isnan(np.asarray(theirs["a"])).all()
  assert set(gtx.hparams(state)) == {"scale_factor", "eps"}


def test_scale_by_schedule_reads_the_last_value_and_matches_optax():
  schedule = gtx.schedules.linear_schedule(1.0, 0.0, 4)
  tx = gtx.chain(sched=gtx.scale_by_schedule(schedule))
  theirs = optax.scale_by_schedule(optax.linear_schedule(1.0, 0.0, 4))
  g = {"w": jnp.array([2.0, -4.0])}
  state, their_state = tx.init(g), theirs.init(g)
  assert float(gtx.hparams(state)["sched.step_size"]) == 1.0  # step 0 before the first step
  step, their_step = jax.jit(tx.update), _optax_jitted(theirs.update)
  for t in range(6):
    ours, state = step(g, state)
    expected, their_state = their_step(g, their_state)
    want = max(1.0 - t / 4, 0.0)
    np.testing.assert_allclose(ours["w"], want * np.array([2.0, -4.0]), rtol=1e-6)
    np.testing.assert_allclose(ours["w"], expected["w"], rtol=1e-6)
    np.testing.assert_allclose(gtx.hparams(state)["sched.step_size"], want, rtol=1e-6)
  assert int(state["sched"].hparams.count) == int(their_state.count) == 6
  with pytest.raises(gtx.HyperparameterError, match=r"sched.step_size follows a schedule"):
    gtx.set_hparams(state, {"sched.step_size": 0.5})


def test_scale_by_schedule_needs_a_callable():
  with pytest.raises(TypeError, match=r"scale_by_schedule: step_size_fn must be a callable.*"
                     r"gtx.scale\(step_size\)"):
    gtx.scale_by_schedule(0.1)


@JIT
def test_keep_params_nonnegative_matches_optax_and_bounds_the_params(jit):
  params = {"w": jnp.array([1.0, 0.5, 2.0, -1.0, 0.0]), "b": jnp.array(0.25)}
  updates = {"w": jnp.array([-2.0, 0.25, -1.0, 0.5, -0.0]), "b": jnp.array(-0.5)}
  tx = gtx.keep_params_nonnegative()
  ours, _ = _maybe_jit(tx.update, jit)(updates, tx.init(params), params)
  np.testing.assert_array_equal(ours["w"], [-1.0, 0.25, -1.0, 1.0, -0.0])
  np.testing.assert_array_equal(ours["b"], -0.25)
  theirs = _optax_jitted(lambda u, p: optax.keep_params_nonnegative().update(u, None, p)[0])(
      updates, params)
  for k in params:
    np.testing.assert_array_equal(ours[k], theirs[k])
  new = gtx.apply_updates(params, ours)
  assert all((np.asarray(v) >= 0).all() for v in new.values())


def test_keep_params_nonnegative_keeps_bfloat16_and_needs_params():
  params = jnp.array([1.0, 0.5], jnp.bfloat16)
  tx = gtx.keep_params_nonnegative()
  u, _ = tx.update(jnp.array([-3.0, 1.0], jnp.bfloat16), tx.init(params), params)
  assert u.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(u, np.float32), [-1.0, 1.0])
  with pytest.raises(gtx.MissingArgumentError, match="keep_params_nonnegative needs the parameters"):
    tx.update(u, tx.init(params))


# ----------------------------------------------------------------------------
# scale_by_distance_over_gradients (DoG).


def _dog_run(tx, params, grads, dtype, jit):
  p = {k: jnp.asarray(v, dtype) for k, v in params.items()}
  state = tx.init(p)
  update = _maybe_jit(tx.update, jit)
  out = []
  for g in grads:
    u, state = update({k: jnp.asarray(v, dtype) for k, v in g.items()}, state, p)
    p = gtx.apply_updates(p, u)
    out.append(p)
  return out, state


def _dog_problem(seed=5, steps=8):
  rng = np.random.default_rng(seed)
  shapes = {"scalar": (), "vector": (4,), "matrix": (3, 2)}
  params = {k: rng.normal(size=s) for k, s in shapes.items()}
  grads = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(steps)]
  return params, grads


@JIT
@DTYPES
def test_dog_default_param_dtype_rounds_the_initial_params(jit, dtype):
  # The default keeps theta_0 in float32 (optax's default) also for float64 params.
  with _x64(dtype):
    params, grads = _dog_problem()
    tx = gtx.scale_by_distance_over_gradients(reps_rel=1e-3, global_scale=-1.0)
    got, state = _dog_run(tx, params, grads, dtype, jit)
    ref = RZ.scale_by_distance_over_gradients(reps_rel=1e-3, global_scale=-1.0)
    ref.init(params)
    p = params
    for t, g in enumerate(grads):
      u = ref.step(g, p)
      p = {k: p[k] + u[k] for k in p}
      for k in p:
        np.testing.assert_allclose(np.asarray(got[t][k], np.float64), p[k],
                                   err_msg=f"{k} at step {t + 1}", **_tol(dtype))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.init_params))
    assert all(x.shape == () and x.dtype == jnp.dtype(dtype)
               for x in jax.tree.leaves((state.max_dist, state.grad_sum_of_squares)))


@JIT
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_dog_on_complex_leaves_holds_theta_0_complex(jit, dtype):
  # theta_0 is held as complex64 (param_dtype float32's precision, Im kept): a real
  # float32 copy, as optax takes, would count Im in every distance ||theta_t - theta_0||.
  with jax.enable_x64(dtype == "complex128"):
    params, grads = _dog_problem(7)
    rng = np.random.default_rng(8)
    params = {k: v + 1j * rng.normal(size=np.shape(v)) for k, v in params.items()}
    grads = [{k: v + 1j * rng.normal(size=np.shape(v)) for k, v in g.items()} for g in grads]
    tx = gtx.scale_by_distance_over_gradients(reps_rel=1e-3, global_scale=-1.0)
    got, state = _dog_run(tx, params, grads, dtype, jit)
    ref = RZ.scale_by_distance_over_gradients(reps_rel=1e-3, global_scale=-1.0)
    ref.init(params)
    p = params
    tol = _tol("float32" if dtype == "complex64" else "float64")
    for t, g in enumerate(grads):
      u = ref.step(g, p)
      p = {k: p[k] + u[k] for k in p}
      for k in p:
        np.testing.assert_allclose(np.asarray(got[t][k], np.complex128), p[k],
                                   err_msg=f"{k} at step {t + 1}", **tol)
    assert all(x.dtype == jnp.complex64 for x in jax.tree.leaves(state.init_params))
    np.testing.assert_allclose(state.init_params["matrix"].imag, params["matrix"].imag,
                               rtol=1e-6)


def test_dog_matches_optax_on_non_scalar_leaves():
  # optax keeps the gradient sum as shape (1,): a scalar leaf's update would become (1,).
  params, grads = _dog_problem(6)
  params.pop("scalar")
  grads = [{k: v for k, v in g.items() if k != "scalar"} for g in grads]
  tx = gtx.scale_by_distance_over_gradients()
  theirs = optax.scale_by_distance_over_gradients()
  p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  state, their_state = tx.init(p), theirs.init(p)
  their_update = _optax_jitted(theirs.update)
  for g in grads:
    g = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
    ours, state = tx.update(g, state, p)
    expected, their_state = their_update(g, their_state, p)
    for k in p:
      np.testing.assert_allclose(ours[k], expected[k], rtol=1e-5, atol=1e-8)
      np.testing.assert_allclose(state.max_dist[k], their_state.max_dist[k], rtol=1e-6)
      np.testing.assert_allclose(state.grad_sum_of_squares[k],
                                 their_state.grad_sum_of_squares[k][0], rtol=1e-6)
    p = gtx.apply_updates(p, jax.tree.map(lambda u: -u, ours))


def test_dog_scalar_leaf_keeps_its_shape_and_bfloat16_its_dtype():
  p = {"s": jnp.asarray(2.0, jnp.bfloat16), "v": jnp.ones(3, jnp.bfloat16)}
  tx = gtx.scale_by_distance_over_gradients(reps_rel=0.5, eps=0.0)
  u, state = jax.jit(tx.update)({"s": jnp.asarray(-1.0, jnp.bfloat16),
                                 "v": jnp.full(3, 2.0, jnp.bfloat16)}, tx.init(p), p)
  assert u["s"].shape == () and u["s"].dtype == jnp.bfloat16 and u["v"].dtype == jnp.bfloat16
  # eta = 0.5 (1 + |theta|) / |g|: 0.5 * 3 / 1 for s, 0.5 * (1 + sqrt 3) / sqrt 12 for v.
  np.testing.assert_allclose(np.asarray(u["s"], np.float32), -1.5, rtol=1e-2)
  np.testing.assert_allclose(np.asarray(u["v"], np.float32),
                             2 * 0.5 * (1 + np.sqrt(3)) / np.sqrt(12), rtol=1e-2)
  assert state.max_dist["v"].dtype == jnp.float32


def test_dog_hparams_and_errors():
  tx = gtx.chain(dog=gtx.scale_by_distance_over_gradients(global_scale=-1.0))
  p = jnp.ones(2)
  state = tx.init(p)
  assert {k: float(v) for k, v in gtx.hparams(state).items()} == pytest.approx(
      {"dog.reps_rel": 1e-6, "dog.eps": 1e-8, "dog.global_scale": -1.0})
  traces = []

  @jax.jit
  def step(state):
    traces.append(1)
    return tx.update(jnp.ones(2), state, p)[0]

  u = step(state)
  np.testing.assert_allclose(step(gtx.set_hparams(state, {"dog.global_scale": -2.0})), 2 * u)
  assert len(traces) == 1
  with pytest.raises(gtx.MissingArgumentError, match="scale_by_distance_over_gradients needs"):
    tx.update(jnp.ones(2), state)
  with pytest.raises(gtx.StructureError, match=r"stage 'dog'.*\['b'\]"):
    tx2 = gtx.chain(dog=gtx.scale_by_distance_over_gradients())
    s2 = tx2.init({"w": jnp.ones(2), "b": jnp.ones(3)})
    tx2.update({"w": jnp.ones(2), "b": jnp.ones(4)}, s2, {"w": jnp.ones(2), "b": jnp.ones(4)})


BAD_HYPERPARAMETERS = [
    (lambda: gtx.adaptive_grad_clip(-0.1),
     r"adaptive_grad_clip: clipping must be in \[0, inf\), got -0.1"),
    (lambda: gtx.adaptive_grad_clip(0.1, eps=-1.0),
     r"adaptive_grad_clip: eps must be in \[0, inf\), got -1.0"),
    (lambda: gtx.normalize_by_update_norm(eps=-1e-6),
     r"normalize_by_update_norm: eps must be in \[0, inf\)"),
    (lambda: gtx.normalize_by_update_norm(scale_factor="big"),
     r"normalize_by_update_norm: scale_factor must be a number"),
    (lambda: gtx.scale_by_distance_over_gradients(reps_rel=0.0),
     r"scale_by_distance_over_gradients: reps_rel must be in \(0, inf\), got 0.0"),
    (lambda: gtx.scale_by_distance_over_gradients(eps=-1.0),
     r"scale_by_distance_over_gradients: eps must be in \[0, inf\)"),
    (lambda: gtx.per_example_global_norm_clip([jnp.ones((2, 3))], -1.0),
     r"per_example_global_norm_clip: l2_norm_clip must be in \[0, inf\], got -1.0"),
    (lambda: gtx.per_example_layer_norm_clip([jnp.ones((2, 3))], float("nan")),
     r"per_example_layer_norm_clip: global_l2_norm_clip must be in \[0, inf\], got nan"),
]


@pytest.mark.parametrize("make, message", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_raise_at_once(make, message):
  with pytest.raises(ValueError, match=message):
    make()


# ----------------------------------------------------------------------------
# Per-example clipping: values and gradients against numpy.


def _per_example_problem(seed=7, batch=5):
  rng = np.random.default_rng(seed)
  grads = {"w": rng.normal(size=(batch, 3, 2)), "b": rng.normal(size=(batch, 4)),
           "s": rng.normal(size=(batch,))}
  for g in grads.values():
    g[1] = 0.0  # an all-zero example: not clipped, and a finite gradient
  grads["w"][2] *= 10.0
  return grads


def _np_clip_factors(norms, clip):
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = clip / norms
  return np.where((norms > 0) & (ratio < 1), ratio, 1.0)


def _np_global_clip(grads, clip):
  """(sum_b m_b g_b, #clipped, d/dg of sum_k <w_k, sum_b m_b g_b,k>) in numpy."""
  keys = sorted(grads)
  batch = grads[keys[0]].shape[0]
  flat = np.concatenate([grads[k].reshape(batch, -1) for k in keys], axis=1)
  norms = np.sqrt(np.sum(flat ** 2, axis=1))
  m = _np_clip_factors(norms, clip)
  sums = {k: np.tensordot(m, grads[k], axes=1) for k in keys}
  return sums, int(np.sum(m < 1)), m, norms


def _np_clip_grad(grads, weights, m, norms, clip, keys):
  """d/dg_b of sum_k <w_k, sum_b m_b g_b,k>, where m_b = C / ||g_b|| when clipped."""
  batch = grads[keys[0]].shape[0]
  inner = sum(np.sum(weights[k] * grads[k].reshape(batch, *weights[k].shape),
                     axis=tuple(range(1, grads[k].ndim))) for k in keys)  # <w, g_b>
  clipped = m < 1
  out = {}
  for k in keys:
    shape = (batch,) + (1,) * (grads[k].ndim - 1)
    dm = np.where(clipped, -clip / np.where(clipped, norms, 1.0) ** 3, 0.0).reshape(shape)
    out[k] = m.reshape(shape) * weights[k][None] + dm * inner.reshape(shape) * grads[k]
  return out


@VARIANTS
def test_per_example_global_norm_clip_values_and_gradient(dtype, jit):
  with _x64(dtype):
    grads = _per_example_problem()
    g = {k: jnp.asarray(v, dtype) for k, v in grads.items()}
    rng = np.random.default_rng(8)
    weights = {k: rng.normal(size=v.shape[1:]) for k, v in grads.items()}

    def loss(g, clip):
      out, _ = gtx.per_example_global_norm_clip(g, clip)
      return sum(jnp.sum(out[k] * jnp.asarray(weights[k], dtype)) for k in out)

    clip_fn = _maybe_jit(gtx.per_example_global_norm_clip, jit)
    grad_fn = _maybe_jit(jax.grad(loss), jit)
    counts = []
    for clip in (0.0, 1.5, 4.0, np.inf):  # none, most, some, no examples clipped
      sums, num = clip_fn(g, clip)
      want, want_num, m, norms = _np_global_clip(grads, clip)
      counts.append(want_num)
      assert int(num) == want_num and num.dtype == jnp.int32, clip
      for k in grads:
        assert sums[k].dtype == jnp.dtype(dtype) and sums[k].shape == grads[k].shape[1:]
        np.testing.assert_allclose(np.asarray(sums[k], np.float64), want[k], err_msg=str(clip),
                                   **_tol(dtype))
      got = grad_fn(g, clip)
      expected = _np_clip_grad(grads, weights, m, norms, clip, sorted(grads))
      for k in grads:
        assert np.isfinite(np.asarray(got[k])).all(), (clip, k)
        np.testing.assert_allclose(np.asarray(got[k], np.float64), expected[k],
                                   err_msg=f"{clip} {k}", **_tol(dtype))
    assert counts[0] == 4 and counts[-1] == 0 and 0 < counts[2] < counts[1]


def test_per_example_global_norm_clip_matches_optax():
  grads = _per_example_problem(9)
  g = {k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}
  optax_clip = _optax_jitted(optax.per_example_global_norm_clip)  # one program, four clips
  for clip in (0.0, 1.0, 3.0, jnp.inf):
    ours = gtx.per_example_global_norm_clip(g, clip)
    theirs = optax_clip(g, clip)
    assert int(ours[1]) == int(theirs[1])
    for k in g:
      np.testing.assert_allclose(ours[0][k], theirs[0][k], rtol=1e-5, atol=1e-6)
  # optax's integer example, from its docstring.
  ints = [jnp.array([[0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
  sums, num = gtx.per_example_global_norm_clip(ints, 1.25)
  np.testing.assert_allclose(sums[0], [1.75, 1.75, 1.75])
  assert int(num) == 3


def test_per_example_clips_sum_float16_in_float32():
  """float16 gradients are clipped and summed in float32 and rounded once: the float16
  multiplier 0.01 / 5e4 was subnormal (sums 5% off). optax's float16 norm overflows
  here (its sum is the unclipped small example's), so the reference is numpy's."""
  g = np.array([[3e4, 4e4, 1.0], [0.3, 0.4, 0.0], [5e3, 0, 1.2e4]], np.float16)
  wide = g.astype(np.float64)
  want = (np.minimum(1, 0.01 / np.linalg.norm(wide, axis=1))[:, None] * wide).sum(0)
  for clipped in (gtx.per_example_global_norm_clip([jnp.asarray(g)], 0.01)[0][0],
                  gtx.per_example_layer_norm_clip([jnp.asarray(g)], 0.01)[0][0]):
    assert clipped.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(clipped), want.astype(np.float16))


@JIT
@DTYPES
@pytest.mark.parametrize("uniform", [True, False], ids=["uniform", "by-size"])
def test_per_example_layer_norm_clip_values_and_gradient(jit, dtype, uniform):
  with _x64(dtype):
    grads = _per_example_problem(10)
    keys = sorted(grads)
    clip = 2.0
    sizes = {k: int(np.prod(grads[k].shape[1:])) for k in keys}
    clips = {k: clip / np.sqrt(len(keys)) if uniform else
             clip * np.sqrt(sizes[k] / sum(sizes.values())) for k in keys}
    g = {k: jnp.asarray(v, dtype) for k, v in grads.items()}
    sums, nums = _maybe_jit(lambda g: gtx.per_example_layer_norm_clip(g, clip, uniform), jit)(g)
    rng = np.random.default_rng(11)
    weights = {k: rng.normal(size=v.shape[1:]) for k, v in grads.items()}

    def loss(g):
      out, _ = gtx.per_example_layer_norm_clip(g, clip, uniform)
      return sum(jnp.sum(out[k] * jnp.asarray(weights[k], dtype)) for k in out)

    got = _maybe_jit(jax.grad(loss), jit)(g)
    assert sum(int(n) for n in nums.values()) > 0
    for k in keys:
      want, want_num, m, norms = _np_global_clip({k: grads[k]}, clips[k])
      assert int(nums[k]) == want_num and nums[k].dtype == jnp.int32
      np.testing.assert_allclose(np.asarray(sums[k], np.float64), want[k], **_tol(dtype))
      expected = _np_clip_grad({k: grads[k]}, weights, m, norms, clips[k], [k])[k]
      np.testing.assert_allclose(np.asarray(got[k], np.float64), expected, **_tol(dtype))


@pytest.mark.parametrize("uniform", [True, False])
def test_per_example_layer_norm_clip_matches_optax(uniform):
  grads = _per_example_problem(12)
  g = {k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}
  ours = gtx.per_example_layer_norm_clip(g, 1.5, uniform)
  theirs = _optax_jitted(lambda g: optax.per_example_layer_norm_clip(g, 1.5, uniform))(g)
  for k in g:
    np.testing.assert_allclose(ours[0][k], theirs[0][k], rtol=1e-5, atol=1e-6)
    assert int(ours[1][k]) == int(theirs[1][k])


def test_per_example_clips_need_one_batch_axis():
  with pytest.raises(ValueError, match=r"per_example_global_norm_clip: every leaf of grads "
                     r"needs a batch dimension.*\['b'\] has shape \(3,\)"):
    gtx.per_example_global_norm_clip({"a": jnp.ones((2, 3)), "b": jnp.ones(3)}, 1.0)
  with pytest.raises(ValueError, match=r"per_example_layer_norm_clip: .*\['b'\] has shape \(\)"):
    gtx.per_example_layer_norm_clip({"a": jnp.ones((2, 3)), "b": jnp.ones(())}, 1.0)
  with pytest.raises(ValueError, match=r"per_example_global_norm_clip: grads has no leaves"):
    gtx.per_example_global_norm_clip({}, 1.0)
  # The first leaf without axis 0 is named alone, not compared with itself.
  for grads in ({"a": jnp.ones(()), "b": jnp.ones((2, 3))}, jnp.ones(())):
    with pytest.raises(ValueError) as raised:
      gtx.per_example_global_norm_clip(grads, 1.0)
    key = "['a']" if isinstance(grads, dict) else "<root>"
    assert str(raised.value).endswith(f"the leaf at {key} has shape () (no axis 0)")


def test_per_example_clips_of_an_empty_batch_sum_to_zero():
  # reshape(0, -1) raised ZeroDivisionError ('integer modulo by zero'); the sum over no
  # examples is 0, and none is clipped.
  grads = {"a": jnp.ones((0, 2, 3)), "b": jnp.ones((0,))}
  for clip in (gtx.per_example_global_norm_clip, gtx.per_example_layer_norm_clip):
    sums, nums = clip(grads, 1.0)
    np.testing.assert_array_equal(sums["a"], np.zeros((2, 3)))
    np.testing.assert_array_equal(sums["b"], np.zeros(()))
    assert all(int(n) == 0 for n in jax.tree.leaves(nums))


# ----------------------------------------------------------------------------
# scale_gradient.


@JIT
@DTYPES
def test_scale_gradient_is_the_identity_with_a_scaled_gradient(jit, dtype):
  with _x64(dtype):
    rng = np.random.default_rng(13)
    x = {"a": rng.normal(size=(3,)), "b": rng.normal(size=(2, 2))}
    xj = {k: jnp.asarray(v, dtype) for k, v in x.items()}
    for scale in (-0.5, 0.0, 1.0, 3.0):  # 0 and 1 take the shortcuts

      def loss(x):
        y = gtx.scale_gradient(x, scale)
        return jnp.sum(jnp.sin(y["a"])) + jnp.sum(y["b"] ** 3)

      value, grads = _maybe_jit(jax.value_and_grad(loss), jit)(xj)
      np.testing.assert_allclose(value, np.sum(np.sin(x["a"])) + np.sum(x["b"] ** 3),
                                 **_tol(dtype))
      np.testing.assert_allclose(np.asarray(grads["a"], np.float64), scale * np.cos(x["a"]),
                                 err_msg=str(scale), **_tol(dtype))
      np.testing.assert_allclose(np.asarray(grads["b"], np.float64), scale * 3 * x["b"] ** 2,
                                 err_msg=str(scale), **_tol(dtype))
      assert grads["a"].dtype == jnp.dtype(dtype)
      forward = gtx.scale_gradient(xj, scale)
      assert all(np.array_equal(forward[k], xj[k]) for k in x)


def test_scale_gradient_takes_a_traced_scale_and_keeps_bfloat16():
  x = jnp.array([1.0, -2.0], jnp.bfloat16)

  @jax.jit
  def grad(scale):
    return jax.grad(lambda x: jnp.sum(gtx.scale_gradient(x, scale) ** 2).astype(jnp.float32))(x)

  got = grad(jnp.float32(-0.25))
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), [-0.5, 1.0])
  # The output does not depend on scale: its derivative is 0.
  d_scale = jax.grad(lambda s: jnp.sum(gtx.scale_gradient(jnp.ones(2), s)))(jnp.float32(2.0))
  assert float(d_scale) == 0.0
  matches = _with_optax(lambda: jax.grad(
      lambda x: jnp.sum(optax.scale_gradient(x, -0.25) ** 2))(jnp.array([1.0, -2.0])))
  np.testing.assert_allclose(matches, [-0.5, 1.0])


def test_scale_gradient_takes_a_concrete_half_precision_scale():
  # A concrete bfloat16 scalar is a real scalar array, as a traced one is (it raised
  # TypeError outside jit: numpy does not count bfloat16 as a number).
  x = jnp.array([1.0, -2.0])
  for scale in (jnp.bfloat16(-0.5), jnp.asarray(-0.5, jnp.bfloat16), jnp.float16(-0.5)):
    got = jax.grad(lambda x: jnp.sum(gtx.scale_gradient(x, scale) ** 2))(x)
    np.testing.assert_allclose(got, [-1.0, 2.0])
  np.testing.assert_array_equal(gtx.scale_gradient(x, jnp.bfloat16(1.0)), x)


@pytest.mark.parametrize("scale", ["big", jnp.ones(2), 1j])
def test_scale_gradient_rejects_a_scale_that_is_not_a_real_scalar(scale):
  with pytest.raises(TypeError, match="scale_gradient: scale must be a real number"):
    gtx.scale_gradient(jnp.ones(2), scale)


def test_adaptive_grad_clip_mixed_and_complex_leaves():
  # float64 gradients on float32 params (and the reverse) clip by float64 norms;
  # complex128 gradients keep their dtype and take float64 norms of |g|.
  with jax.enable_x64(True):
    tx = gtx.adaptive_grad_clip(0.1, eps=0.0)
    p32, g64 = jnp.asarray([3.0, 4.0], jnp.float32), jnp.asarray([0.0, 2.0], jnp.float64)
    for g, p in [(g64, p32), (g64.astype(jnp.float32), p32.astype(jnp.float64))]:
      u, _ = jax.jit(tx.update)(g, tx.init(p), p)
      assert u.dtype == g.dtype
      np.testing.assert_allclose(np.asarray(u, np.float64), [0.0, 0.5], rtol=1e-7)
    # Complex params (a complex gradient of a real param is refused at the chain's entry).
    gc, pc = jnp.asarray([3 + 4j, 0.0], jnp.complex128), p32.astype(jnp.complex64)
    u, _ = tx.update(gc, tx.init(pc), pc)   # |g| = 5 > 0.1 * |p| = 0.5: scaled by 0.1
    assert u.dtype == jnp.complex128
    np.testing.assert_allclose(np.asarray(u), [0.3 + 0.4j, 0.0], rtol=1e-12)


def test_per_example_global_norm_clip_mixed_float32_float64_leaves():
  with jax.enable_x64(True):
    grads = {"a": jnp.asarray([[3.0], [0.3]], jnp.float64),
             "b": jnp.asarray([[4.0, 0.0], [0.0, 0.4]], jnp.float32)}
    sums, clipped = gtx.per_example_global_norm_clip(grads, 1.0)  # norms 5 and 0.5
    assert sums["a"].dtype == jnp.float64 and sums["b"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(sums["a"]), [0.6 + 0.3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sums["b"]), [0.8, 0.4], rtol=1e-6)
    assert int(clipped) == 1


def test_scale_gradient_passes_an_integer_leaf_through():
  # An integer leaf's cotangent is float0: it is left as it is, not multiplied.
  def loss(x):
    out = gtx.scale_gradient({"x": x, "n": jnp.arange(3)}, -2.0)
    return jnp.sum(out["x"] ** 2) + jnp.sum(out["n"]).astype(jnp.float32)

  np.testing.assert_allclose(jax.grad(loss)(jnp.array([1.0, 3.0])), [-4.0, -12.0])


# optax's scale_by_learning_rate(None) is the identity (no scale, no sign flip), and
# every optimizer that ends in it returns its direction: optax.adam(None) too.
_LR_NONE = ["sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam", "amsgrad", "adamax", "lion",
            "lamb", "radam", "yogi", "novograd"]


@pytest.mark.parametrize("name", _LR_NONE)
def test_learning_rate_none_returns_the_direction_as_optax(name):
  params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3])}
  ours, theirs = getattr(gtx, name)(None), getattr(optax, name)(None)
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  their_update = _optax_jitted(theirs.update)
  for t in range(3):
    grads = jax.tree.map(lambda p: (t + 1.0) * p - 0.2, params)
    u_ours, s_ours = ours.update(grads, s_ours, params)
    u_theirs, s_theirs = their_update(grads, s_theirs, params)
    for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_theirs)):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
  assert "lr.learning_rate" not in gtx.hparams(s_ours)


def test_scale_by_learning_rate_none_is_a_stage_without_hyperparameters():
  tx = gtx.chain(gtx.scale_by_adam(), gtx.scale_by_learning_rate())
  state = tx.init(jnp.zeros(2))
  assert [k for k in gtx.hparams(state) if k.startswith("scale_by_learning_rate")] == []
  np.testing.assert_array_equal(tx.update(jnp.ones(2), state)[0], [1.0, 1.0])


_UNIT_SHAPES = [(), (5,), (1, 5, 1), (4, 3), (2, 4, 3), (2, 2, 3, 4), (2, 2, 2, 3, 4)]


@DTYPES
@pytest.mark.parametrize("shape", _UNIT_SHAPES, ids=str)
def test_unitwise_norm_and_clip_follow_optax(shape, dtype):
  rng = np.random.default_rng(len(shape))

  def both(x):
    norm = gtx.transforms.unitwise_norm(x)
    max_norm = jnp.full_like(norm, 0.5)
    clipped = gtx.transforms.unitwise_clip(norm, max_norm, x)
    with jax.numpy_dtype_promotion("standard"):
      want = optax.transforms.unitwise_norm(x)
      want_clipped = optax.transforms.unitwise_clip(want, max_norm, x)
    return norm, want, clipped, want_clipped, gtx.transforms.unitwise_norm(clipped)

  with _x64(dtype):
    x = jnp.asarray(rng.normal(size=shape), dtype)
    # One compiled program: each op run eagerly compiles for each shape (1.3 s a case).
    norm, want, clipped, want_clipped, norm_clipped = jax.jit(both)(x)
    assert norm.shape == x.shape and norm.dtype == x.dtype
    np.testing.assert_allclose(norm, want, **_tol(dtype))
    np.testing.assert_allclose(clipped, want_clipped, **_tol(dtype))
    # Each unit now has norm min(its norm, 0.5).
    np.testing.assert_allclose(norm_clipped, jnp.minimum(norm, 0.5), **_tol(dtype))


def test_unitwise_norm_of_complex_is_real_and_an_axis_overrides_the_rank_rule():
  z = jnp.array([[3.0 + 4.0j, 0.0], [0.0, 1.0j]], jnp.complex64)
  norm = gtx.transforms.unitwise_norm(z)
  assert norm.dtype == jnp.float32
  np.testing.assert_allclose(norm, [[5.0, 1.0], [5.0, 1.0]])
  np.testing.assert_allclose(gtx.transforms.unitwise_norm(jnp.ones((2, 3)), axis=1),
                             np.full((2, 3), np.sqrt(3.0)), rtol=1e-6)
  with pytest.raises(gtx.StructureError, match=r"unitwise_norm: a leaf of shape \(2, 2, 2, 2, 2, 2\)"):
    gtx.transforms.unitwise_norm(jnp.ones((2,) * 6))
  # A (3,) norm broadcasts to a (2, 3) grad: the message said it did not; it is refused for
  # its rank, and a (2, 2) one for an axis.
  with pytest.raises(gtx.StructureError, match=r"^unitwise_clip: g_norm of shape \(3,\) must "
                     r"have grad's rank, 2, and each axis of grad's length or 1 \(grad has "
                     r"shape \(2, 3\)"):
    gtx.transforms.unitwise_clip(jnp.ones(3), jnp.ones((2, 3)), jnp.ones((2, 3)))
  with pytest.raises(gtx.StructureError, match=r"^unitwise_clip: max_norm of shape \(2, 2\)"):
    gtx.transforms.unitwise_clip(jnp.ones((1, 3)), jnp.ones((2, 2)), jnp.ones((2, 3)))
