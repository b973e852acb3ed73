"""The admin's generated password: how to read it, and its rotation.

The airflow-admin Secret is the source of truth; the migration Job's sync-admin container
makes the FAB admin user match it. Rotation writes a new password to the Secret, then runs
that container once more as a Job of its own, so Airflow takes the new password before
this returns. No password is ever printed, or passed on a command line.
"""

from __future__ import annotations

import base64
import copy
import secrets as token
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import cluster, kubeapi, rollout
from . import generated_secrets as generated
from .console import Failure, console, progress
from .kubeapi import Kube, api_message, condition
from .manifests import Manifest

MIGRATE_JOB = "airflow-migrate"
ROTATE_JOB = "airflow-admin-rotate"
SYNC_CONTAINER = "sync-admin"
FIELD_MANAGER = "airflow-ha-admin-password"
# Labels the Job controller sets on its pods; a new Job must not inherit another's.
JOB_CONTROLLER_LABELS = (
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
)


def read_command(context: str, namespace: str) -> str:
    return (
        f"kubectl {cluster.kubectl_flags(context)} -n {namespace} get secret {generated.ADMIN_SECRET} "
        "-o jsonpath='{.data.password}' | base64 -d"
    )


def show(*, context: str | None, kind_cluster: str, namespace: str, rotate: bool, timeout: int) -> None:
    target = cluster.check_context(context, kind_cluster)
    kube = kubeapi.kube_clients(target)
    username = admin_username(kube, namespace)
    if rotate:
        rotate_password(kube, namespace, username, timeout)
    console.print(f"admin user: {username}; its password (never printed here):", soft_wrap=True)
    console.print(f"  {read_command(target, namespace)}", soft_wrap=True)


def admin_username(kube: Kube, namespace: str) -> str:
    secret = kubeapi.read(kube, secret_ref(namespace))
    data = (secret or {}).get("data") or {}
    if "username" not in data or "password" not in data:
        raise Failure(
            f"Secret/{generated.ADMIN_SECRET} with username and password not found in namespace "
            f"{namespace!r}: run `invoke deploy` first"
        )
    return base64.b64decode(data["username"]).decode()


def rotate_password(kube: Kube, namespace: str, username: str, timeout: int) -> None:
    """A new password in the Secret, then in Airflow through a one-off sync-admin Job.

    Only once the migration Job is complete: a migration that is still running would run its
    own sync-admin with whichever password its volume held, and could undo the rotation.
    """
    migrate = kubeapi.read(kube, job_ref(namespace, MIGRATE_JOB))
    if migrate is None:
        raise Failure(f"Job/{MIGRATE_JOB} not found in namespace {namespace!r}: run `invoke deploy` first")
    if not condition(migrate, "Complete") or (migrate.get("status") or {}).get("active"):
        raise Failure(
            f"Job/{MIGRATE_JOB} in namespace {namespace!r} has not completed: let `invoke deploy` finish "
            "(or fix what stops it), then rotate"
        )
    job = rotation_job(migrate)
    kubeapi.require_rights(
        kube,
        [
            ("patch", "v1", "Secret", namespace, generated.ADMIN_SECRET),
            ("create", "batch/v1", "Job", namespace, ROTATE_JOB),
            ("get", "batch/v1", "Job", namespace, ROTATE_JOB),
            ("delete", "batch/v1", "Job", namespace, ROTATE_JOB),
            ("list", "v1", "Pod", namespace, ""),
        ],
    )
    with progress(f"rotating the password of {username!r}") as status:
        kubeapi.delete(kube, job)  # a Job left by a rotation that was interrupted
        rollout.wait_gone(kube, job, timeout)
        # Admission (a quota, a policy) refuses the Job now, before the Secret changes, or not at all.
        create(kube, job, dry_run=True)
        password = generated.admin_secret(token.token_urlsafe(16))["password"]
        secret = {**secret_ref(namespace), "data": {"password": base64.b64encode(password.encode()).decode()}}
        kubeapi.server_side_apply(kube, secret, FIELD_MANAGER)
        try:
            create(kube, job)
            rollout.wait_ready(kube, Manifest("admin-password --rotate", job), namespace, timeout, status)
        except Failure as failure:
            raise Failure(
                f"{failure}\nSecret/{generated.ADMIN_SECRET} holds a new password that Airflow does not know "
                "yet; fix the cause and run `invoke admin-password --rotate` again"
            ) from None
        kubeapi.delete(kube, job)
    console.print(
        f"[green]✓[/] rotated the password of {username!r}, in Secret/{generated.ADMIN_SECRET} and in Airflow"
    )


def create(kube: Kube, job: dict[str, Any], *, dry_run: bool = False) -> None:
    try:
        kubeapi.create(kube, job, dry_run=dry_run)
    except ApiException as error:
        namespace = job["metadata"]["namespace"]
        raise Failure(
            f"the API server refused Job/{ROTATE_JOB} in namespace {namespace!r}: {api_message(error)}"
        ) from None


def rotation_job(migrate: dict[str, Any]) -> dict[str, Any]:
    """The migration Job's sync-admin container alone, as a Job of its own."""
    template = copy.deepcopy(migrate["spec"]["template"])
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    for label in JOB_CONTROLLER_LABELS:
        labels.pop(label, None)
    spec = template["spec"]
    spec.pop("initContainers", None)
    spec["containers"] = [c for c in spec["containers"] if c["name"] == SYNC_CONTAINER]
    if not spec["containers"]:
        raise Failure(
            f"Job/{MIGRATE_JOB} has no {SYNC_CONTAINER} container: it was deployed by an older version; "
            "run `invoke deploy` first"
        )
    metadata = migrate["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": ROTATE_JOB,
            "namespace": metadata["namespace"],
            "labels": dict(metadata.get("labels") or {}),
        },
        "spec": {"backoffLimit": 1, "ttlSecondsAfterFinished": 600, "template": template},
    }


def secret_ref(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": generated.ADMIN_SECRET, "namespace": namespace},
    }


def job_ref(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": namespace}}
