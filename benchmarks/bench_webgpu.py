"""polyjit's webgpu backend: float32 matmul n^3 in TFLOP/s on whatever WebGPU adapter
wgpu finds (a GPU through Vulkan/Metal/D3D12, or Mesa's lavapipe on a CPU).

  python benchmarks/bench_webgpu.py [--n N] [--reps R] [--json out.json]

The default size is 4096 on a GPU adapter; on a CPU adapter (lavapipe) it is 512, since
4096^3 takes minutes there (ask for more with --n). The result is checked against numpy
(float64 reference, relative error printed) before timing. Times are wall clock per call
from submit to completion (`block_until_ready`), over R calls after one warm-up call.
With no adapter (wgpu missing, no Vulkan driver) it says so and exits 0.
"""
import argparse
import json
import sys
import time

import numpy as np

import polyjit as pj
from polyjit import backends


def matmul(be, n, reps):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    pa, pb = pj.device_put(a, backend="webgpu"), pj.device_put(b, backend="webgpu")
    f = pj.jit(lambda a, b: a @ b, backend="webgpu")
    t0 = time.perf_counter()
    got = np.asarray(f(pa, pb))          # compile + first run
    first = time.perf_counter() - t0
    ref = a.astype(np.float64) @ b.astype(np.float64)
    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    if not err < 1e-4:
        raise SystemExit(f"webgpu matmul {n}^3 disagrees with numpy: max rel err {err:.3g}")
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(pa, pb).block_until_ready()
        times.append(time.perf_counter() - t0)
    t = min(times)
    t_np = min(_time(lambda: a @ b) for _ in range(3))
    flop = 2 * n ** 3
    return {"n": n, "adapter": be.device_name, "adapter_platform": be.platform,
            "adapter_backend": be.backend_type, "max_rel_err_vs_numpy_f64": err,
            "kernels": len(f.lower(pa, pb).executable.kernels), "first_call_s": first,
            "webgpu_ms": t * 1e3, "webgpu_tflops": flop / t / 1e12,
            "numpy_ms": t_np * 1e3, "numpy_tflops": flop / t_np / 1e12}


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="matrix size (default 4096 on a GPU "
                    "adapter, 512 on a CPU adapter such as lavapipe)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args(argv)
    try:
        be = backends.get_backend("webgpu")
    except Exception as e:
        print(f"SKIP: no WebGPU adapter ({e})")
        return 0
    n = args.n or (4096 if be.platform == "gpu" else 512)
    if args.n is None and be.platform != "gpu":
        print(f"note: CPU adapter ({be.device_name}): using n={n}; pass --n 4096 for the full size")
    r = matmul(be, n, args.reps)
    print(f"webgpu float32 matmul {n}^3 on {r['adapter']} ({r['adapter_backend']}, "
          f"{r['adapter_platform']}): {r['webgpu_ms']:.1f} ms = {r['webgpu_tflops']:.4f} TFLOP/s "
          f"(numpy on the host: {r['numpy_tflops']:.4f} TFLOP/s; max rel err vs numpy "
          f"{r['max_rel_err_vs_numpy_f64']:.2g})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
