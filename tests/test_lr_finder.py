"""The learning-rate range test: the curve against numpy, suggested rates on a quadratic
whose best rate is known, early stopping, no recompilation, the caller's state untouched."""

import itertools
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx as gtx
from gradtx.lr_finder import lr_range_test


def _quadratic(curvature, counter=None):
  """f(x) = 1/2 L |x - b|^2 for a batch b (None: b = 0). With SGD the best rate is 1/L
  (one step to the minimum) and the iteration diverges above 2/L."""
  def loss_fn(x, batch):
    if counter is not None:
      counter.append(1)  # runs once per trace
    if batch is not None:
      x = x - batch
    return 0.5 * curvature * jnp.sum(x ** 2)
  return loss_fn


def _numpy_run(curvature, x0, lrs, smoothing, batches=None):
  """The same run in numpy: losses before each step, and their debiased moving average."""
  x = np.asarray(x0, np.float64)
  losses = []
  for k, lr in enumerate(lrs):
    b = 0 if batches is None else np.asarray(batches[k % len(batches)], np.float64)
    losses.append(0.5 * curvature * np.sum((x - b) ** 2))
    x = x - lr * curvature * (x - b)
  losses = np.asarray(losses)
  average, smoothed = 0.0, []
  for k, loss in enumerate(losses):
    average = (1 - smoothing) * average + smoothing * loss
    smoothed.append(average / (1 - (1 - smoothing) ** (k + 1)))
  return losses, np.asarray(smoothed)


@pytest.mark.parametrize("curvature", [4.0, 100.0, 1e4])
def test_suggested_rates_are_within_3x_of_the_best_rate_of_a_quadratic(curvature):
  best = 1 / curvature
  result = lr_range_test(_quadratic(curvature), jnp.ones(10), itertools.repeat(None),
                         gtx.sgd(0.1))
  assert best / 3 < result.suggested_lr < best * 3, result
  assert best / 3 < result.steepest_lr < best * 3, result
  # It stopped early, and only once the rate was past the stability limit 2/L.
  assert result.stop_reason == "diverged" and result.diverged
  assert len(result.lrs) < 100
  assert result.lrs[-1] > 2 * best
  assert result.smoothed_losses[-1] > 4 * np.min(result.smoothed_losses[:-1])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
def test_the_curve_equals_a_numpy_run(dtype):
  with jax.enable_x64(dtype == jnp.float64):
    curvature, rng = 4.0, np.random.default_rng(0)
    x0 = jnp.asarray(rng.normal(size=5), dtype)
    batches = [jnp.asarray(0.1 * rng.normal(size=5), dtype) for _ in range(3)]
    result = lr_range_test(_quadratic(curvature), x0, batches, gtx.sgd(0.1), min_lr=1e-3,
                           max_lr=0.45, num_steps=40, smoothing=0.1)
    lrs = 1e-3 * 450.0 ** (np.arange(40) / 39)
    assert result.stop_reason == "completed"  # below 2/L = 0.5 throughout
    np.testing.assert_allclose(result.lrs, lrs, rtol=1e-15)
    losses, smoothed = _numpy_run(curvature, x0, lrs, 0.1, batches)
    rtol = 2e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(result.losses, losses, rtol=rtol)
    np.testing.assert_allclose(result.smoothed_losses, smoothed, rtol=rtol)
    # Both suggestions leave out the first tenth of the curve (4 of 40 steps).
    # Which step each suggestion picks (the rates agree with lrs to rounding, above).
    lowest = 4 + int(np.argmin(smoothed[4:]))
    assert result.minimum_lr == result.lrs[lowest]
    assert result.suggested_lr == pytest.approx(lrs[lowest] / 10)
    slope = np.gradient(np.log(smoothed), np.log(lrs))
    assert result.steepest_lr == result.lrs[4 + int(np.argmin(slope[4:lowest + 1]))]


