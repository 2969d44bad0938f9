"""Transposition of linear jaxprs: run the tangent program backwards on cotangents.

`transpose_rules[prim](cts, *invals, **params)` gets the output cotangents (a list; an
entry may be a symbolic Zero) and the inputs, where linear inputs are `UndefPrimal`
placeholders; it returns one cotangent per input (None for non-linear inputs).
"""
from __future__ import annotations

import numpy as np

from .. import lax
from ..tracer import dtypes, primitives as P
from ..tracer.core import Jaxpr, Literal, Var, bind, get_aval
from .ad_util import Zero, add_tangents, instantiate

transpose_rules: dict = {}


class UndefPrimal:
    """A linear input of a transposed equation: only its type is known."""
    __slots__ = ("aval",)

    def __init__(self, aval):
        self.aval = aval

    def __repr__(self):
        return f"UndefPrimal({self.aval.str_short()})"


def is_undef(x):
    return isinstance(x, UndefPrimal)


def _read(env, x):
    if isinstance(x, Literal):
        return x.val.item() if x.aval.weak_type else x.val
    return env[x]


def backward_pass(jaxpr: Jaxpr, args, cts_out):
    """Cotangents of the linear inputs (those given as UndefPrimal) of a linear jaxpr."""
    env, linear = {}, set()
    for v, a in zip(jaxpr.invars, args):
        if is_undef(a):
            linear.add(v)
        else:
            env[v] = a
    lin_eqns = []
    for e in jaxpr.eqns:     # non-linear equations (residual arithmetic) run forward
        if any(isinstance(x, Var) and x in linear for x in e.inputs):
            lin_eqns.append(e)
            linear.update(e.outputs)
        else:
            outs = bind(e.prim, *[_read(env, x) for x in e.inputs], **e.params)
            env.update(zip(e.outputs, outs if e.prim.multiple_results else [outs]))
    ct_env = {}

    def accum(v, ct):
        if isinstance(v, Var) and v in linear and ct is not None and not isinstance(ct, Zero):
            ct_env[v] = add_tangents(ct_env[v], ct) if v in ct_env else ct
    for v, ct in zip(jaxpr.outvars, cts_out):
        accum(v, ct)
    for e in reversed(lin_eqns):
        cts = [ct_env.pop(v, None) for v in e.outputs]
        if all(c is None for c in cts):
            continue
        cts = [Zero(v.aval.strip_weak_type()) if c is None else c for c, v in zip(cts, e.outputs)]
        invals = [UndefPrimal(x.aval) if isinstance(x, Var) and x in linear else _read(env, x)
                  for x in e.inputs]
        rule = transpose_rules.get(e.prim)
        if rule is None:
            raise NotImplementedError(f"reverse-mode differentiation: primitive {e.prim.name} "
                                      "has no transpose rule (it is not linear in its tangent "
                                      "inputs)")
        for x, ct in zip(e.inputs, rule(cts, *invals, **e.params)):
            accum(x, ct)
    return [ct_env.get(v, Zero(v.aval.strip_weak_type())) if is_undef(a) else None
            for v, a in zip(jaxpr.invars, args)]


# ---------------------------------------------------------------- helpers
def unbroadcast(ct, aval):
    """Sum a cotangent back to a scalar operand that elementwise ops broadcast."""
    if isinstance(ct, Zero):
        return ct
    shape = get_aval(ct).shape
    if tuple(aval.shape) == shape:
        return ct
    return lax.reduce_sum(ct, tuple(range(len(shape))))


def _zeros(aval):
    return lax.full(aval.shape, 0, aval.dtype)


def _linear_unary(prim, transpose_fn):
    def rule(cts, x, **params):
        ct = cts[0]
        return [Zero(x.aval) if isinstance(ct, Zero) else transpose_fn(ct, x, **params)]
    transpose_rules[prim] = rule


def _first_arg_linear(prim, fn):
    """Transpose of an op linear in its first operand only (the rest are indices or consts)."""
    def rule(cts, x, *rest, **params):
        ct = cts[0]
        if isinstance(ct, Zero):
            return [None if not is_undef(x) else Zero(x.aval)] + [None] * len(rest)
        return [fn(ct, x, *rest, **params)] + [None] * len(rest)
    transpose_rules[prim] = rule


