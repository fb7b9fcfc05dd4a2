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
from gradtx import transforms as transforms  # optax.transforms' names: gtx.transforms.masked
# The modules whose __all__ make up gradtx's, under private names: imported before the
# star imports below, which rebind some of their names (gtx.chain is the function).
from gradtx import chain as _chain, core as _core, errors as _errors
from gradtx import utilities as _utilities, wrappers as _wrappers
from gradtx.optimizers import (adaptive as _adaptive_optimizers, classic as _classic,
                               large_batch as _large_batch, misc as _misc,
                               second_order as _second_order_optimizers, sign as _sign_optimizers)
from gradtx.transforms import (adaptive as _adaptive, clipping as _clipping, decay as _decay,
                               factored as _factored, finite as _finite,
                               linesearch as _linesearch, moments as _moments,
                               momentum as _momentum, monitoring as _monitoring, noise as _noise,
                               optimism as _optimism, plateau as _plateau, scaling as _scaling,
                               sign as _sign, stepsize as _stepsize, trust as _trust)
from gradtx.chain import *  # noqa: F401,F403
from gradtx.core import *  # noqa: F401,F403
from gradtx.errors import *  # noqa: F401,F403
from gradtx.optimizers.adaptive import *  # noqa: F401,F403
from gradtx.optimizers.classic import *  # noqa: F401,F403
from gradtx.optimizers.large_batch import *  # noqa: F401,F403
from gradtx.optimizers.misc import *  # noqa: F401,F403
from gradtx.optimizers.second_order import *  # noqa: F401,F403
from gradtx.optimizers.sign import *  # noqa: F401,F403
from gradtx.transforms.adaptive import *  # noqa: F401,F403
from gradtx.transforms.clipping import *  # noqa: F401,F403
from gradtx.transforms.decay import *  # noqa: F401,F403
from gradtx.transforms.factored import *  # noqa: F401,F403
from gradtx.transforms.finite import *  # noqa: F401,F403
from gradtx.transforms.linesearch import *  # noqa: F401,F403
from gradtx.transforms.moments import *  # noqa: F401,F403
from gradtx.transforms.momentum import *  # noqa: F401,F403
from gradtx.transforms.monitoring import *  # noqa: F401,F403
from gradtx.transforms.noise import *  # noqa: F401,F403
from gradtx.transforms.optimism import *  # noqa: F401,F403
from gradtx.transforms.plateau import *  # noqa: F401,F403
from gradtx.transforms.scaling import *  # noqa: F401,F403
from gradtx.transforms.sign import *  # noqa: F401,F403
from gradtx.transforms.stepsize import *  # noqa: F401,F403
from gradtx.transforms.trust import *  # noqa: F401,F403
from gradtx.tree import MaskedNode
from gradtx.wrappers import *  # noqa: F401,F403
from gradtx.utilities import *  # noqa: F401,F403

# Second names, kept out of __all__ so that each object has one page in the docs; each
# is imported as `name as name`, the form that marks a re-export for type checkers.
# optax's type names, for annotations written against optax: second names for Any and
# for the protocol's types.
from gradtx.core import GradientTransformationExtraArgs as GradientTransformationExtraArgs
from gradtx.core import OptState as OptState, Params as Params, Updates as Updates
from gradtx.core import TransformInitFn as TransformInitFn, TransformUpdateFn as TransformUpdateFn
from gradtx.core import TransformUpdateExtraArgsFn as TransformUpdateExtraArgsFn
# optax's schedules at its top level (optax.linear_schedule); their page is gtx.schedules'.
from gradtx.schedules import (
    constant_schedule as constant_schedule, cosine_decay_schedule as cosine_decay_schedule,
    cosine_onecycle_schedule as cosine_onecycle_schedule, exponential_decay as exponential_decay,
    join_schedules as join_schedules, linear_onecycle_schedule as linear_onecycle_schedule,
    linear_schedule as linear_schedule, piecewise_constant_schedule as piecewise_constant_schedule,
    piecewise_interpolate_schedule as piecewise_interpolate_schedule,
    polynomial_schedule as polynomial_schedule, sgdr_schedule as sgdr_schedule,
    warmup_constant_schedule as warmup_constant_schedule,
    warmup_cosine_decay_schedule as warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule as warmup_exponential_decay_schedule)
# Likewise the losses optax exports at its top level (optax.l2_loss).
from gradtx.losses import (
    convex_kl_divergence as convex_kl_divergence, cosine_distance as cosine_distance,
    cosine_similarity as cosine_similarity, ctc_loss as ctc_loss,
    ctc_loss_with_forward_probs as ctc_loss_with_forward_probs,
    generalized_kl_divergence as generalized_kl_divergence, hinge_loss as hinge_loss,
    huber_loss as huber_loss, kl_divergence as kl_divergence, l2_loss as l2_loss,
    log_cosh as log_cosh, ntxent as ntxent,
    safe_softmax_cross_entropy as safe_softmax_cross_entropy,
    sigmoid_binary_cross_entropy as sigmoid_binary_cross_entropy,
    sigmoid_focal_loss as sigmoid_focal_loss, smooth_labels as smooth_labels,
    softmax_cross_entropy as softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels as softmax_cross_entropy_with_integer_labels,
    squared_error as squared_error)
# And optax.tree_map_params, which optax also exports at its top level.
from gradtx.tree_utils import tree_map_params as tree_map_params
# And optax's top-level spellings of two optax.contrib names (optax.dpsgd).
from gradtx.contrib import (
    DifferentiallyPrivateAggregateState as DifferentiallyPrivateAggregateState,
    differentially_private_aggregate as differentially_private_aggregate, dpsgd as dpsgd)

__version__ = "0.1.0"

# Each module's __all__, added in the form type checkers read (mypy, pyright), so that
# `gtx.adam` and `from gradtx import *` resolve statically.
__all__ = ["MaskedNode", "contrib", "losses", "lr_finder", "packed", "projections",
           "schedules", "second_order", "tree", "tree_utils"]
__all__ += _chain.__all__
__all__ += _core.__all__
__all__ += _errors.__all__
__all__ += _adaptive_optimizers.__all__
__all__ += _classic.__all__
__all__ += _large_batch.__all__
__all__ += _misc.__all__
__all__ += _second_order_optimizers.__all__
__all__ += _sign_optimizers.__all__
__all__ += _adaptive.__all__
__all__ += _clipping.__all__
__all__ += _decay.__all__
__all__ += _factored.__all__
__all__ += _finite.__all__
__all__ += _linesearch.__all__
__all__ += _moments.__all__
__all__ += _momentum.__all__
__all__ += _monitoring.__all__
__all__ += _noise.__all__
__all__ += _optimism.__all__
__all__ += _plateau.__all__
__all__ += _scaling.__all__
__all__ += _sign.__all__
__all__ += _stepsize.__all__
__all__ += _trust.__all__
__all__ += _wrappers.__all__
__all__ += _utilities.__all__
__all__.sort()

# Every gradtx pytree node, registered with jax.export (a step whose inputs or outputs
# hold a state can be serialized); last, once the modules that define them are loaded.
from gradtx import _export_serialization  # noqa: E402

_export_serialization.register()
