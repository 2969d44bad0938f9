"""Interpreting an ONNX graph with polyjit ops.

Values are numpy arrays while they are known at trace time (initializers kept inline,
Constant nodes, Shape outputs and whatever is computed from those only) and polyjit
arrays/tracers otherwise. A node whose inputs are all known is evaluated eagerly
("constant folding"), which keeps shape computations (Shape -> Gather -> Concat ->
Reshape) static, as polyjit's fixed-shape IR needs.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import onnx

from ...tracer import core
from ...tracer.core import Tracer
from ._proto import (OnnxError, UnsupportedOpError, attr_kind, attr_type_name, attributes,
                     tensor_to_numpy)
from .ops import OPS, lookup


@contextmanager
def eager():
    """Run polyjit ops eagerly even inside jit tracing (for values known at trace time)."""
    with core.new_dynamic(core.trace_stack[0]):
        yield


def is_known(x) -> bool:
    if isinstance(x, (list, tuple)):   # a sequence value
        return all(map(is_known, x))
    return x is None or not isinstance(x, Tracer)


def to_host(x):
    if x is None or isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(to_host(v) for v in x)
    return np.asarray(x)


class NodeCtx:
    """What an op implementation sees of its node: attributes, opset, errors, subgraphs."""

    def __init__(self, node, version, interp, attrs):
        self.node, self.version, self.interp, self.attrs = node, version, interp, attrs
        self.op_type, self.name = node.op_type, node.name

    def attr(self, key, default=None):
        return self.attrs.get(key, default)

    def where(self) -> str:
        dom = self.node.domain or "ai.onnx"
        return f"node {self.name!r} ({self.op_type}, {dom} opset {self.version})"

    def fail(self, msg):
        return OnnxError(f"{self.where()}: {msg}")

    def const(self, x, what="this input"):
        """The value of x as a numpy array; x must be known at trace time."""
        if x is None:
            return None
        if isinstance(x, Tracer):
            raise self.fail(f"{what} must be known when the model is traced (polyjit compiles "
                            "for static shapes), but it is computed from the model's inputs")
        return np.asarray(x)

    def ints(self, x, what="this input"):
        v = self.const(x, what)
        return None if v is None else [int(i) for i in np.asarray(v).reshape(-1)]

    def run_subgraph(self, graph, inputs):
        """Run a subgraph attribute on `inputs` (list), seeing the enclosing scope."""
        return self.interp.run(graph, inputs, self.env)


class Interpreter:
    """Runs GraphProtos node by node; `opsets` maps domain -> version."""

    def __init__(self, opsets, base_dir=None, param_nodes=frozenset()):
        self.opsets = dict(opsets)
        self.base_dir = base_dir
        # output names of the top-level graph's Constant nodes whose value is in params (by
        # name: protobuf's upb wrappers are transient objects, so their id()s get reused)
        self.param_nodes = param_nodes

    def run(self, graph, inputs, outer=None, preset=None):
        """Outputs of `graph` for positional `inputs` (the graph's non-initializer inputs)."""
        env = dict(outer or {})
        for t in graph.initializer:
            env[t.name] = tensor_to_numpy(t, self.base_dir)
        env.update(preset or {})
        names = [i.name for i in graph.input if i.name not in (preset or {})]
        if len(graph.initializer):
            inits = {t.name for t in graph.initializer}
            names = [n for n in names if n not in inits] if len(inputs) < len(names) else names
        if len(inputs) != len(names):
            raise OnnxError(f"graph {graph.name!r} takes {len(names)} inputs ({names}), "
                            f"got {len(inputs)}")
        env.update(zip(names, inputs))
        skip = self.param_nodes if preset is not None else frozenset()   # top level only
        for node in graph.node:
            if node.op_type == "Constant" and node.output and node.output[0] in skip:
                continue
            self.run_node(node, env)
        missing = [o.name for o in graph.output if o.name not in env]
        if missing:
            raise OnnxError(f"graph {graph.name!r}: outputs {missing} are produced by no node")
        return [env[o.name] for o in graph.output]

    def run_node(self, node, env):
        version = self.opsets.get(node.domain or "", None)
        if version is None and node.domain in ("", "ai.onnx"):
            version = self.opsets.get("ai.onnx", 1)
        opdef = lookup(node.domain, node.op_type, version or 1)
        where = f"node {node.name!r} ({node.op_type}, {node.domain or 'ai.onnx'} opset {version})"
        if opdef is None:
            raise UnsupportedOpError(f"{where}: op type {node.op_type!r} of domain "
                                     f"{node.domain or 'ai.onnx'!r} is not supported by polyjit")
        ins = []
        for n in node.input:
            if n and n not in env:
                raise OnnxError(f"{where}: input {n!r} is not produced by any earlier node, "
                                "graph input or initializer (a dangling input)")
            ins.append(env[n] if n else None)
        ctx = NodeCtx(node, version, self, node_attributes(node, version, where))
        ctx.env = env
        outs = self._call(opdef, ctx, ins, where)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for name, val in zip(node.output, outs):
            if name:
                env[name] = val
        if len([n for n in node.output if n]) and len(outs) < len(node.output):
            wanted = [n for n in node.output[len(outs):] if n]
            if wanted:
                raise OnnxError(f"{where}: produces {len(outs)} outputs, the node asks for "
                                f"{len(node.output)}")

    def _call(self, opdef, ctx, ins, where):
        # subgraph ops (If/Loop/Scan) decide for themselves; they may close over tracers
        fold = (opdef.fold and all(map(is_known, ins))
                and not any(a.type in (5, 10) for a in ctx.node.attribute))   # GRAPH(S)
        try:
            if fold:
                with eager():
                    return to_host(opdef.fn(ctx, *ins))
            return opdef.fn(ctx, *ins)
        except OnnxError as e:
            if str(e).startswith("node "):   # this node's (ctx.fail) or a subgraph node's
                raise
            raise OnnxError(f"{where}: {e}") from e
        except core.ConcretizationError as e:
            raise OnnxError(f"{where}: needs a value known at trace time ({e})") from e
        except (ValueError, TypeError, IndexError, NotImplementedError) as e:
            raise OnnxError(f"{where}: {type(e).__name__}: {e}") from e


_SCHEMAS: dict = {}


def _schema(domain, op_type, version):
    """The installed onnx's schema of an op at an opset (None where it has none)."""
    key = (domain or "", op_type, version)
    if key not in _SCHEMAS:
        try:
            _SCHEMAS[key] = onnx.defs.get_schema(op_type, int(version), domain or "")
        except Exception:   # a contrib domain, an unknown op or opset
            _SCHEMAS[key] = None
    return _SCHEMAS[key]


def node_attributes(node, version, where) -> dict:
    """A node's attributes as Python values, each checked against the op's schema: a type
    other than the declared one (a damaged or hand-edited file) is an error naming the node
    and the attribute, not a TypeError from deep inside the op."""
    schema = _schema(node.domain, node.op_type, version)
    try:
        if schema is not None:
            for a in node.attribute:
                want = schema.attributes.get(a.name)
                if want is not None and attr_kind(a) != int(want.type):
                    raise OnnxError(f"attribute {a.name!r} has type "
                                    f"{attr_type_name(attr_kind(a))}, but {node.op_type} "
                                    f"declares it {want.type.name}")
        return attributes(node)
    except OnnxError as e:
        if str(e).startswith("node "):
            raise
        raise OnnxError(f"{where}: {e}") from None


def needed_static_inputs(graph) -> set:
    """Names of graph inputs whose values the graph needs at trace time."""
    return needed_static_names(graph) & {i.name for i in graph.input}


def needed_static_names(graph) -> set:
    """Names of values the graph needs at trace time (shape operands, inputs of ops with
    data-dependent output sizes), found by walking back from static operand positions."""
    producers = {o: n for n in graph.node for o in n.output if o}
    need, stack = set(), []
    # string tensors are host values (see ops/strings.py): always known at trace time
    stack += [i.name for i in graph.input
              if i.type.WhichOneof("value") == "tensor_type" and i.type.tensor_type.elem_type == 8]
    for n in graph.node:
        opdef = OPS.get((n.domain or "", n.op_type))
        if opdef is None:
            continue
        pos = range(len(n.input)) if opdef.static == "all" else opdef.static
        if n.op_type in ("If", "Loop") and not n.domain and (_non_tensor_outputs(n)
                                                              or _loop_scans(n)):
            pos = (0,) if n.op_type == "If" else (0, 1)   # structure depends on them
        stack += [n.input[i] for i in pos if i < len(n.input) and n.input[i]]
    while stack:
        name = stack.pop()
        if name in need:
            continue
        need.add(name)
        p = producers.get(name)
        if p is not None and p.op_type not in ("Shape", "Size"):
            stack += [i for i in p.input if i] + sorted(captured_names(p))
    return need


def _non_tensor_outputs(node) -> bool:
    """Whether an If/Loop's subgraphs output sequences or optionals: their structure
    (length, presence) must be fixed at trace time, so the condition / trip count must be
    known then."""
    for a in node.attribute:
        if a.type == 5 and any(o.type.WhichOneof("value") in ("sequence_type", "optional_type")
                               for o in a.g.output):
            return True
    return False


def _loop_scans(node) -> bool:
    """Whether a Loop has scan outputs (whose length its trip count and condition set)."""
    if node.op_type != "Loop":
        return False
    body = next((a.g for a in node.attribute if a.name == "body"), None)
    return body is not None and len(body.output) - 1 - (len(node.input) - 2) > 0


def captured_names(node) -> set:
    """Outer-scope names that a node's subgraphs (If/Loop/Scan bodies) read."""
    out = set()
    for a in node.attribute:
        for g in ([a.g] if a.type == 5 else list(a.graphs) if a.type == 10 else []):
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                out |= {i for i in n.input if i and i not in local}
                out |= captured_names(n) - local
                local |= set(n.output)
            out |= {o.name for o in g.output if o.name not in local}
    return out
