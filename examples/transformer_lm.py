"""A character-level transformer language model, trained with flax.nnx and gradtx.

    python examples/transformer_lm.py                       # ~600 steps, a few minutes on CPU
    python examples/transformer_lm.py --steps 2000          # resumes from the last checkpoint
    python examples/transformer_lm.py --no-resume --checkpoint-dir /tmp/lm

What it shows:

* a gradtx optimizer inside ``flax.nnx.Optimizer``: a named chain of global
  norm clipping and AdamW (decay on weight matrices only) with a warmup-cosine
  learning rate from ``gradtx.schedules``;
* the learning rate read by name from the optimizer state at every step
  (``gtx.hparams(optimizer.opt_state)["adamw.lr.learning_rate"]``);
* periodic orbax checkpoints of the model and the optimizer state, and resuming
  from the latest one: the schedule continues from its saved step count, the
  batches are a pure function of the step number, so a resumed run repeats an
  uninterrupted one loss for loss;
* a per-step log (``loss.csv``) and a loss plot (``loss.png``) in the
  checkpoint directory, and a short sample of generated text at the end.

The same script runs unchanged on a GPU or TPU (JAX picks the device).
``--stop-at N`` stops after step N without a final checkpoint, as if the run
were killed there; the tests use it to check that resuming is exact.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

import gradtx as gtx

DATA = pathlib.Path(__file__).parent / "data" / "public_domain.txt"


# ----------------------------------------------------------------------------
# Data: characters of a text, batches that depend only on the step number.


@dataclasses.dataclass(frozen=True)
class Corpus:
  text: str
  chars: str  # the vocabulary, sorted

  @classmethod
  def load(cls, path: pathlib.Path = DATA) -> "Corpus":
    text = path.read_text(encoding="utf-8")
    return cls(text, "".join(sorted(set(text))))

  def encode(self, s: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(self.chars)}
    return np.array([index[c] for c in s], np.int32)

  def decode(self, ids) -> str:
    return "".join(self.chars[int(i)] for i in ids)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def batch_at(tokens: jax.Array, step: int, batch_size: int, seq_len: int,
             seed: int) -> tuple[jax.Array, jax.Array]:
  """The (inputs, next-character targets) of training step ``step``.

  Drawn from a key folded with the step number, so a resumed run sees exactly
  the batches an uninterrupted one would.
  """
  key = jax.random.fold_in(jax.random.key(seed), step)
  starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - seq_len - 1)
  windows = jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (seq_len + 1,)))(starts)
  return windows[:, :-1], windows[:, 1:]


# ----------------------------------------------------------------------------
# Model: a small GPT-style decoder.


class Block(nnx.Module):
  """Pre-norm transformer block: causal self-attention, then an MLP."""

  def __init__(self, d_model: int, heads: int, rngs: nnx.Rngs):
    self.attn_norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(heads, d_model, decode=False, rngs=rngs)
    self.mlp_norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.up = nnx.Linear(d_model, 4 * d_model, rngs=rngs)
    self.down = nnx.Linear(4 * d_model, d_model, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    x = x + self.attn(self.attn_norm(x), mask=mask)
    return x + self.down(jax.nn.gelu(self.up(self.mlp_norm(x))))


class CharTransformer(nnx.Module):

  def __init__(self, vocab: int, seq_len: int, d_model: int, heads: int, layers: int,
               rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab, d_model, rngs=rngs)
    self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq_len, d_model)))
    self.blocks = nnx.List([Block(d_model, heads, rngs) for _ in range(layers)])
    self.norm = nnx.LayerNorm(d_model, rngs=rngs)
    self.head = nnx.Linear(d_model, vocab, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    seq_len = tokens.shape[-1]
    x = self.embed(tokens) + self.position[...][None, :seq_len]
    mask = nnx.make_causal_mask(tokens)
    for block in self.blocks:
      x = block(x, mask)
    return self.head(self.norm(x))


def cross_entropy(model: CharTransformer, inputs: jax.Array, targets: jax.Array) -> jax.Array:
  logits = model(inputs)
  return gtx.losses.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


# ----------------------------------------------------------------------------
# Optimizer: clip, then AdamW with a warmup-cosine learning rate.


def decay_mask(params) -> object:
  """Decay the weight matrices; not biases, norms, embeddings of positions."""
  return jax.tree.map(lambda p: jnp.ndim(p) == 2, params)


def make_optimizer(args: argparse.Namespace) -> gtx.Chain:
  schedule = gtx.schedules.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=args.learning_rate, warmup_steps=args.warmup_steps,
      decay_steps=args.steps, end_value=args.learning_rate / 10)
  return gtx.chain(
      clip=gtx.clip_by_global_norm(args.clip),
      adamw=gtx.adamw(schedule, b2=0.99, weight_decay=args.weight_decay, mask=decay_mask),
  )


def create(args: argparse.Namespace, vocab: int) -> tuple[CharTransformer, nnx.Optimizer]:
  """The model and its optimizer, initialised in one compiled call rather than op by op."""

  @nnx.jit
  def build():
    model = CharTransformer(vocab, args.seq_len, args.d_model, args.heads, args.layers,
                            nnx.Rngs(args.seed))
    return model, nnx.Optimizer(model, make_optimizer(args), wrt=nnx.Param)

  model, optimizer = build()
  # Committed to the device, as arrays restored from a checkpoint are: jit keys its compiled
  # programs on that too, so a resumed run finds the fresh run's training step in a persistent
  # compilation cache (JAX_COMPILATION_CACHE_DIR) instead of compiling it again.
  device = jax.devices()[0]
  nnx.update(model, jax.device_put(nnx.state(model), device))
  nnx.update(optimizer, jax.device_put(nnx.state(optimizer), device))
  return model, optimizer


@nnx.jit
def train_step(model, optimizer, inputs, targets):
  loss, grads = nnx.value_and_grad(cross_entropy)(model, inputs, targets)
  optimizer.update(model, grads)
  return loss


# ----------------------------------------------------------------------------
# Checkpoints and the loss log.


def checkpoint_state(model, optimizer) -> dict:
  return {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}


def restore_latest(manager: ocp.CheckpointManager, model, optimizer) -> int:
  """Loads the latest checkpoint into ``model`` and ``optimizer``; returns its step (0 if none)."""
  step = manager.latest_step()
  if step is None:
    return 0
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, checkpoint_state(model, optimizer))
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  nnx.update(model, restored["model"])
  nnx.update(optimizer, restored["optimizer"])
  return step


LOG_FIELDS = ["step", "loss", "learning_rate"]


def read_log(path: pathlib.Path, up_to: int) -> list[dict]:
  """The logged rows of steps ``<= up_to``: a killed run may have logged past its checkpoint."""
  if not path.exists():
    return []
  with open(path, newline="") as f:
    return [row for row in csv.DictReader(f) if int(row["step"]) <= up_to]


def plot_losses(rows: list[dict], path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  steps = [int(r["step"]) for r in rows]
  fig, loss_axis = plt.subplots(figsize=(7, 4))
  loss_axis.plot(steps, [float(r["loss"]) for r in rows], lw=1, label="training loss")
  loss_axis.set_xlabel("step")
  loss_axis.set_ylabel("cross-entropy (nats per character)")
  lr_axis = loss_axis.twinx()
  lr_axis.plot(steps, [float(r["learning_rate"]) for r in rows], color="tab:orange", lw=1)
  lr_axis.set_ylabel("learning rate (adamw.lr.learning_rate)", color="tab:orange")
  loss_axis.set_title("character-level transformer, gradtx clip + adamw")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ----------------------------------------------------------------------------
# Sampling.


def sample(model: CharTransformer, corpus: Corpus, prompt: str, length: int, seq_len: int,
           temperature: float, seed: int) -> str:
  """Continues ``prompt`` one character at a time from the last ``seq_len`` characters."""

  @nnx.jit
  def next_logits(model, window, last):
    return model(window[None])[0, last]

  ids = list(corpus.encode(prompt))
  key = jax.random.key(seed)
  for _ in range(length):
    context = ids[-seq_len:]
    window = np.zeros(seq_len, np.int32)  # fixed shape: one compilation
    window[:len(context)] = context
    logits = next_logits(model, jnp.asarray(window), len(context) - 1)
    key, sub = jax.random.split(key)
    ids.append(int(jax.random.categorical(sub, logits / temperature)))
  return corpus.decode(ids)


# ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--steps", type=int, default=600, help="total training steps")
  p.add_argument("--checkpoint-dir", type=pathlib.Path, default=pathlib.Path("checkpoints/lm"))
  p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                 help="continue from the latest checkpoint in --checkpoint-dir")
  p.add_argument("--checkpoint-every", type=int, default=100)
  p.add_argument("--stop-at", type=int, default=None,
                 help="stop after this step without a final checkpoint, as if killed")
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--seq-len", type=int, default=64)
  p.add_argument("--d-model", type=int, default=64)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--learning-rate", type=float, default=3e-3, help="peak of the schedule")
  p.add_argument("--warmup-steps", type=int, default=50)
  p.add_argument("--weight-decay", type=float, default=0.1)
  p.add_argument("--clip", type=float, default=1.0, help="max global gradient norm")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--sample-length", type=int, default=300, help="0 skips the sample")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  corpus = Corpus.load()
  tokens = jnp.asarray(corpus.encode(corpus.text))
  args.checkpoint_dir = args.checkpoint_dir.absolute()
  args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
  log_path = args.checkpoint_dir / "loss.csv"

  model, optimizer = create(args, len(corpus.chars))
  print(f"{len(corpus.text)} characters, vocabulary {len(corpus.chars)}, "
        f"{sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))} parameters "
        f"on {jax.devices()[0].platform}")
  print(optimizer.tx)

  options = ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=args.checkpoint_every)
  with ocp.CheckpointManager(args.checkpoint_dir / "orbax", options=options) as manager:
    if not args.resume and manager.latest_step() is not None:
      for step in manager.all_steps():
        manager.delete(step)
    start = restore_latest(manager, model, optimizer) if args.resume else 0
    if start:
      print(f"resumed from the checkpoint of step {start}")
    rows = read_log(log_path, start)
    stop = args.steps if args.stop_at is None else min(args.stop_at, args.steps)

    with open(log_path, "w", newline="") as log_file:
      log = csv.DictWriter(log_file, LOG_FIELDS)
      log.writeheader()
      log.writerows(rows)
      progress = tqdm(range(start, stop), initial=start, total=args.steps, unit="step",
                      disable=None)
      for step in progress:
        inputs, targets = batch_at(tokens, step, args.batch_size, args.seq_len, args.seed)
        loss = train_step(model, optimizer, inputs, targets)
        # The schedule's value at this step, read from the state by name.
        lr = gtx.hparams(optimizer.opt_state)["adamw.lr.learning_rate"][...]
        row = {"step": step + 1, "loss": repr(float(loss)), "learning_rate": repr(float(lr))}
        log.writerow(row)
        rows.append(row)
        progress.set_postfix(loss=f"{float(loss):.3f}", lr=f"{float(lr):.2e}")
        done = step + 1
        if done % args.checkpoint_every == 0 or done == args.steps:
          manager.save(done, args=ocp.args.StandardSave(checkpoint_state(model, optimizer)),
                       force=done == args.steps)
      progress.close()
    manager.wait_until_finished()

  plot_losses(rows, args.checkpoint_dir / "loss.png")
  print(f"loss log: {log_path}\nloss plot: {args.checkpoint_dir / 'loss.png'}")
  if args.sample_length and rows:
    print("--- sample ---")
    print(sample(model, corpus, "Shall I ", args.sample_length, args.seq_len, 0.8, args.seed))
  return 0


if __name__ == "__main__":
  sys.exit(main())
