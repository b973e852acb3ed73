"""The lint gate: prove the manifests before anything touches a cluster.

`lint` renders every overlay with kustomize and runs seven checks on the objects it
gets, the worker pod template inside them included:

  yamllint             every YAML file, with the repository's .yamllint, warnings included
  schemas              the project's own rules in schemas/ (yamale), one schema per kind
  kubernetes-validate  the Kubernetes API schemas, strict, at the oldest and newest version supported
  wiring               what no schema sees: selectors, references, the Services behind the Airflow config
  rbac                 the scheduler's Role grants exactly what KubernetesExecutor uses; no one gets more
  airflow              the installed Airflow's view: known options, and the worker pods its own CLI renders
  checkov              the security scan, every skip justified beside it

The checks run at once in threads; the slow ones (Airflow, checkov) are subprocesses.
Every problem names the file, the object (kind/name) and the field.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import yamale
import yaml
from rich.table import Table
from rich.text import Text
from yamale.readers import parse_yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from . import REPO_ROOT, manifests
from . import generated_secrets as generated
from .console import Failure, console
from .manifests import Manifest

CHECKS = ("kustomize", "yamllint", "schemas", "kubernetes-validate", "wiring", "rbac", "airflow", "checkov")

# What the slow checks reuse between runs (gitignored): a migrated metadata database
# per Airflow version, and the bytecode of Airflow and checkov.
CACHE_DIR = REPO_ROOT / ".cache"

REPLICATED_KINDS = {"Deployment", "StatefulSet"}
COMPONENT_LABEL = "app.kubernetes.io/component"

# The Kubernetes API calls KubernetesExecutor makes in its own namespace, read from
# airflow/providers/cncf/kubernetes/executors/ (cncf-kubernetes 10.25.0):
#   create_namespaced_pod                       pods      create  launch a worker pod
#   delete_namespaced_pod                       pods      delete  delete_worker_pods
#   read_namespaced_pod                         pods      get     find the task of an adopted pod
#   list_namespaced_pod, DynamicClient.get      pods      list    adopt or clear pods, find a task's pod
#   watch.Watch().stream(list_namespaced_pod)   pods      watch   the pod watcher
#   patch_namespaced_pod                        pods      patch   adopt pods by relabelling them
#   read_namespaced_pod_log                     pods/log  get     the log of a running task
# list_pod_for_all_namespaces is for multi_namespace_mode only, which needs a ClusterRole.
# tests/test_checks.py reads the provider's code to keep this table true.
EXECUTOR_RULES: dict[str, frozenset[str]] = {
    "pods": frozenset({"create", "delete", "get", "list", "patch", "watch"}),
    "pods/log": frozenset({"get"}),
}
# The api-server shows the logs of running task pods: it reads pods and logs, nothing else.
LOG_READER_RESOURCES = frozenset({"pods", "pods/log"})
READ_VERBS = frozenset({"get", "list", "watch"})

AIRFLOW_ENV_PREFIX = "AIRFLOW__"
DAGS_FOLDER_KEY = "AIRFLOW__CORE__DAGS_FOLDER"
LOG_FOLDER_KEY = "AIRFLOW__LOGGING__BASE_LOG_FOLDER"
EXECUTION_API_KEY = "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"
DATABASE_URL_KEY = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
LOGICAL_DATE = "2026-01-01T00:00:00+00:00"
CHECKOV_INSTALL = "install it with `uv tool install checkov` (nox's lint and tests sessions install it)"


@dataclass(frozen=True)
class Problem:
    """One thing to fix: where it is (file, object, field), what is wrong and what to do."""

    check: str
    file: str
    message: str
    resource: str = ""
    field: str = ""
    line: int | None = None
    overlay: str = dataclasses.field(default="", compare=False)

    def text(self, overlays: Iterable[str] = ()) -> Text:
        text = Text("✗ ", style="red")
        text.append(f"{self.file}:{self.line}" if self.line else self.file or "-", style="bold")
        if self.resource:
            text.append(f"  {self.resource}", style="cyan")
        if self.field:
            text.append(f"  {self.field}", style="yellow")
        text.append(f"  {self.message}  ")
        text.append(f"[{self.check}]", style="dim")
        if overlays:
            text.append(f" (overlay {', '.join(overlays)} only)", style="dim")
        return text


def _at(check: str, manifest: Manifest, field: str, message: str) -> Problem:
    return Problem(check, manifest.source, message, manifest.ref, field)


@dataclass
class Rendered:
    """One overlay as kustomize renders it, and the worker pod template inside it."""

    overlay: str
    objects: list[Manifest]
    template: Manifest | None

    @property
    def all(self) -> list[Manifest]:
        return [*self.objects, *([self.template] if self.template else [])]

    def component(self, name: str) -> Manifest | None:
        """The Deployment or StatefulSet of an Airflow component, by its component label."""
        return next(
            (m for m in self.objects if m.kind in REPLICATED_KINDS and m.labels.get(COMPONENT_LABEL) == name),
            None,
        )


@dataclass
class Target:
    root: Path
    versions: tuple[str, ...]
    rendered: list[Rendered]
    overlay_dirs: list[Path]


@dataclass
class Report:
    overlays: list[str]
    versions: tuple[str, ...]
    problems: list[tuple[Problem, list[str]]]
    seconds: dict[str, float]
    wall: float


def lint(
    overlays: list[str] | None = None,
    kubernetes_versions: tuple[str, str] = ("1.30", "1.35"),
    root: Path = REPO_ROOT,
) -> None:
    """Run every check on every overlay (or the ones named), print the report, fail on any problem."""
    report = check(overlays, kubernetes_versions, root)
    print_report(report)
    if report.problems:
        raise Failure(
            f"the lint gate found {len(report.problems)} problem(s), listed above with their file, object "
            "and field: fix them and run `invoke lint` again"
        )


def check(
    overlays: list[str] | None = None,
    kubernetes_versions: tuple[str, ...] = ("1.30", "1.35"),
    root: Path = REPO_ROOT,
    only: Iterable[str] = CHECKS,
) -> Report:
    """The problems that the checks (all, or ``only`` these) find, merged across overlays.

    Rendering, the kustomize row, always runs: the other checks read its output.
    """
    started = time.perf_counter()
    root = root.resolve()
    overlay_dirs = _overlay_dirs(root, overlays)
    selected = [name for name in CHECK_FUNCTIONS if name in set(only)]
    seconds: dict[str, float] = {}
    found: list[Problem] = []
    with ThreadPoolExecutor(max_workers=len(CHECKS) + len(overlay_dirs)) as pool:
        rendered = []
        for result, problems in pool.map(lambda path: _render(root, path), overlay_dirs):
            rendered += [result] if result else []
            found += problems
        seconds["kustomize"] = time.perf_counter() - started
        target = Target(root, tuple(dict.fromkeys(kubernetes_versions)), rendered, overlay_dirs)
        # In CHECK_FUNCTIONS' order: the subprocesses start first and run while the threads work.
        timed = {name: pool.submit(_timed, CHECK_FUNCTIONS[name], target) for name in selected}
        for name, future in timed.items():
            problems, seconds[name] = future.result()
            found += problems
    return Report(
        overlays=[path.name for path in overlay_dirs],
        versions=target.versions,
        problems=_merge(found, [path.name for path in overlay_dirs]),
        seconds=seconds,
        wall=time.perf_counter() - started,
    )


def print_report(report: Report) -> None:
    for problem, overlays in report.problems:
        console.print(problem.text(overlays), soft_wrap=True)
    counts = dict.fromkeys(CHECKS, 0)
    for problem, _ in report.problems:
        counts[problem.check] += 1
    linted, versions = ", ".join(report.overlays), ", ".join(report.versions)
    table = Table(title="invoke lint")
    table.add_column("check")
    table.add_column("problems", justify="right")
    table.add_column("time", justify="right")
    for name in (name for name in CHECKS if name in report.seconds):
        count = Text(str(counts[name]), style="red" if counts[name] else "green")
        table.add_row(name, count, f"{report.seconds[name]:.1f} s")
    console.print(table)
    console.print(f"overlays {linted}; Kubernetes {versions}; {report.wall:.1f} s wall", style="dim")


def _timed(function: Callable[[Target], Iterable[Problem]], target: Target) -> tuple[list[Problem], float]:
    started = time.perf_counter()
    return list(function(target)), time.perf_counter() - started


def _merge(problems: Iterable[Problem], every: list[str]) -> list[tuple[Problem, list[str]]]:
    """One line per problem, naming the overlays when not every overlay has it."""
    merged: dict[Problem, list[str]] = {}
    for problem in problems:
        overlays = merged.setdefault(problem, [])
        if problem.overlay and problem.overlay not in overlays:
            overlays.append(problem.overlay)
    return [
        (problem, [] if set(overlays) == set(every) else overlays) for problem, overlays in merged.items()
    ]


def _per_overlay(target: Target, check: Callable[[Rendered], Iterable[Problem]]) -> Iterator[Problem]:
    for rendered in target.rendered:
        for problem in check(rendered):
            yield replace(problem, overlay=rendered.overlay)


# rendering


def _overlay_dirs(root: Path, names: list[str] | None) -> list[Path]:
    overlays = root / "kube" / "overlays"
    if names:
        return [overlays / name for name in names]
    return sorted(path.parent for path in overlays.glob("*/kustomization.yaml"))


def _render(root: Path, overlay_dir: Path) -> tuple[Rendered | None, list[Problem]]:
    overlay = overlay_dir.name
    try:
        objects = manifests.render(overlay_dir, kube_dir=root / "kube")
    except Failure as failure:
        return None, [replace(_kustomize_problem(root, overlay_dir, str(failure)), overlay=overlay)]
    objects = [Manifest(_relative(root, Path(m.source)), m.obj) for m in objects]
    try:
        return Rendered(overlay, objects, manifests.pod_template(objects)), []
    except yaml.YAMLError as error:
        message = f"the worker pod template is not valid YAML: {error}"
        return Rendered(overlay, objects, None), [Problem("kustomize", _relative(root, overlay_dir), message)]


def _kustomize_problem(root: Path, overlay_dir: Path, failure: str) -> Problem:
    error = failure.removeprefix(f"{manifests.relative(overlay_dir)}: ")
    duplicate = re.search(r"already registered id: (\w+)\.[^/]*/([^.\s']+)", error)
    if not duplicate:
        return Problem("kustomize", _relative(root, overlay_dir), error)
    kind, name = duplicate.groups()
    defined = _objects_by_id(root, overlay_dir)
    files = [file for (k, _, n), paths in defined.items() if (k, n) == (kind, name) for file in paths]
    message = (
        f"{kind}/{name} is defined more than once ({', '.join(files) or 'see kustomize'}), and kustomize "
        "refuses duplicates: rename or remove one"
    )
    return Problem(
        "kustomize", files[-1] if files else _relative(root, overlay_dir), message, f"{kind}/{name}"
    )


def _relative(root: Path, path: Path) -> str:
    """A path as the report shows it: relative to the linted root (or to the repository)."""
    absolute = path if path.is_absolute() else REPO_ROOT / path
    for base in (root, REPO_ROOT):
        if absolute.resolve().is_relative_to(base):
            return str(absolute.resolve().relative_to(base))
    return str(path)


# Field paths, with list items by name: spec.template.spec.containers[base].image


def _field(obj: Any, parts: Iterable[str | int]) -> str:
    path, node = "", obj
    for part in parts:
        if isinstance(node, list) and (isinstance(part, int) or part.isdigit()):
            node = node[int(part)] if int(part) < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            path += f"[{part if name is None else name}]"
        else:
            path += f".{part}" if path else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return path


def _dotted_parts(obj: Any, dotted: str) -> list[str | int]:
    """Split yamale's dotted path, whose keys may hold dots themselves (app.kubernetes.io/name)."""
    tokens = dotted.split(".") if dotted else []
    parts: list[str | int] = []
    node, start = obj, 0
    while start < len(tokens):
        if isinstance(node, list) and tokens[start].isdigit():
            index = int(tokens[start])
            parts.append(index)
            node, start = (node[index] if index < len(node) else None), start + 1
            continue
        keys = node if isinstance(node, dict) else {}
        ends = (end for end in range(len(tokens), start, -1) if ".".join(tokens[start:end]) in keys)
        end = next(ends, len(tokens))  # not found: a missing field, named by the rest
        parts.append(".".join(tokens[start:end]))
        node, start = keys.get(parts[-1]), end
    return parts


