"""lax control flow: cond, switch, fori_loop, while_loop, scan — eager and jitted."""
import numpy as np
import pytest

import polyjit as pj
from polyjit import lax


@pytest.mark.parametrize("jit", [False, True])
def test_cond_picks_the_branch_by_predicate(backend, rng, jit):
    def f(x):
        return lax.cond(lax.gt(lax.reduce_sum(x, (0,)), 0.0), lax.exp, lax.neg, x)
    g = pj.jit(f) if jit else f
    for x in [np.abs(rng.standard_normal(3)).astype(np.float32) + 0.1,
              -np.abs(rng.standard_normal(3)).astype(np.float32) - 0.1]:
        want = np.exp(x.astype(np.float64)) if x.sum() > 0 else -x
        np.testing.assert_allclose(np.asarray(g(x)), want, rtol=1e-6)


def test_cond_branches_may_close_over_different_values(backend, rng):
    a, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    f = pj.jit(lambda p, x: lax.cond(p, lambda x: lax.add(x, a), lambda x: lax.mul(x, b), x))
    x = rng.standard_normal(3).astype(np.float32)
    np.testing.assert_allclose(np.asarray(f(True, x)), x + a, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(f(False, x)), x * b, rtol=1e-6)


def test_switch_clamps_the_index(backend):
    branches = [lambda x: lax.add(x, 1.0), lambda x: lax.add(x, 2.0), lambda x: lax.add(x, 3.0)]
    f = pj.jit(lambda i, x: lax.switch(i, branches, x))
    assert [float(f(i, np.float32(0))) for i in (-5, 0, 1, 2, 9)] == [1, 1, 2, 3, 3]


def test_cond_branches_returning_different_types_is_an_error():
    with pytest.raises(Exception, match="branches"):
        lax.cond(True, lambda x: x, lambda x: lax.convert_element_type(x, np.int32), np.float32(1))


def test_fori_loop_with_static_bounds_is_a_scan(backend):
    f = lambda x: lax.fori_loop(0, 5, lambda i, c: lax.add(c, lax.convert_element_type(i, np.float32)), x)
    assert [e.prim.name for e in pj.make_jaxpr(f)(np.float32(0)).eqns] == ["scan"]
    assert float(pj.jit(f)(np.float32(1))) == 1 + 0 + 1 + 2 + 3 + 4


def test_fori_loop_with_traced_bounds_is_a_while(backend):
    f = pj.jit(lambda n: lax.fori_loop(0, n, lambda i, c: lax.mul(c, 2.0), np.float32(1)))
    assert float(f(10)) == 1024.0
    assert "while" in str(pj.make_jaxpr(lambda n: lax.fori_loop(0, n, lambda i, c: c, np.float32(0)))(3))


def test_while_loop_runs_until_the_condition_fails(backend):
    f = pj.jit(lambda x: lax.while_loop(lambda c: lax.lt(c[0], 100.0),
                                        lambda c: (lax.mul(c[0], 3.0), lax.add(c[1], 1)), (x, 0)))
    v, n = f(np.float32(1))
    assert float(v) == 243.0 and int(n) == 5


def test_while_body_changing_the_carry_type_is_an_error():
    with pytest.raises(TypeError, match="carry"):
        lax.while_loop(lambda c: lax.lt(c, 3.0), lambda c: lax.convert_element_type(c, np.int32),
                       np.float32(0))


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_carries_and_stacks(backend, rng, reverse):
    xs = rng.standard_normal((6, 3)).astype(np.float32)
    def step(c, x):
        c = lax.add(lax.mul(c, 0.5), x)
        return c, lax.tanh(c)
    carry, ys = pj.jit(lambda xs: lax.scan(step, np.zeros(3, np.float32), xs, reverse=reverse))(xs)
    c, want = np.zeros(3), []
    for x in (xs[::-1] if reverse else xs):
        c = c * 0.5 + x
        want.append(np.tanh(c))
    want = np.stack(want[::-1] if reverse else want)
    np.testing.assert_allclose(np.asarray(carry), c, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ys), want, rtol=1e-5, atol=1e-6)  # float32 state


def test_scan_over_pytrees_with_length_and_no_xs(backend):
    carry, ys = lax.scan(lambda c, _: ({"n": lax.add(c["n"], 1)}, c["n"]), {"n": np.int32(0)},
                         None, length=4)
    assert int(carry["n"]) == 4 and np.asarray(ys).tolist() == [0, 1, 2, 3]
