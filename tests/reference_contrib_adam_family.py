"""Float64 numpy references of gradtx.contrib's Adam family, from the papers' equations.

Each class follows ``reference.Reference``: ``step`` returns the updates to
add to the params (the ready optimizers include ``-learning_rate``; the
``scale_by_*`` primitives return their output unsigned). ``t`` is the
1-based step number; schedules are evaluated at ``t - 1``.

* ADOPT (Taniguchi et al. 2024, Algorithm 2 with clipping): v_0 = g_0^2 from
  the first gradient, which moves nothing; then
  m_t = b1 m_{t-1} + (1 - b1) clip(g_t / max(sqrt(v_{t-1}), eps), c_t),
  theta_t = theta_{t-1} - lr m_t, v_t = b2 v_{t-1} + (1 - b2) |g_t|^2, with
  c_t = t^(1/4) at the t-th call after the first; a complex entry's modulus is
  clipped (its phase kept).
* AdEMAMix (Pagliardini et al. 2024, Algorithm 1): Adam's debiased fast EMA
  plus alpha times an undebiased slow EMA (decay b3), over Adam's root.
* Simplified AdEMAMix (Morwani et al. 2025): m_t = b1 m_{t-1} + g_t,
  u_t = (m_t + alpha g_t) / (sqrt(n_t / (1 - b2^t) + eps_root) + eps).
* MADGRAD (Defazio & Jelassi 2021, Algorithm 1, with the authors' lr + eps):
  lambda_k = (lr + eps) sqrt(k + 1), s and nu weighted sums of g and g^2,
  z = x_0 - s / (nu^(1/3) + eps), x_{k+1} = beta x_k + (1 - beta) z.
* ACProp (Zhuang et al. 2021): s_t = b2 s_{t-1} + (1 - b2)(g_t - m_t)^2
  + eps_root, u_t = g_t / (sqrt(s_{t-1} / (1 - b2^(t-1))) + eps), and
  u_1 = g_1 / (1 + eps).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from reference import Reference, _abs2, _f64, _resolve_mask, _scaled_abs2, _zeros


def _fourth_root(count: int) -> float:
  return float(count) ** 0.25


def _clip_modulus(x: np.ndarray, c: float) -> np.ndarray:
  """clip(x, -c, c); for complex x, x with its modulus clipped to c (the phase kept)."""
  if not np.iscomplexobj(x):
    return np.clip(x, -c, c)
  modulus = np.abs(x)
  return np.where(modulus > c, x * (c / np.maximum(modulus, c)), x)


class scale_by_adopt(Reference):

  def __init__(self, b1=0.9, b2=0.9999, eps=1e-6, nesterov=False, use_clipping=True,
               clip_value_fn: Callable[[int], float] = _fourth_root):
    self.b1, self.b2, self.eps = b1, b2, eps
    self.nesterov, self.use_clipping, self.clip_value_fn = nesterov, use_clipping, clip_value_fn

  def init_leaf(self, param):
    return {"m": np.zeros_like(param), "v": None}

  def update_leaf(self, name, g, p, s):
    if s["v"] is None:  # the first call only sets v_0
      s["v"] = _abs2(g)
      return np.zeros_like(g)
    b1 = self.sched(self.b1)
    normalised = g / np.maximum(np.sqrt(s["v"]), self.eps)
    if self.use_clipping:
      c = float(np.asarray(self.clip_value_fn(self.t - 1)))  # t - 1 calls after the first
      normalised = _clip_modulus(normalised, c)
    s["m"] = b1 * s["m"] + (1 - b1) * normalised
    s["v"] = self.b2 * s["v"] + _scaled_abs2(1 - self.b2, g)
    return b1 * s["m"] + (1 - b1) * normalised if self.nesterov else s["m"]


class _WithDecayAndRate(Reference):
  """A primitive followed by decoupled weight decay (masked) and ``-learning_rate``."""

  def __init__(self, inner: Reference, learning_rate, weight_decay=0.0, mask=None):
    self.inner, self.learning_rate = inner, learning_rate
    self.weight_decay, self.mask = weight_decay, mask

  def init(self, params):
    super().init(params)
    self.inner.init(params)

  def step(self, grads, params, **extra):
    direction = self.inner.step(grads, params)
    self.count += 1
    decay = _resolve_mask(self.mask, params)
    lr = self.sched(self.learning_rate)
    wd = self.sched(self.weight_decay)
    return {k: -lr * (direction[k] + (wd * _f64(params[k]) if decay[k] else 0))
            for k in grads}


def adopt(learning_rate, **kwargs) -> Reference:
  return _WithDecayAndRate(scale_by_adopt(**kwargs), learning_rate)


class scale_by_ademamix(Reference):

  def __init__(self, b1=0.9, b2=0.999, b3=0.9999, alpha=6.0, eps=1e-8, eps_root=0.0):
    self.b1, self.b2, self.b3, self.alpha = b1, b2, b3, alpha
    self.eps, self.eps_root = eps, eps_root

  def init_leaf(self, param):
    return {"m1": np.zeros_like(param), "m2": np.zeros_like(param), "nu": _zeros(param)}

  def update_leaf(self, name, g, p, s):
    b1, b2, t = self.b1, self.b2, self.t
    b3, alpha = self.sched(self.b3), self.sched(self.alpha)
    s["m1"] = b1 * s["m1"] + (1 - b1) * g
    s["m2"] = b3 * s["m2"] + (1 - b3) * g
    s["nu"] = b2 * s["nu"] + _scaled_abs2(1 - b2, g)
    m1_hat = s["m1"] / (1 - b1 ** t)
    nu_hat = s["nu"] / (1 - b2 ** t)
    return (m1_hat + alpha * s["m2"]) / (np.sqrt(nu_hat + self.eps_root) + self.eps)


def ademamix(learning_rate, b1=0.9, b2=0.999, b3=0.9999, alpha=5.0, eps=1e-8, eps_root=0.0,
             weight_decay=0.0, mask=None) -> Reference:
  return _WithDecayAndRate(scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root), learning_rate,
                           weight_decay, mask)


class scale_by_simplified_ademamix(Reference):

  def __init__(self, b1=0.99, b2=0.95, alpha=0.0, eps=1e-8, eps_root=0.0):
    self.b1, self.b2, self.alpha, self.eps, self.eps_root = b1, b2, alpha, eps, eps_root

  def init_leaf(self, param):
    return {"m": np.zeros_like(param), "n": _zeros(param)}

  def update_leaf(self, name, g, p, s):
    alpha = self.sched(self.alpha)
    s["m"] = self.b1 * s["m"] + g
    s["n"] = self.b2 * s["n"] + _scaled_abs2(1 - self.b2, g)
    n_hat = s["n"] / (1 - self.b2 ** self.t)
    return (s["m"] + alpha * g) / (np.sqrt(n_hat + self.eps_root) + self.eps)


def simplified_ademamix(learning_rate, b1=0.99, b2=0.95, alpha=0.0, eps=1e-8, eps_root=0.0,
                        weight_decay=0.0, mask=None) -> Reference:
  return _WithDecayAndRate(scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root),
                           learning_rate, weight_decay, mask)


class madgrad(Reference):
  """The ready optimizer; ``weight_decay`` is added to the gradient (coupled)."""

  def __init__(self, learning_rate, momentum=0.9, weight_decay=0.0, eps=1e-6):
    self.learning_rate, self.momentum = learning_rate, momentum
    self.weight_decay, self.eps = weight_decay, eps

  def init_leaf(self, param):
    return {"x0": param.copy(), "s": np.zeros_like(param), "nu": _zeros(param)}

  def update_leaf(self, name, g, x, s):
    k = self.t - 1  # steps taken before this one
    g = g + self.weight_decay * x
    lam = (self.sched(self.learning_rate) + self.eps) * np.sqrt(k + 1)
    s["s"] = s["s"] + lam * g
    s["nu"] = s["nu"] + _scaled_abs2(lam, g)
    z = s["x0"] - s["s"] / (np.cbrt(s["nu"]) + self.eps)
    x_next = self.momentum * x + (1 - self.momentum) * z
    return x_next - x


class scale_by_acprop(Reference):

  def __init__(self, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16):
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root

  def init_leaf(self, param):
    return {"m": np.zeros_like(param), "s": _zeros(param)}

  def update_leaf(self, name, g, p, s):
    t = self.t
    s_hat_previous = 1.0 if t == 1 else s["s"] / (1 - self.b2 ** (t - 1))
    u = g / (np.sqrt(s_hat_previous) + self.eps)
    s["m"] = self.b1 * s["m"] + (1 - self.b1) * g
    s["s"] = self.b2 * s["s"] + (1 - self.b2) * _abs2(g - s["m"]) + self.eps_root
    return u


def acprop(learning_rate, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, weight_decay=0.0,
           mask=None) -> Reference:
  return _WithDecayAndRate(scale_by_acprop(b1, b2, eps, eps_root), learning_rate, weight_decay,
                           mask)


__all__: list[str] = ["acprop", "ademamix", "adopt", "madgrad", "scale_by_acprop",
                      "scale_by_ademamix", "scale_by_adopt", "scale_by_simplified_ademamix",
                      "simplified_ademamix"]
