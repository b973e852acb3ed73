"""The command-line tools the project runs, found or provisioned, and where each came from.

Docker is the one prerequisite. What else is missing the project fetches itself, pinned and
verified, into folders of its own:

- kind and kubectl: downloaded at pinned versions into ``.cache/bin``, each checked against
  its published SHA-256 before it is made executable. Where kind's download fails and Go is
  present, the failure offers ``invoke doctor --build-kind``, which builds the pinned release
  from its Go module instead (``go install``: the module proxy serves it and the checksum
  database verifies it, and kind's own go.sum pins what it depends on);
- checkov: installed from its hashed lock, requirements/checkov.lock, into a tool
  environment of its own under ``.cache/tools`` (its pins clash with Airflow's).

A tool already in ``.cache`` wins, then one on PATH (kind only when it is new enough for the
node image), then a download. ``python -m airflow_ha.tools provision NAME...`` does the same
for nox sessions (checkov always from its lock) and prints the folders to put on PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import REPO_ROOT, locks
from .console import Failure

TIMEOUT = 30  # seconds for a download to start or a version query to answer
CHUNK = 1 << 20


@dataclass(frozen=True)
class Binary:
    """A single-file release, pinned by version and by its SHA-256 on each platform."""

    name: str
    version: str
    url: str  # with {version}, {os} and {arch}
    sha256: dict[str, str]  # "os/arch" -> hex digest, as the project publishes it
    manual: str  # how to install it by hand

    def url_for(self, os_arch: str) -> str:
        system, arch = os_arch.split("/")
        return self.url.format(version=self.version, os=system, arch=arch)


# Digests as published beside each release asset (kind's GitHub release, dl.k8s.io/*.sha256).
KIND = Binary(
    name="kind",
    version="v0.33.0",
    url="https://github.com/kubernetes-sigs/kind/releases/download/{version}/kind-{os}-{arch}",
    sha256={
        "linux/amd64": "aee6151561422756b764a4ae28e7f44cda5af5a9eead3cc9985112b1de8d8e0d",
        "linux/arm64": "20022bee6cfcd5086cb7234d218e3454e6090022f2a8f55d1fa7fcf42c3867a2",
        "darwin/amd64": "5a99f26f57246dc9319dd294803313197a0f34d33c525b3ea8b655db5916ece0",
        "darwin/arm64": "0c8c7dbe5e23594a198b786c4bc13dacc101fa6196b0cb0b23a1ca44e61f4b4f",
    },
    manual="https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
)
KUBECTL = Binary(
    name="kubectl",
    version="v1.35.8",
    url="https://dl.k8s.io/release/{version}/bin/{os}/{arch}/kubectl",
    sha256={
        "linux/amd64": "874d5e72dbb819f43cff16bcd1e4f8bac5b7f2361fe1e55049b0a6c676fb0cbf",
        "linux/arm64": "cc749967b62f4422260bc9c0aa7a7c55f45175ae38cb8d95767b5d2b7e04c1fd",
        "darwin/amd64": "35c964c16432ea65eda6600d6ff4fea040d5eafcb6ad410297ba67d49b618148",
        "darwin/arm64": "b8be50ae0c6665b646fb009f904a52cad30806deee19ab3b4fe5af2d68bd82eb",
    },
    manual="https://kubernetes.io/docs/tasks/tools/#kubectl",
)
BINARIES = {binary.name: binary for binary in (KIND, KUBECTL)}
KIND_MODULE = "sigs.k8s.io/kind"
# `go install sigs.k8s.io/kind@v0.33.0` with empty Go caches on a 2-core machine: 44 s.
KIND_BUILD_TIME = "about a minute with empty Go caches on 2 cores"
# Settings that would build for another platform or skip the checksum database.
GO_SETTINGS_DROPPED = frozenset({"GOOS", "GOARCH", "GONOSUMDB", "GONOSUMCHECK", "GOPRIVATE", "GOINSECURE"})

# kind node images and the kind release whose notes published each: a node image is built
# by, and for, one kind release, and an older kind may fail to boot it.
NODE_IMAGE_RELEASES = {
    "kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0": "v0.33.0",
}

CHECKOV_LOCK = "requirements/checkov.lock"


@dataclass
class Tool:
    """A tool in use: its path, version and where it came from."""

    name: str
    path: Path
    version: str | None
    source: str


def cache_dir() -> Path:
    return REPO_ROOT / ".cache"


def bin_dir() -> Path:
    return cache_dir() / "bin"


def checkov_env() -> Path:
    return cache_dir() / "tools" / "checkov"


def host_platform() -> str:
    """This machine as Go names it ("linux/amd64"), as release assets are named."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"{platform.system().lower()}/{arch}"


