"""optax.contrib's optimizers, written as gradtx stages and named chains.

``gtx.contrib.muon(...)`` is ``optax.contrib.muon(...)`` with gradtx's
contract: every numeric hyperparameter is held in the state, read and set by
its dotted name (``gtx.hparams``, ``gtx.set_hparams``) without retracing; a
ready optimizer is a named chain whose stages' states are addressed by name;
bad hyperparameters raise at construction, naming the stage and the range.
Each rule is tested against a numpy reference written from its paper, and
against optax.contrib where the two agree (the docstrings say where they
differ and why).

As in optax, these are the newer and more experimental optimizers; the
names, arguments and defaults are optax 0.2.8's.
"""

from gradtx.contrib._adam_family import *  # noqa: F401,F403
from gradtx.contrib._parameter_free import *  # noqa: F401,F403
from gradtx.contrib._orthogonal import *  # noqa: F401,F403
from gradtx.contrib._curvature import *  # noqa: F401,F403
from gradtx.contrib._schedule_free import *  # noqa: F401,F403
from gradtx.transforms.plateau import ReduceOnPlateauState, reduce_on_plateau  # noqa: F401


def _public_names() -> list[str]:
  import importlib
  names = {"ReduceOnPlateauState", "reduce_on_plateau"}
  for module in ["_adam_family", "_parameter_free", "_orthogonal", "_curvature",
                 "_schedule_free"]:
    names.update(importlib.import_module(f"gradtx.contrib.{module}").__all__)
  return sorted(names)


__all__ = _public_names()
