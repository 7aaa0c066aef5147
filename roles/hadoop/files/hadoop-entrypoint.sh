#!/usr/bin/env bash
# Entrypoint of optasia/hadoop (installed as /usr/local/bin/hadoop-entrypoint;
# `hdfs` and `dfsadmin` on PATH are links to it).
#
# Commands:
#   namenode               format the name dir ONCE (only if it has no current/VERSION),
#                          then run the NameNode in the foreground (PID 1)
#   datanode               run the DataNode in the foreground (PID 1)
#   hdfs [dfs] ARGS        FsShell client:   hdfs -mkdir -p /x   |  hdfs dfs -put - /x/f
#   hdfs dfsadmin ARGS     DFSAdmin client   (also: dfsadmin ARGS)
#   healthcheck [namenode|datanode]
#                          exit 0 if healthy. namenode: HA state active (a non-HA NameNode
#                          reports active) and safe mode off, via its JMX on localhost;
#                          datanode: its block-pool actor is registered with the NameNode
#                          (DataNode JMX). No role: the role of the daemon running in this
#                          container, or healthy if it runs none (a client container).
#   ready-wait [SECONDS] [DATANODES]
#                          wait (default 120 s) until the NameNode at $HDFS_NAMENODE_HOST is
#                          active, out of safe mode, has >= DATANODES (default 1) live
#                          DataNodes and free capacity: HDFS takes writes. Exit 1 on timeout.
#   version                Hadoop version
#   help                   this text
#   anything else          exec'd as is (bash, java, ...)
#
# Started as root (e.g. for root-owned bind mounts) it chowns the name/data dirs
# to hdfs and re-executes itself as hdfs; the image's default user is hdfs.
# hdfs (uid 1100, member of `supergroup`) runs the NameNode, so it is the HDFS
# superuser; clients act as the OS user, or $HADOOP_USER_NAME (simple auth).
#
# Environment (defaults in brackets):
#   HDFS_NAMENODE_HOST [namenode]     NameNode host name (fs.defaultFS, DataNode target)
#   HDFS_NAMENODE_RPC_PORT [8020]     HDFS_NAMENODE_HTTP_PORT [9870]  (both bind 0.0.0.0)
#   HDFS_DATANODE_HOSTNAME [$(hostname)]  name the DataNode advertises; must resolve for clients
#   HDFS_DATANODE_PORT [9866]  HDFS_DATANODE_HTTP_PORT [9864]  HDFS_DATANODE_IPC_PORT [9867]
#   HDFS_USE_DATANODE_HOSTNAME [true] clients connect to DataNodes by advertised name
#   HDFS_REPLICATION [1]              dfs.replication
#   HDFS_NAME_DIR [/hadoop/dfs/name]  HDFS_DATA_DIR [/hadoop/dfs/data]   (volumes)
#   HDFS_CLUSTER_ID [optasia]         cluster id written by the one-time format
#   HDFS_PERMISSIONS [true]           dfs.permissions.enabled (superuser group: supergroup)
#   HDFS_SAFEMODE_EXTENSION_MS [0]    safe mode extension once block reports are in
#                                     (Hadoop's default 30000 only helps with many DataNodes)
#   HADOOP_HEAP_MB                    daemon heap, -Xmx (default 512 namenode, 384 datanode)
#   HADOOP_CLIENT_HEAP_MB [256]       heap of hdfs/dfsadmin client JVMs
#   HADOOP_JVM_OPTS                   extra JVM options for the daemons
#   HADOOP_CLIENT_OPTS                extra JVM options for the clients
#   HADOOP_LOG_LEVEL [INFO]           daemon log level (logs go to stdout; clients log WARN to stderr)
#   CORE_CONF_<key> / HDFS_CONF_<key> any core-site / hdfs-site property; in <key> "_" is ".",
#                                     "__" is "_", "___" is "-":
#                                     HDFS_CONF_dfs_blocksize=64m -> dfs.blocksize=64m
#   HADOOP_USER_NAME                  client identity (Hadoop's own variable)
set -euo pipefail

