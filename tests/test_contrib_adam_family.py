"""gradtx.contrib's Adam family: ADOPT, AdEMAMix, simplified AdEMAMix, MADGRAD, ACProp.

Each rule runs 50 steps on the zoo's multi-leaf problem against a float64
numpy reference written from its paper (tests/reference_contrib_adam_family.py),
follows optax.contrib where the two agree (and shows where they differ on
purpose), converges on an ill-conditioned quadratic and on Rosenbrock, keeps
its hyperparameters in the state, raises on bad input naming the stage, and
runs packed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx
import reference_contrib_adam_family as RA
from zoo_harness import (ZooCase, all_finite, assert_packed_matches_tree, assert_trees_close,
                         bad_hyperparameters_test, check_converges,
                         check_zero_gradients_give_zero_updates, counting_jit, coupled_loss,
                         coupled_tree, decay, decay_mask, packed_params, reference_tests,
                         run_updates, train_both_modes)


def _half_root(count: Any) -> Any:
  """A clip bound of ADOPT's other than t^(1/4), for the gradtx side (int32 count)."""
  return 0.5 * jnp.sqrt(jnp.asarray(count).astype(jnp.result_type(float)))


# Schedules of b3 and alpha (AdEMAMix warms both up) and of a rate; gradtx's
# schedules take the reference's Python int count as well as an int32 array.
_B3 = gtx.schedules.linear_schedule(0.9, 0.999, 20)
_ALPHA = gtx.schedules.linear_schedule(0.0, 5.0, 30)
_ALPHA_SIMPLE = gtx.schedules.linear_schedule(0.0, 2.0, 25)
_RATE = gtx.schedules.exponential_decay(0.05, 10, 0.5)

CASES = [
    ZooCase("adopt", lambda: gtx.contrib.adopt(0.01), lambda: RA.adopt(0.01)),
    ZooCase("adopt-nesterov-unclipped",
            lambda: gtx.contrib.adopt(0.01, b2=0.99, nesterov=True, use_clipping=False),
            lambda: RA.adopt(0.01, b2=0.99, nesterov=True, use_clipping=False)),
    ZooCase("scale_by_adopt-clip-fn",
            lambda: gtx.contrib.scale_by_adopt(b1=0.8, b2=0.95, eps=1e-4, clip_value_fn=_half_root),
            lambda: RA.scale_by_adopt(b1=0.8, b2=0.95, eps=1e-4,
                                      clip_value_fn=lambda t: 0.5 * np.sqrt(t)), step=-0.05),
    ZooCase("ademamix", lambda: gtx.contrib.ademamix(0.01, b3=0.999, weight_decay=0.1,
                                                     mask=decay_mask),
            lambda: RA.ademamix(0.01, b3=0.999, weight_decay=0.1, mask=decay_mask)),
    ZooCase("ademamix-schedules", lambda: gtx.contrib.ademamix(0.01, b3=_B3, alpha=_ALPHA),
            lambda: RA.ademamix(0.01, b3=_B3, alpha=_ALPHA)),
    ZooCase("scale_by_ademamix-eps-root",
            lambda: gtx.contrib.scale_by_ademamix(0.8, 0.99, 0.95, 3.0, eps_root=1e-8),
            lambda: RA.scale_by_ademamix(0.8, 0.99, 0.95, 3.0, eps_root=1e-8), step=-0.01),
    ZooCase("simplified_ademamix",
            lambda: gtx.contrib.simplified_ademamix(0.002, alpha=2.0, weight_decay=0.1),
            lambda: RA.simplified_ademamix(0.002, alpha=2.0, weight_decay=0.1)),
    ZooCase("scale_by_simplified_ademamix-schedule",
            lambda: gtx.contrib.scale_by_simplified_ademamix(0.9, 0.99, _ALPHA_SIMPLE,
                                                             eps_root=1e-8),
            lambda: RA.scale_by_simplified_ademamix(0.9, 0.99, _ALPHA_SIMPLE, eps_root=1e-8),
            step=-0.005),
    ZooCase("madgrad", lambda: gtx.contrib.madgrad(0.05, weight_decay=1e-3),
            lambda: RA.madgrad(0.05, weight_decay=1e-3)),
    # MADGRAD's update (1 - beta)(x_0 - x - s / sigma) reads x itself, and a float32 x
    # of size 1 is known to ~6e-8: the tiny leaf's steps (~1e-7) are not. Weight decay
    # gives that leaf gradients the size of x, as in both madgrad cases.
    ZooCase("madgrad-schedule", lambda: gtx.contrib.madgrad(_RATE, momentum=0.5,
                                                            weight_decay=1e-3),
            lambda: RA.madgrad(_RATE, momentum=0.5, weight_decay=1e-3)),
    ZooCase("acprop", lambda: gtx.contrib.acprop(0.01, weight_decay=0.1, mask=decay_mask),
            lambda: RA.acprop(0.01, weight_decay=0.1, mask=decay_mask)),
    ZooCase("scale_by_acprop", lambda: gtx.contrib.scale_by_acprop(0.8, 0.99, 1e-8, 0.0),
            lambda: RA.scale_by_acprop(0.8, 0.99, 1e-8, 0.0), step=-0.01),
]


