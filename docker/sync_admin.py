"""Make the FAB auth manager's admin user match the password of the airflow-admin Secret.

Creates the user with the Admin role when it is missing, resets its password when it
differs, gives it back the Admin role if someone took it away, and otherwise writes
nothing, so running it on every deploy is safe. The password comes from a file (the
Secret's volume) or, with ``--password-file -``, one line of standard input, so that
it never appears in a command line, an API server's audit log or this script's output.
"""

from __future__ import annotations

import argparse
import sys

ADMIN_ROLE = "Admin"


def read_password(path: str) -> str:
    if path == "-":
        return sys.stdin.readline().rstrip("\n")
    with open(path, encoding="utf-8") as file:
        return file.read().rstrip("\n")


def sync(username: str, password: str) -> str:
    """What was done to the user: created, password reset, role restored or unchanged."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from airflow.utils.providers_configuration_loader import providers_configuration_loaded
    from werkzeug.security import check_password_hash

    @providers_configuration_loaded
    def run() -> str:
        with get_application_builder() as appbuilder:
            manager = appbuilder.sm
            role = manager.find_role(ADMIN_ROLE)
            if role is None:
                raise SystemExit(
                    f"sync-admin: the FAB role {ADMIN_ROLE!r} does not exist: run `airflow db migrate` first"
                )
            user = manager.find_user(username=username)
            if user is None:
                if not manager.add_user(
                    username, "Airflow", "Admin", f"{username}@airflow-ha.invalid", role, password
                ):
                    raise SystemExit(f"sync-admin: FAB could not create the user {username!r}")
                return "created with the Admin role"
            done = []
            if not check_password_hash(user.password, password):
                manager.reset_password(user.id, password)
                done.append("password reset")
            if role not in user.roles:
                user.roles.append(role)
                manager.update_user(user)
                done.append("Admin role restored")
            return ", ".join(done) or "unchanged"

    return run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sync-admin", description=__doc__.splitlines()[0])
    parser.add_argument("--username", default="admin")
    parser.add_argument(
        "--password-file", required=True, help="the file that holds the password; - reads one line of stdin"
    )
    args = parser.parse_args(argv)
    try:
        password = read_password(args.password_file)
    except OSError as error:
        print(f"sync-admin: cannot read the password: {error}", file=sys.stderr)
        return 1
    if not password:
        print(f"sync-admin: {args.password_file} holds no password", file=sys.stderr)
        return 1
    print(f"sync-admin: user {args.username!r} {sync(args.username, password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
