"""Multi-device training on JAX's own sharding, on 8 simulated CPU devices.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect if it
is set before JAX starts its CPU backend, which the test session has already
done; so the checks live in ``tests/sharding_worker.py`` and run there, all in
one subprocess (one JAX start-up), and each is reported here as its own test:

* data parallel: params and state replicated, the batch sharded; the compiled
  step averages gradients with an all-reduce; results equal a single-device run;
* fully sharded: every param leaf sharded over the mesh; a jitted ``tx.init``
  gives the moments the params' sharding without being told; the compiled
  update (adam, adamw with a schedule, clip_by_global_norm + adamw) has no
  all-gather; results equal a single-device run;
* orbax: a sharded chain state (schedule count included) saved, restored into
  an abstract target from ``jax.eval_shape(tx.init, params)`` with its
  sharding, and training resumed bit for bit;
* the code of docs/distributed.md, run as written on the 8 devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(__file__), "sharding_worker.py")
CHECKS = [
    "data_parallel_matches_single_device",
    "fully_sharded_state_takes_the_params_sharding",
    "fully_sharded_update_gathers_nothing",
    "wrappers_and_factored_states_keep_the_params_sharding",
    "fully_sharded_matches_single_device",
    "orbax_sharded_state_resumes_bit_for_bit",
    "hyperparameters_set_between_steps_do_not_recompile",
    "docs_distributed_page_runs",
]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, str]:
  tmp = tmp_path_factory.mktemp("sharding")
  out = tmp / "results.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, WORKER, str(out), str(tmp), *CHECKS],
                        capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0 and out.exists(), (
      f"the sharding worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
  with open(out) as f:
    return json.load(f)


@pytest.mark.parametrize("name", CHECKS)
def test_sharded_training(results, name):
  assert name in results, f"the worker did not run {name}; it ran {sorted(results)}"
  assert results[name] == "ok", f"{name} failed in the 8-device worker:\n{results[name]}"
