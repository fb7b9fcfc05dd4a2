"""Hyperparameters in the state: read and set by dotted name, without retracing; schedules
report the value used at the last step, wherever the stage sits (chains, wrappers, groups)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx


def _params():
  return {"w": jnp.full((2, 2), 0.5, jnp.float32), "b": jnp.full((2,), -0.5, jnp.float32)}


def _grads(t):
  return {"w": jnp.full((2, 2), 1.0 + t, jnp.float32), "b": jnp.full((2,), 0.5 - t, jnp.float32)}


def _counted_step(tx):
  """A jitted step and a list that grows by one each time it is traced."""
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)  # Python side effect: runs only while tracing
    updates, state = tx.update(grads, state, params, value=jnp.sum(grads["b"]))
    return gtx.apply_updates(params, updates), state

  return step, traces


SETTABLE = [
    ("sgd", lambda: gtx.sgd(0.1, momentum=0.9), {"lr.learning_rate": 0.0, "momentum.decay": 0.5}),
    ("adamw", lambda: gtx.adamw(0.1, weight_decay=0.1),
     {"lr.learning_rate": 0.0, "adam.b1": 0.5, "decay.weight_decay": 0.0}),
    ("safe", lambda: gtx.chain(safe=gtx.apply_if_finite(gtx.adam(0.1), 2)),
     {"safe.lr.learning_rate": 0.0, "safe.max_consecutive_errors": 5}),
    ("groups", lambda: gtx.chain(opt=gtx.partition(
        {"a": gtx.adam(0.1), "b": gtx.sgd(0.1)}, {"w": "a", "b": "b"})),
     {"opt.a.lr.learning_rate": 0.0, "opt.b.lr.learning_rate": 0.0}),
    ("accumulate", lambda: gtx.chain(acc=gtx.multi_steps(gtx.sgd(0.1), 1)),
     {"acc.lr.learning_rate": 0.0, "acc.every_k_schedule": 3}),
    ("plateau", lambda: gtx.chain(opt=gtx.sgd(0.1), plateau=gtx.reduce_on_plateau()),
     {"opt.lr.learning_rate": 0.0, "plateau.patience": 1, "plateau.factor": 0.5}),
]


@pytest.mark.parametrize("name,make,new_values", SETTABLE, ids=[c[0] for c in SETTABLE])
def test_set_hparams_takes_effect_without_retracing(name, make, new_values):
  tx = make()
  params = _params()
  state = tx.init(params)
  step, traces = _counted_step(tx)
  for t in range(2):
    params, state = step(params, state, _grads(t))
  state = gtx.set_hparams(state, new_values)
  for key, value in new_values.items():
    np.testing.assert_allclose(float(gtx.hparams(state)[key]), value)
  frozen = params
  for t in range(2, 5):
    params, state = step(params, state, _grads(t))
  assert len(traces) == 1, f"{name}: the step was traced {len(traces)} times"
  # Every learning rate is now 0: the params no longer move.
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(frozen)):
    np.testing.assert_array_equal(a, b)
  for key, value in new_values.items():  # and the values stay as set
    np.testing.assert_allclose(float(gtx.hparams(state)[key]), value)


def test_a_value_set_in_a_committed_state_keeps_its_placement():
  """A state placed on devices (jax.device_put, or restored by orbax) is committed, and a
  jitted step is compiled for its inputs' shardings: set_hparams and tree_set made the
  new value an uncommitted array on the default device, which over a mesh compiled the
  step again (tests/sharding_worker.py checks that on 8 devices; on one it does not)."""
  tx = gtx.adam(0.1)
  params = jax.device_put(_params(), jax.devices()[0])
  state = jax.device_put(tx.init(params), jax.devices()[0])
  step, traces = _counted_step(tx)
  for t in range(2):
    params, state = step(params, state, _grads(t))
  state = gtx.set_hparams(state, {"lr.learning_rate": 0.0, "adam.b1": 0.5})
  state = gtx.tree_utils.tree_set(state, count=jnp.int32(7), b2=0.9)
  assert all(leaf.committed for leaf in jax.tree.leaves(state))
  frozen = params
  params, state = step(params, state, _grads(2))
  assert len(traces) == 1, f"the step was traced {len(traces)} times"
  assert int(state["adam"].count) == 8
  np.testing.assert_allclose([float(v) for v in gtx.hparams(state).values()],
                             [0.5, 0.9, 1e-8, 0.0, 0.0], rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, params, frozen)  # learning rate 0: no step


def test_set_value_keeps_dtype_and_float64_is_kept_under_x64():
  state = gtx.adam(0.1).init(_params())
  state = gtx.set_hparams(state, {"lr.learning_rate": np.float64(0.01)})
  assert gtx.hparams(state)["lr.learning_rate"].dtype == jnp.float32
  with jax.enable_x64(True):
    state64 = gtx.adam(0.1).init(_params())
    assert gtx.hparams(state64)["lr.learning_rate"].dtype == jnp.float64
    assert gtx.hparams(state64)["adam.b1"].dtype == jnp.float64


def test_a_float64_numpy_array_is_held_in_the_default_float_without_a_warning():
  # np.asarray(1e-3) is float64: without x64 it warned ("requested dtype float64 is not
  # available") at every init, which this suite turns into an error.
  state = gtx.adam(np.asarray(1e-2), b1=np.asarray(0.9)).init(_params())
  assert gtx.hparams(state)["lr.learning_rate"].dtype == jnp.float32
  assert float(gtx.hparams(state)["adam.b1"]) == np.float32(0.9)
  with jax.enable_x64(True):
    assert gtx.hparams(gtx.adam(np.asarray(1e-2)).init(_params()))[
        "lr.learning_rate"].dtype == jnp.float64


def _linear(start=1.0, end=0.0, steps=10):
  return gtx.schedules.linear_schedule(start, end, steps)


SCHEDULED = [
    ("lr", lambda s: gtx.sgd(s), "lr.learning_rate"),
    ("b1", lambda s: gtx.chain(adam=gtx.scale_by_adam(b1=gtx.schedules.linear_schedule(
        0.9, 0.5, 10)), lr=gtx.scale_by_learning_rate(0.1)), "adam.b1"),
    ("masked", lambda s: gtx.chain(decay=gtx.add_decayed_weights(s, mask={"w": True, "b": False}),
                                   lr=gtx.sgd(0.1)), "decay.weight_decay"),
    ("partition", lambda s: gtx.partition({"a": gtx.sgd(s), "b": gtx.sgd(0.1)},
                                          {"w": "a", "b": "b"}), "a.lr.learning_rate"),
    ("lookahead", lambda s: gtx.lookahead(gtx.sgd(s), 2, 0.5), "lr.learning_rate"),
    ("plateau", lambda s: gtx.chain(sgd=gtx.sgd(0.1), plateau=gtx.reduce_on_plateau(factor=s)),
     "plateau.factor"),
]


@pytest.mark.parametrize("name,make,key", SCHEDULED, ids=[c[0] for c in SCHEDULED])
def test_schedules_report_the_value_of_the_last_step(name, make, key):
  schedule = _linear(0.9, 0.1, 10) if name in ("plateau",) else _linear(1.0, 0.0, 10)
  if name == "b1":
    schedule = gtx.schedules.linear_schedule(0.9, 0.5, 10)
  tx = make(schedule)
  params = _params()
  if name == "lookahead":
    params = gtx.LookaheadParams.init_synced(params)
  state = tx.init(params)
  np.testing.assert_allclose(float(gtx.hparams(state)[key]), float(schedule(0)), rtol=1e-6)
  grads = _grads(0)
  step = jax.jit(lambda s, p: tx.update(grads, s, p, value=1.0))
  for t in range(4):
    _, state = step(state, params)
    np.testing.assert_allclose(float(gtx.hparams(state)[key]), float(schedule(t)), rtol=1e-6)


def test_schedules_inside_step_skipping_wrappers_follow_the_steps_taken():
  schedule = _linear(1.0, 0.0, 10)
  params = _params()
  safe = gtx.apply_if_finite(gtx.sgd(schedule), 3)
  state = safe.init(params)
  for t, finite in enumerate([True, False, True, True]):
    grads = _grads(t) if finite else jax.tree.map(lambda g: g * jnp.nan, _grads(t))
    _, state = safe.update(grads, state, params)
  # Three steps were taken; the skipped one did not advance the schedule.
  np.testing.assert_allclose(float(gtx.hparams(state)["lr.learning_rate"]), float(schedule(2)))

  acc = gtx.multi_steps(gtx.sgd(schedule), 2)
  state = acc.init(params)
  for t in range(5):
    _, state = acc.update(_grads(t), state, params)
  # Two inner steps were taken (after calls 2 and 4).
  np.testing.assert_allclose(float(gtx.hparams(state)["lr.learning_rate"]), float(schedule(1)))


def test_set_hparams_errors_list_the_valid_names():
  state = gtx.chain(opt=gtx.partition({"a": gtx.adam(0.1)}, {"w": "a", "b": "a"})).init(_params())
  with pytest.raises(gtx.HyperparameterError) as info:
    gtx.set_hparams(state, {"opt.a.learning_rate": 0.1})
  message = str(info.value)
  assert "did you mean 'opt.a.lr.learning_rate'" in message
  assert "'opt.a.adam.b1', 'opt.a.adam.b2'" in message


def test_set_hparams_range_errors_name_the_stage_path():
  # In a chain the message starts with the stage's path; a stage's own state has none,
  # and the message started with the hyperparameter's name twice ("b1: b1 must be ...").
  with pytest.raises(gtx.HyperparameterError, match=r"^set_hparams: b1 must be in \[0, 1\), "
                     r"got 2.0$"):
    gtx.set_hparams(gtx.scale_by_adam().init(_params()), {"b1": 2.0})
  nested = gtx.chain(outer=gtx.chain(adam=gtx.scale_by_adam())).init(_params())
  with pytest.raises(gtx.HyperparameterError, match=r"^outer.adam: b1 must be in \[0, 1\)"):
    gtx.set_hparams(nested, {"outer.adam.b1": 2.0})


def test_set_hparams_holds_a_copy_of_an_array_so_the_state_can_be_donated():
  # set_hparams held the caller's array itself: a donated step deleted it (the
  # next epoch's set_hparams with it raised), and one array set for two names
  # was one buffer twice in the state, which XLA refused to donate.
  tx = gtx.chain(a=gtx.sgd(0.1), b=gtx.sgd(0.1))
  rate = jnp.float32(0.25)
  step = jax.jit(lambda p, s: _apply(tx, p, s, _grads(0)), donate_argnums=(0, 1))
  params, state = _params(), tx.init(_params())
  for _ in range(2):
    state = gtx.set_hparams(state, {"a.lr.learning_rate": rate, "b.lr.learning_rate": rate})
    params, state = step(params, state)
  # Each step adds (-0.25) * (-0.25) * 0.5 = 1/32 to b: both stages scale by -rate.
  np.testing.assert_allclose(params["b"], [-0.4375, -0.4375], rtol=1e-6)
  assert float(rate) == 0.25


def _apply(tx, params, state, grads):
  updates, state = tx.update(grads, state, params)
  return gtx.apply_updates(params, updates), state


def test_hparams_sweep_under_vmap():
  """Hyperparameters are arrays in the state: vmap a step over several learning rates."""
  tx = gtx.sgd(0.1)
  params = _params()
  states = jax.vmap(lambda lr: gtx.set_hparams(tx.init(params), {"lr.learning_rate": lr}))(
      jnp.array([0.0, 0.1, 1.0]))
  updates, _ = jax.vmap(lambda s: tx.update(_grads(0), s, params))(states)
  np.testing.assert_allclose(updates["b"][:, 0], [0.0, -0.05, -0.5], rtol=1e-6)


def test_a_pair_with_a_swept_entry_is_built_under_vmap():
  """betas=(b1, 0.999) with b1 traced: the tuple is not a tracer, but it holds one, so it
  cannot be range-checked. It was refused ("betas must be a number in [0, 1), got
  (VmapTracer(...), 0.999)") where a swept scalar passes."""
  params = _params()

  def run(b1):
    tx = gtx.contrib.prodigy(betas=(b1, 0.99))
    state = tx.init(params)
    for t in range(3):
      updates, state = tx.update(_grads(t), state, params)
    return updates, state

  # Jitted (the vmapped run still builds prodigy from a batch tracer; b1 alone stays a
  # Python float): three eager prodigy steps under vmap cost 2.5 s of CPU, compiled 0.4 s.
  swept, states = jax.jit(jax.vmap(run))(jnp.array([0.5, 0.9]))
  np.testing.assert_allclose(gtx.hparams(states)["prodigy.betas"], [[0.5, 0.99], [0.9, 0.99]],
                             rtol=1e-6)
  run_alone = jax.jit(run, static_argnums=0)
  for i, b1 in enumerate([0.5, 0.9]):
    alone, _ = run_alone(b1)
    jax.tree.map(lambda s, a, i=i: np.testing.assert_allclose(s[i], a, rtol=1e-6), swept, alone)

# A schedule may return a Python number, as optax allows (lambda count: 1e-2):
# the update converted it with .astype and raised AttributeError.
PYTHON_NUMBER_SCHEDULES = [
    ("adam", lambda v: gtx.adam(v), 1e-2),
    ("scale", lambda v: gtx.scale(v), -1e-2),
    ("trace", lambda v: gtx.chain(m=gtx.trace(v), lr=gtx.scale(-0.1)), 0.9),
    ("prodigy", lambda v: gtx.contrib.prodigy(v), 1.0),
    # An int hyperparameter (this one worked before: multi_steps reads its schedule itself).
    ("every_k", lambda v: gtx.multi_steps(gtx.sgd(0.1), v), 2),
]

@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name,make,value", PYTHON_NUMBER_SCHEDULES,
                         ids=[c[0] for c in PYTHON_NUMBER_SCHEDULES])
