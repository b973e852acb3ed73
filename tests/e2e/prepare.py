"""What `invoke deploy` on kind needs that a machine with no registry cannot pull, built here.

- the kind node image, from source (tests/kind/nodeimage.py), with kind and kubectl;
- the Airflow image's base, by debootstrap (`invoke base-image`), instead of python:3.11-slim;
- PostgreSQL 17 for the manifests' ``postgres:17.6-bookworm``: Debian trixie's postgresql-17
  on the same entrypoint contract (docker/postgres), tagged with the manifests' name so that
  deploy loads it into the nodes as it would a pulled image. It is a stand-in: another minor
  release (trixie's) on another Debian. A machine that has the real image keeps it.

``python -m tests.e2e.prepare`` builds what is missing and prints, one per line, the
settings that point `invoke` at them: ``INVOKE_KIND_NODE_IMAGE=...``, ``INVOKE_IMAGE_BASE=...``
and ``PATH_PREFIX=...`` (the folder with kind and kubectl).
"""

from __future__ import annotations

import sys

from docker.errors import ImageNotFound

from airflow_ha import REPO_ROOT, image, manifests
from airflow_ha.console import Failure
from tests.kind import nodeimage

AIRFLOW_BASE = "airflow-ha-base:bookworm"
POSTGRES_BASE = "airflow-ha-base:trixie"
POSTGRES_MAJOR = "17"


def ensure_base(name: str, suite: str) -> str:
    try:
        image.docker_client().images.get(name)
    except ImageNotFound:
        image.build_base_image(name=name, suite=suite, mirror=None)
    return name


def postgres_reference() -> str:
    """The PostgreSQL image the kind overlay runs, read from the manifests."""
    found = {i for i in manifests.images(manifests.render("kind")) if i.startswith("postgres:")}
    if len(found) != 1:
        raise Failure(f"the kind overlay should run one postgres image, not {sorted(found) or 'none'}")
    return found.pop()


def ensure_postgres() -> str:
    reference = postgres_reference()
    if not reference.startswith(f"postgres:{POSTGRES_MAJOR}."):
        raise Failure(f"the manifests run {reference}; this stand-in is PostgreSQL {POSTGRES_MAJOR}")
    if image.local_images([reference]):
        return reference
    ensure_base(POSTGRES_BASE, "trixie")
    with image.build_context(REPO_ROOT / "docker" / "postgres", "Dockerfile") as context:
        image.build(
            context,
            reference,
            buildargs={"BASE_IMAGE": POSTGRES_BASE, "PG_MAJOR": POSTGRES_MAJOR},
            client=image.docker_client(),
        )
    return reference


def main() -> int:
    try:
        node, _, tools = nodeimage.ensure()
        base = ensure_base(AIRFLOW_BASE, "bookworm")
        postgres = ensure_postgres()
    except (Failure, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"built or found {node}, {base} and {postgres}", file=sys.stderr)
    print(f"INVOKE_KIND_NODE_IMAGE={node}")
    print(f"INVOKE_IMAGE_BASE={base}")
    print(f"PATH_PREFIX={tools}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
