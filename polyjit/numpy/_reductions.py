"""Reductions (sum, mean, var, max, argmax, ...), cumulative ops and array comparisons."""
from __future__ import annotations

import builtins
import math

from .. import lax
from ..tracer import dtypes
from ..tracer.core import get_aval
from ._math import (_truthy, equal, isclose, isnan, logical_not, maximum, minimum, multiply,
                    not_equal, sqrt, subtract, true_divide, where)
from ._promote import (arr, broadcast_shapes, canon_axes, canon_axis, cast, ensure_array,
                       inexact_dtype, sum_dtype)
from ._shape import broadcast_to, concatenate, diagonal, ravel, reshape


def _keep(out, shape, axes, keepdims):
    if not keepdims:
        return ensure_array(out)
    return ensure_array(lax.reshape(out, [1 if i in axes else d for i, d in enumerate(shape)]))


def _count(shape, axes):
    return math.prod(shape[a] for a in axes)


def _reduction(fn, reduce, a, axis, keepdims, dtype=None):
    x = arr(a, fn)
    s = get_aval(x).shape
    axes = canon_axes(axis, len(s), fn)
    if dtype is not None:
        x = cast(x, dtypes.canonicalize(dtype))
    return _keep(reduce(x, axes), s, axes, keepdims)


def sum(a, axis=None, dtype=None, keepdims=False, initial=None):  # noqa: A001
    """Sum; bool and ints narrower than 32 bits accumulate in (u)int32, as in JAX."""
    x = arr(a, "sum")
    dt = dtypes.canonicalize(dtype) if dtype is not None else sum_dtype(get_aval(x).dtype)
    out = _reduction("sum", lax.reduce_sum, x, axis, keepdims, dt)
    return out if initial is None else ensure_array(lax.add(out, cast(initial, dt)))


def prod(a, axis=None, dtype=None, keepdims=False, initial=None):
    x = arr(a, "prod")
    dt = dtypes.canonicalize(dtype) if dtype is not None else sum_dtype(get_aval(x).dtype)
    out = _reduction("prod", lax.reduce_prod, x, axis, keepdims, dt)
    return out if initial is None else ensure_array(lax.mul(out, cast(initial, dt)))


def _extremum(fn, reduce, combine):
    def f(a, axis=None, keepdims=False, initial=None):
        x = arr(a, fn)
        s = get_aval(x).shape
        if initial is None and _count(s, canon_axes(axis, len(s), fn)) == 0:
            raise ValueError(f"{fn}: zero-size array of shape {s} has no {fn} along axis {axis}; "
                             "pass initial=")
        out = _reduction(fn, reduce, x, axis, keepdims)
        return out if initial is None else combine(out, initial)
    f.__name__ = f.__qualname__ = fn
    f.__doc__ = f"The {fn} along axis (NaN propagates); `initial` bounds it."
    return f


max = amax = _extremum("max", lax.reduce_max, maximum)  # noqa: A001
min = amin = _extremum("min", lax.reduce_min, minimum)  # noqa: A001


def all(a, axis=None, keepdims=False):  # noqa: A001
    return _reduction("all", lax.reduce_and, _truthy(arr(a, "all")), axis, keepdims)


def any(a, axis=None, keepdims=False):  # noqa: A001
    return _reduction("any", lax.reduce_or, _truthy(arr(a, "any")), axis, keepdims)


def _compute_dtype(dt):
    """Means and variances of half floats accumulate in float32 (numpy does too)."""
    return dtypes.float32 if dt in (dtypes.float16, dtypes.bfloat16) else dt


def mean(a, axis=None, dtype=None, keepdims=False):
    """Mean; integers give float32 (float64 for 64-bit integers)."""
    x = arr(a, "mean")
    s = get_aval(x).shape
    axes = canon_axes(axis, len(s), "mean")
    dt = dtypes.canonicalize(dtype) if dtype is not None else inexact_dtype(get_aval(x).dtype)
    total = lax.reduce_sum(cast(x, _compute_dtype(dt)), axes)
    return _keep(cast(lax.div(total, float(_count(s, axes))), dt), s, axes, keepdims)


