"""The optimizer zoo (issue 4) against numpy references, on real problems, and at the edges.

Every ready optimizer beyond the classic ones, and the primitives they are
built from, run 60 steps on a multi-leaf tree (a scalar, a vector, a matrix,
a 3-d array, a leaf of zeros and a leaf with ~1e-12 gradients) in float32
(jitted) and float64 (not jitted), a few also in the other two combinations,
and must match the float64 numpy reference of the paper's rule at every step.
The reference sets the trajectory: at each step both see the reference's
params and the gradient there, so a difference measures the rule, not a
drift between trajectories. Then every optimizer must converge on an
ill-conditioned quadratic and on Rosenbrock; L-BFGS must beat SGD by far on
a 100-d quadratic; moment memory per parameter is measured; bad
hyperparameters raise, naming the argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx as gtx
import reference as R
import reference_zoo as RZ

SHAPES = {"scalar": (), "vector": (3,), "matrix": (4, 5), "cube": (2, 3, 4), "zeros": (3, 2),
          "tiny": (6,)}
STEPS = 60


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


def _decay_mask(params: Any) -> Any:
  return {k: np.ndim(v) >= 2 for k, v in params.items()}


ZOO = [
    ZooCase("lion", lambda: gtx.lion(0.01, weight_decay=0.1, mask=_decay_mask),
            lambda: R.lion(0.01, weight_decay=0.1, mask=_decay_mask), grads="sign"),
    ZooCase("lamb", lambda: gtx.lamb(0.01, weight_decay=0.01),
            lambda: R.lamb(0.01, weight_decay=0.01)),
    ZooCase("lars", lambda: gtx.lars(0.1, weight_decay=1e-3, trust_ratio_mask=_decay_mask),
            lambda: R.lars(0.1, weight_decay=1e-3, trust_ratio_mask=_decay_mask)),
    ZooCase("lars-nesterov", lambda: gtx.lars(0.1, nesterov=True, eps=1e-6),
            lambda: R.lars(0.1, nesterov=True, eps=1e-6)),
    ZooCase("radam", lambda: gtx.radam(0.01), lambda: R.radam(0.01)),
    ZooCase("radam-nesterov", lambda: gtx.radam(0.01, nesterov=True, eps_root=1e-8),
            lambda: R.radam(0.01, nesterov=True, eps_root=1e-8)),
    ZooCase("adabelief", lambda: gtx.adabelief(0.01), lambda: R.adabelief(0.01)),
    ZooCase("adabelief-nesterov", lambda: gtx.adabelief(0.01, nesterov=True),
            lambda: R.adabelief(0.01, nesterov=True)),
    ZooCase("yogi", lambda: gtx.yogi(0.01), lambda: R.yogi(0.01)),
    ZooCase("novograd", lambda: gtx.novograd(0.01, weight_decay=1e-3),
            lambda: R.novograd(0.01, weight_decay=1e-3)),
    ZooCase("adan", lambda: gtx.adan(0.01, weight_decay=0.01, mask=_decay_mask),
            lambda: R.adan(0.01, weight_decay=0.01, mask=_decay_mask)),
    # min_dim_size_to_factor=3 factors the matrix, the cube and the zeros leaf.
    ZooCase("adafactor-factored", lambda: gtx.adafactor(0.01, min_dim_size_to_factor=3),
            lambda: R.adafactor(0.01, min_dim_size_to_factor=3)),
    ZooCase("adafactor-momentum-decay",
            lambda: gtx.adafactor(0.01, min_dim_size_to_factor=3, momentum=0.9,
                                  dtype_momentum=None, weight_decay_rate=1e-3,
                                  clipping_threshold=0.5),
            lambda: R.adafactor(0.01, min_dim_size_to_factor=3, momentum=0.9,
                                weight_decay_rate=1e-3, clipping_threshold=0.5)),
    ZooCase("adafactor-unfactored", lambda: gtx.adafactor(), lambda: R.adafactor()),
    ZooCase("sign_sgd", lambda: gtx.sign_sgd(0.01), lambda: R.sign_sgd(0.01), grads="sign"),
    ZooCase("signum", lambda: gtx.signum(0.01), lambda: R.signum(0.01), grads="sign"),
    ZooCase("rprop", lambda: gtx.rprop(0.01), lambda: R.rprop(0.01), grads="sign"),
    ZooCase("sm3", lambda: gtx.sm3(0.1), lambda: R.sm3(0.1)),
    ZooCase("fromage", lambda: gtx.fromage(0.1), lambda: R.fromage(0.1)),
    ZooCase("polyak_sgd", lambda: gtx.polyak_sgd(max_learning_rate=0.5, scaling=0.5, f_min=-1.0),
            lambda: R.polyak_sgd(max_learning_rate=0.5, scaling=0.5, f_min=-1.0),
            needs_value=True),
    ZooCase("polyak_sgd-plus", lambda: gtx.polyak_sgd(f_min=10.0, eps=1e-3, variant="sps+"),
            lambda: R.polyak_sgd(f_min=10.0, eps=1e-3, variant="sps+"), needs_value=True),
    ZooCase("optimistic_gradient_descent",
            lambda: gtx.optimistic_gradient_descent(0.05, alpha=0.5, beta=2.0),
            lambda: R.optimistic_gradient_descent(0.05, alpha=0.5, beta=2.0)),
    ZooCase("optimistic_adam", lambda: gtx.optimistic_adam(0.01, optimism=0.05),
            lambda: R.optimistic_adam(0.01, optimism=0.05)),
    ZooCase("optimistic_adam_v2", lambda: gtx.optimistic_adam_v2(0.01, beta=0.5),
            lambda: R.optimistic_adam_v2(0.01, beta=0.5)),
    ZooCase("lbfgs-fixed-step", lambda: gtx.lbfgs(0.5, memory_size=4, linesearch=None),
            lambda: RZ.lbfgs(0.5, memory_size=4), grads="quadratic"),
    ZooCase("lbfgs-unscaled", lambda: gtx.lbfgs(0.1, scale_init_precond=False, linesearch=None),
            lambda: RZ.lbfgs(0.1, scale_init_precond=False), grads="quadratic"),
    # Primitives, each against its own reference.
    ZooCase("scale_by_sign", gtx.scale_by_sign, R.scale_by_sign, grads="sign", step=-0.05),
    ZooCase("scale_by_trust_ratio", lambda: gtx.scale_by_trust_ratio(1e-3, 0.5, 1e-6),
            lambda: R.scale_by_trust_ratio(1e-3, 0.5, 1e-6), step=-0.05),
    ZooCase("scale_by_param_block_rms", gtx.scale_by_param_block_rms,
            R.scale_by_param_block_rms, step=-0.05),
    ZooCase("scale_by_param_block_norm", lambda: gtx.scale_by_param_block_norm(0.5),
            lambda: RZ.scale_by_param_block_norm(0.5), step=-0.05),
    ZooCase("centralize", gtx.centralize, RZ.centralize, step=-0.05),
]
BY_ID = {c.id: c for c in ZOO}


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


@pytest.mark.parametrize("case", ZOO, ids=[c.id for c in ZOO])
def test_float32_jit(case):
  check_against_reference(case, jnp.float32, jit=True)


@pytest.mark.parametrize("case", ZOO, ids=[c.id for c in ZOO])
def test_float64_nojit(case):
  with jax.enable_x64(True):
    check_against_reference(case, jnp.float64, jit=False)


OTHER_VARIANTS = ["lion", "radam", "adafactor-factored", "rprop", "sm3", "lbfgs-fixed-step",
                  "novograd", "polyak_sgd"]


@pytest.mark.parametrize("case_id", OTHER_VARIANTS)
def test_float32_nojit_and_float64_jit(case_id):
  check_against_reference(BY_ID[case_id], jnp.float32, jit=False)
  with jax.enable_x64(True):
    check_against_reference(BY_ID[case_id], jnp.float64, jit=True)
