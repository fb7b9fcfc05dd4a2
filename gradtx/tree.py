"""Tree math and key-path aware checks.

Everything here works leaf by leaf over a pytree. The checks run in Python at
trace time only (they compare tree structures and shapes, never values), so
they cost nothing inside a compiled step.

Every name of ``optax.tree`` is here too, with optax's arguments, so code
written against it runs with a change of import: ``gtx.tree.norm(grads)``,
``gtx.tree.scale(0.5, grads)``. Those that are not defined in this module are
the functions of :mod:`gradtx.tree_utils` under their ``tree_`` names
(``gtx.tree.norm`` is :func:`gradtx.tree_utils.tree_norm`), documented there.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, Literal, NamedTuple, TypeGuard

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.core import (NOT_NUMBER_KINDS, Range, check_argument, check_callable, check_dtype_option,
                         kind)
from gradtx.errors import ArgumentTypeError, StructureError
from gradtx.numerics import (as_array, as_dtype, at_least_float32, complex_dtype, compute_dtype,
                             real_dtype, safe_sqrt, scaling_dtype, shared_scalars, state_dtype,
                             wide_abs_sq)

if TYPE_CHECKING:  # imported at run time by _packed_types: gradtx.packed imports this module
  from gradtx.packed import Packed, PackedLeaves

# jax's tracer for a program being staged (not public); without it, rules are traced leaf by leaf.
_STAGING_TRACERS: tuple[type, ...]
try:
  from jax._src.interpreters.partial_eval import DynamicJaxprTracer as _DynamicJaxprTracer
  _STAGING_TRACERS = (_DynamicJaxprTracer,)
except ImportError:  # pragma: no cover
  _STAGING_TRACERS = ()

PyTree = Any


class MaskedNode(NamedTuple):
  """An empty node standing in for a leaf that a mask leaves out.

  Stages inside :func:`gradtx.masked` see these instead of the masked-out
  leaves, so they keep no state for them.
  """


# The user's tree behind one that holds MaskedNode, while stages run on the latter: what
# a callable mask or label function is called on (gradtx.wrappers.unmasked_view). The
# outermost init or update publishes the tree it was given (whose integer, key and None
# leaves it masks on admission); a masked wrapper, the tree behind its inner stages.
UNMASKED: contextvars.ContextVar[Any] = contextvars.ContextVar("gradtx_unmasked", default=None)


def is_masked(x: Any) -> bool:
  """Whether ``x`` is a :class:`MaskedNode` (pass it as ``is_leaf`` to see them as leaves)."""
  return isinstance(x, MaskedNode)


@jax.tree_util.register_pytree_node_class
class ParamsPlaceholder:
  """A leafless pytree passed to ``init`` in place of the params: it marks where they go.

  :func:`gradtx.tree_utils.tree_map_params` finds the params-shaped parts of
  a state by where ``init`` puts it; a wrapper whose ``init`` inspects the
  params (a mask, labels) passes it on to the inner ``init`` untouched.
  """

  def tree_flatten(self):
    return (), None

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux, children
    return cls()


def is_params_placeholder(x: Any) -> bool:
  """Whether ``x`` is :class:`ParamsPlaceholder`, or optax's own (``optax.tree_map_params``
  passes a leafless class of its own to ``init``, and a mask matched against it raised)."""
  kind = type(x)
  return isinstance(x, ParamsPlaceholder) or (
      kind.__name__ == "_ParamsPlaceholder" and kind.__module__.startswith("optax."))


def is_function_of_params(x: Any) -> TypeGuard[Callable[..., Any]]:
  """Whether a mask, labels or dimension numbers argument is a function of the params
  (called on them) rather than a tree (matched against them).

  A tree may itself be callable: an equinox module of bools, as
  ``jax.tree.map(lambda p: p.ndim > 1, eqx.filter(model, eqx.is_array))`` makes
  it, was called on the params and failed inside the model's ``__call__``. A
  pytree node is a tree, as it is for optax's ``masked``; a function is a leaf,
  and so is a ``functools.partial``. A ``jax.tree_util.Partial`` is a node: it
  is a tree where it holds only bools or strings (what ``jax.tree.map`` makes of
  params held in one: a mask, labels), and a function where it binds something
  else (``Partial(mask_fn, threshold)``) or nothing.
  """
  if not callable(x):
    return False
  if isinstance(x, jax.tree_util.Partial):
    leaves = jax.tree.leaves(x)
    return not leaves or not all(isinstance(leaf, (bool, np.bool_, str)) for leaf in leaves)
  return jax.tree_util.treedef_is_leaf(jax.tree.structure(x))


def keystr(path: tuple) -> str:
  """``['layer']['w']`` for a key path; ``<root>`` for the empty path."""
  return jax.tree_util.keystr(path) if path else "<root>"


def _leaves_by_path(tree: PyTree) -> dict[str, Any]:
  pairs, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_node)
  return {keystr(path): leaf for path, leaf in pairs}


def _is_integer(x: Any) -> bool:
  """An integer or bool array (numpy's kinds; bfloat16's and float0's are 'V')."""
  return kind(x) in ("i", "u", "b")


def check_update_dtypes(updates: PyTree, params: PyTree | None, stage: str) -> None:
  """Raises if a leaf of ``updates`` is an integer or bool array, or, where ``params``
  are given, complex for a real parameter.

  Every rule would round its steps to that dtype (Adam's to 0): a gradient
  is floating point or complex. ``jax.grad(..., allow_int=True)`` gives an
  integer input a ``float0`` cotangent, which passes. A real parameter's moments
  are real: a complex gradient's imaginary part was dropped from them silently,
  and the complex step was refused only later, by :func:`gradtx.apply_updates`.
  """
  kinds = {kind(u) for u in jax.tree_util.tree_leaves(updates, is_leaf=_is_node)}
  if None in kinds or not kinds.isdisjoint(NOT_NUMBER_KINDS):
    # a packed tree, a masked leaf, a leaf that is no array or holds no numbers
    check_array_leaves(updates, "updates", stage)
  if kinds.isdisjoint(("i", "u", "b", "c")):
    return  # the common case: no key paths are built
  if not kinds.isdisjoint(("i", "u", "b")):
    for path, u in jax.tree_util.tree_flatten_with_path(updates, is_leaf=_is_node)[0]:
      if _is_integer(u):
        raise StructureError(
            f"{stage}: the updates at key path {keystr(path)} are {u.dtype}; gradients must be "
            "floating point or complex (an integer step rounds to 0): take gradients of the "
            "float leaves only (eqx.filter_grad, or jax.grad of a function of those leaves)")
  if "c" in kinds and params is not None:
    found = []  # (key path, update dtype, param dtype) of a complex update of a real param

    def note(path: tuple, u: Any, p: Any) -> None:
      if kind(u) == "c" and kind(p) == "f":
        found.append((path, u.dtype, p.dtype))

    try:  # params of another structure (lookahead's pair) are the stages' to check
      jax.tree_util.tree_map_with_path(note, updates, params, is_leaf=_none_or_node)
    except ValueError:
      return
    if found:
      path, u_dtype, p_dtype = found[0]
      raise StructureError(
          f"{stage}: the updates at key path {keystr(path)} are {u_dtype} and the params "
          f"there are {p_dtype}: a real parameter takes a real gradient (its moments are "
          "real and would drop the imaginary part, and gtx.apply_updates refuses a complex "
          "step). For complex parameters, make the params complex; jax.grad of a real loss "
          "of real params is real")


def no_gradient(u: Any) -> bool:
  """An update leaf that steps nothing: ``None`` (``eqx.filter_grad``'s for a
  non-float leaf) or a ``float0`` cotangent (``jax.grad(..., allow_int=True)``'s)."""
  if u is None:
    return True
  dtype = getattr(u, "dtype", None)  # float0's kind is "V" (as bfloat16's): compare those only
  return getattr(dtype, "kind", None) == "V" and dtype == jax.dtypes.float0


def untrainable(x: Any) -> bool:
  """An integer, bool or PRNG-key array: a leaf no gradient can step."""
  dtype = getattr(x, "dtype", None)
  if dtype is None:
    return False
  kind = getattr(dtype, "kind", None)  # a key's dtype has none
  if kind in ("f", "c"):  # the common case, without issubdtype's cost
    return False
  return kind in ("i", "u", "b") or jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _none_or_node(x: Any) -> bool:
  return x is None or _is_node(x)


def mask_untrainable(params: PyTree) -> PyTree:
  """``params`` with each :func:`untrainable` leaf, and each ``None``, a :class:`MaskedNode`.

  An outermost ``init`` (:func:`admit_params`) gives its stages these params,
  so no stage keeps a moment for an integer buffer or a key (rounded to an
  integer, a moment would step it by garbage); and a ``None`` (a non-array
  leaf filtered out, ``eqx.filter(model, eqx.is_array)``) is masked as its
  update's ``None`` will be (:func:`freeze_without_gradient`).
  """
  if params is None or not any(x is None or untrainable(x) for x in
                               jax.tree_util.tree_leaves(params, is_leaf=_none_or_node)):
    return params  # the common case: the tree as it is
  return jax.tree.map(lambda x: MaskedNode() if x is None or untrainable(x) else x, params,
                      is_leaf=_none_or_node)


def _no_gradient_or_node(x: Any) -> bool:
  return no_gradient(x) or _is_node(x)


_PYTHON_NUMBER = (int, float, complex)  # bool is an int


def _as_jit_makes_it(x: Any) -> bool:
  """Whether ``x`` is a Python number, or a numpy array of numbers in a dtype JAX does not
  hold (float64, int64 without x64)."""
  if isinstance(x, _PYTHON_NUMBER):
    return True
  return (isinstance(x, np.ndarray) and x.dtype.kind in "biufc"
          and jax.dtypes.canonicalize_dtype(x.dtype) != x.dtype)


def numbers_as_arrays(tree: PyTree) -> PyTree:
  """``tree`` with each Python-number leaf (``{"temperature": 1.0}``) a JAX array, and
  each numpy array of a dtype JAX does not hold (``np.float64`` without x64) one of
  the dtype JAX holds it in.

  The stages read each leaf's dtype, which a Python number lacks. Under
  ``jit`` the leaves are already arrays; an eager call gets what ``jit``
  would have made of them (a weakly typed float32 for ``1.0``, float32 for a
  float64 numpy array). The stages took a numpy array's float64 for the dtype
  to compute in, and each cast to it warned that float64 is not available.
  """
  if not any(_as_jit_makes_it(x) for x in jax.tree_util.tree_leaves(tree)):
    return tree  # the common case: the tree as it is
  return jax.tree.map(lambda x: jnp.asarray(x) if _as_jit_makes_it(x) else x, tree)


def abstract_as_zeros(tree: PyTree) -> PyTree:
  """``tree`` with each ``jax.ShapeDtypeStruct`` leaf an array of zeros of its shape,
  dtype and sharding, as optax's ``init`` makes a state from such params (its
  ``zeros_like`` takes them): a stage reads a leaf's values with ``jnp.asarray``,
  which refuses a struct."""
  if not any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(tree)):
    return tree  # the common case: the tree as it is
  return jax.tree.map(lambda x: jnp.zeros_like(x) if isinstance(x, jax.ShapeDtypeStruct) else x,
                      tree)


