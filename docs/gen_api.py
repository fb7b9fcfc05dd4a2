"""An mkdocs hook that writes the API reference and the tutorial pages at build time.

* **API reference.** One page per public name: every name in
  ``gradtx.__all__`` and in ``gradtx.schedules.__all__``. Each page holds a
  mkdocstrings directive for the name's canonical path (the module that
  defines it), so the text comes from the docstring. ``api/index.md`` lists
  the names by module with their one-line summaries, and the nav gets one
  section per module. A new module registered in ``gradtx/__init__.py``
  shows up with no change here.
* **Tutorials.** One page per ``notebooks/*.ipynb``, rendered from the
  executed notebook committed with its outputs (markdown, code, text
  outputs and plots), plus the ``.ipynb`` itself to download.
* **Guides** written by hand (``docs/optax.md``, ``docs/torch.md``, ``docs/packed.md``,
  ``docs/distributed.md``) are added to the nav when they exist.

mkdocs.yml loads it with ``hooks: [docs/gen_api.py]``. ``api_pages()`` is
also what ``tests/test_docs.py`` checks the built site against.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import inspect
import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The repository (for gradtx) and docs/ (for the docstring converter) are importable.
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "docs")) if p not in sys.path]
from griffe_rst import rst_to_markdown  # noqa: E402
NOTEBOOKS = ROOT / "notebooks"
GUIDES = {"optax.md": "Coming from optax", "torch.md": "Coming from torch.optim",
          "packed.md": "Packed mode", "distributed.md": "Sharded and distributed training"}


@dataclasses.dataclass(frozen=True)
class ApiPage:
  """One public name: where its page lives and what it documents."""
  name: str          # as users write it: "adam", "schedules.cosine_decay_schedule"
  identifier: str    # the canonical dotted path mkdocstrings loads
  module: str        # the defining module, "gradtx.optimizers.classic"
  kind: str          # "class", "function", "module" or "data"
  path: str          # the page, relative to docs/: "api/adam.md"
  summary: str       # first line of the docstring


def _import_gradtx():
  return importlib.import_module("gradtx")


def _summary(obj: object) -> str:
  """The first paragraph of the docstring, as one line of Markdown."""
  doc = inspect.getdoc(obj) or ""
  return rst_to_markdown(doc.strip().split("\n\n")[0]).replace("\n", " ")


def _attribute_doc(module: str, name: str) -> str:
  """The docstring under ``name = ...`` in ``module``'s source (how constants are documented)."""
  import ast
  body = ast.parse(inspect.getsource(importlib.import_module(module))).body
  for node, following in zip(body, body[1:]):
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, ast.AnnAssign) else [])
    if any(isinstance(t, ast.Name) and t.id == name for t in targets) and (
        isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        and isinstance(following.value.value, str)):
      return inspect.cleandoc(following.value.value)
  for node in body:  # a re-export (a package of private modules): where it is assigned
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and any(
        alias.name == name and alias.asname in (None, name) for alias in node.names):
      return _attribute_doc(node.module, name)
  return ""


def _public_module(module: str, name: str, obj: object) -> str:
  """``module`` less its private last parts where the package above re-exports ``obj``:
  a package of private modules by role (``gradtx.wrappers._masking``) is documented
  under its public name (``gradtx.wrappers``)."""
  parts = module.split(".")
  while len(parts) > 1 and parts[-1].startswith("_"):
    if getattr(importlib.import_module(".".join(parts[:-1])), name, None) is not obj:
      break
    parts.pop()
  return ".".join(parts)


def _defining_module(namespace: types.ModuleType, name: str, obj: object) -> str:
  if isinstance(obj, types.ModuleType):
    return obj.__name__
  if inspect.isclass(obj) or inspect.isfunction(obj):
    return _public_module(obj.__module__, name, obj)
  # Data (a constant, a type alias): the gradtx module whose __all__ lists it.
  owners = sorted(m for m, mod in list(sys.modules.items())
                  if m.startswith("gradtx.") and mod is not None
                  and name in getattr(mod, "__all__", ()) and getattr(mod, name, None) is obj)
  return owners[0] if owners else namespace.__name__


