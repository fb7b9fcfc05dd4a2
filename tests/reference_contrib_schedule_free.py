"""Float64 numpy references of gradtx.contrib's schedule-free rules and DP-SGD, from the papers.

Each class follows ``reference.Reference`` (``step`` returns the updates to
add). ``t`` is the 1-based step number.

* Schedule-free (Defazio et al., *The Road Less Scheduled*, 2024, eq. (1) and
  Algorithm 1): the reference keeps the paper's iterates z (the base
  optimizer's) and x (the weighted average) in float64, forms the gradient
  point y from them, never recovering x from y:

      z_{t+1} = z_t + Delta_t           (Delta_t: the base's step at y_t)
      c_{t+1} = w_t / sum_{i<=t} w_i,   w_t = (max_{i<=t} lr_i)^weight_lr_power
      x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}
      y_{t+1} = (1 - b1) z_{t+1} + b1 x_{t+1}

  and returns y_{t+1} - y_t as that difference: the cancellation costs a
  float64 update about 1e-16 of y (the tests compare at 1e-9 of the update's
  scale, and their tiny leaf has tiny params), and the reference stays
  independent of the identity the implementation forms its update by. The
  wrapper's learning rate (the weights') is read at t - 1, as the base's
  is: step t is weighed by the rate it was taken with (the paper's
  c_{t+1} = gamma_t^2 / sum_{i<=t} gamma_i^2 and the authors' code; optax
  0.2.8 reads the weights' at t); c = 0 while every weight is 0.
* warmup_steps W: the learning rate of step t is lr min(1, t / W), for the
  step and the weights (optax 0.2.8's starts from 0 at the first step).
* The bases: SGD, Delta = -lr (g + wd y); AdamW without momentum (Algorithm
  1 of the paper with optax's placement of eps), Delta = -lr (g / (sqrt(v /
  (1 - b2^t)) + eps) + wd y) with v = b2 v + (1 - b2) g^2.
* DP-SGD (Abadi et al., *Deep Learning with Differential Privacy*, 2016,
  Algorithm 1) without noise: each example's gradient is scaled by
  min(1, C / ||g_b||) (its global norm over the leaves; a zero gradient is
  kept), the clipped gradients are averaged over the batch, then SGD, with
  optax's momentum (m = mu m + g; Nesterov: mu m + g) if any.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from reference import Reference, _abs2, _scaled_abs2, _tree_f64, _zeros


def _at(value: Any, count: int) -> float:
  return float(np.asarray(value(count))) if callable(value) else float(value)


def warmup_constant(peak: float, warmup_steps: int) -> Callable[[int], float]:
  """The paper's warmup, peak min(1, t / W) at step t = count + 1 (Algorithm 1; the authors'
  code's (k + 1) / W at k from 0): the first step takes peak / W, step W the peak."""
  return lambda count: peak * min(count + 1, warmup_steps) / warmup_steps


class sgd_base(Reference):
  """SGD without momentum with weight decay at the params: -lr_{t-1} (g + wd p)."""

  def __init__(self, learning_rate, weight_decay=0.0):
    self.learning_rate, self.weight_decay = learning_rate, weight_decay

  def update_leaf(self, name, g, p, s):
    return -self.sched(self.learning_rate) * (g + self.weight_decay * p)


class adamw_base(Reference):
  """AdamW with b1 = 0: -lr_{t-1} (g / (sqrt(v / (1 - b2^t)) + eps) + wd p)."""

  def __init__(self, learning_rate, b2=0.999, eps=1e-8, weight_decay=0.0):
    self.learning_rate, self.b2, self.eps, self.weight_decay = learning_rate, b2, eps, weight_decay

  def init_leaf(self, param):
    return {"v": _zeros(param)}  # real: it averages |g|^2

  def update_leaf(self, name, g, p, s):
    s["v"] = self.b2 * s["v"] + _scaled_abs2(1 - self.b2, g)
    v_hat = s["v"] / (1 - self.b2**self.t)
    return -self.sched(self.learning_rate) * (g / (np.sqrt(v_hat) + self.eps)
                                              + self.weight_decay * p)


