"""Fusion: decide which jaxpr values get a buffer, and build one kernel per group of them.

Every value is computed inline (by EXPR_RULES, at whatever index its consumer asks for)
unless it is *materialized*: a program output, an operand or result of a host step, or
a reduction that inlining would make several work items recompute. Starting from the
outputs, a fixpoint adds values to the materialized set until

  * every reduction inside a kernel is computed by exactly one work item: the kernel's
    iteration space is split into parallel dims (work items) and trailing serial dims
    (a loop inside each work item); a reduction must depend on all parallel dims and on
    none or all of the serial ones, so that hoisting leaves no redundant copies; and
  * no value containing a reduction is inlined into two different kernels, nor a value
    costing more than SHARED_MAX_OPS arithmetic nodes (a batch-norm backward's shared
    producers would otherwise be recomputed by each of its reductions).

Softmax thus becomes one kernel (one work item per row: max, sum, then the row loop),
layernorm too, and `relu(x @ w + b)` is one kernel whose reduction is the matmul.

A kernel whose only reduction is a dot_general (or a conv_general_dilated, as an
implicit GEMM) at the kernel's own output index, big enough, also gets a GemmSpec
(`plan_gemm`): the product as C[b, m, n] = epilogue(sum_k A(b, m, k) B(b, k, n)) with A,
B and the epilogue as expressions, which renderers with a GEMM path turn into tiled
kernels; the kernel's plain loop nest stays valid for the others.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..tracer import primitives as P
from ..tracer.core import Eqn, Jaxpr, Literal, ShapedArray, Var, abstract_eval_rules
from . import ir
from .exprs import EXPR_RULES, _acc_dtype


class Builder:
    """Expressions for jaxpr values at symbolic indices; `slots` are the materialized ones."""

    def __init__(self, defs, slots):
        self.defs, self.slots = defs, slots
        self.memo = {}
        self.owner = {}                  # reduce node -> the jaxpr var it computes
        self.uses = defaultdict(set)     # var with a reduction inside -> roots inlining it
        self.shared = defaultdict(set)   # var computed inline -> roots inlining it
        self.trees = {}                  # var computed inline -> one of its expressions
        self.prims = []                  # primitive names met while building (kernel names)
        self.root = None

    def value(self, x, idx):
        if isinstance(x, Literal):
            return ir.const(x.val.item(), x.aval.dtype)
        if x in self.slots and x is not self.root:
            return ir.load(self.slots[x], ir.flatten(idx, x.aval.shape), x.aval.dtype)
        eqn, i = self.defs[x]
        key = (x, idx)
        r = self.memo.get(key)
        if r is None:
            r = self.memo[key] = EXPR_RULES[eqn.prim](self, eqn, i, tuple(idx))
        if eqn.prim.name not in self.prims:
            self.prims.append(eqn.prim.name)
        if x is not self.root:
            if r.has_reduce:
                self.uses[x].add(self.root)
            self.shared[x].add(self.root)
            self.trees.setdefault(x, r)
        return r

    def reduce(self, kind, loops, body, owner, dtype=None):
        r = ir.reduce(kind, loops, body, dtype)
        self.owner[r] = owner
        return r

    def build_root(self, root, idx):
        self.root, self.prims = root, []
        return self.value(root, tuple(idx))


def walk(roots):
    """Every node reachable from `roots`, children first."""
    seen, order, stack = set(), [], [(r, False) for r in roots]
    while stack:
        e, done = stack.pop()
        if done:
            order.append(e)
            continue
        if id(e) in seen:
            continue
        seen.add(id(e))
        stack.append((e, True))
        stack.extend((a, False) for a in e.args)
    return order


def _redundant(r, par, loops):
    """Would several work items, or several iterations of the enclosing loops (outermost
    first), compute this same reduction? Hoisting moves it out of the loops it does not
    depend on only up to the innermost loop it does depend on."""
    if not par <= r.free:
        return True
    deps = [i for i, v in enumerate(loops) if v in r.free]
    return bool(deps) and any(v not in r.free and v.arg[1] > 1 for v in loops[:deps[-1]])


def redundant_reduces(tree, par, ser):
    """Reduce nodes of `tree` that would be computed redundantly."""
    bad, seen = [], set()
    stack = [(tree, tuple(ser))]
    while stack:
        e, loops = stack.pop()
        key = (e, loops)
        if key in seen or not e.has_reduce:
            continue
        seen.add(key)
        if e.op == "reduce":
            if _redundant(e, par, loops):
                bad.append(e)
            loops = loops + tuple(e.arg[1])
        stack.extend((a, loops) for a in e.args)
    return bad


def choose_split(tree, dom, shape):
    """(k, redundant reduce nodes): the first k dims run in parallel, the rest serially."""
    nontrivial = [v for v, d in zip(dom, shape) if d > 1]
    lowest = 1 if shape else 0
    for k in range(len(shape), lowest - 1, -1):
        par = frozenset(v for v in dom[:k] if v in nontrivial)
        ser = [v for v in dom[k:] if v in nontrivial]
        if not redundant_reduces(tree, par, ser):
            return k, []
    return len(shape), redundant_reduces(tree, frozenset(nontrivial), [])


@dataclass
class RootPlan:
    var: object
    k: int          # number of parallel dims


SHARED_MAX_OPS = 24   # an inlined value this costly, used by several kernels, gets a buffer


def _ops(tree):
    """Arithmetic nodes of an expression: the work each inlining kernel repeats."""
    return sum(e.op == "alu" for e in walk([tree]))


def plan_materialization(jaxpr, defs, required, plain_operands=False):
    """The materialized vars (a superset of `required`) and a split for each kernel root.

    Each round adds only the earliest offending value: materializing it often makes the
    later ones cheap to inline (a shared matmul output, once stored, makes its shared
    tanh consumer plain elementwise work)."""
    order = {o: i for i, e in enumerate(jaxpr.eqns) for o in e.outputs}
    inputs = list(jaxpr.constvars) + list(jaxpr.invars)
    mat = set(required) | materialized_up_front(jaxpr, required, plain_operands)
    while True:
        b = Builder(defs, {v: v for v in list(mat) + inputs})
        plans, grow = [], set()
        for v in _roots(jaxpr, mat, defs):
            dom = tuple(ir.loop_var(d, "i") for d in v.aval.shape)
            tree = b.build_root(v, dom)
            k, bad = choose_split(tree, dom, v.aval.shape)
            grow |= {b.owner[r] for r in bad if r in b.owner}
            plans.append(RootPlan(v, k))
        grow |= {x for x, rs in b.uses.items() if len(rs) > 1}
        grow |= {x for x, rs in b.shared.items()
                 if len(rs) > 1 and x not in mat and _ops(b.trees[x]) > SHARED_MAX_OPS}
        grow -= mat
        if not grow:
            return mat, plans
        mat.add(min(grow, key=order.get))


_PRODUCTS = (P.dot_general_p, P.conv_general_dilated_p)
_WINDOWED = _PRODUCTS + (P.reduce_window_sum_p, P.reduce_window_max_p, P.reduce_window_min_p)


# transcendental elementwise work: too costly for a GEMM operand loader, which evaluates
# its expression once per load (each operand element is loaded once per output tile)
_COSTLY = frozenset(P.UNARY[n] for n in (
    "exp", "exp2", "expm1", "log", "log1p", "logistic", "tanh", "sin", "cos", "tan", "sinh",
    "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh", "erf", "erfc", "erf_inv",
    "lgamma", "digamma", "cbrt")) | {P.BINARY["pow"]}
_MOVES = frozenset({P.reshape_p, P.transpose_p, P.broadcast_in_dim_p, P.slice_p})
_INDEXING = _MOVES | {P.pad_p, P.rev_p, P.concatenate_p}    # index arithmetic, no values made
_GATHERS = frozenset({P.pad_p, P.slice_p, P.concatenate_p})


def materialized_up_front(jaxpr, required, plain_operands=False):
    """Values to materialize up front around matrix products, convolutions and pooling:

    * product and convolution outputs that reach an operand of another product,
      convolution or pooling window through inlinable ops. Inlined there, a product would
      sit inside the consumer's reduction loop, recomputed on every iteration, so the
      fixpoint would materialize it anyway, one layer per round. But each round builds
      every root's whole expression tree, and in a deep network that tree reaches back
      through all layers (exponentially many index variants once residual paths rejoin):
      seeded up front, the trees stop one layer back;
    * operands of products and convolutions computed with transcendental functions
      (tanh(x @ w1 + b1) @ w2): a loader would recompute them once per output tile, so
      they get their own elementwise kernel and the product reads them as plain loads;
    * operands of convolutions that gather computed values (a relu mask times a max-pool
      gradient, which pads strided slices) and that the convolution reads more than once
      per element: its loader gathers each element once per window position (lhs) or output
      position (rhs), recomputing the whole expression and its index arithmetic each time
      (an elementwise epilogue of the previous layer, as relu(x + b), stays fused);
    * with `plain_operands` (backends whose GEMM loaders are slow on anything but plain
      strided loads, such as OpenCL on a CPU), every computed operand of a product."""
    inside, costly, computed, arith, gathers, found = {}, {}, {}, {}, {}, set()
    for e in jaxpr.eqns:
        real = [x for x in e.inputs if not isinstance(x, Literal)]
        ins = set().union(*(inside.get(x, ()) for x in real))
        if e.prim in _WINDOWED:
            found |= ins
        if e.prim in _PRODUCTS:
            found |= {x for x in real if costly.get(x) or (plain_operands and computed.get(x))}
        if e.prim is P.conv_general_dilated_p:
            lhs, rhs = e.inputs[:2]
            reuse = {lhs: math.prod(rhs.aval.shape[2:]),
                     rhs: math.prod(e.outputs[0].aval.shape[2:]) * e.outputs[0].aval.shape[0]}
            found |= {x for x in real if gathers.get(x) and reuse.get(x, 1) > 1}
        s = {e.outputs[0]} if e.prim in _PRODUCTS else (set() if e.prim in _WINDOWED else ins)
        inlined = e.prim in EXPR_RULES and e.prim not in _WINDOWED
        c = inlined and (e.prim in _COSTLY or any(costly.get(x) for x in real))
        moved = e.prim in _MOVES and bool(real) and computed.get(real[0], False)
        for o in e.outputs:
            kept = o in required or e.prim not in EXPR_RULES
            inside[o] = set() if kept else s
            costly[o] = c and not kept
            computed[o] = inlined and not kept and (e.prim not in _MOVES or moved)
            arith[o] = inlined and not kept and (e.prim not in _INDEXING or
                                                 any(arith.get(x) for x in real))
            gathers[o] = inlined and not kept and any(
                gathers.get(x) or (e.prim in _GATHERS and arith.get(x)) for x in real)
    return found


# ---------------------------------------------------------------- two-stage reductions
SPLIT_MAX_OUTPUTS = 1024     # reductions to fewer outputs than this ...
SPLIT_MIN_LENGTH = 4096      # ... over at least this many elements each are split
SPLIT_MIN_PARALLEL = 256     # outputs of the first stage, at least (when the axes allow)
SPLIT_FEW_OUTPUTS = 8        # a reduction over one axis to fewer outputs than this ...
SPLIT_MIN_AXIS = 256         # ... and at least this long is split as (L // b, b) (a loss
# or accuracy over the batch: one work item would evaluate every row's fused body serially)
_SPLITTABLE = (P.reduce_sum_p, P.reduce_max_p, P.reduce_min_p)


def split_reductions(jaxpr):
    """(jaxpr, first-stage vars): each sum/max/min over several axes to few outputs becomes a
    reduction over its trailing reduced axes (many outputs, one work item each) followed by
    one over the rest. A kernel computes each output of a reduction in one work item, so
    batch-norm statistics of an (N, C, H, W) tensor would otherwise be C work items each
    summing N*H*W terms serially; the first-stage values must be materialized."""
    eqns, staged = [], set()
    for e in jaxpr.eqns:
        split = _split_axes(e) if e.prim in _SPLITTABLE else None
        if split is None:
            eqns.append(e)
            continue
        inner, outer = split
        x = e.inputs[0]
        if len(inner) == 1 and inner == outer:      # one axis, of L = (L // b) * b terms
            (a,), shape = inner, x.aval.shape
            b = _inner_factor(shape[a])
            x = _emit(eqns, P.reshape_p, [x],
                      new_sizes=tuple(shape[:a]) + (shape[a] // b, b) + tuple(shape[a + 1:]))
            inner, outer = (a + 1,), (a,)
        shape = x.aval.shape
        mid = Var(ShapedArray([d for i, d in enumerate(shape) if i not in inner], x.aval.dtype,
                              x.aval.weak_type))
        pos = tuple(a - sum(i < a for i in inner) for a in outer)
        eqns.append(Eqn(e.prim, [x], {"axes": inner}, [mid]))
        eqns.append(Eqn(e.prim, [mid], {"axes": pos}, list(e.outputs)))
        staged.add(mid)
    if not staged:
        return jaxpr, staged
    return Jaxpr(jaxpr.constvars, jaxpr.invars, eqns, jaxpr.outvars), staged


def _split_axes(e):
    x = e.inputs[0]
    if isinstance(x, Literal):
        return None
    shape, axes = x.aval.shape, tuple(sorted(e.params["axes"]))
    outs = int(np.prod([d for i, d in enumerate(shape) if i not in axes], dtype=np.int64))
    length = int(np.prod([shape[a] for a in axes], dtype=np.int64))
    if (len(axes) == 1 and outs < SPLIT_FEW_OUTPUTS and length >= SPLIT_MIN_AXIS
            and _inner_factor(length) > 1):
        return axes, axes            # split_reductions reshapes the axis in two
    if len(axes) < 2 or outs >= SPLIT_MAX_OUTPUTS or length < SPLIT_MIN_LENGTH:
        return None
    for k in range(1, len(axes)):        # the longest inner group still giving enough outputs
        outer, inner = axes[:k], axes[k:]
        if outs * int(np.prod([shape[a] for a in outer], dtype=np.int64)) >= SPLIT_MIN_PARALLEL:
            return inner, outer
    return axes[-1:], axes[:-1]


def _inner_factor(n):
    """The smallest divisor of n at least sqrt(n), or 1 when n has none below n (a prime):
    the inner length of a split axis."""
    b = int(np.ceil(np.sqrt(n)))
    while n % b:
        b += 1
    return 1 if b == n else b


# ---------------------------------------------------------------- split-K convolutions
CONV_SPLIT_MAX_OUTPUTS = 65536      # convolutions to fewer outputs than this ...
CONV_SPLIT_PART_LENGTH = 256        # ... are split so each part still sums this many terms
CONV_SPLIT_MAX_PARTIALS = 1 << 21   # partial results held at most (elements)


def split_long_convolutions(jaxpr):
    """(jaxpr, partial-result vars): a float32 convolution with few outputs and a long
    contraction (a weight gradient: output (C, O, kh, kw), summing batch x positions)
    becomes G feature groups over slices of its input-channel axis, whose (N, G*O, ...)
    partial results a reduce_sum over G then adds: G times the parallelism, a G-th of the
    serial length per output. Only for feature_group_count 1: the kernel side needs no new
    case, the GEMM and generic paths already handle groups."""
    eqns, staged = [], set()
    for e in jaxpr.eqns:
        G = _conv_split(e) if e.prim is P.conv_general_dilated_p else 1
        if G == 1:
            eqns.append(e)
            continue
        lhs, rhs = e.inputs
        O, I, *kw = rhs.aval.shape
        nsp = len(kw)
        r = _emit(eqns, P.reshape_p, [rhs], new_sizes=(O, G, I // G, *kw))
        r = _emit(eqns, P.transpose_p, [r], permutation=(1, 0) + tuple(range(2, nsp + 3)))
        r = _emit(eqns, P.reshape_p, [r], new_sizes=(G * O, I // G, *kw))
        part = _emit(eqns, e.prim, [lhs, r], **{**e.params, "feature_group_count": G})
        N, _, *sp = part.aval.shape
        grouped = _emit(eqns, P.reshape_p, [part], new_sizes=(N, G, O, *sp))
        eqns.append(Eqn(P.reduce_sum_p, [grouped], {"axes": (1,)}, list(e.outputs)))
        staged.add(part)
    if not staged:
        return jaxpr, staged
    return Jaxpr(jaxpr.constvars, jaxpr.invars, eqns, jaxpr.outvars), staged


def _conv_split(e):
    """The number of parts G for conv eqn `e` (1: leave it alone)."""
    p, out = e.params, e.outputs[0].aval
    lhs, rhs = e.inputs
    if (p.get("feature_group_count", 1) != 1 or p.get("batch_group_count", 1) != 1
            or out.dtype != np.float32 or isinstance(lhs, Literal) or isinstance(rhs, Literal)):
        return 1
    O, I, *kw = rhs.aval.shape
    length = I * int(np.prod(kw, dtype=np.int64))
    if out.size >= CONV_SPLIT_MAX_OUTPUTS or length < 2 * CONV_SPLIT_PART_LENGTH:
        return 1
    return max(G for G in range(1, I + 1) if I % G == 0 and (
        G == 1 or (length // G >= CONV_SPLIT_PART_LENGTH
                   and out.size * G <= CONV_SPLIT_MAX_PARTIALS)))


def _emit(eqns, prim, inputs, **params):
    out = Var(abstract_eval_rules[prim](*[x.aval for x in inputs], **params)[0])
    eqns.append(Eqn(prim, list(inputs), params, [out]))
    return out


def _roots(jaxpr, mat, defs):
    """Materialized vars that a kernel computes, in program order."""
    out = []
    for e in jaxpr.eqns:
        for o in e.outputs:
            if o in mat and e.prim in EXPR_RULES and o in defs:
                out.append(o)
    return out


def build_kernel(b, plans, slots, name):
    """One kernel storing every root of `plans` (all of one shape and split)."""
    shape, k = plans[0].var.aval.shape, plans[0].k
    par_shape, ser_shape = shape[:k], shape[k:]
    g = ir.loop_var(int(np.prod(par_shape, dtype=np.int64)), "g")
    par_idx = ir.unflatten(g, par_shape)
    ser = ()
    ser_idx = ()
    if ser_shape:
        s = ir.loop_var(int(np.prod(ser_shape, dtype=np.int64)), "s")
        ser, ser_idx = (s,), ir.unflatten(s, ser_shape)
    idx = tuple(par_idx) + tuple(ser_idx)
    stores, prims = [], []
    for p in plans:
        val = b.build_root(p.var, idx)
        prims += [n for n in b.prims if n not in prims]
        stores.append(ir.Store(slots[p.var], ir.flatten(idx, shape), val))
    nm = name + "_" + "_".join(prims[:3])
    return ir.Kernel(nm, (g,), ser, stores), prims


# ---------------------------------------------------------------- matrix products
# A kernel whose only reduction is a dot_general at the kernel's own output index becomes
# a tiled GEMM (ir.GemmSpec) when the product is big enough; smaller or odd ones keep the
# generic one-output-per-work-item loop.
GEMM_MIN_FLOPS = 2 * 32768      # 2*M*N*K*batch below this: not worth the tiles
GEMM_MIN_DIM = 16               # M and N at least this, K at least GEMM_MIN_DIM // 2
_INT32_MAX = 2**31 - 1


def _gemm_dtypes():
    from ..tracer import dtypes
    return {np.dtype(np.float32), dtypes.float16, dtypes.bfloat16}


def plan_gemm(defs, slots, root, precision="highest"):
    """A GemmSpec computing materialized value `root`, or None when `root` is not a
    matrix product with an elementwise epilogue (or is too small or odd for tiles)."""
    if not root.aval.shape or root.aval.size == 0:
        return None
    b = Builder(defs, slots)
    dom = tuple(ir.loop_var(d, "i") for d in root.aval.shape)
    tree = b.build_root(root, dom)
    reds = [e for e in walk([tree]) if e.op == "reduce"]
    if len(reds) != 1 or reds[0] not in b.owner:
        return None
    dot = b.owner[reds[0]]
    eqn = defs[dot][0]
    if eqn.prim not in (P.dot_general_p, P.conv_general_dilated_p) or dot.aval.shape != root.aval.shape:
        return None
    lhs, rhs = eqn.inputs
    if isinstance(lhs, Literal) or isinstance(rhs, Literal):
        return None
    acc = _acc_dtype(lhs.aval.dtype, eqn.params.get("preferred_element_type"))
    ok = _gemm_dtypes()
    if acc != np.float32 or lhs.aval.dtype not in ok or rhs.aval.dtype not in ok:
        return None
    g = Builder(defs, slots)
    plan = (_dot_as_gemm if eqn.prim is P.dot_general_p else _conv_as_gemm)(g, eqn)
    if plan is None:
        return None
    (Bt, M, N, K), (bv, mv, nv, kv), a_expr, b_expr, out_idx = plan
    if (min(M, N) < GEMM_MIN_DIM or K < GEMM_MIN_DIM // 2 or 2 * Bt * M * N * K < GEMM_MIN_FLOPS
            or max(Bt * M * N, Bt * M * K, Bt * K * N, lhs.aval.size, rhs.aval.size,
                   root.aval.size) > _INT32_MAX):
        return None
    if a_expr.has_reduce or b_expr.has_reduce:
        return None
    accn = ir.gemm_acc(acc)
    g.memo[(dot, out_idx)] = ir.alu("cast", dot.aval.dtype, accn)
    epi = g.build_root(root, out_idx)
    if epi.has_reduce or accn not in walk([epi]):
        return None
    store = ir.Store(slots[root], ir.flatten(out_idx, root.aval.shape), epi)
    return ir.GemmSpec(Bt, M, N, K, bv, mv, nv, kv, _operand(a_expr, (bv, mv, kv)),
                       _operand(b_expr, (bv, kv, nv)), accn, acc, [store], precision)


def _gemm_vars(Bt, M, N, K):
    return tuple(ir.loop_var(n, p) for n, p in ((Bt, "b"), (M, "m"), (N, "n"), (K, "k")))


def _dot_as_gemm(g, eqn):
    """dot_general: batch dims -> b, lhs free -> m, rhs free -> n, contracted -> k."""
    lhs, rhs = eqn.inputs
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    ls, rs = lhs.aval.shape, rhs.aval.shape
    lf = [i for i in range(len(ls)) if i not in lc and i not in lb]
    rf = [i for i in range(len(rs)) if i not in rc and i not in rb]
    prod = lambda dims, shape: int(np.prod([shape[i] for i in dims], dtype=np.int64))
    sizes = Bt, M, N, K = prod(lb, ls), prod(lf, ls), prod(rf, rs), prod(lc, ls)
    if min(sizes) < 1:
        return None
    vs = bv, mv, nv, kv = _gemm_vars(*sizes)
    bi = ir.unflatten(bv, [ls[i] for i in lb])
    mi = ir.unflatten(mv, [ls[i] for i in lf])
    ni = ir.unflatten(nv, [rs[i] for i in rf])
    ki = ir.unflatten(kv, [ls[i] for i in lc])
    li, ri = [None] * len(ls), [None] * len(rs)
    for j, (a, c) in enumerate(zip(lb, rb)):
        li[a] = ri[c] = bi[j]
    for j, a in enumerate(lf):
        li[a] = mi[j]
    for j, a in enumerate(rf):
        ri[a] = ni[j]
    for j, (a, c) in enumerate(zip(lc, rc)):
        li[a] = ri[c] = ki[j]
    return (sizes, vs, g.value(lhs, tuple(li)), g.value(rhs, tuple(ri)),
            tuple(bi) + tuple(mi) + tuple(ni))


def _conv_as_gemm(g, eqn):
    """conv_general_dilated (NCHW-style, batch_group_count 1) as an implicit GEMM per
    feature group b: C[m = output channel in the group, n = (image, output position)]
    = sum over k = (input channel, window offset) of W[m, k] * X(k, n), where X reads the
    input through the padding/stride/dilation arithmetic of exprs._conv (zero outside)."""
    from .exprs import _all, _dilated_source
    lhs, rhs = eqn.inputs
    p = eqn.params
    gc, bg = p.get("feature_group_count", 1), p.get("batch_group_count", 1)
    if bg != 1:
        return None
    Nb, C, *S = lhs.aval.shape
    O, I, *Kw = rhs.aval.shape
    P_ = eqn.outputs[0].aval.shape[2:]
    og = O // gc
    KK = int(np.prod(Kw, dtype=np.int64))
    sizes = (gc, og, Nb * int(np.prod(P_, dtype=np.int64)), I * KK)
    if min(sizes) < 1:
        return None
    vs = bv, mv, nv, kv = _gemm_vars(*sizes)
    ci, *ks = ir.unflatten(kv, (I,) + tuple(Kw))
    nb, *pos = ir.unflatten(nv, (Nb,) + tuple(P_))
    oc = ir.iadd(ir.imul(bv, og), mv)
    w = g.value(rhs, (oc, ci) + tuple(ks))
    valid, src = [], []
    for q, kvv, s, st, (lo, _), ld, rd in zip(pos, ks, S, p["window_strides"], p["padding"],
                                               p["lhs_dilation"], p["rhs_dilation"]):
        v, si = _dilated_source(ir.iadd(ir.imul(q, st), ir.imul(kvv, rd), -lo), s, ld)
        valid.append(v)
        src.append(si)
    x = g.value(lhs, (nb, ir.iadd(ir.imul(bv, I), ci)) + tuple(src))
    x = ir.alu("where", x.dtype, _all(valid), x, ir.const(0, x.dtype))
    return sizes, vs, w, x, (nb, oc) + tuple(pos)


def _operand(e, vars_):
    plain = None
    if e.op == "load":
        aff = ir.affine(e.args[0], vars_)
        if aff is not None:
            plain = (e.arg, aff[0], *aff[1])
    return ir.GemmOperand(e, e.dtype, plain)
