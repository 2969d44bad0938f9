"""vmap: every primitive's batching rule against a Python loop, in_axes/out_axes, control
flow, composition with jit, grad and itself, and errors."""
from typing import Callable, NamedTuple

import numpy as np
import pytest

import polyjit as pj
from polyjit import lax
from polyjit.autodiff.batching import batching_rules, vmap
from polyjit.tracer import primitives as P
from polyjit.tracer.core import abstract_eval_rules

B = 3   # batch size of every case


# ---------------------------------------------------------------- example inputs
def f32(*shape):
    return lambda r: r.standard_normal(shape).astype(np.float32)


def uniform(lo, hi, *shape):
    return lambda r: r.uniform(lo, hi, shape).astype(np.float32)


def ints(lo, hi, *shape, dtype=np.int32):
    return lambda r: r.integers(lo, hi, shape).astype(dtype)


def bools(*shape):
    return lambda r: r.random(shape) < 0.5


def perm(n, k):
    """k distinct indices below n, shaped (k, 1) for gather/scatter."""
    return lambda r: r.permutation(n)[:k, None].astype(np.int32)


class Case(NamedTuple):
    prim: str
    fn: Callable
    args: tuple     # one maker per argument: rng -> an example value
    name: str = ""


def unary_domain(name):
    return {"log": uniform(0.1, 3, 2, 3), "log1p": uniform(0.1, 3, 2, 3),
            "sqrt": uniform(0.1, 3, 2, 3), "rsqrt": uniform(0.1, 3, 2, 3),
            "lgamma": uniform(0.1, 3, 2, 3), "digamma": uniform(0.1, 3, 2, 3),
            "asin": uniform(-0.9, 0.9, 2, 3), "acos": uniform(-0.9, 0.9, 2, 3),
            "atanh": uniform(-0.9, 0.9, 2, 3), "erf_inv": uniform(-0.9, 0.9, 2, 3),
            "acosh": uniform(1.1, 3, 2, 3), "not": ints(-9, 9, 2, 3)}.get(name, f32(2, 3))


def binary_domain(name):
    x = f32(2, 3)
    return {"div": (x, uniform(0.5, 2, 2, 3)), "rem": (x, uniform(0.5, 2, 2, 3)),
            "pow": (uniform(0.5, 2, 2, 3), x),
            "and": (ints(-9, 9, 2, 3), ints(-9, 9, 2, 3)), "or": (bools(2, 3), bools(2, 3)),
            "xor": (ints(-9, 9, 2, 3), ints(-9, 9, 2, 3)),
            **{s: (ints(-99, 99, 2, 3), ints(0, 8, 2, 3)) for s in
               ["shift_left", "shift_right_logical", "shift_right_arithmetic"]}}.get(name, (x, x))


def _conv(**kw):
    return lambda l, r: lax.conv_general_dilated(l, r, **kw)


def _rw(prim, **kw):
    return lambda x: getattr(lax, prim)(x, **kw)


def _while(x, n):
    def body(c):
        return lax.add(c[0], np.int32(1)), lax.mul(c[1], 1.5)
    return lax.while_loop(lambda c: lax.lt(c[0], n), body, (np.int32(0), x))


def _scan(c0, xs, w):
    def step(c, x):
        c = lax.add(lax.mul(c, w), x)
        return c, lax.reduce_sum(c, (0,))
    return lax.scan(step, c0, xs)