def _kind(obj: object) -> str:
  if isinstance(obj, types.ModuleType):
    return "module"
  if inspect.isclass(obj):
    return "class"
  if callable(obj) and hasattr(obj, "__code__"):
    return "function"
  return "data"


def api_pages() -> list[ApiPage]:
  """The API page of every public name of gradtx and of gradtx.schedules."""
  gtx = _import_gradtx()
  pages = []
  for namespace, prefix in ((gtx, ""), (gtx.schedules, "schedules.")):
    for name in namespace.__all__:
      obj = getattr(namespace, name)
      module = _defining_module(namespace, name, obj)
      kind = _kind(obj)
      identifier = module if kind == "module" else f"{module}.{name}"
      if kind in ("function", "class") and obj.__name__ != name:
        # A second name for an object (optax's `multi_transform` for `partition`):
        # document the object under its own name.
        identifier = f"{module}.{obj.__name__}"
      # Classes get their own folder so that `Chain` and `chain` stay two pages
      # on case-insensitive file systems too.
      folder = "api/schedules" if prefix else ("api/classes" if kind == "class" else "api")
      if kind == "data":
        summary = rst_to_markdown(_attribute_doc(module, name).split("\n\n")[0])
      else:
        summary = _summary(obj)
      pages.append(ApiPage(prefix + name, identifier, module, kind,
                           f"{folder}/{name}.md", summary))
  seen: dict[str, str] = {}
  for page in pages:
    other = seen.setdefault(page.path.lower(), page.name)
    if other != page.name:
      raise ValueError(f"API pages of {other!r} and {page.name!r} collide at {page.path}")
  return pages


def _section(module: str) -> str:
  """Nav title of a module's section: its path inside gradtx."""
  return module.removeprefix("gradtx.").removeprefix("gradtx") or "gradtx"


def _page_text(page: ApiPage) -> str:
  options = ""
  if page.kind == "module" and page.identifier == "gradtx.schedules":
    # The schedules module page introduces it; each schedule has its own page.
    options = "\n    options:\n      members: false\n      show_root_heading: false"
  elif page.kind == "module":
    # A namespace module (gtx.tree, gtx.packed): its members are documented here.
    options = "\n    options:\n      show_root_heading: false"
  elif page.kind == "data":
    options = "\n    options:\n      show_root_heading: true"
  alias = page.identifier.rsplit(".", 1)[-1]
  note = "" if page.kind == "module" or page.name.endswith(alias) else (
      f"`gtx.{page.name}` is another name for `gtx.{alias}`, kept for optax users.\n\n")
  return f"# gtx.{page.name}\n\n{note}::: {page.identifier}{options}\n"


def _module_groups(pages: list[ApiPage]) -> dict[str, list[ApiPage]]:
  groups: dict[str, list[ApiPage]] = {}
  for page in pages:
    key = "gradtx.schedules" if page.name.startswith("schedules.") else page.module
    if page.kind == "module":
      key = page.identifier
    groups.setdefault(key, []).append(page)
  return dict(sorted(groups.items(), key=lambda kv: _section(kv[0])))


def _index_text(pages: list[ApiPage]) -> str:
  lines = ["# API reference", "",
           "Every public name of `gradtx` (imported as `gtx`), by the module that defines it. "
           "The namespace is flat: write `gtx.adam`, `gtx.chain`, "
           "`gtx.schedules.cosine_decay_schedule`.", ""]
  for module, group in _module_groups(pages).items():
    doc = _summary(importlib.import_module(module))
    lines += [f"## {_section(module)}", "", doc, "", "| name | summary |", "| --- | --- |"]
    for page in group:
      link = page.path.removeprefix("api/")
      lines.append(f"| [`{page.name}`]({link}) | {page.summary.replace('|', '&#124;')} |")
    lines.append("")
  return "\n".join(lines)


