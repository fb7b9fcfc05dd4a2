"""gradtx.contrib's matrix-wise rules: Muon, GaLore, split_real_and_imaginary (and normalize,
which SAM's module defines, on the same problems).

Each rule against its float64 numpy reference (tests/reference_contrib_orthogonal.py)
on the zoo's multi-leaf problem, against optax.contrib where the two agree, on
real problems, with hyperparameters set by name, in packed mode, and with bad
input.
"""

from __future__ import annotations

import collections
import dataclasses
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx
import reference as R
import reference_contrib_curvature
import reference_contrib_orthogonal as RC
from gradtx.contrib import GaLoreDimensionNumbers as GLD
from gradtx.contrib import MuonDimensionNumbers as MDN
from gradtx.packed import Layout
from zoo_harness import (ZooCase, assert_trees_close, bad_hyperparameters_test, counting_jit,
                         ill_conditioned_quadratic, minimise, reference_tests, rosenbrock,
                         train_both_modes)

# The zoo problem's leaves: scalar (), vector (3,), matrix (4, 5), cube (2, 3, 4), zeros (3, 2),
# tiny (6,). Muon's default treats the 2-D ones (matrix, zeros) as matrices.
_NOT_MATRICES = {"scalar": None, "vector": None, "tiny": None}
_DIMS = {**_NOT_MATRICES, "matrix": MDN(1, 0), "cube": MDN(0, 2), "zeros": MDN()}
_REF_DIMS = {"matrix": (1, 0), "cube": (0, 2), "zeros": (0, 1)}
_PLAIN = {**_NOT_MATRICES, "matrix": MDN(), "cube": None, "zeros": MDN()}
_REF_PLAIN = {"matrix": (0, 1), "zeros": (0, 1)}

CASES = [
    ZooCase("muon", lambda: gtx.contrib.muon(0.02), lambda: RC.muon(0.02)),
    ZooCase("muon-dims-decay-rms",
            lambda: gtx.contrib.muon(0.02, weight_decay=0.1, nesterov=False, consistent_rms=0.2,
                                     adam_learning_rate=0.01, adam_weight_decay=0.01,
                                     adam_b1=0.8, muon_weight_dimension_numbers=_DIMS),
            lambda: RC.muon(0.02, weight_decay=0.1, nesterov=False, consistent_rms=0.2,
                            adam_learning_rate=0.01, adam_weight_decay=0.01, adam_b1=0.8,
                            dims={**_REF_DIMS, "scalar": None, "vector": None, "tiny": None})),
    ZooCase("scale_by_muon-aol-adaptive",
            lambda: gtx.contrib.scale_by_muon(preconditioning="aol", adaptive=True,
                                              weight_dimension_numbers=_DIMS),
            lambda: RC.scale_by_muon(_REF_DIMS, preconditioning="aol", adaptive=True),
            step=-0.05),
    ZooCase("scale_by_muon-schatten-dion",
            lambda: gtx.contrib.scale_by_muon("dion", beta=0.9, nesterov=False,
                                              preconditioning="schatten",
                                              weight_dimension_numbers=_DIMS),
            lambda: RC.scale_by_muon(_REF_DIMS, ns_coeffs=RC_DION, beta=0.9, nesterov=False,
                                     preconditioning="schatten"),
            step=-0.05),
    ZooCase("scale_by_muon-spectral",
            lambda: gtx.contrib.scale_by_muon(ns_steps=3, preconditioning="spectral",
                                              weight_dimension_numbers=_PLAIN),
            lambda: RC.scale_by_muon(_REF_PLAIN, ns_steps=3, preconditioning="spectral"),
            step=-0.05),
    ZooCase("normalize", gtx.contrib.normalize, reference_contrib_curvature.normalize, step=-0.05),
    # matrix (4, 5) is projected on the left, zeros (3, 2) on the right; P refreshed at 0, 20, 40.
    ZooCase("galore", lambda: gtx.contrib.galore(0.01, rank=2, update_proj_gap=20,
                                                 weight_decay=0.01),
            lambda: RC.galore(0.01, rank=2, update_proj_gap=20, weight_decay=0.01)),
    ZooCase("galore-dims",
            lambda: gtx.contrib.galore(0.01, rank=3, update_proj_gap=15, scale=0.5,
                                       base_optimizer=gtx.scale_by_adam(b1=0.8),
                                       weight_dimension_numbers={
                                           **_NOT_MATRICES, "matrix": GLD(1, 0),
                                           "cube": GLD((0, 1), 2), "zeros": None}),
            lambda: RC.galore(0.01, rank=3, update_proj_gap=15, scale=0.5, b1=0.8, dims={
                **dict.fromkeys(_NOT_MATRICES), "matrix": (1, 0), "cube": ((0, 1), 2),
                "zeros": None})),
    # On complex leaves (scalar and vector stay real and pass through): Adam on each
    # part, its second moment per part rather than of |g|^2.
    ZooCase("split_real_and_imaginary-adam",
            lambda: gtx.contrib.split_real_and_imaginary(gtx.adam(0.01)),
            lambda: RC.split_real_and_imaginary(R.adam(0.01)),
            complex_leaves=("matrix", "cube", "zeros", "tiny")),
]
RC_DION = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
           (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012))


# Muon on complex matrices (and Adam on the complex vector and cube): Newton-Schulz with
# X X^H drives a complex X to its polar factor U V^H.
_BY_ID = {c.id: c for c in CASES}
CASES += [dataclasses.replace(_BY_ID[i], id=i + "-complex",
                              complex_leaves=("vector", "matrix", "cube", "zeros"))
          for i in ["muon", "muon-dims-decay-rms", "scale_by_muon-aol-adaptive",
                    "scale_by_muon-schatten-dion", "scale_by_muon-spectral"]]

test_float32_jit, test_float64_nojit, test_float32_nojit_and_float64_jit = reference_tests(
    CASES, ["muon", "galore", "normalize", "split_real_and_imaginary-adam"])


# ----------------------------------------------------------------------------
# Against optax.contrib.


