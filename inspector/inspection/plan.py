"""What an inspection records at trace time: which arrays get statistics (outputs, variables,
mutated collections, intermediates), where each lives (:class:`Slot`), the captured calls in
execution order (:class:`PlannedCall`), and the statistics summarized inside the same computation
(:func:`plan_inspection`). The :class:`Plan` it returns is read on the host by
:mod:`inspector.inspection.assemble`."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import jax
import numpy as np
from flax.core.scope import CollectionFilter

from inspector import stats
from inspector._compat import lifted_target, traced_effects
from inspector.capture import CaptureFilter
from inspector.engine.hooks import TiedSummaries
from inspector.inspection import backend
from inspector.inspection.packing import Packed, pack
from inspector.engine.recorder import Event, Recorder
from inspector.engine.results import held_arrays
from inspector.engine.signature import is_array
from inspector.model import BindingCall, Kind, format_path
from inspector.names import Path


INTERMEDIATES = "intermediates"
Keep = Literal["arrays", "stats"]
"""``'arrays'`` keeps every captured array on its device (fetched when read); ``'stats'`` returns
only their statistics, so activations are never transferred or kept alive."""


SlotSource = Literal["in", "out", "dropped"]
"""Where a described value lives: the caller's variables (``'in'``), the returned result
(``'out'``), or the arrays returned only to redo a summary exactly and never kept (``'dropped'``;
``None`` where a lean program did not return them)."""


@dataclasses.dataclass
class Slot:
    """Where one described value lives: ``source``, its key path there, and its statistics row
    (among the described arrays of its source)."""

    path: Path
    source: SlotSource
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
    recorded :class:`~inspector.engine.recorder.Event` (execution order), ``-1`` when flax returned more
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
    packed: list[Packed] = dataclasses.field(default_factory=list)  # small captured arrays in one buffer per dtype

    def read(self, source: SlotSource, tree: Any) -> list[Any]:
        """The value of each of this plan's slots in ``source``, read from ``tree`` (its
        ``Slot.at`` says which) by one generated expression, made the first time."""
        getter = self._getters.get(source)
        if getter is None:
            slots = {id(s): s for s in (*self.outputs, *self.variables, *(s for v in self.mutated.values() for s in v),
                                        *(s for c in self.calls for s in c.slots), *self.described)
                     if s.source == source and s.opaque is None}
            for i, slot in enumerate(slots.values()):
                slot.at = i
            getter = self._getters[source] = keypath_getter([slot.keypath for slot in slots.values()])
        return getter(tree)

    @functools.cached_property
    def _getters(self) -> dict[SlotSource, Callable[[Any], list[Any]]]:
        return {}

    @functools.cached_property
    def summary_rows(self) -> stats.RowGroups:
        """How the :attr:`summarized` rows are decoded (every call)."""
        slots = [self.described[i] for i in self.summarized]
        return stats.row_groups([stats.layout(s.dtype) for s in slots], [math.prod(s.shape) for s in slots])


def key_str(k: Any) -> str:
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

    def slot(self, path: Path, source: SlotSource, keypath: tuple, value: Any) -> Slot:
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

    def slots(self, tree: Any, prefix: Path, source: SlotSource, base: tuple = ()) -> list[Slot]:
        flat, _ = jax.tree_util.tree_flatten_with_path(tree)
        if not flat and tree is None:
            return [Slot(prefix, source, base, opaque="NoneType: None")]
        out = []
        for kp, v in flat:
            path, keypath = prefix + tuple(key_str(k) for k in kp), base + tuple(kp)
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
                    in_call: bool = True, lean: bool = False, packs: bool = False) -> InspectionHooks:
    """The hooks of an inspecting :class:`~inspector.engine.runner.Runner` (:class:`InspectionHooks`).
    Inside the trace, they turn flax's result into ``(result to return, statistics arrays, Plan)``. With
    ``in_call`` false, arrays numpy can read in place (CPU) are all described after the call, so nothing
    but the capture is compiled: the program compiles about as fast as flax's own.

    With ``keep='stats'`` the captured arrays are returned to the device (never kept) so that a
    summary that can't be trusted is redone exactly from them. With ``lean`` as well, they are
    not returned at all (XLA then keeps them in reused buffers, and a large model runs several
    percent faster): :func:`~inspector.inspection.assemble.assemble` raises
    :class:`~inspector.inspection.assemble.NeedsArrays` instead of redoing, and the
    caller runs the call again with a program that returns them. A program with side effects
    (``jax.debug.print``, callbacks) returns them anyway, so that it never has to run twice.

    With ``packs`` (and ``keep='arrays'``, on one device), the small captured arrays are returned in one
    buffer per dtype (:mod:`~inspector.inspection.packing`): the result holds a placeholder for each."""
    return InspectionHooks(kind, mutable, capture, keep, in_call, lean, packs)


class InspectionHooks:
    """:class:`~inspector.engine.hooks.TraceHooks` of an inspection (see :func:`plan_inspection`): summaries
    of captured values traced where they are produced (:func:`tie_summaries`, where ``in_call``), then the
    :class:`Plan` and the statistics of every described array, once flax returned."""

    def __init__(self, kind: Kind, mutable: CollectionFilter, capture: CaptureFilter, keep: Keep,
                 in_call: bool = True, lean: bool = False, packs: bool = False) -> None:
        self.kind, self.mutable, self.capture, self.keep, self.in_call, self.lean = (
            kind, mutable, capture, keep, in_call, lean)
        self.packs = packs and keep == "arrays"
        self.ties_captures = in_call

    def at_capture(self, value: Any, tied: TiedSummaries) -> Any:
        return tie_summaries(value, tied)

    def after(self, inputs: tuple[tuple[Any, ...], dict[str, Any]], result: Any, recorder: Recorder,
              tied: TiedSummaries) -> tuple[Any, Any, Plan]:
        """``(result to return, (summary rows, deltas, arrays returned to redo a summary), Plan)``."""
        kind, mutable, capture, keep, in_call, lean = (
            self.kind, self.mutable, self.capture, self.keep, self.in_call, self.lean)
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
            fields = tied.get(a)
            if fields is not None:
                known[i] = fields
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
        buffers: list[Any] = []
        placed: list[Packed] = []
        if self.packs and inter and jax.device_count() == 1:  # (packing spread arrays would gather them)
            packed, buffers, placed = pack(inter)
            if placed:
                state = type(state)({k: (packed if k == INTERMEDIATES else v) for k, v in state.items()})
                result = state if kind == "init" else (y, state)
        notes = dropped_notes(recorder, calls)
        return result, (summary_words, deltas, returned, buffers), Plan(
            outputs, variables, mutated, calls, pairs, returns_tuple, collector.described,
            [b.dtype for b, _ in delta_pairs], recorder.binding, notes, recorder.multi_device, summarized, placed)


def tie_summaries(value: Any, tied: TiedSummaries) -> Any:
    """An inspection's ``at_capture``: ``value`` (a captured method's result) with the summary
    reductions of each of its large arrays traced where it is produced (noted in ``tied``)
    and tied to it by an optimization barrier, so that what runs next waits for them. XLA then
    reduces each array while it is still in cache, instead of reading all of them back from
    memory at the end of the call. The value is returned unchanged. CPU backend only: on a GPU,
    XLA fuses the reductions into the producer's own kernel, which the barrier would prevent."""
    if not backend.tie_summaries_where_produced():
        return value
    leaves, tree = jax.tree_util.tree_flatten(value)
    at, fields = [], []
    for i, x in enumerate(leaves):
        # Tracers only: a concrete array the module returns must stay concrete for the code after it.
        # One tied already (a submodule's result, returned as this module's) is summarized once.
        if tied.get(x) is not None:
            continue
        f = stats.summary_fields(x) if isinstance(x, jax.core.Tracer) else None
        if f is not None:
            at.append(i)
            fields.append(f)
    if not at:
        return value
    held, fields = jax.lax.optimization_barrier(([leaves[i] for i in at], fields))
    for i, x, f in zip(at, held, fields):
        leaves[i] = x
        tied.add(x, f)
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
    if not in_call and backend.host_describes_after_the_call(multi_device):
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
        where = format_path(ev.path)
        if found is not None:
            lp, wrapper = found
            target = lifted_target(wrapper)
            axes = "variable_axes={'params': 0, 'intermediates': 0}"
            example = f"nn.{wrapper.__name__[:-len(target)].lower()}(..., {axes})" if target else axes
            notes.append(f"not captured: {where}:{ev.name} runs inside {format_path(lp)} ({wrapper.__name__}), a "
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


def lookup(tree: Any, keypath: tuple) -> Any:
    for k in keypath:
        tree = _step(tree, k)
    return tree


def keypath_getter(keypaths: list[tuple]) -> Callable[[Any], list[Any]]:
    """A function of a tree returning the value at each of ``keypaths``: one generated list
    expression of subscripts (:func:`lookup` step by step costs a call per step)."""
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
