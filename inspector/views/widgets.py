"""Interactive notebook views: one self-contained anywidget per displayed object.

An :class:`InspectionWidget` (or :class:`ComparisonWidget`) is ONE widget model: its front
end (``static/tree.js`` and ``static/shell.js``) draws the status line, the first-non-finite
jump buttons, the notes, a tab bar, one lazy tree per tab, the activations-by-depth chart and
the detail pane. No core ipywidgets (Tab, Output, Button, ...) are in the displayed tree, so
it shows wherever anywidget does (JupyterLab, Notebook 7, VS Code, Colab, marimo).

Each tab's tree is a :class:`Tree` (a Python object, not a model) over a
:class:`~inspector.views.rows.RowSource`: its rows reach the browser only when a node is
opened, by a message naming the tree, so what is sent scales with what is visible. A clicked
leaf's array is fetched from its device, cut to a bounded preview, and drawn with treescope
(:mod:`~inspector.views.detail`) into the synced ``detail_html``, which the front end shows in
a sandboxed ``<iframe srcdoc>`` (treescope's script runs there; ``innerHTML`` would not run it).
"""

from __future__ import annotations

import functools
import json
import pathlib
import weakref
from collections.abc import Callable
from typing import Any

import anywidget
import ipywidgets as W
import traitlets

from inspector.model import Inspection
from inspector.names import safe
from inspector.views import attention_html, attention_widget
from inspector.views import detail as D
from inspector.views import format as F
from inspector.views import palette
from inspector.views import sections as S
from inspector.views.depth import depth_figure, depth_points
from inspector.views.rows import (
    BindingSource, CallSource, ComparisonSource, CostSource, DiffSource, GradSource, NodeSource, OutputSource,
    RowSource,
)

_STATIC = pathlib.Path(__file__).parent / "static"
CSS = (palette.custom_properties(".fi-widget,.fi-comparison,.fi-tree") + (_STATIC / "tree.css").read_text()
       + attention_html.CSS)
"""The widget's style: the palette's colours as ``--fi-*`` properties, then ``static/tree.css`` and the attention
grid's (:data:`~inspector.views.attention_html.CSS`), which use them."""
DETAIL_CSS = (_STATIC / "detail.css").read_text()
"""The detail pane's own page style (inside its iframe, where the widget's style does not reach)."""
ESM = (f"const PALETTE_NAMES = {json.dumps([*palette.PALETTE, 'mono'])};\n"
       f"const DETAIL_CSS = {json.dumps(DETAIL_CSS)};\n"
       + (_STATIC / "tree.js").read_text() + attention_html.JS + (_STATIC / "shell.js").read_text())
"""The front end, read once: the tree (``static/tree.js``), the Attention tab (``static/attention.js``), then the
shell around them (``static/shell.js``).
Given to anywidget as text, not as a path: for a path it makes a class-wide ``FileContents`` whose
``changed`` signal holds every instance ever made, forever."""

PLACEHOLDER = "filter: substring or glob (params/**/kernel)"


