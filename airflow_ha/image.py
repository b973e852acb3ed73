"""The Airflow image: its tag, build and push with the Docker SDK, and a base image with no registry.

The SDK's low-level API streams what the daemon reports; the high-level one would only
return at the end (build) or swallow errors (push). There is no BuildKit in the SDK, so
docker/Dockerfile sticks to what the classic builder supports.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from docker.client import DockerClient
from docker.errors import APIError, DockerException, ImageNotFound
from docker.utils import parse_repository_tag
from docker.utils.build import create_archive, exclude_paths
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TimeElapsedColumn

from airflow_ha import REPO_ROOT
from airflow_ha.console import Failure, console, progress

DOCKERFILE = "docker/Dockerfile"
# The image okteto-pipeline.yml runs its deploy and destroy commands in.
DEPLOYER_DOCKERFILE = "docker/deployer/Dockerfile"
# Where docker/Dockerfile's build stage looks for the CA bundle. It only ever exists
# inside the build context that build_image sends, never in the working tree.
CA_BUNDLE_IN_CONTEXT = "docker/ca-bundle.pem"
CA_BUNDLE_VARIABLES = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
LOG_TAIL = 15
# The build argument the Dockerfiles declare before installing anything: under CI each run
# gets its own value, so no layer cached by an earlier run stands in for today's install.
FRESH_INSTALL_ARG = "LOCK_INSTALL_RUN"
STEP = re.compile(r"^Step (\d+)/(\d+) : ")
# The daemon colours a RUN step's stderr red.
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")

BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Removed from the debootstrap tree; the dpkg rules keep them out of images built on it.
TRIMMED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian")
DPKG_EXCLUDES = """\
# Written by `invoke base-image`: images built on this one install no docs or translations.
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
"""
APT_NO_CACHE = """\
# Written by `invoke base-image`: no package caches in image layers.
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
"""
SOURCES_LIST = Path("/etc/apt/sources.list")
SOURCES_DIR = Path("/etc/apt/sources.list.d")


@dataclass(frozen=True)
class Built:
    reference: str
    image_id: str
    size: int
    seconds: float

    def summary(self) -> str:
        return f"built {self.reference} ({self.size / 1e6:.0f} MB) in {self.seconds:.1f} s"


def docker_client() -> DockerClient:
    """A client of a daemon that answers, or a Failure that says how to get one."""
    where = os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"
    try:
        client = DockerClient.from_env()
        client.ping()
    except DockerException as error:
        raise Failure(
            f"cannot reach the Docker daemon at {where}: {error}. Start it (`sudo systemctl start docker`, "
            "or `sudo dockerd &` where there is no systemd), install Docker Engine if it is missing "
            "(https://docs.docker.com/engine/install/), or point DOCKER_HOST at a running daemon."
        ) from None
    return client


def local_images(references: Iterable[str]) -> list[str]:
    """Those of ``references`` that this machine's Docker holds, sorted."""
    client = docker_client()
    found = []
    for reference in sorted(references):
        try:
            client.images.get(reference)
        except ImageNotFound:
            continue
        found.append(reference)
    return found


def image_tag(airflow_version: str, root: Path = REPO_ROOT) -> str:
    """<airflow version>-<git short revision>; a dirty tree adds .<digest of its changes>-dirty.

    A new commit or a different uncommitted change gives a new tag, so a push never
    silently replaces an image that is already deployed under the same name, and a
    redeploy after an edit rolls the pods to the new image.
    """

    def git(*args: str) -> bytes:
        # --no-optional-locks: reading the status must not rewrite the index under other writers.
        command = ["git", "--no-optional-locks", "-C", str(root), *args]
        return subprocess.run(command, capture_output=True, check=True).stdout

    try:
        revision = git("rev-parse", "--short", "HEAD").decode().strip()
        if not git("status", "--porcelain").strip():
            return f"{airflow_version}-{revision}"
        changes = hashlib.sha256(git("diff", "HEAD", "--binary"))
        for name in filter(None, git("ls-files", "--others", "--exclude-standard", "-z").split(b"\0")):
            changes.update(name + b"\0" + (root / name.decode()).read_bytes())
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or error
        raise Failure(
            f"cannot read the git revision of {root} for the image tag ({detail!s}). "
            "Build from a git clone, or name the tag yourself with --tag."
        ) from None
    return f"{airflow_version}-{revision}.{changes.hexdigest()[:7]}-dirty"


