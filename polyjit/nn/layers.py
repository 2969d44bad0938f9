"""Functional layers with a light module wrapper.

Every layer is a `Module`: `params, state = m.init(key, example)` and
`y, state = m.apply(params, state, x, train=False, key=None)`. `params` are the trainable
arrays (a dict pytree, PyTorch layouts and default initializations), `state` holds
non-trained values such as BatchNorm running statistics and is returned, never mutated.
"""
from __future__ import annotations

import contextlib
import math

from .. import lax, random
from ..tracer import dtypes
from ..tracer.primitives import ShapeError
from . import initializers as init_
from .activations import softmax


def _pnp():
    from .. import numpy as pnp
    return pnp


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


class Module:
    """Base: subclasses define `init_params(key, x)` and `forward(params, x)`, or override
    `init`/`apply` when they keep state or need randomness."""

    def init(self, key, x):
        return self.init_params(key, x), {}

    def init_params(self, key, x):
        return {}

    def apply(self, params, state, x, *, train=False, key=None):
        return self.forward(params, x), state

    def forward(self, params, x):
        raise NotImplementedError(f"{type(self).__name__} defines neither forward nor apply")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    def _expect(self, x, ndim=None, axis=None, size=None, what="input"):
        if ndim is not None and x.ndim != ndim:
            raise ShapeError(f"{self!r}: expected a rank-{ndim} {what}, got shape {tuple(x.shape)}")
        if axis is not None and x.shape[axis] != size:
            want = ["*"] * x.ndim
            want[axis] = str(size)
            raise ShapeError(f"{self!r}: expected {what} of shape ({', '.join(want)}), "
                             f"got {tuple(x.shape)}")


class Linear(Module):
    def __init__(self, features, use_bias=True):
        self.features, self.use_bias = features, use_bias

    def init_params(self, key, x):
        kw, kb = random.split(key)
        fan_in = x.shape[-1]
        p = {"weight": init_.torch_default_weight(kw, (self.features, fan_in))}
        if self.use_bias:
            p["bias"] = init_.torch_default_bias(fan_in)(kb, (self.features,))
        return p

    def forward(self, params, x):
        self._expect(x, axis=-1, size=params["weight"].shape[1])
        y = x @ params["weight"].T
        return y + params["bias"] if "bias" in params else y


