"""Float64 numpy references of gradtx.contrib's parameter-free optimizers, from the papers.

Each class follows ``reference.Reference`` (``step`` returns the updates to
add; ``scale_by_dog`` and ``scale_by_dowg`` return their unsigned output
:math:`+\\eta_t g_t`). ``t`` is the 1-based step number; schedules are
evaluated at ``t - 1``. Norms and inner products are over the whole tree.
Most of these rules reduce over the whole tree, so they override ``step``;
COCOB is per entry (``update_leaf``).

Complex leaves (complex128) are taken as their (real, imaginary) pairs, and
their gradients as the conjugates of JAX's: an inner product is
Re sum(conj(a) b), a squared norm sum |x|^2, an l1 norm sum |x|; an
elementwise second moment averages |g|^2; COCOB bets on each complex entry
as on a 2-D coin (L, G by |g|, the reward by Re(conj(g) (w - w_1))).

* Prodigy (Mishchenko & Defazio, Algorithm "Prodigy (Adam version)"):
  m, v Adam's moments of d_k g_k; r and s accumulate with decay beta3 and
  weight (1 - beta3) gamma_k d_k^2 b_k (b_k = sqrt(1 - b2^k) / (1 - b1^k),
  the authors' bias correction; with safeguard_warmup s's weight has no
  gamma_k b_k); d_{k+1} = max(d_k, c r / |s|_1); the step
  gamma_k b_k d_k m / (sqrt(v) + d_{k+1} eps) plus decoupled decay. (The
  authors' code divides r and s by d_0 and drops 1 - beta3: the ratio is the same.)
* D-Adapt Adam (Defazio & Mishchenko, Adam variant): the inner product
  <g_k, s_k / (sqrt(v_k) + eps)> uses the moments before the step.
* DoG (Ivgi et al., Algorithm 1) and DoWG (Khaled et al., Algorithm 1).
* COCOB-Backprop (Orabona & Tommasi, Algorithm 2).
* Mechanic (Cutkosky et al., Algorithm 1): Delta is recomputed from the
  params as (x_ref - x_t) / (sum s + eps) (the memory-saving form of the
  authors' code), h is clipped to +-m_{t-1} in r's update (their later addition).
* MoMo and MoMo-Adam (Schaipp et al.): the proximal step
  x_{k+1} = (x_k - tau d_k) / (1 + alpha lambda) of the paper and the
  authors' code; MoMo's averages start at the first values, MoMo-Adam's at 0;
  the step size is 0 where its denominator ||d||^2 is 0 (only the decay then).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import reference as R
from reference import Reference, _abs2, _resolve_mask, _tree_f64, _tree_sq_norm, _zeros


def _dot(a: dict, b: dict) -> float:
  """Re sum(conj(a) b): the real inner product, also of complex leaves."""
  return float(sum(np.sum(np.conj(a[k]) * b[k]).real for k in a))


def _l1(a: dict) -> float:
  return float(sum(np.sum(np.abs(x)) for x in a.values()))


def _zeros_like(tree: dict) -> dict:
  """Zeros like each leaf, complex for a complex leaf: a moment of g."""
  return {k: np.zeros_like(x) for k, x in _tree_f64(tree).items()}


def _real_zeros(tree: dict) -> dict:
  """Real zeros shaped like each leaf: a statistic of |g|."""
  return {k: _zeros(x) for k, x in tree.items()}


class prodigy(Reference):

  def __init__(self, learning_rate=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8,
               estim_lr0=1e-6, estim_lr_coef=1.0, weight_decay=0.0, safeguard_warmup=False):
    self.learning_rate, self.betas, self.beta3, self.eps = learning_rate, betas, beta3, eps
    self.d0, self.coef, self.wd, self.safeguard = (estim_lr0, estim_lr_coef, weight_decay,
                                                   safeguard_warmup)

  def init(self, params):
    self.count = 0
    self.x0 = _tree_f64(params)
    self.m, self.v, self.s = _zeros_like(params), _real_zeros(params), _zeros_like(params)
    self.r, self.d = 0.0, self.d0

  def step(self, grads, params, **extra):
    g, x = _tree_f64(grads), _tree_f64(params)
    self.count += 1
    b1, b2 = self.betas
    b3 = np.sqrt(b2) if self.beta3 is None else self.beta3
    gamma = self.sched(self.learning_rate)
    d, t = self.d, self.t
    bias = np.sqrt(1 - b2**t) / (1 - b1**t)
    weight = (1 - b3) * gamma * d * d * bias
    self.r = b3 * self.r + weight * _dot(g, {k: self.x0[k] - x[k] for k in x})
    s_weight = (1 - b3) * d * d if self.safeguard else weight
    for k in g:
      self.m[k] = b1 * self.m[k] + (1 - b1) * d * g[k]
      self.v[k] = b2 * self.v[k] + (1 - b2) * _abs2(d * g[k])
      self.s[k] = b3 * self.s[k] + s_weight * g[k]
    l1 = _l1(self.s)
    self.d = max(d, self.coef * self.r / l1) if l1 > 0 else d
    step = gamma * d * bias
    return {k: -step * (self.m[k] / (np.sqrt(self.v[k]) + self.d * self.eps) + self.wd * x[k])
            for k in g}


class dadapt_adamw(Reference):

  def __init__(self, learning_rate=1.0, betas=(0.9, 0.999), eps=1e-8, estim_lr0=1e-6,
               weight_decay=0.0):
    self.learning_rate, self.betas, self.eps, self.d0, self.wd = (learning_rate, betas, eps,
                                                                 estim_lr0, weight_decay)

  def init(self, params):
    self.count = 0
    self.m, self.v, self.s = _zeros_like(params), _real_zeros(params), _zeros_like(params)
    self.r, self.d = 0.0, self.d0

  def step(self, grads, params, **extra):
    g, x = _tree_f64(grads), _tree_f64(params)
    self.count += 1
    b1, b2 = self.betas
    sigma = np.sqrt(b2)
    t, d = self.t, self.d
    lam = self.sched(self.learning_rate) * d * np.sqrt(1 - b2**t) / (1 - b1**t)
    # The inner product in the metric of the moments before this step.
    inner = _dot(g, {k: self.s[k] / (np.sqrt(self.v[k]) + self.eps) for k in g})
    self.r = sigma * self.r + (1 - sigma) * lam * inner
    for k in g:
      self.m[k] = b1 * self.m[k] + (1 - b1) * lam * g[k]
      self.v[k] = b2 * self.v[k] + (1 - b2) * _abs2(g[k])
      self.s[k] = sigma * self.s[k] + (1 - sigma) * lam * g[k]
    l1 = (1 - sigma) * _l1(self.s)
    self.d = max(d, self.r / l1) if l1 > 0 else d
    return {k: -self.m[k] / (np.sqrt(self.v[k]) + self.eps) - self.wd * lam * x[k] for k in g}


class _Decayed(Reference):
  """An optional decoupled weight decay added to the gradients first (optax's chain order)."""

  weight_decay: Any = None
  mask: Any = None

  def decayed(self, grads, params):
    g, x = _tree_f64(grads), _tree_f64(params)
    if self.weight_decay is None:
      return g, x
    mask = _resolve_mask(self.mask, x)
    wd = self.sched(self.weight_decay)
    return {k: g[k] + wd * x[k] if mask[k] else g[k] for k in g}, x


class _Descent:
  """A ``scale_by_*`` rule's output (+eta_t g_t) times -learning_rate: the ready optimizer."""

  def step(self, grads, params, **extra):
    updates = super().step(grads, params)
    return {k: -self.sched(self.learning_rate) * u for k, u in updates.items()}


class scale_by_dog(_Decayed):

  def __init__(self, init_step=("heuristic", 1e-6), eps=1e-8):
    self.kind, self.value = init_step
    self.eps = eps

  def init(self, params):
    self.count = 0
    self.x0 = _tree_f64(params)
    self.r = {"distance": self.value, "learning_rate": 0.0,
              "heuristic": self.value * (1 + np.sqrt(_tree_sq_norm(self.x0)))}[self.kind]
    self.G = 0.0

  def step(self, grads, params, **extra):
    self.count += 1
    g, x = self.decayed(grads, params)
    self.r = max(self.r, np.sqrt(_tree_sq_norm({k: x[k] - self.x0[k] for k in x})))
    self.G += _tree_sq_norm(g)
    eta = self.r / np.sqrt(self.G + self.eps)
    if self.kind == "learning_rate" and self.t == 1:
      eta = self.value
    return {k: eta * g[k] for k in g}


class dog(_Descent, scale_by_dog):

  def __init__(self, learning_rate=1.0, init_step=("heuristic", 1e-6), eps=1e-8,
               weight_decay=None, mask=None):
    super().__init__(init_step, eps)
    self.learning_rate, self.weight_decay, self.mask = learning_rate, weight_decay, mask


class scale_by_dowg(_Decayed):

  def __init__(self, init_estim_sq_dist=None, eps=1e-4):
    self.r2_0 = eps if init_estim_sq_dist is None else init_estim_sq_dist
    self.eps = eps

  def init(self, params):
    self.count = 0
    self.x0 = _tree_f64(params)
    self.r2, self.v = self.r2_0, 0.0

  def step(self, grads, params, **extra):
    self.count += 1
    g, x = self.decayed(grads, params)
    self.r2 = max(self.r2, _tree_sq_norm({k: x[k] - self.x0[k] for k in x}))
    self.v += self.r2 * _tree_sq_norm(g)
    eta = self.r2 / (np.sqrt(self.v) + self.eps)
    return {k: eta * g[k] for k in g}


class dowg(_Descent, scale_by_dowg):

  def __init__(self, learning_rate=1.0, init_estim_sq_dist=None, eps=1e-4, weight_decay=None,
               mask=None):
    super().__init__(init_estim_sq_dist, eps)
    self.learning_rate, self.weight_decay, self.mask = learning_rate, weight_decay, mask


class cocob(Reference):
  """COCOB-Backprop on the gradients (plus L2 decay) scaled by the learning rate."""

  def __init__(self, learning_rate=1.0, alpha=100.0, eps=1e-8, weight_decay=0.0, mask=None):
    self.learning_rate, self.alpha, self.eps = learning_rate, alpha, eps
    self.weight_decay, self.mask = weight_decay, mask

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.mask, params)

  def init_leaf(self, param):
    return {"w1": param, "L": np.full(np.shape(param), self.eps),
            "G": np.zeros(np.shape(param)), "R": np.zeros(np.shape(param)),
            "theta": np.zeros(np.shape(param), param.dtype)}

  def update_leaf(self, name, g, w, s):
    if self._mask[name]:
      g = g + self.sched(self.weight_decay) * w
    g = self.sched(self.learning_rate) * g
    s["L"] = np.maximum(s["L"], np.abs(g))
    s["G"] = s["G"] + np.abs(g)
    s["R"] = np.maximum(s["R"] - np.real(np.conj(g) * (w - s["w1"])), 0.0)
    s["theta"] = s["theta"] - g
    bet = s["theta"] / (s["L"] * np.maximum(s["G"] + s["L"], self.alpha * s["L"]))
    return (s["w1"] - w) + bet * (s["L"] + s["R"])  # w_{t+1} - w_t


