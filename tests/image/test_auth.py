"""Sign-in with the FAB auth manager: the image's own processes, against a real PostgreSQL.

The migration Job's two steps (`migrate`, then `sync-admin` with the password file the
airflow-admin Secret mounts), run with the manifest's own arguments. Then two api-server
containers on one database, with the shared secrets of the generated Secret, as the two
replicas run. They prove that a token from one replica is accepted by the other, that a
token signed with any other key is refused, and that FAB's roles are enforced.
"""

from __future__ import annotations

import base64
import re
import secrets as token
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
import yaml
from docker.client import DockerClient

from airflow_ha import REPO_ROOT
from airflow_ha.polling import poll

from .conftest import AIRFLOW_ENV, POD_LIKE, Ran

if TYPE_CHECKING:
    from conftest import PostgresServer  # tests/conftest.py

DAG_ID = "smoke_kubernetes_executor"
ADMIN_MOUNT = "/opt/airflow/admin"
START_TIMEOUT = 240


def airflow_env_file() -> dict[str, str]:
    lines = (REPO_ROOT / "kube" / "base" / "airflow.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def sync_admin_args() -> list[str]:
    """The sync-admin container's arguments, as kube/base/migrate.yaml gives them."""
    job = yaml.safe_load((REPO_ROOT / "kube" / "base" / "migrate.yaml").read_text())
    (container,) = [c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "sync-admin"]
    return list(container["args"])


@pytest.fixture(scope="module")
def environment(postgres_server: PostgresServer) -> dict[str, str]:
    """What every component reads: the auth manager from airflow.env, the database, the shared secrets."""
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": airflow_env_file()["AIRFLOW__CORE__AUTH_MANAGER"],
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_server.url,
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(token.token_bytes(32)).decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": token.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": token.token_urlsafe(32),
        "AIRFLOW__API__WORKERS": "1",
    }


