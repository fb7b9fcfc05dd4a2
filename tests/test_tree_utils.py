"""gradtx.tree_utils and gradtx.utilities against numpy, and tree_get/tree_set on real states.

Tree math runs on a multi-leaf tree in float32 and float64, jitted and not,
against the same computation on the flattened float64 numpy entries. The
moment helpers run several steps against numpy recurrences. tree_get and
tree_set run on gradtx states (chains, nested chains, masked stages,
hyperparameters in HParams, schedules) and on optax states, where they must
agree with optax.tree_utils.
"""

from __future__ import annotations

import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx
from gradtx import tree_utils as tu
from gradtx import utilities as U
from gradtx.errors import ArgumentTypeError, HyperparameterError, StructureError

SHAPES = {"a": (3,), "b": (2, 2), "c": ()}


def _tol(dtype):
  return dict(rtol=1e-5, atol=1e-6) if dtype == jnp.float32 else dict(rtol=1e-12, atol=1e-13)


def _tree(seed, dtype, shapes=SHAPES):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in shapes.items()}


def _np(tree):
  return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(tree[k], np.float64)) for k in sorted(tree)])


def _assert_tree(out, expected, dtype, tol=None):
  assert set(out) == set(expected)
  for k in expected:
    assert out[k].dtype == dtype, (k, out[k].dtype)
    np.testing.assert_allclose(np.asarray(out[k], np.float64), expected[k], **(tol or _tol(dtype)))


# ----------------------------------------------------------------------------
# Arithmetic and reductions.


def test_leafwise_arithmetic(dtype, run):
  x, y, z = _tree(0, dtype), _tree(1, dtype), _tree(2, dtype)
  nx, ny, nz = _np(x), _np(y), _np(z)
  _assert_tree(run(tu.tree_add, x, y, z), {k: nx[k] + ny[k] + nz[k] for k in nx}, dtype)
  _assert_tree(run(tu.tree_sub, x, y), {k: nx[k] - ny[k] for k in nx}, dtype)
  _assert_tree(run(tu.tree_mul, x, y), {k: nx[k] * ny[k] for k in nx}, dtype)
  _assert_tree(run(tu.tree_div, x, y), {k: nx[k] / ny[k] for k in nx}, dtype)
  _assert_tree(run(lambda t: tu.tree_scale(0.3, t), x), {k: 0.3 * nx[k] for k in nx}, dtype)
  _assert_tree(run(lambda a, b: tu.tree_add_scale(a, -1.5, b), x, y),
               {k: nx[k] - 1.5 * ny[k] for k in nx}, dtype)
  _assert_tree(run(lambda t: tu.tree_clip(t, -0.5, 0.25), x),
               {k: np.clip(nx[k], -0.5, 0.25) for k in nx}, dtype)
  _assert_tree(run(lambda t: tu.tree_clip(t, None, 0.25), x),
               {k: np.minimum(nx[k], 0.25) for k in nx}, dtype)
  _assert_tree(run(lambda a, b: tu.tree_where(jnp.asarray(True), a, b), x, y), nx, dtype)
  _assert_tree(run(lambda a, b: tu.tree_where(jnp.asarray(False), a, b), x, y), ny, dtype)


def test_python_number_leaves():
  # A Python number is a leaf as an array is (optax's functions take it): tree_add,
  # tree_scale, tree_add_scale, tree_clip and tree_bias_correction read its .dtype and
  # failed with AttributeError. It is taken as jit takes it, a weakly typed float32.
  x, y = {"a": jnp.array([1.0, -4.0]), "t": 2.0}, {"a": jnp.array([0.5, 0.5]), "t": 0.5}
  cases = [
      (tu.tree_add(x, y, y), {"a": [2.0, -3.0], "t": 3.0}),
      (gtx.tree.add(x, y), {"a": [1.5, -3.5], "t": 2.5}),
      (tu.tree_scale(0.5, x), {"a": [0.5, -2.0], "t": 1.0}),
      (tu.tree_add_scale(x, -2.0, y), {"a": [0.0, -5.0], "t": 1.0}),
      (tu.tree_clip(x, -1.0, 1.5), {"a": [1.0, -1.0], "t": 1.5}),
      (tu.tree_bias_correction(y, 0.5, jnp.asarray(1)), {"a": [1.0, 1.0], "t": 1.0}),
  ]
  for out, expected in cases:
    for k, value in expected.items():
      assert out[k].dtype == jnp.float32, k
      np.testing.assert_allclose(out[k], value)
  # tree_cast and tree_cast_like called .astype on it (optax's too).
  half = {"a": jnp.zeros(2, jnp.float16), "t": jnp.zeros((), jnp.bfloat16)}
  for out, dtypes in [(tu.tree_cast(x, jnp.float16), (jnp.float16, jnp.float16)),
                      (tu.tree_cast_like(x, half), (jnp.float16, jnp.bfloat16))]:
    assert (out["a"].dtype, out["t"].dtype) == dtypes
    np.testing.assert_allclose(np.asarray(out["a"], np.float64), [1.0, -4.0])
    np.testing.assert_allclose(np.asarray(out["t"], np.float64), 2.0)


def test_add_scale_keeps_none_leaves():
  out = tu.tree_add_scale({"a": None, "b": jnp.ones(2)}, 2.0, {"a": None, "b": jnp.ones(2)})
  assert out["a"] is None
  np.testing.assert_allclose(out["b"], [3.0, 3.0])



# Each function of two or more trees of one structure, called on trees that differ at ['c'].
_X, _Y = {"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": jnp.ones(2), "c": jnp.ones(2)}
_MISMATCHED_CALLS = [
    ("tree_add", tu.tree_add, (_X, _Y), "tree_x", "tree_y"),
    ("tree_add", tu.tree_add, (_X, _X, _Y), "tree_x", "other_trees[0]"),
    ("tree_sub", tu.tree_sub, (_X, _Y), "tree_x", "tree_y"),
    ("tree_mul", tu.tree_mul, (_X, _Y), "tree_x", "tree_y"),
    ("tree_div", tu.tree_div, (_X, _Y), "tree_x", "tree_y"),
    ("tree_add_scale", tu.tree_add_scale, (_X, 2.0, _Y), "tree_x", "tree_y"),
    ("tree_vdot", tu.tree_vdot, (_X, _Y), "tree_x", "tree_y"),
    ("tree_where", tu.tree_where, (True, _X, _Y), "tree_x", "tree_y"),
    ("tree_allclose", tu.tree_allclose, (_X, _Y), "a", "b"),
    ("tree_cast_like", tu.tree_cast_like, (_X, _Y), "tree", "other_tree"),
    ("tree_update_moment", tu.tree_update_moment, (_X, _Y, 0.9, 2), "updates", "moments"),
    ("tree_update_infinity_moment", tu.tree_update_infinity_moment, (_X, _Y, 0.9, 0.0),
     "updates", "moments"),
    ("tree_update_moment_per_elem_norm", tu.tree_update_moment_per_elem_norm, (_X, _Y, 0.9, 2),
     "updates", "moments"),
    ("update_moment", U.update_moment, (_X, _Y, 0.9, 2), "updates", "moments"),
    ("update_infinity_moment", U.update_infinity_moment, (_X, _Y, 0.9, 0.0), "updates",
     "moments"),
    ("update_moment_per_elem_norm", U.update_moment_per_elem_norm, (_X, _Y, 0.9, 2), "updates",
     "moments"),
    ("incremental_update", U.incremental_update, (_X, _Y, 0.5), "new_tensors", "old_tensors"),
    ("periodic_update", U.periodic_update, (_X, _Y, jnp.asarray(1), 2), "new_tensors",
     "old_tensors"),
    # optax.tree's names, which every stage's update calls.
    ("add", gtx.tree.add, (_X, _Y), "tree_x", "tree_y"),
    ("add", gtx.tree.add, (_X, _X, _Y), "tree_x", "other_trees[0]"),
    ("sub", gtx.tree.sub, (_X, _Y), "tree_x", "tree_y"),
    ("inner", gtx.tree.inner, (_X, _Y), "tree_x", "tree_y"),
    ("where", gtx.tree.where, (True, _X, _Y), "tree_x", "tree_y"),
    ("cast_like", gtx.tree.cast_like, (_X, _Y), "tree", "other_tree"),
]


@pytest.mark.parametrize("name, fn, args, first, other", _MISMATCHED_CALLS)
def test_functions_of_trees_of_one_structure_name_the_key_path_where_they_differ(
    name, fn, args, first, other):
  # JAX's own error ("Dict key mismatch; expected keys: ['a', 'b']; ...") named neither
  # the function nor the argument.
  with pytest.raises(StructureError) as error:
    fn(*args)
  assert str(error.value) == (f"{name}: {other} and {first} differ in structure: key path "
                              f"['b'] is in {first} but not in {other}")


def test_functions_of_trees_of_one_structure_keep_other_errors_and_name_containers():
  with pytest.raises(StructureError, match=r"^tree_sub: tree_y and tree_x differ in structure: "
                     r"the containers differ: tree_x is PyTreeDef\(\[\*\]\), tree_y is "
                     r"PyTreeDef\(\(\*,\)\)$"):
    tu.tree_sub([jnp.ones(1)], (jnp.ones(1),))
  # Trees of one structure whose leaves do not broadcast: JAX's "add got incompatible
  # shapes for broadcasting: (2,), (3,)" named neither the function nor the leaf. Leaves
  # that broadcast (['a']) are not blamed: they are optax's broadcasting, and pass.
  with pytest.raises(StructureError, match=r"^tree_add: tree_y and tree_x differ in shape at "
                     r"key path \['b'\]: \(3,\) in tree_y, \(2,\) in tree_x"):
    tu.tree_add({"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": jnp.ones(()), "b": jnp.ones(3)})
  with pytest.raises(StructureError, match=r"^tree_vdot: tree_y and tree_x differ in shape at "
                     r"key path \['a'\]: \(2,\) in tree_y, \(3,\) in tree_x"):
    jax.jit(tu.tree_vdot)({"a": jnp.ones(3)}, {"a": jnp.ones(2)})
  np.testing.assert_array_equal(tu.tree_add({"a": jnp.ones(2)}, {"a": jnp.ones(())})["a"],
                                [2.0, 2.0])


