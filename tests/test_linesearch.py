"""The backtracking line search and value_and_grad_from_state: numpy references, Armijo,
convergence, gradtx's lbfgs, hyperparameters and errors."""

import functools
import gc
import re
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx

DTYPES = [jnp.float32, jnp.float64]
TOL = {jnp.float32: 2e-5, jnp.float64: 1e-12}
DIAG = np.array([1.0, 4.0, 20.0])  # an ill-conditioned quadratic, kappa = 20


def _quadratic(p, scale=1.0):
  return 0.5 * scale * jnp.sum(jnp.asarray(DIAG, p.dtype) * p * p)


def _rosenbrock(p):
  return jnp.sum(100.0 * (p[1:] - p[:-1] ** 2) ** 2 + (1.0 - p[:-1]) ** 2)


class _Backtracking:
  """optax's documented rule in numpy (float64): the first trial min(gamma eta_prev, eta_max)
  (eta_max after eta_prev = 0, gradtx's choice), times beta until
  f(x + eta u) <= (1 + rtol) f(x) + c eta <u, g> + atol, at most ``steps`` reductions; the
  last trial is taken, or 0 when its loss is not finite."""

  def __init__(self, steps, c=1e-4, beta=0.8, gamma=1.5, eta_max=1.0, atol=0.0, rtol=0.0):
    self.steps, self.c, self.beta, self.gamma = steps, c, beta, gamma
    self.eta_max, self.atol, self.rtol = eta_max, atol, rtol
    self.eta = 1.0

  def error(self, f, x, u, value, slope, eta):
    e = f(x + eta * u) - (1 + self.rtol) * value - eta * self.c * slope
    return np.inf if np.isnan(e) else max(e, 0.0)

  def step(self, f, x, u, value, g):
    slope = float(np.dot(u, g))
    eta = min(self.gamma * self.eta, self.eta_max) if self.eta > 0 else self.eta_max
    error, evaluations = self.error(f, x, u, value, slope, eta), 1
    while error > self.atol and evaluations <= self.steps:
      eta *= self.beta
      error, evaluations = self.error(f, x, u, value, slope, eta), evaluations + 1
    self.eta = 0.0 if np.isinf(error) else eta
    return self.eta * u, evaluations, error


def _np_quadratic(x):
  return 0.5 * float(np.sum(DIAG * x * x))


def _step_fn(tx, value_fn, jit):
  def step(grad, state, params, value):
    return tx.update(grad, state, params, value=value, grad=grad, value_fn=value_fn)
  return jax.jit(step) if jit else step


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("store_grad", [False, True])
def test_backtracking_against_numpy(dtype, jit, store_grad):
  with jax.enable_x64(dtype == jnp.float64):
    tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(
        max_backtracking_steps=8, decrease_factor=0.6, increase_factor=2.0,
        max_learning_rate=0.5, store_grad=store_grad))
    ref = _Backtracking(8, beta=0.6, gamma=2.0, eta_max=0.5)
    params = jnp.asarray([1.0, -0.5, 0.3], dtype)
    x = np.asarray(params, np.float64)
    state = tx.init(params)
    step = _step_fn(tx, _quadratic, jit)
    for _ in range(6):
      value, grad = jax.value_and_grad(_quadratic)(params)
      updates, state = step(grad, state, params, value)
      assert updates.dtype == dtype
      params = gtx.apply_updates(params, updates)
      ref_u, evaluations, error = ref.step(_np_quadratic, x, -DIAG * x, _np_quadratic(x),
                                           DIAG * x)
      x = x + ref_u
      np.testing.assert_allclose(np.asarray(params), x, rtol=TOL[dtype], atol=TOL[dtype])
      ls = state["ls"]
      np.testing.assert_allclose(float(ls.learning_rate), ref.eta, rtol=TOL[dtype])
      assert int(ls.info.num_linesearch_steps) == evaluations
      np.testing.assert_allclose(float(ls.value), _np_quadratic(x), rtol=10 * TOL[dtype])
      if store_grad:
        np.testing.assert_allclose(np.asarray(ls.grad), DIAG * x, rtol=10 * TOL[dtype],
                                   atol=TOL[dtype])
      else:
        assert ls.grad is None
    assert ls.learning_rate.dtype == dtype and ls.value.dtype == dtype


def test_backtracking_equals_optax_with_data_arguments():
  # optax's docstring example: value_fn takes the batch, passed as extra arguments.
  def fn(params, x, y):
    return 0.5 * (x.dot(params) - y) ** 2

  params = ours = jnp.array([1.0, 2.0, 3.0])
  tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(
      max_backtracking_steps=15))
  ox = optax.chain(optax.sgd(1.0), optax.scale_by_backtracking_linesearch(
      max_backtracking_steps=15))
  state = tx.init(params)
  with jax.numpy_dtype_promotion("standard"):
    their_state = ox.init(params)
  xs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
  for x in xs:
    y = jnp.float32(0.0)
    value, grad = jax.value_and_grad(fn)(ours, x, y)
    updates, state = tx.update(grad, state, ours, value=value, grad=grad, value_fn=fn, x=x, y=y)
    ours = gtx.apply_updates(ours, updates)
    with jax.numpy_dtype_promotion("standard"):
      value, grad = jax.value_and_grad(fn)(params, x, y)
      updates, their_state = ox.update(grad, their_state, params, value=value, grad=grad,
                                       value_fn=fn, x=x, y=y)
      params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(params), rtol=1e-6, atol=1e-7)
    assert int(state["ls"].info.num_linesearch_steps) == int(
        their_state[1].info.num_linesearch_steps)


