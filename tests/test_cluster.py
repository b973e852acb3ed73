"""Preflight, the context-safety rule, the project's kubeconfig, kind's host folders, clients.

Tools come from a PATH made for each test (links to the real docker, kubectl and checkov
when the machine has them; kind is a shell script that records its arguments, or absent),
kind's download goes to a closed port on 127.0.0.1, and kubeconfigs are written to a
temporary folder; no Kubernetes API is contacted except one that is known to refuse
connections. Purging the logs folder uses real Docker containers.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from airflow_ha import REPO_ROOT, capacity, cluster, kubeapi, manifests, preflight, tools
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
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository root as cluster and tools see it: a temporary folder with the real kind config."""
    root = tmp_path / "repo"
    (root / "kube").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "kube" / "kind-cluster.yaml", root / "kube" / "kind-cluster.yaml")
    for name in (tools.CHECKOV_LOCK, "pyproject.toml", preflight.KIND_BUDGET):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, root / name)
    monkeypatch.setattr(cluster, "REPO_ROOT", root)
    monkeypatch.setattr(tools, "REPO_ROOT", root)
    return root


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, project: Path) -> Path:
    """The user's kubeconfig (current context prod), and the project's, which kind wrote."""
    path = write_kubeconfig(tmp_path / "kubeconfig", {"prod": "https://prod.example:6443"}, current="prod")
    monkeypatch.setenv("KUBECONFIG", str(path))
    (project / ".cache").mkdir()
    write_kubeconfig(
        project / ".cache" / "kubeconfig",
        {"kind-airflow-ha": "https://127.0.0.1:1"},
        current="kind-airflow-ha",
    )
    return path


@pytest.fixture
def tools_without_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """PATH holds the real docker, kubectl and checkov when present, and no kind; kind cannot be fetched."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    present = []
    checkov = tools.cached_checkov()
    for tool in ("docker", "kubectl", "checkov"):
        found = shutil.which(tool) or (str(checkov.path) if tool == "checkov" and checkov else None)
        if found:
            (bin_dir / tool).symlink_to(found)
            present.append(tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setattr(tools, "KIND", dataclasses.replace(tools.KIND, url=f"http://127.0.0.1:{closed}/kind"))
    return present


@pytest.fixture
def fake_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """kind on PATH as a script: it logs its arguments; `create cluster` writes the kubeconfig it is given."""
    bin_dir = tmp_path / "fake-kind"
    bin_dir.mkdir()
    log = tmp_path / "kind.log"
    written = write_kubeconfig(
        tmp_path / "kind-wrote", {"kind-airflow-ha": "https://127.0.0.1:1"}, current="kind-airflow-ha"
    ).read_text()
    (bin_dir / "kind").write_text(
        f"""#!/bin/sh
echo "$@" >> {log}
case "$1 $2" in
  "version ") echo "kind v0.33.0 go1.25 linux/amd64" ;;
  "create cluster")
    while [ "$1" != "--kubeconfig" ]; do shift; done
    printf '%s' '{written}' > "$2" ;;
