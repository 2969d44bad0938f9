"""TFLite flatbuffers as traced polyjit functions.

The flatbuffer is read with the `tflite` package (generated flatbuffers code for the TFLite
schema). Each operator becomes pnp/lax ops in NHWC layout, so `Model.fn(params, *inputs)`
traces into one jaxpr. Constant tensors become params (FP16 weights kept as float16 until
their DEQUANTIZE op; sparse weights densified at load; int8/uint8 weights with per-tensor
or per-channel scales dequantized at load).

Quantized activations are simulated in float: a quantized tensor's value is carried as its
real number, snapped to its grid (round, clamp to the integer range) after the op that
makes it; quantized graph inputs are dequantized and quantized outputs are returned as
integers. This matches TFLite's integer kernels to within one quantization step.

Stateful models: variable tensors (`is_variable`, and resource variables through
VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE) live in a state dict the Model carries
between calls; `fn(params, *inputs)` stays pure by taking and returning the state in
`params["__state__"]` when the model has any.
"""
from __future__ import annotations

import numpy as np

from .. import FormatError, Model, TensorSpec
from ... import numpy as pnp

_SMALL_STATIC = 4096   # constant int tensors up to this size stay host numpy (shapes, axes)


def _tfl():
    try:
        import tflite
    except ImportError as e:  # pragma: no cover
        raise ImportError("reading TFLite needs the `tflite` package (pip install polyjit[formats])") from e
    return tflite


def _enum_names(cls):
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8,
             "INT64": np.int64, "BOOL": np.bool_, "INT16": np.int16, "INT8": np.int8,
             "FLOAT64": np.float64, "UINT32": np.uint32, "UINT16": np.uint16, "UINT64": np.uint64}


# ---------------------------------------------------------------- parsing

class Tensor:
    __slots__ = ("index", "name", "shape", "signature", "type", "dtype", "data", "scale",
                 "zero_point", "qdim", "is_variable", "sparsity")

    @property
    def quantized(self):
        return self.scale is not None and self.dtype is not None and np.dtype(self.dtype).kind in "iu"


class Op:
    __slots__ = ("name", "custom", "inputs", "outputs", "options", "custom_options", "intermediates")


class Subgraph:
    def __init__(self, name, tensors, ops, inputs, outputs):
        self.name, self.tensors, self.ops, self.inputs, self.outputs = name, tensors, ops, inputs, outputs


