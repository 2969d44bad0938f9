"""WGSL for kernel IR (run by wgpu-py: polyjit/backends/webgpu_backend.py).

The same kernel IR and statement list (linearize.py) as the C-family renderers; the
language-neutral parts of render_c.py (reduction identities, comparison operators, the
float unary op names WGSL shares with C) are inherited from `CRenderer`, and everything
WGSL spells differently is here. Each kernel is its own WGSL module (WGSL resource
bindings are module-scope, so kernels of one program cannot share a module); a
program's source is the modules one after another, each opened by a `// pj-kernel: NAME`
line that the backend splits on.

Types. WGSL has no 64-bit types: float64 and 64-bit integer buffers, constants out of
the 32-bit range and float64 arithmetic raise `DtypeUnsupported` naming the dtype and
the backend. Index arithmetic (int64 in the IR) is narrowed to i32; the backend refuses
buffers past the adapter's storage binding size, so every flat index fits.
  float32, int32, uint32       registers and buffers of their own WGSL type
  bool                         `bool` registers; storage as bytes (see below)
  int8/int16, uint8/uint16     i32/u32 registers, wrapped to their width after every op
  float16, bfloat16            f32 registers rounded back after every op (as the numpy
                               reference computes them), stored as 16-bit patterns; the
                               f32 <-> f16 conversions are exact integer code, so no
                               `shader-f16` is needed and results are the same on every
                               adapter
Storage of 1- and 2-byte dtypes keeps numpy's layout (so uploads, downloads and byte
copies need no conversion) inside `array<u32>` words: loads shift and mask; stores go
through `atomicAnd`/`atomicOr` on the word, since neighbouring work items own the other
bytes of it.

Float semantics. WGSL lets implementations assume no NaN or infinity, so NaN tests are
bit tests, and the literals are bit casts. Functions WGSL lacks (log1p, expm1, cbrt, erf,
erfc, lgamma, digamma, erf_inv, nextafter, isnan, isfinite) are helpers below, included
only in modules that call them. So are exp, exp2, log, the hyperbolic and inverse
trigonometric functions: drivers' own are loose (lavapipe's asin is off by 4e-4, its exp
by 16 ulp), and these (musl's float algorithms) stay within ~2 ulp everywhere. The
threefry2x32 PRNG is unrolled integer code giving the numpy backend's bits exactly.

Matrix products the lowering marks as GEMMs (`kernel.gemm`) get a tiled kernel (64x64
output tiles in workgroup memory, 4x4 per thread) with the operands and the fused
epilogue rendered from the kernel IR; it sets its own work-group count, which the module
states on a `// pj-groups: N` line.
"""
from __future__ import annotations

import math

import numpy as np

from . import ir
from .linearize import Linearizer, _Block, linearize
from .render_c import (BF16, CMP, F16, UNARY_FLOAT, CRenderer, RenderError, is_float, split_helpers,
                       trig_source)

__all__ = ["WGSLRenderer", "DtypeUnsupported", "RenderError", "WORKGROUP", "KERNEL_MARK",
           "split_program", "UNSUPPORTED_DTYPES"]

WORKGROUP = 64
KERNEL_MARK = "// pj-kernel: "
GROUPS_MARK = "// pj-groups: "     # a kernel that sets its own work-group count (GEMM tiles)
GEMM_TILE, GEMM_TK, GEMM_T = 64, 16, 16   # 64x64 output tile, k step 16, 16x16 threads
UNSUPPORTED_DTYPES = frozenset(np.dtype(t) for t in (np.float64, np.int64, np.uint64))


class DtypeUnsupported(RenderError, TypeError):
    """A dtype WGSL cannot hold (float64, 64-bit integers)."""


def unsupported_message(dt, what="a value", backend="webgpu"):
    dt = np.dtype(dt)
    alt = "float32" if dt.kind == "f" else ("int32" if dt.kind == "i" else "uint32")
    return (f"the {backend} backend cannot hold {what} of dtype {dt.name}: WGSL has no "
            f"64-bit types; use {alt} (x.astype(pnp.{alt})), or the numpy backend")


# register types
WTYPE = {np.dtype(k): v for k, v in {
    np.bool_: "bool", np.int8: "i32", np.int16: "i32", np.int32: "i32", np.int64: "i32",
    np.uint8: "u32", np.uint16: "u32", np.uint32: "u32", np.float32: "f32"}.items()}
WTYPE[F16] = WTYPE[BF16] = "f32"
# element types of storage arrays; 1- and 2-byte dtypes are packed into u32 words
STORE_T = {np.dtype(np.float32): "f32", np.dtype(np.int32): "i32", np.dtype(np.uint32): "u32"}

_ROT = ((13, 15, 26, 6), (17, 29, 16, 24))     # threefry2x32 rotations (Salmon et al.)


def _zeta(k, n=2000):
    """Riemann zeta(k), k >= 2, to double precision (direct sum + Euler-Maclaurin tail)."""
    return (sum(m ** -k for m in range(1, n)) + n ** (1 - k) / (k - 1) + 0.5 * n ** -k
            + k * n ** (-k - 1) / 12.0)


def _lgamma_1p_helper(terms=24):
    """lgamma(1 + z) for |z| <= 0.5 as its Taylor series -euler*z + sum (-1)^k zeta(k)/k z^k:
    relatively accurate through the roots at z = 0 (and, with log1p, at z = 1)."""
    cs = [-0.5772156649015329] + [(-1) ** k * _zeta(k) / k for k in range(2, terms + 2)]
    horner = f"{cs[-1]!r}"
    for c in reversed(cs[:-1]):
        horner = f"{c!r} + z * ({horner})"
    return f"fn pj_lgamma_1p(z: f32) -> f32 {{\n  return z * ({horner});\n}}\n"


def _trig_helpers():
    r, sin_poly, cos_poly = trig_source()
    return (f"fn pj_trig_r(x: f32, q: f32) -> f32 {{ return {r}; }}\n"
            f"fn pj_sin_poly(r: f32) -> f32 {{ let z = r * r; return {sin_poly}; }}\n"
            f"fn pj_cos_poly(r: f32) -> f32 {{ let z = r * r; return {cos_poly}; }}\n")


def _threefry_helper():
    lines = ["fn pj_threefry(k0: u32, k1: u32, c0: u32, c1: u32, which: i32) -> u32 {",
             "  let ks2 = k0 ^ k1 ^ 0x1BD11BDAu;",
             "  var x0 = c0 + k0; var x1 = c1 + k1;"]
    ks = ("k0", "k1", "ks2")
    for r in range(5):
        for rot in _ROT[r % 2]:
            lines.append(f"  x0 += x1; x1 = (x1 << {rot}u) | (x1 >> {32 - rot}u); x1 ^= x0;")
        lines.append(f"  x0 += {ks[(r + 1) % 3]}; x1 += {ks[(r + 2) % 3]} + {r + 1}u;")
    lines += ["  return select(x0, x1, which != 0);", "}"]
    return "\n".join(lines) + "\n"


