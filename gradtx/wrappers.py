"""Wrappers: transformations that run other transformations on some leaves or some steps.

Design note. A wrapper's state keeps the wrapped transformation's state in a
field (``inner_state``; ``fast_state`` for :func:`lookahead`; one state per
label in a :class:`~gradtx.ChainState` ``inner_states`` for :func:`partition`).
The hyperparameter walk passes through these fields, so a wrapped stage's
hyperparameters read under the wrapper's stage name (``"safe.adam.b1"``,
``"opt.no_decay.lr.learning_rate"``), next to the wrapper's own numeric
arguments (``"safe.max_consecutive_errors"``).

Masks. :func:`masked`, :func:`partition` and :func:`freeze` hide leaves from
the transformations they wrap by putting a :class:`~gradtx.tree.MaskedNode`
in their place, so those keep no state for them. A callable mask (or
``param_labels``) is always called on real parameters: when masked wrappers
nest, the inner one's callable sees the unmasked tree the outermost wrapper
received, never a tree holding ``MaskedNode``. (The outer wrapper publishes
that tree for the duration of its inner call; it is a trace-time detail and
never reaches the compiled step.)
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.chain import ChainState, in_stage
from gradtx.core import (NONNEGATIVE_INT, POSITIVE_INT, UNIT, GradientTransformation, HParams,
                         HParamSpec, ScalarOrSchedule, as_transformation, require_params,
                         stateless)
from gradtx.errors import StructureError
from gradtx.numerics import as_dtype, safe_increment
from gradtx.packed import Packed, masked_update
from gradtx.transforms.monitor import Stats
from gradtx.tree import MaskedNode

__all__ = ["ApplyEvery", "ApplyIfFiniteState", "ConditionallyMaskState",
           "ConditionallyTransformState", "LookaheadParams", "LookaheadState", "MaskedState",
           "MultiSteps", "MultiStepsState", "PartitionState", "SnapshotState", "apply_every",
           "apply_if_finite", "conditionally_mask", "conditionally_transform", "freeze",
           "lookahead", "masked", "multi_steps", "multi_transform", "partition",
           "selective_transform", "set_to_zero", "snapshot"]

PyTree = Any
Mask = PyTree | Callable[[PyTree], PyTree]


# ----------------------------------------------------------------------------
# Hiding leaves.


def _is_masked(x: Any) -> bool:
  return isinstance(x, MaskedNode)


def _check_state(state: Any, kind: type, where: str) -> None:
  """Raises a clear error for a state some other transformation made."""
  if not isinstance(state, kind):
    raise StructureError(
        f"{where}: the state is a {type(state).__name__}, not a {kind.__name__}; pass the "
        f"state this transformation's init made (to move a state into an edited chain, use "
        f"gradtx.carry_state)")


def _has_masked(values: PyTree) -> bool:
  return any(_is_masked(x) for x in jax.tree.leaves(values, is_leaf=_is_masked))


# The unmasked tree behind the trees a masked wrapper passes inwards.
_UNMASKED: contextvars.ContextVar[Any] = contextvars.ContextVar("gradtx_unmasked", default=None)


def _fills(values: PyTree, real: PyTree) -> bool:
  """Whether ``real`` is ``values`` with each MaskedNode replaced by a subtree."""
  try:
    same = jax.tree.map(lambda v, r: _is_masked(v) or np.shape(v) == np.shape(r),
                        values, real, is_leaf=_is_masked)
  except (ValueError, TypeError):
    return False
  return all(jax.tree.leaves(same))


@contextlib.contextmanager
def _unmasked_view(values: PyTree) -> Iterator[PyTree]:
  """Yields the unmasked tree behind ``values``; nested masks see it while the block runs."""
  known = _UNMASKED.get()
  use_known = known is not None and _has_masked(values) and _fills(values, known)
  real = known if use_known else values
  token = _UNMASKED.set(real)
  try:
    yield real
  finally:
    _UNMASKED.reset(token)


def _prefix_error(prefix: PyTree, real: PyTree, where: str, what: str) -> str:
  """Names the first key path where ``prefix`` is not a prefix of ``real``."""
  prefix_paths = [jax.tree_util.keystr(p) for p, _ in
                  jax.tree_util.tree_flatten_with_path(prefix, is_leaf=_is_masked)[0]]
  real_paths = [jax.tree_util.keystr(p) for p, _ in
                jax.tree_util.tree_flatten_with_path(real, is_leaf=_is_masked)[0]]
  for path in prefix_paths:
    if not any(r.startswith(path) for r in real_paths):
      return f"{where}: the {what} has key path {path}, which the params do not have"
  for path in real_paths:
    if not any(path.startswith(p) for p in prefix_paths):
      return f"{where}: the params have key path {path}, which the {what} does not cover"
  return (f"{where}: the {what} must have the params' tree structure or a prefix of it; "
          f"got {jax.tree.structure(prefix)} for params {jax.tree.structure(real)}")


def _per_leaf(prefix: PyTree, real: PyTree, where: str, what: str) -> PyTree:
  """``prefix`` (a prefix of ``real``'s structure) broadcast to one entry per leaf of ``real``."""
  try:
    return jax.tree.map(lambda entry, sub: jax.tree.map(lambda _: entry, sub, is_leaf=_is_masked),
                        prefix, real, is_leaf=_is_masked)
  except (ValueError, TypeError):
    raise StructureError(_prefix_error(prefix, real, where, what)) from None


def _is_static_bool(m: Any) -> bool:
  if isinstance(m, (bool, np.bool_)):
    return True
  return (isinstance(m, (np.ndarray, jax.Array)) and not isinstance(m, jax.core.Tracer)
          and m.shape == () and m.dtype == np.bool_)


def _mask_per_leaf(mask: Mask, real: PyTree, where: str) -> PyTree:
  """A bool per leaf of ``real``: the mask (called on ``real`` if callable), broadcast."""
  mask_tree = mask(real) if callable(mask) else mask
  per_leaf = _per_leaf(mask_tree, real, where, "mask")
  for path, m in jax.tree_util.tree_flatten_with_path(per_leaf, is_leaf=_is_masked)[0]:
    if not _is_masked(m) and not _is_static_bool(m):
      raise StructureError(
          f"{where}: the mask must hold Python bools (it is fixed when the step is "
          f"traced); at key path {tree.keystr(path)} it holds {type(m).__name__} {m!r}")
  return per_leaf


def _hide(keep: PyTree, values: PyTree) -> PyTree:
  """``values`` with every leaf whose ``keep`` entry is False replaced by MaskedNode."""
  return jax.tree.map(lambda v, k: v if _is_masked(v) or bool(k) else MaskedNode(),
                      values, keep, is_leaf=_is_masked)


def _unhide(new: PyTree, old: PyTree) -> PyTree:
  """``new`` with each MaskedNode filled back in from ``old``."""
  return jax.tree.map(lambda n, o: o if _is_masked(n) else n, new, old, is_leaf=_is_masked)


def _hide_extra(keep: PyTree, extra: dict[str, Any], updates: PyTree) -> dict[str, Any]:
  """Extra arguments shaped like the updates (per-parameter tags), hidden like them."""
  structure = jax.tree.structure(updates, is_leaf=_is_masked)
  return {k: _hide(keep, v) if jax.tree.structure(v, is_leaf=_is_masked) == structure else v
          for k, v in extra.items()}


class MaskedState(NamedTuple):
  """State of :func:`masked`: the wrapped stage's state, for the masked-in leaves."""
  inner_state: Any


def masked(inner: GradientTransformation, mask: Mask, *,
           mask_compatible_extra_args: bool = False) -> GradientTransformation:
  """Applies ``inner`` only to the leaves where ``mask`` is ``True``.

  .. math::
    u_i = \\begin{cases} \\text{inner}(g)_i & m_i \\\\ g_i & \\text{otherwise} \\end{cases}

  Masked-out leaves pass through unchanged and ``inner`` keeps no state for
  them (it sees :class:`~gradtx.tree.MaskedNode` in their place). Same
  arguments and semantics as ``optax.masked``; unlike optax, masks nest: in
  ``masked(masked(tx, m1), m2)`` a callable ``m1`` is called on the real
  params, not on a tree holding ``MaskedNode``.

  Args:
    inner: the transformation to apply.
    mask: a tree of bools with the params' structure (or a prefix of it), or
      a callable of the params (of the updates when ``update`` gets no params)
      returning one. Fixed when the step is traced.
    mask_compatible_extra_args: also hide the masked-out leaves of extra
      ``update`` arguments that have the updates' tree structure.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    >>> not_bias = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    >>> tx = gtx.masked(gtx.add_decayed_weights(0.1), not_bias)
    >>> updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    >>> updates["b"], updates["w"][0]
    (Array([0., 0.], dtype=float32), Array([0.1, 0.1], dtype=float32))
  """
  inner = as_transformation(inner, where="masked")

  def init(params):
    # Packed mode masks elements, not leaves (see gradtx.packed); tree_map_params's
    # placeholder has no leaves to mask.
    if isinstance(params, Packed) or tree.is_params_placeholder(params):
      return MaskedState(inner.init(params))
    with _unmasked_view(params) as real:
      keep = _mask_per_leaf(mask, real, "masked")
      return MaskedState(inner.init(_hide(keep, params)))

  def update(updates, state, params=None, **extra):
    _check_state(state, MaskedState, "masked")
    if params is not None:
      tree.check_structure(params, updates, "params", "updates")
    if isinstance(updates, Packed):
      updates, inner_state = masked_update(inner, mask, updates, state.inner_state, params,
                                           **extra)
      return updates, MaskedState(inner_state)
    with _unmasked_view(updates if params is None else params) as real:
      keep = _mask_per_leaf(mask, real, "masked")
      if mask_compatible_extra_args:
        extra = _hide_extra(keep, extra, updates)
      new_updates, inner_state = inner.update(
          _hide(keep, updates), state.inner_state,
          None if params is None else _hide(keep, params), **extra)
    return _unhide(new_updates, updates), MaskedState(inner_state)

  if "mask" in inner.options:  # a masked stage inside: show both masks
    return GradientTransformation(init, update, name="masked",
                                  options=dict(inner=inner, mask=mask))
  return GradientTransformation(init, update, name=inner.name, spec=inner.spec,
                                options={**inner.options, "mask": mask})


def _zeros(updates: PyTree, params: PyTree) -> PyTree:
  del params
  return tree.tree_map(jnp.zeros_like, updates)


def set_to_zero() -> GradientTransformation:
  """Sets every update to zero: :math:`u \\leftarrow 0`.

  With :func:`partition`, the parameters of a group that maps to it never
  move (and no optimizer keeps state for them). Same as
  ``optax.set_to_zero``; no state is kept but an empty
  :class:`~gradtx.EmptyState`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.set_to_zero()
    >>> tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))[0]
    Array([0., 0.], dtype=float32)
  """
  return stateless(_zeros, name="set_to_zero")


def freeze(mask: Mask) -> GradientTransformation:
  """Zeroes the updates of the leaves where ``mask`` is ``True``: those stay fixed.

  .. math:: u_i = \\begin{cases} 0 & m_i \\\\ g_i & \\text{otherwise} \\end{cases}

  No state is kept. Same as ``optax.freeze``. To also keep an optimizer from
  holding moments for the frozen leaves, use :func:`selective_transform`.

  Args:
    mask: ``True`` marks frozen leaves: a bool (everything or nothing), a tree
      of bools with the params' structure or a prefix of it, or a callable of
      the params returning one.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> grads = {"encoder": jnp.ones(2), "head": jnp.ones(2)}
    >>> tx = gtx.chain(freeze=gtx.freeze({"encoder": True, "head": False}), sgd=gtx.sgd(0.1))
    >>> tx.update(grads, tx.init(grads))[0]
    {'encoder': Array([-0., -0.], dtype=float32), 'head': Array([-0.1, -0.1], dtype=float32)}
  """
  tx = masked(set_to_zero(), mask)
  tx.name = "freeze"
  return tx


# ----------------------------------------------------------------------------
# Different transformations for labelled groups of parameters.


class PartitionState(NamedTuple):
  """State of :func:`partition`: each group's state, by label."""
  inner_states: ChainState


def partition(transforms: Mapping[str, GradientTransformation],
              param_labels: PyTree | Callable[[PyTree], PyTree], *,
              mask_compatible_extra_args: bool = False) -> GradientTransformation:
  """Applies a different transformation to each labelled group of parameters.

  .. math:: u_i = \\text{transforms}[\\ell_i](g_{\\{j : \\ell_j = \\ell_i\\}})_i

  Each transformation sees only its group's leaves (the others are
  :class:`~gradtx.tree.MaskedNode`) and keeps state only for them. The state
  keeps each group's state under its label, so hyperparameters read as
  ``"<stage>.<label>.<name>"``. Same arguments and semantics as
  ``optax.partition`` (also named ``multi_transform``).

  Args:
    transforms: label -> transformation. Labels are strings that are Python
      identifiers (they become part of dotted names).
    param_labels: a tree of labels with the params' structure (or a prefix of
      it), or a callable of the params returning one. Every label must be a
      key of ``transforms``.
    mask_compatible_extra_args: as in :func:`masked`.

  Example: no weight decay for biases and norm scales.

    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> params = {"dense": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "norm": jnp.ones(2)}
    >>> labels = lambda p: jax.tree.map(lambda x: "decay" if x.ndim > 1 else "no_decay", p)
    >>> tx = gtx.partition({"decay": gtx.adamw(1e-3, weight_decay=0.1),
    ...                     "no_decay": gtx.adam(1e-3)}, labels)
    >>> state = tx.init(params)
    >>> sorted(k for k in gtx.hparams(state) if k.endswith("learning_rate"))
    ['decay.lr.learning_rate', 'no_decay.lr.learning_rate']
  """
  if not isinstance(transforms, Mapping) or not transforms:
    raise TypeError("partition: transforms must be a non-empty mapping label -> "
                    f"transformation, got {transforms!r}")
  for label in transforms:
    if not isinstance(label, str) or not label.isidentifier():
      raise ValueError(f"partition: label {label!r} must be a string that is a Python "
                       "identifier: labels are part of hyperparameter names "
                       "('<stage>.<label>.<name>')")
  groups = {label: as_transformation(tx, where=f"partition group {label!r}")
            for label, tx in transforms.items()}

  def labels_per_leaf(real):
    labels = param_labels(real) if callable(param_labels) else param_labels
    per_leaf = _per_leaf(labels, real, "partition", "param_labels")
    for path, label in jax.tree_util.tree_flatten_with_path(per_leaf, is_leaf=_is_masked)[0]:
      if not _is_masked(label) and label not in groups:
        raise StructureError(
            f"partition: the parameter at key path {tree.keystr(path)} has label "
            f"{label!r}, which has no transformation; the labels of transforms are "
            f"{list(groups)}")
    return per_leaf

  def in_group(labels, label):
    return jax.tree.map(lambda leaf_label: leaf_label == label, labels, is_leaf=_is_masked)

  def init(params):
    # Packed, every group's state spans the buffers: groups are masks of elements.
    # tree_map_params's placeholder, like a packed tree, has no leaves to label.
    packed = isinstance(params, Packed) or tree.is_params_placeholder(params)
    with _unmasked_view(params) as real:
      labels = None if packed else labels_per_leaf(real)
      states = {}
      for label, tx in groups.items():
        with in_stage(label):
          states[label] = tx.init(params if packed else _hide(in_group(labels, label), params))
    return PartitionState(ChainState(states))

  def update(updates, state, params=None, **extra):
    _check_state(state, PartitionState, "partition")
    if params is not None:
      tree.check_structure(params, updates, "params", "updates")
    inner_states = state.inner_states
    if not isinstance(inner_states, ChainState) or list(inner_states) != list(groups):
      got = list(inner_states) if isinstance(inner_states, ChainState) else inner_states
      raise StructureError(f"partition: the state has groups {got}, this partition has "
                           f"{list(groups)}")
    new_states = {}
    if isinstance(updates, Packed):
      # Packed mode: each group is a mask of elements (see gradtx.packed.masked_update).
      source = updates if params is None else params
      labels = labels_per_leaf(source.layout.unpack(source))
      for label, tx in groups.items():
        with in_stage(label):
          updates, new_states[label] = masked_update(
              tx, in_group(labels, label), updates, inner_states[label], params, **extra)
      return updates, PartitionState(ChainState(new_states))
    with _unmasked_view(updates if params is None else params) as real:
      labels = labels_per_leaf(real)
      for label, tx in groups.items():
        keep = in_group(labels, label)
        group_extra = _hide_extra(keep, extra, updates) if mask_compatible_extra_args else extra
        with in_stage(label):
          new_updates, new_states[label] = tx.update(
              _hide(keep, updates), inner_states[label],
              None if params is None else _hide(keep, params), **group_extra)
        updates = _unhide(new_updates, updates)
    return updates, PartitionState(ChainState(new_states))

  return GradientTransformation(init, update, name="partition",
                                options={**groups, "param_labels": param_labels})


#: optax's older name for :func:`partition`.
multi_transform = partition


def selective_transform(optimizer: GradientTransformation, *,
                        freeze_mask: PyTree) -> GradientTransformation:
  """Runs ``optimizer`` on the leaves where ``freeze_mask`` is False; zeroes the rest.

  Unlike :func:`freeze` after an optimizer, the optimizer keeps no state for
  frozen leaves. Same as ``optax.selective_transform``; the groups are
  labelled ``"train"`` and ``"freeze"``.

  Args:
    optimizer: the transformation for the trained leaves.
    freeze_mask: ``True`` marks frozen leaves: a bool or a tree of bools
      with the params' structure (or a prefix of it).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> params = {"encoder": jnp.ones(2), "head": jnp.ones(2)}
    >>> tx = gtx.selective_transform(gtx.adam(0.1), freeze_mask={"encoder": True, "head": False})
    >>> state = tx.init(params)
    >>> state.inner_states["train"]["adam"].mu
    {'encoder': MaskedNode(), 'head': Array([0., 0.], dtype=float32)}
  """
  labels = jax.tree.map(lambda frozen: "freeze" if frozen else "train", freeze_mask)
  return partition({"train": optimizer, "freeze": set_to_zero()}, labels)


# ----------------------------------------------------------------------------
# Steps that may not happen.


def _run_if(run: jax.Array, inner: GradientTransformation, updates: PyTree, state: PyTree,
            params: PyTree, extra: dict[str, Any], *,
            pass_through: bool = False) -> tuple[PyTree, PyTree]:
  """``inner.update(...)`` where ``run``; else zero updates (the updates unchanged, with
  ``pass_through``) and ``state`` unchanged.

  A ``lax.cond``, so a skipped step costs no inner work and leaves the inner
  state bitwise as it was.
  """

  def step(operands):
    u, s, p = operands
    return inner.update(u, s, p, **extra)

  def skip(operands):
    out_updates = jax.eval_shape(step, operands)[0]
    if pass_through:  # in the dtypes inner would return, as lax.cond needs
      return tree.cast_like(operands[0], out_updates), operands[1]
    return tree.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), out_updates), operands[1]

  operands = (updates, state, params)
  if not isinstance(run, jax.core.Tracer):  # not traced: branch in Python, compile nothing
    return step(operands) if bool(run) else skip(operands)
  return jax.lax.cond(run, step, skip, operands)


