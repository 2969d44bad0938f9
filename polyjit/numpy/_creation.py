"""Array creation: asarray, zeros/ones/full, arange, linspace, eye, meshgrid, ..."""
from __future__ import annotations

import math

import numpy as np

from .. import lax
from ..tracer import dtypes
from ..tracer.core import ConcretizationError, get_aval
from ._math import add, floor, multiply, power, sign
from ._promote import arr, cast, concrete, ensure_array, inexact_dtype, is_python_scalar, operand
from ._shape import broadcast_to, concatenate, moveaxis, reshape, tril


def _shape(shape):
    return (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)


def _dtype(dtype, default):
    return dtypes.canonicalize(default if dtype is None else dtype)


def asarray(a, dtype=None, copy=None):
    """a as a polyjit array; lists of Python numbers get JAX's 32-bit default dtypes."""
    x = arr(a, "asarray")
    return ensure_array(x if dtype is None else cast(x, dtypes.canonicalize(dtype)))


def array(object, dtype=None, copy=True, ndmin=0):  # noqa: A002 (numpy name)
    if copy and isinstance(object, np.ndarray):
        object = object.copy()   # the numpy backend would otherwise alias the caller's buffer
    x = asarray(object, dtype)
    nd = get_aval(x).ndim
    return reshape(x, (1,) * (ndmin - nd) + get_aval(x).shape) if nd < ndmin else x


def copy(a):
    return array(a, copy=True)


def astype(x, dtype):
    return asarray(x, dtype)


def full(shape, fill_value, dtype=None):
    v = operand(fill_value, "full", "fill_value")
    v = cast(v, _dtype(dtype, get_aval(v).dtype))
    return broadcast_to(v, _shape(shape))


def zeros(shape, dtype=None):
    return full(shape, 0, _dtype(dtype, dtypes.default_float))


def ones(shape, dtype=None):
    return full(shape, 1, _dtype(dtype, dtypes.default_float))


empty = zeros


def _like(a, dtype, shape):
    aval = get_aval(operand(a, "*_like", "a"))
    return (aval.shape if shape is None else shape), _dtype(dtype, aval.dtype)


def full_like(a, fill_value, dtype=None, shape=None):
    s, dt = _like(a, dtype, shape)
    return full(s, fill_value, dt)


def zeros_like(a, dtype=None, shape=None):
    return full_like(a, 0, dtype, shape)


def ones_like(a, dtype=None, shape=None):
    return full_like(a, 1, dtype, shape)


empty_like = zeros_like


def _number(x, fn):
    if is_python_scalar(x):
        return x
    c = concrete(x)
    if c is None or c.ndim:
        raise ConcretizationError(f"{fn}: start, stop and step must be static numbers (the "
                                  f"output length depends on them), got {x!r}")
    return c.item()


def arange(start, stop=None, step=None, dtype=None):
    """Evenly spaced values in [start, stop); int32 for ints and float32 for floats by default."""
    start, stop, step = (None if v is None else _number(v, "arange") for v in (start, stop, step))
    if stop is None:
        start, stop = 0, start
    step = 1 if step is None else step
    if step == 0:
        raise ValueError("arange: step must not be zero")
    is_int = all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
    dt = _dtype(dtype, dtypes.default_int if is_int else dtypes.default_float)
    n = max(0, math.ceil((stop - start) / step))
    if is_int and dtypes.is_int(dt):
        compute = dt
    else:   # half floats cannot count far: count in float32 (float64 if asked) and round once
        compute = dtypes.float64 if dt == dtypes.float64 or dtypes.is_int(dt) else dtypes.float32
    out = lax.iota(compute, n)
    if step != 1:
        out = lax.mul(out, step)
    if start != 0:
        out = lax.add(out, start)
    return ensure_array(cast(out, dt))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """num values from start to stop (array endpoints broadcast); float32 by default."""
    num = int(num)
    if num < 0:
        raise ValueError(f"linspace: num must be >= 0, got {num}")
    a, b = (operand(v, "linspace", n) for v, n in ((start, "start"), (stop, "stop")))
    dt = _dtype(dtype, inexact_dtype(dtypes.result_type(
        *[(get_aval(v).dtype, get_aval(v).weak_type) for v in (a, b)])[0]))
    ct = dtypes.float64 if dt == dtypes.float64 else dtypes.float32
    a, b = cast(a, ct), cast(b, ct)
    div = num - 1 if endpoint else num
    step = lax.div(lax.sub(b, a), float(max(div, 1)))
    batch = np.broadcast_shapes(get_aval(a).shape, get_aval(b).shape)
    steps = reshape(lax.iota(ct, num), (num,) + (1,) * len(batch))
    out = add(multiply(steps, step), a)
    if endpoint and num > 1:   # hit stop exactly
        from ._indexing import getitem
        out = concatenate([getitem(out, slice(0, num - 1)), broadcast_to(b, (1,) + batch)])
    out = broadcast_to(out, (num,) + batch)
    out = cast(floor(out) if dtypes.is_int(dt) else out, dt)
    out = moveaxis(out, 0, axis)
    return (out, ensure_array(step)) if retstep else out


