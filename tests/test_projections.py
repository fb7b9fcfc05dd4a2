"""gradtx.projections against numpy: feasibility and optimality on random trees.

Every projection runs on a random multi-leaf tree, in float32 and float64,
jitted and not. The result must be feasible and the closest feasible point:
checked against an independent numpy solution (bisection for the simplex's
threshold, a search over all sign patterns for the l1 sphere, closed forms
for boxes and balls), by the optimality (KKT) conditions, and against random
feasible points, none of which may be closer.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx import projections as P
from gradtx.errors import HyperparameterError, StructureError
from gradtx.tree_utils import tree_norm

SHAPES = {"a": (3,), "b": (2, 2), "c": ()}


def _tol(dtype):
  return dict(rtol=2e-5, atol=2e-5) if dtype == jnp.float32 else dict(rtol=1e-11, atol=1e-11)


def _tree(seed, dtype, scale=1.0, shapes=SHAPES):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(scale * rng.standard_normal(s), dtype) for k, s in shapes.items()}


def _flat(tree):
  """The tree's entries as one float64 vector, in ravel_pytree's order (sorted keys)."""
  return np.concatenate([np.asarray(tree[k], np.float64).ravel() for k in sorted(tree)])


def _check_dtypes(out, tree):
  for k in tree:
    assert out[k].dtype == tree[k].dtype and out[k].shape == tree[k].shape, k


def _np_simplex(x, s):
  """Projection onto {p >= 0, sum p = s} by bisection on the threshold tau (float64)."""
  low, high = x.min() - s, x.max()
  for _ in range(200):
    tau = (low + high) / 2
    if np.maximum(x - tau, 0).sum() > s:
      low = tau
    else:
      high = tau
  return np.maximum(x - (low + high) / 2, 0)


def _np_l1_sphere(x, s):
  """Brute force: the closest of the projections onto the 2^n faces of the l1 sphere."""
  best, best_dist = None, np.inf
  for signs in itertools.product([-1.0, 1.0], repeat=x.size):
    signs = np.asarray(signs)
    y = signs * _np_simplex(signs * x, s)  # the face {signs * y >= 0, sum signs * y = s}
    dist = np.sum((x - y) ** 2)
    if dist < best_dist:
      best, best_dist = y, dist
  return best


def _no_feasible_point_closer(x, p, sample, feasible, n=500, seed=0):
  """``n`` random feasible points (rows of ``sample(rng, n)``), none closer to x than p."""
  q = sample(np.random.default_rng(seed), n)
  assert np.all(feasible(q))
  d = np.sum((x - p) ** 2)
  assert np.all(np.sum((x - q) ** 2, axis=1) >= d - 1e-5 * (1 + d))


def test_non_negative(dtype, run):
  tree = _tree(0, dtype)
  out = run(P.projection_non_negative, tree)
  _check_dtypes(out, tree)
  np.testing.assert_allclose(_flat(out), np.maximum(_flat(tree), 0), **_tol(dtype))


def test_box_with_tree_and_scalar_bounds(dtype, run):
  tree = _tree(1, dtype, scale=2.0)
  lower = {k: jnp.full(s, -0.5, dtype) for k, s in SHAPES.items()}
  upper = {k: jnp.full(s, 1.0, dtype) for k, s in SHAPES.items()}
  x = _flat(tree)
  out = run(P.projection_box, tree, lower, upper)
  _check_dtypes(out, tree)
  np.testing.assert_allclose(_flat(out), np.clip(x, -0.5, 1.0), **_tol(dtype))
  # Scalar bounds on a tree of several leaves (optax 0.2.8 raises a pytree error here).
  out = run(lambda t: P.projection_box(t, -0.5, 1.0), tree)
  np.testing.assert_allclose(_flat(out), np.clip(x, -0.5, 1.0), **_tol(dtype))
  out = run(P.projection_hypercube, tree)
  np.testing.assert_allclose(_flat(out), np.clip(x, 0.0, 1.0), **_tol(dtype))
  # Bounds the other way round are an error, naming the leaf (optax returns u there).
  with pytest.raises(HyperparameterError, match=r"^projection_box: lower must be <= upper, "
                                                r"got lower=1 and upper=-0.5$"):
    P.projection_box(tree, 1.0, -0.5)
  upper["b"] = upper["b"].at[1, 0].set(-1.0)
  with pytest.raises(HyperparameterError, match=r"^projection_box: lower must be <= upper at "
                                                r"\['b'\], got lower=-0.5 and upper=-1$"):
    P.projection_box(tree, lower, upper)
  # A NaN bound passed (lower > upper is false) and made NaN entries; a tree of scales for
  # the hypercube that went below 0 was reported as projection_box's lower > upper.
  with pytest.raises(HyperparameterError, match=r"^projection_box: lower must be <= upper, "
                                                r"got lower=nan and upper=1$"):
    P.projection_box(tree, np.nan, 1.0)
  scales = {k: jnp.full(s, 2.0, dtype) for k, s in SHAPES.items()}
  for bad in (-1.0, np.nan):
    scales["a"] = scales["a"].at[2].set(bad)
    with pytest.raises(HyperparameterError, match=rf"^projection_hypercube: scale must be in "
                                                  rf"\[0, inf\] at \['a'\], got {bad:g}$"):
      P.projection_hypercube(tree, scales)
  out = run(lambda t: P.projection_hypercube(t, 0.25), tree)
  np.testing.assert_allclose(_flat(out), np.clip(x, 0.0, 0.25), **_tol(dtype))


_W = {"w": jnp.array([-2.0, 0.5, 3.0]), "b": jnp.array(1.5)}


# A bound left a string by a YAML or command-line parser raised numpy's "ufunc
# 'less_equal' did not contain a loop ..."; None failed in jnp.asarray; True was taken as
# 1 and a complex bound lost its imaginary part, both silently.
@pytest.mark.parametrize("call, pattern", [
    (lambda: P.projection_box(_W, "0", 1.0),
     r"^projection_box: lower must be a number in \[-inf, inf\], got '0' \(convert it with "
     r"float\(\)\)$"),
    (lambda: P.projection_box(_W, 0.0, b"1"), r"^projection_box: upper must be a number in "),
    (lambda: P.projection_box(_W, None, 1.0),
     r"^projection_box: lower must be a number in \[-inf, inf\], got None$"),
    (lambda: P.projection_box(_W, True, 2.0),
     r"^projection_box: lower must be a number in \[-inf, inf\], got True$"),
    (lambda: P.projection_box(_W, 0j, 1.0), r"^projection_box: lower must be a real number in \[-inf, inf\], got 0j$"),
    (lambda: P.projection_box(_W, {"w": "0", "b": 0.0}, 1.0),
     r"^projection_box: lower at \['w'\] must be a number in \[-inf, inf\], got '0'"),
    (lambda: P.projection_box(_W, -1.0, {"w": np.array(["1"]), "b": 2.0}),
     r"^projection_box: upper at \['w'\] must be a number .*got array\(\['1'\]"),
    (lambda: P.projection_hypercube(_W, {"w": "1", "b": 1.0}),
     r"^projection_hypercube: scale at \['w'\] must be a number in \[0, inf\], got '1'"),
    # Any other object: numpy's "'<=' not supported between instances of 'object' and
    # 'float'", naming neither the projection nor the bound.
    (lambda: P.projection_box(_W, object(), 1.0),
     r"^projection_box: lower must be a number in \[-inf, inf\], got <object object at "),
    (lambda: P.projection_box(_W, -1.0, {"w": 1.0, "b": np.array([object()])}),
     r"^projection_box: upper at \['b'\] must be a number in \[-inf, inf\], got "
     r"array\(\[<object"),
], ids=range(10))
def test_box_bound_that_is_not_a_number_raises_naming_it(call, pattern):
  with pytest.raises(HyperparameterError, match=pattern):
    call()


# A bound broadcast its leaf to its own shape: a (3,) lower turned the scalar leaf "b" into
# a (3,) array, silently; a (2,) one on a (3,) leaf raised jnp's "max got incompatible
# shapes for broadcasting", naming neither the projection nor the leaf.
_SHAPED = {"w": jnp.zeros(3), "b": jnp.array(1.0)}
_NOT_ITS_SHAPE = r"which does not broadcast to the leaf at"


@pytest.mark.parametrize("call, pattern", [
    (lambda: P.projection_box(_SHAPED, jnp.array([0.0, 1.0, 2.0]), 5.0),
     rf"^projection_box: lower has shape \(3,\), {_NOT_ITS_SHAPE} \['b'\], of shape \(\); "),
    (lambda: jax.jit(lambda t: P.projection_box(t, jnp.array([0.0, 1.0, 2.0]), 5.0))(_SHAPED),
     rf"^projection_box: lower has shape \(3,\), {_NOT_ITS_SHAPE} \['b'\]"),
    (lambda: P.projection_box(_SHAPED, -1.0, {"w": jnp.ones(2), "b": 1.0}),
     rf"^projection_box: upper has shape \(2,\), {_NOT_ITS_SHAPE} \['w'\], of shape \(3,\)"),
    (lambda: P.projection_linf_ball(_SHAPED, jnp.array([1.0, 2.0, 3.0])),
     rf"^projection_linf_ball: scale has shape \(3,\), {_NOT_ITS_SHAPE} \['b'\]"),
    (lambda: P.projection_hypercube(_SHAPED, jnp.ones((1, 3))),
     rf"^projection_hypercube: scale has shape \(1, 3\), {_NOT_ITS_SHAPE} \['b'\]"),
], ids=range(5))
def test_box_bound_that_does_not_fit_its_leaf_raises_naming_it(call, pattern):
  with pytest.raises(HyperparameterError, match=pattern):
    call()


# A tree of bounds of another structure raised JAX's "pytree structure error: different
# numbers of pytree children at key path", naming neither the projection nor the bound.
@pytest.mark.parametrize("call, pattern", [
    (lambda: P.projection_box(_SHAPED, {"w": 0.0}, 5.0),
     r"^projection_box: lower and tree differ in structure: key path \['b'\] is in tree but "
     r"not in lower$"),
    (lambda: P.projection_box(_SHAPED, -1.0, {"w": 1.0, "b": 1.0, "c": 2.0}),
     r"^projection_box: upper and tree differ in structure: key path \['c'\] is in upper"),
    (lambda: P.projection_hypercube(_SHAPED, [1.0, 2.0]),
     r"^projection_hypercube: scale and tree differ in structure: "),
], ids=range(3))
def test_box_bound_tree_of_another_structure_raises_naming_it(call, pattern):
  with pytest.raises(StructureError, match=pattern):
    call()



# A direction or normal of another structure than x raised JAX's "Dict key mismatch"
# (from tree_vdot), naming neither the projection nor a; an empty one of another
# structure was taken as the zero direction, and x came back unchecked.
@pytest.mark.parametrize("call, message", [
    (lambda: P.projection_vector(_SHAPED, {"w": jnp.ones(3), "c": jnp.ones(2)}),
     "projection_vector: a and x differ in structure: key path ['b'] is in x but not in a"),
    (lambda: P.projection_vector({"w": jnp.ones(0)}, {"v": jnp.ones(0)}),
     "projection_vector: a and x differ in structure: key path ['w'] is in x but not in a"),
    (lambda: P.projection_hyperplane(_SHAPED, [jnp.ones(3), jnp.ones(2)], 1.0),
     "projection_hyperplane: a and x differ in structure: key path ['b'] is in x but not in a"),
    (lambda: P.projection_halfspace(_SHAPED, {"w": jnp.ones(3), "b": jnp.ones(2)}, 1.0),
     "projection_halfspace: a and x differ in shape at key path ['b']: (2,) in a, () in x"),
], ids=range(4))
def test_direction_of_another_structure_than_x_raises_naming_it(call, message):
  with pytest.raises(StructureError) as error:
    call()
  assert str(error.value) == message


def test_box_bound_per_entry_of_a_leaf():
  out = P.projection_box({"w": jnp.array([-2.0, 0.5, 3.0])}, jnp.array([0.0, 1.0, 2.0]), 2.5)
  np.testing.assert_array_equal(out["w"], [0.0, 1.0, 2.5])
  out = P.projection_linf_ball(jnp.array([[-2.0, 3.0]]), jnp.array([1.0, 2.0]))
  np.testing.assert_array_equal(out, [[-1.0, 2.0]])


def test_linf_ball(dtype, run):
  tree = _tree(2, dtype, scale=2.0)
  out = run(lambda t: P.projection_linf_ball(t, 0.7), tree)
  _check_dtypes(out, tree)
  x, p = _flat(tree), _flat(out)
  np.testing.assert_allclose(p, np.clip(x, -0.7, 0.7), **_tol(dtype))
  assert np.abs(p).max() <= 0.7 * (1 + 1e-6)
  _no_feasible_point_closer(x, p, lambda r, n: r.uniform(-0.7, 0.7, (n, x.size)),
                            lambda q: np.abs(q).max(axis=1) <= 0.7)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_simplex(dtype, run, scale):
  tree = _tree(3, dtype, scale=2.0)
  out = run(lambda t: P.projection_simplex(t, scale), tree)
  _check_dtypes(out, tree)
  x, p = _flat(tree), _flat(out)
  np.testing.assert_allclose(p, _np_simplex(x, scale), **_tol(dtype))
  # KKT: p >= 0, sum p = s, and x - p = tau on the support, x <= tau off it.
  assert p.min() >= 0
  np.testing.assert_allclose(p.sum(), scale, **_tol(dtype))
  support = p > 0
  tau = (x - p)[support]
  np.testing.assert_allclose(tau, tau[0], **_tol(dtype))
  assert np.all(x[~support] <= tau[0] + 1e-5)


def test_simplex_small_scale_far_from_the_simplex_is_finite():
  # x / s is large: 1 is below the rounding of the sums, and the threshold test must
  # still keep one entry (it returned inf for every entry; optax gives s / n).
  out = P.projection_simplex(jnp.array([-1.0, -1.0]), 1e-8)
  np.testing.assert_allclose(out, [5e-9, 5e-9], rtol=1e-6)
  out = P.projection_l1_ball(jnp.array([3.0, -1.0, 1.0]), 1e-7)
  np.testing.assert_allclose(out, [1e-7, 0.0, 0.0], rtol=1e-6)


def test_simplex_with_entries_near_the_dtype_max_is_exact():
  # Entries masked with finfo.min (or near it) made the cumulative sum -inf, and the
  # threshold kept them: [1e38, 0, 0, 1e38] here (optax too).
  low = float(jnp.finfo(jnp.float32).min)
  out = P.projection_simplex(jnp.array([1.0, low, 0.9 * low, 0.5]))
  np.testing.assert_allclose(out, [0.75, 0, 0, 0.25], rtol=1e-6)
  out = P.projection_simplex(jnp.array([-0.9 * low, 0.0, 1.0]))
  np.testing.assert_array_equal(out, [1, 0, 0])
  out = P.projection_l1_ball(jnp.array([1.0, low, 0.5, 3.0]), 2.0)
  np.testing.assert_array_equal(out, [0, -2, 0, 0])
  # Entries far below the largest stay exactly 0, and out of the Jacobian's support.
  x = jnp.array([0.5, -1.0, 2.0, 0.3, -0.2])
  np.testing.assert_array_equal(P.projection_simplex(x), [0, 0, 1, 0, 0])
  np.testing.assert_array_equal(jax.jacfwd(P.projection_simplex)(x), np.zeros((5, 5)))


def test_simplex_of_16_bit_trees_is_solved_in_float32():
  # Solved in bfloat16, entries came out about 1.5 ulp off the float32 solution rounded
  # once; in float16 a scale of 1e5 was held as inf (every entry inf, though 33333 fits),
  # and the l1 ball's norm overflowed to inf and kept x, unprojected.
  rng = np.random.default_rng(0)
  tree = {"a": jnp.asarray(rng.standard_normal(16), jnp.bfloat16),
          "b": jnp.asarray(rng.standard_normal((2, 3)), jnp.bfloat16)}
  wide = jax.tree.map(lambda x: x.astype(jnp.float32), tree)
  for project in (P.projection_simplex, P.projection_l1_sphere, P.projection_l1_ball):
    out, expected = project(tree, 3.0), project(wide, 3.0)
    for k in tree:
      assert out[k].dtype == jnp.bfloat16
      np.testing.assert_array_equal(out[k], expected[k].astype(jnp.bfloat16))
  third = np.full(3, 1e5 / 3, np.float16)  # 33344 as float16
  for project, x in ((P.projection_simplex, 1), (P.projection_l1_sphere, 1),
                     (P.projection_l1_ball, 60000)):
    out = project(jnp.full(3, x, jnp.float16), 1e5)
    assert out.dtype == jnp.float16
    np.testing.assert_array_equal(out, third)


def test_simplex_jacobian_is_the_affine_map_on_the_support():
  x = jnp.array([0.9, 0.6, -1.0, 0.3])  # support {0, 1, 3}, away from a kink
  jac = np.asarray(jax.jacfwd(P.projection_simplex)(x))
  support = np.asarray(P.projection_simplex(x)) > 0
  s = support.astype(np.float64)
  expected = np.diag(s) - np.outer(s, s) / s.sum()
  np.testing.assert_allclose(jac, expected, atol=1e-6)
  # And finite differences of the numpy reference agree.
  h, x64 = 1e-6, np.asarray(x, np.float64)
  fd = np.stack([(_np_simplex(x64 + h * e, 1.0) - _np_simplex(x64 - h * e, 1.0)) / (2 * h)
                 for e in np.eye(4)], axis=1)
  np.testing.assert_allclose(jac, fd, atol=1e-4)


@pytest.mark.parametrize("seed, scale", [(4, 1.0), (5, 10.0)])
def test_l1_sphere_against_brute_force(dtype, run, seed, scale):
  tree = _tree(seed, dtype, shapes={"a": (3,), "b": (2,)})  # 32 faces to search
  out = run(lambda t: P.projection_l1_sphere(t, scale), tree)
  _check_dtypes(out, tree)
  x, p = _flat(tree), _flat(out)
  np.testing.assert_allclose(np.abs(p).sum(), scale, **_tol(dtype))
  np.testing.assert_allclose(p, _np_l1_sphere(x, scale), **_tol(dtype))


def test_l1_sphere_inside_with_a_zero_entry():
  # optax 0.2.8 returns [1.5, 0], off the sphere; the projection is [1.5, 0.5].
  out = P.projection_l1_sphere({"w": jnp.array([1.0, 0.0])}, 2.0)
  np.testing.assert_allclose(out["w"], [1.5, 0.5])
  best = _np_l1_sphere(np.array([1.0, 0.0]), 2.0)  # [1.5, -0.5]: a tie, as close
  np.testing.assert_allclose(np.sum((np.array([1.0, 0.0]) - np.asarray(out["w"])) ** 2),
                             np.sum((np.array([1.0, 0.0]) - best) ** 2), rtol=1e-6)
  out = P.projection_l1_sphere({"w": jnp.zeros(4)}, 2.0)
  np.testing.assert_allclose(np.abs(np.asarray(out["w"])).sum(), 2.0)


def test_l1_ball_and_sphere_keep_the_phase_of_complex_entries():
  # The closest point of {sum |p_i| <= s} keeps each entry's phase and projects the moduli:
  # p = x / |x| * proj(|x|). The sign was taken as x < 0, which orders complex numbers
  # lexicographically: 1 + 2j came back as the real 1.
  x = {"a": jnp.array([1 + 2j, -1j, 0j], jnp.complex64), "b": jnp.array([0.5, -3.0])}
  moduli = np.abs(np.concatenate([np.asarray(x["a"]), np.asarray(x["b"])]))
  phases = np.concatenate([np.asarray(x["a"]), np.asarray(x["b"])]) / np.where(moduli, moduli, 1)
  phases[moduli == 0] = 1
  for scale in (1.0, 2.0):
    expected = phases * _np_simplex(moduli, scale)
    for project in (P.projection_l1_ball, P.projection_l1_sphere, jax.jit(P.projection_l1_ball)):
      out = project(x, scale)
      assert out["a"].dtype == jnp.complex64 and out["b"].dtype == jnp.float32
      np.testing.assert_allclose(np.concatenate([out["a"], out["b"]]), expected, atol=1e-6)
  # Inside the ball: x itself; onto the sphere from inside: each modulus grows, phases kept.
  np.testing.assert_allclose(P.projection_l1_ball(x, 10.0)["a"], x["a"])
  out = P.projection_l1_sphere({"a": jnp.array([3 + 4j, 0j])}, 7.0)["a"]
  np.testing.assert_allclose(out, [3.6 + 4.8j, 1.0], atol=1e-6)


@pytest.mark.parametrize("seed, scale", [(6, 1.0), (7, 100.0)])
def test_l1_ball(dtype, run, seed, scale):
  tree = _tree(seed, dtype, shapes={"a": (3,), "b": (2,)})
  out = run(lambda t: P.projection_l1_ball(t, scale), tree)
  _check_dtypes(out, tree)
  x, p = _flat(tree), _flat(out)
  expected = x if np.abs(x).sum() <= scale else _np_l1_sphere(x, scale)
  np.testing.assert_allclose(p, expected, **_tol(dtype))
  assert np.abs(p).sum() <= scale * (1 + 1e-5)

  def sample(rng, n):
    q = rng.standard_normal((n, x.size))
    return q * scale * rng.uniform(size=(n, 1)) / np.abs(q).sum(axis=1, keepdims=True)

  _no_feasible_point_closer(x, p, sample,
                            lambda q: np.abs(q).sum(axis=1) <= scale * (1 + 1e-9))


# 1e20 and 1e-20: the ball's sqrt(max(||x||^2, s^2)) overflowed (every point, inside
# too, came back as 0) or underflowed in float32.
@pytest.mark.parametrize("scale", [0.5, 100.0, 1e20, 1e-20])
def test_l2_ball_and_sphere(dtype, run, scale):
  tree = _tree(8, dtype)
  x = _flat(tree)
  norm = np.linalg.norm(x)
  ball = _flat(run(lambda t: P.projection_l2_ball(t, scale), tree))
  sphere_tree = run(lambda t: P.projection_l2_sphere(t, scale), tree)
  _check_dtypes(sphere_tree, tree)
  sphere = _flat(sphere_tree)
  np.testing.assert_allclose(ball, x * scale / max(norm, scale), **_tol(dtype))
  np.testing.assert_allclose(sphere, x * scale / norm, **_tol(dtype))
  np.testing.assert_allclose(np.linalg.norm(sphere), scale, **_tol(dtype))

  def on_sphere(rng, n):
    q = rng.standard_normal((n, x.size))
    return scale * q / np.linalg.norm(q, axis=1, keepdims=True)

  norms = lambda q: np.linalg.norm(q, axis=1)  # noqa: E731
  _no_feasible_point_closer(x, sphere, on_sphere,
                            lambda q: np.abs(norms(q) - scale) < 1e-9 * scale)
  _no_feasible_point_closer(x, ball, lambda r, n: on_sphere(r, n) * r.uniform(size=(n, 1)),
                            lambda q: norms(q) <= scale * (1 + 1e-9))


def test_l2_sphere_and_ball_of_zero():
  zero = {"a": jnp.zeros(3), "b": jnp.zeros(1)}
  out = _flat(P.projection_l2_sphere(zero, 2.0))
  np.testing.assert_allclose(out, np.full(4, 1.0), rtol=1e-6)  # s / sqrt(n) each: on the sphere
  np.testing.assert_allclose(_flat(P.projection_l2_ball(zero, 2.0)), np.zeros(4))
  # A tiny radius: s^2 underflowed to 0, so 0 / 0 gave NaN and a tiny point inf.
  np.testing.assert_array_equal(_flat(P.projection_l2_ball(zero, 1e-20)), np.zeros(4))
  tiny = {"a": jnp.array([3e-30, 4e-30, 0.0]), "b": jnp.zeros(1)}
  np.testing.assert_allclose(_flat(P.projection_l2_ball(tiny, 1e-20)), _flat(tiny), rtol=1e-6)


def test_l2_ball_bfloat16_keeps_dtype():
  tree = {"w": jnp.array([3.0, 4.0], jnp.bfloat16)}
  out = P.projection_l2_ball(tree)
  assert out["w"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out["w"], np.float32), [0.6, 0.8], rtol=1e-2)


def test_vector_hyperplane_halfspace(dtype, run):
  x, a = _tree(9, dtype), _tree(10, dtype)
  xf, af = _flat(x), _flat(a)
  b = 0.3
  vec = _flat(run(P.projection_vector, x, a))
  np.testing.assert_allclose(vec, af * (xf @ af) / (af @ af), **_tol(dtype))
  plane_tree = run(lambda x, a: P.projection_hyperplane(x, a, b), x, a)
  _check_dtypes(plane_tree, x)
  plane = _flat(plane_tree)
  # KKT: on the plane, and x - y parallel to a.
  np.testing.assert_allclose(af @ plane, b, **_tol(dtype))
  residual = xf - plane
  np.testing.assert_allclose(residual, af * (residual @ af) / (af @ af), **_tol(dtype))
  # Halfspace: x outside -> the plane's projection; x inside -> x itself.
  for offset in (xf @ af - 1.0, xf @ af + 1.0):
    half = _flat(run(lambda x, a, o=offset: P.projection_halfspace(x, a, o), x, a))
    expected = xf if xf @ af <= offset else xf + (offset - xf @ af) / (af @ af) * af
    np.testing.assert_allclose(half, expected, **_tol(dtype))
    assert af @ half <= offset + 1e-5


def test_scale_as_float64_array_under_x64_keeps_float32_tree():
  with jax.enable_x64(True):
    tree = _tree(11, jnp.float32)
    s = jnp.asarray(0.5, jnp.float64)
    for fn in (P.projection_l2_ball, P.projection_l2_sphere, P.projection_simplex,
               P.projection_l1_ball, P.projection_linf_ball):
      out = fn(tree, s)
      _check_dtypes(out, tree)
    assert float(tree_norm(P.projection_l2_ball(tree, s))) == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("fn, scale, allowed", [
    (P.projection_simplex, 0.0, r"\(0, inf\)"), (P.projection_l1_sphere, -1.0, r"\(0, inf\)"),
    (P.projection_l1_ball, -1.0, r"\(0, inf\]"), (P.projection_l2_sphere, 0.0, r"\(0, inf\)"),
    (P.projection_l2_ball, -2.0, r"\(0, inf\]"), (P.projection_linf_ball, -1.0, r"\[0, inf\]"),
    (P.projection_hypercube, -1.0, r"\[0, inf\]"),
])
def test_bad_scale_raises_naming_the_function(fn, scale, allowed):
  with pytest.raises(HyperparameterError, match=rf"{fn.__name__}: scale must be in {allowed}"):
    fn({"w": jnp.ones(2)}, scale)


@pytest.mark.parametrize("fn", [P.projection_simplex, P.projection_l1_sphere,
                                P.projection_l1_ball, P.projection_l2_sphere,
                                P.projection_l2_ball])
def test_scale_of_a_whole_tree_set_must_be_a_scalar(fn):
  # A (3,) scale broadcast into the result: the simplex's entries came back summing to
  # 1.77 for scales (1, 2, 3); on another shape it failed in a broadcast naming nothing.
  with pytest.raises(HyperparameterError, match=rf"^{fn.__name__}: scale must be a scalar "
                                                r"\(.*\), got shape \(3,\)$"):
    fn({"w": jnp.array([0.3, 0.9, 0.2])}, jnp.array([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("fn, b, pattern", [
    (P.projection_hyperplane, "1", r"b must be a number in \(-inf, inf\), got '1' "
                                   r"\(convert it with float\(\)\)$"),
    (P.projection_halfspace, "1", r"b must be a number in \(-inf, inf\], got '1'"),
    (P.projection_hyperplane, np.inf, r"b must be a finite number in \(-inf, inf\), got inf$"),
    (P.projection_halfspace, -np.inf, r"b must be a finite number in \(-inf, inf\], got -inf$"),
    (P.projection_hyperplane, jnp.array([1.0, 2.0]), r"b must be a scalar, got shape \(2,\)$"),
    (P.projection_halfspace, jnp.array([1.0, 2.0]), r"b must be a scalar, got shape \(2,\)$"),
], ids=range(6))
def test_bad_offset_raises_naming_the_function(fn, b, pattern):
  # A string failed in jnp.asarray naming nothing; a (2,) b was broadcast into the result
  # ([0, 1.5], on no hyperplane); an infinite one gave inf entries.
  with pytest.raises(HyperparameterError, match=rf"^{fn.__name__}: {pattern}"):
    fn(jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0]), b)


def test_halfspace_of_infinite_offset_returns_the_point():
  out = P.projection_halfspace(jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0]), np.inf)
  np.testing.assert_array_equal(out, [1.0, 2.0])


def test_balls_of_infinite_radius_return_the_point():
  # The l1 and l2 balls refused scale=inf, which linf_ball and hypercube take (a bound
  # switched off); the l2 ball's s / max(||x||, s) would be inf / inf = NaN.
  tree = {"w": jnp.array([3.0, -4.0]), "b": jnp.array(1e30)}
  for fn in (P.projection_l1_ball, P.projection_l2_ball, P.projection_linf_ball):
    for s in (np.inf, jnp.float32(np.inf)):
      for run in (fn, jax.jit(fn)):
        out = run(tree, s)
        assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.all(a == b)), out, tree)), fn
  # So is one that float32 holds as inf: the l1 ball's sphere branch, traced with it
  # though not taken, refused it, naming projection_l1_sphere.
  for fn in (P.projection_l1_ball, P.projection_l2_ball):
    with np.errstate(over="ignore"):  # numpy's warning as jnp.asarray casts it: the point
      out = fn(tree, 1e50)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.all(a == b)), out, tree)), fn


def test_tree_mixing_bfloat16_and_float32_leaves():
  # Mixed-precision params, under the suite's strict promotion: the whole-tree
  # projections solve in float32 (the leaves' promoted dtype, as optax) and give
  # every leaf back in its own dtype.
  tree = {"a": jnp.asarray([1.0, -2.0, 3.0], jnp.bfloat16), "b": jnp.asarray([0.5, 4.0])}
  x = _flat(tree)
  a = {"a": jnp.asarray([1.0, 0.0, 1.0], jnp.bfloat16), "b": jnp.asarray([2.0, -1.0])}
  af = _flat(a)
  cases = [
      (P.projection_simplex(tree, 2.0), _np_simplex(x, 2.0)),
      (P.projection_l1_ball(tree, 2.0), np.sign(x) * _np_simplex(np.abs(x), 2.0)),
      (P.projection_l1_sphere(tree, 2.0), np.sign(x) * _np_simplex(np.abs(x), 2.0)),
      (P.projection_vector(tree, a), (x @ af) / (af @ af) * af),
      (P.projection_hyperplane(tree, a, 1.0), x + (1.0 - af @ x) / (af @ af) * af),
      (P.projection_halfspace(tree, a, 1.0), x + min(1.0 - af @ x, 0.0) / (af @ af) * af),
  ]
  for out, expected in cases:
    _check_dtypes(out, tree)
    np.testing.assert_allclose(_flat(out), expected, rtol=1e-2, atol=2e-2)



def _bound(value):
  return lambda t: jax.tree.map(lambda _: value, t)  # optax's box takes only trees


# Each projection as a function of its module (gradtx's or optax's) and the tree; the
# line, plane and halfspace take a tree of their own for a.
_ALL_PROJECTIONS = {
    "projection_non_negative": lambda m, t: m.projection_non_negative(t),
    "projection_box": lambda m, t: m.projection_box(t, _bound(0.5)(t), _bound(3.7)(t)),
    "projection_hypercube": lambda m, t: m.projection_hypercube(t, 2.5),
    "projection_simplex": lambda m, t: m.projection_simplex(t, 1.5),
    "projection_l1_sphere": lambda m, t: m.projection_l1_sphere(t, 1.5),
    "projection_l1_ball": lambda m, t: m.projection_l1_ball(t, 1.5),
    "projection_l2_sphere": lambda m, t: m.projection_l2_sphere(t, 1.5),
    "projection_l2_ball": lambda m, t: m.projection_l2_ball(t, 1.5),
    "projection_linf_ball": lambda m, t: m.projection_linf_ball(t, 1.5),
    "projection_vector": lambda m, t: m.projection_vector(t, jax.tree.map(jnp.ones_like, t)),
    "projection_hyperplane": lambda m, t: m.projection_hyperplane(t, t, 0.5),
    "projection_halfspace": lambda m, t: m.projection_halfspace(t, t, 0.5),
}
# optax 0.2.8 raises for an integer tree in its l1 ball and for scalar bounds in its
# hypercube, and its linf ball casts the radius to the integers ([-1, 1, 1] here).
_OPTAX_WRONG_ON_INTEGERS = ("projection_hypercube", "projection_l1_ball", "projection_linf_ball")


def test_integer_leaves_are_projected_as_floats():
  # Integer leaves were projected in their dtype, the bounds and radii cast to it: the box
  # [0.5, 3.7] gave [0, 3, 3] for [-2, 3, 5] (0 outside the box), the l2 ball of radius 1.5
  # gave 0 for every entry, the simplex's entries summed to 1 for a scale of 1.5.
  import optax
  ints = {"a": jnp.array([-2, 3, 5]), "b": jnp.array([7, -4, 0], jnp.int8),
          "m": jnp.array([True, False, True])}
  floats = jax.tree.map(lambda x: x.astype(jnp.float32), ints)
  int32s = jax.tree.map(lambda x: x.astype(jnp.int32), ints)  # optax's simplex takes no mix
  for name, project in _ALL_PROJECTIONS.items():
    out, expected = project(P, ints), project(P, floats)
    for k in ints:
      assert out[k].dtype == jnp.float32, (name, k)
      np.testing.assert_array_equal(out[k], expected[k], err_msg=f"{name} {k}")
    if name not in _OPTAX_WRONG_ON_INTEGERS:
      # Jitted: one compile is cheaper than optax's eager ops' first calls.
      with jax.numpy_dtype_promotion("standard"):  # optax relies on int * float promoting
        expected = jax.jit(functools.partial(project, optax.projections))(int32s)
      for k in ints:
        np.testing.assert_allclose(out[k], expected[k], rtol=1e-6, atol=1e-6,
                                   err_msg=f"{name} {k}")
  with jax.enable_x64(True):  # the default float
    assert P.projection_l2_ball(jnp.array([3, 4])).dtype == jnp.float64


_NO_POINT_OF_NO_ENTRIES = ("projection_simplex", "projection_l1_sphere", "projection_l2_sphere")


@pytest.mark.parametrize("tree", [{}, {"w": jnp.zeros((0, 3)), "b": jnp.zeros(0)}],
                         ids=["no leaf", "empty leaves"])
def test_tree_without_entries(tree):
  # It is inside every ball and box, and comes back as it is: the l1 ball raised numpy's
  # "zero-size array to reduction operation max" (its sphere branch, traced though not
  # taken), the line ZeroDivisionError. The simplex and the spheres have no point of no
  # entries: they raise, naming the projection (the first two raised the same numpy
  # error, the l2 sphere returned the tree, which is on no sphere).
  for name, project in _ALL_PROJECTIONS.items():
    if name in _NO_POINT_OF_NO_ENTRIES:
      with pytest.raises(StructureError, match=rf"^{name}: the tree has no entries \(no leaf, "
                                               r"or only leaves of size 0\), so the set has "
                                               r"no point: (no entries sum|the norm of no)"):
        project(P, tree)
    else:
      out = project(P, tree)
      assert jax.tree.structure(out) == jax.tree.structure(tree), name
      assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, tree), name
