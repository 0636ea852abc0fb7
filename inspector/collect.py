"""Collecting an :class:`~inspector.model.Inspection` from one jitted flax call.

At trace time, :func:`plan` decides which arrays get statistics (outputs, mutated
collections, intermediates), asks :mod:`inspector.reduce` for them inside the same
computation and records where each array came from. The caller's variables are
described by a jitted call of their own, remembered per array (jax arrays are
immutable), so calling again with the same variables does not describe them again.
On the host, :func:`assemble` fetches only statistics and builds the model; arrays
stay on their device until a :class:`~inspector.model.Leaf`'s ``value`` is read.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from inspector import reduce
from inspector.model import (
    CollectionDiff, Inspection, Leaf, LeafDiff, MethodCall, Stats, Timings, VariableTree,
    path_str, tree_from_leaves,
)
from inspector.run import Recorder, held_arrays, is_array

INTERMEDIATES = "intermediates"


@dataclasses.dataclass
class Slot:
    """Where one described value lives: ``source`` ('in' = the caller's variables,
    'out' = the returned result), its key path there, and its statistics row (among
    the described arrays of its source)."""

    path: tuple[str, ...]
    source: str
    keypath: tuple
    shape: tuple[int, ...] = ()
    dtype: str = ""
    row: int | None = None
    opaque: str | None = None


@dataclasses.dataclass
class Plan:
    """Trace-time description of an inspection: slots per role, calls, diff pairs."""

    outputs: list[Slot]
    variables: list[Slot]
    mutated: dict[str, list[Slot]]
    calls: list[tuple[tuple[str, ...], str, str, int, int, bool, list[Slot]]]
    pairs: dict[tuple[str, ...], tuple[int | None, int]]  # after path -> (delta row, before row)
    returns_tuple: bool
    described: list[Slot]  # the slots that get statistics (other than the caller's variables), by row
    delta_dtypes: list[str]
    binding: list = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    multi_device: bool = False
    summarized: list[int] = dataclasses.field(default_factory=list)  # rows summarized inside the call


def _key_str(k: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _is_traced(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.core.Tracer))


def _describe_value(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as e:  # noqa: BLE001 - a broken __repr__ must not break the inspection
        text = f"<repr raised {type(e).__name__}>"
    text = text if len(text) <= 120 else text[:117] + "..."
    return f"{type(value).__name__}: {text}"


class Planner:
    """Collects arrays to describe while walking the traced result."""

    def __init__(self) -> None:
        self.arrays: list[Any] = []  # described inside the computation
        self.described: list[Slot] = []
        self.inputs: list[Any] = []  # the caller's variables, described apart (see input_stats)

    def slot(self, path, source, keypath, value) -> Slot:
        if _is_traced(value) or is_array(value):
            s = Slot(path, source, keypath, tuple(np.shape(value)), str(value.dtype))
            if reduce.supported(value):
                into = self.inputs if source == "in" else self.arrays
                s.row = len(into)
                into.append(value)
                if source != "in":
                    self.described.append(s)
            return s
        return Slot(path, source, keypath, opaque=_describe_value(value))

    def slots(self, tree: Any, prefix: tuple[str, ...], source: str, base: tuple = ()) -> list[Slot]:
        flat, _ = jax.tree_util.tree_flatten_with_path(tree)
        if not flat and tree is None:
            return [Slot(prefix, source, base, opaque="NoneType: None")]
        out = []
        for kp, v in flat:
            path, keypath = prefix + tuple(_key_str(k) for k in kp), base + tuple(kp)
            held = [] if _is_traced(v) or is_array(v) else held_arrays(v)
            if held:  # a non-pytree object holding arrays: one leaf per array attribute
                out += [self.slot(path + names, source, keypath + tuple(map(jax.tree_util.GetAttrKey, names)), a)
                        for names, a in held]
            else:
                out.append(self.slot(path, source, keypath, v))
        return out


def split_result(kind: str, result: Any, mutable: Any, capture: Any) -> tuple[Any, Any, bool]:
    """``(y, state, returns_tuple)`` of a flax result, by flax's own rule."""
    if kind == "init":
        return None, result, False
    if kind == "init_with_output":
        return result[0], result[1], True
    if mutable is not False or capture:
        return result[0], result[1], True
    return result, None, False


