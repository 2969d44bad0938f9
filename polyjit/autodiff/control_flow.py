"""JVP, partial-evaluation and transpose rules of cond, scan and while.

The rules re-enter the user-level `lax.switch` / `lax.scan` / `lax.while_loop` with Python
bodies that interpret the original sub-jaxprs under the transformation, so each
transformed body is traced (and closure-converted) by the same code as user bodies.
"""
from __future__ import annotations

from .. import lax
from ..tracer import primitives as P
from ..tracer.core import Eqn, Jaxpr, ShapedArray, Var
from ..tracer.staging import dce_jaxpr, eval_jaxpr
from .ad_util import Zero, instantiate
from .jvp import jvp_flat, jvp_jaxpr, jvp_rules
from .partial_eval import partial_eval_jaxpr, partial_eval_rules
from .transpose import UndefPrimal, backward_pass, is_undef, transpose_rules


def _nz(ts):
    return [not isinstance(t, Zero) for t in ts]


def _or(a, b):
    return [x or y for x, y in zip(a, b)]


def _jvp_of(jaxpr, primals, tangents, inst):
    """Interpret jaxpr under JVP; tangents out instantiated where `inst`, else None."""
    p, t = jvp_flat(lambda *a: eval_jaxpr(jaxpr, [], a), primals, tangents)
    return p, [instantiate(x) if i else None for x, i in zip(t, inst)]


def _fill(tangents, nz, avals):
    """Tangents for the inputs marked nonzero (zeros where symbolic), Zero elsewhere."""
    return [instantiate(t) if z else Zero(a.strip_weak_type()) for t, z, a in zip(tangents, nz, avals)]


# ---------------------------------------------------------------- cond
def _cond_jvp(primals, tangents, *, branches):
    index, *ops = primals
    nz = _nz(tangents[1:])
    out_nz = [False] * len(branches[0].outvars)
    for b in branches:
        out_nz = _or(out_nz, jvp_jaxpr(b, nz, False)[2])
    avals = branches[0].in_avals
    t_in = [t for t, z in zip(tangents[1:], nz) if z]

    def branch(b):
        def f(ops, t_in):
            it = iter(t_in)
            ts = [next(it) if z else Zero(a.strip_weak_type()) for z, a in zip(nz, avals)]
            p, t = _jvp_of(b, list(ops), ts, out_nz)
            return p, [x for x in t if x is not None]
        return f
    p_out, t_out = lax.switch(index, [branch(b) for b in branches], ops, t_in)
    it = iter(t_out)
    return p_out, [next(it) if z else Zero(a.strip_weak_type())
                   for z, a in zip(out_nz, branches[0].out_avals)]


def _cond_partial_eval(eqn, uk):
    if uk[0]:
        return None, eqn, [True] * len(eqn.outputs)   # unknown index: all of it waits
    branches, ops_uk = eqn.params["branches"], uk[1:]
    out_uk = [False] * len(eqn.outputs)
    while True:
        splits = [partial_eval_jaxpr(b, ops_uk, out_uk) for b in branches]
        new = out_uk
        for s in splits:
            new = _or(new, s[2])
        if new == out_uk:
            break
        out_uk = new
    n_known_out = out_uk.count(False)
    res_avals = [[v.aval for v in s[0].outvars[n_known_out:]] for s in splits]
    known_branches, unknown_branches = [], []
    for i, (k, u, _, nres) in enumerate(splits):
        before = [Var(a) for rs in res_avals[:i] for a in rs]
        after = [Var(a) for rs in res_avals[i + 1:] for a in rs]
        zero_eqns, zb, za = [], [], []
        for vs, dst in ((before, zb), (after, za)):
            for v in vs:
                out = Var(v.aval)
                zero_eqns.append(_zeros_eqn(v.aval, out))
                dst.append(out)
        res = k.outvars[n_known_out:]
        known_branches.append(Jaxpr([], k.invars, k.eqns + zero_eqns,
                                    k.outvars[:n_known_out] + zb + res + za))
        unknown_branches.append(Jaxpr([], before + u.invars[:nres] + after + u.invars[nres:],
                                      u.eqns, u.outvars))
    res_vars = [Var(a) for rs in res_avals for a in rs]
    index, ops = eqn.inputs[0], eqn.inputs[1:]
    known_ops = [x for x, u in zip(ops, ops_uk) if not u]
    unknown_ops = [x for x, u in zip(ops, ops_uk) if u]
    outs_k = [v for v, u in zip(eqn.outputs, out_uk) if not u]
    outs_u = [v for v, u in zip(eqn.outputs, out_uk) if u]
    k_eqn = Eqn(P.cond_p, [index] + known_ops, {"branches": tuple(known_branches)},
                outs_k + res_vars)
    u_eqn = Eqn(P.cond_p, [index] + res_vars + unknown_ops,
                {"branches": tuple(unknown_branches)}, outs_u)
    return k_eqn, u_eqn, out_uk