class ApplyIfFiniteState(NamedTuple):
  """State of :func:`apply_if_finite` (optax's field names).

  Attributes:
    notfinite_count: consecutive steps with a NaN or Inf so far (0 after a finite one).
    last_finite: whether the last step's updates were finite.
    total_notfinite: all steps with a NaN or Inf since ``init``.
    inner_state: the wrapped transformation's state.
    hparams: ``max_consecutive_errors``.
  """
  notfinite_count: jax.Array
  last_finite: jax.Array
  total_notfinite: jax.Array
  inner_state: Any
  hparams: HParams


def apply_if_finite(inner: GradientTransformation,
                    max_consecutive_errors: int) -> GradientTransformation:
  """Skips a step whose updates hold a NaN or an Inf.

  .. math::
    (u, s) = \\begin{cases} \\text{inner}(g, s) & g \\text{ finite, or } n > N \\\\
      (0, s) & \\text{otherwise} \\end{cases}

  where :math:`n` counts consecutive non-finite steps, this one included. A
  skipped step returns zero updates and leaves the inner state bitwise
  unchanged, so the params do not move; after more than
  :math:`N` = ``max_consecutive_errors`` bad steps in a row it gives up and
  applies the update (NaN and all), as ``optax.apply_if_finite`` does, so a
  run that is broken for good does not fail silently.

  Args:
    inner: the transformation to protect (usually the whole optimizer).
    max_consecutive_errors: :math:`N`, an integer :math:`\\ge 0`; a
      hyperparameter, settable by name.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.apply_if_finite(gtx.sgd(0.1), max_consecutive_errors=2)
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = tx.update(jnp.array([1.0, jnp.nan]), state)
    >>> updates, int(state.notfinite_count), bool(state.last_finite)
    (Array([0., 0.], dtype=float32), 1, False)
  """
  inner = as_transformation(inner, where="apply_if_finite")
  spec = HParamSpec("apply_if_finite",
                    max_consecutive_errors=(max_consecutive_errors, NONNEGATIVE_INT))

  def init(params):
    zero = jnp.zeros([], jnp.int32)
    return ApplyIfFiniteState(zero, jnp.array(True), zero, inner.init(params), spec.init())

  def update(updates, state, params=None, **extra):
    _check_state(state, ApplyIfFiniteState, "apply_if_finite")
    h, hparams = spec.step(state.hparams)
    finite = tree.all_finite(updates)
    notfinite_count = jnp.where(finite, jnp.zeros([], jnp.int32),
                                safe_increment(state.notfinite_count))
    run = finite | (notfinite_count > h["max_consecutive_errors"])
    updates, inner_state = _run_if(run, inner, updates, state.inner_state, params, extra)
    total = jnp.where(finite, state.total_notfinite, safe_increment(state.total_notfinite))
    return updates, ApplyIfFiniteState(notfinite_count, finite, total, inner_state, hparams)

  return GradientTransformation(init, update, name="apply_if_finite", spec=spec,
                                options=dict(inner=inner))