HELPERS = r"""
fn pj_rt_i32(x: i32) -> i32 { return x; }
fn pj_rt_u32(x: u32) -> u32 { return x; }
fn pj_rt_f32(x: f32) -> f32 { return x; }
fn pj_rt_bool(x: bool) -> bool { return x; }
fn pj_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn pj_isfinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }
fn pj_f16_bits(x: f32) -> u32 {
  let u = bitcast<u32>(x); let s = (u >> 16u) & 0x8000u; let a = u & 0x7fffffffu;
  if (a > 0x7f800000u) { return s | 0x7e00u | ((a >> 13u) & 0x3ffu); }
  if (a >= 0x477ff000u) { return s | 0x7c00u; }
  if (a >= 0x38800000u) { return s | ((a + 0xfffu + ((a >> 13u) & 1u) - 0x38000000u) >> 13u); }
  return s | u32(round(bitcast<f32>(a) * 16777216.0));
}
fn pj_f16_from_bits(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u; let e = (h >> 10u) & 0x1fu; let m = h & 0x3ffu;
  if (e == 0u) { return bitcast<f32>(s | bitcast<u32>(f32(m) * 5.9604644775390625e-8)); }
  if (e == 31u) { return bitcast<f32>(s | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}
fn pj_rnd_f16(x: f32) -> f32 { return pj_f16_from_bits(pj_f16_bits(x)); }
fn pj_rnd_bf16(x: f32) -> f32 {
  var u = bitcast<u32>(x);
  if (pj_isnan(x)) { return bitcast<f32>((u | 0x00400000u) & 0xffff0000u); }
  u += 0x7fffu + ((u >> 16u) & 1u); return bitcast<f32>(u & 0xffff0000u);
}
fn pj_bf16_bits(x: f32) -> u32 { return bitcast<u32>(pj_rnd_bf16(x)) >> 16u; }
fn pj_ipow(x0: i32, y0: i32) -> i32 {
  var r = 1i; var x = x0; var y = y0; if (y < 0) { return 0i; }
  loop { if (y == 0) { break; } if ((y & 1) != 0) { r *= x; } y >>= 1u; x *= x; } return r;
}
fn pj_upow(x0: u32, y0: u32) -> u32 {
  var r = 1u; var x = x0; var y = y0;
  loop { if (y == 0u) { break; } if ((y & 1u) != 0u) { r *= x; } y >>= 1u; x *= x; } return r;
}
fn pj_pow(x: f32, y: f32) -> f32 {
  if (y == 0.0 || x == 1.0) { return 1.0; }
  if (pj_isnan(x) || pj_isnan(y)) { return bitcast<f32>(0x7fc00000u); }
  let ay = abs(y); let yint = ay == floor(ay);
  let odd = yint && ay < 16777216.0 && ay - 2.0 * floor(0.5 * ay) == 1.0;
  if (x < 0.0 && !yint) { return bitcast<f32>(0x7fc00000u); }
  if (abs(x) == 1.0 && !pj_isfinite(y)) { return 1.0; }
  var r: f32;
  if (x == 0.0) { r = select(0.0, bitcast<f32>(0x7f800000u), y < 0.0); }
  else { r = pj_exp2(y * pj_log2(abs(x))); }
  return select(r, -r, odd && (x < 0.0 || (x == 0.0 && bitcast<u32>(x) != 0u)));
}
fn pj_fmax(x: f32, y: f32) -> f32 { return select(y, x, x > y || pj_isnan(x)); }
fn pj_fmin(x: f32, y: f32) -> f32 { return select(y, x, x < y || pj_isnan(x)); }
// from the bits: drivers that flush subnormals in comparisons (NVIDIA) see 2.5e-40 > 0 false
fn pj_sign(x: f32) -> f32 {
  let u = bitcast<u32>(x); let a = u & 0x7fffffffu;
  if (a == 0u || a > 0x7f800000u) { return x; }
  return bitcast<f32>((u & 0x80000000u) | 0x3f800000u);
}
// signed division and remainder on magnitudes: some drivers (NVIDIA Vulkan) get i32 `%`
// of negative operands wrong. Truncating like C/XLA, 0 for a zero divisor, wrapping at INT_MIN.
fn pj_div_i32(x: i32, y: i32) -> i32 {
  if (y == 0i) { return 0i; }
  let q = select(u32(x), 0u - u32(x), x < 0i) / select(u32(y), 0u - u32(y), y < 0i);
  return select(i32(q), i32(0u - q), (x < 0i) != (y < 0i));
}
fn pj_rem_i32(x: i32, y: i32) -> i32 {
  if (y == 0i) { return 0i; }
  let r = select(u32(x), 0u - u32(x), x < 0i) % select(u32(y), 0u - u32(y), y < 0i);
  return select(i32(r), i32(0u - r), x < 0i);
}
// sin, cos, tan reduced as render_c.trig_source says (pj_trig_r, pj_sin_poly, pj_cos_poly,
// below the string): builtin trig is a fast approximation on some GPUs (NVIDIA: ~1e-6 absolute)
fn pj_trig_q(x: f32) -> f32 { return round(x * 0.63661977236758134); }
fn pj_sincos_q(x: f32, shift: i32) -> f32 {
  if (!pj_isfinite(x)) { return bitcast<f32>(0x7fc00000u); }
  if (abs(x) > 1e5) { return select(sin(x), cos(x), shift == 1); }   // past exact q * pi/2
  let q = pj_trig_q(x); let r = pj_trig_r(x, q); let k = (i32(q) + shift) & 3;
  let v = select(pj_sin_poly(r), pj_cos_poly(r), (k & 1) == 1);
  return select(v, -v, k >= 2);
}
fn pj_sin(x: f32) -> f32 { if (abs(x) < 1e-4) { return x; } return pj_sincos_q(x, 0); }
fn pj_cos(x: f32) -> f32 { return pj_sincos_q(x, 1); }
fn pj_tan(x: f32) -> f32 {
  if (!pj_isfinite(x)) { return bitcast<f32>(0x7fc00000u); }
  if (abs(x) < 1e-4) { return x; }
  if (abs(x) > 1e5) { return tan(x); }
  let q = pj_trig_q(x); let r = pj_trig_r(x, q); let z = r * r;
  let t = (((((9.38540185543e-3 * z + 3.11992232697e-3) * z + 2.44301354525e-2) * z
            + 5.34112807005e-2) * z + 1.33387994085e-1) * z + 3.33331568548e-1) * z * r + r;
  return select(t, -1.0 / t, (i32(q) & 1) == 1);
}
fn pj_fmod(x: f32, y: f32) -> f32 {
  var ux = bitcast<u32>(x); var uy = bitcast<u32>(y);
  var ex = i32((ux >> 23u) & 0xffu); var ey = i32((uy >> 23u) & 0xffu);
  let sx = ux & 0x80000000u;
  if ((uy << 1u) == 0u || pj_isnan(y) || ex == 0xff) { return bitcast<f32>(0x7fc00000u); }
  if ((ux << 1u) <= (uy << 1u)) { if ((ux << 1u) == (uy << 1u)) { return bitcast<f32>(sx); } return x; }
  if (ex == 0) { var i = ux << 9u; loop { if ((i >> 31u) != 0u) { break; } ex -= 1; i <<= 1u; }
    ux <<= u32(-ex + 1); } else { ux = (ux & 0x007fffffu) | 0x00800000u; }
  if (ey == 0) { var i = uy << 9u; loop { if ((i >> 31u) != 0u) { break; } ey -= 1; i <<= 1u; }
    uy <<= u32(-ey + 1); } else { uy = (uy & 0x007fffffu) | 0x00800000u; }
  loop { if (ex <= ey) { break; }
    let i = ux - uy; if ((i >> 31u) == 0u) { if (i == 0u) { return bitcast<f32>(sx); } ux = i; }
    ux <<= 1u; ex -= 1; }
  let i = ux - uy; if ((i >> 31u) == 0u) { if (i == 0u) { return bitcast<f32>(sx); } ux = i; }
  loop { if ((ux >> 23u) != 0u) { break; } ux <<= 1u; ex -= 1; }
  if (ex > 0) { ux = (ux - 0x00800000u) | (u32(ex) << 23u); } else { ux >>= u32(-ex + 1); }
  return bitcast<f32>(ux | sx);
}
fn pj_scale(y: f32, k: i32) -> f32 {
  if (k > 127) { return y * 1.7014118346046923e38 * bitcast<f32>(u32(k - 127 + 127) << 23u); }
  if (k < -126) { return y * 1.1754943508222875e-38 * bitcast<f32>(u32(max(k + 126 + 127, 1)) << 23u); }
  return y * bitcast<f32>(u32(k + 127) << 23u);
}
fn pj_exp_red(r: f32, lo: f32, hi: f32) -> f32 {
  let rr = r * r;
  let c = r - rr * (0.16666625440 + rr * -0.0027667332906);
  return 1.0 + (r * c / (2.0 - c) - lo + hi);
}
fn pj_exp(x: f32) -> f32 {
  if (pj_isnan(x)) { return x; }
  if (x > 88.72283935546875) { return bitcast<f32>(0x7f800000u); }
  if (x < -103.972084045410) { return 0.0; }
  let k = round(x * 1.4426950408889634);
  let hi = x - k * 0.693145751953125; let lo = k * 1.428606765330187e-06;
  return pj_scale(pj_exp_red(hi - lo, lo, hi), i32(k));
}
fn pj_exp2(x: f32) -> f32 {
  if (pj_isnan(x)) { return x; }
  if (x >= 128.0) { return bitcast<f32>(0x7f800000u); }
  if (x < -150.0) { return 0.0; }
  let k = round(x); let r = (x - k) * 0.6931471805599453;
  return pj_scale(pj_exp_red(r, 0.0, r), i32(k));
}
fn pj_log_red(x0: f32) -> vec2<f32> {
  var x = x0; var k = 0.0;
  if (x < 1.17549435e-38) { x = x * 33554432.0; k = -25.0; }
  var ix = bitcast<u32>(x) + (0x3f800000u - 0x3f3504f3u);
  k += f32(i32(ix >> 23u) - 127);
  ix = (ix & 0x007fffffu) + 0x3f3504f3u;
  let f = bitcast<f32>(ix) - 1.0;
  let s = f / (2.0 + f); let z = s * s; let w = z * z;
  let t1 = w * (0.40000972152 + w * 0.24279078841);
  let t2 = z * (0.66666662693 + w * 0.28498786688);
  let hfsq = 0.5 * f * f;
  return vec2<f32>(k, s * (hfsq + t2 + t1) - hfsq + f);
}
fn pj_log(x: f32) -> f32 {
  if (pj_isnan(x) || x < 0.0) { return bitcast<f32>(0x7fc00000u); }
  if (x == 0.0) { return bitcast<f32>(0xff800000u); }
  if (!pj_isfinite(x)) { return x; }
  let r = pj_log_red(x);
  return r.y + r.x * 9.0580006145e-06 + r.x * 0.69313812256;
}
fn pj_log2(x: f32) -> f32 {
  if (pj_isnan(x) || x < 0.0) { return bitcast<f32>(0x7fc00000u); }
  if (x == 0.0) { return bitcast<f32>(0xff800000u); }
  if (!pj_isfinite(x)) { return x; }
  let r = pj_log_red(x);
  return r.y * 1.4426950408889634 + r.x;
}
fn pj_opaque(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) ^ u32(pj_n.w)); }
fn pj_log1p(x: f32) -> f32 {
  if (pj_isnan(x) || x < -1.0) { return bitcast<f32>(0x7fc00000u); }
  if (x == -1.0) { return bitcast<f32>(0xff800000u); }
  if (!pj_isfinite(x)) { return x; }
  if (abs(x) < 5.9604645e-08) { return x; }
  var f = x; var c = 0.0; var k = 0.0;
  if (x < -0.2929 || x > 0.41421) {
    let u = pj_opaque(1.0 + x);     // opaque: keeps x - (u - 1) from being folded to 0
    var iu = bitcast<u32>(u) + (0x3f800000u - 0x3f3504f3u);
    let ki = i32(iu >> 23u) - 127;
    if (ki < 25) { c = select(x - (u - 1.0), 1.0 - (u - x), ki >= 2); c = c / u; }
    iu = (iu & 0x007fffffu) + 0x3f3504f3u;
    f = bitcast<f32>(iu) - 1.0; k = f32(ki);
  }
  let s = f / (2.0 + f); let z = s * s; let w = z * z;
  let t1 = w * (0.40000972152 + w * 0.24279078841);
  let t2 = z * (0.66666662693 + w * 0.28498786688);
  let hfsq = 0.5 * f * f;
  return s * (hfsq + t2 + t1) + (k * 9.0580006145e-06 + c) - hfsq + f + k * 0.69313812256;
}
fn pj_expm1(x: f32) -> f32 {
  if (abs(x) < 1e-5) { return x + 0.5 * x * x; }
  if (x > 88.0) { return pj_exp(x); }
  let u = pj_exp(x);
  if (u == 1.0) { return x; }
  let um1 = u - 1.0;
  if (um1 == -1.0) { return -1.0; }
  return um1 * (x / pj_log(u));
}
fn pj_tanh(x: f32) -> f32 {
  if (pj_isnan(x)) { return x; }
  let a = abs(x); var t: f32;
  if (a > 0.5493061) { if (a > 10.0) { t = 1.0; } else { t = 1.0 - 2.0 / (pj_expm1(2.0 * a) + 2.0); } }
  else if (a > 0.2554128) { let e = pj_expm1(2.0 * a); t = e / (e + 2.0); }
  else { let e = pj_expm1(-2.0 * a); t = -e / (e + 2.0); }
  return select(t, -t, x < 0.0);
}
fn pj_sinh(x: f32) -> f32 {
  let a = abs(x); var t: f32;
  if (a < 1.0) { let e = pj_expm1(a); t = 0.5 * (2.0 * e - e * e / (e + 1.0)); }
  else if (a < 88.0) { let e = pj_exp(a); t = 0.5 * e - 0.5 / e; }
  else { let e = pj_exp(0.5 * a); t = (0.5 * e) * e; }
  return select(t, -t, x < 0.0);
}
fn pj_cosh(x: f32) -> f32 {
  let a = abs(x);
  if (a < 88.0) { let e = pj_exp(a); return 0.5 * e + 0.5 / e; }
  let e = pj_exp(0.5 * a); return (0.5 * e) * e;
}
fn pj_asinh(x: f32) -> f32 {
  let a = abs(x); var t: f32;
  if (a > 4096.0) { t = pj_log(a) + 0.6931471805599453; }
  else if (a > 2.0) { t = pj_log(2.0 * a + 1.0 / (sqrt(a * a + 1.0) + a)); }
  else { t = pj_log1p(a + a * a / (1.0 + sqrt(1.0 + a * a))); }
  return select(t, -t, x < 0.0);
}
fn pj_acosh(x: f32) -> f32 {
  if (x < 1.0 || pj_isnan(x)) { return bitcast<f32>(0x7fc00000u); }
  if (x > 4096.0) { return pj_log(x) + 0.6931471805599453; }
  if (x > 2.0) { return pj_log(2.0 * x - 1.0 / (x + sqrt(x * x - 1.0))); }
  let t = x - 1.0; return pj_log1p(t + sqrt(2.0 * t + t * t));
}
fn pj_atanh(x: f32) -> f32 {
  let a = abs(x); var t: f32;
  if (a < 0.5) { t = 0.5 * pj_log1p(2.0 * a + 2.0 * a * a / (1.0 - a)); }
  else { t = 0.5 * pj_log1p(2.0 * a / (1.0 - a)); }
  return select(t, -t, x < 0.0);
}
fn pj_atan(x0: f32) -> f32 {
  let ix = bitcast<u32>(x0) & 0x7fffffffu;
  if (pj_isnan(x0)) { return x0; }
  if (ix >= 0x4c800000u) { return select(1.5707963267948966, -1.5707963267948966, x0 < 0.0); }
  if (ix < 0x39800000u) { return x0; }
  var x = x0; var id = -1; var hi = 0.0; var lo = 0.0;
  if (ix >= 0x3ee00000u) {
    x = abs(x0);
    if (ix < 0x3f300000u) { id = 0; hi = 4.6364760399e-01; lo = 5.0121582440e-09; x = (2.0 * x - 1.0) / (2.0 + x); }
    else if (ix < 0x3f980000u) { id = 1; hi = 7.8539812565e-01; lo = 3.7748947079e-08; x = (x - 1.0) / (x + 1.0); }
    else if (ix < 0x401c0000u) { id = 2; hi = 9.8279368877e-01; lo = 3.4473217170e-08; x = (x - 1.5) / (1.0 + 1.5 * x); }
    else { id = 3; hi = 1.5707962513e+00; lo = 7.5497894159e-08; x = -1.0 / x; }
  }
  let z = x * x; let w = z * z;
  let s1 = z * (3.3333328366e-01 + w * (1.4253635705e-01 + w * 6.1687607318e-02));
  let s2 = w * (-1.9999158382e-01 + w * -1.0648017377e-01);
  if (id < 0) { return x - x * (s1 + s2); }
  let r = hi - ((x * (s1 + s2) - lo) - x);
  return select(r, -r, x0 < 0.0);
}
fn pj_atan2(y: f32, x: f32) -> f32 {
  if (pj_isnan(x) || pj_isnan(y)) { return bitcast<f32>(0x7fc00000u); }
  let ax = abs(x); let ay = abs(y);
  let xneg = (bitcast<u32>(x) >> 31u) != 0u;
  var a: f32;
  if (ay == 0.0) { a = 0.0; }
  else if (!pj_isfinite(ax) && !pj_isfinite(ay)) { a = 0.7853981633974483; }
  else if (ay <= ax) { a = pj_atan(ay / ax); }
  else { a = (1.5707963705062866 - pj_atan(ax / ay)) - 4.371139000186243e-08; }
  if (xneg) { a = (3.1415927410125732 - a) - 8.742278000372485e-08; }
  return select(a, -a, (bitcast<u32>(y) >> 31u) != 0u);
}
fn pj_asin(x: f32) -> f32 {
  if (abs(x) > 1.0) { return bitcast<f32>(0x7fc00000u); }
  return pj_atan2(x, sqrt((1.0 - x) * (1.0 + x)));
}
fn pj_acos(x: f32) -> f32 {
  if (abs(x) > 1.0) { return bitcast<f32>(0x7fc00000u); }
  return pj_atan2(sqrt((1.0 - x) * (1.0 + x)), x);
}
fn pj_cbrt(x: f32) -> f32 {
  if (!pj_isfinite(x) || x == 0.0) { return x; }
  let a = abs(x); var y = pj_exp2(pj_log2(a) / 3.0);
  y = y - (y * y * y - a) / (3.0 * y * y);
  return select(y, -y, x < 0.0);
}
fn pj_nextafter(x: f32, y: f32) -> f32 {
  if (pj_isnan(x) || pj_isnan(y)) { return bitcast<f32>(0x7fc00000u); }
  if (x == y) { return y; }
  if (x == 0.0) { return select(bitcast<f32>(1u), bitcast<f32>(0x80000001u), y < 0.0); }
  let u = bitcast<u32>(x);
  return bitcast<f32>(select(u - 1u, u + 1u, (y > x) == (x > 0.0)));
}
fn pj_erfc_pos(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  return t * pj_exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
    t * (-0.82215223 + t * 0.17087277)))))))));
}
fn pj_erf(x: f32) -> f32 {
  if (pj_isnan(x)) { return x; }
  let a = abs(x);
  if (a < 0.5) { let z = x * x;
    return x * 1.1283791670955126 * (1.0 + z * (-0.3333333333 + z * (0.1 + z * (-0.0238095238 +
      z * (0.0046296296 + z * (-0.0007575758 + z * 0.0001068376)))))); }
  let r = 1.0 - pj_erfc_pos(a);
  return select(r, -r, x < 0.0);
}
fn pj_erfc(x: f32) -> f32 {
  if (pj_isnan(x)) { return x; }
  if (abs(x) < 0.5) { return 1.0 - pj_erf(x); }
  let r = pj_erfc_pos(abs(x));
  return select(r, 2.0 - r, x < 0.0);
}
fn pj_lgamma_pos(x: f32) -> f32 {
  if (x < 0.5) { return pj_lgamma_1p(x) - pj_log(x); }
  if (x < 1.5) { return pj_lgamma_1p(x - 1.0); }
  if (x < 2.5) { return pj_log1p(x - 2.0) + pj_lgamma_1p(x - 2.0); }
  if (x < 7.0) {     // down to [1.5, 2.5): one log of a short product
    var z = x; var p = 1.0;
    loop { if (z < 2.5) { break; } z -= 1.0; p *= z; }
    return pj_log(p) + pj_log1p(z - 2.0) + pj_lgamma_1p(z - 2.0);
  }
  let iz = 1.0 / x; let iz2 = iz * iz;
  return (x - 0.5) * (pj_log(x) - 1.0) - 0.5 + 0.91893853320467274 + iz * (0.0833333333333 -
    iz2 * (0.00277777777778 - iz2 * (0.000793650793651 - iz2 * 0.000595238095238)));
}
fn pj_lgamma(x: f32) -> f32 {
  if (pj_isnan(x)) { return x; }
  if (!pj_isfinite(x)) { return bitcast<f32>(0x7f800000u); }
  if (x <= 0.0 && x == floor(x)) { return bitcast<f32>(0x7f800000u); }
  if (x >= 0.5) { return pj_lgamma_pos(x); }
  if (x > 0.0) { return pj_lgamma_1p(x) - pj_log(x); }
  let r = x - round(x);        // exact: sin(pi x) = +-sin(pi r), without losing r
  return pj_log(3.14159265358979 / abs(sin(3.14159265358979 * r))) - pj_lgamma_pos(1.0 - x);
}
fn pj_digamma(x: f32) -> f32 {
  if (x <= 0.0 && x == floor(x)) { return bitcast<f32>(0x7fc00000u); }
  let reflect = x < 0.5; var xr = select(x, 1.0 - x, reflect); var acc = 0.0;
  loop { if (xr >= 6.0) { break; } acc -= 1.0 / xr; xr += 1.0; }
  let inv2 = 1.0 / (xr * xr);
  let s = pj_log(xr) - 0.5 / xr - inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0
          - inv2 * (1.0 / 240.0 - inv2 / 132.0))));
  let r = acc + s;
  let pr = 3.14159265358979 * (x - round(x));     // exact reduction: cot has period pi
  return select(r, r - 3.14159265358979 * cos(pr) / sin(pr), reflect);
}
fn pj_erf_inv(y: f32) -> f32 {
  if (pj_isnan(y) || abs(y) > 1.0) { return bitcast<f32>(0x7fc00000u); }
  if (y == 1.0) { return bitcast<f32>(0x7f800000u); }
  if (y == -1.0) { return bitcast<f32>(0xff800000u); }
  let w = -pj_log((1.0 - y) * (1.0 + y)); var p: f32;
  if (w < 5.0) { let ws = w - 2.5; p = 2.81022636e-08;
    p = 3.43273939e-07 + p * ws; p = -3.5233877e-06 + p * ws; p = -4.39150654e-06 + p * ws;
    p = 0.00021858087 + p * ws; p = -0.00125372503 + p * ws; p = -0.00417768164 + p * ws;
    p = 0.246640727 + p * ws; p = 1.50140941 + p * ws;
  } else { let wl = sqrt(w) - 3.0; p = -0.000200214257;
    p = 0.000100950558 + p * wl; p = 0.00134934322 + p * wl; p = -0.00367342844 + p * wl;
    p = 0.00573950773 + p * wl; p = -0.0076224613 + p * wl; p = 0.00943887047 + p * wl;
    p = 1.00167406 + p * wl; p = 2.83297682 + p * wl; }
  return p * y;
}
""" + _threefry_helper()
HELPERS += _lgamma_1p_helper() + _trig_helpers()
HELPER_PARTS = split_helpers(HELPERS, "fn ")


