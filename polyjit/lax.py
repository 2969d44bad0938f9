"""lax: one thin function per primitive, plus structured control flow.

These take arrays of matching dtypes (Python scalars adopt the other operand's dtype)
and do no broadcasting beyond scalars; polyjit.numpy builds numpy semantics on top.
"""
from __future__ import annotations

import builtins  # this module defines lax.max/min/slice/map

import numpy as np

from .tracer import dtypes, primitives as P
from .tracer.core import ShapedArray, Tracer, bind, get_aval
from .tracer.staging import trace_to_jaxpr
from .tracer.core import Jaxpr
from .tracer.tree_util import tree_flatten, tree_unflatten


def _is_python_scalar(x):
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def convert_element_type(x, new_dtype, weak_type=False):
    new = dtypes.canonicalize(new_dtype)
    if _is_python_scalar(x):
        if not weak_type:
            return np.asarray(x, dtype=new)[()]
        return float(x) if dtypes.is_float(new) else int(x) if dtypes.is_int(new) else bool(x)
    aval = get_aval(x)
    if aval.dtype == new and aval.weak_type == weak_type:
        return x
    return bind(P.convert_element_type_p, x, new_dtype=new, weak_type=weak_type)


def _match_weak(*xs):
    """Give weak operands (Python scalars, weak arrays) the dtype of the strong ones."""
    avals = [get_aval(x) for x in xs]
    strong = [a.dtype for a in avals if not a.weak_type]
    if not strong:
        dt, _ = dtypes.result_type(*[(a.dtype, True) for a in avals])
        return [x if a.dtype == dt else convert_element_type(x, dt, weak_type=True)
                for x, a in zip(xs, avals)]
    dt = strong[0]
    return [convert_element_type(x, dt) if a.weak_type else x for x, a in zip(xs, avals)]


def _unary(prim):
    def op(x):
        return bind(prim, x)
    op.__name__ = prim.name
    return op


def _nary(prim):
    def op(*xs):
        return bind(prim, *_match_weak(*xs))
    op.__name__ = prim.name
    return op


for _name, _p in P.UNARY.items():
    globals()[_name if _name != "not" else "bitwise_not"] = _unary(_p)
for _name, _p in {**P.BINARY, **P.COMPARE}.items():
    globals()[{"and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor"}.get(_name, _name)] = _nary(_p)
threefry2x32 = _nary(P.threefry2x32_p)


def integer_pow(x, y: int):
    return bind(P.integer_pow_p, x, y=int(y))


def select_n(which, *cases):
    return bind(P.select_n_p, which, *_match_weak(*cases))


def select(pred, on_true, on_false):
    return select_n(pred, on_false, on_true)


def bitcast_convert_type(x, new_dtype):
    return bind(P.bitcast_convert_type_p, x, new_dtype=dtypes.canonicalize(new_dtype))


def iota(dtype, size_or_shape, dimension=0):
    shape = (size_or_shape,) if isinstance(size_or_shape, int) else tuple(size_or_shape)
    return bind(P.iota_p, dtype=dtypes.canonicalize(dtype), shape=shape, dimension=dimension)


def broadcast_in_dim(x, shape, broadcast_dimensions):
    shape, bd = tuple(int(d) for d in shape), tuple(int(d) for d in broadcast_dimensions)
    if get_aval(x).shape == shape and bd == tuple(range(len(shape))):
        return x
    return bind(P.broadcast_in_dim_p, x, shape=shape, broadcast_dimensions=bd)


def broadcast(x, sizes):
    nd = get_aval(x).ndim
    return broadcast_in_dim(x, tuple(sizes) + get_aval(x).shape,
                            tuple(range(len(sizes), len(sizes) + nd)))


def full(shape, fill_value, dtype=None):
    dt = dtypes.canonicalize(dtype) if dtype is not None else get_aval(fill_value).dtype
    v = convert_element_type(fill_value, dt, weak_type=dtype is None and get_aval(fill_value).weak_type)
    if _is_python_scalar(v):
        v = np.asarray(v, dt)[()] if dtype is not None else v
    return broadcast(v, tuple(shape))


