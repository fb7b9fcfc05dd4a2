"""Packed mode: layout round trips, and the same results as tree mode.

Tree mode is checked against numpy references elsewhere; here every ready
optimizer (iterating ``gradtx.optimizers.__all__``, so new ones join
automatically) must give, on a packed tree, the parameters and state it gives
on the tree itself, to float rounding. Per-leaf reductions and masks, the two
things packed mode must do differently, are also checked against numpy.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx
from gradtx.packed import Layout, Packed

STEPS = 4

def _params():
  """Leaves of several shapes, two of them alike (a run in the buffer), and a scalar."""
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
  return {"dense": {"w": f(4, 3), "b": f(3)}, "out": {"w": f(4, 3), "b": f(3)},
          "scale": f(), "conv": f(2, 2, 3)}


def _mixed():
  """Three buffers (float32, bfloat16, complex64), each holding matrices and vectors.

  Keyed as :func:`_params` (a prefix mask for it fits), and each buffer mixes
  leaves in and out of the tests' masks (``_no_bias``, the prefix mask); the
  (4, 3) shape is in every buffer, twice in float32's.
  """
  rng = np.random.default_rng(3)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
  h = lambda *s: jnp.asarray(rng.normal(size=s), jnp.bfloat16)  # noqa: E731
  c = lambda *s: jax.lax.complex(f(*s), f(*s))  # noqa: E731
  return {"dense": {"w": f(4, 3), "b": h(3), "v": c(4, 3)},
          "out": {"w": h(4, 3), "b": c(3), "s": f(4, 3)},
          "scale": f(), "conv": {"w": c(2, 2, 3), "b": f(3), "k": h(2, 2, 3)}}


def _many_shapes():
  """More runs of shapes than packed mode spreads per-leaf values by gathering."""
  rng = np.random.default_rng(2)
  n = gtx.packed._GATHER_MAX_RUNS + 4
  return {f"layer{k:02d}": {"a": jnp.asarray(rng.normal(size=(k + 1, 2)), jnp.float32),
                            "b": jnp.asarray(rng.normal(size=(k + 1, 2)), jnp.float32)}
          for k in range(n)}


def _many_shapes_and_dtypes():
  """A float32 buffer of one run more than packed mode gathers (so it is spread by
  writing), runs of one leaf and of two among them, beside a bfloat16 and a complex64
  buffer (spread by gathering), each holding a matrix and a vector.

  Not :func:`_many_shapes`: its 32 leaves, two per run, made tree mode's training loop
  the slowest compile of the file; the runs' count is what the spreading depends on.
  """
  rng = np.random.default_rng(4)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
  # _GATHER_MAX_RUNS runs of matrices (every fourth of two leaves) and the vector's.
  layers = {f"layer{k:02d}": {"a": f(k + 1, 2), **({"b": f(k + 1, 2)} if k % 4 == 0 else {})}
            for k in range(gtx.packed._GATHER_MAX_RUNS)}
  return {**layers, "norm": f(5),
          "low": {"w": f(3, 2).astype(jnp.bfloat16), "b": f(2).astype(jnp.bfloat16)},
          "rot": {"w": jax.lax.complex(f(3, 2), f(3, 2)), "b": jax.lax.complex(f(2), f(2))}}


def _loss(params):
  """A smooth, non-separable-by-leaf loss: quadratic plus a coupling of leaf means."""
  leaves = jax.tree.leaves(params)
  # |x|^2 as x conj(x), so that complex leaves give a real loss (and real ones x^2).
  abs_sq = lambda x: jnp.real(x * jnp.conj(x))  # noqa: E731
  # Each leaf's terms in float32, so that bfloat16 leaves add up under strict promotion.
  f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
  quad = sum(f32(jnp.sum(0.5 * (i + 1.0) * abs_sq(x - 0.3))) for i, x in enumerate(leaves))
  coupling = jnp.square(sum(f32(jnp.mean(jnp.real(x))) for x in leaves))
  return quad + 0.1 * coupling


def _build(name):
  make = getattr(gtx.optimizers, name)
  kwargs = {}
  for p in inspect.signature(make).parameters.values():
    if p.name == "learning_rate":
      kwargs[p.name] = 0.02
    elif p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD:
      pytest.fail(f"{name}: no default for {p.name}; give test_packed a value for it")
  return make(**kwargs)


def _train(tx, params, loss, steps=STEPS):
  """``steps`` steps of ``tx`` on ``loss``, passing value, grad and value_fn as extras."""
  def step(_, carry):
    params, state = carry
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = tx.update(grads, state, params, value=value, grad=grads, value_fn=loss)
    return gtx.apply_updates(params, updates), state
  # A loop, not an unrolled one, keeps the compiled test small.
  return jax.lax.fori_loop(0, steps, step, (params, tx.init(params)))


def _numbers(x):
  """An array's values; a PRNG key's key data."""
  if jnp.issubdtype(getattr(x, "dtype", np.float64), jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  x = np.asarray(x)
  return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def _has_bfloat16(tree):
  return any(getattr(x, "dtype", None) == jnp.bfloat16 for x in jax.tree.leaves(tree))


def _assert_close(packed_tree, tree, rtol=2e-5, atol=2e-6, low=None):
  # With bfloat16 leaves, packed and tree mode round differently where XLA fuses the
  # same ops differently: by a few units of bfloat16's last place (2^-8), and the loss's
  # coupling and global norms carry that into the other leaves (about 1e-5 after 4 steps)
  # and into float32 state computed from them (``low``: the params hold bfloat16).
  low = _has_bfloat16(tree) if low is None else low

  def close(a, b):
    dtypes = (getattr(a, "dtype", None), getattr(b, "dtype", None))
    tol = (3e-2, 3e-3) if jnp.bfloat16 in dtypes else (2e-4, 2e-5)
    np.testing.assert_allclose(_numbers(a), _numbers(b), rtol=max(rtol, tol[0] * low),
                               atol=max(atol, tol[1] * low))
  jax.tree.map(close, packed_tree, tree)


def _both_modes(tx, params=None):
  """(tree params, tree state, packed params as the tree, packed state, layout), jitted."""
  params = _params() if params is None else params
  layout = Layout.from_tree(params)

  @jax.jit
  def run(params, flat):
    tree_result = _train(tx, params, _loss)
    packed_result = _train(tx, flat, lambda f: _loss(layout.unpack(f)))
    return tree_result, packed_result

  (p_tree, s_tree), (p_flat, s_flat) = run(params, layout.pack(params))
  return p_tree, s_tree, layout.unpack(p_flat), s_flat, layout


# ----------------------------------------------------------------------------
# Layout.


def test_pack_unpack_round_trip_keeps_values_shapes_and_dtypes():
  params = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.arange(3, dtype=jnp.bfloat16),
            "c": [jnp.float32(7.0), jnp.arange(4, dtype=jnp.int32)], "d": jnp.ones((2, 3))}
  layout = Layout.from_tree(params)
  flat = layout.pack(params)
  assert set(flat) == {"bfloat16", "float32", "int32"}
  assert flat["float32"].shape == (13,) and flat["bfloat16"].dtype == jnp.bfloat16
  back = layout.unpack(flat)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  jax.tree.map(lambda x, y: (np.testing.assert_array_equal(np.asarray(x, np.float64),
                                                          np.asarray(y, np.float64)),
                             np.testing.assert_equal(x.dtype, y.dtype)), back, params)
  # Leaves of one shape sit next to each other: a and d form one run.
  group = next(g for g in layout.groups if g.dtype == "float32")
  assert [r.count for r in group.runs] == [1, 2]


def test_layout_is_static_and_compares_by_structure_shapes_and_dtypes():
  params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
  shapes = jax.eval_shape(lambda: params)
  assert Layout.from_tree(params) == Layout.from_tree(shapes)
  assert hash(Layout.from_tree(params)) == hash(Layout.from_tree(shapes))
  assert Layout.from_tree(params) != Layout.from_tree({"w": jnp.ones((3, 2)), "b": jnp.zeros(3)})
  flat = Layout.from_tree(params).pack(params)
  leaves, treedef = jax.tree.flatten(flat)
  assert len(leaves) == 1 and jax.tree.unflatten(treedef, leaves).layout == flat.layout


def test_numpy_leaves_get_the_dtypes_pack_gives_them():
  # Without jax_enable_x64, jnp.asarray makes numpy's float64 float32 (and int64 int32):
  # the layout said float64, and pack refused the very params it was built from.
  params = {"w": np.arange(6.0).reshape(2, 3), "b": np.float64(0.5), "steps": np.arange(2)}
  layout = Layout.from_tree(params)
  assert layout == Layout.from_tree(jax.tree.map(jnp.asarray, params))
  flat = layout.pack(params)
  assert {k: v.dtype for k, v in flat.items()} == {"float32": jnp.float32, "int32": jnp.int32}
  np.testing.assert_array_equal(flat["float32"], [0.5, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
  back = layout.unpack(flat)
  np.testing.assert_array_equal(back["w"], params["w"])
  np.testing.assert_array_equal(back["steps"], [0, 1])


def test_gradient_through_unpack_arrives_packed():
  params = _params()
  layout = Layout.from_tree(params)
  grads_flat = jax.grad(lambda f: _loss(layout.unpack(f)))(layout.pack(params))
  assert isinstance(grads_flat, Packed) and grads_flat.layout == layout
  _assert_close(layout.unpack(grads_flat), jax.grad(_loss)(params), rtol=1e-6, atol=1e-6)


BAD_INPUTS = [
    ("pack, another structure", lambda lay: lay.pack({"w": jnp.ones((2, 3))}),
     r"key path \['b'\] is in the layout but not in params"),
    ("pack, another shape", lambda lay: lay.pack({"w": jnp.ones((3, 2)), "b": jnp.zeros(3)}),
     r"shape at key path \['w'\]: \(3, 2\) in params, \(2, 3\)"),
    ("pack, another dtype", lambda lay: lay.pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.int32)}),
     r"key path \['b'\] is int32; the layout holds it as float32"),
    ("unpack, not packed", lambda lay: lay.unpack({"w": jnp.ones((2, 3))}),
     r"expected a Packed tree, got dict"),
    ("unpack, another layout",
     lambda lay: lay.unpack(Layout.from_tree(jnp.ones(3)).pack(jnp.ones(3))),
     r"made by another layout"),
    ("mask, not a prefix", lambda lay: lay.element_mask({"x": True}),
     r"^Layout.leaf_mask: the mask has key path \['x'\], which the params do not have$"),
    # Python's bare KeyError: 'float32'.
    ("broadcast_leaves, a buffer missing", lambda lay: lay.broadcast_leaves({"nope": 1.0}),
     r"^Layout.broadcast_leaves: values has no entry for the float32 buffer: it must map each "
     r"of the layout's buffers \['float32'\] to one value per leaf, got keys \['nope'\]$"),
    # jax's "JAX does not support string indexing; got idx='float32'".
    ("broadcast_leaves, not a mapping", lambda lay: lay.broadcast_leaves(jnp.ones(2)),
     r"^Layout.broadcast_leaves: values must map each of the layout's buffers \['float32'\] "
     r"to one value per leaf, got ArrayImpl$"),
    # bool(3) was True: every leaf was masked in without a word.
    ("mask, not bools", lambda lay: lay.leaf_mask(3),
     r"^Layout.leaf_mask: the mask must hold Python bools \(it is fixed when the step is "
     r"traced\); at key path \['b'\] it holds int 3$"),
    ("empty tree", lambda lay: Layout.from_tree({}), r"no leaves to pack"),
    # numpy's TypeError before: "Cannot interpret 'key<fry>' as a data type".
    ("a PRNG key leaf", lambda lay: Layout.from_tree({"w": jnp.ones(3), "k": jax.random.key(0)}),
     r"^Layout.from_tree: the leaf at key path \['k'\] is a PRNG key \(key<fry>\), which no "
     r"buffer holds"),
    # A string leaf: numpy's "data type 'x' not understood", jax's "Value 'x' with dtype <U1
    # is not a valid JAX array type", and a string array made a layout of "str32: 1".
    ("from_tree, a string leaf", lambda lay: Layout.from_tree({"w": jnp.ones(3), "s": "x"}),
     r"^Layout.from_tree: the leaf at key path \['s'\] is not an array of numbers "
     r"\(str: 'x'\): pack only the floating-point leaves"),
    ("from_tree, a string array", lambda lay: Layout.from_tree({"s": np.array(["a"])}),
     r"^Layout.from_tree: the leaf at key path \['s'\] is not an array of numbers \(ndarray: "),
    ("pack, a string leaf", lambda lay: lay.pack({"w": jnp.ones((2, 3)), "b": "x"}),
     r"^Layout.pack: the leaf at key path \['b'\] is not an array of numbers \(str: 'x'\): "
     r"pack only the floating-point leaves"),
]


def test_difference_with_what_is_not_a_layout_names_it():
  # "'int' object has no attribute 'template'" before.
  layout = Layout.from_tree({"w": jnp.ones((2, 3))})
  with pytest.raises(gtx.errors.ArgumentTypeError, match=r"^Layout.difference: other must be a "
                     r"Layout, got int: 3$"):
    layout.difference(3, "a", "b")


def test_difference_of_containers_names_the_key_path_and_prints_one_level():
  # Two layouts whose leaves agree but whose containers do not printed both whole
  # PyTreeDefs, thousands of entries for a large model, without saying where.
  layers = {f"layer{i:03d}": [jnp.ones(2), jnp.ones(3)] for i in range(500)}
  layout = Layout.from_tree(layers)
  other = Layout.from_tree({**layers, "layer123": tuple(layers["layer123"])})
  assert layout.difference(other, "a", "b") == (
      "the containers differ at key path ['layer123']: a has PyTreeDef([*, *]) there, b has "
      "PyTreeDef((*, *))")


@pytest.mark.parametrize("case, call, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_a_clear_error(case, call, message):
  layout = Layout.from_tree({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
  with pytest.raises(gtx.StructureError, match=message):
    call(layout)


_TWO_BY_THREE = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
_THREE_BY_TWO = {"w": jnp.ones((3, 2)), "b": jnp.zeros(3)}  # a layout of the same size
_pack = lambda params: Layout.from_tree(params).pack(params)  # noqa: E731
MISMATCHES = [
    # Both layouts print as Layout(2 leaves, float32: 9): the messages name the leaf.
    ("packed grads of another layout", gtx.adam(0.1),
     lambda tx: tx.update(_pack(_THREE_BY_TWO), tx.init(_pack(_TWO_BY_THREE))),
     r"updates and state.mu differ in shape at key path <root>: they are packed with "
     r"different layouts: at key path \['w'\] the leaf is float32\[3, 2\] in updates, "
     r"float32\[2, 3\] in state.mu$"),
    ("packed params of another layout", gtx.adamw(0.1),
     lambda tx: tx.update(_pack(_TWO_BY_THREE), tx.init(_pack(_TWO_BY_THREE)),
                          _pack(_THREE_BY_TWO)),
     r"params and updates differ in shape .* at key path \['w'\] the leaf is "
     r"float32\[3, 2\] in params, float32\[2, 3\] in updates$"),
    ("factored state of another layout", gtx.adafactor(0.1, min_dim_size_to_factor=1),
     lambda tx: tx.update(_pack(_THREE_BY_TWO), tx.init(_pack(_TWO_BY_THREE))),
     r"at key path \['w'\] the leaf is float32\[3, 2\] in updates, float32\[2, 3\] in state$"),
    ("unpack, another layout", None,
     lambda tx: Layout.from_tree(_TWO_BY_THREE).unpack(_pack(_THREE_BY_TWO)),
     r"made by another layout: at key path \['w'\] the leaf is float32\[3, 2\] in it, "
     r"float32\[2, 3\] in this layout$"),
    ("unpack, a leaf more", None,
     lambda tx: Layout.from_tree(_TWO_BY_THREE).unpack(_pack({**_TWO_BY_THREE, "c": jnp.ones(0)})),
     r"made by another layout: key path \['c'\] is in it only$"),
    # A tree-mode state given packed gradients named a leaf "not in updates" (it was,
    # inside the buffer), and the other way round the whole tree, at <root>.
    ("tree state, packed grads", gtx.adam(0.1),
     lambda tx: tx.update(_pack(_TWO_BY_THREE), tx.init(_TWO_BY_THREE)),
     r"updates and state.mu differ in structure: updates is a packed tree and state.mu is "
     r"not: use one mode for both \(a packed step's state is tx.init\(layout.pack\(params\)\)\)"),
    ("packed state, tree grads", gtx.adam(0.1),
     lambda tx: tx.update(_TWO_BY_THREE, tx.init(_pack(_TWO_BY_THREE))),
     r"updates and state.mu differ in structure: state.mu is a packed tree and updates is not"),
    ("packed grads, tree params", gtx.lamb(0.1),
     lambda tx: tx.update(_pack(_TWO_BY_THREE), tx.init(_pack(_TWO_BY_THREE)), _TWO_BY_THREE),
     r"params and updates differ in structure: updates is a packed tree and params is not"),
    ("lookahead, tree slow params", gtx.lookahead(gtx.sgd(0.1), 2, 0.5),
     lambda tx: tx.update(_pack(_TWO_BY_THREE), tx.init(gtx.LookaheadParams.init_synced(
         _pack(_TWO_BY_THREE))), gtx.LookaheadParams(_pack(_TWO_BY_THREE), _TWO_BY_THREE)),
     r"params.slow and params.fast differ in structure: params.fast is a packed tree and "
     r"params.slow is not"),
    ("a packed subtree against a tree", gtx.adam(0.1),
     lambda tx: tx.update({"x": _pack(_TWO_BY_THREE)}, tx.init({"x": _TWO_BY_THREE})),
     r"updates is a packed tree at key path \['x'\] and state.mu is not"),
    # A per-leaf flag or statistic was replaced by the None gradient's MaskedNode: the
    # state changed structure (a jitted step retraced, lax.scan failed).
    ("a None gradient of a packed tree, zero_nans", gtx.zero_nans(),
     lambda tx: tx.update({"x": None}, tx.init({"x": _pack(_TWO_BY_THREE)})),
     r"^zero_nans: updates and state.found_nan differ in shape at key path \['x'\]: no array "
     r"\(a None gradient, or a leaf a mask leaves out\) in updates, a packed tree of "
     r"Layout\(2 leaves, float32: 9\) in state.found_nan"),
    ("a None gradient of a packed tree, monitor", gtx.monitor("leaf_norms"),
     lambda tx: tx.update({"x": None}, tx.init({"x": _pack(_TWO_BY_THREE)})),
     r"^monitor: updates and state.stats\['leaf_norms'\] differ in shape at key path "
     r"\['x'\]: no array"),
]


@pytest.mark.parametrize("case, tx, call, message", MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_packed_and_tree_mode_mismatches_name_what_differs(case, tx, call, message):
  with pytest.raises(gtx.StructureError, match=message):
    call(tx)


def test_init_refuses_packed_params_with_an_integer_buffer_naming_its_leaves():
  # Tree mode masks an integer leaf; a buffer cannot be masked, and init made an int32
  # Adam moment for it: integer gradients then stepped it by garbage, and float0 ones
  # (jax.grad(..., allow_int=True)) failed at the first step deep inside the rule.
  params = {"w": jnp.ones(3), "steps": jnp.arange(2), "mask": jnp.ones(2, bool)}
  flat = Layout.from_tree(params).pack(params)
  with pytest.raises(gtx.StructureError, match=r"^packed params hold bool, int32 leaves \(key "
                     r"paths \['mask'\], \['steps'\]\), which no gradient steps"):
    gtx.adam(0.1).init(flat)
  floats = {"w": params["w"]}
  state = gtx.adam(0.1).init(Layout.from_tree(floats).pack(floats))  # floats only: as before
  assert set(state["adam"].mu.buffers) == {"float32"}


# ----------------------------------------------------------------------------
# Every ready optimizer: packed equals tree.


# Defined for real numbers only: they raise on a complex leaf (tests/test_complex.py).
_REAL_ONLY = {"rprop", "sm3"}


# The mixed tree alone (float32, bfloat16 and complex64 buffers), and real params for the
# real-only ones: each case compiles two training loops (the suite's time is compiling),
# and a float32 and complex64 tree added 44 compiles to check those buffers to 2e-5, not
# 2e-4 (bfloat16's rounding reaches them through the loss); a wrong segment is off by far more.
@pytest.mark.parametrize("name, make", [
    (name, make) for name in gtx.optimizers.__all__
    for make in ([_params] if name in _REAL_ONLY else []) + [_mixed]],
    ids=lambda x: {_params: "real", _mixed: "mixed"}.get(x, x))
def test_every_optimizer_gives_tree_modes_results(name, make):
  tx, params = _build(name), make()
  if make is not _params and name in _REAL_ONLY:
    with pytest.raises(ValueError, match="complex parameters are not supported"):
      tx.init(Layout.from_tree(params).pack(params))
    return
  p_tree, s_tree, p_packed, s_packed, layout = _both_modes(tx, params)
  assert not np.allclose(_numbers(p_tree["dense"]["w"]), _numbers(params["dense"]["w"]))
  low = _has_bfloat16(params)
  # L-BFGS's curvature pairs and line search amplify the bfloat16 leaves' rounding
  # differences in the float32 ones (2.6e-4 relative measured after 4 steps).
  rtol = 1e-3 if low and name == "lbfgs" else 2e-5
  _assert_close(p_packed, p_tree, rtol=rtol)
  # The packed state, viewed as the tree, is tree mode's state.
  state_view = layout.unpack_state(s_packed)
  assert jax.tree.structure(state_view) == jax.tree.structure(s_tree)
  _assert_close(state_view, s_tree, rtol=max(rtol, 1e-4), atol=1e-6, low=low)


# ----------------------------------------------------------------------------
# Per-leaf reductions and masks, against numpy.


def test_block_reductions_of_a_packed_tree_are_per_leaf():
  params = _params()
  layout = Layout.from_tree(params)
  norms = layout.unpack(gtx.tree.block_norm(layout.pack(params)))
  rms = layout.unpack(gtx.tree.block_rms(layout.pack(params)))
  for x, n, r in zip(jax.tree.leaves(params), jax.tree.leaves(norms), jax.tree.leaves(rms)):
    x = np.asarray(x, np.float64)
    np.testing.assert_allclose(np.asarray(n), np.full(x.shape, np.sqrt(np.sum(x ** 2))),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(r), np.full(x.shape, np.sqrt(np.mean(x ** 2))),
                               rtol=1e-6)


@pytest.mark.parametrize("make, many_runs", [(_params, False), (_many_shapes, True)],
                         ids=["few runs, gathered", "many runs, written"])
def test_spread_values_survive_xla_fusion(make, many_runs):
  """Per-leaf norms spread over the buffer, fused into a compare-and-select, under jit.

  The trust ratio's shape: XLA:CPU (jaxlib 0.10.2, on an AVX-512 host) gave
  the second leaf of a run its neighbour's norm when the spread was a
  concatenation fused into this consumer; eager evaluation was right.
  """
  params = make()
  layout = Layout.from_tree(params)
  group, = layout.groups
  assert (len(group.runs) > gtx.packed._GATHER_MAX_RUNS) == many_runs
  rng = np.random.default_rng(1)
  updates = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)

  def ratio_times_update(u, p):
    def leaf(g, p_norm, u_norm):
      p_norm, u_norm = jnp.maximum(p_norm, 0.0), jnp.maximum(u_norm, 0.0)
      ratio = jnp.where((p_norm == 0) | (u_norm == 0), 1.0, p_norm / (u_norm + 1e-6))
      return g * ratio
    return jax.tree.map(leaf, u, gtx.tree.block_norm(p), gtx.tree.block_norm(u))

  got = layout.unpack(jax.jit(ratio_times_update)(layout.pack(updates), layout.pack(params)))
  for g, p, out in zip(jax.tree.leaves(updates), jax.tree.leaves(params), jax.tree.leaves(got)):
    g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
    want = g * np.linalg.norm(p) / (np.linalg.norm(g) + 1e-6)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5)


def test_block_map_asks_for_a_scalar_per_leaf():
  layout = Layout.from_tree(_params())
  with pytest.raises(gtx.StructureError, match=r"must return a scalar per leaf; got shape \(3,\)"):
    gtx.tree.block_map(lambda x: jnp.zeros(3), layout.pack(_params()))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_clip_by_block_rms_clips_each_leaf_segment(jit):
  params = _params()
  layout = Layout.from_tree(params)
  tx = gtx.clip_by_block_rms(0.5)
  update = jax.jit(tx.update) if jit else tx.update
  flat = layout.pack(params)
  out = layout.unpack(update(flat, tx.init(flat))[0])
  for x, u in zip(jax.tree.leaves(params), jax.tree.leaves(out)):
    x = np.asarray(x, np.float64)
    expected = x / max(1.0, np.sqrt(np.mean(x ** 2)) / 0.5)
    np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-6, atol=1e-7)


def _no_bias(params):
  return jax.tree.map(lambda x: x.ndim > 1, params)


MASKED = [
    ("adamw, callable mask", lambda: gtx.adamw(0.05, weight_decay=0.5, mask=_no_bias)),
    ("add_decayed_weights, prefix mask",
     lambda: gtx.chain(gtx.add_decayed_weights(0.5, mask={"dense": True, "out": False,
                                                          "scale": True, "conv": False}),
                       gtx.sgd(0.05))),
    ("masked adam with a global norm inside",
     lambda: gtx.chain(gtx.masked(gtx.chain(gtx.clip_by_global_norm(0.1), gtx.scale_by_adam()),
                                  _no_bias), gtx.scale_by_learning_rate(0.05))),
    # Stages that keep the initial params (DoG's distance from them, its heuristic first
    # step from their norm): init saw the masked-out leaves too (DoG stepped 17x too far).
    ("masked dog, heuristic first step", lambda: gtx.chain(
        gtx.masked(gtx.contrib.scale_by_dog(("heuristic", 1e-2)), _no_bias),
        gtx.scale_by_learning_rate(0.5))),
    ("partition, dog and dowg", lambda: gtx.partition(
        {"matrix": gtx.contrib.dog(), "other": gtx.contrib.dowg()}, _matrix_or_not)),
    ("clip_by_block_rms then lamb", lambda: gtx.chain(gtx.clip_by_block_rms(0.5),
                                                      gtx.lamb(0.05, mask=_no_bias))),
]


@pytest.mark.parametrize("case, make", MASKED, ids=[m[0] for m in MASKED])
def test_masks_and_reductions_give_tree_modes_results(case, make):
  # With several buffers, each mixing leaves masked in and out, a mask is spread per
  # buffer (a KeyError here before: one buffer's spread read both). The mixed tree alone:
  # a float32 tree and a float32 and complex64 one added 12 compiles of two training loops
  # to check with 2e-5 what bfloat16's rounding makes 2e-4 here.
  p_tree, _, p_packed, s_packed, _ = _both_modes(make(), _mixed())
  _assert_close(p_packed, p_tree)


@pytest.mark.parametrize("case, make", MASKED[-1:] + [("lars", lambda: gtx.lars(0.05))],
                         ids=["clip_by_block_rms then lamb", "lars"])
def test_per_leaf_norms_over_many_runs_give_tree_modes_results(case, make):
  # One buffer (float32) spread by writing, two (bfloat16, complex64) by gathering, in
  # one step; the float32 buffer alone was a second run of the same code.
  params = _many_shapes_and_dtypes()
  group = next(g for g in Layout.from_tree(params).groups if g.dtype == "float32")
  assert len(group.runs) == gtx.packed._GATHER_MAX_RUNS + 1  # spread by writing
  assert {r.count for r in group.runs} == {1, 2}
  p_tree, _, p_packed, _, _ = _both_modes(make(), params)
  _assert_close(p_packed, p_tree)


NOT_BOOLS = [
    ("ints", {"dense": 1, "out": 0, "scale": True, "conv": False},
     # selective_transform checks a tree mask when built: at the prefix's own key path.
     r"at key path \['dense'\](\['b'\])? it holds int 1"),
    ("arrays from a callable", lambda p: jax.tree.map(lambda x: jnp.ones(x.shape, bool), p),
     r"at key path \['conv'\] it holds ArrayImpl"),
]
MASK_TAKERS = [("masked", lambda m: gtx.masked(gtx.scale(0.5), m)),
               ("selective_transform", lambda m: gtx.selective_transform(gtx.sgd(0.1),
                                                                         freeze_mask=m))]


@pytest.mark.parametrize("packed", [False, True], ids=["tree", "packed"])
@pytest.mark.parametrize("taker, wrap", MASK_TAKERS, ids=[t[0] for t in MASK_TAKERS])
@pytest.mark.parametrize("case, mask, where", NOT_BOOLS, ids=[n[0] for n in NOT_BOOLS])
def test_a_mask_of_other_than_bools_raises_the_same_error_in_both_modes(case, mask, where,
                                                                       taker, wrap, packed):
  # Packed mode took such masks by truthiness before (the wrong leaves masked, silently),
  # and selective_transform did in both modes (a callable was one True: all frozen).
  params = _params()
  x = Layout.from_tree(params).pack(params) if packed else params
  with pytest.raises(gtx.StructureError, match=rf"the mask must hold Python bools.*{where}"):
    tx = wrap(mask)
    tx.update(x, tx.init(x), x)


WHOLE_PARAMS = [
    ("masked lbfgs", lambda: gtx.masked(gtx.lbfgs(), _no_bias), "lbfgs", "scale_by_lbfgs"),
    ("partition, zoom line search", lambda: gtx.partition(
        {"matrix": gtx.chain(gtx.sgd(1.0), gtx.scale_by_zoom_linesearch(8)),
         "other": gtx.sgd(0.1)}, _matrix_or_not), "matrix.scale_by_zoom_linesearch",
     "scale_by_zoom_linesearch"),
    ("masked backtracking", lambda: gtx.masked(gtx.chain(
        gtx.sgd(1.0), gtx.scale_by_backtracking_linesearch(8)), _no_bias),
     "scale_by_backtracking_linesearch", "scale_by_backtracking_linesearch"),
]


@pytest.mark.parametrize("packed", [False, True], ids=["tree", "packed"])
@pytest.mark.parametrize("case, make, stage, name", WHOLE_PARAMS, ids=[w[0] for w in WHOLE_PARAMS])
def test_a_line_search_refuses_a_mask_in_both_modes(case, make, stage, name, packed):
  # A line search evaluates value_fn on the whole params. Tree mode hands a masked stage
  # MaskedNode for the hidden leaves and it raises; packed mode zeroed their entries and
  # searched on a loss of the wrong params, silently.
  params = _params()
  x = Layout.from_tree(params).pack(params) if packed else params
  with pytest.raises(gtx.StructureError, match=rf"^stage '{stage}': {name}: params at key path "
                     r"\['dense'\]\['b'\] are left out of the step .* evaluates value_fn on "
                     r"the whole params"):
    make().init(x)


def _sum_of_tag():
  """A stage whose updates are the sum of its ``tag`` extra argument over the whole tree."""
  def update(updates, state, params=None, *, tag, **extra):
    del params, extra
    total = sum(jnp.sum(jnp.real(x).astype(jnp.float32)) for x in jax.tree.leaves(tag))
    return jax.tree.map(lambda u: jnp.full_like(u, total), updates), state
  return gtx.GradientTransformation(gtx.init_empty_state, update)


@pytest.mark.parametrize("wrap", [
    lambda tx: gtx.masked(tx, _no_bias, mask_compatible_extra_args=True),
    lambda tx: gtx.partition({"w": tx, "b": gtx.identity()},
                             lambda p: jax.tree.map(lambda x: "w" if x.ndim > 1 else "b", p),
                             mask_compatible_extra_args=True),
], ids=["masked", "partition"])
def test_mask_compatible_extra_args_are_masked_in_packed_mode_too(wrap):
  # Tree mode hides the masked-out leaves of an extra argument shaped like the updates;
  # packed mode zeroes them, so a reduction over it inside sees the same leaves.
  params = _mixed()
  layout = Layout.from_tree(params)
  tag = jax.tree.map(lambda x: jnp.ones_like(x), params)
  tx = wrap(_sum_of_tag())
  u_tree, _ = tx.update(params, tx.init(params), params, tag=tag)
  flat = layout.pack(params)
  u_packed, _ = tx.update(flat, tx.init(flat), flat, tag=layout.pack(tag))
  n_in = sum(x.size for x in jax.tree.leaves(params) if x.ndim > 1)
  assert float(jnp.real(u_tree["dense"]["w"][0, 0])) == n_in
  _assert_close(layout.unpack(u_packed), u_tree)


def test_random_like_draws_the_unpacked_trees_numbers():
  params = _mixed()
  layout = Layout.from_tree(params)
  key = jax.random.key(4)
  draws = jax.jit(gtx.tree_utils.tree_random_like)(key, layout.pack(params))
  assert isinstance(draws, Packed)
  jax.tree.map(np.testing.assert_array_equal, layout.unpack(draws),
               gtx.tree_utils.tree_random_like(key, params))


def test_masked_out_leaves_are_untouched_by_the_inner_stage():
  params = _params()
  layout = Layout.from_tree(params)
  tx = gtx.masked(gtx.scale(0.0), _no_bias)
  flat = layout.pack(params)
  out = layout.unpack(tx.update(flat, tx.init(flat), flat)[0])
  for x, u in zip(jax.tree.leaves(params), jax.tree.leaves(out)):
    np.testing.assert_array_equal(np.asarray(u), 0.0 * np.asarray(x) if x.ndim > 1 else x)


def test_freeze_runs_packed():
  params = _params()
  layout = Layout.from_tree(params)
  flat = layout.pack(params)
  tx = gtx.freeze(_no_bias)
  out = layout.unpack(tx.update(flat, tx.init(flat), flat)[0])
  for x, u in zip(jax.tree.leaves(params), jax.tree.leaves(out)):
    np.testing.assert_array_equal(np.asarray(u), 0.0 * np.asarray(x) if x.ndim > 1 else x)


def _matrix_or_not(params):
  return jax.tree.map(lambda x: "matrix" if x.ndim > 1 else "other", params)


SHAPE_AWARE = [
    # Factoring every leaf of rank >= 2 (the default factors only axes >= 128 long).
    ("adafactor, factored", lambda: gtx.adafactor(0.05, min_dim_size_to_factor=2)),
    ("scale_by_factored_rms, one axis too short to factor",
     lambda: gtx.chain(gtx.scale_by_factored_rms(min_dim_size_to_factor=3), gtx.sgd(0.05))),
    # sm3 (per-axis accumulators): test_every_optimizer_gives_tree_modes_results[sm3-real]
    # runs it on the same params with the same assertions (and [sm3-mixed] its refusal of
    # complex leaves); a case here compiled the same two loops again.
    ("centralize", lambda: gtx.chain(gtx.centralize(), gtx.sgd(0.05))),
    # One key per leaf, split in the tree's order: packed draws the same noise.
    ("add_noise", lambda: gtx.chain(gtx.add_noise(0.05, 0.55, key=7), gtx.sgd(0.05))),
    ("partition", lambda: gtx.partition({"matrix": gtx.adamw(0.05, weight_decay=0.5),
                                         "other": gtx.sgd(0.05, momentum=0.9)},
                                        _matrix_or_not)),
    ("partition, a global norm inside a group",
     lambda: gtx.partition({"matrix": gtx.chain(gtx.clip_by_global_norm(0.1), gtx.adam(0.05)),
                            "other": gtx.adam(0.05)}, _matrix_or_not)),
    ("selective_transform", lambda: gtx.selective_transform(
        gtx.adam(0.05), freeze_mask=lambda p: jax.tree.map(lambda x: x.ndim == 1, p))),
]


# The stages added for optax's namespace: per-unit and global norms, counters, conditions.
SHAPE_AWARE += [
    ("adaptive_grad_clip", lambda: gtx.chain(gtx.adaptive_grad_clip(0.05), gtx.sgd(0.05))),
    ("normalize_by_update_norm", lambda: gtx.chain(gtx.normalize_by_update_norm(0.1),
                                                   gtx.sgd(0.5))),
    ("keep_params_nonnegative", lambda: gtx.chain(gtx.sgd(2.0), gtx.keep_params_nonnegative())),
    ("scale_by_distance_over_gradients",
     lambda: gtx.chain(gtx.scale_by_distance_over_gradients(), gtx.sgd(1.0))),
    ("apply_every", lambda: gtx.chain(gtx.apply_every(2), gtx.adam(0.05))),
    ("conditionally_transform", lambda: gtx.conditionally_transform(
        gtx.adam(0.05), lambda step: step >= 1)),
    ("scale_by_schedule", lambda: gtx.chain(
        gtx.scale_by_schedule(gtx.schedules.linear_schedule(-0.1, -0.01, 3)))),
    ("MultiSteps", lambda: gtx.MultiSteps(gtx.adam(0.05), 2).gradient_transformation()),
    # A lax.cond whose branches return per-run statistics (PackedLeaves) and flags.
    ("apply_if_finite, per-leaf state inside", lambda: gtx.apply_if_finite(
        gtx.chain(gtx.zero_nans(), gtx.adafactor(0.05, min_dim_size_to_factor=2)), 1)),
]


# The mixed tree alone, and real params for the real-only ones, as for the ready
# optimizers above: a float32 tree as well added 16 compiles of two training loops.
@pytest.mark.parametrize("case, make, make_params", [
    pytest.param(case, make, make_params, id=f"{case}-{make_params.__name__.strip('_')}")
    for case, make in SHAPE_AWARE
    for make_params in ([_params] if case in _REAL_ONLY else []) + [_mixed]])
def test_rules_that_need_each_leafs_shape_give_tree_modes_results_and_state(case, make,
                                                                           make_params):
  params = make_params()
  if case in _REAL_ONLY and any(jnp.iscomplexobj(x) for x in jax.tree.leaves(params)):
    with pytest.raises(ValueError, match="complex parameters are not supported"):
      make().init(Layout.from_tree(params).pack(params))
    return
  p_tree, s_tree, p_packed, s_packed, layout = _both_modes(make(), params)
  # Every case trains dense.w (selective_transform, given a callable, froze all before).
  assert not np.allclose(_numbers(p_tree["dense"]["w"]), _numbers(params["dense"]["w"]))
  _assert_close(p_packed, p_tree)
  state_view = layout.unpack_state(s_packed)
  if not case.startswith(("partition", "selective")):
    # A partition's groups hold packed state for every leaf (masked-out ones unused).
    assert jax.tree.structure(state_view) == jax.tree.structure(s_tree)
    # Float32 state of a bfloat16 leaf is as close as the leaf's two trajectories, a few
    # units of bfloat16's last place: DoG's sums of squared gradient norms differ by up
    # to 3.2e-3 relative after 4 steps (bfloat16's spacing is 2^-8 = 3.9e-3).
    low = _has_bfloat16(params)
    _assert_close(state_view, s_tree, rtol=1e-2 if low else 1e-4, atol=1e-6, low=low)


def test_factored_statistics_are_held_per_run_and_read_per_leaf():
  params = _params()
  layout = Layout.from_tree(params)
  tx = gtx.scale_by_factored_rms(min_dim_size_to_factor=2)
  state = tx.init(layout.pack(params))
  assert isinstance(state.v_row, gtx.packed.PackedLeaves)
  # One stacked array per run: the scalar, the two (3,) biases (placeholders), the
  # two (4, 3) matrices (the largest axis, 4, is reduced) and the (2, 2, 3) kernel.
  assert sorted(x.shape for x in jax.tree.leaves(state.v_row)) == [(1, 1), (1, 2, 2), (2, 1),
                                                                   (2, 3)]
  view = state.v_row.unpack()
  assert view["dense"]["w"].shape == (3,) and view["conv"].shape == (2, 2)
  assert view["dense"]["b"].shape == (1,)  # a placeholder, as in tree mode


@pytest.mark.parametrize("make_params", [_params, _mixed], ids=["real", "mixed"])
def test_zero_nans_flags_each_leaf_of_a_packed_tree(make_params):
  # "mixed": flags of a bfloat16 and a complex64 leaf, among buffers of three dtypes.
  params = make_params()
  layout = Layout.from_tree(params)
  grads = jax.tree.map(jnp.ones_like, params)
  grads["out"]["w"] = grads["out"]["w"].at[1, 2].set(jnp.nan)
  grads["out"]["b"] = grads["out"]["b"].at[0].set(jnp.nan)
  tx = gtx.zero_nans()
  flat_grads = layout.pack(grads)
  updates, state = jax.jit(tx.update)(flat_grads, tx.init(flat_grads))
  flags = state.found_nan.unpack()
  expected = jax.tree.map(lambda x: False, params)
  expected["out"]["w"] = expected["out"]["b"] = True
  assert jax.tree.map(bool, flags) == expected
  out = layout.unpack(updates)
  assert float(out["out"]["w"][1, 2]) == 0.0 and float(jnp.sum(out["out"]["w"])) == 11.0
  assert float(jnp.sum(out["dense"]["w"])) == 12.0


# ----------------------------------------------------------------------------
# State: readable, hyperparameters by name, dtypes.


@pytest.mark.parametrize("make_params", [_params, _mixed], ids=["real", "mixed"])
def test_packed_state_reads_as_the_tree_and_hparams_set_without_retracing(make_params):
  params = make_params()
  layout = Layout.from_tree(params)
  tx = gtx.adamw(0.05, weight_decay=0.1, mask=_no_bias)
  flat = layout.pack(params)
  traces = []

  @jax.jit
  def step(flat, state):
    traces.append(1)
    grads = jax.grad(lambda f: _loss(layout.unpack(f)))(flat)
    updates, state = tx.update(grads, state, flat)
    return gtx.apply_updates(flat, updates), state

  state = tx.init(flat)
  assert gtx.hparams(state) == gtx.hparams(tx.init(params))
  flat, state = step(flat, state)
  state = gtx.set_hparams(state, {"lr.learning_rate": 0.01, "adam.b1": 0.5})
  flat, state = step(flat, state)
  assert len(traces) == 1
  assert float(gtx.hparams(state)["lr.learning_rate"]) == pytest.approx(0.01)

  # Tree mode with the same hyperparameter change gives the same moments. Jitted: eager,
  # each op of the mixed tree's ten leaves of three dtypes compiled a kernel of its own.
  @jax.jit
  def tree_step(params, state):
    updates, state = tx.update(jax.grad(_loss)(params), state, params)
    return gtx.apply_updates(params, updates), state

  t_params, t_state = params, tx.init(params)
  for i in range(2):
    if i == 1:
      t_state = gtx.set_hparams(t_state, {"lr.learning_rate": 0.01, "adam.b1": 0.5})
    t_params, t_state = tree_step(t_params, t_state)
  _assert_close(layout.unpack(state["adam"].mu), t_state["adam"].mu)
  _assert_close(layout.unpack(flat), t_params)


def test_bfloat16_moments_are_bfloat16_buffers_and_halve_the_state():
  params = _params()
  layout = Layout.from_tree(params)
  flat = layout.pack(params)
  f32, bf16 = gtx.adam(0.1), gtx.adam(0.1, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
  state = bf16.init(flat)
  assert state["adam"].mu["float32"].dtype == jnp.bfloat16
  assert {x.dtype for x in jax.tree.leaves(layout.unpack(state["adam"].nu))} == {
      jnp.dtype(jnp.bfloat16)}
  nbytes = lambda s: sum(x.nbytes for x in (s["adam"].mu["float32"], s["adam"].nu["float32"]))  # noqa: E731
  assert 2 * nbytes(state) == nbytes(f32.init(flat))
  u_packed = layout.unpack(bf16.update(flat, state)[0])
  u_tree = bf16.update(params, bf16.init(params))[0]
  _assert_close(u_packed, u_tree)


# ----------------------------------------------------------------------------
# Switching a state between modes.


def _continue(tx, params, state, loss, steps=2):
  """:func:`_train` from a given state."""
  def step(_, carry):
    params, state = carry
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = tx.update(grads, state, params, value=value, grad=grads, value_fn=loss)
    return gtx.apply_updates(params, updates), state
  return jax.lax.fori_loop(0, steps, step, (params, state))


# What a packed state holds: buffers in each group of a partition (MaskedNode in tree mode),
# per-run statistics (PackedLeaves), a scalar per leaf spread over it (novograd's second
# moment), and a history per leaf (leading axes). One compile each: the suite's time.
SWITCHES = [
    ("partition, adafactor and novograd", _mixed, lambda: gtx.partition(
        {"matrix": gtx.adafactor(0.05, min_dim_size_to_factor=2), "other": gtx.novograd(0.05)},
        _matrix_or_not)),
    # Real leaves: L-BFGS's curvature pairs amplify bfloat16's rounding (see above).
    ("lbfgs", _params, lambda: gtx.lbfgs(0.5)),
]


@pytest.mark.parametrize("case, make_params, make", SWITCHES, ids=[s[0] for s in SWITCHES])
def test_a_run_switches_modes_midway_and_ends_where_tree_mode_does(case, make_params, make):
  params, tx = make_params(), make()
  layout = Layout.from_tree(params)
  packed_loss = lambda f: _loss(layout.unpack(f))  # noqa: E731

  @jax.jit
  def run(params):
    flat = layout.pack(params)
    half = _continue(tx, params, tx.init(params), _loss)
    whole = _continue(tx, *half, _loss)
    # Two steps in tree mode, two packed; two packed, two in tree mode.
    to_packed = _continue(tx, layout.pack(half[0]),
                          layout.pack_state(half[1], like=tx.init(flat)), packed_loss)
    p_flat, s_flat = _continue(tx, flat, tx.init(flat), packed_loss)
    to_tree = _continue(tx, layout.unpack(p_flat),
                        layout.unpack_state(s_flat, like=tx.init(params)), _loss)
    return whole, to_packed, to_tree

  (p_tree, s_tree), (p_flat, s_flat), (p_back, s_back) = run(params)
  _assert_close(layout.unpack(p_flat), p_tree)
  _assert_close(p_back, p_tree)
  assert jax.tree.structure(s_back) == jax.tree.structure(s_tree)
  s_flat = layout.unpack_state(s_flat, like=s_tree)
  low = _has_bfloat16(params)  # float32 state of bfloat16 leaves: see the test above
  for state in (s_flat, s_back):
    _assert_close(state, s_tree, rtol=1e-2 if low else 1e-4, atol=1e-6, low=low)


def _numbered(state):
  """``state`` with each number in it distinct (its position), in each leaf's dtype.

  Keys, bools and leaves a mask leaves out keep what they hold.
  """
  counter = iter(range(1, 1 << 30))

  def number(x):
    dtype = getattr(x, "dtype", None)
    if dtype is None or not (jnp.issubdtype(dtype, jnp.number)):
      return x
    values = (next(counter) + np.arange(x.size) % 64).reshape(x.shape)
    return jnp.asarray(values.astype(np.float32) if dtype == jnp.bfloat16 else values, dtype)
  return jax.tree.map(number, state, is_leaf=gtx.tree.is_masked)


def _identical(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert getattr(x, "dtype", None) == getattr(y, "dtype", None)
    np.testing.assert_array_equal(_numbers(x), _numbers(y))


@pytest.mark.parametrize("name, make", [
    *((name, None) for name in gtx.optimizers.__all__),
    *((case, make) for case, make in MASKED if case.startswith(("masked", "partition")))],
    ids=lambda x: x if isinstance(x, str) else "")
def test_a_state_packs_and_unpacks_as_it_was(name, make):
  # Eager, no step: every leaf numbered, so a leaf read from the wrong place shows.
  tx = _build(name) if make is None else make()
  params = _params() if name in _REAL_ONLY else _mixed()
  layout = Layout.from_tree(params)
  tree_like, like = tx.init(params), tx.init(layout.pack(params))
  state = _numbered(tree_like)
  packed = layout.pack_state(state, like=like)
  _identical(layout.unpack_state(packed, like=tree_like), state)
  _identical(layout.pack_state(layout.unpack_state(packed, like=tree_like), like=like), packed)
  _identical(layout.pack_state(packed, like=like), packed)  # packed already: as it is
  assert gtx.hparams(packed) == gtx.hparams(state)
  # Leaves a mask leaves out of a stage keep like's entries (init's: never used).
  jax.tree.map(lambda s, p, init: _identical(p, init) if gtx.tree.is_masked(s) else None,
               state, layout.unpack_state(packed), layout.unpack_state(like),
               is_leaf=gtx.tree.is_masked)


_LAYOUT = Layout.from_tree(_TWO_BY_THREE)
SWITCH_MISMATCHES = [
    ("pack_state, a tree state of other params",
     lambda tx: _LAYOUT.pack_state(tx.init(_THREE_BY_TWO), like=tx.init(_pack(_TWO_BY_THREE))),
     r"^Layout.pack_state: at key path \['adam'\].mu\['w'\] the leaf is float32\[3, 2\] in "
     r"state, float32\[2, 3\] in like; pass a state of the optimizer and params that made like "
     r"\(like=tx.init\(layout.pack\(params\)\)\)$"),
    ("pack_state, moments of another dtype",
     lambda tx: _LAYOUT.pack_state(gtx.adam(0.1, mu_dtype=jnp.bfloat16).init(_TWO_BY_THREE),
                                   like=tx.init(_pack(_TWO_BY_THREE))),
     r"at key path \['adam'\].mu\['b'\] the leaf is bfloat16\[3\] in state, float32\[3\] in like"),
    ("pack_state, a chain with a stage more",
     lambda tx: _LAYOUT.pack_state(gtx.adamw(0.1).init(_TWO_BY_THREE),
                                   like=tx.init(_pack(_TWO_BY_THREE))),
     r"key path \['decay'\].hparams\['weight_decay'\] is in state only"),
    ("pack_state, another chain",
     lambda tx: _LAYOUT.pack_state(gtx.sgd(0.1, momentum=0.9).init(_TWO_BY_THREE),
                                   like=tx.init(_pack(_TWO_BY_THREE))),
     r"key path \['adam'\].count is in like only"),
    ("pack_state, like of another layout",
     lambda tx: _LAYOUT.pack_state(tx.init(_TWO_BY_THREE), like=tx.init(_pack(_THREE_BY_TWO))),
     r"like holds a tree packed with another layout at key path \['adam'\].mu: at key path "
     r"\['w'\] the leaf is float32\[3, 2\] in like, float32\[2, 3\] in this layout"),
    ("pack_state, a state packed with another layout",
     lambda tx: _LAYOUT.pack_state(tx.init(_pack(_THREE_BY_TWO)),
                                   like=tx.init(_pack(_TWO_BY_THREE))),
     r"state holds a tree packed with another layout at key path \['adam'\].mu: at key path "
     r"\['w'\] the leaf is float32\[3, 2\] in state, float32\[2, 3\] in this layout"),
    ("unpack_state, a packed like",
     lambda tx: _LAYOUT.unpack_state(tx.init(_pack(_TWO_BY_THREE)),
                                     like=tx.init(_pack(_TWO_BY_THREE))),
     r"^Layout.unpack_state: like holds a packed tree at key path \['adam'\].mu; pass a "
     r"tree-mode state of the optimizer, like=tx.init\(params\)$"),
    ("unpack_state, like of other params",
     lambda tx: _LAYOUT.unpack_state(tx.init(_pack(_TWO_BY_THREE)), like=tx.init(_THREE_BY_TWO)),
     r"at key path \['adam'\].mu\['w'\] the leaf is float32\[2, 3\] in state, float32\[3, 2\] "
     r"in like; pass a state of the optimizer and params that made like \(like=tx.init\(params\)\)"),
    ("unpack_state, like of another chain",
     lambda tx: _LAYOUT.unpack_state(tx.init(_pack(_TWO_BY_THREE)),
                                     like=gtx.adamw(0.1).init(_TWO_BY_THREE)),
     r"key path \['decay'\].hparams\['weight_decay'\] is in like only"),
]


@pytest.mark.parametrize("case, call, message", SWITCH_MISMATCHES,
                         ids=[m[0] for m in SWITCH_MISMATCHES])
def test_a_state_that_does_not_fit_names_the_key_path(case, call, message):
  with pytest.raises(gtx.StructureError, match=message):
    call(gtx.adam(0.1))