def test_armijo_holds_at_every_accepted_step():
  c = 0.3
  tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(
      max_backtracking_steps=60, slope_rtol=c, increase_factor=float("inf"),
      max_learning_rate=2.0))
  with jax.enable_x64(True):
    params = jnp.asarray([-1.2, 1.0, 0.5], jnp.float64)
    state = tx.init(params)
    step = _step_fn(tx, _rosenbrock, jit=True)
    for _ in range(25):
      value, grad = jax.value_and_grad(_rosenbrock)(params)
      updates, state = step(grad, state, params, value)
      eta = float(state["ls"].learning_rate)
      assert 0 < eta <= 2.0
      assert float(state["ls"].info.decrease_error) == 0.0
      new = gtx.apply_updates(params, updates)
      slope = float(jnp.vdot(-grad, grad))
      assert float(_rosenbrock(new)) <= float(value) + c * eta * slope
      params = new


def _minimize(tx, f, params, steps):
  """``steps`` jitted updates under lax.scan; the losses along the way."""

  def body(carry, _):
    params, state = carry
    value, grad = jax.value_and_grad(f)(params)
    updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)
    return (gtx.apply_updates(params, updates), state), value

  (params, state), values = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
  return params, state, values


@jax.jit
def _sgd_on_quadratic(params):
  tx = gtx.chain(gtx.sgd(1.0), gtx.scale_by_backtracking_linesearch(max_backtracking_steps=20))
  return _minimize(tx, _quadratic, params, 300)


def test_sgd_with_backtracking_converges_on_an_ill_conditioned_quadratic():
  params, _, values = _sgd_on_quadratic(jnp.asarray([1.0, 1.0, 1.0]))
  values = np.asarray(values)
  assert np.all(np.diff(values) <= 0)  # sufficient decrease: the loss never goes up
  np.testing.assert_allclose(np.asarray(params), np.zeros(3), atol=1e-4)


def test_sgd_with_backtracking_converges_on_rosenbrock():
  tx = gtx.chain(gtx.sgd(1.0), gtx.scale_by_backtracking_linesearch(max_backtracking_steps=40))
  with jax.enable_x64(True):
    params, _, values = jax.jit(lambda p: _minimize(tx, _rosenbrock, p, 20000))(
        jnp.asarray([-1.2, 1.0], jnp.float64))
  values = np.asarray(values)
  assert np.all(np.diff(values) <= 0)
  np.testing.assert_allclose(np.asarray(params), [1.0, 1.0], atol=1e-5)


@pytest.mark.parametrize("which", ["chain", "lbfgs"])
def test_lbfgs_directions_with_backtracking_reach_rosenbrocks_minimum(which):
  # The Armijo condition alone does not keep L-BFGS's curvature pairs positive (the
  # Wolfe conditions of the zoom search do), so the loss may rise at a few steps;
  # the iterates still reach the minimum.
  linesearch = gtx.scale_by_backtracking_linesearch(max_backtracking_steps=30,
                                                    increase_factor=float("inf"))
  if which == "lbfgs":
    tx = gtx.lbfgs(linesearch=linesearch)
  else:
    tx = gtx.chain(direction=gtx.scale_by_lbfgs(), descent=gtx.scale(-1.0), ls=linesearch)
  with jax.enable_x64(True):
    params, _, values = jax.jit(lambda p: _minimize(tx, _rosenbrock, p, 100))(
        jnp.asarray([-1.2, 1.0], jnp.float64))
  assert float(np.asarray(values)[-1]) < 1e-10
  np.testing.assert_allclose(np.asarray(params), [1.0, 1.0], atol=1e-5)


def test_a_nan_everywhere_takes_no_step_and_restarts_from_the_largest():
  def poisoned(p):  # finite only at the current point
    return jnp.where(jnp.all(p == 1.0), jnp.sum(p), jnp.nan)

  tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(
      max_backtracking_steps=3, max_learning_rate=0.7, store_grad=True))
  params = jnp.ones(2)
  state = tx.init(params)
  grad = jnp.ones(2)
  updates, state = tx.update(grad, state, params, value=jnp.float32(2.0), grad=grad,
                             value_fn=poisoned)
  np.testing.assert_array_equal(np.asarray(updates), [0.0, 0.0])
  assert float(state["ls"].learning_rate) == 0.0
  assert np.isinf(float(state["ls"].info.decrease_error))
  # The state keeps the loss and gradient at the unmoved params, not NaN.
  assert float(state["ls"].value) == 2.0
  np.testing.assert_array_equal(np.asarray(state["ls"].grad), [1.0, 1.0])
  # The next search starts from max_learning_rate (optax's would stay at 0 for good).
  updates, state = tx.update(grad, state, params, value=jnp.float32(2.0), grad=grad,
                             value_fn=lambda p: jnp.sum(p * p) / 2)
  np.testing.assert_allclose(float(state["ls"].learning_rate), 0.7)


