"""Multi-device checks for ``tests/test_sharding.py``, on 8 simulated CPU devices.

JAX reads ``XLA_FLAGS`` once, when it first starts a backend, so the device
count cannot change inside the pytest process; the test runs this file in a
subprocess instead::

    python tests/sharding_worker.py RESULTS_JSON CHECKPOINT_DIR [CHECK ...]

Each check is a function below; the results file maps its name to ``"ok"`` or
to the traceback of its failure. Everything uses JAX's own sharding: a
``jax.make_mesh`` mesh with explicit axes, ``NamedSharding``/``PartitionSpec``
and ``jax.jit``; gradtx adds no communication of its own. The same code runs
unchanged on a real multi-GPU or TPU mesh (docs/distributed.md).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # not when pytest imports this file to look for doctests
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()

import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from typing import Any, Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

import gradtx as gtx  # noqa: E402

# The suite's strict settings (conftest.py), which this process does not load.
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

STEPS = 4
# Sharded and single-device runs add the same numbers in a different order
# (per-device partial sums, then an all-reduce), so they agree to rounding.
RTOL, ATOL = 1e-5, 1e-6

CHECKS: dict[str, Callable[[str], None]] = {}


def check(fn: Callable[[str], None]) -> Callable[[str], None]:
  CHECKS[fn.__name__] = fn
  return fn


def optimizers() -> dict[str, gtx.GradientTransformation]:
  schedule = gtx.schedules.warmup_cosine_decay_schedule(0.0, 0.02, 2, 10, 1e-3)
  return {
      "adam": gtx.adam(1e-2),
      "adamw": gtx.adamw(schedule, weight_decay=0.1),
      "clip+adamw": gtx.chain(clip=gtx.clip_by_global_norm(1.0),
                              adamw=gtx.adamw(schedule, weight_decay=0.1)),
  }


def mesh(axis: str) -> jax.sharding.Mesh:
  return jax.make_mesh((8,), (axis,), axis_types=(AxisType.Explicit,))


def init_params() -> dict[str, jax.Array]:
  """A two-layer MLP whose every leaf has a leading dimension divisible by 8."""
  k1, k2 = jax.random.split(jax.random.key(0))
  return {"w1": jax.random.normal(k1, (16, 64)) / 4, "b1": jnp.zeros(64),
          "w2": jax.random.normal(k2, (64, 8)) / 8, "b2": jnp.zeros(8)}


def batch() -> tuple[jax.Array, jax.Array]:
  kx, ky = jax.random.split(jax.random.key(1))
  return jax.random.normal(kx, (64, 16)), jax.random.normal(ky, (64, 8))


def loss_fn(params, x, y):
  hidden = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
  return jnp.mean((hidden @ params["w2"] + params["b2"][None, :] - y) ** 2)


def fsdp_loss_fn(params, x, y):
  # Fully sharded data parallel: gather each weight for the forward pass. The
  # transpose of this gather, in the backward pass, reduce-scatters the
  # gradients back to the params' sharding.
  gathered = jax.tree.map(lambda p: jax.sharding.reshard(p, P()), params)
  return loss_fn(gathered, x, y)


def make_step(tx: gtx.GradientTransformation, loss: Callable = loss_fn):

  @jax.jit
  def step(params, state, x, y):
    value, grads = jax.value_and_grad(loss)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return gtx.apply_updates(params, updates), state, value

  return step


def make_update(tx: gtx.GradientTransformation):
  """The optimizer's part of a step alone: update and apply, jitted."""

  @jax.jit
  def update(grads, state, params):
    updates, state = tx.update(grads, state, params)
    return gtx.apply_updates(params, updates), state

  return update


def train(tx, params, x, y, steps=STEPS, loss=loss_fn, state=None, step=None):
  """``steps`` steps of ``step`` (by default ``make_step(tx, loss)``), from ``state`` or init."""
  step = make_step(tx, loss) if step is None else step
  state = jax.jit(tx.init)(params) if state is None else state
  for _ in range(steps):
    params, state, _ = step(params, state, x, y)
  return params, state


@functools.cache
def single_device_run(name: str) -> tuple[Any, Any]:
  """Params and state after training ``optimizers()[name]`` on one device: what the
  data-parallel and fully sharded runs must both end at (computed once for the two)."""
  return train(optimizers()[name], init_params(), *batch())


def assert_trees_close(actual, expected, what: str) -> None:
  jax.tree.map_with_path(
      lambda path, a, b: np.testing.assert_allclose(
          a, b, rtol=RTOL, atol=ATOL, err_msg=f"{what}{jax.tree_util.keystr(path)}"),
      actual, expected)