def _tree(dtype=jnp.float32, seed=0):
  """Several matrices (two of one shape), a 3-d leaf and vectors."""
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s), dtype)  # noqa: E731
  return {"w1": f(4, 3), "w2": f(4, 3), "w3": f(3, 5), "conv": f(2, 3, 4), "b": f(3),
          "s": f()}


def _loss(params):
  leaves = jax.tree.leaves(params)
  quad = sum(jnp.sum(0.5 * (i + 1.0) * jnp.square(x - 0.3)) for i, x in enumerate(leaves))
  return quad + 0.1 * jnp.square(sum(jnp.mean(x) for x in leaves))


def _optax(run, *args):
  """optax's code mixes Python floats and int32 counts: it runs under standard promotion."""
  with jax.numpy_dtype_promotion("standard"):
    return run(*args)


def _follows(ours, theirs, params, steps, loss=_loss, rtol=1e-5, atol=1e-6):
  """Both fed the same gradients, at the params gradtx's updates lead to; updates compared."""
  ours_step = jax.jit(ours.update)
  theirs_step = jax.jit(theirs.update)
  s_ours, s_theirs = ours.init(params), _optax(theirs.init, params)
  for t in range(steps):
    grads = jax.grad(loss)(params)
    u_ours, s_ours = ours_step(grads, s_ours, params)
    u_theirs, s_theirs = _optax(theirs_step, grads, s_theirs, params)
    # Each leaf at its own scale, as the zoo harness does: an entry small by
    # cancellation is not held to more digits than the leaf's largest carries.
    jax.tree.map(lambda u, v: np.testing.assert_allclose(
        np.asarray(u), np.asarray(v), rtol=rtol,
        atol=max(atol, rtol * float(np.max(np.abs(v), initial=0.0))), err_msg=f"step {t + 1}"),
        u_ours, u_theirs)
    params = gtx.apply_updates(params, u_ours)


_OMDN = optax.contrib.MuonDimensionNumbers
_OPTAX_DIMS = {"w1": _OMDN(), "w2": _OMDN(1, 0), "w3": _OMDN(), "conv": _OMDN(0, 2), "b": None,
               "s": None}
_GTX_DIMS = {"w1": MDN(), "w2": MDN(1, 0), "w3": MDN(), "conv": MDN(0, 2), "b": None, "s": None}

PARITY = [
    ("muon", dict(learning_rate=0.02)),
    ("muon-options", dict(learning_rate=0.02, beta=0.9, weight_decay=0.1, nesterov=False,
                          adaptive=True, preconditioning="aol", adam_b1=0.8,
                          adam_weight_decay=0.01, adam_learning_rate=0.01, consistent_rms=0.2,
                          muon_weight_dimension_numbers="dims")),
    ("muon-dion-schatten", dict(learning_rate=0.02, ns_coeffs="dion", preconditioning="schatten",
                                muon_weight_dimension_numbers="dims")),
    ("muon-spectral", dict(learning_rate=0.02, ns_steps=3, preconditioning="spectral")),
]


@pytest.mark.parametrize("kwargs", [p[1] for p in PARITY], ids=[p[0] for p in PARITY])
def test_muon_follows_optax(kwargs):
  ours, theirs = dict(kwargs), dict(kwargs)
  if kwargs.get("muon_weight_dimension_numbers") == "dims":
    ours["muon_weight_dimension_numbers"] = _GTX_DIMS
    theirs["muon_weight_dimension_numbers"] = _OPTAX_DIMS
  params = _tree()
  # Newton-Schulz iterations amplify float32 rounding: over 30 steps the same rule,
  # compiled with its kernels fused in another order, moves an update by ~1e-5 relative.
  _follows(gtx.contrib.muon(**ours), optax.contrib.muon(**theirs), params, 30, atol=3e-6)


def test_scale_by_muon_debiases_its_momentum_unlike_jordans_reference():
  # Jordan's muon_update orthogonalises m_t (Nesterov: b m_t + (1 - b) g_t), not
  # debiased; gradtx and optax debias (documented). Without Nesterov that is a scalar,
  # which NS's normalisation removes (eps = 0); with Nesterov step 2 differs.
  rng = np.random.default_rng(2)
  grads = [rng.normal(size=(3, 4)) for _ in range(2)]
  b = 0.95
  for nesterov in (False, True):
    tx = gtx.contrib.scale_by_muon(beta=b, eps=0.0, nesterov=nesterov)
    state = tx.init(jnp.zeros((3, 4)))
    m = np.zeros((3, 4))
    for t, g in enumerate(grads, 1):
      u, state = tx.update(jnp.asarray(g, jnp.float32), state)
      m = b * m + (1 - b) * g
      jordan = RC.newton_schulz(b * m + (1 - b) * g if nesterov else m, RC.DEFAULT_NS_COEFFS,
                                5, "frobenius", 0.0)
      same = not nesterov or t == 1
      assert np.allclose(u, jordan, rtol=1e-4, atol=1e-5) == same, (nesterov, t)


def test_scale_by_muon_follows_optax():
  params = {k: v for k, v in _tree().items() if k.startswith("w")}
  # optax 0.2.8's default weight_dimension_numbers=None fails on a tree of several
  # leaves (it maps over None); gradtx's None makes every leaf a plain matrix.
  dims = {k: optax.contrib.MuonDimensionNumbers() for k in params}
  _follows(gtx.contrib.scale_by_muon(beta=0.9, adaptive=True),
           optax.contrib.scale_by_muon(beta=0.9, adaptive=True, weight_dimension_numbers=dims),
           params, 20)


GALORE_PARITY = [
    ("galore", dict(learning_rate=0.01, rank=2, update_proj_gap=10)),
    ("galore-options", dict(learning_rate=0.01, rank=2, update_proj_gap=7, scale=0.5,
                            weight_decay=0.1, weight_dimension_numbers="dims")),
]


def _square_tree(seed=0):
  """_tree's kinds of leaves, with square matrices: optax projects on the same side there."""
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
  return {"w1": f(4, 4), "w2": f(4, 4), "w3": f(3, 3), "conv": f(2, 2, 4), "b": f(3), "s": f()}