# kind and kubectl


def kind(*, provision: bool = True) -> Tool:
    """The kind binary to use: the project's, else one on PATH new enough for the node image."""
    return _binary(KIND, provision=provision)


def kubectl(*, provision: bool = True) -> Tool:
    return _binary(KUBECTL, provision=provision)


def _binary(binary: Binary, *, provision: bool) -> Tool:
    cached = in_cache(binary)
    if cached:
        return cached
    note = ""
    found = shutil.which(binary.name)
    if found:
        tool = Tool(binary.name, Path(found), version_of(binary.name, found), f"PATH: {found}")
        too_old = binary.name == "kind" and older(tool.version, required_kind_release())
        if not too_old:
            return tool
        note = f"{found} is kind {tool.version}, older than {required_kind_release()}; "
    if not provision:
        raise Failure(f"{note}{binary.name} not found: {install_hint(binary)}")
    try:
        path = download(binary)
    except Failure as failure:
        raise Failure(f"{note}{failure}{build_offer(binary)}") from None
    return Tool(binary.name, path, binary.version, f"{relative(path)}, downloaded, sha256 verified")


def in_cache(binary: Binary) -> Tool | None:
    """The project's copy of the binary: downloaded with the pinned digest, or built at the pinned version."""
    cached = bin_dir() / binary.name
    if not cached.is_file():
        return None
    digest = sha256_of(cached)
    if digest == binary.sha256.get(host_platform()):
        return Tool(binary.name, cached, binary.version, f"{relative(cached)}, sha256 verified")
    marker = _built_marker(binary)
    if marker.is_file() and marker.read_text().split() == [binary.version, digest]:
        return Tool(binary.name, cached, binary.version, f"{relative(cached)}, built from source")
    return None


def build_offer(binary: Binary) -> str:
    """What to run instead of a failed download, when this machine can build the binary."""
    go = shutil.which("go")
    if binary.name != "kind" or not go:
        return ""
    return (
        f". Go is on PATH ({go}): `invoke doctor --build-kind` builds kind {binary.version} from "
        f"{KIND_MODULE}@{binary.version} into {relative(bin_dir())} ({KIND_BUILD_TIME}), "
        "through the Go module proxy"
    )


