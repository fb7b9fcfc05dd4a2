"""Numpy references for gradtx.contrib's curvature rules: Sophia, Hutchinson's estimator, SAM.

Same interface as ``reference.py`` (``init(params)``, ``step(grads, params,
**extra) -> updates`` to be added to the params), re-derived in float64 from
the papers' equations, with the conventions (bias correction, when the
Hessian estimate is refreshed) spelled out in each docstring.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from reference import Reference, _f64, _norm, _resolve_mask

__all__ = ["chain", "hutchinson", "normalize", "sam", "sophia"]


def hutchinson(hessian: np.ndarray, probe: np.ndarray) -> np.ndarray:
  """Hutchinson's estimate of diag(H) from one probe v with entries +-1: v * (H v).

  (Bekas, Kokiopoulou & Saad 2007: E[v * Hv] = diag(H) for Rademacher v.)
  ``hessian`` is the (n, n) Hessian of the flattened leaf, ``probe`` has the leaf's shape.
  """
  v = _f64(probe).reshape(-1)
  return (v * (_f64(hessian) @ v)).reshape(np.shape(probe))


class sophia(Reference):
  """Sophia (Liu et al. 2023, Algorithm 3), with optax's conventions.

      m_t  = b1 m_{t-1} + (1 - b1) g_t
      mhat = m_t / (1 - b1^t)                     (bias-corrected, as optax; the paper is not)
      r_t  = mhat / max(gamma h_{t-1}, eps)       (h before this step's refresh, as optax)
      r_t  = clip(r_t, -rho, rho)                 (unless clip_threshold is None)
      every k steps, at t = 1, k+1, ...:  h_t = b2 h_{t-1} + (1 - b2) hhat_t   (h_0 = 0)
      u_t  = -lr_t (r_t + wd p_t)                 (the decay on masked leaves; lr = None: u = r)

  ``hessian_diagonal(params) -> dict`` gives hhat_t at the step's params.
  """

  def __init__(self, learning_rate, b1=0.965, b2=0.99, eps=1e-8, weight_decay=1e-4,
               weight_decay_mask=None, gamma=0.01, clip_threshold=1.0, update_interval=10, *,
               hessian_diagonal: Callable[[dict], dict]):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps, self.gamma = b1, b2, eps, gamma
    self.weight_decay, self.mask = weight_decay, weight_decay_mask
    self.clip_threshold, self.update_interval = clip_threshold, update_interval
    self.hessian_diagonal = hessian_diagonal

  def init_leaf(self, p):
    return {"m": np.zeros_like(p), "h": np.zeros_like(p)}

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.mask, params)
    self._refresh = (self.t - 1) % self.update_interval == 0
    self._hhat = self.hessian_diagonal(params) if self._refresh else None

  def update_leaf(self, name, g, p, s):
    s["m"] = self.b1 * s["m"] + (1 - self.b1) * g
    mhat = s["m"] / (1 - self.b1 ** self.t)
    r = mhat / np.maximum(self.gamma * s["h"], self.eps)
    if self.clip_threshold is not None:
      r = np.clip(r, -self.clip_threshold, self.clip_threshold)
    if self._refresh:
      s["h"] = self.b2 * s["h"] + (1 - self.b2) * _f64(self._hhat[name])
    if self.learning_rate is None:  # the primitive, scale_by_sophia
      return r
    if self._mask[name]:
      r = r + self.sched(self.weight_decay) * p
    return -self.sched(self.learning_rate) * r


class normalize(Reference):
  """u = g / ||g||, the norm over every entry of every leaf (0 for a zero gradient)."""

  def step(self, grads, params, **extra):
    norm = float(np.sqrt(sum(_norm(_f64(g)) ** 2 for g in grads.values())))
    return {k: _f64(g) / norm if norm > 0 else np.zeros_like(_f64(g)) for k, g in grads.items()}


class chain(Reference):
  """References run one after another: each takes the previous one's updates."""

  def __init__(self, *refs: Reference):
    self.refs = refs

  def init(self, params):
    for r in self.refs:
      r.init(params)

  def step(self, grads, params, **extra):
    for r in self.refs:
      grads = r.step(grads, params, **extra)
    return grads


class sam(Reference):
  """SAM (Foret et al. 2021) in optax's transparent form, one call per step.

  Steps come in periods of k = sync_period calls. Call s = 0..k-1 of a period,
  at params p with gradient g there:
      s = 0:        theta = p                       (the outer params, cached)
      s < k - 1:    u = -adv(g at p, params p)      (an ascent step of the adversary)
      s = k - 1:    u = theta - p + opt(g at p, params theta)
                    (back to theta, then the outer step with the adversarial gradient;
                    the adversary restarts from a fresh state if reset_state)
  k = 1 is ``opt`` itself. The paper's SAM: adv = chain(normalize, sgd(rho)), k = 2.
  ``adv`` is a factory of the adversary's reference (called again to reset it).
  """

  def __init__(self, opt: Reference, adv: Callable[[], Reference], sync_period=2,
               reset_state=True):
    self.opt, self.make_adv = opt, adv
    self.sync_period, self.reset_state = sync_period, reset_state

  def init(self, params):
    self.count = 0
    self.opt.init(params)
    self.adv = self.make_adv()
    self.adv.init(params)
    self.theta = {k: _f64(v) for k, v in params.items()}

  def step(self, grads, params, **extra):
    params = {k: _f64(v) for k, v in params.items()}
    phase = self.count % self.sync_period
    self.count += 1
    if phase == 0:
      self.theta = params
    if phase < self.sync_period - 1:
      return {k: -u for k, u in self.adv.step(grads, params, **extra).items()}
    outer = self.opt.step(grads, self.theta, **extra)
    if self.reset_state:
      self.adv = self.make_adv()
      self.adv.init(params)
    return {k: self.theta[k] - params[k] + outer[k] for k in params}
