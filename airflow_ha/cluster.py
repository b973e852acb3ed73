"""The cluster: kube contexts, the context-safety rule, and the kind cluster.

The context-safety rule lives here. Without ``--context`` every task targets the
project's kind cluster (context ``kind-<cluster>``) by name, whatever the kubeconfig's
current context is; any other context is used only when it is named explicitly.

The kind cluster's kubeconfig is the project's own, ``.cache/kubeconfig``: kind writes it
there and every task reads it from there, so the user's kubeconfig and current context are
never touched. Other contexts come from the user's kubeconfig ($KUBECONFIG or ~/.kube/config).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import yaml

from . import REPO_ROOT, tools
from .console import Failure, progress

INSTALL = {
    "docker CLI": "install Docker Engine: https://docs.docker.com/engine/install/",
    "docker daemon": "start it (`sudo systemctl start docker` or Docker Desktop), or set DOCKER_HOST",
    "python": "set the project up again: `python3 -m airflow_ha.bootstrap invoke doctor`",
}


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
        return f"--kubeconfig {relative(project_kubeconfig())} --context {context}"
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


# kind


def kind_clusters() -> list[str]:
    output = _kind_output("get", "clusters", timeout=60)
    return output.split()


def ensure_kind_cluster(
    kind_cluster: str,
    kind_config: str | Path,
    timeout: int,
    namespace: str | None = None,
    node_image: str | None = None,
) -> bool:
    """Create the kind cluster from its config unless it exists. True when it was created.

    kind writes the cluster's kubeconfig to the project's own file, so the user's current
    context stays as it was. ``namespace`` gets its own logs folder (see logs_folder).
    ``node_image`` replaces every node's image in the config (kind's ``--image``).
    """
    config_path = Path(kind_config) if Path(kind_config).is_absolute() else REPO_ROOT / kind_config
    folders = prepare_host_mounts(config_path)
    if namespace and folders:
        _world_writable(logs_folder(folders[0], namespace), config_path)
    created = False
    kubeconfig = str(project_kubeconfig())
    project_kubeconfig().parent.mkdir(parents=True, exist_ok=True)
    if kind_cluster not in kind_clusters():
        source = relative(config_path) + (f" with node image {node_image}" if node_image else "")
        with progress(f"creating kind cluster {kind_cluster!r} from {source}"):
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
                *(("--image", node_image) if node_image else ()),
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
        raise Failure(f"{relative(config_path)}: cannot read the kind config: {error}") from error
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
            f"{folder} (extraMounts in {relative(config_path)}): {error}. Worker pods (uid "
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
    raise Failure(f"{relative(config_path)}: no node names an image (nodes[].image)")


def load_image(reference: str, kind_cluster: str, timeout: int) -> None:
    """Copy a local image into every node; kind skips nodes that already have it."""
    with progress(f"loading {reference} into kind cluster {kind_cluster!r}"):
        _kind("load", "docker-image", reference, "--name", kind_cluster, timeout=timeout)


def delete_kind_cluster(kind_cluster: str, timeout: int) -> bool:
    """Delete the kind cluster; False when there was none."""
    if kind_cluster not in kind_clusters():
        return False
    with progress(f"deleting kind cluster {kind_cluster!r}"):
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


def relative(path: Path) -> str:
    """A path as messages show it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
