"""gradtx.contrib's schedule-free optimizers and DP-SGD.

Schedule-free SGD, AdamW and the wrapper around other bases run 50 steps on
the zoo's multi-leaf problem against a float64 numpy reference that keeps
the paper's x and z sequences (tests/reference_contrib_schedule_free.py),
follow optax.contrib, converge, evaluate at the average in a training loop,
keep their hyperparameters in the state, raise on bad input and run packed.
DP-SGD's clipping is checked exactly against numpy, its noise by its
statistics and against optax's draws from the same key.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx
import reference as R
import reference_contrib_schedule_free as RS
from zoo_harness import (ZooCase, assert_packed_matches_tree, assert_trees_close,
                         bad_hyperparameters_test, check_converges,
                         check_zero_gradients_give_zero_updates, counting_jit, coupled_loss,
                         coupled_tree, packed_params, reference_tests, run_updates,
                         train_both_modes)

# Rising, so that max_lr and the weights change each step (a falling one keeps its first value).
_RATE = gtx.schedules.linear_schedule(0.1, 0.3, 40)

# Schedule-free keeps z next to the params and steps by c (z - y): both must hold the
# steps' digits, so every case runs on the quadratic, whose tiny leaf has tiny params
# as well as tiny gradients (the noisy problem's tiny leaf has params near 1, which
# a step of 1e-13 cannot move in float32 or float64).
_QUADRATIC = "quadratic"

CASES = [
    ZooCase("schedule_free_sgd", lambda: gtx.contrib.schedule_free_sgd(0.2),
            lambda: RS.schedule_free_sgd(0.2), grads=_QUADRATIC),
    ZooCase("schedule_free_sgd-options",
            lambda: gtx.contrib.schedule_free_sgd(0.3, warmup_steps=5, b1=0.8, weight_decay=0.1,
                                                  weight_lr_power=1.0),
            lambda: RS.schedule_free_sgd(0.3, warmup_steps=5, b1=0.8, weight_decay=0.1,
                                         weight_lr_power=1.0), grads=_QUADRATIC),
    # A schedule is read at the step's count (from 0) for the step and the averaging weights.
    ZooCase("schedule_free_sgd-schedule", lambda: gtx.contrib.schedule_free_sgd(_RATE, b1=0.95),
            lambda: RS.schedule_free_sgd(_RATE, b1=0.95), grads=_QUADRATIC),
    ZooCase("schedule_free_adamw", lambda: gtx.contrib.schedule_free_adamw(0.05),
            lambda: RS.schedule_free_adamw(0.05), grads=_QUADRATIC),
    ZooCase("schedule_free_adamw-options",
            lambda: gtx.contrib.schedule_free_adamw(0.1, warmup_steps=10, b1=0.95, b2=0.99,
                                                    eps=1e-6, weight_decay=0.1,
                                                    weight_lr_power=1.5),
            lambda: RS.schedule_free_adamw(0.1, warmup_steps=10, b1=0.95, b2=0.99, eps=1e-6,
                                           weight_decay=0.1, weight_lr_power=1.5),
            grads=_QUADRATIC),
    ZooCase("schedule_free-adam",
            lambda: gtx.contrib.schedule_free(gtx.adam(0.05, b1=0.0), 0.05, b1=0.9),
            lambda: RS.schedule_free(R.adam(0.05, b1=0.0), 0.05, b1=0.9), grads=_QUADRATIC),
]


# On complex leaves (the tiny leaf among them): z, x and y interpolate complex values,
# AdamW's second moment averages |g|^2.
_BY_ID = {c.id: c for c in CASES}
CASES += [dataclasses.replace(_BY_ID[i], id=i + "-complex",
                              complex_leaves=("vector", "matrix", "cube", "zeros", "tiny"))
          for i in ["schedule_free_sgd-options", "schedule_free_adamw-options",
                    "schedule_free-adam"]]

test_float32_jit, test_float64_nojit, test_float32_nojit_and_float64_jit = reference_tests(
    CASES, ["schedule_free_sgd", "schedule_free_adamw", "schedule_free-adam"])


# ----------------------------------------------------------------------------
# Against optax.contrib.


def _run(tx: Any, params: dict, steps: int, eval_params: Callable) -> tuple[Any, Any]:
  """``steps`` jitted steps on the coupled loss: every step's updates and eval params."""
  return run_updates(tx, params, steps, lambda p, u: jax.tree.map(jnp.add, p, u),
                     also=eval_params)


