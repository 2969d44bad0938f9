"""The numpy backend: the reference implementation of every primitive, and the default.

`impl_rules[prim](*ndarrays, **params)` returns an ndarray (or a list for primitives
with several results) of exactly the dtype and shape the abstract-eval rule gives.
A jaxpr compiles to a flat list of steps with liveness-based freeing of buffers.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..tracer import dtypes, primitives as P
from ..tracer.core import Jaxpr, Literal

impl_rules: dict = {}


def _small_float(dt):
    return dt in (dtypes.float16, dtypes.bfloat16)


def _via_f32(fn):
    """Compute half-precision floats in float32 and round once, as GPUs do."""
    def impl(*xs, **kw):
        dt = xs[0].dtype
        if _small_float(dt):
            return np.asarray(fn(*[x.astype(np.float32) for x in xs], **kw)).astype(dt)
        out = fn(*xs, **kw)
        return out if out.dtype == dt else out.astype(dt)
    return impl


def _quiet(fn):
    return fn   # floating-point warnings are silenced once per program run (see compile_jaxpr)


_vec_erf = np.vectorize(math.erf, otypes=[np.float64])
_vec_erfc = np.vectorize(math.erfc, otypes=[np.float64])
_vec_lgamma = np.vectorize(lambda v: math.lgamma(v) if v > 0 or v != math.floor(v) else math.inf,
                           otypes=[np.float64])


def _erf_inv(y):
    y = np.asarray(y, np.float64)
    # Giles' single-precision approximation, then Newton steps on erf for full precision.
    w = -np.log(np.maximum((1.0 - y) * (1.0 + y), 1e-300))
    small = w < 5.0
    ws = w - 2.5
    p1 = 2.81022636e-08
    for c in [3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
              -0.00417768164, 0.246640727, 1.50140941]:
        p1 = c + p1 * ws
    wl = np.sqrt(np.maximum(w, 0)) - 3.0
    p2 = -0.000200214257
    for c in [0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
              0.00943887047, 1.00167406, 2.83297682]:
        p2 = c + p2 * wl
    x = np.where(small, p1, p2) * y
    for _ in range(2):
        err = _vec_erf(x) - y
        x = x - err / (2.0 / math.sqrt(math.pi) * np.exp(-x * x))
    x = np.where(y == 1, np.inf, np.where(y == -1, -np.inf, x))
    return np.where(np.abs(y) > 1, np.nan, x)


def _digamma(x):
    x = np.asarray(x, np.float64)
    res = np.zeros_like(x)
    reflect = x < 0.5
    xr = np.where(reflect, 1.0 - x, x)
    acc = np.zeros_like(x)
    for _ in range(6):   # recurrence up to x >= 6.5 for the asymptotic series
        acc -= 1.0 / xr
        xr = xr + 1.0
    inv2 = 1.0 / (xr * xr)
    series = (np.log(xr) - 0.5 / xr - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (
        1 / 240 - inv2 / 132)))))
    res = acc + series
    res = np.where(reflect, res - math.pi / np.tan(math.pi * x), res)
    return np.where((x <= 0) & (x == np.floor(x)), np.nan, res)


def _int_div(x, y):
    if dtypes.is_float(x.dtype):
        return np.divide(x, y)
    q = np.floor_divide(x, y)
    fix = (np.remainder(x, y) != 0) & ((x < 0) != (y < 0)) if x.dtype.kind == "i" else False
    return np.where(y == 0, 0, q + fix).astype(x.dtype)


def _shift(op, logical=False):
    def impl(x, y):
        bits = x.dtype.itemsize * 8
        big = (y < 0) | (y >= bits)
        ys = np.where(big, 0, y).astype(x.dtype)
        if logical and x.dtype.kind == "i":
            u = np.dtype(f"u{x.dtype.itemsize}")
            out = op(x.view(u), ys.astype(u)).view(x.dtype)
        else:
            out = op(x, ys)
        fill = (x < 0).astype(x.dtype) * -1 if (op is np.right_shift and not logical
                                                and x.dtype.kind == "i") else 0
        return np.where(big, fill, out).astype(x.dtype)
    return impl


_unary = {
    "neg": np.negative, "sign": np.sign, "floor": np.floor, "ceil": np.ceil, "round": np.round,
    "exp": np.exp, "exp2": np.exp2, "log": np.log, "log1p": np.log1p, "expm1": np.expm1,
    "tanh": np.tanh, "logistic": lambda x: 1 / (1 + np.exp(-x)), "sin": np.sin, "cos": np.cos,
    "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh,
    "cosh": np.cosh, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
    "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "cbrt": np.cbrt, "abs": np.abs,
    "erf": _vec_erf, "erfc": _vec_erfc, "erf_inv": _erf_inv, "lgamma": _vec_lgamma,
    "digamma": _digamma, "square": np.square,
}
for _n, _f in _unary.items():
    impl_rules[P.UNARY[_n]] = _quiet(_via_f32(_f))
impl_rules[P.UNARY["not"]] = lambda x: np.logical_not(x) if x.dtype == np.bool_ else np.invert(x)
impl_rules[P.UNARY["stop_gradient"]] = lambda x: x
impl_rules[P.UNARY["is_finite"]] = lambda x: np.isfinite(x.astype(np.float32) if _small_float(x.dtype) else x)
impl_rules[P.UNARY["sign"]] = _quiet(lambda x: np.sign(x).astype(x.dtype))
impl_rules[P.UNARY["abs"]] = _quiet(lambda x: np.abs(x).astype(x.dtype))
impl_rules[P.UNARY["neg"]] = _quiet(lambda x: np.negative(x).astype(x.dtype))
impl_rules[P.UNARY["square"]] = _quiet(lambda x: np.square(x).astype(x.dtype))

_binary = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "rem": np.fmod, "pow": np.power,
    "max": np.maximum, "min": np.minimum, "atan2": np.arctan2, "nextafter": np.nextafter,
}
for _n, _f in _binary.items():
    impl_rules[P.BINARY[_n]] = _via_f32(_f)
impl_rules[P.BINARY["div"]] = _via_f32(_int_div)
impl_rules[P.BINARY["and"]] = lambda x, y: np.bitwise_and(x, y)
impl_rules[P.BINARY["or"]] = lambda x, y: np.bitwise_or(x, y)
impl_rules[P.BINARY["xor"]] = lambda x, y: np.bitwise_xor(x, y)
impl_rules[P.BINARY["shift_left"]] = _shift(np.left_shift)
impl_rules[P.BINARY["shift_right_logical"]] = _shift(np.right_shift, logical=True)
impl_rules[P.BINARY["shift_right_arithmetic"]] = _shift(np.right_shift)
for _n, _f in {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
               "gt": np.greater, "ge": np.greater_equal}.items():
    impl_rules[P.COMPARE[_n]] = lambda x, y, f=_f: np.asarray(f(x, y))


def _integer_pow(x, *, y):
    with np.errstate(all="ignore"):
        if _small_float(x.dtype):
            return np.power(x.astype(np.float32), y).astype(x.dtype)
        return np.asarray(np.power(x, x.dtype.type(y)) if y >= 0 else 1 / np.power(x, -y),
                          dtype=x.dtype)


impl_rules[P.integer_pow_p] = _integer_pow
impl_rules[P.select_n_p] = lambda which, *cases: np.asarray(
    np.choose(which.astype(np.int32), np.broadcast_arrays(*cases)) if len(cases) > 2
    else np.where(which, cases[-1], cases[0]), dtype=cases[0].dtype)


def _convert(x, *, new_dtype, weak_type=False):
    new = np.dtype(new_dtype)
    if dtypes.is_float(x.dtype) and (dtypes.is_int(new) or dtypes.is_bool(new)):
        with np.errstate(all="ignore"):
            if dtypes.is_bool(new):
                return x != 0
            info = np.iinfo(new)   # saturate like XLA; NaN becomes 0
            xf = np.nan_to_num(x.astype(np.float64), nan=0.0)
            return np.clip(np.trunc(xf), info.min, info.max).astype(new)
    return np.asarray(x).astype(new)


impl_rules[P.convert_element_type_p] = _convert
# (ascontiguousarray makes 0-d arrays 1-d: reshape back)
impl_rules[P.bitcast_convert_type_p] = lambda x, *, new_dtype: np.ascontiguousarray(x).view(
    np.dtype(new_dtype)).reshape(np.shape(x))


def _iota(*, dtype, shape, dimension):
    r = np.arange(shape[dimension], dtype=np.dtype(dtype))
    return np.ascontiguousarray(np.broadcast_to(
        r.reshape([-1 if i == dimension else 1 for i in range(len(shape))]), shape))


impl_rules[P.iota_p] = _iota


def _broadcast_in_dim(x, *, shape, broadcast_dimensions):
    expanded = np.reshape(x, [x.shape[broadcast_dimensions.index(i)] if i in broadcast_dimensions
                              else 1 for i in range(len(shape))])
    return np.broadcast_to(expanded, shape)


impl_rules[P.broadcast_in_dim_p] = _broadcast_in_dim
impl_rules[P.reshape_p] = lambda x, *, new_sizes: np.reshape(x, new_sizes)
impl_rules[P.transpose_p] = lambda x, *, permutation: np.transpose(x, permutation)
impl_rules[P.rev_p] = lambda x, *, dimensions: np.flip(x, dimensions) if dimensions else x
impl_rules[P.slice_p] = lambda x, *, start_indices, limit_indices, strides: x[tuple(
    slice(s, l, st) for s, l, st in zip(start_indices, limit_indices, strides))]


def _clamped_starts(shape, sizes, starts):
    return [int(np.clip(int(s), 0, d - z)) for s, d, z in zip(starts, shape, sizes)]


def _dynamic_slice(x, *starts, slice_sizes):
    st = _clamped_starts(x.shape, slice_sizes, starts)
    return x[tuple(slice(s, s + z) for s, z in zip(st, slice_sizes))]


def _dynamic_update_slice(x, update, *starts):
    st = _clamped_starts(x.shape, update.shape, starts)
    out = np.array(x, copy=True)
    out[tuple(slice(s, s + z) for s, z in zip(st, update.shape))] = update
    return out


impl_rules[P.dynamic_slice_p] = _dynamic_slice
impl_rules[P.dynamic_update_slice_p] = _dynamic_update_slice


def _pad(x, padval, *, padding_config):
    inner = [d + max(d - 1, 0) * i for d, (_, _, i) in zip(x.shape, padding_config)]
    if any(i for _, _, i in padding_config):
        y = np.full(inner, padval, dtype=x.dtype)
        y[tuple(slice(None, None, i + 1) for _, _, i in padding_config)] = x
    else:
        y = x
    y = np.pad(y, [(max(lo, 0), max(hi, 0)) for lo, hi, _ in padding_config],
               constant_values=np.asarray(padval, dtype=x.dtype))
    return y[tuple(slice(max(-lo, 0), n - max(-hi, 0))
                   for (lo, hi, _), n in zip(padding_config, y.shape))]


impl_rules[P.pad_p] = _pad
impl_rules[P.concatenate_p] = lambda *xs, dimension: np.concatenate(xs, axis=dimension)


def _index_arrays(x, idx, batch_dims):
    """Numpy advanced-index tuple for gather semantics (batch dims first)."""
    lead = idx.shape[:-1]
    batch = [np.arange(lead[j]).reshape([-1 if i == j else 1 for i in range(len(lead))])
             for j in range(batch_dims)]
    return batch, [idx[..., i] for i in range(idx.shape[-1])]


def _gather(x, idx, *, batch_dims=0):
    k = idx.shape[-1]
    hi = np.array(x.shape[batch_dims:batch_dims + k], dtype=np.int64) - 1
    idx = np.clip(idx.astype(np.int64), 0, np.maximum(hi, 0))
    batch, picks = _index_arrays(x, idx, batch_dims)
    return x[tuple(batch + picks)]


impl_rules[P.gather_p] = _gather


def _scatter(ufunc):
    def impl(x, idx, updates, *, batch_dims=0):
        k = idx.shape[-1]
        dims = np.array(x.shape[batch_dims:batch_dims + k], dtype=np.int64)
        valid = np.all((idx >= 0) & (idx < dims), axis=-1)   # out-of-bounds updates are dropped
        batch, picks = _index_arrays(x, idx.astype(np.int64), batch_dims)
        full = [np.broadcast_to(a, valid.shape)[valid] for a in batch + picks]
        out = np.array(x, copy=True)
        if ufunc is None:
            out[tuple(full)] = updates[valid]
        else:
            ufunc.at(out, tuple(full), updates[valid])
        return out
    return impl


for _n, _u in [("scatter", None), ("scatter_add", np.add), ("scatter_mul", np.multiply),
               ("scatter_min", np.minimum), ("scatter_max", np.maximum)]:
    impl_rules[P.SCATTERS[_n]] = _scatter(_u)


def _reduction(fn, init=None):
    def impl(x, *, axes):
        if _small_float(x.dtype):
            return fn(x.astype(np.float32), axes, None).astype(x.dtype)
        return np.asarray(fn(x, axes, init(x.dtype) if init else None), dtype=x.dtype)
    return impl


def _lowest(dt):
    return -np.inf if dtypes.is_float(dt) else (False if dtypes.is_bool(dt) else np.iinfo(dt).min)


def _highest(dt):
    return np.inf if dtypes.is_float(dt) else (True if dtypes.is_bool(dt) else np.iinfo(dt).max)


impl_rules[P.reduce_sum_p] = _reduction(lambda x, a, _: np.sum(x, axis=a, dtype=x.dtype))
impl_rules[P.reduce_prod_p] = _reduction(lambda x, a, _: np.prod(x, axis=a, dtype=x.dtype))
impl_rules[P.reduce_max_p] = _reduction(lambda x, a, i: np.max(x, axis=a, initial=_lowest(x.dtype)))
impl_rules[P.reduce_min_p] = _reduction(lambda x, a, i: np.min(x, axis=a, initial=_highest(x.dtype)))
impl_rules[P.reduce_and_p] = lambda x, *, axes: (np.all(x, axis=axes) if x.dtype == np.bool_
                                                  else np.bitwise_and.reduce(x, axis=axes))
impl_rules[P.reduce_or_p] = lambda x, *, axes: (np.any(x, axis=axes) if x.dtype == np.bool_
                                                 else np.bitwise_or.reduce(x, axis=axes))
impl_rules[P.argmax_p] = lambda x, *, axis, index_dtype: np.argmax(x, axis=axis).astype(index_dtype)
impl_rules[P.argmin_p] = lambda x, *, axis, index_dtype: np.argmin(x, axis=axis).astype(index_dtype)


def _cumulative(fn):
    def impl(x, *, axis, reverse=False):
        y = np.flip(x, axis) if reverse else x
        cdt = np.float32 if _small_float(x.dtype) else x.dtype
        out = fn(y.astype(cdt), axis).astype(x.dtype)
        return np.flip(out, axis) if reverse else out
    return impl


impl_rules[P.cumsum_p] = _cumulative(lambda x, a: np.cumsum(x, axis=a, dtype=x.dtype))
impl_rules[P.cumprod_p] = _cumulative(lambda x, a: np.cumprod(x, axis=a, dtype=x.dtype))
impl_rules[P.cummax_p] = _cumulative(lambda x, a: np.maximum.accumulate(x, axis=a))
impl_rules[P.cummin_p] = _cumulative(lambda x, a: np.minimum.accumulate(x, axis=a))


def _acc_dtype(dt, preferred):
    if preferred is not None:
        return np.dtype(preferred)
    return np.dtype(np.float32) if _small_float(dt) else dt


def _dot_general(lhs, rhs, *, dimension_numbers, preferred_element_type=None):
    (lc, rc), (lb, rb) = dimension_numbers
    acc = _acc_dtype(lhs.dtype, preferred_element_type)
    lf = [i for i in range(lhs.ndim) if i not in lc and i not in lb]
    rf = [i for i in range(rhs.ndim) if i not in rc and i not in rb]
    size = lambda x, ax: int(np.prod([x.shape[i] for i in ax], dtype=np.int64))
    a = np.transpose(lhs, list(lb) + lf + list(lc)).reshape(size(lhs, lb), size(lhs, lf), size(lhs, lc))
    b = np.transpose(rhs, list(rb) + list(rc) + rf).reshape(size(rhs, rb), size(rhs, rc), size(rhs, rf))
    out = np.matmul(a.astype(acc, copy=False), b.astype(acc, copy=False))
    shape = [lhs.shape[i] for i in lb] + [lhs.shape[i] for i in lf] + [rhs.shape[i] for i in rf]
    out_dt = np.dtype(preferred_element_type) if preferred_element_type else lhs.dtype
    return out.reshape(shape).astype(out_dt, copy=False)


impl_rules[P.dot_general_p] = _dot_general


def _windows(x, window, strides, window_dilation):
    """Strided, dilated windows over the trailing len(window) axes: (..., out..., k...)."""
    n = len(window)
    span = [(k - 1) * d + 1 for k, d in zip(window, window_dilation)]
    axes = tuple(range(x.ndim - n, x.ndim))
    w = sliding_window_view(x, span, axis=axes)
    lead = (slice(None),) * (x.ndim - n)
    return w[lead + tuple(slice(None, None, s) for s in strides)
             + tuple(slice(None, None, d) for d in window_dilation)]


def _conv(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
          feature_group_count=1, batch_group_count=1, preferred_element_type=None):
    acc = _acc_dtype(lhs.dtype, preferred_element_type)
    out_dt = np.dtype(preferred_element_type) if preferred_element_type else lhs.dtype
    nsp = lhs.ndim - 2
    zero = np.zeros((), acc)
    x = _pad(lhs.astype(acc, copy=False), zero, padding_config=[(0, 0, 0)] * 2 + [
        (lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)])
    bg, g = batch_group_count, feature_group_count
    w = rhs.astype(acc, copy=False)
    N, C = x.shape[:2]
    O, I = w.shape[:2]
    ks = w.shape[2:]
    win = _windows(x, ks, window_strides, rhs_dilation)            # N, C, P..., K...
    P_ = win.shape[2:2 + nsp]
    win = win.reshape((bg, N // bg, g, I) + P_ + ks)
    # -> bg, g, N', P..., I, K...
    order = [0, 2, 1] + list(range(4, 4 + nsp)) + [3] + list(range(4 + nsp, 4 + 2 * nsp))
    cols = np.transpose(win, order).reshape(bg, g, (N // bg) * int(np.prod(P_, dtype=np.int64)),
                                            I * int(np.prod(ks, dtype=np.int64)))
    og = O // (g * bg)
    wm = w.reshape(bg, g, og, I * int(np.prod(ks, dtype=np.int64)))  # bg, g, og, I*K
    out = np.matmul(cols, np.swapaxes(wm, -1, -2))                   # bg, g, N'*P, og
    out = out.reshape((bg, g, N // bg) + P_ + (og,))
    out = np.moveaxis(out, 2, 0)                                      # N', bg, g, P..., og
    out = np.moveaxis(out, -1, 3)                                     # N', bg, g, og, P...
    return np.ascontiguousarray(out.reshape((N // bg, O) + P_)).astype(out_dt, copy=False)


impl_rules[P.conv_general_dilated_p] = _conv


def _reduce_window(op, pairwise, init):
    def impl(x, *, window_dimensions, window_strides, padding, base_dilation=None,
             window_dilation=None):
        nd = x.ndim
        base_dilation = base_dilation or (1,) * nd
        window_dilation = window_dilation or (1,) * nd
        cdt = np.float32 if _small_float(x.dtype) else x.dtype
        xp = _pad(x.astype(cdt), np.asarray(init(x.dtype), cdt), padding_config=[
            (lo, hi, b - 1) for (lo, hi), b in zip(padding, base_dilation)])
        if int(np.prod(window_dimensions)) <= 64:
            # small windows (pooling): combine one strided slice per window offset, which
            # streams memory instead of reducing over a 2n-d strided view
            out_shape = [len(range(0, d - (k - 1) * wd, s)) for d, k, s, wd in
                         zip(xp.shape, window_dimensions, window_strides, window_dilation)]
            acc = None
            for off in np.ndindex(*window_dimensions):
                sl = tuple(slice(o * wd, o * wd + (n - 1) * s + 1, s) for o, wd, n, s in
                           zip(off, window_dilation, out_shape, window_strides))
                acc = xp[sl].copy() if acc is None else pairwise(acc, xp[sl], out=acc)
            return acc.astype(x.dtype, copy=False)
        win = _windows(xp, window_dimensions, window_strides, window_dilation)
        return op(win, axis=tuple(range(nd, 2 * nd))).astype(x.dtype)
    return impl


impl_rules[P.reduce_window_sum_p] = _reduce_window(np.sum, np.add, lambda dt: 0)
impl_rules[P.reduce_window_max_p] = _reduce_window(np.max, np.maximum, _lowest)
impl_rules[P.reduce_window_min_p] = _reduce_window(np.min, np.minimum, _highest)


def _sort(*xs, dimension, is_stable=True, num_keys=1):
    moved = [np.moveaxis(x, dimension, -1) for x in xs]
    keys = [k.astype(np.float32) if _small_float(k.dtype) else k for k in moved[:num_keys]]
    order = (np.argsort(keys[0], axis=-1, kind="stable") if num_keys == 1
             else np.lexsort(keys[::-1], axis=-1))
    return [np.moveaxis(np.take_along_axis(m, order, axis=-1), -1, dimension) for m in moved]


def _top_k(x, *, k):
    key = x.astype(np.float32) if _small_float(x.dtype) else x
    n = x.shape[-1]
    order = np.argsort(key[..., ::-1], axis=-1, kind="stable")[..., ::-1][..., :k]
    idx = (n - 1 - order).astype(np.int32)
    return [np.take_along_axis(x, idx, axis=-1), idx]


impl_rules[P.sort_p] = _sort
impl_rules[P.top_k_p] = _top_k


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), as in JAX. Works on any array type
    with uint32 +, ^, << and >>."""
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for r in range(5):
        for rot in rotations[r % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(rot)) | (x1 >> np.uint32(32 - rot))
            x1 = x0 ^ x1
        x0 = x0 + ks[(r + 1) % 3]
        x1 = x1 + ks[(r + 2) % 3] + np.uint32(r + 1)
    return [x0, x1]


