"""polyjit.numpy: the API surface, dtype rules, errors and per-function behaviour,
each checked eagerly and under jit against numpy."""
import inspect
import math

import ml_dtypes
import numpy as np
import pytest

import polyjit as pj
import polyjit.nn as nn
import polyjit.numpy as pnp
from agreement import assert_eager_matches_jit
from polyjit.tracer import array_methods
from polyjit.tracer.core import ConcretizationError

BF16 = np.dtype(ml_dtypes.bfloat16)


def both(f, *args):
    """f(*args) eagerly (on polyjit arrays) and under jit, as numpy arrays that must agree
    (tests/agreement.py: exactly on numpy, within a few ulps of float on compiled backends)."""
    eager = f(*[pnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args])
    jitted = pj.jit(f)(*args)
    flat_e = eager if isinstance(eager, (tuple, list)) else [eager]
    flat_j = jitted if isinstance(jitted, (tuple, list)) else [jitted]
    out = []
    for e, j in zip(flat_e, flat_j):
        e, j = np.asarray(e), np.asarray(j)
        assert_eager_matches_jit(e, j)
        out.append(e)
    return out if isinstance(eager, (tuple, list)) else out[0]


def same(f, *args, want):
    """f(*args) equals want exactly, eagerly and under jit."""
    np.testing.assert_array_equal(both(f, *args), want)


def close(f, args, ref, rtol=1e-6, atol=0.0):
    got = both(f, *args)
    np.testing.assert_allclose(got.astype(np.float64) if got.dtype == BF16 else got, ref,
                               rtol=rtol, atol=atol)
    return got


# ---------------------------------------------------------------- the surface
def _public_functions():
    return sorted(n for n in dir(pnp) if not n.startswith("_")
                  and callable(getattr(pnp, n)) and not isinstance(getattr(pnp, n), type))


def test_at_least_150_public_functions():
    assert len(_public_functions()) >= 150, _public_functions()


def test_every_name_array_methods_uses_exists():
    src = inspect.getsource(array_methods)
    import re
    names = set(re.findall(r'_(?:binop|method)\("(\w+)"', src))
    names |= {"divmod", "transpose", "swapaxes", "asarray", "reshape"}
    names |= set(re.search(r'for _n in \[(.*?)\]', src, re.S).group(1).replace('"', "")
                 .replace("\n", "").replace(" ", "").split(","))
    missing = [n for n in names if not callable(getattr(pnp, n, None))]
    assert not missing
    assert callable(pnp._indexing.getitem) and callable(pnp._indexing.IndexUpdateHelper)


def test_array_methods_work(backend):
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)

    def f(a):
        return [a.sum(), a.mean(0), a.max(1), a.min(), a.prod(), a.argmax(), a.argmin(0),
                a.std(), a.var(ddof=1), a.any(), a.all(), a.cumsum(1), a.cumprod(), a.clip(2, 4),
                a.dot(a.T), a.round(), a.swapaxes(0, 1), a.take(np.array([0, 2]), 1),
                a.argsort(), a.repeat(2), a.flatten(), a.ravel(), a.reshape(3, 2)[None].squeeze(0),
                a.conj(), a.copy(), a[:, :2].trace(), a.diagonal(), a.astype(np.int32),
                a.T, a.mT, a.transpose(1, 0), a.reshape((6,)), -a, +a, abs(a), a @ a.T, a + 1,
                2 - a, a * a, 1 / a, a // 2, a % 4, a ** 2, 2 ** a, a < 3, a <= 3, a > 3,
                a >= 3, a == 3, a != 3, divmod(a, 4)[0]]
    got = both(f, x)
    want = f(x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w, dtype=g.dtype), rtol=1e-6)
    assert float(both(lambda a: a.ptp(), x)) == 5.0   # numpy 2 arrays lack .ptp
    np.testing.assert_array_equal(both(lambda a: a.sort(0), x[::-1]), x)   # numpy's sorts in place


