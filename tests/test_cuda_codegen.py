"""The CUDA path without a GPU and with one.

Without a GPU (CI): representative programs are lowered with the shared lowering, rendered
to CUDA C, and every kernel is compiled by `nvcc -ptx -arch=sm_90` with the flags NVRTC
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


TOL = {"float16": (2e-3, 2e-3), "bfloat16": (2e-2, 2e-2), "threefry": (1e-5, 1e-5)}


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
