"""Validates the numpy references in ``reference.py`` against optax itself.

Every reference is driven for 60 steps on a multi-leaf float64 tree (scalar,
vector, matrix, rank-3, an all-zero leaf, a leaf with zero gradients and a leaf
with ~1e-12 gradients) with gradients that depend on the parameters
(g = A * p + noise), and its updates are compared with optax's at every step.
optax runs in float64 (x64 enabled by an autouse fixture, for this module
only).

Known, intentional differences are tested explicitly:
  * adadelta: the reference always descends (default learning_rate=1.0);
    optax's default learning_rate=None returns +step (ascent).
  * rprop: optax 0.2.8 emits the previous step's update (one-step lag); the
    reference follows the paper, which equals optax's stored
    ``state.prev_updates``.
  * adafactor: optax computes beta2_t in float32; exact agreement is checked
    against the same optax chain with a float64 ``decay_rate_fn``.
  * sm3: optax fails on scalar leaves; that leaf is left out there.
"""

import inspect
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

N_STEPS = 60
RTOL = 1e-10
ATOL = 1e-22  # far below the smallest non-zero updates (~1e-14, tiny leaf)

SHAPES = {
    "scalar": (),
    "vec": (3,),
    "mat": (4, 5),
    "tensor": (2, 3, 4),
    "zeros": (3, 2),      # params and gradients identically zero
    "zero_grad": (4,),    # non-zero params, gradients identically zero
    "tiny": (6,),         # gradients ~1e-12
}