class MultiStepsState(NamedTuple):
  """State of :func:`multi_steps` (optax's ``MultiStepsState``; ``inner_state`` is
  optax's ``inner_opt_state``).

  Attributes:
    mini_step: mini-batches accumulated since the last inner step.
    gradient_step: inner steps taken.
    inner_state: the wrapped transformation's state.
    acc_grads: the accumulated gradients (their mean, or sum).
    skip_state: what ``should_skip_update_fn`` returned last, for monitoring.
    hparams: ``every_k_schedule``, the number of mini-batches per step used last.
  """
  mini_step: jax.Array
  gradient_step: jax.Array
  inner_state: Any
  acc_grads: Any
  skip_state: Any
  hparams: HParams

  def has_updated(self) -> jax.Array:
    """Whether the last call took an inner step (optax's ``MultiSteps.has_updated``)."""
    return jnp.logical_and(self.mini_step == 0, self.gradient_step > 0)


def _never_skip(updates: PyTree, gradient_step: jax.Array, params: PyTree):
  del updates, gradient_step, params
  return jnp.array(False), ()


def multi_steps(opt: GradientTransformation, every_k_schedule: int | Callable[[jax.Array], Any],
                use_grad_mean: bool = True,
                should_skip_update_fn: Callable[..., tuple[jax.Array, Any]] | None = None,
                accumulator_dtype: Any = jnp.float32) -> GradientTransformation:
  """Gradient accumulation: one step of ``opt`` per ``k`` mini-batches.

  .. math::
    a_j = a_{j-1} + \\frac{g_j - a_{j-1}}{j}, \\qquad
    u_j = \\begin{cases} \\text{opt}(a_k) & j = k \\\\ 0 & j < k \\end{cases}

  The mini-batch gradients are averaged (Welford's running mean, stable in
  low precision; summed with ``use_grad_mean=False``); every ``k``-th call
  passes the mean to ``opt`` and returns its update, the calls in between
  return zeros and leave ``opt``'s state untouched. So ``k`` calls on ``k``
  mini-batches equal one call on their mean gradient. Same arguments and
  semantics as ``optax.MultiSteps``, as a transformation.

  Args:
    opt: the transformation that takes the accumulated steps.
    every_k_schedule: :math:`k`, an integer :math:`\\ge 1` (a hyperparameter,
      settable by name) or a callable of the inner step count returning one
      (to grow the batch during training).
    use_grad_mean: average the gradients (default) or sum them.
    should_skip_update_fn: ``fn(updates, gradient_step, params) -> (skip,
      info)``, such as :func:`gradtx.skip_not_finite`; a skipped mini-batch is
      as if it never happened, and ``info`` is kept in ``skip_state``.
    accumulator_dtype: dtype of the accumulated gradients, default float32.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.multi_steps(gtx.sgd(1.0), every_k_schedule=2)
    >>> state = tx.init(jnp.zeros(1))
    >>> u1, state = tx.update(jnp.array([1.0]), state)
    >>> u2, state = tx.update(jnp.array([3.0]), state)
    >>> u1, u2, bool(state.has_updated())
    (Array([0.], dtype=float32), Array([-2.], dtype=float32), True)
  """
  opt = as_transformation(opt, where="multi_steps")
  spec = HParamSpec("multi_steps", every_k_schedule=(every_k_schedule, POSITIVE_INT))
  skip_fn = should_skip_update_fn or _never_skip

  def hparams_at(k: jax.Array, hparams: HParams, gradient_step: jax.Array) -> HParams:
    # A schedule of k follows the inner step count, not the call count.
    return HParams({"every_k_schedule": k},
                   {"every_k_schedule": hparams.slot("every_k_schedule")}, gradient_step)

  def init(params):
    gradient_step = jnp.zeros([], jnp.int32)
    _, skip_state = skip_fn(tree.zeros_like(params), gradient_step, params)
    hparams = spec.init()
    if spec.scheduled:
      hparams = hparams_at(hparams["every_k_schedule"], hparams, gradient_step)
    return MultiStepsState(jnp.zeros([], jnp.int32), gradient_step, opt.init(params),
                           tree.zeros_like(params, accumulator_dtype), skip_state, hparams)

  def update(updates, state, params=None, **extra):
    _check_state(state, MultiStepsState, "multi_steps")
    tree.check_structure(state.acc_grads, updates, "state.acc_grads", "updates")
    if spec.scheduled:
      k = jnp.asarray(every_k_schedule(state.gradient_step)).astype(jnp.int32)
    else:
      k = state.hparams["every_k_schedule"]
    skip, skip_state = skip_fn(updates, state.gradient_step, params)
    skip = jnp.asarray(skip)
    if skip.dtype != jnp.bool_ or skip.shape != ():
      raise StructureError("multi_steps: should_skip_update_fn must return a scalar bool "
                           f"first, got dtype {skip.dtype} and shape {skip.shape}")
    accept = ~skip
    j = state.mini_step

    def accumulate(g, a):
      g = g.astype(a.dtype)
      if use_grad_mean:
        return a + (g - a) / (j + 1).astype(a.dtype)
      return a + g

    acc = tree.tree_map(accumulate, updates, state.acc_grads)
    emit = accept & (j >= k - 1)
    updates, inner_state = _run_if(emit, opt, tree.cast_like(acc, updates), state.inner_state,
                                   params, extra)
    acc = tree.where(accept, acc, state.acc_grads)
    acc_grads = tree.tree_map(lambda a: jnp.where(emit, jnp.zeros_like(a), a), acc)
    mini_step = jnp.where(emit, jnp.zeros([], jnp.int32), jnp.where(accept, safe_increment(j), j))
    gradient_step = jnp.where(emit, safe_increment(state.gradient_step), state.gradient_step)
    hparams = hparams_at(k, state.hparams, gradient_step) if spec.scheduled else state.hparams
    return updates, MultiStepsState(mini_step, gradient_step, inner_state, acc_grads,
                                    skip_state, hparams)

  return GradientTransformation(init, update, name="multi_steps", spec=spec, options=dict(
      opt=opt, use_grad_mean=use_grad_mean, should_skip_update_fn=should_skip_update_fn,
      accumulator_dtype=accumulator_dtype))


