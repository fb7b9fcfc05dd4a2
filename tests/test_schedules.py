"""Tests for gradtx.schedules.

Every schedule is checked against a closed form written here in plain Python
(at every step of a range that covers its boundaries and runs past its end),
against optax's schedule of the same name, jitted with a traced count, and
under float64. Bad arguments are a table of (factory, error regex).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gradtx as gtx
from gradtx import schedules

optax = pytest.importorskip("optax")

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def _strict_jax():
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    yield


# ------------------------------------------------ closed forms, plain Python


def ref_polynomial(t, init_value, end_value, power, transition_steps,
                   transition_begin=0):
  if transition_steps == 0:
    return init_value
  s = min(max(t - transition_begin, 0), transition_steps)
  frac = 1 - s / transition_steps
  return (init_value - end_value) * frac ** power + end_value


def ref_linear(t, init_value, end_value, transition_steps, transition_begin=0):
  return ref_polynomial(t, init_value, end_value, 1, transition_steps,
                        transition_begin)


def ref_exponential(t, init_value, transition_steps, decay_rate,
                    transition_begin=0, staircase=False, end_value=None):
  elapsed = t - transition_begin
  if elapsed <= 0:
    value = init_value
  else:
    p = elapsed // transition_steps if staircase else elapsed / transition_steps
    value = init_value * decay_rate ** p
  if end_value is not None:
    value = max(value, end_value) if decay_rate < 1 else min(value, end_value)
  return value


def ref_cosine(t, init_value, decay_steps, alpha=0.0, exponent=1.0):
  s = min(t, decay_steps)
  c = 0.5 * (1 + math.cos(math.pi * s / decay_steps))
  return init_value * ((1 - alpha) * c ** exponent + alpha)


def ref_warmup_cosine(t, init_value, peak_value, warmup_steps, decay_steps,
                      end_value=0.0, exponent=1.0):
  if t < warmup_steps:
    return init_value + (peak_value - init_value) * t / warmup_steps
  length = decay_steps - warmup_steps
  s = min(t - warmup_steps, length)
  c = 0.5 * (1 + math.cos(math.pi * s / length))
  return end_value + (peak_value - end_value) * c ** exponent


def ref_warmup_constant(t, init_value, peak_value, warmup_steps):
  if t < warmup_steps:
    return init_value + (peak_value - init_value) * t / warmup_steps
  return peak_value


def ref_warmup_exponential(t, init_value, peak_value, warmup_steps,
                           transition_steps, decay_rate, transition_begin=0,
                           staircase=False, end_value=None):
  if t < warmup_steps:
    return init_value + (peak_value - init_value) * t / warmup_steps
  return ref_exponential(t - warmup_steps, peak_value, transition_steps,
                         decay_rate, transition_begin, staircase, end_value)


def ref_piecewise_constant(t, init_value, boundaries_and_scales=None):
  value = init_value
  for boundary, scale in sorted((boundaries_and_scales or {}).items()):
    if t >= boundary:
      value *= scale
  return value


def ref_piecewise_interpolate(t, interpolate_type, init_value,
                              boundaries_and_scales=None):
  points, value = [(0, init_value)], init_value
  for boundary, scale in sorted((boundaries_and_scales or {}).items()):
    value *= scale
    points.append((boundary, value))
  for (b0, v0), (b1, v1) in zip(points, points[1:]):
    if b0 <= t < b1:
      u = (t - b0) / (b1 - b0)
      if interpolate_type == "linear":
        return v0 + (v1 - v0) * u
      return v1 + (v0 - v1) * (1 + math.cos(math.pi * u)) / 2
  return points[-1][1]


def ref_join(t, fns, boundaries):
  starts = [0, *boundaries]
  k = max(i for i, start in enumerate(starts) if t >= start)
  return fns[k](t - starts[k])


def ref_sgdr(t, cycles):
  start = 0
  for k, cycle in enumerate(cycles):
    if t < start + cycle["decay_steps"] or k == len(cycles) - 1:
      return ref_warmup_cosine(t - start, **cycle)
    start += cycle["decay_steps"]


def _cos_interp(x, y, u):
  return y + (x - y) * (1 + math.cos(math.pi * u)) / 2


def _lin_interp(x, y, u):
  return x + (y - x) * u


def ref_cosine_onecycle(t, transition_steps, peak_value, pct_start=0.3,
                        div_factor=25.0, final_div_factor=1e4):
  a = int(pct_start * transition_steps)
  v0 = peak_value / div_factor
  v_end = v0 / final_div_factor
  if t < a:
    return _cos_interp(v0, peak_value, t / a)
  if t < transition_steps:
    return _cos_interp(peak_value, v_end, (t - a) / (transition_steps - a))
  return v_end


def ref_linear_onecycle(t, transition_steps, peak_value, pct_start=0.3,
                        pct_final=0.85, div_factor=25.0, final_div_factor=1e4):
  a, b = int(pct_start * transition_steps), int(pct_final * transition_steps)
  v0 = peak_value / div_factor
  if t < a:
    return _lin_interp(v0, peak_value, t / a)
  if t < b:
    return _lin_interp(peak_value, v0, (t - a) / (b - a))
  if t < transition_steps:
    return _lin_interp(v0, v0 / final_div_factor,
                       (t - b) / (transition_steps - b))
  return v0 / final_div_factor


# ------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
  """A schedule built the same way from gradtx and optax, and its reference."""
  id: str
  build: Callable[[Any], Callable]  # gradtx.schedules or optax -> schedule
  ref: Callable[[int], float]
  key_steps: tuple[int, ...]  # boundaries, warmup ends, ... checked exactly


def _case(id, name, kwargs, ref, key_steps):
  return Case(id, lambda m: getattr(m, name)(**kwargs),
              lambda t: ref(t, **kwargs), key_steps)


_SGDR_CYCLES = [
    dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10),
    dict(init_value=0.5, peak_value=0.8, warmup_steps=0, decay_steps=6,
         end_value=0.1, exponent=2.0),
    dict(init_value=0.2, peak_value=0.4, warmup_steps=3, decay_steps=8),
]

CASES = [
    Case("constant", lambda m: m.constant_schedule(0.3), lambda t: 0.3,
         (0, 1)),
    _case("linear", "linear_schedule",
          dict(init_value=1.0, end_value=0.1, transition_steps=10,
               transition_begin=5), ref_linear, (0, 4, 5, 6, 14, 15, 16)),
    _case("linear-up", "linear_schedule",
          dict(init_value=0.0, end_value=2.0, transition_steps=7), ref_linear,
          (0, 6, 7, 8)),
    _case("linear-zero-steps", "linear_schedule",
          dict(init_value=2.0, end_value=0.5, transition_steps=0), ref_linear,
          (0, 1)),
    _case("polynomial", "polynomial_schedule",
          dict(init_value=1.0, end_value=0.01, power=2, transition_steps=20,
               transition_begin=5), ref_polynomial, (0, 5, 6, 24, 25, 26)),
    _case("polynomial-sqrt", "polynomial_schedule",
          dict(init_value=0.5, end_value=0.0, power=0.5, transition_steps=16),
          ref_polynomial, (0, 15, 16)),
    _case("exponential", "exponential_decay",
          dict(init_value=1.0, transition_steps=10, decay_rate=0.5),
          ref_exponential, (0, 1, 10, 20)),
    _case("exponential-staircase", "exponential_decay",
          dict(init_value=2.0, transition_steps=4, decay_rate=0.5,
               transition_begin=3, staircase=True, end_value=0.3),
          ref_exponential, (0, 3, 4, 6, 7, 8, 11, 15)),
    _case("exponential-growth", "exponential_decay",
          dict(init_value=0.1, transition_steps=5, decay_rate=2.0,
               end_value=1.0), ref_exponential, (0, 5, 16, 17)),
    _case("cosine", "cosine_decay_schedule",
          dict(init_value=1.0, decay_steps=20), ref_cosine, (0, 10, 20, 21)),
    _case("cosine-alpha-exponent", "cosine_decay_schedule",
          dict(init_value=0.5, decay_steps=13, alpha=0.1, exponent=2.0),
          ref_cosine, (0, 12, 13, 14)),
    _case("warmup-cosine", "warmup_cosine_decay_schedule",
          dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=25,
               end_value=0.1), ref_warmup_cosine, (0, 4, 5, 6, 24, 25, 26)),
    _case("warmup-cosine-exponent", "warmup_cosine_decay_schedule",
          dict(init_value=0.1, peak_value=0.6, warmup_steps=3, decay_steps=12,
               exponent=3.0), ref_warmup_cosine, (0, 3, 12)),
    _case("warmup-cosine-no-warmup", "warmup_cosine_decay_schedule",
          dict(init_value=0.0, peak_value=1.0, warmup_steps=0, decay_steps=10),
          ref_warmup_cosine, (0, 1, 9, 10, 11)),
    _case("warmup-constant", "warmup_constant_schedule",
          dict(init_value=0.1, peak_value=1.0, warmup_steps=5),
          ref_warmup_constant, (0, 1, 4, 5, 6, 63)),
    _case("warmup-constant-down", "warmup_constant_schedule",
          dict(init_value=1.0, peak_value=0.2, warmup_steps=7),
          ref_warmup_constant, (0, 6, 7, 8)),
    _case("warmup-constant-one-step", "warmup_constant_schedule",
          dict(init_value=0.0, peak_value=0.5, warmup_steps=1),
          ref_warmup_constant, (0, 1, 2)),
    _case("warmup-exponential", "warmup_exponential_decay_schedule",
          dict(init_value=0.0, peak_value=1.0, warmup_steps=5,
               transition_steps=4, decay_rate=0.5, transition_begin=2,
               end_value=0.2), ref_warmup_exponential, (0, 4, 5, 7, 8, 14)),
    _case("warmup-exponential-staircase", "warmup_exponential_decay_schedule",
          dict(init_value=0.2, peak_value=1.0, warmup_steps=4,
               transition_steps=3, decay_rate=0.7, staircase=True),
          ref_warmup_exponential, (0, 3, 4, 6, 7, 10)),
    _case("piecewise-constant", "piecewise_constant_schedule",
          dict(init_value=1.0, boundaries_and_scales={10: 0.1, 5: 0.5,
                                                      15: 2.0}),
          ref_piecewise_constant, (0, 4, 5, 9, 10, 14, 15, 16)),
    _case("piecewise-constant-zero-scale", "piecewise_constant_schedule",
          dict(init_value=0.3, boundaries_and_scales={0: 2.0, 3: 0.0}),
          ref_piecewise_constant, (0, 2, 3)),
    _case("piecewise-constant-none", "piecewise_constant_schedule",
          dict(init_value=0.7), ref_piecewise_constant, (0,)),
    _case("piecewise-linear", "piecewise_interpolate_schedule",
          dict(interpolate_type="linear", init_value=1.0,
               boundaries_and_scales={4: 0.1, 8: 0.01}),
          ref_piecewise_interpolate, (0, 3, 4, 5, 7, 8, 9)),
    _case("piecewise-cosine", "piecewise_interpolate_schedule",
          dict(interpolate_type="cosine", init_value=0.5,
               boundaries_and_scales={0: 2.0, 5: 0.5, 11: 3.0}),
          ref_piecewise_interpolate, (0, 4, 5, 6, 10, 11, 12)),
    _case("piecewise-none", "piecewise_interpolate_schedule",
          dict(interpolate_type="linear", init_value=0.4),
          ref_piecewise_interpolate, (0,)),
    Case("join",
         lambda m: m.join_schedules(
             [m.constant_schedule(1.0), m.linear_schedule(1.0, 0.0, 10),
              m.cosine_decay_schedule(0.5, 5)], [5, 12]),
         lambda t: ref_join(t, [lambda s: 1.0,
                                lambda s: ref_linear(s, 1.0, 0.0, 10),
                                lambda s: ref_cosine(s, 0.5, 5)], [5, 12]),
         (0, 4, 5, 6, 11, 12, 13, 17, 18)),
    Case("sgdr", lambda m: m.sgdr_schedule(_SGDR_CYCLES),
         lambda t: ref_sgdr(t, _SGDR_CYCLES), (0, 1, 2, 9, 10, 11, 15, 16, 19,
                                               24, 25)),
    _case("cosine-onecycle", "cosine_onecycle_schedule",
          dict(transition_steps=20, peak_value=1.0), ref_cosine_onecycle,
          (0, 5, 6, 7, 19, 20, 21)),
    _case("cosine-onecycle-args", "cosine_onecycle_schedule",
          dict(transition_steps=30, peak_value=0.2, pct_start=0.5,
               div_factor=10.0, final_div_factor=100.0), ref_cosine_onecycle,
          (0, 14, 15, 16, 29, 30)),
    _case("linear-onecycle", "linear_onecycle_schedule",
          dict(transition_steps=20, peak_value=1.0), ref_linear_onecycle,
          (0, 5, 6, 7, 16, 17, 18, 19, 20, 21)),
    _case("linear-onecycle-args", "linear_onecycle_schedule",
          dict(transition_steps=40, peak_value=0.2, pct_start=0.25,
               pct_final=0.5, div_factor=10.0, final_div_factor=100.0),
          ref_linear_onecycle, (0, 9, 10, 11, 19, 20, 21, 39, 40)),
]


# Every case is checked at steps 0..63 (past every case's last boundary). One
# shape for all cases lets eager JAX reuse its compiled kernels across cases.
STEPS = list(range(64))
assert all(max(case.key_steps) < len(STEPS) for case in CASES)


def _close(actual, expected, rtol=1e-5, atol=1e-6):
  np.testing.assert_allclose(np.asarray(actual, np.float64),
                             np.asarray(expected, np.float64),
                             rtol=rtol, atol=atol)


def _on_all_steps(sched, dtype=jnp.int32):
  """The schedule at every step of STEPS, through vmap (a traced count)."""
  return jax.vmap(sched)(jnp.asarray(STEPS, dtype))


# ------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_closed_form(case):
  sched = case.build(schedules)
  for t in case.key_steps:  # eagerly, with a Python int count
    value = sched(t)
    assert isinstance(value, jax.Array) and value.shape == ()
    assert value.dtype == jnp.float32, (case.id, t, value.dtype)
    _close(value, case.ref(t))
  _close(_on_all_steps(sched), [case.ref(t) for t in STEPS])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_optax(case):
  with jax.numpy_dtype_promotion("standard"):  # optax is not strict-clean
    # Compiled: optax's piecewise schedules are slow to run op by op.
    expected = jax.jit(jax.vmap(case.build(optax)))(
        jnp.asarray(STEPS, jnp.int32))
  _close(_on_all_steps(case.build(schedules)), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_unsigned_count(case):
  # An unsigned count wrapped around below a step (uint32(4) - 5 is 2**32 - 1): a phase
  # that begins at step 5 gave its end value before it, as optax's does.
  sched = case.build(schedules)
  _close(_on_all_steps(sched, jnp.uint32), [case.ref(t) for t in STEPS])
  _close(_on_all_steps(sched, jnp.uint8), [case.ref(t) for t in STEPS])
  # Past int32's range it saturates, as gradtx's counters do.
  _close(sched(jnp.asarray(2**32 - 1, jnp.uint32)), sched(jnp.asarray(2**31 - 1, jnp.int32)))


# One case per public schedule: compiling is the slow part of this file.
_ONE_PER_SCHEDULE = [case for case in CASES if case.id in {
    "constant", "linear", "polynomial", "exponential-staircase", "cosine",
    "warmup-cosine", "warmup-constant", "warmup-exponential", "piecewise-constant",
    "piecewise-cosine", "join", "sgdr", "cosine-onecycle", "linear-onecycle"}]


@pytest.mark.parametrize("case", _ONE_PER_SCHEDULE, ids=lambda c: c.id)
def test_jit_with_traced_count(case):
  sched = case.build(schedules)
  jitted = jax.jit(sched)
  for t in case.key_steps:
    value = jitted(jnp.asarray(t, jnp.int32))
    assert value.shape == () and value.dtype == jnp.float32
    _close(value, case.ref(t))
  assert jitted._cache_size() == 1  # one trace serves every count


@pytest.mark.parametrize("steps", [7, 41])
def test_fractional_power_reaches_the_end_value_under_jit(steps):
  # XLA turns 1 - count / T into 1 - count * float32(1/T), which misses 0 at
  # count = T: below 0 for T = 7 ((1 - frac) ** 0.1 was NaN from the end of the
  # transition on), above it for T = 41 (6e-8 ** 0.1: 0.19 instead of 0.01).
  sched = jax.jit(schedules.polynomial_schedule(1.0, 0.01, 0.1, steps))
  for t in (0, 1, steps - 1, steps, steps + 1, 1000):
    _close(sched(jnp.asarray(t, jnp.int32)), ref_polynomial(t, 1.0, 0.01, 0.1, steps))


@pytest.mark.parametrize("steps", [1_614_507_167, 1_771_046_675, 2**31 - 1])
def test_fractional_power_reaches_the_end_value_past_2_to_the_30_steps(steps):
  # The end test was 2 * elapsed < steps, which overflows int32 from 2**30 steps on: the
  # first half's elapsed / steps was taken at the end, and missed 0 (it gave 2.4e-4).
  sched = jax.jit(schedules.polynomial_schedule(1.0, 0.0, 0.5, steps))
  assert float(sched(jnp.asarray(steps, jnp.int32))) == 0.0
  _close(sched(jnp.asarray(steps // 4, jnp.int32)), math.sqrt(1 - (steps // 4) / steps))


# A step past int32's range, such as a placeholder boundary of 10**10, met an int32 count
# (gradtx's counter is int32 also under x64): under x64 JAX wrapped it, so each of these
# gave its later value from step 0; without x64 it raised OverflowError naming nothing.
_PAST_INT32 = 10**10
_FAR_STEPS = [
    (lambda: S.linear_schedule(1.0, 0.0, _PAST_INT32),
     lambda t: ref_linear(t, 1.0, 0.0, _PAST_INT32)),
    (lambda: S.linear_schedule(1.0, 0.0, 10, _PAST_INT32),
     lambda t: ref_linear(t, 1.0, 0.0, 10, _PAST_INT32)),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 1000, _PAST_INT32),
     lambda t: ref_warmup_cosine(t, 0.0, 1.0, 1000, _PAST_INT32)),
    (lambda: S.exponential_decay(1.0, 10, 0.5, _PAST_INT32),
     lambda t: ref_exponential(t, 1.0, 10, 0.5, _PAST_INT32)),
    (lambda: S.exponential_decay(1.0, _PAST_INT32, 0.5, staircase=True),
     lambda t: ref_exponential(t, 1.0, _PAST_INT32, 0.5, staircase=True)),
    (lambda: S.cosine_decay_schedule(1.0, _PAST_INT32), lambda t: ref_cosine(t, 1.0, _PAST_INT32)),
    (lambda: S.piecewise_constant_schedule(1.0, {5: 0.5, _PAST_INT32: 0.1}),
     lambda t: ref_piecewise_constant(t, 1.0, {5: 0.5, _PAST_INT32: 0.1})),
    (lambda: S.piecewise_interpolate_schedule("linear", 1.0, {_PAST_INT32: 0.1}),
     lambda t: ref_piecewise_interpolate(t, "linear", 1.0, {_PAST_INT32: 0.1})),
    (lambda: S.join_schedules([S.constant_schedule(1.0), S.constant_schedule(2.0)],
                              [_PAST_INT32]), lambda t: 1.0),
]


# Those whose transition is a fraction of its length (linear, polynomial, cosine) take it
# in floating point where an int32 count never reaches its end, as optax's
# cosine_decay_schedule does without x64 (decay_steps=10**10 raised OverflowError here).
_FAR_STEPS_TAKEN_WITHOUT_X64 = (0, 1, 2, 5)


@pytest.mark.parametrize("index", range(len(_FAR_STEPS)))
def test_steps_past_int32_with_an_int32_count(index):
  build, ref = _FAR_STEPS[index]
  top = np.iinfo(np.int32).max
  with jax.enable_x64(True):
    sched = build()
    for t in (0, 7, top):
      for value in (sched(jnp.asarray(t, jnp.int32)), jax.jit(sched)(jnp.asarray(t, jnp.int32))):
        _close(value, ref(t), rtol=1e-12, atol=1e-14)
  if index in _FAR_STEPS_TAKEN_WITHOUT_X64:
    sched = build()
    for t in (0, 7, 10**9, top):
      for value in (sched(jnp.asarray(t, jnp.int32)), jax.jit(sched)(jnp.asarray(t, jnp.int32))):
        assert value.dtype == jnp.float32
        _close(value, ref(t))
    return
  with pytest.raises(OverflowError, match=r"^schedule: a step of 10000000000 is beyond the "
                     r"largest int32 count, 2147483647; give steps up to that, or enable x64"):
    build()(jnp.asarray(7, jnp.int32))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float64(case):
  with jax.enable_x64(True):
    values = _on_all_steps(case.build(schedules), jnp.int64)
    assert values.dtype == jnp.float64
    _close(values, [case.ref(t) for t in STEPS], rtol=1e-12, atol=1e-14)


def test_float64_scalar_count_and_jit():
  with jax.enable_x64(True):
    sched = schedules.warmup_cosine_decay_schedule(0.0, 1.0, 5, 25, 1e-3)
    for value in (sched(12), jax.jit(sched)(jnp.asarray(12, jnp.int64))):
      assert value.dtype == jnp.float64
      _close(value, ref_warmup_cosine(12, 0.0, 1.0, 5, 25, 1e-3), rtol=1e-14,
             atol=0)


_FROM_ARRAY_VALUE = {
    "linear": lambda v: schedules.linear_schedule(v, 0.0, 10),
    "exponential": lambda v: schedules.exponential_decay(v, 10, 0.5),
    "warmup-cosine":
        lambda v: schedules.warmup_cosine_decay_schedule(0.0, v, 3, 10),
    "cosine-onecycle": lambda v: schedules.cosine_onecycle_schedule(10, v),
    "warmup-constant": lambda v: schedules.warmup_constant_schedule(0.0, v, 3),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16],
                         ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", sorted(_FROM_ARRAY_VALUE))
def test_array_value_keeps_its_dtype_under_x64(name, dtype):
  with jax.enable_x64(True):
    sched = _FROM_ARRAY_VALUE[name](jnp.asarray(1.0, dtype))
    assert sched(jnp.asarray(4, jnp.int64)).dtype == dtype


def test_traced_values_under_jit():
  def value(peak, t):
    return schedules.warmup_cosine_decay_schedule(0.0, peak, 5, 20)(t)

  got = jax.jit(value)(jnp.asarray(2.0, jnp.float32),
                       jnp.asarray(10, jnp.int32))
  _close(got, ref_warmup_cosine(10, 0.0, 2.0, 5, 20))
  rate = jax.jit(
      lambda r, t: schedules.exponential_decay(1.0, 10, r, end_value=0.3)(t))
  _close(rate(jnp.asarray(0.5, jnp.float32), 20), 0.3)  # rate < 1: a floor
  _close(rate(jnp.asarray(2.0, jnp.float32), 10), 0.3)  # rate > 1: a ceiling


def test_integral_float_steps_are_accepted():
  sched = schedules.cosine_decay_schedule(1.0, decay_steps=1e2)
  _close(sched(50), ref_cosine(50, 1.0, 100))


def test_cosine_alpha_above_one_rises_as_in_optax():
  # alpha < 0 is refused (BAD_ARGUMENTS); above 1 the schedule rises, a use optax's own
  # warmup_cosine_decay_schedule makes of it (alpha = end_value / peak_value).
  sched = schedules.cosine_decay_schedule(1.0, 10, alpha=1.5)
  _close([sched(t) for t in (0, 5, 10, 11)], [1.0, 1.25, 1.5, 1.5])


def test_negative_count_is_step_zero():
  sched = schedules.piecewise_interpolate_schedule("linear", 1.0, {4: 0.5})
  _close(sched(-3), 1.0)


def test_warmup_constant_without_warmup_holds_the_peak():
  # Documented difference: optax (a linear schedule of 0 steps) holds init_value.
  sched = schedules.warmup_constant_schedule(0.1, 0.7, 0)
  for t in (0, 1, 100):
    value = sched(t)
    assert value.dtype == jnp.float32
    _close(value, ref_warmup_constant(t, 0.1, 0.7, 0))
  _close(_on_all_steps(sched), [0.7] * len(STEPS))
  with jax.enable_x64(True):
    assert schedules.warmup_constant_schedule(0.1, 0.7, 0)(3).dtype == jnp.float64


@settings(max_examples=30, deadline=None)
@given(warmup=st.integers(1, 40), t=st.integers(0, 100),
       init=st.sampled_from([0.0, 0.3, 2.0]), peak=st.sampled_from([1e-3, 0.5, 1.0]))
def test_warmup_constant_property(warmup, t, init, peak):
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    sched = schedules.warmup_constant_schedule(init, peak, warmup)
    _close(sched(t), ref_warmup_constant(t, init, peak, warmup))


def test_warmup_cosine_zero_peak_decays_to_end_value():
  # Documented difference: optax holds 0 after the warmup when peak_value=0.
  sched = schedules.warmup_cosine_decay_schedule(0.0, 0.0, 2, 12, end_value=0.5)
  _close([sched(t) for t in (2, 7, 12)], [0.0, 0.25, 0.5])


@settings(max_examples=30, deadline=None)
@given(warmup=st.integers(0, 20), length=st.integers(1, 50),
       t=st.integers(0, 100), exponent=st.sampled_from([0.5, 1.0, 2.0]))
def test_warmup_cosine_property(warmup, length, t, exponent):
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    sched = schedules.warmup_cosine_decay_schedule(
        0.1, 1.0, warmup, warmup + length, end_value=0.01, exponent=exponent)
    _close(sched(t), ref_warmup_cosine(t, 0.1, 1.0, warmup, warmup + length,
                                       0.01, exponent))


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(1, 30), begin=st.integers(0, 10),
       rate=st.sampled_from([0.3, 0.9, 1.5]), staircase=st.booleans(),
       t=st.integers(0, 100))
def test_exponential_property(steps, begin, rate, staircase, t):
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    sched = schedules.exponential_decay(1.0, steps, rate, begin, staircase,
                                        end_value=0.05 if rate < 1 else 20.0)
    _close(sched(t), ref_exponential(t, 1.0, steps, rate, begin, staircase,
                                     0.05 if rate < 1 else 20.0))


_CYCLE = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)
S = schedules

BAD_ARGUMENTS = [
    (lambda: S.linear_schedule(1.0, 0.0, -1),
     r"^linear_schedule: transition_steps must be >= 0, got -1$"),
    (lambda: S.linear_schedule(1.0, 0.0, 10, transition_begin=-2),
     r"^linear_schedule: transition_begin must be >= 0, got -2$"),
    (lambda: S.linear_schedule(1.0, 0.0, 2.5),
     r"^linear_schedule: transition_steps must be an integer >= 0, got 2.5$"),
    (lambda: S.linear_schedule(1.0, 0.0, "10"),
     r"^linear_schedule: transition_steps must be an integer >= 0, got '10'$"),
    (lambda: S.polynomial_schedule(1.0, 0.0, 0, 10),
     r"^polynomial_schedule: power must be > 0, got 0$"),
    (lambda: S.polynomial_schedule(1.0, 0.0, 1, -5),
     r"^polynomial_schedule: transition_steps must be >= 0, got -5$"),
    (lambda: S.exponential_decay(1.0, 0, 0.5),
     r"^exponential_decay: transition_steps must be > 0, got 0$"),
    (lambda: S.exponential_decay(1.0, 10, 0.0),
     r"^exponential_decay: decay_rate must be > 0, got 0.0$"),
    (lambda: S.exponential_decay(1.0, 10, -0.5),
     r"^exponential_decay: decay_rate must be > 0, got -0.5$"),
    # inf was let through an argument's range: a decay_rate of inf gave inf from step 1,
    # a div_factor of inf NaN at every step, an interpolated scale of inf NaN at step 0.
    (lambda: S.exponential_decay(1.0, 10, math.inf),
     r"^exponential_decay: decay_rate must be a finite number > 0, got inf$"),
    (lambda: S.cosine_onecycle_schedule(100, 1.0, div_factor=math.inf),
     r"^cosine_onecycle_schedule: div_factor must be a finite number > 0, got inf$"),
    (lambda: S.piecewise_interpolate_schedule("linear", 1.0, {5: math.inf}),
     r"^piecewise_interpolate_schedule: boundaries_and_scales\[5\] must be a finite number "
     r">= 0, got inf$"),
    (lambda: S.exponential_decay(1.0, 10, 0.5, transition_begin=-1),
     r"^exponential_decay: transition_begin must be >= 0, got -1$"),
    (lambda: S.cosine_decay_schedule(1.0, 0),
     r"^cosine_decay_schedule: decay_steps must be > 0, got 0$"),
    # alpha < 0 ended below 0 (-0.5 for alpha=-0.5), a step up the loss; NaN was NaN.
    (lambda: S.cosine_decay_schedule(1.0, 10, alpha=-0.5),
     r"^cosine_decay_schedule: alpha must be >= 0, got -0.5$"),
    (lambda: S.cosine_decay_schedule(1.0, 10, alpha=math.nan),
     r"^cosine_decay_schedule: alpha must be a number, got nan$"),
    (lambda: S.cosine_decay_schedule(1.0, 10, alpha=math.inf),
     r"^cosine_decay_schedule: alpha must be a finite number >= 0, got inf$"),
    (lambda: S.cosine_decay_schedule(1.0, 10, exponent=-1.0),
     r"^cosine_decay_schedule: exponent must be > 0, got -1.0$"),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 0, 0),
     r"^warmup_cosine_decay_schedule: decay_steps must be > 0, got 0$"),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10),
     r"^warmup_cosine_decay_schedule: warmup_steps must be >= 0, got -1$"),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10),
     r"^warmup_cosine_decay_schedule: decay_steps must be > warmup_steps "
     r"\(10\), got 10$"),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 1, 10, exponent=0.0),
     r"^warmup_cosine_decay_schedule: exponent must be > 0, got 0.0$"),
    (lambda: S.warmup_constant_schedule(0.0, 1.0, -1),
     r"^warmup_constant_schedule: warmup_steps must be >= 0, got -1$"),
    (lambda: S.warmup_constant_schedule(0.0, 1.0, 2.5),
     r"^warmup_constant_schedule: warmup_steps must be an integer >= 0, "
     r"got 2.5$"),
    (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 5, 0, 0.5),
     r"^warmup_exponential_decay_schedule: transition_steps must be > 0, "
     r"got 0$"),
    (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 5, 10, 0.0),
     r"^warmup_exponential_decay_schedule: decay_rate must be > 0, got 0.0$"),
    (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, -5, 10, 0.5),
     r"^warmup_exponential_decay_schedule: warmup_steps must be >= 0, "
     r"got -5$"),
    (lambda: S.piecewise_constant_schedule(1.0, {5: -0.1}),
     r"^piecewise_constant_schedule: boundaries_and_scales\[5\] must be >= 0, "
     r"got -0.1$"),
    (lambda: S.piecewise_constant_schedule(1.0, {-5: 0.1}),
     r"^piecewise_constant_schedule: boundaries_and_scales key must be >= 0, "
     r"got -5$"),
    # Pairs in a list failed with "'list' object has no attribute 'items'".
    (lambda: S.piecewise_constant_schedule(1.0, [(5, 0.1)]),
     r"^piecewise_constant_schedule: boundaries_and_scales must be a mapping \{step: scale\} "
     r"or None, got \[\(5, 0.1\)\]$"),
    (lambda: S.piecewise_interpolate_schedule("linear", 1.0, [(5, 0.1)]),
     r"^piecewise_interpolate_schedule: boundaries_and_scales must be a mapping"),
    (lambda: S.piecewise_interpolate_schedule("quadratic", 1.0, {5: 0.1}),
     r"^piecewise_interpolate_schedule: interpolate_type must be 'linear' or "
     r"'cosine', got 'quadratic'$"),
    (lambda: S.piecewise_interpolate_schedule(["linear"], 1.0, {5: 0.1}),
     r"^piecewise_interpolate_schedule: interpolate_type must be 'linear' or "
     r"'cosine', got \['linear'\]$"),
    (lambda: S.piecewise_interpolate_schedule("linear", 1.0, {5: -1.0}),
     r"^piecewise_interpolate_schedule: boundaries_and_scales\[5\] must be "
     r">= 0, got -1.0$"),
    (lambda: S.join_schedules([], []),
     r"^join_schedules: schedules must be a non-empty sequence"),
    (lambda: S.join_schedules([S.constant_schedule(1.0)] * 2, [1, 2]),
     r"^join_schedules: boundaries must be 1 steps, one fewer than the "
     r"schedules, got \(1, 2\)$"),
    (lambda: S.join_schedules([S.constant_schedule(1.0)] * 3, [5, 2]),
     r"^join_schedules: boundaries must be in non-decreasing order, "
     r"got \(5, 2\)$"),
    # One boundary not in a list failed with "'int' object is not iterable".
    (lambda: S.join_schedules([S.constant_schedule(1.0)] * 2, 5),
     r"^join_schedules: boundaries must be a sequence of steps, got 5$"),
    (lambda: S.join_schedules([S.constant_schedule(1.0)] * 2, [-1]),
     r"^join_schedules: boundary must be >= 0, got -1$"),
    # A value in a schedule's place failed at the first step ("'float' object is not
    # callable"); one schedule in the list's place, with "'_Named' object is not iterable".
    (lambda: S.join_schedules([0.1, S.constant_schedule(1.0)], [5]),
     r"^join_schedules: schedules\[0\] must be a schedule, a function of the count "
     r"\(constant_schedule\(value\) holds a value\), got 0.1$"),
    (lambda: S.join_schedules(S.constant_schedule(1.0), []),
     r"^join_schedules: schedules must be a non-empty sequence of schedules, got "
     r"constant_schedule\(value=1\)$"),
    (lambda: S.sgdr_schedule([]),
     r"^sgdr_schedule: cosine_kwargs must be non-empty"),
    (lambda: S.sgdr_schedule([_CYCLE, dict(_CYCLE, decay_steps=2)]),
     r"^sgdr_schedule \(cycle 1\): decay_steps must be > warmup_steps \(2\), "
     r"got 2$"),
    (lambda: S.sgdr_schedule([dict(_CYCLE, lr=1.0)]),
     r"^sgdr_schedule \(cycle 0\): unknown keys \['lr'\] and missing keys "
     r"\[\]"),
    (lambda: S.sgdr_schedule([{k: v for k, v in _CYCLE.items()
                               if k != "peak_value"}]),
     r"^sgdr_schedule \(cycle 0\): unknown keys \[\] and missing keys "
     r"\['peak_value'\]"),
    # One cycle's dict in the list's place: its keys were taken as cycles, and each
    # string's letters as keys ("unknown keys ['_', 'a', 'e', ...]").
    (lambda: S.sgdr_schedule(_CYCLE),
     r"^sgdr_schedule: cosine_kwargs must be a list of dicts, one per cycle, got \{'init_value'"),
    # A list in a number's place: Python's "unsupported operand type(s) for /: 'list' and
    # 'float'" or "int() argument must be ... not 'list'".
    (lambda: S.cosine_onecycle_schedule(100, [1.0, 2.0]),
     r"^cosine_onecycle_schedule: peak_value must be a number or an array, got \[1.0, 2.0\] "
     r"\(several values: pass jnp.asarray of them\)$"),
    (lambda: S.linear_onecycle_schedule(100, 1.0, pct_start=(0.3,)),
     r"^linear_onecycle_schedule: pct_start must be a number or an array, got \(0.3,\)"),
    # A number in a list's place: "'float' object is not iterable", naming nothing.
    (lambda: S.sgdr_schedule(1.0),
     r"^sgdr_schedule: cosine_kwargs must be a list of dicts, one per cycle, got 1.0$"),
    (lambda: S.join_schedules(1.0, []),
     r"^join_schedules: schedules must be a non-empty sequence of schedules, got 1.0$"),
    (lambda: S.sgdr_schedule([_CYCLE, 5]),
     r"^sgdr_schedule \(cycle 1\): the cycle must be a dict of warmup_cosine_decay_schedule's "
     r"arguments, got 5$"),
    (lambda: S.cosine_onecycle_schedule(0, 1.0),
     r"^cosine_onecycle_schedule: transition_steps must be > 0, got 0$"),
    (lambda: S.cosine_onecycle_schedule(100, 1.0, pct_start=1.0),
     r"^cosine_onecycle_schedule: pct_start must be in \[0, 1\), got 1.0$"),
    (lambda: S.cosine_onecycle_schedule(100, 1.0, div_factor=0.0),
     r"^cosine_onecycle_schedule: div_factor must be > 0, got 0.0$"),
    (lambda: S.cosine_onecycle_schedule(100, 1.0, final_div_factor=-1.0),
     r"^cosine_onecycle_schedule: final_div_factor must be > 0, got -1.0$"),
    (lambda: S.linear_onecycle_schedule(-3, 1.0),
     r"^linear_onecycle_schedule: transition_steps must be > 0, got -3$"),
    (lambda: S.linear_onecycle_schedule(100, 1.0, pct_start=0.5,
                                        pct_final=0.5),
     r"^linear_onecycle_schedule: pct_final must be in \(pct_start=0.5, 1\), "
     r"got 0.5$"),
    (lambda: S.linear_onecycle_schedule(100, 1.0, pct_final=1.0),
     r"^linear_onecycle_schedule: pct_final must be in \(pct_start=0.3, 1\), "
     r"got 1.0$"),
    (lambda: S.linear_onecycle_schedule(1, 1.0),
     r"^linear_onecycle_schedule: transition_steps must be large enough that "
     r"pct_start and pct_final fall on different steps \(both give step 0\), "
     r"got 1$"),
    # A value given as a string (PyYAML loads 1e-3 as '1e-3') was parsed by jnp.asarray:
    # decay_rate '0.5' decayed by 0.5 (optax raises); init_value '1e-3' failed at the
    # first step with numpy's "format number 1 of '1e-3' is not recognized".
    (lambda: S.exponential_decay(1.0, 10, "0.5"),
     r"^exponential_decay: decay_rate must be a number, got '0.5' \(convert it with "
     r"float\(\)\)$"),
    (lambda: S.cosine_decay_schedule("1e-3", 100),
     r"^cosine_decay_schedule: init_value must be a number, got '1e-3'"),
    (lambda: S.polynomial_schedule(1.0, 0.0, "2", 10),
     r"^polynomial_schedule: power must be a number, got '2'"),
    (lambda: S.cosine_decay_schedule(1.0, 100, alpha="0.1"),
     r"^cosine_decay_schedule: alpha must be a number, got '0.1'"),
    (lambda: S.piecewise_constant_schedule(1.0, {5: "0.5"}),
     r"^piecewise_constant_schedule: boundaries_and_scales\[5\] must be a number, "
     r"got '0.5'"),
    (lambda: S.sgdr_schedule([dict(_CYCLE, peak_value="1.0")]),
     r"^sgdr_schedule \(cycle 0\): peak_value must be a number, got '1.0'"),
    (lambda: S.cosine_onecycle_schedule(100, 1.0, div_factor="25"),
     r"^cosine_onecycle_schedule: div_factor must be a number, got '25'"),
    (lambda: S.linear_schedule(1.0, None, 10),
     r"^linear_schedule: end_value must be a number, got None$"),
    (lambda: S.exponential_decay(1.0, 10, 0.5, end_value="0.1"),
     r"^exponential_decay: end_value must be a number or None, got '0.1'"),
    # NaN was NaN at every step; complex failed at the first step in float().
    (lambda: S.cosine_decay_schedule(math.nan, 100),
     r"^cosine_decay_schedule: init_value must be a number, got nan$"),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 2, 10, end_value=np.array([0.1, np.nan])),
     r"^warmup_cosine_decay_schedule: end_value must be a number, got an array holding NaN$"),
    (lambda: S.exponential_decay(1.0, 10, 0.5, end_value=math.nan),
     r"^exponential_decay: end_value must be a number or None, got nan$"),
    (lambda: S.sgdr_schedule([dict(_CYCLE, init_value=math.nan)]),
     r"^sgdr_schedule \(cycle 0\): init_value must be a number, got nan$"),
    (lambda: S.constant_schedule(1.0 + 1j),
     r"^constant_schedule: value must be a real number, got \(1\+1j\)$"),
    (lambda: S.cosine_decay_schedule(1.0, 10, alpha=np.complex64(0.1)),
     r"^cosine_decay_schedule: alpha must be a real number"),
    (lambda: S.warmup_constant_schedule(0.0, True, 5),
     r"^warmup_constant_schedule: peak_value must be a number, got True$"),
]


@pytest.mark.parametrize("factory, pattern", BAD_ARGUMENTS,
                         ids=[p[1].split(":")[0].strip("^\\") + f"-{i}"
                              for i, p in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments(factory, pattern):
  with pytest.raises(ValueError, match=pattern):
    factory()


def test_every_public_schedule_is_tested():
  tested = {name for name in dir(schedules) if name.endswith(
      ("_schedule", "_decay", "_schedules"))}
  covered = {
      "constant_schedule", "linear_schedule", "polynomial_schedule",
      "exponential_decay", "cosine_decay_schedule",
      "warmup_constant_schedule", "warmup_cosine_decay_schedule",
      "warmup_exponential_decay_schedule", "piecewise_constant_schedule", "piecewise_interpolate_schedule",
      "join_schedules", "sgdr_schedule", "cosine_onecycle_schedule",
      "linear_onecycle_schedule"}
  assert tested == covered
  assert set(schedules.__all__) == covered
  # optax's type names resolve here too; they are gradtx's own (one page in the docs).
  assert schedules.Schedule is gtx.Schedule and schedules.ScalarOrSchedule is gtx.ScalarOrSchedule


def test_a_copied_schedule_is_equal_and_a_static_jit_argument_is_not_traced_again():
  # A copy (copy.deepcopy of a flax TrainState holding the schedule as static data, to
  # log the learning rate) compared unequal, so a jitted step taking it traced again;
  # optax's schedules are functions, which no copy copies.
  import copy  # pylint: disable=import-outside-toplevel
  schedule = schedules.warmup_cosine_decay_schedule(0.0, 1.0, 2, 10)
  traces = []

  def value(schedule, count):
    traces.append(None)
    return schedule(count)

  jitted = jax.jit(value, static_argnums=0)
  values = {}
  for name, copied in [("schedule", schedule), ("copy", copy.copy(schedule)),
                       ("deepcopy", copy.deepcopy(schedule))]:
    assert copied == schedule and hash(copied) == hash(schedule), name
    values[name] = jitted(copied, jnp.int32(1))
  assert len(traces) == 1
  for name in ("copy", "deepcopy"):
    np.testing.assert_array_equal(values[name], values["schedule"])
  np.testing.assert_array_equal(values["schedule"], np.float32(0.5))
  assert schedules.warmup_cosine_decay_schedule(0.0, 1.0, 2, 10) != schedule  # as optax's
