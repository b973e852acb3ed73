"""The generated Secrets in the cluster: created when missing, never touched when present.

What they hold is generated_secrets' business; this module only reads and creates them,
and never prints a value.
"""

from __future__ import annotations

import base64

from kubernetes.client.exceptions import ApiException

from . import PART_OF, PART_OF_LABEL, admin_password, kubeapi
from . import generated_secrets as generated
from .console import Failure, console
from .kubeapi import Kube, api_message


def ensure(kube: Kube, namespace: str) -> list[str]:
    """Create the generated Secrets that are missing; never touch existing ones. Returns the names created."""
    existing: dict[str, dict[str, str]] = {}
    for name, keys in generated.GENERATED_SECRETS.items():
        secret = kubeapi.read(
            kube, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}}
        )
        if secret is None:
            continue
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        lacking = [k for k in keys if k not in data]
        if lacking:
            raise Failure(
                f"Secret/{name} in namespace {namespace!r} lacks the keys {', '.join(lacking)}. Add them, or "
                f"delete the Secret to generate a new one (a new value breaks what used the old one)"
            )
        existing[name] = data
    created = []
    for name, values in generated.generate_missing(existing).items():
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/name": "airflow",
                    "app.kubernetes.io/component": "secrets",
                    PART_OF_LABEL: PART_OF,
                },
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
        }
        try:
            kubeapi.create(kube, body)
        except ApiException as error:
            raise Failure(
                f"cannot create Secret/{name} in namespace {namespace!r}: {api_message(error)}"
            ) from None
        created.append(name)
    return created


def print_created(created: list[str], context: str, namespace: str) -> None:
    if created:
        console.print(f"[green]✓[/] generated Secrets {', '.join(created)} (values are never printed)")
    else:
        console.print("[green]✓[/] generated Secrets exist; kept as they are")
    console.print(f"  admin password: {admin_password.read_command(context, namespace)}", soft_wrap=True)