class MultiSteps:
  """Gradient accumulation as optax's class: :func:`multi_steps` behind ``optax.MultiSteps``'s API.

  The same rule, state and arguments as :func:`multi_steps` (which this
  class calls; it holds no second implementation): one step of ``opt`` per
  :math:`k` mini-batches, on their mean (or sum) gradient, zero updates in
  between. For code written against ``optax.MultiSteps``: ``init``,
  ``update``, :meth:`has_updated`, :meth:`gradient_transformation` and
  ``inner_opt``. Prefer :func:`multi_steps` in new code: it is a
  transformation, so it is a stage of a chain and shows its
  hyperparameters by name.

  Args:
    opt: the transformation that takes the accumulated steps.
    every_k_schedule: :math:`k`, an integer :math:`\\ge 1` or a callable of
      the inner step count returning one.
    use_grad_mean: average the gradients (default) or sum them.
    should_skip_update_fn: ``fn(updates, gradient_step, params) -> (skip,
      info)``, such as :func:`gradtx.skip_not_finite`, default ``None``.
    accumulator_dtype: dtype of the accumulated gradients, default float32.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> opt = gtx.MultiSteps(gtx.sgd(1.0), every_k_schedule=2)
    >>> state = opt.init(jnp.zeros(1))
    >>> u1, state = opt.update(jnp.array([1.0]), state)
    >>> u2, state = opt.update(jnp.array([3.0]), state)
    >>> u1, u2, bool(opt.has_updated(state))
    (Array([0.], dtype=float32), Array([-2.], dtype=float32), True)
  """

  def __init__(self, opt: GradientTransformation,
               every_k_schedule: int | Callable[[jax.Array], Any],
               use_grad_mean: bool = True,
               should_skip_update_fn: Callable[..., tuple[jax.Array, Any]] | None = None,
               accumulator_dtype: Any = jnp.float32):
    self._tx = multi_steps(opt, every_k_schedule, use_grad_mean, should_skip_update_fn,
                           accumulator_dtype)

  @property
  def inner_opt(self) -> GradientTransformation:
    """The wrapped transformation."""
    return self._tx.options["opt"]

  def init(self, params: PyTree) -> MultiStepsState:
    """The state of :func:`multi_steps` for ``params``."""
    return self._tx.init(params)

  def update(self, updates: PyTree, state: MultiStepsState, params: PyTree | None = None,
             **extra_args: Any) -> tuple[PyTree, MultiStepsState]:
    """Accumulates ``updates``; every :math:`k`-th call returns ``opt``'s update, else zeros."""
    return self._tx.update(updates, state, params, **extra_args)

  def has_updated(self, state: MultiStepsState) -> jax.Array:
    """Whether the last call took an inner step (see :meth:`MultiStepsState.has_updated`)."""
    _check_state(state, MultiStepsState, "MultiSteps.has_updated")
    return state.has_updated()

  def gradient_transformation(self) -> GradientTransformation:
    """The transformation itself, as :func:`multi_steps` builds it."""
    return self._tx

  def __repr__(self) -> str:
    return f"MultiSteps({self._tx!r})"