def test_integer_array_operators(backend):
    x = np.array([5, -3, 12], np.int32)
    got = both(lambda a: [~a, a & 6, a | 1, a ^ 3, a << 2, a >> 1, 7 & a, 1 << a.clip(0, 4)], x)
    want = [~x, x & 6, x | 1, x ^ 3, x << 2, x >> 1, 7 & x, 1 << x.clip(0, 4)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_nonzero_method_on_concrete_array(backend):
    (i,) = pnp.asarray([0, 3, 0, 5]).nonzero()
    np.testing.assert_array_equal(np.asarray(i), [1, 3])


def test_setitem_is_an_error():
    x = pnp.zeros(3)
    with pytest.raises(TypeError, match="at\\[idx\\].set"):
        x[0] = 1


def test_constants_and_dtype_objects():
    assert pnp.pi == math.pi and pnp.e == math.e and math.isinf(pnp.inf) and math.isnan(pnp.nan)
    assert pnp.newaxis is None
    assert pnp.zeros(2, pnp.bfloat16).dtype == BF16
    assert pnp.finfo(pnp.bfloat16).bits == 16 and pnp.iinfo(pnp.int8).max == 127
    assert pnp.issubdtype(pnp.bfloat16, pnp.floating)
    assert not pnp.issubdtype(pnp.int32, pnp.floating)


def test_array_api_and_numpy_aliases():
    for alias, name in [("acos", "arccos"), ("asin", "arcsin"), ("atan", "arctan"),
                        ("acosh", "arccosh"), ("asinh", "arcsinh"), ("atanh", "arctanh"),
                        ("atan2", "arctan2"), ("pow", "power"), ("divide", "true_divide"),
                        ("mod", "remainder"), ("absolute", "abs"), ("around", "round"),
                        ("degrees", "rad2deg"), ("radians", "deg2rad"), ("concat", "concatenate"),
                        ("bitwise_not", "invert"), ("bitwise_invert", "invert"),
                        ("bitwise_left_shift", "left_shift"), ("permute_dims", "transpose"),
                        ("bitwise_right_shift", "right_shift"), ("conjugate", "conj"),
                        ("real", "conj"), ("flatten", "ravel"), ("empty", "zeros")]:
        assert getattr(pnp, alias) is getattr(pnp, name), alias


def test_small_helpers(backend):
    x = np.float32([-1.5, 2.25])
    frac, whole = pnp.modf(x)
    np.testing.assert_array_equal(np.asarray(frac), [-0.5, 0.25])
    np.testing.assert_array_equal(np.asarray(whole), [-1, 2])
    same(pnp.nextafter, x, np.float32(0), want=np.nextafter(x, np.float32(0)))
    same(pnp.imag, x, want=[0, 0])
    same(pnp.positive, x, want=x)
    same(lambda a: pnp.vecdot(a, a), np.ones((2, 3)), want=[3.0, 3.0])
    same(pnp.matrix_transpose, np.ones((2, 3, 4)), want=np.ones((2, 4, 3)))
    same(lambda: pnp.ones((2, 1), pnp.int8), want=np.ones((2, 1), np.int8))
    y = np.arange(16.0).reshape(2, 2, 4)
    for f in [pnp.hsplit, pnp.vsplit, pnp.dsplit]:
        for g, w in zip(f(y, 2), getattr(np, f.__name__)(y, 2)):
            np.testing.assert_array_equal(np.asarray(g), w)
    assert pnp.can_cast(pnp.int8, pnp.bfloat16) and not pnp.can_cast(pnp.float32, pnp.bfloat16)
    assert pnp.can_cast(np.int16, np.float32) and not pnp.can_cast(np.float32, np.int32)
    assert pnp.promote_types(pnp.bfloat16, pnp.float16) == np.float32


# ---------------------------------------------------------------- dtype rules
@pytest.mark.parametrize("dt", ["bool", "int8", "int16", "int32", "int64", "uint8", "uint32",
                                "float16", BF16, "float32", "float64"])
def test_python_scalars_are_weak(dt):
    x = np.ones(3, dt)
    if np.dtype(dt) == np.bool_:
        assert (pnp.asarray(x) + True).dtype == np.bool_
        assert (pnp.asarray(x) + 1).dtype == np.int32
        assert (pnp.asarray(x) * 1.5).dtype == np.float32
    elif np.dtype(dt).kind in "iu":
        assert (pnp.asarray(x) + 1).dtype == np.dtype(dt)
        assert (pnp.asarray(x) * 1.5).dtype == np.float32
    else:
        assert (pnp.asarray(x) * 1.5).dtype == np.dtype(dt)
        assert (2 + pnp.asarray(x)).dtype == np.dtype(dt)


@pytest.mark.parametrize("a,b,want", [("int8", "uint8", "int16"), ("bool", "int8", "int8"),
                                      (BF16, "float16", "float32"), ("int32", "float32", "float64"),
                                      ("uint32", "int32", "int64"), (BF16, "int8", BF16),
                                      ("float16", "float32", "float32")])
def test_array_array_promotion(a, b, want):
    out = pnp.add(np.ones(2, a), np.ones(2, b))
    assert out.dtype == np.dtype(want)
    assert pnp.result_type(np.ones(2, a), np.ones(2, b)) == np.dtype(want)


def test_defaults_are_32_bit():
    assert pnp.arange(5).dtype == np.int32 and pnp.arange(0.0, 1, 0.25).dtype == np.float32
    assert pnp.zeros(3).dtype == np.float32 and pnp.linspace(0, 1, 3).dtype == np.float32
    assert pnp.asarray([1.0, 2.0]).dtype == np.float32 and pnp.asarray([1, 2]).dtype == np.int32
    assert pnp.asarray(np.ones(2)).dtype == np.float64


def test_weak_scalars_combine_to_weak_float():
    assert pnp.add(1.0, 2).dtype == np.float32
    assert pnp.add(pnp.add(1.0, 2), np.ones(2, np.float16)).dtype == np.float16


def test_integer_true_divide_gives_float32_or_float64():
    assert pnp.true_divide(np.array([1, 2], np.int32), 2).dtype == np.float32
    assert (pnp.asarray([1, 2]) / pnp.asarray([2, 4])).dtype == np.float32
    assert pnp.true_divide(np.array([1], np.int64), 2).dtype == np.float64
    assert pnp.true_divide(np.array([1], np.uint32), np.array([1], np.int32)).dtype == np.float64


@pytest.mark.parametrize("dt,want", [("bool", "int32"), ("int8", "int32"), ("int16", "int32"),
                                     ("uint8", "uint32"), ("int64", "int64"),
                                     ("float16", "float16")])
def test_sum_accumulator_dtypes(dt, want):
    x = np.ones(4, dt)
    assert pnp.sum(x).dtype == np.dtype(want) and pnp.cumsum(x).dtype == np.dtype(want)
    assert pnp.prod(x).dtype == np.dtype(want)


def test_mean_of_ints_is_float32_and_arg_ops_int32(backend):
    x = np.array([1, 2, 4], np.int16)
    assert pnp.mean(x).dtype == np.float32 and float(pnp.mean(x)) == pytest.approx(7 / 3)
    assert pnp.argmax(x).dtype == np.int32 and pnp.argsort(x).dtype == np.int32


def test_python_scalar_stays_a_literal_in_jaxpr():
    text = str(pj.make_jaxpr(lambda b: b + 1.0)(np.ones(3, np.float32)))
    assert "add a 1.0" in text and "convert" not in text


def test_float_functions_of_ints_give_float32(backend):
    got = close(pnp.sqrt, (np.array([1, 4, 9], np.int32),), [1, 2, 3])
    assert got.dtype == np.float32


# ---------------------------------------------------------------- errors
def test_shape_mismatch_names_function_and_both_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(3,\) and \(4,\) cannot be broadcast"):
        pnp.add(np.ones(3), np.ones(4))


def test_shape_mismatch_under_jit():
    with pytest.raises(ValueError, match=r"multiply: shapes \(2, 3\) and \(2,\)"):
        pj.jit(lambda a, b: a * b)(np.ones((2, 3)), np.ones(2))


def test_bad_axis_names_axis_and_rank():
    with pytest.raises(ValueError, match="sum: axis 2 is out of bounds for an array of rank 2"):
        pnp.sum(np.ones((2, 3)), axis=2)
    with pytest.raises(IndexError, match="axis -4"):
        pnp.concatenate([np.ones((2, 3))] * 2, axis=-4)


@pytest.mark.parametrize("bad", ["abc", ["a", "b"], object(), None])
def test_non_array_argument_names_argument_and_type(bad):
    with pytest.raises(TypeError, match=rf"add: argument x2 has type {type(bad).__name__}"):
        pnp.add(np.ones(2), bad)


def test_non_array_argument_of_reduction():
    with pytest.raises(TypeError, match="sum: argument a has type dict"):
        pnp.sum({"a": 1})


def test_matmul_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        pnp.matmul(np.ones((2, 3)), np.ones((4, 5)))


def test_reshape_error_names_shapes():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape array of shape \(2, 3\)"):
        pnp.reshape(np.ones((2, 3)), (4, 2))


def test_nonzero_of_traced_value_suggests_size():
    with pytest.raises(ConcretizationError, match="size="):
        pj.jit(lambda x: pnp.nonzero(x))(np.ones(3))


def test_unique_of_traced_value_is_an_error():
    with pytest.raises(ConcretizationError, match="unique"):
        pj.jit(pnp.unique)(np.ones(3))


def test_max_of_empty_needs_initial(backend):
    with pytest.raises(ValueError, match="initial"):
        pnp.max(np.ones((0, 2)), axis=0)
    out = pnp.max(np.ones((0, 2)), axis=0, initial=-1.0)
    np.testing.assert_array_equal(np.asarray(out), [-1, -1])


# ---------------------------------------------------------------- creation
def test_full_and_like(backend):
    assert both(lambda: pnp.full((2, 2), 7)).dtype == np.int32
    same(lambda: pnp.full(3, 2.5, pnp.float16), want=np.full(3, 2.5, np.float16))
    x = np.ones((2, 3), np.int8)
    for f, v in [(pnp.zeros_like, 0), (pnp.ones_like, 1), (lambda a: pnp.full_like(a, 4), 4)]:
        got = both(f, x)
        assert got.dtype == np.int8 and got.shape == (2, 3) and (got == v).all()
    assert pnp.empty_like(x, dtype=np.float32, shape=(4,)).shape == (4,)


@pytest.mark.parametrize("args", [(5,), (2, 9, 3), (0.0, 1.0, 0.1), (5, 0, -1), (1.5, -2, -0.5),
                                  (3, 3)])
def test_arange(backend, args):
    got = both(lambda: pnp.arange(*args))
    want = np.arange(*args)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_arange_with_dtype_and_traced_bound_error(backend):
    np.testing.assert_array_equal(np.asarray(pnp.arange(4, dtype=pnp.bfloat16)), [0, 1, 2, 3])
    with pytest.raises(ConcretizationError, match="static"):
        pj.jit(lambda n: pnp.arange(n))(3)


@pytest.mark.parametrize("kw", [{}, {"endpoint": False}, {"num": 1}, {"num": 0}])
def test_linspace(backend, kw):
    got = both(lambda: pnp.linspace(-1.0, 2.0, **{"num": 7, **kw}))
    want = np.linspace(-1.0, 2.0, **{"num": 7, **kw})
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_linspace_array_endpoints_axis_and_retstep(backend):
    got, step = pnp.linspace(np.zeros(2), np.array([1.0, 2.0]), 5, retstep=True, axis=1)
    want, wstep = np.linspace(np.zeros(2), np.array([1.0, 2.0]), 5, retstep=True, axis=1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(step), wstep)


def test_logspace_and_geomspace(backend):
    close(lambda: pnp.logspace(0, 3, 4), (), np.logspace(0, 3, 4), rtol=1e-6)
    close(lambda: pnp.geomspace(1, 1000, 4), (), np.geomspace(1, 1000, 4), rtol=1e-6)
    close(lambda: pnp.geomspace(-2, -32, 5), (), np.geomspace(-2, -32, 5), rtol=1e-6)


def test_eye_identity_tri(backend):
    same(lambda: pnp.eye(3, 4, k=1), want=np.eye(3, 4, k=1))
    same(lambda: pnp.identity(3, pnp.int32), want=np.identity(3, np.int32))
    same(lambda: pnp.tri(3, 4, -1), want=np.tri(3, 4, -1))


def test_meshgrid_and_indices(backend):
    x, y = np.arange(3), np.arange(4.0)
    for kw in [{}, {"indexing": "ij"}, {"sparse": True}]:
        got = both(lambda a, b: pnp.meshgrid(a, b, **kw), x, y)
        for g, w in zip(got, np.meshgrid(x, y, **kw)):
            np.testing.assert_array_equal(g, w)
    same(lambda: pnp.indices((2, 3)), want=np.indices((2, 3)))


def test_array_copies_numpy_input(backend):
    src = np.ones(3, np.float32)
    a = pnp.array(src)
    src[0] = 5
    assert float(a[0]) == 1.0 and pnp.array(2.0, ndmin=2).shape == (1, 1)


def test_asarray_of_list_of_traced_values_stacks(backend):
    got = both(lambda a: pnp.asarray([a, a * 2, 3.0]), np.float32(1.5))
    np.testing.assert_array_equal(got, [1.5, 3.0, 3.0])


# ---------------------------------------------------------------- elementwise math
def test_floor_divide_and_remainder_follow_python_signs(backend):
    a = np.array([7, -7, 7, -7, 0], np.int32)
    b = np.array([2, 2, -2, -2, 3], np.int32)
    same(pnp.floor_divide, a, b, want=a // b)
    same(pnp.remainder, a, b, want=a % b)
    same(pnp.fmod, a, b, want=np.fmod(a, b))
    af, bf = a.astype(np.float32), b.astype(np.float32)
    same(pnp.floor_divide, af, bf, want=af // bf)
    same(pnp.remainder, af, bf, want=af % bf)


def test_float_floor_divide_matches_numpy_where_quotient_rounds(backend):
    a, b = np.array([1.0, -1.0, 5.0], np.float32), np.array([0.1, 0.1, 0.5], np.float32)
    same(pnp.floor_divide, a, b, want=a // b)
    np.testing.assert_array_equal(both(pnp.divmod, a, b)[1], a % b)


def test_integer_division_by_zero_gives_zero(backend):
    same(pnp.floor_divide, np.array([3, -3]), np.array([0, 0]), want=[0, 0])


def test_power_with_python_int_is_integer_pow(backend):
    assert "integer_pow[y=3]" in str(pj.make_jaxpr(lambda x: x ** 3)(np.ones(2, np.float32)))
    same(lambda x: x ** 3, np.array([2, -3], np.int8), want=[8, -27])
    with pytest.raises(ValueError, match="negative integer powers"):
        pnp.power(np.array([2]), -1)
    close(pnp.power, (np.float32([2.0, 9.0]), np.float32([0.5, -1.0])), [2 ** 0.5, 1 / 9])


def test_float_power_is_float64(backend):
    got = both(pnp.float_power, np.array([2, 3], np.int32), 2)
    assert got.dtype == np.float64 and list(got) == [4.0, 9.0]


def test_logaddexp_is_stable(backend):
    a = np.array([1000.0, -1000.0, -np.inf, np.inf, 0.0], np.float32)
    b = np.array([1000.0, -1001.0, -np.inf, np.inf, 0.0], np.float32)
    close(pnp.logaddexp, (a, b), np.logaddexp(a.astype(np.float64), b), rtol=1e-6)
    close(pnp.logaddexp2, (a, b), np.logaddexp2(a.astype(np.float64), b), rtol=1e-6)


def test_hypot_does_not_overflow(backend):
    close(pnp.hypot, (np.float32([3e30, 3.0, 0.0]), np.float32([4e30, 4.0, 0.0])), [5e30, 5, 0])


def test_special_values(backend):
    x = np.array([np.nan, np.inf, -np.inf, 1.0, -0.0], np.float32)
    for f in [pnp.isnan, pnp.isinf, pnp.isfinite, pnp.isposinf, pnp.isneginf, pnp.signbit]:
        same(f, x, want=getattr(np, f.__name__)(x))
    same(pnp.nan_to_num, x, want=np.nan_to_num(x))
    np.testing.assert_array_equal(both(lambda a: pnp.nan_to_num(a, nan=-1, posinf=9), x),
                                  np.nan_to_num(x, nan=-1, posinf=9))
    assert not both(pnp.isnan, np.array([1, 2])).any()


def test_rounding(backend):
    x = np.array([-2.5, -1.5, -0.4, 0.5, 1.5, 2.567], np.float32)
    for f in [pnp.floor, pnp.ceil, pnp.trunc, pnp.rint, pnp.fix, pnp.round]:
        same(f, x, want=getattr(np, f.__name__)(x))
    close(lambda a: pnp.round(a, 2), (x,), np.round(x, 2), rtol=1e-6)
    same(lambda a: pnp.round(a, -1), np.array([14, 15, 26]), want=[10, 20, 30])
    assert both(pnp.floor, np.array([3], np.int16)).dtype == np.int16


def test_sign_abs_negative_of_each_kind(backend):
    same(pnp.negative, np.array([1, 0], np.uint8), want=[255, 0])
    same(pnp.abs, np.array([-3, 2], np.int8), want=[3, 2])
    same(pnp.sign, np.float32([-2, 0, 3]), want=[-1, 0, 1])
    same(pnp.fabs, np.array([-3]), want=[3.0])


def test_bool_add_and_multiply_are_logical(backend):
    a, b = np.array([True, True, False]), np.array([True, False, False])
    same(pnp.add, a, b, want=a + b)
    same(pnp.multiply, a, b, want=a * b)


def test_logical_ops_treat_nonzero_as_true(backend):
    a, b = np.array([0, 2, 3]), np.array([0.0, 0.0, 1.5])
    for f in [pnp.logical_and, pnp.logical_or, pnp.logical_xor]:
        same(f, a, b, want=getattr(np, f.__name__)(a, b))
    same(pnp.logical_not, a, want=[True, False, False])


def test_shifts(backend):
    s = np.array([-8, 8], np.int32)
    same(pnp.right_shift, s, 1, want=[-4, 4])
    same(pnp.right_shift, np.array([128], np.uint8), 1, want=[64])
    same(pnp.left_shift, np.array([3], np.uint8), 7, want=[128])


def test_fmax_fmin_copysign_heaviside_ldexp(backend):
    a, b = np.float32([1, np.nan, 3]), np.float32([np.nan, 2, -1])
    same(pnp.fmax, a, b, want=np.fmax(a, b))
    same(pnp.fmin, a, b, want=np.fmin(a, b))
    same(pnp.maximum, a, b, want=np.maximum(a, b))
    same(pnp.copysign, np.float32([1, 2]), np.float32([-0.0, 3]), want=[-1, 2])
    same(pnp.heaviside, np.float32([-1, 0, 2]), 0.5, want=[0, 0.5, 1])
    same(pnp.ldexp, np.float32([1.5, 3]), np.array([2, -1]), want=[6, 1.5])


def test_isclose_allclose_array_equal(backend):
    a, b = np.float32([1, np.nan, np.inf, 1]), np.float32([1 + 1e-7, np.nan, np.inf, 2])
    same(pnp.isclose, a, b, want=np.isclose(a, b))
    np.testing.assert_array_equal(both(lambda x, y: pnp.isclose(x, y, equal_nan=True), a, b),
                                  np.isclose(a, b, equal_nan=True))
    assert not bool(pnp.allclose(a, b)) and bool(pnp.allclose(a[:3], b[:3], equal_nan=True))
    assert bool(pnp.array_equal([1, 2], [1, 2])) and not bool(pnp.array_equal([1, 2], [1, 2, 3]))
    assert bool(pnp.array_equiv([1, 1], 1)) and not bool(pnp.array_equiv([1, 2], [1, 2, 3]))


def test_where_select_clip(backend):
    c = np.array([True, False, True])
    same(lambda x: pnp.where(c, x, -1), np.arange(3), want=[0, -1, 2])
    assert both(lambda x: pnp.where(x > 1, x, 0.5), np.arange(3, dtype=np.int8)).dtype == np.float32
    x = np.arange(6.0)
    np.testing.assert_array_equal(both(lambda a: pnp.select([a < 2, a > 3], [a, a * 10], -1), x),
                                  np.select([x < 2, x > 3], [x, x * 10], -1))
    same(lambda a: pnp.clip(a, 1, 4), x, want=np.clip(x, 1, 4))
    same(lambda a: pnp.clip(a, max=2), x, want=np.clip(x, None, 2))


def test_transcendental_functions_match_float64(backend):
    x = np.float32([0.1, 0.5, 0.9])
    for name in ["exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "cbrt", "sin",
                 "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "arcsinh",
                 "arctanh", "deg2rad", "rad2deg", "reciprocal", "sinc", "square"]:
        close(getattr(pnp, name), (x,), getattr(np, name)(x.astype(np.float64)), rtol=1e-6)
    close(pnp.arccosh, (x + 1,), np.arccosh((x + 1).astype(np.float64)), rtol=1e-6)
    close(pnp.arctan2, (x, -x), np.arctan2(x.astype(np.float64), -x), rtol=1e-6)


# ---------------------------------------------------------------- reductions
def test_reductions_with_axis_and_keepdims(backend):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7
    for name in ["sum", "prod", "mean", "max", "min", "amax", "amin", "ptp", "all", "any",
                 "argmax", "argmin", "count_nonzero", "median"]:
        one_axis = name in ("argmax", "argmin", "median")
        for axis in [None, 1, -1] + ([] if one_axis else [(0, 2)]):
            got = both(lambda a: getattr(pnp, name)(a, axis=axis, keepdims=True), x)
            want = getattr(np, name)(x, axis=axis, keepdims=True)
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{name} {axis}")


def test_var_std_with_ddof(backend):
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    close(lambda a: pnp.var(a, axis=0, ddof=1), (x,), np.var(x.astype(np.float64), 0, ddof=1), 1e-5)
    close(lambda a: pnp.std(a, ddof=1), (x,), np.std(x.astype(np.float64), ddof=1), 1e-5)
    assert np.isnan(pnp.var(np.ones(1, np.float32), ddof=1))   # 0 / 0, as numpy


def test_average_with_weights(backend):
    x = np.arange(6.0).reshape(2, 3)
    w = np.array([1.0, 2.0, 3.0])
    close(lambda a: pnp.average(a, axis=1, weights=w), (x,), np.average(x, axis=1, weights=w))
    avg, sw = pnp.average(x, axis=0, returned=True)
    np.testing.assert_allclose(np.asarray(sw), [2, 2, 2])


def test_nan_reductions(backend):
    x = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]], np.float32)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        for name in ["nansum", "nanmean", "nanmax", "nanmin", "nanprod", "nanvar", "nanstd"]:
            close(lambda a: getattr(pnp, name)(a, axis=1), (x,), getattr(np, name)(x, axis=1))


def test_cumulative_and_diff(backend):
    x = np.array([[1, 2, 3], [4, 5, 6]], np.int8)
    same(lambda a: pnp.cumsum(a, 1), x, want=np.cumsum(x, 1, dtype=np.int32))
    same(pnp.cumprod, x, want=np.cumprod(x, dtype=np.int32))
    same(lambda a: pnp.diff(a, 2, 1), x, want=np.diff(x, 2, 1))
    same(lambda a: pnp.diff(a, prepend=0, axis=0), x, want=np.diff(x, prepend=0, axis=0))
    b = np.array([True, False, False, True])
    same(pnp.diff, b, want=np.diff(b))


def test_trace_and_diagonal(backend):
    x = np.arange(24).reshape(2, 3, 4)
    for off in [0, 1, -1, 3, -5]:
        same(lambda a: pnp.diagonal(a, off, 1, 2), x, want=np.diagonal(x, off, 1, 2))
        same(lambda a: pnp.trace(a, off, 0, 2), x, want=np.trace(x, off, 0, 2))


# ---------------------------------------------------------------- shapes
def test_reshape_forms(backend):
    x = np.arange(12)
    same(lambda a: pnp.reshape(a, (3, -1)), x, want=x.reshape(3, -1))
    same(lambda a: pnp.reshape(a, (3, 4), order="F"), x, want=x.reshape((3, 4), order="F"))
    same(lambda a: a.reshape(2, 2, 3).ravel(), x, want=x)


def test_transposes(backend):
    x = np.arange(24).reshape(2, 3, 4)
    same(pnp.transpose, x, want=x.T)
    same(lambda a: pnp.moveaxis(a, [0, 1], [2, 0]), x, want=np.moveaxis(x, [0, 1], [2, 0]))
    same(lambda a: pnp.permute_dims(a, (1, 0, 2)), x, want=x.transpose(1, 0, 2))
    with pytest.raises(ValueError, match="permutation"):
        pnp.transpose(x, (0, 0, 1))


def test_squeeze_expand_dims_atleast(backend):
    x = np.ones((1, 3, 1))
    assert both(pnp.squeeze, x).shape == (3,)
    assert both(lambda a: pnp.expand_dims(a, (0, -1)), x).shape == (1, 1, 3, 1, 1)
    with pytest.raises(ValueError, match="size is not 1"):
        pnp.squeeze(x, 1)
    for f in [pnp.atleast_1d, pnp.atleast_2d, pnp.atleast_3d]:
        for a in [np.float32(1), np.ones(2), np.ones((2, 3))]:
            assert f(a).shape == getattr(np, f.__name__)(a).shape


def test_joining(backend):
    a, b = np.arange(6).reshape(2, 3), np.arange(6, 12).reshape(2, 3)
    for f in [pnp.hstack, pnp.vstack, pnp.dstack, pnp.column_stack]:
        same(lambda x, y: f([x, y]), a, b, want=getattr(np, f.__name__)([a, b]))
    same(lambda x, y: pnp.stack([x, y], -1), a, b, want=np.stack([a, b], -1))
    same(lambda x, y: pnp.concatenate([x, y], None), a, b, want=np.concatenate([a, b], None))
    same(lambda x, y: pnp.append(x, y, 0), a, b, want=np.append(a, b, 0))
    assert pnp.concatenate([np.ones(2, np.int8), np.ones(1, np.float16)]).dtype == np.float16
    with pytest.raises(ValueError, match="same shape"):
        pnp.stack([a, np.ones(3)])


def test_splitting(backend):
    x = np.arange(10)
    for got, want in [(both(lambda a: pnp.split(a, 5), x), np.split(x, 5)),
                      (both(lambda a: pnp.split(a, [3, -2]), x), np.split(x, [3, -2])),
                      (both(lambda a: pnp.array_split(a, 3), x), np.array_split(x, 3))]:
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    with pytest.raises(ValueError, match="equal"):
        pnp.split(x, 3)


def test_tile_repeat(backend):
    x = np.arange(6).reshape(2, 3)
    for reps in [2, (2, 1), (1, 2, 2)]:
        same(lambda a: pnp.tile(a, reps), x, want=np.tile(x, reps))
    same(lambda a: pnp.repeat(a, 2, 1), x, want=np.repeat(x, 2, 1))
    same(lambda a: pnp.repeat(a, [1, 0, 2], 1), x, want=np.repeat(x, [1, 0, 2], 1))
    same(lambda a: pnp.repeat(a, 2), x, want=np.repeat(x, 2))


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric", "wrap"])
def test_pad_modes(backend, mode):
    x = np.arange(12.0).reshape(3, 4)
    for pw in [1, ((1, 2), (0, 3)), ((2, 2), (5, 1))]:
        same(lambda a: pnp.pad(a, pw, mode), x, want=np.pad(x, pw, mode))


def test_pad_constant_values_per_axis(backend):
    x = np.ones((2, 2), np.int32)
    cv = ((1, 2), (3, 4))
    np.testing.assert_array_equal(both(lambda a: pnp.pad(a, 1, constant_values=cv), x),
                                  np.pad(x, 1, constant_values=cv))


def test_flip_roll_rot90(backend):
    x = np.arange(12).reshape(3, 4)
    for f, args in [(pnp.flip, ()), (pnp.flip, (1,)), (pnp.fliplr, ()), (pnp.flipud, ()),
                    (pnp.roll, (2,)), (pnp.roll, (-1, 1)), (pnp.roll, ((1, 2), (0, 1))),
                    (pnp.rot90, ()), (pnp.rot90, (2,)), (pnp.rot90, (3, (1, 0)))]:
        same(lambda a: f(a, *args), x, want=getattr(np, f.__name__)(x, *args))


def test_roll_by_traced_shift(backend):
    x = np.arange(5)
    np.testing.assert_array_equal(pj.jit(lambda a, s: pnp.roll(a, s))(x, -7), np.roll(x, -7))


def test_broadcasting_helpers(backend):
    np.testing.assert_array_equal(both(lambda a: pnp.broadcast_to(a, (2, 3)), np.arange(3)),
                                  np.broadcast_to(np.arange(3), (2, 3)))
    a, b = pnp.broadcast_arrays(np.ones((2, 1)), np.ones(3))
    assert a.shape == b.shape == (2, 3)
    assert pnp.broadcast_shapes((2, 1), (3,)) == (2, 3)
    with pytest.raises(ValueError, match=r"broadcast_to: cannot broadcast shape \(3,\) to \(4,\)"):
        pnp.broadcast_to(np.ones(3), (4,))


def test_triangles_and_diag(backend):
    x = np.arange(12).reshape(3, 4)
    for k in [0, 1, -1]:
        same(lambda a: pnp.tril(a, k), x, want=np.tril(x, k))
        same(lambda a: pnp.triu(a, k), x, want=np.triu(x, k))
        same(lambda a: pnp.diag(a, k), x, want=np.diag(x, k))
        same(lambda a: pnp.diag(a, k), np.arange(3), want=np.diag(np.arange(3), k))
    same(pnp.diagflat, np.ones((2, 2)), want=np.diagflat(np.ones((2, 2))))


def test_delete_and_shape_queries(backend):
    x = np.arange(10).reshape(2, 5)
    np.testing.assert_array_equal(np.asarray(pnp.delete(x, [0, 2], 1)), np.delete(x, [0, 2], 1))
    assert pnp.shape(x) == (2, 5) and pnp.ndim(x) == 2 and pnp.size(x) == 10 and pnp.size(x, 1) == 5


# ---------------------------------------------------------------- contractions
@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)),
                                   ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)),
                                   ((5, 1, 2, 3), (4, 3, 2)),
                                   ((0, 3), (3, 2))])