def plan(kind: str, mutable: Any, capture: Any, keep: str):
    """The ``post`` hook for :class:`~inspector.run.Runner`: returns
    ``(result to return, statistics arrays, Plan)`` inside the trace."""

    def post(inputs, result, recorder: Recorder):
        args, _ = inputs
        y, state, returns_tuple = split_result(kind, result, mutable, capture)
        p = Planner()
        outputs = p.slots(y, (), "out", (0,) if returns_tuple else ())
        state_base = (1,) if returns_tuple else ()
        variables_in = args[0] if kind == "apply" else None
        if variables_in is not None:
            variables = p.slots(variables_in, (), "in")
        else:
            created = {k: v for k, v in (state or {}).items() if k != INTERMEDIATES}
            variables = [s for k, v in created.items()
                         for s in p.slots(v, (k,), "out", state_base + (jax.tree_util.DictKey(k),))]
        mutated: dict[str, list[Slot]] = {}
        pairs: dict[tuple[str, ...], tuple[int | None, int]] = {}
        delta_pairs = []
        if kind == "apply" and state is not None:
            before = {s.path: s for s in variables}
            for col, value in state.items():
                if col == INTERMEDIATES:
                    continue
                mutated[col] = p.slots(value, (col,), "out", state_base + (jax.tree_util.DictKey(col),))
                for s in mutated[col]:
                    b = before.get(s.path)
                    if b is None or b.row is None or s.row is None:
                        continue
                    if b.shape == s.shape:
                        pairs[s.path] = (len(delta_pairs), b.row)
                        delta_pairs.append((p.inputs[b.row], p.arrays[s.row]))
                    else:
                        pairs[s.path] = (None, b.row)
        calls = []
        inter = (state or {}).get(INTERMEDIATES) if state is not None else None
        calls = _plan_calls(p, inter or {}, recorder, state_base + (jax.tree_util.DictKey(INTERMEDIATES),))
        # XLA:CPU compiles each reduction of a small array as a kernel of its own: numpy describes
        # those after the call, in place. Large arrays are summarized inside the call.
        small_on_host = jax.default_backend() == "cpu" and not recorder.multi_device
        summarized = [i for i, a in enumerate(p.arrays) if not (small_on_host and a.size <= reduce.SAMPLE)]
        stats = reduce.summarize([p.arrays[i] for i in summarized])
        deltas = reduce.deltas(delta_pairs)
        dropped: list[Any] = []
        if keep == "stats" and state is not None and INTERMEDIATES in state:
            state = {k: v for k, v in state.items() if k != INTERMEDIATES}
            result = (y, state)
            # Returned only so that a summary that can't be trusted can be redone exactly; never kept.
            for call in calls:
                for s in call[6]:
                    if s.row is not None:
                        s.source, s.keypath = "dropped", (len(dropped),)
                        dropped.append(p.arrays[s.row])
        notes = dropped_notes(recorder, calls)
        return result, (stats, deltas, dropped), Plan(
            outputs, variables, mutated, calls, pairs, returns_tuple, p.described,
            [str(b.dtype) for b, _ in delta_pairs], recorder.binding, notes, recorder.multi_device, summarized)

    return post


