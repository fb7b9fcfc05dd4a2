"""Every ready optimizer that optax also has, gradtx against optax, on the same tree.

    python benchmarks/optimizers.py [--quick] [--cases b,c] [--reps N] [--compile-reps N]
                                    [--only adam,lion] [--append]

``run.py`` measures three optimizers in depth; this sweep checks the promise of
DESIGN.md's contract (7) for the rest: a ready optimizer's jitted step costs no
more than optax's on the same tree. For each optimizer built as
``name(learning_rate)`` in both libraries (optax's defaults otherwise), it
times the jitted, donating step (``update`` + ``apply_updates``) of both in
interleaved repetitions and reports the median of the paired ratios with
their quartiles, as ``run.py`` does (it uses ``run.py``'s machinery); with
``--compile-reps`` above 0, also the median compile (trace + lower + XLA, CPU
seconds). Trees: ``run.py``'s cases, GPT-2 small's tree (``b``, the default)
and many small leaves (``c``; ``--quick`` keeps 500 of its 2000 leaves, as
its optax compiles take minutes). It writes ``OPTIMIZERS.md`` and
``optimizers.json`` next to this file (or in ``--out``); with ``--append``, the
rows it measures replace those of the same optimizer and tree in the
``optimizers.json`` already there, and the report names both runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (run.py's trees, contenders and ratios)
from run import gtx  # noqa: E402

# Optimizers of both libraries built as name(learning_rate). Left out: those whose update
# needs more than the gradient (polyak_sgd, lbfgs and momo a loss value, sophia a loss
# function), and wrappers that take an optimizer (mechanize, sam, reduce_on_plateau).
NAMES = [
    "adabelief", "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamaxw", "adamw",
    "adan", "amsgrad", "fromage", "lamb", "lars", "lion", "nadam", "nadamw", "noisy_sgd",
    "novograd", "optimistic_adam", "optimistic_gradient_descent", "radam", "rmsprop",
    "rprop", "sgd", "sign_sgd", "signum", "sm3", "yogi",
    # optax.contrib
    "acprop", "ademamix", "adopt", "cocob", "dadapt_adamw", "dog", "dowg", "muon",
    "prodigy", "schedule_free_adamw", "schedule_free_sgd", "simplified_ademamix",
]


# Arguments besides the learning rate, the same in both libraries.
OPTIONS: dict[str, Callable[[], dict]] = {"noisy_sgd": lambda: {"key": jax.random.key(0)}}


# Why a row is over the target, where that is known (read from a run's compiled steps).
NOTES: dict[str, str] = {
    "adopt": "XLA copies its second moment every step (one kernel writes it in place while "
             "another reads it), as it does optax's; 1.05x in this run and the one before.",
    "cocob": "its weight-decay stage holds weight_decay=0 in the state, so each of its five "
             "kernels per leaf reads the params to add 0 x params, where optax's constant 0 "
             "folds away (both libraries also copy the params and the reward every step); "
             "the cost of a runtime hyperparameter, as sgd's compile time in RESULTS.md.",
}


# What runs of this sweep found, kept with the code that writes the report (--report-only
# rewrites it).
READING: list[str] = [
    "* Compile (a run with `--cases b --reps 3 --compile-reps 2`, 2026-12-06 10:43, not the "
    "run above): on GPT-2 small's tree 23 of the 40 compile in at most optax's time, 8 within "
    "1.05x and 9 over: lion 1.05x, schedule_free_adamw 1.08x, sm3 and adagrad 1.10x, acprop "
    "1.11x, simplified_ademamix 1.14x, cocob 1.15x, adamaxw 1.16x, muon 1.30x (the same run "
    "before the changes below: 19 over, up to 1.32x). The excess is XLA's compile, not tracing, "
    "and comes from runtime hyperparameters: XLA:CPU compiles a kernel more slowly for each "
    "runtime scalar it multiplies by, where optax's are constants. Running means are now "
    "formed as m + (1 - b)(g - m) (one scalar; the weighted sum (1 - b) g + b m read two): "
    "lion 1.27x -> 1.05x, rmsprop 1.21x -> 1.01x, adan 1.26x -> 0.96x, signum 1.18x -> 1.00x; "
    "AdaBelief folds its bias corrections and the rate into Adam's per-step scalars (1.21x -> "
    "1.04x, and its step 1.0x -> 0.64x); Adagrad selects once (1.13x -> 1.10x). acprop, "
    "cocob, schedule_free_adamw and muon default to weight_decay=0, which optax folds away and "
    "gradtx holds in the state (DESIGN's contract 4), read in every kernel. The same "
    "command again at 18:00, after `core.read_once` moved from a reduction to an "
    "optimization barrier: 23 at most optax's time, 7 within 1.05x, 10 over (muon 1.29x, "
    "sm3 and acprop 1.12x, sgd 1.10x, cocob and adagrad 1.09x, adamaxw 1.08x, "
    "simplified_ademamix 1.06x, signum and lion 1.05x): the same picture, within this "
    "3-repetition measurement's noise (plain sgd, which that change does not touch, "
    "read 1.10x here and at most 1.05x at 10:43).",
    "* Tried and left out: one buffer for every stage's held scalars (`core.read_once` over "
    "the whole state, in the update a user calls) took lion to 1.02x and rmsprop to 0.97x on "
    "GPT-2's tree, but its reduction kernel added 15% to Adam's compile on one leaf and 4-15% "
    "on 500 small leaves (lion, adamw, sgd with momentum), where kernels read a slice of a "
    "buffer more slowly than an argument. Folding Adamax's bias correction and rate into one "
    "scalar compiled no faster and its step read 1.05x (adamaxw 1.07x), so it was reverted; "
    "the adamax and adamaxw rows above are from the build without it, measured again later "
    "with `--append` (1.01x and 1.02x). Absolute times of rows from different runs are not "
    "comparable (the machine's speed drifts over a day); their ratios are.",
]


def build(lib: Any, name: str) -> Any:
  """``name(learning_rate)`` from the library's top level, else from its ``contrib``."""
  make = getattr(lib, name, None) or getattr(lib.contrib, name)
  return make(run.LEARNING_RATE, **OPTIONS.get(name, dict)())


