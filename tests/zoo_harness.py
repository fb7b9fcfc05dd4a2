"""The harness of the zoo's reference tests, shared by ``test_zoo`` and ``test_contrib_*``.

A :class:`ZooCase` names a gradtx transformation and its numpy reference;
:func:`check_against_reference` runs both for ``STEPS`` steps on a fixed
multi-leaf :class:`Problem` (some of its leaves complex, for a case that
names them: :class:`ComplexProblem`, which ``test_complex`` builds its problem
with too) and compares every leaf at every step, stepping them side by side
with :func:`follow_reference`;
:func:`minimise` runs an optimizer on a real problem (the ill-conditioned
quadratic, Rosenbrock) in one compiled scan. The helpers below those are
shared by the ``test_contrib_*`` files: the reference, convergence and
bad-hyperparameter tests, the coupled loss and its params, runs that record
every step's updates, and the packed-mode comparison.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx
import reference as R
from gradtx.packed import Layout

SHAPES = {"scalar": (), "vector": (3,), "matrix": (4, 5), "cube": (2, 3, 4), "zeros": (3, 2),
          "tiny": (6,)}
STEPS = 50


@dataclasses.dataclass(frozen=True)
class ZooCase:
  """One gradtx transformation and its reference, with the gradients it is fed.

  ``grads``: ``"noisy"`` (a noisy quadratic, g = c * theta + noise),
  ``"quadratic"`` (no noise; for L-BFGS, whose curvature pairs need it) or
  ``"sign"`` (magnitudes in [0.5, 1.5], signs flipping every 8 steps: sign
  rules are ill-posed across dtypes near exact ties at 0).
  """
  id: str
  make: Callable[[], Any]
  ref: Callable[[], R.Reference]
  grads: str = "noisy"
  needs_value: bool = False
  rtol32: float = 1e-4
  # The reference's params move by ``step * updates``; primitives that are not a
  # descent step on their own move by a small negative multiple.
  step: float = 1.0
  # Leaves made complex (see ComplexProblem), for rules of complex params; the
  # dtype under test then names the precision of their parts.
  complex_leaves: tuple[str, ...] = ()



class Problem:
  """A fixed problem: initial params, curvatures and per-step noise, seeded.

  Per leaf, the loss ``f_t(theta) = sum(c theta^2 / 2 + n_t theta)`` (its :meth:`value`:
  the sum over the leaves plus ``offset``), whose gradients :meth:`grads` gives as the
  ``"noisy"`` kind (``"quadratic"``: without ``n_t``; ``"sign"``: see :class:`ZooCase`).
  """

  offset = 3.0  # the loss's constant

  def __init__(self, seed: int = 0):
    rng = np.random.default_rng(seed)
    self.params0 = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    self.params0["zeros"] = np.zeros(SHAPES["zeros"])
    self.curvature = {k: rng.uniform(0.2, 2.0, size=s) for k, s in SHAPES.items()}
    self.noise = [{k: 0.5 * rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(STEPS)]
    self.signs = {k: rng.choice([-1.0, 1.0], size=s) for k, s in SHAPES.items()}
    self.magnitudes = [{k: rng.uniform(0.5, 1.5, size=s) for k, s in SHAPES.items()}
                       for _ in range(STEPS)]

  @classmethod
  def from_arrays(cls, params0: dict, curvature: dict, noise: list[dict],
                  offset: float = offset) -> Problem:
    """The problem of the given start, curvatures, noise (one dict a step) and offset,
    for the ``"noisy"`` and ``"quadratic"`` gradients (a leaf ``zeros`` starts at 0)."""
    problem = cls.__new__(cls)
    problem.params0, problem.curvature, problem.noise = params0, curvature, noise
    problem.offset = offset
    return problem

  def grads(self, kind: str, params: dict, t: int) -> dict:
    if kind == "sign":
      flip = -1.0 if (t // 8) % 2 else 1.0
      g = {k: flip * self.signs[k] * self.magnitudes[t][k] for k in params}
    else:
      g = {k: self.curvature[k] * params[k] + (kind == "noisy") * self.noise[t][k]
           for k in params}
    if "zeros" in g:
      g["zeros"] = np.zeros(np.shape(params["zeros"]))
    if kind != "quadratic" and "tiny" in g:
      g["tiny"] = 1e-12 * g["tiny"]
    return g

  def initial(self, kind: str) -> dict:
    """The initial params; on the quadratic the tiny leaf's params are ~1e-12 too.

    (L-BFGS differences the params: a float32 parameter of size 1 cannot move by
    1e-12, so tiny gradients need tiny params there to be well posed.)
    """
    params = dict(self.params0)
    if kind == "quadratic" and "tiny" in params:
      params["tiny"] = 1e-12 * params["tiny"]
    return params

  def value(self, params: dict, t: int) -> float:
    return self.offset + sum(float(np.sum(0.5 * self.curvature[k] * params[k] ** 2
                                          + self.noise[t][k] * params[k])) for k in params)


class ComplexProblem:
  """:class:`Problem` with some leaves complex: real parts from the problem ``re``, imaginary
  parts from ``im`` (its own start, curvatures and noise); the other leaves are ``re``'s.
  By default ``re`` and ``im`` are seed 0's and seed 1's problems.

  The loss of a complex leaf ``z = x + iy`` is ``f_t(z) = re's f_t(x) + im's f_t(y)``, a
  real loss; its gradients follow optax's convention for complex params,
  ``df/dx + i df/dy``: the conjugate of ``jax.grad(f_t)``.
  """

  def __init__(self, leaves: tuple[str, ...], re: Problem | None = None,
               im: Problem | None = None):
    self.leaves = leaves
    self.re = Problem(0) if re is None else re
    self.im = Problem(1) if im is None else im

  def _join(self, re: dict, im: dict) -> dict:
    return {k: re[k] + 1j * im[k] if k in self.leaves else re[k] for k in re}

  def _parts(self, params: dict) -> tuple[dict, dict]:
    """The real and imaginary parts of every leaf (a real leaf's are 0, and not used)."""
    return ({k: np.real(v) for k, v in params.items()},
            {k: np.imag(v) for k, v in params.items()})

  def grads(self, kind: str, params: dict, t: int) -> dict:
    """d f / d Re + i d f / d Im (the conjugate of ``jax.grad``'s convention)."""
    re, im = self._parts(params)
    return self._join(self.re.grads(kind, re, t), self.im.grads(kind, im, t))

  def initial(self, kind: str) -> dict:
    return self._join(self.re.initial(kind), self.im.initial(kind))

  def value(self, params: dict, t: int) -> float:
    re, im = self._parts(params)
    return self.re.value(re, t) + self.im.value(im, t)


_COMPLEX = {np.dtype(np.float32): np.dtype(np.complex64),
            np.dtype(np.float64): np.dtype(np.complex128)}


def _dtype_of(value: Any, dtype: Any) -> Any:
  """``dtype``, or the complex dtype of its precision for a complex ``value``."""
  return _COMPLEX[np.dtype(dtype)] if np.iscomplexobj(value) else dtype


def as_jax(tree: dict, dtype: Any) -> dict:
  """A dict of numpy leaves in ``dtype``, each complex leaf in the complex dtype of its precision."""
  # Cast by numpy, then put: jnp.asarray(v, dtype) casts by numpy too but then passes the
  # cast array through an eager conversion, twice the time (0.46 vs 0.26 ms for
  # test_complex's tree), at every step of every reference run.
  return {k: jnp.asarray(np.asarray(v, _dtype_of(v, dtype))) for k, v in tree.items()}


def follow_reference(problem: Problem | ComplexProblem, kind: str, tx: Any, ref: R.Reference,
                     dtype: Any, jit: bool, steps: int = STEPS, with_value: bool = False,
                     step: float = 1.0) -> Iterator[tuple[int, dict, Any, dict]]:
  """Steps ``tx`` and its reference side by side on the reference's trajectory.

  Both get the same gradients (of ``kind``, see :class:`Problem`) at the same params
  every step, and with ``with_value`` the loss value: the reference's, in float64 and
  complex128, cast by :func:`as_jax` to ``dtype`` (a real dtype, the precision) for
  ``tx``. The params move by ``step`` times the reference's updates. Yields (step,
  params, ``tx``'s updates, the reference's), the params those the step starts from.
  """
  params = {k: np.array(v) for k, v in problem.initial(kind).items()}  # copies
  ref.init(params)
  state = tx.init(as_jax(params, dtype))
  update = jax.jit(tx.update) if jit else tx.update
  for t in range(steps):
    grads = problem.grads(kind, params, t)
    value = problem.value(params, t) if with_value else None
    want = ref.step(grads, params, **({} if value is None else {"value": value}))
    extra = {} if value is None else {"value": jnp.asarray(np.asarray(value, dtype))}
    got, state = update(as_jax(grads, dtype), state, as_jax(params, dtype), **extra)
    yield t, params, got, want
    params = {k: params[k] + step * want[k] for k in params}


def check_against_reference(case: ZooCase, dtype: Any, jit: bool) -> None:
  problem = ComplexProblem(case.complex_leaves) if case.complex_leaves else Problem()
  ref = case.ref()
  rtol = case.rtol32 if dtype == jnp.float32 else 1e-9
  scale: dict[str, float] = {}
  for t, params, got, want in follow_reference(problem, case.grads, case.make(), ref, dtype,
                                               jit, STEPS, case.needs_value, case.step):
    for k in params:
      assert got[k].dtype == _dtype_of(params[k], dtype), (case.id, k, got[k].dtype)
      # Each leaf is compared at its own scale (its largest update so far), so the
      # ~1e-12 leaf is held to the same relative standard as the others, and an update
      # that is small by cancellation is not held to more digits than its terms carry.
      scale[k] = max(scale.get(k, 0.0), float(np.max(np.abs(want[k]), initial=0.0)))
      np.testing.assert_allclose(np.asarray(got[k], _dtype_of(params[k], np.float64)), want[k],
                                 rtol=rtol, atol=rtol * scale[k] + 1e-300,
                                 err_msg=f"{case.id}: leaf {k!r} at step {t + 1}")


def ill_conditioned_quadratic(x: jax.Array) -> jax.Array:
  """f(x) = 1/2 sum_i c_i x_i^2, c from 1 to 100 (condition number 100); minimum 0 at 0."""
  curvature = jnp.logspace(0, 2, x.shape[0], dtype=x.dtype)
  return 0.5 * jnp.sum(curvature * x**2)


def rosenbrock(x: jax.Array) -> jax.Array:
  """f(x, y) = (1 - x)^2 + 100 (y - x^2)^2; minimum 0 at (1, 1)."""
  return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def minimise(tx: gtx.GradientTransformation, f: Callable, x0: jax.Array, steps: int) -> jax.Array:
  """``steps`` updates in one compiled scan; every stage may read value, grad and value_fn."""
  def step(carry, _):
    x, state = carry
    value, grad = jax.value_and_grad(f)(x)
    updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=f)
    return (gtx.apply_updates(x, updates), state), None

  (x, _), _ = jax.jit(lambda x: jax.lax.scan(step, (x, tx.init(x)), length=steps))(x0)
  return x


