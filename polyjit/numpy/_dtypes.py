"""dtype objects (float32, bfloat16, ...) and dtype queries (result_type, can_cast, finfo, ...)."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from ..tracer import dtypes
from ..tracer.core import get_aval

bool_, int8, int16, int32, int64 = np.bool_, np.int8, np.int16, np.int32, np.int64
uint8, uint16, uint32, uint64 = np.uint8, np.uint16, np.uint32, np.uint64
float16, float32, float64, bfloat16 = np.float16, np.float32, np.float64, ml_dtypes.bfloat16
dtype = np.dtype
generic, number, inexact, floating = np.generic, np.number, np.inexact, np.floating
integer, signedinteger, unsignedinteger = np.integer, np.signedinteger, np.unsignedinteger


def _dtype_and_weak(x):
    try:
        a = get_aval(x)
        return a.dtype, a.weak_type
    except TypeError:   # not a value: a dtype-like
        return dtypes.canonicalize(x), False


def result_type(*arrays_and_dtypes):
    """The dtype polyjit.numpy gives when mixing these (Python scalars are weak)."""
    return dtypes.result_type(*[_dtype_and_weak(x) for x in arrays_and_dtypes])[0]


def promote_types(type1, type2):
    return dtypes.promote_types(type1, type2)


def can_cast(from_, to, casting="safe"):
    f, t = _dtype_and_weak(from_)[0], dtypes.canonicalize(to)
    if casting == "safe" and dtypes.bfloat16 in (f, t):
        return dtypes.promote_types(f, t) == t
    return bool(np.can_cast(f, t, casting))


def issubdtype(arg1, arg2):
    """numpy.issubdtype, knowing that bfloat16 is a floating type."""
    if np.dtype(arg1) == dtypes.bfloat16 and arg2 in (generic, number, inexact, floating):
        return True
    return bool(np.issubdtype(arg1, arg2))


def finfo(dtype):
    return dtypes.finfo(_dtype_and_weak(dtype)[0])


def iinfo(int_type):
    return dtypes.iinfo(_dtype_and_weak(int_type)[0])