# gtx.tree's leaves that do not broadcast (for inner: are not equal) raised JAX's "add got
# incompatible shapes for broadcasting: (2,), (3,)" or "dot_general requires contracting
# dimensions to have the same shape", naming neither the function nor the leaf.
@pytest.mark.parametrize("name, call", [
    ("add", lambda x, y: gtx.tree.add(x, y)),
    ("sub", lambda x, y: gtx.tree.sub(x, y)),
    ("inner", lambda x, y: gtx.tree.inner(x, y)),
    ("inner", jax.jit(lambda x, y: gtx.tree.inner(x, y))),
    ("where", lambda x, y: gtx.tree.where(True, x, y)),
])
def test_tree_functions_name_the_leaf_whose_shapes_do_not_broadcast(name, call):
  with pytest.raises(StructureError, match=rf"^{name}: tree_y and tree_x differ in shape at "
                     r"key path \['b'\]: \(3,\) in tree_y, \(2,\) in tree_x"):
    call({"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": jnp.ones(2), "b": jnp.ones(3)})


# Bad arguments to gtx.tree's functions, and what JAX, numpy or Python said of them before.
_TREE = {"a": jnp.ones(2), "b": jnp.ones(3)}
_BAD_TREE_ARGUMENTS = [
    # "mul got incompatible shapes for broadcasting: (2,), (3,)"
    (lambda: gtx.tree.scale(jnp.ones(2), _TREE), HyperparameterError,
     "scale: scalar must be a scalar, got shape (2,)"),
    # "data type 'flaot32' not understood"
    (lambda: gtx.tree.cast(_TREE, "flaot32"), HyperparameterError,
     "cast: dtype must be a dtype (jnp.float32, jnp.bfloat16, ...) or None (the params' dtype), "
     "got 'flaot32'"),
    (lambda: gtx.tree.zeros_like(_TREE, "flaot32"), HyperparameterError,
     "zeros_like: dtype must be a dtype (jnp.float32, jnp.bfloat16, ...) or None (the params' "
     "dtype), got 'flaot32'"),
    # "Value 'x' with dtype <U1 is not a valid JAX array type"; a Python number is a leaf.
    *((lambda fn=fn: fn({"a": 1.0, "b": "x"}), StructureError,
       f"{name}: the leaves at key path ['b'] hold a str, not an array: {gtx.tree.ARRAYS_ONLY}")
      for name, fn in [("sum_squares", gtx.tree.sum_squares),
                       ("sum_squares", gtx.tree.global_norm),
                       ("full_like", lambda tree: gtx.tree.full_like(tree, 1.0))]),
    # "'int' object is not callable"
    (lambda: gtx.tree.block_map(3, _TREE), TypeError,
     "block_map: fn must be a function of one leaf, got 3"),
    # "JAX encountered invalid PRNG key data: expected key_data to have ndim, shape, and dtype"
    (lambda: gtx.tree.split_key_per_leaf(3, _TREE), ArgumentTypeError,
     "split_key_per_leaf: key must be a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), "
     "got int: 3"),
]


@pytest.mark.parametrize("call, kind, message", _BAD_TREE_ARGUMENTS)
def test_tree_functions_name_a_bad_argument(call, kind, message):
  with pytest.raises(kind) as error:
    call()
  assert str(error.value) == message


@pytest.mark.parametrize("name, fn, rest", [
    ("incremental_update", U.incremental_update, (0.5,)),
    ("periodic_update", U.periodic_update, (jnp.asarray(3), 3)),
])
@pytest.mark.parametrize("new_shape, old_shape", [((3,), (2,)), ((2, 3), (3,))])
def test_averages_of_params_refuse_leaves_of_another_shape(name, fn, rest, new_shape,
                                                           old_shape):
  # (3,) against (2,) raised JAX's "add got incompatible shapes for broadcasting" (or
  # jnp.where's "Incompatible shapes for broadcasting"), naming neither the function nor
  # the leaf; (2, 3) against (3,) was broadcast into an average (a copy) of shape (2, 3),
  # where the one kept is (3,), silently (as optax does).
  new = {"b": jnp.ones(2), "w": jnp.ones(new_shape)}
  old = {"b": jnp.zeros(2), "w": jnp.zeros(old_shape)}
  with pytest.raises(StructureError) as error:
    fn(new, old, *rest)
  assert str(error.value) == (f"{name}: old_tensors and new_tensors differ in shape at key path "
                              f"['w']: {old_shape} in old_tensors, {new_shape} in new_tensors")


_A, _B = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}


@pytest.mark.parametrize("call, message", [
    (lambda: U.incremental_update(_A, _B, object()),
     "incremental_update: step_size must be a number in [0, 1], got <object"),
    (lambda: U.incremental_update(_A, _B, "0.5"),
     "incremental_update: step_size must be a number in [0, 1], got '0.5' (convert it with "
     "float())"),
    (lambda: U.incremental_update(_A, _B, None),
     "incremental_update: step_size must be a number in [0, 1], got None"),
    (lambda: U.incremental_update(_A, _B, float("nan")),
     "incremental_update: step_size must be in [0, 1], got nan"),
    (lambda: U.incremental_update(_A, _B, 1.5),
     "incremental_update: step_size must be in [0, 1], got 1.5"),
    (lambda: U.incremental_update(_A, _B, -0.1),
     "incremental_update: step_size must be in [0, 1], got -0.1"),
    (lambda: U.incremental_update(_A, _B, jnp.ones(2)),
     "incremental_update: step_size must be a scalar, got shape (2,)"),
    (lambda: U.incremental_update(_A, _B, jnp.asarray(0.5j)),
     "incremental_update: step_size must be a real number in [0, 1]"),
    (lambda: U.periodic_update(_A, _B, jnp.asarray(4), 0),
     "periodic_update: update_period must be in [1, 2147483647] (an integer), got 0"),
    (lambda: U.periodic_update(_A, _B, jnp.asarray(4), -2),
     "periodic_update: update_period must be in [1, 2147483647] (an integer), got -2"),
    (lambda: U.periodic_update(_A, _B, jnp.asarray(4), 2.5),
     "periodic_update: update_period must be in [1, 2147483647] (an integer), got 2.5"),
    (lambda: U.periodic_update(_A, _B, jnp.asarray(4), "3"),
     "periodic_update: update_period must be a number in [1, 2147483647] (an integer), got "
     "'3' (convert it with int())"),
    (lambda: U.periodic_update(_A, _B, jnp.asarray(4), jnp.asarray(2.0)),
     "periodic_update: update_period must be in [1, 2147483647] (an integer), got an array "
     "of dtype float32"),
    (lambda: U.periodic_update(_A, _B, 2.5, 2),
     "periodic_update: steps must be in [0, 2147483647] (an integer), got 2.5"),
    (lambda: U.periodic_update(_A, _B, None, 2),
     "periodic_update: steps must be a number in [0, 2147483647] (an integer), got None"),
    (lambda: U.periodic_update(_A, _B, jnp.asarray(2.5), 2),
     "periodic_update: steps must be in [0, 2147483647] (an integer), got an array of dtype "
     "float32"),
    (lambda: jax.jit(U.periodic_update)(_A, _B, jnp.ones(2, jnp.int32), 2),
     "periodic_update: steps must be a scalar, got shape (2,)"),
])
def test_averages_of_params_name_a_bad_step_size_period_or_step(call, message):
  # step_size='0.5' or object() raised jax's "Value '0.5' with dtype <U3 is not a valid JAX
  # array type", update_period='3' or None "Error interpreting argument to <function
  # remainder>" or "remainder requires ndarray or scalar arguments", an array step_size of
  # shape (2,) "mul got incompatible shapes for broadcasting", naming neither the function
  # nor the argument; step_size=1.5, NaN or -0.1 extrapolated and update_period=0, -2 or
  # 2.5 copied never or on the wrong steps, without a word. An array is checked only for
  # its shape and dtype (nothing is read back from the device).
  with pytest.raises(HyperparameterError) as error:
    call()
  assert str(error.value).startswith(message)


_STATE = gtx.adam(1e-3).init({"w": jnp.ones(2)})


@pytest.mark.parametrize("call, message", [
    (lambda: tu.tree_set(_STATE, 3, count=1),
     "tree_set: filtering must be None or a function filtering(path, value) -> bool, got 3"),
    (lambda: tu.tree_get(_STATE, "mu", filtering="adam"),
     "tree_get: filtering must be None or a function filtering(path, value) -> bool, got "
     "'adam'"),
    (lambda: tu.tree_get_all_with_path(_STATE, "mu", 3),
     "tree_get_all_with_path: filtering must be None or a function filtering(path, value) -> "
     "bool, got 3"),
    (lambda: tu.tree_map_params(gtx.adam(1e-3), 3, _STATE),
     "tree_map_params: f must be a function f(leaf, *rest_leaves), got 3"),
    (lambda: tu.tree_map_params(gtx.adam(1e-3), jnp.shape, _STATE, transform_non_params=0),
     "tree_map_params: transform_non_params must be None or a function of a leaf, got 0"),
    (lambda: tu.tree_map_params(gtx.adam(1e-3), jnp.shape, _STATE, is_leaf=True),
     "tree_map_params: is_leaf must be None or a function of a leaf, got True"),
])
def test_state_helpers_name_a_function_argument_that_is_not_one(call, message):
  # Each raised Python's "'int' object is not callable" (or 'str', 'bool') from inside the
  # search or jax's tree.map, naming neither the function nor the argument.
  with pytest.raises(TypeError) as error:
    call()
  assert str(error.value) == message


