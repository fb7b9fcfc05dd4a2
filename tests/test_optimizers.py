"""The classic optimizers and the foundation's primitives against numpy references.

Every case runs 60 steps on a multi-leaf tree — a scalar, a vector, a matrix,
a 3-d array, a leaf whose gradient is always zero and one whose gradient is
tiny — in float32 and float64, jitted and not, and must track the float64
numpy reference of its paper's rule at every step. Then every ready optimizer
must converge on an ill-conditioned quadratic and on Rosenbrock. An audit holds
the whole library to that: every public transformation of gtx and gtx.contrib
has a reference case (here or in a zoo_harness.reference_tests module), every
ready optimizer a convergence run, or registry.py names the test that checks it.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import gradtx as gtx
import registry
import zoo_harness
from registry import CLASSIC, PRIMITIVES, Case
from zoo_harness import all_finite, check_mixed_precision_tree

SHAPES = {"scalar": (), "vector": (3,), "matrix": (4, 5), "cube": (2, 3, 4), "zero": (3,),
          "tiny": (2,)}
STEPS = 60


def make_problem(seed: int = 0) -> tuple[dict, list[dict]]:
  """Initial params and a fixed sequence of gradients (zero and tiny leaves included)."""
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
  grads = []
  for t in range(STEPS):
    g = {k: rng.normal(size=s) * (1.0 + 0.5 * np.sin(t)) for k, s in SHAPES.items()}
    g["zero"] = np.zeros(SHAPES["zero"])
    g["tiny"] = rng.normal(size=SHAPES["tiny"]) * 1e-12
    grads.append(g)
  return params, grads


def run_reference(case: Case, params: dict, grads: list[dict]) -> list[dict]:
  ref = case.reference()
  ref.init(params)
  trajectory = []
  for g in grads:
    updates = ref.step(g, params)
    params = {k: params[k] + updates[k] for k in params}
    trajectory.append(params)
  return trajectory


# A case's tests of one dtype (jitted and not) follow one reference and one problem, made
# once per process: made at each test, their 360 conversions of a gradient leaf to jax and
# the reference's 60 steps took about a tenth of the test's CPU. The reference is made per
# dtype too: a schedule written with jnp (registry._halving_step_size) gives it float32
# step sizes outside jax.enable_x64.
_REFERENCES: dict[tuple[str, str], dict[str, np.ndarray]] = {}
_PROBLEMS: dict[str, tuple[dict, list[dict]]] = {}


def _reference_trajectory(case: Case, dtype: type) -> dict[str, np.ndarray]:
  """The reference's params after each step, leaf by leaf: shape (STEPS, *leaf shape)."""
  key = (case.id, np.dtype(dtype).name)
  if key not in _REFERENCES:
    params, grads = make_problem()
    trajectory = run_reference(case, params, grads)
    _REFERENCES[key] = {k: np.stack([p[k] for p in trajectory]) for k in params}
  return _REFERENCES[key]


def _problem(dtype: type) -> tuple[dict, list[dict]]:
  """make_problem()'s params and gradients as jax arrays of ``dtype``."""
  name = np.dtype(dtype).name
  if name not in _PROBLEMS:
    _PROBLEMS[name] = jax.tree.map(lambda v: jnp.asarray(v, dtype), make_problem())
  return _PROBLEMS[name]


class ReferenceTest(chex.TestCase):
  """gradtx == the numpy reference, step by step."""

  def _check(self, case: Case, dtype: type) -> None:
    expected = _reference_trajectory(case, dtype)
    params, grads = _problem(dtype)
    tx = case.gradtx()
    update = self.variant(tx.update)
    state = tx.init(params)
    # float32 runs accumulate rounding over 60 steps; float64 must agree closely.
    rtol, atol = (2e-4, 2e-5) if dtype == jnp.float32 else (1e-9, 1e-12)
    trajectory = []
    for g in grads:
      updates, state = update(g, state, params)
      params = gtx.apply_updates(params, updates)
      trajectory.append(params)
    # Every leaf at every step, read back at once and compared leaf by leaf: asserting
    # each leaf at each step (360 assert_allclose calls) cost more than the 60 jitted
    # steps they checked. A leaf off the reference is reported at its first step off.
    for k in params:
      for p in trajectory:
        assert p[k].dtype == dtype, (k, p[k].dtype)
      got = np.stack(jax.device_get([p[k] for p in trajectory])).astype(np.float64)
      close = np.isclose(got, expected[k], rtol=rtol, atol=atol, equal_nan=True)
      step = int(np.argmin(close.reshape(STEPS, -1).all(axis=1)))  # 0 where all are
      np.testing.assert_allclose(got[step], expected[k][step], rtol=rtol, atol=atol,
                                 err_msg=f"{case.id}: leaf {k!r} at step {step + 1}")

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters((c.id, c) for c in CLASSIC + PRIMITIVES)
  def test_float32(self, case):
    self._check(case, jnp.float32)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters((c.id, c) for c in CLASSIC + PRIMITIVES)
  def test_float64(self, case):
    with jax.enable_x64(True):
      self._check(case, jnp.float64)


# ----------------------------------------------------------------------------
# Convergence on real problems.

def ill_conditioned_quadratic(x: jax.Array) -> jax.Array:
  """f(x) = 1/2 sum_i c_i x_i^2 with condition number 100; minimum 0 at 0."""
  curvature = jnp.logspace(0, 2, x.shape[0], dtype=x.dtype)
  return 0.5 * jnp.sum(curvature * x**2)


def rosenbrock(x: jax.Array) -> jax.Array:
  """f(x, y) = (1 - x)^2 + 100 (y - x^2)^2; minimum 0 at (1, 1)."""
  return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


# (name, optimizer for the quadratic, for Rosenbrock, quadratic steps, Rosenbrock steps);
# learning rates tuned per rule. Adadelta's step grows from sqrt(eps), so it needs
# a slow second-moment decay and many steps on Rosenbrock's curved valley.
CONVERGENCE = [
    ("sgd", gtx.sgd(0.009), gtx.sgd(0.0015), 1000, 5000),
    ("momentum", gtx.sgd(0.005, momentum=0.9), gtx.sgd(0.0005, momentum=0.9), 500, 3000),
    ("nesterov", gtx.sgd(0.005, momentum=0.9, nesterov=True),
     gtx.sgd(0.0005, momentum=0.9, nesterov=True), 500, 3000),
    ("adagrad", gtx.adagrad(0.5), gtx.adagrad(0.3), 1000, 10000),
    ("rmsprop", gtx.rmsprop(0.002), gtx.rmsprop(0.002), 3000, 10000),
    # Adadelta with the paper's rho = 0.95 reaches 1e-14 on the quadratic by step 500 and
    # then dithers outward (once E[g^2] << eps its step is gradient descent with a step
    # size of at least 1, too long for the stiff directions): 0.07 at step 3000 in float64
    # and on a GPU.
    # XLA:CPU flushes the float32 subnormals it passes through to zero, which ended that
    # run at exactly 0 and hid it. A slower decay of the averages converges cleanly.
    ("adadelta", gtx.adadelta(1.0, rho=0.999), gtx.adadelta(0.3, rho=0.9995), 3000, 40000),
    ("adam", gtx.adam(0.05), gtx.adam(0.02), 1000, 3000),
    ("adamw", gtx.adamw(0.05, weight_decay=1e-6), gtx.adamw(0.02, weight_decay=1e-6), 1000,
     3000),
    ("nadam", gtx.nadam(0.05), gtx.nadam(0.02), 1000, 3000),
    ("nadamw", gtx.nadamw(0.05, weight_decay=1e-6), gtx.nadamw(0.02, weight_decay=1e-6), 1000,
     3000),
    ("amsgrad", gtx.amsgrad(0.05), gtx.amsgrad(0.1), 1000, 10000),
    ("adamax", gtx.adamax(0.05), gtx.adamax(0.1), 1000, 10000),
    ("adamaxw", gtx.adamaxw(0.05, weight_decay=1e-6), gtx.adamaxw(0.1, weight_decay=1e-6),
     1000, 10000),
]


