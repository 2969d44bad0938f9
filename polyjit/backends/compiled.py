"""What every compiled (kernel-generating) backend shares: device buffers with memory
accounting, the on-disk program cache, eager single-primitive programs, and `Executable`,
which drives a lowered Program (kernel launches, memory-plan reuse, control flow as host
loops over compiled bodies, HOST_FALLBACK_PRIMS through the numpy reference).

A backend subclasses `CompiledBackend` and supplies the device verbs: `_raw_alloc`,
`put`, `to_numpy`, `block`, `copy_region`, `build` (source -> program), `get_kernel` and
`launch`, plus a renderer and a generic-shape renderer.

Donation (`jit(..., donate_argnums=...)`): `compile(closed, donated=input positions)`
lets the memory plan take over donated input buffers (memory.py); an input whose buffer a
call reused is deleted afterwards: its Buffer's memory becomes `DeletedMem`, and any later
use raises `DeletedArrayError`. Donated inputs the plan cannot use stay valid. (The numpy
backend ignores donation.)
"""
from __future__ import annotations

import hashlib
import os
import weakref

import numpy as np

from ..lowering import lower_to_kernels
from ..lowering.memory import nbytes
from ..lowering.program import Alloc, Launch
from ..tracer.core import ClosedJaxpr, Eqn, Jaxpr, Literal, ShapedArray, Var, abstract_eval_rules


class Float64Unsupported(TypeError):
    pass


class KernelBuildError(RuntimeError):
    """A device compiler rejected generated source: names the kernels and has the log."""


class DeletedArrayError(RuntimeError):
    """An Array whose buffer was donated to a jitted call, then used again."""


class DeletedMem:
    """The memory of a Buffer donated to (and reused by) a jitted call: any use raises."""
    __slots__ = ("aval",)
    nbytes = 0

    def __init__(self, aval):
        self.aval = aval

    @property
    def data(self):
        raise DeletedArrayError(
            f"Array has been deleted: its buffer ({self.aval.str_short()}) "
            "was donated to a jitted function (donate_argnums) and reused for its results; "
            "use the results, or do not donate an argument you still need")


class DeviceMem:
    """One device allocation; several Buffers may view it (memory-plan reuse).
    `data` is the backend's handle (a cl.Buffer, a cupy array)."""
    __slots__ = ("data", "nbytes", "__weakref__")

    def __init__(self, data, n):
        self.data, self.nbytes = data, n


class Buffer:
    """A device buffer with the abstract value of the array it holds."""
    __slots__ = ("mem", "aval", "__weakref__")

    def __init__(self, mem: DeviceMem, aval):
        self.mem, self.aval = mem, aval