HADOOP_HOME="${HADOOP_HOME:-/opt/hadoop}"
HADOOP_CONF_DIR="${HADOOP_CONF_DIR:-$HADOOP_HOME/etc/hadoop}"
HDFS_NAME_DIR="${HDFS_NAME_DIR:-/hadoop/dfs/name}"
HDFS_DATA_DIR="${HDFS_DATA_DIR:-/hadoop/dfs/data}"
NN_HOST="${HDFS_NAMENODE_HOST:-namenode}"
NN_RPC_PORT="${HDFS_NAMENODE_RPC_PORT:-8020}"
NN_HTTP_PORT="${HDFS_NAMENODE_HTTP_PORT:-9870}"
DN_PORT="${HDFS_DATANODE_PORT:-9866}"
DN_HTTP_PORT="${HDFS_DATANODE_HTTP_PORT:-9864}"
DN_IPC_PORT="${HDFS_DATANODE_IPC_PORT:-9867}"
CLASSPATH_="$HADOOP_CONF_DIR:$HADOOP_HOME/share/hdfs:$HADOOP_HOME/lib/*"

# What Hadoop's own launcher adds on Java 17 (hadoop-functions.sh,
# hadoop_finalize_jpms_opts; HADOOP-19219, HADOOP-19310). Without them the
# daemons die with InaccessibleObjectException.
JPMS_OPTS=(
    -XX:+IgnoreUnrecognizedVMOptions
    --add-opens=java.base/java.io=ALL-UNNAMED
    --add-opens=java.base/java.lang=ALL-UNNAMED
    --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens=java.base/java.math=ALL-UNNAMED
    --add-opens=java.base/java.net=ALL-UNNAMED
    --add-opens=java.base/java.text=ALL-UNNAMED
    --add-opens=java.base/java.util=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
    --add-opens=java.base/java.util.zip=ALL-UNNAMED
    --add-opens=java.base/sun.security.util=ALL-UNNAMED
    --add-opens=java.base/sun.security.x509=ALL-UNNAMED
)

log() { printf '%s [hadoop-entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S,%3N')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

# --- command from argv[0] (hdfs, dfsadmin links) or argv[1] -----------------------
case "$(basename "$0")" in
    hdfs) set -- hdfs "$@" ;;
    dfsadmin) set -- dfsadmin "$@" ;;
esac
[ "$#" -gt 0 ] || set -- help
CMD="$1"; shift

case "$CMD" in
    help|-h|--help) usage; exit 0 ;;
    namenode|datanode|hdfs|dfsadmin|healthcheck|ready-wait|version) ;;
    *) exec "$CMD" "$@" ;;
esac

# --- root: own the dirs, continue as hdfs ----------------------------------------
if [ "$(id -u)" = 0 ]; then
    case "$CMD" in
        namenode) mkdir -p "$HDFS_NAME_DIR"; chown hdfs:hdfs "$HDFS_NAME_DIR"; chmod 0700 "$HDFS_NAME_DIR" ;;
        datanode) mkdir -p "$HDFS_DATA_DIR"; chown hdfs:hdfs "$HDFS_DATA_DIR" ;;
    esac
    mkdir -p "$HADOOP_CONF_DIR"; chown hdfs:hdfs "$HADOOP_CONF_DIR"
    exec setpriv --reuid=hdfs --regid=hdfs --init-groups -- env HOME=/home/hdfs \
        "$(readlink -f "$0")" "$CMD" "$@"
fi

