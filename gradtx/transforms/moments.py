"""Moments: the adaptive rules that divide by a running second moment.

Each rule is written once per array in a local ``leaf`` function whose
variables are named as in its docstring; :func:`gradtx.tree.map_multi` lifts
it over the tree.

Every rule here takes a ``nu_dtype`` for the accumulator it divides by
(``None``: the params' dtype), gradtx's addition to optax's arguments. On
float16 params ``nu_dtype=jnp.float32`` is needed: float16 rounds ``eps=1e-8``
and small :math:`g^2` to 0, so the step is 0/0 or :math:`g/0`. The accumulator
is updated and divided into the step in the wider of its dtype and the
gradients', and the step is cast back to the gradients' dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import (NONNEGATIVE, UNIT_HALF_OPEN, GradientTransformation, HParams, HParamSpec,
                         ScalarOrSchedule, check_state, check_value, checks_flags, read_once)
from gradtx import numerics
from gradtx.numerics import (abs_sq, as_dtype, compute_dtype, ema_moment, floor_eps_root,
                             lerp_moment, safe_increment, safe_sqrt)

__all__ = [
    "ScaleByAdaDeltaState", "ScaleByAdamState", "ScaleByAmsgradState", "ScaleByRmsState",
    "ScaleByRssState", "ScaleByStddevState", "scale_by_adadelta", "scale_by_adam",
    "scale_by_adamax", "scale_by_amsgrad", "scale_by_rms", "scale_by_rss", "scale_by_stddev",
]


def check_initial_value(stage: str, name: str, value: Any) -> None:
  """Checks the starting value of an accumulator (``initial_scale``,
  ``initial_accumulator_value``): an option written into the state at init, not a
  hyperparameter, so no :class:`HParamSpec` checks it.

  A finite number :math:`\\ge 0`, one for every entry: a root of the accumulator is
  taken (a negative start gives NaN steps), a NaN or Inf start freezes every step at 0
  or NaN, and an array would be broadcast against every leaf.
  """
  check_value(stage, name, value, NONNEGATIVE, scalar=True)


class ScaleByRmsState(NamedTuple):
  """State of :func:`scale_by_rms`: step ``count`` and second moment ``nu``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  nu: Any
  hparams: HParams


def _divide_by_root(g: jax.Array, s: jax.Array, eps: jax.Array, eps_in_sqrt: bool) -> jax.Array:
  """:math:`g / \\sqrt{s + \\epsilon}` or :math:`g / (\\sqrt{s} + \\epsilon)`."""
  eps = as_dtype(eps, s.dtype)
  g = as_dtype(g, s.dtype)
  return g * jax.lax.rsqrt(s + eps) if eps_in_sqrt else g / (safe_sqrt(s) + eps)


@checks_flags
def scale_by_rms(decay: ScalarOrSchedule = 0.9, eps: ScalarOrSchedule = 1e-8,
                 initial_scale: float = 0.0, eps_in_sqrt: bool = True,
                 bias_correction: bool = False, *,
                 nu_dtype: Any = None) -> GradientTransformation:
  """Divides by the root of a running mean of squared gradients (RMSProp).

  .. math::
    \\nu_t = \\rho\\, \\nu_{t-1} + (1 - \\rho)\\, g_t^2, \\qquad
    u_t = \\frac{g_t}{\\sqrt{\\hat\\nu_t + \\epsilon}}

  with :math:`\\hat\\nu_t = \\nu_t / (1 - \\rho^t)` if ``bias_correction`` else
  :math:`\\nu_t`, and :math:`u_t = g_t / (\\sqrt{\\hat\\nu_t} + \\epsilon)` if
  ``eps_in_sqrt=False`` (torch.optim.RMSprop's placement).

  Args:
    decay: :math:`\\rho \\in [0, 1)`, default 0.9 (torch's ``alpha=0.99``).
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    initial_scale: :math:`\\nu_0 \\ge 0`, default 0 (torch and TF1 use 0 and 1
      respectively): the state's starting ``nu``, written at init (not a
      hyperparameter).
    eps_in_sqrt: where :math:`\\epsilon` sits (see above).
    bias_correction: debias :math:`\\nu`.
    nu_dtype: dtype of :math:`\\nu`; ``None`` uses the params' dtype. gradtx's
      addition to optax's arguments (``jnp.float32`` for float16 params).

  References:
    Tieleman & Hinton, *Lecture 6.5 - rmsprop*, COURSERA: Neural Networks for
    Machine Learning, 2012.
  """
  spec = HParamSpec("scale_by_rms", decay=(decay, UNIT_HALF_OPEN), eps=(eps, NONNEGATIVE))
  check_initial_value("scale_by_rms", "initial_scale", initial_scale)

  def init(params):
    return ScaleByRmsState(numerics.zero_count(),
                           tree.accumulator_like(params, initial_scale, nu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_rms", state, ScaleByRmsState)
    del params, extra
    tree.check_structure(state.nu, updates, "state.nu", "updates", stage="scale_by_rms")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)

    def leaf(g, nu):
      rho = h["decay"]
      nu_new = ema_moment(g, nu, rho, order=2)
      nu_hat = numerics.bias_correction(nu_new, rho, count) if bias_correction else nu_new
      u = _divide_by_root(g, nu_hat, h["eps"], eps_in_sqrt)
      return as_dtype(u, g.dtype), as_dtype(nu_new, nu.dtype)

    updates, nu = tree.map_multi(leaf, 2, updates, state.nu)
    return updates, ScaleByRmsState(count, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_rms", spec=spec, options=dict(
      initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt, bias_correction=bias_correction,
      nu_dtype=nu_dtype))


