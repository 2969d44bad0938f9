"""The official ONNX node conformance tests (built in memory by the onnx wheel) run
against polyjit through `polyjit.formats.onnx.backend` on polyjit's default backend
(POLYJIT_BACKEND; numpy on a machine with no GPU).

Cases listed in tests/onnx_expected_failures.txt (one per line, with its reason) are
excluded on every backend; on another backend B, the extra cases listed in
tests/onnx_expected_failures_B.txt (failures particular to that backend: a dtype the device
lacks, a lowering bug) are excluded too.

The default run is numpy. On opencl (PoCL on a CPU builds each new kernel in ~0.35 s, so the
first run takes tens of minutes; later runs reuse the on-disk kernel cache under
$POLYJIT_CACHE or ~/.cache/polyjit), not part of the default CI run:

    POLYJIT_BACKEND=opencl python -m pytest tests/test_onnx_node_suite.py -o addopts="" -q -p no:cacheprovider
"""
import os
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx.backend.test")

from onnx.backend.test import BackendTest  # noqa: E402

from polyjit import backends  # noqa: E402
from polyjit.formats.onnx import backend as pj_backend  # noqa: E402

BACKEND = backends.default_backend()
EXPECTED = [Path(__file__).with_name("onnx_expected_failures.txt")]
if BACKEND != "numpy":
    _extra = Path(__file__).with_name(f"onnx_expected_failures_{BACKEND}.txt")
    if _extra.exists():
        EXPECTED.append(_extra)


def expected_failures():
    names = []
    for path in EXPECTED:
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line.split()[0])
    return names


backend_test = BackendTest(pj_backend, __name__)
# node tests only: the real-model tests download files, and the simple/pytorch tests are
# covered by tests/test_onnx.py
backend_test.include(r"^test_.*_cpu$")
for _name in expected_failures():
    backend_test.exclude(rf"^{_name}_cpu$")
try:  # ImageDecoder decodes with Pillow (an optional dependency)
    import PIL.Image  # noqa: F401
except ImportError:
    backend_test.exclude(r"^test_image_decoder_.*_cpu$")
_cases = backend_test.enable_report().test_cases
globals().update({k: v for k, v in _cases.items() if k == "OnnxBackendNodeModelTest"})
