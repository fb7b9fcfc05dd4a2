"""optax.contrib: Muon, momentum orthogonalised by Newton-Schulz for each weight matrix.

Muon orthogonalises each weight matrix's momentum with a Newton-Schulz
iteration. The matrix of a leaf is chosen by its :class:`MuonDimensionNumbers`
(which axes are the reduction and output axes; the others are batch axes), so
the per-matrix work needs each leaf's own shape: it runs through
:func:`gradtx.tree.map_leaves`, which in packed mode runs it batched over each
run of equally shaped leaves.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.chain import Chain, named_chain
from gradtx.contrib._common import (MuonDimensionNumbers, WeightDimNumOrFn, _dims_per_leaf, _fans,
                                    _map_matrices, _matrices_2d, _matrix_axes)
from gradtx.core import (NONNEGATIVE, POSITIVE, POSITIVE_INT, UNIT_HALF_OPEN, Range,
                         GradientTransformation, HParams, HParamSpec, Params, ScalarOrSchedule,
                         check_integer_option, check_state, check_value, checks_flags, is_concrete,
                         stateless, names_its_arguments)
from gradtx.numerics import (abs_sq, as_dtype, at_least_float32, ema_moment, safe_divide,
                             safe_increment, safe_rsqrt, safe_sqrt, zero_count)
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.moments import debiased_first_moment, scale_by_adam
from gradtx.transforms.scaling import scale_by_learning_rate
from gradtx.wrappers import masked

__all__ = ["MuonState", "muon", "scale_by_muon"]


# ----------------------------------------------------------------------------
# The Newton-Schulz iteration.


_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
_DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
_DION_NS_COEFFS = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377),
                   (3.7418, -5.5913, 2.3037), (2.8769, -3.1427, 1.2046),
                   (2.8366, -3.0525, 1.2012))
_NS_COEFFS_PRESETS = {"standard": _DEFAULT_NS_COEFFS, "dion": _DION_NS_COEFFS}


def _newton_schulz(x: jax.Array, coeffs: jax.Array, ns_steps: int, preconditioning: str,
                   eps: jax.Array) -> jax.Array:
  """The quintic Newton-Schulz iteration on one matrix ``x``."""
  transposed = x.shape[0] > x.shape[1]  # iterate on the wide side: X X^T is the smaller
  if transposed:
    x = x.T
  # The preconditioning in float32 at least, then X_0 (entries of at most 1) in x's dtype:
  # float16 squares overflow, so a Frobenius norm above 256 was Inf and the step 0, and
  # AOL's and the Schatten norm's X X^H were Inf and the step NaN. There is no bfloat16 or
  # float16 SVD for the spectral norm either.
  wide = as_dtype(x, at_least_float32(x))
  eps = as_dtype(eps, wide.real.dtype)
  A = None  # X_0 X_0^H, where the preconditioning forms it
  if preconditioning == "frobenius":
    # Not jnp.linalg.norm: its gradient at a zero matrix (a zero gradient) is NaN.
    wide = safe_divide(wide, safe_sqrt(jnp.sum(abs_sq(wide))) + eps)
  elif preconditioning == "spectral":
    wide = safe_divide(wide, jnp.linalg.norm(wide, ord=2) + eps)
  elif preconditioning == "aol":
    # Almost-orthogonal-layer rescaling: row i by 1 / sqrt(sum_j |A_ij|).
    A = wide @ wide.conj().T
    s = as_dtype(safe_rsqrt(jnp.maximum(jnp.sum(jnp.abs(A), axis=-1), eps)), wide.dtype)[:, None]
    wide, A = wide * s, A * s * s.T
  elif preconditioning == "schatten":
    # Divide by the Schatten-4 norm: ||X||_S4^2 = ||X X^H||_F.
    A = wide @ wide.conj().T
    s = as_dtype(safe_rsqrt(jnp.maximum(safe_sqrt(jnp.sum(abs_sq(A))), eps)), wide.dtype)
    wide, A = wide * s, A * (s * s)
  x, A = as_dtype(wide, x.dtype), None if A is None else as_dtype(A, x.dtype)
  # The coefficients and scales are real; a complex X takes them as complex with Im 0
  # (the explicit cast strict promotion asks for), which multiplies exactly as the reals.
  coeffs = as_dtype(coeffs, x.dtype)
  rows = [coeffs[i] for i in range(coeffs.shape[0])] if coeffs.ndim == 2 else [coeffs] * ns_steps
  for i, (a, b, c) in enumerate(rows):
    if i > 0 or A is None:
      A = x @ x.conj().T
    B = b * A + c * (A @ A)
    x = a * x + B @ x
  return x.T if transposed else x


def _orthogonalize(x: jax.Array, dims: MuonDimensionNumbers, coeffs: jax.Array, ns_steps: int,
                   preconditioning: str, eps: jax.Array) -> jax.Array:
  """Each matrix of ``x`` (as ``dims`` reads it) orthogonalised, in ``x``'s layout.

  Eagerly (concrete arrays), as one compiled kernel per shape, dtype and option:
  op by op, the iteration under ``vmap`` dispatched some 60 operations a leaf,
  each compiled on its first use (about 3 s of a first eager step on a CPU) and
  dispatched at every step after. The kernel is the program a jitted step runs
  (XLA may fuse a product into a sum there, so an eager update can differ from
  the op-by-op one in the last bits, as a jitted one does); traced, this is
  the iteration itself.
  """
  axes = _matrix_axes("scale_by_muon", x.shape, dims)
  if is_concrete((x, coeffs, eps)):
    return _orthogonalize_kernel(x, coeffs, eps, axes, ns_steps, preconditioning)
  return _orthogonalize_axes(x, coeffs, eps, axes, ns_steps, preconditioning)


def _orthogonalize_axes(x: jax.Array, coeffs: jax.Array, eps: jax.Array,
                        axes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
                        ns_steps: int, preconditioning: str) -> jax.Array:
  """:func:`_orthogonalize` of the leaf's ``(batch, reduction, output)`` axes."""
  order = axes[0] + axes[1] + axes[2]
  sizes = [math.prod(x.shape[a] for a in group) for group in axes]
  matrices = x.transpose(order).reshape(sizes)
  if sizes[0] == 1:
    # One matrix (a plain 2-D weight): not under vmap, whose batch of one makes every
    # product a batched one, twice the program to compile (0.44 s against 0.21 s for
    # a 4 x 5 matrix on a CPU) for the same arithmetic.
    done = _newton_schulz(matrices[0], coeffs, ns_steps, preconditioning, eps)[None]
  else:
    done = jax.vmap(lambda m: _newton_schulz(m, coeffs, ns_steps, preconditioning, eps))(
        matrices)
  return done.reshape([x.shape[a] for a in order]).transpose(np.argsort(order))