def test_the_step_is_traced_once_while_the_rate_changes_every_step():
  traces = []
  result = lr_range_test(_quadratic(1.0, traces), jnp.ones(3), [None], gtx.adam(1e-3),
                         max_lr=0.1, num_steps=30)
  assert len(result.lrs) == 30 and result.stop_reason == "completed"
  assert len(traces) == 1


def test_the_callers_params_and_state_are_unchanged_and_not_donated():
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  tx = gtx.adam(1e-2)
  state = tx.init(params)
  for _ in range(3):  # a state with moments, not a fresh one
    _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  before = jax.tree.map(np.array, (params, state))
  loss_fn = lambda p, batch: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)  # noqa: E731
  result = lr_range_test(loss_fn, params, [None], tx, state=state, num_steps=20)
  for leaf in jax.tree.leaves((params, state)):
    assert not leaf.is_deleted()
  for x, y in zip(jax.tree.leaves((params, state)), jax.tree.leaves(before)):
    np.testing.assert_array_equal(np.asarray(x), y)
  assert float(gtx.hparams(state)["lr.learning_rate"]) == pytest.approx(1e-2)
  # The result holds host values only: nothing that aliases the run's device buffers.
  for field in ("lrs", "losses", "smoothed_losses"):
    assert type(getattr(result, field)) is np.ndarray
  for field in ("steepest_lr", "minimum_lr", "suggested_lr"):
    assert type(getattr(result, field)) is float


def test_params_with_an_integer_buffer_and_a_key_sweep_as_their_float_leaves_alone():
  # It raised jax's "grad requires real- or complex-valued inputs": the step took the
  # gradient of every leaf, where tx.update takes no step for an integer buffer or a key.
  quadratic = _quadratic(4.0)
  loss_fn = lambda p, batch: quadratic(p["w"], batch)  # noqa: E731
  params = {"w": jnp.arange(1.0, 4.0), "steps": jnp.int32(7), "key": jax.random.key(0)}
  kwargs = dict(max_lr=0.45, num_steps=12)
  result = lr_range_test(loss_fn, params, [None], gtx.sgd(0.1), **kwargs)
  alone = lr_range_test(quadratic, params["w"], [None], gtx.sgd(0.1), **kwargs)
  assert result.stop_reason == alone.stop_reason == "completed"
  np.testing.assert_array_equal(result.losses, alone.losses)
  assert result.losses[-1] < 0.5 * result.losses[0]  # it trained


def test_a_nonfinite_loss_stops_the_run():
  result = lr_range_test(_quadratic(1e4), jnp.ones(3), [None], gtx.sgd(0.1), max_lr=1e3,
                         diverge_threshold=1e300)
  assert result.stop_reason == "nonfinite" and result.diverged
  assert not np.isfinite(result.losses[-1]) and np.isnan(result.smoothed_losses[-1])
  assert np.isfinite(result.losses[:-1]).all() and len(result.lrs) < 100
  assert 1e-4 / 3 < result.suggested_lr < 1e-4 * 3  # read off the finite part


def test_a_flat_loss_smooths_to_itself_and_its_minimum_is_the_first_rate():
  # The moving average divided by its bias 1 - (1 - alpha)^(k+1) rounded a constant loss
  # to a curve that fell by an ulp at the last step: minimum_lr was max_lr.
  result = lr_range_test(lambda x, batch: 0.0 * jnp.sum(x) + 1.0, jnp.ones(2), [None],
                         gtx.sgd(0.1), num_steps=5)
  np.testing.assert_array_equal(result.smoothed_losses, np.ones(5))
  assert result.minimum_lr == result.lrs[0] == 1e-7



def test_a_tiny_min_lr_sweeps_without_overflow():
  # min_lr * (max_lr / min_lr)^t: the ratio 1 / 1e-320 overflowed to inf, and the second
  # rate was refused as "lr: learning_rate must be a finite number", naming a stage.
  result = lr_range_test(_quadratic(1.0), jnp.ones(2), [None], gtx.sgd(0.1), min_lr=1e-320,
                         max_lr=1.0, num_steps=3)
  assert result.stop_reason == "completed"
  assert result.lrs[0] == 1e-320 and result.lrs[-1] == 1.0
  np.testing.assert_allclose(result.lrs[1], np.sqrt(1e-320), rtol=1e-12)  # 1e-320 is subnormal


