"""Progress that reads well in a terminal and in a log file. Torch-free.

In a terminal (stderr a TTY): rich's live bar, redrawn in place. Anywhere else (SLURM and nohup logs,
Kubernetes, a pipe): plain lines `YYYY-mm-dd HH:MM:SS label done/total ... ETA h:mm:ss`, printed when the
caller asks (a finished shard, a logged training step) and at least every `every` seconds, flushed at once and
never cut to a width.
"""
from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as LiveBar, TextColumn, TimeRemainingColumn
from rich.text import Text

LOG_WIDTH = 200  # rich's width when not on a terminal: tables fit, nothing is wrapped at 80 columns


def interactive() -> bool:
    """Whether stderr is a terminal that redraws (not a log file, a pipe or TERM=dumb)."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def make_console(stderr: bool = False) -> Console:
    """A rich console: the terminal's width on a terminal; elsewhere wide and never wrapping a line."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=LOG_WIDTH, soft_wrap=True)


def log_line(text: str) -> None:
    """One timestamped line on stderr, flushed."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=sys.stderr, flush=True)


def say(message: str) -> None:
    """A message (rich markup allowed) on stderr: as it is on a terminal, a timestamped plain line in a log."""
    if interactive():
        Console(stderr=True).print(message, soft_wrap=True)
    else:
        log_line(Text.from_markup(message).plain)


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Progress of `total` units (clips, steps, samples) with a free-text line of figures."""

    def __init__(self, label: str, total: int, done: int = 0, every: float = 30.0, active: bool = True,
                 transient: bool = False):
        self.label, self.total, self.done, self.every, self.active = label, total, done, every, active
        self.first, self.started = done, time.monotonic()
        self.last_line = self.started
        self.line = ""
        self.live = interactive() and active
        if self.live:
            self.bar = LiveBar(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[line]}"), TimeRemainingColumn(), console=Console(stderr=True),
                               transient=transient)
            self.task = self.bar.add_task(label, total=total, completed=done, line="")

    def __enter__(self) -> Progress:
        if self.live:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.bar.stop()

    def rate(self) -> float:
        """Units per second in this session."""
        return (self.done - self.first) / max(time.monotonic() - self.started, 1e-9)

    def eta(self) -> str:
        rate = self.rate()
        return duration((self.total - self.done) / rate) if rate > 0 else "?"

    def update(self, done: int, line: str | None = None, log: bool = False) -> None:
        """Move to `done`; a log line now when `log`, else when `every` seconds passed since the last one."""
        self.done = done
        if line is not None:
            self.line = line
        if not self.active:
            return
        if self.live:
            self.bar.update(self.task, completed=done, line=self.line)
            return
        now = time.monotonic()
        if log or now - self.last_line >= self.every:
            self.last_line = now
            log_line(f"{self.label} {done}/{self.total} {self.line} ETA {self.eta()}".replace("  ", " "))

    def print(self, message: str) -> None:
        """A message above the bar (terminal) or a timestamped line (log)."""
        if not self.active:
            return
        if self.live:
            self.bar.console.print(message, soft_wrap=True)
        else:
            say(message)
