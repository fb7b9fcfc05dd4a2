"""optax.contrib: rules that look at the loss surface: Sophia, Hutchinson's diagonal Hessian estimator, sharpness-aware minimisation (SAM).

Each of these needs more than the gradient: Sophia an estimate of the
Hessian's diagonal (Hutchinson's, from a Hessian-vector product of the
objective passed to ``update`` as ``obj_fn``), SAM the gradient at a
perturbed point (taken by the caller between calls, or by ``grad_fn`` inside
one call in opaque mode). The calling conventions are optax 0.2.8's, so code
written for ``optax.contrib`` runs unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.chain import Chain, ChainState, in_stage, named_chain
from gradtx.core import (NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT_HALF_OPEN,
                         EmptyState, GradientTransformation, HParams, HParamSpec,
                         ScalarOrSchedule, apply_updates, as_transformation, check_value,
                         require_params)
from gradtx.errors import MissingArgumentError
from gradtx.numerics import (as_dtype, bias_correction, compute_dtype, ema_moment,
                             safe_increment, zero_count)
from gradtx.transforms.decay import Mask, add_decayed_weights
from gradtx.transforms.noise import _as_key
from gradtx.transforms.scaling import normalize_by_update_norm, scale_by_learning_rate
from gradtx.wrappers._common import _reset_keeping_hparams

__all__ = ["HutchinsonState", "NormalizeState", "SAMState", "SophiaState",
           "hutchinson_estimator_diag_hessian", "normalize", "sam", "scale_by_sophia", "sophia"]


def _is_traced(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


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
  seed = 0 if random_seed is None else random_seed
  spec = HParamSpec("hutchinson_estimator_diag_hessian")

  def init(params):
    del params
    return HutchinsonState(_as_key(seed), spec.init())

  def update(updates, state, params=None, *, obj_fn: Callable[[Any], jax.Array] | None = None,
             **extra):
    del updates, extra
    params = require_params("hutchinson_estimator_diag_hessian", params)
    if obj_fn is None:
      raise MissingArgumentError(_OBJ_FN_MISSING.format(stage="hutchinson_estimator_diag_hessian"))
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

  shown = random_seed if random_seed is None or isinstance(random_seed, int) else "<PRNG key>"
  return GradientTransformation(init, update, name="hutchinson_estimator_diag_hessian",
                                spec=spec, options=dict(random_seed=shown))


# ----------------------------------------------------------------------------
# Sophia.


class SophiaState(NamedTuple):
  """State of :func:`scale_by_sophia` (optax's field names).

  Attributes:
    count: the number of steps taken (int32).
    mu: the momentum :math:`m` (in ``mu_dtype``).
    nu: the moving average :math:`h` of the Hessian's diagonal (in the params' dtypes).
    hessian_fn_state: the state of ``hessian_diagonal_fn``; its hyperparameters,
      if any, read under Sophia's stage name.
    hparams: ``b1``, ``b2``, ``eps``, ``gamma``, ``clip_threshold`` (unless
      ``None``) and ``update_interval``.
  """
  count: jax.Array
  mu: Any
  nu: Any
  hessian_fn_state: Any
  hparams: HParams


def scale_by_sophia(b1: ScalarOrSchedule = 0.965, b2: ScalarOrSchedule = 0.99,
                    eps: ScalarOrSchedule = 1e-8, gamma: ScalarOrSchedule = 0.01,
                    clip_threshold: ScalarOrSchedule | None = 1.0,
                    update_interval: int = 10,
                    hessian_diagonal_fn: Any = hutchinson_estimator_diag_hessian(),
                    mu_dtype: Any = None, verbose: bool = False,
                    print_win_rate_every_n_steps: int = 0) -> GradientTransformation:
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
      (structural).
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
  check_value("scale_by_sophia", "print_win_rate_every_n_steps", print_win_rate_every_n_steps,
              NONNEGATIVE_INT)
  hessian_diagonal_fn = as_transformation(hessian_diagonal_fn, where="scale_by_sophia")
  entries = dict(b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN), eps=(eps, POSITIVE),
                 gamma=(gamma, NONNEGATIVE))
  if clip_threshold is not None:
    entries["clip_threshold"] = (clip_threshold, POSITIVE)
  entries["update_interval"] = (update_interval, POSITIVE_INT)
  spec = HParamSpec("scale_by_sophia", **entries)

  def init(params):
    return SophiaState(zero_count(), tree.zeros_like(params, mu_dtype), tree.zeros_like(params),
                       hessian_diagonal_fn.init(params), spec.init())

  def update(updates, state, params=None, **extra):
    params = require_params("scale_by_sophia", params)
    tree.check_structure(state.mu, updates, "state.mu", "updates")
    tree.check_structure(params, updates, "params", "updates")
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
      if _is_traced(due):
        hessian_fn_state, nu = jax.lax.cond(due, refresh, lambda ops: ops, operands)
      else:  # eager: run only the branch taken
        hessian_fn_state, nu = refresh(operands) if bool(due) else operands
    return updates, SophiaState(count, mu, nu, hessian_fn_state, hparams)

  # A clip threshold shows with the hyperparameters; its absence, as an option.
  unclipped = {} if clip_threshold is not None else dict(clip_threshold=None)
  return GradientTransformation(init, update, name="scale_by_sophia", spec=spec, options=dict(
      **unclipped, hessian_diagonal_fn=hessian_diagonal_fn, mu_dtype=mu_dtype, verbose=verbose,
      print_win_rate_every_n_steps=print_win_rate_every_n_steps))


def _print_win_rate(updates: Any, rho: jax.Array, count: jax.Array, every: int) -> None:
  """Prints the fraction of entries that were not clipped, every ``every`` steps."""
  leaves = jax.tree.leaves(updates)
  inside = sum(jnp.sum(jnp.abs(u) < as_dtype(rho, u.dtype)).astype(jnp.int32) for u in leaves)
  size = sum(u.size for u in leaves)
  win_rate = inside.astype(jnp.float32) / size
  jax.lax.cond(count % every == 0,
               lambda: jax.debug.print("Sophia optimizer win rate: {}", win_rate),
               lambda: None)


def sophia(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.965,
           b2: ScalarOrSchedule = 0.99, eps: ScalarOrSchedule = 1e-8,
           weight_decay: ScalarOrSchedule = 1e-4, weight_decay_mask: Mask | None = None,
           gamma: ScalarOrSchedule = 0.01, clip_threshold: ScalarOrSchedule | None = 1.0,
           update_interval: int = 10,
           hessian_diagonal_fn: Any = hutchinson_estimator_diag_hessian(),
           mu_dtype: Any = None, verbose: bool = False,
           print_win_rate_every_n_steps: int = 0) -> Chain:
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
                             print_win_rate_every_n_steps),
      decay=add_decayed_weights(weight_decay, weight_decay_mask),
      lr=scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------
# Sharpness-aware minimisation.


NormalizeState = EmptyState
"""State of :func:`normalize`: its hyperparameters only (optax's ``NormalizeState``)."""


def normalize() -> GradientTransformation:
  """Divides the updates by their global l2 norm: SAM's ascent direction.

  .. math:: u \\leftarrow \\frac{g}{\\|g\\|_2}, \\qquad
    \\|g\\|_2 = \\sqrt{\\textstyle\\sum_\\text{leaves} \\sum_i g_i^2}

  :func:`gradtx.normalize_by_update_norm` with ``scale_factor=1, eps=0``
  (both held in the state, readable and settable by name).

  Differs from optax 0.2.8: a zero gradient stays zero; optax divides 0 by 0
  and returns NaN.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.normalize()
    >>> tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))[0]
    Array([0.6, 0.8], dtype=float32)
  """
  tx = normalize_by_update_norm(scale_factor=1.0, eps=0.0)
  return GradientTransformation(tx.init, tx.update, name="normalize", spec=tx.spec)


class SAMState(NamedTuple):
  """State of :func:`sam` (optax's field names).

  Attributes:
    steps_since_sync: adversarial steps taken since the last outer step (int32).
    opt_state: the outer optimizer's state, as ``ChainState({"optimizer": ...})``.
    adv_state: the adversarial optimizer's state, as
      ``ChainState({"adv_optimizer": ...})``.
    cache: the outer parameters at the start of the period (``None`` in opaque mode).
    hparams: empty: SAM's own arguments are structural.

  The two inner states are held under names so that their hyperparameters
  read apart: ``"<stage>.optimizer.lr.learning_rate"`` and
  ``"<stage>.adv_optimizer.lr.learning_rate"`` (optax holds the inner states
  as they are).
  """
  steps_since_sync: jax.Array
  opt_state: Any
  adv_state: Any
  cache: Any
  hparams: HParams


_GRAD_FN_MISSING = ("sam: opaque_mode=True takes the adversarial gradients itself: call "
                    "update(grads, state, params, grad_fn=lambda params, i: grads at params)")


def sam(optimizer: GradientTransformation, adv_optimizer: GradientTransformation,
        sync_period: int = 2, reset_state: bool = True, opaque_mode: bool = False,
        batch_axis_name: str | None = None) -> GradientTransformation:
  """SAM, sharpness-aware minimisation: descend with the gradient taken at an adversarial point.

  .. math::
    \\tilde\\theta_t = \\theta_t + \\rho \\frac{\\nabla f(\\theta_t)}{\\|\\nabla f(\\theta_t)\\|_2},
    \\qquad
    \\theta_{t+1} = \\theta_t + \\operatorname{opt}(\\nabla f(\\tilde\\theta_t))

  in general form: ``sync_period - 1`` ascent steps of ``adv_optimizer``
  (whose output is *subtracted*: an optimizer that descends makes them
  ascend) from the outer parameters :math:`\\theta`, then one step of
  ``optimizer`` from :math:`\\theta` with the gradient at the last
  adversarial point. The paper's SAM is
  ``sam(opt, chain(normalize(), sgd(rho)), sync_period=2)``.

  Two ways to run it, as in optax:

  * ``opaque_mode=False`` (default): each call to ``update`` is one of the
    steps. The caller takes the gradient at the params it holds, which are
    the adversarial ones between outer steps; after ``sync_period`` calls the
    update moves the params back to :math:`\\theta` and takes the outer step.
  * ``opaque_mode=True``: each call is one outer step; the adversarial
    gradients are taken inside with ``grad_fn(params, i)`` (passed to
    ``update`` as ``grad_fn=``, called ``sync_period - 1`` times and averaged
    over ``batch_axis_name`` when given), so the caller only ever sees
    :math:`\\theta` (needed when a step has side effects, such as batch norm
    statistics).

  Other extra arguments of ``update`` are passed on to both optimizers.

  Differs from optax 0.2.8, which is wrong for ``sync_period=1`` (no
  adversarial steps) in the default mode: its outer step starts from the
  parameters cached one call earlier, so every other call undoes a step;
  here ``sync_period=1`` is ``optimizer`` itself.

  Args:
    optimizer: the outer optimizer.
    adv_optimizer: the adversarial optimizer (its output is subtracted).
    sync_period: :math:`\\ge 1`, steps per outer step (``sync_period - 1``
      adversarial ones), default 2. Structural: in opaque mode it is the
      length of a loop.
    reset_state: re-initialise ``adv_optimizer``'s state after each outer
      step, default ``True``. Its hyperparameters are kept: values set by
      name, and the step counts of its schedules (optax restarts those, so a
      schedule of the adversary's step never gets past its first
      ``sync_period - 1`` values).
    opaque_mode: see above, default ``False``.
    batch_axis_name: in opaque mode, the axis over which to average the
      adversarial gradients (under ``pmap`` or ``shard_map``); default ``None``.

  References:
    Foret, Kleiner, Mobahi & Neyshabur, *Sharpness-Aware Minimization for
    Efficiently Improving Generalization*, ICLR 2021.

  Example: the paper's SAM on :math:`f(x) = x^2` from :math:`x = 1`.

    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> f = lambda x: jnp.sum(x ** 2)
    >>> tx = gtx.contrib.sam(gtx.sgd(0.1), gtx.chain(gtx.contrib.normalize(), gtx.sgd(0.5)))
    >>> x = jnp.array([1.0])
    >>> state = tx.init(x)
    >>> for _ in range(2):  # ascend to x = 1.5, then descend from 1 with the gradient there
    ...   updates, state = tx.update(jax.grad(f)(x), state, x)
    ...   x = gtx.apply_updates(x, updates)
    ...   print(x)
    [1.5]
    [0.7]
  """
  check_value("sam", "sync_period", sync_period, POSITIVE_INT)
  optimizer = as_transformation(optimizer, where="sam optimizer")
  adv_optimizer = as_transformation(adv_optimizer, where="sam adv_optimizer")
  spec = HParamSpec("sam")

  def named(opt_state, adv_state):
    return (ChainState({"optimizer": opt_state}), ChainState({"adv_optimizer": adv_state}))

  def init(params):
    with in_stage("optimizer"):
      opt_state = optimizer.init(params)
    with in_stage("adv_optimizer"):
      adv_state = adv_optimizer.init(params)
    return SAMState(zero_count(), *named(opt_state, adv_state),
                    None if opaque_mode else params, spec.init())

  def reset(adv_state, params):
    return (_reset_keeping_hparams(True, adv_state, adv_optimizer.init(params)) if reset_state
            else adv_state)

  def ascend(adv_updates, like):
    """The adversarial step: the optimizer's output subtracted, in the gradients' dtypes."""
    return tree.tree_map(lambda u, g: (-u).astype(g.dtype), adv_updates, like)

  def transparent_update(updates, state, params, extra):
    tree.check_structure(params, state.cache, "params", "state.cache")
    opt_state, adv_state = state.opt_state["optimizer"], state.adv_state["adv_optimizer"]
    first = state.steps_since_sync == 0
    last = state.steps_since_sync == sync_period - 1
    # The outer parameters: these params on the first step of a period, else the cached ones.
    cache = tree.where(first, params, state.cache)

    def adversarial_step(_):
      with in_stage("adv_optimizer"):
        adv_updates, new_adv_state = adv_optimizer.update(updates, adv_state, params, **extra)
      return ascend(adv_updates, updates), opt_state, new_adv_state

    def outer_step(_):
      with in_stage("optimizer"):
        outer_updates, new_opt_state = optimizer.update(updates, opt_state, cache, **extra)

      def back_and_step(c, p, u, g):  # from params back to the cache, then the outer step
        dtype = compute_dtype(c, p, u)
        return (as_dtype(c, dtype) - as_dtype(p, dtype) + as_dtype(u, dtype)).astype(g.dtype)

      new_updates = tree.tree_map(back_and_step, cache, params, outer_updates, updates)
      return new_updates, new_opt_state, reset(adv_state, params)

    if _is_traced(last):
      new_updates, opt_state, adv_state = jax.lax.cond(last, outer_step, adversarial_step, None)
    else:  # eager: run only the branch taken
      new_updates, opt_state, adv_state = (outer_step if bool(last) else adversarial_step)(None)
    steps = jnp.where(last, 0, state.steps_since_sync + 1).astype(jnp.int32)
    return new_updates, SAMState(steps, *named(opt_state, adv_state), cache, state.hparams)

  def opaque_update(updates, state, params, extra, grad_fn):
    if grad_fn is None:
      raise MissingArgumentError(_GRAD_FN_MISSING)
    adv_state = state.adv_state["adv_optimizer"]
    adv_params, adv_grads = params, updates
    for i in range(sync_period - 1):
      with in_stage("adv_optimizer"):
        adv_updates, adv_state = adv_optimizer.update(adv_grads, adv_state, adv_params, **extra)
      adv_params = apply_updates(adv_params, ascend(adv_updates, adv_grads))
      adv_grads = grad_fn(adv_params, i)
      if batch_axis_name is not None:
        adv_grads = jax.lax.pmean(adv_grads, axis_name=batch_axis_name)
    with in_stage("optimizer"):
      new_updates, opt_state = optimizer.update(adv_grads, state.opt_state["optimizer"], params,
                                                **extra)
    adv_state = reset(adv_state, params)
    return new_updates, SAMState(state.steps_since_sync, *named(opt_state, adv_state), None,
                                 state.hparams)

  def update(updates, state, params=None, *, grad_fn: Callable[[Any, int], Any] | None = None,
             **extra):
    params = require_params("sam", params)
    tree.check_structure(params, updates, "params", "updates")
    if opaque_mode:
      return opaque_update(updates, state, params, extra, grad_fn)
    return transparent_update(updates, state, params, extra)

  return GradientTransformation(init, update, name="sam", spec=spec, options=dict(
      sync_period=sync_period, reset_state=reset_state, opaque_mode=opaque_mode,
      batch_axis_name=batch_axis_name, optimizer=optimizer, adv_optimizer=adv_optimizer))
