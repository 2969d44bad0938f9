"""vmap: the batching transformation (autodidax style).

A BatchTracer carries a value with one extra axis, `bdim`, holding the batch (or
`not_mapped`). `batching_rules[prim](axis_size, vals, dims, **params)` returns
(outputs, their batch dims); outputs is a list for every primitive.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from .. import lax
from ..tracer import core, dtypes, primitives as P
from ..tracer.core import ShapedArray, Tracer, bind, full_raise, get_aval
from ..tracer.staging import eval_jaxpr, trace_to_jaxpr
from ..tracer.tree_util import tree_flatten, tree_flatten_with_path, tree_unflatten

not_mapped = None
batching_rules: dict = {}


class BatchTracer(Tracer):
    __slots__ = ("val", "bdim")

    def __init__(self, trace, val, bdim):
        self._trace, self.val, self.bdim = trace, val, bdim

    @property
    def aval(self):
        a = get_aval(self.val)
        if self.bdim is not_mapped:
            return a
        return ShapedArray(a.shape[:self.bdim] + a.shape[self.bdim + 1:], a.dtype, a.weak_type)

    def full_lower(self):
        return core.full_lower(self.val) if self.bdim is not_mapped else self

    def _concretization_message(self, what="bool()"):
        return (f"{what} was called on a value {self.aval.str_short()} batched by vmap: it holds "
                "one value per example, so Python control flow cannot depend on it. Use "
                "pj.lax.cond / pj.lax.switch / pj.lax.while_loop, or pnp.where for elementwise "
                "choices.")


class BatchTrace(core.Trace):
    axis_size = property(lambda self: self.main.global_data)

    def pure(self, val):
        return BatchTracer(self, val, not_mapped)

    lift = pure

    def process_primitive(self, prim, tracers, params):
        vals = [t.val for t in tracers]
        dims = [t.bdim for t in tracers]   # some are mapped: unmapped tracers are lowered
        rule = batching_rules.get(prim)
        if rule is None:
            raise NotImplementedError(f"vmap: no batching rule for primitive {prim.name}")
        outs, out_dims = rule(self.axis_size, vals, dims, **params)
        return [BatchTracer(self, o, d) for o, d in zip(outs, out_dims)]


# ---------------------------------------------------------------- moving batch dims
def _ndim(x):
    return get_aval(x).ndim


def moveaxis(x, src, dst):
    if src == dst:
        return x
    perm = [i for i in range(_ndim(x)) if i != src]
    perm.insert(dst, src)
    return lax.transpose(x, perm)


def bdim_to_front(x, d, size):
    """x with its batch axis first; an unmapped x is broadcast along a new first axis."""
    if d is not_mapped:
        return lax.broadcast(x, (size,))
    return moveaxis(x, d, 0)


def matchaxis(x, src, dst, size):
    """x with its batch axis at dst (None: it must be unmapped), broadcasting if needed."""
    if dst is not_mapped:
        if src is not_mapped:
            return x
        raise ValueError("vmap: an output mapped over the batch has out_axes None")
    return moveaxis(bdim_to_front(x, src, size), 0, dst)


def _phys(axis, d):
    """The physical axis of logical `axis` of a value whose batch axis is at d."""
    return axis + (axis >= d)


# ---------------------------------------------------------------- evaluating jaxprs batched
def eval_batched(jaxpr, axis_size, vals, dims):
    """Run a (const-free) jaxpr on batched values under a fresh BatchTrace."""
    with core.new_main(BatchTrace, axis_size) as main:
        trace = BatchTrace(main)
        args = [v if d is not_mapped else BatchTracer(trace, v, d) for v, d in zip(vals, dims)]
        outs = [full_raise(trace, o) for o in eval_jaxpr(jaxpr, [], args)]
        return [o.val for o in outs], [o.bdim for o in outs]


def _batched_aval(aval, mapped, size):
    return ShapedArray((size,) + aval.shape, aval.dtype) if mapped else aval.strip_weak_type()


def out_mapped(jaxpr, axis_size, in_mapped):
    """Which outputs of `jaxpr` are batched when the inputs flagged in `in_mapped` are."""
    box = []

    def f(*args):
        outs, dims = eval_batched(jaxpr, axis_size, args, [0 if m else None for m in in_mapped])
        box.append([d is not not_mapped for d in dims])
        return outs
    trace_to_jaxpr(f, [_batched_aval(v.aval, m, axis_size)
                       for v, m in zip(jaxpr.invars, in_mapped)])
    return box[0]


def run_forced(jaxpr, axis_size, vals, in_mapped, force):
    """Evaluate jaxpr on values batched at 0 (where in_mapped); outputs flagged in `force`
    come out batched at 0, the others must be unmapped."""
    outs, dims = eval_batched(jaxpr, axis_size, vals, [0 if m else None for m in in_mapped])
    return [_force(o, d, f, v.aval, axis_size)
            for o, d, f, v in zip(outs, dims, force, jaxpr.outvars)]


def _force(x, d, mapped, aval, size):
    if not isinstance(x, Tracer) and not hasattr(x, "_polyjit_aval"):
        x = np.asarray(x, aval.dtype)     # a literal output
    return matchaxis(x, d, 0 if mapped else None, size)


# ---------------------------------------------------------------- vmap
def _leaf_or_none(x):
    return x is None


def _prefix_counts(prefix, full, what):
    """For each leaf of the `prefix` treedef, how many leaves of `full` it covers."""
    if prefix.node_type is None:
        return [full.num_leaves]
    if (prefix.node_type is not full.node_type or prefix.node_data != full.node_data
            or len(prefix.children) != len(full.children)):
        raise ValueError(f"vmap {what} must be a tree prefix of the values it describes: "
                         f"got {prefix} for {full}")
    return [n for p, f in zip(prefix.children, full.children) for n in _prefix_counts(p, f, what)]


def flatten_axes(axes, tree, what):
    """Broadcast an axes prefix (ints/None, nested like the values) to one axis per leaf."""
    leaves, prefix = tree_flatten(axes, is_leaf=_leaf_or_none)
    for a in leaves:
        if a is not None and not isinstance(a, (int, np.integer)):
            raise TypeError(f"vmap {what} entries must be ints or None, got {a!r}")
    counts = _prefix_counts(prefix, tree, what)
    return [None if a is None else int(a) for a, n in zip(leaves, counts) for _ in range(n)]


def _arg_paths(fun, args, kwargs):
    try:
        names = list(inspect.signature(fun).parameters)
    except (TypeError, ValueError):
        names = []
    paths = []
    for i, a in enumerate(args):
        base = names[i] if i < len(names) and not names[i].startswith("*") else f"args[{i}]"
        paths += [base + p for p, _ in tree_flatten_with_path(a)[0]]
    for k in sorted(kwargs):
        paths += [k + p for p, _ in tree_flatten_with_path(kwargs[k])[0]]
    return paths


def _axis_size(paths, leaves, axes, axis_size):
    sizes = {}
    for path, x, ax in zip(paths, leaves, axes):
        if ax is None:
            continue
        shape = get_aval(x).shape
        if not -len(shape) <= ax < len(shape):
            raise ValueError(f"vmap was asked to map axis {ax} of argument {path} of shape "
                             f"{shape}, which has only {len(shape)} axes")
        sizes[path] = (shape[ax], shape, ax)
    found = {n for n, _, _ in sizes.values()}
    if axis_size is not None:
        found.add(int(axis_size))
    if not found:
        raise ValueError("vmap needs at least one argument mapped by in_axes (not None), "
                         "or axis_size= to say how large the batch is")
    if len(found) > 1:
        lines = [f"  argument {p} of shape {s} mapped over axis {a} has size {n}"
                 for p, (n, s, a) in sizes.items()]
        if axis_size is not None:
            lines.append(f"  axis_size={axis_size}")
        raise ValueError("vmap got inconsistent sizes for the mapped axes "
                         f"({sorted(found)}):\n" + "\n".join(lines))
    return found.pop()


def vmap(fun, in_axes=0, out_axes=0, axis_size=None):
    """Map `fun` over an axis of its arguments: in_axes/out_axes are ints, None, or pytree
    prefixes of the arguments (a tuple with one entry per positional argument) and outputs.
    Keyword arguments are mapped over their axis 0, as in JAX."""
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    if not (in_axes is None or isinstance(in_axes, (int, tuple))):
        raise TypeError("vmap in_axes must be an int, None, or a tuple with one entry per "
                        f"positional argument, got {in_axes!r}")

    @functools.wraps(fun)
    def batched(*args, **kwargs):
        leaves, tree = tree_flatten((args, kwargs))
        spec = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        if len(spec) != len(args):
            raise ValueError(f"vmap in_axes has {len(spec)} entries but the function got "
                             f"{len(args)} positional arguments")
        axes = flatten_axes((spec, 0), tree, "in_axes")
        size = _axis_size(_arg_paths(fun, args, kwargs), leaves, axes, axis_size)
        with core.new_main(BatchTrace, size) as main:
            trace = BatchTrace(main)
            ins = [x if a is None else BatchTracer(trace, x, a % _ndim(x))
                   for x, a in zip(leaves, axes)]
            a, kw = tree_unflatten(tree, ins)
            out = fun(*a, **kw)
            out_leaves, out_tree = tree_flatten(out)
            outs = [full_raise(trace, o) for o in out_leaves]
        oaxes = flatten_axes(out_axes, out_tree, "out_axes")
        res = []
        for o, a in zip(outs, oaxes):
            nd = o.aval.ndim + 1
            if a is not None and not -nd <= a < nd:
                raise ValueError(f"vmap out_axes {a} is out of range for an output of rank {nd}")
            res.append(matchaxis(o.val, o.bdim, None if a is None else a % nd, size))
        return tree_unflatten(out_tree, res)
    return batched


# ---------------------------------------------------------------- rules: elementwise
def _logical_shape(v, d):
    s = get_aval(v).shape
    return s if d is not_mapped else s[:d] + s[d + 1:]


def _elementwise_operands(size, vals, dims):
    """Operands batched along one common axis, and that axis. Unmapped rank-0 operands stay
    scalars (elementwise primitives accept them); other operands are broadcast to full shape."""
    logical = [_logical_shape(v, d) for v, d in zip(vals, dims)]
    out_shape = next((s for s in logical if s), ())
    d = next((d for d, s in zip(dims, logical) if d is not not_mapped and s == out_shape), 0)
    full = _insert(out_shape, d, size)
    res = []
    for v, vd, s in zip(vals, dims, logical):
        if vd is not_mapped:
            res.append(v if s == () else lax.broadcast_in_dim(
                v, full, tuple(i for i in range(len(full)) if i != d)))
        elif s == () and out_shape:
            res.append(lax.broadcast_in_dim(v, full, (d,)))
        else:
            res.append(moveaxis(v, vd, d))
    return res, d


def _as_list(prim, out):
    return out if prim.multiple_results else [out]


def elementwise_rule(prim):
    def rule(size, vals, dims, **params):
        vals, d = _elementwise_operands(size, vals, dims)
        outs = _as_list(prim, bind(prim, *vals, **params))
        return outs, [d] * len(outs)
    return rule


for _p in [*P.UNARY.values(), *P.BINARY.values(), *P.COMPARE.values(), P.integer_pow_p,
           P.select_n_p, P.convert_element_type_p, P.bitcast_convert_type_p, P.threefry2x32_p]:
    batching_rules[_p] = elementwise_rule(_p)


# ---------------------------------------------------------------- rules: shapes
def _insert(seq, i, v):
    out = list(seq)
    out.insert(i, v)
    return tuple(out)


def _broadcast_in_dim_rule(size, vals, dims, *, shape, broadcast_dimensions):
    x = moveaxis(vals[0], dims[0], 0)
    return [bind(P.broadcast_in_dim_p, x, shape=(size,) + tuple(shape),
                 broadcast_dimensions=(0,) + tuple(b + 1 for b in broadcast_dimensions))], [0]


def _reshape_rule(size, vals, dims, *, new_sizes):
    x = moveaxis(vals[0], dims[0], 0)
    return [bind(P.reshape_p, x, new_sizes=(size,) + tuple(new_sizes))], [0]


def _transpose_rule(size, vals, dims, *, permutation):
    d = dims[0]
    perm = (d,) + tuple(_phys(p, d) for p in permutation)
    return [bind(P.transpose_p, vals[0], permutation=perm)], [0]


def _rev_rule(size, vals, dims, *, dimensions):
    d = dims[0]
    return [bind(P.rev_p, vals[0], dimensions=tuple(_phys(a, d) for a in dimensions))], [d]


def _slice_rule(size, vals, dims, *, start_indices, limit_indices, strides):
    d = dims[0]
    return [bind(P.slice_p, vals[0], start_indices=_insert(start_indices, d, 0),
                 limit_indices=_insert(limit_indices, d, size),
                 strides=_insert(strides, d, 1))], [d]


def _pad_rule(size, vals, dims, *, padding_config):
    (x, pv), (dx, dp) = vals, dims
    if dp is not_mapped:
        return [bind(P.pad_p, x, pv, padding_config=_insert(padding_config, dx, (0, 0, 0)))], [dx]
    # a batched padding value: pad with zeros, then select the value where padding went
    x = bdim_to_front(x, dx, size)
    cfg = ((0, 0, 0),) + tuple(padding_config)
    aval = get_aval(x)
    padded = bind(P.pad_p, x, np.zeros((), aval.dtype), padding_config=cfg)
    mask = bind(P.pad_p, lax.full(aval.shape, True, dtypes.bool_), np.bool_(False),
                padding_config=cfg)
    fill = lax.broadcast_in_dim(pv, get_aval(padded).shape, (0,))
    return [lax.select(mask, padded, fill)], [0]


def _concatenate_rule(size, vals, dims, *, dimension):
    xs = [bdim_to_front(v, d, size) for v, d in zip(vals, dims)]
    return [bind(P.concatenate_p, *xs, dimension=dimension + 1)], [0]


for _p, _r in [(P.broadcast_in_dim_p, _broadcast_in_dim_rule), (P.reshape_p, _reshape_rule),
               (P.transpose_p, _transpose_rule), (P.rev_p, _rev_rule), (P.slice_p, _slice_rule),
               (P.pad_p, _pad_rule), (P.concatenate_p, _concatenate_rule)]:
    batching_rules[_p] = _r


# ---------------------------------------------------------------- rules: indexing
def _window_indices(size, shape, starts, dims, sizes):
    """Gather indices (size, *sizes, rank) of each example's window at its clamped start."""
    full = (size,) + tuple(sizes) + (1,)
    cols = []
    for k, (s, d, n, z) in enumerate(zip(starts, dims, shape, sizes)):
        s = lax.convert_element_type(s, dtypes.int32)
        s = lax.max(lax.min(s, np.int32(n - z)), np.int32(0))   # dynamic_slice clamps starts
        s = lax.broadcast_in_dim(s, full, () if d is not_mapped else (0,))
        cols.append(lax.add(s, lax.iota(dtypes.int32, full, k + 1)))
    return lax.concatenate(cols, len(full) - 1)


