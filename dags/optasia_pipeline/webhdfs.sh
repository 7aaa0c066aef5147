#!/usr/bin/env bash
# ingest_raw of optasia_etl_pipeline, run by a BashOperator on the Celery
# worker: the landing files into HDFS over WebHDFS (the NameNode's HTTP API)
# with curl, so the worker needs no Hadoop client or JVM. (The publish is the
# job's own Python, spark_jobs/publish.py.)
#
#   webhdfs.sh ingest    landing files -> <raw>/<batch>/, sizes and checksums verified
#
# Settings come from the task's environment, which the DAG fills from the
# optasia_pipeline Variable and the optasia_hdfs / optasia_store Connections:
#   WEBHDFS (http://namenode:9870/webhdfs/v1), HDFS_USER, BATCH_ID,
#   LANDING (folder holding the two files), RAW_DIR, INPUTS (bytes and sha256
#   per file, as wait_for_landing found them; optional)
set -euo pipefail

die() { echo "ERROR: $*" >&2; exit 1; }
need() { local v; for v in "$@"; do [ -n "${!v:-}" ] || die "$v is not set (the DAG passes it)"; done; }
need WEBHDFS HDFS_USER BATCH_ID

url() { printf '%s%s?op=%s&user.name=%s%s' "$WEBHDFS" "$1" "$2" "$HDFS_USER" "${3:+&$3}"; }

# call METHOD PATH OP [QUERY]: the JSON answer; a RemoteException becomes a clear error.
call() {
    local out code
    out=$(curl -sS -L --max-time 60 -X "$1" -w '\n%{http_code}' "$(url "$2" "$3" "${4:-}")") \
        || die "WebHDFS $3 $2: the NameNode at ${WEBHDFS%%/webhdfs*} is unreachable"
    code=${out##*$'\n'}; out=${out%$'\n'*}
    if [ "${code:0:1}" != 2 ]; then
        die "WebHDFS $3 $2 answered HTTP $code: $(jq -r '.RemoteException.message // .' <<<"$out" 2>/dev/null || echo "$out")"
    fi
    printf '%s' "$out"
}

# length PATH: bytes of a file, or "none" when it does not exist
length() {
    local code
    code=$(curl -sS --max-time 60 -o /tmp/webhdfs.$$ -w '%{http_code}' "$(url "$1" GETFILESTATUS)") \
        || die "WebHDFS GETFILESTATUS $1: the NameNode is unreachable"
    case "$code" in
        200) jq -r .FileStatus.length </tmp/webhdfs.$$ ;;
        404) echo none ;;
        *) die "WebHDFS GETFILESTATUS $1 answered HTTP $code: $(cat /tmp/webhdfs.$$)" ;;
    esac
    rm -f /tmp/webhdfs.$$
}
exists() { [ "$(length "$1")" != none ]; }
mkdirs() { call PUT "$1" MKDIRS >/dev/null; }
delete() { call DELETE "$1" DELETE recursive=true >/dev/null; }
rename() {
    mkdirs "$(dirname "$2")"
    [ "$(call PUT "$1" RENAME "destination=$2" | jq -r .boolean)" = true ] || die "rename $1 -> $2 refused"
}

# put LOCAL HDFS_PATH: two-step CREATE (the NameNode redirects to a DataNode)
put() {
    local where
    where=$(curl -sS --max-time 60 -X PUT -o /dev/null -w '%{redirect_url}' \
        "$(url "$2" CREATE "overwrite=true")") || die "WebHDFS CREATE $2: the NameNode is unreachable"
    [ -n "$where" ] || die "WebHDFS CREATE $2: the NameNode gave no DataNode to write to"
    curl -sS --fail-with-body --max-time 3600 -X PUT -T "$1" -H 'Content-Type: application/octet-stream' \
        "$where" >/dev/null || die "writing $2 through the DataNode failed (is a DataNode up?)"
}

ingest() {
    need LANDING RAW_DIR
    local dest="$RAW_DIR/$BATCH_ID" f size got sha want_size want_sha
    local inputs="${INPUTS:-}"
    [ -n "$inputs" ] || inputs='{}'
    mkdirs "$dest"
    for f in subscribers.csv transactions.csv; do
        [ -f "$LANDING/$f" ] || die "input file missing: $LANDING/$f"
        size=$(stat -c %s "$LANDING/$f")
        sha=$(sha256sum "$LANDING/$f" | cut -d' ' -f1)
        # What wait_for_landing saw when it found the batch complete: a file that
        # changed since then is still being written (or was replaced).
        want_size=$(jq -r --arg f "$f" '.[$f].bytes // empty' <<<"$inputs")
        want_sha=$(jq -r --arg f "$f" '.[$f].sha256 // empty' <<<"$inputs")
        if [ -n "$want_sha" ] && { [ "$want_size" != "$size" ] || [ "$want_sha" != "$sha" ]; }; then
            die "$LANDING/$f changed after wait_for_landing found the batch complete ($want_size bytes," \
                "sha256 $want_sha; now $size bytes, sha256 $sha): let the producer finish (it writes _READY" \
                "last), then clear wait_for_landing"
        fi
        # Write beside, check the size, then rename: raw never holds a partial file.
        put "$LANDING/$f" "$dest/.$f.part"
        got=$(length "$dest/.$f.part")
        [ "$got" = "$size" ] || die "$dest/$f: wrote $got bytes but $LANDING/$f has $size; nothing replaced"
        if exists "$dest/$f"; then delete "$dest/$f"; fi
        rename "$dest/.$f.part" "$dest/$f"
        echo "ingested $LANDING/$f -> $dest/$f ($size bytes, sha256 $sha, verified)"
    done
    # The manifest travels with the raw files: the job checks the sizes it reads
    # against it and records it with its run.
    if [ "$inputs" != '{}' ]; then
        printf '%s\n' "$inputs" >"/tmp/inputs.$$"
        put "/tmp/inputs.$$" "$dest/.inputs.json.part"
        rm -f "/tmp/inputs.$$"
        if exists "$dest/_inputs.json"; then delete "$dest/_inputs.json"; fi
        rename "$dest/.inputs.json.part" "$dest/_inputs.json"
    elif exists "$dest/_inputs.json"; then
        delete "$dest/_inputs.json"   # an earlier ingest's manifest is not these files'
    fi
    echo "$dest"
}

case "${1:-}" in
    ingest) ingest ;;
    *) die "usage: webhdfs.sh ingest" ;;
esac
