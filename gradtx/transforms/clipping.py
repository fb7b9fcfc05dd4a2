"""Clipping: bound the updates elementwise, per unit, per leaf, or as a whole tree.

Also the per-example clipping of differentially private training
(:func:`per_example_global_norm_clip`, :func:`per_example_layer_norm_clip`),
which are functions of batched gradients rather than transformations, and
:func:`keep_params_nonnegative`, an elementwise bound on the updates set by
the parameters.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import (NONNEGATIVE, NONNEGATIVE_OR_INF, POSITIVE_OR_INF, GradientTransformation,
                         ScalarOrSchedule, check_axis, check_value, checks_flags, require_params,
                         stateless)
from gradtx.errors import StructureError
from gradtx.numerics import (as_dtype, as_float, compute_dtype, over_norm, real_dtype,
                             safe_sqrt, wide_abs_sq)

__all__ = ["adaptive_grad_clip", "clip", "clip_by_block_rms", "clip_by_global_norm",
           "keep_params_nonnegative", "per_example_global_norm_clip",
           "per_example_layer_norm_clip", "unitwise_clip", "unitwise_norm"]


def clip(max_delta: ScalarOrSchedule) -> GradientTransformation:
  """Clips every entry to :math:`[-\\delta, \\delta]`.

  .. math:: u \\leftarrow \\operatorname{clip}(g, -\\delta, \\delta)

  Defined for real updates: a complex leaf raises, naming its key path (complex
  numbers have no order; :func:`clip_by_block_rms` or :func:`clip_by_global_norm`
  bound a complex leaf by its modulus).

  Matches ``optax.clip`` on real updates.

  Args:
    max_delta: :math:`\\delta \\ge 0`; ``math.inf`` clips nothing.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.clip(1.0)
    >>> tx.update(jnp.array([-3.0, 0.5, 2.0]), tx.init(jnp.zeros(3)))[0]
    Array([-1. ,  0.5,  1. ], dtype=float32)
  """

  def clip(updates, params, max_delta):
    tree.check_real(updates, "clip")
    return tree.tree_map(
        lambda g: jnp.clip(g, -as_dtype(max_delta, g.dtype), as_dtype(max_delta, g.dtype)),
        updates)

  return stateless(clip, max_delta=(max_delta, NONNEGATIVE_OR_INF))


def clip_by_global_norm(max_norm: ScalarOrSchedule) -> GradientTransformation:
  """Rescales the whole tree so its global l2 norm is at most ``max_norm``.

  .. math::
    u \\leftarrow g \\cdot \\min\\!\\left(1, \\frac{c}{\\|g\\|_2}\\right), \\qquad
    \\|g\\|_2 = \\sqrt{\\textstyle\\sum_\\text{leaves} \\sum_i g_i^2}

  Matches ``torch.nn.utils.clip_grad_norm_`` up to torch's ``1e-6`` in the
  denominator.

  Matches ``optax.clip_by_global_norm``, also where the norm is not finite: a
  NaN entry makes every update NaN; an infinite entry makes the factor 0, so
  its own update is NaN (:math:`\\infty \\cdot 0`) and every other 0. A
  float32 tree whose sum of squares overflows (:math:`\\|g\\|_2` beyond
  float32's :math:`1.8 \\cdot 10^{19}`, :math:`\\sqrt{3.4 \\cdot 10^{38}}`)
  has an infinite norm too, and its update is 0 everywhere: a skipped step,
  not a clipped one. (Rescaling by the largest entry first would keep its
  direction, at the cost of a second pass over the gradients at every step.)
  16-bit leaves are squared in float32, so they never overflow.

  Args:
    max_norm: :math:`c > 0`; ``math.inf`` clips nothing (so a config can switch
      clipping off without editing the chain).

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
    # over_norm: jax.jvp of the step at zero gradients was NaN through c / 0.
    factor = jnp.minimum(jnp.ones_like(g_norm), over_norm(c, g_norm))

    def clip(g):
      # The product in the factor's float32 (or wider), as unitwise_clip's: a float16
      # factor below 6.1e-5 is subnormal, and a tree clipped from norm 5e4 to 1 came out
      # with norm 1.0016. A float32 or wider leaf is multiplied as it is.
      work = compute_dtype(g, factor)
      return as_dtype(as_dtype(g, work) * as_dtype(factor, work), g.dtype)

    return tree.tree_map(clip, updates)

  return stateless(clip_by_global_norm, max_norm=(max_norm, POSITIVE_OR_INF))


def clip_by_block_rms(threshold: ScalarOrSchedule) -> GradientTransformation:
  """Rescales each leaf so its root mean square is at most ``threshold``.

  .. math::
    u \\leftarrow \\frac{g}{\\max\\left(1, \\operatorname{rms}(g) / \\tau\\right)}, \\qquad
    \\operatorname{rms}(g) = \\sqrt{\\tfrac{1}{n}\\textstyle\\sum_i g_i^2}

  Matches ``optax.clip_by_block_rms``.

  Args:
    threshold: :math:`\\tau > 0`; ``math.inf`` clips nothing.

  References:
    Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost*, ICML 2018 (update clipping, §6).

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

  return stateless(clip_by_block_rms, threshold=(threshold, POSITIVE_OR_INF))


# ----------------------------------------------------------------------------
# Unit-wise clipping (NFNets).


def _unit_axes(x: jax.Array, axis: int | tuple[int, ...] | None,
               where: str = "adaptive_grad_clip") -> int | tuple[int, ...] | None:
  """The axes a unit's norm sums over, as optax's ``unitwise_norm`` picks them.

  ``None`` means the whole array: scalars, vectors and arrays with at most one
  axis longer than 1. Rank 2 and 3 (a linear layer ``(in, out)`` or a
  multi-head one) sum over axis 0, rank 4 (a conv kernel HWIO) over the
  first three axes, rank 5 (Conv3D DHWIO) over the first four.
  """
  if axis is not None:
    return axis
  if sum(d != 1 for d in x.shape) <= 1:  # jnp.squeeze(x).ndim <= 1
    return None
  if x.ndim in (2, 3):
    return 0
  if x.ndim in (4, 5):
    return tuple(range(x.ndim - 1))
  raise StructureError(
      f"{where}: a leaf of shape {x.shape} has no default unit; the defaults cover "
      "ranks 0 to 5: pass axis= to say which axes a unit's norm sums over")


def _unitwise_norm(x: jax.Array, axis: int | tuple[int, ...] | None,
                   where: str = "adaptive_grad_clip") -> jax.Array:
  """The l2 norm of each unit of ``x``, broadcastable against it (float32 or wider).

  Its derivative at a zero unit is 0 (:func:`gradtx.numerics.safe_sqrt`): AGC's floor
  :math:`\\max(\\|\\theta_i\\|, \\epsilon)` is flat at a zero-initialised bias, and
  ``jnp.sqrt``'s infinite slope there, times the zero that the max sends back, made the
  gradient through a step with respect to that bias NaN (as optax's is).
  """
  return safe_sqrt(jnp.sum(wide_abs_sq(x), axis=_unit_axes(x, axis, where), keepdims=True))


def unitwise_norm(x: jax.typing.ArrayLike,
                  axis: int | tuple[int, ...] | None = None) -> jax.Array:
  """The l2 norm of each unit of ``x``, broadcast to ``x``'s shape.

  .. math:: n_i = \\|x_i\\|_2 \\text{ for every entry of unit } i

  Units as :func:`adaptive_grad_clip` takes them (optax's rule): a scalar, a
  vector or an array with at most one axis longer than 1 is one unit; rank 2
  and 3 sum over axis 0, rank 4 over axes (0, 1, 2), rank 5 over (0, 1, 2, 3).
  The squares are summed in float32 at least (float64 for float64 ``x``),
  and the norm is returned in ``x``'s real dtype (optax sums in ``x``'s).

  Args:
    x: an array (complex allowed: :math:`|x|^2` is summed).
    axis: the axis or axes a unit's norm sums over; ``None`` (the default)
      picks them by rank as above.

  Raises:
    StructureError: ``x`` has rank 6 or more and no ``axis`` was given.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> gtx.transforms.unitwise_norm(jnp.array([[3.0, 0.0], [4.0, 1.0]]))
    Array([[5., 1.],
           [5., 1.]], dtype=float32)
  """
  check_axis("unitwise_norm", axis)
  x = jnp.asarray(x)
  norm = _unitwise_norm(x, axis, "unitwise_norm")
  return jnp.broadcast_to(norm, x.shape).astype(real_dtype(x.dtype))


def unitwise_clip(g_norm: jax.typing.ArrayLike, max_norm: jax.typing.ArrayLike,
                  grad: jax.typing.ArrayLike, div_eps: jax.typing.ArrayLike = 1e-6) -> jax.Array:
  """``grad`` where its unit's norm is below ``max_norm``, else scaled down to it.

  .. math::
    u = \\begin{cases} g & \\|g\\| < m \\\\
      g\\, m / \\max(\\|g\\|, \\epsilon_\\text{div}) & \\text{otherwise} \\end{cases}

  The factor is formed in the norms' dtype and applied in ``grad``'s (a
  complex gradient keeps its phase); the result is in ``grad``'s dtype.

  Matches ``optax.transforms.unitwise_clip``.

  Args:
    g_norm: the units' norms (:func:`unitwise_norm` of ``grad``), of
      ``grad``'s shape or broadcastable to it with the same rank.
    max_norm: the largest norm allowed per unit, shaped as ``g_norm``.
    grad: the gradient to clip.
    div_eps: :math:`\\epsilon_\\text{div}`, default 1e-6: a floor on the
      divisor that only keeps a division by zero out of the branch
      ``jnp.where`` discards.

  Raises:
    StructureError: ``g_norm`` or ``max_norm`` has another rank than ``grad``,
      or an axis neither of ``grad``'s length nor 1.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> g = jnp.array([3.0, 4.0])
    >>> gtx.transforms.unitwise_clip(gtx.transforms.unitwise_norm(g), jnp.full(2, 1.0), g)
    Array([0.6, 0.8], dtype=float32)
  """
  g_norm, max_norm, grad = jnp.asarray(g_norm), jnp.asarray(max_norm), jnp.asarray(grad)
  for name, norm in (("g_norm", g_norm), ("max_norm", max_norm)):
    if norm.ndim != grad.ndim or any(n not in (1, d) for n, d in zip(norm.shape, grad.shape)):
      # Not "does not broadcast": a (3,) norm broadcasts to a (2, 3) grad, and was refused
      # by a message saying it does not.
      raise StructureError(f"unitwise_clip: {name} of shape {norm.shape} must have grad's "
                           f"rank, {grad.ndim}, and each axis of grad's length or 1 (grad has "
                           f"shape {grad.shape}; unitwise_norm gives such norms)")
  dtype = compute_dtype(g_norm, max_norm)
  g_norm, max_norm = as_dtype(g_norm, dtype), as_dtype(max_norm, dtype)
  factor = max_norm / jnp.maximum(g_norm, as_dtype(div_eps, dtype))
  work = compute_dtype(grad, factor)  # complex stays complex
  clipped = as_dtype(as_dtype(grad, work) * as_dtype(factor, work), grad.dtype)
  return jnp.where(g_norm < max_norm, grad, clipped)


# optax's floor on the gradient norm in the clipped branch (unitwise_clip's div_eps).
_DIV_EPS = 1e-6


def adaptive_grad_clip(clipping: ScalarOrSchedule, eps: ScalarOrSchedule = 1e-3,
                       axis: int | tuple[int, ...] | None = None) -> GradientTransformation:
  """Clips each unit's update to at most ``clipping`` times its parameter's norm (AGC).

  .. math::
    u_i = \\begin{cases}
      g_i & \\|g_i\\| < \\lambda \\max(\\|\\theta_i\\|, \\epsilon) \\\\
      g_i\\, \\dfrac{\\lambda \\max(\\|\\theta_i\\|, \\epsilon)}{\\max(\\|g_i\\|, 10^{-6})}
        & \\text{otherwise}
    \\end{cases}

  where :math:`i` runs over the *units* of each leaf and :math:`\\|\\cdot\\|`
  is a unit's l2 norm, as optax's ``unitwise_norm`` defines them: a scalar, a
  vector or an array with at most one axis longer than 1 is one unit; a
  matrix ``(in, out)`` or a rank-3 multi-head kernel has a unit per trailing
  index (the norm sums over axis 0); a rank-4 conv kernel (HWIO) or a rank-5
  one (DHWIO) has a unit per output channel (the norm sums over every axis
  but the last). Other ranks need ``axis``.

  Norms are accumulated in float32 (float64 for float64 leaves), so bfloat16
  leaves are clipped by accurate norms; optax sums in the leaf's dtype.

  Args:
    clipping: :math:`\\lambda \\ge 0`, the largest allowed ratio of a unit's
      update norm to its parameter norm (0.01 in the paper's large-batch runs).
    eps: :math:`\\epsilon \\ge 0`, default 1e-3: the floor on the parameter
      norm, so that zero-initialised parameters still move.
    axis: the axis or axes a unit's norm sums over, for every leaf; ``None``
      (the default) picks them by rank as above. Structural.

  References:
    Brock, De, Smith & Simonyan, *High-Performance Large-Scale Image
    Recognition Without Normalization*, ICML 2021.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.adaptive_grad_clip(0.1)
    >>> params = jnp.array([3.0, 4.0])                     # norm 5: updates up to 0.5
    >>> tx.update(jnp.array([0.0, 1.0]), tx.init(params), params)[0]
    Array([0. , 0.5], dtype=float32)
  """

  check_axis("adaptive_grad_clip", axis)

  def adaptive_grad_clip(updates, params, clipping, eps):
    params = require_params("adaptive_grad_clip", params)
    if axis is None:  # name the key path of a leaf with no default unit, before tracing it
      for path, g in jax.tree_util.tree_flatten_with_path(updates, is_leaf=tree.is_masked)[0]:
        if isinstance(g, jax.Array):  # a packed buffer's leaves are 1-D and pass
          _unit_axes(g, None, f"adaptive_grad_clip: at key path {tree.keystr(path)}")

    def clip_leaf(g, p):
      g_norm, p_norm = _unitwise_norm(g, axis), _unitwise_norm(p, axis)
      dtype = compute_dtype(g_norm, p_norm)  # float64 if either leaf is
      max_norm = as_dtype(clipping, dtype) * jnp.maximum(as_dtype(p_norm, dtype),
                                                         as_dtype(eps, dtype))
      return (unitwise_clip(as_dtype(g_norm, dtype), max_norm, g, _DIV_EPS),)

    return tree.map_leaves(clip_leaf, (True,), updates, params)[0]

  # clipping is finite, unlike the other clips' thresholds: the bound is clipping times a
  # norm that is 0 for a zero unit with eps=0, and inf * 0 would step by NaN.
  tx = stateless(adaptive_grad_clip, clipping=(clipping, NONNEGATIVE), eps=(eps, NONNEGATIVE))
  tx.options["axis"] = axis
  return tx


# ----------------------------------------------------------------------------
# Per-example clipping (differential privacy): functions of batched gradients.


def _batch_size(grads: Any, where: str) -> int:
  """The size of axis 0, shared by every leaf; raises naming the first leaf without it."""
  leaves = jax.tree_util.tree_flatten_with_path(grads)[0]
  if not leaves:
    raise StructureError(f"{where}: grads has no leaves")
  shapes = [(tree.keystr(path), jnp.shape(g)) for path, g in leaves]
  first, first_shape = shapes[0]
  for key, shape in shapes:
    if not shape or shape[0] != first_shape[0]:
      # A leaf without axis 0 is named alone (the first leaf compared with itself read
      # "the leaf at ['a'] has shape () and the one at ['a'] has shape ()").
      found = (f"the leaf at {key} has shape () (no axis 0)" if not shape else
               f"the leaf at {key} has shape {shape} and the one at {first} has shape "
               f"{first_shape}")
      raise StructureError(
          f"{where}: every leaf of grads needs a batch dimension on axis 0, of one size "
          f"(per-example gradients, as jax.vmap(jax.grad(loss)) gives); {found}")
  return first_shape[0]


def _example_sum_squares(g: jax.Array) -> jax.Array:
  """Per example (axis 0), the sum of squares of the rest (float32 or wider)."""
  # The size of the rest given: reshape(0, -1) cannot infer it (ZeroDivisionError).
  return jnp.sum(wide_abs_sq(g).reshape(g.shape[0], math.prod(g.shape[1:])), axis=1)


def _clip_multipliers(sum_squares: jax.Array, clip: Any) -> tuple[jax.Array, jax.Array]:
  """Per example, :math:`\\min(1, c / \\|g\\|)` (1 where undefined) and how many are below 1.

  1 where optax's ``nan_to_num(min(c / norm, 1), nan=1)`` gives 1: a zero, NaN
  or (with an infinite ``c``) infinite norm. The norm's square root is taken of
  a positive value only, so the gradient of the result is finite everywhere
  (optax's is NaN at an example whose gradient is zero).
  """
  positive = sum_squares > 0
  norm = jnp.sqrt(jnp.where(positive, sum_squares, jnp.ones_like(sum_squares)))
  clip = as_dtype(clip, norm.dtype)
  clipped = positive & (clip / norm < 1)  # optax's test, so the counts agree at ties
  one = jnp.ones_like(norm)
  # The ratio again, from a finite clip where it is not used: the derivative of
  # inf / norm (times the zero that the where sends back) would be NaN.
  multipliers = jnp.where(clipped, jnp.where(clipped, clip, one) / norm, one)
  return multipliers, jnp.sum(clipped, dtype=jnp.int32)


def _weighted_sum(multipliers: jax.Array, g: jax.Array) -> jax.Array:
  """:math:`\\sum_b m_b g_b`, returned in ``g``'s dtype.

  Summed in the multipliers' float32 (or wider), as optax's promotion does: a float16
  multiplier below 6.1e-5 is subnormal, and a float16 batch clipped to norm 0.01 from
  norms up to 5e4 came out 5% off. A ``g`` as wide as the multipliers is summed as it is.
  """
  work = compute_dtype(g, multipliers)
  return as_dtype(jnp.tensordot(as_dtype(multipliers, work), as_dtype(g, work), axes=1), g.dtype)


def per_example_global_norm_clip(grads: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
  """Clips each example's gradient to global l2 norm ``l2_norm_clip`` and sums them.

  .. math::
    \\bar g = \\sum_{b=1}^{B} g_b \\min\\!\\left(1, \\frac{C}{\\|g_b\\|}\\right),
    \\qquad \\|g_b\\| = \\sqrt{\\textstyle\\sum_\\text{leaves} \\sum_i g_{b,i}^2}

  The clipping of DP-SGD. Every leaf of ``grads`` holds per-example
  gradients on axis 0 (of one batch size :math:`B`). An example whose norm is
  0, NaN, or infinite while :math:`C` is too, is not clipped (factor 1), as
  in optax. Norms are accumulated in float32 or wider.

  Unlike optax's, the result's gradient (with respect to ``grads``) is finite
  where an example's gradient is zero.

  Args:
    grads: a pytree of per-example gradients, each leaf of shape ``(B, ...)``.
    l2_norm_clip: :math:`C \\ge 0`, the largest norm an example keeps (``inf``
      clips nothing).

  Returns:
    ``(clipped_sum, num_clipped)``: the sum over the batch of the clipped
    per-example gradients (a pytree like ``grads`` without the batch axis)
    and the number of examples whose factor was below 1 (int32).

  References:
    Abadi et al., *Deep Learning with Differential Privacy*, CCS 2016.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> grads = [jnp.array([[0.0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
    >>> gtx.per_example_global_norm_clip(grads, 1.25)
    ([Array([1.75, 1.75, 1.75], dtype=float32)], Array(3, dtype=int32))
  """
  where = "per_example_global_norm_clip"
  check_value(where, "l2_norm_clip", l2_norm_clip, NONNEGATIVE_OR_INF)
  _batch_size(grads, where)
  grads = jax.tree.map(as_float, grads)
  totals = [_example_sum_squares(g) for g in jax.tree.leaves(grads)]
  dtype = compute_dtype(*totals)  # float64 if any leaf is
  sum_squares = sum((t.astype(dtype) for t in totals[1:]), totals[0].astype(dtype))
  multipliers, num_clipped = _clip_multipliers(sum_squares, l2_norm_clip)
  return jax.tree.map(lambda g: _weighted_sum(multipliers, g), grads), num_clipped


@checks_flags
def per_example_layer_norm_clip(grads: Any, global_l2_norm_clip: Any,
                                uniform: bool = True) -> tuple[Any, Any]:
  """Clips each example's gradient leaf by leaf (per layer) and sums them.

  .. math::
    \\bar g^{(k)} = \\sum_{b=1}^{B} g^{(k)}_b
      \\min\\!\\left(1, \\frac{C_k}{\\|g^{(k)}_b\\|}\\right), \\qquad
    C_k = \\begin{cases} C / \\sqrt{K} & \\text{uniform} \\\\
      C \\sqrt{D_k / D} & \\text{otherwise} \\end{cases}

  for each of the :math:`K` leaves :math:`k` (layers) with :math:`D_k`
  parameters per example, :math:`D = \\sum_k D_k`. Either way
  :math:`\\sum_k C_k^2 = C^2`, so the clipped example's global norm is at most
  :math:`C`. With one leaf this is :func:`per_example_global_norm_clip`.

  Matches ``optax.per_example_layer_norm_clip``.

  Args:
    grads: a pytree of per-example gradients, each leaf of shape ``(B, ...)``.
    global_l2_norm_clip: :math:`C \\ge 0`, the overall clip norm (``inf`` clips
      nothing).
    uniform: every layer gets :math:`C/\\sqrt{K}` (default), or a share
      proportional to the square root of its size.

  Returns:
    ``(clipped_sums, num_clipped)``: two pytrees like ``grads``, the first of
    per-layer sums over the batch, the second of the number of examples
    clipped in each layer (int32).

  References:
    McMahan, Ramage, Talwar & Zhang, *Learning Differentially Private
    Recurrent Language Models*, ICLR 2018.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> grads = {"a": jnp.array([[3.0], [0.5]]), "b": jnp.array([[4.0], [0.5]])}
    >>> sums, clipped = gtx.per_example_layer_norm_clip(grads, 2 ** 0.5)  # C_k = 1
    >>> sums, clipped
    ({'a': Array([1.5], dtype=float32), 'b': Array([1.5], dtype=float32)}, {'a': Array(1, dtype=int32), 'b': Array(1, dtype=int32)})
  """
  where = "per_example_layer_norm_clip"
  check_value(where, "global_l2_norm_clip", global_l2_norm_clip, NONNEGATIVE_OR_INF)
  _batch_size(grads, where)
  grads = jax.tree.map(as_float, grads)
  leaves = jax.tree.leaves(grads)
  total = sum(math.prod(g.shape[1:]) for g in leaves)

  def clip_layer(g):
    sum_squares = _example_sum_squares(g)
    share = 1.0 / len(leaves) if uniform else math.prod(g.shape[1:]) / total
    clip = as_dtype(global_l2_norm_clip, sum_squares.dtype) * math.sqrt(share)
    multipliers, num_clipped = _clip_multipliers(sum_squares, clip)
    return _weighted_sum(multipliers, g), num_clipped

  pairs = jax.tree.map(clip_layer, grads)
  outer = jax.tree.structure(grads)
  return jax.tree.transpose(outer, jax.tree.structure((0, 0)), pairs)


# ----------------------------------------------------------------------------
# Constraints on the parameters.


def keep_params_nonnegative() -> GradientTransformation:
  """Clips each update so that the parameter it moves stays at 0 or above.

  .. math::
    u = \\begin{cases} -\\theta & \\theta + g < 0 \\\\ g & \\text{otherwise} \\end{cases}

  an elementwise lower bound :math:`u \\ge -\\theta` on the updates: after
  :func:`gradtx.apply_updates`, :math:`\\theta + u \\ge 0`. Put it last in a
  chain, after the learning rate, since it bounds the final update. A
  parameter that is already negative is moved to 0 by the next update that
  does not raise it above 0.

  Matches ``optax.keep_params_nonnegative``.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.keep_params_nonnegative()
    >>> params = jnp.array([1.0, 0.5, 2.0])
    >>> tx.update(jnp.array([-2.0, 0.25, -1.0]), tx.init(params), params)[0]
    Array([-1.  ,  0.25, -1.  ], dtype=float32)
  """

  def keep_params_nonnegative(updates, params):
    params = require_params("keep_params_nonnegative", params)

    def bound(u, p):
      dtype = compute_dtype(u, p)
      p_, u_ = as_dtype(p, dtype), as_dtype(u, dtype)
      return as_dtype(jnp.where(p_ + u_ < 0, -p_, u_), u.dtype)

    return tree.tree_map(bound, updates, params)

  return stateless(keep_params_nonnegative)
