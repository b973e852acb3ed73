"""The machine and the cluster: preflight checks, kube contexts, the kind cluster.

The context-safety rule lives here. Without ``--context`` every task targets the
project's kind cluster (context ``kind-<cluster>``) by name, whatever the kubeconfig's
current context is; any other context is used only when it is named explicitly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml
from rich.table import Table

from . import REPO_ROOT
from .console import Failure, console

INSTALL = {
    "docker CLI": "install Docker Engine: https://docs.docker.com/engine/install/",
    "docker daemon": "start it (`sudo systemctl start docker` or Docker Desktop), or set DOCKER_HOST",
    "kind": "install it: https://kind.sigs.k8s.io/docs/user/quick-start/#installation "
    "(or `go install sigs.k8s.io/kind@latest`)",
    "kubectl": "install it: https://kubernetes.io/docs/tasks/tools/#kubectl",
    "checkov": "install it: `uv tool install checkov` (the lint gate runs it)",
    "python": "install the project: `pip install -r docker/requirements.lock -e .`",
}
TOOL_TIMEOUT = 10  # seconds for a version query; none of them should take one


@dataclass
class Check:
    """One row of the preflight table: a version when found, else how to get it."""

    name: str
    version: str | None
    fix: str
    required: bool = True
    note: str = ""
    problem: str = "not found"

    @property
    def ok(self) -> bool:
        return self.version is not None


def kind_context(kind_cluster: str) -> str:
    return f"kind-{kind_cluster}"


def target_context(context: str | None, kind_cluster: str) -> str:
    """The context named explicitly, else the project's kind cluster; never the current context."""
    return context or kind_context(kind_cluster)


def is_kind(context: str, kind_cluster: str) -> bool:
    return context == kind_context(kind_cluster)


def kubeconfig() -> str | None:
    """$KUBECONFIG as it is now (the kubernetes client reads it only once, at import)."""
    return os.environ.get("KUBECONFIG") or None


def kube_contexts() -> tuple[list[str], str | None]:
    """The kubeconfig's context names and its current context; nothing when there is no kubeconfig."""
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig())
    except (config.ConfigException, OSError):
        return [], None
    return [c["name"] for c in contexts], (current or {}).get("name")


def check_context(context: str | None, kind_cluster: str) -> str:
    """Apply the context-safety rule; return the context to use or raise Failure."""
    target = target_context(context, kind_cluster)
    names, current = kube_contexts()
    if target in names:
        return target
    if context:
        raise Failure(
            f"kube context {context!r} (from --context) is not in your kubeconfig; "
            f"contexts there: {', '.join(names) or 'none'}"
        )
    hint = (
        f" The current context {current!r} is never used implicitly: pass --context {current} to target it."
        if current
        else ""
    )
    raise Failure(
        f"kube context {target!r} not found: the kind cluster {kind_cluster!r} does not exist "
        f"(`invoke deploy` creates it).{hint}"
    )


def preflight(context: str | None, kind_cluster: str, *, build: bool = True, quiet: bool = False) -> str:
    """Check the tools this run needs, print a table, and return the kube context to use.

    Raises Failure naming each missing piece and how to install it.
    """
    target = target_context(context, kind_cluster)
    on_kind = is_kind(target, kind_cluster)
    checks = [
        Check("docker CLI", _docker_cli_version(), INSTALL["docker CLI"], required=on_kind or build),
        Check(
            "docker daemon",
            _docker_daemon_version(),
            INSTALL["docker daemon"],
            required=on_kind or build,
            problem="not reachable",
        ),
        Check("kind", _kind_version(), INSTALL["kind"], required=on_kind),
        Check("kubectl", _kubectl_version(), INSTALL["kubectl"]),
        # Asking checkov for its version takes seconds, so only its presence is checked.
        Check("checkov", "on PATH" if shutil.which("checkov") else None, INSTALL["checkov"]),
        _context_check(context, kind_cluster, target),
    ]
    packages = [Check("python", sys.version.split()[0], INSTALL["python"]), *_python_dependency_checks()]
    if not quiet:
        console.print(_table(checks, packages))
    missing = [check for check in checks + packages if check.required and not check.ok]
    if missing:
        raise Failure("\n".join(f"{check.name} {check.problem}: {check.fix}" for check in missing))
    return target


def _table(*sections: list[Check]) -> Table:
    table = Table(title="preflight", title_justify="left")
    table.add_column("check")
    table.add_column("")
    table.add_column("version")
    table.add_column("note")
    for section in sections:
        for check in section:
            mark = (
                "[green]ok[/]" if check.ok else ("[red]missing[/]" if check.required else "[yellow]absent[/]")
            )
            note = check.note or ("" if check.ok else check.problem)
            table.add_row(check.name, mark, check.version or "-", note)
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