@pytest.mark.parametrize("kwargs", [p[1] for p in GALORE_PARITY], ids=[p[0] for p in GALORE_PARITY])
def test_galore_follows_optax(kwargs):
  # On square matrices only: on the others optax 0.2.8 projects the other side
  # (test_galore_projects_the_smaller_side_as_the_paper).
  ours, theirs = dict(kwargs), dict(kwargs)
  if kwargs.get("weight_dimension_numbers") == "dims":
    ours["weight_dimension_numbers"] = {"w1": GLD(), "w2": GLD(1, 0), "w3": GLD(),
                                        "conv": GLD((0, 1), 2), "b": None, "s": None}
    ogld = optax.contrib.GaLoreDimensionNumbers
    theirs["weight_dimension_numbers"] = {"w1": ogld(), "w2": ogld(1, 0), "w3": ogld(),
                                          "conv": ogld((0, 1), 2), "b": None, "s": None}
  _follows(gtx.contrib.galore(**ours), optax.contrib.galore(**theirs), _square_tree(), 25)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
def test_galore_projects_the_smaller_side_as_the_paper(shape):
  # Zhao et al.'s Algorithm 2 (m <= n: P = U[:, :r], R = P^T G) and the authors' default
  # proj_type "std": the smaller side is reduced to r, the moments are r x n or m x r.
  # optax 0.2.8 reduces the larger side (the authors' "reverse_std").
  rng = np.random.default_rng(5)
  G = rng.normal(size=shape)
  m, n = shape
  tx = gtx.contrib.scale_by_galore(rank=2)
  state = tx.init({"w": jnp.zeros(shape)})
  u, state = tx.update({"w": jnp.asarray(G, jnp.float32)}, state)
  U, _, Vt = np.linalg.svd(G, full_matrices=False)
  if m <= n:
    P = U[:, :2]
    low = P.T @ G
    back = lambda d: P @ d  # noqa: E731
  else:
    P = Vt[:2].T
    low = G @ P
    back = lambda d: d @ P.T  # noqa: E731
  assert state.projector["w"].shape == P.shape
  assert state.base_optimizer_state.mu["w"].shape == low.shape
  # Adam's first step is m_hat / (sqrt(v_hat) + eps) = R / (|R| + eps), entry by entry.
  want = back(low / (np.abs(low) + 1e-8))
  np.testing.assert_allclose(u["w"], want, rtol=1e-5, atol=1e-6)


def test_scale_by_muon_state_has_optaxs_fields():
  params = {"w": jnp.ones((2, 3))}
  ours = gtx.contrib.scale_by_muon().init(params)
  theirs = optax.contrib.scale_by_muon().init(params)
  assert set(theirs._fields) - {"ns_coeffs"} < set(ours._fields)
  np.testing.assert_allclose(ours.ns_coeffs, theirs.ns_coeffs)
  assert gtx.hparams(ours)["ns_coeffs"].shape == (3,)


def test_muon_keeps_a_zero_matrix_zero_with_eps_zero_where_optax_gives_nan():
  params = {"w": jnp.zeros((3, 2))}
  ours = gtx.contrib.scale_by_muon(eps=0.0)
  theirs = optax.contrib.scale_by_muon(eps=0.0, weight_dimension_numbers={"w": MDN()})
  assert (np.asarray(ours.update(params, ours.init(params))[0]["w"]) == 0).all()
  assert np.isnan(np.asarray(_optax(theirs.update, params, theirs.init(params))[0]["w"])).all()


@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral"])
def test_muon_steps_by_nan_after_a_nan_gradient_as_optax_does(preconditioning):
  # The momentum holds the NaN from then on; a zero step instead would stop the matrix
  # training without a NaN anywhere to show it (safe_divide took a NaN norm for a zero).
  params = {"w": jnp.ones((3, 2))}
  good = {"w": jnp.arange(6.0).reshape(3, 2) / 5 + 0.1}
  bad = {"w": good["w"].at[0, 0].set(jnp.nan)}
  ours = gtx.contrib.scale_by_muon(preconditioning=preconditioning)
  theirs = optax.contrib.scale_by_muon(preconditioning=preconditioning,
                                       weight_dimension_numbers={"w": MDN()})
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  for g in (good, bad, good):
    u_ours, s_ours = ours.update(g, s_ours, params)
    u_theirs, s_theirs = _optax(theirs.update, g, s_theirs, params)
    np.testing.assert_array_equal(np.isnan(np.asarray(u_ours["w"])),
                                  np.isnan(np.asarray(u_theirs["w"])))
  assert np.isnan(np.asarray(u_ours["w"])).all()


def test_muon_steps_a_matrix_without_rows():
  # scale_by_shape's sqrt(max(1, fan_out / fan_in)) divided by fan_in = 0 for a (0, 4)
  # matrix (ZeroDivisionError, as in optax 0.2.8); an empty matrix steps by nothing.
  params = {"e": jnp.ones((0, 4)), "w": _tree()["w3"]}
  ours = gtx.contrib.muon(0.02)
  updates, _ = ours.update(params, ours.init(params), params)
  assert updates["e"].shape == (0, 4)
  alone = gtx.contrib.muon(0.02)
  w = {"w": params["w"]}
  np.testing.assert_array_equal(updates["w"], alone.update(w, alone.init(w), w)[0]["w"])


def test_a_coefficient_table_longer_than_ns_steps_runs_every_row():
  params = {"w": _tree()["w3"]}
  # optax 0.2.8 refuses a 5-row table with ns_steps=3 ("Not enough coeffs"); its
  # docstring says ns_steps is ignored for a table, which gradtx does.
  with pytest.raises(ValueError, match="Not enough coeffs"):
    _optax(optax.contrib.scale_by_muon(RC_DION, ns_steps=3).init, params)
  ours = gtx.contrib.scale_by_muon(RC_DION, ns_steps=3)
  ref = RC.scale_by_muon({"w": (0, 1)}, ns_coeffs=RC_DION)
  ref.init({"w": np.asarray(params["w"])})
  np.testing.assert_allclose(ours.update(params, ours.init(params))[0]["w"],
                             ref.step({"w": np.asarray(params["w"])}, None)["w"], rtol=1e-5,
                             atol=1e-6)


