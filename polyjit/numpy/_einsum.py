"""Contractions on dot_general: matmul, dot, tensordot, inner, outer, vdot, kron, einsum."""
from __future__ import annotations

import string

from .. import lax
from ..tracer import dtypes
from ..tracer.core import get_aval
from ..tracer.primitives import ShapeError
from ._math import multiply, not_equal
from ._promote import arr, broadcast_shapes, canon_axis, cast, ensure_array, promote
from ._reductions import sum
from ._shape import broadcast_to, ravel, reshape


def _operands(fn, *xs, names=("x1", "x2")):
    """Arrays of one dtype; bool contracts in int32 (the caller turns the result back to bool)."""
    ops = [arr(x, fn, n) for x, n in zip(xs, names * len(xs))]
    ops = promote(fn, *ops, names=names * len(xs), shape=False)
    is_bool = dtypes.is_bool(get_aval(ops[0]).dtype)
    return [cast(o, dtypes.int32) if is_bool else o for o in ops], is_bool


def _finish(out, is_bool):
    return not_equal(out, 0) if is_bool else ensure_array(out)


def _dot_general(a, b, ca, cb, ba=(), bb=()):
    return lax.dot_general(a, b, ((tuple(ca), tuple(cb)), (tuple(ba), tuple(bb))))


def _check(fn, sa, sb, i, j):
    if sa[i] != sb[j]:
        raise ShapeError(f"{fn}: shapes {sa} and {sb} are not aligned: axis {i} of x1 (size "
                         f"{sa[i]}) != axis {j} of x2 (size {sb[j]})")


def matmul(x1, x2):
    """Matrix product with numpy's rules: 1-D operands are vectors, leading dims broadcast."""
    (a, b), is_bool = _operands("matmul", x1, x2)
    sa, sb = get_aval(a).shape, get_aval(b).shape
    if not sa or not sb:
        raise ValueError(f"matmul: operands must not be scalars, got shapes {sa} and {sb}; "
                         "use multiply")
    a = reshape(a, (1,) + sa) if len(sa) == 1 else a
    b = reshape(b, sb + (1,)) if len(sb) == 1 else b
    pa, pb = get_aval(a).shape, get_aval(b).shape
    _check("matmul", sa, sb, len(sa) - 1, max(len(sb) - 2, 0))
    if len(pb) == 2:     # (..., m, k) @ (k, n): no batch dims to line up
        out = _dot_general(a, b, [len(pa) - 1], [0])
    else:
        batch = broadcast_shapes("matmul", pa[:-2], pb[:-2])
        a, b = broadcast_to(a, batch + pa[-2:]), broadcast_to(b, batch + pb[-2:])
        nb = len(batch)
        out = _dot_general(a, b, [nb + 1], [nb], range(nb), range(nb))
    s = get_aval(out).shape
    if len(sa) == 1:
        out = lax.reshape(out, s[:-2] + s[-1:])
        s = get_aval(out).shape
    if len(sb) == 1:
        out = lax.reshape(out, s[:-1])
    return _finish(out, is_bool)


def dot(a, b):
    """numpy.dot: sum over the last axis of a and the second-to-last of b (last if 1-D)."""
    (x, y), is_bool = _operands("dot", a, b, names=("a", "b"))
    sa, sb = get_aval(x).shape, get_aval(y).shape
    if not sa or not sb:
        return multiply(x, y) if not is_bool else not_equal(multiply(x, y), 0)
    j = len(sb) - 1 if len(sb) == 1 else len(sb) - 2
    _check("dot", sa, sb, len(sa) - 1, j)
    return _finish(_dot_general(x, y, [len(sa) - 1], [j]), is_bool)


def vdot(a, b):
    return dot(ravel(a), ravel(b))


def inner(a, b):
    """Sum over the last axes of a and b."""
    (x, y), is_bool = _operands("inner", a, b, names=("a", "b"))
    sa, sb = get_aval(x).shape, get_aval(y).shape
    if not sa or not sb:
        return dot(x, y)
    _check("inner", sa, sb, len(sa) - 1, len(sb) - 1)
    return _finish(_dot_general(x, y, [len(sa) - 1], [len(sb) - 1]), is_bool)


def outer(a, b):
    """Outer product of the flattened inputs: a dot_general contracting nothing."""
    (x, y), is_bool = _operands("outer", a, b, names=("a", "b"))
    return _finish(_dot_general(ravel(x), ravel(y), [], []), is_bool)


def vecdot(x1, x2, axis=-1):
    """Dot product of vectors along axis, broadcasting the other dims."""
    return sum(multiply(x1, x2), axis=axis)


def tensordot(a, b, axes=2):
    """Sum over axes[0] of a and axes[1] of b (an int n: a's last n with b's first n)."""
    (x, y), is_bool = _operands("tensordot", a, b, names=("a", "b"))
    sa, sb = get_aval(x).shape, get_aval(y).shape
    if isinstance(axes, int):
        ax_a, ax_b = range(len(sa) - axes, len(sa)), range(axes)
    else:
        ax_a, ax_b = ([v] if isinstance(v, int) else v for v in axes)
    ax_a = [canon_axis(i, len(sa), "tensordot") for i in ax_a]
    ax_b = [canon_axis(i, len(sb), "tensordot") for i in ax_b]
    if len(ax_a) != len(ax_b):
        raise ValueError(f"tensordot: {len(ax_a)} axes of a but {len(ax_b)} of b")
    for i, j in zip(ax_a, ax_b):
        _check("tensordot", sa, sb, i, j)
    return _finish(_dot_general(x, y, ax_a, ax_b), is_bool)


