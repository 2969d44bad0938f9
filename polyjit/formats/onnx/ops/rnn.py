"""Recurrent ONNX ops (RNN, GRU, LSTM) as lax.scan over time, per direction."""
from __future__ import annotations

import numpy as np

from .... import lax
from .... import numpy as pnp
from . import op
from ._util import cast, dtype_of, scalar_like, shape_of


def _activation(name, alpha, beta):
    def f(x):
        a = None if alpha is None else scalar_like(alpha, x)
        b = None if beta is None else scalar_like(beta, x)
        if name == "Sigmoid":
            return lax.logistic(x)
        if name == "Tanh":
            return pnp.tanh(x)
        if name == "Relu":
            return pnp.maximum(x, scalar_like(0, x))
        if name == "HardSigmoid":
            return pnp.clip(pnp.add(pnp.multiply(a, x), b), scalar_like(0, x), scalar_like(1, x))
        if name == "LeakyRelu":
            return pnp.where(pnp.greater_equal(x, scalar_like(0, x)), x, pnp.multiply(a, x))
        if name == "ThresholdedRelu":
            return pnp.where(pnp.greater(x, a), x, scalar_like(0, x))
        if name == "ScaledTanh":
            return pnp.multiply(a, pnp.tanh(pnp.multiply(b, x)))
        if name == "Affine":
            return pnp.add(pnp.multiply(a, x), b)
        if name == "Elu":
            return pnp.where(pnp.greater(x, scalar_like(0, x)), x, pnp.multiply(a, pnp.expm1(x)))
        if name == "Softsign":
            return pnp.divide(x, pnp.add(scalar_like(1, x), pnp.abs(x)))
        if name == "Softplus":
            return pnp.logaddexp(x, scalar_like(0, x))
        raise ValueError(f"unsupported recurrent activation {name!r}")
    return f


_DEFAULT_ALPHA = {"LeakyRelu": 0.01, "HardSigmoid": 0.2, "ThresholdedRelu": 1.0, "Elu": 1.0}
_DEFAULT_BETA = {"HardSigmoid": 0.5}


def _activations(ctx, defaults, n_dirs):
    names = ctx.attr("activations") or defaults * n_dirs
    alphas = list(ctx.attr("activation_alpha") or [])
    betas = list(ctx.attr("activation_beta") or [])
    fns = []
    for i, nm in enumerate(names):
        a = alphas.pop(0) if nm in ("LeakyRelu", "HardSigmoid", "ThresholdedRelu", "ScaledTanh",
                                   "Affine", "Elu") and alphas else _DEFAULT_ALPHA.get(nm)
        b = betas.pop(0) if nm in ("HardSigmoid", "ScaledTanh", "Affine") and betas else \
            _DEFAULT_BETA.get(nm)
        fns.append(_activation(nm, a, b))
    per = len(defaults)
    return [fns[d * per:(d + 1) * per] for d in range(n_dirs)]


def _clip(ctx, x):
    c = ctx.attr("clip")
    return x if c is None else pnp.clip(x, scalar_like(-c, x), scalar_like(c, x))