def test_split_real_and_imaginary_follows_optax_and_its_reference():
  rng = np.random.default_rng(1)
  def z(*shape):
    return jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape), jnp.complex64)
  params = {"z": z(3, 2), "x": jnp.asarray(rng.normal(size=4), jnp.float32)}
  # A real loss of complex parameters; the gradient conjugated, as the docstring says.
  loss = lambda p: jnp.sum(jnp.abs(p["z"] - 0.5j) ** 2) + jnp.sum(p["x"] ** 2)  # noqa: E731
  conj_loss_grad = lambda p: jax.tree.map(jnp.conj, jax.grad(loss)(p))  # noqa: E731
  ours = gtx.contrib.split_real_and_imaginary(gtx.adam(0.05))
  theirs = optax.contrib.split_real_and_imaginary(optax.adam(0.05))
  ref = RC.split_real_and_imaginary(R.adam(0.05))
  ref.init({k: np.asarray(v) for k, v in params.items()})
  s_ours, s_theirs, p = ours.init(params), theirs.init(params), params
  for t in range(20):
    g = conj_loss_grad(p)
    u_ours, s_ours = ours.update(g, s_ours, p)
    u_theirs, s_theirs = _optax(theirs.update, g, s_theirs, p)
    want = ref.step({k: np.asarray(v, np.complex128 if k == "z" else np.float64)
                     for k, v in g.items()}, {k: np.asarray(v) for k, v in p.items()})
    for k in p:
      assert u_ours[k].dtype == p[k].dtype
      np.testing.assert_allclose(u_ours[k], u_theirs[k], rtol=1e-5, atol=1e-7)
      np.testing.assert_allclose(u_ours[k], want[k], rtol=1e-4, atol=1e-6, err_msg=f"step {t}")
    p = gtx.apply_updates(p, u_ours)
  assert float(loss(p)) < 0.5 * float(loss(params))
  # Adam's second moment is kept per part, not of |g|^2.
  nu = s_ours.inner_state["adam"].nu["z"]
  assert isinstance(nu, tuple) and nu.real.dtype == jnp.float32


# ----------------------------------------------------------------------------
# Real problems.


def _as_matrix(f, shape):
  return lambda x: f(x.reshape(-1)) if x.shape == shape else f(x)


CONVERGENCE = [
    ("muon", lambda lr: gtx.contrib.muon(gtx.schedules.exponential_decay(lr, 100, 0.5))),
    ("normalize", lambda lr: gtx.chain(gtx.contrib.normalize(),
                                       gtx.sgd(gtx.schedules.exponential_decay(lr, 100, 0.5),
                                               momentum=0.5))),
    ("split_real_and_imaginary", lambda lr: gtx.contrib.split_real_and_imaginary(gtx.adam(lr))),
    # Rank 1, the projector renewed every 10 steps. (Renewed at every step, the 1 x 2
    # matrix, whose smaller side rank 1 spans, stalls: each SVD picks the sign of its
    # singular vector anew, under moments carried from the last one.)
    ("galore", lambda lr: gtx.contrib.galore(gtx.schedules.exponential_decay(lr, 1000, 0.5),
                                             rank=1, update_proj_gap=10)),
]


@pytest.mark.parametrize("name, make", CONVERGENCE, ids=[c[0] for c in CONVERGENCE])
def test_converges(name, make):
  # As matrices, so that Muon orthogonalises: the quadratic as 2 x 5, Rosenbrock as 1 x 2.
  quad = lambda x: ill_conditioned_quadratic(x.reshape(-1))  # noqa: E731
  x = minimise(make(0.3), quad, jnp.full((2, 5), 1.5), 1500)
  assert float(quad(x)) < 1e-3, (name, float(quad(x)))
  rosen = lambda x: rosenbrock(x.reshape(-1))  # noqa: E731
  x = minimise(make(0.1), rosen, jnp.zeros((1, 2)), 3000)
  assert float(jnp.linalg.norm(x.reshape(-1) - 1.0)) < 0.05, (name, x)


# ----------------------------------------------------------------------------
# Hyperparameters by name.


def test_muon_hyperparameters_read_and_set_by_name_without_retracing():
  params = {"w": _tree()["w3"], "b": _tree()["b"]}
  grads = jax.grad(_loss)(params)
  tx = gtx.contrib.muon(0.02, consistent_rms=0.2)
  state = tx.init(params)
  names = gtx.hparams(state)
  assert {"muon.beta", "muon.eps", "muon.ns_coeffs", "shape.consistent_rms",
          "decay.weight_decay", "lr.learning_rate", "adam.b1", "adam.b2", "adam.eps",
          "adam.eps_root", "adam_decay.weight_decay", "adam_lr.learning_rate"} == set(names)
  np.testing.assert_allclose(names["muon.ns_coeffs"], RC.DEFAULT_NS_COEFFS, rtol=1e-6)
  step, traces = counting_jit(lambda state: tx.update(grads, state, params)[0])

  u = step(state)
  u_lr = step(gtx.set_hparams(state, {"lr.learning_rate": 0.04}))
  u_rms = step(gtx.set_hparams(state, {"shape.consistent_rms": 0.1}))
  u_adam_lr = step(gtx.set_hparams(state, {"adam_lr.learning_rate": 0.01}))
  u_ns = step(gtx.set_hparams(state, {"muon.ns_coeffs": (1.5, -0.5, 0.0)}))
  assert len(traces) == 1
  # The matrix's step scales with its own rate and RMS target; the vector's with Adam's rate.
  np.testing.assert_allclose(u_lr["w"], 2 * u["w"], rtol=1e-6)
  np.testing.assert_allclose(u_lr["b"], u["b"], rtol=1e-6)
  np.testing.assert_allclose(u_rms["w"], 0.5 * u["w"], rtol=1e-6)
  np.testing.assert_allclose(u_adam_lr["b"], 0.5 * u["b"], rtol=1e-6)
  np.testing.assert_allclose(u_adam_lr["w"], u["w"], rtol=1e-6)
  # The cubic Newton-Schulz iteration (1.5, -0.5, 0) instead of the quintic.
  ref = RC.scale_by_muon({"w": (0, 1)}, ns_coeffs=(1.5, -0.5, 0.0))
  ref.init({"w": np.asarray(params["w"])})
  want = -0.02 * 0.2 * np.sqrt(5) * ref.step({"w": np.asarray(grads["w"])}, None)["w"]
  np.testing.assert_allclose(u_ns["w"], want, rtol=1e-4, atol=1e-7)