def test_matmul_shapes(backend, sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
    close(pnp.matmul, (a, b), np.matmul(a.astype(np.float64), b), rtol=1e-5, atol=1e-6)


def test_dot_inner_outer_vdot_kron_tensordot(backend):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4, 2))
    close(pnp.dot, (a, b), np.dot(a, b), 1e-12)
    close(pnp.inner, (a, b[0, :, :].T), np.inner(a, b[0, :, :].T), 1e-12)
    close(pnp.outer, (a[0], b[0]), np.outer(a[0], b[0]), 1e-12)
    close(pnp.vdot, (a[0], a[0]), np.vdot(a[0], a[0]), 1e-12)
    close(pnp.kron, (a[0], b[0, :2]), np.kron(a[0], b[0, :2]), 1e-12)
    c = rng.standard_normal((4, 3))
    axes = ([1, 2], [1, 0])
    close(lambda x, y: pnp.tensordot(x, y, axes), (a, c), np.tensordot(a, c, axes), 1e-12)
    bt = b.transpose(1, 0, 2)
    close(lambda x, y: pnp.tensordot(x, y, 1), (a, bt), np.tensordot(a, bt, 1), 1e-12)
    close(pnp.dot, (2.0, a), 2 * a)
    assert both(pnp.dot, np.array([True, False]), np.array([True, True])) == np.True_


