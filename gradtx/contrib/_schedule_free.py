"""optax.contrib: schedule-free SGD and AdamW, and differentially private SGD."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import schedules, tree
from gradtx.chain import Chain, named_chain
from gradtx.contrib._common import _as_base, _optional_decay
from gradtx.contrib._whole_tree import _scalar_dtype
from gradtx.schedules._common import _number
from gradtx.core import (NONNEGATIVE, POSITIVE_INT, GradientTransformation, HParams, HParamSpec,
                         Range, ScalarOrSchedule, check_integer_option, check_state, checks_flags,
                         format_value, require_params_like, names_its_arguments)
from gradtx.errors import HyperparameterError, StructureError
from gradtx.numerics import as_dtype, compute_dtype, safe_divide, safe_increment, shared
from gradtx.transforms.clipping import per_example_global_norm_clip
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.moments import scale_by_rms
from gradtx.transforms.momentum import trace
from gradtx.transforms.noise import as_key, fresh_key, gaussian_noised, shown_key
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["DifferentiallyPrivateAggregateState", "ScheduleFreeState",
           "differentially_private_aggregate", "dpsgd", "schedule_free",
           "schedule_free_adamw", "schedule_free_eval_params", "schedule_free_sgd"]

# b1 interpolates y between z (b1 = 0) and x (b1 = 1); x is recovered from y and z
# by dividing by b1, so b1 = 0 would lose it.
_B1_RANGE = Range(0.0, 1.0, low_open=True)


# ----------------------------------------------------------------------------
# Schedule-free: a base optimizer's steps taken by z, averaged into x.


class ScheduleFreeState(NamedTuple):
  """State of :func:`schedule_free`: optax's fields, then the hyperparameters.

  ``weight_sum`` (:math:`\\sum_{i \\le t} w_i`), ``step_count`` (the next
  step's number, from 1), ``max_lr`` (the largest learning rate so far),
  ``base_optimizer_state`` and ``z`` (the base optimizer's iterate). optax's
  ``b1`` field reads :math:`\\beta_1` from ``hparams``, where it is held once
  (set it with ``gtx.set_hparams``).
  """
  weight_sum: jax.Array
  step_count: jax.Array
  max_lr: jax.Array
  base_optimizer_state: Any
  z: Any
  hparams: HParams

  @property
  def b1(self) -> jax.Array:
    """:math:`\\beta_1`, as optax's ``ScheduleFreeState.b1``."""
    return self.hparams["b1"]


def schedule_free(base_optimizer: Any, learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
                  weight_lr_power: ScalarOrSchedule = 2.0,
                  state_dtype: Any = None) -> GradientTransformation:
  """Makes a base optimizer schedule-free: momentum by interpolation, no decay by averaging.

  The base optimizer's steps :math:`\\Delta_t` (computed at the gradient point
  :math:`y_t`, which the params hold) move :math:`z`; :math:`x`, the point to
  evaluate at, averages the :math:`z`'s; the params follow an interpolation:

  .. math::
    z_{t+1} = z_t + \\Delta_t, \\qquad
    x_{t+1} = (1 - c_{t+1})\\, x_t + c_{t+1}\\, z_{t+1}, \\qquad
    y_{t+1} = (1 - \\beta_1)\\, z_{t+1} + \\beta_1 x_{t+1}, \\\\
    c_{t+1} = \\frac{w_t}{\\sum_{i \\le t} w_i}, \\qquad
    w_t = \\left(\\max_{i \\le t} \\gamma_i\\right)^{p}

  with :math:`x_1 = z_1 = y_1` the initial params, :math:`\\gamma_t` the
  learning rate of step :math:`t` (a schedule is read at the step's count,
  from 0, as the base reads its own: each step is weighed by the rate it
  was taken with, as in the paper and the authors' code) and :math:`p` =
  ``weight_lr_power``. For SGD,
  :math:`\\Delta_t = -\\gamma_t \\nabla f(y_t)`. The update returned is
  :math:`y_{t+1} - y_t = c_{t+1} (z_{t+1} - y_t) + (1 - \\beta_1)(1 - c_{t+1})
  \\Delta_t`; evaluate at :math:`x` with :func:`schedule_free_eval_params`.
  Only :math:`z` is stored: :math:`x` is recovered from the params as
  :math:`x_t = (y_t - (1 - \\beta_1) z_t) / \\beta_1`.

  Turn the base optimizer's momentum off (Adam with ``b1=0``, SGD without
  momentum): the interpolation replaces it. Give it a warmup but no decay.

  Differs from optax 0.2.8 where the learning rate is a schedule: optax
  reads it for the weights at ``step_count`` (from 1), one step ahead of the
  base's step, so :math:`w_t` takes the rate of step :math:`t + 1` (the
  first step's weight that of the second; optax PR #1744); with a constant
  learning rate the two agree. Otherwise only in rounding: the update is formed from the
  expression above rather than by recovering :math:`x`, averaging and
  subtracting :math:`y_t`, whose cancellation costs more float32 digits when
  the steps are small next to the params (params of 1000, steps of 1e-3: over
  30 steps the update is within 1.4% of float64's, optax's within 7.6%); and the
  weights are held in float32 (or wider) for bfloat16 params, where optax
  holds them in bfloat16. Steps far below the params' spacing are lost to
  :math:`z_{t+1}`'s rounding, as they are to the params'.

  Args:
    base_optimizer: a gradtx or optax transformation, given the gradients,
      the params (:math:`y_t`) and any extra arguments. A gradtx stage that
      is not a chain is held as a one-stage chain, so its hyperparameters
      read as ``"<its name>.<hyperparameter>"`` next to the wrapper's own.
    learning_rate: :math:`\\gamma \\ge 0`, the base optimizer's learning rate
      or schedule (warmup, no decay); here it only sets the averaging
      weights, so setting it by name does not change the base's step.
    b1: :math:`\\beta_1 \\in (0, 1]`, default 0.9.
    weight_lr_power: :math:`p \\ge 0`, default 2: later steps (after a
      warmup) weigh more in the average.
    state_dtype: dtype of :math:`z` (default: the params').

  References:
    Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, *The Road Less
    Scheduled*, NeurIPS 2024 (arXiv:2405.15682).

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.schedule_free(gtx.sgd(0.5), learning_rate=0.5)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)  # the gradient of |x|^2 / 2
    >>> params = gtx.apply_updates(params, updates)
    >>> params, gtx.contrib.schedule_free_eval_params(state, params)
    (Array([ 0.5, -1. ], dtype=float32), Array([ 0.5, -1. ], dtype=float32))
    >>> sorted(gtx.hparams(state))
    ['b1', 'learning_rate', 'lr.learning_rate', 'weight_lr_power']
  """
  stage = "schedule_free"
  base = _as_base(base_optimizer, stage)
  spec = HParamSpec(stage, learning_rate=(learning_rate, NONNEGATIVE), b1=(b1, _B1_RANGE),
                    weight_lr_power=(weight_lr_power, NONNEGATIVE))

  def init(params):
    dtype = _scalar_dtype(params)
    z = tree.copy(params, state_dtype)
    return ScheduleFreeState(jnp.zeros([], dtype), jnp.ones([], jnp.int32), jnp.zeros([], dtype),
                             base.init(params), z, spec.init())

  def update(updates, state, params=None, **extra):
    check_state(stage, state, ScheduleFreeState)
    params = require_params_like(stage, updates, params, state, "z")
    h, hparams = spec.step(state.hparams)
    dtype = state.max_lr.dtype
    max_lr = jnp.maximum(state.max_lr, as_dtype(h["learning_rate"], dtype))
    weight = max_lr ** as_dtype(h["weight_lr_power"], dtype)
    weight_sum = state.weight_sum + weight
    # 0 / 0 while the warmup starts from a learning rate of 0: no average yet.
    c = safe_divide(weight, weight_sum)
    base_updates, base_state = base.update(updates, state.base_optimizer_state, params, **extra)

    def leaf(delta, y, z):
      d = compute_dtype(delta, y, z)
      # Once per step and dtype, not per leaf: c, and (1 - b1)(1 - c), the share of the
      # step that y takes besides c's.
      c_, keep = shared(f"schedule_free {d}", (c, h["b1"]), lambda: (
          as_dtype(c, d), (1 - as_dtype(h["b1"], d)) * (1 - as_dtype(c, d))))
      delta_ = delta.astype(d)
      z_new = (z.astype(d) + delta_).astype(z.dtype)
      # From z_{t+1}, not z_t: the update then reads only the z it writes, and XLA updates
      # z in place. From z_t, the update's kernel read z_t while z's wrote it, and XLA
      # copied z and the params every step (AdamW on GPT-2's tree: 1.65x optax's step).
      u = c_ * (z_new.astype(d) - y.astype(d)) + keep * delta_
      return u.astype(y.dtype), z_new

    out, z = tree.map_multi(leaf, 2, base_updates, params, state.z)
    return out, ScheduleFreeState(weight_sum, safe_increment(state.step_count), max_lr,
                                  base_state, z, hparams)

  return GradientTransformation(init, update, name=stage, spec=spec, options=dict(
      state_dtype=state_dtype, base_optimizer=base))


def _find_schedule_free_state(state: Any) -> Any:
  if isinstance(state, ScheduleFreeState):
    return state
  found = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, ScheduleFreeState))
           if isinstance(s, ScheduleFreeState)]
  if len(found) > 1:
    raise ValueError(f"schedule_free_eval_params: the state holds {len(found)} "
                     "ScheduleFreeStates; pass the one to evaluate")
  if found:
    return found[0]
  if getattr(state, "b1", None) is not None and getattr(state, "z", None) is not None:
    return state  # optax's ScheduleFreeState
  raise ValueError("schedule_free_eval_params: the state holds no ScheduleFreeState; pass "
                   "the state of schedule_free, schedule_free_sgd or schedule_free_adamw")


