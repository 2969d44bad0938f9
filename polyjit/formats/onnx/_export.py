"""`export`: a polyjit function traced to a jaxpr (`pj.make_jaxpr`), written as ONNX.

Each primitive maps to one or a few ONNX (opset 18) nodes; constants and literals become
initializers. A primitive without a mapping raises an error naming it.
"""
from __future__ import annotations

import string

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...tracer.core import Literal
from ...tracer.jit import make_jaxpr
from ._proto import OnnxError

OPSET = 18

_UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid",
          "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil",
          "round": "Round", "sin": "Sin", "cos": "Cos", "tan": "Tan", "erf": "Erf",
          "not": "Not", "asin": "Asin", "acos": "Acos", "atan": "Atan", "sinh": "Sinh",
          "cosh": "Cosh", "is_finite": None}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
           "pow": "Pow", "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
           "ge": "GreaterOrEqual", "and": "And", "or": "Or", "xor": "Xor"}
_REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin",
           "reduce_prod": "ReduceProd"}


class _Writer:
    def __init__(self):
        self.nodes, self.inits, self.names, self.count = [], [], {}, 0

    def fresh(self, hint="t"):
        self.count += 1
        return f"{hint}{self.count}"

    def const(self, value, hint="c"):
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def name(self, v):
        if isinstance(v, Literal):
            return self.const(v.val)
        return self.names[v]

    def node(self, op, ins, n_out=1, **attrs):
        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, ins, outs, name=outs[0], **attrs))
        return outs if n_out > 1 else outs[0]


def _ints(xs):
    return np.asarray(list(xs), np.int64)


def _dot_general(w, eqn, a, b):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    la, ra = eqn.inputs[0].aval.ndim, eqn.inputs[1].aval.ndim
    letters = iter(string.ascii_letters)
    ls = [None] * la
    rs = [None] * ra
    for i, j in zip(lb, rb):
        ls[i] = rs[j] = next(letters)
    for i, j in zip(lc, rc):
        ls[i] = rs[j] = next(letters)
    for i in range(la):
        ls[i] = ls[i] or next(letters)
    for j in range(ra):
        rs[j] = rs[j] or next(letters)
    out = ([ls[i] for i in lb] + [ls[i] for i in range(la) if i not in lb and i not in lc]
           + [rs[j] for j in range(ra) if j not in rb and j not in rc])
    eq = f"{''.join(ls)},{''.join(rs)}->{''.join(out)}"
    return w.node("Einsum", [a, b], equation=eq)