def ca_bundle_path(explicit: str | None) -> Path | None:
    """The CA bundle to pass to pip in the build: --ca-bundle, else the first variable that is set."""
    if explicit:
        source, path = "--ca-bundle", Path(explicit)
    else:
        variable = next((name for name in CA_BUNDLE_VARIABLES if os.environ.get(name)), None)
        if variable is None:
            return None
        source, path = f"${variable}", Path(os.environ[variable])
    fix = "pass the path of a PEM CA bundle" if explicit else f"fix or unset {source}"
    if not path.is_file():
        raise Failure(f"{source} names {path}, which is not a file: {fix}.")
    if b"-----BEGIN CERTIFICATE-----" not in path.read_bytes():
        raise Failure(f"{source} names {path}, which holds no PEM certificate: {fix}.")
    return path


def build_context(root: Path, dockerfile: str, extra_files: Mapping[str, str] | None = None) -> IO[bytes]:
    """The context `docker build` would send, plus files that exist only in it.

    As with BuildKit, <dockerfile>.dockerignore beside the Dockerfile wins over .dockerignore.
    """
    ignore = root / f"{dockerfile}.dockerignore"
    if not ignore.is_file():
        ignore = root / ".dockerignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    files = sorted(exclude_paths(str(root), patterns, dockerfile=dockerfile))
    archive: IO[bytes] = create_archive(
        root=str(root), files=files, extra_files=sorted((extra_files or {}).items())
    )
    return archive