def schedule_free_eval_params(state: Any, params: Any) -> Any:
  """The params to evaluate a schedule-free optimizer at: the average :math:`x_t`.

  .. math:: x_t = \\frac{y_t - (1 - \\beta_1) z_t}{\\beta_1}
    = y_t + \\frac{1 - \\beta_1}{\\beta_1} (y_t - z_t)

  (computed in the second form, which keeps the digits of a small
  :math:`y_t - z_t`), with :math:`y_t` the params.

  Args:
    state: the state of :func:`schedule_free` (or of a chain holding it,
      such as :func:`schedule_free_adamw`'s; or optax's ScheduleFreeState).
      A state batched by ``jax.vmap`` (an ensemble, one :math:`\\beta_1` per
      member) may be passed outside ``vmap`` too: :math:`\\beta_1`'s leading
      axes meet the params' leading axes.
    params: the params :math:`y_t` trained with that state.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.schedule_free_sgd(1.0, b1=0.5)
    >>> params = jnp.array([1.0, 2.0])
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(params, state, params)  # f = |x|^2 / 2
    ...   params = gtx.apply_updates(params, updates)
    >>> gtx.contrib.schedule_free_eval_params(state, params)
    Array([0., 0.], dtype=float32)
  """
  state = _find_schedule_free_state(state)
  tree.check_structure(state.z, params, "state.z", "params", stage="schedule_free_eval_params")
  b1 = state.b1

  def leaf(y, z):
    d = compute_dtype(y, z)
    b = as_dtype(b1, d)
    b = b.reshape(b.shape + (1,) * (y.ndim - b.ndim))  # a batched b1 meets y's leading axes
    return (y.astype(d) + (1 - b) / b * (y.astype(d) - z.astype(d))).astype(y.dtype)

  return tree.tree_map(leaf, params, state.z)


