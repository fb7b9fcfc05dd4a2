"""optax.contrib: acprop, AdEMAMix and its simplified form, ADOPT, MADGRAD.

Adam's relatives: each divides a (mixed, clipped or delayed) momentum by a
root of a running second moment, except MADGRAD, which dual-averages with a
cube root. The moments, bias corrections and dtypes are gradtx's shared
numerics (:mod:`gradtx.numerics`), as in :func:`gradtx.scale_by_adam`: the
arithmetic runs in the wider of the gradient's and the moment's dtypes, and
a moment held in a narrower ``mu_dtype`` is used as it is stored.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics, tree
from gradtx.chain import Chain, named_chain
from gradtx.core import (NONNEGATIVE, POSITIVE, UNIT, UNIT_HALF_OPEN, GradientTransformation,
                         HParams, HParamSpec, ScalarOrSchedule, read_once, require_params)
from gradtx.numerics import (abs_sq, as_dtype, bias_correction, compute_dtype, ema_moment,
                             safe_increment)
from gradtx.transforms.adaptive import ScaleByBeliefState
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.moments import ScaleByAdamState
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["MadgradState", "ScaleByAdemamixState", "ScaleBySimplifiedAdEMAMixState", "acprop",
           "ademamix", "adopt", "madgrad", "scale_by_acprop", "scale_by_ademamix",
           "scale_by_adopt", "scale_by_madgrad", "scale_by_simplified_ademamix",
           "simplified_ademamix"]


# ----------------------------------------------------------------------------
# ADOPT.


def _fourth_root(count: jax.Array) -> jax.Array:
  """:math:`c_t = t^{1/4}`, ADOPT's clipping bound at step count ``t``."""
  # In the default float dtype (float64 under x64), as optax's ``count ** 0.25`` gives.
  return jnp.asarray(count).astype(jnp.result_type(float)) ** 0.25


def scale_by_adopt(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.9999,
                   eps: ScalarOrSchedule = 1e-6, mu_dtype: Any = None, *,
                   nesterov: bool = False, use_clipping: bool = True,
                   clip_value_fn: Callable[[jax.Array], jax.Array] = _fourth_root
                   ) -> GradientTransformation:
  """ADOPT's step: momentum of the gradient normalised by the *previous* second moment.

  .. math::
    v_0 = g_0^2, \\quad
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1)\\,
      \\operatorname{clip}\\Big(\\frac{g_t}{\\max(\\sqrt{v_{t-1}}, \\epsilon)}, c_t\\Big), \\quad
    u_t = m_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2

  for :math:`t \\ge 1`, with :math:`m_0 = 0` and
  :math:`\\operatorname{clip}(x, c) = \\min(\\max(x, -c), c)`. The first call
  (step 0) only sets :math:`v_0`: its update is zero. The clip bound is
  :math:`c_t` = ``clip_value_fn(t)``, :math:`t^{1/4}` by default, and reads
  as ``"clip_value"`` in :func:`gradtx.hparams`; ``use_clipping=False`` drops
  the clip. With ``nesterov=True``,
  :math:`u_t = \\beta_1 m_t + (1-\\beta_1) \\operatorname{clip}(\\cdot)` (optax's variant).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1]`, default 0.9999 (ADOPT converges for any
      :math:`\\beta_2`; there is no bias correction to divide by
      :math:`1 - \\beta_2^t`).
    eps: :math:`\\epsilon > 0`, the floor of :math:`\\sqrt{v}`, default 1e-6. It
      must be positive: a gradient entry that has been zero so far has
      :math:`v = 0`.
    mu_dtype: dtype of :math:`m`; ``None`` uses the params' dtype. The step
      uses :math:`m_t` as stored (see :func:`gradtx.scale_by_adam`).
    nesterov: the look-ahead update above.
    use_clipping: clip the normalised gradient (recommended when training from
      scratch).
    clip_value_fn: :math:`c_t` as a function of the step count (a schedule),
      default :math:`t^{1/4}`.

  References:
    Taniguchi et al., *ADOPT: Modified Adam Can Converge with Any beta2 with
    the Optimal Rate*, NeurIPS 2024.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_adopt(b1=0.5)
    >>> state = tx.init(jnp.zeros(2))
    >>> u, state = tx.update(jnp.array([2.0, -0.5]), state)  # sets v_0 = g_0^2
    >>> u
    Array([0., 0.], dtype=float32)
    >>> tx.update(jnp.array([4.0, -0.5]), state)[0]  # 0.5 * clip(g / |g_0|, 1)
    Array([ 0.5, -0.5], dtype=float32)
  """
  entries = dict(b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT), eps=(eps, POSITIVE))
  if use_clipping:
    entries["clip_value"] = (clip_value_fn, NONNEGATIVE)
  spec = HParamSpec("scale_by_adopt", **entries)

  def init(params):
    return ScaleByAdamState(numerics.zero_count(), tree.zeros_like(params, mu_dtype),
                            tree.zeros_like(params), spec.init())

  def update(updates, state, params=None, **extra):
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates")
    h, hparams = spec.step(state.hparams)
    # Step 0 only sets v_0 = g_0^2 (b2 -> 0) and keeps m = 0 (b1 -> 1).
    started = state.count > 0
    b1_t = jnp.where(started, h["b1"], 1)
    b2_t = jnp.where(started, h["b2"], 0)

    def leaf(g, m, v):
      dtype = compute_dtype(g, v)
      eps = as_dtype(h["eps"], dtype)
      normalised = as_dtype(g, dtype) / jnp.maximum(jnp.sqrt(as_dtype(v, dtype)), eps)
      if use_clipping:
        c = as_dtype(h["clip_value"], dtype)
        normalised = jnp.clip(normalised, -c, c)
      m_new = ema_moment(normalised, m, b1_t, order=1)
      v_new = ema_moment(g, v, b2_t, order=2)
      u = ema_moment(normalised, m_new, b1_t, order=1, store=False) if nesterov else m_new
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(v_new, v.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdamState(safe_increment(state.count), mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_adopt", spec=spec, options=dict(
      mu_dtype=mu_dtype, nesterov=nesterov, use_clipping=use_clipping))