class Problem:
  """Deterministic stochastic quadratic: g_t = A * p + noise_t."""

  def __init__(self, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    self.shapes = dict(shapes)
    self.params0 = {k: rng.normal(size=s) for k, s in self.shapes.items()}
    if "zeros" in self.shapes:
      self.params0["zeros"] = np.zeros(self.shapes["zeros"])
    self.curv = {k: rng.uniform(0.2, 2.0, size=s)
                 for k, s in self.shapes.items()}
    self.noise = [{k: 0.5 * rng.normal(size=s)
                   for k, s in self.shapes.items()}
                  for _ in range(N_STEPS)]

  def grads(self, params, t):
    g = {k: self.curv[k] * params[k] + self.noise[t][k] for k in params}
    for k in ("zeros", "zero_grad"):
      if k in g:
        g[k] = np.zeros_like(g[k])
    if "tiny" in g:
      g["tiny"] = 1e-12 * g["tiny"]
    return g

  def value(self, params, t):
    """A loss consistent with the gradients (up to the special leaves)."""
    return 3.0 + sum(
        float(np.sum(0.5 * self.curv[k] * params[k] ** 2
                     + self.noise[t][k] * params[k]))
        for k in params)


@pytest.fixture(autouse=True)
def _x64_standard_promotion():
  """float64 for this module only; optax itself needs standard promotion
  (e.g. ``python_float ** int32_count`` in its bias correction), which the
  repository's strict conftest forbids."""
  with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
    yield


# XLA compilation dominates this module's runtime (~1 s of CPU per optimizer
# with the default options, ~0.25 s with these).  Neither option changes what
# is computed (no fast-math either way); every comparison below is at 1e-10.
# The second is XLA:CPU's own: other backends refuse an option they do not know.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
if jax.default_backend() == "cpu":
  _FAST_COMPILE["xla_cpu_use_fusion_emitters"] = False


def _jit(fn):
  return jax.jit(fn, compiler_options=_FAST_COMPILE)


def _allclose(actual, desired, rtol, atol):
  """np.testing.assert_allclose's criterion, without its overhead."""
  return bool(np.all(np.abs(actual - desired) <= atol + rtol * np.abs(desired)))


def _to_np(tree):
  return {k: np.asarray(v) for k, v in tree.items()}


def run_against_optax(reference, tx, *, rtol=RTOL, atol=ATOL, advance=1.0,
                      with_value=False, exclude=(), seed=0, check=None):
  """Steps `reference` and optax's `tx` side by side and compares updates.

  Both receive identical gradients / params; params advance by
  ``advance * reference_update``.  ``check(t, g, p, u_ref, u_opt, state)``
  replaces the default per-step comparison when given.
  """
  shapes = {k: s for k, s in SHAPES.items() if k not in exclude}
  prob = Problem(seed, shapes)
  params = {k: v.copy() for k, v in prob.params0.items()}
  reference.init(params)
  state = tx.init(params)
  if with_value:
    update = _jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
  else:
    update = _jit(lambda g, s, p: tx.update(g, s, p))
  for t in range(N_STEPS):
    g = prob.grads(params, t)
    if with_value:
      v = prob.value(params, t)
      u_ref = reference.step(g, params, value=v)
      u_opt, state = update(g, state, params, np.float64(v))
    else:
      u_ref = reference.step(g, params)
      u_opt, state = update(g, state, params)
    u_opt = _to_np(u_opt)
    assert set(u_ref) == set(u_opt)
    if check is not None:
      check(t, g, params, u_ref, u_opt, state)
    else:
      for k in u_ref:
        assert u_ref[k].shape == u_opt[k].shape, k
        if not _allclose(u_ref[k], u_opt[k], rtol, atol):  # fast path
          np.testing.assert_allclose(
              u_ref[k], u_opt[k], rtol=rtol, atol=atol,
              err_msg=f"step {t + 1}, leaf {k!r}")
    for k in u_ref:
      assert np.all(np.isfinite(u_ref[k])), (t, k)
    params = {k: params[k] + advance * u_ref[k] for k in params}
  return params


# ---------------------------------------------------------------------------
# cases: (id, reference factory, optax factory, options)
# ---------------------------------------------------------------------------

def sched(count):
  """A schedule usable by both numpy (int count) and optax (jnp count)."""
  return 0.05 * 0.97 ** count


wd_sched = lambda count: 0.01 + 0.001 * count  # noqa: E731

MASK = {k: k not in ("vec", "scalar") for k in SHAPES}
mask_fn = lambda tree: {k: v.ndim > 1 for k, v in tree.items()}  # noqa: E731


def _f64_decay_rate_pow(i, exponent=0.8):
  """optax's adafactor decay schedule, computed in float64."""
  t = jnp.asarray(i + 1, jnp.float64)
  return 1.0 - t ** (-exponent)


def adafactor_chain_f64(learning_rate=None, min_dim_size_to_factor=128,
                        decay_rate=0.8, multiply_by_parameter_scale=True,
                        clipping_threshold=1.0, momentum=None,
                        weight_decay_rate=None, eps=1e-30, factored=True,
                        weight_decay_mask=None):
  """optax.adafactor's exact chain, with a float64 beta2 schedule."""
  tx = [optax.scale_by_factored_rms(
      factored, decay_rate, 0, min_dim_size_to_factor, eps,
      decay_rate_fn=_f64_decay_rate_pow)]
  if clipping_threshold is not None:
    tx.append(optax.clip_by_block_rms(clipping_threshold))
  if learning_rate is not None:
    tx.append(optax.scale_by_learning_rate(learning_rate, flip_sign=False))
  if multiply_by_parameter_scale:
    tx.append(optax.scale_by_param_block_rms())
  if momentum is not None:
    tx.append(optax.ema(momentum, debias=False,
                        accumulator_dtype=jnp.float64))
  if weight_decay_rate is not None:
    tx.append(optax.add_decayed_weights(weight_decay_rate,
                                        mask=weight_decay_mask))
  tx.append(optax.scale(-1))
  return optax.chain(*tx)


def C(case_id, ref_fn, opt_fn, **opts):
  return pytest.param(ref_fn, opt_fn, opts, id=case_id)


OPTIMIZER_CASES = [
    # --- SGD family --------------------------------------------------------
    C("sgd", lambda: R.sgd(0.05), lambda: optax.sgd(0.05)),
    C("sgd-momentum", lambda: R.sgd(0.05, momentum=0.9),
      lambda: optax.sgd(0.05, momentum=0.9)),
    C("sgd-nesterov", lambda: R.sgd(0.05, momentum=0.9, nesterov=True),
      lambda: optax.sgd(0.05, momentum=0.9, nesterov=True)),
    C("sgd-schedule", lambda: R.sgd(sched, momentum=0.5),
      lambda: optax.sgd(sched, momentum=0.5)),
    C("sgd-optax-schedule",
      lambda: R.sgd(optax.cosine_decay_schedule(0.1, 40, alpha=0.1)),
      lambda: optax.sgd(optax.cosine_decay_schedule(0.1, 40, alpha=0.1))),
    C("adagrad", lambda: R.adagrad(0.1), lambda: optax.adagrad(0.1)),
    C("adagrad-zero-init",
      lambda: R.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-3),
      lambda: optax.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-3)),
    C("rmsprop", lambda: R.rmsprop(0.01), lambda: optax.rmsprop(0.01)),
    C("rmsprop-centered", lambda: R.rmsprop(0.01, centered=True),
      lambda: optax.rmsprop(0.01, centered=True)),
    C("rmsprop-centered-nesterov",
      lambda: R.rmsprop(0.01, centered=True, momentum=0.9, nesterov=True),
      lambda: optax.rmsprop(0.01, centered=True, momentum=0.9, nesterov=True)),
    C("rmsprop-eps-out-momentum",
      lambda: R.rmsprop(sched, decay=0.95, eps=1e-4, initial_scale=1.0,
                        eps_in_sqrt=False, momentum=0.8),
      lambda: optax.rmsprop(sched, decay=0.95, eps=1e-4, initial_scale=1.0,
                            eps_in_sqrt=False, momentum=0.8)),
    C("rmsprop-bias-correction",
      lambda: R.rmsprop(0.01, bias_correction=True),
      lambda: optax.rmsprop(0.01, bias_correction=True)),
    C("rmsprop-centered-bias-correction",
      # (with bias correction the centred variance is exactly 0 at t = 1, so
      # eps must dominate the rounding noise of v - m^2 there)
      lambda: R.rmsprop(0.01, centered=True, bias_correction=True, eps=0.1),
      lambda: optax.rmsprop(0.01, centered=True, bias_correction=True,
                            eps=0.1)),
    # adadelta: the reference's default (lr=1.0, descent) == optax lr=1.0.
    C("adadelta", lambda: R.adadelta(), lambda: optax.adadelta(1.0)),
    C("adadelta-lr-wd-mask",
      lambda: R.adadelta(0.5, rho=0.95, eps=1e-4, weight_decay=0.01,
                         weight_decay_mask=MASK),
      lambda: optax.adadelta(0.5, rho=0.95, eps=1e-4, weight_decay=0.01,
                             weight_decay_mask=MASK)),
    # --- Adam family -------------------------------------------------------
    C("adam", lambda: R.adam(0.01), lambda: optax.adam(0.01)),
    C("adam-nesterov", lambda: R.adam(0.01, nesterov=True),
      lambda: optax.adam(0.01, nesterov=True)),
    C("adam-eps-root", lambda: R.adam(sched, b1=0.5, b2=0.9, eps=1e-6,
                                      eps_root=1e-8),
      lambda: optax.adam(sched, b1=0.5, b2=0.9, eps=1e-6, eps_root=1e-8)),
    C("adamw", lambda: R.adamw(0.01), lambda: optax.adamw(0.01)),
    C("adamw-mask", lambda: R.adamw(0.01, weight_decay=0.1, mask=MASK),
      lambda: optax.adamw(0.01, weight_decay=0.1, mask=MASK)),
    C("adamw-mask-fn-nesterov",
      lambda: R.adamw(0.01, weight_decay=0.1, mask=mask_fn, nesterov=True),
      lambda: optax.adamw(0.01, weight_decay=0.1, mask=mask_fn,
                          nesterov=True)),
    C("adamw-wd-schedule", lambda: R.adamw(sched, weight_decay=wd_sched),
      lambda: optax.adamw(sched, weight_decay=wd_sched)),
    C("nadam", lambda: R.nadam(0.01), lambda: optax.nadam(0.01)),
    C("nadamw", lambda: R.nadamw(0.01, weight_decay=0.05),
      lambda: optax.nadamw(0.01, weight_decay=0.05)),
    C("amsgrad", lambda: R.amsgrad(0.01), lambda: optax.amsgrad(0.01)),
    C("amsgrad-no-bias-correction",
      lambda: R.amsgrad(0.01, b2=0.9, eps_root=1e-10,
                        bias_correction_mu=False, bias_correction_nu=False),
      lambda: optax.amsgrad(0.01, b2=0.9, eps_root=1e-10,
                            bias_correction_mu=False,
                            bias_correction_nu=False)),
    C("adamax", lambda: R.adamax(0.01), lambda: optax.adamax(0.01)),
    C("adamaxw", lambda: R.adamaxw(0.01, weight_decay=0.1, mask=MASK),
      lambda: optax.adamaxw(0.01, weight_decay=0.1, mask=MASK)),
    C("radam", lambda: R.radam(0.01), lambda: optax.radam(0.01)),
    C("radam-nesterov-threshold",
      lambda: R.radam(0.01, b2=0.99, threshold=8.0, nesterov=True),
      lambda: optax.radam(0.01, b2=0.99, threshold=8.0, nesterov=True)),
    # The paper's threshold: rho_t passes 4 at step 5 (4.58) with b2 = 0.9, where
    # r_t is far from r_5's value (a clamp at 5 gave a step 35% too large).
    C("radam-threshold-4", lambda: R.radam(0.01, b2=0.9, threshold=4.0),
      lambda: optax.radam(0.01, b2=0.9, threshold=4.0)),
    C("adabelief", lambda: R.adabelief(0.01), lambda: optax.adabelief(0.01)),
    C("adabelief-nesterov",
      lambda: R.adabelief(0.01, eps=1e-8, eps_root=0.0, nesterov=True),
      lambda: optax.adabelief(0.01, eps=1e-8, eps_root=0.0, nesterov=True)),
    C("yogi", lambda: R.yogi(0.01), lambda: optax.yogi(0.01)),
    C("yogi-init-eps-root",
      lambda: R.yogi(0.01, b2=0.99, initial_accumulator_value=0.5,
                     eps_root=1e-6),
      lambda: optax.chain(
          optax.scale_by_yogi(b2=0.99, initial_accumulator_value=0.5,
                              eps_root=1e-6),
          optax.scale_by_learning_rate(0.01))),
    C("lion", lambda: R.lion(0.001), lambda: optax.lion(0.001)),
    C("lion-mask", lambda: R.lion(sched, b1=0.8, weight_decay=0.1, mask=MASK),
      lambda: optax.lion(sched, b1=0.8, weight_decay=0.1, mask=MASK)),
    C("lamb", lambda: R.lamb(0.01), lambda: optax.lamb(0.01)),
    C("lamb-wd", lambda: R.lamb(0.01, weight_decay=0.01, mask=MASK),
      lambda: optax.lamb(0.01, weight_decay=0.01, mask=MASK)),
    C("lars", lambda: R.lars(0.5), lambda: optax.lars(0.5)),
    C("lars-wd-masks-nesterov",
      lambda: R.lars(0.5, weight_decay=0.01, weight_decay_mask=MASK,
                     trust_coefficient=0.01, eps=1e-6,
                     trust_ratio_mask=mask_fn, momentum=0.8, nesterov=True),
      lambda: optax.lars(0.5, weight_decay=0.01, weight_decay_mask=MASK,
                         trust_coefficient=0.01, eps=1e-6,
                         trust_ratio_mask=mask_fn, momentum=0.8,
                         nesterov=True)),
    C("novograd", lambda: R.novograd(0.01), lambda: optax.novograd(0.01)),
    C("novograd-wd", lambda: R.novograd(0.01, b2=0.5, weight_decay=0.01,
                                        eps_root=1e-8),
      lambda: optax.novograd(0.01, b2=0.5, weight_decay=0.01, eps_root=1e-8)),
    # At b2 = 0.5 optax 0.2.8's weight on the gradient difference, 1 - b2, is the
    # paper's, b2 (tests/reference.py's adan); the rest of the rule is checked against it.
    C("adan", lambda: R.adan(0.01, b2=0.5), lambda: optax.adan(0.01, b2=0.5)),
    C("adan-wd", lambda: R.adan(0.01, b2=0.5, weight_decay=0.01, mask=MASK),
      lambda: optax.adan(0.01, b2=0.5, weight_decay=0.01, mask=MASK)),
    # --- sign / step-size adaptation ---------------------------------------
    C("sign_sgd", lambda: R.sign_sgd(0.01), lambda: optax.sign_sgd(0.01)),
    C("signum", lambda: R.signum(0.01), lambda: optax.signum(0.01)),
    C("signum-beta", lambda: R.signum(sched, beta=0.5),
      lambda: optax.signum(sched, beta=0.5)),
    C("sm3", lambda: R.sm3(0.1), lambda: optax.sm3(0.1), exclude=("scalar",)),
    C("sm3-momentum", lambda: R.sm3(0.1, momentum=0.5),
      lambda: optax.sm3(0.1, momentum=0.5), exclude=("scalar",)),
    C("fromage", lambda: R.fromage(0.01), lambda: optax.fromage(0.01)),
    C("fromage-schedule", lambda: R.fromage(sched),
      lambda: optax.fromage(sched)),
    # --- adafactor ---------------------------------------------------------
    # optax computes beta2_t in float32: compare loosely with the alias ...
    C("adafactor-optax-alias", lambda: R.adafactor(),
      lambda: optax.adafactor(), rtol=1e-5),
    C("adafactor-optax-alias-factored",
      lambda: R.adafactor(min_dim_size_to_factor=2),
      lambda: optax.adafactor(min_dim_size_to_factor=2), rtol=1e-5),
    # ... and exactly with the same chain and a float64 beta2_t.
    C("adafactor", lambda: R.adafactor(), lambda: adafactor_chain_f64()),
    C("adafactor-factored", lambda: R.adafactor(min_dim_size_to_factor=2),
      lambda: adafactor_chain_f64(min_dim_size_to_factor=2)),
    C("adafactor-factored-3", lambda: R.adafactor(min_dim_size_to_factor=3),
      lambda: adafactor_chain_f64(min_dim_size_to_factor=3)),
    C("adafactor-all-options",
      lambda: R.adafactor(sched, min_dim_size_to_factor=2, decay_rate=0.6,
                          momentum=0.9, weight_decay_rate=0.01,
                          clipping_threshold=0.5, eps=1e-20,
                          weight_decay_mask=MASK),
      lambda: adafactor_chain_f64(sched, min_dim_size_to_factor=2,
                                  decay_rate=0.6, momentum=0.9,
                                  weight_decay_rate=0.01,
                                  clipping_threshold=0.5, eps=1e-20,
                                  weight_decay_mask=MASK)),
    C("adafactor-unfactored-noclip-noscale",
      lambda: R.adafactor(0.01, min_dim_size_to_factor=2, factored=False,
                          clipping_threshold=None,
                          multiply_by_parameter_scale=False),
      lambda: adafactor_chain_f64(0.01, min_dim_size_to_factor=2,
                                  factored=False, clipping_threshold=None,
                                  multiply_by_parameter_scale=False)),
    # --- polyak / optimistic ----------------------------------------------
    C("polyak_sgd", lambda: R.polyak_sgd(max_learning_rate=0.1),
      lambda: optax.polyak_sgd(max_learning_rate=0.1), with_value=True),
    C("polyak_sgd-sps+",
      lambda: R.polyak_sgd(max_learning_rate=0.5, scaling=0.5, f_min=4.0,
                           eps=1e-3, variant="sps+"),
      lambda: optax.polyak_sgd(max_learning_rate=0.5, scaling=0.5, f_min=4.0,
                               eps=1e-3, variant="sps+"), with_value=True),
    C("polyak_sgd-sps-negative-gap",
      lambda: R.polyak_sgd(max_learning_rate=0.05, scaling=sched, f_min=4.0),
      lambda: optax.polyak_sgd(max_learning_rate=0.05, scaling=sched,
                               f_min=4.0), with_value=True),
    C("optimistic_gradient_descent",
      lambda: R.optimistic_gradient_descent(0.05),
      lambda: optax.optimistic_gradient_descent(0.05)),
    C("optimistic_gradient_descent-alpha-beta",
      lambda: R.optimistic_gradient_descent(sched, alpha=0.5, beta=2.0),
      lambda: optax.optimistic_gradient_descent(sched, alpha=0.5, beta=2.0)),
    C("optimistic_adam", lambda: R.optimistic_adam(0.01),
      lambda: optax.optimistic_adam(0.01)),
    C("optimistic_adam-optimism",
      lambda: R.optimistic_adam(0.01, optimism=0.03, nesterov=False),
      lambda: optax.optimistic_adam(0.01, optimism=0.03, nesterov=False)),
    C("optimistic_adam_v2", lambda: R.optimistic_adam_v2(0.01),
      lambda: optax.optimistic_adam_v2(0.01)),
    C("optimistic_adam_v2-alpha-beta",
      lambda: R.optimistic_adam_v2(sched, alpha=0.5, beta=0.3,
                                   nesterov=False),
      lambda: optax.optimistic_adam_v2(sched, alpha=0.5, beta=0.3,
                                       nesterov=False)),
]