class TFLiteFile:
    """Subgraphs, tensors and operators of a .tflite flatbuffer, validated."""

    def __init__(self, data: bytes):
        tfl = _tfl()
        self.data = data
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise FormatError(f"tflite: missing TFL3 identifier at offset 4 (got {data[4:8]!r})")
        try:
            self.model = tfl.Model.GetRootAsModel(data, 0)
            self._parse(tfl)
        except FormatError:
            raise
        except Exception as e:   # flatbuffers raises struct / index errors on damaged input
            raise FormatError(f"tflite: damaged flatbuffer ({len(data)} bytes): {type(e).__name__}: {e}") from None

    def _parse(self, tfl):
        m = self.model
        self.version = m.Version()
        self.description = (m.Description() or b"").decode("utf-8", "replace")
        self.op_names = _enum_names(tfl.BuiltinOperator)
        self.type_names = _enum_names(tfl.TensorType)
        self.options_names = _enum_names(tfl.BuiltinOptions)
        self.opcodes = []
        for i in range(m.OperatorCodesLength()):
            oc = m.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = self.op_names.get(code, f"BUILTIN_{code}")
            custom = oc.CustomCode().decode("utf-8", "replace") if name == "CUSTOM" and oc.CustomCode() else None
            self.opcodes.append((name, custom))
        self.subgraphs = [self._subgraph(tfl, m.Subgraphs(s)) for s in range(m.SubgraphsLength())]
        if not self.subgraphs:
            raise FormatError("tflite: model has no subgraphs")

    def _buffer(self, index):
        m = self.model
        if index <= 0 or index >= m.BuffersLength():
            return None
        b = m.Buffers(index)
        off, size = (b.Offset(), b.Size()) if hasattr(b, "Offset") else (0, 0)
        if off > 1:   # large models keep buffers after the flatbuffer
            if off + size > len(self.data):
                raise FormatError(f"tflite: buffer {index} at offset {off}..{off + size} runs past the "
                                  f"end of the {len(self.data)}-byte file (truncated?)")
            return self.data[off:off + size]
        if b.DataLength() == 0:
            return None
        raw = b.DataAsNumpy()
        return raw.tobytes()

    def _subgraph(self, tfl, g):
        tensors = [self._tensor(tfl, g.Tensors(i), i) for i in range(g.TensorsLength())]
        ops = []
        for i in range(g.OperatorsLength()):
            o = g.Operators(i)
            op = Op()
            idx = o.OpcodeIndex()
            if idx >= len(self.opcodes):
                raise FormatError(f"tflite: operator {i} uses opcode index {idx} of {len(self.opcodes)}")
            op.name, op.custom = self.opcodes[idx]
            op.inputs = [int(t) for t in (o.InputsAsNumpy() if o.InputsLength() else [])]
            op.outputs = [int(t) for t in (o.OutputsAsNumpy() if o.OutputsLength() else [])]
            for t in op.inputs + op.outputs:
                if not -1 <= t < len(tensors) or (t < 0 and t in op.outputs):   # -1: an omitted input
                    raise FormatError(f"tflite: operator {i} ({op.name}) refers to tensor {t} of {len(tensors)}")
            op.options = self._options(tfl, o)
            op.custom_options = o.CustomOptionsAsNumpy().tobytes() if o.CustomOptionsLength() else b""
            ops.append(op)
        ins = [int(t) for t in (g.InputsAsNumpy() if g.InputsLength() else [])]
        outs = [int(t) for t in (g.OutputsAsNumpy() if g.OutputsLength() else [])]
        for kind, ids in (("input", ins), ("output", outs)):
            for t in ids:
                if not 0 <= t < len(tensors):
                    raise FormatError(f"tflite: subgraph {kind} refers to tensor {t} of {len(tensors)}")
        return Subgraph((g.Name() or b"").decode("utf-8", "replace"), tensors, ops, ins, outs)

    def _tensor(self, tfl, t, i):
        x = Tensor()
        x.index = i
        x.name = (t.Name() or b"").decode("utf-8", "replace")
        x.shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        x.signature = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else x.shape
        x.type = self.type_names.get(t.Type(), str(t.Type()))
        x.dtype = _NP_TYPES.get(x.type)
        x.is_variable = bool(t.IsVariable())
        x.scale = x.zero_point = None
        x.qdim = 0
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            x.scale = q.ScaleAsNumpy().astype(np.float32)
            x.zero_point = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(len(x.scale), np.int64)
            x.qdim = q.QuantizedDimension()
        x.sparsity = t.Sparsity()
        raw = self._buffer(t.Buffer())
        x.data = None
        if raw is not None:
            x.data = self._array(x, raw)
        return x

    def _array(self, x, raw):
        if x.dtype is None:
            if x.type == "STRING":
                return None
            raise FormatError(f"tflite: tensor {x.name!r} has unsupported type {x.type}")
        item = np.dtype(x.dtype).itemsize
        if x.sparsity is not None:
            return _densify(x, np.frombuffer(raw, x.dtype))
        n = int(np.prod(x.shape, dtype=np.int64))
        if n * item != len(raw):
            raise FormatError(f"tflite: tensor {x.name!r} {x.type}{list(x.shape)} needs {n * item} bytes, "
                              f"its buffer has {len(raw)}")
        return np.frombuffer(raw, x.dtype).reshape(x.shape)

    def _options(self, tfl, o):
        kind = self.options_names.get(o.BuiltinOptionsType(), "NONE")
        table = o.BuiltinOptions()
        if kind == "NONE" or table is None or not hasattr(tfl, kind):
            return {}
        obj = getattr(tfl, kind)()
        obj.Init(table.Bytes, table.Pos)
        out = {}
        for attr in dir(obj):
            if not attr[0].isupper() or attr == "Init" or attr.startswith("GetRoot") or attr.endswith(
                    ("Length", "IsNone", "AsNumpy", "BufferHasIdentifier")):
                continue
            if hasattr(obj, attr + "AsNumpy"):
                v = getattr(obj, attr + "AsNumpy")()
                out[attr] = np.asarray(v).tolist() if not isinstance(v, int) else []
            else:
                try:
                    out[attr] = getattr(obj, attr)()
                except TypeError:
                    continue
        return out


