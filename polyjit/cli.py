"""The `polyjit` command line."""
import argparse
import runpy
import sys
import time
from pathlib import Path


def _demo(args):
    examples = Path(__file__).resolve().parent.parent / "examples"
    script = examples / f"{args.name}.py"
    if not script.exists():
        sys.exit(f"no example named {args.name!r} in {examples}")
    sys.argv = [str(script)] + args.rest
    runpy.run_path(str(script), run_name="__main__")


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def _fmt_shape(shape):
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _hist(counts: dict) -> str:
    """{"F32": 61, "Q4_1": 210} -> "Q4_1 x 210, F32 x 61" (most common first)."""
    return ", ".join(f"{k} x {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _row(lines, label, value):
    if value not in (None, "", {}, []):
        lines.append(f"{label + ':':<15} {value}")


def _gguf_lines(info, lines):
    _row(lines, "architecture", info.get("architecture"))
    _row(lines, "name", info.get("name"))
    for label, key in (("layers", "layers"), ("heads", "heads"), ("KV heads", "kv_heads"),
                       ("embedding", "embedding"), ("context length", "context_length"),
                       ("vocab size", "vocab_size")):
        _row(lines, label, "?" if info.get(key) is None else info[key])
    if info.get("quant_types"):
        lines.append("quant types:")
        for q, n in sorted(info["quant_types"].items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {n:6d}  {q}")


def _tflite_lines(info, lines, max_tensors=12):
    _row(lines, "schema version", info.get("version"))
    _row(lines, "description", info.get("description"))
    subs = info["subgraphs"]
    _row(lines, "subgraphs", len(subs))
    for i, sb in enumerate(subs):
        name = f" {sb['name']!r}" if sb.get("name") else ""
        lines.append(f"subgraph {i}{name}: {sb['ops']} ops, {sum(sb['tensor_types'].values())} tensors "
                     f"({_hist(sb['tensor_types'])})")
        for kind in ("inputs", "outputs"):
            lines.append(f"  {kind}: " + ", ".join(f"{n} {t} {_fmt_shape(s)}" for n, s, t in sb[kind]))
        if sb.get("sparse_tensors"):
            lines.append(f"  sparse tensors: {sb['sparse_tensors']}")
        if sb.get("variables"):
            lines.append(f"  variable tensors: {sb['variables']}")
        lines.append("  ops:" if sb["op_histogram"] else "  ops: none")
        for op, n in sorted(sb["op_histogram"].items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {n:6d}  {op}")
        if sb.get("quantization"):
            lines.append(f"  quantization: {_hist(sb['quantization'])}")
            qt = sb.get("quantized_tensors", [])
            for t in qt[:max_tensors]:
                axis = f" axis {t['axis']}, {t['scales']} scales" if t["granularity"] == "per-channel" else ""
                lines.append(f"    {t['name']}: {t['type']} {_fmt_shape(t['shape'])} {t['granularity']}{axis}"
                             + (" (constant)" if t.get("constant") else ""))
            if len(qt) > max_tensors:
                lines.append(f"    ... {len(qt) - max_tensors} more")
        else:
            lines.append("  quantization: none (float model)")


def format_report(info: dict) -> str:
    """A readable report of `polyjit.formats.inspect` output (any format)."""
    fmt = info.get("format", "?")
    lines = [f"{'format:':<15} {fmt}"]
    for key in ("producer", "ir_version", "opsets", "graph_name"):
        _row(lines, key, info.get(key))
    if fmt == "gguf":
        _gguf_lines(info, lines)
    if "nodes" in info:
        _row(lines, "nodes", info["nodes"])
    if "params" in info:
        _row(lines, "params", f"{info['params']} tensors, {info.get('param_elements', 0):,} "
                              f"elements, {_human(info.get('param_bytes', 0))}")
    if fmt in ("safetensors", "pytorch"):
        nbytes = info.get("bytes", info.get("param_bytes", 0))
        _row(lines, "tensors", info.get("tensors", info.get("params", 0)))
        _row(lines, "bytes", f"{nbytes:,} ({_human(nbytes)})")
        _row(lines, "dtypes", _hist(info.get("dtypes", {})))
        _row(lines, "metadata", ", ".join(f"{k}={str(v)[:60]}" for k, v in info.get("metadata", {}).items()))
    for kind in ("inputs", "outputs"):
        if info.get(kind) or fmt not in ("safetensors", "pytorch"):
            lines.append(f"{kind}:")
        for s in info.get(kind, []):
            lines.append(f"  {s['name']}: {s.get('dtype') or '?'} {_fmt_shape(s.get('shape'))}")
    if fmt == "tflite" and info.get("subgraphs"):
        _tflite_lines(info, lines)
    elif info.get("op_histogram"):
        lines.append("ops:")
        for op, n in info["op_histogram"].items():
            lines.append(f"  {n:6d}  {op}")
    if info.get("largest_weights"):
        lines.append("largest weights:")
        for w in info["largest_weights"]:
            lines.append(f"  {w['name']}: {w['dtype']} {_fmt_shape(w['shape'])} {_human(w['bytes'])}")
    if "compatible" in info:
        verdict = "compatible: polyjit supports every op" if info["compatible"] else \
            "NOT compatible: unsupported ops " + ", ".join(info.get("unsupported_ops", []))
        lines.append(verdict)
    return "\n".join(lines)


def _inspect(args):
    from .formats import FormatError, inspect
    try:
        info = inspect(args.file)
    except (FormatError, OSError) as e:
        sys.exit(f"polyjit inspect: {e}")
    print(format_report(info))


def _parse_inputs(items):
    import numpy as np
    out = {}
    for item in items or []:
        if "=" not in item:
            sys.exit(f"--input expects name=file.npy, got {item!r}")
        name, path = item.split("=", 1)
        out[name] = np.load(path, allow_pickle=False)   # never unpickle user files
    return out


def _example_input(spec):
    import numpy as np
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in (spec.shape or ()))
    dt = np.dtype(spec.dtype or np.float32)
    rng = np.random.default_rng(0)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(dt)
    return rng.integers(0, 10, shape).astype(dt)


def _run(args):
    import numpy as np
    from .backends import using
    from .formats import FormatError, load
    try:
        model = load(args.file)
    except (FormatError, OSError) as e:
        sys.exit(f"polyjit run: {e}")
    given = _parse_inputs(args.input)
    unknown = set(given) - {s.name for s in model.inputs}
    if unknown:
        sys.exit(f"polyjit run: the model has no inputs named {sorted(unknown)}; it takes "
                 + ", ".join(s.name for s in model.inputs))
    inputs = []
    for spec in model.inputs:
        if spec.name not in given:
            print(f"note: no --input for {spec.name!r}; using random data", file=sys.stderr)
        inputs.append(given.get(spec.name, _example_input(spec)))
    with using(args.backend) if args.backend else _null():
        t0 = time.perf_counter()
        outs = model(*inputs)
        outs = [outs] if len(model.outputs) == 1 else list(outs)
        host = [np.asarray(o) for o in outs]
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            r = model(*inputs)
            [np.asarray(o) for o in ([r] if len(model.outputs) == 1 else r)]
            times.append(time.perf_counter() - t0)
    for spec, h in zip(model.outputs, host):
        stats = (f"min {h.min():.6g} max {h.max():.6g} mean {h.astype(np.float64).mean():.6g}"
                 if h.size and h.dtype.kind in "fiub" else "")
        print(f"{spec.name}: {h.dtype} {list(h.shape)} {stats}")
        if args.save:
            np.save(Path(args.save) / f"{spec.name.replace('/', '_')}.npy", h)
    print(f"first call (trace + compile + run): {first * 1e3:.1f} ms")
    if times:
        print(f"steady state: median {np.median(times) * 1e3:.2f} ms over {len(times)} runs")


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(prog="polyjit")
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="run an example from examples/")
    demo.add_argument("name", nargs="?", default="train_mnist")
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    demo.set_defaults(func=_demo)
    ins = sub.add_parser("inspect", help="describe a model file (ONNX, TFLite, GGUF, ...)")
    ins.add_argument("file")
    ins.set_defaults(func=_inspect)
    run = sub.add_parser("run", help="run a model file on inputs from .npy files")
    run.add_argument("file")
    run.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    run.add_argument("--backend", default=None, help="numpy, opencl, cuda, webgpu")
    run.add_argument("--repeat", type=int, default=3, help="timed runs after the first")
    run.add_argument("--save", default=None, help="directory to write outputs as .npy")
    run.set_defaults(func=_run)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"] and len(argv) > 1 and argv[1].startswith("-") and argv[1] not in ("-h", "--help"):
        argv.insert(1, "train_mnist")   # `polyjit demo --epochs 3`: options go to the default example
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
