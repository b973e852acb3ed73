"""Field paths as the report shows them, with list items by name:
spec.template.spec.containers[base].image; and the pods an object describes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .. import manifests
from ..manifests import Manifest


def field_path(obj: Any, parts: Iterable[str | int]) -> str:
    """The path of ``parts`` in ``obj``, naming list items by their name where they have one."""
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


def dotted_parts(obj: Any, dotted: str) -> list[str | int]:
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


def get(obj: Any, dotted: str) -> Any:
    """The value at a dotted path of plain keys, or None."""
    for key in dotted.split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def pods(manifest: Manifest) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    """(field path, pod spec, pod labels) of every pod an object describes."""
    if manifest.kind == "Pod":
        yield "spec", manifest.obj.get("spec") or {}, manifest.labels
        return
    for path, spec in manifests.pod_specs(manifest):
        yield path, spec, get(manifest.obj, f"{path.removesuffix('.spec')}.metadata.labels") or {}


def pod(manifest: Manifest) -> dict[str, Any]:
    """The spec of the (first) pod an object describes, or {}."""
    return next((spec for _, spec, _ in pods(manifest)), {})