def adopt(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
          b2: ScalarOrSchedule = 0.9999, eps: ScalarOrSchedule = 1e-6, mu_dtype: Any = None, *,
          nesterov: bool = False, use_clipping: bool = True,
          clip_value_fn: Callable[[jax.Array], jax.Array] = _fourth_root) -> Chain:
  """ADOPT: Adam that normalises by the second moment of the steps *before* this one.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1)\\,
      \\operatorname{clip}\\Big(\\frac{g_t}{\\max(\\sqrt{v_{t-1}}, \\epsilon)}, t^{1/4}\\Big), \\quad
    \\theta_{t+1} = \\theta_t - \\eta_t m_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2

  with :math:`v_0 = g_0^2` set by the first call, whose update is zero (see
  :func:`scale_by_adopt`). Because :math:`v_{t-1}` does not depend on
  :math:`g_t`, ADOPT converges for any :math:`\\beta_2`.

  Args:
    learning_rate: :math:`\\eta \\ge 0`, a float or a schedule.
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1]`, default 0.9999.
    eps: :math:`\\epsilon > 0`, default 1e-6.
    mu_dtype: dtype of :math:`m`.
    nesterov: optax's look-ahead variant (see :func:`scale_by_adopt`).
    use_clipping: clip the normalised gradient, default ``True``.
    clip_value_fn: the clip bound as a function of the step, default :math:`t^{1/4}`.

  References:
    Taniguchi et al., *ADOPT: Modified Adam Can Converge with Any beta2 with
    the Optimal Rate*, NeurIPS 2024.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.adopt(1e-3))
    adopt(
      adopt=scale_by_adopt(b1=0.9, b2=0.9999, eps=1e-06, clip_value=_fourth_root, mu_dtype=None, nesterov=False, use_clipping=True),
      lr=scale_by_learning_rate(learning_rate=0.001, flip_sign=True),
    )
  """
  return named_chain("adopt", adopt=scale_by_adopt(
      b1, b2, eps, mu_dtype, nesterov=nesterov, use_clipping=use_clipping,
      clip_value_fn=clip_value_fn), lr=scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------
# AdEMAMix.


class ScaleByAdemamixState(NamedTuple):
  """State of :func:`scale_by_ademamix`.

  ``count`` and ``count_m2`` (equal: optax keeps both) count the steps taken;
  ``m1`` is the fast EMA of the gradients, ``m2`` the slow one, ``nu`` the
  EMA of their squares.
  """
  count: jax.Array
  count_m2: jax.Array
  m1: Any
  m2: Any
  nu: Any
  hparams: HParams


def scale_by_ademamix(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                      b3: ScalarOrSchedule = 0.9999, alpha: ScalarOrSchedule = 6.0,
                      eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0,
                      mu_dtype: Any = None, *, nu_dtype: Any = None) -> GradientTransformation:
  """AdEMAMix's step: Adam's debiased fast EMA plus :math:`\\alpha` times a slow EMA.

  .. math::
    m^{(1)}_t = \\beta_1 m^{(1)}_{t-1} + (1-\\beta_1) g_t, \\quad
    m^{(2)}_t = \\beta_3 m^{(2)}_{t-1} + (1-\\beta_3) g_t, \\quad
    \\nu_t = \\beta_2 \\nu_{t-1} + (1-\\beta_2) g_t^2, \\\\
    u_t = \\frac{m^{(1)}_t / (1-\\beta_1^t) + \\alpha\\, m^{(2)}_t}
               {\\sqrt{\\nu_t / (1-\\beta_2^t) + \\epsilon_\\text{root}} + \\epsilon}

  The slow EMA is not debiased, so that it fills slowly. :math:`\\alpha` and
  :math:`\\beta_3` may be schedules of the step (the paper warms both up).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    b3: :math:`\\beta_3 \\in [0, 1]`, the slow EMA's decay, default 0.9999.
    alpha: :math:`\\alpha \\ge 0`, the slow EMA's weight, default 6 (optax's
      default here; :func:`ademamix` defaults to 5).
    eps: :math:`\\epsilon \\ge 0` outside the root, default 1e-8.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0` inside the root, default 0.
    mu_dtype: dtype of :math:`m^{(1)}` and :math:`m^{(2)}`.
    nu_dtype: dtype of :math:`\\nu`; ``None`` uses the params' dtype. optax
      stores :math:`\\nu` in ``mu_dtype`` too, although its docstring calls
      ``mu_dtype`` the first-order accumulator's dtype; gradtx keeps the
      second moment apart, as :func:`gradtx.scale_by_adam` does.

  References:
    Pagliardini, Ablin & Grangier, *The AdEMAMix Optimizer: Better, Faster,
    Older*, ICLR 2025 (arXiv:2409.03137).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_ademamix(b3=0.5, alpha=2.0)
    >>> tx.update(jnp.array([1.0, -1.0]), tx.init(jnp.zeros(2)))[0]  # (1 + 2 * 0.5) / 1
    Array([ 2., -2.], dtype=float32)
  """
  spec = HParamSpec("scale_by_ademamix", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    b3=(b3, UNIT), alpha=(alpha, NONNEGATIVE), eps=(eps, NONNEGATIVE),
                    eps_root=(eps_root, NONNEGATIVE))

  def init(params):
    count = numerics.zero_count()
    return ScaleByAdemamixState(count, count, tree.zeros_like(params, mu_dtype),
                                tree.zeros_like(params, mu_dtype),
                                tree.zeros_like(params, nu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    del params, extra
    tree.check_structure(state.m1, updates, "state.m1", "updates")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)

    def leaf(g, m1, m2, nu):
      m1_new = ema_moment(g, m1, h["b1"], order=1)
      m2_new = ema_moment(g, m2, h["b3"], order=1)
      nu_new = ema_moment(g, nu, h["b2"], order=2)
      m1_hat = bias_correction(m1_new, h["b1"], count)
      nu_hat = bias_correction(nu_new, h["b2"], count)
      dtype = compute_dtype(m1_hat, m2_new, nu_hat)
      alpha, eps, eps_root = (as_dtype(h[n], dtype) for n in ("alpha", "eps", "eps_root"))
      u = ((as_dtype(m1_hat, dtype) + alpha * as_dtype(m2_new, dtype))
           / (jnp.sqrt(as_dtype(nu_hat, dtype) + eps_root) + eps))
      return (as_dtype(u, g.dtype), as_dtype(m1_new, m1.dtype), as_dtype(m2_new, m2.dtype),
              as_dtype(nu_new, nu.dtype))

    updates, m1, m2, nu = tree.map_multi(leaf, 4, updates, state.m1, state.m2, state.nu)
    return updates, ScaleByAdemamixState(count, safe_increment(state.count_m2), m1, m2, nu,
                                         hparams)

  return GradientTransformation(init, update, name="scale_by_ademamix", spec=spec,
                                options=dict(mu_dtype=mu_dtype, nu_dtype=nu_dtype))


def ademamix(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
             b2: ScalarOrSchedule = 0.999, b3: ScalarOrSchedule = 0.9999,
             alpha: ScalarOrSchedule = 5.0, eps: ScalarOrSchedule = 1e-8,
             eps_root: ScalarOrSchedule = 0.0, mu_dtype: Any = None,
             weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None) -> Chain:
  """AdEMAMix: AdamW whose momentum mixes a fast and a slow EMA of the gradients.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta_t \\Big(
      \\frac{\\hat m^{(1)}_t + \\alpha\\, m^{(2)}_t}{\\sqrt{\\hat\\nu_t + \\epsilon_\\text{root}}
      + \\epsilon} + \\lambda \\theta_t \\Big)

  with :math:`\\hat m^{(1)}_t` and :math:`\\hat\\nu_t` Adam's debiased moments and
  :math:`m^{(2)}_t` an undebiased EMA of decay :math:`\\beta_3` (see
  :func:`scale_by_ademamix`). The slow EMA remembers gradients for about
  :math:`1/(1-\\beta_3)` steps: the method suits long runs (the paper's
  appendix C.1.5 prefers :math:`\\beta_3 = 0.999` for short ones), and may
  adapt slowly to a shift of the data's distribution.

  Args:
    learning_rate: :math:`\\eta \\ge 0`, a float or a schedule.
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    b3: :math:`\\beta_3 \\in [0, 1]`, default 0.9999; may be a schedule.
    alpha: :math:`\\alpha \\ge 0`, default 5; may be a schedule.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0`, default 0.
    mu_dtype: dtype of the two EMAs.
    weight_decay: :math:`\\lambda \\ge 0`, decoupled and multiplied by the
      learning rate (as torch's AdamW), default 0.
    mask: which leaves to decay (a tree of bools or a callable of the params).

  References:
    Pagliardini, Ablin & Grangier, *The AdEMAMix Optimizer: Better, Faster,
    Older*, ICLR 2025 (arXiv:2409.03137).

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.ademamix(1e-3, weight_decay=0.01))
    ademamix(
      ademamix=scale_by_ademamix(b1=0.9, b2=0.999, b3=0.9999, alpha=5, eps=1e-08, eps_root=0, mu_dtype=None, nu_dtype=None),
      decay=add_decayed_weights(weight_decay=0.01),
      lr=scale_by_learning_rate(learning_rate=0.001, flip_sign=True),
    )
  """
  return named_chain("ademamix",
                     ademamix=scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype),
                     decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate))


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
  """State of :func:`scale_by_simplified_ademamix`: step count ``t``, momentum ``m``, ``n``.

  ``m`` is the undamped momentum (a sum of past gradients with weights
  :math:`\\beta_1^k`) and ``n`` the EMA of the squared gradients.
  """
  t: jax.Array
  m: Any
  n: Any
  hparams: HParams


