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
import os
import queue
import sys
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


LOW_PRIORITY = 19
"""The nice value a job may give its thread (:meth:`BackgroundWorker.lower_priority`): the lowest
priority, so the scheduler runs the caller's threads first and the job on what CPU they leave."""


class BackgroundWorker:
    """One daemon thread running submitted jobs in order; see the module docstring for exit."""

    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future, Callable, tuple] | None] = queue.SimpleQueue()
        self._exiting = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # native id of a lowered thread -> (its nice value before, set once its job is done, its successor)
        self._lowered: dict[int, tuple[int, threading.Event, threading.Thread]] = {}
        atexit.register(self._at_exit)

    def lower_priority(self) -> bool:
        """Gives the calling thread (a job on this worker) the lowest priority (:data:`LOW_PRIORITY`)
        for the rest of its job; False where threads have no priority of their own (only Linux's do)
        or the system refuses. An unprivileged thread can't raise its priority again, and a thread it
        starts inherits it, so a new thread, started here before lowering, runs the next jobs."""
        if not sys.platform.startswith("linux") or threading.current_thread() is not self._thread:
            return False
        tid = threading.get_native_id()
        if tid in self._lowered:
            return True
        try:
            before = os.getpriority(os.PRIO_PROCESS, tid)
        except OSError:
            return False
        handed = threading.Event()
        successor = threading.Thread(target=self._run_after, args=(handed,), name=self.name, daemon=True)
        successor.start()  # at this thread's priority still
        self._lowered[tid] = (before, handed, successor)
        with contextlib.suppress(OSError):  # refused: the successor takes over after this job all the same
            os.setpriority(os.PRIO_PROCESS, tid, max(before, LOW_PRIORITY))
        return True

    def restore_priority(self) -> None:
        """Gives a thread lowered by :meth:`lower_priority` its priority back, where the system allows
        it (a privileged process; otherwise it keeps the low one): someone now waits for its job."""
        for tid, (before, _, _) in list(self._lowered.items()):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, before)

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
                continue
            try:
                result = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
                retired = self._hand_over()
                future.set_exception(e)
            else:
                retired = self._hand_over()
                future.set_result(result)
            if retired:
                return

    def _run_after(self, handed: threading.Event) -> None:
        """A successor's loop: :meth:`_run`, once the lowered thread's job is done."""
        handed.wait()
        self._run()

    def _hand_over(self) -> bool:
        """After a job: True if it lowered its thread, whose successor now runs the next jobs."""
        lowered = self._lowered.pop(threading.get_native_id(), None)
        if lowered is None:
            return False
        _, handed, successor = lowered
        with self._lock:
            self._thread = successor
        handed.set()
        return True

    def _at_exit(self) -> None:
        """Cancels what has not started and waits for the step in progress (no daemon thread may be
        inside a compile when the interpreter finalizes)."""
        self._exiting.set()
        self.restore_priority()  # where allowed: the exit waits for its step
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._jobs.put(None)
            thread.join()
