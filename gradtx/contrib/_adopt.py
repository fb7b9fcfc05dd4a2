"""optax.contrib: ADOPT, Adam normalised by the second moment of the steps before this one.

ADOPT divides a clipped momentum by the root of the previous step's second
moment, so that the denominator does not depend on the current gradient.

The moments, bias corrections and dtypes are gradtx's shared numerics
(:mod:`gradtx.numerics`), as in :func:`gradtx.scale_by_adam`: the arithmetic
runs in the wider of the gradient's and the moment's dtypes, and a moment
held in a narrower ``mu_dtype`` is used as it is stored.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradtx import numerics, tree
from gradtx.chain import Chain, named_chain
from gradtx.core import (NONNEGATIVE_OR_INF, POSITIVE, UNIT, UNIT_HALF_OPEN, GradientTransformation,
                         HParamSpec, ScalarOrSchedule, check_state, check_value, checks_flags,
                         names_its_arguments)
from gradtx.numerics import (as_dtype, clip_modulus, compute_dtype, ema_moment, safe_increment,
                             safe_sqrt)
from gradtx.transforms.moments import ScaleByAdamState
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["adopt", "scale_by_adopt"]


def _fourth_root(count: jax.Array) -> jax.Array:
  """:math:`c_t = t^{1/4}`, ADOPT's clipping bound at step count ``t``."""
  # In the default float dtype (float64 under x64), as optax's ``count ** 0.25`` gives.
  return jnp.asarray(count).astype(jnp.result_type(float)) ** 0.25


