"""A pytest plugin that routes flax's ``apply``/``init``/``init_with_output`` for flax's own tests.

Loaded as ``-p conformance.plugin``; ``INSPECTOR_CONFORMANCE_WAY`` picks the route:

* ``flax``: nothing is routed (the baseline);
* ``inspector``: to :func:`inspector.apply`/``init``/``init_with_output``;
* ``inspect``: to ``inspector.inspect_*``, handing back what flax returns, rebuilt from the
  :class:`~inspector.Inspection` (``output``/``state``); called inside the caller's ``jax.jit``/
  ``grad``/``eval_shape``..., where ``inspect_*`` refuses to run, it takes the ``inspector`` route;
* ``jit``: the control, a plain ``jax.jit`` of flax's own function (arrays traced, other values
  closed over, non-array outputs put back).

Routed are ``flax.linen.X`` and ``flax.linen.module.X``, which ``Module.apply``/``init``/
``init_with_output`` call. ``INSPECTOR_CONFORMANCE_RESULTS``, if set, names a JSON file that
receives each test's outcome and, for failures, the exception's type and first message line.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable
from typing import Any

import pytest

WAYS = ("flax", "inspector", "inspect", "jit")
NAMES = ("apply", "init", "init_with_output")


def _has_tracer(tree: Any) -> bool:
    import jax

    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def _flax_defaults(name: str) -> inspect.Signature:
    from inspector.engine.runner import FLAX_ENTRIES

    return inspect.signature(FLAX_ENTRIES[name])


def _inspect_route(name: str) -> Callable:
    import inspector as fi

    inspect_fn = {"apply": fi.inspect_apply, "init": fi.inspect_init,
                  "init_with_output": fi.inspect_init_with_output}[name]
    plain = getattr(fi, name)

    defaults = _flax_defaults(name)

    def route(fn, module, *a, **kw):  # flax's defaults, not inspect_*'s (which capture every __call__)
        bound = defaults.bind(fn, module, *a, **kw)
        bound.apply_defaults()
        a, kw = bound.args[2:], bound.kwargs
        run, fallback = inspect_fn(fn, module, *a, **kw), plain(fn, module, *a, **kw)

        def call(*args, **kwargs):
            if _has_tracer((args, kwargs)):
                return fallback(*args, **kwargs)
            try:
                insp = run(*args, **kwargs)
            except fi.InspectUnderTransformError:  # concrete inputs, inside the caller's own trace
                return fallback(*args, **kwargs)
            if name == "init":
                return insp.state
            if name == "init_with_output":
                return insp.output, insp.state
            return insp.output if insp.state is None else (insp.output, insp.state)

        return call

    return route


def _jit_route(name: str, flax_fn: Callable) -> Callable:
    import jax
    import numpy as np

    def is_array(x):
        return isinstance(x, (jax.Array, np.ndarray, np.generic))

    def route(fn, module, *a, **kw):
        inner = flax_fn(fn, module, *a, **kw)

        def call(*args, **kwargs):
            leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=lambda x: x is None)
            at = [i for i, x in enumerate(leaves) if is_array(x)]
            kept: dict[str, Any] = {}

            def body(dyn):
                full = list(leaves)
                for i, x in zip(at, dyn):
                    full[i] = x
                a2, k2 = jax.tree_util.tree_unflatten(treedef, full)
                out = inner(*a2, **k2)
                flat, kept["tree"] = jax.tree_util.tree_flatten(out, is_leaf=lambda x: x is None)
                kept["static"] = {j: x for j, x in enumerate(flat)
                                  if not isinstance(x, (jax.Array, jax.core.Tracer))}
                return [x for j, x in enumerate(flat) if j not in kept["static"]]

            arrays = iter(jax.jit(body)([leaves[i] for i in at]))
            n = kept["tree"].num_leaves
            flat = [kept["static"][j] if j in kept["static"] else next(arrays) for j in range(n)]
            return jax.tree_util.tree_unflatten(kept["tree"], flat)

        return call

    return route


def route(way: str) -> dict[str, Callable]:
    """The replacement for each of flax's three functions under ``way`` (empty for ``flax``)."""
    if way not in WAYS:
        raise ValueError(f"INSPECTOR_CONFORMANCE_WAY must be one of {WAYS}, not {way!r}")
    if way == "flax":
        return {}
    import inspector as fi  # first: it keeps flax's originals before they are replaced
    from inspector.engine.runner import FLAX_ENTRIES

    if way == "inspector":
        return {name: getattr(fi, name) for name in NAMES}
    if way == "inspect":
        return {name: _inspect_route(name) for name in NAMES}
    return {name: _jit_route(name, FLAX_ENTRIES[name]) for name in NAMES}


def pytest_configure(config: pytest.Config) -> None:
    import flax.linen
    import flax.linen.module

    way = os.environ.get("INSPECTOR_CONFORMANCE_WAY", "flax")
    for name, fn in route(way).items():
        setattr(flax.linen, name, fn)
        setattr(flax.linen.module, name, fn)
    config.stash[_WAY] = way
    config.stash[_OUTCOMES] = {}


_WAY = pytest.StashKey[str]()
_OUTCOMES = pytest.StashKey[dict]()
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def pytest_report_header(config: pytest.Config) -> str:
    return f"inspector conformance: way={config.stash[_WAY]}"


def _failure(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return _ADDRESS.sub("0x?", text.strip().splitlines()[0] if text.strip() else "")


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcomes = _config.stash[_OUTCOMES] if _config is not None else None
    if outcomes is None:
        return
    if report.failed:
        outcomes[report.nodeid] = {"outcome": "failed", "when": report.when, "error": _failure(report)}
    elif report.when == "call" or (report.skipped and report.nodeid not in outcomes):
        outcomes.setdefault(report.nodeid, {"outcome": "skipped" if report.skipped else "passed"})


def pytest_collectreport(report: pytest.CollectReport) -> None:
    outcomes = _config.stash[_OUTCOMES] if _config is not None else None
    if outcomes is not None and report.failed:  # e.g. a module whose imports are missing
        outcomes[report.nodeid] = {"outcome": "failed", "when": "collect", "error": _failure(report)}


_config: pytest.Config | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _config
    _config = session.config


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("INSPECTOR_CONFORMANCE_RESULTS")
    if path and not hasattr(session.config, "workerinput"):  # the xdist controller (or a lone run) writes
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"way": session.config.stash[_WAY], "tests": session.config.stash[_OUTCOMES]}, f,
                      indent=1, sort_keys=True)