def test_an_iterator_that_runs_out_stops_the_run():
  batches = iter([jnp.zeros(2)] * 7)
  result = lr_range_test(_quadratic(1.0), jnp.ones(2), batches, gtx.sgd(0.1))
  assert result.stop_reason == "out of batches" and len(result.lrs) == 7


def test_an_iterable_is_iterated_again_not_held_in_memory():
  # A data loader (iterable, not an iterator) went through itertools.cycle, which keeps
  # every batch it yields: a loader longer than num_steps held num_steps batches at once.
  class Loader:
    def __init__(self):
      self.passes, self.yielded, self.most_alive = 0, [], 0

    def __iter__(self):
      self.passes += 1
      for i in range(3):
        self.most_alive = max(self.most_alive, sum(r() is not None for r in self.yielded))
        batch = np.full(2, 0.1 * i, np.float32)
        self.yielded.append(weakref.ref(batch))
        yield batch

  loader = Loader()
  result = lr_range_test(_quadratic(1.0), jnp.ones(2), loader, gtx.sgd(0.1), max_lr=0.5,
                         num_steps=8)
  assert result.stop_reason == "completed" and loader.passes == 3
  assert loader.most_alive <= 2  # the batch of the step running and the one before
  losses, _ = _numpy_run(1.0, np.ones(2), result.lrs, 0.05, [0.0, 0.1, 0.2])
  np.testing.assert_allclose(result.losses, losses, rtol=1e-6)
  # An empty sequence runs no step.
  assert lr_range_test(_quadratic(1.0), jnp.ones(2), [], gtx.sgd(0.1)).stop_reason == (
      "out of batches")


def test_a_named_rate_inside_a_custom_chain():
  tx = gtx.chain(grads=gtx.monitor("norm"),
                 opt=gtx.monitor("step_size_mean", inner=gtx.adam(1e-3)))
  result = lr_range_test(_quadratic(1.0), jnp.ones(4), [None], tx,
                         name="opt.lr.learning_rate", num_steps=60)
  # The rate reached the step: nothing moves at tiny rates, the loss falls at larger ones.
  np.testing.assert_allclose(result.losses[result.lrs < 1e-5], 2.0, rtol=1e-4)
  assert result.smoothed_losses.min() < 0.8 * result.losses[0]


def test_a_stage_that_reads_the_loss_is_given_it():
  # reduce_on_plateau reads value=; the sweep's step did not pass it, and raised.
  tx = gtx.chain(gtx.sgd(1e-3), gtx.reduce_on_plateau(patience=1000))
  result = lr_range_test(_quadratic(1.0), jnp.ones(4), [None], tx,
                         name="sgd.lr.learning_rate", num_steps=20, max_lr=0.5)
  losses, _ = _numpy_run(1.0, np.ones(4), result.lrs, 0.05)  # no plateau: a plain sweep
  np.testing.assert_allclose(result.losses, losses, rtol=1e-5)


def test_plot_draws_the_curve_and_the_suggestions():
  matplotlib = pytest.importorskip("matplotlib")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  result = lr_range_test(_quadratic(4.0), jnp.ones(3), [None], gtx.sgd(0.1))
  ax = result.plot()
  raw, smooth, steep, suggested = ax.get_lines()
  np.testing.assert_array_equal(raw.get_xdata(), result.lrs)
  np.testing.assert_array_equal(raw.get_ydata(), result.losses)
  np.testing.assert_array_equal(smooth.get_ydata(), result.smoothed_losses)
  assert steep.get_xdata()[0] == result.steepest_lr
  assert suggested.get_xdata()[0] == result.suggested_lr
  assert ax.get_xscale() == "log"
  fig, given = plt.subplots()
  assert result.plot(given) is given
  plt.close("all")


