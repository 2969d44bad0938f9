"""Backend selection (POLYJIT_BACKEND, auto-selection cuda > opencl GPU > webgpu GPU >
numpy) and pj.devices(), with availability mocked by replacing the backends' probes and
factories: these tests need no GPU and build no device."""
import re

import pytest

import polyjit as pj
from polyjit import backends


def _fake(platform=None, error=None, device="fake device"):
    """A probe/factory pair: usable on `platform`, or raising `error`."""
    def probe():
        if error is not None:
            raise error
        return platform, device

    class Fake:
        name = "fake"

    def factory():
        if error is not None:
            raise error
        be = Fake()
        be.platform, be.device_name = platform, device
        return be
    return probe, factory


@pytest.fixture
def world(monkeypatch):
    """Set which backends 'exist': world(cuda=("gpu",), opencl=ImportError("no pyopencl"), ...)."""
    monkeypatch.setattr(backends, "_default", None)
    monkeypatch.setattr(backends, "_factories", dict(backends._factories))
    monkeypatch.setattr(backends, "_probes", dict(backends._probes))
    monkeypatch.setattr(backends, "_instances", {k: v for k, v in backends._instances.items()
                                                 if k == "numpy"})
    monkeypatch.delenv("POLYJIT_BACKEND", raising=False)

    def set_world(**kinds):
        for name, kind in kinds.items():
            if isinstance(kind, Exception):
                probe, factory = _fake(error=kind)
            else:
                probe, factory = _fake(platform=kind, device=f"{name} {kind} device")
            backends.register_backend(name, factory, probe)
        backends._default = None
    return set_world


NONE = dict(cuda=RuntimeError("cupy is not installed"), opencl=ImportError("no pyopencl"),
            webgpu=RuntimeError("no WebGPU adapter"))


def test_auto_prefers_cuda(world):
    world(cuda="gpu", opencl="gpu", webgpu="gpu")
    assert backends.default_backend() == "cuda"


def test_auto_opencl_gpu_before_webgpu_gpu(world):
    world(**{**NONE, "opencl": "gpu", "webgpu": "gpu"})
    assert backends.default_backend() == "opencl"


def test_auto_webgpu_gpu_when_opencl_is_cpu_only(world):
    world(**{**NONE, "opencl": "cpu", "webgpu": "gpu"})
    assert backends.default_backend() == "webgpu"


def test_auto_numpy_on_a_cpu_only_machine(world):
    # PoCL and lavapipe are usable but CPU-only: numpy stays the CPU default
    world(**{**NONE, "opencl": "cpu", "webgpu": "cpu"})
    assert backends.default_backend() == "numpy"


def test_auto_numpy_when_nothing_else_is_installed(world):
    world(**NONE)
    assert backends.auto_backend() == "numpy"
    assert backends.default_backend() == "numpy"


def test_auto_skips_a_probe_that_crashes(world):
    world(**{**NONE, "cuda": OSError("driver exploded"), "webgpu": "gpu"})
    assert backends.default_backend() == "webgpu"


@pytest.mark.parametrize("value", ["auto", "AUTO", ""])
def test_env_auto_or_empty_selects_automatically(world, monkeypatch, value):
    world(**{**NONE, "opencl": "gpu"})
    monkeypatch.setenv("POLYJIT_BACKEND", value)
    assert backends.default_backend() == "opencl"


def test_env_override_beats_auto(world, monkeypatch):
    world(cuda="gpu", opencl="cpu", webgpu="cpu")
    monkeypatch.setenv("POLYJIT_BACKEND", "webgpu")
    assert backends.default_backend() == "webgpu"      # CPU webgpu, because asked


def test_env_override_numpy_does_not_probe(world, monkeypatch):
    world(cuda=AssertionError("probed"), opencl=AssertionError("probed"),
          webgpu=AssertionError("probed"))
    monkeypatch.setenv("POLYJIT_BACKEND", "numpy")
    assert backends.default_backend() == "numpy"


def test_env_unknown_backend_is_an_error(world, monkeypatch):
    world(**NONE)
    monkeypatch.setenv("POLYJIT_BACKEND", "tpu")
    with pytest.raises(ValueError, match="tpu"):
        backends.default_backend()


