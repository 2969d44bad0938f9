"""Sequence and Optional values.

A sequence is a Python list of arrays while the graph is traced (its length is static: it
is known at trace time, as polyjit's shapes are); an empty Optional is None and a full one
is its value. An op whose one output is a sequence returns it wrapped in a 1-tuple (a bare
list would read as several outputs). Positions (SequenceAt, SequenceInsert, SequenceErase)
must be known at trace time. Lists are pytrees, so sequence inputs and outputs pass through
jit as such."""
from __future__ import annotations

import numpy as np

from .... import lax
from .... import numpy as pnp
from . import op
from ._util import norm_axis, shape_of


def _seq(ctx, s, what="input"):
    if not isinstance(s, (list, tuple)):
        raise ctx.fail(f"{what} must be a sequence, got a {type(s).__name__}")
    return list(s)


def _pos(ctx, s, p, default, insert=False):
    if p is None:
        return default
    i = ctx.ints(p, "position")[0]
    n = len(s)
    lo, hi = -n, (n if insert else n - 1)
    if not lo <= i <= hi:
        raise ctx.fail(f"position {i} is out of range for a sequence of length {n}")
    return i + n if i < 0 else i


@op("SequenceEmpty")
def sequence_empty(ctx):
    return ([],)


@op("SequenceConstruct")
def sequence_construct(ctx, *xs):
    return (list(xs),)


@op("SequenceLength")
def sequence_length(ctx, s):
    return np.asarray(len(_seq(ctx, s)), np.int64)


@op("SequenceAt", static=(1,))
def sequence_at(ctx, s, p):
    s = _seq(ctx, s)
    return (s[_pos(ctx, s, p, 0)],)


@op("SequenceInsert", static=(2,))
def sequence_insert(ctx, s, x, p=None):
    s = _seq(ctx, s)
    s.insert(_pos(ctx, s, p, len(s), insert=True), x)
    return (s,)


@op("SequenceErase", static=(1,))
def sequence_erase(ctx, s, p=None):
    s = _seq(ctx, s)
    del s[_pos(ctx, s, p, len(s) - 1)]
    return (s,)


@op("ConcatFromSequence")
def concat_from_sequence(ctx, s):
    s = [pnp.asarray(x) for x in _seq(ctx, s)]
    if not s:
        raise ctx.fail("cannot concatenate an empty sequence")
    axis = ctx.attr("axis")
    if ctx.attr("new_axis", 0):
        return pnp.stack(s, axis=norm_axis(axis, len(shape_of(s[0])) + 1))
    return pnp.concatenate(s, axis=norm_axis(axis, len(shape_of(s[0]))))


@op("SplitToSequence", static=(1,))
def split_to_sequence(ctx, x, split=None):
    x = pnp.asarray(x)
    s = shape_of(x)
    axis = norm_axis(ctx.attr("axis", 0), len(s))
    n = s[axis]
    if split is None:
        parts = [1] * n
        keep = bool(ctx.attr("keepdims", 1))
    else:
        sp = ctx.const(split, "split")
        keep = True
        if sp.ndim == 0:
            k = int(sp)
            parts = [k] * (n // k) + ([n % k] if n % k else [])
        else:
            parts = [int(v) for v in sp]
        if sum(parts) != n:
            raise ctx.fail(f"split sizes {parts} do not add up to dimension {n}")
    out, start = [], 0
    for z in parts:
        piece = lax.slice_in_dim(x, start, start + z, 1, axis)
        out.append(piece if keep else pnp.squeeze(piece, axis))
        start += z
    return (out,)


@op("SequenceMap", fold=False)
def sequence_map(ctx, s, *rest):
    body = ctx.attr("body")
    s = _seq(ctx, s)
    others = list(rest)
    n = len(s)
    for o in others:
        if isinstance(o, (list, tuple)) and len(o) != n:
            raise ctx.fail(f"sequence inputs have different lengths ({n} and {len(o)})")
    outs = [[] for _ in body.output]
    for i in range(n):
        args = [s[i]] + [o[i] if isinstance(o, (list, tuple)) else o for o in others]
        for acc, y in zip(outs, ctx.run_subgraph(body, args)):
            acc.append(y)
    return outs


# ---------------------------------------------------------------- optionals
@op("Optional")
def optional(ctx, x=None):
    return (x,)


@op("OptionalHasElement")
def optional_has_element(ctx, x=None):
    return np.asarray(x is not None)


@op("OptionalGetElement")
def optional_get_element(ctx, x):
    if x is None:
        raise ctx.fail("the optional input is empty")
    return (x,)