def _densify(x, values):
    """A dense array from TFLite's sparse format (dimension metadata: DENSE or CSR per
    traversal dimension, with traversal order and block map). Vectorized level by level:
    each level expands the positions reached so far, so the work is bounded by the number
    of stored values and the dense size, both checked against the buffer first."""
    sp = x.sparsity
    order = sp.TraversalOrderAsNumpy().tolist() if sp.TraversalOrderLength() else []
    block_map = sp.BlockMapAsNumpy().tolist() if sp.BlockMapLength() else []
    dims = [sp.DimMetadata(i) for i in range(sp.DimMetadataLength())]
    rank = len(x.shape)
    dense_shape = list(x.shape)
    n_dense = int(np.prod(dense_shape, dtype=object))
    n_vals = len(values)
    limit = 16 * n_vals + 4096          # positions any level may reach
    if (n_dense > max(64 * n_vals, 1 << 20) or len(dims) < rank or len(dims) != len(order)
            or len(dims) != rank + len(block_map) or sorted(order) != list(range(len(dims)))
            or any(not 0 <= b < rank for b in block_map) or any(d < 0 for d in dense_shape)):
        # a damaged shape or dense size must not size an allocation or a loop
        raise FormatError(f"tflite: sparse tensor {x.name!r}: shape {dense_shape} does not fit its "
                          f"{n_vals} stored values / metadata")
    block_sizes = [dims[rank + k].DenseSize() for k in range(len(block_map))]
    prev = np.zeros(1, np.int64)       # the index each position passes to the next level
    coords = []                        # per level: the coordinate of every position
    for d, meta in enumerate(dims):
        if meta.Format() == 0:         # DENSE
            n = int(meta.DenseSize())
            if n < 0 or len(prev) * n > limit:
                raise FormatError(f"tflite: sparse tensor {x.name!r}: dense size {n} at level {d} "
                                  f"does not fit its {n_vals} stored values")
            coords = [np.repeat(c, n) for c in coords] + [np.tile(np.arange(n, dtype=np.int64), len(prev))]
            prev = (np.repeat(prev, n) * n + coords[-1]) if n else prev[:0]
        else:                          # SPARSE_CSR
            segments = _index_vector(meta.ArraySegments(), meta.ArraySegmentsType())
            indices = _index_vector(meta.ArrayIndices(), meta.ArrayIndicesType())
            if len(prev) and (prev.max() + 1 >= len(segments)):
                raise FormatError(f"tflite: sparse tensor {x.name!r}: level {d} has {len(segments)} "
                                  f"segments, position {int(prev.max())} needs more")
            starts, stops = segments[prev], segments[prev + 1]
            counts = stops - starts
            total = int(counts.sum()) if len(counts) else 0
            if (counts < 0).any() or (len(stops) and stops.max() > len(indices)) or total > limit:
                raise FormatError(f"tflite: sparse tensor {x.name!r}: inconsistent segments at level {d}")
            k = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(total)
            coords = [np.repeat(c, counts) for c in coords] + [indices[k]]
            prev = k
    n_leaves = len(prev)
    if n_leaves > n_vals:
        raise FormatError(f"tflite: sparse tensor {x.name!r}: metadata places {n_leaves} values, the "
                          f"buffer holds {n_vals}")
    idx = [np.zeros(n_leaves, np.int64) for _ in range(rank)]
    for t, dim in enumerate(order):
        if dim < rank:
            idx[dim] += coords[t] * (block_sizes[block_map.index(dim)] if dim in block_map else 1)
        else:
            idx[block_map[dim - rank]] += coords[t]
    out = np.zeros(n_dense, x.dtype)
    try:
        out[np.ravel_multi_index(idx, dense_shape)] = values[:n_leaves]
    except (IndexError, ValueError) as e:
        raise FormatError(f"tflite: sparse tensor {x.name!r} has inconsistent metadata: {e}") from None
    return out.reshape(dense_shape)