def admit_params(params: PyTree, stage: str) -> PyTree:
  """The params an outermost ``init`` passes on (see :func:`admit_updates`):
  Python numbers as arrays, ``jax.ShapeDtypeStruct`` leaves as zeros
  (:func:`abstract_as_zeros`), and integer buffers, keys and ``None`` masked
  (:func:`mask_untrainable`). A leaf that is not an array (a function) raises
  (:func:`check_array_leaves`), and so does a packed tree holding such a buffer
  (:func:`check_packed_trainable`)."""
  params = abstract_as_zeros(numbers_as_arrays(params))
  check_array_leaves(params, "params", stage)
  check_packed_trainable(params)
  return mask_untrainable(params)


# What to do with a leaf that is not an array (an equinox model's activation function),
# said once.
ARRAYS_ONLY = ("give init and update the arrays only, with None elsewhere: "
               "tx.init(eqx.filter(model, eqx.is_array)) for an equinox model, and its "
               "gradients from eqx.filter_grad, which has None there")


def check_array_leaves(tree: PyTree, name: str, stage: str) -> None:
  """Raises where a leaf of ``tree`` is not an array (no ``dtype``): a function or
  another Python object left in an unfiltered model. jax's own error names neither
  the leaf nor the fix, and a structure check fails on it with an empty
  ``AttributeError``."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_node)[0]:
    if not _is_node(leaf) and getattr(leaf, "dtype", None) is None:
      raise StructureError(
          f"{stage}: the {name} at key path {keystr(path)} hold a {type(leaf).__name__}, "
          f"not an array: {ARRAYS_ONLY}")
    held = NOT_NUMBER_KINDS.get(kind(leaf) or "")  # numpy's; jax named neither leaf nor fix
    if held is not None:
      raise StructureError(f"{stage}: the {name} at key path {keystr(path)} hold an array of "
                           f"{leaf.dtype} ({held}), not numbers: {ARRAYS_ONLY}")


# What to do with a leaf no buffer should hold (an integer buffer, a key), said once.
PACK_FLOAT_LEAVES = ("pack only the floating-point leaves (eqx.partition(model, "
                     "eqx.is_inexact_array)) and keep the others outside the layout")


def check_packed_trainable(params: PyTree) -> None:
  """Raises if a :class:`gradtx.packed.Packed` node of ``params`` holds an integer,
  bool or key buffer.

  A buffer is one node to the stages: it cannot be masked as an integer leaf
  of a tree is (:func:`mask_untrainable`), so each stage would keep an integer
  moment for it and step it by garbage, or fail at the first ``float0``
  gradient deep inside a rule.
  """
  for node in jax.tree_util.tree_leaves(params, is_leaf=_is_node):
    if not _is_packed(node):
      continue
    bad = [name for name, buffer in node.buffers.items() if untrainable(buffer)]
    if bad:
      paths = [keystr(path) for (path, _), dtype in zip(
          jax.tree_util.tree_flatten_with_path(node.layout.template())[0], node.layout.dtypes)
               if dtype in bad]
      raise StructureError(
          f"packed params hold {', '.join(bad)} leaves (key paths {', '.join(paths)}), which "
          f"no gradient steps: {PACK_FLOAT_LEAVES}")


def admit_updates(updates: PyTree, params: PyTree | None,
                  stage: str) -> tuple[PyTree, PyTree | None, bool]:
  """What an outermost ``update`` passes on: ``(updates, params, masked)``.

  The transformation a user calls (a chain, or a primitive or wrapper on its
  own; not the stages inside it) checks and prepares its input once, for
  every stage: Python numbers become arrays (:func:`numbers_as_arrays`),
  integer updates, and complex ones of real params, are refused
  (:func:`check_update_dtypes`), and leaves without a
  gradient are masked (:func:`freeze_without_gradient`; where ``masked``,
  :func:`thaw` gives their ``None`` back).
  """
  updates, params = numbers_as_arrays(updates), numbers_as_arrays(params)
  check_update_dtypes(updates, params, stage)
  return freeze_without_gradient(updates, params, stage)


def freeze_without_gradient(updates: PyTree, params: PyTree | None,
                            stage: str) -> tuple[PyTree, PyTree | None, bool]:
  """Masks the leaves the stages must not step: ``(updates, params, masked)``.

  Where ``updates`` has no gradient (:func:`no_gradient`), both trees get a
  :class:`MaskedNode`, which the stages pass through and keep no state for
  (as :func:`mask_untrainable` did at ``init`` for integer and key params, and
  for ``None``): an equinox model's integer buffer or key under
  ``eqx.filter(model, eqx.is_array)``, or a leaf filtered out of both trees. A
  float param whose gradient is ``None`` still has its state, and the stage
  that holds it raises. Params not shaped as the updates (lookahead's
  ``(fast, slow)`` pair) get :func:`mask_untrainable` instead. ``masked`` says
  whether the stages' updates need :func:`thaw`; when it is ``False`` (the
  common case) the trees are returned as they are. An integer or key param
  with a floating-point update raises :class:`StructureError`. A root ``None``
  is a tree without leaves, not a leaf without a gradient: ``init(None)`` kept
  ``None`` (:func:`mask_untrainable`), which a whole-tree MaskedNode would not match.
  """
  if updates is None:
    return updates, params, False
  marked = any(no_gradient(u) for u in
               jax.tree_util.tree_leaves(updates, is_leaf=_no_gradient_or_node))
  has_untrainable = params is not None and any(
      untrainable(p) for p in jax.tree_util.tree_leaves(params, is_leaf=_none_or_node))
  if not marked and not has_untrainable:
    return updates, params, False
  if params is not None:
    def check(path: tuple, u: Any, p: Any) -> None:
      if untrainable(p) and not no_gradient(u):
        raise StructureError(
            f"{stage}: the params at key path {keystr(path)} are {p.dtype}, and their update is "
            f"{getattr(u, 'dtype', type(u).__name__)}: only floating-point params are stepped. "
            "Give them no gradient (None, as eqx.filter_grad does) or leave them out of the "
            "tree you optimize")

    try:  # updates' structure is a prefix of params': a None stands for any subtree
      masked_params = jax.tree.map(lambda u, p: MaskedNode() if no_gradient(u) else p, updates,
                                   params, is_leaf=_no_gradient_or_node)
    except ValueError:  # params of another shape: the stages check them against the updates
      masked_params = mask_untrainable(params)
    else:
      jax.tree_util.tree_map_with_path(check, updates, params, is_leaf=_no_gradient_or_node)
    params = masked_params
  return mask_no_gradient(updates), params, True


def mask_no_gradient(updates: PyTree) -> PyTree:
  """``updates`` with a :class:`MaskedNode` for each leaf without a gradient
  (:func:`no_gradient`: ``None``, ``float0``), as the stages see them: also for a
  gradient passed as an extra argument (a line search's ``grad=``)."""
  return jax.tree.map(lambda u: MaskedNode() if no_gradient(u) else u, updates,
                      is_leaf=_no_gradient_or_node)


def thaw(updates: PyTree) -> PyTree:
  """The stages' updates with ``None`` for each :class:`MaskedNode`: where the
  updates given had no gradient (see :func:`freeze_without_gradient`)."""
  return jax.tree.map(lambda u: None if is_masked(u) else u, updates, is_leaf=is_masked)


def as_given(values: PyTree) -> PyTree | None:
  """``values`` as the user built them, for a function of the user's tree (a line
  search's ``value_fn``); ``None`` where that tree is not known.

  Each :class:`MaskedNode` of ``values`` (a ``None``, an integer buffer or a key
  masked on admission, a leaf without a gradient, a leaf a mask leaves out) is
  replaced by what the tree behind ``values`` (:data:`UNMASKED`) holds at its key
  path: that leaf or subtree, or ``None`` for a ``None``. ``values`` themselves
  where they hold no MaskedNode; ``None`` where the tree behind them is not of their
  structure (a wrapper's params of another shape).
  """
  if not any(is_masked(x) for x in jax.tree.leaves(values, is_leaf=is_masked)):
    return values  # the common case: the tree as it is
  known = UNMASKED.get()
  if known is None:
    return None
  try:  # a MaskedNode of values is a leaf: known's subtree there, a None too, is passed whole
    return jax.tree.map(lambda v, k: thaw(k) if is_masked(v) else v, values, known,
                        is_leaf=is_masked)
  except (ValueError, TypeError):
    return None


def check_real(params: PyTree, stage: str) -> None:
  """Raises if a leaf of ``params`` is complex: for rules defined on real numbers only."""
  for path, p in jax.tree_util.tree_flatten_with_path(params, is_leaf=is_masked)[0]:
    if not is_masked(p) and jnp.iscomplexobj(p):
      raise ValueError(f"{stage}: complex parameters are not supported (key path "
                       f"{keystr(path)}); split them into real and imaginary parts with "
                       "gtx.contrib.split_real_and_imaginary")


def check_structure(expected: PyTree, got: PyTree, expected_name: str,
                    got_name: str, *, check_shapes: bool | Literal["broadcast"] = True,
                    stage: str | None = None) -> None:
  """Raises :class:`StructureError` naming the first key path where trees differ.

  Args:
    expected: the tree that sets the structure (usually a stage's state).
    got: the tree checked against it (usually the incoming grads or params).
    expected_name: how the message names ``expected`` (``"state.mu"``).
    got_name: how the message names ``got`` (``"grads"``).
    check_shapes: also require equal leaf shapes. Without it, a
      :class:`MaskedNode` (no array: a ``None`` gradient, a leaf a mask leaves
      out) must still meet a :class:`MaskedNode`: a per-leaf flag or statistic
      of a leaf is state for it as a moment is, and a step that replaced it
      by the gradient's :class:`MaskedNode` would change the state's structure
      (a jitted step retraces, ``lax.scan`` fails). ``"broadcast"``: shapes that
      broadcast together (leaf math that broadcasts, as optax's ``tree_add`` does).
    stage: the transformation checking (``"scale_by_adam"``), which the message
      starts with: a primitive used outside a chain has no stage name otherwise.
  """
  expected_flat, expected_def = jax.tree_util.tree_flatten(expected, is_leaf=_is_node)
  got_flat, got_def = jax.tree_util.tree_flatten(got, is_leaf=_is_node)
  same = (_broadcast if check_shapes == "broadcast" else
          _same_shape if check_shapes else _same_presence)
  if expected_def == got_def:  # type: ignore[operator]  # jax's PyTreeDef is untyped
    if all(same(a, b) for a, b in zip(expected_flat, got_flat)):
      return  # the common case: no key paths are built
  # Something differs: build key paths (slow, but only on the way to an error).
  where = f"{stage}: " if stage else ""
  expected_leaves = _leaves_by_path(expected)
  got_leaves = _leaves_by_path(got)
  if expected_def != got_def:  # type: ignore[operator]  # jax's PyTreeDef is untyped
    missing = [k for k in expected_leaves if k not in got_leaves]
    extra = [k for k in got_leaves if k not in expected_leaves]
    # A packed tree against a tree of arrays: the leaves inside it are not "missing".
    packed = _packed_against_arrays(expected_leaves, got_leaves, expected_name, got_name)
    leaf_against_subtree = None if packed else _leaf_against_subtree(
        expected, got, expected_name, got_name)
    if packed:
      detail = packed
    elif leaf_against_subtree:
      detail = leaf_against_subtree
    elif missing:
      detail = f"key path {missing[0]} is in {expected_name} but not in {got_name}"
    elif extra:
      detail = f"key path {extra[0]} is in {got_name} but not in {expected_name}"
    else:
      detail = containers_differ(expected, got, expected_name, got_name)
    raise StructureError(f"{where}{got_name} and {expected_name} differ in structure: {detail}")
  for key, leaf in expected_leaves.items():
    other = got_leaves[key]
    if not same(leaf, other):
      if _is_packed_kind(leaf) and _is_packed_kind(other):  # two layouts print alike
        detail = ("they are packed with different layouts: "
                  f"{other.layout.difference(leaf.layout, got_name, expected_name)}")
      else:
        detail = (f"{_describe_shape(other)} in {got_name}, "
                  f"{_describe_shape(leaf)} in {expected_name}")
        if is_masked(other) != is_masked(leaf):
          detail += f"; {NO_ARRAY_HERE if is_masked(other) else NO_ARRAY_AT_INIT}"
      raise StructureError(
          f"{where}{got_name} and {expected_name} differ in shape at key path {key}: {detail}")


# How much of a container a structure error prints: one level of it, cut to this length.
_CONTAINER_SHOWN = 200


def one_level(node: Any) -> tuple[list[tuple[tuple, Any]], jax.tree_util.PyTreeDef]:
  """``node``'s children with their key path entries, and its structure one level deep
  (``PyTreeDef({'b': *, 'w': *})``); no children for a leaf, a :class:`MaskedNode` or a
  packed tree (:func:`_is_node`)."""
  children, treedef = jax.tree_util.tree_flatten_with_path(
      node, is_leaf=lambda x: x is not node or _is_node(x))
  return ([] if jax.tree_util.treedef_is_leaf(treedef) else children), treedef


def short_container(treedef: jax.tree_util.PyTreeDef) -> str:
  """A one-level structure (:func:`one_level`) as a structure error prints it: cut at
  :data:`_CONTAINER_SHOWN` characters, with its number of children when cut."""
  text = str(treedef)
  if len(text) <= _CONTAINER_SHOWN:
    return text
  return f"{text[:_CONTAINER_SHOWN]}... ({treedef.num_leaves} children)"


def _first_difference(expected: PyTree, got: PyTree
                      ) -> tuple[tuple, Any, jax.tree_util.PyTreeDef, Any,
                                 jax.tree_util.PyTreeDef] | None:
  """``(key path, expected node, its one-level structure, got node, its)`` at the first
  node (in pytree order) where the trees differ in structure; ``None`` where they do not."""
  pending = [((), expected, got)]
  while pending:  # depth first, in pytree order; not recursive: trees nest deeply
    path, a, b = pending.pop()
    (a_children, a_def), (b_children, b_def) = one_level(a), one_level(b)
    if a_def != b_def:  # type: ignore[operator]  # jax's PyTreeDef is untyped
      return path, a, a_def, b, b_def
    pending.extend(reversed([((*path, *entry), x, y)
                             for (entry, x), (_, y) in zip(a_children, b_children)]))
  return None


def _is_one_leaf(treedef: jax.tree_util.PyTreeDef) -> bool:
  return treedef.num_leaves == 1 and jax.tree_util.treedef_is_leaf(treedef)


def containers_differ(expected: PyTree, got: PyTree, expected_name: str, got_name: str) -> str:
  """Where two trees with the same key paths differ in structure, in words: the first
  node (in pytree order) whose containers differ (a dict and an OrderedDict, a list and
  a tuple, another static field), each printed one level deep.

  Printing the two whole PyTreeDefs said nothing of where they differ, and ran to
  hundreds of thousands of characters for a large model.
  """
  found = _first_difference(expected, got)
  if found is None:  # pragma: no cover  # the callers' trees differ
    return f"the containers differ: {expected_name} and {got_name}"
  path, _, a_def, _, b_def = found
  a_text, b_text = short_container(a_def), short_container(b_def)
  if not path:
    return f"the containers differ: {expected_name} is {a_text}, {got_name} is {b_text}"
  return (f"the containers differ at key path {keystr(path)}: {expected_name} has "
          f"{a_text} there, {got_name} has {b_text}")


def _leaf_against_subtree(expected: PyTree, got: PyTree, expected_name: str,
                          got_name: str) -> str | None:
  """Where the trees first differ by a leaf on one side and a subtree on the other, in
  words; else ``None``. Named as a key path only one tree has, the leaf's path read as
  missing from the tree that holds a subtree there."""
  found = _first_difference(expected, got)
  if found is None:
    return None
  path, a, a_def, b, b_def = found
  if _is_one_leaf(a_def) == _is_one_leaf(b_def):
    return None
  (leaf_name, leaf), (tree_name, node, subtree) = (
      ((expected_name, a), (got_name, b, b_def)) if _is_one_leaf(a_def)
      else ((got_name, b), (expected_name, a, a_def)))
  if not jax.tree_util.tree_leaves(node, is_leaf=_is_node):
    return None  # a None or an empty container: no subtree, a key path one tree lacks
  what = ("no array (a None gradient, or a leaf a mask leaves out)" if is_masked(leaf)
          else f"a leaf of shape {_describe_shape(leaf)}" if hasattr(leaf, "shape")
          else f"a leaf ({type(leaf).__name__})")
  hint = f"; {NO_ARRAY_HERE}" if is_masked(leaf) and leaf_name != expected_name else ""
  return (f"at key path {keystr(path)} {leaf_name} has {what} and {tree_name} a subtree "
          f"{short_container(subtree)}{hint}")


def names_structure_mismatch(*names: str, same_shapes: bool = False
                             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Makes a function of several trees of one structure, its arguments ``names``, raise
  :class:`StructureError` naming itself, the two arguments and the first key path where
  they differ (:func:`check_structure`), where JAX's own error (``Dict key mismatch``,
  ``Custom node type mismatch``, ``add got incompatible shapes for broadcasting``) named
  neither; keeps its name, signature and docstring. They differ where their structures
  do, or where two leaves' shapes do not broadcast together (with ``same_shapes``: are
  not equal; the function itself raises ``ValueError`` on the leaves that would
  broadcast, as :func:`gradtx.incremental_update` does, an average of another shape).

  A ``*args`` name stands for each of its trees (``other_trees[0]``, ...). The trees are
  compared only once the function has raised ``ValueError`` or ``TypeError``, so a call
  with matching trees costs a ``try`` and nothing in a traced program; where they match
  after all (the error was about something else), the function's own error is raised.
  The outermost such function names itself: a projection that calls
  :func:`gradtx.tree_utils.tree_vdot` on its ``x`` and ``a`` names the projection.
  """
  def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
      try:
        return fn(*args, **kwargs)
      except (ValueError, TypeError):
        trees = _named_arguments(signature, names, args, kwargs)
        for name, tree in trees[1:]:
          try:
            check_structure(trees[0][1], tree, trees[0][0], name,
                            check_shapes=same_shapes or "broadcast", stage=fn.__name__)
          except StructureError as mismatch:
            raise mismatch from None  # JAX's error says less, and where it does not
        raise

    return checked
  return decorate


def _named_arguments(signature: inspect.Signature, names: tuple[str, ...], args: tuple,
                     kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
  """The arguments ``names`` of a call as ``(name, value)``, a ``*args`` one's entries as
  ``name[i]``; none where the call does not bind (its own error is the one to raise)."""
  try:
    bound = signature.bind(*args, **kwargs)
  except TypeError:
    return []
  named: list[tuple[str, Any]] = []
  for name in names:
    if name not in bound.arguments:
      continue
    value = bound.arguments[name]
    if signature.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
      named.extend((f"{name}[{i}]", tree) for i, tree in enumerate(value))
    else:
      named.append((name, value))
  return named


# What to do where a leaf has an array on one side and none on the other, said once.
NO_ARRAY_HERE = ("to keep that leaf fixed, freeze it (gtx.selective_transform) or give "
                 "init the params with None there")
NO_ARRAY_AT_INIT = ("init was given no array there (a None, or a leaf a mask leaves out): "
                    "give init the params that leaf is stepped with")


def _packed_against_arrays(expected_leaves: dict[str, Any], got_leaves: dict[str, Any],
                           expected_name: str, got_name: str) -> str | None:
  """Where one tree holds a packed tree and the other does not, in words; else ``None``."""
  for leaves, others, name, other_name in ((got_leaves, expected_leaves, got_name, expected_name),
                                           (expected_leaves, got_leaves, expected_name, got_name)):
    for key, leaf in leaves.items():
      if _is_packed_kind(leaf) and not _is_packed_kind(others.get(key)):
        where = "" if key == "<root>" else f" at key path {key}"
        return (f"{name} is a packed tree{where} and {other_name} is not: use one mode for "
                "both (a packed step's state is tx.init(layout.pack(params)))")
  return None


def _same_presence(a: Any, b: Any) -> bool:
  """Both or neither a :class:`MaskedNode`: the shapes may differ (a statistic per leaf)."""
  return is_masked(a) == is_masked(b)


def _broadcast(a: Any, b: Any) -> bool:
  """:func:`_same_shape`, but for two arrays, shapes that broadcast together."""
  if is_masked(a) or is_masked(b) or _is_packed_kind(a) or _is_packed_kind(b):
    return _same_shape(a, b)
  shape_a, shape_b = getattr(a, "shape", None), getattr(b, "shape", None)
  if shape_a is None or shape_b is None:
    return True
  try:
    np.broadcast_shapes(tuple(shape_a), tuple(shape_b))
  except ValueError:
    return False
  return True


def _describe_shape(x: Any) -> str:
  if is_masked(x):
    return "no array (a None gradient, or a leaf a mask leaves out)"
  layout = getattr(x, "layout", None)
  return f"a packed tree of {layout!r}" if layout is not None else str(tuple(x.shape))


def _is_node(x: Any) -> bool:
  """A node that structure checks compare whole: a masked-out leaf or a packed tree.

  A packed tree's per-leaf state (:class:`gradtx.packed.PackedLeaves`) and
  its updates (a :class:`gradtx.packed.Packed`) have different children but
  match when they share a layout.
  """
  return is_masked(x) or _is_packed_kind(x)


def _same_shape(a: Any, b: Any) -> bool:
  """Equal shapes (equal layouts for packed trees), or a leaf without one (a Python
  scalar). A MaskedNode matches only a MaskedNode: a state that holds an array for a
  leaf whose gradient is None would lose it.
  """
  if is_masked(a) or is_masked(b):
    return is_masked(a) and is_masked(b)
  if _is_packed_kind(a) or _is_packed_kind(b):
    return getattr(a, "layout", None) == getattr(b, "layout", None)
  shape_a, shape_b = getattr(a, "shape", None), getattr(b, "shape", None)
  return shape_a is None or shape_b is None or tuple(shape_a) == tuple(shape_b)


def tree_map(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
  """``jax.tree.map`` that passes :class:`MaskedNode` leaves through untouched (and, in a
  staged step, traces ``fn`` once per repeated shape, as :func:`map_multi` does)."""
  @functools.wraps(fn)
  def one(*xs):
    return fn(*xs),
  out, = _map_leafwise(one, 1, tree, rest, is_masked)
  return out


def zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
  """Zeros shaped like each leaf, in ``dtype`` or the leaf's own dtype.

  Each result takes its leaf's sharding (``jnp.zeros_like``), so a state made
  by a jitted ``init`` of sharded params is sharded like the params.
  """
  try:
    return tree_map(lambda x: jnp.zeros_like(x, dtype or jnp.asarray(x).dtype), tree)
  except TypeError:
    _check_dtype_name("zeros_like", dtype)
    raise


def _check_dtype_name(function: str, dtype: Any) -> None:
  """Raises :func:`gradtx.core.check_dtype_option`'s error where ``dtype`` names no dtype
  (``"flaot32"``: numpy's "data type 'flaot32' not understood" named neither the function
  nor the argument); on the error path only: an integer ``dtype`` is fine here."""
  try:
    np.dtype(dtype)
  except TypeError:
    check_dtype_option(function, "dtype", dtype)


def _fresh_full_like(x: Any, fill_value: jax.typing.ArrayLike, dtype: Any) -> jax.Array:
  """``jnp.full_like(x, fill_value, dtype)`` in a buffer of its own.

  ``jnp.full_like`` hands back a ``fill_value`` array itself where it already
  has the leaf's shape and dtype (a scalar hyperparameter for a scalar leaf):
  a state built from it would share that buffer (with the hyperparameter, and
  between its scalar leaves), and donating the state would fail ("Attempt to
  donate the same buffer twice").
  """
  full = jnp.full_like(x, fill_value, dtype)
  if isinstance(fill_value, jax.Array) and full.shape == fill_value.shape:
    return jnp.array(full, copy=True)
  return full


def full_like(tree: PyTree, fill_value: jax.typing.ArrayLike, dtype: Any = None) -> PyTree:
  """``fill_value`` shaped like each leaf, in ``dtype`` or the leaf's own dtype (and sharding).

  Each leaf gets a buffer of its own (see :func:`copy`), a scalar leaf too.
  """
  try:
    return tree_map(lambda x: _fresh_full_like(x, fill_value, dtype or jnp.asarray(x).dtype),
                    tree)
  except TypeError:  # jax's "Value 'x' with dtype <U1 is not a valid JAX array type"
    _check_number_leaves(tree, "full_like")
    raise


def _check_number_leaves(tree: PyTree, function: str) -> None:
  """:func:`check_array_leaves` for a function of any tree of numbers (a Python float is
  one), on its error path: names the leaf that is neither (a string, a function)."""
  check_array_leaves(numbers_as_arrays(tree), "leaves", function)


def accumulator_like(tree: PyTree, fill_value: float = 0.0, dtype: Any = None) -> PyTree:
  """``fill_value`` shaped like each leaf, to hold values of that leaf (a momentum, a sum).

  In ``dtype`` (the leaf's own if None), made complex of the same precision for
  a complex leaf (see :func:`gradtx.numerics.state_dtype`): a real buffer would
  drop the imaginary part. Each leaf gets a buffer of its own, as in :func:`full_like`.
  """
  return tree_map(lambda x: _fresh_full_like(x, fill_value, state_dtype(x, dtype)), tree)


def copy(tree: PyTree, dtype: Any = None) -> PyTree:
  """Fresh buffers holding the same values (a state that keeps the params, or a
  hyperparameter's value, must not share their buffers: both may be donated).

  With ``dtype``, each leaf is converted in the same copy, to
  :func:`gradtx.numerics.state_dtype` of it (a complex leaf stays complex).
  """
  return tree_map(lambda x: jnp.array(x, dtype=state_dtype(x, dtype), copy=True), tree)


def cast(tree: PyTree, dtype: Any) -> PyTree:
  """Each leaf cast to ``dtype``; ``None`` keeps the leaves as they are."""
  if dtype is None:
    return tree
  tree = numbers_as_arrays(tree)
  if not {kind(x) for x in jax.tree_util.tree_leaves(tree)}.isdisjoint(NOT_NUMBER_KINDS):
    check_array_leaves(tree, "leaves", "cast")  # numpy casts an array of "0.5" to 0.5
  try:
    return tree_map(lambda x: x.astype(dtype), tree)
  except (TypeError, AttributeError):  # AttributeError: 'str' object has no attribute 'astype'
    _check_dtype_name("cast", dtype)
    check_array_leaves(tree, "leaves", "cast")
    raise


@names_structure_mismatch("tree", "other_tree")
def cast_like(tree: PyTree, other_tree: PyTree) -> PyTree:
  """Each leaf of ``tree`` cast to the dtype of the same leaf of ``other_tree``.

  A leaf of ``other_tree`` without a dtype (a Python number) leaves its leaf as it is.
  """
  return tree_map(lambda x, o: x.astype(o.dtype) if hasattr(o, "dtype") else x,
                  numbers_as_arrays(tree), other_tree)


def _leaf_sum_squares(x: jax.Array, dtype: Any = None) -> jax.Array:
  return jnp.sum(wide_abs_sq(as_array(x), dtype))


def sum_squares(tree: PyTree, dtype: Any = None) -> jax.Array:
  """The sum of :math:`|x_i|^2` over every entry of every leaf (float32 or wider).

  Each leaf's squares are taken in float32, or float64 for a float64 or complex128
  leaf (:func:`gradtx.numerics.wide_abs_sq`). With ``dtype`` (a real dtype), a leaf
  is first widened to it where it is wider, and the sum is of ``dtype``.
  """
  leaves = [x for x in jax.tree.leaves(tree, is_leaf=is_masked) if not is_masked(x)]
  if not leaves:
    return jnp.zeros((), jnp.float32 if dtype is None else dtype)
  try:
    totals = [_leaf_sum_squares(x, dtype) for x in leaves]
  except TypeError:  # jax's "Value 'x' with dtype <U1 is not a valid JAX array type"
    _check_number_leaves(tree, "sum_squares")
    raise
  total_dtype = compute_dtype(*totals)  # the widest, also under strict promotion
  total = sum((as_dtype(t, total_dtype) for t in totals[1:]), as_dtype(totals[0], total_dtype))
  return total if dtype is None else as_dtype(total, dtype)


def leaf_vdot(a: jax.Array, b: jax.Array) -> jax.Array:
  """:math:`\\sum_i \\bar a_i b_i` of two arrays of one dtype, at the highest matmul precision."""
  # tensordot, not jnp.vdot: vdot ravels, which costs communication on sharded leaves.
  return jnp.tensordot(a.conj() if jnp.iscomplexobj(a) else a, b, a.ndim,
                       precision=jax.lax.Precision.HIGHEST)


@names_structure_mismatch("tree_x", "tree_y", same_shapes=True)
def inner(tree_x: PyTree, tree_y: PyTree, dtype: Any = None) -> jax.Array:
  """:math:`\\mathrm{Re}\\langle x, y \\rangle = \\mathrm{Re} \\sum_\\text{leaves} \\sum_i
  \\bar x_i y_i`, a scalar of the real ``dtype``.

  Each leaf is widened to ``dtype`` (a complex leaf to its complex counterpart)
  before its product, taken at the highest matmul precision, so that bfloat16
  leaves keep the sum's digits (optax's ``tree.vdot`` sums a bfloat16 leaf in
  bfloat16). ``dtype`` defaults to the widest real dtype of the leaves, at
  least float32. A packed tree's buffers are its leaves.
  """
  if dtype is None:
    leaves = jax.tree.leaves((tree_x, tree_y))
    dtype = real_dtype(at_least_float32(*leaves))
  dtype = jnp.dtype(dtype)

  def product(a: jax.Array, b: jax.Array) -> jax.Array:
    common = complex_dtype(dtype) if jnp.iscomplexobj(a) or jnp.iscomplexobj(b) else dtype
    return jnp.real(leaf_vdot(as_dtype(a, common), as_dtype(b, common)))

  terms: list[jax.Array] = jax.tree.leaves(jax.tree.map(
      lambda a, b: product(as_array(a), as_array(b)), tree_x, tree_y))
  return sum(terms[1:], terms[0]) if terms else jnp.zeros((), dtype)


def global_norm(tree: PyTree) -> jax.Array:
  """:math:`\\sqrt{\\sum_\\text{leaves} \\sum_i x_i^2}`, the l2 norm of the whole tree."""
  return safe_sqrt(sum_squares(tree))  # a zero tree differentiates to 0, not NaN


def all_finite(tree: PyTree) -> jax.Array:
  """A scalar bool: every entry of every leaf is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree, is_leaf=is_masked)
            if not is_masked(x)]
  if not leaves:
    return jnp.asarray(True)
  return jnp.stack(leaves).all()


