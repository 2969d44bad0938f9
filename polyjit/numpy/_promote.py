"""Arguments to arrays, dtype promotion, broadcasting and axis checks for polyjit.numpy."""
from __future__ import annotations

import numpy as np

from .. import lax
from ..backends import device_put
from ..tracer import dtypes
from ..tracer.array import Array
from ..tracer.core import ConcretizationError, Tracer, get_aval
from ..tracer.primitives import ShapeError

AxisError = np.exceptions.AxisError


def is_python_scalar(x) -> bool:
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def is_array(x) -> bool:
    return isinstance(x, (Array, Tracer))


def _short(x, n=40):
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


def _not_an_array(fn, name, x, why=""):
    return TypeError(f"{fn}: argument {name} has type {type(x).__name__} ({_short(x)}), which is "
                     f"not an array{why}; pass a polyjit or numpy array, a Python number or a "
                     "(nested) list of numbers")


def _leaves(seq):
    for s in seq:
        if isinstance(s, (list, tuple)):
            yield from _leaves(s)
        else:
            yield s


def _host(x, fn, name) -> np.ndarray:
    """A non-polyjit value as a numpy array of a supported dtype (TypeError otherwise)."""
    if isinstance(x, (list, tuple)):
        try:
            a = np.asarray(x)
        except ValueError:
            raise ValueError(f"{fn}: argument {name} is a ragged nested sequence") from None
        if a.dtype.kind in "biuf":   # Python numbers have no dtype of their own: 32-bit defaults
            a = a.astype(dtypes.bool_ if a.dtype.kind == "b" else dtypes.default_float
                         if a.dtype.kind == "f" else _default_int(a))
    elif isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "__array__"):
        a = np.asarray(x)
    else:
        raise _not_an_array(fn, name, x)
    try:
        return a.astype(dtypes.canonicalize(a.dtype), copy=False)
    except TypeError:
        raise _not_an_array(fn, name, x, f" of a supported dtype (got {a.dtype})") from None


def _default_int(a):
    fits = a.size == 0 or (a.min() >= -2**31 and a.max() < 2**31)
    return dtypes.int32 if fits else dtypes.int64


def operand(x, fn, name="x"):
    """x as a polyjit array, keeping Python scalars (weakly typed) as they are."""
    if is_array(x) or is_python_scalar(x):
        return x
    if isinstance(x, (list, tuple)) and any(is_array(v) or isinstance(v, (np.ndarray, np.generic))
                                            for v in _leaves(x)):
        from ._shape import stack   # elements with dtypes of their own promote as arrays do
        return stack([operand(v, fn, name) for v in x])
    return device_put(_host(x, fn, name))


def arr(x, fn, name="a"):
    """x as a polyjit array (pj.Array or Tracer)."""
    x = operand(x, fn, name)
    return device_put(x) if is_python_scalar(x) else x


def ensure_array(x):
    """lax shortcuts hand back their input unchanged: make results arrays."""
    return x if is_array(x) else device_put(x)


def concrete(x):
    """The numpy value of x if it is known now (not traced), else None."""
    if isinstance(x, Tracer):
        try:
            return np.asarray(x.concrete_value())
        except ConcretizationError:
            return None
    return np.asarray(x)


def static_int(x, fn, what):
    """A Python int from a value that must be known at trace time."""
    v = concrete(x) if not is_python_scalar(x) else x
    if v is None:
        raise ConcretizationError(f"{fn}: {what} must be a static (concrete) integer, got a "
                                  f"traced value {x!r}")
    return int(v)


# ---------------------------------------------------------------- dtypes
def inexact_dtype(dt) -> np.dtype:
    """Float dtype an int/bool operand computes in (64-bit ints give float64, others float32)."""
    if dtypes.is_float(dt):
        return np.dtype(dt)
    return dtypes.float64 if np.dtype(dt).itemsize == 8 else dtypes.default_float


def sum_dtype(dt) -> np.dtype:
    """Accumulator dtype of sum/prod/cumsum: small ints and bool widen to 32 bits (JAX)."""
    if dtypes.is_bool(dt) or (dtypes.is_int(dt) and np.dtype(dt).itemsize < 4):
        return dtypes.uint32 if dtypes.is_unsigned(dt) else dtypes.int32
    return np.dtype(dt)


def cast(x, dt, weak=False):
    return lax.convert_element_type(x, dt, weak_type=weak)


# ---------------------------------------------------------------- shapes
def broadcast_shapes(fn, *shapes):
    nd = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(nd):
        sizes = {s[len(s) - nd + i] for s in shapes if len(s) - nd + i >= 0} - {1}
        if len(sizes) > 1:
            raise ShapeError(f"{fn}: shapes " + " and ".join(str(tuple(s)) for s in shapes)
                             + " cannot be broadcast together")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def broadcast(x, shape, fn="broadcast_to"):
    """x broadcast to `shape` by numpy rules; scalars and rank-0 values stay as they are
    (lax ops accept them beside full-shape operands)."""
    if is_python_scalar(x):
        return x
    s = get_aval(x).shape
    if s == tuple(shape) or not s:
        return x
    if broadcast_shapes(fn, s, shape) != tuple(shape):
        raise ShapeError(f"{fn}: cannot broadcast shape {s} to {tuple(shape)}")
    nd = len(shape)
    return lax.broadcast_in_dim(x, shape, range(nd - len(s), nd))


def promote(fn, *xs, names=("x1", "x2", "x3"), to=None, shape=True):
    """Operands of one dtype (by weak-aware promotion, then `to(dtype)`) and one shape."""
    ops = [operand(x, fn, n) for x, n in zip(xs, names)]
    avals = [get_aval(o) for o in ops]
    dt, weak = dtypes.result_type(*[(a.dtype, a.weak_type) for a in avals])
    if to is not None:
        dt = np.dtype(to(dt))
    ops = [cast(o, dt, weak) for o in ops]
    if not shape:
        return ops
    out_shape = broadcast_shapes(fn, *[a.shape for a in avals])
    return [broadcast(o, out_shape, fn) for o in ops]


# ---------------------------------------------------------------- axes
def canon_axis(axis, ndim, fn):
    a = int(axis)
    if not -ndim <= a < ndim:
        raise AxisError(f"{fn}: axis {axis} is out of bounds for an array of rank {ndim}")
    return a % ndim


def canon_axes(axis, ndim, fn):
    """A sorted tuple of distinct axes; None means all."""
    if axis is None:
        return tuple(range(ndim))
    axis = axis if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(canon_axis(a, ndim, fn) for a in axis)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{fn}: repeated axis in {axis}")
    return tuple(sorted(axes))