def test_galore_hyperparameters_read_and_set_by_name_without_retracing():
  params = {"w": _tree()["w3"], "b": _tree()["b"]}
  grads = jax.grad(_loss)(params)
  tx = gtx.contrib.galore(0.01, rank=2, update_proj_gap=3)
  state = tx.init(params)
  assert {"galore.update_proj_gap", "galore.scale", "galore.b1", "galore.b2", "galore.eps",
          "galore.eps_root", "decay.weight_decay", "lr.learning_rate"} == set(gtx.hparams(state))
  step, traces = counting_jit(lambda grads, state: tx.update(grads, state, params))

  u1, state1 = step(grads, state)
  u_scale, _ = step(grads, gtx.set_hparams(state, {"galore.scale": 2.0}))
  np.testing.assert_allclose(u_scale["w"], 2 * u1["w"], rtol=1e-6)
  np.testing.assert_allclose(u_scale["b"], u1["b"], rtol=1e-6)
  # With a gap of 3, step 2 keeps P; with a gap of 1 it recomputes it from the new gradient.
  other = jax.tree.map(lambda g: jnp.flip(g, 0), grads)
  _, kept = step(other, state1)
  _, renewed = step(other, gtx.set_hparams(state1, {"galore.update_proj_gap": 1}))
  assert len(traces) == 1
  np.testing.assert_allclose(kept["galore"].projector["w"], state1["galore"].projector["w"])
  assert not np.allclose(renewed["galore"].projector["w"], state1["galore"].projector["w"])
  assert int(gtx.hparams(renewed)["galore.update_proj_gap"]) == 1


@pytest.mark.parametrize("param_dtype,grad_dtype", [(jnp.bfloat16, jnp.float32),
                                                      (jnp.float32, jnp.bfloat16)])
def test_galore_takes_gradients_of_another_dtype_than_the_params(param_dtype, grad_dtype):
  # The projector is in the params' dtype; projecting gradients of another dtype raised
  # under strict promotion (the suite's), and took JAX's standard one otherwise.
  rng = np.random.default_rng(3)
  params = {"w": jnp.asarray(rng.normal(size=(5, 3)), param_dtype)}
  grads = [{"w": jnp.asarray(rng.normal(size=(5, 3)), grad_dtype)} for _ in range(3)]

  def run():
    tx = gtx.contrib.galore(0.1, rank=2, update_proj_gap=2)
    state, out = tx.init(params), []
    for g in grads:
      updates, state = tx.update(g, state, params)
      out.append(updates["w"])
    return out

  got = run()
  with jax.numpy_dtype_promotion("standard"):
    want = run()
  for u, w in zip(got, want):
    assert u.dtype == grad_dtype
    np.testing.assert_array_equal(np.asarray(u, np.float32), np.asarray(w, np.float32))
    assert np.all(np.isfinite(np.asarray(u, np.float32))) and np.any(np.asarray(u) != 0)


def test_normalize_and_split_expose_their_hyperparameters():
  x = {"w": jnp.ones(2)}
  assert set(gtx.hparams(gtx.chain(normalize=gtx.contrib.normalize()).init(x))) == {
      "normalize.scale_factor", "normalize.eps"}
  state = gtx.contrib.split_real_and_imaginary(gtx.adam(0.1)).init(x)
  assert gtx.hparams(state)["lr.learning_rate"] == pytest.approx(0.1)
  state = gtx.set_hparams(state, {"lr.learning_rate": 0.2})
  assert gtx.hparams(state)["lr.learning_rate"] == pytest.approx(0.2)


# ----------------------------------------------------------------------------
# Bad input.


BAD_HYPERPARAMETERS = [
    (lambda: gtx.contrib.muon(0.1, beta=1.0), r"muon: beta must be in \[0, 1\), got 1.0"),
    (lambda: gtx.contrib.muon(0.1, eps=-1.0), r"muon: eps must be in \[0, inf\)"),
    (lambda: gtx.contrib.scale_by_muon(ns_steps=0),
     r"scale_by_muon: ns_steps must be in \[1, 2147483647\] \(an integer\)"),
    # inf passed the integer check, then int(inf) raised OverflowError at the first step.
    (lambda: gtx.contrib.muon(0.1, ns_steps=float("inf")),
     r"^muon: ns_steps must be in \[1, .*got inf"),
    # [5] passed (each entry in range), then int([5]) raised a TypeError naming nothing.
    (lambda: gtx.contrib.muon(0.1, ns_steps=[5]),
     r"^muon: ns_steps must be a number in \[1, .*got \[5\] \(checked by scale_by_muon\)$"),
    (lambda: gtx.contrib.scale_by_muon(ns_coeffs=(1.0, 2.0)),
     r"scale_by_muon: ns_coeffs must have shape \(3,\) or \(n, 3\), got \(2,\)"),
    # Rows of different lengths raised numpy's "inhomogeneous shape" from the error message.
    (lambda: gtx.contrib.scale_by_muon(ns_coeffs=((3.0, -4.0, 2.0), (3.0, -4.0))),
     r"^scale_by_muon: ns_coeffs must be a table of numbers of shape \(3,\) or \(n, 3\), "
     r"got \(\(3.0, -4.0, 2.0\), \(3.0, -4.0\)\)$"),
    (lambda: gtx.contrib.scale_by_muon(ns_coeffs=(3.0, "b", 2.0)),
     r"^scale_by_muon: ns_coeffs must be a table of numbers .*got \(3.0, 'b', 2.0\)$"),
    (lambda: gtx.contrib.muon(0.1, ns_coeffs="polar"),
     r"muon: ns_coeffs must be one of the presets"),
    (lambda: gtx.contrib.scale_by_muon(preconditioning="svd"),
     r"scale_by_muon: preconditioning must be one of"),
    (lambda: gtx.contrib.muon(0.1, consistent_rms=0.0),
     r"muon: consistent_rms must be in \(0, inf\)"),
    (lambda: gtx.contrib.muon(0.1, adam_b2=1.0), r"muon: adam_b2 must be in \[0, 1\)"),
    (lambda: gtx.contrib.muon(-0.1), r"muon: learning_rate must be"),
    (lambda: gtx.contrib.muon(0.1, weight_decay=-1.0),
     r"muon: weight_decay must be"),
    (lambda: gtx.contrib.galore(0.1, rank=0),
     r"galore: rank must be in \[1, 2147483647\] \(an integer\), got 0"),
    (lambda: gtx.contrib.galore(0.1, update_proj_gap=0),
     r"galore: update_proj_gap must be in \[1, 2147483647\] \(an integer\), got 0"),
    (lambda: gtx.contrib.galore(0.1, weight_decay=-0.1),
     r"galore: weight_decay must be"),
]