def _wrap_int(dt, s):
    """An i32/u32 register value wrapped to a narrower integer dtype (numpy's modular
    arithmetic)."""
    dt = np.dtype(dt)
    if dt.kind not in "iu" or dt.itemsize >= 4:
        return s
    bits = dt.itemsize * 8
    if dt.kind == "u":
        return f"(({s}) & {hex((1 << bits) - 1)}u)"
    return f"((({s}) << {32 - bits}u) >> {32 - bits}u)"


def _rounded(dt, s):
    dt = np.dtype(dt)
    if dt == F16:
        return f"pj_rnd_f16({s})"
    if dt == BF16:
        return f"pj_rnd_bf16({s})"
    return _wrap_int(dt, s)


WGSL_UNARY = dict(UNARY_FLOAT)
WGSL_UNARY.update({"round": "round", "log1p": "pj_log1p", "expm1": "pj_expm1", "cbrt": "pj_cbrt",
                   "exp": "pj_exp", "exp2": "pj_exp2", "log": "pj_log", "sinh": "pj_sinh",
                   "cosh": "pj_cosh", "asinh": "pj_asinh", "acosh": "pj_acosh", "atanh": "pj_atanh",
                   "atan": "pj_atan", "asin": "pj_asin", "acos": "pj_acos",
                   "erf": "pj_erf", "erfc": "pj_erfc", "tanh": "pj_tanh", "lgamma": "pj_lgamma",
                   "digamma": "pj_digamma", "erf_inv": "pj_erf_inv",
                   "sin": "pj_sin", "cos": "pj_cos", "tan": "pj_tan"})


