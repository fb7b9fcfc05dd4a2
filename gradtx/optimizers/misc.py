"""Other ready optimizers: noisy SGD and optimistic methods for games."""

from __future__ import annotations

from typing import Any

import jax

from gradtx.chain import Chain, named_chain
from gradtx.core import NONNEGATIVE, ScalarOrSchedule, check_value, checks_flags, names_its_arguments
from gradtx.transforms.moments import scale_by_adam
from gradtx.transforms.noise import add_noise
from gradtx.transforms.optimism import scale_by_optimistic_gradient
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["noisy_sgd", "optimistic_adam", "optimistic_adam_v2", "optimistic_gradient_descent"]


@names_its_arguments
def noisy_sgd(learning_rate: ScalarOrSchedule, eta: ScalarOrSchedule = 0.01,
              gamma: ScalarOrSchedule = 0.55, key: Any = None, *, seed: int | None = None) -> Chain:
  """SGD on gradients with annealed Gaussian noise.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta_\\text{lr}\\left(g_t + \\sqrt{\\eta / t^\\gamma}\\,\\xi_t\\right),
    \\qquad \\xi_t \\sim \\mathcal N(0, I)

  Args:
    learning_rate: :math:`\\eta_\\text{lr}`.
    eta: the initial noise variance, default 0.01.
    gamma: the annealing exponent, default 0.55.
    key: a ``jax.random.key`` or an int seed (``None``: seed 0), kept in the state.
    seed: optax's older name for an int ``key``; giving both raises.

  References:
    Neelakantan et al., *Adding Gradient Noise Improves Learning for Very Deep
    Networks*, 2015.
  """
  return named_chain("noisy_sgd", noise=add_noise(eta, gamma, key, seed=seed),
                     lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def optimistic_gradient_descent(learning_rate: ScalarOrSchedule, alpha: ScalarOrSchedule = 1.0,
                                beta: ScalarOrSchedule = 1.0) -> Chain:
  """Optimistic gradient descent: :math:`\\theta_{t+1} = \\theta_t - \\eta((\\alpha+\\beta) g_t - \\beta g_{t-1})`.

  For min-max games, where plain gradient descent-ascent cycles.

  Matches ``optax.optimistic_gradient_descent``.

  Args:
    learning_rate: :math:`\\eta`.
    alpha: :math:`\\alpha`, default 1.
    beta: :math:`\\beta`, default 1.

  References:
    Mokhtari, Ozdaglar & Pattathil, AISTATS 2020; Daskalakis et al., ICLR 2018.
  """
  return named_chain("optimistic_gradient_descent",
                     optimism=scale_by_optimistic_gradient(alpha, beta),
                     lr=scale_by_learning_rate(learning_rate))


@checks_flags
@names_its_arguments
def optimistic_adam_v2(learning_rate: ScalarOrSchedule, *, alpha: ScalarOrSchedule = 1.0,
                       beta: ScalarOrSchedule = 1.0, b1: ScalarOrSchedule = 0.9,
                       b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8,
                       eps_root: ScalarOrSchedule = 0.0, mu_dtype: Any = None,
                       nesterov: bool = True, nu_dtype: Any = None) -> Chain:
  """Optimistic Adam: the optimistic correction applied to Adam's direction.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta\\left((\\alpha+\\beta) d_t - \\beta d_{t-1}\\right)

  with :math:`d_t` Adam's direction (Nesterov by default, as optax).

  Args:
    learning_rate: :math:`\\eta`, a float or a schedule.
    alpha: :math:`\\alpha`, default 1.0: the weight of the current direction.
    beta: :math:`\\beta`, default 1.0: the weight of the optimistic correction.
    b1, b2, eps, eps_root, mu_dtype, nu_dtype: as in :func:`gradtx.adam`
      (defaults 0.9, 0.999, 1e-8, 0, ``None``, ``None``; ``nu_dtype``, not in
      optax, ``jnp.float32`` for float16 params).
    nesterov: Adam's Nesterov form, default True (as optax).

  References:
    Daskalakis et al., *Training GANs with Optimism*, ICLR 2018.
  """
  return named_chain("optimistic_adam_v2",
                     adam=scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov,
                                        nu_dtype=nu_dtype),
                     optimism=scale_by_optimistic_gradient(alpha, beta),
                     lr=scale_by_learning_rate(learning_rate))


@checks_flags
@names_its_arguments
def optimistic_adam(learning_rate: float | jax.Array, optimism: ScalarOrSchedule | None = None,
                    b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                    eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0,
                    mu_dtype: Any = None, *, nesterov: bool = True, nu_dtype: Any = None) -> Chain:
  """Optimistic Adam as ``optax.optimistic_adam`` (v1): learning rate and optimism inside.

  .. math::
    \\theta_{t+1} = \\theta_t - \\left((\\eta + o) d_t - o\\, d_{t-1}\\right)

  with :math:`d_t` Adam's direction and :math:`o` = ``optimism`` (default
  :math:`\\eta`). A fixed learning rate only (a number or an array);
  :func:`optimistic_adam_v2` takes schedules.

  Args:
    learning_rate: :math:`\\eta`, a number or a scalar array (not a schedule, as optax).
    optimism: :math:`o`, default ``None``: :math:`\\eta`.
    b1, b2, eps, eps_root, mu_dtype, nu_dtype: as in :func:`gradtx.adam`
      (defaults 0.9, 0.999, 1e-8, 0, ``None``, ``None``; ``nu_dtype`` not in optax).
    nesterov: Adam's Nesterov form, default True (as optax).

  References:
    Daskalakis et al., *Training GANs with Optimism*, ICLR 2018.
  """
  if callable(learning_rate):
    raise ValueError("optimistic_adam: learning_rate must be a float here (it is the "
                     "optimism alpha); use optimistic_adam_v2 for a schedule")
  # Checked here: it becomes scale_by_optimistic_gradient's alpha, of any sign, so a
  # negative rate (which climbs the loss) passed that stage's check.
  check_value("optimistic_adam", "learning_rate", learning_rate, NONNEGATIVE, scalar=True)
  return named_chain("optimistic_adam",
                     adam=scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov,
                                        nu_dtype=nu_dtype),
                     optimism=scale_by_optimistic_gradient(
                         learning_rate, learning_rate if optimism is None else optimism),
                     lr=scale_by_learning_rate(1.0))
