"""A griffe extension: the reStructuredText in gradtx's docstrings, as Markdown.

gradtx's docstrings are Google style with a few reStructuredText constructs
that read well in ``help()`` and in the source: ``.. math::`` blocks,
``:math:`...``` and cross-reference roles (``:func:`adam```). mkdocstrings
renders docstrings as Markdown, so this extension rewrites those constructs
before griffe parses the docstring:

* ``.. math::`` blocks and ``.. math:: x`` one-liners become ``$$ ... $$``
  blocks, which ``pymdownx.arithmatex`` hands to MathJax;
* ``:math:`x``` becomes ``$x$``;
* ``:func:`~gradtx.core.apply_updates``` and the other roles become code,
  ``apply_updates`` (the last component when the target starts with ``~``);
* an ``Example:`` section heading becomes ``Examples:``, the spelling
  griffe's Google parser knows, so doctests render as code.

mkdocs.yml loads it with ``extensions: [docs/griffe_rst.py]``.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc|py:\w+):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::(.*)$")


def _indent_of(line: str) -> int:
  return len(line) - len(line.lstrip())


def _math_blocks(text: str) -> str:
  """Replaces every ``.. math::`` directive with a ``$$`` block at the same indent."""
  lines = text.split("\n")
  out: list[str] = []
  i = 0
  while i < len(lines):
    match = _MATH_DIRECTIVE.match(lines[i])
    if not match:
      out.append(lines[i])
      i += 1
      continue
    pad, inline = match.group(1), match.group(2).strip()
    body = [inline] if inline else []
    i += 1
    # The directive's body: the following lines indented deeper than it (blank lines included).
    while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > len(pad)):
      body.append(lines[i])
      i += 1
    while body and not body[-1].strip():
      body.pop()
    trailing_blank = i < len(lines)
    formula = textwrap.dedent("\n".join(body)).strip()
    out += [f"{pad}$$", *(f"{pad}{row}" for row in formula.split("\n")), f"{pad}$$"]
    if trailing_blank:
      out.append("")
  return "\n".join(out)


def rst_to_markdown(text: str) -> str:
  """The Markdown form of a docstring written with gradtx's reStructuredText habits."""
  text = _math_blocks(text)
  text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)

  def role(match: re.Match) -> str:
    target = match.group(2)
    if match.group(1):
      target = target.rsplit(".", 1)[-1]
    return f"`{target}`"

  text = _ROLE.sub(role, text)
  return _EXAMPLE.sub(lambda m: f"{m.group(1)}Examples:", text)


class RstToMarkdown(griffe.Extension):
  """Rewrites each docstring once, when griffe first loads its object."""

  def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
    if obj.docstring is not None:
      obj.docstring.value = rst_to_markdown(obj.docstring.value)
