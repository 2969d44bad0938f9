"""Staging: trace a Python function into a ClosedJaxpr, evaluate and simplify jaxprs."""
from __future__ import annotations

import numpy as np

from . import core
from .core import (ClosedJaxpr, Eqn, Jaxpr, Literal, Tracer, Var, abstract_eval_rules, bind,
                   full_raise, get_aval)


class JaxprTracer(Tracer):
    __slots__ = ("_aval", "names")

    def __init__(self, trace, aval, names=frozenset()):
        self._trace, self._aval, self.names = trace, aval, names

    aval = property(lambda self: self._aval)

    def _provenance(self):
        if not self.names:
            return ""
        return " computed from argument " + ", ".join(sorted(self.names))


class JaxprBuilder:
    def __init__(self):
        self.eqns: list[Eqn] = []
        self.tracer_to_var: dict[int, Var] = {}
        self.const_tracers: dict[int, JaxprTracer] = {}
        self.constvals: dict[Var, object] = {}
        self.tracers: list[JaxprTracer] = []   # keeps ids alive

    def new_tracer(self, trace, aval, names=frozenset()):
        t = JaxprTracer(trace, aval, names)
        self.tracers.append(t)
        return t

    def add_var(self, tracer) -> Var:
        v = self.tracer_to_var[id(tracer)] = Var(tracer.aval)
        return v

    def getvar(self, tracer) -> Var:
        return self.tracer_to_var[id(tracer)]

    def build(self, in_tracers, out_tracers) -> ClosedJaxpr:
        invars = [self.getvar(t) for t in in_tracers]
        outvars = [self.getvar(t) for t in out_tracers]
        literals = {v: Literal(val, v.aval) for v, val in self.constvals.items() if _is_literal(val)}
        constvars = [v for v in self.constvals if v not in literals]
        consts = [self.constvals[v] for v in constvars]
        sub = lambda x: literals.get(x, x)
        eqns = [Eqn(e.prim, [sub(x) for x in e.inputs], e.params, e.outputs) for e in self.eqns]
        return ClosedJaxpr(Jaxpr(constvars, invars, eqns, [sub(v) for v in outvars]), consts)


def _is_literal(val) -> bool:
    if isinstance(val, Tracer):
        return False
    if isinstance(val, (bool, int, float, np.generic)):
        return True
    return getattr(val, "shape", None) == () and not isinstance(val, Tracer)


class JaxprTrace(core.Trace):
    builder = property(lambda self: self.main.global_data)

    def new_arg(self, aval, name=None) -> JaxprTracer:
        t = self.builder.new_tracer(self, aval, frozenset([name]) if name else frozenset())
        self.builder.add_var(t)
        return t

    def get_or_make_const_tracer(self, val):
        b = self.builder
        t = b.const_tracers.get(id(val))
        if t is None:
            t = b.const_tracers[id(val)] = b.new_tracer(self, get_aval(val))
            b.constvals[b.add_var(t)] = val
            b.tracers.append(val)   # keep id(val) from being reused while tracing
        return t

    pure = lift = get_or_make_const_tracer

    def process_primitive(self, prim, tracers, params):
        avals_out = abstract_eval_rules[prim](*[t.aval for t in tracers], **params)
        names = frozenset().union(*[t.names for t in tracers if isinstance(t, JaxprTracer)])
        b = self.builder
        outs = [b.new_tracer(self, a, names) for a in avals_out]
        b.eqns.append(Eqn(prim, [b.getvar(t) for t in tracers], params,
                          [b.add_var(t) for t in outs]))
        return outs


def trace_to_jaxpr(flat_fun, in_avals, arg_names=None) -> ClosedJaxpr:
    """Trace `flat_fun(*arrays) -> list of arrays` at the given avals."""
    builder = JaxprBuilder()
    names = arg_names or [None] * len(in_avals)
    with core.new_main(JaxprTrace, builder) as main, core.new_dynamic(main):
        trace = JaxprTrace(main)
        tracers_in = [trace.new_arg(a, n) for a, n in zip(in_avals, names)]
        outs = flat_fun(*tracers_in)
        tracers_out = [full_raise(trace, _check_out(o)) for o in outs]
        return builder.build(tracers_in, tracers_out)


def _check_out(x):
    from ..autodiff.ad_util import float0   # late: autodiff is built on this module
    if not isinstance(x, Tracer) and getattr(x, "dtype", None) == float0:
        raise TypeError(f"a float0 array of shape {x.shape} (the zero tangent or cotangent of an "
                        "integer or boolean value) cannot be an output of a staged function; "
                        "pj.jit returns such outputs, make_jaxpr and control-flow bodies do not")
    get_aval(x)  # raises a clear TypeError for non-array outputs
    return x


