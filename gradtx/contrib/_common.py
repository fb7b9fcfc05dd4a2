"""Helpers shared by optax.contrib's modules: the matrices of a leaf, a wrapper's base.

Muon and GaLore read each leaf as a matrix (or a batch of them) chosen by
its dimension numbers (:class:`MuonDimensionNumbers`,
:class:`GaLoreDimensionNumbers`: which axes are the reduction and output
axes); the helpers here resolve them against the params (and give the
default of muon and GaLore: the 2-D leaves, as plain matrices) and map a
function over the matrices, in tree or packed mode. Schedule-free and
Mechanic hold their base optimizer as :func:`_as_base` makes it. The stages
that keep a tree like the params check the params with
:func:`gradtx.core.require_params_like`; DoG, DoWG and schedule-free SGD take an optional weight decay as
:func:`_optional_decay` makes it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.chain import Chain, chain
from gradtx.core import GradientTransformation, Params, ScalarOrSchedule, as_transformation
from gradtx.errors import StructureError
from gradtx.packed import Packed, PackedLeaves
from gradtx.transforms.decay import Mask, add_decayed_weights
# The tree a masked wrapper hides leaves of: dimension numbers are resolved on it.
from gradtx.wrappers._masking import prefix_error, unmasked_view

__all__ = ["GaLoreDimensionNumbers", "MuonDimensionNumbers"]


# ----------------------------------------------------------------------------
# Which axes of a leaf form its matrices.


class MuonDimensionNumbers(NamedTuple):
  """Which axes of a leaf form the matrix that Muon orthogonalises.

  The leaf is read as a batch of matrices :math:`W` of a product
  :math:`x W = y`: ``reduction_axis`` (an axis or several, flattened
  together) indexes :math:`x`'s entries and ``output_axis`` :math:`y`'s; every
  other axis is a batch axis, each of its matrices orthogonalised on its own.
  The default, ``(0, 1)``, is a plain 2-D weight. Each axis is one the leaf has
  (a negative one counts from the end); another raises a ``StructureError`` naming
  the leaf's shape.
  """
  reduction_axis: Sequence[int] | int = 0
  output_axis: Sequence[int] | int = 1


WeightDimNumOrFn = MuonDimensionNumbers | Params | Callable[[Params], Params | None]
"""A :class:`MuonDimensionNumbers` for every leaf, a tree of them (``None``
for a leaf that is not a matrix) with the params' structure or a prefix of
it, or a callable of the params returning such a tree."""


class GaLoreDimensionNumbers(NamedTuple):
  """Which axes of a leaf form the matrix that GaLore projects.

  As :class:`MuonDimensionNumbers`, but every axis must be a reduction or an
  output axis (no batch axes): the leaf is one matrix of shape
  (prod of reduction sizes, prod of output sizes).
  """
  reduction_axis: Sequence[int] | int = 0
  output_axis: Sequence[int] | int = 1


GaLoreDimNumsOrFn = GaLoreDimensionNumbers | Params | Callable[[Params], Params | None]
"""As :data:`WeightDimNumOrFn`, with :class:`GaLoreDimensionNumbers`."""


def _is_dims(x: Any) -> bool:
  return isinstance(x, (MuonDimensionNumbers, GaLoreDimensionNumbers))


def _axes(stage: str, shape: tuple[int, ...], dims: Any, axis: Any) -> tuple[int, ...]:
  """``axis`` (one axis or several) of a leaf of ``shape``, each as a non-negative int.

  Raises :class:`StructureError` for an axis that is not an int or that the leaf does not
  have: taken modulo the rank, ``reduction_axis=2`` on a matrix was axis 0 (optax raises),
  so dimension numbers written for rank-3 leaves orthogonalised a matrix on the wrong axes
  without a word.
  """
  ndim = len(shape)
  axes = (axis,) if isinstance(axis, (int, np.integer)) else (
      tuple(axis) if isinstance(axis, (tuple, list)) else None)
  if axes is None or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                             and -ndim <= a < ndim for a in axes):
    raise StructureError(
        f"{stage}: {dims} for a leaf of shape {shape}: each axis must be an int in "
        f"[-{ndim}, {ndim}), one of the leaf's axes; give other leaves their own dimension "
        "numbers (a tree, or a function of the params), or None to leave them out")
  axes = tuple(int(a) % ndim for a in axes)
  if len(set(axes)) != len(axes):
    raise StructureError(f"{stage}: {dims} for a leaf of shape {shape}: an axis is named "
                         "twice")
  return axes


def _matrix_axes(stage: str, shape: tuple[int, ...],
                 dims: MuonDimensionNumbers | GaLoreDimensionNumbers
                 ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
  """``(batch, reduction, output)`` axes of a leaf of ``shape``."""
  ndim = len(shape)
  if ndim < 2:
    raise StructureError(f"{stage}: a leaf of shape {shape} is not a matrix (rank {ndim}); "
                         "give it weight dimension numbers None to leave it out")
  reduction = _axes(stage, shape, dims, dims.reduction_axis)
  output = _axes(stage, shape, dims, dims.output_axis)
  if set(reduction) & set(output) or not reduction or not output:
    raise StructureError(f"{stage}: {dims} for a leaf of shape {shape}: the reduction and "
                         "output axes must be disjoint and non-empty")
  batch = tuple(a for a in range(ndim) if a not in reduction + output)
  return batch, reduction, output


def _fans(stage: str, shape: tuple[int, ...], dims: MuonDimensionNumbers) -> tuple[int, int]:
  """(fan in, fan out): the sizes of the reduction and output axes."""
  _, reduction, output = _matrix_axes(stage, shape, dims)
  return math.prod(shape[a] for a in reduction), math.prod(shape[a] for a in output)


def _dims_per_leaf(stage: str, spec: WeightDimNumOrFn | None, real: Any) -> list[Any]:
  """``spec`` resolved against the tree ``real``: one entry (dims or None) per leaf."""
  resolved = MuonDimensionNumbers() if spec is None else (
      spec(real) if tree.is_function_of_params(spec) and not _is_dims(spec) else spec)
  entry = lambda x: x is None or _is_dims(x)  # noqa: E731
  try:
    spread = jax.tree.map(
        lambda d, sub: jax.tree.map(lambda _: _Entry(d), sub, is_leaf=tree.is_masked),
        resolved, real, is_leaf=entry)
  except (ValueError, TypeError):  # the whole spec and tree printed ran to 58,000 characters
    raise StructureError(prefix_error(resolved, real, stage, "tree of weight dimension numbers",
                                      is_leaf=entry)) from None
  return [e.dims for e in jax.tree.leaves(spread, is_leaf=lambda x: isinstance(x, _Entry))]


def _leaves_and_dims(stage: str, spec: WeightDimNumOrFn | None, values: Any
                     ) -> tuple[list[Any], list[Any], Any]:
  """The leaves of a tree (masked-out ones included), each one's dimension numbers, its treedef.

  The dimension numbers are resolved on the tree a masked wrapper hides
  leaves of, so a spec written for the params applies inside :func:`gradtx.masked`.
  """
  with unmasked_view(values) as real:
    dims = _dims_per_leaf(stage, spec, real)
  leaves, treedef = jax.tree.flatten(values, is_leaf=tree.is_masked)
  if len(leaves) != len(dims):
    raise StructureError(f"{stage}: {len(dims)} weight dimension numbers for "
                         f"{len(leaves)} leaves")
  return leaves, dims, treedef


def _dims_by_rank(params: Params, dims: Any, wanted: Callable[[int], bool]) -> Params:
  """``dims`` for each leaf whose rank is ``wanted``, None for the others."""
  return jax.tree.map(lambda x: dims if wanted(len(np.shape(x))) else None, params,
                      is_leaf=tree.is_masked)


def _matrices_2d(params: Params, dims: Any = MuonDimensionNumbers()) -> Params:
  """The default of muon and GaLore: ``dims`` for each 2-D leaf, None for the others."""
  return _dims_by_rank(params, dims, lambda ndim: ndim == 2)


class _Entry:
  """One leaf's dimension numbers, held so that tree maps do not descend into them."""
  __slots__ = ("dims",)

  def __init__(self, dims: MuonDimensionNumbers | None):
    self.dims = dims


