"""Lowering and the OpenCL backend: what gets fused, how much memory a program holds,
build errors, and numbers against numpy float64 references."""
import numpy as np
import pytest

import polyjit as pj
import polyjit.numpy as pnp
from polyjit import backends
from polyjit.lowering import HOST_FALLBACK_PRIMS, ir, lower_to_kernels


@pytest.fixture
def cl():
    try:
        be = backends.get_backend("opencl")
    except Exception as e:   # no pyopencl or no device: say which
        pytest.skip(f"opencl backend unavailable: {e}")
    with backends.using("opencl"):
        yield be


def _kernels(f, *args):
    return f.lower(*args).executable.kernels


def _rand(rng, *shape):
    return (rng.standard_normal(shape) + 0.1).astype(np.float32)


def _chain(x):
    y = pnp.exp(x * 0.5)
    y = pnp.tanh(y + 1.0)
    y = y * y - 0.25
    y = pnp.sin(y) / (pnp.abs(y) + 2.0)
    return pnp.maximum(y, -0.5) + pnp.sqrt(pnp.abs(x))


def _chain_ref(x):
    x = x.astype(np.float64)
    y = np.tanh(np.exp(x * 0.5) + 1.0)
    y = y * y - 0.25
    y = np.sin(y) / (np.abs(y) + 2.0)
    return np.maximum(y, -0.5) + np.sqrt(np.abs(x))


def _softmax(x):
    e = pnp.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _layernorm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / pnp.sqrt(v + 1e-5) * g + b


# ---------------------------------------------------------------- fusion
def test_ten_elementwise_ops_are_one_kernel(cl, rng):
    x = _rand(rng, 64, 33)
    f = pj.jit(_chain)
    closed = f.lower(x).closed
    assert len(closed.eqns) >= 10
    assert len(_kernels(f, x)) == 1
    np.testing.assert_allclose(np.asarray(f(x)), _chain_ref(x), rtol=1e-6, atol=1e-6)


def test_softmax_last_axis_at_most_two_kernels(cl, rng):
    x = _rand(rng, 48, 130) * 4
    f = pj.jit(_softmax)
    assert len(_kernels(f, x)) <= 2
    r = np.exp(x - x.max(-1, keepdims=True)).astype(np.float64)
    np.testing.assert_allclose(np.asarray(f(x)), r / r.sum(-1, keepdims=True), rtol=1e-4, atol=1e-7)


