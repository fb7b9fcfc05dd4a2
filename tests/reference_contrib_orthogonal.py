"""Float64 numpy references of gradtx.contrib's matrix-wise rules: Muon, GaLore, split.

Written from the papers' equations (see each class), per array, in float64;
same interface as ``reference.Reference``.
"""

from __future__ import annotations

import math

import numpy as np

import reference as R

DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(X: np.ndarray, coeffs, ns_steps: int, preconditioning: str,
                  eps: float) -> np.ndarray:
  """Jordan et al.'s quintic Newton-Schulz iteration on one matrix.

  Wide orientation (rows <= columns), X_0 = X / (||X|| + eps), then
  X_{k+1} = a X_k + b (X_k X_k^H) X_k + c (X_k X_k^H)^2 X_k. AOL (Boissin et
  al.) instead rescales X_0 = D^{-1/2} X with D_ii = sum_j |(X X^H)_ij| at the
  first step; Schatten-4 (Grishina et al.) divides X by ||X X^H||_F^{1/2}. X^H is
  the conjugate transpose: a complex X goes to its polar factor U V^H.
  """
  tall = X.shape[0] > X.shape[1]
  if tall:
    X = X.T
  if preconditioning == "frobenius":
    d = np.sqrt(np.sum(np.abs(X) ** 2)) + eps
    X = X / d if d > 0 else X * 0
  elif preconditioning == "spectral":
    d = np.linalg.norm(X, 2) + eps
    X = X / d if d > 0 else X * 0
  table = np.asarray(coeffs, np.float64)
  rows = list(table) if table.ndim == 2 else [table] * ns_steps
  for k, (a, b, c) in enumerate(rows):
    if k == 0 and preconditioning == "aol":
      r = np.maximum(np.abs(X @ X.conj().T).sum(axis=1), eps)
      X = X * np.where(r > 0, 1 / np.sqrt(np.where(r > 0, r, 1)), 0)[:, None]
    elif k == 0 and preconditioning == "schatten":
      r = max(np.sqrt(np.sum(np.abs(X @ X.conj().T) ** 2)), eps)
      X = X * (1 / np.sqrt(r) if r > 0 else 0.0)
    A = X @ X.conj().T
    X = a * X + b * (A @ X) + c * (A @ A @ X)
  return X.T if tall else X


def _axes(axis, ndim):
  return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def matrix_view(shape, dims):
  """(batch, reduction, output) axes of a leaf: dims = (reduction_axis, output_axis)."""
  red, out = _axes(dims[0], len(shape)), _axes(dims[1], len(shape))
  batch = tuple(a for a in range(len(shape)) if a not in red + out)
  return batch, red, out


def orthogonalize(x: np.ndarray, dims, coeffs, ns_steps, preconditioning, eps) -> np.ndarray:
  batch, red, out = matrix_view(x.shape, dims)
  order = batch + red + out
  y = np.transpose(x, order)
  nb = math.prod(x.shape[a] for a in batch)
  nr = math.prod(x.shape[a] for a in red)
  mats = y.reshape(nb, nr, -1)
  done = np.stack([newton_schulz(m, coeffs, ns_steps, preconditioning, eps) for m in mats])
  return np.transpose(done.reshape(y.shape), np.argsort(order))


