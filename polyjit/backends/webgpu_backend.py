"""The WebGPU backend: the shared kernel IR rendered to WGSL (render_wgsl.py), run through
wgpu-py (wgpu-native: Vulkan, Metal, D3D12; Mesa's lavapipe on a CPU-only machine).

Device and queue: one per backend, from the adapter wgpu picks with
power_preference="high-performance" (POLYJIT_WEBGPU_ADAPTER=substring picks by name), with
the adapter's own limits requested so buffers can be as large as it allows.

Buffers are raw bytes (numpy's layout for every dtype; 1- and 2-byte dtypes are packed in
u32 words by the renderer), sized up to a multiple of 4 as WebGPU requires, so the memory
plan can hand one block to values of different dtypes. A buffer past the adapter's
maxStorageBufferBindingSize cannot be bound to a shader and is refused when allocated
(`WebGPULimitError`, naming the limit, the adapter and the array); a kernel with more
buffers than maxStorageBuffersPerShaderStage is refused when built.

Kernels: one compute pipeline per kernel, cached in memory by WGSL source (wgpu-native
compiles WGSL through naga into the driver's own pipeline cache; there is no portable
binary to keep on disk). Launches are recorded into one command encoder and submitted
when the host needs a result (`to_numpy`, `block`, byte copies), so a jitted program is
one submit. Work-group counts past maxComputeWorkgroupsPerDimension become a 2D grid; the
kernel recovers its flat index from `workgroup_id` and `num_workgroups`. Each launch binds
its buffers, then a 16-byte uniform holding the work-item count (one cached per count),
then, for eager generic-shape kernels, the shape buffer.

Adapters: Vulkan, Metal or D3D12 (GPUs first); wgpu's OpenGL backend only when named by
POLYJIT_WEBGPU_ADAPTER, since GLSL leaves integer remainders of negatives undefined.
Readback maps a staging buffer (`queue.read_buffer`).

float64 and 64-bit integers are refused with `WebGPUDtypeUnsupported` (a
Float64Unsupported) naming the value, before anything is compiled.
"""
from __future__ import annotations

import os

import numpy as np

from ..lowering.render_wgsl import (GROUPS_MARK, KERNEL_MARK, STORE_T, UNSUPPORTED_DTYPES, WORKGROUP, DtypeUnsupported,
                                    WGSLRenderer, split_program, unsupported_message)
from ..tracer.core import ClosedJaxpr, Jaxpr, Literal, abstract_eval_rules
from .compiled import CompiledBackend, Executable, Float64Unsupported, KernelBuildError

__all__ = ["WebGPUBackend", "WebGPUUnavailable", "WebGPUDtypeUnsupported", "WebGPULimitError",
           "KernelBuildError", "Executable"]


class WebGPUUnavailable(RuntimeError):
    pass


class WebGPUDtypeUnsupported(Float64Unsupported):
    """float64 or a 64-bit integer on webgpu (WGSL has no 64-bit types)."""


class WebGPULimitError(ValueError):
    """A buffer or a kernel past one of the adapter's limits."""


def _import_wgpu():
    try:
        import wgpu
    except ImportError as e:
        raise WebGPUUnavailable(f"wgpu is not installed ({e}); install polyjit[webgpu]") from e
    except Exception as e:     # the wheel is there but its native library did not load
        raise WebGPUUnavailable(f"wgpu failed to load: {e}") from e
    return wgpu


def _adapter_kind(info):
    t = str(info.get("adapter_type", "")).lower()
    return "cpu" if "cpu" in t else "gpu"


def find_adapter(wgpu=None):
    """The adapter polyjit would use, or raise WebGPUUnavailable saying why there is none.
    Vulkan, Metal and D3D12 adapters only: wgpu's OpenGL backend compiles WGSL to GLSL,
    where integer remainders of negative numbers (and more) are undefined, so it is used
    only when asked for by name (POLYJIT_WEBGPU_ADAPTER=opengl)."""
    wgpu = wgpu or _import_wgpu()
    want = os.environ.get("POLYJIT_WEBGPU_ADAPTER", "").lower()
    hint = "on Linux install a Vulkan driver, e.g. mesa-vulkan-drivers for lavapipe"
    try:
        ads = list(wgpu.gpu.enumerate_adapters_sync())
    except Exception as e:
        raise WebGPUUnavailable(f"no WebGPU adapter: {e} ({hint})") from e

    def label(a):
        return f"{a.info.get('device', '')} {a.info.get('backend_type', '')}".lower()
    if want:
        ads = [a for a in ads if want in label(a)]
        if not ads:
            raise WebGPUUnavailable(f"no WebGPU adapter matches POLYJIT_WEBGPU_ADAPTER={want!r}")
        return ads[0]
    native = [a for a in ads if "opengl" not in str(a.info.get("backend_type", "")).lower()]
    if not native:
        only = "; ".join(label(a) for a in ads)
        raise WebGPUUnavailable("no Vulkan, Metal or D3D12 WebGPU adapter"
                                + (f" (only OpenGL: {only})" if only else "") + f"; {hint}")
    gpus = [a for a in native if _adapter_kind(a.info) == "gpu"]
    return (gpus or native)[0]


