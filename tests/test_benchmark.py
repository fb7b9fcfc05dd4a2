"""benchmarks/run.py's machinery on a tiny tree: what it measures and how it reports.

No timing is asserted (times depend on the machine); what is checked is what
does not: the ratios' arithmetic, state bytes and peak memory, that every
contender is measured, and that the report states the targets it was given.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import pathlib
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load(name: str, script: str):
  spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# No time is asserted, so a repetition needs only a few steps: at run.py's 0.25 s
# each, the tests' repetitions took 20 of the file's 48 seconds.
_REP_SECONDS = 0.002


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap():
  # Each timed repetition starts with gc.collect() (benchmarks/run.py: no collection
  # inside the timed loop). A full collection over this process's objects takes ~0.2 s,
  # which made the tests' 2 ms repetitions most of the file's time; frozen objects are
  # left out of it.
  gc.freeze()
  yield
  gc.unfreeze()


@pytest.fixture(scope="module")
def bench():
  module = _load("gradtx_benchmark", "run.py")
  module.REP_SECONDS = _REP_SECONDS
  return module


def test_paired_ratio_is_the_median_of_per_repetition_ratios(bench):
  mine, theirs = [2.0, 3.0, 9.0, 4.0, 5.0], [1.0, 3.0, 3.0, 4.0, 10.0]
  r = bench.paired_ratio(mine, theirs)
  ratios = sorted([2.0, 1.0, 3.0, 1.0, 0.5])
  assert r["median"] == statistics.median(ratios) == 1.0
  assert (r["q1"], r["q3"]) == (1.0, 2.0)
  # A load spike that slows one repetition of both contenders leaves the ratio alone,
  # while it moves the ratio of medians.
  assert bench.paired_ratio([1.0, 1.0, 10.0], [2.0, 2.0, 20.0])["median"] == 0.5


def test_grid_row_measures_every_contender(bench):
  shapes = {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32),
            "b": jax.ShapeDtypeStruct((16,), jnp.float32)}
  # optax mixes Python floats with int32 counters, which this suite's strict promotion refuses.
  with jax.numpy_dtype_promotion("standard"):
    row = bench.grid_row("t: tiny", shapes, "adam", reps=3, extra=["inject", "packed"],
                         compile_reps=2)
  results = row["results"]
  assert set(results) == {"gradtx", "optax", "optax inject_hyperparams", "gradtx packed"}
  for name, r in results.items():
    assert len(r["step_ms_all"]) == 3 and all(t > 0 for t in r["step_ms_all"]), name
    assert len(r["compiles"]) == 3, name  # a warm-up and two measured compiles
    assert r["compile_s"] == statistics.median(c["total"] for c in r["compiles"][1:])
  # Adam's state is two float32 moments per parameter (the counters and hyperparameters
  # are a few scalars over 144 parameters).
  assert results["optax"]["state_bytes_per_param"] == pytest.approx(8.0, abs=0.05)
  assert results["gradtx"]["state_bytes_per_param"] == pytest.approx(8.0, abs=0.2)
  assert results["gradtx packed"]["state_bytes_per_param"] == pytest.approx(8.0, abs=0.2)
  # Donated params and moments: both libraries' steps need the same memory.
  assert results["gradtx"]["peak_mb"] == pytest.approx(results["optax"]["peak_mb"], rel=0.05)
  for kind in ("step", "compile", "xla"):
    p = row["paired"][kind]
    assert p["q1"] <= p["median"] <= p["q3"]


def test_hand_fused_step_is_adam_in_each_moment_dtype(bench):
  """The roofline contender steps as gradtx's Adam does, its moments held in their dtype."""
  import gradtx as gtx
  # Small parameters, so that rounding them leaves the distance moved (1e-2) exact enough.
  params = {"w": jnp.linspace(-1e-2, 1e-2, 96, dtype=jnp.float32).reshape(8, 12),
            "b": jnp.linspace(5e-3, 2e-2, 12, dtype=jnp.float32)}
  grads = jax.tree.map(lambda p: jnp.cos(300.0 * p) * 1e-2 + 2e-3, params)
  step = jax.jit(bench.fused_adam_step)
  # bfloat16: the two write a moment in different forms (b m + (1 - b) g against
  # m + (1 - b)(g - m)), which may round one entry a unit of bfloat16's last place apart.
  for dtype, rtol in ((jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)):
    tx = gtx.adam(bench.LEARNING_RATE, mu_dtype=dtype, nu_dtype=dtype)
    state, mine = tx.init(params), params
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params)
    theirs, mu, nu, count = params, zeros, zeros, jnp.zeros((), jnp.int32)
    for _ in range(10):
      updates, state = tx.update(grads, state, mine)
      mine = gtx.apply_updates(mine, updates)
      theirs, mu, nu, count = step(theirs, mu, nu, count, grads)
    assert int(count) == 10
    for name in params:
      assert mu[name].dtype == nu[name].dtype == dtype and theirs[name].dtype == jnp.float32
      np.testing.assert_allclose(np.asarray(theirs[name] - params[name]),
                                 np.asarray(mine[name] - params[name]), rtol=rtol, atol=1e-7)