test_bad_hyperparameters_raise_at_construction = bad_hyperparameters_test(
    BAD_HYPERPARAMETERS, named=False)


def test_muon_ns_steps_given_as_a_whole_float_runs_that_many_steps():
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
  steps = [gtx.contrib.scale_by_muon(ns_steps=n) for n in (3.0, 3)]
  got, want = (tx.update(params, tx.init(params))[0] for tx in steps)
  np.testing.assert_array_equal(got["w"], want["w"])


def test_galore_rank_must_be_an_int():
  with pytest.raises(TypeError, match=r"scale_by_galore: rank must be an int, got float"):
    gtx.contrib.galore(0.1, rank=2.0)


def test_missing_params_name_the_stage():
  params = {"w": jnp.ones((2, 3))}
  tx = gtx.contrib.muon(0.1, weight_decay=0.1)
  with pytest.raises(gtx.MissingArgumentError, match=r"stage 'decay': add_decayed_weights needs"):
    tx.update(params, tx.init(params))


BAD_DIMENSIONS = [
    ({"w": jnp.ones(3)}, None, r"scale_by_muon: a leaf of shape \(3,\) is not a matrix"),
    ({"w": jnp.ones((2, 3))}, {"w": MDN(0, 0)},
     r"scale_by_muon: .* the reduction and output axes must be disjoint"),
    ({"w": jnp.ones((2, 3)), "b": jnp.ones(2)}, {"w": MDN()},
     r"scale_by_muon: the params have key path \['b'\], which the tree of weight dimension "
     "numbers does not cover"),
    # Axes the leaf does not have were taken modulo its rank: 2 was axis 0 of a matrix.
    ({"w": jnp.ones((2, 3))}, {"w": MDN(2, 1)},
     r"scale_by_muon: MuonDimensionNumbers\(reduction_axis=2, output_axis=1\) for a leaf of "
     r"shape \(2, 3\): each axis must be an int in \[-2, 2\)"),
    ({"w": jnp.ones((2, 3))}, {"w": MDN(0, -3)}, r"each axis must be an int in \[-2, 2\)"),
    ({"w": jnp.ones((2, 3))}, {"w": MDN(True, 1)}, r"each axis must be an int in \[-2, 2\)"),
    ({"w": jnp.ones((2, 3))}, {"w": MDN(0.0, 1)}, r"each axis must be an int in \[-2, 2\)"),
    ({"w": jnp.ones((2, 3, 4))}, {"w": MDN((0, -3), 2)}, r"shape \(2, 3, 4\): an axis is named "
                                                         "twice"),
]


def test_dimension_numbers_of_another_structure_name_the_key_path_briefly():
  # The message printed the whole spec and the params' whole structure (58,000
  # characters for 500 layers) and named no key path.
  params = {f"layer{i:03d}": {"w": jnp.ones((3, 2)), "b": jnp.ones(2)} for i in range(500)}
  dims = {k: {"w": MDN(), "b": None} for k in params}
  start = "stage 'muon': muon: the tree of weight dimension numbers "
  for spec, message in [
      ({**dims, "layer123": collections.OrderedDict(sorted(dims["layer123"].items()))},
       "must have the params' tree structure or a prefix of it; at key path ['layer123'] the "
       "tree of weight dimension numbers has PyTreeDef(CustomNode(OrderedDict[('b', 'w')], [*, *])), "
       "the params PyTreeDef({'b': *, 'w': *})"),
      ({k: v for k, v in dims.items() if k != "layer499"},
       None),
      ({**dims, "layer007": {**dims["layer007"], "c": None}},
       "has key path ['layer007']['c'], which the params do not have")]:
    with pytest.raises(gtx.StructureError) as error:
      gtx.contrib.muon(0.1, muon_weight_dimension_numbers=spec).init(params)
    if message is None:
      assert str(error.value) == ("stage 'muon': muon: the params have key path "
                                  "['layer499']['b'], which the tree of weight dimension "
                                  "numbers does not cover")
    else:
      assert str(error.value) == start + message
  # None over a subtree is a prefix: none of its leaves is orthogonalized.
  state = gtx.contrib.muon(0.1, muon_weight_dimension_numbers={**dims, "layer007": None}).init(
      params)
  assert state is not None


def test_galore_needs_every_axis_in_its_matrix():
  params = {"w": jnp.ones((2, 3, 4))}
  tx = gtx.contrib.scale_by_galore(weight_dimension_numbers=GLD(0, 2))
  with pytest.raises(gtx.StructureError, match=r"scale_by_galore: .* leaves axes \(1,\) out"):
    tx.init(params)


