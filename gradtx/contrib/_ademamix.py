"""optax.contrib: AdEMAMix and its simplified form.

AdEMAMix adds a slow, undebiased EMA of the gradients to Adam's momentum;
the simplified form keeps one undamped momentum mixed with the gradient.
Both divide by the root of Adam's debiased second moment.

The moments, bias corrections and dtypes are gradtx's shared numerics
(:mod:`gradtx.numerics`), as in :func:`gradtx.scale_by_adam`: the arithmetic
runs in the wider of the gradient's and the moment's dtypes, and a moment
held in a narrower ``mu_dtype`` is used as it is stored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gradtx import numerics, tree
from gradtx.chain import Chain, named_chain
from gradtx.core import (NONNEGATIVE, UNIT, UNIT_HALF_OPEN, GradientTransformation, HParams,
                         HParamSpec, ScalarOrSchedule, check_state, names_its_arguments)
from gradtx.numerics import (as_dtype, bias_correction, compute_dtype, ema_moment,
                             floor_eps_root, safe_increment)
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.moments import adam_moments
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["ScaleByAdemamixState", "ScaleBySimplifiedAdEMAMixState", "ademamix",
           "scale_by_ademamix", "scale_by_simplified_ademamix", "simplified_ademamix"]


class ScaleByAdemamixState(NamedTuple):
  """State of :func:`scale_by_ademamix`.

  ``count`` counts the steps taken; ``m1`` is the fast EMA of the gradients,
  ``m2`` the slow one, ``nu`` the EMA of their squares. ``count_m2`` is
  ``count`` again: optax keeps both, and the field stays so that the state
  has optax's fields in optax's order (a leaf, where a property would drop
  out of the tree's paths and of a checkpoint's layout).
  """
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
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
      0.2.8 makes :math:`\\nu` in ``mu_dtype`` too at init (its docstring calls
      ``mu_dtype`` the first-order accumulator's dtype), and its first update
      returns all three moments in the gradients' dtype; gradtx keeps each
      moment in the dtype asked, the second apart, as
      :func:`gradtx.scale_by_adam` does. On float16
      params give ``jnp.float32``: float16 rounds ``eps=1e-8`` and small
      :math:`(1-\\beta_2) g^2` to 0, so the step is 0/0 or :math:`m/0`.

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
    return ScaleByAdemamixState(numerics.zero_count(), numerics.zero_count(), tree.accumulator_like(params, dtype=mu_dtype),
                                tree.accumulator_like(params, dtype=mu_dtype),
                                tree.accumulator_like(params, dtype=nu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_ademamix", state, ScaleByAdemamixState)
    del params, extra
    tree.check_structure(state.m1, updates, "state.m1", "updates", stage="scale_by_ademamix")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)
    root_eps = floor_eps_root(h["eps_root"])  # once per step: sqrt's derivative finite at 0

    def leaf(g, m1, m2, nu):
      m1_new, nu_new, m1_hat, nu_hat = adam_moments(g, m1, nu, h, count, nesterov=False)
      m2_new = ema_moment(g, m2, h["b3"], order=1)
      dtype = compute_dtype(m1_hat, m2_new, nu_hat)
      alpha, eps = (as_dtype(h[n], dtype) for n in ("alpha", "eps"))
      eps_root = as_dtype(root_eps, dtype)
      u = ((as_dtype(m1_hat, dtype) + alpha * as_dtype(m2_new, dtype))
           / numerics.adam_denominator(as_dtype(nu_hat, dtype), eps, eps_root))
      return (as_dtype(u, g.dtype), as_dtype(m1_new, m1.dtype), as_dtype(m2_new, m2.dtype),
              as_dtype(nu_new, nu.dtype))

    updates, m1, m2, nu = tree.map_multi(leaf, 4, updates, state.m1, state.m2, state.nu)
    # Two counts, not one array in both fields: a state's buffers may all be donated.
    return updates, ScaleByAdemamixState(count, safe_increment(state.count_m2), m1, m2, nu,
                                         hparams)

  return GradientTransformation(init, update, name="scale_by_ademamix", spec=spec,
                                options=dict(mu_dtype=mu_dtype, nu_dtype=nu_dtype))


@names_its_arguments
def ademamix(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
             b2: ScalarOrSchedule = 0.999, b3: ScalarOrSchedule = 0.9999,
             alpha: ScalarOrSchedule = 5.0, eps: ScalarOrSchedule = 1e-8,
             eps_root: ScalarOrSchedule = 0.0, mu_dtype: Any = None,
             weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None, *,
             nu_dtype: Any = None) -> Chain:
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

  ``optax.contrib.ademamix``'s rule; :func:`scale_by_ademamix` says where gradtx differs.

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
    nu_dtype: dtype of :math:`\\nu`, gradtx's addition (``jnp.float32`` for
      float16 params, whose :math:`\\nu` underflows: steps of NaN or Inf; see
      :func:`scale_by_ademamix`).

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
                     ademamix=scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype,
                                                nu_dtype=nu_dtype),
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
                                 eps_root: ScalarOrSchedule = 0.0, *,
                                 nu_dtype: Any = None) -> GradientTransformation:
  """Simplified AdEMAMix's step: one undamped momentum plus :math:`\\alpha` times the gradient.

  .. math::
    m_t = \\beta_1 m_{t-1} + g_t, \\quad
    n_t = \\beta_2 n_{t-1} + (1-\\beta_2) g_t^2, \\quad
    u_t = \\frac{m_t + \\alpha g_t}{\\sqrt{n_t / (1-\\beta_2^t) + \\epsilon_\\text{root}} + \\epsilon}

  The momentum is a sum (no :math:`1-\\beta_1` factor), so its scale is about
  :math:`1/(1-\\beta_1)` times the gradient's: a learning rate that suits Adam
  is divided by about that much.

  Complex leaves: :math:`n` is real, the EMA of :math:`|g_t|^2` (as
  :func:`scale_by_ademamix`'s :math:`\\nu`), where optax 0.2.8 averages the
  complex :math:`g_t \\cdot g_t`.

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.99.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.95.
    alpha: :math:`\\alpha \\ge 0`, the weight of the current gradient, default
      0; may be a schedule.
    eps: :math:`\\epsilon \\ge 0` outside the root, default 1e-8.
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0` inside the root, default 0.
    nu_dtype: dtype of :math:`n`; ``None`` uses the params' dtype. gradtx's
      addition to optax's arguments (``jnp.float32`` for float16 params, as
      :func:`scale_by_ademamix`'s).

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
                                          tree.accumulator_like(params, dtype=nu_dtype),
                                          spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_simplified_ademamix", state, ScaleBySimplifiedAdEMAMixState)
    del params, extra
    tree.check_structure(state.m, updates, "state.m", "updates",
                         stage="scale_by_simplified_ademamix")
    h, hparams = spec.step(state.hparams)
    t = safe_increment(state.t)
    root_eps = floor_eps_root(h["eps_root"])  # once per step: sqrt's derivative finite at 0

    def leaf(g, m, n):
      dtype = compute_dtype(g, m)
      g_ = as_dtype(g, dtype)
      m_new = numerics.stored(as_dtype(h["b1"], dtype) * as_dtype(m, dtype) + g_, m.dtype)
      n_new = ema_moment(g, n, h["b2"], order=2)
      n_hat = bias_correction(n_new, h["b2"], t)
      dtype = compute_dtype(m_new, n_hat)
      alpha, eps = (as_dtype(h[k], dtype) for k in ("alpha", "eps"))
      eps_root = as_dtype(root_eps, dtype)
      u = ((as_dtype(m_new, dtype) + alpha * as_dtype(g_, dtype))
           / numerics.adam_denominator(as_dtype(n_hat, dtype), eps, eps_root))
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(n_new, n.dtype)

    updates, m, n = tree.map_multi(leaf, 3, updates, state.m, state.n)
    return updates, ScaleBySimplifiedAdEMAMixState(t, m, n, hparams)

  return GradientTransformation(init, update, name="scale_by_simplified_ademamix", spec=spec,
                                options=dict(nu_dtype=nu_dtype))


@names_its_arguments
def simplified_ademamix(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.99,
                        b2: ScalarOrSchedule = 0.95, alpha: ScalarOrSchedule = 0.0,
                        eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0,
                        weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None, *,
                        nu_dtype: Any = None) -> Chain:
  """Simplified AdEMAMix: one undamped momentum, mixed with the gradient, over Adam's root.

  .. math::
    m_t = \\beta_1 m_{t-1} + g_t, \\quad
    \\theta_{t+1} = \\theta_t - \\eta_t \\Big(
      \\frac{m_t + \\alpha g_t}{\\sqrt{\\hat n_t + \\epsilon_\\text{root}} + \\epsilon}
      + \\lambda \\theta_t \\Big)

  with :math:`\\hat n_t` Adam's debiased second moment (see
  :func:`scale_by_simplified_ademamix`). It keeps one momentum buffer where
  AdEMAMix keeps two, and needs no schedule of :math:`\\alpha`; with
  :math:`\\alpha = 0` it is Adam without the first moment's debiasing, its
  step times :math:`1 / (1 - \\beta_1)`.

  ``optax.contrib.simplified_ademamix``'s rule; :func:`scale_by_simplified_ademamix` says
  where gradtx differs.

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
    nu_dtype: dtype of :math:`n`, gradtx's addition (``jnp.float32`` for
      float16 params; see :func:`scale_by_simplified_ademamix`).

  References:
    Morwani et al., *Connections between Schedule-Free Optimizers, AdEMAMix,
    and Accelerated SGD Variants*, 2025 (arXiv:2502.02431).

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.simplified_ademamix(1e-4, alpha=2.0))
    simplified_ademamix(
      simplified_ademamix=scale_by_simplified_ademamix(b1=0.99, b2=0.95, alpha=2, eps=1e-08, eps_root=0, nu_dtype=None),
      decay=add_decayed_weights(weight_decay=0),
      lr=scale_by_learning_rate(learning_rate=0.0001, flip_sign=True),
    )
  """
  return named_chain("simplified_ademamix",
                     simplified_ademamix=scale_by_simplified_ademamix(
                         b1, b2, alpha, eps, eps_root, nu_dtype=nu_dtype),
                     decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate))
