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


_COMPILED = [0]


def _count_compile(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  if event.endswith("backend_compile_duration"):
    _COMPILED[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compile)


@pytest.fixture
def compiles():
  """``compiles(f, *args)``: how many XLA programs were compiled while ``f(*args)`` ran
  (its result made ready), and the result. Deterministic, unlike a time: an eager call that
  compiles its loop again at every call counts 1 or more at its second call."""
  def count(f, *args):
    before = _COMPILED[0]
    out = jax.block_until_ready(f(*args))
    return _COMPILED[0] - before, out
  return count