def var(a, axis=None, dtype=None, ddof=0, keepdims=False, *, correction=None):
    """Variance: mean squared deviation divided by (n - ddof)."""
    ddof = ddof if correction is None else correction
    x = arr(a, "var")
    s = get_aval(x).shape
    axes = canon_axes(axis, len(s), "var")
    dt = dtypes.canonicalize(dtype) if dtype is not None else inexact_dtype(get_aval(x).dtype)
    x = cast(x, _compute_dtype(dt))
    d = subtract(x, mean(x, axes, keepdims=True))
    ss = lax.reduce_sum(lax.mul(d, d), axes)
    return _keep(cast(lax.div(ss, float(builtins.max(_count(s, axes) - ddof, 0))), dt),
                 s, axes, keepdims)


def std(a, axis=None, dtype=None, ddof=0, keepdims=False, *, correction=None):
    return sqrt(var(a, axis, dtype, ddof, keepdims, correction=correction))


def ptp(a, axis=None, keepdims=False):
    """max - min along axis."""
    return subtract(max(a, axis, keepdims), min(a, axis, keepdims))


def _arg(fn, prim):
    def f(a, axis=None, keepdims=False):
        x = arr(a, fn)
        s = get_aval(x).shape
        if axis is None:
            x, ax = ravel(x), 0
        else:
            ax = canon_axis(axis, len(s), fn)
        if get_aval(x).shape[ax] == 0:
            raise ValueError(f"{fn}: attempt to get {fn} of an empty sequence (shape {s})")
        out = prim(x, ax, dtypes.int32)
        return _keep(out, s, tuple(range(len(s))) if axis is None else (ax,), keepdims)
    f.__name__ = f.__qualname__ = fn
    f.__doc__ = f"Index of the {fn[3:]} along axis (first occurrence), as int32."
    return f


argmax = _arg("argmax", lax.argmax)
argmin = _arg("argmin", lax.argmin)


def count_nonzero(a, axis=None, keepdims=False):
    return sum(not_equal(a, 0), axis, dtypes.int32, keepdims)


def average(a, axis=None, weights=None, returned=False, keepdims=False):
    """Weighted mean; 1-D weights apply along `axis`."""
    x = arr(a, "average")
    s = get_aval(x).shape
    if weights is None:
        avg = mean(x, axis, keepdims=keepdims)
        wsum = broadcast_to(cast(_count(s, canon_axes(axis, len(s), "average")),
                                 get_aval(avg).dtype), get_aval(avg).shape)
    else:
        w = arr(weights, "average", "weights")
        ws = get_aval(w).shape
        if ws != s:
            if axis is None or len(ws) != 1 or isinstance(axis, tuple):
                raise ValueError(f"average: weights of shape {ws} differ from a's shape {s}; "
                                 "1-D weights need an int axis")
            ax = canon_axis(axis, len(s), "average")
            w = reshape(w, [ws[0] if i == ax else 1 for i in range(len(s))])
        dt = inexact_dtype(dtypes.promote_types(get_aval(x).dtype, get_aval(w).dtype))
        w = broadcast_to(cast(w, dt), s)
        wsum = sum(w, axis, keepdims=keepdims)
        avg = true_divide(sum(multiply(cast(x, dt), w), axis, keepdims=keepdims), wsum)
    return (avg, wsum) if returned else avg


def _nan_to(a, fn, value):
    x = arr(a, fn)
    return where(isnan(x), value, x) if dtypes.is_float(get_aval(x).dtype) else x


def nansum(a, axis=None, dtype=None, keepdims=False):
    return sum(_nan_to(a, "nansum", 0), axis, dtype, keepdims)


def nanprod(a, axis=None, dtype=None, keepdims=False):
    return prod(_nan_to(a, "nanprod", 1), axis, dtype, keepdims)


def _not_nan_count(x, axis, keepdims):
    return sum(logical_not(isnan(x)), axis, keepdims=keepdims)


def nanmean(a, axis=None, dtype=None, keepdims=False):
    x = arr(a, "nanmean")
    dt = dtypes.canonicalize(dtype) if dtype is not None else inexact_dtype(get_aval(x).dtype)
    total = sum(cast(_nan_to(x, "nanmean", 0), _compute_dtype(dt)), axis, keepdims=keepdims)
    return _as(true_divide(total, _not_nan_count(x, axis, keepdims)), dt)


