"""Elementwise math, comparisons, logical and bitwise ops, where/clip/select."""
from __future__ import annotations

import builtins
import math

import numpy as np

from .. import lax
from ..tracer import dtypes
from ..tracer.core import get_aval
from ._promote import (broadcast, broadcast_shapes, cast, ensure_array, inexact_dtype, operand,
                       promote)


def _dt(x):
    return get_aval(x).dtype


def _small_float(dt):
    return dt in (dtypes.float16, dtypes.bfloat16)


def _in_f32(f):
    """Run a composite float computation on float16/bfloat16 in float32 and round once,
    as numpy does for half floats (several roundings in half precision drift)."""
    def wrapped(*xs):
        dt = _dt(xs[0])
        if not _small_float(dt):
            return f(*xs)
        return cast(f(*[cast(x, dtypes.float32) for x in xs]), dt)
    return wrapped


def _full_like(x, value, dt):
    return ensure_array(lax.full(get_aval(x).shape, value, dt))


# ---------------------------------------------------------------- unary
def _float_unary(name, f):
    """Float functions: int and bool operands compute in float32 (float64 if 64-bit)."""
    def fn(x):
        x = operand(x, name, "x")
        a = get_aval(x)
        return ensure_array(f(cast(x, inexact_dtype(a.dtype), a.weak_type)))
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise {name} (numpy.{name}); integer inputs give float32."
    return fn


_LN2, _LN10 = math.log(2.0), math.log(10.0)
exp = _float_unary("exp", lax.exp)
exp2 = _float_unary("exp2", lax.exp2)
expm1 = _float_unary("expm1", lax.expm1)
log = _float_unary("log", lax.log)
log1p = _float_unary("log1p", lax.log1p)
log2 = _float_unary("log2", _in_f32(lambda x: lax.div(lax.log(x), _LN2)))
log10 = _float_unary("log10", _in_f32(lambda x: lax.div(lax.log(x), _LN10)))
sqrt = _float_unary("sqrt", lax.sqrt)
cbrt = _float_unary("cbrt", lax.cbrt)
sin = _float_unary("sin", lax.sin)
cos = _float_unary("cos", lax.cos)
tan = _float_unary("tan", lax.tan)
arcsin = asin = _float_unary("arcsin", lax.asin)
arccos = acos = _float_unary("arccos", lax.acos)
arctan = atan = _float_unary("arctan", lax.atan)
sinh = _float_unary("sinh", lax.sinh)
cosh = _float_unary("cosh", lax.cosh)
tanh = _float_unary("tanh", lax.tanh)
arcsinh = asinh = _float_unary("arcsinh", lax.asinh)
arccosh = acosh = _float_unary("arccosh", lax.acosh)
arctanh = atanh = _float_unary("arctanh", lax.atanh)
deg2rad = radians = _float_unary("deg2rad", lambda x: lax.mul(x, math.pi / 180))
rad2deg = degrees = _float_unary("rad2deg", lambda x: lax.mul(x, 180 / math.pi))
rint = _float_unary("rint", lax.round)
reciprocal = _float_unary("reciprocal", lambda x: lax.div(1, x))
fabs = _float_unary("fabs", lax.abs)


def _sinc(x):
    safe = lax.select(lax.eq(x, 0), _ones(x), x)   # no 0/0 in the unselected branch
    pix = lax.mul(safe, math.pi)
    return lax.select(lax.eq(x, 0), _ones(x), lax.div(lax.sin(pix), pix))


def _ones(x):
    return lax.full(get_aval(x).shape, 1, _dt(x))


sinc = _float_unary("sinc", _in_f32(_sinc))


def negative(x):
    x = operand(x, "negative", "x")
    if dtypes.is_unsigned(_dt(x)):
        return ensure_array(lax.sub(0, x))   # wraps around, as numpy does
    return ensure_array(lax.neg(x))


def positive(x):
    return ensure_array(operand(x, "positive", "x"))


def abs(x):  # noqa: A001 (numpy name)
    x = operand(x, "abs", "x")
    dt = _dt(x)
    return ensure_array(x if dtypes.is_bool(dt) or dtypes.is_unsigned(dt) else lax.abs(x))


absolute = abs


def sign(x):
    return ensure_array(lax.sign(operand(x, "sign", "x")))


def square(x):
    x = operand(x, "square", "x")
    return ensure_array(lax.bitwise_and(x, x) if dtypes.is_bool(_dt(x)) else lax.square(x))


def _float_only(name, f):
    """Rounding-like ops: identity on integers (numpy keeps their dtype)."""
    def fn(x):
        x = operand(x, name, "x")
        return ensure_array(f(x) if dtypes.is_float(_dt(x)) else x)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise {name} (numpy.{name}); integers are returned unchanged."
    return fn


