"""The numpy backend: the reference implementation of every primitive, and the default.

`impl_rules[prim](*ndarrays, **params)` returns an ndarray (or a list for primitives
with several results) of exactly the dtype and shape the abstract-eval rule gives.
A jaxpr compiles to a flat list of steps with liveness-based freeing of buffers.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import queue
import sys
import threading

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
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_BITSELECT_MIN_SIZE = 4096


def _bitselect_into(buf, which, *cases):
    """buf = which ? cases[1] : cases[0] as bits: b ^ ((a ^ b) & mask), three SIMD passes
    where np.where branches per element (6x slower on a random mask); the same bits."""
    u = _UINT[buf.dtype.itemsize]
    if which.dtype != np.bool_:
        which = which != 0
    a, b, o = cases[1].view(u), cases[0].view(u), buf.view(u)
    np.bitwise_xor(a, b, out=o)
    np.bitwise_and(o, np.negative(which, dtype=u, casting="unsafe"), out=o)
    np.bitwise_xor(o, b, out=o)
    return buf


def _select_n(which, *cases):
    dt = cases[0].dtype
    if len(cases) > 2:
        return np.asarray(np.choose(which.astype(np.int32), np.broadcast_arrays(*cases)), dtype=dt)
    shape = np.broadcast_shapes(which.shape, *(c.shape for c in cases))
    if math.prod(shape) < _BITSELECT_MIN_SIZE or dt.itemsize not in _UINT:
        return np.asarray(np.where(which, cases[1], cases[0]), dtype=dt)
    return _bitselect_into(np.empty(shape, dt), which, *cases)


impl_rules[P.select_n_p] = _select_n


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
    if _pads_anew(padding_config):      # one allocation, one strided assignment
        shape = [lo + hi + (d + max(d - 1, 0) * i) for d, (lo, hi, i) in zip(x.shape, padding_config)]
        return _pad_into(np.empty(shape, x.dtype), x, padval, padding_config=padding_config)
    if all(lo >= 0 and hi >= 0 for lo, hi, _ in padding_config):
        return x                        # no padding at all
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


class _Blas:
    """OpenBLAS's thread count, found in the library numpy loaded (a no-op elsewhere).

    A matmul below `serial_flops` runs on one BLAS thread: on a busy machine a multi-threaded
    OpenBLAS call waits for its worker threads to be scheduled, which for the many small
    matmuls of a training step costs far more than the parallelism gains.
    POLYJIT_NUMPY_BLAS_SERIAL_FLOPS overrides the threshold (0: never force one thread)."""
    serial_flops = float(os.environ.get("POLYJIT_NUMPY_BLAS_SERIAL_FLOPS", 2 ** 27))

    def __init__(self):
        self.get = self.set = None
        try:
            with open("/proc/self/maps") as f:
                paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower()
                                and ln.split()[-1].startswith("/")})
        except OSError:
            return
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for pre, suf in [("scipy_openblas", "64_"), ("scipy_openblas", ""),
                             ("openblas", "64_"), ("openblas", "")]:
                get = getattr(lib, f"{pre}_get_num_threads{suf}", None)
                set_ = getattr(lib, f"{pre}_set_num_threads{suf}", None)
                if get is not None and set_ is not None:
                    get.restype, set_.argtypes, set_.restype = ctypes.c_int, [ctypes.c_int], None
                    self.get, self.set = get, set_
                    return

    @contextlib.contextmanager
    def serial(self):
        """One BLAS thread inside: for matmuls run side by side by _parallel_for."""
        n = self.get() if self.set is not None else 1
        if n > 1:
            self.set(1)
        try:
            yield
        finally:
            if n > 1:
                self.set(n)

    def matmul(self, a, b, out=None):
        if a.ndim < 2 or b.ndim < 2:
            flops = 2.0 * max(a.size, b.size)
        else:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            flops = 2.0 * a.shape[-2] * a.shape[-1] * b.shape[-1] * math.prod(batch)
        if flops >= self.serial_flops:
            return np.matmul(a, b, out=out)
        with self.serial():
            return np.matmul(a, b, out=out)


_blas = _Blas()
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=64)
def _ones(n, dt):
    return np.ones(n, dt)


_sum = _reduction(lambda x, a, _: np.sum(x, axis=a, dtype=x.dtype))


def _reduce_sum(x, *, axes):
    """Large float sums over leading or trailing axes as matrix-vector products: BLAS
    streams them at memory speed with blocked accumulation (numpy's reduction is ~3x
    slower); any remaining axes are summed by numpy on the much smaller partial result."""
    nd = x.ndim
    ax = sorted({a % nd for a in axes}) if nd else []
    if x.dtype not in _FLOATS or not ax or x.size < 4096 or not x.flags.c_contiguous:
        return _sum(x, axes=axes)
    t = 0
    while t < len(ax) and ax[-1 - t] == nd - 1 - t:
        t += 1
    lead = 0
    while lead < len(ax) and ax[lead] == lead:
        lead += 1
    if t and math.prod(x.shape[nd - t:]) >= 16:
        m = math.prod(x.shape[nd - t:])
        y = _blas.matmul(x.reshape(-1, m), _ones(m, x.dtype)).reshape(x.shape[:nd - t])
        rest = tuple(ax[:len(ax) - t])
    elif lead and math.prod(x.shape[:lead]) >= 16:
        m = math.prod(x.shape[:lead])
        y = _blas.matmul(_ones(m, x.dtype), x.reshape(m, -1)).reshape(x.shape[lead:])
        rest = tuple(a - lead for a in ax[lead:])
    else:
        return _sum(x, axes=axes)
    return np.sum(y, axis=rest, dtype=x.dtype) if rest else y


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
    out = _blas.matmul(a.astype(acc, copy=False), b.astype(acc, copy=False))
    shape = [lhs.shape[i] for i in lb] + [lhs.shape[i] for i in lf] + [rhs.shape[i] for i in rf]
    out_dt = np.dtype(preferred_element_type) if preferred_element_type else lhs.dtype
    return out.reshape(shape).astype(out_dt, copy=False)


impl_rules[P.dot_general_p] = _dot_general
impl_rules[P.reduce_sum_p] = _reduce_sum


def _windows(x, window, strides, window_dilation):
    """Strided, dilated windows over the trailing len(window) axes: (..., out..., k...)."""
    n = len(window)
    span = [(k - 1) * d + 1 for k, d in zip(window, window_dilation)]
    axes = tuple(range(x.ndim - n, x.ndim))
    w = sliding_window_view(x, span, axis=axes)
    lead = (slice(None),) * (x.ndim - n)
    return w[lead + tuple(slice(None, None, s) for s in strides)
             + tuple(slice(None, None, d) for d in window_dilation)]


_tls = threading.local()
_COLS_BLOCK_BYTES = 2 << 20


def _scratch(shape, dtype, which="buf"):
    """A per-thread scratch array for im2col columns (consumed before the impl returns):
    reusing it spares the allocator a fresh multi-megabyte block, and its page faults,
    on every convolution. `which` names one of several."""
    n = math.prod(shape) * np.dtype(dtype).itemsize
    buf = getattr(_tls, which, None)
    if buf is None or buf.nbytes < n:
        buf = np.empty(max(n, 1), np.uint8)
        setattr(_tls, which, buf)
    return buf[:n].view(dtype).reshape(shape)


try:
    _THREADS = (int(os.environ.get("POLYJIT_NUMPY_THREADS", 0))
                or min(len(os.sched_getaffinity(0)), 4))
except AttributeError:     # no sched_getaffinity (macOS, Windows)
    _THREADS = min(os.cpu_count() or 1, 4)


class _Job:
    """Blocks 0..n-1 of a _parallel_for, claimed one at a time by whichever thread asks."""

    def __init__(self, n, fn):
        self.n, self.fn, self.next, self.busy, self.error = n, fn, 0, 0, None
        self.lock, self.idle = threading.Lock(), threading.Event()

    def work(self):
        while True:
            with self.lock:
                i = self.next
                if i >= self.n:
                    return
                self.next, self.busy = i + 1, self.busy + 1
            try:
                self.fn(i)
            except BaseException as err:     # the caller re-raises it; stop handing out blocks
                self.error, self.next = err, self.n
            finally:
                with self.lock:
                    self.busy -= 1
                    if not self.busy and self.next >= self.n:
                        self.idle.set()


_jobs = queue.SimpleQueue()
_helpers = []


def _helper():
    with np.errstate(all="ignore"):      # as on the caller's side (compile_jaxpr's run)
        while True:
            _jobs.get().work()


def _after_fork():        # a forked child has none of the parent's helper threads
    global _jobs
    _jobs = queue.SimpleQueue()
    _helpers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _parallel_for(n, fn):
    """fn(0) .. fn(n-1) on the calling thread and up to _THREADS - 1 helper threads (numpy
    and BLAS release the GIL). The caller claims blocks too and waits only for blocks a
    helper has started: on a busy machine an unscheduled helper leaves its share to the
    caller instead of stalling it."""
    k = min(n, _THREADS)
    if k <= 1:
        for i in range(n):
            fn(i)
        return
    while len(_helpers) < k - 1:
        _helpers.append(threading.Thread(target=_helper, daemon=True, name="polyjit-numpy"))
        _helpers[-1].start()
    job = _Job(n, fn)
    with _blas.serial():         # the blocks' matmuls already run side by side
        for _ in range(k - 1):
            _jobs.put(job)
        job.work()
        with job.lock:
            wait = job.busy > 0
        if wait:
            job.idle.wait()
    job.fn = None          # a helper that wakes up late finds no block and drops the job
    if job.error is not None:
        raise job.error


def _image_block(n_images, bytes_per_image):
    """Images per block of a convolution: its columns still in cache for its matmul, and
    at least one block per thread."""
    return max(1, min(_COLS_BLOCK_BYTES // bytes_per_image, -(-n_images // _THREADS)))


def _conv(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
          feature_group_count=1, batch_group_count=1, preferred_element_type=None):
    """im2col + one batched matmul. Stride-1 convolutions read their columns as flat shifted
    runs of the padded input (the "padded-row" trick): the copy streams long contiguous runs
    and the matmul output is already (N, O, spatial) apart from the padding columns.
    The padded input and the columns live in per-thread scratch buffers."""
    acc = _acc_dtype(lhs.dtype, preferred_element_type)
    out_dt = np.dtype(preferred_element_type) if preferred_element_type else lhs.dtype
    nsp = lhs.ndim - 2
    bg, g = batch_group_count, feature_group_count
    w = rhs.astype(acc, copy=False)
    N, O, I = lhs.shape[0], rhs.shape[0], rhs.shape[1]
    ks = tuple(rhs.shape[2:])
    K = int(np.prod(ks, dtype=np.int64))
    Nb, og = N // bg, O // (g * bg)
    span = [(k - 1) * d + 1 for k, d in zip(ks, rhs_dilation)]
    dil_in = [(n - 1) * d + 1 if n else 0 for n, d in zip(lhs.shape[2:], lhs_dilation)]
    padded = [n + lo + hi for n, (lo, hi) in zip(dil_in, padding)]
    Ps = tuple(max(0, (p - sp) // s + 1) if p >= sp else 0
               for p, sp, s in zip(padded, span, window_strides))
    Pn = int(np.prod(Ps, dtype=np.int64))
    if Pn == 0 or N == 0 or O == 0:
        return np.zeros((Nb, O) + Ps, out_dt)
    wm = w.reshape(bg, g, og, I * K)
    unit = all(s == 1 for s in window_strides)
    R = int(np.prod(padded[1:], dtype=np.int64))                  # padded row length
    wide = lambda n: R <= 2 * n                                      # padding columns <= half
    flat_p = unit and Pn >= K and wide(int(np.prod(Ps[1:], dtype=np.int64)))
    if flat_p:
        # the padded input with one slack row along the first spatial axis, so that every
        # flat run of rows that starts inside an (n, c) image stays inside it
        x = lhs.astype(acc, copy=False)
        if any(d != 1 for d in lhs_dilation) or any(lo < 0 or hi < 0 for lo, hi in padding):
            x = _pad(x, np.zeros((), acc), padding_config=[(0, 0, 0)] * 2 + [
                (lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)])
            pads = [(0, 0)] * nsp
        else:
            pads = list(padding)
        xp = _scratch(x.shape[:2] + (padded[0] + 1,) + tuple(padded[1:]), acc, "pad")
        xp.fill(0)
        xp[(slice(None),) * 2 + tuple(slice(lo, lo + n) for (lo, _), n in
                                      zip(pads, x.shape[2:]))] = x
        st, item = xp.strides, xp.itemsize
        # columns: for each kernel tap, the run of Ps[0] padded rows starting at that tap;
        # output positions in the padding columns are computed and dropped
        L = Ps[0] * R
        view = np.lib.stride_tricks.as_strided(
            xp, (bg, Nb, g, I) + ks + (L,),
            (Nb * st[0], st[0], I * st[1], st[1]) + tuple(d * t for d, t in
                                                         zip(rhs_dilation, st[2:])) + (item,),
            writeable=False)
        # a few images at a time, so that each block of columns is still in cache for its
        # matmul, and at least one block per thread; each block's result lands in its place
        # in the output (numpy's matmul runs one gemm per image whatever the block size)
        res = np.empty((Nb, bg, g, og) + Ps, out_dt)
        B = _image_block(Nb, bg * g * I * K * L * item)

        def block(b):
            src = view[:, b * B:(b + 1) * B]
            cols = _scratch(src.shape, acc)
            np.copyto(cols, src)
            cols = cols.reshape(bg, -1, g, I * K, L)
            o = _scratch((bg, cols.shape[1], g, og, L), acc, "out")
            o = _blas.matmul(wm[:, None], cols, o)
            o = o.reshape((bg, -1, g, og, Ps[0]) + tuple(padded[1:]))
            res[b * B:(b + 1) * B] = np.moveaxis(
                o[(Ellipsis,) + tuple(slice(0, p) for p in Ps[1:])], 1, 0)
        _parallel_for(-(-Nb // B), block)
        return res.reshape((Nb, O) + Ps)
    else:
        cfg = [(0, 0, 0)] * 2 + [(lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)]
        x = lhs.astype(acc, copy=False)
        if _pads_anew(cfg):
            x = _pad_into(_scratch(x.shape[:2] + tuple(padded), acc, "pad"), x, 0,
                          padding_config=cfg)
        else:
            x = _pad(x, np.zeros((), acc), padding_config=cfg)
        win = _windows(x, ks, window_strides, rhs_dilation)       # N, C, P..., K...
        win = win.reshape((bg, Nb, g, I) + Ps + ks)
        sp_ax, k_ax = tuple(range(4, 4 + nsp)), tuple(range(4 + nsp, 4 + 2 * nsp))
        if Pn >= K:
            # bg, N', g, I, K..., P...: output positions innermost; in blocks of images as above
            src = np.transpose(win, (0, 1, 2, 3) + k_ax + sp_ax)
            res = np.empty((Nb, bg, g, og, Pn), out_dt)
            B = _image_block(Nb, bg * g * I * K * Pn * np.dtype(acc).itemsize)

            def block(b):
                cols = _scratch(src[:, b * B:(b + 1) * B].shape, acc)
                np.copyto(cols, src[:, b * B:(b + 1) * B])
                cols = cols.reshape(bg, -1, g, I * K, Pn)
                o = _scratch((bg, cols.shape[1], g, og, Pn), acc, "out")
                o = _blas.matmul(wm[:, None], cols, o)
                res[b * B:(b + 1) * B] = np.moveaxis(o, 1, 0)      # bg, B, g, og, P
            _parallel_for(-(-Nb // B), block)
            return res.reshape((Nb, O) + Ps)
        else:
            # bg, g, N', P..., I, K...: kernel taps innermost (weight gradients: big kernels);
            # one matmul (splitting its rows to run side by side can change its rounding)
            src = np.transpose(win, (0, 2, 1) + sp_ax + (3,) + k_ax)
            cols = _scratch(src.shape, acc)
            np.copyto(cols, src)
            cols = cols.reshape(bg, g, Nb * Pn, I * K)
            out = _blas.matmul(cols, np.swapaxes(wm, -1, -2))     # bg, g, N'*P, og
            out = np.transpose(out.reshape(bg, g, Nb, Pn, og), (2, 0, 1, 4, 3))
    out = np.ascontiguousarray(out, dtype=out_dt)
    return out.reshape((Nb, O) + Ps)


impl_rules[P.conv_general_dilated_p] = _conv


def _reduce_window(op, pairwise, init):
    def impl(x, *, window_dimensions, window_strides, padding, base_dilation=None,
             window_dilation=None):
        nd = x.ndim
        base_dilation = base_dilation or (1,) * nd
        window_dilation = window_dilation or (1,) * nd
        cdt = np.float32 if _small_float(x.dtype) else x.dtype
        xp = _pad(x.astype(cdt, copy=False), np.asarray(init(x.dtype), cdt), padding_config=[
            (lo, hi, b - 1) for (lo, hi), b in zip(padding, base_dilation)])
        if int(np.prod(window_dimensions)) <= 64:
            # small windows (pooling): combine one strided slice per window offset, which
            # streams memory instead of reducing over a 2n-d strided view
            out_shape = [len(range(0, d - (k - 1) * wd, s)) for d, k, s, wd in
                         zip(xp.shape, window_dimensions, window_strides, window_dilation)]
            parts = [xp[tuple(slice(o * wd, o * wd + (n - 1) * s + 1, s) for o, wd, n, s in
                              zip(off, window_dilation, out_shape, window_strides))]
                     for off in np.ndindex(*window_dimensions)]
            if len(parts) == 1 or any(n == 0 for n in out_shape):
                acc = parts[0].copy()
            else:
                acc = pairwise(parts[0], parts[1])
                for part in parts[2:]:
                    pairwise(acc, part, out=acc)
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
# Elementwise primitives that can write into a given float32/float64 buffer: `ufunc(*args,
# out=buf)` computes what the impl computes when every operand has the result's dtype.
_UFUNC_OUT = {P.BINARY["add"]: np.add, P.BINARY["sub"]: np.subtract, P.BINARY["mul"]: np.multiply,
              P.BINARY["div"]: np.divide, P.BINARY["max"]: np.maximum,
              P.BINARY["min"]: np.minimum, P.UNARY["neg"]: np.negative, P.UNARY["exp"]: np.exp,
              P.UNARY["log"]: np.log, P.UNARY["sqrt"]: np.sqrt, P.UNARY["tanh"]: np.tanh,
              P.UNARY["abs"]: np.abs, P.UNARY["square"]: np.square}
# the impls these stand for: a replaced impl_rules entry disables its buffer reuse
_UFUNC_IMPL = {p: impl_rules[p] for p in _UFUNC_OUT}
_POOL_MIN_SIZE = 1 << 14        # elements: smaller arrays are cheap to allocate
_POOL_DTYPES = _FLOATS


def _convert_into(buf, x, *, new_dtype, weak_type=False):
    np.copyto(buf, x, casting="unsafe")
    return buf


def _lattice(shape, cfg):
    """Where a pad puts its operand's elements: one strided slice per axis."""
    return tuple(slice(lo, lo + d + max(d - 1, 0) * i, i + 1) for d, (lo, _, i) in zip(shape, cfg))