# A constant learning rate: where a schedule changes, optax weighs each step by the next
# step's rate (test_follows_optax_given_the_weights_rate_one_step_late).
OPTAX_PAIRS = [
    ("schedule_free_sgd", lambda m: m.schedule_free_sgd(0.1)),
    ("schedule_free_sgd-options", lambda m: m.schedule_free_sgd(
        0.2, b1=0.8, weight_decay=0.1, weight_lr_power=1.0)),
    ("schedule_free_adamw", lambda m: m.schedule_free_adamw(0.05)),
    ("schedule_free_adamw-options", lambda m: m.schedule_free_adamw(
        0.1, b1=0.95, b2=0.99, weight_decay=0.1, weight_lr_power=1.5)),
    ("schedule_free-sgd", lambda m: m.schedule_free(
        (gtx if m is gtx.contrib else optax).sgd(0.1), 0.1, b1=0.7)),
]


@pytest.mark.parametrize("make", [p[1] for p in OPTAX_PAIRS], ids=[p[0] for p in OPTAX_PAIRS])
def test_follows_optax(make):
  params = coupled_tree()
  ours = _run(make(gtx.contrib), params, 30, gtx.contrib.schedule_free_eval_params)
  with jax.numpy_dtype_promotion("standard"):
    theirs = _run(make(optax.contrib), params, 30, optax.contrib.schedule_free_eval_params)
  assert np.abs(np.asarray(ours[0]["w"][-1])).max() > 1e-3
  # optax forms each update as a difference of params (and recovers x by dividing by
  # b1): float32 rounding of a few 1e-7 of the params, compared at the params' scale.
  assert_trees_close(ours, theirs, rtol=1e-5, atol=2e-6)


_WARMUP = gtx.schedules.warmup_constant_schedule(0.0, 0.1, 10)


@pytest.mark.parametrize("base", ["sgd", "adamw"])
def test_follows_optax_given_the_weights_rate_one_step_late(base):
  """optax reads the weights' rate at step_count (from 1), the step's at count (from 0):
  given the schedule one step late for the weights, it weighs each step as gradtx does."""
  def make(m, late):
    lib = gtx if m is gtx.contrib else optax
    tx = (lib.sgd(_WARMUP) if base == "sgd"
          else lib.chain(lib.scale_by_rms(0.99, eps_in_sqrt=False, bias_correction=True),
                         lib.add_decayed_weights(0.1), lib.scale_by_learning_rate(_WARMUP)))
    return m.schedule_free(tx, late, b1=0.9)

  params = coupled_tree()
  ours = _run(make(gtx.contrib, _WARMUP), params, 30, gtx.contrib.schedule_free_eval_params)
  with jax.numpy_dtype_promotion("standard"):
    theirs = _run(make(optax.contrib, lambda n: _WARMUP(n - 1)), params, 30,
                  optax.contrib.schedule_free_eval_params)
  assert_trees_close(ours, theirs, rtol=1e-5, atol=2e-6)


def test_each_step_is_weighed_by_the_learning_rate_it_was_taken_with():
  """The paper's c_{t+1} = gamma_t^2 / sum_{i<=t} gamma_i^2 with a schedule 0.1, 0.2, ...:
  on f = x^2 / 2 from x = 1 (b1 = 0.5), z_2 = x_2 = y_2 = 0.9, z_3 = 0.9 - 0.2 * 0.9 = 0.72 and
  c_3 = 0.04 / 0.05, so x_3 = 0.2 * 0.9 + 0.8 * 0.72 = 0.756. optax 0.2.8 weighs step t by
  gamma_{t+1}: c_3 = 0.09 / 0.13, x_3 = 0.7754."""
  rate = gtx.schedules.linear_schedule(0.1, 1.1, 10)
  tx = gtx.contrib.schedule_free(gtx.sgd(rate), rate, b1=0.5)
  params = jnp.array(1.0)
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(params, state, params)
    params = gtx.apply_updates(params, updates)
  assert float(state.weight_sum) == pytest.approx(0.01 + 0.04)
  assert float(gtx.contrib.schedule_free_eval_params(state, params)) == pytest.approx(0.756)