def test_backtracking_hparams_read_and_set_without_retracing():
  tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(
      max_backtracking_steps=5, max_learning_rate=0.05))
  params = jnp.asarray([1.0, 1.0, 1.0])
  state = tx.init(params)
  names = {k: float(v) for k, v in gtx.hparams(state).items() if k.startswith("ls.")}
  assert names == pytest.approx({
      "ls.max_backtracking_steps": 5, "ls.slope_rtol": 1e-4, "ls.decrease_factor": 0.8,
      "ls.increase_factor": 1.5, "ls.max_learning_rate": 0.05, "ls.atol": 0.0,
      "ls.rtol": 0.0})
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)
    value, grad = jax.value_and_grad(_quadratic)(params)
    return tx.update(grad, state, params, value=value, grad=grad, value_fn=_quadratic)

  _, state = step(params, state)
  np.testing.assert_allclose(float(state["ls"].learning_rate), 0.05)
  state = gtx.set_hparams(state, {"ls.max_learning_rate": 0.01})
  _, state = step(params, state)
  np.testing.assert_allclose(float(state["ls"].learning_rate), 0.01)
  assert len(traces) == 1
  assert "store_grad=False" in repr(tx)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(max_backtracking_steps=-1), r"scale_by_backtracking_linesearch: "
     r"max_backtracking_steps must be in \[0, 2147483647\] \(an integer\)"),
    (dict(max_backtracking_steps=2.5), r"max_backtracking_steps must be in \[0, 2147483647\] \(an integer\)"),
    (dict(max_backtracking_steps=5, decrease_factor=1.0), r"decrease_factor must be in \(0, 1\)"),
    (dict(max_backtracking_steps=5, slope_rtol=1.0), r"slope_rtol must be in \[0, 1\)"),
    (dict(max_backtracking_steps=5, increase_factor=0.5), r"increase_factor must be in \[1, inf\]"),
    (dict(max_backtracking_steps=5, max_learning_rate=0.0),
     r"max_learning_rate must be in \(0, inf\)"),
    (dict(max_backtracking_steps=5, atol=-1.0), r"atol must be in \[0, inf\)"),
    (dict(max_backtracking_steps=5, rtol=float("nan")), r"rtol must be in \[0, inf\)"),
])
def test_backtracking_rejects_bad_hyperparameters(kwargs, pattern):
  with pytest.raises(gtx.HyperparameterError, match=pattern):
    gtx.scale_by_backtracking_linesearch(**kwargs)


def test_backtracking_errors_name_the_stage_and_argument():
  tx = gtx.chain(ls=gtx.scale_by_backtracking_linesearch(5))
  params = jnp.ones(2)
  state = tx.init(params)
  with pytest.raises(gtx.MissingArgumentError,
                     match=r"stage 'ls': scale_by_backtracking_linesearch needs value_fn"):
    tx.update(params, state, params, value=jnp.float32(1.0), grad=params)
  with pytest.raises(gtx.MissingArgumentError, match=r"needs the parameters"):
    tx.update(params, state, value=jnp.float32(1.0), grad=params, value_fn=jnp.sum)
  with pytest.raises(gtx.StructureError, match=r"grad and params differ"):
    tx.update(params, state, params, value=jnp.float32(1.0), grad=jnp.ones(3), value_fn=jnp.sum)


def test_zoom_errors_name_the_argument_and_a_loss_of_shape_one_is_a_scalar():
  tx = gtx.chain(ls=gtx.scale_by_zoom_linesearch(10))
  params = jnp.array([1.0, 2.0, 3.0])
  state = tx.init(params)
  f = lambda p: jnp.sum(p ** 2)  # noqa: E731
  value, grad = jax.value_and_grad(f)(params)
  # A grad or params of the wrong shape: named at once (it was a while_loop carry error).
  with pytest.raises(gtx.StructureError, match=r"stage 'ls'.*grad and state.grad differ"):
    tx.update(-grad, state, params, value=value, grad=jnp.ones(1), value_fn=f)
  with pytest.raises(gtx.StructureError, match=r"params and state.grad differ"):
    tx.update(-grad, state, jnp.ones(1), value=value, grad=grad, value_fn=f)
  # A loss of shape (1,), as the backtracking search takes it (it raised in jax.lax.cond).
  f1 = lambda p: jnp.sum(p ** 2, keepdims=True)  # noqa: E731
  cases = ((value, f), (value[None], f), (value, f1), (value[None], f1))

  @jax.jit  # the four searches in one program: run eagerly, each compiled its while_loop
  def searches(state, params, grad, values):
    return [tx.update(-grad, state, params, value=v, grad=grad, value_fn=fn)
            for v, (_, fn) in zip(values, cases)]

  results = searches(state, params, grad, [v for v, _ in cases])
  expected, _ = results[0]
  for updates, new_state in results[1:]:
    np.testing.assert_allclose(updates, expected, rtol=1e-6)
    np.testing.assert_allclose(updates, -0.5 * grad, rtol=1e-6)  # the exact minimizer
    assert new_state["ls"].value.shape == ()