def _pads_anew(cfg):
    """Whether _pad builds a new array that _pad_into can build in place: no negative (cropping)
    padding, and not all zero (then _pad returns its operand itself)."""
    return all(lo >= 0 and hi >= 0 for lo, hi, _ in cfg) and any(lo or hi or i for lo, hi, i in cfg)


def _pad_into(buf, x, padval, *, padding_config):
    pv = np.asarray(padval, dtype=x.dtype)
    buf.fill(pv if pv.any() else 0)          # as _pad: np.zeros for any zero
    buf[_lattice(x.shape, padding_config)] = x
    return buf


def _ufunc_into(uf):
    fn = lambda buf, *args, **_: uf(*args, out=buf)
    fn.inplace = True     # buf may be one of args (elementwise: each element read, then written)
    return fn


def _ufunc(e):
    """The ufunc that computes e as its impl does (operands of the result's dtype), or None."""
    if e.prim not in _UFUNC_OUT or impl_rules.get(e.prim) is not _UFUNC_IMPL[e.prim]:
        return None
    dt = np.dtype(e.outputs[0].aval.dtype)
    ok = dt in _POOL_DTYPES and all(np.dtype(x.aval.dtype) == dt for x in e.inputs)
    return _UFUNC_OUT[e.prim] if ok else None