ERRORS = [
    ("unknown name", dict(name="lr.rate"), gtx.HyperparameterError,
     r"unknown hyperparameter 'lr.rate' \(did you mean 'lr.learning_rate'"),
    ("min above max", dict(min_lr=1.0, max_lr=0.1), gtx.HyperparameterError,
     r"^lr_range_test: max_lr must be more than min_lr=1.0, got 0.1$"),
    ("zero min", dict(min_lr=0.0), gtx.HyperparameterError,
     r"^lr_range_test: min_lr must be in \(0, inf\), got 0.0$"),
    # Past float32's range: the sweep's last rate was refused by the stage 'lr', not by name.
    ("max beyond the held dtype", dict(max_lr=1e39), gtx.HyperparameterError,
     r"^lr_range_test: max_lr must be a rate lr.learning_rate can hold \(lr: learning_rate "
     r"must be in \[0, inf\) as a float32"),
    ("infinite max", dict(max_lr=float("inf")), gtx.HyperparameterError,
     r"^lr_range_test: max_lr must be a finite number in \(0, inf\), got inf$"),
    ("one step", dict(num_steps=1), ValueError, r"num_steps must be an integer >= 2, got 1"),
    ("no smoothing weight", dict(smoothing=0.0), gtx.HyperparameterError,
     r"^lr_range_test: smoothing must be in \(0, 1\], got 0.0$"),
    ("smoothing above 1", dict(smoothing=1.5), gtx.HyperparameterError,
     r"^lr_range_test: smoothing must be in \(0, 1\], got 1.5$"),
    ("threshold", dict(diverge_threshold=1.0), gtx.HyperparameterError,
     r"^lr_range_test: diverge_threshold must be in \(1, inf\], got 1.0$"),
    ("factor", dict(factor=0.5), gtx.HyperparameterError,
     r"^lr_range_test: factor must be in \[1, inf\], got 0.5$"),
    # NaN was refused as "min_lr must be in [-inf, inf], got nan", a range NaN is not out of.
    ("nan min", dict(min_lr=float("nan")), gtx.HyperparameterError,
     r"^lr_range_test: min_lr must be in \(0, inf\), got nan$"),
    ("nan max", dict(max_lr=float("nan")), gtx.HyperparameterError,
     r"^lr_range_test: max_lr must be in \(0, inf\), got nan$"),
    ("nan smoothing", dict(smoothing=float("nan")), gtx.HyperparameterError,
     r"^lr_range_test: smoothing must be in \(0, 1\], got nan$"),
    ("nan threshold", dict(diverge_threshold=float("nan")), gtx.HyperparameterError,
     r"^lr_range_test: diverge_threshold must be in \(1, inf\], got nan$"),
    ("nan factor", dict(factor=float("nan")), gtx.HyperparameterError,
     r"^lr_range_test: factor must be in \[1, inf\], got nan$"),
    # A string from a config or None raised Python's "'<' not supported between ...".
    ("string", dict(max_lr="1.0"), gtx.HyperparameterError,
     r"^lr_range_test: max_lr must be a number .*got '1.0' \(convert it with float\(\)\)"),
    ("none", dict(smoothing=None), gtx.HyperparameterError,
     r"^lr_range_test: smoothing must be a number .*got None"),
    ("bool", dict(factor=True), gtx.HyperparameterError,
     r"^lr_range_test: factor must be a number .*got True"),
]