def scale_by_simplified_ademamix(b1: ScalarOrSchedule = 0.99, b2: ScalarOrSchedule = 0.95,
                                 alpha: ScalarOrSchedule = 0.0, eps: ScalarOrSchedule = 1e-8,
                                 eps_root: ScalarOrSchedule = 0.0) -> GradientTransformation:
  """Simplified AdEMAMix's step: one undamped momentum plus :math:`\\alpha` times the gradient.

  .. math::
    m_t = \\beta_1 m_{t-1} + g_t, \\quad
    n_t = \\beta_2 n_{t-1} + (1-\\beta_2) g_t^2, \\quad
    u_t = \\frac{m_t + \\alpha g_t}{\\sqrt{n_t / (1-\\beta_2^t) + \\epsilon_\\text{root}} + \\epsilon}

  The momentum is a sum (no :math:`1-\\beta_1` factor), so its scale is about
  :math:`1/(1-\\beta_1)` times the gradient's: a learning rate that suits Adam
  is divided by about that much.

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.99.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.95.
    alpha: :math:`\\alpha \\ge 0`, the weight of the current gradient, default
      0; may be a schedule.
    eps: :math:`\\epsilon \\ge 0` outside the root, default 1e-8.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0` inside the root, default 0.

  References:
    Morwani et al., *Connections between Schedule-Free Optimizers, AdEMAMix,
    and Accelerated SGD Variants*, 2025 (arXiv:2502.02431).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_simplified_ademamix(alpha=1.0)
    >>> tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))[0]  # (g + g) / |g|
    Array([ 2., -2.], dtype=float32)
  """
  spec = HParamSpec("scale_by_simplified_ademamix", b1=(b1, UNIT_HALF_OPEN),
                    b2=(b2, UNIT_HALF_OPEN), alpha=(alpha, NONNEGATIVE), eps=(eps, NONNEGATIVE),
                    eps_root=(eps_root, NONNEGATIVE))

  def init(params):
    return ScaleBySimplifiedAdEMAMixState(numerics.zero_count(), tree.zeros_like(params),
                                          tree.zeros_like(params), spec.init())

  def update(updates, state, params=None, **extra):
    del params, extra
    tree.check_structure(state.m, updates, "state.m", "updates")
    h, hparams = spec.step(state.hparams)
    t = safe_increment(state.t)

    def leaf(g, m, n):
      dtype = compute_dtype(g, m)
      g_ = as_dtype(g, dtype)
      m_new = numerics.stored(as_dtype(h["b1"], dtype) * as_dtype(m, dtype) + g_, m.dtype)
      n_new = ema_moment(g, n, h["b2"], order=2)
      n_hat = bias_correction(n_new, h["b2"], t)
      dtype = compute_dtype(m_new, n_hat)
      alpha, eps, eps_root = (as_dtype(h[k], dtype) for k in ("alpha", "eps", "eps_root"))
      u = ((as_dtype(m_new, dtype) + alpha * as_dtype(g_, dtype))
           / (jnp.sqrt(as_dtype(n_hat, dtype) + eps_root) + eps))
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(n_new, n.dtype)

    updates, m, n = tree.map_multi(leaf, 3, updates, state.m, state.n)
    return updates, ScaleBySimplifiedAdEMAMixState(t, m, n, hparams)

  return GradientTransformation(init, update, name="scale_by_simplified_ademamix", spec=spec)


