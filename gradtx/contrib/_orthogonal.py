"""optax.contrib: rules on each matrix as a whole (Muon, GaLore), and complex parameters split into real and imaginary parts.

Muon orthogonalises each weight matrix's momentum with a Newton-Schulz
iteration. The matrix of a leaf is chosen by its :class:`MuonDimensionNumbers`
(which axes are the reduction and output axes; the others are batch axes), so
the per-matrix work needs each leaf's own shape: it runs through
:func:`gradtx.tree.map_leaves`, which in packed mode runs it batched over each
run of equally shaped leaves. GaLore projects each matrix's gradient onto its
leading singular vectors and keeps the base optimizer's moments in that
low-rank space, shaped unlike the params: it runs on trees, not packed.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.chain import Chain, named_chain
from gradtx.core import (ANY, NONNEGATIVE, POSITIVE, POSITIVE_INT, UNIT_HALF_OPEN,
                         GradientTransformation, HParams, HParamSpec, Params, ScalarOrSchedule,
                         as_transformation, check_value, stateless)
from gradtx.errors import StructureError
from gradtx.numerics import as_dtype, ema_moment, safe_increment, safe_rsqrt, zero_count
from gradtx.packed import Packed, PackedLeaves
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.moments import debiased_first_moment, scale_by_adam
from gradtx.transforms.scaling import scale_by_learning_rate
from gradtx.wrappers import masked
# The tree a masked wrapper hides leaves of: dimension numbers are resolved on it.
from gradtx.wrappers._masking import _unmasked_view

__all__ = ["GaLoreDimensionNumbers", "GaLoreState", "MuonDimensionNumbers", "MuonState",
           "SplitRealAndImaginaryState", "galore", "muon",
           "scale_by_galore", "scale_by_muon", "split_real_and_imaginary"]


# ----------------------------------------------------------------------------
# Which axes of a leaf form its matrices.


class MuonDimensionNumbers(NamedTuple):
  """Which axes of a leaf form the matrix that Muon orthogonalises.

  The leaf is read as a batch of matrices :math:`W` of a product
  :math:`x W = y`: ``reduction_axis`` (an axis or several, flattened
  together) indexes :math:`x`'s entries and ``output_axis`` :math:`y`'s; every
  other axis is a batch axis, each of its matrices orthogonalised on its own.
  The default, ``(0, 1)``, is a plain 2-D weight.
  """
  reduction_axis: Sequence[int] | int = 0
  output_axis: Sequence[int] | int = 1


WeightDimNumOrFn = MuonDimensionNumbers | Params | Callable[[Params], Params | None]
"""A :class:`MuonDimensionNumbers` for every leaf, a tree of them (``None``
for a leaf that is not a matrix) with the params' structure or a prefix of
it, or a callable of the params returning such a tree."""


class GaLoreDimensionNumbers(NamedTuple):
  """Which axes of a leaf form the matrix that GaLore projects.

  As :class:`MuonDimensionNumbers`, but every axis must be a reduction or an
  output axis (no batch axes): the leaf is one matrix of shape
  (prod of reduction sizes, prod of output sizes).
  """
  reduction_axis: Sequence[int] | int = 0
  output_axis: Sequence[int] | int = 1


GaLoreDimNumsOrFn = GaLoreDimensionNumbers | Params | Callable[[Params], Params | None]
"""As :data:`WeightDimNumOrFn`, with :class:`GaLoreDimensionNumbers`."""


def _is_dims(x: Any) -> bool:
  return isinstance(x, (MuonDimensionNumbers, GaLoreDimensionNumbers))


def _axes(axis: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
  axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
  return tuple(int(a) % ndim for a in axes)


def _matrix_axes(stage: str, shape: tuple[int, ...], dims: MuonDimensionNumbers
                 ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
  """``(batch, reduction, output)`` axes of a leaf of ``shape``."""
  ndim = len(shape)
  if ndim < 2:
    raise StructureError(f"{stage}: a leaf of shape {shape} is not a matrix (rank {ndim}); "
                         "give it weight dimension numbers None to leave it out")
  reduction, output = _axes(dims.reduction_axis, ndim), _axes(dims.output_axis, ndim)
  if set(reduction) & set(output) or not reduction or not output:
    raise StructureError(f"{stage}: {dims} for a leaf of shape {shape}: the reduction and "
                         "output axes must be disjoint and non-empty")
  batch = tuple(a for a in range(ndim) if a not in reduction + output)
  return batch, reduction, output


def _fans(stage: str, shape: tuple[int, ...], dims: MuonDimensionNumbers) -> tuple[int, int]:
  """(fan in, fan out): the sizes of the reduction and output axes."""
  _, reduction, output = _matrix_axes(stage, shape, dims)
  return math.prod(shape[a] for a in reduction), math.prod(shape[a] for a in output)


def _dims_per_leaf(stage: str, spec: WeightDimNumOrFn | None, real: Any) -> list[Any]:
  """``spec`` resolved against the tree ``real``: one entry (dims or None) per leaf."""
  resolved = MuonDimensionNumbers() if spec is None else (
      spec(real) if callable(spec) and not _is_dims(spec) else spec)
  entry = lambda x: x is None or _is_dims(x)  # noqa: E731
  try:
    spread = jax.tree.map(
        lambda d, sub: jax.tree.map(lambda _: _Entry(d), sub, is_leaf=tree._is_masked),
        resolved, real, is_leaf=entry)
  except (ValueError, TypeError):
    raise StructureError(
        f"{stage}: the weight dimension numbers must have the params' tree structure (or a "
        f"prefix of it) with dimension numbers or None at each leaf; got {resolved!r} "
        f"for params of structure {jax.tree.structure(real)}") from None
  return [e.dims for e in jax.tree.leaves(spread, is_leaf=lambda x: isinstance(x, _Entry))]


class _Entry:
  """One leaf's dimension numbers, held so that tree maps do not descend into them."""
  __slots__ = ("dims",)

  def __init__(self, dims: MuonDimensionNumbers | None):
    self.dims = dims


