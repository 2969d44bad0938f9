"""The kernel IR: scalar expressions over loop variables, and kernels that store them.

Nothing here knows about OpenCL (or CUDA, or WGSL). An `Expr` is an immutable,
hash-consed node: building the same expression twice gives the same object, so common
subexpressions are shared for free and the scheduler can hoist loop-invariant work.

Node kinds (`op`):
  const   arg = Python scalar                       value of `dtype`
  var     arg = (name, extent)                        a loop index, 0 <= v < extent
  load    arg = buffer slot, args = (flat index,)     one element of an input buffer
  alu     arg = operation name, args = operands       see ALU_OPS; dtype is the result's
  reduce  arg = (kind, loop vars), args = (body,)     fold body over the loop vars
  gemm_acc  arg = "acc"                             a GEMM's finished dot product, inside
                                                    its epilogue (see GemmSpec)
Index arithmetic goes through `iadd/imul/idiv/imod`, which fold constants and use value
bounds to cancel `(i*n + j) // n` into `i`, so movement ops leave little residue.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

INDEX = np.dtype(np.int64)   # index arithmetic is 64-bit; renderers may narrow it
BOOL = np.dtype(np.bool_)

# elementwise operations a renderer must provide, by arity (semantics: the numpy backend)
ALU_OPS = {
    1: {"neg", "sign", "floor", "ceil", "round", "exp", "exp2", "log", "log1p", "expm1", "tanh",
        "logistic", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh",
        "acosh", "atanh", "sqrt", "rsqrt", "cbrt", "abs", "not", "erf", "erfc", "erf_inv",
        "lgamma", "digamma", "square", "is_finite", "cast", "bitcast"},
    2: {"add", "sub", "mul", "div", "rem", "pow", "max", "min", "atan2", "and", "or", "xor",
        "shift_left", "shift_right_logical", "shift_right_arithmetic", "nextafter",
        "eq", "ne", "lt", "le", "gt", "ge", "idiv", "imod", "ipow"},
    3: {"where"},
}
REDUCE_KINDS = {"sum", "prod", "max", "min", "and", "or", "argmax", "argmin"}


class Expr:
    __slots__ = ("op", "arg", "args", "dtype", "free", "lo", "hi", "has_reduce", "__weakref__")

    def __repr__(self):
        if self.op == "const":
            return repr(self.arg)
        if self.op == "var":
            return self.arg[0]
        return f"{self.op}:{self.arg}({', '.join(map(repr, self.args))})"


_table: dict = {}


def node(op, dtype, arg=None, args=(), lo=None, hi=None) -> Expr:
    """The unique node for (op, dtype, arg, args)."""
    dtype = np.dtype(dtype)
    key = (op, dtype.str, arg, args)
    e = _table.get(key)
    if e is not None:
        return e
    e = Expr()
    e.op, e.dtype, e.arg, e.args, e.lo, e.hi = op, dtype, arg, args, lo, hi
    free = frozenset().union(*(a.free for a in args)) if args else frozenset()
    if op == "var":
        free = frozenset([e])
    elif op == "reduce":
        free = free - frozenset(arg[1])
    e.free = free
    e.has_reduce = op == "reduce" or any(a.has_reduce for a in args)
    _table[key] = e
    return e


def clear_cache():
    """Forget interned nodes (they are only needed while a program is being lowered)."""
    _table.clear()


def const(v, dtype=INDEX) -> Expr:
    dtype = np.dtype(dtype)
    v = np.asarray(v, dtype).item() if dtype.kind != "V" else v
    if dtype == BOOL:
        v = bool(v)
    if isinstance(v, float) and v != v:
        key_v = "nan"    # NaN != NaN would defeat interning
        return node("const", dtype, key_v)
    lo = hi = v if dtype.kind in "iu" else None
    return node("const", dtype, v, (), lo, hi)


_names = itertools.count()


def loop_var(extent: int, prefix="r") -> Expr:
    return node("var", INDEX, (f"{prefix}{next(_names)}", int(extent)), (), 0, int(extent) - 1)


def load(slot: int, index: Expr, dtype) -> Expr:
    return node("load", dtype, slot, (index,))


def alu(op: str, dtype, *args: Expr) -> Expr:
    assert op in ALU_OPS[len(args)], (op, len(args))
    if op == "cast" and args[0].dtype == np.dtype(dtype):
        return args[0]
    if op == "where" and args[0].op == "const":
        return args[1] if args[0].arg else args[2]
    return node("alu", dtype, op, tuple(args))


def reduce(kind: str, loops, body: Expr, dtype=None) -> Expr:
    loops = tuple(v for v in loops if v.arg[1] != 1 or v in body.free)
    if not loops and kind not in ("argmax", "argmin"):
        return body
    return node("reduce", dtype or body.dtype, (kind, loops), (body,))


# ---------------------------------------------------------------- index arithmetic
def _terms(e: Expr):
    """e as ({node: coefficient}, constant) when it is a sum of scaled nodes."""
    if e.op == "const":
        return {}, e.arg
    if e.op == "alu" and e.arg == "add":
        (ta, ca), (tb, cb) = _terms(e.args[0]), _terms(e.args[1])
        out = dict(ta)
        for k, c in tb.items():
            out[k] = out.get(k, 0) + c
        return {k: c for k, c in out.items() if c}, ca + cb
    if e.op == "alu" and e.arg == "mul" and e.args[1].op == "const":
        t, c = _terms(e.args[0])
        k = e.args[1].arg
        return {n: v * k for n, v in t.items()}, c * k
    return {e: 1}, 0


def _from_terms(terms, c) -> Expr:
    out = None
    for n, k in sorted(terms.items(), key=lambda kv: _order(kv[0])):
        t = n if k == 1 else _mul_raw(n, k)
        out = t if out is None else _add_raw(out, t)
    if out is None:
        return const(c)
    return out if c == 0 else _add_raw(out, const(c))


def _order(e):
    return (e.op != "var", e.arg[0] if e.op == "var" else str(e.arg), id(e))


def _bounds_add(a, b):
    return (None, None) if None in (a.lo, b.lo, a.hi, b.hi) else (a.lo + b.lo, a.hi + b.hi)


def _add_raw(a, b):
    lo, hi = _bounds_add(a, b)
    return node("alu", INDEX, "add", (a, b), lo, hi)


def _mul_raw(a, k: int):
    if None in (a.lo, a.hi):
        lo = hi = None
    else:
        lo, hi = sorted((a.lo * k, a.hi * k))
    return node("alu", INDEX, "mul", (a, const(k)), lo, hi)


def iconst(e) -> Expr:
    return e if isinstance(e, Expr) else const(int(e))


def iadd(*es) -> Expr:
    terms, c = {}, 0
    for e in map(iconst, es):
        t, k = _terms(e)
        c += k
        for n, v in t.items():
            terms[n] = terms.get(n, 0) + v
    terms, extra = _recombine({n: v for n, v in terms.items() if v})
    return _from_terms(terms, c + extra)


def _recombine(terms):
    """k*n*(a // n) + k*(a % n) -> k*a, so flatten(unflatten(i)) is i again."""
    changed, extra = True, 0
    while changed:
        changed = False
        for t, k in list(terms.items()):
            if t.op != "alu" or t.arg != "idiv":
                continue
            a, n = t.args[0], t.args[1].arg
            m = _table.get(("alu", INDEX.str, "imod", (a, const(n))))
            if k % n or m is None or terms.get(m) != k // n:
                continue
            del terms[t], terms[m]
            ta, ca = _terms(a)
            for x, v in ta.items():
                terms[x] = terms.get(x, 0) + v * (k // n)
            terms = {x: v for x, v in terms.items() if v}
            extra += ca * (k // n)
            changed = True
            break
    return terms, extra


def imul(a, k: int) -> Expr:
    a = iconst(a)
    if k == 0:
        return const(0)
    t, c = _terms(a)
    return _from_terms({n: v * k for n, v in t.items()}, c * k)


def _split(e: Expr, n: int):
    """(quotient terms, remainder expr) with e = n*q + r, when r's bounds fit [0, n)."""
    t, c = _terms(e)
    q = {k: v // n for k, v in t.items() if v % n == 0}
    rest = _from_terms({k: v for k, v in t.items() if v % n}, c % n)
    qc = c // n
    if rest.lo is not None and 0 <= rest.lo and rest.hi < n:
        return _from_terms(q, qc), rest
    return None


def idiv(a, n: int) -> Expr:
    """Floor division of a non-negative index by a positive constant."""
    a = iconst(a)
    if n == 1:
        return a
    if a.lo is not None and 0 <= a.lo and a.hi < n:
        return const(0)
    s = _split(a, n)
    if s is not None:
        return s[0]
    lo, hi = (a.lo // n, a.hi // n) if a.lo is not None else (None, None)
    return node("alu", INDEX, "idiv", (a, const(n)), lo, hi)


def imod(a, n: int) -> Expr:
    a = iconst(a)
    if n == 1:
        return const(0)
    if a.lo is not None and 0 <= a.lo and a.hi < n:
        return a
    s = _split(a, n)
    if s is not None:
        return s[1]
    return node("alu", INDEX, "imod", (a, const(n)), 0, n - 1)


def flatten(idx, shape) -> Expr:
    """Row-major flat offset of a multi-index."""
    out, stride = const(0), 1
    for i, d in reversed(list(zip(idx, shape))):
        out = iadd(out, imul(i, stride))
        stride *= d
    return out


def unflatten(flat: Expr, shape):
    idx = []
    for d in reversed(shape):
        if d <= 1:      # size-0 arrays never run a kernel; keep the index well defined
            idx.append(const(0))
            continue
        idx.append(imod(flat, d))
        flat = idiv(flat, d)
    return tuple(reversed(idx))


def in_range(i: Expr, lo: int, hi: int) -> Expr:
    """bool: lo <= i < hi, folded when the bounds already say so."""
    conds = []
    if i.lo is None or i.lo < lo:
        conds.append(alu("ge", BOOL, i, const(lo)))
    if i.hi is None or i.hi >= hi:
        conds.append(alu("lt", BOOL, i, const(hi)))
    if i.lo is not None and (i.lo >= hi or i.hi < lo):
        return const(False, BOOL)
    out = const(True, BOOL)
    for c in conds:
        out = c if out.op == "const" else alu("and", BOOL, out, c)
    return out


# ---------------------------------------------------------------- kernels
@dataclass
class BufferRef:
    """A kernel argument: one device buffer, read or written as a flat array."""
    slot: int            # program-wide buffer number
    dtype: np.dtype
    size: int


@dataclass
class Store:
    slot: int
    index: Expr
    value: Expr


@dataclass
class Kernel:
    """A parallel loop over `par` (one work item each) with a serial loop nest over `ser`
    inside, storing `stores` at each point. `args` lists every buffer it touches."""
    name: str
    par: tuple           # loop vars, one work item per point of their product
    ser: tuple           # loop vars iterated inside each work item
    stores: list
    args: list = field(default_factory=list)     # BufferRef, inputs then outputs
    source: str = ""     # filled in by a renderer
    gemm: object = None  # a GemmSpec when this kernel is a (fused-epilogue) matrix product;
    # par/ser/stores still describe it as a plain loop nest, for renderers without a GEMM path

    @property
    def global_size(self) -> int:
        return math.prod(int(v.arg[1]) for v in self.par)     # per launch: no numpy call


# ---------------------------------------------------------------- matrix products
@dataclass
class GemmOperand:
    """One GEMM operand as an element expression over (batch, row, col) loop vars:
    A(b, m, k) or B(b, k, n), in the operand's own dtype (before the cast to the
    accumulator). `plain` is (slot, offset, batch stride, row stride, col stride) in
    elements when the expression is one load at an affine index (strided fast path)."""
    expr: Expr
    dtype: np.dtype
    plain: tuple = None

    def contiguous(self, axis):
        """Is the operand a plain load whose `axis` (1 rows, 2 cols) has stride 1?"""
        return self.plain is not None and self.plain[2 + axis] == 1


@dataclass
class GemmSpec:
    """C[b, m, n] = epilogue(sum_k A(b, m, k) * B(b, k, n)) over acc_dtype.

    The loop vars bv/mv/nv/kv have extents batch/M/N/K. `stores` are Store(slot, index,
    value) whose index and value are expressions over (bv, mv, nv) and `acc`, the
    placeholder node of the finished dot product (op "gemm_acc")."""
    batch: int
    M: int
    N: int
    K: int
    bv: Expr
    mv: Expr
    nv: Expr
    kv: Expr
    a: GemmOperand
    b: GemmOperand
    acc: Expr
    acc_dtype: np.dtype
    stores: list
    precision: str = "highest"

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.M * self.N * self.K


def gemm_acc(dtype) -> Expr:
    """The placeholder for a GEMM's finished accumulator inside its epilogue."""
    return node("gemm_acc", dtype, "acc")


def affine(index: Expr, vars_):
    """(offset, [coefficient of each var]) when `index` is an affine function of
    `vars_` only, else None."""
    terms, c = _terms(index)
    if any(n not in vars_ for n in terms):
        return None
    return c, [terms.get(v, 0) for v in vars_]
