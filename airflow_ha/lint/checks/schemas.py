"""The project's own rules, as yamale schemas in schemas/: one per kind, plus per-component rules."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yamale
import yaml
from yamale.readers import parse_yaml

from ..fields import dotted_parts, field_path
from ..problems import Problem, at
from ..render import COMPONENT_LABEL, REPLICATED_KINDS, Rendered, Target, per_overlay, relative

NAME = "schemas"
RULES = {
    "schemas/unloadable": "a schema in schemas/ that yamale cannot load",
    "schemas/no-schema": "an object of a kind that no schema in schemas/ describes",
    "schemas/kind": "an object that breaks the schema of its kind (labels, probes, resources, pinned "
    "images, security context, restartPolicy)",
    "schemas/component": "a component that breaks its component rule (the replicas of api-server, "
    "scheduler and triggerer)",
    "schemas/okteto-pipeline": "an okteto-pipeline.yml that breaks schemas/okteto-pipeline.yaml",
}


def run(target: Target) -> Iterator[Problem]:
    schema_dir = target.root / "schemas"
    try:
        schema, files = _manifest_schema(schema_dir)
    except (OSError, SyntaxError, ValueError, yaml.YAMLError) as error:
        file = relative(target.root, schema_dir)
        yield Problem("schemas/unloadable", file, f"the schemas do not load: {error}")
        return
    yield from _okteto_pipeline_problems(target.root)

    def schema_problems(rendered: Rendered) -> Iterator[Problem]:
        for manifest in rendered.all:
            if manifest.kind not in schema.includes:
                message = (
                    f"no schema for kind {manifest.kind}: add one to schemas/ and to schemas/manifest.yaml"
                )
                yield at("schemas/no-schema", manifest, "kind", message)
                continue
            rules = {manifest.kind: "schemas/kind"}
            component_rule = f"component/{manifest.labels.get(COMPONENT_LABEL)}"
            if manifest.kind in REPLICATED_KINDS and component_rule in schema.includes:
                rules[component_rule] = "schemas/component"
            for include, rule in rules.items():
                for error in schema.includes[include].validate(manifest.obj, manifest.ref, False).errors:
                    path, message = _split_error(error)
                    field = field_path(manifest.obj, dotted_parts(manifest.obj, path))
                    yield at(rule, manifest, field, f"{message} (rule {include} in {files[include]})")

    yield from per_overlay(target, schema_problems)


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
        message = f"the schema does not load: {error}"
        yield Problem("schemas/unloadable", "schemas/okteto-pipeline.yaml", message)
        return
    for result in yamale.validate(schema, data, strict=True, _raise_error=False):
        for failed in result.errors:
            path, message = _split_error(failed)
            field = field_path(data[0][0], dotted_parts(data[0][0], path))
            message = f"{message} (schemas/okteto-pipeline.yaml)"
            yield Problem("schemas/okteto-pipeline", "okteto-pipeline.yml", message, field=field)