def case_shapes(case: str, quick: bool) -> tuple[str, dict]:
  """run.py's case of that letter: its title and its tree."""
  title, make = next((name, make) for name, make in run.CASES.items()
                     if run.letter(name) == case)
  shapes = make(quick)
  if case == "c" and quick:
    shapes = dict(list(shapes.items())[:500])
  return title, shapes


def measure(name: str, shapes: Any, reps: int, compile_reps: int) -> dict:
  params = run.materialize(shapes, 0)
  grads = run.materialize(shapes, 1, 1e-2)
  contenders = []
  for label, lib, apply in (("gradtx", gtx, gtx.apply_updates),
                            ("optax", optax, optax.apply_updates)):
    tx = build(lib, name)
    # A contender steps its own copy of every leaf (a state may hold the params' arrays
    # themselves, as schedule-free's z does), so these stay whole for the next.
    contenders.append(run.Contender(label, run.optimizer_step(tx, apply),
                                    (params, tx.init(params)), (grads,), (0, 1)))
  run.race(contenders, reps)
  run.recompile(contenders, compile_reps)
  mine, theirs = contenders
  row = {"optimizer": name,
         "step_ms": {c.name: run.median_ms(c) for c in contenders},
         "step": run.paired_ratio(mine.times, theirs.times)}
  if compile_reps > 0:
    row["compile_s"] = {c.name: c.compile_s for c in contenders}
    row["compile"] = run.paired_ratio(run.measured_compiles(mine.compiles),
                                      run.measured_compiles(theirs.compiles))
  return row


