"""Every object, the worker pod template included, is valid for the Kubernetes API, strictly
(unknown fields fail), at the oldest and the newest Kubernetes version supported."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils

from .. import cache
from ..fields import field_path
from ..problems import Problem, at
from ..render import Rendered, Target, per_overlay

NAME = "kubernetes-validate"
INVALID = "kubernetes-validate/invalid"
UNKNOWN_API_VERSION = "kubernetes-validate/unknown-api-version"
UNSUPPORTED_VERSION = "kubernetes-validate/unsupported-kubernetes-version"
RULES = {
    INVALID: "a field the Kubernetes API rejects: unknown, misspelt, or of the wrong type",
    UNKNOWN_API_VERSION: "a kind in an apiVersion that Kubernetes does not serve",
    UNSUPPORTED_VERSION: "lint.kubernetes_oldest or _newest in invoke.yaml names a version "
    "kubernetes-validate has no schemas for",
}


def run(target: Target) -> Iterator[Problem]:
    return iter(cache.cached(NAME, cache_key(target), lambda: _run(target)))


def cache_key(target: Target) -> str:
    """Everything the check reads: the rendered objects, the versions, its schemas and the gate's code."""
    versions = cache.package_versions("kubernetes-validate")
    return cache.digest(str(target.root), cache.rendered(target), versions, cache.gate_code())


def _run(target: Target) -> Iterator[Problem]:
    validated: dict[str, list[tuple[str, str, str]]] = {}  # the overlays share most objects
    unsupported = [version for version in target.versions if version not in supported(target.versions)]
    if unsupported:
        message = (
            f"kubernetes-validate {metadata.version('kubernetes-validate')} has no schemas for Kubernetes "
            f"{', '.join(unsupported)}: set lint.kubernetes_oldest and lint.kubernetes_newest in invoke.yaml "
            f"to versions it has ({_known_range()})"
        )
        yield Problem(UNSUPPORTED_VERSION, "invoke.yaml", message, field="lint")

    def api_problems(rendered: Rendered) -> Iterator[Problem]:
        for manifest in rendered.all:
            key = json.dumps(manifest.obj, sort_keys=True)
            if key not in validated:
                validated[key] = api_errors(manifest.obj, target.versions)
            for rule, field, message in validated[key]:
                yield at(rule, manifest, field, message)

    yield from per_overlay(target, api_problems)


def supported(versions: Iterable[str]) -> list[str]:
    """The versions (major.minor) that kubernetes-validate has schemas for."""
    known = kubernetes_validate.utils.all_versions()
    return [version for version in versions if any(k.startswith(f"{version}.") for k in known)]


def _known_range() -> str:
    known = kubernetes_validate.utils.all_versions()
    return f"{known[0].rsplit('.', 1)[0]} to {known[-1].rsplit('.', 1)[0]}"


def api_errors(obj: dict[str, Any], versions: Iterable[str]) -> list[tuple[str, str, str]]:
    """(rule, field, message) of what the API server of each supported version would reject."""
    errors: dict[tuple[str, str, str], list[str]] = {}
    for version in supported(versions):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.setdefault((INVALID, field_path(obj, error.path), error.message), []).append(version)
        except kubernetes_validate.SchemaNotFoundError:
            message = (
                f"Kubernetes has no kind {obj.get('kind')} in apiVersion {obj.get('apiVersion')}: "
                "use the apiVersion that `kubectl api-resources` lists for it"
            )
            errors.setdefault((UNKNOWN_API_VERSION, "apiVersion", message), []).append(version)
    return [
        (rule, field, f"{message} (Kubernetes {', '.join(found)})")
        for (rule, field, message), found in errors.items()
    ]
