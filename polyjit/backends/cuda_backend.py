"""The CUDA backend: the shared kernel IR rendered to CUDA C (render_cuda.py), compiled
by NVRTC through cupy into cubins cached on disk (keyed by device, NVRTC version, options
and source, under $POLYJIT_CACHE or ~/.cache/polyjit), launched on one non-blocking
stream per device. Buffers are flat cupy uint8 arrays, so the memory plan can hand one
block to values of different dtypes; program driving is shared (compiled.py).
"""
from __future__ import annotations

import re

import numpy as np

from ..lowering.render_cuda import NVRTC_OPTIONS, CUDARenderer
from .compiled import CompiledBackend, KernelBuildError, disk_cached

BLOCK = 256
# GEMM kernels carry their launch shape in the source: grid x, y, z, block size and
# dynamic shared memory bytes
_LAUNCH_NOTE = re.compile(r"/\* pj_launch (\w+) (\d+) (\d+) (\d+) (\d+) (\d+) \*/")
_MAX_DYNAMIC_SHARED = 8     # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES


class _ShapedKernel:
    """A kernel launched on its own grid (GEMM tiles), not the flat default."""
    __slots__ = ("fn", "grid", "block", "smem")

    def __init__(self, fn, grid, block, smem):
        self.fn, self.grid, self.block, self.smem = fn, grid, block, smem


class CUDAUnavailable(RuntimeError):
    pass


def _import_cupy():
    try:
        import cupy
    except ImportError as e:
        raise CUDAUnavailable(f"cupy is not installed ({e}); install cupy-cuda12x or "
                              "cupy-cuda13x to use the cuda backend") from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:      # no driver, or a driver older than cupy's runtime
        raise CUDAUnavailable(f"no CUDA device: {e}") from e
    if n == 0:
        raise CUDAUnavailable("no CUDA device: the driver reports 0 GPUs")
    return cupy


def _nvrtc_cubin(source, options):
    """A cubin from NVRTC for `options` (which name the arch); build errors as cupy's
    CompileException, with NVRTC's log."""
    from cupy.cuda import compiler
    from cupy_backends.cuda.libs import nvrtc
    prog = nvrtc.createProgram(source, "polyjit.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError:
            raise compiler.CompileException(nvrtc.getProgramLog(prog), source, "polyjit.cu",
                                            options, "nvrtc") from None
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)


