"""The ready optimizers on complex parameters, against the complex numpy references.

gradtx follows optax's convention for a real loss of complex parameters: the
updates passed to ``update`` are the conjugated gradients
``conj(jax.grad(loss)(params))``, second moments average :math:`|g|^2`, norms use
:math:`|x|`, ``sign(z) = z / |z|``, and a complex leaf's state has the leaf's
complex dtype. Every ready optimizer of ``reference.OPTIMIZERS`` (the table
``test_reference.py`` checks against optax), in its main configurations, runs 40
steps on a tree of complex leaves (a matrix, a vector, a scalar, an all-zero leaf)
with one real leaf mixed in, complex128 eagerly and complex64 jitted, against
``reference.py`` (complex128 numpy) at every step. Its state has optax's layout, its
updates are complex where the params are, and optax (run under standard promotion,
which it needs) agrees with the same references wherever it is right. ``rprop`` and
``sm3`` refuse complex leaves. Adam solves a complex least-squares problem.

Where optax 0.2.8 is wrong on complex leaves (tested below; gradtx follows the reference):
  * adadelta: ``scale_by_adadelta`` updates its averages with
    ``tree.update_moment(g, e, rho, 2)``, i.e. ``g ** 2`` (the complex square), not
    ``|g|^2``. Its step ``sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g`` is turned by
    a complex factor: for g = 0.3 (1 + 2j) its first step is nearly real.
  * adafactor(momentum=...): the momentum is kept in ``dtype_momentum`` (float32 by
    default) even for a complex leaf; the cast drops the imaginary part (with a
    DeprecationWarning) from the second step on. gradtx keeps it in complex64.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx
from zoo_harness import (  # decay_mask: the matrix and the real leaf, decay on some leaves
    ComplexProblem, Problem, as_jax, decay_mask, follow_reference)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

STEPS = 40
SHAPES = {"matrix": (4, 5), "vector": (3,), "scalar": (), "zeros": (3,), "real": (2, 3)}
REAL_LEAVES = ("real",)
ZERO_LEAVES = ("zeros",)  # params and gradients identically zero (zoo_harness.Problem's)


def _draw() -> tuple[dict, dict, dict, list[dict]]:
  """The least-squares problem's start, curvatures ``a``, targets ``b`` and noise ``n_t``
  (complex but on the real leaf; the zero leaf starts at 0), seeded."""
  rng = np.random.default_rng(0)

  def draw(shape, key, scale=1.0):
    x = rng.normal(size=shape)
    if key not in REAL_LEAVES:
      x = x + 1j * rng.normal(size=shape)
    return scale * x

  params0 = {k: draw(s, k) for k, s in SHAPES.items()}
  a = {}
  for k, s in SHAPES.items():
    r = rng.uniform(0.5, 1.5, size=s)
    a[k] = r if k in REAL_LEAVES else r * np.exp(1j * rng.uniform(-np.pi, np.pi, size=s))
  b = {k: draw(s, k) for k, s in SHAPES.items()}
  noise = [{k: draw(s, k, 0.3) for k, s in SHAPES.items()} for _ in range(STEPS)]
  for k in ZERO_LEAVES:
    params0[k] = np.zeros(SHAPES[k], np.complex128)
  return params0, a, b, noise


def least_squares(params0: dict, a: dict, b: dict, noise: list[dict]) -> ComplexProblem:
  """A real loss of complex and real leaves, and its conjugated gradients.

  For each leaf, with complex curvature ``a``, target ``b`` and noise ``n_t`` (all
  real on the real leaf)::

    f_t(z) = 1/2 sum |a z - b|^2 + Re sum conj(n_t) z
    g_t    = conj(jax.grad(f_t)(z)) = conj(a) (a z - b) + n_t

  so the updates change from step to step with the params. For ``z = x + iy``,
  ``f_t(z) = 1/2 |a|^2 (x^2 + y^2) + Re(d_t) x + Im(d_t) y + 1/2 sum |b|^2`` with
  ``d_t = n_t - conj(a) b``: the :class:`zoo_harness.ComplexProblem` whose parts have
  curvature ``|a|^2`` and noise ``Re d_t`` and ``Im d_t``. Its value (for Polyak's
  step size) is ``3 + sum f_t`` over the leaves but the zero one.
  """
  curvature = {k: np.abs(v) ** 2 for k, v in a.items()}
  d = [{k: n[k] - np.conj(a[k]) * b[k] for k in n} for n in noise]
  offset = 3.0 + sum(0.5 * float(np.sum(np.abs(b[k]) ** 2)) for k in b if k not in ZERO_LEAVES)

  def part(of: Callable[[Any], Any], offset: float) -> Problem:
    return Problem.from_arrays({k: of(v) for k, v in params0.items()}, curvature,
                               [{k: of(v) for k, v in dt.items()} for dt in d], offset)

  return ComplexProblem(tuple(k for k in SHAPES if k not in REAL_LEAVES),
                        part(np.real, offset), part(np.imag, 0.0))


PARAMS0, A, B, NOISE = _draw()
PROBLEM = least_squares(PARAMS0, A, B, NOISE)


# ----------------------------------------------------------------------------
# Cases: every ready optimizer, each in its default and its main options. The
# same name and keyword arguments build gradtx's, the reference's and optax's.

# optax 0.2.8's bugs on complex leaves (see the module docstring).
OPTAX_ADADELTA = "adadelta squares g as a complex number"
OPTAX_MOMENTUM = "adafactor's float32 momentum drops the imaginary part"


@dataclasses.dataclass(frozen=True)
class Case:
  """A ready optimizer ``name(**kwargs)`` in gradtx, reference.py and optax.

  Tolerances are elementwise, relative to the largest entry of the leaf's update
  (``|got - want| <= rtol * max |want|``; exactly 0 on the zero leaf), at every one of
  the 40 steps: ``rtol64`` for complex128 (eager), ``rtol32`` for complex64 (jitted),
  ``rtol_optax`` for optax (complex128) against the reference. The defaults are ~4x
  the largest error measured over the cases that keep them (2.4e-15, 1.4e-6 and 2.0e-15;
  test_reference.py compares optax with the references at 1e-10, test_optimizers.py
  float32 params at 2e-4); a case that needs more says why and what was measured.
  """
  id: str
  name: str
  kwargs: dict = dataclasses.field(default_factory=dict)
  with_value: bool = False
  rtol64: float = 1e-14
  rtol32: float = 5e-6
  rtol_optax: float = 8e-15
  optax_bug: str = ""

  def gradtx(self) -> gtx.GradientTransformation:
    return getattr(gtx, self.name)(**self.kwargs)

  def reference(self) -> R.Reference:
    return getattr(R, self.name)(**self.kwargs)

  def optax(self) -> optax.GradientTransformation:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", DeprecationWarning)  # optimistic_adam (v1)
      return getattr(optax, self.name)(**self.kwargs)


# RAdam's rectifier divides by rho_t - 4, which near the threshold cancels ~400x (rho_inf
# ~ 2e3): rounding in 1 - b2^t is amplified as much. The reference computes it as numpy's
# 1 - b2**t, gradtx by expm1 (more accurate); they differ by 2.9e-12 in float64, on real
# leaves too (optax: 1.1e-11 there), and by 8.3e-5 in complex64.
_RADAM = dict(rtol64=1e-11, rtol32=2e-4)
# Adam's direction: the noisy gradients leave some entries of v small, where float32's
# rounding of m / sqrt(v) is largest: 3.6e-6 (adam), up to 9.8e-6 (yogi) in complex64.
_ADAM32 = dict(rtol32=3e-5)
# optax.adafactor computes beta2_t = 1 - t^-0.8 in float32 (test_reference.py compares it
# at 1e-5): 7.2e-8 from the complex128 reference.
_ADAFACTOR_OPTAX = dict(rtol_optax=3e-7)

C = Case
CASES = [
    C("sgd", "sgd", dict(learning_rate=0.05)),
    C("sgd-momentum", "sgd", dict(learning_rate=0.05, momentum=0.9)),
    C("sgd-nesterov", "sgd", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    C("adagrad", "adagrad", dict(learning_rate=0.1)),
    C("adagrad-zero-init", "adagrad",
      dict(learning_rate=0.1, initial_accumulator_value=0.0, eps=1e-3)),
    C("rmsprop", "rmsprop", dict(learning_rate=0.01)),
    C("rmsprop-centered-nesterov", "rmsprop",
      dict(learning_rate=0.01, centered=True, momentum=0.9, nesterov=True)),
    C("rmsprop-eps-out-debiased", "rmsprop",
      dict(learning_rate=0.01, decay=0.95, eps=1e-4, initial_scale=1.0, eps_in_sqrt=False,
           momentum=0.8, bias_correction=True)),
    # (optax.adadelta()'s default learning_rate=None ascends: test_reference.py.)
    C("adadelta", "adadelta", dict(learning_rate=1.0), optax_bug=OPTAX_ADADELTA),
    C("adadelta-lr-wd-mask", "adadelta",
      dict(learning_rate=0.5, rho=0.95, eps=1e-4, weight_decay=0.01,
           weight_decay_mask=decay_mask), optax_bug=OPTAX_ADADELTA),
    C("adam", "adam", dict(learning_rate=0.01), **_ADAM32),
    C("adam-nesterov-eps-root", "adam",
      dict(learning_rate=0.01, b1=0.5, b2=0.9, eps=1e-6, eps_root=1e-8, nesterov=True)),
    C("adamw-mask", "adamw", dict(learning_rate=0.01, weight_decay=0.1, mask=decay_mask),
      **_ADAM32),
    C("nadam", "nadam", dict(learning_rate=0.01), **_ADAM32),
    C("nadamw", "nadamw", dict(learning_rate=0.01, weight_decay=0.05), **_ADAM32),
    C("amsgrad", "amsgrad", dict(learning_rate=0.01), **_ADAM32),
    C("amsgrad-eps-root", "amsgrad", dict(learning_rate=0.01, b2=0.9, eps_root=1e-10)),
    C("adamax", "adamax", dict(learning_rate=0.01)),
    C("adamaxw-mask", "adamaxw", dict(learning_rate=0.01, weight_decay=0.1, mask=decay_mask)),
    C("radam", "radam", dict(learning_rate=0.01), **_RADAM),
    C("radam-nesterov-threshold", "radam",
      dict(learning_rate=0.01, b2=0.99, threshold=8.0, nesterov=True), **_RADAM),
    C("adabelief", "adabelief", dict(learning_rate=0.01), **_ADAM32),
    C("adabelief-nesterov", "adabelief",
      dict(learning_rate=0.01, eps=1e-8, eps_root=0.0, nesterov=True), **_ADAM32),
    C("yogi", "yogi", dict(learning_rate=0.01), **_ADAM32),
    C("lion", "lion", dict(learning_rate=0.001)),
    C("lion-mask", "lion", dict(learning_rate=0.01, b1=0.8, weight_decay=0.1, mask=decay_mask)),
    C("lamb", "lamb", dict(learning_rate=0.01)),
    C("lamb-wd", "lamb", dict(learning_rate=0.01, weight_decay=0.01, mask=decay_mask)),
    C("lars", "lars", dict(learning_rate=0.5)),
    C("lars-wd-masks-nesterov", "lars",
      dict(learning_rate=0.5, weight_decay=0.01, weight_decay_mask=decay_mask,
           trust_coefficient=0.01, eps=1e-6, trust_ratio_mask=decay_mask, momentum=0.8,
           nesterov=True)),
    C("novograd", "novograd", dict(learning_rate=0.01)),
    C("novograd-wd", "novograd",
      dict(learning_rate=0.01, b2=0.5, weight_decay=0.01, eps_root=1e-8)),
    # b2 = 0.5, where optax 0.2.8's weight on the gradient difference is the paper's.
    C("adan", "adan", dict(learning_rate=0.01, b2=0.5)),
    C("adan-wd", "adan", dict(learning_rate=0.01, b2=0.5, weight_decay=0.01, mask=decay_mask)),
    C("sign_sgd", "sign_sgd", dict(learning_rate=0.01)),
    C("signum", "signum", dict(learning_rate=0.01)),
    C("signum-beta", "signum", dict(learning_rate=0.01, beta=0.5)),
    # Fromage's step is the difference (c - 1) p - lr c ratio g of two terms of similar size.
    # rtol32: measured 6.1e-6. optax forms 1/sqrt(1 + lr^2) - 1, which cancels (the
    # reference and gradtx do not): 1.7e-14 from the reference, measured.
    C("fromage", "fromage", dict(learning_rate=0.01), rtol32=2e-5, rtol_optax=5e-14),
    C("adafactor", "adafactor", **_ADAFACTOR_OPTAX),
    # The momentum is held in dtype_momentum=float32's precision (complex64, as optax's
    # float32 default): 1.3e-7 from the complex128 reference.
    C("adafactor-factored-all-options", "adafactor",
      dict(learning_rate=0.05, min_dim_size_to_factor=2, decay_rate=0.6, momentum=0.9,
           weight_decay_rate=0.01, clipping_threshold=0.5, eps=1e-20,
           weight_decay_mask=decay_mask), rtol64=4e-7, optax_bug=OPTAX_MOMENTUM,
      **_ADAFACTOR_OPTAX),
    C("adafactor-unfactored-noclip-noscale", "adafactor",
      dict(learning_rate=0.01, min_dim_size_to_factor=2, factored=False,
           clipping_threshold=None, multiply_by_parameter_scale=False), **_ADAFACTOR_OPTAX),
    C("polyak_sgd", "polyak_sgd", dict(max_learning_rate=0.1), with_value=True),
    C("polyak_sgd-sps+", "polyak_sgd",
      dict(max_learning_rate=0.5, scaling=0.5, f_min=4.0, eps=1e-3, variant="sps+"),
      with_value=True),
    C("optimistic_gradient_descent", "optimistic_gradient_descent", dict(learning_rate=0.05)),
    C("optimistic_gradient_descent-alpha-beta", "optimistic_gradient_descent",
      dict(learning_rate=0.05, alpha=0.5, beta=2.0)),
    # (lr + optimism) d_t - optimism d_{t-1}: two Adam directions of similar size subtracted,
    # measured 1.0e-5 and 2.2e-5 in complex64.
    C("optimistic_adam", "optimistic_adam", dict(learning_rate=0.01), rtol32=4e-5),
    C("optimistic_adam-optimism", "optimistic_adam",
      dict(learning_rate=0.01, optimism=0.03, nesterov=False), rtol32=8e-5),
    C("optimistic_adam_v2", "optimistic_adam_v2", dict(learning_rate=0.01), rtol32=4e-5),
    C("optimistic_adam_v2-alpha-beta", "optimistic_adam_v2",
      dict(learning_rate=0.01, alpha=0.5, beta=0.3, nesterov=False), **_ADAM32),
]
REAL_ONLY = ["rprop", "sm3"]  # rules defined for real numbers: they refuse complex leaves

MODES = [
    pytest.param(jnp.complex128, False, id="complex128-eager"),
    pytest.param(jnp.complex64, True, id="complex64-jit"),
]


@pytest.fixture(params=[m.values for m in MODES], ids=[m.id for m in MODES])
def mode(request):
  """(complex dtype, jit): complex128 with x64 for the test's duration, or complex64."""
  dtype, jit = request.param
  if dtype == jnp.complex128:
    with jax.enable_x64(True):
      yield dtype, jit
  else:
    yield dtype, jit