def reshape(x, new_sizes):
    new_sizes = tuple(int(d) for d in new_sizes)
    if get_aval(x).shape == new_sizes:
        return x
    return bind(P.reshape_p, x, new_sizes=new_sizes)


def transpose(x, permutation):
    permutation = tuple(int(p) for p in permutation)
    if permutation == tuple(range(len(permutation))):
        return x
    return bind(P.transpose_p, x, permutation=permutation)


def rev(x, dimensions):
    return bind(P.rev_p, x, dimensions=tuple(dimensions)) if dimensions else x


def slice(x, start_indices, limit_indices, strides=None):  # noqa: A001 (lax name)
    strides = tuple(strides) if strides is not None else (1,) * len(start_indices)
    return bind(P.slice_p, x, start_indices=tuple(int(s) for s in start_indices),
                limit_indices=tuple(int(s) for s in limit_indices),
                strides=tuple(int(s) for s in strides))


def slice_in_dim(x, start, limit, stride=1, axis=0):
    shape = get_aval(x).shape
    st, lim = [0] * len(shape), list(shape)
    strides = [1] * len(shape)
    st[axis], lim[axis], strides[axis] = start, limit, stride
    return slice(x, st, lim, strides)


def index_in_dim(x, index, axis=0, keepdims=True):
    out = slice_in_dim(x, index, index + 1, 1, axis)
    if keepdims:
        return out
    shape = get_aval(out).shape
    return reshape(out, shape[:axis] + shape[axis + 1:])


def dynamic_slice(x, start_indices, slice_sizes):
    starts = [convert_element_type(s, dtypes.int32) if _is_python_scalar(s) else s
              for s in start_indices]
    return bind(P.dynamic_slice_p, x, *starts, slice_sizes=tuple(int(s) for s in slice_sizes))


def dynamic_update_slice(x, update, start_indices):
    starts = [convert_element_type(s, dtypes.int32) if _is_python_scalar(s) else s
              for s in start_indices]
    update = convert_element_type(update, get_aval(x).dtype)
    return bind(P.dynamic_update_slice_p, x, update, *starts)


def dynamic_index_in_dim(x, index, axis=0, keepdims=True):
    shape = get_aval(x).shape
    starts = [0] * len(shape)
    starts[axis] = index
    sizes = list(shape)
    sizes[axis] = 1
    out = dynamic_slice(x, starts, sizes)
    return out if keepdims else reshape(out, shape[:axis] + shape[axis + 1:])


def pad(x, padding_value, padding_config):
    x, padding_value = _match_weak(x, padding_value)
    return bind(P.pad_p, x, padding_value,
                padding_config=tuple((int(lo), int(hi), int(i)) for lo, hi, i in padding_config))


def concatenate(operands, dimension):
    if len(operands) == 1:
        return operands[0]
    return bind(P.concatenate_p, *_match_weak(*operands), dimension=int(dimension))


def gather(operand, indices, batch_dims=0):
    return bind(P.gather_p, operand, indices, batch_dims=batch_dims)


def _scatter(prim):
    def op(operand, indices, updates, batch_dims=0):
        updates = convert_element_type(updates, get_aval(operand).dtype)
        return bind(prim, operand, indices, updates, batch_dims=batch_dims)
    op.__name__ = prim.name
    return op


for _name, _p in P.SCATTERS.items():
    globals()[_name] = _scatter(_p)


def _reduce(prim):
    def op(x, axes):
        return bind(prim, x, axes=tuple(sorted(int(a) for a in axes)))
    op.__name__ = prim.name
    return op


for _name, _p in P.REDUCES.items():
    globals()[_name] = _reduce(_p)


def argmax(x, axis, index_dtype=dtypes.int32):
    return bind(P.argmax_p, x, axis=int(axis), index_dtype=dtypes.canonicalize(index_dtype))


def argmin(x, axis, index_dtype=dtypes.int32):
    return bind(P.argmin_p, x, axis=int(axis), index_dtype=dtypes.canonicalize(index_dtype))


def _cumulative(prim):
    def op(x, axis=0, reverse=False):
        return bind(prim, x, axis=int(axis), reverse=bool(reverse))
    op.__name__ = prim.name
    return op