@pytest.mark.parametrize("name", ["schedule_free_sgd", "schedule_free_adamw"])
def test_the_warmup_is_the_papers_the_first_step_moves(name):
  """Algorithm 1's gamma_t = gamma min(1, t / W) (the authors' (k + 1) / W): with W = 4 the
  steps take 0.25, 0.5, 0.75, 1 times the rate. On f = x^2 / 2 from x = 1, SGD's first step
  is -0.25 (c_2 = 1: y_2 = z_2); optax 0.2.8's warmup starts from 0 and its first step is 0."""
  tx = getattr(gtx.contrib, name)(1.0, warmup_steps=4, b1=0.5)
  params = jnp.array(1.0)
  state = tx.init(params)
  rates = []
  for i in range(5):
    updates, state = tx.update(params, state, params)
    if i == 0 and name == "schedule_free_sgd":
      assert float(updates) == pytest.approx(-0.25)
    assert float(updates) != 0.0
    params = gtx.apply_updates(params, updates)
    h = gtx.hparams(state)
    assert float(h["schedule_free.learning_rate"]) == float(h["schedule_free.lr.learning_rate"])
    rates.append(float(h["schedule_free.learning_rate"]))
  np.testing.assert_allclose(rates, [0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-6)


def test_the_warmup_follows_optax_given_the_papers_schedule():
  """optax's schedule_free, given Algorithm 1's warmup as its schedule (one step late for the
  weights, see above), steps as gradtx's warmup_steps."""
  def paper(count):
    return 0.2 * jnp.minimum(1.0, (count + 1) / 5)

  params = coupled_tree()
  ours = _run(gtx.contrib.schedule_free_sgd(0.2, warmup_steps=5, b1=0.8, weight_decay=0.1,
                                            weight_lr_power=1.0),
              params, 30, gtx.contrib.schedule_free_eval_params)
  with jax.numpy_dtype_promotion("standard"):
    tx = optax.contrib.schedule_free(
        optax.chain(optax.add_decayed_weights(0.1), optax.sgd(paper)),
        lambda n: paper(n - 1), b1=0.8, weight_lr_power=1.0)
    theirs = _run(tx, params, 30, optax.contrib.schedule_free_eval_params)
  assert_trees_close(ours, theirs, rtol=1e-5, atol=2e-6)


def test_eval_params_read_optax_states_too():
  params = coupled_tree()
  tx = optax.contrib.schedule_free_sgd(0.1)
  with jax.numpy_dtype_promotion("standard"):
    updates, state = tx.update(jax.grad(coupled_loss)(params), tx.init(params), params)
    params = optax.apply_updates(params, updates)
    want = optax.contrib.schedule_free_eval_params(state, params)
  assert_trees_close(gtx.contrib.schedule_free_eval_params(state, params), want)


def test_eval_params_of_an_ensemble_inside_and_outside_vmap_agree():
  # Outside vmap, a batched b1 of shape (3,) met leaves of shape (3, ...): under strict
  # rank promotion a ValueError, under numpy's rules broadcast against the last axis.
  tx = gtx.contrib.schedule_free_sgd(0.1)
  params = jax.tree.map(lambda x: jnp.stack([x, 2 * x, -x]), coupled_tree())
  states = jax.vmap(lambda p, b1: gtx.set_hparams(tx.init(p), {"schedule_free.b1": b1}))(
      params, jnp.array([0.5, 0.9, 1.0]))
  states = jax.vmap(lambda p, s: tx.update(jax.grad(coupled_loss)(p), s, p)[1])(params, states)
  inside = jax.vmap(gtx.contrib.schedule_free_eval_params)(states, params)
  outside = gtx.contrib.schedule_free_eval_params(states, params)
  assert_trees_close(outside, inside, rtol=0, atol=0)
  member = jax.tree.map(lambda x: x[0], (states, params))
  assert_trees_close(jax.tree.map(lambda x: x[0], outside),
                     gtx.contrib.schedule_free_eval_params(*member), rtol=0, atol=0)


def test_wraps_an_optax_base_as_it_wraps_a_gradtx_one():
  params = coupled_tree()
  eval_params = gtx.contrib.schedule_free_eval_params
  ours = _run(gtx.contrib.schedule_free(gtx.adam(0.05, b1=0.0), 0.05), params, 30, eval_params)
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam needs standard promotion
    wrapped = _run(gtx.contrib.schedule_free(optax.adam(0.05, b1=0.0), 0.05), params, 30,
                   eval_params)
  # The two Adams round differently in float32; 30 steps grow that to a few 1e-6.
  assert_trees_close(ours, wrapped, rtol=1e-4, atol=5e-6)


def test_a_bare_stage_base_reads_under_its_own_name():
  tx = gtx.contrib.schedule_free(gtx.scale_by_adam(b1=0.0), 1.0)
  names = set(gtx.hparams(tx.init(coupled_tree())))
  assert names == {"learning_rate", "b1", "weight_lr_power", "scale_by_adam.b1",
                   "scale_by_adam.b2", "scale_by_adam.eps", "scale_by_adam.eps_root"}


def _float64_updates(lr: float, b1: float, y: np.ndarray, g: np.ndarray, steps: int):
  """Schedule-free SGD's updates y_{t+1} - y_t from the paper's recursion, in float64."""
  z, x, weight_sum, out = y.copy(), y.copy(), 0.0, []
  for _ in range(steps):
    weight_sum += lr ** 2
    c = lr ** 2 / weight_sum
    z = z - lr * g
    x = (1 - c) * x + c * z
    y_new = (1 - b1) * z + b1 * x
    out.append(y_new - y)
    y = y_new
  return np.array(out)


def test_small_steps_keep_more_digits_than_optax_recovering_x():
  """optax recovers x = (y - (1 - b1) z) / b1, averages and subtracts y, so its update
  carries the params' rounding (spacing 6e-5 at 1000) in full; gradtx's carries it in
  c (z_{t+1} - y_t) only, c = 1/t here."""
  params = {"w": jnp.full(3, 1000.0, jnp.float32)}
  grads = {"w": jnp.array([1.0, -2.0, 3.0], jnp.float32)}
  reference = _float64_updates(1e-3, 0.9, np.full(3, 1000.0), np.array([1.0, -2.0, 3.0]), 30)

  def worst_error(tx):
    state, y, errors = tx.init(params), params, []
    with jax.numpy_dtype_promotion("standard"):  # optax's needs standard promotion
      for want in reference:
        updates, state = tx.update(grads, state, y)
        y = jax.tree.map(lambda a, b: a + b, y, updates)
        errors.append(np.abs(np.asarray(updates["w"], np.float64) - want).max()
                      / np.abs(want).max())
    return max(errors)

  ours = worst_error(gtx.contrib.schedule_free_sgd(1e-3))
  theirs = worst_error(optax.contrib.schedule_free_sgd(1e-3))
  assert ours < 0.015 and theirs > 0.05, (ours, theirs)


# ----------------------------------------------------------------------------
# Convergence, evaluation at the average, a real problem.


CONVERGENCE = [
    ("schedule_free_sgd", lambda: gtx.contrib.schedule_free_sgd(0.015),
     lambda: gtx.contrib.schedule_free_sgd(3e-3), 1000, 10000),
    ("schedule_free_adamw", lambda: gtx.contrib.schedule_free_adamw(0.1),
     lambda: gtx.contrib.schedule_free_adamw(0.02), 1000, 5000),
]


@pytest.mark.parametrize("name, make_quad, make_rosen, quad_steps, rosen_steps", CONVERGENCE,
                         ids=[c[0] for c in CONVERGENCE])
def test_converges(name, make_quad, make_rosen, quad_steps, rosen_steps):
  check_converges(name, make_quad, make_rosen, quad_steps, rosen_steps)


def _classification_data() -> tuple[jax.Array, jax.Array]:
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(512, 20))
  labels = (inputs @ rng.normal(size=20) + 0.5 * rng.normal(size=512) > 0)
  return jnp.asarray(inputs, jnp.float32), jnp.asarray(labels, jnp.float32)