def _map_matrices(stage: str, spec: WeightDimNumOrFn | None,
                  fn: Callable[[jax.Array, MuonDimensionNumbers | None], jax.Array],
                  updates: Any) -> Any:
  """``fn(leaf, dims)`` for every leaf, with the leaf's dimension numbers (None: not a matrix).

  Through :func:`gradtx.tree.map_leaves`: in packed mode ``fn`` runs batched
  over the leaves of one shape, and where leaves of one shape have different
  dimension numbers each leaf picks its own with :func:`jax.lax.switch`.
  """
  if isinstance(updates, Packed):
    layout = updates.layout
    leaves_dims = _dims_per_leaf(stage, spec, layout.template())
    shapes = [tuple(s) for s in layout.shapes]
  else:
    with _unmasked_view(updates) as real:
      leaves_dims = _dims_per_leaf(stage, spec, real)
    leaves, treedef = jax.tree.flatten(updates, is_leaf=tree._is_masked)
    if len(leaves) != len(leaves_dims):
      raise StructureError(f"{stage}: {len(leaves_dims)} weight dimension numbers for "
                           f"{len(leaves)} leaves")
    shapes = [None if tree._is_masked(x) else tuple(np.shape(x)) for x in leaves]
  # Per shape, the distinct dimension numbers of its leaves; per leaf, the index of its own.
  options: dict[tuple[int, ...], list[Any]] = {}
  index = []
  for shape, dims in zip(shapes, leaves_dims):
    if shape is None:  # a masked-out leaf: not mapped
      index.append(0)
      continue
    choices = options.setdefault(shape, [])
    if dims not in choices:
      if dims is not None:
        _matrix_axes(stage, shape, dims)  # raise now, naming the leaf's shape
      choices.append(dims)
    index.append(choices.index(dims))

  def leaf(x, i):
    choices = options[tuple(x.shape)]
    if isinstance(i, int):
      return (fn(x, choices[i]),)
    if len(choices) == 1:
      return (fn(x, choices[0]),)
    return (jax.lax.switch(i, [functools.partial(fn, dims=d) for d in choices], x),)

  if isinstance(updates, Packed):
    chosen = PackedLeaves.from_leaves(layout, [jnp.asarray(i, jnp.int32) for i in index])
  else:
    chosen = jax.tree.unflatten(treedef, index)
  return tree.map_leaves(leaf, (True,), updates, chosen)[0]


# ----------------------------------------------------------------------------
# The Newton-Schulz iteration.


_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
_DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
_DION_NS_COEFFS = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377),
                   (3.7418, -5.5913, 2.3037), (2.8769, -3.1427, 1.2046),
                   (2.8366, -3.0525, 1.2012))
_NS_COEFFS_PRESETS = {"standard": _DEFAULT_NS_COEFFS, "dion": _DION_NS_COEFFS}


def _safe_divide(x: jax.Array, d: jax.Array) -> jax.Array:
  """``x / d``, and 0 where ``d`` is 0 (a zero matrix with ``eps = 0``)."""
  return jnp.where(d > 0, x / jnp.where(d > 0, d, jnp.ones_like(d)), jnp.zeros_like(x))