def _out_rule(e):
    """`fn(buf, *args, **params)` writing e's result into buf, or None."""
    out = e.outputs[0].aval if len(e.outputs) == 1 else None
    if out is None or np.dtype(out.dtype) not in _POOL_DTYPES or math.prod(out.shape) < _POOL_MIN_SIZE:
        return None
    if (uf := _ufunc(e)) is not None:
        return _ufunc_into(uf)
    if e.prim is P.convert_element_type_p and impl_rules.get(e.prim) is _convert:
        src = np.dtype(e.inputs[0].aval.dtype)
        if src in _POOL_DTYPES or dtypes.is_bool(src) or dtypes.is_int(src):
            return _convert_into
    if e.prim is P.pad_p and impl_rules.get(e.prim) is _pad and _pads_anew(e.params["padding_config"]):
        return _pad_into
    if e.prim is P.select_n_p and impl_rules.get(e.prim) is _select_n and len(e.inputs) == 3:
        return _bitselect_into
    return None


def _sole_refcount():
    """What sys.getrefcount reports, in _run_steps's pattern, for an array nothing else holds
    (interpreters differ in whether a local's load counts)."""
    env = [np.empty(1)]
    a = env[0]
    env[0] = None
    return sys.getrefcount(a)


_SOLE = _sole_refcount()


