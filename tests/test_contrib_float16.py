"""float16 params and gradtx.contrib's second moments: ``nu_dtype``.

Every contrib optimizer whose step divides by an accumulator of squared
gradients (Sophia: of the Hessian's diagonal) takes ``nu_dtype``, gradtx's
addition to optax's arguments, as the core ones do (tests/test_optimizers.py).
On float16 params float16 rounds ``eps`` and the small :math:`(1-\\beta_2) g^2`
to 0, and the steps are NaN, Inf or silently wrong; with ``nu_dtype=jnp.float32``
the float16 steps follow the float32 ones to float16 rounding. A complex leaf's
accumulator stays complex (or real, where the rule holds :math:`|g|^2` real),
and on float32 params ``nu_dtype=jnp.float32`` changes nothing. Mechanic and
COCOB, which have no second moment, take float16 params as the FAQ says.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx
from gradtx.packed import Layout, Packed

C = gtx.contrib

# The FAQ's problem: float16's smallest value (6e-8) is above eps = 1e-8 and above
# (1 - b2) g^2 for the small entries, and one entry's gradient is 0.
FLOAT16_GRADS = {"w": np.array([0.1, 0.0, 1e-3, -2e-4])}
FLOAT16_PARAMS = {"w": np.array([0.5, -0.25, 1.0, 0.75])}
# D-Adaptation's m and s hold eta_t g (eta_t: its step size, about 0.03 here), which
# float16 holds only well above its smallest normal value (6e-5) for gradients of 1e-2
# and more: 1e-3 and 2e-4 would put them in the subnormals (a few bits) or at 0,
# whatever nu_dtype is. On these, v = (1 - b2) g^2 is still subnormal (4e-7 for 0.02).
DADAPT_PROBLEM = {"w": np.array([0.5, 0.0, 0.05, -0.02])}, FLOAT16_PARAMS


def _curvature(params: Any) -> jax.Array:
  """A diagonal quadratic, one entry of zero curvature: Sophia's objective."""
  w = (params.unpack() if isinstance(params, Packed) else params)["w"]
  w_sq = jnp.real(w * jnp.conj(w))  # |w|^2, real for a complex leaf
  return 0.5 * jnp.sum(jnp.asarray(np.resize([2.0, 0.0, 0.5, 1e-3], w.shape), w_sq.dtype) * w_sq)


def _adopt(**kwargs):
  return C.adopt(0.01, **kwargs)


def _ademamix(**kwargs):
  return C.ademamix(0.01, **kwargs)


def _simplified_ademamix(**kwargs):
  return C.simplified_ademamix(0.01, **kwargs)


def _acprop(**kwargs):
  return C.acprop(0.01, **kwargs)


def _madgrad(**kwargs):
  return C.madgrad(0.01, **kwargs)


def _prodigy(**kwargs):
  # From d_0 = 1: at the default 1e-6, m = (1 - b1) d g is 1e-8 and float16 holds 0
  # (see the FAQ); d_0 = 1 makes the steps lr sign(g), as Adam's.
  return C.prodigy(0.01, estim_lr0=1.0, **kwargs)


def _dadapt_adamw(**kwargs):
  return C.dadapt_adamw(0.1, estim_lr0=1.0, **kwargs)


def _momo_adam(**kwargs):
  return C.momo_adam(0.01, **kwargs)


def _muon(**kwargs):
  # A vector: one of the leaves muon gives to Adam.
  return C.muon(0.01, **kwargs)


def _schedule_free_adamw(**kwargs):
  # z in float32: float16 rounds z + 0.01 near 1 to a spacing of 1e-3 (the 10% that
  # state_dtype is for), which would hide what nu_dtype does.
  return C.schedule_free_adamw(0.01, state_dtype=jnp.float32, **kwargs)


def _sophia(**kwargs):
  return C.sophia(0.01, update_interval=1, **kwargs)


VALUE = {"value": 1.0}
OBJ_FN = {"obj_fn": _curvature}