def build_kind(*, timeout: float = 900) -> Tool:
    """kind at the pinned version, built by `go install` into .cache/bin; nothing is left on failure.

    A pinned kind already in .cache/bin, downloaded or built, is kept as it is.
    """
    cached = in_cache(KIND)
    if cached:
        print(f"kind {KIND.version} is already at {cached.source}: nothing to build", file=sys.stderr)
        return cached
    go = shutil.which("go")
    if not go:
        raise Failure(
            f"building kind from source needs Go on PATH (https://go.dev/dl/); or install kind "
            f"{KIND.version} by hand: {KIND.manual}"
        )
    target = bin_dir() / KIND.name
    bin_dir().mkdir(parents=True, exist_ok=True)
    print(
        f"building kind {KIND.version} from {KIND_MODULE}@{KIND.version} with {go} ({KIND_BUILD_TIME})",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix=".kind-build-", dir=bin_dir()) as gobin:
        env = {key: value for key, value in os.environ.items() if key not in GO_SETTINGS_DROPPED}
        # For this machine, statically (CGO_ENABLED=0, as kind's releases are built), and always
        # checked against the checksum database, whatever the user's Go settings say.
        env.update(GOBIN=gobin, CGO_ENABLED="0", GOFLAGS="", GOSUMDB="sum.golang.org")
        try:
            result = subprocess.run(
                [go, "install", f"{KIND_MODULE}@{KIND.version}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Failure(
                f"building kind {KIND.version} took over {timeout:.0f} s: nothing was installed"
            ) from None
        built = Path(gobin) / KIND.name
        if result.returncode != 0 or not built.is_file():
            tail = "\n".join(result.stderr.strip().splitlines()[-8:])
            raise Failure(
                f"`go install {KIND_MODULE}@{KIND.version}` failed, nothing was installed:\n{tail}\n"
                f"Fix what Go says above, or install kind by hand: {KIND.manual}"
            )
        reported = version_of("kind", built)
        if reported != KIND.version:
            raise Failure(
                f"the kind built from {KIND_MODULE}@{KIND.version} says {reported}: nothing was installed"
            )
        # The marker first: should the move not happen, it names a digest no binary has.
        _built_marker(KIND).write_text(f"{KIND.version} {sha256_of(built)}\n")
        os.replace(built, target)
    print(f"built kind {KIND.version} into {relative(target)}", file=sys.stderr)
    return Tool(KIND.name, target, KIND.version, f"{relative(target)}, built from source")


def _built_marker(binary: Binary) -> Path:
    """Names the version and digest of a binary the project built, as a published digest would."""
    return bin_dir() / f".{binary.name}.built-from-source"


def download(
    binary: Binary, *, os_arch: str | None = None, target_dir: Path | None = None, timeout: float = TIMEOUT
) -> Path:
    """Fetch a pinned binary, check its SHA-256, then make it executable; nothing is left on failure."""
    os_arch = os_arch or host_platform()
    expected = binary.sha256.get(os_arch)
    if expected is None:
        raise Failure(
            f"{binary.name} {binary.version} is not pinned for {os_arch} "
            f"(pinned: {', '.join(binary.sha256)}): install it by hand, {binary.manual}, and put it on PATH"
        )
    url = binary.url_for(os_arch)
    target_dir = target_dir or bin_dir()
    target = target_dir / binary.name
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target_dir / f".{binary.name}.partial"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or error
        raise Failure(
            f"{binary.name} {binary.version} is not installed and the download failed: "
            f"tried {url}: {reason}. "
            f"Install it by hand ({binary.manual}) and put it on PATH, or save that file as "
            f"{relative(target)}, then run again"
        ) from None
    actual = digest.hexdigest()
    if actual != expected:
        partial.unlink(missing_ok=True)
        raise Failure(
            f"{binary.name} {binary.version} from {url} has SHA-256 {actual}, not the pinned {expected}: "
            "nothing was installed. A proxy may have altered it; install it by hand "
            f"({binary.manual}) and put it on PATH"
        )
    partial.chmod(0o755)
    os.replace(partial, target)
    print(
        f"downloaded {binary.name} {binary.version} ({os_arch}, sha256 verified) to {relative(target)}",
        file=sys.stderr,
    )
    return target


def install_hint(binary: Binary) -> str:
    return f"`invoke doctor` downloads {binary.name} {binary.version}, or install it by hand: {binary.manual}"


def version_of(name: str, path: str | Path) -> str | None:
    """The version a kind or kubectl binary reports, or None when it cannot say."""
    command = [str(path), "version"] + (["--client", "-o", "json"] if name == "kubectl" else [])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    if name == "kubectl":
        try:
            return str(json.loads(result.stdout)["clientVersion"]["gitVersion"])
        except (ValueError, KeyError):
            return None
    found = re.search(r"\bv\d+\.\d+\.\d+\S*", result.stdout)
    return found.group(0) if found else None


def older(found: str | None, wanted: str) -> bool:
    """Whether version ``found`` is older than ``wanted`` (v1.2.3 forms); unknown counts as older."""
    parsed = _numbers(found)
    return parsed is None or parsed < (_numbers(wanted) or ())


def _numbers(text: str | None) -> tuple[int, ...] | None:
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(part) for part in found.groups()) if found else None


def required_kind_release() -> str:
    """The newest kind release that published one of the pinned node images."""
    return max(NODE_IMAGE_RELEASES.values(), key=lambda release: _numbers(release) or ())


# checkov


