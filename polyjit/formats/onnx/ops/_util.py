"""Helpers shared by the op modules."""
from __future__ import annotations

import numpy as np

from .... import lax
from .... import numpy as pnp
from ....tracer import dtypes
from ....tracer.core import get_aval


def dtype_of(x):
    return get_aval(x).dtype


def shape_of(x):
    return tuple(get_aval(x).shape)


def ndim_of(x):
    return len(shape_of(x))


def cast(x, dt):
    """x converted to dtype dt (float -> int truncates, as ONNX Cast does)."""
    dt = np.dtype(dt)
    if isinstance(x, np.ndarray):
        return x.astype(dt)
    return lax.convert_element_type(x, dt)


def norm_axis(axis, ndim):
    axis = int(axis)
    return axis + ndim if axis < 0 else axis


def onnx_dtype(ctx, code):
    """numpy dtype of an ONNX TensorProto data type code, failing clearly for unsupported ones."""
    from .._proto import elem_dtype
    import onnx
    dt = elem_dtype(int(code))
    if dt is None or dt not in dtypes.SUPPORTED:
        name = onnx.TensorProto.DataType.Name(int(code)) if int(code) in \
            onnx.TensorProto.DataType.values() else str(code)
        raise ctx.fail(f"data type {name} is not supported by polyjit "
                       f"(supported: {', '.join(d.name for d in dtypes.SUPPORTED)})")
    return dt


def keep(x, axes, keepdims):
    """Re-insert reduced axes of size 1 when keepdims."""
    if not keepdims:
        return x
    return pnp.expand_dims(x, tuple(sorted(axes))) if axes else x


def scalar_like(v, x):
    """A 0-d numpy value of x's dtype."""
    return np.asarray(v, dtype=dtype_of(x))


def is_float(x):
    return dtypes.is_float(dtype_of(x))
