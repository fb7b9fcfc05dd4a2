"""gradtx: composable gradient transformations for JAX.

An optimizer is a pair of pure functions, ``init(params) -> state`` and
``update(updates, state, params=None, **extra) -> (updates, state)``, built as a
named chain of primitives. The namespace is flat, like optax's: ``gtx.adam``,
``gtx.chain``, ``gtx.hparams``, ``gtx.schedules``. Each module lists what it
exports in its ``__all__``; this file re-exports exactly those names.
"""

from gradtx import schedules, tree
from gradtx import packed  # a namespace, like schedules: gtx.packed.Layout
from gradtx import lr_finder  # a namespace: gtx.lr_finder.lr_range_test
from gradtx.chain import *  # noqa: F401,F403
from gradtx.core import *  # noqa: F401,F403
from gradtx.errors import *  # noqa: F401,F403
from gradtx.optimizers import *  # noqa: F401,F403
from gradtx.transforms.clipping import *  # noqa: F401,F403
from gradtx.transforms.decay import *  # noqa: F401,F403
from gradtx.transforms.momentum import *  # noqa: F401,F403
from gradtx.transforms.moments import *  # noqa: F401,F403
from gradtx.transforms.scaling import *  # noqa: F401,F403
from gradtx.transforms.adaptive import *  # noqa: F401,F403
from gradtx.transforms.factored import *  # noqa: F401,F403
from gradtx.transforms.linesearch import *  # noqa: F401,F403
from gradtx.transforms.noise import *  # noqa: F401,F403
from gradtx.transforms.optimism import *  # noqa: F401,F403
from gradtx.transforms.sign import *  # noqa: F401,F403
from gradtx.transforms.stepsize import *  # noqa: F401,F403
from gradtx.transforms.trust import *  # noqa: F401,F403
from gradtx.transforms.finite import *  # noqa: F401,F403
from gradtx.transforms.plateau import *  # noqa: F401,F403
from gradtx.transforms.monitor import *  # noqa: F401,F403
from gradtx.tree import MaskedNode
from gradtx.wrappers import *  # noqa: F401,F403

__version__ = "0.1.0"


def _public_names() -> list[str]:
  import importlib
  modules = ["chain", "core", "errors", "optimizers", "transforms.clipping", "transforms.decay",
             "transforms.momentum", "transforms.moments", "transforms.scaling", "wrappers",
             "transforms.finite", "transforms.plateau", "transforms.monitor",
             "transforms.adaptive", "transforms.factored", "transforms.linesearch", "transforms.noise", "transforms.optimism", "transforms.sign", "transforms.stepsize", "transforms.trust"]
  names = {"schedules", "tree", "MaskedNode", "packed", "lr_finder"}
  for module in modules:
    names.update(importlib.import_module(f"gradtx.{module}").__all__)
  return sorted(names)


__all__ = _public_names()