def _dynamic_slice_rule(size, vals, dims, *, slice_sizes):
    (x, *starts), (dx, *ds) = vals, dims
    if all(d is not_mapped for d in ds):
        return [bind(P.dynamic_slice_p, x, *_insert(starts, dx, np.int32(0)),
                     slice_sizes=_insert(slice_sizes, dx, size))], [dx]
    x = bdim_to_front(x, dx, size)
    idx = _window_indices(size, get_aval(x).shape[1:], starts, ds, slice_sizes)
    return [lax.gather(x, idx, batch_dims=1)], [0]


def _dynamic_update_slice_rule(size, vals, dims):
    (x, upd, *starts), (dx, du, *ds) = vals, dims
    x, upd = bdim_to_front(x, dx, size), bdim_to_front(upd, du, size)
    if all(d is not_mapped for d in ds):
        return [bind(P.dynamic_update_slice_p, x, upd, np.int32(0), *starts)], [0]
    aval = get_aval(x)
    idx = _window_indices(size, aval.shape[1:], starts, ds, get_aval(upd).shape[1:])
    return [lax.scatter(x, idx, upd, batch_dims=1)], [0]


def _gather_rule(size, vals, dims, *, batch_dims=0):
    (x, idx), (dx, di) = vals, dims
    if dx is not_mapped and batch_dims == 0:
        # batched indices alone: their leading axes lead the output too
        return [bind(P.gather_p, x, moveaxis(idx, di, 0), batch_dims=0)], [0]
    x, idx = bdim_to_front(x, dx, size), bdim_to_front(idx, di, size)
    return [bind(P.gather_p, x, idx, batch_dims=batch_dims + 1)], [0]


