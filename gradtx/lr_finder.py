"""Finding a learning rate: the learning-rate range test.

Design note. The range test trains for a short run while the learning rate
grows exponentially, step by step, from a rate too small to matter to one
that makes the loss blow up, and reads a good rate off the loss curve. In
gradtx the rate is a hyperparameter in the optimizer state, so the test needs
nothing from the optimizer but the rate's dotted name: every step sets it with
:func:`gradtx.set_hparams` and calls the same jitted step, which therefore
compiles once. The test works on copies of the caller's params and state
(the copies are donated to the step, never the caller's buffers) and returns
only the curve, so the caller's model is exactly as it was.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

from gradtx import tree
from gradtx.chain import set_hparams
from gradtx.core import (POSITIVE, GradientTransformation, Range, apply_updates, check_callable,
                         check_value, scalar_loss)
from gradtx.errors import ArgumentTypeError, HyperparameterError

__all__ = ["RangeTestResult", "lr_range_test"]

PyTree = Any

# Why the run stopped, as RangeTestResult.stop_reason.
COMPLETED = "completed"        # every rate up to max_lr was tried
DIVERGED = "diverged"          # the smoothed loss exceeded diverge_threshold x its best
NONFINITE = "nonfinite"        # the loss became NaN or infinite
OUT_OF_BATCHES = "out of batches"  # the batch iterator ran out first


@dataclasses.dataclass(frozen=True, eq=False)
class RangeTestResult:
  """The curve of a learning-rate range test and the rates it suggests.

  Attributes:
    lrs: the rate used at each step (host numpy array, one entry per step run).
    losses: the loss at each step, measured before that step's update.
    smoothed_losses: the bias-corrected exponential moving average of
      ``losses`` (NaN from the first non-finite loss on).
    steepest_lr: the rate where the smoothed loss falls fastest against the
      log of the rate, before its minimum; NaN if fewer than 2 steps ran.
    minimum_lr: the rate at the minimum smoothed loss.
    suggested_lr: ``minimum_lr / factor``.
    factor: the factor below the minimum, as given to :func:`lr_range_test`.
    stop_reason: ``"completed"``, ``"diverged"``, ``"nonfinite"`` or
      ``"out of batches"``.
    name: the dotted name of the rate swept (``"lr.learning_rate"``).
  """
  lrs: np.ndarray
  losses: np.ndarray
  smoothed_losses: np.ndarray
  steepest_lr: float
  minimum_lr: float
  suggested_lr: float
  factor: float
  stop_reason: str
  name: str

  @property
  def diverged(self) -> bool:
    """Whether the run stopped because the loss blew up or became non-finite."""
    return self.stop_reason in (DIVERGED, NONFINITE)

  def __repr__(self) -> str:
    return (f"RangeTestResult(steps={len(self.lrs)}, stop_reason={self.stop_reason!r}, "
            f"steepest_lr={self.steepest_lr:.3g}, minimum_lr={self.minimum_lr:.3g}, "
            f"suggested_lr={self.suggested_lr:.3g})")

  def plot(self, ax: Any = None) -> Any:
    """Plots the loss against the rate (log axis) with the suggested rates; returns the axes.

    Needs matplotlib, an optional dependency (``pip install matplotlib``),
    imported only here.

    Args:
      ax: a matplotlib ``Axes`` to draw on; ``None`` makes a new figure.
    """
    if ax is None:
      try:
        import matplotlib.pyplot as plt
      except ImportError:
        raise ImportError("RangeTestResult.plot needs matplotlib: pip install matplotlib") \
            from None
      _, ax = plt.subplots()
    ax.plot(self.lrs, self.losses, alpha=0.35, label="loss")
    ax.plot(self.lrs, self.smoothed_losses, label="smoothed loss")
    if np.isfinite(self.steepest_lr):
      ax.axvline(self.steepest_lr, color="tab:green", linestyle="--",
                 label=f"steepest descent {self.steepest_lr:.2g}")
    ax.axvline(self.suggested_lr, color="tab:red", linestyle=":",
               label=f"minimum / {self.factor:g} = {self.suggested_lr:.2g}")
    # Keep the blow-up at the end from flattening the interesting part.
    shown = self.smoothed_losses[np.isfinite(self.smoothed_losses)]
    if self.diverged and len(shown) > 1:
      shown = shown[:-1]
    if len(shown):
      low, high = float(shown.min()), float(shown.max())
      ax.set_ylim(low - 0.05 * (high - low), high + 0.25 * (high - low) + 1e-12)
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate ({self.name})")
    ax.set_ylabel("loss")
    ax.legend()
    return ax


# The allowed values of lr_range_test's arguments; min_lr and max_lr are POSITIVE.
_SMOOTHING = Range(0.0, 1.0, low_open=True)               # (0, 1]: 1 is no smoothing
_THRESHOLD = Range(1.0, math.inf, low_open=True)          # (1, inf]: inf never stops early
_FACTOR = Range(1.0, math.inf)                            # [1, inf]


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(f"lr_range_test: {message}")


def _suggestions(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[float, float]:
  """(steepest_lr, minimum_lr) over the finite part of the smoothed curve."""
  finite = int(np.argmin(np.isfinite(smoothed))) if not np.isfinite(smoothed).all() \
      else len(smoothed)
  lrs, smoothed = lrs[:finite], smoothed[:finite]
  if finite == 0:
    return math.nan, math.nan
  # The first tenth is left out: there the moving average has seen only a few
  # losses, so its noise would pass for a slope or a minimum (fastai does the same).
  start = finite // 10
  lowest = start + int(np.argmin(smoothed[start:]))
  if finite < 2:
    return math.nan, float(lrs[lowest])
  # The slope of log loss against log rate: the relative decrease per decade,
  # whatever the loss's units (a plain slope where a loss is not positive).
  curve = np.log(smoothed) if (smoothed > 0).all() else smoothed
  slope = np.gradient(curve, np.log(lrs))
  steepest = start + int(np.argmin(slope[start:lowest + 1]))
  return float(lrs[steepest]), float(lrs[lowest])


def _repeated(batches: Iterable[Any]) -> Iterator[Any]:
  """The batches of an iterable that can be iterated again (a list, a data loader), over and
  over; none for an empty one. Not ``itertools.cycle``, which keeps every batch it yields:
  a data loader's whole first pass, up to ``num_steps`` batches, held at once."""
  while True:
    empty = True
    for batch in batches:
      empty = False
      yield batch
    if empty:
      return