def _index_vector(v, kind):
    """Values of a SparseIndexVector union: 1 Int32Vector, 2 Uint16Vector, 3 Uint8Vector."""
    tfl = _tfl()
    classes = {1: tfl.Int32Vector, 2: tfl.Uint16Vector, 3: tfl.Uint8Vector}
    if v is None or kind not in classes:
        raise FormatError(f"tflite: sparse index vector of unknown type {kind}")
    obj = classes[kind]()
    obj.Init(v.Bytes, v.Pos)
    if obj.ValuesLength() == 0:
        return np.zeros(0, np.int64)
    return obj.ValuesAsNumpy().astype(np.int64)


# ---------------------------------------------------------------- quantization helpers

def _qrange(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def _axis_shape(x: Tensor, ndim):
    shape = [1] * ndim
    if len(x.scale) > 1:
        shape[x.qdim] = len(x.scale)
    return shape


def dequantize_const(x: Tensor) -> np.ndarray:
    s = x.scale.reshape(_axis_shape(x, x.data.ndim)) if x.data.ndim else x.scale[0]
    z = x.zero_point.reshape(_axis_shape(x, x.data.ndim)) if x.data.ndim else x.zero_point[0]
    return ((x.data.astype(np.float64) - z) * s).astype(np.float32)


def _round_away(v):
    return pnp.sign(v) * pnp.floor(pnp.abs(v) + 0.5)


def fake_quant(v, x: Tensor):
    """Snap a float value to tensor x's quantization grid (still a real number)."""
    lo, hi = _qrange(x.dtype)
    nd = len(pnp.shape(v))
    s = pnp.asarray(x.scale.reshape(_axis_shape(x, nd)) if nd else x.scale[0])
    z = pnp.asarray(x.zero_point.astype(np.float32).reshape(_axis_shape(x, nd)) if nd else np.float32(x.zero_point[0]))
    q = pnp.clip(_round_away(v / s) + z, lo, hi)
    return (q - z) * s


def quantize_out(v, x: Tensor):
    nd = len(pnp.shape(v))
    s = pnp.asarray(x.scale.reshape(_axis_shape(x, nd)) if nd else x.scale[0])
    z = pnp.asarray(x.zero_point.astype(np.float32).reshape(_axis_shape(x, nd)) if nd else np.float32(x.zero_point[0]))
    lo, hi = _qrange(x.dtype)
    return pnp.clip(_round_away(v / s) + z, lo, hi).astype(x.dtype)


def dequantize_in(v, x: Tensor):
    nd = len(pnp.shape(v))
    s = pnp.asarray(x.scale.reshape(_axis_shape(x, nd)) if nd else x.scale[0])
    z = pnp.asarray(x.zero_point.astype(np.float32).reshape(_axis_shape(x, nd)) if nd else np.float32(x.zero_point[0]))
    return (pnp.asarray(v).astype(pnp.float32) - z) * s


# ---------------------------------------------------------------- the interpreter

class _Ctx:
    """What an op handler sees: the file, the subgraph, and a way to run other subgraphs."""

    def __init__(self, runner, sub: Subgraph, op: Op):
        self.runner, self.sub, self.op = runner, sub, op

    def static(self, v, what="value"):
        if v is None:
            return None
        try:
            return np.asarray(v)
        except Exception:
            raise FormatError(f"tflite: {self.op.name} needs a constant {what}; this model computes it "
                              "at run time") from None

    def out_tensor(self, k=0) -> Tensor:
        return self.sub.tensors[self.op.outputs[k]]

    def in_tensor(self, k) -> Tensor:
        return self.sub.tensors[self.op.inputs[k]]


class Runner:
    """Runs subgraphs over env values (numpy constants or traced polyjit arrays)."""

    def __init__(self, f: TFLiteFile, ops_table):
        self.f, self.ops = f, ops_table

    def run(self, sub_index, params, inputs, state):
        sub = self.f.subgraphs[sub_index]
        env = {}
        for t in sub.tensors:
            if t.is_variable:
                env[t.index] = state[f"{sub_index}:{t.index}"]
            elif t.data is not None:
                env[t.index] = params.get(f"{sub_index}:{t.index}", t.data) if params is not None else t.data
        if len(inputs) != len(sub.inputs):
            raise TypeError(f"tflite subgraph {sub_index} takes {len(sub.inputs)} inputs, got {len(inputs)}")
        for i, v in zip(sub.inputs, inputs):
            t = sub.tensors[i]
            env[i] = dequantize_in(v, t) if t.quantized else pnp.asarray(v)
        for op in sub.ops:
            self._op(sub, sub_index, op, env, params, state)
        for t in sub.tensors:
            if t.is_variable:
                state[f"{sub_index}:{t.index}"] = env[t.index]
        outs = []
        for i in sub.outputs:
            t = sub.tensors[i]
            outs.append(quantize_out(env[i], t) if t.quantized else env[i])
        return outs

    def _op(self, sub, sub_index, op, env, params, state):
        key = op.custom if op.name == "CUSTOM" else op.name
        handler = self.ops.get(key)
        if handler is None:
            raise FormatError(f"tflite: operator {key} is not supported by polyjit")
        ins = [env.get(i) if i >= 0 else None for i in op.inputs]
        ctx = _Ctx(self, sub, op)
        ctx.params, ctx.state, ctx.sub_index = params, state, sub_index
        outs = handler(ctx, ins, op.options)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for k, (i, v) in enumerate(zip(op.outputs, outs)):
            t = sub.tensors[i]
            if t.quantized and op.name not in ("DEQUANTIZE",):
                v = fake_quant(pnp.asarray(v).astype(pnp.float32), t)
            env[i] = v


# ---------------------------------------------------------------- loading

def _params_and_specs(f: TFLiteFile):
    params, state = {}, {}
    for s, sub in enumerate(f.subgraphs):
        for t in sub.tensors:
            key = f"{s}:{t.index}"
            if t.is_variable:
                init = t.data if t.data is not None else np.zeros(t.shape, t.dtype or np.float32)
                state[key] = dequantize_const(_with(t, init)) if t.quantized else np.asarray(init)
                continue
            if t.data is None:
                continue
            if t.quantized:
                t.data = dequantize_const(t)        # weights become real numbers
                t.scale = None                      # no longer an integer tensor
                t.dtype = np.float32
            small_int = t.data.dtype.kind in "iub" and t.data.size <= _SMALL_STATIC
            if not small_int:
                params[key] = t.data
    return params, state


def _with(t, data):
    t2 = Tensor()
    for k in Tensor.__slots__:
        setattr(t2, k, getattr(t, k))
    t2.data = data
    return t2


def load(src, **_options) -> Model:
    from .. import read_bytes
    from .ops import OPS
    f = TFLiteFile(read_bytes(src))
    params, state = _params_and_specs(f)
    runner = Runner(f, OPS)
    main = f.subgraphs[0]
    stateful = bool(state) or any(op.name in ("VAR_HANDLE", "CALL_ONCE") for s in f.subgraphs for op in s.ops)

    def fn(p, *inputs):
        st = dict(p.get("__state__", {}))
        outs = runner.run(0, p, list(inputs), st)
        if stateful:       # the new state goes back to the caller: fn stays pure
            return outs, st
        return outs[0] if len(outs) == 1 else outs

    from ...backends import device_put
    dev = {k: device_put(v) for k, v in params.items()}
    if stateful:
        dev["__state__"] = {k: device_put(v) for k, v in state.items()}
    model = _StatefulModel(fn=fn, params=dev, format="tflite",
                           inputs=[_spec(main.tensors[i]) for i in main.inputs],
                           outputs=[_spec(main.tensors[i]) for i in main.outputs],
                           metadata={"description": f.description, "version": f.version,
                                     "stateful": stateful})
    model.file = f
    return model


class _StatefulModel(Model):
    """Calling a stateful model carries its variable tensors to the next call."""

    def __call__(self, *inputs):
        out = super().__call__(*inputs)
        if self.metadata.get("stateful"):
            outs, st = out
            self.params = {**self.params, "__state__": st}
            return outs[0] if len(outs) == 1 else outs
        return out


def _spec(t: Tensor):
    shape = tuple(d if d >= 0 else "?" for d in t.signature)
    return TensorSpec(t.name, shape, t.type)


def inspect(src) -> dict:
    from .. import read_bytes
    from collections import Counter
    f = TFLiteFile(read_bytes(src))
    subs = []
    for sub in f.subgraphs:
        hist = Counter(op.custom and f"CUSTOM:{op.custom}" or op.name for op in sub.ops)
        types = Counter(t.type for t in sub.tensors)
        quant = Counter(("per-channel" if len(t.scale) > 1 else "per-tensor") + f" {t.type}"
                        for t in sub.tensors if t.scale is not None)
        qtensors = [{"name": t.name, "type": t.type, "shape": list(t.shape),
                     "granularity": "per-channel" if len(t.scale) > 1 else "per-tensor",
                     "axis": int(t.qdim) if len(t.scale) > 1 else None, "scales": len(t.scale),
                     "constant": t.data is not None}
                    for t in sub.tensors if t.scale is not None]
        subs.append({"name": sub.name, "ops": len(sub.ops), "op_histogram": dict(hist),
                     "tensor_types": dict(types), "quantization": dict(quant),
                     "quantized_tensors": qtensors,
                     "sparse_tensors": sum(t.sparsity is not None for t in sub.tensors),
                     "variables": sum(t.is_variable for t in sub.tensors),
                     "inputs": [(sub.tensors[i].name, list(sub.tensors[i].signature), sub.tensors[i].type) for i in sub.inputs],
                     "outputs": [(sub.tensors[i].name, list(sub.tensors[i].signature), sub.tensors[i].type) for i in sub.outputs]})
    from .._summary import io_entry, weights_summary
    from .ops import OPS
    consts = [(t.name, t.type, t.shape, t.data.nbytes) for sb in f.subgraphs for t in sb.tensors if t.data is not None]
    hist = Counter()
    for sb in subs:
        hist.update(sb["op_histogram"])
    main = f.subgraphs[0]
    unsupported = sorted({op.custom or op.name for sb in f.subgraphs for op in sb.ops
                          if (op.custom if op.name == "CUSTOM" else op.name) not in OPS})
    return {**weights_summary(consts), "op_histogram": dict(hist), "nodes": sum(len(sb.ops) for sb in f.subgraphs),
            "inputs": [io_entry(main.tensors[i].name, main.tensors[i].type, main.tensors[i].signature) for i in main.inputs],
            "outputs": [io_entry(main.tensors[i].name, main.tensors[i].type, main.tensors[i].signature) for i in main.outputs],
            "compatible": not unsupported, "unsupported_ops": unsupported,
            "version": f.version, "description": f.description, "subgraphs": subs,
            "parameters": int(sum(t.data.size for s in f.subgraphs for t in s.tensors if t.data is not None))}
