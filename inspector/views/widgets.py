"""Interactive notebook views: a lazy tree per section, a status line and a leaf detail pane.

Each tree is one anywidget model whose rows come from a
:class:`~inspector.views.rows.RowSource` only when a node is opened, so the number
of widget models is fixed (not one per leaf) and what is sent scales with what is
visible. A clicked leaf's array is fetched from its device, cut to a bounded
preview, and drawn with treescope inside an ``Output`` widget (treescope's script
does not run inside ``ipywidgets.HTML``).
"""

from __future__ import annotations

import functools
import pathlib
import weakref
from typing import Any
from collections.abc import Callable

import anywidget
import ipywidgets as W
import traitlets
from IPython.display import HTML

from inspector.model import Inspection
from inspector.names import safe
from inspector.views import detail as D
from inspector.views import format as F
from inspector.views import palette
from inspector.views import sections as S
from inspector.views.depth import depth_figure, depth_points
from inspector.views.rows import (
    BindingSource, CallSource, ComparisonSource, DiffSource, GradSource, NodeSource, OutputSource, RowSource,
)

_STATIC = pathlib.Path(__file__).parent / "static"
CSS = palette.custom_properties(".fi-widget,.fi-comparison,.fi-tree") + (_STATIC / "tree.css").read_text()
"""The widget's style: the palette's colours as ``--fi-*`` properties, then ``static/tree.css``, which uses them."""
ESM = (_STATIC / "tree.js").read_text()
"""The tree's front end, read once. Given to anywidget as text, not as a path: for a path it makes a
class-wide ``FileContents`` whose ``changed`` signal holds every instance ever made, forever."""


