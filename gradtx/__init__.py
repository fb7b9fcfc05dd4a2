"""gradtx: composable gradient transformations for JAX.

An optimizer is a pair of pure functions, ``init(params) -> state`` and
``update(updates, state, params=None, **extra) -> (updates, state)``, built as a
named chain of primitives. The namespace is flat, like optax's: ``gtx.adam``,
``gtx.chain``, ``gtx.hparams``, ``gtx.schedules``. Each module lists what it
exports in its ``__all__``; this file re-exports exactly those names, and,
where optax has a second spelling at its top level (its schedules, losses and
type names), that spelling too, kept out of ``__all__`` so that each object
has one page in the docs.
"""

from gradtx import schedules, tree
from gradtx import packed  # a namespace, like schedules: gtx.packed.Layout
from gradtx import lr_finder  # a namespace: gtx.lr_finder.lr_range_test
# optax's namespaces, under optax's names: gtx.losses.l2_loss, gtx.tree_utils.tree_norm, ...
from gradtx import losses, projections, second_order, tree_utils
from gradtx import contrib  # optax.contrib's optimizers, native: gtx.contrib.muon
from gradtx.chain import *  # noqa: F401,F403
from gradtx.core import *  # noqa: F401,F403
# optax's type names, for annotations written against optax. Second names for
# Any and for the protocol's types, so they stay out of __all__ and the docs.
from gradtx.core import (  # noqa: F401
    GradientTransformationExtraArgs, OptState, Params, TransformInitFn,
    TransformUpdateExtraArgsFn, TransformUpdateFn, Updates)
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
from gradtx.transforms.monitoring import *  # noqa: F401,F403
from gradtx.tree import MaskedNode
from gradtx.wrappers import *  # noqa: F401,F403
from gradtx.utilities import *  # noqa: F401,F403
# optax also exports its schedules at the top level (optax.linear_schedule): so
# does gradtx, for a change of import. They stay out of __all__, so that each
# has one page in the docs, under gtx.schedules (and gtx.losses below).
from gradtx.schedules import (  # noqa: F401
    constant_schedule, cosine_decay_schedule, cosine_onecycle_schedule, exponential_decay,
    join_schedules, linear_onecycle_schedule, linear_schedule, piecewise_constant_schedule,
    piecewise_interpolate_schedule, polynomial_schedule, sgdr_schedule,
    warmup_constant_schedule, warmup_cosine_decay_schedule, warmup_exponential_decay_schedule)
# Likewise the losses optax exports at its top level (optax.l2_loss).
from gradtx.losses import (  # noqa: F401
    convex_kl_divergence, cosine_distance, cosine_similarity, ctc_loss,
    ctc_loss_with_forward_probs, generalized_kl_divergence, hinge_loss, huber_loss,
    kl_divergence, l2_loss, log_cosh, ntxent, safe_softmax_cross_entropy,
    sigmoid_binary_cross_entropy, sigmoid_focal_loss, smooth_labels, softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels, squared_error)
# And optax.tree_map_params, which optax also exports at its top level.
from gradtx.tree_utils import tree_map_params  # noqa: F401

# And optax's top-level spellings of two optax.contrib names (optax.dpsgd).
from gradtx.contrib import (  # noqa: F401
    DifferentiallyPrivateAggregateState, differentially_private_aggregate, dpsgd)

__version__ = "0.1.0"


def _public_names() -> list[str]:
  import importlib
  modules = ["chain", "core", "errors", "optimizers", "transforms.clipping", "transforms.decay",
             "transforms.momentum", "transforms.moments", "transforms.scaling", "wrappers",
             "transforms.finite", "transforms.plateau", "transforms.monitoring",
             "transforms.adaptive", "transforms.factored", "transforms.linesearch",
             "transforms.noise", "transforms.optimism", "transforms.sign", "transforms.stepsize",
             "transforms.trust", "utilities"]
  names = {"schedules", "tree", "MaskedNode", "packed", "lr_finder", "losses", "projections",
           "second_order", "tree_utils", "contrib"}
  for module in modules:
    names.update(importlib.import_module(f"gradtx.{module}").__all__)
  return sorted(names)


__all__ = _public_names()