# On complex leaves (all but the scalar and the tiny leaf): moments of |g|^2, ADOPT's
# clip bounding a complex entry's modulus (its phase kept), MADGRAD's nu held real.
_COMPLEX_LEAVES = ("vector", "matrix", "cube", "zeros")
_BY_ID = {c.id: c for c in CASES}
CASES += [dataclasses.replace(_BY_ID[i], id=i + "-complex", complex_leaves=_COMPLEX_LEAVES)
          for i in ["adopt", "adopt-nesterov-unclipped", "ademamix", "simplified_ademamix",
                    "madgrad", "acprop"]]

test_float32_jit, test_float64_nojit, test_float32_nojit_and_float64_jit = reference_tests(
    CASES, ["adopt", "ademamix-schedules", "simplified_ademamix", "madgrad", "acprop"])


@pytest.mark.parametrize("nu_dtype, want", [(None, jnp.float32), (jnp.float64, jnp.float64)])
def test_madgrad_holds_the_sum_of_squares_of_a_complex_leaf_real(nu_dtype, want):
  with jax.enable_x64(True):
    params = {"z": jnp.asarray([1 + 2j, -0.5j], jnp.complex64), "x": jnp.ones(2, jnp.float32)}
    tx = gtx.contrib.scale_by_madgrad(0.1, nu_dtype=nu_dtype)
    state = tx.init(params)
    assert {k: v.dtype for k, v in state.grad_sum_sq.items()} == {"z": want, "x": want}
    _, state = tx.update(params, state, params)
    # lambda_0 |g|^2 with lambda_0 = lr + eps
    np.testing.assert_allclose(state.grad_sum_sq["z"], (0.1 + 1e-6) * np.array([5.0, 0.25]),
                               rtol=1e-6)


# ----------------------------------------------------------------------------
# Against optax.contrib.


OPTAX_PAIRS = [
    ("adopt", lambda m: m.adopt(0.05), 30),
    ("adopt-nesterov", lambda m: m.adopt(0.05, b2=0.99, nesterov=True), 30),
    ("adopt-unclipped", lambda m: m.adopt(0.05, use_clipping=False), 30),
    ("ademamix", lambda m: m.ademamix(0.02, b3=0.999, weight_decay=0.1), 30),
    ("ademamix-schedules", lambda m: m.ademamix(0.02, b3=_B3, alpha=_ALPHA), 30),
    ("simplified_ademamix", lambda m: m.simplified_ademamix(0.002, b1=0.9, alpha=_ALPHA_SIMPLE,
                                                            weight_decay=0.1), 30),
    ("madgrad", lambda m: m.madgrad(0.05, weight_decay=1e-2), 30),
    ("madgrad-schedule", lambda m: m.madgrad(_RATE, momentum=0.5), 30),
]