# Primitives: params advance by -0.05 * update (their outputs are directions).
PRIMITIVE_CASES = [
    C("clip_by_global_norm-clips", lambda: R.clip_by_global_norm(1.0),
      lambda: optax.clip_by_global_norm(1.0)),
    C("clip_by_global_norm-passes", lambda: R.clip_by_global_norm(1e3),
      lambda: optax.clip_by_global_norm(1e3)),
    C("clip", lambda: R.clip(0.5), lambda: optax.clip(0.5)),
    C("clip_by_block_rms", lambda: R.clip_by_block_rms(0.3),
      lambda: optax.clip_by_block_rms(0.3)),
    C("add_decayed_weights", lambda: R.add_decayed_weights(0.1),
      lambda: optax.add_decayed_weights(0.1)),
    C("add_decayed_weights-mask-schedule",
      lambda: R.add_decayed_weights(wd_sched, mask=MASK),
      lambda: optax.add_decayed_weights(wd_sched, mask=MASK)),
    C("add_l1", lambda: R.add_l1(0.1),
      lambda: optax.stateless_with_tree_map(
          lambda g, p: g + 0.1 * jnp.sign(p))),
    C("ema", lambda: R.ema(0.9), lambda: optax.ema(0.9)),
    C("ema-no-debias", lambda: R.ema(0.8, debias=False),
      lambda: optax.ema(0.8, debias=False)),
    C("trace", lambda: R.trace(0.9), lambda: optax.trace(0.9)),
    C("trace-nesterov", lambda: R.trace(0.9, nesterov=True),
      lambda: optax.trace(0.9, nesterov=True)),
    C("scale", lambda: R.scale(-0.3), lambda: optax.scale(-0.3)),
    C("scale_by_learning_rate", lambda: R.scale_by_learning_rate(sched),
      lambda: optax.scale_by_learning_rate(sched)),
    C("scale_by_sign", lambda: R.scale_by_sign(),
      lambda: optax.scale_by_sign()),
    *[C(f"scale_by_lion-{mode}",
        lambda mode=mode: R.scale_by_lion(b1=0.8, mode=mode, smooth_beta=2.5),
        lambda mode=mode: optax.scale_by_lion(b1=0.8, mode=mode, smooth_beta=2.5))
      for mode in ("hard", "smooth", "refined")],
    C("scale_by_rms", lambda: R.scale_by_rms(), lambda: optax.scale_by_rms()),
    C("scale_by_rms-options",
      lambda: R.scale_by_rms(decay=0.5, eps=1e-3, initial_scale=0.2,
                             eps_in_sqrt=False, bias_correction=True),
      lambda: optax.scale_by_rms(decay=0.5, eps=1e-3, initial_scale=0.2,
                                 eps_in_sqrt=False, bias_correction=True)),
    C("scale_by_stddev", lambda: R.scale_by_stddev(),
      lambda: optax.scale_by_stddev()),
    C("scale_by_stddev-options",
      lambda: R.scale_by_stddev(decay=0.5, eps=1e-3, initial_scale=0.2,
                                eps_in_sqrt=False, bias_correction=True),
      lambda: optax.scale_by_stddev(decay=0.5, eps=1e-3, initial_scale=0.2,
                                    eps_in_sqrt=False, bias_correction=True)),
    C("scale_by_rss", lambda: R.scale_by_rss(), lambda: optax.scale_by_rss()),
    C("scale_by_adam", lambda: R.scale_by_adam(),
      lambda: optax.scale_by_adam()),
    C("scale_by_adam-nesterov",
      lambda: R.scale_by_adam(b1=0.8, eps_root=1e-9, nesterov=True),
      lambda: optax.scale_by_adam(b1=0.8, eps_root=1e-9, nesterov=True)),
    C("scale_by_trust_ratio", lambda: R.scale_by_trust_ratio(),
      lambda: optax.scale_by_trust_ratio()),
    C("scale_by_trust_ratio-options",
      lambda: R.scale_by_trust_ratio(min_norm=1e-3, trust_coefficient=0.1,
                                     eps=1e-4),
      lambda: optax.scale_by_trust_ratio(min_norm=1e-3, trust_coefficient=0.1,
                                         eps=1e-4)),
    C("scale_by_param_block_rms", lambda: R.scale_by_param_block_rms(),
      lambda: optax.scale_by_param_block_rms()),
    # b2 < 1 and eps, which optax.sm3 (momentum only) never passes on.
    C("scale_by_sm3-b2-eps", lambda: R.scale_by_sm3(b1=0.5, b2=0.9, eps=1e-3),
      lambda: optax.scale_by_sm3(b1=0.5, b2=0.9, eps=1e-3), exclude=("scalar",)),
]


