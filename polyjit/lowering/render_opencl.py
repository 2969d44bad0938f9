"""OpenCL C for kernel IR. The rendering shared with CUDA C lives in render_c.py; all
OpenCL-specific spelling lives here.

float16 buffers are `half` read and written with vload_half/vstore_half_rte; bfloat16
buffers are ushort bit patterns. FP contraction is off so a fused chain rounds exactly
like the same ops run one by one.

Matrix products (kernels with a GemmSpec) get tiled kernels whose shape depends on the
device type (gemm_tiles): register-blocked float8 work items over a packed B panel in
local memory on CPUs (PoCL), local-memory tiles with register blocking on GPUs.
"""
from __future__ import annotations

import re

import numpy as np

from .linearize import linearize
from .render_c import (BF16, F16, SHARED_F64, SHARED_HELPERS, UNARY_FLOAT, CRenderer,
                       GemmRendering, RenderError, is_float, spell, split_helpers, trig_source)

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


# exp, tanh, sin and cos on floatN vectors for CPU devices, as plain vector arithmetic: PoCL's
# vector math library calls cost 2-4x these. cephes' float polynomials (about 1 ulp of the
# result; sin/cos within 1 ulp of 1), exp's 2^n from exponent bits in two halves so that
# denormal results round once, trig reduced as render_c.trig_source says (exact for
# |x| <= 1e5, the builtin past it). Ternaries select per lane; NaN lanes stay NaN. Contraction
# into fma is allowed inside them (the program's default is off): 20% faster here.
VMATH = r"""
inline floatN pj_expN(floatN x) {
#pragma OPENCL FP_CONTRACT ON
  floatN n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  floatN r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  floatN p = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
             + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * (r * r) + r + 1.0f;
  n = n < -252.0f ? (floatN)(-252.0f) : n;
  n = n > 254.0f ? (floatN)(254.0f) : n;
#if defined(__clang__)
  intN k = __builtin_convertvector(n, intN);
#else
  intN k = convert_intN(n);
#endif
  intN k1 = k >> 1;
  floatN y = p * as_floatN((k1 + 127) << 23) * as_floatN((k - k1 + 127) << 23);
  y = x > 88.72283935546875f ? (floatN)(INFINITY) : y;
  y = x < -103.972084045410f ? (floatN)(0.0f) : y;
  return x != x ? x : y;
}
inline floatN pj_tanhN(floatN x) {
#pragma OPENCL FP_CONTRACT ON
  floatN z = as_floatN(as_intN(x) & 0x7fffffff), s = x * x;
  floatN p = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s
             + 1.33314422036e-1f) * s - 3.33332819422e-1f) * s * x + x;
  floatN t = 1.0f - 2.0f / (pj_expN(2.0f * (z > 9.0f ? (floatN)(9.0f) : z)) + 1.0f);
  t = as_floatN(as_intN(t) | (as_intN(x) & (int)0x80000000));
  return ((z < 0.625f) | (x != x)) ? p : t;
}
inline floatN pj_sincosN(floatN x, int shift) {
#pragma OPENCL FP_CONTRACT ON
  floatN q = (x * 0.63661977236758134f + 12582912.0f) - 12582912.0f;
  floatN r = TRIG_R;
  floatN z = r * r;
  floatN s = SIN_POLY, c = COS_POLY;
#if defined(__clang__)
  intN k = (__builtin_convertvector(q, intN) + shift) & 3;
#else
  intN k = (convert_intN(q) + shift) & 3;
#endif
  floatN v = (k & 1) == 1 ? c : s;
  v = as_floatN(as_intN(v) ^ ((k & 2) << 30));
  intN far = (as_intN(x) & 0x7fffffff) > 0x47c35000;     /* |x| > 1e5 */
  if (any(far)) v = far ? (shift ? cos(x) : sin(x)) : v;
  return v;
}
inline floatN pj_sinN(floatN x) { return pj_sincosN(x, 0); }
inline floatN pj_cosN(floatN x) { return pj_sincosN(x, 1); }
"""
for _name, _expr in zip(("TRIG_R", "SIN_POLY", "COS_POLY"), trig_source("f")):
    VMATH = VMATH.replace(_name, _expr)
VMATH_CALL = {"exp": "pj_expN", "tanh": "pj_tanhN", "sin": "pj_sinN", "cos": "pj_cosN"}