def count_nonfinite(tree: PyTree) -> jax.Array:
  """The number of NaN or Inf entries over all leaves (int32)."""
  counts = [jnp.sum(~jnp.isfinite(x)).astype(jnp.int32)
            for x in jax.tree.leaves(tree, is_leaf=is_masked) if not is_masked(x)]
  return sum(counts[1:], counts[0]) if counts else jnp.zeros((), jnp.int32)


@names_structure_mismatch("tree_x", "tree_y", "other_trees")
def add(tree_x: PyTree, tree_y: PyTree, *other_trees: PyTree) -> PyTree:
  """Leafwise :math:`x + y + \\dots`, each leaf in the dtype of ``tree_x``'s leaf."""
  return tree_map(lambda x, *ys: functools.reduce(lambda a, y: a + as_dtype(y, x.dtype), ys, x),
                  numbers_as_arrays(tree_x), tree_y, *other_trees)


@names_structure_mismatch("tree_x", "tree_y")
def sub(tree_x: PyTree, tree_y: PyTree) -> PyTree:
  """Leafwise ``x - y``, each difference in the wider of the two leaves' dtypes."""
  def diff(x, y):
    dtype = compute_dtype(x, y)
    return as_dtype(x, dtype) - as_dtype(y, dtype)
  return tree_map(diff, tree_x, tree_y)