def test_equinox_style_loop_evaluates_at_the_average():
  """An equinox model trained with schedule-free AdamW, evaluated at x by combining
  ``schedule_free_eval_params`` with the model's static part."""
  inputs, labels = _classification_data()
  model = eqx.nn.Linear(20, 1, key=jax.random.key(0))
  tx = gtx.contrib.schedule_free_adamw(0.1, warmup_steps=10)

  def loss(model, inputs, labels):
    logits = jax.vmap(model)(inputs)[:, 0]
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))

  @eqx.filter_jit
  def train_step(model, state):
    grads = eqx.filter_grad(loss)(model, inputs, labels)
    updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_array))
    return eqx.apply_updates(model, updates), state

  state = tx.init(eqx.filter(model, eqx.is_array))
  first = float(loss(model, inputs, labels))
  for _ in range(150):
    model, state = train_step(model, state)
  params, static = eqx.partition(model, eqx.is_array)
  eval_model = eqx.combine(gtx.contrib.schedule_free_eval_params(state, params), static)
  at_y, at_x = float(loss(model, inputs, labels)), float(loss(eval_model, inputs, labels))
  assert at_x < 0.2 < first, (first, at_y, at_x)
  # x is the average: it differs from the params trained on, and not by rounding.
  assert not np.allclose(eval_model.weight, model.weight, rtol=1e-3)
  # x recovered from y and z is the paper's (y - (1 - b1) z) / b1.
  z = state["schedule_free"].z
  np.testing.assert_allclose(eval_model.weight, (model.weight - 0.1 * z.weight) / 0.9,
                             rtol=1e-4, atol=1e-5)


def test_schedule_free_adamw_matches_adamw_with_a_tuned_cosine_schedule():
  """Logistic regression: schedule-free AdamW (warmup, constant rate) at its average
  reaches the loss of AdamW with warmup and cosine decay, each at its best rate."""
  inputs, labels = _classification_data()
  steps = 300

  def loss(params):
    logits = inputs @ params["w"] + params["b"]
    return (jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
            + 1e-3 * jnp.sum(params["w"] ** 2))

  def train(tx, evaluate):
    def step(carry, _):
      params, state = carry
      updates, state = tx.update(jax.grad(loss)(params), state, params)
      return (gtx.apply_updates(params, updates), state), None
    params = {"w": jnp.zeros(20), "b": jnp.zeros(())}
    (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), length=steps)
    return loss(evaluate(state, params))

  rates = [0.03, 0.1, 0.3]
  cosine = [train(gtx.adamw(gtx.schedules.warmup_cosine_decay_schedule(0.0, lr, 20, steps),
                            weight_decay=0.0), lambda s, p: p) for lr in rates]
  free = [train(gtx.contrib.schedule_free_adamw(lr, warmup_steps=20),
                gtx.contrib.schedule_free_eval_params) for lr in rates]
  best_cosine, best_free = min(map(float, cosine)), min(map(float, free))
  assert best_free < 1.01 * best_cosine, (cosine, free)
  assert best_free < 0.15