def _pods(manifest: Manifest) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    """(field path, pod spec, pod labels) of every pod an object describes."""
    if manifest.kind == "Pod":
        yield "spec", manifest.obj.get("spec") or {}, manifest.labels
        return
    for path, spec in manifests.pod_specs(manifest):
        yield path, spec, _get(manifest.obj, f"{path.removesuffix('.spec')}.metadata.labels") or {}


def _get(obj: Any, dotted: str) -> Any:
    """The value at a dotted path of plain keys, or None."""
    for key in dotted.split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _pod(manifest: Manifest) -> dict[str, Any]:
    return next((spec for _, spec, _ in _pods(manifest)), {})


# 1. yamllint


def check_yamllint(target: Target) -> Iterator[Problem]:
    config_file = target.root / ".yamllint"
    config = (
        YamlLintConfig(file=str(config_file)) if config_file.is_file() else YamlLintConfig("extends: default")
    )
    for path in _yaml_files(target.root, config):
        name = _relative(target.root, path)
        for found in linter.run(path.read_text(), config, name):
            rule = f" ({found.rule})" if found.rule else ""
            yield Problem("yamllint", name, f"{found.desc}{rule}", line=found.line)


def _yaml_files(root: Path, config: YamlLintConfig) -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(root):
        relative = Path(directory).relative_to(root)
        # Caches, virtual environments and .git hold no YAML of the project's own.
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if not (name.startswith(".") and name != ".github")
            and not config.is_file_ignored(f"{relative / name}/")
        )
        for name in sorted(files):
            path = relative / name
            if config.is_yaml_file(str(path)) and not config.is_file_ignored(str(path)):
                yield root / path


