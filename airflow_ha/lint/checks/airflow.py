"""The installed Airflow's own view: it loads the manifests' config (unknown, removed or deprecated
options fail) and its auth manager (importable; SimpleAuthManager only in an overlay named for
development), and renders the worker pods of the smoke DAG from the pod template with
`airflow kubernetes generate-dag-yaml`. Each pod it renders must be valid, run the project image
as non-root, see the DAGs and keep its logs on shared storage.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from ... import generated_secrets as generated
from ... import manifests
from ...console import Failure
from ...manifests import Manifest
from .. import cache
from ..environment import DATABASE_URL_KEY, airflow_env, database_cache, tail
from ..fields import field_path, get, pod, pods
from ..problems import Problem, at
from ..render import Rendered, Target
from .kubernetes_validate import api_errors
from .wiring import config_file

NAME = "airflow"
RULES = {
    "airflow/no-pod-template": "no worker pod template in the airflow-pod-template ConfigMap",
    "airflow/template-name": "a pod template without a name, which Airflow refuses",
    "airflow/base-container": "a pod template whose first container is not named 'base'",
    "airflow/did-not-run": "Airflow cannot start or render the worker pods of the smoke DAG",
    "airflow/unknown-option": "an AIRFLOW__ setting that is no option of Airflow or its providers",
    "airflow/removed-option": "an AIRFLOW__ setting that Airflow 3 removed or changed",
    "airflow/renamed-option": "an AIRFLOW__ setting under a deprecated name (inversed_deprecated_options)",
    "airflow/deprecated-option": "an AIRFLOW__ setting deprecated in this Airflow version",
    "airflow/auth-manager": "an auth manager that the installed Airflow and providers cannot import",
    "airflow/dev-auth-manager": "SimpleAuthManager, for development only, outside an overlay named for it",
    "airflow/folder-unset": "no DAGS_FOLDER or BASE_LOG_FOLDER in the Airflow config",
    "airflow/dags-folder": "a DAGS_FOLDER that is not where docker/Dockerfile puts dags/",
    "airflow/logs-claim-access": "a logs claim without ReadWriteMany, its pods not all pinned to one node",
    "airflow/api-server-logs": "an api-server that does not mount the logs claim at the logs folder",
    "airflow/worker-pod-invalid": "a worker pod Airflow renders that the Kubernetes API rejects",
    "airflow/worker-image": "worker pods that do not run the scheduler's image",
    "airflow/worker-config": "worker pods without a ConfigMap the scheduler gets",
    "airflow/worker-secret": "worker pods that hold a Secret (database URL, fernet key, JWT/API secret)",
    "airflow/worker-hides-dags": "a volume mounted over the DAGs folder of worker pods",
    "airflow/worker-logs-mount": "worker pods with no volume at the logs folder",
    "airflow/worker-logs-not-claim": "worker pods whose logs volume is not a claim, so logs die with the pod",
    "airflow/worker-root": "worker pods that run as root",
}

AIRFLOW_ENV_PREFIX = "AIRFLOW__"
DAGS_FOLDER_KEY = "AIRFLOW__CORE__DAGS_FOLDER"
LOG_FOLDER_KEY = "AIRFLOW__LOGGING__BASE_LOG_FOLDER"
AUTH_MANAGER_KEY = "AIRFLOW__CORE__AUTH_MANAGER"
# An overlay named like this may run SimpleAuthManager: dev, dev-laptop, kind-dev, local_development.
DEVELOPMENT_OVERLAY = re.compile(r"(^|[-_])dev(elopment)?($|[-_])")
LOGICAL_DATE = "2026-01-01T00:00:00+00:00"


def run(target: Target) -> Iterator[Problem]:
    key = cache_key(target)
    return iter(cache.cached(NAME, key, lambda: _run(target), transient={"airflow/did-not-run"}))


def cache_key(target: Target) -> str:
    """Everything the check reads: the rendered overlays, the DAGs, the Dockerfile, invoke.yaml,
    the config files under kube/ (to name them), the installed Airflow and the gate's code."""
    return cache.digest(
        str(target.root),
        cache.rendered(target),
        cache.files(target.root, ["dags", "docker/Dockerfile", "invoke.yaml", "kube"]),
        cache.package_versions(
            "apache-airflow",
            "apache-airflow-providers-cncf-kubernetes",
            "apache-airflow-providers-fab",
            "kubernetes",
            "kubernetes-validate",
        ),
        sys.executable,
        cache.gate_code(),
    )