def assert_trees_equal(actual, expected, what: str) -> None:
  jax.tree.map_with_path(
      lambda path, a, b: np.testing.assert_array_equal(
          a, b, err_msg=f"{what}{jax.tree_util.keystr(path)}"),
      actual, expected)


def param_shaped_states(state) -> list[tuple[str, Any]]:
  """The moments (``mu``, ``nu``) of every adam stage in a state, by dotted name."""
  names = [name for name in ("adam", "adamw.adam") if _has(state, name)]
  return [(f"{name}.{field}", getattr(state[name], field))
          for name in names for field in ("mu", "nu")]


def _has(state, name: str) -> bool:
  try:
    state[name]
  except KeyError:
    return False
  return True


def on_mesh(abstract, concrete_mesh):
  """An abstract tree (from jax.eval_shape) with its shardings on ``concrete_mesh``.

  Under explicit axes, jax.eval_shape keeps each leaf's PartitionSpec over an
  abstract mesh; restoring a checkpoint needs the devices, so the same specs
  are put on the concrete mesh. Leaves made without reference to the params
  (counts, hyperparameters) have no sharding there and are replicated.
  """

  def concrete(a):
    spec = P() if a.sharding is None else a.sharding.spec
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(concrete_mesh, spec))

  return jax.tree.map(concrete, abstract)


def assert_sharded_like(tree, shardings, what: str) -> None:
  jax.tree.map_with_path(
      lambda path, leaf, sharding: _assert_same_sharding(
          leaf, sharding, f"{what}{jax.tree_util.keystr(path)}"), tree, shardings)


def _assert_same_sharding(leaf, sharding, where: str) -> None:
  if not leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
    raise AssertionError(f"{where} is sharded as {leaf.sharding}, expected {sharding}")


# ----------------------------------------------------------------------------
# (a) Data parallel: params and optimizer state replicated, batch sharded.


@check
def data_parallel_matches_single_device(tmp: str) -> None:
  del tmp
  x, y = batch()
  for name, tx in optimizers().items():
    expected_params, expected_state = single_device_run(name)
    data = mesh("data")
    with jax.set_mesh(data):
      replicated = NamedSharding(data, P())
      params = jax.device_put(init_params(), replicated)
      xs, ys = jax.device_put((x, y), NamedSharding(data, P("data")))
      state = jax.jit(tx.init)(params)
      step = make_step(tx).lower(params, state, xs, ys).compile()
      hlo = step.as_text()
      params, state = train(tx, params, xs, ys, state=state, step=step)
    # The compiler averages the per-device gradients with an all-reduce.
    assert "all-reduce" in hlo, f"{name}: no all-reduce in the data-parallel step"
    for leaf in jax.tree.leaves((params, state)):
      assert leaf.sharding.is_fully_replicated, f"{name}: {leaf.sharding} is not replicated"
    assert_trees_close(params, expected_params, f"{name}: params")
    assert_trees_close(state, expected_state, f"{name}: state")


# ----------------------------------------------------------------------------
# (b) Fully sharded: every leaf of the params sharded over the mesh axis.


def fsdp_shardings(params, axis_mesh) -> dict[str, NamedSharding]:
  return jax.tree.map(lambda p: NamedSharding(axis_mesh, P("fsdp")), params)


@check
def fully_sharded_state_takes_the_params_sharding(tmp: str) -> None:
  del tmp
  fsdp = mesh("fsdp")
  with jax.set_mesh(fsdp):
    shardings = fsdp_shardings(init_params(), fsdp)
    params = jax.device_put(init_params(), shardings)
    for name, tx in optimizers().items():
      # No out_shardings: the state follows the params through the jitted init.
      state = jax.jit(tx.init)(params)
      moments = param_shaped_states(state)
      assert len(moments) == 2, f"{name}: expected mu and nu, got {moments}"
      for field, tree in moments:
        assert_sharded_like(tree, shardings, f"{name}: {field}")
      # Per-stage scalars (counts, hyperparameters) are replicated.
      for leaf in jax.tree.leaves(gtx.hparams(state)):
        assert leaf.sharding.is_fully_replicated, f"{name}: a hyperparameter is sharded"
      # jax.eval_shape gives the same shardings, for an abstract restore target.
      abstract = on_mesh(jax.eval_shape(tx.init, params), fsdp)
      for field, tree in param_shaped_states(abstract):
        assert_sharded_like(tree, shardings, f"{name}: abstract {field}")


