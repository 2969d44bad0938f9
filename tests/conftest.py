"""Shared fixtures: every test that takes `backend` runs once per available backend."""
import os

import numpy as np
import pytest

import polyjit as pj
from polyjit import backends

# Backends CI can run on this machine; each is skipped with the reason when unavailable.
ALL_BACKENDS = ["numpy", "opencl", "cuda", "webgpu"]


def _available(name):
    if name not in backends._factories:
        return f"backend {name!r} is not implemented in this build"
    try:
        backends.get_backend(name)
    except Exception as e:  # missing package or device: named in the skip reason
        return f"backend {name!r} unavailable: {e}"
    return None


@pytest.fixture(params=os.environ.get("POLYJIT_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(","))
def backend(request):
    why = _available(request.param)
    if why:
        pytest.skip(why)
    with backends.using(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)
