"""The one wait loop: ask until there is an answer or the time is up.

Not tenacity: its stop_after_delay gives up at the deadline, and this loop asks once more
after it, so a check that came true on a slow machine does not fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    every: float,
    timed_out: Callable[[], Exception],
) -> T:
    """Call ``probe`` every ``every`` seconds until it returns something other than None.

    ``probe`` runs at least once, and once more after the deadline, so a slow machine
    never fails a check that just came true; then ``timed_out()`` is raised.
    """
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() > deadline
        answer = probe()
        if answer is not None:
            return answer
        if expired:
            raise timed_out()
        time.sleep(every)