def minimise(tx: gtx.GradientTransformation, f, x0: jax.Array, steps: int) -> jax.Array:
  def step(carry, _):
    x, state = carry
    updates, state = tx.update(jax.grad(f)(x), state, x)
    return (gtx.apply_updates(x, updates), state), None

  (x, _), _ = jax.jit(lambda x: jax.lax.scan(step, (x, tx.init(x)), length=steps))(x0)
  return x


@pytest.mark.parametrize("name, quad_tx, rosen_tx, quad_steps, rosen_steps", CONVERGENCE,
                         ids=[c[0] for c in CONVERGENCE])
def test_converges(name, quad_tx, rosen_tx, quad_steps, rosen_steps):
  x = minimise(quad_tx, ill_conditioned_quadratic, jnp.ones(10), quad_steps)
  assert float(ill_conditioned_quadratic(x)) < 1e-3, f"{name} on the quadratic: {x}"
  x = minimise(rosen_tx, rosenbrock, jnp.array([-1.0, 1.5]), rosen_steps)
  np.testing.assert_allclose(x, [1.0, 1.0], atol=0.05, err_msg=f"{name} on Rosenbrock")


def _public_factories() -> dict[str, tuple[str, object]]:
  """Every public function of gtx and gtx.contrib (``contrib.``-prefixed) with its return type."""
  found = {}
  for module, prefix in ((gtx, ""), (gtx.contrib, "contrib.")):
    for name in module.__all__:
      obj = getattr(module, name)
      if inspect.isfunction(obj) and obj not in [f for _, f in found.values()]:
        found[prefix + name] = (inspect.signature(obj).return_annotation, obj)
  return found


def _stage_names(tx: object) -> set[str]:
  """The names of ``tx`` and of the stages inside it, at any depth."""
  names = {getattr(tx, "name", None)}
  for stage in getattr(tx, "stages", {}).values():
    names |= _stage_names(stage)
  return {n for n in names if n}


def _test_modules_with(text: str) -> list:
  """The test modules whose source holds ``text``, imported (as pytest imports them)."""
  here = pathlib.Path(__file__).parent
  return [importlib.import_module(path.stem) for path in sorted(here.glob("test_*.py"))
          if text in path.read_text()]


def test_every_public_transformation_has_a_reference_case_and_every_optimizer_a_convergence_run():
  """The audit of the standard, mechanically: registry.py says what it reads and allows."""
  _test_modules_with("reference_tests(")  # fills zoo_harness.REFERENCE_CASES
  built = set()
  for case in CLASSIC + PRIMITIVES:
    built |= _stage_names(case.gradtx())
  for cases in zoo_harness.REFERENCE_CASES.values():
    for zoo_case in cases:
      built |= _stage_names(zoo_case.make())
  factories = _public_factories()
  transformations = {name for name, (returns, _) in factories.items()
                     if returns in ("GradientTransformation", "Chain")}
  bare = lambda name: name.removeprefix("contrib.")  # noqa: E731  (stage names are bare)
  missing = sorted(n for n in transformations
                   if bare(n) not in built and n not in registry.CHECKED_ELSEWHERE)
  assert not missing, f"no numpy reference case (registry.py, zoo_harness.reference_tests): {missing}"
  stale = sorted(n for n in registry.CHECKED_ELSEWHERE
                 if n not in transformations or bare(n) in built)
  assert not stale, f"CHECKED_ELSEWHERE names a case covers, or no transformation: {stale}"

  ready = set(gtx.optimizers.__all__) | {n for n in transformations
                                         if n.startswith("contrib.") and
                                         factories[n][0] == "Chain"}
  converged = {row[0] for module in _test_modules_with("CONVERGENCE = [")
               for row in module.CONVERGENCE}
  unconverged = sorted(n for n in ready
                       if bare(n) not in converged and n not in registry.CONVERGES_ELSEWHERE)
  assert not unconverged, f"no convergence run (a CONVERGENCE table): {unconverged}"
  stale = sorted(n for n in registry.CONVERGES_ELSEWHERE if n not in ready or bare(n) in converged)
  assert not stale, f"CONVERGES_ELSEWHERE names one a CONVERGENCE table runs: {stale}"
  # Each test named instead exists.
  for module, test in {**registry.CHECKED_ELSEWHERE, **registry.CONVERGES_ELSEWHERE}.values():
    assert callable(getattr(importlib.import_module(module), test, None)), (module, test)


def test_adadelta_default_descends_where_optax_climbs():
  tx = gtx.adadelta()
  updates, _ = tx.update(jnp.ones(1), tx.init(jnp.zeros(1)), jnp.zeros(1))
  assert float(updates[0]) < 0


def test_nadam_without_nesterov_is_adam():
  # As in optax, where nadam and nadamw are adam and adamw with the flag preset.
  params = {"w": jnp.linspace(-1.0, 1.0, 6)}
  for nadam, adam in ((gtx.nadam(0.1, nesterov=False), gtx.adam(0.1)),
                      (gtx.nadamw(0.1, weight_decay=0.2, nesterov=False),
                       gtx.adamw(0.1, weight_decay=0.2))):
    assert nadam.name == adam.name
    s_nadam, s_adam = nadam.init(params), adam.init(params)
    for t in range(5):
      grads = {"w": jnp.cos(params["w"] * (t + 1))}
      u_nadam, s_nadam = nadam.update(grads, s_nadam, params)
      u_adam, s_adam = adam.update(grads, s_adam, params)
      np.testing.assert_array_equal(u_nadam["w"], u_adam["w"])
      params = gtx.apply_updates(params, u_adam)


# ----------------------------------------------------------------------------
# Bad hyperparameters: a table of (constructor, exception, message).

BAD_HYPERPARAMETERS = [
    (lambda: gtx.adam(1e-3, b1=1.0), r"adam: b1 must be in \[0, 1\), got 1.0"),
    (lambda: gtx.adam(1e-3, b1=-0.1), r"b1 must be in \[0, 1\), got -0.1"),
    (lambda: gtx.adam(1e-3, b2=1.5), r"b2 must be in \[0, 1\)"),
    (lambda: gtx.adam(1e-3, eps=-1e-8), r"eps must be in \[0, inf\)"),
    (lambda: gtx.adam(-1e-3), r"adam: learning_rate must be in \[0, inf\)"),
    (lambda: gtx.sgd(0.1, momentum=-0.9), r"sgd: momentum must be in \[0, inf\), got -0.9"),
    (lambda: gtx.clip_by_global_norm(-1.0), r"max_norm must be in \(0, inf\], got -1.0"),
    (lambda: gtx.clip_by_global_norm(0.0), r"max_norm must be in \(0, inf\]"),
    (lambda: gtx.clip(-0.5), r"clip: max_delta must be in \[0, inf\]"),
    (lambda: gtx.clip_by_block_rms(0.0), r"threshold must be in \(0, inf\]"),
    (lambda: gtx.rmsprop(0.1, decay=1.0), r"rmsprop: decay must be in \[0, 1\)"),
    (lambda: gtx.rmsprop(0.1, centered=True, eps=-1.0), r"rmsprop: eps must be"),
    (lambda: gtx.adagrad(0.1, eps=-1.0), r"adagrad: eps must be in \[0, inf\)"),
    (lambda: gtx.adadelta(rho=1.2), r"adadelta: rho must be in \[0, 1\)"),
    (lambda: gtx.adamw(1e-3, weight_decay=-1e-4),
     r"adamw: weight_decay must be in \[0, inf\)"),
    (lambda: gtx.ema(decay=float("nan")), r"ema: decay must be in \[0, 1\), got nan"),
    (lambda: gtx.add_l1_penalty(-0.1), r"add_l1_penalty: l1 must be in \[0, inf\)"),
    (lambda: gtx.adam("fast"), r"learning_rate must be a number"),
    # optimistic_adam's rate is the optimistic alpha (any sign): a negative rate climbed.
    (lambda: gtx.optimistic_adam(-0.01),
     r"^optimistic_adam: learning_rate must be in \[0, inf\), got -0.01$"),
    (lambda: gtx.optimistic_adam(float("nan"), optimism=0.1),
     r"^optimistic_adam: learning_rate must be in \[0, inf\), got nan$"),
]