def _scatter_rule(prim):
    def rule(size, vals, dims, *, batch_dims=0):
        x, idx, upd = [bdim_to_front(v, d, size) for v, d in zip(vals, dims)]
        return [bind(prim, x, idx, upd, batch_dims=batch_dims + 1)], [0]
    return rule


batching_rules[P.dynamic_slice_p] = _dynamic_slice_rule
batching_rules[P.dynamic_update_slice_p] = _dynamic_update_slice_rule
batching_rules[P.gather_p] = _gather_rule
for _p in P.SCATTERS.values():
    batching_rules[_p] = _scatter_rule(_p)


# ---------------------------------------------------------------- rules: reductions, scans, sorting
def _reduce_rule(prim):
    def rule(size, vals, dims, *, axes):
        d = dims[0]
        axes = tuple(_phys(a, d) for a in axes)
        return [bind(prim, vals[0], axes=axes)], [d - sum(a < d for a in axes)]
    return rule


def _arg_rule(prim):
    def rule(size, vals, dims, *, axis, index_dtype):
        d = dims[0]
        axis = _phys(axis, d)
        return [bind(prim, vals[0], axis=axis, index_dtype=index_dtype)], [d - (axis < d)]
    return rule


def _cumulative_rule(prim):
    def rule(size, vals, dims, *, axis, reverse=False):
        d = dims[0]
        return [bind(prim, vals[0], axis=_phys(axis, d), reverse=reverse)], [d]
    return rule


