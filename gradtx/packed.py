"""Packed mode: many leaves held as one contiguous buffer per dtype.

Design note. An optimizer step is memory-bound elementwise work. On a tree of
a few big leaves a per-leaf step is as fast as the hardware allows, but on a
tree of many small leaves every leaf costs its own kernels and its own lines
of the compiled program, so the step and its compile time grow with the
number of leaves. Packed mode holds the parameters (and so the gradients and
every moment of every stage) as one 1-D buffer per dtype:

* a :class:`Layout` is the static map between the user's tree and the
  buffers: for each leaf its dtype group, offset and shape;
* a :class:`Packed` is a pytree whose children are the buffers (a dict from
  dtype name to a 1-D array) and whose static aux data is the layout.

Every gradtx transformation accepts a :class:`Packed` tree as it is: the
per-array math of a primitive runs on each buffer unchanged, so a packed
chain compiles to a handful of kernels whatever the number of leaves.
What depends on leaf boundaries is handled here, once:

* per-leaf reductions (:func:`gradtx.tree.block_sum_squares` and the other
  ``block_*`` helpers that clipping, trust ratios and block norms use) see a
  :class:`Packed` node and reduce each leaf's segment of the buffer
  (:meth:`Packed.block_map`);
* masks (:func:`gradtx.masked`, ``add_decayed_weights(mask=...)``) are
  evaluated on the user's tree and turned into an element mask of the
  buffers (:func:`masked_init`, :func:`masked_update`);
* rules that need each leaf's own shape (Adafactor's factored moments of a
  matrix, SM3's per-axis accumulators, a flag or a random key per leaf) go
  through :func:`gradtx.tree.map_leaves`: on a :class:`Packed` node it runs
  the per-leaf rule batched over each run of equally shaped leaves
  (:meth:`Packed.map_runs`), and per-leaf results that are not shaped like
  the leaf are held as a :class:`PackedLeaves`, one stacked array per run;
* :meth:`Layout.unpack` views a buffer, or a stage's packed moments, as the
  user's tree; :meth:`Layout.unpack_state` does so for a whole state, which
  is what users read, save and edit, and :meth:`Layout.pack_state` packs a
  tree-mode state again, so a run moves between the modes.

Buffer order. Inside a dtype group the leaves are stored sorted by shape
(stably), so leaves of equal shape are adjacent: a per-leaf reduction is then
one batched reduction per distinct shape rather than one per leaf.

Every rule computes on a packed tree what it computes on the tree.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator, Mapping, cast

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx._flax_serialization import register_with_flax, serializable
from gradtx.errors import ArgumentTypeError, StructureError

__all__ = ["Layout", "Packed", "PackedLeaves", "masked_init", "masked_update"]

PyTree = Any


@dataclasses.dataclass(frozen=True)
class _Run:
  """``count`` adjacent leaves of one ``shape`` inside a group's buffer."""
  shape: tuple[int, ...]
  count: int

  @property
  def leaf_size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def size(self) -> int:
    return self.count * self.leaf_size


@dataclasses.dataclass(frozen=True)
class _Group:
  """One dtype's buffer: which leaves it holds, in buffer order, and its runs of shapes."""
  dtype: str
  leaves: tuple[int, ...]          # indices into the flattened tree, in buffer order
  shapes: tuple[tuple[int, ...], ...]  # the same leaves' shapes, in buffer order
  runs: tuple[_Run, ...]

  @property
  def size(self) -> int:
    return sum(r.size for r in self.runs)

  @property
  def splits(self) -> list[int]:
    """Where each leaf's segment ends, for :func:`jax.numpy.split` (all but the last)."""
    ends = np.cumsum([int(np.prod(s, dtype=np.int64)) for s in self.shapes])
    return [int(e) for e in ends[:-1]]

  def run_starts(self) -> list[tuple["_Run", int, int]]:
    """Each run with the buffer positions of its first leaf and of its first element."""
    out, first, start = [], 0, 0
    for run in self.runs:
      out.append((run, first, start))
      first, start = first + run.count, start + run.size
    return out


# Up to this many runs of shapes in a buffer, Layout.broadcast_leaves gathers; beyond, it
# writes in place (measured there).
_GATHER_MAX_RUNS = 12