def _make(opt_fn):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    return opt_fn()


@pytest.mark.parametrize("ref_fn, opt_fn, opts", OPTIMIZER_CASES)
def test_optimizer_matches_optax(ref_fn, opt_fn, opts):
  run_against_optax(ref_fn(), _make(opt_fn), **opts)


@pytest.mark.parametrize("ref_fn, opt_fn, opts", PRIMITIVE_CASES)
def test_primitive_matches_optax(ref_fn, opt_fn, opts):
  run_against_optax(ref_fn(), _make(opt_fn), advance=-0.05, **opts)


# ---------------------------------------------------------------------------
# documented differences
# ---------------------------------------------------------------------------

def test_adadelta_optax_default_lr_ascends():
  """optax.adadelta() (learning_rate=None) returns +step: the negation of
  the reference's default (learning_rate=1.0, descent)."""
  reference = R.adadelta()
  assert reference.learning_rate == 1.0

  def check(t, g, p, u_ref, u_opt, state):
    for k in u_ref:
      np.testing.assert_allclose(-u_ref[k], u_opt[k], rtol=RTOL,
                                 atol=ATOL)

  run_against_optax(reference, optax.adadelta(), check=check)
  # learning_rate=None in the reference means 1.0, i.e. still descent.
  assert R.adadelta(learning_rate=None).learning_rate == 1.0