def test_env_named_backend_that_cannot_start_says_why(world, monkeypatch):
    world(**NONE)
    monkeypatch.setenv("POLYJIT_BACKEND", "cuda")
    assert backends.default_backend() == "cuda"
    with pytest.raises(RuntimeError, match="cupy is not installed"):
        backends.get_backend()


def test_devices_lists_every_backend_with_reasons(world):
    world(cuda=RuntimeError("cupy is not installed"), opencl="cpu",
          webgpu=RuntimeError("no WebGPU adapter"))
    ds = pj.devices()
    by = {d.backend: d for d in ds}
    assert set(by) >= {"numpy", "opencl", "cuda", "webgpu"}
    assert by["numpy"].usable and by["numpy"].platform == "cpu"
    assert by["opencl"].usable and by["opencl"].platform == "cpu"
    assert by["opencl"].device == "opencl cpu device"
    assert not by["cuda"].usable and "cupy is not installed" in by["cuda"].reason
    assert not by["webgpu"].usable and "no WebGPU adapter" in by["webgpu"].reason
    assert [d.backend for d in ds if d.default] == ["numpy"]
    assert "unavailable" in str(by["cuda"]) and "opencl cpu device" in str(by["opencl"])


def test_devices_never_raises(world, monkeypatch):
    world(cuda=ImportError("x"), opencl=MemoryError("y"), webgpu=Exception(""))
    monkeypatch.setenv("POLYJIT_BACKEND", "not-a-backend")
    ds = pj.devices()
    assert {d.backend for d in ds if not d.usable} == {"cuda", "opencl", "webgpu"}
    assert all(d.reason for d in ds if not d.usable)


def test_devices_uses_a_built_backend_without_probing(world):
    world(**NONE)
    probe, factory = _fake(platform="gpu", device="real thing")
    backends.register_backend("opencl", factory, lambda: (_ for _ in ()).throw(AssertionError))
    backends.get_backend("opencl")
    d = {d.backend: d for d in pj.devices()}["opencl"]
    assert d.usable and d.device == "real thing" and d.platform == "gpu"


def test_devices_is_exported_and_knows_the_real_backends():
    ds = pj.devices()        # the real machine: whatever is there, it must not raise
    assert {"numpy", "opencl", "cuda", "webgpu"} <= {d.backend for d in ds}
    assert next(d for d in ds if d.backend == "numpy").usable


def test_auto_skips_starting_wgpu_on_a_machine_without_gpu_nodes(world, monkeypatch):
    world(**{**NONE})

    def must_not_run():
        raise AssertionError("wgpu was started")
    monkeypatch.setattr(backends, "_webgpu_probe", must_not_run)
    backends._probes["webgpu"] = must_not_run
    monkeypatch.setattr(backends, "_webgpu_quick_platform", lambda: "cpu")
    assert backends.auto_backend() == "numpy"
    d = {d.backend: d for d in pj.devices()}["webgpu"]      # devices() still asks for real
    assert not d.usable and "wgpu was started" in d.reason


def test_opencl_device_choice_by_environment(monkeypatch):
    """POLYJIT_OPENCL_DEVICE picks the OpenCL device by type or name; a name that matches
    nothing is an error listing the devices there are."""
    cl = pytest.importorskip("pyopencl", reason="pyopencl runs the opencl backend")
    from polyjit.backends.opencl_backend import OpenCLBackend, OpenCLUnavailable
    try:
        devs = [d for p in cl.get_platforms() for d in p.get_devices()]
    except cl.Error as e:
        pytest.skip(f"no OpenCL platform: {e}")
    if not any(d.type & cl.device_type.CPU for d in devs):
        pytest.skip("no OpenCL CPU device (PoCL: pip install pocl-binary-distribution)")
    monkeypatch.setenv("POLYJIT_OPENCL_DEVICE", "cpu")
    assert OpenCLBackend().device.type & cl.device_type.CPU
    monkeypatch.setenv("POLYJIT_OPENCL_DEVICE", "no-such-device")
    with pytest.raises(OpenCLUnavailable, match="no-such-device.*found: .*" + re.escape(devs[0].name)):
        OpenCLBackend()