# ----------------------------------------------------------------------------
# Helpers shared by the test_contrib_* files.


# Every case given to reference_tests, by the module that gave it: what the audit of
# reference coverage (test_optimizers) reads.
REFERENCE_CASES: dict[str, list[ZooCase]] = {}


def reference_tests(cases: list[ZooCase], variant_ids: list[str]
                    ) -> tuple[Callable[..., None], Callable[..., None], Callable[..., None]]:
  """Reference tests: each case in float32 jitted, float64 not; ``variant_ids`` the other way.

  The cases are also recorded in :data:`REFERENCE_CASES` under the caller's module name."""
  by_id = {c.id: c for c in cases}
  REFERENCE_CASES[sys._getframe(1).f_globals["__name__"]] = list(cases)

  @pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])
  def test_float32_jit(case):
    check_against_reference(case, jnp.float32, jit=True)

  @pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])
  def test_float64_nojit(case):
    with jax.enable_x64(True):
      check_against_reference(case, jnp.float64, jit=False)

  @pytest.mark.parametrize("case_id", variant_ids)
  def test_float32_nojit_and_float64_jit(case_id):
    check_against_reference(by_id[case_id], jnp.float32, jit=False)
    with jax.enable_x64(True):
      check_against_reference(by_id[case_id], jnp.float64, jit=True)

  return test_float32_jit, test_float64_nojit, test_float32_nojit_and_float64_jit