@check
def fully_sharded_update_gathers_nothing(tmp: str) -> None:
  del tmp
  fsdp = mesh("fsdp")
  with jax.set_mesh(fsdp):
    shardings = fsdp_shardings(init_params(), fsdp)
    params = jax.device_put(init_params(), shardings)
    grads = jax.tree.map(lambda p: p * 10, params)  # large enough to clip
    for name, tx in optimizers().items():
      state = jax.jit(tx.init)(params)
      update = make_update(tx)
      hlo = update.lower(grads, state, params).compile().as_text()
      assert "all-gather" not in hlo, f"{name}: the update gathers:\n" + "\n".join(
          line for line in hlo.splitlines() if "all-gather" in line)
      if "clip" in name:
        # The global norm needs one sum over all devices, and nothing more.
        assert "all-reduce" in hlo, f"{name}: the global norm has no all-reduce"
      new_params, new_state = update(grads, state, params)
      assert_sharded_like(new_params, shardings, f"{name}: params")
      for field, tree in param_shaped_states(new_state):
        assert_sharded_like(tree, shardings, f"{name}: {field}")


@check
def wrappers_and_factored_states_keep_the_params_sharding(tmp: str) -> None:
  """A skipped step's zeros (multi_steps, apply_if_finite) and a statistic that is a
  sum over an axis (adafactor's rows, sm3's accumulators) are sharded as the
  updates and params they come from: one compile, sharded state from init on."""
  del tmp
  fsdp = mesh("fsdp")
  adam = lambda: gtx.adam(1e-2)  # noqa: E731
  cases = {
      "multi_steps": gtx.multi_steps(adam(), 2),
      "multi_steps+skip": gtx.multi_steps(adam(), 2, should_skip_update_fn=gtx.skip_not_finite),
      "apply_if_finite": gtx.apply_if_finite(adam(), 3),
      "adafactor": gtx.adafactor(1e-2, min_dim_size_to_factor=16),  # w1 factored, w2 not
      "sm3": gtx.sm3(0.1),
  }
  with jax.set_mesh(fsdp):
    params = jax.device_put(init_params(), fsdp_shardings(init_params(), fsdp))
    x, y = batch()
    for name, tx in cases.items():
      traces = []

      def step(params, state, tx=tx, traces=traces):
        traces.append(1)
        grads = jax.grad(fsdp_loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gtx.apply_updates(params, updates), state

      state = jax.jit(tx.init)(params)
      specs = lambda s: [leaf.sharding.spec for leaf in jax.tree.leaves(s)]  # noqa: E731
      at_init = specs(state)
      assert any(spec != P() and spec != P(None) for spec in at_init), (
          f"{name}: no state leaf is sharded at init: {at_init}")
      step = jax.jit(step, donate_argnums=(1,))
      p = params
      for _ in range(3):
        p, state = step(p, state)
      assert len(traces) == 1, f"{name}: the step compiled {len(traces)} times"
      assert specs(state) == at_init, f"{name}: the state's sharding moved from {at_init}"
      assert_sharded_like(p, fsdp_shardings(p, fsdp), f"{name}: params")


@check
def fully_sharded_matches_single_device(tmp: str) -> None:
  del tmp
  x, y = batch()
  for name, tx in optimizers().items():
    expected_params, expected_state = single_device_run(name)
    fsdp = mesh("fsdp")
    with jax.set_mesh(fsdp):
      shardings = fsdp_shardings(init_params(), fsdp)
      params = jax.device_put(init_params(), shardings)
      xs, ys = jax.device_put((x, y), NamedSharding(fsdp, P("fsdp")))
      params, state = train(tx, params, xs, ys, loss=fsdp_loss_fn)
    assert_sharded_like(params, shardings, f"{name}: params after training")
    assert_trees_close(params, expected_params, f"{name}: params")
    assert_trees_close(state, expected_state, f"{name}: state")


# ----------------------------------------------------------------------------
# Checkpoints of a sharded state with orbax.


@check
def orbax_sharded_state_resumes_bit_for_bit(tmp: str) -> None:
  import orbax.checkpoint as ocp

  x, y = batch()
  tx = optimizers()["clip+adamw"]
  fsdp = mesh("fsdp")
  with jax.set_mesh(fsdp):
    shardings = fsdp_shardings(init_params(), fsdp)
    params = jax.device_put(init_params(), shardings)
    xs, ys = jax.device_put((x, y), NamedSharding(fsdp, P("fsdp")))
    step = make_step(tx, fsdp_loss_fn)  # one program for the three runs below
    params, state = train(tx, params, xs, ys, steps=3, step=step)
    path = os.path.join(tmp, "sharded")
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(path, {"params": params, "opt_state": state})
      checkpointer.wait_until_finished()
      abstract_params = jax.tree.map(
          lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s), params, shardings)
      target = {"params": abstract_params,
                "opt_state": on_mesh(jax.eval_shape(tx.init, abstract_params), fsdp)}
      restored = checkpointer.restore(path, target)
    assert isinstance(restored["opt_state"], gtx.ChainState)
    assert_trees_equal(restored, {"params": params, "opt_state": state}, "restored")
    for field, tree in param_shaped_states(restored["opt_state"]):
      assert_sharded_like(tree, shardings, f"restored {field}")
    assert int(restored["opt_state"]["adamw.lr"].hparams.count) == 3
    # Resume: three more steps from the restored state equal three more from memory.
    resumed = train(tx, restored["params"], xs, ys, steps=3, state=restored["opt_state"],
                    step=step)
    uninterrupted = train(tx, params, xs, ys, steps=3, state=state, step=step)
  assert_trees_equal(resumed, uninterrupted, "resumed")


