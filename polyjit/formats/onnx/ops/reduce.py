"""Reductions, arg-reductions, cumulative ops, TopK and the softmax family."""
from __future__ import annotations

import numpy as np

from .... import lax
from .... import numpy as pnp
from . import op
from ._util import cast, dtype_of, is_float, keep, ndim_of, norm_axis, scalar_like, shape_of

# The opset where each Reduce* moved `axes` from an attribute to an input.
_AXES_INPUT_SINCE = {"ReduceSum": 13}


def _reduce_axes(ctx, x, axes_in):
    n = ndim_of(x)
    if ctx.version >= _AXES_INPUT_SINCE.get(ctx.op_type, 18):
        axes = ctx.ints(axes_in, "axes")
    else:
        axes = ctx.attr("axes")
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        return tuple(range(n))
    return tuple(sorted({norm_axis(a, n) for a in axes}))


def _reducer(core):
    """An ONNX Reduce* op from core(x, axes) -> reduced x without kept dims."""
    def impl(ctx, x, axes_in=None):
        axes = _reduce_axes(ctx, x, axes_in)
        if axes is None:
            return core(x, None)
        return keep(core(pnp.asarray(x), axes), axes, ctx.attr("keepdims", 1))
    return impl


def _max(x, axes):
    return x if axes is None else lax.reduce_max(x, axes)


def _min(x, axes):
    return x if axes is None else lax.reduce_min(x, axes)


def _sum(x, axes):
    return x if axes is None else lax.reduce_sum(x, axes)


def _prod(x, axes):
    return x if axes is None else lax.reduce_prod(x, axes)


def _mean(x, axes):
    if axes is None:
        return x
    n = int(np.prod([shape_of(x)[a] for a in axes], dtype=np.int64))
    s = lax.reduce_sum(x, axes)
    return pnp.divide(s, scalar_like(n, s)) if is_float(x) else lax.div(s, scalar_like(n, s))


def _l1(x, axes):
    return _sum(pnp.abs(x), axes)


def _sumsq(x, axes):
    return _sum(pnp.multiply(x, x), axes)


def _l2(x, axes):
    s = _sumsq(x, axes)
    return pnp.sqrt(s) if is_float(x) else cast(pnp.sqrt(cast(s, np.float64)), dtype_of(x))


def _logsum(x, axes):
    return pnp.log(_sum(x, axes))


def _logsumexp(x, axes):
    if axes is None:
        return pnp.log(pnp.exp(x))
    m = lax.reduce_max(x, axes)
    m = pnp.where(pnp.isfinite(m), m, pnp.zeros_like(m))
    mk = pnp.expand_dims(m, axes)
    return pnp.add(pnp.log(lax.reduce_sum(pnp.exp(pnp.subtract(x, mk)), axes)), m)


for _name, _core in {"ReduceMax": _max, "ReduceMin": _min, "ReduceSum": _sum,
                     "ReduceProd": _prod, "ReduceMean": _mean, "ReduceL1": _l1,
                     "ReduceL2": _l2, "ReduceSumSquare": _sumsq, "ReduceLogSum": _logsum,
                     "ReduceLogSumExp": _logsumexp}.items():
    op(_name, static=(1,))(_reducer(_core))


def _arg(fn):
    def impl(ctx, x):
        n = ndim_of(x)
        axis = norm_axis(ctx.attr("axis", 0), n)
        x = pnp.asarray(x)
        if ctx.attr("select_last_index", 0):
            d = shape_of(x)[axis]
            idx = pnp.subtract(np.int64(d - 1), cast(fn(lax.rev(x, (axis,)), axis), np.int64))
        else:
            idx = cast(fn(x, axis), np.int64)
        return keep(idx, (axis,), ctx.attr("keepdims", 1))
    return impl


op("ArgMax")(_arg(lambda x, a: lax.argmax(x, a)))
op("ArgMin")(_arg(lambda x, a: lax.argmin(x, a)))


def _cumulative(fn, identity):
    def impl(ctx, x, axis):
        a = norm_axis(int(ctx.const(axis, "axis").reshape(-1)[0]), ndim_of(x))
        rev = bool(ctx.attr("reverse", 0))
        x = pnp.asarray(x)
        out = fn(x, a, rev)
        if ctx.attr("exclusive", 0):
            d = shape_of(x)[a]
            cfg = [(0, 0, 0)] * ndim_of(x)
            cfg[a] = (0, 1, 0) if rev else (1, 0, 0)
            start = 1 if rev else 0
            out = lax.slice_in_dim(lax.pad(out, scalar_like(identity, out), cfg),
                                   start, start + d, 1, a)
        return out
    return impl


op("CumSum", static=(1,))(_cumulative(lambda x, a, r: lax.cumsum(x, a, r), 0))
op("CumProd", static=(1,))(_cumulative(lambda x, a, r: lax.cumprod(x, a, r), 1))


@op("TopK", static=(1,))
def top_k(ctx, x, k=None):
    k = ctx.attr("k") if ctx.version < 10 else int(ctx.const(k, "k").reshape(-1)[0])
    n = ndim_of(x)
    axis = norm_axis(ctx.attr("axis", -1), n)
    xm = pnp.moveaxis(pnp.asarray(x), axis, -1)
    if ctx.attr("largest", 1):
        vals, idx = lax.top_k(xm, k)
    else:   # stable ascending sort keeps the lower index first among ties, as ONNX wants
        order = pnp.argsort(xm, axis=-1, stable=True)[..., :k]
        vals, idx = pnp.take_along_axis(xm, order, axis=-1), order
    return [pnp.moveaxis(vals, -1, axis), pnp.moveaxis(cast(idx, np.int64), -1, axis)]


def _softmax_family(core):
    """Softmax-like ops: opset < 13 flattens to 2-D at `axis` (default 1); 13+ uses one axis."""
    def impl(ctx, x):
        s = shape_of(x)
        n = len(s)
        if ctx.version < 13:
            axis = norm_axis(ctx.attr("axis", 1), n)
            flat = pnp.reshape(x, (int(np.prod(s[:axis], dtype=np.int64)), -1))
            return pnp.reshape(core(flat, 1), s)
        return core(pnp.asarray(x), norm_axis(ctx.attr("axis", -1), n))
    return impl


def softmax(x, axis):
    m = pnp.max(x, axis=axis, keepdims=True)
    e = pnp.exp(pnp.subtract(x, m))
    return pnp.divide(e, pnp.sum(e, axis=axis, keepdims=True))


def log_softmax(x, axis):
    m = pnp.max(x, axis=axis, keepdims=True)
    z = pnp.subtract(x, m)
    return pnp.subtract(z, pnp.log(pnp.sum(pnp.exp(z), axis=axis, keepdims=True)))


def hardmax(x, axis):
    idx = lax.argmax(x, axis)
    hot = pnp.equal(pnp.expand_dims(idx, axis), lax.iota(dtype_of(idx), shape_of(x), axis))
    return cast(hot, dtype_of(x))


op("Softmax")(_softmax_family(softmax))
op("LogSoftmax")(_softmax_family(log_softmax))
op("Hardmax")(_softmax_family(hardmax))