# 2. yamale schemas


def check_schemas(target: Target) -> Iterator[Problem]:
    schema_dir = target.root / "schemas"
    try:
        schema, files = _manifest_schema(schema_dir)
    except (OSError, SyntaxError, ValueError, yaml.YAMLError) as error:
        yield Problem("schemas", _relative(target.root, schema_dir), f"the schemas do not load: {error}")
        return
    yield from _okteto_pipeline_problems(target.root)

    def schema_problems(rendered: Rendered) -> Iterator[Problem]:
        for manifest in rendered.all:
            if manifest.kind not in schema.includes:
                message = (
                    f"no schema for kind {manifest.kind}: add one to schemas/ and to schemas/manifest.yaml"
                )
                yield _at("schemas", manifest, "kind", message)
                continue
            rules = [manifest.kind]
            component_rule = f"component/{manifest.labels.get(COMPONENT_LABEL)}"
            if manifest.kind in REPLICATED_KINDS and component_rule in schema.includes:
                rules.append(component_rule)
            for rule in rules:
                for error in schema.includes[rule].validate(manifest.obj, manifest.ref, False).errors:
                    path, message = _split_error(error)
                    field = _field(manifest.obj, _dotted_parts(manifest.obj, path))
                    yield _at("schemas", manifest, field, f"{message} (rule {rule} in {files[rule]})")

    yield from _per_overlay(target, schema_problems)


def _manifest_schema(schema_dir: Path) -> tuple[Any, dict[str, str]]:
    """schemas/manifest.yaml with the includes of every other schema file, and the file of each."""
    schema = yamale.make_schema(str(schema_dir / "manifest.yaml"))
    files: dict[str, str] = {}
    for path in sorted(schema_dir.glob("*.yaml")):
        if path.name not in {"manifest.yaml", "okteto-pipeline.yaml"}:
            for document in parse_yaml(str(path)):
                schema.add_include(document)
                files.update(dict.fromkeys(document, f"schemas/{path.name}"))
    return schema, files


def _split_error(error: str) -> tuple[str, str]:
    """yamale's "path: message" (or "path : message")."""
    matched = re.match(r"(.*?) ?: (.*)", error, re.S)
    return (matched.group(1), matched.group(2)) if matched else ("", error)


def _okteto_pipeline_problems(root: Path) -> Iterator[Problem]:
    pipeline = root / "okteto-pipeline.yml"
    if not pipeline.is_file():
        return  # nothing to check until the Okteto flow exists
    try:
        schema = yamale.make_schema(str(root / "schemas" / "okteto-pipeline.yaml"))
        data = yamale.make_data(str(pipeline))
    except yaml.YAMLError:
        return  # yamllint names the line
    except (OSError, SyntaxError, ValueError) as error:
        yield Problem("schemas", "schemas/okteto-pipeline.yaml", f"the schema does not load: {error}")
        return
    for result in yamale.validate(schema, data, strict=True, _raise_error=False):
        for failed in result.errors:
            path, message = _split_error(failed)
            field = _field(data[0][0], _dotted_parts(data[0][0], path))
            yield Problem(
                "schemas", "okteto-pipeline.yml", f"{message} (schemas/okteto-pipeline.yaml)", field=field
            )


# 3. kubernetes-validate


def check_kubernetes_validate(target: Target) -> Iterator[Problem]:
    validated: dict[str, list[tuple[str, str]]] = {}  # the overlays share most objects

    def api_problems(rendered: Rendered) -> Iterator[Problem]:
        for manifest in rendered.all:
            key = json.dumps(manifest.obj, sort_keys=True)
            if key not in validated:
                validated[key] = _api_errors(manifest.obj, target.versions)
            for field, message in validated[key]:
                yield _at("kubernetes-validate", manifest, field, message)

    yield from _per_overlay(target, api_problems)


def _api_errors(obj: dict[str, Any], versions: Iterable[str]) -> list[tuple[str, str]]:
    """(field, message) of what the API server of each version would reject."""
    errors: dict[tuple[str, str], list[str]] = {}
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.setdefault((_field(obj, error.path), error.message), []).append(version)
        except kubernetes_validate.SchemaNotFoundError:
            message = (
                f"Kubernetes has no kind {obj.get('kind')} in apiVersion {obj.get('apiVersion')}: "
                "use the apiVersion that `kubectl api-resources` lists for it"
            )
            errors.setdefault(("apiVersion", message), []).append(version)
        except kubernetes_validate.VersionNotSupportedError:
            message = (
                f"kubernetes-validate {metadata.version('kubernetes-validate')} has no schemas for this "
                "version: set lint.kubernetes_oldest and lint.kubernetes_newest in invoke.yaml to ones it has"
            )
            errors.setdefault(("", message), []).append(version)
    return [
        (field, f"{message} (Kubernetes {', '.join(found)})") for (field, message), found in errors.items()
    ]


# 4. wiring


def check_wiring(target: Target) -> Iterator[Problem]:
    yield from _base_duplicates(target.root, target.overlay_dirs)

    def wiring_problems(rendered: Rendered) -> Iterator[Problem]:
        yield from _rendered_duplicates(rendered)
        yield from _selectors(rendered)
        yield from _references(rendered)
        yield from _airflow_endpoints(target.root, rendered)
        yield from _worker_image(rendered)

    yield from _per_overlay(target, wiring_problems)


def _kustomize_files(directory: Path, namespace: str | None = None) -> Iterator[tuple[Path, str | None]]:
    """Every resource file an overlay builds from, with the namespace kustomize gives its objects."""
    try:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return  # kustomize and yamllint report it
    namespace = namespace or kustomization.get("namespace")  # the outer kustomization's wins
    for resource in kustomization.get("resources") or []:
        path = (directory / resource).resolve()
        if path.is_dir():
            yield from _kustomize_files(path, namespace)
        elif path.is_file():
            yield path, namespace