@pytest.mark.parametrize("make, message", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_raise_at_construction(make, message):
  with pytest.raises(ValueError, match=message):
    make()


# inf was taken wherever a range had no upper bound, though the range printed as
# [0, inf): adam(inf) stepped by NaN, adamw(weight_decay=inf) by -inf, eps=inf by 0.
INFINITE_HYPERPARAMETERS = [
    (lambda: gtx.sgd(math.inf),
     r"^sgd: learning_rate must be a finite number in \[0, inf\), got inf \(checked by "
     r"scale_by_learning_rate\)$"),
    (lambda: gtx.adam(float("inf")), r"^adam: learning_rate must be a finite number in "
     r"\[0, inf\), got inf \(checked by scale_by_learning_rate\)$"),
    (lambda: gtx.adam(jnp.float32(jnp.inf)), r"learning_rate must be a finite number .*got inf "),
    (lambda: gtx.adamw(1e-3, weight_decay=math.inf),
     r"^adamw: weight_decay must be a finite number in \[0, inf\), got inf \(checked by "
     r"add_decayed_weights\)$"),
    (lambda: gtx.adam(1e-3, eps=math.inf),
     r"^adam: eps must be a finite number in \[0, inf\), got inf \(checked by scale_by_adam\)$"),
    (lambda: gtx.sgd(0.1, momentum=math.inf),
     r"^sgd: momentum must be a finite number in \[0, inf\), got inf \(checked by trace, as its "
     r"decay\)$"),
    (lambda: gtx.scale(-math.inf),
     r"^scale: step_size must be a finite number in \(-inf, inf\), got -inf$"),
    (lambda: gtx.contrib.muon(0.1, ns_coeffs=(3.4445, -math.inf, 2.0315)),
     r"^muon: ns_coeffs must be finite numbers in \(-inf, inf\), got an array "
     r"holding inf \(checked by scale_by_muon\)$"),
    # Thresholds that stay finite: AGC's bound is clipping times a norm that may be 0,
    # DP's noise is sigma times the clip, and the linesearches' first trial step is capped
    # by the one of increase_factor and max_learning_rate that is finite.
    (lambda: gtx.adaptive_grad_clip(math.inf),
     r"^adaptive_grad_clip: clipping must be a finite number in \[0, inf\), got inf$"),
    (lambda: gtx.contrib.differentially_private_aggregate(math.inf, 1.0),
     r"^differentially_private_aggregate: l2_norm_clip must be a finite number"),
    (lambda: gtx.scale_by_zoom_linesearch(5, increase_factor=math.inf),
     r"^scale_by_zoom_linesearch: increase_factor must be a finite number in \(1, inf\)"),
    (lambda: gtx.scale_by_backtracking_linesearch(5, max_learning_rate=math.inf),
     r"^scale_by_backtracking_linesearch: max_learning_rate must be a finite number in "
     r"\(0, inf\)"),
    # Outside a finite bound, the bound is the reason, not finiteness.
    (lambda: gtx.adam(1e-3, b1=math.inf), r"^adam: b1 must be in \[0, 1\), got inf \(checked by "
     r"scale_by_adam\)$"),
    (lambda: gtx.clip_by_global_norm(-math.inf), r"max_norm must be in \(0, inf\], got -inf$"),
]


@pytest.mark.parametrize("make, message", INFINITE_HYPERPARAMETERS)
def test_infinite_hyperparameters_raise_unless_inf_switches_them_off(make, message):
  with pytest.raises(gtx.HyperparameterError, match=message):
    make()


def _sophia_objective(params):
  return jnp.sum(params["w"] ** 2) + jnp.sum(jnp.cos(params["b"]))


# (a stage given inf, the stage it equals) for every threshold or cap whose range takes
# inf; a clip given inf is the identity.
INF_SWITCHES_OFF = [
    pytest.param(lambda: gtx.clip(math.inf), gtx.identity, id="clip"),
    pytest.param(lambda: gtx.clip_by_global_norm(math.inf), gtx.identity,
                 id="clip_by_global_norm"),
    pytest.param(lambda: gtx.clip_by_block_rms(float("inf")), gtx.identity,
                 id="clip_by_block_rms"),
    pytest.param(lambda: gtx.contrib.scale_by_sophia(clip_threshold=math.inf),
                 lambda: gtx.contrib.scale_by_sophia(clip_threshold=None), id="sophia"),
    pytest.param(lambda: gtx.contrib.scale_by_adopt(clip_value_fn=lambda count: jnp.inf),
                 lambda: gtx.contrib.scale_by_adopt(use_clipping=False), id="adopt"),
    pytest.param(lambda: gtx.scale_by_polyak(max_learning_rate=math.inf),
                 lambda: gtx.scale_by_polyak(max_learning_rate=1e30), id="polyak"),
    pytest.param(lambda: gtx.scale_by_rprop(0.1, max_step_size=math.inf),
                 lambda: gtx.scale_by_rprop(0.1, max_step_size=1e30), id="rprop"),
]


@pytest.mark.parametrize("make, reference", INF_SWITCHES_OFF)
def test_inf_switches_off_a_threshold(make, reference):
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(2)}
  tx, ref = make(), reference()
  extra = dict(value=jnp.asarray(3.0), obj_fn=_sophia_objective)  # for polyak and sophia

  def update(grads, state, params):
    return tx.update(grads, state, params, **extra)

  def ref_update(grads, state, params):
    return ref.update(grads, state, params, **extra)

  for jit in (lambda f: f, jax.jit):
    step, ref_step = jit(update), jit(ref_update)
    state, ref_state = tx.init(params), ref.init(params)
    for t in range(3):
      # Large, small and zero gradients: each would be clipped by a finite threshold.
      grads = {"w": 1e6 * jnp.sin(params["w"] * (t + 1)), "b": jnp.zeros(2)}
      updates, state = step(grads, state, params)
      want, ref_state = ref_step(grads, ref_state, params)
      chex.assert_trees_all_equal(updates, want)


def test_inf_set_between_steps_switches_clipping_off():
  tx = gtx.chain(clip=gtx.clip_by_global_norm(1.0), sgd=gtx.sgd(1.0))
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([30.0, -40.0, 0.0])}
  state = tx.init(params)
  step = jax.jit(tx.update)
  clipped, state = step(grads, state, params)
  np.testing.assert_allclose(clipped["w"], [-0.6, 0.8, 0.0], rtol=1e-6)
  state = gtx.set_hparams(state, {"clip.max_norm": math.inf})
  assert gtx.hparams(state)["clip.max_norm"] == math.inf
  updates, state = step(grads, state, params)
  np.testing.assert_array_equal(updates["w"], -grads["w"])
  # A learning rate of inf is still refused by name.
  with pytest.raises(gtx.HyperparameterError, match=r"^sgd\.lr: learning_rate must be a finite "
                     r"number in \[0, inf\), got inf$"):
    gtx.set_hparams(state, {"sgd.lr.learning_rate": math.inf})


def test_inf_in_a_projection_onto_a_box_leaves_that_side_unbounded():
  x = {"w": jnp.array([-3.0, 0.5, 1e30])}
  P = gtx.projections
  chex.assert_trees_all_equal(P.projection_hypercube(x, math.inf), P.projection_non_negative(x))
  chex.assert_trees_all_equal(P.projection_linf_ball(x, math.inf), x)
  # The l1 and l2 balls take inf too: test_projections.py's infinite-radius test.


# eps_root=None and the accumulators' starting values (options written into the state at
# init, not hyperparameters): each was taken, then failed at the first step (KeyError
# 'eps_root', full_like on a list or None) or stepped by NaN or 0 for ever.
_ADAM_FAMILY = ["adam", "adamw", "amsgrad", "lamb", "nadam", "nadamw", "optimistic_adam",
                "optimistic_adam_v2"]

