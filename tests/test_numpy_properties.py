"""Property tests: polyjit.numpy against numpy on random shapes, dtypes and values, eagerly and
under jit, including broadcasting, promotion, Python scalars, 0-d arrays and size-0 dims."""
import ml_dtypes
import numpy as np
from hypothesis import HealthCheck, assume, given, reject, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import polyjit as pj
import polyjit.numpy as pnp
from agreement import assert_eager_matches_jit
from polyjit import backends
from polyjit.backends.compiled import Float64Unsupported

BF16 = np.dtype(ml_dtypes.bfloat16)
INTS = [np.dtype(t) for t in ("int8", "int16", "int32", "int64", "uint8", "uint32")]
FLOATS = [np.dtype("float16"), BF16, np.dtype("float32"), np.dtype("float64")]
ALL = [np.dtype(bool)] + INTS + FLOATS
TOL = {np.dtype("float16"): 2e-3, BF16: 1.6e-2, np.dtype("float32"): 1e-6, np.dtype("float64"): 1e-12}


def examples(n):
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.filter_too_much])


def run(f, *args):
    """f eagerly on polyjit arrays and under jit: both as numpy arrays, required to agree
    (tests/agreement.py). On a backend without 64-bit types (WebGPU), a drawn 64-bit dtype
    meets the backend's documented refusal, and the example is set aside."""
    try:
        eager = np.asarray(f(*[pnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]))
        jitted = np.asarray(pj.jit(f)(*args))
    except Float64Unsupported:
        if backends.get_backend().fp64:
            raise
        reject()
    assert_eager_matches_jit(eager, jitted)
    return eager


@st.composite
def arrays(draw, dtype, shape, lo=-100, hi=100):
    """Values of dtype in [lo, hi] (clipped to the dtype's range), never all zeros."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        a = draw(hnp.arrays(dt, shape, elements=st.booleans()))
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        elems = st.integers(max(int(lo), info.min), min(int(hi), info.max))
        a = draw(hnp.arrays(dt, shape, elements=elems))
    else:
        base = np.dtype("float16") if dt == np.float16 else np.dtype("float64") if dt == np.float64 \
            else np.dtype("float32")
        lo, hi = _inward(lo, base, np.inf), _inward(hi, base, -np.inf)
        elems = st.floats(lo, hi, width=base.itemsize * 8, allow_subnormal=False)
        a = draw(hnp.arrays(base, shape, elements=elems)).astype(dt)
    assume(a.size == 0 or a.any())
    return a


def _inward(v, dt, toward):
    """v rounded to dt, stepping toward `toward` if rounding left the interval."""
    r = dt.type(v)
    return float(np.nextafter(r, dt.type(toward)) if (r < v if toward > 0 else r > v) else r)


def expected_dtype(a, b):
    """The promotion rule under test: numpy's, with bfloat16 ranked like float16."""
    a, b = np.dtype(a), np.dtype(b)
    if BF16 not in (a, b):
        return np.promote_types(a, b)
    other = b if a == BF16 else a
    if other in (BF16, np.dtype(bool), np.dtype("int8"), np.dtype("uint8")):
        return BF16
    return np.dtype("float32") if other == np.float16 else np.promote_types(np.float16, other)


def assert_close(got, want, dt, scale=None, rtol=None, atol=0.0):
    """|got - want| <= rtol * max(|want|, scale) + atol, elementwise, rtol = tol(dt) unless
    given (equal infs and NaNs pass; subnormal results within a few subnormal steps);
    want is rounded to dt first, so both overflow and underflow alike."""
    got = np.asarray(got, np.float64)
    rtol = TOL[np.dtype(dt)] if rtol is None else rtol
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.asarray(want).astype(dt).astype(np.float64)
        assert got.shape == want.shape
        bound = rtol * np.maximum(np.abs(want), 0 if scale is None else scale) + atol
        # below the smallest normal a float carries absolute, not relative, precision:
        # allow a few subnormal steps there (products that underflow round in those steps)
        fi = ml_dtypes.finfo(dt)
        bound = np.maximum(bound, max(TOL[np.dtype(dt)] * float(fi.tiny), 8 * float(fi.smallest_subnormal)))
        if backends.default_backend() == "webgpu":    # WGSL may flush subnormals to zero
            bound = np.where(np.abs(want) < float(fi.tiny), np.maximum(bound, float(fi.tiny)), bound)
        ok = (got == want) | (np.isnan(got) & np.isnan(want)) | (np.abs(got - want) <= bound)
    assert ok.all(), f"got {got[~ok]}, want {want[~ok]} (dtype {np.dtype(dt)})"


