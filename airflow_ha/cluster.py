"""The machine and the cluster: preflight checks, kube contexts, the kind cluster.

The context-safety rule lives here. Without ``--context`` every task targets the
project's kind cluster (context ``kind-<cluster>``) by name, whatever the kubeconfig's
current context is; any other context is used only when it is named explicitly.

The kind cluster's kubeconfig is the project's own, ``.cache/kubeconfig``: kind writes it
there and every task reads it from there, so the user's kubeconfig and current context are
never touched. Other contexts come from the user's kubeconfig ($KUBECONFIG or ~/.kube/config).
"""

from __future__ import annotations

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
from typing import Any

import yaml
from rich.table import Table

from . import REPO_ROOT, budget, tools
from .console import Failure, console

INSTALL = {
    "docker CLI": "install Docker Engine: https://docs.docker.com/engine/install/",
    "docker daemon": "start it (`sudo systemctl start docker` or Docker Desktop), or set DOCKER_HOST",
    "python": "set the project up again: `python3 -m airflow_ha.bootstrap invoke doctor`",
}
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


def kind_context(kind_cluster: str) -> str:
    return f"kind-{kind_cluster}"


def target_context(context: str | None, kind_cluster: str) -> str:
    """The context named explicitly, else the project's kind cluster; never the current context."""
    return context or kind_context(kind_cluster)


def is_kind(context: str, kind_cluster: str) -> bool:
    return context == kind_context(kind_cluster)


def user_kubeconfig() -> str | None:
    """$KUBECONFIG as it is now (the client reads it only at import); None means ~/.kube/config."""
    return os.environ.get("KUBECONFIG") or None


def project_kubeconfig() -> Path:
    """Where kind writes the project cluster's kubeconfig; nothing else writes there."""
    return REPO_ROOT / ".cache" / "kubeconfig"


def _contexts_in(config_file: str | Path | None) -> tuple[list[str], str | None]:
    from kubernetes import config

    if config_file is not None and not Path(config_file).is_file():
        return [], None
    try:
        contexts, current = config.list_kube_config_contexts(
            config_file=str(config_file) if config_file else None
        )
    except (config.ConfigException, OSError):
        return [], None
    return [c["name"] for c in contexts], (current or {}).get("name")


def kube_contexts() -> tuple[list[str], str | None]:
    """The contexts of the project's and the user's kubeconfig, and the user's current context."""
    project, _ = _contexts_in(project_kubeconfig())
    user, current = _contexts_in(user_kubeconfig())
    return list(dict.fromkeys(project + user)), current


def kubeconfig_for(context: str) -> str | None:
    """The project's kubeconfig for the contexts kind wrote there, else the user's."""
    if context in _contexts_in(project_kubeconfig())[0]:
        return str(project_kubeconfig())
    return user_kubeconfig()


def kubectl_flags(context: str) -> str:
    """The kubectl flags that reach a context, for commands printed to the user."""
    config_file = kubeconfig_for(context)
    if config_file == str(project_kubeconfig()):
        return f"--kubeconfig {_relative(project_kubeconfig())} --context {context}"
    return f"--context {context}"


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
        checks += [docker_memory_check(info, REPO_ROOT / KIND_BUDGET), image_store_check(info)]
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
            "docker memory", have, "", required=False, note=f"{_relative(budget_file)} sets no docker_memory"
        )
    declared = f"{wanted / 2**30:g} GiB"
    if total >= wanted * MEMORY_TOLERANCE:
        return Check("docker memory", have, "", note=f"budget {declared} ({_relative(budget_file)})")
    return Check(
        "docker memory",
        None,
        f"Docker has {have} of memory and the kind overlay's budget ({_relative(budget_file)}, "
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
        wanted = budget.read_budget(budget_file).docker_memory
    except budget.BudgetError as error:
        field = f"{error.field}: " if error.field and not error.message.startswith(error.field) else ""
        raise Failure(f"{_relative(budget_file)}: {field}{error.message}") from None
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
    source = _relative(project_kubeconfig()) if is_kind(target, kind_cluster) else ""
    return Check("kube context", target, note, note=note, source=source)


# kind


def kind_clusters() -> list[str]:
    output = _kind_output("get", "clusters", timeout=60)
    return output.split()


def ensure_kind_cluster(
    kind_cluster: str, kind_config: str | Path, timeout: int, namespace: str | None = None
) -> bool:
    """Create the kind cluster from its config unless it exists. True when it was created.

    kind writes the cluster's kubeconfig to the project's own file, so the user's current
    context stays as it was. ``namespace`` gets its own logs folder (see logs_folder).
    """
    config_path = Path(kind_config) if Path(kind_config).is_absolute() else REPO_ROOT / kind_config
    folders = prepare_host_mounts(config_path)
    if namespace and folders:
        _world_writable(logs_folder(folders[0], namespace), config_path)
    created = False
    kubeconfig = str(project_kubeconfig())
    project_kubeconfig().parent.mkdir(parents=True, exist_ok=True)
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
                "--kubeconfig",
                kubeconfig,
                f"--wait={timeout}s",
            )
            _kind(*command, timeout=2 * timeout)
        created = True
    if kind_context(kind_cluster) not in _contexts_in(project_kubeconfig())[0]:
        _kind("export", "kubeconfig", "--name", kind_cluster, "--kubeconfig", kubeconfig, timeout=60)
    return created


