"""gradtx's annotations as a user's type checker reads them.

The package ships its ``py.typed`` marker (PEP 561), so mypy and pyright (the
checker inside VS Code) read gradtx's annotations instead of treating every
name as ``Any``. The training script below, written as the README and the docs
teach, must then pass both: ``mypy --strict`` (which also checks that every
name it uses is exported, the form of ``__all__`` included) and pyright.

Failures these tests caught: ``gtx.adam`` was invisible to mypy (the
optimizers' ``__all__`` was built at run time); passing a
``gtx.schedules`` schedule as a learning rate was an error in pyright (two
``Schedule`` types, one returning ``jax.Array``); a schedule or an array
for ``b1`` was an error in both (the ready optimizers annotated their
hyperparameters ``float``); and pyright rejected a gradtx optimizer where
optax's type is asked for (``flax.nnx.Optimizer``, ``optax.chain``) and a
stage built from an ``update`` without ``**extra``, as optax's docs write one.
gradtx itself is checked by mypy too: it once read ``gtx.transforms.chain`` as the
module ``gradtx.chain``, and ``scale_by_muon`` typed ``ns_coeffs`` a tuple where
a preset's name is taken too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gradtx as gtx

ROOT = Path(__file__).resolve().parent.parent

USER_CODE = textwrap.dedent('''
    """A training script written against gradtx, with annotations."""
    import jax
    import jax.numpy as jnp
    import optax  # type: ignore[import-untyped]  # optax ships no py.typed
    from flax import nnx

    import gradtx as gtx

    Params = dict[str, jax.Array]


    def loss(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
      return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


    params: Params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    x, y = jnp.ones((8, 3)), jnp.ones((8, 2))

    # Ready optimizers; a hyperparameter is a number, an array or a schedule.
    schedule = gtx.schedules.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)
    opt = gtx.adamw(learning_rate=schedule, b1=jnp.asarray(0.9), weight_decay=1e-4)
    sgd = gtx.sgd(gtx.linear_schedule(0.1, 0.0, 100), momentum=lambda count: 0.9)
    mine = gtx.adam(lambda count: 1e-3 * 0.99 ** count, b2=gtx.schedules.constant_schedule(0.99))
    optimistic = gtx.optimistic_adam(jnp.asarray(1e-2))  # no schedule here, an array (as optax)

    # A named chain, composed by hand; its state is addressed by stage name.
    tx = gtx.chain(
        clip=gtx.clip_by_global_norm(1.0),
        adam=gtx.scale_by_adam(b1=0.9, b2=0.999),
        decay=gtx.add_decayed_weights(1e-4, mask=lambda p: jax.tree.map(lambda a: a.ndim > 1, p)),
        lr=gtx.scale_by_learning_rate(schedule),
    )
    state = tx.init(params)
    mu = state["adam"].mu
    values = gtx.hparams(state)
    rate: float = float(values["lr.learning_rate"])
    state = gtx.set_hparams(state, {"clip.max_norm": 0.5})
    print(tx, mu, rate)

    # Wrappers and state carried into an edited chain.
    guarded = gtx.apply_if_finite(gtx.adam(1e-3), max_consecutive_errors=3)
    accumulated = gtx.MultiSteps(gtx.adam(1e-3), every_k_schedule=4)
    split = gtx.partition({"fast": gtx.adam(1e-2), "frozen": gtx.set_to_zero()},
                          {"w": "fast", "b": "frozen"})
    carried, report = gtx.carry_state(opt.init(params), gtx.adamw(1e-3).init(params))
    init_fn, update_fn = gtx.sgd(0.1)  # unpacks like optax's NamedTuple


    @jax.jit
    def step(params: Params, state: gtx.OptState, x: jax.Array,
             y: jax.Array) -> tuple[Params, gtx.OptState, jax.Array]:
      value, grads = jax.value_and_grad(loss)(params, x, y)
      updates, state = opt.update(grads, state, params)
      return gtx.apply_updates(params, updates), state, value


    opt_state = opt.init(params)
    for _ in range(3):
      params, opt_state, value = step(params, opt_state, x, y)

    # Where optax's type is asked for: flax's optimizer, an optax chain, a gradtx stage
    # written as in optax (an update without **extra).
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    nnx_opt = nnx.Optimizer(model, gtx.adamw(1e-3), wrt=nnx.Param)
    optax_chain = optax.chain(optax.clip(1.0), gtx.adam(1e-3))
    gtx_chain = gtx.chain(clip=optax.clip(1.0), adam=gtx.adam(1e-3))


    def plain_update(updates: gtx.Updates, state: gtx.OptState,
                     params: gtx.Params | None = None) -> tuple[gtx.Updates, gtx.OptState]:
      return jax.tree.map(lambda u: -u, updates), state


    flip = gtx.GradientTransformation(gtx.init_empty_state, plain_update, name="flip")
    migrated = gtx.transforms.masked(gtx.adam(1e-3), {"w": True, "b": False})  # optax.transforms
    flipped, _ = flip.update(params, flip.init(params))

    # Packed mode, losses and tree utilities.
    layout = gtx.packed.Layout.from_tree(params)
    flat = layout.pack(params)
    packed_opt = gtx.adam(1e-3)
    packed_state = packed_opt.init(flat)
    ce = gtx.losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((4, 3)),
                                                              jnp.zeros(4, jnp.int32))
    norm = gtx.tree_utils.tree_norm(params)
    zero = gtx.contrib.muon(1e-3)
''')


def test_the_package_ships_its_type_marker():
  assert (Path(gtx.__file__).parent / "py.typed").is_file()
  tomllib = pytest.importorskip("tomllib")  # Python 3.11+
  config = tomllib.loads((ROOT / "pyproject.toml").read_text())
  assert "py.typed" in config["tool"]["setuptools"]["package-data"]["gradtx"]


def test_gtx_transforms_gives_type_checkers_the_names_it_resolves():
  # gtx.transforms resolves optax.transforms' names lazily (a module __getattr__, which
  # checkers do not run); a TYPE_CHECKING import gives them the same names.
  import ast  # pylint: disable=import-outside-toplevel
  from gradtx import transforms  # pylint: disable=import-outside-toplevel
  source = ast.parse(Path(transforms.__file__).read_text())
  typed = {alias.asname for node in ast.walk(source) if isinstance(node, ast.If)
           and ast.unparse(node.test) == "TYPE_CHECKING" for stmt in node.body
           if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}
  assert typed == transforms._OPTAX_NAMES  # pylint: disable=protected-access


def test_the_user_code_runs(tmp_path):
  # What the checkers are given is a working script, not only a well-typed one.
  script = tmp_path / "train.py"
  script.write_text(USER_CODE)
  subprocess.run([sys.executable, str(script)], check=True, cwd=ROOT, capture_output=True)


def _mypy(*args: str) -> tuple[int, str]:
  """``python -m mypy *args`` (this interpreter's mypy): its exit status and report.

  Run from the repository root, where mypy finds gradtx (an editable install's import
  hook is invisible to it) and reads pyproject.toml's settings. Each run starts with no
  cache and writes none (``--cache-dir`` set to the null device, as mypy's docs say):
  nothing would read it, and writing the ~40 MB of it cost ~1 s of each run's ~10 s.
  """
  result = subprocess.run(
      [sys.executable, "-m", "mypy", *args, "--cache-dir", os.devnull,
       "--python-executable", sys.executable],
      capture_output=True, text=True, cwd=ROOT, check=False)
  return result.returncode, result.stdout + result.stderr


def test_user_code_passes_mypy_strict(tmp_path):
  script = tmp_path / "train.py"
  script.write_text(USER_CODE)
  # follow-imports=silent reports, as for an installed package, only the errors in the
  # user's file.
  status, report = _mypy(str(script), "--strict", "--follow-imports=silent",
                         "--no-incremental")
  assert status == 0, report


def test_gradtx_passes_mypy():
  # gradtx's own annotations are what users' checkers read: an annotation that lies (an
  # argument typed narrower than what the code takes, a wrong return type) shows here.
  status, report = _mypy("gradtx")
  assert status == 0, report


def test_user_code_passes_pyright(tmp_path):
  script = tmp_path / "train.py"
  script.write_text(USER_CODE)
  (tmp_path / "pyrightconfig.json").write_text(json.dumps({
      "typeCheckingMode": "standard", "extraPaths": [str(ROOT)],
      "pythonVersion": f"{sys.version_info.major}.{sys.version_info.minor}"}))
  result = subprocess.run(
      [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable,
       "-p", str(tmp_path / "pyrightconfig.json"), str(script)],
      capture_output=True, text=True, cwd=tmp_path, check=False)
  report = json.loads(result.stdout)
  errors = [f"{d['range']['start']['line'] + 1}: {d['message']}"
            for d in report["generalDiagnostics"] if d["severity"] == "error"]
  assert not errors and report["summary"]["filesAnalyzed"] == 1, "\n".join(errors)
