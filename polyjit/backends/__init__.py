"""Backends: where arrays live and jaxprs run.

  numpy    the embedded reference; always available
  opencl   pyopencl (a GPU driver's ICD, or PoCL on CPU)
  cuda     cupy: NVRTC-compiled CUDA C
  webgpu   wgpu-py: WGSL compute shaders (Vulkan/Metal/D3D12; lavapipe on CPU)

Which backend runs new arrays, eager ops and jit:
  * `POLYJIT_BACKEND=name` picks one (an error names it if it cannot start);
  * unset or `POLYJIT_BACKEND=auto` picks the first usable of
        cuda > opencl on a GPU > webgpu on a GPU > numpy.
    On a machine with no GPU that is numpy: OpenCL (PoCL) and WebGPU (lavapipe) on a CPU
    compile every new kernel, which costs more than the numpy reference saves for the
    small, varied programs of interactive use and tests, so they run only when asked
    (`POLYJIT_BACKEND=opencl`, `jit(..., backend="webgpu")`, `backends.using(...)`).
    (DESIGN.md's order puts opencl-on-CPU before numpy; this deliberately does not.)
  * `set_default_backend(name)` / `with using(name):` change it at run time.
`devices()` lists every known backend, usable or not, with the reason; it never raises.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..tracer.core import abstract_eval_rules, get_aval

_factories = {}
_probes = {}
_instances = {}
_default = None

# auto-selection: (backend, platforms it is chosen on), best first; numpy is the fallback
AUTO_ORDER = (("cuda", ("gpu",)), ("opencl", ("gpu",)), ("webgpu", ("gpu",)))


def register_backend(name, factory, probe=None):
    """`factory()` builds the backend (raising, with the reason, when it cannot);
    `probe()` -> (platform, device name) says the same without building it (cheaper,
    used by auto-selection and devices(); defaults to building it)."""
    _factories[name] = factory
    if probe is not None:
        _probes[name] = probe
    else:
        _probes.pop(name, None)


def _numpy_factory():
    from .numpy_backend import NumpyBackend
    return NumpyBackend()


register_backend("numpy", _numpy_factory, lambda: ("cpu", "host (numpy reference)"))


def _opencl_factory():
    from .opencl_backend import OpenCLBackend
    return OpenCLBackend()


def _opencl_probe():
    """(platform, device) of the OpenCL device the backend would pick, GPUs first."""
    try:
        import pyopencl as cl
    except ImportError as e:
        raise RuntimeError(f"pyopencl is not installed ({e}); install polyjit[opencl]") from None
    try:
        devs = [d for p in cl.get_platforms() for d in p.get_devices()]
    except Exception as e:
        raise RuntimeError(f"no OpenCL platform: {e}") from None
    if not devs:
        raise RuntimeError("no OpenCL device found (install an ICD, e.g. pocl-binary-distribution)")
    gpus = [d for d in devs if d.type & cl.device_type.GPU]
    d = (gpus or devs)[0]
    return ("gpu" if gpus else "cpu"), d.name.strip()


register_backend("opencl", _opencl_factory, _opencl_probe)


def _cuda_factory():
    # raises CUDAUnavailable naming what is missing (cupy, a driver, a GPU)
    from .cuda_backend import CUDABackend
    return CUDABackend()


def _cuda_probe():
    from .cuda_backend import _import_cupy
    cp = _import_cupy()          # raises CUDAUnavailable naming what is missing
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return "gpu", name.decode() if isinstance(name, bytes) else str(name)


register_backend("cuda", _cuda_factory, _cuda_probe)


def _webgpu_factory():
    # raises WebGPUUnavailable naming what is missing (wgpu, an adapter)
    from .webgpu_backend import WebGPUBackend
    return WebGPUBackend()


def _webgpu_probe():
    from .webgpu_backend import describe_adapter
    return describe_adapter()


def _webgpu_quick_platform():
    """For auto-selection on Linux: "cpu" when the machine has no GPU device node
    (/dev/dri/renderD*, /dev/nvidia*), so only a CPU adapter (lavapipe) can appear,
    without starting wgpu (~1.5 s); None when that cannot be told this way."""
    import glob
    import sys
    if not sys.platform.startswith("linux") or os.environ.get("VK_ICD_FILENAMES") \
            or os.environ.get("VK_DRIVER_FILES"):
        return None
    if glob.glob("/dev/dri/renderD*") or glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/dxg"):
        return None
    return "cpu"


register_backend("webgpu", _webgpu_factory, _webgpu_probe)


@dataclass(frozen=True)
class DeviceInfo:
    """One entry of `devices()`. `usable` is False with `reason` saying why (missing
    package, no device); `platform` is "gpu" or "cpu" when known."""
    backend: str
    usable: bool
    platform: str = ""
    device: str = ""
    reason: str = ""
    default: bool = False

    def __str__(self):
        mark = "*" if self.default else " "
        if self.usable:
            return f"{mark} {self.backend:7s} {self.platform:3s}  {self.device}"
        return f"{mark} {self.backend:7s} --   unavailable: {self.reason}"


def _probe(name):
    """(platform, device) for backend `name`, raising with the reason when unusable."""
    be = _instances.get(name)
    if be is not None:
        return getattr(be, "platform", "?"), _device_name(be)
    probe = _probes.get(name)
    if probe is not None:
        return probe()
    be = get_backend(name)
    return getattr(be, "platform", "?"), _device_name(be)


def _device_name(be):
    for attr in ("device_name", "device"):
        v = getattr(be, attr, None)
        if isinstance(v, str) and v:
            return v
        if v is not None and hasattr(v, "name"):
            return str(v.name).strip()
    return type(be).__name__


def _reason(e):
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{type(e).__name__}: {msg}"


def devices():
    """Every known backend: whether it is usable here, its platform ("gpu"/"cpu") and
    device name, or the reason it is not (missing package, no device). Never raises;
    the entry of the current default backend has `default=True`."""
    try:
        cur = default_backend()
    except Exception:       # a bad POLYJIT_BACKEND: still list what there is
        cur = None
    out = []
    for name in _factories:
        try:
            platform, dev = _probe(name)
        except Exception as e:
            out.append(DeviceInfo(name, False, reason=_reason(e), default=name == cur))
        else:
            out.append(DeviceInfo(name, True, platform, dev, default=name == cur))
    return out


def auto_backend() -> str:
    """The backend auto-selection picks: cuda > opencl GPU > webgpu GPU > numpy."""
    for name, platforms in AUTO_ORDER:
        if name not in _factories:
            continue
        if name == "webgpu" and _probes.get(name) is _webgpu_probe and name not in _instances \
                and _webgpu_quick_platform() not in (None, *platforms):
            continue         # only lavapipe installed: no GPU adapter, skip starting wgpu
        try:
            platform, _ = _probe(name)
        except Exception:
            continue
        if platform in platforms:
            return name
    return "numpy"


def get_backend(name=None):
    name = name or default_backend()
    be = _instances.get(name)
    if be is None:
        if name not in _factories:
            raise ValueError(f"unknown backend {name!r}; known: {sorted(_factories)}")
        be = _instances[name] = _factories[name]()
    return be


def default_backend() -> str:
    """The backend new arrays, eager ops and jit use: POLYJIT_BACKEND, else auto-selected."""
    global _default
    if _default is None:
        want = os.environ.get("POLYJIT_BACKEND", "").strip().lower() or "auto"
        if want == "auto":
            want = auto_backend()
        elif want not in _factories:
            raise ValueError(f"POLYJIT_BACKEND={want!r} is not a known backend: "
                             f"{sorted(_factories)} (or 'auto')")
        _default = want
    return _default


def _backend_of(values):
    for v in values:
        be = getattr(v, "_backend", None)
        if be is not None:
            return be
    return get_backend()


def to_buffer(backend, x, aval):
    """The buffer of `x` on `backend` (uploading host values, moving other backends' arrays)."""
    be = getattr(x, "_backend", None)
    if be is backend:
        return x._buf
    if be is not None:
        return backend.put(be.to_numpy(x._buf), aval)
    return backend.put(x, aval)


def eager_apply(prim, values, params):
    """Run one primitive now on the arguments' backend: check shapes, then execute."""
    from ..tracer.array import Array
    avals = [get_aval(v) for v in values]
    out_avals = abstract_eval_rules[prim](*avals, **params)
    be = _backend_of(values)
    bufs = [to_buffer(be, v, a) for v, a in zip(values, avals)]
    return [Array(a, b, be) for a, b in zip(out_avals, be.apply(prim, bufs, params))]


def device_put(x, backend=None):
    """Copy a host value or an Array onto a backend (the default one unless named)."""
    from ..tracer.array import Array
    be = get_backend(backend)
    aval = get_aval(x)
    if not hasattr(x, "_backend"):
        x = np.asarray(x, dtype=aval.dtype)
    return Array(aval.strip_weak_type() if backend else aval, to_buffer(be, x, aval), be)


def set_default_backend(name):
    """Make `name` the backend for new arrays, eager ops and jit (like POLYJIT_BACKEND)."""
    global _default
    if name not in _factories:
        raise ValueError(f"unknown backend {name!r}; known: {sorted(_factories)}")
    get_backend(name)
    _default = name


class using:
    """`with polyjit.backends.using("opencl"): ...` runs the block on that backend."""
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.prev = default_backend()
        set_default_backend(self.name)
        return get_backend(self.name)

    def __exit__(self, *exc):
        set_default_backend(self.prev)