@pytest.mark.parametrize("search", ["zoom", "backtracking"])
def test_a_loss_of_more_than_one_entry_is_named(search):
  # A value (or value_fn result) of shape (2,) failed in the reshape to a scalar with
  # numpy's "cannot reshape array of shape (2,) (size 2) into shape ()", naming neither
  # the stage nor the argument.
  stage = ("scale_by_zoom_linesearch" if search == "zoom" else
           "scale_by_backtracking_linesearch")
  search_tx = (gtx.scale_by_zoom_linesearch(10) if search == "zoom" else
               gtx.scale_by_backtracking_linesearch(10))
  tx = gtx.chain(ls=search_tx)
  params = jnp.array([1.0, 2.0, 3.0])
  state = tx.init(params)
  f = lambda p: jnp.sum(p ** 2)  # noqa: E731
  value, grad = jax.value_and_grad(f)(params)
  with pytest.raises(gtx.StructureError, match=rf"^stage 'ls': {stage}: value must be a scalar "
                                               r"loss \(or of shape \(1,\)\), got shape "
                                               r"\(2,\)$"):
    tx.update(-grad, state, params, value=jnp.stack([value, value]), grad=grad, value_fn=f)
  with pytest.raises(gtx.StructureError, match=rf"^stage 'ls': {stage}: value_fn's result must "
                                               r"be a scalar loss \(or of shape \(1,\)\), got "
                                               r"shape \(3,\)"):
    tx.update(-grad, state, params, value=value, grad=grad, value_fn=lambda p: p ** 2)
  # A scalar loss still steps as before: zoom to the minimizer along -grad (a step of 0.5),
  # backtracking to its first sufficient decrease (1 gives f(-p) = f(p), 0.8 decreases).
  updates, _ = tx.update(-grad, state, params, value=value, grad=grad, value_fn=f)
  np.testing.assert_allclose(updates, (0.5 if search == "zoom" else 0.8) * -grad, rtol=1e-6)


@pytest.mark.parametrize("make, scale", [
    (lambda: gtx.lbfgs(), 2.0),
    (lambda: gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(
        15, store_grad=True, verbose=True)), jnp.asarray(2.0)),
], ids=["lbfgs-zoom", "backtracking"])
def test_an_eager_step_compiles_its_search_once(make, scale, compiles):
  """Run eagerly, the search's while_loop (its body a new closure at each step) was compiled
  again at every step (lbfgs: 0.1-0.5 s a step on a CPU); it is one program per value_fn,
  options and shapes. ``scale`` reaches value_fn as given: a Python float (part of the
  program) or an array (an argument of it)."""
  tx = make()
  params = jnp.asarray([1.0, -2.0, 0.5])
  state = tx.init(params)
  counts = []
  for _ in range(2):
    value, grad = jax.value_and_grad(_quadratic)(params, scale=scale)
    n, (updates, state) = compiles(lambda: tx.update(grad, state, params, value=value, grad=grad,
                                                     value_fn=_quadratic, scale=scale))
    params = gtx.apply_updates(params, updates)
    counts.append(n)
  assert counts[0] > 0 and counts[1] == 0, counts
  assert float(_quadratic(params)) < 0.5 * float(_quadratic(jnp.asarray([1.0, -2.0, 0.5])))


def test_an_eager_step_keeps_only_the_last_few_value_fns():
  # The search's programs were in jax.jit's cache of static arguments, which kept every
  # value_fn given: a lambda made at each eager step, with the batch it closes over
  # (8 MB a step for a 1 MB batch, measured), as long as jax kept the program.
  tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(2))
  params = jnp.asarray([1.0, -2.0, 0.5])
  state = tx.init(params)
  first = None
  for k in range(gtx.core.JITS_KEPT + 1):
    value_fn = lambda p, k=k: _quadratic(p) + k  # noqa: E731  # made anew, as in a loop
    first = first or weakref.ref(value_fn)
    value, grad = jax.value_and_grad(value_fn)(params)
    updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=value_fn)
    params = gtx.apply_updates(params, updates)
  del value_fn
  gc.collect()
  assert first() is None


@pytest.mark.parametrize("make", [gtx.lbfgs, lambda: gtx.chain(
    sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(4))], ids=["zoom", "backtracking"])
def test_a_jitted_step_leaks_no_tracer_of_its_value_fn(make):
  """Inside a jitted step, value_fn closes over the step's traced batch; the search kept it
  among its last few programs, so the tracers outlived their trace and
  jax.checking_leaks() raised "Leaked trace" at the first step (optax's did not). The
  jitted steps, which trace the search into the step, equal the eager ones, which run it
  as the search's own program (one value_fn, over the concrete batch: compiled once)."""
  tx = make()
  batch = jnp.full(3, 0.1)

  def step(params, state, batch, value_fn=None):
    if value_fn is None:  # as a train step writes it, over its (traced) batch
      value_fn = lambda p: _quadratic(p - batch)  # noqa: E731
    value, grad = jax.value_and_grad(value_fn)(params)
    updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=value_fn)
    return gtx.apply_updates(params, updates), state

  runs = []
  for run in (jax.jit(step), functools.partial(step, value_fn=lambda p: _quadratic(p - batch))):
    params = jnp.asarray([1.0, -2.0, 0.5])
    state = tx.init(params)
    with jax.checking_leaks():
      for _ in range(3):
        params, state = run(params, state, batch)
    runs.append(params)
  np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6)


# ---------------------------------------------------------------------------- reuse


