"""A slow first call shows a transient status line (a notebook display updated in place, or a
terminal line), removed when the result is ready; a fast call, or one outside a notebook and a
terminal, shows nothing. No test here depends on how long anything takes: the slow call waits
until its status is shown."""

import io
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from inspector import progress

WAIT_S = 120  # a bound on a wait that the status ends at once; never reached when it works


class Slow(nn.Module):
    """Its trace waits until ``shown`` is set (by the captured display): a call slower than the
    threshold, whatever the machine's speed."""

    shown: threading.Event

    @nn.compact
    def __call__(self, x):
        self.shown.wait(WAIT_S)
        return nn.Dense(2)(x)


class Published:
    """Stands for IPython's display publisher: records every display and update."""

    def __init__(self, on_display):
        self.calls = []
        self.on_display = on_display

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        self.calls.append((dict(data), (transient or {}).get("display_id"), update))
        self.on_display()

    def clear_output(self, wait=False):
        pass


@pytest.fixture
def notebook(monkeypatch, tmp_path):
    """An IPython shell that looks like a kernel, whose display messages are recorded."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shown = threading.Event()
    published = Published(shown.set)
    monkeypatch.setattr(shell, "display_pub", published)
    monkeypatch.setattr(shell, "kernel", object(), raising=False)
    monkeypatch.setattr(progress, "SHOW_AFTER_S", 0.05)
    yield shown, published
    InteractiveShell.clear_instance()


def _setup(shown):
    """A model whose calls wait for ``shown``, its variables (made without waiting) and an input."""
    x, ready = jnp.ones((1, 3)), threading.Event()
    ready.set()
    return Slow(shown), Slow(ready).init(jax.random.key(0), x), x


def test_target_is_none_outside_a_notebook_and_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress._target() is None
    status = progress.start("Net")
    status.phase("tracing")
    assert status._timer is None  # no timer, no thread, no output
    status.close()


@pytest.mark.parametrize("entry", ["apply", "inspect_apply"])
def test_a_slow_first_call_shows_its_status_in_the_notebook_and_removes_it(notebook, entry):
    shown, published = notebook
    assert progress._target() == "notebook"
    model, v, x = _setup(shown)
    fn = lambda m, x: m(x)
    make = fi.apply if entry == "apply" else fi.inspect_apply
    out = make(fn, model)(v, x)
    assert shown.is_set()
    y = out if entry == "apply" else out.output
    assert jnp.allclose(y, nn.apply(fn, model)(v, x))
    calls = published.calls
    assert len(calls) >= 2, calls
    first, *updates = calls
    assert "inspector: tracing Slow" in first[0]["text/plain"] and first[1] and not first[2]
    assert all(display_id == first[1] and update for _, display_id, update in updates)  # replaced in place
    texts = [data["text/plain"] for data, _, _ in calls]
    assert any("compiling Slow" in t for t in texts)
    assert texts[-1] == "" and calls[-1][0].get("text/html") == ""  # removed once the result is ready


def test_a_fast_call_shows_nothing(notebook, monkeypatch):
    shown, published = notebook
    monkeypatch.setattr(progress, "SHOW_AFTER_S", 3600)  # no call is that slow: nothing may show
    timers = []
    real_timer = threading.Timer

    def counting_timer(*args, **kwargs):
        timers.append(real_timer(*args, **kwargs))
        return timers[-1]

    monkeypatch.setattr(progress.threading, "Timer", counting_timer)
    model, v, x = _setup(shown)
    shown.set()  # the model does not wait
    run = fi.inspect_apply(lambda m, x: m(x), model)
    run(v, x)
    first_call_timers = len(timers)
    assert first_call_timers >= 1 and all(t.finished.is_set() for t in timers)  # cancelled at the end
    run.settle()
    run(v, x)
    run(v, x)
    apply = fi.apply(lambda m, x: m(x), model)
    apply(v, x)
    apply(v, x)
    apply(v, x)
    assert published.calls == []  # nothing displayed
    assert len(timers) == first_call_timers + 1  # cached calls start no timer; apply's first call one
    assert all(t.finished.is_set() for t in timers)


def test_run_show_reports_to_its_widget_instead(notebook, monkeypatch):
    shown, published = notebook
    model, v, x = _setup(shown)
    shown.set()
    phases = []
    fi.inspect_apply(lambda m, x: m(x), model)(v, x, on_phase=phases.append)
    assert phases[0] == "tracing" and phases[-1] == "done"
    assert published.calls == []


class TTY(io.StringIO):
    def __init__(self, on_write):
        super().__init__()
        self.on_write = on_write

    def isatty(self):
        return True

    def write(self, s):
        n = super().write(s)
        self.on_write()
        return n


def test_a_slow_first_call_in_a_terminal_draws_one_line_on_stderr_and_erases_it(monkeypatch):
    shown = threading.Event()
    model, v, x = _setup(shown)
    err = TTY(shown.set)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(progress, "SHOW_AFTER_S", 0.05)
    assert progress._target() == "terminal"
    fi.apply(lambda m, x: m(x), model)(v, x)
    written = err.getvalue()
    assert written.startswith("\rinspector: tracing Slow...") and "\rinspector: compiling Slow..." in written
    width = len("inspector: compiling Slow...")
    assert written.endswith("\r" + " " * width + "\r") and "\n" not in written
