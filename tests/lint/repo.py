"""A temporary copy of what `invoke lint` reads, and the fixtures that break it.

A fixture (tests/lint/fixtures/<check>/<slug>.yaml) names one rule, the edits that break
the copy, and the problem the rule must report:

    rule: rbac/extra-verb
    edits:  # applied in order
      - {file: kube/base/rbac.yaml, replace: TEXT, with: TEXT}  # TEXT occurs exactly once
      - {file: FILE, append: TEXT}
      - {file: FILE, write: TEXT}
      - {file: FILE, delete: true}
    env: {PATH: /nonexistent}  # optional: environment of the check (rendering keeps its own)
    expect: {file: FILE, resource: KIND/NAME, field: PREFIX, message: SUBSTRING}

A near miss (<slug>-near-miss*.yaml) has `passes: true` instead of `expect`: the same edits,
one field short of breaking the rule, which must then stay silent, so that a rule firing too
widely fails too (Polaris's success/failure pairs).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_ha import REPO_ROOT

LINTED = ("kube", "dags", "schemas", "docker/Dockerfile", ".yamllint", "invoke.yaml", "okteto-pipeline.yml")
FIXTURES = Path(__file__).parent / "fixtures"


def copy_repository(destination: Path) -> Path:
    """A copy of everything the lint gate reads."""
    for name in LINTED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, destination / name)
    return destination


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old``: an edit names exactly one place."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new))


def kubernetes_versions(root: Path) -> tuple[str, str]:
    """The versions invoke.yaml of the copy names, as `invoke lint` would read them."""
    lint = (yaml.safe_load((root / "invoke.yaml").read_text()) or {}).get("lint") or {}
    return str(lint.get("kubernetes_oldest")), str(lint.get("kubernetes_newest"))


@dataclass
class Fixture:
    path: Path
    rule: str
    edits: list[dict[str, Any]]
    expect: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    passes: bool = False

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.stem}"

    @property
    def check(self) -> str:
        return self.rule.split("/")[0]

    def apply(self, root: Path) -> None:
        for change in self.edits:
            path = root / change["file"]
            if "replace" in change:
                edit(path, change["replace"], change["with"])
            elif "append" in change:
                with path.open("a") as file:
                    file.write(change["append"])
            elif "write" in change:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(change["write"])
            elif change.get("delete"):
                path.unlink()
            else:
                raise AssertionError(f"{self.path}: an edit needs replace/with, append, write or delete")


def fixtures() -> list[Fixture]:
    found = []
    for path in sorted(FIXTURES.glob("*/*.yaml")):
        data = yaml.safe_load(path.read_text())
        edits, env = data.get("edits") or [], data.get("env") or {}
        passes = bool(data.get("passes"))
        expect = {} if passes else data["expect"]
        found.append(Fixture(path, data["rule"], edits, expect, env, passes))
    return found