def _loop(tx, f, params, steps, from_state, step=None):
  """``steps`` jitted steps; ``step`` (``_step_fn(tx, f, jit=True)``) given, its compiles
  are reused."""
  value_and_grad = gtx.value_and_grad_from_state(f)
  state = tx.init(params)
  step = _step_fn(tx, f, jit=True) if step is None else step
  iterates = []
  for _ in range(steps):
    if from_state:
      value, grad = value_and_grad(params, state=state)
    else:
      value, grad = jax.value_and_grad(f)(params)
    updates, state = step(grad, state, params, value)
    params = gtx.apply_updates(params, updates)
    iterates.append(jax.tree.map(np.asarray, params))
  return iterates, state


@pytest.mark.parametrize("make", [
    lambda: gtx.lbfgs(),
    lambda: gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(
        max_backtracking_steps=15, store_grad=True)),
    lambda: gtx.chain(clip=gtx.clip_by_global_norm(10.0), inner=gtx.chain(
        sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(20, store_grad=True))),
], ids=["lbfgs", "chain", "nested"])
def test_value_and_grad_from_state_gives_the_same_iterates(make):
  tx = make()
  params = jnp.asarray([1.0, -2.0, 0.5])
  step = _step_fn(tx, _quadratic, jit=True)  # one program for both loops, compiled once
  reused, state = _loop(tx, _quadratic, params, 6, from_state=True, step=step)
  explicit, _ = _loop(tx, _quadratic, params, 6, from_state=False, step=step)
  for a, b in zip(reused, explicit):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert float(_quadratic(jnp.asarray(reused[-1]))) < 0.5 * float(_quadratic(params))


def test_value_and_grad_from_state_reuses_what_the_line_search_stored():
  calls = []

  def f(p):
    calls.append(1)
    return _quadratic(p)

  tx = gtx.lbfgs()
  params = jnp.asarray([1.0, -2.0, 0.5])
  state = tx.init(params)
  value_and_grad = gtx.value_and_grad_from_state(f)
  value, grad = value_and_grad(params, state=state)  # value inf in a fresh state: computed
  assert calls and float(value) == float(_quadratic(params))
  updates, state = _step_fn(tx, _quadratic, jit=True)(grad, state, params, value)
  params = gtx.apply_updates(params, updates)
  calls.clear()
  value, grad = value_and_grad(params, state=state)
  assert not calls  # reused, not computed
  assert value is state["linesearch"].value and grad is state["linesearch"].grad
  np.testing.assert_allclose(float(value), float(_quadratic(params)), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), DIAG * np.asarray(params), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_value_and_grad_from_state_jitted_with_arguments(dtype):
  with jax.enable_x64(dtype == jnp.float64):
    tx = gtx.chain(sgd=gtx.sgd(1.0),
                   ls=gtx.scale_by_backtracking_linesearch(10, store_grad=True))
    value_and_grad = gtx.value_and_grad_from_state(_quadratic)

    @jax.jit
    def step(params, state, scale):
      value, grad = value_and_grad(params, scale=scale, state=state)
      updates, state = tx.update(grad, state, params, value=value, grad=grad,
                                 value_fn=_quadratic, scale=scale)
      return gtx.apply_updates(params, updates), state, value, grad

    params, state = jnp.asarray([1.0, 1.0, 1.0], dtype), tx.init(jnp.zeros(3, dtype))
    scale = jnp.asarray(2.0, dtype)
    for _ in range(3):
      x = np.asarray(params, np.float64)
      params, state, value, grad = step(params, state, scale)
      # Computed at the first step (the state's value is inf), reused after: both are
      # the loss and gradient at the params the step started from.
      assert value.dtype == grad.dtype == dtype
      np.testing.assert_allclose(float(value), float(np.sum(DIAG * x * x)),
                                 rtol=10 * TOL[dtype])
      np.testing.assert_allclose(np.asarray(grad), 2.0 * DIAG * x, rtol=10 * TOL[dtype],
                                 atol=TOL[dtype])


def test_backtracking_on_a_mixed_precision_tree():
  # A bfloat16 leaf next to a float32 one: the slope is summed and the loss compared in
  # float32 (strict promotion needs one dtype); each leaf keeps its dtype.
  def f(p):
    return jnp.sum(p["a"].astype(jnp.float32) ** 2) + jnp.sum(p["b"] ** 2)

  tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(
      10, slope_rtol=0.3, store_grad=True))
  params = {"a": jnp.asarray([1.0, 2.0], jnp.bfloat16), "b": jnp.asarray([0.5, -1.0])}
  state = tx.init(params)
  value_and_grad = gtx.value_and_grad_from_state(f)
  for _ in range(3):
    value, grad = value_and_grad(params, state=state)
    updates, state = _step_fn(tx, f, jit=True)(grad, state, params, value)
    assert {k: u.dtype for k, u in updates.items()} == {"a": jnp.bfloat16, "b": jnp.float32}
    # The loss in the widest dtype (optax would round it to the first leaf's bfloat16).
    assert value.dtype == state["ls"].value.dtype == jnp.float32
    new = gtx.apply_updates(params, updates)
    # Armijo in float64 on the iterates, up to bfloat16's rounding of the loss.
    g = {k: np.asarray(v, np.float64) for k, v in grad.items()}
    slope = -sum(float(np.sum(v * v)) for v in g.values())
    eta = float(state["ls"].learning_rate)
    assert 0 < eta <= 1.0 and int(state["ls"].info.num_linesearch_steps) >= 1
    assert float(f(new)) <= float(value) + 0.3 * eta * slope + 1e-2 * float(value)
    params = new


