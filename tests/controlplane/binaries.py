"""Kubernetes and etcd, built from their Go modules at the versions go.mod pins.

The two modules here (this folder for Kubernetes, ``etcd/`` for etcd, kept apart so that
neither moves the other's dependencies) hold no code: their go.mod names the commands as
``tool`` lines, so ``go.sum`` pins every module they are built from. A build lands in
``.cache/kubernetes/<key>/``, where the key digests go.mod, go.sum, the Go version and the
build flags: change any of them and the binaries are built again; change none and they are
reused. Builds run with ``-mod=readonly``, so nothing outside go.sum can be used.

``python -m tests.controlplane.binaries build [NAME...]`` builds (default: the control plane's) and prints the
folder; ``go-mod VERSION`` writes go.mod for another Kubernetes release, with the replace lines
generated from that release's own go.mod, then tidies it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
CACHE = REPO_ROOT / ".cache" / "kubernetes"

# The control plane's commands need no cgo; hack/lib/golang.sh builds them static too.
BUILD_ENV = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false", "GOTOOLCHAIN": "local"}
BUILD_FLAGS = ("-trimpath",)
# Cold, on 2 cores, measured by benchmarks/control_plane.py; said so that the wait is no surprise.
COLD_MINUTES = 5


@dataclass(frozen=True)
class Module:
    folder: Path
    path: str  # the module that carries the version
    commands: dict[str, str]  # binary name -> main package
    stamp: Callable[[Module], str]  # the -ldflags that stamp its version

    def version(self) -> str:
        """The version go.mod requires of ``path``."""
        found = re.search(rf"^\s*(?:require\s+)?{re.escape(self.path)} (v\S+)", self.go_mod(), re.M)
        if not found:
            raise RuntimeError(f"{self.folder / 'go.mod'}: no require line for {self.path}")
        return found.group(1)

    def go_mod(self) -> str:
        return (self.folder / "go.mod").read_text()

    def ldflags(self) -> str:
        return self.stamp(self)

    def published(self) -> str:
        """The module's publication time as the proxy reports it, from the module cache."""
        info = _go(["list", "-m", "-json", self.path], self.folder, capture=True)
        return str(json.loads(info).get("Time", "1970-01-01T00:00:00Z")).replace(".000000000", "")


def kubernetes_stamp(module: Module) -> str:
    """As hack/lib/version.sh stamps a release; kubeadm and kind read it. A module zip has no git
    metadata, and the build date is the module's publication, for reproducibility."""
    version = module.version()
    major, minor = version.removeprefix("v").split(".")[:2]
    stamp = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": "unknown",
        "gitTreeState": "clean",
        "buildDate": module.published(),
    }
    return " ".join(
        f"-X {package}.{name}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in stamp.items()
    )


def etcd_stamp(module: Module) -> str:
    """etcd reads its version from its own module; only the commit is left to stamp."""
    return "-X go.etcd.io/etcd/api/v3/version.GitSHA=unknown"


# The node's commands (kubeadm, kubelet, kube-proxy) are tools here too, for tests/kind's node
# image: one go.mod pins one Kubernetes for both, and its replace block is generated once.
KUBERNETES = Module(
    folder=HERE,
    path="k8s.io/kubernetes",
    commands={
        name: f"k8s.io/kubernetes/cmd/{name}"
        for name in (
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
            "kubeadm",
            "kubelet",
            "kube-proxy",
        )
    },
    stamp=kubernetes_stamp,
)
ETCD = Module(
    folder=HERE / "etcd",
    path="go.etcd.io/etcd/server/v3",
    commands={"etcd": "go.etcd.io/etcd/server/v3"},
    stamp=etcd_stamp,
)
MODULES = (KUBERNETES, ETCD)
# What the tests' control plane runs, and so what `build` without names builds.
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd")


def go_binary() -> str:
    go = shutil.which("go")
    if not go:
        raise RuntimeError(
            "the real control plane is built from source and needs Go (go.mod says which): "
            "install it from https://go.dev/dl/ and put it on PATH"
        )
    return go


def go_version() -> str:
    return subprocess.run([go_binary(), "version"], capture_output=True, text=True, check=True).stdout.strip()


