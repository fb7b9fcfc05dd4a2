"""gradtx.contrib's curvature rules: Sophia, Hutchinson's estimator, SAM.

Each rule runs 50 steps on the zoo's multi-leaf problem against a float64
numpy reference (tests/reference_contrib_curvature.py), follows optax.contrib
where the two agree (and shows where they differ on purpose), converges on an
ill-conditioned quadratic and on Rosenbrock, keeps its hyperparameters in the
state, raises on bad input naming the stage, and runs packed.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx
import reference as R
import reference_contrib_curvature as RC
from zoo_harness import (Problem, ZooCase, assert_packed_matches_tree, assert_trees_close,
                         bad_hyperparameters_test, check_converges, counting_jit, coupled_tree,
                         coupled_wb_loss, decay_mask, ill_conditioned_quadratic, packed_params,
                         reference_tests, rosenbrock, run_updates, train_both_modes)


def _with_obj_fn(tx: gtx.GradientTransformation, obj_fn: Callable[[Any], jax.Array]
                 ) -> gtx.GradientTransformation:
  """``tx`` whose update is always given ``obj_fn`` (the harness passes no objective)."""
  def update(updates, state, params=None, **extra):
    return tx.update(updates, state, params, obj_fn=obj_fn, **extra)
  return gtx.GradientTransformation(tx.init, update, name=tx.name)


_CURVATURE = Problem().curvature


def _problem_objective(params: dict) -> jax.Array:
  """The harness problem's quadratic, sum_k 1/2 c_k p_k^2: its Hessian is diag(c)."""
  return sum(jnp.sum(0.5 * jnp.asarray(_CURVATURE[k], p.dtype) * p**2) for k, p in params.items())


def _problem_hessian_diagonal(params: dict) -> dict:
  # Hutchinson's estimate of a diagonal Hessian is exact: v * (c v) = c for v = +-1.
  return {k: RC.hutchinson(np.diag(_CURVATURE[k].reshape(-1)), np.ones(np.shape(_CURVATURE[k])))
          for k in params}


def _sophia_case(id_: str, step: float = 1.0, rtol32: float = 1e-4, **kwargs) -> ZooCase:
  learning_rate = kwargs.pop("learning_rate", None)
  if learning_rate is None:  # the primitive: no decay, no learning rate
    make = lambda: gtx.contrib.scale_by_sophia(**kwargs)  # noqa: E731
    ref_kwargs = {**kwargs, "weight_decay": 0.0}
  else:
    make = lambda: gtx.contrib.sophia(learning_rate, **kwargs)  # noqa: E731
    ref_kwargs = kwargs
  return ZooCase(id_, lambda: _with_obj_fn(make(), _problem_objective),
                 lambda: RC.sophia(learning_rate, hessian_diagonal=_problem_hessian_diagonal,
                                   **ref_kwargs), step=step, rtol32=rtol32)


def _paper_sam(lr: float, rho: float, **kwargs) -> ZooCase:
  return ZooCase(
      f"sam-sgd-k{kwargs.get('sync_period', 2)}",
      lambda: gtx.contrib.sam(gtx.sgd(lr), gtx.chain(gtx.contrib.normalize(), gtx.sgd(rho)),
                              **kwargs),
      lambda: RC.sam(R.sgd(lr), lambda: RC.chain(RC.normalize(), R.sgd(rho)), **kwargs),
      # The outer step returns to the cached params (theta - p): a leaf with ~1e-12
      # gradients needs ~1e-12 params for that difference to be representable in float32.
      grads="quadratic")