def test_layernorm_at_most_two_kernels(cl, rng):
    x, g, b = _rand(rng, 32, 96), _rand(rng, 96), _rand(rng, 96)
    f = pj.jit(_layernorm)
    assert len(_kernels(f, x, g, b)) <= 2
    xd = x.astype(np.float64)
    m = xd.mean(-1, keepdims=True)
    ref = (xd - m) / np.sqrt(((xd - m) ** 2).mean(-1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(np.asarray(f(x, g, b)), ref, rtol=1e-4, atol=1e-5)


def test_matmul_bias_relu_is_one_kernel(cl, rng):
    x, w, b = _rand(rng, 37, 50), _rand(rng, 50, 29), _rand(rng, 29)
    f = pj.jit(lambda x, w, b: pnp.maximum(x @ w + b, 0.0))
    ks = _kernels(f, x, w, b)
    assert len(ks) == 1 and "dot_general" in ks[0].name
    ref = np.maximum(x.astype(np.float64) @ w + b, 0)
    np.testing.assert_allclose(np.asarray(f(x, w, b)), ref, rtol=1e-4, atol=1e-5)


def test_residual_epilogue_and_reduction_over_first_axis(cl, rng):
    x, w, r = _rand(rng, 16, 24), _rand(rng, 24, 24), _rand(rng, 16, 24)
    f = pj.jit(lambda x, w, r: pnp.tanh(x @ w) + r)
    assert len(_kernels(f, x, w, r)) == 1
    g = pj.jit(lambda x: x - x.mean(0))     # the mean must not be recomputed per element
    ks = _kernels(g, x)
    assert len(ks) == 2
    np.testing.assert_allclose(np.asarray(g(x)), x - x.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)


def test_movement_ops_are_index_arithmetic(cl, rng):
    x = _rand(rng, 6, 8, 5)

    def f(x):
        y = pnp.transpose(x, (2, 0, 1))[:, 1:5, ::2]
        y = pnp.concatenate([y, pnp.pad(y, ((0, 0), (0, 0), (1, 0)))[:, :, :4]], axis=0)
        return pnp.reshape(y, (10, -1)) * 2.0

    jf = pj.jit(f)
    assert len(_kernels(jf, x)) == 1
    xt = np.transpose(x, (2, 0, 1))[:, 1:5, ::2].astype(np.float64)
    ref = np.concatenate([xt, np.pad(xt, ((0, 0), (0, 0), (1, 0)))[:, :, :4]], 0).reshape(10, -1) * 2
    np.testing.assert_allclose(np.asarray(jf(x)), ref, rtol=1e-6)


def test_grad_of_mlp_at_most_three_times_forward(cl, rng):
    if not hasattr(pj, "grad"):
        pytest.skip("needs pj.grad (autodiff issue 3)")
    ws = [_rand(rng, 16, 16) * 0.3 for _ in range(3)]
    x = _rand(rng, 8, 16)

    def fwd(ws, x):
        for w in ws:
            x = pnp.tanh(x @ w)
        return (x * x).sum()

    n_fwd = len(_kernels(pj.jit(fwd), ws, x))
    n_grad = len(_kernels(pj.jit(pj.grad(fwd)), ws, x))
    assert n_grad <= 3 * n_fwd, (n_grad, n_fwd)


# ---------------------------------------------------------------- memory
def test_mlp_peak_memory_within_bound(cl, rng):
    # activations about as large as the parameters (2560x128 vs 20 of 128x128 floats), so
    # one activation buffer more than the two live ones breaks the 1.25x bound
    layers, width, batch = 20, 128, 2560
    ws = [pj.device_put(_rand(rng, width, width) * 0.1) for _ in range(layers)]
    bs = [pj.device_put(_rand(rng, width) * 0.1) for _ in range(layers)]
    xh = _rand(rng, batch, width)

    def mlp(ws, bs, x):
        for w, b in zip(ws, bs):
            x = pnp.maximum(x @ w + b, 0.0)
        return x

    params = sum(a.size * 4 for a in ws + bs)
    act = batch * width * 4
    assert 0.9 * params <= act <= 1.1 * params
    bound = 1.25 * (params + 2 * act)
    h = xh.astype(np.float64)
    for w, b in zip(ws, bs):
        h = np.maximum(h @ np.asarray(w) + np.asarray(b), 0)

    def held(f, x):
        """Bytes a call allocates beyond what is resident (params and x), and its result."""
        f.lower(ws, bs, x)             # compile outside the measured window
        cl.reset_peak()
        base = cl.bytes_in_use
        out = f(ws, bs, x)
        out.block_until_ready()
        return cl.peak_bytes - base, out

    # the caller keeps x, so it stays resident beside the program's two live activations
    x = pj.device_put(xh)
    extra, out = held(pj.jit(mlp), x)
    assert params + extra <= bound, (extra, params, act)
    np.testing.assert_allclose(np.asarray(out), h, rtol=1e-4, atol=1e-5)
    # x donated: its buffer holds activations too, and the whole program fits the bound
    x = pj.device_put(xh)
    extra, out = held(pj.jit(mlp, donate_argnums=2), x)
    assert params + act + extra <= bound, (extra, params, act)
    np.testing.assert_allclose(np.asarray(out), h, rtol=1e-4, atol=1e-5)


def test_liveness_plan_reuses_blocks(cl, rng):
    x, w = _rand(rng, 32, 32), _rand(rng, 32, 32) * 0.2

    def f(x, w):       # each matmul output is stored once and read by the next layer only
        for _ in range(6):
            x = pnp.tanh(x @ w)
        return x

    prog = pj.jit(f).lower(x, w).executable.program
    inter = [s for st in prog.steps for s in st.writes if s in prog.memory.block_of]
    assert len(inter) >= 5
    assert len(prog.memory.block_bytes) <= 2


# ---------------------------------------------------------------- donation
def test_donated_params_are_updated_in_place(cl, rng):
    from polyjit.backends.compiled import DeletedArrayError
    ph = {"w": _rand(rng, 96, 64), "b": _rand(rng, 64)}
    gh = {"w": _rand(rng, 96, 64), "b": _rand(rng, 64)}

    def sgd(p, g):
        return {k: p[k] - 0.1 * g[k] for k in p}

    g = {k: pj.device_put(v) for k, v in gh.items()}
    ref = {k: np.asarray(v) for k, v in pj.jit(sgd)({k: pj.device_put(v) for k, v in ph.items()}, g).items()}
    step = pj.jit(sgd, donate_argnums=(0,))
    p = {k: pj.device_put(v) for k, v in ph.items()}
    exe = step.lower(p, g).executable
    assert exe.donated == [0, 1] and "in place over donated" in exe.describe()
    mems = {k: v._buf.mem for k, v in p.items()}
    cl.reset_peak()
    base = cl.bytes_in_use
    new = step(p, g)
    new["w"].block_until_ready()
    assert cl.peak_bytes == base                       # nothing allocated: updated in place
    assert all(new[k]._buf.mem is mems[k] for k in p)  # the outputs are the inputs' buffers
    for k in p:
        np.testing.assert_array_equal(np.asarray(new[k]), ref[k])
        np.testing.assert_array_equal(np.asarray(g[k]), gh[k])     # not donated: intact
    with pytest.raises(DeletedArrayError, match="deleted.*donated"):
        np.asarray(p["w"])
    with pytest.raises(DeletedArrayError, match="donated"):
        step(p, g)
    with pytest.raises(DeletedArrayError, match="donated"):
        p["b"] + 1.0
    for _ in range(3):                                 # a training loop: params = step(params, grads)
        new = step(new, g)
    np.testing.assert_allclose(np.asarray(new["b"]), ph["b"] - 0.4 * gh["b"].astype(np.float64), rtol=1e-5)
    # the numpy backend ignores donation: the argument stays valid
    q = pj.device_put(ph["b"], "numpy")
    pj.jit(lambda a: a * 2, donate_argnums=0, backend="numpy")(q)
    np.testing.assert_array_equal(np.asarray(q), ph["b"])


@pytest.mark.parametrize("case", ["swap", "adam", "transpose", "reverse", "centre", "twice"])
def test_donation_matches_undonated(cl, rng, case):
    """Several outputs over several donated inputs in one kernel, and kernels that read a
    donated element other work items write (must not run in place): same results as
    without donation, and a donated input the plan could not use stays valid."""
    a, b, c = _rand(rng, 33, 33), _rand(rng, 33, 33), np.abs(_rand(rng, 33, 33))
    fs = {
        "swap": (lambda a, b: (b * 2.0, a + b, a - b), (0, 1), (a, b)),
        "adam": (lambda p, m, v, g: ((p - 0.01 * (0.9 * m + 0.1 * g) / (pnp.sqrt(0.99 * v + 0.01 * g * g) + 1e-8)),
                                     0.9 * m + 0.1 * g, 0.99 * v + 0.01 * g * g), (0, 1, 2), (a, b, c, a * 0.5)),
        "transpose": (lambda a: a.T + 1.0, (0,), (a,)),
        "reverse": (lambda a: a[::-1] * 3.0, (0,), (a,)),
        "centre": (lambda a: a - a.mean(), (0,), (a,)),
        "twice": (lambda a, b: a * b + 1.0, (0,), (a, a)),
    }
    f, donate, args = fs[case]
    want = pj.jit(f)(*args)
    arrs = [pj.device_put(x) for x in args]
    if case == "twice":
        arrs[1] = arrs[0]          # the donated array is also passed undonated: copied, kept
    jf = pj.jit(f, donate_argnums=donate)
    in_place = "in place over donated" in jf.lower(*arrs).executable.describe()
    assert in_place == (case in ("swap", "adam", "centre", "twice"))
    got = jf(*arrs)
    for w, g_ in zip(*(x if isinstance(x, tuple) else (x,) for x in (want, got))):
        # in-place kernels are other source, and a GPU compiler may round a division or
        # contract an fma differently in it: equal within float32 elementwise tolerance of
        # the operands' scale (adam's p - step cancels to values far smaller than p)
        w = np.asarray(w)
        np.testing.assert_allclose(np.asarray(g_), w, rtol=1e-6, atol=1e-6 * np.abs(w).max())
    if case in ("transpose", "reverse", "twice"):
        np.testing.assert_array_equal(np.asarray(arrs[0]), args[0])


# ---------------------------------------------------------------- errors and fallbacks
def test_build_error_names_kernel_and_log(cl):
    from polyjit.backends.opencl_backend import KernelBuildError
    src = "__kernel void my_broken_kernel(__global float* a) { a[0] = undefined_thing; }"
    with pytest.raises(KernelBuildError) as e:
        cl.build(src, ["my_broken_kernel"])
    msg = str(e.value)
    assert "my_broken_kernel" in msg and "undefined_thing" in msg


def test_float64_needs_fp64(cl, rng, monkeypatch):
    from polyjit.backends.opencl_backend import Executable, Float64Unsupported
    x = rng.standard_normal(5)
    closed = pj.make_jaxpr(lambda x: x * 2)(x)
    assert closed.in_avals[0].dtype == np.float64
    monkeypatch.setattr(cl, "fp64", False)
    with pytest.raises(Float64Unsupported, match="float64"):
        Executable(cl, closed)


def test_float64_runs_on_fp64_device(cl, rng):
    if not cl.fp64:
        pytest.skip("device has no fp64")
    x = rng.standard_normal((7, 9))
    got = np.asarray(pj.jit(lambda x: pnp.exp(x).sum(-1))(x))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.exp(x).sum(-1), rtol=1e-12)


def test_host_fallbacks_are_listed_and_visible(cl, rng):
    x = _rand(rng, 10)
    prog = pj.jit(lambda x: pnp.sort(x) * 2).lower(x).executable.program
    assert {s.eqn.prim for s in prog.host_steps} <= HOST_FALLBACK_PRIMS
    assert "host fallback sort" in prog.describe()
    np.testing.assert_allclose(np.asarray(pj.jit(lambda x: pnp.sort(x) * 2)(x)), np.sort(x) * 2)


# ---------------------------------------------------------------- numbers vs float64
@pytest.mark.parametrize("op,ref", [
    (pnp.exp, np.exp), (pnp.log1p, np.log1p), (pnp.tanh, np.tanh), (pnp.sqrt, np.sqrt),
    (lambda x: x * 3.0 + 1.0, lambda x: x * 3.0 + 1.0), (pnp.abs, np.abs)])
def test_elementwise_vs_float64(cl, rng, op, ref):
    x = (rng.random(1000) * 3 + 0.1).astype(np.float32)
    np.testing.assert_allclose(np.asarray(pj.jit(op)(x)), ref(x.astype(np.float64)), rtol=1e-6)


def test_reductions_and_matmul_vs_float64(cl, rng):
    x, y = _rand(rng, 65, 70), _rand(rng, 70, 33)
    got = pj.jit(lambda x, y: (x @ y, x.sum(0), x.max(1), pnp.argmax(x, 1)))(x, y)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(np.asarray(got[0]), xd @ y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got[1]), xd.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got[2]), xd.max(1), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(got[3]), x.argmax(1))


