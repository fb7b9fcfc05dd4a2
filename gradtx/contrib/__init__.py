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

from gradtx.contrib import (_acprop, _ademamix, _adopt, _cocob, _common, _complex_valued,
                            _dadapt_adamw, _dog, _galore, _madgrad, _mechanic, _momo, _muon,
                            _prodigy, _sam, _schedule_free, _sophia)
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
from gradtx.transforms.plateau import ReduceOnPlateauState, reduce_on_plateau
ReduceLROnPlateauState = ReduceOnPlateauState
"""optax.contrib's name for the state of :func:`reduce_on_plateau`, another name for
:class:`ReduceOnPlateauState`."""


# Each module's __all__, added in the form type checkers read (mypy, pyright), so that
# `gtx.contrib.muon` and `from gradtx.contrib import *` resolve statically.
__all__ = ["ReduceLROnPlateauState", "ReduceOnPlateauState", "reduce_on_plateau"]
__all__ += _common.__all__
__all__ += _adopt.__all__
__all__ += _ademamix.__all__
__all__ += _madgrad.__all__
__all__ += _acprop.__all__
__all__ += _prodigy.__all__
__all__ += _dadapt_adamw.__all__
__all__ += _dog.__all__
__all__ += _cocob.__all__
__all__ += _mechanic.__all__
__all__ += _momo.__all__
__all__ += _muon.__all__
__all__ += _galore.__all__
__all__ += _complex_valued.__all__
__all__ += _sophia.__all__
__all__ += _sam.__all__
__all__ += _schedule_free.__all__
__all__.sort()