def _gathered(group: _Group, per_leaf: jax.Array) -> jax.Array:
  """Each element takes its leaf's value, the leaf found from the element's position."""
  element = jax.lax.iota(jnp.int32, group.size)
  leaf = jnp.zeros_like(element)
  for run, first, start in group.run_starts():  # one select per run, fused by XLA
    leaf = jnp.where(element >= start, first + (element - start) // run.leaf_size, leaf)
  return jnp.take(per_leaf, leaf, mode="clip", indices_are_sorted=True)


def _run_spread(run: _Run, first: int, per_leaf: jax.Array) -> jax.Array:
  """The values of ``run``'s leaves (from leaf ``first``), each over its leaf's elements."""
  values = jax.lax.slice_in_dim(per_leaf, first, first + run.count)
  return jnp.broadcast_to(values[:, None], (run.count, run.leaf_size)).reshape(run.size)


def _written(group: _Group, per_leaf: jax.Array) -> jax.Array:
  """Each run's values broadcast and written into a new buffer, in place."""
  spread = jnp.zeros((group.size,), per_leaf.dtype)
  for run, first, start in group.run_starts():
    spread = jax.lax.dynamic_update_slice(spread, _run_spread(run, first, per_leaf), (start,))
  return spread


def _spread(group: _Group, per_leaf: jax.Array) -> jax.Array:
  """One value per leaf of ``group`` spread over its elements (see Layout.broadcast_leaves)."""
  if len(group.runs) == 1:
    return _run_spread(group.runs[0], 0, per_leaf)
  spread = _gathered if len(group.runs) <= _GATHER_MAX_RUNS else _written
  return spread(group, per_leaf)


def _shape_and_dtype(path: tuple, leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
  """A leaf's shape, and the dtype :meth:`Layout.pack` gives it (``jnp.asarray``'s)."""
  shape = tuple(int(d) for d in np.shape(leaf))
  dtype = getattr(leaf, "dtype", None)
  try:
    dtype = jnp.result_type(leaf) if dtype is None else dtype
  except TypeError:  # numpy's "data type 'x' not understood", for a string leaf
    raise _not_an_array("from_tree", path, leaf) from None
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    raise StructureError(
        f"Layout.from_tree: the leaf at key path {tree.keystr(path)} is a PRNG key ({dtype}), "
        f"which no buffer holds and no gradient steps: {tree.PACK_FLOAT_LEAVES}")
  if np.dtype(dtype).kind in "USO":  # an array of strings or objects: no buffer "str32"
    raise _not_an_array("from_tree", path, leaf)
  # Canonical, as pack makes it: numpy's float64 is float32 without jax_enable_x64.
  return shape, np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _not_an_array(method: str, path: tuple, leaf: Any) -> StructureError:
  """The error of a :class:`Layout` method given a leaf no buffer can hold (a string, an
  object): numpy's "data type 'x' not understood" or jax's "not a valid JAX array type"
  named neither the method nor the leaf."""
  return StructureError(
      f"Layout.{method}: the leaf at key path {tree.keystr(path)} is not an array of numbers "
      f"({type(leaf).__name__}: {leaf!r:.40}): {tree.PACK_FLOAT_LEAVES}")


_ABSENT = object()  # no leaf at a key path (see Layout._check_fits)


def _is_packed_node(x: Any) -> bool:
  return isinstance(x, (Packed, PackedLeaves))


def _packed_nodes(state: PyTree) -> list[tuple[tuple, Any]]:
  """The key paths and nodes of every :class:`Packed` and :class:`PackedLeaves` in ``state``."""
  pairs = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_packed_node)[0]
  return [(path, x) for path, x in pairs if _is_packed_node(x)]


def _leaves_by_key_path(state: PyTree) -> dict[tuple, Any]:
  """Every leaf of ``state`` by its key path, a MaskedNode and a packed node as leaves."""
  pairs = jax.tree_util.tree_flatten_with_path(
      state, is_leaf=lambda x: tree.is_masked(x) or _is_packed_node(x))[0]
  return {tuple(path): x for path, x in pairs}


def _facts(x: Any) -> tuple[tuple[int, ...], Any]:
  """A leaf's shape and canonical dtype (``None`` for a Python number)."""
  dtype = getattr(x, "dtype", None)
  if dtype is not None:
    dtype = jax.dtypes.canonicalize_dtype(dtype, allow_extended_dtype=True)
  return tuple(x.shape if hasattr(x, "shape") else np.shape(x)), dtype


def _as_tree_mode_leaf(like: Any, view: Any) -> Any:
  """The leaf tree mode holds where ``like`` (a tree-mode state) holds ``like``: its
  MaskedNode, the value of a spread per-leaf scalar, or the packed state's ``view``."""
  if tree.is_masked(like):
    return like
  if np.shape(like) == () and np.shape(view) != ():
    # Every entry of the leaf holds the value; an empty leaf holds none (like's is kept).
    return jnp.ravel(view)[0] if np.size(view) else like
  return view


def _describe(x: Any) -> str:
  """A leaf in words for a message: ``float32[2, 3]``."""
  if x is _ABSENT:
    return "no leaf"
  if tree.is_masked(x):
    return "no array (a leaf a mask leaves out)"
  shape, dtype = _facts(x)
  return f"{dtype.name if dtype is not None else type(x).__name__}{list(shape)}"


class Layout:
  """The static map between a tree of arrays and one 1-D buffer per dtype.

  Build it once from the parameters (or from ``jax.eval_shape`` of them); it
  is hashable and compares by tree structure, shapes and dtypes, so it can
  be the static aux data of a :class:`Packed` pytree.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> params = {"b": jnp.zeros(2), "w": jnp.ones((2, 3))}
    >>> layout = gtx.packed.Layout.from_tree(params)
    >>> layout
    Layout(2 leaves, float32: 8)
    >>> flat = layout.pack(params)
    >>> flat["float32"]
    Array([0., 0., 1., 1., 1., 1., 1., 1.], dtype=float32)
    >>> layout.unpack(flat)["w"].shape
    (2, 3)
  """

  __slots__ = ("treedef", "shapes", "dtypes", "groups", "_key")

  def __init__(self, treedef: jax.tree_util.PyTreeDef, shapes: tuple[tuple[int, ...], ...],
               dtypes: tuple[str, ...]):
    self.treedef = treedef
    self.shapes = shapes
    self.dtypes = dtypes
    groups = []
    for dtype in sorted(set(dtypes)):
      members = [i for i, d in enumerate(dtypes) if d == dtype]
      # Sorted by shape, stably, so equal shapes are adjacent (see the design note).
      members.sort(key=lambda i: (len(shapes[i]), shapes[i]))
      runs: list[_Run] = []
      for i in members:
        if runs and runs[-1].shape == shapes[i]:
          runs[-1] = _Run(shapes[i], runs[-1].count + 1)
        else:
          runs.append(_Run(shapes[i], 1))
      groups.append(_Group(dtype, tuple(members), tuple(shapes[i] for i in members),
                           tuple(runs)))
    self.groups = tuple(groups)
    self._key = (treedef, shapes, dtypes)

  @classmethod
  def from_tree(cls, params: PyTree) -> "Layout":
    """The layout of ``params``: its structure, and each leaf's shape and dtype.

    Leaves may be arrays or anything with ``shape`` and ``dtype``
    (``jax.ShapeDtypeStruct``), so ``Layout.from_tree(jax.eval_shape(init, key))``
    needs no memory.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not leaves:
      raise StructureError("Layout.from_tree: the tree has no leaves to pack")
    facts = [_shape_and_dtype(path, leaf) for path, leaf in leaves]
    return cls(treedef, tuple(s for s, _ in facts), tuple(d.name for _, d in facts))

  # -- identity ---------------------------------------------------------------

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Layout) and self._key == other._key

  def __hash__(self) -> int:
    return hash(self._key)

  def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
    # Its arguments: __slots__ alone did not pickle at protocols 0 and 1, nor does a
    # PyTreeDef, whose structure goes there as a tree of leaf indices.
    if isinstance(protocol, int) and protocol < 2:
      indices = jax.tree.unflatten(self.treedef, range(len(self.shapes)))
      return _layout_of, (indices, self.shapes, self.dtypes)
    return Layout, (self.treedef, self.shapes, self.dtypes)

  def __repr__(self) -> str:
    sizes = ", ".join(f"{g.dtype}: {g.size}" for g in self.groups)
    return f"Layout({len(self.shapes)} leaves, {sizes})"

  @property
  def group_names(self) -> tuple[str, ...]:
    """The buffers' names (dtype names), in the order :class:`Packed` flattens them."""
    return tuple(g.dtype for g in self.groups)

  def difference(self, other: "Layout", name: str, other_name: str) -> str:
    """Where ``other`` differs from this layout, in words, for error messages.

    Two layouts of one size print alike (``Layout(2 leaves, float32: 9)``):
    this names the first key path whose leaf differs in shape or dtype, or
    that only one of the trees has (``name`` names this layout's tree,
    ``other_name`` the other's).
    """
    if not isinstance(other, Layout):  # else "'int' object has no attribute 'template'"
      raise ArgumentTypeError.about("Layout.difference", "other", other,
                                    f"must be a Layout, got {type(other).__name__}: {other!r:.40}")
    mine = tree._leaves_by_path(self.template())
    theirs = tree._leaves_by_path(other.template())
    for key in [*mine, *(k for k in theirs if k not in mine)]:
      a, b = mine.get(key), theirs.get(key)
      if a is None or b is None:
        return f"key path {key} is in {name if b is None else other_name} only"
      if (a.shape, a.dtype) != (b.shape, b.dtype):
        return (f"at key path {key} the leaf is {a.dtype.name}{list(a.shape)} in {name}, "
                f"{b.dtype.name}{list(b.shape)} in {other_name}")
    return tree.containers_differ(self.template(), other.template(), name, other_name)

  def template(self) -> PyTree:
    """The user's tree with a ``jax.ShapeDtypeStruct`` for every leaf."""
    leaves = [jax.ShapeDtypeStruct(s, d) for s, d in zip(self.shapes, self.dtypes)]
    return jax.tree.unflatten(self.treedef, leaves)

  # -- packing and viewing ------------------------------------------------------

  def pack(self, params: PyTree) -> "Packed":
    """The buffers holding ``params``' leaves (a copy, made once, outside the step).

    Raises:
      StructureError: ``params`` differs from the layout in structure, shape or
        dtype; the message names the key path.
    """
    register_with_flax()  # packed params may be saved with flax: see gradtx._flax_serialization
    tree.check_structure(self.template(), params, "the layout", "params")
    leaves = self.treedef.flatten_up_to(params)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    buffers = {}
    for group in self.groups:
      parts = []
      for i in group.leaves:
        try:
          leaf = jnp.asarray(leaves[i])
        except TypeError:  # jax's "Value 'x' with dtype <U1 is not a valid JAX array type"
          raise _not_an_array("pack", paths[i], leaves[i]) from None
        if leaf.dtype.name != group.dtype:
          raise StructureError(
              f"Layout.pack: params at key path {tree.keystr(paths[i])} is {leaf.dtype.name}; the "
              f"layout holds it as {group.dtype}. Build the layout from these params")
        parts.append(jnp.ravel(leaf))
      buffers[group.dtype] = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    return Packed(buffers, self)

  def _check(self, packed: Any, what: str) -> "Packed":
    if not isinstance(packed, Packed):
      raise StructureError(f"Layout.{what}: expected a Packed tree, got {type(packed).__name__}")
    if packed.layout != self:
      raise StructureError(f"Layout.{what}: the Packed tree was made by another layout: "
                           f"{packed.layout.difference(self, 'it', 'this layout')}")
    return packed

  def unpack(self, packed: "Packed") -> PyTree:
    """The user's tree, each leaf a slice of its buffer reshaped to the leaf's shape.

    Works for any :class:`Packed` of this layout: parameters, gradients, or a
    stage's moments (``layout.unpack(state["adam"].mu)``), whatever the
    buffers' dtype; buffers with leading axes (L-BFGS's history of each
    leaf) give leaves with the same leading axes. Inside a loss function it
    is how the model sees packed parameters; its gradient is a
    concatenation, so the gradient arrives packed.
    """
    self._check(packed, "unpack")
    leaves: list[Any] = [None] * len(self.shapes)
    for group in self.groups:
      buffer = packed.buffers[group.dtype]
      # Leading axes (a stage keeping a history of each leaf, a vmapped state) stay leading.
      lead = buffer.shape[:-1]
      pieces = jnp.split(buffer, group.splits, axis=-1) if len(group.leaves) > 1 else [buffer]
      for i, shape, piece in zip(group.leaves, group.shapes, pieces):
        leaves[i] = piece.reshape(lead + shape)
    return jax.tree.unflatten(self.treedef, leaves)

  def unpack_state(self, state: PyTree, like: PyTree | None = None) -> PyTree:
    """``state`` with every :class:`Packed` of this layout viewed as the user's tree.

    Without ``like`` this is the readable form of a packed optimizer state
    (every stage's moments keyed like the params), for inspection and saving:
    a stage under a mask or a partition shows entries for every leaf. With
    ``like``, a tree-mode state of the same optimizer (``tx.init(params)``),
    it is the state tree mode runs on: a :class:`~gradtx.tree.MaskedNode`
    wherever ``like`` has one (a leaf a mask leaves out), a scalar where
    ``like`` holds one per leaf (packed mode spreads it over the leaf), and
    every other leaf (step counts, hyperparameters, moments) taken from
    ``state``. It is the inverse of :meth:`pack_state`.

    Args:
      state: an optimizer state holding :class:`Packed` trees of this layout
        (other leaves pass through).
      like: optional, a tree-mode state of the optimizer that made ``state``;
        only its structure, shapes and dtypes are read.

    Raises:
      StructureError: with ``like``, ``state`` does not fit it (another chain,
        another layout, other params); the message names the key path.

    Example: a packed run handed to tree mode.

      >>> import gradtx as gtx
      >>> import jax.numpy as jnp
      >>> params = {"b": jnp.zeros(2), "w": jnp.ones((2, 3))}
      >>> layout = gtx.packed.Layout.from_tree(params)
      >>> tx = gtx.adam(0.1)
      >>> packed_state = tx.init(layout.pack(params))
      >>> state = layout.unpack_state(packed_state, like=tx.init(params))
      >>> state["adam"].mu["w"].shape
      (2, 3)
      >>> updates, state = tx.update(params, state, params)   # tree mode from here on
    """
    def view(x):
      return x.unpack() if _is_packed_node(x) and x.layout == self else x
    out = jax.tree.map(view, state, is_leaf=_is_packed_node)
    if like is None:
      return out
    packed_like = _packed_nodes(like)
    if packed_like:
      raise StructureError(
          f"Layout.unpack_state: like holds a packed tree at key path "
          f"{tree.keystr(packed_like[0][0])}; pass a tree-mode state of the optimizer, "
          "like=tx.init(params)")
    self._check_fits(out, like, _packed_nodes(state), "unpack_state", "state", "like",
                     "like=tx.init(params)")
    try:
      return jax.tree.map(_as_tree_mode_leaf, like, out, is_leaf=tree.is_masked)
    except (ValueError, TypeError) as error:
      raise StructureError(f"Layout.unpack_state: state and like differ in their containers "
                           f"({error}); pass like=tx.init(params) of the optimizer that made "
                           "state") from None

  def pack_state(self, state: PyTree, like: PyTree) -> PyTree:
    """A tree-mode optimizer state as the packed state of this layout: the inverse of
    :meth:`unpack_state`.

    A run trained in tree mode (or restored from a tree-mode checkpoint, or a
    state read with :meth:`unpack_state` and edited) continues in packed mode
    with its moments, step counts and hyperparameters. ``like`` is a packed
    state of the same optimizer (``tx.init(layout.pack(params))``): it says
    which parts of the state are packed (a :class:`Packed` buffer per dtype,
    or a :class:`PackedLeaves` for per-leaf statistics such as Adafactor's);
    their values, and every other leaf (step counts, hyperparameters, keys),
    come from ``state``. A leaf a mask or partition leaves out of a stage
    (a :class:`~gradtx.tree.MaskedNode` in tree mode) keeps ``like``'s
    entries, as ``init`` made them: packed mode never uses them. A scalar
    per leaf (NovoGrad's second moment) is spread over the leaf's entries,
    as packed mode holds it. A state that is packed already passes through.

    Args:
      state: a tree-mode state of the optimizer (``tx.init(params)``, trained
        or restored), or the view :meth:`unpack_state` gives of a packed one.
      like: a packed state of the same optimizer for this layout; only its
        structure, shapes and dtypes are read, and the entries of masked-out
        leaves.

    Returns:
      A state with ``like``'s structure that ``tx.update`` takes with packed
      gradients.

    Raises:
      StructureError: ``state`` does not fit ``like`` (another chain, a stage
        more or less, other params' shapes or dtypes) or ``like`` is not a
        packed state of this layout; the message names the key path and what
        differs.

    Example: two tree-mode steps, then packed mode.

      >>> import gradtx as gtx
      >>> import jax.numpy as jnp
      >>> params = {"b": jnp.zeros(2), "w": jnp.ones((2, 3))}
      >>> tx = gtx.adam(0.1)
      >>> state = tx.init(params)
      >>> for _ in range(2):
      ...   updates, state = tx.update(params, state, params)
      ...   params = gtx.apply_updates(params, updates)
      >>> layout = gtx.packed.Layout.from_tree(params)
      >>> flat = layout.pack(params)
      >>> packed_state = layout.pack_state(state, like=tx.init(flat))
      >>> packed_state["adam"].count
      Array(2, dtype=int32)
      >>> updates, packed_state = tx.update(flat, packed_state, flat)   # packed from here on
    """
    packed_like = _packed_nodes(like)
    for path, node in packed_like:
      if node.layout != self:
        raise StructureError(
            f"Layout.pack_state: like holds a tree packed with another layout at key path "
            f"{tree.keystr(path)}: {node.layout.difference(self, 'like', 'this layout')}; "
            "pass like=tx.init(layout.pack(params)) for this layout")
    source = self.unpack_state(state)
    self._check_fits(source, self.unpack_state(like), packed_like, "pack_state", "state",
                     "like", "like=tx.init(layout.pack(params))")
    like_leaves, like_def = jax.tree_util.tree_flatten_with_path(like, is_leaf=_is_packed_node)
    try:
      parts = like_def.flatten_up_to(source)  # type: ignore[attr-defined]  # jax's PyTreeDef is untyped
    except (ValueError, TypeError) as error:
      raise StructureError(f"Layout.pack_state: state and like differ in their containers "
                           f"({error}); pass a state of the optimizer that made like") from None
    out = [self._pack_like(mine, theirs) if _is_packed_node(mine) else theirs
           for (_, mine), theirs in zip(like_leaves, parts)]
    return jax.tree.unflatten(like_def, out)

  def _pack_like(self, like: "Packed | PackedLeaves", values: PyTree) -> "Packed | PackedLeaves":
    """``values`` (the user's tree, a MaskedNode for a leaf left out) packed as ``like``
    is, a left-out leaf taking ``like``'s entries."""
    # A MaskedNode as None: it is then a leaf for the layout's treedef, or its None node
    # where the params hold None (checked by _check_fits).
    values = jax.tree.map(lambda x: None if tree.is_masked(x) else x, values,
                          is_leaf=tree.is_masked)
    views = self.treedef.flatten_up_to(like.unpack())
    leaves = [mine if theirs is None else theirs
              for mine, theirs in zip(views, self.treedef.flatten_up_to(values))]
    if isinstance(like, PackedLeaves):
      return PackedLeaves.from_leaves(self, leaves)
    # A scalar per leaf (tree.block_map's in tree mode) spread over the leaf, as packed mode has it.
    leaves = [jnp.broadcast_to(x, np.shape(v)) if np.shape(x) == () else x
              for x, v in zip(leaves, views)]
    buffers = {}
    for group in self.groups:
      lead = like.buffers[group.dtype].shape[:-1]  # a history per leaf (L-BFGS) stays leading
      parts = [jnp.reshape(jnp.asarray(leaves[i]), lead + (-1,)) for i in group.leaves]
      buffers[group.dtype] = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
    return Packed(buffers, self)

  def _check_fits(self, source: PyTree, target: PyTree, packed: list[tuple[tuple, Any]],
                  what: str, source_name: str, target_name: str, remedy: str) -> None:
    """Raises :class:`StructureError` at the first key path where ``source`` and ``target``
    (both as the user's trees) differ in leaves, shapes or dtypes.

    A :class:`~gradtx.tree.MaskedNode` on one side fits a MaskedNode on the other, and,
    inside one of the ``packed`` subtrees (the packed side's :class:`Packed` and
    :class:`PackedLeaves` trees, by key path), any leaf or none: packed mode holds entries
    for the leaves a mask leaves out. Inside a :class:`Packed`, a scalar on one side fits
    an array of its dtype on the other: a value per leaf, which packed mode spreads.
    """
    def region(path: tuple) -> Any:
      return next((node for where, node in packed if path[:len(where)] == where), None)

    def fail(detail: str) -> StructureError:
      return StructureError(f"Layout.{what}: {detail}; pass a {source_name} of the optimizer "
                            f"and params that made {target_name} ({remedy})")

    theirs, mine = _leaves_by_key_path(source), _leaves_by_key_path(target)
    for path, a in theirs.items():  # left packed by unpack_state: another layout's
      if _is_packed_node(a):
        raise fail(f"{source_name} holds a tree packed with another layout at key path "
                   f"{tree.keystr(path)}: {a.layout.difference(self, source_name, 'this layout')}")
    for path in [*mine, *(p for p in theirs if p not in mine)]:
      a, b = theirs.get(path, _ABSENT), mine.get(path, _ABSENT)
      key = tree.keystr(path)
      if tree.is_masked(a) or tree.is_masked(b):
        if (tree.is_masked(a) and tree.is_masked(b)) or region(path) is not None:
          continue
        raise fail(f"at key path {key} {source_name} holds {_describe(a)}, {target_name} "
                   f"holds {_describe(b)}")
      if a is _ABSENT or b is _ABSENT:
        raise fail(f"key path {key} is in {source_name if b is _ABSENT else target_name} only")
      (shape_a, dtype_a), (shape_b, dtype_b) = _facts(a), _facts(b)
      spread = () in (shape_a, shape_b) and isinstance(region(path), Packed)
      # A Python number (a hyperparameter) has no dtype to compare.
      if (shape_a != shape_b and not spread
          or None not in (dtype_a, dtype_b) and dtype_a != dtype_b):
        raise fail(f"at key path {key} the leaf is {_describe(a)} in {source_name}, "
                   f"{_describe(b)} in {target_name}")

  # -- per-leaf values as elements --------------------------------------------

  def broadcast_leaves(self, values: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Per group, one value per leaf (buffer order) spread over that leaf's elements.

    Not a concatenation of per-run broadcasts: XLA:CPU's fusion emitter
    (jaxlib 0.10.2, seen on an AVX-512 host) miscomputes that when it is fused
    into a compare-and-select, as the trust ratio's guard is, giving a leaf its
    run neighbour's value (test_packed's test_spread_values_survive_xla_fusion).
    With few runs, each element gathers its leaf's value at an index computed
    from its position, one select per run, which XLA fuses into the consumer;
    with more, the cost of those selects grows with the runs, and each run's
    piece is written into the buffer in place instead, one pass whatever their
    number. Packed lamb, median step: on the GPT-2 tree (9 runs) 76 ms gathered
    against 117 ms written; on 2 M parameters in 1024 leaves, gathered against
    written, 9 runs 9.1 / 8.0 ms, 16 runs 12.5 / 5.7 ms, 256 runs 56 / 21 ms.
    """
    must = f"map each of the layout's buffers {list(self.group_names)} to one value per leaf"
    try:
      return {group.dtype: _spread(group, jnp.asarray(values[group.dtype]))
              for group in self.groups}
    except KeyError:  # Python's bare KeyError: 'float32'
      missing = [name for name in self.group_names if name not in values]
      if not missing:
        raise
      raise StructureError(f"Layout.broadcast_leaves: values has no entry for the {missing[0]} "
                           f"buffer: it must {must}, got keys {list(values)}") from None
    except (TypeError, IndexError):  # jax's "JAX does not support string indexing"
      if isinstance(values, Mapping):
        raise
      raise StructureError(f"Layout.broadcast_leaves: values must {must}, got "
                           f"{type(values).__name__}") from None

  def element_mask(self, mask: PyTree) -> dict[str, bool | jax.Array]:
    """Per group, whether each element is masked in: ``True``, ``False`` or a bool buffer.

    Args:
      mask: a tree of Python bools with the params' structure, or a prefix of
        it (a bool for a whole subtree), as :func:`gradtx.masked` takes.
    """
    bools = self.leaf_mask(mask)
    out: dict[str, bool | jax.Array] = {}
    for group in self.groups:
      keep = [bools[i] for i in group.leaves]
      if all(keep) or not any(keep):
        out[group.dtype] = keep[0]
      else:
        out[group.dtype] = _spread(group, jnp.asarray(keep))
    return out

  def leaf_mask(self, mask: PyTree) -> tuple[bool, ...]:
    """Whether each leaf is masked in, in the tree's leaf order (``mask`` as in
    :meth:`element_mask`)."""
    # The checks gtx.masked makes (a prefix of the params, a bool per leaf): bool(3) and
    # bool(a function) were True, and every leaf was masked in without a word.
    from gradtx.wrappers._masking import _mask_per_leaf  # pylint: disable=import-outside-toplevel
    full = _mask_per_leaf(mask, self.template(), "Layout.leaf_mask")
    bools = [bool(m) for m in self.treedef.flatten_up_to(full)]
    return tuple(bools)


def _layout_of(indices: PyTree, shapes: tuple[tuple[int, ...], ...],
               dtypes: tuple[str, ...]) -> Layout:
  """A :class:`Layout` pickled at protocol 0 or 1, its structure that of ``indices``."""
  return Layout(jax.tree.structure(indices), shapes, dtypes)


@serializable
@jax.tree_util.register_pytree_with_keys_class
class Packed(Mapping[str, jax.Array]):
  """A tree held as one 1-D buffer per dtype: ``{dtype name: buffer}`` plus its :class:`Layout`.

  A pytree whose children are the buffers and whose static aux data is the
  layout, so gradients, optimizer states and updates of a packed tree are
  packed too, and ``jax.jit``, ``jax.grad`` and every gradtx transformation
  take it as they are. ``packed.unpack()`` (or ``layout.unpack(packed)``)
  views it as the user's tree.
  """

  __slots__ = ("buffers", "layout")

  def __init__(self, buffers: Mapping[str, Any], layout: Layout):
    self.buffers = dict(buffers)
    self.layout = layout

  def __getitem__(self, name: str) -> jax.Array:
    return self.buffers[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self.buffers)

  def __len__(self) -> int:
    return len(self.buffers)

  def __repr__(self) -> str:
    inner = ", ".join(f"{k}: {getattr(v, 'dtype', '?')}[{np.size(v) if hasattr(v, 'shape') else '?'}]"
                      for k, v in self.buffers.items())
    return f"Packed({inner}; {self.layout!r})"

  def __eq__(self, other: object) -> bool:
    return self is other

  __hash__ = object.__hash__

  def tree_flatten_with_keys(self):
    names = self.layout.group_names
    return [(jax.tree_util.DictKey(n), self.buffers[n]) for n in names], self.layout

  def tree_flatten(self):
    return [self.buffers[n] for n in self.layout.group_names], self.layout

  @classmethod
  def tree_unflatten(cls, layout, children):
    return cls(dict(zip(layout.group_names, children)), layout)

  def unpack(self) -> PyTree:
    """The user's tree (see :meth:`Layout.unpack`)."""
    return self.layout.unpack(self)

  def run_pieces(self, group: "_Group") -> list[jax.Array]:
    """``group``'s buffer cut into its runs, each shaped ``(count, *leaf shape)``."""
    buffer = self.buffers[group.dtype]
    lead = buffer.shape[:-1]
    sizes = [r.size for r in group.runs]
    pieces = (jnp.split(buffer, np.cumsum(sizes)[:-1].tolist(), axis=-1) if len(sizes) > 1
              else [buffer])
    return [piece.reshape(lead + (run.count, *run.shape))
            for run, piece in zip(group.runs, pieces)]

  def map_runs(self, fn: Callable[..., tuple], shaped: tuple[bool, ...],
               *rest: "Packed | PackedLeaves") -> tuple["Packed | PackedLeaves", ...]:
    """``fn`` of each leaf, batched over each run of equally shaped leaves.

    ``fn`` takes this tree's leaf and the same leaf of each of ``rest`` (a
    :class:`Packed` gives its segment reshaped to the leaf's shape, a
    :class:`PackedLeaves` its per-leaf value) and returns ``len(shaped)``
    outputs. An output marked ``shaped`` must have the leaf's shape and comes
    back as a :class:`Packed`; the others come back as a :class:`PackedLeaves`.
    This is how :func:`gradtx.tree.map_leaves` answers for a packed tree.
    """
    from gradtx.numerics import shared_scalars  # numerics builds on tree, which builds on this
    for other in rest:
      if other.layout != self.layout:
        raise StructureError(f"map_runs: a tree of another layout: "
                             f"{other.layout.difference(self.layout, 'it', 'this tree')}")
    outs: list[dict[str, list]] = [{} for _ in shaped]
    for group in self.layout.groups:
      mine = self.run_pieces(group)
      theirs = [o.run_pieces(group) if isinstance(o, Packed) else o.runs[group.dtype]
                for o in rest]
      for out in outs:
        out[group.dtype] = []
      for r, run in enumerate(group.runs):
        # A fresh cache per batched trace: shared scalars stay within one trace.
        with shared_scalars():
          results = (jax.vmap(fn) if run.count > 1 else _one_leaf(fn))(
              mine[r], *(t[r] for t in theirs))
        if len(results) != len(shaped):
          raise StructureError(f"map_runs: {fn} returned {len(results)} outputs, "
                               f"expected {len(shaped)}")
        for out, is_shaped, x in zip(outs, shaped, results):
          if is_shaped:
            if x.shape != (run.count, *run.shape):
              raise StructureError(f"map_runs: output of shape {x.shape[1:]} for leaves of "
                                   f"shape {run.shape}; it is marked shaped like the leaf")
            x = x.reshape(run.size)
          out[group.dtype].append(x)
    trees: list[Packed | PackedLeaves] = []
    for out, is_shaped in zip(outs, shaped):
      if is_shaped:
        trees.append(Packed({k: v[0] if len(v) == 1 else jnp.concatenate(v)
                             for k, v in out.items()}, self.layout))
      else:
        trees.append(PackedLeaves({k: tuple(v) for k, v in out.items()}, self.layout))
    return tuple(trees)

  def block_map(self, fn: Callable[[jax.Array], jax.Array]) -> "Packed":
    """Per leaf, ``fn(leaf)`` (a scalar), spread over that leaf's elements.

    ``fn`` sees each leaf's segment reshaped to the leaf's shape, batched
    over the leaves of one shape with :func:`jax.vmap`, so it computes what
    it computes on the leaf in tree mode. This is how the ``block_*``
    reductions of :mod:`gradtx.tree` answer for a packed tree.
    """
    def scalar(leaf):
      out = fn(leaf)
      if jnp.shape(out) != ():
        raise StructureError(f"block_map: {fn} must return a scalar per leaf; got shape "
                             f"{jnp.shape(out)} for leaves of shape {leaf.shape}")
      return (out,)

    per_leaf, = self.map_runs(scalar, (False,))  # not shaped: a PackedLeaves
    values = {name: runs[0] if len(runs) == 1 else jnp.concatenate(runs)
              for name, runs in cast("PackedLeaves", per_leaf).runs.items()}
    return Packed(self.layout.broadcast_leaves(values), self.layout)


