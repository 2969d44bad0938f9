"""Activation functions, softmax and logsumexp (numerically stable)."""
from __future__ import annotations

import math

from .. import lax
from .. import numpy as pnp
from ..autodiff import custom_jvp
from ..numpy._promote import arr, canon_axes, cast, inexact_dtype
from ..tracer.core import get_aval


def _float(x, fn):
    x = arr(x, fn, "x")
    a = get_aval(x)
    return cast(x, inexact_dtype(a.dtype), a.weak_type)


@custom_jvp
def relu(x):
    """max(x, 0) (NaN stays NaN), with derivative 0 at x = 0 as in PyTorch and JAX: one
    comparison and one select in the backward pass, where max's own rule splits ties and
    costs six elementwise ops over the activation."""
    return pnp.maximum(x, 0)


relu.defjvps(lambda g, ans, x: pnp.where(x > 0, g, pnp.zeros_like(g)))


def sigmoid(x):
    return pnp.asarray(lax.logistic(_float(x, "sigmoid")))


def tanh(x):
    return pnp.tanh(x)


def silu(x):
    """x * sigmoid(x) (also called swish)."""
    x = _float(x, "silu")
    return x * sigmoid(x)


def gelu(x, approximate=True):
    """Gaussian error linear unit; approximate=True is the tanh form (JAX's default)."""
    x = _float(x, "gelu")
    if approximate:
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + pnp.tanh(inner))
    return 0.5 * x * (1 + pnp.asarray(lax.erf(x * (1 / math.sqrt(2)))))


def leaky_relu(x, negative_slope=0.01):
    x = arr(x, "leaky_relu", "x")
    return pnp.where(x >= 0, x, negative_slope * x)


def hard_swish(x):
    """x * relu6(x + 3) / 6."""
    x = _float(x, "hard_swish")
    return x * pnp.clip(x + 3, 0, 6) / 6


def _shifted(x, axis, fn):
    """x minus its max along axis (finite where the max is +-inf, so no inf - inf)."""
    x = _float(x, fn)
    m = pnp.max(x, axis, keepdims=True)
    return x - pnp.where(pnp.isfinite(m), m, 0), m


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, computed from x - max(x) so large inputs don't overflow."""
    z, _ = _shifted(x, axis, "softmax")
    e = pnp.exp(z)
    return e / pnp.sum(e, axis, keepdims=True)


def log_softmax(x, axis=-1):
    z, _ = _shifted(x, axis, "log_softmax")
    return z - pnp.log(pnp.sum(pnp.exp(z), axis, keepdims=True))


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """log(sum(b * exp(a))) along axis, stably; with return_sign, (log|sum|, sign)."""
    x = _float(a, "logsumexp")
    axes = canon_axes(axis, get_aval(x).ndim, "logsumexp")
    z, m = _shifted(x, axes, "logsumexp")
    e = pnp.exp(z) if b is None else b * pnp.exp(z)
    s = pnp.sum(e, axes, keepdims=True)
    sign = pnp.sign(s)
    out = pnp.log(pnp.abs(s) if return_sign else s) + pnp.where(pnp.isfinite(m), m, 0)
    if not keepdims:
        out, sign = pnp.squeeze(out, axes), pnp.squeeze(sign, axes)
    return (out, sign) if return_sign else out


def one_hot(x, num_classes, dtype=None, axis=-1):
    """1 where the class equals x (out-of-range classes give all zeros), on a new axis."""
    x = arr(x, "one_hot", "x")
    hot = pnp.expand_dims(x, -1) == pnp.arange(num_classes)
    out = pnp.asarray(hot, pnp.float32 if dtype is None else dtype)
    return pnp.moveaxis(out, -1, axis)
