"""The CUDA path without a GPU and with one.

Without a GPU (CI): representative programs are lowered with the shared lowering, rendered
to CUDA C, and every kernel is compiled by `nvcc -ptx -arch=sm_90` (sm_90a for warpgroup MMA) with the flags NVRTC
gets, so generated CUDA source is checked on every submission.
With a GPU: the same programs run on the cuda backend and must match the numpy backend.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

import polyjit as pj
import polyjit.lax as lax
import polyjit.numpy as pnp
from polyjit import backends
from polyjit.lowering import lower_to_kernels
from polyjit.lowering.program import HostStep
from polyjit.lowering.render_cuda import NVCC_FLAGS, CUDARenderer


def _r(rng, *shape, scale=1.0):
    return ((rng.standard_normal(shape) + 0.1) * scale).astype(np.float32)


def _softmax(x):
    e = pnp.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _layernorm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / pnp.sqrt(v + 1e-5) * g + b


def _chain(x):
    y = pnp.tanh(pnp.exp(x * 0.5) + 1.0)
    y = y * y - 0.25
    return pnp.maximum(pnp.sin(y) / (pnp.abs(y) + 2.0), -0.5) + pnp.sqrt(pnp.abs(x))


def _ints(x, s):
    i = x.astype(np.int32)
    u = lax.bitcast_convert_type(x, np.uint32)
    return ((i << s) ^ (i >> 1)) + (u >> 3).astype(np.int32), (x * 1e10).astype(np.int8), \
        (x * 1e12).astype(np.int64), pnp.floor_divide(i, 3) % 5


def _while(x):
    return lax.while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 1, pnp.tanh(c[1]) * 1.5), (0, x))[1]


def _scan(x):
    def step(c, xi):
        c = c * 0.9 + xi
        return c, pnp.exp(-c * c)
    return lax.scan(step, pnp.zeros(x.shape[1:], x.dtype), x)


def _cond(p, x):
    return lax.cond(p, lambda x: pnp.cos(x) * 2.0, lambda x: x.sum(-1, keepdims=True) + x, x)


def _programs():
    """name -> (function, inputs as (kind, shape)); built lazily from a fixed seed."""
    rng = np.random.default_rng(7)
    x, w, b = _r(rng, 37, 50), _r(rng, 50, 29), _r(rng, 29)
    img, k = _r(rng, 2, 3, 9, 8), _r(rng, 4, 3, 3, 3)
    idx = rng.integers(0, 37, 23).astype(np.int32)
    return {
        "chain": (_chain, (x,)),
        "softmax": (_softmax, (x * 4,)),
        "layernorm": (_layernorm, (x, _r(rng, 50), _r(rng, 50))),
        "matmul_bias_relu": (lambda x, w, b: pnp.maximum(x @ w + b, 0.0), (x, w, b)),
        "conv": (lambda a, k: lax.conv_general_dilated(a, k, (1, 1), ((1, 1), (1, 1))), (img, k)),
        "reductions": (lambda x: (x.sum(0), x.max(1), x.min(0), pnp.argmax(x, 1),
                                  pnp.argmin(x, 0), (x * 0.1 + 1).prod(1), (x > 0).any(1)), (x,)),
        "gather": (lambda x, i: pnp.take(x, i, axis=0) * 2.0 + 1.0, (x, idx)),
        "threefry": (lambda x: x + pj.random.normal(pj.random.PRNGKey(3), x.shape)
                     + pj.random.uniform(pj.random.PRNGKey(4), x.shape), (x,)),
        "float16": (lambda x, w: (pnp.tanh(x.astype(np.float16)) @ w.astype(np.float16)) * 3, (x, w)),
        "bfloat16": (lambda x: (pnp.exp(x.astype(pnp.bfloat16)) - 1).sum(-1), (x,)),
        "ints": (_ints, (x, np.int32(3))),
        "special_f64": (lambda x: (lax.erf_inv(pnp.tanh(x)), lax.lgamma(pnp.abs(x) + 0.5),
                                   lax.digamma(pnp.abs(x) + 0.5)), (x,)),
        "float64": (lambda x: pnp.exp(x).sum(-1) * pnp.cumsum(x, -1)[:, -1], (x.astype(np.float64),)),
        "while_body": (_while, (x,)),
        "scan_body": (_scan, (_r(rng, 6, 5, 4),)),
        "cond_body": (_cond, (np.bool_(True), x)),
        # tiled GEMM kernels (polyjit/lowering/render_cuda.py): FMA tiles with a fused
        # epilogue, odd sizes, transposed and batched operands; tensor-core tiles for
        # float16/bfloat16 inputs (vectorised cp.async loads when plain and aligned)
        "gemm_f32_epilogue": (lambda x, w, b: pnp.maximum(x @ w + b, 0.0),
                              (_r(rng, 130, 72), _r(rng, 72, 200), _r(rng, 200))),
        "gemm_f32_odd": (lambda a, b: a @ b, (_r(rng, 131, 67), _r(rng, 67, 93))),
        "gemm_f32_transposed": (lambda a, b: a.T @ b.T, (_r(rng, 72, 130), _r(rng, 200, 72))),
        "gemm_f32_a_t": (lambda a, b: a.T @ b, (_r(rng, 72, 132), _r(rng, 72, 96))),
        "gemm_f32_batched": (lambda a, b: pnp.matmul(a, b), (_r(rng, 3, 64, 48), _r(rng, 3, 48, 40))),
        "gemm_f16": (lambda a, b, c: a @ b + c, (_r(rng, 96, 80).astype(np.float16),
                                                 _r(rng, 80, 72).astype(np.float16),
                                                 _r(rng, 72).astype(np.float16))),
        "gemm_f16_odd": (lambda a, b: a @ b.T, (_r(rng, 70, 50).astype(np.float16),
                                                _r(rng, 90, 50).astype(np.float16))),
        "gemm_bf16": (lambda a, b: pnp.tanh(a @ b), (_r(rng, 3, 64, 96).astype(pnp.bfloat16),
                                                     _r(rng, 3, 96, 40).astype(pnp.bfloat16))),
        # convolution as an implicit GEMM (im2col in the B loader), bias + relu fused
        "gemm_conv": (lambda a, k, b: pnp.maximum(lax.conv_general_dilated(
            a, k, (1, 1), ((1, 1), (1, 1))) + b.reshape(1, -1, 1, 1), 0.0),
            (_r(rng, 4, 8, 12, 12), _r(rng, 32, 8, 3, 3), _r(rng, 32))),
        "gemm_conv_f16_groups": (lambda a, k: lax.conv_general_dilated(
            a, k, (2, 1), ((1, 1), (0, 2)), rhs_dilation=(1, 2), feature_group_count=2),
            (_r(rng, 2, 8, 15, 13).astype(np.float16), _r(rng, 32, 4, 3, 2).astype(np.float16))),
        # elementwise over enough elements for the float4 path, 4161 = 4 * 1040 + 1 (a tail),
        # with a broadcast operand that stays a scalar load
        "chain_vec4": (lambda x, b: _chain(x) * b + x, (_r(rng, 57, 73), _r(rng, 73))),
    }


PROGRAMS = _programs()


def _bodies(prog):
    """Control-flow bodies of a lowered program, as ClosedJaxprs (each lowers separately)."""
    from polyjit.backends.compiled import _sub_closed
    out = []
    for st in prog.steps:
        if isinstance(st, HostStep) and st.kind == "control":
            p = st.eqn.params
            for j in p.get("branches", ()) + tuple(p[k] for k in ("cond_jaxpr", "body_jaxpr", "jaxpr") if k in p):
                out.append(_sub_closed(j))
    return out


def _cuda_sources(name):
    """(source, kernel names) for every compiled unit of program `name`, bodies included,
    rendered both shape-specialised and with generic shapes (as eager ops are)."""
    f, args = PROGRAMS[name]
    pending, units = [pj.make_jaxpr(f)(*args)], []
    while pending:
        prog = lower_to_kernels(pending.pop(), name=f"{name}{len(units)}")
        pending += _bodies(prog)
        if not prog.kernels:
            continue
        dts = [a.dtype for a in prog.slot_avals]
        for generic in (False, True):
            src = CUDARenderer(generic_shapes=generic).program(prog.kernels, dts)
            units.append((src, [k.name for k in prog.kernels]))
    return units


# ---------------------------------------------------------------- nvcc, no GPU needed
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")


@needs_nvcc
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_kernel_compiles_with_nvcc(name, tmp_path):
    units = _cuda_sources(name)
    assert units, f"{name} lowered to no kernels"
    n_kernels = 0
    for i, (src, kernels) in enumerate(units):
        cu, ptx = tmp_path / f"u{i}.cu", tmp_path / f"u{i}.ptx"
        cu.write_text(src)
        r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", *NVCC_FLAGS, str(cu), "-o", str(ptx)],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"nvcc failed on {name} unit {i}:\n{r.stderr}\n{src}"
        text = ptx.read_text()
        for k in kernels:    # extern "C": each kernel is an entry under its own name
            assert f".entry {k}(" in text, (k, name)
        n_kernels += len(kernels)
    assert n_kernels >= 1


def test_large_elementwise_kernels_move_float4():
    """Each thread loads and stores one float4 at its own index (HBM needs the bytes in
    flight); the broadcast operand is read per element."""
    (src, kernels), = [u for u in _cuda_sources("chain_vec4")[:1]]
    assert len(kernels) == 1
    assert src.count("*(const float4*)") == 1 and src.count("*(float4*)") == 1, src
    assert "/* pj_launch" in src


def test_cuda_source_has_no_opencl_spelling():
    src, _ = _cuda_sources("float16")[0]
    for word in ("__kernel", "__global ", "get_global_id", "vload_half", "as_uint(", "_sat_rtz("):
        assert word not in src, word
    assert 'extern "C" __global__' in src and "pj_f16_bits" in src


def test_cuda_backend_missing_is_a_clear_error():
    try:
        backends.get_backend("cuda")
    except Exception as e:
        assert "cupy" in str(e) or "CUDA device" in str(e), str(e)
    else:
        pytest.skip("a CUDA device is present: nothing to report")


# ---------------------------------------------------------------- on a GPU
@pytest.fixture
def cuda():
    try:
        be = backends.get_backend("cuda")
    except Exception as e:
        pytest.skip(f"no CUDA device ({e})")
    return be


TOL = {"float16": (2e-3, 2e-3), "bfloat16": (2e-2, 2e-2), "threefry": (1e-5, 1e-5),
       # half outputs: float32 sums in another order may round to the neighbouring value
       "gemm_f16": (2e-3, 2e-2), "gemm_f16_odd": (2e-3, 2e-2), "gemm_bf16": (1.6e-2, 2e-2),
       "gemm_conv_f16_groups": (2e-3, 2e-2)}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_cuda_matches_numpy_backend(cuda, name):
    f, args = PROGRAMS[name]
    got = pj.jit(f, backend="cuda")(*args)
    ref = pj.jit(f, backend="numpy")(*args)
    rtol, atol = TOL.get(name, (1e-4, 1e-5))
    got_l = _leaves(got)
    ref_l = _leaves(ref)
    assert len(got_l) == len(ref_l)
    for g, r in zip(got_l, ref_l):
        g, r = np.asarray(g), np.asarray(r)
        assert g.dtype == r.dtype and g.shape == r.shape
        if g.dtype.kind in "iub":
            np.testing.assert_array_equal(g, r)
        else:
            np.testing.assert_allclose(g.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol)


def _leaves(t):
    if isinstance(t, (tuple, list)):
        return [x for e in t for x in _leaves(e)]
    return [t]


def _eager(x):
    return pnp.exp(x) * 2.0 + pnp.sin(x)


def test_cuda_eager_ops_and_cache(cuda, rng):
    x, x2 = _r(rng, 1000), _r(rng, 77)
    with backends.using("cuda"):
        y = _eager(pj.device_put(x))              # eager: one generic-shape kernel per op
        n_sources = len(cuda._programs)
        z = _eager(pj.device_put(x2))             # other shape, same sources: no new build
        assert len(cuda._programs) == n_sources
    with backends.using("numpy"):     # each op rounds to float32 on both backends
        ry, rz = _eager(pj.device_put(x)), _eager(pj.device_put(x2))
    np.testing.assert_allclose(np.asarray(y), np.asarray(ry), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(z), np.asarray(rz), rtol=1e-6, atol=1e-7)
    assert cuda.peak_bytes >= 8 * 1000


def test_cuda_build_error_names_kernel(cuda):
    from polyjit.backends.cuda_backend import KernelBuildError
    src = 'extern "C" __global__ void my_broken_kernel(float* a) { a[0] = undefined_thing; }'
    with pytest.raises(KernelBuildError) as e:
        cuda.build(src, ["my_broken_kernel"])
    assert "my_broken_kernel" in str(e.value) and "undefined_thing" in str(e.value)


# ---------------------------------------------------------------- tiled GEMM kernels
GEMM_PROGRAMS = sorted(n for n in PROGRAMS if n.startswith("gemm") or n == "float16"
                       or n == "matmul_bias_relu")


@pytest.mark.parametrize("name", GEMM_PROGRAMS)
def test_gemm_programs_use_the_tiled_kernel(name):
    f, args = PROGRAMS[name]
    prog = lower_to_kernels(pj.make_jaxpr(f)(*args))
    gemms = [k for k in prog.kernels if k.gemm is not None]
    assert len(gemms) == 1, prog.describe()
    src = CUDARenderer().program(prog.kernels, [a.dtype for a in prog.slot_avals])
    t = gemms[0].tiles
    want = {"float16": "f16", "bfloat16": "bf16"}.get(str(gemms[0].gemm.a.dtype), "simt")
    assert t["kind"] == want, t
    if name.startswith(("gemm_f16", "gemm_bf16", "gemm_conv_f16")):
        assert want != "simt"
    if want != "simt":
        assert "mma.sync.aligned.m16n8k16" in src and "ldmatrix" in src
    assert f"pj_launch {gemms[0].name}" in src


# warpgroup MMA (sm_90a): problems big enough that a 128 x 256 or 128 x 128 tile gives
# every SM of an H100 a block; tails in M and K, fused epilogues, a batch
def _h(rng, *shape, dt=np.float16):
    return _r(rng, *shape).astype(dt)


def _wgmma_programs():
    rng = np.random.default_rng(11)
    return {
        "wgmma_f16_256": (lambda a, b: a @ b, (_h(rng, 2048, 128), _h(rng, 128, 4096))),
        "wgmma_f16_bias": (lambda a, b, c: a @ b + c,
                           (_h(rng, 1536, 520), _h(rng, 520, 1536), _h(rng, 1536))),
        "wgmma_bf16_odd_tanh": (lambda a, b: pnp.tanh(a @ b * 0.1),
                                (_h(rng, 1000, 264, dt=pnp.bfloat16), _h(rng, 264, 2056, dt=pnp.bfloat16))),
        "wgmma_bf16_batched": (lambda a, b: pnp.matmul(a, b),
                               (_h(rng, 8, 384, 264, dt=pnp.bfloat16), _h(rng, 8, 264, 1024, dt=pnp.bfloat16))),
        # operands contiguous along M or N (the instruction transposes them)
        "wgmma_f16_a_t": (lambda a, b: a.T @ b, (_h(rng, 200, 1536), _h(rng, 200, 1536))),
        "wgmma_bf16_b_t": (lambda a, b: a @ b.T, (_h(rng, 2048, 136, dt=pnp.bfloat16),
                                                  _h(rng, 4096, 136, dt=pnp.bfloat16))),
        "wgmma_f16_both_t": (lambda a, b: a.T @ b.T, (_h(rng, 96, 1544), _h(rng, 1536, 96))),
    }


WGMMA_PROGRAMS = _wgmma_programs()


def _wgmma_kernel(name):
    f, args = WGMMA_PROGRAMS[name]
    prog = lower_to_kernels(pj.make_jaxpr(f)(*args))
    (k,) = [k for k in prog.kernels if k.gemm is not None]
    return prog, k


@needs_nvcc
@pytest.mark.parametrize("name", sorted(WGMMA_PROGRAMS))
def test_wgmma_kernels_compile_with_nvcc(name, tmp_path):
    prog, k = _wgmma_kernel(name)
    src = CUDARenderer().program(prog.kernels, [a.dtype for a in prog.slot_avals])
    assert k.tiles.get("wgmma"), k.tiles
    layout = {"_a_t": (1, 1), "_b_t": (0, 0), "_both_t": (1, 0)}
    ta, tb = next((v for s, v in layout.items() if name.endswith(s)), (0, 1))
    assert (k.tiles["ta"], k.tiles["tb"]) == (ta, tb), k.tiles
    assert "wgmma.mma_async.sync.aligned.m64n" in src
    cu, ptx = tmp_path / "u.cu", tmp_path / "u.ptx"
    cu.write_text(src)
    r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90a", *NVCC_FLAGS, str(cu), "-o", str(ptx)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f".entry {k.name}(" in ptx.read_text() and "wgmma.mma_async" in ptx.read_text()


def test_without_wgmma_the_same_product_uses_mma_sync():
    prog, _ = _wgmma_kernel("wgmma_f16_bias")
    r = CUDARenderer()
    r.wgmma = False           # an sm_80 / sm_89 device
    src = r.program(prog.kernels, [a.dtype for a in prog.slot_avals])
    assert "wgmma" not in src and "mma.sync.aligned.m16n8k16" in src


@pytest.mark.parametrize("name", sorted(WGMMA_PROGRAMS))
def test_wgmma_matches_numpy_backend(cuda, name):
    f, args = WGMMA_PROGRAMS[name]
    if cuda.arch != "sm_90a":
        pytest.skip(f"warpgroup MMA needs an sm_90 GPU (this one is {cuda.arch})")
    got = np.asarray(pj.jit(f, backend="cuda")(*args)).astype(np.float64)
    ref = np.asarray(pj.jit(f, backend="numpy")(*args)).astype(np.float64)
    # half outputs: float32 sums in another order may round to the neighbouring value
    rtol = 2e-3 if args[0].dtype == np.float16 else 1.6e-2
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max() * 0.01)


@pytest.fixture
def tf32():
    old = pj.config.matmul_precision
    pj.config.matmul_precision = "tf32"
    yield
    pj.config.matmul_precision = old


TF32_PROGRAMS = {
    "tf32": (lambda a, b: a @ b, lambda rng: (_r(rng, 256, 128), _r(rng, 128, 192))),
    "tf32_odd_t": (lambda a, b, c: pnp.maximum(a.T @ b + c, 0.0),
                   lambda rng: (_r(rng, 67, 131), _r(rng, 67, 93), _r(rng, 93))),
}


def _tf32_case(name):
    f, make = TF32_PROGRAMS[name]
    return f, make(np.random.default_rng(3))


@needs_nvcc
@pytest.mark.parametrize("name", sorted(TF32_PROGRAMS))
def test_tf32_kernels_compile_with_nvcc(tf32, name, tmp_path):
    f, args = _tf32_case(name)
    prog = lower_to_kernels(pj.make_jaxpr(f)(*args))
    (k,) = prog.kernels
    src = CUDARenderer().program(prog.kernels, [a.dtype for a in prog.slot_avals])
    assert k.tiles["kind"] == "tf32" and "m16n8k8.row.col.f32.tf32" in src
    cu, ptx = tmp_path / "u.cu", tmp_path / "u.ptx"
    cu.write_text(src)
    r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", *NVCC_FLAGS, str(cu), "-o", str(ptx)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f".entry {k.name}(" in ptx.read_text()


@pytest.mark.parametrize("name", sorted(TF32_PROGRAMS))
def test_tf32_matches_float64(cuda, tf32, name):
    f, args = _tf32_case(name)
    got = np.asarray(pj.jit(f, backend="cuda")(*args)).astype(np.float64)
    ref = np.asarray(pj.jit(f, backend="numpy")(*[a.astype(np.float64) for a in args]))
    # inputs rounded to 10 mantissa bits: ~1e-3 of the largest value (see test_lowering)
    assert np.abs(got - ref).max() <= 5e-3 * np.abs(ref).max()
