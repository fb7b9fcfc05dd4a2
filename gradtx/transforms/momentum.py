"""Momentum: heavy-ball and Nesterov traces, and exponential moving averages."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gradtx import numerics, tree
from gradtx.core import (NONNEGATIVE, UNIT_HALF_OPEN, GradientTransformation, HParams, HParamSpec,
                         ScalarOrSchedule, check_state, checks_flags)
from gradtx.numerics import as_dtype, bias_correction, compute_dtype, ema_moment, safe_increment

__all__ = ["EmaState", "TraceState", "ema", "trace"]


class TraceState(NamedTuple):
  """State of :func:`trace`: the momentum buffer ``trace``."""
  trace: Any
  hparams: HParams


@checks_flags
def trace(decay: ScalarOrSchedule, nesterov: bool = False,
          accumulator_dtype: Any = None) -> GradientTransformation:
  """Heavy-ball or Nesterov momentum.

  .. math::
    m_t = g_t + \\mu\\, m_{t-1}, \\qquad
    u_t = \\begin{cases} g_t + \\mu\\, m_t & \\text{nesterov} \\\\ m_t & \\text{otherwise}\\end{cases}

  with :math:`m_0 = 0`. This is torch.optim.SGD's momentum with
  ``dampening=0``; the learning rate is applied by a later stage.

  Args:
    decay: :math:`\\mu \\ge 0`, the momentum coefficient (0.9 is usual).
    nesterov: use Nesterov's look-ahead form.
    accumulator_dtype: dtype of the trace; ``None`` uses the params' dtype. The step
      uses the trace as stored (rounded to this dtype), so XLA updates its buffer
      in place; optax steps with the unrounded value.
      Given a real dtype, a complex leaf's trace is complex
      (:func:`gradtx.numerics.state_dtype`).

  References:
    Polyak, *Some methods of speeding up the convergence of iteration methods*, 1964.
    Sutskever et al., *On the importance of initialization and momentum in deep learning*, 2013.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.trace(decay=0.5)
    >>> state = tx.init(jnp.zeros(1))
    >>> u, state = tx.update(jnp.ones(1), state)
    >>> tx.update(jnp.ones(1), state)[0]
    Array([1.5], dtype=float32)
  """
  spec = HParamSpec("trace", decay=(decay, NONNEGATIVE))

  def init(params):
    return TraceState(tree.accumulator_like(params, dtype=accumulator_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("trace", state, TraceState)
    del params, extra
    tree.check_structure(state.trace, updates, "state.trace", "updates", stage="trace")
    h, hparams = spec.step(state.hparams)

    def leaf(g, m):
      dtype = compute_dtype(g, m)
      mu, g_ = as_dtype(h["decay"], dtype), as_dtype(g, dtype)
      m_new = numerics.stored(g_ + mu * as_dtype(m, dtype), m.dtype)
      u = g_ + mu * m_new if nesterov else m_new
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype)

    updates, new_trace = tree.map_multi(leaf, 2, updates, state.trace)
    return updates, TraceState(new_trace, hparams)

  return GradientTransformation(init, update, name="trace", spec=spec,
                                options=dict(nesterov=nesterov,
                                             accumulator_dtype=accumulator_dtype))


class EmaState(NamedTuple):
  """State of :func:`ema`: the step ``count`` and the average ``ema``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  ema: Any
  hparams: HParams


@checks_flags
def ema(decay: ScalarOrSchedule, debias: bool = True,
        accumulator_dtype: Any = None) -> GradientTransformation:
  """An exponential moving average of the updates, optionally debiased.

  .. math::
    m_t = (1 - \\beta)\\, g_t + \\beta\\, m_{t-1}, \\qquad
    u_t = \\begin{cases} m_t / (1 - \\beta^t) & \\text{debias} \\\\ m_t & \\text{otherwise}\\end{cases}

  Args:
    decay: :math:`\\beta \\in [0, 1)`.
    debias: divide by :math:`1 - \\beta^t` to undo the zero initialisation.
    accumulator_dtype: dtype of the average; ``None`` uses the params' dtype. The
      step uses the average as stored (rounded to this dtype), as
      :func:`trace` does; optax's the unrounded value.
      Given a real dtype, a complex leaf's average is complex
      (:func:`gradtx.numerics.state_dtype`).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.ema(decay=0.9)
    >>> tx.update(jnp.full(1, 2.0), tx.init(jnp.zeros(1)))[0]
    Array([2.], dtype=float32)
  """
  spec = HParamSpec("ema", decay=(decay, UNIT_HALF_OPEN))

  def init(params):
    return EmaState(numerics.zero_count(), tree.accumulator_like(params, dtype=accumulator_dtype),
                    spec.init())

  def update(updates, state, params=None, **extra):
    check_state("ema", state, EmaState)
    del params, extra
    tree.check_structure(state.ema, updates, "state.ema", "updates", stage="ema")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)

    def leaf(g, m):
      beta = h["decay"]
      m_new = ema_moment(g, m, beta, order=1)
      u = bias_correction(m_new, beta, count) if debias else m_new
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype)

    updates, new_ema = tree.map_multi(leaf, 2, updates, state.ema)
    return updates, EmaState(count, new_ema, hparams)

  return GradientTransformation(init, update, name="ema", spec=spec,
                                options=dict(debias=debias, accumulator_dtype=accumulator_dtype))
