"""Independent numpy reference implementations of optimizer update rules.

Every class here re-derives one optimizer (or one gradient-transformation
primitive) from its paper's equations, written as a straightforward per-array
numpy computation in float64.  Where a paper leaves a choice open, or where
optax makes a different (documented) choice, the reference follows optax's
convention, so that a reference can be used as a test oracle for both gradtx
and optax.  The conventions that matter are spelled out in each docstring
(where ``eps`` sits, ``eps_root``, bias correction, the Nesterov variant,
whether weight decay is multiplied by the learning rate, masks, ...).

Interface (shared by every class, so tests can drive them from one table)::

    ref = reference.adam(learning_rate=0.1)  # same kwargs/defaults as optax
    ref.init(params)                         # params: dict name -> ndarray
    updates = ref.step(grads, params)        # dict name -> ndarray
    params = {k: params[k] + updates[k] for k in params}

``step`` returns the *updates to be added to the parameters*: for the
optimizer aliases they already include ``-learning_rate``; for the primitives
(``clip``, ``ema``, ``scale_by_adam``, ...) they are exactly what the optax
transformation of the same name outputs (no sign flip).

Shared conventions
------------------
* ``t`` is the 1-based step number (``t = 1`` on the first call to ``step``);
  all bias corrections use ``1 - beta**t``.
* Schedules: any ``learning_rate`` (and schedulable weight decay / scaling)
  may be a callable; like optax it is evaluated at ``count = t - 1`` (the number
  of previous updates), i.e. ``learning_rate(0)`` on the first step.
* Masks (``mask``, ``weight_decay_mask``, ``trust_ratio_mask``): ``None``
  (everything), a bool, a dict ``name -> bool`` or a callable returning one of
  those.  ``True`` leaves get the masked component (e.g. the weight decay);
  ``False`` leaves pass through that component unchanged -- the rest of the
  optimizer still applies to them, exactly like ``optax.masked`` inside a
  chain.  Callables are evaluated on the params dict (optax evaluates them on
  the updates tree in ``update``; the two agree for masks that depend on the
  names / shapes only, which is what masks are for).
* ``mu_dtype``, ``accumulator_dtype``, ``dtype_momentum`` are accepted for
  signature compatibility and ignored: the references always accumulate in
  float64.
* ``sign(0) = 0`` (numpy / jax convention).

Complex parameters
------------------
Every reference but ``rprop`` and ``sm3`` (and the primitive ``clip``), which are
defined for real numbers only and raise ``ValueError``, also takes complex leaves
(computed in complex128), with optax's convention: the gradients passed to
``step`` are the *conjugated* gradients ``conj(jax.grad(loss)(params))`` of a
real loss, so that ``-lr * g`` descends as for real numbers.  Then

* second moments average ``|g|^2 = (g conj(g)).real`` (real, never ``g^2``);
  ``g_t^2`` in a docstring means ``|g_t|^2`` for complex ``g_t``;
* norms, RMS and sums of squares use ``|x|``: ``||x||^2 = sum |x|^2``;
* ``sign(z) = z / |z|`` (``sign(0) = 0``), as ``jnp.sign`` computes it;
* first moments, momentum buffers and updates are complex.

Quantities that are real by definition (second moments, maxima, norms) are
kept as real float64 arrays in the references' states; optax (and gradtx)
store them in the parameters' complex dtype, with a zero imaginary part.
On real arrays each formula reduces to exactly the real one (same values).

Where a reference deliberately differs from optax 0.2.8
-------------------------------------------------------
* ``adadelta``: default ``learning_rate=1.0`` and always ``-lr * step``;
  ``optax.adadelta()`` (``learning_rate=None``) returns ``+step`` (ascends).
* ``rprop``: follows the paper (iRprop-); optax emits the previous step's
  update (a one-step lag, first update all zeros).  The reference's update
  equals ``-state.prev_updates`` of optax's ``scale_by_rprop``.
* ``sm3``: scalar leaves are handled (as rank-1); optax raises IndexError.
* ``adafactor``: beta2_t in float64; optax computes it in float32.
* ``optimistic_adam`` is the deprecated v1 that ``optax.optimistic_adam``
  still names; ``optimistic_adam_v2`` mirrors ``optax.optimistic_adam_v2``.
* ``polyak_sgd`` follows optax's code, not its docstring, when scaling != 1.
* Complex leaves (tests/test_complex.py): ``adadelta`` averages ``|g|^2`` and
  ``|dx|^2``; optax's ``scale_by_adadelta`` averages the complex squares
  ``g**2`` and ``dx**2`` (``tree.update_moment(..., order=2)``), which turns
  its step away from ``-g``.  ``adafactor(momentum=...)``: optax keeps the
  momentum of a complex leaf in the real ``dtype_momentum`` (float32),
  dropping its imaginary part; the reference keeps it complex.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = [
    # base
    "Reference",
    # optimizer aliases
    "sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam",
    "nadamw", "amsgrad", "adamax", "adamaxw", "lion", "lamb", "lars", "radam",
    "adabelief", "yogi", "novograd", "adan", "sign_sgd", "signum", "rprop",
    "sm3", "fromage", "adafactor", "polyak_sgd", "optimistic_gradient_descent",
    "optimistic_adam", "optimistic_adam_v2",
    # primitives
    "clip_by_global_norm", "clip", "clip_by_block_rms", "add_decayed_weights",
    "add_l1", "ema", "trace", "scale", "scale_by_learning_rate",
    "scale_by_sign", "scale_by_lion", "scale_by_rms", "scale_by_stddev", "scale_by_rss",
    "scale_by_adam", "scale_by_trust_ratio", "scale_by_param_block_rms",
    "scale_by_sm3",
    # table
    "OPTIMIZERS", "PRIMITIVES",
]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def _wide(x) -> np.dtype:
  """float64, or complex128 for a complex ``x``."""
  return np.dtype(np.complex128 if np.iscomplexobj(x) else np.float64)


def _f64(x) -> np.ndarray:
  """``x`` in float64 (complex128 if complex); a copy: never aliases ``x``."""
  return np.array(x, dtype=_wide(x))


def _tree_f64(tree: dict) -> dict:
  """``_f64`` of each leaf: float64 (complex128 for a complex leaf) copies."""
  return {k: _f64(v) for k, v in tree.items()}


def _abs2(x) -> np.ndarray:
  """|x|^2 elementwise, always real: x^2 for real x, (x conj(x)).real else."""
  x = np.asarray(x)
  return (x * np.conj(x)).real if np.iscomplexobj(x) else np.square(x)


def _scaled_abs2(c, x) -> np.ndarray:
  """c |x|^2, real, computed as (c x) conj(x): for real x exactly the real
  rules' ``c * x * x`` (the same rounding)."""
  return np.real(c * x * np.conj(x))


def _sign(x) -> np.ndarray:
  """sign(x), with sign(z) = z / |z| for complex z (0 at 0), as jnp.sign."""
  if not np.iscomplexobj(x):
    return np.sign(x)
  r = np.abs(x)
  return np.where(r > 0, x / np.where(r > 0, r, 1.0), 0.0)


def _zeros(p: np.ndarray, value: float = 0.0) -> np.ndarray:
  """A *real* float64 array shaped like ``p``, filled with ``value``: the
  state of a quantity that is real even for complex parameters (|g|^2)."""
  return np.full(np.shape(p), value, dtype=np.float64)


def _norm(x: np.ndarray) -> float:
  """Euclidean (Frobenius) norm of the flattened array: sqrt(sum |x|^2)."""
  return float(np.sqrt(np.sum(_abs2(x))))


def _tree_sq_norm(tree: dict) -> float:
  """The squared global norm of a tree: sum over its leaves of sum |x|^2."""
  return sum(float(np.sum(_abs2(x))) for x in tree.values())


def _rms(x: np.ndarray) -> float:
  """sqrt(mean |x|^2)."""
  return float(np.sqrt(np.mean(_abs2(x))))


def _resolve_mask(mask, tree: dict) -> dict:
  """Turns an optax-style mask into a dict name -> bool."""
  if mask is None:
    return {k: True for k in tree}
  if callable(mask):
    mask = mask(tree)
  if isinstance(mask, (bool, np.bool_)):
    return {k: bool(mask) for k in tree}
  return {k: bool(mask[k]) for k in tree}


# ----------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------

