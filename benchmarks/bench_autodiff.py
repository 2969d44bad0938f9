"""One training-step gradient: jit(value_and_grad(loss)) of a 3-layer MLP (batch 256,
width 1024, float32), polyjit (numpy and opencl backends) beside JAX CPU and PyTorch CPU eager.

Run: python -m pytest benchmarks/bench_autodiff.py --benchmark-enable
"""
import numpy as np
import pytest

import polyjit as pj
from polyjit import numpy as pnp

BATCH, WIDTH, LAYERS = 256, 1024, 3


def _data():
    r = np.random.default_rng(0)
    params = [(r.standard_normal((WIDTH, WIDTH)).astype(np.float32) / np.float32(np.sqrt(WIDTH)),
               r.standard_normal(WIDTH).astype(np.float32) * np.float32(0.1))
              for _ in range(LAYERS)]
    x = r.standard_normal((BATCH, WIDTH)).astype(np.float32)
    y = r.standard_normal((BATCH, WIDTH)).astype(np.float32)
    return params, x, y


def _loss(np_like, tanh):
    def loss(params, x, y):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = tanh(h)
        return np_like.mean((h - y) ** 2)
    return loss


def _reference():
    """value and first-layer weight gradient in float64 numpy (independent of all three)."""
    params, x, y = _data()
    hs, h = [x.astype(np.float64)], x.astype(np.float64)
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < LAYERS - 1:
            h = np.tanh(h)
        hs.append(h)
    val = np.mean((h - y) ** 2)
    g = 2 * (h - y) / h.size
    for i in reversed(range(LAYERS)):
        if i < LAYERS - 1:
            g = g * (1 - hs[i + 1] ** 2)
        gw = hs[i].T @ g
        g = g @ params[i][0].T
    return val, gw


def _check(val, gw0):
    want_val, want_gw0 = _reference()
    np.testing.assert_allclose(float(val), want_val, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(gw0), want_gw0, rtol=2e-3, atol=1e-6)


@pytest.mark.benchmark(group="mlp-value-and-grad")
@pytest.mark.parametrize("backend", ["numpy", "opencl"])
def test_polyjit(benchmark, backend):
    try:
        pj.backends.get_backend(backend)
    except Exception as e:
        pytest.skip(f"backend {backend!r} unavailable: {e}")
    params, x, y = _data()
    step = pj.jit(pj.value_and_grad(_loss(pnp, pnp.tanh)), backend=backend)
    put = lambda a: pj.device_put(a, backend)  # noqa: E731
    params = pj.tree_util.tree_map(put, params)
    x, y = put(x), put(y)
    val, grads = step(params, x, y)
    _check(val, grads[0][0])
    benchmark(lambda: np.asarray(step(params, x, y)[0]))


@pytest.mark.benchmark(group="mlp-value-and-grad")
def test_jax_cpu(benchmark):
    jax = pytest.importorskip("jax", reason="jax (bench extra) is not installed")
    jnp = jax.numpy
    params, x, y = _data()
    step = jax.jit(jax.value_and_grad(_loss(jnp, jnp.tanh)))
    params = jax.device_put(params, jax.devices("cpu")[0])
    val, grads = step(params, x, y)
    _check(val, grads[0][0])
    benchmark(lambda: jax.block_until_ready(step(params, x, y)))


@pytest.mark.benchmark(group="mlp-value-and-grad")
def test_torch_cpu_eager(benchmark):
    torch = pytest.importorskip("torch", reason="torch (bench extra) is not installed")
    params, x, y = _data()
    tparams = [(torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True))
               for w, b in params]
    tx, ty = torch.tensor(x), torch.tensor(y)
    loss = _loss(torch, torch.tanh)

    def step():
        for w, b in tparams:
            w.grad = b.grad = None
        val = loss(tparams, tx, ty)
        val.backward()
        return val.detach(), [(w.grad, b.grad) for w, b in tparams]
    val, grads = step()
    _check(val, grads[0][0])
    benchmark(step)