def test_bf16_target_names_the_hand_fused_steps(bench):
  def result(ms, state_bytes):
    return {"step_ms": ms, "compile_s": 1.0, "state_bytes_per_param": state_bytes}
  paired = {k: {"median": 1.0, "q1": 1.0, "q3": 1.0} for k in ("step", "compile", "xla")}
  row = {"case": "b: y", "optimizer": "adam", "paired": paired,
         "results": {"gradtx": result(10.0, 8.0), "optax": result(10.0, 8.0),
                     "fused": result(11.0, 8.0), "fused bf16 moments": result(13.0, 4.0),
                     "gradtx bf16 moments": result(12.0, 4.0)}}
  out = {target: (measured, met) for target, measured, met in bench.targets([row], train={})}
  measured, met = out["adam bf16 moments (b: y): step time <= f32 moments"]
  assert measured == "12.00 vs 10.00 ms; by hand (fused) 13.00 vs 11.00 ms" and not met
  assert out["adam bf16 moments (b: y): half the state bytes"][1]
  # The roofline target is the one-leaf case's; case b's fused step only informs.
  assert not any("roofline" in target for target in out)


def test_report_states_each_target(bench, tmp_path):
  def row(case, step, compile_s):
    def result(scale):
      return {"step_ms": step * scale, "compile_s": compile_s * scale, "trace_s": 0.1,
              "lower_s": 0.1, "xla_s": compile_s * scale - 0.2, "peak_mb": 1.0,
              "state_bytes_per_param": 8.0}
    return {"case": case, "optimizer": "adam",
            "results": {"gradtx": result(1.0), "optax": result(1.0 / step)},
            "paired": {k: {"median": v, "q1": v - 0.1, "q3": v + 0.1}
                       for k, v in (("step", step), ("compile", compile_s),
                                    ("xla", compile_s))}}
  rows = [row("a: x", 1.02, 0.9), row("b: y", 1.08, 1.2)]
  out = bench.targets(rows, train={})
  step, compile_ = out[0], out[1]
  assert not step[2] and "worst 1.080" in step[1] and "b adam" in step[1]
  assert "lower quartile is within: b adam" in step[1]
  assert not compile_[2] and "over on 1 of 2 rows" in compile_[1]
  assert bench.targets([row("a: x", 1.0, 0.95)], train={})[0][2]
  results = {"machine": {"quick": True, "date": "today", "cpu": "cpu", "cores": 2,
                         "backend": "cpu", "jax": "0", "jaxlib": "0", "optax": "0",
                         "gradtx": "0", "python": "3", "platform": "linux",
                         "load_average": (0.0, 0.0, 0.0), "reps": 3, "compile_reps": 2},
             "sizes": {"a: x": "1 leaves"}, "grid": rows, "training": {},
             "max_rss_mb": 1.0, "targets": out}
  bench.write_markdown(results, tmp_path / "RESULTS.md")
  text = (tmp_path / "RESULTS.md").read_text()
  assert "| b: y | adam |" in text and "1.080 (0.98-1.18)" in text
  assert "| tree compile time <= optax's |" in text and "**no**" in text