class Reference:
  """Base class.

  Subclasses implement ``init_leaf`` and ``update_leaf`` per array; named
  hyperparameters are constructor kwargs with optax's defaults.  Rules that
  need the whole tree (global-norm clipping, Polyak step size) override
  ``step`` instead.

  Inside ``update_leaf``:
    * ``self.t`` is the 1-based step number, shared by all leaves;
    * ``self.sched(x)`` evaluates a (possibly callable) hyperparameter at
      ``count = t - 1``, like optax's schedules.
  """

  count: int = 0

  # -- per-leaf hooks -----------------------------------------------------
  def init_leaf(self, param: np.ndarray) -> dict:
    """Returns the (mutable) state dict of one leaf."""
    del param
    return {}

  def update_leaf(self, name: str, g: np.ndarray, p: np.ndarray,
                  s: dict) -> np.ndarray:
    """Returns the update of one leaf; mutates its state ``s`` in place."""
    raise NotImplementedError

  def begin_step(self, grads: dict, params: dict, **extra) -> None:
    """Hook run once per step before the per-leaf loop (e.g. masks)."""
    del grads, params, extra

  # -- public interface ---------------------------------------------------
  def init(self, params: dict[str, np.ndarray]) -> None:
    params = _tree_f64(params)
    self.count = 0
    self.state = {k: self.init_leaf(p) for k, p in params.items()}

  def step(self, grads: dict[str, np.ndarray], params: dict[str, np.ndarray],
           **extra) -> dict[str, np.ndarray]:
    """Returns the updates (to be ADDED to params) and advances the state."""
    grads = _tree_f64(grads)
    if params is None:  # fine for rules that do not read the params
      params = {k: None for k in grads}
    else:
      params = {k: _f64(params[k]) for k in grads}
    self.count += 1
    self.begin_step(grads, params, **extra)
    out = {}
    for k in grads:
      u = self.update_leaf(k, grads[k], params[k], self.state[k])
      dtype = np.result_type(_wide(grads[k]), _wide(params[k]))
      out[k] = np.asarray(u, dtype=dtype).reshape(grads[k].shape)
    return out

  # -- helpers ------------------------------------------------------------
  @property
  def t(self) -> int:
    return self.count

  def sched(self, value):
    if callable(value):
      return float(np.asarray(value(self.count - 1)))
    return value

  def __repr__(self):
    hp = {k: v for k, v in vars(self).items()
          if k not in ("state", "count") and not k.startswith("_")}
    return f"{type(self).__name__}({hp})"


def _adam_direction(s: dict, g: np.ndarray, t: int, b1, b2, eps, eps_root,
                    nesterov: bool) -> np.ndarray:
  """Adam's preconditioned direction (Kingma & Ba, Alg. 1), optax's eps.

    m_t = b1 m_{t-1} + (1-b1) g_t
    v_t = b2 v_{t-1} + (1-b2) g_t^2
    mhat = m_t / (1-b1^t)
         (nesterov: b1 m_t / (1-b1^(t+1)) + (1-b1) g_t / (1-b1^t))
    vhat = v_t / (1-b2^t)
    d_t  = mhat / (sqrt(vhat + eps_root) + eps)
  """
  s["m"] = b1 * s["m"] + (1.0 - b1) * g
  s["v"] = b2 * s["v"] + _scaled_abs2(1.0 - b2, g)
  if nesterov:
    mhat = (b1 * s["m"] / (1.0 - b1 ** (t + 1))
            + (1.0 - b1) * g / (1.0 - b1 ** t))
  else:
    mhat = s["m"] / (1.0 - b1 ** t)
  vhat = s["v"] / (1.0 - b2 ** t)
  return mhat / (np.sqrt(vhat + eps_root) + eps)


def _adam_state(p):
  return {"m": np.zeros_like(p), "v": _zeros(p)}


# ============================================================================
# SGD family
# ============================================================================

class sgd(Reference):
  """Stochastic gradient descent, optionally with (Nesterov) momentum.

  Without momentum:   u_t = -lr_t g_t
  With momentum mu (heavy ball, "trace" form, v_0 = 0):
      v_t = g_t + mu v_{t-1}
      u_t = -lr_t v_t                     (nesterov=False)
      u_t = -lr_t (g_t + mu v_t)          (nesterov=True, Sutskever form)
  The momentum buffer accumulates raw gradients; the learning rate is applied
  afterwards (optax: trace -> scale_by_learning_rate).

  References: Polyak, "Some methods of speeding up the convergence of
  iteration methods", 1964; Sutskever et al., "On the importance of
  initialization and momentum in deep learning", ICML 2013.
  """

  def __init__(self, learning_rate, momentum: Optional[float] = None,
               nesterov: bool = False, accumulator_dtype: Any = None):
    self.learning_rate = learning_rate
    self.momentum = momentum
    self.nesterov = nesterov

  def init_leaf(self, p):
    return {"v": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    lr = self.sched(self.learning_rate)
    if self.momentum is None:
      return -lr * g
    mu = self.momentum
    s["v"] = g + mu * s["v"]
    d = g + mu * s["v"] if self.nesterov else s["v"]
    return -lr * d


class adagrad(Reference):
  """Adagrad (diagonal), optax's convention: eps inside the square root.

      G_t = G_{t-1} + g_t^2,      G_0 = initial_accumulator_value
      u_t = -lr_t g_t / sqrt(G_t + eps)     (0 where G_t == 0)
  The paper writes g / (sqrt(G) + eps) (eps outside); optax puts eps inside
  the root and starts the accumulator at ``initial_accumulator_value``.

  Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online
  Learning and Stochastic Optimization", JMLR 2011.
  """

  def __init__(self, learning_rate, initial_accumulator_value: float = 0.1,
               eps: float = 1e-7):
    self.learning_rate = learning_rate
    self.initial_accumulator_value = initial_accumulator_value
    self.eps = eps

  def init_leaf(self, p):
    return {"G": _zeros(p, self.initial_accumulator_value)}

  def update_leaf(self, name, g, p, s):
    s["G"] = s["G"] + _abs2(g)
    G = s["G"]
    safe = np.where(G > 0, G, 1.0)
    inv = np.where(G > 0, 1.0 / np.sqrt(safe + self.eps), 0.0)
    return -self.sched(self.learning_rate) * g * inv


class rmsprop(Reference):
  """RMSProp (optionally centered, optionally with momentum).

      v_t = decay v_{t-1} + (1-decay) g_t^2,        v_0 = initial_scale
      centered:  mbar_t = decay mbar_{t-1} + (1-decay) g_t,  mbar_0 = 0
                 den_t  = v_t - mbar_t^2
      otherwise: den_t  = v_t
      bias_correction: v_t, mbar_t divided by (1 - decay^t) before use
      d_t = g_t / sqrt(den_t + eps)       (eps_in_sqrt=True, optax default)
      d_t = g_t / (sqrt(den_t) + eps)     (eps_in_sqrt=False)
      s_t = -lr_t d_t
      no momentum:  u_t = s_t
      momentum mu:  b_t = s_t + mu b_{t-1};  u_t = b_t  (nesterov: s_t + mu b_t)
  Note that optax applies the learning rate *before* the momentum buffer
  (the buffer holds already-scaled steps, as in Tieleman & Hinton / TF).

  References: Tieleman & Hinton, Lecture 6.5 rmsprop, COURSERA 2012;
  Graves, "Generating Sequences With Recurrent Neural Networks", 2013
  (centered variant).
  """

  def __init__(self, learning_rate, decay: float = 0.9, eps: float = 1e-8,
               initial_scale: float = 0.0, eps_in_sqrt: bool = True,
               centered: bool = False, momentum: Optional[float] = None,
               nesterov: bool = False, bias_correction: bool = False):
    self.learning_rate = learning_rate
    self.decay = decay
    self.eps = eps
    self.initial_scale = initial_scale
    self.eps_in_sqrt = eps_in_sqrt
    self.centered = centered
    self.momentum = momentum
    self.nesterov = nesterov
    self.bias_correction = bias_correction

  def init_leaf(self, p):
    return {"v": _zeros(p, self.initial_scale),
            "mbar": np.zeros_like(p), "b": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    rho = self.decay
    s["v"] = rho * s["v"] + _scaled_abs2(1.0 - rho, g)
    s["mbar"] = rho * s["mbar"] + (1.0 - rho) * g
    v, mbar = s["v"], s["mbar"]
    if self.bias_correction:
      v = v / (1.0 - rho ** self.t)
      mbar = mbar / (1.0 - rho ** self.t)
    den = v - _abs2(mbar) if self.centered else v
    if self.eps_in_sqrt:
      d = g / np.sqrt(den + self.eps)
    else:
      d = g / (np.sqrt(den) + self.eps)
    step = -self.sched(self.learning_rate) * d
    if self.momentum is None:
      return step
    s["b"] = step + self.momentum * s["b"]
    return step + self.momentum * s["b"] if self.nesterov else s["b"]


class adadelta(Reference):
  """Adadelta, returning a *descent* step.

      gw_t  = g_t + wd_t p_t                        (coupled L2, masked)
      Eg_t  = rho Eg_{t-1} + (1-rho) gw_t^2
      dx_t  = sqrt(Ex_{t-1} + eps) / sqrt(Eg_t + eps) * gw_t
      Ex_t  = rho Ex_{t-1} + (1-rho) dx_t^2
      u_t   = -lr_t dx_t

  The paper's update is x <- x - dx (i.e. lr = 1).  Here the default is
  ``learning_rate=1.0`` and the step is always ``-learning_rate * dx``
  (``learning_rate=None`` is treated as 1.0).  NOTE: optax's default
  ``learning_rate=None`` does *not* flip the sign (its
  ``scale_by_learning_rate(None)`` is the identity), so ``optax.adadelta()``
  returns ``+dx`` and ascends; ``optax.adadelta(learning_rate=1.0)`` matches
  this reference.  As in optax, Ex accumulates the un-scaled ``dx`` (the
  learning rate is applied afterwards).

  Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.
  """

  def __init__(self, learning_rate=1.0, rho: float = 0.9, eps: float = 1e-6,
               weight_decay=0.0, weight_decay_mask=None):
    self.learning_rate = 1.0 if learning_rate is None else learning_rate
    self.rho = rho
    self.eps = eps
    self.weight_decay = weight_decay
    self.weight_decay_mask = weight_decay_mask

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.weight_decay_mask, params)

  def init_leaf(self, p):
    return {"Eg": _zeros(p), "Ex": _zeros(p)}

  def update_leaf(self, name, g, p, s):
    if self._mask[name]:
      g = g + self.sched(self.weight_decay) * p
    rho, eps = self.rho, self.eps
    s["Eg"] = rho * s["Eg"] + _scaled_abs2(1.0 - rho, g)
    dx = np.sqrt(s["Ex"] + eps) / np.sqrt(s["Eg"] + eps) * g
    s["Ex"] = rho * s["Ex"] + _scaled_abs2(1.0 - rho, dx)
    return -self.sched(self.learning_rate) * dx


# ============================================================================
# Adam family
# ============================================================================

class adam(Reference):
  """Adam (optionally with optax's Nesterov/NAdam variant).

      m_t  = b1 m_{t-1} + (1-b1) g_t
      v_t  = b2 v_{t-1} + (1-b2) g_t^2
      mhat = m_t / (1-b1^t)
      (nesterov: mhat = b1 m_t / (1-b1^(t+1)) + (1-b1) g_t / (1-b1^t))
      vhat = v_t / (1-b2^t)
      u_t  = -lr_t mhat / (sqrt(vhat + eps_root) + eps)
  ``eps`` outside the root (as in the paper), ``eps_root`` inside it.
  The Nesterov variant is optax's simplified NAdam (constant b1, no momentum
  schedule), not Dozat's full momentum-decay schedule.

  References: Kingma & Ba, "Adam: A Method for Stochastic Optimization",
  ICLR 2015; Dozat, "Incorporating Nesterov Momentum into Adam", 2016.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8, eps_root: float = 0.0, mu_dtype: Any = None,
               *, nesterov: bool = False):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.nesterov = nesterov

  def init_leaf(self, p):
    return _adam_state(p)

  def update_leaf(self, name, g, p, s):
    d = _adam_direction(s, g, self.t, self.b1, self.b2, self.eps,
                        self.eps_root, self.nesterov)
    return -self.sched(self.learning_rate) * d


class adamw(Reference):
  """AdamW: Adam with decoupled weight decay (multiplied by the lr).

      d_t = Adam direction (see ``adam``; Nesterov variant if nesterov=True)
      u_t = -lr_t (d_t + wd_t p_t)          (wd term only on masked leaves)
  As in optax/PyTorch the weight decay is multiplied by the full learning
  rate; Loshchilov & Hutter multiply it only by the schedule multiplier.

  Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
  ICLR 2019.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8, eps_root: float = 0.0, mu_dtype: Any = None,
               weight_decay=1e-4, mask=None, *, nesterov: bool = False):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.weight_decay = weight_decay
    self.mask = mask
    self.nesterov = nesterov

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.mask, params)

  def init_leaf(self, p):
    return _adam_state(p)

  def update_leaf(self, name, g, p, s):
    d = _adam_direction(s, g, self.t, self.b1, self.b2, self.eps,
                        self.eps_root, self.nesterov)
    if self._mask[name]:
      d = d + self.sched(self.weight_decay) * p
    return -self.sched(self.learning_rate) * d