def _newton_schulz(x: jax.Array, coeffs: jax.Array, ns_steps: int, preconditioning: str,
                   eps: jax.Array) -> jax.Array:
  """The quintic Newton-Schulz iteration on one matrix ``x``."""
  transposed = x.shape[0] > x.shape[1]  # iterate on the wide side: X X^T is the smaller
  if transposed:
    x = x.T
  eps = as_dtype(eps, x.real.dtype)
  if preconditioning == "frobenius":
    x = _safe_divide(x, jnp.linalg.norm(x) + eps)
  elif preconditioning == "spectral":
    x = _safe_divide(x, jnp.linalg.norm(x, ord=2) + eps)
  coeffs = as_dtype(coeffs, x.real.dtype)
  rows = [coeffs[i] for i in range(coeffs.shape[0])] if coeffs.ndim == 2 else [coeffs] * ns_steps
  for i, (a, b, c) in enumerate(rows):
    A = x @ x.conj().T
    if i == 0 and preconditioning == "aol":
      # Almost-orthogonal-layer rescaling: row i by 1 / sqrt(sum_j |A_ij|).
      s = safe_rsqrt(jnp.maximum(jnp.sum(jnp.abs(A), axis=-1), eps))[:, None]
      x, A = x * s, A * s * s.T
    elif i == 0 and preconditioning == "schatten":
      # Divide by the Schatten-4 norm: ||X||_S4^2 = ||X X^T||_F.
      s = safe_rsqrt(jnp.maximum(jnp.linalg.norm(A), eps))
      x, A = x * s, A * (s * s)
    B = b * A + c * (A @ A)
    x = a * x + B @ x
  return x.T if transposed else x


def _orthogonalize(x: jax.Array, dims: MuonDimensionNumbers, coeffs: jax.Array, ns_steps: int,
                   preconditioning: str, eps: jax.Array) -> jax.Array:
  """Each matrix of ``x`` (as ``dims`` reads it) orthogonalised, in ``x``'s layout."""
  batch, reduction, output = _matrix_axes("scale_by_muon", x.shape, dims)
  order = batch + reduction + output
  sizes = [math.prod(x.shape[a] for a in axes) for axes in (batch, reduction, output)]
  matrices = x.transpose(order).reshape(sizes)
  done = jax.vmap(lambda m: _newton_schulz(m, coeffs, ns_steps, preconditioning, eps))(matrices)
  return done.reshape([x.shape[a] for a in order]).transpose(np.argsort(order))


def _ns_coeffs_array(stage: str, ns_coeffs: Any) -> tuple:
  if isinstance(ns_coeffs, str):
    if ns_coeffs not in _NS_COEFFS_PRESETS:
      raise ValueError(f"{stage}: ns_coeffs must be one of the presets "
                       f"{sorted(_NS_COEFFS_PRESETS)} or coefficients, got {ns_coeffs!r}")
    ns_coeffs = _NS_COEFFS_PRESETS[ns_coeffs]
  try:
    table = np.asarray(ns_coeffs, np.float64)
  except (TypeError, ValueError):
    table = np.zeros((0,))
  if not (table.ndim in (1, 2) and table.shape[-1] == 3 and table.size > 0):
    raise ValueError(f"{stage}: ns_coeffs must have shape (3,) or (n, 3), got "
                     f"{np.shape(ns_coeffs)}")
  return tuple(table.tolist()) if table.ndim == 1 else tuple(map(tuple, table.tolist()))


# ----------------------------------------------------------------------------
# Muon.


class MuonState(NamedTuple):
  """State of :func:`scale_by_muon`: the step ``count`` and the momentum ``mu``.

  The Newton-Schulz coefficients are a hyperparameter, held in ``hparams``
  (settable by name); ``state.ns_coeffs`` reads them, as optax's field does.
  """
  count: jax.Array
  mu: Any
  hparams: HParams

  @property
  def ns_coeffs(self) -> jax.Array:
    return self.hparams["ns_coeffs"]