def _map_matrices(stage: str, spec: WeightDimNumOrFn | None,
                  fn: Callable[[jax.Array, MuonDimensionNumbers | None], jax.Array],
                  updates: Any) -> Any:
  """``fn(leaf, dims)`` for every leaf, with the leaf's dimension numbers (None: not a matrix).

  Through :func:`gradtx.tree.map_leaves`: in packed mode ``fn`` runs batched
  over the leaves of one shape, and where leaves of one shape have different
  dimension numbers each leaf picks its own with :func:`jax.lax.switch`.
  """
  if isinstance(updates, Packed):
    layout = updates.layout
    leaves_dims = _dims_per_leaf(stage, spec, layout.template())
    shapes: list[tuple[int, ...] | None] = [tuple(s) for s in layout.shapes]
  else:
    leaves, leaves_dims, treedef = _leaves_and_dims(stage, spec, updates)
    shapes = [None if tree.is_masked(x) else tuple(np.shape(x)) for x in leaves]
  # Per shape, the distinct dimension numbers of its leaves; per leaf, the index of its own.
  options: dict[tuple[int, ...], list[Any]] = {}
  index = []
  for shape, dims in zip(shapes, leaves_dims):
    if shape is None:  # a masked-out leaf: not mapped
      index.append(0)
      continue
    choices = options.setdefault(shape, [])
    if dims not in choices:
      if dims is not None:
        _matrix_axes(stage, shape, dims)  # raise now, naming the leaf's shape
      choices.append(dims)
    index.append(choices.index(dims))

  def leaf(x, i):
    choices = options[tuple(x.shape)]
    if isinstance(i, int):
      return (fn(x, choices[i]),)
    if len(choices) == 1:
      return (fn(x, choices[0]),)
    return (jax.lax.switch(i, [functools.partial(fn, dims=d) for d in choices], x),)

  if isinstance(updates, Packed):
    chosen = PackedLeaves.from_leaves(layout, [jnp.asarray(i, jnp.int32) for i in index])
  else:
    chosen = jax.tree.unflatten(treedef, index)
  return tree.map_leaves(leaf, (True,), updates, chosen)[0]


def _as_base(base_optimizer: Any, stage: str) -> GradientTransformation:
  """A wrapper's base optimizer as a chain, so that its hyperparameters' names (``lr.learning_rate``)
  cannot clash with the wrapper's own; an optax transformation is wrapped as it is."""
  if isinstance(base_optimizer, GradientTransformation) and not isinstance(base_optimizer, Chain):
    return chain(base_optimizer)
  return as_transformation(base_optimizer, stage, "base_optimizer")


def _optional_decay(weight_decay: ScalarOrSchedule | None,
                    mask: Mask | None = None) -> dict[str, GradientTransformation]:
  """optax's optional weight decay, as the stages to put first in a chain.

  ``None``: no stage (optax's identity), so no decay is computed or held;
  a number (0 included) or a schedule: a ``decay`` stage that holds it, to be
  set by name later.
  """
  return {} if weight_decay is None else {"decay": add_decayed_weights(weight_decay, mask)}
