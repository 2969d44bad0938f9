"""x[idx], x.at[idx] updates, take/take_along_axis and nonzero: eager and jitted against numpy."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polyjit as pj
import polyjit.numpy as pnp
from polyjit.tracer.core import ConcretizationError

X = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)


def examples(n):
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

PATTERNS = [
    0, -1, (1, 2), slice(None, None, -1), (slice(1, None), 2), (Ellipsis, 1),
    (None, 1, Ellipsis, None), (slice(3, 1), 0), (slice(-1, -4, -2), slice(None, None, 3)), (),
    np.array(1), (np.int64(1), -2), [0, 1], [[0, 1], [1, 0]], ((0, 1),),
    (slice(None), [0, 2]), (slice(None), [0, 2], slice(None), [1, 3]), ([1, 0], [2, 1]),
    (0, slice(None), [1, 2]), (slice(None), 0, [1, 2]), (np.array([[0, 1], [1, 0]]), slice(None), 0),
    (slice(None, None, -2), slice(1, None, 2), [0, -1]), (slice(None), [0, 1], None, [1, 2]),
    (Ellipsis, [0, 1], [1, 2]), (np.array([1]), np.array(2)), (None, [0, 1], 0),
    (X[..., 0, 0] > 20,), (slice(None), np.array([True, False, True])),
    (1, X[0, :, :, 0] > 30), (0, X[0] > 50), (Ellipsis, np.array([True, False, True, True, False])),
]


def _ids(p):
    return repr(p).replace("\n", "")[:40]


@pytest.mark.parametrize("idx", PATTERNS, ids=_ids)
def test_getitem_matches_numpy(backend, idx):
    want = X[idx]
    eager = pnp.asarray(X)[idx]
    jitted = pj.jit(lambda a: a[idx])(X)
    for got in (eager, jitted):
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("idx", PATTERNS, ids=_ids)
def test_at_set_matches_numpy_setitem(backend, idx):
    v = np.arange(X[idx].size, dtype=np.float32).reshape(X[idx].shape) + 1000
    want = X.copy()
    want[idx] = v
    np.testing.assert_array_equal(np.asarray(pnp.asarray(X).at[idx].set(v)), want)
    np.testing.assert_array_equal(np.asarray(pj.jit(lambda a, u: a.at[idx].set(u))(X, v)), want)


@pytest.mark.parametrize("op,ufunc", [("add", np.add), ("multiply", np.multiply),
                                      ("mul", np.multiply), ("min", np.minimum),
                                      ("max", np.maximum), ("subtract", np.subtract)])
def test_at_ops_accumulate_duplicate_indices(backend, op, ufunc):
    x = np.arange(1, 6, dtype=np.float32)
    idx = np.array([0, 2, 0, -1, 2, 0])
    v = np.array([3, -1, 2, 7, 5, 0.5], np.float32)
    want = x.copy()
    ufunc.at(want, idx, v)
    f = lambda a, u: getattr(a.at[idx], op)(u)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(f(pnp.asarray(x), v)), want)
    np.testing.assert_array_equal(np.asarray(pj.jit(f)(x, v)), want)


def test_at_broadcasts_values_and_get_reads(backend):
    x = pnp.zeros((3, 4), pnp.int32)
    np.testing.assert_array_equal(np.asarray(x.at[1:, ::2].set(7)), np.array(
        [[0, 0, 0, 0], [7, 0, 7, 0], [7, 0, 7, 0]]))
    np.testing.assert_array_equal(np.asarray(x.at[:, 0].add(np.array([[1, 2, 3]]))), np.array(
        [[1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0]]))
    np.testing.assert_array_equal(np.asarray(pnp.asarray(X).at[0, 1].get()), X[0, 1])


def test_at_casts_values_to_the_array_dtype(backend):
    out = pnp.zeros(3, pnp.int8).at[0].set(2.7)
    assert out.dtype == np.int8 and int(out[0]) == 2


def test_at_drops_out_of_bounds_updates(backend):
    x = np.zeros(4, np.float32)
    f = lambda a, i: a.at[i].add(1.0)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(f(pnp.asarray(x), np.array([1, 4, 9, -5]))), [0, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(pj.jit(f)(x, np.array([1, 4, -1, -9]))), [0, 1, 0, 1])
    np.testing.assert_array_equal(np.asarray(pnp.asarray(x).at[7].set(3.0)), x)


def test_traced_scalar_index_uses_dynamic_slice(backend):
    f = lambda a, i: a[:, i, 1:]  # noqa: E731
    jaxpr = str(pj.make_jaxpr(f)(X, 1))
    assert "dynamic_slice" in jaxpr and "gather" not in jaxpr
    for i in [0, 2, -1, -3]:
        np.testing.assert_array_equal(np.asarray(pj.jit(f)(X, np.int32(i))), X[:, i, 1:])


def test_traced_index_in_a_loop(backend):
    xs = np.arange(10.0, dtype=np.float32)
    total = pj.lax.fori_loop(0, 10, lambda i, acc: acc + pnp.asarray(xs)[i], np.float32(0))
    assert float(total) == 45.0


def test_traced_out_of_bounds_gathers_clamp(backend):
    x = np.arange(5)
    assert int(pj.jit(lambda a, i: a[i])(x, 9)) == 4
    np.testing.assert_array_equal(pj.jit(lambda a, i: a[i])(x, np.array([7, -9, 1])), [4, 0, 1])


def test_traced_integer_arrays_use_gather(backend):
    f = lambda a, i, j: a[i, :, j]  # noqa: E731
    i, j = np.array([[1], [0]]), np.array([0, -1, 2])
    assert "gather" in str(pj.make_jaxpr(f)(X, i, j))
    np.testing.assert_array_equal(np.asarray(pj.jit(f)(X, i, j)), X[i, :, j])


def test_static_out_of_range_index_names_index_axis_and_size():
    with pytest.raises(IndexError, match="index 3 is out of bounds for axis 1 with size 3"):
        pnp.asarray(X)[0, 3]
    with pytest.raises(IndexError, match="index -6 is out of bounds for axis 3 with size 5"):
        pj.jit(lambda a: a[..., [0, -6]])(X)


def test_traced_boolean_mask_is_a_clear_error():
    with pytest.raises(IndexError, match="pnp.where"):
        pj.jit(lambda a: a[a > 3])(X)


def test_bad_indices():
    x = pnp.asarray(X)
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0, 0, 0]
    with pytest.raises(IndexError, match="single ellipsis"):
        x[..., 0, ...]
    with pytest.raises(IndexError, match="integers or booleans"):
        x[np.array([0.5])]
    with pytest.raises(IndexError, match="does not match"):
        x[np.array([True, False, True])]
    with pytest.raises(TypeError, match="not supported"):
        x["a"]
    with pytest.raises(ConcretizationError, match="dynamic_slice"):
        pj.jit(lambda a, i: a[i:])(X, 1)


def test_take(backend):
    x = np.arange(12).reshape(3, 4)
    for kw in [{}, {"axis": 1}, {"axis": 0}, {"axis": -1, "mode": "clip"}, {"axis": 1, "mode": "wrap"}]:
        idx = np.array([[0, -1], [2, 1]]) if "mode" not in kw else np.array([5, -6, 1])
        np.testing.assert_array_equal(np.asarray(pnp.take(x, idx, **kw)), np.take(x, idx, **kw))
        np.testing.assert_array_equal(np.asarray(pj.jit(lambda a, i: pnp.take(a, i, **kw))(x, idx)),
                                      np.take(x, idx, **kw))


def test_take_along_axis(backend):
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    for axis in [0, 1, -1, None]:
        idx = np.argsort(x, axis=axis)[..., :3] if axis in (-1, None) else np.argsort(x, axis=axis)
        np.testing.assert_array_equal(np.asarray(pnp.take_along_axis(x, idx, axis)),
                                      np.take_along_axis(x, idx, axis))
        jitted = pj.jit(lambda a, i: pnp.take_along_axis(a, i, axis))(x, idx)
        np.testing.assert_array_equal(np.asarray(jitted), np.take_along_axis(x, idx, axis))
    idx = np.array([[[0]], [[-1]]])   # broadcasts over the other axes, negative counts from the end
    np.testing.assert_array_equal(np.asarray(pnp.take_along_axis(x[:2], idx, 2)),
                                  np.take_along_axis(x[:2], idx % 5, 2))


def test_nonzero_of_concrete_and_with_size(backend):
    x = np.array([[0, 3, 0], [4, 0, 5]])
    for got, want in zip(pnp.nonzero(x), np.nonzero(x)):
        np.testing.assert_array_equal(np.asarray(got), want)
    rows, cols = pj.jit(lambda a: pnp.nonzero(a, size=4, fill_value=-1))(x)
    np.testing.assert_array_equal(rows, [0, 1, 1, -1])
    np.testing.assert_array_equal(cols, [1, 0, 2, -1])
    np.testing.assert_array_equal(pj.jit(lambda a: pnp.argwhere(a, size=2))(x), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(pj.jit(lambda a: pnp.flatnonzero(a, size=3))(x), [1, 3, 5])
    (i,) = pnp.where(np.array([0, 1, 1]))
    np.testing.assert_array_equal(np.asarray(i), [1, 2])


def test_unravel_ix_compress(backend):
    got = pj.jit(lambda i: pnp.unravel_index(i, (3, 4)))(np.array([0, 5, 11]))
    for g, w in zip(got, np.unravel_index([0, 5, 11], (3, 4))):
        np.testing.assert_array_equal(g, w)
    x = np.arange(12).reshape(3, 4)
    rows, cols = [0, 2], [1, 3]
    got = pnp.asarray(x)[pnp.ix_(rows, cols)]
    np.testing.assert_array_equal(np.asarray(got), x[np.ix_(rows, cols)])
    np.testing.assert_array_equal(np.asarray(pnp.compress([True, False, True], x, 0)),
                                  np.compress([True, False, True], x, 0))


# ---------------------------------------------------------------- random index patterns
@st.composite
def shape_and_index(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    idx, arr_shape = [], draw(st.sampled_from([(), (2,), (2, 1), (3,)]))
    for n in shape:
        kind = draw(st.sampled_from(["int", "slice", "slice", "array", "none", "skip"]))
        if kind == "int":
            idx.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            b = st.one_of(st.none(), st.integers(-n - 1, n + 1))
            idx.append(slice(draw(b), draw(b), draw(st.sampled_from([None, 1, 2, -1, -2]))))
        elif kind == "array":
            idx.append(np.array(draw(st.lists(st.integers(-n, n - 1), min_size=int(np.prod(arr_shape)),
                                              max_size=int(np.prod(arr_shape))))).reshape(arr_shape))
        elif kind == "none":
            idx += [None, slice(None)]
        else:   # the rest of the axes
            idx.append(Ellipsis)
            break
    return shape, tuple(idx)


@examples(180)
@given(shape_and_index())
def test_random_index_patterns(backend, case):
    shape, idx = case
    x = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    want = x[idx]
    np.testing.assert_array_equal(np.asarray(pnp.asarray(x)[idx]), want)
    np.testing.assert_array_equal(np.asarray(pj.jit(lambda a: a[idx])(x)), want)
    upd = x.copy()
    upd[idx] = -want - 1
    np.testing.assert_array_equal(np.asarray(pnp.asarray(x).at[idx].set(-want - 1)), upd)


@examples(90)
@given(shape_and_index())
def test_random_index_patterns_with_traced_arrays(backend, case):
    shape, idx = case
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    arrays = [i for i in idx if isinstance(i, np.ndarray)]
    positions = [k for k, i in enumerate(idx) if isinstance(i, np.ndarray)]

    def f(a, *traced):
        full = list(idx)
        for k, t in zip(positions, traced):
            full[k] = t
        return a[tuple(full)], a.at[tuple(full)].add(1.0)
    got, added = pj.jit(f)(x, *arrays)
    np.testing.assert_array_equal(np.asarray(got), x[idx])
    want = x.copy()
    np.add.at(want, idx, 1.0)
    np.testing.assert_array_equal(np.asarray(added), want)