floor = _float_only("floor", lax.floor)
ceil = _float_only("ceil", lax.ceil)
trunc = _float_only("trunc", lambda x: lax.select(lax.lt(x, 0), lax.ceil(x), lax.floor(x)))
fix = trunc


def round(a, decimals=0):  # noqa: A001 (numpy name)
    """Round half to even to `decimals` places (numpy's scaling algorithm)."""
    x = operand(a, "round", "a")
    dt = _dt(x)
    if not dtypes.is_float(dt):
        if decimals >= 0:
            return ensure_array(x)
        return ensure_array(cast(round(cast(x, inexact_dtype(dt)), decimals), dt))
    if decimals == 0:
        return ensure_array(lax.round(x))
    f = 10.0 ** builtins.abs(decimals)
    if decimals > 0:
        return ensure_array(lax.div(lax.round(lax.mul(x, f)), f))
    return ensure_array(lax.mul(lax.round(lax.div(x, f)), f))


around = round


def conj(x):
    """Complex conjugate: polyjit arrays are real, so the identity."""
    return ensure_array(operand(x, "conj", "x"))


conjugate = real = conj


def imag(x):
    x = operand(x, "imag", "x")
    return _full_like(x, 0, _dt(x))


def _float_test(name, f, for_ints):
    """Float predicates; integers are never NaN or infinite (all `for_ints`)."""
    def fn(x):
        x = operand(x, name, "x")
        if not dtypes.is_float(_dt(x)):
            return _full_like(x, for_ints, dtypes.bool_)
        return ensure_array(f(x))
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise {name} (numpy.{name})."
    return fn


isnan = _float_test("isnan", lambda x: lax.ne(x, x), False)
isinf = _float_test("isinf", lambda x: lax.eq(lax.abs(x), math.inf), False)
isposinf = _float_test("isposinf", lambda x: lax.eq(x, math.inf), False)
isneginf = _float_test("isneginf", lambda x: lax.eq(x, -math.inf), False)
isfinite = _float_test("isfinite", lax.is_finite, True)


def signbit(x):
    """True where the sign bit is set (including -0.0)."""
    x = operand(x, "signbit", "x")
    dt = _dt(x)
    if dtypes.is_float(dt):
        as_int = lax.bitcast_convert_type(x, np.dtype(f"i{dt.itemsize}"))
        return ensure_array(lax.lt(as_int, 0))
    if dt.kind == "i":
        return ensure_array(lax.lt(x, 0))
    return _full_like(x, False, dtypes.bool_)


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    x = operand(x, "nan_to_num", "x")
    dt = _dt(x)
    if not dtypes.is_float(dt):
        return ensure_array(x)
    info = dtypes.finfo(dt)
    posinf = info.max if posinf is None else posinf
    neginf = info.min if neginf is None else neginf
    x = lax.select(lax.ne(x, x), _full_like(x, nan, dt), x)
    x = lax.select(lax.eq(x, math.inf), _full_like(x, posinf, dt), x)
    return ensure_array(lax.select(lax.eq(x, -math.inf), _full_like(x, neginf, dt), x))


def _truthy(x):
    return x if dtypes.is_bool(_dt(x)) else lax.ne(x, 0)


def logical_not(x):
    return ensure_array(lax.bitwise_not(_truthy(operand(x, "logical_not", "x"))))


def invert(x):
    """Bitwise not (logical not for bool)."""
    return ensure_array(lax.bitwise_not(operand(x, "invert", "x")))


bitwise_not = bitwise_invert = invert


def modf(x):
    """(fractional part, integral part)."""
    x = operand(x, "modf", "x")
    x = cast(x, inexact_dtype(_dt(x)))
    t = trunc(x)
    return subtract(x, t), t


# ---------------------------------------------------------------- binary
def _binary(name, f, to=None, doc=None):
    def fn(x1, x2):
        return ensure_array(f(*promote(name, x1, x2, to=to)))
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc or f"Elementwise {name} with numpy broadcasting and type promotion."
    return fn


def _bool_as(logical, arith):
    """numpy treats + and * of bools as logical or / and."""
    return lambda a, b: (logical if dtypes.is_bool(_dt(a)) else arith)(a, b)


add = _binary("add", _bool_as(lax.bitwise_or, lax.add))
subtract = _binary("subtract", lax.sub)
multiply = _binary("multiply", _bool_as(lax.bitwise_and, lax.mul))
true_divide = _binary("true_divide", lax.div, to=inexact_dtype,
                      doc="x1 / x2; integers divide in float32 (float64 if 64-bit), like JAX.")