def test_reductions(dtype, run):
  x, y = _tree(3, dtype), _tree(4, dtype)
  fx, fy = _flat(x), _flat(y)
  tol = _tol(dtype)
  np.testing.assert_allclose(run(tu.tree_vdot, x, y), fx @ fy, **tol)
  np.testing.assert_allclose(run(tu.tree_sum, x), fx.sum(), **tol)
  np.testing.assert_allclose(run(lambda t: tu.tree_sum(t, associative_reduction=True), x),
                             fx.sum(), **tol)
  np.testing.assert_allclose(run(tu.tree_max, x), fx.max(), **tol)
  np.testing.assert_allclose(run(tu.tree_min, x), fx.min(), **tol)
  assert tu.tree_size(x) == fx.size == 8
  for ord_, expected in [(None, np.linalg.norm(fx)), (2, np.linalg.norm(fx)),
                         (1, np.abs(fx).sum()), ("inf", np.abs(fx).max()),
                         (jnp.inf, np.abs(fx).max())]:
    norm = run(lambda t, o=ord_: tu.tree_norm(t, ord=o), x)
    assert norm.dtype == dtype
    np.testing.assert_allclose(norm, expected, **tol)
    np.testing.assert_allclose(run(lambda t, o=ord_: tu.tree_norm(t, ord=o, squared=True), x),
                               expected ** 2, **tol)


def test_reductions_edge_cases():
  assert float(tu.tree_max({"a": jnp.zeros(0), "b": jnp.array([2.0])})) == 2.0
  assert float(tu.tree_max({})) == -np.inf and float(tu.tree_min({})) == np.inf
  # No entries, norm 0 in every ord: the l-infinity norm took tree_max's -inf (and its
  # square was +inf), as optax's does.
  for empty in ({}, {"a": jnp.zeros(0), "b": None}):
    for ord_, squared in itertools.product([None, 1, "inf", jnp.inf], [False, True]):
      assert float(tu.tree_norm(empty, ord=ord_, squared=squared)) == 0.0, (ord_, squared)
  assert float(tu.tree_norm({"a": jnp.zeros(0), "b": jnp.array([-3.0, 2.0])}, ord="inf")) == 3.0
  with pytest.raises(ValueError, match="tree_norm: ord must be one of"):
    tu.tree_norm({"a": jnp.ones(2)}, ord=3)
  # bfloat16 is summed in float32 (gradtx.tree.global_norm).
  big = {"a": jnp.full(4096, 1.0, jnp.bfloat16)}
  assert float(tu.tree_norm(big, squared=True)) == 4096.0


def test_complex_vdot_conj_real():
  x = {"a": jnp.array([1 + 2j, 3 - 1j])}
  y = {"a": jnp.array([2 - 1j, 1j])}
  nx, ny = np.asarray(x["a"]), np.asarray(y["a"])
  np.testing.assert_allclose(tu.tree_vdot(x, y), np.vdot(nx, ny), rtol=1e-6)
  np.testing.assert_allclose(tu.tree_conj(x)["a"], np.conj(nx))
  np.testing.assert_allclose(tu.tree_real(x)["a"], nx.real)
  np.testing.assert_allclose(tu.tree_norm(x), np.linalg.norm(nx), rtol=1e-6)


def test_like_and_casts(dtype):
  x = _tree(5, dtype)
  for out, value in [(tu.tree_zeros_like(x), 0.0), (tu.tree_ones_like(x), 1.0),
                     (tu.tree_full_like(x, 2.5), 2.5)]:
    _assert_tree(out, {k: np.full(s, value) for k, s in SHAPES.items()}, dtype)
  assert tu.tree_ones_like(x, jnp.int32)["a"].dtype == jnp.int32
  assert tu.tree_full_like(x, 3, jnp.bfloat16)["b"].dtype == jnp.bfloat16
  assert tu.tree_cast(x, jnp.bfloat16)["a"].dtype == jnp.bfloat16
  assert tu.tree_cast(x, None) is x
  like = {"a": jnp.zeros(3, jnp.float16), "b": 0.0, "c": jnp.zeros((), jnp.int32)}
  cast = tu.tree_cast_like(x, like)
  assert (cast["a"].dtype, cast["b"].dtype, cast["c"].dtype) == (jnp.float16, dtype, jnp.int32)
  assert tu.tree_batch_shape(x, (4, 2))["b"].shape == (4, 2, 2, 2)
  np.testing.assert_allclose(tu.tree_batch_shape(x, (2,))["a"][1], x["a"])
  assert tu.tree_dtype(x) == dtype
  assert bool(tu.tree_allclose(x, tu.tree_add(x, tu.tree_full_like(x, 1e-9))))
  assert not bool(tu.tree_allclose(x, tu.tree_add(x, tu.tree_full_like(x, 1e-3))))
  nan = {"a": jnp.array([np.nan])}
  assert not bool(tu.tree_allclose(nan, nan)) and bool(tu.tree_allclose(nan, nan, equal_nan=True))


def test_tree_dtype_mixed():
  t = {"a": jnp.ones(2, jnp.float16), "b": jnp.ones(2)}
  assert tu.tree_dtype(t, "promote") == jnp.float32
  assert tu.tree_dtype(t, "highest") == jnp.float32
  assert tu.tree_dtype(t, "lowest") == jnp.float16
  with pytest.raises(ValueError, match=r"\['b'\]: float32"):
    tu.tree_dtype(t)
  with pytest.raises(ValueError, match="mixed_dtype_handler must be"):
    tu.tree_dtype(t, "widest")
  halves = {"a": jnp.ones(2, jnp.float16), "b": jnp.ones(2, jnp.bfloat16)}
  with pytest.raises(ValueError, match="cannot order float16 and bfloat16"):
    tu.tree_dtype(halves, "highest")
  assert tu.tree_dtype(halves, "promote") == jnp.float32
  # The docstring gave int32 and uint32 as unordered; without x64 they promote to int32, so
  # they are ordered (as in optax); only under x64 (int64) are they not.
  mixed_ints = {"a": jnp.ones(2, jnp.int32), "b": jnp.ones(2, jnp.uint32)}
  assert (tu.tree_dtype(mixed_ints, "highest"), tu.tree_dtype(mixed_ints, "lowest")) == (
      jnp.int32, jnp.uint32)
  assert "(float16 and bfloat16)" in " ".join(tu.tree_dtype.__doc__.split())


def test_random_trees_take_one_key_per_leaf_in_leaf_order(dtype):
  key = jax.random.key(3)
  x = _tree(6, dtype)
  keys = tu.tree_split_key_like(key, x)
  expected = jax.random.split(key, 3)  # leaf order: a, b, c
  for i, k in enumerate(["a", "b", "c"]):
    np.testing.assert_array_equal(jax.random.key_data(keys[k]),
                                  jax.random.key_data(expected[i]))
  draws = tu.tree_random_like(key, x)
  for i, k in enumerate(["a", "b", "c"]):
    assert draws[k].dtype == dtype
    np.testing.assert_array_equal(draws[k], jax.random.normal(expected[i], SHAPES[k], dtype))
  uniform = tu.tree_random_like(key, x, jax.random.uniform, jnp.float32)
  assert uniform["b"].dtype == jnp.float32 and float(tu.tree_min(uniform)) >= 0
  # A sampler without out_sharding is called without it.
  calls = []

  def sampler(k, shape, dt):
    calls.append(shape)
    return jnp.zeros(shape, dt)

  tu.tree_random_like(key, x, sampler)
  assert sorted(calls) == sorted(SHAPES.values())


# ----------------------------------------------------------------------------
# Moments, over several steps, against numpy recurrences.


def test_moments_over_steps(dtype, run):
  decay, eps = 0.8, 1e-3
  rng = np.random.default_rng(7)
  grads = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(4)]
  zero = {k: jnp.zeros(s, dtype) for k, s in SHAPES.items()}
  m1, m2, m3, u, e = zero, zero, zero, zero, zero
  r1, r2, r3, ru, re = ({k: np.zeros(s) for k, s in SHAPES.items()} for _ in range(5))

  def step(g, m1, m2, m3, e, u, t):  # one function: one compile for all steps
    return (tu.tree_update_moment(g, m1, decay, 1), tu.tree_update_moment(g, m2, decay, 2),
            tu.tree_update_moment(g, m3, decay, 3),
            tu.tree_update_moment_per_elem_norm(g, e, decay, 2),
            tu.tree_update_infinity_moment(g, u, decay, eps),
            tu.tree_bias_correction(tu.tree_update_moment(g, m1, decay, 1), decay, t))

  for t, g_np in enumerate(grads, start=1):
    g = {k: jnp.asarray(v, dtype) for k, v in g_np.items()}
    m1, m2, m3, e, u, hat = run(step, g, m1, m2, m3, e, u, jnp.asarray(t))
    for k in SHAPES:
      r1[k] = (1 - decay) * g_np[k] + decay * r1[k]
      r2[k] = (1 - decay) * g_np[k] ** 2 + decay * r2[k]
      r3[k] = (1 - decay) * g_np[k] ** 3 + decay * r3[k]  # signed, as optax
      re[k] = (1 - decay) * np.abs(g_np[k]) ** 2 + decay * re[k]
      ru[k] = np.maximum(np.abs(g_np[k]) + eps, decay * ru[k])
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == jnp.float32 else None
    _assert_tree(m1, r1, dtype, tol)
    _assert_tree(m2, r2, dtype, tol)
    _assert_tree(m3, r3, dtype, tol)
    _assert_tree(e, re, dtype, tol)
    _assert_tree(u, ru, dtype, tol)
    _assert_tree(hat, {k: r1[k] / (1 - decay ** t) for k in SHAPES}, dtype, tol)
    # optax's top-level names are the same functions.
    _assert_tree(U.bias_correction(m1, decay, jnp.asarray(t)), _np(hat), dtype, tol)


