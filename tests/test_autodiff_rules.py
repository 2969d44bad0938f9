"""Autodiff rules, one primitive at a time: the registry is complete, and every
differentiable primitive's forward mode (jvp) and reverse mode (vjp) agree with float64
central differences and with each other, over random shapes and parameters."""
import zlib
from typing import Callable, NamedTuple

import numpy as np
import pytest

import polyjit as pj
from polyjit import lax
from polyjit.autodiff.batching import batching_rules
from polyjit.autodiff.jvp import jvp_rules, nondifferentiable
from polyjit.autodiff.transpose import transpose_rules
from polyjit.tracer import primitives as P
from polyjit.tracer.core import abstract_eval_rules
from polyjit.tracer.tree_util import tree_flatten, tree_unflatten

RTOL = 1e-6     # relative agreement demanded everywhere in this file
STEP = 1e-6     # central-difference step (float64)

# Primitives linear in (some of) their operands: each needs a transpose rule.
LINEAR = {"add", "sub", "neg", "mul", "div", "convert_element_type", "reduce_sum",
          "broadcast_in_dim", "reshape", "transpose", "rev", "slice", "pad", "concatenate",
          "dynamic_slice", "dynamic_update_slice", "gather", "scatter_add", "select_n",
          "dot_general", "conv_general_dilated", "cumsum", "reduce_window_sum", "cond", "scan",
          # a custom_vjp's tangent and checkpoint's call are linear in the tangents they carry
          "custom_lin", "remat"}


# ---------------------------------------------------------------- example inputs (float64)
def f64(*shape):
    return lambda r: r.standard_normal(shape)


def uniform(lo, hi, *shape):
    return lambda r: r.uniform(lo, hi, shape)


def away(lo, hi, *shape):
    """Uniform in +-[lo, hi]: away from the kink at zero."""
    return lambda r: r.uniform(lo, hi, shape) * r.choice([-1.0, 1.0], shape)


def distinct(*shape, gap=0.05):
    """Values at least `gap` apart (no ties for max/min/sort), in random order."""
    def make(r):
        n = int(np.prod(shape))
        v = np.cumsum(r.uniform(gap, 3 * gap, n)) - 1.0
        return r.permutation(v).reshape(shape)
    return make


def ints(lo, hi, *shape):
    return lambda r: r.integers(lo, hi, shape).astype(np.int32)


def const(v):
    return lambda r: np.asarray(v)


class Case(NamedTuple):
    prim: str
    fn: Callable
    args: tuple     # one maker per argument: rng -> example value; float args are differentiated
    name: str = ""


def _id(c):
    return c.prim + (f"-{c.name}" if c.name else "")


# ---------------------------------------------------------------- cases
UNARY_DOMAIN = {
    "log": uniform(0.3, 3, 2, 3), "log1p": uniform(-0.5, 3, 2, 3), "sqrt": uniform(0.3, 3, 2, 3),
    "rsqrt": uniform(0.3, 3, 2, 3), "lgamma": uniform(0.3, 4, 2, 3),
    "digamma": uniform(0.3, 4, 2, 3), "asin": uniform(-0.8, 0.8, 2, 3),
    "acos": uniform(-0.8, 0.8, 2, 3), "atanh": uniform(-0.8, 0.8, 2, 3),
    "erf_inv": uniform(-0.8, 0.8, 2, 3), "acosh": uniform(1.2, 3, 2, 3),
    "abs": away(0.2, 2, 2, 3), "cbrt": away(0.2, 2, 2, 3), "tan": uniform(-1.2, 1.2, 2, 3),
    "exp": uniform(-2, 2, 2, 3), "exp2": uniform(-2, 2, 2, 3), "expm1": uniform(-2, 2, 2, 3),
    "sinh": uniform(-2, 2, 2, 3), "cosh": uniform(-2, 2, 2, 3),
}
NONDIFF_UNARY = {"sign", "floor", "ceil", "round", "not", "is_finite", "stop_gradient"}