esac
"""
    )
    (bin_dir / "kind").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{tmp_path / 'no-such-folder'}")
    return log


# the context-safety rule


def test_without_context_the_kind_context_is_used_whatever_the_current_one(kubeconfig):
    assert cluster.check_context(None, "airflow-ha") == "kind-airflow-ha"


def test_an_explicit_context_is_used(kubeconfig):
    assert cluster.check_context("prod", "airflow-ha") == "prod"


def test_the_current_context_is_refused_when_the_kind_one_is_missing(tmp_path, monkeypatch, project):
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


def test_no_kubeconfig_at_all(tmp_path, monkeypatch, project):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))

    with pytest.raises(
        Failure, match=r"kind cluster 'airflow-ha' does not exist \(`invoke deploy` creates it\)\.$"
    ):
        cluster.check_context(None, "airflow-ha")


def test_the_kind_context_comes_from_the_projects_kubeconfig_and_others_from_the_users(kubeconfig, project):
    assert cluster.kubeconfig_for("kind-airflow-ha") == str(project / ".cache" / "kubeconfig")
    assert cluster.kubeconfig_for("prod") == str(kubeconfig)
    assert (
        cluster.kubectl_flags("kind-airflow-ha") == "--kubeconfig .cache/kubeconfig --context kind-airflow-ha"
    )


# preflight


def test_preflight_names_each_missing_tool_and_how_to_get_it(tools_without_kind, kubeconfig, capsys):
    with pytest.raises(Failure) as failed:
        preflight.run(None, "airflow-ha")
    lines = str(failed.value).splitlines()
    kind_line = next(line for line in lines if line.startswith("kind "))
    assert kind_line.startswith(
        "kind missing: kind v0.33.0 is not installed and the download failed: tried http"
    )
    assert "Install it by hand (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)" in kind_line
    if "docker" not in tools_without_kind:
        assert any(line.startswith("docker CLI not found: ") for line in lines)
    table = capsys.readouterr().out
    for row in (
        "docker CLI",
        "docker daemon",
        "kind",
        "kubectl",
        "checkov",
        "kube context",
        "apache-airflow",
    ):
        assert row in table


def test_preflight_reports_the_versions_it_found_and_where_from(tools_without_kind, kubeconfig, capsys):
    if "kubectl" not in tools_without_kind:
        pytest.skip("kubectl is not installed here")
    with pytest.raises(Failure):
        preflight.run(None, "airflow-ha")
    table = capsys.readouterr().out

    reported = json.loads(
        subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True).stdout
    )
    kubectl_row = next(line for line in table.splitlines() if " kubectl " in line)
    assert " ok " in kubectl_row
    assert reported["clientVersion"]["gitVersion"][:8] in kubectl_row
    assert "PATH:" in kubectl_row


def test_another_context_needs_neither_kind_nor_docker_when_nothing_is_built(tools_without_kind, kubeconfig):
    absent = {"kubectl", "checkov"} - set(tools_without_kind)
    try:
        target = preflight.run("prod", "airflow-ha", build=False, quiet=True)
    except Failure as failure:
        named = {line.split()[0] for line in str(failure).splitlines()}
        assert named == absent  # only what this machine lacks, never kind or docker
    else:
        assert target == "prod"
        assert not absent


def test_preflight_checks_the_declared_python_dependencies(tmp_path, monkeypatch, kubeconfig, project):
    (project / "pyproject.toml").write_text(
        '[project]\ndependencies = ["rich>=999", "no-such-package-here>=1"]\n'
    )

    with pytest.raises(Failure) as failed:
        preflight.run("prod", "airflow-ha", build=False, quiet=True)
    message = str(failed.value)
    assert "installed, >=999 needed: set the project up again: `python3 -m airflow_ha.bootstrap" in message
    assert "no-such-package-here not installed" in message


def budget_file(tmp_path: Path, docker_memory: str) -> Path:
    path = tmp_path / "budget.yaml"
    path.write_text(f"cpu: '4'\nmemory: 8Gi\npods: 10\nworker_pods: 1\ndocker_memory: {docker_memory}\n")
    return path


def test_docker_memory_below_the_kind_budget_fails_with_both_numbers(tmp_path):
    check = preflight.docker_memory_check({"MemTotal": 4 * 2**30}, budget_file(tmp_path, "8Gi"))

    assert not check.ok
    assert check.problem == "4.0 GiB, budget 8 GiB"
    assert check.fix.startswith("Docker has 4.0 GiB of memory and the kind overlay's budget (")
    assert "budget.yaml, docker_memory) assumes 8 GiB: give Docker more memory" in check.fix


def test_docker_desktops_8_gb_meets_an_8_gib_budget(tmp_path):
    assert preflight.docker_memory_check({"MemTotal": int(7.7 * 2**30)}, budget_file(tmp_path, "8Gi")).ok


def test_the_repositorys_kind_budget_declares_a_laptop_of_8_gib():
    path = REPO_ROOT / preflight.KIND_BUDGET
    assert capacity.read_budget(path).docker_memory == 8 * 2**30
    assert preflight.docker_memory_check({"MemTotal": 6 * 2**30}, path).problem == "6.0 GiB, budget 8 GiB"


def test_a_bad_docker_memory_names_the_file_and_the_field(tmp_path):
    with pytest.raises(
        Failure,
        match=r"budget.yaml: docker_memory: 'lots' is not a Kubernetes quantity \(500m, 2, 768Mi, 8Gi\)",
    ):
        preflight.docker_memory_check({"MemTotal": 1}, budget_file(tmp_path, "lots"))


def test_the_containerd_image_store_gets_a_warning_that_names_the_fix():
    containerd = {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
    classic = {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}

    warned = preflight.image_store_check(containerd)
    assert warned.ok and not warned.required
    assert "kind load docker-image" in warned.note and "containerd-snapshotter" in warned.note
    assert preflight.image_store_check(classic).note == ""


def test_kind_older_than_the_node_images_release_is_refused(tmp_path, monkeypatch, project):
    old = tmp_path / "old"
    old.mkdir()
    (old / "kind").write_text("#!/bin/sh\necho 'kind v0.20.0 go1.20 linux/amd64'\n")
    (old / "kind").chmod(0o755)
    monkeypatch.setenv("PATH", str(old))
    # Found, but not provisioned again: what a too-old kind on PATH looks like offline.
    monkeypatch.setattr(tools, "kind", lambda provision: tools.Tool("kind", old / "kind", "v0.20.0", "PATH"))

    check = preflight._tool_check("kind", tools.kind, required=True)

    assert not check.ok
    assert check.problem == "v0.20.0 is too old"
    assert "come from kind v0.33.0 and need it or later" in check.fix


# kind


def test_kind_writes_the_projects_kubeconfig_and_leaves_the_users_alone(fake_kind, kubeconfig, project):
    user_config = kubeconfig.read_text()
    (project / ".cache" / "kubeconfig").unlink()

    created = cluster.ensure_kind_cluster("airflow-ha", "kube/kind-cluster.yaml", 60, namespace="team-a")

    assert created
    create = next(line for line in fake_kind.read_text().splitlines() if line.startswith("create cluster"))
    assert f"--kubeconfig {project / '.cache' / 'kubeconfig'}" in create
    assert kubeconfig.read_text() == user_config
    assert cluster.check_context(None, "airflow-ha") == "kind-airflow-ha"
    assert cluster.kube_contexts()[1] == "prod"
    folder = project / ".kind" / "airflow-logs" / "team-a"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777


def test_a_node_image_given_replaces_the_configs_for_every_node(fake_kind, project):
    cluster.ensure_kind_cluster("airflow-ha", "kube/kind-cluster.yaml", 60, node_image="node:local")

    create = next(line for line in fake_kind.read_text().splitlines() if line.startswith("create cluster"))
    assert create.endswith("--image node:local")


def test_deleting_the_cluster_edits_only_the_projects_kubeconfig(fake_kind, kubeconfig, project, monkeypatch):
    monkeypatch.setattr(cluster, "kind_clusters", lambda: ["airflow-ha"])

    assert cluster.delete_kind_cluster("airflow-ha", 60)
    assert f"delete cluster --name airflow-ha --kubeconfig {project / '.cache' / 'kubeconfig'}" in (
        fake_kind.read_text()
    )


def test_host_mounts_are_created_world_writable_relative_to_the_repo(project):
    folders = cluster.prepare_host_mounts(REPO_ROOT / "kube" / "kind-cluster.yaml")

    assert folders == [project / ".kind" / "airflow-logs"]
    assert stat.S_IMODE(folders[0].stat().st_mode) == 0o777


def test_a_broken_kind_config_is_named(tmp_path):
    config = tmp_path / "kind.yaml"
    config.write_text("nodes: [unclosed")

    with pytest.raises(Failure, match=r"kind.yaml: cannot read the kind config"):
        cluster.prepare_host_mounts(config)


def test_kind_commands_say_how_to_get_kind(tools_without_kind, project):
    with pytest.raises(Failure, match=r"kind v0.33.0 is not installed and the download failed: tried http"):
        cluster.kind_clusters()


def test_the_api_server_port_is_published_on_loopback_only():
    config = yaml.safe_load((REPO_ROOT / "kube" / "kind-cluster.yaml").read_text())
    mappings = [mapping for node in config["nodes"] for mapping in node.get("extraPortMappings") or []]
    assert mappings
    for mapping in mappings:
        assert mapping.get("listenAddress") == "127.0.0.1", f"{mapping} would listen on every interface"


def test_two_namespaces_render_side_by_side_on_kind():
    """The kind overlay rendered for two namespaces shares no cluster-scoped name and no logs folder."""
    rendered = {
        namespace: manifests.render("kind", namespace=namespace) for namespace in ("airflow", "team-a")
    }
    cluster_scoped = {
        namespace: {m.ref for m in objects if m.namespace is None and m.kind != "Namespace"}
        for namespace, objects in rendered.items()
    }
    assert cluster_scoped["airflow"] and not cluster_scoped["airflow"] & cluster_scoped["team-a"]
    for namespace, objects in rendered.items():
        volume = next(m for m in objects if m.kind == "PersistentVolume")
        claim = next(m for m in objects if m.kind == "PersistentVolumeClaim" and m.name == "airflow-logs")
        assert volume.name == f"airflow-logs-{namespace}"
        assert volume.obj["spec"]["hostPath"]["path"] == f"/var/local/airflow-logs/{namespace}"
        assert volume.obj["spec"]["claimRef"] == {"namespace": namespace, "name": "airflow-logs"}
        assert claim.obj["spec"]["volumeName"] == volume.name
        assert claim.namespace == namespace


def test_the_logs_folder_of_a_namespace_is_under_the_mounted_folder():
    config = yaml.safe_load((REPO_ROOT / "kube" / "kind-cluster.yaml").read_text())
    mount = config["nodes"][0]["extraMounts"][0]
    volume = next(m for m in manifests.render("kind", namespace="team-a") if m.kind == "PersistentVolume")
    inside = Path(volume.obj["spec"]["hostPath"]["path"]).relative_to(mount["containerPath"])
    assert cluster.logs_folder(Path(mount["hostPath"]), "team-a") == Path(mount["hostPath"]) / inside


@pytest.mark.docker
def test_purge_deletes_logs_that_uid_50000_wrote_without_sudo(project, monkeypatch, base_image):
    """A real container writes as uid 50000; the host's delete is refused as an ordinary user's would be.

    The base_image fixture builds the registry-free base when it is missing (a fresh machine runs
    this session before the image session), so this runs, never skips, wherever Docker does.
    """
    folder = cluster.prepare_host_mounts(project / "kube" / "kind-cluster.yaml")[0]
    logs = folder / "airflow"
    logs.mkdir(mode=0o777)
    logs.chmod(0o777)
    subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--user",
            "50000:0",
            "--network",
            "none",
            "-v",
            f"{logs}:/logs",
            base_image,
            "sh",
            "-c",
            "mkdir -p /logs/dag_id=x/run_id=y && echo log > /logs/dag_id=x/run_id=y/1.log"
            " && chmod -R 755 /logs/dag_id=x",
        ],
        check=True,
    )
    real_rmtree = shutil.rmtree
    refused = []

    def rmtree_as_a_user(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(p.stat().st_uid == 50000 for p in Path(path).rglob("*")):
            refused.append(path)
            raise PermissionError(13, "Permission denied", str(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(cluster.shutil, "rmtree", rmtree_as_a_user)

    removed = cluster.purge_host_mounts(project / "kube" / "kind-cluster.yaml", image=base_image)

    assert refused == [folder]
    assert removed == [folder]
    assert not folder.exists()


# clients


def test_an_unreachable_cluster_is_named(kubeconfig):
    with pytest.raises(
        Failure, match=r"cannot reach the Kubernetes API of context 'kind-airflow-ha' at https://127.0.0.1:1"
    ):
        kubeapi.kube_clients("kind-airflow-ha")


# the e2e guard against an empty inventory


def test_the_e2e_inventory_check_fails_on_an_empty_inventory(monkeypatch):
    """The Kubernetes API is faked by an inventory that lists nothing."""
    from airflow_ha import deploy
    from tests.e2e import test_kind

    monkeypatch.setattr(deploy, "inventory", lambda kube, namespace, rendered_kinds=(): {})

    with pytest.raises(
        AssertionError, match=r"not in the cluster's inventory: .*'Deployment', 'airflow', 'airflow-sch"
    ):
        test_kind.deployed_inventory(kubeapi.Kube(context="kind-airflow-ha", dynamic=None, core=None))


# NetworkPolicy: who may reach whom, judged by the lint gate's evaluator


def test_the_api_server_reaches_the_triggerers_log_server_only_through_its_policy():
    """The rendered kind overlay, judged with Kubernetes' NetworkPolicy semantics (no cluster)."""
    from airflow_ha.lint.checks import reachability

    objects = manifests.render("kind")
    template = manifests.pod_template(objects)

    def triggerer_logs(objects: list[manifests.Manifest]) -> reachability.Judged:
        judged = [j for j in reachability.judge(objects, template) if j.flow.purpose == "triggerer logs"]
        assert len(judged) == 1, [j.flow.purpose for j in reachability.judge(objects, template)]
        return judged[0]

    assert triggerer_logs(objects).flow.required
    assert triggerer_logs(objects).allowed
    without = [m for m in objects if (m.kind, m.name) != ("NetworkPolicy", "airflow-triggerer")]
    assert not triggerer_logs(without).allowed
