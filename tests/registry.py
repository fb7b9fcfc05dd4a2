"""The one list of optimizers and primitives under test.

Each case names a gradtx factory, its arguments, and the numpy reference in
``reference.py`` (or ``reference_zoo.py``) that must agree with it. Generic properties (reference
agreement, convergence, dtypes, no recompilation) are driven from these lists. At the end, what
the audit of reference coverage allows: the public transformations checked by another test.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp

import gradtx as gtx
import reference
import reference_zoo


@dataclasses.dataclass(frozen=True)
class Case:
  id: str
  make: Callable[..., gtx.GradientTransformation]
  kwargs: dict
  ref: Callable[..., reference.Reference]
  ref_kwargs: dict | None = None   # defaults to kwargs
  needs_params: bool = False

  def gradtx(self) -> gtx.GradientTransformation:
    return self.make(**self.kwargs)

  def reference(self) -> reference.Reference:
    return self.ref(**(self.kwargs if self.ref_kwargs is None else self.ref_kwargs))


def _halving_step_size(count: Any) -> Any:
  """A schedule written out by hand: -0.5 * 0.9^count (float64 under x64)."""
  return -0.5 * 0.9 ** jnp.asarray(count).astype(jnp.result_type(float))


def _growing_sharpness(count: Any) -> Any:
  """A positive schedule for Lion's smooth_beta: 1 + count / 2."""
  return 1.0 + jnp.asarray(count).astype(jnp.result_type(float)) / 2


def _decay_mask(params: Any) -> Any:
  """Decay matrices only: the usual 'no weight decay on biases'."""
  return {k: getattr(v, "ndim", 0) >= 2 for k, v in params.items()}


# The classic ready optimizers (issue: foundation), in several configurations.
CLASSIC = [
    Case("sgd", gtx.sgd, dict(learning_rate=0.1), reference.sgd),
    Case("sgd-momentum", gtx.sgd, dict(learning_rate=0.1, momentum=0.9), reference.sgd),
    Case("sgd-nesterov", gtx.sgd, dict(learning_rate=0.1, momentum=0.9, nesterov=True),
         reference.sgd),
    Case("adagrad", gtx.adagrad, dict(learning_rate=0.1), reference.adagrad),
    Case("rmsprop", gtx.rmsprop, dict(learning_rate=0.01), reference.rmsprop),
    Case("rmsprop-centered-nesterov", gtx.rmsprop,
         dict(learning_rate=0.01, centered=True, momentum=0.9, nesterov=True), reference.rmsprop),
    Case("rmsprop-torch-eps-debiased", gtx.rmsprop,
         dict(learning_rate=0.01, eps_in_sqrt=False, bias_correction=True, initial_scale=0.5),
         reference.rmsprop),
    Case("adadelta", gtx.adadelta, dict(), reference.adadelta),
    Case("adadelta-decay", gtx.adadelta, dict(learning_rate=0.5, weight_decay=0.1),
         reference.adadelta, needs_params=True),
    Case("adam", gtx.adam, dict(learning_rate=0.01), reference.adam),
    Case("adam-nesterov-eps-root", gtx.adam,
         dict(learning_rate=0.01, eps_root=1e-8, nesterov=True), reference.adam),
    Case("adamw", gtx.adamw, dict(learning_rate=0.01, weight_decay=0.1), reference.adamw,
         needs_params=True),
    Case("adamw-masked", gtx.adamw, dict(learning_rate=0.01, weight_decay=0.1, mask=_decay_mask),
         reference.adamw, needs_params=True),
    Case("nadam", gtx.nadam, dict(learning_rate=0.01), reference.nadam),
    Case("nadamw", gtx.nadamw, dict(learning_rate=0.01, weight_decay=0.1), reference.nadamw,
         needs_params=True),
    Case("amsgrad", gtx.amsgrad, dict(learning_rate=0.01), reference.amsgrad),
    Case("amsgrad-no-bias-correction", gtx.amsgrad,
         dict(learning_rate=0.01, b2=0.9, eps_root=1e-10, bias_correction_mu=False,
              bias_correction_nu=False), reference.amsgrad),
    Case("adamax", gtx.adamax, dict(learning_rate=0.01), reference.adamax),
    Case("adamaxw", gtx.adamaxw, dict(learning_rate=0.01, weight_decay=0.1), reference.adamaxw,
         needs_params=True),
]

