"""Errors gradtx raises, each naming what is wrong and where.

Every error raised while a chain runs carries the dotted path of the stage it
came from; the chain fills the path in as the error passes through it, so a
message reads ``stage 'outer.adam': grads and state.mu differ at ['w']``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterable, TypeVar


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


@dataclasses.dataclass(frozen=True)
class BadArgument:
  """What a :class:`HyperparameterError` about one argument of a factory knows of it: the
  factory's and the argument's names, the value given, what the message ``says`` of it,
  and, once a factory has passed its own argument on to a stage that refused it, the
  stage and argument that did (``checked_by``)."""
  factory: str
  name: str
  value: Any
  says: str
  checked_by: tuple[str, str] | None = None

  def message(self) -> str:
    """``"{factory}: {name} {says}"``, and which stage checked it where another did."""
    if self.checked_by is None:
      return f"{self.factory}: {self.name} {self.says}"
    stage, name = self.checked_by
    as_name = "" if name == self.name else f", as its {name}"
    return f"{self.factory}: {self.name} {self.says} (checked by {stage}{as_name})"

  def passed_on_by(self, factory: str, name: str) -> "BadArgument":
    """The same refusal, about the argument ``name`` of ``factory``, which passed it on."""
    checked_by = self.checked_by or (self.factory, self.name)
    return BadArgument(factory, name, self.value, self.says, checked_by)


_Error = TypeVar("_Error", bound="_AboutAnArgument")


class _AboutAnArgument(GradtxError):
  """An error that may be about one argument of a factory: ``argument`` then says which,
  and a factory that passed that value on as an argument of its own names itself and its
  argument instead (:func:`gradtx.core.names_its_arguments`)."""

  def __init__(self, message: str, stage_path: tuple[str, ...] = (), *,
               argument: BadArgument | None = None):
    super().__init__(message, stage_path)
    self.argument = argument

  @classmethod
  def about(cls: type[_Error], factory: str, name: str, value: Any, says: str) -> _Error:
    """The error ``"{factory}: {name} {says}"`` about the argument ``name`` given ``value``."""
    argument = BadArgument(factory, name, value, says)
    return cls(argument.message(), argument=argument)


class HyperparameterError(_AboutAnArgument, ValueError):
  """A hyperparameter is out of its allowed range, or unknown by name.

  ``argument`` is set where the error is about one argument of a factory: a factory that
  passed that value on as an argument of its own then names itself and its argument
  (:func:`gradtx.core.names_its_arguments`).
  """


class ArgumentTypeError(_AboutAnArgument, TypeError):
  """An argument of a factory is not of the kind it takes (a string where a gradient
  transformation goes); named, as a :class:`HyperparameterError` is, by the factory the
  user called. A ``TypeError``, as it was before it carried the argument."""


class StructureError(GradtxError, ValueError):
  """Grads, params and state disagree in tree structure, shape or stage names."""


class MissingArgumentError(GradtxError, TypeError):
  """A stage needs an argument of ``update`` (params, value, ...) it did not get."""


def did_you_mean(name: Any, names: Iterable[Any], n: int = 3) -> str:
  """`` (did you mean 'a' or 'b'?)`` for the entries of ``names`` closest to a misspelt
  ``name``, or ``""`` where none is close."""
  close = difflib.get_close_matches(str(name), [str(x) for x in names], n=n)
  return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


# optax.chain and optax's wrappers call a transformation that is not an instance of optax's
# GradientTransformationExtraArgs (optax.with_extra_args_support), as gradtx's are not,
# without the extra arguments, and flax's TrainState.apply_gradients calls tx.update without
# any (its keywords are fields to replace): a user who passed value=loss to either would be
# told to pass it.
_DROPPED_BY_OPTAX = (
    ". Passed it, and still told so? optax.chain and optax's wrappers (optax.MultiSteps, "
    "optax.masked, ...) pass extra arguments only to optax's own "
    "GradientTransformationExtraArgs type, which a gradtx transformation is not: compose with "
    "gtx.chain and gradtx's wrappers, or give it to optax as "
    "optax.GradientTransformationExtraArgs(*tx). flax's TrainState.apply_gradients passes "
    "none (its keywords replace fields): call state.tx.update(grads, state.opt_state, "
    "state.params, value=loss) yourself and state.replace the step, params and opt_state "
    "(docs/faq.md)")


def missing_extra_argument(message: str) -> MissingArgumentError:
  """The :class:`MissingArgumentError` for an extra argument of ``update`` (``value``,
  ``value_fn``, ``obj_fn``, ...): ``message``, and what to do if optax code dropped it."""
  return MissingArgumentError(message + _DROPPED_BY_OPTAX)


__all__ = ["ArgumentTypeError", "GradtxError", "HyperparameterError", "MissingArgumentError",
           "StructureError"]