def _zeros_eqn(aval, out):
    from ..tracer.core import Literal
    zero = Literal(0, ShapedArray((), aval.dtype))
    return Eqn(P.broadcast_in_dim_p, [zero],
               {"shape": tuple(aval.shape), "broadcast_dimensions": ()}, [out])


def _cond_transpose(cts, index, *ops, branches):
    lin = [is_undef(x) for x in ops]
    nonlin = [x for x in ops if not is_undef(x)]
    cts = [instantiate(c) for c in cts]

    def branch(b):
        def f(nonlin, cts):
            it = iter(nonlin)
            args = [UndefPrimal(a) if l else next(it) for l, a in zip(lin, b.in_avals)]
            out = backward_pass(b, args, list(cts))
            return [instantiate(c) for c, l in zip(out, lin) if l]
        return f
    it = iter(lax.switch(index, [branch(b) for b in branches], nonlin, cts))
    return [None] + [next(it) if l else None for l in lin]


jvp_rules[P.cond_p] = _cond_jvp
partial_eval_rules[P.cond_p] = _cond_partial_eval
transpose_rules[P.cond_p] = _cond_transpose


# ---------------------------------------------------------------- scan
def _split3(seq, a, b):
    return list(seq[:a]), list(seq[a:a + b]), list(seq[a + b:])


def _scan_jvp(primals, tangents, *, jaxpr, length, reverse, num_consts, num_carry):
    nz = _nz(tangents)
    nz_c, nz_carry, nz_x = _split3(nz, num_consts, num_carry)
    while True:      # a carry's tangent is non-zero if it becomes so after any step
        out_nz = jvp_jaxpr(jaxpr, nz_c + nz_carry + nz_x, False)[2]
        new = _or(nz_carry, out_nz[:num_carry])
        if new == nz_carry:
            break
        nz_carry = new
    ys_nz = out_nz[num_carry:]
    consts, carry, xs = _split3(primals, num_consts, num_carry)
    avals = jaxpr.in_avals
    t_consts = _fill(tangents[:num_consts], nz_c, avals[:num_consts])
    t_carry = [instantiate(t) if not isinstance(t, Zero) else lax.full(a.shape, 0, a.dtype)
               for t, z, a in zip(tangents[num_consts:num_consts + num_carry], nz_carry,
                                  avals[num_consts:]) if z]
    t_xs = [t for t, z in zip(tangents[num_consts + num_carry:], nz_x) if z]
    carry_avals = avals[num_consts:num_consts + num_carry]
    x_avals = avals[num_consts + num_carry:]

    def body(c, x):
        (cp, ct), (xp, xt) = c, x
        ict, ixt = iter(ct), iter(xt)
        tc = [next(ict) if z else Zero(a.strip_weak_type()) for z, a in zip(nz_carry, carry_avals)]
        tx = [next(ixt) if z else Zero(a.strip_weak_type()) for z, a in zip(nz_x, x_avals)]
        p, t = _jvp_of(jaxpr, consts + list(cp) + list(xp), t_consts + tc + tx, nz_carry + ys_nz)
        return ((p[:num_carry], [v for v in t[:num_carry] if v is not None]),
                (p[num_carry:], [v for v in t[num_carry:] if v is not None]))
    (c_p, c_t), (y_p, y_t) = lax.scan(body, (carry, t_carry), (xs, t_xs), length=length,
                                      reverse=reverse)
    ic, iy = iter(c_t), iter(y_t)
    out_avals = jaxpr.out_avals
    t_out = [next(ic) if z else Zero(a.strip_weak_type()) for z, a in zip(nz_carry, out_avals[:num_carry])]
    t_out += [next(iy) if z else Zero(ShapedArray((length,) + a.shape, a.dtype))
              for z, a in zip(ys_nz, out_avals[num_carry:])]
    return list(c_p) + list(y_p), t_out


