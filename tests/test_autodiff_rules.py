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
from polyjit.autodiff import transpose as transpose_module
from polyjit.autodiff.transpose import transpose_rules
from polyjit.tracer import primitives as P
from polyjit.tracer.core import abstract_eval_rules
from polyjit.tracer.tree_util import tree_flatten, tree_unflatten

RTOL = 1e-6     # relative agreement demanded everywhere in this file
STEP = 1e-6     # central-difference step (float64)

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
# Shapes, parameters and index patterns are drawn at random, a few seeds per case: a case
# `exp-s1` is `exp` at the shape seed 1 draws. Each draw is fixed by the case's name, so a
# failure reproduces; the values themselves come from a second rng seeded the same way.
SEEDS = range(2)


def _params(family, seed):
    return np.random.default_rng(zlib.crc32(f"{family}/{seed}".encode()))


def _shape(r, min_rank=0, max_rank=3, lo=1, hi=4):
    return tuple(int(d) for d in r.integers(lo, hi + 1, int(r.integers(min_rank, max_rank + 1))))


def on_grid(*shape, offset=0.0, step=0.1):
    """Distinct values on a grid shifted by `offset`, in random order: makers with offsets
    0 and step/2 never tie, within or across arrays (max/min/sort/scatter_max stay smooth)."""
    def make(r):
        n = int(np.prod(shape))
        return ((r.permutation(n) + r.integers(-n, 2) - n // 2) * step + offset).reshape(shape)
    return make


def not_near_integers(*shape):
    """k + f with integer k and f in +-[0.2, 0.8]: away from where trunc and rem jump."""
    return lambda r: r.integers(-3, 4, shape) + away(0.2, 0.8, *shape)(r)


UNARY_DOMAIN = {
    "log": (uniform, 0.3, 3), "log1p": (uniform, -0.5, 3), "sqrt": (uniform, 0.3, 3),
    "rsqrt": (uniform, 0.3, 3), "lgamma": (uniform, 0.3, 4), "digamma": (uniform, 0.3, 4),
    "asin": (uniform, -0.8, 0.8), "acos": (uniform, -0.8, 0.8), "atanh": (uniform, -0.8, 0.8),
    "erf_inv": (uniform, -0.8, 0.8), "acosh": (uniform, 1.2, 3), "abs": (away, 0.2, 2),
    "cbrt": (away, 0.2, 2), "tan": (uniform, -1.2, 1.2), "exp": (uniform, -2, 2),
    "exp2": (uniform, -2, 2), "expm1": (uniform, -2, 2), "sinh": (uniform, -2, 2),
    "cosh": (uniform, -2, 2),
}
NONDIFF_UNARY = {"sign", "floor", "ceil", "round", "not", "is_finite", "stop_gradient"}


def _unary(name, seed):
    shape = _shape(_params(name, seed))
    kind, lo, hi = UNARY_DOMAIN.get(name, (None, 0, 0))
    make = kind(lo, hi, *shape) if kind else f64(*shape)
    return Case(name, getattr(lax, name), (make,), f"s{seed}")


def _binary_domain(name, s, t):
    """Makers for (lhs of shape s, rhs of shape t)."""
    if name == "div":
        return f64(*s), away(0.5, 2, *t)
    if name == "pow":
        return uniform(0.5, 2, *s), f64(*t)
    if name in ("max", "min"):
        return on_grid(*s), on_grid(*t, offset=0.05)
    # (nextafter(x, y) is x moved by one ulp: derivative 1 in x, 0 in y)
    return f64(*s), f64(*t)


NONDIFF_BINARY = {"and", "or", "xor", "shift_left", "shift_right_logical",
                  "shift_right_arithmetic"}


def _binary(name, seed):
    r = _params(name, seed)
    shape = _shape(r, min_rank=1)
    # same shapes, or a rank-0 operand on either side (lax broadcasts only scalars)
    s, t = [(shape, shape), ((), shape), (shape, ())][int(r.integers(0, 3))]
    if name == "rem":
        # rem(q * y, y) with q away from integers: rem's jumps stay away; both partials count
        return Case(name, lambda q, y: lax.rem(lax.mul(q, y), y),
                    (not_near_integers(*s), away(0.6, 2, *t)), f"s{seed}")
    return Case(name, getattr(lax, name), _binary_domain(name, s, t), f"s{seed}")


def _select_n(seed):
    r = _params("select_n", seed)
    shape, n = _shape(r, min_rank=1), int(r.integers(2, 4))
    wshape = () if r.random() < 0.25 else shape
    which = ((lambda q: q.random(wshape) < 0.5) if n == 2 else ints(0, n, *wshape))
    return Case("select_n", lax.select_n, (which,) + (f64(*shape),) * n, f"s{seed}")


def _broadcast_in_dim(seed):
    r = _params("broadcast_in_dim", seed)
    while True:   # (lax.broadcast_in_dim binds nothing for an identity broadcast)
        out = _shape(r, min_rank=1, max_rank=4)
        rank = int(r.integers(0, len(out) + 1))
        bdims = tuple(sorted(int(d) for d in r.choice(len(out), rank, replace=False)))
        shape = tuple(1 if r.random() < 0.3 else out[d] for d in bdims)
        if shape != out:
            break
    return Case("broadcast_in_dim", lambda x: lax.broadcast_in_dim(x, out, bdims),
                (f64(*shape),), f"s{seed}")


def _reshape(seed):
    r = _params("reshape", seed)
    while True:
        shape = _shape(r, min_rank=1, max_rank=4)
        n = int(np.prod(shape))
        primes = [p for d in shape for p in _factor(d)]
        r.shuffle(primes)
        cuts = sorted(int(c) for c in r.integers(0, len(primes) + 1, int(r.integers(0, 3))))
        new = tuple(int(np.prod(g)) for g in np.split(np.array(primes, int), cuts))
        if np.prod(new) == n and new != shape:
            return Case("reshape", lambda x: lax.reshape(x, new), (f64(*shape),), f"s{seed}")


def _factor(d):
    out, p = [], 2
    while d > 1:
        while d % p == 0:
            out.append(p)
            d //= p
        p += 1
    return out


def _transpose(seed):
    r = _params("transpose", seed)
    shape = _shape(r, min_rank=2, max_rank=4)
    perm = tuple(range(len(shape)))
    while perm == tuple(range(len(shape))):
        perm = tuple(int(p) for p in r.permutation(len(shape)))
    return Case("transpose", lambda x: lax.transpose(x, perm), (f64(*shape),), f"s{seed}")


def _rev(seed):
    r = _params("rev", seed)
    shape = _shape(r, min_rank=1)
    dims = tuple(sorted(int(d) for d in r.choice(len(shape), int(r.integers(1, len(shape) + 1)),
                                                 replace=False)))
    return Case("rev", lambda x: lax.rev(x, dims), (f64(*shape),), f"s{seed}")


def _slice(seed):
    r = _params("slice", seed)
    shape = _shape(r, min_rank=1, hi=6)
    start = [int(r.integers(0, d)) for d in shape]
    limit = [int(r.integers(s + 1, d + 1)) for s, d in zip(start, shape)]
    strides = [int(r.integers(1, 4)) for _ in shape]
    return Case("slice", lambda x: lax.slice(x, start, limit, strides), (f64(*shape),), f"s{seed}")


def _dynamic_slice(seed, update):
    """Random starts, some out of range (clamped so that the window fits, as in JAX)."""
    name = "dynamic_update_slice" if update else "dynamic_slice"
    r = _params(name, seed)
    shape = _shape(r, min_rank=1, hi=6)
    sizes = tuple(int(r.integers(1, d + 1)) for d in shape)
    starts = tuple(const(np.int32(r.integers(-2, d + 2))) for d in shape)
    if update:
        return Case(name, lambda x, u, *st: lax.dynamic_update_slice(x, u, st),
                    (f64(*shape), f64(*sizes)) + starts, f"s{seed}")
    return Case(name, lambda x, *st: lax.dynamic_slice(x, st, sizes),
                (f64(*shape),) + starts, f"s{seed}")


def _pad(seed):
    r = _params("pad", seed)
    while True:
        shape = _shape(r, min_rank=1, max_rank=2, hi=5)
        config = tuple((int(r.integers(-2, 3)), int(r.integers(-2, 3)), int(r.integers(0, 3)))
                       for _ in shape)
        if all(lo + hi + d + (d - 1) * i >= 1 and -lo < d + (d - 1) * i and -hi < d + (d - 1) * i
               for (lo, hi, i), d in zip(config, shape)):
            break
    if seed % 2:     # a constant padding value: only the operand is differentiated
        return Case("pad", lambda x: lax.pad(x, 0.0, config), (f64(*shape),), f"s{seed}-const")
    return Case("pad", lambda x, v: lax.pad(x, v, config), (f64(*shape), f64()), f"s{seed}")


def _concatenate(seed):
    r = _params("concatenate", seed)
    shape = list(_shape(r, min_rank=1))
    axis = int(r.integers(0, len(shape)))
    parts = []
    for _ in range(int(r.integers(2, 4))):
        shape[axis] = int(r.integers(1, 4))
        parts.append(f64(*shape))
    return Case("concatenate", lambda *xs: lax.concatenate(xs, axis), tuple(parts), f"s{seed}")


def _index_pattern(r, seed):
    """A random gather/scatter geometry: operand B+K+T, indices B+M+(k,), result B+M+T;
    index values drawn from a small range, so duplicates are common, and in odd seeds also
    beyond the edges (gather clamps them, scatters drop them)."""
    bd = int(r.random() < 0.35)
    B = _shape(r, bd, bd, hi=3)
    k = int(r.integers(1, 3))
    K = _shape(r, k, k, lo=2, hi=5)
    T = _shape(r, 0, 2 - bd, hi=3)
    M = _shape(r, 1 if r.random() < 0.8 else 0, 2 - bd, hi=4)
    margin = 2 * (seed % 2)
    idx = np.stack([r.integers(-margin, d + margin, B + M) for d in K], axis=-1).astype(np.int32)
    if margin:   # at least one index out of range
        c = int(r.integers(0, k))
        idx.reshape(-1, k)[int(r.integers(0, idx.size // k)), c] = r.choice([-1, K[c]])
    return B + K + T, idx, B + M + T, bd


INDEX_PATTERNS = {}   # case id -> (operand shape, indices, batch_dims): see the coverage test


def _gather(seed):
    x, idx, _, bd = _index_pattern(_params("gather", seed), seed)
    INDEX_PATTERNS[f"gather-s{seed}"] = (x, idx, bd)
    return Case("gather", lambda x, i: lax.gather(x, i, batch_dims=bd), (f64(*x), const(idx)),
                f"s{seed}")


SCATTER_DOMAIN = {   # (operand, updates) makers by shape
    "scatter_mul": lambda s, t: (f64(*s), away(0.5, 2, *t)),
    "scatter_min": lambda s, t: (on_grid(*s), on_grid(*t, offset=0.05)),
    "scatter_max": lambda s, t: (on_grid(*s), on_grid(*t, offset=0.05)),
}


def _scatter(name, seed):
    x, idx, u, bd = _index_pattern(_params(name, seed), seed)
    INDEX_PATTERNS[f"{name}-s{seed}"] = (x, idx, bd)
    mx, mu = SCATTER_DOMAIN.get(name, lambda s, t: (f64(*s), f64(*t)))(x, u)
    fn = getattr(lax, name)
    return Case(name, lambda x, i, u: fn(x, i, u, batch_dims=bd), (mx, const(idx), mu),
                f"s{seed}")


def _reduce(name, seed):
    r = _params(name, seed)
    shape = _shape(r, min_rank=1)
    n_axes = int(r.integers(0 if seed == 2 else 1, len(shape) + 1))   # seed 2: maybe none
    axes = tuple(sorted(int(a) for a in r.choice(len(shape), n_axes, replace=False)))
    make = away(0.5, 1.5, *shape) if name == "reduce_prod" else on_grid(*shape)
    return Case(name, lambda x: getattr(lax, name)(x, axes), (make,),
                f"s{seed}-axes" + "".join(map(str, axes)))


def _cumulative(name, seed):
    r = _params(name, seed)
    shape = list(_shape(r, min_rank=1))
    axis, rev = int(r.integers(0, len(shape))), bool(r.random() < 0.5)
    shape[axis] = max(shape[axis], 2)   # something to accumulate along
    make = {"cummax": on_grid, "cummin": on_grid,
            "cumprod": lambda *s: away(0.5, 1.5, *s)}.get(name, f64)(*shape)
    return Case(name, lambda x: getattr(lax, name)(x, axis, reverse=rev), (make,),
                f"s{seed}-axis{axis}" + ("-reverse" if rev else ""))


def _dot_general(seed):
    """Random batch, contracting and free dims, each placed anywhere in either operand."""
    r = _params("dot_general", seed)
    while True:
        nb, nc, nl, nr = (int(n) for n in r.integers(0, 3, 4))
        if nb + nc + nl <= 4 and nb + nc + nr <= 4:
            break
    size = {d: int(r.integers(1, 4)) for d in
            [("b", i) for i in range(nb)] + [("c", i) for i in range(nc)]
            + [("l", i) for i in range(nl)] + [("r", i) for i in range(nr)]}
    shared = [("b", i) for i in range(nb)] + [("c", i) for i in range(nc)]
    lhs, rhs = shared + [("l", i) for i in range(nl)], shared + [("r", i) for i in range(nr)]
    lhs, rhs = [lhs[i] for i in r.permutation(len(lhs))], [rhs[i] for i in r.permutation(len(rhs))]
    pos = lambda dims, kind, n: tuple(dims.index((kind, i)) for i in range(n))
    dn = ((pos(lhs, "c", nc), pos(rhs, "c", nc)), (pos(lhs, "b", nb), pos(rhs, "b", nb)))
    return Case("dot_general", lambda a, b: lax.dot_general(a, b, dn),
                (f64(*[size[d] for d in lhs]), f64(*[size[d] for d in rhs])), f"s{seed}")


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


def _sort(seed, variant):
    r = _params("sort-" + variant, seed)
    shape = _shape(r, min_rank=1)
    dim = int(r.integers(-len(shape), len(shape)))
    name = f"{variant}-s{seed}-dim{dim}"
    if variant == "keys":
        return Case("sort", lambda x: lax.sort(x, dim), (on_grid(*shape),), name)
    if variant == "keyed_float":
        return Case("sort", lambda k, v: lax.sort((k, v), dim, num_keys=1),
                    (on_grid(*shape), f64(*shape)), name)
    return Case("sort", lambda k, v: lax.sort((k, v), dim, num_keys=1),    # int keys
                (lambda q: q.permutation(int(np.prod(shape))).reshape(shape).astype(np.int32),
                 f64(*shape)), name)


def _top_k(seed):
    r = _params("top_k", seed)
    shape = _shape(r, min_rank=1, hi=5)
    k = int(r.integers(1, shape[-1] + 1))
    return Case("top_k", lambda x: lax.top_k(x, k), (on_grid(*shape),), f"s{seed}-k{k}")


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


def _cond_and_loops(seed):
    r = _params("control_flow", seed)
    s = _shape(r, max_rank=2)
    n = int(r.integers(1, 5))
    two = (f64(*s), f64(*s))
    return [
        Case("cond", lambda p, x, y: lax.cond(p, lambda a: lax.mul(lax.sin(a), y), lax.exp, x),
             (const(True),) + two, f"true-s{seed}"),
        Case("cond", lambda p, x, y: lax.cond(p, lambda a: lax.mul(lax.sin(a), y), lax.exp, x),
             (const(False),) + two, f"false-s{seed}"),
        Case("cond", lambda i, x, y: lax.switch(
            i, [lax.neg, lax.exp, lambda a: lax.mul(lax.mul(a, a), y)], x),
             (const(np.int32(2)),) + two, f"switch-s{seed}"),
        Case("cond", lambda i, x, y: lax.switch(
            i, [lambda a, b: (lax.mul(a, b), b), lambda a, b: (lax.sin(b), lax.mul(a, 3.0))], x, y),
             (const(np.int32(0)),) + two, f"switch_two_outputs-s{seed}"),
        Case("scan", _scan_fn(False), (f64(*s), f64(n, *s), f64(*s)), f"s{seed}-length{n}"),
        Case("scan", _scan_fn(True), (f64(*s), f64(n, *s), f64(*s)), f"reverse-s{seed}-length{n}"),
        Case("scan", _fori, two, f"fori_loop_static-s{seed}"),
        Case("remat", lambda x, y: pj.checkpoint(lambda a, b: lax.sin(lax.mul(a, b)))(x, y),
             two, f"s{seed}"),
    ]


def _misc(seed):
    r = _params("misc", seed)
    s = _shape(r, min_rank=1)
    return [
        Case("mul", lambda x: lax.mul(x, x), (f64(*s),), f"same_operand-s{seed}"),
        Case("convert_element_type",
             lambda x: lax.convert_element_type(lax.convert_element_type(x, np.float64, True),
                                                np.float64), (f64(*s),), f"weak_roundtrip-s{seed}"),
    ] + [Case("integer_pow", lambda x, y=y: lax.integer_pow(x, y), (away(0.5, 2, *s),),
              f"y{y}-s{seed}") for y in [(-3, 0, 2), (-1, 1, 5)][seed % 2]]


CASES = (
    [_unary(n, s) for n in P.UNARY if n not in NONDIFF_UNARY for s in SEEDS]
    + [_binary(n, s) for n in P.BINARY if n not in NONDIFF_BINARY for s in SEEDS]
    + [c for s in SEEDS for c in _misc(s)]
    + [_select_n(s) for s in range(3)]
    + [f(s) for f in (_broadcast_in_dim, _reshape, _transpose, _rev, _slice, _pad, _concatenate)
       for s in range(3)]
    + [_dynamic_slice(s, update) for update in (False, True) for s in range(3)]
    + [_gather(s) for s in range(5)]
    + [_scatter(n, s) for n in P.SCATTERS for s in range(3)]
    + [_reduce(n, s) for n in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod")
       for s in range(3)]
    + [Case("reduce_prod", lambda x: lax.reduce_prod(x, (1,)),
            (const(np.array([[1.5, 0.0, -0.7], [0.9, 1.2, -1.1]])),), "with_a_zero"),
       Case("reduce_prod", lambda x: lax.reduce_prod(x, (0,)),
            (const(np.array([[1.5, 0.0, -0.7], [0.0, 1.2, -1.1]])),), "with_two_zeros")]
    + [_cumulative(n, s) for n in P.CUMULATIVES for s in range(3)]
    + [Case("cumprod", lambda x, rev=rev: lax.cumprod(x, 0, reverse=rev),
            (const(np.array([1.3, -0.8, 0.0, 1.1, 0.7])),), "with_a_zero" + ("_reverse" if rev else ""))
       for rev in (False, True)]
    + [_dot_general(s) for s in range(5)]
    + [_rand_conv(s) for s in range(10)]
    + [Case("conv_general_dilated", lambda a, b: lax.conv_general_dilated(
        a, b, (2, 1), "SAME", rhs_dilation=(1, 2), feature_group_count=2),
        (f64(2, 4, 5, 6), f64(4, 2, 3, 2)), "same_padding_groups")]
    + [_rand_reduce_window(n, s) for n in P.REDUCE_WINDOWS for s in range(4)]
    + [_sort(s, v) for v in ("keys", "keyed_float", "int_keys") for s in SEEDS]
    + [_top_k(s) for s in range(3)]
    + _cond_and_loops(0)    # one shape each: these are the slowest cases
)
assert len({_id(c) for c in CASES}) == len(CASES), "case ids must be unique"


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
def _clipped(x):
    return x


_clipped = pj.custom_vjp(_clipped)
_clipped.defvjp(lambda x: (x, None), lambda _, g: (lax.max(lax.min(g, 1.0), -1.0),))



@pj.custom_jvp
def _sin_minus(x, y):
    return lax.sub(lax.sin(x), y)


@_sin_minus.defjvp
def _(primals, tangents):
    (x, y), (tx, ty) = primals, tangents
    return _sin_minus(x, y), lax.sub(lax.mul(lax.cos(x), tx), ty)


# Beyond CASES, reverse mode also meets a custom_vjp's tangent (custom_lin), the linear
# primitives a custom_jvp rule applies to tangents (sub: no built-in JVP rule emits it), and
# while_loop (whose transpose rule exists only to raise the clear "use fori_loop/scan" error).
LINEAR_WALK_EXTRA = [
    Case("sub", _sin_minus, (f64(3), f64(3)), "custom_jvp"),
    Case("custom_lin", lambda x: lax.mul(_clipped(lax.mul(x, 5.0)), x), (f64(3),)),
    Case("while", lambda x: lax.while_loop(
        lambda c: lax.lt(c[0], 3), lambda c: (lax.add(c[0], np.int32(1)), lax.sin(c[1])),
        (np.int32(0), x))[1], (f64(3),)),
]


class _RecordingRules(dict):
    """transpose_rules that remember every primitive reverse mode asks a rule for."""
    def __init__(self, rules):
        super().__init__(rules)
        self.asked = set()

    def get(self, prim, default=None):
        self.asked.add(prim.name)
        return super().get(prim, default)


def _linear_primitives(monkeypatch):
    """The primitives that appear in the linear (tangent) part of a linearized program,
    found by running reverse mode over every case: each of them needs a transpose rule.
    Derived from the JVP rules, so it is independent of which transpose rules exist."""
    rules = _RecordingRules(transpose_module.transpose_rules)
    monkeypatch.setattr(transpose_module, "transpose_rules", rules)
    for case in CASES + LINEAR_WALK_EXTRA:
        f, xs = _split_args(case, np.random.default_rng(0))
        out, f_vjp = pj.vjp(f, *xs)
        leaves, tree = tree_flatten(out)
        cts = [np.ones(np.shape(o)) if np.issubdtype(np.asarray(o).dtype, np.floating)
               else np.zeros(np.shape(o), pj.float0) for o in leaves]
        try:
            f_vjp(tree_unflatten(tree, cts))
        except NotImplementedError:   # no rule (reported below), or while's clear error
            pass
    monkeypatch.undo()
    return rules.asked


def test_every_primitive_has_its_rules(monkeypatch):
    # custom_lin (a custom_vjp's tangent) is only ever transposed, and iota takes no
    # operands, so neither meets a BatchTracer
    unbatched = {"iota", "custom_lin"}
    prims = list(abstract_eval_rules)
    no_jvp = [p.name for p in prims if p not in jvp_rules and p not in nondifferentiable]
    no_batch = [p.name for p in prims if p not in batching_rules and p.name not in unbatched]
    assert not no_jvp, f"no JVP rule for {no_jvp}"
    assert not no_batch, f"no batching rule for {no_batch}"
    linear = _linear_primitives(monkeypatch)
    with_rule = {p.name for p in transpose_rules}
    assert not linear - with_rule, \
        f"linear primitives without a transpose rule: {sorted(linear - with_rule)}"
    # and no transpose rule that reverse mode never uses (a primitive wrongly thought linear,
    # or one with no gradient case)
    assert not with_rule - linear, \
        f"transpose rules reverse mode never uses: {sorted(with_rule - linear)}"
    assert linear <= {p.name for p in prims}, linear - {p.name for p in prims}
    assert not {p.name for p in nondifferentiable} & linear


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


def test_random_index_patterns_cover_the_hard_cases():
    """The drawn gather/scatter patterns include, for gather and for the scatters: repeated
    indices (cotangents must accumulate), indices beyond the edges (clamped by gather, dropped
    by scatters), batch dims, two index dims and trailing window dims."""
    def kinds(x, idx, bd):
        K = x[bd:bd + idx.shape[-1]]
        rows = idx.reshape((int(np.prod(idx.shape[:bd])), -1, idx.shape[-1]))
        return {"duplicates": any(len({tuple(v) for v in b}) < len(b) for b in rows),
                "out_of_range": bool(np.any((idx < 0) | (idx >= np.array(K)))),
                "batch_dims": bd > 0, "two_index_dims": idx.shape[-1] == 2,
                "window_dims": len(x) > bd + idx.shape[-1]}
    for family in ("gather", "scatter"):
        seen = set()
        for cid, pattern in INDEX_PATTERNS.items():
            if cid.startswith(family):
                seen |= {k for k, v in kinds(*pattern).items() if v}
        missing = {"duplicates", "out_of_range", "batch_dims", "two_index_dims",
                   "window_dims"} - seen
        assert not missing, f"no {family} case draws {sorted(missing)}: change SEEDS or counts"


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

    # jit of the transformations equals the eager result, float0 tangents of integer
    # outputs included (same dtype and shape)
    jvp_fn = lambda xs, ts: tree_flatten(pj.jvp(f, tuple(xs), tuple(ts))[1])[0]
    for got, want in [(pj.jit(jvp_fn)(xs, ts), jvp_fn(xs, ts)),
                      (pj.jit(pull)(cts, *xs), pull(cts, *xs))]:
        assert [np.asarray(g).dtype == pj.float0 for g in got] == \
            [np.asarray(w).dtype == pj.float0 for w in want], "jit vs eager: float0 leaves"
        for g, w in zip(got, want):
            assert np.shape(g) == np.shape(w), ("jit vs eager", np.shape(g), np.shape(w))
        _close(_float_leaves(got), _float_leaves(want), "jit vs eager")
    # vmap over a batch of cotangents equals a loop
    batch = [np.stack([c, 2 * c + 1]) for c in cts]
    got = pj.vmap(pull, in_axes=(0,) + (None,) * len(xs))(batch, *xs)
    want = [np.stack(col) for col in zip(*[_float_leaves(pull([b[i] for b in batch], *xs))
                                           for i in range(2)])]
    _close(_float_leaves(got), want, "vmap of vjp vs a loop")
