"""Run every benchmark script in bench/ (``bench_*.py``), one process each, in name order.

``python bench/run_all.py [--quick] [names...]`` -- ``--quick`` is passed on to every
script; names (e.g. ``core``) select ``bench_core.py`` etc. Output goes to the terminal;
copy the tables into bench/README.md by hand. Exit status: non-zero if any script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="pass --quick to every script")
    ap.add_argument("names", nargs="*", help="only these (core, overhead, views, ...)")
    args = ap.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.names or s.stem in args.names]
        if not scripts:
            print(f"no bench script matches {args.names}", file=sys.stderr)
            return 2
    failed = []
    for script in scripts:
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        print(f"\n===== {script.name} =====", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"----- {script.name}: exit {rc}, {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