def split_program(source):
    """[(kernel name, module source)] of a program rendered by WGSLRenderer.program."""
    out = []
    for chunk in source.split(KERNEL_MARK)[1:]:
        name = chunk.split("\n", 1)[0].strip()
        out.append((name, KERNEL_MARK + chunk))
    return out


class WGSLRenderer(CRenderer):
    """Kernel IR -> WGSL compute shaders. `generic_shapes=True` reads index constants and
    loop bounds from a `shp` buffer (the int64 values the driver uploads, read as their
    low i32 words), as the C renderers do."""

    LANG = "WGSL"
    CTYPE = WTYPE
    INDEX_T = "i32"
    BOOL_T = "bool"
    helper_parts = HELPER_PARTS

    def __init__(self, generic_shapes=False, backend_name="webgpu"):
        super().__init__(fp64=False, generic_shapes=generic_shapes)
        self.backend_name = backend_name

    # ------------------------------------------------------------ types
    def check_dtype(self, dt, what="a value"):
        dt = np.dtype(dt)
        if dt in UNSUPPORTED_DTYPES:
            raise DtypeUnsupported(unsupported_message(dt, what, self.backend_name))
        if dt not in WTYPE:
            raise DtypeUnsupported(f"the {self.backend_name} backend has no WGSL type for "
                                   f"dtype {dt.name}")

    def ctype(self, dt):
        dt = np.dtype(dt)
        if dt == ir.INDEX:
            return "i32"
        self.check_dtype(dt)
        return WTYPE[dt]

    def _shape_const(self, v):
        if v not in self.shape_values:
            self.shape_values.append(v)
        return f"shp[{2 * self.shape_values.index(v)}]"     # low word of an int64

    # ------------------------------------------------------------ literals
    def literal(self, v, dt) -> str:
        dt = np.dtype(dt)
        if v == "nan":
            return "bitcast<f32>(0x7fc00000u)"
        if is_float(dt):
            self.check_dtype(dt)
            v = float(v)
            if math.isinf(v):
                return "bitcast<f32>(0x7f800000u)" if v > 0 else "bitcast<f32>(0xff800000u)"
            f = float(np.float32(v))
            if f == 0.0:
                return "(-0.0f)" if math.copysign(1.0, f) < 0 else "0.0f"
            if abs(f) < 2.0 ** -126:     # subnormal: keep the exact bits
                return f"bitcast<f32>({int(np.array(f, np.float32).view(np.uint32)):#x}u)"
            h = f"{abs(f).hex()}f"
            return f"(-{h})" if f < 0 else h
        if dt == np.bool_:
            return "true" if v else "false"
        v = int(v)
        t = self.ctype(dt)
        if t == "u32":
            if not 0 <= v < 2 ** 32:
                raise DtypeUnsupported(f"the constant {v} does not fit in WGSL's u32")
            return f"{v}u"
        if not -2 ** 31 <= v < 2 ** 31:
            raise DtypeUnsupported(f"the constant {v} ({dt.name}) does not fit in WGSL's i32: "
                                   f"the {self.backend_name} backend has 32-bit integers only")
        return "i32(-2147483648)" if v == -2 ** 31 else f"{v}i"

    # ------------------------------------------------------------ elementwise ops
    def alu(self, e, a):
        op, dt = e.arg, np.dtype(e.dtype)
        src = np.dtype(e.args[0].dtype) if e.args else dt
        t = self.ctype(dt)
        for x in e.args:
            self.ctype(x.dtype)     # raises for 64-bit floats
        a = self._runtime_consts(e, op, a)
        if op.startswith("threefry"):
            return f"pj_threefry({a[0]}, {a[1]}, {a[2]}, {a[3]}, {op[-1]})"
        if op == "cast":
            return self.cast(a[0], src, dt)
        if op == "bitcast":
            return self.bitcast(a[0], src, dt)
        if op in CMP:
            if src == np.bool_ and op not in ("eq", "ne"):
                return f"(select(0u, 1u, {a[0]}) {CMP[op]} select(0u, 1u, {a[1]}))"
            if op in ("eq", "ne") and is_float(src):
                # NaN tests from bits: WGSL lets a compiler assume no NaNs, and NVIDIA's
                # Vulkan driver folds x != x to false inside a fused kernel
                nan = f"pj_isnan({a[0]})" + ("" if a[0] == a[1] else f" || pj_isnan({a[1]})")
                return (f"(({nan}) || !({a[0]} == {a[1]}))" if op == "ne" else
                        f"(!({nan}) && {a[0]} == {a[1]})")
            return f"({a[0]} {CMP[op]} {a[1]})"
        if op == "where":
            return f"select({a[2]}, {a[1]}, {a[0]})"
        if op == "ipow":
            return _rounded(dt, self.ipow(dt, t, a[0], int(e.args[1].arg)))
        return _rounded(dt, self._arith(op, dt, t, a))

    # ops where a constant operand can make WGSL reject the module (integer division by a
    # constant 0, shifts by a constant >= the width, overflow in constant folding)
    _CONST_RISKY = {"div", "rem", "shift_left", "shift_right_logical", "shift_right_arithmetic"}

    def _runtime_consts(self, e, op, a):
        """Operands as they are, except constants that WGSL would fold at shader creation
        in a way that fails (see _CONST_RISKY; an op of constants only, which may
        overflow): those pass through an identity function, which is never folded."""
        if not e.args or op.startswith("threefry") or op in ("cast", "bitcast", "where"):
            return a
        consts = [x.op == "const" for x in e.args]
        every = all(consts)
        if not every and not (op in self._CONST_RISKY and any(consts[1:])):
            return a
        a = list(a)
        for i, c in enumerate(consts):
            if c and ((every and i == 0) or (op in self._CONST_RISKY and i >= 1)):
                a[i] = f"pj_rt_{self.ctype(e.args[i].dtype)}({a[i]})"
        return a

    def _arith(self, op, dt, t, a):
        f = is_float(dt)
        x = a[0]
        y = a[1] if len(a) > 1 else None
        if dt == np.bool_:
            if op in ("and", "mul", "min"):
                return f"({x} && {y})"
            if op in ("or", "add", "max"):
                return f"({x} || {y})"
            if op in ("xor", "ne", "sub"):
                return f"({x} != {y})"
            if op == "not":
                return f"(!{x})"
        simple = {"add": "+", "sub": "-", "mul": "*", "and": "&", "or": "|", "xor": "^"}
        if op in simple:
            return f"({x} {simple[op]} {y})"
        if op == "idiv":
            return f"({x} / {y})"
        if op == "imod":
            return f"({x} % {y})"
        if op == "div":
            if f:
                return f"({x} / {y})"
            if t == "i32":
                return f"pj_div_i32({x}, {y})"
            # integer div truncates toward zero (like XLA); 0 for a zero divisor
            return f"select({x} / {y}, 0u, {y} == 0u)"
        if op == "rem":
            if f:
                return f"pj_fmod({x}, {y})"
            if t == "i32":
                return f"pj_rem_i32({x}, {y})"
            return f"select({x} % {y}, 0u, {y} == 0u)"
        if op == "pow":
            if f:
                return f"pj_pow({x}, {y})"
            return f"pj_upow({x}, {y})" if t == "u32" else f"pj_ipow({x}, {y})"
        if op in ("max", "min"):
            if f:
                return f"pj_f{op}({x}, {y})"
            return f"{op}({x}, {y})"
        if op == "atan2":
            return f"pj_atan2({x}, {y})"
        if op == "nextafter":
            return f"pj_nextafter({x}, {y})"
        if op.startswith("shift"):
            return self.shift(op, dt, t, x, y)
        return self.unary(op, dt, t, x)

    def unary(self, op, dt, t, x):
        f = is_float(dt)
        if op == "neg":
            return f"(-{x})" if t != "u32" else f"(0u - {x})"
        if op == "sign":
            if f:
                return f"pj_sign({x})"
            if dt.kind == "i":
                return f"select(select(0i, -1i, {x} < 0i), 1i, {x} > 0i)"
            return f"select(0u, 1u, {x} > 0u)"
        if op == "abs":
            return f"abs({x})" if f else (f"abs({x})" if t == "i32" else x)
        if op == "not":
            return f"(!{x})" if dt == np.bool_ else f"(~{x})"
        if op == "square":
            return f"({x} * {x})"
        if op == "rsqrt":
            return f"(1.0 / sqrt({x}))"
        if op == "logistic":
            return f"(1.0 / (1.0 + pj_exp(-{x})))"
        if op == "is_finite":
            return f"pj_isfinite({x})"
        if op in WGSL_UNARY and f:
            return f"{WGSL_UNARY[op]}({x})"
        raise RenderError(f"the {self.LANG} renderer has no rule for {op} on {dt.name}")

    def shift(self, op, dt, t, x, y):
        bits = np.dtype(dt).itemsize * 8
        zero = "0u" if t == "u32" else "0i"
        big = f"({y} < {zero} || {y} >= {bits}{zero[-1]})"
        if op == "shift_left":
            return f"select({x} << u32({y}), {zero}, {big})"
        if op == "shift_right_logical" and dt.kind == "i":
            mask = (1 << bits) - 1
            ux = f"(u32({x}) & {mask:#x}u)" if bits < 32 else f"u32({x})"
            return f"select(i32({ux} >> u32({y})), 0i, {big})"
        if dt.kind == "i":
            fill = f"select(0i, -1i, {x} < 0i)"
            return f"select({x} >> u32({y}), {fill}, {big})"
        return f"select({x} >> u32({y}), 0u, {big})"

    def ipow(self, dt, t, x, y):
        if is_float(dt):
            if y == 0:
                return "1.0"
            # binary exponentiation in float, like numpy's float power by small integers
            p, out, n = x, None, abs(y)
            while n:
                if n & 1:
                    out = p if out is None else f"({out} * {p})"
                n >>= 1
                if n:
                    p = f"({p} * {p})"
            return out if y > 0 else f"(1.0 / {out})"
        if y == 0:
            return "1u" if t == "u32" else "1i"
        p, out, n = x, None, y
        while n:       # binary exponentiation, wrapping like numpy's integer power
            if n & 1:
                out = p if out is None else f"({out} * {p})"
            n >>= 1
            if n:
                p = f"({p} * {p})"
        return out

    def cast(self, x, src, dt):
        src, dt = np.dtype(src), np.dtype(dt)
        t = self.ctype(dt)
        if dt == np.bool_:
            if src == np.bool_:
                return x
            zero = {"f32": "0.0", "u32": "0u", "i32": "0i"}[self.ctype(src)]
            return f"({x} != {zero})"
        if src == np.bool_:
            return {"f32": f"select(0.0, 1.0, {x})", "u32": f"select(0u, 1u, {x})",
                    "i32": f"select(0i, 1i, {x})"}[t]
        if is_float(src) and not is_float(dt):
            return self.float_to_int(x, dt)
        if src == dt:
            return x
        if is_float(dt):
            return _rounded(dt, x if self.ctype(src) == "f32" else f"f32({x})")
        # integer -> integer: modular (same low bits)
        s = x if self.ctype(src) == t else f"{t}({x})"
        return _wrap_int(dt, s)

    def float_to_int(self, x, dt):
        """Truncate toward zero, saturating, NaN -> 0 (OpenCL's convert_T_sat_rtz)."""
        dt = np.dtype(dt)
        if dt == ir.INDEX:
            dt = np.dtype(np.int32)
        info = np.iinfo(dt)
        t = self.ctype(dt)
        top = float(info.max) + 1.0                      # a power of two: exact in f32
        below = float(np.nextafter(np.float32(top), np.float32(0)))
        conv = f"{t}(clamp({x}, {self.literal(float(info.min), np.float32)}, {self.literal(below, np.float32)}))"
        zero = "0u" if t == "u32" else "0i"
        return (f"select(select({conv}, {self.literal(info.max, dt)}, {x} >= "
                f"{self.literal(top, np.float32)}), {zero}, pj_isnan({x}))")

    def bitcast(self, x, src, dt):
        src, dt = np.dtype(src), np.dtype(dt)
        t = self.ctype(dt)
        if src == dt:
            return x
        if src.itemsize != dt.itemsize and not (src == np.bool_ or dt == np.bool_):
            raise RenderError(f"bitcast {src.name} -> {dt.name} changes width")
        # the source's bits as a u32
        if src == F16:
            bits = f"pj_f16_bits({x})"
        elif src == BF16:
            bits = f"pj_bf16_bits({x})"
        elif src == np.bool_:
            bits = f"select(0u, 1u, {x})"
        elif self.ctype(src) == "u32":
            bits = x
        else:
            bits = f"bitcast<u32>({x})"
            if src.itemsize < 4:
                bits = f"({bits} & {(1 << src.itemsize * 8) - 1:#x}u)"
        if dt == F16:
            return f"pj_f16_from_bits({bits})"
        if dt == BF16:
            return f"bitcast<f32>({bits} << 16u)"
        if dt == np.bool_:
            return f"({bits} != 0u)"
        if t == "u32":
            return bits
        return _wrap_int(dt, f"bitcast<{t}>({bits})")

    # ------------------------------------------------------------ memory
    def _packed(self, dt):
        return np.dtype(dt) not in STORE_T

    def load(self, buf, dt, idx):
        dt = np.dtype(dt)
        self.check_dtype(dt, "a buffer")
        if not self._packed(dt):
            return f"{buf}[{idx}]"
        if dt.itemsize == 1:
            bits = f"(({buf}[{idx} >> 2u] >> (u32({idx} & 3) * 8u)) & 0xffu)"
        else:
            bits = f"(({buf}[{idx} >> 1u] >> (u32({idx} & 1) * 16u)) & 0xffffu)"
        return self._from_bits(bits, dt)

    def _from_bits(self, bits, dt):
        if dt == np.bool_:
            return f"({bits} != 0u)"
        if dt == F16:
            return f"pj_f16_from_bits({bits})"
        if dt == BF16:
            return f"bitcast<f32>({bits} << 16u)"
        if dt.kind == "u":
            return bits
        sh = 32 - dt.itemsize * 8
        return f"(bitcast<i32>({bits} << {sh}u) >> {sh}u)"

    def _to_bits(self, val, dt):
        if dt == np.bool_:
            return f"select(0u, 1u, {val})"
        if dt == F16:
            return f"pj_f16_bits({val})"
        if dt == BF16:
            return f"pj_bf16_bits({val})"
        mask = (1 << dt.itemsize * 8) - 1
        return f"({('u32(' + val + ')') if dt.kind == 'i' else val} & {mask:#x}u)"

    def store(self, buf, dt, idx, val):
        dt = np.dtype(dt)
        self.check_dtype(dt, "a buffer")
        if not self._packed(dt):
            return f"{buf}[{idx}] = {val};"
        per = 4 // dt.itemsize
        w, sh = f"{idx} >> {per.bit_length() - 1}u", f"(u32({idx} & {per - 1}) * {dt.itemsize * 8}u)"
        mask = (1 << dt.itemsize * 8) - 1
        return (f"{{ let pw = {w}; let ps = {sh}; atomicAnd(&{buf}[pw], ~({mask:#x}u << ps)); "
                f"atomicOr(&{buf}[pw], {self._to_bits(val, dt)} << ps); }}")

    # ------------------------------------------------------------ reductions
    def update(self, name, kind, dt, v, loops):
        dt = np.dtype(dt)
        f = is_float(dt)
        if kind == "sum":
            return f"{name} = {_rounded(dt, f'({name} + {v})')};" if dt != np.bool_ else \
                f"{name} = {name} || {v};"
        if kind == "prod":
            return f"{name} = {_rounded(dt, f'({name} * {v})')};" if dt != np.bool_ else \
                f"{name} = {name} && {v};"
        if kind in ("and", "or"):
            if dt == np.bool_:
                return f"{name} = {name} {'&&' if kind == 'and' else '||'} {v};"
            return f"{name} = {name} {'&' if kind == 'and' else '|'} {v};"
        if kind in ("max", "min"):
            c = ">" if kind == "max" else "<"
            if dt == np.bool_:
                return f"{name} = {name} {'||' if kind == 'max' else '&&'} {v};"
            nan = f" || pj_isnan({v})" if f else ""
            return f"if ({v} {c} {name}{nan}) {{ {name} = {v}; }}"
        c = ">" if kind == "argmax" else "<"
        if dt == np.bool_:
            cond = f"({v} && !{name})" if kind == "argmax" else f"(!{v} && {name})"
        else:
            cond = f"({v} {c} {name}" + (f" || (pj_isnan({v}) && !pj_isnan({name})))" if f else ")")
        return f"if {cond} {{ {name} = {v}; {name}_i = {loops[0] if loops else 0}; }}"

    # ------------------------------------------------------------ kernels
    def render(self, kernel: ir.Kernel, arg_dtypes) -> str:
        """One WGSL module (without helpers) for `kernel`."""
        if getattr(kernel, "gemm", None) is not None:
            return self.render_gemm(kernel, arg_dtypes)
        stmts, g = linearize(kernel)
        self.shape_values = []
        names = {a.slot: f"b{a.slot}" for a in kernel.args}
        body = [f"  let {g}: i32 = i32((wid.y * nwg.x + wid.x) * {WORKGROUP}u + lid);",
                f"  if ({g} >= pj_n.x) {{ return; }}"]
        self._stmts(stmts, body, names, 1)
        decls = self._bindings(kernel, arg_dtypes)
        n = len(kernel.args)
        if self.generic and self.shape_values:
            decls.append(f"@group(0) @binding({n + 1}) var<storage, read> shp: array<i32>;")
        kernel.shape_args = list(self.shape_values)
        kernel.wgsl_bindings = n + 1 + bool(self.generic and self.shape_values)
        head = (f"@compute @workgroup_size({WORKGROUP})\n"
                f"fn {kernel.name}(@builtin(workgroup_id) wid: vec3<u32>, "
                f"@builtin(num_workgroups) nwg: vec3<u32>, "
                f"@builtin(local_invocation_index) lid: u32) {{")
        return "\n".join(decls + [head] + body + ["}"]) + "\n"

    def _bindings(self, kernel, arg_dtypes):
        written = {st.slot for st in kernel.stores}
        decls = []
        for i, a in enumerate(kernel.args):
            dt = np.dtype(arg_dtypes[a.slot])
            self.check_dtype(dt, "a buffer")
            et = STORE_T.get(dt, "u32")
            if a.slot in written:
                et = f"atomic<{et}>" if self._packed(dt) else et
                decls.append(f"@group(0) @binding({i}) var<storage, read_write> b{a.slot}: array<{et}>;")
            else:
                decls.append(f"@group(0) @binding({i}) var<storage, read> b{a.slot}: array<{et}>;")
        decls.append(f"@group(0) @binding({len(kernel.args)}) var<uniform> pj_n: vec4<i32>;")
        return decls

    def _gemm_fn(self, spec, roots, var_names, names, stores=()):
        """Statements computing `roots` (and `stores`) over the named GEMM loop vars."""
        lin = Linearizer()
        lin.blocks = [_Block(None)]
        lin.var_names.update(var_names)
        lin.blocks[0].memo[spec.acc] = "acc"
        outs = [lin.emit(e) for e in roots]
        for st in stores:
            idx, val = lin.emit(st.index), lin.emit(st.value)
            lin.blocks[0].stmts.append(("store", st.slot, st.value.dtype, idx, val))
        return self._stmts(lin.blocks[0].stmts, [], names, 1), outs

    def render_gemm(self, kernel, arg_dtypes):
        """A tiled matrix product: each 16x16 work group computes a 64x64 tile of C (4x4
        per thread) from 64x16 / 16x64 tiles of A and B staged in workgroup memory. The
        operands are loader functions rendered from the kernel IR (so fused producers
        work), the epilogue a store function (fused bias, activation, residual)."""
        spec = kernel.gemm
        generic, self.generic = self.generic, False     # GEMM sources are shape-specialised
        try:
            self.shape_values = []
            kernel.shape_args = []
            names = {a.slot: f"b{a.slot}" for a in kernel.args}
            nm = kernel.name
            fns = []
            for which, op, vs in (("a", spec.a, (spec.bv, spec.mv, spec.kv)),
                                  ("b", spec.b, (spec.bv, spec.kv, spec.nv))):
                lines, (v,) = self._gemm_fn(spec, [op.expr], dict(zip(vs, ("gb", "gi", "gj"))), names)
                conv = v if self.ctype(op.dtype) == "f32" else self.cast(v, op.dtype, np.float32)
                fns += [f"fn pj_g{which}_{nm}(gb: i32, gi: i32, gj: i32) -> f32 {{"] + lines + \
                       [f"  return {conv};", "}"]
            lines, _ = self._gemm_fn(spec, [], dict(zip((spec.bv, spec.mv, spec.nv), ("gb", "gi", "gj"))),
                                     names, spec.stores)
            fns += [f"fn pj_ge_{nm}(gb: i32, gi: i32, gj: i32, acc: f32) {{"] + lines + ["}"]
            decls = self._bindings(kernel, arg_dtypes)
        finally:
            self.generic = generic
        T, TK, TT = GEMM_TILE, GEMM_TK, GEMM_T
        R = T // TT
        tm, tn = -(-spec.M // T), -(-spec.N // T)
        groups = spec.batch * tm * tn
        kernel.wgsl_groups = groups
        kernel.tiles = {"kind": "gpu", "tile_m": T, "tile_n": T, "tile_k": TK,
                        "threads": (TT, TT), "per_thread": (R, R), "groups": groups}
        M, N, K = spec.M, spec.N, spec.K
        per = T * TK // (TT * TT)
        # straight-line code: the accumulators and operand registers are scalars (dynamic
        # indexing into private arrays sends them to memory on some compilers)
        loads, fma, out = [], [], []
        loads.append(f"""    for (var e = 0i; e < {per}i; e++) {{
      let q = t + e * {TT * TT}i;
      let ak = q % {TK}i; let am = q / {TK}i; let gm = t_m * {T}i + am; let gk = k0 + ak;
      var va = 0.0; if (gm < {M}i && gk < {K}i) {{ va = pj_ga_{nm}(gb, gm, gk); }}
      pj_as[ak * {T}i + am] = va;
      let bn = q % {T}i; let bk = q / {T}i; let gn = t_n * {T}i + bn; let gk2 = k0 + bk;
      var vb = 0.0; if (gn < {N}i && gk2 < {K}i) {{ vb = pj_gb_{nm}(gb, gk2, gn); }}
      pj_bs[bk * {T}i + bn] = vb;
    }}""")
        for i in range(R):
            fma.append(f"      let ra{i} = pj_as[kk * {T}i + ty + {i * TT}i]; "
                       f"let rb{i} = pj_bs[kk * {T}i + tx + {i * TT}i];")
        for i in range(R):
            fma.append("      " + " ".join(f"c{i}_{j} += ra{i} * rb{j};" for j in range(R)))
        for i in range(R):
            for j in range(R):
                out.append(f"  {{ let gm = t_m * {T}i + ty + {i * TT}i; let gn = t_n * {T}i + tx + {j * TT}i;\n"
                           f"    if (gm < {M}i && gn < {N}i) {{ pj_ge_{nm}(gb, gm, gn, c{i}_{j}); }} }}")
        accs = "\n".join("  var " + ", ".join(f"c{i}_{j}" for j in range(R)).replace(", ", ": f32 = 0.0; var ")
                         + ": f32 = 0.0;" for i in range(R))
        nl = "\n"
        body = f"""var<workgroup> pj_as: array<f32, {T * TK}>;
var<workgroup> pj_bs: array<f32, {T * TK}>;
@compute @workgroup_size({TT}, {TT})
fn {nm}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {{
  let wgf = i32(wid.y * nwg.x + wid.x);
  if (wgf >= {groups}i || wgf >= pj_n.x) {{ return; }}     // pj_n.x = M*N*batch >= groups
  let t_n = wgf % {tn}i; let t_m = (wgf / {tn}i) % {tm}i; let gb = wgf / {tm * tn}i;
  let tx = i32(lid.x); let ty = i32(lid.y); let t = ty * {TT}i + tx;
{accs}
  for (var k0 = 0i; k0 < {K}i; k0 += {TK}i) {{
{nl.join(loads)}
    workgroupBarrier();
    for (var kk = 0i; kk < {TK}i; kk++) {{
{nl.join(fma)}
    }}
    workgroupBarrier();
  }}
{nl.join(out)}
}}
"""
        return "\n".join([f"{GROUPS_MARK}{groups}"] + decls + fns) + "\n" + body

    def _stmts(self, stmts, lines, names, depth):
        pad = "  " * depth
        for s in stmts:
            kind = s[0]
            if kind == "def":
                _, name, e, ops = s
                lines.append(f"{pad}let {name}: {self.ctype(e.dtype)} = {self.value(e, ops, names)};")
            elif kind == "acc":
                _, name, e = s
                rk = e.arg[0]
                vdt = e.args[0].dtype
                lines.append(f"{pad}var {name}: {self.ctype(vdt)} = {self.acc_init(rk, vdt)};")
                if rk in ("argmax", "argmin"):
                    lines.append(f"{pad}var {name}_i: i32 = 0i;")
            elif kind == "update":
                _, name, e, v, loops = s
                lines.append(pad + self.update(name, e.arg[0], e.args[0].dtype, v, loops))
            elif kind == "loop":
                _, var, n, body = s
                n = self._shape_const(n) if self.generic else f"{int(n)}i"
                lines.append(f"{pad}for (var {var}: i32 = 0i; {var} < {n}; {var}++) {{")
                self._stmts(body, lines, names, depth + 1)
                lines.append(pad + "}")
            elif kind == "store":
                _, slot, dt, idx, val = s
                lines.append(pad + self.store(names[slot], dt, idx, val))
        return lines

    def acc_init(self, kind, dt):
        dt = np.dtype(dt)
        if dt == np.bool_:
            return "true" if kind in ("prod", "and", "min", "argmin") else "false"
        return super().acc_init(kind, dt)

    def value(self, e, ops, names):
        if e.op == "const":
            if self.generic and e.dtype == ir.INDEX:
                return self._shape_const(e.arg)
            return self.literal(e.arg, e.dtype)
        if e.op == "load":
            return self.load(names[e.arg], e.dtype, ops[0])
        if e.op == "alu":
            return self.alu(e, ops)
        if e.op == "reduce":     # the accumulator, or for argmax/argmin its index
            if e.arg[0] in ("argmax", "argmin"):
                return self.cast(f"{ops[0]}_i", np.int32, e.dtype)
            return ops[0]
        raise RenderError(f"cannot render node {e.op}")

    def module(self, kernel, arg_dtypes):
        """The complete WGSL module of one kernel: its helpers, then the kernel."""
        src = self.render(kernel, arg_dtypes)
        used, text, grew = set(), src, True
        while grew:              # helpers calling helpers: until nothing new is called
            grew = False
            for i, (hnames, chunk) in enumerate(self.helper_parts):
                if i not in used and any(n + "(" in text for n in hnames):
                    used.add(i)
                    text += chunk
                    grew = True
        helpers = "".join(self.helper_parts[i][1] for i in sorted(used))
        return f"{KERNEL_MARK}{kernel.name}\n" + helpers + src

    def program(self, kernels, arg_dtypes):
        """One module per kernel, concatenated (split again by `split_program`)."""
        mods = []
        for k in kernels:
            k.source = self.module(k, arg_dtypes)
            mods.append(k.source)
        return "\n".join(mods)
