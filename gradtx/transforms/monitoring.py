"""Monitoring: statistics of the updates, kept in the state and read by name.

A monitor is a stage that returns its updates unchanged (the very same
arrays) and keeps statistics of them in its state, so watching an optimizer
is a matter of dropping a stage where the quantity of interest flows:

    tx = gtx.chain(
        grads=gtx.monitor("norm", "leaf_norms", "nonfinite_fraction"),  # the raw gradients
        opt=gtx.monitor("step_size_mean", "param_ratio", inner=gtx.adam(1e-3)),
    )
    gtx.stats(state)  # {"grads.norm": ..., "grads.leaf_norms": {...}, "opt.step_size_mean": ...}

What a statistic measures is set by where the stage stands: at the front of a
chain its updates are the gradients, after the learning rate they are the
steps. The effective per-parameter step size of adaptive stages compares the
updates leaving a transformation with those entering it, so that monitor
wraps the transformation (``inner=``) rather than keep a copy of the
gradients in its state.

Statistics are read with :func:`stats`, by the same dotted-name walk of the
state that :func:`gradtx.hparams` uses. Each costs one reduction over the
updates, computed inside the jitted step with no host sync; they are held as
float32 (float64 under ``jax_enable_x64``), as hyperparameters are.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx._flax_serialization import serializable
from gradtx.chain import ChainState, values_by_name
from gradtx.core import (GradientTransformation, HParams, HParamSpec, as_transformation,
                         check_callable, check_state, checks_flags, names_its_arguments,
                         require_params)
from gradtx.errors import did_you_mean
from gradtx.numerics import as_dtype, as_float, compute_dtype, safe_divide
from gradtx.tree_utils import tree_sum

__all__ = ["MONITOR_STATISTICS", "MeasuresState", "MonitorState", "Stats", "measure_with_ema",
           "monitor", "stats"]

PyTree = Any


@serializable
@jax.tree_util.register_pytree_with_keys_class
class Stats(Mapping[str, Any]):
  """A monitor's statistics at the last step: a read-only mapping ``name -> value``.

  A value is a scalar array, or for a per-leaf statistic (``leaf_*``) a tree
  of scalars keyed like the params. :func:`stats` reads every monitor's
  statistics of a state by dotted name.
  """

  __slots__ = ("_values",)

  def __init__(self, values: Mapping[str, Any]):
    self._values = dict(values)

  def __getitem__(self, name: str) -> Any:
    return self._values[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._values)

  def __len__(self) -> int:
    return len(self._values)

  def __repr__(self) -> str:
    def show(v: Any) -> str:
      try:
        return f"{float(v):.6g}"
      except Exception:  # a tree of per-leaf values, or a tracer
        return f"<{len(jax.tree.leaves(v))} leaves>"
    inner = ", ".join(f"{k}={show(v)}" for k, v in self._values.items())
    return f"Stats({inner})"

  def __eq__(self, other: object) -> bool:
    return self is other

  __hash__ = object.__hash__

  def tree_flatten_with_keys(self):
    names = tuple(self._values)
    return [(jax.tree_util.DictKey(n), self._values[n]) for n in names], names

  def tree_flatten(self):
    names = tuple(self._values)
    return [self._values[n] for n in names], names

  @classmethod
  def tree_unflatten(cls, names, children):
    return cls(dict(zip(names, children)))


class MonitorState(NamedTuple):
  """State of :func:`monitor`.

  Attributes:
    stats: the statistics at the last step (zeros before the first).
    inner_state: the state of the wrapped transformation, or ``None``.
    hparams: empty; a monitor has no hyperparameters (the wrapped
      transformation's appear under the monitor's name).
  """
  stats: Stats
  inner_state: Any
  hparams: HParams


# ----------------------------------------------------------------------------
# The statistics. Each is a function of the updates leaving the stage ``u``,
# those entering it ``g`` (different only with ``inner``) and the params ``p``,
# returning an array (or, per leaf, a tree of arrays) of any float dtype.


def _leaves(updates: PyTree) -> list[jax.Array]:
  """The arrays of a tree, leaves that a mask leaves out dropped."""
  return [x for x in jax.tree.leaves(updates, is_leaf=tree.is_masked) if not tree.is_masked(x)]


def norm(u: PyTree, g: PyTree, p: PyTree) -> jax.Array:
  """:math:`\\|u\\|_2`, over every entry of every leaf."""
  return tree.global_norm(u)


def leaf_norms(u: PyTree, g: PyTree, p: PyTree) -> PyTree:
  """:math:`\\|u_\\ell\\|_2` for each leaf :math:`\\ell`."""
  return tree.block_norm(u)


def param_ratio(u: PyTree, g: PyTree, p: PyTree) -> jax.Array:
  """:math:`\\|u\\|_2 / \\|p\\|_2`."""
  u_norm, p_norm = tree.global_norm(u), tree.global_norm(p)
  dtype = compute_dtype(u_norm, p_norm)
  return u_norm.astype(dtype) / p_norm.astype(dtype)


def leaf_param_ratios(u: PyTree, g: PyTree, p: PyTree) -> PyTree:
  """:math:`\\|u_\\ell\\|_2 / \\|p_\\ell\\|_2` for each leaf :math:`\\ell`."""
  def ratio(u_norm, p_norm):
    dtype = compute_dtype(u_norm, p_norm)
    return u_norm.astype(dtype) / p_norm.astype(dtype)
  return tree.tree_map(ratio, tree.block_norm(u), tree.block_norm(p))


def nonfinite_fraction(u: PyTree, g: PyTree, p: PyTree) -> jax.Array:
  """:math:`\\#\\{i : u_i \\text{ is NaN or} \\pm\\infty\\} / n`."""
  n = sum(int(np.size(x)) for x in _leaves(u))
  return tree.count_nonfinite(u).astype(_stat_dtype()) / max(n, 1)


def _abs_where_seen(u: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
  """:math:`|u_i|` and :math:`|g_i|` where :math:`g_i` is finite and nonzero, 0 elsewhere."""
  seen = jnp.isfinite(g) & (g != 0)
  abs_u, abs_g = jnp.abs(u), jnp.abs(g)
  dtype = compute_dtype(abs_u, abs_g)
  return jnp.where(seen, abs_u.astype(dtype), 0), jnp.where(seen, abs_g.astype(dtype), 0)


def _quotient(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike) -> jax.Array:
  """``a / b``, and 0 where ``b`` is 0 (no gradient seen: no step size to report)."""
  dtype = compute_dtype(a, b)
  return safe_divide(as_dtype(a, dtype), as_dtype(b, dtype))


def step_size_mean(u: PyTree, g: PyTree, p: PyTree) -> jax.Array:
  """:math:`\\sum_{i \\in S} |u_i| / \\sum_{i \\in S} |g_i|`, the mean of
  :math:`|u_i| / |g_i|` weighted by :math:`|g_i|`."""
  abs_u, abs_g = tree.map_multi(_abs_where_seen, 2, u, g)
  # Summed across leaves in the dtype they promote to (bfloat16 and float32 leaves mix).
  return _quotient(tree_sum(abs_u), tree_sum(abs_g))


def leaf_step_sizes(u: PyTree, g: PyTree, p: PyTree) -> PyTree:
  """``step_size_mean`` of each leaf."""
  abs_u, abs_g = tree.map_multi(_abs_where_seen, 2, u, g)
  return tree.tree_map(_quotient, tree.block_map(jnp.sum, abs_u), tree.block_map(jnp.sum, abs_g))


def step_size_max(u: PyTree, g: PyTree, p: PyTree) -> jax.Array:
  """:math:`\\max_{i \\in S} |u_i| / |g_i|` (0 when :math:`S` is empty)."""
  maxima = []
  for u_leaf, g_leaf in zip(_leaves(u), _leaves(g)):
    abs_u, abs_g = _abs_where_seen(u_leaf, g_leaf)
    maxima.append(jnp.max(_quotient(abs_u, abs_g), initial=0))
  if not maxima:
    return jnp.zeros((), jnp.float32)
  dtype = compute_dtype(*maxima)
  return jnp.max(jnp.stack([m.astype(dtype) for m in maxima]))


class _Statistic(NamedTuple):
  fn: Callable[[PyTree, PyTree, PyTree], Any]
  per_leaf: bool = False
  needs_params: bool = False
  needs_inner: bool = False


_STATISTICS: dict[str, _Statistic] = {
    "norm": _Statistic(norm),
    "leaf_norms": _Statistic(leaf_norms, per_leaf=True),
    "param_ratio": _Statistic(param_ratio, needs_params=True),
    "leaf_param_ratios": _Statistic(leaf_param_ratios, per_leaf=True, needs_params=True),
    "nonfinite_fraction": _Statistic(nonfinite_fraction),
    "step_size_mean": _Statistic(step_size_mean, needs_inner=True),
    "leaf_step_sizes": _Statistic(leaf_step_sizes, per_leaf=True, needs_inner=True),
    "step_size_max": _Statistic(step_size_max, needs_inner=True),
}

MONITOR_STATISTICS: tuple[str, ...] = tuple(_STATISTICS)
"""The names :func:`monitor` accepts, in the order of its docstring."""

_NEEDS_INNER = (
    "monitor: {name} compares the updates leaving a transformation with those entering "
    "it, so the monitor must wrap that transformation: "
    "gtx.monitor({name!r}, inner=gtx.adam(1e-3)) (usually the adaptive stage and the "
    "learning rate, or the whole optimizer)")


def _stat_dtype() -> jnp.dtype:
  # As hyperparameters: float64 under jax_enable_x64, float32 otherwise, whatever
  # the leaves' dtype, so that a state's structure never depends on the updates.
  return jnp.result_type(float)


def monitor(*statistics: str | Mapping[str, Any], inner: GradientTransformation | None = None,
            measures: Mapping[str, Any] | None = None) -> GradientTransformation:
  """Keeps statistics of the updates in the state; the updates pass unchanged.

  Also takes optax's form, one dict of measures: see *optax's form* below.

  With :math:`u` the updates the stage returns, :math:`g` those it receives
  and :math:`p` the params (:math:`u = g` unless ``inner`` is given, when
  :math:`u = \\text{inner}(g)`), the statistics are

  .. math::
    \\begin{aligned}
    \\texttt{norm} &= \\|u\\|_2 = \\sqrt{\\textstyle\\sum_i u_i^2} &
    \\texttt{leaf\\_norms} &= \\|u_\\ell\\|_2 \\text{ per leaf } \\ell \\\\
    \\texttt{param\\_ratio} &= \\|u\\|_2 / \\|p\\|_2 &
    \\texttt{leaf\\_param\\_ratios} &= \\|u_\\ell\\|_2 / \\|p_\\ell\\|_2 \\\\
    \\texttt{nonfinite\\_fraction} &= \\#\\{i : u_i \\notin \\mathbb{R}\\} / n &
    \\texttt{step\\_size\\_mean} &= \\frac{\\sum_{i \\in S} |u_i|}{\\sum_{i \\in S} |g_i|} \\\\
    \\texttt{leaf\\_step\\_sizes} &= \\frac{\\sum_{i \\in S \\cap \\ell} |u_i|}
      {\\sum_{i \\in S \\cap \\ell} |g_i|} \\text{ per leaf } \\ell &
    \\texttt{step\\_size\\_max} &= \\max_{i \\in S} |u_i| / |g_i|
    \\end{aligned}

  with :math:`S = \\{i : g_i \\text{ finite and} \\ne 0\\}` (a step size
  over an empty set is 0). The step sizes are the effective per-parameter
  learning rate :math:`|u_i| / |g_i|` of an adaptive optimizer: for
  ``inner=gtx.rmsprop(lr)`` it is :math:`\\eta / \\sqrt{\\nu_i + \\epsilon}`.
  The mean weights each entry by :math:`|g_i|`, so entries whose gradient is
  nearly 0 (where the ratio is ill-conditioned) count little. With momentum
  in ``inner`` the ratio also carries the momentum's memory of past
  gradients, and the max can be large wherever :math:`g_i` is near 0.

  Place a monitor where the quantity flows: first in a chain its updates are
  the gradients (``norm`` is the gradient norm), after the learning rate they
  are the steps (``param_ratio`` is the update-to-weight ratio, often kept
  near 1e-3). Read the values with :func:`stats` as ``"<stage>.<statistic>"``.
  Each statistic is one reduction over the updates computed in the step, with
  no host sync; the updates returned are the very arrays received (or
  ``inner`` returned), so a monitor never changes a result. (Wrap a whole
  optimizer, as above, rather than its Adam stage alone: a chain folds the
  learning rate into the Adam stage before it (see :class:`gradtx.Chain`),
  which a wrapped stage keeps apart, and the two differ by rounding.)
  A per-leaf statistic is state for its leaf, as a moment is: a ``None``
  gradient of a leaf given to ``init`` raises a
  :class:`~gradtx.StructureError` naming its key path (give ``init`` the
  params with ``None`` there).

  Args:
    *statistics: names from :data:`MONITOR_STATISTICS`: ``"norm"``,
      ``"leaf_norms"``, ``"param_ratio"``, ``"leaf_param_ratios"`` (these
      two need ``update(..., params)``), ``"nonfinite_fraction"``,
      ``"step_size_mean"``, ``"leaf_step_sizes"``, ``"step_size_max"``
      (these three need ``inner``).
    inner: a transformation to run and compare with, default ``None``. Its
      state is the monitor's ``inner_state`` and its hyperparameters appear
      under the monitor's name (``"opt.lr.learning_rate"``).
    measures: optax's form by keyword, ``monitor(measures={...})``; the same
      as passing the dict alone, positionally.

  optax's form: ``monitor({name: measure, ...})``, where a measure is a
  callable of the updates or a transformation whose returned "updates" are
  the measurement (:func:`measure_with_ema`). The measurements, of any
  shape, are read with :func:`stats` as ``"<stage>.<name>"``, and a
  measure's hyperparameters with :func:`gradtx.hparams` as
  ``"<stage>.<name>.<hyperparameter>"``. Unlike optax's, the state holds
  every measurement from ``init`` on (zeros of its shape), so its structure
  does not change at the first step and it can be carried through
  ``jax.lax.scan``; a measurement of another structure or shape than at
  ``init`` raises, naming its key path (a tree-valued one of a leaf given to
  ``init`` whose gradient is ``None``: give ``init`` the params with ``None``
  there).

  Conventions: torch users log ``p.grad.norm()`` and
  ``(lr * p.grad).norm() / p.norm()`` per layer by hand after
  ``loss.backward()``; here the same numbers are ``leaf_norms`` of a monitor
  first in the chain and ``leaf_param_ratios`` of one after the learning rate.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.chain(grads=gtx.monitor("norm", "nonfinite_fraction"),
    ...                opt=gtx.monitor("step_size_mean", inner=gtx.sgd(0.1)))
    >>> params = {"w": jnp.ones(2), "b": jnp.zeros(1)}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([3.0, 4.0]), "b": jnp.array([jnp.inf])}
    >>> updates, state = tx.update(grads, state, params)
    >>> {k: round(float(v), 4) for k, v in gtx.stats(state).items()}
    {'grads.norm': inf, 'grads.nonfinite_fraction': 0.3333, 'opt.step_size_mean': 0.1}
    >>> list(gtx.hparams(state))
    ['opt.lr.learning_rate']
  """
  if measures is not None:
    if statistics:
      raise ValueError("monitor: give either statistic names or measures=, not both "
                       "(chain two monitors to have both)")
    statistics = (measures,)
  if len(statistics) == 1 and isinstance(statistics[0], Mapping):
    if inner is not None:
      raise ValueError("monitor: a dict of measures (optax's form) takes no inner=; "
                       "chain the monitor after the transformation instead")
    return _monitor_measures(statistics[0])
  if not statistics:
    raise ValueError(f"monitor: name at least one statistic, from {list(MONITOR_STATISTICS)}")
  for name in statistics:
    if not isinstance(name, str):  # a dict among names (unhashable: a TypeError before)
      raise TypeError(f"monitor: statistics are named by strings, got {name!r}; give "
                      "either names or one dict of measures (chain two monitors to have both)")
    if name not in _STATISTICS:
      hint = did_you_mean(name, MONITOR_STATISTICS, n=2)
      raise ValueError(f"monitor: unknown statistic {name!r}{hint}; the statistics are "
                       f"{list(MONITOR_STATISTICS)}")
    if _STATISTICS[name].needs_inner and inner is None:
      raise ValueError(_NEEDS_INNER.format(name=name))
  names = cast("tuple[str, ...]", statistics)  # each checked above to be a str
  repeated = sorted({s for s in names if names.count(s) > 1})
  if repeated:
    raise ValueError(f"monitor: statistic {repeated[0]!r} is named twice")
  inner = None if inner is None else as_transformation(inner, "monitor", "inner")
  chosen = {name: _STATISTICS[name] for name in names}
  needs_params = any(s.needs_params for s in chosen.values())
  per_leaf = [name for name, s in chosen.items() if s.per_leaf]
  spec = HParamSpec("monitor")

  def init(params):
    dtype = _stat_dtype()
    values = {name: (tree.block_map(lambda x: jnp.zeros((), dtype), params) if s.per_leaf
                     else jnp.zeros((), dtype))
              for name, s in chosen.items()}
    inner_state = None if inner is None else inner.init(params)
    return MonitorState(Stats(values), inner_state, spec.init())

  def update(updates, state, params=None, **extra):
    check_state("monitor", state, MonitorState)
    if needs_params:
      require_params("monitor", params)
    for name in per_leaf:
      tree.check_structure(state.stats[name], updates, f"state.stats[{name!r}]", "updates",
                           check_shapes=False, stage="monitor")
    received = updates
    inner_state = state.inner_state
    if inner is not None:
      updates, inner_state = inner.update(updates, inner_state, params, **extra)
      tree.check_structure(received, updates, "the updates monitor received",
                           "the updates inner returned", stage="monitor")
    dtype = _stat_dtype()
    values = {name: tree.tree_map(lambda v: v.astype(dtype), s.fn(updates, received, params))
              for name, s in chosen.items()}
    return updates, MonitorState(Stats(values), inner_state, state.hparams)

  options: dict[str, Any] = {"statistics": statistics}
  if inner is not None:
    options["inner"] = inner
  return GradientTransformation(init, update, name="monitor", spec=spec, options=options)


class MeasuresState(NamedTuple):
  """State of :func:`monitor` given a dict of measures (optax's form).

  Attributes:
    measurements: a :class:`Stats` of the last step's measurements, by name
      (zeros of their shapes before the first step).
    measure_states: the state of each measure that is a transformation, by name
      (a :class:`gradtx.ChainState`, so that its hyperparameters read as
      ``"<stage>.<name>.<hparam>"``); a callable measure keeps none.
    hparams: empty; a monitor has no hyperparameters of its own.
  """
  measurements: Stats
  measure_states: ChainState
  hparams: HParams

  # A measure's name finds its measurement with tree_get and tree_set, as in optax (whose
  # measure states are a tuple), not also the state under that name here. A class
  # attribute, not a field: Python allows it in a NamedTuple's body, mypy does not.
  KEYS_NOT_NAMES = ("measure_states",)  # type: ignore[misc]


def check_measurement(stage: str, name: str, held: PyTree, measured: PyTree) -> None:
  """Raises :class:`~gradtx.StructureError` unless ``measured`` (a measure's value
  at this step) has the structure and shapes of ``held``, the one the state holds.

  ``init`` measured the params; a leaf given to ``init`` whose gradient is
  ``None`` has no array in the updates, and a tree-valued measurement (``lambda
  u: u``) would lose it, changing the state's structure (a jitted step retraces,
  ``jax.lax.scan`` fails). The error names its key path, as a stage that keeps a
  moment for that leaf does.
  """
  tree.check_structure(held, measured, f"the state's {name!r}",
                       f"measure {name!r} of the updates", stage=stage)


def _is_transformation(measure: Any) -> bool:
  return callable(getattr(measure, "init", None)) and callable(getattr(measure, "update", None))


def _check_measure(name: str, measure: Any) -> None:
  if _is_transformation(measure) or callable(measure):
    return
  raise TypeError(f"monitor: measure {name!r} must be a callable of the updates or a "
                  f"transformation (gtx.measure_with_ema), got {type(measure).__name__}")


def _monitor_measures(measures: Mapping[str, Any]) -> GradientTransformation:
  """``monitor({name: measure})``: optax's monitor, its measurements held from init on."""
  if not measures:
    raise ValueError("monitor: the dict of measures is empty")
  for name in measures:
    if not isinstance(name, str) or not name or "." in name:
      raise ValueError(f"monitor: a measure's name must be a non-empty string without "
                       f"dots, got {name!r}")
    _check_measure(name, measures[name])
  # A callable measures the updates alone; a transformation (measure_with_ema)
  # keeps a state, under the measure's name.
  stages = {name: as_transformation(m, where=f"monitor: measure {name!r}")
            for name, m in measures.items() if _is_transformation(m)}
  spec = HParamSpec("monitor")

  def measure_all(updates, states, params, extra):
    measurements, new_states = {}, {}
    for name, measure in measures.items():
      if name in stages:
        measurements[name], new_states[name] = stages[name].update(
            updates, states[name], params, **extra)
      else:
        measurements[name] = measure(updates)
    return measurements, new_states

  def init(params):
    states = {name: stage.init(params) for name, stage in stages.items()}
    # The measurements' shapes, from one abstract evaluation on the params, so that
    # the state's structure is fixed from the start.
    shapes = jax.eval_shape(lambda p, s: measure_all(p, s, p, {})[0], params, states)
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    return MeasuresState(Stats({name: zeros[name] for name in measures}), ChainState(states),
                         spec.init())

  def update(updates, state, params=None, **extra):
    check_state("monitor", state, MeasuresState)
    measurements, states = measure_all(updates, state.measure_states, params, extra)
    for name, value in measurements.items():
      check_measurement("monitor", name, state.measurements[name], value)
    return updates, MeasuresState(Stats(measurements), ChainState(states), state.hparams)

  return GradientTransformation(init, update, name="monitor", spec=spec,
                                options={"measures": tuple(measures)})


