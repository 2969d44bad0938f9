"""Sorting and order statistics: sort, argsort, top_k, searchsorted, quantiles, unique, interp."""
from __future__ import annotations

import math

import numpy as np

from .. import lax
from ..tracer import dtypes
from ..tracer.core import ConcretizationError, get_aval
from ._indexing import take
from ._math import add, ceil, clip, floor, isnan, less, less_equal, multiply, round, subtract, \
    true_divide, where
from ._promote import (arr, canon_axis, cast, concrete, ensure_array, inexact_dtype,
                       is_python_scalar, operand, promote)
from ._reductions import any, sum
from ._shape import expand_dims, flip, moveaxis, ravel, reshape


def _axis(x, axis, fn):
    if axis is None:
        return ravel(x), 0
    return x, canon_axis(axis, get_aval(x).ndim, fn)


def sort(a, axis=-1, kind=None, order=None, *, stable=True, descending=False):
    """Sorted copy along axis (NaN last; stable). `kind` and `order` are ignored."""
    x, ax = _axis(arr(a, "sort"), axis, "sort")
    out = lax.sort(x, dimension=ax)
    return ensure_array(flip(out, ax) if descending else out)


def argsort(a, axis=-1, kind=None, order=None, *, stable=True, descending=False):
    """Indices that sort along axis (stable, also when descending), as int32."""
    x, ax = _axis(arr(a, "argsort"), axis, "argsort")
    if descending:   # stable descending order: sort the reversed array, map indices back
        n = get_aval(x).shape[ax]
        return flip(subtract(n - 1, argsort(flip(x, ax), ax)), ax)
    iota = lax.iota(dtypes.int32, get_aval(x).shape, ax)
    return ensure_array(lax.sort([x, iota], dimension=ax, num_keys=1)[1])


def lexsort(keys, axis=-1):
    """Indices sorting by keys[-1], then keys[-2], ... (stable)."""
    ks = [arr(k, "lexsort", "keys") for k in keys]
    ax = canon_axis(axis, get_aval(ks[0]).ndim, "lexsort")
    iota = lax.iota(dtypes.int32, get_aval(ks[0]).shape, ax)
    return ensure_array(lax.sort(ks[::-1] + [iota], dimension=ax, num_keys=len(ks))[-1])


def top_k(operand, k):
    """(values, int32 indices) of the k largest entries along the last axis, largest first."""
    values, idx = lax.top_k(arr(operand, "top_k", "operand"), k)
    return ensure_array(values), ensure_array(idx)


def searchsorted(a, v, side="left", sorter=None):
    """Insertion points of v into sorted 1-D a (by comparing with every element of a)."""
    x = arr(a, "searchsorted")
    if get_aval(x).ndim != 1:
        raise ValueError(f"searchsorted: a must be 1-D, got shape {get_aval(x).shape}")
    if side not in ("left", "right"):
        raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
    if sorter is not None:
        x = take(x, sorter)
    x, v = promote("searchsorted", x, v, names=("a", "v"), shape=False)
    below = (less if side == "left" else less_equal)(x, expand_dims(v, -1))
    return sum(below, axis=-1, dtype=dtypes.int32)


def digitize(x, bins, right=False):
    """Bin index of each x for increasing bins (numpy.digitize)."""
    return searchsorted(bins, x, side="left" if right else "right")


_QUANTILE_METHODS = ("linear", "lower", "higher", "nearest", "midpoint")


def quantile(a, q, axis=None, method="linear", keepdims=False):
    """q-th quantiles along axis (None: all), result shape q.shape + reduced shape."""
    if method not in _QUANTILE_METHODS:
        raise ValueError(f"quantile: method {method!r} is not supported; use one of "
                         f"{_QUANTILE_METHODS}")
    x0 = arr(a, "quantile")
    x, ax = _axis(x0, axis, "quantile")
    dt = inexact_dtype(get_aval(x).dtype)
    srt = moveaxis(lax.sort(cast(x, dt), dimension=ax), ax, 0)
    n = get_aval(srt).shape[0]
    q = cast(operand(q, "quantile", "q"), dt)   # Python floats stay exact in float64
    pos = multiply(q, n - 1)
    lo, hi = (clip(cast(f(pos), dtypes.int32), 0, n - 1) for f in (floor, ceil))
    rest = (1,) * (get_aval(srt).ndim - 1)
    frac = reshape(subtract(pos, floor(pos)), get_aval(pos).shape + rest)
    v_lo, v_hi = take(srt, lo, axis=0), take(srt, hi, axis=0)
    out = {"linear": lambda: add(v_lo, multiply(subtract(v_hi, v_lo), frac)),
           "lower": lambda: v_lo, "higher": lambda: v_hi,
           "nearest": lambda: take(srt, cast(round(pos), dtypes.int32), axis=0),
           "midpoint": lambda: true_divide(add(v_lo, v_hi), 2)}[method]()
    if dtypes.is_float(get_aval(x).dtype):   # NaN sorts last; numpy returns NaN for the slice
        out = where(any(isnan(x), ax), math.nan, out)
    if keepdims:
        shape = get_aval(x0).shape
        kept = tuple(1 if axis is None or i == ax else d for i, d in enumerate(shape))
        out = reshape(out, get_aval(q).shape + kept)
    return ensure_array(cast(out, dt))


def percentile(a, q, axis=None, method="linear", keepdims=False):
    q = operand(q, "percentile", "q")
    return quantile(a, q / 100 if is_python_scalar(q) else true_divide(q, 100), axis, method,
                    keepdims)


def median(a, axis=None, keepdims=False):
    return quantile(a, 0.5, axis, keepdims=keepdims)


def unique(ar, return_index=False, return_inverse=False, return_counts=False, axis=None):
    """numpy.unique for concrete arrays (the output shape depends on the values)."""
    c = concrete(arr(ar, "unique", "ar"))
    if c is None:
        raise ConcretizationError("unique: the output shape depends on the values, so the input "
                                  "must be concrete (not traced inside jit)")
    res = np.unique(c, return_index=return_index, return_inverse=return_inverse,
                    return_counts=return_counts, axis=axis)
    if not isinstance(res, tuple):
        return ensure_array(res)
    return tuple(ensure_array(r if i == 0 else r.astype(np.int32)) for i, r in enumerate(res))


def interp(x, xp, fp, left=None, right=None):
    """Piecewise-linear interpolation of (xp, fp) at x; xp increasing."""
    x, xp, fp = promote("interp", x, xp, fp, names=("x", "xp", "fp"), to=inexact_dtype,
                        shape=False)
    xp, fp = arr(xp, "interp", "xp"), arr(fp, "interp", "fp")
    n = get_aval(xp).shape[0]
    i = clip(searchsorted(xp, x, side="right"), 1, n - 1)
    x0, x1 = take(xp, subtract(i, 1)), take(xp, i)
    y0, y1 = take(fp, subtract(i, 1)), take(fp, i)
    dx = subtract(x1, x0)
    t = where(dx == 0, 0, true_divide(subtract(x, x0), where(dx == 0, 1, dx)))
    y = add(y0, multiply(t, subtract(y1, y0)))
    y = where(less(x, take(xp, 0)), take(fp, 0) if left is None else left, y)
    return where(less(take(xp, n - 1), x), take(fp, n - 1) if right is None else right, y)