class ApplyEvery(NamedTuple):
  """State of :func:`apply_every` (optax's ``ApplyEvery``).

  Attributes:
    count: calls since the last emitted sum, modulo :math:`k`.
    grad_acc: the sum of the updates since the last emitted one.
    hparams: ``k``.
  """
  count: jax.Array
  grad_acc: Any
  hparams: HParams


def apply_every(k: int = 1) -> GradientTransformation:
  """Sums the updates and emits the sum every ``k`` calls, zeros in between.

  With :math:`c = t \\bmod k` at call :math:`t = 0, 1, \\ldots`,

  .. math::
    a_t = \\begin{cases} g_t & c = 0 \\\\ a_{t-1} + g_t & c > 0 \\end{cases}, \\qquad
    u_t = \\begin{cases} a_t & c = k - 1 \\\\ 0 & \\text{otherwise} \\end{cases}

  Same argument and semantics as ``optax.apply_every``. Unlike
  :func:`multi_steps` it is a stage like any other: stages before it in a
  chain still update their state at every call, so it is not the same as
  one step on a :math:`k`-times larger batch (use :func:`multi_steps` for
  that). Unlike optax, an accumulated NaN does not outlive its period
  (optax multiplies the discarded sum by 0, which keeps a NaN).

  Args:
    k: :math:`k`, an integer :math:`\\ge 1`, default 1; a hyperparameter,
      settable by name.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.apply_every(k=2)
    >>> state = tx.init(jnp.zeros(1))
    >>> u1, state = tx.update(jnp.array([1.0]), state)
    >>> u2, state = tx.update(jnp.array([3.0]), state)
    >>> u1, u2
    (Array([0.], dtype=float32), Array([4.], dtype=float32))
  """
  spec = HParamSpec("apply_every", k=(k, POSITIVE_INT))

  def init(params):
    return ApplyEvery(jnp.zeros([], jnp.int32), tree.zeros_like(params), spec.init())

  def update(updates, state, params=None, **extra):
    del params, extra
    _check_state(state, ApplyEvery, "apply_every")
    tree.check_structure(state.grad_acc, updates, "state.grad_acc", "updates")
    h, hparams = spec.step(state.hparams)
    c = state.count % h["k"]
    restart, emit = c == 0, c == h["k"] - 1

    def accumulate(g, a):
      g = g.astype(a.dtype)
      return jnp.where(restart, g, a + g)

    grad_acc = tree.tree_map(accumulate, updates, state.grad_acc)
    new_updates = tree.tree_map(lambda a, g: jnp.where(emit, a, jnp.zeros_like(a)).astype(g.dtype),
                                grad_acc, updates)
    count = safe_increment(state.count) % h["k"]
    return new_updates, ApplyEvery(count, grad_acc, hparams)

  return GradientTransformation(init, update, name="apply_every", spec=spec)


