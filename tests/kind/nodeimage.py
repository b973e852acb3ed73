"""A kind node image built from source, with no registry: every binary from a pinned Go module.

Kubernetes (kubeadm, kubelet, kube-proxy and the control plane's images) and etcd come from
tests/controlplane, so the node runs the very release the control plane tests run. The rest
are pinned here, one module per component under ``modules/`` (each holds only ``tool`` lines
and its go.sum, and is kept apart so that none moves another's dependencies): kind,
containerd, runc, crictl, the CNI plugins, CoreDNS, kube-router (the default CNI: routes
between nodes and a NetworkPolicy firewall) and local-path-provisioner (the default
StorageClass). They are built into ``.cache/kind-node/<key>/bin``, keyed like
tests/controlplane/binaries.py by every go.mod and go.sum, the Go and gcc versions and the
build flags, and reused when none changed. pause is ``gcc -static`` of pause.c from the
Kubernetes module.

The node's root file system is a debootstrap of Debian bookworm from the mirror in the apt
sources, as `invoke base-image` finds it. assemble-node-image.sh then does what kind's
``build node-image`` does, with kind's own images/base files from its module, and preloads
the add-ons' images that ``manifests/`` names (busybox as local-path's helper).

``python -m tests.kind.nodeimage build`` builds what is missing and prints the image names.
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
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from airflow_ha import image as base_image
from tests.controlplane import binaries

HERE = Path(__file__).resolve().parent
MODULES = HERE / "modules"
CACHE = binaries.REPO_ROOT / ".cache" / "kind-node"
ASSEMBLE = HERE / "assemble-node-image.sh"
# kind's /kind/manifests: kube-router as the default CNI, local-path-provisioner as the storage.
MANIFESTS = HERE / "manifests"
# Where the add-on images built here are named, in the node's containerd (docker.io/ prefixed).
ADDON_PREFIX = "airflow-ha-kind-node"
ADDONS = ("kube-router", "local-path-provisioner")

BUILD_ENV = {"GOFLAGS": "-mod=readonly -buildvcs=false", "GOTOOLCHAIN": "local"}
# Stripped, as release binaries are: the node image carries them all.
BUILD_FLAGS = ("-trimpath",)
STRIP = "-s -w"

SUITE = "bookworm"
# What a kind node runs besides the binaries; busybox-static makes the test pod's image.
NODE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "conntrack",
    "iptables",
    "nftables",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "e2fsprogs",
    "bash",
    "ca-certificates",
    "curl",
    "jq",
    "procps",
    "ipset",
    "iputils-ping",
    "socat",
    "busybox-static",
)
# Kubernetes binaries the node needs: kubeadm's own, and the control plane it runs as images.
KUBERNETES_NAMES = (
    "kubeadm",
    "kubelet",
    "kubectl",
    "kube-proxy",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
)


@dataclass(frozen=True)
class Component:
    folder: str  # under modules/
    path: str  # the module that carries the version
    commands: tuple[str, ...]  # main packages; each binary is named after its last element
    stamp: str = ""  # -X flags; {version} and {bare} (without the v) are filled in
    cgo: bool = False
    tags: str = ""
    into: str = ""  # a subfolder of bin/

    def version(self) -> str:
        go_mod = (MODULES / self.folder / "go.mod").read_text()
        found = re.search(rf"^\s*(?:require\s+)?{re.escape(self.path)} (v\S+)", go_mod, re.M)
        if not found:
            raise RuntimeError(f"{MODULES / self.folder / 'go.mod'}: no require line for {self.path}")
        return found.group(1)

    def ldflags(self) -> str:
        version = self.version()
        return f"{STRIP} {self.stamp.format(version=version, bare=version.removeprefix('v'))}".strip()

    def binaries(self) -> list[str]:
        return [str(Path(self.into, command.rsplit("/", 1)[-1])) for command in self.commands]


CNI = "github.com/containernetworking/plugins/plugins"
CONTAINERD = "github.com/containerd/containerd/v2"
COMPONENTS = (
    Component("kind", "sigs.k8s.io/kind", ("sigs.k8s.io/kind",)),
    Component(
        "containerd",
        CONTAINERD,
        tuple(f"{CONTAINERD}/cmd/{name}" for name in ("containerd", "ctr", "containerd-shim-runc-v2")),
        stamp=f"-X {CONTAINERD}/version.Version={{version}}",
    ),
    # runc needs cgo for libseccomp (Debian's libseccomp-dev); without seccomp it cannot apply
    # the RuntimeDefault profile pods ask for.
    Component(
        "runc",
        "github.com/opencontainers/runc",
        ("github.com/opencontainers/runc",),
        stamp="-X main.version={bare}",
        cgo=True,
        tags="seccomp",
    ),
    # The module's own path: the proxy refuses github.com/kubernetes-sigs/cri-tools.
    Component(
        "crictl",
        "sigs.k8s.io/cri-tools",
        ("sigs.k8s.io/cri-tools/cmd/crictl",),
        stamp="-X sigs.k8s.io/cri-tools/pkg/version.Version={version}",
    ),
    Component(
        "cni",
        "github.com/containernetworking/plugins",
        tuple(
            f"{CNI}/{name}"
            for name in ("main/bridge", "main/ptp", "main/loopback", "ipam/host-local", "meta/portmap")
        ),
        into="cni",
    ),
    Component("coredns", "github.com/coredns/coredns", ("github.com/coredns/coredns",)),
    # The image's default CNI: routes between nodes' pod CIDRs and enforces NetworkPolicies.
    Component(
        "kube-router",
        "github.com/cloudnativelabs/kube-router/v2",
        ("github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",),
        stamp="-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={version}",
    ),
    # The image's default StorageClass, as kind's own images have it.
    Component(
        "local-path-provisioner",
        "github.com/rancher/local-path-provisioner",
        ("github.com/rancher/local-path-provisioner",),
        stamp="-X main.VERSION={version}",
    ),
)
KIND = COMPONENTS[0]


def _step(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(command[:3])} failed: {tail}")
    return result.stdout


def cache_key() -> str:
    digest = hashlib.sha256(binaries.go_version().encode())
    digest.update(_run(["gcc", "--version"]).splitlines()[0].encode())  # pause and runc's cgo
    digest.update(json.dumps([BUILD_ENV, BUILD_FLAGS, STRIP, [c.__dict__ for c in COMPONENTS]]).encode())
    for component in COMPONENTS:
        for name in ("go.mod", "go.sum"):
            digest.update((MODULES / component.folder / name).read_bytes())
    return digest.hexdigest()[:16]


def bin_dir() -> Path:
    return CACHE / cache_key() / "bin"


def module_dir(folder: Path, module: str) -> Path:
    """Where a module pinned by ``folder``'s go.mod lies in the module cache (downloaded if need be)."""
    info = json.loads(
        _run([binaries.go_binary(), "mod", "download", "-json", module], cwd=folder, env=BUILD_ENV)
    )
    return Path(info["Dir"])