@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=0.01),
    dict(learning_rate=0.05, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-3,
         max_step_size=0.1),
])
def test_rprop_matches_optax_state_and_lagged_updates(kwargs):
  """The reference update equals -optax_state.prev_updates (the correctly
  computed current step); optax *emits* the previous step's update, zeroed
  where the gradient sign flipped (optax PR #1725)."""
  reference = R.rprop(**kwargs)
  prev = {}
  flips = [0]

  def check(t, g, p, u_ref, u_opt, state):
    q = _to_np(state[0].prev_updates)
    for k in u_ref:
      np.testing.assert_allclose(u_ref[k], -q[k], rtol=RTOL, atol=0,
                                 err_msg=f"step {t + 1}, leaf {k!r}")
      u_prev = prev.get(k, np.zeros_like(u_ref[k]))
      flipped = g[k] * u_prev > 0  # c_t = g_t * q_{t-1} < 0
      flips[0] += int(flipped.sum())
      lagged = np.where(flipped, 0.0, u_prev)
      np.testing.assert_allclose(u_opt[k], lagged, rtol=RTOL, atol=0,
                                 err_msg=f"step {t + 1}, leaf {k!r}")
    prev.update(u_ref)

  run_against_optax(reference, optax.rprop(**kwargs), check=check)
  assert flips[0] > 0  # the sign-flip branch was exercised


