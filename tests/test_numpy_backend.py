"""The numpy backend's executor (polyjit/backends/numpy_backend.py): blocks run side by side,
buffers reused across calls, ops written over dying operands, repeated equations and chains
of pads merged. Each must leave every result bit for bit what op-by-op eager execution gives."""
import threading

import numpy as np
import pytest

import polyjit as pj
from polyjit import backends, lax
from polyjit.backends import numpy_backend as nb


def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.tobytes()


def _eager_and_jit(f, *args):
    with backends.using("numpy"):
        return f(*args), pj.jit(f)(*args)


@pytest.fixture
def threads(monkeypatch):
    def set_(n):
        monkeypatch.setattr(nb, "_THREADS", n)
    return set_


def test_parallel_for_runs_each_block_once_and_reraises(threads):
    threads(3)
    seen, lock = [], threading.Lock()

    def block(i):
        with lock:
            seen.append((i, threading.get_ident()))
    nb._parallel_for(50, block)
    assert sorted(i for i, _ in seen) == list(range(50))

    def bad(i):
        if i == 7:
            raise ValueError("block 7")
    with pytest.raises(ValueError, match="block 7"):
        nb._parallel_for(20, bad)
    nb._parallel_for(5, block)     # still usable after an error
    assert len(seen) == 55


CONVS = [  # lhs shape, rhs shape, params: the padded-row path, im2col with output positions
    # innermost (strided), and with kernel taps innermost (a weight gradient)
    ((9, 3, 12, 11), (5, 3, 3, 3), dict(window_strides=(1, 1), padding=((1, 1), (1, 1)))),
    ((9, 4, 13, 13), (6, 2, 3, 3), dict(window_strides=(2, 2), padding=((1, 0), (0, 1)),
                                        feature_group_count=2)),
    ((6, 9, 10, 10), (4, 9, 8, 8), dict(window_strides=(1, 1), padding=((1, 1), (1, 1)))),
    ((5, 2, 9, 9), (3, 2, 2, 2), dict(window_strides=(1, 1), padding=((0, 0), (0, 0)),
                                      lhs_dilation=(2, 1), rhs_dilation=(1, 2))),
]


@pytest.mark.parametrize("lhs_shape,rhs_shape,params", CONVS)
def test_conv_blocks_side_by_side_match_one_thread(threads, lhs_shape, rhs_shape, params):
    r = np.random.default_rng(0)
    x = r.standard_normal(lhs_shape, dtype=np.float32)
    w = r.standard_normal(rhs_shape, dtype=np.float32)
    kw = dict(lhs_dilation=(1, 1), rhs_dilation=(1, 1)) | params
    threads(1)
    ref = nb._conv(x, w, **kw)
    threads(4)
    assert _bits(nb._conv(x, w, **kw)) == _bits(ref)


def test_inplace_never_overwrites_a_live_view_or_an_output():
    def f(x):
        y = x * 2.0
        v = lax.reshape(y, (x.size,))          # a view of y, live after y's last use
        z = y + 1.0                             # y's last use: must not be written over
        w = pj.numpy.exp(z) * 3.0               # z dies here: may be
        return v, w, z * 0.5
    x = np.linspace(-1, 1, 64 * 1024, dtype=np.float32).reshape(64, 1024)
    eager, jitted = _eager_and_jit(f, x)
    for e, j in zip(eager, jitted):
        assert _bits(e) == _bits(j)
    assert np.array_equal(np.asarray(jitted[0]), (x * 2).ravel())


def test_pooled_buffers_never_hold_returned_results():
    def f(x):
        y = x * 3.0                    # returned, and used after
        return y, (pj.numpy.tanh(y) + x) * x
    x1 = np.full((256, 256), 0.5, np.float32)
    x2 = np.full((256, 256), -2.0, np.float32)
    with backends.using("numpy"):
        eager = f(x1)
    f = pj.jit(f, backend="numpy")
    kept = f(x1)
    for _ in range(3):
        f(x2)
    assert [_bits(a) for a in kept] == [_bits(a) for a in eager]


def test_repeated_equations_run_once():
    def f(x):
        return pj.numpy.sum(x * x, axis=0) + pj.numpy.sum(x * x, axis=0)
    x = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    closed = pj.make_jaxpr(f)(x)
    eqns, _ = nb._cse(closed.jaxpr)
    assert len(eqns) == len(closed.jaxpr.eqns) - 2      # the second mul and sum
    eager, jitted = _eager_and_jit(f, x)
    assert _bits(eager) == _bits(jitted)


def _pads(*ys, configs):
    out = lax.pad(ys[0], 0.0, configs[0])
    for y, cfg in zip(ys[1:], configs[1:]):
        out = out + lax.pad(y, 0.0, cfg)
    return out


# interior padding 1 on both spatial axes, one offset each: the max-pool gradient's pattern
QUAD = [((0, 0, 0), (0, 0, 0), (a, 1 - a, 1), (b, 1 - b, 1)) for a in (1, 0) for b in (1, 0)]


