"""How inspections and comparisons display themselves in a notebook.

The model's ``_repr_mimebundle_`` asks here: the widget where widgets work, over a
bounded static HTML view (for nbviewer, GitHub, exported notebooks) and ``repr``.
"""

from __future__ import annotations

import contextlib

from typing import Any

from inspector.model import Comparison, Inspection
from inspector.views import html

STATIC_LIMITS = {"max_children": 20, "max_depth": 3}
"""What the static fallback of a displayed inspection lists: it travels inside the notebook."""
STATIC_COMPARISON_LIMIT = 50


def mimebundle(obj: Inspection | Comparison, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """``obj``'s display: the widget's bundle where widgets work, over static HTML and ``repr``."""
    if isinstance(obj, Comparison):
        bundle: dict[str, Any] = {"text/html": html.render_comparison(obj, limit=STATIC_COMPARISON_LIMIT)}
    else:
        bundle = {"text/html": html.render_fragment(obj, **STATIC_LIMITS)}
    with contextlib.suppress(Exception):  # no widget support here: the fallbacks stand
        bundle.update(widget(obj)._repr_mimebundle_(include=include, exclude=exclude) or {})
    bundle["text/plain"] = repr(obj)
    return bundle


def widget(obj: Inspection | Comparison) -> Any:
    """The interactive view a displayed ``obj`` shows (an inspection's holds it weakly:
    deleting the inspection frees it and closes the widget)."""
    from inspector.views.widgets import ComparisonWidget, InspectionWidget

    return ComparisonWidget(obj) if isinstance(obj, Comparison) else InspectionWidget(obj, weak=True)