# ----------------------------------------------------------------------------
# Hyperparameters in the state.


def test_hyperparameters_read_and_set_by_name_without_retracing():
  params = coupled_tree()
  tx = gtx.contrib.schedule_free_sgd(0.1, weight_decay=0.0)
  state = tx.init(params)
  assert set(gtx.hparams(state)) == {
      "schedule_free.learning_rate", "schedule_free.b1", "schedule_free.weight_lr_power",
      "schedule_free.lr.learning_rate", "schedule_free.decay.weight_decay"}
  assert float(state["schedule_free"].b1) == pytest.approx(0.9)

  def train_step(params, state):
    updates, state = tx.update(jax.grad(coupled_loss)(params), state, params)
    return gtx.apply_updates(params, updates), updates, state

  step, traces = counting_jit(train_step)

  new = {"schedule_free.learning_rate": 0.3, "schedule_free.lr.learning_rate": 0.3,
         "schedule_free.b1": 0.5, "schedule_free.weight_lr_power": 1.0,
         "schedule_free.decay.weight_decay": 0.2}
  ref = RS.schedule_free_sgd(0.3, b1=0.5, weight_decay=0.2, weight_lr_power=1.0)
  ref.init({k: np.asarray(v) for k, v in params.items()})
  state = gtx.set_hparams(state, new)
  for _ in range(3):
    grads = jax.grad(coupled_loss)(params)
    want = ref.step({k: np.asarray(v) for k, v in grads.items()},
                    {k: np.asarray(v) for k, v in params.items()})
    params, updates, state = step(params, state)
    assert_trees_close(updates, want, rtol=1e-5, atol=1e-6)
  assert float(state["schedule_free"].b1) == pytest.approx(0.5)
  assert float(gtx.hparams(state)["schedule_free.weight_lr_power"]) == 1.0
  assert len(traces) == 1


def test_a_warmup_reads_as_its_last_value_and_cannot_be_set():
  params = coupled_tree()
  tx = gtx.contrib.schedule_free_adamw(0.1, warmup_steps=10)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(3):
    _, state = update(jax.grad(coupled_loss)(params), state, params)
  h = gtx.hparams(state)
  # The weights' rate and the step's, both those of step 3: 0.1 * 3 / 10.
  assert float(h["schedule_free.learning_rate"]) == pytest.approx(0.03)
  assert float(h["schedule_free.lr.learning_rate"]) == pytest.approx(0.03)
  assert int(state["schedule_free"].step_count) == 4
  with pytest.raises(gtx.HyperparameterError, match=r"schedule_free.learning_rate follows"):
    gtx.set_hparams(state, {"schedule_free.learning_rate": 1.0})


@pytest.mark.parametrize("name", ["schedule_free_sgd", "schedule_free_adamw"])
def test_a_warmup_to_a_schedule_raises_at_construction(name):
  # It failed at the first update, in the warmup, with "Cannot determine dtype of <function>".
  rate = gtx.schedules.cosine_decay_schedule(0.1, 100)
  with pytest.raises(gtx.HyperparameterError,
                     match=rf"{name}: warmup_steps warms up to a constant learning_rate, "
                           r"got the schedule cosine_decay_schedule\(.*warmup_cosine_decay"):
    getattr(gtx.contrib, name)(rate, warmup_steps=5)
  # Without the warmup the schedule is the learning rate, as everywhere.
  tx = getattr(gtx.contrib, name)(rate)
  _, state = tx.update(coupled_tree(), tx.init(coupled_tree()), coupled_tree())
  assert float(gtx.hparams(state)["schedule_free.lr.learning_rate"]) == pytest.approx(0.1)


def test_dp_hyperparameters_read_and_set_by_name_without_retracing():
  per_example = {"w": jnp.array([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]], jnp.float32)}
  params = {"w": jnp.zeros(2, jnp.float32)}
  tx = gtx.contrib.dpsgd(1.0, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0, momentum=0.5)
  state = tx.init(params)
  assert set(gtx.hparams(state)) == {"dp.l2_norm_clip", "dp.noise_multiplier",
                                     "momentum.decay", "lr.learning_rate"}
  step, traces = counting_jit(lambda state: tx.update(per_example, state, params))

  u1, _ = step(state)
  u2, _ = step(gtx.set_hparams(state, {"dp.l2_norm_clip": 0.25, "lr.learning_rate": 2.0}))
  np.testing.assert_allclose(u1["w"], -np.array([0.6 + 0.3, 0.8 + 0.4]) / 3, rtol=1e-6)
  np.testing.assert_allclose(u2["w"], -2.0 * np.array([0.15 + 0.15, 0.2 + 0.2]) / 3, rtol=1e-6)
  assert len(traces) == 1