BAD_OPTIONS = [
    *[pytest.param(lambda name=name: getattr(gtx, name)(0.1, eps_root=None),
                   rf"^{name}: eps_root must be a number in \[0, inf\), got None \(checked by "
                   r"scale_by_(adam|amsgrad)\)$",
                   id=f"{name}-eps_root-None") for name in _ADAM_FAMILY],
    (lambda: gtx.contrib.muon(0.1, adam_eps_root=None),
     r"^muon: adam_eps_root must be a number in \[0, inf\), got None"),
    (lambda: gtx.adagrad(0.1, initial_accumulator_value=float("nan")),
     r"^adagrad: initial_accumulator_value must be in \[0, inf\), got nan"),
    (lambda: gtx.adagrad(0.1, initial_accumulator_value=[0.1]),
     r"^adagrad: initial_accumulator_value must be a scalar, got shape \(1,\)"),
    (lambda: gtx.rmsprop(0.1, initial_scale=-1.0),
     r"^rmsprop: initial_scale must be in \[0, inf\), got -1.0"),
    (lambda: gtx.rmsprop(0.1, initial_scale=float("nan")), r"^rmsprop: initial_scale .*nan"),
    (lambda: gtx.rmsprop(0.1, initial_scale=float("inf")), r"^rmsprop: initial_scale .*inf"),
    (lambda: gtx.rmsprop(0.1, initial_scale=None), r"^rmsprop: initial_scale .*got None"),
    (lambda: gtx.rmsprop(0.1, centered=True, initial_scale=-1.0),
     r"^rmsprop: initial_scale must be in \[0, inf\)"),
    (lambda: gtx.scale_by_yogi(initial_accumulator_value=-1e-6),
     r"^scale_by_yogi: initial_accumulator_value must be in \[0, inf\)"),
    (lambda: gtx.adafactor(min_dim_size_to_factor=float("nan")),
     r"^adafactor: min_dim_size_to_factor must be in \[0, .*got nan"),
    (lambda: gtx.adafactor(min_dim_size_to_factor=None),
     r"^adafactor: min_dim_size_to_factor must be a number in \[0, .*got None"),
    # One number: [128] passed (each entry in range), then "'<' not supported between
    # instances of 'int' and 'list'" at init.
    (lambda: gtx.adafactor(min_dim_size_to_factor=[128]),
     r"^adafactor: min_dim_size_to_factor must be a number in \[0, .*got \[128\] \(checked by "
     r"scale_by_factored_rms\)$"),
]


@pytest.mark.parametrize("make, message", BAD_OPTIONS)
def test_bad_options_raise_at_construction_naming_the_stage_and_argument(make, message):
  # optax 0.2.8 takes eps_root=None too, and fails at the first step (None + array).
  with pytest.raises(gtx.HyperparameterError, match=message):
    make()


@pytest.mark.parametrize("make", [
    lambda: gtx.adagrad(0.1, initial_accumulator_value=0),  # torch's default
    lambda: gtx.adagrad(0.1, initial_accumulator_value=jnp.float32(0.5)),
    lambda: gtx.rmsprop(0.1, initial_scale=1.0),  # TF1's
    lambda: gtx.rmsprop(0.1, centered=True, initial_scale=0.0),
    lambda: gtx.adafactor(0.1, min_dim_size_to_factor=0),
    lambda: gtx.adam(0.1, eps_root=1e-8),
])
def test_the_options_optax_takes_still_build_and_step(make):
  params = {"w": jnp.ones((2, 3))}
  tx = make()
  updates, _ = tx.update({"w": jnp.full((2, 3), 0.1)}, tx.init(params), params)
  assert all_finite(updates)


@pytest.mark.parametrize("eps_in_sqrt", [True, False])
def test_adagrad_steps_zero_where_no_gradient_was_seen_even_with_eps_zero(eps_in_sqrt):
  # G_0 = 0 and eps = 0: an entry whose gradients were all 0 divides 0 by a root of 0.
  # Its step is 0, and so is the step's derivative (meta-gradients through the update).
  tx = gtx.chain(rss=gtx.scale_by_rss(0.0, 0.0, eps_in_sqrt=eps_in_sqrt))
  g = jnp.array([0.0, 2.0, -0.5])
  state = tx.init(g)
  for step in (tx.update, jax.jit(tx.update)):
    u, _ = step(g, state)
    np.testing.assert_array_equal(u, [0.0, 1.0, -1.0])  # g / |g| at the first step
  slope = jax.grad(lambda g: jnp.sum(tx.update(g, state)[0] * jnp.array([1.0, 2.0, 3.0])))(g)
  assert all_finite(slope)
  np.testing.assert_array_equal(slope, [0.0, 0.0, 0.0])  # g / |g| is flat away from 0


@pytest.mark.parametrize("eps_in_sqrt", [True, False])
def test_centered_rmsprop_variance_rounded_below_zero_steps_finite(eps_in_sqrt):
  # With bias_correction the first step's variance nu_hat - mu_hat**2 is g**2 - g**2 = 0,
  # which float32 rounds to about -1e-7 g**2 for some g: its root was NaN (optax's too,
  # from step 8 on here). A variance is never negative: the step is at most g over the
  # root of eps (over eps with eps_in_sqrt=False), the step of a variance of 0.
  g = jnp.array([0.3, -2.7, 1e-3, 5.0, 0.11, 123.0, 0.7, -1.9])
  tx = gtx.rmsprop(1.0, centered=True, bias_correction=True, eps_in_sqrt=eps_in_sqrt)
  largest = np.abs(g) / (np.sqrt(1e-8) if eps_in_sqrt else 1e-8)
  state = tx.init(g)
  for _ in range(2):  # a constant gradient: the variance stays 0
    u, state = tx.update(g, state)
    assert all_finite(u)
    np.testing.assert_array_equal(np.sign(u), -np.sign(g))
    assert np.all(np.abs(u) <= largest * (1 + 1e-6))


