"""Ready optimizers that use the loss value: L-BFGS with a line search, Polyak's step size."""

from __future__ import annotations

from typing import Literal

from gradtx.chain import Chain, named_chain
from gradtx.core import GradientTransformation, ScalarOrSchedule, checks_flags, names_its_arguments
from gradtx.transforms.linesearch import scale_by_lbfgs, scale_by_zoom_linesearch
from gradtx.transforms.scaling import scale_by_learning_rate
from gradtx.transforms.stepsize import scale_by_polyak

__all__ = ["lbfgs", "polyak_sgd"]


@checks_flags
@names_its_arguments
def lbfgs(learning_rate: ScalarOrSchedule | None = None, memory_size: int = 10,
          scale_init_precond: bool = True,
          linesearch: GradientTransformation | None = scale_by_zoom_linesearch(
              max_linesearch_steps=20, initial_guess_strategy="one")) -> Chain:
  """L-BFGS: a limited-memory quasi-Newton direction, its length set by a line search.

  .. math::
    \\theta_{k+1} = \\theta_k - \\eta_k H_k g_k

  with :math:`H_k` the two-loop L-BFGS inverse Hessian estimate of
  :func:`gradtx.scale_by_lbfgs` and :math:`\\eta_k` from the zoom line search
  (strong Wolfe conditions) times ``learning_rate``. Each step needs the loss:

  .. code-block:: python

    value, grad = jax.value_and_grad(f)(params)
    updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)

  Matches ``optax.lbfgs`` on real parameters; on complex ones the line search
  takes the first slope as :func:`gradtx.scale_by_zoom_linesearch` says, where
  optax 0.2.8 conjugates the direction.

  Args:
    learning_rate: a factor on the direction before the line search, or
      ``None`` for 1 (the line search sets the length).
    memory_size: pairs kept, default 10.
    scale_init_precond: scale the initial inverse Hessian (see :func:`gradtx.scale_by_lbfgs`).
    linesearch: the line search stage, default
      ``scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")``;
      ``None`` for none (then pick ``learning_rate`` with care).

  Conventions: torch.optim.LBFGS runs a whole inner loop of iterations per
  ``step`` call (``max_iter=20``) with a closure; here one ``update`` is one
  iteration.

  References:
    Nocedal & Wright, *Numerical Optimization*, 1999, Algorithms 7.4, 7.5, 3.5, 3.6.
  """
  stages = dict(lbfgs=scale_by_lbfgs(memory_size, scale_init_precond),
                lr=scale_by_learning_rate(1.0 if learning_rate is None else learning_rate))
  if linesearch is not None:
    stages["linesearch"] = linesearch
  return named_chain("lbfgs", **stages)


@names_its_arguments
def polyak_sgd(max_learning_rate: ScalarOrSchedule = 1.0, scaling: ScalarOrSchedule = 1.0,
               f_min: ScalarOrSchedule = 0.0, eps: ScalarOrSchedule = 0.0,
               variant: Literal["sps", "sps+"] = "sps") -> Chain:
  """SGD with the stochastic Polyak step size; needs ``value=loss`` at each update.

  .. math::
    d_t = s_t g_t, \\qquad
    \\theta_{t+1} = \\theta_t - \\min\\left(\\frac{f(\\theta_t) - f^\\star}{\\|d_t\\|^2 + \\epsilon},
      \\gamma_\\max\\right) d_t

  Args:
    max_learning_rate: :math:`\\gamma_\\max`, default 1.
    scaling: :math:`s_t`, a float or schedule, default 1.
    f_min: :math:`f^\\star`, default 0.
    eps: :math:`\\epsilon`, default 0.
    variant: ``"sps"`` or ``"sps+"`` (the gap clipped at 0).

  Conventions: as optax's code, the norm is of the *scaled* gradient
  :math:`d_t` (optax's docstring writes it with the raw gradient).

  References:
    Loizou et al., *Stochastic Polyak Step-size for SGD*, AISTATS 2021;
    Garrigos et al., 2023 (sps+).
  """
  return named_chain("polyak_sgd", scaling=scale_by_learning_rate(scaling),
                     polyak=scale_by_polyak(f_min, max_learning_rate, eps, variant))
