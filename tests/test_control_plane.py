"""The control plane the API tests run on (tests/controlplane): the pinned binaries, loopback
only, and a start that fails with the failing component's own log."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from controlplane import binaries
from controlplane.plane import ControlPlane, StartFailure


def version_of(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout


def test_the_binaries_are_the_releases_go_mod_pins() -> None:
    paths = binaries.ensure()
    kubernetes, etcd = binaries.KUBERNETES.version(), binaries.ETCD.version()

    assert version_of(str(paths["kube-apiserver"]), "--version").strip() == f"Kubernetes {kubernetes}"
    assert f"Client Version: {kubernetes}" in version_of(str(paths["kubectl"]), "version", "--client")
    assert f"etcd Version: {etcd.removeprefix('v')}" in version_of(str(paths["etcd"]), "--version")


def test_nothing_it_runs_listens_beyond_loopback(control_plane: ControlPlane) -> None:
    pids = {str(c.process.pid) for c in control_plane.components if c.process}
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    ours = [line for line in listening.splitlines() if set(re.findall(r"pid=(\d+)", line)) & pids]

    assert len(ours) >= 3, listening  # etcd's client and peer ports, and the API server's
    for line in ours:
        assert line.split()[3].startswith("127.0.0.1:"), line


def test_the_build_key_moves_with_the_build_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    key = binaries.cache_key()
    monkeypatch.setattr(binaries, "BUILD_FLAGS", (*binaries.BUILD_FLAGS, "-race"))

    assert binaries.cache_key() != key


class EtcdWithABadFlag(ControlPlane):
    def _run(self, name, command, ready):  # type: ignore[no-untyped-def]
        extra = ["--no-such-flag"] if name == "etcd" else []
        return super()._run(name, [*command, *extra], ready)


def test_a_component_that_does_not_start_fails_with_its_own_log(tmp_path: Path) -> None:
    plane = EtcdWithABadFlag(tmp_path)

    with pytest.raises(StartFailure) as failed:
        plane.start()

    message = str(failed.value)
    assert message.startswith("etcd exited with"), message
    assert "its log ends:" in message and "no-such-flag" in message, message
