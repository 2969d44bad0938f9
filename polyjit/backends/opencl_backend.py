"""The OpenCL backend: jaxprs lowered to fused kernels, rendered to OpenCL C, run by pyopencl.

Launches are asynchronous on one in-order queue; data comes back to the host only in
`to_numpy` (and for host steps: control-flow predicates, HOST_FALLBACK_PRIMS). Programs
are cached in memory and on disk (keyed by source and device) under $POLYJIT_CACHE or
~/.cache/polyjit. Program driving, host loops and the memory plan are in compiled.py.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..lowering.render_opencl import WORK_GROUP, OpenCLRenderer
from .compiled import (Buffer, CompiledBackend, DeviceMem, Executable, Float64Unsupported,
                       KernelBuildError, disk_cached)

__all__ = ["OpenCLBackend", "OpenCLUnavailable", "KernelBuildError", "Float64Unsupported",
           "Executable", "CLBuffer", "DeviceMem"]

CLBuffer = Buffer      # the name earlier code used
# GEMM kernels carry their launch shape in the source: global and local sizes, 3-D
_LAUNCH_NOTE = re.compile(r"/\* pj_launch (\w+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) \*/")


def launch_notes(source):
    """{kernel name: (global size, local size)} for kernels with an explicit launch shape."""
    return {m.group(1): (tuple(map(int, m.group(2, 3, 4))), tuple(map(int, m.group(5, 6, 7))))
            for m in _LAUNCH_NOTE.finditer(source)}


class _ShapedKernel:
    """A kernel launched over its own N-D range (GEMM tiles), not the flat default."""
    __slots__ = ("knl", "global_size", "local_size")

    def __init__(self, knl, global_size, local_size):
        self.knl, self.global_size, self.local_size = knl, global_size, local_size


class OpenCLUnavailable(RuntimeError):
    pass


def _pick_device(cl, devs):
    """The first GPU, else the first device; POLYJIT_OPENCL_DEVICE=cpu, gpu or a substring of
    a device or platform name picks another (e.g. PoCL's CPU device on a machine with a GPU)."""
    want = os.environ.get("POLYJIT_OPENCL_DEVICE", "").strip().lower()
    if not want:
        gpus = [d for d in devs if d.type & cl.device_type.GPU]
        return (gpus or devs)[0]
    kinds = {"cpu": cl.device_type.CPU, "gpu": cl.device_type.GPU}
    if want in kinds:
        hits = [d for d in devs if d.type & kinds[want]]
    else:
        hits = [d for d in devs if want in d.name.lower() or want in d.platform.name.lower()]
    if not hits:
        names = ", ".join(f"{d.name} ({d.platform.name})" for d in devs)
        raise OpenCLUnavailable(f"POLYJIT_OPENCL_DEVICE={want!r} matches no OpenCL device; found: {names}")
    return hits[0]


class OpenCLBackend(CompiledBackend):
    name = "opencl"
    reuse_pool_bytes = 1 << 30       # in-order queue: freed buffers are reused (compiled.py)

    def __init__(self, device=None):
        try:
            import pyopencl as cl
        except ImportError as e:
            raise OpenCLUnavailable(f"pyopencl is not installed ({e}); install polyjit[opencl]") from e
        self.cl = cl
        try:
            platforms = cl.get_platforms()
        except cl.Error as e:
            raise OpenCLUnavailable(f"no OpenCL platform: {e}") from e
        devs = [d for p in platforms for d in p.get_devices()]
        if not devs:
            raise OpenCLUnavailable("no OpenCL device found (install an ICD, e.g. "
                                    "pocl-binary-distribution)")
        self.device = device or _pick_device(cl, devs)
        self.platform = "gpu" if self.device.type & cl.device_type.GPU else "cpu"
        # PoCL's tiled GEMMs run near BLAS speed on plain strided operands but several times
        # slower through fused loader expressions: on CPUs products read buffers
        self.plain_product_operands = self.platform == "cpu"
        self.ctx = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.ctx)
        self.fp64 = bool(self.device.double_fp_config)
        self.fp64_hint = (f"the OpenCL device {self.device.name} has no float64 support "
                          "(cl_khr_fp64); use float32, or the numpy backend")
        self.renderer = OpenCLRenderer(fp64=self.fp64)
        self.generic_renderer = OpenCLRenderer(fp64=self.fp64, generic_shapes=True)
        for r in (self.renderer, self.generic_renderer):     # GEMM tile choice
            r.device_type = self.platform
            r.compute_units = int(self.device.max_compute_units)
        self._notes = {}
        self.device_key = f"{self.device.platform.name}|{self.device.name}|{self.device.driver_version}"
        self._init_common()

    # ------------------------------------------------------------ memory
    def _raw_alloc(self, n):
        return self.cl.Buffer(self.ctx, self.cl.mem_flags.READ_WRITE, n)

    def put(self, x, aval):
        host = np.ascontiguousarray(np.asarray(x, dtype=aval.dtype))
        buf = self.alloc(aval)
        if host.size:     # as bytes: the buffer protocol knows no ml_dtypes formats
            self.cl.enqueue_copy(self.queue, buf.mem.data, host.reshape(-1).view(np.uint8),
                                 is_blocking=True)
        return buf

    def to_numpy(self, buf):
        out = np.empty(buf.aval.shape, buf.aval.dtype)
        if out.size:
            self.cl.enqueue_copy(self.queue, out.reshape(-1).view(np.uint8), buf.mem.data,
                                 is_blocking=True)
        return out

    def block(self, buf):
        self.queue.finish()
        return buf

    def copy_region(self, dst, dst_off, src, src_off, n):
        if n:
            self.cl.enqueue_copy(self.queue, dst.mem.data, src.mem.data, byte_count=n,
                                 src_offset=src_off, dst_offset=dst_off)

    # ------------------------------------------------------------ programs
    def build(self, source, kernel_names):
        """A built cl.Program for `source`, from memory, disk, or the compiler."""
        prg = self._programs.get(source)
        if prg is None:
            def load(binary):
                return self.cl.Program(self.ctx, [self.device], [binary]).build()

            def compile_():
                p = self._compile_source(source, kernel_names)
                return p, p.get_info(self.cl.program_info.BINARIES)[0]
            prg = self._programs[source] = disk_cached(self.device_key + "\0" + source, ".bin",
                                                       load, compile_)
            notes = launch_notes(source)
            if notes:
                self._notes[id(prg)] = (prg, notes)
        return prg

    def _compile_source(self, source, kernel_names):
        try:
            return self.cl.Program(self.ctx, source).build(options=["-cl-std=CL1.2"])
        except self.cl.Error as e:
            names = ", ".join(kernel_names)
            raise KernelBuildError(f"OpenCL build of kernel(s) {names} failed on "
                                   f"{self.device.name}:\n{e}\n--- source ---\n{source}") from None

    def get_kernel(self, program, name):
        knl = self.cl.Kernel(program, name)
        note = self._notes.get(id(program), (None, {}))[1].get(name)
        return knl if note is None else _ShapedKernel(knl, *note)

    def launch(self, knl, args, n):
        if isinstance(knl, _ShapedKernel):
            knl.knl.set_args(*args)
            self.cl.enqueue_nd_range_kernel(self.queue, knl.knl, knl.global_size, knl.local_size)
            return
        knl.set_args(*args)
        # a fixed work-group size: PoCL specialises each kernel per group size, so a
        # varying one would recompile for every new array size
        local = WORK_GROUP
        self.cl.enqueue_nd_range_kernel(self.queue, knl, (-(-n // local) * local,), (local,))