def kinds_scaled_apart(scalar: jax.typing.ArrayLike) -> tuple[str, jnp.dtype]:
  """``(kinds, dtype)``: the dtype kinds of the leaves that cannot hold ``scalar`` (of
  ``dtype``): integer and bool leaves for a floating scalar, and real ones too for a
  complex scalar (bfloat16's kind is 'V'); none for an integer scalar. Once per call; a
  leaf whose ``dtype.kind`` is in ``kinds`` goes to :func:`scaled_dtype`.

  The scalar was cast to each leaf's dtype, so ``tree_scale(0.5, int32 leaf)`` was 0 and
  a complex scalar lost its imaginary part, where optax's ``scalar * x`` promotes."""
  dtype = scalar.dtype if isinstance(scalar, jax.Array) else jnp.result_type(scalar)
  kinds = "iubfV" if dtype.kind == "c" else "iub" if jnp.issubdtype(dtype, jnp.inexact) else ""
  return kinds, dtype


def scaled_dtype(of_scalar: jnp.dtype, *leaves: Any) -> jnp.dtype:
  """The dtype a scalar of dtype ``of_scalar`` and ``leaves`` (of a kind that cannot hold
  it, :func:`kinds_scaled_apart`) promote to, as optax's ``scalar * x`` gives."""
  return compute_dtype(jnp.zeros((), of_scalar), *leaves)