def check_converges(name: str, make_quad: Callable[[], gtx.GradientTransformation],
                    make_rosen: Callable[[], gtx.GradientTransformation], quad_steps: int,
                    rosen_steps: int) -> None:
  """f < 1e-3 on the ill-conditioned quadratic and |x - (1, 1)| < 0.05 on Rosenbrock."""
  x = minimise(make_quad(), ill_conditioned_quadratic, jnp.ones(10), quad_steps)
  assert float(ill_conditioned_quadratic(x)) < 1e-3, f"{name} on the quadratic: {x}"
  x = minimise(make_rosen(), rosenbrock, jnp.array([-1.0, 1.5]), rosen_steps)
  np.testing.assert_allclose(x, [1.0, 1.0], atol=0.05, err_msg=f"{name} on Rosenbrock")


def decay_mask(params: Any) -> Any:
  """Weight decay on the leaves of two or more dimensions."""
  return {k: np.ndim(v) >= 2 for k, v in params.items()}


def coupled_wb_loss(params: dict) -> jax.Array:
  """sum sin(w) roll(w) + b^2 w[:3] + w^2 / 2: its Hessian is not diagonal and not constant."""
  w, b = params["w"], params["b"]
  return jnp.sum(jnp.sin(w) * jnp.roll(w, 1)) + jnp.sum(b**2 * w[:3]) + 0.5 * jnp.sum(w**2)