class scale_by_cocob(cocob):

  def __init__(self, alpha=100.0, eps=1e-8):
    super().__init__(1.0, alpha, eps, 0.0)


class mechanize(Reference):
  """Mechanic around a numpy reference ``base`` (whose step returns updates to add)."""

  def __init__(self, base: Reference, weight_decay=1e-2, eps=1e-8, s_init=1e-6, num_betas=6):
    self.base, self.wd, self.eps, self.s_init, self.n = base, weight_decay, eps, s_init, num_betas

  def init(self, params):
    self.count = 0
    self.base.init(params)
    self.betas = np.array([1 - 0.1**j for j in range(1, self.n + 1)])
    self.m, self.v, self.r = np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)
    self.s = np.full(self.n, self.s_init)
    self.x_ref = None

  def step(self, grads, params, **extra):
    g, x = _tree_f64(grads), _tree_f64(params)
    self.count += 1
    u = self.base.step(grads, params, **extra)
    if self.x_ref is None:  # the params of the first step
      self.x_ref = x
    total = float(np.sum(self.s))
    factor = self.wd * total * np.sqrt(_tree_sq_norm(g)) / (np.sqrt(_tree_sq_norm(x)) + self.eps)
    g = {k: g[k] + factor * x[k] for k in g}
    delta = {k: (self.x_ref[k] - x[k]) / (total + self.eps) for k in x}
    h = _dot(g, delta)
    r = self.betas * self.r + np.clip(h, -self.m, self.m) * self.s
    self.m = np.maximum(self.betas * self.m, abs(h) + self.eps)
    self.v = self.betas**2 * self.v + h * h
    self.r = r
    wealth = self.s_init / self.n * self.m + np.maximum(self.r, 0.0)
    self.s = wealth / (np.sqrt(self.v) + self.eps)
    new_total = float(np.sum(self.s))
    # Delta_{t+1} = Delta_t - u_t: the base's updates descend, Delta points back.
    return {k: (self.x_ref[k] - x[k]) - new_total * (delta[k] - u[k]) for k in x}