def test_conv_and_pooling_vs_float64(cl, rng):
    x, w = _rand(rng, 2, 3, 9, 8), _rand(rng, 4, 3, 3, 3)
    f = pj.jit(lambda x, w: pj.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1))))
    ref = np.asarray(pj.jit(lambda x, w: pj.lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1))), backend="numpy")(x.astype(np.float64), w.astype(np.float64)))
    np.testing.assert_allclose(np.asarray(f(x, w)), ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- control flow (host loops)
def _cf_case(name, rng):
    """(function, args, float64 reference) for one control-flow primitive."""
    lax = pj.lax
    x, w = np.abs(_rand(rng, 6, 8)) + 0.1, _rand(rng, 8, 8) * 0.3
    xd, wd = x.astype(np.float64), w.astype(np.float64)
    if name in ("cond_true", "cond_false"):
        s = 1.0 if name == "cond_true" else -1.0
        f = lambda x, w: lax.cond(x.sum() > 0, lambda a: pnp.tanh(a @ w), lambda a: a * 2.0 - 1.0, x)
        return f, (x * s, w), (np.tanh(xd @ wd) if s > 0 else -xd * 2.0 - 1.0)
    if name == "while_loop":
        def f(x, w):
            return lax.while_loop(lambda c: c[1].sum() < 1e3, lambda c: (c[0] + 1, c[1] * 1.5 + 0.25),
                                  (pnp.int32(0), x))
        n, v = 0, xd
        while v.sum() < 1e3:
            n, v = n + 1, v * 1.5 + 0.25
        return f, (x, w), (np.int32(n), v)
    if name == "fori_loop":
        f = lambda x, w: lax.fori_loop(0, 5, lambda i, v: pnp.tanh(v @ w) + i * 0.125, x)
        v = xd
        for i in range(5):
            v = np.tanh(v @ wd) + i * 0.125
        return f, (x, w), v
    rev = name == "scan_reverse"

    def f(x, w):
        def body(c, row):
            c = pnp.tanh(c @ w + row)
            return c, c.sum() * 0.5
        return lax.scan(body, pnp.zeros(8, np.float32), x, reverse=rev)
    c, ys = np.zeros(8), np.zeros(6)
    for t in (range(5, -1, -1) if rev else range(6)):
        c = np.tanh(c @ wd + xd[t])
        ys[t] = c.sum() * 0.5
    return f, (x, w), (c, ys)


@pytest.mark.parametrize("name", ["cond_true", "cond_false", "while_loop", "fori_loop", "scan", "scan_reverse"])
def test_control_flow_vs_float64(cl, rng, name):
    f, args, ref = _cf_case(name, rng)
    jf = pj.jit(f)
    assert any(s.kind == "control" for s in jf.lower(*args).executable.host_steps)
    got = jf(*args)
    got, ref = (got, ref) if isinstance(ref, tuple) else ((got,), (ref,))
    assert len(got) == len(ref)
    for g_, r in zip(got, ref):
        assert np.asarray(g_).dtype == (np.int32 if np.asarray(r).dtype == np.int32 else np.float32)
        np.testing.assert_allclose(np.asarray(g_), r, rtol=2e-5, atol=1e-5)


# ---------------------------------------------------------------- program cache on disk
_DISK_CACHE_CHILD = """
import sys
import numpy as np
import polyjit as pj
import polyjit.numpy as pnp
from polyjit import backends
be = backends.get_backend(sys.argv[4])

def refuse(source, names):
    raise AssertionError("rebuilt from source: " + ", ".join(names))
be._compile_source = refuse          # every program must come from the disk cache
c, x = float(sys.argv[1]), np.load(sys.argv[2])
with backends.using(sys.argv[4]):
    y = pj.jit(lambda x: pnp.tanh(x * c) + 1.0)(x)
np.save(sys.argv[3], np.asarray(y))
"""


def test_disk_cache_serves_programs_without_rebuilding(cl, rng, tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import uuid
    if not hasattr(cl, "_compile_source"):
        pytest.skip(f"{cl.name} keeps no program binaries on disk")
    monkeypatch.setenv("POLYJIT_CACHE", str(tmp_path))
    c = 1.0 + (uuid.uuid4().int % 2 ** 20) / 2 ** 21   # a literal no earlier build has seen
    builds = []
    real = cl._compile_source
    monkeypatch.setattr(cl, "_compile_source", lambda src, names: builds.append(names) or real(src, names))
    x = _rand(rng, 300)
    f = pj.jit(lambda x: pnp.tanh(x * c) + 1.0)
    want = np.asarray(f(x))
    (binary,) = [p for p in tmp_path.iterdir() if p.suffix in (".bin", ".cubin")]
    assert len(builds) == 1
    mtime = binary.stat().st_mtime_ns
    # this process, in-memory cache dropped: loaded from disk
    cl._programs.pop(f.lower(x).executable.source)
    np.testing.assert_array_equal(np.asarray(pj.jit(lambda x: pnp.tanh(x * c) + 1.0)(x)), want)
    assert len(builds) == 1
    # a second process, with a compiler that refuses to run
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, POLYJIT_CACHE=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", _DISK_CACHE_CHILD, repr(c), str(tmp_path / "x.npy"),
                        str(tmp_path / "y.npy"), cl.name], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)
    assert binary.stat().st_mtime_ns == mtime and len(list(tmp_path.glob("*bin"))) == 1
    # a stale binary is rebuilt from source
    binary.write_bytes(b"not a program")
    cl._programs.pop(f.lower(x).executable.source)
    np.testing.assert_array_equal(np.asarray(pj.jit(lambda x: pnp.tanh(x * c) + 1.0)(x)), want)
    assert len(builds) == 2


