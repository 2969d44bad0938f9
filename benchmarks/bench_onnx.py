"""ONNX inference latency: polyjit (an imported model, jitted, numpy backend) beside
onnxruntime (CPUExecutionProvider, default threads and graph optimizations) in one run, on

  * ResNet-50: the onnx wheel's "light" model re-seeded with random weights (the same
    `reseeded` as tests/test_onnx_light_models.py), batch 1 and batch 8 (the copy's input
    dim 0 set to 8 and its flatten Reshape's constant [1, 2048] made [-1, 2048]), on a
    photo-like 224x224 image;
  * YOLOv8n: nudenet's 320n detector (1x3x320x320), the model tests/test_onnx.py checks.

Before timing, polyjit's outputs are checked against onnxruntime's (within 1e-4 of each
output's max magnitude). Each timed call includes the host-to-device copy of the input and
the copy of the outputs back to numpy; the weights are put on the device once. The
polyjit/onnxruntime ratio of medians (> 1: polyjit slower) is printed after each polyjit case.

Run: python -m pytest benchmarks/bench_onnx.py --benchmark-enable -s -o addopts=""
     POLYJIT_BENCH_ONNX_BACKENDS=numpy,opencl adds PoCL (its first call builds kernels)
     POLYJIT_BENCH_ONNX_ROUNDS=N timed rounds per case (default 5; one warm-up round before)
"""
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import polyjit as pj  # noqa: E402
from polyjit import backends, formats  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from test_onnx_light_models import photo_like, reseeded  # noqa: E402

BACKENDS = os.environ.get("POLYJIT_BENCH_ONNX_BACKENDS", "numpy").split(",")
ROUNDS = int(os.environ.get("POLYJIT_BENCH_ONNX_ROUNDS", "5"))
NUDENET = ("nudenet==3.4.2", "nudenet/320n.onnx",
           "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", True)
MODELS = ["resnet50-b1", "resnet50-b8", "yolov8n"]
MEDIANS = {}
_CACHE = {}


def _resnet50(batch):
    m = reseeded("resnet50")
    g = m.graph
    g.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    for o in g.output:
        if o.type.tensor_type.HasField("shape"):
            o.type.tensor_type.shape.dim[0].dim_value = batch
    # the light model flattens with Reshape(x, [1, 2048]): a constant that does not follow
    # the batch; make its batch entry -1
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Reshape" and n.input[1] in inits:
            shape = onnx.numpy_helper.to_array(inits[n.input[1]]).copy()
            if shape[0] == 1:
                shape[0] = -1
                inits[n.input[1]].CopyFrom(onnx.numpy_helper.from_array(shape, n.input[1]))
    x = np.concatenate([photo_like(seed=s) for s in range(batch)])
    return m.SerializeToString(), x


def _case(name):
    """(model bytes, input array) for a benchmark case, cached per run."""
    if name not in _CACHE:
        if name.startswith("resnet50"):
            _CACHE[name] = _resnet50(int(name.split("-b")[1]))
        else:
            from polyjit.hub import fetch_from_wheel
            try:
                path = fetch_from_wheel(*NUDENET[:3], pure_python=NUDENET[3])
            except Exception as e:  # noqa: BLE001
                pytest.skip(f"could not download {NUDENET[0]} from PyPI (network?): {e}")
            yy, xx = np.mgrid[0:320, 0:320] / 320
            img = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) * 0.5 + 0.5 for c in range(3)])[None]
            img = img + 0.05 * np.random.default_rng(0).standard_normal(img.shape)
            _CACHE[name] = (path.read_bytes(), np.clip(img, 0, 1).astype(np.float32))
    return _CACHE[name]


def _reference(name):
    data, x = _case(name)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    return sess, feed, sess.run(None, feed)


def _record(benchmark, name, runtime):
    med = benchmark.stats.stats.median
    MEDIANS[(name, runtime)] = med
    base = MEDIANS.get((name, "onnxruntime"))
    line = f"\n{name} {runtime}: median {med * 1e3:.2f} ms"
    if runtime != "onnxruntime" and base:
        line += f"; / onnxruntime {base * 1e3:.2f} ms = {med / base:.2f}x"
        benchmark.extra_info["ratio_vs_onnxruntime"] = med / base
    print(line)


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime(benchmark, name):
    benchmark.group = f"onnx-{name}"
    sess, feed, _ = _reference(name)
    benchmark.pedantic(lambda: sess.run(None, feed), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _record(benchmark, name, "onnxruntime")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", MODELS)
def test_polyjit(benchmark, name, backend):
    benchmark.group = f"onnx-{name}"
    try:
        backends.get_backend(backend)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"backend {backend!r} unavailable: {e}")
    data, x = _case(name)
    _, _, want = _reference(name)
    model = formats.load(data)
    params = pj.tree_util.tree_map(lambda a: pj.device_put(a, backend), model.params)
    run = pj.jit(model.fn, backend=backend)

    def infer():
        out = run(params, pj.device_put(x, backend))
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in out]

    got = infer()                                  # compile, and check before timing
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        scale = float(np.abs(w).max())
        err = float(np.abs(g - w).max())
        assert err <= 1e-4 * scale, f"{name} on {backend}: max error {err:.3g} vs scale {scale:.3g}"
    benchmark.pedantic(infer, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _record(benchmark, name, f"polyjit {backend}")