class momo(Reference):

  def __init__(self, learning_rate=1.0, beta=0.9, lower_bound=0.0, weight_decay=0.0,
               adapt_lower_bound=False):
    self.learning_rate, self.beta, self.f_star0 = learning_rate, beta, lower_bound
    self.wd, self.adapt = weight_decay, adapt_lower_bound

  def init(self, params):
    self.count = 0
    self.d = None
    self.f_star = self.f_star0

  def step(self, grads, params, value=None, **extra):
    g, x = _tree_f64(grads), _tree_f64(params)
    self.count += 1
    gx = _dot(g, x)
    if self.d is None:  # the averages start at the first values
      self.d, self.fbar, self.gamma = g, float(value), gx
    else:
      b = self.beta
      self.d = {k: b * self.d[k] + (1 - b) * g[k] for k in g}
      self.fbar = b * self.fbar + (1 - b) * float(value)
      self.gamma = b * self.gamma + (1 - b) * gx
    alpha = self.sched(self.learning_rate)
    c = 1 + alpha * self.wd
    dx, dd = _dot(self.d, x), _tree_sq_norm(self.d)
    if self.adapt:
      cap = c * (self.fbar - self.gamma) + dx
      if cap < c * self.f_star:
        self.f_star = max(cap / (2 * c), self.f_star0)
    tau = 0.0 if dd == 0 else min(
        alpha, max(c * (self.fbar - self.f_star - self.gamma) + dx, 0.0) / dd)
    if self.adapt:
      self.f_star = max(self.fbar + dx - self.gamma - tau * dd / 2, self.f_star0)
    return {k: -(tau * self.d[k] + alpha * self.wd * x[k]) / c for k in x}  # x_{k+1} - x_k


