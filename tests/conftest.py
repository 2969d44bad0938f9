"""Shared fixtures: every test that takes `backend` runs once per available backend."""
import os

import numpy as np
import pytest
from hypothesis import settings

# CI runs the same examples every time, so a red build is reproducible.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

import polyjit as pj
from polyjit import backends

# Backends CI can run on this machine; each is skipped with the reason when unavailable.
ALL_BACKENDS = ["numpy", "opencl", "cuda", "webgpu"]


def _available(name):
    try:
        backends.get_backend(name)
    except Exception as e:  # missing package or device: named in the skip reason
        return f"backend {name!r} unavailable: {e}"
    return None


def _backends_to_test():
    wanted = os.environ.get("POLYJIT_TEST_BACKENDS")
    return wanted.split(",") if wanted else [b for b in ALL_BACKENDS if b in backends._factories]


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