@pytest.fixture(scope="module")
def sync_admin(
    run_image: Callable[..., Ran],
    postgres_server: PostgresServer,
    environment: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], Ran]:
    """Run the migration Job's sync-admin container with a Secret-like volume holding ``password``."""
    migrated = run_image("migrate", environment=environment, network=postgres_server.network)
    assert migrated.exit_code == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]

    # What the manifest gives it: the config (the auth manager) and the database, no other secret.
    given = {
        key: environment[key]
        for key in ("AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    }

    def run(password: str) -> Ran:
        folder = tmp_path_factory.mktemp("admin-secret")
        folder.chmod(0o755)
        for key, value in (("username", "admin"), ("password", password)):
            (folder / key).write_text(value)
            (folder / key).chmod(0o644)
        return run_image(
            *sync_admin_args(),
            environment=given,
            network=postgres_server.network,
            volumes={str(folder): {"bind": ADMIN_MOUNT, "mode": "ro"}},
        )

    return run


@pytest.fixture(scope="module")
def admin_password(sync_admin: Callable[[str], Ran]) -> str:
    password = token.token_urlsafe(16)
    created = sync_admin(password)
    assert created.exit_code == 0, created.stdout[-3000:] + created.stderr[-3000:]
    assert "sync-admin: user 'admin' created with the Admin role" in created.stdout
    return password


@pytest.fixture(scope="module")
def api_servers(
    docker_client: DockerClient,
    airflow_image: str,
    run_image: Callable[..., Ran],
    postgres_server: PostgresServer,
    environment: dict[str, str],
    admin_password: str,
) -> Iterator[list[str]]:
    """The URLs of two api-server replicas on one database, with the DAGs of dags/ serialized."""
    serialized = run_image(
        "airflow", "dags", "reserialize", environment=environment, network=postgres_server.network
    )
    assert serialized.exit_code == 0, serialized.stdout[-3000:] + serialized.stderr[-3000:]
    containers = [
        docker_client.containers.run(
            airflow_image,
            ["api-server"],
            detach=True,
            environment={**AIRFLOW_ENV, **environment},
            network=postgres_server.network,
            ports={"8080/tcp": ("127.0.0.1", None)},
            **POD_LIKE,
        )
        for _ in range(2)
    ]
    try:
        urls = []
        for container in containers:
            container.reload()
            port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
            urls.append(f"http://127.0.0.1:{port}")
        for url, container in zip(urls, containers, strict=True):
            poll(
                lambda url=url, container=container: serving(url, container),
                timeout=START_TIMEOUT,
                every=2,
                timed_out=lambda container=container: AssertionError(
                    f"api-server not serving after {START_TIMEOUT} s:\n{container.logs().decode()[-3000:]}"
                ),
            )
        yield urls
    finally:
        for container in containers:
            container.remove(force=True)


def serving(url: str, container: Any) -> bool | None:
    container.reload()
    if container.status == "exited":
        raise AssertionError(f"api-server exited:\n{container.logs().decode()[-3000:]}")
    try:
        return httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200 or None
    except httpx.HTTPError:
        return None


def sign_in(url: str, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=30)


def bearer(url: str, username: str, password: str) -> dict[str, str]:
    response = sign_in(url, username, password)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def trigger(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None}, headers=headers, timeout=30
    )


def test_sync_admin_changes_nothing_on_a_second_run(
    sync_admin: Callable[[str], Ran], admin_password: str
) -> None:
    again = sync_admin(admin_password)

    assert again.exit_code == 0, again.stderr[-3000:]
    assert "sync-admin: user 'admin' unchanged" in again.stdout
    assert admin_password not in again.stdout + again.stderr


def test_a_token_from_one_replica_is_accepted_by_the_other(
    api_servers: list[str], admin_password: str
) -> None:
    first, second = api_servers
    for issuer, reader in ((first, second), (second, first)):
        listed = httpx.get(
            f"{reader}/api/v2/dags", headers=bearer(issuer, "admin", admin_password), timeout=30
        )
        assert listed.status_code == 200, listed.text


def test_a_token_signed_with_another_key_is_refused(api_servers: list[str], admin_password: str) -> None:
    """The replicas check the signature, so the shared JWT secret is what makes the test above pass."""
    first, second = api_servers
    issued = bearer(first, "admin", admin_password)["Authorization"].removeprefix("Bearer ")
    header = jwt.get_unverified_header(issued)
    claims = jwt.decode(issued, options={"verify_signature": False})
    forged = jwt.encode(
        claims, token.token_urlsafe(64), algorithm=header["alg"], headers={"kid": header.get("kid")}
    )

    refused = httpx.get(f"{second}/api/v2/dags", headers={"Authorization": f"Bearer {forged}"}, timeout=30)

    # Airflow answers a token that fails its signature check with 403, an expired one with 401.
    assert refused.status_code == 403, refused.text
    assert "Invalid JWT token" in refused.text


def browser_sign_in(url: str, username: str, password: str) -> httpx.Cookies:
    """The UI's sign-in form, as a browser sends it: its CSRF token, then the form."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        form = browser.get("/auth/login/")
        assert form.status_code == 200, form.text
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form.text)
        assert match, form.text
        signed_in = browser.post(
            "/auth/login/",
            data={"username": username, "password": password, "csrf_token": match.group(1)},
        )
        assert signed_in.status_code == 302, signed_in.text
        assert "/auth/login" not in signed_in.headers["location"], signed_in.headers
        return browser.cookies


def test_a_browser_session_from_one_replica_is_accepted_by_the_other(
    api_servers: list[str], admin_password: str
) -> None:
    """The session cookie ([api] secret_key) opens FAB's own pages; the _token cookie (the JWT
    secret) the REST API the UI calls. Each was issued by one replica and is read by the other."""
    first, second = api_servers
    cookies = browser_sign_in(first, "admin", admin_password)
    assert {"session", "_token"} <= set(cookies.keys()), cookies

    with httpx.Client(base_url=second, cookies=cookies, timeout=30) as browser:
        users = browser.get("/auth/users/list/")
        dags = browser.get("/api/v2/dags")
    assert users.status_code == 200, (users.status_code, users.headers, users.text[-2000:])
    assert "admin" in users.text
    assert dags.status_code == 200, dags.text

    with httpx.Client(base_url=second, timeout=30) as stranger:
        assert stranger.get("/auth/users/list/").status_code == 302  # to the sign-in page


def test_the_admin_triggers_a_dag(api_servers: list[str], admin_password: str) -> None:
    url = api_servers[0]
    triggered = trigger(url, bearer(url, "admin", admin_password))
    assert triggered.status_code == 200, triggered.text
    assert triggered.json()["dag_id"] == DAG_ID


def test_a_viewer_lists_dags_and_is_refused_a_trigger(
    run_image: Callable[..., Ran],
    postgres_server: PostgresServer,
    environment: dict[str, str],
    api_servers: list[str],
) -> None:
    password = token.token_urlsafe(16)
    # The README's `kubectl exec` command, with --password where the README's asks on a terminal.
    user = [
        "--username",
        "viewer",
        "--email",
        "viewer@example.invalid",
        "--firstname",
        "V",
        "--lastname",
        "O",
    ]
    created = run_image(
        "airflow", "users", "create", "--role", "Viewer", *user, "--password", password,
        environment=environment, network=postgres_server.network,
    )  # fmt: skip
    assert created.exit_code == 0, created.stdout[-3000:] + created.stderr[-3000:]
    url = api_servers[1]
    headers = bearer(url, "viewer", password)

    listed = httpx.get(f"{url}/api/v2/dags", headers=headers, timeout=30)
    refused = trigger(url, headers)

    assert listed.status_code == 200, listed.text
    assert DAG_ID in [dag["dag_id"] for dag in listed.json()["dags"]]
    assert refused.status_code == 403, refused.text


def test_a_wrong_password_gets_401(api_servers: list[str]) -> None:
    refused = sign_in(api_servers[0], "admin", "not-the-password")
    assert refused.status_code == 401, refused.text


def test_a_new_password_replaces_the_old_one(
    sync_admin: Callable[[str], Ran], api_servers: list[str], admin_password: str
) -> None:
    """What `invoke admin-password --rotate` runs, once the Secret holds the new password."""
    rotated = token.token_urlsafe(16)
    try:
        reset = sync_admin(rotated)
        assert reset.exit_code == 0, reset.stderr[-3000:]
        assert "sync-admin: user 'admin' password reset" in reset.stdout
        assert rotated not in reset.stdout + reset.stderr
        assert sign_in(api_servers[1], "admin", rotated).status_code == 201
        assert sign_in(api_servers[1], "admin", admin_password).status_code == 401
    finally:
        assert sync_admin(admin_password).exit_code == 0


def test_the_smoke_client_signs_in_as_users_do(api_servers: list[str], admin_password: str) -> None:
    from airflow_ha.smoke import AirflowAPI

    with AirflowAPI(api_servers[0], "admin", admin_password) as api:
        dags = api.get("/api/v2/dags")
    assert DAG_ID in [dag["dag_id"] for dag in dags["dags"]]


def psql(postgres_server: PostgresServer, statement: str) -> None:
    done = postgres_server.container.exec_run(
        [
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            postgres_server.user,
            "-d",
            postgres_server.database,
            "-c",
            statement,
        ]
    )
    assert done.exit_code == 0, done.output.decode()


def test_sync_admin_restores_the_admin_role_and_reactivates_the_admin(
    sync_admin: Callable[[str], Ran], postgres_server: PostgresServer, admin_password: str
) -> None:
    admin = "(SELECT id FROM ab_user WHERE username = 'admin')"
    psql(postgres_server, f"DELETE FROM ab_user_role WHERE user_id = {admin}")
    psql(postgres_server, "UPDATE ab_user SET active = false WHERE username = 'admin'")

    repaired = sync_admin(admin_password)

    assert repaired.exit_code == 0, repaired.stdout[-3000:] + repaired.stderr[-3000:]
    assert "sync-admin: user 'admin' Admin role restored, reactivated" in repaired.stdout
    assert "sync-admin: user 'admin' unchanged" in sync_admin(admin_password).stdout


def test_sync_admin_names_a_renamed_admin_that_holds_the_email(
    sync_admin: Callable[[str], Ran], postgres_server: PostgresServer, admin_password: str
) -> None:
    psql(postgres_server, "UPDATE ab_user SET username = 'root' WHERE username = 'admin'")
    try:
        refused = sync_admin(admin_password)
    finally:
        psql(postgres_server, "UPDATE ab_user SET username = 'admin' WHERE username = 'root'")

    assert refused.exit_code != 0
    assert "user 'root' has the admin's email admin@airflow-ha.invalid" in refused.stderr, refused.stderr
    assert "scrypt" not in refused.stdout + refused.stderr  # no password hash from the database error
