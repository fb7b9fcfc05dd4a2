#!/usr/bin/env python3
"""One entry point for the two things a newcomer runs: the demo and the tests.

    python3 dev.py demo     # train the classic example with each classic optimizer
    python3 dev.py test     # the whole test suite (CI runs exactly this)

Each command creates (or reuses) a virtual environment in ``.venv`` and installs
what it needs there first; nothing but Python 3.11+ is required.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
# torch's CPU build, for the torch.optim comparison tests; optional.
TORCH = "torch==2.13.0"
# pyproject's requires-python: jax>=0.8 itself needs 3.11, so an older Python
# would get only pip's "no matching distribution found for jax" from ensure_env.
MIN_PYTHON = (3, 11)


def _run(*args: str | os.PathLike, check: bool = True) -> int:
  return subprocess.run([str(a) for a in args], cwd=ROOT, check=check).returncode


def ensure_env(extras: str) -> None:
  """Creates .venv and installs gradtx with ``extras`` ("" for none) unless already done."""
  if not PYTHON.exists():
    print(f"creating virtual environment in {VENV}", flush=True)
    venv.create(VENV, with_pip=True)
  stamp = VENV / f".installed-{extras or 'base'}"
  digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
  if stamp.exists() and stamp.read_text() == digest:
    return
  target = f".[{extras}]" if extras else "."
  print(f"installing gradtx{target[1:]} into {VENV}", flush=True)
  _run(PYTHON, "-m", "pip", "install", "-q", "--upgrade", "pip")
  _run(PYTHON, "-m", "pip", "install", "-q", "-e", target)
  if extras == "test":
    # The torch.optim parity tests skip themselves when torch is missing.
    if _run(PYTHON, "-m", "pip", "install", "-q", TORCH, check=False) != 0:
      print("torch is not available here; the torch.optim parity tests will be skipped")
  stamp.write_text(digest)


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:2])) -> None:
  """Exits with what to do when ``version`` is older than gradtx (and jax) support."""
  if version[:2] < MIN_PYTHON:
    need = ".".join(map(str, MIN_PYTHON))
    raise SystemExit(f"gradtx needs Python {need} or newer (its jax>=0.8 does); this is "
                     f"Python {'.'.join(map(str, version[:2]))}: run dev.py with python{need} "
                     "or newer")


def main(argv: list[str]) -> int:
  command = argv[0] if argv else "help"
  if command in ("demo", "test"):
    check_python()
  if command == "demo":
    ensure_env("")  # the demo needs only gradtx and jax
    return _run(PYTHON, ROOT / "examples" / "demo.py", *argv[1:], check=False)
  if command == "test":
    ensure_env("test")
    return _run(PYTHON, "-m", "pytest", "-q", "-n", "2", *argv[1:], check=False)
  print(__doc__)
  return 0 if command == "help" else 2


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
