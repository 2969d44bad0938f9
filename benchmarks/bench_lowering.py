"""OpenCL (fused kernels) vs the numpy backend vs numpy itself.

    python -m pytest benchmarks/bench_lowering.py --benchmark-enable
Groups: a 10-op elementwise chain over 16M float32 and a 1024x1024 float32 matmul.

    python benchmarks/bench_lowering.py [n ...]
The n x n x n float32 matmul (default 1024) on opencl beside numpy's BLAS, the two
timed alternately (best of several rounds each, so load from other processes on a
shared machine hits both alike), GFLOP/s and their ratio printed, the result checked
against numpy first.

    python benchmarks/bench_lowering.py --processes [n ...]
The same two, each in processes of its own, alternating (see matmul_separate_processes).

    python benchmarks/bench_lowering.py --pauses [n ...]
Call by call with pauses between (see matmul_pauses).
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


def _operands(n):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, n)).astype(np.float32) for _ in range(2)]


def _matmul_case(n):
    """`numpy()` and `opencl()` runs of the product of _operands(n), the opencl result
    checked against float64 first, and its kernel."""
    a, b = _operands(n)
    pa, pb = pj.device_put(a, backend="opencl"), pj.device_put(b, backend="opencl")
    f = pj.jit(lambda a, b: a @ b, backend="opencl")
    ref = a.astype(np.float64) @ b
    err = float(np.abs(np.asarray(f(pa, pb)) - ref).max() / np.abs(ref).max())
    assert err < 1e-5, err
    (k,) = f.lower(pa, pb).executable.kernels
    return (lambda: np.matmul(a, b)), (lambda: f(pa, pb).block_until_ready()), err, k


def _seconds(run):
    import time
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def _gflops(n, s):
    return 2 * n ** 3 / s / 1e9


def matmul_side_by_side(n=1024, rounds=7):
    run_np, run_cl, err, k = _matmul_case(n)
    best_pj = best_np = float("inf")
    for _ in range(rounds):
        best_np = min(best_np, _seconds(run_np))
        best_pj = min(best_pj, _seconds(run_cl))
    return {"n": n, "device": backends.get_backend("opencl").device.name,
            "tiles": getattr(k, "tiles", None), "max_rel_err": err,
            "opencl_ms": best_pj * 1e3, "numpy_ms": best_np * 1e3,
            "opencl_gflops": _gflops(n, best_pj), "numpy_gflops": _gflops(n, best_np),
            "ratio_opencl_over_numpy": best_np / best_pj}


def _one_process(which, n, calls):
    """Median seconds of `calls` n x n matmuls by `which` ("numpy" or "opencl"), timed in
    this process after warm-up."""
    if which == "numpy":       # (no OpenCL runtime in numpy's process)
        a, b = _operands(n)
        run = lambda: np.matmul(a, b)
    else:
        run = _matmul_case(n)[1]
    for _ in range(3):
        run()
    return float(np.median([_seconds(run) for _ in range(calls)]))


def matmul_separate_processes(n=1024, rounds=4, calls=20):
    """numpy's BLAS and opencl each in a process of its own, alternating process by
    process: neither library's idle worker threads (OpenBLAS spins for a while after a
    call) share the cores with the other's. Median of each process, then the median
    over processes."""
    import subprocess
    import sys
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import bench_lowering as b; "
            "print(b._one_process(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))")
    t = {"numpy": [], "opencl": []}
    for _ in range(rounds):
        for which in t:
            out = subprocess.run([sys.executable, "-c", code, which, str(n), str(calls)],
                                 capture_output=True, text=True, check=True)
            t[which].append(float(out.stdout.split()[-1]))
    med = {k: float(np.median(v)) for k, v in t.items()}
    return {"n": n, "mode": "separate processes", "numpy_ms": [x * 1e3 for x in t["numpy"]],
            "opencl_ms": [x * 1e3 for x in t["opencl"]], "numpy_gflops": _gflops(n, med["numpy"]),
            "opencl_gflops": _gflops(n, med["opencl"]),
            "ratio_opencl_over_numpy": med["numpy"] / med["opencl"]}


def matmul_pauses(n=1024, pauses=(0.0, 0.01, 0.05, 0.2, 0.5), calls=7):
    """numpy, pause, opencl, pause, ... in one process: how long after a numpy matmul its
    BLAS threads still take cores from PoCL. Medians per pause length."""
    import time
    run_np, run_cl, _, _ = _matmul_case(n)
    out = []
    for gap in pauses:
        tn, tp = [], []
        for _ in range(calls):
            tn.append(_seconds(run_np))
            time.sleep(gap)
            tp.append(_seconds(run_cl))
            time.sleep(gap)
        out.append({"pause_s": gap, "numpy_ms": float(np.median(tn)) * 1e3,
                    "opencl_ms": float(np.median(tp)) * 1e3,
                    "ratio_opencl_over_numpy": float(np.median(tn) / np.median(tp))})
    return out


if __name__ == "__main__":
    import json
    import sys
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    for n in [int(x) for x in args] or [1024]:
        if "--processes" in sys.argv:
            print(json.dumps(matmul_separate_processes(n)))
        elif "--pauses" in sys.argv:
            print(json.dumps(matmul_pauses(n)))
        else:
            print(json.dumps(matmul_side_by_side(n)))