def _objects_by_id(root: Path, overlay_dir: Path) -> dict[tuple[str, str, str], list[str]]:
    """The files that define each (kind, namespace, name), read before kustomize."""
    defined: dict[tuple[str, str, str], list[str]] = {}
    for path, namespace in _kustomize_files(overlay_dir):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue  # yamllint names the line
        for obj in documents:
            if isinstance(obj, dict) and obj.get("kind"):
                meta = obj.get("metadata") or {}
                key = (obj["kind"], namespace or meta.get("namespace") or "default", str(meta.get("name")))
                defined.setdefault(key, []).append(_relative(root, path))
    return defined


def _base_duplicates(root: Path, overlay_dirs: list[Path]) -> Iterator[Problem]:
    """Duplicates named by their files: kustomize only refuses them, naming one file."""
    for overlay_dir in overlay_dirs:
        for (kind, namespace, name), files in _objects_by_id(root, overlay_dir).items():
            if len(files) > 1:
                message = (
                    f"{kind} {namespace}/{name} is defined {len(files)} times ({', '.join(files)}): no two "
                    "objects may share a kind, namespace and name; rename or remove one"
                )
                problem = Problem("wiring", files[-1], message, f"{kind}/{name}", "metadata.name")
                yield replace(problem, overlay=overlay_dir.name)


def _rendered_duplicates(rendered: Rendered) -> Iterator[Problem]:
    seen: dict[tuple[str, str | None, str], Manifest] = {}
    for manifest in rendered.objects:
        key = (manifest.kind, manifest.namespace, manifest.name)
        if key in seen:
            message = (
                f"also defined in {seen[key].source}: no two objects may share a kind, namespace and name"
            )
            yield _at("wiring", manifest, "metadata.name", message)
        seen.setdefault(key, manifest)


SELECTORS = {
    "Service": "spec.selector",
    "PodDisruptionBudget": "spec.selector.matchLabels",
    "NetworkPolicy": "spec.podSelector.matchLabels",
}


def _selectors(rendered: Rendered) -> Iterator[Problem]:
    """Every selector picks some pods (worker pods included); workloads select their own pods."""
    pods = [(spec, labels) for manifest in rendered.all for _, spec, labels in _pods(manifest)]
    for manifest in rendered.objects:
        spec = manifest.obj.get("spec") or {}
        if manifest.kind in REPLICATED_KINDS | {"Job"} and spec.get("selector"):
            own = spec["selector"].get("matchLabels") or {}
            labels = next((labels for _, _, labels in _pods(manifest)), {})
            if not own.items() <= labels.items():
                message = "the selector does not match the labels of the object's own pod template"
                yield _at("wiring", manifest, "spec.selector.matchLabels", message)
        field = SELECTORS.get(manifest.kind, "-")
        selector = _get(manifest.obj, field)
        if not selector:
            continue
        selected = [pod for pod, labels in pods if selector.items() <= labels.items()]
        if not selected:
            message = f"selects no pods: no pod template has the labels {_labels(selector)}"
            yield _at("wiring", manifest, field, message)
        elif manifest.kind == "Service":
            yield from _target_ports(manifest, selected)


def _target_ports(service: Manifest, pods: list[dict[str, Any]]) -> Iterator[Problem]:
    names = {
        port.get("name")
        for pod in pods
        for _, container in manifests.containers(pod)
        for port in container.get("ports") or []
    }
    for index, port in enumerate((service.obj.get("spec") or {}).get("ports") or []):
        target_port = port.get("targetPort")
        if isinstance(target_port, str) and target_port not in names:
            known = ", ".join(sorted(filter(None, names))) or "none"
            message = f"targetPort {target_port!r} is not a named port of the pods it selects ({known})"
            yield _at("wiring", service, _field(service.obj, ["spec", "ports", index, "targetPort"]), message)


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in labels.items())


def _references(rendered: Rendered) -> Iterator[Problem]:
    """Every ConfigMap, Secret, key, claim, volume and ServiceAccount that a pod names exists.

    The Secrets are not in the manifests: `invoke deploy` generates them, so the names
    and keys of airflow_ha.secrets.GENERATED_SECRETS exist. References resolve within the
    one namespace an overlay deploys to.
    """
    existing: dict[str, dict[str, set[str]]] = {
        "ConfigMap": {},
        "Secret": {name: set(keys) for name, keys in generated.GENERATED_SECRETS.items()},
        "PersistentVolumeClaim": {},
        "ServiceAccount": {"default": set()},
    }
    for m in rendered.objects:
        if m.kind in existing:
            existing[m.kind][m.name] = {
                key for part in ("data", "binaryData", "stringData") for key in m.obj.get(part) or {}
            }
    for manifest in rendered.all:
        for pod_path, pod, _ in _pods(manifest):
            for field, kind, name, key in _pod_references(pod):
                there = existing[kind]
                if name not in there:
                    message = f"{kind} {name!r} does not exist (there are: {', '.join(sorted(there))})"
                elif key is not None and key not in there[name]:
                    message = f"{kind} {name!r} has no key {key!r} (it has: {', '.join(sorted(there[name]))})"
                else:
                    continue
                yield _at("wiring", manifest, f"{pod_path}.{field}", message)
            volumes = {volume.get("name") for volume in pod.get("volumes") or []}
            claim_templates = (manifest.obj.get("spec") or {}).get("volumeClaimTemplates") or []
            volumes |= {(claim.get("metadata") or {}).get("name") for claim in claim_templates}
            for container_path, container in manifests.containers(pod):
                for mount in container.get("volumeMounts") or []:
                    if mount.get("name") not in volumes:
                        message = f"mounts volume {mount.get('name')!r}, which the pod does not define"
                        field = f"{pod_path}.{container_path}.volumeMounts[{mount.get('name')}]"
                        yield _at("wiring", manifest, field, message)


def _pod_references(pod: dict[str, Any]) -> Iterator[tuple[str, str, str, str | None]]:
    """(field, kind, name, key) of what a pod spec names, optional references left out."""
    yield "serviceAccountName", "ServiceAccount", pod.get("serviceAccountName") or "default", None
    for volume in pod.get("volumes") or []:
        where = f"volumes[{volume.get('name')}]"
        for kind, source_field, name_field in (
            ("ConfigMap", "configMap", "name"),
            ("Secret", "secret", "secretName"),
        ):
            source = volume.get(source_field) or {}
            if source and not source.get("optional"):
                yield f"{where}.{source_field}.{name_field}", kind, str(source.get(name_field)), None
                for item in source.get("items") or []:
                    yield f"{where}.{source_field}.items", kind, str(source.get(name_field)), item.get("key")
        claim = volume.get("persistentVolumeClaim")
        if claim:
            yield (
                f"{where}.persistentVolumeClaim.claimName",
                "PersistentVolumeClaim",
                claim.get("claimName"),
                None,
            )
    for path, container in manifests.containers(pod):
        for variable in container.get("env") or []:
            for kind, ref_field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = (variable.get("valueFrom") or {}).get(ref_field)
                if ref and not ref.get("optional"):
                    where = f"{path}.env[{variable.get('name')}].valueFrom.{ref_field}"
                    yield where, kind, ref.get("name"), ref.get("key")
        for index, env_from in enumerate(container.get("envFrom") or []):
            for kind, ref_field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                ref = env_from.get(ref_field)
                if ref and not ref.get("optional"):
                    yield f"{path}.envFrom[{index}].{ref_field}.name", kind, ref.get("name"), None


