"""More ONNX ops: BitCast, signal windows, DFT/STFT, Col2Im, grid sampling, newer attention
and convolution ops, training optimizers and the simple ai.onnx.ml ops."""
from __future__ import annotations

import itertools
import math

import numpy as np

from .... import lax
from .... import numpy as pnp
from ....tracer import dtypes
from . import op
from ._util import cast, dtype_of, ndim_of, norm_axis, onnx_dtype, scalar_like, shape_of


@op("BitCast")
def bitcast(ctx, x):
    dt = onnx_dtype(ctx, ctx.attr("to"))
    src = dtype_of(x)
    if dt.itemsize != src.itemsize:
        raise ctx.fail(f"BitCast between {src.name} and {dt.name} (different widths) is not "
                       "supported")
    return lax.bitcast_convert_type(x, dt)


# ---------------------------------------------------------------- small math ops
def _window(ctx, size, fn):
    n = ctx.ints(size, "size")[0]
    dt = onnx_dtype(ctx, ctx.attr("output_datatype", 1))
    denom = n if ctx.attr("periodic", 1) else n - 1
    # the window depends only on its (trace-time) length: computed here, a constant
    return np.asarray(fn(np.arange(n, dtype=np.float64), denom)).astype(dt)


@op("HannWindow", static=(0,))
def hann_window(ctx, size):
    return _window(ctx, size, lambda i, d: np.sin(i * np.pi / d) ** 2)


@op("HammingWindow", static=(0,))
def hamming_window(ctx, size):
    a = 25.0 / 46.0
    return _window(ctx, size, lambda i, d: a - np.cos(i * np.pi * 2 / d) * (1 - a))


@op("BlackmanWindow", static=(0,))
def blackman_window(ctx, size):
    return _window(ctx, size, lambda i, d: 0.42 - 0.5 * np.cos(i * np.pi * 2 / d)
                   + 0.08 * np.cos(i * np.pi * 4 / d))


@op("SwiGLU")
def swiglu(ctx, a, b):
    alpha = scalar_like(ctx.attr("alpha", 1.0), a)
    gate = pnp.multiply(a, pnp.reciprocal(pnp.add(scalar_like(1, a),
                                                  pnp.exp(pnp.negative(pnp.multiply(alpha, a))))))
    return pnp.multiply(gate, b)


@op("Det")
def det(ctx, x):
    """Determinant by Gaussian elimination with partial pivoting, unrolled over the (static)
    matrix size; pivot choices are data dependent but expressed with selects."""
    x = pnp.asarray(x)
    s = shape_of(x)
    n = s[-1]
    if s[-2] != n:
        raise ctx.fail(f"Det needs square matrices, got shape {s}")
    a = x
    one = scalar_like(1, x)
    sign = pnp.ones(s[:-2], dtype_of(x))
    prod = pnp.ones(s[:-2], dtype_of(x))
    rows = np.arange(n)
    for k in range(n):
        col = pnp.abs(a[..., :, k])
        col = pnp.where(rows >= k, col, scalar_like(-1, x))
        p = pnp.argmax(col, axis=-1)                              # (...,)
        is_p = pnp.equal(rows, pnp.expand_dims(p, -1))           # (..., n)
        is_k = np.asarray(rows == k)
        row_p = pnp.sum(pnp.where(pnp.expand_dims(is_p, -1), a, scalar_like(0, x)), axis=-2)
        row_k = a[..., k, :]
        # swap rows k and p
        a = pnp.where(pnp.expand_dims(is_p, -1), pnp.expand_dims(row_k, -2), a)
        a = pnp.where(is_k[:, None], pnp.expand_dims(row_p, -2), a)
        sign = pnp.where(pnp.equal(p, k), sign, pnp.negative(sign))
        piv = row_p[..., k]
        prod = pnp.multiply(prod, piv)
        safe = pnp.where(pnp.equal(piv, scalar_like(0, x)), one, piv)
        f = pnp.divide(a[..., :, k], pnp.expand_dims(safe, -1))  # (..., n)
        f = pnp.where(rows > k, f, scalar_like(0, x))
        a = pnp.subtract(a, pnp.multiply(pnp.expand_dims(f, -1), pnp.expand_dims(row_p, -2)))
    return pnp.multiply(sign, prod)


