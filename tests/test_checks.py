"""The lint gate: each check catches a broken copy of the repository, and passes the real one.

Every test copies what `invoke lint` reads into a temporary folder, makes one edit, runs
the checks that should catch it, and asserts on the file, object and field of the problem.
Nothing is mocked: kustomize, yamale, kubernetes-validate, Airflow and checkov run for real.
"""

from __future__ import annotations

import re
import shutil
from importlib import metadata
from pathlib import Path

import pytest

from airflow_ha import REPO_ROOT
from airflow_ha.console import Failure
from airflow_ha.lint import gate as checks
from airflow_ha.lint import registry
from airflow_ha.lint.checks import rbac
from airflow_ha.lint.problems import Problem

LINTED = ("kube", "dags", "schemas", "docker/Dockerfile", ".yamllint", "invoke.yaml", "okteto-pipeline.yml")
PROVIDER_EXECUTORS = "airflow/providers/cncf/kubernetes/executors"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of everything the lint gate reads."""
    for name in LINTED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, tmp_path / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old``: a test edits exactly one thing."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new))


def problems(root: Path, *only: str) -> list[Problem]:
    return [problem for problem, _ in checks.check(root=root, only=only).problems]


def one(found: list[Problem], check: str, file: str, resource: str = "", field: str = "") -> Problem:
    """The problem of ``check`` at that file, object and field; fails listing what was found."""
    matching = [
        problem
        for problem in found
        if (problem.check, problem.file, problem.resource) == (check, file, resource)
        and problem.field.startswith(field)
    ]
    assert matching, f"no {check} problem at {file} {resource} {field}; found: {found}"
    return matching[0]


def test_the_repository_lints_clean(capsys: pytest.CaptureFixture[str]) -> None:
    checks.lint(root=REPO_ROOT)

    output = capsys.readouterr().out
    assert "✗" not in output
    for name in registry.names():
        assert re.search(rf"{name}\s+│\s+0 │", output), f"no row for {name} in the summary table:\n{output}"


def test_lint_fails_with_a_report_naming_file_object_and_field(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(repo / "kube/base/scheduler.yaml", "  replicas: 2", "  replicas: 1")

    with pytest.raises(Failure, match=r"found \d+ problem"):
        checks.lint(root=repo)

    output = capsys.readouterr().out
    assert "✗ kube/base/scheduler.yaml  Deployment/airflow-scheduler  spec.replicas" in output
    assert re.search(r"schemas\s+│\s+1 │", output)


# The broken variants of the issue, in its order.


def test_unknown_field_in_a_deployment(repo: Path) -> None:
    edit(
        repo / "kube/base/scheduler.yaml",
        "      serviceAccountName:",
        "      restartPolcy: Always\n      serviceAccountName:",
    )

    problem = one(
        problems(repo, "kubernetes-validate"),
        "kubernetes-validate",
        "kube/base/scheduler.yaml",
        "Deployment/airflow-scheduler",
        "spec.template.spec",
    )
    assert "'restartPolcy' was unexpected" in problem.message
    assert "1.30, 1.35" in problem.message


def test_wrong_api_version(repo: Path) -> None:
    edit(repo / "kube/base/triggerer.yaml", "apiVersion: apps/v1", "apiVersion: apps/v1beta1")

    problem = one(
        problems(repo, "kubernetes-validate"),
        "kubernetes-validate",
        "kube/base/triggerer.yaml",
        "Deployment/airflow-triggerer",
        "apiVersion",
    )
    assert "no kind Deployment in apiVersion apps/v1beta1" in problem.message


def test_yaml_syntax_error(repo: Path) -> None:
    path = repo / "kube/base/dag-processor.yaml"
    edit(path, "  replicas: 1\n", "  replicas: 1\n bad: [\n")
    line = path.read_text().splitlines().index(" bad: [") + 1

    found = problems(repo, "yamllint")

    problem = one(found, "yamllint", "kube/base/dag-processor.yaml")
    assert "syntax error" in problem.message
    assert problem.line == line
    assert f"kube/base/dag-processor.yaml:{line}" in problem.text().plain
    failed = one(found, "kustomize", "kube/overlays/kind")
    assert "dag-processor.yaml" in failed.message


def test_service_selector_matching_nothing(repo: Path) -> None:
    edit(
        repo / "kube/base/postgres.yaml",
        "  selector:\n    app.kubernetes.io/name: postgresql",
        "  selector:\n    app.kubernetes.io/name: postgres",
    )

    problem = one(
        problems(repo, "wiring"),
        "wiring",
        "kube/base/postgres.yaml",
        "Service/airflow-postgres",
        "spec.selector",
    )
    assert "selects no pods" in problem.message
    assert "app.kubernetes.io/name=postgres" in problem.message
    assert "postgresql" not in problem.message


def test_secret_key_ref_to_a_missing_key(repo: Path) -> None:
    edit(repo / "kube/base/postgres.yaml", "key: password", "key: passwd")

    problem = one(
        problems(repo, "wiring"),
        "wiring",
        "kube/base/postgres.yaml",
        "StatefulSet/airflow-postgres",
        "spec.template.spec.containers[postgres].env[POSTGRES_PASSWORD].valueFrom.secretKeyRef",
    )
    assert "Secret 'airflow-postgres' has no key 'passwd'" in problem.message


def test_volume_naming_a_missing_config_map(repo: Path) -> None:
    edit(repo / "kube/base/scheduler.yaml", "name: airflow-pod-template", "name: airflow-pod-templates")

    problem = one(
        problems(repo, "wiring"),
        "wiring",
        "kube/base/scheduler.yaml",
        "Deployment/airflow-scheduler",
        "spec.template.spec.volumes[pod-template].configMap.name",
    )
    assert "ConfigMap 'airflow-pod-templates' does not exist" in problem.message


def test_latest_image(repo: Path) -> None:
    main_container = "\n          imagePullPolicy: IfNotPresent\n          args: [dag-processor]"
    edit(
        repo / "kube/base/dag-processor.yaml",
        f"image: airflow-ha:3.3.2{main_container}",
        f"image: airflow-ha:latest{main_container}",
    )

    problem = one(
        problems(repo, "schemas"),
        "schemas",
        "kube/base/dag-processor.yaml",
        "Deployment/airflow-dag-processor",
        "spec.template.spec.containers[dag-processor].image",
    )
    assert "'airflow-ha:latest' is not a pinned image" in problem.message


def test_container_with_no_resources(repo: Path) -> None:
    resources = (
        "          resources:\n            requests:\n              cpu: 250m\n              memory: 512Mi\n"
        '            limits:\n              cpu: "1"\n              memory: 1Gi\n'
    )
    edit(repo / "kube/base/triggerer.yaml", resources, "")

    problem = one(
        problems(repo, "schemas"),
        "schemas",
        "kube/base/triggerer.yaml",
        "Deployment/airflow-triggerer",
        "spec.template.spec.containers[triggerer].resources",
    )
    assert "Required field missing" in problem.message


def test_scheduler_with_one_replica(repo: Path) -> None:
    edit(repo / "kube/base/scheduler.yaml", "  replicas: 2", "  replicas: 1")

    problem = one(
        problems(repo, "schemas"),
        "schemas",
        "kube/base/scheduler.yaml",
        "Deployment/airflow-scheduler",
        "spec.replicas",
    )
    assert "1 is less than 2" in problem.message
    assert "component/scheduler in schemas/replicas.yaml" in problem.message


def test_scheduler_role_missing_watch_on_pods(repo: Path) -> None:
    edit(
        repo / "kube/base/rbac.yaml",
        "verbs: [create, delete, get, list, patch, watch]",
        "verbs: [create, delete, get, list, patch]",
    )

    problem = one(problems(repo, "rbac"), "rbac", "kube/base/rbac.yaml", "Role/airflow-pod-launcher", "rules")
    assert "may not watch pods, which KubernetesExecutor does: grant it" in problem.message


def test_pod_template_container_not_named_base(repo: Path) -> None:
    edit(repo / "kube/base/pod-template.yaml", "- name: base", "- name: worker")

    problem = one(
        problems(repo, "airflow"),
        "airflow",
        "kube/base/pod-template.yaml",
        "Pod/airflow-worker",
        "spec.containers[worker].name",
    )
    assert "name it 'base'" in problem.message


def test_execution_api_at_a_port_the_service_does_not_expose(repo: Path) -> None:
    edit(repo / "kube/base/airflow.env", "http://airflow-api-server:8080/", "http://airflow-api-server:8081/")

    problem = one(
        problems(repo, "wiring"),
        "wiring",
        "kube/base/airflow.env",
        "ConfigMap/airflow-config",
        "data.AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    )
    assert "port 8081 of airflow-api-server: Service/airflow-api-server" in problem.message
    assert "exposes only 8080" in problem.message


def test_duplicated_object(repo: Path) -> None:
    scheduler = (repo / "kube/base/scheduler.yaml").read_text()
    deployment = scheduler[scheduler.index("apiVersion: apps/v1") :]
    with (repo / "kube/base/triggerer.yaml").open("a") as triggerer:
        triggerer.write(f"---\n{deployment}")

    found = problems(repo, "wiring")

    refused = one(found, "kustomize", "kube/base/triggerer.yaml", "Deployment/airflow-scheduler")
    assert "kube/base/scheduler.yaml, kube/base/triggerer.yaml" in refused.message
    assert "kustomize refuses duplicates" in refused.message
    duplicate = one(
        found, "wiring", "kube/base/triggerer.yaml", "Deployment/airflow-scheduler", "metadata.name"
    )
    assert "defined 2 times" in duplicate.message


def test_misspelled_airflow_option(repo: Path) -> None:
    edit(repo / "kube/base/airflow.env", "DELETE_WORKER_PODS=True", "DELETE_WORKER_POD=True")

    problem = one(
        problems(repo, "airflow"),
        "airflow",
        "kube/base/airflow.env",
        "ConfigMap/airflow-config",
        "data.AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_POD",
    )
    assert "not an option of Airflow" in problem.message
    assert "did you mean AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS?" in problem.message


def test_privileged_container(repo: Path) -> None:
    edit(
        repo / "kube/base/postgres.yaml",
        "            allowPrivilegeEscalation: false\n",
        "            allowPrivilegeEscalation: false\n            privileged: true\n",
    )

    problem = one(
        problems(repo, "schemas"),
        "schemas",
        "kube/base/postgres.yaml",
        "StatefulSet/airflow-postgres",
        "spec.template.spec.containers[postgres].securityContext.privileged",
    )
    assert "True' not in (False,)" in problem.message


# More of each check.


def test_missing_part_of_label(repo: Path) -> None:
    edit(repo / "kube/overlays/kind/logs-volume.yaml", "    app.kubernetes.io/part-of: airflow-ha\n", "")

    problem = one(
        problems(repo, "schemas"),
        "schemas",
        "kube/overlays/kind/logs-volume.yaml",
        "PersistentVolume/airflow-logs",
        "metadata.labels.app.kubernetes.io/part-of",
    )
    assert "Required field missing" in problem.message


def test_long_running_container_without_probes(repo: Path) -> None:
    edit(repo / "kube/base/postgres.yaml", "          livenessProbe:\n", "          startupProbe:\n")

    problem = one(
        problems(repo, "schemas"),
        "schemas",
        "kube/base/postgres.yaml",
        "StatefulSet/airflow-postgres",
        "spec.template.spec.containers[postgres].livenessProbe",
    )
    assert "Required field missing" in problem.message


def test_worker_pods_must_not_restart(repo: Path) -> None:
    edit(repo / "kube/base/pod-template.yaml", "restartPolicy: Never", "restartPolicy: OnFailure")

    problem = one(
        problems(repo, "schemas"),
        "schemas",
        "kube/base/pod-template.yaml",
        "Pod/airflow-worker",
        "spec.restartPolicy",
    )
    assert "'OnFailure' not in ('Never',)" in problem.message


def test_okteto_pipeline_deploys_a_list_of_commands(repo: Path) -> None:
    (repo / "okteto-pipeline.yml").write_text("deploy: invoke deploy\n")

    problem = one(problems(repo, "schemas"), "schemas", "okteto-pipeline.yml", "", "deploy")
    assert "is not a list" in problem.message


def test_a_missing_okteto_pipeline_is_nothing_to_check(repo: Path) -> None:
    (repo / "okteto-pipeline.yml").unlink(missing_ok=True)

    assert problems(repo, "schemas") == []


def test_yamllint_style(repo: Path) -> None:
    path = repo / "kube/base/logs.yaml"
    edit(path, "  name: airflow-logs\n", "  name: airflow-logs   \n")
    line = path.read_text().splitlines().index("  name: airflow-logs   ") + 1

    problem = one(problems(repo, "yamllint"), "yamllint", "kube/base/logs.yaml")
    assert problem.message == "trailing spaces (trailing-spaces)"
    assert problem.line == line


def test_volume_mount_of_an_undefined_volume(repo: Path) -> None:
    edit(repo / "kube/base/migrate.yaml", "            - name: tmp\n", "            - name: temp\n")

    problem = one(
        problems(repo, "wiring"),
        "wiring",
        "kube/base/migrate.yaml",
        "Job/airflow-migrate",
        "spec.template.spec.containers[migrate].volumeMounts[temp]",
    )
    assert "does not define" in problem.message


def test_missing_service_account(repo: Path) -> None:
    edit(
        repo / "kube/base/pod-template.yaml",
        "serviceAccountName: airflow-worker",
        "serviceAccountName: worker",
    )

    problem = one(
        problems(repo, "wiring"),
        "wiring",
        "kube/base/pod-template.yaml",
        "Pod/airflow-worker",
        "spec.serviceAccountName",
    )
    assert "ServiceAccount 'worker' does not exist" in problem.message


def test_database_service_without_the_port_deploy_puts_in_the_url(repo: Path) -> None:
    edit(repo / "kube/base/postgres.yaml", "      port: 5432\n", "      port: 5433\n")

    problem = one(
        problems(repo, "wiring"),
        "wiring",
        "airflow_ha/secrets.py",
        "Secret/airflow-metadata",
        "data.AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    )
    assert "port 5432 of airflow-postgres" in problem.message


def test_pod_template_image_differs_from_the_worker_image_settings(repo: Path) -> None:
    edit(repo / "kube/base/pod-template.yaml", "image: airflow-ha:3.3.2", "image: airflow-ha:3.3.1")

    problem = one(
        problems(repo, "wiring"),
        "wiring",
        "kube/base/pod-template.yaml",
        "Pod/airflow-worker",
        "spec.containers[base].image",
    )
    assert "give airflow-ha:3.3.2, which override it" in problem.message


def test_scheduler_role_granting_more_than_the_executor_uses(repo: Path) -> None:
    edit(repo / "kube/base/rbac.yaml", "verbs: [create, delete, get, list, patch, watch]", "verbs: ['*']")

    problem = one(problems(repo, "rbac"), "rbac", "kube/base/rbac.yaml", "Role/airflow-pod-launcher", "rules")
    assert "may * pods, which it never does" in problem.message


def test_no_cluster_role(repo: Path) -> None:
    edit(
        repo / "kube/base/rbac.yaml",
        "kind: Role\nmetadata:\n  name: airflow-pod-log-reader",
        "kind: ClusterRole\nmetadata:\n  name: airflow-pod-log-reader",
    )

    found = problems(repo, "rbac")

    one(found, "rbac", "kube/base/rbac.yaml", "ClusterRole/airflow-pod-log-reader", "kind")


def test_worker_pods_running_as_root(repo: Path) -> None:
    edit(repo / "kube/base/pod-template.yaml", "    runAsUser: 50000\n", "    runAsUser: 0\n")

    problem = one(
        problems(repo, "airflow"),
        "airflow",
        "kube/base/pod-template.yaml",
        "Pod/airflow-worker",
        "spec.containers[base].securityContext",
    )
    assert "the worker pods Airflow renders from it (tasks " in problem.message
    assert "runs as root: set runAsNonRoot: true" in problem.message


def test_worker_pods_holding_a_secret(repo: Path) -> None:
    edit(
        repo / "kube/base/pod-template.yaml",
        "            name: airflow-config\n",
        "            name: airflow-config\n        - secretRef:\n            name: airflow-metadata\n",
    )

    problem = one(
        problems(repo, "airflow"),
        "airflow",
        "kube/base/pod-template.yaml",
        "Pod/airflow-worker",
        "spec.containers[base].envFrom",
    )
    assert "gets Secret airflow-metadata: worker pods must hold no database URL" in problem.message


def test_worker_pods_without_the_airflow_config(repo: Path) -> None:
    edit(
        repo / "kube/base/pod-template.yaml",
        "        - configMapRef:\n            name: airflow-config\n",
        "        - configMapRef:\n            name: airflow-pod-template\n",
    )

    problem = one(
        problems(repo, "airflow"),
        "airflow",
        "kube/base/pod-template.yaml",
        "Pod/airflow-worker",
        "spec.containers[base].envFrom",
    )
    assert "gets no ConfigMap airflow-config, which the scheduler gets" in problem.message


def test_checkov_failure_without_a_skip(repo: Path) -> None:
    edit(
        repo / "kube/base/migrate.yaml",
        "    checkov.io/skip3: CKV_K8S_35=Airflow reads its settings from AIRFLOW__* environment variables\n",
        "",
    )

    problem = one(
        problems(repo, "checkov"),
        "checkov",
        "kube/base/migrate.yaml",
        "Job/airflow-migrate",
        "spec.template.spec.containers[migrate]",
    )
    assert problem.message.startswith("CKV_K8S_35 ")


def test_checkov_skip_needs_a_comment_beside_it(repo: Path) -> None:
    path = repo / "kube/base/dag-processor.yaml"
    lines = path.read_text().splitlines(keepends=True)
    skip = next(i for i, line in enumerate(lines) if "checkov.io/skip2:" in line)
    assert lines[skip - 1].strip().startswith("#")
    del lines[skip - 2 : skip]  # the two comment lines before the annotation
    path.write_text("".join(lines))

    problem = one(
        problems(repo, "checkov"),
        "checkov",
        "kube/base/dag-processor.yaml",
        "",
        "metadata.annotations.checkov.io/skip2",
    )
    assert "needs a YAML comment beside it" in problem.message


def test_checkov_missing_from_path(
    repo: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path_factory.mktemp("bin")
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl renders the overlays"
    (tools / "kubectl").symlink_to(kubectl)
    monkeypatch.setenv("PATH", str(tools))

    problem = one(problems(repo, "checkov"), "checkov", "")
    assert "uv tool install checkov" in problem.message


def test_executor_rules_match_the_provider_code() -> None:
    """EXECUTOR_RULES lists exactly the pod calls the installed KubernetesExecutor makes."""
    provider = metadata.distribution("apache-airflow-providers-cncf-kubernetes")
    executors = Path(str(provider.locate_file(PROVIDER_EXECUTORS)))
    source = "\n".join(path.read_text() for path in executors.glob("kubernetes_executor*.py"))
    assert source, f"no executor code in {executors}"
    verbs = {"create": "create", "delete": "delete", "read": "get", "list": "list", "patch": "patch"}
    used: dict[str, set[str]] = {}
    for action, resource in re.findall(r"\.(\w+?)_namespaced_(\w+)\(", source):
        name = "pods/log" if resource == "pod_log" else f"{resource}s"
        used.setdefault(name, set()).add(verbs[action])
    if re.search(r"watcher\.stream\(kube_client\.list_namespaced_pod", source):
        used["pods"].add("watch")

    assert used == {resource: set(verbs) for resource, verbs in rbac.EXECUTOR_RULES.items()}
