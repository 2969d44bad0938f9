"""ONNX models as polyjit functions: `load` (a graph becomes `fn(params, *inputs)` over
polyjit ops, so it traces, jits and differentiates), `inspect` (a report) and `export`
(a jaxpr written as an ONNX model).

Loading only decodes protobuf messages; nothing from the file is executed.
"""
from __future__ import annotations

import numpy as np
import onnx

from .. import Model, TensorSpec
from ._proto import OnnxError, UnsupportedOpError, parse_model, tensor_to_numpy, value_info_spec
from ._graph import Interpreter, needed_static_inputs, needed_static_names
from .ops import lookup, supported_ops

__all__ = ["load", "inspect", "export", "OnnxError", "UnsupportedOpError", "supported_ops"]

# A Constant node's value becomes a parameter (trainable, kept on device) when it is a
# floating-point tensor with at least this many elements; smaller ones and integer ones
# (shapes, indices, axes) stay inline so shape computations remain static.
PARAM_MIN_SIZE = 16


def _opsets(model):
    ops = {}
    for o in model.opset_import:
        ops["" if o.domain in ("", "ai.onnx") else o.domain] = int(o.version)
    ops.setdefault("", 1)
    return ops


def _is_param(arr: np.ndarray) -> bool:
    """Floating-point initializers are parameters; integer ones only when large (quantized
    weights, tables), since small ones are shapes, axes and indices."""
    if arr.dtype.kind in "OUS":   # strings are host values, never parameters
        return False
    if np.issubdtype(arr.dtype, np.floating) or arr.dtype.name == "bfloat16":
        return True
    return arr.size >= 1024


def _check_graph(graph, opsets):
    """Fail early (and clearly) on dangling names and unsupported ops, with the node."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    unsupported = []
    for node in graph.node:
        where = (f"node {node.name!r} ({node.op_type}, {node.domain or 'ai.onnx'} opset "
                 f"{opsets.get(node.domain or '', opsets.get(''))})")
        for n in node.input:
            if n and n not in known:
                raise OnnxError(f"{where}: input {n!r} is not produced by any earlier node, "
                                "graph input or initializer (a dangling input, or nodes out "
                                "of topological order)")
        if lookup(node.domain, node.op_type, 0) is None:
            unsupported.append(where)
        known.update(o for o in node.output if o)
    if unsupported:
        raise UnsupportedOpError("unsupported op types: " + "; ".join(unsupported[:10])
                                 + (f" (and {len(unsupported) - 10} more)" if len(unsupported) > 10 else ""))
    missing = [o.name for o in graph.output if o.name not in known]
    if missing:
        raise OnnxError(f"graph outputs {missing} are produced by no node")


def load(path_or_bytes, *, base_dir=None, param_min_size=None, static_inputs=None) -> Model:
    """An ONNX model as a `Model`.

    params: initializers and large floating-point Constant nodes, keyed by name.
    fn(params, *inputs): the graph over polyjit ops; returns one array, or a tuple when the
    graph has several outputs. Symbolic dimensions take the sizes of the arrays passed in.
    base_dir: where external data files live (default: the model file's directory).
    static_inputs: {input name: value} baked in as constants (for inputs the graph needs
    at trace time, like a Reshape's target shape fed as a graph input).
    """
    model, file_dir = parse_model(path_or_bytes)
    base = base_dir or file_dir
    opsets = _opsets(model)
    graph = model.graph
    _check_graph(graph, opsets)
    limit = PARAM_MIN_SIZE if param_min_size is None else param_min_size
    params, consts = {}, {}
    need_static = needed_static_names(graph)
    for t in graph.initializer:
        arr = tensor_to_numpy(t, base)
        (params if _is_param(arr) and t.name not in need_static else consts)[t.name] = arr
    param_nodes = set()   # output names of Constant nodes whose value is in params
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    try:
                        arr = tensor_to_numpy(a.t, base)
                    except OnnxError as e:
                        raise OnnxError(f"node {node.name!r} (Constant, ai.onnx opset "
                                        f"{opsets['']}): attribute 'value': {e}") from None
                    if (np.issubdtype(arr.dtype, np.floating) and arr.size >= limit
                            and node.output[0] not in need_static):
                        params[node.output[0]] = arr
                        param_nodes.add(node.output[0])
    init_names = {t.name for t in graph.initializer}
    static = dict(static_inputs or {})
    in_infos = [i for i in graph.input if i.name not in init_names and i.name not in static]
    inputs = [TensorSpec(i.name, *value_info_spec(i)) for i in in_infos]
    outputs = [TensorSpec(o.name, *value_info_spec(o)) for o in graph.output]
    interp = Interpreter(opsets, base, frozenset(param_nodes))
    # the graph is stored without initializers: the interpreter gets them from params/consts
    stripped = onnx.GraphProto()
    stripped.CopyFrom(graph)
    del stripped.initializer[:]
    fixed = {**consts, **{k: v if v is None or isinstance(v, (list, tuple)) else np.asarray(v)
                          for k, v in static.items()}}
    single = len(outputs) == 1

    def fn(params, *args):
        if len(args) != len(inputs):
            raise OnnxError(f"the model takes {len(inputs)} inputs "
                            f"({', '.join(s.name for s in inputs)}), got {len(args)}")
        _bind_dims(inputs, args)
        preset = {**fixed, **params}
        outs = interp.run(stripped, list(args), preset=preset)
        return outs[0] if single else tuple(outs)

    meta = {"producer": f"{model.producer_name} {model.producer_version}".strip(),
            "ir_version": model.ir_version, "opsets": opsets, "graph": graph.name,
            "doc": model.doc_string, "constants": consts,
            "static_inputs_needed": sorted(needed_static_inputs(graph)),
            "metadata_props": {p.key: p.value for p in model.metadata_props}}
    return Model(fn, params, inputs, outputs, meta, "onnx")


def _bind_dims(specs, args):
    """Check arguments against declared shapes; each symbolic dim binds to one size."""
    from ...tracer.core import get_aval
    bound = {}
    for spec, a in zip(specs, args):
        if spec.shape is None or a is None or isinstance(a, (list, tuple)):
            continue   # sequences and optionals (or no declared shape)
        shape = get_aval(a).shape
        if len(shape) != len(spec.shape):
            raise OnnxError(f"input {spec.name!r} expects rank {len(spec.shape)} "
                            f"(shape {spec.shape}), got shape {shape}")
        for want, got in zip(spec.shape, shape):
            if isinstance(want, str) and want != "?" and not want.startswith("unk__"):
                if bound.setdefault(want, got) != got:
                    raise OnnxError(f"input {spec.name!r}: symbolic dimension {want!r} is "
                                    f"{got} here but {bound[want]} in an earlier input")
            elif isinstance(want, int) and want not in (0,) and want != got:
                raise OnnxError(f"input {spec.name!r} expects shape {spec.shape}, got {shape}")


def inspect(path_or_bytes) -> dict:
    from ._inspect import inspect_model
    return inspect_model(path_or_bytes)


def export(fn, example_args, path=None, **options):
    from ._export import export as _export
    return _export(fn, example_args, path, **options)
