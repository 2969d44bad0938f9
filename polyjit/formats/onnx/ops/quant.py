"""Quantization ops: (De)QuantizeLinear, DynamicQuantizeLinear, QLinear*, *Integer."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from .... import lax
from .... import numpy as pnp
from ....tracer import dtypes
from . import op
from ._util import cast, dtype_of, ndim_of, norm_axis, onnx_cast, onnx_dtype, shape_of
from .nn import conv_pads


def _broadcast_param(ctx, p, x):
    """A scale / zero point shaped to broadcast against x: scalar (per tensor), 1-D along
    `axis` (per axis), or same-rank with `block_size` (blocked)."""
    ps = shape_of(p)
    n = ndim_of(x)
    bs = ctx.attr("block_size", 0)
    if len(ps) == 0 or (len(ps) == 1 and ps[0] == 1 and (n != 1 or not bs)):
        return pnp.reshape(p, ())
    axis = norm_axis(ctx.attr("axis", 1), n)
    if bs:
        return pnp.take(p, np.arange(shape_of(x)[axis]) // bs, axis=axis)
    shape = [1] * n
    shape[axis] = ps[0]
    return pnp.reshape(p, tuple(shape))


def saturate(v, dt):
    """Round half to even and clamp into integer dtype dt (int4/int2 included)."""
    info = ml_dtypes.iinfo(dt)
    v = pnp.clip(pnp.rint(v), np.asarray(info.min, dtype_of(v)), np.asarray(info.max, dtype_of(v)))
    return cast(v, dt)


def _out_dtype(ctx, zp):
    if zp is not None:
        return dtype_of(zp)
    code = ctx.attr("output_dtype", 0)
    return onnx_dtype(ctx, code) if code else np.dtype(np.uint8)


_FLOAT_Q = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float4_e2m1fn")


@op("QuantizeLinear")
def quantize_linear(ctx, x, scale, zp=None):
    dt = _out_dtype(ctx, zp)
    xf = cast(x, np.float32)
    q = pnp.divide(xf, cast(_broadcast_param(ctx, scale, x), np.float32))
    if not (dtypes.is_int(dt) or dt.name in ("int4", "uint4", "int2", "uint2")):
        # float8/float4 targets: the conversion itself rounds (to nearest even)
        if dt.name not in _FLOAT_Q:
            raise ctx.fail(f"quantizing to {dt.name} is not supported")
        if zp is not None:
            q = pnp.add(q, cast(_broadcast_param(ctx, zp, x), np.float32))
        return onnx_cast(q, dt, bool(ctx.attr("saturate", 1)))
    q = pnp.rint(q)
    if zp is not None:
        q = pnp.add(q, cast(_broadcast_param(ctx, zp, x), np.float32))
    return saturate(q, dt)


@op("DequantizeLinear")
def dequantize_linear(ctx, x, scale, zp=None):
    out_dt = dtype_of(scale)
    xf = cast(x, np.float32)
    if zp is not None:
        xf = pnp.subtract(xf, cast(_broadcast_param(ctx, zp, x), np.float32))
    return cast(pnp.multiply(xf, cast(_broadcast_param(ctx, scale, x), np.float32)), out_dt)


@op("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx, x):
    zero = np.float32(0)
    lo = pnp.minimum(pnp.min(x), zero)
    hi = pnp.maximum(pnp.max(x), zero)
    scale = pnp.divide(pnp.subtract(hi, lo), np.float32(255))
    zp = saturate(pnp.subtract(zero, pnp.divide(lo, scale)), np.uint8)
    y = saturate(pnp.add(pnp.rint(pnp.divide(x, scale)), cast(zp, np.float32)), np.uint8)
    return [y, scale, zp]


def _centered(v, zp, per_row=False):
    v = cast(v, np.int32)
    if zp is None:
        return v
    z = cast(zp, np.int32)
    if per_row and len(shape_of(z)) == 1:
        z = pnp.reshape(z, (-1, 1))
    return pnp.subtract(v, z)


@op("MatMulInteger")
def matmul_integer(ctx, a, b, a_zp=None, b_zp=None):
    return pnp.matmul(_centered(a, a_zp, per_row=True), _centered(b, b_zp))


def _int_conv(ctx, x, w, x_zp, w_zp):
    xc = _centered(x, x_zp)
    wz = None if w_zp is None else pnp.reshape(cast(w_zp, np.int32), (-1,) + (1,) * (ndim_of(w) - 1)) \
        if len(shape_of(w_zp)) == 1 and shape_of(w_zp)[0] > 1 else w_zp
    wc = _centered(w, wz)
    nsp = ndim_of(x) - 2
    k = ctx.attr("kernel_shape") or shape_of(w)[2:]
    strides = ctx.attr("strides") or [1] * nsp
    dil = ctx.attr("dilations") or [1] * nsp
    pads = conv_pads(ctx, shape_of(x)[2:], k, strides, dil)
    return lax.conv_general_dilated(xc, wc, strides, pads, rhs_dilation=dil,
                                    feature_group_count=ctx.attr("group", 1))


@op("ConvInteger")
def conv_integer(ctx, x, w, x_zp=None, w_zp=None):
    return _int_conv(ctx, x, w, x_zp, w_zp)


def _requantize(acc, multiplier, y_zp):
    y = pnp.rint(pnp.multiply(cast(acc, np.float32), cast(multiplier, np.float32)))
    y = pnp.add(y, cast(y_zp, np.float32))
    return saturate(y, dtype_of(y_zp))


@op("QLinearMatMul")
def qlinear_matmul(ctx, a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
    acc = pnp.matmul(_centered(a, a_zp, per_row=True), _centered(b, b_zp))
    mult = pnp.divide(pnp.multiply(cast(a_scale, np.float32), cast(b_scale, np.float32)),
                      cast(y_scale, np.float32))
    return _requantize(acc, mult, y_zp)


@op("QLinearConv")
def qlinear_conv(ctx, x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, b=None):
    acc = _int_conv(ctx, x, w, x_zp, w_zp)
    nd = ndim_of(acc)
    if b is not None:
        acc = pnp.add(acc, pnp.reshape(cast(b, np.int32), (-1,) + (1,) * (nd - 2)))
    ws = cast(w_scale, np.float32)
    if len(shape_of(ws)) == 1 and shape_of(ws)[0] > 1:
        ws = pnp.reshape(ws, (-1,) + (1,) * (nd - 2))
    mult = pnp.divide(pnp.multiply(cast(x_scale, np.float32), ws), cast(y_scale, np.float32))
    return _requantize(acc, mult, y_zp)
