"""Forward mode: the JVP trace and a JVP rule for every primitive.

A JVPTracer carries (primal, tangent); a tangent may be a symbolic `Zero` so that inputs
we do not differentiate (data, integers) cost nothing. `jvp_rules[prim](primals, tangents,
**params) -> (primals_out, tangents_out)` for every primitive; most are written per
argument with `defjvp` (the contributions of non-zero tangents are summed).
"""
from __future__ import annotations

import math

import numpy as np

from .. import lax
from ..tracer import core, dtypes, primitives as P
from ..tracer.core import ClosedJaxpr, Jaxpr, Tracer, bind, full_raise, get_aval
from ..tracer.staging import eval_jaxpr, trace_to_jaxpr
from .ad_util import Zero, add_tangents, instantiate, is_differentiable

jvp_rules: dict = {}
# Primitives whose outputs are piecewise constant or not real-valued: zero tangents.
nondifferentiable: set = set()


class JVPTracer(Tracer):
    __slots__ = ("primal", "tangent")

    def __init__(self, trace, primal, tangent):
        self._trace, self.primal, self.tangent = trace, primal, tangent

    @property
    def aval(self):
        return get_aval(self.primal)

    def concrete_value(self):
        # the primal may be a concrete value: Python control flow under jvp then works
        p = self.primal
        return p.concrete_value() if isinstance(p, Tracer) else np.asarray(p)

    def full_lower(self):
        return self   # never drop the tangent


class JVPTrace(core.Trace):
    def pure(self, val):
        return JVPTracer(self, val, Zero.like(val))

    lift = pure

    def process_primitive(self, prim, tracers, params):
        primals = [t.primal for t in tracers]
        tangents = [t.tangent for t in tracers]
        if all(isinstance(t, Zero) for t in tangents):
            outs = bind(prim, *primals, **params)
            outs = outs if prim.multiple_results else [outs]
            return [JVPTracer(self, o, Zero.like(o)) for o in outs]
        rule = jvp_rules.get(prim)
        if rule is None:
            raise NotImplementedError(f"differentiation: no JVP rule for primitive {prim.name}")
        p_out, t_out = rule(primals, tangents, **params)
        return [JVPTracer(self, p, t if is_differentiable(get_aval(p)) else Zero.like(p))
                for p, t in zip(p_out, t_out)]


# ---------------------------------------------------------------- running JVP
def jvp_flat(flat_fun, primals, tangents):
    """Run flat_fun under a new JVP trace; tangents may be Zero. Returns (primals, tangents)."""
    with core.new_main(JVPTrace) as main:
        trace = JVPTrace(main)
        tracers = [JVPTracer(trace, p, t) for p, t in zip(primals, tangents)]
        outs = [full_raise(trace, o) for o in flat_fun(*tracers)]
        return [o.primal for o in outs], [o.tangent for o in outs]


def jvp_jaxpr(jaxpr: Jaxpr, nonzeros, instantiate_out):
    """The JVP of a closed-over-nothing jaxpr as a jaxpr over (primals, nonzero tangents).

    Returns (Jaxpr with consts as leading inputs, consts, out_nonzeros); output tangents
    are returned for the outputs marked in out_nonzeros (instantiated where requested)."""
    n = len(jaxpr.invars)
    tan_avals = [a.strip_weak_type() for a, nz in zip(jaxpr.in_avals, nonzeros) if nz]
    out_nz_box = []

    def fun(*args):
        primals, tans = args[:n], iter(args[n:])
        tangents = [next(tans) if nz else Zero(a.strip_weak_type())
                    for a, nz in zip(jaxpr.in_avals, nonzeros)]
        p_out, t_out = jvp_flat(lambda *xs: eval_jaxpr(jaxpr, [], xs), primals, tangents)
        inst = instantiate_out if isinstance(instantiate_out, (list, tuple)) else \
            [instantiate_out] * len(t_out)
        nz = [not isinstance(t, Zero) or i for t, i in zip(t_out, inst)]
        out_nz_box.append(nz)
        return p_out + [instantiate(t) for t, z in zip(t_out, nz) if z]
    closed = trace_to_jaxpr(fun, list(jaxpr.in_avals) + tan_avals)
    jp, consts = closure_convert(closed)
    return jp, consts, out_nz_box[0]


