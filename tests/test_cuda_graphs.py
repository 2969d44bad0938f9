"""Jitted programs on the cuda backend replay as one CUDA graph: results equal the plain
launches for new inputs on every call, returned arrays are never overwritten by a later
replay, and programs with host steps fall back to plain launches. Skipped (with the
reason) without a CUDA device."""
import numpy as np
import pytest

import polyjit as pj
import polyjit.lax as lax
import polyjit.numpy as pnp
from polyjit import backends


@pytest.fixture
def cuda():
    try:
        be = backends.get_backend("cuda")
    except Exception as e:  # no cupy or no GPU: say which
        pytest.skip(f"no CUDA device ({e})")
    with backends.using("cuda"):
        yield be


def _mlp(w1, w2, x):
    h = pnp.tanh(x @ w1)
    return pnp.sum(h @ w2, axis=-1), h.max()


def test_replays_equal_plain_launches_for_new_inputs(cuda, monkeypatch):
    r = np.random.default_rng(0)
    w1, w2 = r.standard_normal((16, 32), np.float32), r.standard_normal((32, 8), np.float32)
    f = pj.jit(_mlp)
    outs, wants = [], []
    for i in range(4):
        x = r.standard_normal((5, 16), np.float32)
        outs.append([np.asarray(o) for o in f(w1, w2, x)])
        h = np.tanh(x.astype(np.float64) @ w1)
        wants.append([np.sum(h @ w2, axis=-1), h.max()])
    exe = f.lower(w1, w2, x).executable
    assert exe.capturable and exe.capture_error is None and exe.replays == 4
    for got, want in zip(outs, wants):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_returned_arrays_survive_later_replays(cuda):
    f = pj.jit(lambda x: (x * 2.0 + 1.0, pnp.sum(x * x)))
    a = f(np.ones(1000, np.float32))
    b = f(np.full(1000, 5.0, np.float32))
    assert f.lower(np.ones(1000, np.float32)).executable.replays == 2
    np.testing.assert_array_equal(np.asarray(a[0]), np.full(1000, 3.0, np.float32))
    np.testing.assert_array_equal(np.asarray(b[0]), np.full(1000, 11.0, np.float32))
    assert float(a[1]) == 1000.0 and float(b[1]) == 25000.0


def test_single_kernel_and_large_programs_launch_plainly(cuda):
    from polyjit.backends import cuda_graphs
    f = pj.jit(lambda x: pnp.exp(x) * 2.0)            # one fused kernel: nothing to save
    x = np.ones(8, np.float32)
    np.testing.assert_allclose(np.asarray(f(x)), 2 * np.e, rtol=1e-6)
    assert not f.lower(x).executable.capturable
    g = pj.jit(lambda x: (x * 2.0, pnp.sum(x)))
    big = np.ones(cuda_graphs.MAX_COPY_BYTES // 4, np.float32)
    assert not g.lower(big).executable.capturable


def test_host_steps_run_as_plain_launches(cuda):
    f = pj.jit(lambda x: lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2.0), (0, x))[1])
    x = np.arange(4, dtype=np.float32) + 1
    np.testing.assert_array_equal(np.asarray(f(x)), x * 8)
    assert not f.lower(x).executable.capturable


def test_graphs_can_be_turned_off(cuda, monkeypatch):
    monkeypatch.setenv("POLYJIT_CUDA_GRAPHS", "0")
    f = pj.jit(lambda x: (pnp.exp(x) - 1.0, pnp.sum(x)))
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(f(x)[0]), np.expm1(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    assert not f.lower(x).executable.capturable