def _airflow_endpoints(root: Path, rendered: Rendered) -> Iterator[Problem]:
    """The execution API URL and the database URL name a Service and a port it exposes."""
    config_map = manifests.find(rendered.objects, "ConfigMap", manifests.AIRFLOW_CONFIG_MAP)
    if config_map is None:
        message = (
            f"no ConfigMap {manifests.AIRFLOW_CONFIG_MAP}: every Airflow component reads its config from it"
        )
        yield Problem("wiring", "kube/base/kustomization.yaml", message)
        return
    url = manifests.airflow_config(rendered.objects).get(EXECUTION_API_KEY)
    config_file = _config_file(root, EXECUTION_API_KEY) or config_map.source
    if url is None:
        message = (
            f"{EXECUTION_API_KEY} is not set, so worker pods would report to "
            "http://localhost:8080/execution/: point it at the api-server Service"
        )
        yield Problem("wiring", config_file, message, config_map.ref, f"data.{EXECUTION_API_KEY}")
        return
    services = {m.name: m for m in rendered.objects if m.kind == "Service"}
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if unreachable := _unreachable(services, parts.hostname or "", port):
        yield Problem("wiring", config_file, unreachable, config_map.ref, f"data.{EXECUTION_API_KEY}")
    # deploy writes the database URL from these constants; an overlay that drops the
    # bundled PostgreSQL (for an external database) brings its own URL.
    bundled = any(
        m.kind == "StatefulSet" and m.labels.get("app.kubernetes.io/name") == "postgresql"
        for m in rendered.objects
    )
    if bundled and (unreachable := _unreachable(services, generated.DATABASE_HOST, generated.DATABASE_PORT)):
        secret = f"Secret/{generated.METADATA_SECRET}"
        yield Problem("wiring", "airflow_ha/secrets.py", unreachable, secret, f"data.{DATABASE_URL_KEY}")


def _unreachable(services: dict[str, Manifest], host: str, port: int) -> str | None:
    """Why host:port is not a Service's port, if it is not."""
    service = services.get(host.split(".")[0])
    if service is None:
        return f"host {host!r} is not a Service (there are: {', '.join(sorted(services))})"
    ports = [p.get("port") for p in _get(service.obj, "spec.ports") or []]
    if port in ports:
        return None
    return (
        f"port {port} of {host}: {service.ref} ({service.source}) exposes only {', '.join(map(str, ports))}"
    )


def _config_file(root: Path, key: str) -> str | None:
    """The .env file under kube/ that sets an Airflow variable: the file to name in messages."""
    for path in sorted((root / "kube").rglob("*.env")):
        if any(line.split("=", 1)[0].strip() == key for line in path.read_text().splitlines()):
            return _relative(root, path)
    return None


def _worker_image(rendered: Rendered) -> Iterator[Problem]:
    """worker_container_repository and _tag override the template's image: the two must agree."""
    config = manifests.airflow_config(rendered.objects)
    repository, tag = config.get(manifests.WORKER_REPOSITORY_KEY), config.get(manifests.WORKER_TAG_KEY)
    template = rendered.template
    if not (repository and tag and template):
        return
    image = ((template.obj.get("spec") or {}).get("containers") or [{}])[0].get("image")
    if image != f"{repository}:{tag}":
        message = (
            f"image {image!r}, but worker_container_repository and worker_container_tag in the Airflow "
            f"config give {repository}:{tag}, which override it: make them the same"
        )
        yield _at("wiring", template, _field(template.obj, ["spec", "containers", 0, "image"]), message)


# 5. RBAC


def check_rbac(target: Target) -> Iterator[Problem]:
    return _per_overlay(target, _rbac)


def _rbac(rendered: Rendered) -> Iterator[Problem]:
    for m in rendered.objects:
        if m.kind in {"ClusterRole", "ClusterRoleBinding"}:
            message = (
                f"no {m.kind}: the executor launches pods in its own namespace (multi_namespace_mode is "
                "off), so a Role and a RoleBinding are enough"
            )
            yield _at("rbac", m, "kind", message)
        elif m.kind == "RoleBinding" and (m.obj.get("roleRef") or {}).get("kind") == "ClusterRole":
            yield _at("rbac", m, "roleRef.kind", "binds a ClusterRole: bind a Role of this namespace instead")
    roles = {m.name: m for m in rendered.objects if m.kind == "Role"}
    bound: dict[str, list[tuple[Manifest, Manifest | None]]] = {}
    for binding in (m for m in rendered.objects if m.kind == "RoleBinding"):
        role = roles.get(str((binding.obj.get("roleRef") or {}).get("name")))
        for subject in binding.obj.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                bound.setdefault(subject.get("name"), []).append((binding, role))
    if rendered.component("scheduler") is None:
        yield Problem(
            "rbac", "kube/base", "no scheduler Deployment (label app.kubernetes.io/component: scheduler)"
        )
    talkers = set()  # the ServiceAccounts that may talk to the Kubernetes API
    for component in ("scheduler", "api-server"):
        workload = rendered.component(component)
        if workload is None:
            continue
        account = _pod(workload).get("serviceAccountName") or "default"
        talkers.add(account)
        roles_bound = [role for _, role in bound.get(account, []) if role]
        granted = _granted(roles_bound)
        where = roles_bound[0] if roles_bound else workload
        field = "rules" if roles_bound else "spec.template.spec.serviceAccountName"
        who = f"ServiceAccount {account} of {workload.ref}"
        if component == "scheduler":
            for resource, verbs in EXECUTOR_RULES.items():
                covered = granted.get(resource, set()) | granted.get("*", set())
                lacking = "" if "*" in covered else ", ".join(sorted(verbs - covered))
                if lacking:
                    message = f"{who} may not {lacking} {resource}, which KubernetesExecutor does: grant it"
                    yield _at("rbac", where, field, message)
            allowed, needs = EXECUTOR_RULES, "exactly what KubernetesExecutor uses"
        else:
            allowed = dict.fromkeys(LOG_READER_RESOURCES, READ_VERBS)
            needs = "to read pods and their logs"
        for resource, granted_verbs in sorted(granted.items()):
            extra = ", ".join(sorted(granted_verbs - allowed.get(resource, frozenset())))
            if extra:
                message = f"{who} may {extra} {resource}, which it never does: remove it (it needs {needs})"
                yield _at("rbac", where, field, message)
    for account, grants in sorted(bound.items()):
        if account not in talkers:
            message = (
                f"grants API rights to ServiceAccount {account}, which needs none: only the scheduler and "
                "the api-server talk to the Kubernetes API"
            )
            for binding, _ in grants:
                yield _at("rbac", binding, "subjects", message)


