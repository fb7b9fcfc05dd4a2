"""Coming from optax: every public name of optax has a gradtx counterpart.

``tests/optax_names.txt`` lists every public name of optax (top level and
submodules, as ``module.name``) at the version in its first line. Each must
exist in gradtx under the same dotted name, or have a row in the first table
of ``docs/optax.md`` ("What to write instead") saying what to use. The file
is a snapshot so that a new optax release cannot fail CI; when the installed
optax is the snapshot's version, the snapshot must equal what optax exports.
Regenerate it with ``python tests/test_migration.py``.
"""

from __future__ import annotations

import fnmatch
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import gradtx as gtx

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests" / "optax_names.txt"
PAGE = ROOT / "docs" / "optax.md"


def optax_public_names() -> tuple[str, list[str]]:
  """(optax's version, its public names as ``name`` or ``module.name``)."""
  import optax

  def public(module: types.ModuleType) -> list[str]:
    # __all__ and every other name without an underscore: optax's top level
    # exports 26 names outside its __all__ (optax.scale_by_learning_rate,
    # optax.tree_map_params), optax.transforms 6 (unitwise_norm).
    names = set(getattr(module, "__all__", None) or ()) | {
        n for n in dir(module) if not n.startswith("_")}
    return [n for n in names if not isinstance(getattr(module, n), types.ModuleType)]

  with warnings.catch_warnings():  # optax's deprecated aliases warn when read
    warnings.simplefilter("ignore")
    names = set(public(optax))
    for sub in dir(optax):
      if not sub.startswith("_") and isinstance(getattr(optax, sub), types.ModuleType):
        names.update(f"{sub}.{n}" for n in public(getattr(optax, sub)))
  return optax.__version__, sorted(names)


def _snapshot() -> tuple[str, list[str]]:
  version, *names = SNAPSHOT.read_text().split()
  return version, names


def _in_gradtx(dotted: str) -> bool:
  obj = gtx
  for part in dotted.split("."):
    if not hasattr(obj, part):
      return False
    obj = getattr(obj, part)
  # The snapshot holds no modules: a module of gradtx's under an optax function's
  # name (gtx.transforms.monitor was one) would break code written for optax.
  return not isinstance(obj, types.ModuleType)


def _table(title: str) -> list[tuple[str, str]]:
  """The rows of the table under the ``## title`` heading: (optax names cell, gradtx cell)."""
  text = PAGE.read_text()
  section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
  rows = []
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if line.startswith("|") and len(cells) >= 2 and not set(cells[0]) <= set("-: "):
      rows.append((cells[0], cells[1]))
  return rows[1:]  # the header row


def _patterns(cell: str) -> list[str]:
  """``optax.X`` names in a cell (``*`` allowed), without the ``optax.`` prefix."""
  return re.findall(r"`optax\.([A-Za-z0-9_.*]+)`", cell)


def test_snapshot_is_optax_when_the_versions_match():
  version, names = _snapshot()
  installed, live = optax_public_names()
  if installed != version:
    pytest.skip(f"optax {installed} installed; the snapshot is of {version}")
  assert names == live, "regenerate: python tests/test_migration.py"


def test_every_optax_name_is_in_gradtx_or_on_the_page():
  covered = [p for cell, _ in _table("What to write instead") for p in _patterns(cell)]
  _, names = _snapshot()
  missing = [n for n in names if not _in_gradtx(n)
             and not any(fnmatch.fnmatchcase(n, p) for p in covered)]
  assert not missing, (
      f"{len(missing)} optax names are neither in gradtx nor in docs/optax.md: {missing}")


def test_the_page_names_only_what_gradtx_lacks():
  # A row for a name gradtx now has under the same name is stale: the name
  # belongs in the second table if it behaves differently, nowhere otherwise.
  _, names = _snapshot()
  for cell, instead in _table("What to write instead"):
    patterns = _patterns(cell)
    assert patterns, f"a row names no optax name: {cell!r}"
    assert instead, f"{cell}: says nothing about what to write instead"
    for p in patterns:
      matched = [n for n in names if fnmatch.fnmatchcase(n, p)]
      assert matched, f"{p}: not a name optax exports"
      if "*" not in p:
        assert not _in_gradtx(p), f"{p}: gradtx has it now; drop the row"


def test_the_differences_table_names_what_gradtx_has():
  rows = _table("Same name, different on purpose")
  assert rows
  _, names = _snapshot()
  for cell, _ in rows:
    for p in _patterns(cell):
      assert any(_in_gradtx(n) for n in names if fnmatch.fnmatchcase(n, p)), (
          f"{p}: listed as different, but gradtx has no such name")