def _limit(limits, name, default):
    for k in (name, name.replace("-", "_")):
        if k in limits:
            return int(limits[k])
    return default


def _dtype_problems(closed, seen=None):
    """(description, dtype) for the first 64-bit value in `closed` and its sub-jaxprs."""
    seen = set() if seen is None else seen
    jaxpr = closed.jaxpr if isinstance(closed, ClosedJaxpr) else closed
    if id(jaxpr) in seen:
        return None
    seen.add(id(jaxpr))
    for i, v in enumerate(list(jaxpr.constvars) + list(jaxpr.invars)):
        if v.aval.dtype in UNSUPPORTED_DTYPES:
            what = "input" if i >= len(jaxpr.constvars) else "captured constant"
            k = i - len(jaxpr.constvars) if i >= len(jaxpr.constvars) else i
            return f"{what} {k} ({_aval_str(v.aval)})", v.aval.dtype
    for e in jaxpr.eqns:
        for j, x in enumerate(e.inputs):
            if isinstance(x, Literal) and np.dtype(x.aval.dtype) in UNSUPPORTED_DTYPES:
                return (f"a literal operand of {e.prim.name} ({_aval_str(x.aval)})", x.aval.dtype)
        for j, o in enumerate(e.outputs):
            if o.aval.dtype in UNSUPPORTED_DTYPES:
                return f"the result of {e.prim.name} ({_aval_str(o.aval)})", o.aval.dtype
        for p in e.params.values():
            subs = p if isinstance(p, (list, tuple)) else [p]
            for sub in subs:
                if isinstance(sub, (ClosedJaxpr, Jaxpr)):
                    r = _dtype_problems(sub, seen)
                    if r:
                        return r
    return None


def _aval_str(aval):
    return f"{np.dtype(aval.dtype).name}{list(aval.shape)}"


class _Kernel:
    __slots__ = ("pipeline", "layout", "nbuf", "has_shp", "name", "groups")

    def __init__(self, pipeline, nbuf, has_shp, name, groups=None):
        self.pipeline, self.layout = pipeline, pipeline.get_bind_group_layout(0)
        self.nbuf, self.has_shp, self.name, self.groups = nbuf, has_shp, name, groups


