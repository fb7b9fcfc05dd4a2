"""Perturbing and recentring the updates: annealed gradient noise, gradient centralization."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics, tree
from gradtx.core import (NONNEGATIVE, GradientTransformation, HParams, HParamSpec, ScalarOrSchedule,
                         check_state, stateless)
from gradtx.errors import HyperparameterError
from gradtx.numerics import as_dtype, safe_increment

__all__ = ["AddNoiseState", "add_noise", "centralize"]


class AddNoiseState(NamedTuple):
  """State of :func:`add_noise`: the step ``count`` and the random key ``rng_key``."""
  count: jax.Array  # type: ignore[assignment]  # a field named count hides tuple.count
  rng_key: jax.Array
  hparams: HParams


def as_key(where: str, key: Any, seed: Any = None, *, name: str = "key") -> jax.Array | None:
  """The typed PRNG key that ``key``, or optax's older ``seed``, gives: a typed key, a raw
  ``uint32[2]`` key (``jax.random.PRNGKey``'s) or an int seed; None where neither is
  given, for :func:`fresh_key` to make seed 0's key at ``init``. For a stage's ``init``,
  made when the stage is built, so that a slip is named there; the default key is not
  made then: sophia's default estimator is built when gradtx is imported, and a key
  made there started JAX's backend at ``import gradtx``, after which
  ``jax.distributed.initialize()`` raises and the platform can no longer be chosen.

  Raises :class:`HyperparameterError`, naming ``where`` and the argument, for anything
  else: a float seed or a string failed at the first ``init`` with jax's "PRNG key seed
  must be an integer; got JitTracer", naming neither; ``True`` was seed 1.
  """
  if seed is not None:
    if key is not None:
      raise ValueError(f"{where}: give {name}= or seed= (optax's older name for it), not both")
    key, name = seed, "seed"
  if key is None:
    return None
  dtype = getattr(key, "dtype", None)
  shape = np.shape(key) if dtype is not None else None
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
    return key
  if dtype == np.uint32 and shape == (2,):
    return jax.random.wrap_key_data(jnp.asarray(key))
  if (isinstance(key, (int, np.integer)) and not isinstance(key, bool)) or (
      dtype is not None and shape == () and jnp.issubdtype(dtype, jnp.integer)):
    return jax.random.key(key)
  shown = (f"an array of dtype {dtype}, shape {shape}" if isinstance(key, (jax.Array, np.ndarray))
           else repr(key))
  raise HyperparameterError.about(
      where, name, key, "must be a jax.random.key, a raw uint32[2] key (jax.random.PRNGKey) "
      f"or an int seed, got {shown}")


def shown_key(key: Any, seed: Any = None) -> Any:
  """How a stage's repr shows the ``key`` (or optax's older ``seed``) it was built with:
  an int seed or None as itself; a key array, which has no readable value, as a mark."""
  given = key if seed is None else seed
  return given if given is None or isinstance(given, int) else "<PRNG key>"


def fresh_key(key: jax.Array | None) -> jax.Array:
  """A copy of the typed key ``key``, in a buffer of its own: for each ``init``; seed 0's
  key for None (:func:`as_key`'s default).

  A stage's key is made (and checked) when the stage is built, by :func:`as_key`;
  a state holding that array itself would share its buffer with every other state the
  stage makes (and with the caller's key), so donating one state deleted the key of
  the next ``init``: "Buffer has been deleted or donated" (sophia's default
  estimator, built once as an argument default, is shared by every sophia).
  """
  if key is None:
    return jax.random.key(0)
  data = jnp.array(jax.random.key_data(key), copy=True)
  return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))


def gaussian_noised(g: jax.Array, sigma: jax.Array, key: jax.Array) -> jax.Array:
  """:math:`g + \\sigma \\xi`, :math:`\\xi \\sim \\mathcal N(0, 1)` (complex normal for complex
  ``g``), in float32 at least (:func:`gradtx.numerics.at_least_float32`).

  A bfloat16 draw takes one of a few hundred values (8 bits), and adding it to a
  bfloat16 ``g`` would round twice: the caller rounds the result once.
  """
  wide = numerics.at_least_float32(g)
  noise = jax.random.normal(key, g.shape, wide)
  return as_dtype(g, wide) + as_dtype(sigma, wide) * noise


def add_noise(eta: ScalarOrSchedule = 0.01, gamma: ScalarOrSchedule = 0.55,
              key: Any = None, *, seed: int | None = None) -> GradientTransformation:
  """Adds annealed Gaussian noise to the updates.

  .. math::
    u_t = g_t + \\sigma_t\\, \\xi_t, \\qquad \\sigma_t = \\sqrt{\\eta / t^{\\gamma}}, \\qquad
    \\xi_t \\sim \\mathcal N(0, I)

  The key lives in the state and is split at each step (one sub-key per
  leaf, in tree order, as optax does, so the same key draws the same noise).

  Args:
    eta: :math:`\\eta \\ge 0`, the initial variance, default 0.01.
    gamma: :math:`\\gamma \\ge 0`, the annealing exponent, default 0.55.
    key: a ``jax.random.key``, a raw key, or an int seed; ``None`` uses seed 0
      (as optax does, without its warning).
    seed: optax's older name for an int ``key``, default ``None``; giving
      both raises.

  References:
    Neelakantan et al., *Adding Gradient Noise Improves Learning for Very Deep
    Networks*, 2015.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.add_noise(eta=0.0, gamma=0.55, key=0)
    >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
    Array([1., 1.], dtype=float32)
  """
  spec = HParamSpec("add_noise", eta=(eta, NONNEGATIVE), gamma=(gamma, NONNEGATIVE))
  start = as_key("add_noise", key, seed)

  def init(params):
    del params
    return AddNoiseState(numerics.zero_count(), fresh_key(start), spec.init())

  def update(updates, state, params=None, **extra):
    check_state("add_noise", state, AddNoiseState)
    del params, extra
    h, hparams = spec.step(state.hparams)
    count = safe_increment(state.count)
    rng_key, sample_key = jax.random.split(state.rng_key)
    leaf_keys = tree.split_key_per_leaf(sample_key, updates)

    def leaf(g, leaf_key):
      real = numerics.real_dtype(numerics.at_least_float32(g))
      # Once per dtype, not per leaf: an eager step dispatched its five operations at each.
      sigma = numerics.shared(f"add_noise sigma {real}", (h["eta"], h["gamma"], count), lambda: (
          jnp.sqrt(as_dtype(h["eta"], real) / count.astype(real) ** as_dtype(h["gamma"], real))))
      return gaussian_noised(g, sigma, leaf_key).astype(g.dtype)

    # Per leaf with its own shape (map_leaves), so a packed tree draws the same noise.
    updates, = tree.map_leaves(lambda g, k: (leaf(g, k),), (True,), updates, leaf_keys)
    return updates, AddNoiseState(count, rng_key, hparams)

  return GradientTransformation(init, update, name="add_noise", spec=spec,
                                options=dict(key=shown_key(key, seed)))


def centralize() -> GradientTransformation:
  """Gradient centralization: subtracts from each row its mean over the other axes.

  .. math:: u_{i\\ldots} = g_{i\\ldots} - \\operatorname{mean}_{\\ldots} g_{i\\ldots}

  for leaves of rank 2 or more (the mean over every axis but the first);
  scalars and vectors pass through, as in optax.

  References:
    Yong et al., *Gradient Centralization: A New Optimization Technique for
    Deep Neural Networks*, ECCV 2020.

  Example:
    >>> import gradtx as gtx
    >>> import jax.numpy as jnp
    >>> tx = gtx.centralize()
    >>> tx.update(jnp.array([[1.0, 3.0]]), tx.init(jnp.zeros((1, 2))))[0]
    Array([[-1.,  1.]], dtype=float32)
  """

  def subtract_mean(g):
    if g.ndim < 2:
      return g
    return g - jnp.mean(g, axis=tuple(range(1, g.ndim)), keepdims=True)

  def centralize(updates, params):
    # Per leaf with its own shape (map_leaves): a packed buffer is 1-D.
    return tree.map_leaves(lambda g: (subtract_mean(g),), (True,), updates)[0]

  return stateless(centralize)
