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
  assert not missing, f"API pages missing or empty: {missing}"
  for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    page = site / "tutorials" / notebook.stem / "index.html"
    assert page.exists(), f"no tutorial page for {notebook.name}"
    assert "<img" in page.read_text() or notebook.stem == "01_quickstart"
  assert "arithmatex" in (site / "api" / "adam" / "index.html").read_text(), (
      "the update rule of adam did not render as math")