BINARY_DOMAIN = {
    "div": (f64(2, 3), away(0.5, 2, 2, 3)),
    # x/y kept away from integers, where rem jumps
    "rem": (const(np.array([[2.3, -1.4, 0.7], [-3.6, 5.2, -0.4]])), const(np.array(
        [[1.1, 0.9, -1.3], [1.7, -1.5, 0.9]]))),
    "pow": (uniform(0.5, 2, 2, 3), f64(2, 3)),
    "max": (distinct(2, 3), distinct(2, 3, gap=0.031)),
    # nextafter(x, y) is x moved by one ulp: derivative 1 in x, 0 in y
    "nextafter": (f64(2, 3), f64(2, 3)),
    "min": (distinct(2, 3), distinct(2, 3, gap=0.031)),
}
NONDIFF_BINARY = {"and", "or", "xor", "shift_left", "shift_right_logical",
                  "shift_right_arithmetic"}


def _rand_conv(seed):
    """A random valid convolution: strides, padding (possibly negative), both dilations,
    feature groups or batch groups, 1 or 2 spatial dims."""
    r = np.random.default_rng(seed)
    while True:
        nsp = int(r.integers(1, 3))
        fg, bg = [(1, 1), (2, 1), (3, 1), (1, 2), (1, 3)][seed % 5]
        i_ch, n = int(r.integers(1, 3)), bg * int(r.integers(1, 3))
        o = fg * bg * int(r.integers(1, 3))
        sp = [int(r.integers(3, 7)) for _ in range(nsp)]
        k = [int(r.integers(1, 4)) for _ in range(nsp)]
        kw = dict(window_strides=tuple(int(s) for s in r.integers(1, 3, nsp)),
                  padding=tuple((int(a), int(b)) for a, b in r.integers(-1, 3, (nsp, 2))),
                  lhs_dilation=tuple(int(s) for s in r.integers(1, 3, nsp)),
                  rhs_dilation=tuple(int(s) for s in r.integers(1, 3, nsp)),
                  feature_group_count=fg, batch_group_count=bg)
        try:
            P.window_output_shape("conv", [(d - 1) * ld + 1 for d, ld in
                                           zip(sp, kw["lhs_dilation"])], k,
                                  kw["window_strides"], kw["padding"], [1] * nsp,
                                  kw["rhs_dilation"])
        except P.ShapeError:
            continue
        return Case("conv_general_dilated", lambda a, b, kw=kw: lax.conv_general_dilated(a, b, **kw),
                    (f64(n, i_ch * fg, *sp), f64(o, i_ch, *k)), f"rand{seed}")


def _rand_reduce_window(name, seed):
    r = np.random.default_rng(100 + seed)
    while True:
        nd = int(r.integers(1, 3))
        shape = [int(r.integers(3, 7)) for _ in range(nd)]
        kw = dict(window_dimensions=tuple(int(s) for s in r.integers(1, 4, nd)),
                  window_strides=tuple(int(s) for s in r.integers(1, 3, nd)),
                  padding=tuple((int(a), int(b)) for a, b in r.integers(0, 2, (nd, 2))),
                  base_dilation=tuple(int(s) for s in r.integers(1, 3, nd)),
                  window_dilation=tuple(int(s) for s in r.integers(1, 3, nd)))
        try:
            lax_fn = getattr(lax, name)
            out = np.asarray(lax_fn(np.ones(shape), **kw))
        except P.ShapeError:
            continue
        if out.size and np.all(np.isfinite(out)):   # no window made only of padding or holes
            return Case(name, lambda x, kw=kw: lax_fn(x, **kw), (distinct(*shape),), f"rand{seed}")


def _scan_fn(reverse):
    def f(c0, xs, w):
        def step(c, x):
            c = lax.add(lax.mul(lax.sin(c), w), x)
            return c, lax.mul(c, c)
        return lax.scan(step, c0, xs, reverse=reverse)
    return f