def _plan_calls(p: Planner, inter: Any, recorder: Recorder, base: tuple):
    order: dict[tuple[tuple[str, ...], str], list[tuple[int, Any]]] = {}
    for i, ev in enumerate(recorder.events):
        order.setdefault((ev.path, ev.name), []).append((i, ev))
    unknown = len(recorder.events)
    calls = []

    def walk(node: Any, path: tuple[str, ...], keypath: tuple):
        for k, v in node.items():
            kp = keypath + (jax.tree_util.DictKey(k),)
            evs = order.get((path, k))
            if evs is None and isinstance(v, Mapping):
                walk(v, path + (k,), kp)
                continue
            values = v if isinstance(v, tuple) else (v,)
            items = list(enumerate(values)) if isinstance(v, tuple) else [(None, v)]
            offset = len(values) - len(evs or ())
            for i, value in items:
                j = 0 if i is None else i
                ev_i = j - offset
                if evs and ev_i >= 0:
                    seq, ev = evs[ev_i]
                    mtype, sown = ev.module_type, ev.kind == "sow"
                else:
                    seq, mtype, sown = (-1 if evs else unknown), "", evs is None
                vkp = kp if i is None else kp + (jax.tree_util.SequenceKey(i),)
                label = f"{k}[{j}]"
                slots = p.slots(value, path + (label,), "out", vkp)
                calls.append((path, mtype, k, j, seq, sown, slots))

    walk(inter, (), base)
    calls.sort(key=lambda c: (c[4], c[0], c[3]))
    return calls


_LIFTED = re.compile(r"^(Scan|Vmap|Checkpoint|Remat|Jit|Map|Vjp|Jvp|Cond|While|Switch)(?=[A-Z_])")


def dropped_notes(recorder: Recorder, calls: list) -> list[str]:
    """One note per capture the filter asked for but flax returned no value for (it
    happens inside lifted transforms whose ``variable_axes`` lack 'intermediates')."""
    returned = {(c[0], c[2]) for c in calls}
    lifted: dict[tuple[str, ...], str] = {}
    for b in recorder.binding:  # a module run by nn.scan(Cell) is a Cell; its wrapper is ScanCell
        for name in recorder.lifted:
            m = _LIFTED.match(name)
            if m and name[m.end(1):] == b.module_type:
                lifted.setdefault(b.path, name)
    notes, seen = [], set()
    for ev in recorder.events:
        key = (ev.path, ev.name)
        if ev.kind != "capture" or key in returned or key in seen:
            continue
        seen.add(key)
        found = next(((ev.path[:i], lifted[ev.path[:i]]) for i in range(len(ev.path), -1, -1)
                      if ev.path[:i] in lifted), None)
        where = path_str(ev.path)
        if found is not None:
            lp, lt = found
            notes.append(f"not captured: {where}:{ev.name} runs inside {path_str(lp)} ({lt}), a lifted "
                         "transform that drops intermediates unless 'intermediates' is in its variable_axes "
                         "(e.g. nn.scan(..., variable_axes={'params': 0, 'intermediates': 0}))")
        else:
            notes.append(f"not captured: {where}:{ev.name} was selected by the filter but flax returned no value")
    return notes


# -- host side -----------------------------------------------------------------
def _lookup(tree: Any, keypath: tuple) -> Any:
    for k in keypath:
        if isinstance(k, int):
            tree = tree[k]
        elif isinstance(k, jax.tree_util.DictKey):
            tree = tree[k.key]
        elif isinstance(k, jax.tree_util.SequenceKey):
            tree = tree[k.idx]
        elif isinstance(k, jax.tree_util.GetAttrKey):
            tree = getattr(tree, k.name)
        else:  # FlattenedIndexKey and friends
            tree = jax.tree_util.tree_leaves(tree)[k.key]
    return tree


class _Placement:
    """Device, sharding text and shard shape per array, memoised per (sharding, shape)."""

    def __init__(self, default: str) -> None:
        self.default = default
        self._memo: dict[Any, tuple[str, str, tuple[int, ...] | None]] = {}

    def __call__(self, x: Any) -> tuple[str, str, tuple[int, ...] | None]:
        sharding = getattr(x, "sharding", None)
        if sharding is None:
            return ("host (numpy)" if isinstance(x, (np.ndarray, np.generic)) else self.default, "", None)
        key = (sharding, x.shape)
        got = self._memo.get(key)
        if got is None:
            devices = sorted(sharding.device_set, key=lambda d: d.id)
            dev = str(devices[0]) if len(devices) == 1 else f"{len(devices)} devices ({devices[0].platform})"
            shard = tuple(sharding.shard_shape(x.shape)) if len(devices) > 1 else None
            got = self._memo[key] = (dev, _sharding_text(sharding), shard)
        return got