@pytest.mark.parametrize("make, steps", [p[1:] for p in OPTAX_PAIRS], ids=[p[0] for p in OPTAX_PAIRS])
def test_follows_optax(make, steps):
  params = coupled_tree()
  ours = run_updates(make(gtx.contrib), params, steps, gtx.apply_updates)
  with jax.numpy_dtype_promotion("standard"):
    theirs = run_updates(make(optax.contrib), params, steps, optax.apply_updates)
  assert np.abs(np.asarray(ours["w"][-1])).max() > 0
  # MADGRAD's update is x_{k+1} - x_k: optax forms it by cancellation, hence the atol.
  assert_trees_close(ours, theirs, atol=1e-6)


def test_acprop_centres_with_the_new_mean_where_optax_uses_the_old_one():
  """optax's (g - m_{t-1})^2 = (g - m_t)^2 / b1^2: from the second step its update is b1 x ours."""
  rng = np.random.default_rng(2)
  grads = [{"w": jnp.asarray(rng.normal(size=4), jnp.float32),
            "m": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)} for _ in range(12)]
  b1 = 0.8

  def updates(tx):
    state = tx.init(grads[0])
    out = []
    for g in grads:
      u, state = tx.update(g, state)
      out.append(u)
    return out

  ours = updates(gtx.contrib.scale_by_acprop(b1=b1, eps=0.0, eps_root=0.0))
  with jax.numpy_dtype_promotion("standard"):
    theirs = updates(optax.contrib.scale_by_acprop(b1=b1, eps=0.0, eps_root=0.0))
  assert_trees_close(theirs[0], ours[0], rtol=1e-6)
  for t in range(1, len(grads)):
    assert_trees_close(theirs[t], jax.tree.map(lambda u: b1 * u, ours[t]), rtol=1e-5)
  assert not np.allclose(theirs[3]["w"], ours[3]["w"], rtol=1e-2)


def test_ademamix_keeps_nu_in_the_params_dtype_where_optax_uses_mu_dtype():
  params = coupled_tree()
  state = gtx.contrib.ademamix(0.1, mu_dtype=jnp.bfloat16).init(params)["ademamix"]
  theirs = optax.contrib.ademamix(0.1, mu_dtype=jnp.bfloat16).init(params)[0]
  assert state.m1["w"].dtype == state.m2["w"].dtype == theirs.nu["w"].dtype == jnp.bfloat16
  assert state.nu["w"].dtype == jnp.float32
  wide = gtx.contrib.scale_by_ademamix(mu_dtype=jnp.bfloat16, nu_dtype=jnp.float64)
  with jax.enable_x64(True):
    assert wide.init(params).nu["w"].dtype == jnp.float64


def test_adopt_keeps_mu_in_mu_dtype_and_steps_in_the_params_dtype():
  params = coupled_tree()
  narrow = run_updates(gtx.contrib.adopt(0.05, mu_dtype=jnp.bfloat16), params, 8, gtx.apply_updates)
  wide = run_updates(gtx.contrib.adopt(0.05), params, 8, gtx.apply_updates)
  assert narrow["w"].dtype == jnp.float32
  assert gtx.contrib.adopt(0.05, mu_dtype=jnp.bfloat16).init(params)["adopt"].mu["w"].dtype \
      == jnp.bfloat16
  assert_trees_close(narrow, wide, rtol=2e-2, atol=1e-3)
  assert not np.array_equal(narrow["w"], wide["w"])  # the bfloat16 moment is used


# ----------------------------------------------------------------------------
# Convergence.