def lr_range_test(loss_fn: Callable[[PyTree, Any], jax.Array], params: PyTree,
                  batches: Iterable[Any], tx: GradientTransformation, *,
                  name: str = "lr.learning_rate", state: PyTree | None = None,
                  min_lr: float = 1e-7, max_lr: float = 10.0, num_steps: int = 100,
                  smoothing: float = 0.05, diverge_threshold: float = 4.0,
                  factor: float = 10.0) -> RangeTestResult:
  """Sweeps the learning rate exponentially in one short run and suggests a rate.

  Step :math:`k = 0, \\dots, N-1` trains with the rate

  .. math::
    \\eta_k = \\eta_\\min \\left(\\eta_\\max / \\eta_\\min\\right)^{k / (N - 1)}
          = \\eta_\\min^{1 - k / (N - 1)}\\, \\eta_\\max^{k / (N - 1)}

  (computed as the second form, which no ratio of extreme rates overflows),
  set by name in the optimizer state, and records the loss :math:`\\ell_k` of
  the batch before the update. The loss is smoothed by a bias-corrected
  exponential moving average,

  .. math::
    a_k = (1 - \\alpha)\\, a_{k-1} + \\alpha\\, \\ell_k, \\qquad
    s_k = a_k / (1 - (1 - \\alpha)^{k+1}),

  computed as :math:`s_k = s_{k-1} + \\alpha (\\ell_k - s_{k-1}) / (1 - (1 - \\alpha)^{k+1})`,
  which keeps a constant loss constant (the minimum of a flat curve is its
  first point), and the run stops early when the loss becomes non-finite or blows up:
  :math:`s_k - s^\\ast > (\\tau - 1)\\,|s^\\ast|` with :math:`s^\\ast` the best
  smoothed loss so far (:math:`s_k > \\tau s^\\ast` for a positive loss).
  Two rates are suggested: ``steepest_lr``, where :math:`\\log s` falls
  fastest against :math:`\\log \\eta` before its minimum (the largest
  relative improvement per step), and ``suggested_lr``, the rate at the
  minimum of :math:`s` divided by ``factor``; the first tenth of the steps,
  where the average has seen too few losses to be smooth, is left out of
  both. They are heuristics: look at ``result.plot()``. For
  :math:`f(x) = \\tfrac12 L x^2` and SGD, whose best rate is :math:`1/L`
  and which diverges above :math:`2/L`, both land within a factor of 3 of
  :math:`1/L` (``tests/test_lr_finder.py``).

  The caller's ``params`` and ``state`` are not changed: the test trains
  copies, which it donates to the jitted step (so it needs one copy of the
  model and optimizer state beyond the caller's), and returns only the curve. The step is jitted once and
  never retraced: the rate reaches it through the state.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar loss``, differentiable in
      ``params``' floating leaves (integer buffers and keys among them are
      left as they are).
    params: the initial parameters (unchanged on return).
    batches: the batches, one per step. A sequence (a list, even of one
      batch) or another iterable that can be iterated again (a data loader)
      is iterated over again each time it ends; an iterator is consumed, and
      the run stops if it runs out.
    tx: the optimizer; its learning rate must be a hyperparameter held as a
      number (not a schedule) named ``name``.
    name: the dotted name of the rate in the state, default
      ``"lr.learning_rate"`` (ready optimizers' name; see
      :func:`gradtx.hparams`).
    state: the optimizer state to start from (unchanged on return); default
      ``tx.init(params)``.
    min_lr: :math:`\\eta_\\min > 0`, default 1e-7.
    max_lr: :math:`\\eta_\\max > \\eta_\\min`, default 10.
    num_steps: :math:`N \\ge 2`, the most steps run, default 100.
    smoothing: :math:`\\alpha \\in (0, 1]`, the weight of a new loss in the
      moving average (1: no smoothing), default 0.05.
    diverge_threshold: :math:`\\tau > 1`, default 4.
    factor: how far below the minimum ``suggested_lr`` lies, :math:`\\ge 1`,
      default 10.

  Returns:
    A :class:`RangeTestResult` (host numpy arrays and floats).

  Raises:
    TypeError: ``tx`` is not a transformation.
    ValueError: an argument out of range (named with its allowed range).
    HyperparameterError: ``name`` is not a hyperparameter of the state (the
      message lists the valid names), or a schedule drives it.

  References:
    Smith, *Cyclical Learning Rates for Training Neural Networks*, WACV 2017.
    Smith, *A disciplined approach to neural network hyper-parameters: Part 1*, 2018.

  Conventions: as fastai's ``Learner.lr_find`` (``smoothing`` is
  ``1 - beta``, ``steepest_lr`` is its ``steep`` measured on the log loss,
  ``suggested_lr`` its ``minimum``) and PyTorch Lightning's
  ``Tuner.lr_find`` with ``mode="exponential"``; unlike both, it never
  touches the model or optimizer it was given, so there is nothing to restore.

  Example:
    >>> import itertools
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> def loss_fn(x, batch):  # curvature 4: best rate 1/4, diverges above 1/2
    ...   return 2.0 * jnp.sum(x ** 2)
    >>> result = gtx.lr_finder.lr_range_test(loss_fn, jnp.ones(3), itertools.repeat(None),
    ...                                      gtx.sgd(0.1))
    >>> result.stop_reason, 0.25 / 3 < result.suggested_lr < 0.25 * 3
    ('diverged', True)
  """
  if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
    # Else "'list' object has no attribute 'init'" for batches and tx swapped, naming nothing.
    raise TypeError("lr_range_test: tx must be a gradient transformation (with init and "
                    f"update), got {type(tx).__name__}; the arguments are (loss_fn, params, "
                    "batches, tx)")
  check_callable("lr_range_test", "loss_fn", loss_fn, "a function loss_fn(params, batch) -> "
                 "scalar loss")
  _check(isinstance(num_steps, numbers.Integral) and not isinstance(num_steps, bool)
         and num_steps >= 2,
         f"num_steps must be an integer >= 2, got {num_steps!r}")
  for arg, value, allowed in (("min_lr", min_lr, POSITIVE), ("max_lr", max_lr, POSITIVE),
                              ("smoothing", smoothing, _SMOOTHING),
                              ("diverge_threshold", diverge_threshold, _THRESHOLD),
                              ("factor", factor, _FACTOR)):
    # A string from a config, None or a bool: else Python's "'<' not supported between
    # instances of 'int' and 'str'", naming nothing. NaN is named with the range it is not
    # in (it was "min_lr must be in [-inf, inf], got nan").
    check_value("lr_range_test", arg, value, allowed, scalar=True, held=np.float64)
  if not min_lr < max_lr:
    raise HyperparameterError.about("lr_range_test", "max_lr", max_lr,
                                    f"must be more than min_lr={min_lr!r}, got {max_lr!r}")
  try:
    stream = iter(batches)
  except TypeError:  # else Python's "'int' object is not iterable" at the first step
    raise ArgumentTypeError.about(
        "lr_range_test", "batches", batches, "must be an iterable of batches (a list, a data "
        f"loader, an iterator; itertools.repeat(batch) for one batch), got {batches!r}") from None
  stream = stream if stream is batches else _repeated(batches)
  # min_lr^(1-t) max_lr^t, not min_lr (max_lr / min_lr)^t: that ratio overflowed to inf for
  # a tiny min_lr (1e-320), and the sweep's first rate past it was refused by the stage
  # holding the rate, not as an argument of this function. Both ends are exact.
  t = np.arange(num_steps) / (num_steps - 1)
  lrs = np.float64(min_lr) ** (1 - t) * np.float64(max_lr) ** t

  # Checks the name (listing the valid ones) before any work, on the caller's state.
  state = tx.init(params) if state is None else state
  set_hparams(state, {name: lrs[0]})
  try:  # the largest rate, which the state may hold in float32 (1e39 is inf there)
    set_hparams(state, {name: lrs[-1]})
  except HyperparameterError as error:
    raise HyperparameterError.about("lr_range_test", "max_lr", max_lr,
                                    f"must be a rate {name} can hold ({error})") from None
  params, state = tree.copy(params), tree.copy(state)  # donated below, not the caller's

  def _scalar_loss_fn(params, batch):
    return scalar_loss(loss_fn(params, batch), "lr_range_test", "loss_fn's result")

  def step(params, state, batch):
    # allow_int: an integer buffer or a key among the params gets a float0 gradient, for
    # which tx.update takes no step, as in a training step that does the same.
    # A loss that is not a scalar raised jax's "Gradient only defined for scalar-output
    # functions", naming neither this function nor loss_fn.
    loss, grads = jax.value_and_grad(_scalar_loss_fn, allow_int=True)(params, batch)
    # value: the loss, as a training step passes it, for the stages that read it
    # (reduce_on_plateau raised a missing-argument error without it).
    updates, state = tx.update(grads, state, params, value=loss)
    return apply_updates(params, updates), state, loss

  step = jax.jit(step, donate_argnums=(0, 1))

  losses: list[float] = []
  smoothed: list[float] = []
  current, best, stop_reason = 0.0, math.inf, COMPLETED
  for k, lr in enumerate(lrs):
    try:
      batch = next(stream)
    except StopIteration:
      stop_reason = OUT_OF_BATCHES
      break
    state = set_hparams(state, {name: lr})
    params, state, loss = step(params, state, batch)
    loss = float(loss)  # the host needs it to decide whether to go on
    losses.append(loss)
    if not math.isfinite(loss):
      smoothed.append(math.nan)
      stop_reason = NONFINITE
      break
    # s_k = s_{k-1} + (alpha / c_k)(l_k - s_{k-1}), c_k = 1 - (1 - alpha)^(k+1): a_k / c_k
    # updated in place, and s_0 = l_0 exactly (c_0 = alpha rounds), so that a flat curve
    # stays flat. Dividing the average by c_k rounded a constant loss to a curve whose
    # last point was lowest (minimum_lr was max_lr).
    weight = 1.0 if k == 0 else smoothing / (1 - (1 - smoothing) ** (k + 1))
    current += weight * (loss - current)
    smoothed.append(current)
    if current - best > (diverge_threshold - 1) * abs(best):
      stop_reason = DIVERGED
      break
    best = min(best, current)

  lrs = lrs[:len(losses)]
  smoothed_array = np.asarray(smoothed, np.float64)
  steepest_lr, minimum_lr = _suggestions(lrs, smoothed_array)
  return RangeTestResult(lrs=lrs, losses=np.asarray(losses, np.float64),
                         smoothed_losses=smoothed_array, steepest_lr=steepest_lr,
                         minimum_lr=minimum_lr, suggested_lr=minimum_lr / factor,
                         factor=float(factor), stop_reason=stop_reason, name=name)