# ----------------------------------------------------------------------------
# Errors a person can act on.


BAD_HYPERPARAMETERS = [
    (lambda: gtx.contrib.schedule_free_sgd(b1=0.0),
     r"schedule_free_sgd: b1 must be in \(0, 1\], got 0.0"),
    (lambda: gtx.contrib.schedule_free_adamw(b1=1.5),
     r"schedule_free_adamw: b1 must be in \(0, 1\], got 1.5"),
    (lambda: gtx.contrib.schedule_free(gtx.sgd(0.1), -0.1),
     r"schedule_free: learning_rate must be in \[0, inf\), got -0.1"),
    (lambda: gtx.contrib.schedule_free_sgd(weight_lr_power=-1.0),
     r"schedule_free_sgd: weight_lr_power must be in \[0, inf\), got -1.0"),
    (lambda: gtx.contrib.schedule_free_sgd(warmup_steps=0),
     r"schedule_free_sgd: warmup_steps must be in \[1, 2147483647\] \(an integer\), got 0"),
    (lambda: gtx.contrib.schedule_free_adamw(warmup_steps=2.5),
     r"schedule_free_adamw: warmup_steps must be in \[1, 2147483647\] \(an integer\), got 2.5"),
    # [2] passed here and was refused by warmup_constant_schedule, a stage the user never named.
    (lambda: gtx.contrib.schedule_free_adamw(warmup_steps=[2]),
     r"^schedule_free_adamw: warmup_steps must be a number in \[1, .*got \[2\]$"),
    (lambda: gtx.contrib.schedule_free_adamw(b2=1.0),
     r"schedule_free_adamw: b2 must be in \[0, 1\), got 1.0"),
    (lambda: gtx.contrib.schedule_free_sgd(weight_decay=-1.0),
     r"schedule_free_sgd: weight_decay must be in \[0, inf\), got -1.0"),
    (lambda: gtx.contrib.schedule_free(object(), 0.1),
     r"^schedule_free: base_optimizer must be a gradient transformation"),
    (lambda: gtx.contrib.dpsgd(0.1, l2_norm_clip=-1.0, noise_multiplier=1.0, seed=0),
     r"dpsgd: l2_norm_clip must be in \[0, inf\), got -1.0"),
    (lambda: gtx.contrib.differentially_private_aggregate(1.0, -0.5),
     r"differentially_private_aggregate: noise_multiplier must be in \[0, inf\), got -0.5"),
    (lambda: gtx.contrib.differentially_private_aggregate(1.0, 1.0, key=1, seed=2),
     r"differentially_private_aggregate: give key= or seed= .*not both"),
]


test_bad_hyperparameters_raise_naming_the_stage_and_range = bad_hyperparameters_test(
    BAD_HYPERPARAMETERS, errors=(ValueError, TypeError))


def test_state_dtype_widens_z_and_keeps_a_complex_leafs_imaginary_part():
  params = {"w": jnp.array([0.5, -1.25], jnp.bfloat16), "c": jnp.array([1 + 2j], jnp.complex64)}
  state = gtx.contrib.schedule_free_sgd(0.1, state_dtype=jnp.float32).init(params)
  z = state["schedule_free"].z
  assert (z["w"].dtype, z["c"].dtype) == (jnp.float32, jnp.complex64)
  np.testing.assert_array_equal(z["c"], params["c"])  # a real float32 z dropped Im
  np.testing.assert_array_equal(z["w"], params["w"].astype(jnp.float32))


def test_missing_params_and_a_state_without_schedule_free_raise():
  params = coupled_tree()
  tx = gtx.contrib.schedule_free_sgd()
  with pytest.raises(gtx.MissingArgumentError,
                     match=r"stage 'schedule_free': schedule_free needs the parameters"):
    tx.update(params, tx.init(params))
  with pytest.raises(ValueError, match=r"schedule_free_eval_params: the state holds no "
                                       r"ScheduleFreeState"):
    gtx.contrib.schedule_free_eval_params(gtx.sgd(0.1).init(params), params)


