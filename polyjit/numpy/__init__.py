"""polyjit.numpy (``import polyjit.numpy as pnp``): the numpy API, written on polyjit.lax.

Every function works eagerly (on pj.Array, numpy arrays, Python scalars and lists of
numbers) and under pj.jit / pj.make_jaxpr tracing, and returns polyjit arrays.

Differences from numpy
----------------------
- Type promotion: arrays promote as numpy's ``promote_types`` does (int32 + float32 is
  float64; bfloat16 + float16 is float32). Python scalars are weakly typed, as in JAX: they
  take the dtype of the array they meet (``x_f16 + 1.0`` is float16, ``x_u8 + 1`` is uint8),
  and a Python float meeting only integer or bool arrays gives float32.
- Defaults are 32-bit, as in JAX: values without a dtype of their own (Python scalars, lists
  of Python numbers, ``arange(5)``, ``zeros(3)``, ``linspace``) are float32 / int32. numpy
  inputs keep their dtype (float64 stays float64).
- Integer inputs to true division and float functions (sqrt, exp, sin, mean, var, ...)
  compute in float32, or float64 when an operand is a 64-bit integer.
- sum, prod, cumsum and cumprod of bool and of integers narrower than 32 bits accumulate in
  int32 (uint32 for uint8/uint16), as in JAX. argmax, argmin, argsort, nonzero and
  searchsorted return int32.
- Arrays are immutable: ``x[idx] = v`` raises; use ``x = x.at[idx].set(v)`` (also ``add``,
  ``subtract``, ``multiply``/``mul``, ``min``, ``max``, ``get``). Out-of-bounds updates are
  dropped and out-of-bounds traced gathers clamp, as in JAX; static out-of-range indices
  raise IndexError.
- Shapes must be static under jit: boolean-mask indexing needs a concrete mask (use
  ``where`` otherwise); ``nonzero``/``argwhere``/``flatnonzero`` of traced values need
  ``size=``; ``unique``, ``compress`` and ``repeat`` counts need concrete inputs;
  ``bincount`` of traced values needs ``length=``.
- ``floor``, ``ceil``, ``trunc`` and ``round`` return integer inputs unchanged (their dtype
  kept); ``rint`` of integers gives float32.
- ``power`` with a Python int exponent is ``lax.integer_pow`` (repeated multiplication).
- Sorting puts NaN last; ``sort``/``argsort`` are always stable and accept
  ``descending=True``. ``quantile``/``percentile``/``median`` reduce over one axis or all.
- Real numbers only: ``conj``/``real`` are the identity and ``imag`` is zero.
- ``searchsorted`` compares every value with every element (O(n*m)); ``digitize`` handles
  increasing bins.
"""
import math as _pymath

from . import linalg
from . import _indexing
from ._creation import (arange, array, asarray, astype, copy, empty, empty_like, eye, full,
                        full_like, geomspace, identity, indices, linspace, logspace, meshgrid,
                        ones, ones_like, tri, zeros, zeros_like)
from ._dtypes import (bfloat16, bool_, can_cast, dtype, finfo, float16, float32, float64,
                      floating, generic, iinfo, inexact, int8, int16, int32, int64, integer,
                      issubdtype, number, promote_types, result_type, signedinteger, uint8,
                      uint16, uint32, uint64, unsignedinteger)
from ._einsum import dot, einsum, inner, kron, matmul, outer, tensordot, vdot, vecdot
from ._indexing import (argwhere, bincount, compress, flatnonzero, ix_, nonzero, take,
                        take_along_axis, unravel_index)
from ._math import (abs, absolute, acos, acosh, add, arccos, arccosh, arcsin, arcsinh, arctan,
                    arctan2, arctanh, around, asin, asinh, atan, atan2, atanh, bitwise_and,
                    bitwise_invert, bitwise_left_shift, bitwise_not, bitwise_or,
                    bitwise_right_shift, bitwise_xor, cbrt, ceil, clip, conj, conjugate,
                    copysign, cos, cosh, deg2rad, degrees, divide, divmod, equal, exp, exp2,
                    expm1, fabs, fix, float_power, floor, floor_divide, fmax, fmin, fmod,
                    greater, greater_equal, heaviside, hypot, imag, invert, isclose, isfinite,
                    isinf, isnan, isneginf, isposinf, ldexp, left_shift, less, less_equal, log,
                    log1p, log2, log10, logaddexp, logaddexp2, logical_and, logical_not,
                    logical_or, logical_xor, maximum, minimum, mod, modf, multiply, nan_to_num,
                    negative, nextafter, not_equal, positive, pow, power, rad2deg, radians, real,
                    reciprocal, remainder, right_shift, rint, round, select, sign, signbit, sin,
                    sinc, sinh, sqrt, square, subtract, tan, tanh, true_divide, trunc, where)
from ._reductions import (all, allclose, amax, amin, any, argmax, argmin, array_equal,
                          array_equiv, average, count_nonzero, cumprod, cumsum, diff, max, mean,
                          min, nanmax, nanmean, nanmin, nanprod, nanstd, nansum, nanvar, prod, ptp,
                          std, sum, trace, var)
from ._shape import (append, array_split, atleast_1d, atleast_2d, atleast_3d, broadcast_arrays,
                     broadcast_shapes, broadcast_to, column_stack, concat, concatenate, delete,
                     diag, diagflat, diagonal, dsplit, dstack, expand_dims, flatten, flip, fliplr,
                     flipud, hsplit, hstack, matrix_transpose, moveaxis, ndim, pad, permute_dims,
                     ravel, repeat, reshape, roll, rot90, shape, size, split, squeeze, stack,
                     swapaxes, tile, transpose, tril, triu, vsplit, vstack)
from ._sorting import (argsort, digitize, interp, lexsort, median, percentile, quantile,
                       searchsorted, sort, top_k, unique)

pi, e, inf, nan, euler_gamma = _pymath.pi, _pymath.e, _pymath.inf, _pymath.nan, 0.5772156649015329
newaxis = None