_orthogonalize_kernel = jax.jit(_orthogonalize_axes, static_argnums=(3, 4, 5))


def _ns_coeffs_array(stage: str, ns_coeffs: Any) -> tuple:
  if isinstance(ns_coeffs, str):
    if ns_coeffs not in _NS_COEFFS_PRESETS:
      raise ValueError(f"{stage}: ns_coeffs must be one of the presets "
                       f"{sorted(_NS_COEFFS_PRESETS)} or coefficients, got {ns_coeffs!r}")
    ns_coeffs = _NS_COEFFS_PRESETS[ns_coeffs]
  try:
    table = np.asarray(ns_coeffs, np.float64)
  except (TypeError, ValueError):  # rows of different lengths, or not numbers
    raise ValueError(f"{stage}: ns_coeffs must be a table of numbers of shape (3,) or (n, 3), "
                     f"got {ns_coeffs!r}") from None
  if not (table.ndim in (1, 2) and table.shape[-1] == 3 and table.size > 0):
    raise ValueError(f"{stage}: ns_coeffs must have shape (3,) or (n, 3), got {table.shape}")
  check_value(stage, "ns_coeffs", ns_coeffs, Range(vector=True))  # before float64 reads '3' or True
  return tuple(table.tolist()) if table.ndim == 1 else tuple(map(tuple, table.tolist()))


