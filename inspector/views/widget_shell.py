"""What the notebook widgets share: the front end's assets, one lazy :class:`Tree` per tab, the Python
handles of the tab bar and the status line, and :class:`WidgetShell`, the one anywidget model that holds
them (the detail pane included).

Each tab's tree is a :class:`Tree` (a Python object, not a model) over a
:class:`~inspector.views.row_source.RowSource`: its rows reach the browser only when a node is
opened, by a message naming the tree, so what is sent scales with what is visible.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import anywidget
import ipywidgets as W
import traitlets

from inspector.names import safe
from inspector.views import attention_html, palette
from inspector.views.row_source import RowSource


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

    def __init__(self, owner: WidgetShell, name: str, source: RowSource[Any] | None = None):
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

    def send(self, content: dict[str, Any]) -> None:
        """Sends ``content`` to this tree in every view (the widget's custom message, with the tree's name)."""
        self.owner.send({**content, "tree": self.name})

    def answer(self, msg: dict[str, Any]) -> None:
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


class Tabs:
    """The Python handle of the front end's tab bar: ``titles`` and the open tab's ``selected_index``."""

    def __init__(self, owner: WidgetShell):
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


class StatusLine:
    """The Python handle of the status line: ``value`` is its text."""

    def __init__(self, owner: WidgetShell):
        self._owner = owner

    @property
    def value(self) -> str:
        return self._owner.status_text


class WidgetShell(anywidget.AnyWidget):
    """What :class:`~inspector.views.widgets.InspectionWidget` and :class:`~inspector.views.widgets.ComparisonWidget`
    share: one model, its trees and detail."""

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
        self.status = StatusLine(self)
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

    def _on_selected(self, change: dict[str, Any]) -> None:
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