# ----------------------------------------------------------------------------
# Steps chosen by a condition on the step count.


class ConditionallyTransformState(NamedTuple):
  """State of :func:`conditionally_transform` (optax's field names and order).

  Attributes:
    inner_state: the wrapped transformation's state.
    step: calls so far (the counter ``should_transform_fn`` is given).
  """
  inner_state: Any
  step: jax.Array


class ConditionallyMaskState(NamedTuple):
  """State of :func:`conditionally_mask` (optax's field names and order).

  Attributes:
    step: calls so far (the counter ``should_transform_fn`` is given).
    inner_state: the wrapped transformation's state.
  """
  step: jax.Array
  inner_state: Any


def _condition(where: str, should_transform_fn: Callable[..., Any], step: jax.Array,
               forward_extra_args: bool, extra: dict[str, Any]) -> jax.Array:
  """``should_transform_fn(step, **extra?)`` checked to be a scalar bool (or integer)."""
  run = jnp.asarray(should_transform_fn(step, **(extra if forward_extra_args else {})))
  if run.shape != () or not (run.dtype == jnp.bool_ or jnp.issubdtype(run.dtype, jnp.integer)):
    raise StructureError(f"{where}: should_transform_fn must return a scalar bool, got dtype "
                         f"{run.dtype} and shape {run.shape}")
  return run if run.dtype == jnp.bool_ else run != 0