def _warmed_up(stage: str, learning_rate: ScalarOrSchedule,
               warmup_steps: int | None) -> ScalarOrSchedule:
  if warmup_steps is None:
    return learning_rate
  check_integer_option(stage, "warmup_steps", warmup_steps, POSITIVE_INT)
  if callable(learning_rate):
    # A warmup to a schedule has no one meaning (to its value at the end of the warmup,
    # or times it); warmup_constant_schedule took it as its peak value and the first
    # update failed with a dtype error.
    raise HyperparameterError(
        f"{stage}: warmup_steps warms up to a constant learning_rate, got the schedule "
        f"{format_value(learning_rate)}; give the schedule its own warmup (for example "
        f"gtx.schedules.warmup_cosine_decay_schedule, or join_schedules with a "
        f"linear_schedule) and leave warmup_steps=None")
  _number(stage, "learning_rate", learning_rate)  # before the division, naming the stage
  # gamma min(1, t / W) at step t, from 1, as the paper's Algorithm 1 and the authors' code
  # ((k + 1) / W at count k): the first step moves. optax's warmup_constant_schedule(0, ...)
  # steps by 0 first and reaches the peak one step later.
  return schedules.warmup_constant_schedule(init_value=learning_rate / warmup_steps,
                                            peak_value=learning_rate,
                                            warmup_steps=warmup_steps - 1)


