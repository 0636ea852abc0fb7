"""``make conformance``: flax's own ``tests/linen`` and ``tests/nnx/bridge``, four ways.

Takes the sdist of the installed flax version from the package index (it ships ``tests/``),
unpacks those two folders into ``.cache/conformance/flax-<version>/`` and runs them with flax's
CI settings (its ``filterwarnings``, ``JAX_NUMPY_RANK_PROMOTION=raise``, ``FLAX_PROFILE=1``, 4 host
devices) under each way of :mod:`conformance.plugin`: ``flax`` alone, routed to ``inspector``,
routed through ``inspect`` and the ``jit`` control. It passes when every test passes under
``flax``, and a test fails under ``inspector`` or ``inspect`` only if it fails with the same
error under ``jit`` and is listed, with the reason, in ``conformance/expected_failures.txt``.
The control runs only the tests that failed when routed (``--full-control`` runs all of them).

    python -m conformance.run [--ways flax,inspector,inspect,jit] [-n 2] [--suites F,..]
                              [--full-control] [-- PYTEST_ARGS]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPECTED = pathlib.Path(__file__).resolve().parent / "expected_failures.txt"
SUITES = ("tests/linen", "tests/nnx/bridge")
ROUTED = ("inspector", "inspect")
ENV = {
    "JAX_NUMPY_RANK_PROMOTION": "raise",
    "FLAX_PROFILE": "1",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    "JAX_PLATFORMS": "cpu",
}


def fetch_tests(version: str, cache: pathlib.Path) -> pathlib.Path:
    """``cache/flax-<version>`` holding the sdist's test folders and a ``pytest.ini`` built from its
    ``pyproject.toml``; downloaded once."""
    dest = cache / f"flax-{version}"
    if (dest / "pytest.ini").exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"flax=={version}", "-d", tmp], check=True)
        sdist = next(pathlib.Path(tmp).glob("flax-*.tar.gz"))
        prefix = f"flax-{version}/"
        wanted = [prefix + s + "/" for s in SUITES] + [prefix + "pyproject.toml"]
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if any(m.name == w or m.name.startswith(w) for w in wanted)]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(dest, members=members, filter="data")
    config = tomllib.loads((dest / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    lines = ["[pytest]", "filterwarnings ="] + [f"    {w}" for w in config["filterwarnings"]]
    (dest / "pytest.ini").write_text("\n".join(lines) + "\n")
    return dest


def run_way(way: str, tests: pathlib.Path, out: pathlib.Path, jobs: int, extra: list[str],
            suites: list[str]) -> tuple[dict, float]:
    """Runs the suites under ``way``; returns ``(nodeid -> outcome, seconds)``."""
    results = out / f"{way}.json"
    env = dict(os.environ, **ENV, INSPECTOR_CONFORMANCE_WAY=way, INSPECTOR_CONFORMANCE_RESULTS=str(results),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    cmd = [sys.executable, "-m", "pytest", "-c", "pytest.ini", "--rootdir", ".", "-p", "conformance.plugin",
           "-p", "no:cacheprovider", "-q", "--no-header", "-rN", "--tb=line", "--continue-on-collection-errors",
           *(["-n", str(jobs)] if jobs > 1 else []), *extra, *suites]
    print(f"== {way}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tests, env=env)
    seconds = time.perf_counter() - t0
    if not results.exists():
        raise SystemExit(f"{way}: pytest wrote no results (exit {proc.returncode})")
    return json.loads(results.read_text())["tests"], seconds


def read_expected(path: pathlib.Path = EXPECTED) -> dict[str, str]:
    """``nodeid -> reason`` from lines ``<nodeid> -- <reason>`` (``#`` starts a comment)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, sep, reason = line.partition(" -- ")
        if not sep or not reason.strip():
            raise SystemExit(f"{path.name}: every line needs ' -- <reason>': {line!r}")
        out[nodeid.strip()] = reason.strip()
    return out


def failed(results: dict) -> dict[str, dict]:
    return {k: v for k, v in results.items() if v["outcome"] == "failed"}


def check(results: dict[str, dict], expected: dict[str, str]) -> list[str]:
    """What breaks the contract (empty when the run conforms)."""
    problems = []
    if "flax" in results:
        for nodeid, r in failed(results["flax"]).items():
            problems.append(f"fails under flax alone: {nodeid}: {r['error']}")
    for way in ROUTED:
        if way not in results:
            continue
        for nodeid, r in failed(results[way]).items():
            control = results.get("jit", {}).get(nodeid)
            if control is None:
                problems.append(f"{way}: {nodeid} fails ({r['error']}) and the jit control did not run it")
            elif control["outcome"] != "failed":
                problems.append(f"{way}: {nodeid} fails ({r['error']}); under jit it {control['outcome']}")
            elif control["error"] != r["error"]:
                problems.append(f"{way}: {nodeid} fails differently: {r['error']!r}; under jit: {control['error']!r}")
            elif nodeid not in expected:
                problems.append(f"{way}: {nodeid} fails as under jit ({r['error']}) but is not listed in "
                                f"{EXPECTED.name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ways", default="flax,inspector,inspect,jit")
    parser.add_argument("-n", "--jobs", type=int, default=1, help="pytest-xdist workers per way")
    parser.add_argument("--cache", type=pathlib.Path, default=ROOT / ".cache" / "conformance")
    parser.add_argument("--suites", default=",".join(SUITES), help="test folders or files, comma-separated")
    parser.add_argument("--full-control", action="store_true",
                        help="run the whole suite under jit (by default only what failed when routed)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (e.g. -- -k linen_module)")
    args = parser.parse_args(argv)
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    version = importlib.metadata.version("flax")
    tests = fetch_tests(version, args.cache)
    out = args.cache / "results"
    out.mkdir(parents=True, exist_ok=True)
    results, times = {}, {}
    for way in ways:
        selected = suites
        if way == "jit" and not args.full_control and any(w in results for w in ROUTED):
            # The control decides only about tests that fail when routed: run just those.
            selected = sorted({n for w in ROUTED if w in results for n in failed(results[w])})
            if not selected:
                results[way], times[way] = {}, 0.0
                continue
        results[way], times[way] = run_way(way, tests, out, args.jobs, args.pytest_args, selected)
    expected = read_expected()
    print(f"\nflax {version}, {', '.join(suites)}, {args.jobs} worker(s) per way")
    for way in ways:
        counts = {o: sum(1 for r in results[way].values() if r["outcome"] == o)
                  for o in ("passed", "failed", "skipped")}
        print(f"  {way:10s} {counts['passed']:5d} passed {counts['failed']:3d} failed {counts['skipped']:3d} skipped"
              f"  {times[way]:7.1f} s")
    routed_failures = {n for w in ROUTED if w in results for n in failed(results[w])}
    for nodeid in sorted(routed_failures & set(expected)):
        print(f"  allowed: {nodeid} -- {expected[nodeid]}")
    stale = [n for n in expected if n not in routed_failures and all(w in results for w in ROUTED)]
    for nodeid in stale:
        print(f"  listed but did not fail (remove it from {EXPECTED.name}?): {nodeid}")
    problems = check(results, expected)
    for p in problems:
        print(f"  FAIL {p}")
    (out / "summary.json").write_text(json.dumps({"flax": version, "seconds": times, "problems": problems}, indent=1))
    print("conformance: " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