class schedule_free(Reference):
  """The schedule-free form of a numpy reference ``base`` (whose step returns updates to add)."""

  def __init__(self, base: Reference, learning_rate, b1=0.9, weight_lr_power=2.0):
    self.base, self.learning_rate = base, learning_rate
    self.b1, self.power = b1, weight_lr_power

  def init(self, params):
    self.count = 0
    self.base.init(params)
    self.z, self.x = _tree_f64(params), _tree_f64(params)
    self.max_lr, self.weight_sum = 0.0, 0.0

  def _y(self) -> dict:
    """The gradient point y = (1 - b1) z + b1 x."""
    return {k: (1 - self.b1) * self.z[k] + self.b1 * self.x[k] for k in self.z}

  def step(self, grads, params, **extra):
    self.count += 1
    y = self._y()
    delta = self.base.step(grads, params, **extra)  # params: y_t
    self.z = {k: self.z[k] + delta[k] for k in self.z}
    self.max_lr = max(self.max_lr, _at(self.learning_rate, self.count - 1))
    weight = self.max_lr**self.power
    self.weight_sum += weight
    c = weight / self.weight_sum if self.weight_sum > 0 else 0.0
    self.x = {k: (1 - c) * self.x[k] + c * self.z[k] for k in self.x}
    y_next = self._y()
    return {k: y_next[k] - y[k] for k in y}


def schedule_free_sgd(learning_rate=1.0, warmup_steps=None, b1=0.9, weight_decay=None,
                      weight_lr_power=2.0) -> schedule_free:
  if warmup_steps is not None:
    learning_rate = warmup_constant(learning_rate, warmup_steps)
  return schedule_free(sgd_base(learning_rate, weight_decay or 0.0), learning_rate, b1,
                       weight_lr_power)


def schedule_free_adamw(learning_rate=0.0025, warmup_steps=None, b1=0.9, b2=0.999, eps=1e-8,
                        weight_decay=0.0, weight_lr_power=2.0) -> schedule_free:
  if warmup_steps is not None:
    learning_rate = warmup_constant(learning_rate, warmup_steps)
  return schedule_free(adamw_base(learning_rate, b2, eps, weight_decay), learning_rate, b1,
                       weight_lr_power)


def clipped_mean(per_example: dict, l2_norm_clip: float) -> dict:
  """(1/B) sum_b g_b min(1, C / ||g_b||), the norm over every leaf of example b."""
  per_example = _tree_f64(per_example)
  batch = next(iter(per_example.values())).shape[0]
  norms = np.sqrt(sum(np.sum(_abs2(g.reshape(batch, -1)), axis=1) for g in per_example.values()))
  factors = np.array([1.0 if n == 0 else min(1.0, l2_norm_clip / n) for n in norms])
  return {k: np.tensordot(factors, g, axes=1) / batch for k, g in per_example.items()}


class dpsgd:
  """DP-SGD without noise on per-example gradients (a batch axis 0 in every leaf)."""

  def __init__(self, learning_rate, l2_norm_clip, momentum=None, nesterov=False):
    self.lr, self.clip = learning_rate, l2_norm_clip
    self.momentum, self.nesterov = momentum, nesterov
    self.count = 0
    self.m: dict = {}

  def step(self, per_example: dict) -> dict:
    g = clipped_mean(per_example, self.clip)
    lr = _at(self.lr, self.count)
    self.count += 1
    if self.momentum is None:
      return {k: -lr * g[k] for k in g}
    self.m = {k: self.momentum * self.m.get(k, 0.0) + g[k] for k in g}
    direction = ({k: self.momentum * self.m[k] + g[k] for k in g} if self.nesterov else self.m)
    return {k: -lr * direction[k] for k in g}