broadcastable = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0,
                                                  max_side=4)


# ---------------------------------------------------------------- promotion and elementwise
@examples(120)
@given(st.sampled_from(ALL), st.sampled_from(ALL))
def test_result_type(da, db):
    a, b = np.ones(1, da), np.ones(1, db)
    assert pnp.result_type(a, b) == expected_dtype(da, db) == pnp.add(a, b).dtype


EXACT_BINARY = ["add", "subtract", "multiply", "maximum", "minimum", "equal", "not_equal", "less",
                "less_equal", "greater", "greater_equal"]


@examples(360)
@given(st.sampled_from(EXACT_BINARY), st.sampled_from(ALL), st.sampled_from(ALL), broadcastable,
       st.data())
def test_binary_ops_match_numpy(backend, name, da, db, shapes, data):
    dt = expected_dtype(da, db)
    assume(not (name == "subtract" and dt == np.bool_))
    a = data.draw(arrays(da, shapes.input_shapes[0]))
    b = data.draw(arrays(db, shapes.input_shapes[1]))
    got = run(getattr(pnp, name), a, b)
    with np.errstate(all="ignore"):
        want = getattr(np, name)(a.astype(dt), b.astype(dt))
    assert got.dtype == want.dtype and got.shape == shapes.result_shape
    np.testing.assert_array_equal(got, want)


@examples(240)
@given(st.sampled_from(["add", "subtract", "multiply", "maximum", "less"]), st.sampled_from(ALL),
       hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3), st.data())
def test_python_scalars_are_weak(backend, name, dt, shape, data):
    x = data.draw(arrays(dt, shape))
    scalar = data.draw(st.one_of(st.integers(0, 100), st.floats(-50, 50, width=16), st.booleans()))
    kind = lambda d: 0 if d == np.bool_ else 1 if d.kind in "iu" else 2  # noqa: E731
    s_kind = 0 if isinstance(scalar, bool) else 1 if isinstance(scalar, int) else 2
    want_dt = dt if kind(dt) >= s_kind else np.dtype("float32" if s_kind == 2 else "int32")
    assume(not (name == "subtract" and want_dt == np.bool_))
    got = run(lambda a: getattr(pnp, name)(a, scalar), x)
    with np.errstate(all="ignore"):
        want = getattr(np, name)(x.astype(want_dt), np.asarray(scalar, want_dt))
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@examples(180)
@given(st.sampled_from(INTS + FLOATS), broadcastable, st.data())
def test_floor_divide_and_remainder(backend, dt, shapes, data):
    a = data.draw(arrays(dt, shapes.input_shapes[0]))
    b = data.draw(arrays(dt, shapes.input_shapes[1]).filter(lambda v: (v != 0).all()))
    with np.errstate(all="ignore"):
        got, want = run(pnp.floor_divide, a, b), np.floor_divide(a, b)
        if backends.default_backend() == "webgpu" and dt in FLOATS:
            # WGSL's division is within 2.5 ulp, not correctly rounded: a quotient past 2^24
            # (its own floor) is off by as much
            assert_close(got, want, dt, rtol=4 * float(ml_dtypes.finfo(dt).eps))
        else:
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(run(pnp.remainder, a, b), np.remainder(a, b))


@examples(120)
@given(st.sampled_from(INTS + [np.dtype(bool)]), st.sampled_from(INTS), broadcastable, st.data())
def test_integer_true_divide_is_float(backend, da, db, shapes, data):
    a = data.draw(arrays(da, shapes.input_shapes[0]))
    b = data.draw(arrays(db, shapes.input_shapes[1], lo=1))
    got = run(pnp.true_divide, a, b)
    want_dt = np.float64 if expected_dtype(da, db).itemsize == 8 else np.float32
    assert got.dtype == want_dt
    assert_close(got, a.astype(np.float64) / b, want_dt)


@examples(120)
@given(st.sampled_from(INTS), hnp.array_shapes(min_dims=0, max_dims=2, max_side=4), st.data())
def test_bitwise_and_shifts(backend, dt, shape, data):
    a = data.draw(arrays(dt, shape))
    b = data.draw(arrays(dt, shape))
    s = data.draw(hnp.arrays(dt, shape, elements=st.integers(0, dt.itemsize * 8 - 1)))
    for name in ["bitwise_and", "bitwise_or", "bitwise_xor"]:
        np.testing.assert_array_equal(run(getattr(pnp, name), a, b), getattr(np, name)(a, b))
    np.testing.assert_array_equal(run(pnp.invert, a), np.invert(a))
    np.testing.assert_array_equal(run(pnp.left_shift, a, s), np.left_shift(a, s))
    np.testing.assert_array_equal(run(pnp.right_shift, a, s), np.right_shift(a, s))