def _reduce_window_rule(prim):
    def rule(size, vals, dims, *, window_dimensions, window_strides, padding, base_dilation=None,
             window_dilation=None):
        (x,), (d,) = vals, dims
        nd = len(window_dimensions)
        return [bind(prim, x, window_dimensions=_insert(window_dimensions, d, 1),
                     window_strides=_insert(window_strides, d, 1),
                     padding=_insert(padding, d, (0, 0)),
                     base_dilation=_insert(base_dilation or (1,) * nd, d, 1),
                     window_dilation=_insert(window_dilation or (1,) * nd, d, 1))], [d]
    return rule


def _sort_rule(size, vals, dims, *, dimension, is_stable=True, num_keys=1):
    xs = [bdim_to_front(v, d, size) for v, d in zip(vals, dims)]
    outs = bind(P.sort_p, *xs, dimension=dimension + 1, is_stable=is_stable, num_keys=num_keys)
    return outs, [0] * len(outs)


def _top_k_rule(size, vals, dims, *, k):
    (x,), (d,) = vals, dims
    if d == _ndim(x) - 1:       # top_k works on the last axis
        x, d = moveaxis(x, d, 0), 0
    return bind(P.top_k_p, x, k=k), [d, d]


for _p in P.REDUCES.values():
    batching_rules[_p] = _reduce_rule(_p)
