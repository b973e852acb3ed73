"""One rich console for every module, the progress of long steps, and the error type users see."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console(highlight=False)

# Off a terminal, how often a changed progress line is printed at most.
PROGRESS_EVERY = 15.0


class Progress:
    """What a long step is waiting for: a spinner line in a terminal; elsewhere (CI, Okteto's
    runner, a pipe) rich shows nothing, so each change is printed as a line of its own, at most
    one every PROGRESS_EVERY seconds, and a log shows what the step was doing when it stalled."""

    def __init__(self, target: Console, message: str) -> None:
        self.console = target
        self.status = target.status(message) if target.is_terminal else None
        self.shown = ""
        self.shown_at = 0.0
        self.update(message, force=True)

    def update(self, message: str, *, force: bool = False) -> None:
        if self.status is not None:
            self.status.update(message)
            return
        now = time.monotonic()
        if message != self.shown and (force or now - self.shown_at >= PROGRESS_EVERY):
            self.console.print(f"… {message}", soft_wrap=True, markup=False)
            self.shown, self.shown_at = message, now


@contextmanager
def progress(message: str, target: Console | None = None) -> Iterator[Progress]:
    shown = Progress(target or console, message)
    if shown.status is None:
        yield shown
        return
    with shown.status:
        yield shown


class Failure(Exception):
    """A problem the user can act on. The message names what failed and how to fix it.

    tasks.py turns it into a clean, non-zero exit instead of a traceback.
    """