def _run(ctx, x, seq_lens, cell, init_states, n_dirs):
    """Scan `cell(d, states, x_t) -> states` over time for each direction; (Y, finals)."""
    layout = ctx.attr("layout", 0)
    if layout:
        x = pnp.swapaxes(x, 0, 1)
        init_states = [[pnp.swapaxes(s, 0, 1) if False else s for s in st] for st in init_states]
    T, B = shape_of(x)[:2]
    lens = None if seq_lens is None else cast(seq_lens, np.int64)
    ys, finals = [], []
    for d in range(n_dirs):
        reverse = ctx.attr("direction", "forward") == "reverse" or d == 1
        ts = np.arange(T, dtype=np.int64)
        xs = x
        if reverse and lens is not None:   # reverse each sequence within its own length
            idx = pnp.where(pnp.less(ts[:, None], lens[None, :]),
                            pnp.subtract(pnp.subtract(lens[None, :], np.int64(1)), ts[:, None]),
                            ts[:, None])
            xs = pnp.take_along_axis(x, pnp.expand_dims(idx, -1), axis=0)
        elif reverse:
            xs = lax.rev(pnp.asarray(x), (0,))

        def step(states, inp, d=d):
            t, xt = inp
            new = cell(d, states, xt)
            if lens is not None:
                live = pnp.reshape(pnp.less(t, lens), (B, 1))
                new = [pnp.where(live, n, o) for n, o in zip(new, states)]
                y = pnp.where(live, new[0], scalar_like(0, new[0]))
            else:
                y = new[0]
            return new, y
        final, y = lax.scan(step, [pnp.asarray(s) for s in init_states[d]], (ts, pnp.asarray(xs)))
        if reverse:
            if lens is not None:
                y = pnp.take_along_axis(y, pnp.expand_dims(idx, -1), axis=0)
            else:
                y = lax.rev(y, (0,))
        ys.append(y)
        finals.append(final)
    Y = pnp.stack(ys, axis=1)                       # T, dirs, B, H
    outs = [Y] + [pnp.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
    if layout:
        outs = [pnp.transpose(Y, (2, 0, 1, 3))] + [pnp.swapaxes(o, 0, 1) for o in outs[1:]]
    return outs


def _setup(ctx, x, W, h0_list, n_gates):
    n_dirs = 2 if ctx.attr("direction", "forward") == "bidirectional" else 1
    H = ctx.attr("hidden_size") or shape_of(W)[1] // n_gates
    layout = ctx.attr("layout", 0)
    B = shape_of(x)[1 if not layout else 0]
    dt = dtype_of(x)
    states = []
    for d in range(n_dirs):
        per = []
        for h0 in h0_list:
            if h0 is None:
                per.append(pnp.zeros((B, H), dt))
            else:
                per.append(h0[:, d] if layout else h0[d])
        states.append(per)
    return n_dirs, H, states


def _bias(B, d, n, H):
    if B is None:
        return 0.0, 0.0
    return B[d, :n * H], B[d, n * H:]


@op("RNN")
def rnn(ctx, x, W, R, B=None, seq_lens=None, h0=None):
    n_dirs, H, states = _setup(ctx, x, W, [h0], 1)
    acts = _activations(ctx, ["Tanh"], n_dirs)

    def cell(d, st, xt):
        wb, rb = _bias(B, d, 1, H)
        z = pnp.add(pnp.add(pnp.matmul(xt, pnp.transpose(W[d])), wb),
                    pnp.add(pnp.matmul(st[0], pnp.transpose(R[d])), rb))
        return [acts[d][0](_clip(ctx, z))]
    Y, Yh = _run(ctx, x, seq_lens, cell, states, n_dirs)
    return [Y, Yh]


@op("GRU")
def gru(ctx, x, W, R, B=None, seq_lens=None, h0=None):
    n_dirs, H, states = _setup(ctx, x, W, [h0], 3)
    acts = _activations(ctx, ["Sigmoid", "Tanh"], n_dirs)
    lbr = ctx.attr("linear_before_reset", 0)

    def cell(d, st, xt):
        f, g = acts[d]
        h = st[0]
        wb, rb = _bias(B, d, 3, H)
        xw = pnp.add(pnp.matmul(xt, pnp.transpose(W[d])), wb)
        Rd = R[d]
        rbz = rb if B is None else rb
        hr = pnp.matmul(h, pnp.transpose(Rd[:2 * H]))
        hr = pnp.add(hr, rbz[:2 * H] if B is not None else 0.0)
        z = f(_clip(ctx, pnp.add(xw[:, :H], hr[:, :H])))
        r = f(_clip(ctx, pnp.add(xw[:, H:2 * H], hr[:, H:])))
        rh_b = rb[2 * H:] if B is not None else scalar_like(0, h)
        if lbr:
            hh = pnp.multiply(r, pnp.add(pnp.matmul(h, pnp.transpose(Rd[2 * H:])), rh_b))
        else:
            hh = pnp.add(pnp.matmul(pnp.multiply(r, h), pnp.transpose(Rd[2 * H:])), rh_b)
        n = g(_clip(ctx, pnp.add(xw[:, 2 * H:], hh)))
        one = scalar_like(1, z)
        return [pnp.add(pnp.multiply(pnp.subtract(one, z), n), pnp.multiply(z, h))]
    Y, Yh = _run(ctx, x, seq_lens, cell, states, n_dirs)
    return [Y, Yh]


@op("LSTM")
def lstm(ctx, x, W, R, B=None, seq_lens=None, h0=None, c0=None, P=None):
    n_dirs, H, states = _setup(ctx, x, W, [h0, c0], 4)
    acts = _activations(ctx, ["Sigmoid", "Tanh", "Tanh"], n_dirs)
    couple = ctx.attr("input_forget", 0)

    def cell(d, st, xt):
        f, g, hfn = acts[d]
        h, c = st
        wb, rb = _bias(B, d, 4, H)
        z = pnp.add(pnp.add(pnp.matmul(xt, pnp.transpose(W[d])), wb),
                    pnp.add(pnp.matmul(h, pnp.transpose(R[d])), rb))
        zi, zo, zf, zc = (z[:, k * H:(k + 1) * H] for k in range(4))
        if P is not None:
            pi, po, pf = P[d, :H], P[d, H:2 * H], P[d, 2 * H:]
            zi, zf = pnp.add(zi, pnp.multiply(pi, c)), pnp.add(zf, pnp.multiply(pf, c))
        i = f(_clip(ctx, zi))
        fg = pnp.subtract(scalar_like(1, i), i) if couple else f(_clip(ctx, zf))
        c_new = pnp.add(pnp.multiply(fg, c), pnp.multiply(i, g(_clip(ctx, zc))))
        if P is not None:
            zo = pnp.add(zo, pnp.multiply(po, c_new))
        o = f(_clip(ctx, zo))
        return [pnp.multiply(o, hfn(c_new)), c_new]
    Y, Yh, Yc = _run(ctx, x, seq_lens, cell, states, n_dirs)
    return [Y, Yh, Yc]