def _shared_functions() -> list[tuple[str, object, object]]:
  """(name, optax's, gradtx's) for each function both export under one dotted name."""
  import optax

  def resolve(module: object, dotted: str) -> object:
    for part in dotted.split("."):
      module = getattr(module, part, None)
    return module

  _, names = _snapshot()
  shared = []
  with warnings.catch_warnings():  # optax's deprecated aliases warn when read
    warnings.simplefilter("ignore")
    for name in names:
      theirs, ours = resolve(optax, name), resolve(gtx, name)
      if callable(theirs) and callable(ours) and not isinstance(theirs, type):
        shared.append((name, theirs, ours))
  return shared


def _signed(shared: list[tuple[str, object, object]]) -> list[tuple[str, object, object]]:
  """The pairs of ``shared`` whose two functions both have a signature (not builtins)."""
  import inspect
  signed = []
  for name, theirs, ours in shared:
    try:
      inspect.signature(theirs), inspect.signature(ours)
    except (TypeError, ValueError):
      continue
    signed.append((name, theirs, ours))
  return signed


def test_the_page_counts_what_the_tests_check():
  # The page said 437 names and 324 functions while the snapshot held 469 and the
  # tests checked 347: the counts it quotes are the snapshot's and the tests'.
  optax = pytest.importorskip("optax")
  version, names = _snapshot()
  if optax.__version__ != version:  # another optax exports other functions
    pytest.skip(f"optax {optax.__version__} installed; the page counts {version}'s")
  text = " ".join(PAGE.read_text().split())
  quoted = re.search(r"(\d+) names in optax ([\d.]+)\)", text)
  assert quoted and quoted.groups() == (str(len(names)), version), (
      f"docs/optax.md: the snapshot holds {len(names)} names of optax {version}")
  functions = re.search(r"checks the (\d+) functions both libraries have", text)
  count = len(_signed(_shared_functions()))
  assert functions and functions.group(1) == str(count), (
      f"docs/optax.md: the tests check {count} functions both libraries have")


def test_the_adam_row_quotes_the_first_steps():
  # The page said optax's first Adam step is 0.9999936 lr; optax 0.2.8 gives 0.999993 lr
  # (its 1 - b2 and its bias correction round apart in float32). gradtx's is the paper's.
  import jax
  import jax.numpy as jnp
  optax = pytest.importorskip("optax")
  if optax.__version__ != _snapshot()[0]:
    pytest.skip(f"the page quotes optax {_snapshot()[0]}'s step")
  rows = dict(_table("Same name, different on purpose"))
  row = rows["`optax.adam`, `optax.scale_by_adam`"]
  quoted = float(re.search(r"optax's is `([0-9.]+)·lr` in float32", row).group(1))
  params = jnp.zeros(3, jnp.float32)
  grads = jnp.array([1.0, -0.1, 3.0], jnp.float32)
  with jax.numpy_dtype_promotion("standard"):  # optax is not strict-clean
    theirs = optax.adam(1.0).update(grads, optax.adam(1.0).init(params), params)[0]
  # Six digits: optax's factor is 0.99999332 to 0.99999338 across these gradients, so a
  # seventh digit would hang on the last bit of its float32 rounding.
  np.testing.assert_array_equal(np.round(np.abs(np.asarray(theirs, np.float64)), 6), quoted)
  ours = gtx.adam(1.0).update(grads, gtx.adam(1.0).init(params), params)[0]
  g = np.asarray(grads, np.float64)
  np.testing.assert_allclose(ours, -g / (np.abs(g) + 1e-8), rtol=1.2e-7)  # 2 ulps: the paper's


def test_optax_inject_hyperparams_around_a_gradtx_optimizer_is_refused_at_init():
  # A gradtx stage steps by the value its state holds (set at init), not by the one
  # optax.inject_hyperparams rebuilds it with at every step: a scheduled learning rate
  # stayed at its step-0 value (0.1 here, where the schedule gave 0.3 by step 3) with
  # no word. The wrapper is refused, the first time it builds the stage.
  import jax.numpy as jnp
  optax = pytest.importorskip("optax")
  schedule = lambda count: 0.1 * (count + 1).astype(jnp.float32)  # noqa: E731
  tx = optax.inject_hyperparams(gtx.sgd)(learning_rate=schedule)
  with pytest.raises(gtx.HyperparameterError, match=(
      r"^scale_by_learning_rate: built inside optax.inject_hyperparams, whose values would "
      r"never be used: .* Build the optimizer directly \(gtx.adam\(schedule\) for a "
      r"schedule\) and read or set its values by name with gtx.hparams and gtx.set_hparams")):
    tx.init(jnp.ones(2))
  # Built outside it, as the page says, the schedule reaches the step.
  tx = gtx.sgd(schedule)
  state = tx.init(jnp.ones(2))
  for _ in range(3):
    updates, state = tx.update(jnp.ones(2), state)
  np.testing.assert_allclose(updates, [-0.3, -0.3], rtol=1e-6)
  assert "Do not wrap a gradtx optimizer in `optax.inject_hyperparams`" in PAGE.read_text()