def test_a_mean_of_squares_made_infinite_stays_infinite():
  # 1e20 squared overflows float32: m + (1 - b)(g^2 - m) was Inf - Inf = NaN at the next
  # update, where optax's (1 - b) g^2 + b m stays Inf (as gradtx's optimizers now do).
  g, m = jnp.array([1e20, 2.0]), jnp.array([jnp.inf, 1.0])
  for update in (tu.tree_update_moment, tu.tree_update_moment_per_elem_norm):
    np.testing.assert_allclose(update(g, m, 0.9, 2), [np.inf, 1.3], rtol=1e-6)
  # An odd power is no square: its Inf - Inf stays NaN, as the rule's is undefined there.
  assert np.isnan(tu.tree_update_moment(jnp.array([-jnp.inf]), jnp.array([jnp.inf]), 0.9, 1))


def test_moments_complex_none_and_held_decay():
  g = {"a": jnp.array([3 + 4j]), "b": None}
  m = {"a": jnp.array([1.0]), "b": None}
  out = tu.tree_update_moment_per_elem_norm(g, m, 0.5, 2)
  np.testing.assert_allclose(out["a"], [0.5 * 25 + 0.5])
  assert out["b"] is None
  np.testing.assert_allclose(tu.tree_update_moment_per_elem_norm(g, m, 0.5, 1)["a"], [3.0])
  # optax's update_moment takes the plain (complex) power.
  np.testing.assert_allclose(tu.tree_update_moment(g, m, 0.5, 2)["a"], [0.5 * (3 + 4j) ** 2 + 0.5],
                             rtol=1e-6)
  inf = tu.tree_update_infinity_moment(g, m, 0.5, 0.0)
  assert inf["b"] is None and inf["a"].dtype == jnp.float32
  np.testing.assert_allclose(inf["a"], [5.0])
  # A decay held as a float64 array (as in a gradtx state under x64) keeps float32 moments.
  with jax.enable_x64(True):
    g32, m32 = jnp.ones(2, jnp.float32), jnp.zeros(2, jnp.float32)
    assert tu.tree_update_moment(g32, m32, jnp.asarray(0.9), 2).dtype == jnp.float32
    assert tu.tree_update_infinity_moment(g32, m32, jnp.asarray(0.9), 1e-8).dtype == jnp.float32


def test_moments_of_float64_numpy_arrays_without_x64_are_float32():
  # Taken for float64, each cast to it warned that float64 is not available (an error
  # under this suite's filterwarnings); optax computes these in numpy, silently.
  g, m = {"a": np.array([2.0, -1.0]), "b": None}, {"a": np.array([1.0, 0.5]), "b": None}
  with jax.enable_x64(False):
    for f, want in ((tu.tree_update_moment, [1.3, 0.55]),
                    (tu.tree_update_moment_per_elem_norm, [1.3, 0.55]),
                    (lambda g, m, d, _: tu.tree_update_infinity_moment(g, m, d, 0.0), [2.0, 1.0])):
      out = f(g, m, 0.9, 2)
      assert out["b"] is None and out["a"].dtype == jnp.float32
      np.testing.assert_allclose(out["a"], want, rtol=1e-6)


def test_top_level_moment_names_are_the_tree_utils_functions():
  g, m = jnp.array([2.0, -1.0]), jnp.array([0.5, 0.5])
  for ours, theirs, extra in [(U.update_moment, tu.tree_update_moment, (0.9, 2)),
                              (U.update_moment_per_elem_norm, tu.tree_update_moment_per_elem_norm,
                               (0.9, 2)),
                              (U.update_infinity_moment, tu.tree_update_infinity_moment,
                               (0.9, 1e-3))]:
    np.testing.assert_array_equal(ours(g, m, *extra), theirs(g, m, *extra))


# ----------------------------------------------------------------------------
# tree_get / tree_set on gradtx states.


PARAMS = {"w": jnp.ones(3), "b": jnp.zeros(2)}


def _paths(found):
  return [jax.tree_util.keystr(p) for p, _ in found]


def test_get_on_adam_state():
  state = gtx.adam(1e-3).init(PARAMS)
  assert int(tu.tree_get(state, "count")) == 0
  np.testing.assert_allclose(tu.tree_get(state, "learning_rate"), 1e-3)
  np.testing.assert_allclose(tu.tree_get(state, "b2"), 0.999)
  assert tu.tree_get(state, "ScaleByAdamState") is state["adam"]
  assert tu.tree_get(state, "adam") is state["adam"]  # a stage by its name
  assert tu.tree_get(state, "missing", default=7) == 7
  assert _paths(tu.tree_get_all_with_path(state, "w")) == [
      "['adam']ScaleByAdamState.mu['w']", "['adam']ScaleByAdamState.nu['w']"]
  with pytest.raises(KeyError) as error:
    tu.tree_get(state, "w")
  assert error.value.args[0] == (
      "tree_get: found 2 values for 'w', at [\"['adam']ScaleByAdamState.mu['w']\", "
      "\"['adam']ScaleByAdamState.nu['w']\"]; pass a filtering function to choose one")
  in_nu = lambda path, value: any(  # noqa: E731
      isinstance(k, tu.NamedTupleKey) and k.name == "nu" for k in path)
  assert tu.tree_get(state, "w", filtering=in_nu) is state["adam"].nu["w"]


def test_get_with_a_schedule_finds_both_counts():
  state = gtx.adam(gtx.schedules.cosine_decay_schedule(1.0, 10)).init(PARAMS)
  assert _paths(tu.tree_get_all_with_path(state, "count")) == [
      "['adam']ScaleByAdamState.count", "['lr']EmptyState.hparams.count"]
  with pytest.raises(HyperparameterError, match="stage 'lr': learning_rate follows a schedule"):
    tu.tree_set(state, learning_rate=0.1)


def test_set_on_adam_state_keeps_dtypes_and_does_not_retrace():
  tx = gtx.adam(1e-3)
  state = tx.init(PARAMS)
  new = tu.tree_set(state, count=3, learning_rate=0.25, b1=0.5)
  assert isinstance(new, gtx.ChainState)
  assert new["adam"].count.dtype == jnp.int32 and int(new["adam"].count) == 3
  assert gtx.hparams(new)["lr.learning_rate"].dtype == jnp.float32
  assert float(gtx.hparams(new)["lr.learning_rate"]) == 0.25
  assert float(gtx.hparams(new)["adam.b1"]) == 0.5
  assert float(gtx.hparams(state)["adam.b1"]) == pytest.approx(0.9)  # the old state unchanged
  traces = []

  @jax.jit
  def step(grads, state):
    traces.append(1)
    return tx.update(grads, state, PARAMS)

  grads = {"w": jnp.full(3, 2.0), "b": jnp.full(2, -1.0)}
  step(grads, state)
  updates, after = step(grads, new)
  assert len(traces) == 1
  # One Adam step at t = 4 with b1 = 0.5 (numpy): m = 0.5 g, v = 0.001 g^2.
  t, g = 4, np.array([2.0, 2.0, 2.0])
  m_hat, v_hat = 0.5 * g / (1 - 0.5 ** t), 0.001 * g ** 2 / (1 - 0.999 ** t)
  np.testing.assert_allclose(updates["w"], -0.25 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-5)
  assert int(after["adam"].count) == 4


def test_set_holds_a_copy_of_an_array_so_the_state_can_be_donated():
  # tree_set put the caller's array in every match as it was: a step donating the state
  # failed with "Attempt to donate the same buffer twice" (two stages' counts), or deleted
  # the caller's array (one). set_hparams copies for the same reason.
  tx = gtx.chain(a=gtx.scale_by_adam(), b=gtx.scale_by_adam(), lr=gtx.scale_by_learning_rate(0.1))
  count, w = jnp.array(5, jnp.int32), jnp.full(3, 0.25)
  state = tu.tree_set(tx.init(PARAMS), count=count, w=w)
  step = jax.jit(lambda s: tx.update(PARAMS, s, PARAMS)[1], donate_argnums=0)
  after = step(state)
  assert not count.is_deleted() and not w.is_deleted()
  assert int(count) == 5 and [int(after[k].count) for k in "ab"] == [6, 6]
  # Each moment moved on from the 0.25 set, by the first stage's gradient 1 or the second's.
  np.testing.assert_allclose(after["a"].mu["w"], 0.9 * 0.25 + 0.1, rtol=1e-6)


