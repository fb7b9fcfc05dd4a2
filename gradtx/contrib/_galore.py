"""optax.contrib: GaLore, the base optimizer run on gradients projected to a low-rank subspace.

GaLore projects each matrix's gradient onto its leading singular vectors and
keeps the base optimizer's moments in that low-rank space, shaped unlike the
params: it runs on trees, not packed.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.chain import Chain, named_chain
from gradtx.contrib._common import (GaLoreDimensionNumbers, GaLoreDimNumsOrFn, _dims_by_rank,
                                    _is_dims, _leaves_and_dims, _matrices_2d, _matrix_axes)
from gradtx.core import (ANY, POSITIVE_INT, GradientTransformation, HParams, HParamSpec,
                         ScalarOrSchedule, as_transformation, branch, check_state, check_value,
                         names_its_arguments)
from gradtx.errors import StructureError
from gradtx.numerics import as_dtype, compute_dtype, safe_increment, zero_count
from gradtx.packed import Packed
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.moments import scale_by_adam
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["GaLoreState", "galore", "scale_by_galore"]


class GaLoreState(NamedTuple):
  """State of :func:`scale_by_galore`.

  ``base_optimizer_state`` is the base optimizer's state on the low-rank
  gradients (the full ones for leaves that are not projected); ``projector``
  holds each projected leaf's :math:`P` (a (0, 0) array for the others).
  """
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  base_optimizer_state: Any
  projector: Any
  hparams: HParams


def _galore_dims(spec: GaLoreDimNumsOrFn | None) -> GaLoreDimNumsOrFn:
  """optax's resolution: None projects the 2-D leaves; one spec, every leaf of rank >= 2."""
  if spec is None:
    return functools.partial(_matrices_2d, dims=GaLoreDimensionNumbers())
  if _is_dims(spec):
    return functools.partial(_dims_by_rank, dims=spec, wanted=lambda ndim: ndim >= 2)
  return spec


def _galore_geometry(stage: str, shape: tuple[int, ...], dims: GaLoreDimensionNumbers,
                     rank: int) -> tuple[tuple[int, ...], int, int, int, bool]:
  """(axis order, m, n, effective rank, left): the leaf as an m x n matrix."""
  batch, reduction, output = _matrix_axes(stage, shape, dims)
  if batch:
    raise StructureError(f"{stage}: {dims} for a leaf of shape {shape} leaves axes {batch} "
                         "out; GaLore needs every axis in the reduction or output axes")
  m, n = math.prod(shape[a] for a in reduction), math.prod(shape[a] for a in output)
  # The smaller side is reduced (Zhao et al., Algorithm 2: the left projector for m <= n).
  return reduction + output, m, n, min(rank, m, n), m <= n


class _Plan(NamedTuple):
  """How one leaf is projected: the leaf as an m x n matrix ``G`` (its axes put in
  ``order``), the effective rank, and whether the projector acts on the left (m <= n)."""
  G: jax.Array
  order: tuple[int, ...]
  rank: int
  left: bool


def _plan(stage: str, g: jax.Array, dims: GaLoreDimensionNumbers, rank: int) -> _Plan:
  order, m, n, r, left = _galore_geometry(stage, g.shape, dims, rank)
  return _Plan(g.transpose(order).reshape(m, n), order, r, left)


def _project(P: jax.Array, x: jax.Array, left: bool) -> jax.Array:
  """:math:`P^\\top x` (``left``) or :math:`x P`, in the wider of the two dtypes: gradients
  and the projector (the params' dtype) may differ (bfloat16 params, float32 gradients)."""
  dtype = compute_dtype(P, x)
  P, x = as_dtype(P, dtype), as_dtype(x, dtype)
  return P.T @ x if left else x @ P