divide = true_divide
maximum = _binary("maximum", lax.max, doc="Elementwise maximum; NaN propagates.")
minimum = _binary("minimum", lax.min, doc="Elementwise minimum; NaN propagates.")
fmod = _binary("fmod", lax.rem, doc="C remainder: takes the sign of x1.")
arctan2 = atan2 = _binary("arctan2", lax.atan2, to=inexact_dtype)
nextafter = _binary("nextafter", lax.nextafter, to=inexact_dtype)
float_power = _binary("float_power", lax.pow, to=lambda _: dtypes.float64)


def _floor_fix(r, b):
    """Where a truncating remainder r has the wrong sign for floor division."""
    return lax.bitwise_and(lax.ne(r, 0), lax.ne(lax.lt(r, 0), lax.lt(b, 0)))


@_in_f32
def _float_floor_divide(a, b):
    # numpy's npy_divmod: exact where floor(a / b) would round the wrong way
    mod = lax.rem(a, b)
    div = lax.div(lax.sub(a, mod), b)
    div = lax.select(_floor_fix(mod, b), lax.sub(div, 1), div)
    fl = lax.floor(div)
    fl = lax.select(lax.gt(lax.sub(div, fl), 0.5), lax.add(fl, 1), fl)
    return lax.select(lax.eq(b, 0), lax.div(a, b), fl)


def _floor_divide(a, b):
    dt = _dt(a)
    if dtypes.is_float(dt):
        return _float_floor_divide(a, b)
    q = lax.div(a, b)
    if dtypes.is_unsigned(dt):
        return q
    return lax.sub(q, cast(_floor_fix(lax.rem(a, b), b), dt))


@_in_f32
def _float_remainder(a, b):
    mod = lax.rem(a, b)
    return lax.select(_floor_fix(mod, b), lax.add(mod, b), mod)


def _remainder(a, b):
    dt = _dt(a)
    if dtypes.is_float(dt):
        return _float_remainder(a, b)
    r = lax.rem(a, b)
    if dtypes.is_unsigned(dt):
        return r
    return lax.select(_floor_fix(r, b), lax.add(r, b), r)


floor_divide = _binary("floor_divide", _floor_divide, doc="x1 // x2 (floor division).")
remainder = mod = _binary("remainder", _remainder, doc="x1 % x2 with the sign of x2 (Python).")


def divmod(x1, x2):  # noqa: A001 (numpy name)
    return floor_divide(x1, x2), remainder(x1, x2)


def power(x1, x2):
    """x1 ** x2. A Python int exponent becomes integer_pow (repeated multiplication)."""
    if isinstance(x2, int) and not isinstance(x2, bool):
        x = operand(x1, "power", "x1")
        a = get_aval(x)
        dt, weak = dtypes.result_type((a.dtype, a.weak_type), (dtypes.scalar_dtype(x2), True))
        if not dtypes.is_float(dt) and x2 < 0:
            raise ValueError("power: integers to negative integer powers are not allowed")
        return ensure_array(lax.integer_pow(cast(x, dt, weak), x2))
    return ensure_array(lax.pow(*promote("power", x1, x2)))


pow = power  # noqa: A001 (numpy 2 name)


@_in_f32
def _logaddexp(a, b):
    amax = lax.max(a, b)
    d = lax.sub(a, b)
    out = lax.add(amax, lax.log1p(lax.exp(lax.neg(lax.abs(d)))))
    return lax.select(lax.ne(d, d), lax.add(a, b), out)   # inf - inf: both equal infinities


@_in_f32
def _logaddexp2(a, b):
    amax = lax.max(a, b)
    d = lax.sub(a, b)
    out = lax.add(amax, lax.div(lax.log1p(lax.exp2(lax.neg(lax.abs(d)))), _LN2))
    return lax.select(lax.ne(d, d), lax.add(a, b), out)


logaddexp = _binary("logaddexp", _logaddexp, to=inexact_dtype,
                    doc="log(exp(x1) + exp(x2)), stably.")
logaddexp2 = _binary("logaddexp2", _logaddexp2, to=inexact_dtype)


@_in_f32
def _hypot(a, b):
    a, b = lax.abs(a), lax.abs(b)
    hi, lo = lax.max(a, b), lax.min(a, b)
    r = lax.div(lo, lax.select(lax.eq(hi, 0), _ones(hi), hi))   # scaled: no overflow
    out = lax.mul(hi, lax.sqrt(lax.add(1, lax.mul(r, r))))
    return lax.select(lax.eq(hi, math.inf), hi, out)


hypot = _binary("hypot", _hypot, to=inexact_dtype, doc="sqrt(x1**2 + x2**2) without overflow.")


def _copysign(a, b):
    neg = signbit(b)
    return lax.select(neg, lax.neg(lax.abs(a)), lax.abs(a))


copysign = _binary("copysign", _copysign, to=inexact_dtype)


