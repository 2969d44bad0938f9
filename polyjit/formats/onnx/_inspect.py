"""`inspect`: a summary of an ONNX file without running it."""
from __future__ import annotations

import collections

import numpy as np
import onnx

from ._proto import elem_dtype, parse_model, value_info_spec
from .ops import lookup


def _tensor_nbytes(t: onnx.TensorProto) -> int:
    n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    dt = elem_dtype(t.data_type)
    return n * (dt.itemsize if dt is not None else 1)


def _all_nodes(graph):
    for n in graph.node:
        yield n
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _all_nodes(g)


def _weights(graph):
    """(name, shape, dtype name, bytes) of initializers and Constant-node tensors."""
    out = [(t.name, tuple(t.dims), onnx.TensorProto.DataType.Name(t.data_type), _tensor_nbytes(t))
           for t in graph.initializer]
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    t = a.t
                    out.append((n.output[0], tuple(t.dims),
                                onnx.TensorProto.DataType.Name(t.data_type), _tensor_nbytes(t)))
    return out


def _spec(vi):
    shape, dt = value_info_spec(vi)
    return {"name": vi.name, "shape": None if shape is None else list(shape),
            "dtype": None if dt is None else dt.name}


def inspect_model(path_or_bytes) -> dict:
    model, _ = parse_model(path_or_bytes)
    g = model.graph
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    nodes = list(_all_nodes(g))
    hist = collections.Counter(f"{n.domain + '::' if n.domain not in ('', 'ai.onnx') else ''}"
                               f"{n.op_type}" for n in nodes)
    unsupported = sorted({f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in nodes
                          if lookup(n.domain, n.op_type, 0) is None})
    weights = _weights(g)
    inits = {t.name for t in g.initializer}
    return {
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "ir_version": model.ir_version,
        "opsets": opsets,
        "graph_name": g.name,
        "nodes": len(nodes),
        "params": len(weights),
        "param_elements": int(sum(int(np.prod(s, dtype=np.int64)) for _, s, _, _ in weights)),
        "param_bytes": int(sum(b for *_, b in weights)),
        "inputs": [_spec(i) for i in g.input if i.name not in inits],
        "outputs": [_spec(o) for o in g.output],
        "op_histogram": dict(hist.most_common()),
        "largest_weights": [{"name": n, "shape": list(s), "dtype": d, "bytes": b}
                            for n, s, d, b in sorted(weights, key=lambda w: -w[3])[:20]],
        "unsupported_ops": unsupported,
        "compatible": not unsupported,
    }
