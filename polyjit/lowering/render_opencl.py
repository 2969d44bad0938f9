"""OpenCL C for kernel IR. The rendering shared with CUDA C lives in render_c.py; all
OpenCL-specific spelling lives here.

float16 buffers are `half` read and written with vload_half/vstore_half_rte; bfloat16
buffers are ushort bit patterns. FP contraction is off so a fused chain rounds exactly
like the same ops run one by one.
"""
from __future__ import annotations

import numpy as np

from .render_c import (BF16, F16, SHARED_F64, SHARED_HELPERS, CRenderer, RenderError,
                       is_float, spell, split_helpers)

__all__ = ["OpenCLRenderer", "RenderError", "CTYPE", "BUFTYPE", "ctype", "literal", "is_float"]

CTYPE = {np.dtype(k): v for k, v in {
    np.bool_: "uchar", np.int8: "char", np.uint8: "uchar", np.int16: "short",
    np.uint16: "ushort", np.int32: "int", np.uint32: "uint", np.int64: "long",
    np.uint64: "ulong", np.float32: "float", np.float64: "double"}.items()}
CTYPE[F16] = CTYPE[BF16] = "float"
BUFTYPE = dict(CTYPE)
BUFTYPE[F16], BUFTYPE[BF16] = "half", "ushort"

SPELLING = {"INLINE": "inline", "AS_UINT": "as_uint", "AS_FLOAT": "as_float", "I64": "long"}

PRELUDE_BASE = "#pragma OPENCL FP_CONTRACT OFF\n"
F16_HELPERS = r"""
inline float pj_rnd_f16(float x) { ushort u; vstore_half_rte(x, 0, (__private half*)&u);
  return vload_half(0, (__private half*)&u); }
inline ushort pj_f16_bits(float x) { ushort u; vstore_half_rte(x, 0, (__private half*)&u); return u; }
inline float pj_f16_from_bits(ushort u) { return vload_half(0, (__private half*)&u); }
"""


PRELUDE = F16_HELPERS.strip() + "\n" + spell(SHARED_HELPERS, SPELLING).strip() + "\n"
PRELUDE_PARTS = split_helpers(PRELUDE, "inline")
PRELUDE_F64 = "\n#pragma OPENCL EXTENSION cl_khr_fp64 : enable" + spell(SHARED_F64, SPELLING)


def ctype(dt):
    return CTYPE[np.dtype(dt)]


class OpenCLRenderer(CRenderer):
    LANG = "OpenCL"
    CTYPE, BUFTYPE = CTYPE, BUFTYPE
    helper_parts = PRELUDE_PARTS
    PRELUDE_BASE, PRELUDE_F64 = PRELUDE_BASE, PRELUDE_F64

    def float_to_int(self, x, dt):
        return f"convert_{self.ctype(dt)}_sat_rtz({x})"

    def reinterpret(self, x, src, dt):
        return f"as_{self.ctype(dt)}({x})"

    def load(self, buf, dt, idx):
        if np.dtype(dt) == F16:
            return f"vload_half({idx}, {buf})"
        return super().load(buf, dt, idx)

    def store(self, buf, dt, idx, val):
        if np.dtype(dt) == F16:
            return f"vstore_half_rte({val}, {idx}, {buf});"
        return super().store(buf, dt, idx, val)

    def buffer_param(self, name, dt, written):
        const = "" if written else "const "
        return f"__global {const}{BUFTYPE[np.dtype(dt)]}* restrict {name}"

    def kernel_head(self, name, params):
        return f"__kernel void {name}({', '.join(params)}) {{"

    def work_item(self, g):
        return [f"  const long {g} = get_global_id(0);", f"  if ({g} >= n_work) return;"]


_default = OpenCLRenderer()


def literal(v, dt) -> str:
    return _default.literal(v, dt)
