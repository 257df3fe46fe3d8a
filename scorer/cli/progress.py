"""Progress of a long run: a bar on a terminal, a plain log line every 30 s elsewhere (cron, CI)."""

from __future__ import annotations

import sys
import time

import click

LOG_EVERY_SECONDS = 30.0


class Reporter:
    """Callable as ``reporter(done, total, failed)`` after every batch; :meth:`close` at the end."""

    def __init__(self, quiet: bool, every: float = LOG_EVERY_SECONDS) -> None:
        self.quiet = quiet
        self.every = every
        self.terminal = sys.stderr.isatty()
        self.bar = None
        self.started = self.last_log = time.monotonic()
        self.done = self.base = 0

    def __call__(self, done: int, total: int, failed: int) -> None:
        if self.quiet:
            return
        if self.terminal:
            if self.bar is None:
                self.bar = click.progressbar(length=total, label="scoring", file=sys.stderr,
                                             show_pos=True, show_eta=True)
                self.bar.__enter__()
                self.bar.update(self.done)
            self.bar.update(done - self.done)
        elif time.monotonic() - self.last_log >= self.every or (done == total != self.done):
            rate = (done - self.base) / max(time.monotonic() - self.started, 1e-9)
            click.echo(f"scored {done}/{total} images ({100 * done / max(total, 1):.1f}%), "
                       f"{failed} failed, {rate:.1f} images/s", err=True)
            self.last_log = time.monotonic()
        self.done = done

    def start_at(self, done: int) -> None:
        """A resumed run starts its bar (and its rate) at the rows already done."""
        self.done = self.base = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
