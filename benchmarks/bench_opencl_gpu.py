"""polyjit's opencl backend on an NVIDIA GPU (NVIDIA's OpenCL driver) beside cupy on the
same GPU, in one process:

  python benchmarks/bench_opencl_gpu.py [out.json]

float32 matmul 4096^3 (polyjit's generated OpenCL GEMM vs cupy.matmul = cuBLAS) and the
fused 10-op elementwise chain of bench_lowering.py over 64M float32 (vs a cupy device
copy of the same bytes: both read 4 and write 4 bytes per element). Results are checked
against numpy/cupy before timing; times are wall-clock over N back-to-back calls, with the
queue (or stream) drained before and after.
"""
import json
import sys
import time

import numpy as np

import polyjit as pj
from polyjit import backends

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_lowering import chain, chain_np  # noqa: E402


def _time(fn, sync, n):
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t) / n * 1e3


def main():
    import cupy as cp
    be = backends.get_backend("opencl")
    assert be.platform == "gpu", f"opencl picked a {be.platform} device: {be.device.name}"
    out = {"device": be.device.name, "driver": be.device.driver_version}
    with backends.using("opencl"):
        n = 64 * 2 ** 20
        x = (np.random.default_rng(1).standard_normal(n) + 0.1).astype(np.float32)
        px = pj.device_put(x)
        f = pj.jit(chain)
        got = np.asarray(f(px))
        want = chain_np(x.astype(np.float64))
        out["chain_max_abs_err"] = float(np.max(np.abs(got - want)))
        assert out["chain_max_abs_err"] < 1e-5, out
        t_pj = _time(lambda: f(px), be.queue.finish, 20)
        cx = cp.asarray(x)
        dst = cp.empty_like(cx)
        t_cp = _time(lambda: cp.copyto(dst, cx), cp.cuda.Device().synchronize, 20)
        gbs = lambda ms: 8 * n / ms / 1e6  # noqa: E731
        out["chain"] = {"n": n, "polyjit_ms": t_pj, "cupy_copy_ms": t_cp, "polyjit_GBps": gbs(t_pj),
                        "copy_GBps": gbs(t_cp), "fraction_of_copy_bandwidth": t_cp / t_pj}

        m = 4096
        r = np.random.default_rng(2)
        a, b = (r.standard_normal((m, m)).astype(np.float32) for _ in range(2))
        pa, pb = pj.device_put(a), pj.device_put(b)
        g = pj.jit(lambda a, b: a @ b)
        ca, cb = cp.asarray(a), cp.asarray(b)
        ref = cp.asnumpy(ca @ cb)
        got = np.asarray(g(pa, pb))
        out["matmul_max_rel_err"] = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        assert out["matmul_max_rel_err"] < 1e-4, out
        t_pj = _time(lambda: g(pa, pb), be.queue.finish, 10)
        t_cp = _time(lambda: ca @ cb, cp.cuda.Device().synchronize, 10)
        fl = 2 * m ** 3
        out["matmul_f32"] = {"n": m, "polyjit_ms": t_pj, "cupy_ms": t_cp, "polyjit_tflops": fl / t_pj / 1e9,
                             "cupy_tflops": fl / t_cp / 1e9, "fraction_of_cublas": t_cp / t_pj}
    text = json.dumps(out, indent=1)
    print(text)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)


if __name__ == "__main__":
    main()
