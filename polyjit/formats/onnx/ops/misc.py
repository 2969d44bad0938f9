"""Losses, attention and other composite ONNX ops."""
from __future__ import annotations

import math

import numpy as np

from .... import lax
from .... import numpy as pnp
from . import op
from ._util import cast, dtype_of, ndim_of, norm_axis, scalar_like, shape_of
from .reduce import log_softmax, softmax


def nll(ctx, logp, target, weight=None):
    """Negative log-likelihood with ignore_index and class weights; (loss, )."""
    ignore = ctx.attr("ignore_index")
    target = cast(target, np.int64)
    valid = None
    if ignore is not None:
        valid = pnp.not_equal(target, np.int64(ignore))
        target = pnp.where(valid, target, np.int64(0))
    picked = pnp.squeeze(pnp.take_along_axis(logp, pnp.expand_dims(target, 1), axis=1), 1)
    w = pnp.ones(shape_of(target), dtype_of(logp)) if weight is None else pnp.take(weight, target)
    if valid is not None:
        w = pnp.where(valid, w, scalar_like(0, w))
    loss = pnp.negative(pnp.multiply(picked, w))
    red = ctx.attr("reduction", "mean")
    if red == "none":
        return loss
    if red == "sum":
        return pnp.sum(loss)
    return pnp.divide(pnp.sum(loss), pnp.sum(w))


@op("NegativeLogLikelihoodLoss")
def nll_loss(ctx, x, target, weight=None):
    return nll(ctx, x, target, weight)


@op("SoftmaxCrossEntropyLoss")
def softmax_ce(ctx, scores, labels, weight=None):
    logp = log_softmax(pnp.asarray(scores), 1)
    loss = nll(ctx, logp, labels, weight)
    return [loss, logp] if len(ctx.node.output) > 1 else loss


# ---------------------------------------------------------------- attention
def _heads(x, n_heads):
    """(B, S, H*D) -> (B, H, S, D); 4-D inputs are already split."""
    if ndim_of(x) == 4:
        return x
    b, s, hd = shape_of(x)
    return pnp.transpose(pnp.reshape(x, (b, s, n_heads, hd // n_heads)), (0, 2, 1, 3))


@op("Attention")
def attention(ctx, q, k, v, mask=None, past_k=None, past_v=None, nonpad=None):
    three_d = ndim_of(q) == 3
    q = _heads(q, ctx.attr("q_num_heads"))
    k = _heads(k, ctx.attr("kv_num_heads"))
    v = _heads(v, ctx.attr("kv_num_heads"))
    past_len = 0 if past_k is None else shape_of(past_k)[2]
    if past_k is not None:
        k = pnp.concatenate([past_k, k], axis=2)
        v = pnp.concatenate([past_v, v], axis=2)
    present_k, present_v = k, v
    dt = dtype_of(q)
    sq, sk = shape_of(q)[2], shape_of(k)[2]
    bias = _attention_bias(ctx, mask, nonpad, past_len, sq, sk, dt)
    hq, hk = shape_of(q)[1], shape_of(k)[1]
    if hq != hk:   # grouped-query attention: each kv head serves hq // hk query heads
        k, v = pnp.repeat(k, hq // hk, axis=1), pnp.repeat(v, hq // hk, axis=1)
    scale = ctx.attr("scale", 1.0 / math.sqrt(shape_of(q)[-1]))
    root = scalar_like(math.sqrt(scale), q)   # scaling both sides, as the spec does
    scores = pnp.matmul(pnp.multiply(q, root), pnp.multiply(pnp.swapaxes(k, -1, -2), root))
    cap = ctx.attr("softcap", 0.0)
    if cap:   # before the mask, so masked positions stay -inf
        scores = pnp.multiply(scalar_like(cap, scores), pnp.tanh(pnp.divide(scores, scalar_like(cap, scores))))
    mode = ctx.attr("qk_matmul_output_mode", 0)
    qk_out = scores
    scores = pnp.add(scores, bias)
    if mode == 2:   # 0 and 1: the (softcapped) product; 2: with the bias added
        qk_out = scores
    prec = ctx.attr("softmax_precision")
    if prec:
        from ._util import onnx_dtype
        scores = cast(scores, onnx_dtype(ctx, prec))
    row_masked = pnp.isneginf(pnp.max(bias, axis=-1, keepdims=True))
    probs = softmax(pnp.where(row_masked, scalar_like(0, scores), scores), -1)
    probs = pnp.where(row_masked, scalar_like(0, probs), probs)
    if mode == 3:
        qk_out = probs
    y = pnp.matmul(cast(probs, dt), v)
    if three_d:
        b, h, s, dv = shape_of(y)
        y = pnp.reshape(pnp.transpose(y, (0, 2, 1, 3)), (b, s, h * dv))
    return [y, present_k, present_v, cast(qk_out, dt)]


def _attention_bias(ctx, mask, nonpad, past_len, sq, sk, dt):
    """The additive (0 / -inf) bias from attn_mask, causality, windows and key padding."""
    zero, ninf = np.asarray(0, dt), np.asarray(-np.inf, dt)
    if mask is not None:
        boolean = dtype_of(mask) == np.bool_
        mask = _pad_mask(mask, sk, False if boolean else -np.inf)
        mask = pnp.where(mask, zero, ninf) if boolean else cast(mask, dt)
    bias = pnp.zeros((sq, sk), dt) if mask is None else pnp.add(pnp.zeros((sq, sk), dt), mask)
    i = np.arange(sq).reshape(sq, 1)
    j = np.arange(sk).reshape(1, sk)
    if nonpad is not None and past_len == 0:   # external cache: per-batch frontier
        offset = pnp.reshape(pnp.subtract(cast(nonpad, np.int64), np.int64(sq)), (-1, 1, 1, 1))
    else:
        offset = np.int64(past_len)
    pos = pnp.add(np.int64(1) * i, offset)    # the absolute position of each query
    if ctx.attr("is_causal", 0):
        bias = pnp.where(pnp.less_equal(j, pos), bias, ninf)
    left, right = ctx.attr("left_window_size", -1), ctx.attr("right_window_size", -1)
    if left >= 0 or right >= 0:
        diff = pnp.subtract(pos, j)
        ok = np.asarray(True)
        if left >= 0:
            ok = pnp.logical_and(ok, pnp.less_equal(diff, np.int64(left)))
        if right >= 0:
            ok = pnp.logical_and(ok, pnp.less_equal(pnp.negative(diff), np.int64(right)))
        bias = pnp.where(ok, bias, ninf)
    if nonpad is not None:
        keep = pnp.less(j, pnp.reshape(cast(nonpad, np.int64), (-1, 1, 1, 1)))
        bias = pnp.add(bias, pnp.where(keep, zero, ninf))
    return bias


def _pad_mask(mask, total, fill):
    """Masks may cover fewer key positions than there are; the rest are padded with fill."""
    n = shape_of(mask)[-1]
    if n >= total:
        return mask
    cfg = [(0, 0, 0)] * (ndim_of(mask) - 1) + [(0, total - n, 0)]
    return lax.pad(pnp.asarray(mask), np.asarray(fill, dtype_of(mask)), cfg)
