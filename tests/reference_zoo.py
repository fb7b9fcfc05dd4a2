"""Numpy references for the rules that ``reference.py`` does not cover.

Same interface as ``reference.py`` (``init(params)``, ``step(grads, params,
**extra) -> updates`` to be added to the params), re-derived from the papers'
equations in float64.
"""

from __future__ import annotations

import numpy as np

from reference import Reference, _f64, _norm

__all__ = ["centralize", "lbfgs", "scale_by_nadam", "scale_by_param_block_norm"]


class scale_by_param_block_norm(Reference):
  """u = g * max(||p||, min_scale)   per leaf."""

  def __init__(self, min_scale: float = 1e-3):
    self.min_scale = min_scale

  def update_leaf(self, name, g, p, s):
    return max(_norm(p), self.min_scale) * g


class centralize(Reference):
  """Gradient centralization (Yong et al., ECCV 2020): for a leaf of rank >= 2,
  u[i, ...] = g[i, ...] - mean of g[i, ...] over the remaining axes; lower
  ranks pass through."""

  def update_leaf(self, name, g, p, s):
    if g.ndim < 2:
      return g
    return g - g.mean(axis=tuple(range(1, g.ndim)), keepdims=True)


class lbfgs(Reference):
  """L-BFGS with a fixed step length (no line search), Nocedal & Wright Alg. 7.4/7.5.

  The whole tree is one vector x (leaves concatenated in key order).
    s_{k-1} = x_k - x_{k-1},  y_{k-1} = g_k - g_{k-1},  rho = 1 / <s, y>
    (pairs with <s, y> = 0 are skipped; the last ``memory_size`` are kept)
    H^0_k = gamma_k I,  gamma_k = <s_{k-1}, y_{k-1}> / <y_{k-1}, y_{k-1}>
            (k = 0: min(1, 1 / ||g_0||));  gamma_k = 1 without scale_init_precond
    q = g;  for i newest..oldest: a_i = rho_i <s_i, q>;  q -= a_i y_i
    r = gamma_k q;  for i oldest..newest: b = rho_i <y_i, r>;  r += (a_i - b) s_i
    u_k = -lr r
  """

  def __init__(self, learning_rate=1.0, memory_size: int = 10, scale_init_precond: bool = True):
    self.learning_rate = learning_rate
    self.memory_size = memory_size
    self.scale_init_precond = scale_init_precond

  def init(self, params):
    self.count = 0
    self.keys = sorted(params)
    self.shapes = {k: np.shape(params[k]) for k in self.keys}
    self.pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
    self.prev = None

  def _flat(self, tree):
    return np.concatenate([_f64(tree[k]).ravel() for k in self.keys])

  def _unflat(self, x):
    out, i = {}, 0
    for k in self.keys:
      n = int(np.prod(self.shapes[k]))
      out[k] = x[i:i + n].reshape(self.shapes[k])
      i += n
    return out

  def step(self, grads, params, **extra):
    g, x = self._flat(grads), self._flat(params)
    gamma = min(1.0, 1.0 / np.linalg.norm(g)) if self.scale_init_precond else 1.0
    if self.prev is not None:
      s, y = x - self.prev[0], g - self.prev[1]
      sy, yy = float(s @ y), float(y @ y)
      if sy != 0:
        self.pairs = (self.pairs + [(s, y, 1.0 / sy)])[-self.memory_size:]
      if self.scale_init_precond:
        gamma = sy / yy if yy > 0 else 1.0
    self.prev = (x, g)
    self.count += 1
    q, alphas = g.copy(), []
    for s, y, rho in reversed(self.pairs):
      a = rho * float(s @ q)
      q = q - a * y
      alphas.append(a)
    r = gamma * q
    for (s, y, rho), a in zip(self.pairs, reversed(alphas)):
      b = rho * float(y @ r)
      r = r + (a - b) * s
    return self._unflat(-self.sched(self.learning_rate) * r)


class scale_by_nadam(Reference):
  """Dozat's NAdam with the momentum schedule (the paper's Algorithm 2; torch.optim.NAdam).

    mu_t = b1 (1 - 0.5 * 0.96^(t psi)),  Pi_t = mu_1 ... mu_t
    m_t = b1 m_{t-1} + (1-b1) g_t,  v_t = b2 v_{t-1} + (1-b2) g_t^2
    u_t = [(1-mu_t)/(1-Pi_t) g_t + mu_{t+1}/(1-Pi_t mu_{t+1}) m_t] / (sqrt(v_t/(1-b2^t)) + eps)
  """

  def __init__(self, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               momentum_decay: float = 4e-3):
    self.b1, self.b2, self.eps, self.momentum_decay = b1, b2, eps, momentum_decay
    self.product = 1.0

  def init_leaf(self, p):
    return {"m": np.zeros_like(p), "v": np.zeros_like(p)}

  def begin_step(self, grads, params, **extra):
    t = self.t
    self.mu = self.b1 * (1 - 0.5 * 0.96 ** (t * self.momentum_decay))
    self.mu_next = self.b1 * (1 - 0.5 * 0.96 ** ((t + 1) * self.momentum_decay))
    self.product = (1.0 if t == 1 else self.product) * self.mu

  def update_leaf(self, name, g, p, s):
    s["m"] = self.b1 * s["m"] + (1 - self.b1) * g
    s["v"] = self.b2 * s["v"] + (1 - self.b2) * g * g
    denominator = np.sqrt(s["v"] / (1 - self.b2 ** self.t)) + self.eps
    return ((1 - self.mu) / (1 - self.product) * g
            + self.mu_next / (1 - self.product * self.mu_next) * s["m"]) / denominator
