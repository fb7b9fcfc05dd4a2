"""Self-supervised (metric learning) losses: triplet margin and NT-Xent."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx.core import ANY, NONNEGATIVE, POSITIVE, check_argument, check_axis
from gradtx.losses._common import (ArrayLike, _broadcastable, _floating, _wide,
                                    _cosine_norm, _safe_power)
from gradtx.numerics import as_dtype


def triplet_margin_loss(
    anchors: ArrayLike,
    positives: ArrayLike,
    negatives: ArrayLike,
    axis: int = -1,
    norm_degree: ArrayLike = 2,
    margin: ArrayLike = 1.0,
    eps: ArrayLike = 1e-6,
) -> jax.Array:
  r"""Triplet margin loss: the positive must be nearer than the negative by a margin.

  .. math::
    d(u, v) = \Big(\sum_i |u_i - v_i|^q + \varepsilon\Big)^{1/q}, \qquad
    \ell = \max\big(d(a, p) - d(a, n) + m,\ 0\big)

  Args:
    anchors: anchor embeddings :math:`a`, ``[batch, feature_dim]``.
    positives: embeddings :math:`p` similar to the anchors, the same shape.
    negatives: embeddings :math:`n` dissimilar to them, the same shape.
    axis: the feature axis the distances sum over (default -1).
    norm_degree: the degree :math:`q > 0` of the norm (default 2).
    margin: the margin :math:`m` (default 1.0).
    eps: :math:`\varepsilon \ge 0`, added inside the root so its gradient
      stays finite at distance 0 (default 1e-6).

  Returns:
    the losses, ``[batch]``.

  References:
    Balntas et al, `Learning local feature descriptors with triplets and
    shallow convolutional neural networks
    <https://bmva-archive.org.uk/bmvc/2016/papers/paper119/abstract119.pdf>`_,
    BMVC 2016.

  Differences from optax:
    optax raises the signed difference :math:`(u_i - v_i)^q`, which is not a
    norm for odd :math:`q` (with ``norm_degree=1`` a distance can be
    negative); gradtx takes :math:`|u_i - v_i|^q`. The two agree for even
    :math:`q`, the default included. A zero difference with :math:`q < 1`,
    or distance 0 with ``eps=0``, has gradient 0 there (optax: NaN, for the
    whole batch).

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> anchors = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> positives = jnp.array([[0.1, 0.1], [1.1, 1.1]])
    >>> negatives = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(np.asarray(losses.triplet_margin_loss(anchors, positives, negatives)).round(4))
    [0.1414 0.1414]
  """
  name = "triplet_margin_loss"
  a = _floating(name, "anchors", anchors)
  check_axis(name, axis)
  p = _floating(name, "positives", positives)
  n = _floating(name, "negatives", negatives)
  _broadcastable(name, "anchors", a, "positives", p)
  _broadcastable(name, "anchors", a, "negatives", n)
  check_argument(name, "margin", margin, ANY)
  check_argument(name, "norm_degree", norm_degree, POSITIVE)
  check_argument(name, "eps", eps, NONNEGATIVE)
  dtype = a.dtype
  a = _wide(a)
  q = as_dtype(norm_degree, a.dtype)
  margin, eps = as_dtype(margin, a.dtype), as_dtype(eps, a.dtype)

  def distance(v: jax.Array) -> jax.Array:
    # Both powers safe at 0: a zero difference with q < 1, or distance 0 with eps = 0,
    # had an infinite derivative there, which made the whole gradient NaN.
    terms = _safe_power(jnp.abs(a - v.astype(a.dtype)), q)
    return _safe_power(jnp.sum(terms, axis=axis) + eps, 1 / q)

  return jnp.maximum(distance(p) - distance(n) + margin, 0).astype(dtype)


def ntxent(
    embeddings: ArrayLike,
    labels: ArrayLike,
    temperature: ArrayLike = 0.07,
) -> jax.Array:
  r"""Normalized temperature-scaled cross entropy (NT-Xent, SimCLR's loss).

  With :math:`s_{ij}` the cosine similarity of embeddings :math:`i, j`
  (:func:`cosine_similarity` with ``epsilon`` the machine epsilon of the
  compute dtype, float32 for 16-bit embeddings) divided by the temperature
  :math:`\tau`, :math:`P` the positive pairs
  (same label, :math:`i \ne j`) and :math:`N_i` the embeddings with another
  label than :math:`i`:

  .. math::
    \ell = -\frac{1}{|P|} \sum_{(i, j) \in P}
      \log \frac{e^{s_{ij}}}{e^{s_{ij}} + \sum_{k \in N_i} e^{s_{ik}}}

  Args:
    embeddings: the embeddings, ``[batch, feature_dim]``, floating.
    labels: group labels, ``[batch]``: embeddings with the same label form
      positive pairs (e.g. ``[0, 0, 1, 1]`` for two pairs).
    temperature: :math:`\tau > 0` (default 0.07).

  Returns:
    the scalar loss, averaged over the positive pairs.

  References:
    Chen et al, `A Simple Framework for Contrastive Learning of Visual
    Representations <https://arxiv.org/abs/2002.05709>`_, 2020.

  Differences from optax:
    A batch with no positive pair has loss 0 (optax: NaN, from 0/0).
    16-bit embeddings take float32's epsilon as the least squared norm, as
    float32 embeddings do; optax takes their own (bfloat16's 8e-3), which
    shrinks the similarities of embeddings with norms below 0.09.

  Range:
    As :func:`cosine_similarity`'s: float32 embeddings with entries above
    about 1.8e19 in magnitude overflow their squared norms (as optax's).

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from gradtx import losses
    >>> emb = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> print(np.asarray(losses.ntxent(emb, jnp.array([0, 0, 1, 1]), 1.0)).round(4))
    0.6034
  """
  name = "ntxent"
  x = _floating(name, "embeddings", embeddings)
  labels = jnp.asarray(labels)
  check_argument(name, "temperature", temperature, POSITIVE)
  if x.ndim != 2 or labels.shape != x.shape[:1]:
    raise ValueError(
        f"{name}: embeddings must be [batch, feature_dim] and labels [batch], "
        f"got shapes {x.shape} and {labels.shape}")
  dtype = x.dtype
  x = _wide(x)
  # The least squared norm is the compute dtype's eps, as optax's for float32: the
  # bfloat16 eps (8e-3) scaled down every similarity of embeddings with norms below 0.09
  # (a loss of 5.97 for 8.06 at norm 0.07).
  eps = jnp.finfo(x.dtype).eps
  temperature = as_dtype(temperature, x.dtype)
  # Every pair's cosine similarity, as _cosine_similarity's (the inner product over the two
  # norms), the inner products as one matrix product: an (n, n, d) product summed made the
  # gradient 18x slower on (512, 128) (84 against 4.6 ms on CPU; optax's 263 ms). At full
  # precision: a TPU's default rounds the inputs to bfloat16.
  norm = _cosine_norm(x, -1, eps)
  inner = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
  sim = inner / (norm[:, None] * norm[None, :]) / temperature
  same = labels[:, None] == labels[None, :]
  positive = same & ~jnp.eye(x.shape[0], dtype=bool)
  negative_lse = jax.nn.logsumexp(sim, axis=1, where=~same, keepdims=True)  # -inf when none
  # log(e^s / (e^s + e^n)) as -softplus(n - s): s - logaddexp(s, n) cancelled near s,
  # 14 at the default temperature, for a loss near 0 (a relative error of 1e-4 at 3e-5).
  log_prob = -jax.nn.softplus(negative_lse - sim)
  count = jnp.maximum(jnp.sum(positive), 1).astype(x.dtype)
  return (-jnp.sum(jnp.where(positive, log_prob, 0)) / count).astype(dtype)