@pytest.mark.parametrize("subs,shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("ij,jk", [(2, 3), (3, 4)]), ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]), ("ij->", [(2, 3)]), ("ij->ji", [(2, 3)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]), ("i,i,i->i", [(3,), (3,), (3,)]),
    ("ij,kl->ijkl", [(2, 3), (4, 5)]), ("iij->j", [(3, 3, 2)]), ("i...->...", [(2, 3, 4)]),
    ("ab,bc,cd->ad", [(2, 3), (3, 4), (4, 5)]), ("ab,cb->", [(2, 3), (4, 3)]),
    ("i,i", [(4,), (4,)]), ("...i,...i->...", [(1, 3), (5, 3)])])
def test_einsum(backend, subs, shapes):
    rng = np.random.default_rng(2)
    ops = [rng.standard_normal(s) for s in shapes]
    close(lambda *a: pnp.einsum(subs, *a), ops, np.einsum(subs, *ops), rtol=1e-10, atol=1e-12)


def test_einsum_errors():
    with pytest.raises(ValueError, match="operand"):
        pnp.einsum("ij,jk->ik", np.ones((2, 3)))
    with pytest.raises(ValueError, match="sizes 3 and 4"):
        pnp.einsum("ij,jk->ik", np.ones((2, 3)), np.ones((4, 2)))


