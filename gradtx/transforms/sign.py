"""Sign-based rules: the sign of the gradient, Lion's interpolated sign, Rprop's step sizes."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax.numpy as jnp

from gradtx import tree
from gradtx.core import (POSITIVE, POSITIVE_OR_INF, UNIT, GradientTransformation, HParams,
                         HParamSpec, Range, ScalarOrSchedule, check_state, check_value, stateless)
from gradtx.numerics import as_dtype, compute_dtype, ema_moment

__all__ = ["ScaleByLionState", "ScaleByRpropState", "scale_by_lion", "scale_by_rprop",
           "scale_by_sign"]


def scale_by_sign() -> GradientTransformation:
  """Replaces every entry by its sign: :math:`u = \\operatorname{sign}(g)` (with sign(0) = 0).

  Matches ``optax.scale_by_sign``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_sign()
    >>> tx.update(jnp.array([-3.0, 0.0, 0.5]), tx.init(jnp.zeros(3)))[0]
    Array([-1.,  0.,  1.], dtype=float32)
  """

  def scale_by_sign(updates, params):
    return tree.tree_map(jnp.sign, updates)

  return stateless(scale_by_sign)


class ScaleByLionState(NamedTuple):
  """State of :func:`scale_by_lion`: the momentum ``mu``."""
  mu: Any
  hparams: HParams


_LION_MODES = ("hard", "smooth", "refined")


def scale_by_lion(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.99,
                  mu_dtype: Any = None, *, mode: Literal["hard", "smooth", "refined"] = "hard",
                  smooth_beta: ScalarOrSchedule = 1.0) -> GradientTransformation:
  """Lion's step: the sign of an interpolation of momentum and gradient.

  .. math::
    c_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    u_t = \\operatorname{sign}(c_t), \\quad
    m_t = \\beta_2 m_{t-1} + (1-\\beta_2) g_t

  ``mode="smooth"`` uses :math:`\\tanh(\\beta_s c_t)` and ``mode="refined"``
  keeps :math:`c_t` where :math:`|c_t| < 1` (optax's variants).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1]`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1]`, default 0.99.
    mu_dtype: dtype of :math:`m`.
    mode: ``"hard"`` (the paper), ``"smooth"`` or ``"refined"``.
    smooth_beta: :math:`\\beta_s > 0` for ``mode="smooth"``, default 1; a
      hyperparameter (in ``hparams``, settable, schedulable) in that mode only, and
      checked in every mode.

  References:
    Chen et al., *Symbolic Discovery of Optimization Algorithms*, NeurIPS 2023.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.scale_by_lion()
    >>> tx.update(jnp.array([-3.0, 0.5]), tx.init(jnp.zeros(2)))[0]
    Array([-1.,  1.], dtype=float32)
  """
  if mode not in _LION_MODES:
    raise ValueError(f"scale_by_lion: mode must be one of {_LION_MODES}, got {mode!r}")
  entries = dict(b1=(b1, UNIT), b2=(b2, UNIT))
  if mode == "smooth":  # the other modes do not read it
    entries["smooth_beta"] = (smooth_beta, POSITIVE)
  elif not callable(smooth_beta):  # unread, but a slip all the same ('1.0', nan, -1)
    check_value("scale_by_lion", "smooth_beta", smooth_beta, POSITIVE, scalar=True)
  spec = HParamSpec("scale_by_lion", **entries)

  def init(params):
    return ScaleByLionState(tree.accumulator_like(params, dtype=mu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_lion", state, ScaleByLionState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_lion")
    h, hparams = spec.step(state.hparams)

    def leaf(g, m):
      c = ema_moment(g, m, h["b1"], order=1, store=False)  # an interpolation, not kept
      if mode == "hard":
        u = jnp.sign(c)
      elif mode == "smooth":
        u = jnp.tanh(as_dtype(h["smooth_beta"], c.dtype) * c)
      else:
        u = jnp.where(jnp.abs(c) < 1, c, jnp.sign(c))
      m_new = ema_moment(g, m, h["b2"], order=1)
      return u.astype(g.dtype), m_new.astype(m.dtype)

    updates, mu = tree.map_multi(leaf, 2, updates, state.mu)
    return updates, ScaleByLionState(mu, hparams)

  return GradientTransformation(init, update, name="scale_by_lion", spec=spec,
                                options=dict(mu_dtype=mu_dtype, mode=mode))


class ScaleByRpropState(NamedTuple):
  """State of :func:`scale_by_rprop`: per-entry ``step_sizes`` and the last step ``prev_updates``."""
  step_sizes: Any
  prev_updates: Any
  hparams: HParams


def scale_by_rprop(learning_rate: float, eta_minus: ScalarOrSchedule = 0.5,
                   eta_plus: ScalarOrSchedule = 1.2, min_step_size: ScalarOrSchedule = 1e-6,
                   max_step_size: ScalarOrSchedule = 50.0) -> GradientTransformation:
  """Rprop (iRprop-): per-entry step sizes grown while the gradient keeps its sign.

  .. math::
    c_t = g_t\\, q_{t-1}, \\quad
    \\Delta_t = \\begin{cases} \\operatorname{clip}(\\eta^+ \\Delta_{t-1}) & c_t > 0 \\\\
      \\operatorname{clip}(\\eta^- \\Delta_{t-1}) & c_t < 0 \\\\
      \\Delta_{t-1} & c_t = 0 \\end{cases}, \\quad
    q_t = \\begin{cases} 0 & c_t < 0 \\\\ \\Delta_t \\operatorname{sign}(g_t) & \\text{otherwise}
      \\end{cases}

  and :math:`u_t = q_t` (a later stage flips the sign), with
  :math:`\\Delta_0 = \\eta` (``learning_rate``), :math:`q_0 = 0` and the clip to
  ``[min_step_size, max_step_size]``.

  Args:
    learning_rate: :math:`\\Delta_0 > 0`, the initial step size of every entry,
      written into ``step_sizes`` at init (not a hyperparameter: Rprop has no
      global rate after its first step).
    eta_minus: :math:`\\eta^- \\in (0, 1]`, default 0.5.
    eta_plus: :math:`\\eta^+ \\ge 1`, default 1.2.
    min_step_size: default 1e-6.
    max_step_size: default 50; ``math.inf`` for no cap.

  Differs from optax 0.2.8: ``optax.scale_by_rprop`` emits the *previous*
  step's :math:`q_{t-1}` (its first update is all zeros, every later one lags
  a step). gradtx emits :math:`q_t` as the paper and torch.optim.Rprop do;
  optax's stored ``state.prev_updates`` equals gradtx's update.

  References:
    Riedmiller & Braun, *A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm*, ICNN 1993; Igel & Hüsken, *Improving the
    Rprop Learning Algorithm*, 2000.
  """
  check_value("scale_by_rprop", "learning_rate", learning_rate, POSITIVE, scalar=True)
  spec = HParamSpec("scale_by_rprop", eta_minus=(eta_minus, Range(0.0, 1.0, low_open=True)),
                    eta_plus=(eta_plus, Range(1.0)), min_step_size=(min_step_size, Range(0.0)),
                    max_step_size=(max_step_size, POSITIVE_OR_INF))

  def init(params):
    tree.check_real(params, "scale_by_rprop")  # sign tests and clipping need an order
    return ScaleByRpropState(tree.full_like(params, learning_rate), tree.zeros_like(params),
                             spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_rprop", state, ScaleByRpropState)
    del params, extra
    tree.check_structure(state.step_sizes, updates, "state.step_sizes", "updates",
                         stage="scale_by_rprop")
    h, hparams = spec.step(state.hparams)

    def leaf(g, step_size, q_prev):
      dtype = compute_dtype(g, step_size)
      g_ = g.astype(dtype)
      c = g_ * q_prev.astype(dtype)
      factor = jnp.where(c > 0, as_dtype(h["eta_plus"], dtype), as_dtype(h["eta_minus"], dtype))
      resized = jnp.clip(step_size.astype(dtype) * factor, as_dtype(h["min_step_size"], dtype),
                         as_dtype(h["max_step_size"], dtype))
      step_size_new = jnp.where(c == 0, step_size.astype(dtype), resized)
      # iRprop-: after a sign flip, skip this entry's step and forget its direction.
      q = jnp.where(c < 0, 0, step_size_new * jnp.sign(g_))
      return q.astype(g.dtype), step_size_new.astype(step_size.dtype), q.astype(q_prev.dtype)

    updates, step_sizes, prev = tree.map_multi(leaf, 3, updates, state.step_sizes,
                                               state.prev_updates)
    return updates, ScaleByRpropState(step_sizes, prev, hparams)

  return GradientTransformation(init, update, name="scale_by_rprop", spec=spec,
                                options=dict(learning_rate=learning_rate))