def _granted(roles: Iterable[Manifest]) -> dict[str, set[str]]:
    """Verbs per core-group resource (other groups named with theirs); '*' stays '*'."""
    granted: dict[str, set[str]] = {}
    for role in roles:
        for rule in role.obj.get("rules") or []:
            groups = rule.get("apiGroups") or []
            for resource in rule.get("resources") or []:
                name = resource if groups == [""] else f"{resource} (apiGroups {', '.join(groups) or 'none'})"
                granted.setdefault(name, set()).update(rule.get("verbs") or [])
    return granted


# 6. Airflow's own view


def check_airflow(target: Target) -> Iterator[Problem]:
    # Overlays that give Airflow the same config and pod template need one Airflow run.
    groups: dict[str, list[Rendered]] = {}
    for rendered in target.rendered:
        template = rendered.template.obj if rendered.template else None
        key = json.dumps([manifests.airflow_config(rendered.objects), template], sort_keys=True)
        groups.setdefault(key, []).append(rendered)
    for group in groups.values():
        found = list(_airflow_view(target, group[0]))
        yield from (replace(problem, overlay=rendered.overlay) for rendered in group for problem in found)


def _airflow_view(target: Target, rendered: Rendered) -> Iterator[Problem]:
    template = rendered.template
    if template is None:
        message = (
            f"no worker pod template: the ConfigMap {manifests.POD_TEMPLATE_CONFIG_MAP} must hold "
            f"{manifests.POD_TEMPLATE_KEY} (kube/base/pod-template.yaml)"
        )
        yield Problem("airflow", "kube/base/kustomization.yaml", message)
        return
    yield from _template_contract(template)
    config = manifests.airflow_config(rendered.objects)
    settings = _airflow_settings(target.root, rendered)
    try:
        database, dag_id = migrated_database(), _dag_id(target.root)
    except Failure as failure:
        yield Problem("airflow", "", str(failure))
        return
    with tempfile.TemporaryDirectory(prefix="airflow-ha-lint-") as tmp:
        home = Path(tmp)
        shutil.copy(database, home / "airflow.db")
        (home / "pod-template.yaml").write_text(yaml.safe_dump(template.obj))
        cli = ["kubernetes", "generate-dag-yaml", dag_id, "--logical-date", LOGICAL_DATE]
        cli += ["--output-path", str(home / "pods")]
        request = {"keys": sorted(settings), "report": str(home / "report.json"), "cli": cli}
        (home / "request.json").write_text(json.dumps(request))
        env = airflow_env(home) | config | _dummy_secrets() | _local_paths(home, target.root)
        result = subprocess.run(
            [sys.executable, "-m", "airflow_ha.checks", str(home / "request.json")],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            check=False,
        )
        if not (home / "report.json").is_file():
            yield Problem("airflow", "", f"Airflow did not start: {_tail(result.stderr)}")
            return
        for key, message in sorted(json.loads((home / "report.json").read_text()).items()):
            file, resource, field = settings[key]
            yield Problem("airflow", file, message, resource, field)
        if result.returncode != 0:
            message = f"`airflow {' '.join(cli[:3])}` failed: {_tail(result.stderr)}"
            yield Problem("airflow", "dags", message, template.ref)
            return
        pods = [
            yaml.safe_load(path.read_text()) for path in sorted(home.glob("pods/airflow_yaml_output/*.yml"))
        ]
    yield from _worker_pod_problems(target, rendered, config, pods)


def _tail(output: str, lines: int = 3) -> str:
    meaningful = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return " | ".join(meaningful[-lines:]) or "no output"


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
        yield _at("airflow", template, "metadata.name", "Airflow needs a pod template with a non-empty name")
    first = ((template.obj.get("spec") or {}).get("containers") or [{}])[0]
    if first.get("name") != "base":
        message = (
            f"the first container is named {first.get('name')!r}: name it 'base'; KubernetesExecutor merges "
            "its own container into the first one, and reads the state and the log of 'base'"
        )
        yield _at("airflow", template, _field(template.obj, ["spec", "containers", 0, "name"]), message)


def _airflow_settings(root: Path, rendered: Rendered) -> dict[str, tuple[str, str, str]]:
    """Every AIRFLOW__SECTION__KEY the manifests set, and (file, object, field) of where."""
    settings: dict[str, tuple[str, str, str]] = {}
    config_map = manifests.find(rendered.objects, "ConfigMap", manifests.AIRFLOW_CONFIG_MAP)
    for key in manifests.airflow_config(rendered.objects):
        if config_map and key.startswith(AIRFLOW_ENV_PREFIX):
            settings[key] = (_config_file(root, key) or config_map.source, config_map.ref, f"data.{key}")
    for name, keys in generated.GENERATED_SECRETS.items():
        for key in keys:
            if key.startswith(AIRFLOW_ENV_PREFIX):
                settings.setdefault(key, ("airflow_ha/secrets.py", f"Secret/{name}", f"data.{key}"))
    for manifest in rendered.all:
        for pod_path, pod, _ in _pods(manifest):
            for container_path, container in manifests.containers(pod):
                for variable in container.get("env") or []:
                    name = str(variable.get("name"))
                    if name.startswith(AIRFLOW_ENV_PREFIX):
                        settings.setdefault(
                            name, (manifest.source, manifest.ref, f"{pod_path}.{container_path}.env[{name}]")
                        )
    return settings


def python_env() -> dict[str, str]:
    """The environment for a Python subprocess of the installed Airflow, or of checkov.

    Python keeps their bytecode under .cache/ even where PYTHONDONTWRITEBYTECODE is set or
    site-packages is read-only: otherwise every start compiles thousands of modules again,
    which doubles the time Airflow takes to start.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": str(CACHE_DIR / "pycache")}


def airflow_env(home: Path) -> dict[str, str]:
    """A clean environment for the installed Airflow, at AIRFLOW_HOME=home: no AIRFLOW* of the user's."""
    env = {key: value for key, value in python_env().items() if not key.startswith("AIRFLOW")}
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env | {"AIRFLOW_HOME": str(home), "PYTHONPATH": pythonpath}


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


