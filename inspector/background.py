"""Work done on a daemon thread that never holds up interpreter exit.

A :class:`BackgroundWorker` runs submitted jobs one at a time. When the interpreter exits, jobs not
yet started are cancelled, a job that is running is told to stop (:attr:`BackgroundWorker.exiting`,
which long jobs check between their steps: a compile is not started at exit), and the exit waits only
for the step in progress. Unlike ``concurrent.futures.ThreadPoolExecutor``, which joins its workers
at exit, so a script that ends right after a first inspected call waited for a whole compile.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import jax

_CONTEXTS = {  # jax config options a thread may set for itself, and the context manager that sets each
    "jax_enable_x64": "enable_x64",
    "jax_default_device": "default_device",
    "jax_default_matmul_precision": "default_matmul_precision",
    "jax_numpy_rank_promotion": "numpy_rank_promotion",
    "jax_numpy_dtype_promotion": "numpy_dtype_promotion",
}


class CallerContext:
    """The jax options in effect on the thread that made it (``with jax.enable_x64(True):``,
    ``jax.default_device(...)`` set them for one thread), to be put in effect on another."""

    def __init__(self) -> None:
        self.values = {name: getattr(jax.config, name) for name in _CONTEXTS}

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """These options in effect on the current thread, for the ``with`` block."""
        with contextlib.ExitStack() as stack:
            for name, value in self.values.items():
                if getattr(jax.config, name) != value:
                    stack.enter_context(getattr(jax, _CONTEXTS[name])(value))
            yield


class BackgroundWorker:
    """One daemon thread running submitted jobs in order; see the module docstring for exit."""

    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future, Callable, tuple] | None] = queue.SimpleQueue()
        self._exiting = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        atexit.register(self._at_exit)

    @property
    def exiting(self) -> bool:
        """True once the interpreter is exiting: a running job should stop at its next step."""
        return self._exiting.is_set()

    def wait_while_running(self, seconds: float) -> bool:
        """Sleeps up to ``seconds`` on the worker's thread, waking at once at exit; False if exiting."""
        return not self._exiting.wait(seconds)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Runs ``fn(*args)`` on the worker's thread after the jobs before it; its future."""
        future: Future = Future()
        if self._exiting.is_set():
            future.cancel()
            return future
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._jobs.put((future, fn, args))
        return future

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if self._exiting.is_set() or not future.set_running_or_notify_cancel():
                future.cancel()
            else:
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
                    future.set_exception(e)

    def _at_exit(self) -> None:
        """Cancels what has not started and waits for the step in progress (no daemon thread may be
        inside a compile when the interpreter finalizes)."""
        self._exiting.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._jobs.put(None)
            thread.join()
