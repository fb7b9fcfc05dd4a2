"""optax.contrib: schedule-free SGD and AdamW, and differentially private SGD."""

from __future__ import annotations

__all__: list[str] = []