def scale_by_galore(rank: int = 128, update_proj_gap: int = 200, scale: ScalarOrSchedule = 1.0,
                    base_optimizer: GradientTransformation | None = None,
                    weight_dimension_numbers: GaLoreDimNumsOrFn | None = None
                    ) -> GradientTransformation:
  """GaLore: the base optimizer run on gradients projected to a low-rank subspace.

  For a projected leaf, as an :math:`m \\times n` matrix :math:`G_t` with
  :math:`m \\le n` (otherwise the same on the right: :math:`P_t = V_{:, :r}`,
  :math:`R_t = G_t P_t`, :math:`u_t = \\alpha \\tilde R_t P_t^\\top`),

  .. math::
    P_t = \\begin{cases} U_{:, :r} \\text{ of } G_t = U S V^\\top &
      t \\equiv 0 \\pmod T \\\\ P_{t-1} & \\text{otherwise} \\end{cases}, \\quad
    R_t = P_t^\\top G_t, \\quad \\tilde R_t = \\text{base}(R_t), \\quad
    u_t = \\alpha P_t \\tilde R_t

  with :math:`t = 0, 1, \\dots` the number of earlier steps, :math:`r` =
  ``min(rank, m, n)``, :math:`T` = ``update_proj_gap`` and :math:`\\alpha` =
  ``scale``. The smaller side is reduced to :math:`r`, as in the paper's
  Algorithm 2 and the authors' code (its default ``proj_type="std"``): the
  projector is :math:`\\min(m, n) \\times r` and the moments are
  :math:`r \\times n` or :math:`m \\times r`. The base optimizer's moments
  live in that space (and carry over when :math:`P` is refreshed). Leaves
  that are not projected go through the base optimizer as they are.

  Args:
    rank: the target rank :math:`r \\ge 1` (an int), default 128. Structural:
      it fixes the moments' shapes.
    update_proj_gap: :math:`T \\ge 1`, default 200 (held in the state).
    scale: :math:`\\alpha`, default 1.
    base_optimizer: a transformation that does not read the params (it sees
      low-rank arrays), default :func:`gradtx.scale_by_adam`.
    weight_dimension_numbers: which leaves are projected and which axes form
      their matrix: None (the default) projects the 2-D leaves; one
      :class:`GaLoreDimensionNumbers` applies to every leaf of rank >= 2; or
      a tree of them (None for a leaf left out), or a callable of the params
      returning one.

  Differs from optax 0.2.8, which reduces the *larger* side of a matrix that
  is not square (the left projector for :math:`m \\ge n`: the authors'
  ``proj_type="reverse_std"``), against the paper's Algorithm 2 and the
  authors' default; both reduce the same side of a square matrix. The
  low-rank gradient is then another matrix (Adam's elementwise normalisation
  sees other entries), so the steps differ beyond rounding, and so do the
  shapes of the projector and moments. In the SVD's precision too: float64 for float64
  gradients (optax always takes it in float32). The projector's columns are
  singular vectors, whose signs LAPACK chooses; an elementwise base rule that
  is odd in the gradient (Adam's) gives a step that does not depend on them
  between refreshes. GaLore does not run on a packed tree: its moments are
  shaped unlike the params. The projection is for real matrices: a complex leaf
  it would project raises (one it passes through goes to the base as it is).

  References:
    Zhao et al., *GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
    Projection*, ICML 2024.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_galore(rank=2)
    >>> state = tx.init({"w": jnp.ones((6, 4)), "b": jnp.ones(4)})
    >>> state.projector["w"].shape, state.base_optimizer_state.mu["w"].shape
    ((4, 2), (6, 2))
  """
  stage = "scale_by_galore"
  if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool):
    raise TypeError(f"{stage}: rank must be an int, got {type(rank).__name__}")
  check_value(stage, "rank", rank, POSITIVE_INT)
  base = as_transformation(scale_by_adam() if base_optimizer is None else base_optimizer,
                           stage, "base_optimizer")
  spec = HParamSpec(stage, update_proj_gap=(update_proj_gap, POSITIVE_INT),
                    scale=(scale, ANY))

  def no_packed(x):
    if isinstance(x, Packed):
      raise StructureError(f"{stage}: GaLore does not run on a packed tree (its moments are "
                           "low-rank, shaped unlike the params); run it on the tree")

  dims_spec = _galore_dims(weight_dimension_numbers)

  def check_projected_real(leaves, dims, treedef):
    """The SVD projection is for real matrices: a complex leaf it would project raises."""
    projected = [p if d is not None and not tree.is_masked(p) else None
                 for p, d in zip(leaves, dims)]
    tree.check_real(jax.tree.unflatten(treedef, projected), stage)

  def init(params):
    no_packed(params)
    if tree.is_params_placeholder(params):
      return GaLoreState(zero_count(), base.init(params), params, spec.init())
    leaves, dims, treedef = _leaves_and_dims(stage, dims_spec, params)
    check_projected_real(leaves, dims, treedef)
    projectors, proxies = [], []
    for p, d in zip(leaves, dims):
      if tree.is_masked(p) or d is None:
        projectors.append(p if tree.is_masked(p) else jnp.zeros((0, 0), p.dtype))
        proxies.append(p if tree.is_masked(p) else jnp.zeros_like(p))
        continue
      _, m, n, r, left = _galore_geometry(stage, p.shape, d, rank)
      projectors.append(jnp.zeros((m, r) if left else (n, r), p.dtype))
      proxies.append(jnp.zeros((r, n) if left else (m, r), p.dtype))
    return GaLoreState(zero_count(), base.init(jax.tree.unflatten(treedef, proxies)),
                       jax.tree.unflatten(treedef, projectors), spec.init())

  def check_projectors(leaves, plans, projectors, updates):
    """Raises where a leaf's projector is not the one init made for a leaf of its shape.

    The base's moments are low-rank: without this, a leaf of another shape reached the
    base's own check, which named its low-rank shapes, or, where those agreed, passed.
    """
    for i, (g, plan, P) in enumerate(zip(leaves, plans, projectors)):
      want = (0, 0) if plan is None else (plan.G.shape[0 if plan.left else 1], plan.rank)
      if tree.is_masked(g) or tree.is_masked(P) or P.shape == want:
        continue
      path = tree.keystr(jax.tree_util.tree_flatten_with_path(
          updates, is_leaf=tree.is_masked)[0][i][0])
      held = (f"a projector of shape {P.shape}" if P.shape != (0, 0)
              else "no projector (init left the leaf unprojected)")
      raise StructureError(
          f"{stage}: the updates at key path {path} have shape {g.shape}, for which init "
          f"makes {'no projector' if plan is None else f'a projector of shape {want}'}; the "
          f"state holds {held}: init and update were given leaves of different shapes")

  def update(updates, state, params=None, **extra):
    check_state(stage, state, GaLoreState)
    no_packed(updates)
    # The projectors' shapes are the low-rank ones: checked per leaf below.
    tree.check_structure(state.projector, updates, "state.projector", "updates",
                         check_shapes=False, stage=stage)
    if params is not None:  # a transposed leaf gets the projector and moments of its params
      tree.check_structure(params, updates, "params", "updates", stage=stage)
    del params
    h, hparams = spec.step(state.hparams)
    refresh = state.count % h["update_proj_gap"].astype(state.count.dtype) == 0
    leaves, dims, treedef = _leaves_and_dims(stage, dims_spec, updates)
    check_projected_real(leaves, dims, treedef)
    projectors = treedef.flatten_up_to(state.projector)
    # Per leaf, how it is projected; None for a leaf that passes through.
    plans = [None if tree.is_masked(g) or d is None else _plan(stage, g, d, rank)
             for g, d in zip(leaves, dims)]
    check_projectors(leaves, plans, projectors, updates)
    projected = [(plan, P) for plan, P in zip(plans, projectors) if plan is not None]

    def fresh():
      """Every projector from its matrix's SVD (float32, or float64 for float64 grads)."""
      out = []
      for plan, P in projected:
        wide = jnp.float64 if plan.G.dtype == jnp.float64 else jnp.float32
        U, _, Vh = jnp.linalg.svd(plan.G.astype(wide), full_matrices=False)
        out.append((U[:, :plan.rank] if plan.left else Vh[:plan.rank].T).astype(P.dtype))
      return out

    # One branch for all the projectors: they refresh together.
    renewed = iter(branch(refresh, fresh, lambda: [P for _, P in projected]))
    new_projectors = [P if plan is None else next(renewed) for P, plan in zip(projectors, plans)]
    low_rank = [g if plan is None else _project(P, plan.G, plan.left)
                for g, P, plan in zip(leaves, new_projectors, plans)]
    base_updates, base_state = base.update(jax.tree.unflatten(treedef, low_rank),
                                           state.base_optimizer_state, None, **extra)

    def back(g, u, P, plan):
      """The base's low-rank update mapped back to the leaf's shape, scaled."""
      if plan is None:
        return u
      full = _project(P.T, u, plan.left).astype(g.dtype)
      full = full.reshape([g.shape[a] for a in plan.order]).transpose(np.argsort(plan.order))
      return as_dtype(h["scale"], g.dtype) * full

    out = [back(*leaf) for leaf in zip(leaves, treedef.flatten_up_to(base_updates),
                                       new_projectors, plans)]
    return jax.tree.unflatten(treedef, out), GaLoreState(
        safe_increment(state.count), base_state, jax.tree.unflatten(treedef, new_projectors),
        hparams)

  return GradientTransformation(init, update, name=stage, spec=spec, options=dict(
      rank=rank, base_optimizer=base, weight_dimension_numbers=weight_dimension_numbers))


