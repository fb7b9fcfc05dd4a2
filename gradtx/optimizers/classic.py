"""The classic ready optimizers: gradient descent, momentum, Adagrad, RMSprop, Adadelta, Adam.

Every optimizer here keeps optax's name, argument names, defaults and update
rule (the one exception, :func:`adadelta`'s default learning rate, is noted
there). Each docstring says where torch.optim's convention differs.

Batch, stochastic and mini-batch gradient descent are all :func:`sgd`: what
differs is the gradient you feed it — of the loss on the whole data set
(batch), on one example (stochastic), or on a mini-batch of examples.
"""

from __future__ import annotations

from typing import Any

from gradtx.chain import Chain, named_chain
from gradtx.core import ScalarOrSchedule, check_dtype_option, checks_flags, names_its_arguments
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.momentum import trace
from gradtx.transforms.moments import (scale_by_adadelta, scale_by_adam, scale_by_adamax,
                                       scale_by_amsgrad, scale_by_rms, scale_by_rss,
                                       scale_by_stddev)
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["adadelta", "adagrad", "adam", "adamax", "adamaxw", "adamw", "amsgrad", "nadam",
           "nadamw", "rmsprop", "sgd"]


@checks_flags
@names_its_arguments
def sgd(learning_rate: ScalarOrSchedule, momentum: ScalarOrSchedule | None = None,
        nesterov: bool = False, accumulator_dtype: Any = None) -> Chain:
  """Stochastic gradient descent, with optional heavy-ball or Nesterov momentum.

  .. math::
    m_t = g_t + \\mu\\, m_{t-1}, \\qquad
    \\theta_{t+1} = \\theta_t - \\eta \\cdot
      \\begin{cases} g_t + \\mu\\, m_t & \\text{nesterov} \\\\ m_t & \\text{momentum} \\\\
      g_t & \\text{no momentum} \\end{cases}

  Batch, stochastic and mini-batch gradient descent are this same optimizer
  fed the gradient of the loss on all data, one example, or a mini-batch.

  Matches ``optax.sgd``.

  Args:
    learning_rate: :math:`\\eta`, a float or a schedule.
    momentum: :math:`\\mu \\ge 0`, or ``None`` for plain gradient descent.
    nesterov: Nesterov's form of momentum.
    accumulator_dtype: dtype of the momentum buffer.

  Conventions: torch.optim.SGD computes the same with ``dampening=0``.

  References:
    Robbins & Monro, *A Stochastic Approximation Method*, 1951.
    Sutskever et al., *On the importance of initialization and momentum in deep learning*, 2013.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.sgd(0.1, momentum=0.9))
    sgd(
      momentum=trace(decay=0.9, nesterov=False, accumulator_dtype=None),
      lr=scale_by_learning_rate(learning_rate=0.1, flip_sign=True),
    )
  """
  # Here, not only in trace: without momentum there is no buffer, but a bad dtype is
  # still a slip to name at once.
  check_dtype_option("sgd", "accumulator_dtype", accumulator_dtype)
  if momentum is None:
    return named_chain("sgd", lr=scale_by_learning_rate(learning_rate))
  return named_chain("sgd", momentum=trace(momentum, nesterov, accumulator_dtype),
                     lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def adagrad(learning_rate: ScalarOrSchedule, initial_accumulator_value: float = 0.1,
            eps: ScalarOrSchedule = 1e-7, *, nu_dtype: Any = None) -> Chain:
  """Adagrad: per-coordinate steps shrinking with the sum of squared gradients.

  .. math::
    G_t = G_{t-1} + g_t^2, \\qquad \\theta_{t+1} = \\theta_t - \\eta \\frac{g_t}{\\sqrt{G_t + \\epsilon}}

  Args:
    learning_rate: :math:`\\eta`.
    initial_accumulator_value: :math:`G_0 \\ge 0`, default 0.1, written into the state
      at init (not a hyperparameter).
    eps: :math:`\\epsilon`, default 1e-7, inside the root.
    nu_dtype: dtype of :math:`G` (not in optax); ``jnp.float32`` for float16
      params, where :math:`G` stops growing and overflows (see
      :func:`gradtx.scale_by_rss`).

  Conventions: torch.optim.Adagrad defaults to :math:`G_0 = 0` and puts
  ``eps=1e-10`` outside the root.

  References:
    Duchi, Hazan & Singer, *Adaptive Subgradient Methods for Online Learning
    and Stochastic Optimization*, JMLR 2011.
  """
  return named_chain("adagrad", rss=scale_by_rss(initial_accumulator_value, eps,
                                                 nu_dtype=nu_dtype),
                     lr=scale_by_learning_rate(learning_rate))


@checks_flags
@names_its_arguments
def rmsprop(learning_rate: ScalarOrSchedule, decay: ScalarOrSchedule = 0.9,
            eps: ScalarOrSchedule = 1e-8, initial_scale: float = 0.0, eps_in_sqrt: bool = True,
            centered: bool = False, momentum: ScalarOrSchedule | None = None,
            nesterov: bool = False, bias_correction: bool = False, *,
            nu_dtype: Any = None) -> Chain:
  """RMSProp: divide by a running root mean square of the gradients.

  .. math::
    \\nu_t = \\rho \\nu_{t-1} + (1-\\rho) g_t^2, \\qquad
    \\theta_{t+1} = \\theta_t - \\eta \\frac{g_t}{\\sqrt{\\nu_t + \\epsilon}}

  ``centered`` subtracts the squared running mean of the gradients inside the
  root; ``momentum`` adds a heavy-ball trace after the learning rate.

  Args:
    learning_rate: :math:`\\eta`.
    decay: :math:`\\rho`, default 0.9 (torch's ``alpha`` defaults to 0.99).
    eps: :math:`\\epsilon`, default 1e-8.
    initial_scale: :math:`\\nu_0 \\ge 0`, default 0, written into the state at init
      (not a hyperparameter).
    eps_in_sqrt: :math:`\\epsilon` inside the root (default) or outside it
      (torch.optim.RMSprop's placement: pass ``eps_in_sqrt=False``).
    centered: centered RMSProp (Graves 2013).
    momentum: heavy-ball coefficient, or ``None``.
    nesterov: Nesterov momentum.
    bias_correction: debias the moments.
    nu_dtype: dtype of :math:`\\nu` (not in optax); ``jnp.float32`` for float16
      params, where :math:`\\nu` and ``eps`` round to 0.

  References:
    Tieleman & Hinton, *Lecture 6.5 - rmsprop*, 2012; Graves, *Generating
    Sequences With Recurrent Neural Networks*, 2013.
  """
  scale_by = scale_by_stddev if centered else scale_by_rms
  stages = dict(rms=scale_by(decay, eps, initial_scale, eps_in_sqrt, bias_correction,
                             nu_dtype=nu_dtype),
                lr=scale_by_learning_rate(learning_rate))
  if momentum is not None:
    stages["momentum"] = trace(momentum, nesterov)
  return named_chain("rmsprop", **stages)


@names_its_arguments
def adadelta(learning_rate: ScalarOrSchedule = 1.0, rho: ScalarOrSchedule = 0.9,
             eps: ScalarOrSchedule = 1e-6, weight_decay: ScalarOrSchedule = 0.0,
             weight_decay_mask: Mask | None = None, *, nu_dtype: Any = None) -> Chain:
  """Adadelta: steps scaled by the ratio of running RMS of updates and gradients.

  .. math::
    E[g^2]_t = \\rho E[g^2]_{t-1} + (1-\\rho) g_t^2, \\quad
    \\Delta_t = \\frac{\\sqrt{E[\\Delta^2]_{t-1} + \\epsilon}}{\\sqrt{E[g^2]_t + \\epsilon}} g_t,
    \\quad \\theta_{t+1} = \\theta_t - \\eta \\Delta_t

  Args:
    learning_rate: :math:`\\eta`, default 1.0 (the paper's rule, and torch's default).
    rho: :math:`\\rho`, default 0.9.
    eps: :math:`\\epsilon`, default 1e-6.
    weight_decay: L2 coefficient added to the gradient before the step, default 0.
    weight_decay_mask: which leaves to decay, default ``None``: every leaf.
    nu_dtype: dtype of both running means, :math:`E[g^2]` and :math:`E[\\Delta^2]`
      (not in optax; see :func:`gradtx.scale_by_adadelta`).

  Differs from optax: ``optax.adadelta()`` defaults to ``learning_rate=None``,
  which never flips the sign, so it climbs the loss (one step on a gradient of
  +1 moves the parameter by +0.0032). gradtx defaults to 1.0 and descends.

  Near a minimum the rule need not settle: once :math:`E[g^2]` falls well below
  :math:`\\epsilon`, :math:`\\Delta_t \\approx g_t \\sqrt{(E[\\Delta^2] + \\epsilon) / \\epsilon}`,
  gradient descent with a step size of at least :math:`\\eta`, which overshoots
  in every direction whose curvature exceeds :math:`2 / \\eta`. On a quadratic
  with curvatures 1 to 100, from ones, ``rho=0.95`` reaches a loss of 1e-14 by
  step 500 and drifts back up to 0.07 by step 3000 (in float64; XLA:CPU's
  float32 flushes the subnormals on the way to exactly 0 and hides it), while
  ``rho=0.999`` keeps converging.

  References:
    Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, 2012.
  """
  return named_chain("adadelta",
                     decay=add_decayed_weights(weight_decay, weight_decay_mask),
                     adadelta=scale_by_adadelta(rho, eps, nu_dtype=nu_dtype),
                     lr=scale_by_learning_rate(learning_rate))


@checks_flags
@names_its_arguments
def adam(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
         eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0, mu_dtype: Any = None, *,
         nesterov: bool = False, nu_dtype: Any = None) -> Chain:
  """Adam: debiased first moment over the root of the debiased second moment.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,
    \\\\ \\theta_{t+1} = \\theta_t - \\eta \\frac{m_t / (1-\\beta_1^t)}
      {\\sqrt{v_t / (1-\\beta_2^t) + \\epsilon_\\text{root}} + \\epsilon}

  Args:
    learning_rate: :math:`\\eta`.
    b1: :math:`\\beta_1`, default 0.9.
    b2: :math:`\\beta_2`, default 0.999.
    eps: :math:`\\epsilon`, default 1e-8, outside the root as in torch.
    eps_root: :math:`\\epsilon_\\text{root}`, default 0.
    mu_dtype: dtype of the first moment.
    nesterov: Dozat's NAdam form.
    nu_dtype: dtype of the second moment (not in optax).

  Conventions: torch.optim.Adam(weight_decay=w) adds L2 to the gradient; in
  gradtx that is ``chain(add_decayed_weights(w), scale_by_adam(), scale_by_learning_rate(lr))``.

  References:
    Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.adam(1e-3))
    adam(
      adam=scale_by_adam(b1=0.9, b2=0.999, eps=1e-08, eps_root=0, mu_dtype=None, nu_dtype=None, nesterov=False),
      lr=scale_by_learning_rate(learning_rate=0.001, flip_sign=True),
    )
  """
  return named_chain(
      "nadam" if nesterov else "adam",
      adam=scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
      lr=scale_by_learning_rate(learning_rate))


@checks_flags
@names_its_arguments
def adamw(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
          eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0, mu_dtype: Any = None,
          weight_decay: ScalarOrSchedule = 1e-4, mask: Mask | None = None, *,
          nesterov: bool = False, nu_dtype: Any = None) -> Chain:
  """AdamW: Adam with weight decay decoupled from the adaptive step.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta \\left( \\frac{\\hat m_t}{\\sqrt{\\hat v_t +
      \\epsilon_\\text{root}} + \\epsilon} + \\lambda \\theta_t \\right)

  with :math:`\\hat m_t, \\hat v_t` as in :func:`adam`.

  Matches ``optax.adamw``.

  Args:
    learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: as in :func:`adam`.
    weight_decay: :math:`\\lambda`, default 1e-4 (torch.optim.AdamW's is 1e-2).
    mask: which leaves to decay (a tree of bools or a callable of the params).

  Conventions: the decay is multiplied by the learning rate, as in torch; the
  paper's schedule multiplier :math:`\\eta_t` is the learning rate schedule.

  References:
    Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019.
  """
  return named_chain(
      "nadamw" if nesterov else "adamw",
      adam=scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
      decay=add_decayed_weights(weight_decay, mask),
      lr=scale_by_learning_rate(learning_rate))


@checks_flags
@names_its_arguments
def nadam(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
          eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0, mu_dtype: Any = None, *,
          nesterov: bool = True, nu_dtype: Any = None) -> Chain:
  """NAdam: :func:`adam` with Dozat's Nesterov momentum (``nesterov=True``).

  .. math::
    \\hat m_t = \\frac{\\beta_1 m_t}{1-\\beta_1^{t+1}} + \\frac{(1-\\beta_1) g_t}{1-\\beta_1^t}

  ``nesterov=False`` is plain :func:`adam` (as in optax, where ``nadam`` is
  ``adam`` with the flag preset).

  Args:
    learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype: as in :func:`adam`
      (defaults b1 0.9, b2 0.999, eps 1e-8, eps_root 0, both dtypes ``None``).
    nesterov: default True (Dozat's form); False is :func:`adam`.

  Conventions: torch.optim.NAdam also applies a momentum-decay schedule
  (``momentum_decay=4e-3``); gradtx and optax do not.

  References:
    Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR workshop 2016.
  """
  return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov,
              nu_dtype=nu_dtype)