def kron(a, b):
    """Kronecker product: blocks a[i...] * b."""
    x, y = arr(a, "kron"), arr(b, "kron", "b")
    sa, sb = get_aval(x).shape, get_aval(y).shape
    nd = max(len(sa), len(sb))
    sa, sb = (1,) * (nd - len(sa)) + sa, (1,) * (nd - len(sb)) + sb
    # interleave: (a0, 1, a1, 1, ...) * (1, b0, 1, b1, ...)
    xa = reshape(x, [d for s in sa for d in (s, 1)])
    yb = reshape(y, [d for s in sb for d in (1, s)])
    return reshape(multiply(xa, yb), [p * q for p, q in zip(sa, sb)])


# ---------------------------------------------------------------- einsum
def _parse(subscripts, shapes):
    subs = subscripts.replace(" ", "")
    lhs, out = subs.split("->") if "->" in subs else (subs, None)
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: subscripts {subscripts!r} name {len(terms)} operands, "
                         f"got {len(shapes)}")
    pool = [c for c in string.ascii_letters if c not in subs]
    n_ell = max([len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t], default=0)
    ell = "".join(pool[:n_ell])
    labels = []
    for i, (t, s) in enumerate(zip(terms, shapes)):
        if "..." in t:
            k = len(s) - (len(t) - 3)
            t = t.replace("...", ell[n_ell - k:] if k else "")
        if len(t) != len(s) or not t.isalpha() and t:
            raise ValueError(f"einsum: operand {i} has shape {s} but its subscripts {terms[i]!r} "
                             f"name {len(t)} axes")
        labels.append(t)
    if out is None:   # implicit output: broadcast dims, then labels used once, sorted
        counts = {c: "".join(labels).count(c) for c in "".join(labels)}
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    missing = set(out) - set("".join(labels))
    if missing:
        raise ValueError(f"einsum: output subscripts {sorted(missing)} appear in no operand")
    return labels, out


def _diagonals(x, labels):
    """Repeated labels within one operand: keep the diagonal (iota-equality mask) and sum."""
    while len(set(labels)) != len(labels):
        c = next(c for c in labels if labels.count(c) > 1)
        i = labels.index(c)
        j = labels.index(c, i + 1)
        s = get_aval(x).shape
        same = lax.eq(lax.iota(dtypes.int32, s, i), lax.iota(dtypes.int32, s, j))
        x = lax.reduce_sum(lax.select(same, x, lax.full(s, 0, get_aval(x).dtype)), (j,))
        labels = labels[:j] + labels[j + 1:]
    return x, labels


def _sum_out(x, labels, keep):
    axes = [i for i, c in enumerate(labels) if c not in keep]
    if axes:
        x = lax.reduce_sum(x, axes)
    return x, "".join(c for c in labels if c in keep)


def _expand_to(x, labels, sizes):
    """Broadcast size-1 axes (from broadcasting '...' dims) to their label's size."""
    s = get_aval(x).shape
    want = tuple(sizes[c] for c in labels)
    return x if s == want else lax.broadcast_in_dim(x, want, range(len(s)))


def einsum(subscripts, *operands, optimize=None):
    """Einstein summation, contracting operands left to right with dot_general."""
    ops, is_bool = _operands("einsum", *operands, names=("operands",))
    labels, out = _parse(subscripts, [get_aval(o).shape for o in ops])
    sizes = {}
    for lab, o in zip(labels, ops):
        for c, d in zip(lab, get_aval(o).shape):
            if sizes.get(c, 1) not in (1, d) and d != 1:
                raise ShapeError(f"einsum: label {c!r} has sizes {sizes[c]} and {d} in "
                                 f"{subscripts!r}")
            sizes[c] = d if sizes.get(c, 1) == 1 else sizes[c]
    terms = []
    for k, (x, lab) in enumerate(zip(ops, labels)):
        x, lab = _diagonals(x, lab)
        others = set(out).union(*[labels[i] for i in range(len(ops)) if i != k])
        terms.append(_sum_out(x, lab, others))
    while len(terms) > 1:
        (a, la), (b, lb), rest = terms[0], terms[1], terms[2:]
        later = set(out).union(*[t[1] for t in rest])
        shared = [c for c in la if c in lb]
        batch = [c for c in shared if c in later]
        contract = [c for c in shared if c not in later]
        a, b = _expand_to(a, la, sizes), _expand_to(b, lb, sizes)
        x = _dot_general(a, b, [la.index(c) for c in contract], [lb.index(c) for c in contract],
                         [la.index(c) for c in batch], [lb.index(c) for c in batch])
        lab = "".join(batch) + "".join(c for c in la if c not in shared) + \
            "".join(c for c in lb if c not in shared)
        terms = [_sum_out(x, lab, later)] + rest
    x, lab = terms[0]
    x = lax.transpose(_expand_to(x, lab, sizes), [lab.index(c) for c in out])
    return _finish(x, is_bool)
