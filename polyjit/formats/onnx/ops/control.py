"""If, Loop and Scan: run in Python while their control values are known at trace time,
otherwise lowered to lax.cond / lax.while_loop / lax.scan."""
from __future__ import annotations

import numpy as np

from .... import lax
from .... import numpy as pnp
from ....tracer.core import Tracer
from . import op
from ._util import cast, dtype_of, shape_of

MAX_UNROLL = 100_000   # a Loop unrolled at trace time stops here (a model bug or an attack)


def _known(x):
    return x is None or not isinstance(x, Tracer)


@op("If", fold=False)
def if_op(ctx, cond):
    then_g, else_g = ctx.attr("then_branch"), ctx.attr("else_branch")
    if _known(cond):
        return ctx.run_subgraph(then_g if bool(np.asarray(cond).reshape(-1)[0]) else else_g, [])
    pred = pnp.reshape(cond, ())

    def branch(g):
        return lambda: [pnp.asarray(v) for v in ctx.run_subgraph(g, [])]
    try:
        return lax.cond(pred, branch(then_g), branch(else_g))
    except TypeError as e:
        raise ctx.fail(f"the branches of a data-dependent If must return the same shapes and "
                       f"types: {e}") from e


def _match(new, old):
    """A loop-carried value in the carry's dtype (bodies may return constants of other kinds)."""
    if new is None:
        return None
    return pnp.asarray(cast(new, dtype_of(old)) if dtype_of(new) != dtype_of(old) else new)


@op("Loop", fold=False, static=(0,))
def loop(ctx, M, cond, *vs):
    body = ctx.attr("body")
    n_carry = len(vs)
    n_scan = len(body.output) - 1 - n_carry
    m = None if M is None or not _known(M) else int(np.asarray(M).reshape(-1)[0])
    c = True if cond is None else cond
    vs = list(vs)
    scans = [[] for _ in range(n_scan)]
    i = 0
    while _known(M) and _known(c):
        if (m is not None and i >= m) or not bool(np.asarray(c).reshape(-1)[0]):
            return vs + [_stack(ctx, s, body, n_carry + 1 + j) for j, s in enumerate(scans)]
        if i >= MAX_UNROLL:
            raise ctx.fail(f"the loop ran {MAX_UNROLL} iterations at trace time without ending")
        outs = ctx.run_subgraph(body, [np.asarray(i, np.int64), np.asarray(bool(np.asarray(c).reshape(-1)[0])), *vs])
        c, vs = outs[0], list(outs[1:1 + n_carry])
        for s, y in zip(scans, outs[1 + n_carry:]):
            s.append(y)
        i += 1
    if n_scan:
        raise ctx.fail("a Loop with scan outputs needs its trip count and condition known at "
                       "trace time (the outputs' length would depend on data)")
    return _while(ctx, body, M, i, c, vs)


def _stack(ctx, parts, body, out_idx):
    if not parts:
        raise ctx.fail("a Loop that runs zero times cannot give scan outputs a shape")
    return pnp.stack([pnp.asarray(p) for p in parts])


def _while(ctx, body, M, i, c, vs):
    """The rest of a Loop whose condition or trip count depends on data."""
    m = np.asarray(np.iinfo(np.int64).max, np.int64) if M is None else pnp.reshape(cast(M, np.int64), ())
    init = (np.asarray(i, np.int64), pnp.reshape(cast(pnp.asarray(c), bool), ()), m,
            [pnp.asarray(v) for v in vs])

    def cond_fn(carry):
        it, cc, mm, _ = carry
        return pnp.logical_and(pnp.less(it, mm), cc)

    def body_fn(carry):
        it, cc, mm, v = carry
        outs = ctx.run_subgraph(body, [it, cc, *v])
        new_c = pnp.reshape(cast(pnp.asarray(outs[0]), bool), ())
        return (pnp.add(it, np.int64(1)), new_c, mm,
                [_match(n, o) for n, o in zip(outs[1:1 + len(v)], v)])
    return list(lax.while_loop(cond_fn, body_fn, init)[3])


@op("Scan", fold=False)
def scan(ctx, *args):
    if ctx.version < 9:
        return _scan8(ctx, *args)
    body = ctx.attr("body")
    n_in = ctx.attr("num_scan_inputs")
    states, xs = list(args[:len(args) - n_in]), list(args[len(args) - n_in:])
    in_axes = ctx.attr("scan_input_axes") or [0] * n_in
    in_dirs = ctx.attr("scan_input_directions") or [0] * n_in
    xs = [pnp.moveaxis(pnp.asarray(x), a, 0) for x, a in zip(xs, in_axes)]
    xs = [lax.rev(x, (0,)) if d else x for x, d in zip(xs, in_dirs)]
    n_state = len(states)

    def step(carry, x):
        outs = ctx.run_subgraph(body, list(carry) + list(x))
        new = [_match(n, o) for n, o in zip(outs[:n_state], carry)]
        return new, [pnp.asarray(y) for y in outs[n_state:]]
    final, ys = lax.scan(step, [pnp.asarray(s) for s in states], xs)
    n_out = len(ys)
    out_axes = ctx.attr("scan_output_axes") or [0] * n_out
    out_dirs = ctx.attr("scan_output_directions") or [0] * n_out
    ys = [lax.rev(y, (0,)) if d else y for y, d in zip(ys, out_dirs)]
    ys = [pnp.moveaxis(y, 0, a if a >= 0 else a + len(shape_of(y))) for y, a in zip(ys, out_axes)]
    return list(final) + ys


def _scan8(ctx, seq_lens, *args):
    """Scan-8: a leading batch axis on every state and scan input (scan axis 1), run as one
    opset-9 style scan per batch element; sequence_lens must be absent or full length."""
    body = ctx.attr("body")
    n_state = len(args) - ctx.attr("num_scan_inputs")
    states, xs = [pnp.asarray(a) for a in args[:n_state]], [pnp.asarray(a) for a in args[n_state:]]
    dirs = ctx.attr("directions") or [0] * len(xs)
    batch = shape_of((states + xs)[0])[0]
    seq = shape_of(xs[0])[1] if xs else 0
    if seq_lens is not None:
        if not _known(seq_lens) or np.any(np.asarray(seq_lens) != seq):
            raise ctx.fail("Scan-8 with sequence_lens shorter than the sequence (or unknown at "
                           "trace time) is not supported")
    finals, outs = [], []
    for b in range(batch):
        xb = [lax.rev(x[b], (0,)) if d else x[b] for x, d in zip(xs, dirs)]

        def step(carry, x):
            o = ctx.run_subgraph(body, list(carry) + list(x))
            return [_match(nv, ov) for nv, ov in zip(o[:n_state], carry)], \
                [pnp.asarray(y) for y in o[n_state:]]
        f, ys = lax.scan(step, [s[b] for s in states], xb)
        finals.append(f)
        outs.append(ys)
    return ([pnp.stack([f[i] for f in finals]) for i in range(n_state)]
            + [pnp.stack([y[i] for y in outs]) for i in range(len(outs[0]) if outs else 0)])