def checkov(*, provision: bool = True) -> Tool:
    """checkov from the project's tool environment, else from PATH, else installed from its lock."""
    cached = cached_checkov()
    if cached:
        return cached
    found = shutil.which("checkov")
    if found:
        return Tool("checkov", Path(found), None, f"PATH: {found}")
    if not provision:
        raise Failure(f"checkov not found: `invoke doctor` installs it from {CHECKOV_LOCK}")
    return install_checkov()


def cached_checkov() -> Tool | None:
    """The tool environment, when it holds what the lock pins now."""
    executable = checkov_env() / "bin" / "checkov"
    marker = _checkov_marker()
    if executable.is_file() and marker.is_file() and marker.read_text().strip() == _lock_digest():
        return Tool(
            "checkov", executable, checkov_version(), f"{relative(executable.parent)}, from {CHECKOV_LOCK}"
        )
    return None


def install_checkov() -> Tool:
    """A virtual environment under .cache/tools holding exactly what the hashed lock pins."""
    env = checkov_env()
    lock = REPO_ROOT / CHECKOV_LOCK
    print(f"installing checkov {checkov_version()} from {CHECKOV_LOCK} into {relative(env)}", file=sys.stderr)
    shutil.rmtree(env, ignore_errors=True)
    uv = find_uv()
    try:
        if uv:
            _run([uv, "venv", "--quiet", "--python", sys.executable, str(env)])
        else:
            _run([sys.executable, "-m", "venv", str(env)])
        locks.install(env / "bin" / "python", [lock], uv=uv)
    except (OSError, subprocess.CalledProcessError, locks.LockError) as error:
        shutil.rmtree(env, ignore_errors=True)
        output = getattr(error, "stderr", None) or str(error)
        tail = "\n".join(output.strip().splitlines()[-8:])
        raise Failure(
            f"installing checkov from {CHECKOV_LOCK} failed:\n{tail}\n"
            "PyPI must be reachable (set PIP_INDEX_URL or UV_INDEX_URL for a mirror)"
        ) from None
    _checkov_marker().write_text(_lock_digest() + "\n")
    return Tool(
        "checkov", env / "bin" / "checkov", checkov_version(), f"{relative(env / 'bin')}, from {CHECKOV_LOCK}"
    )


def _run(command: list[str]) -> None:
    subprocess.run(command, capture_output=True, text=True, check=True)


def checkov_version() -> str | None:
    """The version the lock pins (asking checkov itself takes seconds)."""
    found = re.search(r"^checkov==(\S+)", (REPO_ROOT / CHECKOV_LOCK).read_text(), re.M)
    return found.group(1) if found else None


def find_uv() -> str | None:
    """uv on PATH, or the one the bootstrap installed; pip is the slower fallback."""
    for candidate in (shutil.which("uv"), REPO_ROOT / ".cache" / "bootstrap" / "bin" / "uv"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def _checkov_marker() -> Path:
    return checkov_env() / "airflow-ha-lock"


def _lock_digest() -> str:
    return hashlib.sha256((REPO_ROOT / CHECKOV_LOCK).read_bytes()).hexdigest()


# helpers


def put_on_path(*tools: Tool) -> None:
    """Let this process, and what it starts, find each tool by name (checks run `checkov`, ...)."""
    folders = [str(tool.path.parent.resolve()) for tool in tools]
    current = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(dict.fromkeys([*folders, *current]))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def provision(names: list[str]) -> list[Tool]:
    """The named tools as `invoke deploy` finds or fetches them; checkov always from its lock.

    nox sessions use this: the lint gate's findings depend on checkov's version, so the
    sessions never take whichever checkov PATH happens to hold.
    """
    found = []
    for name in names:
        if name == "checkov":
            found.append(cached_checkov() or install_checkov())
        elif name in BINARIES:
            found.append(_binary(BINARIES[name], provision=True))
        else:
            raise Failure(f"unknown tool {name!r}: the project provisions checkov, {', '.join(BINARIES)}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "provision":
        print("usage: python -m airflow_ha.tools provision kind|kubectl|checkov ...", file=sys.stderr)
        return 2
    try:
        tools = provision(argv[1:])
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    for folder in dict.fromkeys(str(tool.path.parent.resolve()) for tool in tools):
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