@names_its_arguments
def galore(learning_rate: ScalarOrSchedule, rank: int = 128, update_proj_gap: int = 200,
           scale: ScalarOrSchedule = 1.0, base_optimizer: GradientTransformation | None = None,
           weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None,
           weight_dimension_numbers: GaLoreDimNumsOrFn | None = None) -> Chain:
  """GaLore with decoupled weight decay: Adam (by default) in a low-rank gradient subspace.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta \\left( \\alpha P_t\\, \\text{base}(P_t^\\top G_t)
      + \\lambda \\theta_t \\right)

  for a projected leaf with :math:`m \\le n` (:math:`\\text{base}(G_t P_t) P_t^\\top`
  for :math:`m > n`: the smaller side is reduced, see :func:`scale_by_galore`); the
  other leaves take the base optimizer's step on their full gradient.

  ``optax.contrib.galore``'s rule, except on matrices that are not square, where
  optax 0.2.8 reduces the larger side: :func:`scale_by_galore` says how gradtx differs.

  Args:
    learning_rate: :math:`\\eta`.
    rank: the projection's rank, default 128.
    update_proj_gap: steps between refreshes of :math:`P`, default 200.
    scale: :math:`\\alpha`, default 1.
    base_optimizer: default :func:`gradtx.scale_by_adam`; one that does not
      read the params (not ``adamw``: use ``weight_decay`` here).
    weight_decay: :math:`\\lambda \\ge 0`, default 0, in the full space.
    mask: which leaves to decay.
    weight_dimension_numbers: see :func:`scale_by_galore`.

  References:
    Zhao et al., *GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
    Projection*, ICML 2024.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.galore(0.01, rank=16))
    galore(
      galore=scale_by_galore(
        update_proj_gap=200,
        scale=1,
        rank=16,
        weight_dimension_numbers=None,
        base_optimizer=scale_by_adam(b1=0.9, b2=0.999, eps=1e-08, eps_root=0, mu_dtype=None, nu_dtype=None, nesterov=False),
      ),
      decay=add_decayed_weights(weight_decay=0),
      lr=scale_by_learning_rate(learning_rate=0.01, flip_sign=True),
    )
  """
  return named_chain("galore",
                     galore=scale_by_galore(rank, update_proj_gap, scale, base_optimizer,
                                            weight_dimension_numbers),
                     decay=add_decayed_weights(weight_decay, mask),
                     lr=scale_by_learning_rate(learning_rate))