def scale(scalar: jax.typing.ArrayLike, tree: PyTree) -> PyTree:
  """Leafwise ``scalar * x``, the scalar cast to each leaf's dtype (optax's argument order:
  a float32 learning rate does not widen a bfloat16 leaf); an integer or bool leaf times a
  floating scalar, or a real one times a complex scalar, in the dtype they promote to, as
  optax's (:func:`kinds_scaled_apart`). A float16 leaf is multiplied in float32 and
  rounded once (:func:`gradtx.numerics.scaling_dtype`), where optax rounds the scalar to
  float16 first (a learning rate of 1e-8 is 0 in float16)."""
  apart, of_scalar = kinds_scaled_apart(scalar)

  def times(x):
    if x.dtype.kind in apart:  # rare: an integer leaf, a complex scalar
      dtype = scaled_dtype(of_scalar, x)
      return as_dtype(scalar, dtype) * as_dtype(x, dtype)
    work = scaling_dtype(x.dtype)  # the leaf's own but for float16 (no-op casts then)
    return as_dtype(as_dtype(scalar, work) * as_dtype(x, work), x.dtype)
  try:
    return tree_map(times, numbers_as_arrays(tree))
  except (TypeError, ValueError):  # jax's "mul got incompatible shapes for broadcasting"
    if np.shape(scalar) != ():
      check_argument("scale", "scalar", scalar, Range(), scalar=True)
    raise


