"""Shape ops: reshape, transpose, stacking, splitting, tiling, padding, flips, diagonals."""
from __future__ import annotations

import builtins
import math

import numpy as np

from .. import lax
from ..tracer import dtypes
from ..tracer.core import ConcretizationError, get_aval
from ..tracer.primitives import ShapeError
from ._math import where
from ._promote import broadcast_shapes as _bshapes
from ._promote import (arr, canon_axes, canon_axis, cast, concrete, ensure_array, operand,
                       static_int)


_as_array = arr   # for functions whose numpy parameter is named `arr`


def _zero(x):
    return np.zeros((), get_aval(x).dtype)


def shape(a):
    return get_aval(operand(a, "shape", "a")).shape


def ndim(a):
    return get_aval(operand(a, "ndim", "a")).ndim


def size(a, axis=None):
    s = shape(a)
    return math.prod(s) if axis is None else s[canon_axis(axis, len(s), "size")]


def _resolve_shape(fn, old, new):
    new = (new,) if np.ndim(new) == 0 else tuple(new)
    new = tuple(int(d) for d in new)
    n = math.prod(old)
    if new.count(-1) > 1:
        raise ValueError(f"{fn}: can only specify one unknown dimension, got {new}")
    if -1 in new:
        known = math.prod(d for d in new if d != -1)
        if known == 0 or n % known:
            raise ShapeError(f"{fn}: cannot reshape array of shape {old} ({n} elements) into "
                             f"shape {new}")
        new = tuple(n // known if d == -1 else d for d in new)
    if math.prod(new) != n or builtins.any(d < 0 for d in new):
        raise ShapeError(f"{fn}: cannot reshape array of shape {old} ({n} elements) into "
                         f"shape {new}")
    return new


def reshape(a, shape=None, order="C", *, newshape=None):
    """Reshape (one -1 allowed); order 'F' reads and writes in column-major order."""
    x = arr(a, "reshape")
    shape = newshape if shape is None else shape
    new = _resolve_shape("reshape", get_aval(x).shape, shape)
    if order == "F":
        return transpose(ensure_array(lax.reshape(transpose(x), new[::-1])))
    if order not in ("C", "A"):
        raise ValueError(f"reshape: order must be 'C', 'F' or 'A', got {order!r}")
    return ensure_array(lax.reshape(x, new))


def ravel(a, order="C"):
    return reshape(a, (-1,), order)


flatten = ravel


def transpose(a, axes=None):
    x = arr(a, "transpose")
    nd = get_aval(x).ndim
    if axes is None:
        perm = tuple(range(nd))[::-1]
    else:
        perm = tuple(canon_axis(p, nd, "transpose") for p in axes)
        if sorted(perm) != list(range(nd)):
            raise ValueError(f"transpose: axes {tuple(axes)} are not a permutation of the "
                             f"{nd} axes of an array of shape {get_aval(x).shape}")
    return ensure_array(lax.transpose(x, perm))


permute_dims = transpose


def moveaxis(a, source, destination):
    x = arr(a, "moveaxis")
    nd = get_aval(x).ndim
    src = [canon_axis(s, nd, "moveaxis") for s in np.atleast_1d(source)]
    dst = [canon_axis(d, nd, "moveaxis") for d in np.atleast_1d(destination)]
    if len(src) != len(dst):
        raise ValueError(f"moveaxis: source {source} and destination {destination} differ in "
                         "length")
    order = [i for i in range(nd) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return ensure_array(lax.transpose(x, order))


def swapaxes(a, axis1, axis2):
    x = arr(a, "swapaxes")
    nd = get_aval(x).ndim
    perm = list(range(nd))
    i, j = canon_axis(axis1, nd, "swapaxes"), canon_axis(axis2, nd, "swapaxes")
    perm[i], perm[j] = j, i
    return ensure_array(lax.transpose(x, perm))


def matrix_transpose(x):
    return swapaxes(x, -1, -2)


def expand_dims(a, axis):
    x = arr(a, "expand_dims")
    s = get_aval(x).shape
    axes = canon_axes(axis, len(s) + len(np.atleast_1d(axis)), "expand_dims")
    out = list(s)
    for ax in axes:
        out.insert(ax, 1)
    return ensure_array(lax.reshape(x, out))


def squeeze(a, axis=None):
    x = arr(a, "squeeze")
    s = get_aval(x).shape
    if axis is None:
        axes = [i for i, d in enumerate(s) if d == 1]
    else:
        axes = canon_axes(axis, len(s), "squeeze")
        bad = [ax for ax in axes if s[ax] != 1]
        if bad:
            raise ValueError(f"squeeze: cannot squeeze axis {bad[0]} of shape {s}: its size is "
                             "not 1")
    return ensure_array(lax.reshape(x, [d for i, d in enumerate(s) if i not in axes]))


def _atleast(nd, arys, fn):
    def one(a):
        x = arr(a, fn)
        s = get_aval(x).shape
        if len(s) >= nd:
            return x
        if nd == 3 and s:   # numpy: (n,) -> (1, n, 1) and (m, n) -> (m, n, 1)
            new = (1,) + s + (1,) if len(s) == 1 else s + (1,)
        else:
            new = (1,) * (nd - len(s)) + s
        return ensure_array(lax.reshape(x, new))
    out = [one(a) for a in arys]
    return out[0] if len(out) == 1 else out


def atleast_1d(*arys):
    return _atleast(1, arys, "atleast_1d")


def atleast_2d(*arys):
    return _atleast(2, arys, "atleast_2d")


def atleast_3d(*arys):
    """As numpy: (n,) becomes (1, n, 1) and (m, n) becomes (m, n, 1)."""
    return _atleast(3, arys, "atleast_3d")


def broadcast_shapes(*shapes):
    return _bshapes("broadcast_shapes", *[(s,) if np.ndim(s) == 0 else tuple(s) for s in shapes])


def broadcast_to(array, shape):
    x = arr(array, "broadcast_to", "array")
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    s = get_aval(x).shape
    try:
        ok = len(s) <= len(shape) and _bshapes("broadcast_to", s, shape) == shape
    except ShapeError:
        ok = False
    if not ok:
        raise ShapeError(f"broadcast_to: cannot broadcast shape {s} to {shape}")
    return ensure_array(lax.broadcast_in_dim(x, shape, range(len(shape) - len(s), len(shape))))


def broadcast_arrays(*args):
    xs = [arr(a, "broadcast_arrays", f"args[{i}]") for i, a in enumerate(args)]
    s = _bshapes("broadcast_arrays", *[get_aval(x).shape for x in xs])
    return [broadcast_to(x, s) for x in xs]


# ---------------------------------------------------------------- joining and splitting
def _same_dtype(xs):
    avals = [get_aval(x) for x in xs]
    dt, weak = dtypes.result_type(*[(a.dtype, a.weak_type) for a in avals])
    return [cast(x, dt, weak) for x in xs]


def concatenate(arrays, axis=0, dtype=None):
    xs = [arr(a, "concatenate", f"arrays[{i}]") for i, a in enumerate(arrays)]
    if not xs:
        raise ValueError("concatenate: needs at least one array")
    if axis is None:
        xs, axis = [ravel(x) for x in xs], 0
    shapes = [get_aval(x).shape for x in xs]
    if builtins.any(len(s) != len(shapes[0]) for s in shapes) or not shapes[0]:
        raise ShapeError(f"concatenate: arrays of shapes {shapes} need one equal rank >= 1")
    ax = canon_axis(axis, len(shapes[0]), "concatenate")
    if builtins.any(s[:ax] + s[ax + 1:] != shapes[0][:ax] + shapes[0][ax + 1:] for s in shapes):
        raise ShapeError(f"concatenate: shapes {shapes} differ outside axis {ax}")
    xs = _same_dtype(xs) if dtype is None else [cast(x, dtypes.canonicalize(dtype)) for x in xs]
    return ensure_array(lax.concatenate(xs, ax))


concat = concatenate


def stack(arrays, axis=0, dtype=None):
    xs = [arr(a, "stack", f"arrays[{i}]") for i, a in enumerate(arrays)]
    if not xs:
        raise ValueError("stack: needs at least one array")
    shapes = {get_aval(x).shape for x in xs}
    if len(shapes) > 1:
        raise ShapeError("stack: all input arrays must have the same shape, got "
                         + " and ".join(map(str, sorted(shapes))))
    ax = canon_axis(axis, len(shapes.pop()) + 1, "stack")
    return concatenate([expand_dims(x, ax) for x in xs], ax, dtype)


def hstack(tup, dtype=None):
    xs = atleast_1d(*tup) if len(tup) > 1 else [atleast_1d(*tup)]
    return concatenate(xs, 0 if get_aval(xs[0]).ndim == 1 else 1, dtype)


def vstack(tup, dtype=None):
    xs = atleast_2d(*tup) if len(tup) > 1 else [atleast_2d(*tup)]
    return concatenate(xs, 0, dtype)


def dstack(tup, dtype=None):
    xs = atleast_3d(*tup) if len(tup) > 1 else [atleast_3d(*tup)]
    return concatenate(xs, 2, dtype)


def column_stack(tup):
    cols = [arr(a, "column_stack") for a in tup]
    return concatenate([reshape(c, (-1, 1)) if get_aval(c).ndim < 2 else c for c in cols], 1)


def _split(fn, ary, indices_or_sections, axis, equal):
    x = arr(ary, fn, "ary")
    s = get_aval(x).shape
    ax = canon_axis(axis, len(s), fn)
    n = s[ax]
    if np.ndim(indices_or_sections) == 0:
        k = static_int(indices_or_sections, fn, "the number of sections")
        if k <= 0 or (equal and n % k):
            raise ValueError(f"{fn}: axis {ax} of size {n} does not split into {k} equal sections")
        sizes = [n // k + (i < n % k) for i in range(k)]
        bounds = np.cumsum([0] + sizes).tolist()
    else:
        bounds = [0] + [builtins.min(builtins.max(int(i) + (n if int(i) < 0 else 0), 0), n)
                        for i in indices_or_sections] + [n]
    return [ensure_array(lax.slice_in_dim(x, lo, builtins.max(lo, hi), axis=ax))
            for lo, hi in zip(bounds[:-1], bounds[1:])]


def split(ary, indices_or_sections, axis=0):
    return _split("split", ary, indices_or_sections, axis, equal=True)


def array_split(ary, indices_or_sections, axis=0):
    return _split("array_split", ary, indices_or_sections, axis, equal=False)


def hsplit(ary, indices_or_sections):
    return split(ary, indices_or_sections, 0 if ndim(ary) == 1 else 1)


def vsplit(ary, indices_or_sections):
    return split(ary, indices_or_sections, 0)


def dsplit(ary, indices_or_sections):
    return split(ary, indices_or_sections, 2)


# ---------------------------------------------------------------- repeating and padding
def tile(A, reps):
    x = arr(A, "tile", "A")
    reps = (int(reps),) if np.ndim(reps) == 0 else tuple(int(r) for r in reps)
    s = get_aval(x).shape
    nd = builtins.max(len(s), len(reps))
    s, reps = (1,) * (nd - len(s)) + s, (1,) * (nd - len(reps)) + reps
    # (r0, s0, r1, s1, ...) then merge each pair
    big = [d for pair in zip(reps, s) for d in pair]
    y = lax.broadcast_in_dim(lax.reshape(x, s), big, range(1, 2 * nd, 2))
    return ensure_array(lax.reshape(y, [r * d for r, d in zip(reps, s)]))


def repeat(a, repeats, axis=None):
    """Repeat elements; `repeats` must be static (an int or a concrete array)."""
    x = arr(a, "repeat")
    if axis is None:
        x, axis = ravel(x), 0
    s = get_aval(x).shape
    ax = canon_axis(axis, len(s), "repeat")
    reps = concrete(repeats)
    if reps is None:
        raise ConcretizationError("repeat: repeats must be static (an int or a concrete array): "
                                  "the output shape depends on them")
    if reps.ndim == 0:
        r = int(reps)
        y = lax.broadcast_in_dim(x, s[:ax + 1] + (r,) + s[ax + 1:],
                                 [i if i <= ax else i + 1 for i in range(len(s))])
        return ensure_array(lax.reshape(y, s[:ax] + (s[ax] * r,) + s[ax + 1:]))
    from ._indexing import take
    return take(x, np.repeat(np.arange(s[ax]), reps), axis=ax)


def _pad_width(pad_width, nd):
    pw = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (nd, 2))
    if (pw < 0).any():
        raise ValueError(f"pad: negative pad width in {pad_width}")
    return [tuple(int(v) for v in p) for p in pw]


def pad(array, pad_width, mode="constant", constant_values=0):
    """numpy.pad for modes constant, edge, reflect, symmetric, wrap and empty."""
    x = arr(array, "pad", "array")
    s = get_aval(x).shape
    pw = _pad_width(pad_width, len(s))
    dt = get_aval(x).dtype
    if mode in ("constant", "empty"):
        cv = 0 if mode == "empty" else constant_values
        if np.ndim(cv) == 0:
            return ensure_array(lax.pad(x, cast(operand(cv, "pad", "constant_values"), dt),
                                        [(lo, hi, 0) for lo, hi in pw]))
        cvs = np.broadcast_to(np.asarray(cv), (len(s), 2))
        for ax, ((lo, hi), (clo, chi)) in enumerate(zip(pw, cvs)):
            cfg = [(0, 0, 0)] * len(s)
            cfg[ax] = (lo, 0, 0)
            x = lax.pad(x, cast(clo.item(), dt), cfg)
            cfg[ax] = (0, hi, 0)
            x = lax.pad(x, cast(chi.item(), dt), cfg)
        return ensure_array(x)
    if mode not in ("edge", "reflect", "symmetric", "wrap"):
        raise ValueError(f"pad: mode {mode!r} is not supported; use constant, edge, reflect, "
                         "symmetric, wrap or empty")
    from ._indexing import take
    for ax, (lo, hi) in enumerate(pw):
        if lo or hi:   # the source index of every output position, worked out on the host
            x = take(x, np.pad(np.arange(s[ax]), (lo, hi), mode=mode), axis=ax)
    return ensure_array(x)


# ---------------------------------------------------------------- flips and rolls
def flip(m, axis=None):
    x = arr(m, "flip", "m")
    return ensure_array(lax.rev(x, canon_axes(axis, get_aval(x).ndim, "flip")))


def fliplr(m):
    return flip(m, 1)


def flipud(m):
    return flip(m, 0)


def rot90(m, k=1, axes=(0, 1)):
    x = arr(m, "rot90", "m")
    nd = get_aval(x).ndim
    a0, a1 = (canon_axis(a, nd, "rot90") for a in axes)
    if a0 == a1:
        raise ValueError(f"rot90: axes {axes} must differ")
    k %= 4
    if k == 0:
        return x
    if k == 2:
        return flip(x, (a0, a1))
    perm = list(range(nd))
    perm[a0], perm[a1] = a1, a0
    return transpose(flip(x, a1), perm) if k == 1 else flip(transpose(x, perm), a1)


def roll(a, shift, axis=None):
    """Roll elements along axes; a traced shift rolls by a gather."""
    x = arr(a, "roll")
    if axis is None:
        return reshape(roll(ravel(x), shift, 0), get_aval(x).shape)
    s = get_aval(x).shape
    axes = [canon_axis(ax, len(s), "roll") for ax in np.atleast_1d(axis)]
    shifts = [shift] * len(axes) if np.ndim(shift) == 0 else list(shift)
    if len(shifts) != len(axes):
        raise ValueError(f"roll: {len(shifts)} shifts for {len(axes)} axes")
    for sh, ax in zip(shifts, axes):
        n = s[ax]
        if n == 0:
            continue
        c = concrete(sh)
        if c is None:
            from ._indexing import take
            from ._math import remainder, subtract
            x = take(x, remainder(subtract(lax.iota(dtypes.int32, n), sh), n), axis=ax)
            continue
        k = int(c) % n
        if k:
            x = lax.concatenate([lax.slice_in_dim(x, n - k, n, axis=ax),
                                 lax.slice_in_dim(x, 0, n - k, axis=ax)], ax)
    return ensure_array(x)


# ---------------------------------------------------------------- diagonals and triangles
def diagonal(a, offset=0, axis1=0, axis2=1):
    """The diagonal of axes (axis1, axis2), as a new last axis (as numpy)."""
    x = arr(a, "diagonal")
    nd = get_aval(x).ndim
    i, j = canon_axis(axis1, nd, "diagonal"), canon_axis(axis2, nd, "diagonal")
    if i == j:
        raise ValueError("diagonal: axis1 and axis2 must differ")
    x = moveaxis(x, (i, j), (-2, -1))
    *lead, n, m = get_aval(x).shape
    k = builtins.max(0, builtins.min(n, m - offset) if offset >= 0 else builtins.min(n + offset, m))
    # element (r, r + offset) sits at r * (m + 1) + offset of the flattened matrix
    start = offset if offset >= 0 else -offset * m
    flat = lax.reshape(x, (*lead, n * m))
    if k == 0:
        return ensure_array(lax.slice_in_dim(flat, 0, 0, axis=len(lead)))
    return ensure_array(lax.slice_in_dim(flat, start, start + (k - 1) * (m + 1) + 1, m + 1,
                                         axis=len(lead)))


def _tri_mask(n, m, k):
    """(n, m) bool: True where column <= row + k."""
    rows = lax.iota(dtypes.int32, (n, m), 0)
    return lax.le(lax.iota(dtypes.int32, (n, m), 1), lax.add(rows, np.int32(k)))


def tril(m, k=0):
    x = arr(m, "tril", "m")
    *_, r, c = get_aval(x).shape
    return where(_tri_mask(r, c, k), x, _zero(x))


def triu(m, k=0):
    x = arr(m, "triu", "m")
    *_, r, c = get_aval(x).shape
    return where(_tri_mask(r, c, k - 1), _zero(x), x)


def diag(v, k=0):
    """The k-th diagonal of a matrix, or a matrix with vector v on its k-th diagonal."""
    x = arr(v, "diag", "v")
    s = get_aval(x).shape
    if len(s) == 2:
        return diagonal(x, k)
    if len(s) != 1:
        raise ValueError(f"diag: input must be 1-D or 2-D, got shape {s}")
    n = s[0] + builtins.abs(k)
    # row r holds v[r] when k >= 0 (entry (r, r + k)); column c holds v[c] when k < 0
    vals = lax.broadcast_in_dim(lax.pad(x, cast(0, get_aval(x).dtype), [(0, builtins.abs(k), 0)]),
                                (n, n), (0,) if k >= 0 else (1,))
    on_diag = lax.eq(lax.sub(lax.iota(dtypes.int32, (n, n), 1), lax.iota(dtypes.int32, (n, n), 0)),
                     np.int32(k))
    return where(on_diag, vals, _zero(x))


def diagflat(v, k=0):
    return diag(ravel(v), k)


def append(arr, values, axis=None):
    if axis is None:
        return concatenate([ravel(arr), ravel(values)])
    return concatenate([arr, values], axis)


def delete(arr, obj, axis=None):
    """Drop the entries `obj` (static ints, slice or mask) along axis."""
    x = _as_array(arr, "delete", "arr")
    if axis is None:
        x, axis = ravel(x), 0
    ax = canon_axis(axis, get_aval(x).ndim, "delete")
    idx = obj if isinstance(obj, slice) else concrete(obj)
    if idx is None:
        raise TypeError("delete: obj must be static (ints, a slice or a concrete mask)")
    keep = np.delete(np.arange(get_aval(x).shape[ax]), idx)
    from ._indexing import take
    return take(x, keep, axis=ax)