def closure_convert(closed: ClosedJaxpr):
    """A Jaxpr taking its consts as leading inputs (the form control-flow params hold)."""
    j = closed.jaxpr
    return Jaxpr([], list(j.constvars) + list(j.invars), j.eqns, j.outvars), closed.consts


# ---------------------------------------------------------------- rule helpers
def _bcast(t, aval):
    """Tangent contributions of scalar operands broadcast to the output's shape."""
    shape = get_aval(t).shape
    if shape == tuple(aval.shape):
        return t
    return lax.broadcast_in_dim(t, aval.shape, ())


def defjvp(prim, *arg_rules, use_ans=False):
    """JVP from one rule per argument: rule(g, *primals, **params) (with ans first if
    use_ans); None marks an argument with no derivative."""
    def rule(primals, tangents, **params):
        ans = bind(prim, *primals, **params)
        out_aval = get_aval(ans)
        t_out = Zero(out_aval.strip_weak_type())
        for g, r in zip(tangents, arg_rules):
            if r is None or isinstance(g, Zero):
                continue
            c = r(g, ans, *primals, **params) if use_ans else r(g, *primals, **params)
            t_out = add_tangents(t_out, _bcast(c, out_aval))
        return [ans], [t_out]
    jvp_rules[prim] = rule


def deflinear(prim):
    """A primitive linear in all its (float) operands: the tangent is the same op on tangents."""
    def rule(primals, tangents, **params):
        ans = bind(prim, *primals, **params)
        if all(isinstance(t, Zero) for t in tangents):
            return [ans], [Zero.like(ans)]
        return [ans], [bind(prim, *map(instantiate, tangents), **params)]
    jvp_rules[prim] = rule


def defnondiff(prim):
    nondifferentiable.add(prim)

    def rule(primals, tangents, **params):
        outs = bind(prim, *primals, **params)
        outs = outs if prim.multiple_results else [outs]
        return outs, [Zero.like(o) for o in outs]
    jvp_rules[prim] = rule


U, B = P.UNARY, P.BINARY
sq = lambda x: lax.mul(x, x)

# ---------------------------------------------------------------- elementwise
defjvp(U["neg"], lambda g, x: lax.neg(g))
defjvp(U["exp"], lambda g, ans, x: lax.mul(g, ans), use_ans=True)
defjvp(U["exp2"], lambda g, ans, x: lax.mul(g, lax.mul(ans, math.log(2.0))), use_ans=True)
defjvp(U["log"], lambda g, x: lax.div(g, x))
defjvp(U["log1p"], lambda g, x: lax.div(g, lax.add(x, 1.0)))
defjvp(U["expm1"], lambda g, ans, x: lax.mul(g, lax.add(ans, 1.0)), use_ans=True)
defjvp(U["tanh"], lambda g, ans, x: lax.mul(g, lax.sub(1.0, sq(ans))), use_ans=True)
defjvp(U["logistic"], lambda g, ans, x: lax.mul(g, lax.mul(ans, lax.sub(1.0, ans))), use_ans=True)
defjvp(U["sin"], lambda g, x: lax.mul(g, lax.cos(x)))
defjvp(U["cos"], lambda g, x: lax.neg(lax.mul(g, lax.sin(x))))
defjvp(U["tan"], lambda g, ans, x: lax.mul(g, lax.add(1.0, sq(ans))), use_ans=True)
defjvp(U["asin"], lambda g, x: lax.mul(g, lax.rsqrt(lax.sub(1.0, sq(x)))))
defjvp(U["acos"], lambda g, x: lax.neg(lax.mul(g, lax.rsqrt(lax.sub(1.0, sq(x))))))
defjvp(U["atan"], lambda g, x: lax.div(g, lax.add(1.0, sq(x))))
defjvp(U["sinh"], lambda g, x: lax.mul(g, lax.cosh(x)))
defjvp(U["cosh"], lambda g, x: lax.mul(g, lax.sinh(x)))
defjvp(U["asinh"], lambda g, x: lax.mul(g, lax.rsqrt(lax.add(sq(x), 1.0))))
defjvp(U["acosh"], lambda g, x: lax.mul(g, lax.rsqrt(lax.mul(lax.sub(x, 1.0), lax.add(x, 1.0)))))
defjvp(U["atanh"], lambda g, x: lax.div(g, lax.sub(1.0, sq(x))))
defjvp(U["sqrt"], lambda g, ans, x: lax.div(g, lax.mul(ans, 2.0)), use_ans=True)
defjvp(U["rsqrt"], lambda g, ans, x: lax.mul(g, lax.mul(lax.div(ans, x), -0.5)), use_ans=True)
defjvp(U["cbrt"], lambda g, ans, x: lax.mul(g, lax.div(ans, lax.mul(x, 3.0))), use_ans=True)
defjvp(U["abs"], lambda g, x: lax.mul(g, lax.sign(x)))
defjvp(U["square"], lambda g, x: lax.mul(g, lax.mul(x, 2.0)))
defjvp(U["erf"], lambda g, x: lax.mul(g, lax.mul(lax.exp(lax.neg(sq(x))), 2.0 / math.sqrt(math.pi))))
defjvp(U["erfc"], lambda g, x: lax.mul(g, lax.mul(lax.exp(lax.neg(sq(x))), -2.0 / math.sqrt(math.pi))))
defjvp(U["erf_inv"], lambda g, ans, x: lax.mul(g, lax.mul(lax.exp(sq(ans)), math.sqrt(math.pi) / 2.0)),
       use_ans=True)