def _heaviside(x, h):
    step = lax.select(lax.lt(x, 0), _full_like(x, 0, _dt(x)), _ones(x))
    return lax.select(lax.ne(x, x), x, lax.select(lax.eq(x, 0), h, step))


heaviside = _binary("heaviside", _heaviside, to=inexact_dtype,
                    doc="0 where x1 < 0, x2 where x1 == 0, 1 where x1 > 0 (NaN stays NaN).")


def ldexp(x1, x2):
    """x1 * 2**x2, in x1's float dtype."""
    a = operand(x1, "ldexp", "x1")
    dt = inexact_dtype(_dt(a))
    b = cast(operand(x2, "ldexp", "x2"), dt, True)   # weak: the exponent takes x1's dtype
    a, b = promote("ldexp", cast(a, dt, get_aval(a).weak_type), b)
    return ensure_array(lax.mul(a, lax.exp2(b)))


bitwise_and = _binary("bitwise_and", lax.bitwise_and)
bitwise_or = _binary("bitwise_or", lax.bitwise_or)
bitwise_xor = _binary("bitwise_xor", lax.bitwise_xor)
left_shift = bitwise_left_shift = _binary("left_shift", lax.shift_left)
right_shift = bitwise_right_shift = _binary(
    "right_shift", lambda a, b: (lax.shift_right_logical if dtypes.is_unsigned(_dt(a))
                                 else lax.shift_right_arithmetic)(a, b),
    doc="x1 >> x2: arithmetic for signed integers, logical for unsigned.")


def _logical(name, f):
    def fn(x1, x2):
        a, b = (_truthy(operand(x, name, n)) for x, n in ((x1, "x1"), (x2, "x2")))
        return ensure_array(f(*promote(name, a, b)))
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise {name}: nonzero counts as True."
    return fn


logical_and = _logical("logical_and", lax.bitwise_and)
logical_or = _logical("logical_or", lax.bitwise_or)
logical_xor = _logical("logical_xor", lax.bitwise_xor)

equal = _binary("equal", lax.eq)
not_equal = _binary("not_equal", lax.ne)
less = _binary("less", lax.lt)
less_equal = _binary("less_equal", lax.le)
greater = _binary("greater", lax.gt)
greater_equal = _binary("greater_equal", lax.ge)


def _fmax(a, b):
    return lax.select(lax.ne(b, b), a, lax.select(lax.ne(a, a), b, lax.max(a, b)))


def _fmin(a, b):
    return lax.select(lax.ne(b, b), a, lax.select(lax.ne(a, a), b, lax.min(a, b)))


fmax = _binary("fmax", _fmax, doc="Elementwise maximum ignoring NaN.")
fmin = _binary("fmin", _fmin, doc="Elementwise minimum ignoring NaN.")


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    a, b = promote("isclose", a, b, names=("a", "b"), to=inexact_dtype)
    close = lax.le(lax.abs(lax.sub(a, b)), lax.add(atol, lax.mul(rtol, lax.abs(b))))
    finite = lax.bitwise_and(lax.is_finite(a), lax.is_finite(b))
    out = lax.select(finite, close, lax.eq(a, b))
    if equal_nan:
        out = lax.bitwise_or(out, lax.bitwise_and(lax.ne(a, a), lax.ne(b, b)))
    return ensure_array(out)


# ---------------------------------------------------------------- selection
def where(condition, x=None, y=None, /):
    """x where condition else y; where(condition) alone is nonzero(condition)."""
    if x is None and y is None:
        from ._indexing import nonzero
        return nonzero(condition)
    if x is None or y is None:
        raise ValueError("where: pass both x and y, or neither")
    c = _truthy(operand(condition, "where", "condition"))
    x, y = promote("where", x, y, names=("x", "y"), shape=False)
    shape = broadcast_shapes("where", *[get_aval(v).shape for v in (c, x, y)])
    return ensure_array(lax.select(*[broadcast(v, shape, "where") for v in (c, x, y)]))


def select(condlist, choicelist, default=0):
    """The choice of the first true condition, elementwise; `default` where none is."""
    if len(condlist) != len(choicelist):
        raise ValueError(f"select: {len(condlist)} conditions but {len(choicelist)} choices")
    out = default
    for c, v in reversed(list(zip(condlist, choicelist))):
        out = where(c, v, out)
    return ensure_array(operand(out, "select", "default"))


def clip(a, a_min=None, a_max=None, *, min=None, max=None):  # noqa: A002 (numpy names)
    """Limit values to [a_min, a_max]; either bound may be None."""
    lo = a_min if a_min is not None else min
    hi = a_max if a_max is not None else max
    x = operand(a, "clip", "a")
    if lo is not None:
        x = maximum(x, lo)
    if hi is not None:
        x = minimum(x, hi)
    return ensure_array(x)