def simplified_ademamix(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.99,
                        b2: ScalarOrSchedule = 0.95, alpha: ScalarOrSchedule = 0.0,
                        eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0,
                        weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None) -> Chain:
  """Simplified AdEMAMix: one undamped momentum, mixed with the gradient, over Adam's root.

  .. math::
    m_t = \\beta_1 m_{t-1} + g_t, \\quad
    \\theta_{t+1} = \\theta_t - \\eta_t \\Big(
      \\frac{m_t + \\alpha g_t}{\\sqrt{\\hat n_t + \\epsilon_\\text{root}} + \\epsilon}
      + \\lambda \\theta_t \\Big)

  with :math:`\\hat n_t` Adam's debiased second moment (see
  :func:`scale_by_simplified_ademamix`). It keeps one momentum buffer where
  AdEMAMix keeps two, and needs no schedule of :math:`\\alpha`; with
  :math:`\\alpha = 0` it is Adam with a rescaled :math:`\\eta` and
  :math:`\\beta_1`.

  Args:
    learning_rate: :math:`\\eta \\ge 0`, a float or a schedule.
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.99.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.95.
    alpha: :math:`\\alpha \\ge 0`, default 0.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0`, default 0.
    weight_decay: :math:`\\lambda \\ge 0`, decoupled and multiplied by the
      learning rate, default 0.
    mask: which leaves to decay.

  References:
    Morwani et al., *Connections between Schedule-Free Optimizers, AdEMAMix,
    and Accelerated SGD Variants*, 2025 (arXiv:2502.02431).

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.simplified_ademamix(1e-4, alpha=2.0))
    simplified_ademamix(
      simplified_ademamix=scale_by_simplified_ademamix(b1=0.99, b2=0.95, alpha=2, eps=1e-08, eps_root=0),
      decay=add_decayed_weights(weight_decay=0),
      lr=scale_by_learning_rate(learning_rate=0.0001, flip_sign=True),
    )
  """
  return named_chain("simplified_ademamix",
                     simplified_ademamix=scale_by_simplified_ademamix(b1, b2, alpha, eps,
                                                                      eps_root),
                     decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------
# MADGRAD.


class MadgradState(NamedTuple):
  """State of :func:`scale_by_madgrad`.

  ``count`` steps taken; ``grad_sum_sq`` the weighted sum :math:`\\nu_k` of
  squared gradients; ``s`` the weighted sum :math:`s_k` of gradients; ``x0``
  the initial parameters :math:`x_0`.
  """
  count: jax.Array
  grad_sum_sq: Any
  s: Any
  x0: Any
  hparams: HParams


def scale_by_madgrad(learning_rate: ScalarOrSchedule, momentum: ScalarOrSchedule = 0.9,
                     eps: ScalarOrSchedule = 1e-6) -> GradientTransformation:
  """MADGRAD's step: momentumized dual averaging with a cube-root scaling.

  .. math::
    \\lambda_k = (\\gamma_k + \\epsilon)\\sqrt{k + 1}, \\quad
    s_{k+1} = s_k + \\lambda_k g_k, \\quad
    \\nu_{k+1} = \\nu_k + \\lambda_k g_k^2, \\\\
    z_{k+1} = x_0 - \\frac{s_{k+1}}{\\nu_{k+1}^{1/3} + \\epsilon}, \\quad
    u_k = x_{k+1} - x_k = (1 - \\beta)(z_{k+1} - x_k)

  for :math:`k = 0, 1, \\dots` (the steps taken before this one), with
  :math:`s_0 = \\nu_0 = 0`, :math:`x_0` the parameters given to ``init``,
  :math:`\\gamma_k` the learning rate and :math:`\\beta` the momentum. The
  update already descends (no learning-rate stage follows), so the stage
  needs the parameters. Adding :math:`\\epsilon` to the rate follows the
  authors' PyTorch code (and optax).

  Args:
    learning_rate: :math:`\\gamma \\ge 0`, a float or a schedule of the step.
    momentum: :math:`\\beta \\in [0, 1)`, default 0.9 (the paper's
      :math:`c_{k+1} = 1 - \\beta`).
    eps: :math:`\\epsilon > 0`, default 1e-6. It must be positive: a gradient
      entry that has been zero so far has :math:`\\nu = 0`.

  References:
    Defazio & Jelassi, *Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization*,
    JMLR 2022 (arXiv:2101.11075).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_madgrad(learning_rate=0.1, momentum=0.0, eps=1e-6)
    >>> params = jnp.zeros(2)
    >>> u, _ = tx.update(jnp.array([8.0, -1.0]), tx.init(params), params)
    >>> [round(float(x), 4) for x in u]  # -(l g) / (l g^2)^(1/3) = -l^(2/3) g^(1/3), l ~ 0.1
    [-0.4309, 0.2154]
  """
  spec = HParamSpec("scale_by_madgrad", learning_rate=(learning_rate, NONNEGATIVE),
                    momentum=(momentum, UNIT_HALF_OPEN), eps=(eps, POSITIVE))

  def init(params):
    return MadgradState(numerics.zero_count(), tree.zeros_like(params), tree.zeros_like(params),
                        tree.tree_map(jnp.copy, params), spec.init())

  def update(updates, state, params=None, **extra):
    del extra
    params = require_params("scale_by_madgrad", params)
    tree.check_structure(state.s, updates, "state.s", "updates")
    tree.check_structure(updates, params, "updates", "params")
    h, hparams = spec.step(state.hparams, read=False)
    # The per-step scalars, computed once (in the hyperparameters' dtype) for every leaf.
    dtype = compute_dtype(h["learning_rate"], h["eps"], h["momentum"])
    k = as_dtype(state.count, dtype)
    lam = (as_dtype(h["learning_rate"], dtype) + as_dtype(h["eps"], dtype)) * jnp.sqrt(k + 1)
    s_ = read_once({"lambda": lam, "1-momentum": 1 - as_dtype(h["momentum"], dtype),
                    "eps": as_dtype(h["eps"], dtype)})

    def leaf(g, nu, s, x0, x):
      dtype = compute_dtype(g, nu, s)
      lam, c, eps = (as_dtype(s_[n], dtype) for n in ("lambda", "1-momentum", "eps"))
      g_ = as_dtype(g, dtype)
      nu_new = as_dtype(nu, dtype) + lam * abs_sq(g_)
      s_new = as_dtype(s, dtype) + lam * g_
      # (1 - beta) z + beta x - x as (1 - beta)((x_0 - x) - s / sigma): forming z first
      # would round a step much smaller than x to x's last digits.
      u = c * ((as_dtype(x0, dtype) - as_dtype(x, dtype)) - s_new / (jnp.cbrt(nu_new) + eps))
      return as_dtype(u, g.dtype), as_dtype(nu_new, nu.dtype), as_dtype(s_new, s.dtype)

    updates, grad_sum_sq, s = tree.map_multi(leaf, 3, updates, state.grad_sum_sq, state.s,
                                             state.x0, params)
    return updates, MadgradState(safe_increment(state.count), grad_sum_sq, s, state.x0, hparams)

  return GradientTransformation(init, update, name="scale_by_madgrad", spec=spec)


def madgrad(learning_rate: ScalarOrSchedule, momentum: ScalarOrSchedule = 0.9,
            weight_decay: ScalarOrSchedule = 0.0, eps: ScalarOrSchedule = 1e-6) -> Chain:
  """MADGRAD: momentumized, adaptive, dual-averaged gradient descent.

  .. math::
    z_{k+1} = x_0 - \\frac{\\sum_{i \\le k} \\lambda_i g_i}
      {(\\sum_{i \\le k} \\lambda_i g_i^2)^{1/3} + \\epsilon}, \\quad
    x_{k+1} = \\beta x_k + (1 - \\beta) z_{k+1}

  with :math:`\\lambda_i = (\\gamma_i + \\epsilon)\\sqrt{i + 1}` and
  :math:`g_i` the gradient plus :math:`\\lambda_\\text{wd} x_i` (L2 weight
  decay, coupled as in the authors' code); see :func:`scale_by_madgrad`.

  Args:
    learning_rate: :math:`\\gamma \\ge 0`, a float or a schedule.
    momentum: :math:`\\beta \\in [0, 1)`, default 0.9.
    weight_decay: :math:`\\lambda_\\text{wd} \\ge 0`, added to the gradient, default 0.
    eps: :math:`\\epsilon > 0`, default 1e-6.

  References:
    Defazio & Jelassi, *Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization*,
    JMLR 2022 (arXiv:2101.11075).

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.madgrad(1e-2))
    madgrad(
      decay=add_decayed_weights(weight_decay=0),
      madgrad=scale_by_madgrad(learning_rate=0.01, momentum=0.9, eps=1e-06),
    )
  """
  return named_chain("madgrad", decay=add_decayed_weights(weight_decay),
                     madgrad=scale_by_madgrad(learning_rate, momentum, eps))


# ----------------------------------------------------------------------------
# ACProp.


def scale_by_acprop(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                    eps: ScalarOrSchedule = 1e-16,
                    eps_root: ScalarOrSchedule = 1e-16) -> GradientTransformation:
  """ACProp's step: the gradient over the root of the *previous* centred second moment.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    s_t = \\beta_2 s_{t-1} + (1-\\beta_2)(g_t - m_t)^2 + \\epsilon_\\text{root}, \\\\
    u_t = \\frac{g_t}{\\sqrt{s_{t-1} / (1-\\beta_2^{t-1})} + \\epsilon}

  for :math:`t \\ge 2`, and :math:`u_1 = g_1 / (1 + \\epsilon)` (there is no
  :math:`s_0` to divide by yet). The numerator is the current gradient and
  the denominator holds information up to step :math:`t-1` only (the
  "asynchronous" update); :math:`m_t` serves only to centre :math:`s_t`.

  Differs from optax 0.2.8: ``optax.contrib.scale_by_acprop`` centres with
  the previous mean, :math:`(g_t - m_{t-1})^2 = (g_t - m_t)^2 / \\beta_1^2`,
  against its own docstring and the paper. Its :math:`s` is then
  :math:`1/\\beta_1^2` times the paper's and its steps from the second on are
  about :math:`\\beta_1` times gradtx's (exactly, with both epsilons 0).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0` outside the root, default 1e-16.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0` added to :math:`s_t` (and
      kept in the state, as AdaBelief does), default 1e-16; keep it positive
      to differentiate through the step.

  References:
    Zhuang et al., *Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods*, NeurIPS 2021.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_acprop(eps=0.0, eps_root=0.0)
    >>> state = tx.init(jnp.zeros(2))
    >>> tx.update(jnp.array([2.0, -0.5]), state)[0]  # the first step divides by 1
    Array([ 2. , -0.5], dtype=float32)
  """
  spec = HParamSpec("scale_by_acprop", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    eps=(eps, NONNEGATIVE), eps_root=(eps_root, NONNEGATIVE))

  def init(params):
    return ScaleByBeliefState(numerics.zero_count(), tree.zeros_like(params),
                              tree.zeros_like(params), spec.init())

  def update(updates, state, params=None, **extra):
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates")
    h, hparams = spec.step(state.hparams)
    first = state.count == 0
    # s_{t-1} is debiased with t - 1 = state.count steps; at the first step, by nothing.
    previous = jnp.maximum(state.count, 1)

    def leaf(g, m, s):
      m_new = ema_moment(g, m, h["b1"], order=1)
      s_new = ema_moment(as_dtype(g, m_new.dtype) - m_new, s, h["b2"], order=2)
      s_new = s_new + as_dtype(h["eps_root"], s_new.dtype)
      s_hat = jnp.where(first, 1, bias_correction(s, h["b2"], previous))
      dtype = compute_dtype(g, s_hat)
      u = as_dtype(g, dtype) / (jnp.sqrt(as_dtype(s_hat, dtype)) + as_dtype(h["eps"], dtype))
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(s_new, s.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByBeliefState(safe_increment(state.count), mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_acprop", spec=spec)


def acprop(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
           b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-16,
           eps_root: ScalarOrSchedule = 1e-16, weight_decay: ScalarOrSchedule = 0.0,
           mask: Mask | None = None) -> Chain:
  """ACProp: AdaBelief's centred second moment, used one step late (asynchronous).

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta_t \\Big(
      \\frac{g_t}{\\sqrt{\\hat s_{t-1}} + \\epsilon} + \\lambda \\theta_t \\Big), \\quad
    s_t = \\beta_2 s_{t-1} + (1-\\beta_2)(g_t - m_t)^2 + \\epsilon_\\text{root}

  with :math:`m_t` the EMA of the gradients and :math:`\\hat s` the debiased
  :math:`s` (see :func:`scale_by_acprop`, which also says where optax 0.2.8
  differs).

  Args:
    learning_rate: :math:`\\eta \\ge 0`, a float or a schedule.
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0`, default 1e-16.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0`, default 1e-16.
    weight_decay: :math:`\\lambda \\ge 0`, decoupled and multiplied by the
      learning rate, default 0.
    mask: which leaves to decay.

  References:
    Zhuang et al., *Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods*, NeurIPS 2021.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.acprop(1e-3))
    acprop(
      acprop=scale_by_acprop(b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16),
      decay=add_decayed_weights(weight_decay=0),
      lr=scale_by_learning_rate(learning_rate=0.001, flip_sign=True),
    )
  """
  return named_chain("acprop", acprop=scale_by_acprop(b1, b2, eps, eps_root),
                     decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate))
