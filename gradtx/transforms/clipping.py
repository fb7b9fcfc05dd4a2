"""Clipping: bound the updates elementwise, per leaf, or as a whole tree."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import NONNEGATIVE, POSITIVE, GradientTransformation, ScalarOrSchedule, stateless
from gradtx.numerics import as_dtype

__all__ = ["clip", "clip_by_block_rms", "clip_by_global_norm"]


def clip(max_delta: ScalarOrSchedule) -> GradientTransformation:
  """Clips every entry to :math:`[-\\delta, \\delta]`.

  .. math:: u \\leftarrow \\operatorname{clip}(g, -\\delta, \\delta)

  Args:
    max_delta: :math:`\\delta \\ge 0`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.clip(1.0)
    >>> tx.update(jnp.array([-3.0, 0.5, 2.0]), tx.init(jnp.zeros(3)))[0]
    Array([-1. ,  0.5,  1. ], dtype=float32)
  """

  def clip(updates, params, max_delta):
    return tree.tree_map(
        lambda g: jnp.clip(g, -as_dtype(max_delta, g.dtype), as_dtype(max_delta, g.dtype)),
        updates)

  return stateless(clip, max_delta=(max_delta, NONNEGATIVE))


def clip_by_global_norm(max_norm: ScalarOrSchedule) -> GradientTransformation:
  """Rescales the whole tree so its global l2 norm is at most ``max_norm``.

  .. math::
    u \\leftarrow g \\cdot \\min\\!\\left(1, \\frac{c}{\\|g\\|_2}\\right), \\qquad
    \\|g\\|_2 = \\sqrt{\\textstyle\\sum_\\text{leaves} \\sum_i g_i^2}

  Matches ``torch.nn.utils.clip_grad_norm_`` up to torch's ``1e-6`` in the
  denominator.

  Args:
    max_norm: :math:`c > 0`.

  References:
    Pascanu, Mikolov & Bengio, *On the difficulty of training recurrent neural
    networks*, ICML 2013.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.clip_by_global_norm(1.0)
    >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
    {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
  """

  def clip_by_global_norm(updates, params, max_norm):
    g_norm = tree.global_norm(updates)
    c = as_dtype(max_norm, g_norm.dtype)
    # One factor for the whole tree, so each leaf's kernel is a single multiply. It is
    # 1 when nothing is clipped (c / |g| >= 1, inf for a zero norm); XLA may compute
    # c * rsqrt(|g|^2), one ulp below 1 for a norm within an ulp of c. A minimum, not
    # a select on |g| < c: each leaf's kernel reads one scalar instead of three, and
    # the division needs no kernel of its own (XLA instructions per leaf for adamw
    # with this clip, by callgrind over one compile: 26.0 M against 27.5 M).
    factor = jnp.minimum(jnp.ones_like(g_norm), c / g_norm)
    return tree.tree_map(lambda g: g * as_dtype(factor, g.dtype), updates)

  return stateless(clip_by_global_norm, max_norm=(max_norm, POSITIVE))


def clip_by_block_rms(threshold: ScalarOrSchedule) -> GradientTransformation:
  """Rescales each leaf so its root mean square is at most ``threshold``.

  .. math::
    u \\leftarrow \\frac{g}{\\max\\left(1, \\operatorname{rms}(g) / \\tau\\right)}, \\qquad
    \\operatorname{rms}(g) = \\sqrt{\\tfrac{1}{n}\\textstyle\\sum_i g_i^2}

  Args:
    threshold: :math:`\\tau > 0`.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.clip_by_block_rms(1.0)
    >>> tx.update(jnp.array([3.0, 3.0]), tx.init(jnp.zeros(2)))[0]
    Array([1., 1.], dtype=float32)
  """

  def clip_by_block_rms(updates, params, threshold):
    def clip_leaf(g, rms):
      rms = as_dtype(rms, g.dtype)
      return g / jnp.maximum(1, rms / as_dtype(threshold, g.dtype))

    return tree.tree_map(clip_leaf, updates, tree.block_rms(updates))

  return stateless(clip_by_block_rms, threshold=(threshold, POSITIVE))
