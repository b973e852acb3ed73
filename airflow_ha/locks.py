"""Install a hashed lock exactly as it is, with no resolution, then prove it complete.

A lock exists so that no release upstream can change what gets installed. pip and uv still
resolve the dependencies of what a lock pins unless told not to, and pip resolves a
dependency's extras against the newest release on the index: a release made after the lock
then breaks the install (`uvicorn[standard]>=0.15.0` from a new uvicorn, refused in
--require-hashes mode). So every lock is installed with --no-deps, and a lock that misses a
dependency would then go unnoticed: `check` walks every installed distribution's requirements,
through the extras others ask of it, which `pip check` and `uv pip check` skip.

The image builds, the bootstrap, the tool environments and the nox sessions all install
through this file. It uses the standard library only, and it runs as a script too: the
Dockerfiles copy it into their build stage.

    python3 locks.py install PYTHON LOCK [LOCK...]   # pip of the environment PYTHON belongs to
    PYTHON locks.py check                            # inside that environment
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The same options for pip and uv: nothing but the lock, every file checked against its hash.
INSTALL_OPTIONS = ("--no-deps", "--require-hashes", "--only-binary=:all:")
SCRIPT = Path(__file__).resolve()
USAGE = "usage: python3 locks.py install PYTHON LOCK [LOCK...] | PYTHON locks.py check"


class LockError(Exception):
    """What failed, with the installer's own last lines."""


def pip_install(python: str | Path, locks: Sequence[str | Path]) -> list[str]:
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    return [*pip, *INSTALL_OPTIONS, *requirements(locks)]


def uv_install(uv: str | Path, python: str | Path, locks: Sequence[str | Path]) -> list[str]:
    return [str(uv), "pip", "install", "--python", str(python), *INSTALL_OPTIONS, *requirements(locks)]


def check_command(python: str | Path) -> list[str]:
    return [str(python), str(SCRIPT), "check"]


def install(
    python: str | Path, locks: Sequence[str | Path], *, uv: str | Path | None = None, stream: bool = False
) -> None:
    """Install ``locks`` into the environment of ``python`` (with uv when given), then check it.

    With ``stream`` the installer's output goes where ours does (a build log); otherwise only
    its last lines are shown, in the error.
    """
    command = uv_install(uv, python, locks) if uv else pip_install(python, locks)
    names = ", ".join(str(lock) for lock in locks)
    _run(command, f"installing {names}", stream=stream)
    check(python, names)


def check(python: str | Path, what: str) -> None:
    """Fail, naming each unmet requirement, unless ``what`` installed into ``python`` is complete."""
    _run(check_command(python), f"{what} is incomplete")


def requirements(locks: Sequence[str | Path]) -> list[str]:
    return [argument for lock in locks for argument in ("--requirement", str(lock))]


def _run(command: list[str], doing: str, *, stream: bool = False) -> None:
    try:
        result = subprocess.run(command, capture_output=not stream, text=True, check=False)
    except OSError as error:
        raise LockError(f"{doing}: {error}") from error
    if result.returncode != 0:
        output = "" if stream else (result.stderr or "") + (result.stdout or "")
        tail = "\n".join(output.strip().splitlines()[-12:]) or "(its output is above)"
        raise LockError(f"{doing}: `{' '.join(command[:4])} ...` failed:\n{tail}")


def unmet() -> list[str]:
    """Every requirement of this interpreter's installed distributions that is not met.

    Extras count: a distribution that another one asks for as ``name[extra]`` must have what
    that extra requires.
    """
    from importlib.metadata import distributions

    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # an environment without packaging still has pip's copy
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
        from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]

    installed: dict[str, Any] = {canonicalize_name(dist.metadata["Name"]): dist for dist in distributions()}
    wanted: list[tuple[str, str, str]] = [(name, "", "") for name in installed]
    seen: set[tuple[str, str]] = set()
    problems: list[str] = []
    while wanted:
        name, extra, asked_by = wanted.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        dist = installed[name]
        who = f"{dist.metadata['Name']} {dist.version}" + (f" [{extra}]" if extra else "")
        for line in dist.requires or []:
            requirement = Requirement(line)
            if not holds(requirement, extra) or (extra and holds(requirement, "")):
                continue  # not asked for, or checked with the distribution itself
            spec = requirement.name + (
                f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
            )
            spec += str(requirement.specifier)
            through = f" ({dist.metadata['Name']}[{extra}] is required by {asked_by})" if extra else ""
            found = installed.get(canonicalize_name(requirement.name))
            if found is None:
                problems.append(f"{who} requires {spec}, which is not installed{through}")
                continue
            if not requirement.specifier.contains(found.version, prereleases=True):
                problems.append(f"{who} requires {spec}, but {found.version} is installed{through}")
            for wanted_extra in requirement.extras:
                wanted.append((canonicalize_name(requirement.name), wanted_extra, who))
    return sorted(set(problems))


def holds(requirement: Any, extra: str) -> bool:
    return requirement.marker is None or bool(requirement.marker.evaluate({"extra": extra}))


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"] and len(argv) == 1:
        problems = unmet()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    if argv[:1] == ["install"] and len(argv) >= 3:
        try:
            install(argv[1], argv[2:], stream=True)
        except LockError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
