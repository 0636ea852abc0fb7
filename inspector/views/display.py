"""How inspections and comparisons display themselves in a notebook.

The data model's one door into the views: ``to_text`` (:func:`text`), ``to_html`` (:func:`export_html`),
``widget`` (:func:`widget`), ``__rich__`` (:func:`rich`) and ``_repr_mimebundle_`` (:func:`mimebundle`) ask
here; so does ``InspectRun.show`` (:func:`show`: a widget displayed before the run). A displayed one
shows the widget (one anywidget) where widgets work (in marimo, as marimo's own anywidget element), over
a bounded static HTML view (for nbviewer, GitHub, exported notebooks) and ``repr``. In a job of several
processes (``jax.distributed``) only process 0 displays; the others show a one-line note, so a multi-host
notebook or log is not flooded with copies.
"""

from __future__ import annotations

import contextlib
import sys

from typing import TYPE_CHECKING, Any

from inspector.model import Comparison, Inspection
from inspector.views import html

if TYPE_CHECKING:
    from inspector.views.widgets import InspectionWidget

STATIC_LIMITS = {"max_children": 20, "max_depth": 3}
"""What the static fallback of a displayed inspection lists: it travels inside the notebook."""
STATIC_COMPARISON_LIMIT = 50


def shown_here() -> bool:
    """True on the process that displays: process 0 of a ``jax.distributed`` job, or the only one."""
    import jax

    return jax.process_index() == 0


def elsewhere(what: str) -> str:
    """The one line a process other than 0 displays for ``what`` (a ``repr``)."""
    import jax

    return f"{what} (displayed by process 0; this is process {jax.process_index()} of {jax.process_count()})"


def mimebundle(obj: Inspection | Comparison, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """``obj``'s display: the widget's bundle where widgets work, over static HTML and ``repr``;
    on a process other than 0, a one-line note."""
    if not shown_here():
        return {"text/plain": elsewhere(repr(obj))}
    if isinstance(obj, Comparison):
        bundle: dict[str, Any] = {"text/html": html.render_comparison(obj, limit=STATIC_COMPARISON_LIMIT)}
    else:
        bundle = {"text/html": html.render_fragment(obj, max_children=STATIC_LIMITS["max_children"],
                                                    max_depth=STATIC_LIMITS["max_depth"])}
    marimo = in_marimo()
    with contextlib.suppress(Exception):  # no widget support here: the fallbacks stand
        view = widget(obj)
        if marimo is not None:  # marimo shows HTML, not a Jupyter widget's view: its own anywidget element
            element = marimo.ui.anywidget(view)
            view._marimo_element = element  # as long as the widget (an open model) lives
            mime, data = element._mime_()
            bundle = {mime: data}
        else:
            shown = view._repr_mimebundle_(include=include, exclude=exclude) or {}
            bundle.update(shown[0] if isinstance(shown, tuple) else shown)  # anywidget's is (data, metadata)
    bundle["text/plain"] = repr(obj)
    return bundle


def in_marimo() -> Any:
    """The ``marimo`` module when this runs inside a marimo notebook, else None."""
    marimo = sys.modules.get("marimo")
    try:
        return marimo if marimo is not None and marimo.running_in_notebook() else None
    except Exception:  # noqa: BLE001 - an unknown marimo: as if there were none
        return None


def widget(obj: Inspection | Comparison, weak: bool = True) -> Any:
    """The interactive view of ``obj``: one anywidget model. With ``weak`` (a displayed inspection's
    view), an inspection's widget holds it weakly: deleting the inspection frees it and closes the widget."""
    from inspector.views.widgets import ComparisonWidget, InspectionWidget

    return ComparisonWidget(obj) if isinstance(obj, Comparison) else InspectionWidget(obj, weak=weak)


def show(insp_run: Any, *args: Any, **kwargs: Any) -> InspectionWidget:
    """Displays a widget now, runs ``insp_run(*args, **kwargs)`` with live status
    (tracing -> compiling -> running on <device> -> done) and fills it in."""
    from IPython.display import display

    import jax

    from inspector.views.widgets import InspectionWidget

    view = InspectionWidget()
    display(view)  # type: ignore[no-untyped-call,unused-ignore]  # untyped in IPython; only --strict says so
    device = str(jax.devices()[0])
    labels = {"tracing": "tracing...", "compiling": "compiling...", "running": f"running on {device}...",
              "done": "done"}
    try:
        insp = insp_run(*args, on_phase=lambda phase: view.set_status(labels.get(phase) or str(phase)), **kwargs)
    except Exception as e:
        view.set_status(f"failed: {type(e).__name__}: {e}")
        raise
    view.set_inspection(insp)
    return view


def text(obj: Inspection | Comparison, **kwargs: Any) -> str:
    """``obj``'s plain-text rendering (the golden oracle of every view); ``kwargs`` as
    :func:`~inspector.views.text.render` or :func:`~inspector.views.text.render_comparison` take them."""
    from inspector.views.text import render, render_comparison

    return render_comparison(obj, **kwargs) if isinstance(obj, Comparison) else render(obj, **kwargs)


def export_html(insp: Inspection, path: Any = None, **options: Any) -> str:
    """``insp`` as self-contained offline HTML, written to ``path`` when given; returns the HTML
    (``options``: :func:`~inspector.views.html.export`'s)."""
    return html.export(insp, path, **options)


def rich(obj: Inspection | Comparison) -> Any:
    """``obj``'s rich renderable (``rich.print(obj)``); on a process other than 0, a one-line note."""
    if not shown_here():
        from rich.text import Text

        return Text(elsewhere(repr(obj)))
    from inspector.views.terminal import render_rich

    return render_rich(obj)
