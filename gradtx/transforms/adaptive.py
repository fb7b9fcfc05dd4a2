"""Adaptive moments beyond Adam: RAdam, AdaBelief, Yogi, NovoGrad, Adan, scheduled NAdam.

Each rule is written once per array in a local ``leaf`` function whose
variables are named as in its docstring; :func:`gradtx.tree.map_multi` lifts
it over the tree. Adam's shared arithmetic (the debiased first moment, with or
without Dozat's Nesterov look-ahead) is reused from
:mod:`gradtx.transforms.moments`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics, tree
from gradtx.core import (NONNEGATIVE, UNIT_HALF_OPEN, GradientTransformation, HParams, HParamSpec,
                         Range, ScalarOrSchedule, check_state, checks_flags, one_kernel_when_eager,
                         read_once, require_params)
from gradtx.numerics import (as_dtype, compute_dtype, ema_moment, floor_eps_root, lerp_moment,
                             safe_increment, safe_sqrt)
from gradtx.transforms.moments import (ScaleByAdamState, adam_direction, adam_step_scalars,
                                      check_initial_value)

__all__ = ["ScaleByAdanState", "ScaleByBeliefState", "ScaleByNadamState", "ScaleByNovogradState",
           "scale_by_adan", "scale_by_belief", "scale_by_nadam", "scale_by_novograd",
           "scale_by_radam", "scale_by_yogi"]

# RAdam's rectification needs rho_inf = 2 / (1 - b2) - 1 > 4, i.e. b2 > 0.6.
_RADAM_B2 = Range(0.6, 1.0, low_open=True, high_open=True)
_RADAM_THRESHOLD = Range(4.0)  # r_t is real for rho_t >= 4


@checks_flags
def scale_by_radam(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                   eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0,
                   threshold: ScalarOrSchedule = 5.0, *, nesterov: bool = False,
                   mu_dtype: Any = None, nu_dtype: Any = None) -> GradientTransformation:
  """Rectified Adam: Adam's step scaled by a variance rectification, SGD-like at first.

  .. math::
    \\rho_\\infty = \\frac{2}{1-\\beta_2} - 1, \\quad
    \\rho_t = \\rho_\\infty - \\frac{2 t \\beta_2^t}{1 - \\beta_2^t}, \\quad
    r_t = \\sqrt{\\frac{(\\rho_t - 4)(\\rho_t - 2)\\rho_\\infty}{(\\rho_\\infty - 4)
      (\\rho_\\infty - 2)\\rho_t}} \\\\
    u_t = \\begin{cases} r_t\\, \\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_\\text{root}}
      + \\epsilon) & \\rho_t \\ge \\tau \\\\ \\hat m_t & \\text{otherwise}\\end{cases}

  with :math:`\\hat m_t, \\hat v_t` the debiased moments of :func:`scale_by_adam`.
  The rectification is computed once per step, and each leaf's kernel computes
  :math:`u_t = c\\, m_t (a / (\\sqrt{v_t + r} + e) + b)` with Adam's per-step
  scalars and the branch folded into :math:`a, b`; in a chain, a learning rate
  right after this stage is folded into :math:`c`.

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in (0.6, 1)`, default 0.999 (needs :math:`\\rho_\\infty > 4`).
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0`, default 0.
    threshold: :math:`\\tau \\ge 4`, default 5 (the paper switches at :math:`\\rho_t > 4`;
      optax and torch.optim.RAdam use 5). :math:`r_t` is not real for
      :math:`\\rho_t < 4`, so a lower threshold is refused (optax's steps are NaN).
    nesterov: Dozat's look-ahead first moment.
    mu_dtype, nu_dtype: dtypes of :math:`m` and :math:`v` (gradtx additions).

  References:
    Liu et al., *On the Variance of the Adaptive Learning Rate and Beyond*, ICLR 2020.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_radam()
    >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]  # rho_1 < 5: the momentum
    Array([2.], dtype=float32)
  """
  spec = HParamSpec("scale_by_radam", b1=(b1, UNIT_HALF_OPEN), b2=(b2, _RADAM_B2),
                    eps=(eps, NONNEGATIVE), eps_root=(eps_root, NONNEGATIVE),
                    threshold=(threshold, _RADAM_THRESHOLD))

  def init(params):
    return ScaleByAdamState(numerics.zero_count(), tree.accumulator_like(params, dtype=mu_dtype),
                            tree.accumulator_like(params, dtype=nu_dtype), spec.init())

  def update(updates, state, params=None, *, factor=None, **extra):
    check_state("scale_by_radam", state, ScaleByAdamState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_radam")
    h, hparams = spec.step(state.hparams, read=False)
    count = safe_increment(state.count)
    k = read_once(_radam_step_scalars(h, count, nesterov, factor))

    def leaf(g, m, v):
      m_new = lerp_moment(g, m, k["1-b1"], order=1)
      v_new = lerp_moment(g, v, k["1-b2"], order=2)
      # float32 for float16, which rounded the folded rate's c, r and e to subnormals or 0
      # (where v_t was 0 too, a = 0 made 0 / 0 = NaN, not the momentum's step).
      dtype = numerics.scaling_dtype(v_new.dtype)
      numerator = as_dtype(k["c"], dtype) * as_dtype(m_new, dtype)
      if nesterov:
        numerator = numerator + as_dtype(k["c_g"], dtype) * as_dtype(g, dtype)
      a, b, r, e = (as_dtype(k[n], dtype) for n in ("a", "b", "r", "e"))
      adam = a / numerics.adam_denominator(as_dtype(v_new, dtype), e, r)  # r > 0: floor_eps_root
      u = numerator * (adam + b)
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(v_new, v.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdamState(count, mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_radam", spec=spec, options=dict(
      nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype), takes_factor=True)


def _radam_step_scalars(h: Any, count: jax.Array, nesterov: bool,
                        factor: jax.Array | None) -> dict[str, jax.Array]:
  """RAdam's per-step scalars: Adam's (:func:`gradtx.transforms.moments.adam_step_scalars`,
  the learning rate ``factor`` folded in), and the branch, so that each leaf computes
  :math:`u = (c\\, m_t + c_g\\, g_t) (a / (\\sqrt{v_t + r} + e) + b)`.

  Where :math:`\\rho_t \\ge \\tau`, :math:`a = r_t` and :math:`b = 0` (Adam's step
  times :math:`r_t`); otherwise :math:`a = 0` and :math:`b = 1 / \\sqrt{1-\\beta_2^t}`,
  which leaves :math:`\\hat m_t` (the momentum step). The rectification runs once per
  step, in the hyperparameters' dtype (float32 at least: bfloat16 rounds
  :math:`\\beta_2 = 0.999` to 1, where :math:`\\rho_\\infty` is Inf).
  """
  k = adam_step_scalars(h, count, nesterov, factor)
  dtype = k["c"].dtype
  b2, threshold = as_dtype(h["b2"], dtype), as_dtype(h["threshold"], dtype)
  t = as_dtype(count, dtype)
  # beta2^t and 1 - beta2^t through log1p / expm1: the naive 1 - beta2**t loses most of
  # float32's digits near beta2 = 1, which moves rho_t by ~1e-2.
  t_log_b2 = t * jnp.log1p(-(1 - b2))
  rho_inf = 2 / (1 - b2) - 1
  rho_t = rho_inf - 2 * t * jnp.exp(t_log_b2) / -jnp.expm1(t_log_b2)
  # Clamped inside the root so the unused value stays finite for rho_t < 4, where r_t is
  # not real; at 4, the lowest threshold, r_t is 0 (a clamp at 5 would give r_5 for
  # 4 <= rho_t < 5 under a threshold of 4, the paper's).
  rho_safe = jnp.maximum(rho_t, 4.0)
  r_t = safe_sqrt((rho_safe - 4) * (rho_safe - 2) * rho_inf
                  / ((rho_inf - 4) * (rho_inf - 2) * rho_safe))
  rectified = rho_t >= threshold
  # The root of Adam's second bias correction, as c holds it.
  root_b2_t = jnp.sqrt(1 - b2 ** t)
  k["a"] = jnp.where(rectified, r_t, 0)
  k["b"] = jnp.where(rectified, 0, 1 / root_b2_t)
  return k


class ScaleByBeliefState(NamedTuple):
  """State of :func:`scale_by_belief`: ``count``, first moment ``mu``, belief ``nu``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  mu: Any
  nu: Any
  hparams: HParams