def scale_by_muon(ns_coeffs: tuple = _DEFAULT_NS_COEFFS, ns_steps: int = 5,
                  beta: ScalarOrSchedule = 0.95, eps: ScalarOrSchedule = 1e-8,
                  mu_dtype: Any = None, *, nesterov: bool = True, adaptive: bool = False,
                  preconditioning: Literal["frobenius", "spectral", "aol",
                                           "schatten"] = "frobenius",
                  weight_dimension_numbers: WeightDimNumOrFn | None = None
                  ) -> GradientTransformation:
  """Muon's step: the momentum of each weight matrix, orthogonalised by Newton-Schulz.

  .. math::
    m_t = \\beta m_{t-1} + (1-\\beta) g_t, \\quad
    \\hat m_t = \\frac{m_t}{1-\\beta^t}\\ \\text{or, with Nesterov,}\\
      \\frac{\\beta m_t}{1-\\beta^{t+1}} + \\frac{(1-\\beta) g_t}{1-\\beta^t}, \\quad
    u_t = \\operatorname{NS}(\\hat m_t)

  :math:`\\operatorname{NS}` works on each matrix :math:`X` (transposed if it
  has more rows than columns): :math:`X_0 = X / (\\|X\\|_F + \\epsilon)` (with
  ``"spectral"``, the spectral norm), then for :math:`k < K`

  .. math::
    A_k = X_k X_k^\\top, \\qquad X_{k+1} = a X_k + (b A_k + c A_k^2) X_k

  which drives every singular value of :math:`X` towards 1 (roughly into
  [0.7, 1.2] with the default coefficients): :math:`U V^\\top` of
  :math:`X = U S V^\\top`, approximately. ``"aol"`` instead scales row
  :math:`i` of :math:`X_0 = X` by :math:`(\\max(\\sum_j |A_{0,ij}|, \\epsilon))^{-1/2}`
  at the first step, ``"schatten"`` divides it by
  :math:`\\max(\\|A_0\\|_F, \\epsilon)^{1/2}`. With ``adaptive=True``,
  :math:`u_t = \\langle \\hat m_t, \\operatorname{NS}(\\hat m_t)\\rangle\\,
  \\operatorname{NS}(\\hat m_t)` (the dual norm, summed over the whole leaf).

  Args:
    ns_coeffs: :math:`(a, b, c)`, default (3.4445, -4.7750, 2.0315); or a
      table of shape (n, 3), one row per step. Held in the state
      (``ns_coeffs``).
    ns_steps: :math:`K \\ge 1`, default 5; a table of coefficients runs its
      own n rows instead. Structural: it fixes the compiled iteration.
    beta: :math:`\\beta \\in [0, 1)`, default 0.95.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    mu_dtype: dtype of :math:`m`.
    nesterov: Nesterov momentum, default True.
    adaptive: scale by the dual norm, default False.
    preconditioning: ``"frobenius"`` (default), ``"spectral"``, ``"aol"`` or
      ``"schatten"``.
    weight_dimension_numbers: which axes of each leaf form its matrices (see
      :class:`MuonDimensionNumbers`): one for all leaves, a tree of them, or a
      callable of the params returning one; ``None`` (the default) makes every
      leaf a 2-D matrix. A ``None`` entry for a leaf leaves it out: it gets
      :math:`\\hat m_t` unchanged (optax raises instead; :func:`muon` sends
      such leaves to Adam).

  Differs from optax 0.2.8: the default ``weight_dimension_numbers=None``
  works on any tree (optax's fails on a tree of several leaves); a table of
  ``ns_coeffs`` with more rows than ``ns_steps`` runs every row, as optax's
  docstring says (optax raises "Not enough coeffs"); ``"aol"`` and
  ``"schatten"`` use ``eps`` where optax uses a fixed 1e-8 (the same at the
  default); a zero matrix with ``eps = 0`` stays zero where optax gives NaN.
  ``ns_coeffs`` may also name a preset, as in :func:`muon`.

  References:
    Jordan et al., *Muon: An optimizer for hidden layers in neural networks*,
    2024 (https://kellerjordan.github.io/posts/muon/); Bernstein & Newhouse,
    *Old Optimizer, New Norm: An Anthology*, 2024; Boissin et al.,
    *Turbo-Muon*, 2025 (AOL); Grishina et al., *Accelerating Newton-Schulz
    Iteration for Orthogonalization via Chebyshev-type Polynomials*, 2025.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_muon()
    >>> u, _ = tx.update(jnp.diag(jnp.array([3.0, 1.0])), tx.init(jnp.zeros((2, 2))))
    >>> jnp.round(jnp.diag(u), 2)  # singular values 3 and 1, both moved near 1
    Array([0.75, 1.13], dtype=float32)
  """
  stage = "scale_by_muon"
  if preconditioning not in _PRECONDITIONINGS:
    raise ValueError(f"{stage}: preconditioning must be one of {_PRECONDITIONINGS}, got "
                     f"{preconditioning!r}")
  check_value(stage, "ns_steps", ns_steps, POSITIVE_INT)
  spec = HParamSpec(stage, beta=(beta, UNIT_HALF_OPEN), eps=(eps, NONNEGATIVE),
                    ns_coeffs=(_ns_coeffs_array(stage, ns_coeffs), ANY))

  def init(params):
    return MuonState(zero_count(), tree.zeros_like(params, mu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)

    def moment(g, m):
      m_new = ema_moment(g, m, h["beta"], order=1)
      return debiased_first_moment(g, m_new, h["beta"], count, nesterov), m_new.astype(m.dtype)

    mu_hat, mu = tree.map_multi(moment, 2, updates, state.mu)

    def orthogonal(x, dims):
      if dims is None:
        return x
      o = _orthogonalize(x, dims, h["ns_coeffs"], int(ns_steps), preconditioning, h["eps"])
      return jnp.sum(x.conj() * o) * o if adaptive else o

    new = _map_matrices(stage, weight_dimension_numbers, orthogonal, mu_hat)
    return tree.cast_like(new, updates), MuonState(count, mu, hparams)

  return GradientTransformation(init, update, name=stage, spec=spec, options=dict(
      ns_steps=ns_steps, mu_dtype=mu_dtype, nesterov=nesterov, adaptive=adaptive,
      preconditioning=preconditioning, weight_dimension_numbers=weight_dimension_numbers))


def _scale_by_shape(weight_dimension_numbers: WeightDimNumOrFn | None,
                    consistent_rms: ScalarOrSchedule | None) -> GradientTransformation:
  """Each matrix leaf times a factor of its shape (Muon's step size per matrix).

  .. math::
    u = \\sqrt{\\max(1, d_\\text{out} / d_\\text{in})}\\, g
    \\quad\\text{or}\\quad u = \\rho \\sqrt{\\max(d_\\text{in}, d_\\text{out})}\\, g

  the second when ``consistent_rms`` :math:`\\rho` is given; leaves whose
  dimension numbers are ``None`` pass unchanged.
  """
  stage = "scale_by_shape"

  def scale_by_shape(updates, params, **h):
    def leaf(x, dims):
      if dims is None:
        return x
      fan_in, fan_out = _fans(stage, x.shape, dims)
      if consistent_rms is None:
        return x * as_dtype(math.sqrt(max(1.0, fan_out / fan_in)), x.dtype)
      return x * (as_dtype(math.sqrt(max(fan_in, fan_out)), x.dtype)
                  * as_dtype(h["consistent_rms"], x.dtype))
    return _map_matrices(stage, weight_dimension_numbers, leaf, updates)

  entries = {} if consistent_rms is None else {"consistent_rms": (consistent_rms, POSITIVE)}
  return stateless(scale_by_shape, name=stage, **entries)


class _MuonLeaves:
  """A mask: the leaves that have dimension numbers (``muon=True``) or those that do not."""

  def __init__(self, spec: WeightDimNumOrFn, muon: bool):
    self.spec, self.muon = spec, muon

  def __call__(self, params: Params) -> Params:
    flags = [(d is not None) == self.muon for d in _dims_per_leaf("muon", self.spec, params)]
    return jax.tree.unflatten(jax.tree.structure(params, is_leaf=tree._is_masked), flags)

  def __repr__(self) -> str:
    return "muon_leaves" if self.muon else "other_leaves"


def _matrices_2d(params: Params) -> Params:
  """muon's default dimension numbers: every 2-D leaf is a matrix, the others are not."""
  return jax.tree.map(lambda x: MuonDimensionNumbers() if len(np.shape(x)) == 2 else None,
                      params, is_leaf=tree._is_masked)


def muon(learning_rate: ScalarOrSchedule, ns_coeffs: tuple | str = _DEFAULT_NS_COEFFS,
         ns_steps: int = 5, beta: ScalarOrSchedule = 0.95, eps: ScalarOrSchedule = 1e-8,
         weight_decay: ScalarOrSchedule = 0.0, weight_decay_mask: Mask | None = None,
         mu_dtype: Any = None, *, nesterov: bool = True, adaptive: bool = False,
         preconditioning: Literal["frobenius", "spectral", "aol", "schatten"] = "frobenius",
         adam_b1: ScalarOrSchedule = 0.9, adam_b2: ScalarOrSchedule = 0.999,
         adam_eps_root: ScalarOrSchedule = 0.0, adam_weight_decay: ScalarOrSchedule = 0.0,
         adam_learning_rate: ScalarOrSchedule | None = None,
         muon_weight_dimension_numbers: WeightDimNumOrFn | None = None,
         consistent_rms: ScalarOrSchedule | None = None) -> Chain:
  """Muon: momentum orthogonalised by Newton-Schulz for matrices, AdamW for the rest.

  For a matrix leaf (see :func:`scale_by_muon` for :math:`\\operatorname{NS}`
  and :math:`\\hat m_t`),

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta \\left( s\\, \\operatorname{NS}(\\hat m_t)
      + \\lambda \\theta_t \\right), \\qquad
    s = \\sqrt{\\max(1, d_\\text{out} / d_\\text{in})}

  (:math:`s = \\rho \\sqrt{\\max(d_\\text{in}, d_\\text{out})}` with
  ``consistent_rms`` :math:`\\rho`), where :math:`d_\\text{in}, d_\\text{out}`
  are the sizes of the reduction and output axes. Every other leaf takes
  AdamW's step (:func:`gradtx.adamw`) with ``adam_b1``, ``adam_b2``, ``eps``,
  ``adam_eps_root``, ``adam_weight_decay`` and ``adam_learning_rate``.

  Args:
    learning_rate: :math:`\\eta` of the matrices.
    ns_coeffs: the Newton-Schulz coefficients, or a preset: ``"standard"``
      (the default's) or ``"dion"`` (a 5-row table).
    ns_steps: Newton-Schulz steps, default 5.
    beta: momentum :math:`\\beta \\in [0, 1)`, default 0.95.
    eps: :math:`\\epsilon \\ge 0` of both Newton-Schulz and Adam, default 1e-8.
    weight_decay: :math:`\\lambda \\ge 0` of the matrices, default 0
      (multiplied by the learning rate, as torch's AdamW).
    weight_decay_mask: which matrices to decay (a tree or a callable).
    mu_dtype: dtype of the momenta.
    nesterov: Nesterov momentum for both, default True.
    adaptive: see :func:`scale_by_muon`.
    preconditioning: see :func:`scale_by_muon`.
    adam_b1: default 0.9.
    adam_b2: default 0.999.
    adam_eps_root: default 0.
    adam_weight_decay: default 0.
    adam_learning_rate: default ``learning_rate``.
    muon_weight_dimension_numbers: which leaves are matrices and which axes
      form them (a tree of :class:`MuonDimensionNumbers` with ``None`` for
      the Adam leaves, or a callable of the params returning one); default:
      the 2-D leaves, as plain matrices.
    consistent_rms: :math:`\\rho > 0`, or None (the default) for the width
      scaling.

  The stages are masked by leaf: ``muon``, ``shape``, ``decay`` and ``lr``
  see the matrices, ``adam``, ``adam_decay`` and ``adam_lr`` the others, so
  ``lr.learning_rate`` and ``adam_lr.learning_rate`` are set apart.

  References:
    Jordan et al., *Muon: An optimizer for hidden layers in neural networks*,
    2024; Liu et al., *Muon is Scalable for LLM Training*, 2025
    (``consistent_rms``).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.muon(0.02)
    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
    >>> state = tx.init(params)
    >>> state["muon"].inner_state.mu  # masked: only the matrices
    {'b': MaskedNode(), 'w': Array([[0., 0.],
           [0., 0.],
           [0., 0.]], dtype=float32)}
    >>> state["adam"].inner_state.mu
    {'b': Array([0., 0.], dtype=float32), 'w': MaskedNode()}
  """
  stage = "muon"
  if isinstance(ns_coeffs, str):
    ns_coeffs = _ns_coeffs_array(stage, ns_coeffs)
  if adam_learning_rate is None:
    adam_learning_rate = learning_rate
  dims = _matrices_2d if muon_weight_dimension_numbers is None else muon_weight_dimension_numbers
  matrices, others = _MuonLeaves(dims, True), _MuonLeaves(dims, False)
  return named_chain(
      "muon",
      muon=masked(scale_by_muon(ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov=nesterov,
                                adaptive=adaptive, preconditioning=preconditioning,
                                weight_dimension_numbers=dims), matrices),
      shape=masked(_scale_by_shape(dims, consistent_rms), matrices),
      decay=masked(add_decayed_weights(weight_decay, weight_decay_mask), matrices),
      lr=masked(scale_by_learning_rate(learning_rate), matrices),
      adam=masked(scale_by_adam(adam_b1, adam_b2, eps, adam_eps_root, mu_dtype,
                                nesterov=nesterov), others),
      adam_decay=masked(add_decayed_weights(adam_weight_decay), others),
      adam_lr=masked(scale_by_learning_rate(adam_learning_rate), others))


# ----------------------------------------------------------------------------
# GaLore.


class GaLoreState(NamedTuple):
  """State of :func:`scale_by_galore`.

  ``base_optimizer_state`` is the base optimizer's state on the low-rank
  gradients (the full ones for leaves that are not projected); ``projector``
  holds each projected leaf's :math:`P` (a (0, 0) array for the others).
  """
  count: jax.Array
  base_optimizer_state: Any
  projector: Any
  hparams: HParams


def _galore_dims(spec: GaLoreDimNumsOrFn | None, params: Params) -> Params:
  """optax's resolution: None projects the 2-D leaves; one spec, every leaf of rank >= 2."""
  if spec is None or _is_dims(spec):
    dims = GaLoreDimensionNumbers() if spec is None else spec
    wanted = (lambda n: n == 2) if spec is None else (lambda n: n >= 2)
    return jax.tree.map(lambda x: dims if wanted(len(np.shape(x))) else None, params,
                        is_leaf=tree._is_masked)
  return spec(params) if callable(spec) else spec


def _galore_geometry(stage: str, shape: tuple[int, ...], dims: GaLoreDimensionNumbers,
                     rank: int) -> tuple[tuple[int, ...], int, int, int, bool]:
  """(axis order, m, n, effective rank, left): the leaf as an m x n matrix."""
  batch, reduction, output = _matrix_axes(stage, shape, dims)
  if batch:
    raise StructureError(f"{stage}: {dims} for a leaf of shape {shape} leaves axes {batch} "
                         "out; GaLore needs every axis in the reduction or output axes")
  m, n = math.prod(shape[a] for a in reduction), math.prod(shape[a] for a in output)
  return reduction + output, m, n, min(rank, m, n), m >= n


def scale_by_galore(rank: int = 128, update_proj_gap: int = 200, scale: ScalarOrSchedule = 1.0,
                    base_optimizer: GradientTransformation | None = None,
                    weight_dimension_numbers: GaLoreDimNumsOrFn | None = None
                    ) -> GradientTransformation:
  """GaLore: the base optimizer run on gradients projected to a low-rank subspace.

  For a projected leaf, as an :math:`m \\times n` matrix :math:`G_t` with
  :math:`m \\ge n` (otherwise the same on the right, :math:`R_t = G_t P_t`,
  :math:`u_t = \\alpha \\tilde R_t P_t^\\top`),

  .. math::
    P_t = \\begin{cases} U_{:, :r} \\text{ of } G_t = U S V^\\top &
      t \\equiv 0 \\pmod T \\\\ P_{t-1} & \\text{otherwise} \\end{cases}, \\quad
    R_t = P_t^\\top G_t, \\quad \\tilde R_t = \\text{base}(R_t), \\quad
    u_t = \\alpha P_t \\tilde R_t

  with :math:`t = 0, 1, \\dots` the number of earlier steps, :math:`r` =
  ``min(rank, m, n)``, :math:`T` = ``update_proj_gap`` and :math:`\\alpha` =
  ``scale``. The base optimizer's moments live in the :math:`r`-dimensional
  space (and carry over when :math:`P` is refreshed). Leaves that are not
  projected go through the base optimizer as they are.

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

  Differs from optax 0.2.8 only in the SVD's precision: float64 for float64
  gradients (optax always takes it in float32). The projector's columns are
  singular vectors, whose signs LAPACK chooses; an elementwise base rule that
  is odd in the gradient (Adam's) gives a step that does not depend on them
  between refreshes. GaLore does not run on a packed tree: its moments are
  shaped unlike the params.

  References:
    Zhao et al., *GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
    Projection*, ICML 2024.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_galore(rank=2)
    >>> state = tx.init({"w": jnp.ones((6, 4)), "b": jnp.ones(4)})
    >>> state.projector["w"].shape, state.base_optimizer_state.mu["w"].shape
    ((6, 2), (2, 4))
  """
  stage = "scale_by_galore"
  if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool):
    raise TypeError(f"{stage}: rank must be an int, got {type(rank).__name__}")
  check_value(stage, "rank", rank, POSITIVE_INT)
  base = as_transformation(scale_by_adam() if base_optimizer is None else base_optimizer,
                           where=f"{stage} base_optimizer")
  spec = HParamSpec(stage, update_proj_gap=(update_proj_gap, POSITIVE_INT),
                    scale=(scale, ANY))

  def no_packed(x):
    if isinstance(x, Packed):
      raise StructureError(f"{stage}: GaLore does not run on a packed tree (its moments are "
                           "low-rank, shaped unlike the params); run it on the tree")

  def leaves_and_dims(values):
    with _unmasked_view(values) as real:
      dims = _dims_per_leaf(stage, lambda p: _galore_dims(weight_dimension_numbers, p), real)
    leaves, treedef = jax.tree.flatten(values, is_leaf=tree._is_masked)
    if len(leaves) != len(dims):
      raise StructureError(f"{stage}: {len(dims)} weight dimension numbers for "
                           f"{len(leaves)} leaves")
    return leaves, dims, treedef

  def init(params):
    no_packed(params)
    if tree.is_params_placeholder(params):
      return GaLoreState(zero_count(), base.init(params), params, spec.init())
    leaves, dims, treedef = leaves_and_dims(params)
    projectors, proxies = [], []
    for p, d in zip(leaves, dims):
      if tree._is_masked(p) or d is None:
        projectors.append(p if tree._is_masked(p) else jnp.zeros((0, 0), p.dtype))
        proxies.append(p if tree._is_masked(p) else jnp.zeros_like(p))
        continue
      _, m, n, r, left = _galore_geometry(stage, p.shape, d, rank)
      projectors.append(jnp.zeros((m, r) if left else (n, r), p.dtype))
      proxies.append(jnp.zeros((r, n) if left else (m, r), p.dtype))
    return GaLoreState(zero_count(), base.init(jax.tree.unflatten(treedef, proxies)),
                       jax.tree.unflatten(treedef, projectors), spec.init())

  def update(updates, state, params=None, **extra):
    del params
    no_packed(updates)
    h, hparams = spec.step(state.hparams)
    refresh = state.count % h["update_proj_gap"].astype(state.count.dtype) == 0
    leaves, dims, treedef = leaves_and_dims(updates)
    projectors = treedef.flatten_up_to(state.projector)
    geometry, low_rank, new_projectors = [], [], []
    for g, d, P in zip(leaves, dims, projectors):
      if tree._is_masked(g) or d is None:
        geometry.append(None)
        low_rank.append(g)
        new_projectors.append(P)
        continue
      order, m, n, r, left = _galore_geometry(stage, g.shape, d, rank)
      G = g.transpose(order).reshape(m, n)

      def fresh(G=G, r=r, left=left):
        wide = jnp.float64 if G.dtype == jnp.float64 else jnp.float32
        U, _, Vh = jnp.linalg.svd(G.astype(wide), full_matrices=False)
        return (U[:, :r] if left else Vh[:r].T).astype(P.dtype)

      if isinstance(refresh, jax.core.Tracer):
        P = jax.lax.cond(refresh, fresh, lambda P=P: P)
      elif refresh:  # run eagerly: no cond to compile at every step
        P = fresh()
      geometry.append((order, left))
      low_rank.append(P.T @ G if left else G @ P)
      new_projectors.append(P)
    base_updates, base_state = base.update(jax.tree.unflatten(treedef, low_rank),
                                           state.base_optimizer_state, None, **extra)
    out = []
    for g, u, P, geo in zip(leaves, treedef.flatten_up_to(base_updates), new_projectors,
                            geometry):
      if geo is None:
        out.append(u)
        continue
      order, left = geo
      full = (P @ u if left else u @ P.T).astype(g.dtype)
      full = full.reshape([g.shape[a] for a in order]).transpose(np.argsort(order))
      out.append(as_dtype(h["scale"], g.dtype) * full)
    return jax.tree.unflatten(treedef, out), GaLoreState(
        safe_increment(state.count), base_state, jax.tree.unflatten(treedef, new_projectors),
        hparams)

  return GradientTransformation(init, update, name=stage, spec=spec, options=dict(
      rank=rank, base_optimizer=base, weight_dimension_numbers=weight_dimension_numbers))


