"""Fixtures for the rehearsal; the image fixtures come from tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

POSTGRES_CONTEXT = Path(__file__).parent / "postgres"


@pytest.fixture(scope="session")
def stack_postgres_image(base_image: str) -> str:
    """PostgreSQL with the official image's env contract, from the registry-free base."""
    tag = "airflow-ha-stack-postgres:15"
    docker.from_env().images.build(
        path=str(POSTGRES_CONTEXT), tag=tag, buildargs={"BASE_IMAGE": base_image}, rm=True
    )
    return tag