def build(
    context: IO[bytes],
    reference: str,
    *,
    dockerfile: str = "Dockerfile",
    buildargs: Mapping[str, str] | None = None,
    no_cache: bool = False,
    client: DockerClient | None = None,
) -> Built:
    """Build a context (a tar, see build_context), streaming each step; a failed step raises Failure."""
    client = client or docker_client()
    started = time.monotonic()
    step, tail, image_id = "", deque[str](maxlen=LOG_TAIL), ""
    columns = (SpinnerColumn(), "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"building {reference}", total=None)
        try:
            chunks = client.api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=dockerfile,
                tag=reference,
                buildargs={**fresh_install_args(), **(buildargs or {})},
                nocache=no_cache,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in chunks:
                if "error" in chunk:
                    raise Failure(build_failure(reference, dockerfile, step, chunk["error"], tail))
                image_id = chunk.get("aux", {}).get("ID", image_id)
                for line in ANSI_COLOUR.sub("", chunk.get("stream", "")).splitlines():
                    if match := STEP.match(line):
                        step = line
                        tail.clear()
                        bar.update(task, description=line, completed=int(match[1]) - 1, total=int(match[2]))
                        bar.console.print(line, style="bold", markup=False, soft_wrap=True)
                    elif line.strip():
                        if not line.startswith((" ---> ", "Removing intermediate container")):
                            tail.append(line)
                        bar.console.print(line, style="dim", markup=False, soft_wrap=True)
                if "status" in chunk:  # pulling the base image
                    bar.update(task, description=f"{chunk['status']} {chunk.get('id', '')}")
        except APIError as error:
            raise Failure(
                build_failure(reference, dockerfile, step, error.explanation or str(error), tail)
            ) from None
    if not image_id:
        raise Failure(f"docker build of {reference} ended without an image: see the output above.")
    size = client.images.get(image_id).attrs["Size"]
    return Built(reference, image_id, size, time.monotonic() - started)


def fresh_install_args() -> dict[str, str]:
    """Under CI, one value for the whole run: later builds of the same run reuse the layers."""
    if not os.environ.get("CI"):
        return {}
    run = os.environ.setdefault(FRESH_INSTALL_ARG, f"{os.getpid()}-{time.time_ns()}")
    return {FRESH_INSTALL_ARG: run}


def build_failure(reference: str, dockerfile: str, step: str, error: str, tail: Iterable[str]) -> str:
    where = f"at {step.strip()}" if step else "before the first step"
    lines = "\n".join(f"  | {line}" for line in tail) or "  | (no output)"
    message = (
        f"docker build of {reference} failed {where} ({dockerfile}): {error.strip()}\nlast output:\n{lines}"
    )
    if " : FROM " in step or not step:
        message += (
            "\nThe base image must exist locally or be pullable: build one with `invoke base-image` "
            "and pass --base-image airflow-ha-base:bookworm."
        )
    return message


def build_image(
    reference: str,
    base_image: str,
    no_cache: bool = False,
    ca_bundle: str | None = None,
    root: Path = REPO_ROOT,
    dockerfile: str = DOCKERFILE,
) -> Built:
    """Build docker/Dockerfile (or another DOCKERFILE of the repository) with the repository as context."""
    bundle = ca_bundle_path(ca_bundle)
    client = docker_client()
    extra_files = {CA_BUNDLE_IN_CONTEXT: bundle.read_text()} if bundle else {}
    if bundle:
        console.print(f"pip in the build stage trusts the CA bundle {bundle} (it stays out of the image)")
    with build_context(root, dockerfile, extra_files) as context:
        built = build(
            context,
            reference,
            dockerfile=dockerfile,
            buildargs={"BASE_IMAGE": base_image},
            no_cache=no_cache,
            client=client,
        )
    console.print(built.summary(), style="green")
    return built


def push_image(reference: str, registry: str) -> str:
    """Push a built image to REGISTRY/<repository>:<tag>, check the registry serves it, return its digest."""
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]+)?", registry):
        raise Failure(
            f"--registry {registry}: give HOST:PORT alone, as in 127.0.0.1:5000, without a scheme or a path."
        )
    client = docker_client()
    repository, tag = parse_repository_tag(reference)
    if not tag:
        raise Failure(f"image reference {reference} has no tag: give one, as in {reference}:<tag>.")
    try:
        image = client.images.get(reference)
    except ImageNotFound:
        raise Failure(f"there is no image {reference} to push: build it with `invoke build` first.") from None
    target = f"{registry}/{repository}"
    image.tag(target, tag)
    digest = ""
    with Progress(SpinnerColumn(), "{task.description}", console=console) as progress:
        layers: dict[str, TaskID] = {}
        try:
            for chunk in client.api.push(target, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    raise Failure(push_failure(target, tag, registry, chunk["error"]))
                digest = chunk.get("aux", {}).get("Digest", digest)
                if layer := chunk.get("id"):
                    if layer not in layers:
                        layers[layer] = progress.add_task(layer)
                    # The daemon's own progress text, e.g. "[=====>    ]  12.3MB/49.2MB".
                    status = f"{layer} {chunk.get('status', '')} {chunk.get('progress', '')}"
                    progress.update(layers[layer], description=status.strip())
        except APIError as error:
            raise Failure(push_failure(target, tag, registry, str(error.explanation or error))) from None
    if not digest:
        raise Failure(
            f"pushing {target}:{tag} to the registry {registry} reported no digest: see the output above."
        )
    require_served(client, registry, f"{target}:{tag}", digest)
    console.print(f"pushed {target}:{tag} ({digest}); the registry serves its manifest", style="green")
    return digest


def push_failure(target: str, tag: str, registry: str, error: str) -> str:
    # The daemon's first request of a push is GET /v2/: failing there, the registry is unreachable.
    if re.match(r'Get "https?://[^"]+/v2/": ', error):
        return (
            f"cannot reach the registry {registry} ({error.strip()}). "
            "Start the registry, or fix --registry HOST:PORT."
        )
    return f"pushing {target}:{tag} to the registry {registry} failed: {error.strip()}"


def require_served(client: DockerClient, registry: str, name: str, pushed: str) -> None:
    """Ask the registry, through the daemon (so with the daemon's TLS settings and `docker login`
    credentials), which digest it serves for ``name``; it must be the one the push reported."""
    try:
        served = client.images.get_registry_data(name).id
    except APIError as error:
        raise Failure(
            f"the registry {registry} does not serve {name} after the push: {error.explanation or error}"
        ) from None
    if served != pushed:
        raise Failure(f"the registry {registry} serves {name} as {served or 'no digest'}, not {pushed}.")


def apt_mirror(sources_list: Path = SOURCES_LIST, sources_dir: Path = SOURCES_DIR) -> str | None:
    """The first Debian archive in the apt sources: one-line .list files, then deb822 .sources files.

    Security and updates archives are skipped: debootstrap needs the main archive of a suite.
    """
    entries: list[tuple[str, list[str]]] = []
    list_files = [sources_list, *sorted(sources_dir.glob("*.list"))]
    for path in filter(Path.is_file, list_files):
        for line in path.read_text().splitlines():
            if match := re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line):
                entries.append((match[1], [match[2]]))
    for path in sorted(sources_dir.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = deb822_fields(stanza)
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
                entries.extend(
                    (uri, fields.get("suites", "").split()) for uri in fields.get("uris", "").split()
                )
    for uri, suites in entries:
        if any("-" not in suite for suite in suites):
            return uri.rstrip("/")
    return None


def deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0].isspace() and key:  # a continuation line
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