class scale_by_muon(R.Reference):
  """Muon's direction: NS of the (Nesterov) debiased momentum.

      m_t = beta m_{t-1} + (1-beta) g_t
      mhat = m_t / (1-beta^t)
           (nesterov: beta m_t / (1-beta^(t+1)) + (1-beta) g_t / (1-beta^t))
      u_t = NS(mhat)            (adaptive: Re<mhat, NS(mhat)> NS(mhat))

  ``dims``: name -> (reduction_axis, output_axis) or None (u_t = mhat).
  """

  def __init__(self, dims, ns_coeffs=DEFAULT_NS_COEFFS, ns_steps=5, beta=0.95, eps=1e-8,
               nesterov=True, adaptive=False, preconditioning="frobenius"):
    self.dims, self.ns_coeffs, self.ns_steps = dims, ns_coeffs, ns_steps
    self.beta, self.eps, self.nesterov, self.adaptive = beta, eps, nesterov, adaptive
    self.preconditioning = preconditioning

  def init_leaf(self, p):
    return {"m": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    b, t = self.beta, self.t
    s["m"] = b * s["m"] + (1 - b) * g
    if self.nesterov:
      mhat = b * s["m"] / (1 - b ** (t + 1)) + (1 - b) * g / (1 - b ** t)
    else:
      mhat = s["m"] / (1 - b ** t)
    dims = self.dims.get(name)
    if dims is None:
      return mhat
    o = orthogonalize(mhat, dims, self.ns_coeffs, self.ns_steps, self.preconditioning, self.eps)
    return np.real(np.vdot(mhat, o)) * o if self.adaptive else o


class muon(R.Reference):
  """Muon for matrix leaves, AdamW for the others.

      matrices: u_t = -lr (s NS(mhat_t) + wd p_t),
                s = sqrt(max(1, fan_out / fan_in))  or  rho sqrt(max(fan_in, fan_out))
      others:   AdamW (reference.adamw) with adam_* hyperparameters
  Default ``dims``: every 2-D leaf is a plain (0, 1) matrix.
  """

  def __init__(self, learning_rate, ns_coeffs=DEFAULT_NS_COEFFS, ns_steps=5, beta=0.95,
               eps=1e-8, weight_decay=0.0, *, nesterov=True, adaptive=False,
               preconditioning="frobenius", adam_b1=0.9, adam_b2=0.999, adam_eps_root=0.0,
               adam_weight_decay=0.0, adam_learning_rate=None, dims=None, consistent_rms=None):
    self.learning_rate, self.weight_decay = learning_rate, weight_decay
    self.consistent_rms, self.dims_given = consistent_rms, dims
    self.muon_args = dict(ns_coeffs=ns_coeffs, ns_steps=ns_steps, beta=beta, eps=eps,
                          nesterov=nesterov, adaptive=adaptive,
                          preconditioning=preconditioning)
    self.adam = R.adamw(learning_rate if adam_learning_rate is None else adam_learning_rate,
                        adam_b1, adam_b2, eps, adam_eps_root, weight_decay=adam_weight_decay,
                        nesterov=nesterov)

  def init(self, params):
    self.count = 0
    dims = self.dims_given or {k: (0, 1) if np.ndim(v) == 2 else None for k, v in params.items()}
    self.dims = {k: d for k, d in dims.items() if d is not None}
    self.direction = scale_by_muon(self.dims, **self.muon_args)
    self.direction.init({k: params[k] for k in self.dims})
    self.adam.init({k: v for k, v in params.items() if k not in self.dims})

  def step(self, grads, params, **extra):
    self.count += 1
    mats = {k: np.asarray(grads[k], np.complex128 if np.iscomplexobj(grads[k]) else np.float64)
            for k in self.dims}
    d = self.direction.step(mats, {k: params[k] for k in self.dims})
    out = self.adam.step({k: g for k, g in grads.items() if k not in self.dims},
                         {k: p for k, p in params.items() if k not in self.dims})
    lr = self.sched(self.learning_rate)
    for k, u in d.items():
      _, red, outx = matrix_view(u.shape, self.dims[k])
      fan_in = math.prod(u.shape[a] for a in red)
      fan_out = math.prod(u.shape[a] for a in outx)
      s = (math.sqrt(max(1.0, fan_out / fan_in)) if self.consistent_rms is None
           else self.consistent_rms * math.sqrt(max(fan_in, fan_out)))
      out[k] = -lr * (s * u + self.weight_decay * R._f64(params[k]))
    return {k: out[k] for k in grads}


class split_real_and_imaginary(R.Reference):
  """``inner`` run on each complex leaf's real and imaginary parts as two real leaves.

      (u_re, u_im) = inner(Re g, Im g),   u = u_re + i u_im
  (the parts are leaves "<name>.re" and "<name>.im" of the inner reference); a
  real leaf goes to ``inner`` as it is.
  """

  def __init__(self, inner: R.Reference):
    self.inner = inner

  @staticmethod
  def _parts(tree):
    out = {}
    for k, v in tree.items():
      if np.iscomplexobj(v):
        out[k + ".re"], out[k + ".im"] = np.real(v), np.imag(v)
      else:
        out[k] = v
    return out

  def init(self, params):
    self.count = 0
    self.complex = {k for k, v in params.items() if np.iscomplexobj(v)}
    self.inner.init(self._parts(params))

  def step(self, grads, params, **extra):
    self.count += 1
    u = self.inner.step(self._parts(grads), self._parts(params), **extra)
    return {k: u[k + ".re"] + 1j * u[k + ".im"] if k in self.complex else u[k] for k in grads}


class galore(R.Reference):
  """GaLore (Zhao et al. 2024, Algorithm 2) with decoupled weight decay.

  For a projected leaf as an m x n matrix G (axes ``dims`` = (reduction, output)):
      every T steps (t - 1 = 0, T, 2T, ...): U S V^T = svd(G),
          P = U[:, :r] if m <= n else V[:, :r]          (r = min(rank, m, n))
      R = P^T G  (or G P),   Rt = base(R)  (Adam's direction, moments in r-space)
      u = -lr (scale P Rt  (or scale Rt P^T) + wd p)
  The smaller side is reduced: Algorithm 2's left projector for m <= n, and the
  authors' proj_type "std" (right for a tall matrix).
  Other leaves: u = -lr (base(g) + wd p).
  """

  def __init__(self, learning_rate, rank=128, update_proj_gap=200, scale=1.0,
               weight_decay=0.0, dims=None, b1=0.9, b2=0.999):
    self.learning_rate, self.rank, self.scale = learning_rate, rank, scale
    self.gap = update_proj_gap
    self.weight_decay, self.dims_given = weight_decay, dims
    self.base = R.scale_by_adam(b1, b2)

  def init(self, params):
    self.count = 0
    self.dims = (self.dims_given if self.dims_given is not None else
                 {k: (0, 1) if np.ndim(v) == 2 else None for k, v in params.items()})
    self.P = {}
    self.base.init({k: np.zeros(self._low_rank_shape(k, np.shape(v)))
                    for k, v in params.items()})

  def _matrix(self, k, shape):
    red, out = _axes(self.dims[k][0], len(shape)), _axes(self.dims[k][1], len(shape))
    m, n = math.prod(shape[a] for a in red), math.prod(shape[a] for a in out)
    return red + out, m, n

  def _low_rank_shape(self, k, shape):
    if self.dims.get(k) is None:
      return shape
    _, m, n = self._matrix(k, shape)
    r = min(self.rank, m, n)
    return (r, n) if m <= n else (m, r)

  def step(self, grads, params, **extra):
    self.count += 1
    low, geo = {}, {}
    for k, g in grads.items():
      g = R._f64(g)
      if self.dims.get(k) is None:
        low[k] = g
        continue
      order, m, n = self._matrix(k, g.shape)
      G = np.transpose(g, order).reshape(m, n)
      r = min(self.rank, m, n)
      if (self.count - 1) % self.gap == 0:
        U, _, Vt = np.linalg.svd(G, full_matrices=False)
        self.P[k] = U[:, :r] if m <= n else Vt[:r].T
      P = self.P[k]
      low[k] = P.T @ G if m <= n else G @ P
      geo[k] = (order, m <= n)
    d = self.base.step(low, None)
    out = {}
    for k, g in grads.items():
      if k in geo:
        order, left = geo[k]
        P = self.P[k]
        full = P @ d[k] if left else d[k] @ P.T
        shape = [np.shape(g)[a] for a in order]
        full = self.scale * np.transpose(full.reshape(shape), np.argsort(order))
      else:
        full = d[k]
      out[k] = -self.sched(self.learning_rate) * (
          full + self.weight_decay * R._f64(params[k]))
    return out
