"""CUDA C for kernel IR (compiled by NVRTC through cupy, or `nvcc -ptx` in CI). The
rendering shared with OpenCL C lives in render_c.py; CUDA-specific spelling lives here.

No headers are included (NVRTC has none by default): float16 conversions are inline PTX
`cvt` instructions, bit casts use the `__float_as_uint`-style intrinsics, and the few math
macros are defined here. Sources are compiled with `--fmad=false` (the counterpart of
OpenCL's FP_CONTRACT OFF) so a fused chain rounds like the same ops run one by one.
int64 is `long long`, so the source means the same on every host ABI.

Matrix products (kernels with a GemmSpec) get tiled kernels: float32 on CUDA cores
(shared-memory double buffering, register blocking, float4 loads, explicit FMAs since
--fmad=false), and on tensor cores with `mma.sync` (m16n8k16 float16/bfloat16, m16n8k8
tf32 under pj.config.matmul_precision = "tf32"; float32 accumulation) fed by a
multi-stage cp.async pipeline and ldmatrix; on Hopper (sm_90a) large float16/bfloat16
products use warpgroup MMA (`wgmma.mma_async`, operands read by descriptor from
128-byte-swizzled shared memory). Tile shapes are chosen per problem size and SM count
(gemm_tiles); the launch shape travels in a `pj_launch` comment in the source.
"""
from __future__ import annotations

import numpy as np

from .linearize import linearize
from .render_c import (BF16, F16, SHARED_F64, SHARED_HELPERS, CRenderer, GemmRendering,
                       spell, split_helpers)

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


F32 = np.dtype(np.float32)

# Tile shapes, largest first: (BM, BN, BK, TM, TN) for the FMA kernel (threads =
# BM/TM * BN/TN), (BM, BN, BK, warps along m, warps along n) for the tensor-core one.
SIMT_TILES = ((128, 128, 8, 8, 8), (128, 64, 8, 8, 4), (64, 64, 8, 4, 4), (32, 128, 8, 4, 8),
              (32, 32, 8, 4, 4))
TILE_MAX_WASTE = 1.25   # padded tile area over the real M x N, at most (a tile much taller
# than M, say 128 rows for M = 32, computes mostly padding)
# tensor-core tiles: (BM, BN, BK, warps along m, warps along n, pipeline stages)
# (measured on the H100 at 4096^3 and 8192^3; see benchmarks/bench_cuda.py)
MMA_TILES = {"f16": ((128, 256, 64, 2, 4, 3), (128, 128, 32, 2, 4, 4), (64, 64, 32, 2, 2, 3)),
             "tf32": ((128, 256, 32, 2, 4, 3), (128, 128, 16, 2, 4, 4), (64, 64, 16, 2, 2, 3))}


def mma_kind(spec):
    """"f16", "bf16" or "tf32" when the product runs on tensor cores, else None."""
    a, b = spec.a.dtype, spec.b.dtype
    if a == b == F16:
        return "f16"
    if a == b == BF16:
        return "bf16"
    if a == b == F32 and spec.precision == "tf32":
        return "tf32"
    return None


# warpgroup-MMA tiles (sm_90a): (BM, BN, BK, pipeline stages); two warpgroups of 64 rows
WGMMA_TILES = ((128, 256, 64, 4), (128, 128, 64, 6))


