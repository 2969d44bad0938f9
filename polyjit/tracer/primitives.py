"""The primitive set and its shape/dtype rules (the abstract-eval table).

User-facing ops (polyjit.numpy, polyjit.lax, nn, importers) are thin wrappers that
`bind` these. Backends implement them; autodiff gives each its JVP, transpose and
batching rules in their own tables.
"""
from __future__ import annotations

import numpy as np

from . import dtypes
from .core import Primitive, ShapedArray, abstract_eval_rules

# Which primitives exist, by family, so other stages can walk the set.
UNARY, BINARY, COMPARE = {}, {}, {}


class ShapeError(ValueError):
    """Operands whose shapes or dtypes do not fit the operation."""


def _fail(prim, msg):
    raise ShapeError(f"{prim}: {msg}")


def _def(name, rule, multiple_results=False):
    p = Primitive(name, multiple_results)
    abstract_eval_rules[p] = rule if multiple_results else (lambda *a, **k: [rule(*a, **k)])
    return p


def _kind_ok(kind, dt):
    return {"float": dtypes.is_float(dt),
            "num": dtypes.is_float(dt) or dtypes.is_int(dt),
            "int": dtypes.is_int(dt),
            "intbool": dtypes.is_int(dt) or dtypes.is_bool(dt),
            "signed": dtypes.is_float(dt) or np.dtype(dt).kind == "i",
            "any": True}[kind]


def _elementwise_shape(name, avals):
    shapes = {a.shape for a in avals if a.shape != ()}
    if len(shapes) > 1:
        _fail(name, "operand shapes " + " and ".join(str(a.shape) for a in avals)
              + " do not match (broadcast them first, or use polyjit.numpy which broadcasts)")
    return shapes.pop() if shapes else ()


def _check_dtypes(name, kind, avals):
    dts = {a.dtype for a in avals}
    if len(dts) > 1:
        _fail(name, "operand dtypes " + " and ".join(a.dtype.name for a in avals) + " differ")
    dt = dts.pop()
    if not _kind_ok(kind, dt):
        _fail(name, f"does not accept dtype {dt.name} (needs {kind} operands)")
    return dt


def elementwise_rule(name, kind, out_dtype=None):
    def rule(*avals):
        dt = _check_dtypes(name, kind, avals)
        shape = _elementwise_shape(name, avals)
        weak = all(a.weak_type for a in avals) and out_dtype is None
        return ShapedArray(shape, out_dtype or dt, weak)
    return rule


for _name, _kind in [("neg", "signed"), ("sign", "num"), ("floor", "float"), ("ceil", "float"),
                     ("round", "float"), ("exp", "float"), ("exp2", "float"), ("log", "float"),
                     ("log1p", "float"), ("expm1", "float"), ("tanh", "float"),
                     ("logistic", "float"), ("sin", "float"), ("cos", "float"), ("tan", "float"),
                     ("asin", "float"), ("acos", "float"), ("atan", "float"), ("sinh", "float"),
                     ("cosh", "float"), ("asinh", "float"), ("acosh", "float"),
                     ("atanh", "float"), ("sqrt", "float"), ("rsqrt", "float"), ("cbrt", "float"),
                     ("abs", "num"), ("not", "intbool"), ("erf", "float"), ("erfc", "float"),
                     ("erf_inv", "float"), ("lgamma", "float"), ("digamma", "float"),
                     ("square", "num")]:
    UNARY[_name] = _def(_name, elementwise_rule(_name, _kind))
UNARY["is_finite"] = _def("is_finite", elementwise_rule("is_finite", "float", dtypes.bool_))
# identity for every backend; autodiff gives it a zero derivative
UNARY["stop_gradient"] = _def("stop_gradient", elementwise_rule("stop_gradient", "any"))

for _name, _kind in [("add", "num"), ("sub", "num"), ("mul", "num"), ("div", "num"),
                     ("rem", "num"), ("pow", "num"), ("max", "any"), ("min", "any"),
                     ("atan2", "float"), ("and", "intbool"), ("or", "intbool"),
                     ("xor", "intbool"), ("shift_left", "int"), ("shift_right_logical", "int"),
                     ("shift_right_arithmetic", "int"), ("nextafter", "float")]:
    BINARY[_name] = _def(_name, elementwise_rule(_name, _kind))

