"""Primitives, one module per role; all are re-exported by :mod:`gradtx`.

optax gathers its wrappers and a few primitives under ``optax.transforms``
(``optax.transforms.masked``); the same names resolve here, as the objects of
gradtx's top level (``gtx.transforms.masked is gtx.masked``), so that code
written against that namespace runs after a change of import.
"""

from __future__ import annotations

from typing import Any

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


def __getattr__(name: str) -> Any:
  # Looked up when first read, not imported here: gradtx's top level imports
  # these modules, so it is not complete while this package loads.
  if name in _OPTAX_NAMES:
    import gradtx  # pylint: disable=import-outside-toplevel
    return getattr(gradtx, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | _OPTAX_NAMES)
