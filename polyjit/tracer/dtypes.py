"""The dtypes polyjit supports, their short names, and type promotion.

Array-array promotion follows numpy (``np.promote_types``); Python scalars are
weakly typed as in JAX: they take the dtype of the array they meet.
"""
import numpy as np
import ml_dtypes

bfloat16 = np.dtype(ml_dtypes.bfloat16)
bool_ = np.dtype(np.bool_)
int8, int16, int32, int64 = (np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64))
uint8, uint16, uint32, uint64 = (np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64))
float16, float32, float64 = (np.dtype(t) for t in (np.float16, np.float32, np.float64))

SHORT_NAMES = {bool_: "bool", int8: "i8", int16: "i16", int32: "i32", int64: "i64",
               uint8: "u8", uint16: "u16", uint32: "u32", uint64: "u64",
               float16: "f16", bfloat16: "bf16", float32: "f32", float64: "f64"}
SUPPORTED = tuple(SHORT_NAMES)

# Storage-only dtypes (the ONNX/ml_dtypes low-precision formats). Values of these dtypes can
# be passed through jit, moved around (reshape, slice, concatenate, select, ...) and
# converted to and from the dtypes above with convert_element_type, which rounds and wraps
# as ml_dtypes' astype does; arithmetic runs on a compute dtype (convert first). They are
# not in SUPPORTED: only the numpy backend holds them.
float8_e4m3fn, float8_e4m3fnuz, float8_e5m2, float8_e5m2fnuz, float8_e8m0fnu, float4_e2m1fn = (
    np.dtype(getattr(ml_dtypes, n)) for n in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                                              "float8_e5m2fnuz", "float8_e8m0fnu",
                                              "float4_e2m1fn"))
int4, uint4, int2, uint2 = (np.dtype(getattr(ml_dtypes, n))
                            for n in ("int4", "uint4", "int2", "uint2"))
STORAGE_ONLY = {float8_e4m3fn: "f8e4m3fn", float8_e4m3fnuz: "f8e4m3fnuz", float8_e5m2: "f8e5m2",
                float8_e5m2fnuz: "f8e5m2fnuz", float8_e8m0fnu: "f8e8m0fnu",
                float4_e2m1fn: "f4e2m1fn", int4: "i4", uint4: "u4", int2: "i2", uint2: "u2"}

# Defaults for values that carry no dtype of their own (Python scalars, arange(5), zeros(3)):
# 32-bit like JAX, since GPUs (and WebGPU above all) are 32-bit machines.
default_float = float32
default_int = int32


def canonicalize(dtype) -> np.dtype:
    """np.dtype for anything naming a supported dtype; TypeError naming it otherwise."""
    if dtype is float:
        return default_float
    if dtype is int:
        return default_int
    if dtype is bool:
        return bool_
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"polyjit does not understand dtype {dtype!r}") from None
    if dt not in SHORT_NAMES and dt not in STORAGE_ONLY:
        raise TypeError(f"polyjit does not support dtype {dt.name!r}; supported: "
                        + ", ".join(d.name for d in SUPPORTED))
    return dt


def short_name(dtype) -> str:
    dt = np.dtype(dtype)
    return SHORT_NAMES[dt] if dt in SHORT_NAMES else STORAGE_ONLY[dt]


def is_storage_only(dt) -> bool:
    return np.dtype(dt) in STORAGE_ONLY


def is_float(dt) -> bool:
    return np.dtype(dt) in (float16, bfloat16, float32, float64)


def is_int(dt) -> bool:
    return np.dtype(dt).kind in "iu"


def is_unsigned(dt) -> bool:
    return np.dtype(dt).kind == "u"


def is_bool(dt) -> bool:
    return np.dtype(dt) == bool_


def finfo(dt):
    return ml_dtypes.finfo(np.dtype(dt))


def iinfo(dt):
    return np.iinfo(np.dtype(dt))


def _promote_pair(a: np.dtype, b: np.dtype) -> np.dtype:
    if bfloat16 not in (a, b):
        return np.promote_types(a, b)
    other = b if a == bfloat16 else a
    if other in (bfloat16, bool_, int8, uint8):
        return bfloat16
    if other == float16:
        return float32  # neither holds the other's values
    # numpy has no bfloat16 rule for wider ints: rank bfloat16 as float16 does
    return np.promote_types(float16, other)


def promote_types(*dtypes) -> np.dtype:
    out = canonicalize(dtypes[0])
    for d in dtypes[1:]:
        out = _promote_pair(out, canonicalize(d))
    return out


def result_type(*avals_or_dtypes):
    """Result dtype and weakness of mixing values given as (dtype, weak_type) pairs.

    Strong dtypes promote as numpy does. A weak value (Python scalar) adopts the strong
    dtype of its kind; a weak float meeting only integers gives the default float.
    """
    pairs = [(canonicalize(d), bool(w)) for d, w in avals_or_dtypes]
    strong = [d for d, w in pairs if not w]
    if not strong:  # only the highest kind counts: weak f32 + weak i32 is f32, not f64
        top = max(_kind(d) for d, _ in pairs)
        return promote_types(*[d for d, _ in pairs if _kind(d) == top]), True
    out = promote_types(*strong)
    weak_kinds = {_kind(d) for d, w in pairs if w}
    if _kind(out) < max(weak_kinds, default=0):  # e.g. int array * 0.5
        out = default_float if max(weak_kinds) == 2 else default_int
    return out, False


def _kind(dt) -> int:
    return 0 if is_bool(dt) else 1 if is_int(dt) else 2


def scalar_dtype(x) -> np.dtype:
    """The weak dtype of a Python scalar."""
    if isinstance(x, bool):
        return bool_
    if isinstance(x, int):
        return default_int if -2**31 <= x < 2**31 else int64
    if isinstance(x, float):
        return default_float
    raise TypeError(f"{type(x).__name__} is not a polyjit scalar type (value {x!r})")