def galore(learning_rate: ScalarOrSchedule, rank: int = 128, update_proj_gap: int = 200,
           scale: ScalarOrSchedule = 1.0, base_optimizer: GradientTransformation | None = None,
           weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None,
           weight_dimension_numbers: GaLoreDimNumsOrFn | None = None) -> Chain:
  """GaLore with decoupled weight decay: Adam (by default) in a low-rank gradient subspace.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta \\left( \\alpha P_t\\, \\text{base}(P_t^\\top G_t)
      + \\lambda \\theta_t \\right)

  for a projected leaf (see :func:`scale_by_galore`); the other leaves take
  the base optimizer's step on their full gradient.

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


# ----------------------------------------------------------------------------
# Normalising by the global norm.


# ----------------------------------------------------------------------------
# Complex parameters as pairs of real ones.


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
                      is_leaf=lambda v: pair(v) or tree._is_masked(v))


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
  inner = as_transformation(inner, where="split_real_and_imaginary")

  def init(params):
    return SplitRealAndImaginaryState(inner.init(_split(params)))

  def update(updates, state, params=None, **extra):
    if not isinstance(state, SplitRealAndImaginaryState):
      raise StructureError("split_real_and_imaginary: the state is a "
                           f"{type(state).__name__}, not SplitRealAndImaginaryState")
    new, inner_state = inner.update(_split(updates), state.inner_state,
                                    None if params is None else _split(params), **extra)
    return _merge(new), SplitRealAndImaginaryState(inner_state)

  return GradientTransformation(init, update, name="split_real_and_imaginary",
                                options={"inner": inner})
