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
    if dt is None or (dt not in dtypes.SUPPORTED and not dtypes.is_storage_only(dt)):
        name = onnx.TensorProto.DataType.Name(int(code)) if int(code) in \
            onnx.TensorProto.DataType.values() else str(code)
        raise ctx.fail(f"data type {name} is not supported by polyjit "
                       f"(supported: {', '.join(d.name for d in dtypes.SUPPORTED)} and the "
                       "storage-only float8/float4/int4/int2 formats)")
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


_FLOAT8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")


def onnx_cast(x, dt, saturate=True, round_mode="up"):
    """ONNX Cast semantics: x converted to dt, including the float8 `saturate` rule
    (out-of-range and infinite values clamp to the largest finite value) and the
    float8e8m0 rounding modes. int4/int2/float4 follow ml_dtypes' conversion, as the
    ONNX reference does."""
    dt = np.dtype(dt)
    src = dtype_of(x)
    if dt == src:
        return x
    if dt.name in _FLOAT8 and saturate:
        if not (dtypes.is_float(src) and src != dtypes.bfloat16):
            x = cast(x, np.float32)      # ints, bool, bfloat16, other storage formats
        big = float(dtypes.finfo(dt).max)
        x = pnp.clip(x, scalar_like(-big, x), scalar_like(big, x))
        return cast(x, dt)
    if dt == dtypes.float8_e8m0fnu:
        return _to_e8m0(x, saturate, round_mode)
    if dtypes.is_storage_only(src) and dtypes.is_storage_only(dt):
        x = cast(x, np.float32)
    return cast(x, dt)


def _to_e8m0(x, saturate, round_mode):
    """float -> float8e8m0 (a bare exponent) from the float32 bits, as onnx.numpy_helper
    does: NaN/Inf -> 0xFF, otherwise the exponent rounded per round_mode."""
    u32 = np.dtype(np.uint32)
    bits = lax.bitcast_convert_type(cast(x, np.float32), u32)
    exp = pnp.bitwise_and(pnp.right_shift(bits, np.uint32(23)), np.uint32(0xFF))
    special = pnp.equal(exp, np.uint32(0xFF))
    if round_mode == "nearest":
        g = pnp.not_equal(pnp.bitwise_and(bits, np.uint32(0x400000)), np.uint32(0))
        r = pnp.not_equal(pnp.bitwise_and(bits, np.uint32(0x200000)), np.uint32(0))
        s = pnp.not_equal(pnp.bitwise_and(bits, np.uint32(0x1FFFFF)), np.uint32(0))
        lsb = pnp.greater(exp, np.uint32(0))
        up = pnp.logical_and(g, pnp.logical_or(pnp.logical_or(r, s), lsb))
    elif round_mode == "up":
        up = pnp.not_equal(pnp.bitwise_and(bits, np.uint32(0x7FFFFF)), np.uint32(0))
    elif round_mode == "down":
        up = pnp.zeros_like(special)
    else:
        raise ValueError(f"unsupported round_mode {round_mode!r}")
    up = pnp.logical_and(up, pnp.logical_not(special))
    if saturate:
        up = pnp.logical_and(up, pnp.not_equal(exp, np.uint32(0xFE)))
    exp = pnp.where(special, np.uint32(0xFF), pnp.add(exp, cast(up, u32)))
    exp = cast(pnp.bitwise_and(exp, np.uint32(0xFF)), np.uint8)
    return lax.bitcast_convert_type(exp, dtypes.float8_e8m0fnu)