defjvp(U["lgamma"], lambda g, x: lax.mul(g, lax.digamma(x)))
for _n in ["sign", "floor", "ceil", "round", "not", "is_finite", "stop_gradient"]:
    defnondiff(U[_n])


def _trigamma_positive(x):
    """psi'(x) for x >= 0.5: shift up by 6 with psi'(x) = 1/x^2 + psi'(x + 1), then the
    asymptotic series (its first omitted term is below 1e-10 relative for x >= 6.5)."""
    acc = None
    for k in range(6):
        term = lax.div(1.0, sq(lax.add(x, float(k))))
        acc = term if acc is None else lax.add(acc, term)
    z = lax.add(x, 6.0)
    w = lax.div(1.0, sq(z))
    # 1/z + 1/(2z^2) + 1/z^3 (1/6 - w/30 + w^2/42 - w^3/30 + 5w^4/66), Horner in w
    series = 5.0 / 66.0
    for c in (-1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 1.0 / 6.0):
        series = lax.add(lax.mul(series, w), c)
    tail = lax.add(lax.div(1.0, z), lax.add(lax.mul(w, 0.5), lax.mul(lax.div(w, z), series)))
    return lax.add(acc, tail)


def _trigamma(x):
    """Trigamma (digamma's derivative) from elementwise primitives, so it is itself
    differentiable; below 0.5 it uses the reflection psi'(1-x) + psi'(x) = pi^2/sin^2(pi x)."""
    low = lax.lt(x, 0.5)
    r = lax.select(low, lax.sub(1.0, x), x)
    pos = _trigamma_positive(r)
    reflected = lax.sub(lax.div(math.pi ** 2, sq(lax.sin(lax.mul(x, math.pi)))), pos)
    return lax.select(low, reflected, pos)


defjvp(U["digamma"], lambda g, x: lax.mul(g, _trigamma(x)))

defjvp(B["add"], lambda g, x, y: g, lambda g, x, y: g)
defjvp(B["sub"], lambda g, x, y: g, lambda g, x, y: lax.neg(g))
defjvp(B["mul"], lambda g, x, y: lax.mul(g, y), lambda g, x, y: lax.mul(x, g))
defjvp(B["div"], lambda g, x, y: lax.div(g, y),
       lambda g, x, y: lax.neg(lax.div(lax.mul(g, x), sq(y))))
defjvp(B["rem"], lambda g, x, y: g,
       lambda g, x, y: lax.neg(lax.mul(g, _trunc(lax.div(x, y)))))
defjvp(B["pow"], lambda g, x, y: lax.mul(g, lax.mul(y, lax.pow(x, lax.sub(y, 1.0)))),
       lambda g, x, y: lax.mul(g, lax.mul(_safe_log(x), lax.pow(x, y))))
defjvp(B["max"], lambda g, x, y: lax.mul(g, _balanced(lax.gt, x, y)),
       lambda g, x, y: lax.mul(g, _balanced(lax.gt, y, x)))
defjvp(B["min"], lambda g, x, y: lax.mul(g, _balanced(lax.lt, x, y)),
       lambda g, x, y: lax.mul(g, _balanced(lax.lt, y, x)))
defjvp(B["atan2"], lambda g, x, y: lax.mul(g, lax.div(y, lax.add(sq(x), sq(y)))),
       lambda g, x, y: lax.mul(g, lax.div(lax.neg(x), lax.add(sq(x), sq(y)))))
