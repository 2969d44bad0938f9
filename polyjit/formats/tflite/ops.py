"""TFLite builtin operators as pnp/lax functions (NHWC layout).

Each handler takes (ctx, inputs, options) and returns one value or a list. `inputs` holds
numpy arrays for constants and polyjit arrays for computed values; `ctx.static(v)` gets a
value that must be known at trace time (shapes, axes, paddings).
"""
from __future__ import annotations

import struct

import numpy as np

from .. import FormatError
from ... import lax
from ... import numpy as pnp

OPS: dict = {}


def op(*names):
    def reg(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return reg


# ---------------------------------------------------------------- helpers

def _act(x, code):
    """TFLite fused activation functions."""
    if not code:
        return x
    if code == 1:
        return pnp.maximum(x, 0)
    if code == 2:
        return pnp.clip(x, -1, 1)
    if code == 3:
        return pnp.clip(x, 0, 6)
    if code == 4:
        return pnp.tanh(x)
    if code == 5:
        return pnp.sign(x)
    raise FormatError(f"tflite: unknown fused activation {code}")


def _fused(o):
    return o.get("FusedActivationFunction", 0)


def _same_pads(size, k, stride, dilation):
    eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return (total // 2, total - total // 2)


def _pads(padding, spatial, kernel, strides, dilations):
    if padding == 1:            # VALID
        return [(0, 0)] * len(spatial)
    return [_same_pads(s, k, st, d) for s, k, st, d in zip(spatial, kernel, strides, dilations)]


def _f(x):
    return pnp.asarray(x).astype(pnp.float32) if pnp.asarray(x).dtype == pnp.float16 else pnp.asarray(x)


def _nchw(x):
    return pnp.transpose(x, (0, 3, 1, 2))


def _nhwc(x):
    return pnp.transpose(x, (0, 2, 3, 1))


def _out_dtype(ctx, k=0):
    t = ctx.out_tensor(k)
    return np.float32 if t.quantized else t.dtype


# ---------------------------------------------------------------- elementwise

_UNARY = {
    "ABS": pnp.abs, "CEIL": pnp.ceil, "COS": pnp.cos, "EXP": pnp.exp, "FLOOR": pnp.floor,
    "LOG": pnp.log, "NEG": pnp.negative, "ROUND": pnp.round, "RSQRT": lambda x: lax.rsqrt(x),
    "SIN": pnp.sin, "SQRT": pnp.sqrt, "SQUARE": pnp.square, "TANH": pnp.tanh, "SIGN": pnp.sign,
    "LOGICAL_NOT": pnp.logical_not, "ZEROS_LIKE": pnp.zeros_like,
    "LOGISTIC": lambda x: 1.0 / (1.0 + pnp.exp(-x)),
    "RELU": lambda x: pnp.maximum(x, 0), "RELU6": lambda x: pnp.clip(x, 0, 6),
    "RELU_N1_TO_1": lambda x: pnp.clip(x, -1, 1), "RELU_0_TO_1": lambda x: pnp.clip(x, 0, 1),
    "HARD_SWISH": lambda x: x * pnp.clip(x + 3.0, 0, 6) * (1.0 / 6.0),
    "ELU": lambda x: pnp.where(x > 0, x, pnp.expm1(x)),
}
for _n, _fn in _UNARY.items():
    OPS[_n] = (lambda fn: lambda ctx, ins, o: fn(_f(ins[0])))(_fn)

_BINARY = {
    "ADD": pnp.add, "SUB": pnp.subtract, "MUL": pnp.multiply, "MAXIMUM": pnp.maximum,
    "MINIMUM": pnp.minimum, "POW": pnp.power, "FLOOR_DIV": pnp.floor_divide,
    "FLOOR_MOD": pnp.mod, "SQUARED_DIFFERENCE": lambda a, b: pnp.square(a - b),
    "EQUAL": pnp.equal, "NOT_EQUAL": pnp.not_equal, "LESS": pnp.less,
    "LESS_EQUAL": pnp.less_equal, "GREATER": pnp.greater, "GREATER_EQUAL": pnp.greater_equal,
    "LOGICAL_AND": pnp.logical_and, "LOGICAL_OR": pnp.logical_or, "ATAN2": pnp.arctan2,
    "BITWISE_XOR": pnp.bitwise_xor, "RIGHT_SHIFT": pnp.right_shift,
}


def _binary(fn):
    def h(ctx, ins, o):
        return _act(fn(_f(ins[0]), _f(ins[1])), _fused(o))
    return h


for _n, _fn in _BINARY.items():
    OPS[_n] = _binary(_fn)


@op("DIV")
def _div(ctx, ins, o):
    a, b = _f(ins[0]), _f(ins[1])
    if pnp.asarray(a).dtype.kind in "iu":
        q = pnp.floor_divide(pnp.abs(a), pnp.abs(b))              # TFLite truncates toward zero
        return _act(pnp.where((a < 0) != (b < 0), -q, q), _fused(o))
    return _act(a / b, _fused(o))


@op("ADD_N")
def _add_n(ctx, ins, o):
    out = _f(ins[0])
    for x in ins[1:]:
        out = out + _f(x)
    return out


@op("SELECT", "SELECT_V2")
def _select(ctx, ins, o):
    return pnp.where(ins[0], _f(ins[1]), _f(ins[2]))


@op("LEAKY_RELU")
def _leaky(ctx, ins, o):
    x = _f(ins[0])
    return pnp.where(x >= 0, x, x * o.get("Alpha", 0.2))


@op("PRELU")
def _prelu(ctx, ins, o):
    x, a = _f(ins[0]), _f(ins[1])
    return pnp.where(x >= 0, x, x * a)


@op("GELU")
def _gelu(ctx, ins, o):
    x = _f(ins[0])
    if o.get("Approximate"):
        return 0.5 * x * (1.0 + pnp.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1.0 + lax.erf(x * 0.7071067811865476))


@op("CAST")
def _cast(ctx, ins, o):
    return pnp.asarray(ins[0]).astype(_out_dtype(ctx))


@op("DEQUANTIZE", "QUANTIZE", "DENSIFY", "IDENTITY")
def _identity_float(ctx, ins, o):
    # FP16 constants become float32; quantized values are already carried as real numbers
    # (the runner snaps QUANTIZE outputs to their grid); DENSIFY inputs were densified at load.
    x = pnp.asarray(ins[0])
    return x.astype(pnp.float32) if x.dtype.kind == "f" or ctx.op.name != "DENSIFY" else x


# ---------------------------------------------------------------- activations over axes

@op("SOFTMAX")
def _softmax(ctx, ins, o):
    x = _f(ins[0]) * o.get("Beta", 1.0)
    e = pnp.exp(x - pnp.max(x, axis=-1, keepdims=True))
    return e / pnp.sum(e, axis=-1, keepdims=True)


@op("LOG_SOFTMAX")
def _log_softmax(ctx, ins, o):
    x = _f(ins[0])
    m = pnp.max(x, axis=-1, keepdims=True)
    return x - m - pnp.log(pnp.sum(pnp.exp(x - m), axis=-1, keepdims=True))


@op("L2_NORMALIZATION")
def _l2norm(ctx, ins, o):
    x = _f(ins[0])
    return _act(x * lax.rsqrt(pnp.maximum(pnp.sum(x * x, axis=-1, keepdims=True), 1e-6)), _fused(o))


@op("LOCAL_RESPONSE_NORMALIZATION")
def _lrn(ctx, ins, o):
    x = _f(ins[0])
    r = int(o.get("Radius", 5))
    sq = pnp.pad(x * x, [(0, 0)] * (x.ndim - 1) + [(r, r)])
    c = x.shape[-1]
    s = sum(sq[..., i:i + c] for i in range(2 * r + 1))
    return x / pnp.power(o.get("Bias", 1.0) + o.get("Alpha", 1.0) * s, o.get("Beta", 0.5))


# ---------------------------------------------------------------- shapes

@op("RESHAPE")
def _reshape(ctx, ins, o):
    x = ins[0]
    shape = ctx.static(ins[1], "shape").tolist() if len(ins) > 1 and ins[1] is not None else o.get("NewShape")
    if not shape and shape != []:
        shape = list(ctx.out_tensor().shape)
    return pnp.reshape(pnp.asarray(x), [int(d) for d in np.ravel(shape)])


@op("SQUEEZE")
def _squeeze(ctx, ins, o):
    dims = o.get("SqueezeDims") or None
    return pnp.squeeze(pnp.asarray(ins[0]), axis=tuple(dims) if dims else None)


@op("EXPAND_DIMS")
def _expand(ctx, ins, o):
    return pnp.expand_dims(pnp.asarray(ins[0]), int(ctx.static(ins[1], "axis").reshape(-1)[0]))


@op("TRANSPOSE")
def _transpose(ctx, ins, o):
    return pnp.transpose(pnp.asarray(ins[0]), [int(a) for a in ctx.static(ins[1], "permutation")])


@op("CONCATENATION")
def _concat(ctx, ins, o):
    return _act(pnp.concatenate([_f(x) for x in ins], axis=o.get("Axis", 0)), _fused(o))


@op("PACK")
def _pack(ctx, ins, o):
    return pnp.stack([_f(x) for x in ins], axis=o.get("Axis", 0))


@op("UNPACK")
def _unpack(ctx, ins, o):
    x = pnp.asarray(ins[0])
    axis = o.get("Axis", 0)
    return [pnp.take(x, i, axis=axis) for i in range(x.shape[axis])]


@op("SPLIT")
def _split(ctx, ins, o):
    axis = int(ctx.static(ins[0], "axis").reshape(-1)[0])
    return pnp.split(pnp.asarray(ins[1]), o.get("NumSplits", len(ctx.op.outputs)), axis=axis)


@op("SPLIT_V")
def _split_v(ctx, ins, o):
    x = pnp.asarray(ins[0])
    sizes = [int(s) for s in ctx.static(ins[1], "sizes")]
    axis = int(ctx.static(ins[2], "axis").reshape(-1)[0]) % x.ndim
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    return pnp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis)


@op("SLICE")
def _slice(ctx, ins, o):
    x = pnp.asarray(ins[0])
    begin, size = ctx.static(ins[1], "begin"), ctx.static(ins[2], "size")
    end = [x.shape[i] if s == -1 else b + s for i, (b, s) in enumerate(zip(begin, size))]
    return lax.slice(x, [int(b) for b in begin], [int(e) for e in end])


@op("STRIDED_SLICE")
def _strided_slice(ctx, ins, o):
    x = pnp.asarray(ins[0])
    begin, end = ctx.static(ins[1], "begin"), ctx.static(ins[2], "end")
    strides = ctx.static(ins[3], "strides") if len(ins) > 3 else np.ones_like(begin)
    bit = lambda name, i: (o.get(name, 0) >> i) & 1  # noqa: E731
    idx = []
    for i in range(len(begin)):
        if bit("EllipsisMask", i):
            idx.append(Ellipsis)
        elif bit("NewAxisMask", i):
            idx.append(None)
        elif bit("ShrinkAxisMask", i):
            idx.append(int(begin[i]))
        else:
            b = None if bit("BeginMask", i) else int(begin[i])
            e = None if bit("EndMask", i) else int(end[i]) + (int(begin[i]) if o.get("Offset") else 0)
            idx.append(slice(b, e, int(strides[i])))
    return x[tuple(idx)]


@op("TILE")
def _tile(ctx, ins, o):
    return pnp.tile(pnp.asarray(ins[0]), [int(m) for m in ctx.static(ins[1], "multiples")])


@op("BROADCAST_TO")
def _broadcast_to(ctx, ins, o):
    return pnp.broadcast_to(pnp.asarray(ins[0]), [int(d) for d in ctx.static(ins[1], "shape")])


@op("BROADCAST_ARGS")
def _broadcast_args(ctx, ins, o):
    a, b = ctx.static(ins[0]), ctx.static(ins[1])
    return np.array(np.broadcast_shapes(tuple(a), tuple(b)), a.dtype)


@op("SHAPE")
def _shape(ctx, ins, o):
    return np.array(pnp.shape(ins[0]), ctx.out_tensor().dtype or np.int32)


@op("RANK")
def _rank(ctx, ins, o):
    return np.array(len(pnp.shape(ins[0])), np.int32)


@op("FILL")
def _fill(ctx, ins, o):
    return pnp.broadcast_to(pnp.asarray(ins[1]), [int(d) for d in ctx.static(ins[0], "dims")])


@op("RANGE")
def _range(ctx, ins, o):
    s, l_, d = (ctx.static(v).reshape(()) for v in ins[:3])
    return np.arange(s, l_, d).astype(ctx.out_tensor().dtype)


@op("PAD", "PADV2")
def _pad(ctx, ins, o):
    x = _f(ins[0])
    pads = [(int(a), int(b)) for a, b in ctx.static(ins[1], "paddings")]
    value = ins[2] if len(ins) > 2 and ins[2] is not None else 0
    if np.isscalar(value) or isinstance(value, np.ndarray):
        return pnp.pad(x, pads, constant_values=np.asarray(value).reshape(()))
    # a float constant value is a param (traced): fill the border through a static mask
    border = np.pad(np.zeros(x.shape, bool), pads, constant_values=True)
    return pnp.where(border, pnp.reshape(pnp.asarray(value), ()).astype(x.dtype), pnp.pad(x, pads))


@op("MIRROR_PAD")
def _mirror_pad(ctx, ins, o):
    pads = [(int(a), int(b)) for a, b in ctx.static(ins[1], "paddings")]
    return pnp.pad(_f(ins[0]), pads, mode="reflect" if o.get("Mode", 0) == 0 else "symmetric")


@op("GATHER")
def _gather(ctx, ins, o):
    x, idx = _f(ins[0]), pnp.asarray(ins[1])
    if o.get("BatchDims", 0):
        raise FormatError("tflite: GATHER with batch_dims is not supported")
    return pnp.take(x, idx, axis=o.get("Axis", 0))


@op("GATHER_ND")
def _gather_nd(ctx, ins, o):
    x, idx = _f(ins[0]), pnp.asarray(ins[1])
    k = idx.shape[-1]
    return x[tuple(idx[..., i] for i in range(k))]


@op("EMBEDDING_LOOKUP")
def _embedding(ctx, ins, o):
    return pnp.take(_f(ins[1]), pnp.asarray(ins[0]), axis=0)


@op("REVERSE_V2")
def _reverse(ctx, ins, o):
    return pnp.flip(_f(ins[0]), axis=tuple(int(a) for a in ctx.static(ins[1], "axes")))


@op("DEPTH_TO_SPACE")
def _d2s(ctx, ins, o):
    x, b = _f(ins[0]), o["BlockSize"]
    n, h, w, c = x.shape
    y = x.reshape(n, h, w, b, b, c // (b * b))
    return pnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(n, h * b, w * b, c // (b * b))


@op("SPACE_TO_DEPTH")
def _s2d(ctx, ins, o):
    x, b = _f(ins[0]), o["BlockSize"]
    n, h, w, c = x.shape
    y = x.reshape(n, h // b, b, w // b, b, c)
    return pnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(n, h // b, w // b, b * b * c)


@op("SPACE_TO_BATCH_ND")
def _s2b(ctx, ins, o):
    x = _f(ins[0])
    block, pads = ctx.static(ins[1], "block shape"), ctx.static(ins[2], "paddings")
    n, h, w, c = x.shape
    bh, bw = int(block[0]), int(block[1])
    x = pnp.pad(x, [(0, 0), tuple(int(p) for p in pads[0]), tuple(int(p) for p in pads[1]), (0, 0)])
    hp, wp = x.shape[1], x.shape[2]
    y = x.reshape(n, hp // bh, bh, wp // bw, bw, c)
    return pnp.transpose(y, (2, 4, 0, 1, 3, 5)).reshape(bh * bw * n, hp // bh, wp // bw, c)


@op("BATCH_TO_SPACE_ND")
def _b2s(ctx, ins, o):
    x = _f(ins[0])
    block, crops = ctx.static(ins[1], "block shape"), ctx.static(ins[2], "crops")
    bh, bw = int(block[0]), int(block[1])
    nb, h, w, c = x.shape
    n = nb // (bh * bw)
    y = pnp.transpose(x.reshape(bh, bw, n, h, w, c), (2, 3, 0, 4, 1, 5)).reshape(n, h * bh, w * bw, c)
    (t, b_), (l_, r) = [(int(a), int(b)) for a, b in crops]
    return y[:, t:h * bh - b_, l_:w * bw - r, :]


@op("ONE_HOT")
def _one_hot(ctx, ins, o):
    idx = pnp.asarray(ins[0])
    depth = int(ctx.static(ins[1], "depth").reshape(()))
    on, off = pnp.asarray(ins[2]), pnp.asarray(ins[3])
    axis = o.get("Axis", -1)
    hot = pnp.expand_dims(idx, axis if axis >= 0 else idx.ndim) == pnp.arange(depth, dtype=idx.dtype).reshape(
        [depth if i == (axis if axis >= 0 else idx.ndim) else 1 for i in range(idx.ndim + 1)])
    return pnp.where(hot, on, off)


@op("CUMSUM")
def _cumsum(ctx, ins, o):
    x = _f(ins[0])
    axis = int(ctx.static(ins[1], "axis").reshape(()))
    if o.get("Reverse"):
        x = pnp.flip(x, axis=axis)
    y = pnp.cumsum(x, axis=axis)
    if o.get("Exclusive"):
        y = y - x
    return pnp.flip(y, axis=axis) if o.get("Reverse") else y


@op("ARG_MAX", "ARG_MIN")
def _argminmax(ctx, ins, o):
    axis = int(ctx.static(ins[1], "axis").reshape(-1)[0])
    fn = pnp.argmax if ctx.op.name == "ARG_MAX" else pnp.argmin
    return fn(_f(ins[0]), axis=axis).astype(ctx.out_tensor().dtype)


@op("TOPK_V2")
def _topk(ctx, ins, o):
    k = int(ctx.static(ins[1], "k").reshape(()))
    v, i = pnp.top_k(_f(ins[0]), k)
    return [v, i.astype(ctx.out_tensor(1).dtype)]


# ---------------------------------------------------------------- reductions

def _reducer(fn):
    def h(ctx, ins, o):
        axes = tuple(int(a) for a in np.ravel(ctx.static(ins[1], "axes")))
        return fn(_f(ins[0]), axis=axes, keepdims=bool(o.get("KeepDims", False)))
    return h


for _n, _fn in {"MEAN": pnp.mean, "SUM": pnp.sum, "REDUCE_MAX": pnp.max, "REDUCE_MIN": pnp.min,
                "REDUCE_PROD": pnp.prod, "REDUCE_ANY": pnp.any, "REDUCE_ALL": pnp.all}.items():
    OPS[_n] = _reducer(_fn)


# ---------------------------------------------------------------- convolutions, matmul, pooling

def _conv_nhwc(x, w_ohwi, strides, dilations, padding, groups=1):
    x = _f(x)
    w = pnp.transpose(_f(w_ohwi), (0, 3, 1, 2))                       # OHWI -> OIHW
    pads = _pads(padding, x.shape[1:3], w.shape[2:], strides, dilations)
    y = lax.conv_general_dilated(_nchw(x), w, strides, pads, rhs_dilation=dilations,
                                 feature_group_count=groups)
    return _nhwc(y)


def _bias(y, b):
    return y if b is None else y + _f(b)


@op("CONV_2D")
def _conv2d(ctx, ins, o):
    x, w = ins[0], ins[1]
    groups = pnp.shape(x)[3] // pnp.shape(w)[3]
    y = _conv_nhwc(x, w, (o.get("StrideH", 1), o.get("StrideW", 1)),
                   (o.get("DilationHFactor", 1), o.get("DilationWFactor", 1)), o.get("Padding", 0), groups)
    return _act(_bias(y, ins[2] if len(ins) > 2 else None), _fused(o))


@op("DEPTHWISE_CONV_2D")
def _dwconv(ctx, ins, o):
    x, w = ins[0], _f(ins[1])                                          # w: (1, H, W, C*mult)
    c = pnp.shape(x)[3]
    w_ohwi = pnp.transpose(w, (3, 1, 2, 0))                            # (C*mult, H, W, 1)
    y = _conv_nhwc(x, w_ohwi, (o.get("StrideH", 1), o.get("StrideW", 1)),
                   (o.get("DilationHFactor", 1), o.get("DilationWFactor", 1)), o.get("Padding", 0), c)
    return _act(_bias(y, ins[2] if len(ins) > 2 else None), _fused(o))


def _transpose_conv(x, w_ohwi, out_hw, strides, padding):
    """Gradient-of-conv: dilate the input by the stride, pad, convolve with the flipped kernel."""
    x = _f(x)
    w = pnp.flip(pnp.transpose(_f(w_ohwi), (0, 3, 1, 2)), axis=(2, 3))   # OIHW, flipped
    kh, kw = w.shape[2], w.shape[3]
    pads = []
    for size, k, s, out in zip(x.shape[1:3], (kh, kw), strides, out_hw):
        total = max((size - 1) * s + k - out, 0) if padding == 0 else 0
        before = total // 2
        lo = k - 1 - before
        hi = out + k - 1 - ((size - 1) * s + 1) - lo
        pads.append((lo, hi))
    y = lax.conv_general_dilated(_nchw(x), w, (1, 1), pads, lhs_dilation=strides)
    return _nhwc(y)


@op("TRANSPOSE_CONV")
def _tconv(ctx, ins, o):
    out_shape = [int(d) for d in ctx.static(ins[0], "output shape")]
    strides = (o.get("StrideH", 1), o.get("StrideW", 1))
    y = _transpose_conv(ins[2], ins[1], out_shape[1:3], strides, o.get("Padding", 0))
    return _act(_bias(y, ins[3] if len(ins) > 3 else None), _fused(o))


@op("Convolution2DTransposeBias")
def _mp_tconv_bias(ctx, ins, o):
    # MediaPipe custom op: custom options are {int32 padding (1 SAME, 2 VALID), stride_w, stride_h}
    pad, sw, sh = struct.unpack("<3i", ctx.op.custom_options[:12])
    x, w, b = ins[0], ins[1], ins[2]
    h, wd = pnp.shape(x)[1:3]
    kh, kw = pnp.shape(w)[1:3]
    same = pad == 1
    out_hw = (h * sh, wd * sw) if same else ((h - 1) * sh + kh, (wd - 1) * sw + kw)
    return _bias(_transpose_conv(x, w, out_hw, (sh, sw), 0 if same else 1), b)


@op("FULLY_CONNECTED")
def _fc(ctx, ins, o):
    x, w = _f(ins[0]), _f(ins[1])                                      # w: (out, in)
    k = w.shape[1]
    lead = x.shape[:-1]
    y = lax.dot_general(x.reshape(-1, k), w, (((1,), (1,)), ((), ())))
    y = _bias(y, ins[2] if len(ins) > 2 else None)
    if o.get("KeepNumDims"):
        y = y.reshape(tuple(lead) + (w.shape[0],))
    return _act(y, _fused(o))


@op("BATCH_MATMUL")
def _bmm(ctx, ins, o):
    a, b = _f(ins[0]), _f(ins[1])
    if o.get("AdjX"):
        a = pnp.swapaxes(a, -1, -2)
    if o.get("AdjY"):
        b = pnp.swapaxes(b, -1, -2)
    return pnp.matmul(a, b)


def _pool_args(x, o):
    k = (o.get("FilterHeight", 1), o.get("FilterWidth", 1))
    s = (o.get("StrideH", 1), o.get("StrideW", 1))
    pads = _pads(o.get("Padding", 0), pnp.shape(x)[1:3], k, s, (1, 1))
    return (1,) + k + (1,), (1,) + s + (1,), [(0, 0)] + pads + [(0, 0)]


@op("MAX_POOL_2D")
def _maxpool(ctx, ins, o):
    x = _f(ins[0])
    win, st, pads = _pool_args(x, o)
    return _act(lax.reduce_window_max(x, win, st, pads), _fused(o))


@op("AVERAGE_POOL_2D")
def _avgpool(ctx, ins, o):
    x = _f(ins[0])
    win, st, pads = _pool_args(x, o)
    total = lax.reduce_window_sum(x, win, st, pads)
    # TFLite divides by the number of in-bounds elements (padding not counted)
    ones = pnp.ones((1,) + tuple(x.shape[1:3]) + (1,), x.dtype)
    count = lax.reduce_window_sum(ones, win, st, pads)
    return _act(total / count, _fused(o))


@op("L2_POOL_2D")
def _l2pool(ctx, ins, o):
    x = _f(ins[0])
    win, st, pads = _pool_args(x, o)
    ones = pnp.ones((1,) + tuple(x.shape[1:3]) + (1,), x.dtype)
    mean = lax.reduce_window_sum(x * x, win, st, pads) / lax.reduce_window_sum(ones, win, st, pads)
    return _act(pnp.sqrt(mean), _fused(o))


# ---------------------------------------------------------------- resizing

def _bilinear_axis(x, axis, out, align, half):
    n = x.shape[axis]
    if out == n and not half:
        return x
    scale = (n - 1) / (out - 1) if align and out > 1 else n / out
    d = np.arange(out, dtype=np.float32)
    src = (d + 0.5) * np.float32(scale) - 0.5 if half else d * np.float32(scale)
    lo = np.maximum(np.floor(src), 0).astype(np.int32)
    hi = np.minimum(np.ceil(src), n - 1).astype(np.int32)
    frac = (src - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = out
    f = pnp.asarray(frac.reshape(shape))
    return pnp.take(x, lo, axis=axis) * (1.0 - f) + pnp.take(x, hi, axis=axis) * f


@op("RESIZE_BILINEAR")
def _resize_bilinear(ctx, ins, o):
    x = _f(ins[0])
    h, w = (int(v) for v in ctx.static(ins[1], "size"))
    align, half = bool(o.get("AlignCorners")), bool(o.get("HalfPixelCenters"))
    return _bilinear_axis(_bilinear_axis(x, 1, h, align, half), 2, w, align, half)


def _nearest_index(n, out, align, half):
    scale = (n - 1) / (out - 1) if align and out > 1 else n / out
    v = (np.arange(out, dtype=np.float32) + (0.5 if half else 0.0)) * np.float32(scale)
    idx = np.floor(v + 0.5) if align else np.floor(v)     # TfLiteRound: halves away from zero
    return np.clip(idx, 0, n - 1).astype(np.int32)


@op("RESIZE_NEAREST_NEIGHBOR")
def _resize_nearest(ctx, ins, o):
    x = _f(ins[0])
    h, w = (int(v) for v in ctx.static(ins[1], "size"))
    align, half = bool(o.get("AlignCorners")), bool(o.get("HalfPixelCenters"))
    x = pnp.take(x, _nearest_index(x.shape[1], h, align, half), axis=1)
    return pnp.take(x, _nearest_index(x.shape[2], w, align, half), axis=2)


# ---------------------------------------------------------------- control flow and state

def _subgraph_fn(ctx, index):
    def run(*args):
        outs = ctx.runner.run(index, ctx.params, list(args), dict(ctx.state))
        return tuple(outs)
    return run


@op("IF")
def _if(ctx, ins, o):
    then_fn = _subgraph_fn(ctx, o["ThenSubgraphIndex"])
    else_fn = _subgraph_fn(ctx, o["ElseSubgraphIndex"])
    pred, args = ins[0], [pnp.asarray(a) for a in ins[1:]]
    try:
        concrete = bool(np.asarray(pred).reshape(()))
    except Exception:
        return list(lax.cond(pnp.asarray(pred).reshape(()), lambda *a: then_fn(*a),
                             lambda *a: else_fn(*a), *args))
    return list((then_fn if concrete else else_fn)(*args))


@op("WHILE")
def _while(ctx, ins, o):
    cond_fn = _subgraph_fn(ctx, o["CondSubgraphIndex"])
    body_fn = _subgraph_fn(ctx, o["BodySubgraphIndex"])
    init = tuple(pnp.asarray(a) for a in ins)
    return list(lax.while_loop(lambda c: pnp.asarray(cond_fn(*c)[0]).reshape(()),
                               lambda c: tuple(pnp.asarray(v) for v in body_fn(*c)), init))


@op("CALL_ONCE")
def _call_once(ctx, ins, o):
    key = f"__init_{o['InitSubgraphIndex']}"
    if key not in ctx.state:
        ctx.runner.run(o["InitSubgraphIndex"], ctx.params, [], ctx.state)
        ctx.state[key] = np.zeros((), np.int32)
    return []


@op("VAR_HANDLE")
def _var_handle(ctx, ins, o):
    name = o.get("SharedName") or b""
    name = name.decode() if isinstance(name, bytes) else str(name)
    return np.array(f"var:{name or ctx.op.outputs[0]}")


@op("READ_VARIABLE")
def _read_var(ctx, ins, o):
    key = str(np.asarray(ins[0]))
    if key not in ctx.state:
        raise FormatError(f"tflite: resource variable {key!r} is read before it is assigned")
    return ctx.state[key]


@op("ASSIGN_VARIABLE")
def _assign_var(ctx, ins, o):
    ctx.state[str(np.asarray(ins[0]))] = ins[1]
    return []