# ---------------------------------------------------------------- elementwise
def _add_t(cts, x, y):
    ct = instantiate(cts[0]) if not isinstance(cts[0], Zero) else cts[0]
    return [unbroadcast(ct, x.aval) if is_undef(x) else None,
            unbroadcast(ct, y.aval) if is_undef(y) else None]


def _sub_t(cts, x, y):
    ct = cts[0]
    neg = ct if isinstance(ct, Zero) else lax.neg(ct)
    return [unbroadcast(ct, x.aval) if is_undef(x) else None,
            unbroadcast(neg, y.aval) if is_undef(y) else None]


def _mul_t(cts, x, y):
    ct = instantiate(cts[0])
    if is_undef(x) and is_undef(y):
        raise NotImplementedError("transpose of mul with both operands linear")
    if is_undef(x):
        return [unbroadcast(lax.mul(ct, y), x.aval), None]
    return [None, unbroadcast(lax.mul(x, ct), y.aval)]


def _div_t(cts, x, y):
    if is_undef(y):
        raise NotImplementedError("transpose of div in its denominator (not linear)")
    return [unbroadcast(lax.div(instantiate(cts[0]), y), x.aval), None]


transpose_rules[P.add_p] = _add_t
transpose_rules[P.sub_p] = _sub_t
transpose_rules[P.mul_p] = _mul_t
transpose_rules[P.div_p] = _div_t
_linear_unary(P.neg_p, lambda ct, x: lax.neg(ct))


def _convert_t(ct, x, *, new_dtype, weak_type=False):
    return lax.convert_element_type(ct, x.aval.dtype)


_linear_unary(P.convert_element_type_p, _convert_t)


def _select_n_t(cts, which, *cases):
    ct = cts[0]
    out = [None]
    for i, c in enumerate(cases):
        if not is_undef(c):
            out.append(None)
        elif isinstance(ct, Zero):
            out.append(Zero(c.aval))
        else:
            z = _zeros(get_aval(ct))
            picked = bind(P.select_n_p, which, *[ct if j == i else z for j in range(len(cases))])
            out.append(unbroadcast(picked, c.aval))
    return out


transpose_rules[P.select_n_p] = _select_n_t


# ---------------------------------------------------------------- structural
def _reduce_sum_t(ct, x, *, axes):
    kept = [i for i in range(x.aval.ndim) if i not in axes]
    return lax.broadcast_in_dim(ct, x.aval.shape, kept)


def _broadcast_in_dim_t(ct, x, *, shape, broadcast_dimensions):
    bd = list(broadcast_dimensions)
    expanded = [d for j, d in enumerate(bd) if x.aval.shape[j] == 1 and shape[d] != 1]
    summed = tuple(sorted([i for i in range(len(shape)) if i not in bd] + expanded))
    r = lax.reduce_sum(ct, summed) if summed else ct
    return lax.reshape(r, x.aval.shape)


def _slice_t(ct, x, *, start_indices, limit_indices, strides):
    cfg = []
    for d, s, n, st in zip(x.aval.shape, start_indices, get_aval(ct).shape, strides):
        end = s + (n - 1) * st + 1 if n else s
        cfg.append((s, d - end, st - 1 if n else 0))
    return lax.pad(ct, lax.convert_element_type(0, x.aval.dtype), cfg)


def _pad_t(cts, x, padval, *, padding_config):
    ct = instantiate(cts[0])
    t_x = None
    if is_undef(x):
        unpad = [(-lo, -hi, 0) for lo, hi, _ in padding_config]
        unpadded = lax.pad(ct, lax.convert_element_type(0, x.aval.dtype), unpad)
        t_x = lax.slice(unpadded, [0] * x.aval.ndim, get_aval(unpadded).shape,
                        [i + 1 for _, _, i in padding_config])
    t_pv = None
    if is_undef(padval):
        total = lax.reduce_sum(ct, tuple(range(get_aval(ct).ndim)))
        inner = lax.reduce_sum(t_x, tuple(range(x.aval.ndim))) if t_x is not None else None
        t_pv = total if inner is None else lax.sub(total, inner)
    return [t_x, t_pv]