def _scan_partial_eval(eqn, uk):
    p = eqn.params
    jaxpr, nc, ncar, length = p["jaxpr"], p["num_consts"], p["num_carry"], p["length"]
    uk_c, uk_carry, uk_x = _split3(uk, nc, ncar)
    while True:
        k, u, out_uk, nres = partial_eval_jaxpr(jaxpr, uk_c + uk_carry + uk_x,
                                                uk_carry + [False] * (len(jaxpr.outvars) - ncar))
        new = _or(uk_carry, out_uk[:ncar])
        if new == uk_carry:
            break
        uk_carry = new
    ys_uk = out_uk[ncar:]
    consts, carry, xs = _split3(eqn.inputs, nc, ncar)
    body_consts = jaxpr.invars[:nc]
    n_known_out = out_uk.count(False)
    res = k.outvars[n_known_out:]
    known_const_vars = [v for v, u in zip(body_consts, uk_c) if not u]
    outer_of = dict(zip(body_consts, consts))
    invariant = [r for r in res if r in known_const_vars]       # loop-invariant: pass as consts
    per_iter = [r for r in res if r not in known_const_vars]   # stacked as extra ys
    k_body = Jaxpr([], k.invars, k.eqns, k.outvars[:n_known_out] + per_iter)
    stacked = [Var(ShapedArray((length,) + r.aval.shape, r.aval.dtype)) for r in per_iter]
    sel = lambda seq, flags, want: [x for x, f in zip(seq, flags) if f == want]
    k_eqn = Eqn(P.scan_p, sel(consts, uk_c, False) + sel(carry, uk_carry, False) + sel(xs, uk_x, False),
                dict(p, jaxpr=k_body, num_consts=uk_c.count(False), num_carry=uk_carry.count(False)),
                sel(eqn.outputs[:ncar], uk_carry, False) + sel(eqn.outputs[ncar:], ys_uk, False) + stacked)
    # the unknown body takes (invariant res, unknown consts; unknown carry; per-iter res, unknown xs)
    res_in, rest = u.invars[:nres], u.invars[nres:]
    r_inv = [v for v, r in zip(res_in, res) if r in invariant]
    r_it = [v for v, r in zip(res_in, res) if r not in invariant]
    n_uc, n_ucar = uk_c.count(True), uk_carry.count(True)
    u_c, u_car, u_x = _split3(rest, n_uc, n_ucar)
    u_body = Jaxpr([], r_inv + u_c + u_car + r_it + u_x, u.eqns, u.outvars)
    u_eqn = Eqn(P.scan_p, [outer_of[r] for r in invariant] + sel(consts, uk_c, True)
                + sel(carry, uk_carry, True) + stacked + sel(xs, uk_x, True),
                dict(p, jaxpr=u_body, num_consts=len(r_inv) + n_uc, num_carry=n_ucar),
                sel(eqn.outputs[:ncar], uk_carry, True) + sel(eqn.outputs[ncar:], ys_uk, True))
    return k_eqn, u_eqn, uk_carry + ys_uk


def _scan_transpose(cts, *args, jaxpr, length, reverse, num_consts, num_carry):
    consts, carry, xs = _split3(args, num_consts, num_carry)
    lin_c = [is_undef(c) for c in consts]
    lin_x = [is_undef(x) for x in xs]
    nonlin_c = [c for c in consts if not is_undef(c)]
    nonlin_x = [x for x in xs if not is_undef(x)]
    avals = jaxpr.in_avals
    c_avals, carry_avals, x_avals = _split3(avals, num_consts, num_carry)
    ct_carry = [instantiate(c) for c in cts[:num_carry]]
    ct_ys = [instantiate(c) for c in cts[num_carry:]]
    acc0 = [lax.full(a.shape, 0, a.dtype) for a, l in zip(c_avals, lin_c) if l]

    def body(c, x):
        acc, ct_c = c
        res_x, ct_y = x
        ic, ix = iter(nonlin_c), iter(res_x)
        invals = ([UndefPrimal(a) if l else next(ic) for a, l in zip(c_avals, lin_c)]
                  + [UndefPrimal(a) for a in carry_avals]
                  + [UndefPrimal(a) if l else next(ix) for a, l in zip(x_avals, lin_x)])
        out = backward_pass(jaxpr, invals, list(ct_c) + list(ct_y))
        o_c, o_car, o_x = _split3(out, num_consts, num_carry)
        o_c = [instantiate(o) for o, l in zip(o_c, lin_c) if l]
        acc = [lax.add(a, o) for a, o in zip(acc, o_c)]
        return (acc, [instantiate(o) for o in o_car]), [instantiate(o) for o, l in zip(o_x, lin_x) if l]
    (acc, ct_init), ct_xs = lax.scan(body, (acc0, ct_carry), (nonlin_x, ct_ys), length=length,
                                     reverse=not reverse)
    ia, ix = iter(acc), iter(ct_xs)
    return ([next(ia) if l else None for l in lin_c]
            + [c if is_undef(a) else None for c, a in zip(ct_init, carry)]
            + [next(ix) if l else None for l in lin_x])