# id, make(**kwargs), the state fields nu_dtype sets, the rtol of the float16 steps
# against the float32 ones (measured, then rounded up), the problem (grads, params;
# None: FLOAT16_*), the update's extra arguments. Measured: adopt 2.5e-4, ademamix
# 1.6e-3, simplified_ademamix 1.3e-3, acprop 7.8e-4, prodigy 9.3e-4, dadapt_adamw
# 6.2e-4, momo_adam 1.2e-3, muon 1.6e-3, schedule_free_adamw 5.0e-4, sophia 1.9e-4.
# madgrad 3.3e-3: its s (the sum of lambda g, the numerator, in the params' dtype as
# optax keeps it) is 5e-6 for the -2e-4 entry after two steps, a float16 subnormal
# held to 6e-8 (1%); that entry's step is off by 3e-3 past the atol.
FLOAT16_CASES = [
    pytest.param(make, fields, rtol, problem, extra, id=make.__name__.strip("_"))
    for make, fields, rtol, problem, extra in [
        (_adopt, ["nu"], 2e-3, None, {}),
        (_ademamix, ["nu"], 2e-3, None, {}),
        (_simplified_ademamix, ["n"], 2e-3, None, {}),
        (_acprop, ["nu"], 2e-3, None, {}),
        (_madgrad, ["grad_sum_sq"], 4e-3, None, {}),
        (_prodigy, ["exp_avg_sq"], 2e-3, None, {}),
        (_dadapt_adamw, ["exp_avg_sq"], 2e-3, DADAPT_PROBLEM, {}),
        (_momo_adam, ["exp_avg_sq"], 2e-3, None, VALUE),
        (_muon, ["nu"], 2e-3, None, {}),
        (_schedule_free_adamw, ["nu"], 2e-3, None, {}),
        (_sophia, ["nu"], 2e-3, None, OBJ_FN)]]


def _as(tree: Any, dtype: Any) -> Any:
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def run_steps(tx: gtx.GradientTransformation, grads: Any, params: Any, steps: int,
              extra: dict, packed: bool = False) -> tuple[list[Any], Any]:
  """``steps`` jitted updates of ``tx`` at fixed grads and params: the updates, the last state."""
  layout = Layout.from_tree(params)
  pack = layout.pack if packed else (lambda tree: tree)
  update = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra))
  state, out = tx.init(pack(params)), []
  for _ in range(steps):
    u, state = update(pack(grads), state, pack(params))
    out.append(layout.unpack(u) if packed else u)
  return out, state


# Each rule's runs, by (make, dtype, packed, kwargs): the same jitted run is what several
# tests compare (make() on float32 params is the want of three), and compiling it once
# a process is enough; each test still asserts its own claim on them.
_RUNS: dict[Any, tuple[list[Any], Any]] = {}


def cached_run(make, problem, extra, dtype, packed=False, **kwargs):
  """:func:`run_steps` of ``make(**kwargs)`` for 5 steps on the problem in ``dtype``
  (computed once per process)."""
  key = (make, id(problem), id(extra), jnp.dtype(dtype).name, packed,
         tuple(sorted(kwargs.items(), key=str)))  # problem and extra: the cases' constants
  if key not in _RUNS:
    grads, params = problem or (FLOAT16_GRADS, FLOAT16_PARAMS)
    _RUNS[key] = run_steps(make(**kwargs), _as(grads, dtype), _as(params, dtype), 5, extra,
                           packed)
  return _RUNS[key]


def _w_steps(updates):
  """The steps of ``w``, as float32."""
  return np.array([np.asarray(u["w"], np.float32) for u in updates])


def run_float16(make, problem, extra, packed=False, **kwargs):
  """``make(**kwargs)`` on float16 params against ``make()`` on float32 ones, 5 steps.

  Returns the float16 steps of ``w`` (as float32), the float32 steps and the last
  float16 state.
  """
  got, state = cached_run(make, problem, extra, jnp.float16, packed, **kwargs)
  want, _ = cached_run(make, problem, extra, jnp.float32)
  assert all(u["w"].dtype == jnp.float16 for u in got)
  return _w_steps(got), _w_steps(want), state


@pytest.mark.parametrize("make, fields, rtol, problem, extra", FLOAT16_CASES)
def test_float16_params_step_with_a_float32_second_moment(make, fields, rtol, problem, extra):
  got, want, state = run_float16(make, problem, extra, nu_dtype=jnp.float32)
  np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6)
  for field in fields:  # the accumulator really is float32
    assert gtx.tree_utils.tree_get(state, field)["w"].dtype == jnp.float32, field
  assert "nu_dtype=float32" in repr(make(nu_dtype=jnp.float32))


@pytest.mark.parametrize("make, fields, rtol, problem, extra", FLOAT16_CASES)
def test_packed_float16_steps_as_the_tree_does(make, fields, rtol, problem, extra):
  del rtol
  tree, _, _ = run_float16(make, problem, extra, nu_dtype=jnp.float32)
  packed, _, state = run_float16(make, problem, extra, packed=True, nu_dtype=jnp.float32)
  # Equal on XLA:CPU; float16 rounding allowed where a backend fuses the two differently.
  np.testing.assert_allclose(packed, tree, rtol=1e-3, atol=1e-7)
  for field in fields:  # a float32 buffer beside the float16 params'
    buffers = jax.tree.leaves(gtx.tree_utils.tree_get(state, field))
    assert buffers and {x.dtype for x in buffers} == {jnp.dtype(jnp.float32)}, field


