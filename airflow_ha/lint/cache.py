"""The results of the slow checks, kept under .cache/lint/ by a digest of everything they read.

A check's key must cover every input that can change its result: the rendered objects, the
files it reads, the versions of the tools it runs, and the code of the lint gate itself. An
entry is never updated in place: another input is another key, so a stale result cannot be read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import REPO_ROOT
from .environment import CACHE_DIR
from .problems import Problem
from .render import Target

LINT_CACHE = CACHE_DIR / "lint"
KEEP = 32  # entries per check: enough for a few branches and overlays, small on disk
# The code whose change can change a result: this package, and the modules it reads.
GATE_SOURCES = tuple(REPO_ROOT / "airflow_ha" / name for name in ("lint", "manifests.py", "secrets.py"))


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def files(root: Path, paths: Iterable[str]) -> dict[str, str]:
    """A digest of each file at or under ``paths`` (relative to ``root``), by relative path."""
    found: dict[str, str] = {}
    for name in paths:
        path = root / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for candidate in candidates:
            if candidate.is_file() and "__pycache__" not in candidate.parts:
                relative = str(candidate.relative_to(root))
                found[relative] = hashlib.sha256(candidate.read_bytes()).hexdigest()
    return found


def gate_code() -> dict[str, str]:
    """The lint gate's own code and the Python that runs it."""
    code = {"python": sys.version}
    for source in GATE_SOURCES:
        code |= files(source.parent, [source.name])
    return code


def package_versions(*names: str) -> dict[str, str]:
    return {name: metadata.version(name) for name in names}


def rendered(target: Target) -> list[Any]:
    """Every rendered object of every overlay, with the file each came from."""
    return [
        [item.overlay, [[m.source, m.obj] for m in item.all], item.template_error] for item in target.rendered
    ] + [target.unrendered, list(target.versions)]


def cached(
    check: str, key: str, compute: Callable[[], Iterable[Problem]], transient: Iterable[str] = ()
) -> list[Problem]:
    """The problems ``compute`` finds, from the cache when this key was computed before.

    A result with a problem of a ``transient`` rule (a tool that did not run) is not kept.
    """
    path = LINT_CACHE / f"{check}-{key}.json"
    try:
        return [Problem(**fields) for fields in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        pass  # not computed yet, or unreadable: compute it
    problems = list(compute())
    if not {problem.rule for problem in problems} & set(transient):
        _store(path, [dataclasses.asdict(problem) for problem in problems])
    return problems


def _store(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as file:
        json.dump(data, file)
    os.replace(file.name, path)  # atomic: a concurrent run reads all of it or nothing
    entries = sorted(path.parent.glob(f"{path.name.rsplit('-', 1)[0]}-*.json"), key=_mtime)
    for old in entries[:-KEEP]:
        old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