def _fori(x, w):
    return lax.fori_loop(0, 4, lambda i, c: lax.add(lax.mul(lax.cos(c), w),
                                                    lax.convert_element_type(i, np.float64)), x)


CASES = (
    [Case(n, getattr(lax, n), (UNARY_DOMAIN.get(n, f64(2, 3)),))
     for n in P.UNARY if n not in NONDIFF_UNARY]
    + [Case(n, getattr(lax, n), BINARY_DOMAIN.get(n, (f64(2, 3), f64(2, 3))))
       for n in P.BINARY if n not in NONDIFF_BINARY]
    + [Case("add", lax.add, (f64(), f64(2, 3)), "scalar_lhs"),
       Case("sub", lax.sub, (f64(2, 3), f64()), "scalar_rhs"),
       Case("mul", lax.mul, (f64(), f64(2, 3)), "scalar_lhs"),
       Case("div", lax.div, (f64(2, 3), uniform(0.5, 2)), "scalar_rhs"),
       Case("div", lax.div, (f64(), away(0.5, 2, 2, 3)), "scalar_lhs"),
       Case("pow", lax.pow, (uniform(0.5, 2, 2, 3), f64()), "scalar_exponent"),
       Case("max", lax.max, (distinct(2, 3), const(0.013)), "scalar"),
       Case("atan2", lax.atan2, (f64(), f64(2, 3)), "scalar_lhs"),
       Case("mul", lambda x: lax.mul(x, x), (f64(2, 3),), "same_operand")]
    + [Case("integer_pow", lambda x, y=y: lax.integer_pow(x, y), (away(0.5, 2, 2, 3),), f"y{y}")
       for y in (-3, -1, 0, 1, 2, 5)]
    + [Case("select_n", lax.select_n, (lambda r: r.random((2, 3)) < 0.5, f64(2, 3), f64(2, 3))),
       Case("select_n", lax.select_n, (ints(0, 3, 2, 3), f64(2, 3), f64(2, 3), f64(2, 3)), "int3"),
       Case("select_n", lax.select_n, (const(True), f64(2, 3), f64(2, 3)), "scalar_which"),
       Case("convert_element_type",
            lambda x: lax.convert_element_type(lax.convert_element_type(x, np.float64, True),
                                               np.float64), (f64(2, 3),), "weak_roundtrip"),
       Case("broadcast_in_dim", lambda x: lax.broadcast_in_dim(x, (2, 3, 4), (1,)), (f64(3),)),
       Case("broadcast_in_dim", lambda x: lax.broadcast_in_dim(x, (2, 3, 4), (0, 2)),
            (f64(1, 4),), "expand_size1"),
       Case("broadcast_in_dim", lambda x: lax.broadcast_in_dim(x, (2, 3), ()), (f64(),), "scalar"),
       Case("reshape", lambda x: lax.reshape(x, (3, 4)), (f64(2, 6),)),
       Case("transpose", lambda x: lax.transpose(x, (2, 0, 1)), (f64(2, 3, 4),)),
       Case("rev", lambda x: lax.rev(x, (0, 2)), (f64(2, 3, 4),)),
       Case("slice", lambda x: lax.slice(x, (1, 0), (4, 6), (2, 3)), (f64(5, 6),)),
       Case("slice", lambda x: lax.slice(x, (1, 2), (5, 5)), (f64(5, 6),), "unit_strides"),
       Case("dynamic_slice", lambda x, i, j: lax.dynamic_slice(x, (i, j), (2, 3)),
            (f64(5, 6), const(np.int32(2)), const(np.int32(1)))),
       Case("dynamic_slice", lambda x, i, j: lax.dynamic_slice(x, (i, j), (2, 3)),
            (f64(5, 6), const(np.int32(-2)), const(np.int32(5))), "clamped_starts"),
       Case("dynamic_update_slice", lambda x, u, i, j: lax.dynamic_update_slice(x, u, (i, j)),
            (f64(5, 6), f64(2, 3), const(np.int32(1)), const(np.int32(2)))),
       Case("dynamic_update_slice", lambda x, u, i, j: lax.dynamic_update_slice(x, u, (i, j)),
            (f64(5, 6), f64(2, 3), const(np.int32(4)), const(np.int32(-1))), "clamped_starts"),
       Case("pad", lambda x, v: lax.pad(x, v, ((1, 2, 1), (0, -1, 0))), (f64(3, 4), f64())),
       Case("pad", lambda x, v: lax.pad(x, v, ((-1, -2, 2), (2, 0, 1))), (f64(4, 3), f64()),
            "negative_interior"),
       Case("pad", lambda x: lax.pad(x, 0.0, ((-1, 1, 0),)), (f64(4),), "const_value"),
       Case("concatenate", lambda a, b, c: lax.concatenate([a, b, c], 1),
            (f64(2, 3), f64(2, 1), f64(2, 4))),
       Case("gather", lax.gather, (f64(5, 4), const(np.array([[3], [0], [3], [1]], np.int32))),
            "duplicates"),
       Case("gather", lax.gather, (f64(4, 3, 2), ints(0, 3, 2, 5, 2)), "two_index_dims"),
       # out-of-range indices are clamped (as in JAX): the gradient goes to the edge rows
       Case("gather", lax.gather, (f64(5, 4), const(np.array([[7], [-2], [4], [1]], np.int32))),
            "out_of_range"),
       Case("gather", lambda x, i: lax.gather(x, i, batch_dims=1),
            (f64(3, 5, 2), ints(0, 5, 3, 4, 1)), "batch_dims"),
       Case("scatter", lax.scatter, (f64(5, 4), const(np.array([[4], [1], [2]], np.int32)),
                                     f64(3, 4))),
       Case("scatter", lax.scatter, (f64(5, 4), const(np.array([[4], [1], [4]], np.int32)),
                                     f64(3, 4)), "duplicates"),
       Case("scatter_add", lax.scatter_add, (f64(5, 4), const(np.array([[2], [0], [2], [4]],
                                                                        np.int32)), f64(4, 4)),
            "duplicates"),
       Case("scatter_add", lambda x, i, u: lax.scatter_add(x, i, u, batch_dims=1),
            (f64(3, 5), const(np.array([[[1], [1]], [[0], [4]], [[3], [2]]], np.int32)),
             f64(3, 2)), "batch_dims_duplicates"),
       Case("scatter_add", lax.scatter_add, (f64(4, 3, 2), ints(0, 3, 6, 2), f64(6, 2)),
            "two_index_dims"),
       # out-of-range updates are dropped: their cotangent is zero
       Case("scatter_add", lax.scatter_add, (f64(5, 4), const(np.array([[7], [-1], [4], [0]],
                                                                        np.int32)), f64(4, 4)),
            "out_of_range"),
       Case("scatter_mul", lax.scatter_mul, (f64(5, 4), const(np.array([[2], [0], [2]], np.int32)),
                                             away(0.5, 2, 3, 4)), "duplicates"),
       Case("scatter_min", lax.scatter_min, (distinct(5, 4), const(np.array([[2], [0], [2]],
                                                                           np.int32)),
                                             distinct(3, 4, gap=0.037)), "duplicates"),
       Case("scatter_max", lax.scatter_max, (distinct(5, 4), const(np.array([[2], [0], [2]],
                                                                           np.int32)),
                                             distinct(3, 4, gap=0.037)), "duplicates")]
    + [Case(n, lambda x, n=n, axes=axes: getattr(lax, n)(x, axes),
            (distinct(2, 3, 4) if n != "reduce_prod" else away(0.5, 1.5, 2, 3, 4),),
            "axes" + "".join(map(str, axes)))
       for n in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod")
       for axes in [(0,), (1, 2), (0, 2), (0, 1, 2), ()]]
    + [Case("reduce_prod", lambda x: lax.reduce_prod(x, (1,)),
            (const(np.array([[1.5, 0.0, -0.7], [0.9, 1.2, -1.1]])),), "with_a_zero"),
       Case("reduce_prod", lambda x: lax.reduce_prod(x, (0,)),
            (const(np.array([[1.5, 0.0, -0.7], [0.0, 1.2, -1.1]])),), "with_two_zeros")]
    + [Case(n, lambda x, n=n, ax=ax, rev=rev: getattr(lax, n)(x, ax, reverse=rev),
            ((distinct if n in ("cummax", "cummin") else
              (lambda *s: away(0.5, 1.5, *s)) if n == "cumprod" else f64)(3, 4),),
            f"axis{ax}" + ("_reverse" if rev else ""))
       for n in P.CUMULATIVES for ax in (0, 1) for rev in (False, True)]
    + [Case("cumprod", lambda x, rev=rev: lax.cumprod(x, 0, reverse=rev),
            (const(np.array([1.3, -0.8, 0.0, 1.1, 0.7])),), "with_a_zero" + ("_reverse" if rev else ""))
       for rev in (False, True)]
    + [Case("dot_general", lax.dot, (f64(2, 3), f64(3, 4))),
       Case("dot_general", lax.dot, (f64(3), f64(3)), "vector"),
       Case("dot_general", lambda a, b: lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))),
            (f64(2, 3, 4), f64(2, 4, 5)), "batched"),
       Case("dot_general", lambda a, b: lax.dot_general(a, b, (((0, 3), (2, 0)), ((2,), (1,)))),
            (f64(3, 2, 4, 5), f64(5, 4, 3, 2)), "multi_contract_nonleading_batch"),
       Case("dot_general", lambda a, b: lax.dot_general(a, b, (((), ()), ((), ()))),
            (f64(2, 3), f64(4,)), "outer")]
    + [_rand_conv(s) for s in range(10)]
    + [Case("conv_general_dilated", lambda a, b: lax.conv_general_dilated(
        a, b, (2, 1), "SAME", rhs_dilation=(1, 2), feature_group_count=2),
        (f64(2, 4, 5, 6), f64(4, 2, 3, 2)), "same_padding_groups")]
    + [_rand_reduce_window(n, s) for n in P.REDUCE_WINDOWS for s in range(4)]
    + [Case("sort", lambda x: lax.sort(x, 0), (distinct(3, 4),)),
       Case("sort", lambda x: lax.sort(x, -1), (distinct(3, 4),), "last_axis"),
       Case("sort", lambda k, v: lax.sort((k, v), 1, num_keys=1), (distinct(3, 4), f64(3, 4)),
            "keyed_float"),
       Case("sort", lambda k, v: lax.sort((k, v), 0, num_keys=1),
            (lambda r: r.permutation(12).reshape(4, 3).astype(np.int32), f64(4, 3)), "int_keys"),
       Case("top_k", lambda x: lax.top_k(x, 2), (distinct(3, 5),)),
       Case("top_k", lambda x: lax.top_k(x, 4)[0], (distinct(2, 3, 4),), "k_all"),
       Case("cond", lambda p, x, y: lax.cond(p, lambda a: lax.mul(lax.sin(a), y), lax.exp, x),
            (const(True), f64(3), f64(3)), "true"),
       Case("cond", lambda p, x, y: lax.cond(p, lambda a: lax.mul(lax.sin(a), y), lax.exp, x),
            (const(False), f64(3), f64(3)), "false"),
       Case("cond", lambda i, x, y: lax.switch(
           i, [lax.neg, lax.exp, lambda a: lax.mul(lax.mul(a, a), y)], x),
            (const(np.int32(2)), f64(3), f64(3)), "switch"),
       Case("cond", lambda i, x, y: lax.switch(
           i, [lambda a, b: (lax.mul(a, b), b), lambda a, b: (lax.sin(b), lax.mul(a, 3.0))], x, y),
            (const(np.int32(0)), f64(3), f64(3)), "switch_two_outputs"),
       Case("scan", _scan_fn(False), (f64(3), f64(4, 3), f64(3))),
       Case("scan", _scan_fn(True), (f64(3), f64(4, 3), f64(3)), "reverse"),
       Case("scan", _fori, (f64(3), f64(3)), "fori_loop_static"),
       Case("remat", lambda x, y: pj.checkpoint(lambda a, b: lax.sin(lax.mul(a, b)))(x, y),
            (f64(3), f64(3)))]
)

