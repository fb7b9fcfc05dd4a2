"""optax.contrib: Sophia, with Hutchinson's estimator of the Hessian's diagonal.

Sophia divides a momentum by a clipped estimate of the Hessian's diagonal;
the default estimate is Hutchinson's, from a Hessian-vector product of the
objective passed to ``update`` as ``obj_fn``. The calling conventions are
optax 0.2.8's, so code written for ``optax.contrib`` runs unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.chain import Chain, in_stage, named_chain
from gradtx.core import (NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, POSITIVE_INT, POSITIVE_OR_INF,
                         UNIT_HALF_OPEN, GradientTransformation, HParams, HParamSpec,
                         ScalarOrSchedule, as_transformation, branch, check_integer_option,
                         check_state, checks_flags, require_params, require_params_like,
                         names_its_arguments)
from gradtx.errors import missing_extra_argument
from gradtx.numerics import (as_dtype, bias_correction, compute_dtype, ema_moment, safe_increment,
                             zero_count)
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.noise import as_key, fresh_key, shown_key
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["HutchinsonState", "SophiaState", "hutchinson_estimator_diag_hessian", "scale_by_sophia",
           "sophia"]


# ----------------------------------------------------------------------------
# Hutchinson's estimator of the Hessian's diagonal.


class HutchinsonState(NamedTuple):
  """State of :func:`hutchinson_estimator_diag_hessian`: the random ``key``, split at each step."""
  key: jax.Array
  hparams: HParams


_OBJ_FN_MISSING = ("{stage} needs the objective to differentiate twice: call "
                   "update(grads, state, params, obj_fn=lambda params: loss(params, batch))")


def hutchinson_estimator_diag_hessian(random_seed: Any = None) -> GradientTransformation:
  """Hutchinson's unbiased estimate of the diagonal of the Hessian of ``obj_fn``.

  .. math::
    \\hat h = v \\odot (H v), \\qquad H = \\nabla^2 f(\\theta), \\qquad
    v_i \\sim \\operatorname{Uniform}\\{-1, +1\\}, \\qquad
    \\mathbb E[\\hat h] = \\operatorname{diag}(H)

  :math:`Hv` is one forward-over-reverse product (a gradient's cost, twice),
  never forming :math:`H`. The incoming updates are ignored: the output is
  the estimate. ``update`` needs ``params`` and the objective as
  ``obj_fn=lambda params: loss`` (a scalar function of the params alone), as
  in optax; a fresh sub-key is split from the key in the state at each step,
  and one key per leaf (in leaf order, as optax does), so the same key draws
  optax's probe vectors and a packed tree draws the unpacked tree's.

  Differs from optax 0.2.8: each leaf's probe is drawn in that leaf's dtype
  (the values are :math:`\\pm 1`, exact in any float dtype); optax casts every
  probe to the lowest dtype among the params, which ``jax.jvp`` rejects for a
  tree of mixed float dtypes.

  Args:
    random_seed: a ``jax.random.key``, a raw ``uint32[2]`` key
      (``jax.random.PRNGKey``) or an int seed; default ``None`` uses seed 0,
      as optax does.

  References:
    Hutchinson, *A stochastic estimator of the trace of the influence matrix
    for Laplacian smoothing splines*, 1989; Bekas, Kokiopoulou & Saad, *An
    estimator for the diagonal of a matrix*, 2007.

  Example: on a diagonal quadratic every probe gives the exact diagonal.

    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> f = lambda x: jnp.sum(jnp.array([1.0, 2.0, 3.0]) * x ** 2)
    >>> tx = gtx.contrib.hutchinson_estimator_diag_hessian(random_seed=0)
    >>> x = jnp.zeros(3)
    >>> tx.update(x, tx.init(x), x, obj_fn=f)[0]
    Array([2., 4., 6.], dtype=float32)
  """
  start = as_key("hutchinson_estimator_diag_hessian", random_seed, name="random_seed")
  spec = HParamSpec("hutchinson_estimator_diag_hessian")

  def init(params):
    del params
    return HutchinsonState(fresh_key(start), spec.init())

  def update(updates, state, params=None, *, obj_fn: Callable[[Any], jax.Array] | None = None,
             **extra):
    check_state("hutchinson_estimator_diag_hessian", state, HutchinsonState)
    del updates, extra
    params = require_params("hutchinson_estimator_diag_hessian", params)
    if obj_fn is None:
      raise missing_extra_argument(
          _OBJ_FN_MISSING.format(stage="hutchinson_estimator_diag_hessian"))
    key, probe_key = jax.random.split(state.key)
    leaf_keys = tree.split_key_per_leaf(probe_key, params)

    def draw(p, leaf_key):
      return (jax.random.rademacher(leaf_key, p.shape, p.dtype),)

    # Per leaf with its own shape (map_leaves), so a packed tree draws the tree's probes.
    probes, = tree.map_leaves(draw, (True,), params, leaf_keys)
    # gtx.second_order.hvp takes one flat vector (one dtype for all leaves); the
    # probes are a tree in the params' own dtypes, so the product is taken on the tree.
    hessian_probes = jax.jvp(jax.grad(obj_fn), (params,), (probes,))[1]
    estimate = tree.tree_map(lambda hv, v: hv * v.astype(hv.dtype), hessian_probes, probes)
    return estimate, HutchinsonState(key, state.hparams)

  return GradientTransformation(init, update, name="hutchinson_estimator_diag_hessian",
                                spec=spec, options=dict(random_seed=shown_key(random_seed)))


# ----------------------------------------------------------------------------
# Sophia.


class SophiaState(NamedTuple):
  """State of :func:`scale_by_sophia` (optax's field names).

  Attributes:
    count: the number of steps taken (int32).
    mu: the momentum :math:`m` (in ``mu_dtype``).
    nu: the moving average :math:`h` of the Hessian's diagonal (in ``nu_dtype``,
      by default the params' dtypes).
    hessian_fn_state: the state of ``hessian_diagonal_fn``; its hyperparameters,
      if any, read under Sophia's stage name.
    hparams: ``b1``, ``b2``, ``eps``, ``gamma``, ``clip_threshold`` (unless
      ``None``) and ``update_interval``.
  """
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  mu: Any
  nu: Any
  hessian_fn_state: Any
  hparams: HParams


@checks_flags
def scale_by_sophia(b1: ScalarOrSchedule = 0.965, b2: ScalarOrSchedule = 0.99,
                    eps: ScalarOrSchedule = 1e-8, gamma: ScalarOrSchedule = 0.01,
                    clip_threshold: ScalarOrSchedule | None = 1.0,
                    update_interval: int = 10,
                    hessian_diagonal_fn: Any = hutchinson_estimator_diag_hessian(),
                    mu_dtype: Any = None, verbose: bool = False,
                    print_win_rate_every_n_steps: int = 0, *,
                    nu_dtype: Any = None) -> GradientTransformation:
  """Sophia's step: momentum divided by a clipped estimate of the Hessian's diagonal.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
    \\hat m_t = \\frac{m_t}{1-\\beta_1^t}, \\qquad
    u_t = \\operatorname{clip}\\left(\\frac{\\hat m_t}{\\max(\\gamma h_{t-1}, \\epsilon)},
    -\\rho, \\rho\\right)

  and, every :math:`k` steps (at steps :math:`t = 1, k+1, 2k+1, \\ldots`),
  with :math:`\\hat h_t` from ``hessian_diagonal_fn``:

  .. math:: h_t = \\beta_2 h_{t-1} + (1-\\beta_2)\\, \\hat h_t

  (:math:`h_t = h_{t-1}` on the other steps; :math:`h_0 = 0`, so the first
  step is a clipped sign step). ``hessian_diagonal_fn`` is called with the
  gradient, the params and every extra argument of ``update`` (for the
  default Hutchinson estimator, ``obj_fn``).

  Conventions, as optax and levanter: the momentum is bias-corrected (the
  paper's is not); the step at which :math:`h` is refreshed uses the previous
  :math:`h` (the paper uses the refreshed one); the default estimator probes
  with Rademacher vectors (the paper, Gaussian ones).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.965.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.99 (applied once per
      ``update_interval`` steps: effectively :math:`1 - (1-\\beta_2)/k` per step).
    eps: :math:`\\epsilon > 0`, the floor of the denominator, default 1e-8.
    gamma: :math:`\\gamma \\ge 0`, scales the Hessian estimate, default 0.01.
    clip_threshold: :math:`\\rho > 0`, default 1; ``None`` does not clip
      (structural), nor does ``math.inf`` (a value, which can be set later).
    update_interval: :math:`k \\ge 1`, steps between refreshes of :math:`h`, default 10.
    hessian_diagonal_fn: a transformation that returns an estimate of the
      Hessian's diagonal from ``(grads, state, params, **extra)``; default
      :func:`hutchinson_estimator_diag_hessian` (Sophia-H). Under data
      parallelism it must average its estimate across devices.
    mu_dtype: dtype of :math:`m`; default the params'.
    verbose: print the *win rate* (the fraction of entries not clipped; the
      paper suggests keeping it between 0.1 and 0.5 by tuning
      :math:`\\gamma`) every ``print_win_rate_every_n_steps`` steps (0: never).
    print_win_rate_every_n_steps: see ``verbose``, default 0.
    nu_dtype: dtype of :math:`h`; ``None`` uses the params' dtype. gradtx's
      addition to optax's arguments. On float16 params give ``jnp.float32``:
      float16 rounds ``eps=1e-8`` (the floor of the denominator) and a small
      :math:`\\gamma h` to 0, so an entry of zero curvature and zero momentum
      (the first step's :math:`h_0 = 0` too) steps by 0/0 = NaN. The ratio is
      then taken in float32.

  References:
    Liu, Li, Hall, Liang & Ma, *Sophia: A Scalable Stochastic Second-order
    Optimizer for Language Model Pre-training*, ICLR 2024 (arXiv:2305.14342).

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> f = lambda x: jnp.sum(x ** 2)
    >>> tx = gtx.contrib.scale_by_sophia(b1=0.0, b2=0.0, gamma=4.0, update_interval=1)
    >>> x = jnp.array([1.0, -2.0])
    >>> state = tx.init(x)
    >>> u, state = tx.update(jax.grad(f)(x), state, x, obj_fn=f)  # h_0 = 0: clipped
    >>> u, state.nu  # h_1: the Hessian's diagonal, 2
    (Array([ 1., -1.], dtype=float32), Array([2., 2.], dtype=float32))
    >>> tx.update(jax.grad(f)(x), state, x, obj_fn=f)[0]  # g / (gamma h) = (2, -4) / 8
    Array([ 0.25, -0.5 ], dtype=float32)
  """
  check_integer_option("scale_by_sophia", "print_win_rate_every_n_steps",
                       print_win_rate_every_n_steps, NONNEGATIVE_INT)
  hessian_diagonal_fn = as_transformation(hessian_diagonal_fn, "scale_by_sophia",
                                          "hessian_diagonal_fn")
  entries = dict(b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN), eps=(eps, POSITIVE),
                 gamma=(gamma, NONNEGATIVE))
  if clip_threshold is not None:
    entries["clip_threshold"] = (clip_threshold, POSITIVE_OR_INF)
  entries["update_interval"] = (update_interval, POSITIVE_INT)
  spec = HParamSpec("scale_by_sophia", **entries)

  def init(params):
    # A Hessian diagonal and an elementwise clip are for real parameters.
    tree.check_real(params, "scale_by_sophia")
    return SophiaState(zero_count(), tree.accumulator_like(params, dtype=mu_dtype),
                       tree.accumulator_like(params, dtype=nu_dtype),
                       hessian_diagonal_fn.init(params), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_sophia", state, SophiaState)
    params = require_params_like("scale_by_sophia", updates, params, state, "mu")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)
    grads = updates

    def leaf(g, m, nu):
      m_new = ema_moment(g, m, h["b1"], order=1)
      m_hat = bias_correction(m_new, h["b1"], count)
      dtype = compute_dtype(m_hat, nu)
      # The floor eps > 0 keeps the ratio finite where h is 0 (the first step, zero curvature).
      ratio = as_dtype(m_hat, dtype) / jnp.maximum(
          as_dtype(h["gamma"], dtype) * as_dtype(nu, dtype), as_dtype(h["eps"], dtype))
      if clip_threshold is not None:
        rho = as_dtype(h["clip_threshold"], dtype)
        ratio = jnp.clip(ratio, -rho, rho)
      return ratio.astype(g.dtype), m_new.astype(m.dtype)

    updates, mu = tree.map_multi(leaf, 2, updates, state.mu, state.nu)
    if verbose and clip_threshold is not None and print_win_rate_every_n_steps > 0:
      _print_win_rate(updates, h["clip_threshold"], count, print_win_rate_every_n_steps)

    def refresh(operands):
      hessian_fn_state, nu = operands
      estimate, hessian_fn_state = hessian_diagonal_fn.update(grads, hessian_fn_state, params,
                                                              **extra)
      tree.check_structure(nu, estimate, "state.nu", "the Hessian diagonal estimate")
      nu = tree.tree_map(lambda d, n: ema_moment(d, n, h["b2"], order=1).astype(n.dtype),
                         estimate, nu)
      return hessian_fn_state, nu

    due = state.count % h["update_interval"] == 0
    operands = (state.hessian_fn_state, state.nu)
    with in_stage("hessian_diagonal_fn"):
      hessian_fn_state, nu = branch(due, refresh, lambda ops: ops, operands)
    return updates, SophiaState(count, mu, nu, hessian_fn_state, hparams)

  # A clip threshold shows with the hyperparameters; its absence, as an option.
  unclipped = {} if clip_threshold is not None else dict(clip_threshold=None)
  return GradientTransformation(init, update, name="scale_by_sophia", spec=spec, options=dict(
      **unclipped, hessian_diagonal_fn=hessian_diagonal_fn, mu_dtype=mu_dtype, verbose=verbose,
      print_win_rate_every_n_steps=print_win_rate_every_n_steps, nu_dtype=nu_dtype))


def _print_win_rate(updates: Any, rho: jax.Array, count: jax.Array, every: int) -> None:
  """Prints the fraction of entries that were not clipped, every ``every`` steps.

  A tree without leaves (every parameter an integer buffer, or none) has no rate.
  """
  leaves = jax.tree.leaves(updates)
  if not leaves:
    return

  def report():
    # Counted inside the branch, so that the steps that print nothing skip the count.
    inside = sum(jnp.sum(jnp.abs(u) < as_dtype(rho, u.dtype)).astype(jnp.int32) for u in leaves)
    size = sum(u.size for u in leaves)
    jax.debug.print("Sophia optimizer win rate: {}", inside.astype(jnp.float32) / size)

  branch(count % every == 0, report, lambda: None)


@checks_flags
@names_its_arguments
def sophia(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.965,
           b2: ScalarOrSchedule = 0.99, eps: ScalarOrSchedule = 1e-8,
           weight_decay: ScalarOrSchedule = 1e-4, weight_decay_mask: Mask | None = None,
           gamma: ScalarOrSchedule = 0.01, clip_threshold: ScalarOrSchedule | None = 1.0,
           update_interval: int = 10,
           hessian_diagonal_fn: Any = hutchinson_estimator_diag_hessian(),
           mu_dtype: Any = None, verbose: bool = False,
           print_win_rate_every_n_steps: int = 0, *, nu_dtype: Any = None) -> Chain:
  """Sophia: clipped, diagonally preconditioned momentum, with decoupled weight decay.

  .. math::
    \\theta_{t+1} = \\theta_t - \\eta_t \\left(
    \\operatorname{clip}\\left(\\frac{\\hat m_t}{\\max(\\gamma h_{t-1}, \\epsilon)},
    -\\rho, \\rho\\right) + \\lambda \\theta_t \\right)

  with :math:`\\hat m_t` the bias-corrected momentum of the gradients and
  :math:`h` a moving average of an estimate of the Hessian's diagonal,
  refreshed every ``update_interval`` steps (see :func:`scale_by_sophia`).
  With the default estimator (Hutchinson's, Sophia-H), pass the objective to
  ``update``, as in optax::

    obj_fn = lambda params: loss(params, batch)
    updates, state = tx.update(grads, state, params, obj_fn=obj_fn)

  Args:
    learning_rate: :math:`\\eta`, a float or a schedule.
    b1: :math:`\\beta_1`, default 0.965.
    b2: :math:`\\beta_2`, default 0.99.
    eps: :math:`\\epsilon`, default 1e-8.
    weight_decay: :math:`\\lambda \\ge 0`, default 1e-4.
    weight_decay_mask: which leaves to decay (a tree of bools or a callable of the params).
    gamma: :math:`\\gamma`, default 0.01.
    clip_threshold: :math:`\\rho`, default 1; ``None`` does not clip.
    update_interval: :math:`k`, steps between Hessian estimates, default 10.
    hessian_diagonal_fn: the estimator; default :func:`hutchinson_estimator_diag_hessian`.
    mu_dtype: dtype of the momentum.
    verbose: print the win rate every ``print_win_rate_every_n_steps`` steps.
    print_win_rate_every_n_steps: default 0 (never).
    nu_dtype: dtype of :math:`h`, gradtx's addition (``jnp.float32`` for
      float16 params; see :func:`scale_by_sophia`).

  References:
    Liu, Li, Hall, Liang & Ma, *Sophia: A Scalable Stochastic Second-order
    Optimizer for Language Model Pre-training*, ICLR 2024 (arXiv:2305.14342).

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.sophia(learning_rate=0.1)
    >>> print(tx)
    sophia(
      sophia=scale_by_sophia(
        b1=0.965,
        b2=0.99,
        eps=1e-08,
        gamma=0.01,
        clip_threshold=1,
        update_interval=10,
        mu_dtype=None,
        verbose=False,
        print_win_rate_every_n_steps=0,
        nu_dtype=None,
        hessian_diagonal_fn=hutchinson_estimator_diag_hessian(random_seed=None),
      ),
      decay=add_decayed_weights(weight_decay=0.0001),
      lr=scale_by_learning_rate(learning_rate=0.1, flip_sign=True),
    )
    >>> f = lambda x: jnp.sum(x ** 2)
    >>> x = jnp.array([1.0, -2.0])
    >>> state = tx.init(x)
    >>> updates, state = tx.update(jax.grad(f)(x), state, x, obj_fn=f)
    >>> updates.round(5)  # h_0 = 0: a clipped sign step, plus the decay
    Array([-0.10001,  0.10002], dtype=float32)
  """
  return named_chain(
      "sophia",
      sophia=scale_by_sophia(b1, b2, eps, gamma, clip_threshold, update_interval,
                             hessian_diagonal_fn, mu_dtype, verbose,
                             print_win_rate_every_n_steps, nu_dtype=nu_dtype),
      decay=add_decayed_weights(weight_decay, weight_decay_mask),
      lr=scale_by_learning_rate(learning_rate))