for _name, _p in P.CUMULATIVES.items():
    globals()[_name] = _cumulative(_p)


def dot_general(lhs, rhs, dimension_numbers, preferred_element_type=None):
    (lc, rc), (lb, rb) = dimension_numbers
    dn = ((tuple(lc), tuple(rc)), (tuple(lb), tuple(rb)))
    lhs, rhs = _match_weak(lhs, rhs)
    pet = dtypes.canonicalize(preferred_element_type) if preferred_element_type is not None else None
    return bind(P.dot_general_p, lhs, rhs, dimension_numbers=dn, preferred_element_type=pet)


def dot(lhs, rhs, preferred_element_type=None):
    """Matrix/vector product contracting lhs's last axis with rhs's first."""
    nl = get_aval(lhs).ndim
    return dot_general(lhs, rhs, (((nl - 1,), (0,)), ((), ())), preferred_element_type)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         feature_group_count=1, batch_group_count=1, preferred_element_type=None):
    """N-d convolution, layout (N, C, spatial...) x (O, I, spatial...) -> (N, O, spatial...).

    `padding` is a sequence of (lo, hi) pairs or "VALID" / "SAME" (as in lax)."""
    nsp = get_aval(lhs).ndim - 2
    lhs_dilation = tuple(lhs_dilation or (1,) * nsp)
    rhs_dilation = tuple(rhs_dilation or (1,) * nsp)
    window_strides = tuple(window_strides)
    if isinstance(padding, str):
        padding = padtype_to_pads(get_aval(lhs).shape[2:], [
            (k - 1) * d + 1 for k, d in zip(get_aval(rhs).shape[2:], rhs_dilation)],
            window_strides, padding)
    pet = dtypes.canonicalize(preferred_element_type) if preferred_element_type is not None else None
    return bind(P.conv_general_dilated_p, lhs, rhs, window_strides=window_strides,
                padding=tuple((int(lo), int(hi)) for lo, hi in padding),
                lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                feature_group_count=int(feature_group_count),
                batch_group_count=int(batch_group_count), preferred_element_type=pet)