# ---------------------------------------------------------------- sorting
def test_sort_argsort_stable_and_descending(backend):
    x = np.array([[3, 1, 2, 1], [0, 0, 5, -1]], np.int32)
    same(pnp.sort, x, want=np.sort(x))
    same(lambda a: pnp.sort(a, None), x, want=np.sort(x, None))
    same(lambda a: pnp.argsort(a, 0), x, want=np.argsort(x, 0, kind="stable"))
    same(lambda a: pnp.argsort(a, descending=True), x, want=[[0, 2, 1, 3], [2, 0, 1, 3]])
    same(lambda a: pnp.sort(a, descending=True), x, want=-np.sort(-x))
    f = np.array([np.nan, 1.0, -np.inf])
    same(pnp.sort, f, want=np.sort(f))


def test_top_k(backend):
    x = np.array([[1.0, 5.0, 3.0, 5.0]], np.float32)
    vals, idx = both(lambda a: pnp.top_k(a, 2), x)
    np.testing.assert_array_equal(vals, [[5, 5]])
    np.testing.assert_array_equal(idx, [[1, 3]])


def test_searchsorted_digitize(backend):
    a = np.array([1.0, 2.0, 2.0, 3.0])
    v = np.array([[0.0, 2.0], [2.5, 9.0]])
    for side in ["left", "right"]:
        np.testing.assert_array_equal(both(lambda x, y: pnp.searchsorted(x, y, side), a, v),
                                      np.searchsorted(a, v, side))
    same(lambda x: pnp.digitize(x, a), v, want=np.digitize(v, a))
    assert int(pnp.searchsorted(a[::-1], 2.5, sorter=[3, 2, 1, 0])) == 3