PRELUDE = F16_HELPERS.strip() + "\n" + spell(SHARED_HELPERS, SPELLING).strip() + "\n"
PRELUDE_PARTS = split_helpers(PRELUDE, "inline")
PRELUDE_F64 = "\n#pragma OPENCL EXTENSION cl_khr_fp64 : enable" + spell(SHARED_F64, SPELLING)


def ctype(dt):
    return CTYPE[np.dtype(dt)]


F32 = np.dtype(np.float32)

# Unaligned vector loads as plain loads where the compiler is clang (PoCL), since this
# PoCL does not inline its builtins (vload8 is a function call in the inner loop).
CPU_GEMM_PRELUDE = """#ifndef PJ_LDU
#if defined(__clang__)
typedef float pj_f8u __attribute__((ext_vector_type(8), aligned(4)));
typedef float pj_f4u __attribute__((ext_vector_type(4), aligned(4)));
typedef float pj_f2u __attribute__((ext_vector_type(2), aligned(4)));
#define PJ_LDU(n, p) (*(const __global pj_f##n##u*)(p))
#else
#define PJ_LDU(n, p) vload##n(0, p)
#endif
#endif
"""


def gemm_tiles(spec, device_type="gpu", compute_units=1):
    """Tile shape of an OpenCL GEMM for this problem and device.

    cpu (PoCL and the like): each work item keeps an RM x RN block of C in float8
    registers (one AVX register each) and streams its A rows; the WG items of a work
    group share one RN-wide column panel of B, packed KB rows at a time into local
    memory (kind "cpu_packed"). Kind "cpu" (no local memory, one item per group) is the
    simpler variant it was measured against.
    gpu: BM x BN tiles of C per work group of (BN/TN) x (BM/TM) items, A and B tiles
    of depth BK staged in local memory, TM x TN outputs per item in registers."""
    M, N = spec.M, spec.N
    if device_type == "cpu":
        # measured with PoCL on a 2-core AVX2 EPYC (benchmarks/bench_lowering.py): 6 x 16
        # per item (12 accumulator registers of 16), work groups of up to 8 items
        # sharing a 256-deep packed panel of B
        rn = 16 if N >= 16 else 8
        rm = 6 if M >= 24 else 2
        rows = -(-M // rm)
        wg = max(d for d in (1, 2, 4, 8) if d <= rows)
        return dict(kind="cpu_packed", RM=rm, RN=rn, WG=wg, KB=256)
    big = M * N >= 64 * 64 * 64 * max(compute_units // 16, 1)
    if big and M >= 64 and N >= 64:
        return dict(kind="gpu", BM=64, BN=64, BK=16, TM=4, TN=4)
    return dict(kind="gpu", BM=32, BN=32, BK=16, TM=2, TN=2)


class OpenCLRenderer(CRenderer, GemmRendering):
    LANG = "OpenCL"
    CTYPE, BUFTYPE = CTYPE, BUFTYPE
    helper_parts = PRELUDE_PARTS
    PRELUDE_BASE, PRELUDE_F64 = PRELUDE_BASE, PRELUDE_F64
    GEMM_INLINE = "inline"
    device_type = "gpu"       # the backend sets "cpu" for CPU devices (tile choice)
    compute_units = 1

    # ------------------------------------------------------------ GEMM
    def render_gemm(self, kernel, spec, params, names, arg_dtypes):
        t = gemm_tiles(spec, self.device_type, self.compute_units)
        kernel.tiles = t
        if t["kind"] == "cpu_packed":
            lines, geom = self._gemm_cpu_packed(kernel, spec, t, names)
        elif t["kind"] == "cpu":
            lines, geom = self._gemm_cpu(kernel, spec, t, names)
        else:
            lines, geom = self._gemm_gpu(kernel, spec, t, names)
        kernel.launch_geometry = geom
        attr = ""
        if geom[1] is not None:
            attr = f"__attribute__((reqd_work_group_size({geom[1][0]}, {geom[1][1]}, {geom[1][2]}))) "
        g, l = geom
        note = f"/* pj_launch {kernel.name} {g[0]} {g[1]} {g[2]} {l[0]} {l[1]} {l[2]} */"
        head = f"{note}\n__kernel {attr}void {kernel.name}({', '.join(params)}) {{"
        if t["kind"].startswith("cpu"):
            head = CPU_GEMM_PRELUDE + head
        return "\n".join([head] + lines + ["}"])

    def _plain_ptr(self, op, names, which, row_var):
        """(pointer expression to the row/col panel, stride of the k index) for a plain
        float32 operand, else None."""
        if op.plain is None or op.dtype != F32:
            return None
        slot, off, sb, s1, s2 = op.plain
        buf = names[slot]
        return buf, off, sb, s1, s2

    def _gemm_cpu(self, kernel, spec, t, names):
        RM, RN, WG = t["RM"], t["RN"], t["WG"]
        VW = 8 if RN % 8 == 0 else RN          # float8 registers: one AVX register each
        NV = RN // VW
        M, N, K = spec.M, spec.N, spec.K
        bufs = ", ".join(names[a.slot] for a in kernel.args)
        vt = f"float{VW}"
        L = ["#pragma OPENCL FP_CONTRACT ON",     # a * b + c below: one FMA each
             f"  const int n0 = (int)get_global_id(0) * {RN};",
             f"  const int m0 = (int)get_global_id(1) * {RM};",
             "  const long gb = get_global_id(2);",
             f"  if (n0 >= {N} || m0 >= {M}) return;"]
        for i in range(RM):
            for v in range(NV):
                L.append(f"  {vt} c{i}_{v} = ({vt})(0.0f);")
        a, b = spec.a, spec.b
        # A: one pointer per row (rows past M clamped: computed, never stored)
        pa = self._plain_ptr(a, names, "a", None)
        if pa is not None:
            buf, off, sb, sm, sk = pa
            for i in range(RM):
                L.append(f"  const __global float* a{i} = {buf} + {off} + gb * {sb} + "
                         f"(long)(m0 + {i} < {M} ? m0 + {i} : {M - 1}) * {sm};")
            ald = lambda i, k, sk=sk: f"a{i}[(long){k} * {sk}]"
        else:
            ald = lambda i, k: self.gemm_call(kernel, "a", f"gb, min(m0 + {i}, {M - 1}), {k}", bufs)
        pb = self._plain_ptr(b, names, "b", None)
        if pb is not None:
            L.append(f"  const __global float* bp = {pb[0]} + {pb[1]} + gb * {pb[2]};")
        full_n = N % RN == 0
        if pb is not None and pb[4] == 1 and full_n:
            bld = lambda k, v: f"PJ_LDU({VW}, bp + (long){k} * {pb[3]} + n0 + {v * VW})"
        else:
            def bld(k, v):
                parts = []
                for j in range(v * VW, (v + 1) * VW):
                    n = f"min(n0 + {j}, {N - 1})"
                    if pb is not None:
                        parts.append(f"bp[(long){k} * {pb[3]} + (long)({n}) * {pb[4]}]")
                    else:
                        parts.append(self.gemm_call(kernel, "b", f"gb, {k}, {n}", bufs))
                return f"({vt})({', '.join(parts)})"
        KU = t.get("KU", 1)
        if KU > 1 and pa is not None and pa[4] == 1 and K % KU == 0:
            # k unrolled: each A row read KU values at a time, one lane broadcast per step
            L.append(f"  for (int k = 0; k < {K}; k += {KU}) {{")
            for i in range(RM):
                L.append(f"    const float{KU} ar{i} = PJ_LDU({KU}, a{i} + k);")
            for u in range(KU):
                for v in range(NV):
                    L.append(f"    const {vt} bv{u}_{v} = {bld(f'(k + {u})', v)};")
            for u in range(KU):
                for i in range(RM):
                    for v in range(NV):
                        L.append(f"    c{i}_{v} = ({vt})(ar{i}.s{u:x}) * bv{u}_{v} + c{i}_{v};")
            L.append("  }")
        else:
            L.append(f"  for (int k = 0; k < {K}; k++) {{")
            for v in range(NV):
                L.append(f"    const {vt} bv{v} = {bld('k', v)};")
            for i in range(RM):
                L.append(f"    const {vt} av{i} = ({vt})({ald(i, 'k')});")
                for v in range(NV):
                    L.append(f"    c{i}_{v} = av{i} * bv{v} + c{i}_{v};")
            L.append("  }")
        L.append(f"  float cs[{RN}];")
        for i in range(RM):
            L.append(f"  if (m0 + {i} < {M}) {{")
            for v in range(NV):
                L.append(f"    vstore{VW}(c{i}_{v}, 0, cs + {v * VW});")
            L.append(f"    for (int j = 0; j < {RN}; j++) if (n0 + j < {N}) "
                     f"pj_ge_{kernel.name}({bufs}, gb, m0 + {i}, n0 + j, cs[j]);")
            L.append("  }")
        gx = -(-(-(-N // RN)) // WG) * WG
        gy = -(-M // RM)
        return L, ((gx, gy, spec.batch), (WG, 1, 1))

    def _gemm_cpu_packed(self, kernel, spec, t, names):
        """CPU tiles with B packed: a work group of WG items shares one RN-column panel
        of B, copied KB rows at a time into local memory (contiguous, so a power-of-two
        leading dimension does not alias every row of the panel onto one cache set);
        each item keeps RM x RN of C in float8 registers and streams its A rows."""
        RM, RN, WG, KB = t["RM"], t["RN"], t["WG"], t["KB"]
        NV = RN // 8
        M, N, K = spec.M, spec.N, spec.K
        KB = min(KB, -(-K // 8) * 8)
        bufs = ", ".join(names[a.slot] for a in kernel.args)
        a, b = spec.a, spec.b
        L = ["#pragma OPENCL FP_CONTRACT ON",
             f"  __local float8 Bp8[{KB * RN // 8}];",
             "  __local float* Bp = (__local float*)Bp8;",
             f"  const int n0 = (int)get_group_id(0) * {RN};",
             "  const int li = get_local_id(1);",
             f"  const int m0 = (int)get_global_id(1) * {RM};",
             "  const long gb = get_global_id(2);"]
        for i in range(RM):
            for v in range(NV):
                L.append(f"  float8 c{i}_{v} = (float8)(0.0f);")
        pa = self._plain_ptr(a, names, "a", None)
        if pa is not None:
            for i in range(RM):
                L.append(f"  const __global float* a{i} = {pa[0]} + {pa[1]} + gb * {pa[2]} + "
                         f"(long)(m0 + {i} < {M} ? m0 + {i} : {M - 1}) * {pa[3]};")
            ald = lambda i, k: f"a{i}[(long)({k}) * {pa[4]}]"
        else:
            ald = lambda i, k: self.gemm_call(kernel, "a", f"gb, min(m0 + {i}, {M - 1}), {k}", bufs)
        pb = self._plain_ptr(b, names, "b", None)
        vec_b = pb is not None and pb[4] == 1 and N % RN == 0
        if pb is not None:
            L.append(f"  const __global float* bp = {pb[0]} + {pb[1]} + gb * {pb[2]};")
        L.append(f"  for (int kb = 0; kb < {K}; kb += {KB}) {{")
        L.append("    barrier(CLK_LOCAL_MEM_FENCE);")
        L.append(f"    for (int kk = li; kk < {KB}; kk += {WG}) {{")
        L.append(f"      const int k = min(kb + kk, {K - 1});")
        if vec_b:
            for v in range(NV):
                L.append(f"      vstore8(vload8(0, bp + (long)k * {pb[3]} + n0 + {8 * v}), 0, Bp + kk * {RN} + {8 * v});")
        else:
            L.append(f"      for (int j = 0; j < {RN}; j++) {{ const int n = n0 + j < {N} ? n0 + j : {N - 1};")
            if pb is not None:
                L.append(f"        Bp[kk * {RN} + j] = bp[(long)k * {pb[3]} + (long)n * {pb[4]}]; }}")
            else:
                L.append(f"        Bp[kk * {RN} + j] = {self.gemm_call(kernel, 'b', 'gb, k, n', bufs)}; }}")
        L.append("    }")
        L.append("    barrier(CLK_LOCAL_MEM_FENCE);")
        L.append(f"    const int kn = min({KB}, {K} - kb);")
        L.append("    for (int kk = 0; kk < kn; kk++) {")
        for v in range(NV):
            L.append(f"      const float8 bv{v} = *(const __local float8*)(Bp + kk * {RN} + {8 * v});")
        for i in range(RM):
            L.append(f"      const float8 av{i} = (float8)({ald(i, 'kb + kk')});")
            for v in range(NV):
                L.append(f"      c{i}_{v} = av{i} * bv{v} + c{i}_{v};")
        L.append("    }")
        L.append("  }")
        L.append(f"  float cs[{RN}];")
        for i in range(RM):
            L.append(f"  if (m0 + {i} < {M}) {{")
            for v in range(NV):
                L.append(f"    vstore8(c{i}_{v}, 0, cs + {v * 8});")
            L.append(f"    for (int j = 0; j < {RN}; j++) if (n0 + j < {N}) "
                     f"pj_ge_{kernel.name}({bufs}, gb, m0 + {i}, n0 + j, cs[j]);")
            L.append("  }")
        gy = -(-(-(-M // RM)) // WG) * WG
        return L, ((-(-N // RN), gy, spec.batch), (1, WG, 1))

    def _gemm_gpu(self, kernel, spec, t, names):
        BM, BN, BK, TM, TN = t["BM"], t["BN"], t["BK"], t["TM"], t["TN"]
        M, N, K = spec.M, spec.N, spec.K
        LX, LY = BN // TN, BM // TM
        NT = LX * LY
        bufs = ", ".join(names[a.slot] for a in kernel.args)
        L = [f"  __local float As[{BK}][{BM + 1}];", f"  __local float Bs[{BK}][{BN + 1}];",
             "  const int tx = get_local_id(0), ty = get_local_id(1);",
             f"  const int tid = ty * {LX} + tx;",
             f"  const int bn = get_group_id(0) * {BN}, bm = get_group_id(1) * {BM};",
             "  const long gb = get_group_id(2);",
             f"  float c[{TM}][{TN}];",
             f"  for (int i = 0; i < {TM}; i++) for (int j = 0; j < {TN}; j++) c[i][j] = 0.0f;",
             f"  for (int k0 = 0; k0 < {K}; k0 += {BK}) {{"]
        # A tile: consecutive work items take consecutive k when A is k-contiguous
        a_kfast = spec.a.contiguous(2) or spec.a.plain is None
        L.append(f"    for (int e = tid; e < {BM * BK}; e += {NT}) {{")
        if a_kfast:
            L.append(f"      const int mm = e / {BK}, kk = e % {BK};")
        else:
            L.append(f"      const int kk = e / {BM}, mm = e % {BM};")
        L.append("      const int m = bm + mm, k = k0 + kk;")
        L.append(f"      As[kk][mm] = (m < {M} && k < {K}) ? "
                 f"{self.gemm_call(kernel, 'a', 'gb, m, k', bufs)} : 0.0f;")
        L.append("    }")
        b_nfast = spec.b.contiguous(2) or spec.b.plain is None
        L.append(f"    for (int e = tid; e < {BK * BN}; e += {NT}) {{")
        if b_nfast:
            L.append(f"      const int kk = e / {BN}, nn = e % {BN};")
        else:
            L.append(f"      const int nn = e / {BK}, kk = e % {BK};")
        L.append("      const int n = bn + nn, k = k0 + kk;")
        L.append(f"      Bs[kk][nn] = (n < {N} && k < {K}) ? "
                 f"{self.gemm_call(kernel, 'b', 'gb, k, n', bufs)} : 0.0f;")
        L.append("    }")
        L.append("    barrier(CLK_LOCAL_MEM_FENCE);")
        L.append(f"    for (int kk = 0; kk < {BK}; kk++) {{")
        L.append(f"      float a[{TM}], b[{TN}];")
        L.append(f"      for (int i = 0; i < {TM}; i++) a[i] = As[kk][ty + i * {LY}];")
        L.append(f"      for (int j = 0; j < {TN}; j++) b[j] = Bs[kk][tx + j * {LX}];")
        L.append(f"      for (int i = 0; i < {TM}; i++) for (int j = 0; j < {TN}; j++) "
                 "c[i][j] = fma(a[i], b[j], c[i][j]);")
        L.append("    }")
        L.append("    barrier(CLK_LOCAL_MEM_FENCE);")
        L.append("  }")
        L.append(f"  for (int i = 0; i < {TM}; i++) for (int j = 0; j < {TN}; j++) {{")
        L.append(f"    const int m = bm + ty + i * {LY}, n = bn + tx + j * {LX};")
        L.append(f"    if (m < {M} && n < {N}) pj_ge_{kernel.name}({bufs}, gb, m, n, c[i][j]);")
        L.append("  }")
        gx, gy = -(-N // BN) * LX, -(-M // BM) * LY
        return L, ((gx, gy, spec.batch), (LX, LY, 1))

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

    # ------------------------------------------------------------ vector elementwise kernels
    def render(self, kernel, arg_dtypes):
        if self.device_type == "cpu" and not self.generic and kernel.gemm is None:
            src = self._render_vector(kernel, arg_dtypes)
            if src is not None:
                return src
        return super().render(kernel, arg_dtypes)

    def _render_vector(self, kernel, arg_dtypes):
        """A float32 elementwise kernel (every load and store at the work item's own index,
        no loops) with each work item on VEC consecutive elements as floatN vectors, or None.
        PoCL vectorizes scalar work items' arithmetic but calls its math library per element;
        on vectors it runs the vector math library, several times faster on exp/tanh/sin."""
        n = kernel.global_size
        if kernel.ser or n < VEC * WORK_GROUP:
            return None
        stmts, g = linearize(kernel)
        gv = kernel.par[0]
        names = self.buffer_names(kernel)
        body, scalars = [], set()
        vec = lambda o: f"(float{VEC})({o})" if o in scalars else o
        for st in stmts:
            if st[0] == "store":
                _, slot, dt, idx, val = st
                if np.dtype(dt) != F32 or idx != g:
                    return None
                body.append(f"    vstore{VEC}({vec(val)}, 0, b{slot} + {g});")
                continue
            if st[0] != "def":
                return None
            _, name, e, ops = st
            if gv not in e.free and e.op != "reduce":   # the same for every element: a scalar
                body.append(f"    const {self.ctype(e.dtype)} {name} = {self.value(e, ops, names)};")
                scalars.add(name)
                continue
            if np.dtype(e.dtype) != F32:
                return None
            if e.op == "load" and ops[0] == g:
                rhs = f"vload{VEC}(0, b{e.arg} + {g})"
            elif e.op == "alu" and all(np.dtype(a.dtype) == F32 for a in e.args):
                rhs = _vector_alu(e.arg, [vec(o) for o in ops])
                if rhs is None:
                    return None
            else:
                return None
            body.append(f"    const float{VEC} {name} = {rhs};")
        tail = self._stmts(stmts, [], names, 2)     # the remainder, one element at a time
        groups = -(-n // VEC)
        groups = -(-groups // WORK_GROUP) * WORK_GROUP
        return "\n".join(
            [f"/* pj_launch {kernel.name} {groups} 1 1 {WORK_GROUP} 1 1 */",
             self.signature(kernel, arg_dtypes),
             f"  const long {g}_v = get_global_id(0) * {VEC};",
             f"  if ({g}_v >= n_work) return;",
             f"  if ({g}_v + {VEC} <= n_work) {{", f"    const long {g} = {g}_v;"] + body +
            ["    return;", "  }",
             f"  for (long {g} = {g}_v; {g} < n_work; {g}++) {{"] + tail + ["  }", "}"])


VEC = 8                  # floats per work item in vector elementwise kernels
WORK_GROUP = 64          # work-group size of every plain kernel launch (opencl_backend)
_VEC_BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_VEC_CALL = {"abs": "fabs", **{op: fn for op, fn in UNARY_FLOAT.items() if op not in ("erf", "erfc")},
             **{op: fn.replace("N", str(VEC)) for op, fn in VMATH_CALL.items()}}
PRELUDE_PARTS += split_helpers(re.sub(r"(?<=[a-z])N\b", str(VEC), VMATH), "inline")   # floatN -> float8


def _vector_alu(op, a):
    """`op` over float vectors in OpenCL C (the scalar renderer's semantics), or None."""
    if op in _VEC_BINARY:
        return f"({a[0]} {_VEC_BINARY[op]} {a[1]})"
    if op in ("pow", "atan2"):
        return f"{op}({a[0]}, {a[1]})"
    if op in ("max", "min"):           # NaN-propagating, as numpy: select(y, x, x wins)
        c = ">" if op == "max" else "<"
        return f"select({a[1]}, {a[0]}, ({a[0]} {c} {a[1]}) | isnan({a[0]}))"
    if op == "neg":
        return f"(-{a[0]})"
    if op == "square":
        return f"({a[0]} * {a[0]})"
    if op == "rsqrt":
        return f"(1.0f / sqrt({a[0]}))"
    if op == "logistic":
        return f"(1.0f / (1.0f + {_VEC_CALL['exp']}(-{a[0]})))"
    return f"{_VEC_CALL[op]}({a[0]})" if op in _VEC_CALL else None


_default = OpenCLRenderer()


def literal(v, dt) -> str:
    return _default.literal(v, dt)
