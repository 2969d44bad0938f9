"""tests/test_lowering.py again, on the webgpu backend: the same fusion counts, memory
bounds, error reporting and numbers, through the WGSL renderer and wgpu-py (lavapipe on a
CPU-only machine). Skipped (with the reason) where wgpu or an adapter is missing.
WebGPU-specific behaviour (dtypes, limits, PRNG bits) is in tests/test_webgpu.py."""
import pytest

from polyjit import backends
from test_lowering import *  # noqa: F401,F403  (the tests themselves)
import test_lowering as _lowering_module


@pytest.fixture
def cl():
    """The fixture test_lowering's tests take, bound to webgpu instead of opencl."""
    try:
        be = backends.get_backend("webgpu")
    except Exception as e:   # no wgpu or no adapter: say which
        pytest.skip(f"no WebGPU adapter ({e})")
    with backends.using("webgpu"):
        yield be


def test_build_error_names_kernel_and_log(cl):
    from polyjit.backends.webgpu_backend import KernelBuildError
    src = ("// pj-kernel: my_broken_kernel\n"
           "@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n"
           "@compute @workgroup_size(1) fn my_broken_kernel() { a[0] = undefined_thing; }\n")
    with pytest.raises(KernelBuildError) as e:
        cl.build(src, ["my_broken_kernel"])
    msg = str(e.value)
    assert "my_broken_kernel" in msg and "undefined_thing" in msg


def test_float64_runs_on_fp64_device(cl):
    pytest.skip("WebGPU has no float64 (tests/test_webgpu.py checks the error)")


assert hasattr(_lowering_module, "test_ten_elementwise_ops_are_one_kernel")