# ----------------------------------------------------------------------------
# Muon.


class MuonState(NamedTuple):
  """State of :func:`scale_by_muon`: the step ``count`` and the momentum ``mu``.

  The Newton-Schulz coefficients are a hyperparameter, held in ``hparams``
  (settable by name); ``state.ns_coeffs`` reads them, as optax's field does.
  """
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  mu: Any
  hparams: HParams

  @property
  def ns_coeffs(self) -> jax.Array:
    return self.hparams["ns_coeffs"]


@checks_flags
def scale_by_muon(ns_coeffs: tuple | str = _DEFAULT_NS_COEFFS, ns_steps: int = 5,
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
  :math:`X = U S V^\\top`, approximately (a complex :math:`X` takes its
  conjugate transpose for :math:`X^\\top`, and goes to its polar factor
  :math:`U V^H`). ``"aol"`` instead scales row
  :math:`i` of :math:`X_0 = X` by :math:`(\\max(\\sum_j |A_{0,ij}|, \\epsilon))^{-1/2}`
  at the first step, ``"schatten"`` divides it by
  :math:`\\max(\\|A_0\\|_F, \\epsilon)^{1/2}`. With ``adaptive=True``,
  :math:`u_t = \\mathrm{Re}\\langle \\hat m_t, \\operatorname{NS}(\\hat m_t)\\rangle\\,
  \\operatorname{NS}(\\hat m_t)` (the dual norm, summed over the whole leaf).

  Conventions: as optax, the momentum is bias-corrected; Jordan's reference code
  (``muon_update``) is not: it orthogonalises :math:`m_t`, or with Nesterov
  :math:`\\beta m_t + (1-\\beta) g_t`. Without Nesterov the correction is a
  scalar, which the normalisation of :math:`X_0` removes (up to
  :math:`\\epsilon`); with Nesterov it weighs :math:`m_t` against :math:`g_t`
  by :math:`(1-\\beta^t)/(1-\\beta^{t+1})` of the reference's weight, so the
  first steps differ (the first one does not: :math:`m_1 \\propto g_1`) and
  later ones agree as :math:`\\beta^t \\to 0`.

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
  works on any tree of matrices (optax's fails on a tree of several leaves); a table of
  ``ns_coeffs`` with more rows than ``ns_steps`` runs every row, as optax's
  docstring says (optax raises "Not enough coeffs"); ``"aol"`` and
  ``"schatten"`` use ``eps`` where optax uses a fixed 1e-8 (the same at the
  default); a zero matrix with ``eps = 0`` stays zero where optax gives NaN; the
  preconditioning runs in float32 for a float16 or bfloat16 matrix (Newton-Schulz in its
  dtype), where optax's float16 squares overflow: a matrix of Frobenius norm above 256 steps
  by 0 there (by NaN with ``"aol"`` or ``"schatten"``).
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
  check_integer_option(stage, "ns_steps", ns_steps, POSITIVE_INT)
  spec = HParamSpec(stage, beta=(beta, UNIT_HALF_OPEN),
                    eps=(eps, NONNEGATIVE),
                    ns_coeffs=(_ns_coeffs_array(stage, ns_coeffs), Range(vector=True)))
  ns_steps = int(ns_steps)  # the length of a Python loop: 5.0 is 5

  def init(params):
    return MuonState(zero_count(), tree.accumulator_like(params, dtype=mu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state(stage, state, MuonState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage=stage)
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)

    def moment(g, m):
      m_new = ema_moment(g, m, h["beta"], order=1)
      return debiased_first_moment(g, m_new, h["beta"], count, nesterov), m_new.astype(m.dtype)

    mu_hat, mu = tree.map_multi(moment, 2, updates, state.mu)

    def orthogonal(x, dims):
      if dims is None:
        return x
      o = _orthogonalize(x, dims, h["ns_coeffs"], ns_steps, preconditioning, h["eps"])
      if not adaptive:
        return o
      # The dual norm <X, O> in float32 at least: a sum over the matrix, past float16's
      # max (Inf updates) where the scaled step fits (a 512 x 512 matrix of entries ~10).
      wide = at_least_float32(o)
      dual = jnp.real(jnp.sum(as_dtype(x, wide).conj() * as_dtype(o, wide)))
      return as_dtype(as_dtype(dual, wide) * as_dtype(o, wide), o.dtype)

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
        # A matrix with no rows in (fan_in = 0) is empty: any factor scales it.
        ratio = fan_out / fan_in if fan_in else 1.0
        return x * as_dtype(math.sqrt(max(1.0, ratio)), x.dtype)
      return x * (as_dtype(math.sqrt(max(fan_in, fan_out)), x.dtype)
                  * as_dtype(h["consistent_rms"], x.dtype))
    return _map_matrices(stage, weight_dimension_numbers, leaf, updates)

  entries = {} if consistent_rms is None else {"consistent_rms": (consistent_rms, POSITIVE)}
  return stateless(scale_by_shape, name=stage, per_step=None, **entries)


class _MuonLeaves:
  """A mask: the leaves that have dimension numbers (``muon=True``) or those that do not."""

  def __init__(self, spec: WeightDimNumOrFn, muon: bool):
    self.spec, self.muon = spec, muon

  def __call__(self, params: Params) -> Params:
    flags = [(d is not None) == self.muon for d in _dims_per_leaf("muon", self.spec, params)]
    return jax.tree.unflatten(jax.tree.structure(params, is_leaf=tree.is_masked), flags)

  def __repr__(self) -> str:
    return "muon_leaves" if self.muon else "other_leaves"


@checks_flags
@names_its_arguments
def muon(learning_rate: ScalarOrSchedule, ns_coeffs: tuple | str = _DEFAULT_NS_COEFFS,
         ns_steps: int = 5, beta: ScalarOrSchedule = 0.95, eps: ScalarOrSchedule = 1e-8,
         weight_decay: ScalarOrSchedule = 0.0, weight_decay_mask: Mask | None = None,
         mu_dtype: Any = None, *, nesterov: bool = True, adaptive: bool = False,
         preconditioning: Literal["frobenius", "spectral", "aol", "schatten"] = "frobenius",
         adam_b1: ScalarOrSchedule = 0.9, adam_b2: ScalarOrSchedule = 0.999,
         adam_eps_root: ScalarOrSchedule = 0.0, adam_weight_decay: ScalarOrSchedule = 0.0,
         adam_learning_rate: ScalarOrSchedule | None = None,
         muon_weight_dimension_numbers: WeightDimNumOrFn | None = None,
         consistent_rms: ScalarOrSchedule | None = None, nu_dtype: Any = None) -> Chain:
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

  Conventions, as optax: the matrices' momentum is bias-corrected (see
  :func:`scale_by_muon`), and ``nesterov`` applies to both parts, so by default
  the other leaves take NAdam's step; Jordan's ``MuonWithAuxAdam`` gives them
  plain Adam (betas (0.9, 0.95), eps 1e-10).

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
    nu_dtype: dtype of the Adam leaves' second moment (see
      :func:`gradtx.scale_by_adam`), gradtx's addition to optax's arguments.
      On float16 params give ``jnp.float32``: float16 rounds ``eps=1e-8`` and
      small :math:`(1-\\beta_2) g^2` to 0, so those leaves step by NaN or Inf.

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
                                nesterov=nesterov, nu_dtype=nu_dtype), others),
      adam_decay=masked(add_decayed_weights(adam_weight_decay), others),
      adam_lr=masked(scale_by_learning_rate(adam_learning_rate), others))
