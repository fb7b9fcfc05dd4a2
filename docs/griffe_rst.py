"""A griffe extension: the reStructuredText in gradtx's docstrings, as Markdown.

gradtx's docstrings are Google style with a few reStructuredText constructs
that read well in ``help()`` and in the source: ``.. math::`` blocks,
``:math:`...``` and cross-reference roles (``:func:`adam```). mkdocstrings
renders docstrings as Markdown, so this extension rewrites those constructs
before griffe parses the docstring:

* ``.. math::`` blocks and ``.. math:: x`` one-liners become ``$$ ... $$``
  blocks, which ``pymdownx.arithmatex`` hands to MathJax;
* ``.. code-block:: python`` blocks, and the literal block after a paragraph
  that ends in ``::`` (which then ends in ``:``), become fenced code blocks;
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
# A block-opening line: ``.. math::`` (with an optional one-line formula), ``.. code-block::
# lang``, or a paragraph's line ending in ``::`` (a literal block follows).
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::(.*)$")
_CODE_DIRECTIVE = re.compile(r"^(\s*)\.\. code(?:-block)?::\s*(\w*)\s*$")
_LITERAL_MARKER = re.compile(r"^(\s*)(\S.*?)\s*::$")


def _indent_of(line: str) -> int:
  return len(line) - len(line.lstrip())


def _blocks(text: str) -> str:
  """Replaces every ``.. math::`` directive with a ``$$`` block, and every code-block
  directive or ``::`` literal block with a fenced code block, at the opening line's indent."""
  lines = text.split("\n")
  out: list[str] = []
  i = 0
  while i < len(lines):
    math = _MATH_DIRECTIVE.match(lines[i])
    code = None if math else _CODE_DIRECTIVE.match(lines[i])
    literal = None if math or code else _LITERAL_MARKER.match(lines[i])
    if not (math or code or literal):
      out.append(lines[i])
      i += 1
      continue
    match = math or code or literal
    pad, opening = match.group(1), lines[i]
    body = [match.group(2).strip()] if math and match.group(2).strip() else []
    i += 1
    # The block's body: the following lines indented deeper than it (blank lines included).
    while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > len(pad)):
      body.append(lines[i])
      i += 1
    ended_by_blank = bool(body) and not body[-1].strip()
    while body and not body[-1].strip():
      body.pop()
    if literal and not body:  # a "::" that opens no block: the line as it is
      out += [opening] + ([""] if ended_by_blank else [])
      continue
    # A blank line after the block: before the text that follows, or the one that ended it.
    trailing_blank = i < len(lines) or ended_by_blank
    content = textwrap.dedent("\n".join(body)).strip("\n")
    if math:
      content = content.strip()
      out += [f"{pad}$$", *(f"{pad}{row}" for row in content.split("\n")), f"{pad}$$"]
    else:
      if literal:  # "text::" reads "text:" ("text ::" reads "text")
        out += [f"{pad}{literal.group(2)}{'' if opening.endswith(' ::') else ':'}", ""]
      fence = f"{pad}```{code.group(2) if code else 'python'}"
      out += [fence, *(f"{pad}{row}" if row else "" for row in content.split("\n")), f"{pad}```"]
    if trailing_blank:
      out.append("")
  return "\n".join(out)


def rst_to_markdown(text: str) -> str:
  """The Markdown form of a docstring written with gradtx's reStructuredText habits."""
  text = _blocks(text)
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
