#!/usr/bin/env bash
# Entrypoint of optasia/postgres.
#
#   docker-entrypoint.sh [postgres] [-c name=value ...]   run the server (default)
#   docker-entrypoint.sh ANY OTHER COMMAND                exec it (psql, pg_dump, bash, ...)
#
# Server start, every time:
#   1. as root: create/own $PGDATA and /run/postgresql for the postgres user
#      (then everything runs as `postgres`, uid 999; secret files are read as
#      root, so they may be root-only 0600 bind mounts / compose secrets);
#   2. initdb ONCE: only when $PGDATA/PG_VERSION is missing (UTF-8, C.UTF-8,
#      data checksums, superuser `postgres`);
#   3. writes pg_hba.conf / pg_ident.conf (managed here): local socket = peer
#      (OS root and postgres map to role postgres; other OS users to the role of
#      the same name), TCP from anywhere = scram-sha-256;
#   4. writes $PGDATA/optasia-env.conf from the settings below (included by
#      postgresql.conf; ALTER SYSTEM still wins);
#   5. starts a temporary server on a private unix socket only (no TCP, so the
#      health check stays red) and idempotently ensures the superuser password,
#      the login roles (passwords re-set from their files on every start, so a
#      changed file takes effect) and the databases they own; stops it;
#   6. execs `postgres` as PID 1 (docker stop -> SIGINT = fast shutdown,
#      SIGTERM = smart shutdown).
#
# Environment:
#   PGDATA                            data directory (default /var/lib/postgresql/data, a volume)
#   PGPORT                            TCP port (default 5432)
#   POSTGRES_SUPERUSER_PASSWORD_FILE  file with the password of role `postgres` for TCP
#                                     logins; unset = no password (socket/peer only)
#   OPTASIA_DATABASES                 space-separated db:user:password_file triplets, e.g.
#                                     "store:optasia:/run/secrets/store_password airflow:airflow:/run/secrets/airflow_password"
#                                     names: lower-case letters, digits, _ ; passwords are read
#                                     from the files only (never from env values or arguments)
#   POSTGRES_ISOLATE_DATABASES        true (default): only the owner (and superusers) may
#                                     connect to each listed database (REVOKE CONNECT FROM PUBLIC)
#   POSTGRES_SHARED_BUFFERS           default 128MB
#   POSTGRES_MAX_CONNECTIONS          default 100
#   POSTGRES_EFFECTIVE_CACHE_SIZE     default 512MB
#   POSTGRES_WORK_MEM                 default 4MB
#   POSTGRES_MAINTENANCE_WORK_MEM     default 64MB
#   POSTGRES_INITDB_ARGS              extra initdb arguments (first start only)
# Anything else: pass `-c name=value` arguments after `postgres`.
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGPORT="${PGPORT:-5432}"
PG_USER=postgres
PROVISION_SOCKET_DIR=/tmp/optasia-provision

# --- which command ------------------------------------------------------------
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi
shift  # the rest: extra server arguments (-c name=value ...)

if [ "$(id -u)" = 0 ]; then
    as_pg() { setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- env HOME=/var/lib/postgresql "$@"; }
else
    as_pg() { "$@"; }
fi

# --- 1. directories -------------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /run/postgresql
    # Only what is not ours yet (cheap on a big data dir).
    find "$PGDATA" \! -user "$PG_USER" -exec chown "$PG_USER:$PG_USER" '{}' +
    chmod 0700 "$PGDATA"
    chown "$PG_USER:$PG_USER" /run/postgresql
    chmod 2775 /run/postgresql
elif [ ! -w "$PGDATA" ]; then
    die "$PGDATA is not writable by uid $(id -u); start the container as root (default) or chown the volume to uid 999"
fi

