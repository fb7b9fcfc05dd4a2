"""Save -> load -> resume is bit for bit: 10 steps straight equal 5 steps, a save and a
load (pickle, or a plain ``np.savez`` of the leaves restored into a fresh init's treedef),
then 5 more steps. The npz route is the recipe of docs/faq.md: a typed PRNG key is saved
as its raw data, and a bfloat16 leaf, which npz returns as raw bytes, is read back in the
fresh init's dtypes."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx


def _params():
  rng = np.random.default_rng(0)
  return {"layer": {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                    "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
          "scale": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}


def _grads(params, t):
  rng = np.random.default_rng(1 + t)
  grads = jax.tree.map(lambda p: 0.3 * p + jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  if t == 6:  # one bad step, for the wrappers that count them
    grads["scale"] = grads["scale"].at[0].set(jnp.nan)
  return grads


def _no_decay(p):
  return jax.tree.map(lambda x: "decay" if x.ndim > 1 else "no_decay", p)


OPTIMIZERS = {
    "adamw-schedule": lambda: gtx.adamw(gtx.schedules.warmup_cosine_decay_schedule(
        0.0, 0.1, 3, 10), weight_decay=0.1),
    "wrapped": lambda: gtx.chain(
        finite=gtx.zero_nans(),
        clip=gtx.clip_by_global_norm(1.0),
        opt=gtx.apply_if_finite(gtx.multi_steps(gtx.partition(
            {"decay": gtx.adamw(0.05, weight_decay=0.1), "no_decay": gtx.sgd(0.1, momentum=0.9)},
            _no_decay), every_k_schedule=2), max_consecutive_errors=2),
        plateau=gtx.reduce_on_plateau(patience=1, factor=0.5)),
    "lookahead": lambda: gtx.lookahead(gtx.adam(0.05), sync_period=3, slow_step_size=0.5,
                                       reset_state=True),
    # A typed PRNG key in the state and a bfloat16 leaf: neither goes through npz as is.
    "noisy-bfloat16": lambda: gtx.chain(noise=gtx.add_noise(0.1, 0.55, key=jax.random.key(3)),
                                        adam=gtx.adam(0.05)),
}


SET_BEFORE = {"adamw-schedule": {"adam.b1": 0.8}, "wrapped": {"clip.max_norm": 0.5},
              "lookahead": {"slow_step_size": 0.6}, "noisy-bfloat16": {"noise.eta": 0.2}}


def _start(name):
  params = _params()
  if name == "noisy-bfloat16":
    params["scale"] = params["scale"].astype(jnp.bfloat16)
  return gtx.LookaheadParams.init_synced(params) if name == "lookahead" else params


def _run(tx, step, params, state, ts):
  for t in ts:
    fast = params.fast if isinstance(params, gtx.LookaheadParams) else params
    params, state = step(params, state, _grads(fast, t))
  return params, state


def _make_step(tx):
  @jax.jit
  def step(params, state, grads):
    loss = sum(jnp.sum(jnp.square(g), dtype=jnp.float32) for g in jax.tree.leaves(grads))
    updates, state = tx.update(grads, state, params, value=loss)
    return gtx.apply_updates(params, updates), state
  return step


def _assert_bitwise(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  a, b = gtx.tree_utils.tree_unwrap_random_key_data((a, b))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype
    # Bit patterns, so that NaNs (their payloads too) and the signs of zeros count: numpy's
    # NaN-aware equality is not applied to bfloat16 by every ml_dtypes.
    bits = np.dtype(f"u{x.dtype.itemsize}") if x.dtype.kind in "fV" else x.dtype
    np.testing.assert_array_equal(x.view(bits), y.view(bits))


def _via_pickle(params, state, tmp_path):
  path = tmp_path / "checkpoint.pkl"
  path.write_bytes(pickle.dumps({"params": params, "state": state}))
  loaded = pickle.loads(path.read_bytes())
  return loaded["params"], loaded["state"]


def _via_npz(params, state, tmp_path, fresh):
  """Plain numpy leaves only; the structure and dtypes come from a fresh init."""
  path = tmp_path / "checkpoint.npz"
  leaves = jax.tree.leaves(gtx.tree_utils.tree_unwrap_random_key_data((params, state)))
  np.savez(path, *[np.asarray(x) for x in leaves])
  with np.load(path) as data:
    arrays = [data[f"arr_{i}"] for i in range(len(leaves))]

  def restore(saved, like):
    if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(saved, impl=jax.random.key_impl(like))
    return jnp.asarray(saved.view(like.dtype))  # bfloat16 comes back as void, |V2

  return jax.tree.map(restore, jax.tree.unflatten(jax.tree.structure(fresh), arrays), fresh)


@pytest.mark.parametrize("how", ["pickle", "npz"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resume_is_bitwise(name, how, tmp_path):
  tx = OPTIMIZERS[name]()
  step = _make_step(tx)
  params = _start(name)
  state = tx.init(params)
  state = gtx.set_hparams(state, SET_BEFORE[name])  # values set by name are saved too
  straight = _run(tx, step, params, state, range(10))

  halfway = _run(tx, step, params, state, range(5))
  if how == "pickle":
    loaded = _via_pickle(*halfway, tmp_path)
  else:
    fresh_tx = OPTIMIZERS[name]()   # as after a restart: a new optimizer object
    loaded = _via_npz(*halfway, tmp_path, fresh=(_start(name), fresh_tx.init(_start(name))))
  _assert_bitwise(loaded, halfway)
  resumed = _run(tx, step, *loaded, range(5, 10))
  _assert_bitwise(resumed, straight)
  # The hyperparameters survive too, by name.
  for key, value in SET_BEFORE[name].items():
    np.testing.assert_allclose(float(gtx.hparams(resumed[1])[key]), value, rtol=1e-6)


@pytest.mark.parametrize("protocol", [0, 1, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("name", list(OPTIMIZERS) + ["packed-monitor"])
def test_resume_is_bitwise_after_pickle_at_every_protocol(name, protocol):
  # gradtx's own nodes (ChainState, HParams, the monitor's Stats, Packed, Layout) hold
  # __slots__, which pickle's protocols 0 and 1 refused: "a class that defines __slots__
  # without defining __getstate__ cannot be pickled"; optax's NamedTuple states pickle.
  if name == "packed-monitor":
    tx = gtx.chain(monitor=gtx.monitor("norm", "leaf_norms"), adafactor=gtx.adafactor(0.05))
    layout = gtx.packed.Layout.from_tree(_params())
    params = layout.pack(_params())

    @jax.jit
    def step(params, state, grads):
      updates, state = tx.update(layout.pack(grads), state, params)
      return gtx.apply_updates(params, updates), state

    def run(params, state, ts):
      for t in ts:
        params, state = step(params, state, _grads(layout.unpack(params), t))
      return params, state
  else:
    tx = OPTIMIZERS[name]()
    params = _start(name)
    step = _make_step(tx)

    def run(params, state, ts):
      return _run(tx, step, params, state, ts)
  state = tx.init(params)
  straight = run(params, state, range(10))
  halfway = run(params, state, range(5))
  loaded = pickle.loads(pickle.dumps(halfway, protocol=protocol))
  _assert_bitwise(loaded, halfway)
  _assert_bitwise(run(*loaded, range(5, 10)), straight)


def test_the_wrapped_chain_exercised_its_counters():
  """The bitwise test above is only meaningful if the wrappers did something in 10 steps."""
  tx = OPTIMIZERS["wrapped"]()
  params, state = _run(tx, _make_step(tx), _params(), tx.init(_params()), range(10))
  assert bool(state["finite"].found_nan["scale"]) is False   # the last step was clean
  assert int(state["opt"].inner_state.gradient_step) == 5
  assert float(state["plateau"].scale) <= 1.0
