"""Build, check, deploy and smoke-test highly available Airflow 3 on Kubernetes.

`invoke --list` shows the tasks; `invoke --help TASK` shows a task's flags.
Defaults live in invoke.yaml; override them with flags or INVOKE_* variables.
This file only parses arguments: the work is done in the airflow_ha package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from invoke import Collection, Context, Exit, task

from airflow_ha import admin_password as admin
from airflow_ha import deploy as deploying
from airflow_ha import drill as drilling
from airflow_ha import image, preflight, tools
from airflow_ha import smoke as smoking
from airflow_ha.console import Failure
from airflow_ha.lint import gate

CONTEXT_HELP = (
    "Kube context to use. Default: the project's kind cluster; any other context must be named here."
)


@contextmanager
def exit_on_failure() -> Iterator[None]:
    try:
        yield
    except Failure as failure:
        raise Exit(f"error: {failure}", code=1) from None


def image_reference(c: Context, tag: str) -> str:
    return f"{c.config.image.repository}:{tag or image.image_tag(c.config.image.airflow_version)}"


@task(
    help={
        "overlay": "Check only this overlay (kind or okteto). Default: every overlay.",
        "list_rules": "List every rule ID with what it catches, and check nothing.",
        "flows": "Print the network flows the deployment needs (and those it must not allow) with the "
        "NetworkPolicies' verdict on each, and check nothing else; fails if one is wrong.",
    }
)
def lint(c: Context, overlay: str = "", list_rules: bool = False, flows: bool = False) -> None:
    """Check the manifests before anything touches a cluster: exits non-zero on any problem."""
    if list_rules:
        gate.list_rules()
        return
    if flows:
        with exit_on_failure():
            tools.put_on_path(tools.kubectl())  # kustomize renders
            gate.show_flows([overlay] if overlay else None)
        return
    with exit_on_failure():
        tools.put_on_path(tools.kubectl(), tools.checkov())  # kustomize renders, checkov scans
        gate.lint(
            overlays=[overlay] if overlay else None,
            kubernetes_versions=(c.config.lint.kubernetes_oldest, c.config.lint.kubernetes_newest),
        )


@task(
    name="base-image",
    help={
        "name": "Name:tag of the image to create. Default: airflow-ha-base:<suite>.",
        "suite": "Debian suite to bootstrap. Default: bookworm (Python 3.11).",
        "mirror": "Debian mirror URL. Default: the first mirror in this machine's apt sources.",
    },
)
def base_image(c: Context, name: str = "", suite: str = "bookworm", mirror: str = "") -> None:
    """Build a Python base image with no registry: debootstrap from a Debian mirror, then docker import."""
    with exit_on_failure():
        image.build_base_image(name=name or f"airflow-ha-base:{suite}", suite=suite, mirror=mirror or None)


@task(
    help={
        "tag": "Image tag. Default: <airflow version>-<git revision>, with -dirty for a dirty tree.",
        "base_image": "Python base image to build on. Default: image.base in invoke.yaml.",
        "no_cache": "Build every layer again.",
        "ca_bundle": "CA bundle for a TLS-intercepting proxy, used by the install steps only. "
        "Default: $PIP_CERT, $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE when set.",
    }
)
def build(
    c: Context, tag: str = "", base_image: str = "", no_cache: bool = False, ca_bundle: str = ""
) -> None:
    """Build the Airflow image with the Docker SDK, streaming progress."""
    with exit_on_failure():
        image.build_image(
            reference=image_reference(c, tag),
            base_image=base_image or c.config.image.base,
            no_cache=no_cache,
            ca_bundle=ca_bundle or None,
        )


@task(
    help={
        "registry": "Registry to push to, as HOST:PORT (required).",
        "tag": "Tag to push. Default: the tag `invoke build` gives this revision.",
    }
)
def push(c: Context, registry: str = "", tag: str = "") -> None:
    """Push the image to a registry and verify the pushed manifest through the registry's API."""
    with exit_on_failure():
        if not registry:
            raise Failure("--registry HOST:PORT is required, for example --registry 127.0.0.1:5000")
        image.push_image(reference=image_reference(c, tag), registry=registry)