CASES = [
    _sophia_case("sophia", learning_rate=0.05, gamma=0.5, b2=0.9, update_interval=3,
                 weight_decay=1e-3, weight_decay_mask=decay_mask),
    # gamma h ~ 1e-4 c: the momentum's float32 rounding, divided by it, is ~1e-4 of an
    # unclipped step.
    _sophia_case("sophia-defaults", learning_rate=0.01, rtol32=1e-3),
    _sophia_case("scale_by_sophia-unclipped", step=-0.05, b1=0.9, b2=0.8, eps=0.5, gamma=2.0,
                 clip_threshold=None, update_interval=1),
    _paper_sam(0.05, 0.1),
    _paper_sam(0.05, 0.1, sync_period=1),
    ZooCase("sam-adamw-k3-momentum",
            lambda: gtx.contrib.sam(gtx.adamw(0.01, weight_decay=0.1),
                                    gtx.chain(gtx.contrib.normalize(), gtx.sgd(0.05, momentum=0.5)),
                                    sync_period=3),
            lambda: RC.sam(R.adamw(0.01, weight_decay=0.1),
                           lambda: RC.chain(RC.normalize(), R.sgd(0.05, momentum=0.5)),
                           sync_period=3)),
    ZooCase("sam-adam-k3-keep-state",
            lambda: gtx.contrib.sam(gtx.adam(0.01),
                                    gtx.chain(gtx.contrib.normalize(), gtx.sgd(0.05, momentum=0.5)),
                                    sync_period=3, reset_state=False),
            lambda: RC.sam(R.adam(0.01),
                           lambda: RC.chain(RC.normalize(), R.sgd(0.05, momentum=0.5)),
                           sync_period=3, reset_state=False)),
]


test_float32_jit, test_float64_nojit, test_float32_nojit_and_float64_jit = reference_tests(
    CASES, ["sophia", "sam-adamw-k3-momentum"])


# ----------------------------------------------------------------------------
# Hutchinson's estimator.


# A loss whose Hessian is not diagonal (so the probes matter) and not constant.
_coupled_loss = coupled_wb_loss


def _tree() -> dict:
  """The coupled loss's params, w and b."""
  return coupled_tree(with_m=False)


def _coupled_hessian(b: np.ndarray, w: np.ndarray) -> np.ndarray:
  """The Hessian of :func:`_coupled_loss` by hand, over (b, w) flattened in that order."""
  n = w.size
  hessian = np.zeros((3 + n, 3 + n))
  for i in range(n):  # sin(w_i) w_{i-1} + w_i^2 / 2
    j = (i - 1) % n
    hessian[3 + i, 3 + i] += 1.0 - np.sin(w[i]) * w[j]
    hessian[3 + i, 3 + j] += np.cos(w[i])
    hessian[3 + j, 3 + i] += np.cos(w[i])
  for k in range(3):  # b_k^2 w_k
    hessian[k, k] += 2 * w[k]
    hessian[k, 3 + k] += 2 * b[k]
    hessian[3 + k, k] += 2 * b[k]
  return hessian


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_hutchinson_is_v_times_hv_with_the_keys_probes(dtype, jit):
  params = jax.tree.map(lambda x: x.astype(dtype), _tree())
  tx = gtx.contrib.hutchinson_estimator_diag_hessian(random_seed=jax.random.key(5))
  state = tx.init(params)
  step = lambda s: tx.update(params, s, params, obj_fn=_coupled_loss)  # noqa: E731
  step = jax.jit(step) if jit else step
  hessian = _coupled_hessian(*(np.asarray(params[k], np.float64) for k in ("b", "w")))
  for _ in range(3):
    _, probe_key = jax.random.split(state.key)
    keys = jax.random.split(probe_key, 2)  # one per leaf, in leaf order: b, w
    v = np.concatenate([np.asarray(jax.random.rademacher(keys[0], (3,), jnp.float32)),
                        np.asarray(jax.random.rademacher(keys[1], (5,), jnp.float32))])
    want = RC.hutchinson(hessian, v)
    got, state = step(state)
    assert got["w"].dtype == dtype
    rtol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(got["b"], np.float64), want[:3], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(np.asarray(got["w"], np.float64), want[3:], rtol=rtol, atol=rtol)


def test_hutchinson_is_unbiased():
  params = _tree()
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  diagonal = np.diag(np.asarray(jax.hessian(lambda x: _coupled_loss(unravel(x)))(flat)))
  tx = gtx.contrib.hutchinson_estimator_diag_hessian(random_seed=3)

  def draw(state, _):
    estimate, state = tx.update(params, state, params, obj_fn=_coupled_loss)
    return state, jax.flatten_util.ravel_pytree(estimate)[0]

  _, draws = jax.jit(lambda s: jax.lax.scan(draw, s, length=4000))(tx.init(params))
  spread = np.std(np.asarray(draws), axis=0) / np.sqrt(4000)
  np.testing.assert_allclose(np.mean(np.asarray(draws), axis=0), diagonal, atol=5 * spread.max())


