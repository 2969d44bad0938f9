"""Symbolic zeros and small helpers shared by JVP, partial evaluation and transposition."""
from __future__ import annotations

import numpy as np

from .. import lax
from ..tracer import dtypes
from ..tracer.core import ShapedArray, get_aval

# The tangent type of integer and boolean values (JAX's float0): arrays of it hold no data.
float0 = np.dtype([("float0", np.void, 0)])


class Zero:
    """A tangent or cotangent known to be zero: rules skip it instead of adding zeros."""
    __slots__ = ("aval",)

    def __init__(self, aval: ShapedArray):
        self.aval = aval

    @staticmethod
    def like(x):
        return Zero(get_aval(x).strip_weak_type())

    def __repr__(self):
        return f"Zero({self.aval.str_short()})"


def is_differentiable(aval) -> bool:
    return dtypes.is_float(aval.dtype)


def zeros(aval):
    return lax.full(aval.shape, 0, aval.dtype)


def instantiate(t):
    """A real array for a possibly symbolic zero."""
    return zeros(t.aval) if isinstance(t, Zero) else t


def add_tangents(a, b):
    if isinstance(a, Zero):
        return b
    if isinstance(b, Zero):
        return a
    return lax.add(a, b)


def float0_zeros(aval):
    """The cotangent handed to users for an integer or boolean input."""
    return np.zeros(aval.shape, float0)