impl_rules[P.threefry2x32_p] = _quiet(lambda *a: [np.asarray(v, np.uint32) for v in
                                                  threefry2x32(*np.broadcast_arrays(*a))])


# ---------------------------------------------------------------- control flow
def _cond(index, *ops, branches):
    i = int(np.clip(int(index), 0, len(branches) - 1))
    return run_jaxpr(branches[i], ops)


def _while(*args, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    cc, bc = list(args[:cond_nconsts]), list(args[cond_nconsts:cond_nconsts + body_nconsts])
    carry = list(args[cond_nconsts + body_nconsts:])
    while bool(run_jaxpr(cond_jaxpr, cc + carry)[0]):
        carry = run_jaxpr(body_jaxpr, bc + carry)
    return carry


def _scan(*args, jaxpr, length, reverse, num_consts, num_carry):
    consts, carry = list(args[:num_consts]), list(args[num_consts:num_consts + num_carry])
    xs = args[num_consts + num_carry:]
    ys = [np.empty((length,) + a.shape, a.dtype) for a in jaxpr.out_avals[num_carry:]]
    for i in (range(length - 1, -1, -1) if reverse else range(length)):
        out = run_jaxpr(jaxpr, consts + carry + [x[i] for x in xs])
        carry = out[:num_carry]
        for y, o in zip(ys, out[num_carry:]):
            y[i] = o
    return carry + ys


impl_rules[P.cond_p] = _cond
impl_rules[P.while_p] = _while
impl_rules[P.scan_p] = _scan


# ---------------------------------------------------------------- compiling a jaxpr
def compile_jaxpr(jaxpr: Jaxpr):
    """A runner `f(list of ndarrays for constvars + invars) -> list of ndarrays`."""
    slot = {}
    for v in list(jaxpr.constvars) + list(jaxpr.invars):
        slot[v] = len(slot)
    n_in = len(slot)
    steps = []
    for e in jaxpr.eqns:
        ins = [(True, x.val) if isinstance(x, Literal) else (False, slot[x]) for x in e.inputs]
        for o in e.outputs:
            slot[o] = len(slot)
        impl = impl_rules.get(e.prim)
        if impl is None:
            raise NotImplementedError(f"the numpy backend has no implementation of {e.prim.name}")
        steps.append([impl, e.params, ins, [slot[o] for o in e.outputs], e.prim.multiple_results, []])
    outs = [(True, v.val) if isinstance(v, Literal) else (False, slot[v]) for v in jaxpr.outvars]
    # free each intermediate after its last use (inputs stay owned by the caller)
    last = {}
    for i, s in enumerate(steps):
        for lit, j in s[2]:
            if not lit:
                last[j] = i
    keep = {j for lit, j in outs if not lit}
    for j, i in last.items():
        if j >= n_in and j not in keep:
            steps[i][5].append(j)
    n = len(slot)

    def run(inputs):
        env = list(inputs) + [None] * (n - n_in)
        with np.errstate(all="ignore"):
            _run_steps(env)
        return [v if lit else env[v] for lit, v in outs]

    def _run_steps(env):
        for impl, params, ins, outs_, multi, free in steps:
            r = impl(*[v if lit else env[v] for lit, v in ins], **params)
            if multi:
                for o, val in zip(outs_, r):
                    env[o] = val
            else:
                env[outs_[0]] = r
            for j in free:
                env[j] = None
    return run


_compiled: dict[int, tuple] = {}


def run_jaxpr(jaxpr: Jaxpr, args):
    """Run a (sub-)jaxpr, compiling it once per jaxpr object."""
    entry = _compiled.get(id(jaxpr))
    if entry is None or entry[0] is not jaxpr:
        entry = _compiled[id(jaxpr)] = (jaxpr, compile_jaxpr(jaxpr))
    return entry[1](list(args))


class NumpyBackend:
    name = "numpy"
    platform = "cpu"

    def put(self, x, aval):
        # a copy: the caller may mutate its numpy array after handing it over
        return np.array(x, dtype=aval.dtype, copy=True)

    def to_numpy(self, buf):
        return buf

    def block(self, buf):
        return buf

    def apply(self, prim, bufs, params):
        with np.errstate(all="ignore"):
            out = impl_rules[prim](*bufs, **params)
        return out if prim.multiple_results else [out]

    def compile(self, closed):
        run = compile_jaxpr(closed.jaxpr)
        consts = [self.put(c._buf if hasattr(c, "_buf") else c, c_aval)
                  for c, c_aval in zip(closed.consts, [v.aval for v in closed.jaxpr.constvars])]
        return lambda bufs: run(consts + bufs)
