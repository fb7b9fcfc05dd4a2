"""optax.contrib: sharpness-aware minimisation (SAM), with :func:`normalize`.

SAM descends with the gradient taken at a perturbed point: taken by the
caller between calls, or by ``grad_fn`` inside one call in opaque mode. The
calling conventions are optax 0.2.8's, so code written for ``optax.contrib``
runs unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.chain import ChainState, in_stage
from gradtx.core import (POSITIVE_INT, EmptyState, GradientTransformation, HParams, HParamSpec,
                         apply_updates, as_transformation, branch, check_integer_option,
                         check_state, checks_flags, require_params)
from gradtx.errors import missing_extra_argument
from gradtx.numerics import as_dtype, compute_dtype, zero_count
from gradtx.transforms.scaling import normalize_by_update_norm
from gradtx.wrappers._common import reset_keeping_hparams

__all__ = ["NormalizeState", "SAMState", "normalize", "sam"]


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


@checks_flags
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
  check_integer_option("sam", "sync_period", sync_period, POSITIVE_INT)
  optimizer = as_transformation(optimizer, "sam", "optimizer")
  adv_optimizer = as_transformation(adv_optimizer, "sam", "adv_optimizer")
  spec = HParamSpec("sam")

  def named(opt_state, adv_state):
    return (ChainState({"optimizer": opt_state}), ChainState({"adv_optimizer": adv_state}))

  def init(params):
    with in_stage("optimizer"):
      opt_state = optimizer.init(params)
    with in_stage("adv_optimizer"):
      adv_state = adv_optimizer.init(params)
    return SAMState(zero_count(), *named(opt_state, adv_state),
                    # A copy: params and state may both be donated to a jitted step.
                    None if opaque_mode else tree.copy(params), spec.init())

  def reset(adv_state, params):
    return (reset_keeping_hparams(True, adv_state, adv_optimizer.init(params)) if reset_state
            else adv_state)

  def ascend(adv_updates, like):
    """The adversarial step: the optimizer's output subtracted, in the gradients' dtypes."""
    return tree.tree_map(lambda u, g: (-u).astype(g.dtype), adv_updates, like)

  def transparent_update(updates, state, params, extra):
    tree.check_structure(params, state.cache, "params", "state.cache", stage="sam")
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

    new_updates, opt_state, adv_state = branch(last, outer_step, adversarial_step, None)
    steps = jnp.where(last, 0, state.steps_since_sync + 1).astype(jnp.int32)
    return new_updates, SAMState(steps, *named(opt_state, adv_state), cache, state.hparams)

  def opaque_update(updates, state, params, extra, grad_fn):
    if grad_fn is None:
      raise missing_extra_argument(_GRAD_FN_MISSING)
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
    check_state("sam", state, SAMState)
    params = require_params("sam", params)
    tree.check_structure(params, updates, "params", "updates", stage="sam")
    if opaque_mode:
      return opaque_update(updates, state, params, extra, grad_fn)
    return transparent_update(updates, state, params, extra)

  return GradientTransformation(init, update, name="sam", spec=spec, options=dict(
      sync_period=sync_period, reset_state=reset_state, opaque_mode=opaque_mode,
      batch_axis_name=batch_axis_name, optimizer=optimizer, adv_optimizer=adv_optimizer))
