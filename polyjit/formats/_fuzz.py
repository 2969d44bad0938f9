"""Bounded-time fuzzing of a loader with truncations and byte flips of a real file (used by
the test suite; `POLYJIT_FUZZ_SCALE=10` makes every budget ten times longer).

Each mutated input must load or raise `FormatError`; any other exception, a load much
slower than the clean one, or a peak memory growth beyond a bound fails with the seed,
iteration and mutation named so the case can be replayed.
"""
from __future__ import annotations

import os
import resource
import time

import numpy as np

from . import FormatError


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(key)


class PeakMemory:
    """Peak resident memory growth over a block: Linux's VmHWM, reset through
    /proc/self/clear_refs; elsewhere the growth of ru_maxrss (which only sees new peaks)."""

    def __init__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            _status("VmHWM")
            self.exact = True
        except OSError:
            self.exact = False

    def __enter__(self):
        if self.exact:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _status("VmRSS")
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.grew = 0
        return self

    def __exit__(self, *exc):
        peak = _status("VmHWM") if self.exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.grew = max(0, peak - self.base)
        return False


def scale() -> float:
    return float(os.environ.get("POLYJIT_FUZZ_SCALE", "1") or 1)


def mutate(blob: bytes, rng, positions=None, truncate=0.3, max_flips=4):
    """(mutated bytes, description). positions: None (anywhere), or a list whose entries are
    (start, end) ranges or arrays of byte offsets; each flip picks an entry, then an offset."""
    data = bytearray(blob)
    desc = []
    for _ in range(int(rng.integers(1, max_flips + 1))):
        if positions:
            where = positions[int(rng.integers(0, len(positions)))]
            if isinstance(where, tuple):
                i = int(rng.integers(where[0], where[1]))
            else:
                i = int(where[int(rng.integers(0, len(where)))])
        else:
            i = int(rng.integers(0, len(data)))
        bit = 1 << int(rng.integers(0, 8))
        data[i] ^= bit
        desc.append(f"flip byte {i} ^ {bit:#04x}")
    if rng.random() < truncate:
        n = int(rng.integers(0, len(data)))
        del data[n:]
        desc.append(f"truncate to {n} bytes")
    return bytes(data), desc


def fuzz_loads(blob: bytes, load, *, seconds: float, seed: int, positions=None, truncate=0.3,
               max_flips=4, mem_limit=None, slow_factor=5.0, min_load_limit=5.0, name="file"):
    """Mutate `blob` and call `load(data)` until `seconds` (times POLYJIT_FUZZ_SCALE) have
    passed. The clean blob must load; its time sets the per-load limit (slow_factor x, at
    least min_load_limit s). mem_limit: bytes the peak resident memory may grow by per load
    (default 4x the blob + 64 MiB). Returns counts: iterations, loaded, format_errors."""
    mem_limit = 4 * len(blob) + (64 << 20) if mem_limit is None else mem_limit
    t0 = time.perf_counter()
    load(blob)
    limit = max(min_load_limit, slow_factor * (time.perf_counter() - t0))
    rng = np.random.default_rng(seed)
    mem = PeakMemory()
    stats = {"iterations": 0, "loaded": 0, "format_errors": 0, "slowest_s": 0.0, "peak_bytes": 0}
    deadline = time.monotonic() + seconds * scale()
    while time.monotonic() < deadline:
        data, desc = mutate(blob, rng, positions, truncate, max_flips)
        where = f"{name} (seed {seed}, iteration {stats['iterations']}: {', '.join(desc)})"
        t = time.perf_counter()
        with mem:
            try:
                load(data)
                stats["loaded"] += 1
            except FormatError:
                stats["format_errors"] += 1
            except Exception as e:
                raise AssertionError(f"{where} raised {type(e).__name__}, not FormatError: {e}") from e
        dt = time.perf_counter() - t
        if dt > limit:
            raise AssertionError(f"{where} took {dt:.1f} s (limit {limit:.1f} s)")
        if mem.grew > mem_limit:
            raise AssertionError(f"{where} grew peak memory by {mem.grew >> 20} MiB "
                                 f"(limit {mem_limit >> 20} MiB)")
        stats["iterations"] += 1
        stats["slowest_s"] = max(stats["slowest_s"], dt)
        stats["peak_bytes"] = max(stats["peak_bytes"], mem.grew)
    return stats