def test_a_schedule_may_return_a_python_number(name, make, value, jit):
  scheduled, constant = make(lambda count: value), make(value)
  params = _params()
  got, want = scheduled.init(params), constant.init(params)
  step_got, step_want = (jax.jit(tx.update) if jit else tx.update for tx in (scheduled, constant))
  for t in range(4):
    u_got, got = step_got(_grads(t), got, params)
    u_want, want = step_want(_grads(t), want, params)
    for a, b in zip(jax.tree.leaves(u_got), jax.tree.leaves(u_want)):
      np.testing.assert_array_equal(a, b)
  assert gtx.hparams(got).keys() == gtx.hparams(want).keys()
  for key, value in gtx.hparams(want).items():
    np.testing.assert_array_equal(gtx.hparams(got)[key], value, err_msg=key)

WEAK_VALUES = [
    ("adam", lambda: gtx.adam(jnp.asarray(1e-2)), "lr.learning_rate"),
    ("mechanize", lambda: gtx.contrib.mechanize(gtx.sgd(0.1), s_init=jnp.asarray(1e-6)), "s_init"),
]

@pytest.mark.parametrize("name,make,key", WEAK_VALUES, ids=[c[0] for c in WEAK_VALUES])
def test_a_weak_typed_value_is_held_strong_so_a_restored_state_does_not_retrace(name, make, key):
  # jnp.asarray(1e-2) is weak-typed. Held as it is, the state turned strong after a
  # numpy restore or a set_hparams (Mechanic's s after one step), and the step traced again.
  tx = make()
  params = _params()
  state = tx.init(params)
  assert not gtx.hparams(state)[key].weak_type
  step, traces = _counted_step(tx)
  params, state = step(params, state, _grads(0))
  restored = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state)
  params, state = step(params, restored, _grads(1))
  params, state = step(params, gtx.set_hparams(state, {key: 2e-6}), _grads(2))
  assert len(traces) == 1