def logs_folder(mounted: Path, namespace: str) -> Path:
    """The host folder behind one namespace's logs volume (kube/overlays/kind/per-namespace.yaml)."""
    return mounted / namespace


def prepare_host_mounts(config_path: Path) -> list[Path]:
    """Create the host folders the kind config mounts into its nodes, world-writable.

    Worker pods run as uid 50000 and a hostPath volume ignores fsGroup, so the
    shared logs folder must be writable by anyone.
    """
    folders = []
    for folder in host_mounts(config_path):
        _world_writable(folder, config_path)
        folders.append(folder)
    return folders


def host_mounts(config_path: Path) -> list[Path]:
    """The host folders of the kind config's extraMounts, relative ones resolved against the repo."""
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise Failure(f"{_relative(config_path)}: cannot read the kind config: {error}") from error
    folders: list[Path] = []
    for node in config.get("nodes") or []:
        for mount in node.get("extraMounts") or []:
            host_path = Path(mount["hostPath"])
            folder = host_path if host_path.is_absolute() else REPO_ROOT / host_path
            if folder not in folders:
                folders.append(folder)
    return folders


def _world_writable(folder: Path, config_path: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if stat.S_IMODE(folder.stat().st_mode) != 0o777:
            folder.chmod(0o777)
    except OSError as error:
        raise Failure(
            f"{folder} (extraMounts in {_relative(config_path)}): {error}. Worker pods (uid "
            f"50000) write task logs there: make it world-writable, `chmod 0777 {folder}`"
        ) from error


def purge_host_mounts(kind_config: str | Path, image: str | None = None) -> list[Path]:
    """Delete the kind config's host folders, task logs included, without sudo.

    Files that pods wrote as uid 50000 cannot be removed by an ordinary user on Linux, so
    what the host cannot delete is deleted by a throwaway container that runs as root: the
    kind node image by default, which is on this machine since the cluster was created.
    """
    config_path = Path(kind_config) if Path(kind_config).is_absolute() else REPO_ROOT / kind_config
    removed = []
    for folder in host_mounts(config_path):
        if not folder.exists():
            continue
        try:
            shutil.rmtree(folder)
        except PermissionError:
            remove_with_container(folder, image or node_image(config_path))
            shutil.rmtree(folder)
        removed.append(folder)
    return removed


def remove_with_container(folder: Path, image: str) -> None:
    """Empty ``folder`` from inside a container running as root, where uid 50000's files are deletable."""
    command = [
        "docker",
        "run",
        "--rm",
        "--user",
        "0",
        "--network",
        "none",
        "--entrypoint",
        "find",
        "--volume",
        f"{folder.resolve()}:/purge",
        image,
        "/purge",
        "-mindepth",
        "1",
        "-delete",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Failure(f"cannot empty {folder} with a container ({' '.join(command[:3])}): {error}") from error
    if result.returncode != 0:
        raise Failure(
            f"cannot empty {folder} with a container of {image}: {result.stderr.strip()[-500:]}. "
            f"Delete it as root: sudo rm -rf {folder}"
        )


def node_image(config_path: Path) -> str:
    config = yaml.safe_load(config_path.read_text()) or {}
    for node in config.get("nodes") or []:
        if node.get("image"):
            return str(node["image"])
    raise Failure(f"{_relative(config_path)}: no node names an image (nodes[].image)")


def load_image(reference: str, kind_cluster: str, timeout: int) -> None:
    """Copy a local image into every node; kind skips nodes that already have it."""
    with console.status(f"loading {reference} into kind cluster {kind_cluster!r}"):
        _kind("load", "docker-image", reference, "--name", kind_cluster, timeout=timeout)


def delete_kind_cluster(kind_cluster: str, timeout: int) -> bool:
    """Delete the kind cluster; False when there was none."""
    if kind_cluster not in kind_clusters():
        return False
    with console.status(f"deleting kind cluster {kind_cluster!r}"):
        _kind(
            "delete",
            "cluster",
            "--name",
            kind_cluster,
            "--kubeconfig",
            str(project_kubeconfig()),
            timeout=timeout,
        )
    return True


def _kind(*args: str, timeout: int) -> None:
    _kind_output(*args, timeout=timeout)


def _kind_output(*args: str, timeout: int) -> str:
    kind = tools.kind()
    command = [str(kind.path), *args]
    shown = " ".join(["kind", *args])
    try:
        result = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise Failure(f"`{shown}` did not finish within {timeout} s; raise --timeout") from error
    except OSError as error:
        raise Failure(f"`{shown}`: cannot run {kind.path}: {error}") from error
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        if args[:2] == ("get", "clusters"):
            tail += f"\nIs the Docker daemon running? {INSTALL['docker daemon']}"
        raise Failure(f"`{shown}` failed:\n{tail}")
    return result.stdout


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