# --- 2. initdb once -----------------------------------------------------------
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "$(ls -A "$PGDATA" 2>/dev/null)" ]; then
        die "$PGDATA has files but no PG_VERSION, so it is not a PostgreSQL data directory: refusing to initdb over it." \
            "Inspect it; if it is disposable (e.g. only lost+found), empty it, or mount the volume one level up."
    fi
    log "initialising a new cluster in $PGDATA (runs once: $PGDATA/PG_VERSION marks it)"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words
    as_pg initdb -D "$PGDATA" --username="$PG_USER" --encoding=UTF8 --locale=C.UTF-8 \
        --data-checksums --auth-local=peer --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-} >&2 \
        || die "initdb failed (output above)"
else
    log "existing cluster in $PGDATA (PostgreSQL $(cat "$PGDATA/PG_VERSION")): no initdb"
fi
[ "$(cat "$PGDATA/PG_VERSION")" = "${PG_MAJOR:-15}" ] \
    || die "$PGDATA holds a PostgreSQL $(cat "$PGDATA/PG_VERSION") cluster, this image runs ${PG_MAJOR:-15}: upgrade it with pg_upgrade (or dump/restore) first"

# --- 3/4. managed configuration -------------------------------------------------
as_pg tee "$PGDATA/pg_hba.conf" >/dev/null <<'EOF'
# Managed by docker-entrypoint.sh of optasia/postgres: rewritten on every start.
# TYPE  DATABASE  USER  ADDRESS     METHOD
local   all       all               peer map=optasia_local
host    all       all   0.0.0.0/0   scram-sha-256
host    all       all   ::/0        scram-sha-256
EOF
as_pg tee "$PGDATA/pg_ident.conf" >/dev/null <<'EOF'
# Managed by docker-entrypoint.sh of optasia/postgres: rewritten on every start.
# MAPNAME        SYSTEM-USERNAME  PG-USERNAME
optasia_local    root             postgres
optasia_local    postgres         postgres
optasia_local    /^(.*)$          \1
EOF

conf_value() {  # name value: refuse quotes/newlines in values from env
    case "$2" in *"'"*|*$'\n'*) die "invalid value for $1: $2" ;; esac
    printf "%s = '%s'\n" "$1" "$2"
}
{
    echo "# Managed by docker-entrypoint.sh of optasia/postgres from the container's"
    echo "# environment: rewritten on every start. ALTER SYSTEM settings override these."
    conf_value listen_addresses '*'
    conf_value port "$PGPORT"
    conf_value unix_socket_directories /run/postgresql
    conf_value max_connections "${POSTGRES_MAX_CONNECTIONS:-100}"
    conf_value shared_buffers "${POSTGRES_SHARED_BUFFERS:-128MB}"
    conf_value effective_cache_size "${POSTGRES_EFFECTIVE_CACHE_SIZE:-512MB}"
    conf_value work_mem "${POSTGRES_WORK_MEM:-4MB}"
    conf_value maintenance_work_mem "${POSTGRES_MAINTENANCE_WORK_MEM:-64MB}"
    conf_value password_encryption scram-sha-256
    conf_value logging_collector off
    conf_value log_destination stderr
    conf_value log_line_prefix '%m [%p] %q%u@%d '
    conf_value log_timezone UTC
    conf_value timezone UTC
    conf_value dynamic_shared_memory_type posix
    conf_value jit off  # the image leaves out the LLVM JIT provider
} | as_pg tee "$PGDATA/optasia-env.conf" >/dev/null
if ! grep -q "^include_if_exists = 'optasia-env.conf'" "$PGDATA/postgresql.conf"; then
    printf "\n# Settings from the container environment (docker-entrypoint.sh).\ninclude_if_exists = 'optasia-env.conf'\n" \
        | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
fi

# --- 5. roles and databases (every start, idempotent) ---------------------------
NAME_RE='^[a-z_][a-z0-9_]{0,62}$'

# SQL for "role NAME gets the password in FILE", with the password hex-encoded:
# no quoting issues, and it never appears on a command line or in the environment.
password_sql() {  # role file
    local role="$1" file="$2" pw hex
    [ -r "$file" ] || die "password file $file (role $role) is missing or unreadable"
    pw="$(cat -- "$file")"  # trailing newlines dropped
    [ -n "$pw" ] || die "password file $file (role $role) is empty"
    case "$pw" in *$'\n'*) die "password file $file (role $role) has more than one line" ;; esac
    hex="$(printf '%s' "$pw" | od -An -v -tx1 | tr -d ' \n')"
    printf "DO \$\$ BEGIN EXECUTE format('ALTER ROLE %%I WITH LOGIN PASSWORD %%L', '%s', convert_from(decode('%s', 'hex'), 'UTF8')); END \$\$;\n" "$role" "$hex"
}

