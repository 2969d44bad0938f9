"""Indexing: x[idx] (basic, integer arrays, static boolean masks), x.at[idx] updates, take,
take_along_axis, nonzero and friends.

Static parts of an index (ints, slices, numpy arrays, concrete masks) are resolved on the
host; traced integer arrays become `gather`/`scatter` indices (out-of-bounds gathers clamp,
out-of-bounds updates are dropped, as in JAX).
"""
from __future__ import annotations

import builtins

import numpy as np

from .. import lax
from ..tracer import dtypes
from ..tracer.array import Array
from ..tracer.core import ConcretizationError, Tracer, get_aval
from ._math import _truthy, add, less, where
from ._promote import arr, canon_axis, cast, concrete, ensure_array, operand, sum_dtype
from ._shape import broadcast_to, moveaxis, ravel, reshape, stack


_as_array = arr   # for functions whose numpy parameter is named `arr`


# ---------------------------------------------------------------- parsing an index
def _item(i):
    """One index element as slice / int / None / Ellipsis / ("arr", ints) / ("mask", bools)."""
    if i is None or i is Ellipsis:
        return i
    if isinstance(i, slice):
        return slice(*(None if v is None else _static(v) for v in (i.start, i.stop, i.step)))
    if isinstance(i, (bool, np.bool_)):
        raise IndexError("boolean scalar indices are not supported; use a boolean array")
    if isinstance(i, (int, np.integer)):
        return int(i)
    if isinstance(i, (list, tuple)):
        i = operand(i, "getitem", "index")
    if isinstance(i, Tracer):
        dt = get_aval(i).dtype
        if dtypes.is_bool(dt):
            raise IndexError(f"boolean mask index {i!r} is traced: its number of True entries, "
                             "hence the result shape, is unknown at trace time; use "
                             "pnp.where(mask, x, other) instead, or pass a concrete mask")
        if not dtypes.is_int(dt):
            raise IndexError(f"arrays used as indices must be integers or booleans, got {dt.name}")
        return ("arr", i)
    if isinstance(i, (Array, np.ndarray, np.generic)):
        a = np.asarray(i)
        if a.dtype == np.bool_:
            if a.ndim == 0:
                raise IndexError("boolean scalar indices are not supported; use a boolean array")
            return ("mask", a)
        if a.dtype.kind not in "iu" and a.size:
            raise IndexError(f"arrays used as indices must be integers or booleans, got {a.dtype}")
        return int(a) if a.ndim == 0 else ("arr", a.astype(np.int64))
    raise TypeError(f"index {i!r} of type {type(i).__name__} is not supported: use ints, slices, "
                    "None, Ellipsis, integer arrays or boolean arrays")


def _static(v):
    c = concrete(v)
    if c is None:
        raise ConcretizationError(f"slice bounds must be static, got traced {v!r}; for a slice at "
                                  "a traced offset use pj.lax.dynamic_slice")
    return int(c)


def _parse(shape, idx, strict):
    """Index entries in order: ("slice", axis, start, step, length), ("int", axis, i),
    ("new",), ("adv", axis, int array). With any array present, ints become 0-d arrays
    (numpy broadcasts them with the arrays)."""
    items = [_item(i) for i in (idx if isinstance(idx, tuple) else (idx,))]
    used = builtins.sum(1 if not isinstance(i, tuple) else (i[1].ndim if i[0] == "mask" else 1)
                        for i in items if i is not None and i is not Ellipsis)
    n_ellipsis = builtins.sum(i is Ellipsis for i in items)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if used > len(shape):
        raise IndexError(f"too many indices for array: array is {len(shape)}-dimensional, "
                         f"but {used} were indexed")
    fill = [slice(None)] * (len(shape) - used)
    items = (items[:items.index(Ellipsis)] + fill + items[items.index(Ellipsis) + 1:]
             if n_ellipsis else items + fill)
    entries, ax = [], 0
    for it in items:
        if it is None:
            entries.append(("new",))
            continue
        n = shape[ax]
        if isinstance(it, slice):
            start, stop, step = it.indices(n)
            entries.append(("slice", ax, start, step, len(range(start, stop, step))))
        elif isinstance(it, int):
            if not -n <= it < n and strict:
                raise IndexError(f"index {it} is out of bounds for axis {ax} with size {n}")
            entries.append(("int", ax, it + n if -n <= it < 0 else it))
        elif it[0] == "mask":
            m = it[1]
            if m.shape != tuple(shape[ax:ax + m.ndim]):
                raise IndexError(f"boolean index of shape {m.shape} does not match the indexed "
                                 f"array's axes {ax}.. of shape {tuple(shape[ax:ax + m.ndim])}")
            entries += [("adv", ax + k, _norm(nz, shape[ax + k], ax + k, strict))
                        for k, nz in enumerate(np.nonzero(m))]
            ax += m.ndim
            continue
        else:
            entries.append(("adv", ax, _norm(it[1], n, ax, strict)))
        ax += 1
    if builtins.any(e[0] == "adv" for e in entries):
        entries = [("adv", e[1], np.asarray(e[2])) if e[0] == "int" else e for e in entries]
    return entries


