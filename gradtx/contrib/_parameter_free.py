"""optax.contrib: optimizers that set their own step size: COCOB, D-Adaptation, Prodigy, Mechanic, DoG, DoWG, MoMo."""

from __future__ import annotations

__all__: list[str] = []