build_sql() {
    local spec db user file
    echo "\\set ON_ERROR_STOP on"
    # Never write a statement carrying a password to the server log.
    echo "SET log_statement = 'none'; SET log_min_error_statement = 'panic'; SET log_min_duration_statement = -1;"
    if [ -n "${POSTGRES_SUPERUSER_PASSWORD_FILE:-}" ]; then
        password_sql "$PG_USER" "$POSTGRES_SUPERUSER_PASSWORD_FILE"
    else
        echo "ALTER ROLE $PG_USER WITH PASSWORD NULL;"
    fi
    for spec in ${OPTASIA_DATABASES:-}; do
        IFS=: read -r db user file <<<"$spec"
        if [ -z "$db" ] || [ -z "$user" ] || [ -z "$file" ]; then
            die "OPTASIA_DATABASES entry '$spec' is not db:user:password_file"
        fi
        [[ "$db" =~ $NAME_RE ]] || die "database name '$db' must match $NAME_RE"
        [[ "$user" =~ $NAME_RE ]] || die "role name '$user' must match $NAME_RE"
        [ "$user" != "$PG_USER" ] || die "OPTASIA_DATABASES: role '$user' is the superuser; use POSTGRES_SUPERUSER_PASSWORD_FILE"
        cat <<EOF
SELECT format('CREATE ROLE %I LOGIN', '$user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') \\gexec
EOF
        password_sql "$user" "$file"
        cat <<EOF
SELECT format('CREATE DATABASE %I OWNER %I', '$db', '$user') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \\gexec
ALTER DATABASE "$db" OWNER TO "$user";
EOF
        if [ "${POSTGRES_ISOLATE_DATABASES:-true}" = true ]; then
            echo "REVOKE CONNECT, TEMPORARY ON DATABASE \"$db\" FROM PUBLIC;"
            echo "GRANT CONNECT, TEMPORARY ON DATABASE \"$db\" TO \"$user\";"
        fi
        printf '%s\n' "\\echo ensured database $db owned by login role $user (password from $file)"
    done
}

SQL="$(build_sql)"  # as root: reads the secret files; fails here on a bad spec

temp_server_running=0
stop_temp_server() {
    if [ "$temp_server_running" = 1 ]; then
        as_pg pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >&2 || true
        temp_server_running=0
    fi
}
trap 'log "signal received during provisioning: stopping"; stop_temp_server; exit 143' TERM INT
trap 'stop_temp_server' EXIT

rm -rf "$PROVISION_SOCKET_DIR"
as_pg mkdir -m 0700 "$PROVISION_SOCKET_DIR"
log "provisioning: temporary server on a private socket (no TCP)"
as_pg pg_ctl -D "$PGDATA" -w -t 300 -s \
    -o "-c listen_addresses='' -c unix_socket_directories=$PROVISION_SOCKET_DIR" start >&2 \
    || die "the temporary server did not start (log above)"
temp_server_running=1
printf '%s\n' "$SQL" | as_pg psql -X -q -h "$PROVISION_SOCKET_DIR" -U "$PG_USER" -d postgres \
    | sed 's/^/  /' >&2 \
    || die "provisioning SQL failed (see above)"
unset SQL
stop_temp_server
trap - EXIT TERM INT
rm -rf "$PROVISION_SOCKET_DIR"

# --- 6. the server as PID 1 -----------------------------------------------------
log "starting PostgreSQL $(postgres --version | awk '{print $3}') on port $PGPORT"
if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- \
        env HOME=/var/lib/postgresql postgres -D "$PGDATA" "$@"
fi
exec postgres -D "$PGDATA" "$@"
