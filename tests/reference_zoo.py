"""Numpy references for the rules that ``reference.py`` does not cover.

Same interface as ``reference.py`` (``init(params)``, ``step(grads, params,
**extra) -> updates`` to be added to the params), re-derived from the papers'
equations in float64.
"""

from __future__ import annotations

import numpy as np

from reference import Reference, _abs2, _f64, _norm, _scaled_abs2, _tree_sq_norm, _zeros

__all__ = ["adaptive_grad_clip", "centralize", "keep_params_nonnegative", "lbfgs",
           "normalize_by_update_norm", "scale_by_distance_over_gradients", "scale_by_nadam",
           "scale_by_param_block_norm", "scale_by_schedule"]


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
    m_t = b1 m_{t-1} + (1-b1) g_t,  v_t = b2 v_{t-1} + (1-b2) |g_t|^2
    u_t = [(1-mu_t)/(1-Pi_t) g_t + mu_{t+1}/(1-Pi_t mu_{t+1}) m_t] / (sqrt(v_t/(1-b2^t)) + eps)
  """

  def __init__(self, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               momentum_decay: float = 4e-3):
    self.b1, self.b2, self.eps, self.momentum_decay = b1, b2, eps, momentum_decay
    self.product = 1.0

  def init_leaf(self, p):
    return {"m": np.zeros_like(p), "v": _zeros(p)}

  def begin_step(self, grads, params, **extra):
    t = self.t
    self.mu = self.b1 * (1 - 0.5 * 0.96 ** (t * self.momentum_decay))
    self.mu_next = self.b1 * (1 - 0.5 * 0.96 ** ((t + 1) * self.momentum_decay))
    self.product = (1.0 if t == 1 else self.product) * self.mu

  def update_leaf(self, name, g, p, s):
    s["m"] = self.b1 * s["m"] + (1 - self.b1) * g
    s["v"] = self.b2 * s["v"] + _scaled_abs2(1 - self.b2, g)
    denominator = np.sqrt(s["v"] / (1 - self.b2 ** self.t)) + self.eps
    return ((1 - self.mu) / (1 - self.product) * g
            + self.mu_next / (1 - self.product * self.mu_next) * s["m"]) / denominator


def _unit_norms(x: np.ndarray, axis=None) -> np.ndarray:
  """Brock et al.'s unit-wise norms, with optax's choice of units, broadcast to x.

  One unit for an array with at most one axis longer than 1; otherwise a unit
  per output index: the norm sums over axis 0 of a rank-2/3 array (linear,
  multi-head linear), over the first 3 axes of rank 4 (HWIO), the first 4 of
  rank 5 (DHWIO).
  """
  if axis is None:
    if sum(d != 1 for d in x.shape) <= 1:
      axis = tuple(range(x.ndim))
    elif x.ndim in (2, 3):
      axis = 0
    else:
      axis = tuple(range(x.ndim - 1))
  return np.broadcast_to(np.sqrt(np.sum(_abs2(x), axis=axis, keepdims=True)), x.shape)


class adaptive_grad_clip(Reference):
  """AGC (Brock et al. 2021, NFNets), per unit i of each leaf:
    m_i = clipping * max(||p_i||, eps)
    u_i = g_i if ||g_i|| < m_i else g_i * m_i / max(||g_i||, 1e-6)
  """

  def __init__(self, clipping: float, eps: float = 1e-3, axis=None):
    self.clipping, self.eps, self.axis = clipping, eps, axis

  def update_leaf(self, name, g, p, s):
    g_norm, p_norm = _unit_norms(g, self.axis), _unit_norms(p, self.axis)
    max_norm = self.clipping * np.maximum(p_norm, self.eps)
    return np.where(g_norm < max_norm, g, g * max_norm / np.maximum(g_norm, 1e-6))


class normalize_by_update_norm(Reference):
  """u = scale_factor * g / (||g|| + eps), ||g|| the l2 norm of the whole tree."""

  def __init__(self, scale_factor: float = 1.0, eps: float = 1e-6):
    self.scale_factor, self.eps = scale_factor, eps

  def begin_step(self, grads, params, **extra):
    self.norm = np.sqrt(_tree_sq_norm(grads))

  def update_leaf(self, name, g, p, s):
    return self.sched(self.scale_factor) * g / (self.norm + self.sched(self.eps))


class scale_by_schedule(Reference):
  """u_t = step_size_fn(t - 1) * g_t."""

  def __init__(self, step_size_fn):
    self.step_size_fn = step_size_fn

  def update_leaf(self, name, g, p, s):
    return self.sched(self.step_size_fn) * g


class keep_params_nonnegative(Reference):
  """u = -p where p + g < 0, else g: the params after the update are >= 0."""

  def update_leaf(self, name, g, p, s):
    return np.where(p + g < 0, -p, g)


class scale_by_distance_over_gradients(Reference):
  """Layer-wise DoG (Ivgi, Hinder & Carmon 2023), per leaf:
    r_0 = reps_rel (1 + ||x_0||),  r_t = max(r_{t-1}, ||x_t - x_0||)
    G_t = G_{t-1} + ||g_t||^2,      u_t = global_scale * r_t / sqrt(G_t + eps) * g_t
  x_0 is kept rounded to ``param_dtype`` (None: exact), a complex x_0 to the complex
  dtype of that precision; norms are of |x|.
  """

  def __init__(self, reps_rel: float = 1e-6, eps: float = 1e-8, param_dtype=np.float32,
               global_scale: float = 1.0):
    self.reps_rel, self.eps, self.global_scale = reps_rel, eps, global_scale
    self.param_dtype = param_dtype

  def init_leaf(self, p):
    if self.param_dtype is None:
      x0 = p
    else:  # rounded to param_dtype's precision; a complex leaf keeps its Im
      held = np.result_type(self.param_dtype, np.complex64) if np.iscomplexobj(p) else (
          self.param_dtype)
      x0 = p.astype(held).astype(p.dtype)
    return {"x0": x0, "r": self.reps_rel * (1 + _norm(p)), "G": 0.0}

  def update_leaf(self, name, g, p, s):
    s["r"] = max(s["r"], _norm(p - s["x0"]))
    s["G"] += float(np.sum(_abs2(g)))
    return self.global_scale * s["r"] / np.sqrt(s["G"] + self.eps) * g