for _name in ["eq", "ne", "lt", "le", "gt", "ge"]:
    COMPARE[_name] = _def(_name, elementwise_rule(_name, "any", dtypes.bool_))

globals().update({f"{n}_p": p for n, p in {**UNARY, **BINARY, **COMPARE}.items()})


def _integer_pow_rule(x, *, y):
    if not isinstance(y, int):
        _fail("integer_pow", f"exponent must be a Python int, got {y!r}")
    if not _kind_ok("num", x.dtype):
        _fail("integer_pow", f"does not accept dtype {x.dtype.name}")
    if y < 0 and not dtypes.is_float(x.dtype):
        _fail("integer_pow", f"negative exponent {y} needs a float operand, got {x.dtype.name}")
    return x


integer_pow_p = _def("integer_pow", _integer_pow_rule)


def _select_n_rule(which, *cases):
    if not cases:
        _fail("select_n", "needs at least one case")
    _check_dtypes("select_n", "any", cases)
    shape = _elementwise_shape("select_n", (which,) + cases)
    if which.dtype != dtypes.bool_ and which.dtype != dtypes.int32:
        _fail("select_n", f"selector must be bool or int32, got {which.dtype.name}")
    if which.dtype == dtypes.bool_ and len(cases) > 2:
        _fail("select_n", f"a bool selector picks between 2 cases, got {len(cases)}")
    return ShapedArray(shape, cases[0].dtype, all(c.weak_type for c in cases))


select_n_p = _def("select_n", _select_n_rule)


def _convert_rule(x, *, new_dtype, weak_type=False):
    return ShapedArray(x.shape, dtypes.canonicalize(new_dtype), weak_type)


convert_element_type_p = _def("convert_element_type", _convert_rule)


def _bitcast_rule(x, *, new_dtype):
    new = dtypes.canonicalize(new_dtype)
    if new.itemsize != x.dtype.itemsize:
        _fail("bitcast_convert_type", f"{x.dtype.name} and {new.name} differ in width")
    return ShapedArray(x.shape, new)


bitcast_convert_type_p = _def("bitcast_convert_type", _bitcast_rule)


def _iota_rule(*, dtype, shape, dimension):
    if not 0 <= dimension < len(shape):
        _fail("iota", f"dimension {dimension} out of range for shape {shape}")
    return ShapedArray(shape, dtype)


iota_p = _def("iota", _iota_rule)


# ---------------------------------------------------------------- shapes
def _broadcast_in_dim_rule(x, *, shape, broadcast_dimensions):
    if len(broadcast_dimensions) != x.ndim:
        _fail("broadcast_in_dim", f"operand of shape {x.shape} needs {x.ndim} broadcast "
              f"dimensions, got {broadcast_dimensions}")
    if list(broadcast_dimensions) != sorted(set(broadcast_dimensions)):
        _fail("broadcast_in_dim", f"broadcast_dimensions {broadcast_dimensions} must increase")
    for d, od in zip(x.shape, broadcast_dimensions):
        if not 0 <= od < len(shape) or d not in (1, shape[od]):
            _fail("broadcast_in_dim", f"cannot broadcast shape {x.shape} to {tuple(shape)} "
                  f"with broadcast_dimensions {broadcast_dimensions}")
    return ShapedArray(shape, x.dtype, x.weak_type)


broadcast_in_dim_p = _def("broadcast_in_dim", _broadcast_in_dim_rule)


def _reshape_rule(x, *, new_sizes):
    if int(np.prod(new_sizes, dtype=np.int64)) != x.size or any(d < 0 for d in new_sizes):
        _fail("reshape", f"cannot reshape array of shape {x.shape} ({x.size} elements) "
              f"into shape {tuple(new_sizes)}")
    return ShapedArray(new_sizes, x.dtype, x.weak_type)


reshape_p = _def("reshape", _reshape_rule)