# nextafter(x, y) moves x by one ulp: derivative 1 in x (as in x + 0), none in y
defjvp(B["nextafter"], lambda g, x, y: g, None)
for _n in ["and", "or", "xor", "shift_left", "shift_right_logical", "shift_right_arithmetic"]:
    defnondiff(B[_n])
for _p in P.COMPARE.values():
    defnondiff(_p)


def _trunc(x):
    return lax.mul(lax.sign(x), lax.floor(lax.abs(x)))


def _safe_log(x):
    # d/dy x**y = log(x) x**y; where x == 0 the product is 0, not nan
    zero = lax.eq(x, 0.0)
    return lax.select(zero, lax.full(get_aval(x).shape, 0, get_aval(x).dtype),
                      lax.log(lax.select(zero, lax.full(get_aval(x).shape, 1, get_aval(x).dtype), x)))


def _balanced(cmp, x, y):
    """1 where x wins, 0.5 on ties, 0 where it loses (ties split the derivative)."""
    xs, ys = _same_shape(x, y)
    dt = get_aval(xs).dtype
    win = lax.convert_element_type(cmp(xs, ys), dt)
    tie = lax.convert_element_type(lax.eq(xs, ys), dt)
    return lax.add(win, lax.mul(tie, 0.5))


def _same_shape(x, y):
    sx, sy = get_aval(x).shape, get_aval(y).shape
    if sx == sy:
        return x, y
    shape = sx if sx else sy
    return (lax.broadcast_in_dim(x, shape, ()) if not sx else x,
            lax.broadcast_in_dim(y, shape, ()) if not sy else y)


def _integer_pow_jvp(g, x, *, y):
    if y == 0:
        return lax.mul(g, 0.0)
    return g if y == 1 else lax.mul(g, lax.mul(float(y), lax.integer_pow(x, y - 1)))


defjvp(P.integer_pow_p, _integer_pow_jvp)


def _select_n_jvp(primals, tangents, **params):
    which, *cases = primals
    ans = bind(P.select_n_p, which, *cases)
    if all(isinstance(t, Zero) for t in tangents[1:]):
        return [ans], [Zero.like(ans)]
    aval = get_aval(ans)
    ts = [_bcast(instantiate(t), aval) for t in tangents[1:]]
    return [ans], [bind(P.select_n_p, which, *ts)]


jvp_rules[P.select_n_p] = _select_n_jvp


def _convert_jvp(primals, tangents, *, new_dtype, weak_type=False):
    (x,), (t,) = primals, tangents
    ans = bind(P.convert_element_type_p, x, new_dtype=new_dtype, weak_type=weak_type)
    if isinstance(t, Zero) or not dtypes.is_float(new_dtype):
        return [ans], [Zero.like(ans)]
    return [ans], [bind(P.convert_element_type_p, t, new_dtype=new_dtype, weak_type=False)]


jvp_rules[P.convert_element_type_p] = _convert_jvp
for _p in [P.bitcast_convert_type_p, P.iota_p, P.argmax_p, P.argmin_p, P.reduce_and_p,
           P.reduce_or_p, P.threefry2x32_p]:
    defnondiff(_p)

# ---------------------------------------------------------------- structural (linear) ops
for _p in [P.broadcast_in_dim_p, P.reshape_p, P.transpose_p, P.rev_p, P.slice_p, P.reduce_sum_p,
           P.cumsum_p, P.reduce_window_sum_p, P.concatenate_p]:
    deflinear(_p)


def _pad_jvp(primals, tangents, *, padding_config):
    ans = bind(P.pad_p, *primals, padding_config=padding_config)
    if all(isinstance(t, Zero) for t in tangents):
        return [ans], [Zero.like(ans)]
    return [ans], [bind(P.pad_p, *map(instantiate, tangents), padding_config=padding_config)]


jvp_rules[P.pad_p] = _pad_jvp


def _index_operand_jvp(prim, n_linear):
    """Primitives linear in their first n operands, the rest being indices."""
    def rule(primals, tangents, **params):
        ans = bind(prim, *primals, **params)
        lin = tangents[:n_linear]
        if all(isinstance(t, Zero) for t in lin):
            return [ans], [Zero.like(ans)]
        return [ans], [bind(prim, *map(instantiate, lin), *primals[n_linear:], **params)]
    jvp_rules[prim] = rule