@pytest.mark.parametrize("method", ["linear", "lower", "higher", "nearest", "midpoint"])
def test_quantile_methods(backend, method):
    x = np.random.default_rng(3).standard_normal((4, 7))
    q = np.array([0.0, 0.3, 0.5, 1.0])
    close(lambda a: pnp.quantile(a, q, axis=1, method=method), (x,),
          np.quantile(x, q, 1, method=method), 1e-12)
    close(lambda a: pnp.percentile(a, 40, keepdims=True), (x,),
          np.percentile(x, 40, keepdims=True), 1e-12)


def test_median_of_nan_is_nan(backend):
    x = np.array([[1.0, np.nan, 2.0], [3.0, 1.0, 2.0]])
    same(lambda a: pnp.median(a, 1), x, want=np.median(x, 1))


def test_unique_and_lexsort(backend):
    vals, idx, inv, cnt = pnp.unique(np.array([3, 1, 3, 2]), True, True, True)
    for g, w in zip((vals, idx, inv, cnt), np.unique(np.array([3, 1, 3, 2]), True, True, True)):
        np.testing.assert_array_equal(np.asarray(g), w)
    k1, k2 = np.array([1, 0, 1, 0]), np.array([3, 3, 1, 2])
    np.testing.assert_array_equal(np.asarray(pnp.lexsort([k2, k1])), np.lexsort([k2, k1]))


