"""How closely a function's eager and jitted results must agree, per backend."""
import ml_dtypes
import numpy as np

from polyjit import backends

ULPS = 4


def assert_eager_matches_jit(eager, jitted):
    """Bit-identical on numpy, where eager ops and a jitted program run the same numpy code.
    A compiled backend runs each eager op as its own kernel and a jitted program as fused
    kernels, and inside a fused kernel a GPU compiler may contract a*b+c into one fma or take
    another path through its math library (OpenCL C and WGSL allow both). There floats agree
    within ULPS units in the last place of max(1, |x|) in their dtype, NaNs in the same
    places; integers and bools stay exact."""
    eager, jitted = np.asarray(eager), np.asarray(jitted)
    assert eager.dtype == jitted.dtype and eager.shape == jitted.shape, \
        (eager.dtype, eager.shape, jitted.dtype, jitted.shape)
    floating = eager.dtype.kind in "fc" or eager.dtype == ml_dtypes.bfloat16
    if backends.default_backend() == "numpy" or not floating:
        np.testing.assert_array_equal(eager, jitted)
        return
    eps = float(ml_dtypes.finfo(eager.dtype).eps)
    e, j = eager.astype(np.float64), jitted.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(e), np.isnan(j), err_msg="NaNs in other places")
    np.testing.assert_allclose(j, e, rtol=ULPS * eps, atol=ULPS * eps, equal_nan=True)
