"""`invoke lint`: render every overlay, run the checks of the registry on it at once, report.

Each problem is one line naming its file, object, field and rule ID; a summary table counts
the problems of each check; any problem fails the gate.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from rich.table import Table
from rich.text import Text

from .. import REPO_ROOT
from ..console import Failure, console
from . import registry
from .problems import Problem
from .render import Target, render_target

DEFAULT_VERSIONS = ("1.30", "1.35")


@dataclass
class Report:
    overlays: list[str]
    versions: tuple[str, ...]
    problems: list[tuple[Problem, list[str]]]
    seconds: dict[str, float]
    wall: float


def lint(
    overlays: list[str] | None = None,
    kubernetes_versions: tuple[str, ...] = DEFAULT_VERSIONS,
    root: Path = REPO_ROOT,
) -> None:
    """Run every check on every overlay (or the ones named), print the report, fail on any problem."""
    report = check(overlays, kubernetes_versions, root)
    print_report(report)
    if report.problems:
        raise Failure(
            f"the lint gate found {len(report.problems)} problem(s), listed above with their file, object, "
            "field and rule: fix them and run `invoke lint` again"
        )


def check(
    overlays: list[str] | None = None,
    kubernetes_versions: tuple[str, ...] = DEFAULT_VERSIONS,
    root: Path = REPO_ROOT,
    only: Iterable[str] | None = None,
) -> Report:
    """The problems that the checks (all, or ``only`` these) find, merged across overlays.

    The kustomize check, which reports on rendering, always runs: the others read its output.
    """
    started = time.perf_counter()
    wanted = set(registry.names() if only is None else only) | {"kustomize"}
    selected = [check for check in registry.CHECKS if check.NAME in wanted]
    target = render_target(root, overlays, kubernetes_versions)
    rendering = time.perf_counter() - started
    seconds: dict[str, float] = {}
    found: list[Problem] = []
    with ThreadPoolExecutor(max_workers=len(selected)) as pool:
        timed = {check.NAME: pool.submit(_timed, check, target) for check in selected}
        for name, future in timed.items():
            problems, seconds[name] = future.result()
            found += problems
    seconds["kustomize"] += rendering
    every = [path.name for path in target.overlay_dirs]
    return Report(
        overlays=every,
        versions=target.versions,
        problems=_merge(found, every),
        seconds=seconds,
        wall=time.perf_counter() - started,
    )


def print_report(report: Report) -> None:
    for problem, overlays in report.problems:
        console.print(problem.text(overlays), soft_wrap=True)
    counts = dict.fromkeys(report.seconds, 0)
    for problem, _ in report.problems:
        counts[problem.check] = counts.get(problem.check, 0) + 1
    linted, versions = ", ".join(report.overlays), ", ".join(report.versions)
    table = Table(title="invoke lint")
    table.add_column("check")
    table.add_column("problems", justify="right")
    table.add_column("time", justify="right")
    for name in (name for name in registry.names() if name in report.seconds):
        count = Text(str(counts[name]), style="red" if counts[name] else "green")
        table.add_row(name, count, f"{report.seconds[name]:.1f} s")
    console.print(table)
    console.print(f"overlays {linted}; Kubernetes {versions}; {report.wall:.1f} s wall", style="dim")


def show_flows(overlays: list[str] | None) -> None:
    """`invoke lint --flows`: every flow of the overlays with the verdict the reachability check gives."""
    from .checks import reachability

    reachability.show_flows(overlays)


def list_rules() -> None:
    """Print every rule ID with the line that says what it catches, check by check."""
    width = max(len(rule) for rule in registry.rules())
    for check in registry.CHECKS:
        for rule, line in check.RULES.items():
            console.print(f"{rule:<{width}}  {line}", soft_wrap=True)


def _timed(check: ModuleType, target: Target) -> tuple[list[Problem], float]:
    started = time.perf_counter()
    return list(check.run(target)), time.perf_counter() - started


def _merge(problems: Iterable[Problem], every: list[str]) -> list[tuple[Problem, list[str]]]:
    """One line per problem, naming the overlays when not every overlay has it."""
    merged: dict[Problem, list[str]] = {}
    for problem in problems:
        overlays = merged.setdefault(problem, [])
        if problem.overlay and problem.overlay not in overlays:
            overlays.append(problem.overlay)
    return [
        (problem, [] if set(overlays) == set(every) else overlays) for problem, overlays in merged.items()
    ]
