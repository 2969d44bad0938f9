"""Stage table: how each primitive's output element at a multi-index is computed.

`EXPR_RULES[prim](b, eqn, out_i, idx) -> Expr` gives output `out_i` of `eqn` at the
multi-index `idx` (a tuple of index Exprs), in terms of `b.value(var, idx)` of its
inputs. Movement ops only rewrite the index, so they cost nothing at run time;
reductions, dot_general, conv and reduce_window become `reduce` nodes (loops with an
accumulator), so whatever consumes them fuses with them. Semantics follow the numpy
backend's impl_rules exactly (clamping of gather and dynamic_slice indices, small
floats computed in float32, ...).
"""
from __future__ import annotations

import numpy as np

from ..tracer import dtypes, primitives as P
from . import ir
from .ir import BOOL, INDEX, alu, const, iadd, idiv, imod, imul, in_range

EXPR_RULES: dict = {}
F32 = np.dtype(np.float32)


def _small(dt):
    return dt in (dtypes.float16, dtypes.bfloat16)


def _operand(b, x, idx):
    """An elementwise operand: rank-0 values broadcast (the shape rules allow mixing)."""
    return b.value(x, () if x.aval.shape == () else idx)


def _elementwise(op):
    def rule(b, eqn, out_i, idx):
        dt = eqn.outputs[0].aval.dtype
        return alu(op, dt, *[_operand(b, x, idx) for x in eqn.inputs])
    return rule


for _n, _p in {**P.UNARY, **P.BINARY, **P.COMPARE}.items():
    EXPR_RULES[_p] = _elementwise(_n)


def _integer_pow(b, eqn, out_i, idx):
    x = b.value(eqn.inputs[0], idx)
    return alu("ipow", x.dtype, x, const(eqn.params["y"]))


def _select_n(b, eqn, out_i, idx):
    which, *cases = [_operand(b, x, idx) for x in eqn.inputs]
    dt = eqn.outputs[0].aval.dtype
    if which.dtype == BOOL:
        return alu("where", dt, which, cases[1], cases[0]) if len(cases) == 2 else cases[0]
    out = cases[-1]
    for k in range(len(cases) - 2, -1, -1):
        out = alu("where", dt, alu("le", BOOL, which, const(k, which.dtype)), cases[k], out)
    return out


if "stop_gradient" in P.UNARY:     # the identity once differentiation is done
    EXPR_RULES[P.UNARY["stop_gradient"]] = lambda b, eqn, o, idx: b.value(eqn.inputs[0], idx)
EXPR_RULES[P.integer_pow_p] = _integer_pow
EXPR_RULES[P.select_n_p] = _select_n
EXPR_RULES[P.convert_element_type_p] = lambda b, eqn, o, idx: alu(
    "cast", eqn.outputs[0].aval.dtype, b.value(eqn.inputs[0], idx))
EXPR_RULES[P.bitcast_convert_type_p] = lambda b, eqn, o, idx: alu(
    "bitcast", eqn.outputs[0].aval.dtype, b.value(eqn.inputs[0], idx))
EXPR_RULES[P.iota_p] = lambda b, eqn, o, idx: alu(
    "cast", eqn.outputs[0].aval.dtype, idx[eqn.params["dimension"]])


# ---------------------------------------------------------------- movement: index arithmetic only
def _broadcast_in_dim(b, eqn, o, idx):
    x = eqn.inputs[0]
    dims = eqn.params["broadcast_dimensions"]
    return b.value(x, tuple(idx[d] if n != 1 else const(0) for n, d in zip(x.aval.shape, dims)))


def _reshape(b, eqn, o, idx):
    x = eqn.inputs[0]
    flat = ir.flatten(idx, eqn.outputs[0].aval.shape)
    return b.value(x, ir.unflatten(flat, x.aval.shape))


def _transpose(b, eqn, o, idx):
    perm = eqn.params["permutation"]
    xi = [None] * len(perm)
    for i, p in enumerate(perm):
        xi[p] = idx[i]
    return b.value(eqn.inputs[0], tuple(xi))


def _rev(b, eqn, o, idx):
    x = eqn.inputs[0]
    dims = eqn.params["dimensions"]
    return b.value(x, tuple(iadd(n - 1, imul(i, -1)) if d in dims else i
                            for d, (i, n) in enumerate(zip(idx, x.aval.shape))))