def _one_leaf(fn: Callable[..., tuple]) -> Callable[..., tuple]:
  """``jax.vmap(fn)`` for a run of one leaf: ``fn`` of that leaf, with the run's axis added.

  The same values as the vmap (``fn`` sees the same leaf); it spares the batched trace,
  which compiles slower: a vmapped ``jax.random.normal`` takes 2.5x as long to compile
  as the plain one on XLA:CPU (measured, jaxlib 0.10.2), and most runs hold one leaf.
  """
  def one(*args: Any) -> tuple:
    results = fn(*jax.tree.map(lambda a: a[0], args))
    return type(results)(jax.tree.map(lambda x: jnp.expand_dims(x, 0), y) for y in results)
  return one


@serializable
@jax.tree_util.register_pytree_with_keys_class
class PackedLeaves:
  """Per-leaf values of a packed tree that are not shaped like the leaves.

  Adafactor's row and column statistics, SM3's per-axis accumulators, a flag
  per leaf: for each dtype group, one value per run of equally shaped leaves,
  stacked on a leading axis of the run's length (any pytree of arrays).
  :meth:`unpack` gives the user's tree with each leaf's own value, as tree
  mode holds it. Made by :meth:`Packed.map_runs`.
  """

  __slots__ = ("runs", "layout")

  def __init__(self, runs: Mapping[str, tuple[Any, ...]], layout: Layout):
    self.runs = {k: tuple(v) for k, v in runs.items()}
    self.layout = layout

  def __repr__(self) -> str:
    return f"PackedLeaves({self.layout!r})"

  def tree_flatten_with_keys(self):
    children = [(jax.tree_util.DictKey(f"{g.dtype}:{'x'.join(map(str, run.shape)) or 'scalar'}"),
                 value)
                for g in self.layout.groups for run, value in zip(g.runs, self.runs[g.dtype])]
    return children, self.layout

  def tree_flatten(self):
    return [v for g in self.layout.groups for v in self.runs[g.dtype]], self.layout

  @classmethod
  def tree_unflatten(cls, layout, children):
    runs, start = {}, 0
    for group in layout.groups:
      runs[group.dtype] = tuple(children[start:start + len(group.runs)])
      start += len(group.runs)
    return cls(runs, layout)

  @classmethod
  def from_leaves(cls, layout: Layout, values: list[Any]) -> "PackedLeaves":
    """One value per leaf, in the user's tree order, held per run (stacked)."""
    if len(values) != len(layout.shapes):
      raise StructureError(f"PackedLeaves.from_leaves: {len(values)} values for "
                           f"{len(layout.shapes)} leaves")
    runs = {}
    for group in layout.groups:
      per_run, start = [], 0
      for run in group.runs:
        members = group.leaves[start:start + run.count]
        start += run.count
        per_run.append(jax.tree.map(lambda *xs: jnp.stack(xs), *(values[i] for i in members)))
      runs[group.dtype] = tuple(per_run)
    return cls(runs, layout)

  def unpack(self) -> PyTree:
    """The user's tree, each leaf holding its own value."""
    leaves: list[Any] = [None] * len(self.layout.shapes)
    for group in self.layout.groups:
      i = 0
      for run, value in zip(group.runs, self.runs[group.dtype]):
        for k in range(run.count):
          leaves[group.leaves[i]] = jax.tree.map(lambda a, k=k: a[k], value)
          i += 1
    return jax.tree.unflatten(self.layout.treedef, leaves)