# Without nu_dtype, in float16: what goes wrong. "nonfinite": a step is NaN or Inf
# (the step is 0/0 where g = 0, g/0 or m/0 where (1 - b2) g^2 is 0; prodigy, dadapt_adamw
# and momo_adam spread it through their whole-tree sums: momo_adam's Polyak step size is
# then 0 and the finite entries do not move). "wrong": finite but off by more than 10x
# the tolerance above (adopt: v loses the small g^2 to float16's subnormals, 18% off by
# step 5; madgrad: eps = 1e-6 and lambda g^2 of the small entries round to a few bits or
# 0, and the cube root of what is left makes their steps up to 4000x too large).
FLOAT16_FAILURES = [
    pytest.param(make, problem, extra, symptom, id=make.__name__.strip("_"))
    for make, problem, extra, symptom in [
        (_adopt, None, {}, "wrong"),
        (_ademamix, None, {}, "nonfinite"),
        (_simplified_ademamix, None, {}, "nonfinite"),
        (_acprop, None, {}, "nonfinite"),
        (_madgrad, None, {}, "wrong"),
        (_prodigy, None, {}, "nonfinite"),
        (_dadapt_adamw, DADAPT_PROBLEM, {}, "nonfinite"),
        (_momo_adam, None, VALUE, "nonfinite"),
        (_muon, None, {}, "nonfinite"),
        (_schedule_free_adamw, None, {}, "nonfinite"),
        (_sophia, None, OBJ_FN, "nonfinite")]]


@pytest.mark.parametrize("make, problem, extra, symptom", FLOAT16_FAILURES)
def test_float16_second_moment_needs_nu_dtype(make, problem, extra, symptom):
  got, want, _ = run_float16(make, problem, extra)
  if symptom == "nonfinite":
    assert not np.isfinite(got).all()
  else:
    assert np.isfinite(got).all()
  assert not np.allclose(got, want, rtol=2e-2, atol=1e-6)  # NaN is not close either


# The rules that hold |g|^2 in a real state (optax's layout for these): a real
# nu_dtype keeps it real, of that precision.
REAL_ACCUMULATORS = {"prodigy", "dadapt_adamw", "momo_adam", "madgrad"}


def _complex_cases():
  for case in FLOAT16_CASES:
    make, fields, _, _, extra = case.values
    if make is _sophia:  # a Hessian diagonal and a clip: real parameters only
      continue
    yield pytest.param(make, fields, extra, make.__name__.strip("_") in REAL_ACCUMULATORS,
                       id=case.id)


@pytest.mark.parametrize("make, fields, extra, real", list(_complex_cases()))
def test_a_real_nu_dtype_keeps_a_complex_leafs_layout(make, fields, extra, real):
  # As in the core optimizers: nu_dtype=float32 on a complex64 leaf gives the layout of
  # nu_dtype=None (a complex64 accumulator; float32 where the rule holds |g|^2 real) and
  # the same steps, their imaginary parts kept.
  params = {"w": jnp.array([1 + 2j, 0.5 - 1j, -0.3 + 0.1j], jnp.complex64)}
  grads = {"w": jnp.array([0.1 - 0.2j, 0.0, -0.4j], jnp.complex64)}

  def after_steps(tx):  # eager: four steps of a 3-entry leaf take less than compiling them
    state, p = tx.init(params), params
    for _ in range(4):
      updates, state = tx.update(grads, state, p, **extra)
      p = gtx.apply_updates(p, updates)
    return p["w"]

  got, want = after_steps(make(nu_dtype=jnp.float32)), after_steps(make())
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert np.abs(np.imag(got - params["w"])).max() > 1e-3  # the steps kept their Im
  state, default = make(nu_dtype=jnp.float32).init(params), make().init(params)
  for field in fields:
    dtype = gtx.tree_utils.tree_get(state, field)["w"].dtype
    assert dtype == gtx.tree_utils.tree_get(default, field)["w"].dtype, field
    assert dtype == (jnp.float32 if real else jnp.complex64), field