def nanvar(a, axis=None, dtype=None, ddof=0, keepdims=False):
    x = arr(a, "nanvar")
    dt = dtypes.canonicalize(dtype) if dtype is not None else inexact_dtype(get_aval(x).dtype)
    x = cast(x, _compute_dtype(dt))
    d = _nan_to(subtract(x, nanmean(x, axis, keepdims=True)), "nanvar", 0)
    n = subtract(_not_nan_count(x, axis, keepdims), ddof)
    return _as(true_divide(sum(multiply(d, d), axis, keepdims=keepdims), maximum(n, 0)), dt)


def nanstd(a, axis=None, dtype=None, ddof=0, keepdims=False):
    return sqrt(nanvar(a, axis, dtype, ddof, keepdims))


def _nan_extremum(fn, reduce, fill):
    def f(a, axis=None, keepdims=False):
        x = arr(a, fn)
        if not dtypes.is_float(get_aval(x).dtype):
            return reduce(x, axis, keepdims)
        out = reduce(_nan_to(x, fn, fill), axis, keepdims)
        return where(all(isnan(x), axis, keepdims), math.nan, out)   # all-NaN slices stay NaN
    f.__name__ = f.__qualname__ = fn
    f.__doc__ = f"{fn[3:]} ignoring NaN (NaN where a slice is all NaN)."
    return f


nanmax = _nan_extremum("nanmax", max, -math.inf)
nanmin = _nan_extremum("nanmin", min, math.inf)


def _as(x, dt):
    return ensure_array(cast(x, dt))


def _cumulative(fn, prim):
    def f(a, axis=None, dtype=None):
        x = arr(a, fn)
        if axis is None:
            x, axis = ravel(x), 0
        ax = canon_axis(axis, get_aval(x).ndim, fn)
        dt = dtypes.canonicalize(dtype) if dtype is not None else sum_dtype(get_aval(x).dtype)
        return ensure_array(prim(cast(x, dt), ax))
    f.__name__ = f.__qualname__ = fn
    f.__doc__ = f"Cumulative {fn[3:]} along axis (flattened when axis is None)."
    return f


cumsum = _cumulative("cumsum", lax.cumsum)
cumprod = _cumulative("cumprod", lax.cumprod)


def diff(a, n=1, axis=-1, prepend=None, append=None):
    """n-th discrete difference along axis (not_equal for bool)."""
    x = arr(a, "diff")
    s = get_aval(x).shape
    ax = canon_axis(axis, len(s), "diff")

    def edge(p):   # scalars extend the axis by one
        p = arr(p, "diff", "prepend/append")
        return broadcast_to(p, s[:ax] + (1,) + s[ax + 1:]) if get_aval(p).ndim == 0 else p
    parts = ([edge(prepend)] if prepend is not None else []) + [x] + (
        [edge(append)] if append is not None else [])
    x = concatenate(parts, ax) if len(parts) > 1 else x
    for _ in range(n):
        m = get_aval(x).shape[ax]
        hi = lax.slice_in_dim(x, builtins.min(1, m), m, axis=ax)
        lo = lax.slice_in_dim(x, 0, builtins.max(m - 1, 0), axis=ax)
        x = lax.ne(hi, lo) if dtypes.is_bool(get_aval(x).dtype) else lax.sub(hi, lo)
    return ensure_array(x)


def trace(a, offset=0, axis1=0, axis2=1, dtype=None):
    return sum(diagonal(a, offset, axis1, axis2), -1, dtype)


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return all(isclose(a, b, rtol, atol, equal_nan))


def array_equal(a1, a2, equal_nan=False):
    x, y = arr(a1, "array_equal", "a1"), arr(a2, "array_equal", "a2")
    if get_aval(x).shape != get_aval(y).shape:
        return ensure_array(False)
    eq = equal(x, y)
    if equal_nan:
        from ._math import logical_and, logical_or
        eq = logical_or(eq, logical_and(isnan(x), isnan(y)))
    return all(eq)


def array_equiv(a1, a2):
    """Equal after broadcasting (False when the shapes do not broadcast)."""
    x, y = arr(a1, "array_equiv", "a1"), arr(a2, "array_equiv", "a2")
    try:
        broadcast_shapes("array_equiv", get_aval(x).shape, get_aval(y).shape)
    except ValueError:
        return ensure_array(False)
    return all(equal(x, y))

