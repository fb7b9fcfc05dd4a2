"""optax.contrib: rules on each matrix as a whole: Muon, GaLore, per-leaf normalisation, complex parameters split into real and imaginary parts."""

from __future__ import annotations

__all__: list[str] = []
