"""Weight initializers: `init(key, shape, dtype) -> array`, named as in PyTorch where they match."""
import math

from .. import random
from ..tracer import dtypes


def _fans(shape):
    """(fan_in, fan_out) for PyTorch layouts: Linear (out, in), Conv (out, in, *kernel)."""
    if len(shape) < 2:
        return shape[0] if shape else 1, shape[0] if shape else 1
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def zeros(key, shape, dtype=dtypes.float32):
    from .. import numpy as pnp
    return pnp.zeros(shape, dtype)


def ones(key, shape, dtype=dtypes.float32):
    from .. import numpy as pnp
    return pnp.ones(shape, dtype)


def constant(value):
    def init(key, shape, dtype=dtypes.float32):
        from .. import numpy as pnp
        return pnp.full(shape, value, dtype)
    return init


def uniform(bound):
    """U(-bound, bound)."""
    def init(key, shape, dtype=dtypes.float32):
        return random.uniform(key, shape, dtype, -bound, bound)
    return init


def normal(std=1.0):
    def init(key, shape, dtype=dtypes.float32):
        return random.normal(key, shape, dtype) * std
    return init


def _scaled(kind, scale_fn):
    def make(gain=1.0):
        def init(key, shape, dtype=dtypes.float32):
            fan_in, fan_out = _fans(shape)
            std = gain * scale_fn(fan_in, fan_out)
            if kind == "uniform":
                return uniform(math.sqrt(3.0) * std)(key, shape, dtype)
            return normal(std)(key, shape, dtype)
        return init
    return make


he_normal = kaiming_normal = _scaled("normal", lambda fi, fo: math.sqrt(2.0 / fi))
he_uniform = kaiming_uniform = _scaled("uniform", lambda fi, fo: math.sqrt(2.0 / fi))
glorot_normal = xavier_normal = _scaled("normal", lambda fi, fo: math.sqrt(2.0 / (fi + fo)))
glorot_uniform = xavier_uniform = _scaled("uniform", lambda fi, fo: math.sqrt(2.0 / (fi + fo)))
lecun_normal = _scaled("normal", lambda fi, fo: math.sqrt(1.0 / fi))


def torch_default_weight(key, shape, dtype=dtypes.float32):
    """PyTorch's Linear/Conv default: kaiming_uniform(a=sqrt(5)), i.e. U(±1/sqrt(fan_in))."""
    return uniform(1.0 / math.sqrt(max(_fans(shape)[0], 1)))(key, shape, dtype)


def torch_default_bias(fan_in):
    """PyTorch's Linear/Conv bias default: U(±1/sqrt(fan_in))."""
    return uniform(1.0 / math.sqrt(max(fan_in, 1)))