CASES = (
    [Case(n, getattr(lax, "bitwise_not" if n == "not" else n), (unary_domain(n),))
     for n in P.UNARY]
    + [Case(n, getattr(lax, {"and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor"}
                        .get(n, n)), binary_domain(n)) for n in P.BINARY]
    + [Case(n, getattr(lax, n), (f32(2, 3), f32(2, 3))) for n in P.COMPARE]
    + [Case("add", lax.add, (f32(), f32(2, 3)), "scalar_and_array"),
       Case("integer_pow", lambda x: lax.integer_pow(x, 3), (f32(2, 3),)),
       Case("select_n", lax.select_n, (bools(2, 3), f32(2, 3), f32(2, 3))),
       Case("select_n", lax.select_n, (ints(0, 3, 2, 3), f32(2, 3), f32(2, 3), f32(2, 3)), "int3"),
       Case("select_n", lax.select_n, (bools(), f32(2, 3), f32(2, 3)), "scalar_which"),
       Case("convert_element_type", lambda x: lax.convert_element_type(x, np.int32),
            (uniform(-9, 9, 2, 3),)),
       Case("bitcast_convert_type", lambda x: lax.bitcast_convert_type(x, np.int32), (f32(2, 3),)),
       Case("iota", lambda x: lax.add(x, lax.iota(np.float32, (2, 3), 1)), (f32(2, 3),)),
       Case("broadcast_in_dim", lambda x: lax.broadcast_in_dim(x, (2, 3, 4), (1,)), (f32(3),)),
       Case("reshape", lambda x: lax.reshape(x, (3, 4)), (f32(2, 6),)),
       Case("transpose", lambda x: lax.transpose(x, (2, 0, 1)), (f32(2, 3, 4),)),
       Case("rev", lambda x: lax.rev(x, (1,)), (f32(2, 3),)),
       Case("slice", lambda x: lax.slice(x, (1, 0), (4, 6), (2, 3)), (f32(5, 6),)),
       Case("dynamic_slice", lambda x, i, j: lax.dynamic_slice(x, (i, j), (2, 3)),
            (f32(5, 6), ints(-1, 6), ints(-1, 6))),
       Case("dynamic_update_slice", lambda x, u, i, j: lax.dynamic_update_slice(x, u, (i, j)),
            (f32(5, 6), f32(2, 3), ints(-1, 6), ints(-1, 6))),
       Case("pad", lambda x, v: lax.pad(x, v, ((1, 2, 1), (0, -1, 0))), (f32(3, 4), f32())),
       Case("concatenate", lambda a, b: lax.concatenate([a, b], 0), (f32(2, 3), f32(4, 3))),
       Case("gather", lax.gather, (f32(5, 4), ints(0, 5, 3, 1))),
       Case("gather", lambda x, i: lax.gather(x, i, batch_dims=1),
            (f32(3, 5, 2), ints(0, 5, 3, 2, 1)), "batch_dims"),
       Case("scatter", lax.scatter, (f32(5, 4), perm(5, 3), f32(3, 4))),
       Case("scatter_add", lax.scatter_add, (f32(5, 4), ints(-1, 6, 4, 1), f32(4, 4))),
       Case("scatter_add", lambda x, i, u: lax.scatter_add(x, i, u, batch_dims=1),
            (f32(3, 5), ints(0, 5, 3, 2, 1), f32(3, 2)), "batch_dims"),
       Case("scatter_mul", lax.scatter_mul, (f32(5, 4), ints(0, 5, 4, 1), f32(4, 4))),
       Case("scatter_min", lax.scatter_min, (f32(5, 4), ints(0, 5, 4, 1), f32(4, 4))),
       Case("scatter_max", lax.scatter_max, (f32(5, 4), ints(0, 5, 4, 1), f32(4, 4)))]
    + [Case(n, lambda x, n=n: getattr(lax, n)(x, (0, 2)),
            (bools(2, 3, 4) if n in ("reduce_and", "reduce_or") else uniform(0.5, 1.5, 2, 3, 4),))
       for n in P.REDUCES]
    + [Case(n, lambda x, n=n: getattr(lax, n)(x, 1), (f32(3, 4),)) for n in ("argmax", "argmin")]
    + [Case(n, lambda x, n=n: getattr(lax, n)(x, 1, reverse=True), (uniform(0.5, 1.5, 3, 4),))
       for n in P.CUMULATIVES]
    + [Case("dot_general", lax.dot, (f32(2, 3), f32(3, 4))),
       Case("dot_general", lambda a, b: lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))),
            (f32(2, 3, 4), f32(2, 4, 5)), "batched"),
       Case("conv_general_dilated", _conv(window_strides=(1,), padding="SAME", lhs_dilation=(2,)),
            (f32(2, 3, 6), f32(4, 3, 3))),
       Case("conv_general_dilated", _conv(window_strides=(1, 2), padding=((1, 1), (0, 1)),
                                          rhs_dilation=(1, 2), feature_group_count=2),
            (f32(2, 4, 5, 5), f32(6, 2, 3, 2)), "feature_groups"),
       Case("conv_general_dilated", _conv(window_strides=(1,), padding="VALID",
                                          batch_group_count=2),
            (f32(4, 3, 6), f32(6, 3, 3)), "batch_groups")]
    + [Case(n, _rw(n, window_dimensions=(2, 3), window_strides=(1, 2), padding=((1, 0), (0, 1)),
                   base_dilation=(1, 2)), (f32(4, 5),)) for n in P.REDUCE_WINDOWS]
    + [Case("sort", lambda x: lax.sort(x, 0), (f32(3, 4),)),
       Case("sort", lambda k, v: lax.sort((k, v), 1, num_keys=1), (ints(0, 3, 3, 4), f32(3, 4)),
            "keyed"),
       Case("top_k", lambda x: lax.top_k(x, 2), (f32(3, 5),)),
       Case("threefry2x32", lax.threefry2x32, tuple(ints(0, 2**32, 2, 3, dtype=np.uint32)
                                                    for _ in range(4))),
       Case("cond", lambda p, x, y: lax.cond(p, lambda a: lax.mul(a, y), lax.neg, x),
            (bools(), f32(3), f32(3))),
       Case("cond", lambda i, x: lax.switch(i, [lax.neg, lax.exp, lambda a: lax.mul(a, 2.0)], x),
            (ints(-1, 4), f32(3)), "switch"),
       Case("while", _while, (f32(3), ints(0, 5))),
       Case("scan", _scan, (f32(3), f32(4, 3), f32(3))),
       # checkpoint binds remat only under differentiation: batch a jvp through it
       Case("remat", lambda x, t: pj.jvp(pj.checkpoint(lambda a: lax.sin(lax.mul(a, a))),
                                         (x,), (t,)), (f32(3), f32(3)))]
)


