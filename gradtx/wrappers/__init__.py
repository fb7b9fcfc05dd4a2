"""Wrappers: transformations that run other transformations on some leaves or some steps.

Design note. A wrapper's state keeps the wrapped transformation's state in a
field (``inner_state``; ``fast_state`` for :func:`lookahead`; one state per
label in a :class:`~gradtx.ChainState` ``inner_states`` for :func:`partition`).
The hyperparameter walk passes through these fields, so a wrapped stage's
hyperparameters read under the wrapper's stage name (``"safe.adam.b1"``,
``"opt.no_decay.lr.learning_rate"``), next to the wrapper's own numeric
arguments (``"safe.max_consecutive_errors"``).

Masks. :func:`masked`, :func:`partition` and :func:`freeze` hide leaves from
the transformations they wrap by putting a :class:`~gradtx.tree.MaskedNode`
in their place, so those keep no state for them. A callable mask (or
``param_labels``) is always called on real parameters: when masked wrappers
nest, the inner one's callable sees the unmasked tree the outermost wrapper
received, never a tree holding ``MaskedNode``. (The outer wrapper publishes
that tree for the duration of its inner call; it is a trace-time detail and
never reaches the compiled step.)
"""

from __future__ import annotations

# One private module per role; this namespace re-exports their public names. The
# imports follow the roles' order: hiding leaves, groups of parameters, steps that
# may not happen, steps chosen by the step count, lookahead, snapshots.
from gradtx.wrappers._masking import MaskedState, freeze, masked, set_to_zero
from gradtx.wrappers._partition import (PartitionState, multi_transform, partition,
                                        selective_transform)
from gradtx.wrappers._steps import (ApplyEvery, ApplyIfFiniteState, MultiSteps, MultiStepsState,
                                    apply_every, apply_if_finite, multi_steps)
from gradtx.wrappers._conditional import (ConditionallyMaskState, ConditionallyTransformState,
                                          conditionally_mask, conditionally_transform)
from gradtx.wrappers._lookahead import LookaheadParams, LookaheadState, lookahead
from gradtx.wrappers._snapshot import SnapshotState, snapshot

__all__ = ["ApplyEvery", "ApplyIfFiniteState", "ConditionallyMaskState",
           "ConditionallyTransformState", "LookaheadParams", "LookaheadState", "MaskedState",
           "MultiSteps", "MultiStepsState", "PartitionState", "SnapshotState", "apply_every",
           "apply_if_finite", "conditionally_mask", "conditionally_transform", "freeze",
           "lookahead", "masked", "multi_steps", "multi_transform", "partition",
           "selective_transform", "set_to_zero", "snapshot"]
