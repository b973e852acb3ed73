"""The security scan: checkov on every rendered object, the worker pod template included; every
skip is an annotation naming its check and reason, with a comment beside it that says why."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import yaml

from .. import cache
from ..environment import python_env, tail
from ..fields import field_path
from ..problems import Problem
from ..render import Target, relative

NAME = "checkov"
RULES = {
    "checkov/unavailable": "checkov missing from PATH, or failing to run",
    "checkov/failed-check": "a checkov check that fails, and is not skipped",
    "checkov/skip-format": "a checkov.io/skip annotation that is not CKV_<ID>=<reason>",
    "checkov/skip-comment": "a checkov skip without a YAML comment beside it that says why",
}
CHECKOV_INSTALL = "install it with `uv tool install checkov` (nox's lint and tests sessions install it)"


def run(target: Target) -> Iterator[Problem]:
    yield from _skip_annotations(target.root)
    checkov = shutil.which("checkov")
    if checkov is None:
        yield Problem("checkov/unavailable", "", f"checkov is not on PATH: {CHECKOV_INSTALL}")
        return
    checkov = os.path.abspath(checkov)  # PATH may hold relative folders; checkov runs elsewhere
    if target.rendered:
        key = cache_key(target, checkov)
        yield from cache.cached(NAME, key, lambda: _scan(target, checkov), transient={"checkov/unavailable"})


def cache_key(target: Target, checkov: str) -> str:
    """Everything the scan reads: the rendered overlays, checkov itself and the gate's code."""
    return cache.digest(str(target.root), cache.rendered(target), _identity(checkov), cache.gate_code())


def _identity(checkov: str) -> list[str]:
    """checkov's path, and its version as its own environment has it installed."""
    path = Path(checkov).resolve()
    try:
        shebang = path.read_text(errors="replace").partition("\n")[0]
    except OSError:
        return [str(path)]
    interpreter = Path(shebang.removeprefix("#!").strip()).parent.parent
    versions = sorted(item.name for item in interpreter.glob("lib/python*/site-packages/checkov-*.dist-info"))
    stat = path.stat()
    return [str(path), shebang, *versions] if versions else [str(path), shebang, str(stat.st_mtime)]


def _package(checkov: str) -> Path:
    """checkov's __init__.py in the environment its script runs in."""
    shebang = Path(checkov).resolve().read_text(errors="replace").partition("\n")[0]
    prefix = Path(shebang.removeprefix("#!").strip()).parent.parent
    return next(prefix.glob("lib/python*/site-packages/checkov/__init__.py"), Path(checkov))


def _scan(target: Target, checkov: str) -> Iterator[Problem]:
    by_overlay = {rendered.overlay: rendered for rendered in target.rendered}
    with tempfile.TemporaryDirectory(prefix="airflow-ha-checkov-") as tmp:
        for overlay, rendered in by_overlay.items():
            # The worker pod template goes in too: worker pods are the most numerous of all.
            (Path(tmp) / f"{overlay}.yaml").write_text(yaml.safe_dump_all([m.obj for m in rendered.all]))
        # --skip-download: no network; checkov's own checks need nothing from Prisma Cloud.
        command = [checkov, "--directory", tmp, "--framework", "kubernetes", "--output", "json", "--quiet"]
        command += ["--compact", "--skip-download"]
        result = subprocess.run(
            command, env=python_env(_package(checkov)), cwd=tmp, capture_output=True, text=True, check=False
        )
    try:
        output = json.loads(result.stdout)
    except ValueError:
        message = f"checkov failed: {tail(result.stderr or result.stdout)}"
        yield Problem("checkov/unavailable", "", message)
        return
    for report in output if isinstance(output, list) else [output]:
        for failed in (report.get("results") or {}).get("failed_checks") or []:
            rendered = by_overlay[Path(failed["file_path"]).stem]
            kind, _, rest = failed["resource"].partition(".")
            name = rest.partition(".")[2]  # kind.namespace.name
            manifest = next((m for m in rendered.all if (m.kind, m.name) == (kind, name)), None)
            keys = (failed.get("check_result") or {}).get("evaluated_keys") or [""]
            field = (
                field_path(manifest.obj, [part.strip("[]") for part in keys[0].split("/") if part])
                if manifest
                else ""
            )
            message = (
                f"{failed['check_id']} {failed['check_name']}: fix it, or skip it with the annotation "
                f"checkov.io/skip<N>: {failed['check_id']}=<reason> and a comment beside it that says why"
            )
            file = manifest.source if manifest else ""
            problem = Problem("checkov/failed-check", file, message, f"{kind}/{name}", field)
            yield replace(problem, overlay=rendered.overlay)


def _skip_annotations(root: Path) -> Iterator[Problem]:
    """Every checkov skip names its check and reason, and has a YAML comment beside it."""
    for path in sorted((root / "kube").rglob("*.y*ml")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            annotation = re.match(r"\s*(checkov\.io/skip\d*):\s*(.*)", line)
            if not annotation:
                continue
            file, field = relative(root, path), f"metadata.annotations.{annotation.group(1)}"
            value = annotation.group(2).split(" #")[0].strip().strip("\"'")
            if not re.fullmatch(r"CKV2?_[A-Z0-9_]+=\S.*", value):
                message = f"{value!r} is not CKV_<ID>=<reason>"
                yield Problem("checkov/skip-format", file, message, field=field, line=number)
            if " #" not in line and not (number > 1 and lines[number - 2].strip().startswith("#")):
                message = (
                    "a checkov skip needs a YAML comment beside it that says why the check does not apply"
                )
                yield Problem("checkov/skip-comment", file, message, field=field, line=number)
