"""Every ready optimizer that optax also has, stepped eagerly (no ``jax.jit``), gradtx against optax.

    python benchmarks/eager.py [--reps N] [--only adam,lion] [--out DIR] [--report-only]

A notebook user who calls ``tx.update`` step by step without ``jax.jit`` pays
for every operation the update dispatches, one at a time, and for the Python
around them. For each optimizer of ``optimizers.py``'s sweep (built as
``name(learning_rate)`` in both libraries), plus ``polyak_sgd`` (given the loss
value) and sgd with momentum and with Nesterov momentum, it times one eager
``update`` + ``apply_updates`` on a small model's tree (a 3-layer MLP with two
layer norms: 10 leaves), each step fed the last one's params and state and
waited for (``block_until_ready``). The two contenders of a row are timed in
``--reps`` interleaved repetitions (their order alternating) of as many steps
as take about ``REP_SECONDS``, after a warm-up; a row's time is the median over repetitions of
the CPU seconds per step of this process, which other processes' load on a
shared machine inflates far less than wall time, and its ratio is the median
of the per-repetition ratios (gradtx's over optax's), with their quartiles. It
writes ``EAGER.md`` and ``eager.json`` next to this file (or in ``--out``);
``--report-only`` rewrites the first from the second.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optimizers  # noqa: E402  (the sweep's names and how it builds them)
import run  # noqa: E402  (trees, ratios, machine info)
from run import gtx  # noqa: E402

REP_SECONDS = 0.1  # target CPU time of one repetition of one contender

# Beyond the sweep's names: polyak_sgd (its update takes the loss value) and sgd's
# momentum variants, built the same way in both libraries.
VARIANTS: dict[str, Callable[[Any], Any]] = {
    "polyak_sgd": lambda lib: lib.polyak_sgd(run.LEARNING_RATE),
    "sgd+momentum": lambda lib: lib.sgd(run.LEARNING_RATE, momentum=0.9),
    "sgd+nesterov": lambda lib: lib.sgd(run.LEARNING_RATE, momentum=0.9, nesterov=True),
}
NAMES = [*optimizers.NAMES, *VARIANTS]
# What an update needs besides the gradient, state and params.
EXTRA: dict[str, Callable[[], dict]] = {"polyak_sgd": lambda: {"value": jnp.float32(1.0)}}


# What runs of this sweep found, kept with the code that writes the report (--report-only
# rewrites it).
READING: list[str] = [
    "* An eager step dispatches each operation of each leaf on its own (about 5-20 us "
    "apiece on this machine), so a row's time is roughly its operations per leaf times the "
    "leaves, plus Python. What made gradtx slower than optax here was shared: a "
    "`custom_jvp` function (`numerics.safe_sqrt`, in every norm) traced its rule at every "
    "eager call (0.33 ms a leaf), `numerics.at_least_float32` made an array at every call, "
    "and per-step scalars (add_noise's sigma, a first-step flag) and no-op `astype` casts "
    "were repeated at every leaf. None of those changes alters a traced program: the "
    "jitted steps compile to the same instructions as before.",
    "* A second pass found work done twice or for nothing, again without touching a traced "
    "program (the compiled steps are the same): `ema_moment` squared the gradient for its "
    "dtype and `lerp_moment` squared it again (a dead operation when traced, a dispatched "
    "one eagerly, at every leaf of 10 optimizers); the sum that keeps an overflowed mean of "
    "squares at Inf (added since the run before) cost add, compare and select at every "
    "leaf and moment, and is now one compiled kernel when eager "
    "(`core.one_kernel_when_eager`: the sum alone, since with the product in the same "
    "kernel XLA fuses a multiply-add and the float32 moment changed in the last bit); "
    "adadelta added E[g^2] + eps twice; and `jnp.asarray` or `astype` of an array already "
    "of its dtype, a no-op an eager step pays like an operation, ran at every leaf of the "
    "norms, the inner products and prodigy's and dadapt_adamw's moments. Before them "
    "(runs of those rows with `--reps 11` on the same loaded machine) and in the full run after them: "
    "rmsprop 1.22-1.30x -> 0.96x, amsgrad 1.08-1.21x -> 1.00x, adadelta 1.29-1.43x -> "
    "1.16x, simplified_ademamix 1.27-1.48x -> 1.11x, novograd 1.51-1.60x -> 1.37x.",
    "* A third: the Adam family's denominator sqrt(v + eps_root) + eps, written out in 8 "
    "places, is one helper (`numerics.adam_denominator`), one compiled kernel when eager "
    "(two sums and a root, no product: the same bits). With it, in this run on a quiet "
    "machine: adadelta 1.04x, simplified_ademamix 1.01x, ademamix 0.89x; no row but "
    "novograd over 1.10x.",
    "* Still over 1.15x in this run: novograd (about 1.3x), whose optax version runs its "
    "first-step branch in a `lax.cond`, which eagerly is one compiled program for the whole "
    "tree, where gradtx dispatched its rule's operations per leaf (about 15, 8 of them on "
    "the leaf's scalar second moment). Since (2026-12-07, `--only novograd --reps 11`, "
    "twice, on a machine loaded by other work): each leaf's rule is one compiled kernel "
    "per shape when eager (its products feed sums, so the eager bits are the fused "
    "kernel's; the jitted step's instructions are unchanged): 0.76x and 0.79x (1.70 "
    "against 2.29 ms). adadelta's rule is written for the jitted step's kernels "
    "(two roots, each read inside its reader's kernel) at the cost of two more eager "
    "operations per leaf; simplified_ademamix's `add_decayed_weights` stage adds 0 times "
    "the params at every leaf where optax drops a weight decay that is the constant 0 when "
    "it builds the chain (gradtx holds it in the state, settable between steps, so the "
    "step keeps it). prodigy's and dadapt_adamw's optax steps have alternated between "
    "about 9 and 40 ms in earlier runs (prodigy's quartiles 0.21-1.07).",
    "* After this run (2026-12-07, not in the table: measured on a loaded machine, "
    "`--only muon --reps 11` and by hand): muon's Newton-Schulz ran op by op under `vmap` "
    "(some 60 operations a leaf); it is now one compiled kernel per shape when eager (its "
    "products feed sums, so the bits are a jitted step's, not the op-by-op ones): 46.7 -> "
    "12.0 ms. And a loop (`lax.while_loop`, `scan`, `cond`) whose body was a new closure "
    "at every call was compiled again at every eager call: the line searches (lbfgs 1931 "
    "-> 31 ms a step, zoom 3284 -> 3.0 ms, backtracking 444 -> 2.3 ms), `ctc_loss`, "
    "`projection_l1_ball`, `power_iteration`, `matrix_inverse_pth_root`, sophia's verbose "
    "print. Each is now a module-level `jax.jit` after the argument checks (inlined under "
    "an outer jit: the jitted steps' instructions are unchanged), and a test counts the "
    "compiles of a second eager call (0; the `compiles` fixture of `tests/conftest.py`). "
    "A search or power iteration given a function (`value_fn`, a matrix-vector product) "
    "looks its program up by the function's identity, as `jax.jit` does a static "
    "argument.",
    "* `jax.jit(tx.update)` is the remedy for a user who steps eagerly: hyperparameters "
    "live in the state, so it compiles once (novograd's update: 0.17 ms a step after a "
    "0.33 s first call, against about 3 ms a step eagerly and a first eager call of 1 s, "
    "which compiles each operation).",
]


def mlp() -> dict:
  """A 3-layer MLP (64 -> 128 -> 128 -> 10) with a layer norm after each hidden layer."""
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  return {"dense_0": {"kernel": f32(64, 128), "bias": f32(128)},
          "norm_0": {"scale": f32(128), "bias": f32(128)},
          "dense_1": {"kernel": f32(128, 128), "bias": f32(128)},
          "norm_1": {"scale": f32(128), "bias": f32(128)},
          "dense_2": {"kernel": f32(128, 10), "bias": f32(10)}}


def build(lib: Any, name: str) -> Any:
  return VARIANTS[name](lib) if name in VARIANTS else optimizers.build(lib, name)


class Eager:
  """One library's optimizer, stepped eagerly on its own params and state."""

  def __init__(self, label: str, lib: Any, name: str, params: Any, grads: Any):
    self.label = label
    self.tx, self.apply = build(lib, name), lib.apply_updates
    self.extra = EXTRA.get(name, dict)()
    self.grads = grads
    self.params, self.state = params, self.tx.init(params)
    self.times: list[float] = []

  def run(self, steps: int) -> float:
    """CPU seconds per step over ``steps`` steps."""
    params, state, tx = self.params, self.state, self.tx
    t0 = time.process_time()
    for _ in range(steps):
      updates, state = tx.update(self.grads, state, params, **self.extra)
      params = self.apply(params, updates)
    jax.block_until_ready((params, state))
    elapsed = time.process_time() - t0
    self.params, self.state = params, state
    return elapsed / steps