# ---------------------------------------------------------------- notebooks


def _text(source: str | list[str]) -> str:
  return "".join(source) if isinstance(source, list) else source


def _fence(text: str, lang: str = "text") -> list[str]:
  ticks = "````" if "```" in text else "```"
  return [f"{ticks}{lang}", text.rstrip("\n"), ticks, ""]


def notebook_markdown(path: Path) -> tuple[str, dict[str, bytes]]:
  """A notebook as Markdown with its outputs, and the images it refers to."""
  notebook = json.loads(path.read_text())
  stem = path.stem
  lines = [f"[Download the notebook]({path.name}) · it runs top to bottom in about "
           "half a minute on a laptop CPU.", ""]
  images: dict[str, bytes] = {}
  for index, cell in enumerate(notebook["cells"]):
    source = _text(cell["source"])
    if cell["cell_type"] == "markdown":
      if index == 0:
        lines = [source, ""] + lines  # the title comes first
      else:
        lines += [source, ""]
      continue
    if cell["cell_type"] != "code" or not source.strip():
      continue
    lines += _fence(source, "python")
    for output in cell.get("outputs", []):
      if output["output_type"] == "stream":
        lines += _fence(_text(output["text"]))
      elif output["output_type"] in ("execute_result", "display_data"):
        data = output["data"]
        if "image/png" in data:
          name = f"{stem}_{index}_{len(images)}.png"
          images[name] = base64.b64decode(_text(data["image/png"]))
          lines += [f"![output of cell {index}]({name})", ""]
        elif "text/plain" in data:
          lines += _fence(_text(data["text/plain"]))
      elif output["output_type"] == "error":
        lines += _fence("\n".join(output["traceback"]))
  return "\n".join(lines), images


def notebook_title(path: Path) -> str:
  first = json.loads(path.read_text())["cells"][0]
  return _text(first["source"]).strip().split("\n")[0].lstrip("# ").strip()


# ---------------------------------------------------------------- mkdocs hooks


def on_config(config, **kwargs):
  pages = api_pages()
  nav = [item for item in config["nav"] if not (isinstance(item, dict) and (
      {"Tutorials", "Guides", "API reference"} & set(item)))]
  tutorials = [{notebook_title(p): f"tutorials/{p.stem}.md"}
               for p in sorted(NOTEBOOKS.glob("*.ipynb"))]
  if tutorials:
    nav.append({"Tutorials": [{"Overview": "tutorials/index.md"}, *tutorials]})
  docs_dir = Path(config["docs_dir"])
  guides = [{title: name} for name, title in GUIDES.items() if (docs_dir / name).exists()]
  if guides:
    nav.append({"Guides": guides})
  api = [{"Index": "api/index.md"}]
  for module, group in _module_groups(pages).items():
    api.append({_section(module): [{page.name: page.path} for page in group]})
  nav.append({"API reference": api})
  config["nav"] = nav
  return config


def on_files(files, config, **kwargs):
  from mkdocs.structure.files import File

  def add(path: str, content: str | bytes) -> None:
    files.append(File.generated(config, path, content=content))

  pages = api_pages()
  add("api/index.md", _index_text(pages))
  for page in pages:
    add(page.path, _page_text(page))
  notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
  if notebooks:
    overview = ["# Tutorials", "",
                "Executable notebooks, committed with their outputs and run by the test "
                "suite (`python3 dev.py test`). Open them in Jupyter with "
                "`pip install -e .[notebooks]`.", ""]
    for path in notebooks:
      overview.append(f"1. [{notebook_title(path)}]({path.stem}.md) "
                      f"([.ipynb]({path.name}))")
      text, images = notebook_markdown(path)
      add(f"tutorials/{path.stem}.md", text)
      add(f"tutorials/{path.name}", path.read_bytes())
      for name, data in images.items():
        add(f"tutorials/{name}", data)
    add("tutorials/index.md", "\n".join(overview) + "\n")
  return files