def test_compile_target_like_for_like_reads_the_injected_rows(bench):
  """gradtx's compiles against optax inject_hyperparams', paired, the warm-up left out."""
  def result(*seconds):
    return {"compiles": [{"total": s} for s in seconds]}
  paired = {k: {"median": 1.0, "q1": 1.0, "q3": 1.0} for k in ("step", "compile", "xla")}
  injected = {"case": "c: z", "optimizer": "sgd+momentum", "paired": paired,
              "results": {"gradtx": result(9.0, 1.0, 1.3, 1.2),
                          "optax": result(1.0, 1.0, 1.0, 1.0),
                          bench.INJECT: result(1.0, 1.0, 1.0, 1.0)}}
  plain = {"case": "a: x", "optimizer": "adam", "paired": paired,
           "results": {"gradtx": result(1.0), "optax": result(1.0)}}
  out = {target: (measured, met) for target, measured, met
         in bench.targets([plain, injected], train={})}
  measured, met = out[f"tree compile time <= {bench.INJECT}'s (hyperparameters in the "
                      "state, both), where measured"]
  assert not met and measured.startswith("worst 1.200") and "over on 1 of 1 rows (c sgd" in measured
  assert out["tree compile time <= optax's"][1]  # the paired ratios rows carry: 1.0
  within = dict(injected, results=dict(injected["results"], gradtx=result(9.0, 1.0, 0.9, 1.0)))
  assert next(met for target, _, met in bench.targets([within], train={}) if "inject" in target)


def test_partial_report_on_an_accelerator(bench, tmp_path):
  """A run stopped part-way (no rows yet) still reports, and names what it lacks."""
  assert bench.targets([], train={}) == []
  info = {"quick": False, "date": "today", "cpu": "cpu", "cores": 16, "backend": "gpu",
          "devices": ["cuda:0"], "device_kind": "NVIDIA H200", "jax": "0", "jaxlib": "0",
          "optax": "0", "gradtx": "0", "python": "3", "platform": "linux",
          "load_average": (0.0, 0.0, 0.0), "reps": 3, "compile_reps": 1,
          "commands": [["python benchmarks/run.py --only a", "today"]]}
  results = {"machine": info, "sizes": {}, "grid": [], "training": {}, "max_rss_mb": 1.0,
             "targets": []}
  bench.write_markdown(results, tmp_path / "RESULTS.md")
  text = (tmp_path / "RESULTS.md").read_text()
  assert "Produced by `python benchmarks/run.py --only a` on today." in text
  assert "**Not measured here: a sgd+momentum, a adam, " in text
  assert "c adamw+clip, the training rows.**" in text
  assert "| accelerator | NVIDIA H200 (1 in use: cuda:0) |" in text
  assert "one compile per contender" in text


def test_a_run_in_parts_appends_its_rows(bench, tmp_path, monkeypatch):
  """--only picks cases by letter; --append adds a later run's rows to the report."""
  tiny = lambda quick: {"w": jax.ShapeDtypeStruct((4, 8), jnp.float32)}  # noqa: E731
  monkeypatch.setattr(bench, "CASES", {"s: small": tiny, "t: tiny": tiny})
  monkeypatch.setattr(bench, "OPTIMIZERS", {"sgd": bench.OPTIMIZERS["sgd+momentum"]})
  monkeypatch.setattr(bench, "TORCH", {"sgd": bench.TORCH["sgd+momentum"]})
  monkeypatch.setattr(bench, "plot", lambda results, path: None)
  common = ["--reps", "2", "--compile-reps", "1", "--out", str(tmp_path)]
  with jax.numpy_dtype_promotion("standard"):
    bench.main(["--only", "t", *common])
    first = (tmp_path / "RESULTS.md").read_text()
    bench.main(["--only", "s", "--append", *common])
  text = (tmp_path / "RESULTS.md").read_text()
  assert "| t: tiny | sgd |" in first and "| s: small |" not in first
  assert "Not measured here: s sgd, the training rows" in first
  assert "| s: small | sgd |" in text and "| t: tiny | sgd |" in text
  assert text.index("| s: small | sgd |") < text.index("| t: tiny | sgd |")
  assert ("`python benchmarks/run.py --only t --reps 2 --compile-reps 1` on 20" in text
          and " and then `python benchmarks/run.py --only s --append --reps 2 --compile-reps 1` "
          "on 20" in text)
  assert "Not measured here: the training rows" in text
  # The same command again replaces the rows it measured: the report names it once, last.
  with jax.numpy_dtype_promotion("standard"):
    bench.main(["--only", "t", "--append", *common])
  commands = json.loads((tmp_path / "results.json").read_text())["machine"]["commands"]
  assert [c for c, _ in commands] == [
      "python benchmarks/run.py --only s --append --reps 2 --compile-reps 1",
      "python benchmarks/run.py --only t --append --reps 2 --compile-reps 1"]
  if bench.torch_device() is not None:  # torch.optim raced in every row, eager
    assert "| t: tiny | sgd | torch.optim fused |" in text and "| eager |" in text
  else:  # without torch the row is left out, not written empty
    assert "torch.optim fused |" not in text
  # --no-torch leaves torch out of the rows and out of the machine table (where it did not run)
  alone = tmp_path / "alone"
  with jax.numpy_dtype_promotion("standard"):
    bench.main(["--only", "t", "--no-torch", *common[:-1], str(alone)])
  text = (alone / "RESULTS.md").read_text()
  assert "| t: tiny | sgd |" in text and "| torch |" not in text and "torch.optim fused |" not in text
  assert json.loads((alone / "results.json").read_text())["machine"]["torch"] is None
  with pytest.raises(SystemExit):  # a case that does not exist: argparse's error, at once
    bench.main(["--only", "s,x", *common])