class Conv(Module):
    """N-d convolution over (N, C, *spatial) like torch.nn.ConvNd; padding int, tuple, 'same' or 'valid'."""

    def __init__(self, features, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 use_bias=True, ndim=2):
        self.features, self.kernel_size, self.stride = features, _tuple(kernel_size, ndim), _tuple(stride, ndim)
        self.padding, self.dilation, self.groups = padding, _tuple(dilation, ndim), groups
        self.use_bias, self.ndim = use_bias, ndim

    def init_params(self, key, x):
        self._expect(x, ndim=self.ndim + 2)
        kw, kb = random.split(key)
        cin = x.shape[1]
        if cin % self.groups or self.features % self.groups:
            raise ShapeError(f"{self!r}: {cin} input and {self.features} output channels must "
                             f"divide by groups={self.groups}")
        shape = (self.features, cin // self.groups) + self.kernel_size
        p = {"weight": init_.torch_default_weight(kw, shape)}
        if self.use_bias:
            p["bias"] = init_.torch_default_bias(math.prod(shape[1:]))(kb, (self.features,))
        return p

    def _pads(self):
        if isinstance(self.padding, str):
            return self.padding.upper()
        return [(p, p) for p in _tuple(self.padding, self.ndim)]

    def forward(self, params, x):
        w = params["weight"]
        self._expect(x, ndim=self.ndim + 2)
        self._expect(x, axis=1, size=w.shape[1] * self.groups)
        y = lax.conv_general_dilated(x, w.astype(x.dtype), self.stride, self._pads(),
                                     rhs_dilation=self.dilation, feature_group_count=self.groups)
        if "bias" in params:
            y = y + params["bias"].reshape((1, -1) + (1,) * self.ndim)
        return y


def Conv1d(features, kernel_size, **kw):
    return Conv(features, kernel_size, ndim=1, **kw)


def Conv2d(features, kernel_size, **kw):
    return Conv(features, kernel_size, ndim=2, **kw)


class ConvTranspose2d(Module):
    """torch.nn.ConvTranspose2d: weight (in, out/groups, kh, kw)."""

    def __init__(self, features, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 dilation=1, use_bias=True):
        self.features, self.kernel_size = features, _tuple(kernel_size, 2)
        self.stride, self.padding = _tuple(stride, 2), _tuple(padding, 2)
        self.output_padding, self.dilation = _tuple(output_padding, 2), _tuple(dilation, 2)
        self.groups, self.use_bias = groups, use_bias

    def init_params(self, key, x):
        self._expect(x, ndim=4)
        kw, kb = random.split(key)
        cin = x.shape[1]
        shape = (cin, self.features // self.groups) + self.kernel_size
        fan_in = shape[1] * math.prod(self.kernel_size)   # torch computes fan_in on dim 1
        p = {"weight": init_.uniform(1 / math.sqrt(fan_in))(kw, shape)}
        if self.use_bias:
            p["bias"] = init_.torch_default_bias(fan_in)(kb, (self.features,))
        return p

    def forward(self, params, x):
        pnp, w, g = _pnp(), params["weight"], self.groups
        self._expect(x, ndim=4)
        self._expect(x, axis=1, size=w.shape[0])
        cin, og = w.shape[0], w.shape[1]
        # (in, out/g, k) -> (out, in/g, k), spatially flipped: the transpose as a dilated conv
        w = w.reshape((g, cin // g, og) + self.kernel_size).transpose(0, 2, 1, 3, 4)
        w = pnp.flip(w.reshape((g * og, cin // g) + self.kernel_size), axis=(2, 3))
        pads = [(d * (k - 1) - p, d * (k - 1) - p + op) for k, p, op, d in
                zip(self.kernel_size, self.padding, self.output_padding, self.dilation)]
        y = lax.conv_general_dilated(x, w.astype(x.dtype), (1, 1), pads, lhs_dilation=self.stride,
                                     rhs_dilation=self.dilation, feature_group_count=g)
        return y + params["bias"].reshape(1, -1, 1, 1) if "bias" in params else y


class _Pool(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = _tuple(kernel_size, 2)
        self.stride = _tuple(stride if stride is not None else kernel_size, 2)
        self.padding = _tuple(padding, 2)

    def _window(self, x):
        self._expect(x, ndim=4)
        pads = ((0, 0), (0, 0)) + tuple((p, p) for p in self.padding)
        return (1, 1) + self.kernel_size, (1, 1) + self.stride, pads


class MaxPool2d(_Pool):
    def forward(self, params, x):
        win, strides, pads = self._window(x)
        return lax.reduce_window_max(x, win, strides, pads)


class AvgPool2d(_Pool):
    """Averages include zero padding, as torch's default count_include_pad=True."""
    def forward(self, params, x):
        win, strides, pads = self._window(x)
        return lax.reduce_window_sum(x, win, strides, pads) / math.prod(self.kernel_size)


class GlobalAvgPool(Module):
    def forward(self, params, x):
        return _pnp().mean(x, axis=tuple(range(2, x.ndim)))


class BatchNorm(Module):
    """Normalizes over all axes but 1 (channels). Training uses batch statistics and returns
    updated running statistics (torch momentum semantics, unbiased running variance)."""

    def __init__(self, momentum=0.1, eps=1e-5):
        self.momentum, self.eps = momentum, eps

    def init(self, key, x):
        pnp, c = _pnp(), x.shape[1]
        return ({"weight": pnp.ones(c), "bias": pnp.zeros(c)},
                {"running_mean": pnp.zeros(c), "running_var": pnp.ones(c)})

    def apply(self, params, state, x, *, train=False, key=None):
        pnp = _pnp()
        self._expect(x, axis=1, size=params["weight"].shape[0])
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if train:
            mean, var = pnp.mean(x, axis=axes), pnp.var(x, axis=axes)
            n = x.size // x.shape[1]
            m = self.momentum
            state = {"running_mean": (1 - m) * state["running_mean"] + m * mean,
                     "running_var": (1 - m) * state["running_var"] + m * var * (n / max(n - 1, 1))}
        else:
            mean, var = state["running_mean"], state["running_var"]
        y = (x - mean.reshape(shape)) * lax.rsqrt(var.reshape(shape) + self.eps)
        return y * params["weight"].reshape(shape) + params["bias"].reshape(shape), state


class LayerNorm(Module):
    """Normalizes over the last axis (torch.nn.LayerNorm(x.shape[-1]))."""
    def __init__(self, eps=1e-5, use_bias=True):
        self.eps, self.use_bias = eps, use_bias

    def init_params(self, key, x):
        pnp = _pnp()
        p = {"weight": pnp.ones(x.shape[-1])}
        if self.use_bias:
            p["bias"] = pnp.zeros(x.shape[-1])
        return p

    def forward(self, params, x):
        pnp = _pnp()
        self._expect(x, axis=-1, size=params["weight"].shape[0])
        mean = pnp.mean(x, axis=-1, keepdims=True)
        var = pnp.mean(pnp.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * lax.rsqrt(var + self.eps) * params["weight"]
        return y + params["bias"] if "bias" in params else y


class RMSNorm(Module):
    def __init__(self, eps=1e-6):
        self.eps = eps

    def init_params(self, key, x):
        return {"weight": _pnp().ones(x.shape[-1])}

    def forward(self, params, x):
        pnp = _pnp()
        self._expect(x, axis=-1, size=params["weight"].shape[0])
        ms = pnp.mean(pnp.square(x), axis=-1, keepdims=True)
        return x * lax.rsqrt(ms + self.eps) * params["weight"]


class GroupNorm(Module):
    def __init__(self, num_groups, eps=1e-5):
        self.num_groups, self.eps = num_groups, eps

    def init_params(self, key, x):
        pnp = _pnp()
        if x.shape[1] % self.num_groups:
            raise ShapeError(f"{self!r}: {x.shape[1]} channels do not divide into groups")
        return {"weight": pnp.ones(x.shape[1]), "bias": pnp.zeros(x.shape[1])}

    def forward(self, params, x):
        pnp = _pnp()
        self._expect(x, axis=1, size=params["weight"].shape[0])
        n, c = x.shape[:2]
        g = x.reshape((n, self.num_groups, -1))
        mean = pnp.mean(g, axis=-1, keepdims=True)
        var = pnp.var(g, axis=-1, keepdims=True)
        y = ((g - mean) * lax.rsqrt(var + self.eps)).reshape(x.shape)
        shape = (1, c) + (1,) * (x.ndim - 2)
        return y * params["weight"].reshape(shape) + params["bias"].reshape(shape)


class Dropout(Module):
    def __init__(self, rate):
        self.rate = rate

    def apply(self, params, state, x, *, train=False, key=None):
        if not train or self.rate == 0:
            return x, state
        if key is None:
            raise ValueError(f"{self!r} in training needs a PRNG key: apply(..., key=key)")
        keep = random.bernoulli(key, 1.0 - self.rate, x.shape)
        return _pnp().where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype), state


class Embedding(Module):
    def __init__(self, num_embeddings, features):
        self.num_embeddings, self.features = num_embeddings, features

    def init_params(self, key, x):
        return {"weight": random.normal(key, (self.num_embeddings, self.features))}

    def forward(self, params, ids):
        if not dtypes.is_int(ids.dtype):
            raise TypeError(f"{self!r}: ids must be integers, got {ids.dtype}")
        return _pnp().take(params["weight"], ids, axis=0)


def rope(x, positions, theta=10000.0):
    """Rotary position embedding on (..., seq, head_dim), halves rotated (LLaMA / NeoX layout)."""
    pnp = _pnp()
    d = x.shape[-1]
    if d % 2:
        raise ShapeError(f"rope: the head dimension (last axis) must be even, got shape {tuple(x.shape)}")
    if x.ndim < 2 or tuple(pnp.shape(positions)) != (x.shape[-2],):
        raise ShapeError(f"rope: positions of shape {tuple(pnp.shape(positions))} do not match the "
                         f"sequence axis of x {tuple(x.shape)} (expected ({x.shape[-2] if x.ndim > 1 else '?'},))")
    inv = 1.0 / theta ** (pnp.arange(0, d, 2, dtype="float32") / d)
    ang = pnp.asarray(positions, "float32")[:, None] * inv[None, :]
    cos, sin = pnp.cos(ang).astype(x.dtype), pnp.sin(ang).astype(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return pnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class MultiHeadAttention(Module):
    """Self-attention on (batch, seq, embed) with causal / padding masks, grouped-query heads
    (num_kv_heads < num_heads) and optional RoPE. `mask`: bool (batch, seq), True = keep."""

    def __init__(self, num_heads, num_kv_heads=None, causal=False, use_rope=False,
                 rope_theta=10000.0, use_bias=True):
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads or num_heads
        self.causal, self.use_rope, self.rope_theta = causal, use_rope, rope_theta
        self.use_bias = use_bias

    def _proj(self, e):
        hd = e // self.num_heads
        kv = self.num_kv_heads * hd
        return {"q": Linear(e, self.use_bias), "k": Linear(kv, self.use_bias),
                "v": Linear(kv, self.use_bias), "out": Linear(e, self.use_bias)}

    def init_params(self, key, x):
        self._expect(x, ndim=3)
        e = x.shape[-1]
        if e % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ShapeError(f"{self!r}: embed {e} must divide by heads, heads by kv heads")
        keys = random.split(key, 4)
        return {n: m.init_params(k, x) for (n, m), k in zip(self._proj(e).items(), keys)}

    def apply(self, params, state, x, *, train=False, key=None, mask=None):
        pnp = _pnp()
        self._expect(x, ndim=3)
        b, s, e = x.shape
        h, kvh = self.num_heads, self.num_kv_heads
        hd = e // h
        mods = self._proj(e)
        split = lambda t, n: t.reshape(b, s, n, hd).transpose(0, 2, 1, 3)
        q = split(mods["q"].forward(params["q"], x), h)
        k = split(mods["k"].forward(params["k"], x), kvh)
        v = split(mods["v"].forward(params["v"], x), kvh)
        if self.use_rope:
            pos = pnp.arange(s)
            q, k = rope(q, pos, self.rope_theta), rope(k, pos, self.rope_theta)
        if kvh != h:   # grouped-query: each kv head serves h // kvh query heads
            k, v = pnp.repeat(k, h // kvh, axis=1), pnp.repeat(v, h // kvh, axis=1)
        scores = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(hd)
        keep = None
        if self.causal:
            keep = pnp.tril(pnp.ones((s, s), dtype=bool))[None, None]
        if mask is not None:
            pad = pnp.asarray(mask, dtype=bool)[:, None, None, :]
            keep = pad if keep is None else keep & pad
        if keep is not None:
            scores = pnp.where(keep, scores, pnp.finfo(scores.dtype).min)
        out = (softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(b, s, e)
        return mods["out"].forward(params["out"], out), state


class Sequential(Module):
    """Layers applied in order; plain functions (activations) are allowed between modules."""

    def __init__(self, *layers):
        self.layers = layers

    def init(self, key, x):
        params, state = {}, {}
        keys = random.split(key, max(len(self.layers), 1))
        for i, layer in enumerate(self.layers):
            with self._naming(i, layer):
                if isinstance(layer, Module):
                    p, s = layer.init(keys[i], x)
                    if p:
                        params[str(i)] = p
                    if s:
                        state[str(i)] = s
                    x, _ = layer.apply(p, s, x, train=False)
                else:
                    x = layer(x)
        return params, state

    def apply(self, params, state, x, *, train=False, key=None):
        new_state = dict(state)
        keys = random.split(key, len(self.layers)) if key is not None else [None] * len(self.layers)
        for i, layer in enumerate(self.layers):
            with self._naming(i, layer):
                if isinstance(layer, Module):
                    x, s = layer.apply(params.get(str(i), {}), state.get(str(i), {}), x,
                                       train=train, key=keys[i])
                    if s:
                        new_state[str(i)] = s
                else:
                    x = layer(x)
        return x, new_state

    @staticmethod
    @contextlib.contextmanager
    def _naming(i, layer):
        """Prefix shape errors with the layer's index (its key in params) and type."""
        try:
            yield
        except ShapeError as e:
            name = type(layer).__name__ if isinstance(layer, Module) else getattr(layer, "__name__", repr(layer))
            raise ShapeError(f"Sequential layer {i} ({name}): {e}") from e

    def __repr__(self):
        return "Sequential(" + ", ".join(getattr(l, "__name__", None) or repr(l) for l in self.layers) + ")"


class Flatten(Module):
    def forward(self, params, x):
        return x.reshape(x.shape[0], -1)