class nadam(adam):
  """NAdam: ``adam`` with ``nesterov=True`` (optax's simplified NAdam).

      mhat = b1 m_t / (1-b1^(t+1)) + (1-b1) g_t / (1-b1^t)
      u_t  = -lr_t mhat / (sqrt(v_t/(1-b2^t) + eps_root) + eps)

  Reference: Dozat, "Incorporating Nesterov Momentum into Adam", 2016.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8, eps_root: float = 0.0, mu_dtype: Any = None,
               *, nesterov: bool = True):
    super().__init__(learning_rate, b1, b2, eps, eps_root, mu_dtype,
                     nesterov=nesterov)


class nadamw(adamw):
  """NAdamW: ``adamw`` with ``nesterov=True``.

      u_t = -lr_t (nadam_direction_t + wd_t p_t)

  References: Dozat 2016; Loshchilov & Hutter, ICLR 2019.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8, eps_root: float = 0.0, mu_dtype: Any = None,
               weight_decay=1e-4, mask=None, *, nesterov: bool = True):
    super().__init__(learning_rate, b1, b2, eps, eps_root, mu_dtype,
                     weight_decay, mask, nesterov=nesterov)


class amsgrad(Reference):
  """AMSGrad, optax's convention (max over the *bias-corrected* v).

      m_t    = b1 m_{t-1} + (1-b1) g_t
      v_t    = b2 v_{t-1} + (1-b2) g_t^2
      mhat   = m_t / (1-b1^t)        (if bias_correction_mu, else m_t)
      vhat   = v_t / (1-b2^t)        (if bias_correction_nu, else v_t)
      vmax_t = max(vmax_{t-1}, vhat),  vmax_0 = 0
      u_t    = -lr_t mhat / (sqrt(vmax_t + eps_root) + eps)
  The paper uses no bias correction; pass both flags False to get it.

  Reference: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond",
  ICLR 2018.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8, eps_root: float = 0.0, mu_dtype: Any = None,
               bias_correction_mu: bool = True,
               bias_correction_nu: bool = True):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.bias_correction_mu = bias_correction_mu
    self.bias_correction_nu = bias_correction_nu

  def init_leaf(self, p):
    return {"m": np.zeros_like(p), "v": _zeros(p), "vmax": _zeros(p)}

  def update_leaf(self, name, g, p, s):
    b1, b2, t = self.b1, self.b2, self.t
    s["m"] = b1 * s["m"] + (1.0 - b1) * g
    s["v"] = b2 * s["v"] + _scaled_abs2(1.0 - b2, g)
    mhat = s["m"] / (1.0 - b1 ** t) if self.bias_correction_mu else s["m"]
    vhat = s["v"] / (1.0 - b2 ** t) if self.bias_correction_nu else s["v"]
    s["vmax"] = np.maximum(s["vmax"], vhat)
    d = mhat / (np.sqrt(s["vmax"] + self.eps_root) + self.eps)
    return -self.sched(self.learning_rate) * d


class adamax(Reference):
  """AdaMax (Adam with the infinity norm), optax's eps placement.

      m_t = b1 m_{t-1} + (1-b1) g_t
      u_t' = max(b2 u_{t-1}', |g_t| + eps),     u_0' = 0
      d_t = (m_t / (1-b1^t)) / u_t'
      update = -lr_t d_t
  The paper has max(b2 u, |g|) with no eps; optax adds eps to |g| inside
  the max (so the denominator is never zero).

  Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization",
  ICLR 2015, Section 7.1.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps = b1, b2, eps

  def init_leaf(self, p):
    return {"m": np.zeros_like(p), "u": _zeros(p)}

  def direction(self, g, s):
    s["m"] = self.b1 * s["m"] + (1.0 - self.b1) * g
    s["u"] = np.maximum(self.b2 * s["u"], np.abs(g) + self.eps)
    return s["m"] / (1.0 - self.b1 ** self.t) / s["u"]

  def update_leaf(self, name, g, p, s):
    return -self.sched(self.learning_rate) * self.direction(g, s)


