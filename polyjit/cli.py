"""The `polyjit` command line."""
import argparse
import runpy
import sys
from pathlib import Path


def _demo(args):
    examples = Path(__file__).resolve().parent.parent / "examples"
    script = examples / f"{args.name}.py"
    if not script.exists():
        sys.exit(f"no example named {args.name!r} in {examples}")
    sys.argv = [str(script)] + args.rest
    runpy.run_path(str(script), run_name="__main__")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="polyjit")
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="run an example from examples/")
    demo.add_argument("name", nargs="?", default="train_mnist")
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