def test_rprop_first_step_is_minus_lr_sign():
  reference = R.rprop(0.1)
  reference.init({"a": np.zeros(3)})
  u = reference.step({"a": np.array([1.0, -2.0, 0.0])}, {"a": np.zeros(3)})
  np.testing.assert_array_equal(u["a"], [-0.1, 0.1, 0.0])


def test_sm3_scalar_leaf():
  """optax.sm3 cannot handle rank-0 leaves; the reference treats them as
  rank-1 (diagonal Adagrad + momentum)."""
  tx = optax.sm3(0.1)
  p = {"s": jnp.ones(())}
  with pytest.raises(IndexError):
    tx.update(p, tx.init(p), p)
  ref_scalar, ref_vec = R.sm3(0.1), R.sm3(0.1)
  ref_scalar.init({"s": np.ones(())})
  ref_vec.init({"s": np.ones((1,))})
  for g in (0.5, -1.0, 2.0):
    a = ref_scalar.step({"s": np.array(g)}, {"s": np.ones(())})["s"]
    b = ref_vec.step({"s": np.array([g])}, {"s": np.ones((1,))})["s"]
    assert a.shape == ()
    np.testing.assert_allclose(a, b[0], rtol=1e-15)


def test_clip_reference_refuses_complex_updates():
  """np.clip would order complex numbers lexicographically: no meaning as a clip."""
  reference = R.clip(0.5)
  z = {"w": np.array([1.0 + 2.0j, -0.5j])}
  reference.init(z)
  with pytest.raises(ValueError, match=r"clip: defined for real updates only"):
    reference.step(z, z)