# The primitives of the foundation, each against its own reference.
PRIMITIVES = [
    Case("scale", gtx.scale, dict(step_size=-0.5), reference.scale),
    Case("scale_by_learning_rate", gtx.scale_by_learning_rate, dict(learning_rate=0.1),
         reference.scale_by_learning_rate),
    Case("trace", gtx.trace, dict(decay=0.9), reference.trace),
    Case("trace-nesterov", gtx.trace, dict(decay=0.9, nesterov=True), reference.trace),
    Case("ema", gtx.ema, dict(decay=0.9), reference.ema),
    Case("ema-biased", gtx.ema, dict(decay=0.8, debias=False), reference.ema),
    Case("scale_by_lion-smooth", gtx.scale_by_lion, dict(b1=0.8, mode="smooth", smooth_beta=2.5),
         reference.scale_by_lion),
    Case("scale_by_lion-smooth-schedule", gtx.scale_by_lion,
         dict(mode="smooth", smooth_beta=_growing_sharpness), reference.scale_by_lion),
    Case("scale_by_lion-refined", gtx.scale_by_lion, dict(b2=0.9, mode="refined"),
         reference.scale_by_lion),
    Case("scale_by_rms", gtx.scale_by_rms, dict(decay=0.9, initial_scale=0.1), reference.scale_by_rms),
    Case("scale_by_stddev", gtx.scale_by_stddev, dict(decay=0.9, eps_in_sqrt=False),
         reference.scale_by_stddev),
    Case("scale_by_rss", gtx.scale_by_rss, dict(initial_accumulator_value=0.0),
         reference.scale_by_rss),
    Case("scale_by_adam", gtx.scale_by_adam, dict(b1=0.8, b2=0.99), reference.scale_by_adam),
    Case("add_decayed_weights", gtx.add_decayed_weights, dict(weight_decay=0.1),
         reference.add_decayed_weights, needs_params=True),
    Case("add_decayed_weights-masked", gtx.add_decayed_weights,
         dict(weight_decay=0.1, mask=_decay_mask), reference.add_decayed_weights,
         needs_params=True),
    Case("add_l1_penalty", gtx.add_l1_penalty, dict(l1=0.05, mask=_decay_mask), reference.add_l1,
         needs_params=True),
    Case("clip", gtx.clip, dict(max_delta=0.5), reference.clip),
    Case("clip_by_global_norm", gtx.clip_by_global_norm, dict(max_norm=1.0),
         reference.clip_by_global_norm),
    Case("clip_by_block_rms", gtx.clip_by_block_rms, dict(threshold=0.3),
         reference.clip_by_block_rms),
]

# The optax names added for migration (helper A): primitives against reference_zoo.
PRIMITIVES += [
    Case("adaptive_grad_clip", gtx.adaptive_grad_clip, dict(clipping=0.05),
         reference_zoo.adaptive_grad_clip, needs_params=True),
    Case("adaptive_grad_clip-eps", gtx.adaptive_grad_clip, dict(clipping=0.5, eps=2.0),
         reference_zoo.adaptive_grad_clip, needs_params=True),
    Case("normalize_by_update_norm", gtx.normalize_by_update_norm,
         dict(scale_factor=-0.1, eps=1e-3), reference_zoo.normalize_by_update_norm),
    Case("scale_by_schedule", gtx.scale_by_schedule, dict(step_size_fn=_halving_step_size),
         reference_zoo.scale_by_schedule),
    Case("keep_params_nonnegative", gtx.keep_params_nonnegative, dict(),
         reference_zoo.keep_params_nonnegative, needs_params=True),
    Case("scale_by_distance_over_gradients", gtx.scale_by_distance_over_gradients,
         dict(reps_rel=1e-2, param_dtype=None, global_scale=-1.0),
         reference_zoo.scale_by_distance_over_gradients, needs_params=True),
]


# ----------------------------------------------------------------------------
# The audit of reference coverage (test_optimizers.test_every_public_transformation_
# has_a_reference_case_and_every_optimizer_a_convergence_run).
#
# A public transformation factory (a function of gtx or gtx.contrib that returns a
# GradientTransformation or a Chain) is covered when a case above, or a case given to
# zoo_harness.reference_tests, builds it, itself or as a stage at any depth: those cases
# run many steps against a numpy reference in float32 and float64, jitted and not
# (test_optimizers.ReferenceTest: all four; reference_tests: float32 jitted and float64
# eagerly, a few cases all four). A stage covered only inside a ready optimizer is checked
# with the arguments that optimizer passes on; where it has arguments no ready optimizer
# passes, a case of its own above or in test_zoo takes them (scale_by_sm3, scale_by_yogi).
#
# The factories below have no such case; each names the test (module, function) that
# checks it instead.

