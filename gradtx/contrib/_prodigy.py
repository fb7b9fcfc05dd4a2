"""optax.contrib: Prodigy, an Adam whose step size estimates the distance to the solution."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.chain import Chain, named_chain
from gradtx.contrib._whole_tree import (_adam_step_size, _betas, _current_estimate, _l1,
                                       _over_root, _real_zeros_like, _scalar_dtype)
from gradtx.core import (NONNEGATIVE, POSITIVE, UNIT, GradientTransformation, HParams, HParamSpec,
                         ScalarOrSchedule, check_state, checks_flags, require_params_like,
                         names_its_arguments)
from gradtx.numerics import (as_dtype, compute_dtype, ema_moment, safe_divide,
                             safe_increment, shared, zero_count)

__all__ = ["ProdigyState", "prodigy", "scale_by_prodigy"]


class ProdigyState(NamedTuple):
  """State of :func:`scale_by_prodigy`: optax's fields, then the hyperparameters.

  ``exp_avg`` (:math:`m`), ``exp_avg_sq`` (:math:`v`) and ``grad_sum``
  (:math:`s`) per entry; ``params0`` (:math:`\\theta_0`); the scalars
  ``estim_lr`` (:math:`d`) and ``numerator_weighted`` (:math:`r`); ``count``.
  """
  exp_avg: Any
  exp_avg_sq: Any
  grad_sum: Any
  params0: Any
  estim_lr: jax.Array
  numerator_weighted: jax.Array
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  hparams: HParams


@checks_flags
def scale_by_prodigy(learning_rate: ScalarOrSchedule = 1.0,
                     betas: tuple[float, float] = (0.9, 0.999),
                     beta3: ScalarOrSchedule | None = None, eps: ScalarOrSchedule = 1e-8,
                     estim_lr0: ScalarOrSchedule = 1e-6, estim_lr_coef: ScalarOrSchedule = 1.0,
                     weight_decay: ScalarOrSchedule = 0.0, safeguard_warmup: bool = False, *,
                     nu_dtype: Any = None) -> GradientTransformation:
  """Prodigy's step: AdamW on :math:`d_t g_t` with :math:`d_t` estimated as it runs.

  .. math::
    \\eta_t = \\gamma_t d_t \\frac{\\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t}, \\quad
    m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) d_t g_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) d_t^2 |g_t|^2, \\\\
    r_t = \\beta_3 r_{t-1} + \\frac{d_t}{d_0} \\eta_t \\langle g_t, \\theta_0 - \\theta_t \\rangle,
    \\quad
    s_t = \\beta_3 s_{t-1} + \\frac{d_t}{d_0} \\eta_t g_t, \\quad
    d_{t+1} = \\max\\left(d_t,\\ c\\, \\frac{r_t}{\\|s_t\\|_1}\\right), \\\\
    u_t = -\\eta_t \\left(\\frac{m_t}{\\sqrt{v_t} + d_{t+1} \\epsilon} + \\lambda \\theta_t\\right)

  with :math:`d_1 = d_0`, the inner product and the l1 norm over the whole
  tree, and :math:`\\beta_3 = \\sqrt{\\beta_2}` unless given. With
  ``safeguard_warmup`` :math:`s_t` accumulates :math:`\\frac{d_t}{d_0} d_t g_t`
  (no :math:`\\gamma_t`), so a warm-up schedule does not inflate :math:`d`.
  The update is the step to add: the sign is already flipped. The paper's
  :math:`(1 - \\beta_3)` factors cancel in :math:`r_t / \\|s_t\\|_1`; the
  bias correction in :math:`\\eta_t` and :math:`d_{t+1}` in the denominator
  are the authors' code's (and optax's). Needs the params.

  Complex leaves: their gradients conjugated (as optax), the inner product
  :math:`\\operatorname{Re} \\sum \\bar a_i b_i`, :math:`\\|s\\|_1 = \\sum |s_i|`, :math:`v` real.

  Args:
    learning_rate: :math:`\\gamma_t \\ge 0`, default 1: a schedule around 1
      (the paper recommends linear decay to 0 after a 0-20% warm-up).
    betas: :math:`(\\beta_1, \\beta_2)`, each in :math:`[0, 1)`, default
      ``(0.9, 0.999)``; held as one array ``betas``.
    beta3: :math:`\\beta_3 \\in [0, 1]`, default None: :math:`\\sqrt{\\beta_2}`.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    estim_lr0: :math:`d_0 > 0`, default 1e-6, an underestimate of :math:`d`.
      Read as :math:`d_1` at the first step (a value set after init counts;
      later the estimate lives in ``estim_lr``), and as the :math:`d_0` of
      the weight :math:`d_t / d_0` at every step. :math:`d` grows with the
      distance the params have moved: on bfloat16 params the first steps,
      about :math:`d_0`, are below their spacing, so from the default they
      stay where they are; give 1e-3 or more.
    estim_lr_coef: :math:`c > 0`, default 1.
    weight_decay: :math:`\\lambda \\ge 0`, default 0 (decoupled, as AdamW).
    safeguard_warmup: see above, default False. Structural.
    nu_dtype: dtype of :math:`v` (``exp_avg_sq``, real for a complex leaf);
      ``None`` uses the params' (real) dtype. gradtx's addition to optax's
      arguments. On float16 params give ``jnp.float32``: float16 rounds
      :math:`d_{t+1} \\epsilon` and the small :math:`(1-\\beta_2) d_t^2 g_t^2`
      to 0, so the step is 0/0 or :math:`m/0`. The moments' updates and the
      step are then computed in float32. :math:`m` and :math:`s` stay in the
      params' dtype: :math:`m = (1-\\beta_1) d g` underflows float16 too while
      :math:`d` is near the default :math:`d_0 = 10^{-6}`, so on float16
      params start from a larger ``estim_lr0``.

  Differs from optax 0.2.8 in one case: when every gradient so far is zero,
  :math:`\\|s_t\\|_1 = 0` and optax's estimate is 0/0 (NaN, which then
  reaches the params); gradtx keeps :math:`d`.

  References:
    Mishchenko & Defazio, *Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner*, ICML 2024 (arXiv:2306.06101).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_prodigy()
    >>> params = jnp.array([1.0, -2.0])
    >>> u, state = tx.update(jnp.array([0.5, -0.5]), tx.init(params), params)
    >>> u  # the first step is about d_0 * sign(g): d_1 = d_0 = 1e-6
    Array([-9.999993e-07,  9.999993e-07], dtype=float32)
  """
  stage = "scale_by_prodigy"
  entries = dict(learning_rate=(learning_rate, NONNEGATIVE),
                 betas=_betas(stage, betas))
  if beta3 is not None:
    entries["beta3"] = (beta3, UNIT)
  spec = HParamSpec(stage, **entries, eps=(eps, NONNEGATIVE),
                    estim_lr0=(estim_lr0, POSITIVE), estim_lr_coef=(estim_lr_coef, POSITIVE),
                    weight_decay=(weight_decay, NONNEGATIVE))

  def init(params):
    hparams = spec.init()
    dtype = _scalar_dtype(params)
    return ProdigyState(tree.zeros_like(params), _real_zeros_like(params, nu_dtype),
                        tree.zeros_like(params), tree.copy(params),
                        tree.copy(hparams["estim_lr0"], dtype), jnp.zeros((), dtype),
                        zero_count(), hparams)

  def update(updates, state, params=None, **extra):
    check_state(stage, state, ProdigyState)
    del extra
    params = require_params_like(stage, updates, params, state, "exp_avg")
    h, hparams = spec.step(state.hparams)
    d = _current_estimate(state.estim_lr, h["estim_lr0"], state.count)
    dtype = d.dtype
    b1, b2 = h["betas"][0], h["betas"][1]  # the moments' decays, in the hyperparameters' dtype
    b3 = as_dtype(h["beta3"], dtype) if "beta3" in h else jnp.sqrt(as_dtype(b2, dtype))
    d0 = as_dtype(h["estim_lr0"], dtype)
    count = safe_increment(state.count)
    eta = _adam_step_size(d, h["learning_rate"], b1, b2, count)
    weight = d / d0
    s_rate = weight * (d if safeguard_warmup else eta)
    r = b3 * state.numerator_weighted + weight * eta * tree.inner(
        updates, tree.sub(state.params0, params), dtype)

    def moments(g, m, v, s):
      c = compute_dtype(g, m, v)  # v's dtype: the params' real dtype unless nu_dtype widens it
      dg = as_dtype(d, c) * as_dtype(g, c)
      m_new = ema_moment(dg, m, b1, order=1)
      v_new = ema_moment(dg, v, b2, order=2)  # |d g|^2, real also for complex g
      s_new = as_dtype(b3, c) * as_dtype(s, c) + as_dtype(s_rate, c) * as_dtype(g, c)
      return as_dtype(m_new, m.dtype), as_dtype(v_new, v.dtype), as_dtype(s_new, s.dtype)

    m, v, s = tree.map_multi(moments, 3, updates, state.exp_avg, state.exp_avg_sq,
                             state.grad_sum)
    estimate = as_dtype(h["estim_lr_coef"], dtype) * safe_divide(r, _l1(s, dtype))
    d_new = jnp.maximum(d, estimate)
    floor = d_new * as_dtype(h["eps"], dtype)
    decay = as_dtype(h["weight_decay"], dtype)

    def step(m, v, p):
      c = compute_dtype(m, p, v)
      direction = _over_root(as_dtype(m, c), v, floor)
      neg_eta = shared(f"prodigy -eta {c}", (eta,), lambda: -as_dtype(eta, c))  # once a dtype
      return as_dtype(neg_eta * (direction + as_dtype(decay, c) * as_dtype(p, c)), p.dtype)

    out = tree.tree_map(step, m, v, params)
    return out, ProdigyState(m, v, s, state.params0, d_new, r, count, hparams)

  return GradientTransformation(init, update, name=stage, spec=spec,
                                options=dict(safeguard_warmup=safeguard_warmup, nu_dtype=nu_dtype))


@checks_flags
@names_its_arguments
def prodigy(learning_rate: ScalarOrSchedule = 1.0, betas: tuple[float, float] = (0.9, 0.999),
            beta3: ScalarOrSchedule | None = None, eps: ScalarOrSchedule = 1e-8,
            estim_lr0: ScalarOrSchedule = 1e-6, estim_lr_coef: ScalarOrSchedule = 1.0,
            weight_decay: ScalarOrSchedule = 0.0, safeguard_warmup: bool = False, *,
            nu_dtype: Any = None) -> Chain:
  """Prodigy: learning-rate-free AdamW, its step size :math:`d` estimated from the distance travelled.

  .. math::
    \\theta_{t+1} = \\theta_t - \\gamma_t d_t \\frac{\\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t}
      \\left(\\frac{m_t}{\\sqrt{v_t} + d_{t+1} \\epsilon} + \\lambda \\theta_t\\right)

  with :math:`m, v` Adam's moments of :math:`d_t g_t` and :math:`d_t`
  non-decreasing, estimated as :func:`scale_by_prodigy` says. One stage:
  the learning rate enters the estimate of :math:`d`, and the weight decay
  is scaled by :math:`\\eta_t`, which holds :math:`d_t`.

  ``optax.contrib.prodigy``'s rule; :func:`scale_by_prodigy` says where gradtx differs.

  Args:
    learning_rate: :math:`\\gamma_t`, default 1 (a schedule around 1).
    betas: :math:`(\\beta_1, \\beta_2)`, default ``(0.9, 0.999)``.
    beta3: default None (:math:`\\sqrt{\\beta_2}`).
    eps: default 1e-8.
    estim_lr0: :math:`d_0`, default 1e-6 (1e-3 or more on bfloat16 params,
      see :func:`scale_by_prodigy`).
    estim_lr_coef: default 1.
    weight_decay: :math:`\\lambda`, default 0.
    safeguard_warmup: default False.
    nu_dtype: dtype of :math:`v`, gradtx's addition (``jnp.float32`` for
      float16 params; see :func:`scale_by_prodigy`).

  References:
    Mishchenko & Defazio, *Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner*, ICML 2024 (arXiv:2306.06101).

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.prodigy())
    prodigy(
      prodigy=scale_by_prodigy(learning_rate=1, betas=(0.9, 0.999), eps=1e-08, estim_lr0=1e-06, estim_lr_coef=1, weight_decay=0, safeguard_warmup=False, nu_dtype=None),
    )
  """
  return named_chain("prodigy", prodigy=scale_by_prodigy(
      learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef, weight_decay,
      safeguard_warmup, nu_dtype=nu_dtype))
