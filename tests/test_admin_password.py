"""`invoke admin-password` against the REAL Kubernetes API server (tests/controlplane).

The okteto overlay is deployed with --no-wait; no node runs pods here, so the rotation Job
never completes. What this proves: the password is never printed, --rotate writes a new one
to the Secret and creates the migration Job's sync-admin container as a Job of its own
(which the Job controller and admission accept), a rotation that Airflow has not taken says
so, and a second --rotate replaces the Job the first left. That sync-admin then sets the new
password in Airflow is proven in the image session (tests/image/test_auth.py).
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from controlplane.cli import Run, invoke
from controlplane.cli import deploy_args as deploy_args_of
from controlplane.plane import ControlPlane

from airflow_ha import admin_password, manifests
from airflow_ha import generated_secrets as generated

NAMESPACE = "team-admin"
TAG = "3.3.2-admin-password"
ADMIN = "airflow-ha-test-admin"  # the admin kubeconfig's user
TIMEOUT = "6"  # seconds to wait for a rotation Job that no node will ever run


def admin_password_args(*extra: str) -> tuple[str, ...]:
    return ("admin-password", "--context", "admin", "--namespace", NAMESPACE, *extra)


def secret_data(plane: ControlPlane) -> dict[str, str]:
    got = plane.kubectl("get", "secret", generated.ADMIN_SECRET, "-n", NAMESPACE, "-o", "json")
    return {key: base64.b64decode(value).decode() for key, value in json.loads(got.stdout)["data"].items()}


def rotation_job(plane: ControlPlane) -> dict:
    got = plane.kubectl("get", "job", admin_password.ROTATE_JOB, "-n", NAMESPACE, "-o", "json")
    return json.loads(got.stdout)


@pytest.fixture(scope="module")
def deployed(control_plane: ControlPlane) -> dict[str, str]:
    """The admin Secret as the first deploy generated it."""
    control_plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    deployed = invoke(
        control_plane,
        control_plane.admin_kubeconfig,
        *deploy_args_of("okteto", NAMESPACE, "admin", TAG),
    )
    assert deployed.returncode == 0, deployed.output
    return secret_data(control_plane)


def finish_migration(plane: ControlPlane) -> None:
    """Mark the migration Job complete, as its controller would once a node had run its pod."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = [
        {"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
        for kind in ("SuccessCriteriaMet", "Complete")
    ]
    status = {"completionTime": now, "succeeded": 1, "active": 0, "ready": 0,
              "conditions": conditions}  # fmt: skip
    plane.kubectl(
        "patch", "job", admin_password.MIGRATE_JOB, "-n", NAMESPACE, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


@pytest.fixture(scope="module")
def before_migration(control_plane: ControlPlane, deployed: dict[str, str]) -> tuple[Run, dict[str, str]]:
    """--rotate while the migration Job has not completed: no node runs its pod here."""
    run = invoke(control_plane, control_plane.admin_kubeconfig, *admin_password_args("--rotate"))
    return run, secret_data(control_plane)


@pytest.fixture(scope="module")
def rotations(
    control_plane: ControlPlane, before_migration: tuple[Run, dict[str, str]]
) -> list[tuple[Run, dict[str, str]]]:
    """Two --rotate runs once the migration Job is complete, each with the Secret as it left it."""
    finish_migration(control_plane)
    done = []
    for _ in range(2):
        run = invoke(
            control_plane,
            control_plane.admin_kubeconfig,
            *admin_password_args("--rotate", "--timeout", TIMEOUT),
        )
        done.append((run, secret_data(control_plane)))
    return done


def test_it_shows_how_to_read_the_password_and_never_prints_it(
    control_plane: ControlPlane, deployed: dict[str, str]
) -> None:
    shown = invoke(control_plane, control_plane.admin_kubeconfig, *admin_password_args())

    assert shown.returncode == 0, shown.output
    assert "admin user: admin" in shown.stdout
    assert f"-n {NAMESPACE} get secret {generated.ADMIN_SECRET} -o jsonpath='{{.data.password}}'" in (
        shown.stdout
    ), shown.output
    assert deployed["password"] not in shown.output
    assert shown.stored_by(ADMIN) == []  # it only reads


def test_rotate_waits_for_the_migration_job_and_changes_nothing_before(
    deployed: dict[str, str], before_migration: tuple[Run, dict[str, str]]
) -> None:
    run, after = before_migration

    assert run.returncode != 0, run.output
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: Job/{admin_password.MIGRATE_JOB} in namespace {NAMESPACE!r} has not completed: let "
        "`invoke deploy` finish (or fix what stops it), then rotate"
    ), run.output
    assert after == deployed
    assert run.stored_by(ADMIN) == []


