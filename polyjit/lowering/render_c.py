"""What OpenCL C and CUDA C share: expression, reduction and statement rendering over the
kernel IR. Subclasses supply the spelling that differs: type names, the kernel head and
work-item index, float16 loads/stores, saturating float->int casts, bit casts, and the
helper prelude.

Values live in registers of their own C type, except float16 and bfloat16, which are
computed in float and rounded back after every operation (as the numpy reference does),
and bool, held as an unsigned char.
"""
from __future__ import annotations

import math

import numpy as np

from ..tracer import dtypes
from . import ir
from .linearize import linearize

F16, BF16 = dtypes.float16, dtypes.bfloat16

# Helpers both languages need, written once: `INLINE`, `AS_UINT`, `AS_FLOAT` and `I64` are
# replaced by each language's spelling (see spell()).
SHARED_HELPERS = r"""
INLINE float pj_rnd_bf16(float x) { uint u = AS_UINT(x);
  if (isnan(x)) return AS_FLOAT((u | 0x00400000u) & 0xffff0000u);
  u += 0x7fffu + ((u >> 16) & 1u); return AS_FLOAT(u & 0xffff0000u); }
INLINE ushort pj_bf16_bits(float x) { return (ushort)(AS_UINT(pj_rnd_bf16(x)) >> 16); }
INLINE float pj_bf16_from_bits(ushort u) { return AS_FLOAT(((uint)u) << 16); }
INLINE uint pj_rotl(uint x, uint r) { return (x << r) | (x >> (32u - r)); }
INLINE uint pj_threefry(uint k0, uint k1, uint x0, uint x1, int which) {
  uint ks0 = k0, ks1 = k1, ks2 = k0 ^ k1 ^ 0x1BD11BDAu;
  uint ks[3] = {ks0, ks1, ks2};
  const uint rot[2][4] = {{13u, 15u, 26u, 6u}, {17u, 29u, 16u, 24u}};
  x0 += ks0; x1 += ks1;
  for (int r = 0; r < 5; r++) {
    for (int i = 0; i < 4; i++) { x0 += x1; x1 = pj_rotl(x1, rot[r % 2][i]); x1 ^= x0; }
    x0 += ks[(r + 1) % 3]; x1 += ks[(r + 2) % 3] + (uint)(r + 1);
  }
  return which ? x1 : x0;
}
INLINE I64 pj_ipow(I64 x, I64 y) {
  I64 r = 1; if (y < 0) return 0;
  while (y) { if (y & 1) r *= x; y >>= 1; x *= x; } return r;
}
"""

# float64 helpers: special functions computed in double and rounded once, like the
# reference (which evaluates them in float64).
SHARED_F64 = r"""
INLINE double pj_erf_inv(double y) {
  double w = -log(fmax((1.0 - y) * (1.0 + y), 1e-300)), x;
  if (w < 5.0) { double ws = w - 2.5, p = 2.81022636e-08;
    p = 3.43273939e-07 + p * ws; p = -3.5233877e-06 + p * ws; p = -4.39150654e-06 + p * ws;
    p = 0.00021858087 + p * ws; p = -0.00125372503 + p * ws; p = -0.00417768164 + p * ws;
    p = 0.246640727 + p * ws; p = 1.50140941 + p * ws; x = p * y;
  } else { double wl = sqrt(w) - 3.0, p = -0.000200214257;
    p = 0.000100950558 + p * wl; p = 0.00134934322 + p * wl; p = -0.00367342844 + p * wl;
    p = 0.00573950773 + p * wl; p = -0.0076224613 + p * wl; p = 0.00943887047 + p * wl;
    p = 1.00167406 + p * wl; p = 2.83297682 + p * wl; x = p * y; }
  for (int i = 0; i < 2; i++) x -= (erf(x) - y) / (1.1283791670955126 * exp(-x * x));
  if (y == 1.0) return INFINITY; if (y == -1.0) return -INFINITY;
  if (fabs(y) > 1.0) return NAN;
  return x;
}
INLINE double pj_digamma(double x) {
  if (x <= 0.0 && x == floor(x)) return NAN;
  int reflect = x < 0.5; double xr = reflect ? 1.0 - x : x, acc = 0.0;
  for (int i = 0; i < 6; i++) { acc -= 1.0 / xr; xr += 1.0; }
  double inv2 = 1.0 / (xr * xr);
  double s = log(xr) - 0.5 / xr - inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252
             - inv2 * (1.0 / 240 - inv2 / 132))));
  double r = acc + s;
  return reflect ? r - M_PI / tan(M_PI * x) : r;
}
INLINE double pj_lgamma(double x) {
  return (x > 0.0 || x != floor(x)) ? lgamma(x) : INFINITY;
}
"""
F64_HELPER_NAMES = ("pj_erf_inv", "pj_digamma", "pj_lgamma")


