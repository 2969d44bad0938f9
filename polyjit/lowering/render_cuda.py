"""CUDA C for kernel IR (compiled by NVRTC through cupy, or `nvcc -ptx` in CI). The
rendering shared with OpenCL C lives in render_c.py; CUDA-specific spelling lives here.

No headers are included (NVRTC has none by default): float16 conversions are inline PTX
`cvt` instructions, bit casts use the `__float_as_uint`-style intrinsics, and the few math
macros are defined here. Sources are compiled with `--fmad=false` (the counterpart of
OpenCL's FP_CONTRACT OFF) so a fused chain rounds like the same ops run one by one.
int64 is `long long`, so the source means the same on every host ABI.
"""
from __future__ import annotations

import numpy as np

from .render_c import (BF16, F16, SHARED_F64, SHARED_HELPERS, CRenderer, spell,
                       split_helpers)

CTYPE = {np.dtype(k): v for k, v in {
    np.bool_: "uchar", np.int8: "schar", np.uint8: "uchar", np.int16: "short",
    np.uint16: "ushort", np.int32: "int", np.uint32: "uint", np.int64: "llong",
    np.uint64: "ullong", np.float32: "float", np.float64: "double"}.items()}
CTYPE[F16] = CTYPE[BF16] = "float"
BUFTYPE = dict(CTYPE)
BUFTYPE[F16] = BUFTYPE[BF16] = "ushort"    # both held as bit patterns

# NVRTC compile options; CI's nvcc gets the same meaning through NVCC_FLAGS. C++17 for
# hexadecimal float literals (exact constants); nvcc accepts them as an extension anyway.
NVRTC_OPTIONS = ("--fmad=false", "--std=c++17")
NVCC_FLAGS = ("-fmad=false", "-std=c++17")

SPELLING = {"INLINE": "__device__ inline", "AS_UINT": "__float_as_uint",
            "AS_FLOAT": "__uint_as_float", "I64": "llong"}

# Type names are pj_-free short typedefs (identical redefinitions are legal C++, so they
# do not clash with glibc's ushort/uint when nvcc pulls in host headers); int64 is never
# spelled `long` (32-bit on Windows).
PRELUDE_BASE = r"""typedef unsigned char uchar;
typedef signed char schar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef long long llong;
typedef unsigned long long ullong;
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
template <class T> __device__ inline T pj_sat(double x, double lo, double hi, T tlo, T thi) {
  if (x != x) return (T)0;
  if (x <= lo) return tlo;
  if (x >= hi) return thi;
  return (T)x;
}
"""
F16_HELPERS = r"""
__device__ inline ushort pj_f16_bits(float x) { ushort u; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(u) : "f"(x)); return u; }
__device__ inline float pj_f16_from_bits(ushort u) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(u)); return f; }
__device__ inline float pj_rnd_f16(float x) { return pj_f16_from_bits(pj_f16_bits(x)); }
"""
PRELUDE = F16_HELPERS.strip() + "\n" + spell(SHARED_HELPERS, SPELLING).strip() + "\n"
PRELUDE_PARTS = split_helpers(PRELUDE, "__device__ inline")
PRELUDE_F64 = spell(SHARED_F64, SPELLING)

# saturation bounds of float -> integer casts, as (double bound, exact integer value)
_SAT = {}
for _t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64):
    _i = np.iinfo(_t)
    _SAT[np.dtype(_t)] = (_i.min, _i.max)


class CUDARenderer(CRenderer):
    LANG = "CUDA"
    CTYPE, BUFTYPE = CTYPE, BUFTYPE
    INDEX_T = "llong"
    SUFFIX_I, SUFFIX_U = "LL", "ULL"
    helper_parts = PRELUDE_PARTS
    PRELUDE_BASE, PRELUDE_F64 = PRELUDE_BASE, PRELUDE_F64

    def float_to_int(self, x, dt):
        # like OpenCL's convert_T_sat_rtz: NaN -> 0, out of range -> the nearest bound.
        # The bounds compare in double, where 2**63 and 2**64 are exact.
        lo, hi = _SAT[np.dtype(dt)]
        t = self.ctype(dt)
        return (f"pj_sat<{t}>((double)({x}), {float(lo)!r}, {float(hi)!r}, "
                f"{self.literal(lo, dt)}, {self.literal(hi, dt)})")

    def reinterpret(self, x, src, dt):
        # float <-> integer through the bit-move intrinsics (NVRTC has no memcpy);
        # integer <-> integer of one width is a plain C cast (modular, same bits)
        src, dt = np.dtype(src), np.dtype(dt)
        t = self.ctype(dt)
        wide = src.itemsize == 8
        if src.kind == "f":
            x = f"__double_as_longlong({x})" if wide else f"__float_as_uint({x})"
        if dt.kind == "f":
            return f"__longlong_as_double((llong){x})" if wide else f"__uint_as_float((uint){x})"
        return f"({t}){x}"

    def load(self, buf, dt, idx):
        if np.dtype(dt) == F16:
            return f"pj_f16_from_bits({buf}[{idx}])"
        return super().load(buf, dt, idx)

    def store(self, buf, dt, idx, val):
        if np.dtype(dt) == F16:
            return f"{buf}[{idx}] = pj_f16_bits({val});"
        return super().store(buf, dt, idx, val)

    def buffer_param(self, name, dt, written):
        const = "" if written else "const "
        return f"{const}{BUFTYPE[np.dtype(dt)]}* __restrict__ {name}"

    def kernel_head(self, name, params):
        return f'extern "C" __global__ void {name}({", ".join(params)}) {{'

    def work_item(self, g):
        return [f"  const llong {g} = (llong)blockIdx.x * blockDim.x + threadIdx.x;",
                f"  if ({g} >= n_work) return;"]