def padtype_to_pads(in_shape, window, strides, padding):
    if padding.upper() == "VALID":
        return [(0, 0)] * len(in_shape)
    if padding.upper() in ("SAME", "SAME_UPPER", "SAME_LOWER"):
        pads = []
        for d, k, s in zip(in_shape, window, strides):
            out = -(-d // s)
            total = builtins.max((out - 1) * s + k - d, 0)
            lo = total // 2 if padding.upper() != "SAME_LOWER" else total - total // 2
            pads.append((lo, total - lo))
        return pads
    raise ValueError(f"unknown padding {padding!r}: use 'VALID', 'SAME' or (lo, hi) pairs")


def _reduce_window(prim):
    def op(x, window_dimensions, window_strides, padding, base_dilation=None, window_dilation=None):
        nd = get_aval(x).ndim
        if isinstance(padding, str):
            padding = padtype_to_pads(get_aval(x).shape, window_dimensions, window_strides, padding)
        return bind(prim, x, window_dimensions=tuple(window_dimensions),
                    window_strides=tuple(window_strides),
                    padding=tuple((int(lo), int(hi)) for lo, hi in padding),
                    base_dilation=tuple(base_dilation or (1,) * nd),
                    window_dilation=tuple(window_dilation or (1,) * nd))
    op.__name__ = prim.name
    return op


for _name, _p in P.REDUCE_WINDOWS.items():
    globals()[_name] = _reduce_window(_p)


def sort(operands, dimension=-1, is_stable=True, num_keys=1):
    single = not isinstance(operands, (list, tuple))
    ops = [operands] if single else list(operands)
    dimension = dimension % get_aval(ops[0]).ndim
    out = bind(P.sort_p, *ops, dimension=dimension, is_stable=is_stable, num_keys=num_keys)
    return out[0] if single else out


def top_k(x, k):
    return tuple(bind(P.top_k_p, x, k=int(k)))


def stop_gradient(x):
    from .autodiff import stop_gradient as sg
    return sg(x)


# ---------------------------------------------------------------- control flow
def _trace_fun(fun, in_tree, in_avals, what):
    """Trace fun over pytree args into (closure-converted Jaxpr, consts, out_tree)."""
    out_tree_box = []

    def flat_fun(*flat):
        out = fun(*tree_unflatten(in_tree, flat))
        leaves, tree = tree_flatten(out)
        out_tree_box.append(tree)
        return leaves
    try:
        closed = trace_to_jaxpr(flat_fun, in_avals)
    except TypeError as e:
        raise TypeError(f"{what}: {e}") from e
    j = closed.jaxpr
    return (Jaxpr([], list(j.constvars) + list(j.invars), j.eqns, j.outvars),
            closed.consts, out_tree_box[0])


def _with_unused_consts(jaxpr: Jaxpr, nconsts, before, after) -> Jaxpr:
    """The same jaxpr with ignored inputs of the given avals around its own consts."""
    from .tracer.core import Var
    consts, ops = jaxpr.invars[:nconsts], jaxpr.invars[nconsts:]
    return Jaxpr([], [Var(a) for a in before] + consts + [Var(a) for a in after] + ops,
                 jaxpr.eqns, jaxpr.outvars)


def _strong_avals(leaves):
    return [get_aval(x).strip_weak_type() for x in leaves]


def _cast_leaves(leaves, avals):
    return [convert_element_type(x, a.dtype) for x, a in zip(leaves, avals)]


def switch(index, branches, *operands):
    """Apply branches[index](*operands); index is clamped into range."""
    return _switch(index, branches, operands, clamp=True)


def _switch(index, branches, operands, clamp):
    branches = list(branches)
    if not branches:
        raise ValueError("switch needs at least one branch")
    leaves, in_tree = tree_flatten(operands)
    avals = _strong_avals(leaves)
    leaves = _cast_leaves(leaves, avals)
    traced = [_trace_fun(b, in_tree, avals, f"branch {i}") for i, b in enumerate(branches)]
    out_trees = [t[2] for t in traced]
    if any(t != out_trees[0] for t in out_trees):
        raise TypeError("switch/cond branches must return the same structure, got "
                        + " vs ".join(builtins.map(str, out_trees)))
    all_consts = [c for t in traced for c in t[1]]
    const_avals = [[get_aval(c) for c in t[1]] for t in traced]
    jaxprs = []
    for i, (j, consts, _) in enumerate(traced):
        before = [a for cs in const_avals[:i] for a in cs]
        after = [a for cs in const_avals[i + 1:] for a in cs]
        jaxprs.append(_with_unused_consts(j, len(consts), before, after))
    idx = index
    if isinstance(index, (bool, int)) and not isinstance(index, np.generic):
        idx = np.int32(index)
    idx_aval = get_aval(idx)
    if idx_aval.shape != ():
        raise TypeError(f"switch/cond index must be a scalar, got {idx_aval.str_short()}")
    if idx_aval.dtype != dtypes.int32:
        idx = convert_element_type(idx, dtypes.int32)
    if clamp:
        idx = clamp_index(idx, len(branches))
    outs = bind(P.cond_p, idx, *all_consts, *leaves, branches=tuple(jaxprs))
    return tree_unflatten(out_trees[0], outs)


def clamp_index(idx, n):
    if n == 1 or not isinstance(idx, Tracer) and 0 <= int(idx) < n:
        return idx
    return max(min(idx, np.int32(n - 1)), np.int32(0))  # lax.max / lax.min


def cond(pred, true_fun, false_fun, *operands):
    """true_fun(*operands) if pred else false_fun(*operands), both traced."""
    aval = get_aval(pred)
    if aval.shape != ():
        raise TypeError(f"cond predicate must be a scalar, got {aval.str_short()}")
    p = pred if aval.dtype == dtypes.bool_ else ne(pred, 0)
    return _switch(convert_element_type(p, dtypes.int32), [false_fun, true_fun], operands, clamp=False)


def while_loop(cond_fun, body_fun, init_val):
    leaves, tree = tree_flatten(init_val)
    avals = _strong_avals(leaves)
    leaves = _cast_leaves(leaves, avals)
    args_tree = tree_flatten((init_val,))[1]
    cj, cconsts, ctree = _trace_fun(cond_fun, args_tree, avals, "while_loop cond_fun")
    if len(cj.outvars) != 1 or cj.out_avals[0].shape != () or cj.out_avals[0].dtype != dtypes.bool_:
        raise TypeError("while_loop cond_fun must return a bool scalar, got "
                        f"{[a.str_short() for a in cj.out_avals]}")
    bj, bconsts, btree = _trace_fun(body_fun, args_tree, avals, "while_loop body_fun")
    _check_carry("while_loop body_fun", tree, avals, btree, bj.out_avals)
    outs = bind(P.while_p, *cconsts, *bconsts, *leaves, cond_jaxpr=cj, body_jaxpr=bj,
                cond_nconsts=len(cconsts), body_nconsts=len(bconsts))
    return tree_unflatten(tree, outs)


def _check_carry(what, tree, avals, out_tree, out_avals):
    if out_tree != tree or [a.strip_weak_type() for a in out_avals] != list(avals):
        raise TypeError(f"{what} must return the carry's structure and types: input "
                        f"{tree} {[a.str_short() for a in avals]}, output {out_tree} "
                        f"{[a.str_short() for a in out_avals]}")


def scan(f, init, xs=None, length=None, reverse=False, unroll=1):
    """carry, ys = scan(f, init, xs): f(carry, x) -> (carry, y) over xs' leading axis."""
    c_leaves, c_tree = tree_flatten(init)
    x_leaves, x_tree = tree_flatten(xs)
    lengths = {get_aval(x).shape[0] for x in x_leaves if get_aval(x).ndim}
    if any(get_aval(x).ndim == 0 for x in x_leaves):
        raise TypeError("scan: every leaf of xs needs a leading axis to scan over")
    if length is not None:
        lengths.add(int(length))
    if len(lengths) != 1:
        raise ValueError(f"scan: leading axis sizes of xs disagree or are unknown: {sorted(lengths)}; "
                         "pass length= when xs is None")
    n = lengths.pop()
    c_avals = _strong_avals(c_leaves)
    c_leaves = _cast_leaves(c_leaves, c_avals)
    x_avals = [ShapedArray(get_aval(x).shape[1:], get_aval(x).dtype) for x in x_leaves]
    in_tree = tree_flatten((init, xs))[1]
    j, consts, out_tree = _trace_fun(lambda c, x: _pair(f(c, x)), in_tree, c_avals + x_avals,
                                     "scan body")
    nc = len(c_leaves)
    c_out_tree = out_tree.children[0]
    _check_carry("scan body", c_tree, c_avals, c_out_tree, j.out_avals[:nc])
    outs = bind(P.scan_p, *consts, *c_leaves, *x_leaves, jaxpr=j, length=n, reverse=bool(reverse),
                num_consts=len(consts), num_carry=nc)
    return tree_unflatten(c_tree, outs[:nc]), tree_unflatten(out_tree.children[1], outs[nc:])


def _pair(out):
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"scan body must return a (carry, y) pair, got {type(out).__name__}")
    return out


def fori_loop(lower, upper, body_fun, init_val):
    """for i in range(lower, upper): val = body_fun(i, val). A scan when bounds are static."""
    static = all(not isinstance(b, Tracer) for b in (lower, upper))
    if static:
        lo, hi = int(lower), int(upper)

        def step(carry, _):
            i, val = carry
            return (add(i, np.int32(1)), body_fun(i, val)), None
        (_, out), _ = scan(step, (np.int32(lo), init_val), None, length=builtins.max(hi - lo, 0))
        return out

    def wcond(c):
        return lt(c[0], c[1])

    def wbody(c):
        return (add(c[0], np.int32(1)), c[1], body_fun(c[0], c[2]))
    lower = convert_element_type(lower, dtypes.int32)
    upper = convert_element_type(upper, dtypes.int32)
    return while_loop(wcond, wbody, (lower, upper, init_val))[2]


def map(f, xs):  # noqa: A001 (lax name)
    return scan(lambda _, x: (None, f(x)), None, xs)[1]
