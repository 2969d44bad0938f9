"""A tiny TFLite flatbuffer writer for tests: single-op float and quantized models that
ai-edge-litert (the reference) and polyjit both run. Slot numbers follow TFLite's
schema.fbs; the parser reading them back is checked in the tests."""
import flatbuffers
import numpy as np
import tflite

OPT_SLOTS = {  # options table -> {field: (slot, kind)}; kinds: b(yte) i(nt32) f(loat) B(ool) s(tring)
    #              v (vector of int32)
    "Conv2DOptions": {"padding": (0, "b"), "stride_w": (1, "i"), "stride_h": (2, "i"), "act": (3, "b"),
                      "dilation_w": (4, "i"), "dilation_h": (5, "i")},
    "DepthwiseConv2DOptions": {"padding": (0, "b"), "stride_w": (1, "i"), "stride_h": (2, "i"),
                               "depth_multiplier": (3, "i"), "act": (4, "b")},
    "FullyConnectedOptions": {"act": (0, "b"), "keep_num_dims": (2, "B")},
    "AddOptions": {"act": (0, "b")}, "MulOptions": {"act": (0, "b")}, "SubOptions": {"act": (0, "b")},
    "Pool2DOptions": {"padding": (0, "b"), "stride_w": (1, "i"), "stride_h": (2, "i"),
                      "filter_w": (3, "i"), "filter_h": (4, "i"), "act": (5, "b")},
    "ResizeBilinearOptions": {"align_corners": (2, "B"), "half_pixel_centers": (3, "B")},
    "ResizeNearestNeighborOptions": {"align_corners": (0, "B"), "half_pixel_centers": (1, "B")},
    "TransposeConvOptions": {"padding": (0, "b"), "stride_w": (1, "i"), "stride_h": (2, "i")},
    "StridedSliceOptions": {"begin_mask": (0, "i"), "end_mask": (1, "i"), "ellipsis_mask": (2, "i"),
                            "new_axis_mask": (3, "i"), "shrink_axis_mask": (4, "i")},
    "SoftmaxOptions": {"beta": (0, "f")}, "ReducerOptions": {"keep_dims": (0, "B")},
    "ConcatenationOptions": {"axis": (0, "i"), "act": (1, "b")},
    "GatherOptions": {"axis": (0, "i")}, "SplitOptions": {"num_splits": (0, "i")},
    "SplitVOptions": {"num_splits": (0, "i")},
    "LeakyReluOptions": {"alpha": (0, "f")}, "DepthToSpaceOptions": {"block_size": (0, "i")},
    "PackOptions": {"values_count": (0, "i"), "axis": (1, "i")},
    "VarHandleOptions": {"container": (0, "s"), "shared_name": (1, "s")},
    "CallOnceOptions": {"init_subgraph_index": (0, "i")}, "MirrorPadOptions": {"mode": (0, "b")},
    "CumsumOptions": {"exclusive": (0, "B"), "reverse": (1, "B")},
    "SqueezeOptions": {"squeeze_dims": (0, "v")}, "ReshapeOptions": {"new_shape": (0, "v")},
    "CastOptions": {"in_data_type": (0, "b"), "out_data_type": (1, "b")}, "PadV2Options": {},
    "TransposeOptions": {}, "PadOptions": {},
    "MaximumMinimumOptions": {}, "HardSwishOptions": {}, "QuantizeOptions": {}, "DequantizeOptions": {},
    "GeluOptions": {"approximate": (0, "B")}, "ExpandDimsOptions": {}, "SliceOptions": {},
    "TileOptions": {}, "ArgMaxOptions": {"output_type": (0, "b")}, "BatchMatMulOptions": {},
}
NP_TYPE = {np.float32: "FLOAT32", np.int32: "INT32", np.int8: "INT8", np.uint8: "UINT8",
           np.float16: "FLOAT16", np.int64: "INT64", np.bool_: "BOOL"}