# (name, quadratic optimizer, Rosenbrock optimizer, quadratic steps, Rosenbrock steps);
# success is f < 1e-3 on the quadratic and |x - (1, 1)| < 0.05 on Rosenbrock.
CONVERGENCE = [
    # ADOPT's steps are bounded by the clip; a quicker second moment (b2) follows
    # Rosenbrock's curving valley.
    ("adopt", lambda: gtx.contrib.adopt(0.05), lambda: gtx.contrib.adopt(0.005, b2=0.99),
     1000, 5000),
    ("ademamix", lambda: gtx.contrib.ademamix(0.05, b3=0.999),
     lambda: gtx.contrib.ademamix(decay(0.02, 1000), b3=0.99), 1000, 5000),
    ("simplified_ademamix", lambda: gtx.contrib.simplified_ademamix(decay(0.005, 200), b1=0.9,
                                                                    alpha=1.0),
     lambda: gtx.contrib.simplified_ademamix(0.001, b1=0.9), 1000, 5000),
    ("madgrad", lambda: gtx.contrib.madgrad(0.01), lambda: gtx.contrib.madgrad(0.01), 1000, 5000),
    ("acprop", lambda: gtx.contrib.acprop(0.05), lambda: gtx.contrib.acprop(0.003, b2=0.99),
     1000, 5000),
]


def test_adopt_without_clipping_stays_finite_where_g_over_eps_overflows():
  # Step 0 weighs g / max(sqrt(v_0), eps) = g / eps by 0; in float16 it overflows to inf,
  # and 0 * inf would make the first moment NaN for good.
  tx = gtx.contrib.adopt(0.1, use_clipping=False)
  params = jnp.zeros(3, jnp.float16)
  g = jnp.array([0.1, 1.0, 0.0], jnp.float16)
  state = tx.init(params)
  for _ in range(3):
    u, state = tx.update(g, state, params)
  assert all_finite((u, state["adopt"].mu))
  # g / |g| = 1 from step 1: m = 0.1, then 0.19; u = -lr m (float16 rounding).
  np.testing.assert_allclose(np.asarray(u, np.float32), [-0.019, -0.019, 0.0], rtol=2e-3)


@pytest.mark.parametrize("name, make_quad, make_rosen, quad_steps, rosen_steps", CONVERGENCE,
                         ids=[c[0] for c in CONVERGENCE])
def test_converges(name, make_quad, make_rosen, quad_steps, rosen_steps):
  check_converges(name, make_quad, make_rosen, quad_steps, rosen_steps)


# ----------------------------------------------------------------------------
# Hyperparameters by name, without retracing.


def _sign(params: dict) -> dict:
  return jax.tree.map(jnp.sign, params)


# (make, the names in the state, the values to set, the expected first-step
# updates before and after setting, as functions of the gradients g).
HPARAMS = [
    ("ademamix", lambda: gtx.contrib.ademamix(0.1, b3=0.5, alpha=2.0),
     {"ademamix.b1", "ademamix.b2", "ademamix.b3", "ademamix.alpha", "ademamix.eps",
      "ademamix.eps_root", "decay.weight_decay", "lr.learning_rate"},
     {"ademamix.alpha": 0.0},
     # (g / (1 - b1) * (1 - b1) + alpha (1 - b3) g) / |g|: 1 + alpha / 2, then 1.
     lambda g: jax.tree.map(lambda s: -0.2 * s, _sign(g)),
     lambda g: jax.tree.map(lambda s: -0.1 * s, _sign(g))),
    ("simplified_ademamix", lambda: gtx.contrib.simplified_ademamix(0.1, alpha=1.0),
     {"simplified_ademamix.b1", "simplified_ademamix.b2", "simplified_ademamix.alpha",
      "simplified_ademamix.eps", "simplified_ademamix.eps_root", "decay.weight_decay",
      "lr.learning_rate"},
     {"simplified_ademamix.alpha": 3.0, "lr.learning_rate": 0.5},
     lambda g: jax.tree.map(lambda s: -0.2 * s, _sign(g)),
     lambda g: jax.tree.map(lambda s: -2.0 * s, _sign(g))),
    ("madgrad", lambda: gtx.contrib.madgrad(0.1),
     {"madgrad.learning_rate", "madgrad.momentum", "madgrad.eps", "decay.weight_decay"},
     {"madgrad.momentum": 0.5},
     # (1 - beta)(z_1 - x_0), z_1 - x_0 = -l g / ((l g^2)^(1/3) + eps): momentum 0.9, then 0.5.
     lambda g: jax.tree.map(lambda x: -0.1 * (0.1 + 1e-6) * x
                            / (jnp.cbrt((0.1 + 1e-6) * x**2) + 1e-6), g),
     lambda g: jax.tree.map(lambda x: -0.5 * (0.1 + 1e-6) * x
                            / (jnp.cbrt((0.1 + 1e-6) * x**2) + 1e-6), g)),
    ("acprop", lambda: gtx.contrib.acprop(0.1),
     {"acprop.b1", "acprop.b2", "acprop.eps", "acprop.eps_root", "decay.weight_decay",
      "lr.learning_rate"},
     {"lr.learning_rate": 0.3},
     lambda g: jax.tree.map(lambda x: -0.1 * x, g), lambda g: jax.tree.map(lambda x: -0.3 * x, g)),
]