# ---------------------------------------------------------------- IR
def test_index_arithmetic_cancels_flatten_of_unflatten():
    g = ir.loop_var(6 * 7 * 5, "g")
    assert ir.flatten(ir.unflatten(g, (6, 7, 5)), (6, 7, 5)) is g
    i, j = ir.loop_var(4), ir.loop_var(9)
    assert ir.idiv(ir.iadd(ir.imul(i, 9), j), 9) is i
    assert ir.imod(ir.iadd(ir.imul(i, 9), j), 9) is j


def test_lower_to_kernels_is_backend_independent(rng):
    x = _rand(rng, 4, 6)
    closed = pj.make_jaxpr(_softmax)(x)
    prog = lower_to_kernels(closed)
    assert len(prog.kernels) == 1 and prog.kernels[0].source == ""
    assert prog.kernels[0].global_size == 4



def test_deep_residual_network_lowers_one_layer_at_a_time(rng):
    """Each convolution gets its own kernel (its epilogue fused) however deep the network:
    fusion never inlines a convolution into the next one's reduction loop, and lowering a
    40-block residual network stays fast (its expression trees reach one layer back, not
    through every layer, whose index variants multiply where residual paths rejoin). The
    running residual sum, shared by two kernels per block, is stored every few blocks once
    it costs more than fusion.SHARED_MAX_OPS to recompute, so the work stays linear."""
    import time
    from polyjit import lax
    depth = 40
    ws = [_rand(rng, 4, 4, 3, 3) * 0.3 for _ in range(depth)]

    def net(x, ws):
        for w in ws:
            y = lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)])
            x = x + pnp.maximum(y, 0.0)
        return x

    closed = pj.make_jaxpr(net)(_rand(rng, 1, 4, 8, 8), ws)
    t0 = time.perf_counter()
    prog = lower_to_kernels(closed)
    assert time.perf_counter() - t0 < 20
    assert depth < len(prog.kernels) <= depth + depth // 4 + 1


