"""The progress bar of ``compare`` and ``sweep``: the :class:`fastgd.compare.Progress`
protocol drawn with tqdm on stderr."""

from __future__ import annotations

from tqdm import tqdm

from ..compare import Progress


class ProgressBar(Progress):
    """A tqdm bar on ``stream`` (default: stderr) over the epochs of a study: configuration
    ``i/N`` with its label, the overall fraction done, and the repeat, epoch and loss of the
    running configuration.

    Draws only when ``enabled`` (default: ``stream`` is a terminal). Whether it draws or not,
    it also checks ``interrupted`` (a callable) at every report and raises
    ``KeyboardInterrupt`` when it is true, so that Ctrl-C stops a whole study even though a
    training loop catches the interrupt to return the epochs done so far.
    """

    def __init__(self, stream=None, enabled: bool | None = None, repeats: int = 1,
                 interrupted=None):
        """``repeats``: training runs per configuration (for the bar's fraction)."""
        self.stream = stream
        self.enabled = enabled
        self.repeats = max(1, int(repeats))
        self.interrupted = interrupted or (lambda: False)
        self.index, self.total, self.label, self.epochs = 0, 1, "", 1
        self.run = self.epochs_done = self.epoch_no = 0
        self.loss = None
        self._bar = None

    def _check(self) -> None:
        if self.interrupted():
            raise KeyboardInterrupt

    def start(self, index: int, total: int, label: str, epochs: int) -> None:
        """Configuration ``index`` (0-based) of ``total`` starts."""
        self._check()
        self.index, self.total, self.label, self.epochs = index, max(1, total), label, epochs
        self.run = self.epochs_done = self.epoch_no = 0
        self.loss = None
        units = self.total * self._per_config()
        if self._bar is None:
            # disable=None: tqdm draws only when the stream is a terminal
            self._bar = tqdm(total=units, file=self.stream, leave=False, dynamic_ncols=True,
                             disable=None if self.enabled is None else not self.enabled,
                             bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]")
        self._bar.total = units
        self._draw()

    def epoch(self, record) -> None:
        """An epoch ended (``record``: a :class:`fastgd.EpochRecord`)."""
        if record.epoch == 0:
            self.run += 1
        self.epochs_done += 1
        self.epoch_no = record.epoch + 1
        self.loss = record.train_loss
        self._draw()
        self._check()

    def end(self, row: dict) -> None:
        """The running configuration ended with ``row``."""
        self.epochs_done = self._per_config()
        self._draw()
        self._check()

    def close(self) -> None:
        """Erase the bar (before printing anything else to the terminal)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _per_config(self) -> int:
        return max(1, self.epochs * self.repeats)

    def _draw(self) -> None:
        per = self._per_config()
        parts = []
        if self.run:
            if self.repeats > 1:
                parts.append(f"run {min(self.run, self.repeats)}/{self.repeats}")
            parts.append(f"epoch {self.epoch_no}/{self.epochs}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        # one draw per report (reports are per epoch, so few), not tqdm's rate-limited update
        self._bar.n = self.index * per + min(self.epochs_done, per)
        self._bar.set_description_str(f"{self.index + 1}/{self.total} {self.label}",
                                      refresh=False)
        self._bar.set_postfix_str(", ".join(parts), refresh=True)
