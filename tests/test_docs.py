"""The documentation site builds without a warning and documents every public name.

The API pages are generated at build time by ``docs/gen_api.py`` (an mkdocs
hook) from the docstrings; these tests check the contract that hook keeps:
one page per name in ``gradtx.__all__`` and ``gradtx.schedules.__all__``,
each with text from its docstring, and a page per tutorial notebook.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import griffe
import pytest

import gradtx as gtx

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
  """A script of docs/ as a module (docs/ is not a package)."""
  spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "docs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up here
  spec.loader.exec_module(module)
  return module


GEN_API = _load("gen_api")
PAGES = GEN_API.api_pages()


def test_every_public_name_has_a_page_entry():
  named = {page.name for page in PAGES}
  expected = set(gtx.__all__) | {f"schedules.{n}" for n in gtx.schedules.__all__}
  assert named == expected


@pytest.fixture(scope="module")
def griffe_gradtx():
  rst = griffe.load_extensions(str(ROOT / "docs" / "griffe_rst.py") + ":RstToMarkdown")
  return griffe.load("gradtx", search_paths=[str(ROOT)], extensions=rst)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_public_name_has_a_docstring(page, griffe_gradtx):
  # What the docs render: griffe's view of the canonical object, which also
  # sees the docstrings of constants and type aliases (a string literal under
  # the assignment).
  obj = griffe_gradtx[page.identifier.removeprefix("gradtx.")] if page.identifier != "gradtx" \
      else griffe_gradtx
  assert obj.docstring is not None and obj.docstring.value.strip(), (
      f"gtx.{page.name} ({page.identifier}) has no docstring")


def test_rst_math_and_roles_become_markdown():
  rst_to_markdown = _load("griffe_rst").rst_to_markdown
  text = ("Adds decay: :math:`\\lambda` as in :func:`~gradtx.core.apply_updates`.\n\n"
          "  .. math::\n    u = g + \\lambda \\theta\n\n  Args:\n    x: y.\n\n"
          "  .. math:: a = b\n\nExample:\n  >>> 1\n")
  assert rst_to_markdown(text) == (
      "Adds decay: $\\lambda$ as in `apply_updates`.\n\n"
      "  $$\n  u = g + \\lambda \\theta\n  $$\n\n  Args:\n    x: y.\n\n"
      "  $$\n  a = b\n  $$\n\nExamples:\n  >>> 1\n")


def test_rst_code_blocks_become_fenced_code():
  # lbfgs's ``.. code-block:: python`` and sophia's "as in optax::" rendered as paragraphs
  # of prose: the directive's text shown, the code's lines run together.
  rst_to_markdown = _load("griffe_rst").rst_to_markdown
  text = ("Each step needs the loss:\n\n.. code-block:: python\n\n  v, g = f(p)\n"
          "  u, s = tx.update(g, s, p)\n\nArgs:\n  x: y.\n")
  assert rst_to_markdown(text) == (
      "Each step needs the loss:\n\n```python\nv, g = f(p)\nu, s = tx.update(g, s, p)\n```"
      "\n\nArgs:\n  x: y.\n")
  text = "Pass the objective, as in optax::\n\n  u, s = tx.update(g, s, p, obj_fn=f)\n\nArgs:\n"
  assert rst_to_markdown(text) == (
      "Pass the objective, as in optax:\n\n```python\nu, s = tx.update(g, s, p, obj_fn=f)\n```"
      "\n\nArgs:\n")
  # Indented (inside a section), and a "::" that opens no block.
  assert rst_to_markdown("  Say ::\n\n    x = 1\n") == "  Say\n\n  ```python\n  x = 1\n  ```\n"
  assert rst_to_markdown("Odd::\nnext\n") == "Odd::\nnext\n"


def test_site_builds_strict_with_every_page(tmp_path):
  site = tmp_path / "site"
  result = subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  log = result.stdout + result.stderr
  assert result.returncode == 0, log
  assert "WARNING" not in log, log
  missing = []
  for page in PAGES:
    html = site / page.path.removesuffix(".md") / "index.html"
    if not html.exists():
      missing.append(page.name)
      continue
    body = html.read_text()
    anchor = "doc-module" if page.kind == "module" else f'id="{page.identifier}"'
    if anchor not in body or "doc-contents" not in body:
      missing.append(f"{page.name} (no rendered docstring of {page.identifier})")
    if page.kind == "module" and page.name != "schedules":  # a namespace: gtx.contrib.muon
      # Each name of its __all__ is documented on its page (contrib.ReduceLROnPlateauState,
      # an assignment without a docstring, was left out).
      missing += [f"{page.name}.{name}" for name in getattr(getattr(gtx, page.name), "__all__", ())
                  if f'id="{page.identifier}.{name}"' not in body]
  assert not missing, f"API pages missing or empty: {missing}"
  for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    page = site / "tutorials" / notebook.stem / "index.html"
    assert page.exists(), f"no tutorial page for {notebook.name}"
    assert "<img" in page.read_text() or notebook.stem == "01_quickstart"
  assert "arithmatex" in (site / "api" / "adam" / "index.html").read_text(), (
      "the update rule of adam did not render as math")


# ---------------------------------------------------------------------------------------
# Docstrings against signatures: what the Args section names and the defaults it quotes.

def _public_functions() -> list[tuple[str, object]]:
  """(dotted name, function or class) for every public function and class of gradtx and its
  namespaces, once (a class's Args are those of its constructor)."""
  import inspect
  modules = {"": gtx, **{f"{m}.": getattr(gtx, m) for m in (
      "schedules", "contrib", "losses", "tree_utils", "projections", "second_order",
      "lr_finder", "packed")}}
  seen, found = set(), []
  for prefix, module in modules.items():
    for name in module.__all__:
      obj = getattr(module, name)
      if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen:
        seen.add(id(obj))
        found.append((prefix + name, obj))
  return found


def _args_entries(doc: str) -> list[tuple[list[str], str]]:
  """The entries of a docstring's ``Args:`` section: (names, text), where an entry may
  document several arguments at once (``b1, b2: ...``)."""
  import re
  lines = doc.splitlines()
  starts = [i for i, line in enumerate(lines) if line.strip() == "Args:"]
  if not starts:
    return []
  entries: list[tuple[list[str], str]] = []
  indent = None
  for line in lines[starts[0] + 1:]:
    if not line.strip():
      continue
    depth = len(line) - len(line.lstrip())
    indent = depth if indent is None else indent
    if depth < indent:
      break
    if depth == indent:
      match = re.match(r"\s*([\w*][\w*, ]*?)(?: \([^)]*\))?:(?:\s|$)(.*)", line)
      assert match, f"an Args line that names no argument: {line.strip()!r}"
      entries.append(([n.strip().lstrip("*") for n in match.group(1).split(",")],
                      match.group(2)))
    else:
      entries[-1] = (entries[-1][0], entries[-1][1] + " " + line.strip())
  return entries


@pytest.mark.parametrize("name, function", _public_functions(), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_args_sections_name_the_parameters(name, function):
  # Every argument an Args section names is a parameter, and a function with an Args
  # section documents every parameter (under its own name or in a group).
  import inspect
  entries = _args_entries(inspect.getdoc(function) or "")
  if not entries:
    return
  params = list(inspect.signature(function).parameters)
  documented = [n for names, _ in entries for n in names]
  assert not set(documented) - set(params), (
      f"{name}: Args names {sorted(set(documented) - set(params))}, not parameters of {params}")
  assert not set(params) - set(documented), (
      f"{name}: Args leaves out {sorted(set(params) - set(documented))}")


_LITERAL = (r"(?:``)?(-?[0-9](?:[0-9e+-]|\.(?=[0-9]))*|True|False|None|inf|'[^']*'|\"[^\"]*\")"
            r"(?:``)?")


def _literal(text: str) -> object:
  import ast
  import math
  text = text.strip("`")
  return math.inf if text == "inf" else ast.literal_eval(text)


def _quoted_defaults(names: list[str], text: str) -> list[tuple[str, object]]:
  """(argument, value) for the defaults an Args entry quotes: ``default 0.9``, ``defaults
  0.9, 0.999`` (one per name of the entry, in order; an entry that starts with
  ``learning_rate`` quotes none for it), ``defaults b1 0.9, b2 0.999`` (by name), ``default
  True each``. The first such phrase of the entry only: later ones may be another
  library's (``torch's alpha defaults to 0.99``)."""
  import re
  by_name = re.search(r"\bdefaults? ((?:\w+ " + _LITERAL + r"(?:, |\)|$))+)", text)
  pairs = re.findall(r"(\w+) " + _LITERAL, by_name.group(1)) if by_name else []
  if pairs and all(n in names for n, _ in pairs):
    return [(n, _literal(v)) for n, v in pairs]
  match = re.search(r"(?<![\w'])(?:[Dd]efaults?|by default)(?: to| is| of)?:? (" + _LITERAL
                    + r"(?:(?:,| and) " + _LITERAL + r")*)", text)
  if not match:
    return []
  values = [_literal(v) for v in re.findall(_LITERAL, match.group(1))]
  if len(names) == 1:
    return [(names[0], values[0])]
  if len(values) == len(names):
    return list(zip(names, values))
  if len(values) == len(names) - 1 and names[0] == "learning_rate":
    return list(zip(names[1:], values))
  if len(values) == 1 and text[match.end():].lstrip().startswith("each"):
    return [(n, values[0]) for n in names]
  return []


@pytest.mark.parametrize("name, function", _public_functions(), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_defaults_in_docstrings_are_the_signatures(name, function):
  import inspect
  params = inspect.signature(function).parameters
  wrong = []
  for names, text in _args_entries(inspect.getdoc(function) or ""):
    for arg, value in _quoted_defaults(names, text):
      default = params[arg].default
      # A None default that the docstring spells by its meaning ("default 1": no weights).
      if default is None and value is not None:
        continue
      if default is inspect.Parameter.empty or default != value or type(default) is bool \
          and type(value) is not bool:
        wrong.append(f"{arg}: the docstring says {value!r}, the signature {default!r}")
  assert not wrong, f"{name}: " + "; ".join(wrong)


# ---------------------------------------------------------------------------------------
# The code of the hand-written pages runs as written, given what the text around it
# assumes (`params`, a `tx` and its `state`). README.md, docs/optax.md and
# docs/distributed.md are run by test_readme, test_migration and the sharding worker.

def _python_blocks(page: str) -> list[str]:
  import re
  return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(), re.S)


def _run_block(page: str, index: int, namespace: dict) -> dict:
  exec(compile(_python_blocks(page)[index], f"docs/{page}, block {index + 1}", "exec"),  # noqa: S102
       namespace)
  return namespace


def test_index_example_runs():
  import jax.numpy as jnp
  import numpy as np
  # The page's example chain, given only the params (it imported gradtx but not jax).
  ns = _run_block("index.md", 1, {"params": {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}})
  assert gtx.hparams(ns["state"])["decay.weight_decay"] == np.float32(1e-5)
  assert ns["state"]["adam"].mu["w"].shape == (3, 2)


def test_faq_examples_run(tmp_path, capsys):
  import ast
  import re

  import jax
  import jax.numpy as jnp
  import numpy as np
  blocks = _python_blocks("faq.md")
  params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.1, -0.2])}
  loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum((p["b"] - 1) ** 2)  # noqa: E731
  base = {"gtx": gtx, "jax": jax, "jnp": jnp, "np": np, "params": params, "loss": loss}

  # Carrying a state into an edited chain: the report has the keys the comment shows.
  tx = gtx.adam(0.1)
  new_tx = gtx.chain(clip=gtx.clip_by_global_norm(1.0), adam=gtx.scale_by_adam(),
                     lr=gtx.scale_by_learning_rate(0.1))
  ns = _run_block("faq.md", 1, {**base, "old_state": tx.init(params), "new_tx": new_tx})
  shown = ast.literal_eval(re.search(r"# (\{.*\})", blocks[1]).group(1).replace("...", ""))
  assert list(ns["report"]) == list(shown)
  assert capsys.readouterr().out.strip() == str(ns["report"])

  # A learning rate swept under vmap: 100 steps of each run are optax's, with
  # inject_hyperparams under vmap (as the page says optax writes it), in one compiled scan.
  ns = _run_block("faq.md", 2, {**base})
  assert capsys.readouterr().out.strip() == "[0.001 0.01  0.1  ]"
  import optax

  def optax_runs(lr):
    otx = optax.inject_hyperparams(optax.adam)(lr)

    def body(carry, _):
      p, s = carry
      u, s = otx.update(jax.grad(loss)(p), s, p)
      return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(body, (params, otx.init(params)), length=100)[0][0]

  with jax.numpy_dtype_promotion("standard"):  # optax's adam mixes int32 and float32
    want = jax.jit(jax.vmap(optax_runs))(ns["rates"])
  for got, expected in zip(jax.tree.leaves(ns["runs"][0]), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  states = jax.vmap(lambda lr: gtx.adam(lr).init(params))(ns["rates"])  # optax's form
  assert jax.tree.structure(states) == jax.tree.structure(ns["runs"][1])
  np.testing.assert_array_equal(gtx.hparams(states)["lr.learning_rate"], ns["rates"])

  # Meta-gradient of the learning rate: finite.
  ns = _run_block("faq.md", 3, {**base, "tx": gtx.adam(0.1)})
  assert np.isfinite(ns["d_lr"])

  # The npz recipe, on a state with a typed key (add_noise) and a bfloat16 moment.
  tx = gtx.chain(noise=gtx.add_noise(0.01, 0.55, key=jax.random.key(0)),
                 adam=gtx.adam(0.1, mu_dtype=jnp.bfloat16))
  state = tx.init(params)
  _, state = tx.update(params, state, params)
  ns = _run_block("faq.md", 4, {**base, "tx": tx, "state": state,
                                "path": str(tmp_path / "state.npz")})
  restored = ns["state"]
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(gtx.tree_utils.tree_unwrap_random_key_data(restored)),
                  jax.tree.leaves(gtx.tree_utils.tree_unwrap_random_key_data(state))):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))

  # The weight-decay mask as a function of the params.
  exec(compile(blocks[5], "docs/faq.md, block 6", "exec"), {**base})  # noqa: S102

  # Complex parameters: Adam reaches the target 0.5 - 1j.
  ns = _run_block("faq.md", 6, {**base})
  np.testing.assert_allclose(ns["z"]["w"], np.full(2, 0.5 - 1.0j), atol=0.05)

  # A TrainState step that passes the loss on: reduce_on_plateau halves the rate after a
  # step without improvement (patience=1), as it does given value= directly.
  from flax.training import train_state
  tx = gtx.chain(sgd=gtx.sgd(0.1), plateau=gtx.reduce_on_plateau(factor=0.5, patience=1))
  state = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
  grads = jax.tree.map(jnp.ones_like, params)
  ns = _run_block("faq.md", 7, {**base, "state": state, "grads": grads,
                                "loss": jnp.float32(3.0)})
  state = ns["state"]
  for value in [2.0, 2.0]:
    state = ns["apply_gradients"](state, grads, value=jnp.float32(value))
  assert int(state.step) == 3
  np.testing.assert_allclose(state.params["b"], params["b"] - 0.1 - 0.1 - 0.05, rtol=1e-6)

  # An exported adam step, serialized and called again: the jitted step's result.
  import importlib.util
  if importlib.util.find_spec("flatbuffers") is not None:  # serialize() needs it
    ns = _run_block("faq.md", 8, {**base})
    want = jax.jit(ns["step"])(params, ns["tx"].init(params), params)
    for got, expected in zip(jax.tree.leaves((ns["params"], ns["state"])), jax.tree.leaves(want)):
      np.testing.assert_array_equal(got, expected)