def test_sm3_steps_a_zero_size_leaf():
  # jnp.max over the (3, 0) leaf's empty axis raised "zero-size array to reduction
  # operation max which has no identity"; its accumulators stay 0 and its step is empty.
  params = {"e": jnp.ones((3, 0)), "w": jnp.ones((2, 3))}
  grads = {"e": jnp.ones((3, 0)), "w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
  tx = gtx.sm3(0.1)
  for step in (tx.update, jax.jit(tx.update)):
    state = tx.init(params)
    for _ in range(2):
      updates, state = step(grads, state, params)
    assert updates["e"].shape == (3, 0)
    np.testing.assert_array_equal(state["sm3"].mu["e"][0], np.zeros(3))
    alone = gtx.sm3(0.1)
    alone_state = alone.init({"w": params["w"]})
    for _ in range(2):
      want, alone_state = alone.update({"w": grads["w"]}, alone_state, {"w": params["w"]})
    np.testing.assert_array_equal(updates["w"], want["w"])


def test_sm3_steps_by_nan_where_the_gradient_is_nan_as_optax_does():
  # The guard for nu = 0 took a NaN nu for 0 and stepped by 0 there, step after step:
  # the entry stopped training with no NaN to show it. optax steps by NaN.
  params = {"w": jnp.ones((3, 3)), "v": jnp.ones(3)}
  good = {"w": jnp.full((3, 3), 0.5), "v": jnp.full(3, 0.5)}
  bad = {"w": good["w"].at[0, 0].set(jnp.nan), "v": good["v"].at[0].set(jnp.nan)}
  tx = gtx.sm3(1.0)
  state = tx.init(params)
  updates, state = tx.update(good, state, params)
  for g in (bad, good):  # the NaN stays in the accumulator, as in optax
    updates, state = tx.update(g, state, params)
    for u in (np.asarray(updates["w"]).ravel(), np.asarray(updates["v"])):
      assert np.isnan(u[0]) and np.isfinite(u[1:]).all()
  # The other entries of row and column 0 step by their momentum alone, as in optax.
  np.testing.assert_allclose(updates["w"][0, 1:], [-0.145, -0.145], atol=1e-3)


def test_a_mean_of_squares_made_infinite_stays_infinite_as_optaxs():
  # docs/optax.md: m + (1 - b)(g^2 - m) would be inf - inf = NaN at the next gradient once
  # m is infinite; it stays infinite, as optax's (1 - b) g^2 + b m does, and steps by -0.
  tx = gtx.rmsprop(0.1)
  params = jnp.ones(2)
  state = tx.init(params)
  for g in ([1.0, 1.0], [jnp.inf, 1.0]):
    _, state = tx.update(jnp.asarray(g), state, params)
  assert np.isinf(state["rms"].nu[0])
  updates, state = tx.update(jnp.ones(2), state, params)
  assert updates[0] == 0 and np.isinf(state["rms"].nu[0])
  np.testing.assert_allclose(updates[1], -0.1 / np.sqrt(1 - 0.9 ** 3), rtol=1e-5)


# A finite gradient whose square overflows: |g| past ~1.8e19 in float32; in float16,
# whose (1 - b2) g^2 does (3e4; float16's g^2 past 256 alone no longer overflows: see
# test_a_float16_moment_whose_change_overflows_float16_steps_as_float32_params).
# (make, dtype, g, the step of that entry over g, the step of the -1 beside it: None for
# the step it takes in a leaf of its own). The second moment is Inf and stays Inf, as
# optax's, and a step dividing by its root is -0 there, as optax's: inf - inf made it
# NaN from the second step on. RAdam's first steps do not divide (its momentum step,
# -lr g, finite); LAMB's and NovoGrad's statistics are the leaf's, so their other entry
# steps as the rest of the leaf makes it.
OVERFLOWING_SQUARES = [
    pytest.param(lambda: gtx.adam(0.1), jnp.float32, 1e30, 0.0, None, id="adam"),
    pytest.param(lambda: gtx.adam(0.1), jnp.float16, 3e4, 0.0, None, id="adam-float16"),
    pytest.param(lambda: gtx.rmsprop(0.1), jnp.float32, 1e30, 0.0, None, id="rmsprop"),
    pytest.param(lambda: gtx.radam(0.1), jnp.float32, 1e30, -0.1, None, id="radam"),
    pytest.param(lambda: gtx.contrib.adopt(0.1), jnp.float32, 1e30, 0.0, None, id="adopt"),
    pytest.param(lambda: gtx.lamb(0.1), jnp.float32, 1e30, 0.0, 0.1 * math.sqrt(2), id="lamb"),
    pytest.param(lambda: gtx.novograd(0.1), jnp.float32, 1e30, 0.0, 0.0, id="novograd"),
]


@pytest.mark.parametrize("make, dtype, g, factor, beside", OVERFLOWING_SQUARES)
def test_a_gradient_whose_square_overflows_steps_as_optaxs(make, dtype, g, factor, beside):
  grads = {"big": jnp.array([g, -1.0], dtype), "alone": jnp.array([1.0, -1.0], dtype)}
  params = jax.tree.map(jnp.ones_like, grads)
  tx = make()
  state = tx.init(params)
  for _ in range(3):  # eager: three steps of two tiny leaves
    updates, state = tx.update(grads, state, params)
    big = np.asarray(updates["big"], np.float64)
    np.testing.assert_allclose(big[0], factor * g, rtol=1e-6)
    np.testing.assert_allclose(big[1], updates["alone"][1] if beside is None else beside,
                               rtol=1e-6)


def _centered_rmsprop(learning_rate, **kwargs):
  return gtx.rmsprop(learning_rate, centered=True, **kwargs)


def _adadelta(learning_rate, **kwargs):
  del learning_rate  # Adadelta's steps are about 1e-3 of its rate: at 0.01 they are below atol
  return gtx.adadelta(1.0, **kwargs)


def _scheduled_nadam(learning_rate, **kwargs):
  return gtx.chain(nadam=gtx.scale_by_nadam(**kwargs), lr=gtx.scale_by_learning_rate(learning_rate))


def _factored_adafactor(learning_rate, **kwargs):
  return gtx.adafactor(learning_rate, min_dim_size_to_factor=2, **kwargs)


# Every ready optimizer whose step divides by an accumulator of squared gradients
# (adamax: by a running maximum of |g| + eps), and scale_by_nadam; the state fields
# that nu_dtype sets; the rtol of the float16 steps against the float32 ones. The
# optimistic steps 2 d_t - d_(t-1) add the float16 roundings of two Adam directions:
# measured 3.5e-3 (2.7e-3 for v2); adan's adds two float16 moments (of g and of its
# change): 2.8e-3 (2.0e-3 with the rate rounded to float16 first, as optax does).
# adafactor's fields include the 1-entry placeholders of the other layout
# (FLOAT16_FAILURES runs a factored leaf); sm3's mu is a list of per-axis
# accumulators per leaf.
FLOAT16_SECOND_MOMENTS = [
    pytest.param(make, fields, rtol, id=make.__name__.strip("_"))
    for make, fields, rtol in [
        (gtx.adam, ["nu"], 2e-3), (gtx.adamw, ["nu"], 2e-3), (gtx.nadam, ["nu"], 2e-3),
        (gtx.nadamw, ["nu"], 2e-3), (gtx.radam, ["nu"], 2e-3), (gtx.adabelief, ["nu"], 2e-3),
        (gtx.yogi, ["nu"], 2e-3), (gtx.rmsprop, ["nu"], 2e-3), (_centered_rmsprop, ["nu"], 2e-3),
        (gtx.adagrad, ["sum_of_squares"], 2e-3), (_adadelta, ["e_g", "e_x"], 2e-3),
        (gtx.amsgrad, ["nu", "nu_max"], 2e-3), (gtx.adamax, ["nu"], 2e-3),
        (gtx.adamaxw, ["nu"], 2e-3), (gtx.adan, ["n"], 4e-3), (gtx.lamb, ["nu"], 2e-3),
        (gtx.novograd, ["nu"], 2e-3), (_scheduled_nadam, ["nu"], 2e-3),
        (gtx.optimistic_adam, ["nu"], 4e-3), (gtx.optimistic_adam_v2, ["nu"], 4e-3),
        (gtx.adafactor, ["v_row", "v_col", "v"], 2e-3), (gtx.sm3, ["mu"], 2e-3)]]

# The FAQ's problem: float16's smallest value (6e-8) is above eps = 1e-8 and above
# (1 - b2) g^2 for the small entries, and one entry's gradient is 0.
FLOAT16_GRADS = {"w": np.array([0.1, 0.0, 1e-3, -2e-4])}
FLOAT16_PARAMS = {"w": np.array([0.5, -0.25, 1.0, 0.75])}


def run_float16(make, grads, params, steps, **kwargs):
  """``make(0.01, **kwargs)`` on float16 params against ``make(0.01)`` on float32 ones.

  Returns the float16 steps (as float32), the float32 steps and the last float16 state.
  """
  grads, params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), (grads, params))
  grads16, params16 = jax.tree.map(lambda x: x.astype(jnp.float16), (grads, params))
  tx, reference = make(0.01, **kwargs), make(0.01)
  state, want_state = tx.init(params16), reference.init(params)
  got, want = [], []
  for _ in range(steps):
    u, state = jax.jit(tx.update)(grads16, state, params16)
    w, want_state = reference.update(grads, want_state, params)
    assert u["w"].dtype == jnp.float16
    got.append(np.asarray(u["w"], np.float32))
    want.append(np.asarray(w["w"]))
  return np.array(got), np.array(want), state


@pytest.mark.parametrize("make, fields, rtol", FLOAT16_SECOND_MOMENTS)
def test_float16_params_step_with_a_float32_second_moment(make, fields, rtol):
  # The FAQ's recipe: a float16 second moment steps by 0/0 or m/0 on FLOAT16_GRADS (see
  # the next test); held in float32 it steps as the float32 params do, to float16 rounding.
  got, want, state = run_float16(make, FLOAT16_GRADS, FLOAT16_PARAMS, 5, nu_dtype=jnp.float32)
  np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6)
  for field in fields:  # the second moment really is float32
    for moment in jax.tree.leaves(gtx.tree_utils.tree_get(state, field)["w"]):
      assert moment.dtype == jnp.float32, field
  assert "nu_dtype=float32" in repr(make(0.01, nu_dtype=jnp.float32))


