"""Backends: where arrays live and jaxprs run. The numpy backend is the embedded default."""
from __future__ import annotations

import os

import numpy as np

from ..tracer.core import abstract_eval_rules, get_aval

_factories = {}
_instances = {}
_default = None


def register_backend(name, factory):
    _factories[name] = factory


def _numpy_factory():
    from .numpy_backend import NumpyBackend
    return NumpyBackend()


register_backend("numpy", _numpy_factory)


def _opencl_factory():
    from .opencl_backend import OpenCLBackend
    return OpenCLBackend()


register_backend("opencl", _opencl_factory)


def _cuda_factory():
    # raises CUDAUnavailable naming what is missing (cupy, a driver, a GPU)
    from .cuda_backend import CUDABackend
    return CUDABackend()


register_backend("cuda", _cuda_factory)


def get_backend(name=None):
    name = name or default_backend()
    be = _instances.get(name)
    if be is None:
        if name not in _factories:
            raise ValueError(f"unknown backend {name!r}; known: {sorted(_factories)}")
        be = _instances[name] = _factories[name]()
    return be


def default_backend() -> str:
    global _default
    if _default is None:
        _default = os.environ.get("POLYJIT_BACKEND", "numpy")
        if _default not in _factories:
            raise ValueError(f"POLYJIT_BACKEND={_default!r} is not a known backend: {sorted(_factories)}")
    return _default


def devices():
    """The usable backends, as (name, platform) pairs."""
    return [(n, get_backend(n).platform) for n in _factories]


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
