"""optax.contrib: acprop, AdEMAMix and its simplified form, ADOPT, MADGRAD."""

from __future__ import annotations

__all__: list[str] = []