@pytest.mark.parametrize("make, names, values, before, after", [h[1:] for h in HPARAMS],
                         ids=[h[0] for h in HPARAMS])
def test_hyperparameters_read_and_set_by_name_without_retracing(make, names, values, before,
                                                                after):
  params = coupled_tree()
  tx = make()
  state = tx.init(params)
  assert set(gtx.hparams(state)) == names
  grads = jax.grad(coupled_loss)(params)
  step, traces = counting_jit(lambda state: tx.update(grads, state, params))

  u1, _ = step(state)
  u2, _ = step(gtx.set_hparams(state, values))
  assert_trees_close(u1, before(grads), rtol=1e-5)
  assert_trees_close(u2, after(grads), rtol=1e-5)
  assert len(traces) == 1


def test_adopt_hyperparameters_and_the_clip_value_schedule():
  params = coupled_tree()
  tx = gtx.contrib.adopt(0.1)
  state = tx.init(params)
  assert set(gtx.hparams(state)) == {"adopt.b1", "adopt.b2", "adopt.eps", "adopt.clip_value",
                                     "lr.learning_rate"}
  assert "adopt.clip_value" not in gtx.hparams(gtx.contrib.adopt(0.1, use_clipping=False)
                                               .init(params))
  grads = jax.grad(coupled_loss)(params)
  step, traces = counting_jit(lambda state: tx.update(grads, state, params))

  u0, s1 = step(state)  # sets v_0 = g^2
  assert_trees_close(u0, jax.tree.map(jnp.zeros_like, grads), rtol=0, atol=0)
  u1, s2 = step(s1)
  # g / |g| = sign(g), within the clip c_1 = 1: u = -lr (1 - b1) sign(g).
  assert_trees_close(u1, jax.tree.map(lambda s: -0.01 * s, _sign(grads)))
  # An eps above |g| normalises by eps instead, well inside the clip.
  u1_eps, _ = step(gtx.set_hparams(s1, {"adopt.eps": 100.0, "lr.learning_rate": 1.0}))
  assert_trees_close(u1_eps, jax.tree.map(lambda x: -0.1 * x / 100.0, grads))
  assert len(traces) == 1
  # The clip value reads as the schedule's value at the last step: t^(1/4).
  _, s3 = step(s2)
  assert float(gtx.hparams(s3)["adopt.clip_value"]) == pytest.approx(2 ** 0.25)
  with pytest.raises(gtx.HyperparameterError, match=r"adopt.clip_value follows a schedule"):
    gtx.set_hparams(s3, {"adopt.clip_value": 1.0})


def test_ademamix_schedules_read_as_their_last_values():
  params = coupled_tree()
  tx = gtx.contrib.ademamix(0.1, b3=_B3, alpha=_ALPHA)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(4):
    _, state = update(jax.grad(coupled_loss)(params), state, params)
  h = gtx.hparams(state)
  assert float(h["ademamix.b3"]) == pytest.approx(float(_B3(3)))
  assert float(h["ademamix.alpha"]) == pytest.approx(float(_ALPHA(3)))
  assert int(state["ademamix"].count) == int(state["ademamix"].count_m2) == 4


