"""Make the FAB auth manager's admin user match the airflow-admin Secret.

Creates the user with the Admin role when it is missing; resets its password, gives back
its Admin role or reactivates it when any of them differs; otherwise writes nothing, so
running it in every migration Job is safe. The username and password come from files (the
Secret's volume) or, with ``--password-file -``, one line of standard input, so that the
password never appears in a command line, an API server's audit log or this script's output.
"""

from __future__ import annotations

import argparse
import sys

ADMIN_ROLE = "Admin"


def read_line(path: str) -> str:
    if path == "-":
        return sys.stdin.readline().rstrip("\n")
    with open(path, encoding="utf-8") as file:
        return file.read().rstrip("\n")


def fail(message: str) -> SystemExit:
    return SystemExit(f"sync-admin: {message}")


def sync(username: str, password: str) -> str:
    """What was done to the user: created, or what was changed, or unchanged."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from airflow.providers.fab.auth_manager.security_manager.override import FabException
    from airflow.utils.providers_configuration_loader import providers_configuration_loaded
    from werkzeug.security import check_password_hash

    @providers_configuration_loaded
    def run() -> str:
        with get_application_builder() as appbuilder:
            manager = appbuilder.sm
            role = manager.find_role(ADMIN_ROLE)
            if role is None:
                raise fail(f"the FAB role {ADMIN_ROLE!r} does not exist: run `airflow db migrate` first")
            user = manager.find_user(username=username)
            if user is None:
                email = f"{username}@airflow-ha.invalid"
                holder = manager.find_user(email=email)
                if holder is not None:
                    raise fail(
                        f"user {holder.username!r} has the admin's email {email}, so {username!r} cannot be "
                        f"created: rename {holder.username!r} back to {username!r}, or delete it"
                    )
                try:
                    manager.add_user(username, "Airflow", "Admin", email, role, password)
                except FabException as error:
                    # Only the type: the chained database error carries the password's hash.
                    raise fail(
                        f"FAB could not create the user {username!r} ({type(error).__name__})"
                    ) from None
                return "created with the Admin role"
            done = []
            if not user.password or not check_password_hash(user.password, password):
                if not manager.reset_password(user.id, password):
                    raise fail(f"FAB could not reset the password of {username!r}; its log says why")
                done.append("password reset")
            if role not in user.roles or not user.active:
                if role not in user.roles:
                    user.roles.append(role)
                    done.append("Admin role restored")
                if not user.active:
                    user.active = True
                    done.append("reactivated")
                if not manager.update_user(user):
                    raise fail(f"FAB could not update the user {username!r}; its log says why")
            return ", ".join(done) or "unchanged"

    return run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sync-admin", description=__doc__.splitlines()[0])
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--username", default="admin")
    names.add_argument("--username-file", help="the file that holds the username")
    parser.add_argument(
        "--password-file", required=True, help="the file that holds the password; - reads one line of stdin"
    )
    args = parser.parse_args(argv)
    try:
        username = read_line(args.username_file) if args.username_file else args.username
        password = read_line(args.password_file)
    except OSError as error:
        print(f"sync-admin: cannot read the credentials: {error}", file=sys.stderr)
        return 1
    if not username or not password:
        print("sync-admin: the username or the password is empty", file=sys.stderr)
        return 1
    print(f"sync-admin: user {username!r} {sync(username, password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