# The stages that fold the learning rate that follows them into their step's scalars
# (gradtx.Chain): c = lr sqrt(1 - b2^t) / (1 - b1^t), about 0.3 lr, and eps sqrt(1 - b2^t)
# were float16 subnormals or 0, and the steps, about 1e-5, were 7% off at lr = 1e-5 (0 at
# 1e-6). Gradients whose (1 - b2) g^2 float16 holds as normal numbers, float16 moments:
# the steps are now the float32 ones to float16's rounding (its smallest step is 6e-8).
@pytest.mark.parametrize("make", [gtx.adam, gtx.nadam, gtx.radam, gtx.adabelief],
                         ids=lambda make: make.__name__)
def test_float16_steps_at_a_small_learning_rate(make):
  grads = {"w": np.array([0.5, -1.0, 2.0, 0.3])}
  got, want, _ = run_float16(lambda _: make(1e-5), grads, FLOAT16_PARAMS, 5)
  assert np.abs(want).max() > 5e-6
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=6e-8)


# sm3 is defined for real numbers only: it refuses complex leaves (tests/test_complex.py).
@pytest.mark.parametrize("make, fields, rtol",
                         [p for p in FLOAT16_SECOND_MOMENTS if p.values[0] is not gtx.sm3])
def test_a_real_nu_dtype_holds_a_complex_leafs_moment_complex(make, fields, rtol):
  # As mu_dtype does: nu_dtype=float32 on a complex64 leaf gives a complex64 second moment
  # (the layout of nu_dtype=None, optax's). A real float32 one made the step real: Im lost.
  del rtol
  params = {"w": jnp.array([1 + 2j, 0.5 - 1j, -0.3 + 0.1j], jnp.complex64)}
  grads = {"w": jnp.array([0.1 - 0.2j, 0.0, -0.4j], jnp.complex64)}

  def after_steps(tx):  # eager: four steps of a 3-entry leaf take less than compiling them
    state, p = tx.init(params), params
    for _ in range(4):
      updates, state = tx.update(grads, state, p)
      p = gtx.apply_updates(p, updates)
    return p["w"]

  got, want = after_steps(make(0.01, nu_dtype=jnp.float32)), after_steps(make(0.01))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert np.abs(np.imag(got - params["w"])).max() > 1e-2  # the steps kept their Im
  state = make(0.01, nu_dtype=jnp.float32).init(params)
  for field in fields:
    for moment in jax.tree.leaves(gtx.tree_utils.tree_get(state, field)["w"]):
      assert moment.dtype == jnp.complex64, field


# Without nu_dtype, in float16: the problem and what goes wrong.
# "nonfinite": a step is NaN or Inf (eps = 1e-8 is 0 in float16, so a zero gradient
# steps by 0 / 0). "wrong": the steps are finite but off by more than 10x the
# tolerance above (lamb: eps = 1e-6 keeps v = 0 finite, but m / eps is up to 1e3 times
# too large, and the trust ratio shrinks the other entries to match; adagrad:
# its sum of squares passes float16's largest value (65504) at step 3 of |g| = 150,
# and g / sqrt(Inf) = 0 stops the steps). "fails": either. novograd's n is a leaf's
# squared norm, 0 in float16 below a norm of 1.7e-4, and g / (0 + eps) is far off; on
# XLA:CPU it is Inf (g times 1 / eps, which overflows float16). adafactor: its
# eps = 1e-30 is 0 in float16, so the zero gradient steps by 0 / 0, and clipping by
# the leaf's RMS makes every entry NaN; factored, the last column's mean g^2 (2.5e-8)
# is 0, its entries step by g / 0 and the clipping leaves NaN there and 0 elsewhere.
# sm3: g^2 is a float16 subnormal (4e-8 for g = -2e-4 rounds to 6e-8): 8% off, 13% by step 5;
# on the matrix the last column steps by 0 at first (its g^2 are 0), 36% off by step 5.
SMALL_LEAF = {"w": np.array([1e-4, -1e-4, 0.0, 7e-5])}, FLOAT16_PARAMS
LARGE_GRADIENTS = {"w": np.array([150.0, 1.0])}, {"w": np.array([0.5, -0.25])}
FLOAT16_MATRIX = ({"w": np.array([[0.1, 1e-3, 2e-4], [0.05, 0.0, -1e-4]])},
                  {"w": np.array([[0.5, -0.25, 1.0], [0.75, -1.0, 0.3]])})
FLOAT16_FAILURES = [
    pytest.param(make, problem, symptom, id=make.__name__.strip("_"))
    for make, problem, symptom in [
        (gtx.rmsprop, None, "nonfinite"), (_centered_rmsprop, None, "nonfinite"),
        (gtx.amsgrad, None, "nonfinite"), (gtx.adamax, None, "nonfinite"),
        (gtx.adamaxw, None, "nonfinite"), (gtx.adan, None, "nonfinite"),
        (gtx.optimistic_adam, None, "nonfinite"), (gtx.optimistic_adam_v2, None, "nonfinite"),
        (_scheduled_nadam, None, "nonfinite"), (gtx.lamb, None, "wrong"),
        (gtx.novograd, SMALL_LEAF, "fails"),
        (gtx.adagrad, LARGE_GRADIENTS, "wrong"), (gtx.adafactor, None, "nonfinite"),
        (_factored_adafactor, FLOAT16_MATRIX, "nonfinite"), (gtx.sm3, None, "wrong")]]
FLOAT16_FAILURES.append(pytest.param(gtx.sm3, FLOAT16_MATRIX, "wrong", id="sm3-matrix"))


@pytest.mark.parametrize("make, problem, symptom", FLOAT16_FAILURES)
def test_float16_second_moment_needs_nu_dtype(make, problem, symptom):
  grads, params = problem or (FLOAT16_GRADS, FLOAT16_PARAMS)
  got, want, _ = run_float16(make, grads, params, 5)
  if symptom == "nonfinite":
    assert not np.isfinite(got).all()
  elif symptom == "wrong":
    assert np.isfinite(got).all()
  assert not np.allclose(got, want, rtol=2e-2, atol=1e-6)  # NaN is not close either
  if problem is not None:  # with nu_dtype=float32 these steps are right too
    got, want, _ = run_float16(make, grads, params, 5, nu_dtype=jnp.float32)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)


def test_adadelta_float16_moments_lose_few_digits_to_subnormals():
  # E[g^2] and E[dx^2] fall among float16's subnormals on FLOAT16_GRADS. Updated as
  # m + (1 - rho)(x - m) (numerics.lerp_moment) the steps are 1.1% off by step 5; the
  # weighted sum (1 - rho) x + rho m rounded both products there and was 5% off.
  got, want, _ = run_float16(_adadelta, FLOAT16_GRADS, FLOAT16_PARAMS, 5)
  np.testing.assert_allclose(got, want, rtol=2e-2, atol=1e-6)


def test_adadelta_steps_where_the_square_of_a_gradient_overflows():
  # E[dx^2] takes dx^2 as (E[dx^2] + eps) / (E[g^2] + eps) g g, in E's dtype. As that
  # quotient times |g|^2, float16 g = 300 under nu_dtype=float32 squared to Inf in float16
  # (E[g^2] holds 9e4) and stepped by -inf, then NaN; float32 g = 1e30 made E[g^2] Inf
  # (as optax's), the quotient 0 and dx^2 = 0 Inf = NaN.
  grads16, params16 = {"w": np.array([300.0, -1.0])}, {"w": np.array([0.5, -0.25])}
  got, want, _ = run_float16(_adadelta, grads16, params16, 3, nu_dtype=jnp.float32)
  np.testing.assert_allclose(got, want, rtol=2e-3)
  tx = gtx.adadelta(1.0)
  grads = params = jnp.array([1e30, -1.0])
  state = tx.init(params)
  for _ in range(3):  # eager: three steps of one tiny leaf; optax's steps and means too
    updates, state = tx.update(grads, state, params)
    assert updates[0] == 0 and np.isinf(state["adadelta"].e_g[0])
    assert state["adadelta"].e_x[0] == 0 and 0 < updates[1] < 0.01