def eval_jaxpr(jaxpr: Jaxpr, consts, args):
    """Run a jaxpr by binding each equation: the interpreter every transformation reuses."""
    env = {}
    read = lambda v: v.val.item() if isinstance(v, Literal) and v.aval.weak_type else (
        v.val if isinstance(v, Literal) else env[v])
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for e in jaxpr.eqns:
        outs = bind(e.prim, *[read(x) for x in e.inputs], **e.params)
        env.update(zip(e.outputs, outs if e.prim.multiple_results else [outs]))
    return [read(v) for v in jaxpr.outvars]


def jaxpr_as_fun(closed: ClosedJaxpr):
    return lambda *args: eval_jaxpr(closed.jaxpr, closed.consts, args)


def dce_jaxpr(jaxpr: Jaxpr, used_outputs=None) -> tuple[Jaxpr, list[bool]]:
    """Drop equations whose results are unused (primitives have no side effects).

    Returns the pruned jaxpr (all outputs kept unless `used_outputs` says otherwise)
    and which inputs it still reads.
    """
    outvars = jaxpr.outvars if used_outputs is None else [
        v for v, u in zip(jaxpr.outvars, used_outputs) if u]
    live = {v for v in outvars if isinstance(v, Var)}
    kept = []
    for e in reversed(jaxpr.eqns):
        if any(o in live for o in e.outputs):
            kept.append(e)
            live.update(x for x in e.inputs if isinstance(x, Var))
    kept.reverse()
    used_in = [v in live for v in jaxpr.invars]
    return Jaxpr(jaxpr.constvars, jaxpr.invars, kept, outvars), used_in


def dce_closed(closed: ClosedJaxpr) -> ClosedJaxpr:
    jaxpr, _ = dce_jaxpr(closed.jaxpr)
    live = {x for e in jaxpr.eqns for x in e.inputs if isinstance(x, Var)} | set(jaxpr.outvars)
    keep = [i for i, v in enumerate(jaxpr.constvars) if v in live]
    return ClosedJaxpr(Jaxpr([jaxpr.constvars[i] for i in keep], jaxpr.invars, jaxpr.eqns,
                             jaxpr.outvars), [closed.consts[i] for i in keep])


def inline_calls(closed: ClosedJaxpr) -> ClosedJaxpr:
    """Replace call primitives (in core.call_impls, with a `call_jaxpr` param, e.g. checkpoint)
    by their bodies, also inside control-flow bodies, so backends never see them."""
    if not _has_calls(closed.jaxpr):
        return closed
    return ClosedJaxpr(inline_jaxpr(closed.jaxpr), closed.consts)


def _sub_jaxprs(params):
    for v in params.values():
        if isinstance(v, Jaxpr):
            yield v
        elif isinstance(v, tuple) and v and isinstance(v[0], Jaxpr):
            yield from v


def _has_calls(jaxpr) -> bool:
    return any(e.prim in core.call_impls or any(_has_calls(j) for j in _sub_jaxprs(e.params))
               for e in jaxpr.eqns)


def _inline_param(v):
    if isinstance(v, Jaxpr):
        return inline_jaxpr(v)
    if isinstance(v, tuple) and v and isinstance(v[0], Jaxpr):
        return tuple(inline_jaxpr(j) for j in v)
    return v


def inline_jaxpr(jaxpr: Jaxpr) -> Jaxpr:
    eqns, env = [], {}
    sub = lambda x: env.get(x, x) if isinstance(x, Var) else x

    def emit(j):
        for e in j.eqns:
            ins = [sub(x) for x in e.inputs]
            body = e.params.get("call_jaxpr") if e.prim in core.call_impls else None
            if body is not None:
                env.update(zip(body.invars, ins))
                emit(body)
                env.update(zip(e.outputs, [sub(v) for v in body.outvars]))
                continue
            outs = [Var(o.aval) for o in e.outputs]   # fresh: a body may be inlined twice
            env.update(zip(e.outputs, outs))
            eqns.append(Eqn(e.prim, ins, {k: _inline_param(v) for k, v in e.params.items()}, outs))
    emit(jaxpr)
    return Jaxpr(jaxpr.constvars, jaxpr.invars, eqns, [sub(v) for v in jaxpr.outvars])
