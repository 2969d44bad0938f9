"""lower_to_kernels: a ClosedJaxpr becomes a Program, an ordered list of steps over
numbered buffer slots: kernel launches, and host steps (control flow run as host loops
over compiled bodies, the explicit HOST_FALLBACK_PRIMS, and every equation on a storage-only
dtype, which devices hold as bytes but have no arithmetic for)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..tracer import dtypes, primitives as P
from ..tracer.core import ClosedJaxpr, Literal
from . import fusion, ir
from .exprs import EXPR_RULES, CUMULATIVE_MAX_AXIS
from .memory import plan_memory

# Primitives without a kernel: run on the host through the numpy reference (inputs copied
# to the host, results back). Deliberately explicit, and reported by `describe()`.
HOST_FALLBACK_PRIMS = frozenset({P.sort_p, P.top_k_p, *P.SCATTERS.values()})
CONTROL_FLOW_PRIMS = frozenset({P.cond_p, P.while_p, P.scan_p})


def runs_on_host(eqn) -> bool:
    if eqn.prim in HOST_FALLBACK_PRIMS or eqn.prim in CONTROL_FLOW_PRIMS:
        return True
    if eqn.prim in P.CUMULATIVES.values():   # quadratic as a kernel: long axes go to the host
        return eqn.inputs[0].aval.shape[eqn.params["axis"]] > CUMULATIVE_MAX_AXIS
    if any(dtypes.is_storage_only(v.aval.dtype) for v in (*eqn.inputs, *eqn.outputs)):
        return True     # float8/float4/int4/int2 have no device arithmetic: bytes on the device
    if eqn.prim not in EXPR_RULES:
        raise NotImplementedError(f"no lowering rule for primitive {eqn.prim.name}")
    return False


@dataclass
class Launch:
    kernel: ir.Kernel
    reads: list
    writes: list


@dataclass
class Alloc:
    """An output of zero elements: nothing to compute, only a buffer to hand out."""
    writes: list
    reads: list = field(default_factory=list)


@dataclass
class HostStep:
    eqn: object
    inputs: list          # slot number, or a Literal
    writes: list
    reads: list = field(default_factory=list)

    @property
    def kind(self):
        return "control" if self.eqn.prim in CONTROL_FLOW_PRIMS else "fallback"


@dataclass
class Program:
    slot_avals: list
    const_slots: list
    input_slots: list
    outputs: list         # slot number, or a Literal
    steps: list
    consts: list
    memory: object = None

    @property
    def kernels(self):
        return [s.kernel for s in self.steps if isinstance(s, Launch)]

    @property
    def host_steps(self):
        return [s for s in self.steps if isinstance(s, HostStep)]

    def describe(self) -> str:
        over = self.memory.in_place if self.memory is not None else {}
        lines = []
        for s in self.steps:
            if isinstance(s, Launch):
                k = s.kernel
                g = k.gemm
                if g is not None:
                    line = (f"kernel {k.name}: gemm {g.batch}x[{g.M}x{g.K}]@[{g.K}x{g.N}] "
                            f"({g.a.dtype}, {g.b.dtype} -> {g.acc_dtype}, {g.precision}), "
                            f"reads {s.reads} writes {s.writes}")
                else:
                    line = (f"kernel {k.name}: {k.global_size} work items x "
                            f"{int(np.prod([v.arg[1] for v in k.ser]))} serial, "
                            f"reads {s.reads} writes {s.writes}")
                donors = [over[w] for w in s.writes if w in over]
                lines.append(line + (f" in place over donated {donors}" if donors else ""))
            elif isinstance(s, Alloc):
                lines.append(f"alloc (empty) writes {s.writes}")
            else:
                lines.append(f"host {s.kind} {s.eqn.prim.name}: reads {s.reads} writes {s.writes}")
        return "\n".join(lines)


def _required(jaxpr):
    """Vars that must have buffers regardless of fusion: outputs and host-step operands."""
    req = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    for e in jaxpr.eqns:
        if runs_on_host(e):
            req |= {x for x in e.inputs if not isinstance(x, Literal)}
            req |= set(e.outputs)
    return req - set(jaxpr.invars) - set(jaxpr.constvars)


def lower_to_kernels(closed: ClosedJaxpr, name="k", donated=(), in_place_ok=None,
                     plain_product_operands=False) -> Program:
    """`donated`: positions of inputs whose buffers the program may reuse (memory.py);
    `in_place_ok(dtype)`: may a kernel read and write one buffer of this dtype (default yes);
    `plain_product_operands`: give every computed operand of a matrix product or convolution
    its own buffer instead of fusing it into the GEMM's loaders (fusion.py)."""
    jaxpr, partials = fusion.split_long_convolutions(closed.jaxpr)
    jaxpr, staged = fusion.split_reductions(jaxpr)
    staged |= partials
    defs = {o: (e, i) for e in jaxpr.eqns if not runs_on_host(e) for i, o in enumerate(e.outputs)}
    mat, plans = fusion.plan_materialization(jaxpr, defs, _required(jaxpr) | staged,
                                             plain_operands=plain_product_operands)
    slots = {}
    for v in list(jaxpr.constvars) + list(jaxpr.invars):
        slots.setdefault(v, len(slots))
    for e in jaxpr.eqns:
        for o in e.outputs:
            if o in mat:
                slots.setdefault(o, len(slots))
    avals = [None] * len(slots)
    for v, s in slots.items():
        avals[s] = v.aval
    steps = _schedule(jaxpr, defs, slots, plans, name)
    prog = Program(avals, [slots[v] for v in jaxpr.constvars], [slots[v] for v in jaxpr.invars],
                   [v if isinstance(v, Literal) else slots[v] for v in jaxpr.outvars], steps,
                   list(closed.consts))
    def in_place(i, s, d):
        st = steps[i]
        return ((in_place_ok is None or in_place_ok(avals[d].dtype))
                and _overwrites_safely(st.kernel, s, d))
    prog.memory = plan_memory(prog, [prog.input_slots[i] for i in donated], in_place)
    for i, st in enumerate(steps):
        if isinstance(st, Launch) and any(s in prog.memory.in_place for s in st.writes):
            _store_in_place(st, prog.memory.in_place)
    return prog