# Non-differentiable primitives: a case each whose derivative must be (float0) zero.
NONDIFF_CASES = (
    [Case(n, getattr(lax, n), (uniform(0.1, 0.4, 2, 3) if n in ("round", "floor", "ceil")
                               else away(0.2, 2, 2, 3),)) for n in ("sign", "floor", "ceil", "round")]
    + [Case("stop_gradient", lambda x: lax.mul(lax.stop_gradient(x), x), (f64(2, 3),)),
       Case("is_finite", lax.is_finite, (f64(2, 3),)),
       Case("not", lax.bitwise_not, (ints(-9, 9, 2, 3),)),
       ]
    + [Case(n, lambda x, fn=getattr(lax, {"and": "bitwise_and", "or": "bitwise_or",
                                          "xor": "bitwise_xor"}.get(n, n)):
            lax.convert_element_type(fn(lax.convert_element_type(x, np.int32), np.int32(3)),
                                     np.float64), (uniform(10, 90, 2, 3),))
       for n in ("and", "or", "xor", "shift_left", "shift_right_logical", "shift_right_arithmetic")]
    + [Case(n, getattr(lax, n), (f64(2, 3), f64(2, 3))) for n in P.COMPARE]
    + [Case(n, lambda x, n=n: getattr(lax, n)(x, 1), (distinct(3, 4),)) for n in ("argmax", "argmin")]
    + [Case("convert_element_type", lambda x: lax.convert_element_type(x, np.int32),
            (uniform(-9, 9, 2, 3),), "to_int"),
       Case("bitcast_convert_type", lambda x: lax.bitcast_convert_type(x, np.int64), (f64(2, 3),)),
       Case("iota", lambda x: lax.iota(np.float64, (2, 3), 1), (f64(2, 3),)),
       Case("reduce_and", lambda x: lax.reduce_and(lax.gt(x, 0.0), (0,)), (f64(2, 3),)),
       Case("reduce_or", lambda x: lax.reduce_or(lax.gt(x, 0.0), (0,)), (f64(2, 3),)),
       Case("threefry2x32", lambda x: lax.threefry2x32(*[lax.convert_element_type(x, np.uint32)] * 4),
            (uniform(1, 9, 4),))]
)


