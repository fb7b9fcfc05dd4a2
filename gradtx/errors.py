"""Errors gradtx raises, each naming what is wrong and where.

Every error raised while a chain runs carries the dotted path of the stage it
came from; the chain fills the path in as the error passes through it, so a
message reads ``stage 'outer.adam': grads and state.mu differ at ['w']``.
"""

from __future__ import annotations


class GradtxError(Exception):
  """Base class of gradtx's own errors; ``stage_path`` names the stage."""

  def __init__(self, message: str, stage_path: tuple[str, ...] = ()):
    super().__init__(message)
    self.message = message
    self.stage_path = stage_path

  def with_stage(self, name: str) -> "GradtxError":
    """Returns the same error one level further out in a chain."""
    self.stage_path = (name, *self.stage_path)
    self.args = (str(self),)
    return self

  def __str__(self) -> str:
    if not self.stage_path:
      return self.message
    return f"stage '{'.'.join(self.stage_path)}': {self.message}"


class HyperparameterError(GradtxError, ValueError):
  """A hyperparameter is out of its allowed range, or unknown by name."""


class StructureError(GradtxError, ValueError):
  """Grads, params and state disagree in tree structure, shape or stage names."""


class MissingArgumentError(GradtxError, TypeError):
  """A stage needs an argument of ``update`` (params, value, ...) it did not get."""


__all__ = ["GradtxError", "HyperparameterError", "MissingArgumentError", "StructureError"]