# ----------------------------------------------------------------------------
# Errors a person can act on.


BAD_HYPERPARAMETERS = [
    (lambda: gtx.contrib.adopt(0.1, b1=1.0), r"adopt: b1 must be in \[0, 1\), got 1.0"),
    (lambda: gtx.contrib.adopt(0.1, b2=1.5), r"adopt: b2 must be in \[0, 1\], got 1.5"),
    (lambda: gtx.contrib.adopt(0.1, eps=0.0), r"adopt: eps must be in \(0, inf\), got 0"),
    # Named by the argument (the state's name, clip_value, was given), and checked without
    # use_clipping too, where it is unread and a slip passed without a word.
    (lambda: gtx.contrib.adopt(0.1, clip_value_fn=-1.0),
     r"^adopt: clip_value_fn must be in \[0, inf\], got -1.0"),
    (lambda: gtx.contrib.adopt(0.1, use_clipping=False, clip_value_fn="1"),
     r"^adopt: clip_value_fn must be a number in \[0, inf\], got '1'"),
    (lambda: gtx.contrib.adopt(-0.1),
     r"adopt: learning_rate must be in \[0, inf\), got -0.1"),
    (lambda: gtx.contrib.ademamix(0.1, b3=1.1), r"ademamix: b3 must be in \[0, 1\]"),
    (lambda: gtx.contrib.ademamix(0.1, b2=1.0), r"ademamix: b2 must be in \[0, 1\)"),
    (lambda: gtx.contrib.ademamix(0.1, alpha=-1.0),
     r"ademamix: alpha must be in \[0, inf\), got -1.0"),
    (lambda: gtx.contrib.ademamix(0.1, weight_decay=-1.0),
     r"ademamix: weight_decay must be in \[0, inf\)"),
    (lambda: gtx.contrib.simplified_ademamix(0.1, b1=1.0),
     r"simplified_ademamix: b1 must be in \[0, 1\)"),
    (lambda: gtx.contrib.simplified_ademamix(0.1, eps_root=-1e-8),
     r"simplified_ademamix: eps_root must be in \[0, inf\)"),
    (lambda: gtx.contrib.madgrad(-0.1),
     r"madgrad: learning_rate must be in \[0, inf\), got -0.1"),
    (lambda: gtx.contrib.madgrad(0.1, momentum=1.0),
     r"madgrad: momentum must be in \[0, 1\), got 1.0"),
    (lambda: gtx.contrib.madgrad(0.1, eps=0.0), r"madgrad: eps must be in \(0, inf\)"),
    (lambda: gtx.contrib.acprop(0.1, b2=1.0), r"acprop: b2 must be in \[0, 1\)"),
    (lambda: gtx.contrib.acprop(0.1, eps=-1.0), r"acprop: eps must be in \[0, inf\)"),
]


test_bad_hyperparameters_raise_naming_the_stage_and_range = bad_hyperparameters_test(
    BAD_HYPERPARAMETERS)


def test_madgrad_without_params_raises_naming_the_stage():
  grads = coupled_tree()
  tx = gtx.contrib.scale_by_madgrad(0.1)
  with pytest.raises(gtx.MissingArgumentError, match=r"scale_by_madgrad needs the parameters"):
    tx.update(grads, tx.init(grads))
  tx = gtx.chain(adam=gtx.scale_by_adam(), madgrad=gtx.contrib.scale_by_madgrad(0.1))
  with pytest.raises(gtx.MissingArgumentError,
                     match=r"stage 'madgrad': scale_by_madgrad needs the parameters"):
    tx.update(grads, tx.init(grads))


# ----------------------------------------------------------------------------
# Zero gradients, packed mode, public names.