class adamaxw(adamax):
  """AdaMaxW: AdaMax with decoupled weight decay (multiplied by the lr).

      update = -lr_t (adamax_direction_t + wd_t p_t)   (wd on masked leaves)

  References: Kingma & Ba 2015 (Sec. 7.1); Loshchilov & Hutter, ICLR 2019.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8, weight_decay=1e-4, mask=None):
    super().__init__(learning_rate, b1, b2, eps)
    self.weight_decay = weight_decay
    self.mask = mask

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.mask, params)

  def update_leaf(self, name, g, p, s):
    d = self.direction(g, s)
    if self._mask[name]:
      d = d + self.sched(self.weight_decay) * p
    return -self.sched(self.learning_rate) * d


class radam(Reference):
  """Rectified Adam.

      m_t, v_t as in Adam; mhat (or the Nesterov mhat), vhat bias-corrected
      rho_inf = 2/(1-b2) - 1
      rho_t   = rho_inf - 2 t b2^t / (1-b2^t)
      if rho_t >= threshold:
          r_t = sqrt((rho_t-4)(rho_t-2) rho_inf
                     / ((rho_inf-4)(rho_inf-2) rho_t))
          d_t = r_t mhat / (sqrt(vhat + eps_root) + eps)
      else:
          d_t = mhat                        (un-adapted momentum SGD step)
      u_t = -lr_t d_t
  The paper switches on rho_t > 4; optax (and this reference) use
  ``rho_t >= threshold`` with threshold=5 by default.

  Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and
  Beyond", ICLR 2020.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8, eps_root: float = 0.0,
               threshold: float = 5.0, *, nesterov: bool = False):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.threshold = threshold
    self.nesterov = nesterov

  def init_leaf(self, p):
    return _adam_state(p)

  def update_leaf(self, name, g, p, s):
    b1, b2, t = self.b1, self.b2, self.t
    s["m"] = b1 * s["m"] + (1.0 - b1) * g
    s["v"] = b2 * s["v"] + _scaled_abs2(1.0 - b2, g)
    if self.nesterov:
      mhat = (b1 * s["m"] / (1.0 - b1 ** (t + 1))
              + (1.0 - b1) * g / (1.0 - b1 ** t))
    else:
      mhat = s["m"] / (1.0 - b1 ** t)
    vhat = s["v"] / (1.0 - b2 ** t)
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * t * b2 ** t / (1.0 - b2 ** t)
    if rho_t >= self.threshold:
      r = np.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                  / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
      d = r * mhat / (np.sqrt(vhat + self.eps_root) + self.eps)
    else:
      d = mhat
    return -self.sched(self.learning_rate) * d


class adabelief(Reference):
  """AdaBelief.

      m_t  = b1 m_{t-1} + (1-b1) g_t
      s_t  = b2 s_{t-1} + (1-b2) (g_t - m_t)^2 + eps_root     (stored so)
      mhat = m_t / (1-b1^t)     (Nesterov variant as in ``adam``)
      shat = s_t / (1-b2^t)
      u_t  = -lr_t mhat / (sqrt(shat) + eps)
  optax defaults eps = eps_root = 1e-16 (the paper's defaults are eps=1e-8
  outside, and the eps added to s_t, here eps_root).

  Reference: Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the
  Belief in Observed Gradients", NeurIPS 2020.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-16, eps_root: float = 1e-16, *,
               nesterov: bool = False):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.nesterov = nesterov

  def init_leaf(self, p):
    return {"m": np.zeros_like(p), "s": _zeros(p)}

  def update_leaf(self, name, g, p, s):
    b1, b2, t = self.b1, self.b2, self.t
    s["m"] = b1 * s["m"] + (1.0 - b1) * g
    s["s"] = b2 * s["s"] + (1.0 - b2) * _abs2(g - s["m"]) + self.eps_root
    if self.nesterov:
      mhat = (b1 * s["m"] / (1.0 - b1 ** (t + 1))
              + (1.0 - b1) * g / (1.0 - b1 ** t))
    else:
      mhat = s["m"] / (1.0 - b1 ** t)
    shat = s["s"] / (1.0 - b2 ** t)
    return -self.sched(self.learning_rate) * mhat / (np.sqrt(shat) + self.eps)


class yogi(Reference):
  """Yogi.

      m_t  = b1 m_{t-1} + (1-b1) g_t,        m_0 = initial_accumulator_value
      v_t  = v_{t-1} - (1-b2) sign(v_{t-1} - g_t^2) g_t^2,
                                             v_0 = initial_accumulator_value
      mhat = m_t / (1-b1^t);  vhat = v_t / (1-b2^t)
      u_t  = -lr_t mhat / (sqrt(vhat + eps_root) + eps)
  optax initialises *both* moments to ``initial_accumulator_value`` (1e-6)
  and bias-corrects them; the paper starts m at 0, v at a small constant, and
  uses no bias correction.  ``eps_root`` and ``initial_accumulator_value``
  are ``optax.scale_by_yogi`` arguments (``optax.yogi`` uses their defaults).

  Reference: Zaheer et al., "Adaptive Methods for Nonconvex Optimization",
  NeurIPS 2018.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-3, *, eps_root: float = 0.0,
               initial_accumulator_value: float = 1e-6):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.initial_accumulator_value = initial_accumulator_value

  def init_leaf(self, p):
    return {"m": np.full_like(p, self.initial_accumulator_value),
            "v": _zeros(p, self.initial_accumulator_value)}

  def update_leaf(self, name, g, p, s):
    b1, b2, t = self.b1, self.b2, self.t
    g2 = _abs2(g)
    s["m"] = b1 * s["m"] + (1.0 - b1) * g
    s["v"] = s["v"] - (1.0 - b2) * np.sign(s["v"] - g2) * g2
    mhat = s["m"] / (1.0 - b1 ** t)
    vhat = s["v"] / (1.0 - b2 ** t)
    d = mhat / (np.sqrt(vhat + self.eps_root) + self.eps)
    return -self.sched(self.learning_rate) * d


class lion(Reference):
  """Lion (EvoLved Sign Momentum).

      c_t = sign((1-b1) g_t + b1 m_{t-1})
      m_t = b2 m_{t-1} + (1-b2) g_t
      u_t = -lr_t (c_t + wd_t p_t)          (wd term only on masked leaves)

  Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms",
  NeurIPS 2023.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.99,
               mu_dtype: Any = None, weight_decay=1e-3, mask=None):
    self.learning_rate = learning_rate
    self.b1, self.b2 = b1, b2
    self.weight_decay = weight_decay
    self.mask = mask

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.mask, params)

  def init_leaf(self, p):
    return {"m": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    c = _sign((1.0 - self.b1) * g + self.b1 * s["m"])
    s["m"] = self.b2 * s["m"] + (1.0 - self.b2) * g
    if self._mask[name]:
      c = c + self.sched(self.weight_decay) * p
    return -self.sched(self.learning_rate) * c


def _trust_ratio(p, u, *, min_norm=0.0, trust_coefficient=1.0, eps=0.0):
  """optax's layer-wise trust ratio: tc ||p|| / (||u|| + eps), with norms
  floored at ``min_norm`` and the ratio set to 1 if either norm is zero."""
  pn = max(_norm(p), min_norm)
  un = max(_norm(u), min_norm)
  if pn == 0.0 or un == 0.0:
    return 1.0
  return trust_coefficient * pn / (un + eps)


class lamb(Reference):
  """LAMB: layer-wise adaptive Adam.

      d_t = Adam direction (bias-corrected, eps outside, eps_root inside)
      r_t = d_t + wd_t p_t                         (wd on masked leaves)
      phi = ||p_t|| / ||r_t||   per leaf (1 if either norm is 0)
      u_t = -lr_t phi r_t

  Reference: You et al., "Large Batch Optimization for Deep Learning:
  Training BERT in 76 minutes", ICLR 2020.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-6, eps_root: float = 0.0, weight_decay=0.0,
               mask=None):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.weight_decay = weight_decay
    self.mask = mask

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.mask, params)

  def init_leaf(self, p):
    return _adam_state(p)

  def update_leaf(self, name, g, p, s):
    r = _adam_direction(s, g, self.t, self.b1, self.b2, self.eps,
                        self.eps_root, False)
    if self._mask[name]:
      r = r + self.sched(self.weight_decay) * p
    return -self.sched(self.learning_rate) * _trust_ratio(p, r) * r