def test_shared_functions_take_optax_arguments():
  # Code written for optax runs unchanged: each argument optax names, gradtx
  # names too (a **kwargs of gradtx's does not count: stateless's would take
  # optax's f= as a hyperparameter), positional ones at the same position, and
  # one optax lets the caller leave out gradtx does not require. (Run against
  # the installed optax, whatever its version, for the names of the snapshot.)
  import inspect
  pytest.importorskip("optax")
  checked, wrong = 0, []
  for name, theirs, ours in _signed(_shared_functions()):  # builtins have no signature
    optax_params = inspect.signature(theirs).parameters.values()
    ours_params = inspect.signature(ours).parameters
    checked += 1
    positional = [p.name for p in ours_params.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # monitor(*statistics) also takes optax's one positional dict of measures.
    takes_rest = any(p.kind == p.VAR_POSITIONAL for p in ours_params.values())
    for i, p in enumerate(q for q in optax_params if q.kind not in (q.VAR_POSITIONAL,
                                                                    q.VAR_KEYWORD)):
      mine = ours_params.get(p.name)
      if mine is None:
        wrong.append(f"{name}: no argument {p.name!r}")
      elif (p.kind == p.POSITIONAL_OR_KEYWORD and not (i >= len(positional) and takes_rest)
            and (i >= len(positional) or positional[i] != p.name)):
        wrong.append(f"{name}: {p.name!r} is not positional argument {i}")
      elif p.default is not p.empty and mine.default is mine.empty:
        wrong.append(f"{name}: {p.name!r} has a default in optax, none here")
  assert checked > 250, checked
  assert not wrong, "\n".join(wrong)


# Defaults gradtx changes on purpose, each in the second table of docs/optax.md.
_OTHER_DEFAULTS = {"adadelta": {"learning_rate"}}


def test_shared_functions_keep_optax_defaults():
  # Each default optax gives as a value (a number, bool, string, None or a tuple of them;
  # not a function or a transformation) is gradtx's too, so that leaving an argument out
  # means the same in both.
  import inspect
  pytest.importorskip("optax")

  def plain(value: object) -> bool:  # optax's transformations are NamedTuples: not plain
    return (isinstance(value, (int, float, str, type(None))) or type(value) is tuple
            and all(plain(v) for v in value))

  checked, wrong = 0, []
  for name, theirs, ours in _signed(_shared_functions()):
    optax_params = inspect.signature(theirs).parameters.values()
    ours_params = inspect.signature(ours).parameters
    for p in optax_params:
      if p.default is p.empty or not plain(p.default) or p.name not in ours_params:
        continue
      checked += 1
      mine = ours_params[p.name].default
      if p.name in _OTHER_DEFAULTS.get(name.split(".")[-1], ()):
        assert mine != p.default, f"{name}: {p.name} is optax's again; drop it from the list"
      elif mine != p.default or type(mine) is bool and type(p.default) is not bool:
        wrong.append(f"{name}: {p.name}={mine!r}, optax's is {p.default!r}")
  assert checked > 500, checked
  assert not wrong, "\n".join(wrong)
  differences = " ".join(cell for cell, _ in _table("Same name, different on purpose"))
  for name in _OTHER_DEFAULTS:
    assert f"`optax.{name}`" in differences, f"{name}: its other default is not on the page"


def test_the_page_code_runs_as_written():
  import jax
  import jax.numpy as jnp
  import numpy as np
  params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
  grads = jax.tree.map(lambda p: p + 1.0, params)
  namespace = {"params": params, "grads": grads, "logits": jnp.array([[2.0, 0.0], [0.0, 1.0]]),
               "labels": jnp.array([0, 1])}
  blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
  assert len(blocks) == 2
  exec(compile(blocks[0], "docs/optax.md, block 1", "exec"), namespace)
  # AdamW's first step, at the warmup's first rate, 0: the parameters are unchanged.
  lrs = {k: v for k, v in gtx.hparams(namespace["state"]).items() if k.endswith("learning_rate")}
  assert list(lrs.values()) == [0.0]
  np.testing.assert_array_equal(namespace["params"]["w"], params["w"])
  expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))])
  np.testing.assert_allclose(namespace["loss"], expected, rtol=1e-6)
  exec(compile(blocks[1], "docs/optax.md, block 2", "exec"), namespace)
  np.testing.assert_allclose(gtx.hparams(namespace["state"])["lr.learning_rate"], 1e-4)


if __name__ == "__main__":
  version, names = optax_public_names()
  SNAPSHOT.write_text("\n".join([version, *names]) + "\n")
  print(f"{len(names)} names of optax {version} written to {SNAPSHOT}", file=sys.stderr)