@pytest.mark.parametrize("configs,fused", [
    (QUAD, True),
    (QUAD[:3], True),                                      # positions left at zero
    ([((0, 0, 0), (2, 0, 0)), ((0, 0, 0), (0, 2, 0))], False),   # overlapping: not merged
])
def test_sum_of_pads_matches_eager_bits(configs, fused):
    r = np.random.default_rng(1)
    shape = (4, 3, 5, 6) if len(configs[0]) == 4 else (7, 8)
    ys = [r.standard_normal(shape).astype(np.float32) for _ in configs]
    for y in ys:   # -0.0 (adding +0.0 makes it +0.0), infinities and NaNs stay exact
        y.flat[::5], y.flat[1::7], y.flat[2::11] = -0.0, np.inf, np.nan
    f = lambda *ys: _pads(*ys, configs=configs)
    closed = pj.make_jaxpr(f)(*ys)
    merged, _ = nb._pad_sums(closed.jaxpr.eqns, closed.jaxpr.outvars)
    assert bool(merged) == fused
    eager, jitted = _eager_and_jit(f, *ys)
    assert _bits(eager) == _bits(jitted)
    assert not np.signbit(np.asarray(jitted)[np.asarray(jitted) == 0]).any()


def test_max_pool_cnn_step_matches_eager_bits():
    """Conv, batch statistics, relu and max pool, forward and backward: every path above."""
    r = np.random.default_rng(2)
    x = r.standard_normal((8, 3, 12, 12), dtype=np.float32)
    w = r.standard_normal((6, 3, 3, 3), dtype=np.float32) * 0.3

    def loss(w, x):
        h = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)))
        mean = pj.numpy.mean(h, axis=(0, 2, 3), keepdims=True)
        var = pj.numpy.mean((h - mean) ** 2, axis=(0, 2, 3), keepdims=True)
        h = pj.nn.relu((h - mean) / pj.numpy.sqrt(var + 1e-5))
        h = lax.reduce_window_max(h, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        return pj.numpy.sum(h * h)
    g = pj.grad(loss)
    eager, jitted = _eager_and_jit(g, w, x)
    assert _bits(eager) == _bits(jitted)
    with backends.using("numpy"):
        again = pj.jit(g)(w, x)                 # a second call: buffers from the pool
    assert _bits(again) == _bits(jitted)


@pytest.mark.parametrize("padval", [-0.0, np.nan, 2.5])
def test_pad_into_a_pooled_buffer_matches_eager_bits(padval):
    cfg = ((1, 2, 1), (0, 3, 0))

    def f(x):
        t = lax.pad(x, padval, cfg) + 1.0
        r = pj.numpy.sum(t)                      # t dies: the second pad reuses its buffer
        return r, lax.pad(x * 3.0, padval, cfg)
    x = np.random.default_rng(3).standard_normal((150, 140)).astype(np.float32)
    with backends.using("numpy"):
        g = pj.jit(f)
        g(x)
        eager, jitted = f(x), g(x)                # the second call: buffers from the pool
    assert [_bits(a) for a in eager] == [_bits(a) for a in jitted]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no os.fork on this platform")
def test_a_forked_child_runs_blocks_on_helpers_of_its_own(threads):
    import multiprocessing as mp
    threads(3)
    nb._parallel_for(6, lambda i: None)          # the parent's helpers exist now
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_blocks, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0, p.exitcode
    done, helpers = q.get(timeout=5)
    assert done == list(range(12)) and helpers >= 1


def _child_blocks(q):
    seen = []
    nb._parallel_for(12, seen.append)
    q.put((sorted(seen), sum(t.is_alive() for t in nb._helpers)))


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_])
def test_select_is_np_where_bit_for_bit(dt):
    r = np.random.default_rng(2)
    a = (r.standard_normal((70, 90)) * 100).astype(dt)
    b = (r.standard_normal((1, 90)) * 100).astype(dt)            # broadcast along rows
    if np.dtype(dt).kind == "f":
        a[0, :4] = [np.nan, -0.0, np.inf, -np.inf]
        b[0, :2] = [-0.0, np.nan]
    which = r.random((70, 90)) > 0.5
    ref = np.where(which, a, b)
    for w in (which, which.astype(np.int32)):
        assert _bits(nb._select_n(w, b, a)) == _bits(ref)


def test_jitted_selects_into_reused_buffers_match_eager():
    def f(x):
        y = pj.numpy.where(x > 0, x * 2.0, -x)          # big enough for the buffer pool
        return pj.numpy.where(y > 1.0, pj.numpy.exp(y * 0.1), y) + 1.0
    x = np.random.default_rng(3).standard_normal((128, 256)).astype(np.float32)
    x[0, :3] = [np.nan, -0.0, np.inf]
    eager, jitted = _eager_and_jit(f, x)
    assert _bits(jitted) == _bits(eager)