def _norm(a, n, axis, strict):
    """Index array with negative entries counted from the end (static ones checked)."""
    if isinstance(a, np.ndarray):
        if strict and a.size and (a.min() < -n or a.max() >= n):
            bad = a[(a < -n) | (a >= n)].flat[0]
            raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}")
        return np.where((a < 0) & (a >= -n), a + n, a).astype(np.int32)
    if dtypes.is_unsigned(get_aval(a).dtype):
        return a
    return where(less(a, 0), add(a, n), a)


def _broadcast_index_shape(arrays):
    try:
        return np.broadcast_shapes(*[get_aval(a).shape for a in arrays])
    except ValueError:
        raise IndexError("shape mismatch: indexing arrays could not be broadcast together with "
                         "shapes " + " ".join(str(get_aval(a).shape) for a in arrays)) from None


def _stack_indices(arrays, shape):
    """(shape..., k) int32 indices: a host constant when every array is static."""
    if builtins.all(isinstance(a, np.ndarray) for a in arrays):
        return np.stack([np.broadcast_to(a, shape) for a in arrays], -1).astype(np.int32)
    return stack([broadcast_to(a.astype(np.int32) if isinstance(a, np.ndarray) else
                               cast(a, dtypes.int32), shape) for a in arrays], axis=-1)


# ---------------------------------------------------------------- x[idx]
def getitem(x, idx):
    x = arr(x, "getitem", "x")
    shape = get_aval(x).shape
    entries = _parse(shape, idx, strict=True)
    # 1. every static slice and int at once: rev for negative steps, then one strided slice
    starts, limits, strides = [0] * len(shape), list(shape), [1] * len(shape)
    revs = []
    for e in entries:
        if e[0] == "slice":
            _, ax, start, step, length = e
            if step < 0:
                revs.append(ax)
                start, step = shape[ax] - 1 - start, -step
            start = builtins.min(start, shape[ax])
            starts[ax], strides[ax] = start, step
            limits[ax] = start + (length - 1) * step + 1 if length else start
        elif e[0] == "int":
            starts[e[1]], limits[e[1]] = e[2], e[2] + 1
    y = lax.rev(x, revs)
    if (starts, limits, strides) != ([0] * len(shape), list(shape), [1] * len(shape)):
        y = lax.slice(y, starts, limits, strides)
    # 2. drop int axes, insert new ones
    kept = [e for e in entries if e[0] != "int"]
    y = lax.reshape(y, [e[4] if e[0] == "slice" else 1 if e[0] == "new" else shape[e[1]]
                        for e in kept])
    adv = [(p, e[2]) for p, e in enumerate(kept) if e[0] == "adv"]
    if not adv:
        return ensure_array(y)
    # 3. integer arrays
    if len(adv) == 1 and isinstance(adv[0][1], Tracer) and get_aval(adv[0][1]).ndim == 0:
        return ensure_array(lax.dynamic_index_in_dim(y, adv[0][1], adv[0][0], keepdims=False))
    return _gather(y, adv, [p for p, e in enumerate(entries) if e[0] == "adv"])


def _gather(y, adv, entry_pos):
    positions, arrays = [p for p, _ in adv], [a for _, a in adv]
    b = _broadcast_index_shape(arrays)
    nd = get_aval(y).ndim
    rest = [p for p in range(nd) if p not in positions]
    out = lax.gather(lax.transpose(y, positions + rest), _stack_indices(arrays, b))
    # numpy: adjacent index arrays put their dims in place, separated ones in front
    if entry_pos == list(range(entry_pos[0], entry_pos[-1] + 1)) and positions[0]:
        nb, p0 = len(b), positions[0]
        out = lax.transpose(out, list(range(nb, nb + p0)) + list(range(nb))
                            + list(range(nb + p0, get_aval(out).ndim)))
    return ensure_array(out)