class Tree:
    """One tab's lazily expanded tree over a :class:`RowSource`, served by its widget's model.

    Its state (``heading``, ``initial``) is part of the widget's synced ``trees``; the selection
    is the widget's (one leaf at a time, across every tree). A view asks for rows with a message
    naming the tree and its own view id (``view``); the reply echoes both, and only that view's
    tree takes it:

    - ``{kind: "children", tree, view, id, offset, until?}`` ->
      ``{kind: "children", tree, view, id, offset, rows, toward?}`` (:meth:`RowSource.page`; with
      ``until``, ``toward`` is the child of ``id`` that is or holds that row, which the view opens next);
    - ``{kind: "search", tree, view, query, seq}`` -> ``{kind: "search", tree, view, seq, rows, total}``.
    """

    def __init__(self, owner: _Shell, name: str, source: RowSource[Any] | None = None):
        self.owner = owner
        self.name = name
        self.heading = ""
        self.initial: list[Any] = []
        self.placeholder = PLACEHOLDER
        self._source: RowSource[Any] | Callable[[], RowSource[Any] | None] | None = None
        self._select_handlers: list[Callable[[str], None]] = []
        if source is not None:
            self.set_source(source)

    @property
    def source(self) -> RowSource[Any] | None:
        """The rows shown; ``None`` once a weakly held inspection is gone."""
        s = self._source
        return s() if callable(s) and not isinstance(s, RowSource) else s

    def set_source(self, source: RowSource[Any] | Callable[[], RowSource[Any] | None]) -> None:
        """``source`` or a function returning it (so that the widget need not keep it alive)."""
        self._source = source
        rows = self.source
        self.heading = rows.heading() if rows is not None else ""
        self.initial = rows.initial() if rows is not None else []
        self.owner._sync_trees()

    def set_message(self, heading: str) -> None:
        """Shows ``heading`` (plain text) and no rows, until a source is set (a tab computed when opened)."""
        self._source = None
        self.heading, self.initial = safe(heading), []
        self.owner._sync_trees()

    def state(self) -> dict[str, Any]:
        """What the browser holds of this tree (part of the widget's ``trees``)."""
        return {"heading": self.heading, "initial": self.initial, "placeholder": self.placeholder}

    @property
    def selected(self) -> str | None:
        """The id of the leaf selected in this tree, if the widget's selection is here."""
        sel = self.owner.selected
        return sel["id"] if sel and sel.get("tree") == self.name else None

    @selected.setter
    def selected(self, id: str | None) -> None:
        if id is None:
            if self.selected is not None:
                self.owner.selected = None
        else:
            self.owner.selected = {"tree": self.name, "id": id}

    def on_select(self, handler: Callable[[str], None]) -> None:
        """Calls ``handler(id)`` whenever a leaf of this tree is selected (a click, or :meth:`select`)."""
        self._select_handlers.append(handler)

    def select(self, id: str) -> None:
        """Selects row ``id``: every view loads, scrolls to and flashes it (again, if it was selected)."""
        if self.selected == id:
            self.owner.selected = None
        self.owner.selected = {"tree": self.name, "id": id}

    def send(self, content: dict) -> None:
        """Sends ``content`` to this tree in every view (the widget's custom message, with the tree's name)."""
        self.owner.send({**content, "tree": self.name})

    def answer(self, msg: dict) -> None:
        """Answers one request from a view (see the class docstring)."""
        source = self.source
        if source is None:
            return
        view, kind = msg.get("view"), msg.get("kind")
        if kind == "children":
            id, offset, until = str(msg.get("id", "")), int(msg.get("offset", 0)), msg.get("until")
            reply = {"kind": "children", "view": view, "id": id, "offset": offset,
                     "rows": source.page(id, offset, until=None if until is None else str(until))}
            if until is not None:
                reply["toward"] = source.toward(id, str(until))
            self.send(reply)
        elif kind == "search":
            rows, total = source.search(str(msg.get("query", "")))
            self.send({"kind": "search", "view": view, "seq": msg.get("seq"), "rows": rows, "total": total})


class Jump:
    """The Python handle of a first-non-finite button drawn by the front end (``description``
    is its text; ``layout.display`` is ``"none"`` while it is hidden; :meth:`click` does what a click does)."""

    class _Layout:
        def __init__(self, jump: Jump):
            self._jump = jump

        @property
        def display(self) -> str:
            return "inline-flex" if self._jump.description else "none"

    def __init__(self, owner: InspectionWidget, trait: str, action: Callable[[], None]):
        self._owner, self._trait, self._action = owner, trait, action
        self.layout = Jump._Layout(self)

    @property
    def description(self) -> str:
        return str(getattr(self._owner, self._trait))

    def click(self) -> None:
        self._action()


class Tabs:
    """The Python handle of the front end's tab bar: ``titles`` and the open tab's ``selected_index``."""

    def __init__(self, owner: _Shell):
        self._owner = owner

    @property
    def titles(self) -> tuple[str, ...]:
        return tuple(name.capitalize() for name in self._owner.tree_names)

    @property
    def selected_index(self) -> int:
        names = list(self._owner.tree_names)
        return names.index(self._owner.tab) if self._owner.tab in names else 0

    @selected_index.setter
    def selected_index(self, index: int) -> None:
        self._owner.tab = self._owner.tree_names[index]


class Status:
    """The Python handle of the status line: ``value`` is its text."""

    def __init__(self, owner: _Shell):
        self._owner = owner

    @property
    def value(self) -> str:
        return self._owner.status_text


