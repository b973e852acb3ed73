#!/bin/sh
# Entrypoint of the Airflow image. The manifests set only `args`, so this decides
# what runs:
#   api-server | scheduler | dag-processor | triggerer   airflow <role> [ARGS...]
#   migrate [ARGS...]                                    airflow db migrate [ARGS...], once the database answers
#   sync-admin --password-file FILE|-                    the FAB admin user matches FILE's password
#   any command on PATH, or a path                       run unchanged, e.g. `airflow ...`,
#                                                        `python -m ...` (worker pods), `install ...`
# Every branch ends in `exec`, so Airflow replaces this shell and receives the
# signals Kubernetes sends (SIGTERM on shutdown) directly.
set -eu

roles="api-server scheduler dag-processor triggerer migrate sync-admin"

usage() {
    echo "usage: ROLE [ARGS...] or COMMAND [ARGS...]"
    echo "roles: $roles (migrate runs 'airflow db migrate'; sync-admin --help says what it does)"
    echo "any other command on PATH runs unchanged, for example: airflow version"
}

if [ "$#" -eq 0 ]; then
    usage >&2
    exit 64
fi

role=$1
case "$role" in
    api-server | scheduler | dag-processor | triggerer)
        exec airflow "$@"
        ;;
    migrate)
        shift
        # A database that does not answer yet (still starting, or a NetworkPolicy not yet
        # programmed for this new pod) is waited for, a minute at most, before migrating.
        airflow db check --retry 30 --retry-delay 2
        exec airflow db migrate "$@"
        ;;
    sync-admin)
        shift
        exec python /usr/local/lib/airflow-ha/sync_admin.py "$@"
        ;;
    -h | --help | help)
        usage
        exit 0
        ;;
esac

# A path, or a command that PATH resolves, passes through. Anything else is a
# mistyped or unsupported role (e.g. Airflow 2's `webserver`): fail with the list,
# instead of the shell's bare "not found".
case "$role" in
    */*) exec "$@" ;;
esac
if command -v "$role" >/dev/null 2>&1; then
    exec "$@"
fi
echo "bootstrap: unknown role or command '$role'" >&2
usage >&2
exit 64
