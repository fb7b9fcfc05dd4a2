"""gradtx.second_order against dense numpy Hessians of small models.

Two models whose Hessian numpy writes in closed form: logistic regression
with a weight vector and a bias (:math:`H = \\tilde X^\\top \\operatorname{diag}(\\sigma(1-\\sigma))
\\tilde X`) and least squares with a weight matrix (:math:`H = X^\\top X \\otimes I`),
in float32 and float64, jitted and not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import flatten_util

from gradtx import second_order as SO
from gradtx.errors import ArgumentTypeError, StructureError


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def jit(request):
  return request.param


def _tol(dtype):
  return dict(rtol=1e-4, atol=1e-5) if dtype == jnp.float32 else dict(rtol=1e-10, atol=1e-12)


def _call(jit, fn, *args):
  if jit:
    return jax.jit(fn, static_argnums=0)(*args)
  return fn(*args)


def logistic_loss(params, inputs, targets):
  z = inputs @ params["w"] + params["b"]
  return jnp.sum(jnp.logaddexp(jnp.zeros_like(z), -targets * z))


def _logistic_problem(dtype, n=7, d=3):
  rng = np.random.default_rng(0)
  x, y = rng.standard_normal((n, d)), rng.choice([-1.0, 1.0], n)
  params = {"b": 0.3, "w": rng.standard_normal(d) * 0.5}
  # numpy: ravel order is sorted keys: b, then w.
  x_tilde = np.concatenate([np.ones((n, 1)), x], axis=1)
  theta = np.concatenate([[params["b"]], params["w"]])
  z = x_tilde @ theta
  sigma = 1 / (1 + np.exp(y * z))                 # sigma(-y z)
  grad = x_tilde.T @ (-y * sigma)
  hess = x_tilde.T @ np.diag(sigma * (1 - sigma)) @ x_tilde
  as_jax = lambda a: jnp.asarray(a, dtype)  # noqa: E731
  return ({k: as_jax(v) for k, v in params.items()}, as_jax(x), as_jax(y), grad, hess)


def squares_loss(params, inputs, targets):
  return 0.5 * jnp.sum((inputs @ params - targets) ** 2)


def _squares_problem(dtype, n=5, d_in=3, d_out=2):
  rng = np.random.default_rng(1)
  x, y = rng.standard_normal((n, d_in)), rng.standard_normal((n, d_out))
  w = rng.standard_normal((d_in, d_out))
  grad = (x.T @ (x @ w - y)).ravel()
  hess = np.kron(x.T @ x, np.eye(d_out))  # row-major ravel of W: index i * d_out + j
  as_jax = lambda a: jnp.asarray(a, dtype)  # noqa: E731
  return as_jax(w), as_jax(x), as_jax(y), grad, hess


PROBLEMS = [(logistic_loss, _logistic_problem), (squares_loss, _squares_problem)]


@pytest.mark.parametrize("loss, problem", PROBLEMS, ids=["logistic", "squares"])
def test_hvp_matches_dense_hessian(dtype, jit, loss, problem):
  params, x, y, _, hess = problem(dtype)
  rng = np.random.default_rng(2)
  for _ in range(2):
    v = rng.standard_normal(hess.shape[0])
    out = _call(jit, SO.hvp, loss, jnp.asarray(v, dtype), params, x, y)
    # A tree like params (what optax returns), in the params' dtype.
    assert jax.tree.structure(out) == jax.tree.structure(params)
    flat = flatten_util.ravel_pytree(out)[0]
    assert flat.dtype == dtype
    np.testing.assert_allclose(np.asarray(flat, np.float64), hess @ v, **_tol(dtype))


def test_hvp_takes_a_vector_of_another_dtype_and_names_a_wrong_size():
  # A float64 probe (numpy's default) for float32 params, or an integer basis vector, is
  # the same direction: jax.jvp refused the mismatched tangent dtype. A vector of the
  # wrong size failed in unravel with "Sum of sizes 6 must be equal to dimension 0 ...".
  params, x, y, _, hess = _squares_problem(jnp.float32)
  v = np.random.default_rng(3).standard_normal(hess.shape[0])
  with jax.enable_x64(True):
    out = SO.hvp(squares_loss, jnp.asarray(v, jnp.float64), params, x, y)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out, np.float64).ravel(), hess @ v, **_tol(jnp.float32))
  e0 = jnp.zeros(hess.shape[0], jnp.int32).at[0].set(1)
  np.testing.assert_allclose(np.asarray(SO.hvp(squares_loss, e0, params, x, y)).ravel(),
                             hess[:, 0], **_tol(jnp.float32))
  with pytest.raises(ValueError, match=r"^hvp: v must be a flat vector of the size of "
                     r"ravel_pytree\(params\), shape \(6,\); got shape \(3, 2\)$"):
    SO.hvp(squares_loss, jnp.ones((3, 2)), params, x, y)
  # A complex v for real params: the cast to float32 dropped its imaginary part, and
  # hvp(1j e0) came back 0 (optax raises a jvp dtype error).
  with pytest.raises(ValueError, match=r"^hvp: v is complex64 and the params are real "
                     r"\(float32\)"):
    SO.hvp(squares_loss, e0.astype(jnp.complex64) * 1j, params, x, y)


@pytest.mark.parametrize("loss, problem", PROBLEMS, ids=["logistic", "squares"])
def test_hessian_diag_matches_dense_hessian(dtype, jit, loss, problem):
  params, x, y, _, hess = problem(dtype)
  out = _call(jit, SO.hessian_diag, loss, params, x, y)
  assert out.shape == (hess.shape[0],) and out.dtype == dtype
  np.testing.assert_allclose(np.asarray(out, np.float64), np.diag(hess), **_tol(dtype))


@pytest.mark.parametrize("loss, problem", PROBLEMS, ids=["logistic", "squares"])
def test_fisher_diag_is_the_squared_gradient(dtype, jit, loss, problem):
  params, x, y, grad, _ = problem(dtype)
  out = _call(jit, SO.fisher_diag, loss, params, x, y)
  assert out.shape == grad.shape and out.dtype == dtype
  np.testing.assert_allclose(np.asarray(out, np.float64), grad ** 2, **_tol(dtype))



def test_fisher_diag_of_complex_params_is_the_squared_modulus():
  # The Fisher diagonal of a complex parameter is E[|g|^2], real: jnp.square gave g^2,
  # complex (here -2j and -9 where |g|^2 is 2 and 9).
  nll = lambda w, x, y: jnp.sum(jnp.abs(x @ w - y) ** 2) / 2  # noqa: E731
  w, x, y = jnp.array([1 + 1j, 0j]), jnp.eye(2, dtype=jnp.complex64), jnp.array([0j, 3j])
  out = SO.fisher_diag(nll, w, x, y)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), [2.0, 9.0], rtol=1e-6)



def test_diagonals_of_params_without_leaves_follow_the_default_float():
  # ravel_pytree({}) is float32 even under x64: the empty diagonals were float32 there.
  zero = lambda params, inputs, targets: jnp.zeros(())  # noqa: E731
  with jax.enable_x64(True):
    for out in (SO.hessian_diag(zero, {}, None, None), SO.fisher_diag(zero, {}, None, None)):
      assert out.shape == (0,) and out.dtype == jnp.float64
  assert SO.hessian_diag(zero, {}, None, None).dtype == jnp.float32


def test_signatures_match_optax():
  import inspect
  import optax
  for name in ("hvp", "hessian_diag", "fisher_diag"):
    ours = list(inspect.signature(getattr(SO, name)).parameters)
    theirs = list(inspect.signature(getattr(optax.second_order, name)).parameters)
    assert ours == theirs, name


def _sum_squares(params, inputs, targets):
  del inputs, targets
  return jnp.sum(params["w"] ** 2)


_P = {"n": jnp.asarray(3), "w": jnp.ones(2)}
_OK = {"w": jnp.ones(2)}
_X = jnp.zeros(2)


# Bad input raised from inside jax: "'int' object is not callable" (or "Expected a
# callable value, got 3"), "Gradient only defined for scalar-output functions. Output had
# shape: (2,)", jax.jvp's "primal and tangent arguments to jax.jvp do not match" and
# jax.grad's "grad requires real- or complex-valued inputs" for an integer leaf, "Value
# 'ab' with dtype <U2 is not a valid JAX array type": none named the function, the
# argument or the leaf.
@pytest.mark.parametrize("call, kind, message", [
    (lambda: SO.hvp(3, jnp.ones(2), _OK, _X, _X), TypeError,
     "hvp: loss must be a function loss(params, inputs, targets) -> scalar, got 3"),
    (lambda: SO.hessian_diag(3, _OK, _X, _X), TypeError,
     "hessian_diag: loss must be a function loss(params, inputs, targets) -> scalar, got 3"),
    (lambda: SO.fisher_diag(3, _OK, _X, _X), TypeError,
     "fisher_diag: negative_log_likelihood must be a function loss(params, inputs, targets) "
     "-> scalar, got 3"),
    (lambda: SO.hvp(lambda p, x, y: p["w"] ** 2, jnp.ones(2), _OK, _X, _X), StructureError,
     "hvp: loss's result must be a scalar loss (or of shape (1,)), got shape (2,)"),
    (lambda: SO.hessian_diag(lambda p, x, y: p["w"] ** 2, _OK, _X, _X), StructureError,
     "hessian_diag: loss's result must be a scalar loss (or of shape (1,)), got shape (2,)"),
    (lambda: SO.fisher_diag(lambda p, x, y: p["w"] ** 2, _OK, _X, _X), StructureError,
     "fisher_diag: negative_log_likelihood's result must be a scalar loss (or of shape (1,)), "
     "got shape (2,)"),
    (lambda: SO.hvp(_sum_squares, jnp.ones(3), _P, _X, _X), ArgumentTypeError,
     "hvp: the params at key path ['n'] are int32: the derivatives are of floating-point "
     "params only; close over the others in loss"),
    (lambda: SO.hessian_diag(_sum_squares, _P, _X, _X), ArgumentTypeError,
     "hessian_diag: the params at key path ['n'] are int32: "),
    (lambda: SO.fisher_diag(_sum_squares, _P, _X, _X), ArgumentTypeError,
     "fisher_diag: the params at key path ['n'] are int32: the derivatives are of "
     "floating-point params only; close over the others in negative_log_likelihood"),
    (lambda: SO.hvp(_sum_squares, "ab", _OK, _X, _X), ArgumentTypeError,
     "hvp: v must be a flat vector of numbers, got str: 'ab'"),
], ids=range(10))
def test_bad_input_is_named_by_the_function(call, kind, message):
  with pytest.raises(kind) as error:
    call()
  assert str(error.value).startswith(message), str(error.value)


def test_a_loss_of_shape_1_is_taken_as_a_scalar():
  loss = lambda p, x, y: jnp.sum(p["w"] ** 2, keepdims=True)  # noqa: E731
  np.testing.assert_allclose(SO.hessian_diag(loss, _OK, _X, _X), [2.0, 2.0])
  np.testing.assert_allclose(SO.fisher_diag(loss, _OK, _X, _X), [4.0, 4.0])
