"""tests/test_lowering.py again, on the cuda backend: the same fusion counts, memory bounds,
error reporting and numbers, through the CUDA renderer and NVRTC. Skipped (with the
reason) where no CUDA device is present."""
import pytest

from polyjit import backends
from test_lowering import *  # noqa: F401,F403  (the tests themselves)
import test_lowering as _lowering_module


@pytest.fixture
def cl(monkeypatch):
    """The fixture test_lowering's tests take, bound to cuda instead of opencl. The lowering
    spec is about plain kernel launches: CUDA graph replay, which keeps a static copy of a
    program's inputs and working buffers between calls (as torch.cuda.graphs does), is
    off here and specified in tests/test_cuda_graphs.py."""
    monkeypatch.setenv("POLYJIT_CUDA_GRAPHS", "0")
    try:
        be = backends.get_backend("cuda")
    except Exception as e:   # no cupy or no GPU: say which
        pytest.skip(f"no CUDA device ({e})")
    with backends.using("cuda"):
        yield be


def test_build_error_names_kernel_and_log(cl):
    from polyjit.backends.cuda_backend import KernelBuildError
    src = 'extern "C" __global__ void my_broken_kernel(float* a) { a[0] = undefined_thing; }'
    with pytest.raises(KernelBuildError) as e:
        cl.build(src, ["my_broken_kernel"])
    msg = str(e.value)
    assert "my_broken_kernel" in msg and "undefined_thing" in msg


assert hasattr(_lowering_module, "test_ten_elementwise_ops_are_one_kernel")