def belief_moments(g: jax.Array, m: jax.Array, s: jax.Array, take1: jax.Array,
                   take2: jax.Array, eps_root: jax.Array) -> tuple[jax.Array, jax.Array]:
  """AdaBelief's moments: the mean :math:`m_t` and the belief :math:`s_t` centred on it.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    s_t = \\beta_2 s_{t-1} + (1-\\beta_2)(g_t - m_t)^2 + \\epsilon_\\text{root}

  ``take1`` and ``take2`` are :math:`1 - \\beta_1` and :math:`1 - \\beta_2`
  (:func:`gradtx.numerics.lerp_moment`). The prediction error
  :math:`g_t - m_t` is taken in :math:`m_t`'s dtype; dtypes otherwise as in
  :func:`gradtx.numerics.ema_moment` (each moment rounded to its state's
  precision). Shared by :func:`scale_by_belief` and ACProp
  (:func:`gradtx.contrib.scale_by_acprop`), which divides by :math:`s_{t-1}`
  instead of :math:`s_t`.
  """
  m_new = lerp_moment(g, m, take1, order=1)
  prediction_error = as_dtype(g, m_new.dtype) - m_new
  s_new = lerp_moment(prediction_error, s, take2, order=2)
  return m_new, s_new + as_dtype(eps_root, s_new.dtype)