# --- HTTP GET without curl (bash /dev/tcp) ----------------------------------------
http_get() {  # host port path [timeout] -> body on stdout
    local out
    # shellcheck disable=SC2016  # $0, $1, ... expand in the inner shell, from its arguments
    out="$(timeout "${4:-5}" bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
        cat <&3' "$1" "$2" "$3" 2>/dev/null)" || return 1
    case "$out" in "HTTP/1."?" 200"*) ;; *) return 1 ;; esac
    printf '%s\n' "${out#*$'\r\n\r\n'}"
}
jmx() { http_get "$1" "$2" "/jmx?qry=$3" "${4:-5}"; }
json_str() { sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" | head -n1; }
json_num() { sed -n "s/.*\"$1\" *: *\([0-9-][0-9]*\).*/\1/p" | head -n1; }

namenode_status() {  # host port -> "state safemode(on|off)"; 1 if not answering
    local status info state safe
    status="$(jmx "$1" "$2" 'Hadoop:service=NameNode,name=NameNodeStatus')" || return 1
    info="$(jmx "$1" "$2" 'Hadoop:service=NameNode,name=NameNodeInfo')" || return 1
    state="$(json_str State <<<"$status")"
    [ -n "$state" ] || return 1
    if grep -q '"Safemode" *: *""' <<<"$info"; then safe=off; else safe=on; fi
    printf '%s %s\n' "$state" "$safe"
}

healthcheck() {
    local role="${1:-}"
    if [ -z "$role" ]; then  # the daemon this container runs (PID 1, or under an init)
        local f cmd
        for f in /proc/[0-9]*/cmdline; do
            cmd="$(tr '\0' ' ' <"$f" 2>/dev/null)" || continue
            case "${cmd%% *}" in java|*/java) ;; *) continue ;; esac
            case "$cmd" in
                *" -Dproc_namenode "*) role=namenode; break ;;
                *" -Dproc_datanode "*) role=datanode; break ;;
            esac
        done
        [ -n "$role" ] || return 0  # no daemon in this container (a client)
    fi
    case "$role" in
        namenode)
            local st
            st="$(namenode_status 127.0.0.1 "$NN_HTTP_PORT")" || { echo "NameNode JMX not answering on :$NN_HTTP_PORT"; return 1; }
            case "$st" in
                "active off"|"standalone off") echo "NameNode $st"; return 0 ;;
                *) echo "NameNode state/safemode: $st"; return 1 ;;
            esac ;;
        datanode)
            local bean='Hadoop:service=DataNode,name=DataNodeInfo' cid info
            # One attribute at a time (jmx?get=): before the NameNode handshake every
            # BPServiceActorInfo read logs a stack trace, the ClusterId read does not.
            cid="$(http_get 127.0.0.1 "$DN_HTTP_PORT" "/jmx?get=$bean::ClusterId")" \
                || { echo "DataNode JMX not answering on :$DN_HTTP_PORT"; return 1; }
            [ -n "$(json_str ClusterId <<<"$cid")" ] \
                || { echo "DataNode has not reached the NameNode yet"; return 1; }
            info="$(http_get 127.0.0.1 "$DN_HTTP_PORT" "/jmx?get=$bean::BPServiceActorInfo")" \
                || { echo "DataNode JMX not answering on :$DN_HTTP_PORT"; return 1; }
            # BPServiceActorInfo is a JSON string inside the JSON: quotes are escaped.
            if grep -q 'ActorState\\*" *: *\\*"RUNNING' <<<"$info"; then
                echo "DataNode registered with $(grep -o 'NamenodeAddress\\*" *: *\\*"[^"\\]*' <<<"$info" | head -n1 | sed 's/.*"//')"
                return 0
            fi
            echo "DataNode not registered with the NameNode yet"; return 1 ;;
        *) echo "healthcheck: unknown role '$role' (namenode|datanode)"; return 2 ;;
    esac
}

ready_wait() {
    local timeout="${1:-120}" want="${2:-1}" deadline st fs live remaining status="no answer yet"
    deadline=$(( $(date +%s) + timeout ))
    while :; do
        if st="$(namenode_status "$NN_HOST" "$NN_HTTP_PORT" 2>/dev/null)" \
           && fs="$(jmx "$NN_HOST" "$NN_HTTP_PORT" 'Hadoop:service=NameNode,name=FSNamesystemState')"; then
            live="$(json_num NumLiveDataNodes <<<"$fs")"
            remaining="$(json_num CapacityRemaining <<<"$fs")"
            status="state/safemode=$st live DataNodes=${live:-?} capacity remaining=${remaining:-?}"
            case "$st" in "active off"|"standalone off")
                if [ "${live:-0}" -ge "$want" ] && [ "${remaining:-0}" -gt 0 ]; then
                    echo "HDFS ready at $NN_HOST: $status"; return 0
                fi ;;
            esac
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "HDFS not ready after ${timeout}s at http://$NN_HOST:$NN_HTTP_PORT: $status" >&2; return 1
        fi
        sleep 1
    done
}

case "$CMD" in
    healthcheck) healthcheck "$@"; exit $? ;;
    ready-wait) ready_wait "$@"; exit $? ;;
esac

# --- configuration (rendered on every invocation, atomically) -------------------
xml_escape() { local s="${1//&/&amp;}"; s="${s//</&lt;}"; s="${s//>/&gt;}"; printf '%s' "$s"; }

# Properties from CORE_CONF_* / HDFS_CONF_* variables.
env_props() {  # prefix
    local var key
    while IFS= read -r var; do
        key="${var#"$1"}"
        key="${key//___/-}"; key="${key//__/@}"; key="${key//_/.}"; key="${key//@/_}"
        printf '%s\t%s\n' "$key" "${!var}"
    done < <(compgen -e | grep "^$1" || true)
}

