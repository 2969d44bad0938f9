"""polyjit's cuda backend beside cupy on the same GPU, in one process.

  python benchmarks/bench_cuda.py [out.json]

float32 matmul 4096^3 (polyjit's generated kernel vs cupy.matmul = cuBLAS) and a fused
10-op elementwise chain over 64M float32 (vs a cupy device copy of the same array, the
bandwidth ceiling: both read 4 and write 4 bytes per element; `ndarray.copy()`, which
allocates its output as a polyjit call does, and a device-to-device memcpy into a
preallocated array). Each result is checked
against cupy before timing. Times come from CUDA events on the stream each library
launches on, over N back-to-back calls after warm-up.
"""
import json
import sys

import cupy as cp
import numpy as np

import polyjit as pj
import polyjit.numpy as pnp
from polyjit import backends


def _events_ms(fn, stream, n):
    fn()
    fn()
    stream.synchronize()
    a, b = cp.cuda.Event(), cp.cuda.Event()
    a.record(stream)
    for _ in range(n):
        fn()
    b.record(stream)
    b.synchronize()
    return cp.cuda.get_elapsed_time(a, b) / n


def _chain(x):     # 10 elementwise ops, one fused kernel
    y = x * 1.5 + 0.25
    y = pnp.tanh(y) * 0.5
    y = pnp.exp(y) - 1.0
    y = pnp.maximum(y, -0.5) * pnp.abs(x)
    return y + 0.125


def matmul(be, n=4096, reps=5):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    with backends.using("cuda"):
        pa, pb = pj.device_put(a), pj.device_put(b)
    f = pj.jit(lambda a, b: a @ b, backend="cuda")
    ca, cb = cp.asarray(a), cp.asarray(b)
    ref = cp.matmul(ca, cb)
    got = np.asarray(f(pa, pb))
    err = float(np.max(np.abs(got - cp.asnumpy(ref))) / np.max(np.abs(cp.asnumpy(ref))))
    t_pj = _events_ms(lambda: f(pa, pb), be.stream, reps)
    t_cp = _events_ms(lambda: cp.matmul(ca, cb), cp.cuda.get_current_stream(), 20)
    flop = 2 * n ** 3
    return {"n": n, "max_rel_err_vs_cupy": err, "kernels": len(f.lower(pa, pb).executable.kernels),
            "polyjit_ms": t_pj, "cupy_ms": t_cp, "polyjit_tflops": flop / t_pj / 1e9,
            "cupy_tflops": flop / t_cp / 1e9, "ratio_polyjit_over_cupy_speed": t_cp / t_pj}


def elementwise(be, n=64 * 2 ** 20, reps=20):
    x = (np.random.default_rng(1).standard_normal(n) + 0.1).astype(np.float32)
    with backends.using("cuda"):
        px = pj.device_put(x)
    f = pj.jit(_chain, backend="cuda")
    cx = cp.asarray(x)
    got = np.asarray(f(px))
    y = cx * 1.5 + 0.25
    y = cp.tanh(y) * 0.5
    y = cp.exp(y) - 1.0
    ref = cp.asnumpy(cp.maximum(y, -0.5) * cp.abs(cx) + 0.125)
    err = float(np.max(np.abs(got - ref)))
    t_pj = _events_ms(lambda: f(px), be.stream, reps)
    s = cp.cuda.get_current_stream()
    t_cp = _events_ms(lambda: cx.copy(), s, reps)            # allocates, like polyjit's call
    dst = cp.empty_like(cx)
    t_mc = _events_ms(lambda: cp.cuda.runtime.memcpyAsync(   # into a preallocated array
        dst.data.ptr, cx.data.ptr, 4 * n, cp.cuda.runtime.memcpyDeviceToDevice, s.ptr), s, reps)
    gbs = lambda ms: 8 * n / ms / 1e6       # read + write, GB/s
    return {"n": n, "max_abs_err_vs_cupy": err, "kernels": len(f.lower(px).executable.kernels),
            "polyjit_ms": t_pj, "cupy_copy_ms": t_cp, "memcpy_d2d_ms": t_mc,
            "polyjit_GBps": gbs(t_pj), "cupy_copy_GBps": gbs(t_cp), "memcpy_d2d_GBps": gbs(t_mc),
            "fraction_of_cupy_copy": t_cp / t_pj, "fraction_of_memcpy": t_mc / t_pj}


def main():
    be = backends.get_backend("cuda")
    out = {"device": be.device_name, "arch": be.arch, "cupy": cp.__version__,
           "elementwise": elementwise(be), "matmul_f32": matmul(be)}
    text = json.dumps(out, indent=1)
    print(text)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)


if __name__ == "__main__":
    main()