def coupled_loss(params: dict, offset: float = 0.0) -> jax.Array:
  """A smooth loss coupling the leaves w, b, m (plus ``offset``): each gradient reads them all."""
  return (coupled_wb_loss(params) + 0.3 * jnp.sum(params["b"] ** 2)
          + jnp.sum(params["m"] ** 2 * jnp.arange(1.0, 7.0).reshape(2, 3)) + offset)


def coupled_tree(with_m: bool = True) -> dict:
  """The coupled loss's float32 params: w (5,), b (3,) and, ``with_m``, m (2, 3); seeded."""
  rng = np.random.default_rng(1)
  tree = {"w": jnp.asarray(rng.normal(size=5), jnp.float32),
          "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
  if with_m:
    tree["m"] = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
  return tree


def run_updates(tx: Any, params: dict, steps: int, apply: Callable[[Any, Any], Any],
                loss: Callable[[Any], jax.Array] = coupled_loss, with_value: bool = False,
                also: Callable[[Any, Any], Any] | None = None,
                grad_fn: Callable[[Any], Any] | None = None, **update_kwargs: Any) -> Any:
  """``steps`` steps of ``tx`` on ``loss``: each step's updates (and ``also(state, params)``)."""
  def step(carry, _):
    params, state = carry
    value, grads = jax.value_and_grad(loss)(params)
    kwargs = dict(update_kwargs)
    if with_value:
      kwargs["value"] = value
    if grad_fn is not None:
      kwargs["grad_fn"] = grad_fn(params)
    updates, state = tx.update(grads, state, params, **kwargs)
    params = apply(params, updates)
    return (params, state), (updates if also is None else (updates, also(state, params)))

  return jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), length=steps)[1])(params)


