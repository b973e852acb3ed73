"""The project's CLI run against the control plane, with the requests each run made."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plane import ControlPlane

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
WRITES = ("create", "update", "patch", "delete", "deletecollection")


@dataclass(frozen=True)
class Request:
    """One request, as the API server's audit log records it."""

    user: str
    verb: str
    resource: str  # with its subresource, as "pods/log"; "" for discovery
    namespace: str
    code: int
    dry_run: bool

    @classmethod
    def of(cls, event: dict[str, Any]) -> Request:
        target = event.get("objectRef") or {}
        resource = "/".join(filter(None, (target.get("resource", ""), target.get("subresource", ""))))
        return cls(
            user=event["user"]["username"],
            verb=event["verb"],
            resource=resource,
            namespace=target.get("namespace", ""),
            code=int((event.get("responseStatus") or {}).get("code", 0)),
            dry_run="dryRun=All" in event.get("requestURI", ""),
        )

    @property
    def stored(self) -> bool:
        """A write that changed what the cluster holds: no dry run, no access review."""
        return self.verb in WRITES and not self.dry_run and self.resource != "selfsubjectaccessreviews"


@dataclass
class Run:
    """One `invoke` run: its output, and the requests the API server answered meanwhile."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    audit: list[Request]

    @property
    def output(self) -> str:
        return f"$ invoke {' '.join(self.args)}\n{self.stdout}\n{self.stderr}"

    def stored_by(self, user: str) -> list[Request]:
        return [request for request in self.audit if request.user == user and request.stored]


def deploy_args(overlay: str, namespace: str, context: str, tag: str) -> tuple[str, ...]:
    """`invoke deploy` of an overlay with an image that exists, and no wait for rollouts, which
    no node here would run."""
    return (
        "deploy",
        "--overlay",
        overlay,
        "--skip-build",
        "--tag",
        tag,
        "--context",
        context,
        "--namespace",
        namespace,
        "--no-wait",
    )


def invoke(plane: ControlPlane, kubeconfig: Path, *args: str) -> Run:
    """`invoke ARGS` from the repository, with ``kubeconfig``. No Docker daemon answers at
    DOCKER_HOST: a deploy with --skip-build to a context that is not kind must not need one
    (Okteto's runner has none)."""
    command = shutil.which("invoke")
    assert command, "invoke is not installed in this environment"
    seen = len(plane.audit_events())
    result = subprocess.run(
        [command, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "COLUMNS": "250",
            "DOCKER_HOST": f"unix://{kubeconfig.parent / 'no-docker.sock'}",
        },
    )
    requests = [Request.of(event) for event in plane.audit_events()[seen:]]
    return Run(args, result.returncode, result.stdout, result.stderr, requests)
