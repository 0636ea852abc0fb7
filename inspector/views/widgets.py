"""Interactive notebook views: one self-contained anywidget per displayed object.

An :class:`InspectionWidget` (or :class:`ComparisonWidget`) is ONE widget model
(:class:`~inspector.views.widget_shell.WidgetShell`): its front end (``static/tree.js`` and
``static/shell.js``) draws the status line, the first-non-finite jump buttons, the notes, a tab bar,
one lazy tree per tab, the activations-by-depth chart and the detail pane. No core ipywidgets (Tab,
Output, Button, ...) are in the displayed tree, so it shows wherever anywidget does (JupyterLab,
Notebook 7, VS Code, Colab, marimo).

Each tab's rows come from its :class:`~inspector.views.row_source.RowSource`, sent when a node is
opened. A clicked leaf's array is fetched from its device, cut to a bounded preview, and drawn with
treescope (:mod:`~inspector.views.detail`) into the synced ``detail_html``, which the front end shows
in a sandboxed ``<iframe srcdoc>`` (treescope's script runs there; ``innerHTML`` would not run it).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import traitlets

from inspector.model import Inspection
from inspector.names import safe
from inspector.views import attention_widget
from inspector.views import detail as D
from inspector.views import format as F
from inspector.views.comparison_source import ComparisonSource
from inspector.views.cost_source import CostSource
from inspector.views.depth import depth_figure, depth_points
from inspector.views.document import origin_words
from inspector.views.gradient_section import first_grad_row, grad_leaf_row
from inspector.views.gradient_source import GradSource
from inspector.views.inspection_sections import call_id, first_row
from inspector.views.inspection_sources import BindingSource, CallSource, DiffSource, NodeSource, OutputSource
from inspector.views.row_source import RowSource
from inspector.views.viewmodel import TAB_ORDER, line
from inspector.views.widget_shell import Tree, WidgetShell


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


def _close_if_alive(ref: weakref.ref[WidgetShell]) -> None:
    widget = ref()
    if widget is not None:
        widget.close()


_SOURCES: dict[str, Callable[[Inspection], RowSource[Any]]] = {
    "variables": NodeSource.variables, "mutations": DiffSource, "intermediates": CallSource,
    "gradients": GradSource, "binding": BindingSource, "output": OutputSource}
"""Each tab's rows; the tabs are shown in :data:`~inspector.views.viewmodel.TAB_ORDER` (the static page's
order too), ``gradients`` only for an inspection with gradients, ``costs`` only where they can be asked
(:func:`tab_names`; its rows are a :class:`~inspector.views.cost_source.CostSource`, made when the tab is opened)."""

COSTS_WAITING = "costs: computed when this tab is opened (the call is traced once more, about 1 s on a large model)"

COSTS_COMPUTING = "costs: computing... (tracing the call)"


def tab_names(insp: Inspection | None) -> list[str]:
    """The tabs a widget of ``insp`` shows (before one is set: as for one without gradients or costs)."""
    from inspector import costs as C

    return [name for name in TAB_ORDER
            if (name != "gradients" or (insp is not None and insp.grads is not None))
            and (name != "costs" or (insp is not None and C.available(insp)))]


def _sources(insp: Inspection, names: list[str]) -> dict[str, RowSource[Any]]:
    """The row sources of ``insp``'s tabs (``costs`` excepted: made when opened)."""
    return {name: _SOURCES[name](insp) for name in names if name in _SOURCES}


def _lines(text: str) -> str:
    """``text`` with each line :func:`~inspector.names.safe` (newlines kept)."""
    return "\n".join(safe(part) for part in text.splitlines())


def _while_alive(ref: weakref.ref[Inspection], source: RowSource[Any]) -> RowSource[Any] | None:
    return source if ref() is not None else None


class InspectionWidget(WidgetShell):
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
    """The line about the first NaN/Inf's operation (:func:`~inspector.views.document.origin_words`); ``""``: none."""
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
        insp: Inspection | None = self._insp() if self.weak and self._insp is not None else self._insp
        return insp

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
            self.jump_label = (safe(f"{line(first_row(first))} ({F.call_kind(first)}) - jump")
                               if first is not None else "")
            first = insp.first_nonfinite_grad()
            if first is not None and self.grad_jump is None:
                self.grad_jump = Jump(self, "grad_jump_label", self.jump_to_first_nonfinite_grad)
            self.grad_jump_label = (safe(f"{line(first_grad_row(first))} ({F.call_kind(first)}) - jump")
                                    if first is not None else "")
            self._set_origin(insp)
            self._set_costs(insp)

    # -- the first NaN's operation ----------------------------------------------------------
    def _set_origin(self, insp: Inspection) -> None:
        from inspector import origin as O

        done = O.computed(insp)
        if done is not None:
            self.origin_line, self.origin_text, self.origin_state = (
                safe(origin_words(done)), _lines(done.to_text()), "done")
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
            safe(origin_words(origin)), _lines(origin.to_text()), "done")

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
        self.trees["intermediates"].select(call_id(first))

    def jump_to_first_nonfinite_grad(self) -> None:
        """Opens the Gradients tab at the first gradient, in backward order, with a NaN or Inf."""
        first = self.inspection.first_nonfinite_grad() if self.inspection else None
        if first is None or "gradients" not in self.trees:
            return
        self.selected_tab = "gradients"
        self.trees["gradients"].select(next(grad_leaf_row(first, g).id for g in first.grads or () if g.nonfinite))

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


class ComparisonWidget(WidgetShell):
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