UNARY_DOMAINS = {
    "exp": (-20, 20), "exp2": (-20, 20), "expm1": (-20, 20), "log": (1e-3, 100),
    "log2": (1e-3, 100), "log10": (1e-3, 100), "log1p": (-0.9, 100), "sqrt": (0, 100),
    "cbrt": (-100, 100), "sin": (-10, 10), "cos": (-10, 10), "tan": (-1.5, 1.5),
    "arcsin": (-1, 1), "arccos": (-1, 1), "arctan": (-100, 100), "sinh": (-10, 10),
    "cosh": (-10, 10), "tanh": (-10, 10), "arcsinh": (-100, 100), "arccosh": (1, 100),
    "arctanh": (-0.99, 0.99), "square": (-100, 100), "reciprocal": (0.01, 100), "abs": (-100, 100),
    "negative": (-100, 100), "floor": (-100, 100), "ceil": (-100, 100), "trunc": (-100, 100),
    "rint": (-100, 100), "sign": (-100, 100), "deg2rad": (-100, 100), "rad2deg": (-100, 100)}


@examples(450)
@given(st.sampled_from(sorted(UNARY_DOMAINS)), st.sampled_from(FLOATS),
       hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5), st.data())
def test_unary_float_functions_match_float64(backend, name, dt, shape, data):
    lo, hi = UNARY_DOMAINS[name]
    x = data.draw(arrays(dt, shape, lo, hi))
    got = run(getattr(pnp, name), x)
    assert got.dtype == dt
    with np.errstate(all="ignore"):
        want = getattr(np, name)(x.astype(np.float64))
    assert_close(got, want, dt, scale=np.finfo(np.float32).tiny)


@examples(120)
@given(st.sampled_from(["sqrt", "exp", "sin", "log1p", "arctan"]),
       st.sampled_from(INTS + [np.dtype(bool)]),
       hnp.array_shapes(min_dims=0, max_dims=2, max_side=4), st.data())
def test_float_functions_of_integers(backend, name, dt, shape, data):
    x = data.draw(arrays(dt, shape, 0, 10))
    got = run(getattr(pnp, name), x)
    assert got.dtype == (np.float64 if dt.itemsize == 8 else np.float32)
    assert_close(got, getattr(np, name)(x.astype(np.float64)), got.dtype)


# ---------------------------------------------------------------- reductions
@st.composite
def axis_choice(draw, ndim):
    if draw(st.booleans()) or ndim == 0:
        return None
    axes = draw(st.lists(st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim,
                         unique_by=lambda a: a % ndim))
    return axes[0] if len(axes) == 1 and draw(st.booleans()) else tuple(axes)


def summation_error(x64, n, dt, axis=None, keepdims=False):
    """The worst-case rounding error of adding n terms of dtype dt in that dtype, (n - 1) * u *
    sum|x| (u the unit roundoff), per output element: it bounds an accumulation order's
    effect, and matters only where the sum cancels (|sum x| << sum|x|)."""
    u = float(ml_dtypes.finfo(dt).eps) / 2
    return max(n - 1, 0) * u * np.sum(np.abs(x64), axis=axis, keepdims=keepdims)


def _sum_dtype(dt):
    if dt == np.bool_ or (dt.kind in "iu" and dt.itemsize < 4):
        return np.dtype("uint32" if dt.kind == "u" else "int32")
    return dt


@examples(300)
@given(st.sampled_from(["sum", "prod", "max", "min", "mean", "var", "std", "any", "all"]),
       st.sampled_from(ALL), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
       st.booleans(), st.data())
