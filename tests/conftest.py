"""Fixtures shared by the test modules of optax's namespaces (tree_utils, projections, ...)."""

import jax
import jax.numpy as jnp
import pytest


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
  """float32, then float64 with x64 enabled for the test's duration."""
  if request.param == "float64":
    with jax.enable_x64(True):
      yield jnp.float64
  else:
    yield jnp.float32


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def run(request):
  """``run(f, *args)``: ``f(*args)``, then ``jax.jit(f)(*args)``."""
  return (lambda f, *args: jax.jit(f)(*args)) if request.param else (lambda f, *args: f(*args))
