"""polyjit's cuda backend beside cupy on the same GPU, in one process.

  python benchmarks/bench_cuda.py [out.json [case,case,...]]

Matrix products 4096^3 and 8192^3 in float32 (exact, and tf32 under
pj.config.matmul_precision = "tf32"), float16 and bfloat16 (tensor cores, float32
accumulation): polyjit's generated tiled kernel vs cuBLAS at the same precision
(cupy.matmul; torch.matmul for bfloat16, which cupy lacks). And a fused
10-op elementwise chain over 256M float32 (vs a cupy device copy of the same array, the
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


def _torch():
    try:
        import torch
        return torch if torch.cuda.is_available() else None
    except ImportError:
        return None


def _peer(dtype, precision):
    """(name, prepare(a, b) -> operands, matmul(x, y), to_numpy, stream) of the vendor
    library at the same precision: cupy.matmul (cuBLAS) for float32/float16, torch
    (cuBLAS) for bfloat16 (cupy has no bfloat16) and for tf32 where cupy cannot be
    told to use it."""
    if dtype == "float32" and precision == "tf32":
        try:
            from cupy._core import _routines_linalg as rl
            rl.set_compute_type(rl.COMPUTE_TYPE_TF32)
            return _cupy_peer("cupy.matmul (cuBLAS, COMPUTE_TYPE_TF32)", np.float32)
        except Exception:
            pass
        torch = _torch()
        torch.backends.cuda.matmul.allow_tf32 = True
        return _torch_peer(torch, "torch.matmul (cuBLAS, allow_tf32)", torch.float32)
    if dtype == "bfloat16":
        torch = _torch()
        return _torch_peer(torch, "torch.matmul (cuBLAS)", torch.bfloat16)
    return _cupy_peer("cupy.matmul (cuBLAS)", np.dtype(dtype))


def _cupy_peer(name, dt):
    return (name, lambda a, b: (cp.asarray(a.astype(dt)), cp.asarray(b.astype(dt))), cp.matmul,
            lambda x: cp.asnumpy(x).astype(np.float64), cp.cuda.get_current_stream())


def _torch_peer(torch, name, dt):
    def prep(a, b):
        return (torch.from_numpy(a.astype(np.float32)).cuda().to(dt),
                torch.from_numpy(b.astype(np.float32)).cuda().to(dt))
    stream = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    return name, prep, torch.matmul, lambda x: x.float().cpu().numpy().astype(np.float64), stream


def _reset_tf32():
    try:
        from cupy._core import _routines_linalg as rl
        rl.set_compute_type(rl.COMPUTE_TYPE_DEFAULT)
    except Exception:
        pass


def matmul(be, n=4096, dtype="float32", precision="highest", reps=5):
    """polyjit's generated GEMM beside the vendor library at the same precision, the
    result checked against the vendor's before timing."""
    rng = np.random.default_rng(0)
    np_dt = pnp.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    a, b = (rng.standard_normal((n, n)).astype(np.float32).astype(np_dt) for _ in range(2))
    old = pj.config.matmul_precision
    pj.config.matmul_precision = precision
    try:
        with backends.using("cuda"):
            pa, pb = pj.device_put(a), pj.device_put(b)
        f = pj.jit(lambda a, b: a @ b, backend="cuda")
        got = np.asarray(f(pa, pb)).astype(np.float64)
        kernels = f.lower(pa, pb).executable.kernels
    finally:
        pj.config.matmul_precision = old
    name, prep, mm, to_np, stream = _peer(dtype, precision)
    x, y = prep(a, b)
    ref = to_np(mm(x, y))
    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    t_pj = _events_ms(lambda: f(pa, pb), be.stream, reps)
    t_cp = _events_ms(lambda: mm(x, y), stream, max(reps, 10))
    _reset_tf32()
    flop = 2 * n ** 3
    return {"n": n, "dtype": dtype, "precision": precision, "peer": name,
            "max_rel_err_vs_peer": err, "kernels": len(kernels),
            "tiles": getattr(kernels[0], "tiles", None),
            "polyjit_ms": t_pj, "peer_ms": t_cp, "polyjit_tflops": flop / t_pj / 1e9,
            "peer_tflops": flop / t_cp / 1e9, "ratio_polyjit_over_peer_speed": t_cp / t_pj}


def elementwise(be, n=256 * 2 ** 20, reps=20):
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
           "elementwise": elementwise(be)}
    cases = [("matmul_f32_4096", 4096, "float32", "highest"),
             ("matmul_f32_8192", 8192, "float32", "highest"),
             ("matmul_tf32_4096", 4096, "float32", "tf32"),
             ("matmul_tf32_8192", 8192, "float32", "tf32"),
             ("matmul_f16_4096", 4096, "float16", "highest"),
             ("matmul_f16_8192", 8192, "float16", "highest"),
             ("matmul_bf16_4096", 4096, "bfloat16", "highest"),
             ("matmul_bf16_8192", 8192, "bfloat16", "highest")]
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    for key, n, dt, prec in cases:
        if only and key not in only:
            continue
        try:
            out[key] = matmul(be, n, dt, prec)
        except Exception as e:     # report and go on: one failure should not hide the rest
            out[key] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        print(key, json.dumps(out[key]), flush=True)
    text = json.dumps(out, indent=1)
    print(text)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)


if __name__ == "__main__":
    main()
