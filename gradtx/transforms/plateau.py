"""Reduce on plateau: scale the updates down when the loss stops improving."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import (NONNEGATIVE, NONNEGATIVE_INT, POSITIVE_INT, UNIT, GradientTransformation,
                         HParams, HParamSpec, Range, ScalarOrSchedule, check_state, is_concrete)
from gradtx.errors import HyperparameterError, StructureError, missing_extra_argument
from gradtx.numerics import as_dtype, safe_increment

__all__ = ["ReduceOnPlateauState", "reduce_on_plateau"]

_OPEN_UNIT = Range(0.0, 1.0, low_open=True, high_open=True)


class ReduceOnPlateauState(NamedTuple):
  """State of :func:`reduce_on_plateau` (optax's field names).

  Attributes:
    scale: the factor the updates are multiplied by now (1 at the start).
    best_value: the best averaged loss so far.
    plateau_count: evaluations since the last improvement.
    cooldown_count: evaluations left before plateaus count again.
    count: losses accumulated towards the next evaluation.
    avg_value: their running mean.
    hparams: the numeric arguments, by name.
  """
  scale: jax.Array
  best_value: jax.Array
  plateau_count: jax.Array
  cooldown_count: jax.Array
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  avg_value: jax.Array
  hparams: HParams


def _extreme_dtype(params: Any, widest: bool) -> jnp.dtype:
  """The narrowest (or widest) floating dtype among the params' leaves; float32 if none."""
  dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(params)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
  if not dtypes:
    return jnp.dtype(jnp.float32)
  return (max if widest else min)(dtypes, key=lambda d: jnp.finfo(d).bits)


def reduce_on_plateau(factor: ScalarOrSchedule = 0.1, patience: int = 10,
                      rtol: ScalarOrSchedule = 1e-4, atol: ScalarOrSchedule = 0.0,
                      cooldown: int = 0, accumulation_size: int = 1,
                      min_scale: ScalarOrSchedule = 0.0) -> GradientTransformation:
  """Multiplies the updates by a scale that shrinks when the loss plateaus.

  Reads the loss passed to ``update`` as ``value``
  (``update(grads, state, params, value=loss)``). Every ``accumulation_size``
  calls it evaluates the mean :math:`\\bar L` of the losses received:

  .. math::
    \\text{improved} = \\bar L < (1 - r) L^\\ast - a, \\qquad
    L^\\ast \\leftarrow \\bar L \\text{ if improved}

  An evaluation that does not improve adds one to the plateau count; when the
  count reaches ``patience``, :math:`s \\leftarrow \\max(f s, s_\\min)`, the
  count restarts and the next ``cooldown`` evaluations are not counted. The
  updates are :math:`u = s\\, g`, with the scale after this call's evaluation.
  Place it after the learning rate stage (``chain(adam(...), reduce_on_plateau())``).

  The numeric arguments are hyperparameters (read and set by name); the scale
  is state: ``state["plateau"].scale``.

  Args:
    factor: :math:`f \\in (0, 1)`, default 0.1.
    patience: evaluations without improvement before the scale drops, an
      integer :math:`\\ge 0`, default 10.
    rtol: relative tolerance :math:`r \\in [0, 1]`, default 1e-4.
    atol: absolute tolerance :math:`a \\ge 0`, default 0; ``rtol`` and
      ``atol`` cannot both be 0.
    cooldown: evaluations ignored after a drop, an integer :math:`\\ge 0`, default 0.
    accumulation_size: losses averaged per evaluation, an integer
      :math:`\\ge 1`, default 1 (use more when the loss is a mini-batch's).
    min_scale: :math:`s_\\min \\ge 0`, the scale never drops below it, default 0.

  Differences from optax (``optax.contrib.reduce_on_plateau``): the same rule
  and state; the counts are compared with ``>=`` rather than ``==``, so a
  ``patience`` or ``accumulation_size`` lowered by :func:`gradtx.set_hparams`
  below the running count takes effect at once, and ``patience=0`` drops the
  scale at every evaluation without improvement and never at one with (as torch's
  ``ReduceLROnPlateau``; optax drops it at every improvement instead).

  Conventions: torch's ``ReduceLROnPlateau(mode="min", threshold_mode="rel")``
  with ``threshold=rtol``, ``eps`` has no counterpart here; torch changes the
  optimizer's learning rate, gradtx scales the updates.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.chain(sgd=gtx.sgd(1.0), plateau=gtx.reduce_on_plateau(factor=0.5, patience=1))
    >>> params = jnp.zeros(1)
    >>> state = tx.init(params)
    >>> for loss in [3.0, 2.0, 2.0, 2.0]:
    ...   updates, state = tx.update(jnp.ones(1), state, params, value=loss)
    >>> float(state["plateau"].scale), updates
    (0.25, Array([-0.25], dtype=float32))
  """
  spec = HParamSpec("reduce_on_plateau", factor=(factor, _OPEN_UNIT),
                    patience=(patience, NONNEGATIVE_INT), rtol=(rtol, UNIT),
                    atol=(atol, NONNEGATIVE), cooldown=(cooldown, NONNEGATIVE_INT),
                    accumulation_size=(accumulation_size, POSITIVE_INT),
                    min_scale=(min_scale, NONNEGATIVE))
  if all(not callable(v) and is_concrete(v) and float(v) == 0 for v in (rtol, atol)):
    raise HyperparameterError("reduce_on_plateau: rtol and atol cannot both be 0 (an "
                              "improvement must beat the best loss by some margin); "
                              "got rtol=0, atol=0")

  def init(params):
    wide = _extreme_dtype(params, widest=True)
    return ReduceOnPlateauState(
        scale=jnp.ones([], _extreme_dtype(params, widest=False)),
        best_value=jnp.asarray(jnp.inf, wide), plateau_count=jnp.zeros([], jnp.int32),
        cooldown_count=jnp.zeros([], jnp.int32), count=jnp.zeros([], jnp.int32),
        avg_value=jnp.zeros([], wide), hparams=spec.init())

  def update(updates, state, params=None, *, value=None, **extra):
    check_state("reduce_on_plateau", state, ReduceOnPlateauState)
    del params, extra
    if value is None:
      raise missing_extra_argument(
          "reduce_on_plateau needs the loss: call update(grads, state, params, value=loss)")
    if jnp.ndim(value) != 0:
      raise StructureError(f"reduce_on_plateau: value must be a scalar loss, got shape "
                           f"{jnp.shape(value)}")
    h, hparams = spec.step(state.hparams)
    dtype = state.avg_value.dtype

    # A running mean of the losses since the last evaluation.
    count = safe_increment(state.count)
    avg = ((state.count.astype(dtype) * state.avg_value + jnp.asarray(value).astype(dtype))
           / count.astype(dtype))
    evaluate = count >= h["accumulation_size"]

    improved = avg < ((1 - as_dtype(h["rtol"], dtype)) * state.best_value
                      - as_dtype(h["atol"], dtype))
    best_value = jnp.where(improved, avg, state.best_value)
    plateau_count = jnp.where(improved, 0, safe_increment(state.plateau_count))
    in_cooldown = state.cooldown_count > 0
    # ~improved: with patience 0, plateau_count >= patience holds after an improvement too.
    drop = ~in_cooldown & ~improved & (plateau_count >= h["patience"])
    scale = jnp.where(drop, state.scale * as_dtype(h["factor"], state.scale.dtype), state.scale)
    scale = jnp.where(in_cooldown, state.scale,
                      jnp.maximum(scale, as_dtype(h["min_scale"], scale.dtype)))
    cooldown_count = jnp.where(in_cooldown, state.cooldown_count - 1,
                               jnp.where(drop, h["cooldown"], 0)).astype(jnp.int32)
    plateau_count = jnp.where(in_cooldown | drop, 0, plateau_count)

    zero = jnp.zeros([], jnp.int32)
    new_state = ReduceOnPlateauState(
        scale=jnp.where(evaluate, scale, state.scale),
        best_value=jnp.where(evaluate, best_value, state.best_value),
        plateau_count=jnp.where(evaluate, plateau_count, state.plateau_count),
        cooldown_count=jnp.where(evaluate, cooldown_count, state.cooldown_count),
        count=jnp.where(evaluate, zero, count),
        avg_value=jnp.where(evaluate, jnp.zeros([], dtype), avg),
        hparams=hparams)
    updates = tree.tree_map(lambda g: g * new_state.scale.astype(g.dtype), updates)
    return updates, new_state

  return GradientTransformation(init, update, name="reduce_on_plateau", spec=spec)