for _p in (P.argmax_p, P.argmin_p):
    batching_rules[_p] = _arg_rule(_p)
for _p in P.CUMULATIVES.values():
    batching_rules[_p] = _cumulative_rule(_p)
for _p in P.REDUCE_WINDOWS.values():
    batching_rules[_p] = _reduce_window_rule(_p)
batching_rules[P.sort_p] = _sort_rule
batching_rules[P.top_k_p] = _top_k_rule


# ---------------------------------------------------------------- rules: contractions
def _dot_general_rule(size, vals, dims, *, dimension_numbers, preferred_element_type=None):
    (lhs, rhs), (dl, dr) = vals, dims
    (lc, rc), (lb, rb) = dimension_numbers
    shift = lambda axes, d: tuple(_phys(a, d) for a in axes)
    if dl is not not_mapped and dr is not not_mapped:
        # the batch becomes a new leading batch-dimension pair
        lhs, rhs = moveaxis(lhs, dl, 0), moveaxis(rhs, dr, 0)
        dn = ((shift(lc, 0), shift(rc, 0)), ((0,) + shift(lb, 0), (0,) + shift(rb, 0)))
        out_d = 0
    elif dl is not not_mapped:
        # one side batched: its batch axis is a free axis, placed after the batch dims
        dn = ((shift(lc, dl), rc), (shift(lb, dl), rb))
        free = [i for i in range(_ndim(lhs)) if i not in dn[0][0] + dn[1][0]]
        out_d = len(lb) + free.index(dl)
    else:
        dn = ((lc, shift(rc, dr)), (lb, shift(rb, dr)))
        free = [i for i in range(_ndim(rhs)) if i not in dn[0][1] + dn[1][1]]
        out_d = _ndim(lhs) - len(lc) + free.index(dr)
    return [bind(P.dot_general_p, lhs, rhs, dimension_numbers=dn,
                 preferred_element_type=preferred_element_type)], [out_d]