def _slice(b, eqn, o, idx):
    p = eqn.params
    return b.value(eqn.inputs[0], tuple(iadd(s, imul(i, st)) for i, s, st in
                                        zip(idx, p["start_indices"], p["strides"])))


def _clamp(e, lo, hi):
    """Index e clamped into [lo, hi] (folded when its bounds already fit)."""
    if e.lo is not None and lo <= e.lo and e.hi <= hi:
        return e
    return alu("min", INDEX, alu("max", INDEX, e, const(lo)), const(hi))


def _dyn_starts(b, starts, shape, sizes):
    return [_clamp(alu("cast", INDEX, b.value(s, ())), 0, max(d - z, 0))
            for s, d, z in zip(starts, shape, sizes)]


def _dynamic_slice(b, eqn, o, idx):
    x, *starts = eqn.inputs
    st = _dyn_starts(b, starts, x.aval.shape, eqn.params["slice_sizes"])
    return b.value(x, tuple(iadd(s, i) for s, i in zip(st, idx)))


def _all(conds):
    out = const(True, BOOL)
    for c in conds:
        out = c if out.op == "const" and out.arg else alu("and", BOOL, out, c)
    return out


def _dynamic_update_slice(b, eqn, o, idx):
    x, upd, *starts = eqn.inputs
    st = _dyn_starts(b, starts, x.aval.shape, upd.aval.shape)
    rel = [iadd(i, imul(s, -1)) for i, s in zip(idx, st)]
    inside = _all(in_range(r, 0, n) for r, n in zip(rel, upd.aval.shape))
    safe = tuple(_clamp(r, 0, max(n - 1, 0)) for r, n in zip(rel, upd.aval.shape))
    return alu("where", x.aval.dtype, inside, b.value(upd, safe), b.value(x, idx))


def _dilated_source(q, n, step):
    """For position q of an input of length n dilated by `step` (and shifted), the
    (valid, source index) pair; the index is clamped so loads stay in bounds."""
    span = (n - 1) * step
    qc = _clamp(q, 0, max(span, 0))
    conds = [in_range(q, 0, span + 1)] if n else [const(False, BOOL)]
    if step > 1:
        conds.append(alu("eq", BOOL, imod(qc, step), const(0)))
    return _all(conds), idiv(qc, step)


def _pad(b, eqn, o, idx):
    x, padval = eqn.inputs
    valid, src = [], []
    for i, n, (lo, _, interior) in zip(idx, x.aval.shape, eqn.params["padding_config"]):
        v, s = _dilated_source(iadd(i, -lo), n, interior + 1)
        valid.append(v)
        src.append(s)
    if x.aval.size == 0:
        return b.value(padval, ())
    return alu("where", x.aval.dtype, _all(valid), b.value(x, tuple(src)), b.value(padval, ()))


def _concatenate(b, eqn, o, idx):
    d = eqn.params["dimension"]
    parts, off = [], 0
    for x in eqn.inputs:
        n = x.aval.shape[d]
        if n:
            parts.append((off, x))
        off += n
    dt = eqn.outputs[0].aval.dtype
    out = None
    for start, x in reversed(parts):
        n = x.aval.shape[d]
        local = list(idx)
        local[d] = _clamp(iadd(idx[d], -start), 0, n - 1)
        val = b.value(x, tuple(local))
        out = val if out is None else alu("where", dt, alu("lt", BOOL, idx[d], const(start + n)),
                                          val, out)
    return const(0, dt) if out is None else out     # every operand empty: so is the result


def _gather(b, eqn, o, idx):
    x, ind = eqn.inputs
    bd = eqn.params.get("batch_dims", 0)
    k = ind.aval.shape[-1]
    lead, rest = idx[:ind.aval.ndim - 1], idx[ind.aval.ndim - 1:]
    picks = [_clamp(alu("cast", INDEX, b.value(ind, tuple(lead) + (const(j),))), 0,
                    max(x.aval.shape[bd + j] - 1, 0)) for j in range(k)]
    return b.value(x, tuple(lead[:bd]) + tuple(picks) + tuple(rest))