def _id(case):
    return case.prim + (f"-{case.name}" if case.name else "")


def test_every_primitive_has_a_batching_rule_and_a_case():
    # iota takes no operands, so never meets a BatchTracer; custom_lin (a custom_vjp's
    # tangent) is only ever transposed, never evaluated or batched
    nullary = {"iota", "custom_lin"}
    missing_rule = [p.name for p in abstract_eval_rules
                    if p not in batching_rules and p.name not in nullary]
    missing_case = sorted({p.name for p in abstract_eval_rules} - {c.prim for c in CASES} - nullary)
    assert not missing_rule, f"no batching rule for {missing_rule}"
    assert not missing_case, f"no vmap test case for {missing_case}"


# ---------------------------------------------------------------- every primitive vs a loop
def _axes_configs(ranks):
    """All mapped at 0; all at the last axis; and each argument left unmapped in turn."""
    n = len(ranks)
    configs = [(0,) * n, (-1,) * n]
    if n > 1:
        configs += [tuple(None if j == i else (1 if ranks[j] else 0) for j in range(n))
                    for i in range(n)]
    return list(dict.fromkeys(configs))


def _leaves(x):
    return [np.asarray(v) for v in pj.tree_util.tree_leaves(x)]


def _assert_close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if np.issubdtype(w.dtype, np.floating):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_vmap_equals_a_python_loop(backend, case):
    rng = np.random.default_rng(0)
    examples = [[make(rng) for make in case.args] for _ in range(B)]
    ranks = [np.ndim(a) for a in examples[0]]
    for axes in _axes_configs(ranks):
        args = [examples[0][i] if a is None else np.stack([e[i] for e in examples], a)
                for i, a in enumerate(axes)]
        loop = [_leaves(case.fn(*[e[i] if a is not None else examples[0][i]
                                  for i, a in enumerate(axes)])) for e in examples]
        want = [np.stack(col) for col in zip(*loop)]
        f = vmap(case.fn, in_axes=axes)
        _assert_close(_leaves(f(*args)), want)
        _assert_close(_leaves(pj.jit(f)(*args)), want)