@task(
    help={
        "context": CONTEXT_HELP,
        "build_kind": "Build the pinned kind from its Go module into .cache/bin instead of downloading it "
        "(needs Go; about a minute). A pinned kind already there is kept.",
    }
)
def doctor(c: Context, context: str = "", build_kind: bool = False) -> None:
    """Check Docker and Python packages; provision kind, kubectl and checkov; show each version and source."""
    with exit_on_failure():
        if build_kind:
            tools.build_kind()
        preflight.run(context=context or c.config.context or None, kind_cluster=c.config.kind.cluster)


@task(
    help={
        "context": CONTEXT_HELP,
        "overlay": "Overlay under kube/overlays. Default: overlay in invoke.yaml (kind).",
        "namespace": "Namespace to deploy to. Default: namespace in invoke.yaml.",
        "tag": "Image tag to deploy. Default: this revision's tag.",
        "registry": "Push the image to this registry (HOST:PORT) instead of loading it into kind.",
        "node_image": "kind node image for every node of a new cluster, instead of those "
        "kube/kind-cluster.yaml pins (for a site that cannot pull them). "
        "Default: kind.node_image in invoke.yaml.",
        "skip_build": "Deploy an image that is already built.",
        "timeout": "Seconds to wait for each phase before failing. Default: deploy.timeout in invoke.yaml.",
        "adopt": "Take over objects of the same names that exist without the project label; "
        "teardown then deletes them. Without it, deploy refuses them before writing anything.",
        "wait": "Wait for each phase to be ready before the next (the default). --no-wait applies "
        "everything and returns; the components wait for the migration themselves, and every "
        "Deployment rolls at once, so the cluster needs room for all their surge pods together.",
    }
)
def deploy(
    c: Context,
    context: str = "",
    overlay: str = "",
    namespace: str = "",
    tag: str = "",
    registry: str = "",
    skip_build: bool = False,
    timeout: int = 0,
    adopt: bool = False,
    wait: bool = True,
    node_image: str = "",
) -> None:
    """Deploy HA Airflow: preflight, lint gate, image, kind cluster, secrets, apply, rollout, summary."""
    with exit_on_failure():
        deploying.deploy(
            context=context or c.config.context or None,
            kind_cluster=c.config.kind.cluster,
            kind_config=c.config.kind.config,
            overlay=overlay or c.config.overlay,
            namespace=namespace or c.config.namespace,
            reference=image_reference(c, tag),
            base_image=c.config.image.base,
            registry=registry or None,
            build=not skip_build,
            kubernetes_versions=(c.config.lint.kubernetes_oldest, c.config.lint.kubernetes_newest),
            timeout=timeout or c.config.deploy.timeout,
            adopt=adopt,
            wait=wait,
            node_image=node_image or c.config.kind.node_image or None,
        )


@task(
    help={
        "context": CONTEXT_HELP,
        "namespace": "Namespace Airflow runs in. Default: namespace in invoke.yaml.",
        "api_url": "Reach the Airflow API here. Alone: REST checks only, no cluster assertions; "
        "with --context: the cluster's worker-pod assertions too.",
        "username": "Username for --api-url. Default: the generated admin.",
        "password": "Password for --api-url. Default: the generated admin password.",
        "timeout": "Seconds to wait for the DAG run. Default: smoke.timeout in invoke.yaml.",
        "dag_id": "Run this DAG from dags/ instead, with the same per-task worker-pod assertions. "
        "Default: smoke.dag_id in invoke.yaml.",
        "conf": "Run conf as a JSON object, merged over the smoke defaults, e.g. '{\"seconds\": 5}'.",
    }
)
def smoke(
    c: Context,
    context: str = "",
    namespace: str = "",
    api_url: str = "",
    username: str = "",
    password: str = "",
    timeout: int = 0,
    dag_id: str = "",
    conf: str = "",
) -> None:
    """Run the smoke DAG (or --dag-id) and prove each task ran in its own KubernetesExecutor worker pod."""
    with exit_on_failure():
        smoking.smoke(
            context=context or c.config.context or None,
            kind_cluster=c.config.kind.cluster,
            namespace=namespace or c.config.namespace,
            api_url=api_url or None,
            username=username or None,
            password=password or None,
            dag_id=dag_id or c.config.smoke.dag_id,
            timeout=timeout or c.config.smoke.timeout,
            conf=conf,
        )


