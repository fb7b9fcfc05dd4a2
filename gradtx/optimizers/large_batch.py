"""Layer-wise ready optimizers for large batches: LAMB, LARS, Fromage."""

from __future__ import annotations

from typing import Any

from gradtx.chain import Chain, named_chain
from gradtx.core import ScalarOrSchedule, checks_flags, names_its_arguments
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.momentum import trace
from gradtx.transforms.moments import scale_by_adam
from gradtx.transforms.scaling import scale_by_learning_rate
from gradtx.transforms.trust import scale_by_fromage, scale_by_trust_ratio
from gradtx.wrappers import masked

__all__ = ["fromage", "lamb", "lars"]


@names_its_arguments
def lamb(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
         eps: ScalarOrSchedule = 1e-6, eps_root: ScalarOrSchedule = 0.0,
         weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None, *,
         nu_dtype: Any = None) -> Chain:
  """LAMB: AdamW's step rescaled per layer by the trust ratio.

  .. math::
    r_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_\\text{root}} + \\epsilon} + \\lambda\\theta_t,
    \\qquad \\theta_{t+1} = \\theta_t - \\eta \\frac{\\|\\theta_t\\|}{\\|r_t\\|} r_t

  per leaf, the ratio taken as 1 when either norm is 0.

  Args:
    learning_rate: :math:`\\eta`.
    b1, b2, eps_root: as in :func:`gradtx.adam`.
    eps: default 1e-6.
    weight_decay: :math:`\\lambda`, default 0.
    mask: which leaves to decay.
    nu_dtype: dtype of the second moment, as in :func:`gradtx.adam` (not in
      optax): ``jnp.float32`` for float16 params.

  References:
    You et al., *Large Batch Optimization for Deep Learning: Training BERT in
    76 minutes*, ICLR 2020.
  """
  return named_chain("lamb", adam=scale_by_adam(b1, b2, eps, eps_root, nu_dtype=nu_dtype),
                     decay=add_decayed_weights(weight_decay, mask),
                     trust=scale_by_trust_ratio(),
                     lr=scale_by_learning_rate(learning_rate))


@checks_flags
@names_its_arguments
def lars(learning_rate: ScalarOrSchedule, weight_decay: ScalarOrSchedule = 0.0,
         weight_decay_mask: Mask = True, trust_coefficient: ScalarOrSchedule = 0.001,
         eps: ScalarOrSchedule = 0.0, trust_ratio_mask: Mask = True,
         momentum: ScalarOrSchedule = 0.9, nesterov: bool = False) -> Chain:
  """LARS: SGD with momentum on the decayed gradient rescaled per layer by a trust ratio.

  .. math::
    r_t = g_t + \\lambda\\theta_t, \\quad
    r_t \\leftarrow \\frac{c\\|\\theta_t\\|}{\\|r_t\\| + \\epsilon} r_t, \\quad
    b_t = -\\eta r_t + \\mu b_{t-1}, \\quad \\theta_{t+1} = \\theta_t + b_t

  (Nesterov: :math:`\\theta_{t+1} = \\theta_t - \\eta r_t + \\mu b_t`.)

  Args:
    learning_rate: :math:`\\eta`.
    weight_decay: :math:`\\lambda`, default 0.
    weight_decay_mask: which leaves to decay, default all.
    trust_coefficient: :math:`c`, default 0.001.
    eps: :math:`\\epsilon`, default 0.
    trust_ratio_mask: which leaves get the trust ratio, default all.
    momentum: :math:`\\mu`, default 0.9.
    nesterov: Nesterov momentum.

  Conventions: as optax, the momentum runs after the learning rate and the
  trust ratio uses the norm of the decayed gradient (the paper divides by
  :math:`\\|g\\| + \\lambda\\|\\theta\\|`).

  References:
    You, Gitman & Ginsburg, *Large Batch Training of Convolutional Networks*, 2017.
  """
  return named_chain("lars", decay=add_decayed_weights(weight_decay, weight_decay_mask),
                     trust=masked(scale_by_trust_ratio(trust_coefficient=trust_coefficient,
                                                       eps=eps), trust_ratio_mask),
                     lr=scale_by_learning_rate(learning_rate),
                     momentum=trace(momentum, nesterov))


@names_its_arguments
def fromage(learning_rate: ScalarOrSchedule, min_norm: ScalarOrSchedule = 1e-6) -> Chain:
  """Fromage: a step of fixed relative size per layer, then a shrink toward the origin.

  .. math::
    \\theta_{t+1} = \\frac{1}{\\sqrt{1+\\eta^2}}\\left(\\theta_t - \\eta
      \\frac{\\max(\\|\\theta_t\\|, n_\\min)}{\\max(\\|g_t\\|, n_\\min)} g_t\\right)

  per leaf.

  Matches ``optax.fromage``.

  Args:
    learning_rate: :math:`\\eta` (0.01 is usual), a float or a schedule.
    min_norm: :math:`n_\\min`, default 1e-6.

  References:
    Bernstein et al., *On the distance between two neural networks and the
    stability of learning*, NeurIPS 2020.
  """
  return named_chain("fromage", trust=scale_by_trust_ratio(min_norm),
                     lr=scale_by_fromage(learning_rate))