@checks_flags
@names_its_arguments
def nadamw(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
           b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8,
           eps_root: ScalarOrSchedule = 0.0, mu_dtype: Any = None,
           weight_decay: ScalarOrSchedule = 1e-4, mask: Mask | None = None, *,
           nesterov: bool = True, nu_dtype: Any = None) -> Chain:
  """NAdamW: :func:`adamw` with Dozat's Nesterov momentum (``nesterov=True``).

  .. math::
    \\hat m_t = \\frac{\\beta_1 m_t}{1-\\beta_1^{t+1}} + \\frac{(1-\\beta_1) g_t}{1-\\beta_1^t},
    \\qquad \\theta_{t+1} = \\theta_t - \\eta \\left( \\frac{\\hat m_t}{\\sqrt{\\hat v_t +
      \\epsilon_\\text{root}} + \\epsilon} + \\lambda \\theta_t \\right)

  with :math:`m_t, \\hat v_t` as in :func:`adam`.

  ``nesterov=False`` is plain :func:`adamw`, as in optax.

  Args:
    learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype: as in :func:`adam`
      (defaults b1 0.9, b2 0.999, eps 1e-8, eps_root 0, both dtypes ``None``).
    weight_decay, mask: as in :func:`adamw` (default 1e-4, every leaf decayed).
    nesterov: default True (Dozat's form); False is :func:`adamw`.

  References:
    Dozat 2016; Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, 2019.
  """
  return adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask,
               nesterov=nesterov, nu_dtype=nu_dtype)


