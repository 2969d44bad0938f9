"""OpenCL (fused kernels) vs the numpy backend vs numpy itself.

    python -m pytest benchmarks/bench_lowering.py --benchmark-enable
Groups: a 10-op elementwise chain over 16M float32 and a 1024x1024 float32 matmul.
"""
import numpy as np
import pytest

import polyjit as pj
import polyjit.numpy as pnp
from polyjit import backends

N = 1 << 24


def chain(x):
    y = pnp.exp(x * 0.5)
    y = pnp.tanh(y + 1.0)
    y = y * y - 0.25
    y = pnp.sin(y) / (pnp.abs(y) + 2.0)
    return pnp.maximum(y, -0.5) + pnp.sqrt(pnp.abs(x))


def chain_np(x):
    y = np.exp(x * np.float32(0.5))
    y = np.tanh(y + np.float32(1.0))
    y = y * y - np.float32(0.25)
    y = np.sin(y) / (np.abs(y) + np.float32(2.0))
    return np.maximum(y, np.float32(-0.5)) + np.sqrt(np.abs(x))


def _backend_or_skip(name):
    try:
        backends.get_backend(name)
    except Exception as e:
        pytest.skip(f"{name} unavailable: {e}")


@pytest.mark.parametrize("backend", ["opencl", "numpy"])
@pytest.mark.benchmark(group="elementwise-chain-16M")
def test_chain(benchmark, backend):
    _backend_or_skip(backend)
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    xd = pj.device_put(x, backend=backend)
    f = pj.jit(chain, backend=backend)
    f(xd).block_until_ready()
    benchmark(lambda: f(xd).block_until_ready())


@pytest.mark.benchmark(group="elementwise-chain-16M")
def test_chain_numpy_itself(benchmark):
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    benchmark(chain_np, x)


@pytest.mark.parametrize("backend", ["opencl", "numpy"])
@pytest.mark.benchmark(group="matmul-1024")
def test_matmul(benchmark, backend):
    _backend_or_skip(backend)
    rng = np.random.default_rng(0)
    a, b = (pj.device_put(rng.standard_normal((1024, 1024)).astype(np.float32), backend=backend)
            for _ in range(2))
    f = pj.jit(lambda a, b: a @ b, backend=backend)
    f(a, b).block_until_ready()
    benchmark(lambda: f(a, b).block_until_ready())


@pytest.mark.benchmark(group="matmul-1024")
def test_matmul_numpy_itself(benchmark):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((1024, 1024)).astype(np.float32) for _ in range(2))
    benchmark(np.matmul, a, b)