@names_its_arguments
def schedule_free_sgd(learning_rate: ScalarOrSchedule = 1.0, warmup_steps: int | None = None,
                      b1: ScalarOrSchedule = 0.9, weight_decay: ScalarOrSchedule | None = None,
                      weight_lr_power: ScalarOrSchedule = 2.0,
                      state_dtype: Any = None) -> Chain:
  """Schedule-free SGD: :func:`schedule_free` around SGD without momentum.

  .. math::
    \\Delta_t = -\\gamma_t (\\nabla f(y_t) + \\lambda y_t), \\quad
    z_{t+1} = z_t + \\Delta_t, \\quad
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}, \\quad
    y_{t+1} = (1 - \\beta_1) z_{t+1} + \\beta_1 x_{t+1}

  (see :func:`schedule_free` for :math:`c`). With ``warmup_steps`` :math:`W` the
  learning rate of step :math:`t` (from 1) is :math:`\\gamma \\min(1, t / W)`,
  for the step and the weights alike, as in the paper's Algorithm 1 and the
  authors' code; optax 0.2.8's warmup starts from 0 (its first step does not
  move :math:`z`) and reaches :math:`\\gamma` one step later.
  The hyperparameters read as ``"schedule_free.lr.learning_rate"`` (the
  step), ``"schedule_free.learning_rate"`` (the weights; set both to change
  the learning rate), ``"schedule_free.b1"``, ``"schedule_free.weight_lr_power"``
  and ``"schedule_free.decay.weight_decay"``.

  Args:
    learning_rate: :math:`\\gamma \\ge 0`, default 1.
    warmup_steps: :math:`W`, the length of the linear warmup to
      ``learning_rate`` (then a number): steps :math:`1 \\dots W` take
      :math:`\\gamma t / W`. An int >= 1, or ``None``.
    b1: :math:`\\beta_1 \\in (0, 1]`, default 0.9.
    weight_decay: :math:`\\lambda \\ge 0`, multiplied by the learning rate (as
      torch.optim does), or ``None`` (default): no decay stage (as optax). Give
      0.0 for a decay stage that holds 0, to be set by name later.
    weight_lr_power: :math:`p \\ge 0`, default 2.
    state_dtype: dtype of :math:`z`.

  References:
    Defazio et al., *The Road Less Scheduled*, NeurIPS 2024.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.schedule_free_sgd(0.5, weight_decay=1e-4))
    schedule_free_sgd(
      schedule_free=schedule_free(
        learning_rate=0.5,
        b1=0.9,
        weight_lr_power=2,
        state_dtype=None,
        base_optimizer=sgd(
          decay=add_decayed_weights(weight_decay=0.0001),
          lr=scale_by_learning_rate(learning_rate=0.5, flip_sign=True),
        ),
      ),
    )
  """
  learning_rate = _warmed_up("schedule_free_sgd", learning_rate, warmup_steps)
  base = named_chain("sgd", **_optional_decay(weight_decay),
                     lr=scale_by_learning_rate(learning_rate))
  return named_chain("schedule_free_sgd", schedule_free=schedule_free(
      base, learning_rate, b1, weight_lr_power, state_dtype))