def _select(keep: Mapping[str, bool | jax.Array], a: Packed, b: Packed | float) -> Packed:
  """Per buffer, ``a`` where ``keep`` else ``b`` (a Packed or a number)."""
  out = {}
  for name, x in a.buffers.items():
    other = b.buffers[name] if isinstance(b, Packed) else jnp.zeros((), x.dtype)
    k = keep[name]
    out[name] = (x if k else jnp.broadcast_to(other.astype(x.dtype), x.shape)) \
        if isinstance(k, bool) else jnp.where(k, x, other.astype(x.dtype))
  return Packed(out, a.layout)


# The leaves hidden from the inner stage by each masked_init or masked_update running, with
# their layout. Tree mode hands a stage a MaskedNode for them; packed mode zeroes their
# entries, so a stage that evaluates the loss on the whole params (a line search) asks here
# at init, and one that splits a key per leaf (add_noise) gives them none, as in tree mode.
_hidden: contextvars.ContextVar[tuple[tuple[Layout, tuple[bool, ...]], ...]] = (
    contextvars.ContextVar("gradtx_packed_hidden", default=()))


@contextlib.contextmanager
def _hiding(layout: Layout, mask: PyTree) -> Iterator[None]:
  """While the inner stage of a mask is initialised, the leaves ``mask`` hides are hidden."""
  token = _hidden.set((*_hidden.get(), (layout, layout.leaf_mask(mask))))
  try:
    yield
  finally:
    _hidden.reset(token)


