"""The OpenCL backend: jaxprs lowered to fused kernels, rendered to OpenCL C, run by pyopencl.

Launches are asynchronous on one in-order queue; data comes back to the host only in
`to_numpy` (and for host steps: control-flow predicates, HOST_FALLBACK_PRIMS). Programs
are cached in memory and on disk (keyed by source and device) under $POLYJIT_CACHE or
~/.cache/polyjit.
"""
from __future__ import annotations

import hashlib
import os
import weakref

import numpy as np

from ..lowering import lower_to_kernels
from ..lowering.memory import nbytes
from ..lowering.program import Alloc, HostStep, Launch
from ..lowering.render_opencl import OpenCLRenderer
from ..tracer.core import ClosedJaxpr, Jaxpr, Literal, ShapedArray, Var, abstract_eval_rules


WORK_GROUP = 64


class OpenCLUnavailable(RuntimeError):
    pass


class KernelBuildError(RuntimeError):
    """The OpenCL compiler rejected generated source: names the kernels and has the log."""


class Float64Unsupported(TypeError):
    pass


class DeviceMem:
    """One device allocation; several CLBuffers may view it (memory-plan reuse)."""
    __slots__ = ("cl", "nbytes", "__weakref__")

    def __init__(self, cl_buf, n):
        self.cl, self.nbytes = cl_buf, n


class CLBuffer:
    """A device buffer with the abstract value of the array it holds."""
    __slots__ = ("mem", "aval", "__weakref__")

    def __init__(self, mem: DeviceMem, aval):
        self.mem, self.aval = mem, aval


def _cache_dir():
    d = os.environ.get("POLYJIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "polyjit")
    os.makedirs(d, exist_ok=True)
    return d


class OpenCLBackend:
    name = "opencl"

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
        gpus = [d for d in devs if d.type & cl.device_type.GPU]
        self.device = device or (gpus or devs)[0]
        self.platform = "gpu" if self.device.type & cl.device_type.GPU else "cpu"
        self.ctx = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.ctx)
        self.fp64 = bool(self.device.double_fp_config)
        self.renderer = OpenCLRenderer(fp64=self.fp64)
        self.generic_renderer = OpenCLRenderer(fp64=self.fp64, generic_shapes=True)
        self.device_key = f"{self.device.platform.name}|{self.device.name}|{self.device.driver_version}"
        self._programs = {}
        self._eager = {}
        self.bytes_in_use = 0
        self.peak_bytes = 0

    # ------------------------------------------------------------ memory
    def alloc(self, aval) -> CLBuffer:
        n = nbytes(aval)
        mem = DeviceMem(self.cl.Buffer(self.ctx, self.cl.mem_flags.READ_WRITE, n), n)
        self._count(mem, n)
        return CLBuffer(mem, aval)

    def _count(self, mem, n):
        self.bytes_in_use += n
        self.peak_bytes = max(self.peak_bytes, self.bytes_in_use)
        weakref.finalize(mem, self._release, n)

    def _release(self, n):
        self.bytes_in_use -= n

    def reset_peak(self):
        self.peak_bytes = self.bytes_in_use

    def put(self, x, aval):
        host = np.ascontiguousarray(np.asarray(x, dtype=aval.dtype))
        buf = self.alloc(aval)
        if host.size:
            self.cl.enqueue_copy(self.queue, buf.mem.cl, host, is_blocking=True)
        return buf

    def to_numpy(self, buf):
        out = np.empty(buf.aval.shape, buf.aval.dtype)
        if out.size:
            self.cl.enqueue_copy(self.queue, out, buf.mem.cl, is_blocking=True)
        return out

    def block(self, buf):
        self.queue.finish()
        return buf

    def copy_region(self, dst, dst_off, src, src_off, n):
        if n:
            self.cl.enqueue_copy(self.queue, dst.mem.cl, src.mem.cl, byte_count=n,
                                 src_offset=src_off, dst_offset=dst_off)

    # ------------------------------------------------------------ programs
    def build(self, source, kernel_names):
        """A built cl.Program for `source`, from memory, disk, or the compiler."""
        prg = self._programs.get(source)
        if prg is not None:
            return prg
        key = hashlib.sha256((self.device_key + "\0" + source).encode()).hexdigest()
        path = os.path.join(_cache_dir(), key + ".bin")
        prg = None
        if os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    prg = self.cl.Program(self.ctx, [self.device], [f.read()]).build()
            except Exception:        # stale or foreign binary: rebuild from source
                prg = None
        if prg is None:
            prg = self._compile_source(source, kernel_names)
            try:
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(tmp, "wb") as f:
                    f.write(prg.get_info(self.cl.program_info.BINARIES)[0])
                os.replace(tmp, path)
            except OSError:
                pass     # a read-only cache only costs compile time
        self._programs[source] = prg
        return prg

    def _compile_source(self, source, kernel_names):
        try:
            return self.cl.Program(self.ctx, source).build(options=["-cl-std=CL1.2"])
        except self.cl.Error as e:
            names = ", ".join(kernel_names)
            raise KernelBuildError(f"OpenCL build of kernel(s) {names} failed on "
                                   f"{self.device.name}:\n{e}\n--- source ---\n{source}") from None

    def compile(self, closed: ClosedJaxpr):
        return Executable(self, closed)

    def apply(self, prim, bufs, params):
        avals = [b.aval for b in bufs]
        try:
            key = (prim, tuple(avals), tuple(sorted(params.items())))
            hash(key)
        except TypeError:
            key = None
        exe = self._eager.get(key) if key is not None else None
        if exe is None:
            ins = [Var(a) for a in avals]
            outs = [Var(a) for a in abstract_eval_rules[prim](*avals, **params)]
            from ..tracer.core import Eqn
            jaxpr = Jaxpr([], ins, [Eqn(prim, ins, params, outs)], outs)
            exe = Executable(self, ClosedJaxpr(jaxpr, []), name=prim.name, generic=True)
            if key is not None:
                self._eager[key] = exe
        return exe(list(bufs))