# ---------------------------------------------------------------- x.at[idx]
def _scatter_indices(shape, idx):
    """(indices of shape R + (ndim,), R): the position in x of every element of x[idx]."""
    entries = _parse(shape, idx, strict=False)
    adv_at = [i for i, e in enumerate(entries) if e[0] == "adv"]
    items = [e for e in entries if e[0] != "adv"]
    b = ()
    if adv_at:
        b = _broadcast_index_shape([entries[i][2] for i in adv_at])
        adjacent = adv_at == list(range(adv_at[0], adv_at[-1] + 1))
        items.insert(adv_at[0] if adjacent else 0, ("adv-block",))
    r_shape = []
    for e in items:
        if e[0] == "slice":
            r_shape.append(e[4])
        elif e[0] == "new":
            r_shape.append(1)
        elif e[0] == "adv-block":
            r_shape += b
    cols, r, nd = [None] * len(shape), 0, len(r_shape)
    for e in items:
        if e[0] == "slice":
            _, ax, start, step, length = e
            cols[ax] = _place(start + step * np.arange(length, dtype=np.int64), r, nd)
            r += 1
        elif e[0] == "new":
            r += 1
        elif e[0] == "int":
            cols[e[1]] = np.full((1,) * nd, e[2], np.int64)
        else:
            for i in adv_at:
                cols[entries[i][1]] = _place(entries[i][2], r, nd, len(b))
            r += len(b)
    r_shape = tuple(r_shape)
    return _stack_indices(cols, r_shape), r_shape


def _place(a, r, nd, width=None):
    """Reshape a (right-aligned in `width` dims) to sit at dims r.. of an nd-dim broadcast."""
    s = get_aval(a).shape
    width = len(s) if width is None else width
    new = (1,) * (r + width - len(s)) + s + (1,) * (nd - r - width)
    return a.reshape(new) if isinstance(a, np.ndarray) else reshape(a, new)


class IndexUpdateHelper:
    """`x.at[idx]`: functional updates, as in JAX."""
    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __getitem__(self, idx):
        return _IndexUpdateRef(self.array, idx)

    def __repr__(self):
        return f"IndexUpdateHelper({self.array!r})"


class _IndexUpdateRef:
    __slots__ = ("array", "index")

    def __init__(self, array, index):
        self.array, self.index = array, index

    def get(self):
        return getitem(self.array, self.index)

    def _scatter(self, op, values, fn, negate=False):
        x = arr(self.array, f"at[].{fn}", "x")
        s, dt = get_aval(x).shape, get_aval(x).dtype
        idx, r_shape = _scatter_indices(s, self.index)
        v = arr(cast(operand(values, f"at[].{fn}", "values"), dt), f"at[].{fn}", "values")
        if negate:
            from ._math import negative
            v = negative(v)
        vs = get_aval(v).shape
        while len(vs) > len(r_shape) and vs[0] == 1:   # numpy drops leading unit dims
            v, vs = reshape(v, vs[1:]), vs[1:]
        return ensure_array(op(x, idx, broadcast_to(v, r_shape)))

    def set(self, values):
        return self._scatter(lax.scatter, values, "set")

    def add(self, values):
        return self._scatter(lax.scatter_add, values, "add")

    def subtract(self, values):
        return self._scatter(lax.scatter_add, values, "subtract", negate=True)

    def multiply(self, values):
        return self._scatter(lax.scatter_mul, values, "multiply")

    mul = multiply

    def min(self, values):
        return self._scatter(lax.scatter_min, values, "min")

    def max(self, values):
        return self._scatter(lax.scatter_max, values, "max")


# ---------------------------------------------------------------- take and friends
def take(a, indices, axis=None, mode=None):
    """Elements along axis; mode None raises on static out-of-range indices and clamps traced
    ones, 'clip' clamps, 'wrap' wraps around."""
    x = arr(a, "take")
    if axis is None:
        x, axis = ravel(x), 0
    ax = canon_axis(axis, get_aval(x).ndim, "take")
    n = get_aval(x).shape[ax]
    idx = operand(indices, "take", "indices")
    if mode == "wrap":
        from ._math import remainder
        idx = remainder(idx, n)
    elif mode == "clip":
        from ._math import clip
        idx = clip(idx, 0, n - 1)
    elif mode not in (None, "raise"):
        raise ValueError(f"take: mode must be None, 'raise', 'clip' or 'wrap', got {mode!r}")
    return getitem(x, (slice(None),) * ax + (idx,))