# ---------------------------------------------------------------- registry
def test_every_primitive_has_its_rules():
    # custom_lin (a custom_vjp's tangent) is only ever transposed, and iota takes no
    # operands, so neither meets a BatchTracer
    unbatched = {"iota", "custom_lin"}
    prims = list(abstract_eval_rules)
    no_jvp = [p.name for p in prims if p not in jvp_rules and p not in nondifferentiable]
    no_batch = [p.name for p in prims if p not in batching_rules and p.name not in unbatched]
    no_t = [p.name for p in prims if p.name in LINEAR and p not in transpose_rules]
    assert not no_jvp, f"no JVP rule for {no_jvp}"
    assert not no_batch, f"no batching rule for {no_batch}"
    assert not no_t, f"linear primitives without a transpose rule: {no_t}"
    assert LINEAR <= {p.name for p in prims}, LINEAR - {p.name for p in prims}
    assert not {p.name for p in nondifferentiable} & LINEAR


def test_every_primitive_has_a_gradient_case():
    names = {p.name for p in abstract_eval_rules}
    # while: forward mode only (test_autodiff_api); custom_lin: reverse only (custom_vjp tests)
    elsewhere = {"while", "custom_lin"}
    diff = {p.name for p in abstract_eval_rules if p not in nondifferentiable}
    missing = sorted(diff - {c.prim for c in CASES} - elsewhere)
    assert not missing, f"no gradient check for {missing}"
    nd = {p.name for p in nondifferentiable} & names
    missing_nd = sorted(nd - {c.prim for c in NONDIFF_CASES})
    assert not missing_nd, f"no zero-derivative check for {missing_nd}"