def test_hutchinson_draws_optaxs_probes_from_the_same_key():
  params = _tree()
  ours = gtx.contrib.hutchinson_estimator_diag_hessian()
  theirs = optax.contrib.hutchinson_estimator_diag_hessian()
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  for _ in range(4):
    u_ours, s_ours = ours.update(params, s_ours, params, obj_fn=_coupled_loss)
    u_theirs, s_theirs = theirs.update(params, s_theirs, params, obj_fn=_coupled_loss)
    for k in params:
      np.testing.assert_allclose(u_ours[k], u_theirs[k], rtol=1e-6, atol=1e-7)


def test_hutchinson_probes_each_leaf_in_its_dtype_where_optax_fails_on_mixed_dtypes():
  params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}

  def loss(p):  # Hessian diagonal: 2 for a, 6 b = 6 for b
    return jnp.sum(p["a"].astype(jnp.float32) ** 2) + jnp.sum(p["b"] ** 3)

  ours = gtx.contrib.hutchinson_estimator_diag_hessian()
  estimate, _ = ours.update(params, ours.init(params), params, obj_fn=loss)
  assert estimate["a"].dtype == jnp.bfloat16 and estimate["b"].dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(estimate["a"], np.float32), [2.0, 2.0, 2.0])
  np.testing.assert_array_equal(estimate["b"], [6.0, 6.0])
  theirs = optax.contrib.hutchinson_estimator_diag_hessian()
  with jax.numpy_dtype_promotion("standard"), pytest.raises(
      TypeError, match="primal and tangent arguments to jax.jvp do not match"):
    theirs.update(params, theirs.init(params), params, obj_fn=loss)


# ----------------------------------------------------------------------------
# Sophia and SAM against optax.contrib.


def test_sophia_follows_optax():
  params = _tree()
  kwargs = dict(learning_rate=0.05, gamma=0.5, update_interval=3, b2=0.9, weight_decay=1e-2)
  ours = run_updates(gtx.contrib.sophia(**kwargs), params, 30, gtx.apply_updates,
                     loss=_coupled_loss, obj_fn=_coupled_loss)
  with jax.numpy_dtype_promotion("standard"):
    theirs = run_updates(optax.contrib.sophia(**kwargs), params, 30, optax.apply_updates,
                         loss=_coupled_loss, obj_fn=_coupled_loss)
  assert np.abs(np.asarray(ours["w"][-1])).max() > 0
  assert_trees_close(ours, theirs)


def _sam_pair(sync_period, opaque_mode=False):
  ours = gtx.contrib.sam(gtx.sgd(0.05), gtx.chain(gtx.contrib.normalize(), gtx.sgd(0.1)),
                         sync_period=sync_period, opaque_mode=opaque_mode)
  theirs = optax.contrib.sam(optax.sgd(0.05),
                             optax.chain(optax.contrib.normalize(), optax.sgd(0.1)),
                             sync_period=sync_period, opaque_mode=opaque_mode)
  return ours, theirs


def _loss_grad_fn(params):
  return lambda p, i: jax.grad(_coupled_loss)(p)


@pytest.mark.parametrize("sync_period", [2, 3])
def test_sam_follows_optax(sync_period):
  ours, theirs = _sam_pair(sync_period)
  params = _tree()
  u_ours = run_updates(ours, params, 24, gtx.apply_updates, loss=_coupled_loss)
  with jax.numpy_dtype_promotion("standard"):
    u_theirs = run_updates(theirs, params, 24, optax.apply_updates, loss=_coupled_loss)
  assert_trees_close(u_ours, u_theirs)