@names_structure_mismatch("tree_x", "tree_y")
def where(condition: jax.typing.ArrayLike, tree_x: PyTree, tree_y: PyTree) -> PyTree:
  """Leafwise ``x if condition else y`` (``condition`` broadcast against each leaf)."""
  return tree_map(lambda x, y: jnp.where(condition, x, y), tree_x, tree_y)


def _staged(x: Any) -> bool:
  """Whether ``x`` is being staged into a program (``jax.jit``, ``jax.make_jaxpr``, a scan's body)."""
  return isinstance(x, _STAGING_TRACERS)


def _signature(args: tuple) -> tuple | None:
  """The structure, shapes and dtypes of a leaf's arguments to a rule (a moment, a list of
  factored ones); ``None`` unless their leaves are all arrays."""
  leaves, treedef = jax.tree.flatten(args)
  if not all(isinstance(x, jax.Array) for x in leaves):
    return None
  return treedef, tuple((x.shape, x.dtype) for x in leaves)


# A rule of fewer operations is traced leaf by leaf: calling a nested jit costs about as
# much Python time as staging three operations (sgd's momentum, a learning rate).
_MIN_NESTED = 4


def _n_equations(jaxpr: Any) -> int:
  """The operations of ``jaxpr``, those of the jaxprs it calls included."""
  n = 0
  for eqn in jaxpr.eqns:
    inner = [getattr(v, "jaxpr", v) for v in eqn.params.values() if hasattr(v, "eqns")
             or hasattr(getattr(v, "jaxpr", None), "eqns")]
    n += 1 + sum(_n_equations(j) for j in inner)
  return n