def test_value_and_grad_from_state_errors():
  value_and_grad = gtx.value_and_grad_from_state(_quadratic)
  params = jnp.ones(3)
  with pytest.raises(gtx.StructureError, match="holds no line search state"):
    value_and_grad(params, state=gtx.adam(0.1).init(params))
  two = gtx.chain(a=gtx.scale_by_backtracking_linesearch(5, store_grad=True),
                  b=gtx.scale_by_zoom_linesearch(5))
  with pytest.raises(gtx.StructureError, match=re.escape("2 line search states (at ['a'], ['b'])")):
    value_and_grad(params, state=two.init(params))
  with pytest.raises(TypeError, match="value_fn must be the loss"):
    gtx.value_and_grad_from_state(None)
  no_grad = gtx.chain(gtx.sgd(1.0), gtx.scale_by_backtracking_linesearch(5))
  with pytest.raises(ValueError, match="store_grad=True"):
    value_and_grad(params, state=no_grad.init(params))


_LINESEARCH_FAMILY = [
    pytest.param(lambda: gtx.lbfgs(), "scale_by_lbfgs", id="lbfgs"),
    pytest.param(lambda: gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_zoom_linesearch(5)),
                 "scale_by_zoom_linesearch", id="zoom"),
    pytest.param(lambda: gtx.chain(sgd=gtx.sgd(1.0),
                                   ls=gtx.scale_by_backtracking_linesearch(5, store_grad=True)),
                 "scale_by_backtracking_linesearch", id="backtracking"),
]


@pytest.mark.parametrize("make, stage", _LINESEARCH_FAMILY)
def test_a_tree_without_leaves_steps_as_a_no_op(make, stage):
  # The first slope summed no leaves: IndexError (optax 0.2.8 too).
  del stage
  tx = make()

  def f(params):
    del params
    return jnp.float32(1.0)

  step = _step_fn(tx, f, jit=True)
  state = tx.init({})
  for _ in range(2):
    updates, state = step({}, state, {}, jnp.float32(1.0))
    assert updates == {}


def _loss_of_w_alone(p):
  return _quadratic(p["w"])


def _loss_of_w_beside_none(p):
  assert p["b"] is None, p["b"]  # at trace time: value_fn's params are the user's
  return _quadratic(p["w"])


_STEPS: dict = {}


def _cached_step(make, f):
  """``(tx, step)`` for ``_loop``: one ``make()`` and one jitted step per ``(make, f)``, so
  the cases of from_state (one step program) compile it once; each runs its own loop."""
  if (make, f) not in _STEPS:
    tx = make()
    _STEPS[make, f] = tx, _step_fn(tx, f, jit=True)
  return _STEPS[make, f]


@pytest.mark.parametrize("from_state", [False, True])
@pytest.mark.parametrize("make, stage", _LINESEARCH_FAMILY)
def test_a_none_param_is_absent_from_the_steps(make, stage, from_state):
  # eqx.filter(model, eqx.is_inexact_array) gives None where the model holds no float
  # array: each stage refused it ("left out of the step"), where every other optimizer
  # takes it as absent. The steps are now those on the float leaves alone, and value_fn
  # gets the tree as it was given, None included. value_and_grad_from_state gave the
  # stored gradient's MaskedNode back, which no params with None matched.
  del stage
  start = jnp.asarray([-1.2, 1.0, 0.5])
  tx, step = _cached_step(make, _loss_of_w_alone)
  expected, _ = _loop(tx, _loss_of_w_alone, {"w": start}, 4, from_state, step=step)
  tx, step = _cached_step(make, _loss_of_w_beside_none)
  got, _ = _loop(tx, _loss_of_w_beside_none, {"w": start, "b": None}, 4, from_state, step=step)
  assert all(p["b"] is None for p in got)  # the updates there were None
  np.testing.assert_array_equal([p["w"] for p in got], [p["w"] for p in expected])
  assert not np.array_equal(got[-1]["w"], start)


@pytest.mark.parametrize("make", [
    lambda: gtx.scale_by_lbfgs(), lambda: gtx.scale_by_zoom_linesearch(5),
    lambda: gtx.scale_by_backtracking_linesearch(5)], ids=["lbfgs", "zoom", "backtracking"])
def test_integer_params_raise_naming_the_key_path(make):
  # Integer params only: the loss, held in their dtype, starts at inf (OverflowError, in
  # optax 0.2.8 too); beside float ones, the step failed on their float0 gradients. A
  # transformation masks integer leaves as it starts, and value_fn cannot be evaluated on
  # the params without them: each line search (on its own or in a chain) names them.
  n = jnp.arange(2, dtype=jnp.int32)
  for tx in (make(), gtx.chain(opt=make())):
    name = make().name
    for params in ({"n": n}, {"n": n, "w": jnp.ones(2)}):
      with pytest.raises(gtx.StructureError,
                         match=rf"{name}: params at key path \['n'\] are left out of the "
                               rf"step .*{name} evaluates value_fn on the whole params"):
        tx.init(params)


