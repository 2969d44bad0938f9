"""jit: tracing once per signature, pytrees, constants, static args, errors."""
import dataclasses
from collections import namedtuple

import numpy as np
import pytest

import polyjit as pj
from polyjit import lax


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_traces_once_for_repeated_calls_and_again_for_new_shape(backend, rng):
    f = pj.jit(lambda x, y: lax.mul(lax.exp(x), y))
    x, y = f32(rng, 3, 4), f32(rng, 3, 4)
    for _ in range(3):
        out = f(x, y)
    assert f.trace_count == 1
    np.testing.assert_allclose(np.asarray(out), np.exp(x.astype(np.float64)) * y, rtol=1e-6)
    f(f32(rng, 5), f32(rng, 5))
    assert f.trace_count == 2 and f._cache_size() == 2
    f(x.astype(np.float64), y.astype(np.float64))
    assert f.trace_count == 3


def test_pj_arrays_and_numpy_arrays_share_the_cache_entry(rng):
    f = pj.jit(lambda x: lax.neg(x))
    x = f32(rng, 4)
    f(x)
    f(pj.device_put(x))
    assert f.trace_count == 1


def test_static_argnums_retrace_per_value(rng):
    f = pj.jit(lambda x, n: lax.integer_pow(x, n), static_argnums=1)
    x = f32(rng, 3)
    np.testing.assert_allclose(np.asarray(f(x, 2)), x ** 2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(f(x, 3)), x ** 3, rtol=1e-6)
    f(x, 3)
    assert f.trace_count == 2


def test_donate_argnums_is_accepted_and_gives_the_undonated_result(backend, rng):
    # donation lets a backend reuse an input's buffer for an output; the result must not
    # change (the numpy backend ignores it). A donated argument is not read after the call.
    def step(params, x):
        return {k: lax.sub(v, lax.mul(x, np.float32(0.5))) for k, v in params.items()}, \
            lax.reduce_sum(x, (0, 1))
    plain = pj.jit(step)
    donating = pj.jit(step, donate_argnums=(0,))
    x = f32(rng, 3, 4)
    for _ in range(2):
        params = {"w": f32(rng, 3, 4), "b": f32(rng, 3, 4)}
        want = plain(params, x)
        donated = {k: pj.device_put(v) for k, v in params.items()}   # device buffers
        for args in [(params, x), (donated, x)]:
            got = donating(*args)
            for g, w in zip(pj.tree_util.tree_leaves(got), pj.tree_util.tree_leaves(want)):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert donating.trace_count == 1
    # an int, negative index and with static_argnums, as in jax.jit
    scale = pj.jit(lambda s, x: lax.mul(x, np.float32(s)), static_argnums=0, donate_argnums=-1)
    np.testing.assert_array_equal(np.asarray(scale(3, x)), 3 * x)


def test_unhashable_static_argument_is_a_clear_error():
    f = pj.jit(lambda x, shape: x, static_argnums=1)
    with pytest.raises(TypeError, match="static argument 1 .* not hashable"):
        f(np.float32(1), [1, 2])


Pair = namedtuple("Pair", "a b")


@dataclasses.dataclass
class Params:
    w: object
    b: object


pj.tree_util.register_dataclass(Params)


def test_pytrees_round_trip_through_jit(backend, rng):
    tree = {"layers": [f32(rng, 2), (f32(rng, 3), None)], "pair": Pair(f32(rng, 1), f32(rng, 2)),
            "params": Params(f32(rng, 2, 2), f32(rng, 2))}
    out = pj.jit(lambda t: pj.tree_util.tree_map(lax.neg, t))(tree)
    assert pj.tree_util.tree_structure(out) == pj.tree_util.tree_structure(tree)
    for got, want in zip(pj.tree_util.tree_leaves(out), pj.tree_util.tree_leaves(tree)):
        np.testing.assert_array_equal(np.asarray(got), -want)
    assert isinstance(out["pair"], Pair) and isinstance(out["params"], Params)
    assert out["layers"][1][1] is None


def test_keyword_arguments_are_traced(rng):
    f = pj.jit(lambda x, *, scale: lax.mul(x, scale))
    x, s = f32(rng, 3), f32(rng, 3)
    np.testing.assert_allclose(np.asarray(f(x, scale=s)), x * s, rtol=1e-6)