def test_interp(backend):
    xp, fp = np.array([0.0, 1.0, 3.0]), np.array([0.0, 10.0, 30.0])
    x = np.array([-1.0, 0.5, 1.0, 2.0, 3.0, 4.0])
    close(pnp.interp, (x, xp, fp), np.interp(x, xp, fp), 1e-12)
    close(lambda a: pnp.interp(a, xp, fp, left=-5, right=99), (x,), np.interp(x, xp, fp, -5, 99),
          1e-12)


def test_bincount(backend):
    x = np.array([0, 1, 1, 4])
    np.testing.assert_array_equal(np.asarray(pnp.bincount(x)), np.bincount(x))
    np.testing.assert_array_equal(pj.jit(lambda a: pnp.bincount(a, length=6))(x),
                                  np.bincount(x, minlength=6))
    w = np.ones(4) / 2
    np.testing.assert_allclose(np.asarray(pnp.bincount(x, weights=w)), np.bincount(x, w))


# ---------------------------------------------------------------- linalg
@pytest.mark.parametrize("ord_", [None, 1, 2, np.inf, -np.inf, 0, 3, 0.5])
def test_vector_norms(backend, ord_):
    x = np.random.default_rng(4).standard_normal((3, 5)).astype(np.float32)
    close(lambda a: pnp.linalg.norm(a, ord_, axis=1), (x,),
          np.linalg.norm(x.astype(np.float64), ord_, axis=1), 1e-5)


