"""The demo CNN's training step (batch 64: forward, backward, Adam update), polyjit beside
PyTorch CPU eager and JAX CPU (jax.jit) in one run.

Model (examples/train_mnist.py): conv 16 + BN + relu + maxpool, conv 32 + BN + relu +
maxpool, dropout, linear 128, relu, linear 10. Dropout is 0 here so the three steps compute
the same function; each step's loss is checked against PyTorch before timing.

Run: python -m pytest benchmarks/bench_train_step.py --benchmark-enable
Each step runs ROUNDS times (env BENCH_ROUNDS, default 20) after 3 warm-up steps: on a shared,
loaded machine the median of many rounds is what stays comparable between the four.
"""
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import polyjit as pj
from polyjit import backends, nn, optim
from polyjit.nn import train

BATCH = 64
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 20))
_spec = importlib.util.spec_from_file_location(
    "train_mnist", Path(__file__).resolve().parent.parent / "examples" / "train_mnist.py")
train_mnist = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_mnist)


def _batch():
    r = np.random.default_rng(0)
    return (r.random((BATCH, 1, 28, 28), dtype=np.float32),
            r.integers(0, 10, BATCH).astype(np.int32))


def _torch_model():
    torch = pytest.importorskip("torch", reason="torch (bench extra) is not installed")
    torch.manual_seed(0)
    t = torch.nn
    return torch, t.Sequential(
        t.Conv2d(1, 16, 3, padding=1), t.BatchNorm2d(16), t.ReLU(), t.MaxPool2d(2),
        t.Conv2d(16, 32, 3, padding=1), t.BatchNorm2d(32), t.ReLU(), t.MaxPool2d(2),
        t.Flatten(), t.Dropout(0.0), t.Linear(32 * 7 * 7, 128), t.ReLU(), t.Linear(128, 10))


def _weights_from(tm):
    """The torch model's initial weights as the polyjit Sequential's params."""
    d = lambda m: {"weight": m.weight.detach().numpy().copy(), "bias": m.bias.detach().numpy().copy()}
    return {"0": d(tm[0]), "1": d(tm[1]), "4": d(tm[4]), "5": d(tm[5]), "10": d(tm[10]),
            "12": d(tm[12])}


def _torch_loss():
    torch, tm = _torch_model()
    x, y = _batch()
    return float(torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y, dtype=torch.long)))


def _polyjit_step(backend_name):
    with backends.using(backend_name):
        _, tm = _torch_model()
        layers = list(train_mnist.make_model().layers)
        layers[9] = nn.Dropout(0.0)
        model = nn.Sequential(*layers)
        opt = optim.adam(1e-3)
        x, y = _batch()
        state = train.init_train_state(model, opt, pj.random.key(0), x[:2])
        state["params"] = _weights_from(tm)
        state["opt_state"] = opt.init(state["params"])
        state = pj.tree_util.tree_map(pj.device_put, state)
        step = train.classifier_step(model, opt)
        xb, yb = pj.device_put(x), pj.device_put(y)
        return step, state, xb, yb


@pytest.mark.benchmark(group="cnn-train-step")
@pytest.mark.parametrize("backend_name", ["numpy", "opencl"])
def test_polyjit(benchmark, backend_name):
    if backend_name not in backends._factories:
        pytest.skip(f"backend {backend_name} is not built in this checkout")
    try:
        backends.get_backend(backend_name)
    except Exception as e:
        pytest.skip(f"backend {backend_name} unavailable: {e}")
    step, state, xb, yb = _polyjit_step(backend_name)
    with backends.using(backend_name):      # jit compiles for the default backend of its first call
        new, m = step(state, xb, yb)
        assert m["loss"]._backend is backends.get_backend(backend_name)
        np.testing.assert_allclose(float(m["loss"]), _torch_loss(), rtol=1e-4)
        box = [state]

        def run():
            box[0], m = step(box[0], xb, yb)
            return float(m["loss"])
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=3, iterations=1)


@pytest.mark.benchmark(group="cnn-train-step")
def test_torch_cpu_eager(benchmark):
    torch, tm = _torch_model()
    x, y = _batch()
    xt, yt = torch.tensor(x), torch.tensor(y, dtype=torch.long)
    opt = torch.optim.Adam(tm.parameters(), lr=1e-3)
    tm.train()

    def run():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(tm(xt), yt)
        loss.backward()
        opt.step()
        return float(loss)
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=3, iterations=1)


@pytest.mark.benchmark(group="cnn-train-step")
def test_jax_cpu_jit(benchmark):
    jax = pytest.importorskip("jax", reason="jax (bench extra) is not installed")
    jnp, lax = jax.numpy, jax.lax
    _, tm = _torch_model()
    params = jax.tree_util.tree_map(jnp.asarray, _weights_from(tm))
    x, y = _batch()

    def conv(p, h):
        h = lax.conv_general_dilated(h, p["weight"], (1, 1), ((1, 1), (1, 1)))
        return h + p["bias"][None, :, None, None]

    def bn(p, h):
        mean = h.mean(axis=(0, 2, 3), keepdims=True)
        var = h.var(axis=(0, 2, 3), keepdims=True)
        return (h - mean) / jnp.sqrt(var + 1e-5) * p["weight"][None, :, None, None] + p["bias"][None, :, None, None]

    def pool(h):
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def loss_fn(p, x, y):
        h = pool(jax.nn.relu(bn(p["1"], conv(p["0"], x))))
        h = pool(jax.nn.relu(bn(p["5"], conv(p["4"], h))))
        h = h.reshape(h.shape[0], -1)
        h = jax.nn.relu(h @ p["10"]["weight"].T + p["10"]["bias"])
        logits = h @ p["12"]["weight"].T + p["12"]["bias"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    def adam_step(p, m, v, t, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        upd = lambda p, m, v: p - 1e-3 * (m / (1 - 0.9 ** t)) / (jnp.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        return jax.tree_util.tree_map(upd, p, m, v), m, v, t, loss
    step = jax.jit(adam_step)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    box = [params, zeros, zeros, jnp.float32(0)]
    out = step(*box, x, y)
    np.testing.assert_allclose(float(out[-1]), _torch_loss(), rtol=1e-4)

    def run():
        p, m, v, t, loss = step(*box, x, y)
        box[:] = [p, m, v, t]
        return float(loss)
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=3, iterations=1)