jvp_rules[P.scan_p] = _scan_jvp
partial_eval_rules[P.scan_p] = _scan_partial_eval
transpose_rules[P.scan_p] = _scan_transpose


# ---------------------------------------------------------------- while
def _while_jvp(primals, tangents, *, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    nz = _nz(tangents)
    cc, bc, init = _split3(primals, cond_nconsts, body_nconsts)
    nz_bc = nz[cond_nconsts:cond_nconsts + body_nconsts]
    nz_carry = nz[cond_nconsts + body_nconsts:]
    while True:
        out_nz = jvp_jaxpr(body_jaxpr, nz_bc + nz_carry, False)[2]
        new = _or(nz_carry, out_nz)
        if new == nz_carry:
            break
        nz_carry = new
    avals = body_jaxpr.in_avals
    carry_avals = avals[body_nconsts:]
    t_bc = _fill(tangents[cond_nconsts:cond_nconsts + body_nconsts], nz_bc, avals[:body_nconsts])
    t_init = [instantiate(t) if not isinstance(t, Zero) else lax.full(a.shape, 0, a.dtype)
              for t, z, a in zip(tangents[cond_nconsts + body_nconsts:], nz_carry, carry_avals) if z]

    def cond_fun(c):
        return eval_jaxpr(cond_jaxpr, [], cc + list(c[0]))[0]

    def body_fun(c):
        cp, ct = c
        it = iter(ct)
        ts = [next(it) if z else Zero(a.strip_weak_type()) for z, a in zip(nz_carry, carry_avals)]
        p, t = _jvp_of(body_jaxpr, bc + list(cp), t_bc + ts, nz_carry)
        return p, [x for x in t if x is not None]
    p_out, t_out = lax.while_loop(cond_fun, body_fun, (init, t_init))
    it = iter(t_out)
    return list(p_out), [next(it) if z else Zero(a.strip_weak_type()) for z, a in zip(nz_carry, carry_avals)]


def _while_partial_eval(eqn, uk):
    """Known carries run in a loop of their own; the unknown ones rerun the whole loop."""
    p = eqn.params
    cj, bj, ncc, nbc = p["cond_jaxpr"], p["body_jaxpr"], p["cond_nconsts"], p["body_nconsts"]
    uk_cc, uk_bc, uk_carry = _split3(uk, ncc, nbc)
    while True:
        _, _, out_uk, _ = partial_eval_jaxpr(bj, uk_bc + uk_carry, False)
        new = _or(uk_carry, out_uk)
        if new == uk_carry:
            break
        uk_carry = new
    all_unknown = (None, eqn, [True] * len(eqn.outputs))
    known = [not u for u in uk_carry]
    body_k, used = dce_jaxpr(bj, known)
    cond_used = dce_jaxpr(cj)[1]
    if all(uk_carry) or any(u and f for u, f in zip(used, uk_bc + uk_carry)) or \
            any(u and f for u, f in zip(cond_used, uk_cc + uk_carry)):
        return all_unknown
    cc, bc, init = _split3(eqn.inputs, ncc, nbc)
    sel = lambda seq, flags: [x for x, f in zip(seq, flags) if f]
    body_k = Jaxpr([], sel(bj.invars[:nbc], [True] * nbc) + sel(bj.invars[nbc:], known),
                   body_k.eqns, body_k.outvars)
    cond_k = Jaxpr([], cj.invars[:ncc] + sel(cj.invars[ncc:], known), cj.eqns, cj.outvars)
    k_eqn = Eqn(P.while_p, cc + bc + sel(init, known),
                dict(p, cond_jaxpr=cond_k, body_jaxpr=body_k), sel(eqn.outputs, known))
    dummy = [Var(v.aval) if k else v for v, k in zip(eqn.outputs, known)]
    return k_eqn, Eqn(P.while_p, eqn.inputs, p, dummy), uk_carry


def _while_transpose(cts, *args, **params):
    raise NotImplementedError(
        "reverse-mode differentiation (grad, vjp) does not go through lax.while_loop: its trip "
        "count is only known at run time. Use lax.fori_loop with static bounds or lax.scan, "
        "or forward mode (jvp, jacfwd).")


jvp_rules[P.while_p] = _while_jvp
partial_eval_rules[P.while_p] = _while_partial_eval
transpose_rules[P.while_p] = _while_transpose