def _traced_once_per_signature(fn: Callable[..., tuple]) -> jax.stages.Wrapped:
  """``fn`` as a nested ``jax.jit``: leaves of one shape and dtype share one trace of it.

  Staging a rule costs Python time for every operation of every leaf (Adam's
  ~20, about 0.3 ms a leaf with lowering), and a tree repeats a few shapes many
  times (every layer of a transformer has the same ones). A nested jit is traced
  once per shape and dtype and lowered once; XLA inlines the calls, and the step
  computes what it computed traced leaf by leaf, bit for bit
  (``tests/test_tree_utils.py``). Scalars the rule shares across leaves
  (:func:`gradtx.numerics.shared`) are shared within each trace.
  """
  @functools.wraps(fn)  # its name in the jaxpr: the stage's rule ("leaf", "scale_leaf")
  def rule(*leaves: Any) -> tuple:
    with shared_scalars():
      return fn(*leaves)
  return jax.jit(rule)


def _map_leafwise(fn: Callable[..., tuple], n_out: int, tree: PyTree, rest: tuple[PyTree, ...],
                  is_leaf: Callable[[Any], bool]) -> tuple[PyTree, ...]:
  """The one loop behind :func:`map_multi`, :func:`map_leaves`, :func:`tree_map` and
  :func:`block_map`."""
  leaves, treedef = jax.tree.flatten(tree, is_leaf=is_leaf)
  others = [treedef.flatten_up_to(r) for r in rest]  # type: ignore[attr-defined]  # jax's PyTreeDef is untyped
  outs: list[list[Any]] = [[] for _ in range(n_out)]
  args = [(leaf, *(o[i] for o in others)) for i, leaf in enumerate(leaves)]
  # A signature that repeats is traced once (a nested jit); a leaf of a shape of its own
  # is traced as it is, where a nested jit would only add its own cost. Eager steps (and
  # those under an eager grad or vmap) never nest one: it would compile at every step.
  staged = any(_staged(leaf) for leaf in leaves)
  signatures = [_signature(a) if staged else None for a in args]
  repeats = collections.Counter(s for s in signatures if s is not None)
  staged_fn = _traced_once_per_signature(fn) if any(n > 1 for n in repeats.values()) else None
  nested: dict[tuple, bool] = {}  # per signature: whether the rule is long enough to nest
  with shared_scalars():  # per-step coefficients traced once, not once per leaf
    for leaf, a, signature in zip(leaves, args, signatures):
      if is_masked(leaf):
        results = (leaf,) * n_out
      elif staged_fn is not None and signature is not None and repeats[signature] > 1:
        if signature not in nested:  # traced once here; the calls below reuse this trace
          try:
            nested[signature] = _n_equations(staged_fn.trace(*a).jaxpr.jaxpr) >= _MIN_NESTED
          except TypeError:  # it returns more than arrays (a dtype, a flag): run as it is
            nested[signature] = False
        results = staged_fn(*a) if nested[signature] else fn(*a)
      else:
        results = fn(*a)
      for out, r in zip(outs, results):
        out.append(r)
  return tuple(jax.tree.unflatten(treedef, out) for out in outs)


