"""WebGPU-specific behaviour: the dtypes WGSL can and cannot hold, the adapter's limits
(2D dispatch grids, clear errors past buffer sizes), exact PRNG bits, and the pipeline
cache. The shared lowering spec runs on webgpu in tests/test_lowering_webgpu.py.
Skipped (with the reason) where wgpu or an adapter is missing."""
import numpy as np
import pytest

import polyjit as pj
import polyjit.numpy as pnp
from polyjit import backends, lax
from polyjit.tracer import dtypes


@pytest.fixture
def wg():
    try:
        be = backends.get_backend("webgpu")
    except Exception as e:   # no wgpu or no adapter: say which
        pytest.skip(f"no WebGPU adapter ({e})")
    with backends.using("webgpu"):
        yield be


def _on(name, f, *args):
    """f jitted on backend `name`, as host arrays."""
    out = pj.jit(f, backend=name)(*args)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


def _same(f, *args):
    a, b = _on("webgpu", f, *args), _on("numpy", f, *args)
    for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        if x.dtype == np.float32:    # WGSL's f32 division may be 2.5 ulp off (NVIDIA: 1)
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=0)
        else:
            np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- dtypes
def test_float64_input_is_refused_naming_the_value(wg, rng):
    from polyjit.backends.compiled import Float64Unsupported
    from polyjit.backends.webgpu_backend import WebGPUDtypeUnsupported
    x = rng.standard_normal(5)
    with pytest.raises(WebGPUDtypeUnsupported) as e:
        pj.jit(lambda x: x * 2)(x)
    assert isinstance(e.value, Float64Unsupported)
    msg = str(e.value)
    assert "webgpu" in msg and "float64" in msg and "input 0" in msg and "float32" in msg


def test_int64_intermediate_is_refused_naming_the_primitive(wg):
    x = np.arange(6, dtype=np.int32)
    with pytest.raises(TypeError) as e:
        pj.jit(lambda x: lax.convert_element_type(x, np.int64) * 3)(x)
    msg = str(e.value)
    assert "int64" in msg and "convert_element_type" in msg and "webgpu" in msg


def test_eager_float64_op_is_refused(wg):
    from polyjit.backends.webgpu_backend import WebGPUDtypeUnsupported
    a = pj.device_put(np.ones(3, np.float64), backend="webgpu")
    np.testing.assert_array_equal(np.asarray(a), np.ones(3))       # storage is fine
    with pytest.raises(WebGPUDtypeUnsupported, match="float64"):
        pnp.exp(a)


def test_renderer_refuses_64_bit_buffers():
    from polyjit.lowering import lower_to_kernels
    from polyjit.lowering.render_wgsl import DtypeUnsupported, WGSLRenderer
    closed = pj.make_jaxpr(lambda x: x + 1)(np.zeros(4, np.int64))
    prog = lower_to_kernels(closed)
    with pytest.raises(DtypeUnsupported, match="int64"):
        WGSLRenderer().program(prog.kernels, [a.dtype for a in prog.slot_avals])


@pytest.mark.parametrize("dt", ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                                "float16", "bfloat16", "float32"])
def test_small_dtypes_packed_storage_roundtrip_and_arithmetic(wg, dt):
    dt = np.dtype(dtypes.canonicalize(dt))
    rng = np.random.default_rng(1)
    n = 37                      # not a multiple of 4: partial words at the end
    if dt == np.bool_:
        x, y = rng.random(n) > 0.5, rng.random(n) > 0.3
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        x = rng.integers(info.min, info.max, n, endpoint=True).astype(dt)
        y = rng.integers(info.min, info.max, n, endpoint=True).astype(dt)
    else:
        x = (rng.standard_normal(n) * 100).astype(dt)
        y = (rng.standard_normal(n) * 3).astype(dt)
    a = pj.device_put(x, backend="webgpu")
    np.testing.assert_array_equal(np.asarray(a), x)
    if dt == np.bool_:
        _same(lambda x, y: (x & y, x | ~y, x != y, pnp.where(x, y, ~y)), x, y)
    elif dt.kind in "iu":
        _same(lambda x, y: (x + y, x * y, x - y, -x, x ^ y, pnp.maximum(x, y), x < y,
                            x.astype(np.float32), (x.astype(np.float32) * 0.7).astype(dt)), x, y)
    else:
        _same(lambda x, y: (x + y, x * y, x / y, -x, pnp.maximum(x, y), x > y,
                            x.astype(np.int32), x.astype(np.float32) * 3), x, y)