EXPR_RULES.update({
    P.broadcast_in_dim_p: _broadcast_in_dim, P.reshape_p: _reshape, P.transpose_p: _transpose,
    P.rev_p: _rev, P.slice_p: _slice, P.dynamic_slice_p: _dynamic_slice,
    P.dynamic_update_slice_p: _dynamic_update_slice, P.pad_p: _pad,
    P.concatenate_p: _concatenate, P.gather_p: _gather,
})


# ---------------------------------------------------------------- reductions
def _insert_loops(idx, axes, shape):
    """The operand index of a reduction: output index with fresh loop vars at `axes`."""
    it, loops, full = iter(idx), [], []
    for d in range(len(shape)):
        if d in axes:
            v = ir.loop_var(shape[d])
            loops.append(v)
            full.append(v)
        else:
            full.append(next(it))
    return tuple(full), loops


def _reduce(kind):
    def rule(b, eqn, o, idx):
        x = eqn.inputs[0]
        full, loops = _insert_loops(idx, eqn.params["axes"], x.aval.shape)
        body = b.value(x, full)
        dt = x.aval.dtype
        if _small(dt):      # accumulate half floats in float32, round once (as numpy does)
            return alu("cast", dt, b.reduce(kind, loops, alu("cast", F32, body), eqn.outputs[0]))
        return b.reduce(kind, loops, body, eqn.outputs[0])
    return rule


for _n, _p in P.REDUCES.items():
    EXPR_RULES[_p] = _reduce(_n[len("reduce_"):])


def _arg(kind):
    def rule(b, eqn, o, idx):
        x = eqn.inputs[0]
        full, loops = _insert_loops(idx, (eqn.params["axis"],), x.aval.shape)
        body = b.value(x, full)
        if _small(x.aval.dtype):
            body = alu("cast", F32, body)
        return b.reduce(kind, loops, body, eqn.outputs[0], dtype=eqn.outputs[0].aval.dtype)
    return rule


EXPR_RULES[P.argmax_p] = _arg("argmax")
EXPR_RULES[P.argmin_p] = _arg("argmin")

# Cumulative ops as masked reductions: element i folds x[j] for j <= i in order, exactly
# numpy's sequential result. Quadratic work, so long axes go to the host instead.
CUMULATIVE_MAX_AXIS = 2048


def _cumulative(kind):
    def rule(b, eqn, o, idx):
        x = eqn.inputs[0]
        ax, rev = eqn.params["axis"], eqn.params.get("reverse", False)
        n = x.aval.shape[ax]
        j = ir.loop_var(n)
        dt = x.aval.dtype
        cdt = F32 if _small(dt) else dt
        jj = iadd(n - 1, imul(j, -1)) if rev else j     # reverse: fold from the end
        full = tuple(jj if d == ax else i for d, i in enumerate(idx))
        keep = alu("ge" if rev else "le", BOOL, jj, idx[ax])
        ident = {"sum": 0, "prod": 1, "max": _lowest(cdt), "min": _highest(cdt)}[kind]
        body = alu("where", cdt, keep, alu("cast", cdt, b.value(x, full)), const(ident, cdt))
        return alu("cast", dt, b.reduce(kind, [j], body, eqn.outputs[0]))
    return rule


def _lowest(dt):
    return -np.inf if dtypes.is_float(dt) else (False if dt == BOOL else np.iinfo(dt).min)


def _highest(dt):
    return np.inf if dtypes.is_float(dt) else (True if dt == BOOL else np.iinfo(dt).max)


for _n, _p in P.CUMULATIVES.items():
    EXPR_RULES[_p] = _cumulative(_n[len("cum"):])


def _acc_dtype(dt, preferred):
    if preferred is not None:
        return np.dtype(preferred)
    return F32 if _small(dt) else dt


