"""pj.Array: a backend buffer plus its abstract value."""
from __future__ import annotations

import numpy as np

from .array_methods import ArrayOps
from .core import ShapedArray


class Array(ArrayOps):
    __slots__ = ("aval", "_buf", "_backend")
    __array_priority__ = 100
    _polyjit_aval = True   # marks values whose `.aval` get_aval may trust

    def __init__(self, aval: ShapedArray, buf, backend):
        self.aval, self._buf, self._backend = aval, buf, backend

    shape = property(lambda self: self.aval.shape)
    dtype = property(lambda self: self.aval.dtype)
    ndim = property(lambda self: self.aval.ndim)
    size = property(lambda self: self.aval.size)
    weak_type = property(lambda self: self.aval.weak_type)
    backend = property(lambda self: self._backend.name)

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self._backend.to_numpy(self._buf), dtype=dtype)
        if copy:
            return out.copy()
        out = out.view()
        out.flags.writeable = False    # the buffer belongs to the Array
        return out

    def block_until_ready(self):
        self._backend.block(self._buf)
        return self

    def item(self):
        return np.asarray(self).item()

    def tolist(self):
        return np.asarray(self).tolist()

    def __bool__(self):
        return bool(np.asarray(self))

    def __int__(self):
        return int(np.asarray(self))

    def __float__(self):
        return float(np.asarray(self))

    def __index__(self):
        return int(np.asarray(self))

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    __hash__ = None

    def __repr__(self):
        body = np.array2string(np.asarray(self), separator=", ", prefix="Array(")
        return f"Array({body}, dtype={self.dtype.name})"

    def __str__(self):
        return str(np.asarray(self))

    def __format__(self, spec):
        return format(np.asarray(self).item() if not self.shape else np.asarray(self), spec) \
            if spec else str(self)

    def __reduce__(self):
        return (_rebuild, (np.asarray(self).copy(), self.aval.weak_type))


def _rebuild(value, weak):
    from ..backends import device_put
    return device_put(value)