def test_reductions_match_numpy(backend, name, dt, shape, keepdims, data):
    small = (-1.1, 1.1) if dt in FLOATS else (-3, 3)   # products stay finite
    x = data.draw(arrays(dt, shape, *small) if name == "prod" else arrays(dt, shape))
    axis = data.draw(axis_choice(len(shape)))
    n = int(np.prod([shape[a] for a in (range(len(shape)) if axis is None else np.atleast_1d(axis))]))
    assume(n > 0 or name not in ("max", "min", "mean", "var", "std"))
    # squares of values below ~1e-15 underflow in float32 arithmetic (as in JAX): out of scope
    assume(name not in ("var", "std") or not np.any((x != 0) & (np.abs(x.astype(np.float64)) < 1e-15)))
    got = run(lambda a: getattr(pnp, name)(a, axis=axis, keepdims=keepdims), x)
    x64 = x.astype(np.float64)
    if name in ("sum", "prod"):
        assert got.dtype == _sum_dtype(dt)
        if dt not in FLOATS:
            want = getattr(np, name)(x, axis=axis, keepdims=keepdims, dtype=_sum_dtype(dt))
            np.testing.assert_array_equal(got, want)
        else:
            want = getattr(np, name)(x64, axis=axis, keepdims=keepdims)
            # 1e-5 relative to the result for float32 (10 * tol(dt)), plus, for sums, the
            # rounding error of any order of additions, which is relative to sum|x|, not to
            # the result: a sum that cancels (|sum x| << sum|x|) cannot be relatively exact
            err = summation_error(x64, n, dt, axis, keepdims) if name == "sum" else 0.0
            assert_close(got, want, dt, rtol=10 * TOL[dt], atol=err)
    elif name in ("mean", "var", "std"):
        want_dt = dt if dt in FLOATS else np.dtype(np.float64 if dt.itemsize == 8 else np.float32)
        assert got.dtype == want_dt
        want = getattr(np, name)(x64, axis=axis, keepdims=keepdims)
        if name == "mean":   # a sum divided by n: the same bound, divided by n
            err = summation_error(x64, n, want_dt, axis, keepdims) / max(n, 1)
            assert_close(got, want, want_dt, rtol=10 * TOL[want_dt], atol=err)
        else:
            scale = np.max(np.abs(x64), axis=axis, keepdims=keepdims) ** (2 if name == "var" else 1)
            assert_close(got, want, want_dt, 10 * scale)
    else:
        np.testing.assert_array_equal(got, getattr(np, name)(x, axis=axis, keepdims=keepdims))


@examples(180)
@given(st.sampled_from(["argmax", "argmin", "cumsum", "cumprod"]), st.sampled_from(ALL),
       hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), st.data())
def test_index_and_cumulative_reductions(backend, name, dt, shape, data):
    x = data.draw(arrays(dt, shape, -3, 3))
    axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    got = run(lambda a: getattr(pnp, name)(a, axis=axis), x)
    if name.startswith("arg"):
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, getattr(np, name)(x, axis=axis))
    elif dt not in FLOATS:
        np.testing.assert_array_equal(got, getattr(np, name)(x, axis=axis, dtype=_sum_dtype(dt)))
    else:
        x64 = x.astype(np.float64)
        want = getattr(np, name)(x64, axis=axis)
        if name == "cumsum":   # as for sum: relative to the result, plus summation rounding
            n = x.size if axis is None else shape[axis]
            u = float(ml_dtypes.finfo(dt).eps) / 2
            err = max(n - 1, 0) * u * np.cumsum(np.abs(x64), axis=axis)
            assert_close(got, want, dt, atol=err)
        else:
            assert_close(got, want, dt)


# ---------------------------------------------------------------- shapes, selection, sorting
@examples(180)
@given(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4), st.data())
def test_shape_ops_match_numpy(backend, shape, data):
    x = data.draw(arrays(np.dtype("int32"), shape))
    nd = len(shape)
    perm = tuple(data.draw(st.permutations(range(nd))))
    ax = data.draw(st.integers(-nd, nd - 1))
    shift = data.draw(st.integers(-7, 7))
    reps = tuple(data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3)))
    pw = data.draw(st.integers(0, 2))
    cases = [(lambda a: pnp.transpose(a, perm), lambda a: np.transpose(a, perm)),
             (lambda a: pnp.reshape(a, shape[::-1]), lambda a: np.reshape(a, shape[::-1])),
             (lambda a: pnp.reshape(a, -1), lambda a: np.reshape(a, -1)),
             (lambda a: pnp.flip(a, ax), lambda a: np.flip(a, ax)),
             (lambda a: pnp.roll(a, shift, ax), lambda a: np.roll(a, shift, ax)),
             (lambda a: pnp.moveaxis(a, ax, 0), lambda a: np.moveaxis(a, ax, 0)),
             (lambda a: pnp.expand_dims(a, ax), lambda a: np.expand_dims(a, ax)),
             (lambda a: pnp.concatenate([a, a], ax), lambda a: np.concatenate([a, a], ax)),
             (lambda a: pnp.stack([a, a], ax), lambda a: np.stack([a, a], ax)),
             (lambda a: pnp.tile(a, reps), lambda a: np.tile(a, reps)),
             (lambda a: pnp.repeat(a, 2, ax), lambda a: np.repeat(a, 2, ax)),
             (lambda a: pnp.pad(a, pw), lambda a: np.pad(a, pw)),
             (lambda a: pnp.swapaxes(a, 0, ax), lambda a: np.swapaxes(a, 0, ax)),
             (lambda a: pnp.squeeze(pnp.expand_dims(a, 0)), lambda a: np.squeeze(a[None]))]
    for f, ref in cases:
        np.testing.assert_array_equal(run(f, x), ref(x))