def _reshape_axis_into(src, dst, x):
    """Merge axis src into axis dst (of x without src), src the major part."""
    perm = [i for i in range(_ndim(x)) if i != src]
    perm.insert(dst, src)
    shape = [get_aval(x).shape[i] for i in perm]
    shape[dst:dst + 2] = [shape[dst] * shape[dst + 1]]
    return lax.reshape(lax.transpose(x, perm), shape)


def _reshape_axis_out_of(src, size1, x):
    shape = list(get_aval(x).shape)
    shape[src:src + 1] = [size1, shape[src] // size1]
    return lax.reshape(x, shape)


def _conv_rule(size, vals, dims, **params):
    """Fold the batch into N (input batched), into O (kernel batched), or into feature or
    batch groups (both): layouts are (N, C, sp...) x (O, I, sp...) -> (N, O, sp...)."""
    (lhs, rhs), (dl, dr) = vals, dims
    g, bg = params["feature_group_count"], params["batch_group_count"]
    conv = lambda l, r, **kw: bind(P.conv_general_dilated_p, l, r, **{**params, **kw})
    if dl is not not_mapped and dr is not not_mapped:
        rhs = _reshape_axis_into(dr, 0, rhs)
        if bg > 1:
            out = conv(_reshape_axis_into(dl, 0, lhs), rhs, batch_group_count=bg * size)
        else:
            out = conv(_reshape_axis_into(dl, 1, lhs), rhs, feature_group_count=g * size)
        return [_reshape_axis_out_of(1, size, out)], [1]
    if dl is not not_mapped:
        if bg == 1:
            out = conv(_reshape_axis_into(dl, 0, lhs), rhs)
        else:   # batch groups stay outermost in N: split them out, fold the batch inside
            new = _reshape_axis_out_of(int(dl <= 0), bg, lhs)
            new = _reshape_axis_into(dl + int(0 < dl), 1, new)
            out = conv(_reshape_axis_into(0, 0, new), rhs)
        return [_reshape_axis_out_of(0, size, out)], [0]
    if g == 1 and bg == 1:
        out = conv(lhs, _reshape_axis_into(dr, 0, rhs))
        return [_reshape_axis_out_of(1, size, out)], [1]
    # groups stay outermost in O: split them out, fold the batch inside, regroup the output
    groups = g if g > 1 else bg
    new = _reshape_axis_out_of(int(dr <= 0), groups, rhs)
    new = _reshape_axis_into(dr + int(0 < dr), 1, new)
    out = conv(lhs, _reshape_axis_into(0, 0, new))
    out = _reshape_axis_out_of(1, groups, out)
    out = _reshape_axis_out_of(2, size, out)
    return [_reshape_axis_into(1, 2, out)], [1]


batching_rules[P.dot_general_p] = _dot_general_rule
batching_rules[P.conv_general_dilated_p] = _conv_rule


# ---------------------------------------------------------------- rules: control flow
def _to_front(size, vals, dims):
    return [v if d is not_mapped else moveaxis(v, d, 0) for v, d in zip(vals, dims)]


def _mapped(dims):
    return [d is not not_mapped for d in dims]


def _carry_fixpoint(jaxpr, size, consts_m, carry_m, xs_m=()):
    """Carries batched in or made batched by the body: iterate to a fixed point."""
    while True:
        outs = out_mapped(jaxpr, size, consts_m + carry_m + list(xs_m))[:len(carry_m)]
        new = [a or b for a, b in zip(carry_m, outs)]
        if new == carry_m:
            return carry_m
        carry_m = new


def _cond_rule(size, vals, dims, *, branches):
    (index, *ops), (di, *dops) = vals, dims
    in_m, ops = _mapped(dops), _to_front(size, ops, dops)
    if di is not_mapped:
        force = [any(col) for col in zip(*[out_mapped(b, size, in_m) for b in branches])]
        fns = [functools.partial(lambda b, *xs: run_forced(b, size, xs, in_m, force), b)
               for b in branches]
        return list(lax.switch(index, fns, *ops)), [0 if f else None for f in force]
    # a batched index: run every branch and pick each example's result
    outs = [run_forced(b, size, ops, in_m, [True] * len(b.outvars)) for b in branches]
    index = lax.max(lax.min(moveaxis(index, di, 0), np.int32(len(branches) - 1)), np.int32(0))
    res = [lax.select_n(lax.broadcast_in_dim(index, get_aval(o[0]).shape, (0,)), *o)
           for o in zip(*outs)]
    return res, [0] * len(res)


def _while_rule(size, vals, dims, *, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    m, vals = _mapped(dims), _to_front(size, vals, dims)
    nc, nb = cond_nconsts, cond_nconsts + body_nconsts
    cc, bc, init = vals[:nc], vals[nc:nb], vals[nb:]
    ccm, bcm = m[:nc], m[nc:nb]
    carry_m = _carry_fixpoint(body_jaxpr, size, bcm, m[nb:])
    pred_m = out_mapped(cond_jaxpr, size, ccm + carry_m)[0]
    if pred_m:      # examples finish at different steps: every carry becomes batched
        carry_m = [True] * len(carry_m)
    init = [bdim_to_front(v, 0 if mv else None, size) if cm else v
            for v, mv, cm in zip(init, m[nb:], carry_m)]

    def pred(c):
        return run_forced(cond_jaxpr, size, cc + c, ccm + carry_m, [pred_m])[0]

    def body(c):
        new = run_forced(body_jaxpr, size, bc + c, bcm + carry_m, carry_m)
        if not pred_m:
            return new
        p = pred(c)     # finished examples keep their carry
        return [lax.select(lax.broadcast_in_dim(p, get_aval(n).shape, (0,)), n, o)
                for n, o in zip(new, c)]
    cond_fun = (lambda c: lax.reduce_or(pred(c), (0,))) if pred_m else pred
    outs = lax.while_loop(cond_fun, body, init)
    return list(outs), [0 if cm else None for cm in carry_m]


def _scan_rule(size, vals, dims, *, jaxpr, length, reverse, num_consts, num_carry):
    m = _mapped(dims)
    nb = num_consts + num_carry
    consts = _to_front(size, vals[:num_consts], dims[:num_consts])
    xs = [v if d is not_mapped else moveaxis(v, d, 1) for v, d in zip(vals[nb:], dims[nb:])]
    cm, xm = m[:num_consts], m[nb:]
    carry_m = _carry_fixpoint(jaxpr, size, cm, m[num_consts:nb], xm)
    ys_m = out_mapped(jaxpr, size, cm + carry_m + xm)[num_carry:]
    init = [bdim_to_front(v, d, size) if c else v
            for v, d, c in zip(vals[num_consts:nb], dims[num_consts:nb], carry_m)]

    def body(c, x):
        outs = run_forced(jaxpr, size, consts + c + x, cm + carry_m + xm, carry_m + ys_m)
        return outs[:num_carry], outs[num_carry:]
    carry, ys = lax.scan(body, init, xs, length=length, reverse=reverse)
    return carry + ys, [0 if c else None for c in carry_m] + [1 if y else None for y in ys_m]


batching_rules[P.cond_p] = _cond_rule
batching_rules[P.while_p] = _while_rule
batching_rules[P.scan_p] = _scan_rule