def spell(src, spelling):
    """Helper text in one language: placeholder tokens replaced by their spelling."""
    for k, v in spelling.items():
        src = src.replace(k, v)
    return src


def split_helpers(src, opener):
    """Split helper text into (names defined, text) chunks, one per function (each
    starting with a line that begins with `opener`)."""
    chunks, cur = [], []
    for line in src.strip().splitlines():
        if line.startswith(opener) and cur:
            chunks.append("\n".join(cur) + "\n")
            cur = []
        cur.append(line)
    chunks.append("\n".join(cur) + "\n")
    return [(tuple(c.split("(")[0].split()[-1:]), c) for c in chunks]


# sin/cos of float32 without the device's trig (WGSL helpers; OpenCL's CPU vector helpers):
# x = q * pi/2 + r, pi/2 taken in five parts of 8 significant bits, so each q * part is
# exact for |q| < 2^16 without fma (Cody-Waite), then cephes' float polynomials on r.
PI_2_PARTS = (1.5703125, 4.825592041015625e-4, 1.2665987014770508e-6, 9.89530235528946e-10,
              2.5633440682570896e-12)
SIN_POLY = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)     # sin r = r + r z P(z)
COS_POLY = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)  # 1 - z/2 + z^2 P(z)


def trig_source(suffix=""):
    """(r from x and q, sin polynomial of r, cos polynomial of r) as expressions, with
    float literals ending in `suffix` ("f" for C)."""
    def lit(c):
        return f"{c!r}{suffix}"

    def horner(cs):
        e = lit(cs[0])
        for c in cs[1:]:
            e = f"({e} * z + {lit(c)})"
        return e
    r = "x"
    for part in PI_2_PARTS:
        r = f"({r} - q * {lit(part)})"
    return (r, f"r + r * z * {horner(SIN_POLY)}",
            f"{lit(1.0)} - {lit(0.5)} * z + z * z * {horner(COS_POLY)}")


class RenderError(Exception):
    pass


def is_float(dt):
    return dtypes.is_float(dt)


def _rounded(dt, s):
    dt = np.dtype(dt)
    if dt == F16:
        return f"pj_rnd_f16({s})"
    if dt == BF16:
        return f"pj_rnd_bf16({s})"
    return s


def _bits(dt):
    return np.dtype(dt).itemsize * 8


UNARY_FLOAT = {"floor": "floor", "ceil": "ceil", "round": "rint", "exp": "exp", "exp2": "exp2",
               "log": "log", "log1p": "log1p", "expm1": "expm1", "tanh": "tanh", "sin": "sin",
               "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos", "atan": "atan",
               "sinh": "sinh", "cosh": "cosh", "asinh": "asinh", "acosh": "acosh",
               "atanh": "atanh", "sqrt": "sqrt", "cbrt": "cbrt", "erf": "erf", "erfc": "erfc"}
VIA_DOUBLE = {"erf": "erf", "erfc": "erfc", "lgamma": "pj_lgamma", "digamma": "pj_digamma",
              "erf_inv": "pj_erf_inv"}
CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class CRenderer:
    """Kernel IR -> C-family source. `generic_shapes=True` renders index constants and
    loop bounds as reads of a `shp` argument, so one source serves every shape with the
    same index structure (used for eager single-primitive programs, where compile time
    dominates)."""

    LANG = "C"
    CTYPE: dict = {}          # numpy dtype -> register type name
    BUFTYPE: dict = {}        # numpy dtype -> element type of a buffer
    INDEX_T = "long"          # 64-bit signed index type
    SUFFIX_I, SUFFIX_U = "L", "UL"   # integer literal suffixes wide enough for 64 bits
    BOOL_T = "uchar"
    helper_parts: list = []   # (names, text) chunks included only when called
    PRELUDE_BASE = ""         # always included
    PRELUDE_F64 = ""          # included when double appears

    def __init__(self, fp64=True, generic_shapes=False):
        self.fp64, self.generic = fp64, generic_shapes
        self.shape_values = []

    def ctype(self, dt):
        return self.CTYPE[np.dtype(dt)]

    def utype(self, dt):
        """The unsigned register type of `dt`'s width (for logical shifts)."""
        return self.ctype(np.dtype(f"u{np.dtype(dt).itemsize}"))

    def _shape_const(self, v):
        if v not in self.shape_values:
            self.shape_values.append(v)
        return f"shp[{self.shape_values.index(v)}]"

    # ------------------------------------------------------------ literals
    def literal(self, v, dt) -> str:
        dt = np.dtype(dt)
        if v == "nan":
            return "NAN" if dt != np.float64 else "((double)NAN)"
        if is_float(dt):
            v = float(v)
            if math.isinf(v):
                return ("INFINITY" if v > 0 else "(-INFINITY)") if dt != np.float64 else \
                    ("((double)INFINITY)" if v > 0 else "((double)-INFINITY)")
            return v.hex() + ("" if dt == np.float64 else "f")
        if dt == np.bool_:
            return f"(({self.BOOL_T})1)" if v else f"(({self.BOOL_T})0)"
        v = int(v)
        if dt.kind == "u":
            return f"(({self.ctype(dt)}){v}{self.SUFFIX_U})"
        if v == -2**63:
            s = self.SUFFIX_I
            return f"(({self.INDEX_T})(-9223372036854775807{s} - 1{s}))"
        return f"(({self.ctype(dt)}){v}{self.SUFFIX_I})"

    # ------------------------------------------------------------ elementwise ops
    def alu(self, e, a):
        op, dt = e.arg, e.dtype
        src = e.args[0].dtype if e.args else dt
        t = self.ctype(dt)
        if op.startswith("threefry"):
            return f"pj_threefry({a[0]}, {a[1]}, {a[2]}, {a[3]}, {op[-1]})"
        if op == "cast":
            return self.cast(a[0], src, dt)
        if op == "bitcast":
            return self.bitcast(a[0], src, dt)
        if op in CMP:
            return f"({self.BOOL_T})({a[0]} {CMP[op]} {a[1]})"
        if op == "where":
            return f"({a[0]} ? {a[1]} : {a[2]})"
        if op == "ipow":
            return _rounded(dt, self.ipow(dt, t, a[0], int(e.args[1].arg)))
        return _rounded(dt, self._arith(op, dt, t, a))

    def _arith(self, op, dt, t, a):
        f = is_float(dt)
        x = a[0]
        y = a[1] if len(a) > 1 else None
        simple = {"add": "+", "sub": "-", "mul": "*", "and": "&", "or": "|", "xor": "^"}
        if op in simple:
            return f"({t})({x} {simple[op]} {y})"
        if op == "idiv":
            return f"({x} / {y})"
        if op == "imod":
            return f"({x} % {y})"
        if op == "div":
            if f:
                return f"({x} / {y})"
            # integer div truncates toward zero (like XLA; pnp.floor_divide fixes signs)
            return f"({t})({y} == 0 ? 0 : {x} / {y})"
        if op == "rem":
            return f"fmod({x}, {y})" if f else f"({t})({y} == 0 ? 0 : {x} % {y})"
        if op == "pow":
            i = self.INDEX_T
            return f"pow({x}, {y})" if f else f"({t})pj_ipow(({i}){x}, ({i}){y})"
        if op in ("max", "min"):
            c = ">" if op == "max" else "<"
            if f:
                return f"(({x} {c} {y} || isnan({x})) ? {x} : {y})"
            return f"({x} {c} {y} ? {x} : {y})"
        if op in ("atan2", "nextafter"):
            return f"{op}({x}, {y})"
        if op.startswith("shift"):
            return self.shift(op, dt, t, x, y)
        return self.unary(op, dt, t, x)

    def unary(self, op, dt, t, x):
        f = is_float(dt)
        if op == "neg":
            return f"({t})(-{x})"
        if op == "sign":
            if f:
                return f"({x} > 0 ? ({t})1 : ({x} < 0 ? ({t})-1 : {x}))"
            return f"({t})(({x} > 0) - ({x} < 0))" if dt.kind == "i" else f"({t})({x} > 0)"
        if op == "abs":
            return f"fabs({x})" if f else (f"({t})({x} < 0 ? -{x} : {x})" if dt.kind == "i" else x)
        if op == "not":
            return f"({self.BOOL_T})!{x}" if dt == np.bool_ else f"({t})~{x}"
        if op == "square":
            return f"({t})({x} * {x})"
        if op == "rsqrt":
            return f"(({t})1 / sqrt({x}))"
        if op == "logistic":
            return f"(({t})1 / (({t})1 + exp(-{x})))"
        if op == "is_finite":
            return f"({self.BOOL_T})isfinite({x})"
        if op in VIA_DOUBLE and self.fp64:
            return f"({t}){VIA_DOUBLE[op]}((double){x})"
        if op == "lgamma":
            return f"(({x} > 0 || {x} != floor({x})) ? lgamma({x}) : INFINITY)"
        if op in ("digamma", "erf_inv"):
            raise RenderError(f"{op} needs a device with float64 support")
        if op in UNARY_FLOAT:
            return f"{UNARY_FLOAT[op]}({x})"
        raise RenderError(f"the {self.LANG} renderer has no rule for {op}")

    def shift(self, op, dt, t, x, y):
        bits = _bits(dt)
        big = f"({y} < 0 || {y} >= {bits})"
        if op == "shift_left":
            return f"({t})({big} ? 0 : ({x} << {y}))"
        if op == "shift_right_logical" and dt.kind == "i":
            return f"({t})({big} ? 0 : (({self.utype(dt)}){x} >> {y}))"
        fill = f"({x} < 0 ? -1 : 0)" if dt.kind == "i" else "0"
        return f"({t})({big} ? {fill} : ({x} >> {y}))"

    def ipow(self, dt, t, x, y):
        if is_float(dt):
            return f"pow({x}, ({t}){y})" if y >= 0 else f"(({t})1 / pow({x}, ({t}){-y}))"
        if y == 0:
            return f"(({t})1)"
        p, out, n = x, None, y
        while n:       # binary exponentiation, wrapping like numpy's integer power
            if n & 1:
                out = p if out is None else f"({t})({out} * {p})"
            n >>= 1
            if n:
                p = f"({t})({p} * {p})"
        return out

    def cast(self, x, src, dt):
        src, dt = np.dtype(src), np.dtype(dt)
        t = self.ctype(dt)
        if dt == np.bool_:
            return f"({self.BOOL_T})({x} != 0)"
        if is_float(src) and not is_float(dt):
            return self.float_to_int(x, dt)
        if src == dt:
            return x
        return _rounded(dt, f"({t}){x}")

    def float_to_int(self, x, dt):
        """Truncate toward zero, saturating, NaN -> 0."""
        raise NotImplementedError

    def bitcast(self, x, src, dt):
        src, dt = np.dtype(src), np.dtype(dt)
        t = self.ctype(dt)
        if src == dt:
            return x
        if src == F16:
            x, src = f"pj_f16_bits({x})", np.dtype(np.uint16)
        elif src == BF16:
            x, src = f"pj_bf16_bits({x})", np.dtype(np.uint16)
        if dt == F16:
            return f"pj_f16_from_bits({self.reinterpret(x, src, np.uint16)})" if src.itemsize == 2 else x
        if dt == BF16:
            return f"pj_bf16_from_bits({self.reinterpret(x, src, np.uint16)})"
        if src == np.bool_ or dt == np.bool_ or src.itemsize == 1:
            return f"({t}){x}"
        return self.reinterpret(x, src, dt)

    def reinterpret(self, x, src, dt):
        """The bits of `x` (of dtype `src`) as a value of `dt` (same width)."""
        raise NotImplementedError

    # ------------------------------------------------------------ memory
    def load(self, buf, dt, idx):
        if np.dtype(dt) == BF16:
            return f"pj_bf16_from_bits({buf}[{idx}])"
        return f"{buf}[{idx}]"

    def store(self, buf, dt, idx, val):
        if np.dtype(dt) == BF16:
            return f"{buf}[{idx}] = pj_bf16_bits({val});"
        return f"{buf}[{idx}] = {val};"

    # ------------------------------------------------------------ reductions
    def acc_init(self, kind, dt):
        dt = np.dtype(dt)
        f = is_float(dt)
        if kind in ("sum", "or"):
            return self.literal(0, dt)
        if kind == "prod":
            return self.literal(1, dt)
        if kind == "and":
            return self.literal(1 if dt == np.bool_ else -1 if dt.kind == "i" else
                                np.iinfo(dt).max, dt)
        lowest = kind in ("max", "argmax")
        if f:
            return self.literal(-math.inf if lowest else math.inf, dt)
        if dt == np.bool_:
            return self.literal(0 if lowest else 1, dt)
        info = np.iinfo(dt)
        return self.literal(info.min if lowest else info.max, dt)

    def update(self, name, kind, dt, v, loops):
        t = self.ctype(dt)
        f = is_float(dt)
        if kind == "sum":
            return f"{name} = {_rounded(dt, f'({t})({name} + {v})')};"
        if kind == "prod":
            return f"{name} = {_rounded(dt, f'({t})({name} * {v})')};"
        if kind in ("and", "or"):
            return f"{name} = {name} {'&' if kind == 'and' else '|'} {v};"
        if kind in ("max", "min"):
            c = ">" if kind == "max" else "<"
            nan = f" || isnan({v})" if f else ""
            return f"if ({v} {c} {name}{nan}) {name} = {v};"
        c = ">" if kind == "argmax" else "<"
        nan = f" || (isnan({v}) && !isnan({name}))" if f else ""
        return f"if ({v} {c} {name}{nan}) {{ {name} = {v}; {name}_i = {loops[0] if loops else 0}; }}"

    # ------------------------------------------------------------ kernels
    def kernel_params(self, kernel, arg_dtypes):
        written = {a.slot for a in kernel.args[len(kernel.args) - len(kernel.stores):]}
        return [self.buffer_param(f"b{a.slot}", arg_dtypes[a.slot], a.slot in written)
                for a in kernel.args]

    def buffer_param(self, name, dt, written):
        raise NotImplementedError

    def kernel_head(self, name, params):
        raise NotImplementedError

    def work_item(self, g):
        """Lines binding the flat work-item index `g` (and returning past n_work)."""
        raise NotImplementedError

    def render(self, kernel: ir.Kernel, arg_dtypes) -> str:
        """Source of one kernel; `arg_dtypes[slot]` gives each buffer's dtype."""
        if kernel.gemm is not None and hasattr(self, "_render_gemm"):
            return self._render_gemm(kernel, arg_dtypes)
        stmts, g = linearize(kernel)
        self.shape_values = []
        lines = self.work_item(g)
        self._stmts(stmts, lines, self.buffer_names(kernel), 1)
        kernel.shape_args = list(self.shape_values)
        return "\n".join([self.signature(kernel, arg_dtypes)] + lines + ["}"])

    @staticmethod
    def buffer_names(kernel):
        return {a.slot: f"b{a.slot}" for a in kernel.args}

    def signature(self, kernel, arg_dtypes):
        """The kernel's opening line: buffers, then the work-item count (and shapes)."""
        params = self.kernel_params(kernel, arg_dtypes)
        params.append(f"const {self.INDEX_T} n_work")
        if self.generic:
            params.append(self.buffer_param("shp", ir.INDEX, False))
        return self.kernel_head(kernel.name, params)

    def _stmts(self, stmts, lines, names, depth):
        pad = "  " * depth
        for s in stmts:
            kind = s[0]
            if kind == "def":
                _, name, e, ops = s
                lines.append(f"{pad}const {self.ctype(e.dtype)} {name} = {self.value(e, ops, names)};")
            elif kind == "acc":
                _, name, e = s
                rk = e.arg[0]
                vdt = e.args[0].dtype
                lines.append(f"{pad}{self.ctype(vdt)} {name} = {self.acc_init(rk, vdt)};")
                if rk in ("argmax", "argmin"):
                    lines.append(f"{pad}{self.INDEX_T} {name}_i = 0;")
            elif kind == "update":
                _, name, e, v, loops = s
                lines.append(pad + self.update(name, e.arg[0], e.args[0].dtype, v, loops))
            elif kind == "loop":
                _, var, n, body = s
                n = self._shape_const(n) if self.generic else n
                lines.append(f"{pad}for ({self.INDEX_T} {var} = 0; {var} < {n}; {var}++) {{")
                self._stmts(body, lines, names, depth + 1)
                lines.append(pad + "}")
            elif kind == "store":
                _, slot, dt, idx, val = s
                lines.append(pad + self.store(names[slot], dt, idx, val))
        return lines

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
                return f"({self.ctype(e.dtype)}){ops[0]}_i"
            return ops[0]
        raise RenderError(f"cannot render node {e.op}")

    def program(self, kernels, arg_dtypes):
        """One compilation unit holding `kernels` (sources are also set on each kernel).
        Only the helpers the kernels call are included: less for the compiler to parse."""
        for k in kernels:
            k.source = self.render(k, arg_dtypes)
        body = "\n\n".join(k.source for k in kernels)
        used, text = [], body
        for names, chunk in reversed(self.helper_parts):   # helpers follow what they call
            if any(n + "(" in text for n in names):
                used.append(chunk)
                text += chunk
        head = [self.PRELUDE_BASE] + used[::-1]
        if any(n in body for n in F64_HELPER_NAMES + ("double",)):
            head.append(self.PRELUDE_F64)
        return "".join(head) + body