def _float16_and_float32_steps(tx, grads):
  """``tx``'s steps on float16 params and on float32 ones, one jitted step each."""
  steps = []
  for dtype in (jnp.float16, jnp.float32):
    params = jnp.ones(2, dtype)
    state, update = tx.init(params), jax.jit(tx.update)
    for g in grads:
      u, state = update(jnp.asarray(g, dtype), state, params)
      assert u.dtype == dtype
      steps.append(np.asarray(u, np.float32))
  return np.split(np.array(steps), 2)


# A float16 moment against a float16 gradient of the other sign, with a sum past
# 65504: (make, gradients). m + (1 - b)(g - m) formed g - m in float16, Inf, and the
# moment went Inf: adam stepped by -inf, then NaN (lion by NaN), where optax's
# (1 - b) g + b m is finite and so is the moment. And a float16 gradient of 300, whose
# square is Inf in float16 where (1 - b2) g^2 = 90 is not: adam's second moment was
# Inf and its step 0 (optax's too). numerics.lerp_moment forms the change in float32.
FLOAT16_OVERFLOWING_CHANGES = [
    pytest.param(lambda: gtx.adam(0.01, nu_dtype=jnp.float32),
                 [[-6e4, 1.0]] * 3 + [[6e4, 1.0]] * 2, id="adam-first-moment"),
    pytest.param(lambda: gtx.lion(0.01), [[-6e4, 1.0]] * 10 + [[6e4, 1.0]] * 2,
                 id="lion"),
    pytest.param(lambda: gtx.adam(0.01), [[300.0, -1.0]] * 3, id="adam-square"),
]


@pytest.mark.parametrize("make, grads", FLOAT16_OVERFLOWING_CHANGES)
def test_a_float16_moment_whose_change_overflows_float16_steps_as_float32_params(
    make, grads):
  got, want = _float16_and_float32_steps(make(), grads)
  np.testing.assert_allclose(got, want, rtol=2e-3)


def test_radam_on_float16_params_takes_its_momentum_steps_where_v_is_zero():
  # Before rho_t reaches the threshold RAdam steps by the momentum and does not divide
  # by the root of v. Its step formed a / (sqrt(v + r) + e) + b with a = 0, and float16
  # rounds r and e to 0: where v is 0 too (a zero gradient, or one whose (1 - b2) g^2
  # is below float16's least value) that was 0 / 0, and the first five steps NaN, where
  # optax's (and the float32 params') are the momentum's.
  got, want = _float16_and_float32_steps(gtx.radam(0.1), [[1e-3, 0.0]] * 5)
  np.testing.assert_allclose(got, want, rtol=1e-2)
  np.testing.assert_allclose(got[:, 0], -1e-4, rtol=1e-2)

# ----------------------------------------------------------------------------
# Donation: a state from an eager init shares no buffer with the params or itself.

# Factories outside tests/registry.py's tables.
_UNLISTED = {
    "prodigy": lambda: gtx.contrib.prodigy(), "dadapt_adamw": lambda: gtx.contrib.dadapt_adamw(),
    "dog": lambda: gtx.contrib.dog(), "dowg": lambda: gtx.contrib.dowg(),
    "cocob": lambda: gtx.contrib.cocob(), "mechanize": lambda: gtx.contrib.mechanize(gtx.sgd(0.1)),
    "schedule_free_adamw": lambda: gtx.contrib.schedule_free_adamw(0.1),
    "madgrad": lambda: gtx.contrib.madgrad(0.1), "momo": lambda: gtx.contrib.momo(),
    "momo_adam": lambda: gtx.contrib.momo_adam(), "sophia": lambda: gtx.contrib.sophia(0.1),
    "muon": lambda: gtx.contrib.muon(0.1), "ademamix": lambda: gtx.contrib.ademamix(0.1),
    "sam": lambda: gtx.contrib.sam(gtx.sgd(0.1), gtx.sgd(0.05)),
    "lbfgs": lambda: gtx.lbfgs(0.5, memory_size=3, linesearch=None),
    # Adafactor's placeholders for an unfactored leaf (v_row, v_col) were one array.
    "adafactor": lambda: gtx.adafactor(0.1),
    # Wrappers: apply_if_finite's two counters were one array.
    "apply_if_finite": lambda: gtx.apply_if_finite(gtx.adam(0.1), 3),
    "multi_steps": lambda: gtx.multi_steps(gtx.adam(0.1), 2),
    "masked": lambda: gtx.masked(gtx.adam(0.1), {"w": True, "b": False}),
    "partition": lambda: gtx.partition({"a": gtx.adam(0.1), "s": gtx.sgd(0.1, 0.9)},
                                       {"w": "a", "b": "s"}),
}
_DONATED = [(c.id, c.gradtx) for c in CLASSIC + PRIMITIVES] + list(_UNLISTED.items())


@pytest.mark.parametrize("make", [m for _, m in _DONATED], ids=[n for n, _ in _DONATED])
def test_params_and_an_eager_init_state_can_both_be_donated(make):
  # Keeping the params (a starting point) or a hyperparameter's value in the state
  # without a copy made XLA refuse: "Attempt to donate the same buffer twice".
  tx = make()
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  state = tx.init(params)
  leaves = [x for x in jax.tree.leaves((params, state)) if isinstance(x, jax.Array)]
  buffers = [x.unsafe_buffer_pointer() for x in leaves]
  assert len(set(buffers)) == len(buffers)

  def step(p, s):
    g = jax.tree.map(jnp.ones_like, p)
    u, s = tx.update(g, s, p, value=jnp.float32(1.0),
                     obj_fn=lambda q: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(q)))
    return gtx.apply_updates(p, u), s

  # An eager step's state too (AdEMAMix's two counts and MoMo's lower bound shared one).
  _, eager_state = step(params, state)
  eager = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(eager_state)
           if isinstance(x, jax.Array)]
  assert len(set(eager)) == len(eager)
  step = jax.jit(step, donate_argnums=(0, 1))
  params, state = step(*step(params, state))
  assert all_finite(params)


# A state filled from an array (a held hyperparameter, an initial value given as an
# array) for scalar leaves: jnp.full_like handed back the array itself for a leaf of
# its shape, so every scalar leaf's entry was one buffer, shared with the value too.
_FILLED_FROM_AN_ARRAY = {
    "cocob": lambda: gtx.contrib.cocob(),  # L_0 = eps, the hyperparameter held in the state
    "rprop": lambda: gtx.rprop(jnp.float32(0.01)),
    "rmsprop": lambda: gtx.rmsprop(0.1, initial_scale=jnp.float32(0.5)),
    "adagrad": lambda: gtx.adagrad(0.1, initial_accumulator_value=jnp.float32(0.1)),
}


@pytest.mark.parametrize("make", list(_FILLED_FROM_AN_ARRAY.values()),
                         ids=list(_FILLED_FROM_AN_ARRAY))
def test_scalar_leaves_of_a_state_filled_from_an_array_can_be_donated(make):
  tx = make()
  params = {"s": jnp.float32(0.5), "t": jnp.float32(-1.0), "w": jnp.ones(2)}
  state = tx.init(params)
  buffers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves((params, state))]
  assert len(set(buffers)) == len(buffers)

  def step(p, s):
    u, s = tx.update({"s": jnp.float32(2.0), "t": jnp.float32(-3.0), "w": jnp.ones(2)}, s, p)
    return gtx.apply_updates(p, u), s

  want = jax.jit(step)(*jax.jit(step)(params, state))
  donated = jax.jit(step, donate_argnums=(0, 1))
  got = donated(*donated(params, state))
  chex.assert_trees_all_equal(got, want)
  # Both steps moved each scalar against its gradient.
  assert float(got[0]["s"]) < 0.5 and float(got[0]["t"]) > -1.0


# A hyperparameter given as a jax array was held in the state as that array: donating
# the state deleted the caller's array, and where one value serves two stages, the
# state held one buffer twice and XLA refused it.
_GIVEN_AN_ARRAY = {
    "adam": lambda v: gtx.adam(v),
    "optimistic_adam": lambda v: gtx.optimistic_adam(v),  # the rate is alpha and beta
    "muon": lambda v: gtx.contrib.muon(0.1, eps=v * 1e-6),  # eps of muon and of its adam
    "schedule_free_sgd": lambda v: gtx.contrib.schedule_free_sgd(v),  # outer and base rate
}