# Randomness, wrappers, routing and line searches: a rule of their own, checked elsewhere.
CHECKED_ELSEWHERE: dict[str, tuple[str, str]] = {
    # Random draws: the statistics of the noise, or optax's draws from the same key.
    "add_noise": ("test_zoo", "test_add_noise_has_the_annealed_variance"),
    "noisy_sgd": ("test_zoo", "test_noisy_sgd_matches_optax_with_the_same_key"),
    "contrib.hutchinson_estimator_diag_hessian":
        ("test_contrib_curvature", "test_hutchinson_is_v_times_hv_with_the_keys_probes"),
    # Per-example gradients (a batch axis the harness's problems do not have); the noise-free
    # rule against its numpy reference in float32 and float64, jitted and not.
    "contrib.differentially_private_aggregate":
        ("test_contrib_schedule_free",
         "test_dpsgd_clips_each_example_to_the_norm_float32_jit_and_float64"),
    "contrib.dpsgd": ("test_contrib_schedule_free",
                      "test_dpsgd_clips_each_example_to_the_norm_float32_jit_and_float64"),
    # Wrappers that change the updates: numpy references over many steps, float32 and
    # float64, jitted and not (apply_if_finite: bitwise skips, jitted and not, and optax).
    "apply_every": ("test_wrappers", "test_apply_every_against_numpy"),
    "apply_if_finite": ("test_wrappers", "test_apply_if_finite_skips_bad_steps_bitwise"),
    "conditionally_mask": ("test_wrappers", "test_conditionally_transform_and_mask_against_numpy"),
    "conditionally_transform":
        ("test_wrappers", "test_conditionally_transform_and_mask_against_numpy"),
    "lookahead": ("test_wrappers", "test_lookahead_against_numpy"),
    "multi_steps": ("test_wrappers", "test_multi_steps_equals_one_step_on_the_mean_gradient"),
    "reduce_on_plateau": ("test_wrappers", "test_reduce_on_plateau_against_reference_and_optax"),
    "snapshot": ("test_wrappers", "test_snapshot_records_updates_where_it_stands"),
    "zero_nans": ("test_wrappers", "test_zero_nans_matches_optax"),
    # Routing: which leaves a wrapped transformation sees, against optax.
    "freeze": ("test_wrappers", "test_selective_transform_and_freeze_match_optax"),
    "masked": ("test_wrappers", "test_masked_matches_optax"),
    "multi_transform": ("test_wrappers", "test_partition_routes_groups_like_optax"),
    "selective_transform": ("test_wrappers", "test_selective_transform_and_freeze_match_optax"),
    "set_to_zero": ("test_wrappers", "test_set_to_zero_zeroes_every_leaf_in_its_dtype"),
    # Pass the updates through unchanged; their statistics against numpy.
    "measure_with_ema": ("test_monitor", "test_measures_match_numpy_and_pass_the_updates_unchanged"),
    "monitor": ("test_monitor", "test_every_statistic_equals_its_numpy_definition_over_many_steps"),
    # Line searches: backtracking against numpy; zoom against optax (lbfgs's iterates, 15
    # steps in float64) and the Wolfe conditions, with no numpy reference of its own.
    "scale_by_backtracking_linesearch": ("test_linesearch", "test_backtracking_against_numpy"),
    "scale_by_zoom_linesearch": ("test_zoo", "test_lbfgs_with_zoom_linesearch_follows_optax"),
    # Structure, no rule of their own.
    "chain": ("test_chain", "test_chain_matches_optax_chain"),
    "named_chain": ("test_chain", "test_chain_matches_optax_chain"),
    "identity": ("test_core", "test_identity_and_stateless"),
    "stateless": ("test_core", "test_identity_and_stateless"),
    "stateless_with_tree_map":
        ("test_core", "test_stateless_with_tree_map_maps_grads_and_params_leaf_by_leaf"),
    "with_extra_args_support":
        ("test_core", "test_a_hand_written_stage_in_optax_style_runs_in_a_chain"),
}

# Ready optimizers (gtx.optimizers' and the Chains of gtx.contrib) outside every module's
# CONVERGENCE table, each with the test that runs it to a minimum instead, or why none can.
CONVERGES_ELSEWHERE: dict[str, tuple[str, str]] = {
    # Its update takes per-example gradients (a batch axis); at noise 0 it is clipped SGD,
    # whose clipping the test named checks against numpy.
    "contrib.dpsgd": ("test_contrib_schedule_free",
                      "test_dpsgd_clips_each_example_to_the_norm_float32_jit_and_float64"),
}
