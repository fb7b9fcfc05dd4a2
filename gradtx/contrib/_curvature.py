"""optax.contrib: rules that look at the loss surface: Sophia, Hutchinson's diagonal Hessian estimator, sharpness-aware minimisation (SAM)."""

from __future__ import annotations

__all__: list[str] = []
