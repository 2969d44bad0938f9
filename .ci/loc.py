"""Print lines of Python (non-blank, non-comment) per package, as tinygrad does, so growth is seen."""
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def loc(files):
    return sum(1 for f in files for ln in f.read_text().splitlines()
               if ln.strip() and not ln.strip().startswith("#"))


pkg = root / "polyjit"
rows = [(f"polyjit/{p.name}", loc(p.rglob("*.py"))) for p in sorted(pkg.iterdir())
        if p.is_dir() and not p.name.startswith("__")]
rows.append(("polyjit/*.py", loc(pkg.glob("*.py"))))
total = sum(n for _, n in rows)
rows += [(d, loc((root / d).rglob("*.py"))) for d in ("tests", "benchmarks", "examples")]
for name, n in rows + [("polyjit total", total)]:
    print(f"{name:24s} {n:7d}")