class CUDABackend(CompiledBackend):
    name = "cuda"
    platform = "gpu"

    def __init__(self, device_id=0):
        cp = self.cp = _import_cupy()
        self.device = cp.cuda.Device(device_id)
        with self.device:
            # one stream per device, so polyjit's work never waits on the legacy
            # default stream other libraries use
            self.stream = cp.cuda.Stream(non_blocking=True)
        props = cp.cuda.runtime.getDeviceProperties(device_id)
        self.cc = f"{props['major']}{props['minor']}"
        # sm_90a: Hopper's arch-specific features (warpgroup MMA), cubins for sm_90 only
        self.arch = f"sm_{self.cc}" + ("a" if self.cc == "90" else "")
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        self.device_name = name
        nvrtc = cp.cuda.nvrtc.getVersion()
        self.options = NVRTC_OPTIONS + (f"-arch={self.arch}",)
        self.device_key = f"cuda|{name}|{self.arch}|nvrtc{nvrtc}|{' '.join(self.options)}"
        self.renderer = CUDARenderer()
        self.generic_renderer = CUDARenderer(generic_shapes=True)
        for r in (self.renderer, self.generic_renderer):     # GEMM tile choice
            r.sms = int(props["multiProcessorCount"])
            r.tensor_cores = int(self.cc) >= 80      # mma.sync bf16/tf32, cp.async, ldmatrix
            r.wgmma = self.arch == "sm_90a"
        self._notes = {}
        self._init_common()

    # ------------------------------------------------------------ memory
    def _raw_alloc(self, n):
        with self.device, self.stream:     # pool memory ordered on our stream
            return self.cp.empty(max(n, 1), self.cp.uint8)

    def put(self, x, aval):
        host = np.ascontiguousarray(np.asarray(x, dtype=aval.dtype))
        buf = self.alloc(aval)
        if host.size:
            raw = host.reshape(-1).view(np.uint8)
            buf.mem.data[:raw.size].set(raw, stream=self.stream)
        return buf

    def to_numpy(self, buf):
        a = buf.aval
        n = a.size * np.dtype(a.dtype).itemsize
        if not n:
            return np.empty(a.shape, a.dtype)
        raw = buf.mem.data[:n].get(stream=self.stream)    # waits for the stream
        return raw.view(a.dtype).reshape(a.shape)

    def block(self, buf):
        self.stream.synchronize()
        return buf

    def copy_region(self, dst, dst_off, src, src_off, n):
        if n:
            with self.device, self.stream:
                dst.mem.data[dst_off:dst_off + n] = src.mem.data[src_off:src_off + n]

    # ------------------------------------------------------------ programs
    def compile(self, closed, donated=()):
        """A jitted program, replayed as one CUDA graph where it can be (cuda_graphs.py).
        A graph runs on buffers of its own (inputs copied in, outputs copied out), so a
        program that reuses donated buffers (updates in place) runs as plain launches."""
        from .cuda_graphs import GraphExecutable
        g = GraphExecutable(super().compile(closed, donated))
        if g.exe.donated:
            g.capturable = False
        return g

    def build(self, source, kernel_names):
        """A loaded cupy Module for `source`, from memory, disk, or NVRTC."""
        mod = self._programs.get(source)
        if mod is None:
            mod = self._programs[source] = disk_cached(
                self.device_key + "\0" + source, ".cubin", self._load_cubin,
                lambda: self._compile_source(source, kernel_names))
            notes = {m.group(1): (tuple(map(int, m.group(2, 3, 4))), int(m.group(5)), int(m.group(6)))
                     for m in _LAUNCH_NOTE.finditer(source)}
            if notes:
                self._notes[id(mod)] = (mod, notes)
        return mod

    def _load_cubin(self, binary):
        from cupy.cuda import function
        with self.device:
            mod = function.Module()
            mod.load(binary)      # loads now, so a stale binary fails here
        return mod

    def _compile_source(self, source, kernel_names):
        from cupy.cuda import compiler
        try:
            with self.device:
                if self.arch.endswith("a"):      # cupy's helper takes numeric archs only
                    cubin = _nvrtc_cubin(source, NVRTC_OPTIONS + (f"-arch={self.arch}",))
                else:   # a cubin for this device's arch (PTX where NVRTC predates the arch)
                    cubin, _ = compiler.compile_using_nvrtc(source, options=NVRTC_OPTIONS,
                                                            arch=self.cc, filename="polyjit.cu")
        except compiler.CompileException as e:
            names = ", ".join(kernel_names)
            raise KernelBuildError(f"NVRTC build of kernel(s) {names} failed for {self.arch} "
                                   f"({self.device_name}):\n{e}\n--- source ---\n{source}") from None
        return self._load_cubin(cubin), cubin

    def get_kernel(self, module, name):
        fn = module.get_function(name)
        note = self._notes.get(id(module), (None, {}))[1].get(name)
        if note is None:
            return fn
        if note[2] > 48 * 1024:     # beyond the default: opt in to more shared memory
            with self.device:
                self.cp.cuda.driver.funcSetAttribute(fn.ptr, _MAX_DYNAMIC_SHARED, note[2])
        return _ShapedKernel(fn, *note)

    def launch(self, knl, args, n):
        if isinstance(knl, _ShapedKernel):
            with self.device:
                knl.fn(knl.grid, (knl.block,), tuple(args), stream=self.stream,
                       shared_mem=knl.smem)
            return
        with self.device:
            knl((-(-n // BLOCK),), (BLOCK,), tuple(args), stream=self.stream)
