"""Widgets that are closed, or whose displayed inspection is deleted, are freed: nothing keeps them,
neither anywidget's class nor ipywidgets' registry of open models."""

import gc
import weakref

import ipywidgets

import inspector as fi
from inspector.demo import demo_inspection
from inspector.history import History, Scalars, Site
from inspector.views.display import widget as display_widget
from inspector.views.history_widget import WatchWidget
from inspector.views.widgets import ComparisonWidget, InspectionWidget
from models import grad_inspection

_instances = ipywidgets.widgets.widget._instances  # every open model, by id (until .close())


def open_models() -> int:
    gc.collect()
    return len(_instances)


def new_models(before: set[str]) -> list[weakref.ref]:
    """Weak references to the models opened since ``before`` (a set of model ids)."""
    return [weakref.ref(w) for k, w in list(_instances.items()) if k not in before]


def alive(refs: list[weakref.ref]) -> list[str]:
    gc.collect()
    return [type(w).__name__ for w in (r() for r in refs) if w is not None]


def test_a_closed_widget_is_freed():
    w = InspectionWidget()
    ref = weakref.ref(w)
    w.close()
    del w
    assert alive([ref]) == []  # anywidget's class-wide file watcher held every instance


def test_displays_of_a_deleted_inspection_are_freed():
    insp = demo_inspection()
    before = open_models()
    ids = set(_instances)
    for _ in range(5):
        bundle = insp._repr_mimebundle_()  # what a notebook does to display it
        assert "application/vnd.jupyter.widget-view+json" in bundle
    del bundle
    refs = new_models(ids)
    assert [type(r()).__name__ for r in refs] == ["InspectionWidget"] * 5  # one model per display, nothing else
    del insp
    assert open_models() == before
    assert alive(refs) == []


def test_a_closed_widget_of_a_kept_inspection_is_freed_with_every_model_it_made():
    insp = demo_inspection()
    for make in (lambda: display_widget(insp), lambda: InspectionWidget(insp), lambda: ComparisonWidget(
            fi.compare(insp, insp))):
        before = open_models()
        ids = set(_instances)
        w = make()
        if isinstance(w, InspectionWidget):
            w.trees["variables"].select("batch_stats/encoder/BatchNorm_0/mean")  # a detail shown in the pane
            assert "BatchNorm_0/mean" in w.detail_html
        refs = new_models(ids)
        assert len(refs) == 1, [type(r()).__name__ for r in refs]  # the one anywidget, no Layout or child model
        w.close()
        del w
        assert open_models() == before, f"{len(_instances) - before} models stay open"
        assert alive(refs) == []
    assert insp.widget() is not None  # the inspection itself is untouched


def test_a_widget_filled_in_later_opens_no_model_for_its_tabs():
    before = open_models()
    w = InspectionWidget()  # as show() makes it: tabs for an inspection without gradients
    assert open_models() == before + 1
    w.set_inspection(grad_inspection())  # now with a Gradients tab
    assert open_models() == before + 1
    assert list(w.trees) == ["variables", "mutations", "intermediates", "costs", "gradients", "binding", "output"]
    w.close()
    del w
    assert open_models() == before


def test_a_closed_watch_widget_closes_every_model_it_made():
    h = History()
    h.add(0, Site("activation", "a"), Scalars(1.0, 2.0, 3.0, 0.25, 0, 0, 4.0, None, 8))
    before = open_models()
    ids = set(_instances)
    w = WatchWidget(h, interval=0.01)
    refs = new_models(ids)
    w.close()
    w._thread.join()
    del w
    assert open_models() == before, f"{len(_instances) - before} models stay open"
    assert alive(refs) == []