# ---------------------------------------------------------------- the checks
def _float_leaves(tree):
    return [np.asarray(v, np.float64) for v in tree_flatten(tree)[0]
            if np.issubdtype(np.asarray(v).dtype, np.floating)]


def _split_args(case, rng):
    args = [make(rng) for make in case.args]
    diff = [i for i, a in enumerate(args) if np.issubdtype(np.asarray(a).dtype, np.floating)]

    def f(*xs):
        full = list(args)
        for i, x in zip(diff, xs):
            full[i] = x
        return case.fn(*full)
    return f, [np.asarray(args[i], np.float64) for i in diff]


def _central_difference(f, xs, ts, h=STEP):
    plus = _float_leaves(f(*[x + h * t for x, t in zip(xs, ts)]))
    minus = _float_leaves(f(*[x - h * t for x, t in zip(xs, ts)]))
    return [(p - m) / (2 * h) for p, m in zip(plus, minus)]


def _close(got, want, what):
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape, (what, g.shape, w.shape)
        scale = max(np.linalg.norm(w), np.linalg.norm(g), 1e-3)
        err = np.linalg.norm(g - w)
        assert np.all(np.isfinite(g)) and err <= RTOL * scale, \
            f"{what}: relative error {err / scale:.2e}\n got {g}\nwant {w}"