def test_packed_examples_run():
  # The page's three training steps (plain JAX, flax.nnx, equinox), each given the model
  # the text assumes, train; the state reads back as the tree.
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  x, y = jax.random.normal(jax.random.key(0), (16, 4)), jnp.ones((16, 1))

  def model_apply(params, x):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
    return hidden @ params["w2"] + params["b2"][None, :]

  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.hidden, self.out = nnx.Linear(4, 8, rngs=rngs), nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
      return self.out(jnp.tanh(self.hidden(x)))

  params = {"w1": jnp.full((4, 8), 0.1), "b1": jnp.zeros(8), "w2": jnp.full((8, 1), 0.1),
            "b2": jnp.zeros(1)}
  blocks = _python_blocks("packed.md")
  for index, given in [(1, {"params": params, "model_apply": model_apply}),
                       (2, {"jax": jax, "jnp": jnp, "gtx": gtx, "MLP": MLP}),
                       (3, {"jax": jax, "jnp": jnp, "gtx": gtx})]:
    ns = _run_block("packed.md", index, dict(given))
    losses = []
    for _ in range(5):
      ns["flat"], ns["opt_state"], loss = ns["train_step"](ns["flat"], ns["opt_state"], x, y)
      losses.append(float(loss))
    assert losses[-1] < losses[0], (index, losses)
    if index == 1:
      ns = _run_block("packed.md", 0, ns)  # the three objects
      jax.tree.map(np.testing.assert_array_equal, ns["tree"], ns["layout"].unpack(ns["flat"]))
      exec(compile(blocks[4], "docs/packed.md, block 5", "exec"), ns)  # noqa: S102
      assert ns["readable"]["adam"].mu["w1"].shape == (4, 8)
      # Switching modes: a tree-mode state two steps in, packed, and back as it was.
      tx, tree_state = ns["tx"], ns["tx"].init(params)

      @jax.jit  # one compiled tree-mode step, rather than each of its ops compiled eagerly
      def tree_step(params, tree_state):
        grads = jax.grad(ns["loss_fn"])(ns["layout"].pack(params), x, y).unpack()
        updates, tree_state = tx.update(grads, tree_state, params)
        return gtx.apply_updates(params, updates), tree_state

      for _ in range(2):
        params, tree_state = tree_step(params, tree_state)
      tree_state = gtx.set_hparams(tree_state, {"lr.learning_rate": 5e-4})
      ns.update(params=params, tree_state=tree_state)
      before = tree_state
      ns = _run_block("packed.md", 5, ns)
      assert int(ns["opt_state"]["adam"].count) == 2
      assert gtx.hparams(ns["opt_state"])["lr.learning_rate"] == np.float32(5e-4)
      for a, b in zip(jax.tree.leaves(ns["tree_state"]), jax.tree.leaves(before)):
        np.testing.assert_array_equal(a, b)
