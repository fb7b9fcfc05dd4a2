"""gradtx reproduces torch.optim, optimizer by optimizer (the calls of docs/torch.md).

Each case runs torch.optim and the gradtx call that docs/torch.md gives for it
on the same gradients for 40 steps, in float64, on a multi-leaf tree, and
compares the parameters after every step. Skipped when torch is not installed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx

torch = pytest.importorskip("torch")

STEPS = 40
SHAPES = {"scalar": (), "vector": (3,), "matrix": (4, 5), "cube": (2, 3, 4), "zero_grad": (3,),
          "tiny": (4,)}


@dataclasses.dataclass(frozen=True)
class TorchCase:
  """A torch.optim constructor and the gradtx transformation that reproduces it.

  ``rtol``: 1e-10 where the rules are the same arithmetic; a documented looser
  tolerance where they differ by a known term. ``tiny``: include the leaf with
  ~1e-12 gradients (left out where eps placement legitimately differs there).
  """
  id: str
  torch_optimizer: Callable[[list], Any]
  gradtx: Callable[[], gtx.GradientTransformation]
  rtol: float = 1e-10
  tiny: bool = True


def _adagrad_lr(learning_rate: float, lr_decay: float) -> Callable[[jax.Array], jax.Array]:
  """torch's Adagrad learning rate lr / (1 + (step - 1) lr_decay) as a schedule of the count."""
  def schedule(count: jax.Array) -> jax.Array:
    return learning_rate / (1 + lr_decay * count.astype(jnp.result_type(float)))
  return schedule


O = torch.optim
CASES = [
    TorchCase("SGD", lambda p: O.SGD(p, lr=0.1), lambda: gtx.sgd(0.1)),
    TorchCase("SGD-momentum", lambda p: O.SGD(p, lr=0.1, momentum=0.9),
              lambda: gtx.sgd(0.1, momentum=0.9)),
    TorchCase("SGD-nesterov-weight_decay",
              lambda p: O.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
              lambda: gtx.chain(decay=gtx.add_decayed_weights(0.01),
                                sgd=gtx.sgd(0.1, momentum=0.9, nesterov=True))),
    TorchCase("Adam", lambda p: O.Adam(p, lr=0.01), lambda: gtx.adam(0.01)),
    TorchCase("Adam-weight_decay", lambda p: O.Adam(p, lr=0.01, weight_decay=0.1),
              lambda: gtx.chain(decay=gtx.add_decayed_weights(0.1), adam=gtx.scale_by_adam(),
                                lr=gtx.scale_by_learning_rate(0.01))),
    TorchCase("AdamW", lambda p: O.AdamW(p, lr=0.01),
              lambda: gtx.adamw(0.01, weight_decay=0.01)),
    TorchCase("RMSprop", lambda p: O.RMSprop(p, lr=0.01),
              lambda: gtx.rmsprop(0.01, decay=0.99, eps_in_sqrt=False)),
    TorchCase("RMSprop-centered-momentum",
              lambda p: O.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.9, centered=True),
              lambda: gtx.rmsprop(0.01, decay=0.9, eps_in_sqrt=False, centered=True,
                                  momentum=0.9)),
    TorchCase("Adagrad", lambda p: O.Adagrad(p, lr=0.1),
              lambda: gtx.chain(rss=gtx.scale_by_rss(0.0, 1e-10, eps_in_sqrt=False),
                                lr=gtx.scale_by_learning_rate(0.1))),
    TorchCase("Adagrad-lr_decay",
              lambda p: O.Adagrad(p, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
              lambda: gtx.chain(rss=gtx.scale_by_rss(0.1, 1e-10, eps_in_sqrt=False),
                                lr=gtx.scale_by_learning_rate(_adagrad_lr(0.1, 0.01)))),
    TorchCase("Adadelta", lambda p: O.Adadelta(p), lambda: gtx.adadelta()),
    TorchCase("Adadelta-weight_decay", lambda p: O.Adadelta(p, lr=0.5, weight_decay=0.1),
              lambda: gtx.adadelta(0.5, weight_decay=0.1)),
    TorchCase("Adamax", lambda p: O.Adamax(p), lambda: gtx.adamax(0.002)),
    TorchCase("NAdam", lambda p: O.NAdam(p),
              lambda: gtx.chain(nadam=gtx.scale_by_nadam(),
                                lr=gtx.scale_by_learning_rate(0.002))),
    TorchCase("Rprop", lambda p: O.Rprop(p, lr=0.01), lambda: gtx.rprop(0.01)),
    # RAdam: torch adds eps to sqrt(v) before debiasing it, gradtx (and optax) after:
    # the two differ by eps (1/sqrt(1 - b2^t) - 1) / sqrt(v_hat), ~1e-7 relative for
    # gradients of order 1, and entirely for gradients of order eps.
    TorchCase("RAdam", lambda p: O.RAdam(p), lambda: gtx.radam(0.001), rtol=1e-6, tiny=False),
]


def _gradients(seed: int = 0) -> tuple[dict, list[dict]]:
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
  grads = []
  for t in range(STEPS):
    g = {k: rng.normal(size=s) * (1 + 0.5 * np.sin(t)) for k, s in SHAPES.items()}
    g["zero_grad"] = np.zeros(SHAPES["zero_grad"])
    g["tiny"] = 1e-12 * g["tiny"]
    grads.append(g)
  return params, grads


@pytest.fixture
def torch_float64():
  """torch keeps scalar state (NAdam's mu_product, step counts) in the default dtype."""
  previous = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)
  yield
  torch.set_default_dtype(previous)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gradtx_reproduces_torch(case, torch_float64):
  params0, grads = _gradients()
  keys = [k for k in SHAPES if case.tiny or k != "tiny"]
  torch_params = {k: torch.tensor(params0[k], dtype=torch.float64, requires_grad=True)
                  for k in keys}
  optimizer = case.torch_optimizer(list(torch_params.values()))
  with jax.enable_x64(True):
    tx = case.gradtx()
    params = {k: jnp.asarray(params0[k], jnp.float64) for k in keys}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for t, g in enumerate(grads):
      for k in keys:
        torch_params[k].grad = torch.tensor(g[k], dtype=torch.float64)
      optimizer.step()
      updates, state = update({k: jnp.asarray(g[k]) for k in keys}, state, params)
      params = gtx.apply_updates(params, updates)
      for k in keys:
        np.testing.assert_allclose(np.asarray(params[k]), torch_params[k].detach().numpy(),
                                   rtol=case.rtol, atol=1e-14,
                                   err_msg=f"{case.id}: leaf {k!r} at step {t + 1}")
