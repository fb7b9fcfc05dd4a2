"""Snapshots of the updates: :func:`snapshot`."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


from gradtx.core import GradientTransformation, check_callable, check_state
from gradtx.transforms.monitoring import Stats, check_measurement
from gradtx.wrappers._common import PyTree


# ----------------------------------------------------------------------------
# Snapshots of the updates.


class SnapshotState(NamedTuple):
  """State of :func:`snapshot`.

  Attributes:
    measurement: a :class:`~gradtx.Stats` holding one entry,
      ``{measure_name: measure(updates)}`` at the last step
      (``measure(params)`` before the first).
  """
  measurement: Stats


def snapshot(measure_name: str, measure: Callable[[PyTree], Any]) -> GradientTransformation:
  """Keeps ``measure(updates)`` in the state; the updates pass unchanged.

  .. math:: u = g, \\qquad \\text{state} = \\{\\text{measure\\_name}: \\text{measure}(g)\\}

  Placed in a chain, it records the updates as they flow at that point (the
  norm before a clip, say), inside the jitted step with no host sync. The
  measurement is a :class:`~gradtx.Stats` entry, so :func:`gradtx.stats`
  reads it by dotted name, ``"<stage>.<measure_name>"``, as it reads
  :func:`gradtx.monitor`'s statistics. Same arguments and semantics as
  ``optax.snapshot``; where optax code reads the value with
  ``optax.tree.get(state, measure_name)``, read ``gtx.stats(state)`` (the
  measurement is in a :class:`~gradtx.Stats`, not a ``dict``, which
  ``optax.tree.get`` does not search).

  Args:
    measure_name: the key of the measurement, a Python identifier.
    measure: a function of the updates returning an array or a tree of them.
      It is also called on the params at ``init``, so its result on the
      params must have the same shapes and dtypes as on the updates; one of
      another structure or shape raises at ``update``, naming its key path,
      where the state's structure would change (a retrace, a ``jax.lax.scan``
      error): a tree-valued measure of a leaf given to ``init`` whose gradient
      is ``None`` (give ``init`` the params with ``None`` there).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.chain(snap=gtx.snapshot("norm_before_clip", gtx.tree.global_norm),
    ...                clip=gtx.clip_by_global_norm(1.0))
    >>> params = jnp.zeros(2)
    >>> updates, state = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
    >>> gtx.stats(state)
    {'snap.norm_before_clip': Array(5., dtype=float32)}
  """
  if not isinstance(measure_name, str) or not measure_name.isidentifier():
    raise ValueError(f"snapshot: measure_name must be a string that is a Python identifier "
                     f"(it is part of a dotted name), got {measure_name!r}")
  check_callable("snapshot", "measure", measure, "a function of the updates")

  def init(params):
    return SnapshotState(Stats({measure_name: measure(params)}))

  def update(updates, state, params=None, **extra):
    del params, extra
    check_state("snapshot", state, SnapshotState)
    measured = measure(updates)
    check_measurement("snapshot", measure_name, state.measurement[measure_name], measured)
    return updates, SnapshotState(Stats({measure_name: measured}))

  return GradientTransformation(init, update, name="snapshot",
                                options=dict(measure_name=measure_name, measure=measure))
