"""Elementwise ONNX ops: arithmetic, comparisons, logic, activations, casts."""
from __future__ import annotations

import math

import numpy as np

from .... import lax
from .... import numpy as pnp
from ....tracer import dtypes
from . import op
from ._util import cast, dtype_of, is_float, onnx_cast, onnx_dtype, scalar_like


def _simple(name, fn):
    op(name)(lambda ctx, *xs: fn(*xs))


for _name, _fn in {
    "Add": pnp.add, "Sub": pnp.subtract, "Mul": pnp.multiply,
    "Less": pnp.less, "Greater": pnp.greater,
    "LessOrEqual": pnp.less_equal, "GreaterOrEqual": pnp.greater_equal,
    "And": pnp.logical_and, "Or": pnp.logical_or, "Xor": pnp.logical_xor, "Not": pnp.logical_not,
    "BitwiseAnd": pnp.bitwise_and, "BitwiseOr": pnp.bitwise_or, "BitwiseXor": pnp.bitwise_xor,
    "BitwiseNot": pnp.bitwise_not,
    "Neg": pnp.negative, "Abs": pnp.abs, "Sign": pnp.sign,
    "Exp": pnp.exp, "Log": pnp.log, "Sqrt": pnp.sqrt, "Floor": pnp.floor, "Ceil": pnp.ceil,
    "Round": pnp.rint, "Sin": pnp.sin, "Cos": pnp.cos, "Tan": pnp.tan, "Asin": pnp.arcsin,
    "Acos": pnp.arccos, "Atan": pnp.arctan, "Sinh": pnp.sinh, "Cosh": pnp.cosh,
    "Asinh": pnp.arcsinh, "Acosh": pnp.arccosh, "Atanh": pnp.arctanh, "Tanh": pnp.tanh,
    "Erf": lax.erf, "Sigmoid": lax.logistic, "IsNaN": pnp.isnan,
}.items():
    _simple(_name, _fn)


@op("Identity")
def identity(ctx, x):
    return (x,)   # 1-tuple: x may be a sequence (a list)


@op("Div")
def div(ctx, a, b):
    if is_float(a):
        return pnp.divide(a, b)
    return lax.div(*pnp.broadcast_arrays(a, b))   # integers truncate toward zero (C semantics)


@op("Mod")
def mod(ctx, a, b):
    a, b = pnp.broadcast_arrays(a, b)
    if ctx.attr("fmod", 0):
        return lax.rem(a, b)            # sign of the dividend, like C fmod
    return pnp.remainder(a, b)          # sign of the divisor, like Python


@op("Pow")
def power(ctx, a, b):
    dt = dtype_of(a)
    if dtypes.is_float(dt):
        return pnp.power(a, cast(b, dt))
    out = pnp.power(cast(a, np.float64), cast(b, np.float64))   # exact for int results
    return cast(out, dt)


@op("Reciprocal")
def reciprocal(ctx, x):
    return pnp.divide(scalar_like(1, x), x)


@op("BitShift")
def bitshift(ctx, x, y):
    if ctx.attr("direction") == "LEFT":
        return pnp.left_shift(x, y)
    return pnp.right_shift(x, y)


@op("IsInf")
def isinf(ctx, x):
    pos, neg = ctx.attr("detect_positive", 1), ctx.attr("detect_negative", 1)
    inf = pnp.isinf(x)
    if pos and neg:
        return inf
    if not pos and not neg:
        return pnp.zeros_like(inf)
    return pnp.logical_and(inf, pnp.greater(x, 0) if pos else pnp.less(x, 0))


@op("Where")
def where(ctx, c, x, y):
    return pnp.where(c, x, y)


@op("Cast")
def cast_op(ctx, x):
    return onnx_cast(x, onnx_dtype(ctx, ctx.attr("to")), bool(ctx.attr("saturate", 1)),
                     ctx.attr("round_mode", "up"))


@op("CastLike")
def cast_like(ctx, x, like):
    return onnx_cast(x, dtype_of(like), bool(ctx.attr("saturate", 1)),
                     ctx.attr("round_mode", "up"))