# ---------------------------------------------------------------- tiled matrix products
# (shape a, shape b, dot): odd sizes (edge tiles), transposed operands through dimension
# numbers, batch dims, and a size just under the GEMM threshold (generic path)
MATMULS = {
    "square": ((128, 96), (96, 160), lambda a, b: a @ b),
    "odd": ((131, 67), (67, 93), lambda a, b: a @ b),
    "a_t": ((67, 131), (67, 93), lambda a, b: a.T @ b),
    "b_t": ((131, 67), (93, 67), lambda a, b: a @ b.T),
    "both_t": ((67, 131), (93, 67), lambda a, b: a.T @ b.T),
    "batched": ((3, 45, 70), (3, 70, 38), lambda a, b: pnp.matmul(a, b)),
    "batched_bcast_rhs": ((2, 3, 33, 40), (40, 50), lambda a, b: a @ b),
    "einsum_bkd": ((4, 40, 24), (4, 24, 36), lambda a, b: pj.lax.dot_general(
        a, b, (((2,), (1,)), ((0,), (0,))))),
    "k_contig_both": ((70, 96), (50, 96), lambda a, b: pj.lax.dot_general(
        a, b, (((1,), (1,)), ((), ())))),
    "tiny": ((5, 7), (7, 3), lambda a, b: a @ b),
}


def _np_dot(name, a, b):
    sa, sb, f = MATMULS[name]
    if name == "einsum_bkd":
        return np.einsum("bmk,bkn->bmn", a, b)
    if name == "k_contig_both":
        return a @ b.T
    return {"a_t": lambda: a.T @ b, "b_t": lambda: a @ b.T, "both_t": lambda: a.T @ b.T
            }.get(name, lambda: np.matmul(a, b))()


def _assert_rel(got, ref, tol):
    got, ref = np.asarray(got).astype(np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)
    assert err <= tol, err


@pytest.mark.parametrize("name", sorted(MATMULS))
def test_matmul_shapes_vs_float64(cl, rng, name):
    sa, sb, f = MATMULS[name]
    a, b = _rand(rng, *sa), _rand(rng, *sb)
    jf = pj.jit(f)
    ks = _kernels(jf, a, b)
    assert len(ks) == 1
    assert (ks[0].gemm is not None) == (name != "tiny")
    _assert_rel(jf(a, b), _np_dot(name, a.astype(np.float64), b.astype(np.float64)), 1e-4)


@pytest.mark.parametrize("dt", ["float16", "bfloat16"])
def test_matmul_half_inputs_vs_float64(cl, rng, dt):
    dtype = np.float16 if dt == "float16" else pnp.bfloat16
    a, b = _rand(rng, 96, 80).astype(dtype), _rand(rng, 80, 72).astype(dtype)
    bias = _rand(rng, 72).astype(dtype)
    f = pj.jit(lambda a, b, c: pnp.maximum(a @ b + c, 0))
    ks = _kernels(f, a, b, bias)
    assert len(ks) == 1 and ks[0].gemm is not None
    got = f(a, b, bias)
    assert np.asarray(got).dtype == np.dtype(dtype)
    ref = np.maximum(a.astype(np.float64) @ b.astype(np.float64) + bias.astype(np.float64), 0)
    # exact products, float32 sums; then the product and the add each round to the
    # output dtype: a few units of its epsilon (2^-11, 2^-8) relative to the largest value
    _assert_rel(got, ref, 4e-3 if dt == "float16" else 3e-2)


def test_matmul_fused_producer_and_epilogue(cl, rng):
    """A cheap elementwise producer of an operand runs inside the GEMM's loader (one kernel)
    on backends that fuse loaders; on those with plain_product_operands (OpenCL on a CPU)
    it gets its own kernel. A transcendental producer always does: a loader would
    recompute it once per output tile. The epilogue is fused either way."""
    x, w, r = _rand(rng, 70, 48), _rand(rng, 48, 66), _rand(rng, 70, 66)
    cheap = pj.jit(lambda x, w, r: pnp.tanh((x * 0.1 + 1.0) @ w) * 2.0 + r)
    ks = _kernels(cheap, x, w, r)
    assert len(ks) == (2 if cl.plain_product_operands else 1) and ks[-1].gemm is not None
    ref = np.tanh((x.astype(np.float64) * 0.1 + 1.0) @ w) * 2.0 + r
    _assert_rel(cheap(x, w, r), ref, 1e-4)
    costly = pj.jit(lambda x, w, r: pnp.tanh(pnp.exp(x * 0.1) @ w) * 2.0 + r)
    ks = _kernels(costly, x, w, r)
    assert len(ks) == 2 and ks[1].gemm is not None and "exp" in ks[0].name
    ref = np.tanh(np.exp(x.astype(np.float64) * 0.1) @ w) * 2.0 + r
    _assert_rel(costly(x, w, r), ref, 1e-4)