def _dot(a, b):
    return sum(float(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)))
               for x, y in zip(a, b))


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_forward_and_reverse_match_finite_differences(case):
    rng = np.random.default_rng(zlib.crc32(_id(case).encode()))   # stable across runs
    f, xs = _split_args(case, rng)
    ts = [rng.standard_normal(x.shape) for x in xs]
    fd = _central_difference(f, xs, ts)

    # forward mode
    out, t_out = pj.jvp(f, tuple(xs), tuple(ts))
    _close(_float_leaves(t_out), fd, "jvp vs central differences")
    _close(_float_leaves(out), _float_leaves(f(*xs)), "jvp primal output")

    # reverse mode: <vjp(ct), t> == <ct, jvp(t)> == <ct, fd(t)>
    out2, f_vjp = pj.vjp(f, *xs)
    leaves, tree = tree_flatten(out2)
    cts = [rng.standard_normal(np.shape(o)) if np.issubdtype(np.asarray(o).dtype, np.floating)
           else np.zeros(np.shape(o), pj.float0) for o in leaves]
    ct_x = f_vjp(tree_unflatten(tree, cts))
    assert len(ct_x) == len(xs)
    for c, x in zip(ct_x, xs):
        assert np.shape(c) == x.shape and np.asarray(c).dtype == np.float64
    float_cts = [c for c, o in zip(cts, leaves) if np.issubdtype(np.asarray(o).dtype, np.floating)]
    lhs, rhs, rhs_fd = _dot(ct_x, ts), _dot(float_cts, _float_leaves(t_out)), _dot(float_cts, fd)
    scale = max(abs(rhs), np.sqrt(_dot(ct_x, ct_x) * _dot(ts, ts)), 1e-3)
    assert abs(lhs - rhs) <= RTOL * scale, f"<vjp(ct), t> = {lhs} but <ct, jvp(t)> = {rhs}"
    assert abs(lhs - rhs_fd) <= RTOL * scale, f"<vjp(ct), t> = {lhs} but <ct, fd(t)> = {rhs_fd}"