def assert_trees_close(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-6,
                       as_array: Callable[[Any], Any] = np.asarray) -> None:
  """Every leaf of ``a`` close to ``b``'s, each read by ``as_array``."""
  jax.tree.map(lambda x, y: np.testing.assert_allclose(as_array(x), as_array(y), rtol=rtol,
                                                       atol=atol), a, b)


def all_finite(tree: Any) -> bool:
  """Whether every floating-point leaf of ``tree`` is finite."""
  return all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(x.dtype, jnp.inexact))


def check_zero_gradients_give_zero_updates(tx: gtx.GradientTransformation, params: Any,
                                           steps: int = 3) -> None:
  """``steps`` jitted updates with all-zero gradients and params: zero updates, finite state."""
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(steps):
    u, state = update(params, state, params)
    assert_trees_close(u, params, rtol=0, atol=0)
  assert all_finite(state)


def packed_params() -> dict:
  """Nested float32 params for the packed-mode tests: two dense layers and a scalar; seeded."""
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
  return {"dense": {"w": f(4, 3), "b": f(3)}, "out": {"w": f(4, 3), "b": f(3)}, "scale": f()}


def packed_loss(params: Any, offset: float = 0.0) -> jax.Array:
  """A quadratic per leaf plus a term coupling the leaves (plus ``offset``)."""
  leaves = jax.tree.leaves(params)
  quad = sum(jnp.sum(0.5 * (i + 1.0) * jnp.square(x - 0.3)) for i, x in enumerate(leaves))
  return quad + 0.1 * jnp.square(sum(jnp.sum(jnp.sin(x)) for x in leaves)) + offset


def train_both_modes(tx: gtx.GradientTransformation, params: Any, steps: int,
                     loss: Callable[[Any], jax.Array] = packed_loss, with_value: bool = False,
                     extra: Callable[[Callable[[Any], jax.Array]], dict] | None = None,
                     finish: Callable[[Any, Any], Any] | None = None) -> tuple[Layout, Any, Any]:
  """``tx`` on ``params`` as a tree and packed, in one jit: the layout and each mode's
  ((params, state), updates, ``finish(state, params)``); ``extra(loss)`` gives update kwargs."""
  layout = Layout.from_tree(params)

  def train(params, loss):
    def step(carry, _):
      params, state = carry
      value, grads = jax.value_and_grad(loss)(params)
      kwargs = extra(loss) if extra is not None else {}
      if with_value:
        kwargs["value"] = value
      updates, state = tx.update(grads, state, params, **kwargs)
      return (gtx.apply_updates(params, updates), state), updates
    (params, state), updates = jax.lax.scan(step, (params, tx.init(params)), length=steps)
    return (params, state), updates, (None if finish is None else finish(state, params))

  run = jax.jit(lambda p, f: (train(p, loss), train(f, lambda flat: loss(layout.unpack(flat)))))
  tree, flat = run(params, layout.pack(params))
  return layout, tree, flat


def assert_packed_matches_tree(layout: Layout, tree: tuple[Any, Any], flat: tuple[Any, Any],
                               as_array: Callable[[Any], Any] = np.asarray) -> None:
  """Packed params within 2e-5 of the tree's, packed state of its structure within 1e-4."""
  (p_tree, s_tree), (p_flat, s_flat) = tree, flat
  assert_trees_close(layout.unpack(p_flat), p_tree, rtol=2e-5, atol=2e-6, as_array=as_array)
  state_view = layout.unpack_state(s_flat)
  assert jax.tree.structure(state_view) == jax.tree.structure(s_tree)
  assert_trees_close(state_view, s_tree, rtol=1e-4, atol=1e-6, as_array=as_array)


