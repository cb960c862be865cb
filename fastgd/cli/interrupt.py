"""Ctrl-C: the command's SIGINT handler and the exception that stops a study at once."""

from __future__ import annotations

import signal
import threading

from numba.core import event
from numba.core.compiler_lock import global_compiler_lock


class StudyInterrupted(BaseException):
    """Ctrl-C during a study. Not a ``KeyboardInterrupt``: the training loop catches those
    to return the epochs done so far, and a study must stop at once instead."""


class Interrupt:
    """The SIGINT handler of the command: remembers the interrupt, then raises
    ``StudyInterrupted`` when ``hard`` (studies stop at once) or ``KeyboardInterrupt``
    (``fit`` returns the epochs done so far). Calling it tells whether Ctrl-C was hit.

    An interrupt that lands while Numba compiles is raised when the compile ends: raised
    at once, it can land in one of LLVM's callbacks into Python (its object cache), which
    prints the exception with a traceback and drops it."""

    def __init__(self):
        """Not installed until the ``with`` block is entered."""
        self.hit = False
        self.hard = False
        self._old = None
        self._pending = False
        self._listener = _CompileEnd(self)

    def __call__(self) -> bool:
        return self.hit

    def _raise(self):
        raise StudyInterrupted if self.hard else KeyboardInterrupt

    def _handle(self, signum, frame):
        self.hit = True
        if global_compiler_lock.is_locked():
            self._pending = True
            return
        self._raise()

    def _compile_ended(self):
        if self._pending and not global_compiler_lock.is_locked():
            self._pending = False
            self._raise()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
            event.register("numba:compiler_lock", self._listener)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            event.unregister("numba:compiler_lock", self._listener)
        return False


class _CompileEnd(event.Listener):
    """Tells an :class:`Interrupt` when Numba releases its compiler lock."""

    def __init__(self, interrupt):
        self._interrupt = interrupt

    def on_start(self, ev):
        pass

    def on_end(self, ev):
        self._interrupt._compile_ended()