_index_operand_jvp(P.dynamic_slice_p, 1)
_index_operand_jvp(P.dynamic_update_slice_p, 2)
_index_operand_jvp(P.gather_p, 1)


def _scatter_add_jvp(primals, tangents, *, batch_dims=0):
    # linear in operand and updates; the indices (operand 1) pass through unchanged
    (x, idx, upd), (tx, _, tu) = primals, tangents
    ans = bind(P.scatter_add_p, x, idx, upd, batch_dims=batch_dims)
    if isinstance(tx, Zero) and isinstance(tu, Zero):
        return [ans], [Zero.like(ans)]
    return [ans], [bind(P.scatter_add_p, instantiate(tx), idx, instantiate(tu),
                        batch_dims=batch_dims)]


jvp_rules[P.scatter_add_p] = _scatter_add_jvp


def _scatter_jvp_rule(primals, tangents, *, batch_dims=0):
    """scatter (last write wins): tangents follow the winning writes, found by scattering ids."""
    x, idx, upd = primals
    tx, _, tu = tangents
    ans = bind(P.scatter_p, x, idx, upd, batch_dims=batch_dims)
    if isinstance(tx, Zero) and isinstance(tu, Zero):
        return [ans], [Zero.like(ans)]
    ua, xa = get_aval(upd), get_aval(x)
    ids = lax.reshape(lax.iota(np.int32, max(ua.size, 1)), ua.shape)
    winner = bind(P.scatter_p, lax.full(xa.shape, -1, np.int32), idx, ids, batch_dims=batch_dims)
    keep_x = lax.eq(winner, -1)
    won = lax.eq(bind(P.gather_p, winner, idx, batch_dims=batch_dims), ids)
    zx = lax.full(xa.shape, 0, xa.dtype)
    t = lax.select(keep_x, instantiate(tx), zx)
    tu = lax.select(won, instantiate(tu), lax.full(ua.shape, 0, ua.dtype))
    return [ans], [bind(P.scatter_add_p, t, idx, tu, batch_dims=batch_dims)]


jvp_rules[P.scatter_p] = _scatter_jvp_rule


def _scatter_mul_jvp(primals, tangents, *, batch_dims=0):
    # out = x * prod(updates at each place); d prod = prod * sum(du / u) (updates non-zero)
    x, idx, upd = primals
    tx, _, tu = tangents
    ans = bind(P.scatter_mul_p, x, idx, upd, batch_dims=batch_dims)
    xa = get_aval(x)
    prod = bind(P.scatter_mul_p, lax.full(xa.shape, 1, xa.dtype), idx, upd, batch_dims=batch_dims)
    t = Zero.like(ans)
    if not isinstance(tx, Zero):
        t = add_tangents(t, lax.mul(tx, prod))
    if not isinstance(tu, Zero):
        rel = bind(P.scatter_add_p, lax.full(xa.shape, 0, xa.dtype), idx, lax.div(tu, upd),
                   batch_dims=batch_dims)
        t = add_tangents(t, lax.mul(ans, rel))
    return [ans], [t]


jvp_rules[P.scatter_mul_p] = _scatter_mul_jvp


def _scatter_extremum_jvp(prim):
    def rule(primals, tangents, *, batch_dims=0):
        x, idx, upd = primals
        tx, _, tu = tangents
        ans = bind(prim, x, idx, upd, batch_dims=batch_dims)
        xa, ua = get_aval(x), get_aval(upd)
        from_x = lax.convert_element_type(lax.eq(x, ans), xa.dtype)
        from_u = lax.convert_element_type(
            lax.eq(upd, bind(P.gather_p, ans, idx, batch_dims=batch_dims)), xa.dtype)
        zeros = lax.full(xa.shape, 0, xa.dtype)
        count = lax.add(from_x, bind(P.scatter_add_p, zeros, idx, from_u, batch_dims=batch_dims))
        t = lax.mul(instantiate(tx), from_x)
        t = lax.add(t, bind(P.scatter_add_p, zeros, idx, lax.mul(instantiate(tu), from_u),
                            batch_dims=batch_dims))
        return [ans], [lax.div(t, count)]   # ties share the derivative
    jvp_rules[prim] = rule


_scatter_extremum_jvp(P.scatter_min_p)
_scatter_extremum_jvp(P.scatter_max_p)


