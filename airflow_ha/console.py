"""One rich console for every module, and the error type users see."""

from rich.console import Console

console = Console(highlight=False)


class Failure(Exception):
    """A problem the user can act on. The message names what failed and how to fix it.

    tasks.py turns it into a clean, non-zero exit instead of a traceback.
    """