def test_matmul_tf32_precision(cl, rng):
    a, b = _rand(rng, 200, 300), _rand(rng, 300, 136)
    ref = a.astype(np.float64) @ b
    old = pj.config.matmul_precision
    try:
        pj.config.matmul_precision = "tf32"
        f = pj.jit(lambda a, b: a @ b)
        ks = _kernels(f, a, b)
        assert ks[0].gemm is not None and ks[0].gemm.precision == "tf32"
        got = f(a, b)
    finally:
        pj.config.matmul_precision = old
    # tf32 keeps 10 mantissa bits: each input is rounded by up to 2^-11 relative, so each
    # product by ~2^-10; over K terms of random sign the error grows like sqrt(K) as the
    # result itself does, leaving ~1e-3 of the largest value. 5e-3 bounds that with room.
    # (Backends without tensor cores compute exact float32, which passes as well.)
    _assert_rel(got, ref, 5e-3)


def test_matmul_precision_config_is_validated():
    assert pj.config.matmul_precision == "highest"
    with pytest.raises(ValueError, match="matmul_precision.*'highest', 'tf32'"):
        pj.config.matmul_precision = "fast"
    assert pj.config.matmul_precision == "highest"


def test_large_matmul_kernel_is_tiled():
    a = np.zeros((512, 384), np.float32)
    prog = lower_to_kernels(pj.make_jaxpr(lambda a, b: a @ b)(a, a.T))
    (k,) = prog.kernels
    g = k.gemm
    assert (g.batch, g.M, g.N, g.K) == (1, 512, 512, 384)
    assert g.a.plain is not None and g.b.plain is not None
    assert "gemm" in prog.describe()


@pytest.mark.parametrize("tiles", ["gpu", "cpu"])
@pytest.mark.parametrize("name", ["odd", "a_t", "batched"])
def test_matmul_other_opencl_tiles_on_any_device(cl, rng, name, tiles, monkeypatch):
    """The OpenCL tile kinds this device does not get by default, run on it anyway:
    local-memory tiles of GPUs, and the unpacked CPU variant."""
    if cl.name == "opencl":
        from polyjit.lowering import render_opencl
        choose = render_opencl.gemm_tiles
        monkeypatch.setattr(render_opencl, "gemm_tiles", lambda spec, dt, cu: (
            choose(spec, "gpu", cu) if tiles == "gpu" else dict(kind="cpu", RM=4, RN=8, WG=1, KU=4)))
    sa, sb, f = MATMULS[name]
    a, b = _rand(rng, *sa), _rand(rng, *sb)
    jf = pj.jit(f)
    (k,) = _kernels(jf, a, b)
    assert k.tiles["kind"] == tiles or cl.name != "opencl"
    _assert_rel(jf(a, b), _np_dot(name, a.astype(np.float64), b.astype(np.float64)), 1e-4)


# ---------------------------------------------------------------- convolution as implicit GEMM
CONVS = {
    "basic": ((4, 8, 12, 12), (32, 8, 3, 3), dict(window_strides=(1, 1), padding=((1, 1), (1, 1)))),
    "stride_rhs_dilation": ((2, 6, 15, 13), (24, 6, 3, 2), dict(
        window_strides=(2, 1), padding=((2, 1), (0, 2)), rhs_dilation=(1, 2))),
    "lhs_dilation": ((2, 4, 7, 7), (16, 4, 3, 3), dict(
        window_strides=(1, 1), padding=((1, 1), (1, 1)), lhs_dilation=(2, 2))),
    "groups": ((2, 8, 10, 10), (32, 4, 3, 3), dict(
        window_strides=(1, 1), padding=((1, 1), (1, 1)), feature_group_count=2)),
    "conv1d": ((3, 16, 40), (32, 16, 5), dict(window_strides=(1,), padding=((2, 2),))),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_implicit_gemm_with_epilogue_vs_float64(cl, rng, name):
    xs, ws, kw = CONVS[name]
    x, w, b = _rand(rng, *xs), _rand(rng, *ws), _rand(rng, ws[0])

    def f(x, w, b):
        y = pj.lax.conv_general_dilated(x, w, **kw)
        return pnp.maximum(y + b.reshape((1, -1) + (1,) * (x.ndim - 2)), 0.0)

    jf = pj.jit(f)
    ks = _kernels(jf, x, w, b)
    assert len(ks) == 1 and ks[0].gemm is not None      # conv, bias and relu: one GEMM
    ref = np.asarray(pj.jit(f, backend="numpy")(*(a.astype(np.float64) for a in (x, w, b))))
    _assert_rel(jf(x, w, b), ref, 1e-4)


def test_storage_only_dtypes_are_host_steps_holding_bytes_on_the_device(cl, rng):
    """float8/int4 values have no device arithmetic: their equations run on the host
    (numpy reference), the device holds their bytes, and the float work around them still
    fuses into kernels; the stored bytes equal the numpy backend's exactly."""
    import ml_dtypes
    from polyjit import lax

    def f(x):
        q = lax.convert_element_type(x * 3.0, ml_dtypes.float8_e4m3fn)
        i = lax.convert_element_type(pnp.clip(x * 4.0, -8, 7), ml_dtypes.int4)
        back = lax.convert_element_type(q, np.float32) + lax.convert_element_type(i, np.float32)
        return pnp.tanh(back), q

    x = _rand(rng, 5, 7)
    y, q = pj.jit(f)(x)
    with backends.using("numpy"):
        y_ref, q_ref = pj.jit(f)(x)
    assert np.asarray(q).dtype == ml_dtypes.float8_e4m3fn
    np.testing.assert_array_equal(np.asarray(q).view(np.uint8), np.asarray(q_ref).view(np.uint8))
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-6, atol=1e-7)
    exe = pj.jit(f).lower(x).executable
    assert len(exe.host_steps) >= 3 and len(exe.kernels) >= 1