@checks_flags
def scale_by_belief(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                    eps: ScalarOrSchedule = 1e-16, eps_root: ScalarOrSchedule = 1e-16, *,
                    nesterov: bool = False, mu_dtype: Any = None,
                    nu_dtype: Any = None) -> GradientTransformation:
  """AdaBelief's step: divide by the running variance of the gradient around its mean.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    s_t = \\beta_2 s_{t-1} + (1-\\beta_2)(g_t - m_t)^2 + \\epsilon_\\text{root}, \\\\
    u_t = \\frac{\\hat m_t}{\\sqrt{s_t / (1-\\beta_2^t)} + \\epsilon}

  with :math:`\\hat m_t` as in :func:`scale_by_adam` (``nesterov`` too). Computed as
  Adam's step is, with :math:`s_t` for :math:`v_t` and no
  :math:`\\epsilon_\\text{root}` under the root (it is in :math:`s_t`): the
  bias corrections and a learning rate that follows in a chain folded into
  scalars computed once per step (:func:`gradtx.transforms.moments.adam_step_scalars`).

  Matches ``optax.scale_by_belief``.

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0` outside the root, default 1e-16.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0` added to :math:`s_t` (and kept
      in the state, as the paper does), default 1e-16.
    nesterov: Dozat's look-ahead first moment.
    mu_dtype, nu_dtype: dtypes of :math:`m` and :math:`s` (gradtx additions).

  References:
    Zhuang et al., *AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients*, NeurIPS 2020.
  """
  spec = HParamSpec("scale_by_belief", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    eps=(eps, NONNEGATIVE), eps_root=(eps_root, NONNEGATIVE))

  def init(params):
    return ScaleByBeliefState(numerics.zero_count(), tree.accumulator_like(params, dtype=mu_dtype),
                              tree.accumulator_like(params, dtype=nu_dtype), spec.init())

  def update(updates, state, params=None, *, factor=None, **extra):
    check_state("scale_by_belief", state, ScaleByBeliefState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_belief")
    h, hparams = spec.step(state.hparams, read=False)
    count = safe_increment(state.count)
    # eps_root is in s_t already: Adam's scalars with none under the root (r is then
    # the floor that keeps the root's derivative finite at s_t = 0).
    no_root = {**h, "eps_root": jnp.zeros((), h["eps_root"].dtype)}
    k = read_once(adam_step_scalars(no_root, count, nesterov, factor))

    def leaf(g, m, s):
      m_new, s_new = belief_moments(g, m, s, k["1-b1"], k["1-b2"], h["eps_root"])
      u = adam_direction(k, g, m_new, s_new, nesterov)
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(s_new, s.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByBeliefState(count, mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_belief", spec=spec, options=dict(
      nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype), takes_factor=True)


def scale_by_yogi(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                  eps: ScalarOrSchedule = 1e-3, eps_root: ScalarOrSchedule = 0.0,
                  initial_accumulator_value: float = 1e-6, *, mu_dtype: Any = None,
                  nu_dtype: Any = None) -> GradientTransformation:
  """Yogi's step: an additive, sign-controlled second moment instead of Adam's EMA.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    v_t = v_{t-1} - (1-\\beta_2) \\operatorname{sign}(v_{t-1} - g_t^2)\\, g_t^2, \\\\
    u_t = \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{v_t / (1-\\beta_2^t) + \\epsilon_\\text{root}}
      + \\epsilon}

  Both moments start at ``initial_accumulator_value`` and are debiased, as in
  optax (the paper starts :math:`m` at 0 and does not debias).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0`, default 1e-3.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0`, default 0.
    initial_accumulator_value: :math:`m_0 = v_0 \\ge 0`, default 1e-6: the state's
      starting value, written at init (not a hyperparameter; to change it
      later, change ``mu`` and ``nu``).
    mu_dtype, nu_dtype: dtypes of :math:`m` and :math:`v` (gradtx additions).

  References:
    Zaheer et al., *Adaptive Methods for Nonconvex Optimization*, NeurIPS 2018.
  """
  spec = HParamSpec("scale_by_yogi", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    eps=(eps, NONNEGATIVE), eps_root=(eps_root, NONNEGATIVE))
  check_initial_value("scale_by_yogi", "initial_accumulator_value", initial_accumulator_value)

  def init(params):
    return ScaleByAdamState(numerics.zero_count(),
                            tree.accumulator_like(params, initial_accumulator_value, mu_dtype),
                            tree.accumulator_like(params, initial_accumulator_value, nu_dtype),
                            spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_yogi", state, ScaleByAdamState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_yogi")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)
    root_eps = floor_eps_root(h["eps_root"])  # sqrt's derivative finite at v = 0

    def leaf(g, m, v):
      m_new = ema_moment(g, m, h["b1"], order=1)
      dtype = compute_dtype(g, v)
      g_sq, v_old = numerics.abs_sq(g.astype(dtype), dtype), v.astype(dtype)
      # 1 - b2 before the cast (bfloat16 rounds b2 = 0.999 to 1, which would freeze v),
      # once per step and dtype.
      take = numerics.shared(f"yogi {dtype}", (h["b2"],), lambda: as_dtype(1 - h["b2"], dtype))
      v_new = v_old - take * jnp.sign(v_old - g_sq) * g_sq
      m_hat = numerics.bias_correction(m_new, h["b1"], count).astype(dtype)
      v_hat = numerics.bias_correction(v_new, h["b2"], count)
      eps, eps_root = as_dtype(h["eps"], dtype), as_dtype(root_eps, dtype)
      u = m_hat / numerics.adam_denominator(v_hat, eps, eps_root)
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdamState(count, mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_yogi", spec=spec, options=dict(
      initial_accumulator_value=initial_accumulator_value, mu_dtype=mu_dtype,
      nu_dtype=nu_dtype))


