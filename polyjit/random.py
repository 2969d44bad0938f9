"""Counter-based random numbers (Threefry-2x32, as in JAX).

A key is a uint32[2] array. Bits come from the threefry2x32 primitive applied to
counters, so the same key gives the same bits on every backend.
"""
from __future__ import annotations

import math

import numpy as np

from . import lax
from .tracer import dtypes
from .tracer.core import get_aval


def key(seed: int):
    """A key from an integer seed (64 bits used)."""
    from .backends import device_put
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"key(seed) needs an int seed, got {type(seed).__name__}")
    seed = int(seed)
    return device_put(np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], np.uint32))


PRNGKey = key


def _check_key(k):
    a = get_aval(k)
    if a.shape != (2,) or a.dtype != dtypes.uint32:
        raise TypeError(f"expected a PRNG key (uint32[2] from pj.random.key), got {a.str_short()}")


def _hash(k, counts):
    """threefry(k, counts) for a uint32 counter array; returns two uint32 arrays."""
    k0, k1 = k[0], k[1]
    return lax.threefry2x32(k0, k1, counts[0], counts[1])


def random_bits(k, shape=(), bit_width=32):
    """uint32 (or uint64 when bit_width=64 is asked) bits of the given shape."""
    _check_key(k)
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64))
    words = n * (bit_width // 32)
    half = (words + 1) // 2
    c = lax.iota(dtypes.uint32, half)
    x0, x1 = lax.threefry2x32(k[0], k[1], c, lax.add(c, np.uint32(half)))
    bits = lax.concatenate([x0, x1], 0)
    bits = lax.slice(bits, (0,), (words,)) if words != 2 * half else bits
    if bit_width == 64:
        pairs = lax.reshape(bits, (n, 2))
        hi = lax.convert_element_type(lax.reshape(lax.slice(pairs, (0, 0), (n, 1)), shape), dtypes.uint64)
        lo = lax.convert_element_type(lax.reshape(lax.slice(pairs, (0, 1), (n, 2)), shape), dtypes.uint64)
        return lax.bitwise_or(lax.shift_left(hi, np.uint64(32)), lo)
    return lax.reshape(bits, shape)


def split(k, num: int = 2):
    """num new keys, shape (num, 2)."""
    _check_key(k)
    return lax.reshape(random_bits(k, (num * 2,)), (num, 2))


def fold_in(k, data):
    _check_key(k)
    d = lax.convert_element_type(data, dtypes.uint32)
    x0, x1 = lax.threefry2x32(k[0], k[1], lax.reshape(d, (1,)) if get_aval(d).shape == () else d,
                              np.zeros((1,), np.uint32))
    return lax.concatenate([x0, x1], 0)


def uniform(k, shape=(), dtype=dtypes.float32, minval=0.0, maxval=1.0):
    """Uniform floats in [minval, maxval)."""
    dt = dtypes.canonicalize(dtype)
    if not dtypes.is_float(dt):
        raise TypeError(f"uniform needs a float dtype, got {dt.name}")
    bits = random_bits(k, shape)
    # 23 random mantissa bits under exponent 0 give a float32 in [1, 2)
    f = lax.bitcast_convert_type(lax.bitwise_or(lax.shift_right_logical(bits, np.uint32(9)),
                                                np.uint32(0x3F800000)), dtypes.float32)
    u = lax.sub(f, np.float32(1.0))
    u = lax.convert_element_type(u, dt)
    lo, hi = lax.convert_element_type(minval, dt), lax.convert_element_type(maxval, dt)
    out = lax.add(lax.mul(u, lax.sub(hi, lo)), lo)
    return lax.max(out, lo) if get_aval(out).shape == () else out


def normal(k, shape=(), dtype=dtypes.float32):
    """Standard normal samples (Box-Muller on two uniform streams)."""
    shape = tuple(shape)
    dt = dtypes.canonicalize(dtype)
    k1, k2 = split(k)
    u1 = lax.sub(np.float32(1.0), uniform(k1, shape))   # (0, 1]: log is finite
    u2 = uniform(k2, shape)
    r = lax.sqrt(lax.mul(np.float32(-2.0), lax.log(u1)))
    z = lax.mul(r, lax.cos(lax.mul(np.float32(2 * math.pi), u2)))
    return lax.convert_element_type(z, dt)


def bernoulli(k, p=0.5, shape=None):
    p_aval = get_aval(p)
    shape = tuple(shape) if shape is not None else p_aval.shape
    u = uniform(k, shape)
    from . import numpy as pnp
    return pnp.less(u, p)


def randint(k, shape, minval, maxval, dtype=dtypes.int32):
    from . import numpy as pnp
    dt = dtypes.canonicalize(dtype)
    bits = random_bits(k, shape)
    span = pnp.asarray(maxval, dt) - pnp.asarray(minval, dt)
    off = pnp.remainder(bits, span.astype(dtypes.uint32)).astype(dt)
    return off + pnp.asarray(minval, dt)


def categorical(k, logits, axis=-1, shape=None):
    """Samples of indices by the Gumbel-max trick."""
    from . import numpy as pnp
    logits = pnp.asarray(logits)
    shp = shape if shape is not None else logits.shape[:axis % logits.ndim] + logits.shape[axis % logits.ndim + 1:]
    g = gumbel(k, tuple(shp[:len(shp)]) + (logits.shape[axis],) if shape is not None else logits.shape)
    if shape is None:
        return pnp.argmax(logits + g, axis=axis)
    return pnp.argmax(pnp.expand_dims(pnp.moveaxis(logits, axis, -1), 0) + g, axis=-1)


def gumbel(k, shape=(), dtype=dtypes.float32):
    u = uniform(k, shape, dtype, minval=np.finfo(np.float32).tiny, maxval=1.0)
    return lax.neg(lax.log(lax.neg(lax.log(u))))


def permutation(k, x):
    """A random permutation of range(x) (int) or of x's first axis."""
    from . import numpy as pnp
    n = x if isinstance(x, int) else pnp.asarray(x).shape[0]
    keys = random_bits(k, (n,))
    order = pnp.argsort(keys)
    return order if isinstance(x, int) else pnp.take(x, order, axis=0)


def shuffle(k, x, axis=0):
    from . import numpy as pnp
    return pnp.take(x, permutation(k, pnp.asarray(x).shape[axis]), axis=axis)


def truncated_normal(k, lower, upper, shape=(), dtype=dtypes.float32):
    """Normal samples restricted to [lower, upper] (inverse-CDF method)."""
    from . import numpy as pnp
    dt = dtypes.canonicalize(dtype)
    sqrt2 = math.sqrt(2.0)
    a = lax.erf(pnp.asarray(lower, dt) / sqrt2)
    b = lax.erf(pnp.asarray(upper, dt) / sqrt2)
    u = uniform(k, shape, dt)
    return pnp.clip(sqrt2 * lax.erf_inv(a + u * (b - a)), lower, upper)