@pytest.mark.parametrize("ord_", [None, "fro", 1, -1, np.inf, -np.inf])
def test_matrix_norms(backend, ord_):
    x = np.random.default_rng(5).standard_normal((2, 3, 4))
    close(lambda a: pnp.linalg.norm(a, ord_, axis=(1, 2), keepdims=True), (x,),
          np.linalg.norm(x, ord_, axis=(1, 2), keepdims=True), 1e-12)
    close(lambda a: pnp.linalg.matrix_norm(a, ord=ord_ or "fro"), (x,),
          np.linalg.matrix_norm(x, ord=ord_ or "fro"), 1e-12)


def test_norm_defaults_and_unsupported(backend):
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(np.asarray(pnp.linalg.norm(x)), np.linalg.norm(x))
    np.testing.assert_allclose(np.asarray(pnp.linalg.vector_norm(x)), np.linalg.vector_norm(x))
    with pytest.raises(NotImplementedError, match="ord=2"):
        pnp.linalg.norm(x, 2)


# ---------------------------------------------------------------- nn
def test_softmax_is_stable_and_matches_float64(backend):
    x = np.array([[1000.0, 1001.0, 1002.0], [-1e4, 0.0, 1.0], [-np.inf, 0.0, 0.0]], np.float32)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(1, keepdims=True))
    close(nn.softmax, (x,), e / e.sum(1, keepdims=True), 1e-6, 1e-30)
    lse = x64.max(1, keepdims=True) + np.log(e.sum(1, keepdims=True))
    close(nn.log_softmax, (x[:2],), (x64 - lse)[:2], 1e-6)


def test_logsumexp(backend):
    x = np.array([[1000.0, 1000.0], [-np.inf, -np.inf], [-1e3, 5.0]], np.float32)
    ref = np.array([1000 + np.log(2), -np.inf, np.log(np.exp(-1e3) + np.exp(5.0))])
    close(lambda a: nn.logsumexp(a, axis=1), (x,), ref, 1e-6)
    close(lambda a: nn.logsumexp(a, keepdims=True), (x[:1],), [[1000 + np.log(2)]], 1e-6)
    out, sign = nn.logsumexp(np.array([0.0, 0.0]), b=np.array([1.0, -2.0]), return_sign=True)
    assert float(out) == pytest.approx(0.0, abs=1e-12) and float(sign) == -1


def test_activations(backend):
    x = np.linspace(-4, 4, 9).astype(np.float32)
    x64 = x.astype(np.float64)
    from math import erf
    exact = 0.5 * x64 * (1 + np.vectorize(erf)(x64 / np.sqrt(2)))
    approx = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3)))
    for f, want in [(nn.relu, np.maximum(x64, 0)), (nn.sigmoid, 1 / (1 + np.exp(-x64))),
                    (nn.silu, x64 / (1 + np.exp(-x64))), (nn.tanh, np.tanh(x64)),
                    (nn.leaky_relu, np.where(x64 >= 0, x64, 0.01 * x64)),
                    (nn.hard_swish, x64 * np.clip(x64 + 3, 0, 6) / 6),
                    (nn.gelu, approx), (lambda a: nn.gelu(a, approximate=False), exact)]:
        close(f, (x,), want, 1e-6, 1e-7)


def test_one_hot(backend):
    got = both(lambda a: nn.one_hot(a, 3), np.array([0, 2, 3, -1]))
    np.testing.assert_array_equal(got, [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]])
    assert got.dtype == np.float32
    assert nn.one_hot(np.array([1, 2]), 4, dtype=pnp.int8, axis=0).shape == (4, 2)
