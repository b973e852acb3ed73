"""The Secrets that `invoke deploy` generates: their names, keys and values.

The manifests only name these Secrets; no value is ever committed, baked into the
image or printed. Once created they are never regenerated, because a new fernet
key, JWT secret or database password would break running tasks and stored data.
The lint gate reads GENERATED_SECRETS to check that every reference resolves.
"""

from __future__ import annotations

import base64
import os
import secrets as token

ADMIN_USERNAME = "admin"
DATABASE_HOST = "airflow-postgres"
DATABASE_PORT = 5432
DATABASE_NAME = "airflow"
DATABASE_USER = "airflow"

AIRFLOW_SECRETS = "airflow-secrets"
METADATA_SECRET = "airflow-metadata"
POSTGRES_SECRET = "airflow-postgres"
ADMIN_SECRET = "airflow-admin"

GENERATED_SECRETS: dict[str, tuple[str, ...]] = {
    # Shared by every component: a mismatch breaks JWT checks and encrypted connections.
    AIRFLOW_SECRETS: (
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
    ),
    # One Secret holds the database URL, so an external database replaces just this.
    METADATA_SECRET: ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",),
    POSTGRES_SECRET: ("password",),
    # The migration Job makes the FAB admin user match "password"; people and `invoke smoke`
    # sign in with it.
    ADMIN_SECRET: ("username", "password"),
}


def database_url(password: str, host: str = DATABASE_HOST, port: int = DATABASE_PORT) -> str:
    return f"postgresql+psycopg2://{DATABASE_USER}:{password}@{host}:{port}/{DATABASE_NAME}"


def admin_secret(password: str) -> dict[str, str]:
    return {"username": ADMIN_USERNAME, "password": password}


def generate_missing(existing: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The Secrets to create: every one of GENERATED_SECRETS not in ``existing``.

    Values derived from another Secret (the database URL from the PostgreSQL
    password) reuse the existing value, so a partial set never gets out of step.
    """
    missing: dict[str, dict[str, str]] = {}
    if AIRFLOW_SECRETS not in existing:
        missing[AIRFLOW_SECRETS] = {
            # The format of cryptography's Fernet.generate_key().
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": token.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": token.token_urlsafe(32),
        }
    postgres = existing.get(POSTGRES_SECRET)
    if postgres is None:
        # URL-safe characters, so the password needs no quoting inside the database URL.
        postgres = missing[POSTGRES_SECRET] = {"password": token.token_urlsafe(24)}
    if METADATA_SECRET not in existing:
        missing[METADATA_SECRET] = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(postgres["password"])}
    if ADMIN_SECRET not in existing:
        missing[ADMIN_SECRET] = admin_secret(token.token_urlsafe(16))
    return missing