def migrated_database() -> Path:
    """A SQLite metadata database migrated by the installed Airflow: made once (seconds), copied per use."""
    cached = CACHE_DIR / f"airflow-{metadata.version('apache-airflow')}" / "airflow.db"
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        env = airflow_env(Path(tmp)) | {DATABASE_URL_KEY: f"sqlite:///{Path(tmp) / 'airflow.db'}"}
        command = [sys.executable, "-m", "airflow", "db", "migrate"]
        result = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise Failure(f"`airflow db migrate` of a SQLite database failed: {_tail(result.stderr)}")
        os.replace(Path(tmp) / "airflow.db", cached)  # atomic: a concurrent run sees all or nothing
    return cached


def _worker_pod_problems(
    target: Target, rendered: Rendered, config: dict[str, str], pods: list[dict[str, Any]]
) -> Iterator[Problem]:
    """The pods Airflow renders are valid, run the project image non-root, see the DAGs, keep their logs."""
    template = rendered.template
    assert template is not None
    config_file = _config_file(target.root, DAGS_FOLDER_KEY) or "kube/base/airflow.env"
    config_map = f"ConfigMap/{manifests.AIRFLOW_CONFIG_MAP}"
    dags_folder, log_folder = config.get(DAGS_FOLDER_KEY), config.get(LOG_FOLDER_KEY)
    for key, value in ((DAGS_FOLDER_KEY, dags_folder), (LOG_FOLDER_KEY, log_folder)):
        if not value:
            message = f"{key} is not set: every component and every worker pod must agree on it"
            yield Problem("airflow", config_file, message, config_map, f"data.{key}")
    baked = _image_dags_folder(target.root)
    if dags_folder and baked != dags_folder:
        where = (
            f"the image has them in {baked}"
            if baked
            else "docker/Dockerfile does not COPY dags/ into the image"
        )
        message = f"worker pods look for DAGs in {dags_folder}, but {where}: make them the same"
        yield Problem("airflow", config_file, message, config_map, f"data.{DAGS_FOLDER_KEY}")
    if log_folder:
        yield from _logs_outlive_pods(rendered, log_folder)
    tasks: dict[tuple[str, str], list[str]] = {}
    for pod in pods:
        task = ((pod.get("metadata") or {}).get("annotations") or {}).get("task_id", "?")
        for field, message in _worker_pod_errors(target, rendered, pod, dags_folder, log_folder):
            tasks.setdefault((field, message), []).append(task)
    for (field, message), names in tasks.items():
        yield _at(
            "airflow",
            template,
            field,
            f"the worker pods Airflow renders from it (tasks {', '.join(names)}): {message}",
        )


def _worker_pod_errors(
    target: Target, rendered: Rendered, pod: dict[str, Any], dags_folder: str | None, log_folder: str | None
) -> Iterator[tuple[str, str]]:
    yield from _api_errors(pod, target.versions)
    spec = pod.get("spec") or {}
    base = next((c for c in spec.get("containers") or [] if c.get("name") == "base"), None)
    if base is None:
        yield "spec.containers", "no container is named 'base'"
        return
    scheduler = rendered.component("scheduler")
    component = (_pod(scheduler).get("containers") or [{}])[0] if scheduler else {}
    if component.get("image") and base.get("image") != component["image"]:
        message = f"image {base.get('image')!r} is not the image of the scheduler, {component['image']!r}"
        yield "spec.containers[base].image", message
    lacking = {source for source in _env_sources(component) - _env_sources(base) if source[0] == "ConfigMap"}
    if lacking:
        names = ", ".join(f"{kind} {name}" for kind, name in sorted(lacking))
        message = f"gets no {names}, which the scheduler gets: workers need the same config"
        yield "spec.containers[base].envFrom", message
    # Airflow 3 isolates tasks: a worker reaches the Execution API with the per-task token
    # in its workload, so a database URL, fernet key or signing secret in it is only a leak.
    for field, secret in _secret_sources(spec):
        message = (
            f"gets Secret {secret}: worker pods must hold no database URL, fernet key or JWT/API "
            "secret, only what reaches the Execution API"
        )
        yield field, message
    mounts = base.get("volumeMounts") or []
    for mount in mounts:
        path = str(mount.get("mountPath", "")).rstrip("/")
        if dags_folder and (dags_folder + "/").startswith(path + "/"):
            message = f"mounted at {path or '/'}, it hides the DAGs that the image has in {dags_folder}"
            yield f"spec.containers[base].volumeMounts[{mount.get('name')}]", message
    dag_file = _workload(base).get("dag_rel_path")
    if dag_file and not (target.root / "dags" / dag_file).is_file():
        yield "spec.containers[base].args", f"the workload names DAG file {dag_file}, which is not in dags/"
    logs = next((m for m in mounts if str(m.get("mountPath", "")).rstrip("/") == log_folder), None)
    volumes = {volume.get("name"): volume for volume in spec.get("volumes") or []}
    if log_folder and logs is None:
        yield "spec.containers[base].volumeMounts", f"mounts no volume at the logs folder {log_folder}"
    elif logs and "persistentVolumeClaim" not in volumes.get(logs.get("name"), {}):
        yield (
            f"spec.volumes[{logs.get('name')}]",
            "the logs volume is not a claim: task logs would go with the pod",
        )
    security = {**(spec.get("securityContext") or {}), **(base.get("securityContext") or {})}
    if security.get("runAsNonRoot") is not True or security.get("runAsUser") == 0:
        yield (
            "spec.containers[base].securityContext",
            "runs as root: set runAsNonRoot: true and a runAsUser other than 0",
        )


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


def _workload(container: dict[str, Any]) -> dict[str, Any]:
    """The workload KubernetesExecutor hands the worker (--json-string)."""
    args = [str(arg) for arg in [*(container.get("command") or []), *(container.get("args") or [])]]
    if "--json-string" not in args[:-1]:
        return {}
    try:
        return dict(json.loads(args[args.index("--json-string") + 1]))
    except ValueError:
        return {}


def _image_dags_folder(root: Path) -> str | None:
    """Where docker/Dockerfile puts the repository's dags/."""
    dockerfile = root / "docker" / "Dockerfile"
    text = dockerfile.read_text() if dockerfile.is_file() else ""
    copied = re.search(r"^COPY\s+(?:--\S+\s+)*dags/?\s+(\S+)\s*$", text, re.M)
    return copied.group(1).rstrip("/") if copied else None


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
    if pvc and "ReadWriteMany" not in ((pvc.obj.get("spec") or {}).get("accessModes") or []):
        message = "worker pods on any node and the api-server share this claim: it needs ReadWriteMany"
        yield _at("airflow", pvc, "spec.accessModes", message)
    api_server = rendered.component("api-server")
    if api_server is None:
        return
    pod = _pod(api_server)
    claims = {
        v.get("name"): (v.get("persistentVolumeClaim") or {}).get("claimName")
        for v in pod.get("volumes") or []
    }
    mounted = [m for _, c in manifests.containers(pod) for m in c.get("volumeMounts") or []]
    if not any(
        str(m.get("mountPath", "")).rstrip("/") == log_folder and claims.get(m.get("name")) == claim
        for m in mounted
    ):
        message = (
            f"mounts no claim {claim} at {log_folder}, where workers write task logs: the logs of finished "
            "tasks would be unreadable"
        )
        yield _at("airflow", api_server, "spec.template.spec.containers", message)