# ---------------------------------------------------------------- matrix products
class GemmRendering:
    """What the dialects' tiled GEMM templates share (mixed into CRenderer subclasses
    that define `render_gemm(kernel, spec, params, names, arg_dtypes)`): the operand
    loaders and the epilogue as inline functions rendered from the kernel IR, so any
    fused producer or elementwise epilogue works, and strided fast paths for operands
    that are plain loads."""

    def _render_gemm(self, kernel, arg_dtypes):
        spec = kernel.gemm
        generic, self.generic = self.generic, False    # GEMM sources are shape-specialised
        try:
            self.shape_values = []
            params = self.kernel_params(kernel, arg_dtypes)
            params.append(f"const {self.INDEX_T} n_work")
            if generic:
                params.append(self.buffer_param("shp", ir.INDEX, False))
            kernel.shape_args = []
            names = {a.slot: f"b{a.slot}" for a in kernel.args}
            helpers = self._gemm_helpers(kernel, spec, params, names)
            body = self.render_gemm(kernel, spec, params, names, arg_dtypes)
        finally:
            self.generic = generic
        return helpers + "\n" + body

    def _gemm_fn(self, spec, roots, var_names, names, stores=()):
        from .linearize import Linearizer, _Block
        lin = Linearizer()
        lin.blocks = [_Block(None)]
        lin.var_names.update(var_names)
        lin.blocks[0].memo[spec.acc] = "acc"
        outs = [lin.emit(e) for e in roots]
        for st in stores:
            idx, val = lin.emit(st.index), lin.emit(st.value)
            lin.blocks[0].stmts.append(("store", st.slot, st.value.dtype, idx, val))
        return self._stmts(lin.blocks[0].stmts, [], names, 1), outs

    def _gemm_helpers(self, kernel, spec, params, names):
        I = self.INDEX_T
        buf = ", ".join(params[:len(kernel.args)])
        nm = kernel.name
        out = []
        for which, op, vs in (("a", spec.a, (spec.bv, spec.mv, spec.kv)),
                              ("b", spec.b, (spec.bv, spec.kv, spec.nv))):
            lines, (v,) = self._gemm_fn(spec, [op.expr], dict(zip(vs, ("gb", "gi", "gj"))), names)
            out.append(f"{self.GEMM_INLINE} float pj_g{which}_{nm}({buf}, {I} gb, {I} gi, {I} gj) {{")
            out += lines + [f"  return (float){v};", "}"]
        lines, _ = self._gemm_fn(spec, [], dict(zip((spec.bv, spec.mv, spec.nv), ("gb", "gi", "gj"))),
                                 names, spec.stores)
        out.append(f"{self.GEMM_INLINE} void pj_ge_{nm}({buf}, {I} gb, {I} gi, {I} gj, float acc) {{")
        out += lines + ["}"]
        return "\n".join(out)

    @staticmethod
    def gemm_call(kernel, which, args, bufs):
        return f"pj_g{which}_{kernel.name}({bufs}, {args})"
