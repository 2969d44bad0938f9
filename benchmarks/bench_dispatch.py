"""Cost of a cached jit call with 10 small array arguments, polyjit beside JAX (CPU).

Run: python -m pytest benchmarks/bench_dispatch.py --benchmark-enable --benchmark-only
"""
import numpy as np
import pytest

import polyjit as pj
from polyjit import lax

N_ARGS = 10


def _args():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(8).astype(np.float32) for _ in range(N_ARGS)]


def _sum_all(add):
    def f(*xs):
        s = xs[0]
        for x in xs[1:]:
            s = add(s, x)
        return s
    return f


@pytest.mark.benchmark(group="jit-dispatch")
def test_polyjit_cached_call(benchmark):
    f = pj.jit(_sum_all(lax.add))
    args = [pj.device_put(a) for a in _args()]
    f(*args)
    out = benchmark(f, *args)
    np.testing.assert_allclose(np.asarray(out), np.sum(_args(), axis=0), rtol=1e-5)


@pytest.mark.benchmark(group="jit-dispatch")
def test_jax_cached_call(benchmark):
    jax = pytest.importorskip("jax", reason="jax (bench extra) is not installed")
    f = jax.jit(_sum_all(lambda a, b: a + b))
    args = [jax.numpy.asarray(a) for a in _args()]
    f(*args).block_until_ready()
    benchmark(lambda: f(*args).block_until_ready())