def ensure_binaries() -> Path:
    """This key's bin folder, every component in it; those missing are built first."""
    folder = bin_dir()
    for component in COMPONENTS:
        if all((folder / name).is_file() for name in component.binaries()):
            continue
        build(component, folder)
    if not (folder / "pause").is_file():
        build_pause(folder)
    return folder


def build(component: Component, folder: Path) -> None:
    started = time.monotonic()
    target = folder / component.into
    target.mkdir(parents=True, exist_ok=True)
    _step(f"building {component.folder} {component.version()} from source into {target}")
    with tempfile.TemporaryDirectory(dir=target, prefix=".build-") as scratch:
        output = str(Path(scratch, "x")) if len(component.commands) == 1 else scratch + os.sep
        command = [binaries.go_binary(), "build", *BUILD_FLAGS, "-ldflags", component.ldflags()]
        command += ["-tags", component.tags] if component.tags else []
        _run(
            [*command, "-o", output, *component.commands],
            cwd=MODULES / component.folder,
            env={**BUILD_ENV, "CGO_ENABLED": "1" if component.cgo else "0"},
        )
        if len(component.commands) == 1:
            os.replace(output, folder / component.binaries()[0])
        else:
            for name in component.binaries():
                os.replace(Path(scratch, Path(name).name), folder / name)
    _step(f"built {component.folder} in {time.monotonic() - started:.0f} s")


def build_pause(folder: Path) -> None:
    """pause as build/pause/Makefile makes it: static, from the Kubernetes module's pause.c."""
    started = time.monotonic()
    kubernetes = module_dir(binaries.HERE, f"k8s.io/kubernetes@{binaries.KUBERNETES.version()}")
    source = kubernetes / "build" / "pause" / "linux" / "pause.c"
    version = f"{binaries.KUBERNETES.version()}-source"
    _run(["gcc", "-Os", "-static", f"-DVERSION={version}", "-o", str(folder / "pause"), str(source)])
    _run(["strip", str(folder / "pause")])
    _step(f"built pause in {time.monotonic() - started:.0f} s")