@pytest.mark.parametrize("sync_period", [1, 2, 3])
def test_sam_opaque_mode_follows_optax(sync_period):
  ours, theirs = _sam_pair(sync_period, opaque_mode=True)
  params = _tree()
  u_ours = run_updates(ours, params, 20, gtx.apply_updates, loss=_coupled_loss,
                       grad_fn=_loss_grad_fn)
  with jax.numpy_dtype_promotion("standard"):
    u_theirs = run_updates(theirs, params, 20, optax.apply_updates, loss=_coupled_loss,
                           grad_fn=_loss_grad_fn)
  assert_trees_close(u_ours, u_theirs)


def test_sam_with_sync_period_1_is_the_outer_optimizer_where_optax_undoes_steps():
  ours, theirs = _sam_pair(1)
  params = _tree()
  u_ours = run_updates(ours, params, 6, gtx.apply_updates, loss=_coupled_loss)
  u_sgd = run_updates(gtx.sgd(0.05), params, 6, gtx.apply_updates, loss=_coupled_loss)
  assert_trees_close(u_ours, u_sgd, rtol=1e-6)
  with jax.numpy_dtype_promotion("standard"):
    u_theirs = run_updates(theirs, params, 6, optax.apply_updates, loss=_coupled_loss)
  # optax's second step starts again from the initial params: theta_2 = theta_0 + sgd(g(theta_1)).
  theta1 = jax.tree.map(jnp.add, params, jax.tree.map(lambda u: u[0], u_sgd))
  theta2 = jax.tree.map(jnp.add, theta1, jax.tree.map(lambda u: u[1], u_theirs))
  want = jax.tree.map(lambda p, g: p - 0.05 * g, params, jax.grad(_coupled_loss)(theta1))
  assert_trees_close(theta2, want)
  assert not np.allclose(u_theirs["w"][1], u_sgd["w"][1])


def test_normalize_follows_optax_and_keeps_a_zero_gradient_zero():
  ours, theirs = gtx.contrib.normalize(), optax.contrib.normalize()
  grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}
  assert_trees_close(ours.update(grads, ours.init(grads))[0],
                     theirs.update(grads, theirs.init(grads))[0], rtol=1e-7)
  zeros = jax.tree.map(jnp.zeros_like, grads)
  assert np.isnan(np.asarray(theirs.update(zeros, theirs.init(zeros))[0]["a"])).all()
  assert_trees_close(ours.update(zeros, ours.init(zeros))[0], zeros, rtol=0, atol=0)


# ----------------------------------------------------------------------------
# Convergence.


def _sophia_on(f: Callable, **kwargs) -> gtx.GradientTransformation:
  return _with_obj_fn(gtx.contrib.sophia(**kwargs), f)


def _sam(outer: gtx.GradientTransformation,
         rho: gtx.ScalarOrSchedule) -> gtx.GradientTransformation:
  return gtx.contrib.sam(outer, gtx.chain(gtx.contrib.normalize(), gtx.sgd(rho)))


# (name, quadratic optimizer, Rosenbrock optimizer, quadratic steps, Rosenbrock steps);
# success is f < 1e-3 on the quadratic and |x - (1, 1)| < 0.05 on Rosenbrock.
CONVERGENCE = [
    ("sophia", lambda: _sophia_on(ill_conditioned_quadratic, learning_rate=0.01),
     lambda: _sophia_on(rosenbrock, learning_rate=0.01, weight_decay=0.0), 1000, 3000),
    # The adversary's step rho sets how far from the minimum SAM settles: a decaying rho.
    ("sam", lambda: _sam(gtx.sgd(0.015), gtx.schedules.exponential_decay(0.01, 100, 0.5)),
     lambda: _sam(gtx.adam(0.02), gtx.schedules.exponential_decay(0.01, 500, 0.5)), 2000, 6000),
]


@pytest.mark.parametrize("name, make_quad, make_rosen, quad_steps, rosen_steps", CONVERGENCE,
                         ids=[c[0] for c in CONVERGENCE])
def test_converges(name, make_quad, make_rosen, quad_steps, rosen_steps):
  check_converges(name, make_quad, make_rosen, quad_steps, rosen_steps)


# ----------------------------------------------------------------------------
# Hyperparameters by name, without retracing.