def _run(target: Target) -> Iterator[Problem]:
    # Overlays that give Airflow the same config and pod template need one Airflow run.
    groups: dict[str, list[Rendered]] = {}
    for rendered in target.rendered:
        template = rendered.template.obj if rendered.template else None
        key = json.dumps([manifests.airflow_config(rendered.objects), template], sort_keys=True)
        groups.setdefault(key, []).append(rendered)
    for group in groups.values():
        found = list(_airflow_view(target, group[0]))
        for rendered in group:
            development = DEVELOPMENT_OVERLAY.search(rendered.overlay) is not None
            for problem in found:
                if not (development and problem.rule == "airflow/dev-auth-manager"):
                    yield replace(problem, overlay=rendered.overlay)


def _airflow_view(target: Target, rendered: Rendered) -> Iterator[Problem]:
    template = rendered.template
    if template is None:
        if rendered.template_error:
            return  # the kustomize check reports it
        message = (
            f"no worker pod template: the ConfigMap {manifests.POD_TEMPLATE_CONFIG_MAP} must hold "
            f"{manifests.POD_TEMPLATE_KEY} (kube/base/pod-template.yaml)"
        )
        yield Problem("airflow/no-pod-template", "kube/base/kustomization.yaml", message)
        return
    yield from _template_contract(template)
    config = manifests.airflow_config(rendered.objects)
    settings = _airflow_settings(target.root, rendered)
    try:
        dag_id = _dag_id(target.root)
    except Failure as failure:
        yield Problem("airflow/did-not-run", "invoke.yaml", str(failure))
        return
    with tempfile.TemporaryDirectory(prefix="airflow-ha-lint-") as tmp:
        home = Path(tmp)
        request: dict[str, Any] = {"database": str(home / "airflow.db")}
        try:
            shutil.copy(database_cache(), home / "airflow.db")
        except FileNotFoundError:  # the first run: the subprocess migrates it, and keeps a copy
            request["migrate_and_keep"] = str(database_cache())
        (home / "pod-template.yaml").write_text(yaml.safe_dump(template.obj))
        cli = ["kubernetes", "generate-dag-yaml", dag_id, "--logical-date", LOGICAL_DATE]
        cli += ["--output-path", str(home / "pods")]
        request |= {"keys": sorted(settings), "report": str(home / "report.json"), "cli": cli}
        (home / "request.json").write_text(json.dumps(request))
        env = airflow_env(home) | config | _dummy_secrets() | _local_paths(home, target.root)
        result = subprocess.run(
            [sys.executable, "-m", "airflow_ha.lint.airflow_process", str(home / "request.json")],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            check=False,
        )
        if not (home / "report.json").is_file():
            yield Problem("airflow/did-not-run", "", f"Airflow did not start: {tail(result.stderr)}")
            return
        for key, (rule, message) in sorted(json.loads((home / "report.json").read_text()).items()):
            file, resource, field = settings[key]
            yield Problem(rule, file, message, resource, field)
        if result.returncode != 0:
            message = f"`airflow {' '.join(cli[:3])}` failed: {tail(result.stderr)}"
            yield Problem("airflow/did-not-run", "dags", message, template.ref)
            return
        rendered_pods = [
            yaml.safe_load(path.read_text()) for path in sorted(home.glob("pods/airflow_yaml_output/*.yml"))
        ]
    yield from _worker_pod_problems(target, rendered, config, rendered_pods)