def _overwrites_safely(k, s, d):
    """May kernel `k` store slot `s` straight into donated input `d`? Yes when every load of
    `d` is at the index `s` is stored at (each work item reads only the elements it
    writes), and the first store whose value loads `d` is no later than `s`'s, so each
    work item has read its element (a value the linearizer then reuses) before writing it."""
    if k.gemm is not None:          # tiles read operands written by other work items
        return False
    pos = [j for j, st in enumerate(k.stores) if st.slot == s]
    if len(pos) != 1:
        return False
    idx = k.stores[pos[0]].index
    first = None
    for j, st in enumerate(k.stores):
        for e in fusion.walk([st.index, st.value]):
            if e.op == "load" and e.arg == d:
                if e.args[0] is not idx:
                    return False
                first = j if first is None else first
    return first is None or first <= pos[0]


def _store_in_place(step, in_place):
    """Point the kernel's stores of in-place slots at the donated buffers they overwrite:
    one buffer argument, read and written, rather than two aliasing restrict pointers."""
    k = step.kernel
    k.stores = [ir.Store(in_place.get(st.slot, st.slot), st.index, st.value) for st in k.stores]
    written = {st.slot for st in k.stores}
    k.args = ([ir.BufferRef(s, None, 0) for s in step.reads if s not in written]
              + [ir.BufferRef(st.slot, None, 0) for st in k.stores])


def _loads(tree_roots):
    return sorted({e.arg for e in fusion.walk(tree_roots) if e.op == "load"})


def _schedule(jaxpr, defs, slots, plans, name):
    """Steps in program order; roots of one shape and split share a kernel when none
    reads what another writes."""
    from ..config import config
    precision = config.matmul_precision
    by_var = {p.var: p for p in plans}
    b = fusion.Builder(defs, slots)
    steps, group = [], []

    def flush():
        if group:
            k, _ = fusion.build_kernel(b, group, slots, f"{name}{len(steps)}")
            reads = [s for s in _loads([st.value for st in k.stores])]
            writes = [st.slot for st in k.stores]
            k.args = ([ir.BufferRef(s, None, 0) for s in reads]
                      + [ir.BufferRef(s, None, 0) for s in writes])
            steps.append(Launch(k, reads, writes))
            group.clear()

    for e in jaxpr.eqns:
        if runs_on_host(e):
            flush()
            ins = [x if isinstance(x, Literal) else slots[x] for x in e.inputs]
            steps.append(HostStep(e, ins, [slots[o] for o in e.outputs],
                                  [s for s in ins if not isinstance(s, Literal)]))
            continue
        for o in e.outputs:
            p = by_var.get(o)
            if p is None:
                continue
            if o.aval.size == 0:
                steps.append(Alloc([slots[o]]))
                continue
            spec = fusion.plan_gemm(defs, slots, o, precision) if p.k > 0 else None
            if spec is not None:      # a tiled matrix product: a kernel of its own
                flush()
                group.append(p)
                flush()
                steps[-1].kernel.gemm = spec
                continue
            if group and not _joins(b, group, p, slots):
                flush()
            group.append(p)
    flush()
    return steps


def _joins(b, group, p, slots):
    g0 = group[0]
    if (p.var.aval.shape, p.k) != (g0.var.aval.shape, g0.k):
        return False
    dom = tuple(ir.loop_var(d, "i") for d in p.var.aval.shape)
    reads = set(_loads([b.build_root(p.var, dom)]))
    return not reads & {slots[q.var] for q in group}
