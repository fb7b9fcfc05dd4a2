"""Strict JAX settings for every test and doctest (see STYLE.md point 8).

Strict dtype promotion catches a hyperparameter held in float64 leaking into
a float32 computation; rank promotion raising catches silent broadcasting.
"""

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
