"""Property-based tests: for random trees (nested dicts and lists, shapes of rank 0-3,
float32 or bfloat16) and valid hyperparameters, every ready optimizer's updates keep the
gradients' structure, shapes and dtypes, and stay finite for finite input."""

import inspect

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx

# Ready optimizers that cannot run from (grads, state, params, value=loss) alone.
NEEDS_MORE = {
    "lbfgs": "needs value_fn and grad as extra arguments of update",
}
READY = sorted(n for n in gtx.optimizers.__all__ if n not in NEEDS_MORE)

# Valid values for the hyperparameters whose meaning is shared across optimizers.
HYPERPARAMETERS = {
    "learning_rate": st.floats(1e-4, 1.0),
    "b1": st.floats(0.0, 0.99),
    "b2": st.floats(0.9, 0.9999),
    "weight_decay": st.floats(0.0, 0.1),
}

SHAPES = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


def _trees(leaf):
  """Random nesting of dicts and lists around ``leaf``."""
  return st.recursive(
      leaf,
      lambda children: st.one_of(
          st.dictionaries(st.sampled_from("abcdef"), children, min_size=1, max_size=3),
          st.lists(children, min_size=1, max_size=3)),
      max_leaves=4)


@st.composite
def problems(draw, name):
  dtype = draw(st.sampled_from([jnp.float32, jnp.bfloat16]))
  shapes = draw(_trees(SHAPES))
  seed = draw(st.integers(0, 2**16))
  rng = np.random.default_rng(seed)
  scale = draw(st.sampled_from([1e-3, 1.0, 10.0]))

  def arrays(scale_):
    return jax.tree.map(lambda s: jnp.asarray(scale_ * rng.normal(size=s), dtype), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))

  parameters = inspect.signature(getattr(gtx, name)).parameters
  kwargs = {k: draw(strategy) for k, strategy in HYPERPARAMETERS.items() if k in parameters}
  return arrays(1.0), [arrays(scale), arrays(scale)], kwargs


def _spec(tree):
  return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("name", READY)
@hypothesis.settings(max_examples=2, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(data=st.data())
def test_updates_keep_structure_shapes_dtypes_and_stay_finite(name, data):
  params, grads_seq, kwargs = data.draw(problems(name))
  tx = getattr(gtx, name)(**kwargs)
  state = tx.init(params)
  for grads in grads_seq:
    loss = jnp.asarray(1.0, jnp.float32)
    updates, state = tx.update(grads, state, params, value=loss)
    assert _spec(updates) == _spec(grads)
    for leaf in jax.tree.leaves(updates):
      assert np.isfinite(np.asarray(leaf, np.float32)).all(), f"{name}({kwargs}): {updates}"
    params = gtx.apply_updates(params, updates)
  assert _spec(params) == _spec(grads_seq[0])


@pytest.mark.parametrize("name", READY)
def test_python_number_leaves_step_as_arrays_do(name):
  # A Python float leaf ({"temperature": 1.0}) in an eager step raised AttributeError
  # ('float' object has no attribute 'dtype') in every optimizer; optax's steps it.
  # Under jit it was already an array; now an eager step makes it one too.
  parameters = inspect.signature(getattr(gtx, name)).parameters
  kwargs = {"learning_rate": 0.1} if "learning_rate" in parameters else {}
  w = jnp.linspace(-1.0, 1.0, 4)

  def run(t, g_t):
    tx = getattr(gtx, name)(**kwargs)
    params = {"t": t, "w": w}
    state = tx.init(params)
    updates = None
    for g_w in (w, 2.0 * w):
      updates, state = tx.update({"t": g_t, "w": g_w}, state, params,
                                 value=jnp.asarray(1.0, jnp.float32))
      params = gtx.apply_updates(params, updates)
    return params, updates

  numbers, arrays = run(1.5, 0.5), run(jnp.asarray(1.5), jnp.asarray(0.5))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), numbers, arrays)
  assert isinstance(numbers[0]["t"], jax.Array) and numbers[0]["t"] != 1.5


# Trees with no leaves, each stepped to itself by optax (a model with no parameters yet,
# a frozen part filtered away). Params of None are also "no params given", which a stage
# that reads the params refuses, as optax's do.
_LEAFLESS = [{}, [], (), None, {"a": {}, "b": None, "c": [()]}]


@pytest.mark.parametrize("name", READY)
def test_trees_without_leaves_step_to_themselves(name):
  # A root None gradient was masked as a whole-tree MaskedNode, while init(None) had kept
  # None: every stage with state raised "key path <root> is in updates but not in
  # state.mu"; optax's adam steps None to None.
  parameters = inspect.signature(getattr(gtx, name)).parameters
  kwargs = {"learning_rate": 0.1} if "learning_rate" in parameters else {}
  loss = jnp.asarray(1.0, jnp.float32)
  for tree in _LEAFLESS:
    tx = getattr(gtx, name)(**kwargs)
    state = tx.init(tree)
    try:
      updates, new_state = tx.update(tree, state, tree, value=loss)
    except gtx.MissingArgumentError:
      assert tree is None  # params=None: the stage needs params it was not given
      continue
    assert updates == tree
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    updates, _ = jax.jit(tx.update)(tree, new_state, tree, value=loss)
    assert updates == tree
