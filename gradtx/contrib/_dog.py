"""optax.contrib: DoG and DoWG, the whole tree's distance from the start over its gradients."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.chain import Chain, named_chain
from gradtx.contrib._common import _optional_decay
from gradtx.contrib._whole_tree import _scalar_dtype
from gradtx.core import (NONNEGATIVE, POSITIVE, GradientTransformation, HParams, HParamSpec,
                         ScalarOrSchedule, check_state, require_params_like, names_its_arguments)
from gradtx.numerics import as_dtype, safe_sqrt
from gradtx.transforms.decay import Mask
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["DoGState", "DoWGState", "dog", "dowg", "scale_by_dog", "scale_by_dowg"]


class DoGState(NamedTuple):
  """State of :func:`scale_by_dog`: optax's fields, then the hyperparameters.

  ``is_init_step`` (a bool), ``init_params`` (:math:`\\theta_0`), and the
  scalars ``max_dist`` (:math:`\\bar r_t`) and ``sum_sq_norm_grads``
  (:math:`G_t`).
  """
  is_init_step: jax.Array
  init_params: Any
  max_dist: jax.Array
  sum_sq_norm_grads: jax.Array
  hparams: HParams


_DOG_INIT_STEPS = ("distance", "learning_rate", "heuristic")


def scale_by_dog(init_step: tuple[Literal["distance", "learning_rate", "heuristic"], float],
                 eps: ScalarOrSchedule = 1e-8) -> GradientTransformation:
  """Distance over gradients (DoG) over the whole tree: one step size for every leaf.

  .. math::
    \\bar r_t = \\max\\left(\\bar r_{t-1},\\ \\|\\theta_t - \\theta_0\\|\\right), \\quad
    G_t = G_{t-1} + \\|g_t\\|^2, \\quad
    u_t = \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}}\\, g_t

  with the norms over the whole tree and :math:`G_0 = 0`. ``init_step`` is
  ``(kind, value)``: ``("distance", r)`` sets :math:`\\bar r_0 = r`;
  ``("heuristic", a)`` sets :math:`\\bar r_0 = a (1 + \\|\\theta_0\\|)`
  (the paper suggests 1e-6, 1e-4 with batch norm); ``("learning_rate",
  \\eta)`` sets :math:`\\bar r_0 = 0` and the first step size to
  :math:`\\eta`. Like :func:`gradtx.scale_by_adam` it returns
  :math:`+\\eta_t g_t`: follow it with ``scale_by_learning_rate``. Needs the
  params (the real ones at ``init`` for ``"heuristic"``). Complex leaves:
  their gradients conjugated (as optax), :math:`\\|x\\|^2 = \\sum |x_i|^2`.

  This is optax.contrib's DoG, the paper's main algorithm. The layer-wise
  variant (each leaf its own :math:`\\bar r` and :math:`G`, the paper's
  LDoG) is :func:`gradtx.scale_by_distance_over_gradients`.

  Args:
    init_step: ``(kind, value)`` as above, the value :math:`> 0`; the kind is
      structural, the value is held in the state as ``init_step`` (for
      ``"distance"`` and ``"heuristic"`` it enters at ``init`` only). On
      bfloat16 or float16 params the first steps, about :math:`\bar r_0`,
      must move them: from ``("heuristic", 1e-6)`` they stay where they are
      and :math:`\bar r` never grows; give ``("heuristic", 1e-2)``.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.

  References:
    Ivgi, Hinder & Carmon, *DoG is SGD's Best Friend: A Parameter-Free
    Dynamic Step Size Schedule*, ICML 2023.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_dog(("distance", 0.5), eps=0.0)
    >>> params = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
    >>> tx.update({"a": jnp.array([0.0]), "b": jnp.array([2.0])}, tx.init(params), params)[0]
    {'a': Array([0.], dtype=float32), 'b': Array([0.5], dtype=float32)}
  """
  stage = "scale_by_dog"
  try:
    kind, value = init_step
  except (TypeError, ValueError):
    raise ValueError(f"{stage}: init_step must be a pair (kind, value), got {init_step!r}"
                     ) from None
  if kind not in _DOG_INIT_STEPS:
    raise ValueError(f"{stage}: the kind of init_step must be one of {_DOG_INIT_STEPS}, "
                     f"got {kind!r}")
  spec = HParamSpec(stage, init_step=(value, POSITIVE), eps=(eps, NONNEGATIVE))

  def init(params):
    hparams = spec.init()
    dtype = _scalar_dtype(params)
    value = as_dtype(hparams["init_step"], dtype)
    if kind == "distance":
      r0 = value
    elif kind == "heuristic":
      r0 = value * (1 + tree.global_norm(params).astype(dtype))
    else:
      r0 = jnp.zeros((), dtype)
    return DoGState(jnp.asarray(True), tree.copy(params), tree.copy(r0), jnp.zeros((), dtype),
                    hparams)

  def update(updates, state, params=None, **extra):
    check_state(stage, state, DoGState)
    del extra
    params = require_params_like(stage, updates, params, state, "init_params")
    h, hparams = spec.step(state.hparams)
    dtype = state.max_dist.dtype
    # 0 at the first step: its derivative there is 0 (jnp.sqrt's gives NaN gradients).
    distance = safe_sqrt(tree.sum_squares(tree.sub(params, state.init_params), dtype))
    max_dist = jnp.maximum(state.max_dist, distance)
    g_sq = state.sum_sq_norm_grads + tree.sum_squares(updates, dtype)
    eta = max_dist / jnp.sqrt(g_sq + as_dtype(h["eps"], dtype))
    if kind == "learning_rate":
      eta = jnp.where(state.is_init_step, as_dtype(h["init_step"], dtype), eta)
    return tree.scale(eta, updates), DoGState(jnp.asarray(False), state.init_params, max_dist,
                                              g_sq, hparams)

  return GradientTransformation(init, update, name=stage, spec=spec,
                                options=dict(init_step_kind=kind))


@names_its_arguments
def dog(learning_rate: ScalarOrSchedule = 1.0,
        init_step: tuple[Literal["distance", "learning_rate", "heuristic"], float] = (
            "heuristic", 1e-6),
        eps: ScalarOrSchedule = 1e-8, weight_decay: ScalarOrSchedule | None = None,
        mask: Mask | None = None) -> Chain:
  """Distance over Gradients (DoG): SGD with a step size of distance travelled over gradients.

  .. math::
    \\bar r_t = \\max_{k \\le t} \\|\\theta_k - \\theta_0\\|\\ (\\ge \\bar r_0), \\quad
    G_t = \\sum_{k \\le t} \\|g_k\\|^2, \\quad
    \\theta_{t+1} = \\theta_t - \\gamma_t \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}}\\, g_t

  with :math:`g_t` the gradient plus :math:`\\lambda \\theta_t` and the norms
  over the whole tree (see :func:`scale_by_dog`). The authors recommend
  averaging the iterates (:func:`gradtx.ema` of the params).

  Args:
    learning_rate: :math:`\\gamma_t`, default 1.
    init_step: default ``("heuristic", 1e-6)``; see :func:`scale_by_dog` (and
      for bfloat16 or float16 params, ``("heuristic", 1e-2)``).
    eps: default 1e-8.
    weight_decay: :math:`\\lambda`, default None: no decay stage (as optax).
      Give 0.0 for a decay stage that holds 0, to be set by name later.
    mask: which leaves to decay.

  References:
    Ivgi, Hinder & Carmon, *DoG is SGD's Best Friend: A Parameter-Free
    Dynamic Step Size Schedule*, ICML 2023.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.dog())
    dog(
      dog=scale_by_dog(init_step=1e-06, eps=1e-08, init_step_kind='heuristic'),
      lr=scale_by_learning_rate(learning_rate=1, flip_sign=True),
    )
  """
  return named_chain("dog", **_optional_decay(weight_decay, mask),
                     dog=scale_by_dog(init_step, eps), lr=scale_by_learning_rate(learning_rate))


class DoWGState(NamedTuple):
  """State of :func:`scale_by_dowg`: optax's fields, then the hyperparameters.

  ``init_params`` (:math:`\\theta_0`) and the scalars
  ``weighted_sq_norm_grads`` (:math:`v_t`) and ``estim_sq_dist``
  (:math:`\\bar r_t^2`).
  """
  init_params: Any
  weighted_sq_norm_grads: jax.Array
  estim_sq_dist: jax.Array
  hparams: HParams


def scale_by_dowg(init_estim_sq_dist: ScalarOrSchedule | None = None,
                  eps: ScalarOrSchedule = 1e-4) -> GradientTransformation:
  """Distance over weighted gradients (DoWG) over the whole tree.

  .. math::
    \\bar r_t^2 = \\max\\left(\\bar r_{t-1}^2,\\ \\|\\theta_t - \\theta_0\\|^2\\right), \\quad
    v_t = v_{t-1} + \\bar r_t^2 \\|g_t\\|^2, \\quad
    u_t = \\frac{\\bar r_t^2}{\\sqrt{v_t} + \\epsilon}\\, g_t

  with :math:`v_0 = 0` and the norms over the whole tree. Returns
  :math:`+\\eta_t g_t`, like :func:`scale_by_dog`. Needs the params.
  Complex leaves: their gradients conjugated (as optax), :math:`\\|x\\|^2 = \\sum |x_i|^2`.

  Args:
    init_estim_sq_dist: :math:`\\bar r_0^2 > 0`, default None: :math:`\\epsilon`.
      Held in the state when given; it enters at ``init`` only.
    eps: :math:`\\epsilon > 0`, default 1e-4.

  References:
    Khaled, Mishchenko & Jin, *DoWG Unleashed: An Efficient Universal
    Parameter-Free Gradient Descent Method*, NeurIPS 2023.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_dowg(init_estim_sq_dist=4.0)
    >>> params = jnp.array([1.0, 2.0])
    >>> tx.update(jnp.array([0.0, 2.0]), tx.init(params), params)[0]  # 4 / (4 + eps) * g
    Array([0.       , 1.9999499], dtype=float32)
  """
  stage = "scale_by_dowg"
  entries = {} if init_estim_sq_dist is None else dict(
      init_estim_sq_dist=(init_estim_sq_dist, POSITIVE))
  spec = HParamSpec(stage, **entries, eps=(eps, POSITIVE))

  def init(params):
    hparams = spec.init()
    dtype = _scalar_dtype(params)
    first = hparams["init_estim_sq_dist"] if entries else hparams["eps"]
    return DoWGState(tree.copy(params), jnp.zeros((), dtype), tree.copy(first, dtype),
                     hparams)

  def update(updates, state, params=None, **extra):
    check_state(stage, state, DoWGState)
    del extra
    params = require_params_like(stage, updates, params, state, "init_params")
    h, hparams = spec.step(state.hparams)
    dtype = state.estim_sq_dist.dtype
    sq_dist = jnp.maximum(state.estim_sq_dist,
                          tree.sum_squares(tree.sub(params, state.init_params), dtype))
    weighted = state.weighted_sq_norm_grads + sq_dist * tree.sum_squares(updates, dtype)
    eta = sq_dist / (safe_sqrt(weighted) + as_dtype(h["eps"], dtype))
    return tree.scale(eta, updates), DoWGState(state.init_params, weighted, sq_dist, hparams)

  return GradientTransformation(init, update, name=stage, spec=spec)


@names_its_arguments
def dowg(learning_rate: ScalarOrSchedule = 1.0, init_estim_sq_dist: ScalarOrSchedule | None = None,
         eps: ScalarOrSchedule = 1e-4, weight_decay: ScalarOrSchedule | None = None,
         mask: Mask | None = None) -> Chain:
  """Distance over Weighted Gradients (DoWG): DoG with gradients weighted by the distance.

  .. math::
    \\bar r_t^2 = \\max_{k \\le t} \\|\\theta_k - \\theta_0\\|^2\\ (\\ge \\bar r_0^2), \\quad
    v_t = \\sum_{k \\le t} \\bar r_k^2 \\|g_k\\|^2, \\quad
    \\theta_{t+1} = \\theta_t - \\gamma_t \\frac{\\bar r_t^2}{\\sqrt{v_t} + \\epsilon}\\, g_t

  with :math:`g_t` the gradient plus :math:`\\lambda \\theta_t` (see
  :func:`scale_by_dowg`).

  Args:
    learning_rate: :math:`\\gamma_t`, default 1.
    init_estim_sq_dist: :math:`\\bar r_0^2`, default None (:math:`\\epsilon`).
    eps: default 1e-4.
    weight_decay: :math:`\\lambda`, default None: no decay stage (as optax);
      0.0 gives one that holds 0, to be set by name later.
    mask: which leaves to decay.

  References:
    Khaled, Mishchenko & Jin, *DoWG Unleashed: An Efficient Universal
    Parameter-Free Gradient Descent Method*, NeurIPS 2023.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.dowg())
    dowg(
      dowg=scale_by_dowg(eps=0.0001),
      lr=scale_by_learning_rate(learning_rate=1, flip_sign=True),
    )
  """
  return named_chain("dowg", **_optional_decay(weight_decay, mask),
                     dowg=scale_by_dowg(init_estim_sq_dist, eps),
                     lr=scale_by_learning_rate(learning_rate))
