"""Ctrl-C: the command's SIGINT handler and the exception that stops a study at once."""

from __future__ import annotations

import signal
import threading


class StudyInterrupted(BaseException):
    """Ctrl-C during a study. Not a ``KeyboardInterrupt``: the training loop catches those
    to return the epochs done so far, and a study must stop at once instead."""


class Interrupt:
    """The SIGINT handler of the command: remembers the interrupt, then raises
    ``StudyInterrupted`` when ``hard`` (studies stop at once) or ``KeyboardInterrupt``
    (``fit`` returns the epochs done so far). Calling it tells whether Ctrl-C was hit."""

    def __init__(self):
        """Not installed until the ``with`` block is entered."""
        self.hit = False
        self.hard = False
        self._old = None

    def __call__(self) -> bool:
        return self.hit

    def _handle(self, signum, frame):
        self.hit = True
        raise StudyInterrupted if self.hard else KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