@pytest.mark.parametrize("kwargs,error,match", [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_errors(kwargs, error, match):
  with pytest.raises(error, match=match):
    lr_range_test(_quadratic(1.0), jnp.ones(2), [None], gtx.sgd(0.1), **kwargs)


def test_a_tx_that_is_not_a_transformation_is_named():
  # batches and tx swapped raised "'list' object has no attribute 'init'", naming nothing.
  with pytest.raises(TypeError, match=r"^lr_range_test: tx must be a gradient transformation "
                     r"\(with init and update\), got list"):
    lr_range_test(_quadratic(1.0), jnp.ones(2), gtx.sgd(0.1), [None])


def test_num_steps_may_be_a_numpy_integer():
  # np.int64(20) is an integer: it was refused with "num_steps must be an integer".
  result = lr_range_test(_quadratic(1.0), jnp.ones(2), [None], gtx.sgd(0.1),
                         num_steps=np.int64(20), max_lr=0.1)
  expected = lr_range_test(_quadratic(1.0), jnp.ones(2), [None], gtx.sgd(0.1), num_steps=20,
                           max_lr=0.1)
  np.testing.assert_array_equal(result.lrs, expected.lrs)
  np.testing.assert_array_equal(result.losses, expected.losses)
  with pytest.raises(ValueError, match=r"num_steps must be an integer >= 2, got True"):
    lr_range_test(_quadratic(1.0), jnp.ones(2), [None], gtx.sgd(0.1), num_steps=True)


def test_a_scheduled_rate_cannot_be_swept():
  tx = gtx.sgd(gtx.schedules.linear_schedule(0.1, 0.0, 10))
  with pytest.raises(gtx.HyperparameterError, match="follows a schedule"):
    lr_range_test(_quadratic(1.0), jnp.ones(2), [None], tx)


def test_the_default_name_is_every_ready_optimizers_rate_but_rprops():
  # Tutorial 04 says so: the range test's default name finds the learning rate of every
  # ready optimizer that takes one, but rprop's, which only seeds its step sizes.
  import inspect

  import gradtx.optimizers
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  without = []
  for name in gradtx.optimizers.__all__:
    make = getattr(gtx, name)
    if "learning_rate" not in inspect.signature(make).parameters:  # polyak_sgd: Polyak's
      continue
    if "lr.learning_rate" not in gtx.hparams(make(learning_rate=0.1).init(params)):
      without.append(name)
  assert without == ["rprop"]


@pytest.mark.parametrize("loss_fn, error, message", [
    (3, TypeError, "lr_range_test: loss_fn must be a function loss_fn(params, batch) -> "
     "scalar loss, got 3"),
    (lambda x, batch: x ** 2, gtx.StructureError,
     "lr_range_test: loss_fn's result must be a scalar loss (or of shape (1,)), got shape (2,)"),
    (lambda x, batch: (jnp.sum(x), {"aux": 1}), gtx.StructureError,
     "lr_range_test: loss_fn's result must be a scalar loss, got a tuple of 2 (a loss with "
     "auxiliary outputs? return the loss alone)"),
])
def test_a_bad_loss_fn_is_named(loss_fn, error, message):
  # 3 raised jax's "Expected a callable value, got 3", a loss of shape (2,) "Gradient only
  # defined for scalar-output functions", a (loss, aux) pair the same or jax's
  # TracerArrayConversionError: none named lr_range_test or loss_fn.
  with pytest.raises(error) as raised:
    lr_range_test(loss_fn, jnp.ones(2), [None], gtx.sgd(0.1), num_steps=3)
  assert str(raised.value) == message


def test_a_loss_of_shape_1_is_taken_as_a_scalar():
  result = lr_range_test(lambda x, batch: jnp.sum(x, keepdims=True), jnp.ones(2), [None],
                         gtx.sgd(0.1), num_steps=3, max_lr=0.1)
  np.testing.assert_allclose(result.losses[0], 2.0)


@pytest.mark.parametrize("batches", [5, None, jnp.ones(())])
def test_batches_that_are_not_iterable_are_named(batches):
  # 5 or None raised Python's "'int' object is not iterable", a 0-d array jax's "iteration
  # over a 0-d array", naming neither lr_range_test nor batches.
  with pytest.raises(gtx.ArgumentTypeError) as raised:
    lr_range_test(_quadratic(1.0), jnp.ones(2), batches, gtx.sgd(0.1), num_steps=3)
  assert str(raised.value) == (
      "lr_range_test: batches must be an iterable of batches (a list, a data loader, an "
      f"iterator; itertools.repeat(batch) for one batch), got {batches!r}")