def test_reductions_over_packed_dtypes(wg):
    rng = np.random.default_rng(2)
    b = rng.random((6, 11)) > 0.4
    i8 = rng.integers(-128, 127, (6, 11)).astype(np.int8)
    h = rng.standard_normal((6, 11)).astype(np.float16)
    _same(lambda b, i8, h: (b.any(1), b.all(0), i8.sum(1), i8.max(0), pnp.argmax(i8, 1),
                            h.sum(1), h.max(0), pnp.cumsum(i8, 1)), b, i8, h)


def test_float_specials_match_numpy_backend(wg):
    x = np.array([0.0, -0.0, 1.5, -2.5, 3.5, np.inf, -np.inf, np.nan, 3e9, -3e9, 2.5e-40,
                  65504.0, 65520.0, 1e-8], np.float32)
    _same(lambda x: (pnp.maximum(x, 1.0), pnp.minimum(x, 1.0), pnp.isfinite(x), pnp.isnan(x),
                     x.astype(np.int32), x.astype(np.uint8), x.astype(np.float16), pnp.round(x),
                     pnp.sign(x), pnp.argmax(x), lax.bitcast_convert_type(x, np.uint32)), x)


def test_constant_operands_wgsl_would_reject_when_folded(wg):
    """Integer division by a constant 0, shifts by constants past the width and overflow
    between constants are rejected by WGSL's constant folding: they must still run."""
    x = np.array([7, -7, 1], np.int32)
    _same(lambda x: (lax.div(x, np.int32(0)), lax.rem(x, np.int32(0)),
                     lax.shift_left(x, np.int32(40)), lax.shift_right_arithmetic(x, np.int32(33)),
                     x + (np.int32(2**31 - 1) + np.int32(1) * (x * 0 + 1))), x)


def test_integer_corner_cases_match_numpy_backend(wg):
    x = np.array([7, -7, 2**31 - 1, -2**31, 0, 5, -1], np.int32)
    y = np.array([2, 0, -1, 3, 31, 33, -3], np.int32)
    _same(lambda x, y: (lax.div(x, y), lax.rem(x, y), lax.shift_left(x, y),
                        lax.shift_right_logical(x, y), lax.shift_right_arithmetic(x, y),
                        x ** 3, pnp.abs(x)), x, y)


@pytest.mark.parametrize("name,op,ref,tol", [
    ("log1p", pnp.log1p, np.log1p, 2e-6), ("expm1", pnp.expm1, np.expm1, 2e-6),
    ("cbrt", pnp.cbrt, np.cbrt, 2e-6), ("tanh", pnp.tanh, np.tanh, 2e-6),
    ("sin", pnp.sin, np.sin, 2e-6), ("power", lambda x: pnp.power(x, 2.5), lambda x: x ** 2.5, 1e-5)])
def test_functions_wgsl_lacks_vs_float64(wg, name, op, ref, tol):
    x = np.concatenate([np.linspace(-3, 3, 101), [1e-7, -1e-7, 1e-3]]).astype(np.float32)
    if name == "power":
        x = np.abs(x)
    if name == "log1p":
        x = x[x > -1]
    got = np.asarray(pj.jit(op)(x))
    np.testing.assert_allclose(got, ref(x.astype(np.float64)), rtol=tol, atol=1e-6)


def test_special_functions_vs_float64(wg):
    import math
    x = np.linspace(-2.5, 2.5, 41).astype(np.float32)
    np.testing.assert_allclose(np.asarray(pj.jit(pj.lax.erf)(x)),
                               [math.erf(v) for v in x.astype(np.float64)], atol=3e-7)
    p = np.linspace(0.3, 6.0, 40).astype(np.float32)
    np.testing.assert_allclose(np.asarray(pj.jit(pj.lax.lgamma)(p)),
                               [math.lgamma(v) for v in p.astype(np.float64)], atol=2e-6, rtol=2e-6)


# ---------------------------------------------------------------- PRNG
def test_threefry_bits_equal_numpy_backend(wg):
    rng = np.random.default_rng(3)
    k0, k1, c0, c1 = (rng.integers(0, 2**32, 257, dtype=np.uint64).astype(np.uint32)
                      for _ in range(4))
    _same(lambda *a: lax.threefry2x32(*a), k0, k1, c0, c1)