def _sharding_text(sharding: Any) -> str:
    name = type(sharding).__name__
    if name == "SingleDeviceSharding":
        return ""
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    if spec is not None and mesh is not None:
        axes = ", ".join(f"{k}={v}" for k, v in dict(mesh.shape).items())
        return f"{name}(mesh[{axes}], spec={tuple(spec)})"
    return str(sharding)


def describe_exactly(arrays: list[Any], hist: bool = True) -> list[Stats]:
    """Exact statistics of concrete arrays: in place by numpy on the CPU, else by one program
    (compiled per list of shapes and dtypes) and one transfer. ``hist=False`` lets the host
    path leave histograms to be computed when first asked for."""
    if not arrays:
        return []
    if reduce.on_host(arrays):  # CPU: numpy reads them in place, nothing to compile
        return reduce.host_stats_many(arrays, hist)
    rows = jax.device_get(reduce.describe_many(arrays))
    return reduce.unpack(rows, [a.dtype for a in arrays], [np.shape(a) for a in arrays])


def input_arrays(kind: str, args: tuple) -> list[Any]:
    """The caller's variables that get statistics, in the order the plan numbers them."""
    if kind != "apply" or not args:
        return []
    leaves = jax.tree_util.tree_leaves(args[0])
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return []  # inside the caller's transform: nothing to describe
    return [x for x in leaves if is_array(x) and reduce.supported(x)]


class InputStats:
    """Statistics of the caller's variables, remembered for the last few sets of jax arrays
    (immutable: the same objects, the same statistics). Only weak references are kept, so
    remembering never keeps an array alive."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._memo: OrderedDict[tuple, tuple[list[weakref.ref], list[Stats]]] = OrderedDict()
        self._lock = threading.Lock()
        self.described = 0  # how many sets of arrays were described (not remembered)

    def __call__(self, arrays: list[Any]) -> list[Stats]:
        key = tuple(map(id, arrays))
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None and all(r() is a for r, a in zip(hit[0], arrays)):
                self._memo.move_to_end(key)
                return hit[1]
        stats = describe_exactly(arrays)
        self.described += 1
        if all(isinstance(a, jax.Array) for a in arrays):  # numpy arrays can change in place
            with self._lock:
                self._memo[key] = ([weakref.ref(a) for a in arrays], stats)
                while len(self._memo) > self.size:
                    self._memo.popitem(last=False)
        return stats

    def soon(self, arrays: list[Any]) -> "Future[list[Stats]]":
        """:meth:`__call__` on a worker thread, so that describing overlaps the inspected call
        (a future already done when the arrays are remembered)."""
        key = tuple(map(id, arrays))
        hit = self._memo.get(key)
        if hit is not None and all(r() is a for r, a in zip(hit[0], arrays)):
            done: Future[list[Stats]] = Future()
            done.set_result(hit[1])
            return done
        return _worker.submit(self, arrays)


_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-stats")
input_stats = InputStats()


def dropped_any(plan_: Plan, rows: list[int]) -> bool:
    """True if some of ``rows`` are of arrays the inspection does not keep (no later histogram)."""
    return any(plan_.described[i].source == "dropped" for i in rows)


def _call_stats(plan_: Plan, words: np.ndarray, sources: dict[str, Any]) -> list[Stats]:
    """Statistics of every described slot: the in-call summaries, each redone exactly where it
    can't be trusted, and exact statistics of the rest."""
    out: list[Stats | None] = [None] * len(plan_.described)
    slots = [plan_.described[i] for i in plan_.summarized]
    decoded = reduce.rows_to_stats(words, [reduce.layout(s.dtype) for s in slots],
                                   [int(np.prod(s.shape)) for s in slots]) if slots else []
    redo = [i for i, st in zip(plan_.summarized, decoded) if not st.trusted]
    for i, st in zip(plan_.summarized, decoded):
        out[i] = st
    redo += [i for i, st in enumerate(out) if st is None]
    if redo:
        arrays = [_lookup(sources[plan_.described[i].source], plan_.described[i].keypath) for i in redo]
        exact = describe_exactly(arrays, hist=dropped_any(plan_, redo))
        for i, st in zip(redo, exact):
            out[i] = st
    return out