def test_closed_over_arrays_become_constants(rng):
    w = f32(rng, 3)
    jaxpr = pj.make_jaxpr(lambda x: lax.add(x, w))(f32(rng, 3))
    assert len(jaxpr.jaxpr.constvars) == 1 and jaxpr.consts[0] is w
    assert str(jaxpr).startswith("{ lambda a:f32[3]; b:f32[3]. let")


def test_nested_jit_inlines_and_matches(backend, rng):
    inner = pj.jit(lambda x: lax.mul(x, 2.0))
    outer = pj.jit(lambda x: lax.add(inner(x), 1.0))
    x = f32(rng, 5)
    np.testing.assert_allclose(np.asarray(outer(x)), x * 2 + 1, rtol=1e-6)
    assert [e.prim.name for e in pj.make_jaxpr(outer)(x).eqns] == ["mul", "add"]


def test_python_scalars_are_weakly_typed():
    x = np.ones(3, np.float16)
    assert pj.make_jaxpr(lambda x: lax.add(x, 2.5))(x).out_avals[0].dtype == np.float16
    out = lax.add(2, 3.5)
    assert out.dtype == np.float32 and out.weak_type


def test_non_array_argument_names_the_argument():
    with pytest.raises(TypeError, match="str is not a valid polyjit array argument"):
        pj.jit(lambda x: x)("hello")


def test_python_control_flow_on_traced_value_names_it_and_suggests_cond(rng):
    def f(x):
        return x if lax.gt(lax.reduce_sum(x, (0,)), 0.0) else lax.neg(x)
    with pytest.raises(pj.ConcretizationError, match=r"bool\[\] computed from argument x.*lax.cond"):
        pj.jit(f)(f32(rng, 3))


def test_mismatched_shapes_name_both_shapes():
    with pytest.raises(pj.ShapeError, match=r"add: operand shapes \(3,\) and \(4,\)"):
        lax.add(np.ones(3, np.float32), np.ones(4, np.float32))


def test_wrong_axis_names_axis_and_rank():
    with pytest.raises(pj.ShapeError, match="axis 2 is out of range for an array of rank 2"):
        lax.reduce_sum(np.ones((2, 3), np.float32), (2,))


def test_dead_code_is_removed_before_compiling(rng):
    def f(x):
        lax.exp(x)       # unused
        return lax.neg(x)
    entry = pj.jit(f).lower(f32(rng, 3))
    assert [e.prim.name for e in entry.closed.eqns] == ["neg"]


def mlp(params, x):
    for w, b in params:
        x = lax.tanh(lax.add(lax.dot(x, w), b))
    return x


def test_make_jaxpr_of_a_small_mlp_prints_the_expected_text(rng):
    params = [(f32(rng, 4, 8), f32(rng, 8)), (f32(rng, 8, 2), f32(rng, 2))]
    b = lambda p: lax.broadcast_in_dim(p, (5,) + p.shape, (1,))
    def net(params, x):
        for w, bias in params:
            x = lax.tanh(lax.add(lax.dot(x, w), b(bias)))
        return x
    text = str(pj.make_jaxpr(net)(params, f32(rng, 5, 4)))
    assert text == """{ lambda ; a:f32[4,8] b:f32[8] c:f32[8,2] d:f32[2] e:f32[5,4]. let
    f:f32[5,8] = dot_general[dimension_numbers=(((1,), (0,)), ((), ())), preferred_element_type=None] e a
    g:f32[5,8] = broadcast_in_dim[shape=(5, 8), broadcast_dimensions=(1,)] b
    h:f32[5,8] = add f g
    i:f32[5,8] = tanh h
    j:f32[5,2] = dot_general[dimension_numbers=(((1,), (0,)), ((), ())), preferred_element_type=None] i c
    k:f32[5,2] = broadcast_in_dim[shape=(5, 2), broadcast_dimensions=(1,)] d
    l:f32[5,2] = add j k
    m:f32[5,2] = tanh l
  in (m) }"""


def test_array_converts_to_numpy_and_prints_its_values(rng):
    x = f32(rng, 2, 2)
    a = pj.device_put(x)
    assert a.block_until_ready() is a
    np.testing.assert_array_equal(np.asarray(a), x)
    assert repr(a).startswith("Array([[") and "dtype=float32" in repr(a)
    with pytest.raises(ValueError):
        np.asarray(a)[0, 0] = 1.0     # the buffer belongs to the Array