def test_sm3_reference_refuses_complex_params():
  with pytest.raises(ValueError, match=r"sm3: defined for real parameters only"):
    R.sm3(0.1).init({"w": np.ones((2, 3), np.complex128)})


# ---------------------------------------------------------------------------
# table / interface sanity
# ---------------------------------------------------------------------------

def test_every_reference_is_exercised():
  covered = set()
  for case in OPTIMIZER_CASES + PRIMITIVE_CASES:
    covered.add(type(case.values[0]()).__name__)
  covered |= {"rprop"}  # tested separately (optax lags one step)
  expected = set(R.OPTIMIZERS) | set(R.PRIMITIVES)
  assert expected <= covered, expected - covered


@pytest.mark.parametrize("name", sorted(R.OPTIMIZERS))
def test_reference_signatures_match_optax(name):
  """Same argument names and defaults as optax (bar documented extras)."""
  ref_sig = inspect.signature(R.OPTIMIZERS[name].__init__)
  opt_sig = inspect.signature(getattr(optax, name))
  extras = {"yogi": {"eps_root", "initial_accumulator_value"}}
  ref_params = {k: v for k, v in ref_sig.parameters.items() if k != "self"}
  for k, v in opt_sig.parameters.items():
    assert k in ref_params, (name, k)
    if name == "adadelta" and k == "learning_rate":
      assert ref_params[k].default == 1.0  # documented difference
      continue
    if name == "adafactor" and k == "dtype_momentum":
      continue  # ignored (always float64)
    if v.default is not inspect.Parameter.empty:
      assert ref_params[k].default == v.default, (name, k)
  assert set(ref_params) - set(opt_sig.parameters) <= extras.get(name, set())