def visible_leaves(layout: Layout) -> tuple[bool, ...]:
  """Per leaf of ``layout``, whether the stage running sees it: ``False`` where an
  enclosing :func:`masked_init` or :func:`masked_update` hides it (zeroes its entries)."""
  masks = [keeps for hiding, keeps in _hidden.get() if hiding == layout]
  return tuple(all(keeps[i] for keeps in masks) for i in range(len(layout.shapes)))


def hidden_leaf(params: Any) -> str | None:
  """The key path of the first leaf of packed ``params`` that an enclosing
  :func:`masked_init` hides from the stage (its entries zeroed), or ``None``."""
  if not isinstance(params, Packed):
    return None
  paths = jax.tree_util.tree_flatten_with_path(params.layout.template())[0]
  for (path, _), visible in zip(paths, visible_leaves(params.layout)):
    if not visible:
      return tree.keystr(path)
  return None


def masked_init(inner: Any, mask: PyTree, params: Packed) -> Any:
  """How :func:`gradtx.masked` inits on a packed tree: ``inner``'s state.

  ``inner`` starts from the params as :func:`masked_update` shows them to it,
  masked-out entries zeroed: a stage that keeps the initial params (DoG's
  distance from them) or reduces them at ``init`` (DoG's heuristic first
  step) then sees only the masked-in leaves, as in tree mode.
  """
  with _hiding(params.layout, mask):
    return inner.init(_select(params.layout.element_mask(mask), params, 0.0))


