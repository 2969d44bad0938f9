"""Common com.microsoft contrib ops found in exported (and ORT-optimized) models."""
from __future__ import annotations

import numpy as np

from .... import lax
from .... import numpy as pnp
from . import op
from ._util import cast, dtype_of, scalar_like, shape_of
from .elementwise import gelu
from .quant import dynamic_quantize_linear

MS = "com.microsoft"


@op("FusedMatMul", domain=MS)
def fused_matmul(ctx, a, b):
    if ctx.attr("transA", 0):
        a = pnp.swapaxes(a, -1, -2)
    if ctx.attr("transB", 0):
        b = pnp.swapaxes(b, -1, -2)
    y = pnp.matmul(a, b)
    alpha = ctx.attr("alpha", 1.0)
    return y if alpha == 1.0 else pnp.multiply(scalar_like(alpha, y), y)


@op("Gelu", domain=MS)
def ms_gelu(ctx, x):
    return gelu(x)


@op("FastGelu", domain=MS)
def fast_gelu(ctx, x, bias=None):
    return gelu(x if bias is None else pnp.add(x, bias), "tanh")


@op("BiasGelu", domain=MS)
def bias_gelu(ctx, x, bias):
    return gelu(pnp.add(x, bias))


@op("QuickGelu", domain=MS)
def quick_gelu(ctx, x):
    return pnp.multiply(x, lax.logistic(pnp.multiply(scalar_like(ctx.attr("alpha", 1.702), x), x)))


@op("SkipLayerNormalization", domain=MS)
def skip_layer_norm(ctx, x, skip, gamma, beta=None, bias=None):
    """LayerNorm(x + skip + bias) over the last axis; outputs (y, mean, inv_std, x+skip+bias)."""
    s = pnp.add(x, skip)
    if bias is not None:
        s = pnp.add(s, bias)
    mean = pnp.mean(s, axis=-1, keepdims=True)
    d = pnp.subtract(s, mean)
    var = pnp.mean(pnp.multiply(d, d), axis=-1, keepdims=True)
    inv = pnp.divide(scalar_like(1, s), pnp.sqrt(pnp.add(var, scalar_like(ctx.attr("epsilon", 1e-12), s))))
    y = pnp.multiply(pnp.multiply(d, inv), gamma)
    if beta is not None:
        y = pnp.add(y, beta)
    return [y, mean, inv, s]


@op("SkipSimplifiedLayerNormalization", domain=MS)
def skip_rms_norm(ctx, x, skip, gamma, bias=None):
    s = pnp.add(x, skip)
    if bias is not None:
        s = pnp.add(s, bias)
    ms = pnp.mean(pnp.multiply(s, s), axis=-1, keepdims=True)
    inv = pnp.divide(scalar_like(1, s), pnp.sqrt(pnp.add(ms, scalar_like(ctx.attr("epsilon", 1e-12), s))))
    return [pnp.multiply(pnp.multiply(s, inv), gamma), None, inv, s]


@op("DynamicQuantizeMatMul", domain=MS)
def dynamic_quantize_matmul(ctx, a, b, b_scale, b_zp=None, bias=None):
    """a is quantized to uint8 on the fly (per tensor); b is a quantized weight."""
    qa, a_scale, a_zp = dynamic_quantize_linear(ctx, a)
    ac = pnp.subtract(cast(qa, np.int32), cast(a_zp, np.int32))
    bc = cast(b, np.int32) if b_zp is None else pnp.subtract(cast(b, np.int32), cast(b_zp, np.int32))
    acc = cast(pnp.matmul(ac, bc), np.float32)
    y = pnp.multiply(acc, pnp.multiply(a_scale, cast(b_scale, np.float32)))
    return y if bias is None else pnp.add(y, bias)
