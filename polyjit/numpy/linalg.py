"""polyjit.numpy.linalg: vector and matrix norms."""
from __future__ import annotations

import math

from ..tracer.core import get_aval
from ._math import abs, not_equal, power, sqrt
from ._promote import arr, canon_axes, canon_axis, cast, inexact_dtype
from ._reductions import max, min, sum
from ._shape import squeeze


def _float(x, fn):
    x = arr(x, fn, "x")
    return cast(x, inexact_dtype(get_aval(x).dtype))


def vector_norm(x, axis=None, keepdims=False, ord=2):  # noqa: A002 (numpy name)
    """ord 2 (also None), 1, inf, -inf, 0 (count of nonzeros) or any p: (sum |x|^p)^(1/p).
    axis=None reduces over all axes."""
    x = _float(x, "vector_norm")
    if ord is None or ord == 2:
        return sqrt(sum(x * x, axis, keepdims=keepdims))
    if ord == math.inf:
        return max(abs(x), axis, keepdims=keepdims)
    if ord == -math.inf:
        return min(abs(x), axis, keepdims=keepdims)
    if ord == 0:
        return sum(not_equal(x, 0), axis, get_aval(x).dtype, keepdims)
    if ord == 1:
        return sum(abs(x), axis, keepdims=keepdims)
    return power(sum(power(abs(x), ord), axis, keepdims=keepdims), 1.0 / ord)


def _matrix_norm(x, ord, axes, keepdims):
    r, c = axes
    if ord in (None, "fro"):
        return sqrt(sum(x * x, axes, keepdims=keepdims))
    if ord in ("nuc", 2, -2):
        raise NotImplementedError(f"matrix norm ord={ord!r} needs singular values (an SVD), "
                                  "which polyjit does not implement")
    if ord in (1, -1, math.inf, -math.inf):
        # 1: largest column sum of |x| (sum over rows); inf: largest row sum
        summed, other = (r, c) if ord in (1, -1) else (c, r)
        s = sum(abs(x), summed, keepdims=True)
        out = (max if ord > 0 else min)(s, other, keepdims=True)
        return out if keepdims else squeeze(out, axes)
    raise ValueError(f"invalid norm order {ord!r} for matrices")


def matrix_norm(x, keepdims=False, ord="fro"):  # noqa: A002
    """Norm of the matrices in the last two axes: 'fro', 1, -1, inf, -inf."""
    x = _float(x, "matrix_norm")
    nd = get_aval(x).ndim
    return _matrix_norm(x, ord, (nd - 2, nd - 1), keepdims)


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002
    """numpy.linalg.norm: a vector norm over one axis, a matrix norm over two."""
    x = _float(x, "norm")
    nd = get_aval(x).ndim
    if axis is None:
        if ord is None:
            return vector_norm(x, None, keepdims)
        if nd not in (1, 2):
            raise ValueError(f"norm: ord={ord!r} needs a 1-D or 2-D input or axis=, got rank {nd}")
        axis = tuple(range(nd))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if len(axes) == 1:
        return vector_norm(x, canon_axis(axes[0], nd, "norm"), keepdims, ord)
    if len(axes) == 2:
        canon_axes(axes, nd, "norm")   # range and repeat checks
        return _matrix_norm(x, ord, tuple(canon_axis(a, nd, "norm") for a in axes), keepdims)
    raise ValueError(f"norm: axis {axis} must name one or two axes")


__all__ = ["norm", "vector_norm", "matrix_norm"]