# ----------------------------------------------------------------------------
# Meta-gradients: jax.grad through a few unrolled steps, with respect to the initial
# params and to every hyperparameter that set_hparams takes.

def _lr_only(name):
  takes_lr = "learning_rate" in inspect.signature(getattr(gtx, name)).parameters
  return lambda: getattr(gtx, name)(**({"learning_rate": 0.05} if takes_lr else {}))

_C = gtx.contrib
# adafactor is left out: its second moment at a zero gradient is eps1 = 1e-30, where
# rsqrt's derivative, -v^{-3/2} / 2 = -5e44, overflows float32 (finite in float64).
META = {name: _lr_only(name) for name in gtx.optimizers.__all__
        if name not in ("lbfgs", "adafactor")}
META.update({
    "lbfgs": lambda: gtx.lbfgs(0.5, memory_size=3, linesearch=None),
    "prodigy": lambda: _C.prodigy(), "dadapt_adamw": lambda: _C.dadapt_adamw(),
    "dog": lambda: _C.dog(), "dowg": lambda: _C.dowg(), "cocob": lambda: _C.cocob(),
    "mechanize": lambda: _C.mechanize(gtx.sgd(0.1)),
    "schedule_free_adamw": lambda: _C.schedule_free_adamw(0.1),
    "madgrad": lambda: _C.madgrad(0.1), "momo": lambda: _C.momo(),
    "momo_adam": lambda: _C.momo_adam(), "sophia": lambda: _C.sophia(0.1),
    "muon": lambda: _C.muon(0.1), "ademamix": lambda: _C.ademamix(0.1),
    "simplified_ademamix": lambda: _C.simplified_ademamix(0.1), "adopt": lambda: _C.adopt(0.1),
    "acprop": lambda: _C.acprop(0.1), "galore": lambda: _C.galore(0.1),
    "sam": lambda: _C.sam(gtx.sgd(0.1), gtx.sgd(0.05)),
    "clip_adam": lambda: gtx.chain(clip=gtx.clip_by_global_norm(1.0), opt=gtx.adam(0.1)),
    "apply_if_finite": lambda: gtx.apply_if_finite(gtx.adam(0.1), 3),
    "multi_steps": lambda: gtx.multi_steps(gtx.adam(0.1), 1),
})