class Net:
    def __init__(self):
        self.subgraphs = [{"tensors": [], "ops": [], "inputs": [], "outputs": []}]
        self.cur = 0
        self.buffers = [b""]
        self.opcodes = []   # (builtin code, custom code)

    def new_subgraph(self):
        self.subgraphs.append({"tensors": [], "ops": [], "inputs": [], "outputs": []})
        self.cur = len(self.subgraphs) - 1
        return self.cur

    def tensor(self, shape, dtype=np.float32, data=None, scale=None, zero_point=None, qdim=0,
               name=None, type_name=None, variable=False):
        g = self.subgraphs[self.cur]
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(np.asarray(data, dtype)).tobytes())
            buf = len(self.buffers) - 1
        g["tensors"].append(dict(shape=list(shape), type=type_name or NP_TYPE[np.dtype(dtype).type],
                                 buffer=buf, name=name or f"t{len(g['tensors'])}", scale=scale,
                                 zero_point=zero_point, qdim=qdim, variable=variable))
        return len(g["tensors"]) - 1

    def const(self, data, dtype=None, **kw):
        data = np.asarray(data, dtype)
        return self.tensor(data.shape, data.dtype.type, data, **kw)

    def op(self, name, inputs, outputs, options=None, opt_name=None, custom_options=b""):
        code = getattr(tflite.BuiltinOperator, name, 32)
        key = (code, None if code != 32 else name)
        if key not in self.opcodes:
            self.opcodes.append(key)
        self.subgraphs[self.cur]["ops"].append(dict(opcode=self.opcodes.index(key), inputs=inputs,
                                                    outputs=outputs, opt_name=opt_name,
                                                    options=options or {}, custom=custom_options))

    def io(self, inputs, outputs):
        self.subgraphs[self.cur]["inputs"], self.subgraphs[self.cur]["outputs"] = inputs, outputs

    # -- serialisation
    def build(self) -> bytes:
        b = flatbuffers.Builder(1024)
        bufs = [self._buffer(b, d) for d in self.buffers]
        codes = [self._opcode(b, c, cc) for c, cc in self.opcodes]
        subs = [self._subgraph(b, g) for g in self.subgraphs]
        desc = b.CreateString("polyjit test")
        vcodes, vsubs, vbufs = self._vec(b, codes), self._vec(b, subs), self._vec(b, bufs)
        b.StartObject(8)
        b.PrependUint32Slot(0, 3, 0)
        b.PrependUOffsetTRelativeSlot(1, vcodes, 0)
        b.PrependUOffsetTRelativeSlot(2, vsubs, 0)
        b.PrependUOffsetTRelativeSlot(3, desc, 0)
        b.PrependUOffsetTRelativeSlot(4, vbufs, 0)
        b.Finish(b.EndObject(), file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _vec(b, offsets):
        b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    @staticmethod
    def _buffer(b, data):
        vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
        b.StartObject(3)
        if vec is not None:
            b.PrependUOffsetTRelativeSlot(0, vec, 0)
        return b.EndObject()

    @staticmethod
    def _opcode(b, code, custom):
        cs = b.CreateString(custom) if custom else None
        b.StartObject(4)
        b.PrependInt8Slot(0, min(code, 127), 0)
        if cs is not None:
            b.PrependUOffsetTRelativeSlot(1, cs, 0)
        b.PrependInt32Slot(2, 1, 1)
        b.PrependInt32Slot(3, code, 0)
        return b.EndObject()

    def _subgraph(self, b, g):
        tensors = [self._tensor(b, t) for t in g["tensors"]]
        ops = [self._op(b, o) for o in g["ops"]]
        ins = b.CreateNumpyVector(np.asarray(g["inputs"], np.int32))
        outs = b.CreateNumpyVector(np.asarray(g["outputs"], np.int32))
        vt, vo = self._vec(b, tensors), self._vec(b, ops)
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, vt, 0)
        b.PrependUOffsetTRelativeSlot(1, ins, 0)
        b.PrependUOffsetTRelativeSlot(2, outs, 0)
        b.PrependUOffsetTRelativeSlot(3, vo, 0)
        return b.EndObject()

    @staticmethod
    def _tensor(b, t):
        name = b.CreateString(t["name"])
        shape = b.CreateNumpyVector(np.asarray(t["shape"], np.int32))
        q = None
        if t["scale"] is not None:
            sc = b.CreateNumpyVector(np.asarray(t["scale"], np.float32).reshape(-1))
            zp = b.CreateNumpyVector(np.asarray(t["zero_point"], np.int64).reshape(-1))
            b.StartObject(7)
            b.PrependUOffsetTRelativeSlot(2, sc, 0)
            b.PrependUOffsetTRelativeSlot(3, zp, 0)
            b.PrependInt32Slot(6, t["qdim"], 0)
            q = b.EndObject()
        b.StartObject(8)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, getattr(tflite.TensorType, t["type"]), 0)
        b.PrependUint32Slot(2, t["buffer"], 0)
        b.PrependUOffsetTRelativeSlot(3, name, 0)
        if q is not None:
            b.PrependUOffsetTRelativeSlot(4, q, 0)
        b.PrependBoolSlot(5, t["variable"], False)
        return b.EndObject()

    @staticmethod
    def _options(b, opt_name, values):
        slots = OPT_SLOTS[opt_name]
        strings = {k: b.CreateString(v) for k, v in values.items() if slots[k][1] == "s"}
        strings.update({k: b.CreateNumpyVector(np.asarray(v, np.int32).reshape(-1))
                        for k, v in values.items() if slots[k][1] == "v"})
        b.StartObject(max([s for s, _ in slots.values()], default=-1) + 1)
        for k, v in values.items():
            slot, kind = slots[k]
            if kind == "b":
                b.PrependInt8Slot(slot, v, -1)      # -1 default: always written
            elif kind == "i":
                b.PrependInt32Slot(slot, v, -(1 << 30))
            elif kind == "f":
                b.PrependFloat32Slot(slot, v, float("nan"))
            elif kind == "B":
                b.PrependBoolSlot(slot, v, not v)
            else:
                b.PrependUOffsetTRelativeSlot(slot, strings[k], 0)
        return b.EndObject()

    def _op(self, b, o):
        ins = b.CreateNumpyVector(np.asarray(o["inputs"], np.int32))
        outs = b.CreateNumpyVector(np.asarray(o["outputs"], np.int32))
        opt = self._options(b, o["opt_name"], o["options"]) if o["opt_name"] else None
        custom = b.CreateNumpyVector(np.frombuffer(o["custom"], np.uint8)) if o["custom"] else None
        b.StartObject(7)
        b.PrependUint32Slot(0, o["opcode"], 0)
        b.PrependUOffsetTRelativeSlot(1, ins, 0)
        b.PrependUOffsetTRelativeSlot(2, outs, 0)
        if opt is not None:
            b.PrependUint8Slot(3, getattr(tflite.BuiltinOptions, o["opt_name"]), 0)
            b.PrependUOffsetTRelativeSlot(4, opt, 0)
        if custom is not None:
            b.PrependUOffsetTRelativeSlot(5, custom, 0)
        return b.EndObject()