def test_lbfgs_memory_size_is_a_whole_number_and_finite():
  # 2.0 passed the integer check, then jnp.zeros((2.0, 3)) raised; inf raised there too.
  params = jnp.array([1.0, -2.0, 0.5])
  whole, given_float = gtx.lbfgs(memory_size=2), gtx.lbfgs(memory_size=2.0)
  assert given_float.init(params)["lbfgs"].weights_memory.shape == (2,)
  got = _minimize_steps(given_float, params, 4)
  np.testing.assert_array_equal(got, _minimize_steps(whole, params, 4))
  for bad in (float("inf"), 2.5, 0):
    with pytest.raises(gtx.HyperparameterError,
                       match=rf"^lbfgs: memory_size must be in \[1, .*got {bad}"):
      gtx.lbfgs(memory_size=bad)


@pytest.mark.parametrize("make", [gtx.scale_by_lbfgs, gtx.lbfgs])
@pytest.mark.parametrize("bad, shown", [
    # Each entry of [3] is in the range, so it passed the check, and int([3]) raised
    # "int() argument must be ... not 'list'", naming neither the stage nor memory_size.
    ([3], r"\[3\]"), ((3,), r"\(3,\)"), (np.array([3]), r"array\(\[3\]\)"),
    ("3", r"'3' \(convert it with int\(\)\)"), (3.5, "3.5"), (0, "0"), (None, "None"),
])
def test_lbfgs_memory_size_not_one_whole_number_raises_naming_the_stage_and_argument(
    make, bad, shown):
  checked = r" \(checked by scale_by_lbfgs\)" if make is gtx.lbfgs else ""
  with pytest.raises(gtx.HyperparameterError, match=rf"^{make.__name__}: memory_size must be (a "
                     rf"number )?in \[1, 2147483647\] \(an integer\), got {shown}{checked}$"):
    make(memory_size=bad)


def _minimize_steps(tx, params, steps):
  # One jitted scan: run eagerly, every step compiled its line search's while_loop anew.
  def body(carry, _):
    params, state = carry
    value, grad = jax.value_and_grad(_quadratic)(params)
    updates, state = tx.update(grad, state, params, value=value, grad=grad,
                               value_fn=_quadratic)
    return (gtx.apply_updates(params, updates), state), None

  run = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), length=steps)[0][0])
  return np.asarray(run(params))


def test_backtracking_state_maps_with_tree_map_params():
  tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(5, store_grad=True))
  params = {"w": jnp.ones((2, 2))}
  shapes = gtx.tree_utils.tree_map_params(tx, lambda p: p.shape, tx.init(params),
                               transform_non_params=lambda _: None)
  assert shapes["ls"].grad == {"w": (2, 2)} and shapes["ls"].value is None


def test_backtracking_keeps_bfloat16_and_reports_failures_when_verbose(capfd):
  def f(p):
    return jnp.sum(p.astype(jnp.float32) ** 2).astype(p.dtype)

  tx = gtx.chain(sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(10, store_grad=True))
  params = jnp.asarray([1.0, 2.0], jnp.bfloat16)
  state = tx.init(params)
  value_and_grad = gtx.value_and_grad_from_state(f)
  for _ in range(2):
    value, grad = value_and_grad(params, state=state)
    updates, state = _step_fn(tx, f, jit=True)(grad, state, params, value)
    params = gtx.apply_updates(params, updates)
  assert updates.dtype == state["ls"].value.dtype == state["ls"].grad.dtype == jnp.bfloat16
  assert float(f(params)) < 5.0 / 4
  # An ascent direction: no step passes; optax's rule takes the last one tried, and says so.
  tx = gtx.chain(ls=gtx.scale_by_backtracking_linesearch(3, verbose=True))
  params = jnp.ones(2)
  updates, state = tx.update(params, tx.init(params), params, value=jnp.float32(2.0),
                             grad=2 * params, value_fn=lambda p: jnp.sum(p * p))
  jax.effects_barrier()
  assert "no step length with sufficient decrease" in capfd.readouterr().out
  np.testing.assert_allclose(np.asarray(updates), [0.8**3] * 2, rtol=1e-6)
  assert int(state["ls"].info.num_linesearch_steps) == 4
  assert float(state["ls"].info.decrease_error) > 0


def test_zoom_reports_when_verbose_that_max_learning_rate_stopped_it(capfd):
  # f = |x|^2 from x = -60 along u = e_0: the strong Wolfe steps with c_2 = 0.5 are
  # [30, 90], past max_learning_rate 10 (trial steps 1, 2, 4, 8, then 10; without the cap,
  # 32). The search took step 10 silently; optax says so.
  def f(x):
    return jnp.sum(x * x)

  u, x = jnp.array([1.0, 0.0]), jnp.array([-60.0, 0.0])
  for max_learning_rate, step, said in ((10.0, 10.0, True), (100.0, 32.0, False)):
    tx = gtx.scale_by_zoom_linesearch(10, max_learning_rate=max_learning_rate, curv_rtol=0.5,
                                      initial_guess_strategy="one", verbose=True)
    updates, state = jax.jit(functools.partial(tx.update, value_fn=f))(
        u, tx.init(x), x, value=f(x), grad=jax.grad(f)(x))
    jax.effects_barrier()
    out = capfd.readouterr().out
    assert ("reached max_learning_rate with no interval" in out) == said, out
    np.testing.assert_allclose(np.asarray(updates), [step, 0.0], rtol=1e-6)
    assert (float(state.info.curvature_error) > 0) == said


# ----------------------------------------------------------------------------
# Complex parameters. jax.grad of a real loss of complex z is the conjugate of the
# steepest-ascent direction (d/dx - i d/dy), so the slope along u is Re sum(u g), not
# Re <u, g>; optax's convention has the updates conjugated, u = conj(g).