def test_sophia_hyperparameters_read_and_set_by_name_without_retracing():
  params = _tree()
  tx = gtx.contrib.sophia(0.1, weight_decay=0.0)
  state = tx.init(params)
  assert set(gtx.hparams(state)) == {
      "sophia.b1", "sophia.b2", "sophia.eps", "sophia.gamma", "sophia.clip_threshold",
      "sophia.update_interval", "decay.weight_decay", "lr.learning_rate"}
  assert int(gtx.hparams(state)["sophia.update_interval"]) == 10
  step, traces = counting_jit(lambda state: tx.update(jax.grad(_coupled_loss)(params), state,
                                                      params, obj_fn=_coupled_loss))

  u1, s1 = step(state)
  # The first step is clipped (h = 0): the clip threshold and the rate scale it.
  u2, _ = step(gtx.set_hparams(state, {"sophia.clip_threshold": 0.5, "lr.learning_rate": 0.3}))
  assert_trees_close(u2, jax.tree.map(lambda u: 1.5 * u, u1), rtol=1e-6)
  # With update_interval 1 the second step refreshes h too; with 10 it keeps it.
  _, s_keep = step(s1)
  _, s_refresh = step(gtx.set_hparams(s1, {"sophia.update_interval": 1}))
  assert_trees_close(s_keep["sophia"].nu, s1["sophia"].nu, rtol=0, atol=0)
  assert not np.allclose(s_refresh["sophia"].nu["w"], s1["sophia"].nu["w"])
  assert len(traces) == 1


def test_sam_hyperparameters_read_apart_and_set_without_retracing():
  params = _tree()
  tx = gtx.contrib.sam(gtx.sgd(0.05), gtx.chain(gtx.contrib.normalize(), gtx.sgd(0.1)))
  state = tx.init(params)
  names = gtx.hparams(state)
  assert {"optimizer.lr.learning_rate", "adv_optimizer.sgd.lr.learning_rate"} <= set(names)
  step, traces = counting_jit(lambda state: tx.update(jax.grad(_coupled_loss)(params), state,
                                                      params))

  u1, s1 = step(state)
  u2, _ = step(gtx.set_hparams(state, {"adv_optimizer.sgd.lr.learning_rate": 0.3}))
  assert_trees_close(u2, jax.tree.map(lambda u: 3 * u, u1), rtol=1e-6)
  # The outer step of the period, from the adversarial point.
  adv_params = gtx.apply_updates(params, u1)
  u3, _ = jax.jit(tx.update)(jax.grad(_coupled_loss)(adv_params),
                             gtx.set_hparams(s1, {"optimizer.lr.learning_rate": 0.5}), adv_params)
  want = jax.tree.map(lambda u, g: -u - 0.5 * g, u1, jax.grad(_coupled_loss)(adv_params))
  assert_trees_close(u3, want)
  assert len(traces) == 1


def test_sam_reset_keeps_the_adversarys_schedule_going_where_optax_restarts_it():
  # The adversary's rho: 0.1, 0.2, 0.3, ... by its own step count.
  rho = gtx.schedules.linear_schedule(0.1, 10.1, 100)
  params = {"w": jnp.ones(2)}
  grads = {"w": jnp.array([3.0, 4.0])}  # |g| = 5: the ascent step is rho g / |g|
  adversarial = []
  for make, apply in [(gtx, gtx.apply_updates), (optax, optax.apply_updates)]:
    tx = make.contrib.sam(make.sgd(0.0), make.chain(make.contrib.normalize(), make.sgd(rho)))
    state, steps = tx.init(params), []
    with jax.numpy_dtype_promotion("standard"):
      for _ in range(3):  # adversarial, outer, adversarial
        updates, state = tx.update(grads, state, params)
        steps.append(float(updates["w"][0]))
        _, state = tx.update(grads, state, apply(params, updates))
    adversarial.append(steps)
  np.testing.assert_allclose(adversarial[0], [0.06, 0.12, 0.18], rtol=1e-5)  # rho(0), (1), (2)
  np.testing.assert_allclose(adversarial[1], [0.06, 0.06, 0.06], rtol=1e-5)  # rho(0) each time