@pytest.mark.parametrize("fn,ref", [
    (lambda a: pnp.argmax(a), lambda a: np.argmax(a)),
    (lambda a: pnp.argmin(a, axis=1), lambda a: np.argmin(a, axis=1)),
    (lambda a: pnp.sum(a * 3.0, axis=1), lambda a: np.sum(a * 3.0, axis=1)),
    (lambda a: a - pnp.max(a, axis=1, keepdims=True) + pnp.sum(a),
     lambda a: a - np.max(a, axis=1, keepdims=True) + np.sum(a))])
def test_reductions_over_size_one_dims(cl, rng, fn, ref):
    """A reduction whose reduced dims all have size 1 has no loop: its single update must
    still run exactly once per output (argmax of a (1, 1) array once crashed the renderer)."""
    for shape in [(1, 1), (5, 1)]:
        x = _rand(rng, *shape)
        got = np.asarray(pj.jit(fn)(x))
        np.testing.assert_allclose(got, ref(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_cpu_elementwise_kernels_use_vector_math(cl, rng):
    """On a CPU device a float32 elementwise kernel runs VEC elements per work item as
    floatN vectors (PoCL's vector math library), with a scalar tail for the remainder;
    results within float32 rounding of float64 numpy, NaN propagation of max/min kept."""
    from polyjit.lowering import render_opencl
    n = render_opencl.VEC * render_opencl.WORK_GROUP * 3 + 5       # a ragged tail
    x = _rand(rng, n)
    x[::97] = np.nan
    f = lambda x: pnp.maximum(pnp.tanh(pnp.exp(x * 0.5) - 1.0), -0.5) + pnp.minimum(pnp.sqrt(pnp.abs(x)), 1.5)
    ref = lambda x: np.maximum(np.tanh(np.exp(x * 0.5) - 1.0), -0.5) + np.minimum(np.sqrt(np.abs(x)), 1.5)
    got = np.asarray(pj.jit(f)(x))
    np.testing.assert_allclose(got, ref(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    src = pj.jit(f).lower(x).executable.source
    if cl.name == "opencl" and cl.platform == "cpu":
        assert f"float{render_opencl.VEC}" in src and "vload" in src


@pytest.mark.parametrize("name", ["exp", "tanh", "sin", "cos", "logistic"])
def test_cpu_vector_exp_tanh_sin_cos_match_float64(cl, rng, name):
    """The vector path's own exp/tanh/sin/cos (render_opencl.VMATH) on random values and on
    the edges: overflow and denormal results of exp, tanh's switch between polynomial and
    exp, trig arguments past the exact reduction, signed zeros, infinities and NaN (also
    WGSL's pj_exp/pj_tanh/pj_sin/pj_cos through tests/test_lowering_webgpu.py).
    Within 1e-6 relative of float64 numpy; sin/cos also within 2e-7 absolute (an ulp of
    their scale, 1, which is all a float32 argument pins down near a root)."""
    from polyjit import lax
    from polyjit.lowering import render_opencl
    edges = np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 0.6249, 0.6251, -0.625,
                        8.9, 9.1, 88.72, 88.73, -87.3, -100.0, -103.9, -104.0, 1e4, 65535.0,
                        -65537.0, 7e4, 99999.0, 3.1415927, -1.5707964])
    if cl.name == "opencl":   # past 1e5 WGSL takes the adapter's builtin (NVIDIA: 1e-2 off)
        edges = np.concatenate([edges, np.float32([-1e6, 3e7])])
    n = render_opencl.VEC * render_opencl.WORK_GROUP * 2
    x = np.concatenate([edges, rng.uniform(-100, 100, n).astype(np.float32),
                        rng.uniform(-2, 2, 64).astype(np.float32)])
    fn = {"logistic": lax.logistic}.get(name) or getattr(pnp, name)
    ref = {"logistic": lambda v: 1.0 / (1.0 + np.exp(-v))}.get(name) or getattr(np, name)
    f = pj.jit(fn)
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float64)).astype(np.float32)    # overflow: inf in float32
    atol = 2e-7 if name in ("sin", "cos") else np.finfo(np.float32).tiny
    np.testing.assert_allclose(np.asarray(f(x)), want, rtol=1e-6, atol=atol)
    if cl.name == "opencl" and cl.platform == "cpu":
        assert f"pj_{'exp' if name == 'logistic' else name}{render_opencl.VEC}(" in f.lower(x).executable.source