def test_set_errors():
  state = gtx.adam(1e-3).init(PARAMS)
  with pytest.raises(KeyError, match="tree_set: found no value for 'nothere'"):
    tu.tree_set(state, nothere=1.0)
  with pytest.raises(KeyError, match="that the filtering function accepts"):
    tu.tree_set(state, lambda path, value: False, count=1)
  # A missing key's error names the keys that exist (it said only "found no value"), and a
  # filter's, the values it turned down.
  with pytest.raises(KeyError) as error:
    tu.tree_set(state, learning_rat=0.1)
  assert error.value.args[0] == (
      "tree_set: found no value for 'learning_rat' (did you mean 'learning_rate'?); the keys "
      "in the tree are ['EmptyState', 'ScaleByAdamState', 'adam', 'b1', 'b2', 'count', 'eps', "
      "'eps_root', 'hparams', 'learning_rate', 'lr', 'mu', 'nu', 'b', 'w']")
  # The state's own names come first and the list stops at 40: a model's parameter names
  # would bury them. The hint searches all.
  many = gtx.adam(1e-3).init({f"layer_{i:03d}": jnp.zeros(1) for i in range(100)})
  with pytest.raises(KeyError) as error:
    tu.tree_set(many, layer_1000=1.0)
  assert error.value.args[0].startswith(
      "tree_set: found no value for 'layer_1000' (did you mean 'layer_000' or ")
  assert error.value.args[0].endswith(
      "are ['EmptyState', 'ScaleByAdamState', 'adam', 'b1', 'b2', 'count', 'eps', 'eps_root', "
      "'hparams', 'learning_rate', 'lr', 'mu', 'nu', 'layer_000', 'layer_001', 'layer_002', "
      "'layer_003', 'layer_004', 'layer_005', 'layer_006', 'layer_007', 'layer_008', "
      "'layer_009', 'layer_010', 'layer_011', 'layer_012', 'layer_013', 'layer_014', "
      "'layer_015', 'layer_016', 'layer_017', 'layer_018', 'layer_019', 'layer_020', "
      "'layer_021', 'layer_022', 'layer_023', 'layer_024', 'layer_025', 'layer_026'] and 73 more")
  with pytest.raises(KeyError) as error:
    tu.tree_set(state, lambda path, value: False, count=1)
  assert error.value.args[0] == (
      "tree_set: found no value for 'count' that the filtering function accepts; it rejected "
      "the values at [\"['adam']ScaleByAdamState.count\"]")
  with pytest.raises(HyperparameterError,
                     match=r"lr: learning_rate must be in \[0, inf\), got -0.1"):
    tu.tree_set(state, learning_rate=-0.1)
  with pytest.raises(ValueError, match=r"ScaleByAdamState.count holds int32 values; got 2.5"):
    tu.tree_set(state, count=2.5)
  # A string went into the state as given; the next jitted step failed on it.
  for value in ("3", np.array("3")):
    with pytest.raises(ValueError, match=r"^tree_set: \['adam'\]ScaleByAdamState.count holds "
                       r"int32 values; got .*'3'.*, which is not a number$"):
      tu.tree_set(state, count=value)
  with pytest.raises(StructureError,
                     match=r"mu\['w'\] has shape \(3,\); got a value of shape \(2,\)"):
    tu.tree_set(state, w=jnp.ones(2))
  # A stage's own state (no chain): the message said "<root>: b1 must be ...".
  with pytest.raises(HyperparameterError, match=r"^tree_set: b1 must be in \[0, 1\), got 2.0$"):
    tu.tree_set(gtx.scale_by_adam().init(PARAMS), b1=2.0)


def test_set_nested_chain_masked_and_whole_stage():
  tx = gtx.chain(outer=gtx.chain(clip=gtx.clip_by_global_norm(1.0), adam=gtx.scale_by_adam()),
                 masked=gtx.masked(gtx.trace(0.9), {"w": True, "b": False}),
                 lr=gtx.scale_by_learning_rate(0.1))
  state = tx.init(PARAMS)
  assert _paths(tu.tree_get_all_with_path(state, "b1")) == [
      "['outer']['adam']ScaleByAdamState.hparams['b1']"]
  with pytest.raises(HyperparameterError, match=r"outer.adam: b1 must be in \[0, 1\), got 1.5"):
    tu.tree_set(state, b1=1.5)
  new = tu.tree_set(state, b1=0.5, max_norm=2.0)
  assert float(gtx.hparams(new)["outer.adam.b1"]) == 0.5
  assert float(gtx.hparams(new)["outer.clip.max_norm"]) == 2.0
  # The masked-out leaf of the trace stays a MaskedNode.
  trace_state = tu.tree_get(state, "masked")
  assert isinstance(trace_state.inner_state.trace["b"], gtx.MaskedNode)
  # A whole stage state, by its class name, replaced as given.
  fresh = gtx.scale_by_adam().init(PARAMS)
  replaced = tu.tree_set(new, ScaleByAdamState=fresh)
  assert replaced["outer.adam"] is fresh
  # The state still runs through the chain.
  tx.update(PARAMS, replaced, PARAMS)


def test_get_and_set_agree_with_optax_on_optax_states():
  states = [optax.adam(1e-3).init(PARAMS),
            optax.chain(optax.add_noise(1.0, 0.9, key=0), optax.scale_by_adam()).init(PARAMS),
            optax.inject_hyperparams(optax.sgd)(
                learning_rate=lambda c: 1 / (c + 1)).init(PARAMS)]
  for state in states:
    for key in ("count", "mu", "learning_rate", "AddNoiseState", "ScaleByAdamState"):
      ours = tu.tree_get_all_with_path(state, key)
      theirs = optax.tree_utils.tree_get_all_with_path(state, key)
      assert [jax.tree_util.keystr(p) for p, _ in ours] == [
          jax.tree_util.keystr(p) for p, _ in theirs], key
      assert jax.tree.all(jax.tree.map(lambda a, b: a is b, [v for _, v in ours],
                                       [v for _, v in theirs]))
  new = tu.tree_set(states[0], count=2)
  assert new[0].count.dtype == jnp.int32 and int(new[0].count) == 2  # optax: a Python float
  assert isinstance(new, tuple) and type(new[0]).__name__ == "ScaleByAdamState"


# gradtx's namespaces that stand in for optax's (gradtx's module, optax's), and each of
# their public functions as (namespace, name): gtx.tree has every name of optax.tree.
OPTAX_TREE_NAMES = [n for n in dir(optax.tree) if not n.startswith("_")]
_NAMESPACES = {"tree_utils": (tu, optax.tree_utils), "utilities": (U, optax),
               "tree": (gtx.tree, optax.tree)}
_FUNCTIONS = ([("tree_utils", n) for n in tu.__all__ if n != "NamedTupleKey"]
              + [("utilities", n) for n in U.__all__]
              + [("tree", n) for n in OPTAX_TREE_NAMES])


@pytest.mark.parametrize("namespace, name", _FUNCTIONS, ids=[f"{ns}.{n}" for ns, n in _FUNCTIONS])
def test_signature_matches_optax(namespace, name):
  # `import gradtx as gtx` in place of optax: optax.tree.X(...) is gtx.tree.X(...), and
  # the same arguments, in the same order, with the same defaults.
  ours, theirs = (inspect.signature(getattr(module, name)).parameters
                  for module in _NAMESPACES[namespace])
  assert list(ours) == list(theirs)
  for arg in ours:
    assert ours[arg].default == theirs[arg].default, arg


def test_gtx_tree_has_every_name_of_optax_tree():
  assert len(OPTAX_TREE_NAMES) > 30
  for name in OPTAX_TREE_NAMES:  # their arguments: test_signature_matches_optax
    defined_here = name in vars(gtx.tree)  # else it is tree_utils' function
    assert defined_here or getattr(gtx.tree, name) is getattr(tu, f"tree_{name}"), name
  assert set(OPTAX_TREE_NAMES) <= set(dir(gtx.tree))  # dir() lists them too (tab completion)
  with pytest.raises(AttributeError, match="gradtx.tree' has no attribute 'nope'"):
    gtx.tree.nope  # pylint: disable=pointless-statement


def test_scaling_a_leaf_that_cannot_hold_the_scalar_promotes_as_optax():
  # The scalar was cast to the leaf's dtype: tree_scale(0.5, int32 [3, 4]) was [0, 0], and
  # tree_add_scale(x, 0.5, y) x itself, where optax's are float32 [1.5, 2.] and [4.5, 6.];
  # a complex scalar on a real leaf lost its imaginary part.
  ints, flags = {"a": jnp.array([3, 4])}, {"a": jnp.array([True, False])}
  cases = [(lambda m, s, t: m.tree_scale(s, t), (0.5, ints)),
           (lambda m, s, t: m.tree_scale(s, t), (jnp.float16(0.5), ints)),
           (lambda m, s, t: m.tree_scale(s, t), (0.5, flags)),
           (lambda m, s, t: m.tree_scale(s, t), (1j, {"a": jnp.ones(2)})),
           (lambda m, s, t: m.tree_scale(s, t), (2, ints)),  # an integer scalar: int32 still
           (lambda m, s, t: m.tree_add_scale(t, s, t), (0.5, ints))]
  for call, (scalar, tree) in cases:
    ours = call(tu, scalar, tree)["a"]  # under the suite's strict promotion
    with jax.numpy_dtype_promotion("standard"):  # optax's mixes int and float implicitly
      theirs = call(optax.tree_utils, scalar, tree)["a"]
    assert ours.dtype == theirs.dtype, (scalar, tree, ours.dtype, theirs.dtype)
    np.testing.assert_array_equal(ours, theirs)
  assert gtx.tree.scale(0.5, ints)["a"].dtype == jnp.float32
  np.testing.assert_array_equal(jax.jit(gtx.tree.scale)(0.5, ints)["a"], [1.5, 2.0])


