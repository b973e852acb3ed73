"""Preflight, the context-safety rule, kind's host folders and client construction.

Tools come from a PATH made for each test (links to the real docker and kubectl when the
machine has them, never kind), and kubeconfigs are written to a temporary folder; no
Kubernetes API is contacted except one that is known to refuse connections.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from airflow_ha import REPO_ROOT, cluster, kubeapi
from airflow_ha.console import Failure


def write_kubeconfig(path: Path, contexts: dict[str, str], current: str) -> Path:
    """A kubeconfig with one cluster per context, context name -> server URL."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": name, "cluster": {"server": server}} for name, server in contexts.items()
                ],
                "users": [{"name": name, "user": {"token": "not-a-secret"}} for name in contexts],
                "contexts": [{"name": name, "context": {"cluster": name, "user": name}} for name in contexts],
                "current-context": current,
            }
        )
    )
    return path


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_kubeconfig(
        tmp_path / "kubeconfig",
        {"prod": "https://prod.example:6443", "kind-airflow-ha": "https://127.0.0.1:1"},
        current="prod",
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def tools_without_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """PATH holds the real docker, kubectl and checkov when present, and no kind."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    present = []
    for tool in ("docker", "kubectl", "checkov"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
            present.append(tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    return present


# the context-safety rule


def test_without_context_the_kind_context_is_used_whatever_the_current_one(kubeconfig):
    assert cluster.check_context(None, "airflow-ha") == "kind-airflow-ha"


def test_an_explicit_context_is_used(kubeconfig):
    assert cluster.check_context("prod", "airflow-ha") == "prod"


def test_the_current_context_is_refused_when_the_kind_one_is_missing(tmp_path, monkeypatch):
    path = write_kubeconfig(tmp_path / "config", {"prod": "https://prod.example:6443"}, current="prod")
    monkeypatch.setenv("KUBECONFIG", str(path))

    with pytest.raises(Failure) as failed:
        cluster.check_context(None, "airflow-ha")
    message = str(failed.value)
    assert "kube context 'kind-airflow-ha' not found" in message
    assert "The current context 'prod' is never used implicitly: pass --context prod to target it" in message


def test_an_unknown_explicit_context_is_refused(kubeconfig):
    with pytest.raises(
        Failure, match=r"kube context 'staging' \(from --context\) is not in your kubeconfig; "
    ):
        cluster.check_context("staging", "airflow-ha")


def test_no_kubeconfig_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))

    with pytest.raises(
        Failure, match=r"kind cluster 'airflow-ha' does not exist \(`invoke deploy` creates it\)\.$"
    ):
        cluster.check_context(None, "airflow-ha")


# preflight


def test_preflight_names_each_missing_tool_and_how_to_install_it(tools_without_kind, kubeconfig, capsys):
    with pytest.raises(Failure) as failed:
        cluster.preflight(None, "airflow-ha")
    lines = str(failed.value).splitlines()
    assert (
        "kind not found: install it: https://kind.sigs.k8s.io/docs/user/quick-start/#installation "
        in lines[0] + " "
    )
    for tool in {"docker", "kubectl", "checkov"} - set(tools_without_kind):
        name = "docker CLI" if tool == "docker" else tool
        assert any(line.startswith(f"{name} not found: ") for line in lines)
    table = capsys.readouterr().out
    for row in ("docker CLI", "docker daemon", "kind", "kubectl", "kube context", "apache-airflow", "httpx"):
        assert row in table


def test_preflight_reports_the_versions_it_found(tools_without_kind, kubeconfig, capsys):
    if "kubectl" not in tools_without_kind:
        pytest.skip("kubectl is not installed here")
    with pytest.raises(Failure):
        cluster.preflight(None, "airflow-ha")
    table = capsys.readouterr().out

    reported = json.loads(
        subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True).stdout
    )
    kubectl_row = next(line for line in table.splitlines() if " kubectl " in line)
    assert " ok " in kubectl_row
    assert reported["clientVersion"]["gitVersion"] in kubectl_row


def test_another_context_needs_neither_kind_nor_docker_when_nothing_is_built(tools_without_kind, kubeconfig):
    absent = {"kubectl", "checkov"} - set(tools_without_kind)
    try:
        target = cluster.preflight("prod", "airflow-ha", build=False, quiet=True)
    except Failure as failure:
        named = {line.split()[0] for line in str(failure).splitlines()}
        assert named == absent  # only what this machine lacks, never kind or docker
    else:
        assert target == "prod"
        assert not absent


def test_preflight_checks_the_declared_python_dependencies(tmp_path, monkeypatch, kubeconfig):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\ndependencies = ["rich>=999", "no-such-package-here>=1"]\n'
    )
    monkeypatch.setattr(cluster, "REPO_ROOT", tmp_path)

    with pytest.raises(Failure) as failed:
        cluster.preflight("prod", "airflow-ha", build=False, quiet=True)
    message = str(failed.value)
    assert (
        "installed, >=999 needed: install the project: `pip install -r docker/requirements.lock -e .`"
        in message
    )
    assert "no-such-package-here not installed" in message


# kind


def test_host_mounts_are_created_world_writable_relative_to_the_repo(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "REPO_ROOT", tmp_path)

    folders = cluster.prepare_host_mounts(REPO_ROOT / "kube" / "kind-cluster.yaml")

    assert folders == [tmp_path / ".kind" / "airflow-logs"]
    assert stat.S_IMODE(folders[0].stat().st_mode) == 0o777


def test_a_broken_kind_config_is_named(tmp_path):
    config = tmp_path / "kind.yaml"
    config.write_text("nodes: [unclosed")

    with pytest.raises(Failure, match=r"kind.yaml: cannot read the kind config"):
        cluster.prepare_host_mounts(config)


def test_kind_commands_say_how_to_install_kind(tools_without_kind):
    with pytest.raises(Failure, match=r"kind not found: install it: https://kind.sigs.k8s.io"):
        cluster.kind_clusters()


# clients


def test_an_unreachable_cluster_is_named(kubeconfig):
    with pytest.raises(
        Failure, match=r"cannot reach the Kubernetes API of context 'kind-airflow-ha' at https://127.0.0.1:1"
    ):
        kubeapi.kube_clients("kind-airflow-ha")