def _transpose_rule(x, *, permutation):
    if sorted(permutation) != list(range(x.ndim)):
        _fail("transpose", f"permutation {permutation} is not a permutation of the axes "
              f"of shape {x.shape}")
    return ShapedArray([x.shape[p] for p in permutation], x.dtype, x.weak_type)


transpose_p = _def("transpose", _transpose_rule)


def _rev_rule(x, *, dimensions):
    _check_axes("rev", dimensions, x.ndim)
    return x


rev_p = _def("rev", _rev_rule)


def _check_axes(name, axes, ndim):
    for a in axes:
        if not 0 <= a < ndim:
            _fail(name, f"axis {a} is out of range for an array of rank {ndim}")
    if len(set(axes)) != len(axes):
        _fail(name, f"repeated axis in {axes}")


def _slice_rule(x, *, start_indices, limit_indices, strides):
    if not len(start_indices) == len(limit_indices) == len(strides) == x.ndim:
        _fail("slice", f"needs {x.ndim} start/limit/stride entries for shape {x.shape}")
    shape = []
    for d, s, l, st in zip(x.shape, start_indices, limit_indices, strides):
        if not (0 <= s <= l <= d) or st < 1:
            _fail("slice", f"start {start_indices}, limit {limit_indices}, strides {strides} "
                  f"do not fit shape {x.shape}")
        shape.append(max(0, -(-(l - s) // st)))
    return ShapedArray(shape, x.dtype, x.weak_type)


slice_p = _def("slice", _slice_rule)


def _dynamic_slice_rule(x, *starts, slice_sizes):
    if len(starts) != x.ndim or len(slice_sizes) != x.ndim:
        _fail("dynamic_slice", f"needs {x.ndim} start indices and slice sizes for shape {x.shape}")
    for s in starts:
        if s.shape != () or not dtypes.is_int(s.dtype):
            _fail("dynamic_slice", f"start indices must be integer scalars, got {s.str_short()}")
    if any(not 0 <= z <= d for z, d in zip(slice_sizes, x.shape)):
        _fail("dynamic_slice", f"slice sizes {slice_sizes} do not fit shape {x.shape}")
    return ShapedArray(slice_sizes, x.dtype, x.weak_type)


dynamic_slice_p = _def("dynamic_slice", _dynamic_slice_rule)


def _dynamic_update_slice_rule(x, update, *starts):
    if update.ndim != x.ndim or any(u > d for u, d in zip(update.shape, x.shape)):
        _fail("dynamic_update_slice", f"update of shape {update.shape} does not fit operand "
              f"of shape {x.shape}")
    if update.dtype != x.dtype:
        _fail("dynamic_update_slice", f"update dtype {update.dtype.name} differs from operand "
              f"dtype {x.dtype.name}")
    if len(starts) != x.ndim or any(s.shape != () or not dtypes.is_int(s.dtype) for s in starts):
        _fail("dynamic_update_slice", f"needs {x.ndim} integer scalar start indices")
    return x.strip_weak_type() if not update.weak_type else x


dynamic_update_slice_p = _def("dynamic_update_slice", _dynamic_update_slice_rule)


def _pad_rule(x, padval, *, padding_config):
    if padval.shape != () or padval.dtype != x.dtype:
        _fail("pad", f"padding value must be a scalar of dtype {x.dtype.name}, got {padval.str_short()}")
    if len(padding_config) != x.ndim:
        _fail("pad", f"padding_config needs {x.ndim} (lo, hi, interior) entries for shape {x.shape}")
    shape = []
    for d, (lo, hi, interior) in zip(x.shape, padding_config):
        n = d + lo + hi + max(0, d - 1) * interior
        if interior < 0 or n < 0:
            _fail("pad", f"padding_config {padding_config} is invalid for shape {x.shape}")
        shape.append(n)
    return ShapedArray(shape, x.dtype, x.weak_type)


pad_p = _def("pad", _pad_rule)


def _concatenate_rule(*xs, dimension):
    if not xs:
        _fail("concatenate", "needs at least one operand")
    _check_dtypes("concatenate", "any", xs)
    if not 0 <= dimension < xs[0].ndim:
        _fail("concatenate", f"axis {dimension} out of range for rank {xs[0].ndim}")
    for x in xs:
        if x.ndim != xs[0].ndim or any(a != b for i, (a, b) in enumerate(zip(x.shape, xs[0].shape))
                                       if i != dimension):
            _fail("concatenate", f"shapes {[x.shape for x in xs]} differ outside axis {dimension}")
    shape = list(xs[0].shape)
    shape[dimension] = sum(x.shape[dimension] for x in xs)
    return ShapedArray(shape, xs[0].dtype, all(x.weak_type for x in xs))


concatenate_p = _def("concatenate", _concatenate_rule)


# ---------------------------------------------------------------- gather / scatter
def _index_shape(name, x, idx, batch_dims):
    """Gather semantics: indices[..., k] pick along x's first k dims after `batch_dims`."""
    if not dtypes.is_int(idx.dtype) or idx.ndim < 1:
        _fail(name, f"indices must be an integer array of rank >= 1, got {idx.str_short()}")
    k = idx.shape[-1]
    if idx.shape[:batch_dims] != x.shape[:batch_dims] or idx.ndim - 1 < batch_dims:
        _fail(name, f"batch dims {batch_dims} of indices {idx.shape} and operand {x.shape} differ")
    if batch_dims + k > x.ndim:
        _fail(name, f"indices of shape {idx.shape} index {k} dims but operand {x.shape} has "
              f"only {x.ndim - batch_dims} after {batch_dims} batch dims")
    return idx.shape[:-1] + x.shape[batch_dims + k:]


def _gather_rule(x, idx, *, batch_dims=0):
    return ShapedArray(_index_shape("gather", x, idx, batch_dims), x.dtype, x.weak_type)


gather_p = _def("gather", _gather_rule)


def _scatter_rule(name):
    def rule(x, idx, updates, *, batch_dims=0):
        want = _index_shape(name, x, idx, batch_dims)
        if updates.shape != want or updates.dtype != x.dtype:
            _fail(name, f"updates {updates.str_short()} must be {ShapedArray(want, x.dtype).str_short()} "
                  f"for operand {x.str_short()} and indices {idx.str_short()}")
        return x.strip_weak_type()
    return rule


SCATTERS = {n: _def(n, _scatter_rule(n)) for n in
            ["scatter", "scatter_add", "scatter_mul", "scatter_min", "scatter_max"]}
scatter_p, scatter_add_p, scatter_mul_p, scatter_min_p, scatter_max_p = SCATTERS.values()


# ---------------------------------------------------------------- reductions
def _reduce_rule(name, kind):
    def rule(x, *, axes):
        _check_axes(name, axes, x.ndim)
        if not _kind_ok(kind, x.dtype):
            _fail(name, f"does not accept dtype {x.dtype.name}")
        return ShapedArray([d for i, d in enumerate(x.shape) if i not in axes], x.dtype, x.weak_type)
    return rule


REDUCES = {n: _def(n, _reduce_rule(n, k)) for n, k in
           [("reduce_sum", "num"), ("reduce_max", "any"), ("reduce_min", "any"),
            ("reduce_prod", "num"), ("reduce_and", "intbool"), ("reduce_or", "intbool")]}
reduce_sum_p, reduce_max_p, reduce_min_p, reduce_prod_p, reduce_and_p, reduce_or_p = REDUCES.values()


def _arg_rule(name):
    def rule(x, *, axis, index_dtype):
        _check_axes(name, (axis,), x.ndim)
        if x.shape[axis] == 0:
            _fail(name, f"axis {axis} of shape {x.shape} is empty")
        return ShapedArray([d for i, d in enumerate(x.shape) if i != axis], index_dtype)
    return rule


argmax_p = _def("argmax", _arg_rule("argmax"))
argmin_p = _def("argmin", _arg_rule("argmin"))


def _cumulative_rule(name):
    def rule(x, *, axis, reverse=False):
        _check_axes(name, (axis,), x.ndim)
        return x
    return rule


CUMULATIVES = {n: _def(n, _cumulative_rule(n)) for n in ["cumsum", "cumprod", "cummax", "cummin"]}
cumsum_p, cumprod_p, cummax_p, cummin_p = CUMULATIVES.values()


# ---------------------------------------------------------------- contractions
def _dot_general_rule(lhs, rhs, *, dimension_numbers, preferred_element_type=None):
    (lc, rc), (lb, rb) = dimension_numbers
    _check_axes("dot_general", tuple(lc) + tuple(lb), lhs.ndim)
    _check_axes("dot_general", tuple(rc) + tuple(rb), rhs.ndim)
    if len(lc) != len(rc) or len(lb) != len(rb):
        _fail("dot_general", f"dimension_numbers {dimension_numbers} pair unequal numbers of axes")
    for a, b in list(zip(lc, rc)) + list(zip(lb, rb)):
        if lhs.shape[a] != rhs.shape[b]:
            _fail("dot_general", f"shapes {lhs.shape} and {rhs.shape} do not match on axes "
                  f"{a} and {b} ({lhs.shape[a]} vs {rhs.shape[b]})")
    if lhs.dtype != rhs.dtype:
        _fail("dot_general", f"operand dtypes {lhs.dtype.name} and {rhs.dtype.name} differ")
    if dtypes.is_bool(lhs.dtype):
        _fail("dot_general", "does not accept bool operands")
    shape = ([lhs.shape[i] for i in lb] + [d for i, d in enumerate(lhs.shape) if i not in lc + lb]
             + [d for i, d in enumerate(rhs.shape) if i not in rc + rb])
    out = dtypes.canonicalize(preferred_element_type) if preferred_element_type else lhs.dtype
    return ShapedArray(shape, out, lhs.weak_type and rhs.weak_type)


dot_general_p = _def("dot_general", _dot_general_rule)


def window_output_shape(name, in_shape, window, strides, padding, base_dilation, window_dilation):
    out = []
    for d, k, s, (lo, hi), bd, wd in zip(in_shape, window, strides, padding, base_dilation,
                                         window_dilation):
        dil_in = (d - 1) * bd + 1 if d else 0
        dil_k = (k - 1) * wd + 1
        span = dil_in + lo + hi - dil_k
        if span < 0 or s < 1:
            _fail(name, f"window {window} (dilation {window_dilation}) with strides {strides} "
                  f"and padding {padding} does not fit spatial shape {in_shape}")
        out.append(span // s + 1)
    return out


def _conv_rule(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
               feature_group_count=1, batch_group_count=1, preferred_element_type=None):
    n_sp = lhs.ndim - 2
    if rhs.ndim != lhs.ndim or n_sp < 1:
        _fail("conv_general_dilated", f"input {lhs.shape} (N, C, spatial...) and kernel "
              f"{rhs.shape} (O, I, spatial...) need equal rank >= 3")
    for nm, v in [("window_strides", window_strides), ("padding", padding),
                  ("lhs_dilation", lhs_dilation), ("rhs_dilation", rhs_dilation)]:
        if len(v) != n_sp:
            _fail("conv_general_dilated", f"{nm} {v} needs {n_sp} entries")
    g, bg = feature_group_count, batch_group_count
    if lhs.shape[1] != rhs.shape[1] * g:
        _fail("conv_general_dilated", f"input channels {lhs.shape[1]} of {lhs.shape} != kernel "
              f"input channels {rhs.shape[1]} x feature_group_count {g} (kernel {rhs.shape})")
    if rhs.shape[0] % (g * bg) or lhs.shape[0] % bg:
        _fail("conv_general_dilated", f"output channels {rhs.shape[0]} must divide by groups {g} "
              f"and batch {lhs.shape[0]} by batch_group_count {bg}")
    if lhs.dtype != rhs.dtype:
        _fail("conv_general_dilated", f"input dtype {lhs.dtype.name} and kernel dtype "
              f"{rhs.dtype.name} differ")
    sp = window_output_shape("conv_general_dilated", lhs.shape[2:], rhs.shape[2:], window_strides,
                             padding, lhs_dilation, rhs_dilation)
    out = dtypes.canonicalize(preferred_element_type) if preferred_element_type else lhs.dtype
    return ShapedArray([lhs.shape[0] // bg, rhs.shape[0]] + sp, out)


conv_general_dilated_p = _def("conv_general_dilated", _conv_rule)


def _reduce_window_rule(name):
    def rule(x, *, window_dimensions, window_strides, padding, base_dilation=None,
             window_dilation=None):
        nd = x.ndim
        base_dilation = base_dilation or (1,) * nd
        window_dilation = window_dilation or (1,) * nd
        for nm, v in [("window_dimensions", window_dimensions), ("window_strides", window_strides),
                      ("padding", padding), ("base_dilation", base_dilation),
                      ("window_dilation", window_dilation)]:
            if len(v) != nd:
                _fail(name, f"{nm} {v} needs {nd} entries for shape {x.shape}")
        return ShapedArray(window_output_shape(name, x.shape, window_dimensions, window_strides,
                                               padding, base_dilation, window_dilation),
                           x.dtype, x.weak_type)
    return rule


REDUCE_WINDOWS = {n: _def(n, _reduce_window_rule(n)) for n in
                  ["reduce_window_sum", "reduce_window_max", "reduce_window_min"]}
reduce_window_sum_p, reduce_window_max_p, reduce_window_min_p = REDUCE_WINDOWS.values()


# ---------------------------------------------------------------- sorting, random
def _sort_rule(*xs, dimension, is_stable=True, num_keys=1):
    if not xs or any(x.shape != xs[0].shape for x in xs):
        _fail("sort", f"operands must share one shape, got {[x.shape for x in xs]}")
    _check_axes("sort", (dimension,), xs[0].ndim)
    if not 1 <= num_keys <= len(xs):
        _fail("sort", f"num_keys {num_keys} out of range for {len(xs)} operands")
    return list(xs)


sort_p = _def("sort", _sort_rule, multiple_results=True)


def _top_k_rule(x, *, k):
    if x.ndim < 1 or not 0 <= k <= x.shape[-1]:
        _fail("top_k", f"k={k} does not fit the last axis of shape {x.shape}")
    shape = x.shape[:-1] + (k,)
    return [ShapedArray(shape, x.dtype), ShapedArray(shape, dtypes.int32)]


top_k_p = _def("top_k", _top_k_rule, multiple_results=True)


def _threefry_rule(k0, k1, x0, x1):
    for a in (k0, k1, x0, x1):
        if a.dtype != dtypes.uint32:
            _fail("threefry2x32", f"operands must be uint32, got {a.dtype.name}")
    shape = _elementwise_shape("threefry2x32", (k0, k1, x0, x1))
    return [ShapedArray(shape, dtypes.uint32)] * 2


threefry2x32_p = _def("threefry2x32", _threefry_rule, multiple_results=True)


# ---------------------------------------------------------------- control flow
def _cond_rule(index, *operands, branches):
    if index.shape != () or index.dtype != dtypes.int32:
        _fail("cond", f"branch index must be an int32 scalar, got {index.str_short()}")
    in_avals = [o.strip_weak_type() for o in operands]
    for b in branches:
        if [a.strip_weak_type() for a in b.in_avals] != in_avals:
            _fail("cond", "branch input types differ from the operands")
    outs = [[a.strip_weak_type() for a in b.out_avals] for b in branches]
    for o in outs[1:]:
        if o != outs[0]:
            _fail("cond", "branches return different types: "
                  + " vs ".join(str([a.str_short() for a in ob]) for ob in outs))
    return branches[0].out_avals


cond_p = _def("cond", _cond_rule, multiple_results=True)


def _while_rule(*args, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
    return body_jaxpr.out_avals


while_p = _def("while", _while_rule, multiple_results=True)


def _scan_rule(*args, jaxpr, length, reverse, num_consts, num_carry):
    carry = jaxpr.out_avals[:num_carry]
    ys = [ShapedArray((length,) + a.shape, a.dtype) for a in jaxpr.out_avals[num_carry:]]
    return carry + ys


scan_p = _def("scan", _scan_rule, multiple_results=True)
