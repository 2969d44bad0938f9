"""Neural-network ONNX ops: matmul, convolution, pooling, normalization, resize."""
from __future__ import annotations

import math

import numpy as np

from .... import lax
from .... import numpy as pnp
from . import op
from ._util import cast, dtype_of, ndim_of, norm_axis, scalar_like, shape_of


@op("MatMul")
def matmul(ctx, a, b):
    return pnp.matmul(a, b)


@op("Gemm")
def gemm(ctx, a, b, c=None):
    if ctx.attr("transA", 0):
        a = pnp.transpose(a)
    if ctx.attr("transB", 0):
        b = pnp.transpose(b)
    y = pnp.matmul(a, b)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if alpha != 1.0:
        y = pnp.multiply(scalar_like(alpha, y), y)
    if c is not None:
        y = pnp.add(y, c if beta == 1.0 else pnp.multiply(scalar_like(beta, c), c))
    return y


@op("Einsum")
def einsum(ctx, *xs):
    return pnp.einsum(ctx.attr("equation").replace(" ", ""), *xs)


# ---------------------------------------------------------------- convolution
def conv_pads(ctx, in_sp, k_sp, strides, dilations):
    """(lo, hi) padding per spatial dim from pads / auto_pad."""
    n = len(in_sp)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for d, k, s, dl in zip(in_sp, k_sp, strides, dilations):
            total = max((-(-d // s) - 1) * s + (k - 1) * dl + 1 - d, 0)
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            out.append((lo, total - lo))
        return out
    if auto == "VALID":
        return [(0, 0)] * n
    pads = ctx.attr("pads") or [0] * (2 * n)
    return list(zip(pads[:n], pads[n:]))


def _conv_geometry(ctx, x, w):
    nsp = ndim_of(x) - 2
    k_sp = ctx.attr("kernel_shape") or shape_of(w)[2:]
    strides = ctx.attr("strides") or [1] * nsp
    dil = ctx.attr("dilations") or [1] * nsp
    return k_sp, strides, dil


@op("Conv")
def conv(ctx, x, w, b=None):
    k_sp, strides, dil = _conv_geometry(ctx, x, w)
    pads = conv_pads(ctx, shape_of(x)[2:], k_sp, strides, dil)
    y = lax.conv_general_dilated(pnp.asarray(x), pnp.asarray(w), strides, pads,
                                 rhs_dilation=dil, feature_group_count=ctx.attr("group", 1))
    return y if b is None else add_channel_bias(y, b)


def add_channel_bias(y, b):
    return pnp.add(y, pnp.reshape(b, (-1,) + (1,) * (ndim_of(y) - 2)))


@op("ConvTranspose")
def conv_transpose(ctx, x, w, b=None):
    """The gradient of a convolution: a stride-dilated input convolved with the flipped,
    in/out-swapped kernel."""
    nsp = ndim_of(x) - 2
    k_sp, strides, dil = _conv_geometry(ctx, x, w)
    g = ctx.attr("group", 1)
    in_sp = shape_of(x)[2:]
    out_pad = ctx.attr("output_padding") or [0] * nsp
    eff_k = [(k - 1) * d + 1 for k, d in zip(k_sp, dil)]
    auto = ctx.attr("auto_pad", "NOTSET")
    out_shape = ctx.attr("output_shape")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = list(out_shape)[-nsp:] if out_shape is not None else [d * s for d, s in zip(in_sp, strides)]
        pads = []
        for d, s, k, op_, o in zip(in_sp, strides, eff_k, out_pad, out_shape):
            total = s * (d - 1) + op_ + k - o
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads.append((lo, total - lo))
    elif auto == "VALID":
        pads = [(0, 0)] * nsp
    else:
        p = ctx.attr("pads") or [0] * (2 * nsp)
        pads = list(zip(p[:nsp], p[nsp:]))
    cin, cout_g = shape_of(w)[:2]
    wk = pnp.reshape(w, (g, cin // g, cout_g) + tuple(k_sp))
    wk = pnp.swapaxes(wk, 1, 2)
    wk = pnp.reshape(wk, (g * cout_g, cin // g) + tuple(k_sp))
    wk = lax.rev(wk, tuple(range(2, 2 + nsp)))
    conv_pad = [(k - 1 - lo, k - 1 - hi + op_) for k, (lo, hi), op_ in zip(eff_k, pads, out_pad)]
    y = lax.conv_general_dilated(pnp.asarray(x), wk, [1] * nsp, conv_pad, lhs_dilation=strides,
                                 rhs_dilation=dil, feature_group_count=g)
    return y if b is None else add_channel_bias(y, b)


# ---------------------------------------------------------------- pooling
def _pool_geometry(ctx, x):
    """(kernel, strides, dilations, [(lo, hi)] explicit pads, [extra hi pad for ceil_mode])."""
    in_sp = shape_of(x)[2:]
    nsp = len(in_sp)
    k = ctx.attr("kernel_shape")
    strides = ctx.attr("strides") or [1] * nsp
    dil = ctx.attr("dilations") or [1] * nsp
    pads = conv_pads(ctx, in_sp, k, strides, dil)
    extra = []
    for d, kk, s, dl, (lo, hi) in zip(in_sp, k, strides, dil, pads):
        span = d + lo + hi - ((kk - 1) * dl + 1)
        if ctx.attr("ceil_mode", 0):
            n_out = -(-span // s) + 1
            if (n_out - 1) * s >= d + lo:    # no window may start inside the right padding
                n_out -= 1
        else:
            n_out = span // s + 1
        extra.append(max((n_out - 1) * s + (kk - 1) * dl + 1 - (d + lo + hi), 0))
    return k, strides, dil, pads, extra


def _window(x, fn, k, strides, dil, pads):
    return fn(x, (1, 1) + tuple(k), (1, 1) + tuple(strides),
              [(0, 0), (0, 0)] + [tuple(p) for p in pads], window_dilation=(1, 1) + tuple(dil))


@op("MaxPool")
def max_pool(ctx, x):
    k, strides, dil, pads, extra = _pool_geometry(ctx, x)
    full = [(lo, hi + e) for (lo, hi), e in zip(pads, extra)]
    x = pnp.asarray(x)
    y = _window(x, lax.reduce_window_max, k, strides, dil, full)
    if len([o for o in ctx.node.output if o]) < 2:
        return y
    return [y, _max_pool_indices(ctx, x, y, k, strides, dil, full)]


def _max_pool_indices(ctx, x, y, k, strides, dil, pads):
    """Flat index (row-major; column-major with storage_order=1) of each window's maximum:
    windows are gathered with static index tables, then argmax picks the first maximum."""
    s = shape_of(x)
    sp = list(s[2:])
    padded = [d + lo + hi for d, (lo, hi) in zip(sp, pads)]
    out_sp = shape_of(y)[2:]
    grids = np.meshgrid(*[np.arange(o) for o in out_sp], *[np.arange(kk) for kk in k],
                        indexing="ij")
    nsp = len(sp)
    coords = [grids[i] * strides[i] + grids[nsp + i] * dil[i] - pads[i][0] for i in range(nsp)]
    inside = np.all([(c >= 0) & (c < d) for c, d in zip(coords, sp)], axis=0)
    clipped = [np.clip(c, 0, d - 1) for c, d in zip(coords, sp)]
    flat = np.ravel_multi_index(clipped, sp).reshape(int(np.prod(out_sp)), -1)
    order = "F" if ctx.attr("storage_order", 0) else "C"
    report = np.ravel_multi_index(clipped, sp, order=order).reshape(flat.shape)
    inside = inside.reshape(flat.shape)
    xf = pnp.reshape(x, s[:2] + (-1,))
    vals = pnp.take(xf, flat.reshape(-1), axis=2)
    vals = pnp.reshape(vals, s[:2] + flat.shape)
    low = np.asarray(-np.inf if np.issubdtype(dtype_of(x), np.floating) else
                     np.iinfo(dtype_of(x)).min, dtype_of(x))
    vals = pnp.where(inside, vals, low)
    am = pnp.argmax(vals, axis=-1)
    idx = _pick(report, am)
    base = (lax.iota(np.int64, shape_of(idx), 0) * np.int64(s[1] * int(np.prod(sp)))
            + lax.iota(np.int64, shape_of(idx), 1) * np.int64(int(np.prod(sp))))
    return pnp.reshape(pnp.add(cast(idx, np.int64), base), shape_of(y))


def _pick(table, am):
    """table[p, am[n, c, p]] for every n, c, p."""
    rows = np.broadcast_to(np.arange(table.shape[0]), shape_of(am))
    return pnp.asarray(table)[rows, am]


@op("AveragePool")
def avg_pool(ctx, x):
    k, strides, dil, pads, extra = _pool_geometry(ctx, x)
    x = pnp.asarray(x)
    full = [(lo, hi + e) for (lo, hi), e in zip(pads, extra)]
    total = _window(x, lax.reduce_window_sum, k, strides, dil, full)
    if ctx.attr("count_include_pad", 0):
        # explicit pads count, the ceil_mode overhang does not
        ones = pnp.ones(shape_of(x), dtype_of(x))
        ones = lax.pad(ones, scalar_like(1, ones), [(0, 0, 0)] * 2 + [(lo, hi, 0) for lo, hi in pads])
        count = _window(ones, lax.reduce_window_sum, k, strides, dil,
                        [(0, e) for e in extra])
    else:
        count = _window(pnp.ones(shape_of(x), dtype_of(x)), lax.reduce_window_sum, k, strides,
                        dil, full)
    return pnp.divide(total, count)


@op("LpPool")
def lp_pool(ctx, x):
    p = ctx.attr("p", 2)
    k, strides, dil, pads, extra = _pool_geometry(ctx, x)
    full = [(lo, hi + e) for (lo, hi), e in zip(pads, extra)]
    s = _window(pnp.power(pnp.abs(x), scalar_like(p, x)), lax.reduce_window_sum, k, strides,
                dil, full)
    return pnp.power(s, scalar_like(1.0 / p, s))


def _global(fn):
    def impl(ctx, x):
        return fn(x, tuple(range(2, ndim_of(x))), ctx)
    return impl


op("GlobalAveragePool")(_global(lambda x, ax, c: pnp.mean(x, axis=ax, keepdims=True)))
op("GlobalMaxPool")(_global(lambda x, ax, c: pnp.max(x, axis=ax, keepdims=True)))
op("GlobalLpPool")(_global(lambda x, ax, c: pnp.power(
    pnp.sum(pnp.power(pnp.abs(x), scalar_like(c.attr("p", 2), x)), axis=ax, keepdims=True),
    scalar_like(1.0 / c.attr("p", 2), x))))


# ---------------------------------------------------------------- normalization
def _per_channel(v, nd):
    return pnp.reshape(v, (-1,) + (1,) * (nd - 2))


@op("BatchNormalization")
def batch_norm(ctx, x, scale, b, mean, var):
    nd = ndim_of(x)
    eps = scalar_like(ctx.attr("epsilon", 1e-5), x)
    training = ctx.attr("training_mode", 0) and len([o for o in ctx.node.output if o]) > 1
    if training:
        axes = (0,) + tuple(range(2, nd))
        bm = pnp.mean(x, axis=axes)
        bv = pnp.var(x, axis=axes)
        mom = scalar_like(ctx.attr("momentum", 0.9), x)
        y = _bn(x, scale, b, bm, bv, eps, nd)
        rm = pnp.add(pnp.multiply(mean, mom), pnp.multiply(bm, pnp.subtract(scalar_like(1, x), mom)))
        rv = pnp.add(pnp.multiply(var, mom), pnp.multiply(bv, pnp.subtract(scalar_like(1, x), mom)))
        return [y, rm, rv]
    return _bn(x, scale, b, mean, var, eps, nd)


def _bn(x, scale, b, mean, var, eps, nd):
    inv = pnp.divide(scale, pnp.sqrt(pnp.add(var, cast(eps, dtype_of(var)))))
    y = pnp.multiply(pnp.subtract(x, _per_channel(mean, nd)), _per_channel(inv, nd))
    return pnp.add(y, _per_channel(b, nd))


def _normalize(x, axes, eps):
    mean = pnp.mean(x, axis=axes, keepdims=True)
    d = pnp.subtract(x, mean)
    var = pnp.mean(pnp.multiply(d, d), axis=axes, keepdims=True)
    inv = pnp.divide(scalar_like(1, x), pnp.sqrt(pnp.add(var, scalar_like(eps, x))))
    return pnp.multiply(d, inv), mean, inv


@op("InstanceNormalization")
def instance_norm(ctx, x, scale, b):
    nd = ndim_of(x)
    y, _, _ = _normalize(x, tuple(range(2, nd)), ctx.attr("epsilon", 1e-5))
    return pnp.add(pnp.multiply(y, _per_channel(scale, nd)), _per_channel(b, nd))


@op("LayerNormalization")
def layer_norm(ctx, x, scale, b=None):
    nd = ndim_of(x)
    axis = norm_axis(ctx.attr("axis", -1), nd)
    dt = dtype_of(x)
    stash = np.float32 if ctx.attr("stash_type", 1) == 1 and dt != np.float64 else dt
    y, mean, inv = _normalize(cast(x, stash), tuple(range(axis, nd)), ctx.attr("epsilon", 1e-5))
    y = pnp.multiply(cast(y, dt), scale)
    if b is not None:
        y = pnp.add(y, b)
    return [y, mean, inv]


@op("RMSNormalization")
def rms_norm(ctx, x, scale):
    nd = ndim_of(x)
    axis = norm_axis(ctx.attr("axis", -1), nd)
    dt = dtype_of(x)
    stash = np.float32 if ctx.attr("stash_type", 1) == 1 and dt != np.float64 else dt
    xs = cast(x, stash)
    ms = pnp.mean(pnp.multiply(xs, xs), axis=tuple(range(axis, nd)), keepdims=True)
    y = pnp.divide(xs, pnp.sqrt(pnp.add(ms, scalar_like(ctx.attr("epsilon", 1e-5), ms))))
    return pnp.multiply(cast(y, dt), scale)


@op("GroupNormalization")
def group_norm(ctx, x, scale, b):
    s = shape_of(x)
    g = ctx.attr("num_groups")
    n, c = s[:2]
    dt = dtype_of(x)
    stash = np.float32 if ctx.attr("stash_type", 1) == 1 and dt != np.float64 else dt
    xg = pnp.reshape(cast(x, stash), (n, g, -1))
    y, _, _ = _normalize(xg, (2,), ctx.attr("epsilon", 1e-5))
    y = cast(pnp.reshape(y, s), dt)
    if ctx.version < 21:   # opset 18: scale and bias per group
        scale, b = pnp.repeat(scale, c // g), pnp.repeat(b, c // g)
    nd = len(s)
    return pnp.add(pnp.multiply(y, _per_channel(scale, nd)), _per_channel(b, nd))


@op("MeanVarianceNormalization")
def mvn(ctx, x):
    axes = tuple(norm_axis(a, ndim_of(x)) for a in ctx.attr("axes", [0, 2, 3]))
    return _normalize(x, axes, 1e-9)[0]


@op("LpNormalization")
def lp_norm(ctx, x):
    axis = norm_axis(ctx.attr("axis", -1), ndim_of(x))
    p = ctx.attr("p", 2)
    if p == 1:
        n = pnp.sum(pnp.abs(x), axis=axis, keepdims=True)
    else:
        n = pnp.sqrt(pnp.sum(pnp.multiply(x, x), axis=axis, keepdims=True))
    zero = pnp.equal(n, scalar_like(0, n))
    return pnp.where(zero, scalar_like(0, x), pnp.divide(x, pnp.where(zero, scalar_like(1, n), n)))


@op("LRN")
def lrn(ctx, x):
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    nd = ndim_of(x)
    sq = pnp.multiply(x, x)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    win = (1, size) + (1,) * (nd - 2)
    s = lax.reduce_window_sum(pnp.asarray(sq), win, (1,) * nd,
                              [(0, 0), (lo, hi)] + [(0, 0)] * (nd - 2))
    div = pnp.power(pnp.add(scalar_like(bias, x), pnp.multiply(scalar_like(alpha / size, x), s)),
                    scalar_like(beta, x))
    return pnp.divide(x, div)


# ---------------------------------------------------------------- resize
def _source_coords(mode, out_len, in_len, scale, roi_lo, roi_hi):
    """Input coordinate of each output index along one axis."""
    o = np.arange(out_len, dtype=np.float64)
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adj = out_len / (scale * in_len)
        center = in_len / 2
        offset = center * (1 - adj)
        return offset + (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out_len > 1 else np.zeros(out_len)
    if mode == "align_corners":   # the resized length here is in_len * scale, unrounded
        out_f = in_len * scale
        return o * (in_len - 1) / (out_f - 1) if out_f > 1 else np.zeros(out_len)
    if mode == "asymmetric":
        return o / scale
    if mode == "tf_crop_and_resize":
        if out_len > 1:
            return roi_lo * (in_len - 1) + o * (roi_hi - roi_lo) * (in_len - 1) / (out_len - 1)
        return np.full(out_len, 0.5 * (roi_lo + roi_hi) * (in_len - 1))
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def _nearest_index(ctx, x):
    mode = ctx.attr("nearest_mode", "round_prefer_floor")
    if mode == "round_prefer_floor":
        return np.where(x == np.floor(x) + 0.5, np.floor(x), np.round(x))
    if mode == "round_prefer_ceil":
        return np.where(x == np.floor(x) + 0.5, np.ceil(x), np.round(x))
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    raise ctx.fail(f"unknown nearest_mode {mode!r}")


def _cubic_weights(t, a):
    """Keys cubic convolution weights for offsets t (distance from the sample)."""
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def _interp_matrix(ctx, mode, out_len, in_len, scale, roi):
    """(out_len, in_len) weights for linear/cubic resizing along one axis, and a mask of
    outputs that fall outside the input (tf_crop_and_resize extrapolation)."""
    coord_mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
    src = _source_coords(coord_mode, out_len, in_len, scale, *roi)
    outside = (src < 0) | (src > in_len - 1)
    antialias = ctx.attr("antialias", 0) and scale < 1
    support = scale if antialias else 1.0
    if mode == "linear":
        kernel = lambda t: np.maximum(0.0, 1 - np.abs(t))
        reach = 1
    else:
        a = ctx.attr("cubic_coeff_a", -0.75)
        kernel = lambda t: _cubic_weights(t, a)
        reach = 2
    if antialias:
        base = kernel
        kernel = lambda t: base(t * support)
        reach = int(np.ceil(reach / support))
    W = np.zeros((out_len, in_len))
    for i, c in enumerate(src):
        lo = int(np.floor(c)) - reach + 1
        idx = np.arange(lo, lo + 2 * reach)
        w = kernel(idx - c)
        if ctx.attr("exclude_outside", 0):
            w = np.where((idx >= 0) & (idx < in_len), w, 0.0)
            w = w / w.sum() if w.sum() else w
        elif antialias:
            w = w / w.sum() if w.sum() else w
        np.add.at(W[i], np.clip(idx, 0, in_len - 1), w)
    return W, outside


def _resize_plan(ctx, x, roi, scales, sizes):
    shape = shape_of(x)
    n = len(shape)
    axes = [norm_axis(a, n) for a in ctx.attr("axes", list(range(n)))]
    out = list(shape)
    sc = [1.0] * n
    if sizes is not None and len(sizes):
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        sz = [int(v) for v in sizes]
        ratios = [sz[j] / shape[a] for j, a in enumerate(axes)]
        if policy != "stretch":
            r = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [r] * len(axes)
            sz = [int(np.floor(r * shape[a] + 0.5)) for a in axes]
        for j, a in enumerate(axes):
            out[a], sc[a] = sz[j], ratios[j]
    else:
        for j, a in enumerate(axes):
            sc[a] = float(scales[j])
            out[a] = int(np.floor(shape[a] * sc[a]))
    r = [0.0] * n + [1.0] * n
    if roi is not None and len(roi):
        for j, a in enumerate(axes):
            r[a], r[a + n] = float(roi[j]), float(roi[j + len(axes)])
    return out, sc, [(r[i], r[i + n]) for i in range(n)]


def resize_array(ctx, x, roi=None, scales=None, sizes=None, mode=None):
    mode = mode or ctx.attr("mode", "nearest")
    out, sc, rois = _resize_plan(ctx, x, roi, scales, sizes)
    x = pnp.asarray(x)
    dt = dtype_of(x)
    coord_mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
    extrap = ctx.attr("extrapolation_value", 0.0)
    for a, (o, i) in enumerate(zip(out, shape_of(x))):
        if o == i and sc[a] == 1.0 and coord_mode != "tf_crop_and_resize":
            continue
        if mode == "nearest":
            src = _source_coords(coord_mode, o, i, sc[a], *rois[a])
            idx = _nearest_index(ctx, src)
            outside = (idx < 0) | (idx > i - 1) if coord_mode == "tf_crop_and_resize" else None
            x = pnp.take(x, np.clip(idx, 0, i - 1).astype(np.int64), axis=a)
        else:
            W, outside = _interp_matrix(ctx, mode, o, i, sc[a], rois[a])
            if coord_mode != "tf_crop_and_resize":
                outside = None
            xm = pnp.moveaxis(x, a, -1)
            wdt = np.float64 if dt == np.float64 else np.float32
            y = pnp.matmul(cast(xm, wdt), W.T.astype(wdt))
            x = cast(pnp.moveaxis(y, -1, a), dt)
        if outside is not None and outside.any():
            shp = [1] * len(out)
            shp[a] = o
            x = pnp.where(outside.reshape(shp), np.asarray(extrap, dt), x)
    return x


@op("Resize", static=(1, 2, 3))
def resize(ctx, x, roi=None, scales=None, sizes=None):
    if ctx.version < 11:   # opset 10: (x, scales)
        roi, scales, sizes = None, roi, None
    roi = None if roi is None else ctx.const(roi, "roi").reshape(-1)
    scales = None if scales is None else ctx.const(scales, "scales").reshape(-1)
    sizes = None if sizes is None else ctx.const(sizes, "sizes").reshape(-1)
    if scales is not None and not len(scales):
        scales = None
    mode = ctx.attr("mode", "nearest")
    if ctx.version < 11:
        ctx.attrs.setdefault("coordinate_transformation_mode", "asymmetric")
        if mode == "linear":
            pass
    return resize_array(ctx, x, roi, scales, sizes, mode)


@op("Upsample", static=(1,))
def upsample(ctx, x, scales=None):
    scales = ctx.attr("scales") if ctx.version < 9 else ctx.const(scales, "scales").reshape(-1)
    ctx.attrs.setdefault("coordinate_transformation_mode", "asymmetric")
    ctx.attrs.setdefault("nearest_mode", "floor")
    mode = ctx.attr("mode", "nearest")
    return resize_array(ctx, x, None, scales, None, "linear" if mode in ("linear", "bilinear") else mode)