def test_torch_contender_runs_the_same_rule_as_gradtx(bench):
  # The torch.optim row must time the rule gradtx and optax run: after the same steps from
  # the same params and (fixed) grads, the params agree.
  torch = pytest.importorskip("torch")
  del torch
  shapes = {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32),
            "b": jax.ShapeDtypeStruct((16,), jnp.float32)}
  params, grads = bench.materialize(shapes, 0), bench.materialize(shapes, 1, 0.5)
  for opt in bench.OPTIMIZERS:
    tx = bench.OPTIMIZERS[opt][0]()
    step = jax.jit(bench.optimizer_step(tx, bench.gtx.apply_updates))
    p, state = params, tx.init(params)
    for _ in range(5):
      p, state = step(p, state, grads)
    c = bench.TorchContender(opt, params, grads, "cpu")
    assert c.run(5) > 0
    for ours, theirs in zip(jax.tree.leaves(p), c.leaves(), strict=True):
      np.testing.assert_allclose(theirs, np.asarray(ours), rtol=1e-5, atol=1e-7, err_msg=opt)
    assert c.state_bytes > 0


def test_grid_row_with_torch_records_it_as_eager(bench):
  pytest.importorskip("torch")
  shapes = {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32)}
  with jax.numpy_dtype_promotion("standard"):
    row = bench.grid_row("t: tiny", shapes, "sgd+momentum", reps=3, extra=["torch"],
                         compile_reps=2)
  r = row["results"]["torch.optim fused"]
  assert len(r["step_ms_all"]) == 3 and r["compile_s"] is None and r["peak_mb"] is None
  # sgd's momentum buffer: one float32 per parameter.
  assert r["state_bytes_per_param"] == pytest.approx(4.0)
  assert len(row["results"]["gradtx"]["compiles"]) == 3  # torch did not stop the recompiles


@pytest.fixture(scope="module")
def sweep():
  module = _load("gradtx_sweep", "optimizers.py")
  module.run.REP_SECONDS = _REP_SECONDS  # the run.py it imports, not the bench fixture's
  return module


# optax 0.2.8 deprecates its optimistic_adam (for optimistic_adam_v2); both are ready in gradtx.
@pytest.mark.filterwarnings("ignore:`optimistic_adam` is deprecated:DeprecationWarning")
def test_sweep_builds_every_optimizer_in_both_libraries(sweep):
  import optax
  params = {"w": jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4)}
  grads = jax.tree.map(lambda p: 0.1 * p + 0.01, params)
  for name in sweep.NAMES:
    for lib in (sweep.gtx, optax):
      tx = sweep.build(lib, name)
      with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32
        updates, _ = tx.update(grads, tx.init(params), params)
      assert np.isfinite(np.asarray(updates["w"])).all(), (name, lib.__name__)