def _cse(jaxpr):
    """The equations with repeats dropped (same primitive, params and operands: every
    primitive is a pure function of them) and their results' uses renamed; the outvars."""
    rename, seen, eqns = {}, {}, []
    for e in jaxpr.eqns:
        if any(not isinstance(x, Literal) and x in rename for x in e.inputs):
            e = e._replace(inputs=[x if isinstance(x, Literal) else rename.get(x, x)
                                   for x in e.inputs])
        try:
            k = (e.prim, tuple((x.val.dtype.str, x.val.shape, x.val.tobytes())
                               if isinstance(x, Literal) else x for x in e.inputs),
                 tuple(sorted((n, type(v), v) for n, v in e.params.items())))
            hash(k)
        except TypeError:     # an unhashable param
            k = None
        if k is not None and k in seen:
            rename.update(zip(e.outputs, seen[k]))
            continue
        if k is not None:
            seen[k] = e.outputs
        eqns.append(e)
    return eqns, [v if isinstance(v, Literal) else rename.get(v, v) for v in jaxpr.outvars]


def _pad_sum_into(buf, *ys, configs, covered=False, **_):
    if not covered:            # (operands that cover every position leave nothing to zero)
        buf.fill(0)
    for y, cfg in zip(ys, configs):
        np.add(y, np.zeros((), y.dtype), out=buf[_lattice(y.shape, cfg)])
    return buf