def test_gtx_tree_names_that_gradtx_defines_agree_with_optax(dtype, run):
  x, y, z = _tree(0, dtype), _tree(1, dtype), _tree(2, dtype)
  nx, ny, nz = _np(x), _np(y), _np(z)
  _assert_tree(run(gtx.tree.add, x, y, z), {k: nx[k] + ny[k] + nz[k] for k in nx}, dtype)
  _assert_tree(run(gtx.tree.sub, x, y), {k: nx[k] - ny[k] for k in nx}, dtype)
  _assert_tree(run(lambda t: gtx.tree.scale(0.3, t), x), {k: 0.3 * nx[k] for k in nx}, dtype)
  _assert_tree(run(lambda a, b: gtx.tree.where(jnp.asarray(False), a, b), x, y), ny, dtype)
  for ours, theirs in [(gtx.tree.add(x, y, z), optax.tree.add(x, y, z)),
                       (gtx.tree.scale(-2.0, x), optax.tree.scale(-2.0, x)),
                       (gtx.tree.zeros_like(x, jnp.int32), optax.tree.zeros_like(x, jnp.int32)),
                       (gtx.tree.full_like(x, 7, jnp.float16), optax.tree.full_like(x, 7,
                                                                                  jnp.float16)),
                       (gtx.tree.cast(x, jnp.bfloat16), optax.tree.cast(x, jnp.bfloat16)),
                       (gtx.tree.cast_like(x, {"a": 1.0, "b": y["b"].astype(jnp.float16),
                                               "c": y["c"]}),
                        optax.tree.cast_like(x, {"a": 1.0, "b": y["b"].astype(jnp.float16),
                                                 "c": y["c"]}))]:
    for k in ours:
      assert ours[k].dtype == theirs[k].dtype, k
      np.testing.assert_allclose(np.asarray(ours[k], np.float64),
                                 np.asarray(theirs[k], np.float64), **_tol(dtype))


def test_gtx_tree_add_and_scale_keep_the_leaf_dtypes():
  # Where optax promotes (a float32 scalar makes a bfloat16 tree float32, or fails
  # under strict promotion, as in these tests), gradtx keeps each leaf's dtype, as
  # an optimizer's state must keep its own.
  half = {"w": jnp.ones(2, jnp.bfloat16)}
  assert gtx.tree.scale(jnp.float32(0.5), half)["w"].dtype == jnp.bfloat16
  assert gtx.tree.add(half, {"w": jnp.ones(2, jnp.float32)})["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(gtx.tree.scale(jnp.float32(0.5), half)["w"],
                                jnp.full(2, 0.5, jnp.bfloat16))


def test_gtx_tree_scale_multiplies_float16_in_float32():
  # Learning rates are float16 subnormals (below 6.1e-5): cast to the leaf first, 1e-8
  # was 0 and 1e-6 was 1.3% off, where the products are normal float16 numbers. As
  # in optax, a bfloat16 leaf takes the scalar in its own dtype (tested above).
  leaf = np.array([1000.0, 2e4, -300.0], np.float16)
  for rate in (1e-8, 1e-6):
    got = gtx.tree.scale(rate, {"w": jnp.asarray(leaf)})["w"]
    assert got.dtype == jnp.float16
    np.testing.assert_array_equal(got, (rate * leaf.astype(np.float64)).astype(np.float16))


# ----------------------------------------------------------------------------
# Utilities.


def test_global_norm_and_safe_norm(dtype):
  x = _tree(8, dtype)
  np.testing.assert_allclose(U.global_norm(x), np.linalg.norm(_flat(x)), **_tol(dtype))
  a = jnp.asarray(np.random.default_rng(9).standard_normal((3, 4)), dtype)
  na = np.asarray(a, np.float64)
  np.testing.assert_allclose(U.safe_norm(a, 0.0), np.linalg.norm(na), **_tol(dtype))
  np.testing.assert_allclose(U.safe_norm(a, 1e3), 1e3, **_tol(dtype))
  np.testing.assert_allclose(U.safe_norm(a, 0.0, axis=1), np.linalg.norm(na, axis=1),
                             **_tol(dtype))
  kept = U.safe_norm(a, 0.0, ord=1, axis=0, keepdims=True)
  assert kept.shape == (1, 4) and kept.dtype == dtype
  np.testing.assert_allclose(kept, np.abs(na).sum(axis=0, keepdims=True), **_tol(dtype))
  # Rows at or below the floor take the floor.
  rows = a.at[0].set(0.0)
  np.testing.assert_allclose(U.safe_norm(rows, 0.5, axis=1)[0], 0.5)


def test_safe_norm_and_rms_gradients(dtype):
  zero = jnp.zeros(3, dtype)
  for fn in (lambda x: U.safe_norm(x, 1e-6), lambda x: U.safe_root_mean_squares(x, 1e-6),
             lambda x: jnp.sum(U.safe_norm(x.reshape(1, 3), 1e-6, axis=1))):
    grad = jax.grad(fn)(zero)
    assert grad.dtype == dtype
    np.testing.assert_array_equal(grad, np.zeros(3))  # finite, and 0 as the maximum says
  # Unclipped: the gradient of the norm is x / |x|, of the rms x / (n rms).
  x = jnp.asarray([3.0, -4.0, 0.0], dtype)
  nx = np.asarray(x, np.float64)
  np.testing.assert_allclose(jax.grad(lambda x: U.safe_norm(x, 1e-6))(x), nx / 5.0,
                             **_tol(dtype))
  rms = np.sqrt(np.mean(nx ** 2))
  np.testing.assert_allclose(U.safe_root_mean_squares(x, 0.1), rms, **_tol(dtype))
  np.testing.assert_allclose(jax.grad(lambda x: U.safe_root_mean_squares(x, 0.1))(x),
                             nx / (3 * rms), **_tol(dtype))
  np.testing.assert_allclose(U.safe_root_mean_squares(x, 10.0), 10.0)
  # jnp.maximum alone gives NaN: what these functions are for.
  assert np.isnan(jax.grad(lambda x: jnp.maximum(jnp.linalg.norm(x), 1e-6))(zero)).all()


def test_safe_increment():
  top = jnp.asarray(np.iinfo(np.int32).max, jnp.int32)
  assert int(U.safe_increment(top)) == int(top)
  assert int(U.safe_increment(jnp.asarray(4, jnp.int32))) == 5
  assert U.safe_int32_increment(jnp.asarray(4, jnp.int32)).dtype == jnp.int32
  big = jnp.asarray(np.finfo(np.float32).max, jnp.float32)
  assert float(U.safe_increment(big)) == float(big)
  assert float(U.safe_increment(jnp.asarray(1.5, jnp.float32))) == 2.5
  assert int(jax.jit(U.safe_increment)(jnp.asarray(7, jnp.int8))) == 8
  assert int(U.safe_increment(jnp.asarray(127, jnp.int8))) == 127
  # Unsigned counts, whose maximum is past int32's: uint32's used to raise OverflowError.
  for dtype in (jnp.uint8, jnp.uint16, jnp.uint32):
    top = np.iinfo(dtype).max
    for count, want in ((3, 4), (top - 1, top), (top, top)):
      got = jax.jit(U.safe_increment)(jnp.asarray(count, dtype))
      assert got.dtype == dtype and int(got) == want, (dtype, count, got)
  with pytest.raises(ValueError, match="safe_increment: count must be an integer or float"):
    U.safe_increment(jnp.asarray(True))


def test_incremental_and_periodic_update(dtype, run):
  rng = np.random.default_rng(10)
  avg = {k: jnp.zeros(s, dtype) for k, s in SHAPES.items()}
  ref = {k: np.zeros(s) for k, s in SHAPES.items()}
  slow = {k: jnp.zeros(s, dtype) for k, s in SHAPES.items()}
  slow_ref = {k: np.zeros(s) for k, s in SHAPES.items()}

  def step(new, avg, slow, t):
    return U.incremental_update(new, avg, 0.1), U.periodic_update(new, slow, t, 3)

  for t in range(1, 7):
    new_np = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    new = {k: jnp.asarray(v, dtype) for k, v in new_np.items()}
    avg, slow = run(step, new, avg, slow, jnp.asarray(t))
    ref = {k: 0.1 * new_np[k] + 0.9 * ref[k] for k in SHAPES}
    _assert_tree(avg, ref, dtype, dict(rtol=1e-5, atol=1e-6) if dtype == jnp.float32 else None)
    if t % 3 == 0:
      slow_ref = {k: new_np[k] for k in SHAPES}
    _assert_tree(slow, slow_ref, dtype)
  assert U.incremental_update({"a": None}, {"a": None}, 0.5)["a"] is None


def test_power_iteration(dtype):
  rng = np.random.default_rng(11)
  q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
  eigs = np.array([5.0, 2.0, 1.0, 0.5, -0.3])
  a = q @ np.diag(eigs) @ q.T
  value, vector = U.power_iteration(jnp.asarray(a, dtype), num_iters=500,
                                    error_tolerance=1e-7 if dtype == jnp.float64 else 1e-6)
  assert value.dtype == dtype and vector.dtype == dtype
  np.testing.assert_allclose(value, 5.0, rtol=1e-4)
  v = np.asarray(vector, np.float64)
  np.testing.assert_allclose(abs(v @ q[:, 0]), 1.0, rtol=1e-4)
  # A matrix-vector product on a tree (what second-order users pass).
  mvp = lambda t: {"x": jnp.asarray(a, dtype) @ t["x"]}  # noqa: E731
  value, vector = jax.jit(lambda v0: U.power_iteration(mvp, v0=v0, num_iters=500))(
      {"x": jnp.ones(5, dtype)})
  np.testing.assert_allclose(value, 5.0, rtol=1e-4)
  with pytest.raises(ValueError, match="power_iteration: v0 is required"):
    U.power_iteration(mvp)