@names_its_arguments
def schedule_free_adamw(learning_rate: ScalarOrSchedule = 0.0025,
                        warmup_steps: int | None = None, b1: ScalarOrSchedule = 0.9,
                        b2: ScalarOrSchedule = 0.999, eps: ScalarOrSchedule = 1e-8,
                        weight_decay: ScalarOrSchedule = 0.0,
                        weight_lr_power: ScalarOrSchedule = 2.0,
                        state_dtype: Any = None, *, nu_dtype: Any = None) -> Chain:
  """Schedule-free AdamW: :func:`schedule_free` around AdamW without momentum.

  .. math::
    \\nu_t = \\beta_2 \\nu_{t-1} + (1 - \\beta_2) g_t^2, \\quad
    \\Delta_t = -\\gamma_t \\left(\\frac{g_t}{\\sqrt{\\nu_t / (1 - \\beta_2^t)} + \\epsilon}
      + \\lambda y_t\\right)

  with :math:`g_t = \\nabla f(y_t)`, then :math:`z, x, y` as in
  :func:`schedule_free_sgd`. The base is optax's (``scale_by_rms`` with
  bias correction and :math:`\\epsilon` outside the root, which is Adam with
  :math:`\\beta_1 = 0` without a first moment to store). Warmup as in
  :func:`schedule_free_sgd`. The hyperparameters read as
  ``"schedule_free.rms.decay"`` (:math:`\\beta_2`), ``"schedule_free.rms.eps"``,
  ``"schedule_free.decay.weight_decay"``, ``"schedule_free.lr.learning_rate"``
  and the wrapper's ``"schedule_free.learning_rate"``, ``"schedule_free.b1"``,
  ``"schedule_free.weight_lr_power"``.

  Args:
    learning_rate: :math:`\\gamma \\ge 0`, default 0.0025.
    warmup_steps: :math:`W`, the length of the linear warmup to
      ``learning_rate`` (then a number): steps :math:`1 \\dots W` take
      :math:`\\gamma t / W`. An int >= 1, or ``None``.
    b1: :math:`\\beta_1 \\in (0, 1]`, default 0.9 (the interpolation's).
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    weight_decay: :math:`\\lambda \\ge 0`, default 0, at :math:`y_t` and
      multiplied by the learning rate.
    weight_lr_power: :math:`p \\ge 0`, default 2.
    state_dtype: dtype of :math:`z`.
    nu_dtype: dtype of :math:`\\nu` (see :func:`gradtx.scale_by_rms`),
      gradtx's addition to optax's arguments. On float16 params give
      ``jnp.float32``: float16 rounds ``eps=1e-8`` and small
      :math:`(1-\\beta_2) g^2` to 0, so the base steps by 0/0 or :math:`g/0`.
      (``state_dtype=jnp.float32`` keeps :math:`z`'s small steps, which
      float16 rounds away.)

  References:
    Defazio et al., *The Road Less Scheduled*, NeurIPS 2024, Algorithm 1.

  Example:
    >>> import gradtx as gtx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> f = lambda x: jnp.sum(x ** 2)
    >>> tx = gtx.contrib.schedule_free_adamw(1.0)
    >>> params = jnp.array([1.0, 2.0, 3.0])
    >>> state = tx.init(params)
    >>> for _ in range(5):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = gtx.apply_updates(params, updates)
    ...   print(f"{f(gtx.contrib.schedule_free_eval_params(state, params)):.2E}")
    5.00E+00
    3.05E+00
    1.73E+00
    8.94E-01
    4.13E-01
  """
  learning_rate = _warmed_up("schedule_free_adamw", learning_rate, warmup_steps)
  base = named_chain("adamw", rms=scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False,
                                               bias_correction=True, nu_dtype=nu_dtype),
                     decay=add_decayed_weights(weight_decay),
                     lr=scale_by_learning_rate(learning_rate))
  return named_chain("schedule_free_adamw", schedule_free=schedule_free(
      base, learning_rate, b1, weight_lr_power, state_dtype))


# ----------------------------------------------------------------------------
# Differentially private SGD.


class DifferentiallyPrivateAggregateState(NamedTuple):
  """State of :func:`differentially_private_aggregate`: the random key ``rng_key``."""
  rng_key: jax.Array
  hparams: HParams