class lars(Reference):
  """LARS: layer-wise adaptive rate scaling with momentum, optax's form.

      r_t   = g_t + wd_t p_t                            (weight_decay_mask)
      r_t  <- tc ||p_t|| / (||r_t|| + eps) * r_t        (trust_ratio_mask;
               ratio 1 when ||p_t|| or ||r_t|| is 0)
      s_t   = -lr_t r_t
      b_t   = s_t + mu b_{t-1}
      u_t   = b_t                (nesterov: s_t + mu b_t)
  The paper's local lr is tc ||w|| / (||g|| + wd ||w||); optax (and this
  reference) use the norm of the decayed gradient ||g + wd w|| plus an
  additive eps.

  Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional
  Networks", 2017.
  """

  def __init__(self, learning_rate, weight_decay=0.0,
               weight_decay_mask=True, trust_coefficient: float = 0.001,
               eps: float = 0.0, trust_ratio_mask=True,
               momentum: float = 0.9, nesterov: bool = False):
    self.learning_rate = learning_rate
    self.weight_decay = weight_decay
    self.weight_decay_mask = weight_decay_mask
    self.trust_coefficient = trust_coefficient
    self.eps = eps
    self.trust_ratio_mask = trust_ratio_mask
    self.momentum = momentum
    self.nesterov = nesterov

  def begin_step(self, grads, params, **extra):
    self._wd_mask = _resolve_mask(self.weight_decay_mask, params)
    self._tr_mask = _resolve_mask(self.trust_ratio_mask, params)

  def init_leaf(self, p):
    return {"b": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    r = g
    if self._wd_mask[name]:
      r = r + self.sched(self.weight_decay) * p
    if self._tr_mask[name]:
      r = _trust_ratio(p, r, trust_coefficient=self.trust_coefficient,
                       eps=self.eps) * r
    step = -self.sched(self.learning_rate) * r
    s["b"] = step + self.momentum * s["b"]
    return step + self.momentum * s["b"] if self.nesterov else s["b"]


class novograd(Reference):
  """NovoGrad: layer-wise second moment, gradient normalised before momentum.

      n_t = ||g_t||^2                                   (t = 1)
      n_t = b2 n_{t-1} + (1-b2) ||g_t||^2               (t > 1)  (per leaf)
      q_t = g_t / (sqrt(n_t + eps_root) + eps) + wd p_t
      m_t = q_t (t = 1);   m_t = b1 m_{t-1} + q_t (t > 1)
      u_t = -lr_t m_t
  (no (1-b1) factor on the new term, as in the paper.) The paper's Algorithm 1
  has one epsilon, inside the root: g_t / sqrt(n_t + eps), which is eps = 0,
  eps_root = eps here; optax's eps is outside.

  Reference: Ginsburg et al., "Stochastic Gradient Methods with Layer-wise
  Adaptive Moments for Training of Deep Networks", 2019.
  """

  def __init__(self, learning_rate, b1: float = 0.9, b2: float = 0.25,
               eps: float = 1e-6, eps_root: float = 0.0, weight_decay=0.0):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.weight_decay = weight_decay

  def init_leaf(self, p):
    return {"m": np.zeros_like(p), "n": 0.0}

  def update_leaf(self, name, g, p, s):
    sq = float(np.sum(_abs2(g)))
    s["n"] = sq if self.t == 1 else self.b2 * s["n"] + (1.0 - self.b2) * sq
    q = g / (np.sqrt(s["n"] + self.eps_root) + self.eps) + self.weight_decay * p
    s["m"] = q if self.t == 1 else self.b1 * s["m"] + q
    return -self.sched(self.learning_rate) * s["m"]


class adan(Reference):
  """Adan (adaptive Nesterov momentum), Algorithm 1 in optax's parametrization.

      dg_t = g_t - g_{t-1}     (dg_1 = 0)
      m_t  = b1 m_{t-1} + (1-b1) g_t
      v_t  = b2 v_{t-1} + (1-b2) dg_t
      n_t  = b3 n_{t-1} + (1-b3) (g_t + b2 dg_t)^2
      mhat, vhat, nhat = m/(1-b1^t), v/(1-b2^t), n/(1-b3^t)
      d_t  = (mhat + b2 vhat) / (sqrt(nhat + eps_root) + eps)
      u_t  = -lr_t (d_t + wd_t p_t)                (wd on masked leaves)
  optax's b's are the paper's (1 - beta)'s: the paper's (1 - beta_2) weight on
  the gradient difference is b2 (optax 0.2.8 writes 1 - b2 there, its slip).
  optax uses decoupled additive weight decay instead of the paper's proximal
  (1 + lr wd)^-1 rescaling; so does gradtx.

  Reference: Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for
  Faster Optimizing Deep Models", 2022.
  """

  def __init__(self, learning_rate, b1: float = 0.98, b2: float = 0.92,
               b3: float = 0.99, eps: float = 1e-8, eps_root: float = 1e-8,
               weight_decay=0.0, mask=None):
    self.learning_rate = learning_rate
    self.b1, self.b2, self.b3 = b1, b2, b3
    self.eps, self.eps_root = eps, eps_root
    self.weight_decay = weight_decay
    self.mask = mask

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.mask, params)

  def init_leaf(self, p):
    z = np.zeros_like(p)
    return {"m": z.copy(), "v": z.copy(), "n": _zeros(p), "g_prev": z.copy()}

  def update_leaf(self, name, g, p, s):
    b1, b2, b3, t = self.b1, self.b2, self.b3, self.t
    dg = np.zeros_like(g) if t == 1 else g - s["g_prev"]
    s["g_prev"] = g
    s["m"] = b1 * s["m"] + (1.0 - b1) * g
    s["v"] = b2 * s["v"] + (1.0 - b2) * dg
    s["n"] = b3 * s["n"] + (1.0 - b3) * _abs2(g + b2 * dg)
    mhat = s["m"] / (1.0 - b1 ** t)
    vhat = s["v"] / (1.0 - b2 ** t)
    nhat = s["n"] / (1.0 - b3 ** t)
    d = (mhat + b2 * vhat) / (np.sqrt(nhat + self.eps_root) + self.eps)
    if self._mask[name]:
      d = d + self.sched(self.weight_decay) * p
    return -self.sched(self.learning_rate) * d


# ============================================================================
# sign-based / step-size-adaptation methods
# ============================================================================

class sign_sgd(Reference):
  """signSGD:  u_t = -lr_t sign(g_t).

  Reference: Bernstein et al., "signSGD: Compressed Optimisation for
  Non-Convex Problems", ICML 2018.
  """

  def __init__(self, learning_rate):
    self.learning_rate = learning_rate

  def update_leaf(self, name, g, p, s):
    return -self.sched(self.learning_rate) * _sign(g)