def test_power_iteration_of_a_bfloat16_matrix():
  # The residual is a norm, float32 for a bfloat16 matrix: dividing it by the bfloat16
  # eigenvalue raised under strict promotion (the suite's).
  m = jnp.diag(jnp.asarray([1.0, 3.0], jnp.bfloat16))
  value, vector = U.power_iteration(m)
  with jax.numpy_dtype_promotion("standard"):
    want_value, want_vector = U.power_iteration(m)
  assert value.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.float32(value), np.float32(want_value))
  np.testing.assert_array_equal(np.asarray(vector, np.float32), np.asarray(want_vector, np.float32))
  np.testing.assert_allclose(np.float32(value), 3.0, rtol=1e-2)


def test_matrix_inverse_pth_root(dtype):
  rng = np.random.default_rng(12)
  b = rng.standard_normal((4, 4))
  a = b @ b.T + 0.5 * np.eye(4)
  w, v = np.linalg.eigh(a)
  ridge = 1e-6 * w.max()
  for p in (2, 4):
    root, error = U.matrix_inverse_pth_root(jnp.asarray(a, dtype), p)
    assert root.dtype == dtype
    expected = v @ np.diag((w + ridge) ** (-1.0 / p)) @ v.T
    np.testing.assert_allclose(root, expected, rtol=2e-3, atol=2e-4)
    assert float(error) < 1e-3
  one, _ = U.matrix_inverse_pth_root(jnp.asarray([[4.0]], dtype), 2)
  np.testing.assert_allclose(one, [[0.5]], rtol=1e-4)
  # p = 8 as an array and traced under jit: the roots the repeated squaring takes.
  root8, _ = jax.jit(U.matrix_inverse_pth_root, static_argnums=())(jnp.asarray(a, dtype),
                                                                   jnp.asarray(8))
  np.testing.assert_allclose(root8, v @ np.diag((w + ridge) ** (-1.0 / 8)) @ v.T, rtol=2e-3,
                             atol=2e-4)
  # Any other root was computed as a neighbouring one, silently (p = 3 as p = 4).
  for p in (3, 16, 0.5, jnp.asarray(3), jnp.asarray([2, 2])):
    with pytest.raises(ValueError, match="matrix_inverse_pth_root: p must be 1, 2, 4 or 8"):
      U.matrix_inverse_pth_root(jnp.asarray(a, dtype), p)
  # A matrix that is not square: an error naming it, not one from inside a matmul.
  for shape in ((2, 3), (3,), (2, 2, 2)):
    for fn in (lambda m: U.power_iteration(m), lambda m: U.matrix_inverse_pth_root(m, 2)):
      with pytest.raises(ValueError, match=r"matrix must be a square \(n, n\) array, got shape"):
        fn(jnp.ones(shape, dtype))


def test_eager_power_iteration_and_inverse_root_compile_once(compiles):
  """Run eagerly, their while_loops (new closures at each call) were compiled again at every
  call; each is one program per shape, dtype and precision (and function, for a callable
  matrix: the same one reuses it), and the roots p share one."""
  a = jnp.asarray([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
  mvp = lambda v: a @ v  # noqa: E731
  calls = {"power_iteration": lambda: U.power_iteration(a, num_iters=20),
           "power_iteration of a function": lambda: U.power_iteration(mvp, v0=jnp.ones(3)),
           "matrix_inverse_pth_root": lambda: U.matrix_inverse_pth_root(a, 2, num_iters=20)}
  for name, call in calls.items():
    first, _ = compiles(call)
    again, _ = compiles(call)
    assert first > 0 and again == 0, (name, first, again)
  other_root, (root, _) = compiles(lambda: U.matrix_inverse_pth_root(a, 4, num_iters=20))
  assert other_root == 0
  np.testing.assert_allclose(root @ root @ root @ root @ a, np.eye(3), atol=1e-3)


def test_power_iteration_of_a_function_that_cannot_be_hashed_runs_unjitted():
  # Its program is looked up by the function's identity; one that cannot be hashed (a
  # callable defining __eq__ only) is iterated unjitted, to the same eigenvalue.
  a = jnp.asarray([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])

  class Product:
    def __eq__(self, other):
      return isinstance(other, Product)

    def __call__(self, v):
      return a @ v

  with pytest.raises(TypeError):
    hash(Product())
  got, _ = U.power_iteration(Product(), v0=jnp.ones(3), num_iters=50)
  want, _ = U.power_iteration(a, v0=jnp.ones(3), num_iters=50)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(got, np.linalg.eigvalsh(np.asarray(a))[-1], rtol=1e-4)


_M = jnp.eye(3)


# Bad arguments ran (num_iters=-1 or 2.5 as 0 or 3 steps, a NaN tolerance or ridge into a
# NaN root, p=True as p=1) or raised from inside jax: "'<' not supported between instances
# of 'DynamicJaxprTracer' and 'str'", "dot_general requires contracting dimensions to have
# the same shape", "JAX encountered invalid PRNG key data", "Value 'abc' with dtype <U3 is
# not a valid JAX array type", "zero-size array to reduction operation max", and for an
# integer matrix "dtype argument to `uniform` must be a float dtype".
@pytest.mark.parametrize("call, kind, message", [
    (lambda: U.power_iteration(_M, num_iters=-1), HyperparameterError,
     "power_iteration: num_iters must be in [0, 2147483647] (an integer), got -1"),
    (lambda: U.power_iteration(_M, num_iters=2.5), HyperparameterError,
     "power_iteration: num_iters must be in [0, 2147483647] (an integer), got 2.5"),
    (lambda: U.power_iteration(_M, num_iters="3"), HyperparameterError,
     "power_iteration: num_iters must be a number in [0, 2147483647] (an integer), got '3' "
     "(convert it with int())"),
    (lambda: U.power_iteration(_M, error_tolerance=float("nan")), HyperparameterError,
     "power_iteration: error_tolerance must be in [0, inf), got nan"),
    (lambda: U.power_iteration(_M, v0=jnp.ones(4)), StructureError,
     "power_iteration: v0 must be a vector of shape (n,) = (3,) for a matrix of shape (3, 3), "
     "got shape (4,)"),
    (lambda: U.power_iteration(_M, key=3), ArgumentTypeError,
     "power_iteration: key must be a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)) or "
     "None, got int: 3"),
    (lambda: U.power_iteration("abc"), ArgumentTypeError,
     "power_iteration: matrix must be a square (n, n) array, got str: 'abc'"),
    (lambda: U.power_iteration(None), ArgumentTypeError,
     "power_iteration: matrix must be a square (n, n) array, got NoneType: None"),
    (lambda: U.matrix_inverse_pth_root(jnp.zeros((0, 0)), 2), StructureError,
     "matrix_inverse_pth_root: matrix must have entries (n >= 1), got shape (0, 0)"),
    (lambda: U.matrix_inverse_pth_root(_M, True), HyperparameterError,
     "matrix_inverse_pth_root: p must be a number in [1, 2147483647] (an integer), got True"),
    (lambda: U.matrix_inverse_pth_root(_M, "2"), HyperparameterError,
     "matrix_inverse_pth_root: p must be a number in [1, 2147483647] (an integer), got '2' "
     "(convert it with int())"),
    (lambda: U.matrix_inverse_pth_root(_M, 2, num_iters=-1), HyperparameterError,
     "matrix_inverse_pth_root: num_iters must be in [0, 2147483647] (an integer), got -1"),
    (lambda: U.matrix_inverse_pth_root(_M, 2, ridge_epsilon=float("nan")), HyperparameterError,
     "matrix_inverse_pth_root: ridge_epsilon must be in [0, inf), got nan"),
    (lambda: U.matrix_inverse_pth_root(_M, 2, ridge_epsilon=-1.0), HyperparameterError,
     "matrix_inverse_pth_root: ridge_epsilon must be in [0, inf), got -1.0"),
    (lambda: U.matrix_inverse_pth_root(_M, 2, error_tolerance=-1.0), HyperparameterError,
     "matrix_inverse_pth_root: error_tolerance must be in [0, inf), got -1.0"),
    (lambda: U.matrix_inverse_pth_root(_M.astype(jnp.complex64), 2), ArgumentTypeError,
     "matrix_inverse_pth_root: matrix must be real (symmetric positive semi-definite), got "
     "complex64"),
], ids=range(16))
def test_linear_algebra_names_a_bad_argument(call, kind, message):
  with pytest.raises(kind) as error:
    call()
  assert str(error.value) == message


def test_linear_algebra_of_integer_and_complex_matrices():
  # An integer matrix is taken as the default float dtype (optax: "dtype argument to
  # `uniform` must be a float dtype, got int32"); a complex (Hermitian) one draws v0 real.
  value, _ = U.power_iteration(jnp.diag(jnp.asarray([1, 3])))
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, 3.0, rtol=1e-5)
  root, _ = U.matrix_inverse_pth_root(jnp.diag(jnp.asarray([4, 16])), 2)
  np.testing.assert_allclose(jnp.diag(root), [0.5, 0.25], rtol=1e-4)
  value, vector = U.power_iteration(jnp.asarray([[2, 1j], [-1j, 2]], jnp.complex64))
  np.testing.assert_allclose(value, 3.0, rtol=1e-5, atol=1e-6)
  assert vector.dtype == jnp.complex64


def test_reductions_of_a_tree_mixing_bfloat16_and_float32():
  # Leaf results of different dtypes are summed (or compared) in the dtype they
  # promote to, as optax does, also under the suite's strict promotion.
  x = {"a": jnp.asarray([1.5, -2.0], jnp.bfloat16), "b": jnp.asarray([3.25, 0.5])}
  y = {"a": jnp.asarray([2.0, 1.0], jnp.bfloat16), "b": jnp.asarray([-1.0, 4.0])}
  for got, want in [(tu.tree_vdot(x, y), 1.5 * 2 - 2 - 3.25 + 2), (tu.tree_sum(x), 3.25),
                    (tu.tree_sum(x, associative_reduction=True), 3.25),
                    (tu.tree_max(x), 3.25), (tu.tree_min(x), -2.0),
                    (tu.tree_norm(x, ord=1), 7.25), (tu.tree_norm(x, ord="inf"), 3.25)]:
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(want)


def test_map_params_names_an_init_that_fails_on_the_placeholder():
  def init(params):
    return {"mu": jax.tree.map(jnp.zeros_like, params), "w": params["w"]}  # indexes the params

  with pytest.raises(StructureError, match="tree_map_params: initable.init must accept a "
                     "leafless placeholder.*TypeError"):
    tu.tree_map_params(init, lambda p: p, init({"w": jnp.ones(2)}))


def test_tree_map_params_sees_through_masked_and_partition():
  # The moments of wrapped stages are mapped (masked-out leaves stay MaskedNode);
  # counts and hyperparameters get transform_non_params.
  params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
  tx = gtx.chain(
      decay=gtx.masked(gtx.add_decayed_weights(0.1), {"w": True, "b": False}),
      opt=gtx.partition({"adam": gtx.adam(0.1), "sgd": gtx.sgd(0.1, momentum=0.9)},
                        {"w": "adam", "b": "sgd"}))
  state = tx.init(params)
  mapped = gtx.tree_utils.tree_map_params(tx, lambda p: p.shape, state,
                                          transform_non_params=lambda _: "other")
  adam = mapped["opt"].inner_states["adam.adam"]
  assert adam.mu == {"w": (2, 3), "b": gtx.MaskedNode()}
  assert adam.count == "other"
  assert mapped["opt"].inner_states["sgd.momentum"].trace == {"w": gtx.MaskedNode(), "b": (3,)}
  assert gtx.hparams(mapped)["opt.adam.lr.learning_rate"] == "other"


def test_tree_map_params_maps_a_tree_of_specs_along_past_masked_leaves():
  # The use optax documents: a state's partition specs from the params' ones. Where a mask
  # or partition leaves a leaf out, the state holds a MaskedNode and the specs a leaf, and
  # the map raised "the state does not have the structure initable.init makes" (optax's
  # raises too). The MaskedNode stays; a tree of specs that does not fit is named as such.
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
  specs = {"w": P("d", None), "b": P()}
  tx = gtx.chain(
      decay=gtx.masked(gtx.add_decayed_weights(0.1), {"w": True, "b": False}),
      opt=gtx.partition({"adam": gtx.adam(0.1), "sgd": gtx.sgd(0.1, momentum=0.9)},
                        {"w": "adam", "b": "sgd"}))
  state = tx.init(params)
  mapped = gtx.tree_utils.tree_map_params(tx, lambda _, spec: spec, state, specs,
                                          transform_non_params=lambda _: P(),
                                          is_leaf=lambda x: isinstance(x, P))
  adam = mapped["opt"].inner_states["adam.adam"]
  assert adam.mu == {"w": P("d", None), "b": gtx.MaskedNode()} and adam.count == P()
  assert mapped["opt"].inner_states["sgd.momentum"].trace == {"w": gtx.MaskedNode(), "b": P()}
  # Usable as it is: the shardings of a state built under jit.
  mesh = Mesh(np.array(jax.devices()[:1]), ("d",))
  shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), mapped,
                           is_leaf=lambda x: isinstance(x, P))
  placed = jax.jit(tx.init, out_shardings=shardings)(params)
  assert placed["opt"].inner_states["adam.adam"].mu["w"].sharding.spec == P("d", None)
  jax.tree.map(np.testing.assert_array_equal, placed, state)
  with pytest.raises(StructureError, match=r"tree_map_params: the trees passed after the "
                                           r"state must have the params' structure"):
    gtx.tree_utils.tree_map_params(tx, lambda _, spec: spec, state, {"w": P()},
                                   is_leaf=lambda x: isinstance(x, P))