@pytest.mark.parametrize("params, dims, message", BAD_DIMENSIONS)
def test_bad_dimension_numbers_raise_naming_the_shape(params, dims, message):
  tx = gtx.contrib.scale_by_muon(weight_dimension_numbers=dims)
  with pytest.raises(gtx.StructureError, match=message):
    tx.update(params, tx.init(params))


def test_dimension_numbers_take_negative_axes_and_refuse_missing_ones_in_galore_too():
  params = {"w": jnp.arange(12.0).reshape(3, 4) / 10}
  grads = {"w": jnp.cos(jnp.arange(12.0)).reshape(3, 4)}

  def step(dims):
    tx = gtx.contrib.muon(0.1, muon_weight_dimension_numbers={"w": dims})
    return tx.update(grads, tx.init(params), params)[0]["w"]

  np.testing.assert_array_equal(step(MDN(-2, -1)), step(MDN(0, 1)))
  np.testing.assert_array_equal(step(MDN([0], (1,))), step(MDN(0, 1)))
  assert not np.allclose(step(MDN(1, 0)), step(MDN(0, 1)))  # the fans scale the step
  tx = gtx.contrib.scale_by_galore(rank=1, weight_dimension_numbers={"w": GLD(0, 2)})
  with pytest.raises(gtx.StructureError, match=r"^scale_by_galore: GaLoreDimensionNumbers\("
                                                r".* each axis must be an int in \[-2, 2\)"):
    tx.init(params)


def test_structure_mismatch_names_the_key_path():
  tx = gtx.contrib.muon(1e-3)
  state = tx.init({"w": jnp.ones((2, 2)), "b": jnp.ones(3)})
  bad = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
  with pytest.raises(gtx.StructureError, match=r"\['w'\]"):
    tx.update(bad, state, bad)


def test_galore_names_a_leaf_missing_from_the_updates():
  # jax's "Dict key mismatch" from inside the step before; the projectors' shapes are
  # the low-rank ones, so only the structure is checked against them.
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  tx = gtx.contrib.galore(0.1, rank=1)
  with pytest.raises(gtx.StructureError, match=r"stage 'galore': scale_by_galore: updates and "
                                               r"state.projector differ in structure: key "
                                               r"path \['b'\]"):
    tx.update({"w": params["w"]}, tx.init(params), params)


def test_galore_names_a_leaf_of_another_shape():
  # The projectors' and the base's moments' shapes cannot tell a transposed leaf at full
  # rank (the default rank 128 for any matrix with a side <= 128): a (4, 3) gradient for a
  # (3, 4) param stepped by a (4, 3) update. The params, where given, can.
  params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
  grads = {"w": jnp.arange(12.0).reshape(3, 4) / 10, "b": jnp.full(4, -0.2)}
  tx = gtx.contrib.scale_by_galore()
  state = tx.init(params)
  with pytest.raises(gtx.StructureError, match=r"^scale_by_galore: updates and params differ "
                                               r"in shape at key path \['w'\]: \(4, 3\) in "
                                               r"updates, \(3, 4\) in params$"):
    tx.update({"w": grads["w"].T, "b": grads["b"]}, state, params)
  # Without params, a leaf of another size is named by GaLore, with the projector init
  # made (the base's check named its own low-rank shapes: '(5, 2) in updates, (3, 2) in
  # state.mu' for this one).
  tx = gtx.contrib.scale_by_galore(rank=2)
  state = tx.init(params)
  with pytest.raises(gtx.StructureError, match=r"^scale_by_galore: the updates at key path "
                                               r"\['w'\] have shape \(5, 4\), for which init "
                                               r"makes a projector of shape \(4, 2\); the state "
                                               r"holds a projector of shape \(3, 2\)"):
    tx.update({"w": jnp.ones((5, 4)), "b": grads["b"]}, state)
  with pytest.raises(gtx.StructureError, match=r"\['w'\] have shape \(\), for which init "
                                               r"makes no projector"):
    tx.update({"w": jnp.ones(()), "b": grads["b"]}, state)
  # The params are only checked: the step is the one taken without them.
  with_params, _ = tx.update(grads, state, params)
  without, _ = tx.update(grads, state)
  np.testing.assert_array_equal(with_params["w"], without["w"])
  assert float(jnp.abs(with_params["w"]).max()) > 0


# ----------------------------------------------------------------------------
# Packed mode.


# Newton-Schulz amplifies rounding (batched matrix products round differently), and the
# adaptive scale is a sum over the leaf: rtol 1e-4 on the params there.
PACKED = [
    ("muon", lambda: gtx.contrib.muon(0.02, weight_decay=0.1)),
    # w1 and w2 are one run of (4, 3) leaves with different matrices, conv is batched.
    ("muon-dims", lambda: gtx.contrib.muon(0.02, preconditioning="aol", adaptive=True,
                                           muon_weight_dimension_numbers=_GTX_DIMS)),
    ("normalize", lambda: gtx.chain(gtx.contrib.normalize(), gtx.sgd(0.1))),
    ("split_real_and_imaginary", lambda: gtx.contrib.split_real_and_imaginary(gtx.adam(0.1))),
]


@pytest.mark.parametrize("make", [p[1] for p in PACKED], ids=[p[0] for p in PACKED])
def test_packed_mode_gives_tree_modes_results(make):
  params = _tree()
  layout, ((p_tree, s_tree), _, _), ((p_flat, s_flat), _, _) = train_both_modes(
      make(), params, 4, loss=_loss)
  p_packed, s_packed = layout.unpack(p_flat), layout.unpack_state(s_flat)
  assert not np.allclose(np.asarray(p_tree["w1"]), np.asarray(params["w1"]))
  assert_trees_close(p_packed, p_tree, rtol=1e-4, atol=1e-6)
  if isinstance(s_tree, gtx.ChainState) and "muon" in s_tree:
    # Masked stages keep state for their own leaves in tree mode, for all leaves packed:
    # Muon's and Adam's momenta agree on the leaves each one owns.
    for stage in ("muon", "adam"):
      mine = s_tree[stage].inner_state.mu
      for k, m in mine.items():
        if not isinstance(m, gtx.MaskedNode):
          assert_trees_close(s_packed[stage].inner_state.mu[k], m, rtol=1e-4, atol=1e-6)
  else:
    assert_trees_close(s_packed, s_tree, rtol=1e-4, atol=1e-6)