class ScaleByNovogradState(NamedTuple):
  """State of :func:`scale_by_novograd`: ``count``, momentum ``mu``, per-leaf ``nu``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  mu: Any
  nu: Any
  hparams: HParams


def scale_by_novograd(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.25,
                      eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0,
                      weight_decay: ScalarOrSchedule = 0.0,
                      mu_dtype: Any = None, *, nu_dtype: Any = None) -> GradientTransformation:
  """NovoGrad's step: a per-leaf second moment, normalising before the momentum.

  .. math::
    n_t = \\begin{cases} \\|g_t\\|^2 & t = 1 \\\\
      \\beta_2 n_{t-1} + (1-\\beta_2) \\|g_t\\|^2 & t > 1 \\end{cases}, \\qquad
    m_t = \\beta_1 m_{t-1} + \\frac{g_t}{\\sqrt{n_t + \\epsilon_\\text{root}} + \\epsilon}
      + \\lambda \\theta_t

  and :math:`u_t = m_t` (with :math:`m_0 = 0`); :math:`\\|g_t\\|` is the l2 norm
  of each leaf (a layer). No :math:`(1-\\beta_1)` factor, as in the paper.

  Conventions: :math:`\\epsilon` is outside the root, as in optax and NVIDIA
  apex's ``FusedNovoGrad``; the paper's Algorithm 1 (and the authors'
  OpenSeq2Seq code) puts it inside, :math:`g_t / \\sqrt{n_t + \\epsilon}`:
  ``eps=0, eps_root=`` :math:`\\epsilon` is that rule. The two differ where
  :math:`\\|g_t\\|^2` is not large against :math:`\\epsilon`.

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.25.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8 (the ready :func:`novograd` uses 1e-6).
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0`, default 0.
    weight_decay: :math:`\\lambda \\ge 0`, default 0 (needs the params).
    mu_dtype: dtype of :math:`m`.
    nu_dtype: dtype of :math:`n` (one scalar per leaf); ``None`` uses the params'
      dtype. gradtx's addition to optax's arguments: in float16 :math:`n` is 0
      for a leaf whose gradient norm is below about 1.7e-4, and the step
      :math:`g / \\epsilon` is far too large (Inf with ``eps=1e-8``, which is 0
      in float16); ``jnp.float32`` keeps :math:`n`.

  References:
    Ginsburg et al., *Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks*, 2019.
  """
  spec = HParamSpec("scale_by_novograd", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    eps=(eps, NONNEGATIVE), eps_root=(eps_root, NONNEGATIVE),
                    weight_decay=(weight_decay, NONNEGATIVE))

  def init(params):
    # One scalar per leaf (block_map: in packed mode, spread over the leaf's entries).
    nu = tree.block_map(lambda p: jnp.zeros((), numerics.state_dtype(p, nu_dtype)), params)
    return ScaleByNovogradState(numerics.zero_count(),
                                tree.accumulator_like(params, dtype=mu_dtype), nu,
                                spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_novograd", state, ScaleByNovogradState)
    del extra
    params = require_params("scale_by_novograd", params)
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_novograd")
    tree.check_structure(updates, params, "updates", "params", stage="scale_by_novograd")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)
    root_eps = floor_eps_root(h["eps_root"])  # sqrt's derivative finite at v = 0
    g_norm_sq = tree.block_sum_squares(updates)

    # The first step takes the norm itself rather than debiasing an EMA from 0.
    first = count == 1

    def leaf(g, m, n, theta, g_sq):
      take = numerics.ema_take(g_sq, n, h["b2"], order=1)  # once per step, not per leaf
      return _novograd_leaf(g, m, n, theta, g_sq, first, take, h["b1"], h["eps"], root_eps,
                            h["weight_decay"])

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu, params, g_norm_sq)
    return updates, ScaleByNovogradState(count, mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_novograd", spec=spec,
                                options=dict(mu_dtype=mu_dtype, nu_dtype=nu_dtype))


# Eagerly, one compiled kernel per leaf shape and dtype: its 15 or so operations, 8 of them
# on the leaf's scalar second moment, each dispatched on its own made an eager step 1.3x
# optax's, whose first-step lax.cond is one program for the tree (one kernel: 0.74x).
# Its products feed sums, so the eager bits are the fused kernel's, not the op-by-op ones.
@one_kernel_when_eager
def _novograd_leaf(g: jax.Array, m: jax.Array, n: jax.Array, theta: jax.Array,
                   g_sq: jax.Array, first: jax.Array, take: jax.Array, b1: jax.Array,
                   eps: jax.Array, eps_root: jax.Array,
                   weight_decay: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One leaf of :func:`scale_by_novograd`'s step: the update, the new ``m`` and ``n``.

  ``g_sq`` is :math:`\\|g\\|^2`, ``take`` is :math:`1 - \\beta_2` (``ema_take``),
  ``eps_root`` is already floored (``floor_eps_root``).
  """
  dtype = compute_dtype(g, m, n)  # n's dtype may be wider (nu_dtype)
  # as_dtype, not astype: a cast to the dtype an array has already is Python's
  # work alone, where astype costs an eager step about what an operation does.
  g_sq = as_dtype(g_sq, n.dtype)
  ema = lerp_moment(g_sq, n, take, order=1, squares=True)  # g_sq is ||g||^2
  n_new = jnp.where(first, g_sq, as_dtype(ema, n.dtype))
  eps, eps_root = as_dtype(eps, dtype), as_dtype(eps_root, dtype)
  q = (as_dtype(g, dtype) / numerics.adam_denominator(as_dtype(n_new, dtype), eps, eps_root)
       + as_dtype(weight_decay, dtype) * as_dtype(theta, dtype))
  m_new = as_dtype(b1, dtype) * as_dtype(m, dtype) + q  # m_0 = 0 makes m_1 = q
  return as_dtype(m_new, g.dtype), as_dtype(m_new, m.dtype), n_new


class ScaleByAdanState(NamedTuple):
  """State of :func:`scale_by_adan`: ``count``, moments ``m``, ``v``, ``n``, last gradient ``g``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  m: Any
  v: Any
  n: Any
  g: Any
  hparams: HParams


def scale_by_adan(b1: ScalarOrSchedule = 0.98, b2: ScalarOrSchedule = 0.92,
                  b3: ScalarOrSchedule = 0.99, eps: ScalarOrSchedule = 1e-8,
                  eps_root: ScalarOrSchedule = 0.0, *,
                  nu_dtype: Any = None) -> GradientTransformation:
  """Adan's step: Adam with a Nesterov estimate built from gradient differences.

  .. math::
    \\Delta_t = g_t - g_{t-1}\\ (\\Delta_1 = 0), \\quad
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) \\Delta_t, \\\\
    n_t = \\beta_3 n_{t-1} + (1-\\beta_3)(g_t + \\beta_2 \\Delta_t)^2, \\quad
    u_t = \\frac{\\hat m_t + \\beta_2 \\hat v_t}{\\sqrt{\\hat n_t + \\epsilon_\\text{root}}
      + \\epsilon}

  with hats the bias corrections :math:`x / (1-\\beta^t)`.

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.98.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.92.
    b3: :math:`\\beta_3 \\in [0, 1)`, default 0.99.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0`, default 0.
    nu_dtype: dtype of :math:`n`, the second moment; ``None`` uses the params'
      dtype. gradtx's addition to optax's arguments (``jnp.float32`` for float16
      params, where :math:`n` and ``eps`` round to 0).

  Conventions: optax's (and gradtx's) :math:`\\beta` are the paper's
  :math:`1 - \\beta`, so Algorithm 1's weight :math:`1 - \\beta_2` on the
  gradient difference (in :math:`n_t` and the step) is :math:`\\beta_2` here
  (0.92 at the default), as in the authors' code (``grad + beta2 * diff``).
  optax 0.2.8 weights it by :math:`1 - \\beta_2` (0.08), a slip its pull
  request #1715 corrects: the two agree at the first step, where
  :math:`\\Delta_1 = 0`, and at :math:`\\beta_2 = 0.5`.

  References:
    Xie et al., *Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models*, 2022.
  """
  spec = HParamSpec("scale_by_adan", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    b3=(b3, UNIT_HALF_OPEN), eps=(eps, NONNEGATIVE),
                    eps_root=(eps_root, NONNEGATIVE))

  def init(params):
    return ScaleByAdanState(numerics.zero_count(), tree.zeros_like(params), tree.zeros_like(params),
                            tree.accumulator_like(params, dtype=nu_dtype), tree.zeros_like(params),
                            spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_adan", state, ScaleByAdanState)
    del params, extra
    tree.check_structure(state.m, updates, "state.m", "updates", stage="scale_by_adan")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)
    root_eps = floor_eps_root(h["eps_root"])  # sqrt's derivative finite at v = 0

    def leaf(g, m, v, n, g_prev):
      # Per-step scalars shared by the leaves, and as_dtype rather than astype (a cast to
      # the dtype an array has is then Python's work alone): in an eager step each
      # operation is dispatched on its own, and these were three more per leaf.
      dtype = compute_dtype(g, m)
      g_ = as_dtype(g, dtype)
      first = numerics.shared("adan first", (count,), lambda: count == 1)
      delta = jnp.where(first, 0, g_ - as_dtype(g_prev, dtype))
      b2 = numerics.shared(f"adan b2 {dtype}", (h["b2"],), lambda: as_dtype(h["b2"], dtype))
      m_new = ema_moment(g_, m, h["b1"], order=1)
      v_new = ema_moment(delta, v, h["b2"], order=1)
      n_new = ema_moment(g_ + b2 * delta, n, h["b3"], order=2)
      m_hat = numerics.bias_correction(m_new, h["b1"], count)
      v_hat = numerics.bias_correction(v_new, h["b2"], count)
      n_hat = numerics.bias_correction(n_new, h["b3"], count)
      d = n_hat.dtype  # the wider of g's and n's
      eps, eps_root = as_dtype(h["eps"], d), as_dtype(root_eps, d)
      u = as_dtype(m_hat + b2 * v_hat, d) / numerics.adam_denominator(n_hat, eps, eps_root)
      return (as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(v_new, v.dtype),
              as_dtype(n_new, n.dtype), as_dtype(g, g_prev.dtype))

    updates, m, v, n, g = tree.map_multi(leaf, 5, updates, state.m, state.v, state.n, state.g)
    return updates, ScaleByAdanState(count, m, v, n, g, hparams)

  return GradientTransformation(init, update, name="scale_by_adan", spec=spec,
                                options=dict(nu_dtype=nu_dtype))


class ScaleByNadamState(NamedTuple):
  """State of :func:`scale_by_nadam`: ``count``, the product ``mu_product`` of the momentum
  schedule so far, and the moments ``mu``, ``nu``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  mu_product: jax.Array
  mu: Any
  nu: Any
  hparams: HParams


