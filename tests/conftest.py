"""Shared fixtures: every test that takes `backend` runs once per available backend."""
import os

import numpy as np
import pytest
from hypothesis import settings

# CI runs the same examples every time, so a red build is reproducible.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Tests that take no `backend` fixture run on numpy, also on machines with a GPU, where
# auto-selection would otherwise pick cuda or opencl (POLYJIT_BACKEND still overrides).
os.environ.setdefault("POLYJIT_BACKEND", "numpy")

import polyjit as pj  # noqa: E402
from polyjit import backends  # noqa: E402

# Backends CI can run on this machine; each is skipped with the reason when unavailable.
ALL_BACKENDS = ["numpy", "opencl", "cuda", "webgpu"]


def _available(name):
    try:
        backends.get_backend(name)
    except Exception as e:  # missing package or device: named in the skip reason
        return f"backend {name!r} unavailable: {e}"
    return None


def _backends_to_test():
    """numpy by default. The whole suite on compiled backends is opt-in
    (POLYJIT_TEST_BACKENDS=numpy,opencl): PoCL builds each new kernel in ~0.35 s and the
    suite has thousands, too slow for CI; tests/test_lowering.py always runs on opencl."""
    wanted = os.environ.get("POLYJIT_TEST_BACKENDS", "numpy")
    return [b for b in wanted.split(",") if b in ALL_BACKENDS]


@pytest.fixture(params=_backends_to_test())
def backend(request):
    why = _available(request.param)
    if why:
        pytest.skip(why)
    with backends.using(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """A `backend` test whose program needs float64 on a device without it (WebGPU, an
    OpenCL device without cl_khr_fp64) gets the backend's documented refusal,
    Float64Unsupported, asserted by tests/test_webgpu.py and tests/test_lowering.py: that
    is a missing hardware type, reported as a skip naming it, not a failure."""
    outcome = yield
    from polyjit.backends.compiled import Float64Unsupported
    name = getattr(pyfuncitem, "callspec", None) and pyfuncitem.callspec.params.get("backend")
    if name and name != "numpy" and outcome.excinfo and issubclass(outcome.excinfo[0], Float64Unsupported):
        outcome.force_exception(pytest.skip.Exception(
            f"backend {name!r} lacks a 64-bit dtype this test uses: {outcome.excinfo[1]}", _use_item_location=True))
