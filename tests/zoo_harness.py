"""The harness of the zoo's reference tests, shared by ``test_zoo`` and ``test_contrib_*``.

A :class:`ZooCase` names a gradtx transformation and its numpy reference;
:func:`check_against_reference` runs both for ``STEPS`` steps on a fixed
multi-leaf :class:`Problem` and compares every leaf at every step;
:func:`minimise` runs an optimizer on a real problem (the ill-conditioned
quadratic, Rosenbrock) in one compiled scan.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import gradtx as gtx
import reference as R

SHAPES = {"scalar": (), "vector": (3,), "matrix": (4, 5), "cube": (2, 3, 4), "zeros": (3, 2),
          "tiny": (6,)}
STEPS = 50


@dataclasses.dataclass(frozen=True)
class ZooCase:
  """One gradtx transformation and its reference, with the gradients it is fed.

  ``grads``: ``"noisy"`` (a noisy quadratic, g = c * theta + noise),
  ``"quadratic"`` (no noise; for L-BFGS, whose curvature pairs need it) or
  ``"sign"`` (magnitudes in [0.5, 1.5], signs flipping every 8 steps: sign
  rules are ill-posed across dtypes near exact ties at 0).
  """
  id: str
  make: Callable[[], Any]
  ref: Callable[[], R.Reference]
  grads: str = "noisy"
  needs_value: bool = False
  rtol32: float = 1e-4
  # The reference's params move by ``step * updates``; primitives that are not a
  # descent step on their own move by a small negative multiple.
  step: float = 1.0



class Problem:
  """A fixed problem: initial params, curvatures and per-step noise, seeded."""

  def __init__(self, seed: int = 0):
    rng = np.random.default_rng(seed)
    self.params0 = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    self.params0["zeros"] = np.zeros(SHAPES["zeros"])
    self.curvature = {k: rng.uniform(0.2, 2.0, size=s) for k, s in SHAPES.items()}
    self.noise = [{k: 0.5 * rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(STEPS)]
    self.signs = {k: rng.choice([-1.0, 1.0], size=s) for k, s in SHAPES.items()}
    self.magnitudes = [{k: rng.uniform(0.5, 1.5, size=s) for k, s in SHAPES.items()}
                       for _ in range(STEPS)]

  def grads(self, kind: str, params: dict, t: int) -> dict:
    if kind == "sign":
      flip = -1.0 if (t // 8) % 2 else 1.0
      g = {k: flip * self.signs[k] * self.magnitudes[t][k] for k in params}
    else:
      g = {k: self.curvature[k] * params[k] + (kind == "noisy") * self.noise[t][k]
           for k in params}
    g["zeros"] = np.zeros(SHAPES["zeros"])
    if kind != "quadratic":
      g["tiny"] = 1e-12 * g["tiny"]
    return g

  def initial(self, kind: str) -> dict:
    """The initial params; on the quadratic the tiny leaf's params are ~1e-12 too.

    (L-BFGS differences the params: a float32 parameter of size 1 cannot move by
    1e-12, so tiny gradients need tiny params there to be well posed.)
    """
    params = dict(self.params0)
    if kind == "quadratic":
      params["tiny"] = 1e-12 * params["tiny"]
    return params

  def value(self, params: dict, t: int) -> float:
    return 3.0 + sum(float(np.sum(0.5 * self.curvature[k] * params[k] ** 2
                                  + self.noise[t][k] * params[k])) for k in params)


def check_against_reference(case: ZooCase, dtype: Any, jit: bool) -> None:
  problem = Problem()
  params = problem.initial(case.grads)
  ref = case.ref()
  ref.init(params)
  tx = case.make()
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init({k: jnp.asarray(v, dtype) for k, v in params.items()})
  rtol = case.rtol32 if dtype == jnp.float32 else 1e-9
  scale: dict[str, float] = {}
  for t in range(STEPS):
    grads = problem.grads(case.grads, params, t)
    extra = {"value": problem.value(params, t)} if case.needs_value else {}
    want = ref.step(grads, params, **extra)
    got, state = update({k: jnp.asarray(v, dtype) for k, v in grads.items()}, state,
                        {k: jnp.asarray(v, dtype) for k, v in params.items()}, **extra)
    for k in params:
      assert got[k].dtype == dtype, (case.id, k, got[k].dtype)
      # Each leaf is compared at its own scale (its largest update so far), so the
      # ~1e-12 leaf is held to the same relative standard as the others, and an update
      # that is small by cancellation is not held to more digits than its terms carry.
      scale[k] = max(scale.get(k, 0.0), float(np.max(np.abs(want[k]), initial=0.0)))
      np.testing.assert_allclose(np.asarray(got[k], np.float64), want[k], rtol=rtol,
                                 atol=rtol * scale[k] + 1e-300,
                                 err_msg=f"{case.id}: leaf {k!r} at step {t + 1}")
    params = {k: params[k] + case.step * want[k] for k in params}


def ill_conditioned_quadratic(x: jax.Array) -> jax.Array:
  """f(x) = 1/2 sum_i c_i x_i^2, c from 1 to 100 (condition number 100); minimum 0 at 0."""
  curvature = jnp.logspace(0, 2, x.shape[0], dtype=x.dtype)
  return 0.5 * jnp.sum(curvature * x**2)


def rosenbrock(x: jax.Array) -> jax.Array:
  """f(x, y) = (1 - x)^2 + 100 (y - x^2)^2; minimum 0 at (1, 1)."""
  return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def minimise(tx: gtx.GradientTransformation, f: Callable, x0: jax.Array, steps: int) -> jax.Array:
  """``steps`` updates in one compiled scan; every stage may read value, grad and value_fn."""
  def step(carry, _):
    x, state = carry
    value, grad = jax.value_and_grad(f)(x)
    updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=f)
    return (gtx.apply_updates(x, updates), state), None

  (x, _), _ = jax.jit(lambda x: jax.lax.scan(step, (x, tx.init(x)), length=steps))(x0)
  return x