def _dot_general(b, eqn, o, idx):
    lhs, rhs = eqn.inputs
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    pref = eqn.params.get("preferred_element_type")
    acc = _acc_dtype(lhs.aval.dtype, pref)
    lf = [i for i in range(lhs.aval.ndim) if i not in lc and i not in lb]
    rf = [i for i in range(rhs.aval.ndim) if i not in rc and i not in rb]
    it = iter(idx)
    li, ri = [None] * lhs.aval.ndim, [None] * rhs.aval.ndim
    for a, c in zip(lb, rb):
        li[a] = ri[c] = next(it)
    for a in lf:
        li[a] = next(it)
    for a in rf:
        ri[a] = next(it)
    loops = []
    for a, c in zip(lc, rc):
        v = ir.loop_var(lhs.aval.shape[a])
        li[a] = ri[c] = v
        loops.append(v)
    prod = alu("mul", acc, alu("cast", acc, b.value(lhs, tuple(li))),
               alu("cast", acc, b.value(rhs, tuple(ri))))
    return alu("cast", eqn.outputs[0].aval.dtype, b.reduce("sum", loops, prod, eqn.outputs[0]))


def _conv(b, eqn, o, idx):
    lhs, rhs = eqn.inputs
    p = eqn.params
    g, bg = p.get("feature_group_count", 1), p.get("batch_group_count", 1)
    acc = _acc_dtype(lhs.aval.dtype, p.get("preferred_element_type"))
    N, C, *S = lhs.aval.shape
    O, I, *K = rhs.aval.shape
    og = O // (g * bg)
    n, oc, *pos = idx
    grp = idiv(oc, og)                        # = bgi * g + gi
    bgi, gi = idiv(grp, g), imod(grp, g)
    ci = ir.loop_var(I)
    ks = [ir.loop_var(k) for k in K]
    valid, src = [], []
    for q, kv, s, st, (lo, _), ld, rd in zip(pos, ks, S, p["window_strides"], p["padding"],
                                              p["lhs_dilation"], p["rhs_dilation"]):
        v, si = _dilated_source(iadd(imul(q, st), imul(kv, rd), -lo), s, ld)
        valid.append(v)
        src.append(si)
    x = b.value(lhs, (iadd(imul(bgi, N // bg), n), iadd(imul(gi, I), ci)) + tuple(src))
    w = b.value(rhs, (oc, ci) + tuple(ks))
    term = alu("mul", acc, alu("cast", acc, x), alu("cast", acc, w))
    term = alu("where", acc, _all(valid), term, const(0, acc))
    return alu("cast", eqn.outputs[0].aval.dtype,
               b.reduce("sum", [ci] + ks, term, eqn.outputs[0]))


EXPR_RULES[P.dot_general_p] = _dot_general
EXPR_RULES[P.conv_general_dilated_p] = _conv


def _reduce_window(kind, init):
    def rule(b, eqn, o, idx):
        x = eqn.inputs[0]
        p = eqn.params
        nd = x.aval.ndim
        bdil = p.get("base_dilation") or (1,) * nd
        wdil = p.get("window_dilation") or (1,) * nd
        dt = x.aval.dtype
        cdt = F32 if _small(dt) else dt
        ks = [ir.loop_var(k) for k in p["window_dimensions"]]
        valid, src = [], []
        for q, kv, n, st, (lo, _), bd, wd in zip(idx, ks, x.aval.shape, p["window_strides"],
                                                  p["padding"], bdil, wdil):
            v, s = _dilated_source(iadd(imul(q, st), imul(kv, wd), -lo), n, bd)
            valid.append(v)
            src.append(s)
        val = alu("cast", cdt, b.value(x, tuple(src)))
        body = alu("where", cdt, _all(valid), val, const(init(cdt), cdt))
        return alu("cast", dt, b.reduce(kind, ks, body, eqn.outputs[0]))
    return rule


EXPR_RULES[P.reduce_window_sum_p] = _reduce_window("sum", lambda dt: 0)
EXPR_RULES[P.reduce_window_max_p] = _reduce_window("max", _lowest)
EXPR_RULES[P.reduce_window_min_p] = _reduce_window("min", _highest)


def _threefry(b, eqn, o, idx):
    args = [_operand(b, x, idx) for x in eqn.inputs]
    return ir.node("alu", dtypes.uint32, f"threefry{o}", tuple(args))


EXPR_RULES[P.threefry2x32_p] = _threefry

# Primitives whose rule builds a `reduce` node: consumers may fuse with them, but the
# fusion pass checks the reduction is not recomputed by several work items.
REDUCING = ({P.argmax_p, P.argmin_p, P.dot_general_p, P.conv_general_dilated_p}
            | set(P.REDUCES.values()) | set(P.CUMULATIVES.values())
            | set(P.REDUCE_WINDOWS.values()))