def build_base_image(name: str, suite: str, mirror: str | None) -> None:
    """debootstrap a minimal Debian with python3, venv and CA certificates, trim it, and docker import it."""
    if shutil.which("debootstrap") is None:
        raise Failure("debootstrap is not installed: `sudo apt-get install debootstrap` (Debian and Ubuntu).")
    if os.geteuid() != 0:
        raise Failure(
            "debootstrap needs root (it chroots and creates device files): run `sudo invoke base-image`."
        )
    mirror = mirror or apt_mirror()
    if not mirror:
        raise Failure(
            f"no Debian mirror found in {SOURCES_LIST} or {SOURCES_DIR}/*.list, *.sources: "
            "pass the URL of a Debian mirror with --mirror."
        )
    client = docker_client()
    repository, tag = parse_repository_tag(name)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="airflow-ha-base-") as work:
        root = Path(work, "rootfs")
        try:
            debootstrap(suite, root, mirror)
            trim(root)
            archive = Path(work, "rootfs.tar")
            subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(archive), "."], check=True)
        finally:
            unmount_below(root)
        with progress(f"docker import {name}"):
            client.api.import_image_from_file(
                str(archive),
                repository=repository,
                tag=tag or suite,
                changes=[
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                    f"LABEL org.opencontainers.image.description=debian-{suite}-minbase-python3",
                    'CMD ["python3"]',
                ],
            )
    size = client.images.get(name).attrs["Size"]
    console.print(
        f"built {name} ({size / 1e6:.0f} MB) from {mirror} {suite} in {time.monotonic() - started:.0f} s",
        style="green",
    )


def debootstrap(suite: str, root: Path, mirror: str, packages: Iterable[str] = BASE_PACKAGES) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        suite,
        str(root),
        mirror,
    ]
    tail = deque[str](maxlen=LOG_TAIL)
    with progress(f"debootstrap {suite} from {mirror}") as status:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip())
            status.update(f"debootstrap {suite}: {line.strip()}")
    if process.wait() != 0:
        lines = "\n".join(f"  | {line}" for line in tail)
        raise Failure(
            f"debootstrap of {suite} from {mirror} failed (exit {process.returncode}):\n{lines}\n"
            "Check that the mirror serves that suite (--mirror URL, --suite NAME)."
        )


def trim(root: Path) -> None:
    """Drop docs (but not copyright files), man pages, translations, apt lists, caches and logs."""
    for folder in TRIMMED:
        for path in sorted((root / folder).rglob("*"), reverse=True):  # a folder's files before the folder
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif path.name != "copyright":
                path.unlink()
    # Files only: apt and dpkg expect these folders to exist.
    for folder in ("var/lib/apt/lists", "var/cache/apt", "var/log"):
        for path in (root / folder).rglob("*"):
            if path.is_file() or path.is_symlink():
                path.unlink()
    # debootstrap copies these from the host; the container runtime provides its own.
    for leaked in ("etc/resolv.conf", "etc/hostname"):
        (root / leaked).unlink(missing_ok=True)
    Path(root, "etc/dpkg/dpkg.cfg.d/excludes").write_text(DPKG_EXCLUDES)
    Path(root, "etc/apt/apt.conf.d/no-cache").write_text(APT_NO_CACHE)


def unmount_below(root: Path) -> None:
    """Unmount what a failed debootstrap left mounted (proc, sys), so deleting the tree stays inside it."""
    mounted = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((point for point in mounted if point.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)
