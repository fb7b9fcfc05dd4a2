"""The worked example, examples/transformer_lm.py, run briefly as a user would run it.

A tiny configuration trains for 30 steps. A run stopped after step 25 (as if
killed: its last checkpoint is step 20, its log already has steps 21-25) and
then resumed must log the same loss curve as an uninterrupted run.
"""

from __future__ import annotations

import csv
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "transformer_lm.py"
TINY = ["--steps", "30", "--warmup-steps", "5", "--checkpoint-every", "10", "--d-model", "32",
        "--heads", "2", "--layers", "1", "--seq-len", "32", "--batch-size", "8",
        "--sample-length", "0"]


def _start(checkpoint_dir: pathlib.Path, *extra: str) -> subprocess.Popen:
  # One persistent compilation cache for the three runs: the first compiles,
  # the others load the same executables (which also keeps the arithmetic identical).
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(checkpoint_dir.parent / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return subprocess.Popen([sys.executable, str(SCRIPT), *TINY, "--checkpoint-dir",
                           str(checkpoint_dir), *extra], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _finish(proc: subprocess.Popen) -> str:
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, f"transformer_lm.py failed:\n{out}\n{err[-4000:]}"
  return out


def _log(checkpoint_dir: pathlib.Path) -> tuple[list[int], np.ndarray, np.ndarray]:
  with open(checkpoint_dir / "loss.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  return ([int(r["step"]) for r in rows], np.array([float(r["loss"]) for r in rows]),
          np.array([float(r["learning_rate"]) for r in rows]))


def test_stopped_and_resumed_run_repeats_the_uninterrupted_loss_curve(tmp_path):
  whole, parts = tmp_path / "uninterrupted", tmp_path / "stopped"
  out_whole = _finish(_start(whole))
  _finish(_start(parts, "--stop-at", "25"))

  steps, losses, rates = _log(whole)
  assert steps == list(range(1, 31))
  assert losses[-5:].mean() < losses[:5].mean() - 0.3, f"the model did not learn: {losses}"
  # The warmup-cosine schedule, read back by name from the optimizer state.
  np.testing.assert_allclose(rates[:6], [0.0, 6e-4, 1.2e-3, 1.8e-3, 2.4e-3, 3e-3], rtol=1e-6)
  assert "adamw.lr" not in out_whole and "warmup_cosine_decay_schedule(" in out_whole
  png = (whole / "loss.png").read_bytes()
  assert png.startswith(b"\x89PNG") and len(png) > 10_000
  assert sorted(os.listdir(whole / "orbax")) == ["20", "30"]

  stopped_steps, stopped_losses, _ = _log(parts)
  assert stopped_steps == list(range(1, 26))
  assert sorted(os.listdir(parts / "orbax")) == ["10", "20"]
  np.testing.assert_array_equal(stopped_losses, losses[:25])

  out_resumed = _finish(_start(parts))  # --resume is the default
  assert "resumed from the checkpoint of step 20" in out_resumed
  resumed_steps, resumed_losses, resumed_rates = _log(parts)
  assert resumed_steps == steps
  np.testing.assert_array_equal(resumed_losses, losses)
  np.testing.assert_array_equal(resumed_rates, rates)