@op("RotaryEmbedding")
def rotary_embedding(ctx, x, cos, sin, pos=None):
    x = pnp.asarray(x)
    four = ndim_of(x) == 4
    if four:
        x = pnp.transpose(x, (0, 2, 1, 3))                        # (B, S, H, D)
    else:
        b, s_, hid = shape_of(x)
        nh = ctx.attr("num_heads", 0)
        if not nh:
            raise ctx.fail("3-D input needs the num_heads attribute")
        x = pnp.reshape(x, (b, s_, nh, hid // nh))
    d = shape_of(x)[-1]
    rd = ctx.attr("rotary_embedding_dim", 0) or d
    if pos is not None:
        cos, sin = pnp.take(cos, pos, axis=0), pnp.take(sin, pos, axis=0)
    cos, sin = pnp.expand_dims(cos, 2), pnp.expand_dims(sin, 2)
    rot, rest = x[..., :rd], x[..., rd:]
    if ctx.attr("interleaved", 0):
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    else:
        x1, x2 = rot[..., :rd // 2], rot[..., rd // 2:]
    re = pnp.subtract(pnp.multiply(cos, x1), pnp.multiply(sin, x2))
    im = pnp.add(pnp.multiply(sin, x1), pnp.multiply(cos, x2))
    if ctx.attr("interleaved", 0):
        rot = pnp.reshape(pnp.stack([re, im], axis=-1), shape_of(rot))
    else:
        rot = pnp.concatenate([re, im], axis=-1)
    out = pnp.concatenate([rot, rest], axis=-1) if rd < d else rot
    if four:
        return pnp.transpose(out, (0, 2, 1, 3))
    return pnp.reshape(out, (b, s_, hid))


@op("AffineGrid", static=(1,))
def affine_grid(ctx, theta, size):
    size = ctx.ints(size, "size")
    dims = size[2:]
    align = ctx.attr("align_corners", 0)
    axes = []
    for n in dims:
        if align:
            a = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
        else:
            a = (np.arange(n) * 2.0 + 1.0) / n - 1.0
        axes.append(a)
    mesh = np.meshgrid(*axes, indexing="ij")                     # each dims-shaped
    # homogeneous base grid, coordinates in x, y(, z) order (last spatial dim first)
    base = np.stack([m for m in mesh[::-1]] + [np.ones(tuple(dims))], axis=-1)
    base = base.reshape(-1, len(dims) + 1).astype(dtype_of(theta))
    grid = pnp.matmul(base, pnp.swapaxes(theta, -1, -2))         # (N, P, nd)
    return pnp.reshape(grid, (size[0], *dims, len(dims)))


# ---------------------------------------------------------------- training optimizers
TRAIN = "ai.onnx.preview.training"


def _groups(data, k):
    n = (len(data) - 2) // k
    return data[0], data[1], [[data[2 + j * n + i] for j in range(k)] for i in range(n)]


@op("Adagrad", domain=TRAIN)
def adagrad(ctx, *data):
    r, t, groups = _groups(data, 3)
    decay, eps, norm = (ctx.attr("decay_factor", 0.0), ctx.attr("epsilon", 0.0),
                        ctx.attr("norm_coefficient", 0.0))
    xs, hs = [], []
    for x, g, h in groups:
        rr = pnp.divide(r, pnp.add(scalar_like(1, r), pnp.multiply(cast(t, dtype_of(r)),
                                                                   scalar_like(decay, r))))
        gr = pnp.add(pnp.multiply(scalar_like(norm, x), x), g)
        hn = pnp.add(h, pnp.multiply(gr, gr))
        hs_ = pnp.add(pnp.sqrt(hn), scalar_like(eps, x))
        xs.append(cast(pnp.subtract(x, pnp.divide(pnp.multiply(cast(rr, dtype_of(x)), gr), hs_)),
                       dtype_of(x)))
        hs.append(cast(hn, dtype_of(h)))
    return xs + hs


@op("Momentum", domain=TRAIN)
def momentum(ctx, *data):
    r, t, groups = _groups(data, 3)
    alpha, beta, norm = ctx.attr("alpha"), ctx.attr("beta"), ctx.attr("norm_coefficient")
    nesterov = ctx.attr("mode", "standard") == "nesterov"
    xs, vs = [], []
    for x, g, v in groups:
        rr = cast(r, dtype_of(x))
        gr = pnp.add(pnp.multiply(scalar_like(norm, x), x), g)
        b = pnp.where(pnp.greater(t, 0), scalar_like(beta, x), scalar_like(1, x))
        vn = pnp.add(pnp.multiply(scalar_like(alpha, x), v), pnp.multiply(b, gr))
        step = pnp.add(gr, pnp.multiply(scalar_like(alpha, x), vn)) if nesterov else vn
        xs.append(pnp.subtract(x, pnp.multiply(rr, step)))
        vs.append(vn)
    return xs + vs


@op("Adam", domain=TRAIN)
def adam(ctx, *data):
    r, t, groups = _groups(data, 4)
    alpha, beta = ctx.attr("alpha", 0.9), ctx.attr("beta", 0.999)
    eps, norm = ctx.attr("epsilon", 0.0), ctx.attr("norm_coefficient", 0.0)
    post = ctx.attr("norm_coefficient_post", 0.0)
    xs, vs, hs = [], [], []
    for x, g, v, h in groups:
        dt = dtype_of(x)
        gr = pnp.add(pnp.multiply(scalar_like(norm, x), x), g)
        vn = pnp.add(pnp.multiply(scalar_like(alpha, x), v),
                     pnp.multiply(scalar_like(1 - alpha, x), gr))
        hn = pnp.add(pnp.multiply(scalar_like(beta, x), h),
                     pnp.multiply(scalar_like(1 - beta, x), pnp.multiply(gr, gr)))
        hsq = pnp.add(pnp.sqrt(hn), scalar_like(eps, x))
        tf = cast(t, dt)
        rf = cast(r, dt)
        one = scalar_like(1, x)
        corr = pnp.divide(pnp.sqrt(pnp.subtract(one, pnp.power(scalar_like(beta, x), tf))),
                          pnp.subtract(one, pnp.power(scalar_like(alpha, x), tf)))
        radj = pnp.where(pnp.greater(t, 0), pnp.multiply(rf, corr), rf)
        xn = pnp.subtract(x, pnp.multiply(radj, pnp.divide(vn, hsq)))
        xs.append(pnp.multiply(scalar_like(1 - post, x), xn))
        vs.append(vn)
        hs.append(hn)
    if len(groups) > 1:
        xs, vs, hs = ([cast(a, np.float32) for a in l] for l in (xs, vs, hs))
    return xs + vs + hs


# ---------------------------------------------------------------- ai.onnx.ml (simple ones)
ML = "ai.onnx.ml"


@op("Binarizer", domain=ML)
def binarizer(ctx, x):
    return cast(pnp.greater(x, scalar_like(ctx.attr("threshold", 0.0), x)), dtype_of(x))


@op("ArrayFeatureExtractor", domain=ML, static=(1,))
def array_feature_extractor(ctx, data, idx):
    idx = ctx.const(idx, "indices").astype(np.int64).reshape(-1)
    out = pnp.take(data, idx, axis=-1)
    if ndim_of(data) == 1:
        out = pnp.reshape(out, (1, len(idx)))
    return out


# ---------------------------------------------------------------- GridSample
def _reflect(x, lo, hi):
    """Reflect x into [lo, hi] by its nearer border, as many times as needed."""
    rng = hi - lo
    below = pnp.less(x, scalar_like(lo, x))
    dx = pnp.where(below, pnp.subtract(scalar_like(lo, x), x), pnp.subtract(x, scalar_like(hi, x)))
    n = pnp.floor(pnp.divide(dx, scalar_like(rng, x)))
    r = pnp.subtract(dx, pnp.multiply(n, scalar_like(rng, x)))
    even = pnp.equal(pnp.subtract(n, pnp.multiply(scalar_like(2, x), pnp.floor(
        pnp.multiply(n, scalar_like(0.5, x))))), scalar_like(0, x))
    lo_r, hi_r = pnp.add(scalar_like(lo, x), r), pnp.subtract(scalar_like(hi, x), r)
    inside = pnp.logical_and(pnp.greater_equal(x, scalar_like(lo, x)),
                             pnp.less_equal(x, scalar_like(hi, x)))
    out = pnp.where(below, pnp.where(even, lo_r, hi_r), pnp.where(even, hi_r, lo_r))
    return pnp.where(inside, x, out)


def _cubic_coeffs(t, a=-0.75):
    one = scalar_like(1, t)
    def far(u):    # |u| in [1, 2]
        return pnp.subtract(pnp.multiply(pnp.add(pnp.multiply(pnp.subtract(pnp.multiply(
            scalar_like(a, t), u), scalar_like(5 * a, t)), u), scalar_like(8 * a, t)), u),
            scalar_like(4 * a, t))
    def near(u):   # |u| in [0, 1]
        return pnp.add(pnp.multiply(pnp.multiply(pnp.subtract(pnp.multiply(
            scalar_like(a + 2, t), u), scalar_like(a + 3, t)), u), u), one)
    return [far(pnp.add(t, one)), near(t), near(pnp.subtract(one, t)),
            far(pnp.subtract(scalar_like(2, t), t))]


@op("GridSample")
def grid_sample(ctx, x, grid):
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(ctx.attr("mode", "linear"),
                                                            ctx.attr("mode", "linear"))
    if ctx.version < 20 and ctx.attr("mode") is None:
        mode = "linear"
    pad = ctx.attr("padding_mode", "zeros")
    align = bool(ctx.attr("align_corners", 0))
    x = pnp.asarray(x)
    xs = shape_of(x)
    n, c, dims = xs[0], xs[1], xs[2:]
    nd = len(dims)
    grid = cast(grid, dtype_of(x))
    out_sp = shape_of(grid)[1:-1]
    q = int(np.prod(out_sp, dtype=np.int64))
    g = pnp.reshape(grid, (n, q, nd))
    per_dim = []
    for i, d in enumerate(dims):
        v = g[:, :, nd - 1 - i]
        if align:
            v = pnp.multiply(pnp.add(v, scalar_like(1, v)), scalar_like((d - 1) / 2.0, v))
        else:
            v = pnp.divide(pnp.subtract(pnp.multiply(pnp.add(v, scalar_like(1, v)),
                                                     scalar_like(d, v)), scalar_like(1, v)),
                           scalar_like(2, v))
        if mode == "nearest":
            v = pnp.rint(v)
        lo, hi = (0.0, d - 1.0) if align else (-0.5, d - 0.5)
        if pad == "border":
            v = pnp.clip(v, scalar_like(0, v), scalar_like(d - 1, v))
        elif pad == "reflection":
            v = _reflect(v, lo, hi)
        if mode == "nearest":
            taps = [(v, None)]
        else:
            f = pnp.floor(v)
            t = pnp.subtract(v, f)
            if mode == "linear":
                taps = [(f, pnp.subtract(scalar_like(1, t), t)), (pnp.add(f, scalar_like(1, f)), t)]
            elif mode == "cubic":
                taps = [(pnp.add(f, scalar_like(k, f)), w)
                        for k, w in zip((-1, 0, 1, 2), _cubic_coeffs(t))]
            else:
                raise ctx.fail(f"unknown mode {mode!r}")
        fixed = []
        for idx, w in taps:
            valid = None
            if pad == "zeros":
                valid = pnp.logical_and(pnp.greater_equal(idx, scalar_like(0, idx)),
                                        pnp.less_equal(idx, scalar_like(d - 1, idx)))
            elif pad == "reflection":
                idx = pnp.trunc(_reflect(idx, lo, hi))
            idx = cast(pnp.clip(idx, scalar_like(0, idx), scalar_like(d - 1, idx)), np.int32)
            fixed.append((idx, w, valid))
        per_dim.append(fixed)
    strides = [int(np.prod(dims[i + 1:], dtype=np.int64)) for i in range(nd)]
    flat = pnp.reshape(x, (n, c, -1))
    out = None
    for combo in itertools.product(*per_dim):
        idx, w, valid = None, None, None
        for (ii, ww, vv), st in zip(combo, strides):
            term = pnp.multiply(ii, np.int32(st))
            idx = term if idx is None else pnp.add(idx, term)
            if ww is not None:
                w = ww if w is None else pnp.multiply(w, ww)
            if vv is not None:
                valid = vv if valid is None else pnp.logical_and(valid, vv)
        vals = pnp.take_along_axis(flat, pnp.broadcast_to(pnp.expand_dims(idx, 1), (n, c, q)),
                                   axis=2)
        if w is not None:
            vals = pnp.multiply(vals, pnp.expand_dims(w, 1))
        if valid is not None:
            vals = pnp.where(pnp.expand_dims(valid, 1), vals, scalar_like(0, vals))
        out = vals if out is None else pnp.add(out, vals)
    return pnp.reshape(out, (n, c, *out_sp))


# ---------------------------------------------------------------- DFT / STFT / mel
def _split_complex(x):
    """(real, imag or None) of an ONNX signal whose last dim is 1 (real) or 2 (complex)."""
    if shape_of(x)[-1] == 1:
        return x[..., 0], None
    return x[..., 0], x[..., 1]


def _fit(v, axis, n):
    """v cut or zero-padded to length n along axis."""
    m = shape_of(v)[axis]
    if m > n:
        return lax.slice_in_dim(v, 0, n, 1, axis)
    if m < n:
        cfg = [(0, 0, 0)] * ndim_of(v)
        cfg[axis] = (0, n - m, 0)
        return lax.pad(v, scalar_like(0, v), cfg)
    return v


def _apply(v, mat, axis):
    """v's `axis` contracted with mat (in, out): the result's axis has length out."""
    v = pnp.moveaxis(v, axis, -1)
    return pnp.moveaxis(pnp.matmul(v, mat.astype(dtype_of(v))), -1, axis)


def dft(x, length, axis, inverse=False, onesided=False):
    """The ONNX DFT of x (last dim 1 or 2) along `axis` (of the signal, without the last
    dim) as real matmuls with cos/sin tables: traceable and differentiable."""
    re, im = _split_complex(pnp.asarray(x))
    L = length
    if inverse and onesided:             # irfft: Hermitian-extended, real output
        nb = L // 2 + 1
        re = _fit(re, axis, nb)
        im = _fit(im, axis, nb) if im is not None else None
        k = np.arange(nb)[:, None]
        t = 2 * np.pi * k * np.arange(L)[None, :] / L
        w = np.where((k == 0) | ((L % 2 == 0) & (k == L // 2)), 1.0, 2.0) / L
        out = _apply(re, w * np.cos(t), axis)
        if im is not None:
            out = pnp.subtract(out, _apply(im, w * np.sin(t), axis))
        return pnp.expand_dims(out, -1)
    re = _fit(re, axis, L)
    im = _fit(im, axis, L) if im is not None else None
    nout = L // 2 + 1 if onesided else L
    t = 2 * np.pi * np.arange(L)[:, None] * np.arange(nout)[None, :] / L
    c, s = np.cos(t), np.sin(t)
    if inverse:
        c, s = c / L, -s / L             # e^{+i t} / L
    # (re + i im)(c - i s) = (re c + im s) + i (im c - re s)
    out_re = _apply(re, c, axis)
    out_im = pnp.negative(_apply(re, s, axis))
    if im is not None:
        out_re = pnp.add(out_re, _apply(im, s, axis))
        out_im = pnp.add(out_im, _apply(im, c, axis))
    return pnp.stack([out_re, out_im], axis=-1)


@op("DFT", static=(1, 2))
def dft_op(ctx, x, length=None, axis_in=None):
    r = ndim_of(x)
    if ctx.version >= 20:
        axis = ctx.ints(axis_in, "axis")[0] if axis_in is not None else -2
    else:
        axis = ctx.attr("axis", 1)
    axis = axis % r
    if axis == r - 1:
        raise ctx.fail("the DFT axis cannot be the last (real/imaginary) dimension")
    inverse, onesided = bool(ctx.attr("inverse", 0)), bool(ctx.attr("onesided", 0))
    if length is not None:
        L = ctx.ints(length, "dft_length")[0]
    else:
        L = 2 * (shape_of(x)[axis] - 1) if inverse and onesided else shape_of(x)[axis]
    return dft(x, L, axis, inverse, onesided)


@op("STFT", static=(1, 3))
def stft(ctx, x, step, window=None, frame_length=None):
    x = pnp.asarray(x)
    step = ctx.ints(step, "frame_step")[0]
    n = shape_of(x)[-2]
    if frame_length is not None:
        fl = ctx.ints(frame_length, "frame_length")[0]
    else:
        fl = shape_of(window)[0] if window is not None else n
    frames = 1 + (n - fl) // step
    parts = [lax.slice_in_dim(x, f * step, f * step + fl, 1, 1) for f in range(frames)]
    fr = pnp.stack(parts, axis=1)                          # (B, frames, fl, c)
    if window is not None:
        fr = pnp.multiply(fr, pnp.reshape(cast(window, dtype_of(x)), (1, 1, fl, 1)))
    return dft(fr, fl, 2, onesided=bool(ctx.attr("onesided", 1)))


@op("MelWeightMatrix", static="all")
def mel_weight_matrix(ctx, num_mel_bins, dft_length, sample_rate, lower, upper):
    nm, L, sr = (int(ctx.const(v).reshape(-1)[0]) for v in (num_mel_bins, dft_length, sample_rate))
    lo, hi = (float(ctx.const(v).reshape(-1)[0]) for v in (lower, upper))
    nbins = L // 2 + 1
    lo_m, hi_m = 2595 * np.log1p(lo / 700) / np.log(10), 2595 * np.log1p(hi / 700) / np.log(10)
    fb = np.arange(nm + 2) * ((hi_m - lo_m) / (nm + 2)) + lo_m
    fb = (((L + 1) * (700 * np.expm1(fb / 2595 * np.log(10)))) // sr).astype(int)
    out = np.zeros((nbins, nm))
    for i in range(nm):
        a, b, c = fb[i], fb[i + 1], fb[i + 2]
        if b == a:
            out[b, i] = 1
        else:
            out[a:b + 1, i] = (np.arange(a, b + 1) - a) / (b - a)
        if c > b:
            out[b:c, i] = (c - np.arange(b, c)) / (c - b)
    return out.astype(onnx_dtype(ctx, ctx.attr("output_datatype", 1)))


# ---------------------------------------------------------------- recurrent-state ops
def _silu(x):
    return pnp.multiply(x, pnp.reciprocal(pnp.add(scalar_like(1, x), pnp.exp(pnp.negative(x)))))


@op("CausalConvWithState")
def causal_conv_with_state(ctx, x, w, bias=None, past=None):
    """Depthwise causal 1-D convolution over (B, C, T) continuing from `past` (the last k-1
    inputs of the previous call); returns (output, new state)."""
    act = ctx.attr("activation", "none")
    if act not in ("none", "silu", "swish"):
        raise ctx.fail(f"unsupported activation {act!r}")
    x = pnp.asarray(x)
    b, c, t = shape_of(x)
    k = shape_of(w)[2]
    if past is None:
        past = pnp.zeros((b, c, k - 1), dtype_of(x))
    padded = pnp.concatenate([cast(past, dtype_of(x)), x], axis=2)
    acc = np.float32 if dtype_of(x) in (dtypes.float16, dtypes.bfloat16) else dtype_of(x)
    pf, wf = cast(padded, acc), cast(w, acc)
    out = None
    for j in range(k):   # accumulate low-precision inputs in float32, as conv kernels do
        term = pnp.multiply(pf[:, :, j:j + t], pnp.reshape(wf[:, 0, j], (1, c, 1)))
        out = term if out is None else pnp.add(out, term)
    if bias is not None:
        out = pnp.add(out, pnp.reshape(cast(bias, acc), (1, c, 1)))
    out = cast(out, dtype_of(x))
    if act != "none":
        out = cast(_silu(cast(out, np.float32)), dtype_of(x))
    state = padded[:, :, t:]          # the last k-1 inputs
    return [out, state]


def _heads4(x, h):
    b, t, hd = shape_of(x)
    return pnp.transpose(pnp.reshape(x, (b, t, h, hd // h)), (0, 2, 1, 3))


@op("LinearAttention")
def linear_attention(ctx, q, k, v, past=None, decay=None, beta=None):
    """Linear attention with a (B, H, d_k, d_v) state, run as a scan over time; update
    rules linear / gated (decay) / delta (beta) / gated_delta."""
    rule = ctx.attr("update_rule", "gated_delta")
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise ctx.fail(f"unsupported update_rule {rule!r}")
    hq, hk = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
    if not hq or not hk or hq % hk:
        raise ctx.fail("q_num_heads must be a positive multiple of kv_num_heads")
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if gating and decay is None or delta and beta is None:
        raise ctx.fail(f"update_rule {rule!r} needs its decay/beta input")
    out_dt = dtype_of(q)
    f32 = np.float32
    b, t, _ = shape_of(q)
    dk = shape_of(q)[-1] // hq
    dv = shape_of(v)[-1] // hk
    grp = hq // hk
    q4, k4, v4 = (cast(_heads4(a, h), f32) for a, h in ((q, hq), (k, hk), (v, hk)))
    xs = [pnp.moveaxis(q4, 2, 0), pnp.moveaxis(k4, 2, 0), pnp.moveaxis(v4, 2, 0)]
    if gating:
        dl = shape_of(decay)[-1]
        if dl == hk:
            d4 = pnp.transpose(pnp.reshape(decay, (b, t, hk, 1)), (0, 2, 1, 3))
        elif dl == hk * dk:
            d4 = _heads4(decay, hk)
        else:
            raise ctx.fail(f"decay's last dim {dl} must be kv_num_heads or kv_num_heads*d_k")
        xs.append(pnp.moveaxis(cast(d4, f32), 2, 0))
    if delta:
        bl = shape_of(beta)[-1]
        b4 = pnp.transpose(pnp.reshape(beta, (b, t, bl, 1)), (0, 2, 1, 3))
        xs.append(pnp.moveaxis(cast(b4, f32), 2, 0))
    state_dt = dtype_of(past) if past is not None else out_dt
    state = cast(past, f32) if past is not None else pnp.zeros((b, hk, dk, dv), f32)
    sc = ctx.attr("scale", 0.0)
    sc = np.float32(sc if sc else 1.0 / math.sqrt(dk))

    def step(s, x):
        qt, kt, vt = x[0], x[1], x[2]
        i = 3
        if gating:
            s = pnp.multiply(s, pnp.expand_dims(pnp.exp(x[i]), -1))
            i += 1
        if delta:
            got = pnp.einsum("bhdm,bhd->bhm", s, kt)
            vt = pnp.multiply(x[i], pnp.subtract(vt, got))
        s = pnp.add(s, pnp.multiply(pnp.expand_dims(kt, -1), pnp.expand_dims(vt, -2)))
        sr = pnp.repeat(s, grp, axis=1) if grp > 1 else s
        return s, pnp.multiply(sc, pnp.einsum("bhd,bhdm->bhm", qt, sr))
    state, ys = lax.scan(step, state, xs)                   # ys: (T, B, Hq, dv)
    out = pnp.reshape(pnp.transpose(ys, (1, 0, 2, 3)), (b, t, hq * dv))
    return [cast(out, out_dt), cast(state, state_dt)]


# ---------------------------------------------------------------- FlexAttention
_SOFTMAX_DT = {1: np.float32, 10: np.float16, 16: dtypes.bfloat16, 11: np.float64}


@op("FlexAttention", domain="ai.onnx.preview")
def flex_attention(ctx, q, k, v):
    """Attention whose scores / probabilities pass through the score_mod / prob_mod
    subgraphs (run as ordinary polyjit code)."""
    for name, a in (("Q", q), ("K", k), ("V", v)):
        if ndim_of(a) != 4:
            raise ctx.fail(f"{name} must be rank 4, got shape {shape_of(a)}")
    hq, e = shape_of(q)[1], shape_of(q)[3]
    hk = shape_of(k)[1]
    if hq != hk:
        if hq % hk:
            raise ctx.fail("q heads must be a multiple of kv heads")
        k, v = pnp.repeat(k, hq // hk, axis=1), pnp.repeat(v, hq // hk, axis=1)
    scale = ctx.attr("scale")
    scale = 1.0 / math.sqrt(e) if scale is None else scale
    qd = dtype_of(q)
    sp = ctx.attr("softmax_precision")
    if sp is not None:
        cdt = np.dtype(_SOFTMAX_DT[int(sp)])
    else:
        low = qd in (dtypes.float16, dtypes.bfloat16) or qd.itemsize < 4
        cdt = np.dtype(np.float32) if low else qd
    ss = np.asarray(np.sqrt(np.float32(scale)), qd)
    scores = pnp.matmul(pnp.multiply(q, ss), pnp.swapaxes(pnp.multiply(k, ss), -1, -2))
    scores = cast(scores, cdt)
    if ctx.attr("score_mod") is not None:
        scores = cast(pnp.asarray(ctx.run_subgraph(ctx.attr("score_mod"), [scores])[0]), cdt)
    m = pnp.max(scores, axis=-1, keepdims=True)
    ex = pnp.exp(pnp.subtract(scores, m))
    probs = pnp.divide(ex, pnp.sum(ex, axis=-1, keepdims=True))
    if ctx.attr("prob_mod") is not None:
        probs = cast(pnp.asarray(ctx.run_subgraph(ctx.attr("prob_mod"), [probs])[0]), cdt)
    return cast(pnp.matmul(probs, cast(v, cdt)), dtype_of(v))


# ---------------------------------------------------------------- scatter-style ops
@op("Col2Im", static=(1, 2))
def col2im(ctx, x, image_shape, block_shape):
    """Sums sliding blocks (N, C*prod(block), L) back into images (N, C, *image_shape):
    a scatter-add with indices computed at trace time (invalid ones go to a dump slot)."""
    img = ctx.ints(image_shape, "image_shape")
    blk = ctx.ints(block_shape, "block_shape")
    nd = len(img)
    dil = ctx.attr("dilations") or [1] * nd
    st = ctx.attr("strides") or [1] * nd
    pads = ctx.attr("pads") or [0] * (2 * nd)
    n, cb, L = shape_of(x)
    B = int(np.prod(blk))
    c = cb // B
    grid = [(img[d] + pads[d] + pads[d + nd] - (dil[d] * (blk[d] - 1) + 1)) // st[d] + 1
            for d in range(nd)]
    if int(np.prod(grid)) != L:
        raise ctx.fail(f"input has {L} blocks, but the image/block/stride/pad settings make "
                       f"{int(np.prod(grid))}")
    bidx = np.stack(np.meshgrid(*[np.arange(b) for b in blk], indexing="ij"), -1).reshape(B, 1, nd)
    lidx = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).reshape(1, L, nd)
    pos = lidx * np.asarray(st) - np.asarray(pads[:nd]) + bidx * np.asarray(dil)   # (B, L, nd)
    ok = np.all((pos >= 0) & (pos < np.asarray(img)), axis=-1)
    P = int(np.prod(img))
    flat = np.ravel_multi_index(tuple(np.where(ok[..., None], pos, 0).transpose(2, 0, 1)), img)
    flat = np.where(ok, flat, P).reshape(-1)                                      # (B*L,)
    vals = pnp.reshape(x, (n, c, B * L))
    out = pnp.zeros((n, c, P + 1), dtype_of(x)).at[:, :, flat].add(vals)
    return pnp.reshape(out[:, :, :P], (n, c, *img))


@op("MaxUnpool", static=(2,))
def max_unpool(ctx, x, idx, output_shape=None):
    xs = shape_of(x)
    ks = ctx.attr("kernel_shape")
    nd = len(ks)
    st = ctx.attr("strides") or [1] * nd
    pads = ctx.attr("pads") or [0] * (2 * nd)
    inferred = list(xs[:2]) + [(xs[d + 2] - 1) * st[d] - (pads[d] + pads[d + nd]) + ks[d]
                               for d in range(nd)]
    total = int(np.prod(inferred))
    y = pnp.zeros((total,), dtype_of(x)).at[pnp.reshape(cast(idx, np.int64), (-1,))].set(
        pnp.reshape(x, (-1,)))
    y = pnp.reshape(y, tuple(inferred))
    if output_shape is not None:
        shp = ctx.ints(output_shape, "output_shape")
        y = pnp.pad(y, [(0, s - i) for s, i in zip(shp, inferred)])
    return y


@op("TensorScatter")
def tensor_scatter(ctx, cache, update, write_idx=None):
    """Writes update into cache along `axis` from per-batch offsets (KV-cache update);
    a gather over the cache positions, so the offsets may be data."""
    mode = ctx.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise ctx.fail(f"unsupported mode {mode!r}")
    cs, us = shape_of(cache), shape_of(update)
    a = norm_axis(ctx.attr("axis", -2), len(cs))
    m, s = cs[a], us[a]
    b = cs[0]
    w = pnp.zeros((b,), np.int64) if write_idx is None else cast(write_idx, np.int64)
    p = np.arange(m, dtype=np.int64)
    j = pnp.subtract(p[None, :], pnp.reshape(w, (b, 1)))                     # (B, M)
    if mode == "circular":
        j = pnp.mod(j, np.int64(m))
    valid = pnp.logical_and(pnp.greater_equal(j, np.int64(0)), pnp.less(j, np.int64(s)))
    j = pnp.clip(j, np.int64(0), np.int64(max(s - 1, 0)))
    shp = [1] * len(cs)
    shp[0], shp[a] = b, m
    j, valid = pnp.reshape(j, tuple(shp)), pnp.reshape(valid, tuple(shp))
    gshape = list(us)
    gshape[a] = m
    got = pnp.take_along_axis(update, pnp.broadcast_to(j, tuple(gshape)), axis=a)
    return pnp.where(valid, got, cache)


# ---------------------------------------------------------------- NonMaxSuppression
def _iou_suppress(b1, b2, center, thr):
    if center == 0:
        x1a, x1b = sorted((b1[1], b1[3]))
        x2a, x2b = sorted((b2[1], b2[3]))
        y1a, y1b = sorted((b1[0], b1[2]))
        y2a, y2b = sorted((b2[0], b2[2]))
    else:
        x1a, x1b = b1[0] - b1[2] / 2, b1[0] + b1[2] / 2
        x2a, x2b = b2[0] - b2[2] / 2, b2[0] + b2[2] / 2
        y1a, y1b = b1[1] - b1[3] / 2, b1[1] + b1[3] / 2
        y2a, y2b = b2[1] - b2[3] / 2, b2[1] + b2[3] / 2
    ix = min(x1b, x2b) - max(x1a, x2a)
    iy = min(y1b, y2b) - max(y1a, y2a)
    if ix <= 0 or iy <= 0:
        return False
    inter = ix * iy
    a1, a2 = (x1b - x1a) * (y1b - y1a), (x2b - x2a) * (y2b - y2a)
    union = a1 + a2 - inter
    if a1 <= 0 or a2 <= 0 or union <= 0:
        return False
    return inter / union > thr


@op("NonMaxSuppression", static="all")
def non_max_suppression(ctx, boxes, scores, max_out=None, iou=None, score_thr=None):
    """Greedy per-class NMS. Its output's length depends on the data, so (like NonZero) it
    runs on the host at trace time: every input must be known then (the ONNX backend
    bakes such graph inputs in per call); the result is a constant of the trace."""
    what = "this input (NonMaxSuppression's output size depends on it)"
    boxes, scores = ctx.const(boxes, what), ctx.const(scores, what)
    mo = ctx.const(max_out, what)
    if mo is None or mo.size == 0:
        return np.zeros((0, 3), np.int64)
    mo = max(int(mo.reshape(-1)[0]), 0)
    thr = 0.0 if iou is None or np.size(iou) == 0 else ctx.const(iou, what).reshape(-1)[0]
    st = None if score_thr is None or np.size(score_thr) == 0 else \
        ctx.const(score_thr, what).reshape(-1)[0]
    center = ctx.attr("center_point_box", 0)
    out = []
    for b in range(boxes.shape[0]):
        for c in range(scores.shape[1]):
            sc = scores[b, c]
            cand = [i for i in range(boxes.shape[1]) if st is None or sc[i] > st]
            cand.sort(key=lambda i: (-sc[i], i))      # best score first, then lower index
            kept = []
            for i in cand:
                if len(kept) >= mo:
                    break
                if not any(_iou_suppress(boxes[b, i], boxes[b, j], center, thr) for j in kept):
                    kept.append(i)
                    out.append((b, c, i))
    return np.asarray(out, np.int64).reshape(-1, 3)


# ---------------------------------------------------------------- RoiAlign
@op("RoiAlign")
def roi_align(ctx, x, rois, batch_idx):
    """RoiAlign with bilinear samples gathered from data-dependent positions. With
    sampling_ratio 0 (adaptive) the rois must be known at trace time (the sample grid's
    size depends on them)."""
    x = pnp.asarray(x)
    n, c, h, w = shape_of(x)
    oh, ow = ctx.attr("output_height", 1), ctx.attr("output_width", 1)
    sr = ctx.attr("sampling_ratio", 0)
    scale = ctx.attr("spatial_scale", 1.0)
    mode = ctx.attr("mode", "avg").lower()
    half = ctx.attr("coordinate_transformation_mode", "half_pixel").lower() == "half_pixel"
    if ctx.version < 16:
        half = False
    r = shape_of(rois)[0]
    f = dtype_of(x)
    rois = cast(rois, f)
    off = scalar_like(0.5 if half else 0.0, rois)
    sc = scalar_like(scale, rois)
    sw, sh, ew, eh = (pnp.subtract(pnp.multiply(rois[:, i], sc), off) for i in range(4))
    rw, rh = pnp.subtract(ew, sw), pnp.subtract(eh, sh)
    if not half:
        rw, rh = pnp.maximum(rw, scalar_like(1, rw)), pnp.maximum(rh, scalar_like(1, rh))
    bh, bw = pnp.divide(rh, scalar_like(oh, rh)), pnp.divide(rw, scalar_like(ow, rw))
    if sr > 0:
        gh = gw = np.full((r,), sr)
    else:
        rk = ctx.const(rh, "the rois (with sampling_ratio 0 the sample grid depends on them)")
        gh = np.ceil(rk / oh).astype(int)
        gw = np.ceil(ctx.const(rw, "the rois") / ow).astype(int)
    Gh, Gw = max(int(gh.max()), 1), max(int(gw.max()), 1)
    ghf = gh.astype(np.float64).reshape(r, 1, 1, 1, 1)
    gwf = gw.astype(np.float64).reshape(r, 1, 1, 1, 1)
    ph = np.arange(oh).reshape(1, oh, 1, 1, 1)
    pw = np.arange(ow).reshape(1, 1, ow, 1, 1)
    iy = np.arange(Gh).reshape(1, 1, 1, Gh, 1)
    ix = np.arange(Gw).reshape(1, 1, 1, 1, Gw)
    valid = (iy < gh.reshape(r, 1, 1, 1, 1)) & (ix < gw.reshape(r, 1, 1, 1, 1))
    e = lambda v: pnp.reshape(v, (r, 1, 1, 1, 1))
    fy = ((iy + 0.5) / np.maximum(ghf, 1)).astype(f)
    fx = ((ix + 0.5) / np.maximum(gwf, 1)).astype(f)
    y = pnp.add(pnp.add(e(sh), pnp.multiply(ph.astype(f), e(bh))), pnp.multiply(fy, e(bh)))
    xx = pnp.add(pnp.add(e(sw), pnp.multiply(pw.astype(f), e(bw))), pnp.multiply(fx, e(bw)))
    shape5 = (r, oh, ow, Gh, Gw)
    y, xx = pnp.broadcast_to(y, shape5), pnp.broadcast_to(xx, shape5)
    def outside(v, size):
        return pnp.logical_or(pnp.less(v, scalar_like(-1, v)), pnp.greater(v, scalar_like(size, v)))
    out_of = pnp.logical_or(outside(y, h), outside(xx, w))
    keep = pnp.logical_and(pnp.logical_not(out_of), valid)

    def axis_taps(v, size):
        v = pnp.maximum(v, scalar_like(0, v))
        lo = pnp.floor(v)
        top = pnp.greater_equal(lo, scalar_like(size - 1, v))
        lo = pnp.where(top, scalar_like(size - 1, v), lo)
        v = pnp.where(top, lo, v)
        hi = pnp.where(top, lo, pnp.add(lo, scalar_like(1, v)))
        l = pnp.subtract(v, lo)
        return cast(lo, np.int32), cast(hi, np.int32), pnp.subtract(scalar_like(1, l), l), l
    ylo, yhi, hy, ly = axis_taps(y, h)
    xlo, xhi, hx, lx = axis_taps(xx, w)
    zero = scalar_like(0, y)
    taps = [(ylo, xlo, pnp.multiply(hy, hx)), (ylo, xhi, pnp.multiply(hy, lx)),
            (yhi, xlo, pnp.multiply(ly, hx)), (yhi, xhi, pnp.multiply(ly, lx))]
    xb = pnp.take(pnp.reshape(x, (n, c, h * w)), cast(batch_idx, np.int64), axis=0)  # (R, C, HW)
    S = oh * ow * Gh * Gw
    vals = []
    for yi, xi, wt in taps:
        pos = pnp.reshape(pnp.add(pnp.multiply(yi, np.int32(w)), xi), (r, 1, S))
        g = pnp.take_along_axis(xb, pnp.broadcast_to(pos, (r, c, S)), axis=2)
        wt = pnp.reshape(pnp.where(keep, wt, zero), (r, 1, S))
        vals.append(pnp.multiply(wt, g))
    vals = [pnp.reshape(v, (r, c, oh, ow, Gh * Gw)) for v in vals]
    if mode == "avg":
        s = pnp.add(pnp.add(vals[0], vals[1]), pnp.add(vals[2], vals[3]))
        cnt = np.maximum(gh * gw, 1).astype(f).reshape(r, 1, 1, 1)
        return pnp.divide(pnp.sum(s, axis=-1), cnt)
    m = pnp.maximum(pnp.maximum(vals[0], vals[1]), pnp.maximum(vals[2], vals[3]))
    vmask = np.broadcast_to(valid, shape5).reshape(r, 1, oh, ow, Gh * Gw)
    m = pnp.where(vmask, m, scalar_like(-np.inf, m))
    return pnp.max(m, axis=-1)


# ---------------------------------------------------------------- DeformConv
def _within(v, hi):
    """0 <= v <= hi."""
    return pnp.logical_and(pnp.greater_equal(v, scalar_like(0, v)),
                           pnp.less_equal(v, scalar_like(hi, v)))


@op("DeformConv")
def deform_conv(ctx, x, w, offset, bias=None, mask=None):
    """2-D deformable convolution: bilinear samples (zero outside the image) at the kernel
    taps moved by `offset`, scaled by `mask`, then a grouped contraction with the weights."""
    x = pnp.asarray(x)
    if ndim_of(x) != 4:
        raise ctx.fail("only 2-D DeformConv (4-D input) is supported")
    n, ic, ih, iw = shape_of(x)
    oc, icg, kh, kw = shape_of(w)
    g = ctx.attr("group", 1)
    og = ctx.attr("offset_group", 1)
    dh, dw = ctx.attr("dilations") or [1, 1]
    sth, stw = ctx.attr("strides") or [1, 1]
    pads = ctx.attr("pads") or [0, 0, 0, 0]
    oh, ow = shape_of(offset)[2:]
    f = dtype_of(x)
    off = pnp.reshape(cast(offset, f), (n, og, kh, kw, 2, oh, ow))
    base_y = (np.arange(kh) * dh).reshape(1, 1, kh, 1, 1, 1) + \
        (np.arange(oh) * sth - pads[0]).reshape(1, 1, 1, 1, oh, 1)
    base_x = (np.arange(kw) * dw).reshape(1, 1, 1, kw, 1, 1) + \
        (np.arange(ow) * stw - pads[1]).reshape(1, 1, 1, 1, 1, ow)
    y = pnp.add(off[:, :, :, :, 0], base_y.astype(f))           # (N, OG, kh, kw, oh, ow)
    xx = pnp.add(off[:, :, :, :, 1], base_x.astype(f))
    y0, x0 = pnp.floor(y), pnp.floor(xx)
    ly, lx = pnp.subtract(y, y0), pnp.subtract(xx, x0)
    one = scalar_like(1, y)
    S = kh * kw * oh * ow
    cg = ic // og
    xg = pnp.reshape(x, (n, og, cg, ih * iw))
    m = None if mask is None else pnp.reshape(cast(mask, f), (n, og, 1, kh, kw, oh, ow))
    samp = None
    for yy, wy in ((y0, pnp.subtract(one, ly)), (pnp.add(y0, one), ly)):
        for xc, wx in ((x0, pnp.subtract(one, lx)), (pnp.add(x0, one), lx)):
            ok = pnp.logical_and(_within(yy, ih - 1), _within(xc, iw - 1))
            yi = cast(pnp.clip(yy, scalar_like(0, y), scalar_like(ih - 1, y)), np.int32)
            xi = cast(pnp.clip(xc, scalar_like(0, y), scalar_like(iw - 1, y)), np.int32)
            pos = pnp.reshape(pnp.add(pnp.multiply(yi, np.int32(iw)), xi), (n, og, 1, S))
            v = pnp.take_along_axis(xg, pnp.broadcast_to(pos, (n, og, cg, S)), axis=3)
            wt = pnp.reshape(pnp.where(ok, pnp.multiply(wy, wx), scalar_like(0, y)), (n, og, 1, S))
            term = pnp.multiply(v, wt)
            samp = term if samp is None else pnp.add(samp, term)
    samp = pnp.reshape(samp, (n, og, cg, kh, kw, oh, ow))
    if m is not None:
        samp = pnp.multiply(samp, m)
    cols = pnp.reshape(samp, (n, g, ic // g, kh * kw, oh * ow))
    wg = pnp.reshape(w, (g, oc // g, icg, kh * kw))
    out = pnp.reshape(pnp.einsum("gock,ngckp->ngop", wg, cols), (n, oc, oh, ow))
    if bias is not None:
        out = pnp.add(out, pnp.reshape(bias, (1, oc, 1, 1)))
    return out


# ---------------------------------------------------------------- TfIdfVectorizer
@op("TfIdfVectorizer")
def tfidf_vectorizer(ctx, x):
    """n-gram counts (with skips) of an integer token tensor against a static pool, as
    window comparisons summed over positions; TF / IDF / TFIDF weighting."""
    pool = ctx.attr("pool_int64s")
    if pool is None:
        raise ctx.fail("string pools (pool_strings) are not supported: polyjit has no string "
                       "tensors")
    lo, hi = ctx.attr("min_gram_length"), ctx.attr("max_gram_length")
    skip = ctx.attr("max_skip_count", 0)
    counts_at = list(ctx.attr("ngram_counts"))
    idx_map = list(ctx.attr("ngram_indexes"))
    weights = ctx.attr("weights") or []
    mode = ctx.attr("mode")
    out_size = max(idx_map) + 1
    grams = []                      # (tokens, output index)
    gid = 0
    for i, start in enumerate(counts_at):
        end = counts_at[i + 1] if i + 1 < len(counts_at) else len(pool)
        size = i + 1
        for j in range((end - start) // size):
            toks = pool[start + j * size: start + (j + 1) * size]
            if lo <= size <= hi:
                grams.append((tuple(toks), idx_map[gid]))
            gid += 1
    x = pnp.asarray(x)
    one_d = ndim_of(x) <= 1
    x2 = pnp.reshape(x, (1, -1)) if one_d else x
    b, c = shape_of(x2)
    dt = dtype_of(x2)
    cols = []
    for toks, _ in grams:
        n = len(toks)
        total = None
        for d in range(1, skip + 2):
            if n == 1 and d > 1:
                break                               # unigrams count once
            if n < (lo if d == 1 else max(lo, 2)):
                continue
            L = c - (n - 1) * d
            if L <= 0:
                continue
            eq = None
            for k, t in enumerate(toks):
                e = pnp.equal(x2[:, k * d: k * d + L], np.asarray(t, dt))
                eq = e if eq is None else pnp.logical_and(eq, e)
            cnt = pnp.sum(cast(eq, np.float32), axis=1)
            total = cnt if total is None else pnp.add(total, cnt)
        cols.append(pnp.zeros((b,), np.float32) if total is None else total)
    onehot = np.zeros((len(grams), out_size), np.float32)
    for r, (_, o) in enumerate(grams):
        onehot[r, o] = 1
    freq = (pnp.matmul(pnp.stack(cols, axis=1), onehot) if grams
            else pnp.zeros((b, out_size), np.float32))
    w = np.asarray(weights, np.float32)
    if mode == "TF":
        y = freq
    elif mode == "IDF":
        pos = pnp.greater(freq, np.float32(0))
        y = pnp.where(pos, w if len(w) else np.float32(1), np.float32(0))
    elif mode == "TFIDF":
        y = pnp.multiply(freq, w) if len(w) else freq
    else:
        raise ctx.fail(f"unknown mode {mode!r}")
    return pnp.reshape(y, (out_size,)) if one_d else y


@op("TreeEnsemble", domain=ML)
def tree_ensemble(ctx, x):
    """Tree ensembles unrolled at trace time: every split is evaluated for all rows, each
    leaf's reach is the AND of the splits on its (static) path, and leaf weights are
    aggregated per target."""
    a = ctx.attr
    if a("post_transform", 0):
        raise ctx.fail("post_transform other than NONE is not supported")
    splits = np.asarray(a("nodes_splits")).reshape(-1)
    feats, modes = a("nodes_featureids"), a("nodes_modes")
    modes = list(np.asarray(modes).reshape(-1)) if not isinstance(modes, list) else modes
    tn, fn_ = a("nodes_truenodeids"), a("nodes_falsenodeids")
    tl, fl = a("nodes_trueleafs"), a("nodes_falseleafs")
    leaf_t = a("leaf_targetids")
    leaf_w = np.asarray(a("leaf_weights")).reshape(-1)
    roots = a("tree_roots")
    agg = a("aggregate_function", 1)
    miss = a("nodes_missing_value_tracks_true")
    members = a("membership_values")
    member_iter = iter(np.asarray(members).reshape(-1)) if members is not None else None
    n_t = a("n_targets")
    x = pnp.asarray(x)
    dt = dtype_of(x)
    conds = {}

    def cond(i, member_set):
        xf = x[:, feats[i]]
        m = int(modes[i])
        v = np.asarray(splits[i], dt)
        if m == 6:
            c = None
            for s in sorted(member_set):
                e = pnp.equal(xf, np.asarray(s, dt))
                c = e if c is None else pnp.logical_or(c, e)
            c = pnp.zeros(shape_of(xf), bool) if c is None else c
        else:
            c = {0: pnp.less_equal, 1: pnp.less, 2: pnp.greater_equal, 3: pnp.greater,
                 4: pnp.equal, 5: pnp.not_equal}[m](xf, v)
        if miss is not None and miss[i]:
            c = pnp.logical_or(c, pnp.isnan(xf))
        return c

    leaves = []          # (leaf index, [(cond, branch)])

    def walk(i, is_leaf, path):
        if is_leaf:
            leaves.append((i, path))
            return
        ms = None
        if int(modes[i]) == 6:
            ms = set()
            while True:
                v = next(member_iter)
                if np.isnan(v):
                    break
                ms.add(float(v))
        conds[i] = cond(i, ms)
        walk(tn[i], tl[i], path + [(i, True)])
        walk(fn_[i], fl[i], path + [(i, False)])

    for r in roots:
        root_leaf = tl[r] and fl[r] and tn[r] == fn_[r]
        walk(tn[r] if root_leaf else r, root_leaf, [])
    b = shape_of(x)[0]
    if agg in (0, 1):
        init = 0.0
    elif agg == 2:
        init = float(np.finfo(dt).max)
    elif agg == 3:
        init = float(np.finfo(dt).min)
    else:
        raise ctx.fail(f"aggregate_function {agg} is not supported")
    cols = [pnp.full((b,), init, dt) for _ in range(n_t)]
    for li, path in leaves:
        reach = None
        for i, br in path:
            c = conds[i] if br else pnp.logical_not(conds[i])
            reach = c if reach is None else pnp.logical_and(reach, c)
        w = float(leaf_w[li]) / (len(roots) if agg == 0 else 1)
        t = leaf_t[li]
        wv = np.asarray(w, dt)
        if reach is None:
            reach = pnp.ones((b,), bool)
        if agg in (0, 1):
            cols[t] = pnp.add(cols[t], pnp.where(reach, wv, np.asarray(0, dt)))
        elif agg == 2:
            cols[t] = pnp.where(reach, pnp.minimum(cols[t], wv), cols[t])
        else:
            cols[t] = pnp.where(reach, pnp.maximum(cols[t], wv), cols[t])
    return pnp.stack(cols, axis=1)


# ---------------------------------------------------------------- ImageDecoder
@op("ImageDecoder", static="all")
def image_decoder(ctx, encoded):
    """Decodes an encoded image (JPEG, PNG, BMP, TIFF, WebP, ...) with Pillow on the host.
    The output's shape depends on the bytes, so (like NonZero) the input must be known at
    trace time and the decoded image is a constant of the trace."""
    try:
        import io
        import PIL.Image
    except ImportError:
        raise ctx.fail("ImageDecoder needs Pillow (pip install pillow)") from None
    data = ctx.const(encoded, "the encoded image (the output's shape depends on it)")
    fmt = ctx.attr("pixel_format", "RGB")
    try:
        img = PIL.Image.open(io.BytesIO(np.asarray(data, np.uint8).tobytes()))
        if fmt == "Grayscale":
            return np.asarray(img.convert("L"))[:, :, None]
        rgb = np.asarray(img.convert("RGB") if img.mode not in ("RGB",) else img)
    except (OSError, ValueError) as e:
        raise ctx.fail(f"cannot decode the image: {e}") from None
    if fmt == "RGB":
        return rgb
    if fmt == "BGR":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    raise ctx.fail(f"unknown pixel_format {fmt!r}")