@pytest.mark.parametrize("make", list(_GIVEN_AN_ARRAY.values()), ids=list(_GIVEN_AN_ARRAY))
def test_a_state_holds_a_copy_of_a_hyperparameter_given_as_an_array(make):
  value = jnp.float32(0.01)
  tx = make(value)
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  state = tx.init(params)
  buffers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves((params, state, value))]
  assert len(set(buffers)) == len(buffers)

  def step(p, s):
    u, s = tx.update({"w": jnp.ones((3, 2)), "b": jnp.full(2, -2.0)}, s, p)
    return gtx.apply_updates(p, u), s

  want = jax.jit(step)(*jax.jit(step)(params, state))
  donated = jax.jit(step, donate_argnums=(0, 1))
  got = donated(*donated(params, state))
  chex.assert_trees_all_equal(got, want)
  assert float(got[0]["b"][0]) > 0.0 and float(value) == np.float32(0.01)  # still the caller's


@pytest.mark.parametrize("make", [m for _, m in _DONATED], ids=[n for n, _ in _DONATED])
def test_a_step_keeps_the_state_types_of_init_for_a_weak_typed_param(make):
  # jnp.asarray(0.5) is weak-typed. L-BFGS stored the param (and its gradient) as
  # given and SAM held the param itself, so the state after a step differed in
  # type from init's and a jitted step traced twice.
  tx = make()
  params = {"w": jnp.asarray(0.5), "b": jnp.zeros(2)}
  grads = {"w": jnp.asarray(1.0), "b": jnp.ones(2)}
  state = tx.init(params)
  _, stepped = tx.update(grads, state, params, value=jnp.float32(1.0),
                         obj_fn=lambda q: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(q)))

  def types(s):
    return [(p, x.dtype, getattr(x, "weak_type", False))  # a typed PRNG key has none
            for p, x in jax.tree_util.tree_leaves_with_path(s) if isinstance(x, jax.Array)]

  assert types(stepped) == types(state)


# ----------------------------------------------------------------------------
# A tree mixing float32 and bfloat16 leaves, under strict dtype promotion.


@pytest.mark.parametrize("make", [m for _, m in _DONATED], ids=[n for n, _ in _DONATED])
def test_a_tree_mixing_bfloat16_and_float32_leaves_steps_as_the_float32_tree(make, request):
  # Steps sized by the distance travelled, ||theta_t - theta_0||, follow the bfloat16
  # leaf's rounding of theta: their third steps differ by up to 37% (measured); a leaf
  # that stopped moving would still differ by 100%.
  by_distance = ("scale_by_distance_over_gradients", "dog", "dowg", "cocob", "mechanize")
  distance_sized = request.node.callspec.id in by_distance
  check_mixed_precision_tree(make, third_step_rtol=0.5 if distance_sized else 5e-2)


# ----------------------------------------------------------------------------
# Per-step scalars of bfloat16 params, formed in the hyperparameters' precision.


def _updates_per_step(tx, dtype, steps, grads):
  params = {"w": jnp.asarray([0.5, -1.0, 2.0, 0.25], dtype)}
  update = jax.jit(lambda g, s, p: tx.update(g, s, p))
  state, out = tx.init(params), []
  for t in range(steps):
    g = {"w": jnp.asarray(grads(t), dtype)}
    u, state = update(g, state, params)
    out.append(np.asarray(u["w"], np.float32))
  return np.array(out), state


def test_radam_on_bfloat16_params_rectifies_as_on_float32():
  # bfloat16 rounds b2 = 0.999 to 1: rho_inf = 2 / (1 - b2) - 1 was Inf and rho_t NaN, the
  # test rho_t >= 5 never held, and every step was the unrectified m_hat (3.98 where
  # float32 gives 0.058 at step 12, measured). rho is formed in b2's float32.
  grads = lambda t: [0.1 * (-1) ** t, 0.2, -0.05, 1e-3 * (t + 1)]  # noqa: E731
  got, _ = _updates_per_step(gtx.radam(0.1), jnp.bfloat16, 12, grads)
  want, _ = _updates_per_step(gtx.radam(0.1), jnp.float32, 12, grads)
  # From step 6 on (rho_t >= 5) the rectified step, to bfloat16's rounding of m and v.
  np.testing.assert_allclose(got[5:], want[5:], rtol=3e-2, atol=1e-3)


def test_adan_weighs_the_gradient_difference_by_b2_as_the_paper_does():
  # n = |g_2 + b2 (g_2 - g_1)|^2 with b3 = 0: g_2 = 0, g_1 = 1, b2 = 0.92 -> 0.92^2, the
  # paper's (1 - beta_2) in optax's parametrization; optax 0.2.8's 1 - b2 gave 0.08^2.
  tx = gtx.scale_by_adan(b2=0.92, b3=0.0)
  _, state = _updates_per_step(tx, jnp.float32, 2, lambda t: [1.0 - t] * 4)
  np.testing.assert_allclose(state.n["w"], np.full(4, 0.92 ** 2), rtol=1e-6)


def test_novograd_puts_eps_outside_the_root_as_optax_and_eps_root_gives_the_papers_rule():
  # Algorithm 1 of Ginsburg et al. divides by sqrt(n_t + eps); optax and gradtx by
  # sqrt(n_t + eps_root) + eps (documented). Gradients of norm 1e-3: n = 1e-6 = eps.
  g1, g2 = np.array([6e-4, -8e-4]), np.array([-3e-4, 4e-4])
  lr, b1, b2, eps = 0.1, 0.9, 0.25, 1e-6
  n1 = g1 @ g1
  n2 = b2 * n1 + (1 - b2) * (g2 @ g2)
  m1 = g1 / np.sqrt(n1 + eps)
  paper = [-lr * m1, -lr * (b1 * m1 + g2 / np.sqrt(n2 + eps))]
  for tx, same in [(gtx.novograd(lr, b1, b2, eps=0.0, eps_root=eps), True),
                   (gtx.novograd(lr, b1, b2, eps=eps), False)]:
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    for g, want in zip([g1, g2], paper):
      u, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
      assert np.allclose(u["w"], want, rtol=1e-5) == same, (u["w"], want)


def test_adabelief_with_eps_and_eps_root_equal_is_the_authors_one_eps():
  # adabelief-pytorch (rectify=False): s += eps in place, then sqrt(s / bc2) + eps; the
  # docstring's eps=eps_root=1e-8 is its 0.0.5 default. Gradients of 1e-4: eps matters.
  lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
  grads = [np.array([1e-4, -2e-4]), np.array([3e-4, 1e-4]), np.array([-1e-4, 2e-4])]
  m, s, want = np.zeros(2), np.zeros(2), []
  for t, g in enumerate(grads, 1):
    m = b1 * m + (1 - b1) * g
    s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
    want.append(-lr / (1 - b1 ** t) * m / (np.sqrt(s / (1 - b2 ** t)) + eps))
  tx = gtx.adabelief(lr, b1, b2, eps=eps, eps_root=eps)
  params = {"w": jnp.zeros(2)}
  state = tx.init(params)
  for g, w in zip(grads, want):
    u, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    np.testing.assert_allclose(u["w"], w, rtol=1e-5)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: gtx.add_noise(eta=1.0, gamma=0.0, key=0), id="add_noise"),
    pytest.param(lambda: gtx.contrib.differentially_private_aggregate(1e6, 1e-6, seed=0),
                 id="differentially_private_aggregate"),
])
def test_noise_for_bfloat16_leaves_is_drawn_in_float32(make):
  # A bfloat16 draw took 128 distinct values in 20000 (measured); drawn in float32 and
  # rounded once, g + noise takes what bfloat16 holds of a standard normal.
  tx = make()
  zeros = {"w": jnp.zeros((1, 20000), jnp.bfloat16)}  # a batch of one example for DP
  updates = tx.update(zeros, tx.init(zeros), zeros)[0]["w"]
  assert updates.dtype == jnp.bfloat16
  u = np.asarray(updates, np.float32)
  assert len(np.unique(u)) > 1000, len(np.unique(u))
  np.testing.assert_allclose([u.mean(), u.std()], [0.0, 1.0], atol=0.03)