def test_batched_operations_stay_vectorized():
    a, b = np.ones((B, 2, 3), np.float32), np.ones((B, 3, 4), np.float32)
    eqns = pj.make_jaxpr(vmap(lax.dot))(a, b).eqns
    assert [e.prim.name for e in eqns] == ["dot_general"]


# ---------------------------------------------------------------- in_axes / out_axes / axis_size
def test_out_axes_per_output_and_negative(backend, rng):
    x, y = rng.standard_normal((B, 4)).astype(np.float32), np.float32(2)
    f = lambda x, y: (lax.mul(x, y), y)
    got, same = vmap(f, in_axes=(0, None), out_axes=(1, None))(x, y)
    np.testing.assert_allclose(np.asarray(got), (x * y).T, rtol=1e-6)
    assert np.asarray(same) == 2
    got, bcast = vmap(f, in_axes=(0, None), out_axes=-1)(x, y)
    np.testing.assert_allclose(np.asarray(got), (x * y).T, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(bcast), np.full(B, 2, np.float32))


def test_pytree_in_axes_are_prefixes(backend, rng):
    params = {"w": rng.standard_normal((4, 5)).astype(np.float32),
              "b": rng.standard_normal((B, 5)).astype(np.float32)}
    xs = rng.standard_normal((4, B)).astype(np.float32)
    f = lambda p, x: lax.add(lax.dot(x, p["w"]), p["b"])
    got = vmap(f, in_axes=({"w": None, "b": 0}, 1))(params, xs)
    np.testing.assert_allclose(np.asarray(got), xs.T @ params["w"] + params["b"], rtol=1e-5)
    pair = (xs.T, (xs.T, xs))
    got = vmap(lambda p: lax.sub(p[0], p[1][1]), in_axes=[(0, (0, 1))])(pair)
    np.testing.assert_allclose(np.asarray(got), np.zeros((B, 4)), atol=0)


def test_keyword_arguments_are_mapped_over_axis_0(backend, rng):
    x, s = rng.standard_normal((4, B)).astype(np.float32), rng.standard_normal(B).astype(np.float32)
    got = vmap(lambda x, *, s: lax.mul(x, s), in_axes=1)(x, s=s)
    np.testing.assert_allclose(np.asarray(got), x.T * s[:, None], rtol=1e-6)


def test_axis_size_with_no_mapped_arguments(backend):
    got = vmap(lambda x: lax.mul(x, 2.0), in_axes=None, axis_size=B)(np.float32(1.5))
    np.testing.assert_array_equal(np.asarray(got), np.full(B, 3, np.float32))