def map_multi(fn: Callable[..., tuple], n_out: int, tree: PyTree,
              *rest: PyTree) -> tuple[PyTree, ...]:
  """Maps ``fn`` returning an ``n_out``-tuple over leaves; returns ``n_out`` trees.

  ``rest`` trees must have ``tree``'s structure (check with
  :func:`check_structure` first); masked-out leaves stay masked in every output.
  A packed buffer is one leaf here: use this for elementwise rules. In a staged
  step, leaves whose arguments repeat a shape and dtype share one trace of
  ``fn`` (a nested ``jax.jit``, which XLA inlines: the step is the same).
  """
  return _map_leafwise(fn, n_out, tree, rest, is_masked)


def map_leaves(fn: Callable[..., tuple], shaped: tuple[bool, ...], tree: PyTree,
               *rest: PyTree) -> tuple[PyTree, ...]:
  """:func:`map_multi` for a rule that needs each leaf's own shape, in packed mode too.

  On a tree of arrays it is :func:`map_multi` with ``n_out = len(shaped)``.
  A :class:`gradtx.packed.Packed` node of ``tree`` is not one leaf but many:
  ``fn`` runs on each of its leaves, batched over the leaves of one shape
  (:meth:`gradtx.packed.Packed.map_runs`). An output marked ``shaped`` has
  the leaf's shape and comes back packed; the others (row statistics, a flag
  per leaf) come back as a :class:`gradtx.packed.PackedLeaves`, which the
  same position of ``rest`` then holds at the next step.
  """
  def one(leaf, *others):
    return leaf.map_runs(fn, shaped, *others) if _is_packed(leaf) else fn(leaf, *others)
  return _map_leafwise(one, len(shaped), tree, rest, _is_node)


def split_key_per_leaf(key: jax.Array, tree: PyTree) -> PyTree:
  """One sub-key per leaf of ``tree``, split in the tree's leaf order.

  A :class:`gradtx.packed.Packed` node counts as the leaves it holds and gets
  their keys as a :class:`gradtx.packed.PackedLeaves`, so a packed tree draws
  what the same tree unpacked draws (with :func:`map_leaves`). A
  :class:`MaskedNode` counts as none and stays as it is: a leaf masked out
  (by :func:`gradtx.masked`, or for its ``None`` gradient) has no leaves in
  optax's tree either, so the leaves after it draw what optax's draw; a leaf
  of a packed tree that a mask hides counts as none too.
  """
  from gradtx.packed import PackedLeaves, visible_leaves  # pylint: disable=import-outside-toplevel
  nodes, treedef = jax.tree.flatten(tree, is_leaf=_is_node)
  # Per node, whether each of its leaves takes a key: a packed leaf that a mask hides
  # (zeroed, where tree mode has a MaskedNode) takes none, and its draw is discarded.
  takes = [visible_leaves(n.layout) if _is_packed(n) else () if is_masked(n) else (True,)
           for n in nodes]
  try:
    keys = iter(jax.random.split(key, sum(sum(t) for t in takes)))
  except (TypeError, ValueError):  # jax's "JAX encountered invalid PRNG key data"
    raise not_a_prng_key("split_key_per_leaf", key) from None
  out = []
  for node, node_takes in zip(nodes, takes):
    part = [next(keys) if t else key for t in node_takes]
    out.append(PackedLeaves.from_leaves(node.layout, part) if _is_packed(node)
               else node if is_masked(node) else part[0])
  return jax.tree.unflatten(treedef, out)


def not_a_prng_key(function: str, key: Any, or_none: bool = False) -> ArgumentTypeError:
  """The error of ``function`` given a ``key`` that is no PRNG key (``3``), where jax said
  "JAX encountered invalid PRNG key data", naming neither the function nor the argument."""
  allowed = " or None" if or_none else ""
  return ArgumentTypeError.about(
      function, "key", key, "must be a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0))"
      f"{allowed}, got {type(key).__name__}: {key!r}")


# Per-leaf ("block") reductions. Primitives that need a statistic of each leaf
# (its norm, its mean square) call these on the whole tree and get back a tree
# of values that broadcast against each leaf. Keeping them here, rather than
# inside a primitive's per-leaf function, is what lets a packed buffer that
# holds many leaves answer with per-segment statistics.


@functools.cache
def _packed_types() -> tuple[type[Packed], type[PackedLeaves]]:
  """``(Packed, PackedLeaves)``, imported on first use: packed builds on this module."""
  from gradtx.packed import Packed, PackedLeaves
  return Packed, PackedLeaves


def _is_packed(x: Any) -> bool:
  return isinstance(x, _packed_types()[0])


def _is_packed_kind(x: Any) -> bool:
  """A :class:`gradtx.packed.Packed` or :class:`gradtx.packed.PackedLeaves` node."""
  return isinstance(x, _packed_types())


def block_map(fn: Callable[[jax.Array], jax.Array], tree: PyTree) -> PyTree:
  """Per leaf, ``fn(leaf)`` (a scalar statistic of the whole leaf), broadcastable against it.

  The one place where a per-leaf reduction meets packed mode: a
  :class:`gradtx.packed.Packed` node answers with ``fn`` of each leaf's
  segment spread over the segment's entries, so the result maps against the
  tree with :func:`tree_map` in both modes.
  """
  @functools.wraps(fn)
  def one(x):
    return (x.block_map(fn) if _is_packed(x) else fn(x)),
  try:
    out, = _map_leafwise(one, 1, tree, (), lambda x: is_masked(x) or _is_packed(x))
  except TypeError:  # Python's "'int' object is not callable"
    check_callable("block_map", "fn", fn, "a function of one leaf")
    raise
  return out


def _size(x: jax.Array) -> jax.Array:
  return jnp.asarray(jnp.size(x), jnp.float32)


def block_sum_squares(tree: PyTree) -> PyTree:
  """Per leaf, :math:`\\sum_i |x_i|^2` (float32 or wider), broadcastable against the leaf."""
  return block_map(_leaf_sum_squares, tree)


def block_size(tree: PyTree) -> PyTree:
  """Per leaf, its number of entries, broadcastable against the leaf."""
  return block_map(_size, tree)


def block_norm(tree: PyTree) -> PyTree:
  """Per leaf, its l2 norm, broadcastable against the leaf."""
  return block_map(lambda x: safe_sqrt(_leaf_sum_squares(x)), tree)


def block_rms(tree: PyTree) -> PyTree:
  """Per leaf, its root mean square, broadcastable against the leaf."""
  def rms(x: jax.Array) -> jax.Array:
    s = _leaf_sum_squares(x)
    return safe_sqrt(s / _size(x).astype(s.dtype))
  return block_map(rms, tree)


# optax.tree's names that gradtx.tree_utils defines (under optax's older tree_*
# names). They are looked up on first use: tree_utils is built on this module.
_FROM_TREE_UTILS = frozenset({
    "add_scale", "allclose", "batch_shape", "bias_correction", "clip", "conj", "div", "dtype",
    "get", "get_all_with_path", "map_params", "max", "min", "mul", "norm", "ones_like",
    "random_like", "real", "set", "size", "split_key_like", "sum", "unwrap_random_key_data",
    "update_infinity_moment", "update_moment", "update_moment_per_elem_norm", "vdot"})


def __getattr__(name: str) -> Any:
  if name in _FROM_TREE_UTILS:
    from gradtx import tree_utils  # pylint: disable=import-outside-toplevel
    return getattr(tree_utils, f"tree_{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | _FROM_TREE_UTILS)
