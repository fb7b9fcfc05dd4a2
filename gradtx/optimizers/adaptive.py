"""Adaptive ready optimizers beyond Adam: RAdam, AdaBelief, Yogi, NovoGrad, Adan, Adafactor, SM3.

Every optimizer keeps optax's name, argument names, defaults and update rule;
keyword-only ``mu_dtype`` / ``nu_dtype`` arguments are gradtx additions.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradtx.chain import Chain, named_chain
from gradtx.core import ScalarOrSchedule, check_dtype_option, checks_flags, names_its_arguments
from gradtx.transforms.adaptive import (scale_by_adan, scale_by_belief, scale_by_novograd,
                                        scale_by_radam, scale_by_yogi)
from gradtx.transforms.clipping import clip_by_block_rms
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.factored import scale_by_factored_rms, scale_by_sm3
from gradtx.transforms.momentum import ema
from gradtx.transforms.scaling import scale, scale_by_learning_rate
from gradtx.transforms.trust import scale_by_param_block_rms

__all__ = ["adabelief", "adafactor", "adan", "novograd", "radam", "sm3", "yogi"]


@checks_flags
@names_its_arguments
def radam(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
          eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0,
          threshold: ScalarOrSchedule = 5.0, *, nesterov: bool = False, mu_dtype: Any = None,
          nu_dtype: Any = None) -> Chain:
  """Rectified Adam: Adam whose adaptive step is phased in as its variance estimate settles.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta \\begin{cases}
      r_t \\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_\\text{root}} + \\epsilon) & \\rho_t \\ge \\tau \\\\
      \\hat m_t & \\text{otherwise} \\end{cases}

  with :math:`r_t, \\rho_t` as in :func:`gradtx.scale_by_radam`.

  Args:
    learning_rate: :math:`\\eta`.
    b1, b2, eps, eps_root: as in :func:`gradtx.adam`.
    threshold: :math:`\\tau \\ge 4`, default 5.
    nesterov: Dozat's look-ahead first moment.
    mu_dtype, nu_dtype: moment dtypes (gradtx additions).

  Conventions: torch.optim.RAdam switches at :math:`\\rho_t > 5` (optax and
  gradtx at :math:`\\ge 5`, which only differs if :math:`\\rho_t` is exactly 5)
  and puts :math:`\\epsilon` outside the root likewise.

  References:
    Liu et al., *On the Variance of the Adaptive Learning Rate and Beyond*, ICLR 2020.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.radam(1e-3))
    radam(
      radam=scale_by_radam(b1=0.9, b2=0.999, eps=1e-08, eps_root=0, threshold=5, nesterov=False, mu_dtype=None, nu_dtype=None),
      lr=scale_by_learning_rate(learning_rate=0.001, flip_sign=True),
    )
  """
  return named_chain("radam", radam=scale_by_radam(b1, b2, eps, eps_root, threshold,
                                                   nesterov=nesterov, mu_dtype=mu_dtype,
                                                   nu_dtype=nu_dtype),
                     lr=scale_by_learning_rate(learning_rate))


@checks_flags
@names_its_arguments
def adabelief(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
              b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-16,
              eps_root: ScalarOrSchedule = 1e-16, *, nesterov: bool = False, mu_dtype: Any = None,
              nu_dtype: Any = None) -> Chain:
  """AdaBelief: Adam dividing by the spread of the gradient around its running mean.

  .. math::
    s_t = \\beta_2 s_{t-1} + (1-\\beta_2)(g_t - m_t)^2 + \\epsilon_\\text{root}, \\qquad
    \\theta_{t+1} = \\theta_t - \\eta \\frac{\\hat m_t}{\\sqrt{s_t/(1-\\beta_2^t)} + \\epsilon}

  Matches ``optax.adabelief``. The paper's Algorithm 2 and the authors' code
  (adabelief-pytorch) have one :math:`\\epsilon`, both added to :math:`s_t` and
  outside the root: ``eps`` and ``eps_root`` are the two places, and their
  defaults, 1e-16 each, are the authors' since adabelief-pytorch 0.1.0 (its
  0.0.5 release had 1e-8, which the authors still suggest for CNNs on image
  classification: pass ``eps=1e-8, eps_root=1e-8``). Conventions: the authors'
  code rectifies the step by default (RAdam's :math:`r_t`, ``rectify=True``)
  and decays weights decoupled; gradtx and optax do neither (chain
  :func:`gradtx.add_decayed_weights` for the decay).

  Args:
    learning_rate: :math:`\\eta`.
    b1: :math:`\\beta_1`, default 0.9.
    b2: :math:`\\beta_2`, default 0.999.
    eps: default 1e-16, outside the root.
    eps_root: default 1e-16, added to :math:`s_t` (and kept in it, as the authors' code).
    nesterov: Dozat's look-ahead first moment.
    mu_dtype, nu_dtype: moment dtypes (gradtx additions).

  References:
    Zhuang et al., *AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients*, NeurIPS 2020.
  """
  return named_chain("adabelief", belief=scale_by_belief(b1, b2, eps, eps_root,
                                                         nesterov=nesterov, mu_dtype=mu_dtype,
                                                         nu_dtype=nu_dtype),
                     lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def yogi(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
         eps: ScalarOrSchedule = 1e-3, *, mu_dtype: Any = None, nu_dtype: Any = None) -> Chain:
  """Yogi: Adam with an additive second moment that grows or shrinks by the sign of the gap.

  .. math::
    v_t = v_{t-1} - (1-\\beta_2)\\operatorname{sign}(v_{t-1} - g_t^2)\\, g_t^2, \\qquad
    \\theta_{t+1} = \\theta_t - \\eta \\frac{\\hat m_t}{\\sqrt{\\hat v_t} + \\epsilon}

  Args:
    learning_rate: :math:`\\eta`.
    b1: :math:`\\beta_1`, default 0.9.
    b2: :math:`\\beta_2`, default 0.999.
    eps: default 1e-3.
    mu_dtype, nu_dtype: moment dtypes (gradtx additions).

  Conventions: as optax, both moments start at 1e-6 and are debiased (the
  paper does not debias).

  References:
    Zaheer et al., *Adaptive Methods for Nonconvex Optimization*, NeurIPS 2018.
  """
  return named_chain("yogi", yogi=scale_by_yogi(b1, b2, eps, mu_dtype=mu_dtype,
                                                nu_dtype=nu_dtype),
                     lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def novograd(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
             b2: ScalarOrSchedule = 0.25, eps: ScalarOrSchedule = 1e-6,
             eps_root: ScalarOrSchedule = 0.0, weight_decay: ScalarOrSchedule = 0.0, *,
             nu_dtype: Any = None) -> Chain:
  """NovoGrad: per-layer second moments, gradient normalised before the momentum.

  .. math::
    n_t = \\beta_2 n_{t-1} + (1-\\beta_2)\\|g_t\\|^2, \\quad
    m_t = \\beta_1 m_{t-1} + \\frac{g_t}{\\sqrt{n_t + \\epsilon_\\text{root}} + \\epsilon}
      + \\lambda\\theta_t, \\quad \\theta_{t+1} = \\theta_t - \\eta m_t

  with :math:`n_1 = \\|g_1\\|^2` and norms per leaf.

  Conventions: as optax (and NVIDIA apex's ``FusedNovoGrad``), :math:`\\epsilon`
  is outside the root; the paper (and the authors' OpenSeq2Seq code) divides by
  :math:`\\sqrt{n_t + \\epsilon}`: ``novograd(lr, eps=0.0, eps_root=1e-6)`` is the
  paper's rule (:func:`gradtx.scale_by_novograd`).

  Args:
    learning_rate: :math:`\\eta`.
    b1: :math:`\\beta_1`, default 0.9.
    b2: :math:`\\beta_2`, default 0.25.
    eps: default 1e-6, outside the root.
    eps_root: default 0, inside the root (the paper's :math:`\\epsilon`).
    weight_decay: :math:`\\lambda`, default 0.
    nu_dtype: dtype of :math:`n` (gradtx's addition): ``jnp.float32`` for
      float16 params, where a leaf with a small gradient norm has :math:`n = 0`.

  References:
    Ginsburg et al., *Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks*, 2019.
  """
  return named_chain("novograd", novograd=scale_by_novograd(b1, b2, eps, eps_root, weight_decay,
                                                            nu_dtype=nu_dtype),
                     lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def adan(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.98, b2: ScalarOrSchedule = 0.92,
         b3: ScalarOrSchedule = 0.99, eps: ScalarOrSchedule = 1e-8,
         eps_root: ScalarOrSchedule = 1e-8, weight_decay: ScalarOrSchedule = 0.0,
         mask: Mask | None = None, *, nu_dtype: Any = None) -> Chain:
  """Adan: adaptive Nesterov momentum from gradient differences, with decoupled decay.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta\\left(\\frac{\\hat m_t + \\beta_2 \\hat v_t}
      {\\sqrt{\\hat n_t + \\epsilon_\\text{root}} + \\epsilon} + \\lambda\\theta_t\\right)

  with :math:`m, v, n` as in :func:`gradtx.scale_by_adan`.

  Args:
    learning_rate: :math:`\\eta`.
    b1, b2, b3: default 0.98, 0.92, 0.99 (the paper's :math:`1-\\beta`).
    eps: default 1e-8.
    eps_root: default 1e-8.
    weight_decay: :math:`\\lambda`, default 0.
    mask: which leaves to decay.
    nu_dtype: dtype of the second moment :math:`n` (gradtx's addition):
      ``jnp.float32`` for float16 params.

  Conventions: the decay is added to the step (as optax); the paper divides
  by :math:`1 + \\eta\\lambda` instead. The gradient difference is weighted
  by :math:`\\beta_2` as in the paper and its code, where optax 0.2.8 weights
  it by :math:`1-\\beta_2` (see :func:`gradtx.scale_by_adan`).

  References:
    Xie et al., *Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models*, 2022.
  """
  return named_chain("adan", adan=scale_by_adan(b1, b2, b3, eps, eps_root, nu_dtype=nu_dtype),
                     decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate))


@checks_flags
@names_its_arguments
def adafactor(learning_rate: ScalarOrSchedule | None = None, min_dim_size_to_factor: int = 128,
              decay_rate: ScalarOrSchedule = 0.8, decay_offset: int = 0,
              multiply_by_parameter_scale: bool = True,
              clipping_threshold: ScalarOrSchedule | None = 1.0,
              momentum: ScalarOrSchedule | None = None, dtype_momentum: Any = jnp.float32,
              weight_decay_rate: ScalarOrSchedule | None = None, eps: ScalarOrSchedule = 1e-30,
              factored: bool = True, weight_decay_mask: Mask | None = None, *,
              nu_dtype: Any = None) -> Chain:
  """Adafactor: a factored second moment, update clipping and steps relative to the weights.

  .. math::
    U_t = \\frac{g_t}{\\sqrt{V_t}}, \\quad
    U_t \\leftarrow \\frac{U_t}{\\max(1, \\operatorname{rms}(U_t)/d)}, \\quad
    \\theta_{t+1} = \\theta_t - \\left(\\eta\\, \\max(\\operatorname{rms}(\\theta_t), 10^{-3})\\,
      U_t + \\lambda\\theta_t\\right)

  with :math:`V_t` the factored running mean of :math:`g^2` of
  :func:`gradtx.scale_by_factored_rms`, an optional EMA ``momentum`` of the
  scaled step before the decay, and each optional stage left out when its
  argument is ``None``/``False`` (as in optax).

  Args:
    learning_rate: :math:`\\eta`, or ``None`` for 1.
    min_dim_size_to_factor: factor matrices whose two largest axes are at least this
      long, default 128.
    decay_rate: :math:`c` in :math:`\\hat\\beta_{2,t} = 1 - t^{-c}`, default 0.8.
    decay_offset: :math:`t_0 \\ge 0` of :func:`gradtx.scale_by_factored_rms`
      (its ``step_offset``), default 0: the decay counts from step :math:`t_0 + 1`.
    multiply_by_parameter_scale: scale by :math:`\\max(\\operatorname{rms}(\\theta), 10^{-3})`.
    clipping_threshold: :math:`d`, default 1, or ``None``.
    momentum: EMA coefficient of the step, or ``None``.
    dtype_momentum: dtype of the momentum, default float32 (as optax).
    weight_decay_rate: :math:`\\lambda` (not scaled by :math:`\\eta`), or ``None``.
    eps: :math:`\\epsilon_1`, default 1e-30, added to :math:`g^2`.
    factored: factor the second moment.
    weight_decay_mask: which leaves to decay.
    nu_dtype: dtype of the second-moment statistics (``v_row``, ``v_col``,
      ``v``); ``None`` uses the params' dtype. gradtx's addition to optax's
      arguments: ``jnp.float32`` for float16 params, on which ``eps=1e-30`` is
      0 and every step is NaN without it (see
      :func:`gradtx.scale_by_factored_rms`; the factored statistics are one
      entry per row and per column, so float32 costs little).

  Conventions: no relative step size :math:`\\min(10^{-2}, 1/\\sqrt t)`: pass
  a schedule as ``learning_rate`` for it (as optax).

  References:
    Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost*, ICML 2018.
  """
  # Here, not only in ema: under adafactor's name for it, and named without momentum too.
  check_dtype_option("adafactor", "dtype_momentum", dtype_momentum)
  stages = dict(factored_rms=scale_by_factored_rms(factored, decay_rate, decay_offset,
                                                   min_dim_size_to_factor, eps,
                                                   nu_dtype=nu_dtype))
  if clipping_threshold is not None:
    stages["clip"] = clip_by_block_rms(clipping_threshold)
  if learning_rate is not None:
    stages["lr"] = scale_by_learning_rate(learning_rate, flip_sign=False)
  if multiply_by_parameter_scale:
    stages["param_scale"] = scale_by_param_block_rms()
  if momentum is not None:
    stages["momentum"] = ema(momentum, debias=False, accumulator_dtype=dtype_momentum)
  if weight_decay_rate is not None:
    stages["decay"] = add_decayed_weights(weight_decay_rate, weight_decay_mask)
  stages["descend"] = scale(-1.0)
  return named_chain("adafactor", **stages)


@names_its_arguments
def sm3(learning_rate: ScalarOrSchedule, momentum: ScalarOrSchedule = 0.9, *,
        nu_dtype: Any = None) -> Chain:
  """SM3: memory-efficient Adagrad with one accumulator per axis slice, plus momentum.

  .. math::
    \\nu_t(i) = g_t(i)^2 + \\min_a \\mu^{(a)}_{t-1}(i_a), \\quad
    m_t = \\beta m_{t-1} + (1-\\beta)\\frac{g_t}{\\sqrt{\\nu_t + 10^{-8}}}, \\quad
    \\theta_{t+1} = \\theta_t - \\eta m_t

  with :math:`\\mu^{(a)}` the per-axis maxima of :math:`\\nu` (see
  :func:`gradtx.scale_by_sm3`).

  Args:
    learning_rate: :math:`\\eta` (a schedule is accepted; optax takes a float).
    momentum: :math:`\\beta`, default 0.9.
    nu_dtype: dtype of the accumulators :math:`\\mu^{(a)}`; ``None`` uses the
      params' dtype. gradtx's addition to optax's arguments: ``jnp.float32``
      for float16 params, whose steps are otherwise off by over 10% (see
      :func:`gradtx.scale_by_sm3`).

  References:
    Anil et al., *Memory-Efficient Adaptive Optimization*, NeurIPS 2019.
  """
  return named_chain("sm3", sm3=scale_by_sm3(momentum, nu_dtype=nu_dtype),
                     lr=scale_by_learning_rate(learning_rate))