def _airflow_subprocess(request_file: str) -> None:
    """In a subprocess of the installed Airflow: judge the settings, then run Airflow's own CLI.

    One process does both, so that Airflow starts once.
    """
    request = json.loads(Path(request_file).read_text())
    conf = importlib.import_module("airflow.configuration").conf
    changes = importlib.import_module("airflow.cli.commands.config_command").CONFIGS_CHANGES
    version = importlib.import_module("airflow").__version__
    report = {
        key: message for key in request["keys"] if (message := _option_problem(conf, changes, version, key))
    }
    Path(request["report"]).write_text(json.dumps(report))
    sys.argv = ["airflow", *request["cli"]]
    importlib.import_module("airflow.__main__").main()


def _option_problem(conf: Any, changes: Iterable[Any], version: str, key: str) -> str | None:
    """Why Airflow would not take AIRFLOW__SECTION__KEY, if it would not."""
    section, _, option = key.removeprefix(AIRFLOW_ENV_PREFIX).lower().partition("__")
    for suffix in ("_cmd", "_secret"):  # the command and secrets-backend forms of sensitive options
        if option.endswith(suffix) and (section, option.removesuffix(suffix)) in conf.sensitive_config_values:
            option = option.removesuffix(suffix)
    for change in changes:
        same = (change.config.section, change.config.option) == (section, option)
        if same and not change.default_change and (message := change.message):
            return str(message)
    if (section, option) in conf.inversed_deprecated_options:
        new_section, new_option = conf.inversed_deprecated_options[(section, option)]
        return f"deprecated: use {AIRFLOW_ENV_PREFIX}{new_section.upper()}__{new_option.upper()} instead"
    described = conf.configuration_description
    options = (described.get(section) or {}).get("options") or {}
    if option not in options:
        known = [
            f"{s}__{o}" for s, description in described.items() for o in description.get("options") or {}
        ]
        close = difflib.get_close_matches(f"{section}__{option}", known, n=1)
        hint = f": did you mean {AIRFLOW_ENV_PREFIX}{close[0].upper()}?" if close else ""
        return f"[{section}] {option} is not an option of Airflow {version} or of its providers{hint}"
    if deprecated := options[option].get("version_deprecated"):
        reason = " ".join((options[option].get("deprecation_reason") or "").split())
        return f"deprecated since Airflow {deprecated}" + (f": {reason}" if reason else "")
    return None


# 7. checkov


def check_checkov(target: Target) -> Iterator[Problem]:
    yield from _skip_annotations(target.root)
    checkov = shutil.which("checkov")
    if checkov is None:
        yield Problem("checkov", "", f"checkov is not on PATH: {CHECKOV_INSTALL}")
        return
    checkov = os.path.abspath(checkov)  # PATH may hold relative folders; checkov runs elsewhere
    by_overlay = {rendered.overlay: rendered for rendered in target.rendered}
    if not by_overlay:
        return
    with tempfile.TemporaryDirectory(prefix="airflow-ha-checkov-") as tmp:
        for overlay, rendered in by_overlay.items():
            # The worker pod template goes in too: worker pods are the most numerous of all.
            (Path(tmp) / f"{overlay}.yaml").write_text(yaml.safe_dump_all([m.obj for m in rendered.all]))
        # --skip-download: no network; checkov's own checks need nothing from Prisma Cloud.
        command = [checkov, "--directory", tmp, "--framework", "kubernetes", "--output", "json", "--quiet"]
        command += ["--compact", "--skip-download"]
        result = subprocess.run(
            command, env=python_env(), cwd=tmp, capture_output=True, text=True, check=False
        )
    try:
        output = json.loads(result.stdout)
    except ValueError:
        yield Problem("checkov", "", f"checkov failed: {_tail(result.stderr or result.stdout)}")
        return
    for report in output if isinstance(output, list) else [output]:
        for failed in (report.get("results") or {}).get("failed_checks") or []:
            rendered = by_overlay[Path(failed["file_path"]).stem]
            kind, _, rest = failed["resource"].partition(".")
            name = rest.partition(".")[2]  # kind.namespace.name
            manifest = next((m for m in rendered.all if (m.kind, m.name) == (kind, name)), None)
            keys = (failed.get("check_result") or {}).get("evaluated_keys") or [""]
            field = (
                _field(manifest.obj, [part.strip("[]") for part in keys[0].split("/") if part])
                if manifest
                else ""
            )
            message = (
                f"{failed['check_id']} {failed['check_name']}: fix it, or skip it with the annotation "
                f"checkov.io/skip<N>: {failed['check_id']}=<reason> and a comment beside it that says why"
            )
            problem = Problem(
                "checkov", manifest.source if manifest else "", message, f"{kind}/{name}", field
            )
            yield replace(problem, overlay=rendered.overlay)


def _skip_annotations(root: Path) -> Iterator[Problem]:
    """Every checkov skip names its check and reason, and has a YAML comment beside it."""
    for path in sorted((root / "kube").rglob("*.y*ml")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            annotation = re.match(r"\s*(checkov\.io/skip\d*):\s*(.*)", line)
            if not annotation:
                continue
            file, field = _relative(root, path), f"metadata.annotations.{annotation.group(1)}"
            value = annotation.group(2).split(" #")[0].strip().strip("\"'")
            if not re.fullmatch(r"CKV2?_[A-Z0-9_]+=\S.*", value):
                yield Problem(
                    "checkov", file, f"{value!r} is not CKV_<ID>=<reason>", field=field, line=number
                )
            if " #" not in line and not (number > 1 and lines[number - 2].strip().startswith("#")):
                message = (
                    "a checkov skip needs a YAML comment beside it that says why the check does not apply"
                )
                yield Problem("checkov", file, message, field=field, line=number)


# In this order the subprocesses start first.
CHECK_FUNCTIONS: dict[str, Callable[[Target], Iterable[Problem]]] = {
    "airflow": check_airflow,
    "checkov": check_checkov,
    "kubernetes-validate": check_kubernetes_validate,
    "schemas": check_schemas,
    "wiring": check_wiring,
    "rbac": check_rbac,
    "yamllint": check_yamllint,
}


if __name__ == "__main__":
    _airflow_subprocess(sys.argv[1])