class momo_adam(Reference):

  def __init__(self, learning_rate=1e-2, b1=0.9, b2=0.999, eps=1e-8, lower_bound=0.0,
               weight_decay=0.0, adapt_lower_bound=False):
    self.learning_rate, self.b1, self.b2, self.eps = learning_rate, b1, b2, eps
    self.f_star0, self.wd, self.adapt = lower_bound, weight_decay, adapt_lower_bound

  def init(self, params):
    self.count = 0
    self.m, self.v = _zeros_like(params), _real_zeros(params)
    self.fbar, self.gamma, self.f_star = 0.0, 0.0, self.f_star0

  def step(self, grads, params, value=None, **extra):
    g, x = _tree_f64(grads), _tree_f64(params)
    self.count += 1
    b1, b2, t = self.b1, self.b2, self.t
    for k in g:
      self.m[k] = b1 * self.m[k] + (1 - b1) * g[k]
      self.v[k] = b2 * self.v[k] + (1 - b2) * _abs2(g[k])
    self.fbar = b1 * self.fbar + (1 - b1) * float(value)
    self.gamma = b1 * self.gamma + (1 - b1) * _dot(g, x)
    rho = 1 - b1**t  # the averages started at 0
    direction = {k: self.m[k] / (self.eps + np.sqrt(self.v[k] / (1 - b2**t))) for k in g}
    alpha = self.sched(self.learning_rate)
    c = 1 + alpha * self.wd
    mx, norm = _dot(self.m, x), _dot(self.m, direction)
    if self.adapt:
      cap = c * (self.fbar - self.gamma) + mx
      if cap < c * rho * self.f_star:
        self.f_star = max(cap / (2 * c * rho), self.f_star0)
    tau = 0.0 if norm == 0 else min(
        alpha / rho, max(c * (self.fbar - rho * self.f_star - self.gamma) + mx, 0.0) / norm)
    if self.adapt:
      self.f_star = max((self.fbar + mx - self.gamma - tau * norm / 2) / rho, self.f_star0)
    return {k: -(tau * direction[k] + alpha * self.wd * x[k]) / c for k in x}


# Base optimizers for Mechanic's reference (reference.sgd takes complex leaves too).
adam = R.adam
adamw = R.adamw
sgd = R.sgd
