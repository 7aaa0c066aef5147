#!/usr/bin/env bash
# Entrypoint of optasia/airflow: a passthrough to `airflow`, plus an optional
# wait-for-the-database and migration step.
#
#   <image> version | scheduler | api-server | celery worker | ...   -> airflow <args>
#   <image> airflow <args> | bash | sh | python | python3 | /abs/path ...   -> run as given
#   <image>   (no arguments)                                          -> airflow --help
#
# Environment:
#   _AIRFLOW_DB_MIGRATE=true     before the command: wait until the metadata database
#                                answers (airflow db check), then `airflow db migrate`.
#                                Set it on ONE service only (e.g. an init container).
#   _AIRFLOW_WAIT_FOR_DB=true    only wait for the database (no migration).
#   CONNECTION_CHECK_MAX_COUNT   database checks before giving up (default 30; 0 = no wait)
#   CONNECTION_CHECK_SLEEP_TIME  seconds between checks (default 3)
#   AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (or ..._CMD / _SECRET) and every other AIRFLOW__*
#   setting: as documented by Airflow.
# Files created here are group-writable (umask 0002): any uid with gid 0 can share them.
set -Eeuo pipefail
umask 0002

log() { printf '%s [airflow-entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }

if [ "$#" -eq 0 ]; then
    set -- airflow --help
fi
case "$1" in
    airflow|bash|sh|python|python3|/*) ;;
    *) set -- airflow "$@" ;;
esac

wait_for_db() {
    local max="${CONNECTION_CHECK_MAX_COUNT:-30}" sleep_s="${CONNECTION_CHECK_SLEEP_TIME:-3}" i=1
    [ "$max" -gt 0 ] || return 0
    until airflow db check >/tmp/.airflow-db-check.log 2>&1; do
        if [ "$i" -ge "$max" ]; then
            tail -n 20 /tmp/.airflow-db-check.log >&2 || true
            log "ERROR: the metadata database did not answer after $max checks (last output above)"
            exit 1
        fi
        log "waiting for the metadata database ($i/$max) ..."
        i=$((i + 1))
        sleep "$sleep_s"
    done
    rm -f /tmp/.airflow-db-check.log
    log "the metadata database answers"
}

if [ "${_AIRFLOW_DB_MIGRATE:-false}" = true ]; then
    wait_for_db
    log "migrating the metadata database (airflow db migrate)"
    airflow db migrate
elif [ "${_AIRFLOW_WAIT_FOR_DB:-false}" = true ]; then
    wait_for_db
fi

exec "$@"