class WebGPUBackend(CompiledBackend):
    name = "webgpu"
    fp64 = False

    def __init__(self, adapter=None):
        wgpu = self.wgpu = _import_wgpu()
        ad = self.adapter = adapter or find_adapter(wgpu)
        info = ad.info
        self.device_name = str(info.get("device", "")) or "unknown adapter"
        self.backend_type = str(info.get("backend_type", ""))
        self.platform = _adapter_kind(info)
        lim = ad.limits
        self.max_binding = _limit(lim, "max-storage-buffer-binding-size", 128 << 20)
        self.max_buffer = _limit(lim, "max-buffer-size", 256 << 20)
        self.max_buffers_per_stage = _limit(lim, "max-storage-buffers-per-shader-stage", 8)
        self.max_groups = _limit(lim, "max-compute-workgroups-per-dimension", 65535)
        want = {"max-storage-buffer-binding-size": self.max_binding,
                "max-buffer-size": self.max_buffer,
                "max-storage-buffers-per-shader-stage": self.max_buffers_per_stage,
                "max-compute-workgroups-per-dimension": self.max_groups}
        try:
            self.device = ad.request_device_sync(required_limits=want)
        except Exception:        # an adapter that grants only the defaults
            self.device = ad.request_device_sync()
            dl = self.device.limits
            self.max_binding = _limit(dl, "max-storage-buffer-binding-size", 128 << 20)
            self.max_buffer = _limit(dl, "max-buffer-size", 256 << 20)
            self.max_buffers_per_stage = _limit(dl, "max-storage-buffers-per-shader-stage", 8)
            self.max_groups = _limit(dl, "max-compute-workgroups-per-dimension", 65535)
        self.queue = self.device.queue
        self.features = set(ad.features)
        self.fp64_hint = (f"the webgpu backend ({self.device_name}) has no float64: WGSL has "
                          "no 64-bit types; use float32, or the numpy backend")
        self.renderer = WGSLRenderer()
        self.generic_renderer = WGSLRenderer(generic_shapes=True)
        self.device_key = f"webgpu|{self.backend_type}|{self.device_name}"
        self._usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        self._encoder = None
        self._uniforms = {}
        self._init_common()

    def __repr__(self):
        return f"WebGPUBackend({self.device_name!r}, {self.backend_type}, {self.platform})"

    # ------------------------------------------------------------ dtype checks
    def check_program(self, closed):
        r = _dtype_problems(closed)
        if r:
            what, dt = r
            raise WebGPUDtypeUnsupported(unsupported_message(dt, what, "webgpu"))

    def compile(self, closed: ClosedJaxpr, donated=()):
        self.check_program(closed)
        return super().compile(closed, donated)

    def in_place_ok(self, dtype):
        """Packed 8/16-bit buffers are written through atomics: no in-place kernels there."""
        return np.dtype(dtype) in STORE_T

    def apply(self, prim, bufs, params):
        avals = [b.aval for b in bufs]
        for i, a in enumerate(avals):
            if a.dtype in UNSUPPORTED_DTYPES:
                raise WebGPUDtypeUnsupported(unsupported_message(
                    a.dtype, f"operand {i} of {prim.name} ({_aval_str(a)})", "webgpu"))
        outs = abstract_eval_rules[prim](*avals, **params)
        for a in outs if isinstance(outs, (list, tuple)) else [outs]:
            if a.dtype in UNSUPPORTED_DTYPES:
                raise WebGPUDtypeUnsupported(unsupported_message(
                    a.dtype, f"the result of {prim.name} ({_aval_str(a)})", "webgpu"))
        return super().apply(prim, bufs, params)

    # ------------------------------------------------------------ memory
    def _raw_alloc(self, n):
        size = max(4, -(-n // 4) * 4)
        if size > self.max_binding or size > self.max_buffer:
            lim = min(self.max_binding, self.max_buffer)
            raise WebGPULimitError(
                f"the webgpu adapter {self.device_name} binds storage buffers of at most "
                f"{lim} bytes (maxStorageBufferBindingSize {self.max_binding}, maxBufferSize "
                f"{self.max_buffer}); this array needs {n} bytes. Split it, use smaller "
                "batches, or another backend")
        return self.device.create_buffer(size=size, usage=self._usage)

    def alloc(self, aval):
        if aval.size >= 2 ** 31:
            raise WebGPULimitError(f"array {_aval_str(aval)} has {aval.size} elements; the webgpu "
                                   "backend indexes with 32-bit integers (at most 2**31 - 1)")
        try:
            return super().alloc(aval)
        except WebGPULimitError as e:
            raise WebGPULimitError(f"{e} (array {_aval_str(aval)})") from None

    def put(self, x, aval):
        host = np.ascontiguousarray(np.asarray(x, dtype=aval.dtype))
        buf = self.alloc(aval)
        if host.size:
            raw = host.reshape(-1).view(np.uint8)
            if raw.size % 4:
                raw = np.concatenate([raw, np.zeros(4 - raw.size % 4, np.uint8)])
            self._flush()
            self.queue.write_buffer(buf.mem.data, 0, raw)
        return buf

    def _read(self, mem, off, n):
        self._flush()
        return np.frombuffer(self.queue.read_buffer(mem, off, n), np.uint8)

    def to_numpy(self, buf):
        a = buf.aval
        n = a.size * np.dtype(a.dtype).itemsize
        if not n:
            return np.empty(a.shape, a.dtype)
        raw = self._read(buf.mem.data, 0, -(-n // 4) * 4)[:n]
        return raw.view(a.dtype).reshape(a.shape).copy()

    def block(self, buf):
        self._read(buf.mem.data, 0, 4)      # submits pending work and waits for it
        return buf

    def copy_region(self, dst, dst_off, src, src_off, n):
        if not n:
            return
        if dst_off % 4 == 0 and src_off % 4 == 0 and n % 4 == 0:
            enc = self._enc()
            enc.copy_buffer_to_buffer(src.mem.data, src_off, dst.mem.data, dst_off, n)
            return
        # unaligned (1- and 2-byte dtypes): through the host, whole words
        data = self._read(src.mem.data, src_off - src_off % 4,
                          -(-(src_off % 4 + n) // 4) * 4)[src_off % 4:src_off % 4 + n]
        lo, hi = dst_off - dst_off % 4, -(-(dst_off + n) // 4) * 4
        words = self._read(dst.mem.data, lo, hi - lo).copy()
        words[dst_off - lo:dst_off - lo + n] = data
        self.queue.write_buffer(dst.mem.data, lo, words)

    # ------------------------------------------------------------ programs
    def build(self, source, kernel_names):
        """{kernel name: _Kernel} for a program's WGSL, pipelines cached by module source."""
        out = {}
        for name, mod in split_program(source):
            k = self._programs.get(mod)
            if k is None:
                k = self._programs[mod] = self._compile_module(mod, name)
            out[name] = k
        return out

    def _compile_module(self, mod, name):
        has_shp = "var<storage, read> shp:" in mod
        nstorage = mod.count("var<storage")
        if nstorage > self.max_buffers_per_stage:
            raise WebGPULimitError(
                f"kernel {name} binds {nstorage} storage buffers; the webgpu adapter "
                f"{self.device_name} allows {self.max_buffers_per_stage} per shader stage "
                "(maxStorageBuffersPerShaderStage)")
        try:
            sm = self.device.create_shader_module(code=mod)
            pipe = self.device.create_compute_pipeline(
                layout="auto", compute={"module": sm, "entry_point": name})
        except Exception as e:
            raise KernelBuildError(f"WGSL build of kernel {name} failed on {self.device_name}:"
                                   f"\n{e}\n--- source ---\n{mod}") from None
        groups = None
        if GROUPS_MARK in mod:       # a kernel with its own work-group count (GEMM tiles)
            groups = int(mod.split(GROUPS_MARK, 1)[1].split("\n", 1)[0])
        return _Kernel(pipe, nstorage - has_shp, has_shp, name, groups)

    def get_kernel(self, module, name):
        return module[name]

    def _enc(self):
        if self._encoder is None:
            self._encoder = self.device.create_command_encoder()
        return self._encoder

    def _flush(self):
        if self._encoder is not None:
            enc, self._encoder = self._encoder, None
            self.queue.submit([enc.finish()])

    def _uniform(self, n):
        u = self._uniforms.get(n)
        if u is None:
            if len(self._uniforms) > 4096:
                self._uniforms.clear()
            u = self._uniforms[n] = self.device.create_buffer_with_data(
                data=np.array([n, 0, 0, 0], np.int32), usage=self.wgpu.BufferUsage.UNIFORM)
        return u

    def grid(self, n, groups=None):
        """Work-group counts (x, y) covering n work items (or `groups` work groups), 2D
        past the per-dimension limit."""
        groups = groups or -(-n // WORKGROUP)
        if groups <= self.max_groups:
            return groups, 1
        y = -(-groups // self.max_groups)
        if y > self.max_groups:
            raise WebGPULimitError(f"{n} work items exceed the adapter's grid "
                                   f"({self.max_groups}^2 work groups of {WORKGROUP})")
        return -(-groups // y), y

    def launch(self, knl, args, n):
        if n >= 2 ** 31:
            raise WebGPULimitError(f"kernel {knl.name} has {n} work items; the webgpu backend "
                                   "indexes with 32-bit integers")
        bufs = [a for a in args if not isinstance(a, (int, np.integer))]
        entries = []
        nbuf = knl.nbuf      # the kernel's buffers, then n_work, then generic kernels' shapes
        for i, b in enumerate(bufs[:nbuf]):
            entries.append({"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}})
        entries.append({"binding": nbuf, "resource": {"buffer": self._uniform(int(n)),
                                                      "offset": 0, "size": 16}})
        if knl.has_shp:
            shp = bufs[nbuf]
            entries.append({"binding": nbuf + 1,
                            "resource": {"buffer": shp, "offset": 0, "size": shp.size}})
        bg = self.device.create_bind_group(layout=knl.layout, entries=entries)
        gx, gy = self.grid(int(n), knl.groups)
        cp = self._enc().begin_compute_pass()
        cp.set_pipeline(knl.pipeline)
        cp.set_bind_group(0, bg)
        cp.dispatch_workgroups(gx, gy, 1)
        cp.end()


def describe_adapter():
    """(platform, device name) of the adapter polyjit would use (raises WebGPUUnavailable)."""
    ad = find_adapter()
    return _adapter_kind(ad.info), str(ad.info.get("device", ""))


__all__ += ["find_adapter", "describe_adapter", "KERNEL_MARK", "DtypeUnsupported"]