@pytest.mark.parametrize("make, fields, rtol, problem, extra", FLOAT16_CASES)
def test_nu_dtype_of_the_params_dtype_changes_nothing(make, fields, rtol, problem, extra):
  # On float32 params nu_dtype=float32 is nu_dtype=None: the same updates and states.
  del fields, rtol
  got = cached_run(make, problem, extra, jnp.float32, nu_dtype=jnp.float32)
  want = cached_run(make, problem, extra, jnp.float32)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    a, b = (jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
            for x in (a, b))
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------
# The parameter-free rules on float16 params (the FAQ's advice).


def _quadratic_run(tx, dtype, steps):
  """``tx`` on the quadratic sum(w^2) / 4, from FLOAT16_PARAMS: the final params and state."""
  update = jax.jit(lambda p, s: tx.update({"w": jnp.asarray(0.5, dtype) * p["w"]}, s, p))
  params = _as(FLOAT16_PARAMS, dtype)
  state = tx.init(params)
  for _ in range(steps):
    updates, state = update(params, state)
    params = gtx.apply_updates(params, updates)
  return np.asarray(params["w"], np.float32), state


def _mechanize_run(dtype, steps, **kwargs):
  """Mechanic around SGD on the quadratic, from FLOAT16_PARAMS."""
  return _quadratic_run(C.mechanize(gtx.sgd(0.1), **kwargs), dtype, steps)


def test_mechanize_on_float16_params_divides_by_its_scale_in_float32():
  # s starts at s_init = 1e-6, a float16 subnormal that XLA's CPU flushes to 0: dividing
  # by it in float16 made every step NaN from the first.
  w, state = _mechanize_run(jnp.float16, 5)
  assert np.all(np.isfinite(w)) and np.all(np.isfinite(state.s))
  # Its first steps, about s_init times SGD's, are below float16's spacing and leave the
  # params where they are. With s_init = 1e-2 they move as the float32 params do (0.9%
  # apart at most after 12 steps, each having moved by 3% to 11%), and both end near the
  # minimum. Not compared there: near 0, Mechanic's scale makes them circle it, and where
  # each is at step 300 varies with XLA's version and the CPU (0.015 and -0.015 on one).
  np.testing.assert_array_equal(w, FLOAT16_PARAMS["w"])
  got, _ = _mechanize_run(jnp.float16, 12, s_init=1e-2)
  want, _ = _mechanize_run(jnp.float32, 12, s_init=1e-2)
  assert np.all(np.abs(want - FLOAT16_PARAMS["w"]) > 0.02)  # moved
  np.testing.assert_allclose(got, want, rtol=2e-2)
  for dtype in (jnp.float16, jnp.float32):
    assert np.abs(_mechanize_run(dtype, 300, s_init=1e-2)[0]).max() < 0.05, dtype


def _distance_run(make, dtype, steps=100):
  """``make()`` on the quadratic, from FLOAT16_PARAMS: the final params."""
  return _quadratic_run(make(), dtype, steps)[0]


@pytest.mark.parametrize("default, advised", [
    (lambda: C.dog(), lambda: C.dog(init_step=("heuristic", 1e-2))),
    (lambda: C.prodigy(), lambda: C.prodigy(estim_lr0=1e-3)),
], ids=["dog", "prodigy"])
def test_distance_based_steps_on_bfloat16_params_need_the_faqs_first_estimate(default, advised):
  # DoG and Prodigy grow their step with the distance the params have moved; their first
  # steps, about 1e-6 of the params from the defaults, are below bfloat16's spacing: the
  # params never move (float32 ones reach 0.015 of the optimum). The FAQ's values move them.
  np.testing.assert_array_equal(_distance_run(default, jnp.bfloat16), FLOAT16_PARAMS["w"])
  assert np.abs(_distance_run(default, jnp.float32)).max() < 0.05
  assert np.abs(_distance_run(advised, jnp.bfloat16)).max() < 0.05


@pytest.mark.parametrize("eps, finite", [(1e-8, False), (1e-4, True)])
def test_cocob_on_float16_params_needs_an_eps_float16_holds(eps, finite):
  # COCOB's L starts at eps: 1e-8 is 0 in float16, and an entry whose gradients have all
  # been 0 steps by 0 / 0 = NaN. eps = 1e-4 keeps it where it is.
  tx = C.cocob(eps=eps)
  grads, params = _as(FLOAT16_GRADS, jnp.float16), _as(FLOAT16_PARAMS, jnp.float16)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  zero = FLOAT16_GRADS["w"] == 0
  assert np.all(np.isfinite(np.asarray(updates["w"])[~zero]))
  if finite:
    np.testing.assert_array_equal(np.asarray(updates["w"])[zero], 0)
  else:
    assert np.all(np.isnan(np.asarray(updates["w"])[zero]))