def _conditional(where: str, inner: GradientTransformation,
                 should_transform_fn: Callable[..., Any], forward_extra_args: bool,
                 state_type: type, pass_through: bool) -> GradientTransformation:
  """The transformation behind :func:`conditionally_transform` and :func:`conditionally_mask`."""
  inner = as_transformation(inner, where=where)
  if not callable(should_transform_fn):
    raise TypeError(f"{where}: should_transform_fn must be a function of the step count, "
                    f"got {should_transform_fn!r}")

  def make_state(step, inner_state):
    return state_type(step=step, inner_state=inner_state)

  def init(params):
    return make_state(jnp.zeros([], jnp.int32), inner.init(params))

  def update(updates, state, params=None, **extra):
    _check_state(state, state_type, where)
    run = _condition(where, should_transform_fn, state.step, forward_extra_args, extra)
    updates, inner_state = _run_if(run, inner, updates, state.inner_state, params, extra,
                                   pass_through=pass_through)
    return updates, make_state(safe_increment(state.step), inner_state)

  return GradientTransformation(init, update, name=where, options=dict(
      inner=inner, should_transform_fn=should_transform_fn,
      forward_extra_args=forward_extra_args))


def conditionally_transform(inner: GradientTransformation,
                            should_transform_fn: Callable[..., Any],
                            forward_extra_args: bool = False) -> GradientTransformation:
  """Runs ``inner`` only at the steps ``should_transform_fn`` picks; else passes updates through.

  .. math::
    (u_t, s_t) = \\begin{cases} \\text{inner}(g_t, s_{t-1}) & \\text{cond}(t) \\\\
      (g_t, s_{t-1}) & \\text{otherwise} \\end{cases}

  where :math:`t` counts the calls so far (0 at the first) and is kept in the
  state. A step without ``inner`` costs no inner work and leaves its state
  bitwise unchanged. Same arguments and semantics as
  ``optax.conditionally_transform``; to get zero updates instead, use
  :func:`conditionally_mask`.

  Args:
    inner: the transformation to run at some steps.
    should_transform_fn: ``cond(step) -> bool`` (a scalar array); with
      ``forward_extra_args``, ``cond(step, **extra_args)``.
    forward_extra_args: also pass ``update``'s extra keyword arguments to
      ``should_transform_fn``, default ``False``.

  Example: clip only after a warm-up of 2 steps.

    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.conditionally_transform(gtx.clip(1.0), lambda step: step >= 2)
    >>> state = tx.init(jnp.zeros(1))
    >>> for _ in range(3):
    ...   updates, state = tx.update(jnp.array([5.0]), state)
    ...   print(updates)
    [5.]
    [5.]
    [1.]
  """
  return _conditional("conditionally_transform", inner, should_transform_fn,
                      forward_extra_args, ConditionallyTransformState, pass_through=True)


def conditionally_mask(inner: GradientTransformation,
                       should_transform_fn: Callable[..., Any],
                       forward_extra_args: bool = False) -> GradientTransformation:
  """Runs ``inner`` only at the steps ``should_transform_fn`` picks; else zero updates.

  .. math::
    (u_t, s_t) = \\begin{cases} \\text{inner}(g_t, s_{t-1}) & \\text{cond}(t) \\\\
      (0, s_{t-1}) & \\text{otherwise} \\end{cases}

  where :math:`t` counts the calls so far (0 at the first) and is kept in the
  state. A masked step costs no inner work and leaves its state bitwise
  unchanged. Same arguments and semantics as ``optax.conditionally_mask``;
  to pass the updates through instead, use :func:`conditionally_transform`.

  Args:
    inner: the transformation to run at some steps.
    should_transform_fn: ``cond(step) -> bool`` (a scalar array); with
      ``forward_extra_args``, ``cond(step, **extra_args)``.
    forward_extra_args: also pass ``update``'s extra keyword arguments to
      ``should_transform_fn``, default ``False``.

  Example: no steps at all for the first 2 calls.

    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.conditionally_mask(gtx.sgd(0.1), lambda step: step >= 2)
    >>> state = tx.init(jnp.zeros(1))
    >>> for _ in range(3):
    ...   updates, state = tx.update(jnp.array([1.0]), state)
    ...   print(updates)
    [0.]
    [0.]
    [-0.1]
  """
  return _conditional("conditionally_mask", inner, should_transform_fn, forward_extra_args,
                      ConditionallyMaskState, pass_through=False)