class _Shell(anywidget.AnyWidget):
    """What :class:`InspectionWidget` and :class:`ComparisonWidget` share: one model, its trees and detail."""

    _esm = ESM
    _css = CSS
    # The one model of a displayed object: no Layout model beside it (the front end styles itself).
    layout = traitlets.Instance(W.Layout, allow_none=True, default_value=None).tag(
        sync=True, **W.widget_serialization)
    kind = traitlets.Unicode("inspection").tag(sync=True)
    status_text = traitlets.Unicode("").tag(sync=True)
    notes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    tree_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    trees_state = traitlets.Dict().tag(sync=True)
    tab = traitlets.Unicode("").tag(sync=True)
    selected: Any = traitlets.Dict(default_value=None, allow_none=True).tag(sync=True)
    """The selected leaf, ``{"tree": name, "id": id}``, or None: one at a time across the trees."""
    detail_html = traitlets.Unicode("").tag(sync=True)
    """The detail pane's HTML (:mod:`~inspector.views.detail`: treescope's script included), shown in a
    sandboxed iframe."""

    def __init__(self, **kwargs: Any):
        self.trees: dict[str, Tree] = {}
        self._syncing = True
        super().__init__(**kwargs)
        self._syncing = False
        self.status = Status(self)
        self.tabs = Tabs(self)
        self.on_msg(lambda _widget, msg, _buffers: self._on_msg(msg))
        self.observe(self._on_selected, "selected")

    def _sync_trees(self) -> None:
        if not self._syncing:
            self.trees_state = {name: tree.state() for name, tree in self.trees.items()}

    def _set_trees(self, names: list[str], make: Callable[[str], Tree]) -> None:
        """Shows a tab per tree in ``names``: trees kept where they are named, made where new, dropped where not."""
        if list(self.trees) == names:
            return
        self._syncing = True
        try:
            self.trees = {name: self.trees.get(name) or make(name) for name in names}
        finally:
            self._syncing = False
        with self.hold_sync():
            self.tree_names = names
            self._sync_trees()
            if self.tab not in names:
                self.tab = names[0]
            if self.selected and self.selected.get("tree") not in names:
                self.selected = None

    def _on_msg(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        tree = self.trees.get(str(msg.get("tree")))
        if tree is not None:
            tree.answer(msg)

    def _on_selected(self, change: dict) -> None:
        new = change["new"]
        if new:
            tree = self.trees.get(str(new.get("tree")))
            if tree is not None:
                for handler in tree._select_handlers:
                    handler(str(new.get("id")))

    def set_status(self, text: str) -> None:
        """Shows ``text`` (plain text) as the status line."""
        self.status_text = safe(text)

    def __repr__(self) -> str:
        """``InspectionWidget(<status line>)``: what a front end without widgets shows as text."""
        return f"{type(self).__name__}({self.status_text!r})"

    @property
    def selected_tab(self) -> str:
        """The open tab, by tree name (``'variables'``, ``'intermediates'``, ...)."""
        return self.tab or (self.tree_names[0] if self.tree_names else "")

    @selected_tab.setter
    def selected_tab(self, name: str) -> None:
        attention = name == "attention" and bool(getattr(self, "attention_label", None))
        if name not in self.trees and not attention:
            raise KeyError(f"no tab {name!r}; tabs: {', '.join(self.trees)}")
        self.tab = name

    def _show(self, html: str) -> None:
        self.detail_html = html


def close_tree(widget: Any) -> None:
    """Closes ``widget``, its children and their layout/style models (each is a model of its own)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    close_parts(widget)
    widget.close()


def close_parts(widget: Any) -> None:
    """Closes ``widget``'s layout and style models."""
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, W.Widget):
            part.close()


def _close_if_alive(ref: weakref.ref) -> None:
    widget = ref()
    if widget is not None:
        widget.close()


_SOURCES: dict[str, Callable[[Inspection], RowSource[Any]]] = {
    "variables": NodeSource.variables, "mutations": DiffSource, "intermediates": CallSource,
    "gradients": GradSource, "binding": BindingSource, "output": OutputSource}
"""Each tab's rows; the tabs are shown in :data:`~inspector.views.sections.TAB_ORDER` (the static page's
order too), ``gradients`` only for an inspection with gradients, ``costs`` only where they can be asked
(:func:`tab_names`; its rows are a :class:`~inspector.views.rows.CostSource`, made when the tab is opened)."""

COSTS_WAITING = "costs: computed when this tab is opened (the call is traced once more, about 1 s on a large model)"
COSTS_COMPUTING = "costs: computing... (tracing the call)"