def cache_dir():
    d = os.environ.get("POLYJIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "polyjit")
    os.makedirs(d, exist_ok=True)
    return d


def disk_cached(key_text, suffix, load, compile_):
    """A program from the disk cache, else compiled and saved. `load(bytes)` rebuilds a
    program from a saved binary (raising if it is stale); `compile_()` returns
    (program, binary bytes)."""
    key = hashlib.sha256(key_text.encode()).hexdigest()
    path = os.path.join(cache_dir(), key + suffix)
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                return load(f.read())
        except Exception:        # stale or foreign binary: rebuild from source
            pass
    prg, binary = compile_()
    try:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(binary)
        os.replace(tmp, path)
    except OSError:
        pass     # a read-only cache only costs compile time
    return prg


class CompiledBackend:
    name = "compiled"
    supports_donation = True
    plain_product_operands = False   # True: GEMM operands as plain loads (no fused loaders)
    fp64 = True
    fp64_hint = "the device has no float64 support; use float32, or the numpy backend"

    # Freed allocations kept for reuse, up to this many bytes (0: none). A fresh allocation
    # costs a CPU device a page fault per 4 KB on first touch (16 ms for 64 MB on PoCL); an
    # in-order queue makes reuse safe: work already queued on a freed buffer runs first.
    reuse_pool_bytes = 0

    def _init_common(self):
        self._programs = {}
        self._eager = {}
        self.bytes_in_use = 0
        self.peak_bytes = 0
        self._free = {}                  # nbytes -> handles of freed allocations
        self._free_bytes = 0

    # ------------------------------------------------------------ memory
    def alloc(self, aval) -> Buffer:
        n = nbytes(aval)
        data = self._reused(n)
        mem = DeviceMem(self._raw_alloc(n) if data is None else data, n)
        self.bytes_in_use += n
        self.peak_bytes = max(self.peak_bytes, self.bytes_in_use)
        weakref.finalize(mem, self._release, n, mem.data if self.reuse_pool_bytes else None)
        return Buffer(mem, aval)

    def _reused(self, n):
        same = self._free.get(n)
        if not same:
            return None
        self._free_bytes -= n
        data = same.pop()                # the newest: likeliest still in cache
        if not same:
            del self._free[n]
        return data

    def _release(self, n, data=None):
        self.bytes_in_use -= n
        if data is None or n > self.reuse_pool_bytes:
            return
        self._free.setdefault(n, []).append(data)
        self._free_bytes += n
        while self._free_bytes > self.reuse_pool_bytes:     # drop from the longest-pooled size
            m = next(iter(self._free))
            self._free[m].pop(0)
            self._free_bytes -= m
            if not self._free[m]:
                del self._free[m]

    def reset_peak(self):
        self.peak_bytes = self.bytes_in_use

    # ------------------------------------------------------------ programs
    def compile(self, closed: ClosedJaxpr, donated=()):
        """An Executable; `donated`: positions of inputs whose buffers it may reuse."""
        return Executable(self, closed, donated=donated)

    def in_place_ok(self, dtype) -> bool:
        """May one kernel read and write a buffer of `dtype` (an in-place donated update)?"""
        return True

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


def _c_name(name):
    return "".join(c if c.isalnum() else "_" for c in name)


class Executable:
    """A compiled program: `executable(list of input buffers) -> list of output buffers`."""

    def __init__(self, be: CompiledBackend, closed: ClosedJaxpr, name="k", generic=False, donated=()):
        self.be = be
        self._check_fp64(closed)
        self.program = prog = lower_to_kernels(closed, name=_c_name(name), donated=tuple(donated),
                                               in_place_ok=be.in_place_ok,
                                               plain_product_operands=be.plain_product_operands)
        plan = prog.memory
        pos = {s: i for i, s in enumerate(prog.input_slots)}
        # (block, input slot, input position) of each donated input the plan reuses
        self._donors = [(b, d, pos[d]) for b, d in plan.donor_of.items()]
        self.donated = sorted(p for _, _, p in self._donors)
        self.kernels = prog.kernels
        self.host_steps = prog.host_steps
        dts = [a.dtype for a in prog.slot_avals]
        renderer = be.generic_renderer if generic else be.renderer
        self.source = renderer.program(self.kernels, dts) if self.kernels else ""
        module = be.build(self.source, [k.name for k in self.kernels]) if self.kernels else None
        self._launch, self._shape_bufs = {}, []
        for k in self.kernels:
            extra = [np.int64(k.global_size)]
            if generic:      # the shape constants the generic source reads (held: a freed
                shp = np.array(k.shape_args or [0], np.int64)     # one is reused elsewhere)
                self._shape_bufs.append(be.put(shp, ShapedArray(shp.shape, shp.dtype)))
                extra.append(self._shape_bufs[-1].mem.data)
            self._launch[id(k)] = (be.get_kernel(module, k.name), extra)
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
            raise Float64Unsupported(self.be.fp64_hint)

    def describe(self) -> str:
        return self.program.describe()

    def __call__(self, inputs):
        prog, be, plan = self.program, self.be, self.program.memory
        env = [None] * len(prog.slot_avals)
        for s, b in zip(prog.const_slots, self.consts):
            env[s] = b
        for s, b in zip(prog.input_slots, inputs):
            if type(b.mem) is DeletedMem:
                b.mem.data            # raises DeletedArrayError
            env[s] = b
        blocks, consumed = self._donated_blocks(inputs, env) if self._donors else ({}, ())
        for i, step in enumerate(prog.steps):
            if isinstance(step, Launch):
                for s in step.writes:
                    env[s] = self._out_buffer(s, blocks)
                self._run_kernel(step, env)
            elif isinstance(step, Alloc):
                env[step.writes[0]] = be.alloc(prog.slot_avals[step.writes[0]])
            else:
                self._run_host(step, env)
            for s in plan.free_after[i]:
                env[s] = None
        outs = [be.put(np.asarray(o.val), o.aval) if isinstance(o, Literal) else env[o]
                for o in prog.outputs]
        for p in consumed:
            inputs[p].mem = DeletedMem(inputs[p].aval)
        return outs

    def _donated_blocks(self, inputs, env):
        """The memory-plan blocks that are donated input buffers. An input whose memory
        also backs another input or a constant of this call is copied instead (and stays
        valid): the program must not overwrite what it still reads elsewhere."""
        blocks, consumed = {}, []
        uses = {}
        for b in list(inputs) + self.consts:
            uses[id(b.mem)] = uses.get(id(b.mem), 0) + 1
        for blk, slot, p in self._donors:
            mem = inputs[p].mem
            if uses[id(mem)] > 1:
                aval = self.program.slot_avals[slot]
                copy = self.be.alloc(aval)
                self.be.copy_region(copy, 0, inputs[p], 0, nbytes(aval) if aval.size else 0)
                env[slot] = copy
                mem = copy.mem
            else:
                consumed.append(p)
            blocks[blk] = mem
        return blocks, consumed

    def _out_buffer(self, s, blocks):
        """A buffer for slot `s`: its memory-plan block when it has one (shared with
        slots whose lifetimes do not overlap), else a fresh allocation."""
        aval = self.program.slot_avals[s]
        b = self.program.memory.block_of.get(s)
        if b is None:
            return self.be.alloc(aval)
        mem = blocks.get(b)
        if mem is None:
            mem = blocks[b] = self.be.alloc(aval).mem
        return Buffer(mem, aval)

    def _run_kernel(self, step, env):
        k = step.kernel
        if k.global_size == 0:
            return
        knl, extra = self._launch[id(k)]
        self.be.launch(knl, [env[a.slot].mem.data for a in k.args] + extra, k.global_size)

    # ------------------------------------------------------------ host steps
    def _sub(self, j):
        exe = self._subs.get(id(j))
        if exe is None:     # j is kept alive beside its executable so id(j) stays unique
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
