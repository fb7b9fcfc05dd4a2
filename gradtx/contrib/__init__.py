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

from gradtx.contrib._common import *  # noqa: F401,F403
from gradtx.contrib._adopt import *  # noqa: F401,F403
from gradtx.contrib._ademamix import *  # noqa: F401,F403
from gradtx.contrib._madgrad import *  # noqa: F401,F403
from gradtx.contrib._acprop import *  # noqa: F401,F403
from gradtx.contrib._prodigy import *  # noqa: F401,F403
from gradtx.contrib._dadapt_adamw import *  # noqa: F401,F403
from gradtx.contrib._dog import *  # noqa: F401,F403
from gradtx.contrib._cocob import *  # noqa: F401,F403
from gradtx.contrib._mechanic import *  # noqa: F401,F403
from gradtx.contrib._momo import *  # noqa: F401,F403
from gradtx.contrib._muon import *  # noqa: F401,F403
from gradtx.contrib._galore import *  # noqa: F401,F403
from gradtx.contrib._complex_valued import *  # noqa: F401,F403
from gradtx.contrib._sophia import *  # noqa: F401,F403
from gradtx.contrib._sam import *  # noqa: F401,F403
from gradtx.contrib._schedule_free import *  # noqa: F401,F403
from gradtx.transforms.plateau import ReduceOnPlateauState, reduce_on_plateau  # noqa: F401
# optax.contrib's name for reduce_on_plateau's state; gradtx's own is ReduceOnPlateauState.
ReduceLROnPlateauState = ReduceOnPlateauState


def _public_names() -> list[str]:
  import sys
  names = {"ReduceLROnPlateauState", "ReduceOnPlateauState", "reduce_on_plateau"}
  for name, module in list(sys.modules.items()):  # the modules imported above
    if name.startswith("gradtx.contrib._"):
      names.update(module.__all__)
  return sorted(names)


__all__ = _public_names()
