"""Shape and data-movement ONNX ops: reshape, slicing, gather/scatter, padding, ..."""
from __future__ import annotations

import numpy as np

from .... import lax
from .... import numpy as pnp
from . import op
from ._util import cast, dtype_of, ndim_of, norm_axis, onnx_dtype, shape_of


@op("Constant")
def constant(ctx):
    for key in ("value", "sparse_value"):
        if key in ctx.attrs:
            return np.asarray(ctx.attrs[key])
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if key in ctx.attrs:
            return np.asarray(ctx.attrs[key], dt)
    raise ctx.fail(f"no supported value attribute among {sorted(ctx.attrs)} (strings are not supported)")


@op("Shape")
def shape(ctx, x):
    s = shape_of(x)
    n = len(s)
    start, end = ctx.attr("start", 0), ctx.attr("end", n)
    start, end = [min(max(v + n if v < 0 else v, 0), n) for v in (start, end)]
    return np.asarray(s[start:end], np.int64)


@op("Size")
def size(ctx, x):
    return np.asarray(int(np.prod(shape_of(x), dtype=np.int64)), np.int64)


@op("Reshape", static=(1,))
def reshape(ctx, x, shp=None):
    target = ctx.ints(shp, "the target shape") if ctx.version >= 5 else list(ctx.attr("shape"))
    src = shape_of(x)
    allowzero = ctx.attr("allowzero", 0)
    out = [src[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if out.count(-1) > 1:
        raise ctx.fail(f"target shape {target} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        total = int(np.prod(src, dtype=np.int64))
        if known == 0 or total % known:
            raise ctx.fail(f"cannot reshape {src} into {target}")
        out[out.index(-1)] = total // known
    return pnp.reshape(x, tuple(out))


@op("Flatten")
def flatten(ctx, x):
    s = shape_of(x)
    axis = norm_axis(ctx.attr("axis", 1), len(s))
    lead = int(np.prod(s[:axis], dtype=np.int64))
    return pnp.reshape(x, (lead, int(np.prod(s[axis:], dtype=np.int64))))


def _axes(ctx, axes_input, since, what="axes"):
    """Axes from the attribute (before opset `since`) or the input (from it)."""
    if ctx.version >= since:
        return ctx.ints(axes_input, what)
    return ctx.attr("axes")


@op("Squeeze", static=(1,))
def squeeze(ctx, x, axes=None):
    axes = _axes(ctx, axes, 13)
    s = shape_of(x)
    if axes is None:
        axes = [i for i, d in enumerate(s) if d == 1]
    axes = {norm_axis(a, len(s)) for a in axes}
    return pnp.reshape(x, tuple(d for i, d in enumerate(s) if i not in axes))


@op("Unsqueeze", static=(1,))
def unsqueeze(ctx, x, axes=None):
    axes = _axes(ctx, axes, 13)
    s = list(shape_of(x))
    n = len(s) + len(axes)
    for a in sorted(norm_axis(a, n) for a in axes):
        s.insert(a, 1)
    return pnp.reshape(x, tuple(s))


@op("Transpose")
def transpose(ctx, x):
    perm = ctx.attr("perm")
    return pnp.transpose(x, None if perm is None else tuple(perm))


@op("Concat")
def concat(ctx, *xs):
    xs = [x for x in xs if x is not None]
    axis = norm_axis(ctx.attr("axis", 0), ndim_of(xs[0]))
    if all(isinstance(x, np.ndarray) for x in xs):
        return np.concatenate(xs, axis)
    return pnp.concatenate(xs, axis=axis)


@op("Split", static=(1,))
def split(ctx, x, split_sizes=None):
    s = shape_of(x)
    axis = norm_axis(ctx.attr("axis", 0), len(s))
    sizes = ctx.ints(split_sizes, "split") if ctx.version >= 13 else ctx.attr("split")
    n_out = ctx.attr("num_outputs") or len(ctx.node.output)
    if sizes is None:
        if ctx.attr("num_outputs"):
            chunk = -(-s[axis] // n_out)
            sizes = [min(chunk, s[axis] - i * chunk) for i in range(n_out)]
        else:
            sizes = [s[axis] // n_out] * n_out
    if sum(sizes) != s[axis]:
        raise ctx.fail(f"split sizes {sizes} do not add up to dimension {s[axis]} of {s}")
    outs, start = [], 0
    for z in sizes:
        outs.append(lax.slice_in_dim(pnp.asarray(x), start, start + z, 1, axis))
        start += z
    return outs


def _slice_bounds(start, end, step, dim):
    """Clamped Python slice (start, stop) for ONNX Slice semantics."""
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    start = min(max(start, -1), dim - 1)
    end = min(max(end, -1), dim - 1)
    return start, end


@op("Slice", static=(1, 2, 3, 4))
def slice_op(ctx, x, starts=None, ends=None, axes=None, steps=None):
    if ctx.version < 10:
        starts, ends, axes = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes")
        steps = None
    else:
        starts, ends = ctx.ints(starts, "starts"), ctx.ints(ends, "ends")
        axes, steps = ctx.ints(axes, "axes"), ctx.ints(steps, "steps")
    s = shape_of(x)
    axes = list(range(len(starts))) if axes is None else [norm_axis(a, len(s)) for a in axes]
    steps = steps or [1] * len(starts)
    idx = [slice(None)] * len(s)
    for a, st, en, sp in zip(axes, starts, ends, steps):
        if sp == 0:
            raise ctx.fail("a slice step of 0 is invalid")
        b, e = _slice_bounds(st, en, sp, s[a])
        idx[a] = slice(b, None if e < 0 else e, sp)
    if isinstance(x, np.ndarray):
        return x[tuple(idx)]
    return pnp.asarray(x)[tuple(idx)]


def _norm_indices(idx, dim):
    """ONNX allows negative indices counting from the end."""
    if isinstance(idx, np.ndarray):
        return np.where(idx < 0, idx + dim, idx)
    return pnp.where(pnp.less(idx, 0), pnp.add(idx, np.asarray(dim, dtype_of(idx))), idx)


@op("Gather")
def gather(ctx, x, idx):
    axis = norm_axis(ctx.attr("axis", 0), ndim_of(x))
    idx = _norm_indices(idx, shape_of(x)[axis])
    if isinstance(x, np.ndarray) and isinstance(idx, np.ndarray):
        return np.take(x, idx, axis=axis)
    return pnp.take(x, idx, axis=axis)


@op("GatherElements")
def gather_elements(ctx, x, idx):
    axis = norm_axis(ctx.attr("axis", 0), ndim_of(x))
    return pnp.take_along_axis(x, _norm_indices(idx, shape_of(x)[axis]), axis=axis)


def _nd_indices(x, idx, batch_dims):
    k = shape_of(idx)[-1]
    dims = np.asarray(shape_of(x)[batch_dims:batch_dims + k], np.int64)
    idx = cast(idx, np.int64)
    return pnp.where(pnp.less(idx, 0), pnp.add(idx, dims), idx)


@op("GatherND")
def gather_nd(ctx, x, idx):
    b = ctx.attr("batch_dims", 0)
    return lax.gather(pnp.asarray(x), pnp.asarray(_nd_indices(x, idx, b)), batch_dims=b)


_SCATTER = {"none": lax.scatter, "add": lax.scatter_add, "mul": lax.scatter_mul,
            "max": lax.scatter_max, "min": lax.scatter_min}


@op("ScatterND")
def scatter_nd(ctx, x, idx, updates):
    fn = _SCATTER[ctx.attr("reduction", "none")]
    return fn(pnp.asarray(x), pnp.asarray(_nd_indices(x, idx, 0)), pnp.asarray(updates))


@op("ScatterElements", "Scatter")
def scatter_elements(ctx, x, idx, updates):
    """Scatter along one axis, as ScatterND with full coordinates for every update."""
    n = ndim_of(x)
    axis = norm_axis(ctx.attr("axis", 0), n)
    ishape = shape_of(idx)
    idx = cast(_norm_indices(idx, shape_of(x)[axis]), np.int64)
    coords = [idx if d == axis else lax.iota(np.int64, ishape, d) for d in range(n)]
    full = pnp.stack(coords, axis=-1)
    fn = _SCATTER[ctx.attr("reduction", "none")]
    return fn(pnp.asarray(x), full, pnp.asarray(updates))


@op("Expand", static=(1,))
def expand(ctx, x, shp):
    target = ctx.ints(shp, "the target shape")
    out = np.broadcast_shapes(shape_of(x), tuple(target))
    return pnp.broadcast_to(x, out)


@op("Tile", static=(1,))
def tile(ctx, x, repeats):
    return pnp.tile(x, tuple(ctx.ints(repeats, "repeats")))


@op("Pad", static=(1, 3))
def pad(ctx, x, pads=None, value=None, axes=None):
    n = ndim_of(x)
    mode = ctx.attr("mode", "constant")
    if ctx.version < 11:
        pads, value = ctx.attr("pads", ctx.attr("paddings")), ctx.attr("value", 0.0)
    else:
        pads = ctx.ints(pads, "pads")
    axes = list(range(n)) if axes is None else [norm_axis(a, n) for a in ctx.ints(axes, "axes")]
    cfg = [(0, 0)] * n
    k = len(axes)
    for j, a in enumerate(axes):
        cfg[a] = (pads[j], pads[j + k])
    x = pnp.asarray(x)
    if mode == "constant":
        v = np.zeros((), dtype_of(x)) if value is None else value
        v = cast(v, dtype_of(x))
        if not isinstance(v, np.ndarray) and len(shape_of(v)):
            v = pnp.reshape(v, ())
        return lax.pad(x, v if not isinstance(v, np.ndarray) else v.reshape(()),
                       [(lo, hi, 0) for lo, hi in cfg])
    # other modes: crop negative pads first, then pad
    lo_crop = [slice(-lo if lo < 0 else 0, (d + hi) if hi < 0 else None)
               for (lo, hi), d in zip(cfg, shape_of(x))]
    x = x[tuple(lo_crop)]
    pw = [(max(lo, 0), max(hi, 0)) for lo, hi in cfg]
    return pnp.pad(x, pw, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


@op("ConstantOfShape", static=(0,))
def constant_of_shape(ctx, shp):
    v = ctx.attr("value")
    v = np.zeros(1, np.float32) if v is None else np.asarray(v)
    return np.full(tuple(ctx.ints(shp, "the shape")), v.reshape(-1)[0], dtype=v.dtype)


@op("Range", static="all")
def range_op(ctx, start, limit, delta):
    s, l, d = (ctx.const(v, n).reshape(-1)[0]
               for v, n in ((start, "start"), (limit, "limit"), (delta, "delta")))
    n = max(int(np.ceil((l - s) / d)), 0)
    return (s + np.arange(n, dtype=s.dtype) * d).astype(s.dtype)


@op("Trilu", static=(1,))
def trilu(ctx, x, k=None):
    k = 0 if k is None else int(ctx.const(k, "k"))
    return pnp.triu(x, k) if ctx.attr("upper", 1) else pnp.tril(x, k)


@op("DepthToSpace")
def depth_to_space(ctx, x):
    b = ctx.attr("blocksize")
    n, c, h, w = shape_of(x)
    if ctx.attr("mode", "DCR") == "DCR":
        y = pnp.reshape(x, (n, b, b, c // (b * b), h, w))
        y = pnp.transpose(y, (0, 3, 4, 1, 5, 2))
    else:
        y = pnp.reshape(x, (n, c // (b * b), b, b, h, w))
        y = pnp.transpose(y, (0, 1, 4, 2, 5, 3))
    return pnp.reshape(y, (n, c // (b * b), h * b, w * b))


@op("SpaceToDepth")
def space_to_depth(ctx, x):
    b = ctx.attr("blocksize")
    n, c, h, w = shape_of(x)
    y = pnp.reshape(x, (n, c, h // b, b, w // b, b))
    crd = ctx.attr("mode", "DCR") == "CRD"
    y = pnp.transpose(y, (0, 1, 3, 5, 2, 4) if crd else (0, 3, 5, 1, 2, 4))
    return pnp.reshape(y, (n, c * b * b, h // b, w // b))


@op("OneHot", static=(1,))
def one_hot(ctx, idx, depth, values):
    d = int(ctx.const(depth, "depth").reshape(-1)[0])
    n = ndim_of(idx) + 1
    axis = norm_axis(ctx.attr("axis", -1), n)
    idx = cast(idx, np.int64) if not np.issubdtype(dtype_of(idx), np.floating) else \
        cast(pnp.floor(idx), np.int64)
    idx = pnp.where(pnp.less(idx, 0), pnp.add(idx, np.int64(d)), idx)
    shape = list(shape_of(idx))
    shape.insert(axis, d)
    classes = lax.iota(np.int64, tuple(shape), axis)
    hot = pnp.equal(pnp.expand_dims(idx, axis), classes)
    values = pnp.asarray(values)
    return pnp.where(hot, values[1], values[0])


@op("NonZero", static="all")
def nonzero(ctx, x):
    return np.asarray(np.nonzero(ctx.const(x, "the input (its output size depends on it)")),
                      np.int64)


@op("Compress", static=(1,))
def compress(ctx, x, cond):
    keep = np.nonzero(ctx.const(cond, "condition").astype(bool))[0]
    axis = ctx.attr("axis")
    if axis is None:
        return pnp.take(pnp.reshape(x, (-1,)), keep[keep < int(np.prod(shape_of(x)))])
    axis = norm_axis(axis, ndim_of(x))
    return pnp.take(x, keep[keep < shape_of(x)[axis]], axis=axis)


@op("EyeLike")
def eye_like(ctx, x):
    dt = dtype_of(x) if ctx.attr("dtype") is None else onnx_dtype(ctx, ctx.attr("dtype"))
    r, c = shape_of(x)
    return np.eye(r, c, k=ctx.attr("k", 0), dtype=dt)


@op("ReverseSequence")
def reverse_sequence(ctx, x, lens):
    b_ax, t_ax = ctx.attr("batch_axis", 1), ctx.attr("time_axis", 0)
    s = shape_of(x)
    t = lax.iota(np.int64, s, t_ax)
    shp = [1] * len(s)
    shp[b_ax] = s[b_ax]
    ln = pnp.reshape(cast(lens, np.int64), tuple(shp))
    src = pnp.where(pnp.less(t, ln), pnp.subtract(pnp.subtract(ln, np.int64(1)), t), t)
    return pnp.take_along_axis(x, src, axis=t_ax)


@op("CenterCropPad", static=(1,))
def center_crop_pad(ctx, x, shp):
    target = ctx.ints(shp, "shape")
    n = ndim_of(x)
    axes = [norm_axis(a, n) for a in ctx.attr("axes", list(range(n)))]
    for a, t in zip(axes, target):
        d = shape_of(x)[a]
        if t < d:
            start = (d - t) // 2
            x = lax.slice_in_dim(pnp.asarray(x), start, start + t, 1, a)
        elif t > d:
            lo = (t - d) // 2
            cfg = [(0, 0, 0)] * n
            cfg[a] = (lo, t - d - lo, 0)
            x = lax.pad(pnp.asarray(x), np.zeros((), dtype_of(x)), cfg)
    return x


@op("Unique", static="all")
def unique(ctx, x):
    v = ctx.const(x, "the input (its output size depends on it)")
    axis = ctx.attr("axis")
    y, first, inverse, counts = np.unique(v, return_index=True, return_inverse=True,
                                          return_counts=True, axis=axis)
    if not ctx.attr("sorted", 1):
        order = np.argsort(first, kind="stable")
        y = np.take(y, order, axis=0 if axis is None else axis)
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        first, counts, inverse = first[order], counts[order], remap[inverse.reshape(-1)]
    return [y, first.astype(np.int64), inverse.reshape(-1).astype(np.int64),
            counts.astype(np.int64)]


@op("Dropout", static=(1, 2))
def dropout(ctx, x, ratio=None, training=None):
    train = False if training is None else bool(ctx.const(training, "training_mode"))
    r = 0.5 if ratio is None else float(ctx.const(ratio, "ratio"))
    if ctx.version < 7 and ctx.attr("is_test", 0) == 0 and ctx.version >= 6:
        train = False
    if train and r > 0:
        raise ctx.fail("training-mode Dropout draws random numbers; polyjit runs it only "
                       "with ratio 0 or in inference mode")
    mask = np.ones(shape_of(x), bool)
    return [x, mask] if len(ctx.node.output) > 1 else x