def take_along_axis(arr, indices, axis):
    """out[..., j, ...] = arr[..., indices[..., j, ...], ...] along axis (a batched gather)."""
    x = _as_array(arr, "take_along_axis", "arr")
    i = _as_array(indices, "take_along_axis", "indices")
    if axis is None:
        x, i, axis = ravel(x), ravel(i), 0
    nd = get_aval(x).ndim
    if get_aval(i).ndim != nd:
        raise ValueError(f"take_along_axis: indices of rank {get_aval(i).ndim} need the rank "
                         f"{nd} of arr")
    ax = canon_axis(axis, nd, "take_along_axis")
    n = get_aval(x).shape[ax]
    c = concrete(i)
    i = _norm(c.astype(np.int64) if c is not None else i, n, ax, True)
    xt, it = moveaxis(x, ax, -1), moveaxis(i, ax, -1)
    batch = np.broadcast_shapes(get_aval(xt).shape[:-1], get_aval(it).shape[:-1])
    m = get_aval(it).shape[-1]
    xt = broadcast_to(xt, batch + (n,))
    it = reshape(broadcast_to(cast(it, dtypes.int32), batch + (m,)), batch + (m, 1))
    return moveaxis(ensure_array(lax.gather(xt, it, batch_dims=len(batch))), -1, ax)


def unravel_index(indices, shape):
    """Tuple of coordinate arrays of flat indices into `shape`."""
    i = arr(indices, "unravel_index", "indices")
    out = []
    for d in reversed(tuple(shape)):
        out.append(ensure_array(lax.rem(i, d)))
        i = lax.div(i, d)
    return tuple(reversed(out))


def nonzero(a, *, size=None, fill_value=None):
    """Indices of nonzero elements. A traced input needs a static `size`: the first `size`
    indices are returned, padded with fill_value (0 by default)."""
    x = arr(a, "nonzero")
    if size is None:
        c = concrete(x)
        if c is None:
            raise ConcretizationError(
                f"nonzero: the number of nonzero elements of traced {x!r} is unknown at trace "
                "time; pass size=N (and fill_value=) for a fixed-size result, or use "
                "pnp.where(cond, x, y)")
        return tuple(ensure_array(v.astype(np.int32)) for v in np.nonzero(c))
    s = get_aval(x).shape
    flat = ravel(_truthy(x))
    n = get_aval(flat).shape[0]
    slot = lax.sub(lax.cumsum(cast(flat, dtypes.int32)), np.int32(1))
    slot = lax.select(flat, slot, lax.full((n,), size, dtypes.int32))   # size: dropped
    found = lax.scatter(lax.full((size,), -1, dtypes.int32), reshape(slot, (n, 1)),
                        lax.iota(dtypes.int32, n))
    coords = unravel_index(lax.max(found, np.int32(0)), s)
    fills = fill_value if isinstance(fill_value, (tuple, list)) else [fill_value or 0] * len(s)
    return tuple(where(lax.lt(found, 0), f, c) for c, f in zip(coords, fills))


def flatnonzero(a, *, size=None, fill_value=None):
    return nonzero(ravel(a), size=size, fill_value=fill_value)[0]


def argwhere(a, *, size=None, fill_value=None):
    """(N, ndim) indices of nonzero elements."""
    x = arr(a, "argwhere")
    return stack(nonzero(x, size=size, fill_value=fill_value), axis=-1)


def bincount(x, weights=None, minlength=0, *, length=None):
    """Counts of each non-negative int; a traced x needs a static `length`."""
    x = arr(x, "bincount", "x")
    if length is None:
        c = concrete(x)
        if c is None:
            raise ConcretizationError("bincount: the output length of a traced input is unknown "
                                      "at trace time; pass length=N")
        length = builtins.max(int(c.max()) + 1 if c.size else 0, minlength)
    w = arr(1 if weights is None else weights, "bincount", "weights")
    dt = sum_dtype(get_aval(w).dtype)
    n = get_aval(x).shape[0]
    w = broadcast_to(cast(w, dt), (n,))
    return ensure_array(lax.scatter_add(lax.full((length,), 0, dt), reshape(x, (n, 1)), w))


def ix_(*args):
    """Open mesh of 1-D index sequences, for x[ix_(rows, cols)]."""
    k = len(args)
    return tuple(reshape(operand(a, "ix_", "args"), [-1 if i == j else 1 for j in range(k)])
                 for i, a in enumerate(args))


def compress(condition, a, axis=None):
    """The slices of a along axis where the (concrete) condition is true."""
    c = concrete(operand(condition, "compress", "condition"))
    if c is None:
        raise ConcretizationError("compress: condition must be concrete (the output shape "
                                  "depends on it); use pnp.where")
    return take(a, np.nonzero(c)[0], axis=axis)