def test_rotate_writes_a_new_password_and_says_airflow_has_not_taken_it(
    deployed: dict[str, str], rotations: list[tuple[Run, dict[str, str]]]
) -> None:
    (first, after_first), _ = rotations

    assert first.returncode != 0, first.output
    assert "Traceback" not in first.stderr, first.stderr
    assert f"Job/{admin_password.ROTATE_JOB} in namespace {NAMESPACE!r} was not ready after {TIMEOUT} s" in (
        first.stderr
    ), first.output
    assert f"Secret/{generated.ADMIN_SECRET} holds a new password that Airflow does not know yet" in (
        first.stderr
    ), first.output
    assert after_first["username"] == deployed["username"]
    assert after_first["password"] != deployed["password"]
    assert len(after_first["password"]) >= 20
    for password in (deployed["password"], after_first["password"]):
        assert password not in first.output


def test_the_rotation_job_is_the_migration_jobs_sync_admin_alone(
    control_plane: ControlPlane, rotations: list[tuple[Run, dict[str, str]]]
) -> None:
    job = rotation_job(control_plane)
    migrate = next(
        m
        for m in manifests.render("okteto", namespace=NAMESPACE, image=f"airflow-ha:{TAG}")
        if m.kind == "Job"
    )
    sync = next(
        c
        for c in migrate.obj["spec"]["template"]["spec"]["containers"]
        if c["name"] == admin_password.SYNC_CONTAINER
    )

    spec = job["spec"]["template"]["spec"]
    assert "initContainers" not in spec  # not `airflow db migrate` again
    assert [c["name"] for c in spec["containers"]] == [admin_password.SYNC_CONTAINER]
    assert spec["containers"][0]["args"] == sync["args"]
    assert spec["containers"][0]["image"] == f"airflow-ha:{TAG}"
    # The Job controller gave it a selector of its own, not the migration Job's.
    migrate_uid = json.loads(
        control_plane.kubectl("get", "job", "airflow-migrate", "-n", NAMESPACE, "-o", "json").stdout
    )["metadata"]["uid"]
    assert (
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"] == job["metadata"]["uid"]
    )
    assert job["metadata"]["uid"] != migrate_uid


def test_a_second_rotate_replaces_the_job_the_first_left(
    rotations: list[tuple[Run, dict[str, str]]],
) -> None:
    (_, after_first), (second, after_second) = rotations

    assert second.returncode != 0, second.output
    assert "holds a new password that Airflow does not know yet" in second.stderr, second.output
    assert after_second["password"] != after_first["password"]
    deleted = [r for r in second.audit if r.user == ADMIN and r.verb == "delete" and r.resource == "jobs"]
    created = [
        r
        for r in second.audit
        if r.user == ADMIN and r.verb == "create" and r.resource == "jobs" and not r.dry_run
    ]
    assert deleted and created, second.audit
    assert deleted[0].code == 200 and created[0].code == 201


def test_rotate_without_a_deployment_says_deploy_first(control_plane: ControlPlane) -> None:
    control_plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-empty"}})

    refused = invoke(
        control_plane,
        control_plane.admin_kubeconfig,
        "admin-password", "--context", "admin", "--namespace", "team-empty", "--rotate",
    )  # fmt: skip

    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: Secret/{generated.ADMIN_SECRET} with username and password not found in namespace "
        "'team-empty': run `invoke deploy` first"
    ), refused.output
