"""Collecting an :class:`~inspector.model.Inspection` from one jitted flax call.

At trace time, :func:`plan` decides which arrays get statistics (outputs, mutated
collections, intermediates), asks :mod:`inspector.stats` for them inside the same
computation and records where each array came from. The caller's variables are
described by a jitted call of their own, remembered per array (jax arrays are
immutable), so calling again with the same variables does not describe them again.
On the host, :func:`assemble` fetches only statistics and builds the model; arrays
stay on their device until a :class:`~inspector.model.Leaf`'s ``value`` is read.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, cast

import jax
import numpy as np
from flax.core.scope import CollectionFilter

from inspector import stats
from inspector._compat import lifted_target, traced_effects
from inspector.background import CallerContext
from inspector.capture import CaptureFilter
from inspector.model import (
    BindingCall, CollectionDiff, Inspection, Leaf, LeafDiff, MethodCall, Stats, Timings, VariableTree,
    path_str,
)
from inspector.names import Path
from inspector.run import Event, Kind, Recorder, held_arrays, is_array

INTERMEDIATES = "intermediates"
Keep = Literal["arrays", "stats"]
"""``'arrays'`` keeps every captured array on its device (fetched when read); ``'stats'`` returns
only their statistics, so activations are never transferred or kept alive."""


Source = Literal["in", "out", "dropped"]
"""Where a described value lives: the caller's variables (``'in'``), the returned result
(``'out'``), or the arrays returned only to redo a summary exactly and never kept (``'dropped'``;
``None`` where a lean program did not return them)."""


@dataclasses.dataclass
class Slot:
    """Where one described value lives: ``source``, its key path there, and its statistics row
    (among the described arrays of its source)."""

    path: Path
    source: Source
    keypath: tuple
    shape: tuple[int, ...] = ()
    dtype: str = ""
    row: int | None = None
    opaque: str | None = None
    at: int = -1  # its place in what ``Plan.read`` returns for its source (-1: not there)


@dataclasses.dataclass
class PlannedCall:
    """One captured value as the trace found it in ``intermediates``: a call's return or a sow.

    ``index`` counts values of the same ``(path, method)``; ``seq`` is the position of its
    recorded :class:`~inspector.run.Event` (execution order), ``-1`` when flax returned more
    values than were recorded, and after every recorded event when nothing was recorded for it."""

    path: Path
    module_type: str
    method: str
    index: int
    seq: int
    sown: bool
    slots: list[Slot]


@dataclasses.dataclass
class Plan:
    """Trace-time description of an inspection: slots per role, calls, diff pairs."""

    outputs: list[Slot]
    variables: list[Slot]
    mutated: dict[str, list[Slot]]
    calls: list[PlannedCall]
    pairs: dict[Path, tuple[int | None, int | None]]  # after path -> (delta row, before row; None for a key)
    returns_tuple: bool
    described: list[Slot]  # the slots that get statistics (other than the caller's variables), by row
    delta_dtypes: list[Any]  # of each delta row's pair (PRNG key dtypes too)
    binding: list[BindingCall] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    multi_device: bool = False
    summarized: list[int] = dataclasses.field(default_factory=list)  # rows summarized inside the call

    def read(self, source: Source, tree: Any) -> list[Any]:
        """The value of each of this plan's slots in ``source``, read from ``tree`` (its
        ``Slot.at`` says which) by one generated expression, made the first time."""
        getter = self._getters.get(source)
        if getter is None:
            slots = {id(s): s for s in (*self.outputs, *self.variables, *(s for v in self.mutated.values() for s in v),
                                        *(s for c in self.calls for s in c.slots), *self.described)
                     if s.source == source and s.opaque is None}
            for i, slot in enumerate(slots.values()):
                slot.at = i
            getter = self._getters[source] = _getter([slot.keypath for slot in slots.values()])
        return getter(tree)

    @functools.cached_property
    def _getters(self) -> dict[Source, Callable[[Any], list[Any]]]:
        return {}

    @functools.cached_property
    def summary_rows(self) -> stats.RowGroups:
        """How the :attr:`summarized` rows are decoded (every call)."""
        slots = [self.described[i] for i in self.summarized]
        return stats.row_groups([stats.layout(s.dtype) for s in slots], [math.prod(s.shape) for s in slots])


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


class SlotCollector:
    """Makes the :class:`Slot` of every leaf while walking the traced result, and collects the
    arrays to describe: ``arrays`` inside the computation, ``inputs`` (the caller's variables)
    apart (see :data:`input_stats`)."""

    def __init__(self) -> None:
        self.arrays: list[Any] = []
        self.described: list[Slot] = []
        self.inputs: list[Any] = []
        self._rows: dict[int, int] = {}  # id of a value in ``arrays`` -> its row
        self._keys: dict[int, Any] = {}  # id of a PRNG-key slot (no row) -> its value, for diffs

    def slot(self, path: Path, source: Source, keypath: tuple, value: Any) -> Slot:
        if _is_traced(value) or is_array(value):
            s = Slot(path, source, keypath, tuple(np.shape(value)), str(value.dtype))
            if stats.supported(value):
                if source != "in":
                    # One value at several places (a module returning its last submodule's
                    # result, captured for both) is described once: its slots share a row.
                    row = self._rows.get(id(value))
                    if row is not None:
                        s.row = row
                        return s
                    self._rows[id(value)] = len(self.arrays)
                into = self.inputs if source == "in" else self.arrays
                s.row = len(into)
                into.append(value)
                if source != "in":
                    self.described.append(s)
            elif jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
                self._keys[id(s)] = value
            return s
        return Slot(path, source, keypath, opaque=_describe_value(value))

    def value(self, s: Slot) -> Any:
        """The traced value of a slot made here: a described array or a PRNG key (else None)."""
        if s.row is not None:
            return (self.inputs if s.source == "in" else self.arrays)[s.row]
        return self._keys.get(id(s))

    def slots(self, tree: Any, prefix: Path, source: Source, base: tuple = ()) -> list[Slot]:
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


def split_result(kind: Kind, result: Any, mutable: CollectionFilter, capture: CaptureFilter) -> tuple[Any, Any, bool]:
    """``(y, state, returns_tuple)`` of a flax result, by flax's own rule."""
    if kind == "init":
        return None, result, False
    if kind == "init_with_output":
        return result[0], result[1], True
    if mutable is not False or capture:
        return result[0], result[1], True
    return result, None, False


def plan_inspection(kind: Kind, mutable: CollectionFilter, capture: CaptureFilter, keep: Keep,
                    in_call: bool = True, lean: bool = False):
    """The ``post`` hook of an inspecting :class:`~inspector.run.Runner`: inside the trace, it
    turns flax's result into ``(result to return, statistics arrays, Plan)``. With ``in_call``
    false, arrays numpy can read in place (CPU) are all described after the call, so nothing
    but the capture is compiled: the program compiles about as fast as flax's own.

    With ``keep='stats'`` the captured arrays are returned to the device (never kept) so that a
    summary that can't be trusted is redone exactly from them. With ``lean`` as well, they are
    not returned at all (XLA then keeps them in reused buffers, and a large model runs several
    percent faster): :func:`assemble` raises :class:`NeedsArrays` instead of redoing, and the
    caller runs the call again with a program that returns them. A program with side effects
    (``jax.debug.print``, callbacks) returns them anyway, so that it never has to run twice."""

    def post(inputs: tuple[tuple, dict], result: Any, recorder: Recorder):
        args, _ = inputs
        y, state, returns_tuple = split_result(kind, result, mutable, capture)
        collector = SlotCollector()
        outputs = collector.slots(y, (), "out", (0,) if returns_tuple else ())
        state_base = (1,) if returns_tuple else ()
        variables_in = args[0] if kind == "apply" else None
        if variables_in is not None:
            variables = collector.slots(variables_in, (), "in")
        else:
            created = {k: v for k, v in (state or {}).items() if k != INTERMEDIATES}
            variables = [s for k, v in created.items()
                         for s in collector.slots(v, (k,), "out", state_base + (jax.tree_util.DictKey(k),))]
        mutated: dict[str, list[Slot]] = {}
        pairs: dict[Path, tuple[int | None, int | None]] = {}
        delta_pairs: list[tuple[Any, Any]] = []
        if kind == "apply" and state is not None:
            before = {s.path: s for s in variables}
            for col, value in state.items():
                if col == INTERMEDIATES:
                    continue
                mutated[col] = collector.slots(value, (col,), "out", state_base + (jax.tree_util.DictKey(col),))
                for s in mutated[col]:
                    b = before.get(s.path)
                    bv, av = (None, None) if b is None else (collector.value(b), collector.value(s))
                    if b is None or bv is None or av is None:
                        continue
                    # PRNG keys (no statistics row) are compared by their key data: same dtype only
                    if b.shape == s.shape and ((b.row is not None and s.row is not None) or b.dtype == s.dtype):
                        pairs[s.path] = (len(delta_pairs), b.row)
                        delta_pairs.append((bv, av))
                    else:
                        pairs[s.path] = (None, b.row)
        inter = state.get(INTERMEDIATES) if state is not None else None
        calls = _plan_calls(collector, inter or {}, recorder,
                            state_base + (jax.tree_util.DictKey(INTERMEDIATES),))
        arrays = collector.arrays
        known = {}
        for i, a in enumerate(arrays):
            early = recorder.early.get(id(a))
            if early is not None and early[0] is a:
                known[i] = early[1]
        summary_words, summarized = summarize_in_call(arrays, recorder.multi_device, in_call, known)
        deltas = stats.deltas(delta_pairs)
        dropped: list[Any] = []
        if keep == "stats" and state is not None and INTERMEDIATES in state:
            state = {k: v for k, v in state.items() if k != INTERMEDIATES}
            result = (y, state)
            # Returned only so that a summary that can't be trusted can be redone exactly; never kept.
            at: dict[int, int] = {}  # row -> its place among the dropped arrays
            for call in calls:
                for s in call.slots:
                    if s.row is not None:
                        if s.row not in at:
                            at[s.row] = len(dropped)
                            dropped.append(arrays[s.row])
                        s.source, s.keypath = "dropped", (at[s.row],)
        returned = None if lean and dropped and not traced_effects() else dropped
        notes = dropped_notes(recorder, calls)
        return result, (summary_words, deltas, returned), Plan(
            outputs, variables, mutated, calls, pairs, returns_tuple, collector.described,
            [b.dtype for b, _ in delta_pairs], recorder.binding, notes, recorder.multi_device, summarized)

    post.at_capture = tie_summaries if in_call else None  # type: ignore[attr-defined]  # read by the runner
    return post


def tie_summaries(value: Any, recorder: Recorder) -> Any:
    """The runner's ``at_capture``: ``value`` (a captured method's result) with the summary
    reductions of each of its large arrays traced where it is produced (into ``recorder.early``)
    and tied to it by an optimization barrier, so that what runs next waits for them. XLA then
    reduces each array while it is still in cache, instead of reading all of them back from
    memory at the end of the call. The value is returned unchanged. CPU backend only: on a GPU,
    XLA fuses the reductions into the producer's own kernel, which the barrier would prevent."""
    if jax.default_backend() != "cpu":
        return value
    leaves, tree = jax.tree_util.tree_flatten(value)
    at, fields = [], []
    for i, x in enumerate(leaves):
        # Tracers only: a concrete array the module returns must stay concrete for the code after it.
        # One tied already (a submodule's result, returned as this module's) is summarized once.
        early = recorder.early.get(id(x))
        if early is not None and early[0] is x:
            continue
        f = stats.summary_fields(x) if isinstance(x, jax.core.Tracer) else None
        if f is not None:
            at.append(i)
            fields.append(f)
    if not at:
        return value
    tied, fields = jax.lax.optimization_barrier(([leaves[i] for i in at], fields))
    for i, x, f in zip(at, tied, fields):
        leaves[i] = x
        recorder.early[id(x)] = (x, f)
    return jax.tree_util.tree_unflatten(tree, leaves)


def summarize_in_call(arrays: list[Any], multi_device: bool, in_call: bool = True,
                      known: dict[int, Any] | None = None) -> tuple[Any, list[int]]:
    """Inside the trace: summaries of the ``arrays`` worth summarizing there, and which those are
    (:attr:`Plan.summarized`); with ``in_call`` false, none where numpy can read them after the call.
    ``known``: the summary fields of some arrays, traced where they were produced (:func:`tie_summaries`)."""
    # XLA:CPU compiles each reduction of a small array as a kernel of its own, so a first call
    # leaves every array to numpy after the call (nothing more to compile). The program compiled
    # for later calls summarizes every array inside the call, small ones too: a few microseconds
    # there against a dozen numpy operations per call on the host.
    if not in_call and jax.default_backend() == "cpu" and not multi_device:
        return stats.summarize([]), []
    return stats.summarize(arrays, known), list(range(len(arrays)))


def _plan_calls(collector: SlotCollector, inter: Mapping, recorder: Recorder, base: tuple) -> list[PlannedCall]:
    """The captured values in ``inter`` (flax's ``intermediates``), in execution order.

    flax returns ``intermediates`` as a tree by module path, each value stored under its method
    (or sow) name as a tuple with one entry per call, in call order; it does not say which
    method returned what, or in what order over the whole run. The recorder does: its events
    list every capture and sow, in execution order. This aligns the two.

    For each ``(path, name)``, flax's tuple and the recorded events are matched from the end:
    the last value goes with the last event, so value ``j`` goes with event ``j - offset``, where
    ``offset = len(values) - len(events)``. Extra values at the front (``j < offset``: passed in
    with the variables, not produced by this run) have no event and are ordered before every
    recorded one (``seq = -1``); extra events at the front (values flax did not return) are left
    out. A name with no events at all holds values this run did not record: taken as sown and
    ordered after every recorded value. A mapping under a name with no events is a submodule's
    collection: walked, with the name appended to the path.

    Args:
      collector: makes the slots of each value.
      inter: flax's ``intermediates`` (``{}`` when none).
      recorder: the events of the trace.
      base: the key path of ``inter`` in the result.

    Returns:
      One :class:`PlannedCall` per value, sorted by event order, then path, then index.
    """
    order: dict[tuple[Path, str], list[tuple[int, Event]]] = {}
    for seq, event in enumerate(recorder.events):
        order.setdefault((event.path, event.name), []).append((seq, event))
    after_all = len(recorder.events)
    calls = []

    # Depth first, without a recursive closure: a closure that calls itself is a reference cycle,
    # which would keep the slots (and their tracers) alive until the next garbage collection.
    pending: list[tuple[Iterator, Path, tuple]] = [(iter(inter.items()), (), base)]
    while pending:
        items, path, keypath = pending[-1]
        entry = next(items, None)
        if entry is None:
            pending.pop()
            continue
        name, v = entry
        name_keypath = keypath + (jax.tree_util.DictKey(name),)
        events = order.get((path, name))
        if events is None and isinstance(v, Mapping):
            pending.append((iter(v.items()), path + (name,), name_keypath))
            continue
        values = v if isinstance(v, tuple) else (v,)
        indexed = list(enumerate(values)) if isinstance(v, tuple) else [(None, v)]
        offset = len(values) - len(events or ())
        for i, value in indexed:
            j = 0 if i is None else i
            if events and j >= offset:
                seq, event = events[j - offset]
                module_type, sown = event.module_type, event.kind == "sow"
            else:
                seq, module_type, sown = (-1 if events else after_all), "", events is None
            value_keypath = name_keypath if i is None else name_keypath + (jax.tree_util.SequenceKey(i),)
            slots = collector.slots(value, path + (f"{name}[{j}]",), "out", value_keypath)
            calls.append(PlannedCall(path, module_type, name, j, seq, sown, slots))
    calls.sort(key=lambda c: (c.seq, c.path, c.index))
    return calls


def dropped_notes(recorder: Recorder, calls: list[PlannedCall]) -> list[str]:
    """One note per capture the filter asked for but flax returned no value for (it
    happens inside lifted transforms whose ``variable_axes`` lack 'intermediates')."""
    returned = {(c.path, c.method) for c in calls}
    lifted = recorder.lifted
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
            lp, wrapper = found
            target = lifted_target(wrapper)
            axes = "variable_axes={'params': 0, 'intermediates': 0}"
            example = f"nn.{wrapper.__name__[:-len(target)].lower()}(..., {axes})" if target else axes
            notes.append(f"not captured: {where}:{ev.name} runs inside {path_str(lp)} ({wrapper.__name__}), a "
                         "lifted transform that drops intermediates unless 'intermediates' is in its "
                         f"variable_axes (e.g. {example})")
        else:
            notes.append(f"not captured: {where}:{ev.name} was selected by the filter but flax returned no value")
    return notes


# -- host side -----------------------------------------------------------------
def _step(tree: Any, k: Any) -> Any:
    t = type(k)
    if t is jax.tree_util.DictKey:
        return tree[k.key]
    if t is int:
        return tree[k]
    if t is jax.tree_util.SequenceKey:
        return tree[k.idx]
    if t is jax.tree_util.GetAttrKey:
        return getattr(tree, k.name)
    return jax.tree_util.tree_leaves(tree)[k.key]  # FlattenedIndexKey and friends


def _lookup(tree: Any, keypath: tuple) -> Any:
    for k in keypath:
        tree = _step(tree, k)
    return tree


def _getter(keypaths: list[tuple]) -> Callable[[Any], list[Any]]:
    """A function of a tree returning the value at each of ``keypaths``: one generated list
    expression of subscripts (:func:`_lookup` step by step costs a call per step)."""
    consts: list[Any] = []

    def const(value: Any) -> str:
        consts.append(value)
        return f"K[{len(consts) - 1}]"

    exprs = []
    for keypath in keypaths:
        e = "R"
        for k in keypath:
            t = type(k)
            if t is jax.tree_util.DictKey:
                e = f"{e}[{const(k.key)}]"
            elif t is int or t is jax.tree_util.SequenceKey:
                e = f"{e}[{k if t is int else k.idx}]"
            else:
                e = f"S({e}, {const(k)})"
        exprs.append(e)
    return eval(f"lambda R: [{', '.join(exprs)}]", {"K": tuple(consts), "S": _step})  # no user text in the code


_SINGLE = jax.sharding.SingleDeviceSharding
_JAX_ARRAY = type(jax.numpy.zeros(()))


class _Placement:
    """Device, sharding text and shard shape per array, memoised per (sharding, shape)."""

    def __init__(self, default: str) -> None:
        self.default = default
        self._memo: dict[Any, tuple[str, str, tuple[int, ...] | None]] = {}

    def __call__(self, x: Any) -> tuple[str, str, tuple[int, ...] | None]:
        sharding = getattr(x, "sharding", None)
        if sharding is None:
            return ("host (numpy)" if isinstance(x, (np.ndarray, np.generic)) else self.default, "", None)
        # Every array has a sharding object of its own: a single device's is keyed by the device.
        key = next(iter(sharding.device_set)) if type(sharding) is _SINGLE else (sharding, x.shape)
        got = self._memo.get(key)
        if got is None:
            dev = devices_text(sharding.device_set)
            shard = tuple(sharding.shard_shape(x.shape)) if len(sharding.device_set) > 1 else None
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
    if stats.on_host(arrays):  # CPU: numpy reads them in place, nothing to compile
        return stats.host_stats_many(arrays, hist)
    rows = jax.device_get(stats.describe_many(arrays))
    return stats.unpack(rows, [a.dtype for a in arrays], [np.shape(a) for a in arrays])


def described_after_the_call(inputs: Any) -> bool:
    """True if a call on ``inputs`` can leave every description to numpy after the call (the
    CPU backend, no input spread over devices): see ``plan_inspection(in_call=False)``."""
    if jax.default_backend() != "cpu":
        return False
    leaves = jax.tree_util.tree_leaves(inputs)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return False
    return stats.on_host([x for x in leaves if is_array(x)])


def input_arrays(kind: str, args: tuple) -> list[Any]:
    """The caller's variables that get statistics, in the order the plan numbers them."""
    if kind != "apply" or not args:
        return []
    leaves = jax.tree_util.tree_leaves(args[0])
    if all(type(x) is _JAX_ARRAY for x in leaves) and all(map(stats.supported_dtype, {x.dtype for x in leaves})):
        return leaves  # the usual case, checked a dtype at a time
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return []  # inside the caller's transform: nothing to describe
    return [x for x in leaves if is_array(x) and stats.supported(x)]


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

    def soon(self, arrays: list[Any]) -> Future[list[Stats]]:
        """:meth:`__call__` on a worker thread, so that describing overlaps the inspected call
        (a future already done when the arrays are remembered, or when
        :func:`background_work_allowed` says no: then they are described here and now, or across
        processes, on this thread when the result is asked for)."""
        key = tuple(map(id, arrays))
        hit = self._memo.get(key)
        if hit is not None and all(r() is a for r, a in zip(hit[0], arrays)):
            done: Future[list[Stats]] = Future()
            done.set_result(hit[1])
            return done
        if not background_work_allowed():
            if jax.process_count() > 1:  # when the result is asked for: never inside the call's trace
                return _OnDemand(lambda: self(arrays))
            done = Future()
            done.set_result(self(arrays))
            return done
        return _worker.submit(self._in_context, arrays, CallerContext())

    def _in_context(self, arrays: list[Any], context: CallerContext) -> list[Stats]:
        """:meth:`__call__` under the caller's jax options (``jax.enable_x64`` sets x64 for its thread only)."""
        with context.entered():
            return self(arrays)


_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-stats")


class _OnDemand(Future):
    """A future computed on the thread that first asks for its result."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        super().__init__()
        self._compute = compute

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            try:
                self.set_result(self._compute())
            except Exception as e:  # noqa: BLE001 (kept in the future: result() raises it)
                self.set_exception(e)
        return super().result(timeout)


def background_work_allowed() -> bool:
    """False while jax checks this thread's traces for leaked tracers (``jax.check_tracer_leaks``),
    and in a job of several processes (``jax.distributed``).

    Its check calls ``gc.collect()``, which returns at once, collecting nothing, while another
    thread is collecting; flax leaves tracers in reference cycles, so any Python work on another
    thread (which may start a collection) can make that check report a leak that is not one.
    Across processes, every program over global arrays is a collective that each process must
    start in the same order: one on a worker, beside the call's, could start in another order on
    another process and both would wait forever."""
    return not getattr(jax.config, "jax_check_tracer_leaks", False) and jax.process_count() == 1


def wait_for_worker() -> None:
    """Returns once everything given to the describing worker so far is done."""
    _worker.submit(int).result()


input_stats = InputStats()


class NeedsArrays(Exception):
    """A summary of an array that a lean program (``plan_inspection(lean=True)``) did not return
    can't be trusted: the call must run again with a program that returns the arrays."""


def dropped_any(plan: Plan, rows: list[int]) -> bool:
    """True if some of ``rows`` are of arrays the inspection does not keep (no later histogram)."""
    return any(plan.described[i].source == "dropped" for i in rows)


def _call_stats(plan: Plan, words: np.ndarray, sources: dict[Source, Any]) -> list[Stats]:
    """Statistics of every described slot: the in-call summaries, each redone exactly where it
    can't be trusted, and exact statistics of the rest."""
    out: list[Stats | None] = [None] * len(plan.described)
    decoded = stats.decode_rows(words, plan.summary_rows) if plan.summarized else []
    redo = [i for i, st in zip(plan.summarized, decoded) if not st.trusted]
    for i, st in zip(plan.summarized, decoded):
        out[i] = st
    redo += [i for i, st in enumerate(out) if st is None]
    if redo and sources.get("dropped") is None and dropped_any(plan, redo):
        raise NeedsArrays()
    if redo:
        arrays = [_lookup(sources[plan.described[i].source], plan.described[i].keypath) for i in redo]
        exact = describe_exactly(arrays, hist=dropped_any(plan, redo))
        for i, st in zip(redo, exact):
            out[i] = st
    assert all(st is not None for st in out)  # every row is filled by now
    return cast("list[Stats]", out)


def _fetch(x: Any, index: Any = None) -> np.ndarray:
    """``x`` (or ``x[index]``) on the host."""
    return np.asarray(x if index is None else x[index])


@dataclasses.dataclass
class _LeafMaker:
    """The :class:`Leaf` of a slot: its statistics row, where it lives, and (kept) how to fetch it."""

    sources: dict[Source, Any]
    stats: list[Stats]  # of the described slots, by row
    variable_stats: list[Stats]  # of the caller's variables, by row
    placement: _Placement
    plan: Plan | None = None  # reads the slots' values (else each is looked up on its own)
    _read: dict[Source, list[Any]] = dataclasses.field(default_factory=dict)

    def value(self, s: Slot) -> Any:
        if self.plan is not None:
            values = self._read.get(s.source)
            if values is None:
                values = self._read[s.source] = self.plan.read(s.source, self.sources[s.source])
            if s.at >= 0:
                return values[s.at]
        return _lookup(self.sources[s.source], s.keypath)

    def __call__(self, s: Slot, kept: bool = True) -> Leaf:
        if s.opaque is not None:
            return Leaf(s.path, opaque=s.opaque)
        fetch = device = sharding = shard = x = None
        if kept and s.source != "dropped":
            x = self.value(s)
            device, sharding, shard = self.placement(x)
            fetch = functools.partial(_fetch, x)
        row = None if s.row is None else (self.variable_stats if s.source == "in" else self.stats)[s.row]
        histogram = None
        if row is not None and not row.hist and x is not None:
            histogram = functools.partial(stats.histogram, x, row)
        return Leaf(s.path, s.shape, s.dtype, device or self.placement.default, sharding or "", row,
                    fetch=fetch, shard_shape=shard, handle=x, histogram=histogram)


def leaf_maker(plan: Plan, words: np.ndarray, sources: dict[Source, Any], device: str) -> _LeafMaker:
    """The :class:`Leaf` of each of ``plan``'s slots, for arrays described alongside a call (as
    gradients are): ``words`` their in-call summaries (fetched), ``sources`` where they live."""
    return _LeafMaker(sources, _call_stats(plan, words, sources), [], _Placement(device))


def _diffs(plan: Plan, leaf: _LeafMaker, variables: Callable[[], list[Leaf]],
           delta_words: np.ndarray) -> list[CollectionDiff]:
    """Each mutated collection leaf by leaf: added, changed or unchanged (element-wise where both
    sides were described with one shape), and removed (passed in, not returned)."""
    before_at = {lf.path: lf for lf in variables()}
    deltas = stats.unpack_deltas(delta_words, plan.delta_dtypes)
    diffs = []
    for col, slots in plan.mutated.items():
        rows = [_diff(s.path, before_at.get(s.path), leaf(s), plan.pairs.get(s.path), deltas) for s in slots]
        returned = {s.path for s in slots}
        rows += [LeafDiff(path, "removed", before, None) for path, before in before_at.items()
                 if path[:1] == (col,) and path not in returned]
        diffs.append(CollectionDiff(col, rows))
    return diffs


def _diff(path: Path, before: Leaf | None, after: Leaf, pair: tuple[int | None, int | None] | None,
          deltas: list) -> LeafDiff:
    if before is None:
        return LeafDiff(path, "added", None, after)
    if pair is None or pair[0] is None:
        changed = before.shape != after.shape or before.dtype != after.dtype
        return LeafDiff(path, "changed" if changed else "unchanged", before, after)
    n, max_abs, mean_abs = deltas[pair[0]]
    return LeafDiff(path, "changed" if n else "unchanged", before, after, int(n), float(max_abs), float(mean_abs))


def _calls(plan: Plan, leaf: _LeafMaker, kept: bool) -> list[MethodCall]:
    return [MethodCall(c.path, c.module_type, c.method, c.index, order, [leaf(s, kept) for s in c.slots], c.sown)
            for order, c in enumerate(plan.calls)]


def output_device(result: Any) -> str:
    """The device the call's results live on (``cpu:1`` under ``jax.default_device``), or how many
    devices they span; the default device if no array came back."""
    for x in jax.tree.leaves(result):
        if isinstance(x, jax.Array):
            return devices_text(x.sharding.device_set)
    return str(jax.devices()[0])


def devices_text(device_set: Any) -> str:
    """``cpu:1`` for one device, ``4 devices (gpu)`` for several."""
    devices = sorted(device_set, key=lambda d: d.id)
    return str(devices[0]) if len(devices) == 1 else f"{len(devices)} devices ({devices[0].platform})"


def assemble(kind: Kind, module: Any, inputs: Any, result: Any, stats_arrays: Any, plan: Plan,
             timings: Timings, keep: Keep, in_stats: Future[list[Stats]] | None = None) -> Inspection:
    """The host-side :class:`Inspection` of one call: ``result`` is what the runner returned,
    ``stats_arrays`` what :func:`plan_inspection` computed alongside, ``inputs`` the caller's
    variables (``apply``). Statistics are fetched; arrays stay on their device. Waiting for the
    variables' statistics (``in_stats``) adds to ``timings.run_ms``."""
    words, delta_words, dropped = stats_arrays
    words, delta_words = stats.to_host([words, delta_words])
    sources: dict[Source, Any] = {"in": inputs, "out": result, "dropped": dropped}
    call_stats = _call_stats(plan, words, sources)
    t0 = time.perf_counter()
    variable_stats = in_stats.result() if in_stats is not None else []
    timings.run_ms += (time.perf_counter() - t0) * 1000
    device = output_device(result)
    leaf = _LeafMaker(sources, call_stats, variable_stats, _Placement(device), plan)
    # Built when first read; what it holds must not keep arrays the inspection drops.
    of_variables = _LeafMaker({"in": inputs, "out": result}, call_stats, variable_stats, leaf.placement, plan)

    @functools.cache
    def variables() -> list[Leaf]:
        return [of_variables(s) for s in plan.variables]

    kept = keep != "stats"
    return Inspection(
        kind=kind,
        module_type=type(module).__name__,
        output=result[0] if plan.returns_tuple else (None if kind == "init" else result),
        state=result if kind == "init" else (result[1] if plan.returns_tuple else None),
        outputs=[leaf(s) for s in plan.outputs] if kind != "init" else [],
        variables=VariableTree.of_leaves("variables", variables),
        diffs=_diffs(plan, leaf, variables, delta_words) if plan.mutated else [],
        calls=_calls(plan, leaf, kept),
        device=device,
        timings=timings,
        kept=kept,
        notes=list(plan.notes),
        binding=plan.binding,
        subnormals_as_zero=stats.flushes_subnormals(jax.default_backend()),
    )