def run_against_reference(case: Case, dtype: Any, jit: bool
                          ) -> Iterator[tuple[int, dict, Any, dict]]:
  """Steps gradtx and the reference side by side on the reference's trajectory (computed
  in complex128, cast to ``dtype`` for gradtx); yields (step, params, updates, reference's)."""
  reference = case.reference()
  return follow_reference(PROBLEM, "noisy", case.gradtx(), reference, jnp.finfo(dtype).dtype,
                          jit, STEPS, case.with_value)


def assert_close(got: dict, want: dict, rtol: float, context: str) -> None:
  """Elementwise ``|got - want| <= rtol * max |want|`` per leaf (exactly 0 on a 0 leaf)."""
  for k, w in want.items():
    g = np.asarray(got[k])
    scale = float(np.max(np.abs(w), initial=0.0))
    np.testing.assert_allclose(g, w, rtol=0, atol=rtol * scale, err_msg=f"{context}, leaf {k!r}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_follows_the_complex_reference(case, mode):
  dtype, jit = mode
  rtol = case.rtol64 if dtype == jnp.complex128 else case.rtol32
  for t, _, got, want in run_against_reference(case, dtype, jit):
    for k, u in got.items():
      want_dtype = jnp.finfo(dtype).dtype if k in REAL_LEAVES else dtype
      assert u.dtype == want_dtype, (t, k, u.dtype)  # complex updates where params are
    assert_close(got, want, rtol, f"{case.id}: step {t + 1}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reference_of_a_real_leaf_held_complex_is_the_real_reference(case):
  """The complex formulas reduce to the real ones: the same real problem, once in
  float64 and once in complex128 with zero imaginary parts, gives the same params at
  every step, to rounding (complex division and roots round differently: at most
  1.8e-14 of the leaf's largest entry measured, on a scalar leaf decayed to 3e-3)."""
  rng = np.random.default_rng(1)
  shapes = {k: s for k, s in SHAPES.items() if k not in ZERO_LEAVES}
  curvature = {k: rng.uniform(0.5, 1.5, size=s) for k, s in shapes.items()}
  noise = [{k: 0.3 * rng.normal(size=s) for k, s in shapes.items()} for _ in range(STEPS)]
  runs = []
  for dtype in (np.float64, np.complex128):
    params = {k: np.asarray(rng.normal(size=s) if not runs else runs[0][0][k], dtype)
              for k, s in shapes.items()}
    reference = case.reference()
    reference.init(params)
    steps = [params]
    for t in range(STEPS):
      g = {k: (curvature[k] * params[k] + noise[t][k]).astype(dtype) for k in params}
      extra = {"value": 3.0 + sum(float(np.sum(0.5 * curvature[k] * params[k].real ** 2))
                                  for k in params)} if case.with_value else {}
      u = reference.step(g, params, **extra)
      assert all(u[k].dtype == dtype for k in u)
      params = {k: params[k] + u[k] for k in params}
      steps.append(params)
    runs.append(steps)
  for real, held_complex in zip(*runs):
    for k in real:
      np.testing.assert_array_equal(held_complex[k].imag, 0.0)
      np.testing.assert_allclose(held_complex[k].real, real[k], rtol=0,
                                 atol=1e-13 * np.max(np.abs(real[k])))


def test_every_ready_optimizer_is_covered():
  assert {c.name for c in CASES} | set(REAL_ONLY) == set(R.OPTIMIZERS)


# ----------------------------------------------------------------------------
# State layout: optax's (a complex leaf's moments in its complex dtype).

def _dtypes_per_leaf(state: Any, params: dict) -> dict:
  """For each param, the sorted dtypes of the state arrays that belong to it.

  A state array belongs to the param whose key is on its key path, at any depth
  (``.mu['w']``, ``['w'].v_row``, ``['w'][0]``). Every other array of the state must be
  a real scalar (a count, a hyperparameter): one that is not (a param's array under
  another key, a packed buffer) fails here rather than going unchecked.
  """
  out: dict[str, list[str]] = {k: [] for k in params}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    keystr = jax.tree_util.keystr(path)
    owners = {p.key for p in path if isinstance(p, jax.tree_util.DictKey) and p.key in params}
    assert len(owners) <= 1, f"state array {keystr} is under the keys of params {owners}"
    if owners:
      out[owners.pop()].append(jnp.dtype(leaf.dtype).name)
    else:
      assert np.ndim(leaf) == 0 and not jnp.iscomplexobj(leaf), (
          f"state array {keystr} ({leaf.dtype}{list(np.shape(leaf))}) is under no param's key")
  return {k: sorted(v) for k, v in out.items()}


def _complex_momentum(dtypes: dict) -> dict:
  """optax's adafactor layout with its float32 momentum complex64 on complex leaves."""
  return {k: sorted(d if k in REAL_LEAVES or d != "float32" else "complex64" for d in v)
          for k, v in dtypes.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_state_has_optax_layout(case, mode):
  dtype, _ = mode
  params = as_jax(PROBLEM.initial("noisy"), jnp.finfo(dtype).dtype)
  got = _dtypes_per_leaf(case.gradtx().init(params), params)
  with jax.numpy_dtype_promotion("standard"):
    want = _dtypes_per_leaf(case.optax().init(params), params)
  if case.optax_bug == OPTAX_MOMENTUM:
    want = _complex_momentum(want)
  assert got == want


# ----------------------------------------------------------------------------
# optax, where it is right on complex leaves; where it is not, gradtx follows the reference.

def run_optax(case: Case, steps: int = STEPS) -> Iterator[tuple[int, dict, Any, dict]]:
  """optax (complex128 jitted, standard promotion) on the reference's trajectory, as
  :func:`run_against_reference` runs gradtx; yields (step, params, updates, reference's)."""
  reference, tx = case.reference(), case.optax()
  with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
    yield from follow_reference(PROBLEM, "noisy", tx, reference, jnp.float64, True, steps,
                                case.with_value)


@pytest.mark.parametrize("case", [c for c in CASES if not c.optax_bug],
                         ids=[c.id for c in CASES if not c.optax_bug])
def test_optax_agrees_with_the_complex_reference(case):
  """optax == the reference, so == gradtx too (the reference's convention is optax's)."""
  for t, _, got, want in run_optax(case):
    assert_close(got, want, case.rtol_optax, f"optax {case.id}: step {t + 1}")


def _relative_error(got: Any, want: np.ndarray) -> float:
  return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("case", [c for c in CASES if c.optax_bug],
                         ids=[c.id for c in CASES if c.optax_bug])
def test_optax_departs_from_the_reference_on_complex_leaves(case):
  """optax's updates of the complex leaves are off by far more than rounding, from the
  first steps on; on the real leaf it agrees. gradtx follows the reference
  (:func:`test_follows_the_complex_reference`)."""
  worst = 0.0
  with warnings.catch_warnings():
    # optax's float32 momentum of a complex leaf: "Casting from complex to real dtypes".
    warnings.simplefilter("ignore", DeprecationWarning)
    for t, _, got, want in run_optax(case, steps=5):
      for k in want:
        if k in REAL_LEAVES + ZERO_LEAVES:
          assert_close(got, {k: want[k]}, case.rtol_optax, f"optax {case.id}: step {t + 1}")
        else:
          worst = max(worst, _relative_error(got[k], want[k]))
  assert worst > 0.1, worst


def test_adadelta_steps_along_the_gradient_where_optax_turns_away():
  """For one complex gradient g, Adadelta's first step is -lr sqrt(eps / ((1 - rho)|g|^2 + eps)) g:
  along -g. optax averages g^2 instead of |g|^2 and turns its step by a complex factor:
  for g = 0.3 (1 + 2j) its step is nearly real."""
  g = jnp.full((1,), 0.3 * (1 + 2j), jnp.complex64)
  params = jnp.zeros((1,), jnp.complex64)
  reference = R.adadelta()
  reference.init({"p": np.zeros(1, np.complex128)})
  want = reference.step({"p": np.asarray(g)}, {"p": np.zeros(1, np.complex128)})["p"]
  np.testing.assert_allclose(np.angle(-want), np.angle(np.asarray(g, np.complex128)),
                             rtol=1e-12)  # along -g
  tx = gtx.adadelta()
  ours, _ = tx.update(g, tx.init(params), params)
  np.testing.assert_allclose(ours, want, rtol=1e-6)
  with jax.numpy_dtype_promotion("standard"):
    tx = optax.adadelta(1.0)
    theirs, _ = tx.update(g, tx.init(params), params)
  assert abs(float(np.angle(-theirs[0] / g[0]))) > 0.5  # turned by > 0.5 rad from -g
  assert abs(float(theirs[0].imag)) < 0.1 * abs(float(theirs[0].real))  # nearly real


def test_adafactor_momentum_stays_complex_where_optax_drops_the_imaginary_part():
  """adafactor(momentum=0.9) holds its momentum M in dtype_momentum (default float32).
  For a complex leaf gradtx holds it in complex64; optax in float32, casting the complex
  average to real (a DeprecationWarning), so from the second step on its steps lose the
  momentum's imaginary part: with a constant step U, M_2 = 0.09 U + 0.1 U, not 0.19 U."""
  params = {"matrix": jnp.zeros((2, 3), jnp.complex64)}
  g = {"matrix": jnp.full((2, 3), 0.3 * (1 + 2j), jnp.complex64)}
  kwargs = dict(learning_rate=0.1, momentum=0.9, multiply_by_parameter_scale=False)
  reference = R.adafactor(**kwargs)
  reference.init({k: np.asarray(v, np.complex128) for k, v in params.items()})
  want = [reference.step({k: np.asarray(v) for k, v in g.items()},
                         {k: np.asarray(v, np.complex128) for k, v in params.items()})["matrix"]
          for _ in range(2)]
  tx = gtx.adafactor(**kwargs)
  state = tx.init(params)
  assert "float32" not in _dtypes_per_leaf(state, params)["matrix"]
  for w in want:
    ours, state = tx.update(g, state, params)
    np.testing.assert_allclose(ours["matrix"], w, rtol=1e-6)
  with jax.numpy_dtype_promotion("standard"), pytest.warns(DeprecationWarning,
                                                           match="complex to real"):
    tx = optax.adafactor(**kwargs)
    state = tx.init(params)
    theirs = []
    for _ in range(2):
      u, state = tx.update(g, state, params)
      theirs.append(np.asarray(u["matrix"]))
  assert "float32" in _dtypes_per_leaf(state, params)["matrix"]  # the momentum
  np.testing.assert_allclose(theirs[0], want[0], rtol=1e-6)
  np.testing.assert_allclose(theirs[1].real, want[1].real, rtol=1e-6)
  np.testing.assert_allclose(theirs[1].imag, want[1].imag * 0.1 / 0.19, rtol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: gtx.sgd(0.05, momentum=0.9, accumulator_dtype=jnp.float32),
    lambda: gtx.chain(gtx.ema(0.9, accumulator_dtype=jnp.bfloat16), gtx.scale(-0.05)),
    lambda: gtx.adam(0.05, mu_dtype=jnp.bfloat16),
    lambda: gtx.lion(0.05, mu_dtype=jnp.float32),
    lambda: gtx.multi_steps(gtx.sgd(0.05), 1, accumulator_dtype=jnp.float32),
], ids=["trace", "ema", "adam-mu_dtype", "lion-mu_dtype", "multi_steps"])
def test_real_accumulator_dtype_of_a_complex_leaf_is_complex(make):
  """A real accumulator_dtype asks for a precision: a complex leaf's momentum gets the
  complex dtype of that precision (complex64), not a real one that drops Im."""
  params = {"matrix": jnp.zeros((2, 3), jnp.complex64), "real": jnp.zeros(2, jnp.float32)}
  tx = make()
  state = tx.init(params)
  dtypes = _dtypes_per_leaf(state, params)
  assert "complex64" in dtypes["matrix"] and "complex64" not in dtypes["real"], dtypes
  assert set(dtypes["matrix"]) <= {"complex64", "float32"}, dtypes  # no real momentum of z
  g = {"matrix": jnp.full((2, 3), 0.3 * (1 + 2j), jnp.complex64),
       "real": jnp.ones(2, jnp.float32)}
  for _ in range(3):
    u, state = tx.update(g, state, params)
  assert u["matrix"].dtype == jnp.complex64
  np.testing.assert_allclose(np.angle(-np.asarray(u["matrix"])), np.angle(0.3 * (1 + 2j)),
                             rtol=1e-2)  # along -g (bfloat16's precision)


# ----------------------------------------------------------------------------
# The convention, and a problem solved.

def test_problem_is_the_complex_least_squares_loss():
  """The problem's gradients are conj(jax.grad(f_t)) of :func:`least_squares`'s f_t (but
  on the zero leaf, whose gradients are 0), and its value is 3 + f_t there (the zero
  leaf held at 0, as in every run)."""
  params = {k: v if k in ZERO_LEAVES else v + 0.1 for k, v in PARAMS0.items()}

  def loss(p):
    return 3.0 + sum(0.5 * jnp.sum(jnp.abs(A[k] * p[k] - B[k]) ** 2)
                     + jnp.sum((jnp.conj(NOISE[3][k]) * p[k]).real)
                     for k in p if k not in ZERO_LEAVES)

  with jax.enable_x64(True):
    p = as_jax(params, jnp.float64)
    # One compiled program: eagerly, each operation on each leaf compiled its own kernel.
    value, grads = jax.jit(jax.value_and_grad(loss))(p)
    np.testing.assert_allclose(PROBLEM.value(params, 3), float(value), rtol=1e-13)
    want = jax.tree.map(np.conj, grads)
  got = PROBLEM.grads("noisy", params, 3)
  for k in SHAPES:
    assert np.iscomplexobj(got[k]) == (k not in REAL_LEAVES), k
    if k not in ZERO_LEAVES:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-13)


def test_adam_solves_complex_least_squares():
  """min_z |A z - b|^2 for complex A (8 x 4), b, z in complex64: Adam reaches numpy's
  lstsq solution (to 7e-8 measured); with the unconjugated gradient it moves away."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=(8, 4)) + 1j * rng.normal(size=(8, 4))
  b = rng.normal(size=8) + 1j * rng.normal(size=8)
  z_star = np.linalg.lstsq(a, b, rcond=None)[0]
  a32, b32 = jnp.asarray(a, jnp.complex64), jnp.asarray(b, jnp.complex64)

  def loss(z):
    r = a32 @ z - b32
    return jnp.sum((r * r.conj()).real)

  def solve(grad):
    tx = gtx.adam(0.05)

    def step(carry, _):
      z, state = carry
      updates, state = tx.update(grad(z), state, z)
      return (gtx.apply_updates(z, updates), state), None

    z0 = jnp.zeros(4, jnp.complex64)
    (z, _), _ = jax.jit(lambda z: jax.lax.scan(step, (z, tx.init(z)), length=2000))(z0)
    assert z.dtype == jnp.complex64
    return np.asarray(z)

  z = solve(lambda z: jnp.conj(jax.grad(loss)(z)))
  np.testing.assert_allclose(z, z_star, atol=1e-5, rtol=0)
  assert np.max(np.abs(solve(jax.grad(loss)) - z_star)) > 1.0


# ----------------------------------------------------------------------------
# Rules for real numbers only.

@pytest.mark.parametrize("name", REAL_ONLY)
def test_real_only_rules_refuse_complex_leaves(name):
  params = {"real": jnp.ones(3), "layer": {"w": jnp.ones((2, 2), jnp.complex64)}}
  tx = getattr(gtx, name)(learning_rate=0.1)
  with pytest.raises(ValueError, match=r"complex parameters are not supported \(key path "
                                       r"\['layer'\]\['w'\]\)"):
    tx.init(params)


# Stages defined for real numbers: (the stage, where it raises). An elementwise clip has
# no order to clip by (a modulus is bounded by clip_by_block_rms); GaLore's projection
# is for real matrices, and a complex leaf it would not project passes through; Sophia
# clips a ratio to a Hessian diagonal's estimate.
REAL_ONLY_STAGES = [
    pytest.param(lambda: gtx.clip(1.0), "update", id="clip"),
    pytest.param(lambda: gtx.contrib.galore(0.1, rank=1), "init", id="galore"),
    pytest.param(lambda: gtx.contrib.sophia(0.1), "init", id="sophia"),
]


@pytest.mark.parametrize("make, where", REAL_ONLY_STAGES)
def test_real_only_stages_refuse_complex_leaves(make, where):
  params = {"real": jnp.ones(3), "layer": {"w": jnp.ones((2, 2), jnp.complex64)}}
  tx = make()
  message = r"complex parameters are not supported \(key path \['layer'\]\['w'\]\)"
  with pytest.raises(ValueError, match=message):
    tx.update(params, tx.init(params), params) if where == "update" else tx.init(params)


def test_galore_passes_a_complex_leaf_it_does_not_project_to_its_base():
  params = {"w": jnp.ones((3, 2)), "b": jnp.array([1 + 2j, -1j], jnp.complex64)}
  tx = gtx.contrib.galore(0.1, rank=1, base_optimizer=gtx.scale_by_adam())
  updates, _ = tx.update(params, tx.init(params), params)
  b = np.asarray(params["b"])
  np.testing.assert_allclose(updates["b"], -0.1 * b / np.abs(b), rtol=1e-5)  # Adam's first step


def test_rprop_reference_refuses_complex_leaves():
  with pytest.raises(ValueError, match="rprop: defined for real parameters only"):
    R.rprop(0.1).init({"w": np.ones(2, np.complex128)})