@task(
    help={
        "context": CONTEXT_HELP,
        "namespace": "Namespace Airflow runs in. Default: namespace in invoke.yaml.",
        "step": "Run only this step (scheduler, api-server or drain); repeat the flag for more. "
        "Default: all three, in that order.",
        "dag_id": "The DAG the api-server and drain steps run. Default: smoke.dag_id in invoke.yaml.",
        "long_task_seconds": "Seconds the scheduler step's long task runs: long enough for the other "
        "scheduler to adopt its pod. Default: 120.",
        "timeout": "Seconds to wait for each run and each recovery. Default: smoke.timeout in invoke.yaml.",
    },
    iterable=["step"],
)
def drill(
    c: Context,
    context: str = "",
    namespace: str = "",
    step: list[str] | None = None,
    dag_id: str = "",
    long_task_seconds: int = 120,
    timeout: int = 0,
) -> None:
    """Break the deployment while tasks run (kill a scheduler, delete an api-server, drain a node); each step
    prints what it did, how long recovery took, PASS or FAIL."""
    with exit_on_failure():
        drilling.drill(
            context=context or c.config.context or None,
            kind_cluster=c.config.kind.cluster,
            namespace=namespace or c.config.namespace,
            dag_id=dag_id or c.config.smoke.dag_id,
            timeout=timeout or c.config.smoke.timeout,
            long_task_seconds=long_task_seconds,
            steps=step or list(drilling.STEPS),
        )


@task(
    help={
        "context": CONTEXT_HELP,
        "overlay": "Overlay that was deployed: only the cluster-scoped kinds it renders are touched. "
        "Default: overlay in invoke.yaml.",
        "namespace": "Namespace to clear. Default: namespace in invoke.yaml.",
        "purge": "Also delete the database and logs volumes and the generated secrets; "
        "with --cluster, the host's logs folder too.",
        "cluster": "Also delete the kind cluster.",
        "node_image": "With --purge --cluster: the image whose container empties the logs folder "
        "(it holds files of uid 50000). Default: kind.node_image in invoke.yaml, else the config's.",
        "timeout": "Seconds to wait for objects to go. Default: deploy.timeout in invoke.yaml.",
    }
)
def teardown(
    c: Context,
    context: str = "",
    overlay: str = "",
    namespace: str = "",
    purge: bool = False,
    cluster: bool = False,
    timeout: int = 0,
    node_image: str = "",
) -> None:
    """Remove what deploy created, keeping data unless --purge; verify nothing labelled is left."""
    with exit_on_failure():
        deploying.teardown(
            context=context or c.config.context or None,
            kind_cluster=c.config.kind.cluster,
            overlay=overlay or c.config.overlay,
            namespace=namespace or c.config.namespace,
            purge=purge,
            delete_cluster=cluster,
            timeout=timeout or c.config.deploy.timeout,
            kind_config=c.config.kind.config,
            node_image=node_image or c.config.kind.node_image or None,
        )


@task(
    help={
        "context": CONTEXT_HELP,
        "namespace": "Namespace Airflow runs in. Default: namespace in invoke.yaml.",
        "rotate": "Generate a new password and set it in the airflow-admin Secret and in Airflow.",
        "timeout": "Seconds to wait for Airflow to take a rotated password. "
        "Default: deploy.timeout in invoke.yaml.",
    }
)
def admin_password(
    c: Context, context: str = "", namespace: str = "", rotate: bool = False, timeout: int = 0
) -> None:
    """Show how to read the generated admin password (never printed); --rotate replaces it."""
    with exit_on_failure():
        admin.show(
            context=context or c.config.context or None,
            kind_cluster=c.config.kind.cluster,
            namespace=namespace or c.config.namespace,
            rotate=rotate,
            timeout=timeout or c.config.deploy.timeout,
        )


ns = Collection(lint, base_image, build, push, doctor, deploy, smoke, drill, admin_password, teardown)
