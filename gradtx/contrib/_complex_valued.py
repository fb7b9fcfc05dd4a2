"""optax.contrib: complex parameters split into real and imaginary parts.

:func:`split_real_and_imaginary` runs an optimizer on each complex leaf as a
pair of real leaves, so that its statistics are kept per part.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import GradientTransformation, as_transformation, check_state
from gradtx.errors import StructureError
from gradtx.packed import Packed

__all__ = ["SplitRealAndImaginaryState", "split_real_and_imaginary"]


class SplitRealAndImaginaryArrays(NamedTuple):
  """A complex leaf as the pair of real arrays the inner transformation sees."""
  real: jax.Array
  imaginary: jax.Array


class SplitRealAndImaginaryState(NamedTuple):
  """State of :func:`split_real_and_imaginary`: the inner transformation's state."""
  inner_state: Any


def _split(x: Any) -> Any:
  if isinstance(x, Packed):
    complex_buffers = [k for k, v in x.buffers.items() if jnp.iscomplexobj(v)]
    if complex_buffers:
      raise StructureError(
          f"split_real_and_imaginary: a packed tree with complex buffers {complex_buffers} "
          "cannot be split; run it on the tree, or pack real and imaginary parts as leaves")
    return x
  return tree.tree_map(
      lambda v: SplitRealAndImaginaryArrays(v.real, v.imag) if jnp.iscomplexobj(v) else v, x)


def _merge(x: Any) -> Any:
  pair = lambda v: isinstance(v, SplitRealAndImaginaryArrays)  # noqa: E731
  return jax.tree.map(lambda v: jax.lax.complex(v.real, v.imaginary) if pair(v) else v, x,
                      is_leaf=lambda v: pair(v) or tree.is_masked(v))


def split_real_and_imaginary(inner: GradientTransformation) -> GradientTransformation:
  """Runs ``inner`` on complex leaves as pairs of real leaves (real part, imaginary part).

  .. math::
    (u^\\text{re}, u^\\text{im}) = \\text{inner}(\\operatorname{Re} g, \\operatorname{Im} g),
    \\qquad u = u^\\text{re} + i\\, u^\\text{im}

  so an optimizer treats a complex parameter as two real ones: Adam's second
  moment is kept per part, not of :math:`|g|^2`. Real leaves pass to
  ``inner`` unchanged. Note that ``jax.grad`` of a real loss gives the
  conjugate of the direction of steepest ascent: conjugate the gradients
  before ``update`` (optax issue 196).

  Args:
    inner: the transformation (a gradtx or optax one).

  References:
    optax's ``split_real_and_imaginary`` (same semantics).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.split_real_and_imaginary(gtx.sign_sgd(0.1))
    >>> params = jnp.array([1.0 + 1.0j])
    >>> tx.update(jnp.array([2.0 - 0.5j]), tx.init(params), params)[0]
    Array([-0.1+0.1j], dtype=complex64)
  """
  inner = as_transformation(inner, "split_real_and_imaginary", "inner")

  def init(params):
    return SplitRealAndImaginaryState(inner.init(_split(params)))

  def update(updates, state, params=None, **extra):
    check_state("split_real_and_imaginary", state, SplitRealAndImaginaryState)
    new, inner_state = inner.update(_split(updates), state.inner_state,
                                    None if params is None else _split(params), **extra)
    return _merge(new), SplitRealAndImaginaryState(inner_state)

  return GradientTransformation(init, update, name="split_real_and_imaginary",
                                options={"inner": inner})