def test_tree_map_params_gives_f_the_masked_nodes_its_is_leaf_picks_out():
  # optax's way to map a masked state: is_leaf picks out MaskedNode and f replaces it
  # (with None here). The MaskedNode was kept whatever is_leaf said, so f never saw it.
  params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3), "c": jnp.ones(1)}
  tx = gtx.masked(gtx.sgd(0.1, momentum=0.9), {"w": True, "b": False, "c": True})
  axes = {"w": 1, "b": 2, "c": 3}
  mapped = gtx.tree_utils.tree_map_params(
      tx, lambda p, axis: None if isinstance(p, gtx.MaskedNode) else axis, tx.init(params),
      axes, is_leaf=lambda v: isinstance(v, gtx.MaskedNode))
  assert mapped.inner_state["momentum"].trace == {"w": 1, "b": None, "c": 3}


def test_global_norm_of_a_tree_of_float32_and_float64_leaves():
  with jax.enable_x64(True):
    tree = {"a": jnp.array([3.0], jnp.float32), "b": jnp.array([4.0], jnp.float64)}
    norm = gtx.global_norm(tree)
    assert norm.dtype == jnp.float64
    np.testing.assert_allclose(norm, 5.0, rtol=1e-15)


def test_map_multi_traces_a_repeated_signature_once_and_eager_steps_leaf_by_leaf():
  # Ten leaves of one shape and one of its own: staged, the rule is traced once for the
  # ten (a nested jit) and once for the other; eager, it runs once per leaf.
  tree = {f"w{i}": jnp.full((4, 3), float(i)) for i in range(10)} | {"b": jnp.ones(3)}
  traced = []

  def rule(x, y):
    traced.append(x.shape)
    return jnp.sin(x) * y + 1, x - jnp.cos(y)

  jaxpr = jax.make_jaxpr(lambda t: gtx.tree.map_multi(rule, 2, t, t))(tree)
  assert sorted(traced) == [(3,), (4, 3)]
  assert sum(e.primitive.name in ("pjit", "jit") for e in jaxpr.eqns) == 10
  # A rule of fewer than four operations is traced leaf by leaf: a nested call costs more.
  def short_rule(x, y):
    traced.append(x.shape)
    return x * y + 1,

  traced.clear()
  jax.make_jaxpr(lambda t: gtx.tree.map_multi(short_rule, 1, t, t))(tree)
  assert len(traced) == 11 + 1  # and once more, to count its operations
  traced.clear()
  eager = gtx.tree.map_multi(rule, 2, tree, tree)
  assert len(traced) == 11
  staged = jax.jit(lambda t: gtx.tree.map_multi(rule, 2, t, t))(tree)
  for a, b in zip(jax.tree.leaves(staged), jax.tree.leaves(eager)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [lambda: gtx.adam(1e-2), lambda: gtx.nadam(1e-2),
                                  lambda: gtx.radam(1e-2), lambda: gtx.adagrad(0.1),
                                  lambda: gtx.chain(gtx.clip_by_global_norm(1.0),
                                                    gtx.adamw(1e-2, weight_decay=0.1))],
                         ids=["adam", "nadam", "radam", "adagrad", "adamw+clip"])
def test_a_rule_traced_once_per_signature_steps_bit_for_bit_as_traced_per_leaf(make, monkeypatch):
  # The nested jit changes the Python work of tracing, not the program XLA compiles.
  # Two leaves of one signature are what nests the rule (a signature that repeats).
  params = {f"w{i}": jnp.linspace(-1, 1, 12).reshape(4, 3) * (i + 1) for i in range(2)}
  params |= {"b": jnp.arange(3.0) - 1}

  def run():
    tx = make()  # a fresh update function: jax.jit would answer from its cache otherwise
    state, p, updates = tx.init(params), params, []
    step = jax.jit(tx.update)
    for t in range(6):
      grads = jax.tree.map(lambda x: jnp.sin(x * (t + 1)), p)
      u, state = step(grads, state, p)
      p = gtx.apply_updates(p, u)
      updates.append(u)
    return updates

  nested = run()
  monkeypatch.setattr(gtx.tree, "_staged", lambda x: False)
  per_leaf = run()
  for a, b in zip(jax.tree.leaves(nested), jax.tree.leaves(per_leaf)):
    np.testing.assert_array_equal(a, b)


def test_nested_rule_traces_work_inside_scan_vmap_checkpoint_and_meta_gradients(monkeypatch):
  # A rule traced once per signature closes over the step's scalars, which here are
  # tracers of an enclosing jit (a traced learning rate), of a scan's body and of grad.
  # Two leaves of one signature are what nests the rule (a signature that repeats).
  params = {f"w{i}": jnp.linspace(-1, 1, 12).reshape(4, 3) * (i + 1) for i in range(2)}

  def loss(p):
    return sum(jnp.sum(jnp.sin(x) ** 2) for x in jax.tree.leaves(p))

  def runs():  # new functions each time: jax.jit would answer from its cache otherwise
    def train(lr, make=gtx.adam):
      tx = make(lr)

      def body(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return (gtx.apply_updates(p, u), s), None

      (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=5)
      return loss(p)

    def clipped_lamb(lr):
      return gtx.chain(gtx.clip_by_global_norm(1.0), gtx.lamb(lr))

    def all_five(lr, lrs):  # one program (one compile), each a traced lr of its own
      return [train(lr), jax.grad(train)(lr), jax.vmap(train)(lrs), jax.checkpoint(train)(lr),
              jax.grad(lambda lr: train(lr, clipped_lamb))(lr)]

    return jax.jit(all_five)(jnp.float32(0.1), jnp.array([0.1, 0.2]))

  nested = runs()
  monkeypatch.setattr(gtx.tree, "_staged", lambda x: False)
  for a, b in zip(nested, runs()):
    np.testing.assert_array_equal(a, b)
  assert np.isfinite(nested[1]) and nested[1] != 0