def _meta_loss(p):
  # Minimised at 0.1 everywhere; "b" starts there, so its gradient is 0 at every step.
  return sum(jnp.sum(jnp.linspace(1.0, 2.0, x.size).reshape(x.shape) * (x - 0.1) ** 2)
             for x in jax.tree.leaves(p))

@pytest.mark.parametrize("make", list(META.values()), ids=list(META))
def test_meta_gradients_stay_finite_where_a_gradient_entry_is_zero(make):
  # A gradient entry of exactly 0 (an unused embedding row, a dead unit) leaves a
  # second moment of 0, and jnp.sqrt's derivative there is infinite: the chain rule
  # met it with the 0 of d(g^2)/dg, and every meta-gradient of Adam, AMSGrad, RAdam,
  # NovoGrad, AdEMAMix, ADOPT, MADGRAD (a cube root), LARS (a trust ratio 0 / 0 in the
  # branch jnp.where drops) and the chains around them was NaN, as in optax.
  tx = make()
  params = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.3]], jnp.float32),
            "b": jnp.full((3,), 0.1, jnp.float32)}
  settable = {k: v for k, v in gtx.hparams(tx.init(params)).items()
              if jnp.issubdtype(v.dtype, jnp.floating)}

  def unrolled(p, values):
    state = gtx.set_hparams(tx.init(p), values)
    for _ in range(2):
      value, g = jax.value_and_grad(_meta_loss)(p)
      u, state = tx.update(g, state, p, value=value, grad=g, value_fn=_meta_loss,
                           obj_fn=_meta_loss)
      p = gtx.apply_updates(p, u)
    return _meta_loss(p)

  try:  # a schedule sets its value at every step: set_hparams refuses it
    gtx.set_hparams(tx.init(params), settable)
  except gtx.HyperparameterError:
    settable = {}
  # Not jitted: two steps on a tiny tree run eagerly in less time than compiling the
  # gradient of each optimizer's two steps (26 s of CPU against 44 s for the 51 cases).
  d_params, d_values = jax.grad(unrolled, argnums=(0, 1))(params, settable)
  for path, leaf in jax.tree_util.tree_leaves_with_path((d_params, d_values)):
    assert np.isfinite(leaf).all(), f"d loss / d{jax.tree_util.keystr(path)} = {leaf}"