def gemm_tiles(spec, sms=132, tensor_cores=True, wgmma=False):
    """The largest tile that still gives every SM a block (for wave quantisation a tile
    that leaves SMs idle loses to a smaller one) and is not mostly padding, else the
    largest that gives every SM a block, else the smallest. float16/bfloat16 products
    whose operands are plain loads contiguous along K or along M / N (16-byte aligned)
    go to warpgroup MMA where the device has it and a WGMMA tile fits."""
    kind = mma_kind(spec) if tensor_cores else None
    cands = SIMT_TILES if kind is None else MMA_TILES["tf32" if kind == "tf32" else "f16"]
    if kind is not None:
        e = 4 if kind == "tf32" else 8      # elements per 16-byte copy
        if not (_vec_ok(spec.a, 2, spec.K, e) and _vec_ok(spec.b, 2, spec.N, e)):
            # element-wise tile loads (fused producers, strided operands): more threads
            # per tile and fewer accumulators, or the loads' registers spill
            cands = ((128, 128, 2 * e, 2, 4, 3), (64, 64, 2 * e, 2, 2, 3))
    def fits(t, waste):
        nm, nn = -(-spec.M // t[0]), -(-spec.N // t[1])
        return nm * nn * spec.batch >= sms and nm * nn * t[0] * t[1] <= waste * spec.M * spec.N
    if wgmma and kind in ("f16", "bf16"):
        # each operand read 16 bytes at a time along K or along M / N
        ta = 0 if _vec_ok(spec.a, 2, spec.K, 8) else 1 if _vec_ok(spec.a, 1, spec.M, 8) else None
        tb = 1 if _vec_ok(spec.b, 2, spec.N, 8) else 0 if _vec_ok(spec.b, 1, spec.K, 8) else None
        t = next((t for t in WGMMA_TILES if fits(t, TILE_MAX_WASTE)), None)
        if t is not None and ta is not None and tb is not None:
            return dict(kind=kind, wgmma=True, BM=t[0], BN=t[1], BK=t[2], S=t[3], ta=ta, tb=tb)
    t = next((t for t in cands if fits(t, TILE_MAX_WASTE)), None) or \
        next((t for t in cands if fits(t, float("inf"))), cands[-1])
    if kind is None:
        return dict(kind="simt", BM=t[0], BN=t[1], BK=t[2], TM=t[3], TN=t[4])
    return dict(kind=kind, BM=t[0], BN=t[1], BK=t[2], WM=t[3], WN=t[4], S=t[5])


GEMM_ASM = r"""
__device__ inline unsigned pj_smem(const void* p) { unsigned a; asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p)); return a; }
__device__ inline void pj_cp16a(unsigned dst, const void* src, bool ok) { asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(ok ? 16 : 0)); }
__device__ inline void pj_cp16(void* dst, const void* src, bool ok) { pj_cp16a(pj_smem(dst), src, ok); }
__device__ inline void pj_cp_commit() { asm volatile("cp.async.commit_group;"); }
__device__ inline void pj_cp_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
__device__ inline void pj_cp_wait2() { asm volatile("cp.async.wait_group 2;" ::: "memory"); }
__device__ inline void pj_ldsm4(unsigned* r, const void* p) { asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(pj_smem(p))); }
__device__ inline void pj_ldsm4t(unsigned* r, const void* p) { asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(pj_smem(p))); }
__device__ inline void pj_ldsm4a(unsigned* r, unsigned a) { asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a)); }
__device__ inline void pj_ldsm4ta(unsigned* r, unsigned a) { asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a)); }
__device__ inline unsigned pj_tf32(float x) { unsigned r; asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x)); return r; }
__device__ inline void pj_mma_f16(float* c, const unsigned* a, const unsigned* b) { asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};" : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1])); }
__device__ inline void pj_mma_bf16(float* c, const unsigned* a, const unsigned* b) { asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};" : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1])); }
__device__ inline void pj_mma_tf32(float* c, const unsigned* a, const unsigned* b) { asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};" : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1])); }
"""


def _wgmma_helper(kind, n, ta, tb):
    """`pj_wgmma_{kind}_n{n}_{ta}{tb}(d, a, b)`: d[64 x n] += A[64 x 16] B[16 x n] for one
    warpgroup, both operands in shared memory (descriptors), float32 d; ta / tb: A is
    M-major / B is N-major (the instruction transposes them)."""
    regs = n // 2
    d = ", ".join(f"%{i}" for i in range(regs))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(regs))
    return (f"__device__ inline void pj_wgmma_{kind}_n{n}_{ta}{tb}(float* d, ullong a, ullong b) {{ "
            f'asm volatile("{{ .reg .pred p; setp.ne.b32 p, %{regs + 2}, 0; '
            f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{kind}.{kind} {{{d}}}, "
            f'%{regs}, %{regs + 1}, p, 1, 1, {ta}, {tb}; }}" : {outs} : "l"(a), "l"(b), "r"(1)); }}\n')


# Hopper's warpgroup MMA (sm_90a): operands read from 128-byte-swizzled shared memory
# through descriptors, issued asynchronously and waited for by group
WGMMA_ASM = r"""
__device__ inline void pj_fence_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ inline void pj_wg_arrive() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ inline void pj_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ inline void pj_wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
__device__ inline void pj_wg_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory"); }
__device__ inline void pj_reg_fence(float& r) { asm volatile("" : "+f"(r) :: "memory"); }
__device__ inline ullong pj_sw128_desc(unsigned addr, unsigned lbo, unsigned sbo) { return (ullong)((addr & 0x3FFFF) >> 4) | ((ullong)(lbo >> 4) << 16) | ((ullong)(sbo >> 4) << 32) | (1ULL << 62); }
""" + "".join(_wgmma_helper(k, n, ta, tb) for k in ("f16", "bf16") for n in (128, 256)
             for ta in (0, 1) for tb in (0, 1))
PRELUDE_PARTS = PRELUDE_PARTS + split_helpers(GEMM_ASM + WGMMA_ASM, "__device__ inline")


def _vec_ok(op, axis, extent, width):
    """Can `op` be read `width` elements at a time along `axis` (1 rows, 2 cols) with
    aligned vector loads? (plain load, unit stride there, every other stride and the
    offset and the extent multiples of width)"""
    if op.plain is None or not op.contiguous(axis):
        return False
    _, off, sb, s1, s2 = op.plain
    other = s2 if axis == 1 else s1
    return all(v % width == 0 for v in (off, sb, other, extent))


VEC = 4              # float32 elements per thread in elementwise kernels (one float4)
VEC_BLOCK = 256      # threads per block of those kernels