def test_packed_muon_batches_each_run_of_equal_shapes():
  """The per-matrix rule runs once per run of equally shaped leaves, vmapped."""
  params = _tree()
  layout = Layout.from_tree(params)
  tx = gtx.contrib.scale_by_muon(weight_dimension_numbers={**_GTX_DIMS, "conv": MDN(0, 2)})
  flat = layout.pack(params)
  jaxpr = str(jax.make_jaxpr(lambda f: tx.update(f, tx.init(f))[0])(flat))
  # w1 and w2 share a run of (4, 3) leaves: batched over 2 there, with a select between
  # their two dimension numbers.
  assert "f32[2,4,3]" in jaxpr and "select_n" in jaxpr
  got = layout.unpack(jax.jit(lambda f: tx.update(f, tx.init(f))[0])(flat))
  want = jax.jit(lambda p: tx.update(p, tx.init(p))[0])(params)
  # Batched products round differently (see PACKED).
  assert_trees_close(got, want, rtol=1e-4, atol=1e-6)


def test_galore_refuses_a_packed_tree():
  params = _tree()
  with pytest.raises(gtx.StructureError, match=r"scale_by_galore: GaLore does not run on a packed"):
    gtx.contrib.galore(0.1).init(Layout.from_tree(params).pack(params))


def test_galore_inside_masked_keeps_state_for_its_leaves_only():
  params = _tree()
  tx = gtx.masked(gtx.contrib.scale_by_galore(rank=2), {k: k != "w1" for k in params})
  state = tx.init(params)
  assert isinstance(state.inner_state.projector["w1"], gtx.MaskedNode)
  assert state.inner_state.projector["w3"].shape == (3, 2)  # (3, 5): the left side
  updates, _ = tx.update(params, state, params)
  np.testing.assert_array_equal(updates["w1"], params["w1"])


def test_split_refuses_a_packed_tree_with_complex_buffers():
  params = {"z": jnp.ones(2, jnp.complex64), "x": jnp.ones(2)}
  layout = Layout.from_tree(params)
  tx = gtx.contrib.split_real_and_imaginary(gtx.adam(0.1))
  with pytest.raises(gtx.StructureError, match=r"complex buffers \['complex64'\]"):
    tx.init(layout.pack(params))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_spectral_preconditioning_takes_its_norm_in_float32_for_half_precision(dtype):
  # The spectral norm is an SVD, which has no bfloat16 or float16 kernel: it raised
  # NotImplementedError. Newton-Schulz then runs in the leaf's dtype, as on float32.
  g = jnp.asarray(np.random.default_rng(3).normal(size=(4, 6)), jnp.float32)
  tx = gtx.contrib.scale_by_muon(preconditioning="spectral")
  got = tx.update({"w": g.astype(dtype)}, tx.init({"w": g.astype(dtype)}))[0]["w"]
  want = tx.update({"w": g}, tx.init({"w": g}))[0]["w"]
  assert got.dtype == dtype
  error = np.linalg.norm(np.asarray(got, np.float32) - want) / np.linalg.norm(want)
  assert error < 0.1, error  # NS in bfloat16 differs from float32 by a few percent


@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral", "aol", "schatten"])
def test_float16_matrix_of_norm_above_256_is_orthogonalised(preconditioning):
  # float16 squares overflow: the Frobenius norm of this (4, 6) matrix (~490) was Inf in
  # float16, so its step was 0; AOL's and the Schatten norm's X X^H were Inf, the step NaN
  # (optax 0.2.8 too). The preconditioning now runs in float32, Newton-Schulz in float16.
  g = jnp.asarray(100 * np.random.default_rng(3).normal(size=(4, 6)), jnp.float16)
  tx = gtx.contrib.scale_by_muon(preconditioning=preconditioning)
  got = tx.update(g, tx.init(g))[0]
  want = tx.update(g.astype(jnp.float32), tx.init(g.astype(jnp.float32)))[0]
  assert got.dtype == jnp.float16
  error = np.linalg.norm(np.asarray(got, np.float32) - want) / np.linalg.norm(want)
  assert error < 0.05, error  # NS in float16 differs from float32 by about 1%


def test_float16_nesterov_momentum_of_a_large_gradient_stays_finite():
  # Nesterov's look-ahead divided g by 1 - beta^t in float16: 20 g at the first step,
  # past float16's max for entries above 3276 (the sum, about g, fits), so Muon stepped
  # by NaN. It is now formed in float32 for a 16-bit moment.
  g = jnp.asarray(5000 * np.random.default_rng(0).normal(size=(4, 6)), jnp.float16)
  tx = gtx.contrib.scale_by_muon()
  got = tx.update(g, tx.init(g))[0]
  want = tx.update(g.astype(jnp.float32), tx.init(g.astype(jnp.float32)))[0]
  assert got.dtype == jnp.float16
  error = np.linalg.norm(np.asarray(got, np.float32) - want) / np.linalg.norm(want)
  assert error < 0.05, error


def test_float16_adaptive_scale_sums_the_dual_norm_in_float32():
  # adaptive=True scales O by <X, O>, a sum over the matrix: in float16 it overflowed on a
  # 256 x 256 matrix of entries ~30 (Inf updates), where the scaled step (< 3.3e4) fits.
  g = jnp.asarray(30 * np.random.default_rng(1).normal(size=(256, 256)), jnp.float16)
  tx = gtx.contrib.scale_by_muon(adaptive=True)
  got = tx.update(g, tx.init(g))[0]
  want = tx.update(g.astype(jnp.float32), tx.init(g.astype(jnp.float32)))[0]
  assert got.dtype == jnp.float16 and float(np.abs(want).max()) < 6e4  # fits float16
  error = np.linalg.norm(np.asarray(got, np.float32) - want) / np.linalg.norm(want)
  assert error < 0.05, error