def _docker_daemon_version() -> str | None:
    from docker.client import DockerClient
    from docker.errors import DockerException

    try:
        client = DockerClient.from_env(timeout=5)
        try:
            return str(client.version()["Version"])
        finally:
            client.close()
    except (DockerException, OSError, KeyError):
        return None


def _kind_version() -> str | None:
    output = _run("kind", "version")
    return output.split()[1] if output and len(output.split()) > 1 else None


def _kubectl_version() -> str | None:
    output = _run("kubectl", "version", "--client", "-o", "json")
    try:
        return str(json.loads(output or "")["clientVersion"]["gitVersion"])
    except (ValueError, KeyError):
        return None


def _python_dependency_checks() -> list[Check]:
    """Each dependency pyproject.toml declares, with the installed version if it satisfies the pin."""
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
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
    return Check("kube context", target, note, note=note)


# kind


def kind_clusters() -> list[str]:
    if shutil.which("kind") is None:
        raise Failure(f"kind not found: {INSTALL['kind']}")
    output = _run("kind", "get", "clusters", timeout=60)
    if output is None:
        raise Failure(f"`kind get clusters` failed: is the Docker daemon running? {INSTALL['docker daemon']}")
    return output.split()


def ensure_kind_cluster(kind_cluster: str, kind_config: str | Path, timeout: int) -> bool:
    """Create the kind cluster from its config unless it exists. True when it was created."""
    config_path = Path(kind_config) if Path(kind_config).is_absolute() else REPO_ROOT / kind_config
    prepare_host_mounts(config_path)
    created = False
    if kind_cluster not in kind_clusters():
        with console.status(f"creating kind cluster {kind_cluster!r} from {_relative(config_path)}"):
            # kind resolves relative extraMounts paths against its working directory.
            # --wait covers the nodes getting ready; pulling the node image comes before it.
            command = (
                "create",
                "cluster",
                "--name",
                kind_cluster,
                "--config",
                str(config_path),
                f"--wait={timeout}s",
            )
            _kind(*command, timeout=2 * timeout)
        created = True
    if kind_context(kind_cluster) not in kube_contexts()[0]:
        _kind("export", "kubeconfig", "--name", kind_cluster, timeout=60)
    return created


def prepare_host_mounts(config_path: Path) -> list[Path]:
    """Create the host folders the kind config mounts into its nodes, world-writable.

    Worker pods run as uid 50000 and a hostPath volume ignores fsGroup, so the
    shared logs folder must be writable by anyone.
    """
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise Failure(f"{_relative(config_path)}: cannot read the kind config: {error}") from error
    folders = []
    for node in config.get("nodes") or []:
        for mount in node.get("extraMounts") or []:
            host_path = Path(mount["hostPath"])
            folder = host_path if host_path.is_absolute() else REPO_ROOT / host_path
            if folder not in folders:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    if stat.S_IMODE(folder.stat().st_mode) != 0o777:
                        folder.chmod(0o777)
                except OSError as error:
                    raise Failure(
                        f"{folder} (extraMounts in {_relative(config_path)}): {error}. Worker pods (uid "
                        f"50000) write task logs there: make it world-writable, `chmod 0777 {folder}`"
                    ) from error
                folders.append(folder)
    return folders


def load_image(reference: str, kind_cluster: str, timeout: int) -> None:
    """Copy a local image into every node; kind skips nodes that already have it."""
    with console.status(f"loading {reference} into kind cluster {kind_cluster!r}"):
        _kind("load", "docker-image", reference, "--name", kind_cluster, timeout=timeout)


def delete_kind_cluster(kind_cluster: str, timeout: int) -> bool:
    """Delete the kind cluster; False when there was none."""
    if kind_cluster not in kind_clusters():
        return False
    with console.status(f"deleting kind cluster {kind_cluster!r}"):
        _kind("delete", "cluster", "--name", kind_cluster, timeout=timeout)
    return True


def _kind(*args: str, timeout: int) -> None:
    if shutil.which("kind") is None:
        raise Failure(f"kind not found: {INSTALL['kind']}")
    command = ["kind", *args]
    try:
        result = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise Failure(f"`{' '.join(command)}` did not finish within {timeout} s; raise --timeout") from error
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise Failure(f"`{' '.join(command)}` failed:\n{tail}")


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