def _concatenate_t(cts, *xs, dimension):
    ct = cts[0]
    out, start = [], 0
    for x in xs:
        a = x.aval if is_undef(x) else get_aval(x)
        n = a.shape[dimension]
        if is_undef(x):
            if isinstance(ct, Zero):
                out.append(Zero(a))
            else:
                lo = [0] * a.ndim
                hi = list(get_aval(ct).shape)
                lo[dimension], hi[dimension] = start, start + n
                out.append(lax.slice(ct, lo, hi))
        else:
            out.append(None)
        start += n
    return out


_linear_unary(P.reduce_sum_p, _reduce_sum_t)
_linear_unary(P.broadcast_in_dim_p, _broadcast_in_dim_t)
_linear_unary(P.reshape_p, lambda ct, x, *, new_sizes: lax.reshape(ct, x.aval.shape))
_linear_unary(P.transpose_p, lambda ct, x, *, permutation:
              lax.transpose(ct, tuple(int(i) for i in np.argsort(permutation))))
_linear_unary(P.rev_p, lambda ct, x, *, dimensions: lax.rev(ct, dimensions))
_linear_unary(P.slice_p, _slice_t)
_linear_unary(P.cumsum_p, lambda ct, x, *, axis, reverse=False:
              bind(P.cumsum_p, ct, axis=axis, reverse=not reverse))
transpose_rules[P.pad_p] = _pad_t
transpose_rules[P.concatenate_p] = _concatenate_t


def _dynamic_slice_t(ct, x, *starts, slice_sizes):
    return bind(P.dynamic_update_slice_p, _zeros(x.aval), ct, *starts)


def _dynamic_update_slice_t(cts, x, upd, *starts):
    ct = instantiate(cts[0])
    ua = upd.aval if is_undef(upd) else get_aval(upd)
    t_x = bind(P.dynamic_update_slice_p, ct, _zeros(ua), *starts) if is_undef(x) else None
    t_u = bind(P.dynamic_slice_p, ct, *starts, slice_sizes=tuple(ua.shape)) if is_undef(upd) else None
    return [t_x, t_u] + [None] * len(starts)


_first_arg_linear(P.dynamic_slice_p, _dynamic_slice_t)
transpose_rules[P.dynamic_update_slice_p] = _dynamic_update_slice_t
def _index_bounds(idx, x_shape, batch_dims):
    """The largest valid index of each indexed dim, broadcast to idx's shape."""
    ia = get_aval(idx)
    k = ia.shape[-1]
    hi = np.array(x_shape[batch_dims:batch_dims + k], ia.dtype) - 1
    return lax.broadcast_in_dim(hi, ia.shape, (ia.ndim - 1,))


def _gather_t(ct, x, idx, *, batch_dims=0):
    # gather clamps out-of-range indices but scatter_add drops them: clamp here so the
    # cotangent reaches the elements the forward pass actually read
    ia = get_aval(idx)
    clamped = lax.max(lax.min(idx, _index_bounds(idx, x.aval.shape, batch_dims)),
                      lax.full(ia.shape, 0, ia.dtype))
    return bind(P.scatter_add_p, _zeros(x.aval), clamped, ct, batch_dims=batch_dims)


_first_arg_linear(P.gather_p, _gather_t)


def _scatter_add_t(cts, x, idx, upd, *, batch_dims=0):
    ct = instantiate(cts[0])
    t_u = None
    if is_undef(upd):
        # out-of-range updates were dropped: they get zero, not the (clamped) gathered ct
        ia, ua = get_aval(idx), upd.aval
        inside = lax.bitwise_and(lax.ge(idx, lax.full(ia.shape, 0, ia.dtype)),
                                 lax.le(idx, _index_bounds(idx, get_aval(ct).shape, batch_dims)))
        valid = lax.broadcast_in_dim(lax.reduce_and(inside, (ia.ndim - 1,)), ua.shape,
                                     tuple(range(ia.ndim - 1)))
        t_u = lax.select(valid, bind(P.gather_p, ct, idx, batch_dims=batch_dims), _zeros(ua))
    return [ct if is_undef(x) else None, None, t_u]