READY = [
    ("adopt", lambda: gtx.contrib.adopt(0.05)),
    ("ademamix", lambda: gtx.contrib.ademamix(0.05, b3=_B3, alpha=_ALPHA, weight_decay=0.1,
                                              mask=decay_mask)),
    ("simplified_ademamix", lambda: gtx.contrib.simplified_ademamix(0.005, alpha=1.0)),
    ("madgrad", lambda: gtx.contrib.madgrad(0.05, weight_decay=0.01)),
    ("acprop", lambda: gtx.contrib.acprop(0.05, weight_decay=0.01)),
]


@pytest.mark.parametrize("make", [r[1] for r in READY], ids=[r[0] for r in READY])
def test_zero_gradients_give_finite_zero_updates_at_defaults(make):
  check_zero_gradients_give_zero_updates(make(), jax.tree.map(jnp.zeros_like, coupled_tree()))


@pytest.mark.parametrize("make", [r[1] for r in READY], ids=[r[0] for r in READY])
def test_packed_gives_tree_modes_updates_and_state(make):
  params = packed_params()
  layout, (tree, _, _), (flat, _, _) = train_both_modes(make(), params, 6)
  assert not np.allclose(tree[0]["dense"]["w"], params["dense"]["w"])
  assert_packed_matches_tree(layout, tree, flat)


def _modulus_loss(params: Any) -> jax.Array:
  """A real loss of complex and real leaves: weighted |x - 0.3|^2, plus a coupling term."""
  leaves = jax.tree.leaves(params)
  quad = sum(jnp.sum((i + 1.0) * jnp.abs(x - 0.3) ** 2) for i, x in enumerate(leaves))
  return quad + 0.1 * jnp.square(sum(jnp.sum(jnp.abs(jnp.sin(x))) for x in leaves))


@pytest.mark.parametrize("make", [r[1] for r in READY], ids=[r[0] for r in READY])
def test_packed_complex_leaves_step_as_in_tree_mode(make):
  # A complex buffer of its own: ADOPT's modulus clip and MADGRAD's real nu, packed.
  params = packed_params()
  rng = np.random.default_rng(1)
  params["dense"]["w"] = jnp.asarray(np.asarray(params["dense"]["w"])
                                     + 1j * rng.normal(size=(4, 3)), jnp.complex64)
  layout, (tree, _, _), (flat, _, _) = train_both_modes(make(), params, 6, loss=_modulus_loss)
  assert tree[0]["dense"]["w"].dtype == jnp.complex64
  assert not np.allclose(tree[0]["dense"]["w"], params["dense"]["w"])
  assert_packed_matches_tree(layout, tree, flat)


def test_public_names_and_state_classes():
  for name in ["MadgradState", "ScaleByAdemamixState", "ScaleBySimplifiedAdEMAMixState",
               "acprop", "ademamix", "adopt", "madgrad", "scale_by_acprop", "scale_by_ademamix",
               "scale_by_adopt", "scale_by_madgrad", "scale_by_simplified_ademamix",
               "simplified_ademamix"]:
    assert name in gtx.contrib.__all__ and hasattr(optax.contrib, name), name
  params = coupled_tree()
  assert isinstance(gtx.contrib.adopt(0.1).init(params)["adopt"], gtx.ScaleByAdamState)
  assert isinstance(gtx.contrib.acprop(0.1).init(params)["acprop"], gtx.ScaleByBeliefState)
  ademamix = gtx.contrib.ademamix(0.1).init(params)["ademamix"]
  assert isinstance(ademamix, gtx.contrib.ScaleByAdemamixState)
  assert ademamix._fields[:5] == optax.contrib.ScaleByAdemamixState._fields
  simple = gtx.contrib.simplified_ademamix(0.1).init(params)["simplified_ademamix"]
  assert simple._fields[:3] == optax.contrib.ScaleBySimplifiedAdEMAMixState._fields
  madgrad = gtx.contrib.madgrad(0.1).init(params)["madgrad"]
  assert madgrad._fields[:4] == optax.contrib.MadgradState._fields
  assert_trees_close(madgrad.x0, params, rtol=0, atol=0)
