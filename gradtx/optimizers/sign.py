"""Sign-based ready optimizers: Lion, signSGD, Signum, Rprop."""

from __future__ import annotations

from typing import Any

from gradtx.chain import Chain, named_chain
from gradtx.core import ScalarOrSchedule, names_its_arguments
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.momentum import ema
from gradtx.transforms.scaling import scale, scale_by_learning_rate
from gradtx.transforms.sign import scale_by_lion, scale_by_rprop, scale_by_sign

__all__ = ["lion", "rprop", "sign_sgd", "signum"]


@names_its_arguments
def lion(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.99,
         mu_dtype: Any = None, weight_decay: ScalarOrSchedule = 1e-3,
         mask: Mask | None = None) -> Chain:
  """Lion: the sign of an interpolated momentum, with decoupled weight decay.

  .. math::
    c_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    \\theta_{t+1} = \\theta_t - \\eta(\\operatorname{sign}(c_t) + \\lambda\\theta_t), \\quad
    m_t = \\beta_2 m_{t-1} + (1-\\beta_2) g_t

  Matches ``optax.lion``.

  Args:
    learning_rate: :math:`\\eta` (typically 3-10x smaller than AdamW's).
    b1: :math:`\\beta_1`, default 0.9.
    b2: :math:`\\beta_2`, default 0.99.
    mu_dtype: dtype of :math:`m`.
    weight_decay: :math:`\\lambda`, default 1e-3.
    mask: which leaves to decay.

  References:
    Chen et al., *Symbolic Discovery of Optimization Algorithms*, NeurIPS 2023.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.lion(1e-4))
    lion(
      lion=scale_by_lion(b1=0.9, b2=0.99, mu_dtype=None, mode='hard'),
      decay=add_decayed_weights(weight_decay=0.001),
      lr=scale_by_learning_rate(learning_rate=0.0001, flip_sign=True),
    )
  """
  return named_chain("lion", lion=scale_by_lion(b1, b2, mu_dtype),
                     decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def sign_sgd(learning_rate: ScalarOrSchedule) -> Chain:
  """signSGD: :math:`\\theta_{t+1} = \\theta_t - \\eta \\operatorname{sign}(g_t)`.

  Matches ``optax.sign_sgd``.

  References:
    Bernstein et al., *signSGD: Compressed Optimisation for Non-Convex
    Problems*, ICML 2018.
  """
  return named_chain("sign_sgd", sign=scale_by_sign(), lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def signum(learning_rate: ScalarOrSchedule, beta: ScalarOrSchedule = 0.9,
           accumulator_dtype: Any = None) -> Chain:
  """Signum: the sign of an (undebiased) EMA of the gradients.

  .. math::
    m_t = \\beta m_{t-1} + (1-\\beta) g_t, \\qquad
    \\theta_{t+1} = \\theta_t - \\eta \\operatorname{sign}(m_t)

  Matches ``optax.signum``.

  Args:
    learning_rate: :math:`\\eta`.
    beta: :math:`\\beta`, default 0.9.
    accumulator_dtype: dtype of :math:`m`.

  References:
    Bernstein et al., *signSGD: Compressed Optimisation for Non-Convex
    Problems*, ICML 2018.
  """
  # A debiased average has the same sign, so the EMA is left biased.
  return named_chain("signum", momentum=ema(beta, debias=False,
                                            accumulator_dtype=accumulator_dtype),
                     sign=scale_by_sign(), lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def rprop(learning_rate: float, eta_minus: ScalarOrSchedule = 0.5, eta_plus: ScalarOrSchedule = 1.2,
          min_step_size: ScalarOrSchedule = 1e-6, max_step_size: ScalarOrSchedule = 50.0) -> Chain:
  """Rprop (iRprop-): per-entry step sizes adapted by the sign agreement of gradients.

  .. math::
    \\theta_{t+1} = \\theta_t - q_t, \\qquad
    q_t = \\Delta_t \\operatorname{sign}(g_t)\\ (0 \\text{ after a sign flip})

  with :math:`\\Delta_t` grown by :math:`\\eta^+` while signs agree and shrunk
  by :math:`\\eta^-` when they flip (see :func:`gradtx.scale_by_rprop`).

  Args:
    learning_rate: the initial step size :math:`\\Delta_0`, written into the
      state at init (not a hyperparameter).
    eta_minus: default 0.5.
    eta_plus: default 1.2.
    min_step_size: default 1e-6.
    max_step_size: default 50.

  Differs from optax 0.2.8, whose update lags one step (its first update is
  zero); gradtx matches the paper and torch.optim.Rprop (whose defaults are
  ``step_sizes=(1e-6, 50)`` likewise).

  References:
    Riedmiller & Braun, ICNN 1993; Igel & Hüsken, 2000.
  """
  return named_chain("rprop", rprop=scale_by_rprop(learning_rate, eta_minus, eta_plus,
                                                   min_step_size, max_step_size),
                     descend=scale(-1.0))
