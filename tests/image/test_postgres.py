"""`airflow db migrate`, through the image's migrate role, against a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .conftest import Ran, execute

if TYPE_CHECKING:
    from conftest import PostgresServer  # tests/conftest.py


def test_migrate_role_migrates_postgresql(
    run_image: Callable[..., Ran], postgres_server: PostgresServer
) -> None:
    database = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_server.url}

    migrated = run_image("migrate", environment=database, network=postgres_server.network)
    assert migrated.exit_code == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]

    # What the components' wait-for-migrations init containers run.
    checked = run_image(
        "airflow",
        "db",
        "check-migrations",
        "--migration-wait-timeout=10",
        environment=database,
        network=postgres_server.network,
    )
    assert checked.exit_code == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    revision = execute(
        postgres_server.container,
        "psql",
        "--username",
        postgres_server.user,
        "--dbname",
        postgres_server.database,
        "--tuples-only",
        "--no-align",
        "--command",
        "SELECT version_num FROM alembic_version",
    )
    assert revision.exit_code == 0 and revision.stdout.strip(), revision.stderr