def _pad_sum(*ys, configs, shape, covered=False):
    """A sum of zero-padded operands whose elements land on disjoint positions (the
    gradient of strided slices, e.g. of max pooling) in one pass: each position gets
    y + 0.0 (the adds' only rounding: -0.0 becomes +0.0) or +0.0, as the pads and adds do."""
    return _pad_sum_into(np.empty(shape, ys[0].dtype), *ys, configs=configs, covered=covered)


def _pad_sums(eqns, outvars):
    """Chains of adds of pads (by +0.0) that _pad_sum can compute: {index of the chain's
    last add: (operands, padding configs)}, and the indices of the pads and adds it replaces."""
    uses = {}
    for x in [x for e in eqns for x in e.inputs] + list(outvars) * 2:   # an output: never fused
        if not isinstance(x, Literal):
            uses[x] = uses.get(x, 0) + 1
    chains, consumed = {}, set()      # var -> (operands, configs, eqn indices)
    for i, e in enumerate(eqns):
        out = e.outputs[0]
        if e.prim.multiple_results or np.dtype(out.aval.dtype) not in _FLOATS:
            continue
        if e.prim is P.pad_p and impl_rules.get(e.prim) is _pad and \
                isinstance(e.inputs[1], Literal):
            pv, cfg = e.inputs[1].val, e.params["padding_config"]
            if pv == 0 and not np.signbit(pv) and all(lo >= 0 and hi >= 0 for lo, hi, _ in cfg):
                chains[out] = ([e.inputs[0]], [cfg], [i])
        elif e.prim is P.BINARY["add"] and impl_rules.get(e.prim) is _UFUNC_IMPL[e.prim]:
            a, b = e.inputs
            if a is not b and all(uses.get(x) == 1 and x in chains for x in (a, b)):
                (ya, ca, ia), (yb, cb, ib) = chains[a], chains[b]
                chains[out] = (ya + yb, ca + cb, ia + ib + [i])
                consumed.update((a, b))
    fused, skip = {}, set()
    for v, (ys, cfgs, idx) in chains.items():
        if v in consumed or len(ys) < 2:
            continue
        # disjoint: each pair of operands has an axis on which their positions never meet
        pos = [[set(range(s.start, s.stop, s.step)) for s in _lattice(y.aval.shape, cfg)]
               for y, cfg in zip(ys, cfgs)]
        if all(any(not (p & q) for p, q in zip(pos[m], pos[n]))
               for m in range(len(ys)) for n in range(m)):
            size = math.prod(eqns[idx[-1]].outputs[0].aval.shape)
            fused[idx[-1]] = (ys, tuple(cfgs), sum(math.prod(y.aval.shape) for y in ys) == size)
            skip.update(idx[:-1])
    return fused, skip