def test_sweep_measures_and_reports_each_optimizer(sweep, tmp_path, monkeypatch):
  shapes = {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32),
            "b": jax.ShapeDtypeStruct((16,), jnp.float32)}
  monkeypatch.setattr(sweep.run, "CASES", {"t: tiny": lambda quick: shapes})
  with jax.numpy_dtype_promotion("standard"):
    row = sweep.measure("adam", shapes, reps=3, compile_reps=2)
    assert set(row["step_ms"]) == set(row["compile_s"]) == {"gradtx", "optax"}
    for kind in ("step", "compile"):
      assert row[kind]["q1"] <= row[kind]["median"] <= row[kind]["q3"]
    sweep.main(["--cases", "t", "--only", "adam,lion", "--reps", "2", "--out", str(tmp_path)])
  text = (tmp_path / "OPTIMIZERS.md").read_text()
  assert "## t: tiny (2 leaves, 0.00 M params)" in text
  assert "| adam |" in text and "| lion |" in text and "Step over 1.05x optax's:" in text
  results = json.loads((tmp_path / "optimizers.json").read_text())
  assert [r["optimizer"] for r in results["cases"]["t: tiny"]] == ["adam", "lion"]
  assert "compile_s" not in results["cases"]["t: tiny"][0]  # --compile-reps 0: none reported
  with pytest.raises(SystemExit):
    sweep.main(["--only", "adamm", "--out", str(tmp_path)])
  sweep.main(["--report-only", "--out", str(tmp_path)])  # rewritten from the json alone
  assert (tmp_path / "OPTIMIZERS.md").read_text() == text
  # --append measures some rows again: they replace their namesakes, in the sweep's order.
  lion = results["cases"]["t: tiny"][1]
  with jax.numpy_dtype_promotion("standard"):
    sweep.main(["--cases", "t", "--only", "sgd,lion", "--reps", "2", "--out", str(tmp_path),
                "--append"])
  appended = json.loads((tmp_path / "optimizers.json").read_text())
  rows = appended["cases"]["t: tiny"]
  assert [r["optimizer"] for r in rows] == ["adam", "lion", "sgd"]
  assert rows[0] == results["cases"]["t: tiny"][0]  # adam's row kept as it was
  assert rows[1]["step_ms"] != lion["step_ms"]  # lion's measured again
  assert len(appended["machine"]["commands"]) == 2
  assert "and then `" not in text and "and then `" in (tmp_path / "OPTIMIZERS.md").read_text()
  with pytest.raises(SystemExit, match="reps 2 there, 3 here"):  # unlike runs: refused
    sweep.main(["--cases", "t", "--only", "sgd", "--reps", "3", "--out", str(tmp_path),
                "--append"])


def test_eager_sweep_measures_and_reports_each_optimizer(tmp_path, monkeypatch):
  module = _load("gradtx_eager", "eager.py")
  monkeypatch.setattr(module, "REP_SECONDS", _REP_SECONDS)
  monkeypatch.setattr(module, "mlp", lambda: {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32),
                                              "b": jax.ShapeDtypeStruct((16,), jnp.float32)})
  with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32
    # polyak_sgd's update takes the loss value; sgd+momentum is built, not looked up.
    module.main(["--only", "adam,polyak_sgd,sgd+momentum", "--reps", "3", "--out", str(tmp_path)])
  results = json.loads((tmp_path / "eager.json").read_text())
  assert [r["optimizer"] for r in results["rows"]] == ["adam", "polyak_sgd", "sgd+momentum"]
  for row in results["rows"]:
    assert set(row["step_ms"]) == {"gradtx", "optax"} and row["steps"] >= 1
    assert row["step"]["q1"] <= row["step"]["median"] <= row["step"]["q3"]
  text = (tmp_path / "EAGER.md").read_text()
  assert "2 leaves, 144 params" in text and "| polyak_sgd |" in text and "Over 1.15x" in text
  module.main(["--report-only", "--out", str(tmp_path)])  # rewritten from the json alone
  assert (tmp_path / "EAGER.md").read_text() == text
  with pytest.raises(SystemExit):
    module.main(["--only", "adamm", "--out", str(tmp_path)])