def _emit(w, eqn, ins):
    p, name = eqn.params, eqn.prim.name
    out_aval = eqn.outputs[0].aval
    if name in _UNARY and _UNARY[name]:
        return w.node(_UNARY[name], ins)
    if name in _BINARY:
        return w.node(_BINARY[name], ins)
    if name == "ne":
        return w.node("Not", [w.node("Equal", ins)])
    if name == "rsqrt":
        return w.node("Reciprocal", [w.node("Sqrt", ins)])
    if name == "square":
        return w.node("Mul", [ins[0], ins[0]])
    if name == "integer_pow":
        return w.node("Pow", [ins[0], w.const(np.asarray(p["y"], eqn.inputs[0].aval.dtype))])
    if name == "rem":
        return w.node("Mod", ins, fmod=1)
    if name == "expm1":
        return w.node("Sub", [w.node("Exp", ins), w.const(np.asarray(1, out_aval.dtype))])
    if name == "log1p":
        return w.node("Log", [w.node("Add", [ins[0], w.const(np.asarray(1, out_aval.dtype))])])
    if name == "select_n" and len(ins) == 3:
        pred = ins[0]
        if eqn.inputs[0].aval.dtype != np.bool_:
            pred = w.node("Cast", [pred], to=onnx.TensorProto.BOOL)
        return w.node("Where", [pred, ins[2], ins[1]])
    if name == "convert_element_type":
        return w.node("Cast", ins, to=helper.np_dtype_to_tensor_dtype(np.dtype(p["new_dtype"])))
    if name == "broadcast_in_dim":
        shape, bd = p["shape"], p["broadcast_dimensions"]
        src = eqn.inputs[0].aval.shape
        inter = [src[bd.index(i)] if i in bd else 1 for i in range(len(shape))]
        r = w.node("Reshape", [ins[0], w.const(_ints(inter))])
        return w.node("Expand", [r, w.const(_ints(shape))])
    if name == "reshape":
        return w.node("Reshape", [ins[0], w.const(_ints(p["new_sizes"]))])
    if name == "transpose":
        return w.node("Transpose", ins, perm=list(p["permutation"]))
    if name == "rev":
        n = eqn.inputs[0].aval.ndim
        d = list(p["dimensions"])
        return w.node("Slice", [ins[0], w.const(_ints([-1] * len(d))),
                                w.const(_ints([np.iinfo(np.int64).min] * len(d))),
                                w.const(_ints(d)), w.const(_ints([-1] * len(d)))])
    if name == "slice":
        n = len(p["start_indices"])
        return w.node("Slice", [ins[0], w.const(_ints(p["start_indices"])),
                                w.const(_ints(p["limit_indices"])), w.const(_ints(range(n))),
                                w.const(_ints(p["strides"]))])
    if name == "concatenate":
        return w.node("Concat", ins, axis=p["dimension"])
    if name == "pad":
        cfg = p["padding_config"]
        if any(i for _, _, i in cfg):
            raise OnnxError("export: interior padding has no ONNX equivalent")
        pads = [lo for lo, _, _ in cfg] + [hi for _, hi, _ in cfg]
        return w.node("Pad", [ins[0], w.const(_ints(pads)), ins[1]])
    if name in _REDUCE:
        return w.node(_REDUCE[name], [ins[0], w.const(_ints(p["axes"]))], keepdims=0)
    if name in ("argmax", "argmin"):
        r = w.node("ArgMax" if name == "argmax" else "ArgMin", ins, axis=p["axis"], keepdims=0)
        return w.node("Cast", [r], to=helper.np_dtype_to_tensor_dtype(np.dtype(p["index_dtype"])))
    if name == "cumsum" and not p.get("reverse"):
        return w.node("CumSum", [ins[0], w.const(np.asarray(p["axis"], np.int64))])
    if name == "iota":
        return w.const(np.broadcast_to(np.arange(p["shape"][p["dimension"]], dtype=p["dtype"]).reshape(
            [-1 if i == p["dimension"] else 1 for i in range(len(p["shape"]))]), p["shape"]).copy())
    if name == "dot_general":
        return _dot_general(w, eqn, *ins)
    if name == "conv_general_dilated":
        if p["batch_group_count"] != 1 or any(d != 1 for d in p["lhs_dilation"]):
            raise OnnxError("export: transposed / batch-grouped convolutions are not supported")
        pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
        return w.node("Conv", ins, strides=list(p["window_strides"]), pads=pads,
                      dilations=list(p["rhs_dilation"]), group=p["feature_group_count"])
    if name == "reduce_window_max":
        return _pool(w, eqn, ins, "MaxPool")
    if name == "reduce_window_sum":
        avg = _pool(w, eqn, ins, "AveragePool", count_include_pad=1)
        k = int(np.prod(p["window_dimensions"]))
        return w.node("Mul", [avg, w.const(np.asarray(k, out_aval.dtype))])
    raise OnnxError(f"export: primitive {name!r} has no ONNX mapping yet")


def _pool(w, eqn, ins, op, **extra):
    p = eqn.params
    win, st, pad = p["window_dimensions"], p["window_strides"], p["padding"]
    if win[:2] != (1, 1) or st[:2] != (1, 1) or any(pad[:2][i] != (0, 0) for i in range(2)) \
            or any(d != 1 for d in p["base_dilation"]):
        raise OnnxError(f"export: {eqn.prim.name} must pool trailing spatial dims only")
    pads = [lo for lo, _ in pad[2:]] + [hi for _, hi in pad[2:]]
    return w.node(op, ins, kernel_shape=list(win[2:]), strides=list(st[2:]), pads=pads,
                  dilations=list(p["window_dilation"][2:]), **extra)


def export(fn, example_args, path=None, *, name="polyjit"):
    """Trace fn(*example_args) and write it as an ONNX model (bytes returned; written to
    `path` when given). Inputs are named x0, x1, ... after the flattened arguments."""
    from ...tracer.tree_util import tree_flatten
    closed = make_jaxpr(fn)(*example_args)
    j = closed.jaxpr
    w = _Writer()
    inputs = []
    for i, v in enumerate(j.invars):
        w.names[v] = f"x{i}"
        inputs.append(helper.make_tensor_value_info(
            f"x{i}", helper.np_dtype_to_tensor_dtype(v.aval.dtype), list(v.aval.shape)))
    for v, c in zip(j.constvars, closed.consts):
        w.names[v] = w.const(np.asarray(c), "const")
    for eqn in j.eqns:
        ins = [w.name(x) for x in eqn.inputs]
        out = _emit(w, eqn, ins)
        w.names[eqn.outputs[0]] = out
    outputs = []
    for i, v in enumerate(j.outvars):
        src = w.name(v)
        w.nodes.append(helper.make_node("Identity", [src], [f"y{i}"], name=f"out{i}"))
        outputs.append(helper.make_tensor_value_info(
            f"y{i}", helper.np_dtype_to_tensor_dtype(v.aval.dtype), list(v.aval.shape)))
    graph = helper.make_graph(w.nodes, name, inputs, outputs, w.inits)
    model = helper.make_model(graph, producer_name="polyjit",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data
