"""Memory-light second moments: Adafactor's factored RMS and SM3's cover accumulators.

Both keep, for a matrix or higher-rank leaf, statistics along its axes rather
than one entry per parameter. Those axis reductions need the leaf's shape, so
the per-leaf rules run through :func:`gradtx.tree.map_leaves`: in packed mode
they run batched over each run of equally shaped leaves, and the statistics
are held per run (:class:`gradtx.packed.PackedLeaves`). The per-leaf scalars
that Adafactor's other stages use (clipping by block RMS, the parameter
scale) go through :mod:`gradtx.tree`'s ``block_*`` helpers.

Both take a ``nu_dtype`` for their statistics of squared gradients (``None``:
the params' dtype), gradtx's addition to optax's arguments, as the rules of
:mod:`gradtx.transforms.moments` do: on float16 params the statistics are
updated and divided into the step in float32 with ``nu_dtype=jnp.float32``,
and the step is cast back to the gradients' dtype.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics, tree
from gradtx.core import (NONNEGATIVE, NONNEGATIVE_INT, UNIT, UNIT_HALF_OPEN,
                         GradientTransformation, HParams, HParamSpec, ScalarOrSchedule,
                         check_callable, check_integer_option, check_state, checks_flags, read_once)
from gradtx.errors import StructureError
from gradtx.numerics import abs_sq, as_dtype, compute_dtype, ema_moment, safe_increment

__all__ = ["FactoredState", "ScaleBySM3State", "scale_by_factored_rms", "scale_by_sm3"]


class FactoredState(NamedTuple):
  """State of :func:`scale_by_factored_rms`.

  ``v_row`` and ``v_col`` hold the factored statistics of factored leaves
  (a 1-entry placeholder otherwise); ``v`` holds the full second moment of
  the other leaves (a 1-entry placeholder for factored ones), as in optax.
  All three are in ``nu_dtype`` (the params' dtype by default).
  """
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  v_row: Any
  v_col: Any
  v: Any
  hparams: HParams


def _factored_dims(shape: tuple[int, ...], factored: bool,
                   min_dim_size_to_factor: int) -> tuple[int, int] | None:
  """``(row_axis, col_axis)``: the second largest and the largest axis, or None."""
  if not factored or len(shape) < 2:
    return None
  order = np.argsort(shape)
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def _zeros_reduced(p: jax.Array, axis: int | tuple[int, ...], dtype: Any) -> jax.Array:
  """Zeros shaped like ``p`` summed over ``axis``, with the sharding that sum would have.

  A statistic of a sharded parameter is sharded with it from ``init`` on (as
  ``jnp.zeros_like`` shards a moment); plain ``jnp.zeros`` would replicate it,
  and the step would compile again once the state came back sharded.
  """
  return jnp.zeros_like(jax.eval_shape(lambda x: jnp.sum(x, axis=axis), p), dtype)


def _other_axes(ndim: int, axis: int) -> tuple[int, ...]:
  """Every axis of an ``ndim``-array but ``axis``: what SM3's accumulator of ``axis`` covers."""
  return tuple(a for a in range(ndim) if a != axis)


def _decay_rate_pow(i: jax.Array, exponent: jax.Array) -> jax.Array:
  """Adafactor's increasing decay :math:`\\hat\\beta_{2,t} = 1 - t^{-c}`, given ``i = t - 1``."""
  return 1 - (i + 1) ** (-exponent)


@checks_flags
def scale_by_factored_rms(factored: bool = True, decay_rate: ScalarOrSchedule = 0.8,
                          step_offset: int = 0, min_dim_size_to_factor: int = 128,
                          epsilon: ScalarOrSchedule = 1e-30,
                          decay_rate_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
                          *, nu_dtype: Any = None) -> GradientTransformation:
  """Adafactor's step: divide by a (factored) running root mean square of the gradient.

  .. math::
    \\hat\\beta_{2,t} = 1 - \\max(t - t_0, 1)^{-c}, \\quad G_t = g_t^2 + \\epsilon_1

  For a leaf whose two largest axes are both at least ``min_dim_size_to_factor``
  (rows :math:`i`, columns :math:`j` = the second largest and largest axes),

  .. math::
    R_t = \\hat\\beta_{2,t} R_{t-1} + (1-\\hat\\beta_{2,t}) \\operatorname{mean}_j G_t, \\quad
    C_t = \\hat\\beta_{2,t} C_{t-1} + (1-\\hat\\beta_{2,t}) \\operatorname{mean}_i G_t, \\quad
    V_t = \\frac{R_t C_t}{\\operatorname{mean}_i R_t}

  and otherwise :math:`V_t = \\hat\\beta_{2,t} V_{t-1} + (1-\\hat\\beta_{2,t}) G_t`;
  then :math:`u_t = g_t / \\sqrt{V_t}`.

  Args:
    factored: factor the second moment of large enough matrices.
    decay_rate: :math:`c \\in [0, 1]`, default 0.8.
    step_offset: :math:`t_0 \\ge 0`, default 0, an integer hyperparameter
      (settable without a new trace): the decay counts from step
      :math:`t_0 + 1`, and before it :math:`\\hat\\beta_2 = 0` (the statistic
      is the current :math:`G_t`). Differs from optax 0.2.8, where every step
      before :math:`t_0 + 1` gives NaN, which then stays in the state.
    min_dim_size_to_factor: factor only if both largest axes are this long, an
      integer :math:`\\ge 0`, default 128.
    epsilon: :math:`\\epsilon_1 \\ge 0`, default 1e-30.
    decay_rate_fn: ``fn(i, c) -> beta2`` with ``i = max(t - 1 - t_0, 0)`` the number
      of earlier steps, as optax's; default :math:`1 - (i+1)^{-c}` (computed in
      the wider of the parameters' dtype and ``nu_dtype``, where optax computes
      it in float32).
    nu_dtype: dtype of :math:`R`, :math:`C` and :math:`V` (``v_row``, ``v_col``,
      ``v``); ``None`` uses the params' dtype. gradtx's addition to optax's
      arguments. In float16 ``epsilon=1e-30`` is 0 and a :math:`g^2` below
      3e-8 is 0, so a statistic is 0 and the step is 0/0 = NaN or :math:`g/0`
      = Inf; :func:`gradtx.adafactor`'s clipping by the leaf's RMS then makes
      the whole leaf's step NaN, or 0 beside the NaN. ``jnp.float32`` keeps
      them. For a factored leaf this costs little: :math:`R` and :math:`C`
      hold one entry per row and per column, not one per parameter.

  References:
    Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost*, ICML 2018.
  """
  spec = HParamSpec("scale_by_factored_rms", decay_rate=(decay_rate, UNIT),
                    step_offset=(step_offset, NONNEGATIVE_INT), epsilon=(epsilon, NONNEGATIVE))
  # A structural option (it decides the state's shapes), so not in the state.
  check_integer_option("scale_by_factored_rms", "min_dim_size_to_factor", min_dim_size_to_factor,
                       NONNEGATIVE_INT)
  if decay_rate_fn is not None:
    check_callable("scale_by_factored_rms", "decay_rate_fn", decay_rate_fn,
                   "None or a function fn(i, c) -> beta2")
  beta2_at = decay_rate_fn or _decay_rate_pow

  def state_shapes(shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The shapes of ``v_row``, ``v_col`` and ``v`` for a leaf of ``shape``; (1,) where unused."""
    dims = _factored_dims(shape, factored, min_dim_size_to_factor)
    if dims is None:
      return (1,), (1,), tuple(shape)
    row, col = dims
    return tuple(np.delete(shape, col)), tuple(np.delete(shape, row)), (1,)

  def init(params):
    def leaf(p):
      p = jnp.asarray(p)
      dtype = numerics.state_dtype(p, nu_dtype)  # complex for a complex leaf
      dims = _factored_dims(p.shape, factored, min_dim_size_to_factor)
      # A fresh placeholder each time: one array in two fields is one buffer, which
      # jax.jit(donate_argnums=...) refuses to donate twice.
      unused = lambda: jnp.zeros((1,), dtype)  # noqa: E731
      if dims is None:
        return unused(), unused(), jnp.zeros_like(p, dtype)
      row, col = dims
      return _zeros_reduced(p, col, dtype), _zeros_reduced(p, row, dtype), unused()

    v_row, v_col, v = tree.map_leaves(leaf, (False, False, False), params)
    return FactoredState(numerics.zero_count(), v_row, v_col, v, spec.init())

  def check_shapes(path, g, *statistics):
    if tree.is_masked(g):  # and so are its statistics: update checked v_row against it
      return
    if tree._is_packed(g):  # a packed tree's statistics are per leaf of its layout
      for x in statistics:
        if getattr(x, "layout", None) != g.layout:
          raise StructureError(
              f"scale_by_factored_rms: updates and state differ at key path "
              f"{tree.keystr(path)}: they are packed with different layouts: "
              f"{g.layout.difference(x.layout, 'updates', 'state')}")
      return
    if tuple(x.shape for x in statistics) != state_shapes(g.shape):
      raise StructureError(
          f"scale_by_factored_rms: updates and state differ in shape at key path "
          f"{tree.keystr(path)}: {tuple(g.shape)} in updates, while state holds the "
          f"statistics of another shape (v_row {statistics[0].shape}, v_col "
          f"{statistics[1].shape}, v {statistics[2].shape})")

  def update(updates, state, params=None, **extra):
    check_state("scale_by_factored_rms", state, FactoredState)
    del params, extra
    tree.check_structure(state.v_row, updates, "state.v_row", "updates", check_shapes=False,
                         stage="scale_by_factored_rms")
    jax.tree_util.tree_map_with_path(check_shapes, updates, state.v_row, state.v_col, state.v,
                                     is_leaf=lambda x: tree.is_masked(x) or tree._is_packed(x))
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)
    earlier_steps = jnp.maximum(state.count - h["step_offset"], 0)  # i, once for all leaves

    def leaf(g, v_row, v_col, v):
      dims = _factored_dims(g.shape, factored, min_dim_size_to_factor)
      # The wider of g's and the statistics' dtypes (nu_dtype); g's own by default.
      dtype = compute_dtype(g, v if dims is None else v_row)
      g_ = as_dtype(g, dtype)
      beta2 = as_dtype(beta2_at(earlier_steps.astype(dtype), as_dtype(h["decay_rate"], dtype)),
                       dtype)
      G = abs_sq(g_, dtype) + as_dtype(h["epsilon"], dtype)  # |g|^2, squared after widening
      if dims is None:
        v_new = (beta2 * as_dtype(v, dtype) + (1 - beta2) * G).astype(v.dtype)
        u = g_ * jax.lax.rsqrt(v_new.astype(dtype))
        return u.astype(g.dtype), v_row, v_col, v_new
      row, col = dims
      R = (beta2 * as_dtype(v_row, dtype)
           + (1 - beta2) * jnp.mean(G, axis=col)).astype(v_row.dtype)
      C = (beta2 * as_dtype(v_col, dtype)
           + (1 - beta2) * jnp.mean(G, axis=row)).astype(v_col.dtype)
      R_, C_ = as_dtype(R, dtype), as_dtype(C, dtype)  # as stored
      R_axis_of_rows = row - 1 if row > col else row  # the row axis once col is reduced
      row_factor = jax.lax.rsqrt(R_ / jnp.mean(R_, axis=R_axis_of_rows, keepdims=True))
      col_factor = jax.lax.rsqrt(C_)
      u = g_ * jnp.expand_dims(row_factor, col) * jnp.expand_dims(col_factor, row)
      return u.astype(g.dtype), R, C, v

    updates, v_row, v_col, v = tree.map_leaves(leaf, (True, False, False, False), updates,
                                               state.v_row, state.v_col, state.v)
    return updates, FactoredState(count, v_row, v_col, v, hparams)

  return GradientTransformation(init, update, name="scale_by_factored_rms", spec=spec,
                                options=dict(factored=factored,
                                             min_dim_size_to_factor=min_dim_size_to_factor,
                                             decay_rate_fn=decay_rate_fn, nu_dtype=nu_dtype))


class ScaleBySM3State(NamedTuple):
  """State of :func:`scale_by_sm3`: per-axis accumulators ``mu`` (a list per leaf, in
  ``nu_dtype``), momentum ``nu`` (optax's names)."""
  mu: Any
  nu: Any
  hparams: HParams


def scale_by_sm3(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 1.0,
                 eps: ScalarOrSchedule = 1e-8, *, nu_dtype: Any = None) -> GradientTransformation:
  """SM3-II: Adagrad with one accumulator per axis slice, their minimum covering each entry.

  For a leaf of rank :math:`r \\ge 2` with accumulators :math:`\\mu^{(a)}` per
  axis :math:`a`,

  .. math::
    \\nu_t(i) = (1-\\beta_2)' g_t(i)^2 + \\beta_2 \\min_a \\mu^{(a)}_{t-1}(i_a), \\quad
    \\mu^{(a)}_t(k) = \\max_{i:\\, i_a = k} \\nu_t(i), \\\\
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) \\frac{g_t}{\\sqrt{\\nu_t + \\epsilon}}

  with :math:`(1-\\beta_2)' = 1` when :math:`\\beta_2 = 1` (the paper's sum)
  and :math:`g/\\sqrt{\\nu+\\epsilon} = 0` where :math:`\\nu = 0`; :math:`u_t = m_t`.
  Leaves of rank 0 or 1 keep one accumulator per entry (diagonal Adagrad).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, the momentum, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1]`, default 1 (accumulate, as the paper).
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    nu_dtype: dtype of the accumulators :math:`\\mu^{(a)}` (the state's ``mu``;
      the momentum ``nu`` keeps the params' dtype); ``None`` uses the params'
      dtype. gradtx's addition to optax's arguments. In float16 ``eps=1e-8`` is
      0, a :math:`g^2` below 6e-5 loses digits (a subnormal) and one below 3e-8
      is 0: steps are off by over 10%, and an entry whose :math:`\\nu` is 0
      does not move; ``jnp.float32`` keeps them.

  Differs from optax 0.2.8, which fails on scalar (rank-0) leaves.

  References:
    Anil et al., *Memory-Efficient Adaptive Optimization*, NeurIPS 2019.
  """
  spec = HParamSpec("scale_by_sm3", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT),
                    eps=(eps, NONNEGATIVE))

  def accumulators(p: jax.Array) -> list[jax.Array]:
    p = jnp.asarray(p)
    dtype = numerics.state_dtype(p, nu_dtype)
    if p.ndim < 2:
      return [jnp.zeros_like(p, dtype)]
    return [_zeros_reduced(p, _other_axes(p.ndim, axis), dtype) for axis in range(p.ndim)]

  def init(params):
    tree.check_real(params, "scale_by_sm3")
    mu, = tree.map_leaves(lambda p: (accumulators(p),), (False,), params)
    return ScaleBySM3State(mu, tree.zeros_like(params), spec.init())

  def update(updates, state, params=None, **extra):
    check_state('scale_by_sm3', state, ScaleBySM3State)
    del params, extra
    tree.check_structure(state.nu, updates, "state.nu", "updates", stage="scale_by_sm3")
    h, hparams = spec.step(state.hparams)
    # Once per step, not in every leaf's kernel: the weight of g^2 (1 where b2 = 1).
    weight = read_once({"w": jnp.where(h["b2"] == 1, 1, 1 - h["b2"])})["w"]

    def leaf(g, mu, m):
      dtype = compute_dtype(g, m, *mu)  # mu may be wider (nu_dtype)
      g_ = g.astype(dtype)
      beta2, new_weight = as_dtype(h["b2"], dtype), as_dtype(weight, dtype)
      if g.ndim < 2:
        cover = mu[0].astype(dtype)
      else:
        rank = g.ndim
        slices = [a.astype(dtype).reshape([n if k == axis else 1 for k in range(rank)])
                  for axis, (a, n) in enumerate(zip(mu, g.shape))]
        cover = functools.reduce(jnp.minimum, slices)
      nu = new_weight * abs_sq(g_) + beta2 * cover
      # g times the guarded root, as optax does: a NaN g (whose nu is NaN) stays NaN.
      h_t = g_ * jnp.where(nu > 0, jax.lax.rsqrt(jnp.where(nu > 0, nu, 1)
                                                  + as_dtype(h["eps"], dtype)), 0)
      m_new = ema_moment(h_t, m, h["b1"], order=1)
      if g.ndim < 2:
        mu_new = [nu.astype(mu[0].dtype)]
      else:
        # initial=0 (nu >= 0) for a zero-size leaf, (3, 0), which has no entries to take
        # the max of; only there: XLA gives the max with 0 a kernel of its own.
        initial = 0 if g.size == 0 else None
        mu_new = [jnp.max(nu, axis=_other_axes(g.ndim, axis),
                          initial=initial).astype(a.dtype)
                  for axis, a in enumerate(mu)]
      return m_new.astype(g.dtype), mu_new, m_new.astype(m.dtype)

    updates, mu, nu = tree.map_leaves(leaf, (True, False, True), updates, state.mu, state.nu)
    return updates, ScaleBySM3State(mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_sm3", spec=spec,
                                options=dict(nu_dtype=nu_dtype))