# ---------------------------------------------------------------- reductions
def _bcast_reduced(r, shape, axes):
    kept = [i for i in range(len(shape)) if i not in axes]
    return lax.broadcast_in_dim(r, shape, kept)


def _reduce_extremum_jvp(prim):
    def rule(primals, tangents, *, axes):
        (x,), (t,) = primals, tangents
        ans = bind(prim, x, axes=axes)
        shape, dt = get_aval(x).shape, get_aval(x).dtype
        loc = lax.convert_element_type(lax.eq(x, _bcast_reduced(ans, shape, axes)), dt)
        count = bind(P.reduce_sum_p, loc, axes=axes)
        return [ans], [lax.div(bind(P.reduce_sum_p, lax.mul(t, loc), axes=axes), count)]
    jvp_rules[prim] = rule


_reduce_extremum_jvp(P.reduce_max_p)
_reduce_extremum_jvp(P.reduce_min_p)


def _exclusive_cumprod(x, axis, reverse):
    """Products of the elements before each one (after, if reverse), without division."""
    n = get_aval(x).shape[axis]
    c = bind(P.cumprod_p, x, axis=axis, reverse=reverse)
    nd = get_aval(x).ndim
    cfg = [(0, 0, 0)] * nd
    cfg[axis] = (0, 1, 0) if reverse else (1, 0, 0)
    padded = lax.pad(c, lax.convert_element_type(1, get_aval(x).dtype), cfg)
    start = [0] * nd
    limit = list(get_aval(padded).shape)
    if reverse:
        start[axis] = 1
    else:
        limit[axis] = n
    return lax.slice(padded, start, limit)


def _reduce_prod_jvp(primals, tangents, *, axes):
    (x,), (t,) = primals, tangents
    ans = bind(P.reduce_prod_p, x, axes=axes)
    a = get_aval(x)
    keep = [i for i in range(a.ndim) if i not in axes]
    perm = keep + list(axes)
    flat_shape = [a.shape[i] for i in keep] + [int(np.prod([a.shape[i] for i in axes]))]
    xf = lax.reshape(lax.transpose(x, perm), flat_shape)
    tf = lax.reshape(lax.transpose(t, perm), flat_shape)
    ax = len(keep)
    others = lax.mul(_exclusive_cumprod(xf, ax, False), _exclusive_cumprod(xf, ax, True))
    return [ans], [bind(P.reduce_sum_p, lax.mul(tf, others), axes=(ax,))]


jvp_rules[P.reduce_prod_p] = _reduce_prod_jvp


def _shift(x, d, axis, reverse, fill):
    """x moved d places along axis (towards the end, or the start if reverse), `fill` entering."""
    cfg = [(0, 0, 0)] * get_aval(x).ndim
    cfg[axis] = (-d, d, 0) if reverse else (d, -d, 0)
    return lax.pad(x, lax.convert_element_type(fill, get_aval(x).dtype), cfg)


def _cumprod_jvp(primals, tangents, *, axis, reverse=False):
    # The tangent of a prefix-doubling (Hillis-Steele) product scan: log2(n) steps of
    # muls and shifts, no division, so it is exact where inputs are zero (t / x is not).
    (x,), (t,) = primals, tangents
    ans = bind(P.cumprod_p, x, axis=axis, reverse=reverse)
    y, ty, d, n = x, t, 1, get_aval(x).shape[axis]
    while d < n:
        ys, tys = _shift(y, d, axis, reverse, 1), _shift(ty, d, axis, reverse, 0)
        ty = lax.add(lax.mul(ty, ys), lax.mul(y, tys))
        y, d = lax.mul(y, ys), 2 * d
    return [ans], [ty]


jvp_rules[P.cumprod_p] = _cumprod_jvp


def _cum_extremum_jvp(prim):
    def rule(primals, tangents, *, axis, reverse=False):
        (x,), (t,) = primals, tangents
        ans = bind(prim, x, axis=axis, reverse=reverse)
        a = get_aval(x)
        pos = lax.iota(np.int32, a.shape[axis])
        pos = lax.broadcast_in_dim(pos, a.shape, (axis,))
        if reverse:   # the source is the nearest later position that set the running value
            pos = lax.sub(np.int32(a.shape[axis] - 1), pos)
        sets = lax.select(lax.eq(x, ans), pos, lax.full(a.shape, -1, np.int32))
        src = bind(P.cummax_p, sets, axis=axis, reverse=reverse)
        if reverse:
            src = lax.sub(np.int32(a.shape[axis] - 1), src)
        return [ans], [_take_along(t, src, axis)]
    jvp_rules[prim] = rule