def test_sam_reset_keeps_values_set_by_name():
  params = _tree()
  tx = gtx.contrib.sam(gtx.sgd(0.05), gtx.chain(gtx.contrib.normalize(), gtx.sgd(0.1)))
  state = gtx.set_hparams(tx.init(params), {"adv_optimizer.sgd.lr.learning_rate": 0.2})
  for _ in range(2):
    _, state = tx.update(jax.grad(_coupled_loss)(params), state, params)
  assert float(gtx.hparams(state)["adv_optimizer.sgd.lr.learning_rate"]) == pytest.approx(0.2)


# ----------------------------------------------------------------------------
# Errors a person can act on.


BAD_HYPERPARAMETERS = [
    (lambda: gtx.contrib.sophia(0.1, b1=1.0), r"sophia: b1 must be in \[0, 1\), got 1.0"),
    (lambda: gtx.contrib.sophia(0.1, b2=-0.1), r"sophia: b2 must be in \[0, 1\)"),
    (lambda: gtx.contrib.sophia(0.1, eps=0.0), r"sophia: eps must be in \(0, inf\)"),
    (lambda: gtx.contrib.sophia(0.1, gamma=-1.0), r"sophia: gamma must be in \[0, inf\)"),
    (lambda: gtx.contrib.sophia(0.1, clip_threshold=0.0),
     r"sophia: clip_threshold must be in \(0, inf\]"),
    (lambda: gtx.contrib.sophia(0.1, update_interval=0),
     r"sophia: update_interval must be in \[1, 2147483647\] \(an integer\), got 0"),
    (lambda: gtx.contrib.sophia(0.1, print_win_rate_every_n_steps=-1),
     r"sophia: print_win_rate_every_n_steps must be in \[0, 2147483647\] \(an integer\)"),
    # A list of one count was taken (each entry is in the range), as was sam's below.
    (lambda: gtx.contrib.sophia(0.1, print_win_rate_every_n_steps=[10]),
     r"^sophia: print_win_rate_every_n_steps must be a number in \[0, .*got \[10\] \(checked by "
     r"scale_by_sophia\)$"),
    (lambda: gtx.contrib.sophia(-0.1), r"sophia: learning_rate must be in"),
    (lambda: gtx.contrib.sam(gtx.sgd(0.1), gtx.sgd(0.1), sync_period=0),
     r"sam: sync_period must be in \[1, 2147483647\] \(an integer\), got 0"),
    (lambda: gtx.contrib.sam(gtx.sgd(0.1), gtx.sgd(0.1), sync_period=1.5),
     r"sam: sync_period must be in \[1, 2147483647\] \(an integer\), got 1.5"),
    (lambda: gtx.contrib.sam(gtx.sgd(0.1), gtx.sgd(0.1), sync_period=[2]),
     r"^sam: sync_period must be a number in \[1, .*got \[2\]$"),
]


test_bad_hyperparameters_raise_naming_the_stage_and_range = bad_hyperparameters_test(
    BAD_HYPERPARAMETERS)


def test_missing_arguments_raise_naming_the_stage():
  params = _tree()
  tx = gtx.contrib.sophia(0.1)
  with pytest.raises(gtx.MissingArgumentError,
                     match=r"stage 'sophia.hessian_diagonal_fn': hutchinson_estimator_diag_hessian "
                           r"needs the objective .* obj_fn="):
    tx.update(params, tx.init(params), params)
  with pytest.raises(gtx.MissingArgumentError, match=r"stage 'sophia': scale_by_sophia needs the "
                                                     r"parameters"):
    tx.update(params, tx.init(params), obj_fn=_coupled_loss)
  sam = gtx.contrib.sam(gtx.sgd(0.1), gtx.sgd(0.1), opaque_mode=True)
  with pytest.raises(gtx.MissingArgumentError, match=r"sam: opaque_mode=True .* grad_fn="):
    sam.update(params, sam.init(params), params)
  with pytest.raises(gtx.MissingArgumentError, match=r"sam needs the parameters"):
    sam.update(params, sam.init(params))