def measure(name: str, shapes: Any, reps: int) -> dict:
  params = run.materialize(shapes, 0)
  grads = run.materialize(shapes, 1, 1e-2)
  contenders = [Eager("gradtx", gtx, name, params, grads),
                Eager("optax", optax, name, params, grads)]
  for c in contenders:
    c.run(2)  # warm up: the first steps compile each operation they dispatch
  # One number of steps for both, so that each repetition of the two spans the same load.
  steps = max(1, int(REP_SECONDS / max(max(c.run(1) for c in contenders), 1e-6)))
  gc.disable()  # as timeit does: a collection would land on one contender's repetition
  try:
    for rep in range(reps):
      for c in contenders if rep % 2 == 0 else contenders[::-1]:
        c.times.append(c.run(steps))
  finally:
    gc.enable()
  mine, theirs = contenders
  return {"optimizer": name, "steps": steps,
          "step_ms": {c.label: 1e3 * statistics.median(c.times) for c in contenders},
          "step": run.paired_ratio(mine.times, theirs.times)}


def write_markdown(results: dict, path: Path) -> None:
  info = results["machine"]
  lines = ["# Eager steps: gradtx vs optax", "",
           f"Produced by `{info['command']}` on {info['date']}: {info['cpu']}, {info['cores']} "
           f"cores, {info['backend']} ({info['device_kind']}), jax {info['jax']}, optax "
           f"{info['optax']}.", "",
           f"One eager (not jitted) `update` + `apply_updates` on {results['size']}, each "
           "optimizer built as `name(1e-3)` in both libraries. The two contenders of a row "
           f"are timed in {info['reps']} interleaved repetitions of about {REP_SECONDS} s each; "
           "times are the median CPU milliseconds per step, and a ratio is the median over "
           "repetitions of gradtx's time over optax's (quartiles in brackets).", "",
           "| optimizer | gradtx ms | optax ms | ratio |", "|---|---:|---:|---:|"]
  for r in results["rows"]:
    lines.append(f"| {r['optimizer']} | {r['step_ms']['gradtx']:.3f} | "
                 f"{r['step_ms']['optax']:.3f} | {run.fmt_ratio(r['step'], 3)} |")
  over = [r["optimizer"] for r in results["rows"] if r["step"]["median"] > 1.15]
  lines += ["", f"Over 1.15x optax's: {', '.join(over) if over else 'none'}.", "",
            "## Reading these numbers", "", *READING, ""]
  path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reps", type=int, default=21, help="interleaved repetitions per row")
  parser.add_argument("--only", default=None, help="these optimizers, comma-separated")
  parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
  parser.add_argument("--report-only", action="store_true",
                      help="rewrite EAGER.md from eager.json, measuring nothing")
  args = parser.parse_args(argv)
  if args.report_only:
    write_markdown(json.loads((args.out / "eager.json").read_text()), args.out / "EAGER.md")
    return
  names = args.only.split(",") if args.only else NAMES
  unknown = [n for n in names if n not in NAMES]
  if unknown:
    parser.error(f"--only: not in the sweep: {', '.join(unknown)}")
  info = run.machine_info(quick=False, reps=args.reps, use_torch=False)
  info["command"] = run.command_line("eager.py", argv)
  shapes = mlp()
  results: dict[str, Any] = {
      "machine": info, "rows": [],
      "size": f"a 3-layer MLP's tree ({len(jax.tree.leaves(shapes))} leaves, "
              f"{run.n_params(shapes)} params)"}
  for name in names:
    row = measure(name, shapes, args.reps)
    results["rows"].append(row)
    print(f"  {name:28s} gradtx {row['step_ms']['gradtx']:7.3f} ms  optax "
          f"{row['step_ms']['optax']:7.3f} ms  {run.fmt_ratio(row['step'], 3)}", flush=True)
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "eager.json").write_text(json.dumps(results, indent=1))
  write_markdown(results, args.out / "EAGER.md")
  print(f"wrote {args.out / 'EAGER.md'}")


if __name__ == "__main__":
  main()