def _take_along(t, idx, axis):
    """t[..., idx[...], ...] along axis (idx has t's shape except along axis)."""
    shape = get_aval(idx).shape
    grids = [idx if i == axis else lax.broadcast_in_dim(lax.iota(np.int32, d), shape, (i,))
             for i, d in enumerate(shape)]
    full_idx = lax.concatenate([lax.reshape(g, shape + (1,)) for g in grids], len(shape))
    return bind(P.gather_p, t, full_idx, batch_dims=0)


_cum_extremum_jvp(P.cummax_p)
_cum_extremum_jvp(P.cummin_p)


def _reduce_window_extremum_jvp(prim, cmp_init):
    """Max/min pooling: each window's tangent comes from its winning element(s)."""
    def rule(primals, tangents, *, window_dimensions, window_strides, padding,
             base_dilation=None, window_dilation=None):
        (x,), (t,) = primals, tangents
        params = dict(window_dimensions=window_dimensions, window_strides=window_strides,
                      padding=padding, base_dilation=base_dilation, window_dilation=window_dilation)
        ans = bind(prim, x, **params)
        a = get_aval(x)
        nd = a.ndim
        bd = base_dilation or (1,) * nd
        wd = window_dilation or (1,) * nd
        cfg = [(lo, hi, b - 1) for (lo, hi), b in zip(padding, bd)]
        xp = lax.pad(x, lax.convert_element_type(cmp_init(a.dtype), a.dtype), cfg)
        tp = lax.pad(t, lax.convert_element_type(0, a.dtype), cfg)
        out_shape = get_aval(ans).shape
        num = den = None
        for off in np.ndindex(*window_dimensions):
            start = [o * d for o, d in zip(off, wd)]
            limit = [s + (n - 1) * st + 1 for s, n, st in zip(start, out_shape, window_strides)]
            xs = lax.slice(xp, start, limit, window_strides)
            ts = lax.slice(tp, start, limit, window_strides)
            hit = lax.convert_element_type(lax.eq(xs, ans), a.dtype)
            num = lax.mul(ts, hit) if num is None else lax.add(num, lax.mul(ts, hit))
            den = hit if den is None else lax.add(den, hit)
        return [ans], [lax.div(num, den)]
    jvp_rules[prim] = rule


def _lowest(dt):
    return -np.inf if dtypes.is_float(dt) else np.iinfo(dt).min


def _highest(dt):
    return np.inf if dtypes.is_float(dt) else np.iinfo(dt).max


_reduce_window_extremum_jvp(P.reduce_window_max_p, _lowest)
_reduce_window_extremum_jvp(P.reduce_window_min_p, _highest)


# ---------------------------------------------------------------- contractions
def _bilinear(prim):
    def rule(primals, tangents, **params):
        (x, y), (tx, ty) = primals, tangents
        ans = bind(prim, x, y, **params)
        t = Zero.like(ans)
        if not isinstance(tx, Zero):
            t = add_tangents(t, bind(prim, tx, y, **params))
        if not isinstance(ty, Zero):
            t = add_tangents(t, bind(prim, x, ty, **params))
        return [ans], [t]
    jvp_rules[prim] = rule


_bilinear(P.dot_general_p)
_bilinear(P.conv_general_dilated_p)


# ---------------------------------------------------------------- sorting
def _sort_jvp(primals, tangents, *, dimension, is_stable=True, num_keys=1):
    a = get_aval(primals[0])
    iota = lax.broadcast_in_dim(lax.iota(np.int32, a.shape[dimension]), a.shape, (dimension,))
    *outs, perm = bind(P.sort_p, *primals, iota, dimension=dimension, is_stable=is_stable,
                       num_keys=num_keys)
    ts = [Zero.like(o) if isinstance(t, Zero) else _take_along(t, perm, dimension)
          for o, t in zip(outs, tangents)]
    return outs, ts


jvp_rules[P.sort_p] = _sort_jvp


def _top_k_jvp(primals, tangents, *, k):
    (x,), (t,) = primals, tangents
    vals, idx = bind(P.top_k_p, x, k=k)
    return [vals, idx], [_take_along(t, idx, get_aval(x).ndim - 1), Zero.like(idx)]


jvp_rules[P.top_k_p] = _top_k_jvp
