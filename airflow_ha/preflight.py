"""Preflight: what a run needs on this machine, provisioned where the project can, in one table.

`invoke doctor` prints it; `invoke deploy` runs it before building or touching a cluster.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.table import Table

from . import capacity, cluster, tools
from .cluster import INSTALL, is_kind, kube_contexts, project_kubeconfig, relative, target_context
from .console import Failure, console

TOOL_TIMEOUT = 10  # seconds for a version query; none of them should take one
KIND_BUDGET = "kube/overlays/kind/budget.yaml"
# Docker Desktop's "8 GB" leaves the VM's kernel a little, so MemTotal reads about 7.7 GiB.
MEMORY_TOLERANCE = 0.9


@dataclass
class Check:
    """One row of the preflight table: a version when found, else how to get it."""

    name: str
    version: str | None
    fix: str
    required: bool = True
    note: str = ""
    problem: str = "not found"
    source: str = ""

    @property
    def ok(self) -> bool:
        return self.version is not None


def run(context: str | None, kind_cluster: str, *, build: bool = True, quiet: bool = False) -> str:
    """Check what this run needs, provisioning the tools the project can; print a table.

    Returns the kube context to use. Raises Failure naming each missing piece and how to get it.
    The tools found are put on PATH for this process: the lint gate and kustomize run them.
    """
    target = target_context(context, kind_cluster)
    on_kind = is_kind(target, kind_cluster)
    needs_docker = on_kind or build
    info = _docker_info()
    checks = [
        Check("docker CLI", _docker_cli_version(), INSTALL["docker CLI"], required=needs_docker),
        Check(
            "docker daemon",
            str(info["ServerVersion"]) if info else None,
            INSTALL["docker daemon"],
            required=needs_docker,
            problem="not reachable",
        ),
    ]
    if on_kind and info:
        checks += [docker_memory_check(info, cluster.REPO_ROOT / KIND_BUDGET), image_store_check(info)]
    checks += [
        _tool_check("kind", tools.kind, required=on_kind),
        _tool_check("kubectl", tools.kubectl, required=True),
        _tool_check("checkov", tools.checkov, required=True),
        _context_check(context, kind_cluster, target),
    ]
    packages = [Check("python", sys.version.split()[0], INSTALL["python"]), *_python_dependency_checks()]
    if not quiet:
        console.print(_table(checks, packages))
    missing = [check for check in checks + packages if check.required and not check.ok]
    if missing:
        raise Failure("\n".join(f"{check.name} {check.problem}: {check.fix}" for check in missing))
    return target


def _tool_check(name: str, find: Any, *, required: bool) -> Check:
    """A tool the project provisions when it is missing and needed; otherwise only looked for."""
    try:
        tool: tools.Tool = find(provision=required)
    except Failure as failure:
        return Check(name, None, str(failure), required=required, problem="missing", note="see below")
    tools.put_on_path(tool)
    check = Check(name, tool.version or "found", "", required=required, source=tool.source)
    if name == "kubectl" and tool.version and _minor_skew(tool.version, tools.KUBECTL.version) > 1:
        check.note = f"[yellow]more than one minor version from the nodes' {tools.KUBECTL.version}[/]"
    if name == "kind" and tool.version:
        release = tools.required_kind_release()
        if tools.older(tool.version, release):
            check.version = None
            check.problem = f"{tool.version} is too old"
            check.fix = (
                f"the node images in kube/kind-cluster.yaml come from kind {release} and need it or later: "
                f"remove {tool.path} from PATH so the project downloads {release}, or upgrade it"
            )
        else:
            check.note = f"node image from kind {release}"
    return check


def _minor_skew(found: str, wanted: str) -> int:
    """How many minor versions apart two Kubernetes versions are; kubectl supports one."""
    found_minor, wanted_minor = (re.match(r"v?\d+\.(\d+)", version) for version in (found, wanted))
    if not (found_minor and wanted_minor):
        return 0
    return abs(int(found_minor.group(1)) - int(wanted_minor.group(1)))


def docker_memory_check(info: dict[str, Any], budget_file: Path) -> Check:
    """Docker's memory against the laptop budget the kind overlay declares."""
    wanted = _budget_docker_memory(budget_file)
    total = int(info.get("MemTotal") or 0)
    have = f"{total / 2**30:.1f} GiB"
    if wanted is None:
        return Check(
            "docker memory", have, "", required=False, note=f"{relative(budget_file)} sets no docker_memory"
        )
    declared = f"{wanted / 2**30:g} GiB"
    if total >= wanted * MEMORY_TOLERANCE:
        return Check("docker memory", have, "", note=f"budget {declared} ({relative(budget_file)})")
    return Check(
        "docker memory",
        None,
        f"Docker has {have} of memory and the kind overlay's budget ({relative(budget_file)}, "
        f"docker_memory) assumes {declared}: give Docker more memory (Docker Desktop: Settings > "
        "Resources), or deploy a smaller overlay",
        problem=f"{have}, budget {declared}",
    )