@pytest.mark.parametrize("name", ["adam", "amsgrad", "nadam"])
def test_meta_gradient_with_respect_to_eps_root_at_its_default_0_is_optaxs(name):
  # The floor that keeps sqrt's derivative finite, jnp.maximum(eps_root, 2**-126),
  # had derivative 0 below it: at the default eps_root = 0 the meta-gradient was 0.
  import optax  # pylint: disable=import-outside-toplevel
  with jax.enable_x64(True):
    params = {"w": jnp.array([0.5, -1.0, 2.0])}

    def loss(p):
      return jnp.sum(jnp.array([1.0, 2.0, 3.0]) * (p["w"] - 0.1) ** 2)

    def after_steps(tx, state, apply):
      p = params
      for _ in range(3):
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        p = apply(p, updates)
      return loss(p)

    def ours(eps_root):
      tx = getattr(gtx, name)(0.1)
      state = tx.init(params)
      key, = (k for k in gtx.hparams(state) if k.endswith(".eps_root"))
      state = gtx.set_hparams(state, {key: eps_root})
      return after_steps(tx, state, gtx.apply_updates)

    def theirs(eps_root):
      tx = optax.inject_hyperparams(getattr(optax, name))(learning_rate=0.1, eps_root=eps_root)
      with jax.numpy_dtype_promotion("standard"):  # optax's bias correction: int32 ** float64
        return after_steps(tx, tx.init(params), optax.apply_updates)

    # Jitted: three steps of each, differentiated eagerly, compiled more kernels in x64
    # than the two programs cost.
    slope = jax.jit(jax.grad(ours))(0.0)
    assert float(slope) > 0.01
    np.testing.assert_allclose(slope, jax.jit(jax.grad(theirs))(0.0), rtol=1e-9)


@pytest.mark.parametrize("preconditioning", ["frobenius", "schatten"])
def test_muon_meta_gradient_is_finite_where_a_matrix_gradient_is_zero(preconditioning):
  # Newton-Schulz divided by jnp.linalg.norm(G) (frobenius) and took the norm of
  # G G^T (schatten): the gradient of a norm at a zero matrix is NaN, so a weight
  # matrix at a stationary point made the meta-gradient of every param NaN.
  tx = gtx.contrib.muon(0.1, preconditioning=preconditioning)
  params = {"w": jnp.full((3, 2), 0.1, jnp.float32), "b": jnp.asarray([0.5, -0.3], jnp.float32)}

  def unrolled(p):
    state = tx.init(p)
    for _ in range(2):
      u, state = tx.update(jax.grad(_meta_loss)(p), state, p)
      p = gtx.apply_updates(p, u)
    return _meta_loss(p)

  for path, leaf in jax.tree_util.tree_leaves_with_path(jax.jit(jax.grad(unrolled))(params)):
    assert np.isfinite(leaf).all(), f"d loss / d{jax.tree_util.keystr(path)} = {leaf}"