@checks_flags
@names_its_arguments
def amsgrad(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
            b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8,
            eps_root: ScalarOrSchedule = 0.0, mu_dtype: Any = None, bias_correction_mu: bool = True,
            bias_correction_nu: bool = True, *, nu_dtype: Any = None) -> Chain:
  """AMSGrad: Adam dividing by the running maximum of the second moment.

  .. math::
    \\hat v^{\\max}_t = \\max(\\hat v^{\\max}_{t-1}, \\hat v_t), \\quad
    \\theta_{t+1} = \\theta_t - \\eta \\frac{\\hat m_t}{\\sqrt{\\hat v^{\\max}_t + \\epsilon_\\text{root}} + \\epsilon}

  Conventions: as optax, the maximum is of the debiased :math:`\\hat v_t`;
  torch.optim.Adam(amsgrad=True) takes the maximum of the raw :math:`v_t`
  and debiases afterwards. With ``bias_correction_mu=False`` and
  ``bias_correction_nu=False`` (structural, default True) it is the paper's
  rule, without bias correction.

  Args:
    learning_rate: :math:`\\eta`, a float or a schedule.
    b1, b2, eps, eps_root, mu_dtype: as in :func:`adam` (defaults 0.9, 0.999,
      1e-8, 0, ``None``).
    bias_correction_mu, bias_correction_nu: debias :math:`m_t` and
      :math:`v_t`, default True each (structural).
    nu_dtype: dtype of :math:`v` and :math:`\\hat v^{\\max}`, default ``None``
      (the params'); not in optax.

  References:
    Reddi, Kale & Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018.
  """
  return named_chain("amsgrad", amsgrad=scale_by_amsgrad(b1, b2, eps, eps_root, mu_dtype,
                                                         bias_correction_mu, bias_correction_nu,
                                                         nu_dtype=nu_dtype),
                     lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def adamax(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
           b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8, *,
           nu_dtype: Any = None) -> Chain:
  """Adamax: Adam with an infinity-norm second moment.

  .. math::
    v_t = \\max(\\beta_2 v_{t-1}, |g_t| + \\epsilon), \\quad
    \\theta_{t+1} = \\theta_t - \\eta \\frac{m_t}{(1-\\beta_1^t) v_t}

  Args:
    learning_rate: :math:`\\eta`, a float or a schedule.
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    nu_dtype: dtype of :math:`v`, default ``None`` (the params'); not in
      optax. ``jnp.float32`` for float16 params, where ``eps`` is 0 and an
      entry with zero gradients steps by 0/0.

  References:
    Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015, §7.1.
  """
  return named_chain("adamax", adamax=scale_by_adamax(b1, b2, eps, nu_dtype=nu_dtype),
                     lr=scale_by_learning_rate(learning_rate))


@names_its_arguments
def adamaxw(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
            b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8,
            weight_decay: ScalarOrSchedule = 1e-4, mask: Mask | None = None, *,
            nu_dtype: Any = None) -> Chain:
  """AdamaxW: :func:`adamax` with decoupled weight decay.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta \\left(\\frac{m_t}{(1-\\beta_1^t) v_t} + \\lambda\\theta_t\\right)

  Matches ``optax.adamaxw``.

  Args:
    learning_rate, b1, b2, eps, nu_dtype: as in :func:`adamax` (defaults 0.9,
      0.999, 1e-8, ``None``).
    weight_decay: :math:`\\lambda \\ge 0`, default 1e-4.
    mask: which leaves to decay (a tree of bools or a callable of the
      params), default ``None``: every leaf.

  References:
    Kingma & Ba 2015; Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, 2019.
  """
  return named_chain("adamaxw", adamax=scale_by_adamax(b1, b2, eps, nu_dtype=nu_dtype),
                     decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate))
