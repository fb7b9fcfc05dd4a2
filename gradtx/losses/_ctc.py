"""Connectionist temporal classification (CTC) losses."""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.core import ANY, check_argument
from gradtx.losses._common import (ArrayLike, _floating, _integer, _wide, _same_shape,
                                   _rank, _class_labels, _nan_unless)
from gradtx.numerics import as_dtype


def ctc_loss_with_forward_probs(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""CTC loss, with the forward (alpha) log probabilities.

  The loss of a sequence is the negative log probability of its label
  sequence :math:`y_{1:N}` summed over all alignments :math:`\pi` of length
  :math:`T` that reduce to it after merging repeats and dropping blanks
  :math:`\phi`:

  .. math::
    \ell = -\log \sum_{\pi \in \mathcal{B}^{-1}(y)} \prod_{t=1}^T
      p_t(\pi_t)

  computed by the forward recursion over the two states "last emitted
  :math:`y_n`" and "blank after :math:`y_n`":

  .. math::
    \alpha_{\mathrm{BLANK}}(t, n) =
      \sum_{\pi_{1:t}:\ \pi_t = \phi,\ \mathcal{B}(\pi_{1:t}) = y_{1:n}}
        \prod_{\tau \le t} p_\tau(\pi_\tau), \qquad
    \alpha_{\mathrm{LABEL}}(t, n) =
      \sum_{\pi_{1:t}:\ \pi_t = y_n,\ \mathcal{B}(\pi_{1:t}) = y_{1:n}}
        \prod_{\tau \le t} p_\tau(\pi_\tau)

  Args:
    logits: ``[B, T, K]`` logits, ``K`` classes including the blank.
    logit_paddings: ``[B, T]``, 1.0 where a frame is padding, else 0.0.
    labels: ``[B, N]`` integer labels in ``[0, K)``, none of them
      ``blank_id``; a label in ``[-K, 0)`` counts from the end, as a numpy
      index. A sequence with a label that names no class (outside
      ``[-K, K)``) or is the blank has loss NaN, its gradient 0, and
      forward probabilities NaN; padding may hold any value.
    label_paddings: ``[B, N]``, 1.0 where a label is padding; labels must
      be right-padded (zeros then ones in each row).
    blank_id: the class of the blank symbol (default 0).
    log_epsilon: the stand-in for :math:`\log 0` (default -1e5), also
      the log probability of a class whose logit is ``-inf``.

  Returns:
    ``(loss, logalpha_blank, logalpha_nonblank)``: ``[B]`` losses and two
    ``[T, B, N+1]`` / ``[T, B, N]`` arrays of
    :math:`\log\alpha_{\mathrm{BLANK}}` and :math:`\log\alpha_{\mathrm{LABEL}}`.

  References:
    Graves et al, `Connectionist Temporal Classification: Labelling
    Unsegmented Sequence Data with Recurrent Neural Networks
    <https://doi.org/10.1145/1143844.1143891>`_, ICML 2006.

  Differences from optax:
    The recursion runs in the dtype of ``logits`` (optax mixes in float32
    constants, which fails under strict dtype promotion for float64 logits)
    and in float32 for 16-bit logits. A class ruled out with a ``-inf``
    logit has log probability ``log_epsilon``, as an impossible alignment
    does (optax: NaN for every sequence of the batch, in value and
    gradient).

    optax reads a label outside ``[0, K)`` as a class of probability 1,
    emitted for free (a loss lower than any real label's), and takes the
    blank as a label; here both give NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.zeros((1, 3, 2))  # uniform over {blank, a}
    >>> loss, _, _ = losses.ctc_loss_with_forward_probs(
    ...     logits, jnp.zeros((1, 3)), jnp.array([[1]]), jnp.zeros((1, 1)))
    >>> print(np.asarray(loss).round(4))  # 6 of 8 alignments give "a"
    [0.2877]
  """
  return _ctc("ctc_loss_with_forward_probs", logits, logit_paddings, labels, label_paddings,
              blank_id, log_epsilon)


def _ctc(name: str, logits: ArrayLike, logit_paddings: ArrayLike, labels: ArrayLike,
         label_paddings: ArrayLike, blank_id: int,
         log_epsilon: ArrayLike) -> tuple[jax.Array, jax.Array, jax.Array]:
  """:func:`ctc_loss_with_forward_probs`, its checks raising under ``name``, the function
  called."""
  x = _floating(name, "logits", logits)
  labels = _integer(name, "labels", labels)
  check_argument(name, "log_epsilon", log_epsilon, ANY)  # -inf or NaN: every alignment's log NaN
  logit_paddings = jnp.asarray(logit_paddings)
  label_paddings = jnp.asarray(label_paddings)
  _rank(name, "logits", x, 3)
  _rank(name, "labels", labels, 2)
  _same_shape(name, "labels", labels, "label_paddings", label_paddings)
  if logit_paddings.shape != x.shape[:2]:
    raise ValueError(
        f"{name}: logit_paddings must have shape {x.shape[:2]} (logits' [B, T]), "
        f"got {logit_paddings.shape}")
  batch, frames, num_classes = x.shape
  if frames == 0:  # the recursion starts from frame 0
    raise ValueError(f"{name}: logits have no frames (shape {x.shape}); CTC needs T >= 1")
  if labels.shape[0] != batch:
    raise ValueError(
        f"{name}: labels must have batch size {batch} (as logits), got {labels.shape[0]}")
  # operator.index takes True as 1; a float raised "'float' object cannot be interpreted
  # as an integer", naming neither the loss nor blank_id.
  try:
    index = None if isinstance(blank_id, (bool, np.bool_)) else operator.index(blank_id)
  except TypeError:
    index = None
  if index is None or not 0 <= index < num_classes:
    raise ValueError(
        f"{name}: blank_id must be an int in [0, {num_classes}), got {blank_id!r}")
  log_eps = as_dtype(log_epsilon, _wide(x).dtype)
  return _ctc_forward(x, logit_paddings, labels, label_paddings, log_eps, index)


# One program, not one kernel per operation: run eagerly, the scan alone (its body a new
# jaxpr at each call) was compiled again at every call, near 0.4 s on a CPU, and the rest
# was some 40 kernels. Under an outer jit it is inlined as before.
@functools.partial(jax.jit, static_argnums=5)
def _ctc_forward(x: jax.Array, logit_paddings: jax.Array, labels: jax.Array,
                 label_paddings: jax.Array, log_eps: jax.Array,
                 blank_id: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The checked :func:`_ctc`'s loss and forward probabilities."""
  batch, _, num_classes = x.shape
  max_label_len = labels.shape[1]
  dtype = x.dtype
  x = _wide(x)
  ctype = x.dtype

  logprobs = jax.nn.log_softmax(x)
  # A class ruled out with a -inf logit gets log_epsilon, the recursion's stand-in for
  # log 0: -inf gave 0 * -inf = NaN in the product with the one-hot labels (for every
  # sequence), and logaddexp(-inf, -inf) a NaN gradient.
  logprobs = jnp.where(logprobs == -jnp.inf, log_eps, logprobs)
  # Counted in int32: a sum of bfloat16 paddings rounds past 256 (299 padded labels of
  # 300 counted 300, leaving no label).
  label_lens = max_label_len - jnp.sum(label_paddings.astype(jnp.int32), axis=1)
  # A label that names no class had a zero one-hot, a log probability of 0 (probability 1):
  # emitted for free, a loss below any real label's. The blank is no label either. Either,
  # where not padding, makes the sequence's loss NaN (its gradient 0). Negative labels
  # count from the end, repeats included.
  labels, valid = _class_labels(labels, num_classes)
  real = jnp.arange(max_label_len)[None, :] < label_lens[:, None]
  bad = jnp.any(real & (~valid | (labels == blank_id)), axis=1)
  # repeat[b, n] = 1 when labels[b, n] == labels[b, n + 1].
  repeat = (labels[:, :-1] == labels[:, 1:]).astype(ctype)
  repeat = jnp.pad(repeat, ((0, 0), (0, 1)))

  logprobs_phi = jnp.transpose(logprobs[:, :, blank_id:blank_id + 1], (1, 0, 2))  # [T, B, 1]
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=ctype)  # [B, N, K]
  logprobs_emit = jnp.transpose(jnp.einsum("btk,bnk->btn", logprobs, one_hot), (1, 0, 2))

  phi_init = jnp.full((batch, max_label_len + 1), log_eps, ctype).at[:, 0].set(0)
  emit_init = jnp.full((batch, max_label_len), log_eps, ctype)

  def add_to_phi(phi: jax.Array, score: jax.Array) -> jax.Array:
    # phi[:, 1:] += score, in log space.
    return jnp.concatenate([phi[:, :1], jnp.logaddexp(phi[:, 1:], score)], axis=-1)

  def step(carry: tuple[jax.Array, jax.Array], xs: tuple[jax.Array, ...]):
    prev_phi, prev_emit = carry
    logprob_emit, logprob_phi, pad = xs
    # emit -> blank epsilon transition, except before a repeated label.
    phi_eps = add_to_phi(prev_phi, prev_emit + log_eps * repeat)
    next_emit = jnp.logaddexp(phi_eps[:, :-1] + logprob_emit, prev_emit + logprob_emit)
    next_phi = add_to_phi(phi_eps + logprob_phi,
                          prev_emit + logprob_phi + log_eps * (1 - repeat))
    pad = pad.reshape((batch, 1)).astype(ctype)
    next_emit = pad * prev_emit + (1 - pad) * next_emit
    next_phi = pad * prev_phi + (1 - pad) * next_phi
    return (next_phi, next_emit), (next_phi, next_emit)

  xs = (logprobs_emit, logprobs_phi, jnp.transpose(logit_paddings, (1, 0)))
  _, (logalpha_phi, logalpha_emit) = jax.lax.scan(step, (phi_init, emit_init), xs)

  # The last frame still takes its final epsilon transition.
  last_phi = add_to_phi(logalpha_phi[-1], logalpha_emit[-1])
  logalpha_phi = logalpha_phi.at[-1].set(last_phi)
  loss = _nan_unless(~bad, -jnp.take_along_axis(last_phi, label_lens[:, None], axis=1)[:, 0])
  # A bad sequence's forward probabilities were finite numbers for a label of probability 1
  # (its zero one-hot), as meaningless as its loss: NaN as well.
  logalpha_phi = _nan_unless(~bad[None, :, None], logalpha_phi)
  logalpha_emit = _nan_unless(~bad[None, :, None], logalpha_emit)
  return loss.astype(dtype), logalpha_phi.astype(dtype), logalpha_emit.astype(dtype)


def ctc_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
) -> jax.Array:
  r"""CTC loss of each sequence in a batch.

  .. math::
    \ell = -\log \sum_{\pi \in \mathcal{B}^{-1}(y)} \prod_{t=1}^T p_t(\pi_t)

  See :func:`ctc_loss_with_forward_probs` for the recursion and the
  arguments.

  Args:
    logits: ``[B, T, K]`` logits, ``K`` classes including the blank.
    logit_paddings: ``[B, T]``, 1.0 where a frame is padding.
    labels: ``[B, N]`` integer labels in ``[0, K)``, right-padded; one that
      names no class, or the blank, makes the sequence's loss NaN (see
      :func:`ctc_loss_with_forward_probs`).
    label_paddings: ``[B, N]``, 1.0 where a label is padding.
    blank_id: the class of the blank symbol (default 0).
    log_epsilon: the stand-in for :math:`\log 0` (default -1e5).

  Returns:
    ``[B]`` losses.

  References:
    Graves et al, `Connectionist Temporal Classification
    <https://doi.org/10.1145/1143844.1143891>`_, ICML 2006.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> logits = jnp.zeros((1, 3, 3))  # uniform over {blank, a, b}
    >>> labels = jnp.array([[1, 2]])  # "ab"
    >>> loss = losses.ctc_loss(logits, jnp.zeros((1, 3)), labels, jnp.zeros((1, 2)))
    >>> print(np.asarray(loss).round(4))  # 5 of 27 alignments: log(27/5)
    [1.6864]
  """
  loss, _, _ = _ctc("ctc_loss", logits, logit_paddings, labels, label_paddings, blank_id,
                    log_epsilon)
  return loss