def _dag_id(root: Path) -> str:
    """The smoke DAG, as invoke.yaml names it for `invoke smoke`."""
    try:
        return str(yaml.safe_load((root / "invoke.yaml").read_text())["smoke"]["dag_id"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise Failure(
            f"invoke.yaml: no smoke.dag_id ({error!r}), the DAG whose worker pods to render"
        ) from None


def _template_contract(template: Manifest) -> Iterator[Problem]:
    """What Airflow requires of the pod template itself, which the pods it renders no longer show."""
    if not (template.obj.get("metadata") or {}).get("name"):
        message = "Airflow needs a pod template with a non-empty name"
        yield at("airflow/template-name", template, "metadata.name", message)
    first = ((template.obj.get("spec") or {}).get("containers") or [{}])[0]
    if first.get("name") != "base":
        message = (
            f"the first container is named {first.get('name')!r}: name it 'base'; KubernetesExecutor merges "
            "its own container into the first one, and reads the state and the log of 'base'"
        )
        field = field_path(template.obj, ["spec", "containers", 0, "name"])
        yield at("airflow/base-container", template, field, message)


def _airflow_settings(root: Path, rendered: Rendered) -> dict[str, tuple[str, str, str]]:
    """Every AIRFLOW__SECTION__KEY the manifests set, and (file, object, field) of where."""
    settings: dict[str, tuple[str, str, str]] = {}
    config_map = manifests.find(rendered.objects, "ConfigMap", manifests.AIRFLOW_CONFIG_MAP)
    for key, value in manifests.airflow_config(rendered.objects).items():
        if config_map and key.startswith(AIRFLOW_ENV_PREFIX):
            settings[key] = (
                config_file(root, key, value, rendered.overlay) or config_map.source,
                config_map.ref,
                f"data.{key}",
            )
    # Judged even when unset, since Airflow's default is SimpleAuthManager.
    where = ("kube/base/airflow.env", f"ConfigMap/{manifests.AIRFLOW_CONFIG_MAP}", f"data.{AUTH_MANAGER_KEY}")
    settings.setdefault(AUTH_MANAGER_KEY, where)
    for name, keys in generated.GENERATED_SECRETS.items():
        for key in keys:
            if key.startswith(AIRFLOW_ENV_PREFIX):
                settings.setdefault(key, ("airflow_ha/generated_secrets.py", f"Secret/{name}", f"data.{key}"))
    for manifest in rendered.all:
        for pod_path, spec, _ in pods(manifest):
            for container_path, container in manifests.containers(spec):
                for variable in container.get("env") or []:
                    name = str(variable.get("name"))
                    if name.startswith(AIRFLOW_ENV_PREFIX):
                        settings.setdefault(
                            name, (manifest.source, manifest.ref, f"{pod_path}.{container_path}.env[{name}]")
                        )
    return settings


def _dummy_secrets() -> dict[str, str]:
    """Stand-ins for the Airflow settings of the generated Secrets: valid in form, secret to no one."""
    dummies = {key: "lint-only-not-a-secret" for keys in generated.GENERATED_SECRETS.values() for key in keys}
    dummies["AIRFLOW__CORE__FERNET_KEY"] = base64.urlsafe_b64encode(
        b"lint-only-not-a-secret".ljust(32)
    ).decode()
    return {key: value for key, value in dummies.items() if key.startswith(AIRFLOW_ENV_PREFIX)}


def _local_paths(home: Path, root: Path) -> dict[str, str]:
    """The settings that must point at this machine for Airflow to run here."""
    return {
        DATABASE_URL_KEY: f"sqlite:///{home / 'airflow.db'}",
        DAGS_FOLDER_KEY: str(root / "dags"),
        LOG_FOLDER_KEY: str(home / "logs"),
        "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(home / "pod-template.yaml"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


def _worker_pod_problems(
    target: Target, rendered: Rendered, config: dict[str, str], rendered_pods: list[dict[str, Any]]
) -> Iterator[Problem]:
    """The pods Airflow renders are valid, run the project image non-root, see the DAGs, keep their logs."""
    template = rendered.template
    assert template is not None
    file = config_file(target.root, DAGS_FOLDER_KEY) or "kube/base/airflow.env"
    config_map = f"ConfigMap/{manifests.AIRFLOW_CONFIG_MAP}"
    dags_folder, log_folder = config.get(DAGS_FOLDER_KEY), config.get(LOG_FOLDER_KEY)
    for key, value in ((DAGS_FOLDER_KEY, dags_folder), (LOG_FOLDER_KEY, log_folder)):
        if not value:
            message = f"{key} is not set: every component and every worker pod must agree on it"
            yield Problem("airflow/folder-unset", file, message, config_map, f"data.{key}")
    baked = _image_dags_folder(target.root)
    if dags_folder and baked != dags_folder:
        where = (
            f"the image has them in {baked}"
            if baked
            else "docker/Dockerfile does not COPY dags/ into the image"
        )
        message = f"worker pods look for DAGs in {dags_folder}, but {where}: make them the same"
        yield Problem("airflow/dags-folder", file, message, config_map, f"data.{DAGS_FOLDER_KEY}")
    if log_folder:
        yield from _logs_outlive_pods(rendered, log_folder)
    tasks: dict[tuple[str, str, str], list[str]] = {}
    for worker in rendered_pods:
        task = ((worker.get("metadata") or {}).get("annotations") or {}).get("task_id", "?")
        for found in _worker_pod_errors(target, rendered, worker, dags_folder, log_folder):
            tasks.setdefault(found, []).append(task)
    for (rule, field, message), names in tasks.items():
        message = f"the worker pods Airflow renders from it (tasks {', '.join(names)}): {message}"
        yield at(rule, template, field, message)


def _worker_pod_errors(
    target: Target,
    rendered: Rendered,
    worker: dict[str, Any],
    dags_folder: str | None,
    log_folder: str | None,
) -> Iterator[tuple[str, str, str]]:
    """(rule, field, message) of what is wrong with one worker pod that Airflow rendered."""
    for _, field, message in api_errors(worker, target.versions):
        yield "airflow/worker-pod-invalid", field, message
    spec = worker.get("spec") or {}
    # The template's first container is 'base' (checked above), and Airflow keeps it first.
    base = (spec.get("containers") or [{}])[0]
    scheduler = rendered.component("scheduler")
    component = (pod(scheduler).get("containers") or [{}])[0] if scheduler else {}
    if component.get("image") and base.get("image") != component["image"]:
        message = f"image {base.get('image')!r} is not the image of the scheduler, {component['image']!r}"
        yield "airflow/worker-image", "spec.containers[base].image", message
    lacking = {source for source in _env_sources(component) - _env_sources(base) if source[0] == "ConfigMap"}
    if lacking:
        names = ", ".join(f"{kind} {name}" for kind, name in sorted(lacking))
        message = f"gets no {names}, which the scheduler gets: workers need the same config"
        yield "airflow/worker-config", "spec.containers[base].envFrom", message
    # Airflow 3 isolates tasks: a worker reaches the Execution API with the per-task token
    # in its workload, so a database URL, fernet key or signing secret in it is only a leak.
    for field, secret in _secret_sources(spec):
        message = (
            f"gets Secret {secret}: worker pods must hold no database URL, fernet key or JWT/API "
            "secret, only what reaches the Execution API"
        )
        yield "airflow/worker-secret", field, message
    mounts = base.get("volumeMounts") or []
    for mount in mounts:
        path = str(mount.get("mountPath", "")).rstrip("/")
        if dags_folder and (dags_folder + "/").startswith(path + "/"):
            message = f"mounted at {path or '/'}, it hides the DAGs that the image has in {dags_folder}"
            yield (
                "airflow/worker-hides-dags",
                f"spec.containers[base].volumeMounts[{mount.get('name')}]",
                message,
            )
    logs = next((m for m in mounts if str(m.get("mountPath", "")).rstrip("/") == log_folder), None)
    volumes = {volume.get("name"): volume for volume in spec.get("volumes") or []}
    if log_folder and logs is None:
        message = f"mounts no volume at the logs folder {log_folder}"
        yield "airflow/worker-logs-mount", "spec.containers[base].volumeMounts", message
    elif logs and "persistentVolumeClaim" not in volumes.get(logs.get("name"), {}):
        message = "the logs volume is not a claim: task logs would go with the pod"
        yield "airflow/worker-logs-not-claim", f"spec.volumes[{logs.get('name')}]", message
    security = {**(spec.get("securityContext") or {}), **(base.get("securityContext") or {})}
    if security.get("runAsNonRoot") is not True or security.get("runAsUser") == 0:
        message = "runs as root: set runAsNonRoot: true and a runAsUser other than 0"
        yield "airflow/worker-root", "spec.containers[base].securityContext", message


def _env_sources(container: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (kind, str(source[field].get("name")))
        for source in container.get("envFrom") or []
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef"))
        if source.get(field)
    }


def _secret_sources(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, Secret name) of every Secret a pod's containers read, as env or as files."""
    for path, container in manifests.containers(spec):
        where = f"spec.{path}"
        for source in container.get("envFrom") or []:
            if source.get("secretRef"):
                yield f"{where}.envFrom", str(source["secretRef"].get("name"))
        for variable in container.get("env") or []:
            reference = (variable.get("valueFrom") or {}).get("secretKeyRef")
            if reference:
                yield f"{where}.env[{variable.get('name')}]", str(reference.get("name"))
    for volume in spec.get("volumes") or []:
        if volume.get("secret"):
            yield f"spec.volumes[{volume.get('name')}]", str(volume["secret"].get("secretName"))


def _image_dags_folder(root: Path) -> str | None:
    """Where docker/Dockerfile puts the repository's dags/."""
    dockerfile = root / "docker" / "Dockerfile"
    text = dockerfile.read_text() if dockerfile.is_file() else ""
    copied = re.search(r"^COPY\s+(?:--\S+\s+)*dags/?\s+(\S+)\s*$", text, re.M)
    return copied.group(1).rstrip("/") if copied else None


def _pinned_to_one_node(rendered: Rendered, claim: str) -> bool:
    """Every pod that mounts the claim requires, by its node, a pod that every one of them matches.

    A ReadWriteOnce volume attaches to one node; such pods all land on the node of the first.
    """
    mounting = [
        (spec, labels)
        for manifest in rendered.all
        for _, spec, labels in pods(manifest)
        if any(
            (v.get("persistentVolumeClaim") or {}).get("claimName") == claim
            for v in spec.get("volumes") or []
        )
    ]

    def pins(term: dict[str, Any]) -> bool:
        selector = term.get("labelSelector") or {}
        wanted = selector.get("matchLabels") or {}
        if (
            term.get("topologyKey") != "kubernetes.io/hostname"
            or selector.get("matchExpressions")
            or not wanted
        ):
            return False
        return all(all(labels.get(k) == v for k, v in wanted.items()) for _, labels in mounting)

    required = "affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    return bool(mounting) and all(any(map(pins, get(spec, required) or [])) for spec, _ in mounting)


def _logs_outlive_pods(rendered: Rendered, log_folder: str) -> Iterator[Problem]:
    """The workers' logs claim is shared storage, which the api-server reads at the same folder."""
    assert rendered.template is not None
    spec = rendered.template.obj.get("spec") or {}
    mounts = ((spec.get("containers") or [{}])[0]).get("volumeMounts") or []
    mount: dict[str, Any] = next(
        (m for m in mounts if str(m.get("mountPath", "")).rstrip("/") == log_folder), {}
    )
    volume: dict[str, Any] = next(
        (v for v in spec.get("volumes") or [] if v.get("name") == mount.get("name")), {}
    )
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    if claim is None:
        return  # reported on the rendered pods
    pvc = manifests.find(rendered.objects, "PersistentVolumeClaim", claim)
    shared = pvc is None or "ReadWriteMany" in ((pvc.obj.get("spec") or {}).get("accessModes") or [])
    if pvc is not None and not shared and not _pinned_to_one_node(rendered, claim):
        message = (
            "worker pods on any node and the api-server share this claim: it needs ReadWriteMany, or every "
            "pod that mounts it required onto one node by a pod affinity (see kube/overlays/okteto)"
        )
        yield at("airflow/logs-claim-access", pvc, "spec.accessModes", message)
    api_server = rendered.component("api-server")
    if api_server is None:
        return
    spec = pod(api_server)
    claims = {
        v.get("name"): (v.get("persistentVolumeClaim") or {}).get("claimName")
        for v in spec.get("volumes") or []
    }
    mounted = [m for _, c in manifests.containers(spec) for m in c.get("volumeMounts") or []]
    if not any(
        str(m.get("mountPath", "")).rstrip("/") == log_folder and claims.get(m.get("name")) == claim
        for m in mounted
    ):
        message = (
            f"mounts no claim {claim} at {log_folder}, where workers write task logs: the logs of finished "
            "tasks would be unreadable"
        )
        yield at("airflow/api-server-logs", api_server, "spec.template.spec.containers", message)