transpose_rules[P.scatter_add_p] = _scatter_add_t


# ---------------------------------------------------------------- contractions
def _ranges_like(*xs):
    start = 0
    for x in xs:
        yield list(range(start, start + len(x)))
        start += len(x)


def _dot_transpose_lhs(g, x_aval, y, dimension_numbers, swap_ans=False):
    (xc, yc), (xb, yb) = dimension_numbers
    y_ndim = get_aval(y).ndim
    x_kept = [i for i in range(x_aval.ndim) if i not in xc and i not in xb]
    y_kept = [i for i in range(y_ndim) if i not in yc and i not in yb]
    if swap_ans:
        ans_batch, ans_y, _ = _ranges_like(xb, y_kept, x_kept)
    else:
        ans_batch, _, ans_y = _ranges_like(xb, x_kept, y_kept)
    dims = ((tuple(ans_y), tuple(y_kept)), (tuple(ans_batch), tuple(yb)))
    xc_by_y = [xc[i] for i in np.argsort(yc)]
    out_axes = np.argsort(list(xb) + x_kept + xc_by_y)
    # dot_general(g, y) lays its result out as [batch, g free, y free]; dot_general(y, g)
    # as [batch, y free, g free]. Take the order that is already x's layout when there is
    # one (a matmul's weight gradient x^T @ g): no transpose is left between the product
    # and its consumers, so it lowers to one GEMM kernel with a fused epilogue.
    nb, ng, nr = len(ans_batch), get_aval(g).ndim - len(ans_batch) - len(ans_y), x_aval.ndim
    swap = list(range(nb)) + list(range(nb + ng, nr)) + list(range(nb, nb + ng))
    q = np.argsort(swap)[out_axes]
    if len(q) and (q == np.arange(len(q))).all() and not (out_axes == np.arange(len(q))).all():
        r = lax.dot_general(y, g, ((tuple(y_kept), tuple(ans_y)), (tuple(yb), tuple(ans_batch))))
    else:
        r = lax.transpose(lax.dot_general(g, y, dims), tuple(int(i) for i in out_axes))
    return lax.convert_element_type(r, x_aval.dtype)


def _dot_general_t(cts, x, y, *, dimension_numbers, preferred_element_type=None):
    ct = instantiate(cts[0])
    (xc, yc), (xb, yb) = dimension_numbers
    if is_undef(x) and is_undef(y):
        raise NotImplementedError("transpose of dot_general with both operands linear")
    if is_undef(x):
        g = lax.convert_element_type(ct, get_aval(y).dtype)
        return [_dot_transpose_lhs(g, x.aval, y, dimension_numbers), None]
    g = lax.convert_element_type(ct, get_aval(x).dtype)
    swapped = ((yc, xc), (yb, xb))
    return [None, _dot_transpose_lhs(g, y.aval, x, swapped, swap_ans=True)]


transpose_rules[P.dot_general_p] = _dot_general_t


def _dilate_shape(shape, dilation):
    return [0 if d == 0 else 1 + r * (d - 1) for d, r in zip(shape, dilation)]


def _conv_vjp_lhs_padding(in_shape, window, strides, out_shape, padding, lhs_dil, rhs_dil):
    lhs_d = _dilate_shape(in_shape, lhs_dil)
    rhs_d = _dilate_shape(window, rhs_dil)
    out_d = _dilate_shape(out_shape, strides)
    before = [r - lo - 1 for r, (lo, _) in zip(rhs_d, padding)]
    after = [l + r - 1 - o - b for l, r, o, b in zip(lhs_d, rhs_d, out_d, before)]
    return list(zip(before, after))


def _conv_vjp_rhs_padding(in_shape, window, strides, out_shape, padding, lhs_dil, rhs_dil):
    lhs_d = _dilate_shape(in_shape, lhs_dil)
    rhs_d = _dilate_shape(window, rhs_dil)
    out_d = _dilate_shape(out_shape, strides)
    lo = [p for p, _ in padding]
    hi = [o - l + r - p - 1 for o, l, r, p in zip(out_d, lhs_d, rhs_d, lo)]
    return list(zip(lo, hi))