def test_random_bits_uniform_normal_equal_numpy_backend(wg):
    def draws(k):
        ks = pj.random.split(k, 3)
        return (pj.random.random_bits(ks[0], (1001,)), pj.random.uniform(ks[1], (33, 7)),
                pj.random.bernoulli(ks[2], 0.3, (50,)))
    k = np.array([0, 42], np.uint32)
    _same(draws, k)
    n_wg = _on("webgpu", lambda k: pj.random.normal(k, (1000,)), k)
    n_np = _on("numpy", lambda k: pj.random.normal(k, (1000,)), k)
    np.testing.assert_allclose(n_wg, n_np, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- limits
def test_dispatch_past_workgroup_limit_uses_2d_grid(wg, monkeypatch, rng):
    monkeypatch.setattr(wg, "max_groups", 5)      # 5 groups of 64 per dimension
    assert wg.grid(1000) == (4, 4)                # 16 groups as a 4 x 4 grid
    x = rng.standard_normal(1000).astype(np.float32)
    np.testing.assert_allclose(np.asarray(pj.jit(lambda x: pnp.exp(x) + 1.0)(x)),
                               np.exp(x.astype(np.float64)) + 1, rtol=1e-6)
    from polyjit.backends.webgpu_backend import WebGPULimitError
    with pytest.raises(WebGPULimitError, match="grid"):
        wg.grid(64 * 5 * 5 + 1)


def test_dispatch_past_the_real_workgroup_limit(wg):
    n = wg.max_groups * 64 + 1000          # one more row of groups than one dimension holds
    if n * 4 > wg.max_binding:
        pytest.skip("the adapter's per-dimension grid covers its largest buffer")
    x = np.arange(n, dtype=np.int32)
    assert wg.grid(n)[1] == 2
    got = np.asarray(pj.jit(lambda x: x * 3 + 1)(x))
    np.testing.assert_array_equal(got, x * 3 + 1)


def test_buffer_past_binding_limit_is_a_clear_error(wg, monkeypatch):
    from polyjit.backends.webgpu_backend import WebGPULimitError
    monkeypatch.setattr(wg, "max_binding", 1024)
    with pytest.raises(WebGPULimitError) as e:
        pj.device_put(np.zeros(1000, np.float32), backend="webgpu")
    msg = str(e.value)
    assert "maxStorageBufferBindingSize" in msg and "4000 bytes" in msg and "float32[1000]" in msg
    pj.device_put(np.zeros(256, np.float32), backend="webgpu")      # within the limit


def test_too_many_buffers_for_one_kernel_is_a_clear_error(wg, monkeypatch, rng):
    from polyjit.backends.webgpu_backend import WebGPULimitError
    monkeypatch.setattr(wg, "max_buffers_per_stage", 3)
    xs = [rng.standard_normal(8).astype(np.float32) for _ in range(4)]
    with pytest.raises(WebGPULimitError, match="maxStorageBuffersPerShaderStage"):
        pj.jit(lambda a, b, c, d: a + b + c + d)(*xs)


# ---------------------------------------------------------------- caching, control flow
def test_pipelines_are_cached_by_source(wg, rng):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    f = lambda x: pnp.tanh(x) * 3.0 - 1.0    # noqa: E731
    src = pj.jit(f).lower(x).executable.source
    n = len(wg._programs)
    pj.jit(f)(x)
    pj.jit(lambda x: pnp.tanh(x) * 3.0 - 1.0)(x)     # a new function, the same kernel
    assert len(wg._programs) <= n + 1
    assert all(wg.build(src, [])[k] is v for k, v in wg.build(src, []).items())


def test_scan_with_byte_sized_carry_and_outputs(wg):
    def f(c, x):
        c = c ^ (x > 0)
        return c, (c, (x * 3).astype(np.int8))
    xs = np.array([1.0, -2.0, 3.0, 0.5, -1.0, 2.0, 7.0], np.float32)
    _same(lambda xs: lax.scan(f, np.bool_(False), xs), xs)


def test_devices_lists_webgpu_adapter(wg):
    d = {e.backend: e for e in pj.devices()}["webgpu"]
    assert d.usable and d.platform in ("gpu", "cpu") and d.device == wg.device_name