render_site() {  # file, then "key<TAB>value" lines on stdin (later keys win)
    local file="$1" tmp key value
    tmp="$(mktemp "$file.XXXXXX")"
    {
        echo '<?xml version="1.0"?>'
        echo '<!-- Rendered by hadoop-entrypoint from the environment on every start. -->'
        echo '<configuration>'
        awk -F '\t' '{ v[$1] = $2; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
                     END { for (i = 1; i <= n; i++) print order[i] "\t" v[order[i]] }' \
        | while IFS=$'\t' read -r key value; do
            printf '  <property><name>%s</name><value>%s</value></property>\n' "$(xml_escape "$key")" "$(xml_escape "$value")"
        done
        echo '</configuration>'
    } >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$file"
}

write_config() {
    mkdir -p "$HADOOP_CONF_DIR"
    local dn_host="${HDFS_DATANODE_HOSTNAME:-$(hostname)}"
    {
        printf '%s\t%s\n' \
            fs.defaultFS "hdfs://$NN_HOST:$NN_RPC_PORT" \
            hadoop.tmp.dir /hadoop/tmp \
            hadoop.security.authentication simple \
            ipc.client.connect.retry.interval 1000
        env_props CORE_CONF_
    } | render_site "$HADOOP_CONF_DIR/core-site.xml"
    {
        printf '%s\t%s\n' \
            dfs.namenode.name.dir "file://$HDFS_NAME_DIR" \
            dfs.datanode.data.dir "file://$HDFS_DATA_DIR" \
            dfs.replication "${HDFS_REPLICATION:-1}" \
            dfs.permissions.enabled "${HDFS_PERMISSIONS:-true}" \
            dfs.permissions.superusergroup supergroup \
            dfs.namenode.rpc-address "$NN_HOST:$NN_RPC_PORT" \
            dfs.namenode.rpc-bind-host 0.0.0.0 \
            dfs.namenode.servicerpc-bind-host 0.0.0.0 \
            dfs.namenode.http-address "$NN_HOST:$NN_HTTP_PORT" \
            dfs.namenode.http-bind-host 0.0.0.0 \
            dfs.http.policy HTTP_ONLY \
            dfs.datanode.hostname "$dn_host" \
            dfs.datanode.address "0.0.0.0:$DN_PORT" \
            dfs.datanode.http.address "0.0.0.0:$DN_HTTP_PORT" \
            dfs.datanode.ipc.address "0.0.0.0:$DN_IPC_PORT" \
            dfs.client.use.datanode.hostname "${HDFS_USE_DATANODE_HOSTNAME:-true}" \
            dfs.datanode.use.datanode.hostname "${HDFS_USE_DATANODE_HOSTNAME:-true}" \
            dfs.namenode.datanode.registration.ip-hostname-check false \
            dfs.namenode.safemode.extension "${HDFS_SAFEMODE_EXTENSION_MS:-0}" \
            dfs.webhdfs.enabled true
        env_props HDFS_CONF_
    } | render_site "$HADOOP_CONF_DIR/hdfs-site.xml"
    local tmp
    tmp="$(mktemp "$HADOOP_CONF_DIR/log4j.properties.XXXXXX")"
    cat >"$tmp" <<'EOF'
# Rendered by hadoop-entrypoint. Daemons: -Dhadoop.root.logger=INFO,console to
# stdout; clients: WARN to stderr (keeps `hdfs -cat` output clean).
hadoop.root.logger=INFO,console
hadoop.console.target=System.err
log4j.rootLogger=${hadoop.root.logger}
log4j.threshold=ALL
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=${hadoop.console.target}
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.appender.NullAppender=org.apache.log4j.varia.NullAppender
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.org.apache.hadoop.metrics2=WARN
log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN
log4j.logger.BlockStateChange=WARN
log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN
log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=WARN
log4j.logger.org.apache.hadoop.conf.Configuration.deprecation=WARN
# The web server's request log (one line per health check otherwise).
log4j.logger.http.requests=WARN
EOF
    chmod 0644 "$tmp"
    mv -f "$tmp" "$HADOOP_CONF_DIR/log4j.properties"
}