def decay(init: float, every: int, rate: float = 0.5) -> gtx.schedules.Schedule:
  """An exponential decay: sign and normalised rules take fixed steps and settle as it decays."""
  return gtx.schedules.exponential_decay(init, every, rate)


def counting_jit(fn: Callable[..., Any]) -> tuple[Callable[..., Any], list[int]]:
  """``fn`` jitted, and a list that gains an entry each time it is traced."""
  traces: list[int] = []

  def traced(*args: Any) -> Any:
    traces.append(1)
    return fn(*args)

  return jax.jit(traced), traces


def bad_hyperparameters_test(cases: list[tuple[Callable[[], Any], str]],
                             errors: Any = ValueError, named: bool = True) -> Callable[..., None]:
  """A test that each case's ``make()`` raises ``errors`` matching its message (ids: messages)."""
  @pytest.mark.parametrize("make, message", cases,
                           ids=[m for _, m in cases] if named else None)
  def test(make, message):
    with pytest.raises(errors, match=message):
      make()

  return test


def check_mixed_precision_tree(make: Callable[[], Any], first_step_rtol: float = 2e-2,
                               third_step_rtol: float = 5e-2) -> None:
  """A tree mixing float32 and bfloat16 leaves steps as the same tree in float32.

  Under the suite's strict dtype promotion, sums across leaves must promote
  explicitly (lbfgs, monitor and scale_by_nadam raised); each update keeps its
  leaf's dtype; and three steps land where the float32 tree's do, to
  bfloat16 rounding (the gradients are exact in bfloat16): the first step to
  ``first_step_rtol`` of its largest entry (a few units of bfloat16's 2^-8), the
  third to ``third_step_rtol`` (the trajectories have parted by then).
  """
  mixed = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2),
           "b": jnp.asarray([0.5, -0.25], jnp.bfloat16)}
  wide = {"w": mixed["w"], "b": mixed["b"].astype(jnp.float32)}

  def run(params):
    tx = make()

    # Not jitted: three steps of a 2-leaf tree run eagerly in less time than compiling
    # them (12 s of CPU against 29 s for test_optimizers' 64 cases); test_packed steps
    # a mixed bfloat16 and float32 tree under jit with every ready optimizer.
    def step(p, s):
      g = jax.tree.map(lambda x: (0.5 * x + 0.25).astype(x.dtype), p)
      u, s = tx.update(g, s, p, value=jnp.float32(1.0),
                       obj_fn=lambda q: sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                                            for x in jax.tree.leaves(q)))
      return gtx.apply_updates(p, u), s, u

    state = tx.init(params)
    params, state, first = step(params, state)
    for _ in range(2):
      params, state, updates = step(params, state)
    return params, first, updates

  p_mixed, first_mixed, u_mixed = run(mixed)
  p_wide, first_wide, u_wide = run(wide)
  assert {k: v.dtype for k, v in u_mixed.items()} == {k: v.dtype for k, v in mixed.items()}
  assert all_finite(p_mixed)
  # The first step, from the same params and gradients: bfloat16's rounding of the step.
  # The first and the third step, each to first_step_rtol of its largest entry (the
  # params alone would not show a leaf that stops moving: its steps are that small).
  for step, got_tree, want_tree, rtol in (("first", first_mixed, first_wide, first_step_rtol),
                                          ("third", u_mixed, u_wide, third_step_rtol)):
    for k in mixed:
      want = np.asarray(want_tree[k], np.float32)
      np.testing.assert_allclose(np.asarray(got_tree[k], np.float32), want, rtol=0,
                                 atol=rtol * float(np.max(np.abs(want))) + 1e-12,
                                 err_msg=f"{step} step, {k}")
  np.testing.assert_allclose(np.asarray(p_mixed["w"]), np.asarray(p_wide["w"]),
                             rtol=1e-2, atol=1e-3)
  np.testing.assert_allclose(np.asarray(p_mixed["b"], np.float32), np.asarray(p_wide["b"]),
                             rtol=2e-2, atol=1e-2)
