"""Differential testing: random programs over the primitive set, drawn by hypothesis, jitted
on every available backend (numpy, opencl, cuda, webgpu; each skipped with the reason when
absent) and compared with an independent float64 numpy interpretation of the same program.

A program is a list of steps; each step applies one op to earlier values (inputs first).
Float values are (A, B), (A, 1) or (1, B) and broadcast; integer programs compare exactly.

Tolerance for float32: |got - want| <= tol * max(1, max|want|) over each output, with tol
2e-5 for elementwise-only programs (each float32 op rounds at 6e-8, and up to 8 chained
ops with derivatives of order 1 compound that; subtraction can cancel, so the error is
measured against the output's scale, not elementwise) and 1e-4 once a reduction, matmul or
cumulative sum is in the program (the standards' bound for reductions).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polyjit as pj
import polyjit.numpy as pnp
from polyjit import backends

BACKENDS = ["numpy", "opencl", "cuda", "webgpu"]


@pytest.fixture(params=BACKENDS)
def any_backend(request):
    try:
        backends.get_backend(request.param)
    except Exception as e:  # missing package or device, named
        pytest.skip(f"backend {request.param!r} unavailable: {e}")
    return request.param


def _sigmoid(m):
    return lambda x: 1 / (1 + m.exp(-x))


# name -> (arity, polyjit/numpy op taking the module `m` (pnp or np), reducing?)
FLOAT_OPS = {
    "neg": (1, lambda m: lambda x: -x, False),
    "tanh": (1, lambda m: m.tanh, False),
    "sin": (1, lambda m: m.sin, False),
    "cos": (1, lambda m: m.cos, False),
    "abs": (1, lambda m: m.abs, False),
    "sqrt1": (1, lambda m: lambda x: m.sqrt(m.abs(x) + 1), False),
    "log1": (1, lambda m: lambda x: m.log(m.abs(x) + 1), False),
    "exp_tanh": (1, lambda m: lambda x: m.exp(m.tanh(x)), False),
    "square": (1, lambda m: lambda x: x * x * 0.5, False),
    "sigmoid": (1, _sigmoid, False),
    "floor": (1, lambda m: lambda x: m.floor(x * 4) * 0.25, False),
    "add": (2, lambda m: lambda x, y: x + y, False),
    "sub": (2, lambda m: lambda x, y: x - y, False),
    "mul": (2, lambda m: lambda x, y: x * y, False),
    "max": (2, lambda m: m.maximum, False),
    "min": (2, lambda m: m.minimum, False),
    "div": (2, lambda m: lambda x, y: x / (m.abs(y) + 1), False),
    "select": (2, lambda m: lambda x, y: m.where(x > y, x, y * 0.5), False),
    "sum_last": (1, lambda m: lambda x: m.sum(x, axis=-1, keepdims=True) * 0.25, True),
    "max_first": (1, lambda m: lambda x: m.max(x, axis=0, keepdims=True), True),
    "mean_all": (1, lambda m: lambda x: m.mean(x) + 0 * x, True),
    "softmax": (1, lambda m: lambda x: m.exp(x - m.max(x, axis=-1, keepdims=True))
                / m.sum(m.exp(x - m.max(x, axis=-1, keepdims=True)), axis=-1, keepdims=True), True),
    "cumsum": (1, lambda m: lambda x: m.cumsum(x, axis=-1) * 0.25, True),
    "matmul": (1, None, True),          # x @ W with the program's (B, B) weight input
}

INT_OPS = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * (y % 7),
    "and": lambda x, y: x & y,
    "xor": lambda x, y: x ^ y,
    "or": lambda x, y: x | y,
    "shl": lambda x, y: x << (y & 3),
    "shr": lambda x, y: x >> (y & 3),
    "fdiv": lambda x, y: x // ((y & 7) + 1),
    "mod": lambda x, y: x % ((y & 7) + 1),
    "max": lambda x, y: x * (x > y) + y * (x <= y),
    "min_where": None,                  # where(x < y, x, y): spelled per module below
}


@st.composite
def float_programs(draw):
    a, b = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    n = draw(st.integers(1, 8))
    steps = []
    for i in range(n):
        name = draw(st.sampled_from(sorted(FLOAT_OPS)))
        arity = FLOAT_OPS[name][0]
        args = [draw(st.integers(0, i + 2)) for _ in range(arity)]   # inputs are values 0..2
        steps.append((name, args))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return a, b, steps, seed


def _inputs(a, b, seed):
    r = np.random.default_rng(seed)
    f = lambda *s: (r.standard_normal(s) + 0.1).astype(np.float32)  # noqa: E731  never zeros
    return [f(a, b), f(a, 1), f(1, b)], f(b, b) / np.float32(np.sqrt(b))


def _interpret(m, steps, xs, w):
    vals = list(xs)
    for name, args in steps:
        if name == "matmul":
            x = vals[args[0]]
            out = (x if x.shape[-1] == w.shape[0] else x + 0 * w[:1]) @ w
        else:
            out = FLOAT_OPS[name][1](m)(*[vals[j] for j in args])
        vals.append(out)
    return vals[-2:] if len(steps) > 1 else vals[-1:]


def _polyjit_program(steps):
    return pj.jit(lambda xs, w: _interpret(pnp, steps, xs, w))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(float_programs())
def test_random_float_programs_agree_with_float64(any_backend, prog):
    a, b, steps, seed = prog
    xs, w = _inputs(a, b, seed)
    with np.errstate(all="ignore"):
        want = _interpret(np, steps, [x.astype(np.float64) for x in xs], w.astype(np.float64))
    with backends.using(any_backend):
        got = [np.asarray(g) for g in _polyjit_program(steps)(xs, w)]
    tol = 1e-4 if any(FLOAT_OPS[s][2] for s, _ in steps) else 2e-5
    for g, wv in zip(got, want):
        assert g.shape == wv.shape and g.dtype == np.float32, (g.shape, wv.shape, g.dtype)
        scale = max(1.0, float(np.max(np.abs(wv))))
        err = float(np.max(np.abs(g - wv))) if g.size else 0.0
        assert err <= tol * scale, f"{steps}: error {err:.3g} > {tol} x scale {scale:.3g}"


@st.composite
def int_programs(draw):
    n = draw(st.integers(1, 8))
    steps = [(draw(st.sampled_from(sorted(INT_OPS))), draw(st.integers(0, i + 1)),
              draw(st.integers(0, i + 1))) for i in range(n)]
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return shape, steps, draw(st.integers(0, 2 ** 31 - 1))


def _interpret_int(m, steps, x, y):
    vals = [x, y]
    for name, i, j in steps:
        u, v = vals[i], vals[j]
        out = m.where(u < v, u, v) if name == "min_where" else INT_OPS[name](u, v)
        vals.append(out % 100003 - 50000)      # keeps values small: no overflow anywhere
    return vals[-1]


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(int_programs())
def test_random_int32_programs_are_exact(any_backend, prog):
    shape, steps, seed = prog
    r = np.random.default_rng(seed)
    x, y = (r.integers(-1000, 1000, shape).astype(np.int32) for _ in range(2))
    want = _interpret_int(np, steps, x.astype(np.int64), y.astype(np.int64))
    with backends.using(any_backend):
        got = np.asarray(pj.jit(lambda x, y: _interpret_int(pnp, steps, x, y))(x, y))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want, err_msg=str(steps))