@checks_flags
@names_its_arguments  # ema checks decay and accumulator_dtype
def measure_with_ema(measure: Callable[[PyTree], Any], decay: Any, debias: bool = True,
                     accumulator_dtype: Any = None) -> GradientTransformation:
  """A measure for :func:`monitor` that keeps an exponential moving average of ``measure(u)``.

  .. math::
    m_t = \\beta\\, m_{t-1} + (1 - \\beta)\\, f(u_t), \\qquad
    \\text{measurement}_t = \\begin{cases} m_t / (1 - \\beta^t) & \\text{debias} \\\\
      m_t & \\text{otherwise} \\end{cases}

  optax's ``measure_with_ema``: :func:`gradtx.ema` of the measurement. A
  boolean or integer measurement (``tree_norm(u) > c``) is averaged as a
  float, so the average is the fraction of recent steps where it held.
  ``decay`` is held in the state (``"<monitor>.<name>.decay"``).

  Args:
    measure: :math:`f`, a callable of the updates returning an array or a tree
      of arrays.
    decay: :math:`\\beta \\in [0, 1)`.
    debias: divide by :math:`1 - \\beta^t`, default ``True``.
    accumulator_dtype: dtype of the average; ``None`` keeps the measurement's
      (floating) dtype.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.monitor({"clipped": gtx.measure_with_ema(
    ...     lambda u: gtx.tree_utils.tree_norm(u) > 1.0, decay=0.5)})
    >>> state = tx.init(jnp.zeros(2))
    >>> for g in ([3.0, 4.0], [0.0, 0.5]):
    ...   _, state = tx.update(jnp.array(g), state)
    >>> round(float(gtx.stats(state)["clipped"]), 4)   # (0.5 * 0.5 * 1 + 0.5 * 0) / (1 - 0.5 ** 2)
    0.3333
  """
  from gradtx.transforms.momentum import EmaState, ema
  check_callable("measure_with_ema", "measure", measure, "a function of the updates")
  average = ema(decay, debias=debias, accumulator_dtype=accumulator_dtype)

  def measured(x):
    return jax.tree.map(as_float, measure(x))

  def init(params):
    return average.init(measured(params))

  def update(updates, state, params=None, **extra):
    del params, extra
    check_state("measure_with_ema", state, EmaState)  # ema's own check would name ema
    return average.update(measured(updates), state)

  return GradientTransformation(init, update, name="measure_with_ema", spec=average.spec,
                                options=dict(measure=measure, **average.options))


def stats(state: PyTree) -> dict[str, Any]:
  """Every monitor statistic in a state, by dotted name ``"<stage>.<statistic>"``.

  Found by the same walk of the state as :func:`gradtx.hparams`, so monitors
  inside nested chains and wrappers read as ``"outer.inner.norm"``. Values
  are the ones of the last step (zeros before the first); per-leaf
  statistics are trees keyed like the params. Reading them is the only host
  sync: do it between steps, as often as you need.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.chain(gtx.monitor("leaf_norms"), gtx.sgd(1.0))
    >>> params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    >>> _, state = tx.update({"a": jnp.array([3.0, 4.0]), "b": jnp.array([-2.0])},
    ...                      tx.init(params), params)
    >>> gtx.stats(state)
    {'monitor.leaf_norms': {'a': Array(5., dtype=float32), 'b': Array(2., dtype=float32)}}
  """
  return values_by_name(state, Stats)