def test_inconsistent_sizes_name_the_arguments_and_sizes():
    def f(x, y):
        return lax.add(x, y)
    with pytest.raises(ValueError, match=r"inconsistent sizes .*\[2, 3\][\s\S]*argument x of shape "
                                         r"\(2, 4\) mapped over axis 0 has size 2[\s\S]*argument y "
                                         r"of shape \(4, 3\) mapped over axis 1 has size 3"):
        vmap(f, in_axes=(0, 1))(np.zeros((2, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"has size 2[\s\S]*axis_size=5"):
        vmap(lax.neg, axis_size=5)(np.zeros(2))


@pytest.mark.parametrize("call, message", [
    (lambda: vmap(lax.neg, in_axes=None)(np.zeros(2)), "at least one argument mapped"),
    (lambda: vmap(lax.neg, in_axes=1)(np.zeros(2)), "axis 1 of argument x of shape"),
    (lambda: vmap(lax.neg, in_axes=0)(np.float32(1)), "of shape \\(\\), which has only 0 axes"),
    (lambda: vmap(lax.add, in_axes=(0,))(np.zeros(2), np.zeros(2)), "1 entries .* 2 positional"),
    (lambda: vmap(lambda p: p["a"], in_axes=({"b": 0},))({"a": np.zeros(2)}),
     "tree prefix"),
    (lambda: vmap(lax.neg, in_axes={"a": 0})(np.zeros(2)), "must be an int, None, or a tuple"),
    (lambda: vmap(lax.neg, in_axes=(0.5,))(np.zeros(2)), "ints or None"),
    (lambda: vmap(lax.neg, out_axes=None)(np.zeros(2)), "out_axes None"),
    (lambda: vmap(lax.neg, out_axes=2)(np.zeros(2)), "out_axes 2 is out of range"),
], ids=["none_mapped", "axis_range", "rank0", "in_axes_len", "prefix", "dict_in_axes",
        "float_axis", "mapped_out_none", "out_axis_range"])
def test_clear_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_python_control_flow_on_a_batched_value_is_a_clear_error():
    with pytest.raises(pj.ConcretizationError, match="batched by vmap"):
        vmap(lambda x: x if lax.gt(x, 0.0) else lax.neg(x))(np.zeros(2, np.float32))


# ---------------------------------------------------------------- control flow details
def test_cond_with_unbatched_predicate_batches_either_branch(backend, rng):
    x = rng.standard_normal(B).astype(np.float32)
    for p in (True, False):   # only one branch depends on the batched value
        got = vmap(lambda x: lax.cond(p, lambda: lax.mul(x, 2.0), lambda: np.float32(7)))(x)
        np.testing.assert_allclose(np.asarray(got), x * 2 if p else np.full(B, 7), rtol=1e-6)


def test_while_carry_becomes_batched_through_the_body(backend, rng):
    xs = rng.standard_normal(B).astype(np.float32)

    def f(x):
        body = lambda c: (lax.add(c[0], np.int32(1)), lax.add(c[1], c[2]), c[2])
        return lax.while_loop(lambda c: lax.lt(c[0], 3), body, (np.int32(0), np.float32(0), x))[1]
    np.testing.assert_allclose(np.asarray(vmap(f)(xs)), 3 * xs, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pj.jit(vmap(f))(xs)), 3 * xs, rtol=1e-6)


# ---------------------------------------------------------------- composition
def test_nested_vmap_is_an_outer_product(backend, rng):
    a, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    f = vmap(vmap(lax.mul, in_axes=(None, 0)), in_axes=(0, None))
    np.testing.assert_allclose(np.asarray(f(a, b)), np.outer(a, b), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pj.jit(f)(a, b)), np.outer(a, b), rtol=1e-6)


def test_nested_vmap_of_a_loop_with_batched_predicates(backend, rng):
    xs = rng.standard_normal((2, 3)).astype(np.float32)
    ns = rng.integers(0, 5, (2, 3)).astype(np.int32)
    want = np.array([[_while(x, n)[1] for x, n in zip(xr, nr)] for xr, nr in zip(xs, ns)])
    np.testing.assert_allclose(np.asarray(vmap(vmap(_while))(xs, ns)[1]), want, rtol=1e-6)
    got = vmap(vmap(_while), in_axes=1, out_axes=1)(xs.T, ns.T)[1]
    np.testing.assert_allclose(np.asarray(got), want.T, rtol=1e-6)


def test_vmap_of_jit_and_jit_of_vmap_agree(backend, rng):
    x = rng.standard_normal((B, 4)).astype(np.float32)
    f = lambda v: lax.reduce_max(lax.exp(v), (0,))
    want = np.exp(x).max(1)
    for g in (vmap(pj.jit(f)), pj.jit(vmap(f)), pj.jit(vmap(pj.jit(f)))):
        np.testing.assert_allclose(np.asarray(g(x)), want, rtol=1e-6)