def _variadic(fn):
    def impl(ctx, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return impl


op("Max")(_variadic(pnp.maximum))
op("Min")(_variadic(pnp.minimum))
op("Sum")(_variadic(pnp.add))


@op("Mean")
def mean(ctx, *xs):
    return pnp.divide(_variadic(pnp.add)(ctx, *xs), scalar_like(len(xs), xs[0]))


@op("Clip")
def clip(ctx, x, lo=None, hi=None):
    if ctx.version < 11:
        lo, hi = ctx.attr("min", -np.inf), ctx.attr("max", np.inf)
        lo, hi = scalar_like(lo, x), scalar_like(hi, x)
    if lo is not None:
        x = pnp.maximum(x, cast(lo, dtype_of(x)))
    if hi is not None:
        x = pnp.minimum(x, cast(hi, dtype_of(x)))
    return x


# ---------------------------------------------------------------- activations
@op("Relu")
def relu(ctx, x):
    return pnp.maximum(x, scalar_like(0, x))


@op("LeakyRelu")
def leaky_relu(ctx, x):
    a = scalar_like(ctx.attr("alpha", 0.01), x)
    return pnp.where(pnp.greater_equal(x, scalar_like(0, x)), x, pnp.multiply(a, x))


@op("PRelu")
def prelu(ctx, x, slope):
    return pnp.where(pnp.less(x, scalar_like(0, x)), pnp.multiply(slope, x), x)


@op("ThresholdedRelu")
def thresholded_relu(ctx, x):
    return pnp.where(pnp.greater(x, scalar_like(ctx.attr("alpha", 1.0), x)), x, scalar_like(0, x))


@op("Elu")
def elu(ctx, x):
    a = scalar_like(ctx.attr("alpha", 1.0), x)
    return pnp.where(pnp.greater(x, scalar_like(0, x)), x, pnp.multiply(a, pnp.expm1(x)))


@op("Selu")
def selu(ctx, x):
    a = scalar_like(ctx.attr("alpha", 1.67326319217681884765625), x)
    g = scalar_like(ctx.attr("gamma", 1.05070102214813232421875), x)
    neg = pnp.multiply(a, pnp.expm1(x))
    return pnp.multiply(g, pnp.where(pnp.greater(x, scalar_like(0, x)), x, neg))


@op("Celu")
def celu(ctx, x):
    a = scalar_like(ctx.attr("alpha", 1.0), x)
    zero = scalar_like(0, x)
    neg = pnp.multiply(a, pnp.expm1(pnp.divide(x, a)))
    return pnp.add(pnp.maximum(zero, x), pnp.minimum(zero, neg))


@op("HardSigmoid")
def hard_sigmoid(ctx, x, alpha=None, beta=None):
    a = scalar_like(ctx.attr("alpha", 0.2) if alpha is None else alpha, x)
    b = scalar_like(ctx.attr("beta", 0.5) if beta is None else beta, x)
    return pnp.clip(pnp.add(pnp.multiply(a, x), b), scalar_like(0, x), scalar_like(1, x))


@op("HardSwish")
def hard_swish(ctx, x):
    return pnp.multiply(x, hard_sigmoid(ctx, x, 1 / 6, 0.5))


@op("Softplus")
def softplus(ctx, x):
    return pnp.logaddexp(x, scalar_like(0, x))


@op("Softsign")
def softsign(ctx, x):
    return pnp.divide(x, pnp.add(scalar_like(1, x), pnp.abs(x)))


@op("Mish")
def mish(ctx, x):
    return pnp.multiply(x, pnp.tanh(softplus(ctx, x)))


@op("Swish")
def swish(ctx, x):
    return pnp.multiply(x, lax.logistic(pnp.multiply(scalar_like(ctx.attr("alpha", 1.0), x), x)))


def gelu(x, approximate="none"):
    half = scalar_like(0.5, x)
    if approximate == "tanh":
        inner = pnp.multiply(scalar_like(math.sqrt(2 / math.pi), x),
                             pnp.add(x, pnp.multiply(scalar_like(0.044715, x), pnp.power(x, 3))))
        return pnp.multiply(pnp.multiply(half, x), pnp.add(scalar_like(1, x), pnp.tanh(inner)))
    return pnp.multiply(pnp.multiply(half, x),
                        pnp.add(scalar_like(1, x), lax.erf(pnp.divide(x, scalar_like(math.sqrt(2), x)))))


@op("Gelu")
def gelu_op(ctx, x):
    return gelu(x, ctx.attr("approximate", "none"))


@op("Shrink")
def shrink(ctx, x):
    lambd, bias = scalar_like(ctx.attr("lambd", 0.5), x), scalar_like(ctx.attr("bias", 0.0), x)
    return pnp.where(pnp.less(x, pnp.negative(lambd)), pnp.add(x, bias),
                     pnp.where(pnp.greater(x, lambd), pnp.subtract(x, bias), scalar_like(0, x)))