def differentially_private_aggregate(l2_norm_clip: ScalarOrSchedule,
                                     noise_multiplier: ScalarOrSchedule, key: Any = None, *,
                                     seed: int | None = None) -> GradientTransformation:
  """DP-SGD's aggregation: per-example clipping, a sum, Gaussian noise, the mean.

  .. math::
    u_t = \\frac{1}{B} \\left(\\sum_{b=1}^{B} g_b
      \\min\\!\\left(1, \\frac{C}{\\|g_b\\|}\\right) + \\sigma C\\, \\xi_t\\right),
    \\qquad \\xi_t \\sim \\mathcal N(0, I)

  with :math:`\\|g_b\\|` the global l2 norm of example :math:`b`'s gradient
  (:func:`gradtx.per_example_global_norm_clip`). The updates arrive with the
  batch on axis 0 of every leaf (per-example gradients, from ``jax.vmap``
  of ``jax.grad``) and leave without it, so this is the first stage of a
  chain. The key lives in the state; each step splits it as optax does (one
  new key, then one per leaf in tree order), so the same key draws the same
  noise as optax. Not for packed mode, whose buffers hold no batch axis.

  Args:
    l2_norm_clip: :math:`C \\ge 0`, the largest norm an example keeps.
    noise_multiplier: :math:`\\sigma \\ge 0`, the noise's standard deviation
      over :math:`C`.
    key: a ``jax.random.key``, a raw key or an int seed; ``None`` uses seed
      0 (as optax does, without its warning).
    seed: an int seed, optax's deprecated spelling of ``key`` (without the
      warning); give one of the two.

  References:
    Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang, *Deep Learning
    with Differential Privacy*, CCS 2016, Algorithm 1.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.differentially_private_aggregate(2.0, 0.0, key=0)
    >>> per_example = jnp.array([[4.0, 0.0], [0.0, 0.5]])  # norms 4 and 0.5
    >>> tx.update(per_example, tx.init(jnp.zeros(2)))[0]  # ((2, 0) + (0, 0.5)) / 2
    Array([1.  , 0.25], dtype=float32)
  """
  stage = "differentially_private_aggregate"
  # A finite clip, unlike per_example_global_norm_clip's: the noise is sigma * C.
  spec = HParamSpec(stage, l2_norm_clip=(l2_norm_clip, NONNEGATIVE),
                    noise_multiplier=(noise_multiplier, NONNEGATIVE))
  start = as_key(stage, key, seed)

  def init(params):
    del params
    return DifferentiallyPrivateAggregateState(fresh_key(start), spec.init())

  def update(updates, state, params=None, **extra):
    check_state(stage, state, DifferentiallyPrivateAggregateState)
    del params, extra
    h, hparams = spec.step(state.hparams)
    # The tree, not its leaves: a leaf without the batch axis is named by its key path.
    summed, _ = per_example_global_norm_clip(updates, h["l2_norm_clip"])
    clipped, treedef = jax.tree.flatten(summed)
    batch_size = jax.tree.leaves(updates)[0].shape[0]
    if batch_size == 0:  # the mean of no examples: 0 / 0, NaN in every update
      raise StructureError(f"{stage}: the batch is empty (axis 0 of every leaf has size 0); "
                           "it averages per-example gradients, and there are none")
    rng_key, *leaf_keys = jax.random.split(state.rng_key, len(clipped) + 1)

    def leaf(g, leaf_key):
      std = h["l2_norm_clip"] * h["noise_multiplier"]
      return (gaussian_noised(g, std, leaf_key) / batch_size).astype(g.dtype)

    noised = [leaf(g, k) for g, k in zip(clipped, leaf_keys)]
    return (jax.tree.unflatten(treedef, noised),
            DifferentiallyPrivateAggregateState(rng_key, hparams))

  return GradientTransformation(init, update, name=stage, spec=spec,
                                options=dict(key=shown_key(key, seed)))


@checks_flags
@names_its_arguments
def dpsgd(learning_rate: ScalarOrSchedule, l2_norm_clip: ScalarOrSchedule,
          noise_multiplier: ScalarOrSchedule, seed: int, momentum: ScalarOrSchedule | None = None,
          nesterov: bool = False) -> Chain:
  """DP-SGD: SGD (with optional momentum) on clipped, noised per-example gradients.

  .. math::
    \\bar g_t = \\frac{1}{B} \\left(\\sum_{b=1}^{B} g_b
      \\min\\!\\left(1, \\frac{C}{\\|g_b\\|}\\right) + \\sigma C\\, \\xi_t\\right), \\qquad
    m_t = \\mu m_{t-1} + \\bar g_t, \\qquad
    \\theta_{t+1} = \\theta_t - \\eta\\, m_t

  (:math:`m_t = \\bar g_t` without momentum; Nesterov's uses
  :math:`\\mu m_t + \\bar g_t`). The gradients arrive per example, with the
  batch on axis 0 of every leaf (see :func:`differentially_private_aggregate`).

  Args:
    learning_rate: :math:`\\eta`.
    l2_norm_clip: :math:`C \\ge 0`, the largest norm an example keeps.
    noise_multiplier: :math:`\\sigma \\ge 0`, the noise's standard deviation
      over :math:`C`.
    seed: the int seed of the noise's key (``jax.random.key(seed)``, as optax).
    momentum: :math:`\\mu`, or ``None`` (default) for no momentum stage.
    nesterov: Nesterov momentum.

  References:
    Abadi et al., *Deep Learning with Differential Privacy*, CCS 2016.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=1.1, seed=0))
    dpsgd(
      dp=differentially_private_aggregate(l2_norm_clip=1, noise_multiplier=1.1, key=0),
      lr=scale_by_learning_rate(learning_rate=0.1, flip_sign=True),
    )
  """
  stages = {"dp": differentially_private_aggregate(l2_norm_clip, noise_multiplier, seed=seed)}
  if momentum is not None:
    stages["momentum"] = trace(momentum, nesterov=nesterov)
  return named_chain("dpsgd", **stages, lr=scale_by_learning_rate(learning_rate))