@checks_flags
def scale_by_adopt(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.9999,
                   eps: ScalarOrSchedule = 1e-6, mu_dtype: Any = None, *,
                   nesterov: bool = False, use_clipping: bool = True,
                   clip_value_fn: Callable[[jax.Array], jax.Array] = _fourth_root,
                   nu_dtype: Any = None) -> GradientTransformation:
  """ADOPT's step: momentum of the gradient normalised by the *previous* second moment.

  .. math::
    v_0 = g_0^2, \\quad
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1)\\,
      \\operatorname{clip}\\Big(\\frac{g_t}{\\max(\\sqrt{v_{t-1}}, \\epsilon)}, c_t\\Big), \\quad
    u_t = m_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) |g_t|^2

  for :math:`t \\ge 1`, with :math:`m_0 = 0` and
  :math:`\\operatorname{clip}(x, c) = \\min(\\max(x, -c), c)` (on a complex entry, its
  modulus clipped to :math:`c`, its phase kept). The first call
  (step 0) only sets :math:`v_0`: its update is zero. The clip bound is
  :math:`c_t` = ``clip_value_fn(t)``, :math:`t^{1/4}` by default, and reads
  as ``"clip_value"`` in :func:`gradtx.hparams`; ``use_clipping=False`` drops
  the clip. With ``nesterov=True``,
  :math:`u_t = \\beta_1 m_t + (1-\\beta_1) \\operatorname{clip}(\\cdot)` (optax's variant).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1]`, default 0.9999 (ADOPT converges for any
      :math:`\\beta_2`; there is no bias correction to divide by
      :math:`1 - \\beta_2^t`).
    eps: :math:`\\epsilon > 0`, the floor of :math:`\\sqrt{v}`, default 1e-6. It
      must be positive: a gradient entry that has been zero so far has
      :math:`v = 0`.
    mu_dtype: dtype of :math:`m`; ``None`` uses the params' dtype. The step
      uses :math:`m_t` as stored (see :func:`gradtx.scale_by_adam`).
    nesterov: the look-ahead update above.
    use_clipping: clip the normalised gradient (recommended when training from
      scratch).
    clip_value_fn: :math:`c_t \\ge 0` as a function of the step count (a schedule),
      default :math:`t^{1/4}`; a value of ``inf`` clips nothing.
    nu_dtype: dtype of :math:`v`; ``None`` uses the params' dtype. gradtx's
      addition to optax's arguments: on float16 params :math:`v` loses the
      small :math:`g^2` to float16's subnormals (steps 18% off within 5
      steps), and ``jnp.float32`` keeps them; the step is then normalised in
      float32.

  References:
    Taniguchi et al., *ADOPT: Modified Adam Can Converge with Any beta2 with
    the Optimal Rate*, NeurIPS 2024.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.contrib.scale_by_adopt(b1=0.5)
    >>> state = tx.init(jnp.zeros(2))
    >>> u, state = tx.update(jnp.array([2.0, -0.5]), state)  # sets v_0 = g_0^2
    >>> u
    Array([0., 0.], dtype=float32)
    >>> tx.update(jnp.array([4.0, -0.5]), state)[0]  # 0.5 * clip(g / |g_0|, 1)
    Array([ 0.5, -0.5], dtype=float32)
  """
  entries = dict(b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT), eps=(eps, POSITIVE))
  if not callable(clip_value_fn):  # by the argument's name, in every mode (the state's is
    # clip_value, and without use_clipping it is unread: a slip passed without a word)
    check_value("scale_by_adopt", "clip_value_fn", clip_value_fn, NONNEGATIVE_OR_INF,
                scalar=True)
  if use_clipping:
    entries["clip_value"] = (clip_value_fn, NONNEGATIVE_OR_INF)
  spec = HParamSpec("scale_by_adopt", **entries)

  def init(params):
    return ScaleByAdamState(numerics.zero_count(), tree.accumulator_like(params, dtype=mu_dtype),
                            tree.accumulator_like(params, dtype=nu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_adopt", state, ScaleByAdamState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_adopt")
    h, hparams = spec.step(state.hparams)
    # Step 0 only sets v_0 = g_0^2 (b2 -> 0) and keeps m = 0 (b1 -> 1).
    started = state.count > 0
    b1_t = jnp.where(started, h["b1"], 1)
    b2_t = jnp.where(started, h["b2"], 0)

    def leaf(g, m, v):
      dtype = compute_dtype(g, v)
      eps = as_dtype(h["eps"], dtype)
      normalised = as_dtype(g, dtype) / jnp.maximum(safe_sqrt(as_dtype(v, dtype)), eps)
      if use_clipping:
        normalised = clip_modulus(normalised, h["clip_value"])
      # Step 0 weighs it by 0, but g / eps can overflow (float16) and 0 * inf is NaN.
      normalised = jnp.where(started, normalised, 0)
      m_new = ema_moment(normalised, m, b1_t, order=1)
      v_new = ema_moment(g, v, b2_t, order=2)
      u = ema_moment(normalised, m_new, b1_t, order=1, store=False) if nesterov else m_new
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(v_new, v.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdamState(safe_increment(state.count), mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_adopt", spec=spec, options=dict(
      mu_dtype=mu_dtype, nesterov=nesterov, use_clipping=use_clipping, nu_dtype=nu_dtype))


@checks_flags
@names_its_arguments
def adopt(learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9,
          b2: ScalarOrSchedule = 0.9999, eps: ScalarOrSchedule = 1e-6, mu_dtype: Any = None, *,
          nesterov: bool = False, use_clipping: bool = True,
          clip_value_fn: Callable[[jax.Array], jax.Array] = _fourth_root,
          nu_dtype: Any = None) -> Chain:
  """ADOPT: Adam that normalises by the second moment of the steps *before* this one.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1)\\,
      \\operatorname{clip}\\Big(\\frac{g_t}{\\max(\\sqrt{v_{t-1}}, \\epsilon)}, t^{1/4}\\Big), \\quad
    \\theta_{t+1} = \\theta_t - \\eta_t m_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) |g_t|^2

  with :math:`v_0 = g_0^2` set by the first call, whose update is zero (see
  :func:`scale_by_adopt`). Because :math:`v_{t-1}` does not depend on
  :math:`g_t`, ADOPT converges for any :math:`\\beta_2`.

  Args:
    learning_rate: :math:`\\eta \\ge 0`, a float or a schedule.
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1]`, default 0.9999.
    eps: :math:`\\epsilon > 0`, default 1e-6.
    mu_dtype: dtype of :math:`m`.
    nesterov: optax's look-ahead variant (see :func:`scale_by_adopt`).
    use_clipping: clip the normalised gradient, default ``True``.
    clip_value_fn: the clip bound as a function of the step, default :math:`t^{1/4}`.
    nu_dtype: dtype of :math:`v`, gradtx's addition (``jnp.float32`` for
      float16 params; see :func:`scale_by_adopt`).

  References:
    Taniguchi et al., *ADOPT: Modified Adam Can Converge with Any beta2 with
    the Optimal Rate*, NeurIPS 2024.

  Example:
    >>> import gradtx as gtx
    >>> print(gtx.contrib.adopt(1e-3))
    adopt(
      adopt=scale_by_adopt(b1=0.9, b2=0.9999, eps=1e-06, clip_value=_fourth_root, mu_dtype=None, nesterov=False, use_clipping=True, nu_dtype=None),
      lr=scale_by_learning_rate(learning_rate=0.001, flip_sign=True),
    )
  """
  return named_chain("adopt", adopt=scale_by_adopt(
      b1, b2, eps, mu_dtype, nesterov=nesterov, use_clipping=use_clipping,
      clip_value_fn=clip_value_fn, nu_dtype=nu_dtype), lr=scale_by_learning_rate(learning_rate))
