"""Counter-based random numbers (Threefry-2x32, as in JAX).

A key is a uint32[2] array. Bits come from the threefry2x32 primitive applied to
counters, so the same key gives the same bits on every backend, eagerly and under jit.
Counters are laid out as in JAX's (non-partitionable) threefry_random_bits.
"""
from __future__ import annotations

import math

import numpy as np

from . import lax
from .tracer import dtypes
from .tracer.core import get_aval


def key(seed: int):
    """A key from an integer seed (64 bits used: [high word, low word])."""
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


def _threefry_iota(k, n):
    """JAX's threefry_2x32(key, iota(n)): the counters split into two halves (an odd count
    padded with one 0), hashed pairwise, the two outputs concatenated."""
    half = (n + 1) // 2
    c = lax.iota(dtypes.uint32, n)
    if n % 2:
        c = lax.concatenate([c, np.zeros((1,), np.uint32)], 0)
    lo, hi = lax.slice(c, (0,), (half,)), lax.slice(c, (half,), (2 * half,))
    x0, x1 = lax.threefry2x32(k[0], k[1], lo, hi)
    out = lax.concatenate([x0, x1], 0)
    return lax.slice(out, (0,), (n,)) if n % 2 else out


def random_bits(k, shape=(), bit_width=32):
    """Random uint32 bits of the given shape (uint64 with bit_width=64: first half of the
    words high, second half low, as in JAX)."""
    _check_key(k)
    if bit_width not in (32, 64):
        raise ValueError(f"random_bits: bit_width must be 32 or 64, got {bit_width}")
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    bits = _threefry_iota(k, n * bit_width // 32)
    if bit_width == 64:
        hi, lo = (lax.convert_element_type(lax.slice(bits, (i * n,), ((i + 1) * n,)), dtypes.uint64)
                  for i in (0, 1))
        bits = lax.bitwise_or(lax.shift_left(hi, np.uint64(32)), lo)
    return lax.reshape(bits, shape)


def split(k, num: int = 2):
    """num new keys, shape (num, 2)."""
    _check_key(k)
    return lax.reshape(random_bits(k, (num * 2,)), (num, 2))


def fold_in(k, data):
    """A new key from k and an integer (JAX's threefry fold_in: hash of counters [0, data])."""
    _check_key(k)
    d = lax.reshape(lax.convert_element_type(data, dtypes.uint32), (1,))
    x0, x1 = lax.threefry2x32(k[0], k[1], np.zeros((1,), np.uint32), d)
    return lax.concatenate([x0, x1], 0)


def _float_bits(k, shape, dt):
    """Uniform bits as wide as the float dtype (16-bit floats take the top half of a word)."""
    if dt.itemsize == 8:
        return random_bits(k, shape, 64)
    bits = random_bits(k, shape)
    if dt.itemsize == 2:
        return lax.convert_element_type(lax.shift_right_logical(bits, np.uint32(16)), dtypes.uint16)
    return bits


def uniform(k, shape=(), dtype=dtypes.float32, minval=0.0, maxval=1.0):
    """Uniform floats in [minval, maxval)."""
    from . import numpy as pnp
    dt = dtypes.canonicalize(dtype)
    if not dtypes.is_float(dt):
        raise TypeError(f"uniform needs a float dtype, got {dt.name}")
    shape = tuple(int(d) for d in shape)
    bits = _float_bits(k, shape, dt)
    ubits = get_aval(bits).dtype
    nbits, nmant = dt.itemsize * 8, int(dtypes.finfo(dt).nmant)
    # random mantissa bits under the exponent of 1.0: a float in [1, 2)
    one = np.array(1.0, dt).view(ubits)
    f = lax.bitcast_convert_type(
        lax.bitwise_or(lax.shift_right_logical(bits, ubits.type(nbits - nmant)), one), dt)
    u = lax.sub(f, np.array(1.0, dt))
    lo, hi = pnp.asarray(minval, dt), pnp.asarray(maxval, dt)
    return pnp.broadcast_to(pnp.maximum(lo, u * (hi - lo) + lo), shape)


def normal(k, shape=(), dtype=dtypes.float32):
    """Standard normal samples (Box-Muller on two uniform streams)."""
    dt = dtypes.canonicalize(dtype)
    ct = dtypes.float64 if dt == dtypes.float64 else dtypes.float32
    k1, k2 = split(k)
    u1 = lax.sub(np.array(1.0, ct), uniform(k1, shape, ct))   # (0, 1]: log is finite
    u2 = uniform(k2, shape, ct)
    r = lax.sqrt(lax.mul(np.array(-2.0, ct), lax.log(u1)))
    z = lax.mul(r, lax.cos(lax.mul(np.array(2 * math.pi, ct), u2)))
    return lax.convert_element_type(z, dt)


def bernoulli(k, p=0.5, shape=None):
    """True with probability p (shape defaults to p's shape)."""
    from . import numpy as pnp
    shape = tuple(shape) if shape is not None else get_aval(p).shape
    return pnp.less(uniform(k, shape), p)


def randint(k, shape, minval, maxval, dtype=dtypes.int32):
    """Integers in [minval, maxval) (a single value minval when maxval <= minval)."""
    from . import numpy as pnp
    dt = dtypes.canonicalize(dtype)
    lo, hi = pnp.asarray(minval, dt), pnp.asarray(maxval, dt)
    span = pnp.maximum(hi - lo, 1).astype(dtypes.uint32)
    return lo + pnp.remainder(random_bits(k, shape), span).astype(dt)


def categorical(k, logits, axis=-1, shape=None):
    """Category indices sampled with probabilities softmax(logits) along axis (Gumbel-max).

    `shape` (default: logits' shape without axis) must end with that batch shape; leading
    extra dims draw independent samples."""
    from . import numpy as pnp
    logits = pnp.asarray(logits)
    ax = axis % logits.ndim
    batch = logits.shape[:ax] + logits.shape[ax + 1:]
    shape = batch if shape is None else tuple(shape)
    if shape[len(shape) - len(batch):] != batch:
        raise ValueError(f"categorical: shape {shape} must end with the batch shape {batch} of "
                         f"logits {logits.shape} (axis {axis})")
    prefix = shape[:len(shape) - len(batch)]
    g = gumbel(k, prefix + logits.shape, logits.dtype)
    return pnp.argmax(g + logits, axis=len(prefix) + ax)


def gumbel(k, shape=(), dtype=dtypes.float32):
    dt = dtypes.canonicalize(dtype)
    u = uniform(k, shape, dt, minval=float(dtypes.finfo(dt).tiny), maxval=1.0)
    return lax.neg(lax.log(lax.neg(lax.log(u))))


def permutation(k, x):
    """A random permutation of range(x) (int) or of x's first axis."""
    from . import numpy as pnp
    n = int(x) if isinstance(x, (int, np.integer)) else pnp.asarray(x).shape[0]
    order = pnp.argsort(random_bits(k, (n,)))
    return order if isinstance(x, (int, np.integer)) else pnp.take(x, order, axis=0)


def shuffle(k, x, axis=0):
    from . import numpy as pnp
    return pnp.take(x, permutation(k, pnp.asarray(x).shape[axis]), axis=axis)


def truncated_normal(k, lower, upper, shape=(), dtype=dtypes.float32):
    """Normal samples restricted to (lower, upper) (inverse-CDF method)."""
    from . import numpy as pnp
    dt = dtypes.canonicalize(dtype)
    sqrt2 = math.sqrt(2.0)
    lo, hi = pnp.asarray(lower, dt), pnp.asarray(upper, dt)
    a, b = pnp.asarray(lax.erf(lo / sqrt2)), pnp.asarray(lax.erf(hi / sqrt2))
    u = uniform(k, shape, dt, minval=a, maxval=b)
    out = sqrt2 * pnp.asarray(lax.erf_inv(u))
    return pnp.clip(out, pnp.nextafter(lo, math.inf), pnp.nextafter(hi, -math.inf))