def write_markdown(results: dict, path: Path) -> None:
  info = results["machine"]
  # (command, date) of each run whose rows the report holds, oldest first.
  runs = info.get("commands") or [[info["command"], info["date"]]]
  lines = ["# Every ready optimizer: gradtx vs optax", "",
           "Produced by " + " and then ".join(f"`{c}` on {d}" for c, d in runs) + f": {info['cpu']}, "
           f"{info['cores']} cores, {info['backend']} ({info['device_kind']}), jax "
           f"{info['jax']}, optax {info['optax']}.", "",
           "Each optimizer is built as `name(1e-3)` in both libraries. Step = jitted "
           "`update` + `apply_updates`, params and state donated; the two contenders of a "
           f"row are timed in {info['reps']} interleaved repetitions, and a ratio is the "
           "median over repetitions of gradtx's time over optax's (quartiles in brackets). "
           "Compile = trace + lower + XLA compile, CPU seconds, the median of fresh "
           "compiles after a warm-up. DESIGN.md's contract: a ready optimizer's step costs "
           "no more than optax's (the benchmark's target: within 1.05x).", ""]
  for case, rows in results["cases"].items():
    with_compile = any("compile" in r for r in rows)
    lines += [f"## {case} ({results['sizes'][case]})", "",
              "| optimizer | gradtx ms | optax ms | step ratio |"
              + (" gradtx compile s | optax compile s | compile ratio |" if with_compile
                 else ""),
              "|---|---:|---:|---:|" + ("---:|---:|---:|" if with_compile else "")]
    for r in rows:
      line = (f"| {r['optimizer']} | {r['step_ms']['gradtx']:.2f} | "
              f"{r['step_ms']['optax']:.2f} | {run.fmt_ratio(r['step'], 3)} |")
      if with_compile:
        line += (f" {r['compile_s']['gradtx']:.2f} | {r['compile_s']['optax']:.2f} | "
                 f"{run.fmt_ratio(r['compile'])} |")
      lines.append(line)
    over = [r["optimizer"] for r in rows if r["step"]["median"] > 1.05]
    lines += ["", f"Step over 1.05x optax's: {', '.join(over) if over else 'none'}.", ""]
    lines += [f"* {name}: {NOTES[name]}" for name in over if name in NOTES]
    lines += [""] if any(name in NOTES for name in over) else []
  lines += ["## Reading these numbers", "", *READING, ""]
  path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="run.py's smaller GPT-2 tree; 500 leaves of case c")
  parser.add_argument("--cases", default="b", help="run.py's cases by letter, e.g. b,c")
  parser.add_argument("--reps", type=int, default=11, help="interleaved repetitions per row")
  parser.add_argument("--compile-reps", type=int, default=0,
                      help="compiles per contender after the warm-up (0: none reported)")
  parser.add_argument("--only", default=None, help="these optimizers, comma-separated")
  parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
  parser.add_argument("--report-only", action="store_true",
                      help="rewrite OPTIMIZERS.md from optimizers.json, measuring nothing")
  parser.add_argument("--append", action="store_true",
                      help="replace these rows in the optimizers.json already in --out")
  args = parser.parse_args(argv)
  if args.report_only:
    results = json.loads((args.out / "optimizers.json").read_text())
    write_markdown(results, args.out / "OPTIMIZERS.md")
    return
  names = args.only.split(",") if args.only else NAMES
  unknown = [n for n in names if n not in NAMES]
  if unknown:
    parser.error(f"--only: not in the sweep: {', '.join(unknown)}")
  cases = args.cases.split(",")
  if not set(cases) <= {run.letter(c) for c in run.CASES}:
    parser.error(f"--cases: give some of {', '.join(run.letter(c) for c in run.CASES)}")
  info = run.machine_info(args.quick, args.reps, use_torch=False)
  info["command"] = run.command_line("optimizers.py", argv)
  start = time.perf_counter()
  results: dict[str, Any] = {"machine": info, "cases": {}, "sizes": {}}
  info["commands"] = [[info["command"], info["date"]]]
  if args.append and (args.out / "optimizers.json").exists():
    results = run.earlier_run(args.out / "optimizers.json", info,
                              ("cpu", "backend", "device_kind", "quick", "reps", "jax", "optax"))
    results["machine"] = {**results["machine"], "commands": info["commands"]}
  for case in cases:
    title, shapes = case_shapes(case, args.quick)
    results["sizes"][title] = (f"{len(jax.tree.leaves(shapes))} leaves, "
                               f"{run.n_params(shapes) / 1e6:.2f} M params")
    rows = results["cases"].setdefault(title, [])
    for name in names:
      row = measure(name, shapes, args.reps, args.compile_reps)
      rows[:] = [r for r in rows if r["optimizer"] != name] + [row]
      rows.sort(key=lambda r: NAMES.index(r["optimizer"]))
      print(f"  {case} {name:28s} gradtx {row['step_ms']['gradtx']:8.2f} ms  optax "
            f"{row['step_ms']['optax']:8.2f} ms  {run.fmt_ratio(row['step'], 3)}", flush=True)
  results["wall_s"] = time.perf_counter() - start
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "optimizers.json").write_text(json.dumps(results, indent=1))
  write_markdown(results, args.out / "OPTIMIZERS.md")
  print(f"wrote {args.out / 'OPTIMIZERS.md'} in {results['wall_s']:.0f} s")


if __name__ == "__main__":
  main()