def test_a_freed_result_buffer_is_reused_by_the_next_result(cl, rng):
    """A result the user drops goes back to the backend's pool (opencl; webgpu keeps none),
    and the next result of the same size takes that allocation: no fresh one, and on a CPU
    no first-touch page faults per call."""
    x = pj.device_put(_rand(rng, 4096))
    f, h = pj.jit(lambda x: x * 2.0 + 1.0), pj.jit(lambda x: x - 7.0)
    h(x).block_until_ready()                 # compiled before the buffer is freed
    y = f(x)
    y.block_until_ready()
    handle = y._buf.mem.data
    del y
    z = h(x)
    assert (z._buf.mem.data is handle) == (cl.reuse_pool_bytes > 0)
    np.testing.assert_allclose(np.asarray(z), np.asarray(x).astype(np.float64) - 7.0, rtol=1e-6)


def test_work_queued_on_a_freed_buffer_reads_its_old_values(cl, rng):
    """A buffer freed while queued work still reads it may be handed to the next result;
    the in-order queue runs the earlier work first, so it sees the old values."""
    x = pj.device_put(_rand(rng, 4096))
    f, g, h = (pj.jit(lambda x: x * 2.0 + 1.0), pj.jit(lambda y: pnp.sum(y * y)),
               pj.jit(lambda x: x - 7.0))
    y = f(x)
    total = g(y)                  # queued, reads y
    del y                         # freed before `total` is read back
    z = h(x)
    x64 = np.asarray(x).astype(np.float64)
    np.testing.assert_allclose(float(total), np.sum((x64 * 2 + 1) ** 2), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(z), x64 - 7.0, rtol=1e-6)


def test_few_outputs_over_many_elements_reduce_in_two_stages(cl, rng):
    """Batch-norm statistics of an (N, C, H, W) tensor: C outputs, N*H*W terms each. The
    first stage reduces H*W for every (N, C) (N*C work items), the second the N partial
    results, so no work item sums 50K terms serially; values equal float64 numpy's."""
    x = _rand(rng, 64, 16, 28, 28)
    f = pj.jit(lambda x: (pnp.mean(x, axis=(0, 2, 3)), pnp.max(x * x, axis=(0, 2, 3))))
    ks = _kernels(f, x)
    assert max(k.global_size for k in ks) >= 64 * 16 and len(ks) >= 2
    m, q = f(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(np.asarray(m), x64.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(q), (x64 * x64).max(axis=(0, 2, 3)), rtol=1e-6)


def test_weight_gradient_of_a_convolution_splits_its_long_contraction(cl, rng):
    """The weight gradient of a 3x3 conv over a (64, 2, 20, 20) batch has 2*8*9 = 144
    outputs, each a sum over 64*18*18 = 20,736 terms. It becomes feature-group partial
    sums (many work items, each a few thousand terms) and a reduction over the groups;
    values equal float64 numpy's."""
    from polyjit import lax
    x, g = _rand(rng, 64, 2, 20, 20), _rand(rng, 64, 8, 18, 18)
    w0 = _rand(rng, 8, 2, 3, 3)
    conv = lambda w: lax.conv_general_dilated(x, w, (1, 1), "VALID")
    f = pj.jit(lambda w: pj.vjp(conv, w)[1](g)[0])
    ks = _kernels(f, w0)
    assert len(ks) >= 2 and max(k.global_size for k in ks) >= 8 * 2 * 9 * 8
    ref = np.einsum("nohw,nchwij->ocij", g.astype(np.float64), np.lib.stride_tricks
                    .sliding_window_view(x.astype(np.float64), (3, 3), axis=(2, 3)))
    np.testing.assert_allclose(np.asarray(f(w0)), ref, rtol=1e-4, atol=1e-4)


def test_a_long_reduction_to_one_value_splits_its_axis(cl, rng):
    """A batch mean over 1,024 rows, each needing an argmax over 10 classes (accuracy):
    one work item would evaluate every row serially. The axis is reshaped (32, 32): the
    first stage has 32 work items of 32 rows, the second adds their results."""
    logits, labels = _rand(rng, 1024, 10), rng.integers(0, 10, 1024).astype(np.int32)
    f = pj.jit(lambda z, y: pnp.mean(pnp.argmax(z, -1) == y))
    ks = _kernels(f, logits, labels)
    assert len(ks) == 2 and max(k.global_size for k in ks) == 32
    assert float(f(logits, labels)) == np.mean(np.argmax(logits, -1) == labels)


def test_a_classifier_training_step_runs_no_host_steps():
    """A CNN's jitted training step (conv, relu, max-pool, linear, softmax cross-entropy with
    integer labels, Adam) lowers to device kernels alone: the label's log-probability is
    picked by a comparison, whose gradient is elementwise, not by a gather whose gradient is
    a scatter-add (a host step, which would sync every step and keep CUDA graphs off)."""
    from polyjit import nn, optim
    from polyjit.lowering.program import HostStep
    from polyjit.nn import train
    model = nn.Sequential(nn.Conv2d(4, 3), nn.relu, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(10))
    opt = optim.adam(1e-3)
    r = np.random.default_rng(0)
    x, y = r.random((8, 1, 10, 10), dtype=np.float32), r.integers(0, 10, 8).astype(np.int32)
    state = train.init_train_state(model, opt, pj.random.key(0), x[:2])
    closed = pj.make_jaxpr(train.classifier_step(model, opt))(state, x, y)
    if len(closed.jaxpr.eqns) == 1 and closed.jaxpr.eqns[0].params.get("jaxpr") is not None:
        closed = closed.jaxpr.eqns[0].params["jaxpr"]      # the jitted step's own program
    prog = lower_to_kernels(closed)
    assert prog.kernels and not [s for s in prog.steps if isinstance(s, HostStep)]