@examples(180)
@given(st.sampled_from(ALL), st.sampled_from(ALL),
       hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, min_side=0, max_side=3), st.data())
def test_where_and_clip(backend, dx, dy, shapes, data):
    c = data.draw(arrays(np.dtype(bool), shapes.input_shapes[0]))
    x = data.draw(arrays(dx, shapes.input_shapes[1]))
    y = data.draw(arrays(dy, shapes.input_shapes[2]))
    got = run(pnp.where, c, x, y)
    dt = expected_dtype(dx, dy)
    assert got.dtype == dt
    np.testing.assert_array_equal(got, np.where(c, x.astype(dt), y.astype(dt)))
    assume(dx != np.bool_)
    np.testing.assert_array_equal(run(lambda a: pnp.clip(a, 2, 50), x), np.clip(x, 2, 50).astype(dx))


@examples(150)
@given(st.sampled_from(INTS + FLOATS), hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5),
       st.booleans(), st.data())
def test_sort_and_argsort_are_stable(backend, dt, shape, descending, data):
    x = data.draw(arrays(dt, shape, -3, 3))   # few distinct values: many ties
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    np.testing.assert_array_equal(run(lambda a: pnp.sort(a, axis), x), np.sort(x, axis))
    order = run(lambda a: pnp.argsort(a, axis, descending=descending), x)
    key = -x.astype(np.float64) if descending else x
    np.testing.assert_array_equal(order, np.argsort(key, axis, kind="stable"))


# ---------------------------------------------------------------- contractions
def _check_contraction(got, want, abs_want):
    """float32 results within 1e-5 of sum |a_i b_i| (relative to the terms, not the sum)."""
    assert got.dtype == np.float32
    np.testing.assert_array_less(np.abs(got - want), 1e-5 * abs_want + 1e-30)


@examples(180)
@given(hnp.mutually_broadcastable_shapes(signature="(m?,n),(n,p?)->(m?,p?)", max_dims=4,
                                         min_side=0, max_side=4), st.data())
def test_matmul_matches_numpy(backend, shapes, data):
    a = data.draw(arrays(np.dtype("float32"), shapes.input_shapes[0]))
    b = data.draw(arrays(np.dtype("float32"), shapes.input_shapes[1]))
    got = run(pnp.matmul, a, b)
    assert got.shape == shapes.result_shape
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    _check_contraction(got, a64 @ b64, np.abs(a64) @ np.abs(b64))


@examples(180)
@given(st.sampled_from(["ij,jk->ik", "bij,bjk->bik", "ii->i", "ij->", "i,i->", "ij,ij->i",
                        "...i,...i->...", "abc,cd->abd", "ij,kj", "iij->ij", "i,j->ij"]),
       st.data())
def test_einsum_matches_numpy(backend, subs, data):
    sizes = {c: data.draw(st.integers(1, 4)) for c in "abcdijk"}
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    terms = subs.split("->")[0].split(",")
    shapes = [lead * ("..." in t) + tuple(sizes[c] for c in t.replace("...", "")) for t in terms]
    ops = [data.draw(arrays(np.dtype("float32"), s)) for s in shapes]
    got = run(lambda *xs: pnp.einsum(subs, *xs), *ops)
    want = np.einsum(subs, *[o.astype(np.float64) for o in ops])
    _check_contraction(got, want, np.einsum(subs, *[np.abs(o.astype(np.float64)) for o in ops]))


@examples(120)
@given(st.sampled_from(INTS + FLOATS + [np.dtype(bool)]), st.data())
def test_dot_dtypes(backend, dt, data):
    a = data.draw(arrays(dt, (2, 3), -5, 5))
    b = data.draw(arrays(dt, (3,), -5, 5))
    got = run(pnp.dot, a, b)
    assert got.dtype == dt
    if dt not in FLOATS:   # bool and integer products are exact (integers wrap alike)
        np.testing.assert_array_equal(got, np.dot(a, b))
    else:
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        assert_close(got, a64 @ b64, dt, 10 * np.abs(a64) @ np.abs(b64))