def masked_update(inner: Any, mask: PyTree, updates: Packed,
                  inner_state: Any, params: Packed | None = None, *,
                  mask_extra: bool = False, **extra: Any) -> tuple[Packed, Any]:
  """How :func:`gradtx.masked` runs on a packed tree: ``(updates, inner_state)``.

  The mask, a Python bool per leaf (a callable resolved and the bools checked
  by the caller, :func:`gradtx.masked` or :func:`gradtx.partition`), is turned
  into an element mask. ``inner`` runs on the whole buffers with the
  masked-out entries of the updates and params zeroed (so a global norm
  inside it sees only masked-in leaves), and its output replaces the updates
  only where the mask is ``True``. Unlike tree mode, ``inner``'s state holds
  entries for masked-out leaves too; they are never used. With ``mask_extra``
  (``mask_compatible_extra_args``), extra arguments packed like the updates
  are zeroed where the updates are.
  """
  layout = updates.layout
  keep = layout.element_mask(mask)
  inner_updates = _select(keep, updates, 0.0)
  inner_params = None if params is None else _select(keep, params, 0.0)
  if mask_extra:
    extra = {k: _select(keep, v, 0.0) if isinstance(v, Packed) and v.layout == layout else v
             for k, v in extra.items()}
  with _hiding(layout, mask):
    new, inner_state = inner.update(inner_updates, inner_state, inner_params, **extra)
  return _select(keep, new, updates), inner_state
