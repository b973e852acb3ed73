"""What the checks read: every overlay rendered by kustomize, with the worker pod template inside it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .. import REPO_ROOT, manifests
from ..console import Failure
from ..manifests import Manifest
from .problems import Problem

REPLICATED_KINDS = {"Deployment", "StatefulSet"}
COMPONENT_LABEL = "app.kubernetes.io/component"


@dataclass
class Rendered:
    """One overlay as kustomize renders it, and the worker pod template inside it."""

    overlay: str
    objects: list[Manifest]
    template: Manifest | None
    # Why the pod template in the rendered ConfigMap does not parse, if it does not.
    template_error: str = ""

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
    """What `invoke lint` checks: the folder it reads, and each overlay rendered."""

    root: Path
    versions: tuple[str, ...]
    rendered: list[Rendered]
    overlay_dirs: list[Path]
    # The overlays kustomize refused to render, and its error for each.
    unrendered: dict[str, str] = field(default_factory=dict)


def per_overlay(target: Target, function: Callable[[Rendered], Iterable[Problem]]) -> Iterator[Problem]:
    """The problems of ``function`` on each rendered overlay, each marked with its overlay."""
    for rendered in target.rendered:
        for problem in function(rendered):
            yield replace(problem, overlay=rendered.overlay)


def overlay_dirs(root: Path, names: Iterable[str] | None = None) -> list[Path]:
    overlays = root / "kube" / "overlays"
    if names:
        return [overlays / name for name in names]
    return sorted(path.parent for path in overlays.glob("*/kustomization.yaml"))


def render_target(root: Path, overlays: Iterable[str] | None, versions: Iterable[str]) -> Target:
    """Render every overlay (or the ones named) of the repository at ``root``, at once."""
    root = root.resolve()
    dirs = overlay_dirs(root, overlays)
    target = Target(root, tuple(dict.fromkeys(versions)), [], dirs)
    with ThreadPoolExecutor(max_workers=max(1, len(dirs))) as pool:
        for overlay_dir, result in zip(dirs, pool.map(lambda path: render(root, path), dirs), strict=True):
            if isinstance(result, Rendered):
                target.rendered.append(result)
            else:
                target.unrendered[overlay_dir.name] = result
    return target


def render(root: Path, overlay_dir: Path) -> Rendered | str:
    """The overlay rendered, its objects' sources relative to ``root``; or kustomize's error."""
    try:
        objects = manifests.render(overlay_dir, kube_dir=root / "kube")
    except Failure as failure:
        return str(failure).removeprefix(f"{manifests.relative(overlay_dir)}: ")
    objects = [Manifest(relative(root, Path(m.source)), m.obj) for m in objects]
    try:
        return Rendered(overlay_dir.name, objects, manifests.pod_template(objects))
    except yaml.YAMLError as error:
        return Rendered(overlay_dir.name, objects, None, template_error=str(error))


def relative(root: Path, path: Path) -> str:
    """A path as the report shows it: relative to the linted root (or to the repository)."""
    absolute = path if path.is_absolute() else REPO_ROOT / path
    for base in (root, REPO_ROOT):
        if absolute.resolve().is_relative_to(base):
            return str(absolute.resolve().relative_to(base))
    return str(path)


def kustomize_files(directory: Path, namespace: str | None = None) -> Iterator[tuple[Path, str | None]]:
    """Every resource file an overlay builds from, with the namespace kustomize gives its objects."""
    try:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return  # kustomize and yamllint report it
    namespace = namespace or kustomization.get("namespace")  # the outer kustomization's wins
    for resource in kustomization.get("resources") or []:
        path = (directory / resource).resolve()
        if path.is_dir():
            yield from kustomize_files(path, namespace)
        elif path.is_file():
            yield path, namespace


def objects_by_id(root: Path, overlay_dir: Path) -> dict[tuple[str, str, str], list[str]]:
    """The files that define each (kind, namespace, name), read before kustomize."""
    defined: dict[tuple[str, str, str], list[str]] = {}
    for path, namespace in kustomize_files(overlay_dir):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue  # yamllint names the line
        for obj in documents:
            if isinstance(obj, dict) and obj.get("kind"):
                meta = obj.get("metadata") or {}
                key = (obj["kind"], namespace or meta.get("namespace") or "default", str(meta.get("name")))
                defined.setdefault(key, []).append(relative(root, path))
    return defined