def test_eval_params_of_other_params_raise_naming_the_function_and_key_path():
  # jax's "pytree structure error: different numbers of pytree children at key path []".
  params = {"a": jnp.ones(2), "b": jnp.ones(3)}
  state = gtx.contrib.schedule_free_sgd(0.1).init(params)
  eval_params = gtx.contrib.schedule_free_eval_params
  with pytest.raises(gtx.StructureError,
                     match=r"^schedule_free_eval_params: params and state.z differ in structure: "
                           r"key path \['b'\] is in state.z but not in params"):
    eval_params(state, {"a": params["a"]})
  with pytest.raises(gtx.StructureError,
                     match=r"^schedule_free_eval_params: params and state.z differ in shape at "
                           r"key path \['b'\]"):
    eval_params(state, {"a": params["a"], "b": jnp.ones(4)})


# ----------------------------------------------------------------------------
# Zero gradients, packed mode, public names.


READY = [
    ("schedule_free_sgd", lambda: gtx.contrib.schedule_free_sgd(0.1, weight_decay=0.01)),
    ("schedule_free_adamw", lambda: gtx.contrib.schedule_free_adamw(0.05, warmup_steps=3,
                                                                    weight_decay=0.01)),
]


@pytest.mark.parametrize("make", [r[1] for r in READY] + [
    lambda: gtx.contrib.schedule_free_sgd(0.0)], ids=[r[0] for r in READY] + ["rate-zero"])
def test_zero_gradients_give_finite_zero_updates(make):
  check_zero_gradients_give_zero_updates(make(), jax.tree.map(jnp.zeros_like, coupled_tree()))


@pytest.mark.parametrize("make", [r[1] for r in READY], ids=[r[0] for r in READY])
def test_packed_gives_tree_modes_updates_and_state(make):
  params = packed_params()
  layout, (tree, _, x_tree), (flat, _, x_flat) = train_both_modes(
      make(), params, 6, finish=gtx.contrib.schedule_free_eval_params)
  assert not np.allclose(tree[0]["dense"]["w"], params["dense"]["w"])
  assert_trees_close(layout.unpack(x_flat), x_tree, rtol=2e-5, atol=2e-6)
  assert_packed_matches_tree(layout, tree, flat)


def test_public_names_and_state_classes():
  for name in ["DifferentiallyPrivateAggregateState", "ScheduleFreeState",
               "differentially_private_aggregate", "dpsgd", "schedule_free",
               "schedule_free_adamw", "schedule_free_eval_params", "schedule_free_sgd"]:
    assert name in gtx.contrib.__all__ and hasattr(optax.contrib, name), name
  state = gtx.contrib.schedule_free_adamw().init(coupled_tree())["schedule_free"]
  assert isinstance(state, gtx.contrib.ScheduleFreeState)
  for field in optax.contrib.ScheduleFreeState._fields:
    assert hasattr(state, field), field
  assert_trees_close(state.z, coupled_tree(), rtol=0, atol=0)
  dp = gtx.contrib.dpsgd(0.1, 1.0, 1.0, seed=0).init(coupled_tree())["dp"]
  assert isinstance(dp, gtx.contrib.DifferentiallyPrivateAggregateState)
  assert dp._fields[:1] == optax.contrib.DifferentiallyPrivateAggregateState._fields


# ----------------------------------------------------------------------------
# DP-SGD: clipping exactly, noise by its statistics and against optax.


def _per_example(batch: int, seed: int, dtype: Any) -> dict:
  """Per-example gradients: norms from ~0.1 to ~4 around the clip 1.5, one all zero."""
  rng = np.random.default_rng(seed)
  scales = np.linspace(0.02, 1.0, batch)
  tree = {"w": rng.normal(size=(batch, 4, 3)) * scales[:, None, None],
          "b": rng.normal(size=(batch, 3)) * scales[:, None], "s": rng.normal(size=(batch,))}
  for leaf in tree.values():
    leaf[1] = 0.0
  return {k: np.asarray(v, dtype) for k, v in tree.items()}


DP_CASES = [("sgd", {}), ("momentum", {"momentum": 0.9}),
            ("nesterov", {"momentum": 0.8, "nesterov": True})]


def _check_dpsgd_clipping(options: dict, dtype: Any, jit: bool) -> None:
  tx = gtx.contrib.dpsgd(0.1, l2_norm_clip=1.5, noise_multiplier=0.0, seed=0, **options)
  ref = RS.dpsgd(0.1, 1.5, **options)
  params = {"w": jnp.zeros((4, 3), dtype), "b": jnp.zeros(3, dtype), "s": jnp.zeros((), dtype)}
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  rtol = 2e-6 if dtype == jnp.float32 else 1e-12
  for t in range(5):
    per_example = _per_example(8, t, np.float64)
    norms = np.sqrt(sum(np.sum(g.reshape(8, -1) ** 2, axis=1) for g in per_example.values()))
    assert (norms > 1.5).any() and ((norms < 1.5) & (norms > 0)).any() and (norms == 0).any()
    got, state = update({k: jnp.asarray(v, dtype) for k, v in per_example.items()}, state, params)
    want = ref.step(per_example)
    for k in want:
      assert got[k].dtype == dtype and got[k].shape == want[k].shape
      np.testing.assert_allclose(np.asarray(got[k], np.float64), want[k], rtol=rtol,
                                 atol=rtol * np.abs(want[k]).max(), err_msg=f"{k} at {t}")


