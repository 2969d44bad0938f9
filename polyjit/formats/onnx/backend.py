"""An `onnx.backend.base.Backend` running models through polyjit, so the official ONNX
conformance tests (`onnx.backend.test.BackendTest`) can check it.

Device strings: "CPU" runs on polyjit's default backend; "CPU:numpy" / "CPU:opencl" /
"CUDA" pick one. Graph inputs that the graph needs at trace time (shape operands, inputs
of data-dependent-size ops such as NonZero and NonMaxSuppression, string tensors, the
conditions of control flow that yields sequences) are baked in as constants per call.
Sequence values are lists of arrays and empty optionals None, in and out; a model with
string outputs (host values) runs eagerly instead of jitted.

Storage-only dtypes (float8, float4, int4, int2: ml_dtypes formats polyjit stores and casts
but has no arithmetic for) are computed by the numpy reference on every backend: compiled
backends keep such values as bytes and run the equations on them as host steps.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from ...tracer.jit import jit
from . import load


def _backend_name(device: str):
    dev = device.upper()
    if ":" in device:
        return device.split(":", 1)[1].lower()
    return "cuda" if dev.startswith("CUDA") else None


def _host(v):
    """A value as numpy: arrays, sequences (lists of arrays) and empty optionals (None)."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return [_host(e) for e in v]
    return np.asarray(v)


class PolyjitRep(BackendRep):
    def __init__(self, model: onnx.ModelProto, backend_name):
        self.proto = model.SerializeToString()
        self.backend_name = backend_name
        base = load(self.proto)
        self.static_names = base.metadata["static_inputs_needed"]
        self.input_names = [i.name for i in base.inputs]
        self.base = base if not self.static_names else None
        # string outputs are host values (ops/strings.py): such a model runs eagerly
        self.eager = any(o.type.tensor_type.elem_type == onnx.TensorProto.STRING
                         for o in model.graph.output if o.type.WhichOneof("value") == "tensor_type")

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            inputs = [inputs[n] for n in self.input_names]
        inputs = list(inputs)
        model = self.base
        if model is None:
            static = {n: _host(v) for n, v in zip(self.input_names, inputs)
                      if n in self.static_names}
            model = load(self.proto, static_inputs=static)
            inputs = [v for n, v in zip(self.input_names, inputs) if n not in self.static_names]
        f = model.fn if self.eager else jit(model.fn, backend=self.backend_name)
        outs = f(model.params, *inputs)
        outs = [outs] if len(model.outputs) == 1 else list(outs)
        return tuple(_host(o) for o in outs)


class PolyjitBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        return True

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        super().prepare(model, device, **kwargs)
        return PolyjitRep(model, _backend_name(device))

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().startswith("CPU")


prepare = PolyjitBackend.prepare
run_model = PolyjitBackend.run_model
supports_device = PolyjitBackend.supports_device
