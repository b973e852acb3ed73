"""A problem the lint gate reports: which rule, where (file, object, field) and what to do."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text

from ..manifests import Manifest


@dataclass(frozen=True)
class Problem:
    """One thing to fix: the rule it breaks, where it is (file, object, field), what to do."""

    rule: str
    file: str
    message: str
    resource: str = ""
    field: str = ""
    line: int | None = None
    overlay: str = dataclasses.field(default="", compare=False)

    @property
    def check(self) -> str:
        return self.rule.split("/")[0]

    def text(self, overlays: Iterable[str] = ()) -> Text:
        text = Text("✗ ", style="red")
        text.append(f"{self.file}:{self.line}" if self.line else self.file or "-", style="bold")
        if self.resource:
            text.append(f"  {self.resource}", style="cyan")
        if self.field:
            text.append(f"  {self.field}", style="yellow")
        text.append(f"  {self.message}  ")
        text.append(f"[{self.rule}]", style="dim")
        if overlays:
            text.append(f" (overlay {', '.join(overlays)} only)", style="dim")
        return text


def at(rule: str, manifest: Manifest, field: str, message: str) -> Problem:
    """A problem at a field of a rendered object, in the file the object was written in."""
    return Problem(rule, manifest.source, message, manifest.ref, field)