class signum(Reference):
  """Signum (sign of momentum).

      m_t = beta m_{t-1} + (1-beta) g_t      (no bias correction)
      u_t = -lr_t sign(m_t)

  Reference: Bernstein et al., "signSGD: Compressed Optimisation for
  Non-Convex Problems", ICML 2018.
  """

  def __init__(self, learning_rate, beta: float = 0.9,
               accumulator_dtype: Any = None):
    self.learning_rate = learning_rate
    self.beta = beta

  def init_leaf(self, p):
    return {"m": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    s["m"] = self.beta * s["m"] + (1.0 - self.beta) * g
    return -self.sched(self.learning_rate) * _sign(s["m"])


class rprop(Reference):
  """Rprop (iRprop- variant, as in PyTorch's ``torch.optim.Rprop``).

  Per element, with step sizes D_0 = learning_rate and stored previous
  gradient sign-carrier q_0 = 0:
      c_t = g_t * q_{t-1}
      c_t > 0:  D_t = clip(eta_plus  D_{t-1}, min_step_size, max_step_size)
      c_t < 0:  D_t = clip(eta_minus D_{t-1}, min_step_size, max_step_size)
      c_t = 0:  D_t = D_{t-1}
      q_t = 0 if c_t < 0 else D_t sign(g_t)      (iRprop-: forget after a flip)
      u_t = -q_t
  So the update of step t uses the gradient of step t, and the first step is
  ``-learning_rate * sign(g_1)``.  Real parameters only: the sign test
  ``c_t > 0`` has no complex counterpart (``init`` raises ValueError).

  DIFFERENCE FROM OPTAX 0.2.8: ``optax.scale_by_rprop`` computes the same
  q_t (stored in ``state.prev_updates``) but *emits* the previous step's
  value, ``where(c_t < 0, 0, q_{t-1})`` -- every update lags one step and the
  first update is all zeros (google-deepmind/optax PR #1725, "Fix
  scale_by_rprop returning a one-step-stale update").  This reference follows
  the paper; ``-optax_state.prev_updates`` equals this reference's update.

  References: Riedmiller & Braun, "A direct adaptive method for faster
  backpropagation learning: the RPROP algorithm", ICNN 1993; Igel & Huesken,
  "Improving the Rprop Learning Algorithm", 2000.
  """

  def __init__(self, learning_rate, eta_minus: float = 0.5,
               eta_plus: float = 1.2, min_step_size: float = 1e-6,
               max_step_size: float = 50.0):
    self.learning_rate = learning_rate
    self.eta_minus, self.eta_plus = eta_minus, eta_plus
    self.min_step_size, self.max_step_size = min_step_size, max_step_size

  def init_leaf(self, p):
    if np.iscomplexobj(p):  # c_t = g_t q_{t-1} > 0 has no complex meaning
      raise ValueError("rprop: defined for real parameters only")
    return {"D": np.full_like(p, self.learning_rate), "q": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    c = g * s["q"]
    grown = np.clip(s["D"] * self.eta_plus, self.min_step_size,
                    self.max_step_size)
    shrunk = np.clip(s["D"] * self.eta_minus, self.min_step_size,
                     self.max_step_size)
    s["D"] = np.where(c > 0, grown, np.where(c < 0, shrunk, s["D"]))
    s["q"] = np.where(c < 0, 0.0, s["D"] * np.sign(g))
    return -s["q"]


class scale_by_sm3(Reference):
  """SM3-II's direction, with momentum (optax's ``scale_by_sm3``; ``sm3`` below).

  For a leaf of rank r >= 2, one accumulator mu^(a) per axis a (length
  shape[a], zero-initialised).  Per element i = (i_1, ..., i_r):
      nu_t(i)   = c g_t(i)^2 + b2 min_a mu^(a)_{t-1}(i_a)
      mu^(a)_t(j) = max over elements i with i_a = j of nu_t(i)
  with c = 1 - b2, or c = 1 at b2 = 1 (the paper's sum, SM3-II).
  For rank <= 1 (including scalars) there is one accumulator per element
  (diagonal Adagrad):  nu_t = c g_t^2 + b2 nu_{t-1}.
      h_t = g_t / sqrt(nu_t + eps)   (0 where nu_t == 0)
      m_t = b1 m_{t-1} + (1-b1) h_t
      u_t = m_t
  ``b2 < 1`` (an exponential average in place of the sum) is optax's
  addition to the paper's rule.  Note: optax 0.2.8 raises an IndexError for
  scalar (rank-0) leaves; this reference treats them like rank-1 leaves.
  Real parameters only, as gradtx's ``scale_by_sm3`` (``init`` raises
  ValueError).

  Reference: Anil et al., "Memory-Efficient Adaptive Optimization", NeurIPS
  2019.
  """

  def __init__(self, b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8):
    self.b1, self.b2, self.eps = b1, b2, eps

  def init_leaf(self, p):
    if np.iscomplexobj(p):
      raise ValueError("sm3: defined for real parameters only")
    if p.ndim < 2:
      acc = [_zeros(p)]
    else:
      acc = [np.zeros(n) for n in p.shape]
    return {"acc": acc, "m": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    c = 1.0 if self.b2 == 1.0 else 1.0 - self.b2
    if g.ndim < 2:
      nu = c * np.square(g) + self.b2 * s["acc"][0]
      s["acc"] = [nu]
    else:
      r = g.ndim
      cover = None
      for a, mu_a in enumerate(s["acc"]):
        shape = [1] * r
        shape[a] = g.shape[a]
        b = mu_a.reshape(shape)
        cover = b if cover is None else np.minimum(cover, b)
      nu = c * np.square(g) + self.b2 * cover
      s["acc"] = [nu.max(axis=tuple(x for x in range(r) if x != a))
                  for a in range(r)]
    safe = np.where(nu > 0, nu, 1.0)
    h = np.where(nu > 0, g / np.sqrt(safe + self.eps), 0.0)
    s["m"] = self.b1 * s["m"] + (1.0 - self.b1) * h
    return s["m"]


class sm3(scale_by_sm3):
  """SM3-II with momentum (optax's ``sm3``): ``scale_by_sm3(momentum)``, then ``-lr``.

  b1 = ``momentum``, b2 = 1 (the paper's sum) and eps = 1e-8, as optax's
  ``sm3``, which passes only the momentum on:
      u_t = -lr m_t,   m_t the direction of ``scale_by_sm3`` above.
  Scalar leaves and complex parameters: as ``scale_by_sm3``.
  """

  def __init__(self, learning_rate, momentum: float = 0.9):
    super().__init__(b1=momentum)
    self.learning_rate = learning_rate
    self.momentum = momentum

  def update_leaf(self, name, g, p, s):
    return -self.learning_rate * super().update_leaf(name, g, p, s)


class fromage(Reference):
  """Fromage (Frobenius matched gradient descent).

      c   = 1 / sqrt(1 + lr_t^2)
      ratio = max(||p||, min_norm) / max(||g||, min_norm)     (per leaf)
      p_{t+1} = c (p_t - lr_t ratio g_t)
      u_t = p_{t+1} - p_t = -lr_t c ratio g_t + (c - 1) p_t

  Reference: Bernstein et al., "On the distance between two neural
  networks and the stability of learning", NeurIPS 2020.
  """

  def __init__(self, learning_rate, min_norm: float = 1e-6):
    self.learning_rate = learning_rate
    self.min_norm = min_norm

  def update_leaf(self, name, g, p, s):
    lr = self.sched(self.learning_rate)
    c = 1.0 / np.sqrt(1.0 + lr ** 2)
    # c - 1 without the cancellation of 1/sqrt(1 + lr^2) - 1 (about -lr^2 / 2).
    c_minus_1 = np.expm1(-0.5 * np.log1p(lr ** 2))
    ratio = _trust_ratio(p, g, min_norm=self.min_norm)
    return -lr * c * ratio * g + c_minus_1 * p


class adafactor(Reference):
  """Adafactor, optax's defaults and ordering.

  beta2_t = 1 - max(t - decay_offset, 1)^(-decay_rate)    (= 0 at t = 1)
  (optax has no max: every step up to t = decay_offset is NaN there.)
  Let G = g_t^2 + eps (elementwise, eps = 1e-30).
  * Factored leaves (``factored`` and rank >= 2 and the second-largest dim
    >= ``min_dim_size_to_factor``): with ``col`` the largest axis and ``row``
    the second largest (``np.argsort(shape)[-1]`` / ``[-2]``),
        R_t = beta2_t R_{t-1} + (1-beta2_t) mean_col(G)    (per row)
        C_t = beta2_t C_{t-1} + (1-beta2_t) mean_row(G)    (per column)
        V_t = R_t C_t / mean_row(R_t)                      (outer product)
    (the paper's R C / (1^T R) with sums replaced by means.)
  * Otherwise: V_t = beta2_t V_{t-1} + (1-beta2_t) G.
  U_t = g_t / sqrt(V_t)
  U_t <- U_t / max(1, RMS(U_t) / clipping_threshold)    (if threshold given)
  U_t <- lr_t U_t                                        (if lr given)
  U_t <- max(RMS(p_t), 1e-3) U_t             (if multiply_by_parameter_scale)
  U_t <- M_t = momentum M_{t-1} + (1-momentum) U_t       (if momentum given)
  U_t <- U_t + wd_t p_t                                  (if weight_decay_rate;
                                                          not scaled by lr)
  u_t = -U_t
  Differences from the paper: no relative step size rho_t =
  min(1e-2, 1/sqrt(t)) (optax uses ``learning_rate``, or 1 if None).  optax
  computes beta2_t in float32 (``_decay_rate_pow``); this reference computes
  it in float64, so agreement with ``optax.adafactor`` is ~1e-7 relative
  (exact when optax's ``decay_rate_fn`` is given a float64 version).

  Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with
  Sublinear Memory Cost", ICML 2018.
  """

  def __init__(self, learning_rate=None, min_dim_size_to_factor: int = 128,
               decay_rate: float = 0.8, decay_offset: int = 0,
               multiply_by_parameter_scale: bool = True,
               clipping_threshold: Optional[float] = 1.0,
               momentum: Optional[float] = None, dtype_momentum: Any = None,
               weight_decay_rate=None, eps: float = 1e-30,
               factored: bool = True, weight_decay_mask=None):
    self.learning_rate = learning_rate
    self.min_dim_size_to_factor = min_dim_size_to_factor
    self.decay_rate = decay_rate
    self.decay_offset = decay_offset
    self.multiply_by_parameter_scale = multiply_by_parameter_scale
    self.clipping_threshold = clipping_threshold
    self.momentum = momentum
    self.weight_decay_rate = weight_decay_rate
    self.eps = eps
    self.factored = factored
    self.weight_decay_mask = weight_decay_mask

  def _axes(self, shape):
    """(row_axis, col_axis) of a factored leaf, or None."""
    if not self.factored or len(shape) < 2:
      return None
    order = np.argsort(shape)
    if shape[order[-2]] < self.min_dim_size_to_factor:
      return None
    return int(order[-2]), int(order[-1])

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.weight_decay_mask, params)

  def init_leaf(self, p):
    s = {"M": np.zeros_like(p)}
    axes = self._axes(p.shape)
    if axes is None:
      s["V"] = _zeros(p)
    else:
      row, col = axes
      s["R"] = np.zeros(np.delete(p.shape, col))
      s["C"] = np.zeros(np.delete(p.shape, row))
    return s

  def update_leaf(self, name, g, p, s):
    beta2 = 1.0 - max(self.t - self.decay_offset, 1) ** (-self.decay_rate)
    G = _abs2(g) + self.eps
    axes = self._axes(g.shape)
    if axes is None:
      s["V"] = beta2 * s["V"] + (1.0 - beta2) * G
      V = s["V"]
    else:
      row, col = axes
      s["R"] = beta2 * s["R"] + (1.0 - beta2) * G.mean(axis=col)
      s["C"] = beta2 * s["C"] + (1.0 - beta2) * G.mean(axis=row)
      R = np.expand_dims(s["R"], col)
      C = np.expand_dims(s["C"], row)
      V = R * C / R.mean(axis=row, keepdims=True)
    U = g / np.sqrt(V)
    if self.clipping_threshold is not None:
      U = U / max(1.0, _rms(U) / self.clipping_threshold)
    if self.learning_rate is not None:
      U = self.sched(self.learning_rate) * U
    if self.multiply_by_parameter_scale:
      U = max(_rms(p), 1e-3) * U
    if self.momentum is not None:
      s["M"] = self.momentum * s["M"] + (1.0 - self.momentum) * U
      U = s["M"]
    if self.weight_decay_rate is not None and self._mask[name]:
      U = U + self.sched(self.weight_decay_rate) * p
    return -U


class polyak_sgd(Reference):
  """SGD with the (stochastic) Polyak step size.  Needs the loss value:
  ``step(grads, params, value=f(params))``.

      d_t   = scaling_t g_t                              (whole tree)
      gap   = value - f_min     (sps+:  max(gap, 0))
      gamma = 0                             if ||d_t||^2 + eps <= 2.22e-16
              min(gap / (||d_t||^2 + eps), max_learning_rate)  otherwise
      u_t   = -gamma d_t
  With scaling = 1 and eps = 0 this is the paper's SPS_max with c = 1:
  x <- x - min((f - f*) / ||g||^2, gamma_b) g.
  NOTE: optax's docstring writes ``scaling * min(gap/(||g||^2+eps), max_lr)``
  but its code (``chain(sgd(scaling), scale_by_polyak(...))``) computes the
  norm of the *scaled* gradient, i.e. the formula above; the two differ when
  scaling != 1.  This reference follows the code.

  References: Loizou et al., "Stochastic Polyak Step-size for SGD: An
  Adaptive Learning Rate for Fast Convergence", AISTATS 2021; Garrigos et
  al., 2023 (sps+).
  """

  def __init__(self, max_learning_rate: float = 1.0, scaling=1.0,
               f_min: float = 0.0, eps: float = 0.0, variant: str = "sps"):
    if variant not in ("sps", "sps+"):
      raise ValueError(f"Invalid variant {variant!r}")
    self.max_learning_rate = max_learning_rate
    self.scaling = scaling
    self.f_min = f_min
    self.eps = eps
    self.variant = variant

  def step(self, grads, params, *, value, **extra):
    self.count += 1
    sc = self.sched(self.scaling)
    d = {k: sc * _f64(g) for k, g in grads.items()}
    sq = _tree_sq_norm(d)
    gap = float(value) - self.f_min
    if self.variant == "sps+":
      gap = max(gap, 0.0)
    if sq + self.eps <= np.finfo(np.float64).eps:
      gamma = 0.0
    else:
      gamma = min(gap / (sq + self.eps), self.max_learning_rate)
    return {k: -gamma * x for k, x in d.items()}


class optimistic_gradient_descent(Reference):
  """Optimistic gradient descent (OGDA).

      u_t = -lr_t ((alpha + beta) g_t - beta g_{t-1}),    g_0 := g_1
  alpha = beta = 1 gives x_{t+1} = x_t - lr (2 g_t - g_{t-1}).

  References: Daskalakis et al., "Training GANs with Optimism", ICLR 2018;
  Mokhtari, Ozdaglar & Pattathil, "A Unified Analysis of Extra-gradient and
  Optimistic Gradient Methods for Saddle Point Problems", AISTATS 2020.
  """

  def __init__(self, learning_rate, alpha: float = 1.0, beta: float = 1.0):
    self.learning_rate = learning_rate
    self.alpha, self.beta = alpha, beta

  def init_leaf(self, p):
    return {"prev": None}

  def update_leaf(self, name, g, p, s):
    prev = g if s["prev"] is None else s["prev"]
    s["prev"] = g
    a, b = self.sched(self.alpha), self.sched(self.beta)
    return -self.sched(self.learning_rate) * ((a + b) * g - b * prev)


class optimistic_adam_v2(Reference):
  """Optimistic Adam (optax's ``optimistic_adam_v2``).

      d_t = Adam direction with Nesterov momentum by default
            (see ``adam``; nesterov=True is optax's default here)
      o_t = (alpha + beta) d_t - beta d_{t-1},     d_0 := d_1
      u_t = -lr_t o_t

  Reference: Daskalakis et al., "Training GANs with Optimism", ICLR 2018.
  """

  def __init__(self, learning_rate, *, alpha: float = 1.0, beta: float = 1.0,
               b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               eps_root: float = 0.0, mu_dtype: Any = None,
               nesterov: bool = True):
    self.learning_rate = learning_rate
    self.alpha, self.beta = alpha, beta
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.nesterov = nesterov

  def init_leaf(self, p):
    s = _adam_state(p)
    s["prev"] = None
    return s

  def optimistic(self, g, s, alpha, beta):
    d = _adam_direction(s, g, self.t, self.b1, self.b2, self.eps,
                        self.eps_root, self.nesterov)
    prev = d if s["prev"] is None else s["prev"]
    s["prev"] = d
    return (alpha + beta) * d - beta * prev

  def update_leaf(self, name, g, p, s):
    o = self.optimistic(g, s, self.alpha, self.beta)
    return -self.sched(self.learning_rate) * o


class optimistic_adam(optimistic_adam_v2):
  """Optimistic Adam, the deprecated v1 that ``optax.optimistic_adam`` (the
  top-level name, optax 0.2.8) still points to.

      d_t = Adam direction (Nesterov by default)
      u_t = -((lr + optimism) d_t - optimism d_{t-1}),   d_0 := d_1
  with ``optimism = learning_rate`` when None (learning_rate must be a
  float).  ``optax.optimistic_adam_v2`` is ``optimistic_adam_v2`` here.

  Reference: Daskalakis et al., "Training GANs with Optimism", ICLR 2018.
  """

  def __init__(self, learning_rate, optimism: Optional[float] = None,
               b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               eps_root: float = 0.0, mu_dtype: Any = None, *,
               nesterov: bool = True):
    if callable(learning_rate):
      raise ValueError("optimistic_adam (v1) does not support schedules")
    super().__init__(learning_rate, b1=b1, b2=b2, eps=eps,
                     eps_root=eps_root, nesterov=nesterov)
    self.optimism = learning_rate if optimism is None else optimism

  def update_leaf(self, name, g, p, s):
    return -self.optimistic(g, s, self.learning_rate, self.optimism)


# ============================================================================
# primitives as optimizers (output = the optax transformation's output)
# ============================================================================

class clip_by_global_norm(Reference):
  """Global-norm clipping over the whole tree.

      N = sqrt(sum over all leaves of sum g^2)
      u = g                  if N < max_norm
      u = g * max_norm / N   otherwise

  Reference: Pascanu, Mikolov & Bengio, "On the difficulty of training
  recurrent neural networks", ICML 2013.
  """

  def __init__(self, max_norm: float):
    self.max_norm = max_norm

  def step(self, grads, params=None, **extra):
    self.count += 1
    grads = _tree_f64(grads)
    n = np.sqrt(_tree_sq_norm(grads))
    if n < self.max_norm:
      return grads
    return {k: g / n * self.max_norm for k, g in grads.items()}


class clip(Reference):
  """Elementwise clipping:  u = min(max(g, -max_delta), max_delta)."""

  def __init__(self, max_delta: float):
    self.max_delta = max_delta

  def update_leaf(self, name, g, p, s):
    if np.iscomplexobj(g):  # an ordering of the values is needed
      raise ValueError("clip: defined for real updates only")
    return np.clip(g, -self.max_delta, self.max_delta)


class clip_by_block_rms(Reference):
  """Per-leaf RMS clipping:  u = g / max(1, RMS(g) / threshold).

  Reference: Shazeer & Stern, "Adafactor", ICML 2018 (update clipping).
  """

  def __init__(self, threshold: float):
    self.threshold = threshold

  def update_leaf(self, name, g, p, s):
    return g / max(1.0, _rms(g) / self.threshold)


class add_decayed_weights(Reference):
  """u = g + wd_t p   on masked leaves (g elsewhere)."""

  def __init__(self, weight_decay=0.0, mask=None):
    self.weight_decay = weight_decay
    self.mask = mask

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.mask, params)

  def update_leaf(self, name, g, p, s):
    return g + self.sched(self.weight_decay) * p if self._mask[name] else g


class add_l1(Reference):
  """L1 regularisation (sub)gradient:  u = g + l1 sign(p)  on masked leaves.

  (No optax counterpart.)  sign(0) = 0, i.e. the minimum-norm subgradient
  of |p| at 0 is used.
  """

  def __init__(self, l1=0.0, mask=None):
    self.l1 = l1
    self.mask = mask

  def begin_step(self, grads, params, **extra):
    self._mask = _resolve_mask(self.mask, params)

  def update_leaf(self, name, g, p, s):
    return g + self.sched(self.l1) * _sign(p) if self._mask[name] else g


class ema(Reference):
  """Exponential moving average of the updates.

      m_t = decay m_{t-1} + (1-decay) g_t,  m_0 = 0
      u_t = m_t / (1 - decay^t)   (debias=True)   or   m_t
  """

  def __init__(self, decay: float, debias: bool = True,
               accumulator_dtype: Any = None):
    self.decay = decay
    self.debias = debias

  def init_leaf(self, p):
    return {"m": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    s["m"] = self.decay * s["m"] + (1.0 - self.decay) * g
    return s["m"] / (1.0 - self.decay ** self.t) if self.debias else s["m"]


class trace(Reference):
  """Momentum trace (heavy ball / Nesterov), no learning rate.

      v_t = g_t + decay v_{t-1}
      u_t = v_t          (nesterov: g_t + decay v_t)
  """

  def __init__(self, decay: float, nesterov: bool = False,
               accumulator_dtype: Any = None):
    self.decay = decay
    self.nesterov = nesterov

  def init_leaf(self, p):
    return {"v": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    s["v"] = g + self.decay * s["v"]
    return g + self.decay * s["v"] if self.nesterov else s["v"]


class scale(Reference):
  """u = step_size * g."""

  def __init__(self, step_size: float):
    self.step_size = step_size

  def update_leaf(self, name, g, p, s):
    return self.step_size * g


class scale_by_learning_rate(Reference):
  """u = -lr_t g (flip_sign=True) or lr_t g; identity when lr is None."""

  def __init__(self, learning_rate=None, *, flip_sign: bool = True):
    self.learning_rate = learning_rate
    self.flip_sign = flip_sign

  def update_leaf(self, name, g, p, s):
    if self.learning_rate is None:
      return g
    lr = self.sched(self.learning_rate)
    return -lr * g if self.flip_sign else lr * g


class scale_by_sign(Reference):
  """u = sign(g)."""

  def update_leaf(self, name, g, p, s):
    return _sign(g)


class scale_by_lion(Reference):
  """Lion's step without learning rate or decay, with optax's three modes.

      c_t = (1-b1) g_t + b1 m_{t-1}
      u_t = sign(c_t)                            (mode "hard", the paper)
          = tanh(smooth_beta c_t)                (mode "smooth")
          = c_t if |c_t| < 1 else sign(c_t)      (mode "refined")
      m_t = b2 m_{t-1} + (1-b2) g_t
  """

  def __init__(self, b1: float = 0.9, b2: float = 0.99, mu_dtype: Any = None, *,
               mode: str = "hard", smooth_beta: float = 1.0):
    self.b1, self.b2, self.mode, self.smooth_beta = b1, b2, mode, smooth_beta

  def init_leaf(self, p):
    return {"m": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    b1, b2 = self.sched(self.b1), self.sched(self.b2)
    c = (1.0 - b1) * g + b1 * s["m"]
    s["m"] = b2 * s["m"] + (1.0 - b2) * g
    if self.mode == "hard":
      return _sign(c)
    if self.mode == "smooth":
      return np.tanh(self.sched(self.smooth_beta) * c)
    return np.where(np.abs(c) < 1, c, _sign(c))


class scale_by_rms(Reference):
  """RMSProp preconditioner (no learning rate).

      v_t = decay v_{t-1} + (1-decay) g_t^2,   v_0 = initial_scale
      vhat = v_t / (1-decay^t) if bias_correction else v_t
      u_t = g_t / sqrt(vhat + eps)   (eps_in_sqrt)  or  g_t / (sqrt(vhat) + eps)
  """

  def __init__(self, decay: float = 0.9, eps: float = 1e-8,
               initial_scale: float = 0.0, eps_in_sqrt: bool = True,
               bias_correction: bool = False):
    self.decay, self.eps, self.initial_scale = decay, eps, initial_scale
    self.eps_in_sqrt = eps_in_sqrt
    self.bias_correction = bias_correction

  def init_leaf(self, p):
    return {"v": _zeros(p, self.initial_scale)}

  def update_leaf(self, name, g, p, s):
    s["v"] = self.decay * s["v"] + _scaled_abs2(1.0 - self.decay, g)
    v = s["v"]
    if self.bias_correction:
      v = v / (1.0 - self.decay ** self.t)
    if self.eps_in_sqrt:
      return g / np.sqrt(v + self.eps)
    return g / (np.sqrt(v) + self.eps)


class scale_by_stddev(Reference):
  """Centered RMSProp preconditioner (no learning rate).

      mbar_t = decay mbar_{t-1} + (1-decay) g_t,   mbar_0 = 0
      v_t    = decay v_{t-1} + (1-decay) g_t^2,    v_0 = initial_scale
      (both divided by 1-decay^t if bias_correction)
      u_t = g_t / sqrt(v_t - mbar_t^2 + eps)          (eps_in_sqrt)
      u_t = g_t / (sqrt(v_t - mbar_t^2) + eps)        (otherwise)

  Reference: Graves, "Generating Sequences With Recurrent Neural Networks",
  2013.
  """

  def __init__(self, decay: float = 0.9, eps: float = 1e-8,
               initial_scale: float = 0.0, eps_in_sqrt: bool = True,
               bias_correction: bool = False):
    self.decay, self.eps, self.initial_scale = decay, eps, initial_scale
    self.eps_in_sqrt = eps_in_sqrt
    self.bias_correction = bias_correction

  def init_leaf(self, p):
    return {"v": _zeros(p, self.initial_scale), "mbar": np.zeros_like(p)}

  def update_leaf(self, name, g, p, s):
    d = self.decay
    s["mbar"] = d * s["mbar"] + (1.0 - d) * g
    s["v"] = d * s["v"] + _scaled_abs2(1.0 - d, g)
    mbar, v = s["mbar"], s["v"]
    if self.bias_correction:
      mbar = mbar / (1.0 - d ** self.t)
      v = v / (1.0 - d ** self.t)
    var = v - _abs2(mbar)
    if self.eps_in_sqrt:
      return g / np.sqrt(var + self.eps)
    return g / (np.sqrt(var) + self.eps)


class scale_by_rss(Reference):
  """Adagrad preconditioner (no learning rate).

      G_t = G_{t-1} + g_t^2,  G_0 = initial_accumulator_value
      u_t = g_t / sqrt(G_t + eps)    (0 where G_t == 0)
  """

  def __init__(self, initial_accumulator_value: float = 0.1,
               eps: float = 1e-7):
    self.initial_accumulator_value = initial_accumulator_value
    self.eps = eps

  def init_leaf(self, p):
    return {"G": _zeros(p, self.initial_accumulator_value)}

  def update_leaf(self, name, g, p, s):
    s["G"] = s["G"] + _abs2(g)
    G = s["G"]
    safe = np.where(G > 0, G, 1.0)
    return np.where(G > 0, g / np.sqrt(safe + self.eps), 0.0)


class scale_by_adam(Reference):
  """Adam preconditioner (no learning rate): the direction d_t of ``adam``."""

  def __init__(self, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               eps_root: float = 0.0, mu_dtype: Any = None, *,
               nesterov: bool = False):
    self.b1, self.b2, self.eps, self.eps_root = b1, b2, eps, eps_root
    self.nesterov = nesterov

  def init_leaf(self, p):
    return _adam_state(p)

  def update_leaf(self, name, g, p, s):
    return _adam_direction(s, g, self.t, self.b1, self.b2, self.eps,
                           self.eps_root, self.nesterov)


class scale_by_trust_ratio(Reference):
  """Layer-wise trust ratio (LARS/LAMB building block), per leaf:

      u = g * tc max(||p||, min_norm) / (max(||g||, min_norm) + eps)
      (u = g when either (floored) norm is 0)
  """

  def __init__(self, min_norm: float = 0.0, trust_coefficient: float = 1.0,
               eps: float = 0.0):
    self.min_norm = min_norm
    self.trust_coefficient = trust_coefficient
    self.eps = eps

  def update_leaf(self, name, g, p, s):
    return _trust_ratio(p, g, min_norm=self.min_norm,
                        trust_coefficient=self.trust_coefficient,
                        eps=self.eps) * g


class scale_by_param_block_rms(Reference):
  """u = g * max(RMS(p), min_scale)   per leaf (Adafactor's parameter scale)."""

  def __init__(self, min_scale: float = 1e-3):
    self.min_scale = min_scale

  def update_leaf(self, name, g, p, s):
    return max(_rms(p), self.min_scale) * g


# ----------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------

OPTIMIZERS: dict[str, type] = {
    c.__name__: c for c in (
        sgd, adagrad, rmsprop, adadelta, adam, adamw, nadam, nadamw, amsgrad,
        adamax, adamaxw, lion, lamb, lars, radam, adabelief, yogi, novograd,
        adan, sign_sgd, signum, rprop, sm3, fromage, adafactor, polyak_sgd,
        optimistic_gradient_descent, optimistic_adam, optimistic_adam_v2)
}

PRIMITIVES: dict[str, type] = {
    c.__name__: c for c in (
        clip_by_global_norm, clip, clip_by_block_rms, add_decayed_weights,
        add_l1, ema, trace, scale, scale_by_learning_rate, scale_by_sign,
        scale_by_lion, scale_by_rms, scale_by_stddev, scale_by_rss, scale_by_adam,
        scale_by_trust_ratio, scale_by_param_block_rms, scale_by_sm3)
}
