"""Primitives, one module per role; all are re-exported by :mod:`gradtx`.

optax gathers its wrappers and a few primitives under ``optax.transforms``
(``optax.transforms.masked``); the same names resolve here, as the objects of
gradtx's top level (``gtx.transforms.masked is gtx.masked``), so that code
written against that namespace runs after a change of import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# optax.transforms' names (optax 0.2.8) that gradtx has, at its top level.
_OPTAX_NAMES = frozenset({
    "AddNoiseState", "ApplyIfFiniteState", "ConditionallyMaskState", "MaskedNode",
    "ConditionallyTransformState", "EmaState", "MaskedState", "MonitorState", "MultiSteps",
    "MultiStepsState", "PartitionState", "SnapshotState", "TraceState", "ZeroNansState",
    "adaptive_grad_clip", "add_decayed_weights", "add_noise", "apply_if_finite", "chain",
    "clip", "clip_by_block_rms", "clip_by_global_norm", "conditionally_mask",
    "conditionally_transform", "ema", "freeze", "keep_params_nonnegative", "masked",
    "measure_with_ema", "monitor", "named_chain", "partition", "per_example_global_norm_clip",
    "per_example_layer_norm_clip", "selective_transform", "skip_large_updates",
    "skip_not_finite", "snapshot", "trace", "unitwise_clip", "unitwise_norm", "zero_nans"})


if TYPE_CHECKING:  # the same names for type checkers, which do not run __getattr__
  from gradtx import (AddNoiseState as AddNoiseState, ApplyIfFiniteState as ApplyIfFiniteState,
                      ConditionallyMaskState as ConditionallyMaskState,
                      ConditionallyTransformState as ConditionallyTransformState,
                      EmaState as EmaState, MaskedNode as MaskedNode, MaskedState as MaskedState,
                      MonitorState as MonitorState, MultiSteps as MultiSteps,
                      MultiStepsState as MultiStepsState, PartitionState as PartitionState,
                      SnapshotState as SnapshotState, TraceState as TraceState,
                      ZeroNansState as ZeroNansState, adaptive_grad_clip as adaptive_grad_clip,
                      add_decayed_weights as add_decayed_weights, add_noise as add_noise,
                      apply_if_finite as apply_if_finite, clip as clip,
                      clip_by_block_rms as clip_by_block_rms,
                      clip_by_global_norm as clip_by_global_norm,
                      conditionally_mask as conditionally_mask,
                      conditionally_transform as conditionally_transform, ema as ema,
                      freeze as freeze, keep_params_nonnegative as keep_params_nonnegative,
                      masked as masked, measure_with_ema as measure_with_ema, monitor as monitor,
                      named_chain as named_chain, partition as partition,
                      per_example_global_norm_clip as per_example_global_norm_clip,
                      per_example_layer_norm_clip as per_example_layer_norm_clip,
                      selective_transform as selective_transform,
                      skip_large_updates as skip_large_updates, skip_not_finite as skip_not_finite,
                      snapshot as snapshot, trace as trace, unitwise_clip as unitwise_clip,
                      unitwise_norm as unitwise_norm, zero_nans as zero_nans)
  # From its module: `from gradtx import chain` is, to mypy, the submodule gradtx.chain.
  from gradtx.chain import chain as chain


def __getattr__(name: str) -> Any:
  # Looked up when first read, not imported here: gradtx's top level imports
  # these modules, so it is not complete while this package loads.
  if name in _OPTAX_NAMES:
    import gradtx  # pylint: disable=import-outside-toplevel
    return getattr(gradtx, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | _OPTAX_NAMES)