def base_images(client: docker.DockerClient) -> tuple[str, str]:
    """The node's Debian root file system and a busybox image for test pods, by debootstrap.

    Tagged by what they are made of, and reused while that does not change.
    """
    key = hashlib.sha256(json.dumps([SUITE, NODE_PACKAGES]).encode()).hexdigest()[:12]
    node_base, busybox = f"airflow-ha-kind-node-base:{SUITE}-{key}", f"airflow-ha-busybox:{SUITE}-{key}"
    try:
        client.images.get(node_base)
        client.images.get(busybox)
        return node_base, busybox
    except ImageNotFound:
        pass
    if os.geteuid() != 0:
        raise RuntimeError(f"{node_base} is missing, and debootstrap needs root: run this as root")
    mirror = base_image.apt_mirror()
    if not mirror:
        raise RuntimeError("no Debian mirror in the apt sources: see `invoke base-image --help`")
    started = time.monotonic()
    _step(f"debootstrap {SUITE} for the node from {mirror}")
    with tempfile.TemporaryDirectory(prefix="airflow-ha-kind-node-") as work:
        root = Path(work, "rootfs")
        try:
            base_image.debootstrap(SUITE, root, mirror, NODE_PACKAGES)
            base_image.trim(root)
            _import(client, root, node_base, [])
            # busybox-static with one link per applet; "busybox" itself is one, and must stay the binary.
            tree = Path(work, "busybox")
            (tree / "bin").mkdir(parents=True)
            (tree / "tmp").mkdir(mode=0o1777)
            (tree / "etc").mkdir()
            shutil.copy2(root / "bin" / "busybox", tree / "bin" / "busybox")
            applets = _run(["chroot", str(root), "/bin/busybox", "--list"]).split()
            for applet in applets:
                if applet != "busybox":
                    (tree / "bin" / applet).symlink_to("busybox")
            (tree / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
            (tree / "etc" / "group").write_text("root:x:0:\n")
            _import(client, tree, busybox, ["ENV PATH=/bin", 'CMD ["/bin/sh"]'])
        finally:
            base_image.unmount_below(root)
    _step(f"built {node_base} and {busybox} in {time.monotonic() - started:.0f} s")
    return node_base, busybox


def _import(client: docker.DockerClient, tree: Path, name: str, changes: list[str]) -> None:
    archive = tree.with_suffix(".tar")
    _run(["tar", "--numeric-owner", "-C", str(tree), "-cf", str(archive), "."])
    repository, _, tag = name.rpartition(":")
    client.api.import_image_from_file(str(archive), repository=repository, tag=tag, changes=changes)
    archive.unlink()


def ensure() -> tuple[str, str, Path]:
    """The node image, the busybox image and the bin folder (kind, kubectl), building what is missing."""
    client = docker.from_env()
    started = time.monotonic()
    own = ensure_binaries()
    kubernetes = binaries.ensure(list(KUBERNETES_NAMES))["kubeadm"].parent
    _step(f"binaries ready after {time.monotonic() - started:.0f} s")
    node_base, busybox = base_images(client)
    digest = hashlib.sha256(f"{own}{kubernetes}{node_base}".encode())
    digest.update(ASSEMBLE.read_bytes())
    for manifest in sorted(MANIFESTS.glob("*.yaml")):
        digest.update(manifest.read_bytes())
    addons = {c.folder: f"{ADDON_PREFIX}/{c.folder}:{c.version()}" for c in COMPONENTS if c.folder in ADDONS}
    node = f"airflow-ha-kind-node:{binaries.KUBERNETES.version()}-{digest.hexdigest()[:12]}"
    try:
        client.images.get(node)
        _step(f"reusing {node}")
    except ImageNotFound:
        assembled = time.monotonic()
        kind_files = module_dir(MODULES / KIND.folder, f"{KIND.path}@{KIND.version()}") / "images/base/files"
        subprocess.run(
            ["bash", str(ASSEMBLE), node],
            env={
                **os.environ,
                "OWN_BIN": str(own),
                "KUBERNETES_BIN": str(kubernetes),
                "NODE_BASE": node_base,
                "KIND_FILES": str(kind_files),
                "KUBERNETES_VERSION": binaries.KUBERNETES.version(),
                "KUBE_ROUTER_IMAGE": addons["kube-router"],
                "LOCAL_PATH_IMAGE": addons["local-path-provisioner"],
                "BUSYBOX_IMAGE": busybox,
                "MANIFESTS": str(MANIFESTS),
            },
            check=True,
        )
        _step(f"assembled {node} in {time.monotonic() - assembled:.0f} s")
    # kind and kubectl side by side, so that one PATH entry gives the test both.
    tools = own / "tools"
    tools.mkdir(exist_ok=True)
    for name, path in (("kind", own / "kind"), ("kubectl", kubernetes / "kubectl")):
        (tools / name).unlink(missing_ok=True)
        (tools / name).symlink_to(path)
    return node, busybox, tools


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        node, busybox, tools = ensure()
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(node, busybox, tools)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
