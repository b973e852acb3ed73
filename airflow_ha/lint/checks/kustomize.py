"""Every overlay renders: kustomize builds it, no two objects collide, the pod template parses.

Rendering itself happens before any check (every check reads its output); this check
reports what went wrong in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ... import manifests
from ..problems import Problem
from ..render import Target, objects_by_id, relative

NAME = "kustomize"
RULES = {
    "kustomize/render-failed": "an overlay that kustomize cannot render",
    "kustomize/duplicate-object": "two objects with the same kind, namespace and name",
    "kustomize/pod-template-yaml": "a worker pod template that is not valid YAML",
}


def run(target: Target) -> Iterator[Problem]:
    for overlay_dir in target.overlay_dirs:
        overlay = overlay_dir.name
        duplicates = 0
        for (kind, namespace, name), files in objects_by_id(target.root, overlay_dir).items():
            if len(files) > 1:
                duplicates += 1
                message = (
                    f"{kind} {namespace}/{name} is defined {len(files)} times ({', '.join(files)}), and "
                    "kustomize refuses duplicates: rename or remove one"
                )
                yield Problem(
                    "kustomize/duplicate-object",
                    files[-1],
                    message,
                    f"{kind}/{name}",
                    "metadata.name",
                    None,
                    overlay,
                )
        error = target.unrendered.get(overlay)
        if error and not (duplicates and re.search(r"already registered id", error)):
            file = relative(target.root, overlay_dir)
            yield Problem("kustomize/render-failed", file, error, overlay=overlay)
    for rendered in target.rendered:
        if rendered.template_error:
            message = f"the worker pod template is not valid YAML: {rendered.template_error}"
            yield Problem(
                "kustomize/pod-template-yaml",
                relative(target.root, manifests.BASE_DIR / manifests.POD_TEMPLATE_KEY),
                message,
                f"ConfigMap/{manifests.POD_TEMPLATE_CONFIG_MAP}",
                f"data.{manifests.POD_TEMPLATE_KEY}",
                overlay=rendered.overlay,
            )