def tab_names(insp: Inspection | None) -> list[str]:
    """The tabs a widget of ``insp`` shows (before one is set: as for one without gradients or costs)."""
    from inspector import costs as C

    return [name for name in S.TAB_ORDER
            if (name != "gradients" or (insp is not None and insp.grads is not None))
            and (name != "costs" or (insp is not None and C.available(insp)))]


def _sources(insp: Inspection, names: list[str]) -> dict[str, RowSource[Any]]:
    """The row sources of ``insp``'s tabs (``costs`` excepted: made when opened)."""
    return {name: _SOURCES[name](insp) for name in names if name in _SOURCES}


def _lines(text: str) -> str:
    """``text`` with each line :func:`~inspector.names.safe` (newlines kept)."""
    return "\n".join(safe(line) for line in text.splitlines())


def _while_alive(ref: weakref.ref, source: RowSource[Any]) -> RowSource[Any] | None:
    return source if ref() is not None else None


class InspectionWidget(_Shell):
    """One anywidget: status, first-non-finite jumps, the first NaN's operation (found by the "Find the
    operation" button: :meth:`find_origin`), notes, a tab per section (Variables, Mutations, Intermediates with
    its activations-by-depth chart, Costs where they can be computed (computed when the tab is first opened:
    :meth:`compute_costs`), Gradients for a gradient inspection, Binding, Output: each a lazy :class:`Tree`)
    and the selected leaf's detail.

    With ``weak=True`` (how a displayed :class:`Inspection` builds it) the widget holds the
    inspection only weakly: deleting the inspection frees it, its arrays and this widget
    (closed by a finalizer). Otherwise the widget keeps it until :meth:`close`.
    """

    jump_label = traitlets.Unicode("").tag(sync=True)
    """The forward first-non-finite button's text (``""``: no button)."""
    grad_jump_label = traitlets.Unicode("").tag(sync=True)
    """The gradient first-non-finite button's text (``""``: no button)."""
    depth_html = traitlets.Unicode("").tag(sync=True)
    """The activations-by-depth figure (:func:`~inspector.views.depth.depth_figure`), above the Intermediates tree."""
    attention_label = traitlets.Unicode("").tag(sync=True)
    """The Attention tab's button (``""``: no tab); its grid and maps are sent on request
    (:mod:`~inspector.views.attention_widget`)."""
    origin_line = traitlets.Unicode("").tag(sync=True)
    """The line about the first NaN/Inf's operation (:func:`~inspector.views.sections.origin_words`); ``""``: none."""
    origin_text = traitlets.Unicode("").tag(sync=True)
    """The origin's :meth:`~inspector.origin.Origin.to_text` once found (operands' statistics, every frame)."""
    origin_state = traitlets.Unicode("").tag(sync=True)
    """``""`` (nothing non-finite), ``"offer"`` (the "Find the operation" button), ``"running"``, ``"done"``."""
    costs_state = traitlets.Unicode("").tag(sync=True)
    """The Costs tab: ``""`` (none), ``"waiting"`` (computed when opened), ``"computing"``, ``"done"``, ``"error"``."""
    costs_order = traitlets.Unicode("tree").tag(sync=True)
    """How the Costs tab lists modules: ``"tree"`` or ``"flops"`` (each module's children, most FLOPs first)."""

    def __init__(self, insp: Inspection | None = None, *, weak: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.weak = weak
        self._insp: Any = None
        self.jump = Jump(self, "jump_label", self.jump_to_first_nonfinite)
        self.grad_jump: Jump | None = None  # made for an inspection with a non-finite gradient
        self.costs: Any = None  # the inspection's Costs, once the Costs tab computed them
        self.observe(lambda change: self._costs_opened(), "tab")
        self.observe(lambda change: self._show_costs(), "costs_order")
        self._set_tabs(tab_names(insp))
        self.tab = "variables"
        if insp is not None:
            self.set_inspection(insp)
        else:
            self.set_status("waiting")

    def _set_tabs(self, names: list[str]) -> None:
        def make(name: str) -> Tree:
            tree = Tree(self, name)
            tree.on_select(functools.partial(self.show_detail, name))
            return tree

        self._set_trees(names, make)

    def _on_msg(self, msg: Any) -> None:
        if isinstance(msg, dict) and msg.get("kind") == "attention":
            attention_widget.answer(self.inspection, msg, lambda content, buffers: self.send(content, buffers))
            return
        if isinstance(msg, dict) and msg.get("kind") == "origin":
            self.find_origin()
            return
        if isinstance(msg, dict) and msg.get("kind") == "jump":
            if msg.get("which") == "grad":
                self.jump_to_first_nonfinite_grad()
            else:
                self.jump_to_first_nonfinite()
            return
        super()._on_msg(msg)

    @property
    def inspection(self) -> Inspection | None:
        return self._insp() if self.weak and self._insp is not None else self._insp

    def set_inspection(self, insp: Inspection) -> None:
        """Shows ``insp`` (tabs, rows, status, notes, chart and jumps; the detail is cleared)."""
        self._set_tabs(tab_names(insp))
        with self.hold_sync():
            if self.weak:
                # the rows hold the inspection weakly (a proxy): this widget, kept open by ipywidgets, must not
                # keep it alive; when it goes, the finalizer closes the widget, which frees the rows
                ref = weakref.ref(insp)
                self._insp = ref
                proxy: Any = weakref.proxy(insp)
                for name, source in _sources(proxy, list(self.trees)).items():
                    self.trees[name].set_source(functools.partial(_while_alive, ref, source))
                weakref.finalize(insp, _close_if_alive, weakref.ref(self))
            else:
                self._insp = insp
                for name, source in _sources(insp, list(self.trees)).items():
                    self.trees[name].set_source(source)
            t = insp.timings
            timing = (f"done in {t.run_ms:.1f} ms (cached: no trace, no compile)" if t.cached else
                      f"done in {t.total_ms:.0f} ms: trace {t.trace_ms:.0f} ms, compile {t.compile_ms:.0f} ms, "
                      f"run {t.run_ms:.1f} ms")
            self.set_status(f"{F.header(insp, timings=False)} · {timing}")
            self.notes = [safe(f"note: {n}") for n in insp.notes]
            self.depth_html = depth_figure(depth_points(insp))
            self.attention_label = attention_widget.tab_label(insp)
            self.selected = None
            self.detail_html = ""
            first = insp.first_nonfinite()
            self.jump_label = (safe(f"{S.line(S.first_row(first))} ({F.call_kind(first)}) - jump")
                               if first is not None else "")
            first = insp.first_nonfinite_grad()
            if first is not None and self.grad_jump is None:
                self.grad_jump = Jump(self, "grad_jump_label", self.jump_to_first_nonfinite_grad)
            self.grad_jump_label = (safe(f"{S.line(S.first_grad_row(first))} ({F.call_kind(first)}) - jump")
                                    if first is not None else "")
            self._set_origin(insp)
            self._set_costs(insp)

    # -- the first NaN's operation ----------------------------------------------------------
    def _set_origin(self, insp: Inspection) -> None:
        from inspector import origin as O

        done = O.computed(insp)
        if done is not None:
            self.origin_line, self.origin_text, self.origin_state = (
                safe(S.origin_words(done)), _lines(done.to_text()), "done")
        elif O.available(insp):
            self.origin_line = "first NaN/Inf: its operation is found by re-running the call"
            self.origin_text, self.origin_state = "", "offer"
        else:
            self.origin_line = self.origin_text = self.origin_state = ""

    def find_origin(self) -> None:
        """What the "Find the operation" button does: re-runs the first non-finite call (once) to find the
        operation that made its NaN/Inf (:meth:`Inspection.nonfinite_origin`), then shows it."""
        insp = self.inspection
        if insp is None or self.origin_state != "offer":
            return
        self.origin_state = "running"
        try:
            origin = insp.nonfinite_origin()
        except Exception as e:  # noqa: BLE001 - computing an origin never raises; a broken one is said
            self.origin_line, self.origin_state = safe(f"first NaN/Inf: not found ({type(e).__name__}: {e})"), "done"
            return
        if origin is None:
            self.origin_line = self.origin_state = ""
            return
        self.origin_line, self.origin_text, self.origin_state = (
            safe(S.origin_words(origin)), _lines(origin.to_text()), "done")

    # -- per-module cost --------------------------------------------------------------------
    def _set_costs(self, insp: Inspection) -> None:
        from inspector import costs as C

        if "costs" not in self.trees:
            self.costs, self.costs_state = None, ""
            return
        self.costs = C.computed(insp)
        if self.costs is not None:
            self.costs_state = "done"
            self._show_costs()
        else:
            self.costs_state = "waiting"
            self.trees["costs"].set_message(COSTS_WAITING)
            self._costs_opened()

    def _costs_opened(self) -> None:
        """Computes the costs when the Costs tab is open and they are not (never at first render otherwise)."""
        if self.tab == "costs" and self.costs_state == "waiting":
            self.compute_costs()

    def compute_costs(self) -> None:
        """Computes the inspection's costs (``insp.costs()``, cached there) and shows them in the Costs tab;
        the tab says "computing..." meanwhile, and what went wrong if it fails."""
        from inspector import costs as C

        insp = self.inspection
        if insp is None or "costs" not in self.trees or self.costs_state in ("computing", "done"):
            return
        tree = self.trees["costs"]
        self.costs_state = "computing"
        tree.set_message(COSTS_COMPUTING)
        try:
            self.costs = C.inspection_costs(insp)
        except Exception as e:  # noqa: BLE001 - shown in the tab, not as a traceback
            self.costs_state = "error"
            tree.set_message(f"costs unavailable: {type(e).__name__}: {e}")
            return
        self.costs_state = "done"
        self._show_costs()

    def _show_costs(self) -> None:
        if self.costs is not None and "costs" in self.trees:
            self.trees["costs"].set_source(CostSource(self.costs, "flops" if self.costs_order == "flops" else "tree"))

    def jump_to_first_nonfinite(self) -> None:
        """Opens the Intermediates tab at the first call, in execution order, with a NaN or Inf."""
        first = self.inspection.first_nonfinite() if self.inspection else None
        if first is None:
            return
        self.selected_tab = "intermediates"
        self.trees["intermediates"].select(S.call_id(first))

    def jump_to_first_nonfinite_grad(self) -> None:
        """Opens the Gradients tab at the first gradient, in backward order, with a NaN or Inf."""
        first = self.inspection.first_nonfinite_grad() if self.inspection else None
        if first is None or "gradients" not in self.trees:
            return
        self.selected_tab = "gradients"
        self.trees["gradients"].select(next(S.grad_leaf_row(first, g).id for g in first.grads or () if g.nonfinite))

    def show_detail(self, view: str, id: str) -> None:
        """Shows leaf ``id`` of tree ``view`` in the detail pane (``detail_html``); it becomes the selection."""
        tree = self.trees[view]
        if tree.selected != id:
            self.selected = {"tree": view, "id": id}
            return  # the selection's observer comes back here
        source = tree.source
        item = source.leaf(id) if source is not None else None
        if source is None or item is None:
            self._show(f"<i>{F.esc(id)}: not a leaf</i>")
            return
        self._show(D.leaf_detail(f"{view}: {source.label(id)}", item))


class ComparisonWidget(_Shell):
    """Two inspections compared, as one anywidget: their header, the ranked deltas (one lazy
    :class:`Tree`, ``tree``); a click on a leaf shows both arrays."""

    def __init__(self, comparison: Any, **kwargs: Any):
        super().__init__(kind="comparison", **kwargs)
        self.comparison = comparison
        self.rows = ComparisonSource(comparison)
        self._set_trees(["comparison"], lambda name: Tree(self, name))
        self.tree = self.trees["comparison"]
        self.tree.on_select(self.show_detail)
        self.tree.set_source(self.rows)
        self.set_status(F.comparison_header(comparison))

    def show_detail(self, id: str) -> None:
        """Shows the compared pair ``id`` in the detail pane (``detail_html``)."""
        if self.tree.selected != id:
            self.tree.selected = id
            return  # the selection's observer comes back here
        d = self.rows.leaf(id)
        self._show(D.pair_detail(self.comparison.labels, d) if d is not None else f"<i>{F.esc(id)}: not a leaf</i>")


def show(insp_run: Any, *args: Any, **kwargs: Any) -> InspectionWidget:
    """Displays a widget now, runs ``insp_run(*args, **kwargs)`` with live status
    (tracing -> compiling -> running on <device> -> done) and fills it in."""
    from IPython.display import display

    import jax

    widget = InspectionWidget()
    display(widget)
    device = str(jax.devices()[0])
    labels = {"tracing": "tracing...", "compiling": "compiling...", "running": f"running on {device}...",
              "done": "done"}
    try:
        insp = insp_run(*args, on_phase=lambda phase: widget.set_status(labels.get(phase) or str(phase)), **kwargs)
    except Exception as e:
        widget.set_status(f"failed: {type(e).__name__}: {e}")
        raise
    widget.set_inspection(insp)
    return widget
