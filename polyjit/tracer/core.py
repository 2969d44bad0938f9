"""The IR (ShapedArray, Var, Literal, Eqn, Jaxpr, ClosedJaxpr), primitives and `bind`.

Every operation goes through `bind`: it finds the innermost active transformation
(trace) among the arguments and asks it to process the primitive. The bottom trace
evaluates on the default backend; staging, JVP and batching traces sit above it.
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

from . import dtypes
from .array_methods import ArrayOps


class ShapedArray:
    """The abstract value of an array: static shape, dtype, and JAX-style weak typing."""
    __slots__ = ("shape", "dtype", "weak_type", "_hash")
    array_abstraction_level = 1

    def __init__(self, shape, dtype, weak_type=False):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.weak_type = bool(weak_type)
        self._hash = hash((self.shape, self.dtype, self.weak_type))

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape, dtype=np.int64)))

    def update(self, shape=None, dtype=None, weak_type=None):
        return ShapedArray(self.shape if shape is None else shape,
                           self.dtype if dtype is None else dtype,
                           self.weak_type if weak_type is None else weak_type)

    def strip_weak_type(self):
        return self if not self.weak_type else ShapedArray(self.shape, self.dtype)

    def __eq__(self, other):
        return (type(other) is ShapedArray and self.shape == other.shape
                and self.dtype == other.dtype and self.weak_type == other.weak_type)

    def __hash__(self):
        return self._hash

    def str_short(self):
        return f"{dtypes.short_name(self.dtype)}[{','.join(map(str, self.shape))}]"

    def __repr__(self):
        weak = ", weak_type=True" if self.weak_type else ""
        return f"ShapedArray({self.shape}, {self.dtype.name}{weak})"


def get_aval(x) -> ShapedArray:
    """The abstract value of anything that can be an array argument."""
    if isinstance(x, Tracer) or hasattr(x, "_polyjit_aval"):
        return x.aval
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        return ShapedArray((), dtypes.scalar_dtype(x), weak_type=not isinstance(x, bool))
    if isinstance(x, (np.ndarray, np.generic)):
        return ShapedArray(x.shape, dtypes.canonicalize(x.dtype))
    raise TypeError(f"{type(x).__name__} is not a valid polyjit array argument "
                    f"(value {_short_repr(x)}); pass arrays, numpy arrays or Python scalars")


def _short_repr(x, n=60):
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


# ---------------------------------------------------------------- the IR
class Var:
    __slots__ = ("aval",)

    def __init__(self, aval: ShapedArray):
        self.aval = aval

    def __repr__(self):
        return f"Var({self.aval.str_short()})"


class Literal:
    """A scalar constant written inline in a jaxpr."""
    __slots__ = ("val", "aval")

    def __init__(self, val, aval: ShapedArray):
        self.val = np.asarray(val, dtype=aval.dtype)
        self.aval = aval

    def __repr__(self):
        return f"Literal({self.val!r})"


class Eqn(NamedTuple):
    prim: "Primitive"
    inputs: list          # Var | Literal
    params: dict
    outputs: list         # Var


class Jaxpr:
    def __init__(self, constvars, invars, eqns, outvars):
        self.constvars, self.invars = list(constvars), list(invars)
        self.eqns, self.outvars = list(eqns), list(outvars)

    in_avals = property(lambda self: [v.aval for v in self.invars])
    out_avals = property(lambda self: [v.aval for v in self.outvars])

    def __str__(self):
        return pp_jaxpr(self)

    __repr__ = __str__


class ClosedJaxpr:
    """A jaxpr with values for its constvars."""
    def __init__(self, jaxpr: Jaxpr, consts):
        assert len(jaxpr.constvars) == len(consts)
        self.jaxpr, self.consts = jaxpr, list(consts)

    in_avals = property(lambda self: self.jaxpr.in_avals)
    out_avals = property(lambda self: self.jaxpr.out_avals)
    eqns = property(lambda self: self.jaxpr.eqns)

    def __str__(self):
        return pp_jaxpr(self.jaxpr)

    __repr__ = __str__


# ---------------------------------------------------------------- printing
def _var_names():
    for n in itertools.count(1):
        for t in itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=n):
            yield "".join(t)


def _pp_param(v):
    if isinstance(v, (Jaxpr, ClosedJaxpr)):
        jp = v.jaxpr if isinstance(v, ClosedJaxpr) else v
        return pp_jaxpr(jp, indent=4)
    if isinstance(v, np.dtype):
        return v.name
    if isinstance(v, tuple) and v and all(isinstance(b, (Jaxpr, ClosedJaxpr)) for b in v):
        return "(" + ", ".join(_pp_param(b) for b in v) + ")"
    return repr(v)


def pp_jaxpr(jaxpr: Jaxpr, indent: int = 0) -> str:
    names, fresh = {}, _var_names()

    def name(v):
        if isinstance(v, Literal):
            val = v.val.item()
            return repr(val) if not isinstance(val, bool) else str(val)
        if v not in names:
            names[v] = next(fresh)
        return names[v]

    def decl(v):
        return f"{name(v)}:{v.aval.str_short()}"

    head = ("{ lambda " + " ".join(map(decl, jaxpr.constvars)) + "; "
            + " ".join(map(decl, jaxpr.invars)) + ". let")
    lines = []
    for e in jaxpr.eqns:
        params = ", ".join(f"{k}={_pp_param(v)}" for k, v in e.params.items())
        params = f"[{params}]" if params else ""
        rhs = " ".join([e.prim.name + params] + [name(x) for x in e.inputs])
        lhs = " ".join(map(decl, e.outputs)) or "_"
        lines.append(f"{lhs} = {rhs}")
    out = "(" + ", ".join(map(name, jaxpr.outvars)) + ")"
    if len(lines) <= 1 and "\n" not in "".join(lines):
        return f"{head} {' '.join(lines)} in {out} }}".replace("let  in", "let in")
    pad = " " * indent
    body = "".join(f"\n{pad}    {ln}" for ln in lines)
    return f"{head}{body}\n{pad}  in {out} }}"


# ---------------------------------------------------------------- primitives and traces
class Primitive:
    """A named operation. Its rules live in one table per stage, keyed by the primitive."""
    def __init__(self, name: str, multiple_results: bool = False):
        self.name, self.multiple_results = name, multiple_results

    def bind(self, *args, **params):
        return bind(self, *args, **params)

    def __repr__(self):
        return self.name


abstract_eval_rules: dict[Primitive, Any] = {}   # (*avals, **params) -> list[ShapedArray]
# Primitives that are calls of a sub-jaxpr (e.g. checkpoint) or only exist inside
# transformations: evaluated here by interpreting them, never by a backend.
call_impls: dict[Primitive, Any] = {}            # (*args, **params) -> list of outputs


class MainTrace(NamedTuple):
    level: int
    trace_type: type
    global_data: Any


trace_stack: list[MainTrace] = []
dynamic_trace: MainTrace | None = None


@contextmanager
def new_main(trace_type, global_data=None):
    level = len(trace_stack)
    main = MainTrace(level, trace_type, global_data)
    trace_stack.append(main)
    try:
        yield main
    finally:
        trace_stack.pop()


@contextmanager
def new_dynamic(main: MainTrace):
    global dynamic_trace
    prev, dynamic_trace = dynamic_trace, main
    try:
        yield
    finally:
        dynamic_trace = prev


class Trace:
    def __init__(self, main: MainTrace):
        self.main = main

    def pure(self, val):
        raise NotImplementedError

    lift = pure

    def process_primitive(self, prim, tracers, params):
        raise NotImplementedError


class ConcretizationError(TypeError):
    pass


class Tracer(ArrayOps):
    """A value flowing through a transformation. Array operators come from ArrayOps."""
    __array_priority__ = 1000
    __slots__ = ("_trace",)
    _trace: Trace

    @property
    def aval(self):
        raise NotImplementedError

    shape = property(lambda self: self.aval.shape)
    dtype = property(lambda self: self.aval.dtype)
    ndim = property(lambda self: self.aval.ndim)
    size = property(lambda self: self.aval.size)

    def full_lower(self):
        return self

    def concrete_value(self):
        """The value behind this tracer, if the transformation knows it (e.g. a JVP primal)."""
        raise ConcretizationError(self._concretization_message())

    def _concretization_message(self, what="bool()"):
        return (f"{what} was called on a traced value {self.aval.str_short()}{self._provenance()}: "
                "its value is only known when the compiled function runs, so Python control flow "
                "cannot depend on it. Use pj.lax.cond / pj.lax.switch / pj.lax.while_loop / "
                "pj.lax.fori_loop, or pnp.where for elementwise choices, or mark the argument "
                "static with jit(..., static_argnums=...).")

    def _provenance(self):
        return ""

    def __bool__(self):
        return bool(_concrete(self, "bool()"))

    def __int__(self):
        return int(_concrete(self, "int()"))

    def __float__(self):
        return float(_concrete(self, "float()"))

    def __index__(self):
        return int(_concrete(self, "__index__"))

    def __array__(self, dtype=None, copy=None):
        return np.asarray(_concrete(self, "np.asarray()"), dtype=dtype)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    __hash__ = None  # arrays compare elementwise

    def __repr__(self):
        return f"Traced<{self.aval.str_short()}>{self._provenance()}"


def _concrete(t: Tracer, what):
    try:
        return t.concrete_value()
    except ConcretizationError:
        raise ConcretizationError(t._concretization_message(what)) from None


def find_top_trace(xs) -> Trace:
    top = max((x._trace.main for x in xs if isinstance(x, Tracer)),
              default=trace_stack[0], key=lambda m: m.level)
    if dynamic_trace is not None and dynamic_trace.level > top.level:
        top = dynamic_trace
    return top.trace_type(top)


def full_raise(trace: Trace, val):
    if not isinstance(val, Tracer):
        return trace.pure(val)
    level = trace.main.level
    if val._trace.main is trace.main:
        return val
    if val._trace.main.level < level:
        return trace.lift(val)
    raise RuntimeError(f"a value traced by an inner transformation ({val!r}) escaped into an "
                       "outer one; do not store traced values in globals or outer scopes")


def full_lower(val):
    return val.full_lower() if isinstance(val, Tracer) else val


def bind(prim: Primitive, *args, **params):
    trace = find_top_trace(args)
    tracers = [full_raise(trace, a) for a in args]
    outs = trace.process_primitive(prim, tracers, params)
    if prim.multiple_results:
        return [full_lower(o) for o in outs]
    return full_lower(outs[0])


class EvalTrace(Trace):
    """The bottom of the stack: run each primitive eagerly on the arguments' backend."""
    pure = lift = lambda self, x: x

    def process_primitive(self, prim, values, params):
        if prim in call_impls:
            return call_impls[prim](*values, **params)
        from ..backends import eager_apply
        return eager_apply(prim, values, params)


trace_stack.append(MainTrace(0, EvalTrace, None))