# ----------------------------------------------------------------------------
# The documentation's code, run as written.


# ----------------------------------------------------------------------------
# Hyperparameters set between steps.


@check
def hyperparameters_set_between_steps_do_not_recompile(tmp: str) -> None:
  """set_hparams and tree_set put the new value where the old one was (replicated over
  the mesh): an uncommitted array on one device compiled the step again, both on a mesh
  of Auto axes and on an explicit mesh where the value was set outside its context."""
  del tmp
  x, y = batch()
  auto = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
  for name, the_mesh, context in [("auto", auto, None),
                                  ("explicit", mesh("batch"), mesh("batch"))]:
    tx = gtx.adam(1e-2)
    traces = []

    def step(params, state, x, y, tx=tx, traces=traces):
      traces.append(1)
      updates, state = tx.update(jax.grad(loss_fn)(params, x, y), state, params)
      return gtx.apply_updates(params, updates), state

    step = jax.jit(step)
    with jax.set_mesh(context) if context is not None else contextlib.nullcontext():
      params = jax.device_put(init_params(), NamedSharding(the_mesh, P()))
      state = jax.device_put(tx.init(params), NamedSharding(the_mesh, P()))
      xs, ys = jax.device_put((x, y), NamedSharding(the_mesh, P("batch")))
      for _ in range(2):
        params, state = step(params, state, xs, ys)
    state = gtx.set_hparams(state, {"lr.learning_rate": 0.0, "adam.b1": 0.5})
    state = gtx.tree_utils.tree_set(state, b2=0.9, count=jnp.int32(5))
    frozen = params
    with jax.set_mesh(context) if context is not None else contextlib.nullcontext():
      params, state = step(params, state, xs, ys)
    assert len(traces) == 1, f"{name}: the step compiled {len(traces)} times"
    assert_trees_equal(params, frozen, f"{name}: params (learning rate 0)")
    values = {k: float(v) for k, v in gtx.hparams(state).items()}
    assert values["adam.b1"] == 0.5 and values["adam.b2"] == np.float32(0.9), values
    assert int(state["adam"].count) == 6


@check
def docs_distributed_page_runs(tmp: str) -> None:
  """Runs the Python blocks of docs/distributed.md in order, in one namespace."""
  del tmp
  page = os.path.join(os.path.dirname(__file__), "..", "docs", "distributed.md")
  with open(page) as f:
    blocks = re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)
  assert len(blocks) >= 5, f"expected the page's code blocks, found {len(blocks)}"
  namespace: dict[str, Any] = {}
  # The page sets its mesh globally; leaving this block restores the mesh from before
  # it. jax.set_mesh(None) would say the same but raises before jax 0.10.
  with jax.set_mesh(mesh("batch")):
    for index, block in enumerate(blocks):
      exec(compile(block, f"docs/distributed.md, block {index + 1}", "exec"), namespace)
  assert jax.sharding.get_abstract_mesh().empty, "the page's mesh outlived the check"


def main(argv: list[str]) -> int:
  out, tmp, *names = argv
  assert jax.device_count() == 8, f"expected 8 simulated devices, got {jax.devices()}"
  results = {}
  for name in names or list(CHECKS):
    try:
      CHECKS[name](tmp)
      results[name] = "ok"
    except Exception:  # noqa: BLE001 -- every failure is reported to the test, by name
      results[name] = traceback.format_exc()
  with open(out, "w") as f:
    json.dump(results, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