def _axis_out_of(src, size1, x):
    shape = list(get_aval(x).shape)
    shape[src:src + 1] = [size1, shape[src] // size1]
    return lax.reshape(x, shape)


def _axis_into(src, dst, x):
    """Merge axis src into axis dst (numbered without src), src as the major part."""
    nd = get_aval(x).ndim
    perm = [i for i in range(nd) if i != src]
    perm.insert(dst, src)
    shape = [get_aval(x).shape[i] for i in perm]
    shape[dst:dst + 2] = [shape[dst] * shape[dst + 1]]
    return lax.reshape(lax.transpose(x, perm), shape)


def _swap01(x):
    nd = get_aval(x).ndim
    return lax.transpose(x, (1, 0) + tuple(range(2, nd)))


def _conv_t(cts, lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
            feature_group_count=1, batch_group_count=1, preferred_element_type=None):
    g = instantiate(cts[0])
    if is_undef(lhs) and is_undef(rhs):
        raise NotImplementedError("transpose of conv with both operands linear")
    fg, bg = feature_group_count, batch_group_count
    if is_undef(lhs):
        la, w = lhs.aval, rhs
        g = lax.convert_element_type(g, get_aval(w).dtype)
        if fg > 1:       # move the group axis of O into I, then swap I and O
            w = _axis_into(0, 1, _axis_out_of(0, fg, w))
        elif bg > 1:
            w = _axis_into(0, 1, _axis_out_of(0, bg, w))
            fg = bg
        w_sp = get_aval(w).shape[2:]
        pads = _conv_vjp_lhs_padding(la.shape[2:], w_sp, window_strides,
                                     get_aval(g).shape[2:], padding, lhs_dilation, rhs_dilation)
        kernel = _swap01(lax.rev(w, tuple(range(2, la.ndim))))
        out = lax.conv_general_dilated(g, kernel, window_strides=lhs_dilation, padding=pads,
                                       lhs_dilation=window_strides, rhs_dilation=rhs_dilation,
                                       feature_group_count=fg)
        if bg > 1:
            out = _axis_into(1, 0, _axis_out_of(1, bg, out))
        return [lax.convert_element_type(out, la.dtype), None]
    ra, x = rhs.aval, lhs
    g = lax.convert_element_type(g, get_aval(x).dtype)
    if bg > 1:
        fg, bg = bg, 1
    elif fg > 1:
        bg, fg = fg, 1
    pads = _conv_vjp_rhs_padding(get_aval(x).shape[2:], ra.shape[2:], window_strides,
                                 get_aval(g).shape[2:], padding, lhs_dilation, rhs_dilation)
    out = lax.conv_general_dilated(_swap01(x), _swap01(g), window_strides=rhs_dilation,
                                   padding=pads, lhs_dilation=lhs_dilation,
                                   rhs_dilation=window_strides, feature_group_count=fg,
                                   batch_group_count=bg)
    return [None, lax.convert_element_type(_swap01(out), ra.dtype)]


transpose_rules[P.conv_general_dilated_p] = _conv_t


def _reduce_window_sum_t(ct, x, *, window_dimensions, window_strides, padding,
                         base_dilation=None, window_dilation=None):
    nd = x.aval.ndim
    bd = base_dilation or (1,) * nd
    wd = window_dilation or (1,) * nd
    pads = _conv_vjp_lhs_padding(x.aval.shape, window_dimensions, window_strides,
                                 get_aval(ct).shape, padding, bd, wd)
    cfg = [(lo, hi, s - 1) for (lo, hi), s in zip(pads, window_strides)]
    padded = lax.pad(ct, lax.convert_element_type(0, x.aval.dtype), cfg)
    out = lax.reduce_window_sum(padded, window_dimensions, bd, [(0, 0)] * nd,
                                base_dilation=(1,) * nd, window_dilation=wd)
    assert get_aval(out).shape == x.aval.shape, (get_aval(out).shape, x.aval.shape)
    return out


_linear_unary(P.reduce_window_sum_p, _reduce_window_sum_t)


def is_linear(prim) -> bool:
    return prim in transpose_rules


__all__ = ["backward_pass", "transpose_rules", "UndefPrimal", "dtypes"]
