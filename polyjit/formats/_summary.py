"""Keys every format's `inspect` shares (read by `polyjit inspect`): parameter totals,
the largest weights, inputs/outputs as dicts."""
from __future__ import annotations


def weights_summary(entries, top=5) -> dict:
    """entries: (name, dtype name, shape, n_bytes) for each stored tensor."""
    entries = list(entries)
    n_elem = 0
    for _, _, shape, _ in entries:
        k = 1
        for d in shape:
            k *= int(d)
        n_elem += k
    largest = sorted(entries, key=lambda e: -e[3])[:top]
    return {"params": len(entries), "param_elements": n_elem,
            "param_bytes": int(sum(e[3] for e in entries)),
            "largest_weights": [{"name": n, "dtype": str(dt), "shape": list(s), "bytes": int(b)}
                                for n, dt, s, b in largest]}


def io_entry(name, dtype, shape) -> dict:
    return {"name": name, "dtype": str(dtype),
            "shape": [d if isinstance(d, int) and d >= 0 else None for d in shape]}