@pytest.mark.parametrize("options", [c[1] for c in DP_CASES], ids=[c[0] for c in DP_CASES])
def test_dpsgd_clips_each_example_to_the_norm_float32_jit_and_float64(options):
  _check_dpsgd_clipping(options, jnp.float32, jit=True)
  with jax.enable_x64(True):
    _check_dpsgd_clipping(options, jnp.float64, jit=False)


def test_dpsgd_clipping_float32_eager_and_float64_jit():
  _check_dpsgd_clipping({"momentum": 0.9}, jnp.float32, jit=False)
  with jax.enable_x64(True):
    _check_dpsgd_clipping({"momentum": 0.9}, jnp.float64, jit=True)


@pytest.mark.parametrize("grads, message", [
    ({"w": jnp.ones((8, 2)), "s": jnp.ones(())},
     r"the leaf at \['s'\] has shape \(\) \(no axis 0\)"),
    ({"w": jnp.ones((8, 2)), "b": jnp.ones((4, 2))},
     r"the leaf at \['w'\] has shape \(8, 2\) and the one at \['b'\] has shape \(4, 2\)"),
    # An empty batch divided 0 by 0 (NaN updates; before, ZeroDivisionError in the clip).
    ({"w": jnp.ones((0, 2))}, r"differentially_private_aggregate: the batch is empty"),
], ids=["no-batch-axis", "two-batch-sizes", "empty-batch"])
def test_dp_names_a_bad_batch(grads, message):
  # The leaves were clipped as a list: the message named the leaf by its index ('[1]').
  tx = gtx.contrib.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
  with pytest.raises(gtx.StructureError, match=message):
    tx.update(grads, tx.init(None))


def test_dp_noise_is_gaussian_with_std_noise_multiplier_times_clip_over_batch():
  clip, sigma, batch = 2.0, 1.5, 4
  tx = gtx.contrib.differentially_private_aggregate(clip, sigma, key=7)
  zeros = {"a": jnp.zeros((batch, 50_000)), "b": jnp.zeros((batch, 20_000))}
  state = tx.init(None)
  update = jax.jit(tx.update)
  draws = []
  for _ in range(3):
    out, state = update(zeros, state)
    draws.append(np.concatenate([np.asarray(out["a"]), np.asarray(out["b"])]))
  std = sigma * clip / batch
  for noise in draws:
    assert abs(noise.mean()) < 5 * std / np.sqrt(noise.size)
    assert noise.std() == pytest.approx(std, rel=0.02)
    # Gaussian: 68.3% within one std, 95.4% within two.
    assert np.mean(np.abs(noise) < std) == pytest.approx(0.683, abs=0.01)
    assert np.mean(np.abs(noise) < 2 * std) == pytest.approx(0.954, abs=0.005)
  # Fresh noise every step and for every leaf.
  assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) < 0.02
  out, _ = update(zeros, tx.init(None))
  assert abs(np.corrcoef(np.asarray(out["a"])[:20_000], np.asarray(out["b"]))[0, 1]) < 0.03


def test_dp_noise_equals_optax_given_the_same_key():
  params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3), "s": jnp.zeros(())}
  key = jax.random.key(42)
  ours = gtx.contrib.differentially_private_aggregate(1.5, 1.1, key=key)
  theirs = optax.contrib.differentially_private_aggregate(1.5, 1.1, key=key)
  ours_sgd = gtx.contrib.dpsgd(0.1, 1.5, 1.1, seed=3, momentum=0.9)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # optax's dpsgd passes seed=
    theirs_sgd = optax.contrib.dpsgd(0.1, 1.5, 1.1, seed=3, momentum=0.9)
  states = [tx.init(params) for tx in (ours, theirs, ours_sgd, theirs_sgd)]
  for t in range(4):
    per_example = {k: jnp.asarray(v, jnp.float32)
                   for k, v in _per_example(8, t, np.float64).items()}
    outs = []
    for i, tx in enumerate((ours, theirs, ours_sgd, theirs_sgd)):
      with jax.numpy_dtype_promotion("standard"):
        u, states[i] = jax.jit(tx.update)(per_example, states[i], params)
      outs.append(u)
    assert_trees_close(outs[0], outs[1], rtol=1e-6, atol=1e-7)
    assert_trees_close(outs[2], outs[3], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(jax.random.key_data(states[0].rng_key),
                                jax.random.key_data(states[1].rng_key))