def logspace(start, stop, num=50, endpoint=True, base=10.0, dtype=None, axis=0):
    y = linspace(start, stop, num, endpoint, axis=axis)
    out = power(cast(base, get_aval(y).dtype, True), y)
    return out if dtype is None else asarray(out, dtype)


def geomspace(start, stop, num=50, endpoint=True, dtype=None, axis=0):
    """Geometric progression from start to stop (both nonzero, of one sign)."""
    from ._math import abs as abs_, log10
    a, b = asarray(start), asarray(stop)
    y = logspace(log10(abs_(a)), log10(abs_(b)), num, endpoint, axis=0)
    y = multiply(sign(a), y)
    if num > 0:   # the endpoints exactly
        from ._indexing import IndexUpdateHelper
        y = IndexUpdateHelper(y)[0].set(a)
        if endpoint and num > 1:
            y = IndexUpdateHelper(y)[-1].set(b)
    y = moveaxis(y, 0, axis)
    return y if dtype is None else asarray(y, dtype)


def eye(N, M=None, k=0, dtype=None):
    M = N if M is None else M
    on = lax.eq(lax.add(lax.iota(dtypes.int32, (N, M), 0), np.int32(k)),
                lax.iota(dtypes.int32, (N, M), 1))
    return ensure_array(cast(on, _dtype(dtype, dtypes.default_float)))


def identity(n, dtype=None):
    return eye(n, dtype=dtype)


def tri(N, M=None, k=0, dtype=None):
    """(N, M) array with ones at and below the k-th diagonal."""
    return tril(ones((N, N if M is None else M), dtype), k)


def meshgrid(*xi, copy=True, sparse=False, indexing="xy"):
    if indexing not in ("xy", "ij"):
        raise ValueError(f"meshgrid: indexing must be 'xy' or 'ij', got {indexing!r}")
    xs = [reshape(arr(x, "meshgrid", "xi"), (-1,)) for x in xi]
    nd = len(xs)
    shape = [get_aval(x).shape[0] for x in xs]
    if indexing == "xy" and nd > 1:
        shape[0], shape[1] = shape[1], shape[0]
    out = []
    for i, x in enumerate(xs):   # "xy": the first two inputs vary along axes 1 and 0
        pos = (1 - i if i < 2 else i) if indexing == "xy" and nd > 1 else i
        sparse_shape = [1] * nd
        sparse_shape[pos] = shape[pos]
        y = reshape(x, sparse_shape)
        out.append(y if sparse else broadcast_to(y, shape))
    return out


def indices(dimensions, dtype=None, sparse=False):
    """Index grids: out[i] holds the i-th coordinate of every position."""
    dims = tuple(int(d) for d in dimensions)
    dt = _dtype(dtype, dtypes.default_int)
    if sparse:
        return tuple(reshape(lax.iota(dt, d), [d if j == i else 1 for j in range(len(dims))])
                     for i, d in enumerate(dims))
    grids = [lax.iota(dt, (1,) + dims, i + 1) for i in range(len(dims))]
    return concatenate(grids, 0) if grids else zeros((0,), dt)