def image_store_check(info: dict[str, Any]) -> Check:
    """Docker's containerd image store makes `kind load docker-image` fail on some images (kind#3795)."""
    driver_status = dict((pair[0], pair[1]) for pair in info.get("DriverStatus") or [] if len(pair) == 2)
    containerd = "containerd" in str(driver_status.get("driver-type", "")) or str(
        info.get("Driver", "")
    ).startswith("overlayfs")
    if not containerd:
        return Check("image store", str(info.get("Driver") or "classic"), "", required=False)
    return Check(
        "image store",
        "containerd",
        "",
        required=False,
        note="[yellow]warning[/]: Docker's containerd image store can make `kind load docker-image` fail "
        "with 'content digest ... not found' (kind issue 3795); if it does, turn off "
        "'Use containerd for pulling and storing images' in Docker Desktop, or set "
        '"features": {"containerd-snapshotter": false} in daemon.json',
    )


def _budget_docker_memory(budget_file: Path) -> int | None:
    if not budget_file.is_file():
        return None
    try:
        wanted = capacity.read_budget(budget_file).docker_memory
    except capacity.BudgetError as error:
        field = f"{error.field}: " if error.field and not error.message.startswith(error.field) else ""
        raise Failure(f"{relative(budget_file)}: {field}{error.message}") from None
    return None if wanted is None else int(wanted)


def _table(*sections: list[Check]) -> Table:
    table = Table(title="preflight", title_justify="left")
    table.add_column("check")
    table.add_column("")
    table.add_column("version")
    table.add_column("from")
    table.add_column("note")
    for section in sections:
        for check in section:
            mark = (
                "[green]ok[/]" if check.ok else ("[red]missing[/]" if check.required else "[yellow]absent[/]")
            )
            note = check.note or ("" if check.ok else check.problem)
            table.add_row(check.name, mark, check.version or "-", check.source, note)
        table.add_section()
    return table


def _run(*args: str, timeout: float = TOOL_TIMEOUT) -> str | None:
    """stdout of a tool, or None when it is missing or fails."""
    if shutil.which(args[0]) is None:
        return None
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _docker_cli_version() -> str | None:
    output = _run("docker", "--version")
    found = re.search(r"version ([^,\s]+)", output or "")
    return found.group(1) if found else None


def _docker_info() -> dict[str, Any] | None:
    """`docker info` from the daemon (version, memory, image store), or None when it does not answer."""
    from docker.client import DockerClient
    from docker.errors import DockerException

    try:
        client = DockerClient.from_env(timeout=5)
        try:
            info = dict(client.info())
            info.setdefault("ServerVersion", client.version().get("Version"))
            return info
        finally:
            client.close()
    except (DockerException, OSError, KeyError):
        return None


def _python_dependency_checks() -> list[Check]:
    """Each dependency pyproject.toml declares, with the installed version if it satisfies the pin."""
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((cluster.REPO_ROOT / "pyproject.toml").read_text())
    checks = []
    for line in pyproject["project"]["dependencies"]:
        requirement = Requirement(line)
        try:
            installed: str | None = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            installed = None
        problem = "not installed"
        if installed and not requirement.specifier.contains(installed, prereleases=True):
            problem = f"{installed} installed, {requirement.specifier} needed"
            installed = None
        checks.append(Check(requirement.name, installed, INSTALL["python"], problem=problem))
    return checks


def _context_check(context: str | None, kind_cluster: str, target: str) -> Check:
    names, current = kube_contexts()
    exists = target in names
    if context:
        fix = f"contexts in your kubeconfig: {', '.join(names) or 'none'}"
        problem = f"{target!r} (from --context) not found"
        return Check(
            "kube context", target if exists else None, fix, note="named by --context", problem=problem
        )
    note = "exists" if exists else "cluster not created yet: `invoke deploy` creates it"
    if current and current != target:
        note += f"; current context {current!r} is left alone (--context {current} to use it)"
    source = relative(project_kubeconfig()) if is_kind(target, kind_cluster) else ""
    return Check("kube context", target, note, note=note, source=source)