@pytest.mark.parametrize("case", NONDIFF_CASES, ids=_id)
def test_nondifferentiable_primitives_have_zero_derivatives(case):
    rng = np.random.default_rng(1)
    f, xs = _split_args(case, rng)
    ts = [rng.standard_normal(x.shape) for x in xs]
    _, t_out = pj.jvp(f, tuple(xs), tuple(ts))
    for o, t in zip(tree_flatten(f(*xs))[0], tree_flatten(t_out)[0]):
        t = np.asarray(t)
        if np.issubdtype(np.asarray(o).dtype, np.floating):
            if case.prim == "stop_gradient":   # d(sg(x) * x) = sg(x) dx
                np.testing.assert_allclose(t, xs[0] * ts[0], rtol=1e-12)
            else:
                assert t.dtype == np.float64 and not np.any(t), t
        else:
            assert t.dtype == pj.float0 and t.shape == np.shape(o)
    if case.prim != "stop_gradient":
        # the derivative really is zero there (inputs are away from the jumps)
        assert all(not np.any(d) for d in _central_difference(f, xs, ts))


def _vjp_fn(f, float_out):
    """xs -> the float cotangents <ct, f> pulls back, for fixed cts on f's float outputs."""
    def pullback(cts, *xs):
        out, f_vjp = pj.vjp(f, *xs)
        leaves, tree = tree_flatten(out)
        it = iter(cts)
        full = [next(it) if fl else np.zeros(np.shape(o), pj.float0)
                for o, fl in zip(leaves, float_out)]
        return list(f_vjp(tree_unflatten(tree, full)))
    return pullback


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_second_order_and_jit_and_vmap_of_the_rules(case):
    """Forward-over-reverse against differences of the vjp; reverse-over-reverse against it
    (<vjp2(s), t> == <s, jvp(vjp)(t)>); jit and vmap of jvp/vjp against the eager ones."""
    rng = np.random.default_rng(zlib.crc32(_id(case).encode()) + 1)
    f, xs = _split_args(case, rng)
    ts = [rng.standard_normal(x.shape) for x in xs]
    out = tree_flatten(f(*xs))[0]
    float_out = [np.issubdtype(np.asarray(o).dtype, np.floating) for o in out]
    cts = [rng.standard_normal(np.shape(o)) for o, fl in zip(out, float_out) if fl]
    pull = _vjp_fn(f, float_out)
    g = lambda *xs: pull(cts, *xs)

    hvp = pj.jvp(g, tuple(xs), tuple(ts))[1]
    _close(_float_leaves(hvp), _central_difference(g, xs, ts), "jvp of vjp vs differences")
    ss = [rng.standard_normal(x.shape) for x in xs]
    rr = pj.vjp(g, *xs)[1](ss)
    lhs, rhs = _dot(rr, ts), _dot(ss, _float_leaves(hvp))
    assert abs(lhs - rhs) <= RTOL * max(abs(rhs), np.sqrt(_dot(rr, rr) * _dot(ts, ts)), 1e-3), \
        f"<vjp(vjp)(s), t> = {lhs} but <s, jvp(vjp)(t)> = {rhs}"

    # jit of the transformations equals the eager result
    # (float tangents only: jit cannot return the float0 tangents of integer outputs yet)
    jvp_fn = lambda xs, ts: [t for t in tree_flatten(pj.jvp(f, tuple(xs), tuple(ts))[1])[0]
                             if t.dtype != pj.float0]
    for got, want in [(pj.jit(jvp_fn)(xs, ts), jvp_fn(xs, ts)),
                      (pj.jit(pull)(cts, *xs), pull(cts, *xs))]:
        _close(_float_leaves(got), _float_leaves(want), "jit vs eager")
    # vmap over a batch of cotangents equals a loop
    batch = [np.stack([c, 2 * c + 1]) for c in cts]
    got = pj.vmap(pull, in_axes=(0,) + (None,) * len(xs))(batch, *xs)
    want = [np.stack(col) for col in zip(*[_float_leaves(pull([b[i] for b in batch], *xs))
                                           for i in range(2)])]
    _close(_float_leaves(got), want, "vmap of vjp vs a loop")