_CENTRE = jnp.array([0.5 + 2.0j, -1.0 - 3.0j, 0.25j], jnp.complex64)


def _complex_loss(z):
  """sum_k c_k |z_k - a_k|^2 + |z_0|^4 / 4: real, not holomorphic, minimum near a."""
  d = z - _CENTRE.astype(z.dtype)
  return (jnp.sum(jnp.asarray(DIAG, z.real.dtype) * (d * d.conj()).real)
          + 0.25 * jnp.abs(z[0]) ** 4)


def test_zoom_linesearch_meets_the_wolfe_conditions_on_complex_params():
  with jax.enable_x64(True):
    z = jnp.array([1.0 - 1.0j, 2.0 + 0.5j, -1.0j], jnp.complex128)
    value, grad = jax.value_and_grad(_complex_loss)(z)
    direction = -grad.conj()  # steepest descent
    # The slope that the real variables (Re z, Im z) give, by finite differences.
    slope0 = float((_complex_loss(z + 1e-7 * direction) - _complex_loss(z - 1e-7 * direction))
                   / 2e-7)
    np.testing.assert_allclose(slope0, float(jnp.sum(direction * grad).real), rtol=1e-6)
    assert slope0 < 0 < float(jnp.vdot(direction, grad).real)  # the conjugated form says ascent
    tx = gtx.scale_by_zoom_linesearch(max_linesearch_steps=30, initial_guess_strategy="one")
    updates, state = tx.update(direction, tx.init(z), z, value=value, grad=grad,
                               value_fn=_complex_loss)
    eta = float(state.learning_rate)
    assert eta > 0
    np.testing.assert_allclose(updates, eta * direction, rtol=1e-12)
    new_value, new_grad = jax.value_and_grad(_complex_loss)(z + updates)
    assert float(new_value) <= float(value) + 1e-4 * eta * slope0
    assert abs(float(jnp.sum(direction * new_grad).real)) <= 0.9 * abs(slope0)
    assert float(state.info.decrease_error) == 0 and float(state.info.curvature_error) == 0


def test_lbfgs_on_complex_params_takes_the_steps_of_lbfgs_on_their_real_and_imaginary_parts():
  """Complex z in C^n is (Re z, Im z) in R^2n: the same iterates as optax.lbfgs there.

  optax.lbfgs on the complex tree itself leaves that path at the third step (its
  zoom line search's first slope takes <u, g> with u conjugated).
  """
  def path(tx, apply, f, x0, conjugate):
    def step(carry, _):
      x, state = carry
      value, grad = jax.value_and_grad(f)(x)
      updates, state = tx.update(grad.conj() if conjugate else grad, state, x, value=value,
                                 grad=grad, value_fn=f)
      x = apply(x, updates)
      return (x, state), x

    return jax.jit(lambda x: jax.lax.scan(step, (x, tx.init(x)), length=25)[1])(x0)

  def split_loss(x):
    return _complex_loss(jax.lax.complex(x[:3], x[3:]))

  with jax.enable_x64(True):
    z0 = jnp.array([1.0 - 1.0j, 2.0 + 0.5j, -1.0j], jnp.complex128)
    ours = path(gtx.lbfgs(), gtx.apply_updates, _complex_loss, z0, conjugate=True)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 and int64 under x64
      real = path(optax.lbfgs(), optax.apply_updates, split_loss,
                  jnp.concatenate([z0.real, z0.imag]), conjugate=False)
      optax_complex = path(optax.lbfgs(), optax.apply_updates, _complex_loss, z0, conjugate=True)
    real = np.asarray(real)
    np.testing.assert_allclose(ours, real[:, :3] + 1j * real[:, 3:], rtol=1e-9, atol=1e-12)
    assert float(jnp.abs(optax_complex[2] - ours[2]).max()) > 0.1
    assert float(jnp.linalg.norm(jax.grad(_complex_loss)(ours[-1]))) < 1e-8


class _UnhashableLoss:
  """A callable loss that cannot be hashed (it defines ``__eq__`` only), as some
  callable objects (a dataclass with ``eq=True``) are."""

  def __eq__(self, other):
    return isinstance(other, _UnhashableLoss)

  def __call__(self, p, scale=1.0):
    return _quadratic(p, scale=scale)


@pytest.mark.parametrize("make", [lambda: gtx.lbfgs(), lambda: gtx.chain(
    sgd=gtx.sgd(1.0), ls=gtx.scale_by_backtracking_linesearch(15))], ids=["zoom", "backtracking"])
def test_an_unhashable_value_fn_is_searched_unjitted_as_a_function_is_jitted(make):
  # The search is looked up by value_fn's identity; one that cannot be hashed runs unjitted.
  with pytest.raises(TypeError):
    hash(_UnhashableLoss())
  params = jnp.asarray([1.0, -2.0, 0.5])
  value, grad = jax.value_and_grad(_quadratic)(params)
  runs = []
  for value_fn in (_quadratic, _UnhashableLoss()):
    tx = make()
    updates, _ = tx.update(grad, tx.init(params), params, value=value, grad=grad,
                           value_fn=value_fn)
    runs.append(np.asarray(updates))
  np.testing.assert_allclose(runs[1], runs[0], rtol=1e-6)
  assert float(_quadratic(params + runs[1])) < float(value)