class CUDARenderer(CRenderer, GemmRendering):
    LANG = "CUDA"
    CTYPE, BUFTYPE = CTYPE, BUFTYPE
    INDEX_T = "llong"
    SUFFIX_I, SUFFIX_U = "LL", "ULL"
    helper_parts = PRELUDE_PARTS
    PRELUDE_BASE, PRELUDE_F64 = PRELUDE_BASE, PRELUDE_F64
    GEMM_INLINE = "__device__ __forceinline__"
    sms = 132      # the backend sets the device's multiprocessor count (tile choice)
    tensor_cores = True     # and whether mma.sync/cp.async/ldmatrix exist (sm_80+)
    wgmma = True            # and warpgroup MMA (sm_90a; CI compiles for it)

    # ------------------------------------------------------------ float4 elementwise
    def render(self, kernel, arg_dtypes):
        if not self.generic and kernel.gemm is None:
            src = self._render_vector(kernel, arg_dtypes)
            if src is not None:
                return src
        return super().render(kernel, arg_dtypes)

    def _render_vector(self, kernel, arg_dtypes):
        """An elementwise kernel whose stores are all float32 at the work item's own index,
        with each thread on VEC consecutive elements, or None. A thread's float32 operands at
        its index arrive as one 16-byte load each and its results leave as one 16-byte store:
        one 4-byte access per thread keeps too few bytes in flight to fill HBM (measured on
        an H200: 2.4 TB/s one float per thread, 4.1 TB/s as float4, memcpy 4.2). Other loads
        stay scalar, per element. Buffers start 256-byte aligned (cupy's pool), so the
        vector accesses at multiples of VEC elements are aligned."""
        n = kernel.global_size
        if kernel.ser or n < VEC * VEC_BLOCK:
            return None
        stmts, g = linearize(kernel)
        names = self.buffer_names(kernel)
        vec_in, stored = [], []
        for st in stmts:
            if st[0] == "store":
                if np.dtype(st[2]) != F32 or st[3] != g or st[1] in stored:
                    return None
                stored.append(st[1])
            elif st[0] != "def":
                return None
            elif st[2].op == "load" and st[3][0] == g and np.dtype(st[2].dtype) == F32:
                if st[2].arg not in vec_in:
                    vec_in.append(st[2].arg)
        lines = [f"  const llong {g}_v = ((llong)blockIdx.x * blockDim.x + threadIdx.x) * {VEC};",
                 f"  if ({g}_v >= n_work) return;",
                 f"  if ({g}_v + {VEC} <= n_work) {{"]
        lines += [f"    const float4 q{s} = *(const float4*)({names[s]} + {g}_v);" for s in vec_in]
        lines += [f"    float4 o{s};" for s in stored]
        for lane, c in enumerate("xyzw"):
            lines += ["    {", f"      const llong {g} = {g}_v + {lane};"]
            for st in stmts:
                if st[0] == "store":
                    lines.append(f"      o{st[1]}.{c} = {st[4]};")
                elif st[2].op == "load" and st[2].arg in vec_in and st[3][0] == g:
                    lines.append(f"      const float {st[1]} = q{st[2].arg}.{c};")
                else:
                    lines.append(f"      const {self.ctype(st[2].dtype)} {st[1]} = "
                                 f"{self.value(st[2], st[3], names)};")
            lines.append("    }")
        lines += [f"    *(float4*)({names[s]} + {g}_v) = o{s};" for s in stored]
        lines += ["    return;", "  }", f"  for (llong {g} = {g}_v; {g} < n_work; {g}++) {{"]
        self._stmts(stmts, lines, names, 2)       # the last n % VEC elements, one at a time
        threads = -(-n // VEC)
        note = f"/* pj_launch {kernel.name} {-(-threads // VEC_BLOCK)} 1 1 {VEC_BLOCK} 0 */"
        return "\n".join([note, self.signature(kernel, arg_dtypes)] + lines + ["  }", "}"])

    # ------------------------------------------------------------ GEMM
    def render_gemm(self, kernel, spec, params, names, arg_dtypes):
        t = gemm_tiles(spec, self.sms, self.tensor_cores, self.wgmma)
        kernel.tiles = t
        smem = 0       # dynamic shared memory bytes
        if t["kind"] == "simt":
            lines, grid, block = self._gemm_simt(kernel, spec, t, names)
        elif t.get("wgmma"):
            lines, grid, block, smem = self._gemm_wgmma(kernel, spec, t, names)
        else:
            lines, grid, block, smem = self._gemm_mma(kernel, spec, t, names)
        kernel.launch_geometry = (grid, block, smem)
        note = f"/* pj_launch {kernel.name} {grid[0]} {grid[1]} {grid[2]} {block} {smem} */"
        head = (f'{note}\nextern "C" __global__ void __launch_bounds__({block}) '
                f'{kernel.name}({", ".join(params)}) {{')
        return "\n".join([head] + lines + ["}"])

    @staticmethod
    def _block_origin(spec, BM, BN, group=8):
        """Lines setting bm, bn from a 1-D grid walked in groups of `group` tile rows, so
        blocks running together share A rows and B columns in L2; and the grid."""
        nm, nn = -(-spec.M // BM), -(-spec.N // BN)
        lines = [f"  const int pid = blockIdx.x, grp = pid / {group * nn};",
                 f"  const int gsz = min({nm} - grp * {group}, {group}), rem = pid % {group * nn};",
                 f"  const int bm = (grp * {group} + rem % gsz) * {BM}, bn = (rem / gsz) * {BN};"]
        return lines, (nm * nn, 1, spec.batch)

    def _operand_base(self, op, names):
        slot, off, sb, _, _ = op.plain
        return f"({names[slot]} + {off} + gb * {sb}LL)"

    def _gemm_simt(self, kernel, spec, t, names):
        BM, BN, BK, TM, TN = (t[k] for k in ("BM", "BN", "BK", "TM", "TN"))
        M, N, K = spec.M, spec.N, spec.K
        LX, LY = BN // TN, BM // TM
        NT = LX * LY
        KT = -(-K // BK)
        bufs = ", ".join(names[a.slot] for a in kernel.args)
        a, b = spec.a, spec.b
        f32a, f32b = a.dtype == F32, b.dtype == F32
        amode = ("kvec" if f32a and _vec_ok(a, 2, K, 4) else
                 "mvec" if f32a and _vec_ok(a, 1, M, 4) else "scalar")
        bmode = ("nvec" if f32b and _vec_ok(b, 2, N, 4) else
                 "kvec" if f32b and _vec_ok(b, 1, K, 4) else "scalar")
        L = [f"  __shared__ __align__(16) float As[2][{BK}][{BM}];",
             f"  __shared__ __align__(16) float Bs[2][{BK}][{BN}];",
             f"  const int tid = threadIdx.x, tx = tid % {LX}, ty = tid / {LX};",
             *self._block_origin(spec, BM, BN)[0],
             "  const llong gb = blockIdx.z;",
             f"  float c[{TM}][{TN}];",
             f"  #pragma unroll\n  for (int i = 0; i < {TM}; i++)\n  #pragma unroll\n"
             f"  for (int j = 0; j < {TN}; j++) c[i][j] = 0.0f;"]
        load, store = [], []      # global -> registers, registers -> shared (stage s)

        def plan(which, mode, rows, cols, rowext, colext):
            # `rows` x `cols` tile (A: BM x BK as m, k; B: BK x BN as k, n)
            vec = mode != "scalar"
            n = rows * cols // (4 if vec else 1)
            per = -(-n // NT)
            regt = "float4" if vec else "float"
            L.append(f"  {regt} r{which}[{per}];")
            op = a if which == "a" else b
            base = self._operand_base(op, names) if op.plain is not None else None
            for q in range(per):
                guard = f"if ({q * NT} + tid < {n}) " if (q + 1) * NT > n else ""
                cidx = f"({q * NT} + tid)"
                if which == "a":
                    if mode == "kvec":
                        r, cc = f"{cidx} / {BK // 4}", f"({cidx} % {BK // 4}) * 4"
                    elif mode == "mvec":
                        cc, r = f"{cidx} / {BM // 4}", f"({cidx} % {BM // 4}) * 4"
                    elif a.plain is None or a.contiguous(2):
                        r, cc = f"{cidx} / {BK}", f"{cidx} % {BK}"
                    else:
                        cc, r = f"{cidx} / {BM}", f"{cidx} % {BM}"
                    gi, gj = f"bm + {r}", f"k0 + {cc}"
                else:
                    if mode == "nvec":
                        r, cc = f"{cidx} / {BN // 4}", f"({cidx} % {BN // 4}) * 4"
                    elif mode == "kvec":
                        cc, r = f"{cidx} / {BK // 4}", f"({cidx} % {BK // 4}) * 4"
                    elif b.plain is None or b.contiguous(2):
                        r, cc = f"{cidx} / {BN}", f"{cidx} % {BN}"
                    else:
                        cc, r = f"{cidx} / {BK}", f"{cidx} % {BK}"
                    gi, gj = f"k0 + {r}", f"bn + {cc}"
                ext_i, ext_j = rowext, colext
                ok = f"({gi}) < {ext_i} && ({gj}) < {ext_j}"
                if vec:
                    _, _, _, s1, s2 = op.plain
                    src = f"*(const float4*)({base} + (llong)({gi}) * {s1} + (llong)({gj}) * {s2})"
                    load.append(f"    {guard}{{ r{which}[{q}] = ({ok}) ? {src} : make_float4(0.f, 0.f, 0.f, 0.f); }}")
                else:
                    call = self.gemm_call(kernel, which, f"gb, {gi}, {gj}", bufs)
                    load.append(f"    {guard}{{ r{which}[{q}] = ({ok}) ? {call} : 0.0f; }}")
                # shared layout: As[k][m], Bs[k][n]
                if which == "a":
                    kk, mm = cc, r
                    if mode == "kvec":
                        st = " ".join(f"As[s][{kk} + {e}][{mm}] = r{which}[{q}].{x};"
                                      for e, x in enumerate("xyzw"))
                    elif mode == "mvec":
                        st = f"*(float4*)&As[s][{kk}][{mm}] = r{which}[{q}];"
                    else:
                        st = f"As[s][{kk}][{mm}] = r{which}[{q}];"
                else:
                    kk, nn = r, cc
                    if mode == "nvec":
                        st = f"*(float4*)&Bs[s][{kk}][{nn}] = r{which}[{q}];"
                    elif mode == "kvec":
                        st = " ".join(f"Bs[s][{kk} + {e}][{nn}] = r{which}[{q}].{x};"
                                      for e, x in enumerate("xyzw"))
                    else:
                        st = f"Bs[s][{kk}][{nn}] = r{which}[{q}];"
                store.append(f"    {guard}{{ {st} }}")

        plan("a", amode, BM, BK, M, K)
        plan("b", bmode, BK, BN, K, N)
        rs_a, rs_b = BM * 4 // TM, BN * 4 // TN    # row span of each group of 4
        L += ["  int k0 = 0;"] + load + ["  { const int s = 0;"] + store + ["  }", "  __syncthreads();"]
        L.append(f"  for (int t = 0; t < {KT}; t++) {{")
        L.append("    const int s = t & 1;")
        L.append(f"    if (t + 1 < {KT}) {{ k0 = (t + 1) * {BK};")
        L += ["  " + x for x in load]
        L.append("    }")
        L.append(f"    #pragma unroll\n    for (int kk = 0; kk < {BK}; kk++) {{")
        L.append(f"      float av[{TM}], bw[{TN}];")
        for h in range(TM // 4):
            L.append(f"      {{ float4 v = *(const float4*)&As[s][kk][{h * rs_a} + ty * 4]; "
                     f"av[{4 * h}] = v.x; av[{4 * h + 1}] = v.y; av[{4 * h + 2}] = v.z; av[{4 * h + 3}] = v.w; }}")
        for h in range(TN // 4):
            L.append(f"      {{ float4 v = *(const float4*)&Bs[s][kk][{h * rs_b} + tx * 4]; "
                     f"bw[{4 * h}] = v.x; bw[{4 * h + 1}] = v.y; bw[{4 * h + 2}] = v.z; bw[{4 * h + 3}] = v.w; }}")
        L.append(f"      #pragma unroll\n      for (int i = 0; i < {TM}; i++)\n      #pragma unroll\n"
                 f"      for (int j = 0; j < {TN}; j++) c[i][j] = __fmaf_rn(av[i], bw[j], c[i][j]);")
        L.append("    }")
        L.append(f"    if (t + 1 < {KT}) {{ const int s = (t + 1) & 1;")
        L += ["  " + x for x in store]
        L.append("    }")
        L.append("    __syncthreads();")
        L.append("  }")
        L.append(f"  #pragma unroll\n  for (int i = 0; i < {TM}; i++)\n  #pragma unroll\n"
                 f"  for (int j = 0; j < {TN}; j++) {{")
        L.append(f"    const int m = bm + (i / 4) * {rs_a} + ty * 4 + (i % 4);")
        L.append(f"    const int n = bn + (j / 4) * {rs_b} + tx * 4 + (j % 4);")
        L.append(f"    if (m < {M} && n < {N}) pj_ge_{kernel.name}({bufs}, gb, m, n, c[i][j]);")
        L.append("  }")
        grid = self._block_origin(spec, BM, BN)[1]
        return L, grid, NT

    def _gemm_mma(self, kernel, spec, t, names):
        kind = t["kind"]
        BM, BN, BK, WM, WN, S = (t[k] for k in ("BM", "BN", "BK", "WM", "WN", "S"))
        M, N, K = spec.M, spec.N, spec.K
        NT = WM * WN * 32
        WTM, WTN = BM // WM, BN // WN
        MT, NTl = WTM // 16, WTN // 8
        KT = -(-K // BK)
        bufs = ", ".join(names[a.slot] for a in kernel.args)
        a, b = spec.a, spec.b
        tf = kind == "tf32"
        T = "float" if tf else "ushort"
        E = 4 if tf else 8                       # elements per 16-byte copy
        PA, PB = (4, 8) if tf else (8, 8)        # row padding: conflict-free fragment reads
        to_bits = {"f16": "pj_f16_bits", "bf16": "pj_bf16_bits", "tf32": ""}[kind]
        amode = "kvec" if _vec_ok(a, 2, K, E) else "scalar"
        bmode = "nvec" if _vec_ok(b, 2, N, E) else "scalar"
        esz = 4 if tf else 2
        a_bytes = S * BM * (BK + PA) * esz
        smem = a_bytes + S * BK * (BN + PB) * esz
        L = ["  extern __shared__ __align__(16) unsigned char pj_dyn[];",
             f"  {T} (*As)[{BM}][{BK + PA}] = reinterpret_cast<{T} (*)[{BM}][{BK + PA}]>(pj_dyn);",
             f"  {T} (*Bs)[{BK}][{BN + PB}] = reinterpret_cast<{T} (*)[{BK}][{BN + PB}]>(pj_dyn + {a_bytes});",
             "  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;",
             "  const int g = lane >> 2, tig = lane & 3;",
             f"  const int wm = (warp / {WN}) * {WTM}, wn = (warp % {WN}) * {WTN};",
             *self._block_origin(spec, BM, BN)[0],
             "  const llong gb = blockIdx.z;",
             f"  float c[{MT}][{NTl}][4];",
             f"  #pragma unroll\n  for (int i = 0; i < {MT}; i++)\n  #pragma unroll\n"
             f"  for (int j = 0; j < {NTl}; j++) {{ c[i][j][0] = c[i][j][1] = c[i][j][2] = c[i][j][3] = 0.0f; }}"]
        load = []

        def plan(which, mode, rows, cols, rowext, colext):
            op = a if which == "a" else b
            vec = mode != "scalar"
            n = rows * cols // (E if vec else 1)
            per = -(-n // NT)
            base = self._operand_base(op, names) if op.plain is not None else None
            sm = "As" if which == "a" else "Bs"
            for q in range(per):
                guard = f"if ({q * NT} + tid < {n}) " if (q + 1) * NT > n else ""
                cidx = f"({q * NT} + tid)"
                per_row = cols // (E if vec else 1)
                if vec or op.plain is None or op.contiguous(2):
                    r, cc = f"{cidx} / {per_row}", f"({cidx} % {per_row})" + (f" * {E}" if vec else "")
                else:
                    cc, r = f"{cidx} / {rows}", f"{cidx} % {rows}"
                if which == "a":
                    gi, gj = f"bm + {r}", f"k0 + {cc}"
                else:
                    gi, gj = f"k0 + {r}", f"bn + {cc}"
                ok = f"({gi}) < {rowext} && ({gj}) < {colext}"
                dst = f"&{sm}[s][{r}][{cc}]"
                if vec:
                    _, _, _, s1, s2 = op.plain
                    src = f"{base} + (llong)({gi}) * {s1} + (llong)({gj}) * {s2}"
                    load.append(f"    {guard}{{ const bool ok = {ok}; "
                                f"pj_cp16({dst}, ok ? (const void*)({src}) : (const void*){base}, ok); }}")
                else:
                    call = self.gemm_call(kernel, which, f"gb, {gi}, {gj}", bufs)
                    load.append(f"    {guard}{{ {sm}[s][{r}][{cc}] = ({ok}) ? {to_bits}({call}) : ({T})0; }}")

        plan("a", amode, BM, BK, M, K)
        plan("b", bmode, BK, BN, K, N)
        # S-stage pipeline: tiles t+1 .. t+S-1 are in flight while tile t is multiplied
        L.append("  int k0 = 0;")
        for st in range(S - 1):
            L.append(f"  if ({st} < {KT}) {{ k0 = {st * BK}; const int s = {st};")
            L += load
            L.append("  }")
            L.append("  pj_cp_commit();")
        if not tf:
            L.append("  const unsigned sbase = pj_smem(pj_dyn);")
            L.append(f"  unsigned aoff[{MT}], boff[{NTl // 2}];")
            L.append(f"  #pragma unroll\n  for (int i = 0; i < {MT}; i++) "
                     f"aoff[i] = ((wm + i * 16 + (lane & 15)) * {BK + PA} + (lane >> 4) * 8) * 2;")
            L.append(f"  #pragma unroll\n  for (int j = 0; j < {NTl // 2}; j++) "
                     f"boff[j] = ((lane & 15) * {BN + PB} + wn + j * 16 + (lane >> 4) * 8) * 2;")
        L.append(f"  for (int t = 0; t < {KT}; t++) {{")
        L.append(f"    pj_cp_wait{S - 2}();")
        L.append("    __syncthreads();")
        L.append(f"    if (t + {S - 1} < {KT}) {{ k0 = (t + {S - 1}) * {BK}; const int s = (t + {S - 1}) % {S};")
        L += ["  " + x for x in load]
        L.append("    }")
        L.append("    pj_cp_commit();")
        L.append(f"    const int s = t % {S};")
        # fragments double-buffered in registers: step ks+1's shared-memory reads are
        # issued before step ks's mma instructions, so their latency overlaps
        step = 8 if tf else 16
        KS = BK // step
        L.append(f"    unsigned af[2][{MT}][4], bf[2][{NTl}][2];")
        if not tf:
            L.append(f"    const unsigned sA = sbase + s * {BM * (BK + PA) * 2}, "
                     f"sB = sbase + {a_bytes} + s * {BK * (BN + PB) * 2};")

        def frag(p, ks):
            out = []
            if tf:
                k = ks * 8
                out.append(f"    #pragma unroll\n    for (int i = 0; i < {MT}; i++) {{ const int r = wm + i * 16 + g;")
                out.append(f"      af[{p}][i][0] = pj_tf32(As[s][r][{k} + tig]); af[{p}][i][1] = pj_tf32(As[s][r + 8][{k} + tig]);")
                out.append(f"      af[{p}][i][2] = pj_tf32(As[s][r][{k + 4} + tig]); af[{p}][i][3] = pj_tf32(As[s][r + 8][{k + 4} + tig]); }}")
                out.append(f"    #pragma unroll\n    for (int j = 0; j < {NTl}; j++) {{ const int cn = wn + j * 8 + g;")
                out.append(f"      bf[{p}][j][0] = pj_tf32(Bs[s][{k} + tig][cn]); bf[{p}][j][1] = pj_tf32(Bs[s][{k + 4} + tig][cn]); }}")
            else:
                out.append(f"    #pragma unroll\n    for (int i = 0; i < {MT}; i++) "
                           f"pj_ldsm4a(af[{p}][i], sA + aoff[i] + {ks * 32});")
                out.append(f"    #pragma unroll\n    for (int j = 0; j < {NTl // 2}; j++) {{ unsigned r4[4]; "
                           f"pj_ldsm4ta(r4, sB + boff[j] + {ks * 16 * (BN + PB) * 2}); "
                           f"bf[{p}][2 * j][0] = r4[0]; bf[{p}][2 * j][1] = r4[1]; "
                           f"bf[{p}][2 * j + 1][0] = r4[2]; bf[{p}][2 * j + 1][1] = r4[3]; }}")
            return out

        mma = "pj_mma_tf32" if tf else "pj_mma_bf16" if kind == "bf16" else "pj_mma_f16"
        L += frag(0, 0)
        for ks in range(KS):
            if ks + 1 < KS:
                L += frag((ks + 1) & 1, ks + 1)
            L.append(f"    #pragma unroll\n    for (int i = 0; i < {MT}; i++)\n    #pragma unroll\n"
                     f"    for (int j = 0; j < {NTl}; j++) {mma}(c[i][j], af[{ks & 1}][i], bf[{ks & 1}][j]);")
        L.append("  }")
        L.append(f"  #pragma unroll\n  for (int i = 0; i < {MT}; i++)\n  #pragma unroll\n"
                 f"  for (int j = 0; j < {NTl}; j++)\n  #pragma unroll\n  for (int r = 0; r < 4; r++) {{")
        L.append("    const int m = bm + wm + i * 16 + g + (r >> 1) * 8;")
        L.append("    const int n = bn + wn + j * 8 + tig * 2 + (r & 1);")
        L.append(f"    if (m < {M} && n < {N}) pj_ge_{kernel.name}({bufs}, gb, m, n, c[i][j][r]);")
        L.append("  }")
        grid = self._block_origin(spec, BM, BN)[1]
        return L, grid, NT, smem

    def _gemm_wgmma(self, kernel, spec, t, names):
        """Two warpgroups, 64 rows each, over a BM x BN tile. Tiles of A (BM x 64) and B
        (64 x BN) land by cp.async in 128-byte-swizzled shared memory, the layouts the
        descriptors name: an operand contiguous along K as rows of 64 K-elements (128
        bytes); one contiguous along M / N as blocks of 64 M / N-columns, each 64 K-rows of
        128 bytes (the instruction transposes it). S stages: tiles t+1 .. t+S-3 load
        while tiles t and t-1 are multiplied."""
        BM, BN, BK, S, ta, tb = (t[k] for k in ("BM", "BN", "BK", "S", "ta", "tb"))
        M, N, K = spec.M, spec.N, spec.K
        NT, D = BM // 64 * 128, S - 2            # threads; tiles loaded ahead
        KT = -(-K // BK)
        bufs = ", ".join(names[o.slot] for o in kernel.args)
        a_bytes, b_bytes = BM * BK * 2, BN * BK * 2
        stage = a_bytes + b_bytes
        smem = S * stage + 1024                  # + slack to align the base to 1024
        L = ["  extern __shared__ __align__(1024) unsigned char pj_dyn[];",
             "  const unsigned sbase = (pj_smem(pj_dyn) + 1023u) & ~1023u;",
             "  const int tid = threadIdx.x, wg = tid >> 7, w4 = (tid >> 5) & 3, lane = tid & 31;",
             *self._block_origin(spec, BM, BN)[0],
             "  const llong gb = blockIdx.z;",
             f"  float c[{BN // 2}];",
             f"  #pragma unroll\n  for (int i = 0; i < {BN // 2}; i++) c[i] = 0.0f;"]
        load = []
        for sm, op, ext, origin, mn_major in (("sA", spec.a, M, "bm", ta), ("sB", spec.b, N, "bn", tb)):
            base = self._operand_base(op, names)
            s_mn, s_k = (op.plain[3], op.plain[4]) if sm == "sA" else (op.plain[4], op.plain[3])
            R = BM if sm == "sA" else BN
            cpr = R // 8 if mn_major else 8       # 16-byte chunks per smem row
            for q in range(R * BK // 8 // NT):
                i = f"({q * NT} + tid)"
                r, cn = f"{i} / {cpr}", f"{i} % {cpr}"
                if mn_major:     # K row r, chunk cn: column block cn / 8, chunk cn % 8
                    dst = (f"{sm} + (({cn}) >> 3) * {BK * 128} + ({r}) * 128 + "
                           f"(((({cn}) & 7) ^ (({r}) & 7)) << 4)")
                    gk, gmn = f"k0 + {r}", f"{origin} + ({cn}) * 8"
                else:            # M / N row r, chunk cn of 8, swizzled by r % 8
                    dst = f"{sm} + ({r}) * 128 + ((({cn}) ^ (({r}) & 7)) << 4)"
                    gk, gmn = f"k0 + ({cn}) * 8", f"{origin} + {r}"
                load.append(f"    {{ const int gk = {gk}, gmn = {gmn}; const bool ok = gk < {K} && gmn < {ext}; "
                            f"pj_cp16a({dst}, ok ? (const void*)({base} + (llong)gk * {s_k} + (llong)gmn * {s_mn}) "
                            f": (const void*){base}, ok); }}")

        def fetch(tile):
            return [f"  if ({tile} < {KT}) {{ const int k0 = ({tile}) * {BK}; "
                    f"const unsigned sA = sbase + (({tile}) % {S}) * {stage}, sB = sA + {a_bytes};"] + load + ["  }"]

        def desc(sm, mn_major, kk):     # the operand's 16 K-elements kk of the stage
            if mn_major:
                return f"pj_sw128_desc({sm} + {kk * 16 * 128}, {BK * 128}, 1024)"
            return f"pj_sw128_desc({sm} + {kk * 32}, 16, 1024)"

        for st in range(D):
            L += fetch(str(st)) + ["  pj_cp_commit();"]
        mma = f"pj_wgmma_{t['kind']}_n{BN}_{ta}{tb}"
        wg_off = BK * 128 if ta else 64 * 128    # this warpgroup's 64 rows of A
        L += [f"  for (int t = 0; t < {KT}; t++) {{",
              f'    asm volatile("cp.async.wait_group {D - 1};" ::: "memory");',
              "    pj_fence_async();      // cp.async writes, visible to the async proxy",
              "    __syncthreads();       // every thread's; and tile t-2's MMAs are done",
              *["  " + x for x in fetch(f"t + {D}")],
              "    pj_cp_commit();",
              f"    const unsigned sA = sbase + (t % {S}) * {stage} + wg * {wg_off}, "
              f"sB = sbase + (t % {S}) * {stage} + {a_bytes};",
              "    pj_wg_arrive();"]
        L += [f"    {mma}(c, {desc('sA', ta, kk)}, {desc('sB', tb, kk)});" for kk in range(BK // 16)]
        L += ["    pj_wg_commit();", "    pj_wg_wait1();", "  }", "  pj_wg_wait0();",
              f"  #pragma unroll\n  for (int i = 0; i < {BN // 2}; i++) pj_reg_fence(c[i]);"]
        # fragment element i of this thread: its row and column in the tile
        row = "wg * 64 + w4 * 16 + (lane >> 2) + ((i >> 1) & 1) * 8"
        col = "(i >> 2) * 8 + (lane & 3) * 2 + (i & 1)"
        # through shared memory (the stages are free now), so that a warp's epilogue
        # reads and writes 32 consecutive columns of a row: the fragments themselves hold
        # 8 rows x 8 columns per warp and instruction (measured 0.62x -> 0.71x of cuBLAS)
        P = BN + 8                              # row pitch: 2-way bank conflicts at most
        assert BM * P * 4 <= S * stage
        L += ["  __syncthreads();",
              "  float* cs = reinterpret_cast<float*>(pj_dyn + (sbase - pj_smem(pj_dyn)));",
              f"  #pragma unroll\n  for (int i = 0; i < {BN // 2}; i += 2)",
              f"    *reinterpret_cast<float2*>(cs + ({row}) * {P} + {col}) = make_float2(c[i], c[i + 1]);",
              "  __syncthreads();",
              f"  for (int q = tid; q < {BM * BN}; q += {NT}) {{",
              f"    const int r = q / {BN}, j = q % {BN}, m = bm + r, n = bn + j;",
              f"    if (m < {M} && n < {N}) pj_ge_{kernel.name}({bufs}, gb, m, n, cs[r * {P} + j]);",
              "  }"]
        grid = self._block_origin(spec, BM, BN)[1]
        return L, grid, NT, smem

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