class ScaleByStddevState(NamedTuple):
  """State of :func:`scale_by_stddev`: ``count``, first moment ``mu``, second ``nu``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  mu: Any
  nu: Any
  hparams: HParams


@checks_flags
def scale_by_stddev(decay: ScalarOrSchedule = 0.9, eps: ScalarOrSchedule = 1e-8,
                    initial_scale: float = 0.0, eps_in_sqrt: bool = True,
                    bias_correction: bool = False, *,
                    nu_dtype: Any = None) -> GradientTransformation:
  """Divides by a running standard deviation of the gradients (centered RMSProp).

  .. math::
    \\mu_t = \\rho\\, \\mu_{t-1} + (1 - \\rho)\\, g_t, \\quad
    \\nu_t = \\rho\\, \\nu_{t-1} + (1 - \\rho)\\, g_t^2, \\quad
    u_t = \\frac{g_t}{\\sqrt{\\hat\\nu_t - \\hat\\mu_t^2 + \\epsilon}}

  Hats, ``eps_in_sqrt``, the defaults and ``nu_dtype`` (the dtype of
  :math:`\\nu`, gradtx's addition; :math:`\\mu` keeps the params' dtype) are as
  in :func:`scale_by_rms`. Where :math:`\\hat\\nu_t - \\hat\\mu_t^2` rounds below 0
  (it is 0 at the first bias-corrected step) it is taken as 0; optax steps by NaN there.

  References:
    Graves, *Generating Sequences With Recurrent Neural Networks*, 2013.
  """
  spec = HParamSpec("scale_by_stddev", decay=(decay, UNIT_HALF_OPEN), eps=(eps, NONNEGATIVE))
  check_initial_value("scale_by_stddev", "initial_scale", initial_scale)

  def init(params):
    return ScaleByStddevState(numerics.zero_count(), tree.zeros_like(params),
                              tree.accumulator_like(params, initial_scale, nu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_stddev", state, ScaleByStddevState)
    del params, extra
    tree.check_structure(state.nu, updates, "state.nu", "updates", stage="scale_by_stddev")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)

    def leaf(g, mu, nu):
      rho = h["decay"]
      mu_new = ema_moment(g, mu, rho, order=1)
      nu_new = ema_moment(g, nu, rho, order=2)
      mu_hat = numerics.bias_correction(mu_new, rho, count) if bias_correction else mu_new
      nu_hat = numerics.bias_correction(nu_new, rho, count) if bias_correction else nu_new
      # mu_hat squared after widening to nu's dtype (float16's square underflows).
      mu_sq = abs_sq(as_dtype(mu_hat, compute_dtype(mu_hat, nu_hat)), nu_hat.dtype)
      # A variance is >= 0, but the difference rounds below 0 where it is near 0 (the
      # first bias-corrected step, where it is exactly 0; a constant gradient): its root
      # would be NaN. optax takes the root as it is.
      variance = jnp.maximum(nu_hat - mu_sq, 0)
      u = _divide_by_root(g, variance, h["eps"], eps_in_sqrt)
      return as_dtype(u, g.dtype), as_dtype(mu_new, mu.dtype), as_dtype(nu_new, nu.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByStddevState(count, mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_stddev", spec=spec, options=dict(
      initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt, bias_correction=bias_correction,
      nu_dtype=nu_dtype))


class ScaleByRssState(NamedTuple):
  """State of :func:`scale_by_rss`: the running ``sum_of_squares``."""
  sum_of_squares: Any
  hparams: HParams


@checks_flags
def scale_by_rss(initial_accumulator_value: float = 0.1,
                 eps: ScalarOrSchedule = 1e-7, *,
                 eps_in_sqrt: bool = True, nu_dtype: Any = None) -> GradientTransformation:
  """Divides by the root of the sum of all squared gradients so far (Adagrad).

  .. math::
    G_t = G_{t-1} + g_t^2, \\qquad
    u_t = \\frac{g_t}{\\sqrt{G_t + \\epsilon}} \\ \\text{where}\\ G_t > 0, \\text{ else } 0

  or :math:`u_t = g_t / (\\sqrt{G_t} + \\epsilon)` with ``eps_in_sqrt=False``.

  Args:
    initial_accumulator_value: :math:`G_0 \\ge 0`, default 0.1 (torch's default is 0):
      the state's starting ``sum_of_squares``, written at init (not a hyperparameter).
    eps: :math:`\\epsilon \\ge 0`, default 1e-7, inside the root (torch adds
      ``eps=1e-10`` outside it).
    eps_in_sqrt: :math:`\\epsilon` inside the root (default, optax) or outside
      it (torch.optim.Adagrad: ``scale_by_rss(0.0, 1e-10, eps_in_sqrt=False)``).
    nu_dtype: dtype of :math:`G` (``sum_of_squares``); ``None`` uses the params'
      dtype. gradtx's addition to optax's arguments. In float16 :math:`G` stops
      growing once :math:`g^2` is below half its spacing (at 2048 for
      :math:`|g| = 1`) and overflows to Inf, which stops the steps, past 65504;
      ``jnp.float32`` avoids both.

  References:
    Duchi, Hazan & Singer, *Adaptive Subgradient Methods for Online Learning
    and Stochastic Optimization*, JMLR 2011.
  """
  spec = HParamSpec("scale_by_rss", eps=(eps, NONNEGATIVE))
  check_initial_value("scale_by_rss", "initial_accumulator_value", initial_accumulator_value)

  def init(params):
    return ScaleByRssState(tree.accumulator_like(params, initial_accumulator_value, nu_dtype),
                           spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_rss", state, ScaleByRssState)
    del params, extra
    tree.check_structure(state.sum_of_squares, updates, "state.sum_of_squares", "updates",
                         stage="scale_by_rss")
    h, hparams = spec.step(state.hparams)

    def leaf(g, G):
      dtype = compute_dtype(g, G)
      G_new = abs_sq(as_dtype(g, dtype), dtype) + as_dtype(G, dtype)
      # Where G_t is 0 (g_t is 0 then) the step is 0: the root reads Inf there, so that
      # g_t times its reciprocal, 0, is 0, and neither the step nor its derivative is
      # 0 / 0, whatever eps is. One select, not a second one around the step: an Adagrad
      # step in plain JAX on GPT-2 small's tree compiled in 0.67 s with one, 0.85 s with two.
      u = _divide_by_root(g, jnp.where(G_new > 0, G_new, jnp.inf), h["eps"], eps_in_sqrt)
      return as_dtype(u, g.dtype), as_dtype(G_new, G.dtype)

    updates, sum_of_squares = tree.map_multi(leaf, 2, updates, state.sum_of_squares)
    return updates, ScaleByRssState(sum_of_squares, hparams)

  return GradientTransformation(init, update, name="scale_by_rss", spec=spec, options=dict(
      initial_accumulator_value=initial_accumulator_value, eps_in_sqrt=eps_in_sqrt,
      nu_dtype=nu_dtype))


class ScaleByAdaDeltaState(NamedTuple):
  """State of :func:`scale_by_adadelta`: running means ``e_g`` of g² and ``e_x`` of Δx²."""
  e_g: Any
  e_x: Any
  hparams: HParams


def scale_by_adadelta(rho: ScalarOrSchedule = 0.9, eps: ScalarOrSchedule = 1e-6, *,
                      nu_dtype: Any = None) -> GradientTransformation:
  """The Adadelta step: a ratio of running RMS of past steps and of gradients.

  .. math::
    E[g^2]_t = \\rho E[g^2]_{t-1} + (1-\\rho) g_t^2, \\quad
    \\Delta_t = \\frac{\\sqrt{E[\\Delta^2]_{t-1} + \\epsilon}}{\\sqrt{E[g^2]_t + \\epsilon}}\\, g_t,
    \\quad E[\\Delta^2]_t = \\rho E[\\Delta^2]_{t-1} + (1-\\rho) \\Delta_t^2

  and :math:`u_t = \\Delta_t` (a later stage flips the sign).

  Args:
    rho: :math:`\\rho \\in [0, 1)`, default 0.9.
    eps: :math:`\\epsilon \\ge 0`, default 1e-6.
    nu_dtype: dtype of both running means, :math:`E[g^2]` and :math:`E[\\Delta^2]`;
      ``None`` uses the params' dtype. gradtx's addition to optax's arguments.
      One dtype for both: the step is the ratio of their roots, and
      :math:`E[\\Delta^2]` (of steps, smaller than the gradients) underflows in
      float16 before :math:`E[g^2]` does.

  References:
    Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, 2012.
  """
  spec = HParamSpec("scale_by_adadelta", rho=(rho, UNIT_HALF_OPEN), eps=(eps, NONNEGATIVE))

  def init(params):
    return ScaleByAdaDeltaState(tree.accumulator_like(params, dtype=nu_dtype),
                                tree.accumulator_like(params, dtype=nu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_adadelta", state, ScaleByAdaDeltaState)
    del params, extra
    tree.check_structure(state.e_g, updates, "state.e_g", "updates", stage="scale_by_adadelta")
    h, hparams = spec.step(state.hparams)

    def leaf(g, e_g, e_x):
      e_g_new = ema_moment(g, e_g, h["rho"], order=2)
      eps = as_dtype(h["eps"], e_g_new.dtype)
      e_x_eps, e_g_eps = as_dtype(e_x, eps.dtype) + eps, e_g_new + eps
      g_wide = as_dtype(g, eps.dtype)
      delta = jnp.sqrt(e_x_eps) / jnp.sqrt(e_g_eps) * g_wide
      # E[Δ²] takes |Δ|² as (E[Δ²] + ε)/(E[g²] + ε)|g|², not as Δ squared: then the roots
      # have one reader (the step) and the quotient another (E[Δ²]), and XLA computes each
      # inside its reader's kernel. Through Δ both readers took both roots, and XLA wrote
      # each root to memory in a kernel of its own: with adadelta's weight-decay stage 6
      # kernels per leaf, now 4 and a copy of E[Δ²]; on GPT-2's tree the step went from
      # 1.29x optax's time to 0.94x. The quotient multiplies g, then g again, in E's dtype:
      # |g|² alone overflows where Δ² does not (E[g²] Inf past |g| ~ 1.8e19 in float32,
      # where the quotient is 0 and 0 Inf is NaN; and float16 g past 256 under a float32
      # nu_dtype, whose E[g²] holds g² but g² in float16 was Inf).
      delta_sq = e_x_eps / e_g_eps * g_wide
      if jnp.iscomplexobj(g_wide):  # |g|², real, in the (complex) moment's dtype
        delta_sq = as_dtype((delta_sq * g_wide.conj()).real, eps.dtype)
      else:
        delta_sq = delta_sq * g_wide
      e_x_new = ema_moment(delta_sq, e_x, h["rho"], order=1)
      return as_dtype(delta, g.dtype), as_dtype(e_g_new, e_g.dtype), as_dtype(e_x_new, e_x.dtype)

    updates, e_g, e_x = tree.map_multi(leaf, 3, updates, state.e_g, state.e_x)
    return updates, ScaleByAdaDeltaState(e_g, e_x, hparams)

  return GradientTransformation(init, update, name="scale_by_adadelta", spec=spec,
                                options=dict(nu_dtype=nu_dtype))


class ScaleByAdamState(NamedTuple):
  """State of :func:`scale_by_adam` and :func:`scale_by_adamax`: ``count``, ``mu``, ``nu``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  mu: Any
  nu: Any
  hparams: HParams


def _adam_spec(stage: str, b1: Any, b2: Any, eps: Any, eps_root: Any) -> HParamSpec:
  # eps_root is checked as every other value: None is refused at construction (the step
  # reads it; optax 0.2.8 takes None too and fails at the first step).
  return HParamSpec(stage, b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    eps=(eps, NONNEGATIVE), eps_root=(eps_root, NONNEGATIVE))


def debiased_first_moment(g: jax.Array, m_new: jax.Array, b1: jax.Array, count: jax.Array,
                          nesterov: bool) -> jax.Array:
  """:math:`\\hat m_t`, plain or with Dozat's Nesterov look-ahead (NAdam).

  Plain: :math:`m_t / (1-\\beta_1^t)`; Nesterov:
  :math:`\\beta_1 m_t / (1-\\beta_1^{t+1}) + (1-\\beta_1) g_t / (1-\\beta_1^t)`.
  """
  if not nesterov:
    return numerics.bias_correction(m_new, b1, count)
  # Shared, so that every leaf's bias correction for t + 1 is the same traced scalar.
  next_count = numerics.shared("next count", (count,), lambda: safe_increment(count))
  # In float32 for a 16-bit moment: g / (1 - b1^t) is 20 g at the first step with b1 =
  # 0.95, past float16's max for |g| > 3276, where the sum (about g) is not (Muon on
  # float16 stepped by NaN). Float32 and wider moments compute as they did.
  dtype = numerics.at_least_float32(m_new)
  look_ahead = (as_dtype(b1, dtype) * numerics.bias_correction(as_dtype(m_new, dtype), b1,
                                                               next_count)
                + as_dtype(1 - b1, dtype) * numerics.bias_correction(as_dtype(g, dtype), b1, count))
  return as_dtype(look_ahead, m_new.dtype)


def adam_step_scalars(h: Any, count: jax.Array, nesterov: bool = False,
                      factor: jax.Array | None = None) -> dict[str, jax.Array]:
  """Adam's per-step scalars, so that each leaf computes :math:`u = c\\, m_t /
  (\\sqrt{v_t + r} + e)`, or with ``nesterov`` :math:`u = (c\\, m_t + c_g\\, g_t) /
  (\\sqrt{v_t + r} + e)`.

  That is :math:`\\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_\\text{root}} + \\epsilon)`
  with the bias corrections :math:`b_i = 1 - \\beta_i^t` folded in:
  :math:`c = \\sqrt{b_2} / b_1`, :math:`r = \\max(\\epsilon_\\text{root} b_2,
  2^{-126})` (:func:`gradtx.numerics.floor_eps_root`),
  :math:`e = \\epsilon \\sqrt{b_2}`. Why: every scalar a leaf reads, and every
  operation on it, is repeated in every leaf's kernel, and on a tree of many
  leaves XLA's compile time grows with them. Here the step reads three scalars
  where the textbook form reads four (two bias corrections, two epsilons), and
  all of them are computed before :func:`gradtx.core.read_once`, so no kernel
  computes :math:`1 - \\beta` or :math:`1 - \\beta^t` again. The moments
  read only :math:`1 - \\beta` (:func:`gradtx.numerics.lerp_moment`), and a
  learning rate that follows in a chain is folded into :math:`c`. Counted by
  callgrind over one XLA compile on leaves of 1024 floats: 13.6 M instructions
  per leaf with :math:`\\beta` and :math:`1 - \\beta` read and the rate
  multiplied apart, 12.1 M now, 13.2 M for optax (its hyperparameters
  constants).

  With ``nesterov`` (Dozat's :math:`\\hat m_t = \\beta_1 m_t / (1-\\beta_1^{t+1})
  + (1-\\beta_1) g_t / b_1`): :math:`c = \\sqrt{b_2}\\, \\beta_1 / (1-\\beta_1^{t+1})`
  and :math:`c_g = \\sqrt{b_2}\\, (1-\\beta_1) / b_1`. A ``factor`` (the learning
  rate a chain folds in) multiplies :math:`c` and :math:`c_g`.
  """
  # In the widest of the hyperparameters' dtypes (each may be an array of its own dtype).
  dtype = compute_dtype(*(h[n] for n in ("b1", "b2", "eps", "eps_root")))
  b1, b2, eps, eps_root = (as_dtype(h[n], dtype) for n in ("b1", "b2", "eps", "eps_root"))
  t = as_dtype(count, dtype)
  b1_t, b2_t = 1 - b1 ** t, 1 - b2 ** t
  root_b2_t = jnp.sqrt(b2_t)
  # At least 2**-126 (see floor_eps_root): once per step, so no leaf's kernel grows.
  r = floor_eps_root(eps_root * b2_t)
  rate = 1 if factor is None else as_dtype(factor, dtype)
  k = {"1-b1": 1 - b1, "1-b2": 1 - b2, "r": r, "e": eps * root_b2_t}
  if nesterov:
    k["c"] = rate * root_b2_t * b1 / (1 - b1 ** (t + 1))
    k["c_g"] = rate * root_b2_t * (1 - b1) / b1_t
  else:
    k["c"] = rate * root_b2_t / b1_t
  return k


def adam_direction(k: dict[str, jax.Array], g: jax.Array, m_new: jax.Array, v_new: jax.Array,
                   nesterov: bool) -> jax.Array:
  """:math:`u = c\\, m_t / (\\sqrt{v_t + r} + e)` (with ``nesterov``, :math:`c\\, m_t +
  c_g\\, g_t` above), from :func:`adam_step_scalars`' ``k``, in ``v_new``'s dtype, float32
  for float16 (:func:`gradtx.numerics.scaling_dtype`).

  The learning rate folded into :math:`c = \\alpha \\sqrt{1-\\beta_2^t} / (1-\\beta_1^t)`
  (about :math:`0.3\\alpha`), :math:`e` and :math:`r` are smaller than the rate: in
  float16 they were subnormal or 0, and Adam's float16 steps were 7% off at
  :math:`\\alpha = 10^{-5}` and 0 at :math:`10^{-6}` (optax, which multiplies by the rate
  last, 0.4% and 5%).
  """
  dtype = numerics.scaling_dtype(v_new.dtype)
  c, r, e = (as_dtype(k[n], dtype) for n in ("c", "r", "e"))
  numerator = c * as_dtype(m_new, dtype)
  if nesterov:
    numerator = numerator + as_dtype(k["c_g"], dtype) * as_dtype(g, dtype)
  # r > 0: see adam_step_scalars
  return numerator / numerics.adam_denominator(as_dtype(v_new, dtype), e, r)


def adam_moments(g: jax.Array, m: jax.Array, v: jax.Array, h: HParams, count: jax.Array,
                  nesterov: bool) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Adam's shared arithmetic: new ``m``, ``v`` and debiased ``m_hat``, ``v_hat``."""
  m_new = ema_moment(g, m, h["b1"], order=1)
  v_new = ema_moment(g, v, h["b2"], order=2)
  m_hat = debiased_first_moment(g, m_new, h["b1"], count, nesterov)
  return m_new, v_new, m_hat, numerics.bias_correction(v_new, h["b2"], count)


@checks_flags
def scale_by_adam(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                  eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0,
                  mu_dtype: Any = None, *, nesterov: bool = False,
                  nu_dtype: Any = None) -> GradientTransformation:
  """Adam's step: a debiased first moment over the root of a debiased second.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\\\
    \\hat m_t = \\frac{m_t}{1-\\beta_1^t}, \\quad \\hat v_t = \\frac{v_t}{1-\\beta_2^t}, \\quad
    u_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_\\text{root}} + \\epsilon}

  With ``nesterov=True`` (NAdam),
  :math:`\\hat m_t = \\beta_1 m_t / (1-\\beta_1^{t+1}) + (1-\\beta_1) g_t / (1-\\beta_1^t)`.

  Computed as (see :func:`adam_step_scalars`): the moments as
  :math:`m + (1-\\beta)(g^k - m)`, and :math:`u_t = c\\, m_t / (\\sqrt{v_t + r} + e)`.
  In a chain, a learning rate right after this stage is folded into
  :math:`c` (and :math:`c_g`; see :class:`gradtx.Chain`).

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0` outside the root, default 1e-8 (as in torch).
    eps_root: :math:`\\epsilon_\\text{root} \\ge 0` inside the root, default 0.
      Gradients taken through the step (meta-learning) are finite with 0 too,
      where a gradient entry is 0 at every step: optax's need ``eps_root > 0``.
    mu_dtype: dtype of :math:`m` (e.g. ``jnp.bfloat16``); arithmetic stays in
      the gradients' dtype, except that a 16-bit moment's change
      :math:`(1-\\beta)(g^k - m)` is formed in float32 and rounded once, so that
      float16's :math:`g - m` and :math:`g^2` do not overflow where the moments
      do not (:func:`gradtx.numerics.lerp_moment`), and a float16 step
      :math:`u_t` is formed in float32 (:func:`adam_direction`). The step uses :math:`m_t`
      and :math:`v_t` as stored (rounded to their dtypes), so XLA updates the
      moment buffers in place. optax uses the unrounded values: the two differ
      by that rounding.
    nesterov: use Dozat's Nesterov form (NAdam).
    nu_dtype: dtype of :math:`v`; gradtx's addition to optax's arguments.

  References:
    Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015.
    Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR workshop 2016.
  """
  spec = _adam_spec("scale_by_adam", b1, b2, eps, eps_root)

  def init(params):
    return ScaleByAdamState(numerics.zero_count(), tree.accumulator_like(params, dtype=mu_dtype),
                            tree.accumulator_like(params, dtype=nu_dtype), spec.init())

  def update(updates, state, params=None, *, factor=None, **extra):
    check_state("scale_by_adam", state, ScaleByAdamState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_adam")
    h, hparams = spec.step(state.hparams, read=False)
    count = safe_increment(state.count)
    # factor: the learning rate after this stage, folded in by the chain.
    k = read_once(adam_step_scalars(h, count, nesterov, factor))

    def leaf(g, m, v):
      m_new = lerp_moment(g, m, k["1-b1"], order=1)
      v_new = lerp_moment(g, v, k["1-b2"], order=2)
      u = adam_direction(k, g, m_new, v_new, nesterov)
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(v_new, v.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdamState(count, mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_adam", spec=spec, options=dict(
      mu_dtype=mu_dtype, nu_dtype=nu_dtype, nesterov=nesterov), takes_factor=True)


class ScaleByAmsgradState(NamedTuple):
  """State of :func:`scale_by_amsgrad`: ``count``, ``mu``, ``nu`` and the running max ``nu_max``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  mu: Any
  nu: Any
  nu_max: Any
  hparams: HParams


@checks_flags
def scale_by_amsgrad(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                     eps: ScalarOrSchedule = 1e-8, eps_root: ScalarOrSchedule = 0.0,
                     mu_dtype: Any = None, bias_correction_mu: bool = True,
                     bias_correction_nu: bool = True, *,
                     nu_dtype: Any = None) -> GradientTransformation:
  """AMSGrad: Adam dividing by the running maximum of the debiased second moment.

  .. math::
    \\hat v^{\\max}_t = \\max(\\hat v^{\\max}_{t-1}, \\hat v_t), \\qquad
    u_t = \\frac{\\hat m_t}{\\sqrt{\\hat v^{\\max}_t + \\epsilon_\\text{root}} + \\epsilon}

  with :math:`\\hat m_t, \\hat v_t` as in :func:`scale_by_adam` (optax's
  convention). ``bias_correction_mu=False`` takes :math:`\\hat m_t = m_t`,
  ``bias_correction_nu=False`` :math:`\\hat v_t = v_t`; both False is the
  paper's rule.

  Args: as :func:`scale_by_adam` (``nu_dtype``, gradtx's addition, is the
  dtype of both :math:`v` and :math:`\\hat v^{\\max}`), and ``bias_correction_mu``,
  ``bias_correction_nu`` (structural, default True).

  References:
    Reddi, Kale & Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018.
  """
  spec = _adam_spec("scale_by_amsgrad", b1, b2, eps, eps_root)

  def init(params):
    nu = tree.accumulator_like(params, dtype=nu_dtype)
    return ScaleByAmsgradState(numerics.zero_count(), tree.accumulator_like(params, dtype=mu_dtype),
                               nu, tree.copy(nu), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_amsgrad", state, ScaleByAmsgradState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_amsgrad")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)
    root_eps = floor_eps_root(h["eps_root"])  # sqrt's derivative finite at v = 0

    def leaf(g, m, v, v_max):
      # adam_moments without the corrections a flag turns off (traced only when used).
      m_new = ema_moment(g, m, h["b1"], order=1)
      v_new = ema_moment(g, v, h["b2"], order=2)
      m_hat = numerics.bias_correction(m_new, h["b1"], count) if bias_correction_mu else m_new
      v_hat = numerics.bias_correction(v_new, h["b2"], count) if bias_correction_nu else v_new
      v_max_new = jnp.maximum(as_dtype(v_max, v_hat.dtype), v_hat)
      eps, eps_root = as_dtype(h["eps"], v_hat.dtype), as_dtype(root_eps, v_hat.dtype)
      u = as_dtype(m_hat, v_hat.dtype) / numerics.adam_denominator(v_max_new, eps, eps_root)
      return (as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(v_new, v.dtype),
              as_dtype(v_max_new, v_max.dtype))

    updates, mu, nu, nu_max = tree.map_multi(leaf, 4, updates, state.mu, state.nu, state.nu_max)
    return updates, ScaleByAmsgradState(count, mu, nu, nu_max, hparams)

  return GradientTransformation(init, update, name="scale_by_amsgrad", spec=spec,
                                options=dict(mu_dtype=mu_dtype,
                                             bias_correction_mu=bias_correction_mu,
                                             bias_correction_nu=bias_correction_nu,
                                             nu_dtype=nu_dtype))


def scale_by_adamax(b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999,
                    eps: ScalarOrSchedule = 1e-8, *,
                    nu_dtype: Any = None) -> GradientTransformation:
  """Adamax: Adam with the infinity norm in place of the second moment.

  .. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
    v_t = \\max(\\beta_2 v_{t-1}, |g_t| + \\epsilon), \\quad
    u_t = \\frac{m_t}{(1-\\beta_1^t)\\, v_t}

  (optax's placement of :math:`\\epsilon`, inside the max; torch also puts it there.)

  Args:
    b1: :math:`\\beta_1 \\in [0, 1)`, default 0.9.
    b2: :math:`\\beta_2 \\in [0, 1)`, default 0.999.
    eps: :math:`\\epsilon \\ge 0`, default 1e-8.
    nu_dtype: dtype of :math:`v`; ``None`` uses the params' dtype. gradtx's
      addition to optax's arguments: float16 rounds ``eps=1e-8`` to 0, so an
      entry whose gradients have all been 0 steps by 0/0; ``jnp.float32`` keeps it.

  References:
    Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015, §7.1.
  """
  spec = HParamSpec("scale_by_adamax", b1=(b1, UNIT_HALF_OPEN), b2=(b2, UNIT_HALF_OPEN),
                    eps=(eps, NONNEGATIVE))

  def init(params):
    return ScaleByAdamState(numerics.zero_count(), tree.zeros_like(params),
                            tree.accumulator_like(params, dtype=nu_dtype), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("scale_by_adamax", state, ScaleByAdamState)
    del params, extra
    tree.check_structure(state.mu, updates, "state.mu", "updates", stage="scale_by_adamax")
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)

    def leaf(g, m, v):
      m_new = ema_moment(g, m, h["b1"], order=1)
      dtype = compute_dtype(g, v)
      v_new = numerics.stored(jnp.maximum(as_dtype(h["b2"], dtype) * as_dtype(v, dtype),
                                          as_dtype(jnp.abs(g), dtype) + as_dtype(h["eps"], dtype)),
                              v.dtype)
      # In the wider of m's and v's dtypes (v's eps is 0 in float16).
      u_dtype = compute_dtype(m_new, v_new)
      u = (as_dtype(numerics.bias_correction(m_new, h["b1"], count), u_dtype)
           / as_dtype(v_new, u_dtype))
      return as_dtype(u, g.dtype), as_dtype(m_new, m.dtype), as_dtype(v_new, v.dtype)

    updates, mu, nu = tree.map_multi(leaf, 3, updates, state.mu, state.nu)
    return updates, ScaleByAdamState(count, mu, nu, hparams)

  return GradientTransformation(init, update, name="scale_by_adamax", spec=spec,
                                options=dict(nu_dtype=nu_dtype))