def test_sam_given_the_state_of_other_params_names_itself():
  # The message lacked "sam: " (the check was not given the stage).
  sam = gtx.contrib.sam(gtx.sgd(0.1), gtx.sgd(0.1))
  params = {"w": jnp.ones(2)}
  with pytest.raises(gtx.StructureError, match=r"^sam: state.cache and params differ in shape "
                                               r"at key path \['w'\]"):
    sam.update(params, sam.init({"w": jnp.ones(3)}), params)


def test_sophia_prints_the_win_rate_when_asked(capfd):
  params = _tree()
  tx = gtx.contrib.sophia(0.1, verbose=True, print_win_rate_every_n_steps=2)
  state = tx.init(params)
  step = jax.jit(lambda s: tx.update(params, s, params, obj_fn=_coupled_loss))
  for _ in range(4):
    _, state = step(state)
  jax.effects_barrier()
  assert capfd.readouterr().out.count("Sophia optimizer win rate: ") == 2


def test_sophia_printing_the_win_rate_eagerly_compiles_nothing_again(capfd, compiles):
  # Its lax.cond (new branch closures at each step) was compiled again at every eager step.
  params = _tree()
  tx = gtx.contrib.sophia(0.1, verbose=True, print_win_rate_every_n_steps=2)
  state = tx.init(params)
  counts = []
  for _ in range(4):
    n, (_, state) = compiles(lambda: tx.update(params, state, params, obj_fn=_coupled_loss))
    counts.append(n)
  assert counts[2:] == [0, 0], counts
  jax.effects_barrier()
  assert capfd.readouterr().out.count("Sophia optimizer win rate: ") == 2


def test_sophia_asked_for_the_win_rate_steps_a_tree_without_float_leaves(capfd):
  # The count of unclipped entries summed no leaves: Python's 0, whose .astype raised.
  params = {"step": jnp.arange(3)}  # an integer buffer: no gradient, no update
  tx = gtx.contrib.sophia(0.1, verbose=True, print_win_rate_every_n_steps=1)
  updates, _ = tx.update({"step": None}, tx.init(params), params,
                         obj_fn=lambda p: jnp.float32(0.0))
  assert updates == {"step": None}
  jax.effects_barrier()
  assert "win rate" not in capfd.readouterr().out


# ----------------------------------------------------------------------------
# Packed mode: the tree mode's updates and state.


def _numbers(x):
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return np.asarray(x, np.float64)


@pytest.mark.parametrize("make, extra", [
    (lambda: gtx.contrib.sophia(0.05, gamma=0.5, update_interval=2), "obj_fn"),
    (lambda: gtx.contrib.sam(gtx.adam(0.05), gtx.chain(gtx.contrib.normalize(), gtx.sgd(0.1))),
     None),
    (lambda: gtx.contrib.sam(gtx.adam(0.05), gtx.chain(gtx.contrib.normalize(), gtx.sgd(0.1)),
                             sync_period=3, opaque_mode=True), "grad_fn"),
], ids=["sophia", "sam", "sam-opaque"])
def test_packed_gives_tree_modes_updates_and_state(make, extra):
  def update_kwargs(loss):
    if extra == "grad_fn":
      return {"grad_fn": lambda p, i: jax.grad(loss)(p)}
    return {"obj_fn": loss} if extra == "obj_fn" else {}

  params = packed_params()
  layout, (tree, _, _), (flat, _, _) = train_both_modes(make(), params, 6, extra=update_kwargs)
  assert not np.allclose(tree[0]["dense"]["w"], params["dense"]["w"])
  assert_packed_matches_tree(layout, tree, flat, as_array=_numbers)


def test_public_names():
  for name in ["HutchinsonState", "NormalizeState", "SAMState", "SophiaState",
               "hutchinson_estimator_diag_hessian", "normalize", "sam", "scale_by_sophia",
               "sophia"]:
    assert name in gtx.contrib.__all__, name
    # optax 0.2.8 keeps its primitive in optax.contrib._sophia, unexported.
    assert hasattr(optax.contrib, name) or name == "scale_by_sophia", name
  state = gtx.contrib.sophia(0.1).init(_tree())
  assert isinstance(state["sophia"], gtx.contrib.SophiaState)
  assert isinstance(state["sophia"].hessian_fn_state, gtx.contrib.HutchinsonState)