def compile_jaxpr(jaxpr: Jaxpr):
    """A runner `f(list of ndarrays for constvars + invars) -> list of ndarrays`.

    Each intermediate is dropped after its last use. A dropped float array of at least
    _POOL_MIN_SIZE elements that nothing else references (no view, no other slot) goes to a
    per-run pool (so does the buffer of a dropped view), from which later results of its
    shape and dtype (elementwise ops, casts, pads) are computed in place
    (`out=`): a training step then reuses a few buffers instead of allocating, and
    page-faulting in, a fresh one for every op (glibc hands big freed blocks back to the
    kernel; faulting them in again costs about a microsecond per 4 KiB page). An elementwise
    op whose operand dies with it writes over that operand instead: its cache lines are
    already loaded, where a fresh output costs a read of each line before it is written.

    An equation that repeats an earlier one (autodiff leaves some, e.g. a batch mean
    computed for the mean and again inside the variance) reuses its results, and a chain
    of adds of zero-padded operands on disjoint positions runs as one _pad_sum."""
    eqns, outvars = _cse(jaxpr)
    fused, skip = _pad_sums(eqns, outvars)
    slot = {}
    for v in list(jaxpr.constvars) + list(jaxpr.invars):
        slot[v] = len(slot)
    n_in = len(slot)
    steps = []
    avals = {}
    for i, e in enumerate(eqns):
        if i in skip:
            continue
        for o in e.outputs:
            slot[o] = len(slot)
            avals[slot[o]] = o.aval
        impl = impl_rules.get(e.prim)
        if impl is None:
            raise NotImplementedError(f"the numpy backend has no implementation of {e.prim.name}")
        impl = _ufunc(e) or impl      # (skips the impl's dtype checks: most steps are small)
        inputs, params, into = e.inputs, e.params, _out_rule(e)
        if i in fused:
            inputs, cfgs, covered = fused[i]
            impl, params = _pad_sum, {"configs": cfgs, "shape": tuple(e.outputs[0].aval.shape),
                                      "covered": covered}
            into = _pad_sum_into if into is not None else None
        ins = [(True, x.val) if isinstance(x, Literal) else (False, slot[x]) for x in inputs]
        key = (tuple(e.outputs[0].aval.shape), np.dtype(e.outputs[0].aval.dtype)) if into else None
        steps.append([impl, params, ins, [slot[o] for o in e.outputs], e.prim.multiple_results,
                      [], into, key, ()])
    outs = [(True, v.val) if isinstance(v, Literal) else (False, slot[v]) for v in outvars]
    # free each intermediate after its last use (inputs stay owned by the caller)
    last = {}
    for i, s in enumerate(steps):
        for lit, j in s[2]:
            if not lit:
                last[j] = i
    keep = {j for lit, j in outs if not lit}
    # how many buffers of each (shape, dtype) the pool may hold: one per step that takes one
    wanted = {}
    for s in steps:
        if s[7] is not None:
            wanted[s[7]] = wanted.get(s[7], 0) + 1
    for j, i in last.items():
        if j >= n_in and j not in keep:
            a = avals[j]
            key = (tuple(a.shape), np.dtype(a.dtype))
            steps[i][5].append((j, key if key in wanted else None))
    # an elementwise step may write over an operand it is the last use of
    for s in steps:
        if getattr(s[6], "inplace", False):
            s[8] = tuple(j for lit, j in s[2] if not lit and (j, s[7]) in s[5])
    steps = [tuple(s) for s in steps]
    n = len(slot)
    refs, sole = sys.getrefcount, _SOLE

    def run(inputs):
        env = list(inputs) + [None] * (n - n_in)
        with np.errstate(all="ignore"):
            _run_steps(env)
        return [v if lit else env[v] for lit, v in outs]

    def _run_steps(env):
        pool = {}
        for impl, params, ins, outs_, multi, release, into, key, donors in steps:
            buf = None
            for j in donors:
                buf = env[j]
                # only its slot, buf and getrefcount's argument hold it: no view sees the write
                if type(buf) is np.ndarray and refs(buf) == sole + 1 and buf.flags.owndata and \
                        buf.flags.c_contiguous and buf.flags.writeable:
                    break
                buf = None
            if buf is None and into is not None:
                bufs = pool.get(key)
                buf = bufs.pop() if bufs else None
            args = [v if lit else env[v] for lit, v in ins]
            r = impl(*args, **params) if buf is None else into(buf, *args, **params)
            del args, buf
            if multi:
                for o, val in zip(outs_, r):
                    env[o] = val
            else:
                env[outs_[0]] = r
            del r
            for j, k in release:
                a = env[j]
                env[j] = None
                # only a and getrefcount's argument hold it: no other slot, view or caller
                if type(a) is not np.ndarray or refs(a) != sole:
                    continue
                if a.base is not None:   # a view (reshape, slice): its buffer may be free now
                    a = a.base
                    if type(a) is not np.ndarray or refs(a) != sole:
                        continue
                    k = (a.shape, a.dtype)
                if k in wanted and a.flags.owndata and a.flags.c_contiguous and a.flags.writeable:
                    bufs = pool.setdefault(k, [])
                    if len(bufs) < wanted[k]:
                        bufs.append(a)
            a = bufs = None
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
        # constants captured from another backend's arrays come to the host first
        consts = [self.put(c._buf if getattr(c, "_backend", None) is self else np.asarray(c), c_aval)
                  for c, c_aval in zip(closed.consts, [v.aval for v in closed.jaxpr.constvars])]
        return lambda bufs: run(consts + bufs)