def scale_by_nadam(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                   eps: ScalarOrSchedule = 1e-8,
                   momentum_decay: ScalarOrSchedule = 4e-3, *,
                   nu_dtype: Any = None) -> GradientTransformation:
  """Dozat's NAdam with its momentum schedule (torch.optim.NAdam's rule).

  .. math::
    \\mu_t = \\beta_1\\left(1 - \\tfrac12\\, 0.96^{t\\psi}\\right), \\quad
    \\Pi_t = \\textstyle\\prod_{i \\le t} \\mu_i, \\quad
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\\\
    u_t = \\frac{1}{\\sqrt{v_t / (1-\\beta_2^t)} + \\epsilon}\\left(
      \\frac{1-\\mu_t}{1-\\Pi_t}\\, g_t + \\frac{\\mu_{t+1}}{1 - \\Pi_t\\, \\mu_{t+1}}\\, m_t\\right)

  :func:`scale_by_adam` with ``nesterov=True`` (optax's and gradtx's
  :func:`gradtx.nadam`) is this rule without the schedule (:math:`\\mu_t = \\beta_1`);
  torch.optim.NAdam with its default ``momentum_decay=4e-3`` is this one.

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8, outside the root.
    momentum_decay: :math:`\\psi \\ge 0`, default 4e-3 (the paper's 1/250).
    nu_dtype: dtype of :math:`v`; ``None`` uses the params' dtype (gradtx's
      addition, as in :func:`gradtx.scale_by_adam`).

  References:
    Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR workshop 2016.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_nadam()
    >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]  # (2 + 0.1129) / 2
    Array([1.0564518], dtype=float32)
  """
  spec = HParamSpec("scale_by_nadam", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    eps=(eps, NONNEGATIVE), momentum_decay=(momentum_decay, NONNEGATIVE))

  def init(params):
    # The widest leaf's real dtype, also under strict promotion (float32 beside bfloat16;
    # mu_t's product is real, float32 for complex64 leaves).
    dtype = numerics.real_dtype(numerics.compute_dtype(*jax.tree.leaves(params)))
    return ScaleByNadamState(numerics.zero_count(), jnp.ones((), dtype), tree.zeros_like(params),
                             tree.accumulator_like(params, dtype=nu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_nadam", state, ScaleByNadamState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_nadam")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)
    dtype = state.mu_product.dtype
    beta1, psi, t = as_dtype(h["b1"], dtype), as_dtype(h["momentum_decay"], dtype), count.astype(
        dtype)
    mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * psi))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
    mu_product = state.mu_product * mu_t

    def leaf(g, m, v):
      m_new = ema_moment(g, m, h["b1"], order=1)
      v_new = ema_moment(g, v, h["b2"], order=2)
      d = v_new.dtype
      denominator = safe_sqrt(numerics.bias_correction(v_new, h["b2"], count)) + as_dtype(
          h["eps"], d)
      u = (((1 - mu_t) / (1 - mu_product)).astype(d) * g.astype(d)
           + (mu_next / (1 - mu_product * mu_next)).astype(d) * m_new.astype(d)) / denominator
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByNadamState(count, mu_product, mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_nadam", spec=spec,
                                options=dict(nu_dtype=nu_dtype))