def assemble(kind: str, module: Any, inputs: Any, result: Any, extra: Any, plan_: Plan,
             timings: Timings, keep: str, in_stats: "Future[list[Stats]] | None" = None) -> Inspection:
    """The host-side :class:`Inspection` (statistics fetched; arrays left on device).
    Waiting for the variables' statistics (``in_stats``) adds to ``timings.run_ms``."""
    words, dwords, dropped = extra
    words, dwords = jax.device_get((words, dwords))
    sources = {"in": inputs, "out": result, "dropped": dropped}
    stats = _call_stats(plan_, words, sources)
    t0 = time.perf_counter()
    in_stats_ = in_stats.result() if in_stats is not None else []
    timings.run_ms += (time.perf_counter() - t0) * 1000
    deltas = reduce.unpack_deltas(dwords, plan_.delta_dtypes)
    default_dev = str(jax.devices()[0])
    placement = _Placement(default_dev)

    def leaf(s: Slot, kept: bool = True) -> Leaf:
        if s.opaque is not None:
            return Leaf(s.path, opaque=s.opaque)
        fetch = device = sharding = shard = x = None
        if kept and s.source != "dropped":
            tree = sources[s.source]
            x = _lookup(tree, s.keypath)
            device, sharding, shard = placement(x)
            fetch = (lambda index=None, x=x: np.asarray(x if index is None else x[index]))
        row = None if s.row is None else (in_stats_ if s.source == "in" else stats)[s.row]
        histogram = None
        if row is not None and not row.hist and x is not None:
            histogram = functools.partial(reduce.histogram, x, row)
        return Leaf(s.path, s.shape, s.dtype, device or default_dev, sharding or "", row,
                    fetch=fetch, shard_shape=shard, handle=x, histogram=histogram)

    var_leaves = [leaf(s) for s in plan_.variables]
    by_path = {lf.path: lf for lf in var_leaves}
    diffs = []
    for col, slots in plan_.mutated.items():
        rows = []
        seen = set()
        for s in slots:
            after = leaf(s)
            seen.add(s.path)
            before = by_path.get(s.path) if kind == "apply" else None
            pair = plan_.pairs.get(s.path)
            if before is None:
                rows.append(LeafDiff(s.path, "added", None, after))
            elif pair is None or pair[0] is None:
                changed = before.shape != after.shape or before.dtype != after.dtype
                rows.append(LeafDiff(s.path, "changed" if changed else "unchanged", before, after))
            else:
                n, mx, mean = deltas[pair[0]]
                rows.append(LeafDiff(s.path, "changed" if n else "unchanged", before, after,
                                     int(n), float(mx), float(mean)))
        for path, before in by_path.items():
            if path[:1] == (col,) and path not in seen:
                rows.append(LeafDiff(path, "removed", before, None))
        diffs.append(CollectionDiff(col, rows))
    calls = [
        MethodCall(path, mtype, name, index, order, [leaf(s, keep != "stats") for s in slots], sown)
        for order, (path, mtype, name, index, _seq, sown, slots) in enumerate(plan_.calls)
    ]
    state = result[1] if plan_.returns_tuple else None
    output = result[0] if plan_.returns_tuple else (None if kind == "init" else result)
    return Inspection(
        kind=kind,
        module_type=type(module).__name__,
        output=output,
        state=state if kind != "init" else result,
        outputs=[leaf(s) for s in plan_.outputs] if kind != "init" else [],
        variables=VariableTree(tree_from_leaves("variables", var_leaves)),
        diffs=diffs,
        calls=calls,
        device=default_dev,
        timings=timings,
        kept=keep != "stats",
        notes=list(plan_.notes),
        binding=plan_.binding,
        subnormals_as_zero=reduce.flushes_subnormals(jax.default_backend()),
    )