class TreeWidget(anywidget.AnyWidget):
    """A lazily expanded tree over a :class:`RowSource`, under its section's title line (``heading``),
    with a search box.

    Every view of the widget shares ``initial`` and ``selected``. A view asks for rows
    with a message that carries its own id (``view``); the reply echoes it, and only
    that view takes it:

    - ``{kind: "children", view, id, offset, until?}`` -> ``{kind: "children", view, id, offset, rows, toward?}``
      (:meth:`RowSource.page`; with ``until``, ``toward`` is the child of ``id`` that is or holds that row,
      which the view opens next to reveal it);
    - ``{kind: "search", view, query, seq}`` -> ``{kind: "search", view, seq, rows, total}``.
    """

    _esm = ESM
    _css = CSS
    initial: traitlets.List[Any] = traitlets.List().tag(sync=True)
    heading = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("filter: substring or glob (params/**/kernel)").tag(sync=True)
    selected = traitlets.Unicode(None, allow_none=True).tag(sync=True)

    def __init__(self, source: RowSource[Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._source: RowSource[Any] | Callable[[], RowSource[Any] | None] | None = source
        self._select_handlers: list[Callable[[str], None]] = []
        self.on_msg(lambda _widget, msg, _buffers: self.answer(msg))
        self.observe(self._on_selected, "selected")
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

    def on_select(self, handler: Callable[[str], None]) -> None:
        """Calls ``handler(id)`` whenever ``selected`` becomes ``id`` (a click on a leaf, or :meth:`select`)."""
        self._select_handlers.append(handler)

    def select(self, id: str) -> None:
        """Selects row ``id``: every view loads, scrolls to and flashes it (again, if it was selected)."""
        if self.selected == id:
            self.selected = None
        self.selected = id

    def _on_selected(self, change: dict) -> None:
        if change["new"] is not None:
            for handler in self._select_handlers:
                handler(change["new"])

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
"""The tabs, in order; ``gradients`` only for an inspection with gradients (:func:`tab_names`)."""


def tab_names(insp: Inspection | None) -> list[str]:
    """The tabs a widget of ``insp`` shows (before one is set: as for one without gradients)."""
    return [name for name in _SOURCES if name != "gradients" or (insp is not None and insp.grads is not None)]


class InspectionWidget(W.VBox):
    """Status, first-non-finite jumps, a tab per section (Variables, Mutations, Intermediates,
    Gradients for a gradient inspection, Binding, Output: each a lazy :class:`TreeWidget`), leaf detail.

    With ``weak=True`` (how a displayed :class:`Inspection` builds it) the widget holds the
    inspection only weakly: deleting the inspection frees it, its arrays and this widget
    (closed by a finalizer). Otherwise the widget keeps it until :meth:`close`.
    """

    def __init__(self, insp: Inspection | None = None, *, weak: bool = False, **kwargs: Any):
        self.status = W.HTML(layout=W.Layout(margin="0 0 4px 0"))
        self.status.add_class("fi-status")
        self.jump = W.Button(description="", button_style="danger", layout=W.Layout(display="none", width="auto"))
        self.jump.add_class("fi-jump")
        self.grad_jump: W.Button | None = None  # made for an inspection with gradients
        self.trees: dict[str, TreeWidget] = {}
        self.depth = W.HTML()  # the Intermediates tab's activations-by-depth chart, above its tree
        self.depth.add_class("fi-depth-chart")
        self._depth_box = W.VBox([self.depth])  # the Intermediates tab: the chart, then the tree
        self.tabs = W.Tab()
        self._set_tabs(tab_names(insp))
        self.notes = W.HTML()
        self.notes.add_class("fi-notes")
        self.detail = W.Output(layout=W.Layout(border="1px solid var(--fi-line)", padding="4px",
                                               min_height="2em"))
        self.detail.add_class("fi-detail-pane")
        super().__init__(children=[self.status, self.jump, self.notes, self.tabs, self.detail], **kwargs)
        self.add_class("fi-widget")
        self.weak = weak
        self._insp: Any = None
        self.jump.on_click(lambda _: self.jump_to_first_nonfinite())
        if insp is not None:
            self.set_inspection(insp)
        else:
            self.set_status("waiting")

    def close(self) -> None:
        """Closes this widget and every model it made (trees, tabs, buttons, their layouts and styles)."""
        for child in self.children:
            close_tree(child)
        close_parts(self)
        super().close()

    def _set_tabs(self, names: list[str]) -> None:
        """Shows a tab per tree in ``names``: trees kept where they are named, made where new, closed where not."""
        if list(self.trees) == names:
            return
        for name in set(self.trees) - set(names):
            close_tree(self.trees.pop(name))
        for name in names:
            if name not in self.trees:
                self.trees[name] = TreeWidget()
                self.trees[name].on_select(functools.partial(self.show_detail, name))
        self.trees = {name: self.trees[name] for name in names}
        if "intermediates" in self.trees:
            self._depth_box.children = [self.depth, self.trees["intermediates"]]
        self.tabs.children = [self._depth_box if name == "intermediates" else tree
                              for name, tree in self.trees.items()]
        self.tabs.titles = [name.capitalize() for name in self.trees]

    @property
    def selected_tab(self) -> str:
        """The open tab, by tree name (``'variables'``, ``'intermediates'``, ...)."""
        return list(self.trees)[self.tabs.selected_index or 0]

    @selected_tab.setter
    def selected_tab(self, name: str) -> None:
        self.tabs.selected_index = list(self.trees).index(name)

    def set_status(self, text: str) -> None:
        self.status.value = F.esc(text)

    @property
    def inspection(self) -> Inspection | None:
        return self._insp() if self.weak and self._insp is not None else self._insp

    def set_inspection(self, insp: Inspection) -> None:
        self._set_tabs(tab_names(insp))
        if self.weak:
            ref = weakref.ref(insp)
            self._insp = ref
            views = insp.__dict__.setdefault("_view_sources", {})  # owned by the inspection, not the widget
            for name, tree in self.trees.items():
                views.setdefault(name, _SOURCES[name](insp))
                tree.set_source(functools.partial(_view_source, ref, name))
            weakref.finalize(insp, _close_if_alive, weakref.ref(self))
        else:
            self._insp = insp
            for name, tree in self.trees.items():
                tree.set_source(_SOURCES[name](insp))
        t = insp.timings
        timing = (f"done in {t.run_ms:.1f} ms (cached: no trace, no compile)" if t.cached else
                  f"done in {t.total_ms:.0f} ms: trace {t.trace_ms:.0f} ms, compile {t.compile_ms:.0f} ms, "
                  f"run {t.run_ms:.1f} ms")
        self.set_status(f"{F.header(insp, timings=False)} · {timing}")
        self.notes.value = "".join(f"<div class='fi-note'>note: {F.esc(n)}</div>" for n in insp.notes)
        self.depth.value = depth_figure(depth_points(insp))
        first = insp.first_nonfinite()
        if first is not None:
            self.jump.description = safe(f"{S.line(S.first_row(first))} ({F.call_kind(first)}) - jump")
            self.jump.layout.display = "inline-flex"
        else:
            self.jump.layout.display = "none"
        first = insp.first_nonfinite_grad()
        if first is not None and self.grad_jump is None:
            self.grad_jump = W.Button(description="", button_style="danger", layout=W.Layout(width="auto"))
            self.grad_jump.add_class("fi-jump")
            self.grad_jump.on_click(lambda _: self.jump_to_first_nonfinite_grad())
            self.children = [self.status, self.jump, self.grad_jump, self.notes, self.tabs, self.detail]
        if self.grad_jump is not None:
            self.grad_jump.description = (safe(f"{S.line(S.first_grad_row(first))} ({F.call_kind(first)}) - jump")
                                          if first is not None else "")
            self.grad_jump.layout.display = "none" if first is None else "inline-flex"

    def jump_to_first_nonfinite(self) -> None:
        first = self.inspection.first_nonfinite() if self.inspection else None
        if first is None:
            return
        self.selected_tab = "intermediates"
        self.trees["intermediates"].select(S.call_id(first))

    def jump_to_first_nonfinite_grad(self) -> None:
        """Opens the Gradients tab at the first gradient, in backward order, with a NaN or Inf."""
        first = self.inspection.first_nonfinite_grad() if self.inspection else None
        if first is None:
            return
        self.selected_tab = "gradients"
        self.trees["gradients"].select(next(S.grad_leaf_row(first, g).id for g in first.grads or () if g.nonfinite))

    def show_detail(self, view: str, id: str) -> None:
        """Shows leaf ``id`` of tree ``view``; the leaf selected in any other tree is unselected."""
        for name, tree in self.trees.items():
            if name != view:
                tree.selected = None
        source = self.trees[view].source
        item = source.leaf(id) if source is not None else None
        self.detail.outputs = ()  # a state update, ordered with the appends (clear_output races them)
        if source is None or item is None:
            self.detail.append_display_data(HTML(f"<i>{F.esc(id)}: not a leaf</i>"))
            return
        self.detail.append_display_data(HTML(D.leaf_detail(f"{view}: {source.label(id)}", item)))


def _view_source(ref: weakref.ref, name: str) -> RowSource[Any] | None:
    insp = ref()
    return None if insp is None else insp.__dict__["_view_sources"][name]


class ComparisonWidget(W.VBox):
    """Two inspections side by side: ranked deltas; a click shows both arrays."""

    def __init__(self, comparison: Any, **kwargs: Any):
        title = W.HTML(f"<b>{F.esc(F.comparison_header(comparison))}</b>")
        self.comparison = comparison
        self.rows = ComparisonSource(comparison)
        self.tree = TreeWidget(self.rows)
        self.detail = W.Output()
        self.detail.add_class("fi-detail-pane")
        self.tree.on_select(self.show_detail)
        super().__init__(children=[title, self.tree, self.detail], **kwargs)
        self.add_class("fi-comparison")

    def close(self) -> None:
        """Closes this widget and every model it made."""
        for child in self.children:
            close_tree(child)
        close_parts(self)
        super().close()

    def show_detail(self, id: str) -> None:
        d = self.rows.leaf(id)
        self.detail.outputs = ()  # a state update, ordered with the appends (clear_output races them)
        if d is not None:
            self.detail.append_display_data(HTML(D.pair_detail(self.comparison.labels, d)))


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