def cache_key() -> str:
    digest = hashlib.sha256(go_version().encode())
    digest.update(json.dumps([BUILD_ENV, BUILD_FLAGS]).encode())
    for module in MODULES:
        for name in ("go.mod", "go.sum"):
            digest.update((module.folder / name).read_bytes())
    return digest.hexdigest()[:16]


def bin_dir() -> Path:
    return CACHE / cache_key() / "bin"


def ensure(names: list[str] | None = None) -> dict[str, Path]:
    """Each binary's path, building those missing from this key's folder."""
    folder = bin_dir()
    wanted = names or list(CONTROL_PLANE)
    paths: dict[str, Path] = {}
    for module in MODULES:
        names_here = [name for name in wanted if name in module.commands]
        missing = [name for name in names_here if not (folder / name).is_file()]
        if missing:
            build(module, missing, folder)
        paths.update({name: folder / name for name in names_here})
    unknown = set(wanted) - set(paths)
    if unknown:
        raise RuntimeError(f"no such binary here: {', '.join(sorted(unknown))}")
    return paths


def build(module: Module, names: list[str], folder: Path) -> None:
    version = module.version()
    print(
        f"building {', '.join(names)} {version} from source into {_shown(folder)} "
        f"(the first build on a machine takes about {COLD_MINUTES} min on 2 cores)",
        file=sys.stderr,
        flush=True,
    )
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Built beside the target and renamed into place, so an interrupted build leaves no binary.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as scratch:
        # One go build for them all shares its compile work; each is named after its package's
        # last element but etcd's, whose main package is go.etcd.io/etcd/server/v3.
        output = str(Path(scratch) / names[0]) if len(names) == 1 else scratch + os.sep
        command = ["build", *BUILD_FLAGS, "-ldflags", module.ldflags(), "-o", output]
        _go([*command, *(module.commands[name] for name in names)], module.folder)
        for name in names:
            os.replace(Path(scratch) / name, folder / name)
    print(f"built {', '.join(names)} in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def _shown(path: Path) -> Path:
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def _go(arguments: list[str], folder: Path, *, capture: bool = False) -> str:
    result = subprocess.run(
        [go_binary(), *arguments],
        cwd=folder,
        env={**os.environ, **BUILD_ENV},
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-5:] if capture else []
        raise RuntimeError(
            f"go {' '.join(arguments[:2])} in {folder} failed: {' / '.join(detail) or 'see above'}"
        )
    return result.stdout or ""


def write_go_mod(version: str) -> None:
    """go.mod for Kubernetes ``version``: its staging modules replaced by their published tags.

    k8s.io/kubernetes requires each staging module at v0.0.0 and replaces it with a folder of
    its own repository, so a module that depends on it must replace each with the
    v0.MINOR.PATCH tag. The list comes from that release's go.mod.
    """
    upstream = _go(["mod", "download", "-json", f"k8s.io/kubernetes@{version}"], HERE, capture=True)
    upstream_go_mod = Path(json.loads(upstream)["GoMod"]).read_text()
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/\S+) v0\.0\.0\s*$", upstream_go_mod, re.M)))
    go_directive = re.search(r"^go (\S+)", upstream_go_mod, re.M)
    godebug = re.search(r"^godebug .*$", upstream_go_mod, re.M)
    tag = "v0" + version.removeprefix("v1")
    lines = [
        "// Generated by `python -m tests.controlplane.binaries go-mod VERSION`; then `go mod tidy`.",
        "module airflowha.test/controlplane",
        "",
        f"go {go_directive.group(1) if go_directive else '1.25.0'}",
        "",
        *([godebug.group(0), ""] if godebug else []),
        "tool (",
        *(f"\t{package}" for package in KUBERNETES.commands.values()),
        ")",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
        *(f"\t{name} => {name} {tag}" for name in staging),
        ")",
        "",
    ]
    (HERE / "go.mod").write_text("\n".join(lines))
    (HERE / "go.sum").unlink(missing_ok=True)
    subprocess.run(
        [go_binary(), "mod", "tidy"], cwd=HERE, env={**os.environ, "GOFLAGS": "-mod=mod"}, check=True
    )


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["go-mod"] and len(argv) == 2:
            write_go_mod(argv[1])
        elif argv[:1] == ["build"]:
            paths = ensure(argv[1:] or None)
            print(next(iter(paths.values())).parent)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