# ----------------------------------------------------------------------------
# Lookahead.


class LookaheadParams(NamedTuple):
  """The parameters :func:`lookahead` works on: ``fast`` (take gradients here) and
  ``slow`` (evaluate and deploy these)."""
  fast: Any
  slow: Any

  @classmethod
  def init_synced(cls, params: PyTree) -> "LookaheadParams":
    """Fast and slow parameters both equal to ``params``."""
    return cls(fast=params, slow=params)


class LookaheadState(NamedTuple):
  """State of :func:`lookahead`: the fast optimizer's state and the steps since the last sync."""
  fast_state: Any
  steps_since_sync: jax.Array
  hparams: HParams


def _reset_keeping_hparams(reset: jax.Array, current: PyTree, fresh: PyTree) -> PyTree:
  """``fresh`` where ``reset``, else ``current``; hyperparameters always stay ``current``'s
  (so values set by name survive a reset)."""
  is_hparams = lambda x: isinstance(x, HParams)  # noqa: E731
  return jax.tree.map(
      lambda c, f: c if is_hparams(c) else tree.tree_map(lambda a, b: jnp.where(reset, b, a), c, f),
      current, fresh, is_leaf=is_hparams)


def lookahead(fast_optimizer: GradientTransformation, sync_period: int,
              slow_step_size: ScalarOrSchedule,
              reset_state: bool = False) -> GradientTransformation:
  """Lookahead: ``k`` steps of a fast optimizer, then one step of the slow weights towards them.

  .. math::
    \\phi_{t+1} = \\phi_t + \\text{fast}(g_t), \\qquad
    \\text{every } k \\text{ steps: } \\theta \\leftarrow \\theta + \\alpha(\\phi - \\theta),
    \\ \\phi \\leftarrow \\theta

  where :math:`\\phi` are the fast and :math:`\\theta` the slow parameters.
  Params and updates are :class:`LookaheadParams` ``(fast, slow)``; take
  gradients at ``params.fast``, evaluate at ``params.slow``, and apply the
  updates unchanged (with :func:`gradtx.apply_updates`). Same arguments and
  semantics as ``optax.lookahead``.

  Args:
    fast_optimizer: the inner optimizer.
    sync_period: :math:`k \\ge 1`, fast steps per sync.
    slow_step_size: :math:`\\alpha \\in [0, 1]`.
    reset_state: re-initialise the fast optimizer's state at each sync (its
      hyperparameters, including values set by name, are kept).

  References:
    Zhang, Lucas, Hinton & Ba, *Lookahead Optimizer: k steps forward, 1 step
    back*, NeurIPS 2019.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.lookahead(gtx.sgd(0.5), sync_period=2, slow_step_size=0.5)
    >>> params = gtx.LookaheadParams.init_synced(jnp.zeros(1))
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(jnp.ones(1), state, params)
    ...   params = gtx.apply_updates(params, updates)
    >>> params.slow, params.fast
    (Array([-0.5], dtype=float32), Array([-0.5], dtype=float32))
  """
  fast_optimizer = as_transformation(fast_optimizer, where="lookahead")
  spec = HParamSpec("lookahead", sync_period=(sync_period, POSITIVE_INT),
                    slow_step_size=(slow_step_size, UNIT))

  def fast_params(params):
    return params.fast if hasattr(params, "fast") else params

  def init(params):
    # Plain params are taken as the fast ones, as optax does.
    return LookaheadState(fast_optimizer.init(fast_params(params)), jnp.zeros([], jnp.int32),
                          spec.init())

  def update(updates, state, params=None, **extra):
    _check_state(state, LookaheadState, "lookahead")
    params = require_params("lookahead", params)
    if not (hasattr(params, "fast") and hasattr(params, "slow")):
      raise StructureError("lookahead: params must be LookaheadParams(fast=..., slow=...) "
                           f"(start from LookaheadParams.init_synced(params)), got "
                           f"{type(params).__name__}")
    tree.check_structure(params.fast, updates, "params.fast", "updates")
    tree.check_structure(params.fast, params.slow, "params.fast", "params.slow")
    h, hparams = spec.step(state.hparams)
    updates, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast, **extra)
    sync = state.steps_since_sync >= h["sync_period"] - 1

    def leaf(u, phi, theta):
      alpha, on = as_dtype(h["slow_step_size"], u.dtype), sync.astype(u.dtype)
      last_difference = phi.astype(u.dtype) + u - theta.astype(u.dtype)
      return u - on * (1 - alpha) * last_difference, on * alpha * last_difference

    fast_updates, slow_updates = tree.map_multi(leaf, 2, updates, params.fast, params.slow)
    if reset_state:
      fast_state = _reset_keeping_hparams(sync, fast_state, fast_optimizer.init(params.fast))
    steps = jnp.where(sync, jnp.zeros([], jnp.int32), safe_increment(state.steps_since_sync))
    return (LookaheadParams(fast=fast_updates, slow=slow_updates),
            LookaheadState(fast_state, steps, hparams))

  return GradientTransformation(init, update, name="lookahead", spec=spec, options=dict(
      fast_optimizer=fast_optimizer, reset_state=reset_state))


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
      params must have the same shapes and dtypes as on the updates.

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
  if not callable(measure):
    raise TypeError(f"snapshot: measure must be a function of the updates, got {measure!r}")

  def init(params):
    return SnapshotState(Stats({measure_name: measure(params)}))

  def update(updates, state, params=None, **extra):
    del params, extra
    _check_state(state, SnapshotState, "snapshot")
    return updates, SnapshotState(Stats({measure_name: measure(updates)}))

  return GradientTransformation(init, update, name="snapshot",
                                options=dict(measure_name=measure_name, measure=measure))
