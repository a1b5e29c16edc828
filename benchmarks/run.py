"""Run the benchmarks in this folder, print one table, and write JSON.

    python benchmarks/run.py [--only NAME ...] [--quick] [--out bench-results]

Each `bench_*.py` module has `run(quick: bool) -> dict` returning {"rows": [...], ...}: every row a flat dict of
numbers and labels. Speed claims are reported as ratios of two things measured in the same run (absolute times on a
shared machine mean little); each benchmark says in its docstring what it compares.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))  # shared helpers (timing.py) for the benchmarks


def discover() -> dict[str, Path]:
    return {p.stem[len("bench_"):]: p for p in sorted(HERE.glob("bench_*.py"))}


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "  (no rows)"
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  " + "  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="benchmark names (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args(argv)
    benches = discover()
    names = args.only or list(benches)
    unknown = [n for n in names if n not in benches]
    if unknown:
        print(f"unknown benchmarks {unknown}; have {list(benches)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
               "quick": args.quick, "results": {}}
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            result = load(benches[name]).run(quick=args.quick)
        except Exception as err:  # one broken benchmark must not hide the others
            failed.append(name)
            result = {"error": f"{type(err).__name__}: {err}", "rows": []}
        result["wall_s"] = round(time.perf_counter() - start, 2)
        summary["results"][name] = result
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        print(format_table(result.get("rows", [])))
        if "error" in result:
            print(f"  FAILED: {result['error']}")
        print(f"  ({result['wall_s']} s; {out / (name + '.json')})", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"wrote {out / 'summary.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
