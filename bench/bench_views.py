"""First-render cost of the notebook widget vs treescope, measured in one process.

Cases: a 5,000-leaf variable tree and a 48-layer d=416 transformer's parameters
(4x MLP, ~100M parameters, 769 leaves). For each: Python time to build the widget plus its
display bundle, bytes the front end receives at first display (initial rows + the
bounded HTML fallback), widget models created; and treescope.render_to_html on the
same variables (time, bytes). Run: ``python bench/bench_views.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))


def wide_variables(leaves: int):
    rng = np.random.default_rng(0)
    return {"params": {f"layer_{i}": {"kernel": rng.normal(size=(4, 4)).astype(np.float32),
                                      "bias": np.zeros(4, np.float32)} for i in range(leaves // 2)}}


def transformer_variables(layers: int = 48, d: int = 416, vocab: int = 2048):
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape, dtype=np.float32) * 0.02

    params = {"embed": {"embedding": w(vocab, d)}}
    for i in range(layers):
        params[f"block_{i}"] = {
            "ln1": {"scale": np.ones(d, np.float32), "bias": np.zeros(d, np.float32)},
            "attn": {n: {"kernel": w(d, d), "bias": np.zeros(d, np.float32)} for n in ("query", "key", "value", "out")},
            "ln2": {"scale": np.ones(d, np.float32), "bias": np.zeros(d, np.float32)},
            "mlp": {"fc1": {"kernel": w(d, 4 * d), "bias": np.zeros(4 * d, np.float32)},
                    "fc2": {"kernel": w(4 * d, d), "bias": np.zeros(d, np.float32)}},
        }
    return {"params": params}


def inspection_of(variables):
    """A real Inspection of ``variables`` (device statistics included), via an identity module."""
    import flax.linen as nn

    import inspector as fi

    class Holder(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x

    return fi.inspect_apply(lambda m, x: m(x), Holder(), capture_intermediates=False)(variables, np.zeros(1))


def measure_ours(insp, repeats: int):
    import ipywidgets

    from inspector.views.widgets import InspectionWidget

    times, sizes, models = [], [], []
    for _ in range(repeats):
        before = len(ipywidgets.widgets.widget._instances)
        t = time.perf_counter()
        widget = InspectionWidget(insp)
        bundle = insp._repr_mimebundle_()
        times.append((time.perf_counter() - t) * 1000)
        models.append(len(ipywidgets.widgets.widget._instances) - before)
        rows = sum(len(json.dumps(tree.initial)) for tree in widget.trees.values())
        sizes.append(rows + len(bundle["text/html"]) + len(bundle["text/plain"]))
        widget.close_all() if hasattr(widget, "close_all") else None
    return statistics.median(times), statistics.median(sizes), max(models) // 2  # two widgets built per repeat


def measure_treescope(variables, repeats: int):
    import treescope

    times, sizes = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        page = treescope.render_to_html(variables)
        times.append((time.perf_counter() - t) * 1000)
        sizes.append(len(page))
    return statistics.median(times), statistics.median(sizes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    cases = [("5,000-leaf tree", wide_variables(5000))]
    if not args.quick:
        cases.append(("48-layer transformer (~97M params)", transformer_variables()))
    print(f"{'case':38} {'ours ms':>8} {'ours kB':>8} {'models':>6} {'treescope ms':>12} {'treescope kB':>12} "
          f"{'time ratio':>10} {'size ratio':>10}")
    for name, variables in cases:
        insp = inspection_of(variables)
        n_params = insp.variables.size
        ours_ms, ours_bytes, models = measure_ours(insp, repeats)
        ts_ms, ts_bytes = measure_treescope(variables, repeats)
        print(f"{name:38} {ours_ms:8.1f} {ours_bytes / 1000:8.1f} {models:6d} {ts_ms:12.1f} {ts_bytes / 1000:12.1f} "
              f"{ours_ms / ts_ms:10.3f} {ours_bytes / ts_bytes:10.3f}   ({insp.variables.count:,} leaves, "
              f"{n_params / 1e6:.1f}M params)")


if __name__ == "__main__":
    main()
