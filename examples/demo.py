"""The classic example, trained once with each classic optimizer.

Binary classification on built-in data (1000 samples x 10 features, made here
with a fixed seed), a 3-layer MLP, mini-batches of 32, an 80/20 train/validation
split. Each optimizer trains the same initial model for the same number of
epochs; the table reports final train loss, validation accuracy and recall,
and wall time (compilation included).

Batch, stochastic and mini-batch gradient descent are the same optimizer,
``gtx.sgd``, fed different batches: the whole training set, one example, or 32.

    python3 dev.py demo            # or: python examples/demo.py --epochs 20
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gradtx as gtx


class Data(NamedTuple):
  x_train: jax.Array
  y_train: jax.Array
  x_val: jax.Array
  y_val: jax.Array


def make_data(n: int = 1000, d: int = 10, seed: int = 0) -> Data:
  """A nonlinear binary task: the label is the sign of a fixed random 2-layer function."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  w1 = rng.normal(size=(d, 8))
  w2 = rng.normal(size=8)
  logits = np.tanh(x @ w1) @ w2 + 0.3 * rng.normal(size=n)
  y = (logits > np.median(logits)).astype(np.float32)
  split = int(0.8 * n)
  return Data(*(jnp.asarray(a) for a in (x[:split], y[:split], x[split:], y[split:])))


def init_mlp(key: jax.Array, sizes: tuple[int, ...] = (10, 32, 32, 1)) -> list[dict]:
  """He-initialised dense layers: three layers for sizes (10, 32, 32, 1)."""
  params = []
  for k, (fan_in, fan_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes, sizes[1:])):
    w = jax.random.normal(k, (fan_in, fan_out)) * jnp.sqrt(2.0 / fan_in)
    params.append({"w": w, "b": jnp.zeros(fan_out)})
  return params


def predict(params: list[dict], x: jax.Array) -> jax.Array:
  """Logits of the MLP."""
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"])
  return (x @ params[-1]["w"] + params[-1]["b"])[:, 0]


def loss_fn(params: list[dict], x: jax.Array, y: jax.Array) -> jax.Array:
  """Binary cross-entropy with logits."""
  logits = predict(params, x)
  return jnp.mean(jnp.maximum(logits, 0) - logits * y + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def train(tx: gtx.GradientTransformation, params: Any, data: Data, batch_size: int,
          epochs: int, seed: int = 1) -> Any:
  """Trains for ``epochs`` passes over shuffled mini-batches; one jitted scan per epoch."""
  n = data.x_train.shape[0]
  steps = n // batch_size

  def step(carry, batch):
    params, state = carry
    x, y = batch
    grads = jax.grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return (gtx.apply_updates(params, updates), state), None

  @jax.jit
  def epoch(params, state, key):
    order = jax.random.permutation(key, n)[:steps * batch_size].reshape(steps, batch_size)
    batches = (data.x_train[order], data.y_train[order])
    (params, state), _ = jax.lax.scan(step, (params, state), batches)
    return params, state

  state = tx.init(params)
  for key in jax.random.split(jax.random.key(seed), epochs):
    params, state = epoch(params, state, key)
  return params


def metrics(params: Any, data: Data) -> tuple[float, float, float]:
  """(train loss, validation accuracy, validation recall)."""
  predicted = predict(params, data.x_val) > 0
  positive = data.y_val > 0.5
  accuracy = jnp.mean(predicted == positive)
  recall = jnp.sum(predicted & positive) / jnp.sum(positive)
  return (float(loss_fn(params, data.x_train, data.y_train)), float(accuracy), float(recall))


# name, optimizer, batch size: the classic family, gradient descent three ways first.
RUNS: list[tuple[str, Callable[[], gtx.GradientTransformation], int]] = [
    ("gradient descent (full batch)", lambda: gtx.sgd(0.5), 800),
    ("stochastic gradient descent", lambda: gtx.sgd(0.005), 1),
    ("mini-batch gradient descent", lambda: gtx.sgd(0.1), 32),
    ("momentum", lambda: gtx.sgd(0.02, momentum=0.9), 32),
    ("nesterov", lambda: gtx.sgd(0.02, momentum=0.9, nesterov=True), 32),
    ("adagrad", lambda: gtx.adagrad(0.05), 32),
    ("rmsprop", lambda: gtx.rmsprop(1e-3), 32),
    ("adadelta", lambda: gtx.adadelta(1.0), 32),
    ("adam", lambda: gtx.adam(1e-3), 32),
    ("adamw", lambda: gtx.adamw(1e-3, weight_decay=1e-2), 32),
    ("nadam", lambda: gtx.nadam(1e-3), 32),
    ("amsgrad", lambda: gtx.amsgrad(1e-3), 32),
    ("adamax", lambda: gtx.adamax(2e-3), 32),
]


def main(argv: list[str] | None = None) -> list[tuple[str, int, float, float, float, float]]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=30)
  args = parser.parse_args(argv)
  data = make_data()
  params0 = init_mlp(jax.random.key(0))
  print(f"{data.x_train.shape[0]} train / {data.x_val.shape[0]} validation samples, "
        f"{data.x_train.shape[1]} features; 3-layer MLP; {args.epochs} epochs each\n")
  header = (f"{'optimizer':<32}{'batch':>6}{'steps':>7}{'train loss':>12}{'val acc':>9}{'recall':>8}"
            f"{'time (s)':>10}")
  print(header)
  print("-" * len(header))
  rows = []
  for name, make_tx, batch_size in RUNS:
    start = time.perf_counter()
    params = train(make_tx(), params0, data, batch_size, args.epochs)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    loss, accuracy, recall = metrics(params, data)
    rows.append((name, batch_size, loss, accuracy, recall, seconds))
    steps = args.epochs * (data.x_train.shape[0] // batch_size)
    print(f"{name:<32}{batch_size:>6}{steps:>7}{loss:>12.4f}{accuracy:>9.3f}{recall:>8.3f}{seconds:>10.2f}",
          flush=True)
  return rows


if __name__ == "__main__":
  main()