daemon_java() {  # name main-class default-heap [args...] -> exec
    local name="$1" main="$2" heap="${HADOOP_HEAP_MB:-$3}"; shift 3
    # shellcheck disable=SC2086  # HADOOP_JVM_OPTS is a list of words
    exec java "${JPMS_OPTS[@]}" \
        -Xms"$(( heap / 4 ))"m -Xmx"${heap}"m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
        -Djava.net.preferIPv4Stack=true \
        "-Dproc_$name" \
        -Dhadoop.home.dir="$HADOOP_HOME" -Dhadoop.log.dir=/tmp -Dhadoop.log.file="$name.log" \
        -Dhadoop.id.str="$(id -un)" \
        -Dhadoop.root.logger="${HADOOP_LOG_LEVEL:-INFO},console" -Dhadoop.console.target=System.out \
        ${HADOOP_JVM_OPTS:-} \
        -cp "$CLASSPATH_" "$main" "$@"
}

client_java() {  # main-class [args...] -> exec
    local main="$1"; shift
    # shellcheck disable=SC2086
    exec java "${JPMS_OPTS[@]}" \
        -Xmx"${HADOOP_CLIENT_HEAP_MB:-256}"m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
        -Djava.net.preferIPv4Stack=true \
        -Dhadoop.home.dir="$HADOOP_HOME" -Dhadoop.root.logger=WARN,console \
        ${HADOOP_CLIENT_OPTS:-} \
        -cp "$CLASSPATH_" "$main" "$@"
}

format_once() {
    local marker="$HDFS_NAME_DIR/.optasia-formatting" extra
    if [ -f "$HDFS_NAME_DIR/current/VERSION" ]; then
        log "name dir $HDFS_NAME_DIR is formatted ($(grep -h '^clusterID=' "$HDFS_NAME_DIR/current/VERSION")): not formatting"
        return 0
    fi
    mkdir -p "$HDFS_NAME_DIR"
    if [ -f "$marker" ]; then
        log "an earlier format of $HDFS_NAME_DIR did not finish: clearing it and formatting again"
        find "$HDFS_NAME_DIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    fi
    extra="$(find "$HDFS_NAME_DIR" -mindepth 1 -maxdepth 1 ! -name lost+found -printf '%f ' | head -c 200)"
    [ -z "$extra" ] || die "$HDFS_NAME_DIR has no current/VERSION but is not empty ($extra): refusing to format it." \
        "If this is an old NameNode's data, fix the volume; if it is disposable, empty it and restart."
    log "formatting the NameNode in $HDFS_NAME_DIR (cluster id ${HDFS_CLUSTER_ID:-optasia}); this happens once: current/VERSION marks it"
    : >"$marker"
    # Format in a child JVM (not exec): the daemon starts afterwards. -force: the
    # dir holds nothing but our marker (and maybe lost+found), checked above.
    ( daemon_java namenode org.apache.hadoop.hdfs.server.namenode.NameNode 512 \
        -format -force -nonInteractive -clusterid "${HDFS_CLUSTER_ID:-optasia}" ) \
        || die "NameNode -format failed (output above)"
    [ -f "$HDFS_NAME_DIR/current/VERSION" ] || die "NameNode -format ended without $HDFS_NAME_DIR/current/VERSION (output above)"
    rm -f "$marker"
    log "format done"
}

case "$CMD" in
    version)
        write_config
        client_java org.apache.hadoop.util.VersionInfo "$@" ;;
    namenode)
        write_config
        format_once
        log "starting the NameNode: hdfs://$NN_HOST:$NN_RPC_PORT, web UI/JMX http://0.0.0.0:$NN_HTTP_PORT"
        daemon_java namenode org.apache.hadoop.hdfs.server.namenode.NameNode 512 "$@" ;;
    datanode)
        write_config
        [ -w "$HDFS_DATA_DIR" ] || die "$HDFS_DATA_DIR is not writable by $(id -un); start as root once or chown it to uid $(id -u)"
        log "starting the DataNode: advertises ${HDFS_DATANODE_HOSTNAME:-$(hostname)}:$DN_PORT to hdfs://$NN_HOST:$NN_RPC_PORT"
        daemon_java datanode org.apache.hadoop.hdfs.server.datanode.DataNode 384 "$@" ;;
    hdfs)
        write_config
        case "${1:-}" in
            dfs) shift; client_java org.apache.hadoop.fs.FsShell "$@" ;;
            dfsadmin) shift; client_java org.apache.hadoop.hdfs.tools.DFSAdmin "$@" ;;
            *) client_java org.apache.hadoop.fs.FsShell "$@" ;;
        esac ;;
    dfsadmin)
        write_config
        client_java org.apache.hadoop.hdfs.tools.DFSAdmin "$@" ;;
esac