def _sub_closed(j):
    """A control-flow body as a ClosedJaxpr taking (constvars + invars) as inputs."""
    if isinstance(j, ClosedJaxpr):
        return j
    return ClosedJaxpr(Jaxpr([], list(j.constvars) + list(j.invars), j.eqns, j.outvars), [])


class Executable:
    """A compiled program: `executable(list of input buffers) -> list of output buffers`."""

    def __init__(self, be: OpenCLBackend, closed: ClosedJaxpr, name="k", generic=False):
        self.be = be
        self._check_fp64(closed)
        self.program = prog = lower_to_kernels(closed, name=_c_name(name))
        self.kernels = prog.kernels
        self.host_steps = prog.host_steps
        dts = [a.dtype for a in prog.slot_avals]
        renderer = be.generic_renderer if generic else be.renderer
        self.source = renderer.program(self.kernels, dts) if self.kernels else ""
        cl_prg = be.build(self.source, [k.name for k in self.kernels]) if self.kernels else None
        self._launch = {}
        for k in self.kernels:
            extra = [np.int64(k.global_size)]
            if generic:
                shp = np.array(k.shape_args or [0], np.int64)
                extra.append(be.put(shp, ShapedArray(shp.shape, shp.dtype)).mem.cl)
            self._launch[id(k)] = (be.cl.Kernel(cl_prg, k.name), extra)
        self.consts = [c._buf if getattr(c, "_backend", None) is be
                       else be.put(np.asarray(c), a)
                       for c, a in zip(prog.consts, [prog.slot_avals[s] for s in prog.const_slots])]
        self._subs = {}

    def _check_fp64(self, closed):
        if self.be.fp64:
            return
        avals = [v.aval for e in closed.jaxpr.eqns for v in list(e.inputs) + list(e.outputs)]
        avals += closed.in_avals
        if any(a.dtype == np.float64 for a in avals):
            raise Float64Unsupported(f"the OpenCL device {self.be.device.name} has no float64 "
                                     "support (cl_khr_fp64); use float32, or the numpy backend")

    def describe(self) -> str:
        return self.program.describe()

    def __call__(self, inputs):
        prog, be, plan = self.program, self.be, self.program.memory
        env = [None] * len(prog.slot_avals)
        for s, b in zip(prog.const_slots, self.consts):
            env[s] = b
        for s, b in zip(prog.input_slots, inputs):
            env[s] = b
        blocks = {}
        for i, step in enumerate(prog.steps):
            if isinstance(step, Launch):
                for s in step.writes:
                    env[s] = self._out_buffer(s, blocks)
                self._run_kernel(step, env)
            elif isinstance(step, Alloc):
                env[step.writes[0]] = self.be.alloc(prog.slot_avals[step.writes[0]])
            else:
                self._run_host(step, env)
            for s in plan.free_after[i]:
                env[s] = None
        return [be.put(np.asarray(o.val), o.aval) if isinstance(o, Literal) else env[o]
                for o in prog.outputs]

    def _out_buffer(self, s, blocks):
        aval = self.program.slot_avals[s]
        b = self.program.memory.block_of.get(s)
        if b is None:
            return self.be.alloc(aval)
        mem = blocks.get(b)
        if mem is None:
            mem = blocks[b] = self.be.alloc(aval).mem
        return CLBuffer(mem, aval)

    def _run_kernel(self, step, env):
        k = step.kernel
        n = k.global_size
        if n == 0:
            return
        knl, extra = self._launch[id(k)]
        knl.set_args(*[env[a.slot].mem.cl for a in k.args], *extra)
        # a fixed work-group size: PoCL specialises each kernel per group size, so a
        # varying one would recompile for every new array size
        local = WORK_GROUP
        self.be.cl.enqueue_nd_range_kernel(self.be.queue, knl, (-(-n // local) * local,), (local,))

    # ------------------------------------------------------------ host steps
    def _sub(self, j):
        exe = self._subs.get(id(j))
        if exe is None:
            exe = self._subs[id(j)] = (j, Executable(self.be, _sub_closed(j), name="body"))
        return exe[1]

    def _run_host(self, step, env):
        be = self.be
        args = [be.put(np.asarray(x.val), x.aval) if isinstance(x, Literal) else env[x]
                for x in step.inputs]
        if step.kind == "fallback":
            from .numpy_backend import impl_rules
            host = [be.to_numpy(a) for a in args]
            with np.errstate(all="ignore"):
                out = impl_rules[step.eqn.prim](*host, **step.eqn.params)
            outs = out if step.eqn.prim.multiple_results else [out]
            outs = [be.put(o, self.program.slot_avals[s]) for o, s in zip(outs, step.writes)]
        else:
            outs = getattr(self, "_" + step.eqn.prim.name)(args, **step.eqn.params)
        for s, b in zip(step.writes, outs):
            env[s] = b

    def _cond(self, args, branches):
        i = int(np.clip(int(self.be.to_numpy(args[0])), 0, len(branches) - 1))
        return self._sub(branches[i])(args[1:])

    def _while(self, args, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts):
        cc, bc = args[:cond_nconsts], args[cond_nconsts:cond_nconsts + body_nconsts]
        carry = args[cond_nconsts + body_nconsts:]
        cond, body = self._sub(cond_jaxpr), self._sub(body_jaxpr)
        while bool(self.be.to_numpy(cond(cc + carry)[0])):
            carry = body(bc + carry)
        return carry

    def _scan(self, args, jaxpr, length, reverse, num_consts, num_carry):
        be = self.be
        consts, carry = args[:num_consts], args[num_consts:num_consts + num_carry]
        xs = args[num_consts + num_carry:]
        body = self._sub(jaxpr)
        from ..tracer.core import ShapedArray
        y_avals = [ShapedArray((length,) + a.shape, a.dtype) for a in _sub_closed(jaxpr).out_avals[num_carry:]]
        ys = [be.alloc(a) for a in y_avals]
        x_avals = [ShapedArray(x.aval.shape[1:], x.aval.dtype) for x in xs]
        for i in (range(length - 1, -1, -1) if reverse else range(length)):
            x_i = []
            for x, a in zip(xs, x_avals):
                b = be.alloc(a)
                n = nbytes(a) if a.size else 0
                be.copy_region(b, 0, x, i * n, n)
                x_i.append(b)
            out = body(consts + carry + x_i)
            carry = out[:num_carry]
            for y, o in zip(ys, out[num_carry:]):
                n = o.aval.size * o.aval.dtype.itemsize
                be.copy_region(y, i * n, o, 0, n)
        return carry + ys


def _c_name(name):
    return "".join(c if c.isalnum() else "_" for c in name)
